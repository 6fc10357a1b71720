"""Tours in a real browser, through the menus, on the Odoo running these tests.

As in test_provisioning, that Odoo is also the server being managed: the tours
register it by the browser's own origin, test its connection, activate it and
provision an instance on it from a real template database.
"""

import json
import os
import secrets
import shutil
import unittest
from urllib.parse import urlencode

import requests

from odoo import http, sql_db
from odoo.modules.registry import Registry
from odoo.tests import HttpCase, tagged
from odoo.tests.common import TEST_CURSOR_COOKIE_NAME
from odoo.tools import config, mute_logger

from ..remote import postgres
from .common import LOGGERS, SSH_ENV, SaasCase, self_managed_values, unique_db_name

# The executables Odoo's tour runner looks for on Linux.
BROWSERS = ("google-chrome", "chromium", "chromium-browser", "google-chrome-stable")


class SelfManagedUiCase(HttpCase, SaasCase):
    """Runs tours against the test server itself; no tests of its own."""

    def setUp(self):
        super().setUp()
        if not any(shutil.which(name) for name in BROWSERS):
            self.skipTest(
                f"no Chrome or Chromium browser on the PATH (looked for {', '.join(BROWSERS)})"
            )
        self._serve_cookieless_jsonrpc_without_database()

    def _serve_cookieless_jsonrpc_without_database(self):
        """Answer the managed server's JSON-RPC calls without this test's database.

        A real managed server is another Odoo. Here it is the test server, whose
        single database is the test's own: a call without the test cookie that
        opens it is refused while a tour runs, and would wait for the test
        cursor that the browser's request (the one making the call) holds.
        ``common.version`` and the ``db`` service need no database, so such
        calls are served as a server with several databases serves them.
        """
        get_session_and_dbname = http.Request._get_session_and_dbname

        def session_and_dbname(request):
            session, dbname = get_session_and_dbname(request)
            httprequest = request.httprequest
            test_request = TEST_CURSOR_COOKIE_NAME in httprequest.cookies
            if httprequest.path == "/jsonrpc" and not test_request:
                return session, None
            return session, dbname

        self.patch(http.Request, "_get_session_and_dbname", session_and_dbname)

    def run_tour(self, url_path, tour_name, timeout=60):
        try:
            self.start_tour(url_path, tour_name, login="admin", timeout=timeout)
        except unittest.SkipTest as exc:
            # The browser exists (checked in setUp): not running is a failure.
            self.fail(f"the browser could not run tour {tour_name}: {exc}")
        # The browser's requests wrote through their own cursors.
        self.env.invalidate_all()


@tagged("post_install", "-at_install")
class TestUiTemplate(SelfManagedUiCase):
    def test_create_database_from_the_form(self):
        server = self.make_server(
            name="Tour Template Server", master_password="tour-master-" + secrets.token_hex(4)
        )
        server.state = "active"
        cron = self.env.ref("saas_manager.ir_cron_saas_operation_run")
        triggers_before = self.env["ir.cron.trigger"].search_count([("cron_id", "=", cron.id)])
        self.run_tour(
            f"/odoo?{urlencode({'saas_server': server.name})}", "saas_manager_template_tour"
        )
        template = self.env["saas.template"].search([("database_name", "=", "tour_template_db")])
        self.assertEqual(template.server_id, server)
        self.assertEqual(template.state, "creating")
        # The button queued the work for the cron job rather than doing it in the request.
        triggers = self.env["ir.cron.trigger"].search_count([("cron_id", "=", cron.id)])
        self.assertGreater(triggers, triggers_before)


@tagged("post_install", "-at_install")
class TestUiServer(SelfManagedUiCase):
    def test_register_test_and_activate_a_server(self):
        self.run_tour("/odoo", "saas_manager_server_tour")
        server = self.Server.search([("code", "=", "tour-self")])
        self.assertEqual(len(server), 1)
        self.assertEqual(server.server_url, self.base_url())
        self.assertEqual(server.state, "active")
        self.assertEqual(server.health_status, "healthy")
        self.assertTrue(server.server_version)
        self.assertFalse(server.instance_ids)


