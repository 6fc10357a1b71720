"""remote.transport, through the client: every call ends by its deadline, every fault is typed.

Against a real HTTP peer on 127.0.0.1 (see _http_peer) that answers slowly,
trickles, closes or speaks TLS wrongly; run with urllib3 1.26 and 2.x (the
classes of remote.transport subclass urllib3 internals).
"""

import socket
import threading
import time

import _http_peer as hp
import pytest
import requests
import urllib3

from remote import odoo_rpc, transport
from remote.exceptions import RpcTimeout, RpcTransportError

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


# --- the classes in use -------------------------------------------------------


def test_the_adapter_pools_use_the_deadline_connections(serve):
    """urllib3 1.26 and 2.x alike build their pools from our classes (no silent bypass)."""
    peer = serve(hp.odoo_version())
    session = requests.Session()
    session.trust_env = False
    adapter = transport.DeadlineAdapter(max_retries=0)
    session.mount("http://", adapter)
    with session, transport.call_deadline(5.0):
        assert session.post(peer.url + "/jsonrpc", json={}, timeout=(2, 5)).status_code == 200
        pools = adapter.poolmanager.pools
        pools = [pools[key] for key in pools.keys()]  # noqa: SIM118 -- the container is not iterable
        assert [type(pool).ConnectionCls.__name__ for pool in pools] == ["_HTTPConnection"]
    assert int(urllib3.__version__.split(".")[0]) in (1, 2)


def test_call_deadline_nests_and_restores():
    with transport.call_deadline(60):
        outer = transport._deadline()
        with transport.call_deadline(1):
            assert transport._deadline() < outer
        assert transport._deadline() == outer
    assert transport._deadline() is None


def test_proxies_are_refused():
    adapter = transport.DeadlineAdapter(max_retries=0)
    with pytest.raises(requests.exceptions.InvalidProxyURL):
        adapter.proxy_manager_for("http://proxy.example.com:3128")


# --- time -------------------------------------------------------------------


def test_headers_that_never_come_time_out(serve):
    peer = serve(hp.silent())
    with client(peer.url, timeout=0.5) as rpc, pytest.raises(RpcTimeout) as exc_info:
        rpc.version()
    assert peer.url in str(exc_info.value)


def test_body_trickled_past_the_deadline_times_out(serve):
    interval, length = 0.1, 600  # the trickle would last a minute
    head = JSON_HEAD + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % length
    peer = serve(hp.trickle(head, b" " * length, interval))
    started = time.monotonic()
    with client(peer.url, timeout=1.0) as rpc, pytest.raises(RpcTimeout):
        rpc.version()
    assert time.monotonic() - started < interval * length / 4


def test_headers_trickled_past_the_deadline_time_out(serve):
    answer = hp.response(200, b"{}", headers={"X-Padding": "p" * 600})
    peer = serve(hp.trickle(answer[:20], answer[20:], 0.1))
    started = time.monotonic()
    with client(peer.url, timeout=1.0) as rpc, pytest.raises(RpcTimeout):
        rpc.version()
    assert time.monotonic() - started < 0.1 * len(answer) / 4


def test_chunked_body_trickled_past_the_deadline_times_out(serve):
    peer = serve(hp.trickle(hp.chunked_head(), hp.chunk(b" " * 600), 0.1))
    started = time.monotonic()
    with client(peer.url, timeout=1.0) as rpc, pytest.raises(RpcTimeout):
        rpc.version()
    assert time.monotonic() - started < 0.1 * 600 / 4


def test_slow_name_resolution_times_out(monkeypatch):
    release = threading.Event()
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host == "slow-dns.test":
            release.wait(30)  # bounded; released at the end of the test
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    started = time.monotonic()
    try:
        rpc = client("http://slow-dns.test:8069", connect_timeout=0.5)
        with rpc, pytest.raises(RpcTimeout):
            rpc.version()
        assert time.monotonic() - started < 30 / 4
    finally:
        release.set()


# --- transport ----------------------------------------------------------------


def test_https_to_a_plain_http_port(serve):
    peer = serve(hp.odoo_version())
    url = peer.url.replace("http://", "https://")
    with client(url) as rpc, pytest.raises(RpcTransportError) as exc_info:
        rpc.version()
    assert_exact(exc_info, RpcTransportError)
    assert "TLS" in str(exc_info.value)


def test_closed_port():
    url = f"http://127.0.0.1:{hp.closed_port()}"
    with client(url) as rpc, pytest.raises(RpcTransportError) as exc_info:
        rpc.version()
    assert_exact(exc_info, RpcTransportError)
    assert "refused" in str(exc_info.value)
    assert url in str(exc_info.value)


def test_unresolvable_host():
    with client("http://nothing.invalid") as rpc, pytest.raises(RpcTransportError) as exc_info:
        rpc.version()
    assert "nothing.invalid" in str(exc_info.value)


def test_connection_closed_without_an_answer(serve):
    peer = serve(hp.raw(b""))
    with client(peer.url) as rpc, pytest.raises(RpcTransportError) as exc_info:
        rpc.version()
    assert_exact(exc_info, RpcTransportError)


def test_tls_with_own_ca_bundle(serve, tmp_path):
    cert_path, key_path = hp.self_signed_certificate(tmp_path)
    context = hp.tls_server_context(cert_path, key_path)
    peer = serve(hp.odoo_version(), tls_context=context)
    assert peer.url.startswith("https://")
    with client(peer.url, verify=str(cert_path)) as rpc:
        assert rpc.version()["server_version"] == "18.0"
    with client(peer.url, verify=True) as rpc, pytest.raises(RpcTransportError) as exc_info:
        rpc.version()
    assert_exact(exc_info, RpcTransportError)
    assert "certificate" in str(exc_info.value)
    assert len(peer.requests) == 1  # the refused connection sent nothing
