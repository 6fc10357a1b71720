"""``saas.server`` as the target of a move or copy (SPEC §9): a split by concern."""

from odoo import _, fields, models
from odoo.exceptions import UserError

from ..remote import capacity
from .saas_instance import PROVISIONED_STATES
from .saas_instance_transfer import major_version


class SaasServer(models.Model):
    _inherit = "saas.server"

    keep_moved_days = fields.Integer(
        default=7,
        help="Days the copy of an instance moved away from this server is kept (closed and "
        "read-only) before it is removed.",
    )

    def _modules_known_from(self):
        """A database of this server to read its Odoo's modules from (a ready template,
        else a running instance), or False: what a move, a copy or a restore to this
        server checks its modules against."""
        self.ensure_one()
        template = (
            self.env["saas.template"]
            .sudo()
            .search([("server_id", "=", self.id), ("state", "=", "ready")], limit=1)
        )
        if template:
            return template.database_name
        instance = (
            self.env["saas.instance"]
            .sudo()
            .search([("server_id", "=", self.id), ("state", "=", "running")], limit=1)
        )
        return instance.database_name or False

    def _check_can_receive(self, source):
        """Refuse, with the reason, to receive an instance or template from ``source``.

        Active (not in maintenance, offline or disabled), room for one more instance,
        and the same Odoo major version as ``source`` (both known from a health check).
        """
        self.ensure_one()
        if self.state != "active":
            state = dict(self._fields["state"]._description_selection(self.env))[self.state]
            raise UserError(
                _(
                    "Server %(server)s is %(state)s: only an active server receives instances.",
                    server=self.name,
                    state=state,
                )
            )
        count = self.env["saas.instance"].search_count(
            [("server_id", "=", self.id), ("state", "in", PROVISIONED_STATES)]
        )
        if not capacity.has_capacity(self.max_instances, count):
            raise UserError(
                _(
                    "Server %(server)s is full (%(count)s of %(max)s instances).",
                    server=self.name,
                    count=count,
                    max=self.max_instances,
                )
            )
        ours, theirs = major_version(self.server_version), major_version(source.server_version)
        if ours is None or theirs is None:
            raise UserError(
                _(
                    "The Odoo version of %(server)s is not known: check its health first.",
                    server=(self if ours is None else source).name,
                )
            )
        if ours != theirs:
            raise UserError(
                _(
                    "Server %(server)s runs Odoo %(version)s and %(origin)s runs Odoo "
                    "%(origin_version)s: an instance moves only between servers of the same "
                    "major version.",
                    server=self.name,
                    version=self.server_version,
                    origin=source.name,
                    origin_version=source.server_version,
                )
            )
