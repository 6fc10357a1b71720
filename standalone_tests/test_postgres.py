"""Tests of remote.postgres against a real throwaway PostgreSQL on loopback.

Every clone runs as ``saas_owner``, a role that is not superuser, may create
databases and owns the templates (how Odoo's database user is set up); the
superuser only prepares, inspects and cleans up.
"""

import logging
import re
import threading
import time
import uuid

import psycopg2
import pytest
from conftest import (
    PARTNERS,
    TEMPLATE_SECRET,
    TEMPLATE_URL,
    TEMPLATE_UUID,
    config,
    make_template,
    unique,
)
from psycopg2 import sql

from remote import postgres
from remote.exceptions import (
    DatabaseError,
    DatabaseExists,
    InvalidDatabaseName,
    InvalidInput,
)
from remote.postgres import CloneResult, ConnectionParams, clone_database
from sandbox.util import free_port

UUID4_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


@pytest.fixture
def closed_params():
    """Parameters of a port nobody listens on: connecting there fails."""
    return ConnectionParams(host="127.0.0.1", port=free_port(), user="nobody", password="x")


@pytest.fixture
def no_connect(monkeypatch):
    """Fail the test if anything tries to connect to PostgreSQL."""
    calls = []

    def refuse(*args, **kwargs):
        calls.append(kwargs.get("dbname"))
        raise AssertionError("a connection was attempted")

    monkeypatch.setattr(psycopg2, "connect", refuse)
    return calls


@pytest.fixture
def template(pg):
    return make_template(pg)


# --- successful clones -------------------------------------------------------


@pytest.mark.parametrize("strategy", [None, "file_copy", "wal_log"])
def test_clone_copies_data_and_renews_identity(pg, params, template, strategy):
    target = unique("inst")
    result = clone_database(
        params, template, target, strategy=strategy, base_url="https://shop1.example.com"
    )

    assert isinstance(result, CloneResult)
    assert result.target == target
    assert result.template == template
    assert result.server_version_num == pg.server_version_num()
    assert result.strategy == (strategy or postgres.DEFAULT_STRATEGY)
    assert result.duration_s >= 0

    rows = pg.query("SELECT count(*), max(name) FROM res_partner", dbname=target)
    assert rows == [(PARTNERS, "partner 99")]
    params_after = config(pg, target)
    assert params_after["database.uuid"] == result.uuid != TEMPLATE_UUID
    assert UUID4_RE.fullmatch(params_after["database.uuid"])
    assert params_after["database.secret"] != TEMPLATE_SECRET
    assert UUID4_RE.fullmatch(params_after["database.secret"])
    assert params_after["database.secret"] != params_after["database.uuid"]
    assert params_after["web.base.url"] == "https://shop1.example.com"
    assert params_after["database.create_date"] != "2020-01-01 00:00:00"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", params_after["database.create_date"])
    assert params_after["report.url"] == "http://kept.example.com"
    # Rows are written as Odoo's set_param would: by the superuser, now.
    (write_uid, write_date) = pg.query(
        "SELECT write_uid, write_date FROM ir_config_parameter WHERE key = 'database.uuid'",
        dbname=target,
    )[0]
    assert write_uid == 1
    assert write_date.year > 2020

    # The template keeps its identity and the clone belongs to the cloning role.
    assert config(pg, template)["database.uuid"] == TEMPLATE_UUID
    owner = pg.query(
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (target,)
    )
    assert owner == [(pg.owner,)]


def test_two_clones_of_one_template_differ(pg, params, template):
    first = clone_database(params, template, unique("inst"), base_url="http://a.example.com")
    second = clone_database(params, template, unique("inst"), base_url="http://b.example.com")
    assert first.uuid != second.uuid
    assert (
        config(pg, first.target)["database.secret"] != config(pg, second.target)["database.secret"]
    )


