#!/usr/bin/env python3
"""Benchmark a move between two servers: ours (two passes, frozen only for the second)
against Odoo's own backup → restore, in one run on the same data.

Everything on 127.0.0.1 (``scripts/saas.py bench transfer`` runs it in the Odoo
virtualenv). The sandbox of ``bench_provision`` (:func:`bench_provision.start_sandbox`,
imported, not copied) gives the source host: a durable PostgreSQL cluster (fsync,
full_page_writes and synchronous_commit on), a private sshd, an Odoo 18.0 server
(threaded) and the large bench template (--large-apps, default sale_management,crm
with demo data, made by ``odoo-bin -i``). Here are added the target host: a second
durable cluster, a data directory of its own and a second Odoo server on them (for
Odoo's restore); both hosts are reached over the one sshd.

The instance is a clone of the large template with a filestore of --fs-mb MB in
--fs-files files named as Odoo names them (``xx/<sha1 of the content>``) and registered
as ``ir_attachment`` rows, beside the template's own files. Three identical copies of
it are made (databases cloned, filestores hard-linked) so that each method moves its
own and nothing is removed on the target before the end (on ext4, creating files
right after many were deleted is slow; see bench_provision). Then, each started from
``sync`` and a CHECKPOINT on both clusters:

1. **our move**, the functions of ``saas.instance.transfer._op_move`` in its order:
   ``transfer.copy_pass`` while the instance is live, ``postgres.drop_database`` of the
   first copy's database, ``postgres.set_read_only``
   (the freeze), ``transfer.copy_pass(replace=True)``, ``transfer.verify``,
   ``transfer.set_base_url`` (the switch: the downtime ends here), then
   ``postgres.set_connections_allowed(False)`` (the source closed). The
   ``pre_transfer`` backup the operation takes before the first copy
   (``backup_jobs.run_backup``, into a local storage) is timed apart (--no-backup
   skips it); not included: the checks on the target (one SSH command and a few
   queries) and the manager's journal commits;
2. **Odoo's way**: ``db.dump`` (zip: database and filestore) of the source Odoo over
   JSON-RPC, then ``/web/database/restore`` on the target Odoo (its database
   manager's form). Writes must stop for the whole of it, so all of it is downtime;
3. **our move again, written to**: a thread writes as Odoo does (a new file in the
   filestore, then its ``ir_attachment`` row and a row of a table of its own, one
   commit each) from before the first copy until the freeze refuses it; the final
   pass must carry what it committed, and ``verify`` must pass;
4. with --frozen-writes, a probe: the writer goes on trying through the frozen
   window, as the users of a read-only Odoo would (each refused write has already
   written its file, as Odoo's ``_file_write`` comes before the INSERT).

Not a test: timings depend on the machine. Prints the figures and the load average.
"""

import argparse
import base64
import contextlib
import hashlib
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg2
import psycopg2.errors
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import bench_provision  # noqa: E402

from remote import backup, backup_jobs, odoo_rpc, postgres, transfer  # noqa: E402
from remote.exceptions import RemoteError  # noqa: E402
from sandbox import odoo as sandbox_odoo  # noqa: E402
from sandbox import util  # noqa: E402
from sandbox.postgres import PgCluster  # noqa: E402

TEMPLATE = "bench_tpl_large"
BASE_URL = "https://moved.bench.example.com"
GOAL_DOWNTIME_SHARE = 1 / 3
RPC_TIMEOUT_S = 900
WRITES_TABLE = "bench_move_writes"
WRITER_FILE_BYTES = 20_000
WRITER_MAX_WRITES = 100_000


def load():
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


