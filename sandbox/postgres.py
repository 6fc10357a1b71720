"""A PostgreSQL cluster of its own (Debian's binaries), or the machine's cluster.

:class:`PgCluster` runs ``initdb`` in its workdir and ``pg_ctl`` to start and stop
it: the server listens on 127.0.0.1 only, with SCRAM password authentication and
its unix socket inside the workdir, so it never meets the machine's own clusters.
``initdb`` and ``pg_ctl`` refuse to run as root: as root they run as the
``postgres`` system user through ``runuser``, and the workdir is handed to it.

Every cluster has a superuser ``postgres`` and one login role, ``owner``, that may
create databases but is not a superuser: how Odoo's database user is set up (the
tests clone as that role, the demo's and the suite's Odoo connect as it).

:class:`SystemCluster` is the machine's own cluster (``pg_lsclusters``), for
``scripts/run --system-pg``, with the same attributes.
"""

import glob
import hashlib
import os
import pwd
import re
import subprocess
from pathlib import Path

from . import util
from .service import Service, ServiceError

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
START_TIMEOUT_S = 60
SUPERUSER = "postgres"

# Settings of every cluster. One set for the tests, the demo and the Odoo suite:
# max_connections 200, because one Odoo process pools up to 64 connections
# (db_maxconn) and the Odoo suite runs the test server, its HTTP workers and the
# tests' own connections at once (50 was enough for the standalone tests only);
# each slot costs a few hundred kB of shared memory.
COMMON_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "max_connections": "200",
}
# Throwaway data: no flush to disk. ``durable=True`` (benchmarks) keeps
# PostgreSQL's defaults instead, as a production server runs.
FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
DURABLE_SETTINGS = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
# The locale: C.UTF-8 rather than C. Sorting is the same (code point order), but
# character classes follow Unicode, so upper()/lower() and ILIKE treat accented
# letters as a Debian production cluster (UTF-8 locale) does; Odoo relies on them.
LOCALE = "C.UTF-8"

# Creates the role when missing and (re)sets its password; psql variables role, pw.
ENSURE_ROLE_SQL = r"""
SELECT format('CREATE ROLE %I LOGIN CREATEDB NOSUPERUSER', :'role')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('ALTER ROLE %I PASSWORD %L', :'role', :'pw') \gexec
"""


def find_bindir():
    """The bin directory of the highest PostgreSQL version installed, or None."""
    candidates = []
    for bindir in glob.glob(PG_BIN_GLOB):
        version = Path(bindir).parent.name
        if re.fullmatch(r"\d+(\.\d+)?", version) and os.access(
            os.path.join(bindir, "initdb"), os.X_OK
        ):
            candidates.append((tuple(int(p) for p in version.split(".")), bindir))
    return max(candidates)[1] if candidates else None


def _as_root():
    return os.geteuid() == 0


def _postgres_user():
    try:
        return pwd.getpwnam(SUPERUSER)
    except KeyError:
        raise ServiceError(
            "running as root needs the 'postgres' system user to run initdb and pg_ctl "
            "(Debian's postgresql packages create it)"
        ) from None


class _Connections:
    """Connection helpers shared by both kinds of cluster (psycopg2, imported lazily:
    the developer CLI runs on the system's Python without it)."""

    host = util.LOOPBACK
    port = None
    superuser = SUPERUSER
    superuser_password = None
    owner = None
    owner_password = None

    def connect(self, dbname="postgres", *, superuser=False, autocommit=True):
        import psycopg2

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
        conn = self.connect(dbname, superuser=superuser)
        try:
            with conn.cursor() as cr:
                cr.execute(sql, params)
                return cr.fetchall() if cr.description else None
        finally:
            conn.close()

    def databases(self):
        """Names of the databases that are not PostgreSQL's own."""
        rows = self.query(
            "SELECT datname FROM pg_database "
            "WHERE datname NOT IN ('postgres', 'template0', 'template1')"
        )
        return {row[0] for row in rows}

    def server_version_num(self):
        return int(self.query("SHOW server_version_num")[0][0])

    def owner_psql(self, sql, dbname="postgres"):
        """Run SQL as the owner role with psql (no psycopg2 needed); return stdout."""
        return _psql(
            self._psql_binary(),
            ["-h", self.host, "-p", str(self.port), "-U", self.owner, "-d", dbname],
            sql,
            password=self.owner_password,
        )

    def owner_databases(self):
        """Names of the databases the owner role owns (what the demo's --reset drops)."""
        out = self.owner_psql(
            "SELECT datname FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba "
            "WHERE r.rolname = current_user"
        )
        return out.split()

    def _psql_binary(self):
        bindir = find_bindir()
        return os.path.join(bindir, "psql") if bindir else "psql"


