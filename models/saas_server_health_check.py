from datetime import timedelta

from odoo import api, fields, models

HISTORY_DAYS = 90
# Shared with saas.server, whose health_status is the last of these.
HEALTH_STATUSES = [
    ("healthy", "Healthy"),
    ("warning", "Warning"),
    ("critical", "Critical"),
    ("unknown", "Unknown"),
]


class SaasServerHealthCheck(models.Model):
    _name = "saas.server.health.check"
    _description = "SaaS Server Health Check"
    _order = "check_date desc, id desc"
    _rec_name = "check_date"

    server_id = fields.Many2one(
        "saas.server", required=True, ondelete="cascade", index=True, readonly=True
    )
    check_date = fields.Datetime(
        required=True, default=fields.Datetime.now, index=True, readonly=True
    )
    health_status = fields.Selection(HEALTH_STATUSES, required=True, readonly=True)
    online = fields.Boolean(readonly=True)
    response_time_ms = fields.Integer(string="Response Time (ms)", readonly=True, aggregator="avg")
    server_version = fields.Char(readonly=True)
    error = fields.Char(readonly=True)

    @api.autovacuum
    def _gc_old_checks(self):
        """Keep ninety days of history."""
        limit = fields.Datetime.now() - timedelta(days=HISTORY_DAYS)
        self.sudo().search([("check_date", "<", limit)]).unlink()
