"""A private OpenSSH server on loopback, and SSH key helpers.

Debian's ``/usr/sbin/sshd`` runs in the foreground (``-D -e``) with its own config,
host keys, ``authorized_keys`` file and port on 127.0.0.1. :meth:`Sshd.login_key`
gives a client key authorised for the current user (key-based login). Nothing
outside its workdir is changed, except ``/run/sshd`` (sshd's privilege separation
directory, created when missing) and, only by :class:`TestUser` and as root, one
dedicated system user for password and unprivileged logins, removed afterwards.
"""

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .service import ProcessService, ServiceError
from .util import LOOPBACK, free_port, port_open, random_password

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
HOST_KEY_TYPES = ("ed25519", "ecdsa", "rsa")
# Marks the system user as ours, so a leftover from a crashed run is reused, and a
# real account of the same name is never touched.
TEST_USER_MARK = "saas_manager standalone ssh tests"
TEST_USER_PREFIX = "saas-ssh-test-"
_START_ATTEMPTS = 3
_LISTEN_WAIT_SECONDS = 20.0

__all__ = [
    "HOST_KEY_TYPES",
    "LOOPBACK",
    "Sshd",
    "TestUser",
    "fingerprint",
    "free_port",
    "generate_key",
    "missing_tools",
]


def missing_tools():
    """Why an sshd cannot be started here, or None."""
    for tool in (SSHD, SSH_KEYGEN):
        if not os.access(tool, os.X_OK):
            return f"{tool} is not installed (Debian package openssh-server/openssh-client)"
    return None


def generate_key(path, key_type, passphrase="", bits=None, pem=False):
    """Generate a key pair with ssh-keygen; return (private key text, public key line)."""
    path = Path(path)
    argv = [SSH_KEYGEN, "-q", "-t", key_type, "-N", passphrase, "-C", path.name, "-f", str(path)]
    if bits:
        argv += ["-b", str(bits)]
    if pem:
        argv += ["-m", "PEM"]
    subprocess.run(argv, check=True, capture_output=True, timeout=60)
    public = path.with_name(path.name + ".pub").read_text().strip()
    return path.read_text(), public