def test_base_url_is_inserted_when_missing(pg, params, template):
    pg.query("DELETE FROM ir_config_parameter WHERE key = 'web.base.url'", dbname=template)
    target = unique("inst")
    clone_database(params, template, target, base_url="https://new.example.com")
    values = config(pg, target)
    assert values["web.base.url"] == "https://new.example.com"  # inserted: it was missing
    assert values["report.url"] == "http://kept.example.com"  # untouched
    inserted = pg.query(
        "SELECT create_uid, create_date IS NOT NULL, write_uid FROM ir_config_parameter "
        "WHERE key = 'web.base.url'",
        dbname=target,
    )
    assert inserted == [(1, True, 1)]


def test_without_base_url_the_template_url_stays(pg, params, template):
    target = unique("inst")
    clone_database(params, template, target)
    assert config(pg, target)["web.base.url"] == TEMPLATE_URL


def test_open_session_on_template_is_ended(pg, params, template):
    # Odoo keeps connections to a database it served; the same role may end them.
    other = pg.connect(template, autocommit=False)
    try:
        with other.cursor() as cr:
            cr.execute("SELECT count(*) FROM res_partner")  # leaves a transaction open
        target = unique("inst")
        clone_database(params, template, target, base_url="http://x.example.com")
        assert target in pg.databases()
        with pytest.raises(psycopg2.OperationalError), other.cursor() as cr:
            cr.execute("SELECT 1")
    finally:
        other.close()


def test_template_busy_again_is_retried(pg, params, template, monkeypatch):
    """A session the first round missed makes CREATE fail once; the retry ends it."""
    real_terminate = postgres._terminate_sessions
    rounds = []

    def miss_first_round(cr, dbname):
        rounds.append(dbname)
        return set() if len(rounds) == 1 else real_terminate(cr, dbname)

    monkeypatch.setattr(postgres, "_terminate_sessions", miss_first_round)
    monkeypatch.setattr(postgres, "BUSY_TEMPLATE_SLEEP_S", 0)
    other = pg.connect(template)
    try:
        target = unique("inst")
        clone_database(params, template, target)
        assert rounds == [template, template]
        assert target in pg.databases()
    finally:
        other.close()


def test_session_of_another_role_is_reported_clearly(pg, params, template):
    # A non-superuser cannot end a superuser's session: say so, create nothing.
    other = pg.connect(template, superuser=True)
    try:
        before = pg.databases()
        target = unique("inst")
        with pytest.raises(DatabaseError) as info:
            clone_database(params, template, target)
        message = str(info.value)
        assert repr(template) in message
        assert pg.superuser in message
        assert "not allowed to end them" in message
        assert pg.databases() == before
    finally:
        other.close()


def test_concurrent_clones_to_one_target_one_wins(pg, params, template):
    target = unique("inst")
    barrier = threading.Barrier(2)
    results, errors = [], []

    def worker():
        barrier.wait()
        try:
            results.append(clone_database(params, template, target))
        except DatabaseError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 1
    assert len(errors) == 1
    assert isinstance(errors[0], DatabaseExists)
    # The loser did not drop the winner's database.
    assert config(pg, target)["database.uuid"] == results[0].uuid


def test_concurrent_clones_of_one_template(pg, params, template):
    targets = [unique("inst"), unique("inst")]
    barrier = threading.Barrier(2)
    results, errors = [], []

    def worker(name):
        barrier.wait()
        try:
            results.append(clone_database(params, template, name))
        except DatabaseError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(name,)) for name in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert {result.target for result in results} == set(targets)


# --- refusals before any connection ------------------------------------------

