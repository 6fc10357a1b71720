from unittest.mock import patch

from odoo import fields
from odoo.exceptions import UserError
from odoo.tests import HttpCase, tagged
from odoo.tools import mute_logger

from ..models.saas_server import SaasServer
from ..remote import health
from .common import SaasCase, closed_port_url, closed_port_urls

SERVER_LOGGER = "odoo.addons.saas_manager.models.saas_server"


@tagged("post_install", "-at_install")
class TestSaasServerHealth(HttpCase, SaasCase):
    """The Odoo running these tests is the live peer: its own /jsonrpc answers."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.live_url = cls.base_url()
        # The same live server under another name, for tests needing two live servers
        # (server URLs are unique).
        cls.live_url_2 = cls.live_url.replace("127.0.0.1", "localhost")
        cls.dead_url = closed_port_url()

    def test_test_connection_live_and_dead(self):
        live = self.make_server(server_url=self.live_url)
        self.assertTrue(live._test_connection())
        dead = self.make_server(server_url=self.dead_url)
        self.assertFalse(dead._test_connection())

    def test_activate_live_server(self):
        server = self.make_server(server_url=self.live_url)
        server.action_activate()
        self.assertEqual(server.state, "active")
        self.assertEqual(server.health_status, "healthy")
        self.assertTrue(server.last_check_date)
        self.assertTrue(server.server_version.startswith("18.0"), server.server_version)

    def test_activate_dead_server_changes_nothing(self):
        server = self.make_server(server_url=self.dead_url)
        with self.assertRaisesRegex(UserError, "cannot be activated"):
            server.action_activate()
        self.assertEqual(server.state, "draft")
        self.assertEqual(server.health_status, "unknown")
        self.assertFalse(server.last_check_date)

    def test_test_connection_notification(self):
        live = self.make_server(server_url=self.live_url)
        action = live.action_test_connection()
        self.assertEqual(action["tag"], "display_notification")
        self.assertEqual(action["params"]["type"], "success")
        self.assertIn("18.0", action["params"]["message"])
        self.assertEqual(live.state, "draft", "a connection test changes no state")
        dead = self.make_server(server_url=self.dead_url)
        action = dead.action_test_connection()
        self.assertEqual(action["params"]["type"], "danger")
        self.assertIn("127.0.0.1", action["params"]["message"])
        self.assertEqual(dead.health_status, "unknown")

    def test_check_keeps_operator_states(self):
        live = self.make_server(server_url=self.live_url)
        dead = self.make_server(server_url=self.dead_url)
        for state in ("draft", "maintenance", "disabled"):
            for server, status in ((live, "healthy"), (dead, "critical")):
                with self.subTest(state=state, server=server.server_url):
                    server.state = state
                    with mute_logger(SERVER_LOGGER):
                        server.action_check_health()
                    self.assertEqual(server.state, state)
                    self.assertEqual(server.health_status, status)

    def test_active_offline_active(self):
        server = self.make_server(server_url=self.live_url)
        server.action_activate()
        server.server_url = self.dead_url
        with mute_logger(SERVER_LOGGER):
            server.action_check_health()
        self.assertEqual((server.state, server.health_status), ("offline", "critical"))
        self.assertTrue(server.last_check_error)
        server.server_url = self.live_url
        server.action_check_health()
        self.assertEqual((server.state, server.health_status), ("active", "healthy"))
        self.assertFalse(server.last_check_error)
        history = self.env["saas.server.health.check"].search([("server_id", "=", server.id)])
        self.assertEqual(len(history), 2)
        self.assertEqual(history.mapped("online"), [True, False], "newest first")

    def test_warning_when_nearly_full(self):
        server = self.make_server(server_url=self.live_url, max_instances=10)
        server.action_activate()
        self.make_instances(server, 8)
        server.action_check_health()
        self.assertEqual(server.health_status, "healthy", "80 % used")
        self.Instance.create({"name": "ninth", "database_name": "ninth_db", "server_id": server.id})
        server.action_check_health()
        self.assertEqual(server.used_capacity, 90.0)
        self.assertEqual(server.health_status, "warning", "≥ 90 % used")

    def test_slow_answer_is_a_warning(self):
        server = self.make_server(server_url=self.live_url)
        slow = health.ProbeResult(
            url=self.live_url, online=True, version="18.0", response_time_ms=2500, error=None
        )
        self.assertEqual(server._health_status_for(slow), "warning")
        fast = health.ProbeResult(
            url=self.live_url, online=True, version="18.0", response_time_ms=30, error=None
        )
        self.assertEqual(server._health_status_for(fast), "healthy")

    def test_cron_checks_the_right_states(self):
        states = ("draft", "active", "maintenance", "offline", "disabled")
        urls = dict(zip(states, closed_port_urls(len(states)), strict=True))
        # A live maintenance server must stay in maintenance.
        urls["maintenance"] = self.live_url
        checked = {}
        for state in states:
            checked[state] = self.make_server(server_url=urls[state])
            checked[state].state = state
        with mute_logger(SERVER_LOGGER):
            self.Server.cron_check_all_servers_health()
        for state in ("active", "maintenance", "offline"):
            self.assertTrue(checked[state].last_check_date, state)
            self.assertEqual(len(checked[state].health_check_ids), 1, state)
        for state in ("draft", "disabled"):
            self.assertFalse(checked[state].last_check_date, state)
            self.assertFalse(checked[state].health_check_ids, state)
        self.assertEqual(checked["maintenance"].state, "maintenance")
        self.assertEqual(checked["maintenance"].health_status, "healthy")
        self.assertEqual(checked["active"].state, "offline")
        self.assertEqual(checked["offline"].state, "offline", "still dead")

    def test_cron_brings_offline_server_back(self):
        server = self.make_server(server_url=self.live_url)
        server.state = "offline"
        self.Server.cron_check_all_servers_health()
        self.assertEqual(server.state, "active")

    def test_cron_one_failing_server_does_not_stop_the_others(self):
        servers = (
            self.make_server(server_url=self.live_url)
            | self.make_server(server_url=self.dead_url)
            | self.make_server(server_url=self.live_url_2)
        )
        servers.write({"state": "active"})
        broken = servers[1]
        original = SaasServer._apply_health_result

        def apply_or_fail(server, result):
            if server == broken:
                raise RuntimeError("recording failed")
            return original(server, result)

        with (
            patch.object(SaasServer, "_apply_health_result", apply_or_fail),
            self.assertLogs(SERVER_LOGGER, "ERROR") as logs,
        ):
            self.Server.cron_check_all_servers_health()
        self.assertIn(broken.code, "\n".join(logs.output))
        for server in servers - broken:
            self.assertEqual(server.health_status, "healthy")
        self.assertFalse(broken.last_check_date)

    def test_cron_one_raising_probe_does_not_stop_the_others(self):
        good = self.make_server(server_url=self.live_url)
        bad = self.make_server(server_url=self.live_url + "/bad")
        (good | bad).write({"state": "active"})
        original = health.probe

        def probe_or_raise(url, **kwargs):
            if url.endswith("/bad"):
                raise RuntimeError("unexpected fault in the probe")
            return original(url, **kwargs)

        with (
            patch.object(health, "probe", probe_or_raise),
            mute_logger(SERVER_LOGGER, "odoo.addons.saas_manager.remote.health"),
        ):
            self.Server.cron_check_all_servers_health()
        self.assertEqual((good.state, good.health_status), ("active", "healthy"))
        self.assertEqual((bad.state, bad.health_status), ("offline", "critical"))

    def test_history_autovacuum_keeps_90_days(self):
        server = self.make_server(server_url=self.live_url)
        History = self.env["saas.server.health.check"]
        now = fields.Datetime.now()
        old = History.create(
            {
                "server_id": server.id,
                "check_date": fields.Datetime.subtract(now, days=91),
                "health_status": "healthy",
                "online": True,
            }
        )
        recent = History.create(
            {
                "server_id": server.id,
                "check_date": fields.Datetime.subtract(now, days=89),
                "health_status": "healthy",
                "online": True,
            }
        )
        History._gc_old_checks()
        self.assertFalse(old.exists())
        self.assertTrue(recent.exists())

    def test_logs_never_show_secrets(self):
        server = self.make_server(
            server_url=self.dead_url,
            db_password="pg-Secr3t",
            master_password="master-Secr3t",
            ssh_password="ssh-Secr3t",
        )
        server.state = "active"
        with self.assertLogs(SERVER_LOGGER, "INFO") as logs:
            server.action_check_health()
            server.action_test_connection()
        text = "\n".join(logs.output)
        self.assertIn(server.code, text)
        for secret in ("pg-Secr3t", "master-Secr3t", "ssh-Secr3t"):
            self.assertNotIn(secret, text)
        self.assertNotIn("Secr3t", server.last_check_error or "")
