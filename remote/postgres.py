"""A server's PostgreSQL (psycopg2 only): clone, drop and look up databases.

``clone_database()`` copies a template database with ``CREATE DATABASE …
TEMPLATE …`` and gives the copy its own identity (``database.uuid``,
``database.secret``, ``database.create_date``, ``web.base.url`` in Odoo's
``ir_config_parameter``): a clone must never share its template's secrets.
Anything that fails once the copy exists drops it again, so a failed clone
leaves no database behind.

``drop_database()`` is idempotent: dropping a database that is not there
returns False.

Names are checked with :mod:`.names` before any connection is opened;
identifiers reach SQL only through ``psycopg2.sql.Identifier`` and values only
as query parameters. Every connection is opened by :func:`_session`, which
bounds its statements, turns libpq's errors into :class:`DatabaseError` and
closes it. The password never appears in a ``repr``, a log line or an
exception message.

A little over 500 lines: a fifth of them are the measurements behind the
default clone strategy, kept next to the constant they justify.
"""

import contextlib
import datetime
import logging
import re
import time
import uuid
from dataclasses import dataclass, field

import psycopg2
import psycopg2.errors
from psycopg2 import sql

from .exceptions import DatabaseError, DatabaseExists, InvalidInput
from .handover import Handover
from .handover import apply as apply_handover
from .names import validate_database_name

_logger = logging.getLogger(__name__)

MAINTENANCE_DB = "postgres"
APPLICATION_NAME = "saas_manager"

STRATEGY_WAL_LOG = "wal_log"
STRATEGY_FILE_COPY = "file_copy"
STRATEGIES = {STRATEGY_WAL_LOG: "WAL_LOG", STRATEGY_FILE_COPY: "FILE_COPY"}
# PostgreSQL 15 added CREATE DATABASE … STRATEGY (and made WAL_LOG its
# default); 13 added DROP DATABASE … WITH (FORCE).
STRATEGY_MIN_VERSION = 150000
DROP_FORCE_MIN_VERSION = 130000

# Default strategy on PostgreSQL >= 15: WAL_LOG, chosen on measurements.
# FILE_COPY copies the files but forces two immediate (before and after)
# checkpoints, which flush every dirty buffer of the whole cluster (all the
# other tenants' writes) and fsync each copied file: its cost follows the
# server's write load, not the template. WAL_LOG writes the template to the
# WAL instead (about its size: 11 MB for Odoo "base", 28 MB for a 53 MB
# template), so its cost follows the template, which is small for Odoo.
# Medians of 9 clones each (PostgreSQL 15.18, 2 shared vCPUs, order
# alternated; run-to-run noise on that VM was up to 2x, the order held in
# every fsync=on run), FILE_COPY vs WAL_LOG, in seconds:
#   Odoo 18 base (21 MB, 1053 relations), fsync on, idle:      1.33 vs 1.19
#   Odoo 18 sale/crm/account/stock (53 MB, 3085 rel.), idle:   4.98 vs 3.31
#   the same two while another db has 130 MB of dirty buffers: 1.79 vs 0.61, 4.03 vs 3.27
#   fsync off (the test cluster only), base and apps:          0.16 vs 0.20, 1.98 vs 2.29
# FILE_COPY only won with fsync off. It is still offered ("file_copy") for
# large templates on a quiet server, where writing gigabytes to the WAL (and
# to every replica and archive) costs more than two checkpoints.
DEFAULT_STRATEGY = STRATEGY_WAL_LOG

# Short statements (lookups, terminate, config updates) must never hang a
# provisioning; CREATE DATABASE copies the whole template and gets longer.
STATEMENT_TIMEOUT_MS = 30_000
LOCK_TIMEOUT_MS = 10_000
CREATE_TIMEOUT_MS = 15 * 60_000

