"""File operations on a managed host over an :class:`~.ssh.SshSession`: copy and remove trees.

Used to copy a template's filestore to a new instance and to remove an instance's
filestore when it is terminated::

    with SshSession(settings) as session:
        partial = partial_copy_path("/var/lib/odoo/filestore/client1")
        journal(partial)            # the caller records it before it exists
        copy_tree(session, "/var/lib/odoo/filestore/tpl",
                  "/var/lib/odoo/filestore/client1", temp_dir=partial)

A copy is made in a hidden sibling of its target, ``.<name>.saas-copy-<token>``
(:func:`partial_copy_path`, recognised by :func:`is_partial_copy`), renamed to the
target once complete: the target appears whole or not at all. The caller may choose
that name and record it before the copy starts, so that whatever a copy interrupted
by a crash leaves behind is known and can be removed with :func:`remove_tree`. The
copy itself dies with its SSH channel (see :mod:`.ssh`): it never keeps writing
after the process that started it is gone.

Removing is idempotent: :func:`remove_tree` of a missing path returns False.

**A copy shares the files of its source** (``cp -al``: hard links; where they are
impossible, e.g. across filesystems or past a file's link limit, ``cp -a
--reflink=auto``: a copy sharing blocks on filesystems that have reflinks, a full
copy elsewhere). The directories are new, so a file added to or removed from one
tree never shows in the other; it costs one link per file instead of its bytes.
That is safe because Odoo never writes into an existing filestore file, which
``odoo/addons/base/models/ir_attachment.py`` of Odoo 18.0 shows:

- ``_get_path``: a file's name is the SHA-1 of its content (``<sha[:2]>/<sha>``):
  the filestore is content-addressed, new content means a new name;
- ``_file_write``: ``open(full_path, 'wb')`` only ``if not os.path.exists(full_path)``
  (an attachment whose content changes gets a new file, the old one is left);
- ``_mark_for_gc`` (called by ``_file_write`` and ``_file_delete``): creates an empty
  marker under ``checklist/`` with ``open(path, 'ab')`` only when missing, writing
  nothing;
- ``_file_delete`` only marks; ``_gc_file_store_unsafe`` removes with ``os.unlink``
  (one name: the other tree's link, and the data, stay).

Nothing else in Odoo writes there (``db.duplicate``/``restore`` make a new tree with
``shutil.copytree``). So a shared file is read-only in practice, and each tree sees
only its own changes (``tests/test_filestore_sharing.py`` writes, rewrites and
garbage-collects attachments in a template and its clone). Disk accounting: a file
shared by N trees uses its blocks once; ``du`` counts a hard-linked file once per
invocation (``du -s filestore`` counts it once, ``du -s filestore/<db>`` alone counts
it whole for each database), and ``df`` shows the real use. A tree that is removed
frees only the files no other tree links.

The helper scripts are constants: paths reach them only as positional parameters
(``$1``, ``$2``...), each quoted by :func:`shlex.quote`, so no path is ever parsed as
shell code. The host needs GNU coreutils (``cp -al``, ``cp --reflink``, ``mv -T``).
"""

import contextlib
import logging
import posixpath
import re
import secrets
import time

from .exceptions import InvalidInput, RemotePathExists, SshCommandError, SshError
from .host_scripts import RemoteProcess
from .ssh import CommandResult

_logger = logging.getLogger(__name__)

__all__ = [
    "PARTIAL_COPY_MARK",
    "StagedCopy",
    "check_path",
    "copy_tree",
    "exists",
    "is_partial_copy",
    "partial_copy_path",
    "remove_tree",
    "stage_copy",
]

PARTIAL_COPY_MARK = ".saas-copy-"
_PARTIAL_NAME_CHARS = 100
_TOKEN_RE = re.compile(r"[0-9a-f]{16}")
# How much of a failed helper's stderr goes into an exception message.
_STDERR_EXCERPT = 500

