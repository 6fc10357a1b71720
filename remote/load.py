"""The load of a managed server and of its instances, collected over SSH and PostgreSQL.

(Over 500 lines: the SSH half (disk, filestore sizes) and the PostgreSQL half
(connections, replicas, instance activity) share one target and one bounded
collection, which is what keeps a dead half from holding up the other.)

What is measured, and from where:

* over SSH (one session per server): the disk of the data directory
  (``df -P -B1``, parsed strictly by :func:`parse_df`) and the size of each
  instance's filestore (``du -sb``, one command for all instances of the server);
* over the server's PostgreSQL: its connections and ``max_connections``,
  whether it is a primary, its replicas and their lag (``pg_stat_replication``),
  the size of each instance's database, and, from each instance's own database,
  its active internal users (members of ``base.group_user``) and their last login
  (``res_users_log``).

Each part fails on its own: a server whose SSH is down still gets its PostgreSQL
figures and the other way round; what could not be measured is ``None``
(*unknown*), never zero, with the reason in an ``*_error`` field.

:func:`collect_many` measures many servers at once in a bounded thread pool and
returns within its ``timeout`` whatever happens: a server whose collection did not
finish in time is reported *unknown* (``ServerLoad.collected`` False), which says
nothing about whether it is up. Nothing is called back: the Odoo cron writes the
results with the ORM in its own thread afterwards.

Values reach SQL as query parameters only and shell commands as quoted
positional arguments only; no message or log line carries a password or a key.
"""

import concurrent.futures
import contextlib
import datetime
import logging
import math
import posixpath
import re
import threading
import time
from dataclasses import dataclass

from . import postgres as _pg
from .exceptions import InvalidAnswer, InvalidInput, RemoteError
from .filestore import check_path
from .names import DATABASE_NAME_RE
from .ssh import SshSession, SshSettings

_logger = logging.getLogger(__name__)

__all__ = [
    "DiskUsage",
    "InstanceLoad",
    "InvalidAnswer",
    "LoadTarget",
    "PostgresLoad",
    "Replica",
    "ServerLoad",
    "collect",
    "collect_many",
    "collect_part",
    "combine_parts",
    "disk_usage",
    "filestore_sizes",
    "instance_activity",
    "parse_df",
    "postgres_load",
]

# No filesystem a data directory lives on is larger than this (1 EiB): a bigger
# figure is a broken answer, not a disk.
MAX_DISK_BYTES = 1 << 60
# df -P answers one header and one line; du one line per filestore.
_DF_MAX_OUTPUT = 4096
_DU_LINE_BYTES = 300
_MAX_ERROR_CHARS = 500
# Statements of a load collection are short lookups.
STATEMENT_TIMEOUT_MS = 10_000
# Head room over ``timeout`` before collect_many stops waiting (a bug guard).
_SWEEP_GRACE = 5.0

_DF_HEADER = re.compile(r"Filesystem\s+1-blocks\s+Used\s+Available\s+Capacity\s+Mounted on")
_DF_LINE = re.compile(
    r"(?P<fs>\S.*?)\s+(?P<total>\d{1,20})\s+(?P<used>\d{1,20})\s+(?P<avail>\d{1,20})"
    r"\s+(?P<pct>\d{1,3}%|-)\s+(?P<mount>/.*)"
)
_DU_LINE = re.compile(r"(\d{1,20})\t(.+)")

# Filestore sizes of the databases given as "$2"...: "<bytes>\t<name>" per line;
# exit 3 when the data directory has no filestore directory.
_DU_SCRIPT = (
    'cd -- "$1/filestore" 2>/dev/null || exit 3; shift; '
    'for d in "$@"; do '
    'if [ -d "$d" ]; then du -sb -- "$d" || exit 4; else printf "0\\t%s\\n" "$d"; fi; '
    "done"
)

# Active internal users (members of base.group_user) and their latest login.
_ACTIVITY_SQL = """
SELECT count(*), max(last_login.at)
  FROM res_users u
  JOIN res_groups_users_rel rel ON rel.uid = u.id
  JOIN ir_model_data xid ON xid.res_id = rel.gid
       AND xid.model = 'res.groups' AND xid.module = 'base' AND xid.name = 'group_user'
  LEFT JOIN LATERAL (
       SELECT max(log.create_date) AS at FROM res_users_log log WHERE log.create_uid = u.id
  ) last_login ON true
 WHERE u.active
"""