# "source database … is being accessed by other users": a session reached the
# template between the terminate and the CREATE, or a terminated backend has
# not exited yet. PostgreSQL itself waits up to 5 s per attempt.
BUSY_TEMPLATE_ATTEMPTS = 3
BUSY_TEMPLATE_SLEEP_S = 0.5

# Odoo's superuser (SUPERUSER_ID): the author of the parameters we write.
ODOO_SUPERUSER_ID = 1


@dataclass(frozen=True)
class ConnectionParams:
    """Where and as whom to reach a PostgreSQL server.

    ``password`` is kept out of ``repr``; ``connect_timeout`` is in seconds.
    """

    host: str = "localhost"
    port: int = 5432
    user: str = "odoo"
    password: str | None = field(default=None, repr=False)
    connect_timeout: int = 10

    def __post_init__(self):
        if not isinstance(self.host, str) or not self.host:
            raise InvalidInput("The PostgreSQL host is empty.")
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise InvalidInput(f"The PostgreSQL port must be a number, not {self.port!r}.")
        if not 0 < self.port < 65536:
            raise InvalidInput(f"The PostgreSQL port {self.port!r} is not between 1 and 65535.")
        if not isinstance(self.user, str) or not self.user:
            raise InvalidInput("The PostgreSQL user is empty.")
        if (
            isinstance(self.connect_timeout, bool)
            or not isinstance(self.connect_timeout, int)
            or self.connect_timeout <= 0
        ):
            raise InvalidInput(
                f"The connect timeout must be a positive number of seconds, "
                f"not {self.connect_timeout!r}."
            )

    @property
    def address(self):
        return f"{self.user}@{self.host}:{self.port}"


@dataclass(frozen=True)
class CloneResult:
    """What ``clone_database()`` did.

    ``strategy`` is the STRATEGY clause used (``"file_copy"``, ``"wal_log"``),
    None on PostgreSQL < 15 where there is none; ``uuid`` the clone's new
    ``database.uuid``.
    """

    target: str
    strategy: str | None
    server_version_num: int
    duration_s: float
    uuid: str
    template: str


# --- connections -------------------------------------------------------------


def _describe(exc):
    """The operator-readable reason of a psycopg2 error, on one line.

    libpq messages name the host and the user, never the password; callers
    still pass the text through ``_scrub`` because it is shown as it is.
    """
    diag = getattr(exc, "diag", None)
    text = (getattr(diag, "message_primary", None) or str(exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _utcnow():
    # Odoo stores naive UTC datetimes, without microseconds.
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None, microsecond=0)


def _scrub(message, params):
    if params.password:
        message = message.replace(params.password, "********")
    return message


def _connect(params, dbname, *, autocommit):
    # libpq startup options, not SQL: only our own integer constants go in.
    options = f"-c statement_timeout={STATEMENT_TIMEOUT_MS} -c lock_timeout={LOCK_TIMEOUT_MS}"
    try:
        conn = psycopg2.connect(
            host=params.host,
            port=params.port,
            user=params.user,
            password=params.password,
            dbname=dbname,
            connect_timeout=params.connect_timeout,
            application_name=APPLICATION_NAME,
            options=options,
        )
    except psycopg2.Error as exc:
        message = _scrub(
            f"Cannot connect to database {dbname!r} on PostgreSQL {params.address}: "
            f"{_describe(exc)}",
            params,
        )
        raise DatabaseError(message) from None
    conn.autocommit = autocommit
    return conn


@contextlib.contextmanager
def _session(params, dbname, failure=None, *, autocommit=True):
    """A connection to ``dbname`` for the block, closed at its end.

    :param failure: the start of the message (``"Cannot drop database 'x'"``) of
        the :class:`DatabaseError` a psycopg2 error in the block becomes, with
        libpq's reason after it, the password scrubbed and the libpq error not
        chained; None lets psycopg2 errors through for the caller to word.
    :raises DatabaseError: the connection failed (whatever ``failure`` is).
    """
    conn = _connect(params, dbname, autocommit=autocommit)
    try:
        yield conn
    except psycopg2.Error as exc:
        if failure is None:
            raise
        raise DatabaseError(_scrub(f"{failure}: {_describe(exc)}", params)) from exc
    finally:
        conn.close()


def _server_version_num(cr):
    cr.execute("SELECT current_setting('server_version_num')::int")
    return cr.fetchone()[0]


def _exists(cr, name):
    cr.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
    return cr.fetchone() is not None


def _is_duplicate_database(exc):
    # Two CREATE DATABASE of the same name at once: the loser gets either
    # duplicate_database or the unique index of the catalog.
    if isinstance(exc, psycopg2.errors.DuplicateDatabase):
        return True
    return isinstance(exc, psycopg2.errors.UniqueViolation) and (
        getattr(exc.diag, "constraint_name", None) == "pg_database_datname_index"
    )


# --- SQL ---------------------------------------------------------------------


def _create_database_sql(target, template, strategy):
    """``CREATE DATABASE target WITH TEMPLATE template [STRATEGY …]``.

    ``strategy`` is a key of STRATEGIES (or None): only fixed keywords from
    that table are added, never caller text.
    """
    query = sql.SQL("CREATE DATABASE {} WITH TEMPLATE {}").format(
        sql.Identifier(target), sql.Identifier(template)
    )
    if strategy:
        query = sql.SQL("{} STRATEGY {}").format(query, sql.SQL(STRATEGIES[strategy]))
    return query


def _drop_database_sql(name, server_version_num):
    query = sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name))
    if server_version_num >= DROP_FORCE_MIN_VERSION:
        query = sql.SQL("{} WITH (FORCE)").format(query)
    return query


