"""Alert hysteresis as a pure state machine: open after N bad checks, resolve after 2 good.

The Odoo layer keeps one :class:`AlertState` per subject and kind (a server and
``server_down``, an instance and ``backup_failed``...), feeds it each check's
outcome with :func:`step`, stores the new state, and acts on the returned
:class:`AlertEvent`:

* ``open``: ``open_after`` consecutive bad checks (``saas.server.alert_after_failures``,
  default 2) and no alert open: create the one alert of this incident, notify;
* ``update``: a bad check while the alert is open: bump its ``count`` and
  ``last_seen_date``, no notification;
* ``resolve``: ``resolve_after`` (2) consecutive good checks while open: resolve, notify.

A check that did not run (``None``: the sweep ran out of time, the part could not
be measured) changes nothing: it is neither good nor bad. So a flapping server
gives one alert per incident, never one per check, and a single good answer in
the middle of an outage does not close it.

:func:`server_conditions` turns a server's measured figures into the outcome of
each kind (True bad, False good, None unknown). :func:`backup_age` and
:func:`backup_stale` decide ``backup_stale``: an instance whose newest successful
backup is older than its plan's daily schedule allows (``BACKUP_STALE_HOURS``, 26 h:
a day and the hourly cron's spread). That kind needs no streak: its threshold is
its margin, so it opens at the first check that finds the backup too old and is
resolved by the first check (or backup) that finds a fresh one.
"""

import datetime
import math
from dataclasses import dataclass, replace

from .exceptions import InvalidInput

__all__ = [
    "DEFAULT_OPEN_AFTER",
    "DEFAULT_RESOLVE_AFTER",
    "KINDS",
    "AlertEvent",
    "AlertState",
    "backup_age",
    "backup_stale",
    "server_conditions",
    "step",
]

DEFAULT_OPEN_AFTER = 2
DEFAULT_RESOLVE_AFTER = 2
KINDS = (
    "server_down",
    "server_slow",
    "capacity",
    "disk",
    "replica_lag",
    "backup_failed",
    "backup_stale",
    "operation_failed",
)
OPEN, UPDATE, RESOLVE = "open", "update", "resolve"

# Thresholds of server_conditions (the health check's own: slow past 2 s,
# nearly full at 90 % used; disk below 10 % free is what placement skips).
SLOW_MS = 2000
DISK_MIN_FREE_PERCENT = 10
CAPACITY_MAX_USED_PERCENT = 90
REPLICA_MAX_LAG_BYTES = 64 * 1024 * 1024
REPLICA_MAX_LAG_S = 300
# Daily backups: a day, and the spread of the hourly Scheduled Backups cron.
BACKUP_STALE_HOURS = 26


@dataclass(frozen=True)
class AlertState:
    """What is kept between checks for one subject and kind.

    ``is_open`` with ``opened_at``, ``last_seen``, ``count`` (bad checks in the
    incident) and ``message`` describe the current alert; the streaks count the
    consecutive bad and good checks.
    """

    bad_streak: int = 0
    good_streak: int = 0
    is_open: bool = False
    count: int = 0
    opened_at: datetime.datetime | None = None
    last_seen: datetime.datetime | None = None
    message: str | None = None


@dataclass(frozen=True)
class AlertEvent:
    """What the caller must do after a check: ``action`` is open, update or resolve."""

    action: str
    at: datetime.datetime
    count: int
    message: str | None

    @property
    def notify(self):
        """True for open and resolve: the SaaS managers are told; updates are silent."""
        return self.action in (OPEN, RESOLVE)


