"""remote.provision against a real PostgreSQL cluster and a real sshd on loopback."""

import pytest
from conftest import config, make_template, unique

from remote.exceptions import DatabaseExists, RemotePathExists, SshHostKeyError
from remote.provision import provision


@pytest.fixture
def filestores(tmp_path):
    """A template filestore with a file in it, and where the instance's goes."""
    root = tmp_path / "filestore"
    (root / "tpl" / "ab").mkdir(parents=True)
    (root / "tpl" / "ab" / "abcdef").write_bytes(b"attachment")
    root.chmod(0o755)
    return root


def run(params, settings, template, target, root):
    return provision(
        params,
        settings,
        template,
        target,
        source_dir=str(root / "tpl"),
        target_dir=str(root / target),
        base_url="https://client.example.com",
    )


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
