#!/usr/bin/env python3
"""Benchmark the hourly sweep (health + load) of many servers, as the cron runs it.

The cron (``saas.server._check_health(with_load=True)``) and this script call the
same ``remote.sweep.run`` with the same values: its check timeouts, its budget
(``BUDGET_TIMEOUTS`` check timeouts), its worker counts, and, under the memory
limit of an Odoo prefork worker (``--memory-limit``, Odoo's default
``limit_memory_hard`` of 2560 MiB), its thread stacks.

On 127.0.0.1: a PostgreSQL cluster, an sshd, HTTP peers answering
``common.version`` and a listener that accepts and never answers (the peers and
the listener in a child process, so that this process holds only what the
cron's would; all of them at the lowest CPU priority, as if on machines of their
own). Then N fake servers: 40 % healthy (answering peer, the real
PostgreSQL and sshd), 30 % slow (a peer answering after 3 timeouts; PostgreSQL
and SSH on the silent listener), 30 % dead (closed ports everywhere). The table
gives the time taken and what each server got: answered, offline, or unknown (not
checked in time). Exit status 1 when a healthy server was marked offline or the
sweep overran its budget. Run with the test virtualenv (``scripts/saas.py bench
health [options]``):

    python scripts/bench_health_sweep.py [--servers 1000] [--timeout 10] [--memory-limit 2560]

Not a test: timings depend on the machine. Healthy servers share peers, so the
figures measure the sweep, not the peers.
"""

import argparse
import collections
import contextlib
import logging
import multiprocessing
import os
import resource
import socket
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEERS = 8
# The fake servers share this machine's CPUs with the sweep; on their own machines
# they would not take its CPU: they run at the lowest priority.
NICE = 19


