"""remote.provision against a real PostgreSQL cluster and a real sshd on loopback."""

import logging

import pytest
from conftest import config, make_template, unique

from remote.exceptions import DatabaseExists, RemotePathExists, SshHostKeyError
from remote.provision import provision, remove, taken


@pytest.fixture
def filestores(tmp_path):
    """A template filestore with a file in it, and where the instance's goes."""
    root = tmp_path / "filestore"
    (root / "tpl" / "ab").mkdir(parents=True)
    (root / "tpl" / "ab" / "abcdef").write_bytes(b"attachment")
    root.chmod(0o755)
    return root


def run(params, settings, template, target, root, **kwargs):
    return provision(
        params,
        settings,
        template,
        target,
        source_dir=str(root / "tpl"),
        target_dir=str(root / target),
        base_url="https://client.example.com",
        **kwargs,
    )


def ssh_connections(caplog):
    return [r for r in caplog.records if r.getMessage().startswith("ssh connect ")]


def test_clone_and_filestore(pg, params, make_settings, filestores):
    template = make_template(pg)
    target = unique("inst")
    result = run(params, make_settings(), template, target, filestores)
    assert result.filestore_copied
    assert target in pg.databases()
    assert config(pg, target)["web.base.url"] == "https://client.example.com"
    assert (filestores / target / "ab" / "abcdef").read_bytes() == b"attachment"


def test_copy_failure_drops_the_clone(pg, params, make_settings, filestores):
    template = make_template(pg)
    target = unique("inst")
    (filestores / target).mkdir()
    (filestores / target / "theirs").write_text("kept")
    with pytest.raises(RemotePathExists):
        run(params, make_settings(), template, target, filestores)
    assert target not in pg.databases()
    assert (filestores / target / "theirs").read_text() == "kept"


def test_clone_failure_removes_the_copy(pg, params, make_settings, filestores):
    template = make_template(pg)
    existing = make_template(pg)  # the target name is taken by someone else's database
    with pytest.raises(DatabaseExists):
        run(params, make_settings(), template, existing, filestores)
    assert existing in pg.databases()
    assert not (filestores / existing).exists()


def test_ssh_refused_drops_the_clone(pg, params, make_settings, filestores):
    template = make_template(pg)
    target = unique("inst")
    stranger = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPr0Vq8bq8p0ZlU1l6d1iYv9Q0m9D3HkqJv1m1x2y3z4"
    with pytest.raises(SshHostKeyError):
        run(params, make_settings(host_key=stranger), template, target, filestores)
    assert target not in pg.databases()
    assert not (filestores / target).exists()


def test_provisions_in_turn_reuse_one_ssh_connection(pg, params, make_settings, filestores, caplog):
    """The connection of a provision's filestore copy is kept (remote.ssh_pool) for
    the next provision and the termination on the same server: one handshake."""
    caplog.set_level(logging.INFO, logger="remote.ssh")
    template = make_template(pg)
    targets = [unique("inst"), unique("inst")]
    for target in targets:
        assert run(params, make_settings(), template, target, filestores).filestore_copied
    remove(params, make_settings(), targets, [str(filestores / name) for name in targets])
    assert len(ssh_connections(caplog)) == 1
    assert not any(name in pg.databases() for name in targets)
    assert not any((filestores / name).exists() for name in targets)


def partial_copies(root, target):
    return sorted(path.name for path in root.iterdir() if path.name.startswith(f".{target}."))


