"""
The engine's HTTP/2 server connection (L{gateway.http.h2connection}), its
streams and the choice between HTTP/1.1 and HTTP/2
(L{gateway.http.negotiate}), in memory: an C{h2} client state machine over
a L{StringTransport}, on a L{Clock}.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Tuple

from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from h2peer import HOST, PEER, H2Peer
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    ExtensionFrame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
)
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from gateway.http.bodystream import HIGH_WATER
from gateway.http.channel import GatewayHTTPChannel
from gateway.http.h2connection import H2ServerConnection
from gateway.http.h2guard import PREFACE, FrameBudget, FrameGuard
from gateway.http.negotiate import ProtocolChoice, replaceProtocol
from gateway.http.request import GatewayRequest
from gateway.http.site import LimitedSite
from gateway.model.limits import HTTP2Limits, HTTPLimits
from gateway.telemetry.stats import Stats


class Recorder(Resource):
    """
    Records its requests; answers C{ok PATH PROTOCOL} at once, or holds
    them when C{hold} is set.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: List[Any] = []
        self.secure: List[bool] = []
        self.hold = False

    def render(self, request: Any) -> Any:
        self.requests.append(request)
        self.secure.append(request.isSecure())
        if self.hold:
            return NOT_DONE_YET
        request.setHeader(b"content-type", b"text/plain")
        return b"ok " + request.uri + b" " + request.clientproto


@implementer(IPushProducer)
class Producer:
    """
    A push producer that records what it is told.
    """

    def __init__(self) -> None:
        self.paused = False
        self.stopped = False
        self.pauses = 0

    def pauseProducing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self.stopped = True


class Consumer:
    """
    What an upstream connection is to a streamed body: it takes what the
    body's producer writes, and may pause it.
    """

    def __init__(self) -> None:
        self.received = b""
        self.producer: Any = None

    def write(self, data: bytes) -> None:
        self.received += data

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None


class HTTP2TestCase(SynchronousTestCase):
    """
    A L{LimitedSite} with a L{Recorder}, on a clock.
    """

    limits = HTTPLimits()
    streamBodies = False

    def setUp(self) -> None:
        self.clock = Clock()
        self.resource = Recorder()
        self.stats = Stats(self.clock)
        self.site = self.makeSite()

    def makeSite(self, **kwargs: Any) -> LimitedSite:
        kwargs.setdefault("limits", self.limits)
        site = LimitedSite(
            self.resource,
            reactor=self.clock,
            stats=self.stats,
            requestFactory=GatewayRequest,
            **kwargs,
        )
        site.streamBodies = self.streamBodies  # type: ignore[attr-defined]
        return site

    def connect(self, **kwargs: Any) -> H2Peer:
        return H2Peer(self.site, self.clock, **kwargs)


def limits(**http2: Any) -> HTTPLimits:
    return HTTPLimits(http2=HTTP2Limits(**http2))


# -- requests and answers ------------------------------------------------------------


class RequestTests(HTTP2TestCase):
    """
    A stream becomes the same request an HTTP/1.1 connection makes, and its
    answer goes back as HTTP/2.
    """

    def test_get(self) -> None:
        """
        A GET is answered on its stream: the status, the headers in lower
        case, the body, the stream's end; the request is a
        L{GatewayRequest} of protocol C{HTTP/2.0}, with C{Host} from
        C{:authority}, its path and query.
        """
        peer = self.connect()
        streamId = peer.request(path=b"/a/b?x=1", authority=b"api.example.com")
        answer = peer.answer(streamId)
        self.assertEqual(answer.status, 200)
        self.assertEqual(answer.body, b"ok /a/b?x=1 HTTP/2.0")
        self.assertTrue(answer.ended)
        self.assertEqual(answer.header(b"content-type"), b"text/plain")
        self.assertEqual(answer.header(b"content-length"), b"20")
        [request] = self.resource.requests
        self.assertIsInstance(request, GatewayRequest)
        self.assertEqual(request.clientproto, b"HTTP/2.0")
        self.assertEqual(request.path, b"/a/b")
        self.assertEqual(request.args, {b"x": [b"1"]})
        self.assertEqual(request.requestHeaders.getRawHeaders(b"host"), [b"api.example.com"])
        self.assertEqual(request.getClientAddress(), PEER)
        self.assertEqual(request.getHost(), HOST)
        self.assertEqual(self.resource.secure, [False])
        self.assertEqual(self.stats.http2["streams"], 1)
        self.assertEqual(self.stats.http2["connections"], 1)

    def test_secure(self) -> None:
        """
        Over TLS, the requests are secure (C{X-Forwarded-Proto: https}).
        """
        peer = self.connect(secure=True)
        peer.request()
        self.assertEqual(self.resource.secure, [True])

    def test_manyStreams(self) -> None:
        """
        Many streams at once on one connection are all answered, each on
        its own stream.
        """
        peer = self.connect()
        ids = [peer.request(path=b"/%d" % i, pump=False) for i in range(60)]
        peer.pump()
        for i, streamId in enumerate(ids):
            answer = peer.answer(streamId)
            self.assertEqual((answer.status, answer.body), (200, b"ok /%d HTTP/2.0" % i))
        self.assertEqual(len(self.resource.requests), 60)

    def test_heldAnswersInterleave(self) -> None:
        """
        Answers written in any order go out on their own streams, as they
        are written; the connection stays open afterwards.
        """
        self.resource.hold = True
        peer = self.connect()
        first = peer.request(path=b"/1")
        second = peer.request(path=b"/2")
        r1, r2 = self.resource.requests
        r2.write(b"two")
        r2.finish()
        peer.pump()
        self.assertEqual(peer.answer(second).body, b"two")
        self.assertFalse(peer.answer(first).ended)
        r1.write(b"one-")
        peer.pump()
        r1.write(b"more")
        r1.finish()
        peer.pump()
        self.assertEqual((peer.answer(first).body, peer.answer(first).ended), (b"one-more", True))
        self.assertFalse(peer.transport.disconnecting)

    def test_connectionHeadersDropped(self) -> None:
        """
        Headers HTTP/2 forbids in an answer (C{Connection},
        C{Transfer-Encoding}, C{Keep-Alive}, C{Upgrade}) are not sent.
        """
        self.resource.hold = True
        peer = self.connect()
        streamId = peer.request()
        request = self.resource.requests[0]
        for name in (b"Connection", b"Keep-Alive", b"Transfer-Encoding", b"Upgrade"):
            request.setHeader(name, b"x")
        request.setHeader(b"X-Kept", b"yes")
        request.write(b"body")
        request.finish()
        peer.pump()
        names = [name for name, _ in peer.answer(streamId).headers]
        self.assertIn(b"x-kept", names)
        for name in (b"connection", b"keep-alive", b"transfer-encoding", b"upgrade"):
            self.assertNotIn(name, names)

    def test_noContentWithoutLength(self) -> None:
        """
        A C{204} goes out without C{Content-Length} even when its resource
        (a backend's answer relayed) set one (RFC 9110 8.6: HTTP/2 clients
        such as curl refused the stream as malformed); a C{304} keeps its
        length (that of the representation, allowed).
        """
        self.resource.hold = True
        peer = self.connect()
        noContent = peer.request(path=b"/204")
        notModified = peer.request(path=b"/304")
        for request, code in zip(self.resource.requests, (204, 304)):
            request.setResponseCode(code)
            request.setHeader(b"Content-Length", b"5")
            request.setHeader(b"X-Kept", b"yes")
            request.finish()
        peer.pump()
        answer = peer.answer(noContent)
        self.assertEqual((answer.status, answer.body, answer.ended), (204, b"", True))
        self.assertIsNone(answer.header(b"content-length"))
        self.assertEqual(answer.header(b"x-kept"), b"yes")
        answer = peer.answer(notModified)
        self.assertEqual((answer.status, answer.ended), (304, True))
        self.assertEqual(answer.header(b"content-length"), b"5")

    def test_cookiesJoined(self) -> None:
        """
        Cookie fields split by the client come to the request as one
        C{Cookie} header (RFC 9113 8.2.3).
        """
        peer = self.connect()
        peer.request(headers=[(b"cookie", b"a=1"), (b"cookie", b"b=2")])
        request = self.resource.requests[0]
        self.assertEqual(request.requestHeaders.getRawHeaders(b"cookie"), [b"a=1; b=2"])
        self.assertEqual(request.received_cookies, {b"a": b"1", b"b": b"2"})

    def test_bufferedBody(self) -> None:
        """
        On a site that reads bodies whole, the request is answered once its
        body arrived, which it reads from C{content}.
        """
        bodies: List[bytes] = []

        class Reader(Resource):
            isLeaf = True

            def render_POST(self, request: Any) -> bytes:
                bodies.append(request.content.read())
                return b"read"

        self.resource = Reader()  # type: ignore[assignment]
        self.site = self.makeSite()
        peer = self.connect()
        streamId = peer.request(b"POST", body=b"hello", end=False)
        self.assertEqual(bodies, [])
        peer.client.send_data(streamId, b" world", end_stream=True)
        peer.pump()
        self.assertEqual(bodies, [b"hello world"])
        self.assertEqual(peer.answer(streamId).body, b"read")

    def test_expectContinue(self) -> None:
        """
        A client that asks for C{100-continue} gets it at once; the
        request does not see the C{Expect} header.
        """
        self.resource.hold = True
        peer = self.connect()
        streamId = peer.request(
            b"POST", headers=[(b"expect", b"100-continue"), (b"content-length", b"3")], end=False
        )
        self.assertEqual(peer.answer(streamId).interim, [100])
        peer.client.send_data(streamId, b"abc", end_stream=True)
        peer.pump()
        request = self.resource.requests[0]
        self.assertIsNone(request.requestHeaders.getRawHeaders(b"expect"))

    def test_head(self) -> None:
        """
        A HEAD answer has no body: the stream ends with its head.
        """
        peer = self.connect()
        streamId = peer.request(b"HEAD")
        answer = peer.answer(streamId)
        self.assertEqual((answer.status, answer.body, answer.ended), (200, b"", True))


