"""SSH to a managed host with paramiko: pinned host key, bounded time, quoted commands.

Used by the Odoo layer to copy a template's filestore to a new instance and to remove
an instance's filestore when it is terminated::

    settings = SshSettings(host="10.0.0.5", username="odoo", private_key=key_text,
                           host_key="ssh-ed25519 AAAAC3Nza... root@eu1")
    with SshSession(settings) as session:
        session.copy_tree("/var/lib/odoo/filestore/tpl", "/var/lib/odoo/filestore/client1")

Security rules:

* The server must present the pinned host key (``host_key``, as ``ssh-keyscan`` or
  ``ssh-keygen -y`` print it). Nothing else is trusted: no ``known_hosts`` file, no
  agent, no keys found on disk, no "accept new key" policy. An empty pin is refused
  before any network traffic. Only the pinned key's type is offered during key
  exchange, so a server that also has keys of other types cannot make the check fail
  by negotiating one of those.
* Every argument of a remote command goes through :func:`shlex.quote`; the helper
  scripts below are constants and receive paths as positional parameters only.
* Every step has a deadline: TCP connect, banner, key exchange, authentication, and
  each remote command (which is killed on the remote side when it runs out).
* Messages and log lines name host, port, user and paths, never a password or key.

The remote host needs a POSIX login shell and GNU coreutils (``cp -a``, ``mv -T``),
which every Linux distribution that packages Odoo provides.
"""

import base64
import binascii
import hashlib
import io
import logging
import posixpath
import re
import secrets
import select
import shlex
import socket
import threading
import time
from dataclasses import dataclass, field

import paramiko
from paramiko.common import cMSG_CHANNEL_REQUEST
from paramiko.ssh_exception import (
    AuthenticationException,
    BadAuthenticationType,
    IncompatiblePeer,
    PasswordRequiredException,
    SSHException,
)

from .exceptions import (
    InvalidInput,
    RemotePathExists,
    SshAuthError,
    SshError,
    SshHostKeyError,
)

_logger = logging.getLogger(__name__)

__all__ = [
    "CommandResult",
    "PinnedHostKey",
    "SshCommandError",
    "SshSession",
    "SshSettings",
    "SshTimeout",
    "check_path",
    "parse_host_keys",
]

DEFAULT_MAX_OUTPUT_BYTES = 1024 * 1024
_READ_CHUNK = 64 * 1024
_POLL_SECONDS = 0.1
# How much of a failed helper's stderr goes into an exception message.
_STDERR_EXCERPT = 500
_KILL_TIMEOUT = 15.0
# First line a command writes to stderr: the remote process group to kill on timeout.
_PID_MARKER = "saas-ssh-pgid:"
_PID_LINE = re.compile(rb"saas-ssh-pgid:(\d+)\n")
_PID_SEARCH_BYTES = 4096
_PID_GRACE_SECONDS = 5.0

# Host key types the pin may have, and the host key algorithms that prove possession
# of a key of that type (an RSA key signs with rsa-sha2-* on any current server).
_HOST_KEY_ALGORITHMS = {
    "ssh-ed25519": ("ssh-ed25519",),
    "ecdsa-sha2-nistp256": ("ecdsa-sha2-nistp256",),
    "ecdsa-sha2-nistp384": ("ecdsa-sha2-nistp384",),
    "ecdsa-sha2-nistp521": ("ecdsa-sha2-nistp521",),
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"),
}
_PRIVATE_KEY_CLASSES = (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey)


class SshTimeout(SshError):
    """A connection step or a remote command ran out of time."""


class SshCommandError(SshError):
    """A remote helper command (copy, remove...) failed; ``stderr`` holds its excerpt."""

    def __init__(self, message, exit_status=None, stderr=""):
        super().__init__(message)
        self.exit_status = exit_status
        self.stderr = stderr