class DropLog(logging.Handler):
    """When ``postgres.drop_database`` logged each drop (the final pass drops the
    first pass's copy before it loads the database again)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.dropped = {}

    def emit(self, record):
        if record.msg == "Dropped database %s" and record.args:
            self.dropped[record.args[0]] = record.created


DROP_LOG = DropLog()


def step(steps, label, func, *args, **kwargs):
    """Run ``func``, append ``(label, seconds, result)`` to ``steps``; return its result."""
    util.log(f"bench:   {label}")
    started = time.monotonic()
    result = func(*args, **kwargs)
    steps.append((label, time.monotonic() - started, result))
    return result


# --- the instance --------------------------------------------------------------------


def write_blob(directory, content, *, checklist=False):
    """Write ``content`` where Odoo's filestore puts it; return (store_fname, sha1).

    ``checklist``: also the empty ``checklist/xx/<sha1>`` file Odoo's ``_file_write``
    adds (``_mark_for_gc``) in case the transaction aborts.
    """
    sha = hashlib.sha1(content).hexdigest()  # noqa: S324 -- Odoo's own naming
    fname = f"{sha[:2]}/{sha}"
    path = Path(directory) / fname
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_bytes(content)
        if checklist:
            mark = Path(directory) / "checklist" / fname
            mark.parent.mkdir(parents=True, exist_ok=True)
            mark.touch()
    return fname, sha


def fill_filestore(directory, files, total_bytes):
    """``files`` random files of ``total_bytes`` in all (sizes ±50 %); their rows."""
    mean = total_bytes // files
    rows = []
    for number in range(files):
        size = mean // 2 + (number * 7919) % (mean + 1)
        content = os.urandom(size)
        fname, sha = write_blob(directory, content)
        rows.append((f"bench_{number:05d}.bin", fname, sha, size))
    return rows


def register_attachments(cr, rows):
    """One ``ir_attachment`` row per file, on the main partner, as Odoo stores them."""
    cr.execute(
        "INSERT INTO ir_attachment (name, type, res_model, res_id, store_fname, checksum, "
        "file_size, mimetype, public, create_uid, write_uid, create_date, write_date) "
        "SELECT n, 'binary', 'res.partner', 1, f, c, s, 'application/octet-stream', false, "
        "1, 1, now() at time zone 'UTC', now() at time zone 'UTC' "
        "FROM unnest(%s::varchar[], %s::varchar[], %s::varchar[], %s::int[]) AS t(n, f, c, s)",
        [list(column) for column in zip(*rows, strict=True)],
    )


class Instance:
    """The source instance: a database on the source cluster and its filestore."""

    def __init__(self, bench, name):
        self.bench = bench
        self.name = name
        self.dir = bench.filestore(name)

    def connect(self):
        return psycopg2.connect(
            host=self.bench.pg.host,
            port=self.bench.pg.port,
            user=self.bench.pg.user,
            password=self.bench.pg.password,
            dbname=self.name,
            connect_timeout=10,
        )


def make_instance(bench, name, fs_files, fs_bytes):
    util.log(f"bench: instance {name}: clone of {TEMPLATE}, {fs_files} files of filestore")
    bench.wait_idle(TEMPLATE)
    postgres.clone_database(bench.pg, TEMPLATE, name, base_url="https://src.bench.example.com")
    instance = Instance(bench, name)
    template_dir = bench.filestore(TEMPLATE)
    if template_dir.is_dir():
        shutil.copytree(template_dir, instance.dir)
    rows = fill_filestore(instance.dir, fs_files, fs_bytes)
    conn = instance.connect()
    try:
        with conn, conn.cursor() as cr:
            register_attachments(cr, rows)
            cr.execute(
                f"CREATE TABLE {WRITES_TABLE} (id serial PRIMARY KEY, "
                "written_at timestamptz NOT NULL DEFAULT now(), attachment_id int, note text)"
            )
    finally:
        conn.close()
    return instance


def copy_instance(bench, source, name):
    """Another instance with the same data: database cloned, filestore hard-linked."""
    bench.wait_idle(source.name)
    postgres.clone_database(bench.pg, source.name, name)
    subprocess.run(["cp", "-al", str(source.dir), str(bench.filestore(name))], check=True)
    return Instance(bench, name)


def describe(bench, instance):
    size = bench.query("SELECT pg_database_size(%s)", (instance.name,))[0][0]
    tables = bench.query(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind = 'r' AND n.nspname = 'public'",
        dbname=instance.name,
    )[0][0]
    attachments = bench.query(
        "SELECT count(*) FROM ir_attachment WHERE store_fname IS NOT NULL", dbname=instance.name
    )[0][0]
    modules = bench.query(
        "SELECT count(*) FROM ir_module_module WHERE state = 'installed'", dbname=instance.name
    )[0][0]
    fs_bytes, fs_files = bench_provision.filestore_size(instance.dir)
    return (
        f"database {size / 2**20:.0f} MB (pg_database_size), {tables} tables, {modules} "
        f"modules; filestore {fs_bytes / 2**20:.0f} MB in {fs_files} files, {attachments} "
        "ir_attachment rows with a stored file"
    )


# --- the writer ---------------------------------------------------------------------


class Writer(threading.Thread):
    """Writes to an instance as Odoo does: the file (and its checklist entry) first,
    then its rows, one commit; at most one write every ``interval`` seconds.

    Until ``frozen`` is set every refused write is an error; after it, the writer
    stops at the first write refused as read-only, or (``through_freeze``) goes on trying until
    ``stop`` is set, at most every ``interval`` seconds.
    """

    def __init__(self, instance, *, through_freeze=False, interval=0.1):
        super().__init__(daemon=True, name=f"writer-{instance.name}")
        self.instance = instance
        self.through_freeze = through_freeze
        self.interval = interval
        self.frozen = threading.Event()
        self.stop = threading.Event()
        self.committed = self.committed_files = 0
        self.refused = self.errors_before_freeze = 0
        self.files_after_freeze = 0
        self.last_refusal = ""

    def _write(self, conn, number):
        content = f"bench writer {self.instance.name} {number} ".encode() * (
            WRITER_FILE_BYTES // 32
        )
        fname, sha = write_blob(self.instance.dir, content, checklist=True)
        if self.frozen.is_set():
            self.files_after_freeze += 1
        with conn.cursor() as cr:
            cr.execute(
                "INSERT INTO ir_attachment (name, type, res_model, res_id, store_fname, "
                "checksum, file_size, mimetype, public, create_uid, write_uid, create_date, "
                "write_date) VALUES (%s, 'binary', 'res.partner', 1, %s, %s, %s, 'text/plain', "
                "false, 1, 1, now() at time zone 'UTC', now() at time zone 'UTC') RETURNING id",
                (f"written_{number}.txt", fname, sha, len(content)),
            )
            (attachment_id,) = cr.fetchone()
            cr.execute(
                f"INSERT INTO {WRITES_TABLE} (attachment_id, note) VALUES (%s, %s)",  # noqa: S608
                (attachment_id, f"write {number}"),
            )
        conn.commit()

    def run(self):
        conn = None
        for number in range(WRITER_MAX_WRITES):
            if self.stop.is_set():
                break
            try:
                if conn is None or conn.closed:
                    conn = self.instance.connect()
                self._write(conn, number)
                self.committed += 1
                self.committed_files += 1
            except psycopg2.Error as exc:
                with contextlib.suppress(psycopg2.Error):
                    conn.close()
                conn = None
                if not self.frozen.is_set():
                    self.errors_before_freeze += 1
                else:
                    # The freeze ends the session first (rolled back), then refuses.
                    self.refused += 1
                    self.last_refusal = str(exc).strip().splitlines()[0]
                    read_only = isinstance(exc, psycopg2.errors.ReadOnlySqlTransaction)
                    if read_only and not self.through_freeze:
                        break
            time.sleep(self.interval)
        if conn is not None:
            conn.close()


# --- our move -----------------------------------------------------------------------


def our_move(bench, hosts, instance, writer=None, backup_storage=None):
    """The steps of ``_op_move`` from the first copy on; a dict of figures.

    ``backup_storage``: a local directory to take the operation's ``pre_transfer``
    backup into first (``backup_jobs.run_backup``, as ``saas.backup`` runs it); timed
    apart, not in ``total``.
    """
    source, target = hosts
    db = instance.name
    copy_args = {
        "database": db,
        "source_dir": str(instance.dir),
        "target_database": db,
        "target_dir": str(target.data_dir / "filestore" / db),
    }
    steps = []
    backup_s = None
    if backup_storage:
        step(
            steps, "before: the pre_transfer backup (backup_jobs.run_backup)",
            backup_jobs.run_backup, ("local", {"path": str(backup_storage)}), source.pg,
            bench.ssh_settings, db, str(instance.dir), backup.backup_key(db),
        )  # fmt: skip
        backup_s = steps[-1][1]
        quiesce(bench, target)
    started = time.monotonic()
    if writer:
        writer.start()
        time.sleep(0.5)  # writing before the first copy starts
    first = step(
        steps, "first copy, live: transfer.copy_pass", transfer.copy_pass,
        source.host, target.host, **copy_args,
    )  # fmt: skip
    step(
        steps, "drop the first copy's database: postgres.drop_database",
        postgres.drop_database, target.pg, db,
    )  # fmt: skip
    frozen_at = time.monotonic()
    if writer:
        writer.frozen.set()
    step(steps, "freeze: postgres.set_read_only", postgres.set_read_only, source.pg, db, True)
    final_wall = time.time()
    try:
        final = step(
            steps, "final copy, frozen: copy_pass(replace=True)", transfer.copy_pass,
            source.host, target.host, **copy_args, replace=True,
        )  # fmt: skip
        final_end = time.time()
        checked = step(
            steps, "verify: transfer.verify", transfer.verify, source.host, target.host,
            **copy_args,
        )  # fmt: skip
        step(
            steps, "switch: transfer.set_base_url", transfer.set_base_url,
            target.pg, db, BASE_URL,
        )  # fmt: skip
    except RemoteError as exc:
        # What the operation does then: the source thawed (the target copy removed).
        if writer:
            writer.stop.set()
            writer.join(timeout=30)
        postgres.set_read_only(source.pg, db, False)
        return {"steps": steps, "failed": f"{type(exc).__name__}: {exc}", "writer": writer}
    downtime = time.monotonic() - frozen_at
    step(
        steps, "close the source: set_connections_allowed(False)",
        postgres.set_connections_allowed, source.pg, db, False,
    )  # fmt: skip
    total = time.monotonic() - started
    if writer:
        writer.stop.set()
        writer.join(timeout=30)
    result = {
        "steps": steps,
        "total": total,
        "downtime": downtime,
        "first": first,
        "final": final,
        "checked": checked,
        "writer": writer,
        "failed": None,
        "backup": backup_s,
    }
    dropped = DROP_LOG.dropped.get(db)
    if dropped and final_wall <= dropped <= final_end:
        result["final_split"] = (dropped - final_wall, final_end - dropped)
    if writer:
        (target_rows,) = target.cluster.query(
            f"SELECT count(*) FROM {WRITES_TABLE}",  # noqa: S608
            dbname=db,
        )[0]
        result["target_rows"] = target_rows
    return result


# --- Odoo's way ---------------------------------------------------------------------


def odoo_way(bench, target, instance, work):
    """db.dump (zip) over JSON-RPC from the source Odoo, /web/database/restore on the
    target's; a dict of figures."""
    db = instance.name
    steps = []
    archive = work / f"{db}.zip"
    client = odoo_rpc.OdooRpcClient(
        bench.args.odoo_url, timeout=RPC_TIMEOUT_S, max_response_bytes=8 << 30
    )
    started = time.monotonic()

    def dump():
        data = client.call(
            "db", "dump", bench.master_password, db, "zip",
            timeout=RPC_TIMEOUT_S, redact=(bench.master_password,),
        )  # fmt: skip
        decoded = base64.b64decode(data)
        archive.write_bytes(decoded)
        return len(decoded)

    def restore():
        with archive.open("rb") as handle:
            answer = requests.post(
                f"{target.odoo.url}/web/database/restore",
                data={"master_pwd": target.odoo.master_password, "name": db, "copy": "false"},
                files={"backup_file": (archive.name, handle, "application/zip")},
                allow_redirects=False,
                timeout=RPC_TIMEOUT_S,
            )
        # Success redirects to the manager; a failure renders it with the error.
        if answer.status_code not in (301, 302, 303):
            text = answer.text
            marker = text.find("Database restore error")
            raise RuntimeError(text[marker : marker + 300] if marker >= 0 else text[-300:])
        if not postgres.database_exists(target.pg, db):
            raise RuntimeError(f"{db} is not on the target after the restore")

    try:
        size = step(steps, "backup: db.dump (zip) over JSON-RPC, source Odoo", dump)
        step(steps, "restore: /web/database/restore, target Odoo", restore)
    finally:
        client.close()
    total = time.monotonic() - started
    archive.unlink(missing_ok=True)
    # Untimed: is Odoo's copy the same as its source by our verification?
    target_dir = target.data_dir / "filestore" / db
    try:
        checked = transfer.verify(
            bench.source_host, target.host, database=db, source_dir=str(instance.dir),
            target_database=db, target_dir=str(target_dir),
        )  # fmt: skip
        same = f"same rows, sequences and files ({checked.rows} rows, {checked.files} files)"
    except RemoteError as exc:
        same = f"differs: {exc}"
    return {"steps": steps, "total": total, "downtime": total, "zip": size, "same": same}


