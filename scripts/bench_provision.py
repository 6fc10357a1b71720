#!/usr/bin/env python3
"""Benchmark provisioning a database from an Odoo template, every way in one run.

For each template database it times, --repeat times each (rounds interleaved, after
--warmup untimed rounds), every copy dropped again (with its filestore) after the timings:

* a bare ``CREATE DATABASE x TEMPLATE t STRATEGY s`` over psycopg2 (the baseline),
  for each strategy;
* ``remote.postgres.clone_database`` for each strategy (the copy plus its new
  identity);
* the whole provision as ``saas.instance._provision`` does it: an SSH session to
  the host, ``clone_database`` with the default strategy, ``base_url`` and the
  customer's handover (administrator, company, language), and the
  template's filestore copied over SSH beside the clone (``remote.provision``);
* ``createdb`` then ``pg_dump -Fc | pg_restore`` (the database only);
* Odoo's own ``db.duplicate_database`` over JSON-RPC (database and filestore).

Then it prints the medians, their ratio to the bare clone, the whole provision's
breakdown and whether the targets hold.

Unless --odoo-url names systems of your own, it starts everything on 127.0.0.1 with
the sandbox (``scripts/bench_provision`` = ``scripts/saas.py bench provision`` runs it
in the Odoo virtualenv): a durable PostgreSQL cluster (fsync, full_page_writes and
synchronous_commit on, as in production; --fast-pg or BENCH_PG_DURABLE=0 for the test
settings), a private sshd and an Odoo 18.0 server (threaded, list_db on). Two
templates are made with ``odoo-bin -i … --stop-after-init`` before the server starts:
a small one (--small-apps, $BENCH_SMALL_APPS, default mail, without demo data) and a
larger one (--large-apps, $BENCH_LARGE_APPS, default sale_management,crm, with demo
data; empty to skip). Everything is stopped and removed at the end (--keep or
KEEP_BENCH=1 keeps the directory). With systems of your own, the PostgreSQL and
master passwords come from the environment (BENCH_PG_PASSWORD, BENCH_MASTER_PASSWORD).

Copies are dropped at the end of the run, not right after each timing: on ext4,
creating files shortly after many were deleted is slow (the inode allocator skips
recently freed inodes; up to 5 minutes after the deletion), and every method here
creates a few thousand files. Dropping each copy at once added 3-4 s to every
following CREATE DATABASE of a 29 MB template on a 2-core VM (--drop-each shows it).

Not a test: timings depend on the machine.
"""

import argparse
import contextlib
import logging
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg2
import psycopg2.errors
from psycopg2 import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from remote import handover, odoo_rpc, postgres, provision, ssh  # noqa: E402
from sandbox import odoo as sandbox_odoo  # noqa: E402
from sandbox import util  # noqa: E402
from sandbox.postgres import PgCluster  # noqa: E402
from sandbox.service import ServiceError  # noqa: E402
from sandbox.sshd import Sshd  # noqa: E402

# The whole provision must stay within this factor of the bare clone, and be at
# least this much faster than Odoo's db.duplicate_database.
TARGET_VS_BARE = 2.0
TARGET_VS_ODOO = 2.0
BASE_URL = "https://bench.example.com"
PG_COMMAND_TIMEOUT = 900
PROVISION_PARTS = ("CREATE DATABASE", "clone")