# -- refusals ------------------------------------------------------------------------


class RefusalTests(HTTP2TestCase):
    """
    A request the HTTP/1.1 channel refuses is refused on its stream alone,
    with the same JSON error; what breaks the protocol ends the connection.
    """

    def assertRefused(
        self, code: int, peer: Optional[H2Peer] = None, **request: Any
    ) -> Dict[str, Any]:
        peer = peer or self.connect()
        streamId = peer.request(**request)
        answer = peer.answer(streamId)
        self.assertEqual(answer.status, code, answer.body)
        self.assertEqual(answer.header(b"content-type"), b"application/json")
        self.assertTrue(answer.ended)
        self.assertEqual(self.resource.requests, [])
        self.assertEqual(self.site.rejections.get(code), 1)
        # The connection goes on.
        self.assertIsNone(peer.terminated)
        ok = peer.request()
        self.assertEqual(peer.answer(ok).status, 200)
        body: Dict[str, Any] = json.loads(answer.body)
        self.assertIsInstance(body["error"], str)
        return body

    def test_ambiguousPath(self) -> None:
        """
        A path with a dot segment is refused 400, as on HTTP/1.1.
        """
        body = self.assertRefused(400, path=b"/a/../admin")
        self.assertEqual(body["error"], "dot segment in path")

    def test_accessLogged(self) -> None:
        """
        A refused request is told to the site's access log, with its
        status, why, the client and the bytes of the answer.
        """
        told: List[Any] = []

        class AccessLog:
            def refused(self, code: int, message: str, peer: Any, sent: int) -> None:
                told.append((code, message, peer.host, sent))

        self.site.accessLog = AccessLog()
        self.assertRefused(400, path=b"/a/../admin")
        [(code, message, host, sent)] = told
        self.assertEqual((code, message), (400, "dot segment in path"))
        self.assertEqual(host, "192.0.2.7")
        self.assertGreater(sent, len(message))

    def test_notInTheGatewaysLog(self) -> None:
        """
        A refused stream writes nothing to the gateway's own log (the access
        log has it): a client could fill the log with them at will.
        """
        from twisted.logger import globalLogPublisher

        events: List[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.assertRefused(400, path=b"/a/../admin")
        self.assertEqual(
            [e for e in events if e.get("log_namespace", "").startswith("gateway")], []
        )

    def test_encodedSlash(self) -> None:
        """
        An encoded slash is refused 400.
        """
        self.assertRefused(400, path=b"/a%2Fb")

    def test_fragment(self) -> None:
        """
        A target with a fragment is refused 400.
        """
        self.assertRefused(400, path=b"/a#b")

    def test_notAPath(self) -> None:
        """
        A C{:path} that is not a path is refused 400.
        """
        self.assertRefused(400, path=b"http://other/")

    def test_starForGet(self) -> None:
        """
        C{*} is for C{OPTIONS} alone.
        """
        self.assertRefused(400, path=b"*")

    def test_badMethod(self) -> None:
        """
        A method that is not a token is refused 400.
        """
        self.assertRefused(400, method=b"G(T")

    def test_connect(self) -> None:
        """
        C{CONNECT} is not supported: 501.
        """
        from h2.config import H2Configuration
        from h2.connection import H2Connection
        from h2.exceptions import ProtocolError

        head = [(b":method", b"CONNECT"), (b":authority", b"x:443")]
        probe = H2Connection(H2Configuration(client_side=True))
        probe.initiate_connection()
        try:
            probe.send_headers(1, head)
        except ProtocolError:
            # (h2 before 4.4 sends no CONNECT without :scheme and :path.)
            head += [(b":scheme", b"https"), (b":path", b"/")]
        peer = self.connect()
        streamId = peer.client.get_next_available_stream_id()
        peer.client.send_headers(streamId, head, end_stream=False)
        peer.pump()
        self.assertEqual(peer.answer(streamId).status, 501)
        self.assertEqual(peer.answer(streamId).reset, ErrorCodes.NO_ERROR)

    def test_controlCharacterInValue(self) -> None:
        """
        A header value with a control character is refused 400.
        """
        self.assertRefused(400, headers=[(b"x-a", b"a\x01b")])

    def test_underscoreLookalike(self) -> None:
        """
        A header a backend could take for C{X-Forwarded-For} is refused.
        """
        self.assertRefused(400, headers=[(b"x_forwarded_for", b"1.2.3.4")])

    def test_badHost(self) -> None:
        """
        An invalid C{:authority} is refused 400.
        """
        self.assertRefused(400, authority=b"a b")

    def test_targetTooLong(self) -> None:
        """
        A C{:path} longer than the request line limit is refused 414.
        """
        self.limits = HTTPLimits(maxRequestLineLength=300)
        self.site = self.makeSite()
        self.assertRefused(414, path=b"/" + b"a" * 400)

    def test_tooManyHeaders(self) -> None:
        """
        More header fields than C{maxHeaderCount}: 431.
        """
        self.limits = HTTPLimits(maxHeaderCount=5)
        self.site = self.makeSite()
        self.assertRefused(431, headers=[(b"x-%d" % i, b"v") for i in range(6)])

    def test_headerListTooLarge(self) -> None:
        """
        A header list over C{maxHeaderListSize} (but not twice as large) is
        refused 431 on its stream.
        """
        self.limits = limits(maxHeaderListSize=2048)
        self.site = self.makeSite()
        self.assertRefused(431, headers=[(b"x-big", b"v" * 2500)])

    def test_headerListFarTooLarge(self) -> None:
        """
        A header list over twice C{maxHeaderListSize} ends the connection
        (C{GOAWAY ENHANCE_YOUR_CALM}): its decoding was cut short.
        """
        self.limits = limits(maxHeaderListSize=2048)
        self.site = self.makeSite()
        peer = self.connect()
        peer.request(headers=[(b"x-big", b"v" * 5000)])
        assert peer.terminated is not None
        self.assertEqual(peer.terminated.error_code, ErrorCodes.ENHANCE_YOUR_CALM)
        self.assertTrue(peer.transport.disconnecting)

    def test_declaredBodyTooLarge(self) -> None:
        """
        A C{content-length} over the body limit is refused 413 before any
        of the body is read; the stream is then reset C{NO_ERROR} (the
        client may stop sending).
        """
        self.limits = HTTPLimits(maxBodySize=10)
        self.site = self.makeSite()
        peer = self.connect()
        streamId = peer.request(b"POST", headers=[(b"content-length", b"11")], end=False)
        answer = peer.answer(streamId)
        self.assertEqual(answer.status, 413)
        self.assertEqual(answer.reset, ErrorCodes.NO_ERROR)
        self.assertEqual(self.resource.requests, [])

    def test_bodyTooLarge(self) -> None:
        """
        A body of no declared length that grows over the limit is refused
        413.
        """
        self.limits = HTTPLimits(maxBodySize=10)
        self.site = self.makeSite()
        peer = self.connect()
        streamId = peer.request(b"POST", body=b"x" * 11, end=False)
        self.assertEqual(peer.answer(streamId).status, 413)
        self.assertEqual(self.resource.requests, [])

    def test_routeBodyLimit(self) -> None:
        """
        The body limit of the request's route applies
        (C{site.bodyLimitFor}).
        """
        asked: List[Tuple[bytes, bytes, bytes]] = []

        def bodyLimitFor(method: bytes, host: Optional[bytes], path: bytes) -> int:
            asked.append((method, host or b"", path))
            return 4

        self.site = self.makeSite(bodyLimitFor=bodyLimitFor)
        peer = self.connect()
        streamId = peer.request(b"PUT", b"/up?x", headers=[(b"content-length", b"5")], end=False)
        self.assertEqual(peer.answer(streamId).status, 413)
        self.assertEqual(asked, [(b"PUT", b"gw", b"/up")])

    def test_malformed(self) -> None:
        """
        A malformed request (RFC 9113 8.1.1) is a stream error: 400 on its
        stream, saying why; the connection goes on.
        """
        usual = [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":authority", b"gw"),
            (b":path", b"/"),
        ]
        cases: List[Tuple[Dict[str, Any], str]] = [
            ({"headers": [(b"X-Upper", b"a")]}, "invalid header field name"),
            ({"headers": [(b"x-a", b"trailing ")]}, "invalid character in a header value"),
            ({"headers": [(b"connection", b"close")]}, "connection-specific header field"),
            ({"headers": [(b"te", b"gzip")]}, "te other than trailers"),
            ({"headers": [(b"host", b"other")]}, ":authority and Host differ"),
            ({"pseudo": usual[:1] + usual[2:]}, ":scheme and :path are required"),
            ({"pseudo": usual + [(b":status", b"200")]}, "unknown pseudo-header field"),
            ({"pseudo": usual + [(b":path", b"/b")]}, "repeated pseudo-header field"),
            ({"pseudo": [], "headers": [(b"x-a", b"b")] + usual}, "a pseudo-header field after"),
            # A head that ends the stream, declaring a body all the same.
            ({"headers": [(b"content-length", b"5")]}, "content-length but no body"),
        ]
        for request, why in cases:
            self.resource.requests.clear()
            body = self.assertRefused(400, **request)
            self.assertIn(why, body["error"])
            self.site.rejections.clear()

    def test_authorityAndHostCompared(self) -> None:
        """
        C{:authority} and C{Host} are compared as RFC 3986 6.2 (and RFC
        9113 8.3.1) ask: the host's case and the scheme's default port do
        not make them differ; the request keeps its C{Host}.
        """
        peer = self.connect()
        for authority, host in (
            (b"API.example.com", b"api.example.com"),
            (b"api.example.com:443", b"api.example.com"),
            (b"api.example.com", b"Api.Example.com:443"),
        ):
            streamId = peer.request(authority=authority, headers=[(b"host", host)])
            self.assertEqual(peer.answer(streamId).status, 200, (authority, host))
            request = self.resource.requests[-1]
            self.assertEqual(request.requestHeaders.getRawHeaders(b"host"), [host])
        streamId = peer.request(
            authority=b"api.example.com:8443", headers=[(b"host", b"api.example.com")]
        )
        self.assertEqual(peer.answer(streamId).status, 400)

    def test_trailersIgnored(self) -> None:
        """
        Trailers of a request body end it; they are not passed on.
        """
        peer = self.connect()
        streamId = peer.request(b"POST", body=b"abc", end=False)
        peer.client.send_headers(streamId, [(b"x-trailer", b"1")], end_stream=True)
        peer.pump()
        self.assertEqual(peer.answer(streamId).status, 200)
        request = self.resource.requests[0]
        self.assertIsNone(request.requestHeaders.getRawHeaders(b"x-trailer"))

    def test_bodyLongerThanDeclared(self) -> None:
        """
        What breaks the framing (a body longer than its C{content-length})
        ends the connection with C{GOAWAY PROTOCOL_ERROR}; its requests are
        lost.
        """
        self.resource.hold = True
        peer = self.connect()
        streamId = peer.request(b"POST", headers=[(b"content-length", b"2")], end=False)
        frame = DataFrame(streamId, data=b"abc", flags=["END_STREAM"])
        peer.sendRaw(frame.serialize())
        self.clock.advance(0)
        peer._received(peer.transport.value())
        assert peer.terminated is not None
        self.assertEqual(peer.terminated.error_code, ErrorCodes.PROTOCOL_ERROR)
        self.assertTrue(peer.transport.disconnecting)


