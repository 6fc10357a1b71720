"""Grandfather-father-son retention of an instance's backups: a pure function.

::

    plan = retention_plan(backups, keep_daily=7, keep_weekly=4, keep_monthly=12)
    plan.expire        # ids to expire (oldest first); their objects are deleted
    plan.keep          # {id: ("daily", "weekly", ...)}: why each good backup stays

``backups`` are ``(id, date, state)`` tuples (or mappings with those keys, or
objects with those attributes); ``date`` a ``datetime`` or ``date`` (Odoo's naive
UTC); ``state`` ``"done"`` or ``"failed"`` (other states are ignored: neither kept
nor expired, and they do not count as the newest).

The rules, each applied on its own to the good (``done``) backups, the union kept:

* daily: the newest backup of each of the ``keep_daily`` most recent days that
  have one; weekly: the same per ISO week (``keep_weekly``); monthly: per calendar
  month (``keep_monthly``). Periods without backups do not count (as borg and
  restic count), so a gap in the schedule never empties the history.
* the newest good backup is always kept;
* **nothing** is expired while the newest backup (done or failed) failed: an
  instance whose backups started failing keeps every copy it has until a backup
  succeeds again.

Failed backups are never returned: they hold no object. The result does not depend
on the order of ``backups`` (ties on the date are broken by the id).
"""

from collections.abc import Mapping
from dataclasses import dataclass, field

from .exceptions import InvalidInput

__all__ = ["RetentionPlan", "retention_plan", "to_expire"]

DONE = "done"
FAILED = "failed"


@dataclass(frozen=True)
class RetentionPlan:
    expire: list
    keep: dict = field(default_factory=dict)
    blocked: bool = False  # True when the newest backup failed (nothing expired)


def _fields(backup):
    if isinstance(backup, Mapping):
        return backup["id"], backup["date"], backup["state"]
    if isinstance(backup, tuple | list):
        backup_id, date, state = backup
        return backup_id, date, state
    return backup.id, backup.date, backup.state


def _check_count(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"{name} must be a whole number of 0 or more, not {value!r}")


def _periods(day):
    iso = day.isocalendar()
    return {
        "daily": (day.year, day.month, day.day),
        "weekly": (iso[0], iso[1]),
        "monthly": (day.year, day.month),
    }


def retention_plan(backups, *, keep_daily=7, keep_weekly=4, keep_monthly=12):
    """Which backups to expire; see the module docstring. Returns a :class:`RetentionPlan`."""
    counts = {"daily": keep_daily, "weekly": keep_weekly, "monthly": keep_monthly}
    for name, value in counts.items():
        _check_count(f"keep_{name}", value)
    rows = []
    for backup in backups:
        backup_id, date, state = _fields(backup)
        if date is None:
            raise InvalidInput(f"backup {backup_id!r} has no date")
        if state in (DONE, FAILED):
            rows.append((date, backup_id, state))
    if not rows:
        return RetentionPlan(expire=[])
    # Newest first; the id breaks ties, so the input order never matters.
    rows.sort(key=lambda row: (row[0], row[1]), reverse=True)
    if rows[0][2] == FAILED:
        return RetentionPlan(expire=[], blocked=True)
    good = [(date, backup_id) for date, backup_id, state in rows if state == DONE]
    keep = {good[0][1]: ["newest"]}
    for rule, count in counts.items():
        seen = []
        for date, backup_id in good:
            day = date.date() if hasattr(date, "date") else date
            period = _periods(day)[rule]
            if period in seen:
                continue
            if len(seen) == count:
                break
            seen.append(period)
            keep.setdefault(backup_id, []).append(rule)
    expire = [backup_id for _date, backup_id in reversed(good) if backup_id not in keep]
    return RetentionPlan(
        expire=expire, keep={backup_id: tuple(reasons) for backup_id, reasons in keep.items()}
    )


def to_expire(backups, *, keep_daily=7, keep_weekly=4, keep_monthly=12):
    """The ids of :func:`retention_plan`'s ``expire`` list (oldest first)."""
    return retention_plan(
        backups, keep_daily=keep_daily, keep_weekly=keep_weekly, keep_monthly=keep_monthly
    ).expire