def _choose_strategy(strategy, server_version_num, template):
    if server_version_num < STRATEGY_MIN_VERSION:
        if strategy:
            _logger.info(
                "PostgreSQL %s has no CREATE DATABASE strategy: cloning %s without %s",
                server_version_num,
                template,
                strategy,
            )
        return None
    return strategy or DEFAULT_STRATEGY


# --- sessions on the template ------------------------------------------------


def _terminate_sessions(cr, dbname):
    """End the other sessions on ``dbname``; return the roles we may not end.

    A role that is not superuser may only end sessions of roles it is a member
    of (or all but superusers' with ``pg_signal_backend``): each session is
    ended on its own, so a refused one does not stop the others.
    """
    cr.execute(
        # Client sessions only: CREATE DATABASE itself tells autovacuum
        # workers (no role) to exit. backend_type is hidden (NULL) for other
        # roles' sessions unless we may see them, hence the coalesce.
        "SELECT pid, usename FROM pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_backend_pid() AND usename IS NOT NULL "
        "AND coalesce(backend_type, 'client backend') = 'client backend'",
        (dbname,),
    )
    refused = set()
    for pid, usename in cr.fetchall():
        try:
            cr.execute("SELECT pg_terminate_backend(%s)", (pid,))
        except psycopg2.errors.InsufficientPrivilege:
            refused.add(usename)
        else:
            _logger.debug("Ended session %s of %s on database %s", pid, usename, dbname)
    if refused:
        _logger.warning(
            "Cannot end the sessions of role(s) %s on database %s: not allowed for this role",
            ", ".join(sorted(refused)),
            dbname,
        )
    return refused