@dataclass(frozen=True)
class SshSettings:
    """How to reach one host. ``repr()``/``str()`` never show the secrets.

    ``private_key`` is the text of an OpenSSH or PEM private key (ed25519, ECDSA or
    RSA); ``private_key_passphrase`` only when it is encrypted. When both a key and a
    password are given, the key is tried first. ``host_key`` is the pinned public host
    key line (``ssh-ed25519 AAAA... [comment]``; a ``ssh-keyscan`` line with its leading
    host name is accepted too; several lines pin several keys of the same host).
    Timeouts are in seconds; ``command_timeout`` bounds each remote command. Empty
    values may be ``None``, ``""`` or ``False`` (as Odoo reads empty fields).
    """

    host: str
    port: int = 22
    username: str = ""
    password: str | None = field(default=None, repr=False)
    private_key: str | None = field(default=None, repr=False)
    private_key_passphrase: str | None = field(default=None, repr=False)
    host_key: str = field(default="", repr=False)
    connect_timeout: float = 10.0
    command_timeout: float = 600.0
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES

    @property
    def target(self):
        """``host:port`` (``[host]:port`` for an IPv6 address), for messages."""
        host = str(self.host or "")
        host = f"[{host}]" if ":" in host else host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class PinnedHostKey:
    """One pinned public host key."""

    key_type: str
    blob: bytes
    comment: str = ""

    @property
    def fingerprint(self):
        """``SHA256:...`` as ``ssh-keygen -l`` prints it."""
        return _fingerprint(self.blob)


class CommandResult(tuple):
    """``(exit_status, stdout, stderr)`` of a remote command, unpackable as a 3-tuple.

    stdout and stderr are text (UTF-8, undecodable bytes replaced), each cut after the
    output cap; ``truncated`` tells whether anything was cut.
    """

    def __new__(cls, exit_status, stdout, stderr, truncated=False):
        result = super().__new__(cls, (exit_status, stdout, stderr))
        result.truncated = truncated
        return result

    @property
    def exit_status(self):
        return self[0]

    @property
    def stdout(self):
        return self[1]

    @property
    def stderr(self):
        return self[2]


class _Capture:
    """One output stream: keeps the first ``cap`` bytes, drops (and counts) the rest.

    With ``find_pid``, the process-group line our command wrapper writes first is
    taken out of the stream and kept as ``pid``.
    """

    def __init__(self, cap, find_pid=False):
        self.cap = max(cap, 0)
        self.kept = bytearray()
        self.truncated = False
        self.pid = None
        self._head = bytearray() if find_pid else None

    def feed(self, data):
        if self._head is not None:
            self._head.extend(data)
            match = _PID_LINE.search(self._head)
            if match is None and len(self._head) < _PID_SEARCH_BYTES:
                return
            if match is not None:
                self.pid = int(match.group(1))
                del self._head[match.start() : match.end()]
            data, self._head = bytes(self._head), None
        room = self.cap - len(self.kept)
        if len(data) > room:
            self.truncated = True
        if room > 0:
            self.kept.extend(data[:room])

    def text(self):
        if self._head is not None:  # a short stream without the marker line
            head, self._head = bytes(self._head), None
            self.feed(head)
        return bytes(self.kept).decode("utf-8", "replace")


def _fingerprint(blob):
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii")
    return "SHA256:" + digest.rstrip("=")


def parse_host_keys(text, target="the host"):
    """Parse pinned host key line(s) into :class:`PinnedHostKey` objects.

    Raises :class:`SshHostKeyError` when nothing is pinned or a line is not a public
    key of a supported type (ed25519, ECDSA, RSA). ``target`` only names the host in
    messages.
    """
    keys = []
    for raw_line in (text or "").splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        tokens = line.split()
        # ssh-keyscan prints "host key-type base64"; ssh-keygen -y "key-type base64 comment"
        if tokens[0] not in _HOST_KEY_ALGORITHMS and len(tokens) > 1:
            tokens = tokens[1:]
        key_type = tokens[0]
        if key_type not in _HOST_KEY_ALGORITHMS or len(tokens) < 2:
            raise SshHostKeyError(
                f"the pinned host key of {target} is not a supported public key line "
                f"(expected e.g. 'ssh-ed25519 AAAA...'; supported types: "
                f"{', '.join(_HOST_KEY_ALGORITHMS)})"
            )
        try:
            blob = base64.b64decode(tokens[1], validate=True)
            inner_type = paramiko.Message(blob).get_text()
        except (binascii.Error, ValueError, UnicodeDecodeError, SSHException) as exc:
            raise SshHostKeyError(
                f"the pinned host key of {target} is not valid base64 key data"
            ) from exc
        if inner_type != key_type:
            raise SshHostKeyError(
                f"the pinned host key of {target} says {key_type!r} but its data is "
                f"a {inner_type!r} key"
            )
        keys.append(PinnedHostKey(key_type, blob, " ".join(tokens[2:])))
    if not keys:
        raise SshHostKeyError(
            f"no host key pinned for {target}; get it with "
            f"ssh-keyscan -p {_port_of(target)} {_host_of(target)} and paste it"
        )
    return keys


