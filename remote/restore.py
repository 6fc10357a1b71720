"""Restore of a backup made by :mod:`.backup`, and scratch restores that check one.

A restore reads the object twice: first a streaming pass that checks its sha256
(nothing is made on a mismatch), then the zip itself (random access, each
member's CRC checked): ``dump.sql`` is piped to ``psql --single-transaction -v
ON_ERROR_STOP=1`` on the host, the filestore goes into a hidden sibling of its
target (:func:`filestore.partial_copy_path`) renamed once all is in place. The
database is created empty as Odoo creates it (``template0``, ``LC_COLLATE 'C'``)
under the name the caller gives (never an existing one) and, with
``new_identity``, gets a new ``database.uuid``/``database.secret`` (and
``web.base.url``) as :func:`postgres.clone_database` gives clones. Any failure
drops the database and removes the hidden directory, so nothing half-made stays;
the caller journals both names before the call (a killed worker's leftovers are
then known).
"""

import json
import logging
import struct
import time
import uuid
import zipfile
import zlib
from dataclasses import dataclass

import psycopg2
from psycopg2 import sql

from . import filestore, postgres
from .backup import manifest_of, open_backup_zip, verify
from .exceptions import (
    BackupCorrupted,
    BackupError,
    DatabaseError,
    DatabaseExists,
    InvalidInput,
    RemoteError,
    RemotePathExists,
    SshError,
)
from .host_scripts import IDLE_TIMEOUT_S, RENAME_SCRIPT, RESTORE_SCRIPT, RemoteProcess, pg_config
from .names import validate_database_name
from .storage import READ_CHUNK, check_key

_logger = logging.getLogger(__name__)

__all__ = ["RestoreResult", "restore_backup", "scratch_restore"]


@dataclass(frozen=True)
class RestoreResult:
    database: str
    filestore_dir: str | None  # None when the backup holds no filestore
    filestore_files: int
    size: int
    sha256: str
    manifest: dict
    uuid: str | None
    duration_s: float


def _frame(kind, payload=b""):
    return struct.pack(">cQ", kind, len(payload)) + payload


def _filestore_members(archive):
    members = []
    for info in archive.infolist():
        name = info.filename
        if not name.startswith("filestore/") or info.is_dir():
            continue
        rel = name[len("filestore/") :]
        parts = rel.split("/")
        if not rel or any(part in ("", ".", "..") for part in parts) or "\\" in rel:
            raise BackupCorrupted(f"the backup holds a bad filestore member {name!r}")
        members.append((rel, info))
    return members


def _create_database(conn_params, database):
    failure = f"Cannot create database {database!r}"
    where = f"{conn_params.host}:{conn_params.port}"
    with (
        postgres._session(conn_params, postgres.MAINTENANCE_DB, failure) as conn,
        conn.cursor() as cr,
    ):
        if postgres._exists(cr, database):
            raise DatabaseExists(f"Database {database!r} already exists on {where}.", name=database)
        try:
            # As Odoo's own restore creates it (_create_empty_database).
            cr.execute(
                sql.SQL(
                    "CREATE DATABASE {} ENCODING 'unicode' LC_COLLATE 'C' TEMPLATE template0"
                ).format(sql.Identifier(database))
            )
        except psycopg2.Error as exc:
            if postgres._is_duplicate_database(exc):
                raise DatabaseExists(
                    f"Database {database!r} already exists on {where}.", name=database
                ) from None
            raise


def _send_members(process, archive, members):
    """Send dump.sql, then the filestore files, as frames; return the bytes of SQL."""
    sql_bytes = 0
    with archive.open("dump.sql") as handle:
        while True:
            data = handle.read(READ_CHUNK)
            if not data:
                break
            sql_bytes += len(data)
            process.send(_frame(b"S", data))
    process.send(_frame(b"E"))
    for rel, info in members:
        process.send(_frame(b"F", rel.encode("utf-8")))
        with archive.open(info) as handle:
            while True:
                data = handle.read(READ_CHUNK)
                if not data:
                    break
                process.send(_frame(b"D", data))
        process.send(_frame(b"G"))
    process.send(_frame(b"Z"))
    return sql_bytes


