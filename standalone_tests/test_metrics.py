"""remote.metrics: the exposition, the token check, and a real Prometheus scraping it.

A small stdlib HTTP server on 127.0.0.1 serves ``remote.metrics.render`` behind
``check_bearer`` at ``/saas_manager/metrics``; Debian's Prometheus scrapes it
every second with the token from a credentials file, and PromQL over its HTTP API
must give back the values served. ``promtool check metrics`` checks a scrape.
"""

import datetime
import http.server
import secrets
import threading
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from remote import metrics
from sandbox import prometheus as sandbox_prometheus

PATH = "/saas_manager/metrics"
BACKUP = datetime.datetime(2025, 5, 6, 7, 8, 9)

SERVERS = [
    {
        "code": "eu1",
        "up": True,
        "health_status": "healthy",
        "response_seconds": 0.25,
        "instances": 3,
        "max_instances": 10,
        "disk_free_bytes": 50 * 1024**3,
        "db_connections": 12,
        # Never exposed: only the named fields are read.
        "postgres_password": "pg-secret-never-shown",
    },
    {
        "code": "paris",
        "up": False,
        "health_status": "critical",
        "response_seconds": 10.0,
        "instances": 0,
        "max_instances": 5,
        "disk_free_bytes": None,  # unknown: absent, not 0
        "db_connections": None,
    },
]
INSTANCES = [
    {
        "database": "acme",
        "server": "eu1",
        "state": "running",
        "db_bytes": 40 * 1024**2,
        "filestore_bytes": 7 * 1024**2,
        "users": 4,
        "last_backup": BACKUP,
    },
    {"database": "beta", "server": "eu1", "state": "failed", "db_bytes": None, "users": False},
]
OPERATIONS = {("provision", "done"): 5, ("backup", "failed"): 1}
ALERTS = {"server_down": 1}


def render():
    return metrics.render(
        servers=SERVERS, instances=INSTANCES, operations=OPERATIONS, alerts_open=ALERTS
    )


def samples(exposition):
    found = {}
    for family in text_string_to_metric_families(exposition.decode()):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


def value(found, name, **labels):
    return found[name, tuple(sorted(labels.items()))]


# --- the exposition ------------------------------------------------------------------


def test_render_names_labels_and_values():
    exposition = render()
    found = samples(exposition)
    assert value(found, "saas_server_up", server="eu1") == 1
    assert value(found, "saas_server_up", server="paris") == 0
    assert value(found, "saas_server_health_status", server="eu1", status="healthy") == 1
    assert value(found, "saas_server_health_status", server="eu1", status="critical") == 0
    assert value(found, "saas_server_health_status", server="paris", status="critical") == 1
    assert value(found, "saas_server_response_seconds", server="eu1") == 0.25
    assert value(found, "saas_server_instances", server="eu1") == 3
    assert value(found, "saas_server_max_instances", server="paris") == 5
    assert value(found, "saas_server_disk_free_bytes", server="eu1") == 50 * 1024**3
    assert value(found, "saas_server_db_connections", server="eu1") == 12
    assert ("saas_server_disk_free_bytes", (("server", "paris"),)) not in found
    assert value(found, "saas_instance_state", server="eu1", instance="acme", state="running") == 1
    assert value(found, "saas_instance_state", server="eu1", instance="beta", state="failed") == 1
    assert value(found, "saas_instance_state", server="eu1", instance="beta", state="running") == 0
    assert value(found, "saas_instance_db_bytes", server="eu1", instance="acme") == 40 * 1024**2
    assert value(found, "saas_instance_filestore_bytes", server="eu1", instance="acme") == (
        7 * 1024**2
    )
    assert value(found, "saas_instance_users", server="eu1", instance="acme") == 4
    assert value(
        found, "saas_instance_last_backup_timestamp_seconds", server="eu1", instance="acme"
    ) == (BACKUP.replace(tzinfo=datetime.timezone.utc).timestamp())
    assert ("saas_instance_users", (("instance", "beta"), ("server", "eu1"))) not in found
    assert value(found, "saas_operations", kind="provision", state="done") == 5
    assert value(found, "saas_alerts_open", kind="server_down") == 1
    assert value(found, "saas_alerts_open", kind="disk") == 0
    assert b"pg-secret-never-shown" not in exposition
    assert b"postgres_password" not in exposition


