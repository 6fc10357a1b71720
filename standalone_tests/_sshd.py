"""A private OpenSSH server on loopback for the standalone SSH tests.

Debian's ``openssh-server`` (``/usr/sbin/sshd``) is started with its own config, host
keys, ``authorized_keys`` file and a free port on 127.0.0.1, in the foreground
(``-D -e``), and stopped at the end of the test session. Nothing outside its temporary
directory is changed, except ``/run/sshd`` (sshd's privilege separation directory,
created when missing) and, only when running as root, one dedicated system user for
the password and unprivileged tests (:class:`TestUser`), removed afterwards.
"""

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
LOOPBACK = "127.0.0.1"
HOST_KEY_TYPES = ("ed25519", "ecdsa", "rsa")
# Marks the system user as ours, so a leftover from a crashed run is reused, and a
# real account of the same name is never touched.
TEST_USER_MARK = "saas_manager standalone ssh tests"
_START_ATTEMPTS = 3
_LISTEN_WAIT_SECONDS = 20.0


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


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


class Sshd:
    """One sshd process. ``start()``, then ``port``, ``host_key(type)``, ``authorize()``."""

    def __init__(self, workdir, extra_config=()):
        self.workdir = Path(workdir)
        self.extra_config = list(extra_config)
        self.port = None
        self.process = None
        self.log_path = self.workdir / "sshd.log"
        self.authorized_keys = self.workdir / "authorized_keys"
        self._log_file = None

    def host_key_path(self, key_type):
        return self.workdir / f"ssh_host_{key_type}_key"

    def host_key(self, key_type="ed25519"):
        """The public host key line of one type, as ssh-keyscan would give it."""
        return Path(str(self.host_key_path(key_type)) + ".pub").read_text().strip()

    def authorize(self, public_key_line):
        with self.authorized_keys.open("a") as handle:
            handle.write(public_key_line.strip() + "\n")

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _write_config(self):
        lines = [
            f"Port {self.port}",
            f"ListenAddress {LOOPBACK}",
            "AddressFamily inet",
            *(f"HostKey {self.host_key_path(key_type)}" for key_type in HOST_KEY_TYPES),
            "PidFile none",
            "UsePAM no",
            # The temporary directory's owner and modes are not what sshd expects.
            "StrictModes no",
            f"AuthorizedKeysFile {self.authorized_keys}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication yes",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "PermitEmptyPasswords no",
            "AllowTcpForwarding no",
            "X11Forwarding no",
            "LogLevel VERBOSE",
            "MaxStartups 50",
            *self.extra_config,
        ]
        path = self.workdir / "sshd_config"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self):
        self.workdir.mkdir(parents=True, exist_ok=True)
        # World-traversable so that sshd, acting as an unprivileged test user, can read
        # authorized_keys (it reads it with that user's rights).
        self.workdir.chmod(0o755)
        for key_type in HOST_KEY_TYPES:
            if not self.host_key_path(key_type).exists():
                generate_key(self.host_key_path(key_type), key_type)
        self.authorized_keys.touch()
        self.authorized_keys.chmod(0o644)
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        last_error = ""
        for _attempt in range(_START_ATTEMPTS):
            self.port = free_port()
            config = self._write_config()
            check = subprocess.run(
                [SSHD, "-t", "-f", str(config)],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            if check.returncode != 0:
                raise RuntimeError(f"sshd refused its test config: {check.stderr.strip()}")
            self._log_file = self.log_path.open("ab")
            self.process = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
            )
            if self._wait_for_banner():
                return self
            last_error = self.log()[-2000:]
            self.stop()  # e.g. the port was taken between free_port() and bind
        raise RuntimeError(f"sshd did not start on {LOOPBACK}: {last_error}")

    def _wait_for_banner(self):
        deadline = time.monotonic() + _LISTEN_WAIT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with socket.create_connection((LOOPBACK, self.port), timeout=2) as sock:
                    if sock.recv(64).startswith(b"SSH-2.0-"):
                        return True
            except OSError:
                pass
            time.sleep(0.1)
        return False

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


class TestUser:
    """A dedicated unprivileged system user with a known password (root only)."""

    __test__ = False  # not a pytest test class

    name = "saas-ssh-test"

    def __init__(self, home):
        self.home = Path(home)
        self.password = secrets.token_urlsafe(18)
        self.created = False
        self.uid = self.gid = None

    def create(self):
        """Create (or reuse our leftover) user; return None, or why it cannot be done."""
        if os.geteuid() != 0:
            return "creating a system user with a known password needs root"
        for tool in ("useradd", "userdel", "chpasswd"):
            if not shutil.which(tool):
                return f"{tool} is not available"
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
