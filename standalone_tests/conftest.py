"""Fixtures shared by the standalone test modules, on the sandbox's services.

A test module uses a fixture by naming it; helpers that tests call directly
(``make_template``, ``config``, ``unique``, ``settings_for``) are imported from here
(``from conftest import ...``), so that no test module imports another.

- ``pg_cluster`` (session): a throwaway PostgreSQL cluster, ``sandbox.postgres.PgCluster``,
  whose owner role ``saas_owner`` is not a superuser, may create databases and owns
  the templates (how Odoo's database user is set up); ``pg`` drops what a test made,
  ``params`` connects as that role.
- ``sshd`` (session): a private sshd (``sandbox.sshd.Sshd``, passwords accepted too)
  where ``client_keys`` are authorised for the current user; ``make_settings`` gives
  ``remote.ssh.SshSettings`` for it.

Which part of the suite runs: ``SAAS_STANDALONE_PART`` (set by ``scripts/saas.py
test``, which runs the parts side by side) keeps only ``crash`` (the kill -9 tests
of ``test_operations_crash``, real Odoo processes), everything but them (``main``),
or the modules on the HTTP stack (``http``, run again with urllib3 2.x; see
:func:`http_stack_chain`). Unset, everything is collected.
"""

import ast
import contextlib
import functools
import hashlib
import itertools
import os
import pwd
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest
from psycopg2 import sql

from remote import ssh, ssh_pool
from remote.postgres import ConnectionParams
from sandbox import postgres
from sandbox import sshd as sandbox_sshd

CURRENT_USER = pwd.getpwuid(os.geteuid()).pw_name
IS_ROOT = os.geteuid() == 0

TEMPLATE_UUID = "11111111-1111-1111-1111-111111111111"
TEMPLATE_SECRET = "22222222-2222-2222-2222-222222222222"
TEMPLATE_URL = "http://template.example.com"
PARTNERS = 120
# Modules odoo_like() lists as installed (and crm, not installed).
MODULES = {"base": "18.0.1.3", "web": "18.0.1.0", "mail": "18.0.1.17"}

_names = itertools.count(1)


# --- PostgreSQL -------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_kept_ssh_connections():
    """Each test starts without the SSH connections an earlier one kept for reuse
    (remote.ssh_pool): a test that counts connections counts its own."""
    ssh_pool.POOL.clear()
    yield
    ssh_pool.POOL.clear()


@pytest.fixture(scope="session")
def pg_cluster():
    """A running throwaway cluster for the whole session."""
    if postgres.find_bindir() is None:
        pytest.skip(f"no PostgreSQL server binaries found ({postgres.PG_BIN_GLOB}/initdb)")
    with postgres.PgCluster(owner="saas_owner") as cluster:
        yield cluster


@pytest.fixture
def pg(pg_cluster):
    """The cluster, with every database a test made dropped afterwards."""
    before = pg_cluster.databases()
    yield pg_cluster
    for name in pg_cluster.databases() - before:
        pg_cluster.query(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def params(pg):
    return ConnectionParams(
        host=pg.host, port=pg.port, user=pg.owner, password=pg.owner_password, connect_timeout=5
    )


def unique(prefix):
    return f"{prefix}_{next(_names)}_{uuid.uuid4().hex[:6]}"


def make_template(pg, *, with_config=True):
    """A small Odoo-like database owned by the test role; return its name."""
    name = unique("tpl")
    pg.query(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)), superuser=False)
    with contextlib.closing(pg.connect(name)) as conn, conn.cursor() as cr:
        if with_config:
            cr.execute(
                "CREATE TABLE ir_config_parameter (id serial PRIMARY KEY, "
                "key varchar NOT NULL UNIQUE, value text NOT NULL, create_uid int, "
                "create_date timestamp, write_uid int, write_date timestamp)"
            )
            cr.executemany(
                "INSERT INTO ir_config_parameter "
                "(key, value, create_uid, create_date, write_uid, write_date) "
                "VALUES (%s, %s, 1, '2020-01-01', 1, '2020-01-01')",
                [
                    ("database.uuid", TEMPLATE_UUID),
                    ("database.secret", TEMPLATE_SECRET),
                    ("database.create_date", "2020-01-01 00:00:00"),
                    ("web.base.url", TEMPLATE_URL),
                    ("report.url", "http://kept.example.com"),
                ],
            )
        cr.execute("CREATE TABLE res_partner (id serial PRIMARY KEY, name varchar NOT NULL)")
        cr.execute(
            "INSERT INTO res_partner (name) SELECT 'partner ' || g FROM generate_series(1, %s) g",
            (PARTNERS,),
        )
    return name


