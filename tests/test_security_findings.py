"""The seven findings of the hostile-manager review (issue "Security hardening").

Each test is run as a real SaaS manager (``with_user``, or over ``/jsonrpc``) or
against a managed server that lies, and asserts what the finding showed no
longer happens.
"""

import json
import os
from unittest.mock import patch

from odoo.exceptions import AccessError, UserError, ValidationError
from odoo.tests import HttpCase, new_test_user, tagged
from odoo.tools import mute_logger

from ..remote import odoo_rpc, postgres, provision
from .common import LOGGERS, SaasCase, SelfManagedCase

MANAGER_GROUPS = "base.group_user,saas_manager.group_saas_manager"


def make_manager(env, login="hostile_manager", **kwargs):
    return new_test_user(env, login, groups=MANAGER_GROUPS, **kwargs)


@tagged("post_install", "-at_install")
class TestNoAuthorizationByContext(SaasCase):
    """Findings 1, 2, 3 and the early part of 6, through the ORM as a manager."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.manager = make_manager(cls.env)
        cls.server = cls.make_server(state="active", health_status="healthy")
        cls.template = cls.env["saas.template"].create(
            {"name": "Tpl", "database_name": "findings_tpl", "server_id": cls.server.id}
        )
        cls.template.state = "ready"

    def as_manager(self, records):
        return records.with_user(self.manager)

    @mute_logger("odoo.models")
    def test_1_context_key_grants_nothing(self):
        instance = self.make_instances(self.server, 1)
        hostile = self.as_manager(instance).with_context(saas_instance_action=True)
        hostile.write({"database_name": "another_customers_db"})  # a draft: allowed
        for vals in (
            {"state": "running"},
            {"error": "x"},
            {"provisioned_date": "2026-01-01 00:00:00"},
        ):
            with self.subTest(vals=vals), self.assertRaises(AccessError):
                hostile.write(vals)
        self.assertEqual(instance.state, "draft")
        # Terminate of that draft drops nothing: no provisioning journalled anything.
        with patch.object(postgres, "drop_database") as drop:
            hostile.action_terminate()
        drop.assert_not_called()
        self.assertEqual(instance.state, "terminated")

    @mute_logger("odoo.models")
    def test_2_server_and_template_states_by_hand(self):
        draft = self.make_server()
        for vals in (
            {"state": "active"},
            {"health_status": "healthy"},
            {"last_check_date": "2026-01-01 00:00:00"},
            {"server_version": "18.0"},
        ):
            with self.subTest(vals=vals), self.assertRaises(AccessError):
                self.as_manager(draft).with_context(saas_instance_action=True).write(vals)
        self.assertEqual((draft.state, draft.health_status), ("draft", "unknown"))
        failed = self.env["saas.template"].create(
            {"name": "F", "database_name": "findings_failed", "server_id": self.server.id}
        )
        failed.state = "failed"
        with self.assertRaises(AccessError):
            self.as_manager(failed).write({"state": "ready"})
        self.assertEqual(failed.state, "failed")
        # The buttons still work for a manager.
        self.as_manager(self.server).action_maintenance()
        self.assertEqual(self.server.state, "maintenance")
        self.as_manager(failed).action_reset_to_draft()
        self.assertEqual(failed.state, "draft")

    @mute_logger("odoo.models")
    def test_3_ready_template_cannot_be_repointed(self):
        for vals in (
            {"database_name": "another_customers_db"},
            {"server_id": self.make_server().id},
        ):
            with self.subTest(vals=vals), self.assertRaises(AccessError):
                self.as_manager(self.template).write(vals)
        self.assertEqual(self.template.database_name, "findings_tpl")
        # A draft template may still be renamed by a manager, a ready one by an admin.
        draft = self.env["saas.template"].create(
            {"name": "D", "database_name": "findings_draft", "server_id": self.server.id}
        )
        self.as_manager(draft).write({"database_name": "findings_draft2"})
        self.template.write({"database_name": "findings_tpl2"})

    def test_users_cannot_press_the_buttons(self):
        user = new_test_user(
            self.env, "findings_reader", groups="base.group_user,saas_manager.group_saas_user"
        )
        instance = self.make_instances(self.server, 1)
        for records, method in (
            (self.server, "action_maintenance"),
            (self.server, "action_deactivate"),
            (self.template, "action_reset_to_draft"),
            (instance, "action_terminate"),
        ):
            with self.subTest(method=method), self.assertRaises(AccessError):
                getattr(records.with_user(user), method)()
        self.assertEqual(instance.state, "draft")

    def test_6_hostile_names_refused_before_any_remote_call(self):
        for name in (self.env.cr.dbname, "postgres", "template0", "template1", "findings_tpl"):
            with self.subTest(name=name), self.assertRaises(ValidationError):
                self.Instance.create(
                    {
                        "name": "Hostile",
                        "database_name": name,
                        "server_id": self.server.id,
                        "template_id": self.template.id,
                    }
                )

    def test_6_empty_host_key_refused_before_the_clone(self):
        self.server.write(
            {"ssh_user": "odoo", "ssh_password": "findings-ssh-pw", "ssh_host_key": False}
        )
        instance = self.make_instances(self.server, 1)
        instance.write({"template_id": self.template.id, "admin_email": "c@example.com"})
        with (
            patch.object(provision, "provision") as remote,
            patch.object(postgres, "database_exists") as exists,
            self.assertRaises(UserError) as caught,
        ):
            self.as_manager(instance).action_provision()
        self.assertIn("no SSH host key", str(caught.exception))
        remote.assert_not_called()
        exists.assert_not_called()
        self.assertEqual(instance.state, "draft")
        self.assertFalse(instance.operation_ids, "nothing queued")

    def test_host_key_validated_at_save(self):
        with self.assertRaises(ValidationError):
            self.server.ssh_host_key = "ssh-ed25519 not-base64!"
        self.server.ssh_host_key = (
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGt7Zxbnlf1Iqx6k2fCXb9yP3dsKq+2bdYtP6tNl3kQm"
        )


@tagged("post_install", "-at_install")
class TestContextOverJsonRpc(HttpCase, SaasCase):
    """Finding 1 as it was found: a crafted context sent to /jsonrpc."""

    def jsonrpc(self, service, method, *args):
        payload = {
            "jsonrpc": "2.0",
            "method": "call",
            "params": {"service": service, "method": method, "args": list(args)},
            "id": 1,
        }
        response = self.url_open(
            "/jsonrpc", data=json.dumps(payload), headers={"Content-Type": "application/json"}
        )
        return response.json()

    def test_crafted_context_over_jsonrpc(self):
        server = self.make_server(state="active")
        instance = self.make_instances(server, 1)
        make_manager(self.env, login="rpc_manager", password="rpc_manager_pw_1")
        db = self.env.cr.dbname
        uid = self.jsonrpc("common", "login", db, "rpc_manager", "rpc_manager_pw_1")["result"]
        self.assertTrue(uid)
        with mute_logger("odoo.http", "odoo.models"):
            answer = self.jsonrpc(
                "object",
                "execute_kw",
                db,
                uid,
                "rpc_manager_pw_1",
                "saas.instance",
                "write",
                [[instance.id], {"state": "running", "error": False}],
                {"context": {"saas_instance_action": True}},
            )
        self.assertIn("error", answer)
        self.assertIn("AccessError", answer["error"]["data"]["name"])
        instance.invalidate_recordset()
        self.assertEqual(instance.state, "draft")
        # The same manager may still rename the draft: that alone drops nothing.
        answer = self.jsonrpc(
            "object",
            "execute_kw",
            db,
            uid,
            "rpc_manager_pw_1",
            "saas.instance",
            "write",
            [[instance.id], {"database_name": "renamed_draft"}],
        )
        self.assertTrue(answer.get("result"), answer)


@tagged("post_install", "-at_install", "saas_slow")
class TestFindingsOnRealSystems(SelfManagedCase):
    """Findings 4 and 5 against the test Odoo's own PostgreSQL and sshd."""

    def test_4_lying_server_cannot_get_a_database_dropped(self):
        foreign = self.create_foreign_database()
        template = self.make_template(database_name=foreign)
        answers = iter([False, True, True, True])

        def lying_exists(client, db_name):
            return next(answers)

        def failing_create(client, *args, **kwargs):
            raise odoo_rpc.RpcRemoteError("database creation failed half-way")

        with (
            patch.object(odoo_rpc.OdooRpcClient, "database_exists", lying_exists),
            patch.object(odoo_rpc.OdooRpcClient, "create_database", failing_create),
            mute_logger(*LOGGERS),
        ):
            self.assertFalse(template._create_database())
        self.assertEqual(template.state, "failed")
        self.assertIn("already exists", template.error)
        self.assertTrue(postgres.database_exists(self.pg, foreign), "not ours: never dropped")

    def test_4_our_half_made_template_is_dropped(self):
        template = self.make_template()
        real_create = odoo_rpc.OdooRpcClient.create_database

        def create_then_fail(client, *args, **kwargs):
            real_create(client, *args, **kwargs)
            raise odoo_rpc.RpcRemoteError("the answer was lost")

        with (
            patch.object(odoo_rpc.OdooRpcClient, "create_database", create_then_fail),
            mute_logger(*LOGGERS),
        ):
            self.assertFalse(template._create_database())
        self.assertEqual(template.state, "failed")
        self.assertFalse(postgres.database_exists(self.pg, template.database_name))

    def test_5_failing_record_after_the_clone_leaves_nothing(self):
        template = self.make_template()
        with mute_logger(*LOGGERS):
            self.assertTrue(template._create_database(), template.error)
        self.put_template_file(template, "ab/file")
        instance = self.make_instance(template)
        real_post = type(instance).message_post

        def failing_post(record, **kwargs):
            if "Provisioned" in str(kwargs.get("body")):
                raise UserError("the chatter refused the message")  # pylint: disable=translation-required
            return real_post(record, **kwargs)

        with patch.object(type(instance), "message_post", failing_post):
            self.provision(instance)
        self.assertEqual(instance.state, "failed")
        self.assertIn("chatter refused", instance.error)
        self.assertFalse(postgres.database_exists(self.pg, instance.database_name))
        self.assertFalse(
            os.path.exists(os.path.join(self.filestore_root, instance.database_name)),
            "the copied filestore is removed too",
        )
        leftovers = [
            name
            for name in os.listdir(self.filestore_root)
            if name.startswith(f".{instance.database_name}.saas-copy-")
        ]
        self.assertEqual(leftovers, [])
        journal = instance.operation_ids.journal_ids
        self.assertEqual(set(journal.mapped("state")), {"removed"})
        # As found, a manager without an email address: the operation runs as the
        # system, so their provision works and what it made is recorded.
        manager = make_manager(self.env, login="no_email_manager", email=False)
        manager.partner_id.email = False
        other = self.make_instance(template)
        other.with_user(manager).action_provision()
        self.run_operations()
        self.assertEqual(other.state, "running", other.error)
        self.assertEqual(other.operation_ids.user_id, manager)
        self.assertEqual(
            set(other._made_by_provisioning().mapped("name")),
            {
                other.database_name,
                os.path.join(self.filestore_root, other.database_name),
                *other.operation_ids.journal_ids.filtered(
                    lambda entry: ".saas-copy-" in entry.name
                ).mapped("name"),
            },
        )

    def test_existing_database_refused_before_anything_is_made(self):
        template = self.make_template()
        template.state = "ready"
        foreign = self.create_foreign_database()
        instance = self.make_instance(template, database_name=foreign)
        with patch.object(provision, "provision") as remote:
            self.provision(instance)
        remote.assert_not_called()
        self.assertEqual(instance.state, "failed")
        self.assertIn("already exists", instance.error)
        self.assertFalse(instance.operation_ids.journal_ids, "nothing journalled, nothing made")
        alert = self.env["saas.alert"].search([("instance_id", "=", instance.id)])
        self.assertEqual(alert.mapped("kind"), ["operation_failed"], "the engine opened an alert")
        self.assertEqual(alert.state, "open")
        instance.action_terminate()
        self.assertEqual(instance.state, "terminated")
        self.assertTrue(postgres.database_exists(self.pg, foreign))
