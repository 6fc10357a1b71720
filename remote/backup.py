"""Backups of an Odoo database and its filestore, and their restore.

The object is a zip that stock Odoo 18's database manager restores (``db.restore``,
``/web/database/restore``), laid out as ``odoo/service/db.py`` ``dump_db`` writes
it: ``dump.sql`` (``pg_dump --no-owner``, plain SQL), ``manifest.json`` (odoo_dump,
db_name, version, version_info, major_version, pg_version, modules; indent 4) and
``filestore/<the database's filestore>``, deflated, zip64 where needed.

**Where the dump runs: on the managed host**, over the SSH session the manager
already has. A small Python script (a constant, its values as arguments or on
stdin, run by the host's ``python3``) runs ``pg_dump`` there, reads the filestore
from its disk, and writes the zip to its stdout, compressing as it goes; the
manager reads the SSH channel and streams it into the storage while hashing it.
Why there:

* network: the data crosses the network once, already compressed (an Odoo
  ``dump.sql`` deflates 4-8x); a dump on the manager would carry the plain SQL
  from PostgreSQL and the filestore over SSH, uncompressed;
* CPU: the compression runs on the host that owns the data, in parallel over the
  servers; the manager only copies bytes and hashes them (hashlib and the
  channel release the GIL), so one manager backs up many servers at once;
* memory and disk: the zip is written to a pipe (data descriptors), never to a
  temporary file; the manager holds one SSH window and one storage part at most;
* what the host needs: ``python3`` (3.7+, Odoo runs on it) and ``pg_dump``/``psql``
  (Odoo's own database manager needs them); the SSH user reads the filestore, as
  for provisioning. No ``zip`` binary, no agent.

The database password goes to the host on the channel's stdin, never on a command
line. The host's process dies with the channel (its stdin ends), killing
``pg_dump`` or ``psql``; a restore interrupted that way never commits.

Restoring is :mod:`.restore`; the host-side programs and their channel are
:mod:`.host_scripts`.
"""

import datetime
import hashlib
import json
import logging
import re
import secrets
import time
import zipfile
import zlib
from dataclasses import dataclass, field

from . import filestore, postgres
from .exceptions import BackupCorrupted, BackupError, InvalidInput
from .host_scripts import DUMP_SCRIPT, IDLE_TIMEOUT_S, RemoteProcess, pg_config
from .names import validate_database_name
from .storage import READ_CHUNK, check_key

_logger = logging.getLogger(__name__)

__all__ = [
    "BackupResult",
    "backup_database",
    "backup_key",
    "read_manifest",
    "verify",
]

_EOCD = b"PK\x05\x06"


@dataclass(frozen=True)
class BackupResult:
    """What :func:`backup_database` stored. Sizes in bytes; ``size`` is the object's."""

    key: str
    size: int
    sha256: str
    db_size: int
    dump_size: int
    filestore_size: int
    filestore_files: int
    odoo_version: str
    pg_version: str
    modules: dict = field(default_factory=dict)
    duration_s: float = 0.0


def backup_key(database, when=None, token=None):
    """The object key of a new backup: ``<db>/<db>_<YYYY-mm-dd_HH-MM-SS>_<token>.zip``.

    Pure (nothing is written), so the caller journals it first; ``when`` (UTC) and
    ``token`` (8 hex digits) default to now and a random one.
    """
    validate_database_name(database)
    when = when or datetime.datetime.now(datetime.timezone.utc)
    token = token or secrets.token_hex(4)
    if not re.fullmatch(r"[0-9a-f]{8}", token):
        raise InvalidInput("a backup key token is 8 lowercase hexadecimal digits")
    return check_key(f"{database}/{database}_{when:%Y-%m-%d_%H-%M-%S}_{token}.zip")


# --- backup -------------------------------------------------------------------------


def _manifest(conn_params, database, odoo_version, odoo_version_info):
    failure = f"Cannot read database {database!r} for its backup"
    with (
        postgres._session(conn_params, database, failure) as conn,
        conn.cursor() as cr,
    ):
        cr.execute("SELECT name, latest_version FROM ir_module_module WHERE state = 'installed'")
        modules = dict(cr.fetchall())
        cr.execute("SELECT pg_database_size(current_database())")
        db_size = cr.fetchone()[0]
        # As Odoo computes it ("%d.%d" of server_version / 100 divided by 100).
        major_pg, minor_pg = divmod(conn.server_version / 100, 100)
        pg_version = f"{int(major_pg)}.{int(minor_pg)}"
    if not odoo_version:
        base = str(modules.get("base") or "")
        parts = base.split(".")
        odoo_version = ".".join(parts[:2]) if len(parts) >= 2 else "18.0"
    major = ".".join(odoo_version.split("-")[0].split("+")[0].split(".")[:2])
    if odoo_version_info is None:
        numbers = [int(part) for part in major.split(".") if part.isdigit()]
        odoo_version_info = [*numbers, 0, "final", 0, ""][:6]
    manifest = {
        "odoo_dump": "1",
        "db_name": database,
        "version": odoo_version,
        "version_info": list(odoo_version_info),
        "major_version": major,
        "pg_version": pg_version,
        "modules": modules,
    }
    return manifest, db_size


