"""The SFTP backup storage: a directory on an SFTP server (see :mod:`.storage`).

It reuses :class:`~.ssh.SshSession` for the connection, so the SSH guarantees hold
as for managed servers: pinned host key, bounded connect time, secrets never shown.
"""

import contextlib
import io
import logging
import posixpath
import secrets
import stat

import paramiko

from . import filestore
from .exceptions import (
    SshAuthError,
    SshError,
    SshHostKeyError,
    StorageAuthError,
    StorageError,
    StorageFullError,
    StorageObjectExists,
    StorageObjectMissing,
    StorageUnavailable,
)
from .ssh import SshSession
from .storage import PARTIAL_MARK, READ_CHUNK, ObjectInfo, Storage, _Hasher, _put_result, check_key

_logger = logging.getLogger(__name__)

__all__ = ["SftpStorage"]


# --- SFTP -------------------------------------------------------------------------


class _SftpReader(io.RawIOBase):
    """A seekable raw reader over an SFTP file, reading windows with pipelined requests.

    paramiko's plain ``read`` does one round trip per 32 KiB; ``readv`` pipelines
    the requests of a window, and a window is all that is held in memory.
    """

    def __init__(self, handle, size):
        super().__init__()
        self._handle = handle
        self._size = size
        self._pos = 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self._pos

    def seek(self, offset, whence=io.SEEK_SET):
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(base + offset, 0)
        return self._pos

    def readinto(self, buffer):
        want = min(len(buffer), self._size - self._pos)
        if want <= 0:
            return 0
        piece = 32768
        ranges = [(self._pos + off, min(piece, want - off)) for off in range(0, want, piece)]
        filled = 0
        for data in self._handle.readv(ranges):
            buffer[filled : filled + len(data)] = data
            filled += len(data)
        self._pos += filled
        return filled

    def close(self):
        if not self.closed:
            self._handle.close()
        return super().close()


