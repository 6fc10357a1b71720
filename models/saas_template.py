from odoo import _, api, fields, models
from odoo.exceptions import ValidationError

from ..remote import exceptions, names


class SaasTemplate(models.Model):
    _name = "saas.template"
    _description = "SaaS Template Database"
    _inherit = ["mail.thread"]
    _order = "name, id"

    name = fields.Char(required=True, tracking=True)
    database_name = fields.Char(
        required=True,
        tracking=True,
        help="Name of the template database on the server's PostgreSQL.",
    )
    server_id = fields.Many2one(
        "saas.server",
        required=True,
        tracking=True,
        ondelete="restrict",
        domain="[('state', '=', 'active')]",
        help="Server where this template database is hosted.",
    )
    module_names = fields.Char(
        string="Modules",
        help="Technical names of the modules to install, separated by commas (e.g. sale,crm).",
    )
    lang = fields.Selection(
        selection="_selection_lang", string="Language", default="en_US", required=True
    )
    demo = fields.Boolean(string="Demo Data")
    state = fields.Selection(
        [
            ("draft", "Draft"),
            ("creating", "Creating"),
            ("ready", "Ready"),
            ("failed", "Failed"),
        ],
        default="draft",
        required=True,
        tracking=True,
        copy=False,
    )
    error = fields.Text(copy=False, readonly=True)
    instance_ids = fields.One2many("saas.instance", "template_id", string="Instances")

    _sql_constraints = [
        (
            "database_name_server_unique",
            "UNIQUE(server_id, database_name)",
            "This server already has a template with this database name.",
        ),
    ]

    @api.model
    def _selection_lang(self):
        return self.env["res.lang"].get_installed()

    @api.constrains("database_name")
    def _check_database_name(self):
        for template in self:
            try:
                names.validate_database_name(template.database_name or "")
            except exceptions.InvalidDatabaseName as exc:
                raise ValidationError(str(exc)) from None
