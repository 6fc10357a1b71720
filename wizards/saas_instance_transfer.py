from odoo import _, api, fields, models
from odoo.exceptions import UserError


class SaasInstanceTransfer(models.TransientModel):
    """Move an instance to another server, or copy it (or a template) there (SPEC §9)."""

    _name = "saas.instance.transfer"
    _description = "Move or Copy a SaaS Instance"

    instance_id = fields.Many2one("saas.instance", ondelete="cascade")
    template_id = fields.Many2one("saas.template", ondelete="cascade")
    source_server_id = fields.Many2one("saas.server", compute="_compute_source_server_id")
    mode = fields.Selection(
        [("move", "Move"), ("copy", "Copy (staging)")], required=True, default="move"
    )
    target_server_id = fields.Many2one(
        "saas.server",
        string="Target Server",
        domain="[('state', '=', 'active')]",
    )
    name = fields.Char(string="Copy Name")
    database_name = fields.Char(string="Copy Database")
    subdomain = fields.Char(string="Copy Subdomain")
    neutralize = fields.Boolean(
        default=True,
        help="As Odoo's own neutralisation does: outgoing mail servers, scheduled actions, "
        "payment providers and the like are switched off in the copy.",
    )

    @api.depends("instance_id", "template_id")
    def _compute_source_server_id(self):
        for wizard in self:
            wizard.source_server_id = (wizard.instance_id or wizard.template_id).server_id

    @api.onchange("instance_id", "template_id", "mode")
    def _onchange_defaults(self):
        record = self.instance_id or self.template_id
        if self.template_id:
            self.mode = "copy"
        if record and self.mode == "copy" and not self.database_name:
            self.name = _("%(name)s (copy)", name=record.name)
            self.database_name = f"{record.database_name[:50]}_copy"

    def action_start(self):
        """Check at once, then queue the transfer; nothing is made in this request."""
        self.ensure_one()
        target = self.target_server_id
        if self.template_id:
            if not (target and self.database_name):
                raise UserError(_("Give the target server and the copy's database name."))
            _copy, operation = self.template_id._copy_to_server(target, self.database_name)
            return operation._queued_notification(
                operation,
                _("Template %(name)s will be copied to %(server)s in the background.",
                  name=self.template_id.name, server=target.name),
            )  # fmt: skip
        instance = self.instance_id
        if not instance:
            raise UserError(_("Choose the instance to move or copy."))
        instance.check_access("write")
        instance._check_transfer(target, self.mode)
        Operation = self.env["saas.operation"]
        if self.mode == "move":
            operation = Operation._queue(
                "transfer", instance, instance.server_id, target_server_id=target.id
            )
            return operation._queued_notification(
                operation,
                _("%(name)s will be moved to %(server)s in the background.",
                  name=instance.name, server=target.name),
            )  # fmt: skip
        if not (self.name and self.database_name):
            raise UserError(_("Give the copy a name and a database name."))
        copy = instance.create(
            {
                "name": self.name,
                "database_name": self.database_name,
                "subdomain": self.subdomain or False,
                "server_id": target.id,
                "partner_id": instance.partner_id.id,
                "plan_id": instance.plan_id.id,
                "template_id": instance.template_id.id
                if instance.template_id.server_id == target
                else False,
                "admin_email": instance.admin_email,
                "company_name": instance.company_name,
                "lang": instance.lang,
                "tz": instance.tz,
                "send_invitation": False,
            }
        )
        copy._write_state({"state": "provisioning", "error": False, "copied_from_id": instance.id})
        operation = Operation._queue(
            "transfer",
            copy,
            instance.server_id,
            target_server_id=target.id,
            neutralize=self.neutralize,
        )
        return operation._queued_notification(
            operation,
            _("%(name)s will be copied to %(server)s as %(copy)s in the background.",
              name=instance.name, server=target.name, copy=copy.name),
        )  # fmt: skip
