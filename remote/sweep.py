"""One sweep of the fleet: health probes and load collection side by side, in one budget.

The hourly cron (``saas.server._check_health(with_load=True)``) and the benchmark
(``scripts/bench_health_sweep.py``) both call :func:`run` with the values below,
so what the benchmark measures is what the cron does.

:func:`run` probes every server (:func:`.health.probe`) and collects its load
(:func:`.load.collect_part`, its SSH part and its PostgreSQL part) in two pools
of threads, one deadline for both: the budget (two check timeouts) less a margin
kept to gather the results. No task starts after it; the caller waits no longer
than the budget, and what was not done by then is *unknown*
(``ProbeResult.checked`` / ``ServerLoad.collected`` False), never offline: a
server is never marked down because the sweep ran out of time.

Every thread of both pools is started before the first task runs. A thread
started while hundreds of others work waits its turn for the interpreter (a
loaded manager spent more than a 4 s budget just starting 500 threads), and
under a memory limit the threads' first allocations would take the address
space their later siblings' stacks need.

Why these worker counts: a slow server holds a health worker for a whole check
timeout and a load worker (its SSH, its PostgreSQL) for a connect timeout, so in
a budget ``B`` a pool of ``W`` workers gets through about ``W * B / T`` slow
tasks. A fleet of 1000 servers of which 300 are slow needs 300 * 10 s / 20 s =
150 health workers and 600 * 5 s / 20 s = 150 load workers to reach every
server; 256 of each leave room for the healthy ones.

Threads wait on the network, not the CPU; what they cost is address space.
Under a hard memory limit (Odoo's prefork workers set ``RLIMIT_AS`` to
``limit_memory_hard``, 2.5 GiB by default) 512 threads of the default 8 MiB
stack cannot even start, so the pools' threads get a smaller stack there
(:data:`THREAD_STACK_BYTES`; such a worker process runs nothing else meanwhile),
and there are fewer of them when even those would not fit.
"""

import contextlib
import logging
import math
import os
import resource
import threading
import time
from dataclasses import dataclass

from . import health, load
from .exceptions import InvalidInput

__all__ = [
    "BUDGET_TIMEOUTS",
    "CHECK_TIMEOUT",
    "CONNECT_TIMEOUT",
    "HEALTH_WORKERS",
    "LOAD_WORKERS",
    "SweepResult",
    "run",
]

_logger = logging.getLogger(__name__)

# One check: connecting (HTTP, SSH, PostgreSQL), and the whole call or command (s).
CONNECT_TIMEOUT = 5.0
CHECK_TIMEOUT = 10.0
# The sweep's budget, in check timeouts.
BUDGET_TIMEOUTS = 2
HEALTH_WORKERS = 256
LOAD_WORKERS = 256
# Kept of the budget to gather the results once no task may start any more: with
# hundreds of threads still holding the interpreter, the waiting thread needs a
# moment to be scheduled again.
FINISH_MARGIN = 0.05
MIN_FINISH_MARGIN_S = 0.25
# The stack of the pools' threads under RLIMIT_AS (the libraries they run need
# well under 256 KiB), and the share of the free address space they may take
# (the rest is for the memory they allocate).
THREAD_STACK_BYTES = 1 << 20
_THREAD_EXTRA_BYTES = 64 * 1024
_ADDRESS_SPACE_SHARE = 0.5
_MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class SweepResult:
    """``health``: ``{key: ProbeResult}``; ``load``: ``{key: ServerLoad}`` (every key of
    each side); the seconds each side took and the whole sweep took; the threads of
    each pool."""

    health: dict
    load: dict
    health_s: float
    load_s: float
    elapsed_s: float
    health_workers: int
    load_workers: int


def _positive_seconds(name, value):
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise InvalidInput(f"{name} must be a positive number of seconds.")


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(f"{name} must be a positive integer.")


def _probe_targets(items):
    found = []
    for item in items:
        try:
            found.append(item if isinstance(item, health.Target) else health.Target(*item))
        except TypeError:
            raise InvalidInput("Each target must be (key, url) or (key, url, verify).") from None
    _distinct([target.key for target in found])
    return found


def _load_targets(items):
    found = list(items)
    for target in found:
        if not isinstance(target, load.LoadTarget):
            raise InvalidInput(f"a load target is a LoadTarget, not {type(target).__name__}")
    _distinct([target.key for target in found])
    return found


def _distinct(keys):
    try:
        distinct = len(set(keys))
    except TypeError:
        raise InvalidInput("Target keys must be hashable.") from None
    if distinct != len(keys):
        raise InvalidInput("Two targets have the same key.")