_SERVER_SQL = """
SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),
       current_setting('max_connections')::int,
       pg_is_in_recovery(),
       current_setting('server_version_num')::int
"""

_REPLICAS_SQL = """
SELECT application_name, host(client_addr), state, sync_state,
       pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint,
       extract(epoch FROM replay_lag)::float8
  FROM pg_stat_replication
 ORDER BY application_name, pid
"""

_SIZES_SQL = "SELECT datname, pg_database_size(datname) FROM pg_database WHERE datname = ANY(%s)"


# --- results -----------------------------------------------------------------------


@dataclass(frozen=True)
class DiskUsage:
    """The filesystem holding ``path``, in bytes (``free_bytes``: what Odoo may still use)."""

    path: str
    total_bytes: int
    used_bytes: int
    free_bytes: int

    @property
    def free_percent(self):
        return self.free_bytes * 100 / self.total_bytes

    @property
    def used_percent(self):
        return 100 - self.free_percent


@dataclass(frozen=True)
class Replica:
    """One standby streaming from a primary (a row of ``pg_stat_replication``).

    ``lag_bytes``: WAL the standby has not replayed yet; ``replay_lag_s``:
    PostgreSQL's measured replay delay, None when it has nothing to measure
    (caught up and idle) or the role may not see it. Columns hidden from a role
    without ``pg_monitor`` are None.
    """

    name: str
    client_addr: str | None
    state: str | None
    sync_state: str | None
    lag_bytes: int | None
    replay_lag_s: float | None


@dataclass(frozen=True)
class PostgresLoad:
    """A server's PostgreSQL: client connections, its limit, its role and replicas."""

    connections: int
    max_connections: int
    is_primary: bool
    server_version_num: int
    replicas: tuple = ()


@dataclass(frozen=True)
class InstanceLoad:
    """One instance; a figure that could not be measured is None, with ``errors`` saying why.

    ``last_login`` is naive UTC (as Odoo stores datetimes), None also when no
    internal user ever logged in.
    """

    database: str
    db_size_bytes: int | None = None
    filestore_bytes: int | None = None
    user_count: int | None = None
    last_login: datetime.datetime | None = None
    errors: tuple = ()


@dataclass(frozen=True)
class LoadTarget:
    """One server for :func:`collect`: its key, how to reach it, its instances' databases.

    ``ssh`` (with ``data_dir``) or ``postgres`` may be None: that part is then
    unknown, with the reason.
    """

    key: object
    ssh: SshSettings | None = None
    data_dir: str | None = None
    postgres: _pg.ConnectionParams | None = None
    databases: tuple = ()

    def __post_init__(self):
        if self.ssh is not None and not isinstance(self.ssh, SshSettings):
            raise InvalidInput("LoadTarget.ssh must be SshSettings or None")
        if self.postgres is not None:
            _check_params(self.postgres)
        if isinstance(self.databases, str):
            raise InvalidInput("LoadTarget.databases is a list of names, not one string")
        object.__setattr__(self, "databases", _check_databases(self.databases))


@dataclass(frozen=True)
class ServerLoad:
    """What :func:`collect` measured on one server.

    ``disk`` / ``postgres`` are None when unknown, with ``disk_error`` /
    ``postgres_error``. ``collected`` is False when the collection did not run or
    finish in time: then everything is unknown, and the server's health is not
    concerned.
    """

    key: object
    disk: DiskUsage | None = None
    disk_error: str | None = None
    postgres: PostgresLoad | None = None
    postgres_error: str | None = None
    instances: tuple = ()
    collected: bool = True
    duration_ms: int = 0

    def instance(self, database):
        """The :class:`InstanceLoad` of ``database`` (KeyError when it was not asked for)."""
        for item in self.instances:
            if item.database == database:
                return item
        raise KeyError(database)

    @property
    def complete(self):
        """True when every figure was measured."""
        return (
            self.collected
            and self.disk is not None
            and self.postgres is not None
            and not any(item.errors for item in self.instances)
        )


