import os

from odoo import _, api, models
from odoo.exceptions import AccessError, UserError
from odoo.tools import config

from ..remote import exceptions, secret_box

ADMIN_GROUP = "saas_manager.group_saas_admin"
KEY_OPTION = "saas_manager_secret_key"
KEY_VARIABLE = "SAAS_MANAGER_SECRET_KEY"
CIPHER_SUFFIX = "_encrypted"


def secret_key_setting():
    """The configured key list: the Odoo option first, then the environment."""
    return config.get(KEY_OPTION) or os.environ.get(KEY_VARIABLE) or ""


class SaasSecretMixin(models.AbstractModel):
    """Secrets stored encrypted with a key kept outside the database (SPEC §12).

    A model lists its secrets in ``_secret_fields``. Each secret is a computed,
    non-stored field that admins read and write as usual; its value is stored
    only as ciphertext in ``<name>_encrypted``. So an INSERT or UPDATE that fails
    (and that Odoo logs whole), a dump or a replica never carries it in clear.

    Reading a secret for use goes through :meth:`_read_secret`, which says plainly
    what to configure when the key is missing. The form of an admin shows a secret
    as empty when the key is missing, rather than failing to open.
    """

    _name = "saas.secret.mixin"
    _description = "Secrets encrypted at rest"
    _allow_sudo_commands = False

    # Names of the clear-text fields; each needs a stored Char "<name>_encrypted".
    _secret_fields = ()

    @api.model
    def _secret_box(self):
        try:
            return secret_box.SecretBox(secret_key_setting())
        except exceptions.SecretKeyError as exc:
            raise UserError(str(exc)) from None

    def _compute_secrets(self):
        try:
            box = secret_box.SecretBox(secret_key_setting())
        except exceptions.SecretKeyError:
            box = None
        for record in self:
            for fname in self._secret_fields:
                cipher = record[fname + CIPHER_SUFFIX]
                value = False
                if cipher and box is not None:
                    try:
                        value = box.decrypt(cipher)
                    except exceptions.SecretKeyError:
                        value = False
                record[fname] = value

    def _inverse_secrets(self):
        box = None
        for record in self:
            vals = {}
            for fname in self._secret_fields:
                value = record[fname]
                if value:
                    box = box or self._secret_box()
                    cipher = box.encrypt(value)
                else:
                    cipher = False
                if cipher != record[fname + CIPHER_SUFFIX]:
                    vals[fname + CIPHER_SUFFIX] = cipher
            if vals:
                record.write(vals)

    def _search_secret(self, operator, value):
        raise AccessError(_("Secrets cannot be searched."))

    def _read_group_groupby(self, groupby_spec, query):
        # A secret is not stored, so Odoo would fail with a ValueError; say what it is.
        if groupby_spec.split(":")[0].split(".")[0] in self._secret_fields:
            raise AccessError(_("Secrets cannot be grouped by."))
        return super()._read_group_groupby(groupby_spec, query)

    def _read_secret(self, fname):
        """The clear value of secret ``fname`` (False when unset), for use at once.

        :raise UserError: the key is missing or is not the one the secret was
            encrypted with; the message names the setting and the record, never a value.
        """
        self.ensure_one()
        cipher = self.sudo()[fname + CIPHER_SUFFIX]
        if not cipher:
            return False
        try:
            return secret_box.SecretBox(secret_key_setting()).decrypt(cipher)
        except exceptions.SecretKeyError as exc:
            raise UserError(
                _(
                    "%(field)s of %(record)s cannot be read: %(reason)s",
                    field=self._fields[fname].string,
                    record=self.display_name,
                    reason=exc,
                )
            ) from None

    @api.model
    def _rotate_secrets(self):
        """Encrypt every stored secret of this model again with the current key.

        Returns the number of values rewritten. Run after putting a new key first
        in ``saas_manager_secret_key``; the old key can be dropped afterwards.
        """
        box = self._secret_box()
        count = 0
        records = self.sudo().with_context(active_test=False).search([])
        for record in records:
            vals = {}
            for fname in self._secret_fields:
                cipher = record[fname + CIPHER_SUFFIX]
                if cipher:
                    try:
                        vals[fname + CIPHER_SUFFIX] = box.rotate(cipher)
                    except exceptions.SecretKeyError as exc:
                        raise UserError(
                            _(
                                "%(field)s of %(record)s cannot be re-encrypted: %(reason)s",
                                field=self._fields[fname].string,
                                record=record.display_name,
                                reason=exc,
                            )
                        ) from None
            if vals:
                record.write(vals)
                count += len(vals)
        return count
