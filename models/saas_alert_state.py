from odoo import fields, models

from ..remote import alerts
from .saas_alert import ALERT_KINDS


class SaasAlertState(models.Model):
    """The hysteresis of one subject and kind, kept between checks.

    One row per (kind, server, instance) that ever had a bad check: the streaks
    of consecutive bad and good checks, and the alert of the incident while one
    is open. Written by the checks only (with sudo).
    """

    _name = "saas.alert.state"
    _description = "SaaS Alert Hysteresis"
    _order = "id"

    kind = fields.Selection(ALERT_KINDS, required=True, readonly=True)
    server_id = fields.Many2one("saas.server", ondelete="cascade", index=True, readonly=True)
    instance_id = fields.Many2one("saas.instance", ondelete="cascade", index=True, readonly=True)
    bad_streak = fields.Integer(readonly=True)
    good_streak = fields.Integer(readonly=True)
    alert_id = fields.Many2one(
        "saas.alert", string="Open Alert", ondelete="set null", readonly=True
    )

    def init(self):
        self.env.cr.execute(
            "CREATE UNIQUE INDEX IF NOT EXISTS saas_alert_state_subject_unique "
            "ON saas_alert_state (kind, COALESCE(server_id, 0), COALESCE(instance_id, 0))"
        )

    def _as_alert_state(self):
        self.ensure_one()
        alert = self.alert_id if self.alert_id.state == "open" else self.alert_id.browse()
        return alerts.AlertState(
            bad_streak=self.bad_streak,
            good_streak=self.good_streak,
            is_open=bool(alert),
            count=alert.count,
            opened_at=alert.opened_date or None,
            last_seen=alert.last_seen_date or None,
            message=alert.message or None,
        )

    def _step(self, bad, at, message=None, open_after=alerts.DEFAULT_OPEN_AFTER):
        """Feed one check's outcome (True bad, False good, None unknown); act on the event.

        Returns the :class:`remote.alerts.AlertEvent`, or None.
        """
        self.ensure_one()
        new, event = alerts.step(
            self._as_alert_state(), bad, at=at, message=message, open_after=max(open_after, 1)
        )
        vals = {}
        if (new.bad_streak, new.good_streak) != (self.bad_streak, self.good_streak):
            vals.update(bad_streak=new.bad_streak, good_streak=new.good_streak)
        Alert = self.env["saas.alert"].sudo()
        if event and event.action == "open":
            alert = Alert.create(
                {
                    "kind": self.kind,
                    "server_id": self.server_id.id,
                    "instance_id": self.instance_id.id,
                    "opened_date": at,
                    "last_seen_date": at,
                    "count": event.count,
                    "message": event.message,
                }
            )
            vals["alert_id"] = alert.id
            alert._notify_managers()
        elif event and event.action == "update":
            self.alert_id.write(
                {"count": event.count, "last_seen_date": at, "message": event.message}
            )
        elif event and event.action == "resolve":
            alert = self.alert_id
            alert.write({"state": "resolved", "resolved_date": at})
            vals["alert_id"] = False
            alert._notify_managers()
        if vals:
            self.write(vals)
        return event