def _host_of(target):
    host = target.rsplit(":", 1)[0]
    return host[1:-1] if host.startswith("[") else host


def _port_of(target):
    return target.rsplit(":", 1)[-1]


def _load_private_key(settings):
    """The paramiko key of ``settings.private_key``, or None when there is none."""
    if not settings.private_key or not settings.private_key.strip():
        return None
    text = settings.private_key.replace("\r\n", "\n").replace("\r", "\n").strip() + "\n"
    passphrase = settings.private_key_passphrase or None
    who = f"{settings.username}@{settings.target}"
    for key_class in _PRIVATE_KEY_CLASSES:
        try:
            return key_class.from_private_key(io.StringIO(text), password=passphrase)
        except PasswordRequiredException as exc:
            raise SshAuthError(
                f"the private key for {who} is encrypted and no passphrase is set"
            ) from exc
        except (SSHException, ValueError, TypeError, IndexError):
            # Each key class refuses the others' formats; try the next one.
            continue
    raise SshAuthError(
        f"the private key for {who} cannot be read: expected an ed25519, ECDSA or RSA "
        "private key in OpenSSH or PEM form (or the passphrase is wrong)"
    )


def check_path(path, *, for_removal=False):
    """Validate a remote path and return it normalised (no ``//``, no trailing ``/``).

    Refused (:class:`InvalidInput`): not a string, empty, relative, ``/``, a NUL byte,
    any ``.`` or ``..`` component; with ``for_removal``, also a top-level directory
    such as ``/var`` (a filestore always lies deeper).
    """
    if not isinstance(path, str) or not path:
        raise InvalidInput("a remote path is required")
    if "\0" in path:
        raise InvalidInput("a remote path cannot contain a NUL byte")
    if not path.startswith("/"):
        raise InvalidInput(f"remote path {path!r} is not absolute")
    parts = [part for part in path.split("/") if part]
    if any(part in (".", "..") for part in parts):
        raise InvalidInput(f"remote path {path!r} contains '.' or '..'")
    if not parts:
        raise InvalidInput("refusing to work on the remote root directory '/'")
    if for_removal and len(parts) < 2:
        raise InvalidInput(f"refusing to remove the top-level directory {path!r}")
    return "/" + "/".join(parts)


# The helper scripts are constants: paths reach them only as positional parameters
# ($1, $2...), each quoted by shlex.quote, so no path is ever parsed as shell code.
# Exit codes 3-7 are ours; cp/mv/rm failures are mapped onto them.
_COPY_SCRIPT = (
    "src=$1; dst=$2; tmp=$3; "
    'if [ ! -e "$src" ]; then exit 3; fi; '
    'if [ ! -d "$src" ]; then exit 4; fi; '
    'if [ -e "$dst" ] || [ -L "$dst" ]; then exit 5; fi; '
    'if ! cp -a -- "$src/." "$tmp"; then rm -rf -- "$tmp"; exit 6; fi; '
    'if ! mv -T -- "$tmp" "$dst"; then rm -rf -- "$tmp"; '
    'if [ -e "$dst" ] || [ -L "$dst" ]; then exit 5; fi; exit 7; fi'
)
_REMOVE_SCRIPT = 'if [ ! -e "$1" ] && [ ! -L "$1" ]; then exit 3; fi; rm -rf -- "$1" || exit 6'
_EXISTS_SCRIPT = 'if [ -e "$1" ] || [ -L "$1" ]; then exit 0; fi; exit 3'
_MISSING, _NOT_A_DIRECTORY, _EXISTS = 3, 4, 5


