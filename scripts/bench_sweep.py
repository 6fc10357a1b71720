#!/usr/bin/env python3
"""Benchmark a whole sweep, health + load, of many servers with a time budget.

Starts on 127.0.0.1 a PostgreSQL cluster, an sshd, a few HTTP peers answering
``common.version`` and a listener that accepts and never answers. Then N fake
servers: 40 % healthy (answering peer, the real PostgreSQL and sshd), 30 % slow
(a peer answering after 3 timeouts; PostgreSQL and SSH on the silent listener),
30 % dead (closed ports everywhere). ``remote.health.probe_many`` and
``remote.load.collect_many`` run side by side, each with a total budget of
``--budget`` check timeouts; the table gives the time taken and what each
server got: answered, offline, or unknown (not checked in time). A healthy server
marked offline is a failure (exit 1). Run from the repository root with the test
virtualenv:

    python scripts/bench_sweep.py [--servers 1000] [--timeout 2] [--budget 2]

Not a test: timings depend on the machine. Healthy servers share peers, so the
figures measure the sweep, not the peers.
"""

import argparse
import collections
import logging
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def silent_listener():
    """A port that accepts every connection and never sends a byte; (port, close)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    sock.settimeout(0.2)
    accepted, stop = [], threading.Event()

    def serve():
        while not stop.is_set():
            try:
                accepted.append(sock.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def close():
        stop.set()
        thread.join(5)
        for conn in accepted:
            conn.close()
        sock.close()

    return sock.getsockname()[1], close


def main():  # noqa: PLR0912, PLR0915 (one linear script)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=2.0, help="one check's timeout (s)")
    parser.add_argument("--budget", type=float, default=2.0, help="sweep budget, in timeouts")
    parser.add_argument("--health-workers", type=int, default=256)
    parser.add_argument("--load-workers", type=int, default=64)
    args = parser.parse_args()

    sys.path[:0] = [str(ROOT), str(ROOT / "standalone_tests")]
    logging.basicConfig(level=logging.ERROR)  # the late ones warn, one line each
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)  # abandoned handshakes
    import _http_peer as hp

    from remote import health, load
    from remote.postgres import ConnectionParams
    from remote.ssh import SshSettings
    from sandbox import util
    from sandbox.postgres import PgCluster
    from sandbox.sshd import Sshd

    timeout = args.timeout
    budget = args.budget * timeout
    work = Path(tempfile.mkdtemp(prefix="saas-bench-sweep-"))
    work.chmod(0o755)
    data_dir = work / "odoo-data"
    (data_dir / "filestore").mkdir(parents=True)
    pg = PgCluster(owner="saas_owner").start()
    sshd = Sshd(work / "ssh", ["MaxStartups 2000:30:2000"], host_key_types=("ed25519",))
    sshd.start()
    healthy_peers = [hp.Peer(hp.odoo_version()).start() for _ in range(8)]
    slow_peers = [hp.Peer(hp.delayed(3 * timeout, hp.odoo_version())).start() for _ in range(8)]
    silent_port, close_silent = silent_listener()
    closed_port = hp.closed_port()
    try:
        good_ssh = SshSettings(
            host=util.LOOPBACK, port=sshd.port, username=util.current_user(),
            private_key=sshd.login_key().read_text(), host_key=sshd.host_key("ed25519"),
            connect_timeout=timeout, command_timeout=timeout,
        )  # fmt: skip
        connect = max(1, round(timeout))
        good_pg = ConnectionParams(
            host=pg.host, port=pg.port, user=pg.owner, password=pg.owner_password,
            connect_timeout=connect,
        )  # fmt: skip
        kinds, probe_targets, load_targets = {}, [], []
        for index in range(args.servers):
            kind = ("healthy", "slow", "dead", "healthy", "slow", "dead", "healthy", "slow",
                    "dead", "healthy")[index % 10]  # fmt: skip
            key = f"{kind}-{index}"
            kinds[key] = kind
            if kind == "healthy":
                url = healthy_peers[index % len(healthy_peers)].url
                ssh, params = good_ssh, good_pg
            else:
                port = silent_port if kind == "slow" else closed_port
                if kind == "slow":
                    url = slow_peers[index % len(slow_peers)].url
                else:
                    url = f"http://127.0.0.1:{port}"
                ssh = SshSettings(
                    host=util.LOOPBACK, port=port, username="odoo", password=util.random_password(),
                    host_key=sshd.host_key("ed25519"), connect_timeout=timeout,
                    command_timeout=timeout,
                )  # fmt: skip
                params = ConnectionParams(
                    host="127.0.0.1", port=port, user="odoo", connect_timeout=connect
                )
            probe_targets.append((key, url))
            load_targets.append(
                load.LoadTarget(key=key, ssh=ssh, data_dir=str(data_dir), postgres=params)
            )

        outcome = {}

        def run_health():
            started = time.monotonic()
            outcome["health"] = health.probe_many(
                probe_targets, max_workers=args.health_workers, connect_timeout=timeout,
                timeout=timeout, sweep_timeout=budget,
            )  # fmt: skip
            outcome["health_s"] = time.monotonic() - started

        def run_load():
            started = time.monotonic()
            outcome["load"] = load.collect_many(
                load_targets, max_workers=args.load_workers, timeout=budget,
                command_timeout=timeout,
            )  # fmt: skip
            outcome["load_s"] = time.monotonic() - started

        started = time.monotonic()
        threads = [threading.Thread(target=run_health), threading.Thread(target=run_load)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        total = time.monotonic() - started
    finally:
        close_silent()
        for peer in healthy_peers + slow_peers:
            peer.stop()
        sshd.stop()
        pg.stop()

    health_counts = collections.Counter()
    load_counts = collections.Counter()
    wrong = []
    for key, result in outcome["health"].items():
        state = "unknown" if not result.checked else ("up" if result.online else "offline")
        health_counts[kinds[key], state] += 1
        if kinds[key] == "healthy" and state == "offline":
            wrong.append(key)
    for key, result in outcome["load"].items():
        if not result.collected:
            state = "unknown"
        elif result.disk is not None and result.postgres is not None:
            state = "complete"
        else:
            state = "failed"
        load_counts[kinds[key], state] += 1

    print(
        f"{args.servers} servers (40 % healthy, 30 % slow, 30 % dead), check timeout "
        f"{timeout:g} s, budget {budget:g} s, {os.cpu_count()} CPUs, workers "
        f"{args.health_workers} (health) / {args.load_workers} (load)"
    )
    print(
        f"sweep: {total:.2f} s = {total / timeout:.2f}x the check timeout "
        f"(health {outcome['health_s']:.2f} s, load {outcome['load_s']:.2f} s)"
    )
    print(f"{'':8} {'health: up/offline/unknown':>28}   {'load: complete/failed/unknown':>30}")
    for kind in ("healthy", "slow", "dead"):
        h = "/".join(str(health_counts[kind, state]) for state in ("up", "offline", "unknown"))
        lo = "/".join(str(load_counts[kind, s]) for s in ("complete", "failed", "unknown"))
        print(f"{kind:8} {h:>28}   {lo:>30}")
    if wrong:
        print(f"FAIL: healthy servers marked offline: {wrong[:10]}")
        return 1
    print("no healthy server marked offline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
