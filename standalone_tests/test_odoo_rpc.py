"""remote.odoo_rpc (the JSON-RPC protocol and its checks) against a real HTTP peer on 127.0.0.1."""

import json
import logging

import _http_peer as hp
import pytest

from remote import odoo_rpc
from remote.exceptions import (
    InvalidInput,
    RpcError,
    RpcProtocolError,
    RpcRemoteError,
)

MASTER = "master-Secret-7c1d"
ADMIN = "admin-Secret-93fa"
USER_PASSWORD = "user-Secret-5b02"
SECRETS = (MASTER, ADMIN, USER_PASSWORD)

JSON_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"


@pytest.fixture
def serve():
    peers = hp.Peers()
    yield peers
    peers.stop_all()


def client(url, **kwargs):
    kwargs.setdefault("connect_timeout", 2.0)
    kwargs.setdefault("timeout", 5.0)
    return odoo_rpc.OdooRpcClient(url, **kwargs)


def assert_exact(exc_info, cls):
    # RpcTimeout is an RpcTransportError: check the exact class where it matters.
    assert type(exc_info.value) is cls, f"{type(exc_info.value).__name__}: {exc_info.value}"


# --- healthy answers and the request sent ----------------------------------


def test_version_of_a_healthy_server(serve):
    peer = serve(hp.odoo_version("18.0"))
    with client(peer.url) as rpc:
        answer = rpc.version()
    assert answer["server_version"] == "18.0"
    assert answer["protocol_version"] == 1


def test_request_is_well_formed_json_rpc(serve):
    peer = serve(hp.rpc_result(True))
    with client(peer.url + "/") as rpc:
        assert rpc.call("db", "db_exist", "acme") is True
        assert rpc.call("db", "db_exist", "acme") is True
    first, second = peer.requests
    assert first.method == "POST"
    assert first.path == "/jsonrpc"
    assert first.headers["content-type"] == "application/json"
    assert first.headers["user-agent"].startswith("saas_manager/")
    body = first.json()
    assert body == {
        "jsonrpc": "2.0",
        "method": "call",
        "params": {"service": "db", "method": "db_exist", "args": ["acme"]},
        "id": body["id"],
    }
    assert type(body["id"]) is int
    assert second.json()["id"] != body["id"]


def test_service_methods_send_odoo_18_signatures(serve):
    peer = serve(hp.rpc_result(7))
    with client(peer.url) as rpc:
        assert rpc.login("acme", "admin", USER_PASSWORD) == 7
        rpc.execute_kw("acme", 2, USER_PASSWORD, "res.partner", "search", [[]], {"limit": 1})
        rpc.create_database(MASTER, "acme", False, "fr_FR", ADMIN, country_code="BE")
        rpc.drop_database(MASTER, "acme")
        assert rpc.database_exists("acme") is True
    sent = [(r.json()["params"]["service"], r.json()["params"]["method"]) for r in peer.requests]
    assert sent == [
        ("common", "login"),
        ("object", "execute_kw"),
        ("db", "create_database"),
        ("db", "drop"),
        ("db", "db_exist"),
    ]
    args = [r.json()["params"]["args"] for r in peer.requests]
    assert args[0] == ["acme", "admin", USER_PASSWORD]
    assert args[1] == ["acme", 2, USER_PASSWORD, "res.partner", "search", [[]], {"limit": 1}]
    assert args[2] == [MASTER, "acme", False, "fr_FR", ADMIN, "admin", "BE", None]
    assert args[3] == [MASTER, "acme"]


def test_login_refused_is_none_and_missing_result_is_none(serve):
    peer = serve(hp.rpc_result(False))
    with client(peer.url) as rpc:
        assert rpc.login("acme", "admin", USER_PASSWORD) is None
    # Odoo leaves "result" out of the answer when the method returned None.
    answer = b'{"jsonrpc": "2.0", "id": %d}'
    peer = serve(lambda r, c: c.send(hp.response(200, answer % r.rpc_id)))
    with client(peer.url) as rpc:
        assert rpc.call("object", "execute_kw") is None


# --- answers that are not usable ---------------------------------------------