def _positive(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(f"{name} must be a positive integer, not {value!r}")


def step(
    state,
    bad,
    *,
    at,
    message=None,
    open_after=DEFAULT_OPEN_AFTER,
    resolve_after=DEFAULT_RESOLVE_AFTER,
):
    """Feed one check's outcome; return ``(new AlertState, AlertEvent or None)``.

    :param state: the stored :class:`AlertState` (``AlertState()`` the first time).
    :param bad: True (bad check), False (good), None (not checked: no change).
    :param at: when the check ran.
    :param message: what was wrong (kept on the alert; the latest one wins).
    """
    _positive("open_after", open_after)
    _positive("resolve_after", resolve_after)
    if bad is None:
        return state, None
    if bad:
        state = replace(state, bad_streak=state.bad_streak + 1, good_streak=0)
        if state.is_open:
            state = replace(
                state, count=state.count + 1, last_seen=at, message=message or state.message
            )
            return state, AlertEvent(UPDATE, at, state.count, state.message)
        if state.bad_streak >= open_after:
            state = replace(
                state,
                is_open=True,
                count=state.bad_streak,
                opened_at=at,
                last_seen=at,
                message=message,
            )
            return state, AlertEvent(OPEN, at, state.count, message)
        return state, None
    state = replace(state, good_streak=state.good_streak + 1, bad_streak=0)
    if state.is_open and state.good_streak >= resolve_after:
        event = AlertEvent(RESOLVE, at, state.count, state.message)
        return AlertState(good_streak=state.good_streak), event
    return state, None


def server_conditions(
    *,
    online=None,
    response_time_ms=None,
    capacity_used_percent=None,
    disk_free_percent=None,
    replica_lags=None,
    slow_ms=SLOW_MS,
    disk_min_free_percent=DISK_MIN_FREE_PERCENT,
    capacity_max_used_percent=CAPACITY_MAX_USED_PERCENT,
    replica_max_lag_bytes=REPLICA_MAX_LAG_BYTES,
    replica_max_lag_s=REPLICA_MAX_LAG_S,
):
    """``{kind: True (bad) / False (good) / None (unknown)}`` for one server's check.

    ``online`` None means the probe did not run; then ``server_slow`` is unknown
    too. ``replica_lags`` is a list of ``(lag_bytes, replay_lag_s)`` pairs (either
    may be None), None when replicas were not measured; a primary without
    replicas has no lag.
    """
    conditions = {"server_down": None if online is None else not online}
    if online and response_time_ms is not None:
        conditions["server_slow"] = response_time_ms > slow_ms
    else:
        conditions["server_slow"] = None
    used = capacity_used_percent
    conditions["capacity"] = None if used is None else used >= capacity_max_used_percent
    conditions["disk"] = (
        None if disk_free_percent is None else disk_free_percent < disk_min_free_percent
    )
    if replica_lags is None:
        conditions["replica_lag"] = None
    else:
        conditions["replica_lag"] = any(
            (lag_bytes is not None and lag_bytes > replica_max_lag_bytes)
            or (lag_s is not None and lag_s > replica_max_lag_s)
            for lag_bytes, lag_s in replica_lags
        )
    return conditions


def backup_age(newest_backup, *, since, at):
    """How long (a timedelta) an instance has gone without a successful backup at ``at``.

    :param newest_backup: when its newest successful backup ended, None if it never had one.
    :param since: when the instance came to be (counted from there when it has no backup).
    """
    for name, value in (("since", since), ("at", at)):
        if not isinstance(value, datetime.datetime):
            raise InvalidInput(f"{name} must be a datetime, not {value!r}")
    if newest_backup is not None and not isinstance(newest_backup, datetime.datetime):
        raise InvalidInput(f"newest_backup must be a datetime or None, not {newest_backup!r}")
    return at - (newest_backup or since)


def backup_stale(newest_backup, *, since, at, max_age_hours=BACKUP_STALE_HOURS):
    """True when the newest successful backup (or ``since``, without one) is older than
    ``max_age_hours`` at ``at``; False otherwise. Naive datetimes are taken as they are
    (Odoo's are naive UTC)."""
    if (
        isinstance(max_age_hours, bool)
        or not isinstance(max_age_hours, int | float)
        or not math.isfinite(max_age_hours)
        or max_age_hours <= 0
    ):
        raise InvalidInput(f"max_age_hours must be a positive number, not {max_age_hours!r}")
    age = backup_age(newest_backup, since=since, at=at)
    return age > datetime.timedelta(hours=max_age_hours)
