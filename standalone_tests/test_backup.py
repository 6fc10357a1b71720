"""remote.backup and remote.restore against the suite's real PostgreSQL and sshd.

The managed host is this machine reached over the real sshd: pg_dump, psql and the
filestore are on it. Stock Odoo's own restore of one of our zips is in
test_backup_odoo.py (it needs an Odoo 18.0 tree).
"""

import contextlib
import hashlib
import json
import os
import threading
import time
import zipfile
from pathlib import Path

import pytest
from conftest import (
    MODULES,
    TEMPLATE_UUID,
    config,
    make_filestore,
    odoo_like,
    tree,
    unique,
)

from remote import backup, filestore, restore, ssh
from remote.exceptions import (
    BackupCorrupted,
    BackupError,
    DatabaseError,
    DatabaseExists,
    RemotePathExists,
    StorageError,
    StorageFullError,
)
from remote.postgres import ConnectionParams
from remote.storage import LocalStorage


@pytest.fixture
def session(make_settings):
    with ssh.SshSession(make_settings()) as opened:
        yield opened


@pytest.fixture
def storage(tmp_path):
    root = tmp_path / "storage"
    root.mkdir()
    return LocalStorage(str(root))


@pytest.fixture
def source(pg, tmp_path):
    name = odoo_like(pg)
    store = tmp_path / "filestore" / name
    files = make_filestore(store)
    return name, store, files


def do_backup(params, session, source, storage, **options):
    name, store, _files = source
    key = backup.backup_key(name)
    return backup.backup_database(params, session, name, str(store), storage, key, **options)


def test_backup_is_an_odoo_zip(params, session, source, storage, tmp_path):
    name, _store, files = source
    result = do_backup(params, session, source, storage)
    path = Path(storage.root, *result.key.split("/"))
    data = path.read_bytes()
    assert result.size == len(data)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert result.modules == MODULES
    assert result.filestore_files == len(files)
    assert result.filestore_size == sum(len(blob) for blob in files.values())
    assert result.db_size > 0 and result.dump_size > 0
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        names = archive.namelist()
        assert names[0] == "dump.sql"
        assert set(names) == {"dump.sql", "manifest.json"} | {f"filestore/{rel}" for rel in files}
        manifest = json.loads(archive.read("manifest.json"))
        dump = archive.read("dump.sql").decode()
        for rel, blob in files.items():
            assert archive.read(f"filestore/{rel}") == blob
    assert manifest == {
        "odoo_dump": "1",
        "db_name": name,
        "version": "18.0",
        "version_info": [18, 0, 0, "final", 0, ""],
        "major_version": "18.0",
        "pg_version": manifest["pg_version"],
        "modules": MODULES,
    }
    assert manifest["pg_version"].split(".")[0] in ("13", "14", "15", "16", "17")
    assert "COPY public.res_partner" in dump
    assert "OWNER TO" not in dump  # --no-owner, as Odoo dumps
    assert backup.read_manifest(storage, result.key) == manifest


def test_backup_without_filestore(params, session, pg, storage, tmp_path):
    name = odoo_like(pg)
    result = backup.backup_database(
        params, session, name, str(tmp_path / "none"), storage, backup.backup_key(name)
    )
    assert result.filestore_files == 0
    assert backup.verify(storage, result.key, result.sha256) == (result.size, result.sha256)


def test_restore_as_new_database(params, session, source, storage, pg, tmp_path):
    name, _store, files = source
    result = do_backup(params, session, source, storage, odoo_version="18.0-20250101")
    target = unique("restored")
    target_dir = tmp_path / "filestore" / target
    temp_dir = filestore.partial_copy_path(str(target_dir))
    restored = restore.restore_backup(
        storage,
        result.key,
        result.sha256,
        conn_params=params,
        session=session,
        database=target,
        filestore_dir=str(target_dir),
        temp_dir=temp_dir,
        base_url="https://restored.example.com",
    )
    assert restored.manifest["version"] == "18.0-20250101"
    assert restored.filestore_files == len(files)
    assert tree(target_dir) == files
    assert not os.path.exists(temp_dir)
    assert pg.query("SELECT count(*) FROM res_partner", dbname=target) == [(120,)]
    values = config(pg, target)
    assert values["database.uuid"] == restored.uuid != TEMPLATE_UUID
    assert values["web.base.url"] == "https://restored.example.com"
    assert values["report.url"] == "http://kept.example.com"
    assert config(pg, name)["database.uuid"] == TEMPLATE_UUID  # the source is untouched


