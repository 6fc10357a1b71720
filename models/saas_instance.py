import logging

from odoo import _, api, fields, models
from odoo.exceptions import AccessError, UserError, ValidationError

from ..remote import capacity, exceptions, names, provision
from ..remote import filestore as remote_filestore
from .saas_operation import Made, OperationError, RemoteStep

_logger = logging.getLogger(__name__)

# Instances that hold a slot when another instance of the server is provisioned.
# Drafts are requests, not reservations: were they counted, two drafts competing
# for a server's last slot would each see the other and neither would get it.
PROVISIONED_STATES = ("provisioning", "running", "suspended")
# What a provisioned instance is made of: fixed once it exists on its server.
LOCATION_FIELDS = ("database_name", "server_id", "template_id", "subdomain")
# Set by the instance's buttons and its operations; by hand, only by admins. What
# Terminate drops is in the provisioning's journal, which nobody writes.
STATUS_FIELDS = ("state", "error", "provisioned_date")
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
    error = fields.Text(copy=False, readonly=True)
    operation_ids = fields.One2many("saas.operation", "instance_id", string="Operations")
    operation_count = fields.Integer(compute="_compute_operation_count")
    running_operation_id = fields.Many2one(
        "saas.operation", compute="_compute_operation_count", string="Operation in Progress"
    )
    running_operation_step = fields.Char(compute="_compute_operation_count", string="Step")

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

    @api.depends("operation_ids.state", "operation_ids.step")
    def _compute_operation_count(self):
        for instance in self:
            operations = instance.operation_ids
            instance.operation_count = len(operations)
            running = operations.filtered(lambda op: op.state in ("queued", "running"))[:1]
            instance.running_operation_id = running
            instance.running_operation_step = running.step

    def action_view_operations(self):
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id("saas_manager.saas_operation_action")
        action["domain"] = [("instance_id", "=", self.id)]
        return action

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
        """Check at once, then queue the provisioning; the operations cron does it.

        Checks fail with a UserError and change nothing. Once queued, the instance
        is *provisioning* and holds its slot; the operation clones the template,
        copies its filestore and records the result (*running*, or *failed* with
        the reason and nothing left on the server).
        """
        self.ensure_one()
        self.check_access("write")
        self._check_can_provision()
        self._remote_settings()
        self._write_state({"state": "provisioning", "error": False})
        operation = self.env["saas.operation"]._queue("provision", self, self.server_id)
        return operation._queued_notification(
            operation,
            _("%(name)s will be provisioned in the background.", name=self.name),
        )

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

    def _op_provision(self, operation):
        """The provisioning operation (a generator run by ``saas.operation``).

        Every setting is checked again (a secret may have changed since queued);
        what exists at the target is refused, not taken over; the database, the
        partial filestore copy and the filestore are journalled before the step
        that makes them, so a failure or a killed worker leaves none of them.
        """
        server = self.server_id
        template = self.template_id
        self._check_can_provision_again()
        settings = self._remote_settings()
        target_dir = settings["target_dir"]
        found = yield RemoteStep(
            _("Checking that the database and the filestore are free"),
            provision.taken,
            (settings["pg_params"], settings["ssh_settings"], self.database_name, target_dir),
        )
        if found:
            raise OperationError(
                _(
                    "%(found)s already exists on %(server)s: it is not this instance's, so "
                    "nothing was made. Choose another database name.",
                    found=", ".join(found),
                    server=server.name,
                )
            )
        temp_dir = remote_filestore.partial_copy_path(target_dir)
        result = yield RemoteStep(
            _("Cloning the template and copying its filestore"),
            provision.provision,
            (settings["pg_params"], settings["ssh_settings"], template.database_name),
            {
                "target": self.database_name,
                "source_dir": settings["source_dir"],
                "target_dir": target_dir,
                "base_url": self._base_url(),
                "temp_dir": temp_dir,
            },
            makes=(
                Made("database", server.id, self.database_name),
                Made("directory", server.id, temp_dir),
                Made("directory", server.id, target_dir),
            ),
        )
        self._write_state({"state": "running", "provisioned_date": fields.Datetime.now()})
        self.message_post(
            body=_(
                "Provisioned on %(server)s from %(template)s in %(seconds).2f s.",
                server=server.name,
                template=template.name,
                seconds=result.duration_s,
            )
        )
        _logger.info(
            "Instance %s provisioned on %s in %.2f s (strategy %s)",
            self.database_name,
            server.code,
            result.duration_s,
            result.clone.strategy,
        )

    def _check_can_provision_again(self):
        """At run time: the server and template may have changed since queued."""
        self.ensure_one()
        if self.state != "provisioning":
            raise OperationError(
                _("Instance %(name)s is no longer waiting to be provisioned.", name=self.name)
            )
        if self.server_id.state != "active":
            raise OperationError(
                _("Server %(server)s is not active.", server=self.server_id.name), permanent=False
            )
        if self.template_id.state != "ready" or self.template_id.server_id != self.server_id:
            raise OperationError(
                _(
                    "Template %(template)s is not ready on this server.",
                    template=self.template_id.name,
                )
            )

    def _op_failed(self, operation, reason):
        if operation.kind == "provision":
            self._write_state({"state": "failed", "error": reason})
            self.message_post(body=_("Provisioning failed: %(reason)s", reason=reason))
        else:
            self._write_state({"error": reason})
            self.message_post(body=_("Termination failed: %(reason)s", reason=reason))

    def _op_cancelled(self, operation):
        if operation.kind == "provision" and self.state == "provisioning":
            self._write_state({"state": "draft"})

    def _made_by_provisioning(self):
        """The journal entries this instance's provisioning made and kept."""
        self.ensure_one()
        return (
            self.env["saas.operation.journal"]
            .sudo()
            .search(
                [
                    ("operation_id.instance_id", "=", self.id),
                    ("operation_id.kind", "=", "provision"),
                    ("state", "=", "kept"),
                ]
            )
        )

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
        """Queue the termination: drop the instance's database and filestore, free its slot.

        Only what this instance's provisioning is recorded in its operation's
        journal to have made is dropped: a draft has nothing, a failed provision
        left nothing, and ``database_name`` alone never decides what is dropped.
        Safe to repeat: what is already gone is skipped.
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
        if not self._made_by_provisioning():
            # Nothing remote to remove: terminated at once.
            self._write_state({"state": "terminated", "error": False})
            return True
        operation = self.env["saas.operation"]._queue("terminate", self, self.server_id)
        return operation._queued_notification(
            operation, _("%(name)s will be terminated in the background.", name=self.name)
        )

    def _op_terminate(self, operation):
        """The termination operation (a generator run by ``saas.operation``)."""
        server = self.server_id
        made = self._made_by_provisioning()
        databases = made.filtered(lambda entry: entry.kind == "database").mapped("name")
        directories = made.filtered(lambda entry: entry.kind == "directory").mapped("name")
        ssh_settings = server._ssh_settings() if directories else None
        yield RemoteStep(
            _("Dropping the database and removing the filestore"),
            provision.remove,
            (server._pg_params(), ssh_settings),
            {"databases": databases, "directories": directories},
        )
        made.write({"state": "removed"})
        self._write_state({"state": "terminated", "error": False})
        self.message_post(body=_("Terminated: database and filestore removed."))
        _logger.info("Instance %s on %s terminated", self.database_name, server.code)