def test_json_rpc_error_is_remote_error_with_odoo_name(serve):
    error = hp.odoo_error("Access Denied", "odoo.exceptions.AccessDenied")
    peer = serve(hp.rpc_error(error))
    with client(peer.url) as rpc, pytest.raises(RpcRemoteError) as exc_info:
        rpc.call("db", "list")
    exc = exc_info.value
    assert exc.name == "odoo.exceptions.AccessDenied"
    assert exc.code == 200
    assert "Access Denied" in str(exc)
    assert "db.list" in str(exc)
    assert peer.url in str(exc)
    assert "Traceback" not in str(exc)


@pytest.mark.parametrize("status", [500, 502])
def test_http_error_status(serve, status):
    peer = serve(hp.raw(hp.response(status, "<h1>oops</h1>", content_type="text/html")))
    with client(peer.url) as rpc, pytest.raises(RpcProtocolError) as exc_info:
        rpc.version()
    assert f"HTTP {status}" in str(exc_info.value)
    assert peer.url in str(exc_info.value)


def test_html_page_is_refused(serve):
    page = "<!DOCTYPE html><html><body>Welcome to nginx!</body></html>"
    peer = serve(hp.raw(hp.response(200, page, content_type="text/html; charset=utf-8")))
    with client(peer.url) as rpc, pytest.raises(RpcProtocolError, match="text/html"):
        rpc.version()


def test_invalid_json_is_refused(serve):
    peer = serve(hp.raw(hp.response(200, b'{"jsonrpc": "2.0", "id": 1, "resu')))
    with client(peer.url) as rpc, pytest.raises(RpcProtocolError, match="invalid JSON"):
        rpc.version()


def test_json_that_is_not_json_rpc_is_refused(serve):
    peer = serve(hp.raw(hp.response(200, b'{"server_version": "18.0"}')))
    with client(peer.url) as rpc, pytest.raises(RpcProtocolError, match="JSON-RPC 2.0"):
        rpc.version()


@pytest.mark.parametrize("wrong", ["plus_one", "as_string"])
def test_wrong_id_is_refused(serve, wrong):
    def handler(request, connection):
        answer_id = request.rpc_id + 1 if wrong == "plus_one" else str(request.rpc_id)
        body = hp.rpc_answer(request, result=hp.ODOO_VERSION, answer_id=answer_id)
        connection.send(hp.response(200, body))

    peer = serve(handler)
    with client(peer.url) as rpc, pytest.raises(RpcProtocolError, match="id"):
        rpc.version()


def test_answer_without_server_version_is_refused(serve):
    peer = serve(hp.rpc_result({"hello": "world"}))
    with client(peer.url) as rpc, pytest.raises(RpcProtocolError, match="server_version"):
        rpc.version()


# --- redirects and size -------------------------------------------------------


def test_redirect_is_not_followed(serve):
    target = serve(hp.odoo_version())
    location = f"http://localhost:{target.port}/jsonrpc"
    # A big redirect body that never comes: reading it would end in a timeout.
    head = (
        "HTTP/1.1 302 Found\r\n"
        f"Location: {location}\r\n"
        "Content-Type: text/html\r\n"
        "Content-Length: 50000000\r\n\r\n"
    )
    peer = serve(hp.hold_after(head.encode()))
    with client(peer.url) as rpc, pytest.raises(RpcProtocolError) as exc_info:
        rpc.version()
    assert_exact(exc_info, RpcProtocolError)
    message = str(exc_info.value)
    assert "302" in message
    assert f"localhost:{target.port}" in message
    assert "/jsonrpc" not in message.replace(peer.url, "")
    assert len(peer.requests) == 1
    assert target.connections == 0
    assert target.requests == []


def test_oversized_body_with_content_length_is_refused_before_reading(serve):
    # The body never comes: reading it would end in a timeout, not this error.
    head = JSON_HEAD + b"Content-Length: 50000000\r\nConnection: close\r\n\r\n"
    peer = serve(hp.hold_after(head))
    rpc = client(peer.url, max_response_bytes=4096)
    with rpc, pytest.raises(RpcProtocolError) as exc_info:
        rpc.version()
    assert_exact(exc_info, RpcProtocolError)
    assert "50000000 bytes" in str(exc_info.value)


def test_oversized_chunked_body_is_stopped_at_the_cap(serve):
    # 8 KiB of chunks, then silence: a client reading on would time out.
    body = b"".join(hp.chunk(b" " * 1024) for _ in range(8))
    peer = serve(hp.hold_after(hp.chunked_head() + body))
    rpc = client(peer.url, max_response_bytes=4096)
    with rpc, pytest.raises(RpcProtocolError) as exc_info:
        rpc.version()
    assert_exact(exc_info, RpcProtocolError)
    assert "4096 bytes" in str(exc_info.value)


