"""remote.sweep: health and load side by side in one budget, against real peers on 127.0.0.1."""

import os
import subprocess
import sys
import threading
from pathlib import Path

import _http_peer as hp
import pytest

from remote import health, load, sweep
from remote.exceptions import InvalidInput
from remote.postgres import ConnectionParams

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def serve():
    peers = hp.Peers()
    yield peers
    peers.stop_all()


def test_the_cron_and_the_benchmark_share_these_values():
    assert sweep.BUDGET_TIMEOUTS == 2
    assert sweep.CONNECT_TIMEOUT < sweep.CHECK_TIMEOUT
    # 1000 servers, 300 of them slow, reached within the budget (the module's reasoning).
    budget = sweep.BUDGET_TIMEOUTS * sweep.CHECK_TIMEOUT
    assert sweep.HEALTH_WORKERS * budget / sweep.CHECK_TIMEOUT >= 300
    assert sweep.LOAD_WORKERS * budget / sweep.CONNECT_TIMEOUT >= 600


def test_health_and_load_of_a_mix(serve, params):
    healthy = serve(hp.odoo_version())
    slow = serve(hp.delayed(5.0, hp.odoo_version()))
    closed = f"http://127.0.0.1:{hp.closed_port()}"
    dead_pg = ConnectionParams(host="127.0.0.1", port=hp.closed_port(), user="x", connect_timeout=1)
    probe_targets = [("ok", healthy.url), ("slow", slow.url), ("dead", closed)]
    load_targets = [
        load.LoadTarget(key="ok", postgres=params),
        load.LoadTarget(key="slow", postgres=dead_pg),
        load.LoadTarget(key="dead", postgres=dead_pg),
    ]
    result = sweep.run(probe_targets, load_targets, connect_timeout=1.0, timeout=1.0, budget=4.0)
    assert set(result.health) == set(result.load) == {"ok", "slow", "dead"}
    assert result.health["ok"].online
    # The slow one timed out within the budget: a real answer, offline.
    assert result.health["slow"].checked and not result.health["slow"].online
    assert result.health["dead"].checked and not result.health["dead"].online
    assert result.load["ok"].postgres is not None
    assert result.load["ok"].disk is None and "no SSH access" in result.load["ok"].disk_error
    assert result.load["dead"].collected and result.load["dead"].postgres is None
    assert (result.health_workers, result.load_workers) == (3, 6)


def test_a_sweep_out_of_time_leaves_the_late_ones_unknown(serve):
    healthy = serve(hp.odoo_version())
    slow = serve(hp.delayed(10.0, hp.odoo_version()))
    targets = [(f"ok{n}", healthy.url) for n in range(3)] + [
        (f"slow{n}", slow.url) for n in range(6)
    ]
    # One worker, probes bounded by 5 s, a budget of 1.5 s: the slow ones cannot be done.
    result = sweep.run(targets, connect_timeout=1.0, timeout=5.0, budget=1.5, health_workers=1)
    late = [key for key, probe in result.health.items() if not probe.checked]
    assert late, "the sweep was meant to run out of time"
    for key in late:
        assert key.startswith("slow") or key.startswith("ok")
        assert not result.health[key].online
        assert "not checked" in result.health[key].error
    assert not any(
        probe.checked and not probe.online for key, probe in result.health.items()
        if key.startswith("ok")
    ), "a healthy server is never offline because the sweep ran out of time"  # fmt: skip
    assert result.load == {}


def test_tasks_that_do_not_come_back_are_unknown(monkeypatch):
    release = threading.Event()

    def stuck(*_args, **_kwargs):
        release.wait(30)
        raise AssertionError("too late to count")

    monkeypatch.setattr(health, "probe", stuck)
    monkeypatch.setattr(load, "collect_part", stuck)
    try:
        result = sweep.run(
            [("a", "http://127.0.0.1:9"), ("b", "http://127.0.0.1:9")],
            [load.LoadTarget(key="a"), load.LoadTarget(key="b")],
            timeout=0.5,
        )
    finally:
        release.set()
    assert {key: probe.checked for key, probe in result.health.items()} == {"a": False, "b": False}
    assert {key: item.collected for key, item in result.load.items()} == {"a": False, "b": False}
    assert "not collected within" in result.load["a"].disk_error
    assert "not checked" in result.health["b"].error


