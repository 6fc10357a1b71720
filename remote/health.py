"""Health probes of Odoo servers: one at a time, or many at once.

A probe is one ``common.version`` JSON-RPC call (see :mod:`.odoo_rpc`, which
bounds its connect time and its total time). :func:`probe` never raises for a
fault of the server, the network or the arguments it was given: an unusable
URL or CA bundle (:class:`~.exceptions.InvalidInput`) is an offline result
with the reason, like a refused connection. Callers get one shape for every
outcome and a health check cannot crash on a misconfigured server.

:func:`probe_many` runs probes in a bounded thread pool and returns plain
results; it calls nothing back, so the Odoo cron can write every result with
the ORM in its own thread afterwards. With ``sweep_timeout`` its total time is
bounded: a probe that did not run or finish by then is *not checked*
(``checked=False``), which says nothing about the server: the caller must not
mark it offline.
"""

import concurrent.futures
import logging
import math
import time
from dataclasses import dataclass
from typing import NamedTuple

from .exceptions import InvalidInput, RemoteError
from .odoo_rpc import OdooRpcClient

__all__ = ["ProbeResult", "Target", "probe", "probe_many"]

_logger = logging.getLogger(__name__)

# common.version answers in a few hundred bytes.
PROBE_MAX_RESPONSE_BYTES = 64 * 1024
# Head room over ``timeout`` per round of the pool before probe_many stops
# waiting (a probe is bounded by its own timeout; this guards against a bug).
_SWEEP_GRACE = 5.0
_MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class ProbeResult:
    """The outcome of one probe.

    ``online`` is True only for a well-formed ``common.version`` answer;
    ``version`` is its ``server_version`` (e.g. ``"18.0"``); ``error`` is the
    reason, in an operator's words, when offline; ``response_time_ms`` is the
    time the probe took, also when it failed. ``checked`` is False when the
    probe did not run or finish within the sweep's time (``online`` is then
    False too but means *unknown*, not offline).
    """

    url: str
    online: bool
    version: str | None
    response_time_ms: int
    error: str | None
    checked: bool = True


class Target(NamedTuple):
    """One server for :func:`probe_many`: its key in the result, URL, TLS check."""

    key: object
    url: str
    verify: object = True


def _elapsed_ms(started):
    return round((time.monotonic() - started) * 1000)


def probe(
    url,
    *,
    connect_timeout=5.0,
    timeout=10.0,
    verify=True,
    max_response_bytes=PROBE_MAX_RESPONSE_BYTES,
):
    """Ask the Odoo server at ``url`` for ``common.version``.

    Returns a :class:`ProbeResult`; never raises for an unreachable, slow or
    broken server, nor for an invalid ``url``/``verify``/timeout (those give
    an offline result naming the problem). ``timeout`` bounds the whole
    probe, ``connect_timeout`` its connection.
    """
    started = time.monotonic()
    try:
        with OdooRpcClient(
            url,
            connect_timeout=connect_timeout,
            timeout=timeout,
            verify=verify,
            max_response_bytes=max_response_bytes,
        ) as client:
            answer = client.version()
    except RemoteError as exc:
        return ProbeResult(
            url=url,
            online=False,
            version=None,
            response_time_ms=_elapsed_ms(started),
            error=str(exc)[:_MAX_ERROR_CHARS],
        )
    return ProbeResult(
        url=url,
        online=True,
        version=answer["server_version"],
        response_time_ms=_elapsed_ms(started),
        error=None,
    )


def _probe_target(target, options):
    """:func:`probe` of one target; an unexpected exception becomes offline."""
    started = time.monotonic()
    try:
        return probe(target.url, verify=target.verify, **options)
    except Exception as exc:
        # A bug must cost one server its check, not the sweep its others.
        _logger.exception("Health probe of %s failed unexpectedly", target.url)
        return ProbeResult(
            url=target.url,
            online=False,
            version=None,
            response_time_ms=_elapsed_ms(started),
            error=f"unexpected error: {type(exc).__name__}: {exc}"[:_MAX_ERROR_CHARS],
        )


