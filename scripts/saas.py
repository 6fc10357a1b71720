#!/usr/bin/env python3
"""The developer CLI of saas_manager. Standard library only: it runs on the system's
python3 and makes the virtualenvs it needs (scripts/saas bootstraps python3 itself).

    scripts/saas.py test [--no-lint] [--no-odoo] [-- PYTEST ARGS]
                                 lint, the standalone suite (urllib3 1.26 and 2.x) and the
                                 Odoo suite when an Odoo 18.0 tree is found; one SUMMARY line
    scripts/saas.py run [--port N] [--db NAME] [--system-pg] [--pg-port N] [--ssh-port N]
                        [--update] [--reset]
                                 the demo: Odoo with saas_manager and its demo data
    scripts/saas.py suite [--tags TAGS]
                                 the Odoo suite alone (default tags: $SAAS_TEST_TAGS or
                                 /saas_manager; KEEP_ODOO_SUITE=1 keeps its directory)
    scripts/saas.py bench provision [bench_provision.py options]
    scripts/saas.py bench health [bench_health_sweep.py options]
    scripts/saas.py bench operations [bench_operations.py options]
    scripts/saas.py bench backup [bench_backup.py options]
    scripts/saas.py bench transfer [bench_transfer.py options]
    scripts/saas.py i18n         regenerate i18n/saas_manager.pot and merge it into i18n/*.po
    scripts/saas.py screenshots [--port N] [--db NAME] [--out DIR] [--only NAME]...

``scripts/test`` and ``scripts/run`` (README's two commands) call the first two.
Odoo is looked for in $ODOO_SRC, then /opt/odoo-18.0. Virtualenvs live in
$SAAS_MANAGER_CACHE (default ~/.cache/saas_manager), one per requirements content.
The services (PostgreSQL, sshd, Odoo) come from the sandbox package (sandbox/).
"""

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sandbox import machine, util  # noqa: E402
from sandbox.odoo import OdooServer, find_odoo_src  # noqa: E402
from sandbox.postgres import PgCluster, SystemCluster  # noqa: E402
from sandbox.s3 import S3Server  # noqa: E402
from sandbox.service import ServiceError  # noqa: E402
from sandbox.smtp import SmtpSink  # noqa: E402
from sandbox.sshd import Sshd  # noqa: E402

SCRIPTS = ROOT / "scripts"
REQUIREMENTS = {
    "lint": SCRIPTS / "requirements-lint.txt",
    "test": SCRIPTS / "requirements-test.txt",
    "test-urllib3-2": SCRIPTS / "requirements-test-urllib3-2.txt",
    "odoo": SCRIPTS / "requirements-odoo.txt",
}
BASE_DEBS = ("openssh-server", "postgresql", "libpq-dev", "python3-venv", "prometheus")
ODOO_DEBS = ("libldap2-dev", "libsasl2-dev")
NO_ODOO_TREE = "no Odoo 18.0 tree: set ODOO_SRC or put one at /opt/odoo-18.0"
LOG_LINE = re.compile(r"^[0-9-]+ [0-9:,]+ [0-9]+ (\w+) ")


def die(message, code=2):
    util.log(f"error: {message}")
    raise SystemExit(code)


def need_debs(*packages):
    if not machine.ensure_debs(*packages):
        die("cannot install the Debian packages this command needs")


def venv(name):
    return machine.ensure_venv(name, REQUIREMENTS[name])


def odoo_tree():
    src = find_odoo_src()
    if src is None:
        util.log("no Odoo 18.0 tree found in $ODOO_SRC or /opt/odoo-18.0.")
        util.log(
            "get one, e.g.: git clone --depth 1 --branch 18.0 "
            "https://github.com/odoo/odoo /opt/odoo-18.0"
        )
        util.log("(or point ODOO_SRC at an Odoo 18.0 checkout holding odoo-bin), then run again")
        raise SystemExit(2)
    return src


def tcp_port(text):
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: '{text}'")
    return int(text)


def database_name(text):
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", text):
        raise argparse.ArgumentTypeError(f"not a database name: '{text}'")
    return text


@contextlib.contextmanager
def interruptible():
    """Ctrl-C ends the command with 130 (main() makes SIGTERM exit with 143); the
    services are then stopped by the enclosing ExitStack, and a second signal does
    not cut that short."""
    try:
        yield
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def start_or_die(stack, service, label, option):
    """Start ``service``, stopped when ``stack`` closes (saying so when this run started
    it); on failure end the command with the reason and the option that changes it."""

    def stop():
        if service.started:
            util.log(f"stopping {label}")
        service.stop()

    stack.callback(stop)
    try:
        service.start()
    except ServiceError as exc:
        die(
            f"{label} did not start: {exc}" + (f" (choose another with {option})" if option else "")
        )
    return service


