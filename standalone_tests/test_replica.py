"""Replicas and their lag (remote.load, remote.alerts) against a real primary + standby.

A primary cluster of its own and a streaming replica made of it with
``pg_basebackup -R`` (sandbox.replica), both on 127.0.0.1. Replay is paused on the
standby while the primary writes, so the lag is real and measurable, then resumed.
"""

import contextlib

import pytest

from remote import alerts, load
from remote.postgres import ConnectionParams
from sandbox import postgres, util
from sandbox.replica import PgReplica

MONITOR = "saas_monitor"
LAG_THRESHOLD = 1024 * 1024


@pytest.fixture(scope="module")
def pair():
    if postgres.find_bindir() is None:
        pytest.skip("no PostgreSQL server binaries found")
    with postgres.PgCluster(owner="saas_owner") as primary:
        # What an operator grants the manager's role to see replication figures.
        primary.ensure_role(MONITOR, "monitor-pw")
        primary.query(f"GRANT pg_monitor TO {MONITOR}")
        with PgReplica(primary) as replica:
            yield primary, replica


def params_for(cluster, user, password):
    return ConnectionParams(
        host=cluster.host, port=cluster.port, user=user, password=password, connect_timeout=5
    )


def lag_of(primary):
    server, _sizes = load.postgres_load(params_for(primary, MONITOR, "monitor-pw"))
    return server.replicas


def test_primary_reports_its_streaming_replica(pair):
    primary, replica = pair
    # replay_lsn is NULL until the standby's first status report.
    replicas = util.wait_until(
        lambda: [item for item in lag_of(primary) if item.lag_bytes is not None],
        30,
        what="the standby's first report",
    )
    assert len(replicas) == 1
    (standby,) = replicas
    assert standby.state == "streaming"
    assert standby.sync_state == "async"
    assert standby.client_addr == "127.0.0.1"
    assert standby.lag_bytes is not None
    assert standby.lag_bytes >= 0

    on_standby, _sizes = load.postgres_load(params_for(replica, MONITOR, "monitor-pw"))
    assert not on_standby.is_primary
    assert on_standby.replicas == ()


def test_a_role_without_pg_monitor_sees_the_replica_but_not_its_figures(pair):
    primary, _replica = pair
    server, _sizes = load.postgres_load(params_for(primary, primary.owner, primary.owner_password))
    assert server.is_primary
    assert len(server.replicas) == 1
    # Hidden columns are unknown (None), never a lag of 0.
    assert server.replicas[0].lag_bytes is None
    assert server.replicas[0].state is None
    conditions = alerts.server_conditions(
        replica_lags=[(item.lag_bytes, item.replay_lag_s) for item in server.replicas]
    )
    assert conditions["replica_lag"] is False


def test_replica_lag_is_measured_and_alerted(pair):
    primary, replica = pair
    state = alerts.AlertState()

    def check():
        nonlocal state
        lags = [(item.lag_bytes, item.replay_lag_s) for item in lag_of(primary)]
        bad = alerts.server_conditions(
            replica_lags=lags, replica_max_lag_bytes=LAG_THRESHOLD, replica_max_lag_s=3600
        )["replica_lag"]
        state, event = alerts.step(state, bad, at=None, message="replica behind")
        return lags, event

    replica.query("SELECT pg_wal_replay_pause()")
    try:
        with contextlib.closing(primary.connect(superuser=True)) as conn, conn.cursor() as cr:
            cr.execute("DROP TABLE IF EXISTS lag_filler")
            cr.execute(
                "CREATE TABLE lag_filler AS "
                "SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 50000) g"
            )
        # The standby receives but does not replay: the lag grows past the threshold.
        lags, first = check()
        assert lags[0][0] > LAG_THRESHOLD, lags
        assert first is None  # one bad check: no alert yet
        lags, second = check()
        assert second is not None and second.action == "open"
    finally:
        replica.query("SELECT pg_wal_replay_resume()")

    def caught_up():
        return lag_of(primary)[0].lag_bytes == 0

    util.wait_until(caught_up, 30, what="the replica catching up")
    events = [check()[1], check()[1]]
    assert events[0] is None
    assert events[1].action == "resolve"
    assert not state.is_open
    # The standby has the primary's data.
    assert replica.query("SELECT count(*) FROM lag_filler")[0][0] == 50000