def odoo_like(pg):
    """A database as make_template makes it, plus Odoo's module table."""
    name = make_template(pg)
    with contextlib.closing(pg.connect(name)) as conn, conn.cursor() as cr:
        cr.execute(
            "CREATE TABLE ir_module_module (id serial PRIMARY KEY, name varchar, "
            "latest_version varchar, state varchar)"
        )
        for module, version in MODULES.items():
            cr.execute(
                "INSERT INTO ir_module_module (name, latest_version, state) "
                "VALUES (%s, %s, 'installed')",
                (module, version),
            )
        cr.execute(
            "INSERT INTO ir_module_module (name, latest_version, state) "
            "VALUES ('crm', '18.0.1.0', 'uninstalled')"
        )
    return name


def make_filestore(root, files=6, size=20_000):
    root.mkdir(parents=True)
    made = {}
    for number in range(files):
        data = os.urandom(size) + b"text " * number
        digest = hashlib.sha1(data, usedforsecurity=False).hexdigest()
        (root / digest[:2]).mkdir(exist_ok=True)
        (root / digest[:2] / digest).write_bytes(data)
        made[f"{digest[:2]}/{digest}"] = data
    return made


def tree(root):
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(Path(root).rglob("*"))
        if path.is_file()
    }


def config(pg, dbname):
    rows = pg.query("SELECT key, value FROM ir_config_parameter", dbname=dbname)
    return dict(rows)


# --- sshd ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def base_dir():
    missing = sandbox_sshd.missing_tools()
    if missing:
        pytest.skip(missing)
    path = Path(tempfile.mkdtemp(prefix="saas-ssh-tests-"))
    # Traversable by the unprivileged test user (sshd reads authorized_keys as that user).
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def client_keys(base_dir):
    keys_dir = base_dir / "client-keys"
    keys_dir.mkdir()
    generate = sandbox_sshd.generate_key
    keys = {
        "ed25519": generate(keys_dir / "ed25519", "ed25519"),
        "ecdsa": generate(keys_dir / "ecdsa", "ecdsa"),
        "rsa": generate(keys_dir / "rsa", "rsa", bits=3072),
        "rsa-pem": generate(keys_dir / "rsa-pem", "rsa", bits=2048, pem=True),
        "encrypted": generate(keys_dir / "encrypted", "ed25519", passphrase="s3cret"),
    }
    stranger = generate(keys_dir / "stranger", "ed25519")
    return keys, stranger


def authorized_sshd(workdir, client_keys, extra_config=()):
    """A started sshd in ``workdir`` where every client key logs in (stop it after)."""
    server = sandbox_sshd.Sshd(workdir, extra_config, password_auth=True)
    server.start()
    for _private, public in client_keys[0].values():
        server.authorize(public)
    return server


@pytest.fixture(scope="session")
def sshd(base_dir, client_keys):
    server = authorized_sshd(base_dir / "sshd", client_keys)
    yield server
    server.stop()


def settings_for(server, key_text, **overrides):
    values = {
        "host": sandbox_sshd.LOOPBACK,
        "port": server.port,
        "username": CURRENT_USER,
        "private_key": key_text,
        "host_key": server.host_key("ed25519"),
        "connect_timeout": 15.0,
        "command_timeout": 120.0,
    }
    values.update(overrides)
    return ssh.SshSettings(**values)


@pytest.fixture
def make_settings(sshd, client_keys):
    def make(**overrides):
        return settings_for(sshd, client_keys[0]["ed25519"][0], **overrides)

    return make


# --- the parts of the suite ---------------------------------------------------------

TESTS_DIR = Path(__file__).resolve().parent
REPO_DIR = TESTS_DIR.parent
CRASH_MODULE = "test_operations_crash.py"
PARTS = ("main", "crash", "http")
# Third-party packages that are the HTTP stack whose two majors the suite is run
# with (urllib3 1.26 and 2.x): requests and urllib3, and boto3/botocore, which send
# through urllib3.
HTTP_STACK = frozenset({"requests", "urllib3", "boto3", "botocore", "s3transfer"})


