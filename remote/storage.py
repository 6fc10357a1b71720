"""Backup storages: where backup objects are kept (a local directory, SFTP, S3).

This module holds the interface, the local directory and :func:`open_storage`;
SFTP is in :mod:`.storage_sftp`, S3 in :mod:`.storage_s3`.

Every storage has the same interface, plain values in and out::

    storage = open_storage("s3", endpoint_url="https://s3.eu-west-3.amazonaws.com",
                           bucket="backups", prefix="saas/", region="eu-west-3",
                           access_key="AKIA...", secret_key="...")
    with storage:
        size, sha256 = storage.put_stream("acme/acme_2025-01-01.zip", chunks)
        with storage.open_read("acme/acme_2025-01-01.zip") as stream:
            ...                      # a seekable binary file object
        storage.exists(key); storage.list("acme/"); storage.delete(key)
        storage.probe()              # write, read back and delete a probe object

Guarantees:

* ``put_stream`` consumes an iterable of ``bytes`` and returns ``(size, sha256)`` of
  what was stored, computed while writing; memory stays bounded (one S3 part, or one
  chunk) whatever the size. The object appears whole or not at all: a local or SFTP
  object is written under a hidden temporary name and renamed once complete, an S3
  object is a multipart upload completed at the end and aborted on failure. When the
  iterable raises (the backup source failed), that exception goes through unchanged
  once the partial object is removed. An existing key is never overwritten
  (:class:`StorageObjectExists`).
* ``delete`` is idempotent (False when there was nothing); keys are chosen by the
  caller (:func:`check_key`), so it can journal them before they are written.
* Failures are typed: :class:`StorageAuthError` (credentials or permissions refused),
  :class:`StorageFullError` (no room), :class:`StorageUnavailable` (no answer),
  :class:`StorageObjectMissing`, :class:`StorageError`; messages name the storage,
  never a password, key or secret.

One storage object per thread (each operation opens its own).
"""

import contextlib
import errno
import hashlib
import logging
import os
import re
import secrets
from dataclasses import dataclass

from .exceptions import (
    InvalidInput,
    StorageAuthError,
    StorageError,
    StorageFullError,
    StorageObjectExists,
    StorageObjectMissing,
    StorageUnavailable,
)

_logger = logging.getLogger(__name__)

__all__ = [
    "LocalStorage",
    "ObjectInfo",
    "check_key",
    "open_storage",
]

KINDS = ("local", "sftp", "s3")
PARTIAL_MARK = ".saas-partial-"
PROBE_PREFIX = ".saas-probe-"
READ_CHUNK = 1024 * 1024
_KEY_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=@-]*")
_MAX_KEY = 512
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_AUTH_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS)


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


def check_key(key):
    """Validate an object key (``a/b/c.zip``) and return it.

    Segments of letters, digits and ``._+=@-``, not starting with a dot, separated by
    ``/``; no empty, ``.`` or ``..`` segment, at most 512 characters. Hidden names are
    the storage's own (temporary and probe objects).
    """
    if not isinstance(key, str) or not key:
        raise InvalidInput("a backup object key is required")
    if len(key) > _MAX_KEY:
        raise InvalidInput(f"backup object key is longer than {_MAX_KEY} characters")
    if not all(_KEY_PART.fullmatch(part) for part in key.split("/")):
        raise InvalidInput(
            f"backup object key {key!r} must be segments of letters, digits and ._+=@- "
            "separated by '/', none starting with a dot"
        )
    return key


class _Hasher:
    """Counts and hashes the chunks of a put as they go by."""

    def __init__(self, chunks):
        self._chunks = iter(chunks)
        self.size = 0
        self._sha = hashlib.sha256()

    def __iter__(self):
        for chunk in self._chunks:
            if not isinstance(chunk, bytes | bytearray | memoryview):
                raise InvalidInput("put_stream takes an iterable of bytes")
            if chunk:
                self._sha.update(chunk)
                self.size += len(chunk)
                yield chunk

    @property
    def sha256(self):
        return self._sha.hexdigest()


class Storage:
    """The interface; see the module docstring."""

    kind = ""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        """Release connections (safe to call more than once)."""

    @property
    def where(self):
        """What the storage is, for messages: never a secret."""
        raise NotImplementedError

    def put_stream(self, key, chunks):
        raise NotImplementedError

    def open_read(self, key):
        raise NotImplementedError

    def delete(self, key):
        raise NotImplementedError

    def exists(self, key):
        raise NotImplementedError

    def list(self, prefix=""):
        raise NotImplementedError

    def probe(self):
        """Write, read back and delete a small probe object; return its key.

        What ``action_test()`` calls: it proves the credentials, the write right and
        the read right at once. Raises the storage's typed errors.
        """
        key = f"{PROBE_PREFIX}{secrets.token_hex(8)}"
        payload = secrets.token_bytes(64)
        self._put(key, [payload])
        try:
            with self._open(key) as stream:
                back = stream.read()
            if back != payload:
                raise StorageError(f"{self.where}: the probe object read back differs")
        finally:
            self._delete(key)
        return key

    # Hidden keys (probe) skip check_key: subclasses implement these.
    def _put(self, key, chunks):
        raise NotImplementedError

    def _open(self, key):
        raise NotImplementedError

    def _delete(self, key):
        raise NotImplementedError


