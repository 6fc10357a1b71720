#!/usr/bin/env python3
"""Benchmark the operations engine: provisions queued at once, run by Odoo's cron.

Everything on 127.0.0.1 with the sandbox (``scripts/saas.py bench operations`` runs
it in the Odoo virtualenv): a durable PostgreSQL cluster (fsync, full_page_writes
and synchronous_commit on; --fast-pg for the test settings), a private sshd and an
Odoo 18.0 server (threaded, one cron thread) serving a manager database with
saas_manager, registered as its own managed server over JSON-RPC (see
``standalone_tests/_odoo_manager.py``). One template (base) is made through the
engine itself. Then:

1. the bare clone: ``CREATE DATABASE … TEMPLATE`` over psycopg2 with the strategy a
   provision uses, --bare times (the baseline);
2. throughput: for ``saas_manager.max_parallel_operations`` 1, 2 and 4, a batch of
   provisions queued at once (the cron off while they are queued, then on and
   woken): wall time from the wake to the last one done, operations per minute,
   median and p95 of the operations' own ``duration_s`` against the bare clone.
   The batch at 4 is --count provisions (100), the others --small-count;
3. every instance terminated through the engine, then the databases and
   filestores left that no record accounts for (leaks: must be 0);
4. filestore at the physical limit: the template gets --fs-mb MB of filestore in
   --fs-files files, as Odoo keeps them (each file named by the SHA-1 of its
   content, ``<sha[:2]>/<sha>``, and named by one ``ir_attachment`` row: a template
   with 20 000 files has 20 000 attachments); --fs-runs provisions one at a time,
   interleaved with as many bare clones, ``cp -a`` and ``cp -al`` of that
   filestore (a copy's writes flushed before what follows it); each provision
   split, from Odoo's log, into before its remote step (the database name's check,
   the journal), the remote step (clone beside the staged copy) and after it (the
   filestore put in place, the invitation mail, the end); and what one SSH
   connection and one command cost here.

Not a test: timings depend on the machine. Prints one block of figures.
"""

import argparse
import contextlib
import hashlib
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import psycopg2
from psycopg2 import sql
from psycopg2.extras import execute_values

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "standalone_tests"))

import _odoo_manager as om  # noqa: E402

from remote import postgres, ssh  # noqa: E402
from sandbox import util  # noqa: E402

TEMPLATE = "bench_ops_tpl"
# The whole provision of a template with a large filestore, against its bare clone.
TARGET_FS_VS_BARE = 1.5


def percentile(values, fraction):
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def summary(values):
    return statistics.median(values), percentile(values, 0.95)