def fingerprint(public_key_path):
    """``SHA256:...`` of a public key file, as OpenSSH itself prints it."""
    out = subprocess.run(
        [SSH_KEYGEN, "-l", "-E", "sha256", "-f", str(public_key_path)],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    return out.split()[1]


class Sshd(ProcessService):
    """One sshd. ``start()``, then ``port``, ``host_key(type)``, ``authorize()``, ``login_key()``.

    ``port``: a fixed port, or None for a free one (retried if taken meanwhile).
    ``password_auth``: also accept passwords (the standalone tests log in that way).
    """

    name = "sshd"
    log_name = "sshd.log"

    def __init__(
        self,
        workdir=None,
        extra_config=(),
        *,
        port=None,
        password_auth=False,
        host_key_types=HOST_KEY_TYPES,
    ):
        super().__init__(workdir)
        self.extra_config = list(extra_config)
        self.wanted_port = port
        self.port = port
        self.password_auth = password_auth
        self.host_key_types = tuple(host_key_types)

    @property
    def authorized_keys(self):
        return self.workdir / "authorized_keys"

    @property
    def config_path(self):
        return self.workdir / "sshd_config"

    def host_key_path(self, key_type="ed25519"):
        return self.workdir / f"ssh_host_{key_type}_key"

    def host_key_file(self, key_type="ed25519"):
        """The public host key file (what a client pins)."""
        return Path(str(self.host_key_path(key_type)) + ".pub")

    def host_key(self, key_type="ed25519"):
        """The public host key line of one type, as ssh-keyscan would give it."""
        return self.host_key_file(key_type).read_text().strip()

    def authorize(self, public_key_line):
        with self.authorized_keys.open("a") as handle:
            handle.write(public_key_line.strip() + "\n")

    def login_key(self):
        """Path of a private key (made once, kept in the workdir) authorised for login."""
        path = self.workdir / "client_key"
        if not path.exists():
            generate_key(path, "ed25519")
        public = path.with_name(path.name + ".pub").read_text().strip()
        if public not in self.authorized_keys.read_text().splitlines():
            self.authorize(public)
        return path

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _write_config(self):
        set_env = [line for line in self.extra_config if line.split(None, 1)[0] == "SetEnv"]
        others = [line for line in self.extra_config if line not in set_env]
        lines = [
            f"Port {self.port}",
            f"ListenAddress {LOOPBACK}",
            "AddressFamily inet",
            *(f"HostKey {self.host_key_path(key_type)}" for key_type in self.host_key_types),
            "PidFile none",
            "UsePAM no",
            # The workdir's owner and modes are not what sshd expects.
            "StrictModes no",
            f"AuthorizedKeysFile {self.authorized_keys}",
            "PubkeyAuthentication yes",
            f"PasswordAuthentication {'yes' if self.password_auth else 'no'}",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "PermitEmptyPasswords no",
            "AllowTcpForwarding no",
            "X11Forwarding no",
            "LogLevel VERBOSE",
            "MaxStartups 50",
            # A managed host's deploy user, not this machine's root: bash reads
            # ~/.bashrc for a command from sshd only as a top-level shell (SHLVL
            # unset or 0), and root's here runs `pyenv init`, 0.15-0.2 s of CPU per
            # command, where a Debian user's default .bashrc returns at once when
            # not interactive. With SHLVL=1 a command starts in a few milliseconds.
            # sshd takes the first SetEnv only: the caller's variables join this one.
            " ".join(["SetEnv SHLVL=1", *(line.split(None, 1)[1] for line in set_env)]),
            *others,
        ]
        self.config_path.write_text("\n".join(lines) + "\n")
        return self.config_path

    def adopt(self):
        """True when this workdir's sshd, left running by an earlier run, still serves
        (``port`` is then its port; it is not ours to stop)."""
        if not self.workdir or not self.config_path.exists() or not self.running_pid():
            return False
        for line in self.config_path.read_text().splitlines():
            if line.startswith("Port "):
                port = int(line.split()[1])
                if self._banner(port):
                    self.port = port
                    return True
        return False

    def _start(self):
        # World-traversable so that sshd, acting as an unprivileged user, can read
        # authorized_keys (it reads it with that user's rights).
        self.workdir.chmod(0o755)
        for key_type in self.host_key_types:
            if not self.host_key_path(key_type).exists():
                generate_key(self.host_key_path(key_type), key_type)
        self.authorized_keys.touch()
        self.authorized_keys.chmod(0o644)
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        if self.wanted_port and port_open(self.wanted_port):
            raise ServiceError(f"port {self.wanted_port} is in use")
        last_error = ""
        for _attempt in range(1 if self.wanted_port else _START_ATTEMPTS):
            self.port = self.wanted_port or free_port()
            config = self._write_config()
            check = subprocess.run(
                [SSHD, "-t", "-f", str(config)],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            if check.returncode != 0:
                raise ServiceError(f"sshd refused its config: {check.stderr.strip()}")
            self.spawn([SSHD, "-D", "-e", "-f", str(config)])
            if self._wait_for_banner():
                return
            last_error = self.log()[-2000:]
            self._stop()  # e.g. the port was taken between free_port() and bind
            self.started = False
        raise ServiceError(f"sshd did not start on {LOOPBACK}: {last_error}")

    @staticmethod
    def _banner(port):
        try:
            with socket.create_connection((LOOPBACK, port), timeout=2) as sock:
                return sock.recv(64).startswith(b"SSH-2.0-")
        except OSError:
            return False

    def _wait_for_banner(self):
        deadline = time.monotonic() + _LISTEN_WAIT_SECONDS
        while time.monotonic() < deadline:
            if not self.alive():
                return False
            if self._banner(self.port):
                return True
            time.sleep(0.1)
        return False


class TestUser:
    """A dedicated unprivileged system user with a known password (root only).

    Named after this process (``saas-ssh-test-<pid>``), so that test sessions running
    at the same time on one machine do not share it; leftovers of sessions whose
    process is gone are removed.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, home):
        self.name = f"{TEST_USER_PREFIX}{os.getpid()}"
        self.home = Path(home)
        self.password = random_password()
        self.created = False
        self.uid = self.gid = None

    # Not an Odoo model: nothing to call super() on.
    def create(self):  # pylint: disable=method-required-super
        """Create (or reuse our leftover) user; return None, or why it cannot be done."""
        if os.geteuid() != 0:
            return "creating a system user with a known password needs root"
        for tool in ("useradd", "userdel", "chpasswd"):
            if not shutil.which(tool):
                return f"{tool} is not available"
        self._remove_leftovers()
        try:
            existing = pwd.getpwnam(self.name)
        except KeyError:
            existing = None
        if existing is not None and existing.pw_gecos != TEST_USER_MARK:
            return f"a user named {self.name} already exists and is not ours"
        if existing is None:
            subprocess.run(
                [
                    "useradd",
                    "--no-create-home",
                    "--home-dir",
                    str(self.home),
                    "--shell",
                    "/bin/sh",
                    "--comment",
                    TEST_USER_MARK,
                    self.name,
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )
        self.created = True
        subprocess.run(
            ["chpasswd"],
            input=f"{self.name}:{self.password}\n",
            text=True,
            check=True,
            capture_output=True,
            timeout=60,
        )
        entry = pwd.getpwnam(self.name)
        self.uid, self.gid = entry.pw_uid, entry.pw_gid
        self.home.mkdir(parents=True, exist_ok=True)
        os.chown(self.home, self.uid, self.gid)
        return None

    @staticmethod
    def _remove_leftovers():
        for entry in pwd.getpwall():
            pid = entry.pw_name.removeprefix(TEST_USER_PREFIX)
            if entry.pw_gecos != TEST_USER_MARK or not pid.isdigit() or pid == str(os.getpid()):
                continue
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:  # its session is gone (PermissionError: alive)
                subprocess.run(
                    ["userdel", "--force", entry.pw_name],
                    capture_output=True,
                    timeout=60,
                    check=False,
                )
            except PermissionError:
                continue

    def make_dir(self, parent, name):
        """A directory owned by this user, inside a directory it can traverse."""
        path = Path(tempfile.mkdtemp(prefix=name, dir=parent))
        os.chown(path, self.uid, self.gid)
        return path

    def remove(self):
        if self.created:
            subprocess.run(
                ["userdel", "--force", self.name], capture_output=True, timeout=60, check=False
            )
            self.created = False
