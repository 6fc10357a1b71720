"""A real Odoo serving a SaaS Manager database that manages that very Odoo.

Used by ``test_operations_crash.py`` and ``scripts/bench_operations.py``: a
PostgreSQL cluster, an sshd and one or more Odoo 18.0 processes (threaded,
``workers = 0``, cron threads on) from the sandbox, all on 127.0.0.1, serving one
manager database with saas_manager installed. :meth:`Manager.register_server`
registers that Odoo as its own managed server over JSON-RPC, as an administrator
would (URL, PostgreSQL, data directory, master password, SSH user, key and pinned
host key): its templates and instances are databases of the same cluster and
directories of the same data directory.

For moves, :meth:`Manager.start_target_host` adds a second :class:`Host` (a
PostgreSQL cluster and a data directory of its own, reached over the same sshd)
and :meth:`Manager.register_target_server` registers it as a second managed
server: the same Odoo under another name (server URLs are unique), whose
databases and filestores are the second host's.

No Odoo import: everything goes through JSON-RPC, PostgreSQL and the file system,
as an operator (or a test) outside the process sees it.
"""

import glob
import json
import os
import signal
import time
import urllib.request
from pathlib import Path

import psycopg2

from sandbox import machine, util
from sandbox.odoo import OdooServer, find_odoo_src
from sandbox.postgres import PgCluster
from sandbox.sshd import Sshd

MANAGER_DB = "saas_mgr"
OPERATION_CRON = "ir_cron_saas_operation_run"
PARTIAL_MARK = ".saas-copy-"
# The transfer's programs on a host: python3 -c SCRIPT saas-send|saas-restore ...
HOST_PROGRAMS = ("saas-send", "saas-restore")
# limit_time_real_cron of the manager's Odoo: a day, in effect none.
CRON_TIME_LIMIT_S = 24 * 3600


class RpcError(RuntimeError):
    """An Odoo JSON-RPC error; the message is the server's."""


def odoo_python():
    """The Python of the Odoo virtualenv: $SAAS_ODOO_PYTHON, else the newest made one."""
    given = os.environ.get("SAAS_ODOO_PYTHON")
    if given:
        return given if os.access(given, os.X_OK) else None
    found = sorted(
        glob.glob(str(machine.cache_dir() / "venv-odoo-*" / ".complete")),
        key=os.path.getmtime,
    )
    return str(Path(found[-1]).parent / "bin" / "python") if found else None


def why_not():
    """Why the manager cannot run here (None when it can)."""
    if find_odoo_src(complain=None) is None:
        return "no Odoo 18.0 tree ($ODOO_SRC or /opt/odoo-18.0)"
    if odoo_python() is None:
        return "no Odoo virtualenv (scripts/saas.py test sets SAAS_ODOO_PYTHON)"
    if not os.access("/usr/sbin/sshd", os.X_OK):
        return "no /usr/sbin/sshd (Debian package openssh-server)"
    return None


