"""Secrets at rest (SPEC §12) and finding 7: no secret in clear in a log line or a dump."""

import importlib.util
import logging
import os
import secrets
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path
from unittest.mock import patch

import psycopg2

from odoo import SUPERUSER_ID, api
from odoo.exceptions import UserError
from odoo.sql_db import db_connect
from odoo.tests import tagged
from odoo.tools import config

from ..models.saas_secret_mixin import KEY_OPTION, KEY_VARIABLE
from ..remote import secret_box
from .common import SaasCase

SECRET_FIELDS = ("ssh_password", "ssh_private_key", "db_password", "master_password")
MIGRATION = Path(__file__).parent.parent / "migrations" / "18.0.1.1.0" / "post-migrate.py"


def sentinel_secrets():
    """Secret values a test can search for in logs and dumps."""
    token = secrets.token_hex(6)
    return {fname: f"CLEAR-{fname}-{token}" for fname in SECRET_FIELDS}


@contextmanager
def secret_key(value):
    """Run with ``value`` as the configured key list (None: no key at all)."""
    options = dict(config.options)
    options.pop(KEY_OPTION, None)
    if value is not None:
        options[KEY_OPTION] = value
    environ = {k: v for k, v in os.environ.items() if k != KEY_VARIABLE}
    with (
        patch.dict(config.options, options, clear=True),
        patch.dict(os.environ, environ, clear=True),
    ):
        yield


class CapturingHandler(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        try:
            self.lines.append(record.getMessage())
        except Exception:
            self.lines.append(str(record.msg))


@tagged("post_install", "-at_install")
class TestSecretsAtRest(SaasCase):
    def stored(self, server, column):
        self.env.flush_all()
        self.env.cr.execute(f"SELECT {column} FROM saas_server WHERE id = %s", [server.id])  # noqa: S608
        return self.env.cr.fetchone()[0]

    def test_columns_hold_only_ciphertext(self):
        values = sentinel_secrets()
        server = self.make_server(**values)
        self.env.cr.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'saas_server'"
        )
        columns = {row[0] for row in self.env.cr.fetchall()}
        for fname, value in values.items():
            self.assertNotIn(fname, columns, "no clear column")
            cipher = self.stored(server, fname + "_encrypted")
            self.assertTrue(secret_box.is_encrypted(cipher))
            self.assertNotIn(value, cipher)
            self.assertEqual(server[fname], value, "an admin reads it back")
        self.assertEqual(server._read_secret("db_password"), values["db_password"])
        server.db_password = False
        self.assertFalse(self.stored(server, "db_password_encrypted"))
        copy = server.copy({"code": "copied", "server_url": "http://copied.example.com"})
        self.assertFalse(copy.master_password, "never copied")

    def test_failed_insert_logs_no_secret(self):
        first = self.make_server()
        values = sentinel_secrets()
        # Captured where Odoo logs the failed query, and kept from the test log
        # (mute_logger would drop the line before any handler saw it).
        handler = CapturingHandler()
        sql_logger = logging.getLogger("odoo.sql_db")
        sql_logger.addHandler(handler)
        sql_logger.propagate = False
        try:
            with self.assertRaises(psycopg2.IntegrityError), self.env.cr.savepoint():
                # Same code and URL: the INSERT fails and Odoo logs it whole.
                self.Server.create(
                    {
                        "name": "dup",
                        "code": first.code,
                        "server_url": first.server_url,
                        **values,
                    }
                )
        finally:
            sql_logger.removeHandler(handler)
            sql_logger.propagate = True
        self.assertTrue(
            any("saas_server" in line for line in handler.lines), "the failed INSERT was logged"
        )
        for value in values.values():
            self.assertFalse([line for line in handler.lines if value in line], value)

    def test_missing_key_is_said_plainly(self):
        server = self.make_server(master_password="kept-secret")
        with secret_key(None):
            with self.assertRaises(UserError) as caught:
                server._master_password()
            self.assertIn(KEY_OPTION, str(caught.exception))
            self.assertIn(KEY_VARIABLE, str(caught.exception))
            with self.assertRaises(UserError) as caught:
                server.db_password = "new-one"
            self.assertIn(KEY_OPTION, str(caught.exception))
            server.invalidate_recordset()
            self.assertFalse(server.master_password, "the admin form opens, secrets empty")
        with secret_key("not a key"), self.assertRaises(UserError) as caught:
            server._master_password()
        self.assertIn("not a valid key", str(caught.exception))
        self.assertNotIn("not a key", str(caught.exception))

    def test_rotation(self):
        old = secret_box.generate_key()
        new = secret_box.generate_key()
        with secret_key(old):
            server = self.make_server(master_password="rotate-me", db_password="and-me")
            before = self.stored(server, "master_password_encrypted")
        with secret_key(new), self.assertRaises(UserError):
            server._master_password()
        with secret_key(f"{new},{old}"):
            self.assertEqual(server._master_password(), "rotate-me", "old key still decrypts")
            self.assertGreaterEqual(self.Server._rotate_secrets(), 2)
            self.assertNotEqual(self.stored(server, "master_password_encrypted"), before)
        server.invalidate_recordset()
        with secret_key(new):
            self.assertEqual(server._master_password(), "rotate-me")
            self.assertEqual(server._read_secret("db_password"), "and-me")
        with secret_key(old), self.assertRaises(UserError):
            server._master_password()

    def test_migration_encrypts_clear_values(self):
        spec = importlib.util.spec_from_file_location("saas_manager_post_migrate", MIGRATION)
        migration = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(migration)
        server = self.make_server()
        self.env.flush_all()
        cr = self.env.cr
        cr.execute("ALTER TABLE saas_server ADD COLUMN master_password varchar")
        cr.execute("ALTER TABLE saas_server ADD COLUMN db_password varchar")
        cr.execute(
            "UPDATE saas_server SET master_password = %s, db_password = %s WHERE id = %s",
            ["clear-master", "", server.id],
        )
        with secret_key(None), self.assertRaises(Exception) as caught, cr.savepoint():
            migration.migrate(cr, "18.0.1.0.0")
        self.assertIn(KEY_OPTION, str(caught.exception))
        self.assertEqual(migration.migrate(cr, "18.0.1.0.0"), None)
        cr.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'saas_server'"
        )
        self.assertNotIn("master_password", {row[0] for row in cr.fetchall()})
        server.invalidate_recordset()
        self.assertEqual(server._master_password(), "clear-master")
        self.assertEqual(migration.encrypt_clear_columns(cr), 0, "twice changes nothing")