# --- running --------------------------------------------------------------------------


class TargetHost:
    """The second host: its cluster, data directory and Odoo; its transfer.Host."""

    def __init__(self, cluster, data_dir, odoo, ssh_settings):
        self.cluster = cluster
        self.data_dir = data_dir
        self.odoo = odoo
        self.pg = postgres.ConnectionParams(
            host=cluster.host, port=cluster.port, user=cluster.owner,
            password=cluster.owner_password,
        )  # fmt: skip
        self.host = host_of(self.pg, ssh_settings, cluster.bindir)


class SourceHost:
    def __init__(self, bench):
        self.pg = bench.pg
        self.host = bench.source_host


def host_of(pg, ssh_settings, bindir):
    return transfer.Host(
        pg, ssh_settings, python="python3",
        pg_dump=str(Path(bindir) / "pg_dump"), psql=str(Path(bindir) / "psql"),
    )  # fmt: skip


def quiesce(bench, target):
    """Untimed, before each method: files flushed, both clusters checkpointed."""
    subprocess.run(["sync"], check=False, timeout=300)
    bench.checkpoint()
    target.cluster.query("CHECKPOINT")


def start_target(args, stack, work, bench):
    odoo_src = sandbox_odoo.find_odoo_src()
    cluster = PgCluster(work / "pg-target", owner="saas_bench_target", durable=not args.fast_pg)
    util.log("bench: the target host's PostgreSQL cluster")
    stack.enter_context(cluster)
    data_dir = work / "target-data"
    (data_dir / "filestore").mkdir(parents=True)
    server = sandbox_odoo.OdooServer(
        work / "odoo-target", odoo_src, sys.executable, cluster, with_addon=False,
        data_dir=data_dir,
        options={"gevent_port": util.free_port(), "dbfilter": "^$", "workers": 0},
        serve_args=("--log-level=warn",),
    )  # fmt: skip
    util.log(f"bench: the target host's Odoo on {server.url}")
    stack.enter_context(server)
    return TargetHost(cluster, data_dir, server, bench.ssh_settings)


