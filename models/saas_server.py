"""``saas.server``: a host that runs Odoo and hosts client databases.

Over 500 lines: the registry (fields, constraints, secrets' destinations), the health
and load sweep (concurrent, bounded, recorded in the cron's thread), placement
(``get_available_server``) and the settings handed to ``remote/`` for each remote
system. The sweep is the candidate for a file of its own when it grows again.
"""

import dataclasses
import ipaddress
import logging
import re
from urllib.parse import urlsplit

from odoo import _, api, fields, models
from odoo.exceptions import AccessError, UserError, ValidationError

from ..remote import (
    alerts,
    capacity,
    exceptions,
    health,
    load,
    odoo_rpc,
    postgres,
    ssh,
    ssh_keys,
    sweep,
)
from .saas_server_health_check import HEALTH_STATUSES

_logger = logging.getLogger(__name__)

ADMIN_GROUP = "saas_manager.group_saas_admin"
# A secret: computed from its ciphertext, for SaaS administrators only.
SECRET = {
    "compute": "_compute_secrets",
    "inverse": "_inverse_secrets",
    "search": "_search_secret",
    "groups": ADMIN_GROUP,
    "copy": False,
}
CODE_PATTERN = re.compile(r"[a-z0-9_-]+")
# Instances in these states no longer hold a slot on their server.
SLOT_FREE_STATES = ("failed", "terminated")
SLOW_RESPONSE_MS = 2000
# A server whose data disk is this full is "warning"; below the free share,
# get_available_server() sends it no new instance.
DISK_WARNING_USED_PERCENT = 90
DISK_MIN_FREE_PERCENT = 10
GIB = 1024**3
MIB = 1024**2
# Instances whose database exists on the server: their load is measured.
LOAD_MEASURED_STATES = ("running", "suspended")
# Where the server's secrets are sent. Whoever may change these may redirect the
# master password, PostgreSQL password or SSH credentials to a host of their own,
# so, like the secrets themselves, they are changed by SaaS administrators only.
CONNECTION_FIELDS = (
    "server_url",
    "tls_ca_bundle",
    "ip_address",
    "ssh_port",
    "ssh_user",
    "ssh_host_key",
    "db_host",
    "db_port",
    "db_user",
    "data_dir",
)
# What the checks and the buttons record. Set by those code paths (with sudo) and
# by SaaS administrators; a manager writing them by hand could make an unreachable
# server look active and healthy, and have instances sent to it.
STATUS_FIELDS = (
    "state",
    "health_status",
    "last_check_date",
    "server_version",
    "response_time_ms",
    "last_check_error",
    # The measured load: it drives placement and alerts.
    "load_date",
    "disk_measured",
    "disk_total_gb",
    "disk_free_gb",
    "disk_free_percent",
    "disk_error",
    "db_measured",
    "db_connections",
    "db_max_connections",
    "db_is_primary",
    "db_replica_count",
    "db_replica_max_lag_mb",
    "db_replica_max_lag_s",
    "db_error",
)