@tagged("post_install", "-at_install")
class TestDumpHoldsNoSecret(SaasCase):
    """A pg_dump of the manager database, with secrets committed in it."""

    def test_dump_has_no_clear_secret(self):
        pg_dump = shutil.which("pg_dump") or "/usr/lib/postgresql/15/bin/pg_dump"
        if not os.path.exists(pg_dump):
            self.skipTest("no pg_dump on this machine")
        values = sentinel_secrets()
        dbname = self.env.cr.dbname
        # Committed on a connection of its own: a dump does not see the test's transaction.
        with db_connect(dbname).cursor() as cr:
            # Never wait forever on a lock the test's own transaction holds.
            cr.execute("SET lock_timeout = '20s'")
            env = api.Environment(cr, SUPERUSER_ID, {})
            server = env["saas.server"].create(
                {
                    "name": "Dumped",
                    "code": "dumped-" + secrets.token_hex(3),
                    "server_url": "http://dumped-" + secrets.token_hex(3) + ".example.com",
                    **values,
                }
            )
            cr.commit()  # pylint: disable=invalid-commit
            server_id = server.id
        try:
            environ = dict(os.environ)
            if config["db_password"]:
                environ["PGPASSWORD"] = config["db_password"]
            argv = [pg_dump, "--no-owner", "-d", dbname]
            if config["db_host"]:
                argv += ["-h", config["db_host"]]
            if config["db_port"]:
                argv += ["-p", str(config["db_port"])]
            if config["db_user"]:
                argv += ["-U", config["db_user"]]
            dump = subprocess.run(  # noqa: S603 - pg_dump with arguments built here
                argv, capture_output=True, text=True, env=environ, check=True, timeout=300
            ).stdout
        finally:
            with db_connect(dbname).cursor() as cr:
                cr.execute("DELETE FROM saas_server WHERE id = %s", [server_id])
                cr.commit()  # pylint: disable=invalid-commit
        self.assertIn("Dumped", dump, "the dump holds the server")
        self.assertIn(secret_box.PREFIX, dump, "and its ciphertexts")
        for value in values.values():
            self.assertNotIn(value, dump)
