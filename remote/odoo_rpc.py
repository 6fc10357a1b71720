"""A JSON-RPC client for the Odoo servers an operator manages.

Every call is bounded in time twice: ``connect_timeout`` bounds name
resolution plus the TCP connect (and the TLS handshake that follows), and
``timeout`` bounds the *whole* call, from the first DNS query to the last byte
of the answer, however slowly the server trickles it (see :mod:`.transport`,
which enforces that deadline where the bytes are read).

Other guarantees: TLS is always verified (``verify`` is ``True`` or the path
of a CA bundle; it cannot be turned off), the POST never follows a redirect,
the answer's size is capped, and proxies, ``.netrc`` credentials and CA
bundles from the environment are ignored (``trust_env`` is off) so that a
call does exactly what its arguments say. Arguments are validated before
anything is sent.

Secrets (master password, user passwords) travel only in the request body.
They are never put in a log line or an exception message; when a server
echoes one back in an error message it is masked.

Slightly over 500 lines: each Odoo service method validates its own arguments
and documents its Odoo 18 signature; the transport is in its own module.
"""

import http.client
import itertools
import json
import logging
import math
import os
import time
from urllib.parse import urlsplit

import requests
import urllib3

from .exceptions import (
    InvalidInput,
    RpcError,
    RpcProtocolError,
    RpcRemoteError,
)
from .transport import DeadlineAdapter, call_deadline, transport_error

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
        adapter = DeadlineAdapter(max_retries=0)
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
        with call_deadline(total):
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
        return self._unwrap(payload, request_id, what, redact)

    def _transport_error(self, exc, what, total):
        where = f"{self.base_url} ({what})"
        return transport_error(exc, where, urlsplit(self.base_url).hostname, total)

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
            # by the call's deadline (see transport.call_deadline).
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

    def database_exists(self, db_name):
        """``db.db_exist``: whether the server can connect to ``db_name``."""
        _text(db_name, "db_name")
        return bool(self.call("db", "db_exist", db_name))