def _short(exc):
    text = str(exc) or type(exc).__name__
    return text[:_MAX_ERROR_CHARS]


# --- SSH: disk and filestores ------------------------------------------------------


def parse_df(output, path):
    """The :class:`DiskUsage` in the output of ``df -P -B1 <path>``.

    Strict: a POSIX header, then exactly one line of four whole numbers where
    ``used`` and ``available`` do not exceed a positive ``total`` below
    :data:`MAX_DISK_BYTES`. Anything else raises :class:`InvalidAnswer`
    naming what was wrong.
    """
    if not isinstance(output, str):
        raise InvalidAnswer(f"df of {path}: no text answer")
    lines = [line.rstrip() for line in output.strip("\n").split("\n")]
    if len(lines) != 2 or not _DF_HEADER.fullmatch(lines[0].strip()):
        raise InvalidAnswer(
            f"df of {path}: not a 'df -P -B1' answer (expected a header and one line, "
            f"got {len(lines)} line(s))"
        )
    match = _DF_LINE.fullmatch(lines[1].strip())
    if not match:
        raise InvalidAnswer(f"df of {path}: unreadable line {lines[1][:200]!r}")
    total, used, avail = (int(match.group(name)) for name in ("total", "used", "avail"))
    if total <= 0:
        raise InvalidAnswer(f"df of {path}: the filesystem reports a size of {total} bytes")
    if total > MAX_DISK_BYTES:
        raise InvalidAnswer(
            f"df of {path}: a size of {total} bytes is beyond any disk (over 1 EiB): refused"
        )
    if used > total or avail > total:
        raise InvalidAnswer(
            f"df of {path}: used ({used}) or available ({avail}) exceeds the size ({total})"
        )
    return DiskUsage(path=path, total_bytes=total, used_bytes=used, free_bytes=avail)


def disk_usage(session, data_dir, *, timeout=None):
    """The disk of ``data_dir`` on the host of ``session`` (an open :class:`SshSession`).

    :raises InvalidInput: a bad path, before anything is run.
    :raises SshError: the command could not run or failed.
    :raises InvalidAnswer: its answer is not a valid measurement.
    """
    path = check_path(data_dir)
    result = session.run(
        ["env", "LC_ALL=C", "df", "-P", "-B1", "--", path],
        timeout=timeout,
        max_output=_DF_MAX_OUTPUT,
    )
    if result.exit_status != 0:
        reason = result.stderr.strip().splitlines()[-1:] or [f"exit status {result.exit_status}"]
        raise InvalidAnswer(f"df of {path} on {session.target} failed: {reason[0][:300]}")
    if result.truncated:
        raise InvalidAnswer(f"df of {path} on {session.target}: answer too long, refused")
    return parse_df(result.stdout, path)


def _check_databases(databases):
    names = tuple(databases)
    for name in names:
        if not isinstance(name, str) or not DATABASE_NAME_RE.fullmatch(name):
            raise InvalidInput(f"{name!r} is not a database name")
    if len(set(names)) != len(names):
        raise InvalidInput("a database is listed twice")
    return names


