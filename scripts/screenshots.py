"""Screenshots of the running demo, taken in headless Chromium over the DevTools protocol.

Usage (scripts/screenshots runs it with the Odoo virtualenv's Python, which has
``requests`` and ``websocket-client``)::

    python scripts/screenshots.py --url http://127.0.0.1:8069 --db saas_demo --out doc/screenshots

Logs in as admin/admin (a POST to /web/session/authenticate), gives Chromium that
session cookie, opens each page, waits until its records are on screen, refuses a
page that shows an error dialog, and saves a PNG of the viewport.
"""

import argparse
import base64
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from urllib.parse import urlsplit

import requests
import websocket

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
    "--mute-audio",
    "--lang=en-US",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)
PAGE_TIMEOUT = 60.0
ERROR_SELECTOR = ".o_error_dialog, .o_dialog_error, .o_notification.border-danger"
# How to tell that each kind of view has its data on screen.
READY = {
    "list": ".o_list_view .o_data_row",
    "kanban": ".o_kanban_view .o_kanban_record:not(.o_kanban_ghost)",
    "form": ".o_form_view .o_form_sheet .oe_title .o_field_widget",
    "graph": ".o_graph_renderer canvas",
    "pivot": ".o_pivot table tbody tr",
    # A wizard opened by a button of the page: its form in a dialog.
    "dialog": ".modal .o_form_view .o_field_widget",
}
# Charts animate when drawn: the time to let them settle before the picture (s).
SETTLE = {"graph": 1.5}


class PageError(Exception):
    """A page did not show its data, or showed an error."""


def log(message):
    print(f"[screenshots] {message}", file=sys.stderr, flush=True)


class Odoo:
    """A logged-in web session on the demo, for looking records up."""

    def __init__(self, url, db, login, password):
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self._ids = itertools.count(1)
        uid = self._post(
            "/web/session/authenticate", {"db": db, "login": login, "password": password}
        )["uid"]
        if not uid:
            raise SystemExit(f"cannot log in to {db} as {login}")
        self.session_id = self.session.cookies.get("session_id")

    def _post(self, path, params):
        response = self.session.post(
            self.url + path,
            json={"jsonrpc": "2.0", "method": "call", "params": params, "id": next(self._ids)},
            timeout=60,
        )
        response.raise_for_status()
        body = response.json()
        if body.get("error"):
            message = body["error"].get("data", {}).get("message") or body["error"]
            raise SystemExit(f"{path}: {message}")
        return body["result"]

    def call(self, model, method, *args, **kwargs):
        return self._post(
            "/web/dataset/call_kw",
            {"model": model, "method": method, "args": list(args), "kwargs": kwargs},
        )

    def xmlid(self, xmlid):
        module, name = xmlid.split(".")
        rows = self.call(
            "ir.model.data",
            "search_read",
            [("module", "=", module), ("name", "=", name)],
            fields=["res_id"],
        )
        return rows[0]["res_id"] if rows else None