def _create_from_template(cr, params, template, target, strategy):
    """Run CREATE DATABASE, ending the template's sessions before each try."""
    query = _create_database_sql(target, template, strategy)
    # The connection is closed right after, so the longer timeout is not reset.
    cr.execute("SELECT set_config('statement_timeout', %s, false)", (str(CREATE_TIMEOUT_MS),))
    for attempt in range(1, BUSY_TEMPLATE_ATTEMPTS + 1):
        refused = _terminate_sessions(cr, template)
        try:
            cr.execute(query)
            return
        except psycopg2.errors.ObjectInUse as exc:
            if refused or attempt == BUSY_TEMPLATE_ATTEMPTS:
                if refused:
                    reason = (
                        f"sessions of role(s) {', '.join(sorted(refused))} are open on it "
                        f"and user {params.user!r} is not allowed to end them: close them "
                        "(a role may end its own sessions; pg_signal_backend allows ending "
                        "any but a superuser's)"
                    )
                else:
                    reason = (
                        f"new sessions kept opening on it ({attempt} attempts): "
                        "stop what connects to the template"
                    )
                raise DatabaseError(
                    f"Cannot clone template {template!r} into {target!r}: {reason}."
                ) from exc
            _logger.info(
                "Template %s still in use (attempt %s of %s), retrying",
                template,
                attempt,
                BUSY_TEMPLATE_ATTEMPTS,
            )
            time.sleep(BUSY_TEMPLATE_SLEEP_S * attempt)


# --- the clone's identity ----------------------------------------------------


def _set_params(cr, values):
    """Upsert ``ir_config_parameter`` rows the way Odoo's ``set_param`` stores them."""
    now = _utcnow()
    for key, value in values.items():
        cr.execute(
            "UPDATE ir_config_parameter SET value = %s, write_uid = %s, write_date = %s "
            "WHERE key = %s",
            (value, ODOO_SUPERUSER_ID, now, key),
        )
        if cr.rowcount == 0:
            cr.execute(
                "INSERT INTO ir_config_parameter "
                "(key, value, create_uid, create_date, write_uid, write_date) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                (key, value, ODOO_SUPERUSER_ID, now, ODOO_SUPERUSER_ID, now),
            )


def _check_params(conn_params):
    if not isinstance(conn_params, ConnectionParams):
        raise InvalidInput(
            f"Connection parameters must be a ConnectionParams, not {type(conn_params).__name__}."
        )


def _check_base_url(base_url):
    if base_url is None:
        return
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        raise InvalidInput(f"Base URL {base_url!r} must start with http:// or https://.")


# --- public API --------------------------------------------------------------


def clone_database(conn_params, template, target, *, strategy=None, base_url=None, handover=None):
    """Copy database ``template`` into a new database ``target``.

    :param ConnectionParams conn_params: the server's PostgreSQL; the user must
        be allowed to create databases and to copy ``template`` (its owner, or
        a superuser).
    :param str strategy: ``"file_copy"``, ``"wal_log"`` or None for
        DEFAULT_STRATEGY; ignored (logged) on PostgreSQL < 15.
    :param str base_url: stored as the clone's ``web.base.url``.
    :param handover: a :class:`.handover.Handover` applied in the same transaction
        as the new identity (no extra connection, no Odoo registry loaded).
    :returns: a :class:`CloneResult`.
    :raises InvalidDatabaseName: a bad name, before anything is connected.
    :raises InvalidInput: another bad argument, before anything is connected.
    :raises DatabaseExists: ``target`` exists already (it is left untouched).
    :raises DatabaseError: the clone failed; no new database is left behind.
    """
    _check_params(conn_params)
    validate_database_name(template)
    if target == template:
        raise InvalidInput(f"The target database {target!r} cannot be its own template.")
    validate_database_name(target, reserved=(template,))
    if strategy is not None and strategy not in STRATEGIES:
        raise InvalidInput(
            f"Unknown clone strategy {strategy!r}: use {', '.join(sorted(STRATEGIES))} or None."
        )
    _check_base_url(base_url)
    if handover is not None and not isinstance(handover, Handover):
        raise InvalidInput("handover must be a Handover")

    started = time.monotonic()
    version, used_strategy = _copy(conn_params, template, target, strategy)
    copied = time.monotonic()

    # From here on the new database exists: every failure drops it.
    values = {
        "database.uuid": str(uuid.uuid4()),
        "database.secret": str(uuid.uuid4()),
        "database.create_date": _utcnow().isoformat(sep=" "),
    }
    if base_url is not None:
        values["web.base.url"] = base_url
    try:
        _set_identity(conn_params, target, values, handover)
    except BaseException as exc:
        _logger.warning(
            "Clone of %s into %s failed (setting its identity), dropping %s",
            template,
            target,
            target,
        )
        cleanup_error = _drop_after_failure(conn_params, target, version)
        if not isinstance(exc, Exception):
            raise
        detail = (_describe(exc) if isinstance(exc, psycopg2.Error) else str(exc)) or repr(exc)
        if cleanup_error:
            detail = f"{detail}; dropping the new database failed too: {cleanup_error}"
        else:
            detail = f"{detail}; the new database was dropped"
        raise DatabaseError(
            _scrub(
                f"Clone of template {template!r} into {target!r} failed "
                f"(setting its identity): {detail}.",
                conn_params,
            )
        ) from exc

    duration = time.monotonic() - started
    _logger.info(
        "Cloned template %s into %s (strategy %s, PostgreSQL %s) in %.3f s (copy %.3f s)",
        template,
        target,
        used_strategy or "none",
        version,
        duration,
        copied - started,
    )
    return CloneResult(
        target=target,
        strategy=used_strategy,
        server_version_num=version,
        duration_s=duration,
        uuid=values["database.uuid"],
        template=template,
    )


