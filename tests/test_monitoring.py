"""Monitoring (SPEC §10, §11): load stored by the sweep, alerts with hysteresis and
their notifications, and /saas_manager/metrics scraped by a real Prometheus."""

import datetime
import re
from unittest.mock import patch

from freezegun import freeze_time
from prometheus_client.utils import floatToGoString

from odoo.tests import HttpCase, new_test_user, tagged
from odoo.tools import config, mute_logger

from ..controllers.metrics import TOKEN_PARAM, exposition
from ..models.saas_alert import ALERT_KINDS
from ..remote import alerts, health, load, sweep
from ..sandbox import prometheus as sandbox_prometheus
from .common import SaasCase

SERVER_LOGGER = "odoo.addons.saas_manager.models.saas_server"
GIB = 1024**3


def probe(online=True, ms=20, checked=True):
    return health.ProbeResult(
        url="http://x",
        online=online,
        version="18.0" if online else None,
        response_time_ms=ms,
        error=None if online else "connection refused",
        checked=checked,
    )


def server_load(key, free_percent=50.0, replicas=(), databases=()):
    total = 100 * GIB
    free = int(total * free_percent / 100)
    return load.ServerLoad(
        key=key,
        disk=load.DiskUsage("/var/lib/odoo", total, total - free, free),
        postgres=load.PostgresLoad(
            connections=7,
            max_connections=100,
            is_primary=True,
            server_version_num=150000,
            replicas=tuple(replicas),
        ),
        instances=tuple(
            load.InstanceLoad(
                database=db,
                db_size_bytes=40 * 1024 * 1024,
                filestore_bytes=3 * 1024 * 1024,
                user_count=4,
                last_login=datetime.datetime(2025, 1, 2, 3, 4, 5),
            )
            for db in databases
        ),
    )


class MonitoringCase(SaasCase):
    def sweep(self, probes, loads=None):
        """One cron sweep with the network answers given ({server: ProbeResult})."""
        by_id = {server.id: result for server, result in probes.items()}
        loads_by_id = {server.id: result for server, result in (loads or {}).items()}

        def fake_run(probe_targets, load_targets=(), **_kw):
            return sweep.SweepResult(
                health={t.key: by_id.get(t.key, probe(checked=False)) for t in probe_targets},
                load={
                    t.key: loads_by_id.get(t.key, load.ServerLoad(key=t.key, collected=False))
                    for t in load_targets
                },
                health_s=0.0,
                load_s=0.0,
                elapsed_s=0.0,
                health_workers=1,
                load_workers=1,
            )

        with patch.object(sweep, "run", fake_run), mute_logger(SERVER_LOGGER):
            self.Server.cron_check_all_servers_health()