def test_staged_provision_then_publish_on_one_connection(
    pg, params, make_settings, filestores, caplog
):
    """publish=False: the clone is made and the filestore linked into its hidden
    sibling on one SSH connection; the target appears only when published."""
    caplog.set_level(logging.INFO, logger="remote.ssh")
    template = make_template(pg)
    target = unique("inst")
    result = run(params, make_settings(), template, target, filestores, publish=False)
    staged = result.staged
    assert result.filestore_copied and staged is not None
    assert target in pg.databases()
    assert not (filestores / target).exists()
    (sibling,) = partial_copies(filestores, target)
    assert (filestores / sibling / "ab" / "abcdef").read_bytes() == b"attachment"
    assert staged.publish() is True
    assert (filestores / target / "ab" / "abcdef").read_bytes() == b"attachment"
    assert partial_copies(filestores, target) == []
    assert len(ssh_connections(caplog)) == 1
    assert "closed" in repr(staged.session)
    staged.discard()  # after publish: nothing
    assert (filestores / target / "ab" / "abcdef").exists()


def test_staged_copy_discarded_leaves_nothing(pg, params, make_settings, filestores):
    template = make_template(pg)
    target = unique("inst")
    result = run(params, make_settings(), template, target, filestores, publish=False)
    result.staged.discard()
    assert not (filestores / target).exists()
    assert partial_copies(filestores, target) == []
    assert "closed" in repr(result.staged.session)


def test_target_appearing_before_publish_is_refused_and_kept(pg, params, make_settings, filestores):
    template = make_template(pg)
    target = unique("inst")
    result = run(params, make_settings(), template, target, filestores, publish=False)
    (filestores / target).mkdir()
    (filestores / target / "theirs").write_text("kept")
    with pytest.raises(RemotePathExists, match="already exists"):
        result.staged.publish()
    assert (filestores / target / "theirs").read_text() == "kept"
    assert sorted(path.name for path in (filestores / target).iterdir()) == ["theirs"]
    assert partial_copies(filestores, target) == []


def test_taken_finds_what_exists_and_provision_refuses_it(pg, params, make_settings, filestores):
    """What exists is reported (it is not ours); a provision refuses it and leaves it
    as it was, with no partial copy beside it."""
    existing = make_template(pg)  # someone else's database, and a directory of that name
    (filestores / existing).mkdir()
    (filestores / existing / "theirs").write_text("kept")
    settings = make_settings()
    found = taken(params, settings, existing, str(filestores / existing))
    assert found == [f"database {existing}", f"directory {filestores / existing}"]
    with pytest.raises(DatabaseExists):
        run(params, settings, make_template(pg), existing, filestores, publish=False)
    assert existing in pg.databases()
    assert (filestores / existing / "theirs").read_text() == "kept"
    assert partial_copies(filestores, existing) == []


def test_existing_directory_refused_by_the_copy_and_the_clone_dropped(
    pg, params, make_settings, filestores
):
    template = make_template(pg)
    target = unique("inst")
    (filestores / target).mkdir()
    (filestores / target / "theirs").write_text("kept")
    with pytest.raises(RemotePathExists, match="already exists"):
        run(params, make_settings(), template, target, filestores, publish=False)
    assert target not in pg.databases()
    assert (filestores / target / "theirs").read_text() == "kept"
    assert partial_copies(filestores, target) == []


def test_invitation_issued_in_the_new_database(pg, params, make_settings, filestores):
    template = make_template(pg)
    target = unique("inst")

    def issue(cr):
        cr.execute("SELECT value FROM ir_config_parameter WHERE key = 'database.secret'")
        return cr.fetchone()[0]

    result = run(
        params, make_settings(), template, target, filestores, invitation=(params, target, issue)
    )
    assert result.invitation == config(pg, target)["database.secret"]  # the clone's, renewed
    assert result.invitation_error is None


def test_failed_invitation_does_not_fail_the_provision(pg, params, make_settings, filestores):
    template = make_template(pg)
    target = unique("inst")

    def issue(cr):
        cr.execute("SELECT * FROM no_such_table")

    result = run(
        params, make_settings(), template, target, filestores, invitation=(params, target, issue)
    )
    assert result.invitation is None
    assert "no_such_table" in str(result.invitation_error)
    assert target in pg.databases()
    assert (filestores / target / "ab" / "abcdef").exists()
