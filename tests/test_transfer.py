"""Moves and copies between two real servers (SPEC §9).

The source is this test Odoo's own PostgreSQL and data dir; the target a second
PostgreSQL cluster, data dir and sshd that the test command starts on loopback
(SAAS_TEST_TARGET_*), so that a move really crosses PostgreSQL servers and hosts.
"""

import os
import shutil
import tempfile
from datetime import timedelta
from unittest.mock import patch

from freezegun import freeze_time

from odoo import fields
from odoo.exceptions import AccessError, UserError
from odoo.tests import new_test_user, tagged

from ..remote import exceptions, postgres
from .common import SelfManagedCase, target_host_values, unique_db_name

TRANSFER = "odoo.addons.saas_manager.remote.transfer"


@tagged("post_install", "-at_install")
class TestTransfer(SelfManagedCase):
    def setUp(self):
        super().setUp()
        values = target_host_values(self.base_url())
        if values is None:
            self.skipTest("no second host: run the Odoo suite through scripts/saas.py suite")
        self.env["ir.config_parameter"].sudo().set_param(
            "saas_manager.operation_retry_delay_s", "0"
        )
        self.target = self.make_server(name="Target host", code="target", **values)
        self.target.action_activate()
        self.target_pg = self.target._pg_params()
        self.target_root = os.path.join(values["data_dir"], "filestore")

    # --- helpers ---------------------------------------------------------------

    def drop_on_target_later(self, db_name):
        def drop():
            postgres.drop_database(self.target_pg, db_name)
            shutil.rmtree(os.path.join(self.target_root, db_name), ignore_errors=True)

        self.addCleanup(drop)

    def target_query(self, db_name, sql, params=()):
        return self.query(db_name, sql, params, pg=self.target_pg)

    # (template database, its copy on the target, both hosts' connection params):
    # made by the first test that needs them, adopted by the next, dropped at the end.
    _made = None

    @classmethod
    def tearDownClass(cls):
        if cls._made:
            template_db, copy_db, source_pg, target_pg, roots = cls._made
            postgres.drop_database(source_pg, template_db)
            postgres.drop_database(target_pg, copy_db)
            for root, db in zip(roots, (template_db, copy_db), strict=True):
                shutil.rmtree(os.path.join(root, db), ignore_errors=True)
            cls._made = None
        super().tearDownClass()

    def ready_templates(self):
        """A ready template here and its copy on the target (the copy made by the wizard)."""
        Template = self.env["saas.template"]
        if type(self)._made:
            template_db, copy_db = type(self)._made[:2]
            template = Template.create(
                {"name": "Transfer template", "database_name": template_db,
                 "server_id": self.server.id}
            )  # fmt: skip
            Template.create(
                {"name": "Its copy", "database_name": copy_db, "server_id": self.target.id,
                 "copied_from_id": template.id}
            )  # fmt: skip
            (template | template.search([("copied_from_id", "=", template.id)])).sudo().write(
                {"state": "ready"}
            )
            return template
        template = Template.create(
            {"name": "Transfer template", "database_name": unique_db_name("saas_tpl"),
             "server_id": self.server.id}
        )  # fmt: skip
        copy_db = unique_db_name("saas_tplcopy")
        type(self)._made = (template.database_name, copy_db, self.pg, self.target_pg,
                            (self.filestore_root, self.target_root))  # fmt: skip
        self.assertTrue(template._create_database(), template.error)
        action = (
            self.env["saas.instance.transfer"]
            .create(
                {
                    "template_id": template.id,
                    "mode": "copy",
                    "target_server_id": self.target.id,
                    "database_name": copy_db,
                }
            )
            .action_start()
        )
        self.assertEqual(action["params"]["type"], "info", action)
        self.run_operations()
        template_copy = Template.search([("copied_from_id", "=", template.id)])
        self.assertEqual(
            (template_copy.state, template_copy.server_id), ("ready", self.target),
            template_copy.error,
        )  # fmt: skip
        return template

    def ready_instance(self):
        """A running instance on this Odoo, its template ready here and on the target."""
        template = self.ready_templates()
        instance = self.make_instance(template, send_invitation=False)
        self.drop_on_target_later(instance.database_name)
        self.provision(instance)
        self.assertEqual(instance.state, "running", instance.error)
        return instance

    def add_attachment(self, db, name="zz/zz0123456789abcdef", data=b"attached bytes"):
        path = os.path.join(self.filestore_root, db, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(data)
        self.query_commit(
            db,
            "INSERT INTO ir_attachment (name, type, store_fname, file_size, mimetype) "
            "VALUES ('moved.txt', 'binary', %s, %s, 'text/plain')",
            [name, len(data)],
        )

    def start(self, instance, **vals):
        values = {"instance_id": instance.id, "mode": "move", "target_server_id": self.target.id}
        values.update(vals)
        return self.env["saas.instance.transfer"].create(values).action_start()

    def database_state(self, pg_query, db):
        rows = pg_query(
            "postgres",
            "SELECT d.datallowconn, coalesce(s.setconfig::text, '') FROM pg_database d "
            "LEFT JOIN pg_db_role_setting s ON s.setdatabase = d.oid AND s.setrole = 0 "
            "WHERE d.datname = %s",
            [db],
        )
        if not rows:
            return None
        return {"allows": rows[0][0], "read_only": "default_transaction_read_only=on" in rows[0][1]}

    # --- tests ---------------------------------------------------------------

    def test_move_then_copy_back_then_source_removed(self):  # noqa: PLR0915 - one setup
        backup_dir = tempfile.mkdtemp(prefix="saas-transfer-backups-")
        self.addCleanup(shutil.rmtree, backup_dir, ignore_errors=True)
        self.env["saas.backup.storage"].create(
            {"name": "Local", "kind": "local", "path": backup_dir, "is_default": True}
        )
        instance = self.ready_instance()
        db = instance.database_name
        self.add_attachment(db)
        partners = self.query(db, "SELECT count(*) FROM res_partner")[0][0]
        source_files = sorted(
            os.path.relpath(os.path.join(root, name), os.path.join(self.filestore_root, db))
            for root, _dirs, names in os.walk(os.path.join(self.filestore_root, db))
            for name in names
        )

        action = self.start(instance)
        self.assertEqual(action["params"]["type"], "info", action)
        operation = instance.running_operation_id
        self.assertEqual((operation.kind, operation.state), ("transfer", "queued"))
        self.run_operations()

        self.assertEqual(operation.state, "done", operation.error)
        self.assertEqual(instance.server_id, self.target)
        self.assertEqual(instance.moved_from_server_id, self.server)
        self.assertEqual(instance.state, "running")
        self.assertIn(self.target.server_url, instance.url)
        # The data is on the target, writable, at the target's URL.
        self.assertEqual(self.target_query(db, "SELECT count(*) FROM res_partner")[0][0], partners)
        base_url = "SELECT value FROM ir_config_parameter WHERE key = 'web.base.url'"
        self.assertEqual(self.target_query(db, base_url), [(self.target.server_url,)])
        self.assertEqual(
            self.database_state(self.target_query, db), {"allows": True, "read_only": False}
        )
        target_files = sorted(
            os.path.relpath(os.path.join(root, name), os.path.join(self.target_root, db))
            for root, _dirs, names in os.walk(os.path.join(self.target_root, db))
            for name in names
        )
        self.assertEqual(target_files, source_files)
        self.assertIn("zz/zz0123456789abcdef", target_files)
        # The source copy is closed and read-only, kept for the way back.
        self.assertEqual(self.database_state(self.query, db), {"allows": False, "read_only": True})
        # The downtime is the frozen part only, and recorded.
        self.assertGreater(operation.downtime_s, 0)
        self.assertLess(operation.downtime_s, operation.duration_s)
        backup = operation.backup_id
        self.assertEqual((backup.kind, backup.state), ("pre_transfer", "done"), backup.error)
        steps = operation.journal_ids.mapped(
            lambda entry: (entry.kind, entry.server_id, entry.state)
        )
        self.assertIn(("database", self.target, "kept"), steps)
        self.assertIn(("read_only", self.server, "kept"), steps)
        # A worker killed after the switch was committed: its retry only closes the source.
        postgres.set_connections_allowed(self.pg, db, True)
        retry = self.env["saas.operation"].create(
            {"kind": "transfer", "instance_id": instance.id, "server_id": self.server.id,
             "target_server_id": self.target.id, "attempt": 1}
        )  # fmt: skip
        self.run_operations()
        self.assertEqual(retry.state, "done", retry.error)
        self.assertEqual(instance.server_id, self.target)
        self.assertEqual(self.database_state(self.query, db), {"allows": False, "read_only": True})

        # A staging copy of the moved instance, back on this Odoo's server, neutralised.
        copy_db = unique_db_name("saas_staging")
        self.drop_later(copy_db)
        action = self.start(
            instance, mode="copy", target_server_id=self.server.id, name="Staging",
            database_name=copy_db,
        )  # fmt: skip
        copy = self.Instance.search([("copied_from_id", "=", instance.id)])
        self.assertEqual(copy.state, "provisioning")
        self.run_operations()
        self.assertEqual((copy.state, copy.server_id), ("running", self.server), copy.error)
        params = self.config_params(copy_db)
        source_params = dict(self.target_query(db, "SELECT key, value FROM ir_config_parameter"))
        self.assertNotEqual(params["database.uuid"], source_params["database.uuid"])
        self.assertEqual(params.get("database.is_neutralized"), "true")
        # Odoo's neutralisation leaves only its autovacuum job active.
        active_crons = "SELECT count(*) FROM ir_cron WHERE active"
        self.assertEqual(self.query(copy_db, active_crons), [(1,)])
        self.assertGreater(self.target_query(db, active_crons)[0][0], 1)
        self.assertTrue(os.path.exists(
            os.path.join(self.filestore_root, copy_db, "zz/zz0123456789abcdef")
        ))  # fmt: skip
        # The source of a copy keeps running, never frozen.
        self.assertEqual(
            self.database_state(self.target_query, db), {"allows": True, "read_only": False}
        )
        self.assertNotIn("database.is_neutralized", source_params)

        # After keep_moved_days the cron removes the copy the move left here.
        later = fields.Datetime.now() + timedelta(days=self.server.keep_moved_days, hours=1)
        with freeze_time(later):
            self.env["saas.instance"]._cron_drop_moved_sources()
        self.run_operations()
        self.assertIsNone(self.database_state(self.query, db))
        self.assertFalse(os.path.exists(os.path.join(self.filestore_root, db)))
        self.assertFalse(instance.moved_from_server_id)
        # Terminate drops what is on the target now.
        instance.with_context(saas_skip_backup=True).action_terminate()
        self.run_operations()
        self.assertEqual(instance.state, "terminated")
        self.assertEqual(self.target_query("postgres", "SELECT count(*) FROM pg_database "
                                           "WHERE datname = %s", [db]), [(0,)])  # fmt: skip

    def test_a_failure_at_any_step_before_the_switch_leaves_the_source_running(self):  # noqa: PLR0915
        instance = self.ready_instance()
        db = instance.database_name
        real_copy = __import__(TRANSFER, fromlist=["copy_pass"]).copy_pass
        calls = {"copy": 0}

        def second_copy_fails(*args, **kwargs):
            calls["copy"] += 1
            if calls["copy"] == 2:
                raise exceptions.InvalidInput("injected: the final copy failed")
            return real_copy(*args, **kwargs)

        def fails(what):
            def broken(*_args, **_kwargs):
                raise exceptions.InvalidInput(f"injected: {what} failed")

            return broken

        injections = [
            ("first copy", f"{TRANSFER}.copy_pass", fails("the first copy")),
            ("freeze", "odoo.addons.saas_manager.remote.postgres.set_read_only", None),
            ("final copy", f"{TRANSFER}.copy_pass", second_copy_fails),
            ("verify", f"{TRANSFER}.verify", fails("the verification")),
            ("base url", f"{TRANSFER}.set_base_url", fails("the URL")),
        ]
        real_freeze = postgres.set_read_only

        def freeze_then_fail(params, name, read_only):
            real_freeze(params, name, read_only)
            if read_only:
                raise exceptions.InvalidInput("injected: failed just after freezing")

        for label, target, replacement in injections:
            calls["copy"] = 0
            with self.subTest(step=label):
                self.start(instance)
                operation = instance.running_operation_id
                with patch(target, replacement or freeze_then_fail):
                    self.run_operations()
                self.assertEqual(operation.state, "failed")
                self.assertIn("injected", operation.error)
                self.assertEqual((instance.server_id, instance.state), (self.server, "running"))
                # The source is whole and writable again; nothing is left on the target.
                self.assertEqual(
                    self.database_state(self.query, db), {"allows": True, "read_only": False}
                )
                self.query_commit(db, "UPDATE res_partner SET write_date = now() WHERE id = 1")
                self.assertIsNone(self.database_state(self.target_query, db))
                self.assertFalse(os.path.exists(os.path.join(self.target_root, db)))
                self.assertEqual(
                    set(operation.journal_ids.mapped("state")) - {"removed"}, set(), label
                )
        # A suspended instance moves too, and stays suspended on the target.
        instance.action_suspend()
        self.start(instance)
        operation = instance.running_operation_id
        self.run_operations()
        self.assertEqual(operation.state, "done", operation.error)
        self.assertEqual((instance.server_id, instance.state), (self.target, "suspended"))
        self.assertEqual(operation.downtime_s, 0.0)
        self.assertEqual(
            self.database_state(self.target_query, db), {"allows": False, "read_only": False}
        )
        self.assertEqual(self.database_state(self.query, db), {"allows": False, "read_only": True})
        instance.action_resume()
        self.assertEqual(self.database_state(self.target_query, db)["allows"], True)
        instance.action_drop_moved_source()
        self.run_operations()
        self.assertIsNone(self.database_state(self.query, db))
        # And back to this Odoo's server, where the target filling up during the copy
        # (after the checks) stops it before the switch.
        self.target, target_server = self.server, self.target
        self.start(instance)
        operation = instance.running_operation_id
        self.make_instances(self.target, self.target.max_instances, state="running")
        with patch.object(type(self.target), "_check_can_receive", lambda server, source: None):
            self.run_operations()
        self.assertEqual(operation.state, "failed")
        self.assertIn("filled up", operation.error)
        self.assertEqual(instance.server_id, target_server)
        self.assertIsNone(self.database_state(self.query, db))
        self.assertEqual(
            self.database_state(self.target_query, db), {"allows": True, "read_only": False}
        )

    def test_refusals_change_nothing(self):
        instance = self.make_instances(self.server, 1, state="running")
        Transfer = self.env["saas.instance.transfer"]
        Operation = self.env["saas.operation"]
        before = Operation.search_count([])

        def refused(pattern, **vals):
            values = {
                "instance_id": instance.id,
                "mode": "move",
                "target_server_id": self.target.id,
            }
            values.update(vals)
            with self.assertRaisesRegex(UserError, pattern):
                Transfer.create(values).action_start()

        refused("already on", target_server_id=self.server.id)
        self.target.action_maintenance()
        refused("is Maintenance")
        self.target.sudo().write({"state": "active", "server_version": "17.0"})
        refused("same major version")
        self.target.sudo().write({"server_version": "18.0"})
        self.server.sudo().server_version = "18.0+e"
        self.make_instances(self.target, self.target.max_instances, state="running")
        refused("is full")
        draft = self.make_instances(self.server, 1)
        refused("only a running or suspended", instance_id=draft.id)
        suspended = self.make_instances(self.server, 1, state="suspended")
        refused("resume it to copy it", instance_id=suspended.id, mode="copy", name="Copy",
                database_name=unique_db_name("saas_copy"))  # fmt: skip
        self.assertEqual(Operation.search_count([]), before)
        # No context moves an instance by hand, not even a manager's.
        manager = new_test_user(
            self.env, "transfer_manager", groups="base.group_user,saas_manager.group_saas_manager"
        )
        with self.assertRaisesRegex(UserError, "cannot change once it is provisioned"):
            instance.with_user(manager).with_context(saas_transfer_switch=True).write(
                {"server_id": self.target.id}
            )
        # A user who is not a SaaS manager cannot start one.
        user = new_test_user(self.env, "transfer_user", groups="base.group_user")
        with self.assertRaises(AccessError):
            Transfer.with_user(user).create(
                {"instance_id": instance.id, "mode": "move", "target_server_id": self.target.id}
            ).action_start()
        # Pressing twice queues one operation.
        other = self.make_server(
            **dict(
                target_host_values(self.base_url()), code="third", server_url="http://third.test"
            )
        )
        other.sudo().write({"state": "active", "server_version": "18.0"})
        self.start(instance, target_server_id=other.id)
        with self.assertRaisesRegex(UserError, "operation in progress"):
            self.start(instance, target_server_id=other.id)
        self.assertEqual(Operation.search_count([]), before + 1)