def test_render_accepts_objects_and_escapes_labels():
    class Row:
        code = 'we"ird\\code\n'
        up = None  # never checked: no saas_server_up sample
        health_status = False

    found = samples(metrics.render(servers=[Row()]))
    assert value(found, "saas_server_health_status", server=Row.code, status="unknown") == 1
    assert not any(name == "saas_server_up" for name, _labels in found)


@pytest.mark.parametrize("exposition", [render(), metrics.render()], ids=["fleet", "empty"])
def test_render_passes_promtool_check_metrics(exposition):
    if sandbox_prometheus.missing_tools():
        pytest.skip(sandbox_prometheus.missing_tools())
    ok, output = sandbox_prometheus.check_metrics(exposition)
    assert ok, output


# --- the token check -------------------------------------------------------------------

TOKEN = "t0ken-" + "x" * 40


@pytest.mark.parametrize(
    ("configured", "header", "query", "status"),
    [
        (TOKEN, f"Bearer {TOKEN}", "", 200),
        (TOKEN, f"bearer  {TOKEN} ", "", 200),
        (TOKEN, None, "", 401),
        (TOKEN, "", "", 401),
        (TOKEN, f"Bearer {TOKEN}x", "", 401),
        (TOKEN, f"Bearer {TOKEN[:-1]}", "", 401),
        (TOKEN, "Bearer short", "", 401),
        (TOKEN, "Bearer ", "", 401),
        (TOKEN, "Basic dXNlcjpwYXNz", "", 401),
        (TOKEN, f"Basic {TOKEN}", "", 401),
        (TOKEN, TOKEN, "", 401),
        (TOKEN, f"Bearer {TOKEN}", f"token={TOKEN}", 401),
        (TOKEN, None, f"access_token={TOKEN}", 401),
        (TOKEN, f"Bearer {TOKEN}", f"x={TOKEN}", 401),
        (TOKEN, f"Bearer {TOKEN}", "token=", 401),
        (TOKEN, f"Bearer {TOKEN}", "name=acme", 200),
        (TOKEN, "Bearer " + "é" * 10, "", 401),
        (TOKEN, "Bearer " + "x" * 10000, "", 401),
        ("", f"Bearer {TOKEN}", "", 404),
        (None, None, "", 404),
        ("  ", "Bearer   ", "", 404),
    ],
)
def test_check_bearer(configured, header, query, status):
    result = metrics.check_bearer(configured, header, query)
    assert result.status == status
    assert TOKEN not in result.reason
    assert TOKEN[:20] not in result.reason


# --- a real HTTP endpoint and a real Prometheus ------------------------------------------