class SaasServer(models.Model):
    _name = "saas.server"
    _description = "SaaS Server"
    _inherit = ["mail.thread", "mail.activity.mixin", "saas.secret.mixin"]
    _order = "name, id"
    _secret_fields = ("ssh_password", "ssh_private_key", "db_password", "master_password")

    # The sweep's values live in remote.sweep, where scripts/bench_health_sweep.py
    # takes them too. Bounds of one health check (seconds): connecting, the whole call.
    _health_connect_timeout = sweep.CONNECT_TIMEOUT
    _health_timeout = sweep.CHECK_TIMEOUT
    # Concurrent checks: they wait on the network, not the CPU, so a sweep of up to
    # this many servers lasts about one check timeout.
    _health_max_workers = sweep.HEALTH_WORKERS
    # The hourly sweep (health and load side by side) gives up after this long:
    # what it could not check in time is recorded unknown, never offline.
    _sweep_budget_s = sweep.BUDGET_TIMEOUTS * sweep.CHECK_TIMEOUT
    # Concurrent load tasks (two per server: SSH and PostgreSQL).
    _load_max_workers = sweep.LOAD_WORKERS

    name = fields.Char(required=True, tracking=True)
    code = fields.Char(
        required=True,
        tracking=True,
        help="Short unique identifier: lowercase letters, digits, '_' and '-'.",
    )
    description = fields.Text()
    server_url = fields.Char(
        string="Server URL",
        required=True,
        tracking=True,
        help="Base URL of the Odoo server, e.g. https://eu1.example.com "
        "(its JSON-RPC endpoint is <URL>/jsonrpc).",
    )
    tls_ca_bundle = fields.Char(
        string="TLS CA Bundle",
        help="Path, on the host running SaaS Manager, of a CA bundle that signs this "
        "server's certificate. Empty: the system's trusted CAs. TLS is always verified.",
    )
    ip_address = fields.Char(
        string="IP Address",
        help="Address used for SSH when set; otherwise the host of the server URL.",
    )
    port = fields.Integer(default=8069)
    ssh_port = fields.Integer(string="SSH Port", default=22)
    ssh_user = fields.Char(string="SSH User")
    ssh_password = fields.Char(string="SSH Password", **SECRET)
    ssh_private_key = fields.Text(string="SSH Private Key", **SECRET)
    ssh_password_encrypted = fields.Char(groups=ADMIN_GROUP, copy=False)
    ssh_private_key_encrypted = fields.Char(groups=ADMIN_GROUP, copy=False)
    ssh_host_key = fields.Char(
        string="SSH Host Key",
        help="The server's public host key as ssh-keyscan prints it "
        "(e.g. 'ssh-ed25519 AAAA...'). SSH connections are refused when it is empty "
        "or when the server presents another key.",
    )
    db_host = fields.Char(string="Database Host", default="localhost")
    db_port = fields.Integer(string="Database Port", default=5432)
    db_user = fields.Char(string="Database User", default="odoo")
    db_password = fields.Char(string="Database Password", **SECRET)
    master_password = fields.Char(
        help="The server's Odoo master password (admin_passwd), used to create template "
        "databases through its database service.",
        **SECRET,
    )
    db_password_encrypted = fields.Char(groups=ADMIN_GROUP, copy=False)
    master_password_encrypted = fields.Char(groups=ADMIN_GROUP, copy=False)
    data_dir = fields.Char(
        string="Data Directory",
        default="/var/lib/odoo",
        help="Odoo data directory on that host; filestores live in <data_dir>/filestore/<db>.",
    )
    instance_domain = fields.Char(
        help="Wildcard domain of the instances, e.g. eu1.example.com: an instance is then "
        "served at <scheme>://<subdomain>.<domain> (the server needs dbfilter = ^%d$). "
        "Empty: <server URL>/web?db=<database>.",
    )
    cpu_cores = fields.Integer(string="CPU Cores")
    memory_gb = fields.Float(string="Memory (GB)")
    disk_gb = fields.Float(string="Disk (GB)")
    max_instances = fields.Integer(required=True, default=50, tracking=True)
    max_parallel_operations = fields.Integer(
        default=2,
        help="How many long operations (provisioning, template creation, backups…) may "
        "work on this server at the same time.",
    )
    operation_ids = fields.One2many("saas.operation", "server_id", string="Operations")
    operation_count = fields.Integer(compute="_compute_operation_count")
    instance_ids = fields.One2many("saas.instance", "server_id", string="Instances")
    instance_count = fields.Integer(
        compute="_compute_capacity",
        store=True,
        help="Instances holding a slot: every state but failed and terminated.",
    )
    available_capacity = fields.Float(
        string="Available Capacity (%)",
        compute="_compute_capacity",
        store=True,
        digits=(16, 2),
    )
    used_capacity = fields.Float(
        string="Used Capacity (%)",
        compute="_compute_capacity",
        store=True,
        digits=(16, 2),
    )
    template_ids = fields.One2many("saas.template", "server_id", string="Templates")
    state = fields.Selection(
        [
            ("draft", "Draft"),
            ("active", "Active"),
            ("maintenance", "Maintenance"),
            ("offline", "Offline"),
            ("disabled", "Disabled"),
        ],
        default="draft",
        required=True,
        tracking=True,
        copy=False,
    )
    health_status = fields.Selection(
        HEALTH_STATUSES,
        default="unknown",
        required=True,
        copy=False,
    )
    last_check_date = fields.Datetime(copy=False, readonly=True)
    server_version = fields.Char(copy=False, readonly=True)
    response_time_ms = fields.Integer(string="Response Time (ms)", copy=False, readonly=True)
    last_check_error = fields.Char(copy=False, readonly=True)
    health_check_ids = fields.One2many(
        "saas.server.health.check", "server_id", string="Health History", readonly=True
    )
    # --- load, measured by the hourly sweep (SPEC §10); unknown is not zero ---
    load_date = fields.Datetime(string="Load Measured", copy=False, readonly=True)
    disk_measured = fields.Boolean(
        copy=False, readonly=True, help="The disk figures are from the last sweep."
    )
    disk_total_gb = fields.Float(string="Disk Total (GB)", copy=False, readonly=True)
    disk_free_gb = fields.Float(string="Disk Free (GB)", copy=False, readonly=True)
    disk_free_percent = fields.Float(
        string="Disk Free (%)",
        copy=False,
        readonly=True,
        digits=(16, 2),
        help="Free share of the data directory's disk. Below 10 %, no new instance is "
        "placed on this server.",
    )
    disk_error = fields.Char(copy=False, readonly=True)
    db_measured = fields.Boolean(string="PostgreSQL Measured", copy=False, readonly=True)
    db_connections = fields.Integer(string="DB Connections", copy=False, readonly=True)
    db_max_connections = fields.Integer(string="DB Max Connections", copy=False, readonly=True)
    db_is_primary = fields.Boolean(string="DB Is Primary", copy=False, readonly=True)
    db_replica_count = fields.Integer(string="Replicas", copy=False, readonly=True)
    db_replica_max_lag_mb = fields.Float(
        string="Replica Max Lag (MB)", copy=False, readonly=True, digits=(16, 2)
    )
    db_replica_max_lag_s = fields.Float(
        string="Replica Max Lag (s)", copy=False, readonly=True, digits=(16, 1)
    )
    db_error = fields.Char(string="PostgreSQL Error", copy=False, readonly=True)
    alert_after_failures = fields.Integer(
        default=alerts.DEFAULT_OPEN_AFTER,
        help="Consecutive bad checks before an alert opens (it is resolved after 2 good ones).",
    )
    alert_ids = fields.One2many("saas.alert", "server_id", string="Alerts", readonly=True)
    alert_open_count = fields.Integer(compute="_compute_alert_open_count", string="Open Alerts")

    _sql_constraints = [
        ("code_unique", "UNIQUE(code)", "Another server already uses this code."),
        ("server_url_unique", "UNIQUE(server_url)", "Another server already uses this URL."),
    ]

    @api.depends(
        "ssh_password_encrypted",
        "ssh_private_key_encrypted",
        "db_password_encrypted",
        "master_password_encrypted",
    )
    def _compute_secrets(self):
        return super()._compute_secrets()

    @api.depends("operation_ids")
    def _compute_operation_count(self):
        for server in self:
            server.operation_count = len(server.operation_ids)

    @api.depends("alert_ids.state")
    def _compute_alert_open_count(self):
        counts = dict(
            self.env["saas.alert"]._read_group(
                [("server_id", "in", self.ids), ("state", "=", "open")],
                ["server_id"],
                ["__count"],
            )
        )
        for server in self:
            server.alert_open_count = counts.get(server._origin, 0)

    @api.depends("max_instances", "instance_ids.state")
    def _compute_capacity(self):
        for server in self:
            server.instance_count = len(
                server.instance_ids.filtered(lambda inst: inst.state not in SLOT_FREE_STATES)
            )
            server.available_capacity = capacity.available_capacity(
                server.max_instances, server.instance_count
            )
            server.used_capacity = 100.0 - server.available_capacity

    @api.constrains("code")
    def _check_code(self):
        for server in self:
            if not CODE_PATTERN.fullmatch(server.code or ""):
                raise ValidationError(
                    _(
                        "Server code %(code)r is not valid: use only lowercase letters, digits, "
                        "'_' and '-' (for example 'eu1-prod').",
                        code=server.code,
                    )
                )

    @api.constrains("server_url")
    def _check_server_url(self):
        for server in self:
            try:
                odoo_rpc.validate_base_url(server.server_url or "")
            except exceptions.InvalidInput as exc:
                raise ValidationError(
                    _(
                        "Server URL must be http:// or https:// and name a host, with no "
                        "credentials, query or fragment: %(reason)s",
                        reason=exc,
                    )
                ) from None

    @api.constrains("max_instances", "max_parallel_operations", "alert_after_failures")
    def _check_max_instances(self):
        for server in self:
            if server.alert_after_failures < 1:
                raise ValidationError(
                    _(
                        "Alert after failures of server %(name)s must be at least 1.",
                        name=server.name,
                    )
                )
            if server.max_instances <= 0:
                raise ValidationError(
                    _("Max instances of server %(name)s must be above 0.", name=server.name)
                )
            if server.max_parallel_operations <= 0:
                raise ValidationError(
                    _(
                        "Max parallel operations of server %(name)s must be above 0.",
                        name=server.name,
                    )
                )

    @api.constrains("ip_address")
    def _check_ip_address(self):
        for server in self.filtered("ip_address"):
            try:
                ipaddress.ip_address(server.ip_address)
            except ValueError:
                raise ValidationError(
                    _(
                        "IP address %(ip)r of server %(name)s is not a valid IPv4 or IPv6 "
                        "address.",
                        ip=server.ip_address,
                        name=server.name,
                    )
                ) from None

    @api.constrains("port", "ssh_port", "db_port")
    def _check_ports(self):
        labels = {
            "port": _("Port"),
            "ssh_port": _("SSH port"),
            "db_port": _("Database port"),
        }
        for server in self:
            for fname, label in labels.items():
                if not 1 <= server[fname] <= 65535:
                    raise ValidationError(
                        _(
                            "%(label)s of server %(name)s must be between 1 and 65535, "
                            "not %(value)s.",
                            label=label,
                            name=server.name,
                            value=server[fname],
                        )
                    )

    @api.constrains("ssh_host_key")
    def _check_ssh_host_key(self):
        for server in self.filtered("ssh_host_key"):
            try:
                ssh_keys.parse_host_keys(server.ssh_host_key, f"server {server.name}")
            except exceptions.SshHostKeyError as exc:
                raise ValidationError(
                    _("SSH host key of server %(name)s: %(reason)s", name=server.name, reason=exc)
                ) from None

    @api.model
    def _normalize_vals(self, vals):
        if vals.get("server_url"):
            vals["server_url"] = vals["server_url"].strip().rstrip("/")
        for fname in ("code", "ip_address", "ssh_host_key"):
            if isinstance(vals.get(fname), str):
                vals[fname] = vals[fname].strip()
        return vals

    @api.model_create_multi
    def create(self, vals_list):
        servers = super().create([self._normalize_vals(dict(vals)) for vals in vals_list])
        for server in servers:
            _logger.info(
                "SaaS server %s (%s) created at %s", server.code, server.id, server.server_url
            )
        return servers

    def write(self, vals):
        if not (self.env.su or self.env.user.has_group(ADMIN_GROUP)):
            changed = [fname for fname in CONNECTION_FIELDS if fname in vals]
            if changed:
                raise AccessError(
                    _(
                        "Only a SaaS administrator may change where a server is reached "
                        "(%(fields)s).",
                        fields=", ".join(self._fields[fname].string for fname in changed),
                    )
                )
            changed = [fname for fname in STATUS_FIELDS if fname in vals]
            if changed:
                raise AccessError(
                    _(
                        "%(fields)s of a server change through its buttons and health "
                        "checks; only a SaaS administrator may set them by hand.",
                        fields=", ".join(self._fields[fname].string for fname in changed),
                    )
                )
        vals = self._normalize_vals(dict(vals))
        old_states = {server.id: server.state for server in self} if "state" in vals else {}
        res = super().write(vals)
        for server in self:
            if server.id in old_states and old_states[server.id] != server.state:
                _logger.info(
                    "SaaS server %s state: %s -> %s",
                    server.code,
                    old_states[server.id],
                    server.state,
                )
        return res

    @api.ondelete(at_uninstall=False)
    def _unlink_except_hosting_instances(self):
        hosting = self.filtered("instance_ids")
        if hosting:
            raise UserError(
                _(
                    "Server %(names)s still has instances, terminated ones included: delete "
                    "them before deleting the server.",
                    names=", ".join(hosting.mapped("name")),
                )
            )

    # ------------------------------------------------------------------
    # Health
    # ------------------------------------------------------------------

    def _health_target(self):
        self.ensure_one()
        return health.Target(
            key=self.id,
            url=self.server_url,
            verify=self.tls_ca_bundle or True,
        )

    def _probe_all(self, sweep_timeout=None):
        """Probe every server of ``self`` concurrently; return {server id: ProbeResult}.

        Only network I/O happens in the pool's threads: no ORM access there.
        ``sweep_timeout`` bounds the whole sweep (by default two check timeouts): a
        probe not done by then is ``checked=False`` (unknown).
        """
        outcome = sweep.run(
            [server._health_target() for server in self],
            connect_timeout=self._health_connect_timeout,
            timeout=self._health_timeout,
            budget=sweep_timeout,
            health_workers=self._health_max_workers,
        )
        self._log_probes(outcome.health)
        return outcome.health

    def _log_probes(self, results):
        # Every connection attempt, whichever action made it, logged once here.
        for server in self:
            result = results[server.id]
            _logger.info(
                "Connection to SaaS server %s (%s): %s in %s ms",
                server.code,
                server.server_url,
                "ok" if result.online else f"failed, {result.error}",
                result.response_time_ms,
            )

    def _health_status_for(self, result):
        self.ensure_one()
        if not result.online:
            return "critical"
        if (
            result.response_time_ms > SLOW_RESPONSE_MS
            or capacity.is_nearly_full(self.max_instances, self.instance_count)
            or (self.disk_measured and 100 - self.disk_free_percent >= DISK_WARNING_USED_PERCENT)
        ):
            return "warning"
        return "healthy"

    def _apply_health_result(self, result):
        """Record one probe result on the server: status, history row, state.

        A probe the sweep had no time to finish (``checked`` False) says nothing
        about the server: it is recorded *unknown* and its state is left alone.
        """
        self.ensure_one()
        if not result.checked:
            return self._apply_unchecked_result(result)
        status = self._health_status_for(result)
        now = fields.Datetime.now()
        error = (result.error or "")[:250] or False
        vals = {
            "health_status": status,
            "last_check_date": now,
            "response_time_ms": result.response_time_ms,
            "last_check_error": error,
        }
        if result.online:
            vals["server_version"] = result.version or False
        # Only the two states a check is allowed to move between; draft,
        # maintenance and disabled are operator decisions.
        if self.state == "active" and not result.online:
            vals["state"] = "offline"
        elif self.state == "offline" and result.online:
            vals["state"] = "active"
        self.sudo().write(vals)
        # The history is written by the system, not by the user who pressed the button.
        self.env["saas.server.health.check"].sudo().create(
            {
                "server_id": self.id,
                "check_date": now,
                "health_status": status,
                "online": result.online,
                "response_time_ms": result.response_time_ms,
                "server_version": result.version or False,
                "error": error,
            }
        )
        log = _logger.info if result.online else _logger.warning
        log(
            "Health check of SaaS server %s (%s): %s, %s ms%s",
            self.code,
            self.server_url,
            status,
            result.response_time_ms,
            f", {result.error}" if result.error else "",
        )
        return status

    def _apply_unchecked_result(self, result):
        self.ensure_one()
        now = fields.Datetime.now()
        error = (result.error or "")[:250] or False
        self.sudo().write({"health_status": "unknown", "last_check_error": error})
        self.env["saas.server.health.check"].sudo().create(
            {
                "server_id": self.id,
                "check_date": now,
                "health_status": "unknown",
                "online": False,
                "response_time_ms": 0,
                "error": error,
            }
        )
        _logger.warning(
            "Health check of SaaS server %s (%s): unknown, %s", self.code, self.server_url, error
        )
        return "unknown"

    def _check_health(self, with_load=False):
        """Probe ``self`` concurrently, then record each result in its own savepoint.

        With ``with_load`` (the hourly sweep), the load is collected at the same
        time, both within ``_sweep_budget_s``, and recorded first so that the
        health status sees the fresh disk figures. Then the alerts are fed.

        A server whose result cannot be recorded is logged and skipped; the others are
        recorded. Returns the servers whose result could not be recorded.
        """
        loads = {}
        if with_load:
            # The targets are built here; only network I/O in the sweep's threads.
            outcome = sweep.run(
                [server._health_target() for server in self],
                [server._load_target() for server in self],
                connect_timeout=self._health_connect_timeout,
                timeout=self._health_timeout,
                budget=self._sweep_budget_s,
                health_workers=self._health_max_workers,
                load_workers=self._load_max_workers,
            )
            self._log_probes(outcome.health)
            results, loads = outcome.health, outcome.load
            _logger.info(
                "Sweep of %s servers in %.1f s (budget %s s): %s not checked, %s loads unknown",
                len(self),
                outcome.elapsed_s,
                self._sweep_budget_s,
                sum(not result.checked for result in results.values()),
                sum(not measured.collected for measured in loads.values()),
            )
        else:
            results = self._probe_all()
        failed = self.browse()
        checks = []
        for server in self:
            try:
                with self.env.cr.savepoint():
                    if server.id in loads:
                        server._apply_load_result(loads[server.id])
                    server._apply_health_result(results[server.id])
                    checks.append(
                        server._alert_conditions(results[server.id], loads.get(server.id))
                    )
            except Exception:
                # One server's fault must never stop the sweep of the others.
                _logger.exception(
                    "Recording the health check of SaaS server %s failed", server.code
                )
                failed |= server
        try:
            with self.env.cr.savepoint():
                self.env["saas.alert"]._record_server_checks(checks)
        except Exception:
            # The checks are recorded; alerts are fed again at the next sweep.
            _logger.exception("Recording the alerts of a health sweep failed")
        return failed

    # ------------------------------------------------------------------
    # Load and alerts
    # ------------------------------------------------------------------

    def _load_target(self):
        """What remote.load needs to measure this server: reached by SSH when it is
        configured (else the disk is unknown), by PostgreSQL always."""
        self.ensure_one()
        try:
            ssh_settings = dataclasses.replace(
                self._ssh_settings(), connect_timeout=self._health_connect_timeout
            )
        except UserError:
            ssh_settings = None
        params = dataclasses.replace(
            self._pg_params(), connect_timeout=int(self._health_connect_timeout)
        )
        databases = tuple(
            self.instance_ids.filtered(lambda inst: inst.state in LOAD_MEASURED_STATES).mapped(
                "database_name"
            )
        )
        return load.LoadTarget(
            key=self.id,
            ssh=ssh_settings,
            data_dir=self.data_dir or "/var/lib/odoo",
            postgres=params,
            databases=databases,
        )

    def _apply_load_result(self, result):
        """Record what remote.load measured: unknown parts are marked so, not zeroed."""
        self.ensure_one()
        vals = {"load_date": fields.Datetime.now()}
        disk = result.disk
        if disk is not None:
            vals.update(
                disk_measured=True,
                disk_total_gb=disk.total_bytes / GIB,
                disk_free_gb=disk.free_bytes / GIB,
                disk_free_percent=disk.free_percent,
                disk_error=False,
            )
        else:
            vals.update(disk_measured=False, disk_error=(result.disk_error or "")[:250] or False)
        pg = result.postgres
        if pg is not None:
            lags_bytes = [rep.lag_bytes for rep in pg.replicas if rep.lag_bytes is not None]
            lags_s = [rep.replay_lag_s for rep in pg.replicas if rep.replay_lag_s is not None]
            vals.update(
                db_measured=True,
                db_connections=pg.connections,
                db_max_connections=pg.max_connections,
                db_is_primary=pg.is_primary,
                db_replica_count=len(pg.replicas),
                db_replica_max_lag_mb=max(lags_bytes, default=0) / MIB,
                db_replica_max_lag_s=max(lags_s, default=0.0),
                db_error=False,
            )
        else:
            vals.update(db_measured=False, db_error=(result.postgres_error or "")[:250] or False)
        self.sudo().write(vals)
        for instance in self.instance_ids.filtered(lambda inst: inst.state in LOAD_MEASURED_STATES):
            try:
                measured = result.instance(instance.database_name)
            except KeyError:
                continue
            instance._apply_load_result(measured)
        _logger.info(
            "Load of SaaS server %s: disk %s, PostgreSQL %s",
            self.code,
            f"{disk.free_percent:.1f} % free" if disk else f"unknown ({result.disk_error})",
            f"{pg.connections}/{pg.max_connections} connections, {len(pg.replicas)} replicas"
            if pg
            else f"unknown ({result.postgres_error})",
        )

    def _alert_conditions(self, result, server_load=None):
        """``(server, {kind: bad}, {kind: message})`` of one check, for saas.alert."""
        self.ensure_one()
        replica_lags = None
        disk_free = None
        if server_load is not None and server_load.disk is not None:
            disk_free = server_load.disk.free_percent
        if server_load is not None and server_load.postgres is not None:
            replica_lags = [
                (rep.lag_bytes, rep.replay_lag_s) for rep in server_load.postgres.replicas
            ]
        conditions = alerts.server_conditions(
            online=result.online if result.checked else None,
            response_time_ms=result.response_time_ms if result.checked else None,
            capacity_used_percent=self.used_capacity,
            disk_free_percent=disk_free,
            replica_lags=replica_lags,
        )
        messages = {
            "server_down": result.error or _("No answer."),
            "server_slow": _("Answered in %(ms)s ms.", ms=result.response_time_ms),
            "capacity": _("%(used)s%% of its instance slots used.", used=round(self.used_capacity)),
        }
        if disk_free is not None:
            messages["disk"] = _("%(free)s%% of its disk free.", free=round(disk_free, 1))
        if replica_lags:
            messages["replica_lag"] = _(
                "A replica lags %(mb)s MB (%(s)s s) behind.",
                mb=round(self.db_replica_max_lag_mb, 1),
                s=round(self.db_replica_max_lag_s, 1),
            )
        return self, conditions, messages

    def action_check_health(self):
        self.check_access("write")
        self._check_health()
        return True

    @api.model
    def cron_check_all_servers_health(self):
        """Cron: check every active, maintenance or offline server.

        Offline servers are checked so that they can come back; the checks run
        concurrently, so a sweep lasts about one check timeout. Then the age of
        the instances' backups is checked (``backup_stale`` alerts).
        """
        servers = self.search([("state", "in", ("active", "maintenance", "offline"))])
        _logger.info("Health check sweep of %s SaaS servers", len(servers))
        failed = servers._check_health(with_load=True)
        if failed:
            _logger.error(
                "Health check sweep: %s of %s servers could not be recorded (%s)",
                len(failed),
                len(servers),
                ", ".join(failed.mapped("code")),
            )
        try:
            with self.env.cr.savepoint():
                # Hourly too: the instances whose newest good backup is too old.
                self.env["saas.alert"]._check_stale_backups()
        except Exception:
            # The sweep is recorded; the backups are looked at again next hour.
            _logger.exception("Checking the age of the instances' backups failed")
        return True

    def _test_connection(self):
        """Return True when the server answers ``common.version`` over JSON-RPC.

        Bounded in time, TLS verified, redirects not followed; never raises for a
        network or protocol fault.
        """
        self.ensure_one()
        return self._probe_all()[self.id].online

    # ------------------------------------------------------------------
    # Settings for the remote package (secrets read here, at the point of use)
    # ------------------------------------------------------------------

    def _rpc_client(self, timeout=None):
        """A JSON-RPC client for this server (close it, or use it with ``with``)."""
        self.ensure_one()
        return odoo_rpc.OdooRpcClient(
            self.server_url,
            connect_timeout=self._health_connect_timeout,
            timeout=timeout or self._health_timeout,
            verify=self.tls_ca_bundle or True,
        )

    def _master_password(self):
        self.ensure_one()
        password = self._read_secret("master_password")
        if not password:
            raise UserError(
                _(
                    "Server %(name)s has no master password: an administrator must set it.",
                    name=self.name,
                )
            )
        return password

    def _pg_params(self):
        """Connection settings of this server's PostgreSQL."""
        self.ensure_one()
        return postgres.ConnectionParams(
            host=self.db_host or "localhost",
            port=self.db_port,
            user=self.db_user or "odoo",
            password=self._read_secret("db_password") or None,
        )

    def _ssh_host(self):
        self.ensure_one()
        return self.ip_address or urlsplit(self.server_url).hostname

    def _ssh_settings(self):
        """SSH settings of this host; the pinned host key is required."""
        self.ensure_one()
        if not self.ssh_user:
            raise UserError(_("Server %(name)s has no SSH user.", name=self.name))
        if not (self.ssh_host_key or "").strip():
            raise UserError(
                _(
                    "Server %(name)s has no SSH host key: an administrator must pin it "
                    "(ssh-keyscan -t ed25519 -p %(port)s %(host)s).",
                    name=self.name,
                    port=self.ssh_port,
                    host=self._ssh_host(),
                )
            )
        self._check_ssh_host_key()
        password = self._read_secret("ssh_password")
        private_key = self._read_secret("ssh_private_key")
        if not (password or private_key):
            raise UserError(
                _(
                    "Server %(name)s has neither an SSH password nor an SSH private key.",
                    name=self.name,
                )
            )
        return ssh.SshSettings(
            host=self._ssh_host(),
            port=self.ssh_port,
            username=self.ssh_user,
            password=password or None,
            private_key=private_key or None,
            host_key=self.ssh_host_key or "",
        )

    def _filestore_path(self, database_name):
        self.ensure_one()
        data_dir = (self.data_dir or "/var/lib/odoo").rstrip("/")
        return f"{data_dir}/filestore/{database_name}"

    # ------------------------------------------------------------------
    # Actions
    # ------------------------------------------------------------------

    def action_activate(self):
        self.check_access("write")
        results = self._probe_all()
        unreachable = [
            (server, results[server.id]) for server in self if not results[server.id].online
        ]
        if unreachable:
            raise UserError(
                "\n".join(
                    _(
                        "Server %(name)s cannot be activated: %(reason)s",
                        name=server.name,
                        reason=result.error,
                    )
                    for server, result in unreachable
                )
            )
        now = fields.Datetime.now()
        for server in self:
            result = results[server.id]
            server.sudo().write(
                {
                    "state": "active",
                    "health_status": "healthy",
                    "last_check_date": now,
                    "server_version": result.version or False,
                    "response_time_ms": result.response_time_ms,
                    "last_check_error": False,
                }
            )
        return True

    def action_deactivate(self):
        self.check_access("write")
        hosting = self.filtered(lambda server: server.instance_count)
        if hosting:
            raise UserError(
                _(
                    "Server %(names)s still hosts instances and cannot be deactivated.",
                    names=", ".join(hosting.mapped("name")),
                )
            )
        self.sudo().write({"state": "disabled"})
        return True

    def action_maintenance(self):
        self.check_access("write")
        self.sudo().write({"state": "maintenance"})
        return True

    def action_test_connection(self):
        self.ensure_one()
        result = self._probe_all()[self.id]
        if result.online:
            params = {
                "title": _("Connection successful"),
                "message": _(
                    "%(name)s answered: Odoo %(version)s in %(ms)s ms.",
                    name=self.name,
                    version=result.version or "?",
                    ms=result.response_time_ms,
                ),
                "type": "success",
            }
        else:
            params = {
                "title": _("Connection failed"),
                "message": _("%(name)s: %(reason)s", name=self.name, reason=result.error),
                "type": "danger",
            }
        params["sticky"] = False
        return {"type": "ir.actions.client", "tag": "display_notification", "params": params}

    def action_view_operations(self):
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id("saas_manager.saas_operation_action")
        action["domain"] = [("server_id", "=", self.id)]
        return action

    def action_view_instances(self):
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id("saas_manager.saas_instance_action")
        action["domain"] = [("server_id", "=", self.id)]
        action["context"] = {"default_server_id": self.id}
        return action

    # ------------------------------------------------------------------
    # API for other modules
    # ------------------------------------------------------------------

    @api.model
    def get_available_server(self, min_capacity_percent=capacity.DEFAULT_AVAILABLE_MIN_PERCENT):
        """Return the active server with the most free capacity.

        :param min_capacity_percent: the least free capacity, in percent of
            ``max_instances``, a server must have to qualify (0-100).
        :return: one ``saas.server`` record; ties go to the server with the fewest
            instances, then the oldest.
        :raise UserError: when no active server has that much capacity free.

        Servers with less than 10 % of their disk free (as last measured) are
        skipped; a server whose disk was never measured is not.

        Runs one SQL query whatever the number of servers.
        """
        if (
            isinstance(min_capacity_percent, bool)
            or not isinstance(min_capacity_percent, int | float)
            or not 0 <= min_capacity_percent <= 100
        ):
            raise UserError(
                _(
                    "The minimum capacity must be a percentage between 0 and 100, not %(value)r.",
                    value=min_capacity_percent,
                )
            )
        server = self.search(
            [
                ("state", "=", "active"),
                ("available_capacity", ">=", min_capacity_percent),
                "|",
                ("disk_measured", "=", False),
                ("disk_free_percent", ">=", DISK_MIN_FREE_PERCENT),
            ],
            order="available_capacity desc, instance_count asc, id asc",
            limit=1,
        )
        if not server:
            raise UserError(
                _(
                    "No active server has at least %(percent)s%% of its capacity free.",
                    percent=min_capacity_percent,
                )
            )
        return server
