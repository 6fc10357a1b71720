#!/usr/bin/env python3
"""Benchmark backing up and restoring one large Odoo database, every way in one run.

Everything on 127.0.0.1 with the sandbox (``scripts/saas.py bench backup`` runs it in
the Odoo virtualenv): a durable PostgreSQL cluster (fsync on; --fast-pg for the test
settings), a private sshd, moto's S3 (--no-s3 to skip it) and a stock Odoo 18.0
server (threaded, list_db on). The database is the large bench template of
``bench_provision.py`` (--apps, default sale_management,crm, with demo data) plus
--fs-mb MB of filestore in --fs-files files, half random bytes (incompressible),
half text (deflates about 3x), laid out as Odoo lays out its filestore.

Backups of that database, each run --repeat times:

* ours: ``remote.backup_jobs.run_backup`` (the zip made on the host by its
  ``python3`` and streamed over SSH) into a local storage directory, and into S3;
* Odoo's ``db.dump`` over JSON-RPC (the zip, base64, in one JSON answer);
* Odoo's ``/web/database/backup`` (the zip streamed over HTTP);
* a bare ``pg_dump | zip`` on this host (Python's zipfile, the same deflate level 6,
  no manifest).

Restores, each into a new database (checked: its tables and every filestore file
are there) and dropped afterwards: ours (``backup_jobs.restore_job``) from the local
directory and from S3; Odoo's ``/web/database/restore`` (a streamed multipart upload
of Odoo's own zip) and ``db.restore`` over JSON-RPC (base64 in one request).

Each client runs in a subprocess of its own, which reports its wall time and its
peak RSS (``getrusage``): that is the manager's side. The server's side is sampled
every 50 ms with psutil: the Odoo process tree (with its pg_dump or psql) for
Odoo's ways, the host's backup or restore program (python3 with its pg_dump or
psql) for ours. Not a test: timings depend on the machine. Prints one table.
"""

import argparse
import base64
import contextlib
import json
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from remote import backup, backup_jobs, filestore, postgres, ssh  # noqa: E402
from sandbox import util  # noqa: E402

DB = "bench_bk_large"
BASE_URL = "https://restored.example.com"
CHUNK = 1024 * 1024
WORDS = (
    "invoice order partner product quantity price total tax journal entry account "
    "payment customer vendor delivery stock move lot serial warehouse location "
    "the of and to in is for on with as by at from this that be are was were"
).split()


def kib_to_mb(kib):
    return kib / 1024


# --- the child: one client, measured by itself ------------------------------------


def _ssh_settings(values):
    return ssh.SshSettings(**values)


def _pg(values):
    return postgres.ConnectionParams(**values)


def _storage_spec(values):
    kind, settings = values
    return (kind, dict(settings))


def child_ours_backup(job):
    result = backup_jobs.run_backup(
        _storage_spec(job["storage"]), _pg(job["pg"]), _ssh_settings(job["ssh"]), job["db"],
        job["filestore_dir"], job["key"],
    )  # fmt: skip
    return {"size": result.size, "sha256": result.sha256, "files": result.filestore_files,
            "dump_size": result.dump_size}  # fmt: skip


def child_ours_restore(job):
    target = job["filestore_dir"]
    result = backup_jobs.restore_job(
        _storage_spec(job["storage"]), job["key"], job["sha256"], _pg(job["pg"]),
        _ssh_settings(job["ssh"]), job["new_db"], target, filestore.partial_copy_path(target),
        True, BASE_URL,
    )  # fmt: skip
    return {"size": result.size, "files": result.filestore_files}


def _jsonrpc_body(service, method, *args):
    return json.dumps(
        {"jsonrpc": "2.0", "method": "call", "id": 1,
         "params": {"service": service, "method": method, "args": list(args)}}
    ).encode()  # fmt: skip


def _post_json(url, body):
    request = urllib.request.Request(  # noqa: S310 (loopback)
        f"{url}/jsonrpc", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=1800) as answer:  # noqa: S310
        reply = json.loads(answer.read())
    if reply.get("error"):
        data = reply["error"].get("data") or {}
        raise RuntimeError(data.get("message") or reply["error"].get("message"))
    return reply["result"]