# -- the request body ----------------------------------------------------------------


class StreamedBodyTests(HTTP2TestCase):
    """
    A streamed request body (the proxy's site) is answered while it
    arrives, and its flow control follows its consumer.
    """

    streamBodies = True

    def setUp(self) -> None:
        super().setUp()
        self.resource.hold = True

    def consume(self, request: Any) -> Tuple[Consumer, Any]:
        consumer = Consumer()
        producer = request.bodyStream.producer()
        # (As the upstream client registers it.)
        consumer.registerProducer(producer, True)
        done = producer.startProducing(consumer)
        return consumer, done

    def test_answeredWhileArriving(self) -> None:
        """
        A request with a body reaches its resource with its first bytes,
        its body a L{BodyStream} that gets the rest as it comes.
        """
        peer = self.connect()
        streamId = peer.request(
            b"POST", headers=[(b"content-length", b"6")], body=b"abc", end=False
        )
        [request] = self.resource.requests
        consumer, done = self.consume(request)
        self.assertEqual(consumer.received, b"abc")
        peer.client.send_data(streamId, b"def", end_stream=True)
        peer.pump()
        self.assertEqual(consumer.received, b"abcdef")
        self.assertIsNone(self.successResultOf(done))
        self.assertEqual(request.bodyStream.length, 6)

    def test_getEndedByEmptyData(self) -> None:
        """
        A request whose client ends its stream with an empty DATA frame
        has no body (not one of unknown length).
        """
        peer = self.connect()
        streamId = peer.request(end=False)
        self.assertEqual(self.resource.requests, [])
        peer.client.end_stream(streamId)
        peer.pump()
        [request] = self.resource.requests
        self.assertIsNone(request.bodyStream)

    def test_unknownLength(self) -> None:
        """
        A body without C{content-length} streams with an unknown length.
        """
        peer = self.connect()
        peer.request(b"POST", body=b"abc", end=False)
        [request] = self.resource.requests
        self.assertIsNone(request.bodyStream.length)

    def test_slowConsumerShutsTheWindow(self) -> None:
        """
        While the body's consumer does not take it, the stream's window is
        not opened again: the client cannot send more than the window
        beyond what the body holds (L{HIGH_WATER}); once it takes it, the
        window opens.
        """
        peer = self.connect()
        client = peer.client
        streamId = peer.request(b"POST", body=b"x" * 16384, end=False)
        [request] = self.resource.requests
        consumer, _ = self.consume(request)
        consumer.producer.pauseProducing()
        sent = 16384
        for _ in range(100):
            window = client.local_flow_control_window(streamId)
            if window == 0:
                break
            chunk = min(window, 16384)
            client.send_data(streamId, b"x" * chunk)
            sent += chunk
            peer.pump()
        self.assertEqual(client.local_flow_control_window(streamId), 0)
        held = sent - len(consumer.received)
        self.assertLessEqual(held, HIGH_WATER + 65535)
        consumer.producer.resumeProducing()
        peer.pump()
        self.assertEqual(len(consumer.received), sent)
        self.assertGreater(client.local_flow_control_window(streamId), 0)

    def test_otherStreamsFlow(self) -> None:
        """
        A stream whose body's consumer is paused does not stop another
        stream's body (the connection's window has room for every stream).
        """
        peer = self.connect()
        client = peer.client
        first = peer.request(b"POST", body=b"x" * 16384, end=False)
        consumer, _ = self.consume(self.resource.requests[0])
        consumer.producer.pauseProducing()
        while client.local_flow_control_window(first):
            client.send_data(first, b"x" * min(16384, client.local_flow_control_window(first)))
            peer.pump()
        second = peer.request(b"POST", body=b"y" * 60000, end=True)
        other, done = self.consume(self.resource.requests[1])
        self.assertEqual(len(other.received), 60000)
        self.assertIsNone(self.successResultOf(done))
        self.assertFalse(peer.answer(second).ended)

    def test_answeredBeforeBody(self) -> None:
        """
        An answer complete before the body is resets the stream
        C{NO_ERROR}: the client may stop sending; what it sent meanwhile is
        dropped and its connection window still opened.
        """
        peer = self.connect()
        streamId = peer.request(b"POST", body=b"abc", end=False)
        request = self.resource.requests[0]
        request.setResponseCode(403)
        request.finish()
        peer.pump()
        answer = peer.answer(streamId)
        self.assertEqual((answer.status, answer.reset), (403, ErrorCodes.NO_ERROR))
        before = peer.client.outbound_flow_control_window
        self.assertGreater(before, 0)
        self.assertIsNotNone(request.bodyStream.failure)

    def test_bodyTimeout(self) -> None:
        """
        A body that does not arrive within C{bodyTimeout} fails with 408
        (its request answers so), the stream alone.
        """
        self.limits = HTTPLimits(bodyTimeout=5, minBodyRate=0)
        self.site = self.makeSite()
        peer = self.connect()
        peer.request(b"POST", body=b"abc", end=False)
        request = self.resource.requests[0]
        consumer, done = self.consume(request)
        self.clock.advance(4.9)
        self.assertNoResult(done)
        self.clock.advance(0.2)
        failure = self.failureResultOf(done)
        self.assertEqual(failure.value.status, 408)
        self.assertEqual(self.site.rejections, {408: 1})

    def test_pausedTimeIsNotCounted(self) -> None:
        """
        Time the body's consumer is paused does not count against the
        client's body deadline.
        """
        self.limits = HTTPLimits(bodyTimeout=5, minBodyRate=0)
        self.site = self.makeSite()
        peer = self.connect()
        client = peer.client
        streamId = peer.request(b"POST", body=b"x" * 16384, end=False)
        consumer, done = self.consume(self.resource.requests[0])
        consumer.producer.pauseProducing()
        while client.local_flow_control_window(streamId):
            client.send_data(
                streamId, b"x" * min(16384, client.local_flow_control_window(streamId))
            )
            peer.pump()
        self.clock.advance(60)
        self.assertNoResult(done)

    def test_resetCancels(self) -> None:
        """
        A stream the client resets stops its request: the request learns of
        it (C{notifyDone} with a failure), its body fails, its answer's
        producer is stopped.
        """
        peer = self.connect()
        streamId = peer.request(b"POST", body=b"abc", end=False)
        request = self.resource.requests[0]
        reasons: List[Optional[Failure]] = []
        request.notifyDone(reasons.append)
        producer = Producer()
        request.registerProducer(producer, True)
        consumer, done = self.consume(request)
        peer.client.reset_stream(streamId, ErrorCodes.CANCEL)
        peer.pump()
        [reason] = reasons
        assert reason is not None
        self.assertIsInstance(reason.value, ConnectionLost)
        self.assertTrue(producer.stopped)
        self.failureResultOf(done)
        self.assertEqual(self.stats.http2["resets"], 1)
        self.assertEqual(peer.server._streams, {})


