"""The Prometheus exposition of the fleet, and the bearer-token check of its endpoint.

:func:`render` builds the text format (``prometheus_client``: a fresh
``CollectorRegistry`` holding one custom collector, then ``generate_latest``) from
plain data the Odoo layer read from its stored records, so every worker answers
the same. Each row is a mapping or an object with attributes; only the fields
named below are read, so nothing else a record holds (a password, a token) can
reach a label. Labels are ``server`` (the server's code) and ``instance`` (the
database name), plus the ``status``/``state``/``kind`` of the one-hot families.

``servers``: ``code``, ``up`` (bool, None unknown), ``health_status``,
``response_seconds``, ``instances``, ``max_instances``, ``disk_free_bytes``,
``db_connections``. ``instances``: ``database``, ``server`` (code), ``state``,
``db_bytes``, ``filestore_bytes``, ``users``, ``last_backup`` (a naive UTC
datetime, or seconds since the epoch). ``operations``: ``{(kind, state): count}``.
``alerts_open``: ``{kind: count}``. A value that is None is not exposed (unknown
is absent, not 0).

:func:`check_bearer` decides the status of a request: 404 when no token is
configured (the endpoint is off), 401 for anything but ``Authorization: Bearer
<the token>`` (missing, another scheme such as Basic, another token of any
length, a token in the query string), compared in constant time.
"""

import datetime
import hmac
import math
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

