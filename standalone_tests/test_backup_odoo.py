"""Stock Odoo 18 restores one of our zips (skipped without an Odoo 18.0 tree).

A real Odoo server (sandbox.odoo, on the suite's PostgreSQL cluster) gets a
database with a partner and an attachment stored in its filestore; we back it up
with remote.backup over the real sshd, then hand the zip to Odoo's own
``/web/database/restore``, log in to the restored database and find the partner
and the attachment's bytes.
"""

import base64
import os
from pathlib import Path

import pytest
import requests

from remote import backup, ssh
from remote.postgres import ConnectionParams
from remote.storage import LocalStorage
from sandbox import machine
from sandbox.odoo import OdooServer, find_odoo_src

REQUIREMENTS = Path(__file__).resolve().parent.parent / "scripts" / "requirements-odoo.txt"
SOURCE_DB = "bk_odoo_source"
PAYLOAD = os.urandom(50_000)


def rpc(server, service, method, *args):
    answer = requests.post(
        f"{server.url}/jsonrpc",
        json={"jsonrpc": "2.0", "method": "call", "id": 1,
              "params": {"service": service, "method": method, "args": list(args)}},
        timeout=120,
    )  # fmt: skip
    body = answer.json()
    assert "error" not in body, body.get("error")
    return body["result"]


@pytest.fixture(scope="module")
def odoo(pg_cluster, tmp_path_factory):
    src = find_odoo_src(complain=None)
    if src is None:
        pytest.skip("no Odoo 18.0 tree ($ODOO_SRC or /opt/odoo-18.0)")
    python = machine.ensure_venv("odoo", REQUIREMENTS) / "bin" / "python"
    server = OdooServer(tmp_path_factory.mktemp("odoo"), src, python, pg_cluster, with_addon=False)
    server.run("-d", SOURCE_DB, "-i", "base", "--without-demo=all", "--stop-after-init")
    server.start()
    yield server
    server.stop()


def test_stock_odoo_restores_our_backup(odoo, pg_cluster, make_settings, tmp_path):
    uid = rpc(odoo, "common", "login", SOURCE_DB, "admin", "admin")

    def call(db, model, method, *args):
        return rpc(odoo, "object", "execute_kw", db, uid, "admin", model, method, list(args))

    partner = call(SOURCE_DB, "res.partner", "create", {"name": "Backup Probe Partner"})
    call(
        SOURCE_DB,
        "ir.attachment",
        "create",
        {"name": "probe.bin", "datas": base64.b64encode(PAYLOAD).decode(), "res_model":
         "res.partner", "res_id": partner},
    )  # fmt: skip
    version = rpc(odoo, "common", "version")

    storage_dir = tmp_path / "storage"
    storage_dir.mkdir()
    storage = LocalStorage(str(storage_dir))
    params = ConnectionParams(
        host=pg_cluster.host,
        port=pg_cluster.port,
        user=pg_cluster.owner,
        password=pg_cluster.owner_password,
    )
    with ssh.SshSession(make_settings()) as session:
        result = backup.backup_database(
            params,
            session,
            SOURCE_DB,
            str(odoo.workdir / "data" / "filestore" / SOURCE_DB),
            storage,
            backup.backup_key(SOURCE_DB),
            odoo_version=version["server_version"],
            odoo_version_info=version["server_version_info"],
        )
    assert result.filestore_files >= 1
    assert "base" in result.modules

    restored = "bk_odoo_restored"
    zip_path = storage_dir / result.key
    with zip_path.open("rb") as handle:
        answer = requests.post(
            f"{odoo.url}/web/database/restore",
            data={"master_pwd": odoo.master_password, "name": restored, "copy": "true"},
            files={"backup_file": ("backup.zip", handle, "application/zip")},
            allow_redirects=False,
            timeout=300,
        )
    assert answer.status_code in (302, 303), answer.text[-2000:]
    assert restored in rpc(odoo, "db", "list")

    restored_uid = rpc(odoo, "common", "login", restored, "admin", "admin")
    assert restored_uid

    def call_restored(model, method, *args):
        return rpc(odoo, "object", "execute_kw", restored, restored_uid, "admin", model,
                   method, list(args))  # fmt: skip

    found = call_restored("res.partner", "search", [["name", "=", "Backup Probe Partner"]])
    assert found == [partner]
    attachments = call_restored(
        "ir.attachment",
        "search_read",
        [["name", "=", "probe.bin"]],
        ["datas", "store_fname"],
    )
    assert len(attachments) == 1 and attachments[0]["store_fname"]
    assert base64.b64decode(attachments[0]["datas"]) == PAYLOAD
    restored_file = odoo.workdir / "data" / "filestore" / restored / attachments[0]["store_fname"]
    assert restored_file.read_bytes() == PAYLOAD
    rpc(odoo, "db", "drop", odoo.master_password, restored)
