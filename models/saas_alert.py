import logging
import math

from odoo import _, api, fields, models

from ..remote import alerts as remote_alerts

_logger = logging.getLogger(__name__)

MANAGER_GROUP = "saas_manager.group_saas_manager"
# Hours without a successful backup before backup_stale opens (daily backups: 26).
BACKUP_STALE_PARAM = "saas_manager.backup_stale_hours"
# The instance states that are backed up (saas.backup's scheduled backups).
BACKED_UP_STATES = ("running", "suspended")
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
    # Backups too old (called by the hourly health cron)
    # ------------------------------------------------------------------

    @api.model
    def _backup_stale_hours(self):
        """``saas_manager.backup_stale_hours``, or 26 when empty or not a positive number."""
        value = self.env["ir.config_parameter"].sudo().get_param(BACKUP_STALE_PARAM)
        try:
            hours = float(value) if value else remote_alerts.BACKUP_STALE_HOURS
        except ValueError:
            hours = None
        if hours is None or not math.isfinite(hours) or hours <= 0:
            _logger.warning(
                "System parameter %s is not a positive number of hours (%r): %s h used",
                BACKUP_STALE_PARAM,
                value,
                remote_alerts.BACKUP_STALE_HOURS,
            )
            return remote_alerts.BACKUP_STALE_HOURS
        return hours

    @api.model
    def _check_stale_backups(self, at=None):
        """Open, count in or resolve the ``backup_stale`` alert of every backed-up instance.

        An instance is backed up when it is running or suspended, has a plan and a
        storage to back up to (its plan's or the company's default). Its backups are
        stale when the newest successful one ended more than
        ``saas_manager.backup_stale_hours`` (default 26) ago, or, without any, when
        the instance was created longer ago than that. No streak is needed (the
        threshold is the margin): the first stale check opens the alert (and
        notifies), the next ones bump its count, the first fresh one resolves it.
        The alert of an instance no longer backed up (terminated, no plan) is
        resolved too. A constant number of queries whatever the fleet size.

        :return: the alerts opened or resolved.
        """
        at = at or fields.Datetime.now()
        max_hours = self._backup_stale_hours()
        Alert = self.sudo()
        instances = (
            self.env["saas.instance"]
            .sudo()
            .search([("state", "in", BACKED_UP_STATES), ("plan_id", "!=", False)], order="id")
        )
        has_default = bool(self.env["saas.backup.storage"]._default_storage())
        instances = instances.filtered(lambda inst: has_default or inst.plan_id.backup_storage_id)
        groups = (
            self.env["saas.backup"]
            .sudo()
            ._read_group(
                [("instance_id", "in", instances.ids), ("state", "=", "done")],
                ["instance_id"],
                ["finished_date:max"],
            )
        )
        newest = {instance.id: last for instance, last in groups}
        open_alerts = Alert.search([("kind", "=", "backup_stale"), ("state", "=", "open")])
        open_by_instance = {alert.instance_id.id: alert for alert in open_alerts}
        changed = Alert
        for instance in instances:
            last = newest.get(instance.id)
            stale = remote_alerts.backup_stale(
                last or None, since=instance.create_date, at=at, max_age_hours=max_hours
            )
            alert = open_by_instance.pop(instance.id, None)
            if not stale:
                if alert:
                    alert.write({"state": "resolved", "resolved_date": at})
                    changed |= alert
                continue
            age = remote_alerts.backup_age(last or None, since=instance.create_date, at=at)
            hours = round(age.total_seconds() / 3600)
            if last:
                message = _(
                    "The newest successful backup ended on %(date)s (UTC), %(hours)s hours "
                    "ago; daily backups allow %(max)s hours.",
                    date=fields.Datetime.to_string(last),
                    hours=hours,
                    max=round(max_hours, 1),
                )
            else:
                message = _(
                    "No successful backup since the instance was created on %(date)s (UTC), "
                    "%(hours)s hours ago; daily backups allow %(max)s hours.",
                    date=fields.Datetime.to_string(instance.create_date),
                    hours=hours,
                    max=round(max_hours, 1),
                )
            if alert:
                alert.write({"count": alert.count + 1, "last_seen_date": at, "message": message})
                continue
            changed |= Alert.create(
                {
                    "kind": "backup_stale",
                    "server_id": instance.server_id.id,
                    "instance_id": instance.id,
                    "opened_date": at,
                    "last_seen_date": at,
                    "count": 1,
                    "message": message,
                }
            )
        # Instances no longer backed up: their incident is over.
        leftovers = Alert.browse([alert.id for alert in open_by_instance.values()])
        leftovers.write({"state": "resolved", "resolved_date": at})
        changed |= leftovers
        changed._notify_managers()
        return changed

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
        """An operation succeeded: resolve the open alert of the same kind and subject.

        A backup of an instance also resolves its ``backup_stale`` alert: a fresh
        backup has landed.
        """
        kind, server, instance = self._operation_subject(operation)
        alert = self.sudo().search(
            [
                ("kind", "=", kind),
                ("server_id", "=", server.id),
                ("instance_id", "=", instance.id),
                ("state", "=", "open"),
            ]
        )
        if kind == "backup_failed" and instance:
            alert |= self.sudo().search(
                [("kind", "=", "backup_stale"), ("instance_id", "=", instance.id),
                 ("state", "=", "open")]
            )  # fmt: skip
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
