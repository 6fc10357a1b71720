"""remote.storage: one contract, three real storages.

local: a temp directory; SFTP: the suite's real sshd; S3: moto in server mode on
127.0.0.1 with authentication on (sandbox.s3). "Full" is a real ENOSPC from a 64 KB
tmpfs (local and SFTP; skipped where mounting is not allowed); S3 has no quota to
fill on moto, so for S3 an interrupted upload, refused credentials and a closed
port are tested, each leaving no object and no incomplete upload.
"""

import contextlib
import hashlib
import os
import uuid

import boto3
import pytest
from conftest import authorized_sshd, settings_for

from remote.exceptions import (
    InvalidInput,
    StorageAuthError,
    StorageError,
    StorageFullError,
    StorageObjectExists,
    StorageObjectMissing,
    StorageUnavailable,
)
from remote.storage import LocalStorage, check_key, open_storage
from remote.storage_s3 import MIN_PART_SIZE, S3Storage
from remote.storage_sftp import SftpStorage
from sandbox.s3 import S3Server


@pytest.fixture(scope="module")
def sftp_server(base_dir, client_keys):
    """The suite's sshd has no SFTP subsystem: one of the same kind that has it."""
    server = authorized_sshd(
        base_dir / "sshd-sftp", client_keys, extra_config=("Subsystem sftp internal-sftp",)
    )
    yield server
    server.stop()


@pytest.fixture
def sftp_settings(sftp_server, client_keys):
    def make(**overrides):
        return settings_for(sftp_server, client_keys[0]["ed25519"][0], **overrides)

    return make


@pytest.fixture(scope="module")
def s3_server():
    with S3Server() as server:
        yield server


def new_bucket(server):
    name = f"bucket-{uuid.uuid4().hex[:10]}"
    client = boto3.client(
        "s3",
        endpoint_url=server.endpoint_url,
        region_name=server.region,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
    )
    client.create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["local", "sftp", "s3"])
def storage(request, tmp_path):
    if request.param == "local":
        yield LocalStorage(str(tmp_path))
    elif request.param == "sftp":
        settings = request.getfixturevalue("sftp_settings")()
        with SftpStorage(settings, str(tmp_path)) as opened:
            yield opened
    else:
        server = request.getfixturevalue("s3_server")
        with S3Storage(
            **server.settings(new_bucket(server), prefix="saas", part_size=MIN_PART_SIZE)
        ) as opened:
            yield opened


class Boom(Exception):
    pass


def failing(chunks, after):
    for number, chunk in enumerate(chunks):
        if number == after:
            raise Boom("the source failed")
        yield chunk


def hidden_or_partial(storage):
    if isinstance(storage, S3Storage):
        return storage.incomplete_uploads()
    root = storage.root if isinstance(storage, LocalStorage) else storage.base_path
    return [name for _d, _s, files in os.walk(root) for name in files if ".saas-" in name]


def test_contract(storage):
    chunks = [os.urandom(1024 * 1024) for _ in range(13)]  # 13 MB: 3 S3 parts
    blob = b"".join(chunks)
    size, sha256 = storage.put_stream("acme/acme_1.zip", chunks)
    assert (size, sha256) == (len(blob), hashlib.sha256(blob).hexdigest())
    storage.put_stream("acme/acme_2.zip", [b"small"])
    storage.put_stream("other/x.zip", [b"x"])
    assert storage.exists("acme/acme_1.zip")
    assert not storage.exists("acme/nope.zip")
    assert [(o.key, o.size) for o in storage.list("acme/")] == [
        ("acme/acme_1.zip", len(blob)),
        ("acme/acme_2.zip", 5),
    ]
    assert len(storage.list()) == 3
    with storage.open_read("acme/acme_1.zip") as stream:
        assert stream.read() == blob
        stream.seek(5 * 1024 * 1024 + 7)
        assert stream.read(10) == blob[5 * 1024 * 1024 + 7 :][:10]
        stream.seek(-4, os.SEEK_END)
        assert stream.read() == blob[-4:]
    with pytest.raises(StorageObjectExists):
        storage.put_stream("acme/acme_2.zip", [b"overwrite"])
    with storage.open_read("acme/acme_2.zip") as stream:
        assert stream.read() == b"small"
    with pytest.raises(StorageObjectMissing):
        storage.open_read("acme/nope.zip")
    assert storage.delete("acme/acme_2.zip") is True
    assert storage.delete("acme/acme_2.zip") is False
    assert storage.probe().startswith(".saas-probe-")
    assert len(storage.list()) == 2  # the probe left nothing
    assert hidden_or_partial(storage) == []


