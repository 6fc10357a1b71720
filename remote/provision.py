"""Provision an instance: clone the template database and copy its filestore, at once.

The two halves touch different systems (the server's PostgreSQL, and its disk over
SSH), so they run side by side: the filestore copy, with its SSH connection, takes
about as long as the clone itself, and doing them one after the other would double
the time of a provision. Either half failing undoes the other, so a failed
provision leaves neither a database nor a filestore behind.

A caller that journals what it makes (``saas.instance``) first checks that the
database is free (:func:`remote.postgres.database_exists`, one query), journals the
database and the copy's hidden sibling, then calls :func:`provision` with
``publish=False``: the filestore is linked into that sibling, and the host checks,
in the copy's own program, that the target directory was free. The result's
``staged`` copy is renamed into place by :meth:`filestore.StagedCopy.publish` once
the caller has journalled the target directory. So a target that was someone
else's is never journalled (an undo never removes it), and neither the SSH
handshake nor a separate check command waits in front of the clone.
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
    # With publish=False: the filestore linked, waiting to be renamed into place
    # (a filestore.StagedCopy), or None when the template has no filestore.
    staged: filestore.StagedCopy | None = None


def _stage_filestore(ssh_settings, source_dir, target_dir, temp_dir):
    """Connect and link the template's filestore into ``temp_dir`` (the hidden
    sibling of ``target_dir``); the session closes with the staged copy."""
    # open() keeps nothing when it fails; from then on stage_copy closes the session
    # (its connection is kept for the next provision or termination on this server).
    return filestore.stage_copy(
        ssh.SshSession(ssh_settings, reuse=True).open(),
        source_dir,
        target_dir,
        temp_dir=temp_dir,
        close_session=True,
    )


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
    invitation=None,
    publish=True,
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
    :param invitation: the arguments of :func:`postgres.run_in_database` that issue
        the customer's invitation, run once the clone is made (while the copy goes
        on); what it returns, or the RemoteError it raised, is in the result: it
        never fails the provision.
    :param publish: False: the filestore is left staged (linked into ``temp_dir``),
        in the result's ``staged``, for the caller to publish (or discard) once it
        has journalled ``target_dir``.
    :returns: a :class:`ProvisionResult`.
    :raises RemoteError: the first failure (the clone's if both failed), once what
        the other half made is removed. Nothing that existed before is touched: a
        filestore that was already there is refused (:class:`RemotePathExists`),
        not removed.
    """
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="saas-filestore") as pool:
        copy = pool.submit(_stage_filestore, ssh_settings, source_dir, target_dir, temp_dir)
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
        staged = copy_error = None
        try:
            staged = copy.result()
        except RemoteError as exc:
            copy_error = exc
    copied = staged is not None  # None: the template has no filestore
    if clone_error is None and copy_error is None and publish and copied:
        try:
            staged.publish()
        except RemoteError as exc:
            copy_error = exc
        finally:
            staged.discard()  # nothing once published
        staged = None
    if clone_error is None and copy_error is None:
        duration = time.monotonic() - started
        _logger.info(
            "Provisioned %s from %s in %.3f s (filestore %s)",
            target,
            template,
            duration,
            ("copied" if publish else "staged") if copied else "none",
        )
        return ProvisionResult(clone_result, copied, duration, token, invitation_error, staged)
    # Undo the half that worked; report the failure that stopped the provision.
    if staged is not None:
        staged.discard()
    if clone_error is None:
        try:
            postgres.drop_database(pg_params, target)
        except RemoteError:
            _logger.exception("Could not drop %s after its filestore copy failed", target)
    raise clone_error or copy_error


def taken(pg_params, ssh_settings, target, target_dir):
    """What of ``target`` (database) and ``target_dir`` (filestore) exists already.

    Reads only; the database is looked up while the SSH session connects. A copy
    refuses a target that exists: what is there is not its own, and a copy removes
    only what it made.

    :returns: the list of the existing ones, as text for a message (empty: both free).
    """
    with (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="saas-check") as pool,
        ssh.SshSession(ssh_settings) as session,
    ):
        database = pool.submit(postgres.database_exists, pg_params, target)
        directory = filestore.exists(session, target_dir)
        found = [f"database {target}"] if database.result() else []
    if directory:
        found.append(f"directory {target_dir}")
    return found


def remove(pg_params, ssh_settings, databases=(), directories=()):
    """Drop ``databases`` and remove ``directories`` on one server; idempotent."""
    for name in databases:
        postgres.drop_database(pg_params, name)
    if directories:
        with ssh.SshSession(ssh_settings, reuse=True) as session:
            for path in directories:
                filestore.remove_tree(session, path)