@tagged("post_install", "-at_install", "saas_slow")
class TestUiProvisioning(SelfManagedUiCase):
    def setUp(self):
        super().setUp()
        values = self_managed_values(self.base_url())
        if values is None:
            self.skipTest(
                "no test sshd or master password: run the Odoo suite through "
                f"scripts/odoo_suite, which starts an sshd and sets {', '.join(SSH_ENV)}"
            )
        suffix = secrets.token_hex(3)
        self.server = self.make_server(name=f"This Odoo {suffix}", code="self", **values)
        self.server.action_activate()
        self.pg = self.server._pg_params()
        self.filestore_root = os.path.join(config["data_dir"], "filestore")
        self.template = self.env["saas.template"].create(
            {
                "name": f"Tour Template {suffix}",
                "database_name": unique_db_name("saas_tpl"),
                "server_id": self.server.id,
            }
        )
        self.drop_later(self.template.database_name)
        with mute_logger(*LOGGERS):
            self.assertTrue(self.template._create_database(), self.template.error)
        # Named here, typed by the tour: dropped even when the tour fails half-way.
        self.instance_db = unique_db_name("saas_inst")
        self.drop_later(self.instance_db)

    def drop_later(self, db_name):
        """Drop ``db_name`` and its filestore at the end of the test, if they exist.

        Not through Odoo's ``db.drop``: a server started with ``--database``
        knows no other database and answers False without dropping. So what it
        would do is done here: forget the registry that creating the template
        loaded in this process, close its connections, drop the database.
        """

        def drop():
            Registry.delete(db_name)
            sql_db.close_db(db_name)
            postgres.drop_database(self.pg, db_name)
            shutil.rmtree(os.path.join(self.filestore_root, db_name), ignore_errors=True)
            self.assertFalse(postgres.database_exists(self.pg, db_name))

        self.addCleanup(drop)

    def test_provision_an_instance_through_the_menus(self):
        query = urlencode(
            {
                "saas_template": self.template.name,
                "saas_server": self.server.name,
                "saas_instance_db": self.instance_db,
            }
        )
        self.run_tour(f"/odoo?{query}", "saas_manager_instance_tour", timeout=120)
        instance = self.Instance.search([("database_name", "=", self.instance_db)])
        self.assertEqual(len(instance), 1)
        self.assertEqual(instance.state, "provisioning", "the button only queued it")
        admin = self.env.ref("base.user_admin")
        self.assertEqual(instance.operation_ids.user_id, admin)
        with mute_logger(*LOGGERS):
            self.env["saas.operation"]._run_until_idle()
        self.env.invalidate_all()
        self.assertEqual(instance.state, "running", instance.error)
        # Whoever asked is told, and their open view refreshed, over the bus.
        sent = self.env["bus.bus"].search([("message", "like", "saas_manager.operation_done")])
        payloads = [json.loads(row.message)["payload"] for row in sent]
        self.assertIn(
            {
                "model": "saas.instance",
                "res_id": instance.id,
                "operation_id": instance.operation_ids.id,
            },
            payloads,
        )
        self.run_tour(f"/odoo?{query}", "saas_manager_instance_running_tour", timeout=120)
        # The customer's side: their instance's own login page answers.
        page = requests.get(f"{self.server.server_url}/web/login?db={self.instance_db}", timeout=30)
        self.assertEqual(page.status_code, 200)
        self.assertIn("oe_login_form", page.text)
        self.assertEqual(instance.server_id, self.server)
        self.assertEqual(instance.template_id, self.template)
        self.assertTrue(instance.provisioned_date)
        self.assertTrue(postgres.database_exists(self.pg, self.instance_db))
