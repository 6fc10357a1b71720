"""remote.health against real HTTP peers on 127.0.0.1 (see _http_peer)."""

import dataclasses

import _http_peer as hp
import pytest

from remote import health
from remote.exceptions import InvalidInput

FAST = {"connect_timeout": 1.0, "timeout": 1.0}


@pytest.fixture
def serve():
    peers = hp.Peers()
    yield peers
    peers.stop_all()


def test_probe_of_a_healthy_server(serve):
    peer = serve(hp.odoo_version("18.0"))
    result = health.probe(peer.url, **FAST)
    assert result == health.ProbeResult(
        url=peer.url,
        online=True,
        version="18.0",
        response_time_ms=result.response_time_ms,
        error=None,
    )
    assert result.response_time_ms >= 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.online = False


def test_probe_of_a_closed_port():
    url = f"http://127.0.0.1:{hp.closed_port()}"
    result = health.probe(url, **FAST)
    assert not result.online
    assert result.version is None
    assert "refused" in result.error
    assert url in result.error


def test_probe_of_a_slow_server(serve):
    peer = serve(hp.delayed(3.0, hp.odoo_version()))
    result = health.probe(peer.url, connect_timeout=1.0, timeout=0.5)
    assert not result.online
    assert "within 0.5 s" in result.error
    assert result.response_time_ms >= 400


@pytest.mark.parametrize(
    "handler",
    [
        hp.raw(hp.response(502, "Bad Gateway", content_type="text/plain")),
        hp.raw(hp.response(200, "<html></html>", content_type="text/html")),
        hp.rpc_error(hp.odoo_error("boom", "builtins.Exception")),
        hp.rpc_result({"no": "version"}),
    ],
    ids=["http-502", "html", "rpc-error", "not-odoo"],
)
def test_probe_of_a_broken_server(serve, handler):
    peer = serve(handler)
    result = health.probe(peer.url, **FAST)
    assert not result.online
    assert result.error


@pytest.mark.parametrize(
    ("url", "verify"),
    [("ftp://odoo.example.com", True), ("https://odoo.example.com", "/no/such/ca.pem")],
)
def test_probe_with_bad_input_is_offline_not_an_exception(url, verify):
    result = health.probe(url, verify=verify, **FAST)
    assert not result.online
    assert result.error


def test_probe_many_over_a_mix(serve):
    healthy = serve(hp.odoo_version("18.0"))
    slow = serve(hp.delayed(3.0, hp.odoo_version()))
    closed = f"http://127.0.0.1:{hp.closed_port()}"
    targets = [
        health.Target("healthy-1", healthy.url),
        ("healthy-2", healthy.url + "/", True),
        ("slow-1", slow.url),
        ("slow-2", slow.url),
        ("closed", closed),
        ("bad-url", "gopher://odoo.example.com"),
    ]
    results = health.probe_many(targets, max_workers=4, connect_timeout=1.0, timeout=0.5)
    assert set(results) == {"healthy-1", "healthy-2", "slow-1", "slow-2", "closed", "bad-url"}
    online = {key: result.online for key, result in results.items()}
    assert online == {
        "healthy-1": True,
        "healthy-2": True,
        "slow-1": False,
        "slow-2": False,
        "closed": False,
        "bad-url": False,
    }
    assert results["healthy-1"].version == "18.0"
    assert results["closed"].url == closed
    assert "refused" in results["closed"].error
    assert "within 0.5 s" in results["slow-1"].error


def test_probe_many_survives_a_probe_that_raises(serve, monkeypatch):
    healthy = serve(hp.odoo_version())
    real_probe = health.probe
    cursed = "http://cursed.example.com"

    def probe(url, **kwargs):
        if url == cursed:
            raise RuntimeError("something nobody expected")
        return real_probe(url, **kwargs)

    monkeypatch.setattr(health, "probe", probe)
    results = health.probe_many(
        [(1, healthy.url), (2, cursed), (3, healthy.url)], max_workers=2, **FAST
    )
    assert results[1].online
    assert results[3].online
    assert not results[2].online
    assert "RuntimeError" in results[2].error
    assert results[2].url == cursed


def test_probe_many_of_nothing():
    assert health.probe_many([]) == {}


@pytest.mark.parametrize(
    ("targets", "max_workers"),
    [
        ([("a", "http://x"), ("a", "http://y")], 8),
        ([("a",)], 8),
        ([([], "http://x")], 8),
        ([("a", "http://x")], 0),
    ],
    ids=["duplicate-key", "short-tuple", "unhashable-key", "no-worker"],
)
def test_probe_many_refuses_malformed_targets(targets, max_workers):
    with pytest.raises(InvalidInput):
        health.probe_many(targets, max_workers=max_workers)
