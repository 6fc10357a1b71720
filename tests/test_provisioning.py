"""The whole path against real systems: the Odoo running these tests manages itself.

Its own JSON-RPC and master password create a template database; its own
PostgreSQL is where instances are cloned; an sshd started by scripts/odoo_suite
on 127.0.0.1 is how the filestore is copied. Every database and filestore a
test makes is removed by its cleanups.
"""

import os
import secrets
import shutil
import threading
import time
from unittest.mock import patch

import psycopg2

from odoo import SUPERUSER_ID, api
from odoo.exceptions import UserError
from odoo.sql_db import db_connect
from odoo.tests import TransactionCase, tagged
from odoo.tools import mute_logger

from ..remote import exceptions, handover, postgres, ssh, ssh_pool
from ..remote import filestore as remote_filestore
from .common import LOGGERS, SelfManagedCase


@tagged("post_install", "-at_install", "saas_slow")
class TestProvisioning(SelfManagedCase):
    # The tests that only provision from a template share one (its creation is tested
    # by test_template_then_instances).
    shared_template_key = "provisioning"

    # --- tests ---------------------------------------------------------------

    def test_template_then_instances(self):
        template = self.make_template(module_names="base_import")
        with mute_logger(*LOGGERS):
            self.assertTrue(template._create_database(), template.error)
        self.assertEqual(template.state, "ready")
        self.assertTrue(postgres.database_exists(self.pg, template.database_name))
        self.assertEqual(self.module_state(template.database_name, "base_import"), "installed")
        template_params = self.config_params(template.database_name)

        first = self.provision(self.make_instance(template))
        self.assertEqual(first.state, "running")
        self.assertTrue(first.provisioned_date)
        params = self.config_params(first.database_name)
        self.assertNotEqual(params["database.uuid"], template_params["database.uuid"])
        self.assertNotEqual(params["database.secret"], template_params["database.secret"])
        self.assertEqual(params["web.base.url"], self.server.server_url)
        self.assertEqual(self.module_state(first.database_name, "base_import"), "installed")
        source_store = os.path.join(self.filestore_root, template.database_name)
        if os.path.isdir(source_store):
            self.assertEqual(
                sorted(os.listdir(os.path.join(self.filestore_root, first.database_name))),
                sorted(os.listdir(source_store)),
            )

        second = self.provision(self.make_instance(template))
        self.assertEqual(second.state, "running")
        self.assertNotEqual(
            self.config_params(second.database_name)["database.uuid"], params["database.uuid"]
        )
        self.assertEqual(self.server.instance_count, 2)
        self.assertAlmostEqual(self.server.available_capacity, 100 / 3, places=2)
        self.assertEqual(self.Server.get_available_server(min_capacity_percent=30), self.server)
        with self.assertRaises(UserError):
            self.Server.get_available_server(min_capacity_percent=40)

        # the last of three slots is taken, then the server is full
        third = self.provision(self.make_instance(template))
        self.assertEqual(third.state, "running")
        full = self.make_instance(template)
        with self.assertRaises(UserError) as caught:
            full.action_provision()
        self.assertIn("less than 10%", str(caught.exception))
        self.assertEqual(full.state, "draft")
        self.assertFalse(postgres.database_exists(self.pg, full.database_name))

        # terminating frees the slot and removes the database and filestore
        first.action_terminate()
        self.run_operations()
        self.assertEqual(first.state, "terminated")
        self.assertFalse(postgres.database_exists(self.pg, first.database_name))
        self.assertFalse(os.path.exists(os.path.join(self.filestore_root, first.database_name)))
        self.provision(full)
        self.assertEqual(full.state, "running")

    def test_refusals_change_nothing(self):
        ready = self.make_template()
        ready.state = "ready"  # a record only: each refusal comes before any clone
        draft = self.make_template()
        other_server = self.make_server(
            server_url=self.base_url().replace("127.0.0.1", "localhost")
        )
        other_server.state = "active"
        elsewhere = self.make_template(server_id=other_server.id)
        elsewhere.state = "ready"

        cases = []
        inactive = self.make_instance(ready)
        cases.append((inactive, "not active", lambda: self.server.write({"state": "maintenance"})))
        cases.append((self.make_instance(draft), "not ready", None))
        cases.append((self.make_instance(elsewhere), "is on server", None))
        for instance, message, before in cases:
            with self.subTest(message=message):
                if before:
                    before()
                with self.assertRaises(UserError) as caught:
                    instance.action_provision()
                self.assertIn(message, str(caught.exception))
                self.assertEqual(instance.state, "draft")
                self.assertFalse(postgres.database_exists(self.pg, instance.database_name))
                self.server.state = "active"

    def test_capacity_below_ten_percent(self):
        self.server.max_instances = 20
        template = self.make_template()
        template.state = "ready"
        self.make_instances(self.server, 18, state="running")
        nineteenth = self.make_instance(template)
        # 18 others of 20: exactly 10 % left, which is enough
        nineteenth._check_can_provision()
        nineteenth.state = "running"
        twentieth = self.make_instance(template)
        with self.assertRaises(UserError) as caught:
            twentieth.action_provision()
        self.assertIn("less than 10%", str(caught.exception))

    def test_failure_after_create_leaves_nothing(self):
        template = self.shared_template()
        instance = self.make_instance(template)
        # The filestore target exists already (someone else's): the copy's own check on
        # the host refuses it before linking anything, the clone made beside it is
        # dropped, and the target is never journalled, so no undo ever removes it.
        target = os.path.join(self.filestore_root, instance.database_name)
        os.makedirs(os.path.join(target, "kept"))
        source = os.path.join(self.filestore_root, template.database_name)
        os.makedirs(source, exist_ok=True)
        self.provision(instance)
        self.assertEqual(instance.state, "failed")
        self.assertIn("exists", instance.error)
        self.assertFalse(postgres.database_exists(self.pg, instance.database_name))
        self.assertTrue(os.path.isdir(os.path.join(target, "kept")), "not ours to remove")
        journal = instance.operation_ids.journal_ids
        self.assertNotIn(target, journal.mapped("name"), "never journalled")
        self.assertEqual(set(journal.mapped("state")), {"removed"})
        self.assertFalse(
            [name for name in os.listdir(self.filestore_root) if ".saas-copy-" in name],
            "no partial copy left",
        )
        self.assertEqual(self.server.instance_count, 0, "a failed instance frees its slot")
        shutil.rmtree(target)
        instance.action_retry()
        self.run_operations()
        self.assertEqual(instance.state, "running")

    def test_one_ssh_session_and_an_invitation_that_fails_keeps_the_instance(self):
        """One SSH connection per provision (the copy checks its target on the host);
        the invitation token, issued in the remote step, never undoes a provision
        when it cannot be made."""
        template = self.shared_template()
        source = os.path.join(self.filestore_root, template.database_name)
        os.makedirs(source, exist_ok=True)
        ssh_pool.POOL.clear()  # none kept by an earlier test
        connect = ssh.SshSession._connect
        with patch.object(ssh.SshSession, "_connect", autospec=True, side_effect=connect) as made:
            first = self.provision(self.make_instance(template))
            self.assertEqual(first.state, "running", first.error)
            self.assertEqual(made.call_count, 1, "one SSH connection for the copy and its check")
            self.assertEqual(first.invitation_state, "sent")

            refused = exceptions.DatabaseError("no token for you")
            with patch.object(handover, "issue_invitation", side_effect=refused):
                second = self.provision(self.make_instance(template))
            self.assertEqual(made.call_count, 1, "the next provision reuses the connection")
        self.assertEqual(second.state, "running", second.error)
        self.assertEqual(second.invitation_state, "failed")
        self.assertIn("no token for you", second.invitation_error)
        self.assertTrue(postgres.database_exists(self.pg, second.database_name))
        self.assertTrue(os.path.isdir(os.path.join(self.filestore_root, second.database_name)))
        self.assertEqual(second.operation_ids.state, "done")

    def test_what_appears_meanwhile_is_never_removed(self):
        """A database made by someone else between the name check and the clone, a
        directory between the copy's staging and its rename: each is refused by the
        step that would have made it, marked existing in the journal, left alone."""
        template = self.shared_template()
        self.put_template_file(template)

        # Someone creates the database just after the check found the name free.
        instance = self.make_instance(template)
        name = instance.database_name
        real_exists = postgres.database_exists

        def free_then_taken(params, database):
            found = real_exists(params, database)
            conn = self.connect("postgres")
            conn.autocommit = True
            try:
                with conn.cursor() as cr:
                    cr.execute(f'CREATE DATABASE "{database}"')
            finally:
                conn.close()
            self.drop_later(database)
            return found

        with patch.object(postgres, "database_exists", free_then_taken):
            self.provision(instance)
        self.assertEqual(instance.state, "failed")
        self.assertIn("not this instance's", instance.error)
        self.assertTrue(postgres.database_exists(self.pg, name), "someone else's: not dropped")
        entry = instance.operation_ids.journal_ids.filtered(lambda e: e.kind == "database")
        self.assertEqual(entry.state, "existing")
        self.assertFalse(os.path.exists(os.path.join(self.filestore_root, name)))
        self.assertFalse([n for n in os.listdir(self.filestore_root) if ".saas-copy-" in n])
        instance.action_terminate()
        self.assertTrue(postgres.database_exists(self.pg, name), "nor by Terminate")

        # Someone creates the filestore directory between the staging and the rename.
        other = self.make_instance(template)
        target = os.path.join(self.filestore_root, other.database_name)
        real_publish = remote_filestore.StagedCopy.publish

        def appears_first(staged, timeout=60.0):
            os.makedirs(os.path.join(staged.dst, "theirs"))
            return real_publish(staged, timeout)

        with patch.object(remote_filestore.StagedCopy, "publish", appears_first):
            self.provision(other)
        self.assertEqual(other.state, "failed")
        self.assertIn("not this instance's", other.error)
        self.assertTrue(os.path.isdir(os.path.join(target, "theirs")), "someone else's: kept")
        entries = other.operation_ids.journal_ids
        self.assertEqual(entries.filtered(lambda e: e.name == target).state, "existing")
        self.assertEqual(
            set((entries - entries.filtered(lambda e: e.name == target)).mapped("state")),
            {"removed"},
        )
        self.assertFalse(postgres.database_exists(self.pg, other.database_name))
        self.assertFalse([n for n in os.listdir(self.filestore_root) if ".saas-copy-" in n])
        shutil.rmtree(target)

    def test_terminating_a_failed_instance_drops_nothing(self):
        """A provision that failed on another's database must not let Terminate drop it."""
        template = self.make_template()
        template.state = "ready"
        # A database that exists on the server but is not this instance's.
        foreign = self.create_foreign_database()
        instance = self.make_instance(template, database_name=foreign)
        self.provision(instance)
        self.assertEqual(instance.state, "failed")
        self.assertIn("exists", instance.error)
        instance.action_terminate()
        self.assertEqual(instance.state, "terminated")
        self.assertTrue(postgres.database_exists(self.pg, foreign))

    def test_template_failure_drops_the_database(self):
        template = self.make_template(module_names="no_such_module_anywhere")
        with mute_logger(*LOGGERS):
            self.assertFalse(template._create_database())
        self.assertEqual(template.state, "failed")
        self.assertIn("no_such_module_anywhere", template.error)
        self.assertFalse(postgres.database_exists(self.pg, template.database_name))

    def test_template_needs_active_server_and_master_password(self):
        template = self.make_template()
        self.server.state = "maintenance"
        with self.assertRaises(UserError) as caught:
            template.action_create_database()
        self.assertIn("not active", str(caught.exception))
        self.assertEqual(template.state, "draft")
        self.server.state = "active"
        action = template.action_create_database()
        self.assertEqual(template.state, "creating")
        self.assertEqual(action["params"]["type"], "info")
        template.state = "draft"
        wrong = self.server.master_password
        self.server.master_password = "not-the-master-" + secrets.token_hex(4)
        with mute_logger(*LOGGERS):
            self.assertFalse(template._create_database())
        self.assertEqual(template.state, "failed")
        self.assertNotIn(self.server.master_password, template.error)
        self.server.master_password = wrong
        self.assertFalse(postgres.database_exists(self.pg, template.database_name))