def _load(session, conn_params, archive, members, database, temp_dir, options):
    """Pipe dump.sql to psql and the filestore into ``temp_dir`` on the host."""
    argv = [options["python"], "-c", RESTORE_SCRIPT, "saas-restore", options["psql"], temp_dir]
    process = RemoteProcess(session, argv, options["idle_timeout"])
    try:
        process.send(_frame(b"C", json.dumps(pg_config(conn_params, database=database)).encode()))
        try:
            _send_members(process, archive, members)
        except SshError:
            status, errors, _result = process.finish(timeout=30)
            if errors:
                raise BackupError(f"the restore on {session.who} failed: {errors}") from None
            raise
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
            raise BackupCorrupted(f"the backup's zip is damaged: {exc}") from None
        status, errors, result = process.finish(timeout=options["idle_timeout"])
    finally:
        process.close()
    if status != 0:
        raise BackupError(
            f"the restore on {session.who} failed: {errors or f'exit status {status}'}"
        )
    return result


def restore_backup(
    storage,
    key,
    expected_sha256,
    *,
    conn_params,
    session,
    database,
    filestore_dir,
    temp_dir=None,
    dump_params=None,
    new_identity=True,
    base_url=None,
    python="python3",
    psql="psql",
    idle_timeout=IDLE_TIMEOUT_S,
):
    """Restore the backup ``key`` into a new database ``database`` and ``filestore_dir``.

    :param conn_params: the target server's PostgreSQL as the manager reaches it
        (create, identity, drop on failure); ``dump_params`` as the host reaches it
        for ``psql`` (default: the same).
    :param session: an open :class:`~.ssh.SshSession` to the target host.
    :param filestore_dir: the new database's filestore (must not exist); its parent
        must exist. ``temp_dir``: the hidden sibling it is written in first
        (:func:`filestore.partial_copy_path`), for a caller that journals it.
    :param new_identity: give it a new ``database.uuid`` and ``database.secret``
        (a restore as a new instance); False keeps them (in place).
    :returns: a :class:`RestoreResult`.
    :raises BackupCorrupted: the sha256 differs (nothing was made) or the zip is
        damaged (what was made is removed).
    :raises DatabaseExists, RemotePathExists: a target exists (nothing was made).
    :raises DatabaseError, SshError, StorageError, BackupError: the restore failed;
        the new database and the hidden directory are removed again.
    """
    postgres._check_params(conn_params)
    validate_database_name(database)
    check_key(key)
    target_dir = filestore.check_path(filestore_dir, for_removal=True)
    temp_dir = temp_dir or filestore.partial_copy_path(target_dir)
    if not filestore.is_partial_copy(temp_dir, target_dir):
        raise InvalidInput(f"{temp_dir!r} is not a partial copy name of {target_dir}")
    if base_url is not None and not str(base_url).startswith(("http://", "https://")):
        raise InvalidInput(f"Base URL {base_url!r} must start with http:// or https://.")
    options = {"python": python, "psql": psql, "idle_timeout": idle_timeout}
    started = time.monotonic()
    where = f"{conn_params.host}:{conn_params.port}"
    if postgres.database_exists(conn_params, database):
        raise DatabaseExists(f"Database {database!r} already exists on {where}.", name=database)
    for path in (target_dir, temp_dir):
        if filestore.exists(session, path):
            raise RemotePathExists(f"{path} already exists on {session.target}", path=path)
    size, sha256 = verify(storage, key, expected_sha256)

    created = False
    try:
        with storage.open_read(key) as stream:
            archive = open_backup_zip(storage, key, stream)
            manifest = manifest_of(archive)
            members = _filestore_members(archive)
            _create_database(conn_params, database)
            created = True
            loaded = _load(
                session, conn_params if dump_params is None else dump_params,
                archive, members, database, temp_dir, options,
            )  # fmt: skip
        new_uuid = _set_identity(conn_params, database, new_identity, base_url)
        if members:
            result = session.run(["sh", "-c", RENAME_SCRIPT, "saas-rename", temp_dir, target_dir])
            if result.exit_status == 5:
                raise RemotePathExists(
                    f"{target_dir} already exists on {session.target}", path=target_dir
                )
            if result.exit_status != 0:
                raise BackupError(
                    f"cannot rename {temp_dir} to {target_dir} on {session.target}: "
                    f"{result.stderr.strip()[-500:]}"
                )
    except BaseException as exc:
        _undo(conn_params, session, database if created else None, temp_dir, exc)
        raise
    duration = time.monotonic() - started
    _logger.info(
        "Restored %s %s into %s (%s files) in %.2f s",
        storage.where,
        key,
        database,
        loaded.get("files", 0),
        duration,
    )
    return RestoreResult(
        database=database,
        filestore_dir=target_dir if members else None,
        filestore_files=loaded.get("files", 0),
        size=size,
        sha256=sha256,
        manifest=manifest,
        uuid=new_uuid,
        duration_s=duration,
    )


