"""A throwaway PostgreSQL cluster on loopback for the standalone tests.

Debian's PostgreSQL binaries (``/usr/lib/postgresql/<version>/bin``, highest
version found) run ``initdb`` in a temporary directory; the server listens on
127.0.0.1 at a free port with password (SCRAM) authentication and its unix
socket inside that directory, so it never meets the machine's own clusters.

``initdb`` and ``pg_ctl`` refuse to run as root, and CI runs as root: then they
run as the ``postgres`` system user through ``runuser``, in a directory under
``/tmp`` handed over to that user.

Test modules use the session fixture by importing it::

    from _pg_cluster import pg_cluster_fixture  # noqa: F401  (registers the fixture)
"""

import contextlib
import glob
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg2
import pytest

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30
SUPERUSER = "postgres"
# The role the tests clone with: not a superuser, may create databases and
# owns the templates, as Odoo's database user is usually set up.
OWNER_ROLE = "saas_owner"


def find_pg_bindir():
    """Return the bin directory of the highest PostgreSQL version, or None."""
    candidates = []
    for bindir in glob.glob(PG_BIN_GLOB):
        version = Path(bindir).parent.name
        if re.fullmatch(r"\d+(\.\d+)?", version) and os.access(
            os.path.join(bindir, "initdb"), os.X_OK
        ):
            candidates.append((tuple(int(p) for p in version.split(".")), bindir))
    if not candidates:
        return None
    return max(candidates)[1]


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PgCluster:
    """One throwaway cluster: ``start()``, connection helpers, ``stop()``."""

    def __init__(self, bindir):
        self.bindir = bindir
        self.host = "127.0.0.1"
        self.port = None
        self.superuser = SUPERUSER
        self.superuser_password = secrets.token_urlsafe(18)
        self.owner = OWNER_ROLE
        self.owner_password = secrets.token_urlsafe(18)
        self.as_postgres = os.geteuid() == 0
        self.base = None
        self.datadir = None
        self.logfile = None

    # --- processes -------------------------------------------------------

    def _run(self, *args, timeout):
        cmd = [os.path.join(self.bindir, args[0]), *args[1:]]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, check=False, cwd=self.base
        )

    def _chown(self, path):
        if self.as_postgres:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError(
                    "running as root needs the 'postgres' system user to run initdb and "
                    "pg_ctl (Debian's postgresql packages create it)"
                ) from None
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def start(self):
        # Under /tmp (world-traversable) so the postgres user reaches it when
        # the tests run as root; mkdtemp makes it 0700, then it is handed over.
        self.base = tempfile.mkdtemp(prefix="saas-pg-", dir="/tmp" if self.as_postgres else None)
        self._chown(self.base)
        self.datadir = os.path.join(self.base, "data")
        self.logfile = os.path.join(self.base, "server.log")
        pwfile = os.path.join(self.base, "pwfile")
        with open(pwfile, "w", encoding="utf-8") as handle:
            handle.write(self.superuser_password + "\n")
        os.chmod(pwfile, 0o600)
        self._chown(pwfile)
        try:
            result = self._run(
                "initdb",
                "-D",
                self.datadir,
                "-U",
                self.superuser,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                timeout=START_TIMEOUT_S,
            )
        finally:
            os.unlink(pwfile)
        if result.returncode:
            raise RuntimeError(f"initdb failed:\n{result.stdout}\n{result.stderr}")
        with open(os.path.join(self.datadir, "postgresql.conf"), "a", encoding="utf-8") as conf:
            conf.write(
                "\n# throwaway test cluster\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.base}'\n"
                "fsync = off\n"
                "synchronous_commit = off\n"
                "full_page_writes = off\n"
                "max_connections = 50\n"
            )
        # A port found free may be taken before the server binds it: retry.
        for _attempt in range(3):
            self.port = free_port()
            result = self._run(
                "pg_ctl",
                "start",
                "-D",
                self.datadir,
                "-l",
                self.logfile,
                "-w",
                "-t",
                str(START_TIMEOUT_S),
                "-o",
                f"-p {self.port}",
                timeout=START_TIMEOUT_S + 15,
            )
            if result.returncode == 0:
                break
        else:
            raise RuntimeError(f"pg_ctl start failed:\n{result.stderr}\n{self.log_tail()}")
        self._wait_ready()
        with contextlib.closing(self.connect(superuser=True)) as conn:
            conn.autocommit = True
            with conn.cursor() as cr:
                cr.execute(
                    "CREATE ROLE saas_owner LOGIN CREATEDB NOSUPERUSER PASSWORD %s",
                    (self.owner_password,),
                )

    def _wait_ready(self):
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                self.connect(superuser=True).close()
                return
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self):
        if self.datadir and os.path.isdir(self.datadir):
            self._run(
                "pg_ctl", "stop", "-D", self.datadir, "-m", "immediate", timeout=STOP_TIMEOUT_S
            )
        if self.base:
            shutil.rmtree(self.base, ignore_errors=True)

    def log_tail(self, lines=30):
        try:
            with open(self.logfile, encoding="utf-8", errors="replace") as handle:
                return "".join(handle.readlines()[-lines:])
        except OSError:
            return ""

    # --- connections -----------------------------------------------------

    def connect(self, dbname="postgres", *, superuser=False, autocommit=True):
        conn = psycopg2.connect(
            host=self.host,
            port=self.port,
            dbname=dbname,
            user=self.superuser if superuser else self.owner,
            password=self.superuser_password if superuser else self.owner_password,
            connect_timeout=10,
        )
        conn.autocommit = autocommit
        return conn

    def query(self, sql, params=None, *, dbname="postgres", superuser=True):
        """Run one statement in autocommit and return its rows (or None)."""
        with (
            contextlib.closing(self.connect(dbname, superuser=superuser)) as conn,
            conn.cursor() as cr,
        ):
            cr.execute(sql, params)
            return cr.fetchall() if cr.description else None

    def databases(self):
        """Names of the databases that are not PostgreSQL's own."""
        rows = self.query(
            "SELECT datname FROM pg_database "
            "WHERE datname NOT IN ('postgres', 'template0', 'template1')"
        )
        return {row[0] for row in rows}

    def server_version_num(self):
        return int(self.query("SHOW server_version_num")[0][0])


@pytest.fixture(scope="session", name="pg_cluster")
def pg_cluster_fixture():
    """A running throwaway cluster for the whole session."""
    bindir = find_pg_bindir()
    if bindir is None:
        pytest.skip(f"no PostgreSQL server binaries found ({PG_BIN_GLOB}/initdb)")
    cluster = PgCluster(bindir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
