"""The remote steps of the backup operations: plain functions over plain settings.

Each opens what it needs (the storage, an SSH session to the host) in the worker
thread that runs it and closes it before returning; the ORM never runs here. A
storage is described as ``(kind, settings)`` for :func:`storage.open_storage`.
"""

import contextlib
import logging

from psycopg2 import sql

from . import backup, filestore, postgres, restore, ssh, transfer
from .exceptions import BackupError, DatabaseError, RemoteError
from .names import validate_database_name
from .storage import open_storage

_logger = logging.getLogger(__name__)

__all__ = [
    "delete_object",
    "missing_modules",
    "probe_storage",
    "restore_job",
    "run_backup",
    "scratch_verify",
    "swap_in_place",
    "verify_object",
]


def _open(storage_spec):
    kind, settings = storage_spec
    return open_storage(kind, **settings)


def probe_storage(storage_spec):
    """Write, read back and delete a probe object; return the storage's ``where``."""
    with _open(storage_spec) as storage:
        storage.probe()
        return storage.where


def delete_object(storage_spec, key):
    """Delete ``key`` (idempotent); return whether it was there."""
    with _open(storage_spec) as storage:
        return storage.delete(key)


def verify_object(storage_spec, key, sha256):
    """``(size, sha256)`` read back; raises BackupCorrupted on a mismatch."""
    with _open(storage_spec) as storage:
        return backup.verify(storage, key, sha256)


@contextlib.contextmanager
def _connections_allowed_for_backup(pg_params, database):
    """A suspended database refuses every connection, ours too: allow them for the dump.

    The window lasts the dump; the database refuses connections again after it,
    whatever happened, and the sessions opened meanwhile are ended.
    """
    allowed = postgres.connections_allowed(pg_params, database)
    if allowed is None:
        raise DatabaseError(f"Database {database!r} does not exist.")
    if allowed:
        yield
        return
    postgres.set_connections_allowed(pg_params, database, True)
    try:
        yield
    finally:
        postgres.set_connections_allowed(pg_params, database, False)


def run_backup(storage_spec, pg_params, ssh_settings, database, filestore_dir, key):
    """Back ``database`` up into the storage under ``key``; a :class:`BackupResult`."""
    with (
        _open(storage_spec) as storage,
        ssh.SshSession(ssh_settings) as session,
        _connections_allowed_for_backup(pg_params, database),
    ):
        return backup.backup_database(pg_params, session, database, filestore_dir, storage, key)


def missing_modules(storage_spec, key, pg_params, known_from):
    """The backup's modules the target server does not have, as a sorted list.

    What the server has is read from ``known_from``, a database of that server (a
    template or an instance): every module its Odoo listed there
    (:func:`transfer.available_modules`). Returns ``(missing, manifest)``.
    """
    with _open(storage_spec) as storage:
        manifest = backup.read_manifest(storage, key)
    wanted = set(manifest.get("modules") or ())
    return sorted(wanted - set(transfer.available_modules(pg_params, known_from))), manifest


def restore_job(storage_spec, key, sha256, pg_params, ssh_settings, database, filestore_dir,
                temp_dir, new_identity, base_url):  # fmt: skip
    """:func:`restore.restore_backup` with its storage and SSH session opened here."""
    with _open(storage_spec) as storage, ssh.SshSession(ssh_settings) as session:
        return restore.restore_backup(
            storage,
            key,
            sha256,
            conn_params=pg_params,
            session=session,
            database=database,
            filestore_dir=filestore_dir,
            temp_dir=temp_dir,
            new_identity=new_identity,
            base_url=base_url,
        )


def scratch_verify(storage_spec, key, sha256, pg_params, ssh_settings, database, filestore_dir,
                   temp_dir):  # fmt: skip
    """:func:`restore.scratch_restore` into scratch names, dropped afterwards."""
    with _open(storage_spec) as storage, ssh.SshSession(ssh_settings) as session:
        return restore.scratch_restore(
            storage,
            key,
            sha256,
            conn_params=pg_params,
            session=session,
            database=database,
            filestore_dir=filestore_dir,
            temp_dir=temp_dir,
            new_identity=True,
        )


def _rename_database(cr, old, new):
    cr.execute(
        sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new))
    )


def _move(session, src, dst):
    result = session.run(["mv", "-T", "--", src, dst])
    if result.exit_status != 0:
        raise BackupError(
            f"cannot move {src} to {dst} on {session.target}: {result.stderr.strip()[-300:]}"
        )


def swap_in_place(pg_params, ssh_settings, *, database, filestore_dir, restored, restored_dir,
                  old, old_dir):  # fmt: skip
    """Put the restored database and filestore in the place of the live ones.

    ``database`` → ``old`` and ``restored`` → ``database`` (the restored one refusing
    connections, as the suspended original did), then the same for the filestores.
    Any failure moves back what was moved, so the original stays whole; once both
    are in place the old copies are removed (a failure to remove them is logged).
    Returns the names that could not be removed.
    """
    for name in (database, restored, old):
        validate_database_name(name)
    for path in (filestore_dir, restored_dir, old_dir):
        filestore.check_path(path, for_removal=True)
    failure = f"Cannot swap the restored database into {database!r}"
    renamed = False
    with (
        ssh.SshSession(ssh_settings) as session,
        postgres._session(pg_params, postgres.MAINTENANCE_DB, failure) as conn,
        conn.cursor() as cr,
    ):
        cr.execute(
            sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(restored))
        )
        postgres._terminate_sessions(cr, restored)
        postgres._terminate_sessions(cr, database)
        has_dir = filestore.exists(session, filestore_dir)
        has_restored_dir = filestore.exists(session, restored_dir)
        moved_dir = False
        try:
            _rename_database(cr, database, old)
            renamed = True
            _rename_database(cr, restored, database)
            renamed = "both"
            if has_dir:
                _move(session, filestore_dir, old_dir)
                moved_dir = True
            if has_restored_dir:
                _move(session, restored_dir, filestore_dir)
        except BaseException:
            _logger.warning("Swap into %s failed: moving the original back", database)
            if moved_dir:
                _move(session, old_dir, filestore_dir)
            if renamed == "both":
                _rename_database(cr, database, restored)
            if renamed:
                _rename_database(cr, old, database)
            raise
        leftovers = []
        try:
            postgres._drop(cr, old, postgres._server_version_num(cr))
        except Exception as exc:  # the swap is done: the old copy is only logged
            _logger.error("Cannot drop the replaced database %s: %s", old, exc)
            leftovers.append(old)
        if has_dir:
            try:
                filestore.remove_tree(session, old_dir)
            except RemoteError as exc:
                _logger.error("Cannot remove the replaced filestore %s: %s", old_dir, exc)
                leftovers.append(old_dir)
    return leftovers
