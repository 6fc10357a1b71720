#!/usr/bin/env python3
"""Benchmark a health sweep: remote.health.probe_many against a one-by-one loop.

Starts, on 127.0.0.1, N peers per size: 40 % answer common.version at once,
30 % answer only after --delay seconds (longer than --timeout), and 30 % are
closed ports. Then it times, in the same run, probe_many with --workers
threads, probe_many with N threads, and a plain loop of probe(), and prints
a table. Run from the repository root:

    python scripts/bench_health_sweep.py [--sizes 10 100] [--timeout 1] [--delay 1.5]

Not a test: timings depend on the machine.
"""

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build_targets(hp, size, delay):
    """Start the peers of one size; return (targets, expected online, peers)."""
    healthy = round(size * 0.4)
    slow = round(size * 0.3)
    closed = size - healthy - slow
    peers, targets, expected = [], [], {}
    for index in range(healthy):
        peer = hp.Peer(hp.odoo_version()).start()
        peers.append(peer)
        targets.append((f"healthy-{index}", peer.url))
        expected[f"healthy-{index}"] = True
    for index in range(slow):
        peer = hp.Peer(hp.delayed(delay, hp.odoo_version())).start()
        peers.append(peer)
        targets.append((f"slow-{index}", peer.url))
        expected[f"slow-{index}"] = False
    for index in range(closed):
        targets.append((f"closed-{index}", f"http://127.0.0.1:{hp.closed_port()}"))
        expected[f"closed-{index}"] = False
    return targets, expected, peers, (healthy, slow, closed)


def check(results, expected, label):
    online = {key: result.online for key, result in results.items()}
    if online != expected:
        wrong = sorted(key for key in expected if online.get(key) != expected[key])
        raise SystemExit(f"{label}: unexpected online flags for {wrong}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--timeout", type=float, default=1.0, help="total timeout of a probe")
    parser.add_argument("--delay", type=float, default=1.5, help="answer delay of slow peers")
    parser.add_argument("--workers", type=int, default=8, help="probe_many's max_workers")
    args = parser.parse_args()

    sys.path[:0] = [str(ROOT), str(ROOT / "standalone_tests")]
    # Imported here: importable only once sys.path is set.
    import _http_peer as hp

    from remote import health

    options = {"connect_timeout": args.timeout, "timeout": args.timeout}
    print(
        f"probe timeout {args.timeout:g} s, slow peers answer after {args.delay:g} s, "
        f"{os.cpu_count()} CPUs; peers on 127.0.0.1"
    )
    rows = []
    for size in args.sizes:
        targets, expected, peers, mix = build_targets(hp, size, args.delay)
        try:
            timings = {}
            for workers in dict.fromkeys((args.workers, size)):
                started = time.monotonic()
                results = health.probe_many(targets, max_workers=workers, **options)
                timings[workers] = time.monotonic() - started
                check(results, expected, f"probe_many N={size} workers={workers}")

            started = time.monotonic()
            results = {key: health.probe(url, **options) for key, url in targets}
            sequential = time.monotonic() - started
            check(results, expected, f"sequential N={size}")
        finally:
            for peer in peers:
                peer.stop()
        for workers, elapsed in timings.items():
            rows.append((size, mix, workers, elapsed, sequential))

    print()
    print(
        f"{'N':>4}  {'ok/slow/closed':>14}  {'workers':>7}  {'probe_many':>10}  "
        f"{'one by one':>10}  {'ratio':>6}"
    )
    for size, (healthy, slow, closed), workers, elapsed, sequential in rows:
        print(
            f"{size:>4}  {f'{healthy}/{slow}/{closed}':>14}  {workers:>7}  "
            f"{elapsed:>9.2f}s  {sequential:>9.2f}s  {sequential / elapsed:>5.1f}x"
        )


if __name__ == "__main__":
    main()