def _psql(binary, target, sql, *, password=None, variables=None, prefix=()):
    argv = [*prefix, binary, *target, "-qtA", "-v", "ON_ERROR_STOP=1"]
    for name, value in (variables or {}).items():
        argv += ["-v", f"{name}={value}"]
    env = dict(os.environ)
    if password is not None:
        env["PGPASSWORD"] = password
    result = subprocess.run(
        argv, input=sql, capture_output=True, text=True, env=env, timeout=120, check=False
    )
    if result.returncode:
        raise ServiceError(f"psql failed: {result.stderr.strip()}")
    return result.stdout


class PgCluster(_Connections, Service):
    """A cluster of its own in ``workdir`` (a temporary one when None).

    ``port``: a fixed port, or None for a free one (retried if taken meanwhile).
    A cluster already initialised in ``workdir`` is reused, and one already running
    there is adopted (its port read from postmaster.pid) and left running by stop().
    """

    name = "pg"
    log_name = "server.log"

    def __init__(
        self,
        workdir=None,
        *,
        port=None,
        owner="saas_owner",
        owner_password=None,
        durable=False,
        bindir=None,
    ):
        super().__init__(workdir)
        self.wanted_port = port
        self.port = port
        self.owner = owner
        self.owner_password = owner_password or util.random_password()
        self.durable = durable
        self.bindir = bindir or find_bindir()
        self.as_postgres = _as_root()

    @property
    def datadir(self):
        return self.workdir / "data"

    # --- processes -----------------------------------------------------------

    def _run(self, *args, timeout=START_TIMEOUT_S + 15):
        cmd = [os.path.join(self.bindir, args[0]), *args[1:]]
        if self.as_postgres:
            cmd = ["runuser", "-u", SUPERUSER, "--", *cmd]
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, check=False, cwd=self.workdir
        )

    def _chown(self, path):
        if self.as_postgres:
            entry = _postgres_user()
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _prepare_workdir(self):
        if self.bindir is None:
            raise ServiceError(
                f"no PostgreSQL server binaries ({PG_BIN_GLOB}/initdb): apt-get install postgresql"
            )
        if self.as_postgres and not self.throwaway and not self._postgres_reaches(self.workdir):
            self._relocate()
        self.workdir.chmod(0o700)
        self._chown(self.workdir)

    @staticmethod
    def _postgres_reaches(path):
        return (
            subprocess.run(
                ["runuser", "-u", SUPERUSER, "--", "test", "-x", str(path)],
                capture_output=True,
                check=False,
            ).returncode
            == 0
        )

    def _relocate(self):
        """The server runs as postgres, which cannot reach the workdir (e.g. under a
        private /root): keep the cluster in postgres's home, linked from the workdir."""
        link = self.workdir
        if link.is_symlink():  # relocated by an earlier run
            self.workdir = link.resolve()
            return
        digest = hashlib.sha256(str(link).encode()).hexdigest()[:8]
        real = Path(_postgres_user().pw_dir) / f"saas_manager-{link.name}-{digest}"
        real.mkdir(parents=True, exist_ok=True)
        link.rmdir()  # just made by _make_workdir (a non-empty one is an error)
        link.symlink_to(real)
        self.workdir = real

    def _initdb(self):
        pwfile = self.workdir / "superuser.pw"
        util.kept_secret(pwfile)
        self._chown(pwfile)
        argv = [
            "initdb",
            "-D",
            str(self.datadir),
            "-U",
            SUPERUSER,
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            f"--locale={LOCALE}",
        ]
        if not self.durable:
            argv.append("--no-sync")
        result = self._run(*argv)
        if result.returncode:
            raise ServiceError(f"initdb failed:\n{result.stdout}\n{result.stderr}")

    def _write_settings(self):
        settings = {
            **COMMON_SETTINGS,
            **(DURABLE_SETTINGS if self.durable else FAST_SETTINGS),
            "unix_socket_directories": f"'{self.workdir}'",
            "port": str(self.port),
        }
        path = self.datadir / "sandbox.conf"
        path.write_text("".join(f"{key} = {value}\n" for key, value in settings.items()))
        self._chown(path)
        # Included last, so these win over anything earlier in postgresql.conf.
        conf = self.datadir / "postgresql.conf"
        include = "include_if_exists = 'sandbox.conf'"
        if include not in conf.read_text():
            with conf.open("a", encoding="utf-8") as handle:
                handle.write(
                    f"\n# saas_manager sandbox: settings rewritten at each start\n{include}\n"
                )

    def running(self):
        return (self.datadir / "PG_VERSION").exists() and not self._run(
            "pg_ctl", "status", "-D", str(self.datadir)
        ).returncode

    def _start(self):
        self.superuser_password = None
        if not (self.datadir / "PG_VERSION").exists():
            self._initdb()
        self.superuser_password = (self.workdir / "superuser.pw").read_text().strip()
        if self.running():
            # Left running by an earlier run: reuse it on its port, and leave it running.
            self.port = int((self.datadir / "postmaster.pid").read_text().splitlines()[3])
            util.log(f"PostgreSQL of {self.workdir} already running on port {self.port}: reused")
        else:
            self._pg_ctl_start()
        self.ensure_role(self.owner, self.owner_password)

    def _pg_ctl_start(self):
        # A port found free may be taken before the server binds it: retry then.
        if self.wanted_port and util.port_open(self.wanted_port):
            raise ServiceError(f"port {self.wanted_port} is in use")
        for _attempt in range(1 if self.wanted_port else 3):
            self.port = self.wanted_port or util.free_port()
            self._write_settings()
            result = self._run(
                "pg_ctl", "start", "-D", str(self.datadir), "-l", str(self.log_path), "-w",
                "-t", str(START_TIMEOUT_S),
            )  # fmt: skip
            if result.returncode == 0:
                self.started = True
                return
        raise ServiceError(f"pg_ctl start failed:\n{result.stderr}\n{self.log_tail()}")

    def _stop(self):
        # A throwaway cluster is removed next: no need for a clean shutdown.
        mode = "immediate" if self.throwaway else "fast"
        self._run("pg_ctl", "stop", "-D", str(self.datadir), "-m", mode, "-w", "-t", "30")

    # --- roles and SQL ------------------------------------------------------------

    def psql(self, sql, *, dbname="postgres", variables=None):
        """Run SQL as the superuser with psql; return its output."""
        return _psql(
            os.path.join(self.bindir, "psql"),
            ["-h", self.host, "-p", str(self.port), "-U", SUPERUSER, "-d", dbname],
            sql,
            password=self.superuser_password,
            variables=variables,
        )

    def ensure_role(self, role, password):
        self.psql(ENSURE_ROLE_SQL, variables={"role": role, "pw": password})

    def _psql_binary(self):
        return os.path.join(self.bindir, "psql")