class MetricsEndpoint:
    """``remote.metrics`` behind ``check_bearer`` on 127.0.0.1, as the Odoo controller does."""

    def __init__(self, token):
        self.token = token
        self.statuses = []
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                path, _sep, query = self.path.partition("?")
                if path != PATH:
                    return self._answer(404, b"")
                auth = metrics.check_bearer(
                    endpoint.token, self.headers.get("Authorization"), query
                )
                if not auth.ok:
                    headers = {"WWW-Authenticate": metrics.WWW_AUTHENTICATE}
                    return self._answer(auth.status, b"", headers)
                return self._answer(200, render(), {"Content-Type": metrics.CONTENT_TYPE})

            def _answer(self, status, body, headers=None):
                endpoint.statuses.append(status)
                self.send_response(status)
                for key, item in (headers or {}).items():
                    self.send_header(key, item)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass  # nothing logged (the requests carry a token)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def address(self):
        return f"127.0.0.1:{self.server.server_address[1]}"

    def get(self, path=PATH, headers=None):
        request = urllib.request.Request(f"http://{self.address}{path}", headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
                return answer.status, answer.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture(scope="module")
def endpoint():
    server = MetricsEndpoint(secrets.token_urlsafe(32))
    yield server
    server.stop()


def test_endpoint_statuses(endpoint):
    token = endpoint.token
    good = {"Authorization": f"Bearer {token}"}
    status, body = endpoint.get(headers=good)
    assert status == 200
    assert b"saas_server_up" in body
    assert endpoint.get()[0] == 401
    assert endpoint.get(headers={"Authorization": f"Bearer {token}A"})[0] == 401
    assert endpoint.get(headers={"Authorization": f"Bearer {token[:-1]}"})[0] == 401
    assert endpoint.get(headers={"Authorization": "Basic YWRtaW46YWRtaW4="})[0] == 401
    assert endpoint.get(f"{PATH}?token={token}")[0] == 401
    assert endpoint.get(f"{PATH}?token={token}", headers=good)[0] == 401
    status, body = endpoint.get(headers={"Authorization": "Bearer wrong"})
    assert body == b""  # nothing else said
    off = MetricsEndpoint("")
    try:
        assert off.get(headers=good)[0] == 404
    finally:
        off.stop()


@pytest.fixture(scope="module")
def prometheus(endpoint):
    missing = sandbox_prometheus.missing_tools()
    if missing:
        pytest.skip(missing)
    jobs = [
        sandbox_prometheus.ScrapeJob(
            "saas", [endpoint.address], metrics_path=PATH, token=endpoint.token
        ),
        sandbox_prometheus.ScrapeJob(
            "saas_wrong_token", [endpoint.address], metrics_path=PATH, token="not-the-token"
        ),
    ]
    with sandbox_prometheus.Prometheus(jobs) as server:
        yield server


def single_value(result):
    return float(result[0]["value"][1]) if len(result) == 1 else None


def test_real_prometheus_scrapes_with_the_token(prometheus, endpoint):
    # Scraped with the token: up, and the served values come back over PromQL.
    prometheus.wait_for('up{job="saas"} == 1', bool, timeout=60)
    result = prometheus.wait_for('saas_server_instances{server="eu1"}', bool, timeout=30)
    assert single_value(result) == 3
    result = prometheus.query('saas_server_health_status{server="paris",status="critical"}')
    assert single_value(result) == 1
    result = prometheus.query('sum(saas_instance_state{state="running"})')
    assert single_value(result) == 1
    result = prometheus.query('saas_instance_db_bytes{instance="acme",server="eu1"}')
    assert single_value(result) == 40 * 1024**2
    result = prometheus.query('saas_alerts_open{kind="server_down"}')
    assert single_value(result) == 1
    result = prometheus.query(
        "saas_server_instances / saas_server_max_instances * 100 > 20"
    )  # fmt: skip
    assert [item["metric"]["server"] for item in result] == ["eu1"]
    # The job with another token is refused (401): down, and no series of its own.
    result = prometheus.wait_for('up{job="saas_wrong_token"}', bool, timeout=30)
    assert single_value(result) == 0
    assert prometheus.query('saas_server_up{job="saas_wrong_token"}') == []
    assert 401 in endpoint.statuses
    # What Prometheus scraped passes promtool.
    status, body = endpoint.get(headers={"Authorization": f"Bearer {endpoint.token}"})
    assert status == 200
    ok, output = sandbox_prometheus.check_metrics(body)
    assert ok, output
    # The instance label is the database name (honor_labels), the token in no label.
    result = prometheus.query('saas_instance_users{server="eu1"}')
    assert [item["metric"]["instance"] for item in result] == ["acme"]
    labels = prometheus.query('{job="saas"}')
    assert endpoint.token not in repr(labels)