__all__ = [
    "CONTENT_TYPE",
    "HEALTH_STATUSES",
    "INSTANCE_STATES",
    "WWW_AUTHENTICATE",
    "AuthResult",
    "check_bearer",
    "render",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST
WWW_AUTHENTICATE = 'Bearer realm="saas_manager"'
HEALTH_STATUSES = ("healthy", "warning", "critical", "unknown")
INSTANCE_STATES = ("draft", "provisioning", "running", "suspended", "failed", "terminated")
ALERT_KINDS = (
    "server_down",
    "server_slow",
    "capacity",
    "disk",
    "replica_lag",
    "backup_failed",
    "backup_stale",
    "operation_failed",
)
# Query parameters that would carry a credential: refused, tokens go in the header.
_CREDENTIAL_PARAMS = {"token", "access_token", "bearer", "auth", "authorization", "key"}
_MAX_HEADER_CHARS = 4096
_KNOWN_SCHEMES = {
    "basic",
    "digest",
    "negotiate",
    "ntlm",
    "token",
    "hoba",
    "mutual",
    "aws4-hmac-sha256",
}

_SERVER_GAUGES = (
    ("saas_server_response_seconds", "Duration of the last health check", "response_seconds"),
    ("saas_server_instances", "Instances holding a slot on the server", "instances"),
    ("saas_server_max_instances", "Instance slots of the server", "max_instances"),
    ("saas_server_disk_free_bytes", "Free bytes on the data directory's disk", "disk_free_bytes"),
    ("saas_server_db_connections", "Client connections to its PostgreSQL", "db_connections"),
)
_INSTANCE_GAUGES = (
    ("saas_instance_db_bytes", "Size of the instance's database", "db_bytes"),
    ("saas_instance_filestore_bytes", "Size of the instance's filestore", "filestore_bytes"),
    ("saas_instance_users", "Active internal users of the instance", "users"),
    (
        "saas_instance_last_backup_timestamp_seconds",
        "When the instance's last successful backup ended (Unix time)",
        "last_backup",
    ),
)


def _get(row, name):
    if isinstance(row, Mapping):
        return row.get(name)
    return getattr(row, name, None)


def _label(value):
    return "" if value is None or value is False else str(value)


def _number(value):
    """A float for a number or a datetime (Unix time); None for empty (None, False) or other."""
    if value is None or value is False:
        return None
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:  # Odoo's datetimes are naive UTC
            value = value.replace(tzinfo=datetime.timezone.utc)
        return value.timestamp()
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


class _Snapshot:
    """A collector of plain rows (prometheus_client calls ``collect()`` once per render)."""

    def __init__(self, servers, instances, operations, alerts_open):
        self.servers = list(servers)
        self.instances = list(instances)
        self.operations = dict(operations or {})
        self.alerts_open = dict(alerts_open or {})

    def collect(self):
        yield from self._servers()
        yield from self._instances()
        operations = GaugeMetricFamily(
            "saas_operations", "Operations by kind and state", labels=["kind", "state"]
        )
        for (kind, state), count in sorted(self.operations.items()):
            operations.add_metric([_label(kind), _label(state)], float(count))
        yield operations
        alerts = GaugeMetricFamily("saas_alerts_open", "Open alerts by kind", labels=["kind"])
        for kind in sorted(set(ALERT_KINDS) | set(self.alerts_open)):
            alerts.add_metric([_label(kind)], float(self.alerts_open.get(kind, 0)))
        yield alerts

    def _servers(self):
        up = GaugeMetricFamily(
            "saas_server_up", "1 when the last health check got an answer", labels=["server"]
        )
        status = GaugeMetricFamily(
            "saas_server_health_status",
            "1 for the server's current health status",
            labels=["server", "status"],
        )
        gauges = [
            (GaugeMetricFamily(name, doc, labels=["server"]), field)
            for name, doc, field in _SERVER_GAUGES
        ]
        for row in self.servers:
            server = _label(_get(row, "code"))
            value = _get(row, "up")
            if value is not None:
                up.add_metric([server], 1.0 if value else 0.0)
            current = _get(row, "health_status") or "unknown"
            for name in dict.fromkeys((*HEALTH_STATUSES, current)):
                status.add_metric([server, name], 1.0 if name == current else 0.0)
            for family, field in gauges:
                number = _number(_get(row, field))
                if number is not None:
                    family.add_metric([server], number)
        yield up
        yield status
        for family, _field in gauges:
            yield family

    def _instances(self):
        state = GaugeMetricFamily(
            "saas_instance_state",
            "1 for the instance's current state",
            labels=["server", "instance", "state"],
        )
        gauges = [
            (GaugeMetricFamily(name, doc, labels=["server", "instance"]), field)
            for name, doc, field in _INSTANCE_GAUGES
        ]
        for row in self.instances:
            labels = [_label(_get(row, "server")), _label(_get(row, "database"))]
            current = _get(row, "state") or "draft"
            for name in dict.fromkeys((*INSTANCE_STATES, current)):
                state.add_metric([*labels, name], 1.0 if name == current else 0.0)
            for family, field in gauges:
                number = _number(_get(row, field))
                if number is not None:
                    family.add_metric(labels, number)
        yield state
        for family, _field in gauges:
            yield family


def render(*, servers=(), instances=(), operations=None, alerts_open=None):
    """The exposition (bytes, :data:`CONTENT_TYPE`) of the given rows; see the module doc."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(servers, instances, operations, alerts_open))
    return generate_latest(registry)


# --- the bearer token --------------------------------------------------------------


@dataclass(frozen=True)
class AuthResult:
    """``status`` 200, 401 or 404; ``reason`` for a log line (never holds a token)."""

    status: int
    reason: str

    @property
    def ok(self):
        return self.status == 200


def check_bearer(configured_token, authorization=None, query_string=""):
    """Whether a metrics request may be answered.

    :param configured_token: the system parameter ``saas_manager.metrics_token``
        (empty or None: the endpoint is off, 404).
    :param authorization: the request's ``Authorization`` header, or None.
    :param query_string: the raw query string (bytes or text); a credential in
        it is refused (401) even with a good header: URLs end up in logs.
    """
    configured = (configured_token or "").strip()
    if not configured:
        return AuthResult(404, "the metrics endpoint is off (no token configured)")
    reason = _refusal(configured, authorization, query_string)
    return AuthResult(401, reason) if reason else AuthResult(200, "ok")


def _refusal(configured, authorization, query_string):
    """Why a request is refused (401), or None when it carries the token as it should."""
    if isinstance(query_string, bytes):
        query_string = query_string.decode("latin-1")
    if query_string:
        params = parse_qsl(query_string, keep_blank_values=True)
        if any(key.lower() in _CREDENTIAL_PARAMS for key, _value in params) or any(
            configured in key or configured in value for key, value in params
        ):
            return "a credential in the query string"
    if not authorization:
        return "no Authorization header"
    if len(authorization) > _MAX_HEADER_CHARS:
        return "an oversized Authorization header"
    scheme, _sep, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        # The scheme is named only when it is a known word: a bare token is no scheme.
        known = scheme.lower() in _KNOWN_SCHEMES
        return f"Authorization scheme {scheme.title() if known else '(unknown)'} instead of Bearer"
    given = credentials.strip().encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(given, configured.encode("utf-8")):
        return "a wrong bearer token"
    return None