class Rpc:
    """JSON-RPC to one Odoo, logged in as ``admin`` on the manager database."""

    def __init__(self, url, db=MANAGER_DB, login="admin", password="admin", timeout=120):  # noqa: S107 (the sandbox admin)
        self.url = url
        self.db = db
        self.password = password
        self.timeout = timeout
        self.uid = self.call("common", "login", db, login, password)
        if not self.uid:
            raise RpcError(f"login {login} refused on {db}")

    def call(self, service, method, *args):
        body = json.dumps(
            {
                "jsonrpc": "2.0",
                "method": "call",
                "params": {"service": service, "method": method, "args": args},
                "id": 1,
            }
        ).encode()
        request = urllib.request.Request(  # noqa: S310 (loopback, http)
            f"{self.url}/jsonrpc", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as answer:  # noqa: S310
            reply = json.loads(answer.read())
        if reply.get("error"):
            data = reply["error"].get("data") or {}
            raise RpcError(data.get("message") or reply["error"].get("message"))
        return reply["result"]

    def __call__(self, model, method, *args, **kwargs):
        return self.call(
            "object", "execute_kw", self.db, self.uid, self.password, model, method, args, kwargs
        )

    def read(self, model, ids, fields):
        return self(model, "read", ids, fields)

    def one(self, model, record_id, fields):
        return self.read(model, [record_id], fields)[0]

    def search_read(self, model, domain, fields, **kwargs):
        return self(model, "search_read", domain, fields, **kwargs)


def wait_for(predicate, timeout, interval=0.5, what="the condition"):
    """``predicate()``'s first true value, or TimeoutError after ``timeout`` seconds."""
    return util.wait_until(predicate, timeout, interval=interval, what=what)


class Host:
    """What a managed server is made of here: a PostgreSQL cluster and a data directory.

    The sshd is the manager's, shared by every host (they are all this machine).
    """

    def __init__(self, pg, data_dir):
        self.pg = pg
        self.data_dir = Path(data_dir)

    @property
    def filestore_root(self):
        return self.data_dir / "filestore"

    def filestore(self, db):
        return self.filestore_root / db

    def partial_copies(self):
        root = self.filestore_root
        return (
            sorted(str(path) for path in root.glob(f".*{PARTIAL_MARK}*")) if root.exists() else []
        )

    def databases(self):
        return self.pg.databases()

    def connects(self, db):
        """Whether the owner role can connect to ``db`` (a closed database refuses)."""
        try:
            self.pg.connect(db).close()
        except psycopg2.OperationalError:
            return False
        return True

    def read_only(self, db):
        """Whether ``db`` is frozen: ``default_transaction_read_only`` set on it."""
        rows = self.pg.query(
            "SELECT s.setconfig FROM pg_db_role_setting s "
            "JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = %s AND s.setrole = 0",
            (db,),
        )
        config = dict(item.split("=", 1) for row in rows or () for item in row[0])
        return config.get("default_transaction_read_only") in ("on", "true", "1")


class Manager:
    """PostgreSQL, sshd and Odoo process(es) serving :data:`MANAGER_DB`.

    ``durable``: PostgreSQL with fsync on (benchmarks). ``odoo_python``: the
    Odoo virtualenv's interpreter. Start with :meth:`start`, stop with :meth:`stop`.
    """

    def __init__(self, work, *, python=None, durable=False, cron_threads=2):
        self.work = Path(work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.work.chmod(0o755)
        self.odoo_src = find_odoo_src(complain=None)
        self.python = python or odoo_python()
        self.durable = durable
        self.cron_threads = cron_threads
        self.data_dir = self.work / "data"
        self.master_password = util.random_password()
        self.secret_key = util.fernet_key()
        self.pg = PgCluster(self.work / "pg", owner="saas_mgr", durable=durable)
        self.sshd = Sshd(self.work / "ssh", host_key_types=("ed25519",))
        self.host = Host(self.pg, self.data_dir)
        self.target = None  # the second host, once started (start_target_host)
        self.odoos = []
        self.rpc = None
        self.server_id = None
        self.target_server_id = None

    # --- processes -------------------------------------------------------------

    def start(self):
        self.pg.start()
        self.sshd.start()
        first = self.new_odoo("odoo1")
        first.write_config()
        util.log(f"manager: installing saas_manager in {MANAGER_DB}")
        first.run(
            "-d", MANAGER_DB, "-i", "saas_manager", "--without-demo=all", "--stop-after-init",
            "--log-level=warn", log=self.work / "install.log",
        )  # fmt: skip
        self.start_odoo(first)
        self.rpc = Rpc(first.url)
        return self

    def new_odoo(self, name):
        server = OdooServer(
            self.work / name,
            self.odoo_src,
            self.python,
            self.pg,
            master_password=self.master_password,
            secret_key=self.secret_key,
            data_dir=self.data_dir,
            options={
                "db_name": MANAGER_DB,
                "dbfilter": ".*",
                "workers": 0,
                "max_cron_threads": self.cron_threads,
                "gevent_port": util.free_port(),
                # No time limit on the cron thread (a kill -9 test or a bench run may
                # take long): a threaded Odoo 18 reads 0 as unset and applies
                # limit_time_real (120 s) instead, reloading itself mid-operation
                # (only prefork workers read 0 as no limit).
                "limit_time_real_cron": CRON_TIME_LIMIT_S,
            },
            serve_args=("--log-level=info",),
        )
        self.odoos.append(server)
        return server

    def start_odoo(self, server):
        server.start()
        server.wait_ready(MANAGER_DB)
        return server

    def kill(self, server):
        """``kill -9`` the Odoo process and its whole process group."""
        pid = server.process.pid
        os.killpg(pid, signal.SIGKILL)
        server.process.wait(timeout=30)
        server.stop()

    def restart(self, server):
        self.start_odoo(server)
        self.rpc = Rpc(server.url)

    def start_target_host(self):
        """A second host for moves: a PostgreSQL cluster and a data directory of its own."""
        pg = PgCluster(self.work / "pg2", owner="saas_target", durable=self.durable)
        self.target = Host(pg, self.work / "data2")
        self.target.filestore_root.mkdir(parents=True, exist_ok=True)
        pg.start()
        return self.target

    def stop(self):
        for server in self.odoos:
            server.stop()
        self.sshd.stop()
        if self.target is not None:
            self.target.pg.stop()
        self.pg.stop()

    # --- the managed server, templates, instances -----------------------------------

    def _add_server(self, host, **values):
        """Register ``host`` as a managed server of this Odoo, activated; return its id."""
        odoo = self.odoos[0]
        vals = {
            "server_url": odoo.url,
            "port": odoo.http_port,
            "ip_address": util.LOOPBACK,
            "db_host": util.LOOPBACK,
            "db_port": host.pg.port,
            "db_user": host.pg.owner,
            "db_password": host.pg.owner_password,
            "master_password": self.master_password,
            "data_dir": str(host.data_dir),
            "ssh_port": self.sshd.port,
            "ssh_user": util.current_user(),
            "ssh_private_key": Path(self.sshd.login_key()).read_text(),
            "ssh_host_key": Path(self.sshd.host_key_file()).read_text().strip(),
            "max_instances": 1000,
            "max_parallel_operations": 4,
            **values,
        }
        server_id = self.rpc("saas.server", "create", vals)
        self.rpc("saas.server", "action_activate", [server_id])
        return server_id

    def register_server(self, **values):
        """This Odoo as its own managed server, activated; return its id."""
        self.server_id = self._add_server(self.host, name="This Odoo", code="self", **values)
        return self.server_id

    def register_target_server(self, **values):
        """The second host as another managed server, activated; return its id.

        Its Odoo is this one under another name (what answers its health checks and
        version; server URLs are unique); its databases and filestores are the
        second host's.
        """
        url = self.odoos[0].url.replace(util.LOOPBACK, "localhost")
        self.target_server_id = self._add_server(
            self.target, name="Target", code="target", server_url=url, **values
        )
        return self.target_server_id

    def set_param(self, key, value):
        self.rpc("ir.config_parameter", "set_param", key, str(value))

    def cron_id(self):
        rows = self.rpc.search_read(
            "ir.model.data",
            [("module", "=", "saas_manager"), ("name", "=", OPERATION_CRON)],
            ["res_id"],
        )
        return rows[0]["res_id"]

    def set_cron_active(self, active):
        self.rpc("ir.cron", "write", [self.cron_id()], {"active": active})

    def queue_template(self, db, **values):
        template_id = self.rpc(
            "saas.template",
            "create",
            {"name": db, "database_name": db, "server_id": self.server_id, **values},
        )
        self.rpc("saas.template", "action_create_database", [template_id])
        return template_id

    def wait_template(self, template_id, timeout=240):
        def ended():
            row = self.rpc.one("saas.template", template_id, ["state", "error"])
            return row if row["state"] in ("ready", "failed") else None

        return wait_for(ended, timeout, interval=1.0, what=f"template {template_id} made")

    def create_instances(self, template_id, names):
        return self.rpc(
            "saas.instance",
            "create",
            [
                {
                    "name": name,
                    "database_name": name,
                    "server_id": self.server_id,
                    "template_id": template_id,
                    "admin_email": f"admin@{name.replace('_', '-')}.example.com",
                }
                for name in names
            ],
        )

    def provision(self, instance_id):
        self.rpc("saas.instance", "action_provision", [instance_id])

    def _start_transfer(self, **values):
        """Queue a transfer through its wizard, as the Move or Copy button does."""
        wizard = self.rpc("saas.instance.transfer", "create", values)
        self.rpc("saas.instance.transfer", "action_start", [wizard])

    def queue_template_copy(self, template_id, server_id, db):
        """Queue the copy of a ready template to ``server_id``; return the copy's id."""
        self._start_transfer(
            template_id=template_id, mode="copy", target_server_id=server_id, database_name=db
        )
        (copy_id,) = self.rpc(
            "saas.template", "search", [("server_id", "=", server_id), ("database_name", "=", db)]
        )
        return copy_id

    def queue_move(self, instance_id, server_id):
        """Queue the move of an instance to ``server_id``; return the operation's id."""
        self._start_transfer(instance_id=instance_id, mode="move", target_server_id=server_id)
        (operation_id,) = self.rpc(
            "saas.operation",
            "search",
            [("instance_id", "=", instance_id), ("kind", "=", "transfer")],
            limit=1,
        )
        return operation_id

    def operations(self, domain, fields=("state", "attempt", "step", "error", "duration_s")):
        return self.rpc.search_read("saas.operation", domain, list(fields))

    def journal(self, operation_id):
        return self.rpc.search_read(
            "saas.operation.journal",
            [("operation_id", "=", operation_id)],
            ["attempt", "kind", "name", "state", "error"],
        )

    def wait_operations_ended(self, domain, count, timeout):
        def ended():
            rows = self.operations(domain)
            if len(rows) >= count and all(row["state"] in ("done", "failed") for row in rows):
                return rows
            return None

        return wait_for(ended, timeout, interval=1.0, what=f"{count} operations ended")

    # --- what is on the "remote" host (the first one) ---------------------------------

    @property
    def filestore_root(self):
        return self.host.filestore_root

    def filestore(self, db):
        return self.host.filestore(db)

    def partial_copies(self):
        return self.host.partial_copies()

    def databases(self):
        return self.host.databases()

    def copy_processes(self):
        """Command lines of running processes copying for this manager's operations.

        A ``cp`` into a partial copy (provisioning), the transfer's programs on a
        host (``python3 -c ... saas-send`` / ``saas-restore``) on this manager's
        directories, and the ``pg_dump`` or ``psql`` they run against one of its
        clusters (other sandboxes on this machine may be copying too).
        """
        ports = {str(host.pg.port) for host in (self.host, self.target) if host}
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            words = [word.decode(errors="replace") for word in argv if word]
            program = Path(words[0]).name if words else ""
            ours = any(word.startswith(str(self.work)) for word in words)
            if (
                (ours and program == "cp" and any(PARTIAL_MARK in word for word in words))
                or (ours and len(words) > 3 and words[1] == "-c" and words[3] in HOST_PROGRAMS)
                or (program in ("pg_dump", "psql") and _option(words, "--port") in ports)
            ):
                found.append(" ".join(words))
        return found


def _option(words, name):
    """The value after ``name`` in a command line, or None."""
    return words[words.index(name) + 1] if name in words[:-1] else None


def fill_filestore(directory, files, size):
    """``files`` files of ``size`` random bytes under ``directory``/bulk/<xx>/ (new)."""
    bulk = Path(directory) / "bulk"
    per_dir = max(1, -(-files // 256))
    made = 0
    seed = os.urandom(size)
    for index in range(256):
        sub = bulk / f"{index:02x}"
        sub.mkdir(parents=True, exist_ok=True)
        for number in range(per_dir):
            if made >= files:
                return bulk
            # Distinct contents (as a content-addressed filestore has), cheaply.
            (sub / f"{number:06d}").write_bytes(made.to_bytes(8, "big") + seed[8:])
            made += 1
    return bulk


def wait_gone(predicate_found, timeout, what):
    """Wait until ``predicate_found()`` returns an empty value; return the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate_found()
        if not value or time.monotonic() >= deadline:
            return value
        time.sleep(0.2)