def filestore_sizes(session, data_dir, databases, *, timeout=None):
    """``{database: bytes}`` of ``<data_dir>/filestore/<database>``, in one command.

    A database without a filestore directory has 0 bytes (Odoo makes it at the
    first attachment).

    :raises InvalidAnswer: the data directory has no ``filestore``, ``du``
        failed, or its answer does not name exactly the databases asked for.
    """
    path = check_path(data_dir)
    names = _check_databases(databases)
    if not names:
        return {}
    result = session.run(
        ["sh", "-c", _DU_SCRIPT, "saas-du", path, *names],
        timeout=timeout,
        max_output=_DU_LINE_BYTES * len(names) + 1024,
    )
    where = f"{posixpath.join(path, 'filestore')} on {session.target}"
    if result.exit_status == 3:
        raise InvalidAnswer(f"there is no filestore directory {where}")
    if result.exit_status != 0:
        reason = result.stderr.strip().splitlines()[-1:] or [f"exit status {result.exit_status}"]
        raise InvalidAnswer(f"du of the filestores in {where} failed: {reason[0][:300]}")
    if result.truncated:
        raise InvalidAnswer(f"du of the filestores in {where}: answer too long, refused")
    sizes = {}
    for line in result.stdout.splitlines():
        match = _DU_LINE.fullmatch(line)
        if not match or match.group(2) not in names or match.group(2) in sizes:
            raise InvalidAnswer(f"du of the filestores in {where}: unreadable line {line[:200]!r}")
        size = int(match.group(1))
        if size > MAX_DISK_BYTES:
            raise InvalidAnswer(f"du of {match.group(2)} in {where}: {size} bytes, refused")
        sizes[match.group(2)] = size
    if set(sizes) != set(names):
        raise InvalidAnswer(f"du of the filestores in {where}: some databases are missing")
    return sizes


# --- PostgreSQL --------------------------------------------------------------------


@contextlib.contextmanager
def _cursor(params, dbname, failure):
    with _pg._session(params, dbname, failure) as conn, conn.cursor() as cr:
        cr.execute(
            "SELECT set_config('statement_timeout', %s, false)", (str(STATEMENT_TIMEOUT_MS),)
        )
        yield cr


def _check_params(params):
    if not isinstance(params, _pg.ConnectionParams):
        raise InvalidInput(
            f"Connection parameters must be a ConnectionParams, not {type(params).__name__}."
        )


def postgres_load(params, databases=()):
    """``(PostgresLoad, {database: size in bytes})`` from the ``postgres`` database.

    A database of ``databases`` that does not exist is absent from the sizes.
    Replicas are listed on a primary only (a standby's list is empty).

    :raises DatabaseError: the server cannot be reached or queried.
    """
    _check_params(params)
    names = _check_databases(databases)
    with _cursor(params, _pg.MAINTENANCE_DB, "Cannot read the server's load") as cr:
        cr.execute(_SERVER_SQL)
        connections, max_connections, in_recovery, version = cr.fetchone()
        replicas = ()
        if not in_recovery:
            cr.execute(_REPLICAS_SQL)
            replicas = tuple(
                Replica(
                    name=row[0] or "",
                    client_addr=row[1],
                    state=row[2],
                    sync_state=row[3],
                    lag_bytes=None if row[4] is None else max(int(row[4]), 0),
                    replay_lag_s=row[5],
                )
                for row in cr.fetchall()
            )
        sizes = {}
        if names:
            cr.execute(_SIZES_SQL, (list(names),))
            sizes = {name: int(size) for name, size in cr.fetchall()}
    load = PostgresLoad(
        connections=int(connections),
        max_connections=int(max_connections),
        is_primary=not in_recovery,
        server_version_num=int(version),
        replicas=replicas,
    )
    return load, sizes


def instance_activity(params, database):
    """``(active internal users, last login or None)`` of an Odoo database.

    :raises DatabaseError: unreachable, or not an Odoo database (no ``res_users``).
    """
    _check_params(params)
    (name,) = _check_databases((database,))
    with _cursor(params, name, f"Cannot read the users of database {name!r}") as cr:
        cr.execute(_ACTIVITY_SQL)
        count, last_login = cr.fetchone()
    return int(count), last_login


# --- one server --------------------------------------------------------------------


@dataclass(frozen=True)
class _SshPart:
    disk: DiskUsage | None = None
    disk_error: str | None = None
    filestores: dict | None = None
    filestores_error: str | None = None


@dataclass(frozen=True)
class _PostgresPart:
    load: PostgresLoad | None = None
    error: str | None = None
    sizes: dict | None = None
    activity: dict | None = None  # {db: (users, last login) or the error text}