class _Tail:
    """The stdout chunks of the dump, checked at their end: exit 0 and a zip's end."""

    def __init__(self, process):
        self.process = process
        self.result = {}

    def __iter__(self):
        last = b""
        for chunk in self.process.chunks():
            last = (last + chunk)[-64:]
            yield chunk
        status, errors, result = self.process.finish()
        if status != 0:
            detail = errors or f"exit status {status}"
            raise BackupError(f"the backup on {self.process.who} failed: {detail}")
        if _EOCD not in last:
            raise BackupError(f"the backup on {self.process.who} ended without a whole zip")
        self.result = result


def backup_database(
    conn_params,
    session,
    database,
    filestore_dir,
    storage,
    key,
    *,
    dump_params=None,
    odoo_version=None,
    odoo_version_info=None,
    compresslevel=6,
    python="python3",
    pg_dump="pg_dump",
    idle_timeout=IDLE_TIMEOUT_S,
):
    """Back ``database`` and its filestore up into ``storage`` under ``key``.

    :param conn_params: the server's PostgreSQL as the manager reaches it (manifest,
        sizes); ``dump_params`` as the host reaches it (default: the same).
    :param session: an open :class:`~.ssh.SshSession` to the managed host.
    :param filestore_dir: the database's filestore on the host (may be missing).
    :param key: the object key (:func:`backup_key`), journalled by the caller.
    :returns: a :class:`BackupResult`.
    :raises DatabaseError, SshError, StorageError, BackupError: nothing is stored
        (the storage removes or aborts its partial object); the database and the
        filestore are only read.
    """
    postgres._check_params(conn_params)
    validate_database_name(database)
    check_key(key)
    store_dir = filestore.check_path(filestore_dir)
    if not isinstance(compresslevel, int) or not 0 <= compresslevel <= 9:
        raise InvalidInput("the compression level is a number from 0 to 9")
    dump_params = dump_params or conn_params
    started = time.monotonic()
    manifest, db_size = _manifest(conn_params, database, odoo_version, odoo_version_info)
    argv = [python, "-c", DUMP_SCRIPT, "saas-backup", database, store_dir]
    argv += [str(compresslevel), pg_dump]
    process = RemoteProcess(session, argv, idle_timeout)
    try:
        config = pg_config(dump_params, manifest=manifest)
        process.send(json.dumps(config).encode() + b"\n")
        tail = _Tail(process)
        size, sha256 = storage.put_stream(key, tail)
    finally:
        process.close()
    duration = time.monotonic() - started
    result = tail.result
    _logger.info(
        "Backed up %s (%s bytes of dump, %s files) into %s %s: %s bytes in %.2f s",
        database,
        result.get("dump_size"),
        result.get("files"),
        storage.where,
        key,
        size,
        duration,
    )
    return BackupResult(
        key=key,
        size=size,
        sha256=sha256,
        db_size=db_size,
        dump_size=result.get("dump_size", 0),
        filestore_size=result.get("filestore_size", 0),
        filestore_files=result.get("files", 0),
        odoo_version=manifest["version"],
        pg_version=manifest["pg_version"],
        modules=manifest["modules"],
        duration_s=duration,
    )


# --- verify -------------------------------------------------------------------------


def verify(storage, key, expected_sha256):
    """Read the object once and check its sha256; return ``(size, sha256)``.

    :raises BackupCorrupted: the sha256 differs from ``expected_sha256``.
    :raises StorageError: it cannot be read (e.g. StorageObjectMissing).
    """
    check_key(key)
    if not isinstance(expected_sha256, str) or not re.fullmatch(r"[0-9a-f]{64}", expected_sha256):
        raise InvalidInput("the expected sha256 is 64 lowercase hexadecimal digits")
    digest = hashlib.sha256()
    size = 0
    with storage.open_read(key) as stream:
        while True:
            data = stream.read(READ_CHUNK)
            if not data:
                break
            digest.update(data)
            size += len(data)
    actual = digest.hexdigest()
    if actual != expected_sha256:
        raise BackupCorrupted(
            f"{storage.where}: {key} is corrupted: its sha256 is {actual}, "
            f"the backup recorded {expected_sha256} ({size} bytes read)"
        )
    return size, actual


def open_backup_zip(storage, key, stream):
    try:
        archive = zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise BackupCorrupted(f"{storage.where}: {key} is not a zip: {exc}") from None
    if "dump.sql" not in archive.namelist():
        raise BackupCorrupted(f"{storage.where}: {key} holds no dump.sql: not an Odoo backup")
    return archive


def manifest_of(archive):
    try:
        with archive.open("manifest.json") as handle:
            return json.load(handle)
    except KeyError:
        return {}
    except (ValueError, zipfile.BadZipFile, zlib.error) as exc:
        raise BackupCorrupted(f"the backup's manifest.json is unreadable: {exc}") from None


def read_manifest(storage, key):
    """The ``manifest.json`` of a stored backup (``{}`` when it has none).

    Reads the zip's directory and that member only: what a caller checks (Odoo
    version, modules) before it restores onto a server.
    """
    with storage.open_read(check_key(key)) as stream:
        return manifest_of(open_backup_zip(storage, key, stream))