# -- the answer's flow control ------------------------------------------------------


class AnswerFlowTests(HTTP2TestCase):
    """
    An answer waits for the client's window and the connection's send
    buffer, pausing its producer meanwhile.
    """

    def setUp(self) -> None:
        super().setUp()
        self.resource.hold = True

    def test_windowPausesProducer(self) -> None:
        """
        An answer larger than the client's window is sent as far as the
        window allows; its producer is paused until the client opens the
        window, and resumed then.
        """
        peer = self.connect(settings={SettingCodes.INITIAL_WINDOW_SIZE: 1000})
        streamId = peer.request()
        request = self.resource.requests[0]
        producer = Producer()
        request.registerProducer(producer, True)
        request.write(b"a" * 3000)
        self.clock.advance(0)
        peer._received(peer.transport.value())
        peer.transport.clear()
        self.assertEqual(len(peer.answer(streamId).body), 1000)
        self.assertTrue(producer.paused)
        # The peer's acknowledgement opens the window by what it got.
        peer.client.increment_flow_control_window(2000, streamId)
        peer.pump()
        self.assertEqual(len(peer.answer(streamId).body), 3000)
        self.assertFalse(producer.paused)
        request.unregisterProducer()
        request.finish()
        peer.pump()
        self.assertTrue(peer.answer(streamId).ended)

    def test_sendBufferFull(self) -> None:
        """
        When the connection's send buffer is full, every answer's producer
        is paused and the client is not read; both resume with the buffer.
        """
        peer = self.connect()
        peer.request()
        producer = Producer()
        self.resource.requests[0].registerProducer(producer, True)
        peer.server.pauseProducing()
        self.assertTrue(producer.paused)
        self.assertEqual(peer.transport.producerState, "paused")
        peer.server.resumeProducing()
        self.assertFalse(producer.paused)
        self.assertEqual(peer.transport.producerState, "producing")

    def test_shutWindowTimesOut(self) -> None:
        """
        A stream whose window the client leaves shut for C{sendTimeout}
        seconds is reset (and counted as a send timeout); the connection
        goes on.
        """
        self.limits = HTTPLimits(sendTimeout=30)
        self.site = self.makeSite()
        peer = H2Peer(
            self.site, self.clock, settings={SettingCodes.INITIAL_WINDOW_SIZE: 10}, autoPump=True
        )
        peer.request()
        request = self.resource.requests[0]
        reasons: List[Optional[Failure]] = []
        request.notifyDone(reasons.append)
        request.write(b"a" * 100)
        self.clock.advance(0)
        self.clock.advance(29)
        self.assertEqual(reasons, [])
        self.clock.advance(2)
        self.assertEqual(len(reasons), 1)
        self.assertEqual(self.stats.sendTimeouts, 1)
        self.assertFalse(peer.transport.disconnecting)

    def test_sendBufferTimesOut(self) -> None:
        """
        A connection whose send buffer stays full for C{sendTimeout}
        seconds is cut, its requests lost.
        """
        self.limits = HTTPLimits(sendTimeout=30)
        self.site = self.makeSite()
        peer = self.connect()
        peer.request()
        request = self.resource.requests[0]
        reasons: List[Optional[Failure]] = []
        request.notifyDone(reasons.append)
        peer.server.pauseProducing()
        self.clock.advance(31)
        self.assertEqual(len(reasons), 1)
        self.assertEqual(self.stats.sendTimeouts, 1)

    def test_abortResetsTheStreamAlone(self) -> None:
        """
        C{request.channel.transport.abortConnection()} (an upstream that
        broke mid-body) resets that stream C{INTERNAL_ERROR}; the
        connection and its other streams go on.
        """
        peer = self.connect()
        first = peer.request()
        second = peer.request()
        broken, other = self.resource.requests
        broken.write(b"half")
        broken.channel.transport.abortConnection()
        other.write(b"whole")
        other.finish()
        peer.pump()
        self.assertEqual(peer.answer(first).reset, ErrorCodes.INTERNAL_ERROR)
        self.assertEqual(peer.answer(second).body, b"whole")
        self.assertFalse(peer.transport.disconnecting)