def _local_module(name):
    """The file of a module of this repository (``remote.x``, ``sandbox.x``, or one
    of this folder's, such as ``_http_peer``) named ``name``, else None."""
    for base in (REPO_DIR, TESTS_DIR):
        path = base.joinpath(*name.split("."))
        for candidate in (path.with_suffix(".py"), path / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def _imports(path, everywhere):
    """Names of the modules ``path`` imports: at module level (with ``everywhere``, in
    functions too), relative ones resolved, and ``from a import b`` as ``a`` and ``a.b``."""
    tree = ast.parse(path.read_text(), str(path))
    package = path.parent.relative_to(REPO_DIR).parts if path.is_relative_to(REPO_DIR) else ()
    if path.parent == TESTS_DIR:
        package = ()
    nodes = ast.walk(tree) if everywhere else tree.body
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = [*package[: len(package) - node.level + 1]] if node.level else []
            base = ".".join([*parts, node.module] if node.module else parts)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def http_stack_chain(path, _seen=None):
    """How the test module ``path`` reaches the HTTP stack: the chain of imports from it
    to ``requests``/``urllib3``/``boto3``/``botocore``, or None.

    Followed: every import of the test module (in its functions too), then the
    module-level imports of the repository's modules it names, transitively. A
    repository module's import inside a function (``storage.open_storage`` imports
    ``storage_s3`` only for an S3 storage) is not followed: it is reached only by a
    call, and the ``main`` run checks calls (:func:`pytest_sessionfinish`).
    """
    seen = set() if _seen is None else _seen
    path = Path(path).resolve()
    if path in seen:
        return None
    seen.add(path)
    is_test = _seen is None
    for name in sorted(_imports(path, everywhere=is_test)):
        if name.split(".")[0] in HTTP_STACK:
            return [str(path.relative_to(REPO_DIR)), name]
        local = _local_module(name)
        if local is not None:
            chain = http_stack_chain(local, seen)
            if chain:
                return [str(path.relative_to(REPO_DIR)), *chain]
    return None


@functools.cache
def parts_of(path):
    """The parts the test module at ``path`` (a str) belongs to."""
    if Path(path).name == CRASH_MODULE:
        return frozenset({"crash"})
    return frozenset({"main", "http"} if http_stack_chain(path) else {"main"})


def pytest_collection_modifyitems(config, items):
    part = os.environ.get("SAAS_STANDALONE_PART")
    if not part:
        return
    if part not in PARTS:
        raise pytest.UsageError(f"SAAS_STANDALONE_PART={part!r}: one of {', '.join(PARTS)}")
    kept = [item for item in items if part in parts_of(str(item.path))]
    dropped = [item for item in items if part not in parts_of(str(item.path))]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


# In the main run: the modules whose tests sent a request through urllib3 (requests and
# botocore both end in HTTPConnectionPool.urlopen), so that one the http part would
# leave out fails the run instead of going untested with urllib3 2.x.
_sent_by = set()
_running = {}
_missed = []


def pytest_configure(config):
    if os.environ.get("SAAS_STANDALONE_PART") != "main":
        return
    try:
        from urllib3.connectionpool import HTTPConnectionPool
    except ImportError:
        return
    urlopen = HTTPConnectionPool.urlopen

    def watched_urlopen(self, *args, **kwargs):
        if _running.get("path"):
            _sent_by.add(_running["path"])
        return urlopen(self, *args, **kwargs)

    HTTPConnectionPool.urlopen = watched_urlopen


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _running["path"] = item.path
    try:
        yield
    finally:
        _running["path"] = None


def pytest_sessionfinish(session, exitstatus):
    missed = sorted(path.name for path in _sent_by if "http" not in parts_of(str(path)))
    if missed:
        _missed.append(
            f"conftest: {', '.join(missed)} sent HTTP through urllib3, yet the urllib3 2.x "
            "run leaves it out (http_stack_chain finds no import of the HTTP stack in it)"
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    for line in _missed:
        terminalreporter.write_line(line, red=True)
