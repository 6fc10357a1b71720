"""remote.ssh and remote.filestore against a real OpenSSH server on loopback (see sandbox/sshd.py).

The "remote" host is this machine, so the tests prepare and inspect remote paths
with plain Python file operations.
"""

import json
import logging
import os
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import CURRENT_USER, IS_ROOT, authorized_sshd, settings_for

from remote import filestore, ssh
from remote.exceptions import (
    InvalidInput,
    RemotePathExists,
    SshAuthError,
    SshCommandError,
    SshError,
    SshHostKeyError,
    SshTimeout,
)
from sandbox import sshd as _sshd  # the sshd helpers: generate_key, fingerprint, LOOPBACK...

NASTY_NAMES = [
    "a b;$(touch pwned)'\"",
    "x`touch pwned2`&|<>*?~!#{}[]\\",
    "-rf --leading-dash",
    "new\nline",
]
PROCESS_GONE_WAIT_SECONDS = 20.0


def wait_until_gone(pattern):
    """True once no process matches ``pattern`` (pgrep -f), within a bounded wait."""
    deadline = time.monotonic() + PROCESS_GONE_WAIT_SECONDS
    while time.monotonic() < deadline:
        found = subprocess.run(
            ["pgrep", "-f", pattern], capture_output=True, timeout=30, check=False
        )
        if found.returncode == 1:
            return True
        time.sleep(0.2)
    return False


def leftovers(parent):
    """Hidden partial-copy siblings left in ``parent``."""
    return sorted(p.name for p in Path(parent).iterdir() if ".saas-copy-" in p.name)


def snapshot(root):
    """{relative path: (mode, content or link target)} of a tree."""
    root = Path(root)
    result = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            value = "-> " + os.readlink(path)
        elif stat.S_ISDIR(info.st_mode):
            value = "dir"
        else:
            value = path.read_bytes()
        result[str(path.relative_to(root))] = (stat.S_IMODE(info.st_mode), value)
    return result


# --- fixtures ----------------------------------------------------------------


@pytest.fixture(scope="session")
def fake_cp(base_dir, client_keys):
    """A second sshd whose sessions find a scripted ``cp`` first on their PATH.

    The script runs the real cp, then fails ("fail") or hangs ("hang") as told by
    its mode file: a copy that breaks half-way, made real for a root login too.
    """
    bin_dir = base_dir / "fakebin"
    bin_dir.mkdir()
    (bin_dir / "mode").write_text("ok\n")
    script = bin_dir / "cp"
    script.write_text(
        "#!/bin/sh\n"
        f"touch {bin_dir}/used\n"
        '/bin/cp "$@" || exit $?\n'
        f"case $(cat {bin_dir}/mode) in\n"
        "  fail) echo 'cp: simulated: No space left on device' >&2; exit 1;;\n"
        "  hang) exec sleep 293.125;;\n"
        "esac\n"
    )
    script.chmod(0o755)
    server = authorized_sshd(
        base_dir / "sshd-fake-cp", client_keys, [f"SetEnv PATH={bin_dir}:/usr/bin:/bin"]
    )
    yield server, bin_dir
    server.stop()


@pytest.fixture(scope="session")
def test_user(base_dir):
    user = _sshd.TestUser(base_dir / "home")
    reason = user.create()
    yield user if reason is None else reason
    user.remove()


@pytest.fixture
def session(make_settings):
    with ssh.SshSession(make_settings()) as opened:
        yield opened


@pytest.fixture
def unprivileged(base_dir, sshd, client_keys, test_user):
    """(settings, make_dir) for a login as a user without root rights."""
    key_text = client_keys[0]["ed25519"][0]
    if not IS_ROOT:
        return settings_for(sshd, key_text), lambda name: Path(
            tempfile.mkdtemp(prefix=name, dir=base_dir)
        )
    if isinstance(test_user, str):
        pytest.skip(f"no unprivileged user to log in as: {test_user}")
    settings = settings_for(sshd, key_text, username=test_user.name)
    return settings, lambda name: test_user.make_dir(base_dir, name)


