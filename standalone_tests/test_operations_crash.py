"""The operations engine against real Odoo processes killed with ``kill -9``.

One PostgreSQL cluster, one sshd and an Odoo 18.0 server (threaded, cron threads
on) serving a manager database with saas_manager, registered as its own managed
server over JSON-RPC (see ``_odoo_manager``). Then, in this order (each step uses
what the one before made):

1. one ``kill -9`` of that Odoo while a template creation makes its database and
   a provision of a template made slow on purpose (about 300 MB of filestore in
   100 000 files) copies its filestore: no copy process survives; after a restart,
   within one cron period, the instance is running with its database and
   filestore (or failed with neither), the journal lists what was removed, no
   partial copy directory remains; the half-made template database was dropped
   and the template made again (or failed without it);
2. cancelling a queued provision frees its slot: another one then fits;
3. the managed server's PostgreSQL goes away (its port points to a closed one)
   while provisions are queued: each fails with that reason after its attempts,
   nothing half-made;
4. two Odoo processes on the same manager database, both with cron threads, and
   20 provisions queued through both: 20 done, each exactly once;
5. a move to a second host (a PostgreSQL cluster and a data directory of its own,
   over the same sshd, registered as a second server that a ready copy of the
   template was made on first), with one ``kill -9`` during its final copy, while
   the source is read-only and its database is loaded again on the target; then
6. another move, killed during its first copy (the database loaded on the target,
   the files arriving): after a restart, within one cron period and the move's own
   time, each instance is on exactly one server — moved (every row committed
   before the freeze and every file on the target, the source closed) or not
   (the source serving and writable, nothing of it on the target) — with no
   journal entry left pending and no copy program left running.

Skipped without an Odoo 18.0 tree or its virtualenv. No timing is asserted: the
waits are bounded, and only outcomes are checked.
"""

import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

import _odoo_manager as om
import psycopg2
import psycopg2.errors
import pytest

pytestmark = pytest.mark.timeout(900)

CLONE_STEP = "Cloning the template and copying its filestore"
BULK_FILES = 102_400
BULK_FILE_SIZE = 3_000
# The steps of a move a kill lands in (saas.instance._op_move).
FIRST_COPY_STEP = "Copying the database and the filestore to "
FROZEN_STEP = "Copying what changed (the instance is read-only)"
# An instance's filestore that its move copies for a few seconds (about 30 MB).
MOVE_FILES = 10_000
ROWS = 200
# What a whole move of such an instance may take, once the runner is back.
MOVE_S = 240
# One cron period and a margin: the bound of every wait for the engine's reaction.
CRON_PERIOD_S = 90
RETRY_DELAY_S = 2


def _closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _file_count(path):
    return sum(len(files) for _root, _dirs, files in os.walk(path))


@pytest.fixture(scope="module")
def manager():
    if os.environ.get("SAAS_NO_ODOO_CRASH"):
        pytest.skip("real Odoo processes: scripts/test runs them once, beside the Odoo suite")
    reason = om.why_not()
    if reason:
        pytest.skip(reason)
    work = Path(tempfile.mkdtemp(prefix="saas_crash.", dir="/tmp"))
    mgr = om.Manager(work)
    try:
        mgr.start()
        mgr.register_server()
        mgr.set_param("saas_manager.operation_retry_delay_s", RETRY_DELAY_S)
        yield mgr
    finally:
        mgr.stop()
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def template(manager):
    """A ready template (base only), made through the engine: its id and database."""
    db = "crash_tpl"
    template_id = manager.queue_template(db)
    made = manager.wait_template(template_id)
    assert made["state"] == "ready", made
    return template_id, db


def _op_of(manager, field, record_id):
    rows = manager.operations([(field, "=", record_id)])
    return rows[0] if rows else {"step": "", "state": ""}