# Exit codes 3-9 are ours; cp/mv/rm failures are mapped onto them.
# The copy is made in two phases on one channel, so that a caller can journal the
# target between them (a target that was someone else's is never journalled, so
# never removed by an undo): the script checks, links the tree into the hidden
# sibling, says "staged" and waits for one line on its input; "go" renames the
# sibling to the target. While it links, a watcher reads its input and kills its
# whole process group when the input ends (the channel closed, the connection lost,
# the manager killed); after "staged" the script reads the input itself, and its end
# (anything but "go") removes the sibling.
_STAGE_SCRIPT = (
    "src=$1; dst=$2; tmp=$3\n"
    'if [ ! -e "$src" ]; then exit 3; fi\n'
    'if [ ! -d "$src" ]; then exit 4; fi\n'
    'if [ -e "$dst" ] || [ -L "$dst" ]; then exit 5; fi\n'
    'if [ -e "$tmp" ] || [ -L "$tmp" ]; then exit 8; fi\n'
    "exec 3<&0 </dev/null\n"
    "{ while read -r _ <&3; do :; done; kill -KILL -$$; } >/dev/null 2>&1 &\n"
    "watch=$!\n"
    # Hard links first (same filesystem); else a copy, sharing blocks where the
    # filesystem has reflinks. A half-made set of links is removed before the copy.
    'if ! cp -al -- "$src/." "$tmp" 2>/dev/null; then rm -rf -- "$tmp"\n'
    '  if ! cp -a --reflink=auto -- "$src/." "$tmp"; then rm -rf -- "$tmp"; '
    'kill -KILL "$watch"; exit 6; fi\n'
    "fi\n"
    'kill -KILL "$watch" 2>/dev/null; wait "$watch" 2>/dev/null\n'
    "echo staged\n"
    'if ! read -r line <&3 || [ "$line" != go ]; then rm -rf -- "$tmp"; exit 9; fi\n'
    'if [ -e "$dst" ] || [ -L "$dst" ]; then rm -rf -- "$tmp"; exit 5; fi\n'
    'if ! mv -T -- "$tmp" "$dst"; then rm -rf -- "$tmp"\n'
    '  if [ -e "$dst" ] || [ -L "$dst" ]; then exit 5; fi; exit 7\n'
    "fi\n"
)
_STAGED = b"staged\n"
_REMOVE_SCRIPT = 'if [ ! -e "$1" ] && [ ! -L "$1" ]; then exit 3; fi; rm -rf -- "$1" || exit 6'
_EXISTS_SCRIPT = 'if [ -e "$1" ] || [ -L "$1" ]; then exit 0; fi; exit 3'
_MISSING, _NOT_A_DIRECTORY, _EXISTS, _TEMP_EXISTS = 3, 4, 5, 8


def check_path(path, *, for_removal=False):
    """Validate a remote path and return it normalised (no ``//``, no trailing ``/``).

    Refused (:class:`InvalidInput`): not a string, empty, relative, ``/``, a NUL byte,
    any ``.`` or ``..`` component; with ``for_removal``, also a top-level directory
    such as ``/var`` (a filestore always lies deeper).
    """
    if not isinstance(path, str) or not path:
        raise InvalidInput("a remote path is required")
    if "\0" in path:
        raise InvalidInput("a remote path cannot contain a NUL byte")
    if not path.startswith("/"):
        raise InvalidInput(f"remote path {path!r} is not absolute")
    parts = [part for part in path.split("/") if part]
    if any(part in (".", "..") for part in parts):
        raise InvalidInput(f"remote path {path!r} contains '.' or '..'")
    if not parts:
        raise InvalidInput("refusing to work on the remote root directory '/'")
    if for_removal and len(parts) < 2:
        raise InvalidInput(f"refusing to remove the top-level directory {path!r}")
    return "/" + "/".join(parts)


def partial_copy_path(dst_dir, token=None):
    """The hidden sibling a copy to ``dst_dir`` is made in: ``.<name>.saas-copy-<token>``.

    ``token`` is 16 lowercase hex digits, new and random when not given. Pure: nothing
    is created, so a caller can record the name before :func:`copy_tree` makes it.
    """
    parent, name = posixpath.split(check_path(dst_dir))
    token = secrets.token_hex(8) if token is None else token
    if not isinstance(token, str) or not _TOKEN_RE.fullmatch(token):
        raise InvalidInput("a partial copy token is 16 lowercase hexadecimal digits")
    return posixpath.join(parent, f".{name[:_PARTIAL_NAME_CHARS]}{PARTIAL_COPY_MARK}{token}")


def is_partial_copy(path, dst_dir):
    """Whether ``path`` is a name :func:`partial_copy_path` gives for ``dst_dir``."""
    try:
        path = check_path(path)
        parent, name = posixpath.split(check_path(dst_dir))
    except InvalidInput:
        return False
    prefix = posixpath.join(parent, f".{name[:_PARTIAL_NAME_CHARS]}{PARTIAL_COPY_MARK}")
    return path.startswith(prefix) and bool(_TOKEN_RE.fullmatch(path[len(prefix) :]))


def _helper(session, name, script, *args, timeout=None):
    return session.run(["sh", "-c", script, name, *args], timeout=timeout)


