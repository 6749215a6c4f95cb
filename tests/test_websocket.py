"""
Tests for WebSocket pass-through, in memory: the API fields, the handshake
decision (L{gateway.pipeline.websocket}), the server channel's and the
upstream client's hand-over of their connections after a 101, the proxy
relaying a handshake end to end through its channel, the stats and
metrics.  (The real processes are in C{test_integration_websocket.py}, the
tunnel alone in C{test_tunnel.py}.)
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

from twisted.internet import defer, error
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gateway.admin.openapi import openAPIDocument
from gateway.filters import FilterRegistry
from gateway.http.client import HTTP11UpstreamClient
from gateway.http.errors import UpstreamBroken
from gateway.http.site import LimitedSite
from gateway.http.tunnel import Tunnel
from gateway.interfaces import (
    IFilter,
    IFilterFactory,
    ISwitchedResponse,
    IUpstreamClient,
    IUpstreamRequest,
    IUpstreamUpgrader,
)
from gateway.model.resources import parseResource
from gateway.model.schema import ValidationError
from gateway.pipeline.mirror import Mirror
from gateway.pipeline.resource import GatewayResource
from gateway.pipeline.websocket import WebSockets, acceptValue, isHandshake
from gateway.process.sites import GatewaySite
from gateway.routing.snapshot import SnapshotManager
from gateway.store import StoreState
from gateway.telemetry.metrics import metricsRegistry
from gateway.telemetry.stats import SnapshotStats, Stats, mergeSnapshots

PEER = IPv4Address("TCP", "127.0.0.1", 40000)
HOST = IPv4Address("TCP", "127.0.0.1", 8080)

#: RFC 6455 1.3's example key and the server's answer to it.
KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

HANDSHAKE = (
    b"GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n"
    b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: " + KEY + b"\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat\r\n\r\n"
)


class HalfClosingTransport(StringTransport):
    """
    A memory transport that can half-close, as TCP can.
    """

    writeClosed = False

    def loseWriteConnection(self) -> None:
        self.writeClosed = True


class Collect(Protocol):
    """
    A protocol that keeps what it is told.
    """

    def __init__(self) -> None:
        self.data: List[bytes] = []
        self.reason: Optional[Failure] = None
        self.eof = False

    def dataReceived(self, data: bytes) -> None:
        self.data.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.reason = reason


@implementer(IHalfCloseableProtocol)
class PausingCollect(Collect):
    """
    A protocol that pauses its transport as soon as it has it.
    """

    def connectionMade(self) -> None:
        self.transport.pauseProducing()


@implementer(IHalfCloseableProtocol)
class HalfCloseableCollect(Collect):
    def readConnectionLost(self) -> None:
        self.eof = True

    def writeConnectionLost(self) -> None:
        pass


# -- the model ---------------------------------------------------------------------


def _api(**fields: Any) -> Dict[str, Any]:
    api: Dict[str, Any] = {"name": "ws", "urlPattern": "/ws/*", "nodes": [{"cluster": "c"}]}
    api.update(fields)
    return api


class ModelTests(SynchronousTestCase):
    """
    The API fields of WebSocket pass-through.
    """

    def test_defaults(self) -> None:
        """
        An API relays no WebSocket by default; one that does closes idle
        tunnels after 300 seconds and has no cap.
        """
        api = parseResource("apis", _api())
        self.assertEqual(
            (api.websocket, api.websocketIdleTimeout, api.maxWebsockets), (False, 300.0, 0)
        )

    def test_fields(self) -> None:
        """
        The fields are read as given (an idle timeout of 0 means never).
        """
        api = parseResource("apis", _api(websocket=True, websocketIdleTimeout=0, maxWebsockets=50))
        self.assertEqual(
            (api.websocket, api.websocketIdleTimeout, api.maxWebsockets), (True, 0, 50)
        )

    def assertInvalid(self, field: str, **fields: Any) -> None:
        with self.assertRaises(ValidationError) as raised:
            parseResource("apis", _api(**fields))
        self.assertIn(field, [e.field for e in raised.exception.errors])

    def test_invalid(self) -> None:
        """
        Invalid values are refused, naming the field.
        """
        self.assertInvalid("websocket", websocket="yes")
        self.assertInvalid("websocketIdleTimeout", websocketIdleTimeout=-1)
        self.assertInvalid("websocketIdleTimeout", websocketIdleTimeout=10**9)
        self.assertInvalid("maxWebsockets", maxWebsockets=-1)
        self.assertInvalid("maxWebsockets", maxWebsockets=1.5)

    def test_oneNode(self) -> None:
        """
        A websocket API has one node: an aggregation cannot relay a tunnel.
        """
        nodes = [{"cluster": "a", "attrName": "a"}, {"cluster": "b", "attrName": "b"}]
        self.assertInvalid("websocket", websocket=True, nodes=nodes)
        parseResource("apis", _api(nodes=nodes))

    def test_noMock(self) -> None:
        """
        A websocket API relays to its node: it cannot be a mock response.
        """
        mock = {"status": 200, "body": "hi"}
        self.assertInvalid("websocket", websocket=True, nodes=[], response=mock)
        parseResource("apis", _api(nodes=[], response=mock))

    def test_method(self) -> None:
        """
        A websocket API takes GET or any method: a handshake is a GET.
        """
        self.assertInvalid("method", websocket=True, method="POST")
        parseResource("apis", _api(websocket=True, method="get"))
        parseResource("apis", _api(websocket=True, method="*"))

    def test_openAPI(self) -> None:
        """
        The OpenAPI document has the fields, and states the one-node rule.
        """
        document = openAPIDocument()
        api = document["components"]["schemas"]["API"]
        for name in ("websocket", "websocketIdleTimeout", "maxWebsockets"):
            self.assertIn(name, api["properties"])
        self.assertIn({"properties": {"websocket": {"enum": [False, None]}}}, _anyOfs(api))


def _anyOfs(schema: Dict[str, Any]) -> List[Any]:
    found: List[Any] = []
    for part in schema.get("allOf", []):
        found.extend(part.get("anyOf", []))
    return found


# -- the handshake decision -----------------------------------------------------------


class FakeRequest:
    def __init__(
        self,
        headers: Dict[bytes, List[bytes]],
        method: bytes = b"GET",
        version: bytes = b"HTTP/1.1",
    ) -> None:
        self.method = method
        self.clientproto = version
        self.requestHeaders = Headers(headers)


VALID = {
    b"Upgrade": [b"websocket"],
    b"Connection": [b"Upgrade"],
    b"Sec-WebSocket-Key": [KEY],
    b"Sec-WebSocket-Version": [b"13"],
}


class HandshakeTests(SynchronousTestCase):
    """
    L{isHandshake} tells a WebSocket opening handshake (RFC 6455 4.1).
    """

    def test_valid(self) -> None:
        """
        A GET with the upgrade headers, a 16-byte key and a version is one,
        whatever the case and the other tokens.
        """
        self.assertTrue(isHandshake(FakeRequest(VALID)))
        headers = dict(VALID)
        headers[b"Upgrade"] = [b"WebSocket"]
        headers[b"Connection"] = [b"keep-alive, UPGRADE"]
        headers[b"Content-Length"] = [b"0"]
        self.assertTrue(isHandshake(FakeRequest(headers)))

    def test_invalid(self) -> None:
        """
        Anything else is not: another method or version, a missing or
        other upgrade, no C{upgrade} in C{Connection}, a key that is not 16
        bytes of base64, a missing or repeated key or version, a body.
        """
        self.assertFalse(isHandshake(FakeRequest(VALID, method=b"POST")))
        self.assertFalse(isHandshake(FakeRequest(VALID, version=b"HTTP/1.0")))
        for name, values in [
            (b"Upgrade", None),
            (b"Upgrade", [b"h2c"]),
            (b"Connection", [b"keep-alive"]),
            (b"Connection", None),
            (b"Sec-WebSocket-Key", None),
            (b"Sec-WebSocket-Key", [b"c2hvcnQ="]),
            (b"Sec-WebSocket-Key", [b"not base64!!!!!!!!!!!!=="]),
            (b"Sec-WebSocket-Key", [KEY, KEY]),
            (b"Sec-WebSocket-Version", None),
            (b"Sec-WebSocket-Version", [b"13", b"8"]),
            (b"Content-Length", [b"5"]),
            (b"Transfer-Encoding", [b"chunked"]),
        ]:
            headers = dict(VALID)
            if values is None:
                del headers[name]
            else:
                headers[name] = values
            self.assertFalse(isHandshake(FakeRequest(headers)), (name, values))

    def test_accept(self) -> None:
        """
        The accept value is RFC 6455's.
        """
        self.assertEqual(acceptValue(KEY), ACCEPT)


# -- the server channel ------------------------------------------------------------


class Switcher(Resource):
    """
    Answers every request 101 by switching its connection to a protocol.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.protocols: List[Collect] = []
        self.requests: List[Any] = []

    def render(self, request: Any) -> Any:
        self.requests.append(request)
        request.setResponseCode(101)
        request.responseHeaders.setRawHeaders(b"upgrade", [b"websocket"])
        request.responseHeaders.setRawHeaders(b"connection", [b"Upgrade"])
        protocol = HalfCloseableCollect()
        self.protocols.append(protocol)
        request.channel.switchProtocols(request, protocol)
        return NOT_DONE_YET