@pytest.fixture
def silent_listener():
    """A listening socket nobody answers on: counts connection attempts."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind((_sshd.LOOPBACK, 0))
        listener.listen(8)
        listener.setblocking(False)
        yield listener


def connection_attempted(listener):
    try:
        conn, _address = listener.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


# --- settings -------------------------------------------------------------------


def test_settings_repr_and_str_hide_secrets(client_keys):
    key_text = client_keys[0]["encrypted"][0]
    settings = ssh.SshSettings(
        host="h.example",
        username="odoo",
        password="pa55-word!",
        private_key=key_text,
        private_key_passphrase="s3cret",
        host_key="ssh-ed25519 AAAA",
    )
    for text in (repr(settings), str(settings), repr(ssh.SshSession(settings))):
        assert "pa55-word!" not in text
        assert "s3cret" not in text
        assert "PRIVATE KEY" not in text
        assert "h.example" in text


def test_ipv6_target_is_bracketed():
    assert ssh.SshSettings(host="::1", port=2222).target == "[::1]:2222"


# --- host key pinning ----------------------------------------------------------


@pytest.mark.parametrize("pin", ["", "   \n", "# 127.0.0.1:22 SSH-2.0-OpenSSH_9.2\n"])
def test_no_pinned_host_key_is_refused_before_connecting(make_settings, silent_listener, pin):
    port = silent_listener.getsockname()[1]
    settings = make_settings(port=port, host_key=pin)
    with pytest.raises(SshHostKeyError) as caught:
        ssh.SshSession(settings).open()
    message = str(caught.value)
    assert "no host key pinned" in message
    assert f"ssh-keyscan -p {port} 127.0.0.1" in message
    assert not connection_attempted(silent_listener)


@pytest.mark.parametrize(
    "pin",
    [
        "ssh-ed25519 not-base64!!",
        "ssh-dss AAAAB3NzaC1kc3MAAACBAP8=",
        "just some text",
    ],
)
def test_malformed_pin_is_refused_before_connecting(make_settings, silent_listener, pin):
    settings = make_settings(port=silent_listener.getsockname()[1], host_key=pin)
    with pytest.raises(SshHostKeyError):
        ssh.SshSession(settings).open()
    assert not connection_attempted(silent_listener)


def test_pin_whose_type_contradicts_its_data_is_refused(make_settings, sshd):
    _type, data = sshd.host_key("ecdsa").split()[:2]
    with pytest.raises(SshHostKeyError, match="data is"):
        ssh.SshSession(make_settings(host_key=f"ssh-ed25519 {data}")).open()


def test_wrong_host_key_is_refused_with_both_fingerprints(make_settings, sshd, base_dir):
    _private, other_public = _sshd.generate_key(base_dir / "other-host-key", "ed25519")
    settings = make_settings(host_key=other_public)
    with pytest.raises(SshHostKeyError) as caught:
        ssh.SshSession(settings).open()
    message = str(caught.value)
    assert f"127.0.0.1:{sshd.port}" in message
    served = _sshd.fingerprint(str(sshd.host_key_path("ed25519")) + ".pub")
    pinned = _sshd.fingerprint(base_dir / "other-host-key.pub")
    assert served in message
    assert pinned in message
    assert served != pinned


@pytest.mark.parametrize("key_type", _sshd.HOST_KEY_TYPES)
def test_each_pinned_type_is_negotiated(make_settings, sshd, key_type):
    # The server has ed25519, ECDSA and RSA host keys; paramiko prefers ed25519 unless
    # told otherwise, so succeeding with an ECDSA or RSA pin shows the restriction works.
    with ssh.SshSession(make_settings(host_key=sshd.host_key(key_type))) as opened:
        assert opened.run(["echo", "ok"]) == (0, "ok\n", "")


def test_pinned_type_the_server_lacks_is_refused(make_settings, base_dir):
    _private, public = _sshd.generate_key(base_dir / "p384", "ecdsa", bits=384)
    with pytest.raises(SshHostKeyError, match="offers no host key of the pinned type"):
        ssh.SshSession(make_settings(host_key=public)).open()


@pytest.mark.parametrize("only_type", [None, "ecdsa"])
def test_ssh_keyscan_output_can_be_pasted(make_settings, sshd, only_type):
    argv = ["ssh-keyscan", "-p", str(sshd.port)]
    if only_type:
        argv += ["-t", only_type]
    scanned = subprocess.run(
        [*argv, _sshd.LOOPBACK], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert scanned.startswith(f"[127.0.0.1]:{sshd.port} ")
    with ssh.SshSession(make_settings(host_key=scanned)) as opened:
        assert opened.run(["true"]).exit_status == 0


def test_pin_with_comment_and_crlf_is_accepted(make_settings, sshd):
    pin = sshd.host_key("ed25519") + " root@eu1 extra words\r\n"
    with ssh.SshSession(make_settings(host_key=pin)) as opened:
        assert opened.run(["true"]).exit_status == 0


# --- authentication ---------------------------------------------------------------


@pytest.mark.parametrize("key_name", ["ed25519", "ecdsa", "rsa", "rsa-pem"])
def test_private_key_types_log_in(make_settings, client_keys, key_name):
    key_text = client_keys[0][key_name][0]
    with ssh.SshSession(make_settings(private_key=key_text)) as opened:
        assert opened.run(["id", "-un"]).stdout == CURRENT_USER + "\n"


def test_encrypted_key_with_passphrase_logs_in(make_settings, client_keys):
    settings = make_settings(
        private_key=client_keys[0]["encrypted"][0], private_key_passphrase="s3cret"
    )
    with ssh.SshSession(settings) as opened:
        assert opened.run(["true"]).exit_status == 0


def test_key_pasted_with_crlf_logs_in(make_settings, client_keys):
    key_text = client_keys[0]["ecdsa"][0].replace("\n", "\r\n")
    with ssh.SshSession(make_settings(private_key=key_text)) as opened:
        assert opened.run(["true"]).exit_status == 0


@pytest.mark.parametrize(
    ("key_name", "passphrase", "match"),
    [("encrypted", None, "encrypted"), ("encrypted", "wrong", "cannot be read")],
)
def test_unusable_key_is_refused_before_connecting(
    make_settings, client_keys, silent_listener, key_name, passphrase, match
):
    settings = make_settings(
        port=silent_listener.getsockname()[1],
        private_key=client_keys[0][key_name][0],
        private_key_passphrase=passphrase,
    )
    with pytest.raises(SshAuthError, match=match):
        ssh.SshSession(settings).open()
    assert not connection_attempted(silent_listener)


def test_garbage_key_is_refused(make_settings):
    with pytest.raises(SshAuthError, match="cannot be read"):
        ssh.SshSession(make_settings(private_key="not a key")).open()


def test_unknown_key_gets_auth_error(make_settings, client_keys):
    with pytest.raises(SshAuthError) as caught:
        ssh.SshSession(make_settings(private_key=client_keys[1][0])).open()
    assert f"{CURRENT_USER}@127.0.0.1:" in str(caught.value)


def test_no_credentials_is_refused(make_settings):
    with pytest.raises(InvalidInput):
        ssh.SshSession(make_settings(private_key=None)).open()


def test_password_login_and_wrong_password(sshd, test_user, client_keys):
    if isinstance(test_user, str):
        pytest.skip(f"password login needs a dedicated system user: {test_user}")
    good = settings_for(sshd, None, username=test_user.name, password=test_user.password)
    with ssh.SshSession(good) as opened:
        assert opened.run(["id", "-un"]).stdout == test_user.name + "\n"
    bad = settings_for(sshd, None, username=test_user.name, password=test_user.password + "x")
    with pytest.raises(SshAuthError, match="password refused"):
        ssh.SshSession(bad).open()
    # A refused key falls back to the password when both are set.
    both = settings_for(
        sshd, client_keys[1][0], username=test_user.name, password=test_user.password
    )
    with ssh.SshSession(both) as opened:
        assert opened.run(["true"]).exit_status == 0


def test_logs_name_the_target_but_never_secrets(sshd, test_user, make_settings, caplog):
    caplog.set_level(logging.DEBUG)
    key_settings = make_settings()
    with ssh.SshSession(key_settings) as opened:
        opened.run(["true"])
    secrets = [key_settings.private_key.strip().splitlines()[1]]
    if not isinstance(test_user, str):
        secrets.append(test_user.password)
        pw_settings = settings_for(sshd, None, username=test_user.name, password=test_user.password)
        with ssh.SshSession(pw_settings) as opened:
            opened.run(["true"])
        with pytest.raises(SshAuthError) as caught:
            ssh.SshSession(
                settings_for(sshd, None, username=test_user.name, password="Wr0ng-pa55")
            ).open()
        secrets.append("Wr0ng-pa55")
        assert "Wr0ng-pa55" not in str(caught.value)
    assert f"ssh connect {CURRENT_USER}@127.0.0.1:{sshd.port}: ok" in caplog.text
    for secret in secrets:
        assert secret not in caplog.text


# --- network ---------------------------------------------------------------------------


def test_closed_port_gives_ssh_error_with_target(make_settings):
    port = _sshd.free_port()
    with pytest.raises(SshError) as caught:
        ssh.SshSession(make_settings(port=port)).open()
    assert type(caught.value) is SshError
    assert f"127.0.0.1:{port}" in str(caught.value)


def test_silent_server_times_out(make_settings, silent_listener):
    port = silent_listener.getsockname()[1]
    with pytest.raises(SshError) as caught:
        ssh.SshSession(make_settings(port=port, connect_timeout=1.0)).open()
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert not isinstance(caught.value, SshHostKeyError | SshAuthError)


def test_closed_session_refuses_commands(make_settings):
    opened = ssh.SshSession(make_settings())
    with opened:
        assert opened.run(["test", "-d", "/tmp"]).exit_status == 0
    with pytest.raises(SshError, match="not open"):
        opened.run(["true"])


# --- run -------------------------------------------------------------------------------


def test_run_quotes_every_argument(session, tmp_path):
    args = [*NASTY_NAMES, "", "$HOME", "~", "%s"]
    result = session.run(["printf", "[%s]", *args], timeout=30)
    assert result == (0, "".join(f"[{arg}]" for arg in args), "")
    assert not list(Path.home().glob("pwned*"))


def test_run_returns_exit_status_and_both_streams(session):
    result = session.run(["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert (result.exit_status, result.stdout, result.stderr) == (7, "out\n", "err\n")
    assert result.truncated is False


def test_run_closes_stdin(session):
    assert session.run(["cat"], timeout=30) == (0, "", "")


def test_large_output_on_both_streams_is_read_fully(session):
    # 5 MB to stderr first: reading only stdout would stall once the window fills.
    script = "head -c 5000000 /dev/zero >&2; head -c 5000000 /dev/zero | tr '\\0' o"
    result = session.run(["sh", "-c", script], max_output=6_000_000)
    assert result.exit_status == 0
    assert result.stdout == "o" * 5_000_000
    assert len(result.stderr) == 5_000_000
    assert result.truncated is False


def test_large_output_is_capped(session):
    script = "head -c 5000000 /dev/zero | tr '\\0' e >&2; head -c 5000000 /dev/zero | tr '\\0' o"
    result = session.run(["sh", "-c", script], max_output=100_000)
    assert result.exit_status == 0
    assert result.stdout == "o" * 100_000
    assert result.stderr == "e" * 100_000
    assert result.truncated is True


def test_command_past_its_deadline_is_stopped_and_killed(session):
    with pytest.raises(SshTimeout, match="deadline"):
        session.run(["sh", "-c", "sleep 297.25; echo done"], timeout=1)
    assert wait_until_gone("sleep 297.25"), "the remote command survived its deadline"
    assert session.run(["echo", "still usable"]).stdout == "still usable\n"


def test_endless_output_still_meets_the_deadline(session):
    with pytest.raises(SshTimeout):
        session.run(["sh", "-c", "exec yes saas-endless-output"], timeout=1, max_output=1000)
    assert wait_until_gone("yes saas-endless-output")


def test_unprivileged_command_past_its_deadline_is_killed(unprivileged):
    settings, _make_dir = unprivileged
    with ssh.SshSession(settings) as opened, pytest.raises(SshTimeout):
        opened.run(["sh", "-c", "sleep 296.5"], timeout=1)
    assert wait_until_gone("sleep 296.5")


def test_run_refuses_bad_argv(session):
    for argv in ([], "ls -l", ["ls", None], ["a\0b"]):
        with pytest.raises(InvalidInput):
            session.run(argv)


# --- filestore.copy_tree -------------------------------------------------------------------


def make_tree(root):
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "top.txt").write_text("top\n")
    (root / "sub" / "secret.bin").write_bytes(bytes(range(256)) * 40)
    (root / "sub" / "secret.bin").chmod(0o640)
    (root / "sub" / "deeper" / "run.sh").write_text("#!/bin/sh\n")
    (root / "sub" / "deeper" / "run.sh").chmod(0o750)
    (root / "sub" / "link").symlink_to("secret.bin")
    (root / "sub").chmod(0o710)
    os.utime(root / "top.txt", (1_000_000_000, 1_000_000_000))
    return snapshot(root)


def test_copy_tree_copies_content_modes_and_links(session, tmp_path):
    src = tmp_path / "filestore" / "template"
    src.mkdir(parents=True)
    src.chmod(0o750)
    expected = make_tree(src)
    dst = tmp_path / "filestore" / "client1"
    assert filestore.copy_tree(session, str(src), str(dst)) is True
    assert snapshot(dst) == expected
    assert stat.S_IMODE(dst.stat().st_mode) == 0o750
    assert (dst / "top.txt").stat().st_mtime == 1_000_000_000
    assert snapshot(src) == expected
    assert leftovers(dst.parent) == []


@pytest.mark.parametrize("name", NASTY_NAMES)
def test_copy_tree_with_shell_metacharacters(session, tmp_path, name):
    home_before = sorted(p.name for p in Path.home().iterdir())
    src = tmp_path / f"src {name}"
    src.mkdir()
    (src / name).write_text("payload")
    dst = tmp_path / f"dst {name}"
    assert filestore.copy_tree(session, str(src), str(dst)) is True
    assert (dst / name).read_text() == "payload"
    assert session.run(["test", "-e", str(dst / name)]).exit_status == 0
    assert not list(tmp_path.rglob("pwned*"))
    assert sorted(p.name for p in Path.home().iterdir()) == home_before
    assert filestore.remove_tree(session, str(dst)) is True
    assert not dst.exists()


@pytest.mark.parametrize("kind", ["dir", "file", "dangling-link"])
def test_copy_tree_refuses_an_existing_target(session, tmp_path, kind):
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    dst = tmp_path / "dst"
    if kind == "dir":
        dst.mkdir()
        (dst / "keep.txt").write_text("precious")
    elif kind == "file":
        dst.write_text("precious")
    else:
        dst.symlink_to(tmp_path / "nowhere")
    before = snapshot(tmp_path)
    with pytest.raises(RemotePathExists, match="already exists"):
        filestore.copy_tree(session, str(src), str(dst))
    assert snapshot(tmp_path) == before


def test_copy_tree_missing_source_returns_false_and_creates_nothing(session, tmp_path):
    (tmp_path / "filestore").mkdir()
    assert (
        filestore.copy_tree(
            session, str(tmp_path / "filestore/tpl"), str(tmp_path / "filestore/c1")
        )
        is False
    )
    assert list((tmp_path / "filestore").iterdir()) == []


def test_copy_tree_source_not_a_directory(session, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SshCommandError, match="not a directory"):
        filestore.copy_tree(session, str(tmp_path / "file"), str(tmp_path / "dst"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_copy_tree_missing_target_parent_fails_cleanly(session, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with pytest.raises(SshCommandError, match="failed"):
        filestore.copy_tree(session, str(src), str(tmp_path / "no" / "such" / "dst"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


@pytest.mark.parametrize(
    ("src", "dst"),
    [("/srv/a", "/srv/a"), ("/srv/a", "/srv/a/b"), ("/srv/a/b", "/srv/a"), ("srv/a", "/srv/b")],
)
def test_copy_tree_refuses_overlapping_or_relative_paths(session, src, dst):
    with pytest.raises(InvalidInput):
        filestore.copy_tree(session, src, dst)


def test_failed_copy_leaves_no_target(unprivileged):
    """A real cp failure: a file the login user cannot read."""
    settings, make_dir = unprivileged
    work = make_dir("unreadable-")
    src = work / "src"
    src.mkdir()
    make_tree(src)
    locked = src / "sub" / "locked.txt"
    locked.write_text("not for you")
    if IS_ROOT:
        os.chown(src, os.stat(work).st_uid, -1)
        for path in src.rglob("*"):
            if path != locked:
                os.chown(path, os.stat(work).st_uid, -1, follow_symlinks=False)
        locked.chmod(0o600)  # still root's: unreadable for the test user
    else:
        locked.chmod(0)
    dst = work / "dst"
    with (
        ssh.SshSession(settings) as opened,
        pytest.raises(SshCommandError, match="Permission denied"),
    ):
        filestore.copy_tree(opened, str(src), str(dst))
    assert not dst.exists()
    assert leftovers(work) == []
    assert locked.exists()


@pytest.fixture
def fake_cp_session(fake_cp, client_keys):
    server, bin_dir = fake_cp
    (bin_dir / "used").unlink(missing_ok=True)
    settings = settings_for(server, client_keys[0]["ed25519"][0])
    with ssh.SshSession(settings) as opened:
        yield opened, bin_dir
    (bin_dir / "mode").write_text("ok\n")


def test_copy_failing_after_writing_leaves_no_target(fake_cp_session, tmp_path):
    opened, bin_dir = fake_cp_session
    (bin_dir / "mode").write_text("fail\n")
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    dst = tmp_path / "dst"
    with pytest.raises(SshCommandError, match="No space left"):
        filestore.copy_tree(opened, str(src), str(dst))
    assert (bin_dir / "used").exists(), "the scripted cp was not the one run"
    assert not dst.exists()
    assert leftovers(tmp_path) == []


def test_copy_past_its_deadline_leaves_no_target(fake_cp, client_keys, tmp_path):
    server, bin_dir = fake_cp
    (bin_dir / "mode").write_text("hang\n")
    (bin_dir / "used").unlink(missing_ok=True)
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    dst = tmp_path / "dst"
    settings = settings_for(server, client_keys[0]["ed25519"][0], command_timeout=5.0)
    try:
        with ssh.SshSession(settings) as opened, pytest.raises(SshTimeout):
            filestore.copy_tree(opened, str(src), str(dst))
    finally:
        (bin_dir / "mode").write_text("ok\n")
    assert (bin_dir / "used").exists(), "the scripted cp was not the one run"
    assert wait_until_gone("sleep 293.125")
    assert not dst.exists()
    assert leftovers(tmp_path) == []


# --- remove_tree -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["", "/", "//", "relative/dir", "./x", "/var/lib/../../etc", "/var/lib/./odoo", "/var", "a\0b"],
)
def test_remove_tree_refuses_dangerous_paths(session, path):
    with pytest.raises(InvalidInput):
        filestore.remove_tree(session, path)


def test_remove_tree_removes_and_reports_missing(session, tmp_path):
    target = tmp_path / "filestore" / "client 1;x"
    target.mkdir(parents=True)
    make_tree(target)
    (target / "sub" / "ro").mkdir()
    (target / "sub" / "ro").chmod(0o500)
    assert filestore.remove_tree(session, str(target) + "/") is True
    assert not target.exists()
    assert (tmp_path / "filestore").is_dir()
    assert filestore.remove_tree(session, str(target)) is False


def test_remove_tree_removes_a_symlink_not_its_target(session, tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "keep").write_text("keep")
    link = tmp_path / "link"
    link.symlink_to(real)
    assert filestore.remove_tree(session, str(link)) is True
    assert not link.is_symlink()
    assert (real / "keep").read_text() == "keep"


# --- partial copies: named before they exist, gone with their channel -------------------


def test_partial_copy_names_are_recognised():
    tmp = filestore.partial_copy_path("/var/lib/odoo/filestore/client1", "0123456789abcdef")
    assert tmp == "/var/lib/odoo/filestore/.client1.saas-copy-0123456789abcdef"
    assert filestore.is_partial_copy(tmp, "/var/lib/odoo/filestore/client1/")
    fresh = filestore.partial_copy_path("/var/lib/odoo/filestore/client1")
    assert fresh != tmp
    assert filestore.is_partial_copy(fresh, "/var/lib/odoo/filestore/client1")
    for other in (
        "/var/lib/odoo/filestore/client1",
        "/var/lib/odoo/filestore/.client2.saas-copy-0123456789abcdef",
        "/var/lib/odoo/.client1.saas-copy-0123456789abcdef",
        tmp + "0",
        "relative",
    ):
        assert not filestore.is_partial_copy(other, "/var/lib/odoo/filestore/client1")
    with pytest.raises(InvalidInput):
        filestore.partial_copy_path("/var/lib/odoo/filestore/client1", "$(reboot)")


def test_copy_tree_uses_the_temp_dir_it_is_given(session, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    expected = make_tree(src)
    dst = tmp_path / "dst"
    tmp = filestore.partial_copy_path(str(dst))
    with pytest.raises(InvalidInput, match="partial copy name"):
        filestore.copy_tree(session, str(src), str(dst), temp_dir=str(tmp_path / "elsewhere"))
    Path(tmp).mkdir()  # a leftover of an earlier attempt under that name: not merged into
    with pytest.raises(RemotePathExists, match="saas-copy-"):
        filestore.copy_tree(session, str(src), str(dst), temp_dir=tmp)
    assert not dst.exists()
    assert filestore.remove_tree(session, tmp) is True
    assert filestore.remove_tree(session, tmp) is False
    assert filestore.copy_tree(session, str(src), str(dst), temp_dir=tmp) is True
    assert snapshot(dst) == expected
    assert leftovers(tmp_path) == []


# The child process opens its own session and runs one operation; the test kills it
# with SIGKILL, as a crash of the manager would: no cleanup code of ours runs then.
_CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from remote import filestore, ssh
args = json.loads(sys.argv[2])
with ssh.SshSession(ssh.SshSettings(**args["settings"])) as session:
    print("connected", flush=True)
    if args["argv"]:
        session.run(args["argv"])
    elif args.get("stage"):
        staged = filestore.stage_copy(session, args["src"], args["dst"], temp_dir=args["tmp"])
        print("staged", flush=True)
        time.sleep(300)  # until the test kills this process
    else:
        filestore.copy_tree(session, args["src"], args["dst"], temp_dir=args["tmp"])
    print("finished", flush=True)
"""


