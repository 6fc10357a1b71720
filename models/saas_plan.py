from odoo import fields, models


class SaasPlan(models.Model):
    _name = "saas.plan"
    _description = "SaaS Plan"
    _order = "sequence, name, id"

    name = fields.Char(required=True, translate=True)
    sequence = fields.Integer(default=10)
    description = fields.Text(translate=True)
    template_id = fields.Many2one(
        "saas.template",
        string="Default Template",
        ondelete="set null",
        help="Template proposed for new instances of this plan.",
    )
    active = fields.Boolean(default=True)
    instance_ids = fields.One2many("saas.instance", "plan_id", string="Instances")
