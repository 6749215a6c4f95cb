"""
Tests for L{gateway.process.sites}: what the admin's site logs.
"""

from __future__ import annotations

from typing import Any, List

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from gateway.model.limits import ADMIN_LIMITS
from gateway.process.sites import AdminSite


class _Answer(Resource):
    """
    Answers C{/missing} 404, anything else 200.
    """

    isLeaf = True

    def render(self, request: Any) -> bytes:
        if request.path == b"/missing":
            request.setResponseCode(404)
        return b"{}"


class _Lines:
    """
    A log file that keeps its lines.
    """

    def __init__(self) -> None:
        self.lines: List[str] = []

    def write(self, data: Any) -> None:
        self.lines.append(data.decode("utf-8") if isinstance(data, bytes) else data)

    def flush(self) -> None:
        pass


class AdminSiteLogTests(SynchronousTestCase):
    """
    The admin's site logs the requests that change something or fail, not
    the reads that succeed (the web UI's polls, Prometheus' scrapes).
    """

    def request(self, method: bytes, path: bytes) -> List[str]:
        site = AdminSite(_Answer(), limits=ADMIN_LIMITS, reactor=Clock())
        lines = _Lines()
        site.logFile = lines
        channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        channel.makeConnection(transport)
        channel.dataReceived(
            method + b" " + path + b" HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\n\r\n"
        )
        self.assertIn(b"HTTP/1.1 ", transport.value())
        channel.connectionLost(None)
        return lines.lines

    def test_readsQuiet(self) -> None:
        """
        A GET or HEAD answered below 400 writes no line.
        """
        self.assertEqual(self.request(b"GET", b"/metrics"), [])
        self.assertEqual(self.request(b"HEAD", b"/api/v1/apis"), [])

    def test_writesAndFailuresLogged(self) -> None:
        """
        A write, and a read that fails, write their line.
        """
        for method, path in ((b"PUT", b"/api/v1/apis/a"), (b"DELETE", b"/api/v1/apis/a")):
            lines = self.request(method, path)
            self.assertEqual(len(lines), 1, (method, lines))
            self.assertIn((method + b" " + path).decode(), lines[0])
        lines = self.request(b"GET", b"/missing")
        self.assertEqual(len(lines), 1)
        self.assertIn('"GET /missing HTTP/1.1" 404', lines[0])
