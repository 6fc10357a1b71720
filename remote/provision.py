"""Provision an instance: clone the template database and copy its filestore, at once.

The two halves touch different systems (the server's PostgreSQL, and its disk over
SSH), so they run side by side: the filestore copy, with its SSH connection, takes
about as long as the clone itself, and doing them one after the other would double
the time of a provision. Either half failing undoes the other, so a failed
provision leaves neither a database nor a filestore behind.

Before it, :func:`check_free` looks at the target (reads only) and keeps its SSH
session open for the copy: one SSH handshake per provision, while the caller can
still journal what the provision will make after the check and before it makes
anything (so a target that exists, someone else's, is never journalled, and never
removed by an undo).
"""

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from . import filestore, postgres, ssh
from .exceptions import RemoteError

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProvisionResult:
    """What :func:`provision` did: the clone's result, whether a filestore was
    copied (a template without attachments has none), and the whole duration."""

    clone: postgres.CloneResult
    filestore_copied: bool
    duration_s: float
    # What the ``invitation`` call returned (the customer's token), or why it failed.
    invitation: object = None
    invitation_error: RemoteError | None = None


def _copy_filestore(ssh_settings, source_dir, target_dir, temp_dir, session=None):
    # The session check_free opened (reopened if closed), else a new one; closed here.
    with session or ssh.SshSession(ssh_settings) as open_session:
        return filestore.copy_tree(open_session, source_dir, target_dir, temp_dir=temp_dir)


def _remove_filestore(ssh_settings, target_dir):
    with ssh.SshSession(ssh_settings) as session:
        filestore.remove_tree(session, target_dir)


def provision(
    pg_params,
    ssh_settings,
    template,
    target,
    *,
    source_dir,
    target_dir,
    base_url=None,
    strategy=None,
    temp_dir=None,
    handover=None,
    session=None,
    invitation=None,
):
    """Clone database ``template`` into ``target`` and copy ``source_dir`` to ``target_dir``.

    :param pg_params: :class:`postgres.ConnectionParams` of the server's PostgreSQL.
    :param ssh_settings: :class:`ssh.SshSettings` of the server.
    :param source_dir: the template's filestore on the server.
    :param target_dir: the new database's filestore (must not exist).
    :param base_url: the clone's ``web.base.url``.
    :param temp_dir: the hidden sibling the filestore is copied in before its rename
        (:func:`filestore.partial_copy_path`), for a caller that journals it first.
    :param handover: a :class:`.handover.Handover`, applied with the clone's identity.
    :param session: the :class:`ssh.SshSession` :func:`check_free` left open, used
        for the copy and closed; None: the copy opens its own.
    :param invitation: the arguments of :func:`postgres.run_in_database` that issue
        the customer's invitation, run once the clone is made (while the copy goes
        on); what it returns, or the RemoteError it raised, is in the result: it
        never fails the provision.
    :returns: a :class:`ProvisionResult`.
    :raises RemoteError: the first failure (the clone's if both failed), once what
        the other half made is removed. Nothing that existed before is touched: a
        filestore that was already there is refused, not removed.
    """
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="saas-filestore") as pool:
        copy = pool.submit(_copy_filestore, ssh_settings, source_dir, target_dir, temp_dir, session)
        clone_result = clone_error = token = invitation_error = None
        try:
            clone_result = postgres.clone_database(
                pg_params,
                template,
                target,
                base_url=base_url,
                strategy=strategy,
                handover=handover,
            )
        except RemoteError as exc:
            clone_error = exc
        else:
            if invitation is not None:
                try:
                    token = postgres.run_in_database(*invitation)
                except RemoteError as exc:
                    invitation_error = exc
        copied = False
        copy_error = None
        try:
            copied = copy.result()
        except RemoteError as exc:
            copy_error = exc
    if clone_error is None and copy_error is None:
        duration = time.monotonic() - started
        _logger.info(
            "Provisioned %s from %s in %.3f s (filestore %s)",
            target,
            template,
            duration,
            "copied" if copied else "none",
        )
        return ProvisionResult(clone_result, copied, duration, token, invitation_error)
    # Undo the half that worked; report the failure that stopped the provision.
    if clone_error is None:
        try:
            postgres.drop_database(pg_params, target)
        except RemoteError:
            _logger.exception("Could not drop %s after its filestore copy failed", target)
    if copied:
        try:
            _remove_filestore(ssh_settings, target_dir)
        except RemoteError:
            _logger.exception("Could not remove %s after the clone failed", target_dir)
    raise clone_error or copy_error


def taken(pg_params, ssh_settings, target, target_dir):
    """What of ``target`` (database) and ``target_dir`` (filestore) exists already.

    Reads only. A provision refuses a target that exists: what is there is not its
    own, and a provision removes only what it made.

    :returns: the list of the existing ones, as text for a message (empty: both free).
    """
    found, session = check_free(pg_params, ssh_settings, target, target_dir)
    session.close()
    return found


def check_free(pg_params, ssh_settings, target, target_dir):
    """:func:`taken`, with the SSH session it used left open for :func:`provision`.

    The database is looked up while the SSH session connects.

    :returns: ``(found, session)``: ``found`` as :func:`taken` returns it, and an open
        :class:`ssh.SshSession` that the caller passes to :func:`provision`
        (``session=``, which closes it) or closes.
    """
    session = ssh.SshSession(ssh_settings)
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="saas-check") as pool:
            database = pool.submit(postgres.database_exists, pg_params, target)
            directory = filestore.exists(session.open(), target_dir)
            found = [f"database {target}"] if database.result() else []
        if directory:
            found.append(f"directory {target_dir}")
    except BaseException:
        session.close()
        raise
    return found, session


def remove(pg_params, ssh_settings, databases=(), directories=()):
    """Drop ``databases`` and remove ``directories`` on one server; idempotent."""
    for name in databases:
        postgres.drop_database(pg_params, name)
    if directories:
        with ssh.SshSession(ssh_settings) as session:
            for path in directories:
                filestore.remove_tree(session, path)
