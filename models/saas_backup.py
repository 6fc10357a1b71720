import logging
import secrets
from datetime import datetime, time, timedelta

from odoo import _, api, fields, models
from odoo.exceptions import UserError

from ..remote import backup, backup_jobs, exceptions, postgres, retention
from ..remote import filestore as remote_filestore
from .saas_operation import Made, OperationError, RemoteStep

_logger = logging.getLogger(__name__)

KINDS = [
    ("manual", "Manual"),
    ("scheduled", "Scheduled"),
    ("pre_terminate", "Before Termination"),
    ("pre_transfer", "Before Transfer"),
    ("pre_restore", "Before Restore"),
]
ACTIVE = ("queued", "running")
# Refusals of the storage or of the object itself: another attempt would fail the same way.
PERMANENT = (
    exceptions.StorageAuthError,
    exceptions.StorageFullError,
    exceptions.StorageObjectMissing,
    exceptions.StorageObjectExists,
    exceptions.BackupCorrupted,
)
BACKUP_STATES = ("running", "suspended")


class SaasBackup(models.Model):
    _name = "saas.backup"
    _description = "SaaS Backup"
    _inherit = ["mail.thread"]
    _order = "started_date desc, id desc"
    _rec_name = "location"

    instance_id = fields.Many2one("saas.instance", readonly=True, index=True, ondelete="restrict")
    template_id = fields.Many2one("saas.template", readonly=True, ondelete="restrict")
    server_id = fields.Many2one(
        "saas.server", readonly=True, help="The server the backup was taken on."
    )
    database_name = fields.Char(readonly=True)
    storage_id = fields.Many2one(
        "saas.backup.storage", required=True, readonly=True, ondelete="restrict"
    )
    kind = fields.Selection(KINDS, required=True, default="manual", readonly=True)
    state = fields.Selection(
        [
            ("queued", "Queued"),
            ("running", "Running"),
            ("done", "Done"),
            ("failed", "Failed"),
            ("expired", "Expired"),
        ],
        default="queued",
        required=True,
        readonly=True,
        index=True,
        tracking=True,
    )
    started_date = fields.Datetime(readonly=True, default=fields.Datetime.now, index=True)
    finished_date = fields.Datetime(readonly=True)
    db_size = fields.Integer(string="Database Size", readonly=True)
    filestore_size = fields.Integer(readonly=True)
    size = fields.Integer(readonly=True, help="Bytes stored.")
    sha256 = fields.Char(string="SHA-256", readonly=True)
    location = fields.Char(readonly=True, help="The object's key in its storage.")
    odoo_version = fields.Char(readonly=True)
    modules = fields.Text(readonly=True, help="Installed modules, comma-separated.")
    verified_date = fields.Datetime(readonly=True)
    verify_error = fields.Text(readonly=True)
    error = fields.Text(readonly=True)
    # What to do once this backup is done (a backup before a termination or a restore).
    restore_backup_id = fields.Many2one(
        "saas.backup", readonly=True, help="Taken before restoring this backup in place."
    )
    restore_instance_id = fields.Many2one(
        "saas.instance", readonly=True, help="Where this backup is being restored."
    )
    restore_resume = fields.Boolean(readonly=True)
    operation_ids = fields.One2many("saas.operation", "backup_id", readonly=True)

    # ------------------------------------------------------------------
    # Creating and queueing
    # ------------------------------------------------------------------

    @api.model
    def _storage_for(self, instance):
        return (
            instance.plan_id.backup_storage_id or self.env["saas.backup.storage"]._default_storage()
        )

    @api.model
    def _start(self, instance, kind, **vals):
        """Create a backup of ``instance`` and queue its operation; return the backup."""
        storage = vals.pop("storage", None) or self._storage_for(instance)
        if not storage:
            raise UserError(
                _(
                    "Instance %(name)s has no backup storage: give its plan one, or make a "
                    "storage the default.",
                    name=instance.name,
                )
            )
        storage._storage_spec()
        record = self.sudo().create(
            {
                "instance_id": instance.id,
                "server_id": instance.server_id.id,
                "database_name": instance.database_name,
                "storage_id": storage.id,
                "kind": kind,
                **vals,
            }
        )
        self.env["saas.operation"]._queue("backup", record, instance.server_id)
        return record

    def action_verify(self):
        """Queue a verification: the object's sha256, then a scratch restore dropped after."""
        self.check_access("write")
        for record in self:
            if record.state != "done":
                raise UserError(
                    _(
                        "Only a finished backup can be verified; %(name)s is not.",
                        name=record.location,
                    )
                )
        for record in self.sudo():
            operation = self.env["saas.operation"]._queue("verify", record, record.server_id)
        return operation._queued_notification(
            operation, _("The backup will be verified in the background.")
        )

    def action_restore(self):
        self.ensure_one()
        self.check_access("write")
        if self.state != "done":
            raise UserError(_("Only a finished backup can be restored."))
        return {
            "type": "ir.actions.act_window",
            "res_model": "saas.backup.restore",
            "view_mode": "form",
            "target": "new",
            "context": {"default_backup_id": self.id},
        }

    def _queue_restore(self, target):
        """Queue the restore of this backup into instance ``target``.

        The operation is about the target instance too, so that its journal is that
        instance's (what Terminate drops) and no provisioning or termination of it is
        queued meanwhile.
        """
        self.ensure_one()
        self.sudo().write({"restore_instance_id": target.id})
        operation = self.env["saas.operation"]._queue("restore", self, target.server_id)
        operation.sudo().instance_id = target
        return operation

    # ------------------------------------------------------------------
    # Operations (generators run by saas.operation)
    # ------------------------------------------------------------------

    def _server_settings(self, server):
        return server._pg_params(), server._ssh_settings()

    def _op_backup(self, operation):
        """Back the instance up into the storage; then what was waiting for it."""
        instance = self.instance_id
        server = instance.server_id
        if instance.state not in BACKUP_STATES:
            raise OperationError(
                _(
                    "Instance %(name)s is %(state)s: only a running or suspended instance is "
                    "backed up.",
                    name=instance.name,
                    state=instance.state,
                )
            )
        spec = self.storage_id._storage_spec()
        pg_params, ssh_settings = self._server_settings(server)
        if self.location:
            # An earlier attempt's object (a worker killed after it was stored).
            yield RemoteStep(_("Removing an earlier attempt's object"), backup_jobs.delete_object,
                             (spec, self.location))  # fmt: skip
        key = backup.backup_key(instance.database_name)
        self.write({"state": "running", "location": key, "started_date": fields.Datetime.now()})
        try:
            result = yield RemoteStep(
                _("Backing up %(db)s", db=instance.database_name),
                backup_jobs.run_backup,
                (spec, pg_params, ssh_settings, instance.database_name,
                 server._filestore_path(instance.database_name), key),
            )  # fmt: skip
        except PERMANENT as exc:
            raise OperationError(str(exc)) from None
        self.write(
            {
                "state": "done",
                "finished_date": fields.Datetime.now(),
                "size": result.size,
                "sha256": result.sha256,
                "db_size": result.db_size,
                "filestore_size": result.filestore_size,
                "odoo_version": result.odoo_version,
                "modules": ",".join(sorted(result.modules)),
                "error": False,
            }
        )
        instance.message_post(
            body=_(
                "Backup %(key)s taken (%(size)s bytes) in %(storage)s.",
                key=key,
                size=result.size,
                storage=self.storage_id.name,
            )
        )
        if self.kind == "pre_terminate" and instance.state in BACKUP_STATES:
            self.env["saas.operation"]._queue("terminate", instance, server)
        if self.restore_backup_id:
            self.restore_backup_id._queue_restore(instance)

    def _op_verify(self, operation):
        """Check the object's sha256, then restore it on scratch names and drop them."""
        server = self.server_id
        spec = self.storage_id._storage_spec()
        pg_params, ssh_settings = self._server_settings(server)
        scratch = f"saas_verify_{secrets.token_hex(6)}"
        scratch_dir = server._filestore_path(scratch)
        temp_dir = remote_filestore.partial_copy_path(scratch_dir)
        try:
            yield RemoteStep(_("Checking the sha256"), backup_jobs.verify_object,
                             (spec, self.location, self.sha256))  # fmt: skip
            yield RemoteStep(
                _("Restoring it on scratch names"),
                backup_jobs.scratch_verify,
                (spec, self.location, self.sha256, pg_params, ssh_settings, scratch,
                 scratch_dir, temp_dir),
                makes=(
                    Made("database", server.id, scratch),
                    Made("directory", server.id, temp_dir),
                    Made("directory", server.id, scratch_dir),
                ),
            )  # fmt: skip
        except PERMANENT as exc:
            raise OperationError(str(exc)) from None
        except exceptions.BackupError as exc:
            raise OperationError(str(exc)) from None
        self.write({"verified_date": fields.Datetime.now(), "verify_error": False})
        self.message_post(body=_("Verified: the sha256 matches and the dump restores."))

    def _op_restore(self, operation):
        """Restore into ``restore_instance_id``: a new instance, or the same one in place."""
        target = self.restore_instance_id
        server = target.server_id
        spec = self.storage_id._storage_spec()
        pg_params, ssh_settings = self._server_settings(server)
        in_place = target == self.instance_id
        database = target.database_name
        target_dir = server._filestore_path(database)
        if not in_place:
            temp_dir = remote_filestore.partial_copy_path(target_dir)
            try:
                yield RemoteStep(
                    _("Restoring %(key)s into %(db)s", key=self.location, db=database),
                    backup_jobs.restore_job,
                    (spec, self.location, self.sha256, pg_params, ssh_settings, database,
                     target_dir, temp_dir, True, target._base_url()),
                    makes=(
                        Made("database", server.id, database),
                        Made("directory", server.id, temp_dir),
                        Made("directory", server.id, target_dir),
                    ),
                )  # fmt: skip
            except PERMANENT as exc:
                raise OperationError(str(exc)) from None
            target._write_state(
                {"state": "running", "provisioned_date": fields.Datetime.now(), "error": False}
            )
            target.message_post(body=_("Restored from backup %(key)s.", key=self.location))
            return
        safety = self.search([("restore_backup_id", "=", self.id), ("state", "=", "done")], limit=1)
        if not safety or target.state not in BACKUP_STATES:
            raise OperationError(
                _("Instance %(name)s has no fresh safety backup: not restored.", name=target.name)
            )
        if target.state == "running":
            yield RemoteStep(_("Suspending the instance"), postgres.set_connections_allowed,
                             (pg_params, database, False))  # fmt: skip
            target._write_state({"state": "suspended"})
            self.write({"restore_resume": True})
        token = secrets.token_hex(4)
        restored = f"{database[:40]}_rst_{token}"
        restored_dir = server._filestore_path(restored)
        temp_dir = remote_filestore.partial_copy_path(restored_dir)
        try:
            yield RemoteStep(
                _("Restoring %(key)s beside %(db)s", key=self.location, db=database),
                backup_jobs.restore_job,
                (spec, self.location, self.sha256, pg_params, ssh_settings, restored,
                 restored_dir, temp_dir, False, target._base_url()),
                makes=(
                    Made("database", server.id, restored),
                    Made("directory", server.id, temp_dir),
                    Made("directory", server.id, restored_dir),
                ),
            )  # fmt: skip
        except PERMANENT as exc:
            raise OperationError(str(exc)) from None
        old = f"{database[:40]}_old_{token}"
        yield RemoteStep(
            _("Putting the restored database in place"),
            backup_jobs.swap_in_place,
            (pg_params, ssh_settings),
            {"database": database, "filestore_dir": target_dir, "restored": restored,
             "restored_dir": restored_dir, "old": old, "old_dir": server._filestore_path(old)},
        )  # fmt: skip
        # Renamed into the instance's names: nothing of this attempt is left to undo.
        operation.journal_ids.filtered(lambda entry: entry.state == "pending").write(
            {"state": "removed"}
        )
        if self.restore_resume:
            yield RemoteStep(_("Resuming the instance"), postgres.set_connections_allowed,
                             (pg_params, database, True))  # fmt: skip
            target._write_state({"state": "running"})
        self.write({"restore_resume": False, "restore_instance_id": False})
        target.message_post(
            body=_(
                "Restored in place from backup %(key)s (safety backup %(safety)s).",
                key=self.location,
                safety=safety.location,
            )
        )

    def _op_failed(self, operation, reason):
        if operation.kind == "backup":
            self.write({"state": "failed", "error": reason, "finished_date": fields.Datetime.now()})
            self._remove_object_quietly()
            what = {
                "pre_terminate": _("The instance was not terminated."),
                "pre_restore": _("The backup was not restored."),
            }.get(self.kind, "")
            self.instance_id.message_post(
                body=_("Backup failed: %(reason)s %(what)s", reason=reason, what=what)
            )
        elif operation.kind == "verify":
            self.write({"verify_error": reason})
            self.message_post(body=_("Verification failed: %(reason)s", reason=reason))
        elif operation.kind == "restore":
            target = self.restore_instance_id
            if target and target != self.instance_id:
                target._write_state({"state": "failed", "error": reason})
            elif target and self.restore_resume:
                try:
                    target._set_connections_allowed(True)
                    target._write_state({"state": "running"})
                except UserError:
                    _logger.warning("Could not resume %s after a failed restore", target.name)
            self.write({"restore_resume": False})
            if target:
                target.message_post(body=_("Restore failed: %(reason)s", reason=reason))

    def _op_cancelled(self, operation):
        if operation.kind == "backup" and self.state == "queued":
            self.write({"state": "failed", "error": _("Cancelled.")})

    def _remove_object_quietly(self):
        """A failed backup holds no object: remove one a killed attempt may have stored."""
        if not self.location:
            return
        try:
            backup_jobs.delete_object(self.storage_id._storage_spec(), self.location)
        except (exceptions.RemoteError, UserError) as exc:
            _logger.warning("Could not remove the object of failed backup %s: %s", self.id, exc)

    # ------------------------------------------------------------------
    # Crons
    # ------------------------------------------------------------------

    @api.model
    def _cron_scheduled_backups(self):
        """Queue the backups that are due: the plan's hour (UTC) is past, none today.

        Spread: at most ``max_parallel_operations`` backups per server are queued per
        run; the rest are due again at the next hourly run.
        """
        now = fields.Datetime.now()
        day_start = datetime.combine(now.date(), time.min)
        Backup = self.sudo()
        instances = (
            self.env["saas.instance"]
            .sudo()
            .search([("state", "in", BACKUP_STATES), ("plan_id", "!=", False)], order="id")
        )
        recent = Backup.search(
            [
                ("instance_id", "in", instances.ids),
                "|",
                ("state", "in", ACTIVE),
                "&",
                ("started_date", ">=", day_start),
                ("state", "=", "done"),
            ]
        )
        skip = set(recent.instance_id.ids)
        per_server = {}
        for active in recent.filtered(lambda rec: rec.state in ACTIVE):
            per_server[active.server_id.id] = per_server.get(active.server_id.id, 0) + 1
        queued = Backup
        for instance in instances:
            if instance.id in skip or now.hour < instance.plan_id.backup_hour:
                continue
            server = instance.server_id
            if per_server.get(server.id, 0) >= max(1, server.max_parallel_operations):
                continue
            if not self._storage_for(instance):
                continue
            try:
                with self.env.cr.savepoint():
                    queued |= Backup._start(instance, "scheduled")
            except UserError as exc:
                _logger.warning("Scheduled backup of %s not queued: %s", instance.name, exc)
                continue
            per_server[server.id] = per_server.get(server.id, 0) + 1
        return queued

    @api.model
    def _cron_retention(self):
        """Expire what the plan's grandfather-father-son rule no longer keeps."""
        Backup = self.sudo()
        groups = Backup._read_group(
            [("state", "in", ("done", "failed")), ("instance_id", "!=", False)], ["instance_id"]
        )
        expired = Backup
        for (instance,) in groups:
            plan = instance.plan_id
            keep = {
                "keep_daily": plan.backup_keep_daily if plan else 7,
                "keep_weekly": plan.backup_keep_weekly if plan else 4,
                "keep_monthly": plan.backup_keep_monthly if plan else 12,
            }
            backups = Backup.search(
                [("instance_id", "=", instance.id), ("state", "in", ("done", "failed"))]
            )
            result = retention.retention_plan(
                [(rec.id, rec.started_date, rec.state) for rec in backups], **keep
            )
            for record in Backup.browse(result.expire):
                if record._expire():
                    expired |= record
        return expired

    def _expire(self):
        """Delete the stored object, then mark the backup expired; False when it failed."""
        self.ensure_one()
        try:
            if self.location:
                backup_jobs.delete_object(self.storage_id._storage_spec(), self.location)
        except (exceptions.RemoteError, UserError) as exc:
            _logger.warning("Backup %s not expired: %s", self.location, exc)
            return False
        self.write({"state": "expired"})
        return True

    @api.model
    def _cron_verify_backups(self):
        """Queue the verification of the newest good backup of each live instance."""
        Backup = self.sudo()
        instances = self.env["saas.instance"].sudo().search([("state", "in", BACKUP_STATES)])
        queued = Backup
        week_ago = fields.Datetime.now() - timedelta(days=6)
        for instance in instances:
            newest = Backup.search(
                [("instance_id", "=", instance.id), ("state", "=", "done")], limit=1
            )
            if not newest or (newest.verified_date and newest.verified_date >= week_ago):
                continue
            self.env["saas.operation"]._queue("verify", newest, newest.server_id)
            queued |= newest
        return queued