def copy_tree(session, src_dir, dst_dir, *, temp_dir=None):
    """Copy the directory ``src_dir`` to ``dst_dir`` (which must not exist) on the host.

    Returns True when copied, False when ``src_dir`` does not exist: Odoo creates
    a database's filestore on its first attachment, so a template without
    attachments has none and there is nothing to copy (nothing is created then).

    The copy (``cp -al``: hard links; ``cp -a --reflink=auto`` where links are
    impossible; modes, timestamps, symlinks kept; see the module's docstring) goes
    to ``temp_dir``, a hidden sibling of ``dst_dir`` from :func:`partial_copy_path`
    (a new one when not given), renamed to ``dst_dir`` once complete, so ``dst_dir``
    appears whole or not at all; on failure the sibling is removed. Nothing that existed before is
    touched. The parent directory of ``dst_dir`` must exist. It is
    :func:`stage_copy` and :meth:`StagedCopy.publish` in one call.

    Raises :class:`RemotePathExists` (``dst_dir`` or ``temp_dir`` exists),
    :class:`InvalidInput` (bad path, ``dst_dir`` inside ``src_dir``, ``temp_dir`` not
    a partial copy name of ``dst_dir``), :class:`SshCommandError` (source not a
    directory, copy failed), :class:`SshTimeout`, :class:`SshError`.
    """
    staged = stage_copy(session, src_dir, dst_dir, temp_dir=temp_dir)
    if staged is None:
        return False
    try:
        staged.publish()
    finally:
        staged.discard()
    return True


def stage_copy(session, src_dir, dst_dir, *, temp_dir=None, close_session=False, timeout=None):
    """First half of :func:`copy_tree`: the tree is linked into ``temp_dir``, not yet
    renamed to ``dst_dir``.

    Returns a :class:`StagedCopy` (its remote program waits, on its channel, to be
    published or discarded), or None when ``src_dir`` does not exist (nothing made).
    Between the two a caller can journal ``dst_dir``, now known to have been free
    when the copy began: the check is made on the host, in the copy's own program,
    so the copy costs one remote command. With ``close_session`` the session is
    closed with the staged copy (or here, when nothing is staged). ``timeout``:
    seconds the copy may run without a word (default: the session's command
    timeout); past it, the copy is stopped and its sibling removed.

    Raises what :func:`copy_tree` raises; on any of them the sibling is removed.
    """
    try:
        src, dst, tmp = _copy_paths(src_dir, dst_dir, temp_dir)
        timeout = session.settings.command_timeout if timeout is None else timeout
        staged = _start_stage(session, src, dst, tmp, timeout, close_session)
    except BaseException:
        if close_session:
            session.close()
        raise
    if staged is None and close_session:
        session.close()
    return staged


def _copy_paths(src_dir, dst_dir, temp_dir):
    src = check_path(src_dir)
    dst = check_path(dst_dir)
    if src == dst or dst.startswith(src + "/") or src.startswith(dst + "/"):
        raise InvalidInput(f"cannot copy {src} to {dst}: one contains the other")
    if temp_dir is None:
        return src, dst, partial_copy_path(dst)
    if is_partial_copy(temp_dir, dst):
        return src, dst, check_path(temp_dir)
    raise InvalidInput(f"{temp_dir!r} is not a partial copy name of {dst} (see partial_copy_path)")


def _start_stage(session, src, dst, tmp, timeout, close_session):
    who, target = session.who, session.target
    started = time.monotonic()
    process = RemoteProcess(
        session, ["sh", "-c", _STAGE_SCRIPT, "saas-stage-copy", src, dst, tmp], timeout
    )
    output = b""
    try:
        for chunk in process.chunks():
            output += chunk
            if output.endswith(_STAGED):
                _logger.info(
                    "ssh %s: linked %s into %s in %.2f s", who, src, tmp, time.monotonic() - started
                )
                return StagedCopy(session, process, src, dst, tmp, started, close_session)
    except SshError:
        # Stopped mid-copy (no word within the timeout, connection lost): the channel
        # closed, the program's group is killed; remove the sibling if we can.
        process.close()
        _remove_leftover(session, tmp)
        raise
    status, errors, _result = process.finish(timeout=30)
    process.close()
    if status == _MISSING:
        _logger.info("ssh %s: %s does not exist, nothing to copy", who, src)
        return None
    if status in (_EXISTS, _TEMP_EXISTS):
        existing = dst if status == _EXISTS else tmp
        _logger.warning("ssh %s: not copying %s: %s already exists", who, src, existing)
        raise RemotePathExists(f"{existing} already exists on {target}", path=existing)
    result = CommandResult(status, output.decode("utf-8", "replace"), errors)
    if status == _NOT_A_DIRECTORY:
        raise _command_error(session, f"cannot copy {src}: not a directory", result)
    _remove_leftover(session, tmp)
    raise _command_error(session, f"copying {src} to {dst} failed", result)


