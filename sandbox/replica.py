"""A streaming replica of a sandbox PostgreSQL cluster, on loopback.

:class:`PgReplica` copies a running :class:`~.postgres.PgCluster` with
``pg_basebackup -R`` (which writes ``standby.signal`` and ``primary_conninfo``)
over a replication connection to 127.0.0.1, gives the copy its own port and
socket directory, and starts it as a hot standby: read-only, streaming the
primary's WAL. It has the primary's roles and passwords (they are replicated), so
it is queried exactly like its primary. Stopped (and removed, when throwaway)
like any service.
"""

import os
import subprocess

from . import util
from .postgres import SUPERUSER, PgCluster
from .service import ServiceError

BASEBACKUP_TIMEOUT_S = 120


class PgReplica(PgCluster):
    """A hot standby of ``primary`` (a started :class:`PgCluster`)."""

    name = "pg-replica"

    def __init__(self, primary, workdir=None):
        super().__init__(
            workdir,
            owner=primary.owner,
            owner_password=primary.owner_password,
            durable=primary.durable,
            bindir=primary.bindir,
        )
        self.primary = primary

    def _initdb(self):
        """The data directory is a base backup of the primary, not a new cluster."""
        pwfile = self.workdir / "superuser.pw"
        util.kept_secret(pwfile, make=lambda: self.primary.superuser_password)
        self._chown(pwfile)
        argv = [
            os.path.join(self.bindir, "pg_basebackup"),
            "-h", self.primary.host, "-p", str(self.primary.port), "-U", SUPERUSER,
            "-D", str(self.datadir), "-R", "-X", "stream", "-c", "fast", "--no-password",
        ]  # fmt: skip
        if not self.durable:
            argv.append("--no-sync")
        if self.as_postgres:
            argv = ["runuser", "-u", SUPERUSER, "--", *argv]
        # The password goes through the environment, never the command line; -R
        # writes it into the standby's primary_conninfo (in its own data directory).
        env = dict(os.environ, PGPASSWORD=self.primary.superuser_password)
        result = subprocess.run(
            argv, capture_output=True, text=True, env=env, cwd=self.workdir,
            timeout=BASEBACKUP_TIMEOUT_S, check=False,
        )  # fmt: skip
        if result.returncode:
            raise ServiceError(f"pg_basebackup failed:\n{result.stdout}\n{result.stderr}")
        if not (self.datadir / "standby.signal").exists():
            raise ServiceError("pg_basebackup -R wrote no standby.signal")

    def _start(self):
        if not (self.datadir / "PG_VERSION").exists():
            self._initdb()
        self.superuser_password = (self.workdir / "superuser.pw").read_text().strip()
        # A standby is read-only: the roles come from the primary, none is made here.
        self._pg_ctl_start()
        util.wait_until(self.in_recovery, 30, what="the replica in recovery")

    def in_recovery(self):
        return self.query("SELECT pg_is_in_recovery()")[0][0]