def test_kill_during_a_template_creation_and_a_slow_provision(manager, template):
    """One ``kill -9`` while a template is being created and a provision copies its
    filestore; after a restart both are undone and retried: done or failed, never half."""
    template_id, template_db = template
    source = manager.filestore(template_db)
    source.mkdir(parents=True, exist_ok=True)
    bulk = om.fill_filestore(source, BULK_FILES, BULK_FILE_SIZE)
    assert _file_count(bulk) == BULK_FILES

    new_db = "crash_tpl_killed"
    new_template = manager.queue_template(new_db)

    def creating():
        step = _op_of(manager, "template_id", new_template)["step"] or ""
        return step.startswith("Creating database") and new_db in manager.databases()

    om.wait_for(creating, 180, interval=0.2, what="the template database being created")
    db = "crash_inst"
    (instance_id,) = manager.create_instances(template_id, [db])
    manager.provision(instance_id)

    # The copy lasts seconds: watched on the disk (an RPC may wait on the busy server),
    # killed the moment its partial directory appears; the step is read after.
    partial = om.wait_for(
        manager.partial_copies, 180, interval=0.01, what="the filestore copy running"
    )
    odoo = manager.odoos[0]
    manager.kill(odoo)
    steps = manager.pg.query(
        "SELECT kind, state, step FROM saas_operation ORDER BY id", dbname=om.MANAGER_DB
    )
    assert ("provision", "running", CLONE_STEP) in steps
    assert ("template_create", "running") in {row[:2] for row in steps}
    half_made_template = new_db in manager.databases()
    # The copy dies with its SSH channel: no cp keeps writing into the partial copy.
    assert om.wait_gone(manager.copy_processes, 30, "cp") == []
    manager.restart(odoo)

    def provision_ended():
        row = manager.rpc.one("saas.instance", instance_id, ["state", "error"])
        return row if row["state"] in ("running", "failed") else None

    # Within one cron period: the restarted Odoo's cron thread first wakes after a minute.
    instance = om.wait_for(provision_ended, CRON_PERIOD_S, interval=1.0, what="provision end")
    operations = manager.operations([("instance_id", "=", instance_id)])
    assert len(operations) == 1
    operation = operations[0]
    journal = manager.journal(operation["id"])
    first = [entry for entry in journal if entry["attempt"] == 1]
    assert {entry["kind"] for entry in first} == {"database", "directory"}
    assert all(entry["state"] == "removed" for entry in first), first
    # The clone's step journals its database and the copy's hidden sibling; the target
    # directory is journalled only by the next step, once the copy is staged.
    assert {entry["name"] for entry in first} == {db, partial[0]}, first
    assert manager.partial_copies() == []
    assert manager.copy_processes() == []
    databases = manager.databases()
    if instance["state"] == "running":
        assert operation["state"] == "done"
        assert operation["attempt"] == 2
        assert db in databases
        # The whole of the slow part (the rest is Odoo's, which the instance may change).
        assert _file_count(manager.filestore(db) / "bulk") == BULK_FILES
        later = [entry for entry in journal if entry["attempt"] == 2]
        assert later
        assert all(entry["state"] == "kept" for entry in later)
    else:
        assert operation["state"] == "failed"
        assert db not in databases
        assert not manager.filestore(db).exists()

    # The template creation: its half-made database dropped, then made again (or failed).
    assert half_made_template, "the kill came after the template database was made"
    made = manager.wait_template(new_template, timeout=CRON_PERIOD_S + 180)
    (creation,) = manager.operations([("template_id", "=", new_template)])
    entries = manager.journal(creation["id"])
    first = [entry for entry in entries if entry["attempt"] == 1]
    assert [entry["name"] for entry in first if entry["kind"] == "database"] == [new_db]
    assert all(entry["state"] == "removed" for entry in first), first
    if made["state"] == "ready":
        assert creation["state"] == "done"
        assert creation["attempt"] == 2
        assert new_db in manager.databases()
    else:
        assert creation["state"] == "failed"
        assert new_db not in manager.databases()
    # The rest of the module provisions a small template.
    shutil.rmtree(bulk)


