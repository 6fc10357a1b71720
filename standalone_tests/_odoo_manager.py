"""A real Odoo serving a SaaS Manager database that manages that very Odoo.

Used by ``test_operations_crash.py`` and ``scripts/bench_operations.py``: a
PostgreSQL cluster, an sshd and one or more Odoo 18.0 processes (threaded,
``workers = 0``, cron threads on) from the sandbox, all on 127.0.0.1, serving one
manager database with saas_manager installed. :meth:`Manager.register_server`
registers that Odoo as its own managed server over JSON-RPC, as an administrator
would (URL, PostgreSQL, data directory, master password, SSH user, key and pinned
host key): its templates and instances are databases of the same cluster and
directories of the same data directory.

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

from sandbox import machine, util
from sandbox.odoo import OdooServer, find_odoo_src
from sandbox.postgres import PgCluster
from sandbox.sshd import Sshd

MANAGER_DB = "saas_mgr"
OPERATION_CRON = "ir_cron_saas_operation_run"
PARTIAL_MARK = ".saas-copy-"


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
        self.odoos = []
        self.rpc = None
        self.server_id = None

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
                "limit_time_real_cron": 0,
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

    def stop(self):
        for server in self.odoos:
            server.stop()
        self.sshd.stop()
        self.pg.stop()

    # --- the managed server, templates, instances -----------------------------------

    def register_server(self, **values):
        """This Odoo as its own managed server, activated; return its id."""
        odoo = self.odoos[0]
        vals = {
            "name": "This Odoo",
            "code": "self",
            "server_url": odoo.url,
            "port": odoo.http_port,
            "ip_address": util.LOOPBACK,
            "db_host": util.LOOPBACK,
            "db_port": self.pg.port,
            "db_user": self.pg.owner,
            "db_password": self.pg.owner_password,
            "master_password": self.master_password,
            "data_dir": str(self.data_dir),
            "ssh_port": self.sshd.port,
            "ssh_user": util.current_user(),
            "ssh_private_key": Path(self.sshd.login_key()).read_text(),
            "ssh_host_key": Path(self.sshd.host_key_file()).read_text().strip(),
            "max_instances": 1000,
            "max_parallel_operations": 4,
            **values,
        }
        self.server_id = self.rpc("saas.server", "create", vals)
        self.rpc("saas.server", "action_activate", [self.server_id])
        return self.server_id

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

    # --- what is on the "remote" host ---------------------------------------------

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

    @staticmethod
    def copy_processes():
        """Command lines of running processes copying into a partial copy."""
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            words = [word.decode(errors="replace") for word in argv if word]
            if words and Path(words[0]).name == "cp" and any(PARTIAL_MARK in w for w in words):
                found.append(" ".join(words))
        return found


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
