from unittest.mock import patch

from odoo.exceptions import AccessError
from odoo.tests import new_test_user, tagged
from odoo.tools import mute_logger

from ..remote import postgres
from .common import SaasCase

SECRETS = ("ssh_password", "ssh_private_key", "db_password", "master_password")


@tagged("post_install", "-at_install")
class TestSaasServerSecurity(SaasCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.saas_user = new_test_user(
            cls.env,
            "saas_user",
            groups="base.group_user,base.group_allow_export,saas_manager.group_saas_user",
        )
        cls.saas_manager = new_test_user(
            cls.env,
            "saas_manager",
            groups="base.group_user,base.group_allow_export,saas_manager.group_saas_manager",
        )
        cls.saas_admin = new_test_user(
            cls.env, "saas_admin", groups="base.group_user,saas_manager.group_saas_admin"
        )
        cls.server = cls.make_server(
            ssh_password="ssh-pw",
            ssh_private_key="-----BEGIN OPENSSH PRIVATE KEY-----\nkey\n",
            db_password="db-pw",
            master_password="master-pw",
        )

    def test_group_implication(self):
        self.assertTrue(self.saas_admin.has_group("saas_manager.group_saas_manager"))
        self.assertTrue(self.saas_admin.has_group("saas_manager.group_saas_user"))
        self.assertTrue(self.saas_manager.has_group("saas_manager.group_saas_user"))
        self.assertFalse(self.saas_manager.has_group("saas_manager.group_saas_admin"))
        self.assertTrue(self.env.ref("base.user_admin").has_group("saas_manager.group_saas_admin"))

    @mute_logger("odoo.models", "odoo.addons.base.models.ir_model")
    def test_user_reads_only(self):
        server = self.server.with_user(self.saas_user)
        self.assertEqual(server.read(["name"])[0]["name"], self.server.name)
        with self.assertRaises(AccessError):
            server.write({"name": "renamed"})
        with self.assertRaises(AccessError):
            self.Server.with_user(self.saas_user).create(
                {"name": "x", "code": "x", "server_url": "http://x.example.com"}
            )
        with self.assertRaises(AccessError):
            server.unlink()

    @mute_logger("odoo.models", "odoo.addons.base.models.ir_model")
    def test_manager_writes_but_does_not_create_or_delete(self):
        server = self.server.with_user(self.saas_manager)
        server.write({"name": "renamed", "max_instances": 20})
        self.assertEqual(self.server.name, "renamed")
        with self.assertRaises(AccessError):
            self.Server.with_user(self.saas_manager).create(
                {"name": "x", "code": "x", "server_url": "http://x.example.com"}
            )
        with self.assertRaises(AccessError):
            server.unlink()

    def test_admin_does_everything(self):
        Server = self.Server.with_user(self.saas_admin)
        server = Server.create(
            {
                "name": "by admin",
                "code": "by-admin",
                "server_url": "http://by-admin.example.com",
                "master_password": "m",
            }
        )
        self.assertEqual(server.master_password, "m")
        server.write({"db_password": "new-db-pw"})
        self.assertEqual(self.server.with_user(self.saas_admin).db_password, "db-pw")
        self.assertIn("master_password", Server.fields_get())
        server.unlink()
        self.assertFalse(server.exists())

    @mute_logger("odoo.models", "odoo.addons.base.models.ir_model")
    def test_secrets_hidden_from_user_and_manager(self):
        for user in (self.saas_user, self.saas_manager):
            server = self.server.with_user(user)
            Server = self.Server.with_user(user)
            self.assertNotIn("master_password", server.read()[0])
            fields_get = Server.fields_get()
            for fname in SECRETS:
                with self.subTest(user=user.login, field=fname):
                    self.assertNotIn(fname, fields_get)
                    with self.assertRaises(AccessError):
                        server.read([fname])
                    with self.assertRaises(AccessError):
                        Server.search_read([("id", "=", self.server.id)], [fname])
                    with self.assertRaises(AccessError):
                        Server.search([(fname, "=", "db-pw")])
                    with self.assertRaises(AccessError):
                        Server.read_group([], [fname], [fname])
                    with self.assertRaises(AccessError):
                        server.export_data([fname])
                    with self.assertRaises(AccessError):
                        server.write({fname: "changed"})
        self.assertEqual(self.server.db_password, "db-pw")

    def test_secrets_are_not_tracked(self):
        self.server.write({"db_password": "tracked?", "master_password": "tracked?"})
        self.env.flush_all()
        bodies = " ".join(
            str(value)
            for value in self.server.message_ids.tracking_value_ids.mapped(
                lambda t: (t.old_value_char, t.new_value_char)
            )
        )
        self.assertNotIn("tracked?", bodies)
        self.assertNotIn("tracked?", " ".join(self.server.message_ids.mapped("body")))

    @mute_logger("odoo.models", "odoo.addons.base.models.ir_model")
    def test_only_admins_redirect_a_server(self):
        """Changing where secrets are sent is as sensitive as the secrets."""
        server = self.server.with_user(self.saas_manager)
        for fname, value in (
            ("server_url", "https://elsewhere.example.com"),
            ("db_host", "elsewhere.example.com"),
            ("ssh_host_key", "ssh-ed25519 AAAAelsewhere"),
            ("ip_address", "10.9.9.9"),
        ):
            with self.subTest(field=fname), self.assertRaises(AccessError):
                server.write({fname: value})
        self.assertNotEqual(self.server.db_host, "elsewhere.example.com")
        self.server.with_user(self.saas_admin).write({"db_host": "db.example.com"})
        self.assertEqual(self.server.db_host, "db.example.com")

    @mute_logger("odoo.models", "odoo.addons.base.models.ir_model")
    def test_instance_state_changes_through_actions(self):
        instance = self.make_instances(self.server, 1, state="running")
        as_manager = instance.with_user(self.saas_manager)
        with self.assertRaises(AccessError):
            as_manager.write({"state": "terminated"})
        # The database itself is not this test's: only who may suspend it.
        with patch.object(postgres, "set_connections_allowed") as suspend:
            as_manager.action_suspend()
        suspend.assert_called_once()
        self.assertEqual(instance.state, "suspended")