# -- floods --------------------------------------------------------------------------


class FloodTests(HTTP2TestCase):
    """
    A client that floods a connection with frames that cost the server
    work is cut off with C{GOAWAY ENHANCE_YOUR_CALM}.
    """

    def assertCutOff(self, peer: H2Peer, frames: bytes) -> None:
        peer.sendRaw(frames)
        self.clock.advance(0)
        peer._received(peer.transport.value())
        assert peer.terminated is not None, "no GOAWAY"
        self.assertEqual(peer.terminated.error_code, ErrorCodes.ENHANCE_YOUR_CALM)
        self.assertTrue(peer.transport.disconnecting)
        self.assertEqual(self.stats.http2["floods"], 1)

    def headers(self, peer: H2Peer, streamId: int, flags: Tuple[str, ...] = ()) -> bytes:
        frame = HeadersFrame(streamId, flags=["END_HEADERS", "END_STREAM", *flags])
        frame.data = peer.client.encoder.encode(
            [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"gw"), (b":path", b"/")]
        )
        return frame.serialize()

    def test_rapidReset(self) -> None:
        """
        Streams opened and reset at once (CVE-2023-44487) spend the reset
        budget: past it, the connection is cut; the streams reset in the
        same read never reached the resource.
        """
        self.limits = limits(resetBudget=10)
        self.site = self.makeSite()
        self.resource.hold = True
        peer = self.connect()
        frames = b""
        for i in range(11):
            streamId = 1 + 2 * i
            frames += self.headers(peer, streamId)
            frames += RstStreamFrame(streamId, error_code=ErrorCodes.CANCEL).serialize()
        self.assertCutOff(peer, frames)
        self.assertEqual(self.resource.requests, [])

    def test_resetsWithinBudget(self) -> None:
        """
        Resets within the budget are fine, and it is earned back over
        C{floodWindow}: a client that resets a few streams now and then is
        never cut off.
        """
        self.limits = limits(resetBudget=10, floodWindow=10)
        self.site = self.makeSite()
        self.resource.hold = True
        peer = self.connect()
        streamId = 1
        for _ in range(5):
            for _ in range(10):
                peer.sendRaw(
                    self.headers(peer, streamId)
                    + RstStreamFrame(streamId, error_code=ErrorCodes.CANCEL).serialize()
                )
                streamId += 2
            self.clock.advance(10)
        peer.pump()
        self.assertIsNone(peer.terminated)
        self.assertEqual(self.stats.http2["resets"], 50)
        self.assertEqual(self.resource.requests, [])
        # (Raw: the client's state machine knows nothing of those streams.)
        peer.sendRaw(self.headers(peer, streamId))
        self.assertEqual(len(self.resource.requests), 1)
        self.assertFalse(peer.transport.disconnecting)

    def test_resetAfterDispatchCancels(self) -> None:
        """
        A stream reset once its request reached the resource stops that
        request (counted as a client reset).
        """
        self.resource.hold = True
        peer = self.connect()
        streamId = peer.request()
        reasons: List[Optional[Failure]] = []
        self.resource.requests[0].notifyDone(reasons.append)
        peer.sendRaw(RstStreamFrame(streamId, error_code=ErrorCodes.CANCEL).serialize())
        self.assertEqual(len(reasons), 1)
        self.assertEqual(self.stats.http2["resets"], 1)

    def test_pingFlood(self) -> None:
        """
        PING frames beyond the budget cut the connection before they are
        answered.
        """
        self.limits = limits(pingBudget=5)
        self.site = self.makeSite()
        peer = self.connect()
        self.assertCutOff(peer, PingFrame(0, opaque_data=b"12345678").serialize() * 6)

    def test_pingsAcknowledged(self) -> None:
        """
        PINGs within the budget are acknowledged.
        """
        peer = self.connect()
        peer.client.ping(b"12345678")
        peer.pump()
        self.assertIn("PingAckReceived", [type(e).__name__ for e in peer.events])

    def test_settingsFlood(self) -> None:
        """
        SETTINGS frames beyond the budget cut the connection.
        """
        self.limits = limits(settingsBudget=3)
        self.site = self.makeSite()
        peer = self.connect()
        self.assertCutOff(peer, SettingsFrame(0).serialize() * 4)

    def test_priorityFlood(self) -> None:
        """
        PRIORITY frames beyond the budget cut the connection.
        """
        self.limits = limits(priorityBudget=20)
        self.site = self.makeSite()
        peer = self.connect()
        frames = b"".join(
            PriorityFrame(2 * i + 1, depends_on=0, stream_weight=16).serialize() for i in range(21)
        )
        self.assertCutOff(peer, frames)

    def test_emptyDataFlood(self) -> None:
        """
        DATA frames without a byte (nor the stream's end) beyond the
        budget cut the connection.
        """
        self.limits = limits(emptyFrameBudget=10)
        self.site = self.makeSite()
        self.resource.hold = True
        peer = self.connect()
        streamId = peer.request(b"POST", end=False)
        self.assertCutOff(peer, DataFrame(streamId).serialize() * 11)

    def test_unknownFrameFlood(self) -> None:
        """
        Frames of unknown types count as empty ones.
        """
        self.limits = limits(emptyFrameBudget=10)
        self.site = self.makeSite()
        peer = self.connect()
        frame = ExtensionFrame(type=0xEE, stream_id=0, flag_byte=0, body=b"")
        self.assertCutOff(peer, frame.serialize() * 11)

    def test_continuationFlood(self) -> None:
        """
        A header block of more CONTINUATION frames than allowed cuts the
        connection before it ends.
        """
        self.limits = limits(maxContinuationFrames=4)
        self.site = self.makeSite()
        peer = self.connect()
        head = HeadersFrame(1)
        head.data = peer.client.encoder.encode([(b":method", b"GET")])
        frames = head.serialize()
        for _ in range(5):
            more = ContinuationFrame(1)
            more.data = b"\x00\x01a\x01b"
            frames += more.serialize()
        self.assertCutOff(peer, frames)

    def test_headerBlockTooLarge(self) -> None:
        """
        A header block growing past twice the header list size (plus a
        frame) cuts the connection.
        """
        self.limits = limits(maxHeaderListSize=1024)
        self.site = self.makeSite()
        peer = self.connect()
        head = HeadersFrame(1)
        head.data = b"\x00" * 16000
        frames = head.serialize()
        more = ContinuationFrame(1)
        more.data = b"\x00" * 16000
        frames += more.serialize()
        self.assertCutOff(peer, frames)

    def test_othersServed(self) -> None:
        """
        A flood on one connection leaves the other connections served.
        """
        self.limits = limits(pingBudget=2)
        self.site = self.makeSite()
        bad = self.connect()
        good = self.connect()
        self.assertCutOff(bad, PingFrame(0).serialize() * 3)
        streamId = good.request()
        self.assertEqual(good.answer(streamId).status, 200)