# --- test ---------------------------------------------------------------------------


def run_lint():
    lint = venv("lint")
    util.log("lint: ruff check, ruff format --check, pylint-odoo")
    # At a lower CPU priority: `test` runs it beside the Odoo suite, which sets the
    # pace (lint checks no timing; the test suites do, so they are left alone).
    nice = ("nice", "-n", "10")
    checks = (
        ([*nice, str(lint / "bin" / "ruff"), "check", "."], ROOT),
        ([*nice, str(lint / "bin" / "ruff"), "format", "--check", "."], ROOT),
        (
            [*nice, str(lint / "bin" / "pylint"), f"--rcfile={ROOT / '.pylintrc'}", str(ROOT)],
            ROOT.parent,
        ),
    )
    results = [subprocess.run(argv, cwd=cwd, check=False).returncode for argv, cwd in checks]
    return "pass" if not any(results) else "FAIL"


def run_pytest(python, pytest_args, log_path=None, env=None):
    """Run the standalone suite; return (passed, "N passed" or the last line).

    Its output goes to this terminal, or to ``log_path`` when given; ``env``: more
    environment variables. Exit status 5 (every test deselected, e.g. by ``-k``)
    passes as "0 passed"."""
    argv = [str(python), "-m", "pytest", "-p", "no:cacheprovider", *pytest_args]
    lines = []
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open(log_path, "w")) if log_path else sys.stdout
        process = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {})},
        )
        for line in process.stdout:
            out.write(line)
            out.flush()
            lines.append(line)
        code = process.wait()
    if code in (0, 5):
        counts = re.findall(r"[0-9]+ passed", "".join(lines))
        return True, counts[-1] if counts else "0 passed"
    # The conftest's own verdict (e.g. a module the urllib3 2.x part leaves out).
    notes = [line for line in lines if line.startswith("conftest: ")]
    last = notes[-1] if notes else lines[-1] if lines else f"exit {code}"
    return False, last.strip().strip("=").strip()


class Job(threading.Thread):
    """A part of ``scripts/saas.py test`` run beside the others; ``result`` once joined."""

    def __init__(self, name, target):
        super().__init__(name=name, daemon=True)
        self.target_function = target
        self.result = None
        self.started_at = self.ended_at = None

    def run(self):
        self.started_at = time.monotonic()
        try:
            self.result = self.target_function()
        except Exception as exc:  # reported in the summary, not lost in the thread
            self.result = (False, f"{type(exc).__name__}: {exc}")
        finally:
            self.ended_at = time.monotonic()

    def outcome(self):
        self.join()
        return self.result or (False, "did not run")

    def took(self):
        return f"{self.ended_at - self.started_at:.0f} s" if self.ended_at else "?"


def logged_part(label, python, part, pytest_args, env=None):
    """One part of the standalone suite (conftest's SAAS_STANDALONE_PART) into a log file
    of its own, its tail shown when it fails; return (passed, summary)."""
    log_path = Path(tempfile.mkstemp(prefix=f"saas_manager_{part}.", suffix=".log")[1])
    util.log(f"standalone suite, {label} (log: {log_path})")
    env = {"SAAS_STANDALONE_PART": part, **(env or {})}
    result = run_pytest(python, pytest_args, log_path, env=env)
    if not result[0]:
        sys.stdout.write(f"--- {label}: the end of {log_path}\n" + util.tail(log_path, 200))
        if os.environ.get("CI"):
            shutil.copy(log_path, Path(tempfile.gettempdir()) / f"saas_manager_{part}_tests.log")
    log_path.unlink(missing_ok=True)
    return result


def start_beside(odoo_src, odoo_python, test_python, pytest_args):
    """Start the Odoo suite and the kill -9 tests on threads; return their two jobs."""
    jobs = [
        Job("odoo suite", lambda: odoo_suite(odoo_src, odoo_python)),
        Job(
            "kill -9 tests",
            lambda: logged_part(
                "kill -9 tests (test_operations_crash, real Odoo processes)",
                test_python,
                "crash",
                pytest_args,
                env={"SAAS_ODOO_PYTHON": str(odoo_python)},
            ),
        ),
    ]
    for job in jobs:
        job.start()
    return jobs


