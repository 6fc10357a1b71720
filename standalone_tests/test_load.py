"""remote.load against the suite's real PostgreSQL cluster and sshd on 127.0.0.1."""

import contextlib
import datetime
import os
import socket
import threading

import pytest
from conftest import unique
from psycopg2 import sql

from remote import load
from remote.exceptions import InvalidAnswer, InvalidInput, RemoteError
from remote.postgres import ConnectionParams

DF_HEADER = "Filesystem         1-blocks        Used   Available Capacity Mounted on\n"
LOGIN = datetime.datetime(2025, 3, 4, 5, 6, 7)


def make_odoo_db(pg, *, internal=3, portal=2, inactive=1):
    """A database with Odoo's user tables: ``internal`` active internal users."""
    name = unique("inst")
    pg.query(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)), superuser=False)
    with contextlib.closing(pg.connect(name)) as conn, conn.cursor() as cr:
        cr.execute(
            "CREATE TABLE res_users (id serial PRIMARY KEY, login varchar, active bool);"
            "CREATE TABLE res_groups_users_rel (gid int, uid int);"
            "CREATE TABLE ir_model_data (id serial PRIMARY KEY, module varchar, name varchar,"
            " model varchar, res_id int);"
            "CREATE TABLE res_users_log (id serial PRIMARY KEY, create_uid int,"
            " create_date timestamp);"
            "INSERT INTO ir_model_data (module, name, model, res_id) VALUES"
            " ('base', 'group_user', 'res.groups', 1), ('base', 'group_portal', 'res.groups', 2),"
            " ('base', 'user_root', 'res.users', 1);"
        )
        users = [("internal", True, 1)] * internal + [("portal", True, 2)] * portal
        users += [("gone", False, 1)] * inactive
        for index, (kind, active, group) in enumerate(users):
            cr.execute(
                "INSERT INTO res_users (login, active) VALUES (%s, %s) RETURNING id",
                (f"{kind}{index}", active),
            )
            uid = cr.fetchone()[0]
            cr.execute("INSERT INTO res_groups_users_rel VALUES (%s, %s)", (group, uid))
            # Everyone logged in once; the internal ones last, at LOGIN.
            when = LOGIN if kind == "internal" else LOGIN - datetime.timedelta(days=3)
            if kind == "gone":
                when = LOGIN + datetime.timedelta(days=9)  # inactive: not counted
            cr.execute(
                "INSERT INTO res_users_log (create_uid, create_date) VALUES (%s, %s), (%s, %s)",
                (uid, when - datetime.timedelta(days=30), uid, when),
            )
    return name


@pytest.fixture
def data_dir(tmp_path):
    path = tmp_path / "odoo-data"
    (path / "filestore").mkdir(parents=True)
    path.chmod(0o755)
    return path


def write_filestore(data_dir, name, sizes):
    base = data_dir / "filestore" / name / "ab"
    base.mkdir(parents=True)
    for index, size in enumerate(sizes):
        (base / f"file{index}").write_bytes(b"x" * size)


# --- parse_df ------------------------------------------------------------------------


def test_parse_df_of_a_real_answer():
    usage = load.parse_df(
        DF_HEADER + "/dev/vda       270553174016 27372310528 81571983360      26% /\n", "/srv"
    )
    assert usage == load.DiskUsage("/srv", 270553174016, 27372310528, 81571983360)
    assert 30.1 < usage.free_percent < 30.2
    # A device name with spaces, and a mount point with spaces.
    usage = load.parse_df(DF_HEADER + "my disk 1000 600 400 60% /mnt/a b\n", "/mnt/a b")
    assert usage.free_bytes == 400


def test_invalid_answer_lives_in_exceptions():
    # remote.exceptions holds it; remote.load keeps the old name importable.
    assert load.InvalidAnswer is InvalidAnswer
    assert issubclass(InvalidAnswer, RemoteError)


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        ("", "not a 'df -P -B1' answer"),
        ("garbage\n", "not a 'df -P -B1' answer"),
        ("Filesystem 1K-blocks Used Available Capacity Mounted on\n/d 1 0 1 0% /\n", "answer"),
        (DF_HEADER + "/dev/vda 10 5 5 50% /\n/dev/vdb 10 5 5 50% /x\n", "one line"),
        (DF_HEADER + "/dev/vda ten 5 5 50% /\n", "unreadable line"),
        (DF_HEADER + "/dev/vda -10 5 5 50% /\n", "unreadable line"),
        (DF_HEADER + "/dev/vda 10.5 5 5 50% /\n", "unreadable line"),
        (DF_HEADER + "/dev/vda 0 0 0 - /\n", "size of 0 bytes"),
        (DF_HEADER + f"/dev/vda {2**61} 5 5 1% /\n", "beyond any disk"),
        (DF_HEADER + f"/dev/vda {'9' * 25} 5 5 1% /\n", "unreadable line"),
        (DF_HEADER + "/dev/vda 10 50 5 100% /\n", "exceeds the size"),
        (DF_HEADER + "/dev/vda 10 5 50 50% /\n", "exceeds the size"),
    ],
    ids=[
        "empty", "garbage", "1k-blocks", "two-lines", "word", "negative", "decimal", "zero",
        "huge", "overlong", "used-too-big", "avail-too-big",
    ],
)  # fmt: skip
def test_parse_df_refuses_bad_answers(output, reason):
    with pytest.raises(InvalidAnswer, match=reason) as info:
        load.parse_df(output, "/srv/odoo")
    assert "/srv/odoo" in str(info.value)