# --- threads -----------------------------------------------------------------------


def _address_space_left():
    """Bytes of address space this process may still map; None without a limit."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            used = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        used = 0
    return max(soft - used, 0)


@contextlib.contextmanager
def _thread_stacks():
    """Under RLIMIT_AS, start threads with :data:`THREAD_STACK_BYTES` of stack (those of
    the pools and those their tasks start: an SSH session's transport); yield how many
    such threads fit in the address space's share (None: no limit)."""
    left = _address_space_left()
    if left is None:
        yield None
        return
    previous = threading.stack_size(THREAD_STACK_BYTES)
    try:
        yield int(left * _ADDRESS_SPACE_SHARE // (THREAD_STACK_BYTES + _THREAD_EXTRA_BYTES))
    finally:
        threading.stack_size(previous)


def _fit(health_workers, load_workers, affordable):
    """The worker counts, shrunk in proportion when fewer threads fit."""
    wanted = health_workers + load_workers
    if affordable is None or wanted <= affordable:
        return health_workers, load_workers
    scale = max(affordable, 2) / wanted
    fitted = (
        max(1, int(health_workers * scale)) if health_workers else 0,
        max(1, int(load_workers * scale)) if load_workers else 0,
    )
    _logger.warning(
        "Sweep: %d + %d threads do not fit this process's memory limit; %d + %d used "
        "(raise limit_memory_hard to check every server in time)",
        health_workers,
        load_workers,
        *fitted,
    )
    return fitted


class _Pool:
    """Threads that run ``(key, function, args)`` tasks in order until ``stop_at``.

    The threads (:meth:`thread`, started by :func:`_start_threads`) wait on ``gate``;
    a thread takes no task once ``stop_at`` (monotonic) is past. ``results`` holds
    what finished; ``done`` is set once every task has.
    """

    def __init__(self, name, tasks, workers, stop_at, gate):
        self.name = name
        self.tasks = tasks
        self.workers = min(workers, len(tasks))
        self.stop_at = stop_at
        self.gate = gate
        self.results = {}
        self.done = threading.Event()
        self.ended = None
        self._next = 0
        self._lock = threading.Lock()
        if not tasks:
            self.done.set()

    def thread(self, index):
        return threading.Thread(
            target=self._work, name=f"saas-sweep-{self.name}-{index}", daemon=True
        )

    def _work(self):
        self.gate.wait()
        while True:
            with self._lock:
                if self._next >= len(self.tasks) or time.monotonic() >= self.stop_at:
                    return
                key, function, args = self.tasks[self._next]
                self._next += 1
            try:
                value = function(*args)
            except Exception:
                # The tasks catch their own faults; this one is a bug: the task stays
                # unknown, the thread goes on with the next.
                _logger.exception("Sweep task %r failed unexpectedly", key)
                continue
            with self._lock:
                self.results[key] = value
                if len(self.results) == len(self.tasks):
                    self.ended = time.monotonic()
                    self.done.set()

    def snapshot(self):
        with self._lock:
            return dict(self.results)


def _start_threads(pools):
    """Start the pools' threads in turns, so that when the process cannot start them
    all (memory limit) each pool has its share; set each pool's ``workers``."""
    wanted = [pool.workers for pool in pools]
    started = [0] * len(pools)
    total = sum(wanted)
    for step in range(total):
        # The pool furthest behind its share goes next.
        index = min(
            (i for i in range(len(pools)) if started[i] < wanted[i]),
            key=lambda i: started[i] / wanted[i],
        )
        try:
            pools[index].thread(started[index]).start()
        except RuntimeError as exc:  # can't start new thread
            _logger.warning(
                "Sweep: %d of %d threads started (%s); the servers not reached in time "
                "are unknown (raise limit_memory_hard, or set MALLOC_ARENA_MAX=2)",
                step,
                total,
                exc,
            )
            break
        started[index] += 1
    for pool, count in zip(pools, started, strict=True):
        pool.workers = count


# --- the tasks ---------------------------------------------------------------------


def _probe(target, options):
    """:func:`.health.probe` of one target; an unexpected exception becomes offline."""
    started = time.monotonic()
    try:
        return health.probe(target.url, verify=target.verify, **options)
    except Exception as exc:
        # A bug must cost one server its check, not the sweep its others.
        _logger.exception("Health probe of %s failed unexpectedly", target.url)
        return health.ProbeResult(
            url=target.url,
            online=False,
            version=None,
            response_time_ms=round((time.monotonic() - started) * 1000),
            error=f"unexpected error: {type(exc).__name__}: {exc}"[:_MAX_ERROR_CHARS],
        )


def _collect_part(target, part, command_timeout):
    return load.collect_part(target, part, command_timeout=command_timeout)


def _late_probe(target, started, budget):
    return health.ProbeResult(
        url=target.url,
        online=False,
        version=None,
        response_time_ms=round((time.monotonic() - started) * 1000),
        error=f"not checked: the sweep ran out of its {budget:g} s",
        checked=False,
    )


# --- the sweep ---------------------------------------------------------------------


def run(
    probe_targets,
    load_targets=(),
    *,
    connect_timeout=CONNECT_TIMEOUT,
    timeout=CHECK_TIMEOUT,
    budget=None,
    health_workers=HEALTH_WORKERS,
    load_workers=LOAD_WORKERS,
):
    """Probe ``probe_targets`` and collect the load of ``load_targets`` within ``budget``.

    :param probe_targets: :class:`.health.Target` items (or ``(key, url)`` tuples).
    :param load_targets: :class:`.load.LoadTarget` items; empty: no load collected.
    :param timeout: one check's timeout (a probe; an SSH command of the load).
    :param connect_timeout: connecting, for the probes (the load targets carry their own).
    :param budget: the whole sweep's seconds, ``BUDGET_TIMEOUTS * timeout`` by default.
    :return: a :class:`SweepResult`, within ``budget`` (a margin is kept to gather
        the results): what did not finish in time is unknown, never offline.
    :raises InvalidInput: malformed targets or arguments, before anything starts.
    """
    started = time.monotonic()
    budget = BUDGET_TIMEOUTS * timeout if budget is None else budget
    for name, value in (("timeout", timeout), ("connect_timeout", connect_timeout),
                        ("budget", budget)):  # fmt: skip
        _positive_seconds(name, value)
    _positive_int("health_workers", health_workers)
    _positive_int("load_workers", load_workers)
    probe_targets = _probe_targets(probe_targets)
    load_targets = _load_targets(load_targets)
    deadline = started + budget
    margin = max(budget * FINISH_MARGIN, min(MIN_FINISH_MARGIN_S, budget / 4))
    # No task starts after stop_at; the caller stops waiting at give_up: what is left
    # of the margin is for being scheduled again and gathering the results.
    stop_at, give_up = deadline - margin, deadline - margin / 2
    options = {"connect_timeout": connect_timeout, "timeout": timeout}
    health_tasks = [(target.key, _probe, (target, options)) for target in probe_targets]
    load_tasks = [
        ((target.key, part), _collect_part, (target, part, timeout))
        for target in load_targets
        for part in ("ssh", "pg")
    ]
    gate = threading.Event()
    with _thread_stacks() as affordable:
        health_workers, load_workers = _fit(
            min(health_workers, len(health_tasks)), min(load_workers, len(load_tasks)), affordable
        )
        pools = [
            _Pool("health", health_tasks, health_workers, stop_at, gate),
            _Pool("load", load_tasks, load_workers, stop_at, gate),
        ]
        try:
            _start_threads(pools)
        finally:
            gate.set()  # the threads that did start never wait in vain
        # Still under the small stacks: the tasks start threads of their own (an SSH
        # session's transport).
        for pool in pools:
            pool.done.wait(max(give_up - time.monotonic(), 0))
    health_pool, load_pool = pools
    probes_done, parts = health_pool.snapshot(), load_pool.snapshot()

    probes = {
        target.key: probes_done.get(target.key) or _late_probe(target, started, budget)
        for target in probe_targets
    }
    late_reason = f"not collected within the sweep's {budget:g} s"
    loads = {
        target.key: load.combine_parts(
            target,
            parts.get((target.key, "ssh")),
            parts.get((target.key, "pg")),
            started=started,
            late_reason=late_reason,
        )
        for target in load_targets
    }
    late_probes = sum(not probe.checked for probe in probes.values())
    late_loads = sum(not measured.collected for measured in loads.values())
    if late_probes or late_loads:
        _logger.warning(
            "Sweep of %d servers: %d not checked and %d loads not wholly collected within "
            "%g s (left unknown)",
            max(len(probe_targets), len(load_targets)),
            late_probes,
            late_loads,
            budget,
        )
    now = time.monotonic()
    return SweepResult(
        health=probes,
        load=loads,
        health_s=(health_pool.ended or now) - started,
        load_s=((load_pool.ended or now) - started) if load_targets else 0.0,
        elapsed_s=now - started,
        health_workers=health_pool.workers,
        load_workers=load_pool.workers,
    )