def lint_and_standalone(args, test_python, http_python):
    """In this thread, one after the other: lint, the standalone suite but the kill -9
    tests (urllib3 1.26, on this terminal), its modules on the HTTP stack again with
    urllib3 2.x. Return (lint result or None, [(label, passed, text)], {step: s})."""
    lint = None
    took = {}
    mark = time.monotonic()
    if args.lint:
        lint = run_lint()
        took["lint"] = time.monotonic() - mark
        mark = time.monotonic()
    util.log("standalone suite: pytest standalone_tests (urllib3 1.26; the kill -9 tests apart)")
    parts = [("", *run_pytest(test_python, args.pytest_args, env={"SAAS_STANDALONE_PART": "main"}))]
    took["standalone"] = time.monotonic() - mark
    mark = time.monotonic()
    if http_python is not None:
        label = "its modules on the HTTP stack again, with urllib3 2.x"
        parts.append(("urllib3 2.x: ", *logged_part(label, http_python, "http", args.pytest_args)))
        took["urllib3 2.x"] = time.monotonic() - mark
    return lint, parts, took


def cmd_test(args):
    """Lint, the standalone suite in its three parts and the Odoo suite, side by side.

    Wall time is the Odoo suite's (about 12 minutes alone): everything else runs
    beside it, on threads that wait on child processes.

    - the Odoo suite (when an Odoo tree is found), started first;
    - the kill -9 tests (standalone part ``crash``: real Odoo processes killed
      mid-operation, about 6 minutes, mostly waiting for a restarted Odoo's cron);
    - in this thread, one after the other: lint, the standalone suite but those
      tests (part ``main``, urllib3 1.26, on this terminal), then its tests on the
      HTTP stack again with urllib3 2.x (part ``http``, what Odoo 18 uses on Python
      3.12). ``main`` and ``http`` never overlap: their tests look for their own
      programs by name (pgrep -f) and would see each other's.

    The other standalone modules never import requests, urllib3 or boto3: running
    them a second time tested nothing new (standalone_tests/conftest.py,
    ``http_stack_chain``; ``main`` fails if one of them sends through urllib3).
    """
    odoo_src = find_odoo_src()
    debs = list(BASE_DEBS)
    with_odoo = args.odoo and odoo_src is not None
    if with_odoo:
        debs += [*ODOO_DEBS, "chromium"]
    if not machine.ensure_debs(*debs):
        die("cannot install the Debian packages this suite needs")
    results = {"lint": "skipped", "standalone": "skipped", "odoo": "skipped"}
    if not args.odoo:
        results["odoo"] = "skipped (--no-odoo)"
    elif odoo_src is None:
        results["odoo"] = f"skipped ({NO_ODOO_TREE})"
        util.log("Odoo suite skipped: no Odoo 18.0 tree found in $ODOO_SRC or /opt/odoo-18.0")
    # The virtualenvs first, here: made (or found) one at a time.
    test_python = venv("test") / "bin" / "python"
    http_python = (
        venv("test-urllib3-2") / "bin" / "python"
        if REQUIREMENTS["test-urllib3-2"].exists()
        else None
    )
    odoo_python = venv("odoo") / "bin" / "python" if with_odoo else None
    if args.lint:
        venv("lint")
    started = time.monotonic()
    jobs = start_beside(odoo_src, odoo_python, test_python, args.pytest_args) if with_odoo else []

    lint, parts, took = lint_and_standalone(args, test_python, http_python)
    results["lint"] = lint or "skipped"
    failed = results["lint"] not in ("pass", "skipped")
    odoo_job, crash_job = jobs if jobs else (None, None)
    if crash_job is not None:
        parts.insert(1, ("kill -9: ", *crash_job.outcome()))
    standalone_ok = all(ok for _label, ok, _text in parts)
    detail = "; ".join(f"{label}{text}" for label, _ok, text in parts)
    results["standalone"] = f"{'pass' if standalone_ok else 'FAIL'} ({detail})"
    failed = failed or not standalone_ok
    if odoo_job is not None:
        ok, text = odoo_job.outcome()
        results["odoo"] = f"{'pass' if ok else 'FAIL'} ({text})"
        failed = failed or not ok
    timings = [f"{name} {seconds:.0f} s" for name, seconds in took.items()]
    timings += [f"beside them: {job.name} {job.took()}" for job in jobs]
    util.log(f"test: {time.monotonic() - started:.0f} s in all ({', '.join(timings)})")
    print(
        f"SUMMARY: {'FAIL' if failed else 'PASS'} | lint: {results['lint']} | "
        f"standalone: {results['standalone']} | odoo: {results['odoo']}",
        flush=True,
    )
    return 1 if failed else 0


# --- the Odoo suite -----------------------------------------------------------------


def grep_lines(path, pattern):
    regex = re.compile(pattern)
    with open(path, encoding="utf-8", errors="replace") as handle:
        return [line for line in handle if regex.search(line)]


