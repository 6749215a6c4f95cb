"""
The aggregation engine (L{gateway.pipeline.aggregate}) on a L{Clock}, with an
in-memory upstream client whose answers the tests give: node timeouts
from one timer per batch, synchronous answers and failures, and what each
backend is told.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Tuple

from fakes import ScriptedUpstreamClient
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone
from twisted.web.http_headers import Headers

from gateway.filters import FilterRegistry
from gateway.http.errors import UpstreamConnectError
from gateway.http.request import GatewayRequest
from gateway.http.site import LimitedSite
from gateway.pipeline.aggregate import Aggregator
from gateway.pipeline.resource import GatewayResource
from gateway.routing.snapshot import SnapshotManager
from gateway.store import StoreState

PEER = IPv4Address("TCP", "127.0.0.1", 40000)


class Answer:
    """
    An upstream response with a body given at once.
    """

    def __init__(self, code: int, body: bytes) -> None:
        self.code = code
        self.phrase = b"OK"
        self.headers = Headers()
        self.length = len(body)
        self._body = body

    def deliverBody(self, protocol: Any) -> None:
        protocol.makeConnection(StringTransport())
        protocol.dataReceived(self._body)
        protocol.connectionLost(Failure(ResponseDone()))


class WholeAnswer(Answer):
    """
    A response whose whole body came with its head, as
    L{gateway.http.client.HTTP11UpstreamClient} hands out small ones: its
    C{body} is read, its C{deliverBody} never called.
    """

    def __init__(self, code: int, body: bytes) -> None:
        Answer.__init__(self, code, body)
        self.body = body

    def deliverBody(self, protocol: Any) -> None:
        raise AssertionError("a whole body is not to be delivered")


class HeldAnswer(Answer):
    """
    A response whose body starts but does not end until stopped: stopping
    it cuts the connection, as the real client does.
    """

    def deliverBody(self, protocol: Any) -> None:
        producer = StringTransport()

        def stop() -> None:
            protocol.connectionLost(Failure(ConnectionError("aborted")))

        producer.stopProducing = stop  # type: ignore[method-assign]
        protocol.makeConnection(producer)
        protocol.dataReceived(self._body[:1])


class Client(ScriptedUpstreamClient):
    """
    An upstream client whose calls wait for the test, or fail at once for
    the servers in C{refuse}.
    """

    def __init__(self) -> None:
        self.calls: List[Tuple[str, bytes, Deferred, Optional[float]]] = []
        self.refuse: set = set()
        self.cancelled: List[bytes] = []

    def respond(self, backend, method, uri, headers, bodyProducer, timeout):
        if backend.name in self.refuse:
            return fail(UpstreamConnectError("refused"))
        d: Deferred = Deferred(lambda d: self.cancelled.append(uri))
        self.calls.append((backend.name, uri, d, timeout))
        return d

    def answer(self, uri: bytes, code: int = 200, value: Any = None, kind: Any = Answer) -> None:
        for _, called, d, _ in self.calls:
            if called == uri and not d.called:
                d.callback(kind(code, json.dumps(value).encode()))
                return
        raise AssertionError(f"no call to {uri!r} waits")

    def answerBytes(self, uri: bytes, body: bytes) -> None:
        for _, called, d, _ in self.calls:
            if called == uri and not d.called:
                d.callback(Answer(200, body))
                return
        raise AssertionError(f"no call to {uri!r} waits")


def node(attr: str, path: str, cluster: str = "c", **extra: Any) -> Dict[str, Any]:
    return dict({"cluster": cluster, "attrName": attr, "urlRewrite": path}, **extra)


class AggregationEngineTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.client = Client()

    def serve(self, *nodes: Dict[str, Any]) -> Tuple[StringTransport, Any]:
        manager = SnapshotManager(FilterRegistry({}), self.clock)
        manager.apply(
            StoreState(
                1,
                {
                    "servers": {
                        "s": {"name": "s", "addr": "127.0.0.1:1"},
                        "down": {"name": "down", "addr": "127.0.0.1:2"},
                    },
                    "clusters": {
                        "c": {"name": "c", "servers": ["s"]},
                        "d": {"name": "d", "servers": ["down"]},
                    },
                    "apis": {"agg": {"name": "agg", "urlPattern": "/agg", "nodes": list(nodes)}},
                    "routings": {},
                },
            )
        )
        self.manager = manager
        resource = GatewayResource(
            manager, self.client, self.clock, aggregator=Aggregator(self.client, self.clock)
        )
        self.site = LimitedSite(resource, reactor=self.clock, requestFactory=GatewayRequest)
        return self.again()

    def again(self) -> Tuple[StringTransport, Any]:
        """
        Ask the aggregation of the last L{serve} once more, on a new
        connection.
        """
        channel = self.site.buildProtocol(PEER)
        transport = StringTransport(peerAddress=PEER)
        channel.makeConnection(transport)
        channel.dataReceived(b"GET /agg HTTP/1.1\r\nHost: gw\r\n\r\n")
        return transport, channel

    def answerOf(self, transport: StringTransport) -> Tuple[int, Dict[str, str], Any]:
        head, _, body = transport.value().partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.decode().lower()] = value.strip().decode()
        return int(lines[0].split(b" ")[1]), headers, json.loads(body)

    def test_one_timer_per_batch(self) -> None:
        """
        The nodes of a batch share one timer, and the client is asked for
        no timer of its own: the batch's bounds the whole exchange.
        """
        transport, _ = self.serve(node("a", "/a"), node("b", "/b"), node("c", "/c"))
        self.assertEqual([c[3] for c in self.client.calls], [None, None, None])
        self.assertEqual(len(self.clock.getDelayedCalls()), 2)  # + the connection's
        for uri, value in ((b"/a", 1), (b"/b", 2), (b"/c", 3)):
            self.client.answer(uri, value=value)
        self.assertEqual(self.answerOf(transport)[2], {"a": 1, "b": 2, "c": 3})
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_answers_spliced_as_they_came(self) -> None:
        """
        A node's UTF-8 answer goes into the merged one byte for byte, but
        for the whitespace around it (it was decoded, to check it, but is
        not encoded again); one in UTF-16 or with a byte order mark is
        encoded again; a failed optional node is C{null}.  The whole is
        valid JSON, in the nodes' order.
        """
        self.client.refuse.add("down")
        transport, _ = self.serve(
            node("plain", "/plain"),
            node("wide", "/wide"),
            node("marked", "/marked"),
            node("gone", "/gone", cluster="d", required=False),
        )
        plain = '{"name": "caf\u00e9 \u2615",\n "n": [1, 2.50, null]}'.encode("utf-8")
        self.client.answerBytes(b"/plain", b" " + plain + b"\n")
        self.client.answerBytes(b"/wide", '{"w": "\u00e9"}'.encode("utf-16"))
        self.client.answerBytes(b"/marked", b"\xef\xbb\xbf[true]")
        raw = transport.value().partition(b"\r\n\r\n")[2]
        self.assertIn(b'"plain":' + plain + b",", raw)
        code, headers, body = self.answerOf(transport)
        self.assertEqual(code, 200)
        self.assertEqual(
            body,
            {
                "plain": {"name": "caf\u00e9 \u2615", "n": [1, 2.5, None]},
                "wide": {"w": "\u00e9"},
                "marked": [True],
                "gone": None,
            },
        )
        self.assertEqual(list(body), ["plain", "wide", "marked", "gone"])
        self.assertEqual(headers["x-gateway-partial"], "gone")
        self.assertEqual(int(headers["content-length"]), len(raw))

    def test_whole_bodies(self) -> None:
        """
        Answers whose whole body came with their head are taken as they
        are: merged when they are JSON of a 2xx answer, else the node
        failed (C{null} for an optional node), as a streamed body would.
        """
        transport, _ = self.serve(
            node("ok", "/ok"),
            node("streamed", "/streamed"),
            node("notJSON", "/notJSON", required=False),
            node("notFound", "/notFound", required=False),
            node("huge", "/huge", required=False),
        )
        self.client.answer(b"/ok", value={"a": [1, 2]}, kind=WholeAnswer)
        self.client.answer(b"/streamed", value=7)
        for uri, code, body in (
            (b"/notJSON", 200, b"<html>"),
            (b"/notFound", 404, b"{}"),
            (b"/huge", 200, b"[" + b"0," * (4 * 1024 * 1024) + b"0]"),
        ):
            for _, called, d, _ in self.client.calls:
                if called == uri:
                    d.callback(WholeAnswer(code, body))
        code, headers, body = self.answerOf(transport)
        self.assertEqual(
            (code, body),
            (
                200,
                {
                    "ok": {"a": [1, 2]},
                    "streamed": 7,
                    "notJSON": None,
                    "notFound": None,
                    "huge": None,
                },
            ),
        )
        self.assertEqual(headers["x-gateway-partial"], "notJSON,notFound,huge")
        backend = self.manager.backends["s"]
        self.assertEqual(backend.active, 0)

    def test_slowest_first(self) -> None:
        """
        The nodes of a batch are asked slowest first, by how long each took
        before (a timeout counts as what it waited); nodes never timed keep
        their order, after the others; the answer keeps the nodes' order.
        """
        transport, channel = self.serve(
            node("a", "/a"), node("b", "/b"), node("c", "/c", timeout=5), node("d", "/d")
        )
        self.assertEqual([c[1] for c in self.client.calls], [b"/a", b"/b", b"/c", b"/d"])
        self.clock.advance(0.01)
        self.client.answer(b"/a", value=1)
        self.clock.advance(0.02)
        self.client.answer(b"/b", value=2)
        channel.connectionLost(Failure(ConnectionError("gone")))  # d: not timed
        self.client.calls.clear()

        transport, channel = self.again()
        self.assertEqual([c[1] for c in self.client.calls], [b"/b", b"/a", b"/c", b"/d"])
        self.clock.advance(5)  # c times out
        self.assertEqual(self.answerOf(transport)[0], 504)
        self.client.calls.clear()

        transport, _ = self.again()
        self.assertEqual([c[1] for c in self.client.calls], [b"/c", b"/b", b"/a", b"/d"])
        for uri, value in ((b"/d", 4), (b"/c", 3), (b"/b", 2), (b"/a", 1)):
            self.client.answer(uri, value=value)
        self.assertEqual(list(self.answerOf(transport)[2]), ["a", "b", "c", "d"])

    def test_each_node_its_own_timeout(self) -> None:
        """
        An optional node times out after its own C{timeout}; a node with a
        longer one is still waited for, and answers.
        """
        transport, _ = self.serve(
            node("fast", "/fast", timeout=1, required=False), node("slow", "/slow", timeout=5)
        )
        self.clock.advance(1)
        self.assertEqual(self.client.cancelled, [b"/fast"])
        self.assertEqual(transport.value(), b"")
        self.clock.advance(3)
        self.client.answer(b"/slow", value="late")
        code, headers, body = self.answerOf(transport)
        self.assertEqual((code, body), (200, {"fast": None, "slow": "late"}))
        self.assertEqual(headers["x-gateway-partial"], "fast")
        backend = self.manager.backends["s"]
        self.assertEqual(backend.active, 0)

    def test_required_timeout(self) -> None:
        """
        A required node that times out fails the request with 504 and
        cancels its siblings; the timed-out server is judged, the
        cancelled one is not.
        """
        transport, _ = self.serve(node("a", "/a", timeout=2), node("b", "/b", timeout=9))
        self.clock.advance(2)
        code, _, body = self.answerOf(transport)
        self.assertEqual(code, 504)
        self.assertEqual(sorted(self.client.cancelled), [b"/a", b"/b"])
        self.assertEqual(self.manager.backends["s"].active, 0)

    def test_synchronous_failures_then_next_batch(self) -> None:
        """
        Optional nodes that fail at once (their server refuses) leave a
        batch done at once, and the next batch runs.
        """
        self.client.refuse.add("down")
        transport, _ = self.serve(
            node("x", "/x", cluster="d", required=False),
            node("y", "/y", cluster="d", required=False),
            node("z", "/z", batch=1),
        )
        self.assertEqual([c[1] for c in self.client.calls], [b"/z"])
        self.client.answer(b"/z", value={"ok": True})
        code, headers, body = self.answerOf(transport)
        self.assertEqual((code, body), (200, {"x": None, "y": None, "z": {"ok": True}}))
        self.assertEqual(headers["x-gateway-partial"], "x,y")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_required_failure_at_once(self) -> None:
        """
        A required node that fails at once fails the request before its
        later siblings are even asked.
        """
        self.client.refuse.add("down")
        transport, _ = self.serve(node("x", "/x", cluster="d"), node("y", "/y"))
        self.assertEqual(self.client.calls, [])
        self.assertEqual(self.answerOf(transport)[0], 502)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_client_gone(self) -> None:
        """
        A client that goes away cancels the calls in flight and the timer;
        nothing is written.
        """
        transport, channel = self.serve(node("a", "/a"), node("b", "/b"))
        self.client.answer(b"/a", value=1)
        channel.connectionLost(Failure(ConnectionError("gone")))
        self.assertEqual(self.client.cancelled, [b"/b"])
        self.assertEqual(transport.value(), b"")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        # The cancelled call is not held against its server.
        backend = self.manager.backends["s"]
        self.assertEqual((backend.active, backend.failures), (0, 0))

    def test_stopped_mid_body_not_judged(self) -> None:
        """
        A node whose body was being read when a required sibling failed is
        stopped, and its server is not blamed for it; the sibling's is.
        """
        transport, _ = self.serve(node("a", "/a"), node("b", "/b", cluster="d", timeout=2))
        self.client.answer(b"/a", value={"x": 1}, kind=HeldAnswer)
        self.assertEqual(self.manager.backends["s"].active, 1)
        self.clock.advance(2)
        self.assertEqual(self.answerOf(transport)[0], 504)
        reading, late = self.manager.backends["s"], self.manager.backends["down"]
        self.assertEqual((reading.active, reading.failures), (0, 0))
        self.assertEqual((late.active, late.failures), (0, 1))

    def test_timeout_judged(self) -> None:
        """
        A node that timed out counts as a failure of its server; the
        sibling stopped because of it does not.
        """
        self.serve(node("a", "/a", timeout=2), node("b", "/b", cluster="d", timeout=9))
        self.clock.advance(2)
        self.assertEqual(self.manager.backends["s"].failures, 1)
        self.assertEqual(self.manager.backends["down"].failures, 0)
        self.assertEqual(self.manager.backends["down"].active, 0)
