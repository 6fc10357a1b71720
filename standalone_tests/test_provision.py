"""remote.provision against a real PostgreSQL cluster and a real sshd on loopback."""

import logging

import pytest
from conftest import config, make_template, unique

from remote.exceptions import DatabaseExists, RemotePathExists, SshHostKeyError
from remote.provision import check_free, provision, taken


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


def test_check_free_then_provision_on_its_session(pg, params, make_settings, filestores, caplog):
    """One SSH handshake for the check and the copy; the session is closed after."""
    caplog.set_level(logging.INFO, logger="remote.ssh")
    template = make_template(pg)
    target = unique("inst")
    settings = make_settings()
    found, session = check_free(params, settings, target, str(filestores / target))
    assert found == []
    result = run(params, settings, template, target, filestores, session=session)
    assert result.filestore_copied
    assert (filestores / target / "ab" / "abcdef").read_bytes() == b"attachment"
    assert len(ssh_connections(caplog)) == 1
    assert "closed" in repr(session)


def test_check_free_finds_what_exists_and_provision_refuses_it(
    pg, params, make_settings, filestores
):
    """What exists is reported (it is not ours); provision on that session still refuses
    it and leaves it as it was."""
    existing = make_template(pg)  # someone else's database, and a directory of that name
    (filestores / existing).mkdir()
    (filestores / existing / "theirs").write_text("kept")
    settings = make_settings()
    found, session = check_free(params, settings, existing, str(filestores / existing))
    assert found == [f"database {existing}", f"directory {filestores / existing}"]
    assert taken(params, settings, existing, str(filestores / existing)) == found
    with pytest.raises(DatabaseExists):
        run(params, settings, make_template(pg), existing, filestores, session=session)
    assert existing in pg.databases()
    assert (filestores / existing / "theirs").read_text() == "kept"
    assert "closed" in repr(session)


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