def child_odoo_dump(job):
    """db.dump over JSON-RPC: the whole zip as base64 in one answer, decoded here."""
    encoded = _post_json(job["url"], _jsonrpc_body("db", "dump", job["master"], job["db"], "zip"))
    data = base64.b64decode(encoded)
    del encoded
    Path(job["out"]).write_bytes(data)
    return {"size": len(data)}


def child_web_backup(job):
    """/web/database/backup: the zip streamed in the HTTP answer, written as it comes."""
    import requests

    answer = requests.post(
        f"{job['url']}/web/database/backup",
        data={"master_pwd": job["master"], "name": job["db"], "backup_format": "zip"},
        stream=True,
        timeout=1800,
    )
    if answer.status_code != 200 or "octet-stream" not in answer.headers.get("Content-Type", ""):
        raise RuntimeError(f"backup answered {answer.status_code}: {answer.text[-500:]}")
    size = 0
    with open(job["out"], "wb") as handle:
        for data in answer.iter_content(CHUNK):
            handle.write(data)
            size += len(data)
    return {"size": size}


def child_bare(job):
    """pg_dump piped into a zip member, then the filestore files: one pass, no temp file."""
    import zipfile

    env = dict(os.environ, PGPASSWORD=job["pg"]["password"] or "")
    pg = job["pg"]
    argv = [job["pg_dump"], "--no-owner", "-h", pg["host"], "-p", str(pg["port"]),
            "-U", pg["user"], job["db"]]  # fmt: skip
    root = Path(job["filestore_dir"])
    with zipfile.ZipFile(job["out"], "w", zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
        dump = subprocess.Popen(argv, stdout=subprocess.PIPE, env=env)
        with archive.open("dump.sql", "w", force_zip64=True) as member:
            shutil.copyfileobj(dump.stdout, member, CHUNK)
        if dump.wait():
            raise RuntimeError(f"pg_dump exited {dump.returncode}")
        for path in sorted(root.rglob("*")):
            if path.is_file():
                archive.write(path, f"filestore/{path.relative_to(root)}")
    return {"size": os.path.getsize(job["out"])}


def child_web_restore(job):
    """/web/database/restore with a streamed multipart upload (requests_toolbelt)."""
    import requests
    from requests_toolbelt import MultipartEncoder

    with open(job["zip"], "rb") as handle:
        body = MultipartEncoder(
            {"master_pwd": job["master"], "name": job["new_db"], "copy": "true",
             "backup_file": ("backup.zip", handle, "application/zip")}
        )  # fmt: skip
        answer = requests.post(
            f"{job['url']}/web/database/restore",
            data=body,
            headers={"Content-Type": body.content_type},
            allow_redirects=False,
            timeout=1800,
        )
    if answer.status_code not in (302, 303):
        raise RuntimeError(f"restore answered {answer.status_code}: {answer.text[-500:]}")
    return {}


def child_rpc_restore(job):
    """db.restore over JSON-RPC: the zip as base64 in one request."""
    data = base64.b64encode(Path(job["zip"]).read_bytes()).decode()
    body = _jsonrpc_body("db", "restore", job["master"], job["new_db"], data, True)
    del data
    try:
        _post_json(job["url"], body)
    except urllib.error.HTTPError as exc:
        return {"refused": f"HTTP {exc.code} {exc.reason} ({len(body) / 2**20:.0f} MB request)"}
    return {}


CHILDREN = {
    "ours_backup": child_ours_backup,
    "ours_restore": child_ours_restore,
    "odoo_dump": child_odoo_dump,
    "web_backup": child_web_backup,
    "bare": child_bare,
    "web_restore": child_web_restore,
    "rpc_restore": child_rpc_restore,
}


def child_main():
    job = json.loads(sys.stdin.read())
    start_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    out = CHILDREN[job["kind"]](job)
    out["wall"] = time.perf_counter() - started
    out["rss_start_kib"] = start_rss
    out["rss_peak_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out["children_peak_kib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps(out))
    return 0


# --- the parent -------------------------------------------------------------------


class PeakSampler:
    """Peak RSS (bytes) of process trees, sampled every ``interval`` s in a thread.

    ``roots()`` returns the root processes to sum (with their children) at a sample.
    With ``temp_dir``, the peak of the bytes under it too (every 0.2 s).
    """

    def __init__(self, roots, temp_dir=None, interval=0.05):
        import psutil

        self.psutil = psutil
        self.roots = roots
        self.interval = interval
        self.peak = 0
        self.first = None
        self.temp_dir = temp_dir
        self.temp_peak = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True)]
        if temp_dir:
            self._threads.append(threading.Thread(target=self._run_disk, daemon=True))

    def _tree_rss(self):
        total = 0
        for root in self.roots():
            try:
                procs = [root, *root.children(recursive=True)]
            except self.psutil.Error:
                continue
            for proc in procs:
                with contextlib.suppress(self.psutil.Error):
                    total += proc.memory_info().rss
        return total

    def _run(self):
        while not self._stop.is_set():
            rss = self._tree_rss()
            if self.first is None:
                self.first = rss
            self.peak = max(self.peak, rss)
            self._stop.wait(self.interval)

    def _run_disk(self):
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.temp_peak = max(self.temp_peak, tree_stats(self.temp_dir)[1])
            self._stop.wait(0.2)

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for thread in self._threads:
            thread.join()