class Bench:
    """The systems under test and how to reach them."""

    def __init__(self, args):
        self.args = args
        self.pg = postgres.ConnectionParams(
            host=args.pg_host,
            port=args.pg_port,
            user=args.pg_user,
            password=os.environ.get("BENCH_PG_PASSWORD") or None,
        )
        self.ssh_settings = ssh.SshSettings(
            host=args.ssh_host,
            port=args.ssh_port,
            username=args.ssh_user,
            private_key=Path(args.ssh_key_file).read_text(),
            host_key=Path(args.ssh_host_key_file).read_text(),
        )
        self.master_password = os.environ.get("BENCH_MASTER_PASSWORD", "")
        self.odoo = odoo_rpc.OdooRpcClient(args.odoo_url, timeout=60)
        self.data_dir = Path(args.data_dir)
        self.pg_env = dict(os.environ, PGPASSWORD=self.pg.password or "")
        self.can_checkpoint = True
        # The copies made so far, dropped at the end of the run (see --drop-each).
        self.copies = []
        # The copy time clone_database logs, to split the whole provision.
        self.clone_log = CloneLog()
        logging.getLogger(postgres.__name__).addHandler(self.clone_log)
        logging.getLogger(postgres.__name__).setLevel(logging.INFO)

    def filestore(self, db):
        return self.data_dir / "filestore" / db

    def connect(self, dbname="postgres"):
        conn = psycopg2.connect(
            host=self.pg.host,
            port=self.pg.port,
            user=self.pg.user,
            password=self.pg.password,
            dbname=dbname,
            application_name="saas_manager_bench",
        )
        conn.autocommit = True
        return conn

    def query(self, query, params=(), dbname="postgres"):
        conn = self.connect(dbname)
        try:
            with conn.cursor() as cr:
                cr.execute(query, params)
                return cr.fetchall() if cr.description else None
        finally:
            conn.close()

    def checkpoint(self):
        """Start a timing from a clean state: no dirty buffers left by the last one."""
        if not self.can_checkpoint:
            return
        try:
            self.query("CHECKPOINT")
        except psycopg2.errors.InsufficientPrivilege:
            self.can_checkpoint = False

    def wait_idle(self, db, timeout=15.0):
        """Wait (untimed) until no session is left on ``db``: a closed connection's
        backend exits a moment later, and CREATE DATABASE … TEMPLATE refuses a busy
        template."""
        deadline = time.monotonic() + timeout
        query = (
            "SELECT pid, application_name, state, backend_start, left(query, 60) "
            "FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid() "
            # Autovacuum workers are told to leave by CREATE DATABASE itself.
            "AND coalesce(backend_type, 'client backend') = 'client backend'"
        )
        while sessions := self.query(query, (db,)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"sessions still open on {db} after {timeout:g} s: {sessions}")
            time.sleep(0.05)

    def ssh_round_trip(self, runs=5):
        """Median time of one remote command (``true``) on an open session."""
        with ssh.SshSession(self.ssh_settings) as session:
            times = []
            for _ in range(runs):
                started = time.monotonic()
                session.run(["true"])
                times.append(time.monotonic() - started)
        return statistics.median(times)

    def master_password_call(self, runs=5):
        """Median time of a JSON-RPC call that only checks the master password
        (``db.drop`` of a database that does not exist)."""
        times = []
        for _ in range(runs):
            started = time.monotonic()
            self.odoo.drop_database(self.master_password, "bench_no_such_database")
            times.append(time.monotonic() - started)
        return statistics.median(times)

    def pg_tool(self, name):
        return str(Path(self.args.pg_bindir) / name) if self.args.pg_bindir else name

    def pg_tool_args(self):
        return ["-h", self.pg.host, "-p", str(self.pg.port), "-U", self.pg.user, "-w"]

    def drop(self, db):
        """Drop a copy and its filestore (untimed)."""
        postgres.drop_database(self.pg, db)
        shutil.rmtree(self.filestore(db), ignore_errors=True)


