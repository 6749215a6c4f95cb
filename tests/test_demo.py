"""
Tests for L{gateway.demo} and the tour's C{demo/gateway.yaml}.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from treq.testing import StubTreq
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from gateway.demo import DemoBackend, listen, orders, parsePorts
from gateway.model.config import loadConfig

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "demo" / "gateway.yaml"


class DemoBackendTests(SynchronousTestCase):
    """
    Tests for L{DemoBackend}.
    """

    def setUp(self) -> None:
        self.treq = StubTreq(DemoBackend("demo-9001"))

    def get(self, url: str):
        response = self.successResultOf(self.treq.get(url))
        return response, self.successResultOf(response.content())

    def getJSON(self, url: str):
        response = self.successResultOf(self.treq.get(url))
        return response, self.successResultOf(response.json())

    def test_user(self) -> None:
        """
        C{/users/ID} answers the user, saying which backend served it.
        """
        response, data = self.getJSON("http://demo/users/7")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("x-served-by"), ["demo-9001"])
        self.assertEqual(data["id"], "7")
        self.assertEqual(data["name"], "User 7")
        self.assertEqual(data["servedBy"], "demo-9001")

    def test_orders(self) -> None:
        """
        C{/orders?user=ID} answers that user's orders, the same every time.
        """
        response, data = self.getJSON("http://demo/orders?user=7")
        self.assertEqual(response.code, 200)
        self.assertEqual(data["user"], "7")
        self.assertEqual(data["orders"], orders("7"))
        self.assertEqual(data["servedBy"], "demo-9001")
        self.assertTrue(1 <= len(data["orders"]) <= 3)
        self.assertEqual([o["id"] for o in data["orders"]][0], "7-1")

    def test_ordersNeedUser(self) -> None:
        """
        C{/orders} without C{user} is a 400.
        """
        response, data = self.getJSON("http://demo/orders")
        self.assertEqual(response.code, 400)
        self.assertIn("user", data["error"])

    def test_health(self) -> None:
        """
        C{/health} answers C{ok}.
        """
        response, body = self.get("http://demo/health")
        self.assertEqual((response.code, body), (200, b"ok\n"))

    def test_notFound(self) -> None:
        """
        Other paths answer a JSON 404 that still names the backend.
        """
        for url in ["http://demo/", "http://demo/users", "http://demo/users/1/x"]:
            response, data = self.getJSON(url)
            self.assertEqual(response.code, 404, url)
            self.assertEqual(data["servedBy"], "demo-9001")


class ListenTests(SynchronousTestCase):
    """
    Tests for L{listen} and L{parsePorts}.
    """

    def test_listen(self) -> None:
        """
        One site per port, on the loopback interface, each named after its
        port.
        """
        reactor = MemoryReactor()
        listen([9001, 9002], reactor)
        self.assertEqual(
            [(port, interface) for (port, _, _, interface) in reactor.tcpServers],
            [(9001, "127.0.0.1"), (9002, "127.0.0.1")],
        )
        self.assertEqual(reactor.tcpServers[1][1].resource.name, "demo-9002")

    def test_parsePorts(self) -> None:
        """
        Ports are a comma-separated list; anything but port numbers is
        refused.
        """
        self.assertEqual(parsePorts("9001, 9002,9003"), [9001, 9002, 9003])
        for bad in ["", "9001,", "http", "70000", "0"]:
            self.assertRaises(argparse.ArgumentTypeError, parsePorts, bad)


class DemoConfigTests(SynchronousTestCase):
    """
    Tests for C{demo/gateway.yaml}.
    """

    def test_valid(self) -> None:
        """
        The tour's config is valid and wires the three demo backends into
        the users, orders and canary clusters, with the APIs and the canary
        routing of the tour.
        """
        config = loadConfig(str(DEMO_CONFIG))
        self.assertEqual(config.admin.token, "demo-token")
        self.assertEqual(config.proxy.listen, ("tcp:8080:interface=127.0.0.1",))
        self.assertEqual(
            [(s.name, s.addr, s.healthCheck.path) for s in config.seed["servers"]],
            [
                ("demo-1", "127.0.0.1:9001", "/health"),
                ("demo-2", "127.0.0.1:9002", "/health"),
                ("demo-3", "127.0.0.1:9003", "/health"),
            ],
        )
        clusters = {c.name: c.servers for c in config.seed["clusters"]}
        self.assertEqual(
            clusters,
            {
                "users": ("demo-1", "demo-2"),
                "orders": ("demo-3",),
                "users-canary": ("demo-3",),
            },
        )
        apis = {a.name: a for a in config.seed["apis"]}
        overview = apis["user-overview"]
        self.assertEqual(
            [(n.attrName, n.cluster, n.urlRewrite) for n in overview.nodes],
            [("user", "users", "/users/{id}"), ("orders", "orders", "/orders?user={id}")],
        )
        (routing,) = config.seed["routings"]
        self.assertEqual((routing.api, routing.cluster), ("users", "users-canary"))
