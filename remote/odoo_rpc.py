"""A JSON-RPC client for the Odoo servers an operator manages.

Every call is bounded in time twice: ``connect_timeout`` bounds name
resolution plus the TCP connect (and the TLS handshake that follows), and
``timeout`` bounds the *whole* call, from the first DNS query to the last byte
of the answer. The total deadline is enforced where the bytes are read, not
by per-``recv`` timeouts alone: every socket read of the call (status line,
headers, chunk sizes, body) first sets the socket timeout to the time left
and is refused once none is left, so a server that trickles its answer one
byte at a time cannot hold a call past its deadline. Name resolution runs in
a helper thread that is waited for no longer than the time left, because
``getaddrinfo`` itself takes no timeout.

Other guarantees: TLS is always verified (``verify`` is ``True`` or the path
of a CA bundle; it cannot be turned off), the POST never follows a redirect,
the answer's size is capped, and proxies, ``.netrc`` credentials and CA
bundles from the environment are ignored (``trust_env`` is off) so that a
call does exactly what its arguments say.

Secrets (master password, user passwords) travel only in the request body.
They are never put in a log line or an exception message; when a server
echoes one back in an error message it is masked.
"""

import http.client
import io
import ipaddress
import itertools
import json
import logging
import math
import os
import socket
import ssl
import threading
import time
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from .exceptions import (
    InvalidInput,
    RpcError,
    RpcProtocolError,
    RpcRemoteError,
    RpcTimeout,
    RpcTransportError,
)

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "USER_AGENT",
    "OdooRpcClient",
    "validate_base_url",
]

_logger = logging.getLogger(__name__)

USER_AGENT = "saas_manager/18.0 (Odoo JSON-RPC client)"
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024
# Creating a database installs ``base`` (and demo data when asked): minutes,
# not seconds. Dropping one waits for its sessions to end.
CREATE_DATABASE_TIMEOUT = 900.0
DROP_DATABASE_TIMEOUT = 300.0

_READ_SIZE = 64 * 1024
_MAX_REMOTE_MESSAGE = 1000
_MASK = "********"

# next() on itertools.count is atomic under the GIL: ids stay unique per
# process even when several threads call at once.
_request_ids = itertools.count(1)

# The deadline of the call running in the current thread, read by the
# connection and response classes below, which requests and urllib3
# instantiate deep inside a call where no argument can reach them.
_call_state = threading.local()


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


class _DeadlineAdapter(HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs):
        result = super().init_poolmanager(*args, **kwargs)
        # An instance attribute in urllib3 1.26 (it points at the module's
        # dict): replace it, never mutate it.
        self.poolmanager.pool_classes_by_scheme = {
            "http": _HTTPConnectionPool,
            "https": _HTTPSConnectionPool,
        }
        return result

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        # trust_env is off and no proxy is ever passed; refuse loudly rather
        # than silently lose the deadline through urllib3's own classes.
        raise requests.exceptions.InvalidProxyURL("proxies are not supported")


# --- validation -------------------------------------------------------------


