"""remote.alerts: the hysteresis, over simulated checks."""

import datetime

import pytest

from remote import alerts
from remote.exceptions import InvalidInput

T0 = datetime.datetime(2025, 1, 1, 0, 0, 0)


def run(outcomes, **options):
    """Feed ``outcomes`` (a string: B bad, G good, ? not checked); return the events."""
    state = alerts.AlertState()
    events = []
    for index, letter in enumerate(outcomes):
        bad = {"B": True, "G": False, "?": None}[letter]
        at = T0 + datetime.timedelta(hours=index)
        state, event = alerts.step(state, bad, at=at, message=f"check {index}", **options)
        if event:
            events.append(event)
    return state, events


def actions(events):
    return "".join(event.action[0] for event in events)  # o(pen) u(pdate) r(esolve)


def test_a_server_flapping_over_20_checks():
    # Down/up every check: never two bad checks in a row, so no alert and no mail.
    state, events = run("BG" * 10)
    assert events == []
    assert not state.is_open

    # Flapping with short outages: bad twice opens, one good does not resolve,
    # two good do. 20 checks, 3 incidents.
    pattern = "BBGBGGBGBBBGGGBBGBGG"
    assert len(pattern) == 20
    state, events = run(pattern)
    assert actions(events) == "ourourour"
    opened = [event for event in events if event.action == "open"]
    notified = [event for event in events if event.notify]
    assert len(opened) == 3  # one alert per incident
    assert len(notified) == 6  # open + resolve of each
    assert not state.is_open
    # The first incident: opened at check 1, seen again at check 3, 3 bad checks.
    assert events[0].at == T0 + datetime.timedelta(hours=1)
    assert (events[1].action, events[1].count) == ("update", 3)
    assert events[2].at == T0 + datetime.timedelta(hours=5)


def test_one_long_outage_is_one_alert():
    state, events = run("G" + "B" * 17 + "GG")
    assert actions(events) == "o" + "u" * 15 + "r"
    assert events[-1].count == 17
    assert sum(event.notify for event in events) == 2
    assert state == alerts.AlertState(good_streak=2)


def test_not_checked_changes_nothing():
    # A sweep that ran out of time neither opens nor resolves.
    _state, events = run("B?B??GG" + "?" * 5)
    assert actions(events) == "or"
    _state, events = run("BB?G?G")
    assert actions(events) == "or"
    state, events = run("B" + "?" * 19)
    assert events == []
    assert state.bad_streak == 1


@pytest.mark.parametrize(("open_after", "expected"), [(1, "ouur"), (3, "or"), (4, "")])
def test_open_after_is_configurable(open_after, expected):
    _state, events = run("BBBGG", open_after=open_after)
    assert actions(events) == expected


def test_resolve_needs_consecutive_goods():
    state, events = run("BBGBGBGB")
    assert actions(events) == "ouuu"
    assert state.is_open
    assert state.count == 5
    assert state.message == "check 7"


def test_bad_options_are_refused():
    with pytest.raises(InvalidInput):
        alerts.step(alerts.AlertState(), True, at=T0, open_after=0)
    with pytest.raises(InvalidInput):
        alerts.step(alerts.AlertState(), True, at=T0, resolve_after=True)


def test_server_conditions():
    assert alerts.server_conditions() == dict.fromkeys(
        ("server_down", "server_slow", "capacity", "disk", "replica_lag")
    )
    found = alerts.server_conditions(
        online=True,
        response_time_ms=2500,
        capacity_used_percent=50,
        disk_free_percent=5,
        replica_lags=[(0, None), (100 * 1024 * 1024, 1.0)],
    )
    assert found == {
        "server_down": False,
        "server_slow": True,
        "capacity": False,
        "disk": True,
        "replica_lag": True,
    }
    found = alerts.server_conditions(online=False, response_time_ms=10000, replica_lags=[])
    assert found["server_down"] is True
    assert found["server_slow"] is None  # a down server is not also slow
    assert found["replica_lag"] is False
    assert alerts.server_conditions(replica_lags=[(None, 600.0)])["replica_lag"] is True
    assert alerts.server_conditions(capacity_used_percent=90)["capacity"] is True


# --- backup_stale -------------------------------------------------------------------


def test_backup_stale_after_the_plans_daily_schedule():
    created = T0
    backup = T0 + datetime.timedelta(hours=3)
    hours = datetime.timedelta(hours=1)
    # No backup yet: counted from the instance's creation.
    assert not alerts.backup_stale(None, since=created, at=created + 26 * hours)
    assert alerts.backup_stale(None, since=created, at=created + 27 * hours)
    # With one: counted from it, whatever the creation date.
    assert not alerts.backup_stale(backup, since=created, at=backup + 25 * hours)
    assert alerts.backup_stale(backup, since=created, at=backup + 26 * hours + hours / 60)
    assert alerts.backup_age(backup, since=created, at=backup + 30 * hours) == 30 * hours
    # The threshold is a setting.
    assert not alerts.backup_stale(backup, since=created, at=backup + 40 * hours, max_age_hours=48)
    assert alerts.backup_stale(backup, since=created, at=backup + 3 * hours, max_age_hours=2.5)


@pytest.mark.parametrize("hours", [0, -1, True, float("inf"), float("nan"), "26", None])
def test_backup_stale_refuses_a_bad_threshold(hours):
    with pytest.raises(InvalidInput, match="max_age_hours"):
        alerts.backup_stale(None, since=T0, at=T0, max_age_hours=hours)


def test_backup_stale_refuses_what_is_not_a_datetime():
    with pytest.raises(InvalidInput, match="since"):
        alerts.backup_stale(None, since="2025-01-01", at=T0)
    with pytest.raises(InvalidInput, match="newest_backup"):
        alerts.backup_stale(1735689600, since=T0, at=T0)