# --- over SSH -----------------------------------------------------------------------


def test_disk_and_filestores_over_ssh(make_settings, data_dir):
    from remote.ssh import SshSession

    write_filestore(data_dir, "db_a", [1000, 2345])
    (data_dir / "filestore" / "db_b").mkdir()
    with SshSession(make_settings()) as session:
        usage = load.disk_usage(session, str(data_dir))
        sizes = load.filestore_sizes(session, str(data_dir), ["db_a", "db_b", "db_none"])
    stat = os.statvfs(data_dir)
    assert usage.total_bytes == stat.f_blocks * stat.f_frsize
    assert 0 < usage.free_bytes <= usage.total_bytes
    # du -sb counts the directories too: at least the files' bytes.
    assert 3345 <= sizes["db_a"] < 3345 + 5 * 4096
    assert 0 < sizes["db_b"] <= 4096
    assert sizes["db_none"] == 0


def test_ssh_faults_are_typed(make_settings, tmp_path):
    from remote.ssh import SshSession

    with SshSession(make_settings()) as session:
        with pytest.raises(InvalidAnswer, match="failed"):
            load.disk_usage(session, str(tmp_path / "missing"))
        with pytest.raises(InvalidAnswer, match="no filestore directory"):
            load.filestore_sizes(session, str(tmp_path), ["db_a"])
        with pytest.raises(InvalidInput):
            load.disk_usage(session, "relative/path")
        with pytest.raises(InvalidInput):
            load.filestore_sizes(session, str(tmp_path), ["bad name; rm -rf /"])


# --- PostgreSQL ----------------------------------------------------------------------


def test_postgres_load_and_activity(pg, params):
    name = make_odoo_db(pg, internal=3, portal=2, inactive=1)
    server, sizes = load.postgres_load(params, [name, "no_such_db"])
    assert server.max_connections == 200
    assert 1 <= server.connections <= server.max_connections
    assert server.is_primary
    assert server.replicas == ()
    assert set(sizes) == {name}
    assert sizes[name] > 1_000_000  # a real database's size, in bytes
    assert load.instance_activity(params, name) == (3, LOGIN)


def test_activity_of_a_database_without_users(pg, params):
    name = unique("empty")
    pg.query(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)), superuser=False)
    with pytest.raises(load.RemoteError, match="res_users"):
        load.instance_activity(params, name)


# --- collect ---------------------------------------------------------------------------


def dead_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_collect_everything(pg, params, make_settings, data_dir):
    name = make_odoo_db(pg, internal=2, portal=0, inactive=0)
    write_filestore(data_dir, name, [5000])
    target = load.LoadTarget(
        key=7, ssh=make_settings(), data_dir=str(data_dir), postgres=params, databases=[name]
    )
    result = load.collect(target)
    assert result.complete
    assert result.collected
    assert result.disk.total_bytes > 0
    assert result.postgres.is_primary
    instance = result.instance(name)
    assert instance.user_count == 2
    assert instance.last_login == LOGIN
    assert instance.db_size_bytes > 0
    assert instance.filestore_bytes >= 5000
    assert instance.errors == ()


def test_ssh_down_still_gets_postgres_and_load_unknown(pg, params, make_settings, data_dir):
    name = make_odoo_db(pg, internal=1, portal=0, inactive=0)
    ssh = make_settings(port=dead_port(), connect_timeout=2.0)
    result = load.collect(
        load.LoadTarget(key="a", ssh=ssh, data_dir=str(data_dir), postgres=params, databases=[name])
    )
    assert result.disk is None  # unknown, not zero
    assert "refused" in result.disk_error
    assert result.postgres is not None
    assert result.postgres_error is None
    instance = result.instance(name)
    assert instance.filestore_bytes is None
    assert instance.user_count == 1
    assert instance.db_size_bytes > 0
    assert any("filestore" in error for error in instance.errors)
    assert not result.complete


def test_postgres_down_still_gets_disk(pg, params, make_settings, data_dir):
    bad = ConnectionParams(
        host="127.0.0.1", port=dead_port(), user="x", password="pw-never-shown", connect_timeout=2
    )
    write_filestore(data_dir, "db_x", [10])
    result = load.collect(
        load.LoadTarget(
            key="b", ssh=make_settings(), data_dir=str(data_dir), postgres=bad, databases=["db_x"]
        )
    )
    assert result.disk is not None
    assert result.postgres is None
    assert "Cannot connect" in result.postgres_error
    assert "pw-never-shown" not in repr(result)
    instance = result.instance("db_x")
    assert instance.filestore_bytes >= 10
    assert instance.user_count is None
    assert instance.db_size_bytes is None