def _copy(conn_params, template, target, strategy):
    """CREATE DATABASE ``target`` from ``template``; return (version, strategy used)."""
    where = f"{conn_params.host}:{conn_params.port}"
    failure = f"Cannot clone template {template!r} into {target!r}"
    # Closed before the identity is set: one short session per step.
    with _session(conn_params, MAINTENANCE_DB, failure) as conn, conn.cursor() as cr:
        version = _server_version_num(cr)
        if _exists(cr, target):
            raise DatabaseExists(f"Database {target!r} already exists on {where}.", name=target)
        if not _exists(cr, template):
            raise DatabaseError(f"Template database {template!r} does not exist on {where}.")
        used_strategy = _choose_strategy(strategy, version, template)
        try:
            _create_from_template(cr, conn_params, template, target, used_strategy)
        except psycopg2.Error as exc:
            if _is_duplicate_database(exc):
                raise DatabaseExists(
                    f"Database {target!r} already exists on {where}.", name=target
                ) from None
            raise
    return version, used_strategy


def _set_identity(conn_params, target, values, handover=None):
    """Write ``values`` into the clone's ``ir_config_parameter`` and hand it over, in
    one transaction."""
    # psycopg2 errors go through: clone_database words them with what it undid.
    with _session(conn_params, target, autocommit=False) as conn, conn, conn.cursor() as cr:
        _set_params(cr, values)
        if handover is not None:
            apply_handover(cr, handover)


def _drop(cr, name, version):
    if version < DROP_FORCE_MIN_VERSION:
        _terminate_sessions(cr, name)
        cr.execute(_drop_database_sql(name, version))
        return
    try:
        cr.execute(_drop_database_sql(name, version))
    except psycopg2.errors.InsufficientPrivilege:
        # FORCE refuses to end an autovacuum worker (it has no role) for a role that
        # is not superuser, as on a database just loaded; a plain DROP asks
        # autovacuum to exit and waits for it. Our own sessions are ended first.
        _terminate_sessions(cr, name)
        cr.execute(_drop_database_sql(name, 0))


def _drop_after_failure(conn_params, target, version):
    """Drop a half-made clone; return why it could not be dropped, or None."""
    try:
        with _session(conn_params, MAINTENANCE_DB) as conn, conn.cursor() as cr:
            _drop(cr, target, version)
    except (psycopg2.Error, DatabaseError) as exc:
        reason = _scrub(_describe(exc), conn_params)
        _logger.error("Cannot drop the failed clone %s: %s", target, reason)
        return reason
    _logger.info("Dropped the failed clone %s", target)
    return None


