import logging

from odoo import _, api, fields, models
from odoo.exceptions import AccessError, UserError, ValidationError

from ..remote import capacity, exceptions, names, postgres, provision, ssh
from ..remote import filestore as remote_filestore

_logger = logging.getLogger(__name__)

# Instances that hold a slot when another instance of the server is provisioned.
# Drafts are requests, not reservations: were they counted, two drafts competing
# for a server's last slot would each see the other and neither would get it.
PROVISIONED_STATES = ("provisioning", "running", "suspended")
# What a provisioned instance is made of: fixed once it exists on its server.
LOCATION_FIELDS = ("database_name", "server_id", "template_id", "subdomain")
# Set by the instance's buttons and its provisioning; by hand, only by admins. The
# provisioned_* fields are what terminate drops: a manager who could write them
# could have another customer's database dropped.
STATUS_FIELDS = (
    "state",
    "error",
    "provisioned_date",
    "provisioned_database",
    "provisioned_filestore",
)
ADMIN_GROUP = "saas_manager.group_saas_admin"


class SaasInstance(models.Model):
    _name = "saas.instance"
    _description = "SaaS Instance"
    _inherit = ["mail.thread", "mail.activity.mixin"]
    _order = "name, id"

    name = fields.Char(required=True, tracking=True)
    database_name = fields.Char(required=True, tracking=True, copy=False)
    subdomain = fields.Char(tracking=True, copy=False)
    template_id = fields.Many2one(
        "saas.template",
        tracking=True,
        ondelete="restrict",
        domain="[('server_id', '=', server_id), ('state', '=', 'ready')]",
    )
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
    provisioned_database = fields.Char(
        copy=False,
        readonly=True,
        help="The database this instance's provisioning created on its server: the only "
        "database Terminate drops.",
    )
    provisioned_filestore = fields.Char(
        copy=False,
        readonly=True,
        help="The filestore directory this instance's provisioning created on its server: "
        "the only directory Terminate removes.",
    )
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
            return servers.get_available_server(min_capacity_percent=capacity.PROVISION_MIN_PERCENT)
        except UserError:
            return servers.search([("state", "=", "active")], limit=1)

    @api.depends("database_name", "subdomain", "server_id.server_url", "server_id.instance_domain")
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

    @api.onchange("plan_id")
    def _onchange_plan_id(self):
        if self.plan_id.template_id and not self.template_id:
            self.template_id = self.plan_id.template_id
            self.server_id = self.plan_id.template_id.server_id

    @api.constrains("database_name", "server_id")
    def _check_database_name(self):
        for instance in self:
            try:
                # The manager's own database may sit on a managed server's PostgreSQL
                # (a manager that manages itself, as in the tests and the demo).
                names.validate_database_name(
                    instance.database_name or "", reserved=(self.env.cr.dbname,)
                )
            except exceptions.InvalidDatabaseName as exc:
                raise ValidationError(str(exc)) from None
            if instance.database_name in instance.server_id.template_ids.mapped("database_name"):
                raise ValidationError(
                    _(
                        "%(db)s is the database of a template on %(server)s: an instance needs "
                        "a database of its own.",
                        db=instance.database_name,
                        server=instance.server_id.name,
                    )
                )

    @api.constrains("subdomain")
    def _check_subdomain(self):
        for instance in self.filtered("subdomain"):
            try:
                names.validate_dns_label(instance.subdomain)
            except exceptions.InvalidInput as exc:
                raise ValidationError(
                    _("Subdomain %(value)r: %(reason)s", value=instance.subdomain, reason=exc)
                ) from None

    def write(self, vals):
        if not (self.env.su or self.env.user.has_group(ADMIN_GROUP)):
            changed = [fname for fname in STATUS_FIELDS if fname in vals]
            if changed:
                # Managers move instances through the actions, which check what
                # each state needs and write with sudo; only administrators may
                # set these by hand. No context key grants this: the context is
                # the caller's to send over RPC.
                raise AccessError(
                    _(
                        "%(fields)s of an instance change through its buttons; only a SaaS "
                        "administrator may set them by hand.",
                        fields=", ".join(self._fields[fname].string for fname in changed),
                    )
                )
        located = self.filtered(lambda inst: inst.state not in ("draft", "failed"))
        changed = [fname for fname in LOCATION_FIELDS if fname in vals]
        if located and changed:
            raise UserError(
                _(
                    "%(fields)s of instance %(name)s cannot change once it is provisioned.",
                    fields=", ".join(self._fields[fname].string for fname in changed),
                    name=located[0].name,
                )
            )
        return super().write(vals)

    def _write_state(self, vals):
        """Write a state change decided by one of the actions (which checked it)."""
        return self.sudo().write(vals)

    # ------------------------------------------------------------------
    # Provisioning
    # ------------------------------------------------------------------

    def _require_state(self, allowed, message):
        """Refuse, with ``message(name=, state=)``, an instance not in ``allowed``."""
        labels = dict(self._fields["state"]._description_selection(self.env))
        for instance in self:
            if instance.state not in allowed:
                raise UserError(message(name=instance.name, state=labels[instance.state]))

    def _check_can_provision(self):
        """Validate, in the documented order, that this instance can be provisioned.

        Locks the server's row first, so that two provisions for its last slot
        are serialised: the second one sees the first and is refused.
        """
        self.ensure_one()
        self._require_state(
            ("draft", "failed"),
            lambda name, state: self.env._(
                "Instance %(name)s is %(state)s: only a draft or failed instance can be "
                "provisioned.",
                name=name,
                state=state,
            ),
        )
        server = self.server_id
        if server.state != "active":
            raise UserError(
                _(
                    "Server %(server)s is not active: instance %(name)s cannot be provisioned "
                    "there.",
                    server=server.name,
                    name=self.name,
                )
            )
        others = self._count_provisioned_on_server()
        if not capacity.has_capacity(server.max_instances, others):
            raise UserError(
                _(
                    "Server %(server)s has less than %(percent)s%% of its capacity left "
                    "(%(count)s of %(max)s instances).",
                    server=server.name,
                    percent=capacity.PROVISION_MIN_PERCENT,
                    count=others,
                    max=server.max_instances,
                )
            )
        template = self.template_id
        if not template:
            raise UserError(_("Instance %(name)s has no template.", name=self.name))
        if template.state != "ready":
            raise UserError(
                _(
                    "Template %(template)s is not ready (it is %(state)s).",
                    template=template.name,
                    state=template.state,
                )
            )
        if template.server_id != server:
            raise UserError(
                _(
                    "Template %(template)s is on server %(template_server)s, not on "
                    "%(server)s: an instance is cloned on the server of its template.",
                    template=template.name,
                    template_server=template.server_id.name,
                    server=server.name,
                )
            )

    def _count_provisioned_on_server(self):
        """Take the server's slot lock, then count its other provisioned instances.

        The lock is an UPDATE of the server row, not a plain SELECT FOR UPDATE:
        Odoo runs transactions in REPEATABLE READ, where a second provision that
        waited on a mere row lock would still count from its older snapshot. A
        row updated by a concurrent transaction makes it fail with a
        serialization error instead, which Odoo answers by retrying the whole
        request; the retry sees the first provision and counts it.
        """
        self.ensure_one()
        self.env["saas.instance"].flush_model(["state", "server_id"])
        cr = self.env.cr
        cr.execute(
            """
            UPDATE saas_server
               SET write_date = (now() AT TIME ZONE 'UTC'), write_uid = %s
             WHERE id = %s
            """,
            [self.env.uid, self.server_id.id],
        )
        self.server_id.invalidate_recordset(["write_date", "write_uid"])
        cr.execute(
            """
            SELECT count(*) FROM saas_instance
             WHERE server_id = %s AND id != %s AND state IN %s
            """,
            [self.server_id.id, self.id, PROVISIONED_STATES],
        )
        return cr.fetchone()[0]

    def _base_url(self):
        """The clone's web.base.url: the instance's own origin."""
        self.ensure_one()
        server = self.server_id
        if server.instance_domain and self.subdomain:
            return self.url
        return server.server_url

    def action_provision(self):
        """Clone the template into this instance's database and copy its filestore.

        Checks fail with a UserError and change nothing. A failure on the remote
        systems leaves no database or filestore behind, marks the instance
        ``failed`` with the reason and frees its slot; it is reported by a
        notification rather than an exception, which would roll back that record.
        """
        # One at a time: a check failing on a second instance would roll back the
        # record of a first one already cloned, and orphan its database.
        self.ensure_one()
        self.check_access("write")
        self._check_can_provision()
        if self._provision():
            return True
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {
                "title": _("Provisioning failed"),
                "message": f"{self.name}: {self.error}",
                "type": "danger",
                "sticky": True,
                "next": {"type": "ir.actions.act_window_close"},
            },
        }

    def action_retry(self):
        """Provision a failed instance again."""
        self._require_state(
            ("failed",),
            lambda name, state: self.env._(
                "Only a failed instance can be retried; %(name)s is %(state)s.",
                name=name,
                state=state,
            ),
        )
        return self.action_provision()

    def _remote_settings(self):
        """Everything the remote work needs, checked before any remote call.

        Raises a UserError for what is missing or wrong (SSH user, host key,
        credentials, secret key, a reserved target name), so that nothing is made
        on the server for an instance that cannot be completed.
        """
        self.ensure_one()
        server = self.server_id
        template = self.template_id
        try:
            names.validate_database_name(
                self.database_name,
                reserved=(self.env.cr.dbname, template.database_name),
            )
        except exceptions.InvalidDatabaseName as exc:
            raise UserError(str(exc)) from None
        return {
            "pg_params": server._pg_params(),
            "ssh_settings": server._ssh_settings(),
            "source_dir": server._filestore_path(template.database_name),
            "target_dir": server._filestore_path(self.database_name),
        }

    def _provision(self):
        """Do the remote work of a checked instance; return True on success.

        In this order: every setting checked; the local writes that can fail made
        and flushed; then the clone and the filestore copy; then the record of what
        was made. Should that last local step fail (a constraint, the chatter), the
        database and filestore just made are removed before the error goes on, so
        a rolled-back transaction never leaves them on the server unknown to us.
        """
        self.ensure_one()
        server = self.server_id
        template = self.template_id
        settings = self._remote_settings()
        self._write_state({"state": "provisioning", "error": False})
        self.flush_recordset()
        _logger.info(
            "Provisioning instance %s on %s from template %s",
            self.database_name,
            server.code,
            template.database_name,
        )
        try:
            if postgres.database_exists(settings["pg_params"], self.database_name):
                raise exceptions.DatabaseExists(
                    f"database {self.database_name} already exists on {server.name}: "
                    "it is not this instance's, so nothing was made"
                )
            result = provision.provision(
                settings["pg_params"],
                settings["ssh_settings"],
                template.database_name,
                self.database_name,
                source_dir=settings["source_dir"],
                target_dir=settings["target_dir"],
                base_url=self._base_url(),
            )
        except exceptions.RemoteError as exc:
            reason = str(exc)
            self._write_state({"state": "failed", "error": reason})
            self.message_post(body=_("Provisioning failed: %(reason)s", reason=reason))
            _logger.warning(
                "Provisioning instance %s on %s failed: %s", self.database_name, server.code, reason
            )
            return False
        try:
            with self.env.cr.savepoint():
                self._write_state(
                    {
                        "state": "running",
                        "provisioned_date": fields.Datetime.now(),
                        "provisioned_database": self.database_name,
                        "provisioned_filestore": settings["target_dir"]
                        if result.filestore_copied
                        else False,
                    }
                )
                self.message_post(
                    body=_(
                        "Provisioned on %(server)s from %(template)s in %(seconds).2f s.",
                        server=server.name,
                        template=template.name,
                        seconds=result.duration_s,
                    )
                )
                self.flush_recordset()
        except Exception:
            _logger.warning(
                "Recording the provision of %s failed: removing what it made on %s",
                self.database_name,
                server.code,
            )
            try:
                self._remove_remote(
                    settings,
                    self.database_name,
                    result.filestore_copied and settings["target_dir"],
                )
            except exceptions.RemoteError:
                _logger.exception(
                    "Could not remove what the provision of %s made on %s",
                    self.database_name,
                    server.code,
                )
            raise
        _logger.info(
            "Instance %s provisioned on %s in %.2f s (strategy %s)",
            self.database_name,
            server.code,
            result.duration_s,
            result.clone.strategy,
        )
        return True

    @api.model
    def _remove_remote(self, settings, database, filestore):
        """Drop ``database`` and remove ``filestore`` (each when set) on the server.

        Only ever called with what this instance's own provisioning made.
        """
        if database:
            postgres.drop_database(settings["pg_params"], database)
        if filestore:
            with ssh.SshSession(settings["ssh_settings"]) as session:
                remote_filestore.remove_tree(session, filestore)

    # ------------------------------------------------------------------
    # Life cycle
    # ------------------------------------------------------------------

    def action_suspend(self):
        self.check_access("write")
        self._require_state(
            ("running",),
            lambda name, state: self.env._(
                "Only a running instance can be suspended; %(name)s is %(state)s.",
                name=name,
                state=state,
            ),
        )
        self._write_state({"state": "suspended"})
        return True

    def action_resume(self):
        self.check_access("write")
        self._require_state(
            ("suspended",),
            lambda name, state: self.env._(
                "Only a suspended instance can be resumed; %(name)s is %(state)s.",
                name=name,
                state=state,
            ),
        )
        self._write_state({"state": "running"})
        return True

    def action_terminate(self):
        """Drop the instance's database and filestore, then free its slot.

        Only what this instance's provisioning is recorded to have made is dropped
        (``provisioned_database``, ``provisioned_filestore``): a draft has none, a
        failed provision left none, and the instance's ``database_name`` alone never
        decides what is dropped. Safe to repeat: what is already gone is skipped.
        """
        self.ensure_one()
        self.check_access("write")
        self._require_state(
            ("draft", "running", "suspended", "failed"),
            lambda name, state: self.env._(
                "Instance %(name)s is %(state)s and cannot be terminated.",
                name=name,
                state=state,
            ),
        )
        self._drop_remote()
        self._write_state(
            {"state": "terminated", "provisioned_database": False, "provisioned_filestore": False}
        )
        return True

    def _drop_remote(self):
        self.ensure_one()
        database = self.provisioned_database
        filestore = self.provisioned_filestore
        if not (database or filestore):
            return
        server = self.server_id
        try:
            settings = {"pg_params": server._pg_params()}
            if filestore:
                settings["ssh_settings"] = server._ssh_settings()
            self._remove_remote(settings, database, filestore)
        except exceptions.RemoteError as exc:
            raise UserError(
                _(
                    "Instance %(name)s could not be terminated: %(reason)s",
                    name=self.name,
                    reason=exc,
                )
            ) from None
        _logger.info("Instance %s on %s terminated", database, server.code)
