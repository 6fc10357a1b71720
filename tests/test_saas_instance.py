from odoo.exceptions import UserError, ValidationError
from odoo.tests import tagged

from .common import SaasCase


@tagged("post_install", "-at_install")
class TestSaasInstance(SaasCase):
    def test_default_server_never_raises(self):
        self.assertFalse(self.Instance._get_default_server())
        full = self.make_server(max_instances=1)
        full.state = "active"
        self.make_instances(full, 1)
        # no server has 10 % free: the first active one is proposed anyway
        self.assertEqual(self.Instance._get_default_server(), full)
        free = self.make_server(max_instances=10)
        free.state = "active"
        self.assertEqual(self.Instance._get_default_server(), free)
        self.assertEqual(self.Instance.new({"name": "x"}).server_id, free)

    def test_url(self):
        server = self.make_server(server_url="https://eu1.example.com")
        instance = self.make_instances(server, 1)
        instance.subdomain = "acme"
        self.assertEqual(instance.url, f"https://eu1.example.com/web?db={instance.database_name}")
        server.instance_domain = "eu1.example.net"
        self.assertEqual(instance.url, "https://acme.eu1.example.net")

    def test_names_validated(self):
        server = self.make_server()
        for bad in ("a", "a b", "a;b", 'x"; DROP DATABASE t; --', "postgres", "x" * 64):
            with self.subTest(name=bad), self.assertRaises(ValidationError):
                self.Instance.create({"name": "x", "database_name": bad, "server_id": server.id})
        for bad in ("Acme", "-acme", "acme-", "ac me", "a" * 64):
            with self.subTest(subdomain=bad), self.assertRaises(ValidationError):
                self.Instance.create(
                    {
                        "name": "x",
                        "database_name": "ok_db",
                        "subdomain": bad,
                        "server_id": server.id,
                    }
                )

    def test_life_cycle_refusals_name_the_state(self):
        server = self.make_server()
        instance = self.make_instances(server, 1)
        with self.assertRaises(UserError) as caught:
            instance.action_suspend()
        self.assertIn("is Draft", str(caught.exception))
        with self.assertRaises(UserError):
            instance.action_resume()
        with self.assertRaises(UserError):
            instance.action_retry()
        instance.state = "provisioning"
        with self.assertRaises(UserError) as caught:
            instance.action_terminate()
        self.assertIn("cannot be terminated", str(caught.exception))
        with self.assertRaises(UserError) as caught:
            instance.action_provision()
        self.assertIn("only a draft or failed instance", str(caught.exception))

    def test_suspend_resume_and_terminate_a_draft(self):
        server = self.make_server(max_instances=2)
        running, draft = self.make_instances(server, 2)
        running.state = "running"
        # Suspending is real (the database refuses connections): a server whose
        # PostgreSQL is unreachable refuses it with the reason, and nothing changes.
        with self.assertRaises(UserError) as caught:
            running.action_suspend()
        self.assertIn("Cannot connect", str(caught.exception))
        self.assertEqual(running.state, "running")
        running.state = "suspended"
        self.assertEqual(server.instance_count, 2, "a suspended instance keeps its slot")
        # a draft has nothing on the server: terminating it touches no remote system
        draft.action_terminate()
        self.assertEqual(draft.state, "terminated")
        self.assertEqual(server.instance_count, 1)

    def test_provisioned_instance_keeps_its_location(self):
        server = self.make_server()
        instance = self.make_instances(server, 1, state="running")
        with self.assertRaises(UserError) as caught:
            instance.write({"database_name": "elsewhere"})
        self.assertIn("cannot change", str(caught.exception))
        failed = self.make_instances(server, 1, state="failed")
        failed.database_name = "corrected_name"
        self.assertEqual(failed.database_name, "corrected_name")

    def test_instance_database_is_not_a_template(self):
        server = self.make_server()
        self.env["saas.template"].create(
            {"name": "T", "database_name": "tpl_db", "server_id": server.id}
        )
        with self.assertRaises(ValidationError) as caught:
            self.Instance.create({"name": "x", "database_name": "tpl_db", "server_id": server.id})
        self.assertIn("template", str(caught.exception))

    def test_terminate_refused_while_an_operation_is_in_progress(self):
        """Terminate pressed during a move: refused with the reason, nothing queued
        (it used to queue a backup, then be taken for the move and never happen)."""
        server = self.make_server()
        target = self.make_server()
        (server | target).write({"state": "active"})
        instance = self.make_instances(server, 1, state="running")
        Operation = self.env["saas.operation"]
        move = Operation._queue("transfer", instance, server, target_server_id=target.id)
        self.assertEqual(
            Operation._queue("transfer", instance, server, target_server_id=target.id),
            move,
            "pressed twice: queued once",
        )
        backups = self.env["saas.backup"].search_count([("instance_id", "=", instance.id)])
        with self.assertRaises(UserError) as caught:
            instance.action_terminate()
        self.assertIn("operation in progress", str(caught.exception))
        self.assertIn(move.display_label, str(caught.exception))
        with self.assertRaises(UserError):
            Operation._queue("terminate", instance, server)
        self.assertEqual(instance.operation_ids, move, "nothing else queued")
        self.assertEqual(
            self.env["saas.backup"].search_count([("instance_id", "=", instance.id)]), backups
        )
        self.assertEqual(instance.state, "running")
        move.action_cancel()
        self.assertEqual(move.state, "cancelled")
        self.assertEqual(instance.action_terminate(), True, "nothing made: terminated at once")
        self.assertEqual(instance.state, "terminated")