def _put_result(hasher):
    return hasher.size, hasher.sha256


# --- local ------------------------------------------------------------------------


def _os_error(where, what, exc):
    reason = exc.strerror or str(exc)
    if exc.errno in _FULL_ERRNOS:
        return StorageFullError(f"{where}: {what}: no space left ({reason})")
    if exc.errno in _AUTH_ERRNOS:
        return StorageAuthError(f"{where}: {what}: permission refused ({reason})")
    return StorageError(f"{where}: {what}: {reason}")


class LocalStorage(Storage):
    """A directory on the manager host (``root`` must exist)."""

    kind = "local"

    def __init__(self, root):
        if not isinstance(root, str) or not os.path.isabs(root):
            raise InvalidInput("a local backup storage needs an absolute directory")
        self.root = os.path.normpath(root)

    @property
    def where(self):
        return f"local storage {self.root}"

    def _path(self, key):
        return os.path.join(self.root, *key.split("/"))

    def _check_root(self):
        if not os.path.isdir(self.root):
            raise StorageUnavailable(f"{self.where}: the directory does not exist")

    def put_stream(self, key, chunks):
        return self._put(check_key(key), chunks)

    def _put(self, key, chunks):
        self._check_root()
        path = self._path(key)
        parent, name = os.path.split(path)
        tmp = os.path.join(parent, f".{name}{PARTIAL_MARK}{secrets.token_hex(8)}")
        hasher = _Hasher(chunks)
        try:
            os.makedirs(parent, exist_ok=True)
            if os.path.lexists(path):
                raise StorageObjectExists(f"{self.where}: {key} exists already")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise _os_error(self.where, f"cannot write {key}", exc) from None
        try:
            try:
                with os.fdopen(fd, "wb", buffering=0) as handle:
                    for chunk in hasher:
                        view = memoryview(chunk)
                        while view:
                            view = view[handle.write(view) :]
                    os.fsync(handle.fileno())
                # link() refuses an existing target: never an overwrite, even in a race.
                os.link(tmp, path)
            except FileExistsError:
                raise StorageObjectExists(f"{self.where}: {key} exists already") from None
            except OSError as exc:
                raise _os_error(self.where, f"cannot write {key}", exc) from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        with contextlib.suppress(OSError):
            dir_fd = os.open(parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        _logger.info("%s: stored %s (%s bytes)", self.where, key, hasher.size)
        return _put_result(hasher)

    def open_read(self, key):
        return self._open(check_key(key))

    def _open(self, key):
        self._check_root()
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError:
            raise StorageObjectMissing(f"{self.where}: {key} does not exist") from None
        except OSError as exc:
            raise _os_error(self.where, f"cannot read {key}", exc) from None

    def delete(self, key):
        return self._delete(check_key(key))

    def _delete(self, key):
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise _os_error(self.where, f"cannot delete {key}", exc) from None
        _logger.info("%s: deleted %s", self.where, key)
        return True

    def exists(self, key):
        return os.path.isfile(self._path(check_key(key)))

    def list(self, prefix=""):
        self._check_root()
        found = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(name for name in dirnames if not name.startswith("."))
            rel = os.path.relpath(dirpath, self.root)
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                key = name if rel == "." else f"{rel.replace(os.sep, '/')}/{name}"
                if key.startswith(prefix):
                    size = os.stat(os.path.join(dirpath, name)).st_size
                    found.append(ObjectInfo(key, size))
        return found


def open_storage(kind, **settings):
    """A storage of ``kind`` (``local``, ``sftp``, ``s3``) from plain settings.

    ``local``: ``path``. ``sftp``: ``ssh_settings`` (:class:`~.ssh.SshSettings`),
    ``base_path``. ``s3``: the arguments of :class:`~.storage_s3.S3Storage`.
    """
    if kind == "local":
        return LocalStorage(settings["path"])
    if kind == "sftp":
        from .storage_sftp import SftpStorage

        return SftpStorage(settings["ssh_settings"], settings["base_path"])
    if kind == "s3":
        from .storage_s3 import S3Storage

        return S3Storage(**settings)
    raise InvalidInput(f"unknown backup storage kind {kind!r}: use {', '.join(KINDS)}")