@tagged("post_install", "-at_install")
class TestLastSlotRace(TransactionCase):
    """Two provisions for a server's last slot, on two real database connections."""

    def setUp(self):
        super().setUp()
        self.dbname = self.env.cr.dbname
        self.cursors = []
        with self.committed_env() as env:
            server = env["saas.server"].create(
                {
                    "name": "Race",
                    "code": "race-" + secrets.token_hex(3),
                    "server_url": "http://race-" + secrets.token_hex(3) + ".example.com",
                    "max_instances": 2,
                    "state": "active",
                }
            )
            template = env["saas.template"].create(
                {"name": "Race", "database_name": "race_tpl", "server_id": server.id}
            )
            template.state = "ready"
            instances = env["saas.instance"].create(
                [
                    {
                        "name": name,
                        "database_name": name,
                        "server_id": server.id,
                        "template_id": template.id,
                        "admin_email": f"{name}@example.com",
                    }
                    for name in ("race_running", "race_a", "race_b")
                ]
            )
            instances[0].state = "running"
            self.ids = {
                "server": server.id,
                "template": template.id,
                "instances": instances.ids,
            }
        self.addCleanup(self.remove_committed)

    def committed_env(self):
        test = self

        class Committed:
            def __enter__(self):
                self.cr = db_connect(test.dbname).cursor()
                return api.Environment(self.cr, SUPERUSER_ID, {})

            def __exit__(self, exc_type, *args):
                if exc_type is None:
                    # Both connections of the race must see these records.
                    self.cr.commit()  # pylint: disable=invalid-commit
                self.cr.close()

        return Committed()

    def remove_committed(self):
        with self.committed_env() as env:
            env["saas.instance"].browse(self.ids["instances"]).unlink()
            env["saas.template"].browse(self.ids["template"]).unlink()
            env["saas.server"].browse(self.ids["server"]).unlink()

    def test_exactly_one_wins(self):
        outcome = {}
        cr_a = db_connect(self.dbname).cursor()
        cr_b = db_connect(self.dbname).cursor()
        try:
            env_a = api.Environment(cr_a, SUPERUSER_ID, {})
            instance_a = env_a["saas.instance"].browse(self.ids["instances"][1])
            instance_a._check_can_provision()
            instance_a.write({"state": "provisioning"})
            env_a.flush_all()
            cr_b.execute("SELECT pg_backend_pid()")
            pid_b = cr_b.fetchone()[0]
            # Made here: the registry's class lock is held by this (the loading) thread.
            env_b = api.Environment(cr_b, SUPERUSER_ID, {})
            instance_b = env_b["saas.instance"].browse(self.ids["instances"][2])

            def provision_b():
                # What Odoo's retrying() does for an RPC or a button: on a
                # serialization failure, roll back and run the call again. (Not
                # retrying() itself: it needs the registry lock this thread cannot
                # take while the test runs.)
                for attempt in range(3):
                    try:
                        instance_b._check_can_provision()
                        outcome[attempt] = "provisioned"
                        return
                    except psycopg2.errors.SerializationFailure:
                        outcome[attempt] = "serialization failure"
                        cr_b.rollback()
                        env_b.invalidate_all(flush=False)
                    except UserError as exc:
                        outcome[attempt] = str(exc)
                        cr_b.rollback()
                        return
                    except Exception as exc:  # reported through outcome, asserted below
                        outcome[attempt] = f"unexpected {type(exc).__name__}: {exc}"
                        cr_b.rollback()
                        return

            thread = threading.Thread(target=provision_b)
            with mute_logger("odoo.sql_db"):
                thread.start()
                # B must be waiting on A's lock before A commits.
                for _attempt in range(200):
                    # Activity statistics are a snapshot per transaction: refresh it.
                    cr_a.execute("SELECT pg_stat_clear_snapshot()")
                    cr_a.execute(
                        "SELECT wait_event_type, state, query FROM pg_stat_activity"
                        " WHERE pid = %s",
                        [pid_b],
                    )
                    activity = cr_a.fetchone()
                    if activity and activity[0] == "Lock":
                        break
                    time.sleep(0.05)
                else:
                    self.fail(f"the second provision never waited for the first: {activity}")
                cr_a.commit()  # pylint: disable=invalid-commit
                thread.join(timeout=60)
            self.assertFalse(thread.is_alive())
        finally:
            cr_a.close()
            cr_b.close()
        self.assertEqual(outcome[0], "serialization failure", outcome)
        self.assertIn("less than 10%", outcome[1])
        with self.committed_env() as env:
            states = env["saas.instance"].browse(self.ids["instances"]).mapped("state")
        self.assertEqual(states, ["running", "provisioning", "draft"])