def error_records(path, limit=300):
    """Each ERROR or CRITICAL record with its traceback: from its log line to the next."""
    shown, show = [], False
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            match = LOG_LINE.match(line)
            if match:
                show = match.group(1) in ("ERROR", "CRITICAL")
            if show:
                shown.append(line)
    return "".join(shown[:limit])


def suite_services(work):
    """The Odoo suite's peers: its PostgreSQL and an sshd on this host (the tests reach
    it over SSH to copy filestores, like a real server); a second host where moves
    between servers go (a cluster and an sshd of its own); moto's S3 for S3 backups."""
    return (
        PgCluster(work / "pg", owner="saas_odoo"),
        Sshd(work / "ssh", ("Subsystem sftp internal-sftp",), host_key_types=("ed25519",)),
        PgCluster(work / "pg2", owner="saas_target"),
        Sshd(work / "ssh2", host_key_types=("ed25519",)),
        S3Server(work / "s3"),
    )


def suite_environment(server, sshd, target_pg, target_sshd, s3):
    """SAAS_TEST_*: what the Odoo suite's tests need to reach their peers.

    The test server itself, over its sshd; a second host (a PostgreSQL cluster, a
    data directory and an sshd of its own) where moves between servers go; moto's S3.
    """
    target_data = target_pg.workdir.parent / "data2"
    (target_data / "filestore").mkdir(parents=True, exist_ok=True)
    return {
        "SAAS_TEST_MASTER_PASSWORD": server.master_password,
        "SAAS_TEST_SSH_PORT": str(sshd.port),
        "SAAS_TEST_SSH_USER": util.current_user(),
        "SAAS_TEST_SSH_KEY_FILE": str(sshd.login_key()),
        "SAAS_TEST_SSH_HOST_KEY_FILE": str(sshd.host_key_file()),
        "SAAS_TEST_TARGET_DB_PORT": str(target_pg.port),
        "SAAS_TEST_TARGET_DB_USER": target_pg.owner,
        "SAAS_TEST_TARGET_DB_PASSWORD": target_pg.owner_password,
        "SAAS_TEST_TARGET_DATA_DIR": str(target_data),
        "SAAS_TEST_TARGET_SSH_PORT": str(target_sshd.port),
        "SAAS_TEST_TARGET_SSH_KEY_FILE": str(target_sshd.login_key()),
        "SAAS_TEST_TARGET_SSH_HOST_KEY_FILE": str(target_sshd.host_key_file()),
        "SAAS_TEST_S3_ENDPOINT": s3.endpoint_url,
        "SAAS_TEST_S3_REGION": s3.region,
        "SAAS_TEST_S3_ACCESS_KEY": s3.access_key,
        "SAAS_TEST_S3_SECRET_KEY": s3.secret_key,
    }


