"""remote.transfer and the freeze in remote.postgres, across two real PostgreSQL clusters.

The source is the session's cluster, the target a second cluster started here; both
hosts are reached over the session's sshd (one machine, two PostgreSQL servers).
"""

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time

import psycopg2
import pytest
from conftest import make_filestore, make_template, odoo_like, tree, unique
from psycopg2 import sql

from remote import postgres, transfer
from remote.exceptions import DatabaseError, SshError, TransferError, TransferMismatch
from remote.postgres import ConnectionParams
from sandbox import postgres as sandbox_postgres


@pytest.fixture(scope="module")
def target_cluster():
    with sandbox_postgres.PgCluster(owner="saas_target") as cluster:
        yield cluster


def host_params(cluster):
    return ConnectionParams(
        host=cluster.host,
        port=cluster.port,
        user=cluster.owner,
        password=cluster.owner_password,
        connect_timeout=5,
    )


@pytest.fixture
def hosts(params, target_cluster, make_settings):
    settings = make_settings()
    before = target_cluster.databases()
    yield transfer.Host(params, settings), transfer.Host(host_params(target_cluster), settings)
    for name in target_cluster.databases() - before:
        target_cluster.query(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def source(pg, tmp_path):
    name = odoo_like(pg)
    store = tmp_path / "src" / name
    make_filestore(store, files=8)
    (tmp_path / "dst").mkdir()
    return name, store, tmp_path / "dst" / name


def copy(hosts, source, **options):
    name, store, target_dir = source
    return transfer.copy_pass(
        *hosts,
        database=name,
        source_dir=str(store),
        target_database=name,
        target_dir=str(target_dir),
        **options,
    )


def rows(cluster, db, query):
    return cluster.query(query, dbname=db)


def test_two_passes_copy_rows_sequences_and_only_the_new_files(pg, target_cluster, hosts, source):
    name, store, target_dir = source
    first = copy(hosts, source)
    assert (first.files, first.sent_files, first.removed_files) == (8, 8, 0)
    assert tree(target_dir) == tree(store)
    assert rows(target_cluster, name, "SELECT count(*) FROM res_partner") == [(120,)]

    # The instance lives on: rows, a sequence moved on, a new file, a file collected.
    with contextlib.closing(pg.connect(name)) as conn, conn.cursor() as cr:
        cr.execute(
            "INSERT INTO res_partner (name) SELECT 'late ' || g FROM generate_series(1, 7) g"
        )
    made = make_filestore(store.parent / "extra", files=1)
    rel = next(iter(made))
    os.makedirs(store / rel.split("/")[0], exist_ok=True)
    shutil.move(store.parent / "extra" / rel, store / rel)
    collected = sorted(path for path in tree(store) if path != rel)[0]
    os.unlink(store / collected)

    second = copy(hosts, source, replace=True)
    assert (second.files, second.sent_files, second.removed_files) == (8, 1, 1)
    assert tree(target_dir) == tree(store)
    assert rows(target_cluster, name, "SELECT count(*) FROM res_partner") == [(127,)]
    checked = transfer.verify(
        *hosts,
        database=name,
        source_dir=str(store),
        target_database=name,
        target_dir=str(target_dir),
    )
    assert (checked.files, checked.rows >= 127, checked.sequences >= 2) == (8, True, True)
    assert second.digest == transfer.listing_digest(
        {path: len(data) for path, data in tree(store).items()}
    )


def test_verify_finds_a_missing_row_a_sequence_and_a_file(target_cluster, hosts, source):
    name, store, target_dir = source
    copy(hosts, source)
    check = {
        "database": name,
        "source_dir": str(store),
        "target_database": name,
        "target_dir": str(target_dir),
    }
    transfer.verify(*hosts, **check)
    with contextlib.closing(target_cluster.connect(name)) as conn, conn.cursor() as cr:
        cr.execute("DELETE FROM res_partner WHERE id = 3")
        cr.execute("SELECT setval('res_partner_id_seq', 500)")
    with pytest.raises(
        TransferMismatch, match=r"row counts differ \(public.res_partner: 120 → 119\)"
    ):
        transfer.verify(*hosts, **check)
    with pytest.raises(TransferMismatch, match=r"sequences differ \(public.res_partner_id_seq"):
        transfer.verify(*hosts, **check)
    with contextlib.closing(target_cluster.connect(name)) as conn, conn.cursor() as cr:
        cr.execute("INSERT INTO res_partner (id, name) VALUES (3, 'back')")
        cr.execute("SELECT setval('res_partner_id_seq', 120)")
    transfer.verify(*hosts, **check)
    victim = sorted(tree(target_dir))[0]
    os.unlink(target_dir / victim)
    with pytest.raises(TransferMismatch, match="filestores differ"):
        transfer.verify(*hosts, **check)


def test_a_second_pass_needs_replace_and_a_failed_load_names_no_password(
    pg, target_cluster, hosts, source
):
    name, _store, _target_dir = source
    copy(hosts, source)
    with pytest.raises(DatabaseError, match="already exists"):
        copy(hosts, source)
    # A grant to a role the target's cluster does not have: psql stops on it.
    role = unique("only_on_source")
    pg.query(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
    with contextlib.closing(pg.connect(name)) as conn, conn.cursor() as cr:
        cr.execute(sql.SQL("GRANT SELECT ON res_partner TO {}").format(sql.Identifier(role)))
    source_host, target_host = hosts
    with pytest.raises(TransferError) as failure:
        copy(hosts, source, replace=True)
    assert "psql failed" in str(failure.value) and role in str(failure.value)
    for secret in (source_host.pg.password, target_host.pg.password):
        assert secret not in str(failure.value)


def test_freeze_refuses_writes_keeps_reads_and_thaws(pg, params):
    name = make_template(pg)
    assert postgres.is_read_only(params, name) is False
    holder = pg.connect(name)
    postgres.set_read_only(params, name, True)
    assert postgres.is_read_only(params, name) is True
    # The session open before the freeze was ended.
    with pytest.raises(psycopg2.Error), holder.cursor() as cr:
        cr.execute("SELECT 1")
    holder.close()
    with contextlib.closing(pg.connect(name)) as conn, conn.cursor() as cr:
        cr.execute("SELECT count(*) FROM res_partner")
        assert cr.fetchone() == (120,)
        with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):
            cr.execute("INSERT INTO res_partner (name) VALUES ('frozen')")
    postgres.set_read_only(params, name, False)
    assert postgres.is_read_only(params, name) is False
    with contextlib.closing(pg.connect(name)) as conn, conn.cursor() as cr:
        cr.execute("INSERT INTO res_partner (name) VALUES ('thawed')")
    # Thawing what is gone is nothing; freezing it is an error.
    postgres.set_read_only(params, unique("gone"), False)
    with pytest.raises(DatabaseError, match="does not exist"):
        postgres.set_read_only(params, unique("gone"), True)


def test_a_frozen_source_copies_and_the_copy_is_writable(pg, params, target_cluster, hosts, source):
    name, _store, _target_dir = source
    postgres.set_read_only(params, name, True)
    try:
        copy(hosts, source)
    finally:
        postgres.set_read_only(params, name, False)
    with contextlib.closing(target_cluster.connect(name)) as conn, conn.cursor() as cr:
        cr.execute("INSERT INTO res_partner (name) VALUES ('on the target')")
    assert postgres.is_read_only(hosts[1].pg, name) is False


def test_prepare_copy_neutralises_and_gives_a_new_identity(target_cluster, hosts, source):
    name, _store, _target_dir = source
    copy(hosts, source)
    target_pg = hosts[1].pg
    assert transfer.installed_modules(target_pg, name) == ["base", "mail", "web"]
    assert "crm" in transfer.available_modules(target_pg, name)
    new_uuid = transfer.prepare_copy(
        target_pg,
        name,
        neutralize_queries=["UPDATE res_partner SET name = 'neutral' WHERE id = 1"],
        base_url="http://copy.example.com",
    )
    values = dict(rows(target_cluster, name, "SELECT key, value FROM ir_config_parameter"))
    assert values["database.uuid"] == new_uuid != "11111111-1111-1111-1111-111111111111"
    assert values["web.base.url"] == "http://copy.example.com"
    assert rows(target_cluster, name, "SELECT name FROM res_partner WHERE id = 1") == [("neutral",)]


def test_verify_leaves_out_files_no_attachment_names(pg, target_cluster, hosts, source):
    name, store, target_dir = source
    files = sorted(tree(store))
    with contextlib.closing(pg.connect(name)) as conn, conn.cursor() as cr:
        cr.execute("CREATE TABLE ir_attachment (id serial PRIMARY KEY, store_fname varchar)")
        cr.executemany("INSERT INTO ir_attachment (store_fname) VALUES (%s)", [(f,) for f in files])
        cr.execute("INSERT INTO ir_attachment (store_fname) VALUES (NULL)")
    copy(hosts, source)
    check = {
        "database": name,
        "source_dir": str(store),
        "target_database": name,
        "target_dir": str(target_dir),
    }
    # A write the freeze refused: its file and its garbage-collector marker, no row.
    (store / "ab").mkdir(exist_ok=True)
    (store / "ab" / "ab0123").write_bytes(b"orphan")
    (store / "checklist" / "ab").mkdir(parents=True)
    (store / "checklist" / "ab" / "ab0123").write_bytes(b"")
    checked = transfer.verify(*hosts, **check)
    assert (checked.files, checked.bytes) == (8, sum(len(d) for d in tree(target_dir).values()))
    # A file an attachment names, missing on the target, is a difference.
    os.unlink(target_dir / files[0])
    with pytest.raises(TransferMismatch, match=r"filestores differ \(8 files, .* → 7 files"):
        transfer.verify(*hosts, **check)


def _kill_cluster(cluster):
    """SIGKILL the cluster's postmaster and every backend: PostgreSQL dying mid-work."""
    pid = int((cluster.datadir / "postmaster.pid").read_text().splitlines()[0])
    children = subprocess.run(
        ["pgrep", "-P", str(pid)], capture_output=True, text=True, timeout=30, check=False
    ).stdout.split()
    for victim in [pid, *map(int, children)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)


def _host_programs_left(database):
    """The copy programs (and pg_dump) of this database's pass still running: named by
    the database (other tests, the kill -9 ones beside, may be moving theirs)."""
    found = subprocess.run(
        ["pgrep", "-f", f"(saas-send|saas-restore|pg_dump).*{database}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return found.stdout.split()


def test_target_postgres_killed_mid_copy_fails_cleanly(pg, params, make_settings, tmp_path):
    """The target's PostgreSQL killed (kill -9) while it loads the copy: the pass fails
    promptly with a reason that names no password, no program is left on either host,
    the source is untouched, and the target (restarted) has nothing of the load."""
    name = odoo_like(pg)
    with contextlib.closing(pg.connect(name)) as conn, conn.cursor() as cr:
        cr.execute(
            "INSERT INTO res_partner (name) SELECT repeat(md5(g::text), 6) "
            "FROM generate_series(1, 400000) g"
        )
        cr.execute("SELECT count(*) FROM res_partner")
        (partners,) = cr.fetchone()
    store = tmp_path / "src" / name
    make_filestore(store, files=4)
    (tmp_path / "dst").mkdir()
    with sandbox_postgres.PgCluster(owner="saas_dying") as dying:
        target = transfer.Host(host_params(dying), make_settings())
        outcome = {}

        def run():
            try:
                copy((transfer.Host(params, make_settings()), target), (name, store,
                     tmp_path / "dst" / name))  # fmt: skip
            except Exception as exc:  # what the caller sees
                outcome["error"] = exc
            else:
                outcome["done"] = True

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        deadline = time.monotonic() + 60
        while not dying.query("SELECT count(*) FROM pg_stat_activity WHERE query ILIKE 'COPY %%'")[
            0
        ][0]:
            assert worker.is_alive(), f"the copy ended before its load: {outcome}"
            assert time.monotonic() < deadline, "the load never started"
            time.sleep(0.05)
        assert _host_programs_left(name), "the pass's programs are found by their name"
        _kill_cluster(dying)
        worker.join(120)
        assert not worker.is_alive(), "the pass did not end after its target died"
        error = outcome.get("error")
        assert isinstance(error, TransferError | DatabaseError | SshError), outcome
        for secret in (dying.owner_password, pg.owner_password):
            assert secret not in str(error)
        deadline = time.monotonic() + 20
        while _host_programs_left(name):
            assert time.monotonic() < deadline, f"left running: {_host_programs_left(name)}"
            time.sleep(0.2)
        assert rows(pg, name, "SELECT count(*) FROM res_partner") == [(partners,)]
        dying.stop()
        dying.start()  # crash recovery
        if name in dying.databases():  # made empty before the load, which never committed
            assert rows(dying, name, "SELECT to_regclass('res_partner') IS NULL") == [(True,)]