def test_cancelling_a_queued_provision_frees_its_slot(manager, template):
    template_id, _db = template
    rpc = manager.rpc
    provisioned = rpc(
        "saas.instance",
        "search_count",
        [("server_id", "=", manager.server_id), ("state", "in", ["provisioning", "running"])],
    )
    # Room for exactly one more provision (at least 10 % must stay free).
    rpc("saas.server", "write", [manager.server_id], {"max_instances": provisioned + 1})
    manager.set_cron_active(False)
    try:
        first, second = manager.create_instances(template_id, ["cancel_a", "cancel_b"])
        manager.provision(first)
        (operation,) = manager.operations([("instance_id", "=", first)])
        assert operation["state"] == "queued"
        with pytest.raises(om.RpcError, match="capacity"):
            manager.provision(second)
        rpc("saas.operation", "action_cancel", [operation["id"]])
        assert rpc.one("saas.operation", operation["id"], ["state"])["state"] == "cancelled"
        assert rpc.one("saas.instance", first, ["state"])["state"] == "draft"
        manager.provision(second)  # the slot is free again
        (queued,) = manager.operations([("instance_id", "=", second)])
        assert queued["state"] == "queued"
        rpc("saas.operation", "action_cancel", [queued["id"]])
    finally:
        rpc("saas.server", "write", [manager.server_id], {"max_instances": 1000})
        manager.set_cron_active(True)
    assert "cancel_a" not in manager.databases()
    assert "cancel_b" not in manager.databases()


def test_server_down_while_queued_fails_after_the_attempts_with_its_reason(manager, template):
    template_id, _db = template
    rpc = manager.rpc
    names = [f"down_{n}" for n in range(4)]
    instances = manager.create_instances(template_id, names)
    closed = _closed_port()
    good_port = manager.pg.port
    manager.set_cron_active(False)
    try:
        for instance_id in instances[:3]:
            manager.provision(instance_id)
        rpc("saas.server", "write", [manager.server_id], {"db_port": closed})
    finally:
        manager.set_cron_active(True)
    try:
        manager.provision(instances[3])  # queued while down; wakes the runner
        rows = manager.wait_operations_ended(
            [("instance_id", "in", instances)], len(instances), CRON_PERIOD_S + 60
        )
    finally:
        rpc("saas.server", "write", [manager.server_id], {"db_port": good_port})
    assert len(rows) == len(instances)
    for row in rows:
        assert row["state"] == "failed", row
        assert row["attempt"] == 3, row
        assert f":{closed}" in row["error"], row
        assert not manager.journal(row["id"]) or all(
            entry["state"] == "removed" for entry in manager.journal(row["id"])
        )
    states = rpc.read("saas.instance", instances, ["state", "error"])
    assert {state["state"] for state in states} == {"failed"}
    databases = manager.databases()
    for name in names:
        assert name not in databases
        assert not manager.filestore(name).exists()
    assert manager.partial_copies() == []


def test_two_odoo_processes_run_twenty_provisions_each_once(manager, template):
    template_id, template_db = template
    second = manager.new_odoo("odoo2")
    manager.start_odoo(second)
    try:
        rpcs = [manager.rpc, om.Rpc(second.url)]
        names = [f"twin_{n:02d}" for n in range(20)]
        instances = manager.create_instances(template_id, names)
        for index, instance_id in enumerate(instances):
            rpcs[index % 2]("saas.instance", "action_provision", [instance_id])
        started = time.monotonic()
        rows = manager.wait_operations_ended(
            [("instance_id", "in", instances)], len(instances), 300
        )
        elapsed = time.monotonic() - started
    finally:
        second.stop()
    print(f"20 provisions through two Odoo processes ended in {elapsed:.1f} s")
    assert len(rows) == 20
    assert [row["state"] for row in rows] == ["done"] * 20
    assert [row["attempt"] for row in rows] == [1] * 20
    per_instance = manager.rpc.read("saas.instance", instances, ["state", "operation_count"])
    assert {row["state"] for row in per_instance} == {"running"}
    assert {row["operation_count"] for row in per_instance} == {1}
    entries = manager.rpc.search_read(
        "saas.operation.journal",
        [("operation_id", "in", [row["id"] for row in rows])],
        ["state", "kind", "name"],
    )
    assert entries
    assert {entry["state"] for entry in entries} == {"kept"}
    databases = manager.databases()
    for name in names:
        assert name in databases
        assert manager.filestore(name).is_dir() == manager.filestore(template_db).is_dir()
    assert manager.partial_copies() == []