class SystemCluster(_Connections, Service):
    """The machine's newest cluster (``pg_lsclusters``), root only: started when it is
    offline (and then stopped again by stop()), with the owner role made in it."""

    name = "system-pg"

    def __init__(self, *, owner, owner_password):
        super().__init__(workdir=None)
        self.throwaway = False
        self.owner = owner
        self.owner_password = owner_password
        self.version = self.cluster_name = None

    def _make_workdir(self):
        if not _as_root():
            raise ServiceError(f"--system-pg needs root (to start it and create role {self.owner})")

    def _start(self):
        out = subprocess.run(
            ["pg_lsclusters", "-h"], capture_output=True, text=True, check=False
        ).stdout
        lines = sorted(out.splitlines(), key=lambda line: float(line.split()[0]))
        if not lines:
            raise ServiceError(
                "no PostgreSQL cluster here (make one: pg_createcluster VERSION main)"
            )
        self.version, self.cluster_name, port, status = lines[-1].split()[:4]
        self.port = int(port)
        if status != "online":
            util.log(f"starting the machine's PostgreSQL {self.version}/{self.cluster_name}")
            subprocess.run(["pg_ctlcluster", self.version, self.cluster_name, "start"], check=True)
            self.started = True
        _psql(
            "psql",
            ["-p", str(self.port), "-d", "postgres"],
            ENSURE_ROLE_SQL,
            variables={"role": self.owner, "pw": self.owner_password},
            prefix=("runuser", "-u", SUPERUSER, "--"),
        )

    def _stop(self):
        util.log(f"stopping PostgreSQL cluster {self.version}/{self.cluster_name}")
        subprocess.run(
            ["pg_ctlcluster", self.version, self.cluster_name, "stop"],
            capture_output=True,
            check=False,
        )
