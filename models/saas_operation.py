"""Long remote operations, run in the background and safe against a killed worker.

(Over 500 lines: the model and its runner belong together — the runner is the only
code that moves an operation's state, and it needs the model's journal and hooks.)

An operation (``saas.operation``) is queued by a button and run by the cron job
*SaaS: Run Operations*, woken by ``_trigger()``. Its work is a generator method of
the record it is about (``saas.instance._op_provision`` …): ORM code between
``yield``s runs in the cron's thread; each ``yield RemoteStep(...)`` hands a plain
function to a bounded thread pool, where the network part of several operations
runs at once. What a step will make remotely (a database, a directory) is written
in the operation's journal and committed **before** the step starts, so that a
worker killed at any moment leaves a journal saying what to remove.

Which worker runs an operation is held by a PostgreSQL session-level advisory
lock, taken on a connection of the runner's own: a dead worker's connection is
closed by PostgreSQL and its locks go with it. The next run finds operations
*running* whose lock it can take — their worker is gone, whatever the clock says —
removes what their journal lists, and retries them (up to ``max_attempts``) or
marks them failed with the reason.
"""

import logging
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import timedelta

import psycopg2

from odoo import _, api, fields, models, modules
from odoo.exceptions import UserError
from odoo.sql_db import connection_info_for

from ..remote import exceptions, filestore, postgres, ssh

_logger = logging.getLogger(__name__)

# First key of the advisory locks that say "this worker runs operation <id>".
LOCK_NAMESPACE = 0x5AA5
STATES = [
    ("queued", "Queued"),
    ("running", "Running"),
    ("done", "Done"),
    ("failed", "Failed"),
    ("cancelled", "Cancelled"),
]
KINDS = [
    ("template_create", "Template creation"),
    ("provision", "Provisioning"),
    ("terminate", "Termination"),
    ("backup", "Backup"),
    ("verify", "Backup verification"),
    ("restore", "Restore"),
    ("transfer", "Transfer"),
    ("template_copy", "Template copy"),
    ("source_cleanup", "Moved source removal"),
]
# kind -> (field of the record the operation is about, generator method on it)
HANDLERS = {
    "template_create": ("template_id", "_op_template_create"),
    "provision": ("instance_id", "_op_provision"),
    "terminate": ("instance_id", "_op_terminate"),
    "backup": ("backup_id", "_op_backup"),
    "verify": ("backup_id", "_op_verify"),
    "restore": ("backup_id", "_op_restore"),
    "transfer": ("instance_id", "_op_transfer"),
    "template_copy": ("template_id", "_op_template_copy"),
    "source_cleanup": ("instance_id", "_op_source_cleanup"),
}
ACTIVE_STATES = ("queued", "running")
# Failures worth another attempt: the network, a server restarting. A refusal
# (bad input, a name already taken, a wrong key) would fail the same way again.
PERMANENT_ERRORS = (
    exceptions.InvalidInput,
    exceptions.DatabaseExists,
    exceptions.RemotePathExists,
    exceptions.SshHostKeyError,
    exceptions.SshAuthError,
    exceptions.RpcRemoteError,
    exceptions.SecretKeyError,
)


@dataclass(frozen=True)
class Made:
    """Something a step is about to make on a server: journalled before the step."""

    # "database" or "directory" (made: dropped by the undo); "read_only" or
    # "connections" (a database frozen, or opened to connections: the undo thaws or
    # closes it again).
    kind: str
    server_id: int
    name: str  # database name, or absolute path on the server


@dataclass
class RemoteStep:
    """One piece of remote work: ``func(*args, **kwargs)`` in a worker thread.

    ``func`` gets plain values and returns plain values or raises
    :mod:`remote.exceptions`; it never touches the ORM.
    """

    label: str
    func: object
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    makes: tuple = ()


class OperationError(Exception):
    """An operation cannot go on, for a reason written for the operator."""

    def __init__(self, message, permanent=True):
        super().__init__(message)
        self.permanent = permanent


def _testing():
    return bool(modules.module.current_test) or getattr(
        threading.current_thread(), "testing", False
    )


