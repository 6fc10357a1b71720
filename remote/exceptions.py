"""The exceptions of the ``remote`` package.

Every message is written for an operator and never contains a secret
(passwords, private keys, master passwords): callers may show ``str(exc)``
in a notification, a log line or a record's ``error`` field as it is.
"""


class RemoteError(Exception):
    """Base class of every error raised by this package."""


class InvalidInput(RemoteError, ValueError):
    """An argument was refused before anything was sent anywhere."""


class InvalidDatabaseName(InvalidInput):
    """A database name breaks Odoo's naming rule or is reserved."""


class HandoverError(RemoteError):
    """A clone cannot be handed to its customer (the template lacks what it needs)."""


class SecretKeyError(RemoteError):
    """The key that encrypts stored secrets is missing, malformed or not the right one."""


# --- Odoo JSON-RPC ---------------------------------------------------------


class RpcError(RemoteError):
    """A JSON-RPC call to an Odoo server did not give a usable result."""


class RpcTransportError(RpcError):
    """No HTTP answer: refused, unresolvable, TLS failure, reset..."""


class RpcTimeout(RpcTransportError):
    """The connect timeout or the total deadline of a call ran out."""


class RpcProtocolError(RpcError):
    """An HTTP answer came but it is not a well-formed JSON-RPC answer.

    HTTP error statuses, redirects, HTML pages, invalid JSON, a wrong ``id``,
    an oversized body.
    """


class RpcRemoteError(RpcError):
    """The server answered with a JSON-RPC ``error`` object.

    ``code`` is the JSON-RPC code, ``name`` the Python exception name Odoo
    reports in ``error.data.name`` (e.g. ``odoo.exceptions.AccessDenied``)
    when there is one.
    """

    def __init__(self, message, code=None, name=None):
        super().__init__(message)
        self.code = code
        self.name = name


# --- PostgreSQL ------------------------------------------------------------


class DatabaseError(RemoteError):
    """A PostgreSQL operation failed (connection, clone, drop...)."""


class DatabaseExists(DatabaseError):
    """The target database of a clone already exists; ``name`` is that database.

    Whoever journalled it as about to be made now knows it was not made: it was
    there before, someone else's (``saas.operation`` never drops it then).
    """

    def __init__(self, message, name=None):
        super().__init__(message)
        self.name = name


# --- SSH -------------------------------------------------------------------


class SshError(RemoteError):
    """An SSH connection or remote command failed."""


class SshHostKeyError(SshError):
    """The host key is unknown (none pinned) or differs from the pinned one."""


class SshAuthError(SshError):
    """The server refused the credentials."""


class SshTimeout(SshError):
    """A connection step or a remote command ran out of time."""


class SshCommandError(SshError):
    """A remote helper command (copy, remove...) failed; ``stderr`` holds its excerpt."""

    def __init__(self, message, exit_status=None, stderr=""):
        super().__init__(message)
        self.exit_status = exit_status
        self.stderr = stderr


class RemotePathExists(SshError):
    """A copy was refused because its target already exists; ``path`` is that path
    (like :class:`DatabaseExists`: not made by the refused step, never removed)."""

    def __init__(self, message, path=None):
        super().__init__(message)
        self.path = path


# --- backup storages and backups ------------------------------------------


class StorageError(RemoteError):
    """A backup storage refused or failed an operation; no partial object is left."""


class StorageAuthError(StorageError):
    """The storage refused the credentials, or the access to the bucket or path."""


class StorageFullError(StorageError):
    """The storage has no room left (disk full, quota exceeded)."""


class StorageUnavailable(StorageError):
    """The storage did not answer: refused, unresolvable, timed out."""


class StorageObjectMissing(StorageError):
    """The object asked for is not in the storage."""


class StorageObjectExists(StorageError):
    """A write was refused because an object of that key exists (it is left untouched)."""


class BackupError(RemoteError):
    """A backup, restore or verification failed; what it had made is removed."""


class BackupCorrupted(BackupError):
    """A stored backup does not match its recorded sha256, or is not an Odoo backup zip."""


# --- load measurements ----------------------------------------------------


class InvalidAnswer(RemoteError):
    """A remote command or query answered something that is not a valid measurement."""


# --- moves and copies between servers ---------------------------------------


class TransferError(RemoteError):
    """A copy of a database and its filestore between servers failed."""


class TransferMismatch(TransferError):
    """The copy differs from its source (rows, sequences or files): not switched to."""