BAD_NAMES = [
    "",
    "a",
    "abc\n",
    "a b",
    "a;b",
    'x"; DROP DATABASE t; --',
    "a" * 64,
    "postgres",
    "template0",
    "template1",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_target_names_refused_before_connecting(closed_params, no_connect, name):
    with pytest.raises(InvalidDatabaseName):
        clone_database(closed_params, "tpl_ok", name)
    assert no_connect == []


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_template_names_refused_before_connecting(closed_params, no_connect, name):
    with pytest.raises(InvalidDatabaseName):
        clone_database(closed_params, name, "inst_ok")
    assert no_connect == []


def test_template_as_its_own_target_is_refused(closed_params, no_connect):
    with pytest.raises(InvalidInput, match="its own template"):
        clone_database(closed_params, "tpl_ok", "tpl_ok")
    assert no_connect == []


def test_closed_port_without_spy_is_a_database_error(closed_params):
    # The refusals above would have been a DatabaseError had they connected.
    with pytest.raises(DatabaseError, match="Cannot connect"):
        clone_database(closed_params, "tpl_ok", "inst_ok")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"strategy": "fast"},
        {"strategy": "FILE_COPY"},
        {"base_url": "ftp://x.example.com"},
        {"base_url": "shop.example.com"},
    ],
)
def test_bad_arguments_refused_before_connecting(closed_params, no_connect, kwargs):
    with pytest.raises(InvalidInput):
        clone_database(closed_params, "tpl_ok", "inst_ok", **kwargs)
    assert no_connect == []


def test_connection_params_must_be_the_dataclass(no_connect):
    with pytest.raises(InvalidInput, match="ConnectionParams"):
        clone_database({"host": "localhost"}, "tpl_ok", "inst_ok")


@pytest.mark.parametrize(
    "kwargs",
    [{"port": 0}, {"port": 70000}, {"port": "5432"}, {"host": ""}, {"connect_timeout": 0}],
)
def test_connection_params_are_checked(kwargs):
    with pytest.raises(InvalidInput):
        ConnectionParams(**kwargs)


def test_connection_params_never_show_the_password():
    params = ConnectionParams(host="db1", user="odoo", password="Hunter2-secret")
    assert "Hunter2-secret" not in repr(params)
    assert "Hunter2-secret" not in str(params)
    assert "Hunter2-secret" not in params.address


# --- refusals and failures against the server --------------------------------


def test_existing_target_is_refused_and_untouched(pg, params, template):
    target = unique("inst")
    pg.query(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target)), superuser=False)
    pg.query("CREATE TABLE marker (note text)", dbname=target)
    pg.query("INSERT INTO marker VALUES ('keep me')", dbname=target)
    with pytest.raises(DatabaseExists) as info:
        clone_database(params, template, target)
    assert repr(target) in str(info.value)
    assert pg.query("SELECT note FROM marker", dbname=target) == [("keep me",)]


def test_failing_after_the_copy_leaves_no_database(pg, params, template, monkeypatch):
    before = pg.databases()
    calls = []

    def broken(cr, values):
        calls.append(cr.connection.info.dbname)
        raise RuntimeError("identity write broke")

    monkeypatch.setattr(postgres, "_set_params", broken)
    target = unique("inst")
    with pytest.raises(DatabaseError) as info:
        clone_database(params, template, target)
    assert calls == [target]
    assert "identity write broke" in str(info.value)
    assert "was dropped" in str(info.value)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert pg.databases() == before


def test_session_left_on_the_clone_does_not_stop_the_drop(pg, params, template, monkeypatch):
    before = pg.databases()
    sessions = []

    def broken(cr, values):
        sessions.append(pg.connect(cr.connection.info.dbname))
        raise RuntimeError("boom")

    monkeypatch.setattr(postgres, "_set_params", broken)
    try:
        with pytest.raises(DatabaseError, match="was dropped"):
            clone_database(params, template, unique("inst"))
        assert pg.databases() == before
    finally:
        for conn in sessions:
            conn.close()


def test_template_without_config_table_leaves_no_database(pg, params):
    template = make_template(pg, with_config=False)
    before = pg.databases()
    with pytest.raises(DatabaseError) as info:
        clone_database(params, template, unique("inst"))
    assert "ir_config_parameter" in str(info.value)
    assert "setting its identity" in str(info.value)
    assert pg.databases() == before


def test_missing_template_creates_nothing(pg, params):
    before = pg.databases()
    with pytest.raises(DatabaseError, match="does not exist") as info:
        clone_database(params, "tpl_missing", unique("inst"))
    assert not isinstance(info.value, DatabaseExists)
    assert pg.databases() == before