class FrameGuardTests(SynchronousTestCase):
    """
    L{FrameGuard} reads frame headers wherever the reads split them.
    """

    def test_splitAnywhere(self) -> None:
        """
        The same frames split at every byte give the same verdict as whole.
        """
        frames = PREFACE + PingFrame(0).serialize() * 3 + SettingsFrame(0).serialize()
        for size in (1, 2, 5, 9, 17, 30):
            guard = FrameGuard(HTTP2Limits(pingBudget=3), Clock())
            verdicts = [guard.scan(frames[i : i + size]) for i in range(0, len(frames), size)]
            self.assertEqual([v for v in verdicts if v], [])
            guard = FrameGuard(HTTP2Limits(pingBudget=2), Clock())
            verdicts = [guard.scan(frames[i : i + size]) for i in range(0, len(frames), size)]
            self.assertEqual([v for v in verdicts if v], ["too many PING frames"])

    def test_payloadSkipped(self) -> None:
        """
        Bytes of a payload that look like frame headers are not read as
        such.
        """
        guard = FrameGuard(HTTP2Limits(pingBudget=1), Clock())
        ping = PingFrame(0).serialize()
        data = DataFrame(1, data=ping * 10).serialize()
        self.assertIsNone(guard.scan(PREFACE + data))

    def test_acksAreFree(self) -> None:
        """
        PING and SETTINGS acknowledgements spend no budget.
        """
        guard = FrameGuard(HTTP2Limits(pingBudget=1, settingsBudget=1), Clock())
        acks = PingFrame(0, flags=["ACK"]).serialize() + SettingsFrame(0, flags=["ACK"]).serialize()
        self.assertIsNone(guard.scan(PREFACE + acks * 10))

    def test_budgetRefills(self) -> None:
        """
        A L{FrameBudget} gives C{size} at once and earns them back evenly
        over its window.
        """
        clock = Clock()
        budget = FrameBudget(4, 2.0, clock)
        self.assertEqual([budget.take() for _ in range(5)], [True] * 4 + [False])
        clock.advance(0.5)
        self.assertEqual([budget.take(), budget.take()], [True, False])
        clock.advance(100)
        self.assertEqual([budget.take() for _ in range(5)], [True] * 4 + [False])


# -- timeouts and going away -----------------------------------------------------------


class ConnectionTimeTests(HTTP2TestCase):
    """
    The timeouts of L{HTTPLimits} apply to HTTP/2 connections.
    """

    def test_firstRequest(self) -> None:
        """
        A connection that sends no request within C{headerTimeout} is told
        to go (C{GOAWAY NO_ERROR}) and closed.
        """
        self.limits = HTTPLimits(headerTimeout=5)
        self.site = self.makeSite()
        peer = self.connect()
        self.clock.advance(4.9)
        self.assertFalse(peer.transport.disconnecting)
        self.clock.advance(0.2)
        peer._received(peer.transport.value())
        assert peer.terminated is not None
        self.assertEqual(peer.terminated.error_code, ErrorCodes.NO_ERROR)
        self.assertTrue(peer.transport.disconnecting)

    def test_idle(self) -> None:
        """
        A connection with no stream open for C{idleTimeout} is closed;
        PINGs do not keep it.
        """
        self.limits = HTTPLimits(idleTimeout=20)
        self.site = self.makeSite()
        peer = self.connect()
        peer.request()
        for _ in range(3):
            self.clock.advance(6)
            peer.client.ping(b"12345678")
            peer.pump()
        self.clock.advance(3)
        self.assertTrue(peer.transport.disconnecting)

    def test_busyIsNotIdle(self) -> None:
        """
        A connection with a stream being answered is not idle.
        """
        self.limits = HTTPLimits(idleTimeout=20)
        self.site = self.makeSite()
        self.resource.hold = True
        peer = self.connect()
        peer.request()
        self.clock.advance(100)
        self.assertFalse(peer.transport.disconnecting)

    def test_unfinishedHeaderBlock(self) -> None:
        """
        A header block begun and not finished within C{headerTimeout}
        closes the connection (nothing else may come on it meanwhile).
        """
        self.limits = HTTPLimits(headerTimeout=5)
        self.site = self.makeSite()
        peer = self.connect()
        self.clock.advance(4)
        head = HeadersFrame(1)
        head.data = peer.client.encoder.encode([(b":method", b"GET")])
        peer.sendRaw(head.serialize())
        self.clock.advance(4)
        self.assertFalse(peer.transport.disconnecting)
        self.clock.advance(1.1)
        self.assertTrue(peer.transport.disconnecting)

    def test_goAway(self) -> None:
        """
        Going away gracefully: C{GOAWAY} names the last stream taken, which
        is still answered; a stream opened after it is refused
        (C{REFUSED_STREAM}); the connection closes after the last answer.
        """
        self.resource.hold = True
        peer = self.connect()
        taken = peer.request()
        self.site.goAway()
        peer.pump()
        assert peer.terminated is not None
        self.assertEqual(peer.terminated.last_stream_id, taken)
        self.assertEqual(peer.terminated.error_code, ErrorCodes.NO_ERROR)
        late = peer.client.get_next_available_stream_id()
        peer.sendRaw(self.headersFrame(peer, late))
        self.clock.advance(0)
        self.assertIn(
            RstStreamFrame(late, error_code=ErrorCodes.REFUSED_STREAM).serialize(),
            peer.transport.value(),
        )
        self.assertEqual(len(self.resource.requests), 1)
        self.assertFalse(peer.transport.disconnecting)
        self.resource.requests[0].write(b"last")
        self.resource.requests[0].finish()
        self.clock.advance(0)
        self.assertIn(b"last", peer.transport.value())
        self.assertTrue(peer.transport.disconnecting)

    def test_goAwayIdle(self) -> None:
        """
        An idle connection told to go away closes at once (at the end of
        the reactor's turn, its GOAWAY sent).
        """
        peer = self.connect()
        self.site.goAway()
        self.clock.advance(0)
        self.assertIn(GoAwayFrame(0).serialize(), peer.transport.value())
        self.assertTrue(peer.transport.disconnecting)
        self.assertEqual(self.site.http2Connections, {peer.server})
        peer.server.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(self.site.http2Connections, set())

    def test_drainingRequestGoesAway(self) -> None:
        """
        C{request.transport.loseConnection()} (what a draining proxy does
        once an answer is over) makes the connection go away gracefully,
        not cut its other streams.
        """
        self.resource.hold = True
        peer = self.connect()
        peer.request()
        other = peer.request()
        first, second = self.resource.requests
        first.finish()
        first.transport.loseConnection()
        peer.pump()
        assert peer.terminated is not None
        self.assertEqual(peer.terminated.last_stream_id, other)
        self.assertTrue(peer.answer(1).ended)
        self.assertFalse(peer.transport.disconnecting)
        second.write(b"second")
        second.finish()
        self.clock.advance(0)
        self.assertIn(b"second", peer.transport.value())
        self.assertTrue(peer.transport.disconnecting)

    def headersFrame(self, peer: H2Peer, streamId: int) -> bytes:
        frame = HeadersFrame(streamId, flags=["END_HEADERS", "END_STREAM"])
        frame.data = peer.client.encoder.encode(
            [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"gw"), (b":path", b"/")]
        )
        return frame.serialize()


