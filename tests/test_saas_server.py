from psycopg2 import IntegrityError

from odoo.exceptions import UserError, ValidationError
from odoo.tests import tagged
from odoo.tools import mute_logger

from .common import SaasCase


@tagged("post_install", "-at_install")
class TestSaasServerConstraints(SaasCase):
    def test_uppercase_code_refused_not_lowered(self):
        with self.assertRaisesRegex(ValidationError, "lowercase"):
            self.make_server(code="EU1")
        server = self.make_server(code="eu1")
        # Odoo's assertRaises (not assertRaisesRegex) rolls back to a savepoint,
        # as the request's transaction would be rolled back.
        with self.assertRaises(ValidationError) as caught:
            server.code = "Eu1"
        self.assertIn("lowercase", str(caught.exception))
        server.invalidate_recordset()
        self.assertEqual(server.code, "eu1")

    def test_code_with_other_characters_refused(self):
        for code in ("eu 1", "eu.1", "eu/1", "é1"):
            with self.subTest(code=code), self.assertRaises(ValidationError):
                self.make_server(code=code)

    def test_duplicate_code_refused(self):
        self.make_server(code="dup")
        with mute_logger("odoo.sql_db"), self.assertRaises(IntegrityError):
            self.make_server(code="dup")

    def test_duplicate_url_refused_even_with_trailing_slash(self):
        first = self.make_server(server_url="https://one.example.com/")
        self.assertEqual(first.server_url, "https://one.example.com")
        with mute_logger("odoo.sql_db"), self.assertRaises(IntegrityError):
            self.make_server(server_url="https://one.example.com")

    def test_url_scheme(self):
        for url in (
            "ftp://files.example.com",
            "one.example.com",
            "http://",
            "javascript:alert(1)",
            "https://admin:s3cret@one.example.com",
            "https://one.example.com/?db=x",
        ):
            with self.subTest(url=url), self.assertRaisesRegex(ValidationError, "http"):
                self.make_server(server_url=url)
        self.assertEqual(self.make_server(server_url="http://ok.example.com").state, "draft")

    def test_max_instances_positive(self):
        for value in (0, -3):
            with self.subTest(value=value), self.assertRaisesRegex(ValidationError, "above 0"):
                self.make_server(max_instances=value)

    def test_ip_address(self):
        for bad in ("300.1.1.1", "10.0.0", "not-an-ip", "::g"):
            with self.subTest(ip=bad), self.assertRaisesRegex(ValidationError, "IP address"):
                self.make_server(ip_address=bad)
        self.assertTrue(self.make_server(ip_address="10.0.0.12"))
        self.assertTrue(self.make_server(ip_address="2001:db8::1"))

    def test_ports(self):
        for fname in ("port", "ssh_port", "db_port"):
            for value in (0, 65536):
                with self.subTest(field=fname, value=value), self.assertRaises(ValidationError):
                    self.make_server(**{fname: value})

    def test_delete_with_instances_refused(self):
        server = self.make_server()
        self.make_instances(server, 1, state="terminated")
        with self.assertRaisesRegex(UserError, "still has instances"):
            server.unlink()
        self.assertTrue(server.exists())
        empty = self.make_server()
        empty.unlink()
        self.assertFalse(empty.exists())


@tagged("post_install", "-at_install")
class TestSaasServerCapacity(SaasCase):
    def test_capacity_counts_slot_holding_instances(self):
        server = self.make_server(max_instances=4)
        self.assertEqual((server.instance_count, server.available_capacity), (0, 100.0))
        self.make_instances(server, 2)
        failed = self.make_instances(server, 1, state="failed")
        self.assertEqual(server.instance_count, 2)
        self.assertEqual(server.available_capacity, 50.0)
        failed.state = "running"
        self.assertEqual(server.instance_count, 3)
        self.assertEqual(server.available_capacity, 25.0)
        server.instance_ids.write({"state": "terminated"})
        self.assertEqual(server.instance_count, 0)

    def test_capacity_never_below_zero(self):
        server = self.make_server(max_instances=3)
        self.make_instances(server, 3)
        server.max_instances = 2
        self.assertEqual(server.available_capacity, 0.0)
        self.assertEqual(server.used_capacity, 100.0)

    def test_capacity_is_stored(self):
        server = self.make_server(max_instances=5)
        self.make_instances(server, 1)
        self.env.flush_all()
        self.env.cr.execute(
            "SELECT instance_count, available_capacity FROM saas_server WHERE id = %s",
            [server.id],
        )
        self.assertEqual(self.env.cr.fetchone(), (1, 80.0))

    def test_deactivate_refused_with_instances(self):
        server = self.make_server()
        server.state = "active"
        self.make_instances(server, 1)
        with self.assertRaisesRegex(UserError, "still hosts instances"):
            server.action_deactivate()
        self.assertEqual(server.state, "active")
        server.instance_ids.state = "terminated"
        server.action_deactivate()
        self.assertEqual(server.state, "disabled")

    def test_maintenance(self):
        server = self.make_server()
        server.state = "active"
        server.action_maintenance()
        self.assertEqual(server.state, "maintenance")

    def test_view_instances_action(self):
        server = self.make_server()
        action = server.action_view_instances()
        self.assertEqual(action["res_model"], "saas.instance")
        self.assertEqual(action["domain"], [("server_id", "=", server.id)])
        self.assertEqual(action["context"]["default_server_id"], server.id)

    def test_secrets_not_copied(self):
        server = self.make_server(db_password="pg-secret", master_password="master-secret")
        copy = server.copy({"code": "copied", "server_url": "http://copied.example.com"})
        self.assertFalse(copy.db_password)
        self.assertFalse(copy.master_password)
        self.assertEqual(copy.state, "draft")
