import logging

from odoo import _, api, fields, models
from odoo.exceptions import UserError, ValidationError

from ..remote import backup_jobs, exceptions, ssh, ssh_keys

_logger = logging.getLogger(__name__)

ADMIN_GROUP = "saas_manager.group_saas_admin"
SECRET = {
    "compute": "_compute_secrets",
    "inverse": "_inverse_secrets",
    "search": "_search_secret",
    "groups": ADMIN_GROUP,
    "copy": False,
}


class SaasBackupStorage(models.Model):
    """Where backups go: a directory of the manager host, an SFTP host, an S3 bucket.

    Written by SaaS administrators only (access rules): the settings say where the
    secrets and the customers' data are sent.
    """

    _name = "saas.backup.storage"
    _description = "SaaS Backup Storage"
    _inherit = ["saas.secret.mixin"]
    _order = "is_default desc, name, id"
    _secret_fields = ("sftp_password", "sftp_private_key", "secret_key")

    name = fields.Char(required=True)
    active = fields.Boolean(default=True)
    kind = fields.Selection(
        [("local", "Local Directory"), ("sftp", "SFTP"), ("s3", "S3")],
        required=True,
        default="local",
    )
    company_id = fields.Many2one(
        "res.company", required=True, default=lambda self: self.env.company, index=True
    )
    is_default = fields.Boolean(
        string="Default", help="Where the backups of instances whose plan names no storage go."
    )
    path = fields.Char(help="Local: an absolute directory on the SaaS Manager host.")
    sftp_host = fields.Char(string="SFTP Host")
    sftp_port = fields.Integer(string="SFTP Port", default=22)
    sftp_user = fields.Char(string="SFTP User")
    sftp_password = fields.Char(string="SFTP Password", **SECRET)
    sftp_private_key = fields.Text(string="SFTP Private Key", **SECRET)
    sftp_password_encrypted = fields.Char(groups=ADMIN_GROUP, copy=False)
    sftp_private_key_encrypted = fields.Char(groups=ADMIN_GROUP, copy=False)
    sftp_host_key = fields.Char(
        string="SFTP Host Key",
        help="The host's public key as ssh-keyscan prints it; another key is refused.",
    )
    base_path = fields.Char(help="SFTP: the directory on the host where backups go.")
    endpoint_url = fields.Char(
        string="Endpoint URL", help="S3: e.g. https://s3.eu-west-3.amazonaws.com; empty for AWS."
    )
    bucket = fields.Char()
    prefix = fields.Char(help="S3: prefix of every key (e.g. saas/).")
    region = fields.Char()
    access_key = fields.Char()
    secret_key = fields.Char(**SECRET)
    secret_key_encrypted = fields.Char(groups=ADMIN_GROUP, copy=False)
    ca_bundle = fields.Char(
        string="TLS CA Bundle", help="S3: a CA file on the manager host; TLS is always verified."
    )
    backup_ids = fields.One2many("saas.backup", "storage_id", string="Backups")
    backup_count = fields.Integer(compute="_compute_backup_count")

    @api.depends("sftp_password_encrypted", "sftp_private_key_encrypted", "secret_key_encrypted")
    def _compute_secrets(self):
        return super()._compute_secrets()

    @api.depends("backup_ids")
    def _compute_backup_count(self):
        for storage in self:
            storage.backup_count = len(storage.backup_ids)

    @api.constrains("sftp_host_key")
    def _check_sftp_host_key(self):
        for storage in self.filtered("sftp_host_key"):
            try:
                ssh_keys.parse_host_keys(storage.sftp_host_key, f"storage {storage.name}")
            except exceptions.SshHostKeyError as exc:
                raise ValidationError(
                    _(
                        "SFTP host key of storage %(name)s: %(reason)s",
                        name=storage.name,
                        reason=exc,
                    )
                ) from None

    @api.constrains("is_default", "company_id", "active")
    def _check_one_default(self):
        for storage in self.filtered(lambda rec: rec.is_default and rec.active):
            if self.search_count(
                [
                    ("id", "!=", storage.id),
                    ("is_default", "=", True),
                    ("company_id", "=", storage.company_id.id),
                ]
            ):
                raise ValidationError(
                    _(
                        "Company %(company)s already has a default backup storage.",
                        company=storage.company_id.name,
                    )
                )

    @api.model
    def _default_storage(self, company=None):
        company = company or self.env.company
        return self.sudo().search(
            [("is_default", "=", True), ("company_id", "=", company.id)], limit=1
        )

    def _storage_spec(self):
        """``(kind, settings)`` for :func:`remote.storage.open_storage`, checked here.

        Secrets are read at the point of use; a missing setting is a UserError.
        """
        self.ensure_one()
        storage = self.sudo()
        if storage.kind == "local":
            if not storage.path:
                raise storage._missing(_("path"))
            return ("local", {"path": storage.path})
        if storage.kind == "sftp":
            for fname in ("sftp_host", "sftp_user", "sftp_host_key", "base_path"):
                if not storage[fname]:
                    raise storage._missing(storage._fields[fname].string)
            storage._check_sftp_host_key()
            password = storage._read_secret("sftp_password")
            private_key = storage._read_secret("sftp_private_key")
            if not (password or private_key):
                raise UserError(
                    _(
                        "Backup storage %(name)s has neither an SFTP password nor a private key.",
                        name=storage.name,
                    )
                )
            settings = ssh.SshSettings(
                host=storage.sftp_host,
                port=storage.sftp_port or 22,
                username=storage.sftp_user,
                password=password or None,
                private_key=private_key or None,
                host_key=storage.sftp_host_key,
            )
            return ("sftp", {"ssh_settings": settings, "base_path": storage.base_path})
        for fname in ("bucket", "access_key"):
            if not storage[fname]:
                raise storage._missing(storage._fields[fname].string)
        secret = storage._read_secret("secret_key")
        if not secret:
            raise storage._missing(_("secret key"))
        return (
            "s3",
            {
                "bucket": storage.bucket,
                "access_key": storage.access_key,
                "secret_key": secret,
                "endpoint_url": storage.endpoint_url or None,
                "prefix": storage.prefix or "",
                "region": storage.region or None,
                "ca_bundle": storage.ca_bundle or None,
            },
        )

    def _missing(self, setting):
        return UserError(
            _("Backup storage %(name)s has no %(setting)s.", name=self.name, setting=setting)
        )

    def action_test(self):
        """Write, read back and delete a probe object; a notification either way."""
        self.ensure_one()
        self.check_access("write")
        try:
            where = backup_jobs.probe_storage(self._storage_spec())
        except exceptions.RemoteError as exc:
            kind, title, message = "danger", _("Storage test failed"), str(exc)
        except UserError as exc:
            kind, title, message = "danger", _("Storage test failed"), str(exc.args[0])
        else:
            kind, title = "success", _("Storage works")
            message = _(
                "A probe object was written, read back and deleted in %(where)s.", where=where
            )
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {
                "title": title,
                "message": message,
                "type": kind,
                "sticky": kind == "danger",
            },
        }

    def action_view_backups(self):
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id("saas_manager.saas_backup_action")
        action["domain"] = [("storage_id", "=", self.id)]
        return action