def test_nothing_configured_is_unknown():
    result = load.collect(load.LoadTarget(key=1, databases=["db"]))
    assert result.disk is None and result.postgres is None
    assert result.disk_error == "no SSH access set"
    assert result.postgres_error == "no PostgreSQL access set"
    assert result.instance("db").user_count is None


def test_bad_targets_are_refused_before_anything():
    with pytest.raises(InvalidInput):
        load.LoadTarget(key=1, databases="db")
    with pytest.raises(InvalidInput):
        load.LoadTarget(key=1, databases=["a b"])
    with pytest.raises(InvalidInput):
        load.LoadTarget(key=1, postgres={"host": "x"})
    with pytest.raises(InvalidInput, match="same key"):
        load.collect_many([load.LoadTarget(key=1), load.LoadTarget(key=1)])
    with pytest.raises(InvalidInput):
        load.collect_many([load.LoadTarget(key=1)], timeout=0)
    assert load.collect_many([]) == {}


def hanging_listener():
    """A port that accepts connections and never says anything (a stuck server)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(512)
    accepted = []
    stop = threading.Event()

    def serve():
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(sock.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def close():
        stop.set()
        thread.join(5)
        for conn in accepted:
            conn.close()
        sock.close()

    return sock.getsockname()[1], close


def test_collect_many_is_bounded_and_late_ones_are_unknown(pg, params, make_settings, data_dir):
    name = make_odoo_db(pg, internal=1, portal=0, inactive=0)
    port, close = hanging_listener()
    try:
        stuck_ssh = make_settings(port=port, connect_timeout=30.0)
        targets = [
            load.LoadTarget(
                key=f"ok{i}", ssh=make_settings(), data_dir=str(data_dir), postgres=params,
                databases=[name],
            )
            for i in range(2)
        ] + [
            load.LoadTarget(key=f"stuck{i}", ssh=stuck_ssh, data_dir=str(data_dir), postgres=params)
            for i in range(4)
        ]  # fmt: skip
        results = load.collect_many(targets, max_workers=12, timeout=8.0)
    finally:
        close()
    assert set(results) == {target.key for target in targets}
    for key in ("ok0", "ok1"):
        assert results[key].complete, results[key]
    for i in range(4):
        stuck = results[f"stuck{i}"]
        # The SSH part did not finish: unknown, with the reason; PostgreSQL measured.
        assert not stuck.collected
        assert stuck.disk is None
        assert "not collected within" in stuck.disk_error
        assert stuck.postgres is not None


# --- a sweep that runs out of time ----------------------------------------------------------


def test_sweep_out_of_time_marks_no_healthy_server_offline(pg, params):
    """200 servers, 60 % slow or dead, a sweep cut short: late ones are unknown, not offline."""
    import _http_peer as hp

    from remote import health

    healthy_peer = hp.Peer(hp.odoo_version()).start()
    slow_peer = hp.Peer(hp.delayed(3.0, hp.odoo_version())).start()
    hang_port, close = hanging_listener()
    closed = f"http://127.0.0.1:{hp.closed_port()}"
    dead_pg = ConnectionParams(host="127.0.0.1", port=dead_port(), user="x", connect_timeout=1)
    slow_pg = ConnectionParams(host="127.0.0.1", port=hang_port, user="x", connect_timeout=2)
    kinds = {}
    probe_targets, load_targets = [], []
    for index in range(200):
        kind = ("healthy", "slow", "dead", "healthy", "slow")[index % 5]
        key = f"{kind}-{index}"
        kinds[key] = kind
        url = {"healthy": healthy_peer.url, "slow": slow_peer.url, "dead": closed}[kind]
        probe_targets.append((key, url))
        pg_params = {"healthy": params, "slow": slow_pg, "dead": dead_pg}[kind]
        load_targets.append(load.LoadTarget(key=key, postgres=pg_params))
    try:
        probes = health.probe_many(
            probe_targets, max_workers=16, connect_timeout=1.0, timeout=1.0, sweep_timeout=1.5
        )
        loads = load.collect_many(load_targets, max_workers=16, timeout=2.5)
    finally:
        close()
        healthy_peer.stop()
        slow_peer.stop()

    unknown = [key for key, result in probes.items() if not result.checked]
    assert unknown, "the sweep was meant to run out of time"
    for key, result in probes.items():
        if kinds[key] == "healthy":
            # Answered, or not checked: never offline because the sweep ran out.
            assert result.online or not result.checked, (key, result)
        else:
            assert not result.online
        if not result.checked:
            assert not result.online
            assert "not checked" in result.error

    late = [key for key, result in loads.items() if not result.collected]
    assert late, "the load sweep was meant to run out of time"
    for key, result in loads.items():
        if kinds[key] == "healthy":
            assert result.postgres is not None or not result.collected, (key, result)
        if not result.collected:
            assert result.postgres is None and result.disk is None  # unknown, not zero