class ChannelTests(SynchronousTestCase):
    """
    L{gateway.http.channel.GatewayHTTPChannel.switchProtocols} answers 101
    and hands the connection over.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.resource = Switcher()
        self.site = LimitedSite(self.resource, reactor=self.clock)
        self.channel = self.site.buildProtocol(PEER)
        self.transport = HalfClosingTransport(hostAddress=HOST, peerAddress=PEER)
        self.channel.makeConnection(self.transport)

    def test_head(self) -> None:
        """
        The 101 head is the request's status and headers, without body
        framing; the request is finished.
        """
        self.channel.dataReceived(HANDSHAKE)
        head = self.transport.value()
        self.assertTrue(head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n"), head)
        self.assertTrue(head.endswith(b"\r\n\r\n"))
        self.assertIn(b"\r\nUpgrade: websocket\r\n", head)
        self.assertNotIn(b"Transfer-Encoding", head)
        self.assertNotIn(b"Content-Length", head)
        self.assertTrue(self.resource.requests[0].finished)
        self.assertEqual(self.channel.requests, [])

    def test_handedOver(self) -> None:
        """
        The protocol gets the transport (no longer the channel's producer),
        what followed the request head, and what comes next, unparsed.
        """
        self.channel.dataReceived(HANDSHAKE + b"\x81\x02hi")
        protocol = self.resource.protocols[0]
        self.assertIs(protocol.transport, self.transport)
        self.assertIsNone(self.transport.producer)
        self.channel.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
        self.assertEqual(b"".join(protocol.data), b"\x81\x02hiGET / HTTP/1.1\r\n\r\n")
        self.assertEqual(len(self.resource.requests), 1)

    def test_noHTTPTimeouts(self) -> None:
        """
        The channel's timeouts no longer apply: a quiet connection stays.
        """
        self.channel.dataReceived(HANDSHAKE)
        self.clock.advance(10_000)
        self.assertFalse(self.transport.disconnecting)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_endsForwarded(self) -> None:
        """
        The client's half-close and the connection's end go to the
        protocol.
        """
        self.channel.dataReceived(HANDSHAKE)
        protocol = self.resource.protocols[0]
        self.assertTrue(IHalfCloseableProtocol.providedBy(self.channel))
        self.channel.readConnectionLost()
        self.assertTrue(protocol.eof)
        self.channel.connectionLost(Failure(error.ConnectionDone()))
        self.assertIsNotNone(protocol.reason)
        self.channel.dataReceived(b"late")
        self.assertEqual(protocol.data, [])

    def test_pausingLeftToProtocol(self) -> None:
        """
        A connection the channel had paused (too much pipelined while the
        handshake was answered) is the protocol's to pause or resume: what
        the protocol decides when it gets it holds, and it gets what was
        buffered.
        """
        held: List[Any] = []

        class Later(Resource):
            isLeaf = True

            def render(self, request: Any) -> Any:
                held.append(request)
                return NOT_DONE_YET

        site = LimitedSite(Later(), reactor=self.clock)
        channel = site.buildProtocol(PEER)
        transport = StringTransport(hostAddress=HOST, peerAddress=PEER)
        channel.makeConnection(transport)
        channel.dataReceived(HANDSHAKE)
        early = b"x" * 20_000
        channel.dataReceived(early)
        self.assertEqual(transport.producerState, "paused")
        [request] = held
        request.setResponseCode(101)
        protocol = PausingCollect()
        channel.switchProtocols(request, protocol)
        self.assertEqual(transport.producerState, "paused")
        self.assertEqual(b"".join(protocol.data), early)

    def test_halfCloseOnlyOnceSwitched(self) -> None:
        """
        A channel that did not switch does not claim to take half-closes
        (the transport then ends the connection, as before).
        """
        self.assertFalse(IHalfCloseableProtocol.providedBy(self.channel))

    def test_refusedMidBody(self) -> None:
        """
        A request whose body is still arriving cannot switch.
        """
        channel = self.channel
        seen: List[Exception] = []

        class Early(Resource):
            isLeaf = True

            def render(self, request: Any) -> Any:
                try:
                    request.channel.switchProtocols(request, Collect())
                except RuntimeError as e:
                    seen.append(e)
                request.setResponseCode(400)
                return b"no"

        site = GatewaySite(Early(), reactor=self.clock)
        channel = site.buildProtocol(PEER)
        channel.makeConnection(StringTransport(hostAddress=HOST, peerAddress=PEER))
        channel.dataReceived(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nab")
        self.assertEqual(len(seen), 1)


# -- the upstream client -------------------------------------------------------------


class FakeBackend:
    host = "127.0.0.1"
    port = 8080


class ClientTests(SynchronousTestCase):
    """
    L{HTTP11UpstreamClient.upgrade}: a 101 hands the connection over.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.client = HTTP11UpstreamClient(self.reactor)
        self.answers: List[Any] = []
        self.failures: List[Failure] = []

    def upgrade(self) -> Tuple[Any, StringTransport]:
        headers = Headers({b"Upgrade": [b"websocket"], b"Connection": [b"Upgrade"]})
        self.client.upgrade(
            FakeBackend(), b"GET", b"/ws", headers, 5.0, self.answers.append, self.failures.append
        )
        factory = self.reactor.tcpClients[-1][2]
        conn = factory.buildProtocol(None)
        transport = HalfClosingTransport()
        conn.makeConnection(transport)
        return conn, transport

    def test_interface(self) -> None:
        """
        The client upgrades as well as it sends.
        """
        self.assertTrue(verifyObject(IUpstreamUpgrader, self.client))
        self.assertTrue(verifyObject(IUpstreamClient, self.client))

    def test_requestSent(self) -> None:
        """
        The upgrade request goes out with its upgrade headers and no body.
        """
        conn, transport = self.upgrade()
        sent = transport.value()
        self.assertTrue(sent.startswith(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"), sent)
        self.assertIn(b"Upgrade: websocket\r\n", sent)
        self.assertIn(b"Connection: Upgrade\r\n", sent)
        self.assertNotIn(b"Content-Length", sent)

    def test_switched(self) -> None:
        """
        A 101 is an L{ISwitchedResponse}; the connection waits, paused,
        holding what followed the head, until C{switchProtocols} hands it
        to a protocol, which then gets everything, its end included.  It
        never goes back to the pool.
        """
        conn, transport = self.upgrade()
        conn.dataReceived(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Accept: x\r\n\r\n\x81\x01a"
        )
        [response] = self.answers
        self.assertTrue(verifyObject(ISwitchedResponse, response))
        self.assertEqual((response.code, response.phrase), (101, b"Switching Protocols"))
        self.assertEqual(response.headers.getRawHeaders(b"sec-websocket-accept"), [b"x"])
        self.assertEqual(transport.producerState, "paused")
        conn.dataReceived(b"\x81\x01b")
        protocol = HalfCloseableCollect()
        response.switchProtocols(protocol)
        self.assertIs(protocol.transport, transport)
        self.assertEqual(protocol.data, [b"\x81\x01a", b"\x81\x01b"])
        self.assertEqual(transport.producerState, "producing")
        conn.dataReceived(b"more")
        self.assertEqual(protocol.data[-1], b"more")
        conn.connectionLost(Failure(error.ConnectionDone()))
        self.assertIsNotNone(protocol.reason)
        self.assertEqual(sum(len(p.idle) for p in self.client._pools.values()), 0)
        self.assertRaises(RuntimeError, response.switchProtocols, Collect())

    def test_pausingLeftToProtocol(self) -> None:
        """
        The connection, paused while it waited, is the protocol's to pause
        or resume once it has it.
        """
        conn, transport = self.upgrade()
        conn.dataReceived(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
        self.answers[0].switchProtocols(PausingCollect())
        self.assertEqual(transport.producerState, "paused")

    def test_endedBeforeTaken(self) -> None:
        """
        A connection that ended before it was taken tells its protocol at
        once.
        """
        conn, transport = self.upgrade()
        conn.dataReceived(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
        conn.connectionLost(Failure(error.ConnectionDone()))
        protocol = Collect()
        self.answers[0].switchProtocols(protocol)
        self.assertIsNotNone(protocol.reason)

    def test_dropped(self) -> None:
        """
        A 101 nobody takes (C{deliverBody}) closes its connection; the
        protocol sees an empty body.
        """
        conn, transport = self.upgrade()
        conn.dataReceived(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
        protocol = Collect()
        self.answers[0].deliverBody(protocol)
        self.assertTrue(transport.disconnected)
        assert protocol.reason is not None
        protocol.reason.trap(ResponseDone)

    def test_otherAnswersPooled(self) -> None:
        """
        An upgrade answered otherwise is an ordinary response, its
        connection pooled as usual.
        """
        conn, transport = self.upgrade()
        conn.dataReceived(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno")
        self.assertEqual(self.answers[0].code, 403)
        self.assertEqual(sum(len(p.idle) for p in self.client._pools.values()), 1)

    def test_sendRefuses101(self) -> None:
        """
        A 101 to a request that did not ask to upgrade is still refused.
        """
        self.client.send(
            FakeBackend(), b"GET", b"/", Headers(), None, 5.0, self.answers.append,
            self.failures.append,
        )  # fmt: skip
        conn = self.reactor.tcpClients[-1][2].buildProtocol(None)
        conn.makeConnection(StringTransport())
        conn.dataReceived(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
        self.assertEqual(self.answers, [])
        self.failures[0].trap(UpstreamBroken)


# -- the proxy, end to end in memory -------------------------------------------------


@implementer(IUpstreamRequest)
class _Sent:
    def __init__(self) -> None:
        self.finished = False
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


@implementer(ISwitchedResponse)
class FakeSwitched:
    """
    A backend's 101, whose connection is a memory transport.
    """

    code = 101
    phrase = b"Switching Protocols"

    def __init__(self, headers: Headers) -> None:
        self.headers = headers
        self.transport = HalfClosingTransport()
        self.protocol: Optional[Any] = None
        self.dropped = False

    def switchProtocols(self, protocol: Any) -> None:
        self.protocol = protocol
        protocol.makeConnection(self.transport)

    def deliverBody(self, protocol: Any) -> None:
        self.dropped = True


class FakeAnswer:
    def __init__(self, code: int, body: bytes = b"") -> None:
        self.code = code
        self.phrase = b"Whatever"
        self.headers = Headers({b"content-length": [b"%d" % (len(body),)]})
        self.length = len(body)
        self.body = body

    def deliverBody(self, protocol: Any) -> None:
        pass


@implementer(IUpstreamClient, IUpstreamUpgrader)
class FakeUpgrader:
    """
    Records what the proxy sends; the test answers.
    """

    def __init__(self) -> None:
        self.calls: List[
            Tuple[str, bytes, Headers, Callable[..., Any], Callable[..., Any], Any]
        ] = []

    def send(
        self, backend: Any, method: bytes, uri: bytes, headers: Headers, bodyProducer: Any,
        timeout: Any, onResponse: Any, onFailure: Any, *args: Any,
    ) -> _Sent:  # fmt: skip
        self.calls.append(("send", uri, headers, onResponse, onFailure, args))
        return _Sent()

    def upgrade(
        self, backend: Any, method: bytes, uri: bytes, headers: Headers, timeout: Any,
        onResponse: Any, onFailure: Any, *args: Any,
    ) -> _Sent:  # fmt: skip
        self.calls.append(("upgrade", uri, headers, onResponse, onFailure, args))
        return _Sent()

    def close(self) -> defer.Deferred:
        return defer.succeed(None)

    def answer(self, response: Any, index: int = -1) -> None:
        _, _, _, onResponse, _, args = self.calls[index]
        onResponse(response, *args)


def switchedHeaders(accept: bytes = ACCEPT) -> Headers:
    return Headers(
        {
            b"Upgrade": [b"websocket"],
            b"Connection": [b"Upgrade"],
            b"Sec-WebSocket-Accept": [accept],
            b"Sec-WebSocket-Protocol": [b"chat"],
        }
    )


class ProxyTestCase(SynchronousTestCase):
    """
    A proxy with a L{FakeUpgrader} and L{WebSockets}, over an API C{/chat}
    with C{websocket} and a plain one, served by its real channel on
    memory transports.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.client = FakeUpgrader()
        self.stats = Stats(self.clock)
        self.manager = SnapshotManager(FilterRegistry({}), self.clock)
        self.stats.follow(self.manager)
        self.configure()
        self.websockets = WebSockets(self.client, self.clock, stats=self.stats, closeTimeout=3.0)
        self.resource = GatewayResource(
            self.manager, self.client, self.clock, stats=self.stats, websockets=self.websockets
        )
        self.site = GatewaySite(self.resource, reactor=self.clock)

    def configure(self, routings: Optional[Dict[str, Any]] = None, **fields: Any) -> None:
        ws: Dict[str, Any] = {
            "name": "ws",
            "urlPattern": "/chat",
            "nodes": [{"cluster": "c"}],
            "websocket": True,
            "websocketIdleTimeout": 60,
        }
        ws.update(fields)
        revision = (self.manager.snapshot.revision + 1) if self.manager.snapshot else 1
        self.manager.apply(
            StoreState(
                revision,
                {
                    "servers": {"b": {"name": "b", "addr": "127.0.0.1:9"}},
                    "clusters": {"c": {"name": "c", "servers": ["b"]}},
                    "apis": {
                        "ws": ws,
                        "plain": {
                            "name": "plain",
                            "urlPattern": "/plain",
                            "nodes": [{"cluster": "c"}],
                        },
                    },
                    "routings": routings or {},
                },
            )
        )

    def connect(self) -> Tuple[Any, HalfClosingTransport]:
        channel = self.site.buildProtocol(PEER)
        transport = HalfClosingTransport(hostAddress=HOST, peerAddress=PEER)
        channel.makeConnection(transport)
        return channel, transport

    def handshake(self, path: bytes = b"/chat") -> Tuple[Any, HalfClosingTransport]:
        channel, transport = self.connect()
        channel.dataReceived(HANDSHAKE.replace(b"/chat", path))
        return channel, transport

    def switch(self) -> Tuple[Any, HalfClosingTransport, FakeSwitched]:
        channel, transport = self.handshake()
        upstream = FakeSwitched(switchedHeaders())
        self.client.answer(upstream)
        return channel, transport, upstream


class ProxyTests(ProxyTestCase):
    """
    The proxy relays a WebSocket handshake, then the tunnel, through its
    real channel on memory transports.
    """

    def test_upgradeHeadersSent(self) -> None:
        """
        A handshake to a websocket API goes upstream through the upgrading
        client, with C{Upgrade: websocket} and C{Connection: Upgrade} (and
        nothing else the client's C{Connection} named), its key and
        subprotocols.
        """
        self.handshake()
        [(kind, uri, headers, _, _, _)] = self.client.calls
        self.assertEqual((kind, uri), ("upgrade", b"/chat"))
        self.assertEqual(headers.getRawHeaders(b"upgrade"), [b"websocket"])
        self.assertEqual(headers.getRawHeaders(b"connection"), [b"Upgrade"])
        self.assertEqual(headers.getRawHeaders(b"sec-websocket-key"), [KEY])
        self.assertEqual(headers.getRawHeaders(b"sec-websocket-protocol"), [b"chat"])
        self.assertFalse(headers.hasHeader(b"keep-alive"))

    def test_strippedWithoutWebsocket(self) -> None:
        """
        On an API without C{websocket} the handshake is a plain request:
        sent with C{send}, its upgrade headers stripped.
        """
        self.handshake(b"/plain")
        [(kind, _, headers, _, _, _)] = self.client.calls
        self.assertEqual(kind, "send")
        self.assertFalse(headers.hasHeader(b"upgrade"))
        self.assertFalse(headers.hasHeader(b"connection"))

    def test_strippedWhenNoHandshake(self) -> None:
        """
        On a websocket API, a request that is no valid handshake is a plain
        request too.
        """
        channel, _ = self.connect()
        channel.dataReceived(
            b"GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        )
        [(kind, _, headers, _, _, _)] = self.client.calls
        self.assertEqual(kind, "send")
        self.assertFalse(headers.hasHeader(b"upgrade"))

    def test_stripsWithoutRegistry(self) -> None:
        """
        A proxy built without L{WebSockets} strips upgrades on every API.
        """
        self.resource = GatewayResource(self.manager, self.client, self.clock)
        self.site = GatewaySite(self.resource, reactor=self.clock)
        self.handshake()
        self.assertEqual(self.client.calls[0][0], "send")

    def test_switched(self) -> None:
        """
        The backend's 101 goes back with its WebSocket headers and the
        upgrade ones, then bytes flow both ways, counted per API; the
        handshake is counted as an answer with status 101.
        """
        channel, transport, upstream = self.switch()
        head = transport.value()
        self.assertTrue(head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n"), head)
        for line in (
            b"Upgrade: websocket",
            b"Connection: Upgrade",
            b"Sec-Websocket-Accept: " + ACCEPT,
            b"Sec-Websocket-Protocol: chat",
        ):
            self.assertIn(b"\r\n" + line + b"\r\n", head)
        transport.clear()
        channel.dataReceived(b"\x81\x82abcdef")
        self.assertEqual(upstream.transport.value(), b"\x81\x82abcdef")
        upstream.protocol.dataReceived(b"\x81\x02hi")
        self.assertEqual(transport.value(), b"\x81\x02hi")
        counters = self.stats.websockets["ws"]
        self.assertEqual(
            counters.toJSON(), {"open": 1, "opened": 1, "overCap": 0, "bytesUp": 8, "bytesDown": 4}
        )
        self.assertEqual(self.stats.apis["ws"].requests, 1)
        self.assertEqual(self.resource.inFlight, 0)
        self.assertEqual(self.manager.backends["b"].active, 1)

    def test_closed(self) -> None:
        """
        When the backend closes, the client's connection is closed; once
        both are gone the tunnel is no longer counted open, nor its server
        busy.
        """
        channel, transport, upstream = self.switch()
        upstream.protocol.connectionLost(Failure(error.ConnectionDone()))
        self.assertTrue(transport.disconnecting)
        channel.connectionLost(Failure(error.ConnectionDone()))
        self.assertEqual(self.stats.websockets["ws"].open, 0)
        self.assertEqual(self.websockets.tunnels, set())
        self.assertEqual(self.manager.backends["b"].active, 0)

    def test_idleTimeout(self) -> None:
        """
        The API's C{websocketIdleTimeout} closes a quiet tunnel.
        """
        channel, transport, upstream = self.switch()
        self.clock.advance(59)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(2)
        self.assertTrue(transport.disconnecting)
        self.assertTrue(upstream.transport.disconnecting)

    def test_badAccept(self) -> None:
        """
        A 101 whose accept value does not answer the key is refused: 502,
        the backend's connection dropped, counted as the server's failure.
        """
        channel, transport = self.handshake()
        upstream = FakeSwitched(switchedHeaders(b"wrong"))
        self.client.answer(upstream)
        self.assertTrue(upstream.dropped)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 502 "), transport.value())
        self.assertIn(b"Sec-WebSocket-Accept", transport.value())
        self.assertEqual(self.manager.backends["b"].failures, 1)

    def test_otherProtocol(self) -> None:
        """
        A 101 to another protocol than websocket is refused (502).
        """
        channel, transport = self.handshake()
        headers = switchedHeaders()
        headers.setRawHeaders(b"upgrade", [b"h2c"])
        self.client.answer(FakeSwitched(headers))
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 502 "), transport.value())

    def test_refusedHandshakeRelayed(self) -> None:
        """
        A backend that refuses the handshake (any status but 101) is
        relayed as a plain answer, and the connection stays HTTP.
        """
        channel, transport = self.handshake()
        self.client.answer(FakeAnswer(403, b"no"))
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 403 "), transport.value())
        self.assertEqual(self.stats.websockets["ws"].opened, 0)

    def test_cap(self) -> None:
        """
        With C{maxWebsockets} tunnels open or being opened, a handshake gets
        503 (with C{Retry-After}) without reaching the backend, and is
        counted; a place comes back when a handshake is refused upstream or
        a tunnel ends.
        """
        self.configure(maxWebsockets=2)
        first = self.switch()
        self.handshake()  # being opened
        _, transport = self.handshake()
        answer = transport.value()
        self.assertTrue(answer.startswith(b"HTTP/1.1 503 "), answer)
        self.assertIn(b"Retry-After: 1", answer)
        self.assertIn(b"maxWebsockets", answer)
        self.assertEqual(len(self.client.calls), 2)
        self.assertEqual(self.stats.websockets["ws"].overCap, 1)
        self.assertEqual(self.stats.apis["ws"].rejects["other"], 1)
        # The second handshake is refused upstream: its place comes back.
        self.client.answer(FakeAnswer(404), 1)
        self.handshake()
        self.assertEqual(len(self.client.calls), 3)
        _, transport = self.handshake()
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 503 "))
        # The first tunnel ends: its place comes back.
        channel, _, upstream = first
        upstream.protocol.connectionLost(Failure(error.ConnectionDone()))
        channel.connectionLost(Failure(error.ConnectionDone()))
        self.client.answer(FakeAnswer(404), 2)
        self.handshake()
        self.assertEqual(len(self.client.calls), 4)

    def test_clientGoneBeforeSwitch(self) -> None:
        """
        A client that left before the 101 gives its place back, and the
        backend's connection is dropped.
        """
        self.configure(maxWebsockets=1)
        channel, transport = self.handshake()
        channel.connectionLost(Failure(error.ConnectionLost()))
        upstream = FakeSwitched(switchedHeaders())
        self.client.answer(upstream)
        self.assertTrue(upstream.dropped)
        self.handshake()
        self.assertEqual(len(self.client.calls), 2)

    def test_drain(self) -> None:
        """
        Draining refuses new handshakes (503) and lets tunnels run for the
        drain timeout, then closes them; the drain ends once they are gone,
        counting them.
        """
        channel, transport, upstream = self.switch()
        drained = self.resource.drain(10.0)
        self.assertNoResult(drained)
        _, refused = self.handshake()
        self.assertTrue(refused.value().startswith(b"HTTP/1.1 503 "), refused.value())
        self.clock.advance(9.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.2)
        self.assertTrue(transport.disconnecting)
        self.assertTrue(upstream.transport.disconnecting)
        self.assertNoResult(drained)
        channel.connectionLost(Failure(error.ConnectionDone()))
        upstream.protocol.connectionLost(Failure(error.ConnectionDone()))
        self.assertEqual(self.successResultOf(drained), 0)
        self.assertEqual(self.successResultOf(self.websockets.whenDrained()), 1)

    def test_drainWithoutTunnels(self) -> None:
        """
        Tunnels that end within the drain timeout are not counted as
        closed, and the drain ends with them.
        """
        channel, transport, upstream = self.switch()
        drained = self.resource.drain(10.0)
        channel.connectionLost(Failure(error.ConnectionDone()))
        self.assertNoResult(drained)
        upstream.protocol.connectionLost(Failure(error.ConnectionDone()))
        self.assertEqual(self.successResultOf(drained), 0)
        self.assertEqual(self.websockets.closedByDrain, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_drainWaitsForHandshakes(self) -> None:
        """
        A handshake in flight when the drain begins finishes; its tunnel
        then runs until the drain timeout like the others (the drain waits
        for it), or is closed at once when it switched after it.
        """
        _, early = self.handshake()
        _, late = self.handshake()
        drained = self.resource.drain(5.0)
        self.client.answer(FakeSwitched(switchedHeaders()), 0)
        self.assertTrue(early.value().startswith(b"HTTP/1.1 101 "))
        self.assertNoResult(drained)
        self.clock.advance(5.1)
        self.assertTrue(early.disconnecting)
        upstream = FakeSwitched(switchedHeaders())
        self.client.answer(upstream, 1)
        self.assertTrue(late.value().startswith(b"HTTP/1.1 101 "))
        self.assertTrue(late.disconnecting)
        self.assertTrue(upstream.transport.disconnecting)
        self.assertEqual(self.websockets.closedByDrain, 2)
        self.assertNoResult(drained)

    def test_notMirrored(self) -> None:
        """
        A mirror routing copies plain requests, never a WebSocket handshake.
        """
        copy = {"name": "copy", "cluster": "c", "strategy": "mirror", "trafficRate": 100}
        self.configure(routings={"copy": copy})
        self.resource = GatewayResource(
            self.manager,
            self.client,
            self.clock,
            mirror=Mirror(self.client, self.clock),
            websockets=self.websockets,
        )
        self.site = GatewaySite(self.resource, reactor=self.clock)
        self.handshake()
        self.assertEqual([c[0] for c in self.client.calls], ["upgrade"])
        self.handshake(b"/plain")
        self.assertEqual([c[0] for c in self.client.calls], ["upgrade", "send", "send"])

    def test_rateLimitedHandshake(self) -> None:
        """
        The API's filters run on the handshake: over its rate limit, the
        handshake gets 429 and never reaches the backend.
        """
        self.configure(rateLimit={"rate": 1, "burst": 1})
        self.switch()
        _, transport = self.handshake()
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 429 "), transport.value())
        self.assertEqual(len(self.client.calls), 1)


@implementer(IFilter)
class Veto:
    """
    A global filter that records the statuses its C{after} hook sees, and
    turns a 101 into a 403 when told to.
    """

    name = "veto"

    def __init__(self) -> None:
        self.seen: List[int] = []
        self.refuse = False

    def before(self, context: Any) -> None:
        return None

    def after(self, context: Any, response: Any) -> None:
        self.seen.append(response.code)
        if self.refuse and response.code == 101:
            response.code = 403

    def error(self, context: Any, failure: Any) -> None:
        pass


@implementer(IFilterFactory)
class VetoFactory:
    name = "veto"
    description = "records statuses, refuses 101s when told to"

    def __init__(self) -> None:
        self.filter = Veto()

    def makeFilter(self, config: Any, reactor: Any) -> Veto:
        return self.filter


class FilterTests(ProxyTestCase):
    """
    Filters see the 101 in their C{after} hooks.
    """

    def setUp(self) -> None:
        super().setUp()
        self.veto = VetoFactory()
        self.manager = SnapshotManager(
            FilterRegistry({"veto": self.veto}), self.clock, globalFilters=["veto"]
        )
        self.configure()
        self.resource = GatewayResource(
            self.manager, self.client, self.clock, stats=self.stats, websockets=self.websockets
        )
        self.site = GatewaySite(self.resource, reactor=self.clock)

    def test_afterSees101(self) -> None:
        """
        The C{after} hooks see the 101 the client gets.
        """
        self.switch()
        self.assertEqual(self.veto.filter.seen, [101])

    def test_filterRefuses(self) -> None:
        """
        A filter that turns the 101 into another status answers that, with
        no upgrade headers and no body; the backend's connection is dropped
        and no tunnel opens.
        """
        self.veto.filter.refuse = True
        channel, transport = self.handshake()
        upstream = FakeSwitched(switchedHeaders())
        self.client.answer(upstream)
        answer = transport.value()
        self.assertTrue(answer.startswith(b"HTTP/1.1 403 "), answer)
        self.assertNotIn(b"Upgrade", answer)
        self.assertNotIn(b"Sec-Websocket-Accept", answer)
        self.assertIn(b"Content-Length: 0\r\n", answer)
        self.assertTrue(upstream.dropped)
        self.assertEqual(self.websockets.tunnels, set())
        # Its place is back.
        self.assertEqual(self.websockets._held, {})


# -- stats and metrics ---------------------------------------------------------------


class StatsTests(SynchronousTestCase):
    """
    The WebSocket counters in the stats, their sum over workers, and
    C{/metrics}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.stats = Stats(self.clock)
        self.stats.prune(["ws", "plain"], [])
        self.stats.pruneWebSockets(["ws"])
        counters = self.stats.websocketCounters("ws")
        counters.open, counters.opened, counters.overCap = 2, 5, 1
        counters.bytesUp, counters.bytesDown = 100, 2000

    def test_snapshot(self) -> None:
        """
        An API with C{websocket} has its counters under C{websocket}; others
        have none.
        """
        snapshot = self.stats.snapshot()
        self.assertEqual(
            snapshot["apis"]["ws"]["websocket"],
            {"open": 2, "opened": 5, "overCap": 1, "bytesUp": 100, "bytesDown": 2000},
        )
        self.assertNotIn("websocket", snapshot["apis"]["plain"])

    def test_unconfigured(self) -> None:
        """
        Counters asked for an API that is not configured are shown nowhere.
        """
        self.stats.websocketCounters("gone").open += 1
        self.assertNotIn("gone", self.stats.websockets)

    def test_merged(self) -> None:
        """
        The workers' counters are summed.
        """
        snapshot = self.stats.snapshot()
        merged = mergeSnapshots([snapshot, snapshot])
        self.assertEqual(
            merged["apis"]["ws"]["websocket"],
            {"open": 4, "opened": 10, "overCap": 2, "bytesUp": 200, "bytesDown": 4000},
        )
        self.assertNotIn("websocket", merged["apis"]["plain"])
        summed = SnapshotStats(lambda: merged, self.clock)
        self.assertEqual(summed.websockets["ws"].bytesDown, 4000)

    def test_metrics(self) -> None:
        """
        C{/metrics} has the open tunnels, those opened, the handshakes over
        the cap and the bytes each way, per API.
        """
        registry = metricsRegistry(self.stats, None, None, self.clock)
        value = registry.get_sample_value
        self.assertEqual(value("gateway_websocket_open_tunnels", {"api": "ws"}), 2)
        self.assertEqual(value("gateway_websocket_tunnels_opened_total", {"api": "ws"}), 5)
        self.assertEqual(value("gateway_websocket_over_cap_total", {"api": "ws"}), 1)
        self.assertEqual(
            value("gateway_websocket_bytes_total", {"api": "ws", "direction": "up"}), 100
        )
        self.assertEqual(
            value("gateway_websocket_bytes_total", {"api": "ws", "direction": "down"}), 2000
        )
        self.assertIsNone(value("gateway_websocket_open_tunnels", {"api": "plain"}))

    def test_tunnelMeter(self) -> None:
        """
        The counters are the meter tunnels count their bytes in.
        """
        tunnel = Tunnel(self.clock, meter=self.stats.websocketCounters("ws"))
        tunnel.client.makeConnection(StringTransport())
        tunnel.server.makeConnection(StringTransport())
        tunnel.client.dataReceived(b"abc")
        self.assertEqual(self.stats.websockets["ws"].bytesUp, 103)


class ReadmeTests(SynchronousTestCase):
    """
    The README's WebSocket example.
    """

    def test_example(self) -> None:
        """
        The API of the README's WebSocket section is valid as it is.
        """
        import yaml
        from test_readme import codeBlockAfter

        [api] = yaml.safe_load(codeBlockAfter("## WebSocket", "yaml"))["apis"]
        parsed = parseResource("apis", api)
        self.assertEqual(
            (parsed.websocket, parsed.websocketIdleTimeout, parsed.maxWebsockets),
            (True, 300, 10000),
        )