def test_a_probe_that_raises_costs_its_server_only(serve, monkeypatch):
    healthy = serve(hp.odoo_version())
    original = health.probe

    def probe_or_raise(url, **kwargs):
        if url.endswith("/bad"):
            raise RuntimeError("a bug")
        return original(url, **kwargs)

    monkeypatch.setattr(health, "probe", probe_or_raise)
    result = sweep.run([("good", healthy.url), ("bad", healthy.url + "/bad")], timeout=1.0)
    assert result.health["good"].online
    assert result.health["bad"].checked and not result.health["bad"].online
    assert "unexpected error: RuntimeError: a bug" in result.health["bad"].error


def test_errors_of_a_side_reach_the_caller():
    with pytest.raises(InvalidInput, match="same key"):
        sweep.run([("a", "http://x"), ("a", "http://y")], timeout=0.5)
    with pytest.raises(InvalidInput, match="LoadTarget"):
        sweep.run([], ["not a target"], timeout=0.5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"timeout": 0}, "timeout"),
        ({"timeout": float("nan")}, "timeout"),
        ({"budget": -1}, "budget"),
        ({"connect_timeout": True}, "connect_timeout"),
        ({"health_workers": 0}, "health_workers"),
        ({"load_workers": 1.5}, "load_workers"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(InvalidInput, match=match):
        sweep.run([("a", "http://127.0.0.1:9")], **kwargs)
    with pytest.raises(InvalidInput, match="target"):
        sweep.run([("only a key",)])


MEMORY_LIMITED = """
import contextlib, resource, sys, threading
sys.path.insert(0, {root!r})
from remote import load, sweep
if {control!r}:
    sweep._thread_stacks = lambda: contextlib.nullcontext(None)  # the default 8 MiB stacks
with open("/proc/self/statm") as statm:
    used = int(statm.read().split()[0]) * resource.getpagesize()
# As an Odoo prefork worker: its limit_memory_hard (2.5 GiB) less what Odoo holds.
resource.setrlimit(resource.RLIMIT_AS, (used + (2 << 30), resource.RLIM_INFINITY))
before = threading.stack_size()
targets = [(n, "http://127.0.0.1:9") for n in range(300)]
loads = [load.LoadTarget(key=n) for n in range(300)]
result = sweep.run(targets, loads, connect_timeout=0.5, timeout=0.5,
                   health_workers=256, load_workers=256)
assert threading.stack_size() == before, "the stack size is put back"
assert set(result.health) == set(result.load) == set(range(300))
assert not any(probe.online for probe in result.health.values())
print(result.health_workers, result.load_workers)
"""


def workers_under_a_memory_limit(control):
    script = MEMORY_LIMITED.format(root=str(ROOT), control=control)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return sum(map(int, done.stdout.split()))


def test_under_a_memory_limit_the_threads_still_start():
    """Odoo's prefork workers run under RLIMIT_AS (limit_memory_hard): 512 threads of the
    default 8 MiB stack do not fit in 2 GiB; the sweep's smaller ones do, and when a
    thread cannot start the sweep goes on with those that did (never a crash)."""
    ours = workers_under_a_memory_limit(control=False)
    default_stacks = workers_under_a_memory_limit(control=True)
    if (os.cpu_count() or 1) <= 4:
        # Beyond that, glibc's malloc arenas (8 per CPU, 64 MiB each) may take the
        # address space whatever the stacks.
        assert ours == 512
        assert default_stacks < 512