def start_child(settings, **operation):
    fields = ("host", "port", "username", "private_key", "host_key", "connect_timeout")
    payload = {
        "settings": {name: getattr(settings, name) for name in fields},
        "argv": operation.pop("argv", None),
        **operation,
    }
    root = str(Path(__file__).resolve().parent.parent)
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, root, json.dumps(payload)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline() == "connected\n"
    return child


def count_entries(path):
    return sum(len(dirs) + len(files) for _root, dirs, files in os.walk(path))


def test_command_dies_with_a_killed_client(make_settings):
    child = start_child(make_settings(), argv=["sh", "-c", "sleep 291.75"])
    try:
        deadline = time.monotonic() + 20
        while not subprocess.run(
            ["pgrep", "-f", "sleep 291.75"], capture_output=True, check=False
        ).stdout:
            assert time.monotonic() < deadline, "the remote command never started"
            time.sleep(0.05)
    finally:
        child.kill()
        child.wait(30)
    assert wait_until_gone("sleep 291.75"), "the remote command outlived its client"


def test_copy_dies_with_a_killed_client_and_leaves_a_known_partial_copy(make_settings, tmp_path):
    src = tmp_path / "filestore" / "tpl"
    data = os.urandom(16384)
    for number in range(300):
        folder = src / f"{number:03x}"
        folder.mkdir(parents=True)
        for name in range(50):
            (folder / str(name)).write_bytes(data)
    total = count_entries(src)
    dst = tmp_path / "filestore" / "client1"
    tmp = filestore.partial_copy_path(str(dst))  # journaled by a real caller, before the copy
    token = tmp.rsplit("-", 1)[1]
    child = start_child(make_settings(), src=str(src), dst=str(dst), tmp=tmp)
    try:
        deadline = time.monotonic() + 30
        while count_entries(tmp) < 200:
            assert child.poll() is None, "the copy ended before it could be interrupted"
            assert time.monotonic() < deadline, "the copy never started"
            time.sleep(0.01)
    finally:
        child.kill()  # SIGKILL mid-copy
        child.wait(30)
    # Nothing of that copy runs any more on the host: cp and its wrapper are gone...
    assert wait_until_gone(token), "the remote cp outlived the process that started it"
    # ... so the partial copy stops growing and is never renamed into place.
    copied = count_entries(tmp)
    time.sleep(1.0)
    assert count_entries(tmp) == copied
    assert 0 < copied < total
    assert not dst.exists()
    assert leftovers(dst.parent) == [Path(tmp).name]
    # The caller, who knew the name, removes it.
    with ssh.SshSession(make_settings()) as session:
        assert filestore.remove_tree(session, tmp) is True
    assert leftovers(dst.parent) == []