def test_template_of_another_owner_is_refused(pg, template):
    # A role that may create databases but does not own the template.
    role, password = unique("intruder"), uuid.uuid4().hex
    pg.query(
        sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD %s").format(sql.Identifier(role)),
        (password,),
    )
    try:
        before = pg.databases()
        intruder = ConnectionParams(host=pg.host, port=pg.port, user=role, password=password)
        with pytest.raises(DatabaseError, match="permission denied"):
            clone_database(intruder, template, unique("inst"))
        assert pg.databases() == before
    finally:
        pg.query(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_wrong_password_is_a_database_error_without_the_password(pg, template, caplog):
    password = "Wr0ng-Pa55word-" + uuid.uuid4().hex
    wrong = ConnectionParams(host=pg.host, port=pg.port, user=pg.owner, password=password)
    before = pg.databases()
    caplog.set_level(logging.DEBUG, logger="remote.postgres")
    with pytest.raises(DatabaseError) as info:
        clone_database(wrong, template, unique("inst"))
    text = str(info.value)
    assert "password authentication failed" in text
    assert password not in text
    assert password not in repr(info.value)
    assert info.value.__cause__ is None  # the libpq error is not chained either
    assert password not in caplog.text
    assert pg.databases() == before


def test_log_lines_name_the_clone_never_the_password(pg, params, template, caplog):
    caplog.set_level(logging.DEBUG, logger="remote.postgres")
    target = unique("inst")
    clone_database(params, template, target, strategy="wal_log")
    lines = [record.getMessage() for record in caplog.records]
    assert any(template in line and target in line and "wal_log" in line for line in lines)
    assert pg.owner_password not in caplog.text


# --- sessions and SQL ----------------------------------------------------------


def test_sessions_have_timeouts(params):
    conn = postgres._connect(params, "postgres", autocommit=True)
    try:
        with conn.cursor() as cr:
            cr.execute(
                "SELECT current_setting('statement_timeout'), current_setting('lock_timeout'), "
                "current_setting('application_name')"
            )
            assert cr.fetchone() == ("30s", "10s", "saas_manager")
    finally:
        conn.close()


def test_create_and_drop_statements(pg):
    conn = pg.connect()
    try:

        def text(query):
            return query.as_string(conn)

        assert text(postgres._create_database_sql('in"st', "tpl", None)) == (
            'CREATE DATABASE "in""st" WITH TEMPLATE "tpl"'
        )
        assert text(postgres._create_database_sql("inst", "tpl", "file_copy")).endswith(
            "STRATEGY FILE_COPY"
        )
        assert text(postgres._create_database_sql("inst", "tpl", "wal_log")).endswith(
            "STRATEGY WAL_LOG"
        )
        assert text(postgres._drop_database_sql("inst", 150000)) == (
            'DROP DATABASE IF EXISTS "inst" WITH (FORCE)'
        )
        assert text(postgres._drop_database_sql("inst", 120000)) == 'DROP DATABASE IF EXISTS "inst"'
    finally:
        conn.close()


def test_strategy_choice_by_server_version(caplog):
    caplog.set_level(logging.INFO, logger="remote.postgres")
    assert postgres._choose_strategy(None, 150004, "tpl") == postgres.DEFAULT_STRATEGY
    assert postgres._choose_strategy("wal_log", 160000, "tpl") == "wal_log"
    assert postgres._choose_strategy(None, 140010, "tpl") is None
    assert "no CREATE DATABASE strategy" not in caplog.text
    assert postgres._choose_strategy("file_copy", 140010, "tpl") is None
    assert "no CREATE DATABASE strategy" in caplog.text


# --- drop_database and database_exists ---------------------------------------


def test_drop_database(pg, params, template):
    target = clone_database(params, template, unique("inst")).target
    session = pg.connect(target)  # an open session of the same role does not stop it
    try:
        assert postgres.drop_database(params, target) is True
    finally:
        session.close()
    assert target not in pg.databases()
    assert postgres.drop_database(params, target) is False


def _creates_waiting(pg):
    """Statements ``CREATE DATABASE …`` running and waiting for a lock, as seen by the superuser."""
    rows = pg.query(
        "SELECT query FROM pg_stat_activity WHERE state = 'active' "
        "AND wait_event_type = 'Lock' AND query LIKE 'CREATE DATABASE %%'"
    )
    return [row[0] for row in rows]


@pytest.mark.parametrize("strategy", ["wal_log", "file_copy"])
def test_drop_database_ends_a_clone_still_being_created(pg, params, template, strategy):
    """A worker killed mid-clone leaves its CREATE DATABASE running in PostgreSQL,
    where the new database is not visible yet: the drop (the undo of its journal)
    ends that statement, so the database never appears. Another clone from the
    same template, of another name, is left alone."""
    target, bystander = unique("inst"), unique("other")
    # COMMENT ON DATABASE locks the template's database object until commit: a
    # CREATE DATABASE from it waits, running, as the copy of a big template does.
    holder = pg.connect(autocommit=False)
    with holder.cursor() as cr:
        cr.execute(sql.SQL("COMMENT ON DATABASE {} IS 'held'").format(sql.Identifier(template)))
    errors = {}

    def clone(name):
        try:
            clone_database(params, template, name, strategy=strategy)
        except DatabaseError as exc:
            errors[name] = exc

    threads = [threading.Thread(target=clone, args=(name,)) for name in (target, bystander)]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while len(_creates_waiting(pg)) < 2:
            assert time.monotonic() < deadline, "the two CREATE DATABASE never started"
            time.sleep(0.05)

        assert postgres.drop_database(params, target) is False  # not made yet
        assert [query for query in _creates_waiting(pg) if target in query] == []
        assert len(_creates_waiting(pg)) == 1, "the other clone still runs"
    finally:
        holder.rollback()
        holder.close()
        for thread in threads:
            thread.join(timeout=60)
    assert target in errors, "its clone was ended"
    assert bystander not in errors
    assert target not in pg.databases()
    assert bystander in pg.databases()
    assert postgres.drop_database(params, target) is False


def test_drop_database_ends_only_a_create_of_that_name(pg):
    """Quoted or not (folded to lower case), any case of the keywords; not a prefix."""
    name = "inst_1"
    queries = {
        'CREATE DATABASE "inst_1" WITH TEMPLATE "tpl" STRATEGY WAL_LOG': True,
        "create database inst_1": True,
        "  Create   Database INST_1 template tpl;": True,
        'CREATE DATABASE "INST_1"': False,
        'CREATE DATABASE "inst_10"': False,
        "CREATE DATABASE inst_1x": False,
        'SELECT 1 -- CREATE DATABASE "inst_1"': False,
        'DROP DATABASE "inst_1"': False,
    }

    class Cursor:
        def execute(self, query, params=None):
            pass

        def fetchall(self):
            return list(enumerate(queries))

    found = postgres._creating(Cursor(), name)
    assert [list(queries)[pid] for pid in found] == [q for q, ends in queries.items() if ends]


@pytest.mark.parametrize("name", ["postgres", "template0", "template1", "", "a b", "x;--"])
def test_drop_database_refuses_bad_names_before_connecting(closed_params, no_connect, name):
    with pytest.raises(InvalidDatabaseName):
        postgres.drop_database(closed_params, name)
    assert no_connect == []


def test_drop_database_of_another_owner_fails_clearly(pg, params):
    name = unique("other")
    pg.query(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))  # the superuser's
    with pytest.raises(DatabaseError, match="must be owner"):
        postgres.drop_database(params, name)
    assert name in pg.databases()


def test_database_exists(pg, params, template):
    assert postgres.database_exists(params, template) is True
    assert postgres.database_exists(params, "postgres") is True
    assert postgres.database_exists(params, "no_such_db") is False
    with pytest.raises(InvalidInput):
        postgres.database_exists(params, None)


def test_database_exists_unreachable_server(closed_params):
    with pytest.raises(DatabaseError, match="Cannot connect"):
        postgres.database_exists(closed_params, "anything")