# How long drop_database waits for a CREATE DATABASE it ended to be rolled back.
CREATE_END_WAIT_S = 30.0
_CREATE_END_POLL_S = 0.05


def _creating(cr, name):
    """Pids of the sessions running ``CREATE DATABASE name`` (as this package,
    Odoo or psql write it: quoted or not), among the sessions this role may see."""
    cr.execute(
        "SELECT pid, query FROM pg_stat_activity "
        "WHERE pid <> pg_backend_pid() AND state = 'active' AND query ILIKE %s",
        ("%create%database%",),
    )
    names = [re.escape(f'"{name}"')]
    if name == name.lower():  # unquoted, folded to lower case
        names.append(f"(?i:{re.escape(name)})")
    statement = re.compile(rf"\s*(?i:create\s+database)\s+(?:{'|'.join(names)})(?:[\s;]|$)")
    return [pid for pid, query in cr.fetchall() if statement.match(query or "")]


def _end_creations(cr, name):
    """End the sessions still running ``CREATE DATABASE name``, and wait until they are gone.

    A worker killed in the middle of a clone leaves its CREATE DATABASE running:
    the new database is not visible to other sessions until that statement
    commits, so a drop would find nothing and the clone would appear afterwards.
    Ended, the statement rolls back and leaves nothing. A session gone from
    ``pg_stat_activity`` has aborted its transaction.

    :raises DatabaseError: a session could not be ended (another role's), or did
        not end within CREATE_END_WAIT_S.
    """
    pids = _creating(cr, name)
    for pid in pids:
        try:
            cr.execute("SELECT pg_terminate_backend(%s)", (pid,))
        except psycopg2.errors.InsufficientPrivilege:
            raise DatabaseError(
                f"Cannot drop database {name!r}: session {pid} of another role is creating "
                "it, and this role may not end it."
            ) from None
        _logger.warning("Ended session %s, still creating database %s", pid, name)
    deadline = time.monotonic() + CREATE_END_WAIT_S
    while pids:
        if time.monotonic() >= deadline:
            raise DatabaseError(
                f"Cannot drop database {name!r}: session(s) {pids} creating it did not end "
                f"within {CREATE_END_WAIT_S:g} s."
            )
        time.sleep(_CREATE_END_POLL_S)
        cr.execute("SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,))
        pids = [row[0] for row in cr.fetchall()]


def drop_database(conn_params, name):
    """Drop database ``name``, ending its sessions; return whether it existed.

    Idempotent: a database that is not there is not an error (False). A
    ``CREATE DATABASE`` of that name still running (its client gone, e.g. a
    killed worker) is ended first, so it cannot make the database afterwards.

    :raises InvalidDatabaseName: a bad or system name (``postgres``,
        ``template0``, ``template1``), before anything is connected.
    :raises DatabaseError: the drop failed (e.g. sessions of another role on
        it, or ``name`` owned by another role).
    """
    _check_params(conn_params)
    validate_database_name(name)
    failure = f"Cannot drop database {name!r}"
    with _session(conn_params, MAINTENANCE_DB, failure) as conn, conn.cursor() as cr:
        version = _server_version_num(cr)
        _end_creations(cr, name)
        if not _exists(cr, name):
            return False
        _drop(cr, name, version)
    _logger.info("Dropped database %s", name)
    return True


def database_exists(conn_params, name):
    """Return whether database ``name`` exists on the server.

    :raises InvalidInput: ``name`` is not text.
    :raises DatabaseError: the server cannot be asked.
    """
    _check_params(conn_params)
    if not isinstance(name, str):
        raise InvalidInput(f"A database name must be text, not {type(name).__name__}.")
    failure = f"Cannot look up database {name!r}"
    with _session(conn_params, MAINTENANCE_DB, failure) as conn, conn.cursor() as cr:
        return _exists(cr, name)


def set_connections_allowed(conn_params, name, allowed):
    """Allow or refuse connections to database ``name`` (suspend / resume).

    Refusing also ends the sessions open on it, so its users and the hosting
    Odoo's workers and crons lose it at once (Odoo lists only the databases that
    allow connections). The data is not touched. Idempotent.

    :raises DatabaseError: the database does not exist, or the change failed.
    """
    _check_params(conn_params)
    validate_database_name(name)
    failure = f"Cannot {'resume' if allowed else 'suspend'} database {name!r}"
    with _session(conn_params, MAINTENANCE_DB, failure) as conn, conn.cursor() as cr:
        if not _exists(cr, name):
            raise DatabaseError(f"Database {name!r} does not exist.")
        cr.execute(
            sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
                sql.Identifier(name), sql.SQL("true" if allowed else "false")
            )
        )
        if not allowed:
            _terminate_sessions(cr, name)
    _logger.info("Database %s %s", name, "resumed" if allowed else "suspended")