class SftpStorage(Storage):
    """A directory on an SFTP server, reached with :class:`~.ssh.SshSession` settings.

    The SSH guarantees hold as for servers (pinned host key, bounded connect time,
    secrets never shown); ``base_path`` is absolute and must exist.
    """

    kind = "sftp"

    def __init__(self, ssh_settings, base_path):
        self.base_path = filestore.check_path(base_path)
        self.settings = ssh_settings
        self._session = None
        self._sftp = None

    @property
    def where(self):
        return f"SFTP storage {self.settings.username}@{self.settings.target}:{self.base_path}"

    def _client(self):
        if self._sftp is None:
            session = SshSession(self.settings)
            try:
                session.open()
                # SshSession has no public SFTP call: the SFTP channel goes over its
                # authenticated, host-key-checked transport.
                transport = session._require_transport()
                self._sftp = paramiko.SFTPClient.from_transport(transport)
                self._sftp.get_channel().settimeout(self.settings.command_timeout)
            except SshAuthError as exc:
                session.close()
                raise StorageAuthError(f"{self.where}: {exc}") from None
            except SshHostKeyError as exc:
                session.close()
                raise StorageAuthError(f"{self.where}: {exc}") from None
            except SshError as exc:
                session.close()
                raise StorageUnavailable(f"{self.where}: {exc}") from None
            except (OSError, EOFError, paramiko.SSHException) as exc:
                session.close()
                raise StorageUnavailable(
                    f"{self.where}: cannot start SFTP ({exc}): is the server's sftp "
                    "subsystem enabled?"
                ) from None
            self._session = session
        return self._sftp

    def close(self):
        sftp, self._sftp = self._sftp, None
        session, self._session = self._session, None
        if sftp is not None:
            with contextlib.suppress(OSError, EOFError):
                sftp.close()
        if session is not None:
            session.close()

    def _path(self, key):
        return posixpath.join(self.base_path, key)

    def _error(self, what, exc):
        if isinstance(exc, FileNotFoundError):
            return StorageObjectMissing(f"{self.where}: {what}: no such file")
        if isinstance(exc, PermissionError):
            return StorageAuthError(f"{self.where}: {what}: permission refused")
        if isinstance(exc, OSError | EOFError):
            if self._looks_full():
                return StorageFullError(f"{self.where}: {what}: no space left on the server")
            return StorageError(f"{self.where}: {what}: {exc or type(exc).__name__}")
        return exc

    def _looks_full(self):
        """SFTP v3 reports a full disk as a bare "Failure": ask ``df`` over SSH."""
        if self._session is None:
            return False
        try:
            result = self._session.run(["df", "-Pk", self.base_path], timeout=30)
            fields = result.stdout.splitlines()[-1].split()
            return result.exit_status == 0 and int(fields[3]) < 64
        except (SshError, ValueError, IndexError):
            return False

    def _makedirs(self, sftp, directory):
        missing = []
        while directory != self.base_path:
            try:
                sftp.stat(directory)
                break
            except FileNotFoundError:
                missing.append(directory)
                directory = posixpath.dirname(directory)
        for path in reversed(missing):
            with contextlib.suppress(OSError):  # made by a concurrent put: checked below
                sftp.mkdir(path, 0o700)
            sftp.stat(path)

    def put_stream(self, key, chunks):
        return self._put(check_key(key), chunks)

    def _put(self, key, chunks):
        sftp = self._client()
        path = self._path(key)
        parent, name = posixpath.split(path)
        tmp = posixpath.join(parent, f".{name}{PARTIAL_MARK}{secrets.token_hex(8)}")
        hasher = _Hasher(chunks)
        made = False
        try:
            try:
                sftp.stat(self.base_path)
                self._makedirs(sftp, parent)
                with contextlib.suppress(FileNotFoundError):
                    sftp.stat(path)
                    raise StorageObjectExists(f"{self.where}: {key} exists already")
                handle = sftp.open(tmp, "wbx")
                made = True
                with handle:
                    handle.set_pipelined(True)
                    for chunk in hasher:
                        handle.write(bytes(chunk))
                    handle.flush()
                # Pipelined writes report their errors late, and paramiko's close()
                # drops them: the size on the server is what proves the write.
                written = sftp.stat(tmp).st_size
                if written != hasher.size:
                    raise OSError(
                        f"the server kept {written} of {hasher.size} bytes"
                    )  # fmt: skip
                # OpenSSH's sftp-server renames with link(): an existing target is
                # refused, never replaced.
                sftp.rename(tmp, path)
                made = False
            except (OSError, EOFError) as exc:
                raise self._error(f"cannot write {key}", exc) from None
        finally:
            if made:
                with contextlib.suppress(OSError, EOFError):
                    sftp.remove(tmp)
        _logger.info("%s: stored %s (%s bytes)", self.where, key, hasher.size)
        return _put_result(hasher)

    def open_read(self, key):
        return self._open(check_key(key))

    def _open(self, key):
        sftp = self._client()
        try:
            handle = sftp.open(self._path(key), "rb")
            size = handle.stat().st_size
        except (OSError, EOFError) as exc:
            raise self._error(f"cannot read {key}", exc) from None
        return io.BufferedReader(_SftpReader(handle, size), buffer_size=READ_CHUNK)

    def delete(self, key):
        return self._delete(check_key(key))

    def _delete(self, key):
        sftp = self._client()
        try:
            sftp.remove(self._path(key))
        except FileNotFoundError:
            return False
        except (OSError, EOFError) as exc:
            raise self._error(f"cannot delete {key}", exc) from None
        _logger.info("%s: deleted %s", self.where, key)
        return True

    def exists(self, key):
        sftp = self._client()
        try:
            return stat.S_ISREG(sftp.stat(self._path(check_key(key))).st_mode)
        except FileNotFoundError:
            return False
        except (OSError, EOFError) as exc:
            raise self._error(f"cannot check {key}", exc) from None

    def list(self, prefix=""):
        sftp = self._client()
        found = []
        pending = [""]
        try:
            while pending:
                rel = pending.pop()
                directory = self._path(rel) if rel else self.base_path
                for entry in sorted(sftp.listdir_attr(directory), key=lambda e: e.filename):
                    if entry.filename.startswith("."):
                        continue
                    key = f"{rel}/{entry.filename}" if rel else entry.filename
                    if stat.S_ISDIR(entry.st_mode):
                        if key.startswith(prefix) or prefix.startswith(key + "/"):
                            pending.append(key)
                    elif stat.S_ISREG(entry.st_mode) and key.startswith(prefix):
                        found.append(ObjectInfo(key, entry.st_size))
        except (OSError, EOFError) as exc:
            raise self._error("cannot list", exc) from None
        return sorted(found, key=lambda info: info.key)
