"""``saas.instance``, moved or copied to another server (SPEC §9).

A split of ``saas.instance`` by concern (``_inherit``), as its module docstring
plans: the checks, the ``transfer`` operation (a move, or a copy into a new
instance) and the removal of a moved instance's source copy. The remote work is
:mod:`remote.transfer`; the wizard that asks for it is ``saas.instance.transfer``.

A move, step by step (each a ``RemoteStep`` of the operations engine, journalled
before it makes anything): check the modules on the target and that its names are
free, take a ``pre_transfer`` backup, copy the database and the filestore while the
instance runs, freeze the source (read-only), copy again what changed, verify,
set the URL, then switch the record to the target in the same transaction that
marks the target's copy as the instance's. Until the switch, a failure or a killed
worker removes what was made on the target and thaws the source; after it, the
source copy is closed and kept ``keep_moved_days`` for a way back.
"""

import logging
import re
import time
from datetime import timedelta

from odoo import _, api, fields, models
from odoo.exceptions import UserError
from odoo.modules.neutralize import get_neutralization_queries

from ..remote import exceptions, postgres, provision, transfer
from .saas_instance import PROVISIONED_STATES
from .saas_operation import Made, OperationError, RemoteStep

_logger = logging.getLogger(__name__)

TRANSFER_STATES = ("running", "suspended")
VERSION = re.compile(r"(\d+)\.(\d+)")


def major_version(text):
    """``(18, 0)`` of an Odoo version string (``18.0``, ``18.0+e``, ``saas~18.1``), or None."""
    found = VERSION.search(text or "")
    return (int(found.group(1)), int(found.group(2))) if found else None


