"""An Odoo 18.0 server from a source tree: its config, one-shot runs, a served instance.

:func:`find_odoo_src` finds the tree ($ODOO_SRC, then /opt/odoo-18.0).
:class:`OdooServer` writes ``odoo.conf`` (always with a fresh or kept
``saas_manager_secret_key``, the Fernet key the module encrypts secrets with),
runs ``odoo-bin … --stop-after-init`` (:meth:`OdooServer.run`), and serves
(:meth:`OdooServer.start`, ready once its login page answers; :meth:`stop`).
"""

import http.cookiejar
import os
import subprocess
import urllib.request
from pathlib import Path

from . import util
from .service import ProcessService, ServiceError

ROOT = Path(__file__).resolve().parent.parent  # the addon saas_manager
DEFAULT_SOURCES = ("/opt/odoo-18.0",)
READY_TIMEOUT_S = 180


def find_odoo_src(complain=util.log):
    """The directory of an Odoo 18.0 tree (holding odoo-bin and odoo/), or None."""
    env_src = os.environ.get("ODOO_SRC", "")
    for candidate in (env_src, *DEFAULT_SOURCES):
        if not candidate:
            continue
        path = Path(candidate)
        release = path / "odoo" / "release.py"
        if (
            (path / "odoo-bin").is_file()
            and release.is_file()
            and "version_info = (18, 0," in release.read_text()
        ):
            return path.resolve()
        if candidate == env_src and complain:
            complain(f"ODOO_SRC={candidate} holds no Odoo 18.0 tree (odoo-bin and odoo/release.py)")
    return None


class OdooServer(ProcessService):
    """One Odoo server: ``odoo_src``, the virtualenv's ``python``, a cluster ``pg``
    (its host, port, owner and owner_password are the database settings).

    ``with_addon``: put this repository on the addons path as ``saas_manager``.
    ``serve_args``: more odoo-bin arguments when serving; ``log_to_file=False``: its
    log goes to this terminal rather than ``<workdir>/odoo.log``.
    ``secret_key``: the module's key; a new one when None (give a kept one where the
    database outlives the run, as the demo's does). ``options``: more odoo.conf lines.
    """

    name = "odoo"
    log_name = "odoo.log"
    stop_timeout = 30.0

    def __init__(
        self,
        workdir,
        odoo_src,
        python,
        pg,
        *,
        http_port=None,
        master_password=None,
        secret_key=None,
        with_addon=True,
        data_dir=None,
        options=None,
        serve_args=(),
        log_to_file=True,
    ):
        super().__init__(workdir)
        self.odoo_src = Path(odoo_src)
        self.python = str(python)
        self.pg = pg
        self.http_port = http_port or util.free_port()
        self.master_password = master_password or util.random_password()
        self.secret_key = secret_key or util.fernet_key()
        self.with_addon = with_addon
        self.data_dir = Path(data_dir) if data_dir else None
        self.options = dict(options or {})
        self.serve_args = tuple(serve_args)
        self.log_to_file = log_to_file

    @property
    def url(self):
        return f"http://{util.LOOPBACK}:{self.http_port}"

    @property
    def config_path(self):
        return self.workdir / "odoo.conf"

    def addons_path(self):
        paths = [self.odoo_src / "odoo" / "addons"]
        if (self.odoo_src / "addons").is_dir():
            paths.insert(0, self.odoo_src / "addons")
        if self.with_addon:
            # Odoo finds the addon by its directory name, whatever the clone is called.
            addons = self.workdir / "addons"
            addons.mkdir(parents=True, exist_ok=True)
            link = addons / "saas_manager"
            if not link.is_symlink() or link.resolve() != ROOT:
                link.unlink(missing_ok=True)
                link.symlink_to(ROOT)
            paths.append(addons)
        return ",".join(str(path) for path in paths)

    def write_config(self):
        """Write odoo.conf (mode 600: it holds passwords) and return its path."""
        self._make_workdir()
        data_dir = self.data_dir or self.workdir / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        options = {
            "addons_path": self.addons_path(),
            "data_dir": data_dir,
            "db_host": self.pg.host,
            "db_port": self.pg.port,
            "db_user": self.pg.owner,
            "db_password": self.pg.owner_password,
            "admin_passwd": self.master_password,
            "http_interface": util.LOOPBACK,
            "http_port": self.http_port,
            "list_db": True,
            "max_cron_threads": 0,
            "saas_manager_secret_key": self.secret_key,
            **self.options,
        }
        text = "[options]\n" + "".join(f"{key} = {value}\n" for key, value in options.items())
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        return self.config_path

    def command(self, *args):
        """The odoo-bin command line; a subcommand (``shell``) must come first."""
        head = [self.python, str(self.odoo_src / "odoo-bin")]
        if args and not args[0].startswith("-"):
            head.append(args[0])
            args = args[1:]
        return [*head, "-c", str(self.config_path), *args]

    def run(self, *args, log=None, stdin=None, env=None, check=True):
        """``odoo-bin -c odoo.conf ARGS`` to its end (e.g. with ``--stop-after-init``).

        Output goes to ``log`` (a path); with ``check`` a failure raises ServiceError
        with the log's tail. Returns the exit code.
        """
        if not self.config_path.exists():
            self.write_config()
        log = Path(log) if log else self.workdir / "run.log"
        with log.open("wb") as out:
            code = subprocess.run(
                self.command(*args),
                input=stdin.encode() if stdin is not None else None,
                stdin=subprocess.DEVNULL if stdin is None else None,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                check=False,
            ).returncode
        if check and code:
            raise ServiceError(f"odoo-bin {' '.join(args)} failed (exit {code}):\n{util.tail(log)}")
        return code

    def _start(self):
        self.write_config()
        self.spawn(self.command(*self.serve_args), to_log=self.log_to_file)
        self.wait_ready()

    def login_page_answers(self, db=None):
        """True when ``/web/login[?db=]`` answers 200 (the database's registry is loaded).

        Cookies kept: with several databases, Odoo answers ?db= by setting it in the
        session and redirecting to the same URL.
        """
        url = f"{self.url}/web/login" + (f"?db={db}" if db else "")
        opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )
        try:
            with opener.open(url, timeout=60) as answer:
                answer.read()
                return answer.status == 200
        except OSError:
            return False

    def wait_ready(self, db=None, timeout=READY_TIMEOUT_S):
        db = db or self.options.get("db_name")

        def ready():
            self.check_alive()
            return self.login_page_answers(db)

        try:
            util.wait_until(ready, timeout, interval=0.5, what=f"Odoo serving on {self.url}")
        except TimeoutError as exc:
            raise ServiceError(f"{exc}:\n{self.log_tail()}") from None
