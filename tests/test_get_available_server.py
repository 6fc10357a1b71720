from odoo.exceptions import UserError
from odoo.tests import tagged

from .common import SaasCase


@tagged("post_install", "-at_install")
class TestGetAvailableServer(SaasCase):
    def test_picks_the_most_free_active_server(self):
        busy = self.make_server(max_instances=10)
        free = self.make_server(max_instances=10)
        inactive = self.make_server(max_instances=100)
        (busy | free).write({"state": "active"})
        inactive.state = "maintenance"
        self.make_instances(busy, 5)
        self.make_instances(free, 2)
        self.assertEqual(self.Server.get_available_server(), free)
        self.Instance.create(
            [
                {"name": f"more {n}", "database_name": f"more_{n}", "server_id": free.id}
                for n in range(4)
            ]
        )
        self.assertEqual(self.Server.get_available_server(), busy)

    def test_ties_go_to_fewest_instances_then_oldest(self):
        small = self.make_server(max_instances=2)
        large = self.make_server(max_instances=4)
        (small | large).write({"state": "active"})
        self.make_instances(small, 1)
        self.make_instances(large, 2)
        # both 50 % free: the one with fewer instances wins
        self.assertEqual(self.Server.get_available_server(), small)
        older = self.make_server(max_instances=2)
        newer = self.make_server(max_instances=2)
        small.state = large.state = "disabled"
        (older | newer).write({"state": "active"})
        self.assertEqual(self.Server.get_available_server(), older)

    def test_threshold(self):
        server = self.make_server(max_instances=10)
        server.state = "active"
        self.make_instances(server, 8)  # 20 % free
        self.assertEqual(self.Server.get_available_server(), server)
        self.assertEqual(self.Server.get_available_server(min_capacity_percent=20), server)
        with self.assertRaisesRegex(UserError, "at least 21"):
            self.Server.get_available_server(min_capacity_percent=21)
        self.Instance.create({"name": "ninth", "database_name": "ninth", "server_id": server.id})
        with self.assertRaises(UserError):
            self.Server.get_available_server()
        self.assertEqual(self.Server.get_available_server(min_capacity_percent=10), server)

    def test_raises_when_none(self):
        with self.assertRaisesRegex(UserError, "No active server"):
            self.Server.get_available_server()
        self.make_server().state = "offline"
        with self.assertRaisesRegex(UserError, "No active server"):
            self.Server.get_available_server(min_capacity_percent=0)

    def test_bad_threshold(self):
        for value in (-1, 101, "20", None, True):
            with self.subTest(value=value), self.assertRaisesRegex(UserError, "between 0 and 100"):
                self.Server.get_available_server(min_capacity_percent=value)

    def _queries_of_get_available_server(self):
        self.env.flush_all()
        self.env.invalidate_all()
        before = self.env.cr.sql_log_count
        self.Server.get_available_server()
        return self.env.cr.sql_log_count - before

    def test_query_count_does_not_grow_with_servers(self):
        servers = self.Server
        for _n in range(5):
            servers |= self.make_server()
        servers.write({"state": "active"})
        with_5 = self._queries_of_get_available_server()
        for _n in range(45):
            servers |= self.make_server()
        servers.write({"state": "active"})
        with_50 = self._queries_of_get_available_server()
        self.assertEqual(with_5, with_50)
        self.assertLessEqual(with_50, 2)
