"""What every sandbox service shares: start, stop, a context manager, a log.

A service is something a test session, the demo or a benchmark starts for a while
on loopback and stops afterwards (a PostgreSQL cluster, an sshd, an Odoo server;
later an S3-compatible server, Prometheus, a streaming replica). A new one
subclasses :class:`Service` (or :class:`ProcessService` when it is a foreground
child process) and implements ``_start`` and ``_stop``; composing several is
``contextlib.ExitStack`` (see ``scripts/saas.py``).
"""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import util


class ServiceError(RuntimeError):
    """A service did not start, or a command of it failed; the message says why."""


class Service:
    """Base class: ``start()`` / ``stop()``, or ``with Service(...) as service:``.

    ``workdir`` holds everything the service writes. When none is given a temporary
    one is made and removed by ``stop()`` (a throwaway service); a given one is kept,
    so that a later run reuses it (the demo keeps its cluster, keys and data).
    """

    name = "service"
    log_name = "service.log"

    def __init__(self, workdir=None):
        self.throwaway = workdir is None
        self.workdir = Path(workdir) if workdir else None
        self.started = False  # True when this object started it (and stop() stops it)

    @property
    def log_path(self):
        return self.workdir / self.log_name

    def _make_workdir(self):
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix=f"saas-{self.name}-", dir="/tmp"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._prepare_workdir()

    def _prepare_workdir(self):
        """Hook: adjust the workdir once it exists (owner, modes, location)."""

    def start(self):
        self._make_workdir()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        try:
            if self.started:
                self._stop()
        finally:
            self.started = False
            if self.throwaway and self.workdir is not None and self.workdir.exists():
                shutil.rmtree(self.workdir, ignore_errors=True)

    def _start(self):
        raise NotImplementedError

    def _stop(self):
        raise NotImplementedError

    def log_tail(self, lines=40):
        return util.tail(self.log_path, lines) if self.workdir else ""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()


class ProcessService(Service):
    """A service that is one foreground child process, in a session of its own.

    Its own session: Ctrl-C in a terminal reaches the command that started it only,
    which then stops its services in order. Its pid is kept in ``<workdir>/<name>.pid``
    so that a later run can find it still running (:meth:`running_pid`).
    """

    stop_timeout = 30.0

    def __init__(self, workdir=None):
        super().__init__(workdir)
        self.process = None
        self._log_file = None

    @property
    def pid_path(self):
        return self.workdir / f"{self.name}.pid"

    def spawn(self, argv, env=None, to_log=True):
        """Start ``argv``; its output goes to the log file, or with ``to_log=False``
        to this process's own stdout and stderr (the demo shows Odoo's log)."""
        if to_log:
            self._log_file = self.log_path.open("ab")
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT if to_log else None,
            env=env,
            start_new_session=True,
        )
        self.pid_path.write_text(f"{self.process.pid}\n")
        self.started = True
        return self.process

    def alive(self):
        """True while the process this object started runs; False once it has exited."""
        return self.process is not None and self.process.poll() is None

    def check_alive(self):
        """Raise ServiceError with the log's tail if the process has exited."""
        if not self.alive():
            code = self.process.poll() if self.process else None
            raise ServiceError(f"{self.name} exited (code {code}):\n{self.log_tail()}")
        return False

    def running_pid(self):
        """The pid of this workdir's process left running by an earlier run, or None."""
        try:
            pid = int(self.pid_path.read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def _stop(self):
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout=self.stop_timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=10)
            self.process = None
        self.pid_path.unlink(missing_ok=True)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