def odoo_suite(odoo_src, python, tags=None):
    """The Odoo suite; return (passed, one-line result).

    In a throwaway cluster and data dir: a fresh database with base and mail, then
    saas_manager installed with no warning or error in the log, then the module
    updated with --test-enable --test-tags. The test server's own JSON-RPC endpoint,
    master password and PostgreSQL are the peer the tests manage, and an sshd on
    127.0.0.1 is how they copy filestores (SAAS_TEST_* in the environment).
    """
    tags = tags or os.environ.get("SAAS_TEST_TAGS") or "/saas_manager"
    work = Path(tempfile.mkdtemp(prefix="saas_manager_odoo."))
    work.chmod(0o755)
    db = "saas_test"
    try:
        with contextlib.ExitStack() as stack:
            pg, sshd, target_pg, target_sshd, s3 = services = suite_services(work)
            for service in services:
                try:
                    stack.enter_context(service)
                except ServiceError as exc:
                    util.log(str(exc))
                    return False, f"{service.name} did not start"
            # dbfilter: the test server serves its instances too (their login and
            # reset-password pages), not only the database under test.
            server = OdooServer(work, odoo_src, python, pg, options={"dbfilter": ".*"})
            # Given to Odoo's processes, not set here: other parts of `test` run beside.
            env = suite_environment(server, sshd, target_pg, target_sshd, s3)
            server.write_config()
            once = ("-d", db, "--stop-after-init")

            util.log("Odoo suite: database with base and mail")
            if server.run(
                *once, "-i", "base,mail", "--log-level=warn", log=work / "base.log", env=env,
                check=False,
            ):  # fmt: skip
                print(util.tail(work / "base.log"), end="")
                return False, "base and mail did not install"

            util.log("Odoo suite: installing saas_manager")
            install_log = work / "install.log"
            code = server.run(
                *once, "-i", "saas_manager", "--log-level=info", log=install_log, env=env,
                check=False,
            )  # fmt: skip
            warnings = grep_lines(
                install_log, r"^[0-9-]+ [0-9:,]+ [0-9]+ (WARNING|ERROR|CRITICAL) "
            )
            if code or warnings:
                print("".join(warnings) + util.tail(install_log), end="")
                return False, f"installing saas_manager logged warnings or errors (rc {code})"

            util.log(f"Odoo suite: tests {tags}")
            tests_log = work / "tests.log"
            code = server.run(
                *once,
                "-u",
                "saas_manager",
                "--test-enable",
                "--test-tags",
                tags,
                "--log-level=test",
                f"--screenshots={work / 'screenshots'}",
                log=tests_log,
                env=env,
                check=False,
            )
            shown = grep_lines(
                tests_log, r"(ERROR|FAIL|CRITICAL|odoo.tests.result|Starting|skipped)"
            )
            print("".join([line for line in shown if line.strip()][-400:]), end="")
            # Databases the tests create log result lines of their own: read the suite's.
            results = grep_lines(tests_log, f"odoo.tests.result: .* when loading database '{db}'")
            summaries = [
                found.group(0)
                for line in results
                if (found := re.search(r"[0-9]+ failed, [0-9]+ error\(s\) of [0-9]+ tests", line))
            ]
            summary = summaries[-1] if summaries else ""
            ran = int(re.search(r"of ([0-9]+)", summary).group(1)) if summary else 0
            if code or not ran or not summary.startswith("0 failed, 0 error"):
                print(error_records(tests_log), end="")
                if os.environ.get("CI"):
                    kept = Path(tempfile.gettempdir()) / "saas_manager_odoo_tests.log"
                    shutil.copy(tests_log, kept)
                return False, f"{summary or 'no test result found'} (rc {code})"
            return True, summary
    finally:
        if os.environ.get("KEEP_ODOO_SUITE"):
            util.log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def cmd_suite(args):
    odoo_src = odoo_tree()
    need_debs(*BASE_DEBS, *ODOO_DEBS)
    ok, text = odoo_suite(odoo_src, venv("odoo") / "bin" / "python", args.tags)
    if os.environ.get("SAAS_ODOO_SUITE_RESULT"):
        Path(os.environ["SAAS_ODOO_SUITE_RESULT"]).write_text(text + "\n")
    print(f"odoo: {'pass' if ok else 'FAIL'} ({text})", flush=True)
    return 0 if ok else 1


# --- run: the demo ------------------------------------------------------------------

# Run by `odoo-bin shell` at every start: the local demo server is this Odoo; write
# where it is and how to reach it (secrets passed in the environment, never logged).
DEMO_SERVER_UPDATE = """
import os

server = env.ref("saas_manager.saas_server_demo_local", raise_if_not_found=False)
if not server:
    print("saas_run: no local demo server (deleted?): nothing written")
else:
    with open(os.environ["SAAS_RUN_SSH_KEY_FILE"]) as key_file:
        private_key = key_file.read()
    with open(os.environ["SAAS_RUN_SSH_HOST_KEY_FILE"]) as host_key_file:
        host_key = host_key_file.read().strip()
    wanted = {
        "server_url": os.environ["SAAS_RUN_URL"],
        "port": int(os.environ["SAAS_RUN_HTTP_PORT"]),
        "ip_address": "127.0.0.1",
        "db_host": "127.0.0.1",
        "db_port": int(os.environ["SAAS_RUN_DB_PORT"]),
        "db_user": os.environ["SAAS_RUN_DB_USER"],
        "db_password": os.environ["SAAS_RUN_DB_PASSWORD"],
        "master_password": os.environ["SAAS_RUN_MASTER_PASSWORD"],
        "data_dir": os.environ["SAAS_RUN_DATA_DIR"],
        "ssh_port": int(os.environ["SAAS_RUN_SSH_PORT"]),
        "ssh_user": os.environ["SAAS_RUN_SSH_USER"],
        "ssh_private_key": private_key,
        "ssh_host_key": host_key,
    }
    server = server.sudo()
    changed = {name: value for name, value in wanted.items() if server[name] != value}
    if changed:
        server.write(changed)
        env.cr.commit()
    # Field names only: the values include secrets.
    print("saas_run: local demo server updated:", ", ".join(sorted(changed)) or "nothing changed")
# The demo's outgoing mail: the sandbox's SMTP sink (one server, kept up to date).
sink = {"name": "Demo mail sink", "smtp_host": "127.0.0.1",
        "smtp_port": int(os.environ["SAAS_RUN_SMTP_PORT"]), "smtp_encryption": "none"}
mail_server = env["ir.mail_server"].sudo().search([("name", "=", sink["name"])], limit=1)
if mail_server:
    mail_server.write(sink)
else:
    env["ir.mail_server"].sudo().create(sink)
env.cr.commit()
print("saas_run: outgoing mail goes to the sink on port", sink["smtp_port"])
"""