# --- moves ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def target(manager, template):
    """A second host registered as a second server, where a ready copy of the template
    was made (a move checks the instance's modules against it): its server id, host."""
    host = manager.start_target_host()
    server_id = manager.register_target_server()
    template_id, db = template
    copy_id = manager.queue_template_copy(template_id, server_id, db)
    made = manager.wait_template(copy_id)
    assert made["state"] == "ready", made
    assert db in host.databases()
    return server_id, host


def _insert_rows(host, db, note, count):
    """Commit ``count`` rows marked ``note`` in ``db``; False when it is frozen."""
    conn = host.pg.connect(db)
    try:
        with conn.cursor() as cr:
            cr.execute("CREATE TABLE IF NOT EXISTS crash_rows (id serial PRIMARY KEY, note text)")
            cr.execute(
                "INSERT INTO crash_rows (note) SELECT %s FROM generate_series(1, %s)",
                (note, count),
            )
    except psycopg2.errors.ReadOnlySqlTransaction:
        return False
    finally:
        conn.close()
    return True


def _rows(host, db):
    return dict(host.pg.query("SELECT note, count(*) FROM crash_rows GROUP BY note", dbname=db))


def _instance_to_move(manager, template_id, db):
    """A provisioned instance with committed rows and a filestore its copy takes a while."""
    (instance_id,) = manager.create_instances(template_id, [db])
    manager.provision(instance_id)
    (provision,) = manager.wait_operations_ended([("instance_id", "=", instance_id)], 1, 240)
    assert provision["state"] == "done", provision
    om.fill_filestore(manager.filestore(db), MOVE_FILES, BULK_FILE_SIZE)
    assert _insert_rows(manager.host, db, "before the move", ROWS)
    return instance_id


def _kill_during_a_move(manager, target, template, db, at_kill):
    """Queue the move of a new instance ``db``; ``kill -9`` the Odoo once ``at_kill(step)``
    holds; restart it and wait for the move to end. Rows are committed during the first
    copy too (unless already frozen). Return what the tests check."""
    target_id, target_host = target
    instance_id = _instance_to_move(manager, template[0], db)
    committed = {"before the move": ROWS}
    operation_id = manager.queue_move(instance_id, target_id)

    def step():
        rows = manager.pg.query(
            "SELECT step FROM saas_operation WHERE id = %s", (operation_id,), dbname=om.MANAGER_DB
        )
        return rows[0][0] or ""

    def due():
        current = step()
        # Committed while the first copy runs: only the final copy brings these.
        if (
            current.startswith(FIRST_COPY_STEP)
            and len(committed) == 1
            and _insert_rows(manager.host, db, "during the first copy", ROWS)
        ):
            committed["during the first copy"] = ROWS
        return at_kill(current)

    # Read in the manager's database (an RPC may wait on the busy server).
    om.wait_for(due, 300, interval=0.02, what="the move at the step to kill it in")
    odoo = manager.odoos[0]
    manager.kill(odoo)
    killed = {
        "step": step(),
        "read_only": manager.host.read_only(db),
        "on_target": db in target_host.databases(),
    }
    # The hosts' programs die with their SSH channels.
    assert om.wait_gone(manager.copy_processes, 30, "copy programs") == []
    manager.restart(odoo)
    (operation,) = manager.wait_operations_ended(
        [("id", "=", operation_id)], 1, CRON_PERIOD_S + MOVE_S
    )
    instance = manager.rpc.one(
        "saas.instance", instance_id, ["state", "server_id", "moved_from_server_id"]
    )
    return killed, committed, operation, instance


