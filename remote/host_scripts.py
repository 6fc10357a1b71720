"""The programs the manager runs on a managed host for backups and moves, and their channel.

Each is a constant (Python for the host's ``python3``, or POSIX ``sh``) whose
values come as arguments (quoted with :func:`shlex.quote`) or on stdin (the
database password, never on a command line). :class:`RemoteProcess` runs one on a
channel of its own over an open :class:`~.ssh.SshSession`, its stdout streamed and
its stderr kept (the last few KB); closing the channel ends its stdin, which the
programs watch: they then kill ``pg_dump``/``psql`` and exit.
"""

import json
import shlex

from paramiko.ssh_exception import SSHException

from .exceptions import SshError, SshTimeout
from .storage import READ_CHUNK

__all__ = [
    "DUMP_SCRIPT",
    "LIST_SCRIPT",
    "RENAME_SCRIPT",
    "RESTORE_SCRIPT",
    "SEND_SCRIPT",
    "RemoteProcess",
    "pg_config",
]

IDLE_TIMEOUT_S = 600.0
WINDOW_BYTES = 4 * 1024 * 1024
RESULT_MARK = "saas-backup-result:"
_STDERR_KEEP = 8000

# Run on the host as: python3 -c DUMP_SCRIPT saas-backup DB FILESTORE LEVEL PG_DUMP.
# stdin: one JSON line (connection and manifest), then kept open: its end means the
# manager is gone, and pg_dump is killed. stdout: the zip. stderr: errors, then one
# result line.
# The start both pg_dump programs share (DUMP_SCRIPT and SEND_SCRIPT), once their
# first line has set db and pg_dump: read the JSON line on stdin (connection...),
# watch stdin's end (the manager gone: pg_dump killed, exit 3), and start_dump() /
# end_dump() run pg_dump with its stderr's tail kept (exit 2 with it on failure).
_PG_DUMP_PRELUDE = r"""
stdin = sys.stdin.buffer
config = json.loads(stdin.readline())
state = {"child": None}
def watch():
    while stdin.read1(65536):
        pass
    child = state["child"]
    if child is not None and child.poll() is None:
        os.killpg(child.pid, signal.SIGKILL)
    os._exit(3)
threading.Thread(target=watch, daemon=True).start()
out = sys.stdout.buffer
env = dict(os.environ)
if config.get("password"):
    env["PGPASSWORD"] = config["password"]
argv = [pg_dump, "--no-owner", "--no-password", "--host", config["host"],
        "--port", str(config["port"]), "--username", config["user"], "--dbname", db]
tail = bytearray()
def errors(stream):
    for line in stream:
        tail.extend(line)
        del tail[:-4000]
def start_dump():
    child = state["child"] = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=env, start_new_session=True)
    reader = threading.Thread(target=errors, args=(child.stderr,), daemon=True)
    reader.start()
    return child, reader
def end_dump(child, reader):
    code = child.wait()
    reader.join(10)
    if code:
        out.flush()
        reason = tail.decode("utf-8", "replace").strip()
        sys.stderr.write("pg_dump failed (exit %s): %s\n" % (code, reason))
        sys.stderr.flush()
        os._exit(2)
"""

DUMP_SCRIPT = (
    r"""
import json, os, signal, subprocess, sys, threading, time, zipfile
db, store, level, pg_dump = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
"""
    + _PG_DUMP_PRELUDE
    + r"""
def member(name):
    info = zipfile.ZipInfo(name, time.localtime()[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    try:
        info.compress_level = level
    except AttributeError:  # Python < 3.13
        info._compresslevel = level
    info.external_attr = 0o644 << 16
    return info
dump_size = files = store_size = 0
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
    child, reader = start_dump()
    with zf.open(member("dump.sql"), "w", force_zip64=True) as dest:
        while True:
            data = child.stdout.read(1 << 20)
            if not data:
                break
            dest.write(data)
            dump_size += len(data)
    end_dump(child, reader)
    zf.writestr(member("manifest.json"), json.dumps(config["manifest"], indent=4))
    for dirpath, dirnames, filenames in os.walk(store):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if not os.path.isfile(path):
                continue
            arcname = "filestore/" + os.path.relpath(path, store)
            try:
                zf.write(path, arcname, zipfile.ZIP_DEFLATED, level)
            except FileNotFoundError:
                continue
            files += 1
            store_size += zf.getinfo(arcname).file_size
out.flush()
result = {"dump_size": dump_size, "files": files, "filestore_size": store_size}
sys.stderr.write("saas-backup-result:" + json.dumps(result) + "\n")
sys.stderr.flush()
os._exit(0)
"""
)