def start_demo_pg(args, run_dir, stack):
    db_user = "saas_demo"
    db_password = util.kept_secret(run_dir / "db_password")
    if args.system_pg:
        pg = SystemCluster(owner=db_user, owner_password=db_password)
        data_dir = run_dir / "data-system"
    else:
        pg = PgCluster(run_dir / "pg", port=args.pg_port, owner=db_user, owner_password=db_password)
        data_dir = run_dir / "data"
    start_or_die(stack, pg, "PostgreSQL", None if args.system_pg else "--pg-port N")
    where = "the machine's" if args.system_pg else f"its own in {pg.workdir}"
    util.log(f"PostgreSQL: {where}, port {pg.port}, role {db_user}")
    return pg, data_dir


def cmd_run(args):
    odoo_src = odoo_tree()
    need_debs(*BASE_DEBS, *ODOO_DEBS)
    python = venv("odoo") / "bin" / "python"
    run_dir = machine.cache_dir() / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    run_dir.chmod(0o755)
    with contextlib.ExitStack() as stack, interruptible():
        pg, data_dir = start_demo_pg(args, run_dir, stack)
        if args.reset:
            # Every database of the role: the demo one, its templates and instances.
            for name in pg.owner_databases():
                util.log(f"--reset: dropping database {name}")
                pg.owner_psql(f'DROP DATABASE "{name}" WITH (FORCE)')
                shutil.rmtree(data_dir / "filestore" / name, ignore_errors=True)
            shutil.rmtree(data_dir / "sessions", ignore_errors=True)

        # sshd: how provisioning copies filestores, as on a real server.
        sshd = Sshd(run_dir / "ssh", port=args.ssh_port, host_key_types=("ed25519",))
        if sshd.adopt():
            util.log(f"sshd of {sshd.workdir} already running on port {sshd.port}: reusing it")
        else:
            util.log(f"starting sshd on 127.0.0.1:{args.ssh_port} ({sshd.workdir})")
            start_or_die(stack, sshd, "sshd", "--ssh-port N")

        if util.port_open(args.port):
            die(f"port {args.port} is in use: choose another with --port N")
        # db_name: the database preloaded and the only one the cron thread serves;
        # dbfilter: every database of the cluster can be opened (templates, instances).
        server = OdooServer(
            run_dir,
            odoo_src,
            python,
            pg,
            http_port=args.port,
            master_password=util.kept_secret(run_dir / "admin_passwd"),
            secret_key=util.kept_secret(run_dir / "secret_key", util.fernet_key),
            data_dir=data_dir,
            options={
                "db_name": args.db,
                "dbfilter": ".*",
                "without_demo": False,
                "max_cron_threads": 1,
            },
            log_to_file=False,
        )
        server.write_config()
        # Every mail of the demo (the customers' invitations) lands in a file, none leaves.
        smtp = stack.enter_context(SmtpSink(run_dir / "smtp"))
        prepare_demo_database(args, server, pg, sshd, run_dir, data_dir, smtp)

        util.log(f"starting Odoo on {server.url} (Ctrl-C stops it)")
        start_or_die(stack, server, "Odoo", None)
        sys.stderr.write(
            f"\n  SaaS Manager demo is running (Ctrl-C stops it)\n"
            f"    Open:             {server.url}/web/login?db={args.db}\n"
            f"    Login:            admin / admin\n"
            f"    Master password:  {server.master_password}"
            f"   (kept in {run_dir / 'admin_passwd'})\n"
            f"    PostgreSQL:       127.0.0.1:{pg.port}, role {pg.owner}\n"
            f"    SSH (filestores): 127.0.0.1:{sshd.port}\n"
            f"    Mail sent:        {smtp.mail_dir}/*.eml (an SMTP sink on 127.0.0.1:{smtp.port})\n"
            "    Try: Configuration > Servers > This Odoo (local demo) > Check Health;\n"
            "         Templates > Contacts starter > Create Database (in the background);\n"
            "         Instances > New, customer Demo Customer, template Contacts starter >\n"
            "         Provision; then open the invitation mail above and choose a password.\n\n"
        )
        code = server.process.wait()
        util.log(f"Odoo exited (code {code})")
        return code


