"""HTTP with a deadline: a requests adapter whose sockets honour a call's total time.

``requests`` and ``urllib3`` bound each socket operation (connect, every
``recv``) but not a call as a whole: a server that trickles its answer one byte
at a time keeps a call alive indefinitely. :class:`DeadlineAdapter` closes that
gap. Inside :func:`call_deadline`, every socket read of the call (status line,
headers, chunk sizes, body) first sets the socket timeout to the time left and
is refused once none is left; name resolution runs in a helper thread waited
for no longer than the time left (``getaddrinfo`` takes no timeout); connect,
TLS handshake and send share what the connect timeout and the deadline leave.

It works by subclassing urllib3's connection and pool classes (the hooks
``_new_conn``, ``send`` and ``response_class``, and the pool manager's
``pool_classes_by_scheme``), which urllib3 1.26 and 2.x both have; the
standalone suite runs against both (``scripts/requirements-test*.txt``).
Proxies are refused rather than silently served by urllib3's own classes.

:func:`transport_error` turns what requests, urllib3 and the sockets raise
into this package's ``RpcTimeout``/``RpcTransportError``. No protocol here:
:mod:`.odoo_rpc` builds JSON-RPC on top of it.
"""

import contextlib
import http.client
import io
import ipaddress
import socket
import ssl
import threading
import time

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from .exceptions import RpcProtocolError, RpcTimeout, RpcTransportError

__all__ = ["DeadlineAdapter", "call_deadline", "transport_error"]

# The deadline of the call running in the current thread, read by the
# connection and response classes below, which requests and urllib3
# instantiate deep inside a call where no argument can reach them.
_call_state = threading.local()


@contextlib.contextmanager
def call_deadline(seconds):
    """Bound what :class:`DeadlineAdapter` does in this block to ``seconds`` in all.

    Per thread; nested blocks restore the outer deadline when they end.
    """
    previous = _deadline()
    _call_state.deadline = time.monotonic() + seconds
    try:
        yield
    finally:
        _call_state.deadline = previous


def _deadline():
    return getattr(_call_state, "deadline", None)


def _time_left(deadline):
    """Seconds left before ``deadline``; TimeoutError (socket.timeout) when none."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the total deadline of the call has passed")
    return left


# --- transport: sockets that honour the call's deadline ---------------------


class _DeadlineReader(io.RawIOBase):
    """The raw stream under an HTTP response, bounded by a deadline.

    ``http.client`` reads through a ``BufferedReader`` whose ``read(n)`` and
    ``readline()`` loop over the raw stream until they have enough bytes.
    Each of those raw reads lands here and may block for at most the time
    left, and none starts after the deadline: the whole response, however it
    is trickled, is read before the deadline or not at all.
    """

    def __init__(self, socket_io, sock, deadline):
        super().__init__()
        self._socket_io = socket_io
        self._sock = sock
        self._read_deadline = deadline

    def readable(self):
        return True

    def readinto(self, buffer):
        self._sock.settimeout(_time_left(self._read_deadline))
        return self._socket_io.readinto(buffer)

    def fileno(self):
        return self._socket_io.fileno()

    def close(self):
        if not self.closed:
            # Closing the SocketIO releases its reference on the socket;
            # http.client relies on that to close a "Connection: close" socket.
            self._socket_io.close()
        return super().close()


class _DeadlineHTTPResponse(http.client.HTTPResponse):
    def __init__(self, sock, *args, **kwargs):
        super().__init__(sock, *args, **kwargs)
        deadline = _deadline()
        if deadline is not None:
            # Nothing has been read yet: swap the buffered reader for one over
            # the same SocketIO (detach() keeps that SocketIO open).
            socket_io = self.fp.detach()
            self.fp = io.BufferedReader(_DeadlineReader(socket_io, sock, deadline))


def _is_ip_address(host):
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _resolve(host, port, timeout):
    """``getaddrinfo`` waited for at most ``timeout`` seconds."""
    if _is_ip_address(host):
        return socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)

    outcome = {}
    finished = threading.Event()

    def resolve():
        try:
            outcome["infos"] = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
        except Exception as exc:  # handed over to the waiting thread below
            outcome["error"] = exc
        finally:
            finished.set()

    # A daemon thread: a resolver that never answers must not keep the
    # process alive; it ends on its own with the resolver's own timeout.
    threading.Thread(target=resolve, name=f"resolve {host}", daemon=True).start()
    if not finished.wait(timeout):
        raise TimeoutError(f"resolving {host} took longer than {timeout:.1f} s")
    error = outcome.get("error")
    if error is not None:
        if isinstance(error, OSError):
            raise error
        raise socket.gaierror(f"cannot resolve {host}: {error}")
    return outcome["infos"]


class _DeadlineConnectionMixin:
    """Connect and send within the connect timeout and the call's deadline."""

    response_class = _DeadlineHTTPResponse

    def _new_conn(self):
        now = time.monotonic()
        connect_timeout = self.timeout if isinstance(self.timeout, int | float) else None
        ends = [now + connect_timeout] if connect_timeout is not None else []
        deadline = _deadline()
        if deadline is not None:
            ends.append(deadline)
        connect_end = min(ends) if ends else now + 60.0
        host = self._dns_host.strip("[]")

        try:
            infos = _resolve(host, self.port, connect_end - time.monotonic())
        except TimeoutError as exc:
            raise urllib3.exceptions.ConnectTimeoutError(self, str(exc)) from exc
        except OSError as exc:
            raise urllib3.exceptions.NewConnectionError(
                self, f"Failed to resolve {host}: {exc}"
            ) from exc

        last_error = None
        for family, socktype, proto, _name, sockaddr in infos:
            left = connect_end - time.monotonic()
            if left <= 0:
                last_error = TimeoutError("connect timed out")
                break
            sock = socket.socket(family, socktype, proto)
            try:
                for option in self.socket_options or ():
                    sock.setsockopt(*option)
                sock.settimeout(left)
                sock.connect(sockaddr)
                # The TLS handshake, if any, runs on this socket next: give it
                # what is left of the connect budget, not a fresh one.
                sock.settimeout(max(connect_end - time.monotonic(), 0.001))
            except OSError as exc:
                sock.close()
                last_error = exc
                continue
            return sock

        if last_error is None or isinstance(last_error, TimeoutError):
            raise urllib3.exceptions.ConnectTimeoutError(
                self, f"Connection to {host} timed out (connect timeout={connect_timeout})"
            )
        raise urllib3.exceptions.NewConnectionError(
            self, f"Failed to establish a new connection: {last_error}"
        ) from last_error

    def send(self, data):
        # Sending gets the time left of the call: a pooled socket still has
        # the timeout of its last read, a new one what its connect left over.
        if self.sock is None and self.auto_open:
            self.connect()
        deadline = _deadline()
        if self.sock is not None and deadline is not None:
            self.sock.settimeout(_time_left(deadline))
        return super().send(data)