def settings_line(bench, target):
    source = bench.query(
        "SELECT current_setting('server_version'), current_setting('fsync'), "
        "current_setting('synchronous_commit'), current_setting('full_page_writes')"
    )[0]
    other = target.cluster.query(
        "SELECT current_setting('fsync'), current_setting('synchronous_commit'), "
        "current_setting('full_page_writes')"
    )[0]
    return (
        f"PostgreSQL {source[0]}: source fsync {source[1]}, synchronous_commit {source[2]}, "
        f"full_page_writes {source[3]}; target {other[0]}/{other[1]}/{other[2]}. "
        f"Odoo {bench.odoo.version()['server_version']}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; all on loopback, one sshd for both hosts."
    )


def print_table(title, rows, total, downtime):
    width = max(50, *(len(label) for label, _s, _r in rows))
    print(f"\n{title}")
    print(f"  {'step':<{width}}  {'seconds':>8}")
    for label, seconds, _result in rows:
        print(f"  {label:<{width}}  {seconds:>8.2f}")
    label = "total (from the first copy)" if rows[0][0].startswith("before") else "total"
    print(f"  {label:<{width}}  {total:>8.2f}")
    print(f"  {'downtime':<{width}}  {downtime:>8.2f}")


def report_ours(title, result):
    if result["failed"]:
        print(f"\n{title}")
        for label, seconds, _result in result["steps"]:
            print(f"  {label:<50}  {seconds:>8.2f}")
        print(f"  FAILED (source thawed): {result['failed']}")
        writer = result["writer"]
        if writer:
            print(
                f"  writer: {writer.committed} writes committed, {writer.refused} refused "
                f"after the freeze, {writer.files_after_freeze} files written after the "
                f"freeze by refused writes (last refusal: {writer.last_refusal})"
            )
        return
    print_table(title, result["steps"], result["total"], result["downtime"])
    share = result["downtime"] / result["total"]
    verdict = "met" if share <= GOAL_DOWNTIME_SHARE else "MISSED"
    first, final, checked = result["first"], result["final"], result["checked"]
    print(
        f"  total: from the first copy to the source closed; downtime: from the freeze to "
        f"the end of set_base_url (the switch). downtime / total: {share:.2f} (goal <= 1/3: "
        f"{verdict})"
    )
    if result["backup"]:
        whole = result["total"] + result["backup"]
        share = result["downtime"] / whole
        verdict = "met" if share <= GOAL_DOWNTIME_SHARE else "MISSED"
        print(
            f"  with the pre_transfer backup the operation takes first: {whole:.2f} s, "
            f"downtime / total {share:.2f} (goal <= 1/3: {verdict})"
        )
    print(
        f"  first pass: {first.dump_size / 2**20:.0f} MB of SQL, {first.sent_files} files "
        f"({first.sent_bytes / 2**20:.0f} MB) sent; final pass: "
        f"{final.dump_size / 2**20:.0f} MB of SQL, {final.sent_files} files "
        f"({final.sent_bytes / 2**20:.1f} MB) sent, {final.removed_files} removed"
    )
    if "final_split" in result:
        before, load_s = result["final_split"]
        print(
            f"  final pass: {before:.2f} s to the end of the DROP DATABASE of the first "
            f"copy (SSH, both listings, the drop), then {load_s:.2f} s creating it again "
            "and loading it (pg_dump | psql)"
        )
    print(
        f"  verified: {checked.tables} tables, {checked.rows} rows, {checked.sequences} "
        f"sequences, {checked.files} files ({checked.bytes / 2**20:.0f} MB)"
    )
    writer = result["writer"]
    if writer:
        print(
            f"  writer: {writer.committed} writes committed (each a file, an ir_attachment "
            f"row, a {WRITES_TABLE} row), {writer.errors_before_freeze} errors before the "
            f"freeze, {writer.refused} refused after it ({writer.last_refusal}); rows of "
            f"{WRITES_TABLE} on the target: {result['target_rows']} "
            f"({'all committed writes' if result['target_rows'] == writer.committed else 'LOST'})"
        )