@tagged("post_install", "-at_install")
class TestMonitoringLoad(MonitoringCase):
    def test_load_stored_and_shown_as_warning_when_disk_full(self):
        server = self.make_server(state="active", max_instances=10)
        instance = self.make_instances(server, 1, state="running")
        self.sweep(
            {server: probe()},
            {server: server_load(server.id, 5.0, databases=[instance.database_name])},
        )
        self.assertTrue(server.disk_measured)
        self.assertAlmostEqual(server.disk_total_gb, 100.0, places=2)
        self.assertAlmostEqual(server.disk_free_percent, 5.0, places=1)
        self.assertEqual((server.db_connections, server.db_max_connections), (7, 100))
        self.assertEqual(server.health_status, "warning", "95 % of the disk used")
        self.assertAlmostEqual(instance.db_size_mb, 40.0)
        self.assertAlmostEqual(instance.filestore_size_mb, 3.0)
        self.assertEqual(instance.user_count, 4)
        self.assertEqual(instance.last_login_date, datetime.datetime(2025, 1, 2, 3, 4, 5))
        # Plenty of disk again: healthy.
        self.sweep({server: probe()}, {server: server_load(server.id, 50.0)})
        self.assertEqual(server.health_status, "healthy")

    def test_unknown_load_is_not_zero(self):
        server = self.make_server(state="active")
        self.sweep({server: probe()}, {server: server_load(server.id, 50.0)})
        failed = load.ServerLoad(
            key=server.id, disk_error="ssh: connection refused", postgres_error="pg: timeout"
        )
        self.sweep({server: probe()}, {server: failed})
        self.assertFalse(server.disk_measured)
        self.assertFalse(server.db_measured)
        self.assertEqual(server.disk_error, "ssh: connection refused")
        self.assertEqual(server.health_status, "healthy", "its health is still recorded")

    def test_unchecked_probe_is_unknown_not_offline(self):
        server = self.make_server(state="active", health_status="healthy")
        self.sweep({server: probe(online=False, checked=False)})
        self.assertEqual(server.state, "active")
        self.assertEqual(server.health_status, "unknown")
        self.assertEqual(server.health_check_ids[:1].health_status, "unknown")
        self.assertFalse(server.alert_ids, "an unchecked server opens no alert")

    def test_get_available_server_skips_a_full_disk(self):
        full = self.make_server(state="active", max_instances=100)
        roomy = self.make_server(state="active", max_instances=10)
        unknown = self.make_server(state="active", max_instances=10)
        self.make_instances(roomy, 1)
        self.make_instances(unknown, 2, state="running")
        self.sweep(
            {full: probe(), roomy: probe()},
            {full: server_load(full.id, 9.0), roomy: server_load(roomy.id, 10.0)},
        )
        self.env.flush_all()
        with self.assertQueryCount(1):
            chosen = self.Server.get_available_server(10)
        self.assertEqual(chosen, roomy, "the emptier server has 9 % disk free: skipped")
        roomy.sudo().write({"disk_free_percent": 5.0})
        self.assertEqual(self.Server.get_available_server(10), unknown, "unknown disk counts")

    def test_replicas_and_replica_lag_alert(self):
        server = self.make_server(state="active")
        lagging = load.Replica("standby1", "127.0.0.1", "streaming", "async", 500 * 1024**2, 9.0)
        for _n in range(2):
            self.sweep({server: probe()}, {server: server_load(server.id, replicas=[lagging])})
        self.assertEqual(server.db_replica_count, 1)
        self.assertAlmostEqual(server.db_replica_max_lag_mb, 500.0)
        alert = server.alert_ids.filtered(lambda a: a.kind == "replica_lag")
        self.assertEqual(alert.state, "open")
        caught_up = load.Replica("standby1", "127.0.0.1", "streaming", "async", 0, None)
        for _n in range(2):
            self.sweep({server: probe()}, {server: server_load(server.id, replicas=[caught_up])})
        self.assertEqual(alert.state, "resolved")


@tagged("post_install", "-at_install")
class TestMonitoringViews(SaasCase):
    # Odoo 18's web client (web/static/src/search/utils/dates.js, INTERVAL_OPTIONS) groups
    # a date by these only; any other interval is an error when the view opens.
    WEB_CLIENT_INTERVALS = {"year", "quarter", "month", "week", "day"}

    def test_views_group_dates_as_the_web_client_can(self):
        view_ids = (
            self.env["ir.model.data"]
            .search([("module", "=", "saas_manager"), ("model", "=", "ir.ui.view")])
            .mapped("res_id")
        )
        intervals = {}
        for view in self.env["ir.ui.view"].browse(view_ids):
            arch = view.arch_db or ""
            found = re.findall(r'interval="(\w+)"', arch)
            found += re.findall(r"group_by['\"]\s*:\s*['\"][\w.]+:(\w+)", arch)
            if found:
                intervals[view.name] = set(found)
        self.assertIn("saas.server.health.check.graph", intervals, "the latency graph is checked")
        for name, used in intervals.items():
            self.assertLessEqual(used, self.WEB_CLIENT_INTERVALS, name)


