"""``GET /saas_manager/metrics``: the fleet in Prometheus text format.

``auth='none'``: Prometheus has no Odoo session; the request is authenticated by
the bearer token of the system parameter ``saas_manager.metrics_token`` instead
(empty: the endpoint is off, 404). The database is the one Odoo selects for the
request (a single database, or ``dbfilter`` matching the manager's host name,
e.g. ``dbfilter = ^saas_manager$``): an auth='none' route of an addon is served
only once Odoo has chosen a database.

Built from stored fields in a constant number of SQL queries (five), so every
worker gives the same answer and a fleet of any size costs the same. Nothing
secret is read: codes, database names, states and figures only.
"""

import logging

from odoo import SUPERUSER_ID, api, http
from odoo.http import request

from ..remote import metrics

_logger = logging.getLogger(__name__)

TOKEN_PARAM = "saas_manager.metrics_token"  # noqa: S105 (the parameter's name, not a secret)
MONITORED_STATES = ("active", "maintenance", "offline")
GIB = 1024**3
MIB = 1024**2

_SERVERS_SQL = """
SELECT code, state, health_status, last_check_date, response_time_ms, instance_count,
       max_instances, disk_measured, disk_free_gb, db_measured, db_connections
  FROM saas_server
 WHERE state IN %s
 ORDER BY code
"""
_INSTANCES_SQL = """
SELECT i.id, i.database_name, s.code, i.state, i.db_size_mb, i.filestore_measured,
       i.filestore_size_mb, i.activity_measured, i.user_count
  FROM saas_instance i
  JOIN saas_server s ON s.id = i.server_id
 WHERE i.state != 'terminated' AND s.state IN %s
 ORDER BY s.code, i.database_name
"""
_OPERATIONS_SQL = "SELECT kind, state, count(*) FROM saas_operation GROUP BY kind, state"
_ALERTS_SQL = "SELECT kind, count(*) FROM saas_alert WHERE state = 'open' GROUP BY kind"
# The newest successful backup of each instance of _INSTANCES_SQL, in one query.
_LAST_BACKUPS_SQL = """
SELECT b.instance_id, max(b.finished_date)
  FROM saas_backup b
  JOIN saas_instance i ON i.id = b.instance_id
  JOIN saas_server s ON s.id = i.server_id
 WHERE b.state = 'done' AND i.state != 'terminated' AND s.state IN %s
 GROUP BY b.instance_id
"""


def exposition(cr):
    """The exposition (bytes) of the fleet stored in the database of ``cr``: 5 queries."""
    cr.execute(_SERVERS_SQL, (MONITORED_STATES,))
    servers = [
        {
            "code": code,
            "up": None if not checked or health == "unknown" else health != "critical",
            "health_status": health,
            "response_seconds": (ms / 1000.0) if checked and ms is not None else None,
            "instances": instances,
            "max_instances": max_instances,
            "disk_free_bytes": round(disk_free_gb * GIB) if disk_measured else None,
            "db_connections": connections if db_measured else None,
        }
        for (
            code,
            _state,
            health,
            checked,
            ms,
            instances,
            max_instances,
            disk_measured,
            disk_free_gb,
            db_measured,
            connections,
        ) in cr.fetchall()
    ]
    cr.execute(_INSTANCES_SQL, (MONITORED_STATES,))
    rows = cr.fetchall()
    cr.execute(_LAST_BACKUPS_SQL, (MONITORED_STATES,))
    last_backups = dict(cr.fetchall())
    instances = [
        {
            "database": database,
            "server": server,
            "state": state,
            "db_bytes": round(db_mb * MIB) if db_mb else None,
            "filestore_bytes": round((fs_mb or 0) * MIB) if fs_measured else None,
            "users": users if activity_measured else None,
            "last_backup": last_backups.get(instance_id),
        }
        for (
            instance_id,
            database,
            server,
            state,
            db_mb,
            fs_measured,
            fs_mb,
            activity_measured,
            users,
        ) in rows
    ]
    cr.execute(_OPERATIONS_SQL)
    operations = {(kind, state): count for kind, state, count in cr.fetchall()}
    cr.execute(_ALERTS_SQL)
    alerts_open = dict(cr.fetchall())
    return metrics.render(
        servers=servers, instances=instances, operations=operations, alerts_open=alerts_open
    )


class SaasMetrics(http.Controller):
    @http.route(
        "/saas_manager/metrics",
        type="http",
        auth="none",
        methods=["GET"],
        csrf=False,
        save_session=False,
    )
    def metrics(self, **_params):
        env = api.Environment(request.env.cr, SUPERUSER_ID, {})
        token = env["ir.config_parameter"].get_param(TOKEN_PARAM)
        httprequest = request.httprequest
        auth = metrics.check_bearer(
            token, httprequest.headers.get("Authorization"), httprequest.query_string
        )
        if auth.status == 404:
            return request.not_found()
        if not auth.ok:
            # The reason names what was wrong, never the token given or expected.
            _logger.warning(
                "Metrics request from %s refused: %s", httprequest.remote_addr, auth.reason
            )
            return request.make_response(
                "Unauthorized\n",
                headers=[
                    ("Content-Type", "text/plain; charset=utf-8"),
                    ("WWW-Authenticate", metrics.WWW_AUTHENTICATE),
                    ("Cache-Control", "no-store"),
                ],
                status=401,
            )
        return request.make_response(
            exposition(env.cr),
            headers=[("Content-Type", metrics.CONTENT_TYPE), ("Cache-Control", "no-store")],
        )
