"""remote.retention: grandfather-father-son over a simulated year, with frozen dates."""

import datetime
import random

import pytest

from remote.exceptions import InvalidInput
from remote.retention import retention_plan, to_expire

START = datetime.datetime(2025, 1, 1, 2, 0)


def daily_year(failed_days=(), skipped_days=(), hourly_days=()):
    """A backup at 02:00 every day of 2025, some failed, some missing, some hourly."""
    backups = []
    next_id = 1
    for offset in range(365):
        day = START + datetime.timedelta(days=offset)
        if offset in skipped_days:
            continue
        times = (
            [day + datetime.timedelta(hours=h) for h in range(22)]
            if offset in hourly_days
            else [day]
        )
        for when in times:
            state = "failed" if offset in failed_days else "done"
            backups.append((next_id, when, state))
            next_id += 1
    return backups


def kept_ids(backups, **counts):
    plan = retention_plan(backups, **counts)
    expired = set(plan.expire)
    return [b for b in backups if b[0] not in expired and b[2] == "done"], plan


def test_a_year_of_daily_backups():
    backups = daily_year()
    kept, plan = kept_ids(backups)
    dates = sorted(when for _id, when, _state in kept)
    # 7 daily + the newest of the 4 most recent weeks and 12 most recent months, overlapping.
    assert len(kept) <= 7 + 4 + 12
    assert dates[-7:] == [START + datetime.timedelta(days=d) for d in range(358, 365)]
    months = {(d.year, d.month) for d in dates}
    assert months == {(2025, m) for m in range(1, 13)}
    # The monthly ones are the last backup of each month.
    for month in range(1, 12):
        last = datetime.datetime(2025, month + 1, 1, 2, 0) - datetime.timedelta(days=1)
        assert last in dates
    weeks = {d.isocalendar()[:2] for d in dates}
    assert len([w for w in weeks if w >= (2025, 49)]) >= 4
    assert plan.keep[backups[-1][0]][0] == "newest"
    assert sorted(plan.expire) == plan.expire  # ids ascend with dates here: oldest first


def test_newest_failed_blocks_everything():
    backups = daily_year(failed_days={364})
    plan = retention_plan(backups)
    assert plan.expire == [] and plan.blocked


def test_failed_backups_are_never_expired_and_do_not_count():
    backups = daily_year(failed_days=set(range(300, 360)))
    plan = retention_plan(backups)
    failed = {b[0] for b in backups if b[2] == "failed"}
    assert not failed & set(plan.expire)
    kept, _plan = kept_ids(backups)
    # 7 daily backups are the last 7 good days: 5 after the failures, 2 before.
    good_days = sorted({when.date() for _i, when, _s in kept})
    assert datetime.date(2025, 12, 31) in good_days
    assert datetime.date(2025, 10, 27) in good_days  # day 299, last good before the failures


def test_hourly_and_irregular_backups():
    backups = daily_year(
        skipped_days=set(range(100, 140)) | {361}, hourly_days={362, 363, 364}, failed_days={20}
    )
    kept, plan = kept_ids(backups)
    # Hourly days keep one backup each (the newest of the day).
    last_days = [b for b in kept if b[1].date() >= datetime.date(2025, 12, 29)]
    assert sorted(b[1].hour for b in last_days) == [23, 23, 23]
    # The month with a 40-day gap still keeps one backup.
    assert any(b[1].month == 5 for b in kept)
    assert len(kept) <= 23
    assert backups[-1][0] in plan.keep


def test_deterministic_whatever_the_order():
    backups = daily_year(hourly_days={50, 51}, failed_days={7, 8})
    expected = to_expire(backups)
    for seed in range(5):
        shuffled = backups[:]
        random.Random(seed).shuffle(shuffled)  # noqa: S311 (a test order)
        assert to_expire(shuffled) == expected
    # Ties on the date: the id decides.
    same = [(1, START, "done"), (2, START, "done"), (3, START, "done")]
    assert to_expire(same) == [1, 2]
    assert to_expire(list(reversed(same))) == [1, 2]


def test_daily_cron_over_a_year_never_loses_the_newest_good_backup():
    """Run the rotation every day as the cron would, on what is left."""
    stored = []
    all_backups = daily_year(failed_days={30, 31, 200}, hourly_days={90})
    for day in range(365):
        today = [b for b in all_backups if (b[1] - START).days == day]
        stored.extend(today)
        expired = set(to_expire(stored))
        newest_good = max((b for b in stored if b[2] == "done"), key=lambda b: (b[1], b[0]))
        assert newest_good[0] not in expired
        if stored[-1][2] == "failed":
            assert not expired
        stored = [b for b in stored if b[0] not in expired]
    good = [b for b in stored if b[2] == "done"]
    assert len(good) <= 23
    assert {(b[1].year, b[1].month) for b in good} == {(2025, m) for m in range(1, 13)}


def test_inputs_as_mappings_and_objects():
    class Backup:
        def __init__(self, backup_id, date, state):
            self.id, self.date, self.state = backup_id, date, state

    rows = [
        {"id": 1, "date": datetime.date(2025, 1, 1), "state": "done"},
        {"id": 2, "date": datetime.date(2025, 1, 1), "state": "done"},
        {"id": 3, "date": datetime.date(2025, 1, 2), "state": "running"},
    ]
    assert to_expire(rows) == [1]
    assert to_expire([Backup(r["id"], r["date"], r["state"]) for r in rows]) == [1]
    assert to_expire([]) == []
    assert to_expire(rows, keep_daily=0, keep_weekly=0, keep_monthly=0) == [1]
    with pytest.raises(InvalidInput):
        to_expire(rows, keep_daily=-1)
    with pytest.raises(InvalidInput):
        to_expire([(1, None, "done")])