def _targets(targets):
    found = []
    for item in targets:
        try:
            target = item if isinstance(item, Target) else Target(*item)
        except TypeError:
            raise InvalidInput("Each target must be (key, url) or (key, url, verify).") from None
        found.append(target)
    keys = [target.key for target in found]
    try:
        distinct = len(set(keys))
    except TypeError:
        raise InvalidInput("Target keys must be hashable.") from None
    if distinct != len(keys):
        raise InvalidInput("Two targets have the same key.")
    return found


def probe_many(
    targets,
    *,
    max_workers=8,
    connect_timeout=5.0,
    timeout=10.0,
    max_response_bytes=PROBE_MAX_RESPONSE_BYTES,
    sweep_timeout=None,
):
    """Probe many servers concurrently; return ``{key: ProbeResult}``.

    :param targets: :class:`Target` items, or plain ``(key, url)`` /
        ``(key, url, verify)`` tuples; keys must be distinct and hashable.
    :param max_workers: the most probes running at once. A sweep lasts about
        ``ceil(len(targets) / max_workers)`` times ``timeout`` at worst.
    :param sweep_timeout: the total time allowed (seconds), None for what the
        rounds need at worst. The probes not finished by then are abandoned and
        get ``checked=False`` (unknown), never an offline result.

    Every key gets a result, whatever happens to the other probes: a probe
    that raises unexpectedly is an offline result with the error. Raises
    :class:`InvalidInput` only for malformed ``targets``, ``max_workers`` or
    ``sweep_timeout``, before any probe starts.
    """
    found = _targets(targets)
    if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
        raise InvalidInput("max_workers must be a positive integer.")
    if sweep_timeout is not None and (
        isinstance(sweep_timeout, bool)
        or not isinstance(sweep_timeout, int | float)
        or not math.isfinite(sweep_timeout)
        or sweep_timeout <= 0
    ):
        raise InvalidInput("sweep_timeout must be a positive number of seconds.")
    if not found:
        return {}
    options = {
        "connect_timeout": connect_timeout,
        "timeout": timeout,
        "max_response_bytes": max_response_bytes,
    }
    workers = min(max_workers, len(found))
    rounds = math.ceil(len(found) / workers)
    if (
        isinstance(timeout, int | float)
        and not isinstance(timeout, bool)
        and math.isfinite(timeout)
        and timeout > 0
    ):
        wait_limit = rounds * (timeout + _SWEEP_GRACE)
    else:
        wait_limit = rounds * _SWEEP_GRACE  # each probe reports the bad timeout at once
    if sweep_timeout is not None:
        wait_limit = sweep_timeout

    started = time.monotonic()
    results = {}
    executor = concurrent.futures.ThreadPoolExecutor(
        max_workers=workers, thread_name_prefix="saas-health"
    )
    try:
        futures = {executor.submit(_probe_target, target, options): target for target in found}
        # Measured from the start: starting the threads counts against the budget.
        remaining = max(wait_limit - (time.monotonic() - started), 0)
        done, _pending = concurrent.futures.wait(futures, timeout=remaining)
        for future in done:
            results[futures[future].key] = future.result()
    finally:
        # Whatever did not finish in time is abandoned, not waited for.
        executor.shutdown(wait=False, cancel_futures=True)

    late = [target for target in found if target.key not in results]
    for target in late:
        results[target.key] = ProbeResult(
            url=target.url,
            online=False,
            version=None,
            response_time_ms=_elapsed_ms(started),
            error=f"not checked: the sweep ran out of its {wait_limit:g} s",
            checked=False,
        )
    if late:
        _logger.warning(
            "Health sweep of %d servers: %d not checked within %g s (left unknown)",
            len(found),
            len(late),
            wait_limit,
        )
    _logger.debug(
        "Probed %d servers in %d ms: %d online",
        len(found),
        _elapsed_ms(started),
        sum(result.online for result in results.values()),
    )
    return results