def main():  # noqa: PLR0915
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--fs-mb", type=int, default=300, help="MB of filestore to add")
    parser.add_argument("--fs-files", type=int, default=3000)
    parser.add_argument(
        "--large-apps", default=os.environ.get("BENCH_LARGE_APPS", "sale_management,crm")
    )
    parser.add_argument("--no-writer", action="store_true", help="skip the written-to move")
    parser.add_argument(
        "--frozen-writes",
        action="store_true",
        help="also a move while writes go on being tried through the frozen window",
    )
    parser.add_argument(
        "--no-backup", action="store_true", help="skip the pre_transfer backup's timing"
    )
    parser.add_argument("--fast-pg", action="store_true", help="fsync off (test settings)")
    parser.add_argument("--timeout", type=int, default=1500, help="seconds for the whole run")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--verbose", action="store_true", help="log remote.* (SSH commands too) on stderr"
    )
    args = parser.parse_args()
    if args.verbose:
        logging.basicConfig(format="%(relativeCreated)9.0f ms %(name)s: %(message)s")
        logging.getLogger("remote").setLevel(logging.DEBUG)
    # What start_sandbox reads: the small template is only base (unused here).
    args.small_apps = "base"

    def out_of_time(_signum, _frame):
        raise TimeoutError(f"the benchmark ran past --timeout {args.timeout} s")

    signal.signal(signal.SIGALRM, out_of_time)
    signal.alarm(args.timeout)
    load_start = load()
    run_started = time.monotonic()
    with contextlib.ExitStack() as stack:
        bench_provision.start_sandbox(args, stack)
        work = Path(args.data_dir).parent
        bench = bench_provision.Bench(args)
        logging.getLogger(postgres.__name__).addHandler(DROP_LOG)
        bench.source_host = host_of(bench.pg, bench.ssh_settings, args.pg_bindir)
        target = start_target(args, stack, work, bench)
        hosts = (SourceHost(bench), target)
        quiet = make_instance(bench, "bench_move", args.fs_files, args.fs_mb * 2**20)
        odoo_copy = copy_instance(bench, quiet, "bench_odoo")
        written = None if args.no_writer else copy_instance(bench, quiet, "bench_move_w")
        probe = copy_instance(bench, quiet, "bench_move_p") if args.frozen_writes else None
        bench.query("VACUUM (ANALYZE)", dbname=quiet.name)
        header = settings_line(bench, target)
        instance_line = describe(bench, quiet)
        loads = {}

        util.log("bench: our move (quiet instance)")
        quiesce(bench, target)
        loads["ours"] = load()
        backups = None
        if not args.no_backup:
            backups = work / "backups"
            backups.mkdir()
        ours = our_move(bench, hosts, quiet, backup_storage=backups)
        util.log("bench: Odoo's way (db.dump zip, /web/database/restore)")
        quiesce(bench, target)
        loads["odoo"] = load()
        odoo = odoo_way(bench, target, odoo_copy, work)
        ours_w = probe_w = None
        if written:
            util.log("bench: our move, written to during the first copy")
            quiesce(bench, target)
            loads["written"] = load()
            ours_w = our_move(bench, hosts, written, Writer(written))
        if probe:
            util.log("bench: our move, writes tried through the frozen window")
            quiesce(bench, target)
            loads["probe"] = load()
            probe_w = our_move(
                bench, hosts, probe, Writer(probe, through_freeze=True, interval=0.2)
            )
        signal.alarm(0)

    print(header)
    print(f"Load average (1, 5, 15 min) at start: {load_start}; before each method: {loads}")
    print(f"The instance (clone of {TEMPLATE}, {args.large_apps}, demo data): {instance_line}")
    report_ours("Our move (remote.transfer, the steps of _op_move), quiet instance:", ours)
    print_table(
        "Odoo's way: backup then restore by Odoo's database manager (all of it downtime):",
        odoo["steps"], odoo["total"], odoo["downtime"],
    )  # fmt: skip
    print(f"  zip of {odoo['zip'] / 2**20:.0f} MB; Odoo's copy by transfer.verify: {odoo['same']}")
    if ours_w:
        report_ours("Our move, written to until the freeze:", ours_w)
    if probe_w:
        report_ours("Our move, writes tried through the frozen window:", probe_w)
    if not ours["failed"]:
        print(
            f"\nSummary: ours {ours['total']:.1f} s in all, {ours['downtime']:.1f} s read-only "
            f"({ours['downtime'] / ours['total']:.2f} of it); Odoo's backup → restore "
            f"{odoo['total']:.1f} s, all of it downtime: {odoo['total'] / ours['downtime']:.1f}x "
            f"our downtime, {odoo['total'] / ours['total']:.2f}x our total."
        )
    print(
        f"Load average at the end: {load()}; whole run {time.monotonic() - run_started:.0f} s "
        "(setup included)."
    )
    failed = ours["failed"] or (ours_w and ours_w["failed"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
