from odoo import fields, models


class SaasServerRebalanceLine(models.TransientModel):
    """One move proposed by a rebalance: an instance, where it is, where it would go."""

    _name = "saas.server.rebalance.line"
    _description = "Proposed Move of a SaaS Rebalance"
    _order = "sequence, id"

    wizard_id = fields.Many2one("saas.server.rebalance", required=True, ondelete="cascade")
    sequence = fields.Integer()
    keep = fields.Boolean(default=True, help="Untick to leave this instance where it is.")
    instance_id = fields.Many2one("saas.instance", required=True, readonly=True, ondelete="cascade")
    instance_state = fields.Selection(related="instance_id.state", string="Instance State")
    size_mb = fields.Float(
        string="Size (MB)",
        readonly=True,
        digits=(16, 1),
        help="Database and filestore, as last measured (0 while unknown).",
    )
    user_count = fields.Integer(related="instance_id.user_count")
    source_server_id = fields.Many2one(
        "saas.server", string="From Server", required=True, readonly=True, ondelete="cascade"
    )
    target_server_id = fields.Many2one(
        "saas.server", string="To Server", required=True, readonly=True, ondelete="cascade"
    )