class Bench:
    def __init__(self, manager):
        self.mgr = manager
        self.pg = manager.pg
        self.made = []  # every instance id made
        self.copies = []  # databases made by the bare clones

    def connect(self, dbname="postgres"):
        conn = psycopg2.connect(
            host=self.pg.host,
            port=self.pg.port,
            user=self.pg.owner,
            password=self.pg.owner_password,
            dbname=dbname,
        )
        conn.autocommit = True
        return conn

    def bare_clones(self, count, prefix):
        """Seconds of ``count`` bare CREATE DATABASE … TEMPLATE (strategy of a provision)."""
        strategy = postgres.STRATEGIES[postgres.DEFAULT_STRATEGY]
        # A template with a session open cannot be copied (Odoo may keep one).
        self.pg.query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            [TEMPLATE],
        )
        times = []
        conn = self.connect()
        try:
            with conn.cursor() as cr:
                for number in range(count):
                    target = f"{prefix}_{number:03d}"
                    query = sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY {}").format(
                        sql.Identifier(target), sql.Identifier(TEMPLATE), sql.SQL(strategy)
                    )
                    started = time.perf_counter()
                    cr.execute(query)
                    times.append(time.perf_counter() - started)
                    self.copies.append(target)
        finally:
            conn.close()
        return times

    def drop_copies(self):
        conn = self.connect()
        try:
            with conn.cursor() as cr:
                for name in self.copies:
                    cr.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(name)
                        )
                    )
        finally:
            conn.close()
        self.copies = []

    def batch(self, parallel, count, prefix):
        """Queue ``count`` provisions at once with ``parallel`` workers; return figures."""
        mgr = self.mgr
        mgr.set_param("saas_manager.max_parallel_operations", parallel)
        names = [f"{prefix}_{number:03d}" for number in range(count)]
        instances = mgr.create_instances(self.template_id, names)
        self.made += instances
        mgr.set_cron_active(False)
        try:
            for instance_id in instances[:-1]:
                mgr.provision(instance_id)
        finally:
            mgr.set_cron_active(True)
        started = time.monotonic()
        mgr.provision(instances[-1])  # queued last, wakes the cron
        rows = mgr.wait_operations_ended(
            [("instance_id", "in", instances)], count, timeout=60 + 30 * count
        )
        wall = time.monotonic() - started
        done = [row for row in rows if row["state"] == "done"]
        durations = [row["duration_s"] for row in done]
        return {
            "parallel": parallel,
            "count": count,
            "done": len(done),
            "attempts": sorted({row["attempt"] for row in rows}),
            "wall": wall,
            "per_minute": 60 * len(done) / wall if wall else float("nan"),
            "median": statistics.median(durations) if durations else float("nan"),
            "p95": percentile(durations, 0.95),
        }

    def terminate_all(self):
        mgr = self.mgr
        states = mgr.rpc.read("saas.instance", self.made, ["state"])
        running = [row["id"] for row in states if row["state"] == "running"]
        started = time.monotonic()
        for instance_id in running:
            mgr.rpc("saas.instance", "action_terminate", [instance_id])
        mgr.wait_operations_ended(
            [("instance_id", "in", running), ("kind", "=", "terminate")],
            len(running),
            timeout=60 + 10 * len(running),
        )
        return len(running), time.monotonic() - started

    def leaks(self):
        """Databases and filestores of this run that no record keeps."""
        keep = {om.MANAGER_DB, TEMPLATE}
        databases = sorted(self.pg.databases() - keep)
        root = self.mgr.filestore_root
        stores = (
            sorted(path.name for path in root.iterdir() if path.name not in keep)
            if root.exists()
            else []
        )
        return databases, stores