# Run on the host as: python3 -c RESTORE_SCRIPT saas-restore PSQL TEMP_DIR.
# stdin: frames (kind byte, 8-byte length, payload): C config, S sql data, E end of
# sql, F file start (relative path), D file data, G file end, Z all done. Input
# ending before Z (the manager is gone) kills psql before its transaction commits.
RESTORE_SCRIPT = r"""
import json, os, signal, struct, subprocess, sys, threading
psql, temp_dir = sys.argv[2], sys.argv[3]
stdin = sys.stdin.buffer
state = {"child": None}
def fail(message, code):
    child = state["child"]
    if child is not None and child.poll() is None:
        os.killpg(child.pid, signal.SIGKILL)
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
    os._exit(code)
def exact(size):
    data = stdin.read(size)
    if len(data) != size:
        fail("the input ended early", 3)
    return data
def frame():
    kind, size = struct.unpack(">cQ", exact(9))
    return kind, exact(size)
kind, payload = frame()
config = json.loads(payload)
env = dict(os.environ)
if config.get("password"):
    env["PGPASSWORD"] = config["password"]
argv = [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", "--no-password",
        "--host", config["host"], "--port", str(config["port"]),
        "--username", config["user"], "--dbname", config["database"]]
tail = bytearray()
def errors(stream):
    for line in stream:
        tail.extend(line)
        del tail[:-4000]
child = state["child"] = subprocess.Popen(
    argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    env=env, start_new_session=True)
reader = threading.Thread(target=errors, args=(child.stderr,), daemon=True)
reader.start()
current = None
files = written = 0
while True:
    kind, payload = frame()
    if kind == b"S":
        try:
            child.stdin.write(payload)
        except BrokenPipeError:
            child.wait()
            reader.join(10)
            fail("psql failed: " + tail.decode("utf-8", "replace").strip(), 2)
    elif kind == b"E":
        try:
            child.stdin.close()
        except BrokenPipeError:
            pass
        code = child.wait()
        reader.join(10)
        if code:
            fail("psql failed (exit %s): %s" % (code, tail.decode("utf-8", "replace").strip()), 2)
    elif kind == b"F":
        rel = payload.decode("utf-8")
        if os.path.isabs(rel) or os.path.normpath(rel) != rel or rel.startswith(".."):
            fail("refusing the filestore member %r" % rel, 4)
        if not os.path.isdir(temp_dir):
            os.mkdir(temp_dir)
        path = os.path.join(temp_dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            current = open(path, "xb")
        except OSError as exc:
            fail("cannot write %s: %s" % (path, exc.strerror), 5)
    elif kind == b"D":
        try:
            current.write(payload)
        except OSError as exc:
            fail("cannot write %s: %s" % (current.name, exc.strerror), 5)
        written += len(payload)
    elif kind == b"G":
        try:
            current.close()
        except OSError as exc:
            fail("cannot write %s: %s" % (current.name, exc.strerror), 5)
        current = None
        files += 1
    elif kind == b"Z":
        break
    else:
        fail("unknown frame %r" % kind, 4)
sys.stderr.write("saas-backup-result:" + json.dumps({"files": files, "bytes": written}) + "\n")
sys.stderr.flush()
os._exit(0)
"""

