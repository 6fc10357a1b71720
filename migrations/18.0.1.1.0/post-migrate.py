"""Encrypt the secrets that 18.0.1.0.0 stored in clear (SPEC §12).

Those were plain columns (``saas_server.ssh_password`` …). The fields are now
computed from ``<name>_encrypted``; Odoo leaves the old columns in place, so
their values are read here, encrypted with the configured key, and the clear
columns dropped. Without a key the upgrade stops with a clear message rather
than keep or lose a secret. Running it twice changes nothing.
"""

import logging

from psycopg2 import sql

from odoo import SUPERUSER_ID, api

from odoo.addons.saas_manager.models.saas_secret_mixin import CIPHER_SUFFIX, secret_key_setting
from odoo.addons.saas_manager.remote import secret_box

_logger = logging.getLogger(__name__)

CLEAR_COLUMNS = {
    "saas_server": ("ssh_password", "ssh_private_key", "db_password", "master_password"),
}


def _existing_columns(cr, table, columns):
    cr.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_name = %s AND column_name IN %s",
        [table, tuple(columns)],
    )
    return {row[0] for row in cr.fetchall()}


def encrypt_clear_columns(cr, tables=None):
    """Encrypt and drop the clear columns of ``tables``; return the values encrypted."""
    box = None
    count = 0
    for table, columns in (tables or CLEAR_COLUMNS).items():
        present = _existing_columns(cr, table, columns)
        for column in columns:
            if column not in present:
                continue
            cipher_column = column + CIPHER_SUFFIX
            cr.execute(
                sql.SQL("SELECT id, {} FROM {} WHERE {} IS NOT NULL AND {} != ''").format(
                    sql.Identifier(column),
                    sql.Identifier(table),
                    sql.Identifier(column),
                    sql.Identifier(column),
                )
            )
            rows = cr.fetchall()
            if rows and box is None:
                # Raises SecretKeyError, naming the setting: the upgrade stops.
                box = secret_box.SecretBox(secret_key_setting())
            for record_id, value in rows:
                cipher = value if secret_box.is_encrypted(value) else box.encrypt(value)
                cr.execute(
                    sql.SQL("UPDATE {} SET {} = %s WHERE id = %s").format(
                        sql.Identifier(table), sql.Identifier(cipher_column)
                    ),
                    [cipher, record_id],
                )
            count += len(rows)
            cr.execute(
                sql.SQL("ALTER TABLE {} DROP COLUMN {}").format(
                    sql.Identifier(table), sql.Identifier(column)
                )
            )
            _logger.info(
                "%s.%s: %s value(s) encrypted, clear column dropped", table, column, len(rows)
            )
    return count


def adopt_provisioned_instances(env):
    """Record, in the operations journal, what 18.0.1.0.0's provisions made.

    Terminate drops only what a provision's journal lists; instances provisioned
    before the journal existed get a done provision operation listing their
    database and filestore, as that version's Terminate would have dropped.
    """
    instances = env["saas.instance"].search(
        [("state", "in", ("running", "suspended")), ("operation_ids", "=", False)]
    )
    for instance in instances:
        server = instance.server_id
        operation = env["saas.operation"].create(
            {
                "kind": "provision",
                "state": "done",
                "instance_id": instance.id,
                "server_id": server.id,
                "attempt": 1,
                "step": "Provisioned before the operations journal existed",
                "user_id": env.uid,
            }
        )
        env["saas.operation.journal"].create(
            [
                {
                    "operation_id": operation.id,
                    "attempt": 1,
                    "kind": kind,
                    "server_id": server.id,
                    "name": name,
                    "state": "kept",
                }
                for kind, name in (
                    ("database", instance.database_name),
                    ("directory", server._filestore_path(instance.database_name)),
                )
            ]
        )
    return len(instances)


def migrate(cr, version):
    if not version:
        return
    encrypt_clear_columns(cr)
    # Names are unique among live instances now (partial indexes made by init()).
    for constraint in (
        "saas_instance_database_name_server_unique",
        "saas_instance_subdomain_unique",
    ):
        cr.execute(
            sql.SQL("ALTER TABLE saas_instance DROP CONSTRAINT IF EXISTS {}").format(
                sql.Identifier(constraint)
            )
        )
    env = api.Environment(cr, SUPERUSER_ID, {})
    # Template creation runs on the operations engine now.
    old_cron = env.ref("saas_manager.ir_cron_saas_template_create", raise_if_not_found=False)
    if old_cron:
        old_cron.unlink()
    adopted = adopt_provisioned_instances(env)
    _logger.info("%s provisioned instance(s) recorded in the operations journal", adopted)
