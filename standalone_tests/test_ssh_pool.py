"""remote.ssh_pool: SSH connections kept for reuse, against the real sshd on loopback.

A command prints the client port of its connection (``$SSH_CLIENT``, set by sshd),
so two sessions on one connection print the same port, and a new connection prints
another one. Faults are real: the sshd process serving a kept connection is
stopped (SIGSTOP) or killed (SIGKILL).
"""

import os
import signal
import time

import pytest

from remote import ssh, ssh_pool
from remote.exceptions import SshError

WAIT_SECONDS = 10.0


def connection_of(session):
    """(client port, pid of the sshd process serving the connection) of a session."""
    # The wrapper's parent is the sshd process of this connection (the post-auth child).
    result = session.run(
        ["sh", "-c", 'echo "${SSH_CLIENT:-}"; cut -d" " -f4 "/proc/$PPID/stat"'], timeout=30
    )
    assert result.exit_status == 0, result.stderr
    client, parent = result.stdout.splitlines()
    return int(client.split()[1]), int(parent)


def wait_for(condition, seconds=WAIT_SECONDS):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.fixture
def pool():
    kept = ssh_pool.ConnectionPool(max_idle_s=30.0)
    yield kept
    kept.clear()


def test_sessions_in_turn_share_one_connection(make_settings, pool):
    settings = make_settings()
    with ssh.SshSession(settings, reuse=True, pool=pool) as first:
        port, _pid = connection_of(first)
    assert len(pool) == 1
    for _turn in range(3):
        with ssh.SshSession(settings, reuse=True, pool=pool) as again:
            assert connection_of(again)[0] == port
            assert len(pool) == 0  # taken, not shared with another session meanwhile
    # Without reuse, a session has a connection of its own, and closes it.
    with ssh.SshSession(settings) as alone:
        assert connection_of(alone)[0] != port
    assert len(pool) == 1


def test_sessions_at_once_have_a_connection_each(make_settings, pool):
    settings = make_settings()
    with (
        ssh.SshSession(settings, reuse=True, pool=pool) as one,
        ssh.SshSession(settings, reuse=True, pool=pool) as two,
    ):
        assert connection_of(one)[0] != connection_of(two)[0]
    assert len(pool) == 2


def test_other_credentials_or_pin_never_get_the_connection(make_settings, client_keys, sshd, pool):
    settings = make_settings()
    with ssh.SshSession(settings, reuse=True, pool=pool) as first:
        port, _pid = connection_of(first)
    other_key = make_settings(private_key=client_keys[0]["ecdsa"][0])
    other_pin = make_settings(host_key=sshd.host_key("ed25519") + " renamed-comment")
    for settings_now in (other_key, other_pin):
        assert ssh_pool.pool_key(settings_now) != ssh_pool.pool_key(settings)
        with ssh.SshSession(settings_now, reuse=True, pool=pool) as session:
            assert connection_of(session)[0] != port
    # No secret is a key of the table: only digests.
    assert all(len(key) == 64 for key in pool._idle)
    assert not any(client_keys[0]["ed25519"][0][:40] in key for key in pool._idle)


def test_an_idle_connection_is_closed_after_max_idle(make_settings):
    pool = ssh_pool.ConnectionPool(max_idle_s=0.5)
    try:
        settings = make_settings()
        with ssh.SshSession(settings, reuse=True, pool=pool) as first:
            port, sshd_pid = connection_of(first)
        assert len(pool) == 1
        # The timer closes it: the sshd process of that connection ends.
        assert wait_for(lambda: len(pool) == 0)
        assert wait_for(lambda: not os.path.exists(f"/proc/{sshd_pid}"))
        with ssh.SshSession(settings, reuse=True, pool=pool) as second:
            assert connection_of(second)[0] != port
    finally:
        pool.clear()


def test_the_pool_keeps_no_more_than_its_caps(make_settings):
    pool = ssh_pool.ConnectionPool(per_host=1, total=1)
    try:
        settings = make_settings()
        first = ssh.SshSession(settings, reuse=True, pool=pool).open()
        second = ssh.SshSession(settings, reuse=True, pool=pool).open()
        _port, second_pid = connection_of(second)
        first.close()
        second.close()  # over the cap: really closed
        assert len(pool) == 1
        assert wait_for(lambda: not os.path.exists(f"/proc/{second_pid}"))
    finally:
        pool.clear()


def test_a_kept_connection_whose_server_died_is_not_handed_out(make_settings, pool):
    settings = make_settings()
    with ssh.SshSession(settings, reuse=True, pool=pool) as first:
        port, sshd_pid = connection_of(first)
    os.kill(sshd_pid, signal.SIGKILL)
    # The client sees the connection end; the pool drops it instead of handing it out.
    with ssh.SshSession(settings, reuse=True, pool=pool) as second:
        assert connection_of(second)[0] != port


def test_a_kept_connection_that_stopped_answering_is_replaced_once(make_settings, pool):
    settings = make_settings(connect_timeout=1.0, command_timeout=30.0)
    with ssh.SshSession(settings, reuse=True, pool=pool) as first:
        port, sshd_pid = connection_of(first)
    # Its server stops answering but the TCP connection stays up: the transport
    # looks alive, and the channel it is asked for never comes.
    os.kill(sshd_pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with ssh.SshSession(settings, reuse=True, pool=pool) as second:
            assert second._reused
            new_port, _pid = connection_of(second)
        waited = time.monotonic() - started
    finally:
        os.kill(sshd_pid, signal.SIGKILL)
        os.kill(sshd_pid, signal.SIGCONT)
    assert new_port != port
    # One connect timeout lost on the dead one, not the command's 30 s.
    assert waited < 20.0


def test_a_new_session_that_cannot_open_a_channel_fails_with_ssh_error(make_settings, pool):
    settings = make_settings(connect_timeout=1.0, command_timeout=2.0)
    session = ssh.SshSession(settings, reuse=True, pool=pool).open()
    assert not session._reused  # a fresh connection is never replaced
    _port, sshd_pid = connection_of(session)
    os.kill(sshd_pid, signal.SIGSTOP)
    try:
        with pytest.raises(SshError):
            session.run(["true"])
    finally:
        os.kill(sshd_pid, signal.SIGKILL)
        os.kill(sshd_pid, signal.SIGCONT)
        session.close()
    assert wait_for(lambda: len(pool) == 0)


def test_a_forked_child_starts_with_an_empty_pool(make_settings):
    settings = make_settings()
    with ssh.SshSession(settings, reuse=True) as first:
        port, _pid = connection_of(first)
    assert len(ssh_pool.POOL) >= 1
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports by its exit status
        os._exit(0 if len(ssh_pool.POOL) == 0 else 1)
    _pid, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # The parent's kept connection is untouched by the child.
    with ssh.SshSession(settings, reuse=True) as again:
        assert connection_of(again)[0] == port
    ssh_pool.POOL.clear()
