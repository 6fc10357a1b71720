import logging

from odoo import _, api, fields, models
from odoo.exceptions import UserError, ValidationError

from ..remote import capacity, exceptions, names

_logger = logging.getLogger(__name__)


class SaasInstance(models.Model):
    _name = "saas.instance"
    _description = "SaaS Instance"
    _inherit = ["mail.thread", "mail.activity.mixin"]
    _order = "name, id"

    name = fields.Char(required=True, tracking=True)
    database_name = fields.Char(required=True, tracking=True, copy=False)
    subdomain = fields.Char(tracking=True, copy=False)
    template_id = fields.Many2one("saas.template", tracking=True, ondelete="restrict")
    plan_id = fields.Many2one("saas.plan", tracking=True, ondelete="restrict")
    partner_id = fields.Many2one("res.partner", string="Customer", tracking=True)
    server_id = fields.Many2one(
        "saas.server",
        string="Server",
        required=True,
        tracking=True,
        ondelete="restrict",
        index=True,
        domain="[('state', '=', 'active'), ('available_capacity', '>', 0)]",
        default=lambda self: self._get_default_server(),
        help="Server hosting this instance",
    )
    state = fields.Selection(
        [
            ("draft", "Draft"),
            ("provisioning", "Provisioning"),
            ("running", "Running"),
            ("suspended", "Suspended"),
            ("failed", "Failed"),
            ("terminated", "Terminated"),
        ],
        default="draft",
        required=True,
        tracking=True,
        copy=False,
    )
    url = fields.Char(string="URL", compute="_compute_url")
    provisioned_date = fields.Datetime(copy=False, readonly=True)
    error = fields.Text(copy=False, readonly=True)

    _sql_constraints = [
        (
            "database_name_server_unique",
            "UNIQUE(server_id, database_name)",
            "This server already has an instance with this database name.",
        ),
        ("subdomain_unique", "UNIQUE(subdomain)", "Another instance already uses this subdomain."),
    ]

    @api.model
    def _get_default_server(self):
        """The server a new instance goes to: the freest one with at least 10 % free,
        else the first active server, else none. Never raises."""
        servers = self.env["saas.server"]
        try:
            return servers.get_available_server(
                min_capacity_percent=capacity.PROVISION_MIN_PERCENT
            )
        except UserError:
            return servers.search([("state", "=", "active")], limit=1)

    @api.depends(
        "database_name", "subdomain", "server_id.server_url", "server_id.instance_domain"
    )
    def _compute_url(self):
        for instance in self:
            server = instance.server_id
            if not server or not instance.database_name:
                instance.url = False
            elif server.instance_domain and instance.subdomain:
                scheme = server.server_url.split("://", 1)[0]
                instance.url = f"{scheme}://{instance.subdomain}.{server.instance_domain}"
            else:
                instance.url = f"{server.server_url}/web?db={instance.database_name}"

    @api.constrains("database_name")
    def _check_database_name(self):
        for instance in self:
            try:
                names.validate_database_name(instance.database_name or "")
            except exceptions.InvalidDatabaseName as exc:
                raise ValidationError(str(exc)) from None

    @api.constrains("subdomain")
    def _check_subdomain(self):
        for instance in self.filtered("subdomain"):
            try:
                names.validate_dns_label(instance.subdomain)
            except exceptions.InvalidInput as exc:
                raise ValidationError(
                    _("Subdomain %(value)r: %(reason)s", value=instance.subdomain, reason=exc)
                ) from None
