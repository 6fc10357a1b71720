"""A clone's filestore shares its template's files, and neither sees the other's changes.

``remote.filestore.copy_tree`` hard-links the template's files into the new
instance's filestore (``cp -al``). That is safe only because Odoo never writes into
an existing filestore file (its docstring says where Odoo 18's ``ir_attachment``
shows it). Here the real Odoo code does it: attachments are written, rewritten,
deleted and garbage-collected (``_gc_file_store``) in a template, then in its clone,
then in the template again, and after each step both databases read exactly their
own contents.
"""

import os

from odoo import SUPERUSER_ID, api
from odoo.modules.registry import Registry
from odoo.sql_db import close_db
from odoo.tests import tagged
from odoo.tools import mute_logger

from .common import LOGGERS, SelfManagedCase


@tagged("post_install", "-at_install", "saas_slow")
class TestFilestoreSharing(SelfManagedCase):
    def in_db(self, db_name, work):
        """Run ``work(env)`` as superuser in database ``db_name``, committed at its end."""
        registry = Registry(db_name)
        self.addCleanup(self.forget_registry, db_name)
        with registry.cursor() as cr:  # committed when the block ends
            return work(api.Environment(cr, SUPERUSER_ID, {}))

    @staticmethod
    def forget_registry(db_name):
        Registry.delete(db_name)
        close_db(db_name)

    def collect_garbage(self, db_name):
        def gc(env):
            env["ir.attachment"]._gc_file_store()

        self.in_db(db_name, gc)

    def contents(self, db_name, ids):
        """{attachment id: bytes} of those of ``ids`` that still exist in ``db_name``."""

        def read(env):
            return {att.id: att.raw for att in env["ir.attachment"].browse(ids).exists()}

        return self.in_db(db_name, read)

    def path(self, db_name, store_fname):
        return os.path.join(self.filestore_root, db_name, store_fname)

    def store_fnames(self, db_name, ids):
        def read(env):
            return {att.id: att.store_fname for att in env["ir.attachment"].browse(ids).exists()}

        return self.in_db(db_name, read)

    def test_template_and_clone_each_see_only_their_changes(self):
        template = self.make_template()
        template.action_create_database()
        self.run_operations()
        self.assertEqual(template.state, "ready", template.error)
        tpl_db = template.database_name

        def create(env):
            made = env["ir.attachment"].create(
                [
                    {"name": "kept.txt", "raw": b"kept by both"},
                    {"name": "rewritten.txt", "raw": b"first version"},
                    {"name": "deleted.txt", "raw": b"deleted in the clone"},
                ]
            )
            return made.ids

        kept, rewritten, deleted = ids = self.in_db(tpl_db, create)
        original = self.contents(tpl_db, ids)
        tpl_files = self.store_fnames(tpl_db, ids)

        with mute_logger(*LOGGERS):
            instance = self.provision(self.make_instance(template))
        self.assertEqual(instance.state, "running", instance.error)
        clone_db = instance.database_name
        self.assertEqual(self.contents(clone_db, ids), original)
        # The copy shares the files: one inode, two names.
        for fname in tpl_files.values():
            tpl_stat = os.stat(self.path(tpl_db, fname))
            clone_stat = os.stat(self.path(clone_db, fname))
            self.assertEqual(clone_stat.st_ino, tpl_stat.st_ino)
            self.assertGreaterEqual(tpl_stat.st_nlink, 2)

        # In the clone: rewrite one, delete one, add one, collect the garbage.
        def change_clone(env):
            attachments = env["ir.attachment"]
            attachments.browse(rewritten).write({"raw": b"second version, clone only"})
            attachments.browse(deleted).unlink()
            return attachments.create({"name": "clone.txt", "raw": b"the clone's own"}).id

        clone_only = self.in_db(clone_db, change_clone)
        self.collect_garbage(clone_db)
        self.assertEqual(self.contents(tpl_db, ids), original)
        for fname in tpl_files.values():
            with open(self.path(tpl_db, fname), "rb") as handle:
                self.assertIn(handle.read(), original.values())
        clone_now = self.contents(clone_db, [*ids, clone_only])
        self.assertEqual(
            clone_now,
            {
                kept: b"kept by both",
                rewritten: b"second version, clone only",
                clone_only: b"the clone's own",
            },
        )
        # The files the clone let go of are gone from its tree only.
        self.assertFalse(os.path.exists(self.path(clone_db, tpl_files[deleted])))
        self.assertFalse(os.path.exists(self.path(clone_db, tpl_files[rewritten])))
        self.assertTrue(os.path.exists(self.path(tpl_db, tpl_files[deleted])))
        self.assertTrue(os.path.exists(self.path(tpl_db, tpl_files[rewritten])))
        clone_file = self.store_fnames(clone_db, [clone_only])[clone_only]
        self.assertFalse(os.path.exists(self.path(tpl_db, clone_file)))

        # In the template: rewrite the shared one the clone kept, delete one, collect.
        def change_template(env):
            attachments = env["ir.attachment"]
            attachments.browse(kept).write({"raw": b"template's new version"})
            attachments.browse(rewritten).unlink()

        self.in_db(tpl_db, change_template)
        self.collect_garbage(tpl_db)
        self.assertEqual(self.contents(clone_db, [*ids, clone_only]), clone_now)
        self.assertEqual(
            self.contents(tpl_db, ids),
            {kept: b"template's new version", deleted: b"deleted in the clone"},
        )
        # The clone's link to the file the template let go of still holds the data.
        with open(self.path(clone_db, tpl_files[kept]), "rb") as handle:
            self.assertEqual(handle.read(), b"kept by both")
        self.assertFalse(os.path.exists(self.path(tpl_db, tpl_files[kept])))
