import os
import shutil
import socket
import uuid

import psycopg2
from psycopg2 import sql as psql

from odoo.modules import module as odoo_module
from odoo.tests import HttpCase, TransactionCase
from odoo.tools import config, mute_logger

from ..remote import postgres


def closed_port_urls(count=1):
    """URLs of distinct ports on 127.0.0.1 where nothing listens."""
    socks = []
    try:
        for _n in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [f"http://127.0.0.1:{sock.getsockname()[1]}" for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def closed_port_url():
    """The URL of a port on 127.0.0.1 where nothing listens."""
    return closed_port_urls(1)[0]


class SaasCase(TransactionCase):
    """Helpers to make servers and instances; no reliance on demo data."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.Server = cls.env["saas.server"]
        cls.Instance = cls.env["saas.instance"]
        # Servers from demo data (if loaded) must not take part in the tests.
        cls.Server.search([]).write({"state": "disabled"})
        cls._server_seq = 0
        cls._instance_seq = 0

    @classmethod
    def make_server(cls, **vals):
        cls._server_seq += 1
        seq = cls._server_seq
        values = {
            "name": f"Test server {seq}",
            "code": f"test-{seq}",
            "server_url": f"http://test-{seq}.example.com",
            "max_instances": 10,
        }
        values.update(vals)
        return cls.Server.create(values)

    @classmethod
    def make_instances(cls, server, count, state="draft"):
        first = cls._instance_seq
        cls._instance_seq += count
        return cls.Instance.create(
            [
                {
                    "name": f"{server.code} client {n}",
                    "database_name": f"{server.code}_client_{n}",
                    "server_id": server.id,
                    "state": state,
                }
                for n in range(first, first + count)
            ]
        )


# Set by scripts/odoo_suite. The master password comes from there too, in clear:
# Odoo replaces config["admin_passwd"] by its hash after the first check.
SSH_ENV = (
    "SAAS_TEST_MASTER_PASSWORD",
    "SAAS_TEST_SSH_PORT",
    "SAAS_TEST_SSH_USER",
    "SAAS_TEST_SSH_KEY_FILE",
    "SAAS_TEST_SSH_HOST_KEY_FILE",
)
LOGGERS = (
    "odoo.addons.saas_manager.models.saas_operation",
    "odoo.addons.saas_manager.models.saas_template",
    "odoo.addons.saas_manager.models.saas_instance",
    "odoo.addons.saas_manager.remote.odoo_rpc",
)


def self_managed_values(base_url):
    """Values of a saas.server that is this very Odoo, or None without the sshd."""
    missing = [name for name in SSH_ENV if not os.environ.get(name)]
    if missing:
        return None
    with open(os.environ["SAAS_TEST_SSH_KEY_FILE"]) as key_file:
        private_key = key_file.read()
    with open(os.environ["SAAS_TEST_SSH_HOST_KEY_FILE"]) as host_key_file:
        host_key = host_key_file.read().strip()
    return {
        "server_url": base_url,
        "db_host": config["db_host"] or "localhost",
        "db_port": int(config["db_port"] or 5432),
        "db_user": config["db_user"],
        "db_password": config["db_password"] or False,
        "master_password": os.environ["SAAS_TEST_MASTER_PASSWORD"],
        "data_dir": config["data_dir"],
        "ssh_port": int(os.environ["SAAS_TEST_SSH_PORT"]),
        "ssh_user": os.environ["SAAS_TEST_SSH_USER"],
        "ssh_private_key": private_key,
        "ssh_host_key": host_key,
        "max_instances": 3,
    }


TARGET_ENV = (
    "SAAS_TEST_TARGET_DB_PORT",
    "SAAS_TEST_TARGET_DB_USER",
    "SAAS_TEST_TARGET_DB_PASSWORD",
    "SAAS_TEST_TARGET_DATA_DIR",
    "SAAS_TEST_TARGET_SSH_PORT",
    "SAAS_TEST_TARGET_SSH_KEY_FILE",
    "SAAS_TEST_TARGET_SSH_HOST_KEY_FILE",
)


def target_host_values(base_url):
    """Values of a second saas.server: another PostgreSQL cluster, data dir and sshd.

    Its Odoo URL is this Odoo's (what answers its health checks and version); its
    databases and filestores are the second host's. None without that host.
    """
    values = self_managed_values(base_url)
    if values is None or any(not os.environ.get(name) for name in TARGET_ENV):
        return None
    env = os.environ
    with open(env["SAAS_TEST_TARGET_SSH_KEY_FILE"]) as key_file:
        private_key = key_file.read()
    with open(env["SAAS_TEST_TARGET_SSH_HOST_KEY_FILE"]) as host_key_file:
        host_key = host_key_file.read().strip()
    values.update(
        {
            # This Odoo under another name (server URLs are unique).
            "server_url": base_url.replace("127.0.0.1", "localhost"),
            "db_host": "127.0.0.1",
            "db_port": int(env["SAAS_TEST_TARGET_DB_PORT"]),
            "db_user": env["SAAS_TEST_TARGET_DB_USER"],
            "db_password": env["SAAS_TEST_TARGET_DB_PASSWORD"],
            "data_dir": env["SAAS_TEST_TARGET_DATA_DIR"],
            "ssh_port": int(env["SAAS_TEST_TARGET_SSH_PORT"]),
            "ssh_private_key": private_key,
            "ssh_host_key": host_key,
        }
    )
    return values


def unique_db_name(prefix):
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


# shared_template_key -> (database name, connection params, filestore root) of the
# ready template the tests of that key share, once made.
_shared_templates = {}


def _next_class_shares(cls, key):
    """Whether the test class that runs after ``cls`` shares the template ``key``.

    Odoo's test suite (odoo.tests.suite.OdooSuite.run) sets ``module.current_test`` to
    the next test before it calls the previous class's tearDownClass; after the last
    test it is still that test, of ``cls``: nothing follows. Anything unexpected
    reads as "does not share" (the template is dropped, made again if needed).
    """
    following = type(getattr(odoo_module, "current_test", None))
    return (
        following is not cls
        and issubclass(following, SelfManagedCase)
        and following.shared_template_key == key
    )


class SelfManagedCase(HttpCase, SaasCase):
    """The Odoo running the tests as its own managed server (a real peer)."""

    def setUp(self):
        super().setUp()
        # In setUp, not setUpClass: the test server answers requests only once a
        # test runs.
        values = self_managed_values(self.base_url())
        if values is None:
            self.skipTest(
                "no test sshd or master password: run the Odoo suite through scripts/odoo_suite, "
                "which starts an sshd "
                f"and sets {', '.join(SSH_ENV)}"
            )
        self.server = self.make_server(name="This Odoo", code="self", **values)
        self.server.action_activate()
        self.pg = self.server._pg_params()
        self.filestore_root = os.path.join(config["data_dir"], "filestore")

    # --- helpers -------------------------------------------------------------

    def drop_later(self, db_name):
        """Drop ``db_name`` and its filestore at the end of the test, if they exist."""

        def drop():
            # With PostgreSQL, not db.drop: the test server runs with --database,
            # so its database service lists, and drops, that database only.
            postgres.drop_database(self.pg, db_name)
            shutil.rmtree(os.path.join(self.filestore_root, db_name), ignore_errors=True)

        self.addCleanup(drop)

    def run_operations(self):
        """Run the queued operations now, as the operations cron would."""
        with mute_logger(*LOGGERS, "odoo.addons.saas_manager.models.saas_operation"):
            self.env["saas.operation"]._run_until_idle()
        self.env.invalidate_all()

    def provision(self, instance):
        """Press Provision, then run the operation it queued."""
        action = instance.action_provision()
        self.assertEqual(action["params"]["type"], "info", action)
        self.run_operations()
        return instance

    # Tests of classes naming the same key share one ready template (shared_template).
    shared_template_key = None

    @classmethod
    def tearDownClass(cls):
        key = cls.shared_template_key
        if key in _shared_templates and not _next_class_shares(cls, key):
            db_name, pg, filestore_root = _shared_templates.pop(key)
            postgres.drop_database(pg, db_name)
            shutil.rmtree(os.path.join(filestore_root, db_name), ignore_errors=True)
        super().tearDownClass()

    def shared_template(self, name="Shared template"):
        """A ready template on this server, made once for the tests of this class and
        of the classes run right after it with the same ``shared_template_key``.

        The first test that asks makes it through the engine (about 25 s: a new
        database and its modules, through the server's database service); the next
        ones adopt its database (a ``saas.template`` record of their own, each test's
        records being rolled back, set ready). Dropped with its filestore at the end
        of the last of those classes. Tests that change its database put it back.
        """
        key = type(self).shared_template_key
        self.assertTrue(key, f"{type(self).__name__} names no shared_template_key")
        Template = self.env["saas.template"]
        if key in _shared_templates:
            template = Template.create(
                {"name": name, "database_name": _shared_templates[key][0],
                 "server_id": self.server.id}
            )  # fmt: skip
            template.sudo().write({"state": "ready"})
            return template
        template = Template.create(
            {"name": name, "database_name": unique_db_name("saas_tpl"), "server_id": self.server.id}
        )
        # Kept before it is made: a half-made one is dropped at the end too.
        _shared_templates[key] = (template.database_name, self.pg, self.filestore_root)
        if not template._create_database():
            # Failed: the engine removed what it made; the next test tries again.
            del _shared_templates[key]
            self.fail(f"the shared template was not made: {template.error}")
        return template

    def put_template_file(self, template, name="ab/abcdef", content="attachment"):
        """A file in ``template``'s filestore (made when missing), as an attachment
        leaves one; returns the filestore's path."""
        source = os.path.join(self.filestore_root, template.database_name)
        os.makedirs(os.path.dirname(os.path.join(source, name)), exist_ok=True)
        with open(os.path.join(source, name), "w") as handle:
            handle.write(content)
        return source

    def make_template(self, **vals):
        values = {
            "name": "Template",
            "database_name": unique_db_name("saas_tpl"),
            "server_id": self.server.id,
        }
        values.update(vals)
        template = self.env["saas.template"].create(values)
        self.drop_later(template.database_name)
        return template

    def make_instance(self, template, **vals):
        values = {
            "name": "Client",
            "database_name": unique_db_name("saas_inst"),
            "server_id": self.server.id,
            "template_id": template.id,
        }
        if "partner_id" not in vals:
            values["admin_email"] = "client@example.com"
        values.update(vals)
        instance = self.Instance.create(values)
        self.drop_later(instance.database_name)
        return instance

    def connect(self, db_name, pg=None):
        """A psycopg2 connection to ``db_name`` on the server's PostgreSQL, or on the one
        of ``pg`` (``remote.postgres.ConnectionParams``); close it."""
        pg = pg or self.pg
        return psycopg2.connect(
            host=pg.host,
            port=pg.port,
            user=pg.user,
            password=pg.password,
            dbname=db_name,
        )

    def query(self, db_name, sql, params=(), pg=None):
        """Rows of ``sql`` run in database ``db_name`` (on ``pg``'s PostgreSQL if given)."""
        conn = self.connect(db_name, pg)
        try:
            with conn.cursor() as cr:
                cr.execute(sql, params)
                return cr.fetchall()
        finally:
            conn.close()

    def query_commit(self, db_name, sql, params=()):
        """Run ``sql`` in database ``db_name`` and commit it."""
        conn = self.connect(db_name)
        try:
            with conn, conn.cursor() as cr:
                cr.execute(sql, params)
        finally:
            conn.close()

    def create_foreign_database(self):
        """A database on the server that no record of the manager made (dropped at the end)."""
        name = unique_db_name("saas_foreign")
        conn = self.connect("postgres")
        conn.autocommit = True
        try:
            with conn.cursor() as cr:
                cr.execute(psql.SQL("CREATE DATABASE {}").format(psql.Identifier(name)))
        finally:
            conn.close()
        self.drop_later(name)
        return name

    def config_params(self, db_name):
        return dict(self.query(db_name, "SELECT key, value FROM ir_config_parameter"))

    def module_state(self, db_name, module):
        rows = self.query(db_name, "SELECT state FROM ir_module_module WHERE name = %s", [module])
        return rows[0][0] if rows else None