def validate_base_url(base_url):
    """Return ``base_url`` without its trailing slashes, or raise InvalidInput.

    Accepted: ``http://`` or ``https://``, a host, an optional port and path;
    no credentials, query or fragment, no whitespace or control characters.
    """
    if not isinstance(base_url, str) or not base_url.strip():
        raise InvalidInput("The server URL is empty.")
    if any(char.isspace() or ord(char) < 32 or ord(char) == 127 for char in base_url):
        raise InvalidInput("The server URL contains spaces or control characters.")
    parts = urlsplit(base_url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise InvalidInput("The server URL must start with http:// or https://.")
    if "@" in parts.netloc:
        # The userinfo is a secret: keep it out of the message too.
        raise InvalidInput(
            "The server URL must not contain credentials (user:password@host); "
            "pass them as call arguments."
        )
    if not parts.hostname:
        raise InvalidInput(f"The server URL {base_url} has no host name.")
    try:
        parts.port  # noqa: B018 -- urlsplit validates the port lazily
    except ValueError as exc:
        raise InvalidInput(f"The server URL {base_url} has an invalid port.") from exc
    if parts.query or parts.fragment or base_url.endswith(("?", "#")):
        raise InvalidInput(f"The server URL {base_url} must not have a query or a fragment.")
    return base_url.rstrip("/")


def _positive_number(value, what):
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise InvalidInput(f"{what} must be a positive number of seconds, not {value!r}.")
    return float(value)


def _validate_verify(verify):
    if verify is True:
        return True
    if verify is False or verify is None:
        raise InvalidInput(
            "TLS verification cannot be turned off; for a private or self-signed "
            "certificate pass the path of its CA bundle as verify."
        )
    if isinstance(verify, str | os.PathLike):
        path = os.fspath(verify)
        if not os.path.isfile(path):
            raise InvalidInput(f"The CA bundle {path} does not exist or is not a file.")
        return path
    raise InvalidInput(f"verify must be True or the path of a CA bundle, not {verify!r}.")


def _text(value, what):
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{what} must be a non-empty string.")
    return value


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
    if isinstance(error, urllib3.exceptions.NewConnectionError):
        # A subclass of ConnectTimeoutError in urllib3 1.26, yet a refusal.
        return False
    return isinstance(
        error,
        TimeoutError
        | requests.exceptions.Timeout
        | urllib3.exceptions.ConnectTimeoutError
        | urllib3.exceptions.ReadTimeoutError,
    )


def _ssl_reason(chain):
    for error in chain:
        if isinstance(error, ssl.SSLCertVerificationError):
            return f"certificate verification failed ({error.verify_message})"
    for error in chain:
        if isinstance(error, ssl.SSLError) and error.reason:
            return f"TLS failure ({error.reason.replace('_', ' ').lower()})"
    return "TLS failure"


def _redirect_target(location, base_url):
    """`` to host <host[:port]>`` of a Location header (never its path or query)."""
    if not location:
        return " without a Location"
    try:
        target = urlsplit(location)
        host = target.hostname or urlsplit(base_url).hostname
        port = target.port
    except ValueError:
        return " to an invalid Location"
    return f" to host {host}:{port}" if port else f" to host {host}"


# --- the client -------------------------------------------------------------


class OdooRpcClient:
    """Calls one Odoo server over JSON-RPC (``POST <base_url>/jsonrpc``).

    :param base_url: ``http(s)://host[:port][/path]``; checked by
        :func:`validate_base_url` (raises :class:`InvalidInput`).
    :param connect_timeout: seconds for name resolution, TCP connect and TLS
        handshake together.
    :param timeout: seconds for a whole call, connect included; methods that
        are known to be slow (database creation) take their own.
    :param verify: ``True`` (system CAs via certifi) or the path of a CA
        bundle file; TLS verification cannot be disabled.
    :param max_response_bytes: answers bigger than this are refused.

    Errors: :class:`RpcTimeout` (connect or total deadline ran out),
    :class:`RpcTransportError` (refused, unresolvable, TLS, reset),
    :class:`RpcProtocolError` (HTTP status other than 200, redirect, not
    JSON, not JSON-RPC 2.0, wrong id, too big), :class:`RpcRemoteError` (the
    server answered with a JSON-RPC ``error``). Their messages name the URL
    and the service.method, never an argument.

    Not meant to be shared by threads calling at the same time (its
    ``requests.Session`` is not); one client per thread is cheap.
    """

    def __init__(
        self,
        base_url,
        *,
        connect_timeout=5.0,
        timeout=10.0,
        verify=True,
        max_response_bytes=DEFAULT_MAX_RESPONSE_BYTES,
    ):
        self.base_url = validate_base_url(base_url)
        self.endpoint = f"{self.base_url}/jsonrpc"
        self.connect_timeout = _positive_number(connect_timeout, "connect_timeout")
        self.timeout = _positive_number(timeout, "timeout")
        self.verify = _validate_verify(verify)
        if (
            isinstance(max_response_bytes, bool)
            or not isinstance(max_response_bytes, int)
            or max_response_bytes <= 0
        ):
            raise InvalidInput("max_response_bytes must be a positive integer.")
        self.max_response_bytes = max_response_bytes

        session = requests.Session()
        # No proxies, .netrc credentials or CA bundles picked up from the
        # environment: the call does what the arguments say, nothing more.
        session.trust_env = False
        adapter = _DeadlineAdapter(max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        self._adapter = adapter
        session.headers.update(
            {
                "User-Agent": USER_AGENT,
                "Accept": "application/json",
                # A compressed answer could expand past the size cap.
                "Accept-Encoding": "identity",
            }
        )
        self._session = session

    def __repr__(self):
        return f"<OdooRpcClient {self.base_url}>"

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        """Close the pooled connections."""
        self._session.close()

    # --- generic call ---------------------------------------------------

    def call(self, service, method, *args, timeout=None, redact=()):
        """Call ``service.method(*args)`` and return its ``result``.

        :param timeout: total seconds for this call (default: the client's).
        :param redact: strings (secrets among ``args``) to mask should the
            server echo them in an error message.
        """
        _text(service, "service")
        _text(method, "method")
        total = self.timeout if timeout is None else _positive_number(timeout, "timeout")
        request_id = next(_request_ids)
        try:
            body = json.dumps(
                {
                    "jsonrpc": "2.0",
                    "method": "call",
                    "params": {"service": service, "method": method, "args": list(args)},
                    "id": request_id,
                },
                allow_nan=False,
            ).encode()
        except (TypeError, ValueError) as exc:
            # json's messages name the type, never the value.
            raise InvalidInput(
                f"The arguments of {service}.{method} cannot be sent as JSON: {exc}"
            ) from None

        what = f"{service}.{method}"
        started = time.monotonic()
        try:
            result = self._post(body, request_id, what, total, redact)
        except RpcError as exc:
            _logger.info(
                "JSON-RPC %s %s failed after %d ms: %s",
                self.endpoint,
                what,
                (time.monotonic() - started) * 1000,
                exc,
            )
            raise
        _logger.debug(
            "JSON-RPC %s %s ok in %d ms", self.endpoint, what, (time.monotonic() - started) * 1000
        )
        return result

    def _post(self, body, request_id, what, total, redact):
        deadline = time.monotonic() + total
        previous = _deadline()
        _call_state.deadline = deadline
        try:
            prepared = self._session.prepare_request(
                requests.Request(
                    "POST",
                    self.endpoint,
                    data=body,
                    headers={"Content-Type": "application/json"},
                )
            )
            try:
                # The adapter, not Session.send: with allow_redirects=False
                # the session still reads a 3xx body whole (to find the next
                # request), with no size limit.
                response = self._adapter.send(
                    prepared,
                    stream=True,
                    timeout=(min(self.connect_timeout, total), total),
                    verify=self.verify,
                )
            except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError) as exc:
                raise self._transport_error(exc, what, total) from exc
            try:
                payload = self._read_answer(response, what, total)
            finally:
                # A no-op once the body was read to its end (the connection
                # went back to the pool); otherwise drops the connection.
                response.close()
        finally:
            _call_state.deadline = previous
        return self._unwrap(payload, request_id, what, redact)

    def _transport_error(self, exc, what, total):
        """The package's exception for a requests/urllib3/socket failure."""
        chain = _exception_chain(exc)
        where = f"{self.base_url} ({what})"
        if any(_is_timeout(error) for error in chain):
            return RpcTimeout(f"No answer from {where} within {total:g} s.")
        host = urlsplit(self.base_url).hostname
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

    def _read_answer(self, response, what, total):
        where = f"{self.base_url} ({what})"
        status = response.status_code
        if 300 <= status < 400:
            raise RpcProtocolError(
                f"{where} answered with a redirect (HTTP {status})"
                f"{_redirect_target(response.headers.get('Location'), self.base_url)}; "
                "it was not followed. Fix the server URL (scheme, host, path)."
            )
        if status != 200:
            reason = f" {response.reason[:60]}" if response.reason else ""
            raise RpcProtocolError(f"{where} answered with HTTP {status}{reason}.")

        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise RpcProtocolError(f"{where} answered with a {encoding}-encoded body.")
        content_type = response.headers.get("Content-Type", "")
        mimetype = content_type.split(";", 1)[0].strip().lower()
        if mimetype != "application/json":
            raise RpcProtocolError(
                f"{where} answered with {mimetype or 'no content type'}, not JSON: "
                "is this the URL of an Odoo server?"
            )

        cap = self.max_response_bytes
        length = response.headers.get("Content-Length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                raise RpcProtocolError(
                    f"{where} answered with an invalid Content-Length."
                ) from None
            if declared > cap:
                raise RpcProtocolError(
                    f"The answer of {where} is {declared} bytes, more than the "
                    f"{cap} bytes allowed."
                )

        chunks, size = [], 0
        try:
            # Bounded: each pass either ends the loop or adds at least one
            # byte to ``size``, which may not pass ``cap``; each read is bounded
            # by the call's deadline (see _DeadlineReader).
            while True:
                data = response.raw.read(min(_READ_SIZE, cap + 1 - size), decode_content=False)
                if not data:
                    break
                size += len(data)
                if size > cap:
                    raise RpcProtocolError(
                        f"The answer of {where} is more than the {cap} bytes allowed."
                    )
                chunks.append(data)
        except (
            requests.exceptions.RequestException,
            urllib3.exceptions.HTTPError,
            http.client.HTTPException,
            OSError,
        ) as exc:
            raise self._transport_error(exc, what, total) from exc

        try:
            return json.loads(b"".join(chunks))
        except (ValueError, RecursionError):
            raise RpcProtocolError(f"{where} answered with invalid JSON.") from None

    def _unwrap(self, payload, request_id, what, redact):
        where = f"{self.base_url} ({what})"
        if not isinstance(payload, dict) or payload.get("jsonrpc") != "2.0":
            raise RpcProtocolError(f"{where} did not answer in JSON-RPC 2.0.")
        answer_id = payload.get("id")
        if type(answer_id) is not int or answer_id != request_id:
            shown = repr(answer_id)
            if len(shown) > 40:
                shown = shown[:37] + "..."
            raise RpcProtocolError(
                f"{where} answered with id {shown} to the request with id {request_id}."
            )
        if "error" in payload:
            if "result" in payload:
                raise RpcProtocolError(f"{where} answered with both a result and an error.")
            raise self._remote_error(payload["error"], where, redact)
        # Odoo leaves "result" out when the method returned None.
        return payload.get("result")

    @staticmethod
    def _remote_error(error, where, redact):
        if not isinstance(error, dict):
            return RpcProtocolError(f"{where} answered with a malformed JSON-RPC error.")
        data = error.get("data") if isinstance(error.get("data"), dict) else {}
        message = data.get("message")
        if not isinstance(message, str) or not message.strip():
            message = error.get("message")
        if not isinstance(message, str) or not message.strip():
            message = "unknown error"
        message = message.strip()
        for secret in redact:
            if isinstance(secret, str) and secret:
                message = message.replace(secret, _MASK)
        if len(message) > _MAX_REMOTE_MESSAGE:
            message = message[: _MAX_REMOTE_MESSAGE - 3] + "..."
        name = data.get("name") if isinstance(data.get("name"), str) else None
        code = error.get("code")
        if isinstance(code, bool) or not isinstance(code, int):
            code = None
        suffix = f" [{name}]" if name else ""
        return RpcRemoteError(f"{where} failed on the server: {message}{suffix}", code, name)

    # --- Odoo services ----------------------------------------------------

    def version(self):
        """``common.version``: a dict with at least ``server_version``."""
        result = self.call("common", "version")
        if not isinstance(result, dict) or not isinstance(result.get("server_version"), str):
            raise RpcProtocolError(
                f"{self.base_url} (common.version) gave no server_version: "
                "is this an Odoo server?"
            )
        return result

    def login(self, db, login, password):
        """``common.login``: the user id, or ``None`` when the login is refused."""
        _text(db, "db")
        _text(login, "login")
        _text(password, "password")
        uid = self.call("common", "login", db, login, password, redact=(password,))
        if uid is False or uid is None:
            return None
        if isinstance(uid, bool) or not isinstance(uid, int):
            raise RpcProtocolError(f"{self.base_url} (common.login) answered with a non-integer.")
        return uid

    def execute_kw(self, db, uid, password, model, method, args, kwargs=None, *, timeout=None):
        """``object.execute_kw``: call ``model.method(*args, **kwargs)`` as ``uid``."""
        _text(db, "db")
        _text(password, "password")
        _text(model, "model")
        _text(method, "method")
        if isinstance(uid, bool) or not isinstance(uid, int):
            raise InvalidInput("uid must be an integer.")
        if not isinstance(args, list | tuple):
            raise InvalidInput("args must be a list.")
        if kwargs is not None and not isinstance(kwargs, dict):
            raise InvalidInput("kwargs must be a dict.")
        return self.call(
            "object",
            "execute_kw",
            db,
            uid,
            password,
            model,
            method,
            list(args),
            kwargs or {},
            timeout=timeout,
            redact=(password,),
        )

    def create_database(
        self,
        master_password,
        db_name,
        demo,
        lang,
        admin_password,
        admin_login="admin",
        country_code=None,
        phone=None,
        *,
        timeout=None,
    ):
        """``db.create_database``: create and initialise ``db_name``; True.

        Needs ``list_db = True`` on the managed server. Odoo answers only once
        ``base`` is installed, so ``timeout`` defaults to the longer of the
        client's and ``CREATE_DATABASE_TIMEOUT``.
        """
        if timeout is None:
            timeout = max(self.timeout, CREATE_DATABASE_TIMEOUT)
        _text(master_password, "master_password")
        _text(db_name, "db_name")
        _text(lang, "lang")
        _text(admin_password, "admin_password")
        _text(admin_login, "admin_login")
        return self.call(
            "db",
            "create_database",
            master_password,
            db_name,
            bool(demo),
            lang,
            admin_password,
            admin_login,
            country_code,
            phone,
            timeout=timeout,
            redact=(master_password, admin_password),
        )

    def drop_database(self, master_password, db_name, *, timeout=None):
        """``db.drop``: True when dropped, False when Odoo does not know it.

        ``timeout`` defaults to the longer of the client's and
        ``DROP_DATABASE_TIMEOUT``.
        """
        if timeout is None:
            timeout = max(self.timeout, DROP_DATABASE_TIMEOUT)
        _text(master_password, "master_password")
        _text(db_name, "db_name")
        result = self.call(
            "db", "drop", master_password, db_name, timeout=timeout, redact=(master_password,)
        )
        return bool(result)

    def list_databases(self):
        """``db.list``: the database names (needs ``list_db = True``)."""
        result = self.call("db", "list")
        if not isinstance(result, list) or not all(isinstance(name, str) for name in result):
            raise RpcProtocolError(f"{self.base_url} (db.list) did not answer with names.")
        return result

    def database_exists(self, db_name):
        """``db.db_exist``: whether the server can connect to ``db_name``."""
        _text(db_name, "db_name")
        return bool(self.call("db", "db_exist", db_name))