class CloneLog(logging.Handler):
    """Keeps the CREATE DATABASE time of the last ``clone_database`` log line."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.copy_s = None

    def emit(self, record):
        # "Cloned template %s into %s (strategy %s, PostgreSQL %s) in %.3f s (copy %.3f s)"
        if record.msg.startswith("Cloned template") and len(record.args or ()) == 6:
            self.copy_s = record.args[5]


# --- the methods ---------------------------------------------------------------
# Each makes database ``target`` from ``template`` and returns a dict of its parts'
# durations (possibly empty); the caller times the whole call.


def bare_clone(strategy):
    def run(bench, template, target):
        query = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(target), sql.Identifier(template)
        )
        if strategy:
            query = sql.SQL("{} STRATEGY {}").format(query, sql.SQL(postgres.STRATEGIES[strategy]))
        conn = bench.connect()
        try:
            with conn.cursor() as cr:
                cr.execute(query)
        finally:
            conn.close()
        return {}

    return run


def postgres_clone_only(strategy):
    def run(bench, template, target):
        postgres.clone_database(bench.pg, template, target, strategy=strategy, base_url=BASE_URL)
        return {}

    return run


def whole_provision(bench, template, target):
    """What ``saas.instance._provision`` does (``remote.provision``), with its parts timed.

    The filestore copy (SSH connect included) runs beside the clone, so the parts
    overlap: the whole is about the longer of the two, not their sum.
    """
    bench.clone_log.copy_s = None
    result = provision.provision(
        bench.pg,
        bench.ssh_settings,
        template,
        target,
        source_dir=str(bench.filestore(template)),
        target_dir=str(bench.filestore(target)),
        base_url=BASE_URL,
        # As saas.instance hands the clone to its customer, in the identity step.
        handover=handover.Handover(
            admin_email=f"{target}@bench.example",
            admin_name="Bench Customer",
            company_name="Bench Customer Ltd",
            lang="en_US",
            tz="Europe/Paris",
        ),
    )
    parts = {"clone": result.clone.duration_s}
    if bench.clone_log.copy_s is not None:
        parts["CREATE DATABASE"] = bench.clone_log.copy_s
    return {key: parts[key] for key in PROVISION_PARTS if key in parts}


def dump_restore(bench, template, target):
    parts = {}
    started = time.monotonic()
    subprocess.run(
        [bench.pg_tool("createdb"), *bench.pg_tool_args(), "-T", "template0", target],
        env=bench.pg_env,
        check=True,
        timeout=PG_COMMAND_TIMEOUT,
    )
    parts["createdb"] = time.monotonic() - started
    dump = subprocess.Popen(
        [bench.pg_tool("pg_dump"), *bench.pg_tool_args(), "-Fc", template],
        env=bench.pg_env,
        stdout=subprocess.PIPE,
    )
    try:
        restore = subprocess.run(
            # -1 (--single-transaction): one commit to flush, not one per object.
            [bench.pg_tool("pg_restore"), *bench.pg_tool_args(), "-1", "-d", target],
            env=bench.pg_env,
            stdin=dump.stdout,
            stderr=subprocess.PIPE,
            text=True,
            timeout=PG_COMMAND_TIMEOUT,
            check=False,
        )
    finally:
        dump.stdout.close()
        dump_rc = dump.wait(timeout=PG_COMMAND_TIMEOUT)
    if dump_rc or restore.returncode:
        raise RuntimeError(
            f"pg_dump exited {dump_rc}, pg_restore {restore.returncode}: "
            f"{restore.stderr.strip()[-500:]}"
        )
    return parts


def odoo_duplicate(bench, template, target):
    bench.odoo.call(
        "db",
        "duplicate_database",
        bench.master_password,
        template,
        target,
        False,
        timeout=600,
        redact=(bench.master_password,),
    )
    return {}


def drop_odoo_copy(bench, db):
    # Through Odoo, so that it forgets the registry it loaded for the copy.
    bench.odoo.drop_database(bench.master_password, db)
    bench.drop(db)


# --- running -----------------------------------------------------------------


class Method:
    def __init__(self, key, label, run, drop=None, filestore=False):
        self.key = key
        self.label = label
        self.run = run
        self.drop = drop or Bench.drop
        self.filestore = filestore
        self.times = []
        self.parts = []
        self.error = None


def build_methods(strategies):
    methods = [
        Method(
            f"bare_{s or 'none'}",
            f"bare CREATE DATABASE … TEMPLATE ({s or 'no strategy'})",
            bare_clone(s),
        )
        for s in strategies
    ]
    methods += [
        Method(
            f"clone_{s or 'none'}",
            f"postgres.clone_database ({s or 'no strategy'})",
            postgres_clone_only(s),
        )
        for s in strategies
    ]
    default = postgres.DEFAULT_STRATEGY if strategies != [None] else None
    methods += [
        Method(
            "provision",
            f"whole provision: ssh + clone ({default or 'no strategy'}) " "+ filestore",
            whole_provision,
            filestore=True,
        ),
        Method("dump_restore", "createdb + pg_dump -Fc | pg_restore -1", dump_restore),
        Method(
            "odoo_duplicate",
            "Odoo db.duplicate_database (JSON-RPC)",
            odoo_duplicate,
            drop=drop_odoo_copy,
            filestore=True,
        ),
    ]
    return methods


def run_once(bench, method, template, target, timed):
    if postgres.database_exists(bench.pg, target):
        raise SystemExit(f"database {target} exists already: not touching it")
    bench.wait_idle(template)
    bench.checkpoint()
    started = time.monotonic()
    try:
        parts = method.run(bench, template, target)
        elapsed = time.monotonic() - started
        if not postgres.database_exists(bench.pg, target):
            raise RuntimeError(f"{target} was not created")
        has_filestore = bench.filestore(template).is_dir()
        if method.filestore and has_filestore and not bench.filestore(target).is_dir():
            raise RuntimeError(f"the filestore of {target} was not copied")
    finally:
        if bench.args.drop_each:
            drop_copy(bench, method, target)
        else:
            bench.copies.append((method, target))
    if timed:
        method.times.append(elapsed)
        method.parts.append(parts)


def drop_copy(bench, method, target):
    try:
        method.drop(bench, target)
    except Exception as exc:
        print(f"  warning: cannot drop {target}: {exc}", file=sys.stderr)


def bench_template(bench, template, methods, repeat, warmup):
    for method in methods:
        method.times, method.parts, method.error = [], [], None
    for round_ in range(warmup + repeat):
        timed = round_ >= warmup
        # Rotate the order, so that no method always follows the same one.
        shift = round_ % len(methods)
        for method in methods[shift:] + methods[:shift]:
            if method.error:
                continue
            target = f"{template}_{method.key}_{round_}"
            try:
                run_once(bench, method, template, target, timed)
            except Exception as exc:
                method.error = f"{type(exc).__name__}: {exc}"
                print(f"  {method.label}: failed: {method.error}", file=sys.stderr)
        print(f"  {template}: round {round_ + 1}/{warmup + repeat} done", file=sys.stderr)


# --- reporting ---------------------------------------------------------------


def median(values):
    return statistics.median(values) if values else None


def filestore_size(path):
    total = count = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            total += os.lstat(os.path.join(dirpath, name)).st_size
            count += 1
    return total, count


def describe_template(bench, template):
    size = bench.query("SELECT pg_database_size(%s)", (template,))[0][0]
    modules = bench.query(
        "SELECT count(*) FROM ir_module_module WHERE state = 'installed'", dbname=template
    )[0][0]
    demo = bench.query(
        "SELECT count(*) FROM ir_module_module WHERE state = 'installed' AND demo",
        dbname=template,
    )[0][0]
    fs_bytes, fs_files = filestore_size(bench.filestore(template))
    return (
        f"{template}: database {size / 2**20:.1f} MB (pg_database_size), {modules} modules "
        f"installed, demo data {'yes' if demo else 'no'}; filestore {fs_bytes / 2**20:.1f} MB "
        f"in {fs_files} files"
    )


def report(template_line, methods, reference, repeat):
    print()
    print(template_line)
    ref = median(reference.times)
    width = max(len(m.label) for m in methods)
    print(f"  {'method':<{width}}  {'median':>8}  {'min':>8}  {'max':>8}  {'x bare':>7}")
    for method in methods:
        if method.error or not method.times:
            print(f"  {method.label:<{width}}  failed: {method.error}")
            continue
        med = median(method.times)
        ratio = f"{med / ref:.2f}" if ref else "-"
        print(
            f"  {method.label:<{width}}  {med:>7.3f}s  {min(method.times):>7.3f}s  "
            f"{max(method.times):>7.3f}s  {ratio:>7}"
        )
    print(f"  (x bare: against {reference.label}; {repeat} timed runs each)")

    provision = next(m for m in methods if m.key == "provision")
    if provision.parts:
        keys = list(dict.fromkeys(k for parts in provision.parts for k in parts))
        breakdown = ", ".join(
            f"{key} {median([p[key] for p in provision.parts if key in p]):.3f}s" for key in keys
        )
        print(f"  whole provision, medians of its parts: {breakdown}")

    odoo = next(m for m in methods if m.key == "odoo_duplicate")
    bare_wal = next((m for m in methods if m.key == "bare_wal_log"), None)
    if odoo.times and bare_wal and bare_wal.times:
        print(
            "  Odoo's duplicate beyond its own CREATE DATABASE (WAL_LOG): "
            f"{median(odoo.times) - median(bare_wal.times):.3f}s (medians)"
        )
    # Medians as asked; minimums too, since a busy machine only ever adds time.
    if provision.times and reference.times:
        prov, ref = median(provision.times), median(reference.times)
        best = min(provision.times) / min(reference.times)
        verdict = "holds" if prov <= TARGET_VS_BARE * ref else "MISSED"
        print(
            f"  target: whole provision within {TARGET_VS_BARE:g}x the bare clone: "
            f"{prov:.3f}s / {ref:.3f}s = {prov / ref:.2f}x -> {verdict} "
            f"(minimums: {best:.2f}x)"
        )
    if provision.times and odoo.times:
        prov, dup = median(provision.times), median(odoo.times)
        best = min(odoo.times) / min(provision.times)
        verdict = "holds" if dup >= TARGET_VS_ODOO * prov else "MISSED"
        print(
            f"  target: whole provision at least {TARGET_VS_ODOO:g}x faster than "
            f"db.duplicate_database: {dup:.3f}s / {prov:.3f}s = {dup / prov:.2f}x -> {verdict} "
            f"(minimums: {best:.2f}x)"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--templates", nargs="+", help="template databases (own systems)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of each method")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument(
        "--drop-each",
        action="store_true",
        help="drop each copy right after its timing instead of all at the end; on ext4 "
        "the next CREATE DATABASE then pays for the deleted files (see the docstring)",
    )
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="odoo")
    parser.add_argument("--pg-bindir", help="PostgreSQL binaries of the cluster's version")
    parser.add_argument("--ssh-host", default="127.0.0.1")
    parser.add_argument("--ssh-port", type=int, default=22)
    parser.add_argument("--ssh-user")
    parser.add_argument("--ssh-key-file", help="the client's private key")
    parser.add_argument("--ssh-host-key-file", help="the pinned host key")
    parser.add_argument(
        "--odoo-url", help="an Odoo server of your own (list_db on); none: the sandbox's"
    )
    parser.add_argument("--data-dir", help="that Odoo's data_dir")
    parser.add_argument("--small-apps", default=os.environ.get("BENCH_SMALL_APPS", "mail"))
    parser.add_argument(
        "--large-apps", default=os.environ.get("BENCH_LARGE_APPS", "sale_management,crm")
    )
    parser.add_argument(
        "--fast-pg",
        action="store_true",
        default=os.environ.get("BENCH_PG_DURABLE") == "0",
        help="the test cluster's settings (fsync off) instead of the durable defaults",
    )
    parser.add_argument("--keep", action="store_true", default=bool(os.environ.get("KEEP_BENCH")))
    args = parser.parse_args()
    if args.repeat < 1 or args.warmup < 0:
        parser.error("--repeat must be at least 1 and --warmup not negative")
    if args.odoo_url:
        own = ("templates", "ssh_user", "ssh_key_file", "ssh_host_key_file", "data_dir")
        missing = [f"--{name.replace('_', '-')}" for name in own if not getattr(args, name)]
        if missing:
            parser.error(f"with --odoo-url, give {' '.join(missing)} too")
        return measure(args)
    with contextlib.ExitStack() as stack:
        odoo_log = start_sandbox(args, stack)
        code = measure(args)
        log_lines = util.tail(odoo_log, 10**6).splitlines()
        errors = [line for line in log_lines if re.search(r" (ERROR|CRITICAL) ", line)]
        if errors:
            util.log("bench: the Odoo server logged errors:")
            sys.stderr.write("\n".join(errors[:20]) + "\n")
        return code


def start_sandbox(args, stack):
    """Start PostgreSQL, sshd, the templates and Odoo; point ``args`` at them.

    Returns the path of the Odoo server's log."""
    odoo_src = sandbox_odoo.find_odoo_src()
    if odoo_src is None:
        raise SystemExit(
            "no Odoo 18.0 source tree found: set ODOO_SRC or put one at /opt/odoo-18.0"
        )
    work = Path(tempfile.mkdtemp(prefix="saas_manager_bench."))
    work.chmod(0o755)
    stack.callback(
        lambda: util.log(f"kept {work}") if args.keep else shutil.rmtree(work, ignore_errors=True)
    )
    durable = not args.fast_pg
    pg = PgCluster(work / "pg", owner="saas_bench", durable=durable)
    util.log(f"bench: PostgreSQL cluster ({Path(pg.bindir).parent.name}, durable={int(durable)})")
    stack.enter_context(pg)
    try:
        # The benchmark starts every timing from a checkpoint (PostgreSQL >= 15 role).
        pg.psql(f"GRANT pg_checkpoint TO {pg.owner}")
    except ServiceError:
        util.log("bench: cannot grant pg_checkpoint; timings will not start from a checkpoint")
    sshd = stack.enter_context(Sshd(work / "ssh", host_key_types=("ed25519",)))
    # dbfilter matches no database: with a single one, Odoo would bind the readiness
    # probe to it and keep a pooled session open on the template.
    server = sandbox_odoo.OdooServer(
        work, odoo_src, sys.executable, pg, with_addon=False,
        options={"gevent_port": util.free_port(), "dbfilter": "^$", "workers": 0},
        serve_args=("--log-level=warn",),
    )  # fmt: skip
    server.write_config()

    # The templates, made in parallel before the server starts.
    wanted = [("bench_tpl_small", args.small_apps, False)]
    if args.large_apps:
        wanted.append(("bench_tpl_large", args.large_apps, True))
    failures = []

    def make_template(db, apps, demo):
        util.log(f"bench: template {db}: {apps} (demo data: {'yes' if demo else 'no'})")
        extra = () if demo else ("--without-demo=all",)
        try:
            server.run("-d", db, "-i", apps, *extra, "--no-http", "--stop-after-init",
                       "--log-level=warn", log=work / f"{db}.log")  # fmt: skip
        except ServiceError as exc:
            failures.append(f"template {db} was not created: {exc}")

    started = time.monotonic()
    threads = [threading.Thread(target=make_template, args=spec) for spec in wanted]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise SystemExit("\n".join(failures))
    util.log(f"bench: templates ready in {time.monotonic() - started:.0f} s")

    util.log(f"bench: Odoo server on {server.url}")
    stack.enter_context(server)
    os.environ.update(
        BENCH_PG_PASSWORD=pg.owner_password, BENCH_MASTER_PASSWORD=server.master_password
    )
    args.templates = [db for db, _apps, _demo in wanted]
    args.pg_host, args.pg_port, args.pg_user, args.pg_bindir = pg.host, pg.port, pg.owner, pg.bindir
    args.ssh_host, args.ssh_port, args.ssh_user = util.LOOPBACK, sshd.port, util.current_user()
    args.ssh_key_file, args.ssh_host_key_file = str(sshd.login_key()), str(sshd.host_key_file())
    args.odoo_url, args.data_dir = server.url, str(work / "data")
    return server.log_path