def prepare_demo_database(args, server, pg, sshd, run_dir, data_dir, smtp):
    """Install (the first time) or update saas_manager, then write the demo record."""
    try:
        installed = pg.owner_psql(
            "SELECT state FROM ir_module_module WHERE name = 'saas_manager'", dbname=args.db
        ).strip()
    except ServiceError:
        installed = ""
    once = ("-d", args.db, "--stop-after-init")
    if installed != "installed":
        log = run_dir / "install.log"
        util.log(
            f"installing saas_manager with its demo data in database {args.db} "
            f"(a minute or two; log: {log})"
        )
        if server.run(*once, "-i", "saas_manager", log=log, check=False):
            sys.stderr.write(util.tail(log, 30))
            die(f"installing saas_manager failed (log: {log}; scripts/run --reset starts anew)")
    elif args.update:
        log = run_dir / "update.log"
        util.log(f"updating saas_manager in database {args.db} (log: {log})")
        if server.run(*once, "-u", "saas_manager", log=log, check=False):
            sys.stderr.write(util.tail(log, 30))
            die(f"updating saas_manager failed (log: {log})")

    util.log("writing this Odoo's address, PostgreSQL and SSH settings into the local demo server")
    log = run_dir / "settings.log"
    env = {
        "SAAS_RUN_URL": server.url,
        "SAAS_RUN_HTTP_PORT": str(server.http_port),
        "SAAS_RUN_DB_PORT": str(pg.port),
        "SAAS_RUN_DB_USER": pg.owner,
        "SAAS_RUN_DB_PASSWORD": pg.owner_password,
        "SAAS_RUN_MASTER_PASSWORD": server.master_password,
        "SAAS_RUN_DATA_DIR": str(data_dir),
        "SAAS_RUN_SSH_PORT": str(sshd.port),
        "SAAS_RUN_SSH_USER": util.current_user(),
        "SAAS_RUN_SSH_KEY_FILE": str(sshd.login_key()),
        "SAAS_RUN_SSH_HOST_KEY_FILE": str(sshd.host_key_file()),
        "SAAS_RUN_SMTP_PORT": str(smtp.port),
    }
    args_shell = ("shell", "-d", args.db, "--no-http", "--log-level=warn")
    if server.run(*args_shell, log=log, stdin=DEMO_SERVER_UPDATE, env=env, check=False):
        sys.stderr.write(log.read_text(errors="replace"))
        die("could not write the local settings into the demo server")
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("saas_run: "):
            util.log(line.removeprefix("saas_run: "))


# --- bench, i18n, screenshots ----------------------------------------------------------


def cmd_bench(args):
    if args.which in ("provision", "operations", "backup", "transfer"):
        odoo_tree()
        need_debs(*BASE_DEBS, "openssh-client", *ODOO_DEBS)
        python, script = venv("odoo") / "bin" / "python", SCRIPTS / f"bench_{args.which}.py"
    else:
        python, script = venv("test") / "bin" / "python", SCRIPTS / "bench_health_sweep.py"
    return subprocess.run([str(python), str(script), *args.args], check=False).returncode


def i18n_export(odoo_src, python):
    """Regenerate i18n/saas_manager.pot from the code, by Odoo itself, and merge it into
    every i18n/<lang>.po: ``msgmerge --no-fuzzy-matching`` (new terms come in
    untranslated, terms gone from the code are dropped), then ``msgfmt --check
    --statistics``. Fails when a .po file has an untranslated or fuzzy entry."""
    with PgCluster(owner="saas_i18n") as pg, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        work.chmod(0o755)
        server = OdooServer(work, odoo_src, python, pg, options={"http_enable": False})
        util.log("installing saas_manager (without demo data) in a fresh database")
        server.run(
            "-d",
            "saas_i18n",
            "-i",
            "saas_manager",
            "--without-demo=all",
            "--stop-after-init",
            "--log-level=warn",
            log=work / "install.log",
        )
        util.log("exporting the terms of saas_manager to i18n/saas_manager.pot")
        exported = work / "saas_manager.pot"
        server.run(
            "-d",
            "saas_i18n",
            f"--i18n-export={exported}",
            "--modules=saas_manager",
            "--log-level=warn",
            log=work / "export.log",
        )
        if not exported.exists() or not exported.stat().st_size:
            die("Odoo wrote an empty template")
        pot = ROOT / "i18n" / "saas_manager.pot"
        pot.parent.mkdir(exist_ok=True)
        shutil.move(exported, pot)
    status = 0
    for po in sorted((ROOT / "i18n").glob("*.po")):
        util.log(f"merging the template into i18n/{po.name}")
        for argv in (
            ["msgmerge", "--quiet", "--update", "--no-fuzzy-matching", "--backup=none", po, pot],
            # Terms the code no longer has: dropped rather than kept as #~ comments.
            ["msgattrib", "--no-obsolete", f"--output-file={po}", po],
        ):
            if subprocess.run([str(a) for a in argv], check=False).returncode:
                die(f"{argv[0]} failed on i18n/{po.name}")
        check = subprocess.run(
            ["msgfmt", "--check", "--statistics", "-o", "/dev/null", str(po)],
            capture_output=True,
            text=True,
            check=False,
        )
        stats = (check.stdout + check.stderr).strip()
        util.log(f"i18n/{po.name}: {stats}")
        if check.returncode or "untranslated" in stats or "fuzzy" in stats:
            util.log(f"i18n/{po.name} has terms to translate")
            status = 1
    return status