def _undo(kind, name, pg_params, ssh_settings):
    """Remove one journalled thing; idempotent (what is gone already is fine)."""
    if kind == "database":
        postgres.drop_database(pg_params, name)
    elif kind == "directory":
        if ssh_settings is None:
            raise exceptions.InvalidInput(f"{name}: the server has no usable SSH access")
        with ssh.SshSession(ssh_settings) as session:
            filestore.remove_tree(session, name)
    elif kind == "read_only":
        postgres.set_read_only(pg_params, name, False)
    elif kind == "connections":
        if postgres.connections_allowed(pg_params, name):
            postgres.set_connections_allowed(pg_params, name, False)
    else:
        raise exceptions.InvalidInput(f"unknown journal entry kind {kind!r}")


class SaasOperation(models.Model):
    _name = "saas.operation"
    _description = "SaaS Operation"
    _order = "id desc"
    _rec_name = "display_label"

    # Seconds between attempts after a transient failure, times the attempt number.
    _retry_delay_s = 30
    # How long one cron run keeps claiming new operations (it finishes those it has).
    _claim_budget_s = 600
    # How long the runner waits for a step before looking again (it never gives up
    # on a running step: each remote call has its own timeout).
    _poll_s = 2.0
    # A run whose only work left is a retry due within this many seconds waits for it.
    _linger_s = 10

    kind = fields.Selection(KINDS, required=True, readonly=True, index=True)
    state = fields.Selection(
        STATES, default="queued", required=True, readonly=True, index=True, copy=False
    )
    display_label = fields.Char(string="Operation", compute="_compute_display_label")
    server_id = fields.Many2one("saas.server", readonly=True, index=True, ondelete="cascade")
    template_id = fields.Many2one("saas.template", readonly=True, index=True, ondelete="cascade")
    instance_id = fields.Many2one("saas.instance", readonly=True, index=True, ondelete="cascade")
    backup_id = fields.Many2one("saas.backup", readonly=True, index=True, ondelete="cascade")
    step = fields.Char(readonly=True, help="The step now running, or the last one.")
    attempt = fields.Integer(readonly=True, default=0)
    max_attempts = fields.Integer(readonly=True, default=3)
    queued_date = fields.Datetime(readonly=True, default=fields.Datetime.now)
    not_before = fields.Datetime(readonly=True, help="Not retried before this time.")
    started_date = fields.Datetime(readonly=True)
    finished_date = fields.Datetime(readonly=True)
    duration_s = fields.Float(string="Duration (s)", readonly=True, digits=(16, 2))
    error = fields.Text(readonly=True)
    user_id = fields.Many2one(
        "res.users", string="Requested by", readonly=True, default=lambda self: self.env.user
    )
    journal_ids = fields.One2many("saas.operation.journal", "operation_id", readonly=True)
    # --- transfers (SPEC §9) ---
    target_server_id = fields.Many2one(
        "saas.server", string="Target Server", readonly=True, ondelete="cascade"
    )
    downtime_s = fields.Float(
        string="Downtime (s)",
        readonly=True,
        digits=(16, 2),
        help="How long the customer could not write: from the freeze to the switch.",
    )
    neutralize = fields.Boolean(readonly=True, help="A copy: neutralised as Odoo's own does.")

    @api.depends("kind", "instance_id.name", "template_id.name", "server_id.name", "backup_id")
    def _compute_display_label(self):
        labels = dict(KINDS)
        for operation in self:
            about = (
                operation.instance_id
                or operation.backup_id.instance_id
                or operation.template_id
                or operation.server_id
            )
            operation.display_label = f"{labels.get(operation.kind, '')}: {about.display_name}"

    # ------------------------------------------------------------------
    # Queueing (called by the buttons)
    # ------------------------------------------------------------------

    @api.model
    def _queue(self, kind, record, server, **vals):
        """Queue one operation of ``kind`` about ``record``; wake the runner.

        An operation of that kind already queued or running for that record is
        returned instead of a second one (pressing a button twice queues it once).
        For an instance, one of another kind is refused (UserError): two operations
        would work on its database at once (a backup's verification and a restore
        of it only read the backup, and may run side by side).
        ``vals``: more fields of the operation (a transfer's target server).
        """
        field_name = HANDLERS[kind][0]
        operations = self.sudo()
        existing = operations.search([(field_name, "=", record.id), ("state", "in", ACTIVE_STATES)])
        same = existing.filtered(lambda operation: operation.kind == kind)[:1]
        if same:
            return same
        if existing and field_name == "instance_id":
            raise UserError(
                _(
                    "%(record)s has an operation in progress (%(operation)s): wait for it "
                    "to end.",
                    record=record.display_name,
                    operation=existing[:1].display_label,
                )
            )
        operation = operations.create(
            {
                "kind": kind,
                field_name: record.id,
                "server_id": server.id,
                "user_id": self.env.uid,
                **vals,
            }
        )
        self.env.ref("saas_manager.ir_cron_saas_operation_run")._trigger()
        return operation

    @api.model
    def _queued_notification(self, operation, message):
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {
                "title": _("Queued"),
                "message": message,
                "type": "info",
                "sticky": False,
                "next": {"type": "ir.actions.client", "tag": "soft_reload"},
            },
        }

    def action_cancel(self):
        """Cancel queued operations; the record they were about is set back."""
        for operation in self:
            record = operation._record()
            record.check_access("write")
            if operation.state != "queued":
                raise UserError(
                    _(
                        "%(operation)s is %(state)s: only a queued operation can be cancelled.",
                        operation=operation.display_label,
                        state=dict(STATES)[operation.state],
                    )
                )
        for operation in self.sudo():
            operation.write({"state": "cancelled", "finished_date": fields.Datetime.now()})
            hook = getattr(operation._record(), "_op_cancelled", None)
            if hook:
                hook(operation)
        return True

    def action_open_record(self):
        self.ensure_one()
        record = self._record()
        return {
            "type": "ir.actions.act_window",
            "res_model": record._name,
            "res_id": record.id,
            "view_mode": "form",
        }

    def _record(self):
        self.ensure_one()
        return self[HANDLERS[self.kind][0]]

    # ------------------------------------------------------------------
    # Running
    # ------------------------------------------------------------------

    @api.model
    def _cron_run_operations(self):
        """Cron: reconcile operations whose worker died, then run the queued ones."""
        _Runner(self.sudo()).run()
        return True

    @api.model
    def _run_until_idle(self):
        """Run every queued operation now, in this thread (tests, shell)."""
        _Runner(self.sudo()).run()

    def _commit(self):
        """Commit between steps; a test's transaction is never committed."""
        if _testing():
            self.env.flush_all()
        else:
            self.env.cr.commit()  # pylint: disable=invalid-commit

    def _remote_undo_settings(self):
        """{server id: (pg params, ssh settings or None)} for this operation's journal."""
        settings = {}
        for server in self.journal_ids.server_id:
            try:
                ssh_settings = server._ssh_settings()
            except UserError:
                ssh_settings = None
            settings[server.id] = (server._pg_params(), ssh_settings)
        return settings

    def _notify_end(self):
        """Tell the user who asked (a bus notification) and refresh their open view;
        open (or resolve) the alert of what the operation was about."""
        self.ensure_one()
        alerts = self.env["saas.alert"].sudo()
        if self.state == "failed":
            alerts._on_operation_failed(self)
        elif self.state == "done":
            alerts._on_operation_done(self)
        user = self.user_id
        if not user or not user.active:
            return
        if self.state == "done":
            kind, title = "success", _("Done")
            message = _("%(operation)s finished.", operation=self.display_label)
        else:
            kind, title = "danger", _("Failed")
            message = _(
                "%(operation)s failed: %(reason)s", operation=self.display_label, reason=self.error
            )
        user._bus_send(
            "simple_notification",
            {"type": kind, "title": title, "message": message, "sticky": kind == "danger"},
        )
        record = self._record()
        user._bus_send(
            "saas_manager.operation_done",
            {"model": record._name, "res_id": record.id, "operation_id": self.id},
        )