def test_chunked_body_under_the_cap_is_read(serve):
    def handler(request, connection):
        body = hp.rpc_answer(request, result=hp.ODOO_VERSION)
        connection.send(hp.chunked_head() + hp.chunk(body[:10]) + hp.chunk(body[10:]))
        connection.send(b"0\r\n\r\n")

    peer = serve(handler)
    with client(peer.url) as rpc:
        assert rpc.version()["server_version"] == "18.0"


# --- input --------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ftp://odoo.example.com",
        "http://admin:hunter2@odoo.example.com",
        "https://admin@odoo.example.com",
        "odoo.example.com:8069",
        "http://",
        "",
        "http://odoo.example.com/?db=x",
        "http://odoo.example.com:99999",
        "http://odoo example.com",
        None,
    ],
)
def test_bad_base_urls_are_refused(url):
    with pytest.raises(InvalidInput) as exc_info:
        odoo_rpc.OdooRpcClient(url)
    assert "hunter2" not in str(exc_info.value)


def test_base_url_is_normalised():
    rpc = odoo_rpc.OdooRpcClient("https://odoo.example.com/odoo//")
    assert rpc.base_url == "https://odoo.example.com/odoo"
    assert rpc.endpoint == "https://odoo.example.com/odoo/jsonrpc"


@pytest.mark.parametrize("verify", [False, None, "/nonexistent/ca.pem", 0])
def test_tls_verification_cannot_be_turned_off(verify):
    with pytest.raises(InvalidInput):
        odoo_rpc.OdooRpcClient("https://odoo.example.com", verify=verify)


@pytest.mark.parametrize("timeout", [0, -1, float("inf"), float("nan"), True, "5"])
def test_bad_timeouts_are_refused(timeout):
    with pytest.raises(InvalidInput):
        odoo_rpc.OdooRpcClient("https://odoo.example.com", timeout=timeout)


def test_arguments_that_are_not_json_are_refused_before_sending(serve):
    peer = serve(hp.odoo_version())
    with client(peer.url) as rpc, pytest.raises(InvalidInput):
        rpc.call("object", "execute_kw", {1, 2})
    assert peer.connections == 0


# --- secrets ------------------------------------------------------------------


def _assert_no_secret(text):
    for secret in SECRETS:
        assert secret not in text


def test_secrets_never_in_messages_or_logs(serve, caplog):
    caplog.set_level(logging.DEBUG)

    # A careless server that echoes its arguments back in its error message.
    def echo_error(request, connection):
        echoed = json.dumps(request.json()["params"]["args"])
        error = hp.odoo_error(f"Database creation failed for {echoed}", "builtins.Exception")
        connection.send(hp.response(200, hp.rpc_answer(request, error=error)))

    echo = serve(echo_error)
    broken = serve(hp.raw(hp.response(500, f"<pre>{MASTER}</pre>", content_type="text/html")))
    silent = serve(hp.silent())
    closed = f"http://127.0.0.1:{hp.closed_port()}"

    messages = []
    for url, timeout in ((echo.url, 5.0), (broken.url, 5.0), (silent.url, 0.3), (closed, 5.0)):
        with client(url, timeout=timeout) as rpc:
            for call in (
                lambda rpc=rpc, t=timeout: rpc.create_database(
                    MASTER, "acme", True, "en_US", ADMIN, timeout=t
                ),
                lambda rpc=rpc, t=timeout: rpc.drop_database(MASTER, "acme", timeout=t),
                lambda rpc=rpc: rpc.login("acme", "admin", USER_PASSWORD),
                lambda rpc=rpc: rpc.execute_kw("acme", 2, USER_PASSWORD, "res.users", "read", []),
            ):
                with pytest.raises(RpcError) as exc_info:
                    call()
                messages.append(str(exc_info.value))

    # The secrets were really sent, and the server really echoed them...
    assert MASTER in echo.requests[0].body.decode()
    assert "****" in messages[0]
    # ...yet no message and no log record carries one.
    assert len(messages) == 16
    for message in messages:
        _assert_no_secret(message)
    assert caplog.records
    for record in caplog.records:
        _assert_no_secret(record.getMessage())
        _assert_no_secret(caplog.text)