class Chromium:
    """One headless Chromium with a fresh profile, driven through one page target."""

    def __init__(self, binary, width, height):
        self.profile = tempfile.mkdtemp(prefix="saas_screenshots.")
        self.process = subprocess.Popen(
            [
                binary,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={self.profile}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._ids = itertools.count(1)
        self.ws = None
        try:
            port = self._devtools_port()
            page = self._page_target(port)
            self.ws = websocket.create_connection(
                page["webSocketDebuggerUrl"], timeout=PAGE_TIMEOUT, suppress_origin=True
            )
        except BaseException:
            self.close()
            raise
        self.send("Page.enable")
        self.send("Network.enable")
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    def _devtools_port(self):
        path = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"Chromium exited at start (code {self.process.returncode})")
            try:
                with open(path) as port_file:
                    first = port_file.readline().strip()
                if first:
                    return int(first)
            except OSError:
                pass
            time.sleep(0.1)
        raise SystemExit("Chromium did not open its DevTools port within 30 s")

    @staticmethod
    def _page_target(port):
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            targets = requests.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
            pages = [target for target in targets if target.get("type") == "page"]
            if pages:
                return pages[0]
            time.sleep(0.2)
        raise SystemExit("Chromium has no page target")

    def send(self, method, **params):
        message_id = next(self._ids)
        self.ws.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == message_id:
                if "error" in message:
                    raise SystemExit(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def close(self):
        if self.ws is not None:
            self.ws.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


def error_details(browser):
    """The first lines of the error dialog's technical details."""
    browser.evaluate(
        """[...document.querySelectorAll('.modal button')]
            .filter(b => /technical/i.test(b.textContent)).forEach(b => b.click())"""
    )
    time.sleep(0.5)
    text = browser.evaluate(
        f"document.querySelector({json.dumps(ERROR_SELECTOR)})?.closest('.modal')?.innerText || ''"
    )
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    causes = [line for line in lines if line.startswith(("Caused by", "Error", "RPC_ERROR"))]
    return " | ".join(causes[:3] or lines[:6])


def wait_ready(browser, ready_selector, url):
    """Wait until the view shows data and Odoo is idle; fail on an error dialog."""
    check = f"""(() => {{
        if (document.querySelector({json.dumps(ERROR_SELECTOR)})) return "error";
        if (!document.querySelector({json.dumps(ready_selector)})) return "loading";
        if (document.querySelector(".o_loading_indicator, .o_blockUI")) return "busy";
        if (document.fonts && document.fonts.status !== "loaded") return "fonts";
        return "ready";
    }})()"""
    deadline = time.monotonic() + PAGE_TIMEOUT
    state = None
    steady = 0
    while time.monotonic() < deadline:
        state = browser.evaluate(check)
        if state == "error":
            raise PageError(f"{url} shows an error dialog: {error_details(browser)}")
        # Ready on a few polls in a row: the page has settled (badges, progress bars).
        steady = steady + 1 if state == "ready" else 0
        if steady >= 4:
            return
        time.sleep(0.25)
    raise PageError(f"{url} was not ready within {PAGE_TIMEOUT:.0f} s (last state: {state})")


def shot_list(odoo, url):
    """``(file name, URL, view kind[, button to click])`` of each screenshot, from the
    demo's records; with a button, the picture is of the dialog it opens."""
    local = odoo.xmlid("saas_manager.saas_server_demo_local")
    if not local:
        servers = odoo.call("saas.server", "search", [], limit=1)
        local = servers[0] if servers else None
    if not local:
        raise SystemExit("no saas.server in the database: is the demo data installed?")
    # The instance to show: a running one on the local server, else any.
    instances = odoo.call(
        "saas.instance", "search", [("server_id", "=", local), ("state", "=", "running")], limit=1
    ) or odoo.call("saas.instance", "search", [], limit=1)
    if not instances:
        raise SystemExit("no saas.instance yet: provision one (see README) and run this again")

    action = f"{url}/odoo/action-saas_manager"
    servers = f"{action}.saas_server_action"
    shots = [
        ("server_list.png", servers, "list"),
        ("server_kanban.png", f"{servers}?view_type=kanban", "kanban"),
        ("server_form.png", f"{servers}/{local}", "form"),
        ("instance_form.png", f"{action}.saas_instance_action/{instances[0]}", "form"),
        ("operation_list.png", f"{action}.saas_operation_action", "list"),
        # Monitoring: the health history as a latency graph, the fleet overview, an alert.
        ("health_latency_graph.png", f"{action}.saas_server_health_check_action", "graph"),
        ("fleet_overview_graph.png", f"{action}.saas_server_fleet_action", "graph"),
        ("fleet_overview_pivot.png", f"{action}.saas_server_fleet_action?view_type=pivot", "pivot"),
    ]
    movable = odoo.call(
        "saas.instance", "search", [("state", "in", ("running", "suspended"))], limit=1
    )
    if movable:
        # The Move or Copy wizard, opened by its button on the instance form.
        shots.append(
            (
                "instance_transfer_wizard.png",
                f"{action}.saas_instance_action/{movable[0]}",
                "form",
                "button[name=action_transfer]",
            )
        )
    else:
        log("no running instance: instance_transfer_wizard.png not taken (provision one)")
    alerts = odoo.call("saas.alert", "search", [("state", "=", "open")], limit=1)
    if alerts:
        shots.append(("alert_form.png", f"{action}.saas_alert_action/{alerts[0]}", "form"))
    else:
        log("no open alert: alert_form.png not taken (run the health cron with Paris down)")
    return shots


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8069")
    parser.add_argument("--db", default="saas_demo")
    parser.add_argument("--login", default="admin")
    parser.add_argument("--password", default="admin")
    parser.add_argument("--out", default="doc/screenshots")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--width", type=int, default=1440)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument(
        "--only", action="append", metavar="NAME", help="only this screenshot (e.g. server_form)"
    )
    args = parser.parse_args()

    odoo = Odoo(args.url, args.db, args.login, args.password)
    shots = shot_list(odoo, args.url)

    if args.only:
        wanted = {name.removesuffix(".png") for name in args.only}
        shots = [shot for shot in shots if shot[0].removesuffix(".png") in wanted]
    os.makedirs(args.out, exist_ok=True)
    failures = []
    browser = Chromium(args.chromium, args.width, args.height)
    try:
        host = urlsplit(args.url).hostname
        browser.send(
            "Network.setCookie",
            name="session_id",
            value=odoo.session_id,
            domain=host,
            path="/",
            httpOnly=True,
        )
        for filename, url, kind, *button in shots:
            browser.send("Page.navigate", url=url)
            try:
                wait_ready(browser, READY[kind], url)
                if button:
                    clicked = browser.evaluate(
                        f"(b => b ? (b.click(), true) : false)"
                        f"(document.querySelector({json.dumps(button[0])}))"
                    )
                    if not clicked:
                        raise PageError(f"{url} has no {button[0]}")
                    wait_ready(browser, READY["dialog"], url)
                time.sleep(SETTLE.get(kind, 0))
            except PageError as exc:
                # The previous PNG, if any, is kept rather than replaced by a broken page.
                log(f"{filename} not taken: {exc}")
                failures.append(filename)
                continue
            data = browser.send("Page.captureScreenshot", format="png")["data"]
            path = os.path.join(args.out, filename)
            with open(path, "wb") as png:
                png.write(base64.b64decode(data))
            log(f"{path} <- {url}")
    finally:
        browser.close()
    if failures:
        raise SystemExit(f"{len(failures)} screenshot(s) not taken: {', '.join(failures)}")


if __name__ == "__main__":
    main()