class _Runner:
    """One run of the operations cron: claims, advances and ends operations.

    Every ORM read and write happens in the thread that calls :meth:`run`; the
    pool's threads only run :class:`RemoteStep` functions.
    """

    def __init__(self, operations):
        self.Operation = operations
        self.env = operations.env
        params = self.env["ir.config_parameter"]
        self.max_workers = int(params.get_param("saas_manager.max_parallel_operations", 4))
        # Seconds between attempts, times the attempt number (shorter in the crash tests).
        self.retry_delay_s = float(
            params.get_param("saas_manager.operation_retry_delay_s", operations._retry_delay_s)
        )
        self.active = {}  # operation id -> _Running

    def run(self):
        # A connection of its own, outside Odoo's pool (a pooled connection would
        # keep session locks for its next user), in autocommit (no snapshot held).
        _dbname, info = connection_info_for(self.env.cr.dbname)
        connection = psycopg2.connect(**info)
        connection.autocommit = True
        lease = connection.cursor()
        self.lease = lease
        pool = ThreadPoolExecutor(
            max_workers=max(1, self.max_workers), thread_name_prefix="saas-op"
        )
        self.pool = pool
        claim_until = time.monotonic() + self.Operation._claim_budget_s
        try:
            while True:
                self._reconcile_orphans()
                if time.monotonic() < claim_until:
                    self._claim()
                if not self.active:
                    if time.monotonic() < claim_until and self._retry_due_soon():
                        time.sleep(self.Operation._poll_s)
                        self._fresh_snapshot()
                        continue
                    break
                futures = {run.future: run for run in self.active.values() if run.future}
                done, _pending = wait(
                    futures, timeout=self.Operation._poll_s, return_when=FIRST_COMPLETED
                )
                for future in done:
                    run = futures[future]
                    try:
                        value, error = future.result(), None
                    except Exception as exc:
                        value, error = None, exc
                    self._advance(run, value, error)
            self._trigger_for_later()
        finally:
            pool.shutdown(wait=True)
            connection.close()

    # --- locks ---------------------------------------------------------------

    def _try_lock(self, operation_id):
        self.lease.execute("SELECT pg_try_advisory_lock(%s, %s)", [LOCK_NAMESPACE, operation_id])
        return self.lease.fetchone()[0]

    def _unlock(self, operation_id):
        self.lease.execute("SELECT pg_advisory_unlock(%s, %s)", [LOCK_NAMESPACE, operation_id])

    def _fresh_snapshot(self):
        """Read, from now on, what other transactions committed (after a lock just taken).

        The ORM's cursor is REPEATABLE READ: its snapshot may be older than the
        commit of the runner that held the lock (it commits, then unlocks), and the
        cache older still; then a finished operation would look queued (run twice)
        or running with pending journal entries (its kept database dropped). A new
        transaction and an empty cache show the rows as of after the lock.
        """
        if not _testing():
            self.env.cr.commit()  # pylint: disable=invalid-commit
        self.env.invalidate_all()

    # --- claiming ------------------------------------------------------------

    def _claim(self):
        free = self.max_workers - len(self.active)
        if free <= 0:
            return
        now = fields.Datetime.now()
        Operation = self.Operation
        candidates = Operation.search(
            [
                ("state", "=", "queued"),
                "|",
                ("not_before", "=", False),
                ("not_before", "<=", now),
            ],
            order="queued_date, id",
            limit=free * 10,
        )
        per_server = {}
        for run in self.active.values():
            per_server[run.operation.server_id.id] = (
                per_server.get(run.operation.server_id.id, 0) + 1
            )
        for operation in candidates:
            if free <= 0:
                break
            server = operation.server_id
            if per_server.get(server.id, 0) >= max(1, server.max_parallel_operations):
                continue
            if not self._try_lock(operation.id):
                continue  # another runner has it
            self._fresh_snapshot()
            if operation.state != "queued":
                self._unlock(operation.id)
                continue
            operation.write(
                {
                    "state": "running",
                    "attempt": operation.attempt + 1,
                    "started_date": operation.started_date or fields.Datetime.now(),
                    "step": _("Starting"),
                    "error": False,
                }
            )
            operation._commit()
            per_server[server.id] = per_server.get(server.id, 0) + 1
            free -= 1
            self._start(operation)

    def _start(self, operation):
        record = operation._record()
        method = getattr(record, HANDLERS[operation.kind][1])
        run = _Running(operation, method(operation))
        self.active[operation.id] = run
        _logger.info(
            "Operation %s (%s) attempt %s started", operation.id, operation.kind, operation.attempt
        )
        self._advance(run, None, None)

    # --- advancing -------------------------------------------------------------

    def _advance(self, run, value, error):
        """Send a step's result (or its error) into the operation and act on what it yields."""
        operation = run.operation
        run.future = None
        finished = False
        try:
            if error is not None:
                self._disown(run, error)
            # StopIteration is caught inside: leaving the savepoint on it would roll
            # back the operation's last writes (its result).
            with self.env.cr.savepoint():
                try:
                    if error is not None:
                        step = run.generator.throw(error)
                    else:
                        step = run.generator.send(value)
                except StopIteration:
                    finished = True
                else:
                    run.step_entries = self._journal(operation, step)
            operation._commit()
        except Exception as exc:  # every failure ends the operation, recorded
            self._fail(run, exc)
            return
        if finished:
            self._finish(run)
            return
        run.future = self.pool.submit(step.func, *step.args, **step.kwargs)

    def _journal(self, operation, step):
        """Record the step under way and what it is about to make; those entries."""
        if not isinstance(step, RemoteStep):
            raise TypeError(f"operation {operation.kind} yielded {step!r}, not a RemoteStep")
        operation.write({"step": step.label})
        Journal = self.env["saas.operation.journal"]
        if not step.makes:
            return Journal
        return Journal.create(
            [
                {
                    "operation_id": operation.id,
                    "attempt": operation.attempt,
                    "kind": made.kind,
                    "server_id": made.server_id,
                    "name": made.name,
                }
                for made in step.makes
            ]
        )

    def _disown(self, run, error):
        """The step refused to make a database or directory that exists already: it
        was there before, someone else's. Its entry is marked so (committed before
        anything is undone), and no undo ever removes it."""
        if isinstance(error, exceptions.DatabaseExists):
            kind, name = "database", error.name
        elif isinstance(error, exceptions.RemotePathExists):
            kind, name = "directory", error.path
        else:
            return
        entries = (run.step_entries or self.env["saas.operation.journal"]).filtered(
            lambda entry: entry.state == "pending" and (entry.kind, entry.name) == (kind, name)
        )
        if entries:
            entries.write({"state": "existing", "error": False})
            run.operation._commit()
            _logger.warning(
                "Operation %s: %s %s existed already; left alone", run.operation.id, kind, name
            )

    def _finish(self, run):
        operation = run.operation
        now = fields.Datetime.now()
        operation.journal_ids.filtered(lambda entry: entry.state == "pending").write(
            {"state": "kept"}
        )
        # Datetimes are stored to the second: a first attempt is timed by the clock
        # of the run that made it, to the millisecond.
        if operation.attempt == 1:
            duration = time.monotonic() - run.started
        else:
            duration = (now - operation.started_date).total_seconds()
        operation.write(
            {"state": "done", "finished_date": now, "duration_s": duration, "error": False}
        )
        operation._commit()
        self._end(run)

    def _fail(self, run, exc):
        operation = run.operation
        reason = self._reason(exc)
        # Only the network and the servers are worth another attempt; a refusal in
        # our own code (a constraint, the chatter) would fail the same way again.
        if isinstance(exc, OperationError):
            permanent = exc.permanent
        elif isinstance(exc, exceptions.RemoteError):
            permanent = isinstance(exc, PERMANENT_ERRORS)
        else:
            permanent = True
            if not isinstance(exc, UserError):
                _logger.error(
                    "Operation %s failed on an unexpected error", operation.id, exc_info=exc
                )
        run.generator.close()
        self._undo_attempt(operation)
        self._retry_or_fail(operation, reason, permanent)
        self._end(run)

    @staticmethod
    def _reason(exc):
        if isinstance(exc, UserError):
            return str(exc.args[0])
        return str(exc) or exc.__class__.__name__

    def _retry_or_fail(self, operation, reason, permanent, delay=None):
        operation.invalidate_recordset()
        now = fields.Datetime.now()
        if not permanent and operation.attempt < operation.max_attempts:
            if delay is None:
                delay = self.retry_delay_s * operation.attempt
            operation.write(
                {
                    "state": "queued",
                    "error": reason,
                    "step": _("Waiting to retry"),
                    "not_before": now + timedelta(seconds=delay),
                }
            )
            _logger.warning(
                "Operation %s attempt %s failed, retried in %s s: %s",
                operation.id,
                operation.attempt,
                delay,
                reason,
            )
            operation._commit()
            return
        operation.write(
            {
                "state": "failed",
                "error": reason,
                "finished_date": now,
                "duration_s": (now - (operation.started_date or now)).total_seconds(),
            }
        )
        hook = getattr(operation._record(), "_op_failed", None)
        if hook:
            hook(operation, reason)
        _logger.warning("Operation %s (%s) failed: %s", operation.id, operation.kind, reason)
        operation._commit()

    def _end(self, run):
        operation = run.operation
        self.active.pop(operation.id, None)
        if operation.state in ("done", "failed"):
            try:
                with self.env.cr.savepoint():
                    operation._notify_end()
                operation._commit()
            except Exception:
                _logger.exception("Notifying the end of operation %s failed", operation.id)
        self._unlock(operation.id)

    # --- undo and orphans ----------------------------------------------------

    def _undo_attempt(self, operation):
        """Remove what the journal of ``operation``'s current attempt says was made."""
        entries = operation.journal_ids.filtered(lambda entry: entry.state == "pending")
        if not entries:
            return
        operation.write({"step": _("Removing what this attempt made")})
        operation._commit()
        settings = operation._remote_undo_settings()
        # Last made, first removed; each removal is idempotent.
        for entry in entries.sorted("id", reverse=True):
            pg_params, ssh_settings = settings[entry.server_id.id]
            future = self.pool.submit(_undo, entry.kind, entry.name, pg_params, ssh_settings)
            try:
                future.result()
            except exceptions.RemoteError as exc:
                entry.write({"error": str(exc)})
                _logger.error("Could not remove %s %s: %s", entry.kind, entry.name, exc)
            else:
                entry.write({"state": "removed", "error": False})
            operation._commit()

    def _reconcile_orphans(self):
        running = self.Operation.search([("state", "=", "running")])
        for operation in running:
            if operation.id in self.active or not self._try_lock(operation.id):
                continue
            self._fresh_snapshot()
            if operation.state != "running":
                self._unlock(operation.id)
                continue
            _logger.warning(
                "Operation %s (%s) was running without a worker (attempt %s, step %s): "
                "removing what it made",
                operation.id,
                operation.kind,
                operation.attempt,
                operation.step,
            )
            reason = _(
                "The worker running it stopped during step %(step)s (attempt %(attempt)s).",
                step=operation.step or "?",
                attempt=operation.attempt,
            )
            try:
                self._undo_attempt(operation)
                # The worker died, not the server: no reason to wait before the next
                # attempt (claimed by this same run).
                self._retry_or_fail(operation, reason, permanent=False, delay=0)
                if operation.state == "failed":
                    with self.env.cr.savepoint():
                        operation._notify_end()
                    operation._commit()
            finally:
                self._unlock(operation.id)

    def _retry_due_soon(self):
        """Whether a queued operation becomes due within ``_linger_s``.

        Odoo's cron thread wakes for a trigger in the future only at its next
        periodic poll (a minute): a short wait is better spent here.
        """
        soon = fields.Datetime.now() + timedelta(seconds=self.Operation._linger_s)
        return bool(
            self.Operation.search_count(
                [("state", "=", "queued"), ("not_before", "!=", False), ("not_before", "<=", soon)],
                limit=1,
            )
        )

    def _trigger_for_later(self):
        """Wake the cron again when a retry becomes due."""
        later = self.Operation.search(
            [("state", "=", "queued"), ("not_before", "!=", False)], order="not_before", limit=1
        )
        cron = self.env.ref("saas_manager.ir_cron_saas_operation_run")
        if later:
            cron._trigger(at=later.not_before)
        elif self.Operation.search_count([("state", "=", "queued")]):
            cron._trigger()


class _Running:
    __slots__ = ("future", "generator", "operation", "started", "step_entries")

    def __init__(self, operation, generator):
        self.operation = operation
        self.generator = generator
        self.future = None
        self.started = time.monotonic()
        self.step_entries = None  # the journal entries of the step under way
