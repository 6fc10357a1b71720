import os
import shutil
import tempfile
from contextlib import contextmanager
from datetime import datetime, timedelta
from unittest.mock import patch

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from freezegun import freeze_time

from odoo.exceptions import UserError
from odoo.tests import tagged

from ..remote import exceptions
from .common import SelfManagedCase

MARKER = "saas.test.marker"
SET_IDENTITY = "odoo.addons.saas_manager.remote.restore._set_identity"


def flip_byte(data, offset):
    """``data`` with the byte at ``offset`` inverted."""
    return data[:offset] + bytes([data[offset] ^ 0xFF]) + data[offset + 1 :]


class BackupCase(SelfManagedCase):
    """What the backup tests share: a running instance with a marker and an attached
    file, backups through the queue, restores through the wizard. No tests here (it
    is imported by other test modules). Its classes share one template, made by the
    first test that needs it (TestBackupStorages and TestBackups run one after the
    other)."""

    shared_template_key = "backups"

    def setUp(self):
        super().setUp()
        self.env["ir.config_parameter"].sudo().set_param(
            "saas_manager.operation_retry_delay_s", "0"
        )
        self.Backup = self.env["saas.backup"]
        self.Restore = self.env["saas.backup.restore"]

    def temp_dir(self, prefix):
        path = tempfile.mkdtemp(prefix=prefix)
        self.addCleanup(shutil.rmtree, path, ignore_errors=True)
        return path

    def ready_instance(self):
        """A running instance, provisioned from the backup classes' shared template."""
        template = self.shared_template(name="Backup template")
        instance = self.make_instance(template, send_invitation=False)
        self.provision(instance)
        self.assertEqual(instance.state, "running", instance.error)
        return instance

    def set_marker(self, db, value):
        self.query_commit(
            db,
            "INSERT INTO ir_config_parameter (key, value) VALUES (%s, %s) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            [MARKER, value],
        )

    def marker(self, db):
        return self.config_params(db).get(MARKER)

    def add_attachment(self, db):
        """A file in the instance's filestore and its ir_attachment row."""
        store_fname = "zz/zz0123456789abcdef"
        path = os.path.join(self.filestore_root, db, store_fname)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(b"attached bytes")
        self.query_commit(
            db,
            "INSERT INTO ir_attachment (name, type, store_fname, file_size, mimetype) "
            "VALUES ('marker.txt', 'binary', %s, 14, 'text/plain')",
            [store_fname],
        )
        return store_fname

    def marked_instance(self, marker="backed up"):
        """A running instance with ``marker`` set and an attachment; ``(it, store_fname)``."""
        instance = self.ready_instance()
        self.set_marker(instance.database_name, marker)
        return instance, self.add_attachment(instance.database_name)

    def back_up(self, instance):
        """Press Backup on ``instance``, run the queue; its newest backup."""
        action = instance.action_backup()
        self.assertEqual(action["params"]["type"], "info", action)
        self.run_operations()
        return self.Backup.search([("instance_id", "=", instance.id)], limit=1)

    def databases_like(self, pattern):
        return [row[0] for row in self.query("postgres", "SELECT datname FROM pg_database "
                                             "WHERE datname LIKE %s", [pattern])]  # fmt: skip

    def restore_as_new(self, backup, new_db, name="Restored copy", server=None):
        """Restore ``backup`` as a new instance through the wizard, run the queue."""
        self.drop_later(new_db)
        self.Restore.create(
            {"backup_id": backup.id, "mode": "new", "server_id": (server or self.server).id,
             "name": name, "database_name": new_db}
        ).action_confirm()  # fmt: skip
        self.run_operations()
        return self.Instance.search([("database_name", "=", new_db)])

    def restore_in_place(self, backup):
        self.Restore.create({"backup_id": backup.id, "mode": "in_place"}).action_confirm()
        self.run_operations()

    def assert_restored(self, source, copy, store_fname, marker="backed up"):
        """``copy`` runs with the marker, the attachment's file and a new identity."""
        new_db = copy.database_name
        self.assertEqual(copy.state, "running", copy.error)
        self.assertEqual(self.marker(new_db), marker)
        self.assertTrue(os.path.isfile(os.path.join(self.filestore_root, new_db, store_fname)))
        rows = self.query(new_db, "SELECT count(*) FROM ir_attachment WHERE store_fname = %s",
                          [store_fname])  # fmt: skip
        self.assertEqual(rows[0][0], 1)
        self.assertNotEqual(
            self.config_params(new_db)["database.uuid"],
            self.config_params(source.database_name)["database.uuid"],
        )

    def assert_foreign_targets_left_alone(self, backup, db):
        """A database, then a filestore directory, of the new instance's name on the
        server that are someone else's: the restore refuses each, and never drops or
        removes it (its journal entry is marked existing)."""
        foreign = self.create_foreign_database()
        self.query_commit(foreign, "CREATE TABLE theirs (x int)")
        clash = self.restore_as_new(backup, foreign, name="Foreign name")
        self.assertEqual(clash.state, "failed")
        self.assertIn("already exists", clash.error)
        self.assertEqual(self.query(foreign, "SELECT count(*) FROM theirs"), [(0,)])
        entries = (
            self.env["saas.operation"]
            .search(
                [("kind", "=", "restore"), ("backup_id", "=", backup.id)], order="id desc", limit=1
            )
            .journal_ids
        )
        self.assertEqual(
            entries.filtered(lambda e: e.name == foreign).state,
            "existing",
            entries.mapped(lambda e: (e.kind, e.name, e.state)),
        )
        theirs_dir = os.path.join(self.filestore_root, f"{db}_dir")
        os.makedirs(os.path.join(theirs_dir, "theirs"))
        self.addCleanup(shutil.rmtree, theirs_dir, True)
        clash_dir = self.restore_as_new(backup, f"{db}_dir", name="Foreign directory")
        self.assertEqual(clash_dir.state, "failed")
        self.assertTrue(os.path.isdir(os.path.join(theirs_dir, "theirs")))
        self.assertFalse(self.databases_like(f"{db}_dir"))

    def assert_corrupted_refused(self, backup, new_db):
        """A restore of a corrupted object fails on its sha256; nothing is made."""
        doomed = self.restore_as_new(backup, new_db, name="Corrupted copy")
        self.assertEqual(doomed.state, "failed")
        self.assertIn("corrupted", doomed.error)
        operation = backup.operation_ids.filtered(
            lambda op: op.kind == "restore" and op.instance_id == doomed
        )
        # A permanent refusal: one attempt, not retried.
        self.assertEqual((operation.state, operation.attempt), ("failed", 1))
        self.assertFalse(self.databases_like(new_db))
        self.assertFalse(os.path.exists(os.path.join(self.filestore_root, new_db)))

    def sftp_storage(self, base_path, **vals):
        """An SFTP storage on the suite's sshd (key login, its host key pinned)."""
        with open(os.environ["SAAS_TEST_SSH_KEY_FILE"]) as key_file:
            private_key = key_file.read()
        values = {
            "name": "SFTP",
            "kind": "sftp",
            "sftp_host": "127.0.0.1",
            "sftp_port": int(os.environ["SAAS_TEST_SSH_PORT"]),
            "sftp_user": os.environ["SAAS_TEST_SSH_USER"],
            "sftp_private_key": private_key,
            "sftp_host_key": self.server.ssh_host_key,
            "base_path": base_path,
        }
        values.update(vals)
        return self.env["saas.backup.storage"].create(values)

    @contextmanager
    def failing_identity_step(self):
        """Restores fail at their identity step, after the database was loaded.

        InvalidInput is permanent: the operation fails at its first attempt (a
        transient error would be retried, each attempt undone the same way).
        """
        with patch(SET_IDENTITY, side_effect=exceptions.InvalidInput("injected failure")):
            yield


