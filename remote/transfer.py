"""Moves and copies of an Odoo database and its filestore between two servers.

A pass copies the database and the filestore from a source host to a target host
in one stream: on the source, :data:`~.host_scripts.SEND_SCRIPT` runs ``pg_dump``
and reads the filestore; on the target, :data:`~.host_scripts.RESTORE_SCRIPT`
(the backups' restore program) pipes the SQL to ``psql`` in one transaction and
writes the files. The manager relays the frames from one SSH channel to the other
as they come: nothing is held whole in memory or written to a disk on the way, and
the two hosts need no access to each other.

A move makes two passes. The first runs while the instance is live and copies
everything; the second runs frozen (:func:`.postgres.set_read_only`) and copies the
database again, but of the filestore only the files the target lacks (Odoo's
filestore is content-addressed: a file is never rewritten under the same name), and
removes on the target the files the source no longer has. :func:`verify` then
compares row counts of every table, every sequence's value and the filestore's file
count, bytes and listing on both sides.

No Odoo import here: plain values in, plain results or :mod:`.exceptions` out.
"""

import hashlib
import json
import logging
import posixpath
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from psycopg2 import sql

from . import filestore, postgres, ssh
from .exceptions import InvalidInput, SshError, TransferError, TransferMismatch
from .host_scripts import (
    IDLE_TIMEOUT_S,
    LIST_SCRIPT,
    RESTORE_SCRIPT,
    SEND_SCRIPT,
    RemoteProcess,
    pg_config,
)
from .names import validate_database_name
from .restore import _create_database, _frame, _set_identity

_logger = logging.getLogger(__name__)

__all__ = [
    "Host",
    "PassResult",
    "Verification",
    "copy_pass",
    "installed_modules",
    "prepare_copy",
    "set_base_url",
    "verify",
]

# A listing of 20 000 files is about 1 MB.
LISTING_MAX_BYTES = 64 * 1024 * 1024
REMOVE_BATCH = 500


@dataclass(frozen=True)
class Host:
    """One end of a transfer: a server's PostgreSQL and SSH access, and its programs."""

    pg: postgres.ConnectionParams
    ssh: ssh.SshSettings
    python: str = "python3"
    pg_dump: str = "pg_dump"
    psql: str = "psql"


@dataclass(frozen=True)
class PassResult:
    """What one pass copied. ``files``/``bytes``: the source's whole filestore."""

    dump_size: int
    files: int
    bytes: int
    digest: str
    sent_files: int
    sent_bytes: int
    removed_files: int
    duration_s: float


@dataclass(frozen=True)
class Verification:
    tables: int
    rows: int
    sequences: int
    files: int
    bytes: int


def _listing(session, directory):
    """``{relative path: size}`` of the files under ``directory`` (empty when missing)."""
    result = session.run(
        ["sh", "-c", LIST_SCRIPT, "saas-list", directory], max_output=LISTING_MAX_BYTES
    )
    if result.exit_status != 0 or result.truncated:
        raise TransferError(
            f"cannot list {directory} on {session.target}: "
            f"{result.stderr.strip()[-300:] or 'listing too long'}"
        )
    files = {}
    for line in result.stdout.splitlines():
        rel, _tab, size = line.rpartition("\t")
        if rel:
            files[rel] = int(size)
    return files


def listing_digest(files):
    """The digest SEND_SCRIPT reports for a listing (sorted ``path<TAB>size`` lines)."""
    lines = sorted(f"{rel}\t{size}" for rel, size in files.items())
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def _remove_files(session, directory, rels):
    """Remove the files ``rels`` (relative to ``directory``) on the host."""
    paths = []
    for rel in rels:
        parts = rel.split("/")
        if posixpath.isabs(rel) or any(part in ("", ".", "..") for part in parts):
            raise TransferError(f"refusing to remove {rel!r} from {directory}")
        paths.append(posixpath.join(directory, rel))
    for start in range(0, len(paths), REMOVE_BATCH):
        result = session.run(["rm", "-f", "--", *paths[start : start + REMOVE_BATCH]])
        if result.exit_status != 0:
            raise TransferError(
                f"cannot remove files from {directory} on {session.target}: "
                f"{result.stderr.strip()[-300:]}"
            )


def _relay(sender, receiver, target_session):
    """Copy the sender's stdout to the receiver's stdin; return both results."""
    try:
        for chunk in sender.chunks():
            receiver.send(chunk)
    except SshError:
        status, errors, _result = receiver.finish(timeout=30)
        if errors:
            raise TransferError(f"the copy on {target_session.who} failed: {errors}") from None
        raise
    send_status, send_errors, sent = sender.finish(timeout=60)
    if send_status != 0:
        raise TransferError(
            f"reading the source failed: {send_errors or f'exit status {send_status}'}"
        )
    status, errors, received = receiver.finish(timeout=IDLE_TIMEOUT_S)
    if status != 0:
        raise TransferError(
            f"the copy on {target_session.who} failed: {errors or f'exit status {status}'}"
        )
    return sent, received


