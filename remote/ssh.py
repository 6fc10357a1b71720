"""An SSH session to a managed host: pinned host key, bounded time, quoted commands.

::

    settings = SshSettings(host="10.0.0.5", username="odoo", private_key=key_text,
                           host_key="ssh-ed25519 AAAAC3Nza... root@eu1")
    with SshSession(settings) as session:
        result = session.run(["du", "-s", "/var/lib/odoo/filestore/client1"])

File operations over a session (copy, remove) are in :mod:`.filestore`; key parsing
is in :mod:`.ssh_keys`. ``SshSession(settings, reuse=True)`` takes an idle
connection kept for exactly these settings and gives it back when it closes
(:mod:`.ssh_pool`): the provisions and terminations on one server share one
handshake.

Security rules:

* The connection is paramiko's ``SSHClient`` with the pinned host key(s) as its only
  known keys and ``RejectPolicy``: no ``known_hosts`` file, no agent, no keys found on
  disk, no "accept new key" policy. An empty pin is refused before any network
  traffic. Only the pinned key's type is offered during key exchange (the others are
  disabled), so a server that also has keys of other types cannot make the check fail
  by negotiating one of those, and a different key of that type is refused.
* Every argument of a remote command goes through :func:`shlex.quote`; scripts are
  constants and receive values as positional parameters only.
* Every step has a deadline: TCP connect, banner, key exchange, authentication, and
  each remote command (whose remote process group is killed when it runs out).
* A remote command does not outlive its channel: it runs under a small wrapper that
  watches the channel's input and kills the command's process group when it ends,
  which sshd does when this side closes the channel, the connection drops, or this
  process dies (even by ``kill -9``).
* Messages and log lines name host, port, user and paths, never a password or key.

The remote host needs a POSIX ``sh`` and a login shell that runs ``exec`` (every
Linux distribution that packages Odoo has both).

Somewhat over 500 lines, on purpose: connecting, running a command under its
deadline and killing it when that passes are one state machine around one
paramiko client; split, each half would need the other's internals.
"""

import logging
import re
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
    BadHostKeyException,
    IncompatiblePeer,
    SSHException,
)

from . import ssh_pool
from .exceptions import (
    InvalidInput,
    SshAuthError,
    SshError,
    SshHostKeyError,
    SshTimeout,
)
from .ssh_keys import HOST_KEY_ALGORITHMS, fingerprint, load_private_key, parse_host_keys

_logger = logging.getLogger(__name__)

__all__ = ["CommandResult", "SshSession", "SshSettings"]

DEFAULT_MAX_OUTPUT_BYTES = 1024 * 1024
_READ_CHUNK = 64 * 1024
_POLL_SECONDS = 0.1
_KILL_TIMEOUT = 15.0
# First line a command writes to stderr: the remote process group to kill on timeout.
_PID_MARKER = "saas-ssh-pgid:"
_PID_LINE = re.compile(rb"saas-ssh-pgid:(\d+)\n")
_PID_SEARCH_BYTES = 4096
_PID_GRACE_SECONDS = 5.0

# Every command runs under this POSIX sh script, its argv as "$@". sshd starts the
# login shell in a new session (setsid) and the shell execs this script, so $$ is the
# process group of everything the command starts: reported first, it lets a
# timed-out command be killed whole, whoever the login user is. The channel's input
# moves to fd 3, which a watcher reads (nothing is ever sent) until it ends: sshd
# closes it when the channel or the connection goes away, also when this client is
# killed; the watcher then kills the process group. The command gets /dev/null.
_WRAPPER = (
    'echo "saas-ssh-pgid:$$" >&2\n'
    "exec 3<&0 </dev/null\n"
    '"$@" 3<&- &\n'
    "cmd=$!\n"
    "{ while read -r _ <&3; do :; done; kill -KILL -$$; } >/dev/null 2>&1 &\n"
    "watch=$!\n"
    'wait "$cmd"\n'
    "status=$?\n"
    'kill -KILL "$watch" 2>/dev/null\n'
    'exit "$status"\n'
)

# Every host key algorithm paramiko knows (its default preference list) that the
# pinned types do not need is disabled for the key exchange.
_KNOWN_HOST_KEY_ALGORITHMS = tuple(
    dict.fromkeys(
        [
            *getattr(paramiko.Transport, "_preferred_keys", ()),
            *(name for names in HOST_KEY_ALGORITHMS.values() for name in names),
            "ssh-rsa",
            "ssh-dss",
        ]
    )
)


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


