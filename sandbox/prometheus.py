"""A real Prometheus (Debian's ``prometheus`` package) on loopback, for the tests.

:class:`Prometheus` writes a ``prometheus.yml`` with one scrape job per target
(``authorization: {type: Bearer, credentials_file: ...}`` when a token is given,
the token in a mode-600 file of the workdir, never in the config or a log), starts
``prometheus`` on a free port of 127.0.0.1 with its storage in the workdir, waits
until it is ready, and answers PromQL over its HTTP API (:meth:`query`,
:meth:`wait_for`). ``promtool`` (same package) checks an exposition
(:func:`check_metrics`).
"""

import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

from . import util
from .service import ProcessService, ServiceError

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
READY_TIMEOUT_S = 60


def missing_tools():
    """Why Prometheus cannot be started here, or None."""
    for tool in (PROMETHEUS, PROMTOOL):
        if not os.access(tool, os.X_OK):
            return f"{tool} is not installed (Debian package prometheus)"
    return None


def check_metrics(exposition):
    """``promtool check metrics`` of an exposition: ``(ok, its output)``."""
    if isinstance(exposition, str):
        exposition = exposition.encode()
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=exposition, capture_output=True, timeout=60,
        check=False,
    )  # fmt: skip
    output = (result.stdout + result.stderr).decode(errors="replace")
    return result.returncode == 0, output


class ScrapeJob:
    """One scrape job: ``targets`` as ``host:port``, the token (None: no header).

    ``honor_labels`` (default True) keeps the scraped ``instance`` label (SaaS
    Manager's database name) instead of Prometheus's own target label, which
    would otherwise rename it ``exported_instance``.
    """

    def __init__(self, name, targets, *, metrics_path="/metrics", token=None, honor_labels=True):
        self.name = name
        self.targets = list(targets)
        self.metrics_path = metrics_path
        self.token = token
        self.honor_labels = honor_labels


class Prometheus(ProcessService):
    """Prometheus scraping ``jobs`` every ``scrape_interval`` on 127.0.0.1."""

    name = "prometheus"
    log_name = "prometheus.log"

    def __init__(self, jobs, workdir=None, *, scrape_interval="1s"):
        super().__init__(workdir)
        self.jobs = list(jobs)
        self.scrape_interval = scrape_interval
        self.port = None

    @property
    def url(self):
        return f"http://{util.LOOPBACK}:{self.port}"

    def _config(self):
        scrape_configs = []
        for job in self.jobs:
            config = {
                "job_name": job.name,
                "metrics_path": job.metrics_path,
                "scheme": "http",
                "honor_labels": job.honor_labels,
                "static_configs": [{"targets": job.targets}],
            }
            if job.token is not None:
                token_file = self.workdir / f"{job.name}.token"
                fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as handle:
                    handle.write(job.token)
                config["authorization"] = {"type": "Bearer", "credentials_file": str(token_file)}
            scrape_configs.append(config)
        interval = self.scrape_interval
        # YAML is a superset of JSON: no YAML library needed.
        return {
            "global": {
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "evaluation_interval": interval,
            },
            "scrape_configs": scrape_configs,
        }

    def _start(self):
        if missing_tools():
            raise ServiceError(missing_tools())
        config_path = self.workdir / "prometheus.yml"
        config_path.write_text(json.dumps(self._config(), indent=2))
        check = subprocess.run(
            [PROMTOOL, "check", "config", str(config_path)], capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip
        if check.returncode:
            raise ServiceError(f"promtool check config failed:\n{check.stdout}{check.stderr}")
        for _attempt in range(3):
            self.port = util.free_port()
            self.spawn(
                [
                    PROMETHEUS,
                    f"--config.file={config_path}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address={util.LOOPBACK}:{self.port}",
                    "--storage.tsdb.retention.time=1h",
                    "--log.level=warn",
                ]
            )
            try:
                util.wait_until(self._ready, READY_TIMEOUT_S, what="Prometheus ready")
                return
            except ServiceError:
                self._stop()  # exited: most likely the port was taken meanwhile
            except TimeoutError as exc:
                raise ServiceError(f"{exc}:\n{self.log_tail()}") from None
        raise ServiceError(f"Prometheus did not start:\n{self.log_tail()}")

    def _ready(self):
        self.check_alive()
        try:
            ready = f"{self.url}/-/ready"
            with urllib.request.urlopen(ready, timeout=2) as answer:  # noqa: S310 (loopback)
                return answer.status == 200
        except OSError:
            return False

    def query(self, promql):
        """The ``data.result`` list of an instant query (``/api/v1/query``)."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 (our loopback URL)
            body = json.load(answer)
        if body.get("status") != "success":
            raise ServiceError(f"PromQL {promql!r} failed: {body}")
        return body["data"]["result"]

    def wait_for(self, promql, predicate=bool, timeout=30.0, interval=0.5):
        """Poll ``promql`` until ``predicate(result)`` holds; return the result."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(promql)
            if predicate(result):
                return result
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"PromQL {promql!r} did not give the expected result within {timeout:g} s: "
                    f"{result}"
                )
            time.sleep(interval)