def connections_allowed(conn_params, name):
    """Whether database ``name`` accepts connections (None when it does not exist)."""
    _check_params(conn_params)
    failure = f"Cannot look up {name!r}"
    with _session(conn_params, MAINTENANCE_DB, failure) as conn, conn.cursor() as cr:
        cr.execute("SELECT datallowconn FROM pg_database WHERE datname = %s", (name,))
        row = cr.fetchone()
    return row[0] if row else None


def run_in_database(conn_params, name, func):
    """Run ``func(cursor)`` in one transaction on database ``name``; return its result.

    Committed when ``func`` returns, rolled back when it raises (its exception goes
    through; a psycopg2 error becomes a :class:`DatabaseError`).
    """
    _check_params(conn_params)
    validate_database_name(name)
    failure = f"Cannot update database {name!r}"
    with _session(conn_params, name, failure, autocommit=False) as conn, conn, conn.cursor() as cr:
        return func(cr)


def set_read_only(conn_params, name, read_only):
    """Freeze database ``name`` for writes, or thaw it (a move's final copy).

    Frozen: every new transaction on it is read-only (``default_transaction_read_only``
    set on the database) and the sessions open on it are ended, so what they had
    not committed is rolled back and what they reconnect with cannot write. Readers
    (its users, ``pg_dump``) still connect. Thawing resets the setting. The setting
    belongs to the database, so ``pg_dump`` does not carry it to a copy. Idempotent;
    thawing a database that is gone does nothing.

    :raises DatabaseError: freezing a database that does not exist, or the change failed.
    """
    _check_params(conn_params)
    validate_database_name(name)
    failure = f"Cannot {'freeze' if read_only else 'thaw'} database {name!r}"
    with _session(conn_params, MAINTENANCE_DB, failure) as conn, conn.cursor() as cr:
        if not _exists(cr, name):
            if read_only:
                raise DatabaseError(f"Database {name!r} does not exist.")
            return
        if read_only:
            cr.execute(
                sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(
                    sql.Identifier(name)
                )
            )
            _terminate_sessions(cr, name)
        else:
            cr.execute(
                sql.SQL("ALTER DATABASE {} RESET default_transaction_read_only").format(
                    sql.Identifier(name)
                )
            )
    _logger.info("Database %s %s", name, "frozen (read-only)" if read_only else "thawed")


def is_read_only(conn_params, name):
    """Whether ``name`` is frozen by :func:`set_read_only` (None when it does not exist)."""
    _check_params(conn_params)
    failure = f"Cannot look up {name!r}"
    with _session(conn_params, MAINTENANCE_DB, failure) as conn, conn.cursor() as cr:
        cr.execute(
            "SELECT d.oid, s.setconfig FROM pg_database d "
            "LEFT JOIN pg_db_role_setting s ON s.setdatabase = d.oid AND s.setrole = 0 "
            "WHERE d.datname = %s",
            (name,),
        )
        row = cr.fetchone()
    if row is None:
        return None
    return "default_transaction_read_only=on" in (row[1] or ())