class _Credentials:
    """paramiko's ``auth_strategy`` hook: our attempts, our messages.

    The key first, then the password; each refusal is named in the final message.
    """

    def __init__(self, settings, pkey, who):
        self.settings = settings
        self.pkey = pkey
        self.who = who

    def authenticate(self, transport):
        settings = self.settings
        attempts = []
        if self.pkey is not None:
            attempts.append(
                ("private key", lambda: transport.auth_publickey(settings.username, self.pkey))
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
                return []
            refusals.append(
                f"{method} accepted but the server asks for more ({', '.join(remaining or [])}), "
                "which is not supported"
            )
        raise SshAuthError(f"{self.who} refused the credentials: {'; '.join(refusals)}")


class SshSession:
    """One authenticated SSH connection, for several commands on one host.

    Use it as a context manager (``with SshSession(settings) as session: ...``), or
    call :meth:`open` and :meth:`close`. One thread at a time per session.
    """

    def __init__(self, settings, *, reuse=False, pool=None):
        self.settings = settings
        self._client = None
        self._who = f"{settings.username}@{settings.target}"
        # reuse: take an idle connection kept for these settings, give it back on
        # close (see :mod:`.ssh_pool`).
        self._pool = (ssh_pool.POOL if pool is None else pool) if reuse else None
        self._reused = False  # the open connection came from the pool

    def __repr__(self):
        state = "open" if self._client is not None else "closed"
        return f"<SshSession {self._who} {state}>"

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()

    @property
    def target(self):
        """``host:port`` of the host, for messages."""
        return self.settings.target

    @property
    def who(self):
        """``user@host:port``, for messages and log lines."""
        return self._who

    # --- connection ---------------------------------------------------------

    def open(self):
        """Connect, check the host key, authenticate. Idempotent.

        Raises :class:`InvalidInput` (incomplete settings), :class:`SshHostKeyError`
        (nothing pinned, or another key presented), :class:`SshAuthError`,
        :class:`SshTimeout` or :class:`SshError` (network, protocol).
        """
        if self._client is not None:
            return self
        return self._open(from_pool=self._pool is not None)

    def _open(self, from_pool):
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
        if from_pool:
            # Kept only under the digest of these very credentials and pin.
            self._client = self._pool.take(ssh_pool.pool_key(settings))
            if self._client is not None:
                self._reused = True
                _logger.debug("ssh %s: reusing a kept connection", self._who)
                return self
        # Everything that can be refused offline is refused before the first packet.
        pinned = parse_host_keys(settings.host_key, target)
        pkey = load_private_key(settings.private_key, settings.private_key_passphrase, self._who)
        if pkey is None and not settings.password:
            raise InvalidInput(f"no SSH password or private key set for {self._who}")
        started = time.monotonic()
        try:
            self._client = self._connect(pinned, pkey)
        except SshError as exc:
            _logger.warning(
                "ssh connect %s failed after %.2f s: %s",
                self._who,
                time.monotonic() - started,
                exc,
            )
            raise
        server_key = self._client.get_transport().get_remote_server_key()
        _logger.info(
            "ssh connect %s: ok in %.2f s (host key %s %s)",
            self._who,
            time.monotonic() - started,
            server_key.get_name(),
            fingerprint(server_key.asbytes()),
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
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        # The name SSHClient looks the host up under ("[host]:port" off port 22).
        known_as = settings.host if settings.port == 22 else f"[{settings.host}]:{settings.port}"
        allowed = set()
        for key in pinned:
            client.get_host_keys().add(known_as, key.key_type, key.to_pkey())
            allowed.update(HOST_KEY_ALGORITHMS[key.key_type])
        disabled = [name for name in _KNOWN_HOST_KEY_ALGORITHMS if name not in allowed]
        try:
            client.connect(
                settings.host,
                port=settings.port,
                username=settings.username,
                sock=sock,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
                allow_agent=False,
                look_for_keys=False,
                disabled_algorithms={"keys": disabled},
                auth_strategy=_Credentials(settings, pkey, self._who),
            )
        except BaseException as exc:
            client.close()
            sock.close()
            if isinstance(exc, SshError) or not isinstance(exc, Exception):
                raise
            raise self._connect_error(exc, pinned) from exc
        return client

    def _connect_error(self, exc, pinned):
        """Our exception for what ``SSHClient.connect`` raised before authentication."""
        settings = self.settings
        target = settings.target
        if isinstance(exc, BadHostKeyException):
            presented = exc.key.asbytes()
            expected = ", ".join(f"{key.key_type} {key.fingerprint}" for key in pinned)
            return SshHostKeyError(
                f"host key mismatch for {target}: the server presented "
                f"{exc.key.get_name()} {fingerprint(presented)} but "
                f"{expected} is pinned; if the server was reinstalled, check and pin its "
                f"new key (ssh-keyscan -p {settings.port} {settings.host}), otherwise "
                "someone may be intercepting the connection"
            )
        if isinstance(exc, IncompatiblePeer):
            if "host key" in str(exc):
                types = ", ".join(sorted({key.key_type for key in pinned}))
                return SshHostKeyError(
                    f"{target} offers no host key of the pinned type ({types}); "
                    f"check the pinned key with ssh-keyscan -p {settings.port} {settings.host}"
                )
            return SshError(f"SSH negotiation with {target} failed: {exc}")
        if isinstance(exc, SSHException) and str(exc) == "No existing session":
            # start_client returns quietly when its timeout runs out; SSHClient then
            # asks for the server's key of a handshake that did not finish.
            return SshTimeout(
                f"SSH handshake with {target} did not finish within "
                f"{settings.connect_timeout:g} s"
            )
        if isinstance(exc, SSHException | EOFError | OSError):
            return SshError(f"SSH handshake with {target} failed: {exc}")
        return SshError(f"SSH connection to {target} failed: {type(exc).__name__}: {exc}")

    def close(self, *, keep=True):
        """Close the session (safe to call more than once). With ``reuse``, its live
        connection is kept for the next session instead, unless ``keep`` is False."""
        client, self._client = self._client, None
        self._reused = False
        if client is None:
            return
        if (
            keep
            and self._pool is not None
            and self._pool.give(ssh_pool.pool_key(self.settings), client)
        ):
            _logger.debug("ssh %s: connection kept for reuse", self._who)
            return
        client.close()
        _logger.debug("ssh %s: closed", self._who)

    def _require_transport(self):
        transport = self._client.get_transport() if self._client is not None else None
        if transport is None or not transport.is_active():
            self.close()
            raise SshError(f"the SSH session with {self._who} is not open")
        return transport

    def open_channel(self, timeout, **kwargs):
        """A new channel on this session's connection (``Transport.open_session``
        arguments). A kept connection that turns out dead is replaced by a new one,
        once: nothing ran on it. Raises :class:`SshError`."""
        while True:
            transport = self._client.get_transport() if self._client is not None else None
            error = None
            if transport is not None and transport.is_active():
                # A live connection answers within one round trip: a kept one that
                # does not within the connect timeout is taken for dead.
                wait = min(timeout, self.settings.connect_timeout) if self._reused else timeout
                try:
                    return transport.open_session(timeout=wait, **kwargs)
                except (SSHException, EOFError, OSError) as exc:
                    error = exc
            if not self._reused:
                self.close(keep=False)  # a connection that gives no channel is not kept
                if error is None:
                    raise SshError(f"the SSH session with {self._who} is not open")
                raise SshError(
                    f"cannot open an SSH channel to {self.settings.target}: {error}"
                ) from error
            _logger.info("ssh %s: a kept connection had ended; connecting again", self._who)
            self.close(keep=False)
            self._open(from_pool=False)

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
        status is returned, not raised. The command reads an empty stdin, and dies
        with its whole process group as soon as its channel is gone (this session
        closed, or this process killed: sshd then closes the wrapper's stdin).
        """
        if not isinstance(argv, list | tuple) or not argv:
            raise InvalidInput("a command is a non-empty list of arguments")
        if not all(isinstance(arg, str) for arg in argv):
            raise InvalidInput("every command argument must be a string")
        if any("\0" in arg for arg in argv):
            raise InvalidInput("a command argument cannot contain a NUL byte")
        timeout = self.settings.command_timeout if timeout is None else timeout
        cap = self.settings.max_output_bytes if max_output is None else max_output
        # The login shell execs the wrapper (a POSIX sh, whatever the login shell);
        # argv reaches it as positional parameters only.
        command = f"exec sh -c {shlex.quote(_WRAPPER)} saas-ssh {shlex.join(argv)}"
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
        target = self.settings.target
        channel = self.open_channel(max(deadline - time.monotonic(), 0.1))
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
            # No shutdown_write(): the end of our input is the wrapper's signal to
            # kill the command (the command itself reads /dev/null).
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
