"""``saas.instance``: one customer database, from draft to terminated.

Over 500 lines because the instance is what every customer-facing action acts on:
provisioning (an operation generator), the handover and the invitation, support
access, suspend/resume, backups' hooks and the load fields. The remote work of each
lives in ``remote/``; what is here is checks, records and messages. The next split,
when one more part comes, is by concern into ``_inherit`` files (invitation, support
access), as Odoo's own ``res.users`` does.
"""

import functools
import logging
from datetime import timedelta
from urllib.parse import urlencode

from odoo import _, api, fields, models
from odoo.exceptions import AccessError, UserError, ValidationError
from odoo.tools.misc import scan_languages

from odoo.addons.base.models.res_partner import _tz_get

from ..remote import capacity, exceptions, handover, names, postgres, provision, support_access
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
STATUS_FIELDS = (
    "state",
    "error",
    "provisioned_date",
    "invitation_state",
    "invitation_date",
    "invitation_expiry",
    "invitation_error",
    "support_login",
    "support_expiry",
    "support_granted_by",
)
SUPPORT_HOURS_PARAM = "saas_manager.support_access_hours"
DEFAULT_SUPPORT_HOURS = 1
ADMIN_GROUP = "saas_manager.group_saas_admin"
# Who the instance is handed to: fixed once it is queued (applied by the clone).
HANDOVER_FIELDS = ("admin_email", "company_name", "lang", "tz")
INVITATION_HOURS_PARAM = "saas_manager.invitation_validity_hours"
DEFAULT_INVITATION_HOURS = 72


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
    # --- handover: who the instance is for (SPEC §7.1) ---
    admin_email = fields.Char(
        string="Administrator Email",
        compute="_compute_handover_defaults",
        store=True,
        readonly=False,
        tracking=True,
        help="The customer's login and email on the instance: the invitation to choose a "
        "password goes there.",
    )
    company_name = fields.Char(
        compute="_compute_handover_defaults", store=True, readonly=False, tracking=True
    )
    lang = fields.Selection(
        selection="_selection_lang",
        string="Language",
        compute="_compute_handover_defaults",
        store=True,
        readonly=False,
    )
    tz = fields.Selection(_tz_get, string="Timezone")
    send_invitation = fields.Boolean(
        string="Invite the Customer",
        default=True,
        help="When provisioned, email the administrator a link to choose their password.",
    )
    invitation_state = fields.Selection(
        [("none", "Not Sent"), ("sent", "Sent"), ("failed", "Failed")],
        default="none",
        required=True,
        readonly=True,
        copy=False,
    )
    invitation_date = fields.Datetime(readonly=True, copy=False)
    invitation_expiry = fields.Datetime(readonly=True, copy=False)
    invitation_error = fields.Char(readonly=True, copy=False)
    # --- load, measured by the hourly sweep of its server (SPEC §10) ---
    load_date = fields.Datetime(string="Load Measured", readonly=True, copy=False)
    db_size_mb = fields.Float(
        string="Database Size (MB)",
        readonly=True,
        copy=False,
        digits=(16, 1),
        help="0 while unknown: a PostgreSQL database is never empty.",
    )
    filestore_measured = fields.Boolean(readonly=True, copy=False)
    filestore_size_mb = fields.Float(
        string="Filestore Size (MB)", readonly=True, copy=False, digits=(16, 1)
    )
    activity_measured = fields.Boolean(readonly=True, copy=False)
    user_count = fields.Integer(
        string="Users", readonly=True, copy=False, help="Active internal users of the instance."
    )
    last_login_date = fields.Datetime(
        readonly=True, copy=False, help="The latest login of an internal user."
    )
    load_error = fields.Char(readonly=True, copy=False)
    support_login = fields.Char(
        readonly=True, copy=False, help="Login of the support user open on the instance, if any."
    )
    support_expiry = fields.Datetime(readonly=True, copy=False)
    support_granted_by = fields.Many2one("res.users", readonly=True, copy=False)
    backup_ids = fields.One2many("saas.backup", "instance_id", string="Backups")
    backup_count = fields.Integer(compute="_compute_backup_count")

    _sql_constraints = []

    @api.model
    def _get_default_server(self):
        """The server a new instance goes to: the freest one with at least 10 % free,
        else the first active server, else none. Never raises."""
        servers = self.env["saas.server"]
        try:
            return servers.get_available_server(min_capacity_percent=capacity.PROVISION_MIN_PERCENT)
        except UserError:
            return servers.search([("state", "=", "active")], limit=1)

    def init(self):
        # Names are unique among the instances that are not terminated: a terminated
        # instance frees its database name and subdomain.
        self.env.cr.execute(
            "CREATE UNIQUE INDEX IF NOT EXISTS saas_instance_live_database_uniq "
            "ON saas_instance (server_id, database_name) WHERE state != 'terminated'"
        )
        self.env.cr.execute(
            "CREATE UNIQUE INDEX IF NOT EXISTS saas_instance_live_subdomain_uniq "
            "ON saas_instance (subdomain) WHERE state != 'terminated' AND subdomain IS NOT NULL"
        )

    @api.model
    def _selection_lang(self):
        # Every language Odoo knows: what matters is the template's languages, not the
        # manager's (the handover refuses one the template does not have).
        return scan_languages()

    @api.depends("partner_id", "template_id")
    def _compute_handover_defaults(self):
        for instance in self:
            partner = instance.partner_id
            if partner and not instance.admin_email:
                instance.admin_email = partner.email
            if partner and not instance.company_name:
                instance.company_name = partner.commercial_company_name or partner.name
            if not instance.lang:
                instance.lang = instance.template_id.lang or "en_US"

    @api.constrains("admin_email")
    def _check_admin_email(self):
        for instance in self.filtered("admin_email"):
            try:
                handover.validate_email(instance.admin_email)
            except exceptions.InvalidInput:
                raise ValidationError(
                    _(
                        "%(email)r is not an email address (instance %(name)s).",
                        email=instance.admin_email,
                        name=instance.name,
                    )
                ) from None

    @api.model_create_multi
    def create(self, vals_list):
        for vals in vals_list:
            self._precheck_live_names(
                vals.get("server_id") or self.default_get(["server_id"]).get("server_id"),
                vals.get("database_name"),
                vals.get("subdomain"),
                vals.get("state", "draft"),
            )
        return super().create(vals_list)

    def _precheck_live_names(self, server_id, database_name, subdomain, state, exclude=None):
        """Refuse, with a message, names another live instance holds (before the unique
        index would refuse them with a bare SQL error)."""
        if state == "terminated":
            return
        live = [("state", "!=", "terminated")]
        if exclude:
            live.append(("id", "not in", exclude))
        Instance = self.sudo().with_context(active_test=False)
        if (
            database_name
            and server_id
            and Instance.search_count(
                [*live, ("server_id", "=", server_id), ("database_name", "=", database_name)]
            )
        ):
            raise ValidationError(
                _("This server already has an instance with database %(db)s.", db=database_name)
            )
        if subdomain and Instance.search_count([*live, ("subdomain", "=", subdomain)]):
            raise ValidationError(
                _("Another instance already uses subdomain %(sub)s.", sub=subdomain)
            )

    @api.constrains("database_name", "subdomain", "server_id", "state")
    def _check_unique_live_names(self):
        for instance in self.filtered(lambda inst: inst.state != "terminated"):
            live = [("state", "!=", "terminated"), ("id", "!=", instance.id)]
            if self.search_count(
                [
                    *live,
                    ("server_id", "=", instance.server_id.id),
                    ("database_name", "=", instance.database_name),
                ]
            ):
                raise ValidationError(
                    _(
                        "This server already has an instance with database %(db)s.",
                        db=instance.database_name,
                    )
                )
            if instance.subdomain and self.search_count(
                [*live, ("subdomain", "=", instance.subdomain)]
            ):
                raise ValidationError(
                    _("Another instance already uses subdomain %(sub)s.", sub=instance.subdomain)
                )

    @api.depends("operation_ids.state", "operation_ids.step")
    def _compute_operation_count(self):
        for instance in self:
            operations = instance.operation_ids
            instance.operation_count = len(operations)
            running = operations.filtered(lambda op: op.state in ("queued", "running"))[:1]
            instance.running_operation_id = running
            instance.running_operation_step = running.step

    @api.depends("backup_ids")
    def _compute_backup_count(self):
        for instance in self:
            instance.backup_count = len(instance.backup_ids)

    def action_view_backups(self):
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id("saas_manager.saas_backup_action")
        action["domain"] = [("instance_id", "=", self.id)]
        action["context"] = {"default_instance_id": self.id}
        return action

    def action_backup(self):
        """Queue a manual backup into the plan's storage (or the company default)."""
        self.ensure_one()
        self.check_access("write")
        self._require_state(
            ("running", "suspended"),
            lambda name, state: self.env._(
                "Only a running or suspended instance can be backed up; %(name)s is %(state)s.",
                name=name,
                state=state,
            ),
        )
        self._remote_backup_check()
        record = self.env["saas.backup"]._start(self, "manual")
        operation = record.operation_ids[:1]
        return operation._queued_notification(
            operation, _("%(name)s will be backed up in the background.", name=self.name)
        )

    def _remote_backup_check(self):
        """Refuse a second backup while one is queued or running (one per instance)."""
        if (
            self.env["saas.backup"]
            .sudo()
            .search_count([("instance_id", "=", self.id), ("state", "in", ("queued", "running"))])
        ):
            raise UserError(
                _("A backup of instance %(name)s is already queued or running.", name=self.name)
            )

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
        changed = [fname for fname in LOCATION_FIELDS + HANDOVER_FIELDS if fname in vals]
        # A move's switch (run by the operation, as superuser) changes the server.
        switching = self.env.su and self.env.context.get("saas_transfer_switch")
        if located and changed and not switching:
            raise UserError(
                _(
                    "%(fields)s of instance %(name)s cannot change once it is provisioned.",
                    fields=", ".join(self._fields[fname].string for fname in changed),
                    name=located[0].name,
                )
            )
        if {"server_id", "database_name", "subdomain", "state"} & set(vals):
            for instance in self:
                self._precheck_live_names(
                    vals.get("server_id", instance.server_id.id),
                    vals.get("database_name", instance.database_name),
                    vals.get("subdomain", instance.subdomain),
                    vals.get("state", instance.state),
                    exclude=self.ids,
                )
        return super().write(vals)

    def _apply_load_result(self, measured):
        """Record a ``remote.load.InstanceLoad``; what it could not measure is unknown."""
        self.ensure_one()
        vals = {
            "load_date": fields.Datetime.now(),
            "db_size_mb": (measured.db_size_bytes or 0) / (1024 * 1024),
            "filestore_measured": measured.filestore_bytes is not None,
            "filestore_size_mb": (measured.filestore_bytes or 0) / (1024 * 1024),
            "activity_measured": measured.user_count is not None,
            "user_count": measured.user_count or 0,
            "last_login_date": measured.last_login or False,
            "load_error": "; ".join(measured.errors)[:250] or False,
        }
        self.sudo().write(vals)

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
        if not self.admin_email:
            raise UserError(
                _(
                    "Instance %(name)s has no administrator email: it is the customer's login "
                    "and where their invitation goes.",
                    name=self.name,
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

    def _base_url(self, server=None):
        """The clone's web.base.url: the instance's own origin (on ``server``, for a move)."""
        self.ensure_one()
        server = server or self.server_id
        if server.instance_domain and self.subdomain:
            scheme = server.server_url.split("://", 1)[0]
            return f"{scheme}://{self.subdomain}.{server.instance_domain}"
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
        if self.env.context.get("saas_no_invitation"):
            self.send_invitation = False
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
            "handover": self._handover(),
        }

    def _handover(self):
        """The :class:`remote.handover.Handover` of this instance (checked)."""
        self.ensure_one()
        partner = self.partner_id
        company = partner.commercial_partner_id
        try:
            return handover.Handover(
                admin_email=(self.admin_email or "").strip(),
                admin_name=partner.name or self.company_name or self.name,
                company_name=self.company_name or partner.name or self.name,
                lang=self.lang or self.template_id.lang or "en_US",
                tz=self.tz or "",
                company_email=company.email or "",
                company_phone=company.phone or "",
                country_code=company.country_id.code or "",
            )
        except exceptions.InvalidInput as exc:
            raise UserError(
                _("Instance %(name)s cannot be handed over: %(reason)s", name=self.name, reason=exc)
            ) from None

    def _op_provision(self, operation):
        """The provisioning operation (a generator run by ``saas.operation``).

        Every setting is checked again (a secret may have changed since queued);
        what exists at the target is refused, not taken over; the database, the
        partial filestore copy and the filestore are journalled after that check
        and before the step that makes them, so a failure or a killed worker leaves
        none of them, and never removes what was there before. The check's SSH
        session is the copy's (one handshake); the invitation token is issued in the
        clone's thread while the filestore is still being copied.
        """
        server = self.server_id
        template = self.template_id
        self._check_can_provision_again()
        settings = self._remote_settings()
        pg_params = settings["pg_params"]
        target_dir = settings["target_dir"]
        exists = yield RemoteStep(
            _("Checking that the database name is free"),
            postgres.database_exists,
            (pg_params, self.database_name),
        )
        if exists:
            raise OperationError(self._not_ours_message(_("database %s", self.database_name)))
        temp_dir = remote_filestore.partial_copy_path(target_dir)
        expiry = self._invitation_expiry()
        try:
            result = yield RemoteStep(
                _("Cloning the template and copying its filestore"),
                provision.provision,
                (pg_params, settings["ssh_settings"], template.database_name),
                {
                    "target": self.database_name,
                    "source_dir": settings["source_dir"],
                    "target_dir": target_dir,
                    "base_url": self._base_url(),
                    "temp_dir": temp_dir,
                    "handover": settings["handover"],
                    "invitation": (
                        self._invitation_call(pg_params, expiry) if self.send_invitation else None
                    ),
                    "publish": False,
                },
                makes=(
                    Made("database", server.id, self.database_name),
                    Made("directory", server.id, temp_dir),
                ),
            )
        except exceptions.RemotePathExists:
            # Found by the copy's own check on the host, before it made anything
            # there; the clone beside it was dropped, the directory never journalled.
            raise OperationError(self._not_ours_message(_("directory %s", target_dir))) from None
        except exceptions.DatabaseExists:
            # Made by someone else since the check: CREATE DATABASE refused it, and
            # the engine marked its entry as existing, so it is never dropped.
            raise OperationError(
                self._not_ours_message(_("database %s", self.database_name))
            ) from None
        if result.staged is not None:
            # The target directory was free when the copy began (checked on the host):
            # journalled now, then renamed into place. One that appears meanwhile is
            # refused by the rename and marked existing (never removed).
            try:
                yield RemoteStep(
                    _("Putting the filestore in place"),
                    result.staged.publish,
                    makes=(Made("directory", server.id, target_dir),),
                )
            except exceptions.RemotePathExists:
                raise OperationError(
                    self._not_ours_message(_("directory %s", target_dir))
                ) from None
            finally:
                result.staged.discard()  # nothing once published
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
        if not self.send_invitation:
            return
        # The instance is the customer's now: an invitation that cannot be made or
        # sent is recorded on it (to be sent again), it never undoes the provision.
        if result.invitation_error is not None:
            self._record_invitation_failure(str(result.invitation_error))
            return
        self._send_invitation_mail(result.invitation, expiry)

    def _check_no_operation_in_progress(self):
        """Refuse an action while an operation of this instance is queued or running
        (a move, a provision...): the two would work on the same database."""
        self.ensure_one()
        if self.running_operation_id:
            raise UserError(
                _(
                    "Instance %(name)s has an operation in progress (%(operation)s): wait for "
                    "it to end.",
                    name=self.name,
                    operation=self.running_operation_id.display_label,
                )
            )

    def _not_ours_message(self, found):
        """Why a provision refuses a target that exists: it is someone else's."""
        return _(
            "%(found)s already exists on %(server)s: it is not this instance's, so it was "
            "left alone and nothing of this provision was kept. Choose another database name.",
            found=found,
            server=self.server_id.name,
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
                    ("operation_id.kind", "in", ("provision", "restore", "transfer")),
                    ("kind", "in", ("database", "directory")),
                    ("state", "=", "kept"),
                ]
            )
        )

    # ------------------------------------------------------------------
    # Life cycle
    # ------------------------------------------------------------------

    def action_suspend(self):
        """Make the instance unreachable: its database refuses connections.

        Its users are logged out and cannot log in, the hosting Odoo no longer lists
        it (so its crons stop); its data is untouched. Quick: done in the request.
        """
        self.check_access("write")
        self._require_state(
            ("running",),
            lambda name, state: self.env._(
                "Only a running instance can be suspended; %(name)s is %(state)s.",
                name=name,
                state=state,
            ),
        )
        for instance in self:
            instance._set_connections_allowed(False)
            instance._write_state({"state": "suspended"})
            instance.message_post(body=_("Suspended: its database refuses connections."))
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
        for instance in self:
            instance._set_connections_allowed(True)
            instance._write_state({"state": "running"})
            instance.message_post(body=_("Resumed: its database accepts connections again."))
        return True

    def _set_connections_allowed(self, allowed):
        self.ensure_one()
        try:
            postgres.set_connections_allowed(
                self.server_id._pg_params(), self.database_name, allowed
            )
        except exceptions.RemoteError as exc:
            raise UserError(
                _("Instance %(name)s: %(reason)s", name=self.name, reason=exc)
            ) from None

    # ------------------------------------------------------------------
    # Support access
    # ------------------------------------------------------------------

    def action_support_access(self):
        """Open a support user on the running instance for a bounded time (admins only).

        The operator gets a login and a password of their own, shown once in the
        notification; the customer's password is neither known nor changed.
        """
        self.ensure_one()
        if not (self.env.su or self.env.user.has_group(ADMIN_GROUP)):
            raise AccessError(_("Only a SaaS administrator may open a support access."))
        self._require_state(
            ("running",),
            lambda name, state: self.env._(
                "Support access needs a running instance; %(name)s is %(state)s.",
                name=name,
                state=state,
            ),
        )
        if self.support_login:
            self._revoke_support_access()
        hours = int(
            self.env["ir.config_parameter"]
            .sudo()
            .get_param(SUPPORT_HOURS_PARAM, DEFAULT_SUPPORT_HOURS)
        )
        expiry = fields.Datetime.now() + timedelta(hours=max(1, hours))
        try:
            login, password = postgres.run_in_database(
                self.server_id._pg_params(),
                self.database_name,
                functools.partial(support_access.grant, label=self.env.user.name),
            )
        except exceptions.RemoteError as exc:
            raise UserError(
                _("Support access to %(name)s failed: %(reason)s", name=self.name, reason=exc)
            ) from None
        self._write_state(
            {"support_login": login, "support_expiry": expiry, "support_granted_by": self.env.uid}
        )
        self.message_post(
            body=_(
                "Support access opened by %(user)s until %(expiry)s UTC (user %(login)s).",
                user=self.env.user.name,
                expiry=fields.Datetime.to_string(expiry),
                login=login,
            )
        )
        self.env.ref("saas_manager.ir_cron_saas_support_access_revoke").sudo()._trigger(at=expiry)
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {
                "title": _(
                    "Support access until %(expiry)s UTC", expiry=fields.Datetime.to_string(expiry)
                ),
                "message": _(
                    "%(url)s — login %(login)s, password %(password)s (shown once).",
                    url=self.url,
                    login=login,
                    password=password,
                ),
                "type": "warning",
                "sticky": True,
                "next": {"type": "ir.actions.client", "tag": "soft_reload"},
            },
        }

    def action_revoke_support_access(self):
        self.ensure_one()
        if not (self.env.su or self.env.user.has_group(ADMIN_GROUP)):
            raise AccessError(_("Only a SaaS administrator may revoke a support access."))
        self._revoke_support_access()
        return True

    def _revoke_support_access(self, reason=None):
        self.ensure_one()
        login = self.support_login
        if not login:
            return
        try:
            postgres.run_in_database(
                self.server_id._pg_params(),
                self.database_name,
                functools.partial(support_access.revoke, login=login),
            )
        except exceptions.RemoteError as exc:
            raise UserError(
                _(
                    "Revoking the support access to %(name)s failed: %(reason)s",
                    name=self.name,
                    reason=exc,
                )
            ) from None
        self._write_state(
            {"support_login": False, "support_expiry": False, "support_granted_by": False}
        )
        self.message_post(
            body=reason
            or _(
                "Support access %(login)s revoked by %(user)s.",
                login=login,
                user=self.env.user.name,
            )
        )

    @api.model
    def _cron_revoke_support_access(self):
        """Cron: revoke the support accesses whose time is over."""
        expired = self.search(
            [("support_login", "!=", False), ("support_expiry", "<=", fields.Datetime.now())]
        )
        for instance in expired:
            try:
                with self.env.cr.savepoint():
                    instance._revoke_support_access(
                        reason=_(
                            "Support access %(login)s expired and was revoked.",
                            login=instance.support_login,
                        )
                    )
            except UserError as exc:
                _logger.error(
                    "Support access of %s not revoked: %s", instance.database_name, exc.args[0]
                )
        return True

    # ------------------------------------------------------------------
    # Invitation
    # ------------------------------------------------------------------

    def _invitation_expiry(self):
        hours = int(
            self.env["ir.config_parameter"]
            .sudo()
            .get_param(INVITATION_HOURS_PARAM, DEFAULT_INVITATION_HOURS)
        )
        return fields.Datetime.now() + timedelta(hours=max(1, hours))

    def _invitation_call(self, pg_params, expiry):
        """Arguments of ``postgres.run_in_database`` that issue an invitation token."""
        self.ensure_one()
        return (
            pg_params,
            self.database_name,
            functools.partial(handover.issue_invitation, expires_at=expiry),
        )

    def _invitation_url(self, token):
        """Where the customer chooses their password, on their own instance.

        With an instance domain (the server filters databases by host name), the
        instance's reset-password page itself. Without one, the server hosts other
        databases and that page cannot tell which one a fresh browser means (Odoo 18
        answers 404 without a database in the session): the link opens the login
        page of the customer's database, which selects it, prefills the login and
        keeps the token for its "Reset Password" link.
        """
        self.ensure_one()
        server = self.server_id
        if server.instance_domain and self.subdomain:
            return f"{self.url}/web/reset_password?{urlencode({'token': token})}"
        query = urlencode({"db": self.database_name, "token": token, "login": self.admin_email})
        return f"{server.server_url}/web/login?{query}"

    def action_send_invitation(self):
        """Send the customer a new invitation (the earlier ones stop working)."""
        self.ensure_one()
        self.check_access("write")
        self._require_state(
            ("running",),
            lambda name, state: self.env._(
                "Only a running instance can be sent an invitation; %(name)s is %(state)s.",
                name=name,
                state=state,
            ),
        )
        expiry = self._invitation_expiry()
        try:
            token = postgres.run_in_database(
                *self._invitation_call(self.server_id._pg_params(), expiry)
            )
        except exceptions.RemoteError as exc:
            self._record_invitation_failure(str(exc))
        else:
            self._send_invitation_mail(token, expiry)
        sent = self.invitation_state == "sent"
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {
                "title": _("Invitation sent") if sent else _("Invitation failed"),
                "message": _("To %(email)s.", email=self.admin_email)
                if sent
                else self.invitation_error,
                "type": "success" if sent else "danger",
                "sticky": not sent,
                "next": {"type": "ir.actions.client", "tag": "soft_reload"},
            },
        }

    def _send_invitation_mail(self, token, expiry):
        """Mail the invitation from the manager's outgoing mail; record the outcome.

        The link is rendered into the mail only: not in the chatter, not in a log.
        """
        self.ensure_one()
        template = self.env.ref("saas_manager.saas_instance_invitation_mail_template")
        mail_id = (
            template.sudo()
            .with_context(
                invitation_url=self._invitation_url(token),
                invitation_expiry=expiry,
                lang=self.lang or "en_US",
            )
            .send_mail(self.id, force_send=True, raise_exception=False)
        )
        mail = self.env["mail.mail"].sudo().browse(mail_id).exists()
        if mail and mail.state == "exception":
            self._record_invitation_failure(mail.failure_reason or _("the mail was not sent"))
            # Not kept for later: a failed mail holds a link that still works.
            mail.unlink()
            return
        self._write_state(
            {
                "invitation_state": "sent",
                "invitation_date": fields.Datetime.now(),
                "invitation_expiry": expiry,
                "invitation_error": False,
            }
        )
        self.message_post(
            body=_(
                "Invitation sent to %(email)s, valid until %(expiry)s UTC.",
                email=self.admin_email,
                expiry=fields.Datetime.to_string(expiry),
            )
        )

    def _record_invitation_failure(self, reason):
        self._write_state({"invitation_state": "failed", "invitation_error": reason[:250]})
        self.message_post(body=_("The invitation could not be sent: %(reason)s", reason=reason))
        _logger.warning("Invitation for instance %s failed: %s", self.database_name, reason)

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
        self._check_no_operation_in_progress()
        if not self._made_by_provisioning():
            # Nothing remote to remove: terminated at once.
            self._write_state({"state": "terminated", "error": False})
            return True
        backup = self._pre_terminate_backup()
        if backup:
            return backup.operation_ids[:1]._queued_notification(
                backup.operation_ids[:1],
                _("%(name)s is backed up, then terminated, in the background.", name=self.name),
            )
        operation = self.env["saas.operation"]._queue("terminate", self, self.server_id)
        return operation._queued_notification(
            operation, _("%(name)s will be terminated in the background.", name=self.name)
        )

    def _pre_terminate_backup(self):
        """Queue the backup taken before a termination (which it then queues), or None.

        Skipped when an administrator says so (context ``saas_skip_backup``), for an
        instance whose database is not there (not running or suspended), and when no
        storage is configured at all (said in the chatter).
        """
        self.ensure_one()
        if self.env.context.get("saas_skip_backup") and (
            self.env.su or self.env.user.has_group(ADMIN_GROUP)
        ):
            self.message_post(body=_("Terminated without a backup, as an administrator asked."))
            return None
        if self.state not in ("running", "suspended"):
            return None
        Backup = self.env["saas.backup"]
        if not Backup._storage_for(self):
            self.message_post(
                body=_("No backup storage is configured: terminated without a backup.")
            )
            return None
        self._remote_backup_check()
        return Backup._start(self, "pre_terminate")

    def action_terminate_without_backup(self):
        """Terminate without the backup first (administrators)."""
        if not (self.env.su or self.env.user.has_group(ADMIN_GROUP)):
            raise AccessError(_("Only a SaaS administrator may terminate without a backup."))
        return self.with_context(saas_skip_backup=True).action_terminate()

    def _op_terminate(self, operation):
        """The termination operation (a generator run by ``saas.operation``)."""
        server = self.server_id
        made = self._made_by_provisioning()
        # A moved instance may still have its source copy on the server it left.
        for host in made.server_id:
            on_host = made.filtered(lambda entry, host=host: entry.server_id == host)
            databases = on_host.filtered(lambda entry: entry.kind == "database").mapped("name")
            directories = on_host.filtered(lambda entry: entry.kind == "directory").mapped("name")
            ssh_settings = host._ssh_settings() if directories else None
            yield RemoteStep(
                _("Dropping the database and removing the filestore on %(server)s",
                  server=host.name),
                provision.remove,
                (host._pg_params(), ssh_settings),
                {"databases": databases, "directories": directories},
            )  # fmt: skip
            on_host.write({"state": "removed"})
        self._write_state({"state": "terminated", "error": False})
        self.message_post(body=_("Terminated: database and filestore removed."))
        _logger.info("Instance %s on %s terminated", self.database_name, server.code)