def test_restore_in_place_keeps_identity(params, session, source, storage, pg, tmp_path):
    result = do_backup(params, session, source, storage)
    target = unique("inplace")
    restore.restore_backup(
        storage,
        result.key,
        result.sha256,
        conn_params=params,
        session=session,
        database=target,
        filestore_dir=str(tmp_path / target),
        new_identity=False,
    )
    assert config(pg, target)["database.uuid"] == TEMPLATE_UUID


def flip_byte(storage, key, offset):
    path = Path(storage.root, *key.split("/"))
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def assert_nothing_made(pg, target, target_dir):
    assert target not in pg.databases()
    parent = Path(target_dir).parent
    leftovers = [p.name for p in parent.iterdir()] if parent.exists() else []
    assert not [n for n in leftovers if n.startswith(("." + Path(target_dir).name, target))]


def test_corrupted_object_is_found_and_nothing_made(params, session, source, storage, pg, tmp_path):
    result = do_backup(params, session, source, storage)
    flip_byte(storage, result.key, result.size // 2)
    with pytest.raises(BackupCorrupted, match="sha256"):
        backup.verify(storage, result.key, result.sha256)
    target = unique("corrupt")
    target_dir = tmp_path / "filestore" / target
    with pytest.raises(BackupCorrupted):
        restore.restore_backup(
            storage,
            result.key,
            result.sha256,
            conn_params=params,
            session=session,
            database=target,
            filestore_dir=str(target_dir),
        )
    assert_nothing_made(pg, target, target_dir)


def test_damaged_zip_with_the_right_checksum_is_undone(params, session, source, storage, pg):
    """A zip whose sha256 was recorded after the damage: the CRC check finds it mid-way."""
    result = do_backup(params, session, source, storage)
    path = Path(storage.root, *result.key.split("/"))
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("dump.sql")
    flip_byte(storage, result.key, info.header_offset + 30 + len("dump.sql") + 20 + 200)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    target = unique("damaged")
    target_dir = Path(storage.root).parent / "fs" / target
    target_dir.parent.mkdir()
    with pytest.raises((BackupCorrupted, BackupError)):
        restore.restore_backup(
            storage,
            result.key,
            sha,
            conn_params=params,
            session=session,
            database=target,
            filestore_dir=str(target_dir),
        )
    assert_nothing_made(pg, target, target_dir)


def test_restore_refuses_existing_targets(params, session, source, storage, pg, tmp_path):
    name, store, _files = source
    result = do_backup(params, session, source, storage)
    with pytest.raises(DatabaseExists):
        restore.restore_backup(
            storage,
            result.key,
            result.sha256,
            conn_params=params,
            session=session,
            database=name,
            filestore_dir=str(tmp_path / "elsewhere"),
        )
    target = unique("taken")
    with pytest.raises(RemotePathExists):
        restore.restore_backup(
            storage,
            result.key,
            result.sha256,
            conn_params=params,
            session=session,
            database=target,
            filestore_dir=str(store),
        )
    assert target not in pg.databases()
    assert config(pg, name)["database.uuid"] == TEMPLATE_UUID


@pytest.mark.parametrize("step", ["load", "identity", "rename"])
def test_failed_restore_leaves_nothing(
    params, session, source, storage, pg, tmp_path, monkeypatch, step
):
    result = do_backup(params, session, source, storage)
    target = unique("fail")
    target_dir = tmp_path / "filestore" / target
    if step == "load":
        monkeypatch.setattr(restore, "RESTORE_SCRIPT", restore.RESTORE_SCRIPT.replace(
            '"--dbname", config["database"]]', '"--dbname", config["database"], "-c", "SELEC 1"]'
        ))  # fmt: skip
    elif step == "identity":

        def broken(*_args):
            raise DatabaseError("injected failure")

        monkeypatch.setattr(restore, "_set_identity", broken)
    else:
        monkeypatch.setattr(restore, "RENAME_SCRIPT", "exit 7")
    with pytest.raises((BackupError, DatabaseError)):
        restore.restore_backup(
            storage,
            result.key,
            result.sha256,
            conn_params=params,
            session=session,
            database=target,
            filestore_dir=str(target_dir),
        )
    assert_nothing_made(pg, target, target_dir)


def test_psql_error_stops_the_restore(params, session, pg, storage, tmp_path):
    """A dump.sql that fails half-way: ON_ERROR_STOP, single transaction, dropped."""
    buffer = tmp_path / "bad.zip"
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("dump.sql", "CREATE TABLE t (id int);\nINSERT INTO nowhere VALUES (1);\n")
    digest = hashlib.sha256(buffer.read_bytes()).hexdigest()
    storage.put_stream("bad/bad.zip", [buffer.read_bytes()])
    target = unique("badsql")
    with pytest.raises(BackupError, match="nowhere"):
        restore.restore_backup(
            storage,
            "bad/bad.zip",
            digest,
            conn_params=params,
            session=session,
            database=target,
            filestore_dir=str(tmp_path / target),
        )
    assert target not in pg.databases()


def test_failed_dump_stores_nothing(params, session, source, storage):
    name, store, _files = source
    wrong = ConnectionParams(
        host=params.host, port=params.port, user=params.user, password="wrong-password"
    )
    with pytest.raises(BackupError, match="pg_dump failed") as caught:
        backup.backup_database(
            params, session, name, str(store), storage, backup.backup_key(name), dump_params=wrong
        )
    assert "wrong-password" not in str(caught.value)
    assert storage.list() == []
    assert not list(Path(storage.root).rglob("*.zip*"))
    with pytest.raises(DatabaseError):
        backup.backup_database(
            params, session, "missing_db", str(store), storage, backup.backup_key("missing_db")
        )
    assert storage.list() == []


@contextlib.contextmanager
def tiny_tmpfs(path, size="64k"):
    path.mkdir()
    done = os.system(f"mount -t tmpfs -o size={size} tmpfs {path} 2>/dev/null")  # noqa: S605
    if done != 0:
        pytest.skip("cannot mount a small tmpfs here (not root, or no CAP_SYS_ADMIN)")
    try:
        yield path
    finally:
        os.system(f"umount -l {path}")  # noqa: S605


def test_full_storage_fails_the_backup_and_leaves_nothing(params, session, source, tmp_path):
    with tiny_tmpfs(tmp_path / "small") as small:
        storage = LocalStorage(str(small))
        name, store, _files = source
        with pytest.raises(StorageFullError, match="no space left"):
            backup.backup_database(
                params, session, name, str(store), storage, backup.backup_key(name), compresslevel=0
            )
        assert list(small.iterdir()) == [] or all(p.is_dir() for p in small.rglob("*"))
        assert not [p for p in small.rglob("*") if p.is_file()]


def test_scratch_restore_checks_and_drops(params, session, source, storage, pg, tmp_path):
    result = do_backup(params, session, source, storage)
    before = pg.databases()
    scratch = unique("scratch")
    summary = restore.scratch_restore(
        storage,
        result.key,
        result.sha256,
        conn_params=params,
        session=session,
        database=scratch,
        filestore_dir=str(tmp_path / scratch),
    )
    assert summary["modules"] == len(MODULES)
    assert summary["filestore_files"] == 6
    assert pg.databases() == before
    assert not (tmp_path / scratch).exists()


def rss_bytes():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def test_memory_does_not_grow_with_the_backup(params, session, pg, storage, tmp_path):
    """About 100 MB of incompressible filestore: this process's RSS grows far less."""
    name = odoo_like(pg)
    store = tmp_path / "big"
    store.mkdir()
    block = os.urandom(1024 * 1024)
    for number in range(100):
        (store / f"{number:03d}").write_bytes(block[number:] + block[:number])
    samples = []
    running = threading.Event()
    running.set()

    def sample():
        while running.is_set():
            samples.append(rss_bytes())
            time.sleep(0.02)

    before = rss_bytes()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = backup.backup_database(
            params, session, name, str(store), storage, backup.backup_key(name), compresslevel=1
        )
    finally:
        running.clear()
        sampler.join()
    assert result.size > 100 * 1024 * 1024
    growth = max(samples) - before
    assert growth < 40 * 1024 * 1024, f"RSS grew by {growth / 1e6:.1f} MB"


def test_storage_errors_name_no_secret(params, session, source, tmp_path):
    missing = LocalStorage(str(tmp_path / "not-there"))
    name, store, _files = source
    with pytest.raises(StorageError) as caught:
        backup.backup_database(params, session, name, str(store), missing, backup.backup_key(name))
    assert params.password not in str(caught.value)