def _ssh_part(target, command_timeout):
    if target.ssh is None or not target.data_dir:
        reason = "no SSH access set" if target.ssh is None else "no data directory set"
        return _SshPart(disk_error=reason, filestores_error=reason)
    disk = disk_error = sizes = sizes_error = None
    try:
        with SshSession(target.ssh) as session:
            try:
                disk = disk_usage(session, target.data_dir, timeout=command_timeout)
            except RemoteError as exc:
                disk_error = _short(exc)
            try:
                sizes = filestore_sizes(
                    session, target.data_dir, target.databases, timeout=command_timeout
                )
            except RemoteError as exc:
                sizes_error = _short(exc)
    except RemoteError as exc:
        disk_error = sizes_error = _short(exc)
    return _SshPart(disk, disk_error, sizes, sizes_error)


def _postgres_part(target):
    if target.postgres is None:
        return _PostgresPart(error="no PostgreSQL access set")
    try:
        load, sizes = postgres_load(target.postgres, target.databases)
    except RemoteError as exc:
        return _PostgresPart(error=_short(exc))
    activity = {}
    for name in target.databases:
        if name not in sizes:
            activity[name] = f"database {name!r} does not exist on the server"
            continue
        try:
            activity[name] = instance_activity(target.postgres, name)
        except RemoteError as exc:
            activity[name] = _short(exc)
    return _PostgresPart(load=load, sizes=sizes, activity=activity)


def _instance(name, ssh_part, pg_part):
    errors = []
    filestores = ssh_part.filestores or {}
    if name not in filestores:
        errors.append(f"filestore: {ssh_part.filestores_error or 'not measured'}")
    activity = (pg_part.activity or {}).get(name)
    users = last_login = None
    if isinstance(activity, tuple):
        users, last_login = activity
    else:
        errors.append(f"database: {pg_part.error or activity or 'not measured'}")
    return InstanceLoad(
        database=name,
        db_size_bytes=(pg_part.sizes or {}).get(name),
        filestore_bytes=filestores.get(name),
        user_count=users,
        last_login=last_login,
        errors=tuple(errors),
    )


def _combine(target, ssh_part, pg_part, started, collected=True):
    return ServerLoad(
        key=target.key,
        disk=ssh_part.disk,
        disk_error=ssh_part.disk_error,
        postgres=pg_part.load,
        postgres_error=pg_part.error,
        instances=tuple(_instance(name, ssh_part, pg_part) for name in target.databases),
        collected=collected,
        duration_ms=round((time.monotonic() - started) * 1000),
    )


def _check_target(target):
    if not isinstance(target, LoadTarget):
        raise InvalidInput(f"a load target is a LoadTarget, not {type(target).__name__}")
    return target


