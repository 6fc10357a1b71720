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
    backup_storage_id = fields.Many2one(
        "saas.backup.storage",
        ondelete="restrict",
        help="Where the backups of this plan's instances go; empty: the company's default.",
    )
    backup_hour = fields.Integer(
        default=2, help="Hour of the day (UTC, 0-23) from which the daily backup is due."
    )
    backup_keep_daily = fields.Integer(default=7)
    backup_keep_weekly = fields.Integer(default=4)
    backup_keep_monthly = fields.Integer(default=12)

    _sql_constraints = [
        ("backup_hour_range", "CHECK(backup_hour BETWEEN 0 AND 23)", "The backup hour is 0 to 23."),
        (
            "backup_keep_positive",
            "CHECK(backup_keep_daily >= 0 AND backup_keep_weekly >= 0 "
            "AND backup_keep_monthly >= 0)",
            "Retention counts are 0 or more.",
        ),
    ]