@tagged("post_install", "-at_install")
class TestMonitoringAlerts(MonitoringCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.env["saas.alert"].search([]).sudo().unlink()
        cls.managers = new_test_user(
            cls.env,
            login="saas_alert_manager_1",
            email="m1@example.com",
            groups="base.group_user,saas_manager.group_saas_manager",
        ) | new_test_user(
            cls.env,
            login="saas_alert_manager_2",
            email="m2@example.com",
            groups="base.group_user,saas_manager.group_saas_manager",
            lang="en_US",
        )
        # Every user of the group (admins included) is told: count them, not guess.
        cls.notified = cls.env.ref("saas_manager.group_saas_manager").users.filtered(
            lambda u: u.active and not u.share and u.email
        )

    def alert_mails(self):
        return (
            self.env["mail.mail"]
            .sudo()
            .search([("model", "=", "saas.alert"), ("subject", "like", "[SaaS ")])
        )

    def test_flapping_server_over_20_checks(self):
        server = self.make_server(state="active", max_instances=10)
        # B = no answer, G = answers; opens after 2 bad, resolves after 2 good.
        pattern = "BBBGBGGBBGGGBGBBBGGG"
        open_counts = []
        for check in pattern:
            self.sweep({server: probe(online=check == "G")})
            down = server.alert_ids.filtered(lambda a: a.kind == "server_down")
            open_counts.append(len(down.filtered(lambda a: a.state == "open")))
        down = server.alert_ids.filtered(lambda a: a.kind == "server_down")
        self.assertEqual(len(down), 3, "three incidents, one alert each")
        self.assertLessEqual(max(open_counts), 1, "never two open at once")
        self.assertEqual(set(down.mapped("state")), {"resolved"})
        self.assertEqual(sorted(down.mapped("count")), [2, 3, 4])
        self.assertEqual(len(self.alert_mails()), 6 * len(self.notified), "open + resolve, x3")
        self.assertEqual(
            set(self.alert_mails().mapped("recipient_ids")), set(self.notified.partner_id)
        )
        activities = (
            self.env["mail.activity"]
            .sudo()
            .search([("res_model", "=", "saas.alert"), ("res_id", "in", down.ids)])
        )
        self.assertFalse(activities, "the activities are done once resolved")
        done = self.env["mail.message"].sudo().search(
            [("model", "=", "saas.alert"), ("res_id", "in", down.ids),
             ("mail_activity_type_id", "!=", False)]
        )  # fmt: skip
        self.assertEqual(len(done), 3 * len(self.notified))

    def test_kinds_match_the_pure_layer(self):
        self.assertEqual({kind for kind, _label in ALERT_KINDS}, set(alerts.KINDS))

    def test_alternating_checks_open_nothing(self):
        server = self.make_server(state="active")
        for n in range(20):
            self.sweep({server: probe(online=n % 2 == 0)})
        self.assertFalse(server.alert_ids)
        self.assertFalse(self.alert_mails())

    def test_alert_after_failures_setting(self):
        server = self.make_server(state="active", alert_after_failures=4)
        for _n in range(3):
            self.sweep({server: probe(online=False)})
        self.assertFalse(server.alert_ids)
        self.sweep({server: probe(online=False)})
        self.assertEqual(server.alert_ids.kind, "server_down")
        self.assertEqual(server.alert_ids.state, "open")
        self.assertEqual(len(self.alert_mails()), len(self.notified))
        managers = self.env.ref("saas_manager.group_saas_manager").users
        managers = managers.filtered(lambda u: u.active and not u.share)
        self.assertEqual(len(server.alert_ids.activity_ids), len(managers))

    def test_operation_failed_alert(self):
        server = self.make_server(state="active")
        instance = self.make_instances(server, 1)
        Operation = self.env["saas.operation"].sudo()
        operation = Operation.create(
            {"kind": "provision", "instance_id": instance.id, "server_id": server.id}
        )
        operation.write({"state": "failed", "error": "Traceback...\nclone refused"})
        Alert = self.env["saas.alert"]
        alert = Alert._on_operation_failed(operation)
        self.assertEqual((alert.kind, alert.state, alert.count), ("operation_failed", "open", 1))
        self.assertIn("clone refused", alert.message)
        self.assertEqual(Alert._on_operation_failed(operation), alert, "one alert per incident")
        self.assertEqual(alert.count, 2)
        self.assertEqual(len(self.alert_mails()), len(self.notified))
        Alert._on_operation_done(operation)
        self.assertEqual(alert.state, "resolved")
        self.assertEqual(len(self.alert_mails()), 2 * len(self.notified))

    def test_backup_stale_opened_by_the_health_cron_resolved_by_a_fresh_backup(self):
        Storage = self.env["saas.backup.storage"].sudo()
        Storage.search([("is_default", "=", True)]).write({"is_default": False})
        storage = Storage.create(
            {"name": "Stale test", "kind": "local", "path": "/nonexistent", "is_default": True}
        )
        plan = self.env["saas.plan"].create({"name": "Daily"})
        server = self.make_server(state="active")
        backed_up, no_plan, draft = self.make_instances(server, 3, state="running")
        (backed_up | draft).plan_id = plan
        draft.state = "draft"
        created = backed_up.create_date
        hours = datetime.timedelta(hours=1)
        Alert = self.env["saas.alert"]

        def hourly(at):
            with freeze_time(at):
                self.sweep({server: probe()})
            return Alert.search(
                [("kind", "=", "backup_stale"), ("instance_id", "in", (backed_up | no_plan
                 | draft).ids)]
            )  # fmt: skip

        def mails(alerts):
            return self.alert_mails().filtered(lambda mail: mail.res_id in alerts.ids)

        def land_backup(at):
            backup = self.env["saas.backup"].sudo().create(
                {"instance_id": backed_up.id, "server_id": server.id, "storage_id": storage.id,
                 "kind": "scheduled", "state": "done", "started_date": at - hours / 4,
                 "finished_date": at}
            )  # fmt: skip
            return self.env["saas.operation"].sudo().create(
                {"kind": "backup", "instance_id": backed_up.id, "server_id": server.id,
                 "backup_id": backup.id, "state": "done"}
            )  # fmt: skip

        self.assertFalse(hourly(created + 25 * hours), "a day and its spread: not stale yet")
        stale = hourly(created + 27 * hours)
        self.assertEqual(len(stale), 1, "only the running instance of a plan with backups")
        self.assertEqual(
            (stale.instance_id, stale.server_id, stale.state, stale.count),
            (backed_up, server, "open", 1),
        )
        self.assertIn("No successful backup since", stale.message)
        self.assertEqual(len(mails(stale)), len(self.notified))
        managers = self.env.ref("saas_manager.group_saas_manager").users
        managers = managers.filtered(lambda u: u.active and not u.share)
        self.assertEqual(len(stale.activity_ids), len(managers))
        self.assertEqual(hourly(created + 28 * hours), stale, "one alert per incident")
        self.assertEqual((stale.count, len(mails(stale))), (2, len(self.notified)))
        # A backup lands: the engine's done hook resolves it at once.
        Alert._on_operation_done(land_backup(created + 28.5 * hours))
        self.assertEqual(stale.state, "resolved")
        self.assertEqual(len(mails(stale)), 2 * len(self.notified))
        self.assertFalse(stale.activity_ids)
        self.assertEqual(hourly(created + 29 * hours), stale, "fresh: nothing new")
        # No backup for 26 h after that one: a second incident, the age in its message.
        second = hourly(created + (28.5 + 27) * hours) - stale
        self.assertEqual((len(second), second.state), (1, "open"))
        self.assertIn("27 hours ago", second.message)
        # A threshold of 48 h (system parameter): fresh enough, resolved by the check.
        self.env["ir.config_parameter"].sudo().set_param("saas_manager.backup_stale_hours", "48")
        hourly(created + (28.5 + 28) * hours)
        self.assertEqual(second.state, "resolved")
        self.env["ir.config_parameter"].sudo().set_param("saas_manager.backup_stale_hours", "")
        # A third incident, then the instance leaves its plan: resolved too.
        third = hourly(created + (28.5 + 29) * hours) - stale - second
        self.assertEqual(third.state, "open")
        backed_up.plan_id = False
        hourly(created + (28.5 + 30) * hours)
        self.assertEqual(third.state, "resolved")
        alerts_made = stale | second | third
        self.assertEqual(len(mails(alerts_made)), 6 * len(self.notified), "open + resolve, x3")
        self.assertFalse(alerts_made.activity_ids)

    def test_manager_reads_alerts_user_cannot_write(self):
        server = self.make_server(state="active")
        for _n in range(2):
            self.sweep({server: probe(online=False)})
        alert = server.alert_ids
        self.assertEqual(alert.with_user(self.managers[0]).read(["kind"])[0]["kind"], "server_down")
        self.assertEqual(self.managers[0].with_user(self.managers[0]).env["saas.alert"].search_count(
            [("state", "=", "open")]), 1)  # fmt: skip


@tagged("post_install", "-at_install")
class TestMonitoringMetrics(HttpCase, MonitoringCase):
    TOKEN = "s3cr3t-metrics-token-for-the-tests"

    def setUp(self):
        super().setUp()
        self.env["ir.config_parameter"].sudo().set_param(TOKEN_PARAM, self.TOKEN)
        # The route is served once Odoo picks a database; the suite's server serves
        # them all (dbfilter .*), so pick this one as a manager's dbfilter would.
        patcher = patch.dict(config.options, {"dbfilter": f"^{self.env.cr.dbname}$"})
        patcher.start()
        self.addCleanup(patcher.stop)

    def make_fleet(self, count):
        servers = self.Server.with_context(tracking_disable=True).create(
            [
                {
                    "name": f"Fleet {count} {n}",
                    "code": f"fleet-{count}-{n}",
                    "server_url": f"http://fleet-{count}-{n}.example.com",
                    "state": "active",
                    "health_status": "healthy",
                    "disk_measured": True,
                    "disk_free_gb": 12.5,
                    "response_time_ms": 30,
                }
                for n in range(count)
            ]
        )
        self.make_instances(servers[0], 2, state="running")
        return servers

    def scrape_queries(self):
        self.env.flush_all()
        before = self.cr.sql_log_count
        body = exposition(self.cr)
        return self.cr.sql_log_count - before, body

    def land_backups(self, instances, finished):
        """A done backup of each instance, ended at ``finished``; and an older one."""
        storage = (
            self.env["saas.backup.storage"]
            .sudo()
            .create({"name": "Metrics test", "kind": "local", "path": "/nonexistent"})
        )
        self.env["saas.backup"].sudo().create(
            [
                {"instance_id": instance.id, "storage_id": storage.id, "state": state,
                 "started_date": when, "finished_date": when}
                for instance in instances
                for state, when in (("done", finished - datetime.timedelta(days=1)),
                                    ("done", finished), ("failed", finished))
            ]
        )  # fmt: skip

    def test_constant_queries_whatever_the_fleet(self):
        fleet = self.make_fleet(5)
        finished = datetime.datetime(2025, 3, 1, 2, 10, 0)
        self.land_backups(fleet[0].instance_ids, finished)
        queries_5, body_5 = self.scrape_queries()
        fleet = self.make_fleet(495)
        self.land_backups(fleet[0].instance_ids, finished)
        queries_500, body_500 = self.scrape_queries()
        self.assertEqual(queries_5, 5)
        self.assertEqual(queries_500, 5)
        self.assertEqual(body_5.count(b"saas_server_max_instances{"), 5)
        self.assertEqual(body_500.count(b"saas_server_max_instances{"), 500)
        stamp = finished.replace(tzinfo=datetime.timezone.utc).timestamp()
        line = (
            f'saas_instance_last_backup_timestamp_seconds{{instance="'
            f'{fleet[0].instance_ids[0].database_name}",server="{fleet[0].code}"}} '
            f"{floatToGoString(stamp)}"
        )
        self.assertIn(line.encode(), body_500, "the newest done backup, per instance")
        self.assertEqual(body_500.count(b"saas_instance_last_backup_timestamp_seconds{"), 4)

    def get(self, headers=None, query=""):
        return self.url_open(f"/saas_manager/metrics{query}", headers=headers or {})

    def test_refused_requests(self):
        with mute_logger("odoo.addons.saas_manager.controllers.metrics"):
            for headers, query in (
                ({}, ""),
                ({"Authorization": "Bearer wrong"}, ""),
                ({"Authorization": f"Bearer {self.TOKEN}x"}, ""),
                ({"Authorization": f"Basic {self.TOKEN}"}, ""),
                ({"Authorization": f"Bearer {self.TOKEN}"}, f"?token={self.TOKEN}"),
            ):
                with self.subTest(headers=headers, query=query):
                    answer = self.get(headers, query)
                    self.assertEqual(answer.status_code, 401)
                    self.assertEqual(
                        answer.headers["WWW-Authenticate"], 'Bearer realm="saas_manager"'
                    )
                    self.assertNotIn(self.TOKEN, answer.text)
        self.env["ir.config_parameter"].sudo().set_param(TOKEN_PARAM, "")
        self.assertEqual(self.get({"Authorization": f"Bearer {self.TOKEN}"}).status_code, 404)

    def test_real_prometheus_scrapes_the_test_odoo(self):
        server = self.make_server(state="active", code="eu1")
        instances = self.make_instances(server, 3, state="running")
        for _n in range(2):
            self.sweep({server: probe(online=False)})
        server.sudo().write({"disk_measured": True, "disk_free_gb": 2.0})
        instances[0].sudo().write({"db_size_mb": 40.0, "activity_measured": True, "user_count": 4})
        backed_up = datetime.datetime(2025, 3, 1, 2, 10, 7)
        self.land_backups(instances[:1], backed_up)
        self.env.flush_all()
        answer = self.get({"Authorization": f"Bearer {self.TOKEN}"})
        self.assertEqual(answer.status_code, 200)
        self.assertTrue(answer.headers["Content-Type"].startswith("text/plain; version=0.0.4"))
        self.assertNotIn(self.TOKEN, answer.text)
        if sandbox_prometheus.missing_tools():
            self.skipTest(sandbox_prometheus.missing_tools())
        ok, output = sandbox_prometheus.check_metrics(answer.content)
        self.assertTrue(ok, output)
        target = f"127.0.0.1:{config['http_port']}"
        jobs = [
            sandbox_prometheus.ScrapeJob(
                "saas", [target], metrics_path="/saas_manager/metrics", token=self.TOKEN
            ),
            sandbox_prometheus.ScrapeJob(
                "saas_wrong", [target], metrics_path="/saas_manager/metrics", token="nope"
            ),
        ]
        with mute_logger("odoo.addons.saas_manager.controllers.metrics"), \
                sandbox_prometheus.Prometheus(jobs) as prom:  # fmt: skip
            prom.wait_for('up{job="saas"} == 1', bool, timeout=60)
            result = prom.wait_for('saas_server_instances{server="eu1"}', bool, timeout=30)
            self.assertEqual(result[0]["value"][1], "3")
            result = prom.query('saas_server_up{server="eu1"}')
            self.assertEqual(result[0]["value"][1], "0")
            result = prom.query('saas_server_disk_free_bytes{server="eu1"}')
            self.assertEqual(float(result[0]["value"][1]), 2.0 * GIB)
            db = instances[0].database_name
            result = prom.query(f'saas_instance_db_bytes{{server="eu1",instance="{db}"}}')
            self.assertEqual(float(result[0]["value"][1]), 40.0 * 1024**2)
            result = prom.query(
                f'saas_instance_last_backup_timestamp_seconds{{server="eu1",instance="{db}"}}'
            )
            self.assertEqual(
                float(result[0]["value"][1]),
                backed_up.replace(tzinfo=datetime.timezone.utc).timestamp(),
            )
            result = prom.query('count(saas_instance_last_backup_timestamp_seconds{server="eu1"})')
            self.assertEqual(result[0]["value"][1], "1", "no backup: absent, not 0")
            result = prom.query('sum(saas_instance_state{server="eu1",state="running"})')
            self.assertEqual(result[0]["value"][1], "3")
            result = prom.query('saas_alerts_open{kind="server_down"}')
            self.assertEqual(result[0]["value"][1], "1")
            result = prom.wait_for('up{job="saas_wrong"}', bool, timeout=30)
            self.assertEqual(result[0]["value"][1], "0", "a wrong token is refused")
            labels = prom.query('{job="saas"}')
            self.assertFalse([r for r in labels if self.TOKEN in str(r["metric"])])