def _check_one_server(manager, target, db, committed, operation, instance):
    """The guarantees of a move killed mid-way: on exactly one server, nothing half-made."""
    target_id, target_host = target
    source_host = manager.host
    journal = manager.journal(operation["id"])
    assert [entry for entry in journal if entry["state"] == "pending"] == []
    first = [entry for entry in journal if entry["attempt"] == 1]
    assert {entry["kind"] for entry in first} >= {"database", "directory"}
    # The killed attempt's work, removed (or thawed) when its orphan was found.
    assert {entry["state"] for entry in first} == {"removed"}, first
    assert manager.copy_processes() == []
    assert source_host.partial_copies() == []
    assert target_host.partial_copies() == []
    server_id = instance["server_id"][0]
    assert server_id in (manager.server_id, target_id), instance
    if server_id == target_id:
        assert operation["state"] == "done", operation
        assert instance["state"] == "running"
        assert instance["moved_from_server_id"][0] == manager.server_id
        assert _rows(target_host, db) == committed
        assert _file_count(target_host.filestore(db) / "bulk") == MOVE_FILES
        assert _file_count(target_host.filestore(db)) == _file_count(source_host.filestore(db))
        # The source copy, kept for the way back: closed, still read-only.
        assert not source_host.connects(db)
        assert source_host.read_only(db)
    else:
        assert operation["state"] == "failed", operation
        assert source_host.connects(db)
        assert not source_host.read_only(db)
        assert _rows(source_host, db) == committed
        assert db not in target_host.databases()
        assert not target_host.filestore(db).exists()
    return server_id == target_id


def _remove_bulk(manager, target, db):
    """The rest of the module does not need these files."""
    for host in (manager.host, target[1]):
        shutil.rmtree(host.filestore(db) / "bulk", ignore_errors=True)


def test_kill_during_the_final_copy_of_a_move(manager, template, target):
    """``kill -9`` while the source is frozen and its final copy loads the database on
    the target: after a restart the move is undone (the source thawed) and retried;
    moved or not, never half."""
    db = "crash_move_frozen"
    target_host = target[1]
    killed, committed, operation, instance = _kill_during_a_move(
        manager,
        target,
        template,
        db,
        lambda step: step == FROZEN_STEP and db in target_host.databases(),
    )
    assert killed == {"step": FROZEN_STEP, "read_only": True, "on_target": True}
    # Committed before the freeze: the first copy was running when they were written.
    assert "during the first copy" in committed
    moved = _check_one_server(manager, target, db, committed, operation, instance)
    first = [entry for entry in manager.journal(operation["id"]) if entry["attempt"] == 1]
    assert "read_only" in {entry["kind"] for entry in first}
    print(f"move killed while frozen: {'moved' if moved else 'not moved'}, {operation}")
    _remove_bulk(manager, target, db)


def test_kill_during_the_first_copy_of_a_move(manager, template, target):
    """``kill -9`` while the first copy writes the files on the target (its database
    loaded there): undone and retried; moved or not, never half."""
    db = "crash_move_first"
    target_host = target[1]
    killed, committed, operation, instance = _kill_during_a_move(
        manager,
        target,
        template,
        db,
        lambda step: step.startswith(FIRST_COPY_STEP) and target_host.filestore(db).exists(),
    )
    assert killed["step"].startswith(FIRST_COPY_STEP)
    assert killed["on_target"]
    assert not killed["read_only"]
    moved = _check_one_server(manager, target, db, committed, operation, instance)
    print(f"move killed in its first copy: {'moved' if moved else 'not moved'}, {operation}")
    _remove_bulk(manager, target, db)