def host_programs(marker):
    """Roots: the host's processes running one of our programs (``marker`` in argv)."""
    import psutil

    def roots():
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            cmdline = proc.info.get("cmdline") or []
            if marker in cmdline[1:5]:
                found.append(proc)
        return found

    return roots


def run_child(job):
    done = subprocess.run(
        [sys.executable, __file__, "--child"],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"{job['kind']} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def fill_filestore(root, total_mb, files):
    """``files`` files, ``total_mb`` MB in all, in Odoo's layout (``xx/<sha1>``): half
    random bytes, half text made of a small vocabulary (deflates about 3x)."""
    size = total_mb * 1024 * 1024 // files
    rng = random.Random(18)  # noqa: S311 (filler text, not a secret)
    text = " ".join(rng.choice(WORDS) for _n in range(400_000)).encode()
    for number in range(files):
        if number % 2:
            start = rng.randrange(0, len(text) - size)
            data = b"%08d" % number + text[start : start + size - 8]
        else:
            data = os.urandom(size)
        name = f"{number:040x}"
        path = root / name[-2:] / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def tree_stats(root):
    """``(files, bytes)`` under ``root`` (files removed meanwhile are skipped)."""
    count = size = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                size += os.path.getsize(os.path.join(dirpath, name))
                count += 1
    return count, size


class Bench:
    def __init__(self, args, work, pg, sshd, odoo, s3):
        import psutil

        self.args = args
        self.work = work
        self.pg_cluster = pg
        self.odoo = odoo
        self.odoo_process = psutil.Process(odoo.process.pid)
        self.s3 = s3
        self.data_dir = work / "data"
        self.pg = {"host": pg.host, "port": pg.port, "user": pg.owner,
                   "password": pg.owner_password}  # fmt: skip
        self.ssh = {
            "host": "127.0.0.1",
            "port": sshd.port,
            "username": util.current_user(),
            "private_key": Path(sshd.login_key()).read_text(),
            "host_key": Path(sshd.host_key_file()).read_text().strip(),
        }
        self.storage_dir = work / "storage"
        self.storage_dir.mkdir()
        self.out_dir = work / "out"
        self.out_dir.mkdir()
        self.temp_dir = work / "tmp"  # TMPDIR of Odoo and of the clients
        self.rows = []
        self.restores = 0
        self.source = None  # (files, partners) of the source database

    def filestore(self, db):
        return self.data_dir / "filestore" / db

    def query(self, sql, db="postgres"):
        return self.pg_cluster.query(sql, dbname=db)

    def storages(self):
        found = [("local directory", ("local", {"path": str(self.storage_dir)}))]
        if self.s3:
            found.append(("S3 (moto)", ("s3", self.s3_settings())))
        return found

    def s3_settings(self):
        return {
            "bucket": "bench-backups",
            "access_key": self.s3.access_key,
            "secret_key": self.s3.secret_key,
            "endpoint_url": self.s3.endpoint_url,
            "region": self.s3.region,
        }

    def make_bucket(self):
        import boto3

        settings = self.s3_settings()
        boto3.client(
            "s3",
            endpoint_url=settings["endpoint_url"],
            region_name=settings["region"],
            aws_access_key_id=settings["access_key"],
            aws_secret_access_key=settings["secret_key"],
        ).create_bucket(Bucket=settings["bucket"])

    def odoo_roots(self):
        return [self.odoo_process]

    def measure(self, section, label, make_job, roots, after=None, server_what="Odoo"):
        """Run the job ``make_job(number)`` makes --repeat times; one row: the median
        wall time, the peak RSS of the client and of the server side."""
        outs = []
        for number in range(self.args.repeat):
            job = make_job(number)
            with PeakSampler(roots or list, self.temp_dir) as sampler:
                time.sleep(0.1)  # a first sample before the client starts
                out = run_child(job)
            out["server_peak"] = sampler.peak
            out["server_first"] = sampler.first or 0
            out["temp_peak"] = sampler.temp_peak
            if roots is None:  # the client's own children (pg_dump) are its server side
                out["server_peak"] = out["children_peak_kib"] * 1024
            if after:
                after(job, out)
            outs.append(out)
        row = {
            "section": section,
            "label": label,
            "server_what": server_what,
            "wall": statistics.median(out["wall"] for out in outs),
            "size": outs[-1].get("size"),
            "client_peak": max(out["rss_peak_kib"] for out in outs) * 1024,
            "client_start": min(out["rss_start_kib"] for out in outs) * 1024,
            "server_peak": max(out["server_peak"] for out in outs),
            "server_first": min(out["server_first"] for out in outs),
            "temp_peak": max(out["temp_peak"] for out in outs),
            "refused": outs[-1].get("refused"),
            "check": "; ".join(out["check"] for out in outs if out.get("check")),
            "last": outs[-1],
        }
        self.rows.append(row)
        what = row["refused"] or row["check"] or "ok"
        _log(f"bench: {section} {label}: {row['wall']:.1f} s ({what})")
        return row

    # --- backups ---------------------------------------------------------------------

    def _ours_backup_job(self, spec, keys):
        def job(_number):
            keys.append(backup.backup_key(DB))
            return {"kind": "ours_backup", "storage": spec, "pg": self.pg, "ssh": self.ssh,
                    "db": DB, "filestore_dir": str(self.filestore(DB)),
                    "key": keys[-1]}  # fmt: skip

        return job

    def backups(self):
        """Every way of backing up; return {storage kind: (spec, key, sha256)} of ours."""
        ours = {}
        for label, spec in self.storages():
            keys = []
            job = self._ours_backup_job(spec, keys)
            row = self.measure("backup", f"ours → {label}", job, host_programs("saas-backup"),
                               server_what="host program")  # fmt: skip
            for key in keys[:-1]:
                backup_jobs.delete_object(spec, key)
            ours[spec[0]] = (spec, keys[-1], row["last"]["sha256"])
        common = {"url": self.odoo.url, "master": self.odoo.master_password, "db": DB}
        self.measure(
            "backup", "Odoo db.dump over JSON-RPC",
            lambda _n: {**common, "kind": "odoo_dump", "out": str(self.out_dir / "dump.zip")},
            self.odoo_roots,
        )  # fmt: skip
        self.measure(
            "backup", "Odoo /web/database/backup",
            lambda _n: {**common, "kind": "web_backup", "out": str(self.out_dir / "web.zip")},
            self.odoo_roots,
        )  # fmt: skip
        self.measure(
            "backup", "bare pg_dump | zip (zipfile)",
            lambda _n: {"kind": "bare", "pg": self.pg, "db": DB,
                        "pg_dump": str(Path(self.pg_cluster.bindir) / "pg_dump"),
                        "filestore_dir": str(self.filestore(DB)),
                        "out": str(self.out_dir / "bare.zip")},
            None, server_what="pg_dump",
        )  # fmt: skip
        (self.out_dir / "dump.zip").unlink(missing_ok=True)
        (self.out_dir / "bare.zip").unlink(missing_ok=True)
        return ours

    # --- restores --------------------------------------------------------------------

    def new_db(self):
        self.restores += 1
        return f"bench_rs_{self.restores:02d}"

    def check_and_drop(self, job, out):
        """Check the restored database (tables, every filestore file), then drop it."""
        name = job["new_db"]
        if out.get("refused"):
            if name in self.pg_cluster.databases():
                out["check"] = f"{name} exists after a refusal"
            self.drop(name)
            return
        files, partners = self.source
        problems = []
        got_files = tree_stats(self.filestore(name))[0]
        if got_files != files:
            problems.append(f"{got_files} of {files} filestore files")
        got = self.query("SELECT count(*) FROM res_partner", db=name)[0][0]
        if got != partners:
            problems.append(f"{got} of {partners} partners")
        if problems:
            out["check"] = f"{name}: " + ", ".join(problems)
        self.drop(name)

    def drop(self, name):
        self.query(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(self.filestore(name), ignore_errors=True)

    def restores_(self, ours):
        for kind, (spec, key, sha256) in ours.items():
            label = {spec[0]: name for name, spec in self.storages()}[kind]

            def job(_number, spec=spec, key=key, sha256=sha256):
                new_db = self.new_db()
                return {"kind": "ours_restore", "storage": spec, "key": key, "sha256": sha256,
                        "pg": self.pg, "ssh": self.ssh, "new_db": new_db,
                        "filestore_dir": str(self.filestore(new_db))}  # fmt: skip

            self.measure("restore", f"ours ← {label}", job, host_programs("saas-restore"),
                         self.check_and_drop, server_what="host program")  # fmt: skip
        common = {"url": self.odoo.url, "master": self.odoo.master_password,
                  "zip": str(self.out_dir / "web.zip")}  # fmt: skip
        self.measure(
            "restore", "Odoo /web/database/restore (streamed upload)",
            lambda _n: {**common, "kind": "web_restore", "new_db": self.new_db()},
            self.odoo_roots, self.check_and_drop,
        )  # fmt: skip
        self.measure(
            "restore", "Odoo db.restore over JSON-RPC (base64)",
            lambda _n: {**common, "kind": "rpc_restore", "new_db": self.new_db()},
            self.odoo_roots, self.check_and_drop,
        )  # fmt: skip


def _log(message):
    print(message, file=sys.stderr, flush=True)


def mb(nbytes):
    return "-" if nbytes is None else f"{nbytes / 2**20:,.1f} MB"


def report(bench, facts):
    print(
        f"PostgreSQL {facts['pg_version']} (fsync {facts['fsync']}), Odoo "
        f"{facts['odoo_version']}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"all on loopback; {bench.args.repeat} run(s) of each: median wall time, peak RSS."
    )
    print(
        f"Database {DB} ({facts['apps']}, demo data): {mb(facts['db_size'])} in PostgreSQL; "
        f"filestore {mb(facts['fs_size'])} in {facts['fs_files']} files "
        f"({bench.args.fs_mb} MB added: half random, half text)."
    )
    print(f"Load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}.")
    ours = next(row for row in bench.rows if row["label"].startswith("ours"))
    dump = ours["last"]["dump_size"]
    print(
        f"Its dump.sql: {mb(dump)}; a restore of ours sends dump.sql and the filestore "
        f"decompressed over SSH: {mb(dump + facts['fs_size'])}."
    )
    section = None
    for row in bench.rows:
        if row["section"] != section:
            section = row["section"]
            print()
            stored = "stored" if section == "backup" else ""
            print(f"{section:<46} {stored:>9} {'wall':>7} {'client RSS (growth)':>21} "
                  f"{'temp files':>10}  server side: peak RSS (growth)")  # fmt: skip
        client = f"{mb(row['client_peak'])} (+{mb(row['client_peak'] - row['client_start'])})"
        server = f"{row['server_what']} {mb(row['server_peak'])}"
        if row["server_what"] == "Odoo" and row["server_first"]:
            server += f" (+{mb(row['server_peak'] - row['server_first'])})"
        temp = mb(row["temp_peak"])
        if row["refused"]:
            print(f"  {row['label']:<44} refused: {row['refused']}; {client:>21}  {server}")
            continue
        size = mb(row["size"]) if section == "backup" else ""
        print(
            f"  {row['label']:<44} {size:>9} {row['wall']:>6.1f}s {client:>21} {temp:>10}  "
            f"{server}" + (f"  CHECK FAILED: {row['check']}" if row["check"] else "")
        )
    print()
    print(
        "temp files: the peak of the bytes in Odoo's TMPDIR (a backup's copy of the filestore "
        "and its dump.sql, a restore's upload and what it extracts; the zip Odoo builds for a "
        "backup is an unlinked temporary file, not counted)."
    )
    return any(row["check"] for row in bench.rows)


def start(args, stack, work):
    """PostgreSQL, sshd, moto, the database and its filestore, Odoo; return them."""
    from sandbox import odoo as sandbox_odoo
    from sandbox.postgres import PgCluster
    from sandbox.s3 import S3Server
    from sandbox.sshd import Sshd

    odoo_src = sandbox_odoo.find_odoo_src()
    if odoo_src is None:
        raise SystemExit("no Odoo 18.0 tree: set ODOO_SRC or put one at /opt/odoo-18.0")
    # Odoo's temporary files (its dump's copy, its upload) go where they are measured.
    (work / "tmp").mkdir()
    os.environ["TMPDIR"] = str(work / "tmp")
    pg = stack.enter_context(PgCluster(work / "pg", owner="saas_bench", durable=not args.fast_pg))
    sshd = stack.enter_context(Sshd(work / "ssh", host_key_types=("ed25519",)))
    s3 = None
    if not args.no_s3:
        _log("bench: moto's S3")
        s3 = stack.enter_context(S3Server(work / "s3"))
    server = sandbox_odoo.OdooServer(
        work, odoo_src, sys.executable, pg, with_addon=False,
        options={"gevent_port": util.free_port(), "workers": 0},
        serve_args=("--log-level=warn",),
    )  # fmt: skip
    server.write_config()
    started = time.monotonic()
    _log(f"bench: database {DB}: {args.apps} with demo data")
    server.run("-d", DB, "-i", args.apps, "--no-http", "--stop-after-init",
               "--log-level=warn", log=work / "template.log")  # fmt: skip
    _log(f"bench: made in {time.monotonic() - started:.0f} s; adding {args.fs_mb} MB of files")
    fill_filestore(work / "data" / "filestore" / DB / "bk", args.fs_mb, args.fs_files)
    subprocess.run(["sync"], check=False)
    stack.enter_context(server)
    return pg, sshd, s3, server


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", default=os.environ.get("BENCH_LARGE_APPS", "sale_management,crm"))
    parser.add_argument("--fs-mb", type=int, default=300, help="MB of filestore added")
    parser.add_argument("--fs-files", type=int, default=1500)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each way")
    parser.add_argument("--no-s3", action="store_true", help="skip moto's S3")
    parser.add_argument("--fast-pg", action="store_true", help="fsync off")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat is at least 1")
    work = Path(tempfile.mkdtemp(prefix="saas_manager_bench_backup.", dir="/tmp"))
    work.chmod(0o755)
    free = shutil.disk_usage(work).free
    need = args.fs_mb * 6 * 2**20
    if free < need:
        raise SystemExit(f"bench: {mb(free)} free in {work}, about {mb(need)} needed")
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: _log(f"kept {work}") if args.keep else shutil.rmtree(work, True))
        pg, sshd, s3, server = start(args, stack, work)
        bench = Bench(args, work, pg, sshd, server, s3)
        if s3:
            bench.make_bucket()
        fs_files, fs_size = tree_stats(bench.filestore(DB))
        pg.query("VACUUM ANALYZE", dbname=DB)
        bench.source = (fs_files, pg.query("SELECT count(*) FROM res_partner", dbname=DB)[0][0])
        version, fsync, db_size = pg.query(
            "SELECT current_setting('server_version'), current_setting('fsync'), "
            "pg_database_size(%s)",
            [DB],
        )[0]
        odoo_version = _post_json(server.url, _jsonrpc_body("common", "version"))
        facts = {
            "pg_version": version, "fsync": fsync, "db_size": db_size, "apps": args.apps,
            "fs_files": fs_files, "fs_size": fs_size,
            "odoo_version": odoo_version["server_version"],
        }  # fmt: skip
        ours = bench.backups()
        bench.restores_(ours)
    failed = report(bench, facts)
    return 1 if failed else 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--child"]:
        sys.exit(child_main())
    sys.exit(main())