def cmd_screenshots(args):
    need_debs("chromium")
    python = venv("odoo") / "bin" / "python"
    url = f"http://127.0.0.1:{args.port}"
    try:
        with urllib.request.urlopen(f"{url}/web/health", timeout=5) as answer:  # noqa: S310
            answer.read()
    except OSError:
        die(f"no Odoo answers on {url}: start the demo with scripts/run first")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    argv = [
        str(python),
        str(SCRIPTS / "screenshots.py"),
        "--url",
        url,
        "--db",
        args.db,
        "--out",
        str(args.out),
        "--chromium",
        chromium,
    ]
    for name in args.only:
        argv += ["--only", name]
    return subprocess.run(argv, check=False).returncode


# --- command line -------------------------------------------------------------------


def parser():
    top = argparse.ArgumentParser(
        prog="scripts/saas.py",
        description=__doc__.split("\n\n", 1)[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = top.add_subparsers(dest="command", required=True)

    test = sub.add_parser("test", help="lint, standalone suite, Odoo suite; a SUMMARY line")
    test.add_argument("--no-lint", dest="lint", action="store_false", help="skip ruff, pylint")
    test.add_argument("--no-odoo", dest="odoo", action="store_false", help="skip the Odoo suite")
    test.set_defaults(func=cmd_test, pytest_args=[])

    run = sub.add_parser("run", help="the demo: Odoo with saas_manager and its demo data")
    run.add_argument("--port", type=tcp_port, default=8069, help="Odoo's HTTP port (8069)")
    run.add_argument("--db", type=database_name, default="saas_demo", help="(saas_demo)")
    run.add_argument(
        "--system-pg",
        action="store_true",
        help="the machine's PostgreSQL cluster (root only), with a role of its own",
    )
    run.add_argument("--pg-port", type=tcp_port, default=55433, help="own cluster's port (55433)")
    run.add_argument("--ssh-port", type=tcp_port, default=2223, help="private sshd's port (2223)")
    run.add_argument("--update", action="store_true", help="update saas_manager before serving")
    run.add_argument(
        "--reset", action="store_true", help="drop the databases and filestores it made first"
    )
    run.set_defaults(func=cmd_run)

    suite = sub.add_parser("suite", help="the Odoo suite alone")
    suite.add_argument("--tags", help="--test-tags (default $SAAS_TEST_TAGS or /saas_manager)")
    suite.set_defaults(func=cmd_suite)

    bench = sub.add_parser("bench", help="benchmarks (options after the name go to the script)")
    bench.add_argument("which", choices=("provision", "health", "operations", "backup", "transfer"))
    bench.add_argument("args", nargs=argparse.REMAINDER, help="the benchmark's own options")
    bench.set_defaults(func=cmd_bench)

    i18n = sub.add_parser("i18n", help="regenerate the .pot and merge it into every .po")
    i18n.set_defaults(func=i18n_command)

    shots = sub.add_parser("screenshots", help="screenshots of the running demo")
    shots.add_argument("--port", type=tcp_port, default=8069)
    shots.add_argument("--db", default="saas_demo")
    shots.add_argument("--out", type=Path, default=ROOT / "doc" / "screenshots")
    shots.add_argument("--only", action="append", default=[], help="one page (repeatable)")
    shots.set_defaults(func=cmd_screenshots)
    return top


def i18n_command(_args):
    return i18n_export(odoo_tree_with_debs(), venv("odoo") / "bin" / "python")


def odoo_tree_with_debs():
    src = odoo_tree()
    need_debs("postgresql", "libpq-dev", "python3-venv", *ODOO_DEBS, "gettext")
    return src


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    pytest_args = []
    if argv[:1] == ["test"] and "--" in argv:
        cut = argv.index("--")
        argv, pytest_args = argv[:cut], argv[cut + 1 :]
    args = parser().parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.command == "test":
        args.pytest_args = pytest_args
    try:
        return args.func(args)
    except ServiceError as exc:
        die(str(exc))


if __name__ == "__main__":
    sys.exit(main())