def _set_identity(conn_params, database, new_identity, base_url):
    values = {}
    if new_identity:
        values = {
            "database.uuid": str(uuid.uuid4()),
            "database.secret": str(uuid.uuid4()),
            "database.create_date": postgres._utcnow().isoformat(sep=" "),
        }
    if base_url is not None:
        values["web.base.url"] = base_url
    if values:
        failure = f"Cannot set the identity of the restored database {database!r}"
        with (
            postgres._session(conn_params, database, failure, autocommit=False) as conn,
            conn,
            conn.cursor() as cr,
        ):
            postgres._set_params(cr, values)
    return values.get("database.uuid")


def _undo(conn_params, session, database, temp_dir, exc):
    """Remove what a failed restore made; failures to do so are logged, not raised."""
    _logger.warning("Restore into %s failed (%s): removing what it made", database, exc)
    if database:
        try:
            postgres.drop_database(conn_params, database)
        except RemoteError as error:
            _logger.error("Cannot drop the half-restored database %s: %s", database, error)
    try:
        filestore.remove_tree(session, temp_dir)
    except RemoteError as error:
        _logger.error("Cannot remove the partial filestore %s: %s", temp_dir, error)


def scratch_restore(
    storage, key, expected_sha256, *, conn_params, session, database, filestore_dir, **options
):
    """Restore into scratch names, check the result, then drop it all; return a summary.

    The check: the database answers and lists its installed modules, which must be
    those of the manifest. ``database``/``filestore_dir`` are scratch names the caller
    journals; they are removed whether the check passed or not.

    :returns: ``{"modules": n, "filestore_files": n, "size": n, "sha256": s}``.
    :raises BackupError: the restore or the check failed.
    """
    restored = restore_backup(
        storage,
        key,
        expected_sha256,
        conn_params=conn_params,
        session=session,
        database=database,
        filestore_dir=filestore_dir,
        **options,
    )
    # From here on the scratch copy is ours (a failed restore removed its own).
    try:
        failure = "Cannot check the scratch restore"
        try:
            with (
                postgres._session(conn_params, database, failure) as conn,
                conn.cursor() as cr,
            ):
                cr.execute("SELECT name FROM ir_module_module WHERE state = 'installed'")
                modules = {row[0] for row in cr.fetchall()}
        except DatabaseError as exc:
            raise BackupError(f"the scratch restore of {key} does not answer: {exc}") from None
        expected = set(restored.manifest.get("modules") or ())
        if expected and modules != expected:
            missing = ", ".join(sorted(expected - modules)) or "none"
            raise BackupError(
                f"the scratch restore of {key} has other modules than its manifest "
                f"(missing: {missing})"
            )
    finally:
        postgres.drop_database(conn_params, database)
        if restored.filestore_dir:
            filestore.remove_tree(session, restored.filestore_dir)
    return {
        "modules": len(modules),
        "filestore_files": restored.filestore_files,
        "size": restored.size,
        "sha256": restored.sha256,
    }
