"""Idle SSH connections kept for the next session to the same host, in this process.

A provision, a termination or an undo opens one SSH session to a server, runs one
or two commands and closes it; the next one, often seconds later, to the same
server, would pay the TCP handshake, the key exchange and the authentication again
(about 0.07 s on loopback, four or five round trips over a WAN). An
:class:`~.ssh.SshSession` made with ``reuse=True`` takes an idle connection from
here when one is kept for exactly its settings, and gives it back when it closes.

What a kept connection is:

* **Keyed by everything that authenticated it**: host, port, user, the password,
  the private key and its passphrase, and the pinned host key (as one SHA-256, so
  no secret is a key of this table). A server whose credentials or pin change gets
  a new connection, checked and authenticated with the new ones; the old ones are
  closed when they expire.
* **Idle for at most** ``max_idle_s`` (30 s): a timer closes it then, so a process
  does not keep connections to servers it stopped working on. At most
  ``per_host`` (4) are kept per key and ``total`` (32) in all; past that, a closed
  session really closes.
* **Alive**: a connection whose transport ended (the host closed it, the network
  dropped) is never handed out. One that died unnoticed fails to open its next
  channel; the session then connects anew, once (nothing ran on the dead one).
* **Per process**: a forked child starts with an empty pool and never touches the
  parent's sockets (Odoo's prefork workers fork from one process).
"""

import hashlib
import logging
import os
import threading
import time

_logger = logging.getLogger(__name__)

__all__ = ["POOL", "ConnectionPool", "pool_key"]

MAX_IDLE_S = 30.0
PER_HOST = 4
TOTAL = 32


def pool_key(settings):
    """One digest of what authenticates a connection to ``settings``' host."""
    parts = (
        settings.host,
        str(settings.port),
        settings.username,
        settings.password or "",
        settings.private_key or "",
        settings.private_key_passphrase or "",
        settings.host_key or "",
    )
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def _alive(client):
    transport = client.get_transport()
    return transport is not None and transport.is_active()


class ConnectionPool:
    """Idle authenticated ``paramiko.SSHClient`` objects, by :func:`pool_key`."""

    def __init__(self, max_idle_s=MAX_IDLE_S, per_host=PER_HOST, total=TOTAL):
        self.max_idle_s = max_idle_s
        self.per_host = per_host
        self.total = total
        self._lock = threading.Lock()
        self._idle = {}  # key -> [(client, monotonic time it was given back)], newest last
        self._timer = None

    def __len__(self):
        with self._lock:
            return sum(len(stack) for stack in self._idle.values())

    def take(self, key):
        """An idle live connection kept for ``key`` (the most recent one), or None."""
        dead = []
        found = None
        with self._lock:
            stack = self._idle.get(key, [])
            now = time.monotonic()
            while stack:
                client, since = stack.pop()
                if now - since < self.max_idle_s and _alive(client):
                    found = client
                    break
                dead.append(client)
            if not stack:
                self._idle.pop(key, None)
        _close_all(dead)
        return found

    def give(self, key, client):
        """Keep ``client`` for the next session with ``key``; False when it is not
        kept (dead, or the pool is full): the caller closes it then."""
        if not _alive(client):
            return False
        with self._lock:
            stack = self._idle.setdefault(key, [])
            kept = sum(len(each) for each in self._idle.values())
            if len(stack) >= self.per_host or kept >= self.total:
                if not stack:
                    self._idle.pop(key, None)
                return False
            stack.append((client, time.monotonic()))
            if self._timer is None:
                self._arm(self.max_idle_s)
        return True

    def clear(self):
        """Close every idle connection."""
        with self._lock:
            clients = [client for stack in self._idle.values() for client, _since in stack]
            self._idle.clear()
        _close_all(clients)

    def _arm(self, delay):
        # Called with the lock held.
        self._timer = threading.Timer(delay, self._expire)
        self._timer.daemon = True
        self._timer.name = "saas-ssh-pool-expiry"
        self._timer.start()

    def _expire(self):
        expired = []
        with self._lock:
            self._timer = None
            now = time.monotonic()
            oldest = None
            for key in list(self._idle):
                kept = []
                for client, since in self._idle[key]:
                    if now - since >= self.max_idle_s or not _alive(client):
                        expired.append(client)
                    else:
                        kept.append((client, since))
                        oldest = since if oldest is None else min(oldest, since)
                if kept:
                    self._idle[key] = kept
                else:
                    del self._idle[key]
            if oldest is not None:
                self._arm(max(0.05, oldest + self.max_idle_s - now))
        if expired:
            _logger.debug("ssh pool: closing %d idle connection(s)", len(expired))
        _close_all(expired)

    def _forget_after_fork(self):
        # In a forked child: the parent's connections are the parent's. Forgotten,
        # not closed (closing would end them for the parent too); their threads
        # did not survive the fork.
        self._lock = threading.Lock()
        self._idle = {}
        self._timer = None


def _close_all(clients):
    for client in clients:
        try:
            client.close()
        except Exception:  # a dead transport may fail to close; nothing is left to do
            _logger.debug("ssh pool: closing a connection failed", exc_info=True)


POOL = ConnectionPool()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=POOL._forget_after_fork)