# -- choosing the protocol --------------------------------------------------------------


class Transport(StringTransport):
    """
    A transport that delivers to a C{protocol}, as Twisted's TCP
    connections do.
    """

    protocol: Any = None
    negotiatedProtocol: Optional[bytes] = None


class ProtocolChoiceTests(SynchronousTestCase):
    """
    L{ProtocolChoice} builds the channel the connection chose and steps out
    of its way.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.resource = Recorder()
        self.site = LimitedSite(self.resource, reactor=self.clock, h2c=True)

    def connect(self) -> Tuple[ProtocolChoice, Transport]:
        choice = self.site.buildProtocol(PEER)
        assert isinstance(choice, ProtocolChoice)
        transport = Transport(peerAddress=PEER, hostAddress=HOST)
        transport.protocol = choice
        choice.makeConnection(transport)
        return choice, transport

    def test_prefaceIsHTTP2(self) -> None:
        """
        On a site that accepts h2c, a client that starts with the preface
        (here in pieces) gets an HTTP/2 connection, which becomes the
        transport's protocol.
        """
        choice, transport = self.connect()
        choice.dataReceived(PREFACE[:5])
        choice.dataReceived(PREFACE[5:])
        self.assertIsInstance(transport.protocol, H2ServerConnection)
        # The server's SETTINGS.
        self.assertEqual(transport.value()[3], 0x4)

    def test_http11(self) -> None:
        """
        Any other first bytes get the HTTP/1.1 channel, which reads them.
        """
        choice, transport = self.connect()
        choice.dataReceived(b"PUT / HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n")
        self.assertIsInstance(transport.protocol, GatewayHTTPChannel)
        self.assertIn(b"200 OK", transport.value())

    def test_withoutH2c(self) -> None:
        """
        A site without h2c builds its HTTP/1.1 channel at once: the preface
        is a bad request there.
        """
        site = LimitedSite(self.resource, reactor=self.clock)
        self.assertIsInstance(site.buildProtocol(PEER), GatewayHTTPChannel)

    def test_alpn(self) -> None:
        """
        On a TLS listener, ALPN's choice decides when the handshake is
        complete.
        """
        for negotiated, kind in (
            (b"h2", H2ServerConnection),
            (b"http/1.1", GatewayHTTPChannel),
            (None, GatewayHTTPChannel),
        ):
            choice = ProtocolChoice(self.site, PEER, byALPN=True)
            transport = Transport(peerAddress=PEER, hostAddress=HOST)
            transport.protocol = choice
            transport.negotiatedProtocol = negotiated
            choice.makeConnection(transport)
            choice.handshakeCompleted()
            self.assertIsInstance(transport.protocol, kind)

    def test_timeout(self) -> None:
        """
        A client that completes neither its handshake nor its first bytes
        within C{headerTimeout} is cut.
        """
        choice, transport = self.connect()
        choice.dataReceived(b"PRI")
        self.clock.advance(HTTPLimits().headerTimeout)
        self.assertTrue(transport.disconnected)

    def test_unknownTransport(self) -> None:
        """
        On a transport it cannot step out of, the chooser passes what comes
        on.
        """
        choice = ProtocolChoice(self.site, PEER, byALPN=False)
        transport = StringTransport(peerAddress=PEER, hostAddress=HOST)
        choice.makeConnection(transport)
        self.assertFalse(replaceProtocol(transport, choice, choice))
        choice.dataReceived(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
        choice.dataReceived(b"GET /2 HTTP/1.1\r\nHost: gw\r\n\r\n")
        self.assertEqual(transport.value().count(b"200 OK"), 2)


# -- the one pipeline ------------------------------------------------------------------


class PipelineTests(SynchronousTestCase):
    """
    Requests over HTTP/2 go through the proxy's one pipeline (a whole proxy
    in memory, L{MemoryGateway}): routing, filters, aggregation, the same
    errors, the forwarding headers.
    """

    def setUp(self) -> None:
        from memorygateway import MemoryGateway

        self.gateway = MemoryGateway(
            [
                {"name": "users", "urlPattern": "/users/{id}", "nodes": [{"cluster": "c"}]},
                {
                    "name": "both",
                    "urlPattern": "/both",
                    "nodes": [
                        {"cluster": "c", "attrName": "a", "urlRewrite": "/a"},
                        {"cluster": "c", "attrName": "b", "urlRewrite": "/b"},
                    ],
                },
                {
                    "name": "limited",
                    "urlPattern": "/limited",
                    "nodes": [{"cluster": "c"}],
                    "maxQPS": 1,
                },
            ]
        )

    def connect(self) -> H2Peer:
        return H2Peer(self.gateway.site, self.gateway.clock, secure=True)

    def test_proxied(self) -> None:
        """
        A request is routed and sent upstream with the forwarding headers
        of a TLS client (C{X-Forwarded-Proto: https}) and C{Via: 2 gateway};
        the upstream's answer comes back on the stream.
        """
        peer = self.connect()
        streamId = peer.request(path=b"/users/7", authority=b"api.example.com")
        answer = peer.answer(streamId)
        self.assertEqual((answer.status, json.loads(answer.body)), (200, {"ok": True}))
        _, method, uri, headers = self.gateway.lastSent()
        self.assertEqual((method, uri), (b"GET", b"/users/7"))
        self.assertEqual(headers.getRawHeaders(b"x-forwarded-proto"), [b"https"])
        self.assertEqual(headers.getRawHeaders(b"x-forwarded-host"), [b"api.example.com"])
        self.assertEqual(headers.getRawHeaders(b"via"), [b"2 gateway"])
        self.assertEqual(self.gateway.stats.totals.requests, 1)

    def test_sameErrors(self) -> None:
        """
        The gateway's own errors are the HTTP/1.1 ones, byte for byte in
        their body.
        """
        peer = self.connect()
        streamId = peer.request(path=b"/nothing")
        answer = peer.answer(streamId)
        http11 = self.gateway.request("GET", "/nothing")
        self.assertEqual((answer.status, http11.code), (404, 404))
        self.assertEqual(answer.body, http11.body)

    def test_aggregation(self) -> None:
        """
        An aggregation API answers its merged JSON over HTTP/2.
        """
        peer = self.connect()
        streamId = peer.request(path=b"/both")
        answer = peer.answer(streamId)
        self.assertEqual(json.loads(answer.body), {"a": {"ok": True}, "b": {"ok": True}})

    def test_limits(self) -> None:
        """
        An API's rate limit applies to HTTP/2 requests: past it, 429.
        """
        peer = self.connect()
        codes = [peer.answer(peer.request(path=b"/limited")).status for _ in range(3)]
        self.assertEqual(codes[0], 200)
        self.assertIn(429, codes)


# -- configuration, stats and metrics ---------------------------------------------------


class ConfigTests(SynchronousTestCase):
    """
    The HTTP/2 settings of the config file.
    """

    def test_defaults(self) -> None:
        """
        TLS listeners offer HTTP/2 unless told not to; h2c is off; the
        limits have their documented defaults.
        """
        from gateway.model.config import parseConfig

        proxy = parseConfig({"proxy": {"listen": "tcp:8080"}}).proxy
        assert proxy is not None
        self.assertEqual((proxy.http2, proxy.h2c), (True, False))
        self.assertEqual(
            proxy.limits.http2,
            HTTP2Limits(
                maxConcurrentStreams=100,
                maxHeaderListSize=32768,
                initialWindowSize=65535,
                maxContinuationFrames=16,
                floodWindow=10.0,
                resetBudget=200,
                pingBudget=100,
                settingsBudget=100,
                priorityBudget=1000,
                emptyFrameBudget=100,
            ),
        )

    def test_errorsNameTheField(self) -> None:
        """
        An invalid HTTP/2 setting stops the start with an error naming it.
        """
        from gateway.model.config import ConfigError, parseConfig

        for section, key, message in (
            (
                {"limits": {"http2": {"maxConcurrentStreams": 0}}},
                "proxy.limits.http2.maxConcurrentStreams",
                "at least 1",
            ),
            (
                {"limits": {"http2": {"initialWindowSize": 1 << 31}}},
                "proxy.limits.http2.initialWindowSize",
                "at most",
            ),
            (
                {"limits": {"http2": {"resetBudget": "many"}}},
                "proxy.limits.http2.resetBudget",
                "integer",
            ),
            (
                {"limits": {"http2": {"floodWindow": 0}}},
                "proxy.limits.http2.floodWindow",
                "at least",
            ),
            ({"limits": {"http2": {"pings": 1}}}, "proxy.limits.http2.pings", ""),
            ({"h2c": "yes"}, "proxy.h2c", "true or false"),
            ({"http2": 1}, "proxy.http2", "true or false"),
        ):
            with self.assertRaises(ConfigError) as caught:
                parseConfig({"proxy": dict({"listen": "tcp:8080"}, **section)})
            self.assertEqual(caught.exception.key, key)
            self.assertIn(message, caught.exception.message)


class StatsTests(SynchronousTestCase):
    """
    What the stats and C{/metrics} say of HTTP/2.
    """

    def test_countedAndMerged(self) -> None:
        """
        The counts are in the snapshot, summed over proxies, and in
        C{/metrics}.
        """
        from twisted.web.test.requesthelper import DummyRequest

        from gateway.telemetry.metrics import metricsResource
        from gateway.telemetry.stats import mergeSnapshots

        clock = Clock()
        stats = Stats(clock)
        for what in ("connections", "streams", "streams", "resets", "floods"):
            stats.countHTTP2(what)
        snapshot = stats.snapshot()
        self.assertEqual(
            snapshot["http2"], {"connections": 1, "streams": 2, "resets": 1, "floods": 1}
        )
        merged = mergeSnapshots([snapshot, snapshot])
        self.assertEqual(
            merged["http2"], {"connections": 2, "streams": 4, "resets": 2, "floods": 2}
        )
        body = metricsResource(stats, None, None, clock).render(DummyRequest([b"metrics"]))
        text = body.decode("utf-8")
        for line in (
            "gateway_http2_connections_total 1.0",
            "gateway_http2_streams_total 2.0",
            "gateway_http2_resets_total 1.0",
            "gateway_http2_floods_total 1.0",
        ):
            self.assertIn(line, text)


class InterfaceTests(HTTP2TestCase):
    """
    The HTTP/2 objects provide the interfaces they declare.
    """

    def test_interfaces(self) -> None:
        """
        The connection is its transport's L{IPushProducer}, a stream its
        request's L{IConsumer}, the chooser an L{IHandshakeListener}.
        """
        from twisted.internet.interfaces import IConsumer, IHandshakeListener
        from zope.interface.verify import verifyObject

        self.resource.hold = True
        peer = self.connect()
        peer.request()
        verifyObject(IPushProducer, peer.server)
        verifyObject(IConsumer, self.resource.requests[0].channel)
        verifyObject(IHandshakeListener, ProtocolChoice(self.site, PEER, byALPN=True))

    def ignoringTheLimit(self, peer: H2Peer) -> H2Peer:
        """
        Make the client of C{peer} ignore the limit of concurrent streams
        the server's SETTINGS said.
        """
        settings = peer.client.remote_settings
        settings[SettingCodes.MAX_CONCURRENT_STREAMS] = 1000
        settings.acknowledge()
        return peer

    def test_tooManyStreams(self) -> None:
        """
        A stream opened over C{maxConcurrentStreams} is refused alone
        (C{REFUSED_STREAM}: a stream error, RFC 9113 5.1.2; the client may
        send it again), the others served and the connection kept; once a
        stream is over, a new one is taken.
        """
        self.limits = limits(maxConcurrentStreams=2)
        self.site = self.makeSite()
        self.resource.hold = True
        peer = self.ignoringTheLimit(self.connect())
        ids = [peer.request(path=b"/%d" % i, pump=False) for i in range(4)]
        peer.pump()
        self.assertIsNone(peer.terminated)
        self.assertEqual([peer.answer(i).reset for i in ids[2:]], [ErrorCodes.REFUSED_STREAM] * 2)
        first, _ = self.resource.requests
        self.assertEqual([r.path for r in self.resource.requests], [b"/0", b"/1"])
        first.finish()
        peer.pump()
        self.assertTrue(peer.answer(ids[0]).ended)
        again = peer.request(path=b"/again")
        self.assertEqual(self.resource.requests[-1].path, b"/again")
        self.assertIsNone(peer.answer(again).reset)

    def test_firstFlightOverTheLimit(self) -> None:
        """
        A client that opens more streams than the limit before it could
        read the SETTINGS saying it (a first flight) loses the extra
        streams alone: they are refused, the first ones served.  (The
        connection was ended, with every request of the flight.)
        """
        self.limits = limits(maxConcurrentStreams=2)
        self.site = self.makeSite()
        peer = self.connect(autoPump=False)
        ids = [peer.request(path=b"/%d" % i, pump=False) for i in range(5)]
        peer.pump()
        self.assertIsNone(peer.terminated)
        self.assertEqual([peer.answer(i).status for i in ids[:2]], [200, 200])
        self.assertEqual([peer.answer(i).reset for i in ids[2:]], [ErrorCodes.REFUSED_STREAM] * 3)

    def test_keepsOpeningOverTheLimit(self) -> None:
        """
        A client that keeps opening streams over the limit is a flood:
        each refusal spends the reset budget, and past it the connection
        ends with C{GOAWAY ENHANCE_YOUR_CALM}.
        """
        self.limits = limits(maxConcurrentStreams=2, resetBudget=5)
        self.site = self.makeSite()
        self.resource.hold = True
        peer = self.ignoringTheLimit(self.connect())
        for i in range(8):
            peer.request(path=b"/%d" % i, pump=False)
        peer.pump()
        assert peer.terminated is not None
        self.assertEqual(peer.terminated.error_code, ErrorCodes.ENHANCE_YOUR_CALM)
        self.assertEqual(self.stats.http2["floods"], 1)
        self.assertTrue(peer.transport.disconnecting)