def _check_seconds(name, value):
    if value is not None and (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise InvalidInput(f"{name} must be a positive number of seconds.")


def collect(target, *, command_timeout=30.0):
    """Measure one server; return a :class:`ServerLoad`, never raising for its faults.

    SSH and PostgreSQL are asked one after the other; each part's failure leaves
    its figures unknown (None) with the reason. ``command_timeout`` bounds each
    SSH command; connecting is bounded by ``target.ssh.connect_timeout`` and
    ``target.postgres.connect_timeout``.

    :raises InvalidInput: ``target`` is malformed, before anything is asked.
    """
    _check_target(target)
    _check_seconds("command_timeout", command_timeout)
    started = time.monotonic()
    ssh_part = _ssh_part(target, command_timeout)
    pg_part = _postgres_part(target)
    return _combine(target, ssh_part, pg_part, started)


# --- many servers ------------------------------------------------------------------


def _guarded(part, target, *args):
    """One part of one server; an unexpected exception becomes that part's error."""
    try:
        if part == "ssh":
            return _ssh_part(target, *args)
        return _postgres_part(target)
    except Exception as exc:
        # A bug must cost one server its figures, not the sweep the others'.
        _logger.exception("Load collection (%s) of server %s failed unexpectedly", part, target.key)
        reason = f"unexpected error: {type(exc).__name__}: {_short(exc)}"
        if part == "ssh":
            return _SshPart(disk_error=reason, filestores_error=reason)
        return _PostgresPart(error=reason)


def collect_part(target, part, *, command_timeout=30.0):
    """One part of one server's collection, ``"ssh"`` or ``"pg"``, never raising.

    For a caller that runs the parts in a pool of its own (``remote.sweep``); the
    two parts of a target then make its :class:`ServerLoad` with :func:`combine_parts`.
    """
    _check_target(target)
    if part not in ("ssh", "pg"):
        raise InvalidInput(f"a load part is 'ssh' or 'pg', not {part!r}")
    if part == "ssh":
        return _guarded(part, target, command_timeout)
    return _guarded(part, target)


def combine_parts(target, ssh_part, pg_part, *, started, late_reason):
    """The :class:`ServerLoad` of ``target`` from its two parts (:func:`collect_part`).

    A part that is None was not collected in time: its figures are unknown with
    ``late_reason``, and the server's ``collected`` is False. ``started`` is the
    ``time.monotonic()`` the collection began at.
    """
    return _combine(
        target,
        ssh_part or _SshPart(disk_error=late_reason, filestores_error=late_reason),
        pg_part or _PostgresPart(error=late_reason),
        started,
        collected=ssh_part is not None and pg_part is not None,
    )


def collect_many(targets, *, max_workers=8, timeout=None, command_timeout=30.0):
    """Measure many servers concurrently; return ``{key: ServerLoad}`` for every target.

    Each server's SSH part and PostgreSQL part run as two tasks of the pool, so a
    dead SSH does not delay the PostgreSQL figures.

    :param targets: :class:`LoadTarget` items with distinct, hashable keys.
    :param max_workers: the most tasks running at once.
    :param timeout: the total time allowed (seconds). When it runs out, the
        parts not measured yet are *unknown* (their error says so, and the
        server's ``collected`` is False); tasks still running are abandoned
        (each ends by its own timeouts). None: what the pool needs at worst.
    :raises InvalidInput: malformed ``targets`` or arguments, before anything starts.
    """
    found = [_check_target(target) for target in targets]
    keys = [target.key for target in found]
    try:
        distinct = len(set(keys))
    except TypeError:
        raise InvalidInput("Target keys must be hashable.") from None
    if distinct != len(keys):
        raise InvalidInput("Two targets have the same key.")
    if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
        raise InvalidInput("max_workers must be a positive integer.")
    _check_seconds("timeout", timeout)
    _check_seconds("command_timeout", command_timeout)
    if not found:
        return {}
    workers = min(max_workers, 2 * len(found))
    if timeout is None:
        slowest = max(
            max(
                (t.ssh.connect_timeout if t.ssh else 0) + 2 * command_timeout,
                t.postgres.connect_timeout * (1 + len(t.databases)) if t.postgres else 0,
            )
            for t in found
        )
        timeout = math.ceil(2 * len(found) / workers) * (slowest + _SWEEP_GRACE)

    started = time.monotonic()
    parts = {}
    executor = concurrent.futures.ThreadPoolExecutor(
        max_workers=workers, thread_name_prefix="saas-load"
    )
    try:
        # Every thread of the pool is started before any work is given: a thread
        # started while hundreds of others run waits its turn for the interpreter,
        # and a sweep of 1000 servers would spend its budget starting threads.
        gate = threading.Event()
        for _n in range(workers):
            executor.submit(gate.wait, timeout)
        gate.set()
        futures = {}
        for target in found:
            futures[executor.submit(_guarded, "ssh", target, command_timeout)] = (target, "ssh")
            futures[executor.submit(_guarded, "pg", target)] = (target, "pg")
        # Measured from the start: starting the threads counts against the budget.
        remaining = max(timeout - (time.monotonic() - started), 0)
        done, _pending = concurrent.futures.wait(futures, timeout=remaining)
        for future in done:
            target, part = futures[future]
            parts[target.key, part] = future.result()
    finally:
        executor.shutdown(wait=False, cancel_futures=True)

    late_reason = f"not collected within the sweep's {timeout:g} s"
    results = {
        target.key: combine_parts(
            target,
            parts.get((target.key, "ssh")),
            parts.get((target.key, "pg")),
            started=started,
            late_reason=late_reason,
        )
        for target in found
    }
    late = sum(not result.collected for result in results.values())
    if late:
        _logger.warning(
            "Load sweep of %d servers: %d not wholly collected within %g s (left unknown)",
            len(found),
            late,
            timeout,
        )
    return results
