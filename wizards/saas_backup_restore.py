from odoo import _, api, fields, models
from odoo.exceptions import UserError

from ..remote import backup_jobs, capacity, exceptions


class SaasBackupRestore(models.TransientModel):
    """Restore a backup as a new instance, or in place of its instance."""

    _name = "saas.backup.restore"
    _description = "Restore a SaaS Backup"

    backup_id = fields.Many2one("saas.backup", required=True, ondelete="cascade")
    instance_id = fields.Many2one(related="backup_id.instance_id")
    mode = fields.Selection(
        [("new", "As a New Instance"), ("in_place", "In Place")], required=True, default="new"
    )
    server_id = fields.Many2one(
        "saas.server", string="Target Server", domain="[('state', '=', 'active')]"
    )
    name = fields.Char(string="New Instance Name")
    database_name = fields.Char()
    subdomain = fields.Char()

    @api.onchange("backup_id")
    def _onchange_backup_id(self):
        instance = self.backup_id.instance_id
        if instance:
            self.server_id = instance.server_id
            self.name = _("%(name)s (restored)", name=instance.name)

    def action_confirm(self):
        self.ensure_one()
        backup = self.backup_id
        backup.check_access("write")
        if backup.state != "done":
            raise UserError(_("Only a finished backup can be restored."))
        if self.mode == "in_place":
            return self._restore_in_place()
        return self._restore_as_new()

    def _restore_in_place(self):
        backup = self.backup_id
        instance = backup.instance_id
        if instance.state not in ("running", "suspended"):
            raise UserError(
                _("Instance %(name)s is not running or suspended: restore it as a new instance.",
                  name=instance.name)
            )  # fmt: skip
        instance._remote_backup_check()
        safety = self.env["saas.backup"]._start(
            instance, "pre_restore", restore_backup_id=backup.id
        )
        operation = safety.operation_ids[:1]
        return operation._queued_notification(
            operation,
            _(
                "A safety backup of %(name)s is taken first; the restore follows only if it "
                "succeeds.",
                name=instance.name,
            ),
        )

    def _check_modules(self, server):
        """Refuse a target server that lacks a module of the backup (before anything is made).

        What a server has is read from one of its databases
        (``saas.server._modules_known_from``: a ready template, else a running
        instance): the modules its Odoo listed there (any state but uninstallable).
        """
        backup = self.backup_id
        known_from = server._modules_known_from()
        if not known_from:
            raise UserError(
                _(
                    "Server %(server)s has no ready template and no running instance to read "
                    "its modules from: create a template there before restoring there.",
                    server=server.name,
                )
            )
        try:
            missing, _manifest = backup_jobs.missing_modules(
                backup.storage_id._storage_spec(),
                backup.location,
                server._pg_params(),
                known_from,
            )
        except exceptions.RemoteError as exc:
            raise UserError(_("The backup cannot be checked: %(reason)s", reason=exc)) from None
        if missing:
            raise UserError(
                _(
                    "Server %(server)s lacks modules of this backup: %(modules)s. Nothing was "
                    "restored.",
                    server=server.name,
                    modules=", ".join(missing),
                )
            )

    def _check_capacity(self, instance):
        """Refuse a target server that is full, as a provision is refused.

        The same count as ``saas.instance._check_can_provision``: the server's row is
        locked, then its other provisioned instances are counted, so that a restore
        and a provision racing for the last slot are serialised.
        """
        server = instance.server_id
        others = instance._count_provisioned_on_server()
        if not capacity.has_capacity(server.max_instances, others):
            raise UserError(
                _(
                    "Server %(server)s has less than %(percent)s%% of its capacity left "
                    "(%(count)s of %(max)s instances): nothing was restored.",
                    server=server.name,
                    percent=capacity.PROVISION_MIN_PERCENT,
                    count=others,
                    max=server.max_instances,
                )
            )

    def _restore_as_new(self):
        backup = self.backup_id
        server = self.server_id
        if not (server and self.database_name and self.name):
            raise UserError(_("Give the target server, a name and a database name."))
        if server.state != "active":
            raise UserError(_("Server %(server)s is not active.", server=server.name))
        self._check_modules(server)
        source = backup.instance_id
        # In a savepoint: a full server rolls the new instance back, nothing is left.
        with self.env.cr.savepoint():
            instance = self.env["saas.instance"].create(
                {
                    "name": self.name,
                    "database_name": self.database_name,
                    "subdomain": self.subdomain or False,
                    "server_id": server.id,
                    "partner_id": source.partner_id.id,
                    "plan_id": source.plan_id.id,
                    "admin_email": source.admin_email,
                    "send_invitation": False,
                }
            )
            self._check_capacity(instance)
        instance._write_state({"state": "provisioning", "error": False})
        operation = backup._queue_restore(instance)
        return operation._queued_notification(
            operation, _("%(name)s will be restored in the background.", name=instance.name)
        )