def logged_times(log_path, names, pattern):
    """{database: seconds, ...} from the lines of Odoo's log that ``pattern`` matches:
    its first group the database (one of ``names``), the others seconds."""
    found = {}
    regex = re.compile(pattern)
    with open(log_path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            match = regex.search(line)
            if match and match.group(1) in names:
                found[match.group(1)] = tuple(float(group) for group in match.groups()[1:])
    return found


# The remote provision step (clone beside the staged copy), as remote.provision logs it.
PROVISIONED_LINE = r"Provisioned (\S+) from \S+ in ([0-9.]+) s"
# The clone with its identity and handover, and CREATE DATABASE alone, as
# remote.postgres.clone_database logs them.
CLONED_LINE = r"Cloned template \S+ into (\S+) .* in ([0-9.]+) s \(copy ([0-9.]+) s\)"


def _log_time(line):
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")


def step_phases(log_path, operations):
    """[(before, remote, after)] seconds of provisions run one at a time, from Odoo's log.

    ``operations``: (operation id, database, duration_s) of each. ``before``: from
    the operation's start to its remote step's (the database name's check, the
    journal's commit); ``remote``: the step ``remote.provision`` logs; ``after``: the rest of
    ``duration_s`` (the filestore put in place, the invitation mail, the end).
    """
    started, provisioned = {}, {}
    start_re = re.compile(r"Operation (\d+) \(provision\) attempt 1 started")
    step_re = re.compile(PROVISIONED_LINE)
    with open(log_path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if match := start_re.search(line):
                started[int(match.group(1))] = _log_time(line)
            elif match := step_re.search(line):
                provisioned[match.group(1)] = (_log_time(line), float(match.group(2)))
    found = []
    for operation_id, database, duration in operations:
        if operation_id in started and database in provisioned:
            ended, remote = provisioned[database]
            until_end = (ended - started[operation_id]).total_seconds()
            found.append((until_end - remote, remote, duration - until_end))
    return found


def ssh_costs(mgr, runs):
    """Seconds of ``runs`` SSH connections (handshake, host key, key login) to the
    sandbox's sshd, and of one ``true`` command on each (the login shell's start)."""
    settings = ssh.SshSettings(
        host=util.LOOPBACK,
        port=mgr.sshd.port,
        username=util.current_user(),
        private_key=Path(mgr.sshd.login_key()).read_text(),
        host_key=mgr.sshd.host_key_file().read_text().strip(),
    )
    connects, commands = [], []
    for _number in range(runs):
        started = time.perf_counter()
        with ssh.SshSession(settings) as session:
            connected = time.perf_counter()
            session.run(["true"])
            commands.append(time.perf_counter() - connected)
        connects.append(connected - started)
    return connects, commands


def timed(argv):
    started = time.perf_counter()
    subprocess.run(argv, check=True)
    return time.perf_counter() - started


def attach_filestore(bench, directory, files, size):
    """``files`` attachments of ``size`` bytes in the template, as Odoo stores them:
    the file ``<sha[:2]>/<sha>`` under ``directory`` and an ``ir_attachment`` row
    naming it (checksum, size, mimetype). Returns the template's database size."""
    seed = os.urandom(size)
    rows = []
    for number in range(files):
        data = number.to_bytes(8, "big") + seed[8:]  # distinct contents, cheaply
        sha = hashlib.sha1(data, usedforsecurity=False).hexdigest()  # Odoo's file names
        path = Path(directory) / sha[:2] / sha
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        rows.append((f"bench-{number:05d}.bin", f"{sha[:2]}/{sha}", sha, size))
    conn = bench.connect(TEMPLATE)
    try:
        with conn.cursor() as cr:
            execute_values(
                cr,
                "INSERT INTO ir_attachment (name, type, store_fname, checksum, file_size, "
                "mimetype, res_model, public, create_uid, write_uid, create_date, write_date) "
                "SELECT v.name, 'binary', v.fname, v.sha, v.size, 'application/octet-stream', "
                "'res.partner', false, 1, 1, now() at time zone 'utc', now() at time zone 'utc' "
                "FROM (VALUES %s) AS v (name, fname, sha, size)",
                rows,
                page_size=1000,
            )
            cr.execute("VACUUM ANALYZE ir_attachment")
            cr.execute("SELECT pg_database_size(current_database())")
            return cr.fetchone()[0]
    finally:
        conn.close()


def provision_row(bench, name):
    """Provision one instance of the bench template; its operation's row once done."""
    mgr = bench.mgr
    (instance_id,) = mgr.create_instances(bench.template_id, [name])
    bench.made.append(instance_id)
    mgr.provision(instance_id)
    (row,) = mgr.wait_operations_ended([("instance_id", "=", instance_id)], 1, 300)
    if row["state"] != "done":
        raise SystemExit(f"provision failed: {row['error']}")
    return row


def filestore_part(bench, args):
    mgr = bench.mgr
    source = mgr.filestore(TEMPLATE)
    source.mkdir(parents=True, exist_ok=True)
    size = args.fs_mb * 1024 * 1024 // args.fs_files
    util.log(f"bench: {args.fs_files} attachments of {size} bytes in the template")
    db_size = attach_filestore(bench, source, args.fs_files, size)
    subprocess.run(["sync"], check=False)
    files = sum(len(names) for _root, _dirs, names in os.walk(source))
    du = subprocess.run(["du", "-sm", str(source)], capture_output=True, text=True, check=True)
    mgr.set_param("saas_manager.max_parallel_operations", 1)
    bare, provisions, operations, floor = [], [], [], []
    cp_a, cp_al = [], []
    aside = source.with_name(source.name + ".bench-aside")
    scratch = Path(tempfile.mkdtemp(prefix=".bench-cp.", dir=mgr.filestore_root))
    try:
        # Interleaved, so that a change of the machine's load touches them all alike;
        # the bare clone before or after the provision in turn, each timed with the
        # copies' writes flushed (untimed sync).
        for number in range(args.fs_runs):
            if number % 2 == 0:
                bare += bench.bare_clones(1, f"bench_fs_bare_{number:02d}")
            name = f"bench_fs_{number:02d}"
            row = provision_row(bench, name)
            provisions.append(row["duration_s"])
            operations.append((row["id"], name, row["duration_s"]))
            # The floor: the same provision (same database, 20 000 attachment rows)
            # with the template's filestore moved aside, so that nothing is linked.
            source.rename(aside)
            try:
                floor.append(provision_row(bench, f"bench_fs_floor_{number:02d}")["duration_s"])
            finally:
                aside.rename(source)
            if number % 2 == 1:
                bare += bench.bare_clones(1, f"bench_fs_bare_{number:02d}")
            cp_a.append(timed(["cp", "-a", f"{source}/.", str(scratch / f"a{number}")]))
            subprocess.run(["sync"], check=False)
            cp_al.append(timed(["cp", "-al", f"{source}/.", str(scratch / f"l{number}")]))
            subprocess.run(["sync"], check=False)
        # What du says: a shared file counted once per invocation.
        one = mgr.filestore("bench_fs_00")
        du_one = subprocess.run(
            ["du", "-sm", str(one)], capture_output=True, text=True, check=False
        )
        du_both = subprocess.run(
            ["du", "-smc", str(source), str(one)], capture_output=True, text=True, check=False
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    names = [f"bench_fs_{number:02d}" for number in range(args.fs_runs)]
    log_path = mgr.odoos[0].log_path
    steps = logged_times(log_path, set(names), PROVISIONED_LINE)
    ssh_connects, ssh_commands = ssh_costs(mgr, args.fs_runs)
    return {
        "steps": [steps[name][0] for name in names if name in steps],
        "clones": list(logged_times(log_path, set(names), CLONED_LINE).values()),
        "phases": step_phases(log_path, operations),
        "ssh_connect": ssh_connects,
        "ssh_command": ssh_commands,
        "files": files,
        "mb": int(du.stdout.split()[0]),
        "db_mb": db_size / 1024 / 1024,
        "bare": bare,
        "provision": provisions,
        "floor": floor,
        "cp_a": cp_a,
        "cp_al": cp_al,
        "du_one": du_one.stdout.split()[0] if du_one.stdout else "?",
        "du_both": du_both.stdout.strip().splitlines()[-1].split()[0] if du_both.stdout else "?",
    }


def report(bare, batches, fs, terminated_in, leaks, versions):
    """Print the figures; return True when something failed (a leak, a provision)."""
    terminated, terminate_wall = terminated_in
    leaked_dbs, leaked_stores = leaks
    pg_version, fsync_setting = versions
    bare_median, bare_p95 = summary(bare)
    print(
        f"PostgreSQL {pg_version} (fsync {fsync_setting}), {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; one Odoo 18.0 (threaded, one cron thread), "
        "managing itself over loopback."
    )
    print(
        f"Bare CREATE DATABASE … TEMPLATE ({postgres.DEFAULT_STRATEGY}), {len(bare)} runs: "
        f"median {bare_median:.3f} s, p95 {bare_p95:.3f} s"
    )
    print("max_parallel | provisions | done | attempts | wall (s) | per minute | "
          "median (s) | p95 (s) | median / bare")  # fmt: skip
    for row in batches:
        print(
            f"{row['parallel']:>12} | {row['count']:>10} | {row['done']:>4} | "
            f"{','.join(map(str, row['attempts'])):>8} | {row['wall']:>8.1f} | "
            f"{row['per_minute']:>10.1f} | {row['median']:>10.2f} | {row['p95']:>7.2f} | "
            f"{row['median'] / bare_median:>6.1f}x"
        )
    print(f"Terminated {terminated} instances through the engine in {terminate_wall:.1f} s.")
    print(
        f"Leaked at the end: {len(leaked_dbs)} databases {leaked_dbs or ''}, "
        f"{len(leaked_stores)} filestores {leaked_stores or ''}"
    )
    failed = bool(leaked_dbs or leaked_stores) or any(
        row["done"] != row["count"] for row in batches
    )
    if fs:
        fs_bare = statistics.median(fs["bare"])
        fs_prov = statistics.median(fs["provision"])
        ratio = fs_prov / fs_bare
        verdict = "met" if ratio <= TARGET_FS_VS_BARE else "MISSED"
        print(
            f"Filestore of {fs['files']} files, {fs['mb']} MB, named by as many attachments "
            f"(template database {fs['db_mb']:.0f} MB; {len(fs['provision'])} runs, medians): "
            f"bare clone {fs_bare:.3f} s; whole provision {fs_prov:.3f} s ({ratio:.2f}x the bare "
            f"clone, target {TARGET_FS_VS_BARE}x: {verdict}); "
            f"cp -a {statistics.median(fs['cp_a']):.3f} s; "
            f"cp -al {statistics.median(fs['cp_al']):.3f} s"
        )
        floor = statistics.median(fs["floor"])
        print(
            f"The same provision with the template's filestore moved aside (same database, "
            f"nothing to link), interleaved: median {floor:.3f} s ({floor / fs_bare:.2f}x the "
            f"bare clone); the filestore adds {fs_prov - floor:+.3f} s "
            f"({(fs_prov - floor) / floor:+.0%})"
        )
        fs_p95 = percentile(fs["provision"], 0.95)
        print(f"Whole provision p95 {fs_p95:.3f} s ({fs_p95 / fs_bare:.2f}x the bare clone)")
        if fs["steps"]:
            step = statistics.median(fs["steps"])
            met = "met" if step <= TARGET_FS_VS_BARE * fs_bare else "MISSED"
            print(
                f"Its remote step (clone beside the filestore copy, remote.provision): median "
                f"{step:.3f} s, {step / fs_bare:.2f}x the bare clone (target "
                f"{TARGET_FS_VS_BARE}x: {met})"
            )
        if fs["clones"]:
            whole, create = (statistics.median(part) for part in zip(*fs["clones"], strict=True))
            print(
                f"Its clone (the clone's side of the remote step): CREATE DATABASE {create:.3f} s, "
                f"with the new identity and the handover {whole:.3f} s (medians)"
            )
        if fs["phases"]:
            before, remote, after = (
                statistics.median(part) for part in zip(*fs["phases"], strict=True)
            )
            print(
                f"Per provision (medians): before its remote step (name check, journal) "
                f"{before:.3f} s, remote step {remote:.3f} s, after it (filestore put in "
                f"place, invitation mail, end) {after:.3f} s"
            )
        print(
            f"One SSH connection to this sshd: median {statistics.median(fs['ssh_connect']):.3f} "
            f"s; one command on it (`true`, the login shell's start): median "
            f"{statistics.median(fs['ssh_command']):.3f} s"
        )
        print(
            f"du -sm of one instance's filestore: {fs['du_one']} MB; du -smc of the template's "
            f"and that instance's together: {fs['du_both']} MB (shared files counted once)."
        )
    return failed


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--count", type=int, default=100, help="provisions at parallel 4")
    parser.add_argument("--small-count", type=int, default=30, help="provisions at 1 and 2")
    parser.add_argument("--bare", type=int, default=20, help="bare clones timed")
    parser.add_argument("--fs-mb", type=int, default=1024)
    parser.add_argument("--fs-files", type=int, default=20_000)
    parser.add_argument("--fs-runs", type=int, default=5)
    parser.add_argument("--no-fs", action="store_true", help="skip the filestore part")
    parser.add_argument("--fast-pg", action="store_true", help="fsync off")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    reason = om.why_not()
    if reason and "virtualenv" not in reason:
        raise SystemExit(f"bench: {reason}")
    work = Path(tempfile.mkdtemp(prefix="saas_manager_bench_ops.", dir="/tmp"))
    mgr = om.Manager(work, python=sys.executable, durable=not args.fast_pg, cron_threads=1)
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: util.log(f"kept {work}") if args.keep else shutil.rmtree(work, True))
        stack.callback(mgr.stop)
        util.log(f"bench: starting PostgreSQL (durable={int(not args.fast_pg)}), sshd, Odoo")
        mgr.start()
        mgr.register_server(max_instances=10_000, max_parallel_operations=8)
        util.log("bench: making the template through the engine")
        bench = Bench(mgr)
        bench.template_id = mgr.queue_template(TEMPLATE)
        template = mgr.wait_template(bench.template_id, timeout=600)
        if template["state"] != "ready":
            raise SystemExit(f"bench: the template failed: {template['error']}")
        fsync = bench.connect().cursor()
        fsync.execute("SELECT current_setting('server_version'), current_setting('fsync')")
        pg_version, fsync_setting = fsync.fetchone()
        fsync.connection.close()

        util.log(f"bench: {args.bare} bare clones")
        bare = bench.bare_clones(args.bare, "bench_bare")
        bench.drop_copies()
        batches = []
        for parallel, count in ((1, args.small_count), (2, args.small_count), (4, args.count)):
            util.log(
                f"bench: {count} provisions queued at once, max_parallel_operations {parallel}"
            )
            batches.append(bench.batch(parallel, count, f"bench_p{parallel}"))
        fs = None
        if not args.no_fs:
            fs = filestore_part(bench, args)
            bench.drop_copies()
        util.log("bench: terminating every instance")
        terminated, terminate_wall = bench.terminate_all()
        leaked_dbs, leaked_stores = bench.leaks()

    failed = report(
        bare, batches, fs, (terminated, terminate_wall), (leaked_dbs, leaked_stores),
        (pg_version, fsync_setting),
    )  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