@tagged("post_install", "-at_install")
class TestBackups(BackupCase):
    def setUp(self):
        super().setUp()
        self.backup_dir = self.temp_dir("saas-backups-")
        self.storage = self.env["saas.backup.storage"].create(
            {"name": "Local", "kind": "local", "path": self.backup_dir, "is_default": True}
        )

    def test_backup_verify_restore_both_ways(self):
        instance, store_fname = self.marked_instance()
        db = instance.database_name

        # A manual backup through the queue: the object is where the record says.
        backup = self.back_up(instance)
        self.assertEqual(backup.state, "done", backup.error)
        self.assertEqual(backup.kind, "manual")
        path = os.path.join(self.backup_dir, backup.location)
        self.assertEqual(os.path.getsize(path), backup.size)
        self.assertRegex(backup.sha256, r"^[0-9a-f]{64}$")
        self.assertIn("base", backup.modules.split(","))
        self.assertEqual(instance.backup_count, 1)

        # Verify: the sha256 and a scratch restore, dropped afterwards.
        backup.action_verify()
        self.run_operations()
        self.assertTrue(backup.verified_date, backup.verify_error)
        self.assertFalse(backup.verify_error)
        self.assertFalse(self.databases_like("saas_verify_%"))

        # Restore as a new instance: the data, the attachment's file, a new identity.
        copy = self.restore_as_new(backup, f"{db}_copy")
        self.assert_restored(instance, copy, store_fname)

        # Restore in place: a safety backup first, suspended meanwhile, data put back.
        self.set_marker(db, "changed since")
        uuid_before = self.config_params(db)["database.uuid"]
        self.restore_in_place(backup)
        safety = self.Backup.search(
            [("instance_id", "=", instance.id), ("kind", "=", "pre_restore")]
        )
        self.assertEqual(safety.state, "done", safety.error)
        self.assertEqual(instance.state, "running", instance.error)
        self.assertEqual(self.marker(db), "backed up")
        self.assertEqual(self.config_params(db)["database.uuid"], uuid_before)
        self.assertFalse(self.databases_like(f"{db[:40]}_rst_%"))
        self.assertFalse(self.databases_like(f"{db[:40]}_old_%"))
        self.assertTrue(os.path.isfile(os.path.join(self.filestore_root, db, store_fname)))

        # A flipped byte in the storage is found.
        with open(path, "r+b") as handle:
            data = handle.read()
            handle.seek(0)
            handle.write(flip_byte(data, backup.size // 2))
        backup.action_verify()
        self.run_operations()
        self.assertIn("corrupted", backup.verify_error)
        self.assert_corrupted_refused(backup, f"{db}_bad")

        # A suspended instance is backed up, and stays suspended.
        instance.action_suspend()
        suspended_backup = self.back_up(instance)
        self.assertEqual(suspended_backup.state, "done", suspended_backup.error)
        self.assertFalse(self.query("postgres", "SELECT datallowconn FROM pg_database "
                                    "WHERE datname = %s", [db])[0][0])  # fmt: skip

        # Terminate takes a pre_terminate backup, then terminates.
        instance.action_terminate()
        self.run_operations()
        last = self.Backup.search([("instance_id", "=", instance.id)], limit=1)
        self.assertEqual((last.kind, last.state), ("pre_terminate", "done"), last.error)
        self.assertEqual(instance.state, "terminated", instance.error)
        self.assertFalse(self.databases_like(db))

    def test_failures_leave_nothing_behind(self):
        instance = self.ready_instance()
        db = instance.database_name
        self.set_marker(db, "original")
        backup = self.back_up(instance)
        self.assertEqual(backup.state, "done", backup.error)

        # A restore that fails at its identity step: no half-made database, original
        # untouched and running again.
        self.set_marker(db, "live data")
        with self.failing_identity_step():
            self.restore_in_place(backup)
        self.assertEqual(instance.state, "running")
        self.assertEqual(self.marker(db), "live data")
        self.assertFalse(self.databases_like(f"{db[:40]}_rst_%"))
        operation = backup.operation_ids.filtered(lambda op: op.kind == "restore")
        self.assertEqual((operation.state, operation.attempt), ("failed", 1))
        self.assertIn("injected failure", operation.error)

        # As a new instance too: the instance failed, its database does not exist.
        new_db = f"{db}_new"
        with self.failing_identity_step():
            doomed = self.restore_as_new(backup, new_db, name="Doomed")
        self.assertEqual(doomed.state, "failed")
        self.assertFalse(self.databases_like(new_db))
        self.assertFalse(os.path.exists(os.path.join(self.filestore_root, new_db)))

        self.assert_foreign_targets_left_alone(backup, db)

        # A full target server is refused before anything is made, counted as a
        # provision counts (the failed instance above does not take a slot).
        self.server.max_instances = 1
        with self.assertRaisesRegex(UserError, "capacity left"):
            self.restore_as_new(backup, f"{db}_full", name="No room")
        self.assertFalse(self.Instance.search([("name", "=", "No room")]))
        self.assertFalse(self.databases_like(f"{db}_full"))
        self.server.max_instances = 3

        # A server lacking a module of the backup is refused before anything is made.
        # (Its template, shared with the other backup tests, has it back afterwards.)
        template_db = backup.instance_id.template_id.database_name
        rename = "UPDATE ir_module_module SET name = %s WHERE name = %s"
        self.query_commit(template_db, rename, ["saas_test_hidden_auth_signup", "auth_signup"])
        self.addCleanup(
            self.query_commit, template_db, rename, ["auth_signup", "saas_test_hidden_auth_signup"]
        )
        with self.assertRaisesRegex(UserError, "auth_signup"):
            self.restore_as_new(backup, f"{db}_ref", name="Refused")
        self.assertFalse(self.Instance.search([("name", "=", "Refused")]))

        # SFTP storage refusing the credentials (a key the sshd does not know).
        wrong_key = ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        sftp = self.sftp_storage(
            self.backup_dir, name="SFTP wrong key", sftp_private_key=wrong_key.decode()
        )
        notification = sftp.action_test()
        self.assertEqual(notification["params"]["type"], "danger")
        self.assertNotIn("PRIVATE KEY", notification["params"]["message"])
        refused = self.Backup._start(instance, "manual", storage=sftp)
        self.run_operations()
        self.assertEqual(refused.state, "failed")
        self.assertTrue(refused.error)
        self.assertNotIn("PRIVATE KEY", refused.error)
        self.assertEqual(instance.state, "running")
        self.assertEqual(self.storage.action_test()["params"]["type"], "success")

    def test_retention_and_schedule(self):
        """A simulated year of daily backups; expiring deletes the stored objects."""
        plan = self.env["saas.plan"].create({"name": "Backed up", "backup_hour": 3})
        instance = self.Instance.create(
            {"name": "Year", "database_name": "saas_year_client", "server_id": self.server.id,
             "plan_id": plan.id, "state": "running"}
        )  # fmt: skip
        start = datetime(2024, 1, 1, 3, 0)
        records = self.Backup.sudo().create(
            [
                {"instance_id": instance.id, "storage_id": self.storage.id, "state": "done",
                 "kind": "scheduled", "started_date": start + timedelta(days=day),
                 "location": f"saas_year_client/b{day:03d}.zip"}
                for day in range(366)
            ]
        )  # fmt: skip
        for record in records[:3] + records[-1:]:
            path = os.path.join(self.backup_dir, record.location)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as handle:
                handle.write(b"zip")
        with freeze_time(start + timedelta(days=366)):
            self.Backup._cron_retention()
        kept = records.filtered(lambda rec: rec.state == "done")
        self.assertLessEqual(len(kept), 7 + 4 + 12)
        self.assertGreaterEqual(len(kept), 12)
        self.assertIn(records[-1], kept)
        for record in records[:3]:
            # Early January 2024: only the month's newest is kept, the rest expired.
            self.assertEqual(record.state, "expired")
            self.assertFalse(os.path.exists(os.path.join(self.backup_dir, record.location)))
        self.assertTrue(os.path.exists(os.path.join(self.backup_dir, records[-1].location)))

        # Nothing expires while the newest backup failed.
        self.Backup.sudo().create(
            {"instance_id": instance.id, "storage_id": self.storage.id, "state": "failed",
             "started_date": start + timedelta(days=367)}
        )  # fmt: skip
        before = len(kept)
        self.Backup._cron_retention()
        self.assertEqual(len(records.filtered(lambda rec: rec.state == "done")), before)

        # Scheduled: not before the plan's hour, once a day, at most N per server a run.
        self.Backup.sudo().search([("instance_id", "=", instance.id)]).unlink()
        others = self.Instance.create(
            [
                {"name": f"Sched {n}", "database_name": f"saas_sched_{n}",
                 "server_id": self.server.id, "plan_id": plan.id, "state": "running"}
                for n in range(5)
            ]
        )  # fmt: skip
        per_run = max(1, self.server.max_parallel_operations)
        with freeze_time("2025-03-01 02:30:00"):
            early = self.Backup._cron_scheduled_backups()
            self.assertFalse(early.filtered(lambda rec: rec.instance_id.plan_id == plan))
        with freeze_time("2025-03-01 04:00:00"):
            first = self.Backup._cron_scheduled_backups()
            mine = first.filtered(lambda rec: rec.instance_id.plan_id == plan)
            self.assertEqual(len(mine), min(per_run, 6))
            self.assertTrue(set(mine.instance_id.ids) <= set((others | instance).ids))
            # The server's slots are taken by the queued ones: nothing more this run.
            again = self.Backup._cron_scheduled_backups()
            self.assertFalse(again.filtered(lambda rec: rec.server_id == self.server))
