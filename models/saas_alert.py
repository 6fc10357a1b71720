import logging

from odoo import _, api, fields, models

_logger = logging.getLogger(__name__)

MANAGER_GROUP = "saas_manager.group_saas_manager"
ALERT_KINDS = [
    ("server_down", "Server Down"),
    ("server_slow", "Server Slow"),
    ("capacity", "Capacity"),
    ("disk", "Disk Space"),
    ("replica_lag", "Replica Lag"),
    ("backup_failed", "Backup Failed"),
    ("backup_stale", "Backup Stale"),
    ("operation_failed", "Operation Failed"),
]


class SaasAlert(models.Model):
    """One incident: opened after N consecutive bad checks, resolved after 2 good ones.

    The hysteresis itself lives in ``saas.alert.state`` (one row per subject and
    kind); an alert is created only when an incident opens, so a flapping server
    gives one alert per incident, not one per check.
    """

    _name = "saas.alert"
    _description = "SaaS Alert"
    _inherit = ["mail.thread", "mail.activity.mixin"]
    _order = "opened_date desc, id desc"

    kind = fields.Selection(ALERT_KINDS, required=True, readonly=True, index=True)
    server_id = fields.Many2one(
        "saas.server", string="Server", ondelete="cascade", index=True, readonly=True
    )
    instance_id = fields.Many2one(
        "saas.instance", string="Instance", ondelete="cascade", index=True, readonly=True
    )
    operation_id = fields.Many2one(
        "saas.operation", string="Last Failed Operation", ondelete="set null", readonly=True
    )
    state = fields.Selection(
        [("open", "Open"), ("resolved", "Resolved")],
        default="open",
        required=True,
        readonly=True,
        index=True,
        tracking=True,
    )
    opened_date = fields.Datetime(required=True, default=fields.Datetime.now, readonly=True)
    resolved_date = fields.Datetime(readonly=True)
    last_seen_date = fields.Datetime(readonly=True, help="The latest bad check of this incident.")
    count = fields.Integer(readonly=True, help="Bad checks in this incident.")
    message = fields.Char(readonly=True)

    def init(self):
        # One open alert per subject and kind: the incident, never a storm.
        self.env.cr.execute(
            "CREATE UNIQUE INDEX IF NOT EXISTS saas_alert_open_unique "
            "ON saas_alert (kind, COALESCE(server_id, 0), COALESCE(instance_id, 0)) "
            "WHERE state = 'open'"
        )

    @api.depends("kind", "server_id.name", "instance_id.name")
    def _compute_display_name(self):
        labels = dict(self._fields["kind"]._description_selection(self.env))
        for alert in self:
            subject = alert.instance_id or alert.server_id
            alert.display_name = (
                f"{labels.get(alert.kind, '')}: {subject.name}"
                if subject
                else labels.get(alert.kind)
            )

    # ------------------------------------------------------------------
    # Checks
    # ------------------------------------------------------------------

    @api.model
    def _record_server_checks(self, checks, at=None):
        """Feed one sweep's outcome of many servers to their hysteresis.

        :param checks: ``(server, {kind: bad}, {kind: message})`` items, ``bad``
            True, False or None (unknown: changes nothing), as
            ``remote.alerts.server_conditions`` gives them.
        :return: the events, as ``(server, kind, AlertEvent)``.

        A constant number of queries to find the hysteresis rows; a row is
        created only at a subject's first bad check.
        """
        at = at or fields.Datetime.now()
        State = self.env["saas.alert.state"].sudo()
        server_ids = [server.id for server, _conditions, _messages in checks]
        rows = State.search([("server_id", "in", server_ids), ("instance_id", "=", False)])
        by_key = {(row.server_id.id, row.kind): row for row in rows}
        events = []
        for server, conditions, messages in checks:
            for kind, bad in conditions.items():
                row = by_key.get((server.id, kind))
                if row is None:
                    if not bad:
                        continue
                    row = by_key[server.id, kind] = State.create(
                        {"kind": kind, "server_id": server.id}
                    )
                event = row._step(
                    bad, at, messages.get(kind), open_after=server.alert_after_failures
                )
                if event:
                    events.append((server, kind, event))
        return events

    # ------------------------------------------------------------------
    # Operations (called by the operation engine)
    # ------------------------------------------------------------------

    def _operation_subject(self, operation):
        kind = (
            "backup_failed" if (operation.kind or "").startswith("backup") else "operation_failed"
        )
        server = operation.server_id or operation.instance_id.server_id
        return kind, server, operation.instance_id

    @api.model
    def _on_operation_failed(self, operation):
        """An operation failed for good: open the alert of its subject, or count it in.

        One open alert per (kind, server, instance): a second failure while it is
        open bumps its count without notifying again. Kind ``backup_failed`` for
        backup operations, ``operation_failed`` for the others.
        """
        kind, server, instance = self._operation_subject(operation)
        now = fields.Datetime.now()
        lines = (operation.error or "").strip().splitlines()
        message = _(
            "%(operation)s failed: %(error)s",
            operation=operation.display_name,
            error=lines[-1][:200] if lines else _("no reason given"),
        )
        alert = self.sudo().search(
            [
                ("kind", "=", kind),
                ("server_id", "=", server.id),
                ("instance_id", "=", instance.id),
                ("state", "=", "open"),
            ],
            limit=1,
        )
        if alert:
            alert.write(
                {
                    "count": alert.count + 1,
                    "last_seen_date": now,
                    "message": message,
                    "operation_id": operation.id,
                }
            )
            return alert
        alert = self.sudo().create(
            {
                "kind": kind,
                "server_id": server.id,
                "instance_id": instance.id,
                "operation_id": operation.id,
                "opened_date": now,
                "last_seen_date": now,
                "count": 1,
                "message": message,
            }
        )
        alert._notify_managers()
        return alert

    @api.model
    def _on_operation_done(self, operation):
        """An operation succeeded: resolve the open alert of the same kind and subject."""
        kind, server, instance = self._operation_subject(operation)
        alert = self.sudo().search(
            [
                ("kind", "=", kind),
                ("server_id", "=", server.id),
                ("instance_id", "=", instance.id),
                ("state", "=", "open"),
            ]
        )
        if alert:
            alert.write({"state": "resolved", "resolved_date": fields.Datetime.now()})
            alert._notify_managers()
        return alert

    # ------------------------------------------------------------------
    # Notifications
    # ------------------------------------------------------------------

    def _managers(self):
        group = self.env.ref(MANAGER_GROUP)
        return group.sudo().users.filtered(lambda user: user.active and not user.share)

    def _notify_managers(self):
        """Tell the SaaS managers that the alert opened or was resolved.

        On open: a to-do activity for each manager and an email; on resolve: the
        activities are marked done and an email says so. Each email is rendered in
        its recipient's language from a mail template.
        """
        managers = self._managers()
        for alert in self:
            if alert.state == "open":
                template = self.env.ref("saas_manager.saas_alert_open_mail_template")
                # The email below is the notification: no "assigned to you" mail too.
                quiet = alert.with_context(mail_activity_quick_update=True)
                for user in managers:
                    quiet.activity_schedule(
                        "mail.mail_activity_data_todo",
                        user_id=user.id,
                        summary=alert.display_name,
                        note=alert.message or "",
                    )
            else:
                template = self.env.ref("saas_manager.saas_alert_resolved_mail_template")
                alert.activity_ids.action_feedback(feedback=_("The alert is resolved."))
            for user in managers.filtered("email"):
                template.with_context(lang=user.lang).send_mail(
                    alert.id,
                    email_values={"recipient_ids": [(4, user.partner_id.id)]},
                )
            _logger.info(
                "SaaS alert %s %s (%s): %s managers notified",
                alert.kind,
                alert.state,
                alert.display_name,
                len(managers),
            )