def silent_listener(stop):
    """A port that accepts every connection and never sends a byte."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    sock.settimeout(0.2)
    accepted = []

    def serve():
        while not stop.is_set():
            try:
                accepted.append(sock.accept()[0])
            except OSError:
                continue

    threading.Thread(target=serve, daemon=True).start()
    return sock.getsockname()[1]


def serve_peers(conn, slow_delay):
    """The child process: start the peers, send their URLs, serve until told to stop."""
    import _http_peer as hp  # sys.path is set by the parent

    os.nice(NICE)
    stop = threading.Event()
    healthy = [hp.Peer(hp.odoo_version()).start() for _ in range(PEERS)]
    slow = [hp.Peer(hp.delayed(slow_delay, hp.odoo_version())).start() for _ in range(PEERS)]
    conn.send(([p.url for p in healthy], [p.url for p in slow], silent_listener(stop)))
    conn.recv()
    os._exit(0)  # the slow handlers are still waiting: no need to end them one by one


@contextlib.contextmanager
def memory_limit(mib):
    """RLIMIT_AS of ``mib`` MiB on this process while the sweep runs (0: none)."""
    if not mib:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (mib * 1024 * 1024, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def main():  # noqa: PLR0912, PLR0915 (one linear script)
    sys.path[:0] = [str(ROOT), str(ROOT / "standalone_tests")]
    from remote import load, sweep  # importable once sys.path is set

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument(
        "--timeout", type=float, default=sweep.CHECK_TIMEOUT,
        help="one check's timeout (s); connecting gets the cron's share of it",
    )  # fmt: skip
    parser.add_argument("--budget", type=float, default=sweep.BUDGET_TIMEOUTS,
                        help="sweep budget, in check timeouts")  # fmt: skip
    parser.add_argument("--health-workers", type=int, default=sweep.HEALTH_WORKERS)
    parser.add_argument("--load-workers", type=int, default=sweep.LOAD_WORKERS)
    parser.add_argument("--memory-limit", type=int, default=2560,
                        help="RLIMIT_AS in MiB during the sweep, as Odoo's prefork "
                             "limit_memory_hard (0: none)")  # fmt: skip
    args = parser.parse_args()

    logging.basicConfig(level=logging.ERROR)  # the late ones warn, one line each
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)  # abandoned handshakes
    import _http_peer as hp

    from remote.postgres import ConnectionParams
    from remote.ssh import SshSettings
    from sandbox import util
    from sandbox.postgres import PgCluster
    from sandbox.sshd import Sshd, TestUser

    timeout = args.timeout
    connect = timeout * sweep.CONNECT_TIMEOUT / sweep.CHECK_TIMEOUT
    budget = args.budget * timeout
    # Forked first, before this process starts any thread.
    parent_conn, child_conn = multiprocessing.Pipe()
    child = multiprocessing.get_context("fork").Process(
        target=serve_peers, args=(child_conn, 3 * timeout), daemon=True
    )
    child.start()
    healthy_urls, slow_urls, silent_port = parent_conn.recv()
    work = Path(tempfile.mkdtemp(prefix="saas-bench-sweep-"))
    work.chmod(0o755)
    data_dir = work / "odoo-data"
    (data_dir / "filestore").mkdir(parents=True)
    pg = PgCluster(owner="saas_owner").start()
    sshd = Sshd(work / "ssh", ["MaxStartups 2000:30:2000"], host_key_types=("ed25519",))
    sshd.start()
    # A user whose shell is sh, as a managed server's odoo user: root's own shell
    # start-up files (pyenv, conda...) would be measured instead of the sweep.
    user = TestUser(work / "home")
    refused = user.create()
    if refused:
        print(f"(logging in as {util.current_user()}: {refused})")
    for pid in (sshd.process.pid, int((pg.datadir / "postmaster.pid").read_text().split()[0])):
        os.setpriority(os.PRIO_PROCESS, pid, NICE)  # their children inherit it
    closed_port = hp.closed_port()
    try:
        # As saas.server._load_target builds them: SSH and PostgreSQL connect bounded
        # by the connect timeout.
        good_ssh = SshSettings(
            host=util.LOOPBACK, port=sshd.port,
            username=user.name if user.created else util.current_user(),
            private_key=sshd.login_key().read_text(), host_key=sshd.host_key("ed25519"),
            connect_timeout=connect,
        )  # fmt: skip
        pg_connect = max(1, int(connect))
        good_pg = ConnectionParams(
            host=pg.host, port=pg.port, user=pg.owner, password=pg.owner_password,
            connect_timeout=pg_connect,
        )  # fmt: skip
        kinds, probe_targets, load_targets = {}, [], []
        for index in range(args.servers):
            kind = ("healthy", "slow", "dead", "healthy", "slow", "dead", "healthy", "slow",
                    "dead", "healthy")[index % 10]  # fmt: skip
            key = f"{kind}-{index}"
            kinds[key] = kind
            if kind == "healthy":
                url = healthy_urls[index % PEERS]
                ssh, params = good_ssh, good_pg
            else:
                port = silent_port if kind == "slow" else closed_port
                url = slow_urls[index % PEERS] if kind == "slow" else f"http://127.0.0.1:{port}"
                ssh = SshSettings(
                    host=util.LOOPBACK, port=port, username="odoo", password=util.random_password(),
                    host_key=sshd.host_key("ed25519"), connect_timeout=connect,
                )  # fmt: skip
                params = ConnectionParams(
                    host="127.0.0.1", port=port, user="odoo", connect_timeout=pg_connect
                )
            probe_targets.append((key, url))
            load_targets.append(
                load.LoadTarget(key=key, ssh=ssh, data_dir=str(data_dir), postgres=params)
            )
        cpu_before = resource.getrusage(resource.RUSAGE_SELF)
        with memory_limit(args.memory_limit):
            result = sweep.run(
                probe_targets, load_targets, connect_timeout=connect, timeout=timeout,
                budget=budget, health_workers=args.health_workers,
                load_workers=args.load_workers,
            )  # fmt: skip
        cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        parent_conn.send("stop")
        child.join(10)
        sshd.stop()
        user.remove()
        pg.stop()

    health_counts = collections.Counter()
    load_counts = collections.Counter()
    wrong = []
    for key, probe in result.health.items():
        state = "unknown" if not probe.checked else ("up" if probe.online else "offline")
        health_counts[kinds[key], state] += 1
        if kinds[key] == "healthy" and state == "offline":
            wrong.append(key)
    for key, measured in result.load.items():
        if not measured.collected:
            state = "unknown"
        elif measured.disk is not None and measured.postgres is not None:
            state = "complete"
        else:
            state = "failed"
        load_counts[kinds[key], state] += 1

    limit = f"{args.memory_limit} MiB" if args.memory_limit else "none"
    print(
        f"{args.servers} servers (40 % healthy, 30 % slow, 30 % dead), check timeout "
        f"{timeout:g} s (connect {connect:g} s), budget {budget:g} s, {os.cpu_count()} CPUs, "
        f"workers {result.health_workers} (health) / {result.load_workers} (load), "
        f"memory limit {limit}"
    )
    print(
        f"sweep: {result.elapsed_s:.2f} s = {result.elapsed_s / timeout:.2f}x the check timeout "
        f"(health {result.health_s:.2f} s, load {result.load_s:.2f} s; this process used "
        f"{cpu_after.ru_utime - cpu_before.ru_utime + cpu_after.ru_stime - cpu_before.ru_stime:.1f}"
        f" s of CPU, load average {os.getloadavg()[0]:.1f})"
    )
    print(f"{'':8} {'health: up/offline/unknown':>28}   {'load: complete/failed/unknown':>30}")
    for kind in ("healthy", "slow", "dead"):
        h = "/".join(str(health_counts[kind, state]) for state in ("up", "offline", "unknown"))
        lo = "/".join(str(load_counts[kind, s]) for s in ("complete", "failed", "unknown"))
        print(f"{kind:8} {h:>28}   {lo:>30}")
    status = 0
    if wrong:
        print(f"FAIL: healthy servers marked offline: {wrong[:10]}")
        status = 1
    else:
        print("no healthy server marked offline")
    if result.elapsed_s > budget:
        print(f"FAIL: the sweep overran its budget of {budget:g} s")
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