class SaasInstance(models.Model):
    _inherit = "saas.instance"

    moved_from_server_id = fields.Many2one(
        "saas.server",
        string="Moved From",
        readonly=True,
        copy=False,
        help="The server this instance was moved from; its copy there is removed after "
        "the server's Keep Moved Days.",
    )
    moved_date = fields.Datetime(readonly=True, copy=False)
    copied_from_id = fields.Many2one(
        "saas.instance",
        string="Copy Of",
        readonly=True,
        copy=False,
        index="btree_not_null",
        help="The instance this one is a staging copy of.",
    )

    # ------------------------------------------------------------------
    # Checks (at once in the wizard, again when the operation runs)
    # ------------------------------------------------------------------

    def _check_transfer(self, target, mode):
        """Refuse, with a message in the operator's terms, a move or copy to ``target``."""
        self.ensure_one()
        if self.state not in TRANSFER_STATES:
            raise UserError(
                _(
                    "Instance %(name)s is %(state)s: only a running or suspended instance can be "
                    "moved or copied.",
                    name=self.name,
                    state=dict(self._fields["state"]._description_selection(self.env))[self.state],
                )
            )
        self._check_no_operation_in_progress()
        if mode == "copy" and self.state != "running":
            raise UserError(
                _("Instance %(name)s is suspended: resume it to copy it.", name=self.name)
            )
        if not target:
            raise UserError(_("Choose the server to move or copy the instance to."))
        if mode == "move" and target == self.server_id:
            raise UserError(
                _(
                    "Instance %(name)s is already on %(server)s: choose another server.",
                    name=self.name,
                    server=target.name,
                )
            )
        target._check_can_receive(self.server_id)

    def _transfer_host(self, server):
        return transfer.Host(server._pg_params(), server._ssh_settings())

    def _remote_prechecks(self, source, target, database, target_database):
        """Steps that check what the target has, before anything is made there."""
        known_from = target._modules_known_from()
        if not known_from:
            raise OperationError(
                _(
                    "Server %(server)s has no ready template and no running instance to read "
                    "its modules from: copy or create a template there first.",
                    server=target.name,
                )
            )
        missing = yield RemoteStep(
            _("Checking the instance's modules on %(server)s", server=target.name),
            transfer.missing_modules,
            (source._pg_params(), database, target._pg_params(), known_from),
        )
        if missing:
            raise OperationError(
                _(
                    "Server %(server)s does not have the modules %(modules)s that instance "
                    "%(name)s uses: nothing was made.",
                    server=target.name,
                    modules=", ".join(missing),
                    name=self.name,
                )
            )
        found = yield RemoteStep(
            _("Checking that the database and the filestore are free on %(server)s",
              server=target.name),
            provision.taken,
            (target._pg_params(), target._ssh_settings(), target_database,
             target._filestore_path(target_database)),
        )  # fmt: skip
        if found:
            raise OperationError(
                _(
                    "%(found)s already exists on %(server)s: nothing was made. Remove it there, "
                    "or drop this instance's earlier copy first.",
                    found=", ".join(found),
                    server=target.name,
                )
            )

    # ------------------------------------------------------------------
    # The operation
    # ------------------------------------------------------------------

    def _op_transfer(self, operation):
        """The ``transfer`` operation: a move of this instance, or the copy into it."""
        if self.copied_from_id and self.state == "provisioning":
            return self._op_copy(operation)
        return self._op_move(operation)

    def _op_move(self, operation):
        source, target = self.server_id, operation.target_server_id
        if source == target and self.moved_from_server_id == operation.server_id:
            # An earlier attempt switched, then its worker died: only the close is left.
            yield from self._close_moved_source(operation.server_id, self.database_name)
            return
        try:
            self._check_transfer_again(target, "move")
        except UserError as exc:
            raise OperationError(str(exc.args[0])) from None
        db = self.database_name
        source_host, target_host = self._transfer_host(source), self._transfer_host(target)
        copy_args = {
            "database": db,
            "source_dir": source._filestore_path(db),
            "target_database": db,
            "target_dir": target._filestore_path(db),
        }
        suspended = self.state == "suspended"
        if suspended:
            # A suspended database refuses every connection, ours too: it is frozen
            # and opened for the whole move (its users can read, not write).
            yield from self._freeze_source(source, db, open_connections=True)
        yield from self._remote_prechecks(source, target, db, db)
        yield from self._pre_transfer_backup(operation)
        yield RemoteStep(
            _("Copying the database and the filestore to %(server)s (the instance still runs)",
              server=target.name),
            transfer.copy_pass,
            (source_host, target_host),
            copy_args,
            makes=(Made("database", target.id, db),
                   Made("directory", target.id, copy_args["target_dir"])),
        )  # fmt: skip
        # The first copy's database was the rehearsal: the final copy loads it anew.
        # Dropped now, its checkpoint is not part of the read-only time.
        yield RemoteStep(
            _("Dropping the first copy's database on %(server)s", server=target.name),
            postgres.drop_database,
            (target._pg_params(), db),
        )
        frozen_at = time.monotonic()
        if not suspended:
            yield from self._freeze_source(source, db)
        final = yield RemoteStep(
            _("Copying what changed (the instance is read-only)"),
            transfer.copy_pass,
            (source_host, target_host),
            {**copy_args, "replace": True},
        )
        checked = yield RemoteStep(
            _("Verifying rows, sequences and files"),
            transfer.verify,
            (source_host, target_host),
            copy_args,
        )
        yield RemoteStep(
            _("Setting the instance's URL on %(server)s", server=target.name),
            transfer.set_base_url,
            (target._pg_params(), db, self._base_url(target)),
        )
        if suspended:
            yield RemoteStep(
                _("Keeping the instance suspended on %(server)s", server=target.name),
                postgres.set_connections_allowed,
                (target._pg_params(), db, False),
            )
        self._check_room_at_switch(target)
        # A suspended instance's customers could not write before the move either.
        downtime = 0.0 if suspended else time.monotonic() - frozen_at
        # The switch: committed with the next step's journal entry, all at once. From
        # here on what is on the target is the instance's, and the source is kept.
        operation.journal_ids.filtered(lambda entry: entry.state == "pending").write(
            {"state": "kept"}
        )
        self.with_context(saas_transfer_switch=True).sudo().write(
            {
                "server_id": target.id,
                "moved_from_server_id": source.id,
                "moved_date": fields.Datetime.now(),
                "error": False,
            }
        )
        operation.write({"downtime_s": downtime})
        self.message_post(
            body=_(
                "Moved from %(origin)s to %(target)s: %(tables)s tables, %(rows)s rows, "
                "%(files)s files checked; read-only for %(downtime).1f s (final copy "
                "%(final).1f s). The copy on %(origin)s is kept %(days)s days.",
                origin=source.name,
                target=target.name,
                tables=checked.tables,
                rows=checked.rows,
                files=checked.files,
                downtime=downtime,
                final=final.duration_s,
                days=source.keep_moved_days,
            )
        )
        _logger.info(
            "Instance %s moved from %s to %s (read-only %.2f s)", db, source.code, target.code,
            downtime,
        )  # fmt: skip
        yield from self._close_moved_source(source, db)

    def _close_moved_source(self, source, db):
        """The step after the switch: the source copy refuses connections (kept read-only)."""
        try:
            yield RemoteStep(
                _("Closing the source copy on %(server)s", server=source.name),
                postgres.set_connections_allowed,
                (source._pg_params(), db, False),
            )
        except exceptions.RemoteError as exc:
            # Still read-only: nobody can write there. Said, not undone.
            self.message_post(
                body=_(
                    "The source copy on %(server)s could not be closed (it stays read-only): "
                    "%(reason)s",
                    server=source.name,
                    reason=exc,
                )
            )

    def _freeze_source(self, source, db, open_connections=False):
        """Steps that make the source read-only (and open it, when it is suspended)."""
        yield RemoteStep(
            _("Freezing the instance (read-only) for the final copy"),
            postgres.set_read_only,
            (source._pg_params(), db, True),
            makes=(Made("read_only", source.id, db),),
        )
        if open_connections:
            yield RemoteStep(
                _("Opening the suspended database to the copy (read-only)"),
                postgres.set_connections_allowed,
                (source._pg_params(), db, True),
                makes=(Made("connections", source.id, db),),
            )

    def _check_transfer_again(self, target, mode):
        """At run time: the instance and the target may have changed since queued."""
        if self.state not in TRANSFER_STATES:
            raise UserError(
                _("Instance %(name)s is no longer running or suspended.", name=self.name)
            )
        if mode == "move" and target == self.server_id:
            raise UserError(_("Instance %(name)s is already on the target.", name=self.name))
        if mode == "copy" and self.state != "running":
            raise UserError(_("Instance %(name)s is no longer running.", name=self.name))
        target._check_can_receive(self.server_id)

    def _check_room_at_switch(self, target):
        others = self.search_count(
            [("server_id", "=", target.id), ("state", "in", PROVISIONED_STATES)]
        )
        if others >= target.max_instances:
            raise OperationError(
                _(
                    "Server %(server)s filled up during the copy (%(count)s of %(max)s "
                    "instances): not switched.",
                    server=target.name,
                    count=others,
                    max=target.max_instances,
                )
            )

    def _pre_transfer_backup(self, operation):
        """Take the ``pre_transfer`` backup in this operation (once over its attempts)."""
        backup = operation.backup_id
        if backup.state == "done":
            return
        Backup = self.env["saas.backup"].sudo()
        if not backup:
            storage = Backup._storage_for(self)
            if not storage:
                self.message_post(
                    body=_("No backup storage is configured: moved without a backup first.")
                )
                return
            backup = Backup.create(
                {
                    "instance_id": self.id,
                    "server_id": self.server_id.id,
                    "database_name": self.database_name,
                    "storage_id": storage.id,
                    "kind": "pre_transfer",
                }
            )
            operation.write({"backup_id": backup.id})
        yield from backup._op_backup(operation)

    def _op_copy(self, operation):
        """Copy ``copied_from_id`` into this new instance: new identity, neutralised."""
        origin = self.copied_from_id
        source, target = origin.server_id, self.server_id
        try:
            origin._check_transfer_again(target, "copy")
        except UserError as exc:
            raise OperationError(str(exc.args[0])) from None
        db = self.database_name
        target_dir = target._filestore_path(db)
        yield from origin._remote_prechecks(source, target, origin.database_name, db)
        yield RemoteStep(
            _("Copying %(origin)s to %(server)s", origin=origin.name, server=target.name),
            transfer.copy_pass,
            (origin._transfer_host(source), self._transfer_host(target)),
            {"database": origin.database_name, "source_dir": source._filestore_path(
                origin.database_name), "target_database": db, "target_dir": target_dir},
            makes=(Made("database", target.id, db), Made("directory", target.id, target_dir)),
        )  # fmt: skip
        queries = []
        if operation.neutralize:
            modules = yield RemoteStep(
                _("Reading the copy's modules"),
                transfer.installed_modules,
                (target._pg_params(), db),
            )
            # Odoo's own neutralisation (as odoo-bin neutralize), from this Odoo's
            # tree: the same major version as the copy's (checked).
            queries = list(get_neutralization_queries(modules))
        yield RemoteStep(
            _("Giving the copy its own identity") if not queries
            else _("Neutralising the copy and giving it its own identity"),
            transfer.prepare_copy,
            (target._pg_params(), db),
            {"neutralize_queries": queries, "base_url": self._base_url()},
        )  # fmt: skip
        self._write_state(
            {"state": "running", "provisioned_date": fields.Datetime.now(), "error": False}
        )
        self.message_post(
            body=_(
                "Copied from %(origin)s (on %(server)s)%(neutral)s.",
                origin=origin.name,
                server=source.name,
                neutral=_(", neutralised") if queries else "",
            )
        )
        origin.message_post(
            body=_("Copied to %(copy)s on %(server)s.", copy=self.name, server=target.name)
        )

    def _op_failed(self, operation, reason):
        if operation.kind == "transfer" and self.copied_from_id and self.state == "provisioning":
            self._write_state({"state": "failed", "error": reason})
            self.message_post(body=_("The copy failed: %(reason)s", reason=reason))
        elif operation.kind == "transfer":
            backup = operation.backup_id
            if backup and backup.state != "done":
                backup.write(
                    {"state": "failed", "error": reason, "finished_date": fields.Datetime.now()}
                )
                backup._remove_object_quietly()
            self.message_post(
                body=_(
                    "The move to %(server)s failed, the instance stays on %(origin)s: "
                    "%(reason)s",
                    server=operation.target_server_id.name,
                    origin=self.server_id.name,
                    reason=reason,
                )
            )
        elif operation.kind == "source_cleanup":
            self.message_post(
                body=_("The moved source copy could not be removed: %(reason)s", reason=reason)
            )
        else:
            return super()._op_failed(operation, reason)
        return None

    def _op_cancelled(self, operation):
        if operation.kind == "transfer" and self.copied_from_id and self.state == "provisioning":
            # Nothing was made: the copy's slot is freed.
            self._write_state({"state": "terminated"})
        elif operation.kind not in ("transfer", "source_cleanup"):
            return super()._op_cancelled(operation)
        return None

    # ------------------------------------------------------------------
    # The moved source
    # ------------------------------------------------------------------

    def _moved_source_entries(self):
        self.ensure_one()
        return self._made_by_provisioning().filtered(
            lambda entry: entry.server_id != self.server_id
        )

    def action_transfer(self):
        """Open the wizard that moves or copies this instance."""
        self.ensure_one()
        self.check_access("write")
        return {
            "type": "ir.actions.act_window",
            "name": _("Move or Copy"),
            "res_model": "saas.instance.transfer",
            "view_mode": "form",
            "target": "new",
            "context": {"default_instance_id": self.id},
        }

    def action_drop_moved_source(self):
        """Remove now the copy a move left on the server it came from."""
        self.ensure_one()
        self.check_access("write")
        if not self._moved_source_entries():
            raise UserError(
                _("Instance %(name)s has no copy left on another server.", name=self.name)
            )
        operation = self.env["saas.operation"]._queue(
            "source_cleanup", self, self.moved_from_server_id or self.server_id
        )
        return operation._queued_notification(
            operation,
            _("The copy of %(name)s on %(server)s will be removed in the background.",
              name=self.name, server=self.moved_from_server_id.name),
        )  # fmt: skip

    @api.model
    def _cron_drop_moved_sources(self):
        """Cron: queue the removal of source copies kept longer than their server says."""
        now = fields.Datetime.now()
        moved = self.sudo().search(
            [("moved_from_server_id", "!=", False), ("state", "!=", "terminated")]
        )
        for instance in moved:
            kept_until = instance.moved_date + timedelta(
                days=instance.moved_from_server_id.keep_moved_days
            )
            if kept_until <= now and instance._moved_source_entries():
                self.env["saas.operation"]._queue(
                    "source_cleanup", instance, instance.moved_from_server_id
                )
        return True

    def _op_source_cleanup(self, operation):
        entries = self._moved_source_entries()
        for host in entries.server_id:
            on_host = entries.filtered(lambda entry, host=host: entry.server_id == host)
            directories = on_host.filtered(lambda entry: entry.kind == "directory").mapped("name")
            yield RemoteStep(
                _("Removing the moved copy on %(server)s", server=host.name),
                provision.remove,
                (host._pg_params(), host._ssh_settings() if directories else None),
                {"databases": on_host.filtered(lambda entry: entry.kind == "database").mapped(
                    "name"), "directories": directories},
            )  # fmt: skip
            on_host.write({"state": "removed"})
        self.sudo().write({"moved_from_server_id": False})
        self.message_post(body=_("The copy left by the move was removed."))