# Run on the source host of a move or copy as: python3 -c SEND_SCRIPT saas-send DB
# FILESTORE PG_DUMP. stdin: one JSON line (connection, and "have": {relative path:
# size} of the files the target has already), then kept open: its end means the
# manager is gone, and pg_dump is killed. stdout: the frames RESTORE_SCRIPT reads
# (S sql data, E end of sql, F/D/G per file the target lacks, Z), so the manager
# relays them to the target as they come. stderr: errors, then one result line
# with what it saw: every file's count and bytes, and a digest of their listing.
SEND_SCRIPT = (
    r"""
import hashlib, json, os, signal, struct, subprocess, sys, threading
db, store, pg_dump = sys.argv[2], sys.argv[3], sys.argv[4]
"""
    + _PG_DUMP_PRELUDE
    + r"""
have = config.get("have") or {}
def frame(kind, payload=b""):
    out.write(struct.pack(">cQ", kind, len(payload)))
    if payload:
        out.write(payload)
child, reader = start_dump()
dump_size = 0
while True:
    data = child.stdout.read(1 << 20)
    if not data:
        break
    frame(b"S", data)
    dump_size += len(data)
end_dump(child, reader)
frame(b"E")
listing = []
sent = sent_bytes = 0
for dirpath, dirnames, filenames in os.walk(store):
    dirnames.sort()
    for name in sorted(filenames):
        path = os.path.join(dirpath, name)
        rel = os.path.relpath(path, store)
        try:
            handle = open(path, "rb")
        except (FileNotFoundError, IsADirectoryError):
            continue
        with handle:
            size = os.fstat(handle.fileno()).st_size
            listing.append("%s\t%d" % (rel, size))
            if have.get(rel) == size:
                continue
            frame(b"F", rel.encode("utf-8"))
            while True:
                data = handle.read(1 << 20)
                if not data:
                    break
                frame(b"D", data)
            frame(b"G")
            sent += 1
            sent_bytes += size
frame(b"Z")
out.flush()
listing.sort()
digest = hashlib.sha256("\n".join(listing).encode("utf-8")).hexdigest()
total = sum(int(line.rsplit("\t", 1)[1]) for line in listing)
result = {"dump_size": dump_size, "files": len(listing), "bytes": total, "digest": digest,
          "sent_files": sent, "sent_bytes": sent_bytes}
sys.stderr.write("saas-backup-result:" + json.dumps(result) + "\n")
sys.stderr.flush()
os._exit(0)
"""
)

# Run as: sh -c LIST_SCRIPT saas-list DIR. stdout: "relative path<TAB>size" per file
# of DIR (nothing when DIR does not exist).
LIST_SCRIPT = 'if [ -d "$1" ]; then cd -- "$1" && find . -type f -printf "%P\\t%s\\n"; fi'

RENAME_SCRIPT = 'if [ -e "$2" ] || [ -L "$2" ]; then exit 5; fi; mv -T -- "$1" "$2" || exit 7'


class RemoteProcess:
    """One remote command on its own channel, its stdout streamed, its stderr kept."""

    def __init__(self, session, argv, idle_timeout):
        self.who = session.who
        # SshSession has no public streaming call: the channel goes over its
        # authenticated, host-key-checked connection.
        self.channel = session.open_channel(30, window_size=WINDOW_BYTES, max_packet_size=64 * 1024)
        try:
            self.channel.settimeout(idle_timeout)
            self.channel.exec_command("exec " + shlex.join(argv))
        except (OSError, EOFError, SSHException) as exc:
            self.channel.close()
            raise SshError(f"cannot start a command on {session.target}: {exc}") from None
        self.idle_timeout = idle_timeout
        self._stderr = bytearray()

    def _drain_stderr(self):
        while self.channel.recv_stderr_ready():
            self._stderr += self.channel.recv_stderr(65536)
            del self._stderr[:-_STDERR_KEEP]

    def send(self, data):
        try:
            self.channel.sendall(data)
        except TimeoutError:
            raise SshTimeout(
                f"the host {self.who} took no data for {self.idle_timeout:g} s"
            ) from None
        except (OSError, EOFError) as exc:
            raise SshError(f"the channel to {self.who} closed: {exc}") from None

    def chunks(self):
        while True:
            self._drain_stderr()
            try:
                data = self.channel.recv(READ_CHUNK)
            except TimeoutError:
                raise SshTimeout(
                    f"the host {self.who} sent nothing for {self.idle_timeout:g} s"
                ) from None
            except (OSError, EOFError) as exc:
                raise SshError(f"reading from {self.who} failed: {exc}") from None
            if not data:
                return
            yield data

    def finish(self, timeout=60.0):
        """Wait for the exit status; return ``(status, stderr text, result dict)``."""
        self.channel.status_event.wait(timeout)
        self._drain_stderr()
        status = self.channel.exit_status if self.channel.exit_status_ready() else None
        text = self._stderr.decode("utf-8", "replace")
        result = {}
        lines = []
        for line in text.splitlines():
            if line.startswith(RESULT_MARK):
                result = json.loads(line[len(RESULT_MARK) :])
            elif line.strip():
                lines.append(line.strip())
        return status, "\n".join(lines)[-2000:], result

    def close(self):
        self.channel.close()


def pg_config(params, **extra):
    return {
        "host": params.host,
        "port": params.port,
        "user": params.user,
        "password": params.password,
        **extra,
    }
