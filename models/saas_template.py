import logging
import re
import secrets
import time

from odoo import _, api, fields, models
from odoo.exceptions import AccessError, UserError, ValidationError

from ..remote import exceptions, names, postgres

_logger = logging.getLogger(__name__)

MODULE_NAME = re.compile(r"[a-z0-9_]+")
# Seconds the managed server may spend installing the modules of a template.
INSTALL_TIMEOUT = 1800.0
# Dropping a half-made database through Odoo: attempts, and the pause between them.
DROP_ATTEMPTS = 3
DROP_RETRY_SECONDS = 2.0
ADMIN_GROUP = "saas_manager.group_saas_admin"
# Set by the template's buttons and its creation job; by hand, only by admins.
STATUS_FIELDS = ("state", "error")
# What a template is made of: fixed, for non-admins, once its database exists
# (or is being made). Repointing a ready template at another database would let
# instances be cloned from a database that is not a template.
LOCATION_FIELDS = ("database_name", "server_id")


class TemplateError(Exception):
    """A template step failed for a reason found in Odoo's answers."""


class SaasTemplate(models.Model):
    _name = "saas.template"
    _description = "SaaS Template Database"
    _inherit = ["mail.thread"]
    _order = "name, id"

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
        """Queue the creation of the template databases; a cron job does the work.

        Creating a database and installing modules takes minutes, longer than an
        HTTP worker may run, so the button only checks and queues.
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
        self.sudo().write({"state": "creating", "error": False})
        self.env.ref("saas_manager.ir_cron_saas_template_create")._trigger()
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {
                "title": _("Template database queued"),
                "message": _(
                    "%(names)s will be created in the background; this page shows the result "
                    "when you reload it.",
                    names=", ".join(self.mapped("name")),
                ),
                "type": "info",
                "sticky": False,
                "next": {"type": "ir.actions.act_window_close"},
            },
        }

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

    @api.model
    def _cron_create_databases(self):
        """Cron: create the databases of the templates waiting in ``creating``."""
        for template in self.search([("state", "=", "creating")]):
            template._create_database()
            # Each template is hours of nobody's time if lost: keep its result
            # even when a later one breaks the worker.
            self.env.cr.commit()  # pylint: disable=invalid-commit

    def _create_database(self):
        """Create this template's database now and install its modules.

        On success the template is ``ready``; on any failure it is ``failed`` with
        the reason, and a database this call made is dropped. Returns True when ready.
        """
        self.ensure_one()
        server = self.server_id
        db = self.database_name
        try:
            self._check_server_active()
            master = server._master_password()
            pg_params = server._pg_params()
            modules = self._module_list()
        except (UserError, ValidationError) as exc:
            return self._mark_failed(str(exc.args[0]))

        _logger.info("Creating template database %s on %s", db, server.code)
        client = server._rpc_client(timeout=INSTALL_TIMEOUT)
        # Whether this call may have made the database. Whatever the managed Odoo
        # answers, a database is ours only when the server's PostgreSQL said it did
        # not exist just before our create: never a database that was there already.
        attempted = False
        try:
            if postgres.database_exists(pg_params, db):
                return self._mark_failed(
                    _(
                        "Database %(db)s already exists on %(server)s: choose another name "
                        "or remove it there.",
                        db=db,
                        server=server.name,
                    )
                )
            # Nobody logs in with it: only this call needs it, to install the modules.
            admin_password = secrets.token_urlsafe(24)
            attempted = True
            client.create_database(master, db, self.demo, self.lang, admin_password)
            if modules:
                self._install_modules(client, admin_password, modules)
        except (exceptions.RemoteError, TemplateError) as exc:
            reason = str(exc)
            if attempted:
                reason = self._drop_after_failure(client, master, pg_params, reason)
            return self._mark_failed(reason)
        finally:
            client.close()
        self.sudo().write({"state": "ready", "error": False})
        self.message_post(body=_("Template database %(db)s is ready.", db=db))
        _logger.info("Template database %s on %s is ready", db, server.code)
        return True

    def _install_modules(self, client, admin_password, modules):
        db = self.database_name
        uid = client.login(db, "admin", admin_password)
        if not uid:
            raise TemplateError(_("The new database %(db)s refused the admin login.", db=db))
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
            raise TemplateError(
                _(
                    "Server %(server)s has no module %(modules)s.",
                    server=self.server_id.name,
                    modules=", ".join(unknown),
                )
            )
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
            raise TemplateError(
                _(
                    "Modules %(modules)s did not install.",
                    modules=", ".join(module["name"] for module in not_installed),
                )
            )

    def _drop_after_failure(self, client, master, pg_params, reason):
        """Drop the database this creation made; return the reason to record.

        Called only when PostgreSQL said the database did not exist before this
        creation, so what is there now is ours. Whether it is there is asked of
        PostgreSQL too, never of the managed Odoo's answers.

        Through the server's database service first, which removes the filestore
        too. Odoo refuses to drop a database another session reaches at that
        moment (its own worker that just served the failed call may still hold
        one), so this is tried a few times, then the database alone is dropped
        with PostgreSQL's FORCE over the server's PostgreSQL access.
        """
        db = self.database_name
        error = None
        for attempt in range(DROP_ATTEMPTS):
            try:
                if not postgres.database_exists(pg_params, db):
                    return reason
                if client.drop_database(master, db) and not postgres.database_exists(pg_params, db):
                    _logger.info("Dropped half-created template database %s", db)
                    return reason
                # Odoo drops only the databases it lists: a server started with
                # --database and no --db-filter lists that one only.
                error = _("the server does not list database %(db)s", db=db)
                break
            except exceptions.RemoteError as exc:
                error = exc
                _logger.info(
                    "Dropping half-created database %s failed (attempt %s): %s",
                    db,
                    attempt + 1,
                    exc,
                )
                time.sleep(DROP_RETRY_SECONDS)
        try:
            postgres.drop_database(pg_params, db)
            _logger.warning(
                "Dropped half-created template database %s with PostgreSQL (%s); its "
                "filestore may remain on %s",
                db,
                error,
                self.server_id.code,
            )
            return reason
        except exceptions.RemoteError as exc:
            _logger.error(
                "Could not drop half-created template database %s: %s / %s", db, error, exc
            )
            return _(
                "%(reason)s\nThe half-created database %(db)s could not be dropped: %(error)s",
                reason=reason,
                db=db,
                error=exc,
            )

    def _mark_failed(self, reason):
        self.sudo().write({"state": "failed", "error": reason})
        self.message_post(body=_("Template database creation failed: %(reason)s", reason=reason))
        _logger.warning(
            "Template database %s on %s failed: %s",
            self.database_name,
            self.server_id.code,
            reason,
        )
        return False

    def action_reset_to_draft(self):
        self.check_access("write")
        self.filtered(lambda template: template.state == "failed").sudo().write(
            {"state": "draft", "error": False}
        )
        return True