def test_failed_source_leaves_no_partial_object(storage):
    chunks = [os.urandom(1024 * 1024) for _ in range(12)]
    with pytest.raises(Boom):
        storage.put_stream("acme/broken.zip", failing(chunks, after=11))
    assert not storage.exists("acme/broken.zip")
    assert hidden_or_partial(storage) == []


def test_keys_are_checked(storage):
    for bad in ("", "/abs.zip", "a/../b.zip", ".hidden", "a//b", "a/.b", "x" * 600, 3):
        with pytest.raises(InvalidInput):
            storage.put_stream(bad, [b"x"])
    assert check_key("a/b-c_d.e+f=g@h.zip") == "a/b-c_d.e+f=g@h.zip"


@contextlib.contextmanager
def tiny_tmpfs(path):
    path.mkdir()
    if os.system(f"mount -t tmpfs -o size=64k tmpfs {path} 2>/dev/null") != 0:  # noqa: S605
        pytest.skip("cannot mount a small tmpfs here (not root, or no CAP_SYS_ADMIN)")
    try:
        yield path
    finally:
        os.system(f"umount -l {path}")  # noqa: S605


def test_local_full(tmp_path):
    with tiny_tmpfs(tmp_path / "small") as small:
        storage = LocalStorage(str(small))
        with pytest.raises(StorageFullError, match="no space left"):
            storage.put_stream("a/big.zip", [os.urandom(32 * 1024) for _ in range(8)])
        assert not [p for p in small.rglob("*") if p.is_file()]


def test_sftp_full(tmp_path, sftp_settings):
    with tiny_tmpfs(tmp_path / "small") as small, SftpStorage(sftp_settings(), str(small)) as st:
        with pytest.raises(StorageFullError, match="no space left"):
            st.put_stream("a/big.zip", [os.urandom(32 * 1024) for _ in range(8)])
        assert not [p for p in small.rglob("*") if p.is_file()]


def test_local_errors(tmp_path):
    with pytest.raises(InvalidInput):
        LocalStorage("relative/dir")
    with pytest.raises(StorageUnavailable, match="does not exist"):
        LocalStorage(str(tmp_path / "missing")).probe()


def test_sftp_refusals(tmp_path, sftp_settings, make_settings, client_keys):
    stranger = client_keys[1][0]
    with pytest.raises(StorageAuthError, match="refused"):
        SftpStorage(sftp_settings(private_key=stranger), str(tmp_path)).probe()
    other_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    with pytest.raises(StorageAuthError, match="host key"):
        SftpStorage(sftp_settings(host_key=other_key), str(tmp_path)).probe()
    with pytest.raises(StorageUnavailable):
        SftpStorage(sftp_settings(port=1, connect_timeout=2.0), str(tmp_path)).probe()
    with pytest.raises(StorageError):
        SftpStorage(sftp_settings(), str(tmp_path / "missing")).probe()
    # An sshd without the sftp subsystem (the suite's own) says so.
    with pytest.raises(StorageUnavailable, match="sftp subsystem"):
        SftpStorage(make_settings(), str(tmp_path)).probe()


def test_s3_refusals_name_no_secret(s3_server):
    bucket = new_bucket(s3_server)
    for overrides in ({"secret_key": "wrong-secret-value"}, {"access_key": "AKIANOTAKEY"}):
        storage = S3Storage(**s3_server.settings(bucket, **overrides))
        with pytest.raises(StorageAuthError, match="access refused") as caught:
            storage.put_stream("a/x.zip", [b"data"])
        assert "wrong-secret-value" not in str(caught.value)
        assert s3_server.secret_key not in str(caught.value)
    closed = S3Storage(
        **s3_server.settings(bucket, endpoint_url="http://127.0.0.1:9", connect_timeout=1)
    )
    with pytest.raises(StorageUnavailable, match="no answer"):
        closed.probe()
    with pytest.raises(StorageError, match="bucket does not exist"):
        S3Storage(**s3_server.settings("no-such-bucket-here")).put_stream("a.zip", [b"x"])
    good = S3Storage(**s3_server.settings(bucket))
    assert good.list() == [] and good.incomplete_uploads() == []


def test_open_storage_dispatch(tmp_path, s3_server):
    assert isinstance(open_storage("local", path=str(tmp_path)), LocalStorage)
    s3 = open_storage("s3", **s3_server.settings(new_bucket(s3_server)))
    assert isinstance(s3, S3Storage) and "secret" not in repr(s3).lower()
    with pytest.raises(InvalidInput):
        open_storage("ftp")