class StagedCopy:
    """A tree linked into its hidden sibling by :func:`stage_copy`, waiting to be
    renamed to its target (:meth:`publish`) or removed (:meth:`discard`).

    Its remote program waits on its channel: if this process dies or the session
    closes, the program removes the sibling itself (and a caller's journal names
    it too). Not thread-safe: one caller publishes or discards it, once.
    """

    def __init__(self, session, process, src, dst, tmp, started, close_session):
        self.session = session
        self.process = process
        self.src, self.dst, self.tmp = src, dst, tmp
        self.started = started
        self.close_session = close_session  # the session ends with this copy
        self.ended = False

    def __del__(self):
        # Dropped without publish or discard (its caller died): close the channel,
        # and the program on the host removes the sibling itself.
        if not getattr(self, "ended", True):
            with contextlib.suppress(Exception):
                self.process.close()
                if self.close_session:
                    self.session.close(keep=False)  # never into a pool from a finaliser

    def __repr__(self):
        state = "ended" if self.ended else "staged"
        return f"<StagedCopy {self.src} -> {self.dst} ({state})>"

    def publish(self, timeout=60.0):
        """Rename the sibling to the target; True. Raises :class:`RemotePathExists`
        when the target appeared meanwhile (the sibling is removed then),
        :class:`SshCommandError` when the rename failed, :class:`SshError`."""
        if self.ended:
            raise InvalidInput(f"the copy to {self.dst} was already published or discarded")
        self.ended = True
        session = self.session
        try:
            self.process.send(b"go\n")
            status, errors, _result = self.process.finish(timeout=timeout)
        finally:
            self.process.close()
            if self.close_session:
                session.close()
        if status == 0:
            _logger.info(
                "ssh %s: copied %s to %s in %.2f s",
                session.who,
                self.src,
                self.dst,
                time.monotonic() - self.started,
            )
            return True
        if status == _EXISTS:
            _logger.warning(
                "ssh %s: not renaming %s: %s exists now", session.who, self.tmp, self.dst
            )
            raise RemotePathExists(f"{self.dst} already exists on {session.target}", path=self.dst)
        result = CommandResult(status, "", errors)
        raise _command_error(session, f"renaming {self.tmp} to {self.dst} failed", result)

    def discard(self):
        """Remove the sibling (idempotent; nothing after :meth:`publish`)."""
        if self.ended:
            return
        self.ended = True
        try:
            # The program reads the end of its input and removes the sibling...
            self.process.close()
            # ... which is removed here too, in case it could not (logged when
            # this cannot be done either: the caller's journal names it).
            _remove_leftover(self.session, self.tmp)
        finally:
            if self.close_session:
                self.session.close()


def _remove_leftover(session, tmp):
    error = None
    # A killed cp may still be exiting while rm runs; a second pass catches that.
    for _attempt in range(3):
        try:
            result = _helper(session, "saas-remove-tree", _REMOVE_SCRIPT, tmp, timeout=60)
        except SshError as exc:
            error = exc
            break
        if result.exit_status in (0, _MISSING):
            return
        error = result.stderr.strip()[-_STDERR_EXCERPT:]
    _logger.error(
        "ssh %s: could not remove the partial copy %s (%s); remove it by hand",
        session.who,
        tmp,
        error,
    )


def remove_tree(session, path):
    """Remove ``path`` (directory tree or file) on the host, like ``rm -rf``.

    Returns True when something was removed, False when ``path`` did not exist (so
    removing twice is harmless). Refuses (:class:`InvalidInput`) empty, relative,
    ``/``, top-level and ``..``-containing paths. A symlink is removed, not followed.
    """
    path = check_path(path, for_removal=True)
    started = time.monotonic()
    result = _helper(session, "saas-remove-tree", _REMOVE_SCRIPT, path)
    if result.exit_status == _MISSING:
        _logger.info("ssh %s: %s does not exist, nothing to remove", session.who, path)
        return False
    if result.exit_status != 0:
        raise _command_error(session, f"removing {path} failed", result)
    _logger.info("ssh %s: removed %s in %.2f s", session.who, path, time.monotonic() - started)
    return True


def exists(session, path):
    """Whether ``path`` exists on the host (a dangling symlink counts). Reads only."""
    path = check_path(path)
    result = _helper(session, "saas-path-exists", _EXISTS_SCRIPT, path)
    if result.exit_status == 0:
        return True
    if result.exit_status == _MISSING:
        return False
    raise _command_error(session, f"cannot check {path}", result)


def _command_error(session, what, result):
    excerpt = result.stderr.strip()[-_STDERR_EXCERPT:]
    message = f"{what} on {session.target} (exit status {result.exit_status})"
    if excerpt:
        message += f": {excerpt}"
    _logger.warning("ssh %s: %s", session.who, message)
    return SshCommandError(message, result.exit_status, excerpt)
