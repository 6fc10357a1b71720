"""Backups through Odoo on the two remote storages: SFTP against the suite's sshd,
S3 against moto on loopback (both real servers started by scripts/saas.py suite).

Each: Test Storage, Backup on the instance (the operation, a done saas.backup whose
object is in the storage with its size), a restore as a new instance through the
wizard (the data and the attachment's file back, a new identity), and the same
restore of the object with one byte flipped in the storage, refused on its sha256
with nothing made.
"""

import os
import uuid

from odoo.tests import tagged

from .test_backups import BackupCase, flip_byte

S3_ENV = ("SAAS_TEST_S3_ENDPOINT", "SAAS_TEST_S3_REGION", "SAAS_TEST_S3_ACCESS_KEY",
          "SAAS_TEST_S3_SECRET_KEY")  # fmt: skip


@tagged("post_install", "-at_install")
class TestBackupStorages(BackupCase):
    def back_up_and_restore(self, storage, read_object, write_object):
        """Back up through ``storage`` (the default), restore, then a corrupted copy.

        ``read_object(backup)`` and ``write_object(backup, data)`` reach the object
        behind the storage's back.
        """
        tested = storage.action_test()["params"]
        self.assertEqual(tested["type"], "success", tested["message"])
        instance, store_fname = self.marked_instance()
        db = instance.database_name

        backup = self.back_up(instance)
        self.assertEqual(backup.state, "done", backup.error)
        self.assertEqual(backup.storage_id, storage)
        data = read_object(backup)
        self.assertEqual(len(data), backup.size)
        self.assertEqual(data[:2], b"PK")

        copy = self.restore_as_new(backup, f"{db}_copy")
        self.assert_restored(instance, copy, store_fname)

        write_object(backup, flip_byte(data, len(data) // 2))
        self.assert_corrupted_refused(backup, f"{db}_bad")
        self.assertEqual(instance.state, "running")

    def test_sftp_storage(self):
        base_path = self.temp_dir("saas-sftp-backups-")
        storage = self.sftp_storage(base_path, is_default=True)
        tested = storage.action_test()["params"]
        if tested["type"] == "danger" and "sftp subsystem" in tested["message"]:
            # scripts/saas.py suite_services starts the suite's sshd: it needs
            # extra_config=("Subsystem sftp internal-sftp",) for this test.
            self.skipTest(f"the suite's sshd has no SFTP subsystem: {tested['message']}")

        def path(backup):
            return os.path.join(base_path, backup.location)

        def read_object(backup):
            with open(path(backup), "rb") as handle:
                return handle.read()

        def write_object(backup, data):
            with open(path(backup), "wb") as handle:
                handle.write(data)

        self.back_up_and_restore(storage, read_object, write_object)

    def test_s3_storage(self):
        missing = [name for name in S3_ENV if not os.environ.get(name)]
        if missing:
            self.skipTest(f"no S3 server: run the suite through scripts/saas.py ({missing})")
        import boto3  # only where the S3 storage is tested

        env = os.environ
        bucket = f"saas-test-{uuid.uuid4().hex[:10]}"
        client = boto3.client(
            "s3",
            endpoint_url=env["SAAS_TEST_S3_ENDPOINT"],
            region_name=env["SAAS_TEST_S3_REGION"],
            aws_access_key_id=env["SAAS_TEST_S3_ACCESS_KEY"],
            aws_secret_access_key=env["SAAS_TEST_S3_SECRET_KEY"],
        )
        client.create_bucket(Bucket=bucket)
        self.addCleanup(self.empty_bucket, client, bucket)
        storage = self.env["saas.backup.storage"].create(
            {
                "name": "S3",
                "kind": "s3",
                "endpoint_url": env["SAAS_TEST_S3_ENDPOINT"],
                "region": env["SAAS_TEST_S3_REGION"],
                "bucket": bucket,
                "prefix": "saas/",
                "access_key": env["SAAS_TEST_S3_ACCESS_KEY"],
                "secret_key": env["SAAS_TEST_S3_SECRET_KEY"],
                "is_default": True,
            }
        )

        def read_object(backup):
            return client.get_object(Bucket=bucket, Key=f"saas/{backup.location}")["Body"].read()

        def write_object(backup, data):
            client.put_object(Bucket=bucket, Key=f"saas/{backup.location}", Body=data)

        self.back_up_and_restore(storage, read_object, write_object)

    @staticmethod
    def empty_bucket(client, bucket):
        listed = client.list_objects_v2(Bucket=bucket).get("Contents") or []
        for item in listed:
            client.delete_object(Bucket=bucket, Key=item["Key"])
        client.delete_bucket(Bucket=bucket)
