"""What the machine must hold: Debian packages (installed as root) and virtualenvs.

Virtualenvs live in ``$SAAS_MANAGER_CACHE`` (default ``~/.cache/saas_manager``), one
per content of a requirements file and Python version, reused while it is unchanged.
"""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from . import util


def cache_dir():
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "saas_manager"
    return Path(os.environ.get("SAAS_MANAGER_CACHE") or default)


def _installed(package):
    if package == "python3-venv":
        return (
            subprocess.run(
                ["python3", "-c", "import ensurepip, venv"], capture_output=True, check=False
            ).returncode
            == 0
        )
    status = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False
    ).stdout
    return "install ok installed" in status


def ensure_debs(*packages):
    """Install the Debian packages that are missing (as root); False when some are
    missing and cannot be installed (the message says how to)."""
    if not shutil.which("dpkg-query"):
        return True  # not Debian: the tools are looked for where they are used
    missing = [package for package in packages if not _installed(package)]
    if not missing:
        return True
    if os.geteuid() != 0:
        names = " ".join(missing)
        util.log(f"missing Debian packages: {names} (run: sudo apt-get install {names})")
        return False
    util.log(f"installing Debian packages: {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for argv in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
    ):
        if subprocess.run(argv, env=env, stdout=sys.stderr, check=False).returncode:
            return False
    return True


def _venv_key(requirements):
    # Same key as the shell helper it replaces (sha256 of the file then
    # `python3 --version`), so existing virtualenvs are reused.
    version = subprocess.run(
        ["python3", "--version"], capture_output=True, text=True, check=True
    ).stdout
    digest = hashlib.sha256(Path(requirements).read_bytes() + version.encode())
    return digest.hexdigest()[:12]


def ensure_venv(name, requirements):
    """The path of a virtualenv holding ``requirements``, made once per content."""
    path = cache_dir() / f"venv-{name}-{_venv_key(requirements)}"
    if not (path / ".complete").exists():
        util.log(f"creating virtualenv {path} from {Path(requirements).name}")
        shutil.rmtree(path, ignore_errors=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        pip = str(path / "bin" / "pip")
        for argv in (
            ["python3", "-m", "venv", str(path)],
            [pip, "install", "-q", "--upgrade", "pip"],
            [pip, "install", "-q", "-r", str(requirements)],
        ):
            if subprocess.run(argv, stdout=sys.stderr, check=False).returncode:
                raise SystemExit(
                    f"[saas_manager] error: virtualenv {path}: {' '.join(argv)} failed"
                )
        (path / ".complete").touch()
    return path
