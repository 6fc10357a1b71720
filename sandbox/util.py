"""Small utilities of the sandbox: ports, secrets, waiting, logging. One of each."""

import base64
import os
import pwd
import secrets
import socket
import sys
import time
from pathlib import Path

LOOPBACK = "127.0.0.1"


def log(message):
    """One line on stderr, as every sandbox user prints its progress."""
    try:
        sys.stderr.write(f"[saas_manager] {message}\n")
        sys.stderr.flush()
    except OSError:  # the terminal or the pipe is gone (scripts/run | tee, then Ctrl-C)
        return


def current_user():
    """The login name of the effective user (who the sandbox's sshd lets in)."""
    return pwd.getpwuid(os.geteuid()).pw_name


def free_port(host=LOOPBACK):
    """A TCP port nothing listens on right now (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_open(port, host=LOOPBACK, timeout=1.0):
    """True when something accepts connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def random_password(nbytes=18):
    """A password of URL-safe characters (no quoting needed in a config or a shell)."""
    return secrets.token_urlsafe(nbytes)


def fernet_key():
    """A new Fernet key: what ``saas_manager_secret_key`` holds in every odoo.conf."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def kept_secret(path, make=random_password):
    """The secret kept in ``path`` (mode 600), made by ``make()`` the first time."""
    path = Path(path)
    if not path.exists() or not path.read_text().strip():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(make() + "\n")
    return path.read_text().strip()


def wait_until(predicate, timeout, interval=0.2, what="the condition"):
    """Call ``predicate()`` until it returns a true value (returned), or raise TimeoutError.

    ``predicate`` may raise to stop the wait at once (e.g. the process died).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} did not happen within {timeout:g} s")
        time.sleep(interval)


def tail(path, lines=40):
    """The last ``lines`` lines of a text file, or "" when it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return "".join(handle.readlines()[-lines:])
    except OSError:
        return ""
