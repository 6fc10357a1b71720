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
"""

import contextlib
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

from remote import ssh
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