class SshSession:
    """One authenticated SSH connection, for several operations on one host.

    Use it as a context manager (``with SshSession(settings) as session: ...``), or
    call :meth:`open` and :meth:`close`. One thread at a time per session.
    """

    def __init__(self, settings):
        self.settings = settings
        self._transport = None
        self._who = f"{settings.username}@{settings.target}"

    def __repr__(self):
        state = "open" if self._transport is not None else "closed"
        return f"<SshSession {self._who} {state}>"

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()

    # --- connection ---------------------------------------------------------

    def open(self):
        """Connect, check the host key, authenticate. Idempotent.

        Raises :class:`InvalidInput` (incomplete settings), :class:`SshHostKeyError`
        (nothing pinned, or another key presented), :class:`SshAuthError`,
        :class:`SshTimeout` or :class:`SshError` (network, protocol).
        """
        if self._transport is not None:
            return self
        settings = self.settings
        target = settings.target
        if not settings.host or not isinstance(settings.host, str):
            raise InvalidInput("an SSH host is required")
        if not isinstance(settings.port, int) or not 0 < settings.port < 65536:
            raise InvalidInput(f"SSH port {settings.port!r} of {settings.host} is not valid")
        if not settings.username:
            raise InvalidInput(f"no SSH user set for {target}")
        if not settings.connect_timeout > 0 or not settings.command_timeout > 0:
            raise InvalidInput(f"the SSH timeouts for {target} must be positive")
        # Everything that can be refused offline is refused before the first packet.
        pinned = parse_host_keys(settings.host_key, target)
        pkey = _load_private_key(settings)
        if pkey is None and not settings.password:
            raise InvalidInput(f"no SSH password or private key set for {self._who}")
        started = time.monotonic()
        try:
            self._transport = self._connect(pinned, pkey)
        except SshError as exc:
            _logger.warning(
                "ssh connect %s failed after %.2f s: %s",
                self._who,
                time.monotonic() - started,
                exc,
            )
            raise
        server_key = self._transport.get_remote_server_key()
        _logger.info(
            "ssh connect %s: ok in %.2f s (host key %s %s)",
            self._who,
            time.monotonic() - started,
            server_key.get_name(),
            _fingerprint(server_key.asbytes()),
        )
        return self

    def _connect(self, pinned, pkey):
        settings = self.settings
        target = settings.target
        timeout = settings.connect_timeout
        try:
            sock = socket.create_connection((settings.host, settings.port), timeout=timeout)
        except TimeoutError as exc:
            raise SshTimeout(f"cannot connect to {target}: timed out after {timeout:g} s") from exc
        except OSError as exc:
            raise SshError(f"cannot connect to {target}: {exc.strerror or exc}") from exc
        try:
            transport = paramiko.Transport(sock)
        except (SSHException, OSError) as exc:
            sock.close()
            raise SshError(f"cannot start SSH with {target}: {exc}") from exc
        try:
            transport.banner_timeout = timeout
            transport.handshake_timeout = timeout
            transport.auth_timeout = timeout
            # Offer only the pinned key's type(s): the server must then prove possession
            # of a key of that type, and the comparison below is about the right key.
            allowed = []
            for key in pinned:
                for algorithm in _HOST_KEY_ALGORITHMS[key.key_type]:
                    if algorithm not in allowed:
                        allowed.append(algorithm)
            transport.get_security_options().key_types = tuple(allowed)
            self._handshake(transport, pinned)
            self._authenticate(transport, pkey)
        except BaseException:
            transport.close()
            raise
        return transport

    def _handshake(self, transport, pinned):
        settings = self.settings
        target = settings.target
        try:
            transport.start_client(timeout=settings.connect_timeout)
        except IncompatiblePeer as exc:
            if "host key" in str(exc):
                types = ", ".join(sorted({key.key_type for key in pinned}))
                raise SshHostKeyError(
                    f"{target} offers no host key of the pinned type ({types}); "
                    f"check the pinned key with ssh-keyscan -p {settings.port} {settings.host}"
                ) from exc
            raise SshError(f"SSH negotiation with {target} failed: {exc}") from exc
        except (SSHException, EOFError, OSError) as exc:
            raise SshError(f"SSH handshake with {target} failed: {exc}") from exc
        try:
            server_key = transport.get_remote_server_key()
        except SSHException as exc:
            # start_client returns quietly when its timeout runs out.
            raise SshTimeout(
                f"SSH handshake with {target} did not finish within "
                f"{settings.connect_timeout:g} s"
            ) from exc
        presented = server_key.asbytes()
        if not any(key.blob == presented for key in pinned):
            expected = ", ".join(f"{key.key_type} {key.fingerprint}" for key in pinned)
            raise SshHostKeyError(
                f"host key mismatch for {target}: the server presented "
                f"{server_key.get_name()} {_fingerprint(presented)} but "
                f"{expected} is pinned; if the server was reinstalled, check and pin its "
                f"new key (ssh-keyscan -p {settings.port} {settings.host}), otherwise "
                "someone may be intercepting the connection"
            )

    def _authenticate(self, transport, pkey):
        settings = self.settings
        who = self._who
        attempts = []
        if pkey is not None:
            attempts.append(
                ("private key", lambda: transport.auth_publickey(settings.username, pkey))
            )
        if settings.password:
            attempts.append(
                ("password", lambda: transport.auth_password(settings.username, settings.password))
            )
        refusals = []
        for method, attempt in attempts:
            try:
                remaining = attempt()
            except BadAuthenticationType as exc:
                allowed = ", ".join(exc.allowed_types) or "none"
                refusals.append(f"{method} not accepted (server allows: {allowed})")
                continue
            except AuthenticationException:
                refusals.append(f"{method} refused")
                continue
            except (SSHException, EOFError, OSError) as exc:
                raise SshError(f"SSH authentication with {settings.target} failed: {exc}") from exc
            if transport.is_authenticated():
                return
            refusals.append(
                f"{method} accepted but the server asks for more ({', '.join(remaining or [])}), "
                "which is not supported"
            )
        raise SshAuthError(f"{who} refused the credentials: {'; '.join(refusals)}")

    def close(self):
        """Close the connection (safe to call more than once)."""
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
            _logger.debug("ssh %s: closed", self._who)

    def _require_transport(self):
        if self._transport is None or not self._transport.is_active():
            self._transport = None
            raise SshError(f"the SSH session with {self._who} is not open")
        return self._transport

    # --- commands -----------------------------------------------------------

    def run(self, argv, *, timeout=None, max_output=None):
        """Run ``argv`` on the host and return ``(exit_status, stdout, stderr)``.

        Every argument is quoted with :func:`shlex.quote` and the result is run by the
        user's login shell. stdout and stderr are read together, so a command that
        fills one of them never stalls; each is kept up to ``max_output`` bytes
        (default ``settings.max_output_bytes``) and the rest is read and dropped
        (``result.truncated``). After ``timeout`` seconds (default
        ``settings.command_timeout``) the command's remote process group is killed,
        the channel is closed and :class:`SshTimeout` is raised. A non-zero exit
        status is returned, not raised.
        """
        if not isinstance(argv, list | tuple) or not argv:
            raise InvalidInput("a command is a non-empty list of arguments")
        if not all(isinstance(arg, str) for arg in argv):
            raise InvalidInput("every command argument must be a string")
        if any("\0" in arg for arg in argv):
            raise InvalidInput("a command argument cannot contain a NUL byte")
        timeout = self.settings.command_timeout if timeout is None else timeout
        cap = self.settings.max_output_bytes if max_output is None else max_output
        # sshd starts the login shell in a new session (setsid), so the shell's pid is
        # the process group of everything the command starts: reported first, it
        # lets a timed-out command be killed whole, whoever the login user is.
        command = f"echo {_PID_MARKER}$$ >&2; {shlex.join(argv)}"
        started = time.monotonic()
        try:
            result = self._run(command, started + timeout, timeout, cap)
        except SshError as exc:
            _logger.warning(
                "ssh %s: command %s failed after %.2f s: %s",
                self._who,
                argv[0],
                time.monotonic() - started,
                exc,
            )
            raise
        _logger.debug(
            "ssh %s: command %s exited %s in %.2f s%s",
            self._who,
            argv[0],
            result.exit_status,
            time.monotonic() - started,
            " (output truncated)" if result.truncated else "",
        )
        return result

    def _run(self, command, deadline, timeout, cap, kill_on_timeout=True):
        transport = self._require_transport()
        target = self.settings.target
        try:
            channel = transport.open_session(timeout=max(deadline - time.monotonic(), 0.1))
        except (SSHException, EOFError, OSError) as exc:
            raise SshError(f"cannot open an SSH channel to {target}: {exc}") from exc
        try:
            # exec_command waits for the server's answer without a timeout of its own;
            # closing the channel releases it.
            watchdog = threading.Timer(max(deadline - time.monotonic(), 0), channel.close)
            watchdog.daemon = True
            watchdog.start()
            try:
                channel.exec_command(command)
            except (SSHException, EOFError, OSError) as exc:
                if time.monotonic() >= deadline:
                    raise self._timeout_error(timeout) from exc
                raise SshError(f"cannot start a command on {target}: {exc}") from exc
            finally:
                watchdog.cancel()
            channel.shutdown_write()
            stdout = _Capture(cap)
            stderr = _Capture(cap, find_pid=kill_on_timeout)
            if not self._collect(channel, deadline, stdout, stderr):
                if kill_on_timeout:
                    # A command stopped while its shell was still starting has not
                    # reported its process group yet: wait a little for it.
                    grace = time.monotonic() + _PID_GRACE_SECONDS
                    while stderr.pid is None and time.monotonic() < grace:
                        step = min(grace, time.monotonic() + _POLL_SECONDS)
                        if self._collect(channel, step, stdout, stderr):
                            break  # it ended after all
                    self._kill(channel, stderr.pid)
                raise self._timeout_error(timeout)
            return CommandResult(
                channel.exit_status,
                stdout.text(),
                stderr.text(),
                stdout.truncated or stderr.truncated,
            )
        finally:
            channel.close()

    def _timeout_error(self, timeout):
        return SshTimeout(
            f"a command on {self.settings.target} did not finish within its "
            f"{timeout:g} s deadline and was stopped"
        )

    @staticmethod
    def _collect(channel, deadline, stdout, stderr):
        """Read both streams until EOF and exit status; False when the deadline passed."""
        streams = (
            (channel.recv_ready, channel.recv, stdout),
            (channel.recv_stderr_ready, channel.recv_stderr, stderr),
        )
        while True:
            progressed = False
            for ready, receive, capture in streams:
                if ready():
                    capture.feed(receive(_READ_CHUNK))
                    progressed = True
            drained = not channel.recv_ready() and not channel.recv_stderr_ready()
            if drained and (channel.eof_received or channel.closed):
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if not progressed:
                # The channel's pipe becomes readable when either stream gets data.
                select.select([channel], [], [], min(_POLL_SECONDS, remaining))
        return channel.status_event.wait(max(deadline - time.monotonic(), 0))

    def _kill(self, channel, pid):
        """Kill a timed-out command's process group on the host (best effort).

        Closing the channel alone would leave the remote command running. First the
        SSH "signal" request (RFC 4254 §6.9; paramiko has no public call for it, so it
        is built like paramiko's own exec request), which OpenSSH honours for
        non-root users only; then ``kill -KILL -- -PGID`` over a second channel, which
        works for root too.
        """
        message = paramiko.Message()
        message.add_byte(cMSG_CHANNEL_REQUEST)
        message.add_int(channel.remote_chanid)
        message.add_string("signal")
        message.add_boolean(False)
        message.add_string("KILL")
        try:
            channel.transport._send_user_message(message)
        except (SSHException, EOFError, OSError):
            _logger.debug("ssh %s: signal request not sent", self._who, exc_info=True)
        if pid is None:
            _logger.warning(
                "ssh %s: a timed-out command's process id is unknown; it may still run",
                self._who,
            )
            return
        command = shlex.join(["kill", "-KILL", "--", f"-{pid}"])
        try:
            self._run(command, time.monotonic() + _KILL_TIMEOUT, _KILL_TIMEOUT, 4096, False)
        except SshError as exc:
            _logger.warning(
                "ssh %s: could not kill the timed-out command (process group %s): %s",
                self._who,
                pid,
                exc,
            )
        else:
            _logger.info("ssh %s: killed timed-out process group %s", self._who, pid)

    # --- file operations ------------------------------------------------------

    def _helper(self, name, script, *args, timeout=None):
        return self.run(["sh", "-c", script, name, *args], timeout=timeout)

    def path_exists(self, path):
        """True when ``path`` exists on the host (a dangling symlink counts)."""
        path = check_path(path)
        result = self._helper("saas-path-exists", _EXISTS_SCRIPT, path)
        if result.exit_status == 0:
            return True
        if result.exit_status == _MISSING:
            return False
        raise self._command_error(f"cannot check {path}", result)

    def copy_tree(self, src_dir, dst_dir):
        """Copy the directory ``src_dir`` to ``dst_dir`` (which must not exist) on the host.

        Returns True when copied, False when ``src_dir`` does not exist: Odoo creates
        a database's filestore on its first attachment, so a template without
        attachments has none and there is nothing to copy (nothing is created then).

        The copy (``cp -a``: modes, timestamps, symlinks kept) goes to a hidden sibling
        of ``dst_dir`` that is renamed to ``dst_dir`` once complete, so ``dst_dir``
        appears whole or not at all; on failure the sibling is removed. Nothing that
        existed before is touched. The parent directory of ``dst_dir`` must exist.

        Raises :class:`RemotePathExists` (``dst_dir`` exists), :class:`InvalidInput`
        (bad path, ``dst_dir`` inside ``src_dir``), :class:`SshCommandError` (source
        not a directory, copy failed), :class:`SshTimeout`, :class:`SshError`.
        """
        src = check_path(src_dir)
        dst = check_path(dst_dir)
        if src == dst or dst.startswith(src + "/") or src.startswith(dst + "/"):
            raise InvalidInput(f"cannot copy {src} to {dst}: one contains the other")
        parent, name = posixpath.split(dst)
        tmp = posixpath.join(parent, f".{name[:100]}.saas-copy-{secrets.token_hex(8)}")
        started = time.monotonic()
        try:
            result = self._helper("saas-copy-tree", _COPY_SCRIPT, src, dst, tmp)
        except SshError:
            # Timed out or connection lost mid-copy: the rename is the last step, so
            # dst_dir was not made by this call; remove the partial sibling if we can.
            self._remove_leftover(tmp)
            raise
        status = result.exit_status
        duration = time.monotonic() - started
        if status == 0:
            _logger.info("ssh %s: copied %s to %s in %.2f s", self._who, src, dst, duration)
            return True
        if status == _MISSING:
            _logger.info("ssh %s: %s does not exist, nothing to copy", self._who, src)
            return False
        if status == _EXISTS:
            _logger.warning("ssh %s: not copying %s: %s already exists", self._who, src, dst)
            raise RemotePathExists(f"{dst} already exists on {self.settings.target}")
        if status == _NOT_A_DIRECTORY:
            raise self._command_error(f"cannot copy {src}: not a directory", result)
        raise self._command_error(f"copying {src} to {dst} failed", result)

    def _remove_leftover(self, tmp):
        error = None
        # A killed cp may still be exiting while rm runs; a second pass catches that.
        for _attempt in range(3):
            try:
                result = self._helper("saas-remove-tree", _REMOVE_SCRIPT, tmp, timeout=60)
            except SshError as exc:
                error = exc
                break
            if result.exit_status in (0, _MISSING):
                return
            error = result.stderr.strip()[-_STDERR_EXCERPT:]
        _logger.error(
            "ssh %s: could not remove the partial copy %s (%s); remove it by hand",
            self._who,
            tmp,
            error,
        )

    def remove_tree(self, path):
        """Remove ``path`` (directory tree or file) on the host, like ``rm -rf``.

        Returns True when something was removed, False when ``path`` did not exist.
        Refuses (:class:`InvalidInput`) empty, relative, ``/``, top-level and
        ``..``-containing paths. A symlink is removed, not followed.
        """
        path = check_path(path, for_removal=True)
        started = time.monotonic()
        result = self._helper("saas-remove-tree", _REMOVE_SCRIPT, path)
        if result.exit_status == _MISSING:
            _logger.info("ssh %s: %s does not exist, nothing to remove", self._who, path)
            return False
        if result.exit_status != 0:
            raise self._command_error(f"removing {path} failed", result)
        _logger.info("ssh %s: removed %s in %.2f s", self._who, path, time.monotonic() - started)
        return True

    def _command_error(self, what, result):
        excerpt = result.stderr.strip()[-_STDERR_EXCERPT:]
        message = f"{what} on {self.settings.target} (exit status {result.exit_status})"
        if excerpt:
            message += f": {excerpt}"
        _logger.warning("ssh %s: %s", self._who, message)
        return SshCommandError(message, result.exit_status, excerpt)