class _HTTPConnection(_DeadlineConnectionMixin, HTTPConnection):
    pass


class _HTTPSConnection(_DeadlineConnectionMixin, HTTPSConnection):
    pass


class _HTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class DeadlineAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` whose connections honour :func:`call_deadline`.

    Mount it with ``max_retries=0`` on a session whose ``trust_env`` is off.
    """

    def init_poolmanager(self, *args, **kwargs):
        result = super().init_poolmanager(*args, **kwargs)
        # An instance attribute in urllib3 1.26 and 2.x alike, pointing at the
        # module's dict: replace it, never mutate it.
        self.poolmanager.pool_classes_by_scheme = {
            "http": _HTTPConnectionPool,
            "https": _HTTPSConnectionPool,
        }
        return result

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        # trust_env is off and no proxy is ever passed; refuse loudly rather
        # than silently lose the deadline through urllib3's own classes.
        raise requests.exceptions.InvalidProxyURL("proxies are not supported")


# --- errors -----------------------------------------------------------------


def _exception_chain(exc, limit=25):
    """``exc`` and the exceptions it wraps (causes, urllib3 reasons, args)."""
    seen, queue, found = set(), [exc], []
    while queue and len(found) < limit:
        current = queue.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        found.append(current)
        queue.append(current.__cause__)
        queue.append(current.__context__)
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            queue.append(reason)
        queue.extend(arg for arg in current.args if isinstance(arg, BaseException))
    return found


def _is_timeout(error):
    """Whether ``error`` (one link of :func:`_exception_chain`) is a connect or deadline timeout."""
    if isinstance(error, urllib3.exceptions.NewConnectionError):
        # A subclass of ConnectTimeoutError in urllib3 1.26 and 2.x, yet a refusal.
        return False
    return isinstance(
        error,
        TimeoutError
        | requests.exceptions.Timeout
        | urllib3.exceptions.ConnectTimeoutError
        | urllib3.exceptions.ReadTimeoutError,
    )


def _ssl_reason(chain):
    """The TLS failure of an :func:`_exception_chain`, in an operator's words."""
    for error in chain:
        if isinstance(error, ssl.SSLCertVerificationError):
            return f"certificate verification failed ({error.verify_message})"
    for error in chain:
        if isinstance(error, ssl.SSLError) and error.reason:
            return f"TLS failure ({error.reason.replace('_', ' ').lower()})"
    return "TLS failure"


def transport_error(exc, where, host, total):
    """The package's exception for a requests/urllib3/socket failure of a call.

    ``where`` names the call in the message (URL and method), ``host`` the
    host whose name may not resolve, ``total`` the call's deadline in seconds.
    """
    chain = _exception_chain(exc)
    if any(_is_timeout(error) for error in chain):
        return RpcTimeout(f"No answer from {where} within {total:g} s.")
    # First match wins: the most specific reasons come first.
    reasons = (
        (ssl.SSLError | urllib3.exceptions.SSLError, RpcTransportError, None),
        (socket.gaierror, RpcTransportError, f"host name {host} cannot be resolved"),
        (ConnectionRefusedError, RpcTransportError, "connection refused"),
        (
            ConnectionResetError | http.client.RemoteDisconnected,
            RpcTransportError,
            "the connection was closed before a full answer came",
        ),
        (http.client.IncompleteRead, RpcTransportError, "the answer was cut short"),
        (http.client.HTTPException, RpcProtocolError, "the answer is not valid HTTP"),
    )
    for kind, error_class, reason in reasons:
        if any(isinstance(error, kind) for error in chain):
            return error_class(f"Cannot reach {where}: {reason or _ssl_reason(chain)}.")
    for error in chain:
        if isinstance(error, OSError) and error.strerror:
            return RpcTransportError(f"Cannot reach {where}: {error.strerror}.")
    return RpcTransportError(f"Cannot reach {where}: {type(exc).__name__}.")