def copy_pass(
    source,
    target,
    *,
    database,
    source_dir,
    target_database,
    target_dir,
    replace=False,
    idle_timeout=IDLE_TIMEOUT_S,
):
    """Copy ``database`` and its filestore from ``source`` to ``target`` (two :class:`Host`).

    The target database is created empty and loaded in one transaction; with
    ``replace``, an earlier pass's copy of it is dropped first, and only the files
    the target lacks are sent (those it has that the source has not are removed).
    Without ``replace`` an existing target database is refused
    (:class:`DatabaseExists`). The source is only read.

    :returns: a :class:`PassResult`.
    :raises DatabaseError, SshError, TransferError: the pass failed; what it made is
        left for the caller, who journalled it, to remove.
    """
    for name in (database, target_database):
        validate_database_name(name)
    source_dir = filestore.check_path(source_dir)
    target_dir = filestore.check_path(target_dir, for_removal=True)
    if source.pg == target.pg and database == target_database:
        raise InvalidInput("a database cannot be copied onto itself")
    started = time.monotonic()
    with ssh.SshSession(source.ssh) as source_session, ssh.SshSession(target.ssh) as target_session:
        have = _listing(target_session, target_dir) if replace else {}
        if have:
            gone = set(have) - set(_listing(source_session, source_dir))
            _remove_files(target_session, target_dir, sorted(gone))
            for rel in gone:
                del have[rel]
        else:
            gone = ()
        if replace:
            postgres.drop_database(target.pg, target_database)
        _create_database(target.pg, target_database)
        receiver = RemoteProcess(
            target_session,
            [target.python, "-c", RESTORE_SCRIPT, "saas-restore", target.psql, target_dir],
            idle_timeout,
        )
        try:
            config = pg_config(target.pg, database=target_database)
            receiver.send(_frame(b"C", json.dumps(config).encode()))
            sender = RemoteProcess(
                source_session,
                [source.python, "-c", SEND_SCRIPT, "saas-send", database, source_dir,
                 source.pg_dump],
                idle_timeout,
            )  # fmt: skip
            try:
                sender.send(json.dumps(pg_config(source.pg, have=have)).encode() + b"\n")
                sent, _received = _relay(sender, receiver, target_session)
            finally:
                sender.close()
        finally:
            receiver.close()
    duration = time.monotonic() - started
    _logger.info(
        "Copied %s to %s (%s bytes of SQL, %s of %s files sent, %s removed) in %.2f s",
        database,
        target_database,
        sent.get("dump_size"),
        sent.get("sent_files"),
        sent.get("files"),
        len(gone),
        duration,
    )
    return PassResult(
        dump_size=sent.get("dump_size", 0),
        files=sent.get("files", 0),
        bytes=sent.get("bytes", 0),
        digest=sent.get("digest", ""),
        sent_files=sent.get("sent_files", 0),
        sent_bytes=sent.get("sent_bytes", 0),
        removed_files=len(gone),
        duration_s=duration,
    )


# --- verification ----------------------------------------------------------------


def _counts(cr):
    """``({table: rows}, {sequence: last_value})`` of the user schemas."""
    cr.execute(
        "SELECT n.nspname, c.relname FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
        "AND n.nspname NOT LIKE 'pg_toast%%' ORDER BY 1, 2"
    )
    tables = cr.fetchall()
    rows = {}
    if tables:
        query = sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT {}, count(*) FROM {}").format(
                sql.Literal(f"{schema}.{name}"), sql.Identifier(schema, name)
            )
            for schema, name in tables
        )
        cr.execute(query)
        rows = dict(cr.fetchall())
    cr.execute(
        "SELECT schemaname || '.' || sequencename, last_value FROM pg_sequences "
        "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
    )
    return rows, dict(cr.fetchall())


def _database_counts(conn_params, database):
    """``(rows, sequences, referenced files)`` of ``database``; see :func:`_counts`."""
    failure = f"Cannot count the rows of {database!r}"
    with postgres._session(conn_params, database, failure) as conn, conn.cursor() as cr:
        cr.execute("SET statement_timeout = 0")
        rows, sequences = _counts(cr)
        cr.execute("SELECT to_regclass('ir_attachment')")
        if cr.fetchone()[0] is None:
            return rows, sequences, None
        cr.execute("SELECT DISTINCT store_fname FROM ir_attachment WHERE store_fname IS NOT NULL")
        return rows, sequences, {row[0] for row in cr.fetchall()}


def _differences(label, left, right, limit=5):
    diffs = []
    for key in sorted(set(left) | set(right)):
        if left.get(key) != right.get(key):
            diffs.append(f"{key}: {left.get(key)} → {right.get(key)}")
    if not diffs:
        return []
    shown = ", ".join(diffs[:limit])
    more = f" and {len(diffs) - limit} more" if len(diffs) > limit else ""
    return [f"{label} differ ({shown}{more})"]


