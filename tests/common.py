import socket

from odoo.tests import TransactionCase


def closed_port_urls(count=1):
    """URLs of distinct ports on 127.0.0.1 where nothing listens."""
    socks = []
    try:
        for _n in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [f"http://127.0.0.1:{sock.getsockname()[1]}" for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def closed_port_url():
    """The URL of a port on 127.0.0.1 where nothing listens."""
    return closed_port_urls(1)[0]


class SaasCase(TransactionCase):
    """Helpers to make servers and instances; no reliance on demo data."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.Server = cls.env["saas.server"]
        cls.Instance = cls.env["saas.instance"]
        # Servers from demo data (if loaded) must not take part in the tests.
        cls.Server.search([]).write({"state": "disabled"})
        cls._server_seq = 0
        cls._instance_seq = 0

    @classmethod
    def make_server(cls, **vals):
        cls._server_seq += 1
        seq = cls._server_seq
        values = {
            "name": f"Test server {seq}",
            "code": f"test-{seq}",
            "server_url": f"http://test-{seq}.example.com",
            "max_instances": 10,
        }
        values.update(vals)
        return cls.Server.create(values)

    @classmethod
    def make_instances(cls, server, count, state="draft"):
        first = cls._instance_seq
        cls._instance_seq += count
        return cls.Instance.create(
            [
                {
                    "name": f"{server.code} client {n}",
                    "database_name": f"{server.code}_client_{n}",
                    "server_id": server.id,
                    "state": state,
                }
                for n in range(first, first + count)
            ]
        )
