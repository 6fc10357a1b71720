import logging
import re
import secrets
from urllib.parse import urlencode

from odoo import _, api, fields, models
from odoo.exceptions import AccessError, UserError, ValidationError

from ..remote import exceptions, names, postgres, provision, transfer
from .saas_operation import Made, OperationError, RemoteStep

_logger = logging.getLogger(__name__)

MODULE_NAME = re.compile(r"[a-z0-9_]+")
# Installed in every template: instances take invitations through its pages.
INVITATION_MODULE = "auth_signup"
# Seconds the managed server may spend installing the modules of a template.
INSTALL_TIMEOUT = 1800.0
ADMIN_GROUP = "saas_manager.group_saas_admin"
# Set by the template's buttons and its creation job; by hand, only by admins.
STATUS_FIELDS = ("state", "error")
# What a template is made of: fixed, for non-admins, once its database exists
# (or is being made). Repointing a ready template at another database would let
# instances be cloned from a database that is not a template.
LOCATION_FIELDS = ("database_name", "server_id")


class SaasTemplate(models.Model):
    _name = "saas.template"
    _description = "SaaS Template Database"
    _inherit = ["mail.thread", "saas.secret.mixin"]
    _order = "name, id"
    _secret_fields = ("admin_password",)

    name = fields.Char(required=True, tracking=True)
    database_name = fields.Char(
        required=True,
        tracking=True,
        help="Name of the template database on the server's PostgreSQL.",
    )
    server_id = fields.Many2one(
        "saas.server",
        required=True,
        tracking=True,
        ondelete="restrict",
        domain="[('state', '=', 'active')]",
        help="Server where this template database is hosted.",
    )
    module_names = fields.Char(
        string="Modules",
        help="Technical names of the modules to install, separated by commas (e.g. sale,crm).",
    )
    lang = fields.Selection(
        selection="_selection_lang", string="Language", default="en_US", required=True
    )
    demo = fields.Boolean(string="Demo Data")
    state = fields.Selection(
        [
            ("draft", "Draft"),
            ("creating", "Creating"),
            ("ready", "Ready"),
            ("failed", "Failed"),
        ],
        default="draft",
        required=True,
        tracking=True,
        copy=False,
    )
    error = fields.Text(copy=False, readonly=True)
    instance_ids = fields.One2many("saas.instance", "template_id", string="Instances")
    admin_password = fields.Char(
        compute="_compute_secrets",
        inverse="_inverse_secrets",
        search="_search_secret",
        groups=ADMIN_GROUP,
        copy=False,
        help="Password of the template database's administrator (login 'admin'), set when "
        "the database is created, so that an operator can log in to set the template up. "
        "Instances never share it.",
    )
    admin_password_encrypted = fields.Char(groups=ADMIN_GROUP, copy=False)
    copied_from_id = fields.Many2one(
        "saas.template",
        string="Copy Of",
        readonly=True,
        copy=False,
        help="The template this one was copied from, on another server.",
    )
    operation_ids = fields.One2many("saas.operation", "template_id", string="Operations")
    operation_count = fields.Integer(compute="_compute_operation_count")

    _sql_constraints = [
        (
            "database_name_server_unique",
            "UNIQUE(server_id, database_name)",
            "This server already has a template with this database name.",
        ),
    ]

    def write(self, vals):
        if not (self.env.su or self.env.user.has_group(ADMIN_GROUP)):
            changed = [fname for fname in STATUS_FIELDS if fname in vals]
            if changed:
                raise AccessError(
                    _(
                        "%(fields)s of a template change through its buttons; only a SaaS "
                        "administrator may set them by hand.",
                        fields=", ".join(self._fields[fname].string for fname in changed),
                    )
                )
            made = self.filtered(lambda template: template.state not in ("draft", "failed"))
            changed = [fname for fname in LOCATION_FIELDS if fname in vals]
            if made and changed:
                raise AccessError(
                    _(
                        "%(fields)s of template %(name)s cannot change once its database "
                        "exists; only a SaaS administrator may change them.",
                        fields=", ".join(self._fields[fname].string for fname in changed),
                        name=made[0].name,
                    )
                )
        return super().write(vals)

    @api.depends("admin_password_encrypted")
    def _compute_secrets(self):
        return super()._compute_secrets()

    @api.depends("operation_ids")
    def _compute_operation_count(self):
        for template in self:
            template.operation_count = len(template.operation_ids)

    @api.model
    def _selection_lang(self):
        return self.env["res.lang"].get_installed()

    @api.constrains("database_name")
    def _check_database_name(self):
        for template in self:
            try:
                names.validate_database_name(template.database_name or "")
            except exceptions.InvalidDatabaseName as exc:
                raise ValidationError(str(exc)) from None

    @api.constrains("module_names")
    def _check_module_names(self):
        for template in self:
            template._module_list()

    def _module_list(self):
        """The technical names of ``module_names``, in order, without duplicates."""
        self.ensure_one()
        modules = []
        for item in (self.module_names or "").split(","):
            module = item.strip()
            if not module:
                continue
            if not MODULE_NAME.fullmatch(module):
                raise ValidationError(
                    _(
                        "%(module)r is not a module's technical name (lowercase letters, "
                        "digits and '_', e.g. sale_management).",
                        module=module,
                    )
                )
            if module not in modules:
                modules.append(module)
        return modules

    def action_create_database(self):
        """Check at once, then queue the creation of the template databases.

        Creating a database and installing modules takes minutes, longer than an
        HTTP worker may run, so the button only checks and queues; the operations
        cron does the work and reports its end.
        """
        self.check_access("write")
        for template in self:
            if template.state not in ("draft", "failed"):
                raise UserError(
                    _(
                        "Template %(name)s is %(state)s: only a draft or failed template "
                        "can be created.",
                        name=template.name,
                        state=template.state,
                    )
                )
            template._check_server_active()
            template.server_id._master_password()
            template.server_id._pg_params()
        self.sudo().write({"state": "creating", "error": False})
        Operation = self.env["saas.operation"]
        for template in self:
            operation = Operation._queue("template_create", template, template.server_id)
        return operation._queued_notification(
            operation,
            _(
                "%(names)s will be created in the background; you are notified when it ends.",
                names=", ".join(self.mapped("name")),
            ),
        )

    def _check_server_active(self):
        self.ensure_one()
        if self.server_id.state != "active":
            raise UserError(
                _(
                    "Server %(server)s of template %(name)s is not active.",
                    server=self.server_id.name,
                    name=self.name,
                )
            )

    def _create_database(self):
        """Create this template's database now, through the operations engine.

        For tests and the shell: queues the operation and runs the queue in this
        thread. Returns True when the template is ready.
        """
        self.ensure_one()
        if self.state in ("draft", "failed"):
            self.action_create_database()
        self.env["saas.operation"]._run_until_idle()
        return self.state == "ready"

    def _op_template_create(self, operation):
        """The template creation operation (a generator run by ``saas.operation``).

        The database is ours only when the server's PostgreSQL said it did not
        exist just before our create: then it is journalled, and whatever a failure
        or a killed worker leaves of it is dropped. The managed Odoo's answers never
        decide that.
        """
        server = self.server_id
        db = self.database_name
        try:
            self._check_server_active()
            master = server._master_password()
            pg_params = server._pg_params()
            modules = self._module_list()
        except ValidationError as exc:
            raise OperationError(str(exc.args[0])) from None
        # Instances are handed to their customers with an invitation to choose a
        # password on the instance's own reset page: auth_signup provides it.
        if INVITATION_MODULE not in modules:
            modules.insert(0, INVITATION_MODULE)
        exists = yield RemoteStep(
            _("Checking that database %(db)s is free", db=db),
            postgres.database_exists,
            (pg_params, db),
        )
        if exists:
            raise OperationError(
                _(
                    "Database %(db)s already exists on %(server)s: choose another name "
                    "or remove it there.",
                    db=db,
                    server=server.name,
                )
            )
        makes = [Made("database", server.id, db)]
        try:
            server._ssh_settings()
            makes.append(Made("directory", server.id, server._filestore_path(db)))
        except UserError:
            _logger.info(
                "Server %s has no usable SSH access: a half-made filestore of %s would stay",
                server.code,
                db,
            )
        # Kept (encrypted) so that an operator can log in to the template to set it
        # up; instances get an identity and an administrator of their own.
        admin_password = secrets.token_urlsafe(24)
        self.sudo().admin_password = admin_password
        client = server._rpc_client(timeout=INSTALL_TIMEOUT)
        try:
            yield RemoteStep(
                _("Creating database %(db)s", db=db),
                client.create_database,
                (master, db, self.demo, self.lang, admin_password),
                makes=tuple(makes),
            )
            if modules:
                problems = yield RemoteStep(
                    _("Installing %(modules)s", modules=", ".join(modules)),
                    install_modules,
                    (client, db, admin_password, modules),
                )
                self._raise_for_install_problems(problems)
        finally:
            client.close()
        self.sudo().write({"state": "ready", "error": False})
        self.message_post(body=_("Template database %(db)s is ready.", db=db))
        _logger.info("Template database %s on %s is ready", db, server.code)

    def _op_template_copy(self, operation):
        """Copy ``copied_from_id`` (a ready template) into this new template's server."""
        origin = self.copied_from_id
        source, target = origin.server_id, self.server_id
        if origin.state != "ready":
            raise OperationError(_("Template %(name)s is not ready.", name=origin.name))
        try:
            target._check_can_receive(source)
        except UserError as exc:
            raise OperationError(str(exc.args[0])) from None
        db = self.database_name
        target_dir = target._filestore_path(db)
        found = yield RemoteStep(
            _("Checking that the database and the filestore are free on %(server)s",
              server=target.name),
            provision.taken,
            (target._pg_params(), target._ssh_settings(), db, target_dir),
        )  # fmt: skip
        if found:
            raise OperationError(
                _(
                    "%(found)s already exists on %(server)s: nothing was made.",
                    found=", ".join(found),
                    server=target.name,
                )
            )
        hosts = (
            transfer.Host(source._pg_params(), source._ssh_settings()),
            transfer.Host(target._pg_params(), target._ssh_settings()),
        )
        yield RemoteStep(
            _("Copying template %(name)s to %(server)s", name=origin.name, server=target.name),
            transfer.copy_pass,
            hosts,
            {"database": origin.database_name, "source_dir": source._filestore_path(
                origin.database_name), "target_database": db, "target_dir": target_dir},
            makes=(Made("database", target.id, db), Made("directory", target.id, target_dir)),
        )  # fmt: skip
        yield RemoteStep(
            _("Giving the copy its own identity"),
            transfer.prepare_copy,
            (target._pg_params(), db),
            {"base_url": target.server_url},
        )
        # The same database: its administrator's password is the original's.
        self.sudo().write(
            {"state": "ready", "error": False, "admin_password": origin.sudo().admin_password}
        )
        self.message_post(
            body=_("Copied from template %(name)s on %(server)s.", name=origin.name,
                   server=source.name)
        )  # fmt: skip

    def action_copy_to_server(self):
        """Open the wizard that copies this template to another server."""
        self.ensure_one()
        self.check_access("write")
        return {
            "type": "ir.actions.act_window",
            "name": _("Copy to Server"),
            "res_model": "saas.instance.transfer",
            "view_mode": "form",
            "target": "new",
            "context": {"default_template_id": self.id, "default_mode": "copy"},
        }

    def _copy_to_server(self, target, database_name):
        """Create the copy of this ready template on ``target`` and queue its operation."""
        self.ensure_one()
        self.check_access("write")
        if self.state != "ready":
            raise UserError(_("Only a ready template can be copied; %(name)s is not.",
                              name=self.name))  # fmt: skip
        target._check_can_receive(self.server_id)
        if self.sudo().search_count(
            [("server_id", "=", target.id), ("database_name", "=", database_name)]
        ):
            raise UserError(
                _(
                    "Server %(server)s already has a template with database %(db)s.",
                    server=target.name,
                    db=database_name,
                )
            )
        copy = self.sudo().create(
            {
                "name": _("%(name)s (%(server)s)", name=self.name, server=target.code),
                "database_name": database_name,
                "server_id": target.id,
                "module_names": self.module_names,
                "lang": self.lang,
                "demo": self.demo,
                "copied_from_id": self.id,
                "state": "creating",
            }
        )
        operation = self.env["saas.operation"]._queue(
            "template_copy", copy, self.server_id, target_server_id=target.id
        )
        return copy, operation

    def _raise_for_install_problems(self, problems):
        if problems.get("refused_login"):
            raise OperationError(
                _("The new database %(db)s refused the admin login.", db=self.database_name)
            )
        if problems.get("unknown"):
            raise OperationError(
                _(
                    "Server %(server)s has no module %(modules)s.",
                    server=self.server_id.name,
                    modules=", ".join(problems["unknown"]),
                )
            )
        if problems.get("not_installed"):
            raise OperationError(
                _(
                    "Modules %(modules)s did not install.",
                    modules=", ".join(problems["not_installed"]),
                )
            )

    def _op_failed(self, operation, reason):
        self.sudo().write({"state": "failed", "error": reason, "admin_password": False})
        if operation.kind == "template_copy":
            self.message_post(body=_("The template copy failed: %(reason)s", reason=reason))
            return
        self.message_post(body=_("Template database creation failed: %(reason)s", reason=reason))

    def _op_cancelled(self, operation):
        if self.state == "creating":
            self.sudo().write({"state": "draft"})

    def action_reset_to_draft(self):
        self.check_access("write")
        self.filtered(lambda template: template.state == "failed").sudo().write(
            {"state": "draft", "error": False}
        )
        return True

    def action_view_operations(self):
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id("saas_manager.saas_operation_action")
        action["domain"] = [("template_id", "=", self.id)]
        return action

    def action_open_login_page(self):
        """Open the template database's login page, to log in as its administrator."""
        self.ensure_one()
        url = f"{self.server_id.server_url}/web/login?{urlencode({'db': self.database_name})}"
        return {"type": "ir.actions.act_url", "url": url, "target": "new"}


def install_modules(client, db, admin_password, modules):
    """Install ``modules`` in ``db`` over JSON-RPC as its admin; plain values only.

    Returns what went wrong: ``{"refused_login": True}``, ``{"unknown": [...]}``,
    ``{"not_installed": [...]}``, or ``{}`` when every module is installed.
    """
    uid = client.login(db, "admin", admin_password)
    if not uid:
        return {"refused_login": True}
    found = client.execute_kw(
        db,
        uid,
        admin_password,
        "ir.module.module",
        "search_read",
        [[("name", "in", modules)]],
        {"fields": ["name", "state"]},
    )
    unknown = sorted(set(modules) - {module["name"] for module in found})
    if unknown:
        return {"unknown": unknown}
    ids = [module["id"] for module in found]
    client.execute_kw(
        db, uid, admin_password, "ir.module.module", "button_immediate_install", [ids]
    )
    not_installed = client.execute_kw(
        db,
        uid,
        admin_password,
        "ir.module.module",
        "search_read",
        [[("id", "in", ids), ("state", "!=", "installed")]],
        {"fields": ["name"]},
    )
    if not_installed:
        return {"not_installed": [module["name"] for module in not_installed]}
    return {}