def _attached(files, referenced):
    """The files that hold data: those an attachment names (all but Odoo's garbage
    collector's ``checklist/`` markers when the database has no attachment table)."""
    if referenced is None:
        return {rel: size for rel, size in files.items() if not rel.startswith("checklist/")}
    return {rel: size for rel, size in files.items() if rel in referenced}


def _list_dir(settings, directory):
    with ssh.SshSession(settings) as session:
        return _listing(session, filestore.check_path(directory))


def verify(source, target, *, database, source_dir, target_database, target_dir):
    """Compare the copy with its source; a :class:`Verification`, or TransferMismatch.

    Row counts of every table, the value of every sequence, and the filestore's
    files that attachments name: count, bytes and the listing of names and sizes.
    Files no attachment names are left out on both sides: Odoo writes an
    attachment's file (and its garbage-collector marker) before its row, so a
    write refused by the freeze leaves an orphan file on the source. Meant for a
    frozen source: a live one changes meanwhile. The four reads run at once.
    """
    for name in (database, target_database):
        validate_database_name(name)
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="saas-verify") as pool:
        futures = [
            pool.submit(_database_counts, source.pg, database),
            pool.submit(_database_counts, target.pg, target_database),
            pool.submit(_list_dir, source.ssh, source_dir),
            pool.submit(_list_dir, target.ssh, target_dir),
        ]
        results = [future.result() for future in futures]
    (source_rows, source_sequences, referenced), (target_rows, target_sequences, _refs) = results[
        :2
    ]
    source_files = _attached(results[2], referenced)
    target_files = _attached(results[3], referenced)
    problems = _differences("row counts", source_rows, target_rows)
    problems += _differences("sequences", source_sequences, target_sequences)
    source_bytes, target_bytes = sum(source_files.values()), sum(target_files.values())
    if len(source_files) != len(target_files) or source_bytes != target_bytes:
        problems.append(
            f"filestores differ ({len(source_files)} files, {source_bytes} bytes → "
            f"{len(target_files)} files, {target_bytes} bytes)"
        )
    elif listing_digest(source_files) != listing_digest(target_files):
        problems.append("filestores differ (same count and bytes, other names)")
    if problems:
        raise TransferMismatch(f"the copy of {database} differs from it: " + "; ".join(problems))
    return Verification(
        tables=len(source_rows),
        rows=sum(source_rows.values()),
        sequences=len(source_sequences),
        files=len(source_files),
        bytes=source_bytes,
    )


# --- the copy's own settings --------------------------------------------------


def installed_modules(conn_params, database):
    """The modules installed in ``database`` (as Odoo's neutralisation reads them)."""
    validate_database_name(database)
    failure = f"Cannot read the modules of {database!r}"
    with postgres._session(conn_params, database, failure) as conn, conn.cursor() as cr:
        cr.execute(
            "SELECT name FROM ir_module_module "
            "WHERE state IN ('installed', 'to upgrade', 'to remove') ORDER BY name"
        )
        return [row[0] for row in cr.fetchall()]


def available_modules(conn_params, database):
    """The modules the Odoo serving ``database`` knows (any state but uninstallable)."""
    validate_database_name(database)
    failure = f"Cannot read the modules of {database!r}"
    with postgres._session(conn_params, database, failure) as conn, conn.cursor() as cr:
        cr.execute("SELECT name FROM ir_module_module WHERE state != 'uninstallable'")
        return sorted(row[0] for row in cr.fetchall())


def prepare_copy(conn_params, database, *, neutralize_queries=(), base_url=None):
    """Make a copy an instance of its own: neutralised, new identity, its own URL.

    ``neutralize_queries``: the SQL of Odoo's neutralisation for its installed
    modules (``odoo.modules.neutralize``, read by the caller from its own tree), run
    in one transaction with the new identity; returns the new ``database.uuid``.
    """
    validate_database_name(database)
    if neutralize_queries:
        failure = f"Cannot neutralise {database!r}"
        with (
            postgres._session(conn_params, database, failure, autocommit=False) as conn,
            conn,
            conn.cursor() as cr,
        ):
            for query in neutralize_queries:
                cr.execute(query)
    return _set_identity(conn_params, database, True, base_url)


def set_base_url(conn_params, database, base_url):
    """Set ``web.base.url`` of ``database`` (a moved instance answers at its new URL)."""
    if not str(base_url).startswith(("http://", "https://")):
        raise InvalidInput(f"Base URL {base_url!r} must start with http:// or https://.")
    validate_database_name(database)
    _set_identity(conn_params, database, False, base_url)


def missing_modules(source_pg, database, target_pg, known_from):
    """The modules installed in ``database`` that the target's Odoo does not have.

    What the target has is read from ``known_from``, a database of that server (a
    template or an instance): every module its Odoo listed there.
    """
    wanted = set(installed_modules(source_pg, database))
    return sorted(wanted - set(available_modules(target_pg, known_from)))