def measure(args):
    bench = Bench(args)
    version_num, pg_version, fsync = bench.query(
        "SELECT current_setting('server_version_num')::int, current_setting('server_version'), "
        "current_setting('fsync')"
    )[0]
    odoo_version = bench.odoo.version()["server_version"]
    bench.checkpoint()
    strategies = (
        [postgres.STRATEGY_FILE_COPY, postgres.STRATEGY_WAL_LOG]
        if version_num >= postgres.STRATEGY_MIN_VERSION
        else [None]
    )
    methods = build_methods(strategies)
    # The bare clone with the strategy the whole provision uses.
    default = postgres.DEFAULT_STRATEGY if strategies != [None] else None
    reference = next(m for m in methods if m.key == f"bare_{default or 'none'}")
    print(
        f"PostgreSQL {pg_version} (fsync {fsync}), Odoo {odoo_version}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}; all on loopback. "
        f"{args.repeat} timed runs per method after {args.warmup} warm-up round(s), "
        f"rounds interleaved"
        + (", each run from a CHECKPOINT" if bench.can_checkpoint else "")
        + (
            "; each copy dropped right after its timing."
            if args.drop_each
            else "; copies dropped at the end of the run."
        )
    )
    print(
        "Odoo's duplicate runs CREATE DATABASE without a STRATEGY clause (WAL_LOG on "
        "PostgreSQL >= 15), loads the copy's registry, and checks the master password."
    )
    print(f"Load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}.")
    failed = False
    try:
        for template in args.templates:
            # A template in use is old and vacuumed: no autovacuum run during the timings.
            bench.query("VACUUM (ANALYZE)", dbname=template)
            line = describe_template(bench, template)
            print(f"benchmarking {line}", file=sys.stderr)
            bench_template(bench, template, methods, args.repeat, args.warmup)
            report(line, methods, reference, args.repeat)
            failed = failed or any(m.error for m in methods)
    finally:
        print(f"dropping {len(bench.copies)} copies", file=sys.stderr)
        for method, target in bench.copies:
            drop_copy(bench, method, target)
    print()
    print(
        f"One remote command (`true`) over an open SSH session: {bench.ssh_round_trip():.3f}s "
        "(the login shell runs the user's startup files for each command)."
    )
    print(f"Load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}.")
    print(
        "One JSON-RPC call to Odoo that only checks the master password (db.drop of a "
        f"missing database): {bench.master_password_call():.3f}s."
    )
    bench.odoo.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