def test_staged_copy_of_a_killed_client_is_removed_by_the_host(make_settings, tmp_path):
    """Killed between staging and publishing (the caller's journal commit): the
    program on the host sees its input end, removes the sibling, never renames it."""
    src = tmp_path / "filestore" / "tpl"
    make_tree(src)
    dst = tmp_path / "filestore" / "client1"
    tmp = filestore.partial_copy_path(str(dst))
    token = tmp.rsplit("-", 1)[1]
    child = start_child(make_settings(), src=str(src), dst=str(dst), tmp=tmp, stage=True)
    try:
        assert child.stdout.readline() == "staged\n"
        assert snapshot(tmp) == snapshot(src), "the staged sibling holds the whole tree"
        assert not dst.exists()
    finally:
        child.kill()
        child.wait(30)
    assert wait_until_gone(token), "the staged program outlived the process that started it"
    assert not dst.exists()
    assert leftovers(dst.parent) == []


def test_staged_copy_dropped_without_an_end_is_removed_by_the_host(make_settings, tmp_path):
    """A staged copy its caller lost (the operation's generator gone): once nothing
    refers to it, its channel closes and the host removes the sibling."""
    src = tmp_path / "filestore" / "tpl"
    make_tree(src)
    dst = tmp_path / "filestore" / "client1"
    session = ssh.SshSession(make_settings()).open()
    try:
        staged = filestore.stage_copy(session, str(src), str(dst))
        assert leftovers(dst.parent) == [Path(staged.tmp).name]
        del staged
        deadline = time.monotonic() + 20
        while leftovers(dst.parent):
            assert time.monotonic() < deadline, "the sibling outlived its dropped copy"
            time.sleep(0.1)
        assert not dst.exists()
    finally:
        session.close()
