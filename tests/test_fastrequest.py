"""
Tests for L{gateway.http.request}: the proxy's lean request sends what
C{twisted.web}'s own request sends, and costs less.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from fakes import ScriptedUpstreamClient
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import server
from twisted.web.client import ResponseDone, ResponseFailed
from twisted.web.http import datetimeToString
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH
from twisted.web.resource import EncodingResourceWrapper, Resource
from twisted.web.server import GzipEncoderFactory
from zope.interface import implementer

from gateway.filters import FilterRegistry
from gateway.http.headers import RAW_HEADERS, headerKey, httpDate, rawHeadersOf
from gateway.http.request import GatewayRequest
from gateway.http.status import SERVER_NAME
from gateway.pipeline.resource import GatewayResource
from gateway.routing.snapshot import SnapshotManager
from gateway.store import StoreState

PEER = IPv4Address("TCP", "10.0.0.7", 40000)
HOST = IPv4Address("TCP", "127.0.0.1", 8080)


class TwistedRequest(server.Request):
    """
    C{twisted.web}'s own request, without a default C{Content-Type}, as
    the proxy used before L{GatewayRequest}.
    """

    defaultContentType = None


class Answers(Resource):
    """
    Answers in the ways a resource can: by path.
    """

    isLeaf = True

    def render(self, request: Any) -> Any:
        path = request.path
        if path == b"/length":
            request.setHeader(b"content-type", b"application/json")
            return b'{"ok":true}'
        if path == b"/chunked":
            request.write(b"abc")
            request.write(b"")
            request.write(b"defg")
            request.finish()
            return server.NOT_DONE_YET
        if path == b"/empty":
            request.finish()
            return server.NOT_DONE_YET
        if path == b"/nocontent":
            request.setResponseCode(204)
            return b""
        if path == b"/notmodified":
            request.setResponseCode(304)
            request.write(b"ignored")
            request.finish()
            return server.NOT_DONE_YET
        if path == b"/extras":
            request.setResponseCode(201, b"Made It")
            request.addCookie(b"session", b"s1", path=b"/")
            request.setETag(b'"v1"')
            request.setLastModified(1_000_000)
            request.responseHeaders.addRawHeader(b"x-multi", b"one")
            request.responseHeaders.addRawHeader(b"x-multi", b"two")
            return b"extras"
        if path == b"/args":
            return repr(sorted(request.args.items())).encode()
        if path == b"/who":
            return b"%s %s %s %r" % (
                request.getClientAddress().host.encode(),
                request.getHost().host.encode(),
                request.method,
                request.isSecure(),
            )
        return b"?"


def serve(
    site: server.Site, data: bytes, transport: Optional[StringTransport] = None
) -> Tuple[bytes, Any, StringTransport]:
    """
    @return: what a site's channel wrote for C{data}, without C{Date}
        header lines (C{twisted.web} dates with the wall clock), the
        channel and its transport.  Twisted's C{Server} is given as the
        gateway's (L{SERVER_NAME}): the one difference between them.
    """
    channel = site.buildProtocol(PEER)
    if transport is None:
        transport = StringTransport(hostAddress=HOST, peerAddress=PEER)
    channel.makeConnection(transport)
    channel.dataReceived(data)
    lines = transport.value().split(b"\r\n")
    twisted = b"Server: " + server.version
    lines = [b"Server: " + SERVER_NAME if line == twisted else line for line in lines]
    return (
        b"\r\n".join(line for line in lines if not line.startswith(b"Date: ")),
        channel,
        transport,
    )


class SameBytesTests(SynchronousTestCase):
    """
    L{GatewayRequest} answers byte for byte as C{twisted.web}'s request does.
    """

    def check(self, data: bytes, resource: Any = None) -> bytes:
        clock = Clock()
        sites = [
            server.Site(resource or Answers(), reactor=clock, requestFactory=factory)
            for factory in (TwistedRequest, GatewayRequest)
        ]
        expected, _, _ = serve(sites[0], data)
        got, _, _ = serve(sites[1], data)
        self.assertEqual(got, expected)
        self.assertTrue(got.startswith(b"HTTP/1."), got)
        return got

    def test_answers(self) -> None:
        """
        Fixed-length, chunked, empty, 204, 304 and decorated answers (status
        phrase, cookie, ETag, Last-Modified, repeated headers) are the same.
        """
        for path in (b"/length", b"/chunked", b"/empty", b"/nocontent", b"/notmodified"):
            self.check(b"GET %s HTTP/1.1\r\nHost: gw\r\n\r\n" % (path,))
        got = self.check(b"GET /extras HTTP/1.1\r\nHost: gw\r\n\r\n")
        self.assertIn(b"HTTP/1.1 201 Made It\r\n", got)
        self.assertIn(b"X-Multi: one\r\nX-Multi: two\r\n", got)
        self.assertIn(b"Set-Cookie: session=s1; Path=/", got)

    def test_chunked_body(self) -> None:
        """
        Several writes without a length are chunks, the empty write none.
        """
        got = self.check(b"GET /chunked HTTP/1.1\r\nHost: gw\r\n\r\n")
        self.assertTrue(got.endswith(b"\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"), got)

    def test_head_and_http10(self) -> None:
        """
        C{HEAD} gets the head alone; HTTP/1.0 gets no chunking, and a
        closed connection.
        """
        got = self.check(b"HEAD /length HTTP/1.1\r\nHost: gw\r\n\r\n")
        self.assertTrue(got.endswith(b"\r\n\r\n"), got)
        self.assertIn(b"Content-Length: 11\r\n", got)
        for path in (b"/length", b"/chunked"):
            got = self.check(b"GET %s HTTP/1.0\r\n\r\n" % (path,))
            self.assertNotIn(b"chunked", got)

    def test_pipelined_and_close(self) -> None:
        """
        Pipelined requests are answered in order; C{Connection: close}
        gets its header back.
        """
        got = self.check(
            b"GET /length HTTP/1.1\r\nHost: gw\r\n\r\n"
            b"GET /chunked HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
        )
        self.assertEqual(got.count(b"HTTP/1.1 200 OK"), 2)
        self.assertIn(b"Connection: close\r\n", got)

    def test_query_arguments(self) -> None:
        """
        The query string is parsed into C{args} the same way.
        """
        got = self.check(b"GET /args?a=1&b=2&a=3&e= HTTP/1.1\r\nHost: gw\r\n\r\n")
        self.assertIn(b"(b'a', [b'1', b'3'])", got)

    def test_addresses(self) -> None:
        """
        The client's and the server's addresses, and C{isSecure}, are the
        connection's.
        """
        got = self.check(b"POST /who HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n")
        self.assertTrue(got.endswith(b"10.0.0.7 127.0.0.1 POST False"), got)

    def test_form_posts(self) -> None:
        """
        A site that parses form bodies gets them parsed into C{args}.
        """
        body = b"x=1&y=2"
        got = self.check(
            b"POST /args HTTP/1.1\r\nHost: gw\r\nContent-Type: application/x-www-form-urlencoded"
            b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        self.assertIn(b"(b'x', [b'1'])", got)

    def test_encoder(self) -> None:
        """
        A resource with an encoder (gzip) is served the general way.
        """
        wrapped = EncodingResourceWrapper(Answers(), [GzipEncoderFactory()])
        got = self.check(
            b"GET /chunked HTTP/1.1\r\nHost: gw\r\nAccept-Encoding: gzip\r\n\r\n", wrapped
        )
        self.assertIn(b"Content-Encoding: gzip\r\n", got)

    def test_default_content_type(self) -> None:
        """
        A subclass with a C{defaultContentType} adds it as C{twisted.web}
        does: not to a 204, not to an empty body of length 0.
        """

        class Typed(GatewayRequest):
            defaultContentType = b"text/html"

        class TwistedTyped(server.Request):
            defaultContentType = b"text/html"

        clock = Clock()
        for path in (b"/chunked", b"/nocontent", b"/length"):
            data = b"GET %s HTTP/1.1\r\nHost: gw\r\n\r\n" % (path,)
            answers = [
                serve(server.Site(Answers(), reactor=clock, requestFactory=f), data)[0]
                for f in (TwistedTyped, Typed)
            ]
            self.assertEqual(answers[0], answers[1])

    def test_traversal(self) -> None:
        """
        A root that is not a leaf is traversed; C{postpath} is what is left
        of the path, unquoted.
        """
        seen: List[Any] = []

        class Child(Resource):
            isLeaf = True

            def render(self, request: Any) -> bytes:
                seen.append((request.prepath, request.postpath))
                return b"child"

        root = Resource()
        root.putChild(b"a", Child())
        got = self.check(b"GET /a/b%20c/d HTTP/1.1\r\nHost: gw\r\n\r\n", root)
        self.assertTrue(got.endswith(b"child"), got)
        self.assertEqual(seen, [([b"a"], [b"b c", b"d"])] * 2)


class GatewayRequestTests(SynchronousTestCase):
    """
    What L{GatewayRequest} does differently.
    """

    def test_date(self) -> None:
        """
        C{Date} is the site's reactor time, formatted once a second.
        """
        clock = Clock()
        clock.advance(1_700_000_000.25)
        site = server.Site(Answers(), reactor=clock, requestFactory=GatewayRequest)
        channel = site.buildProtocol(PEER)
        transport = StringTransport(hostAddress=HOST, peerAddress=PEER)
        channel.makeConnection(transport)
        channel.dataReceived(b"GET /length HTTP/1.1\r\nHost: gw\r\n\r\n")
        self.assertIn(b"\r\nDate: Tue, 14 Nov 2023 22:13:20 GMT\r\n", transport.value())
        self.assertEqual(httpDate(1_700_000_000.9), datetimeToString(1_700_000_000))
        self.assertIs(httpDate(1_700_000_000.1), httpDate(1_700_000_000.5))
        self.assertEqual(httpDate(86400 * 365), datetimeToString(86400 * 365))

    def test_connection_asked_once(self) -> None:
        """
        The connection's addresses and security are asked once for all
        the requests of a connection.
        """
        asked: List[str] = []

        class Counting(StringTransport):
            def getPeer(self) -> Any:
                asked.append("peer")
                return super().getPeer()

            def getHost(self) -> Any:
                asked.append("host")
                return super().getHost()

        site = server.Site(Answers(), reactor=Clock(), requestFactory=GatewayRequest)
        got, _, _ = serve(
            site,
            b"GET /who HTTP/1.1\r\nHost: gw\r\n\r\n" * 3,
            Counting(hostAddress=HOST, peerAddress=PEER),
        )
        self.assertEqual(got.count(b"10.0.0.7 127.0.0.1 GET False"), 3)
        self.assertLessEqual(asked.count("peer"), 2)
        self.assertLessEqual(asked.count("host"), 2)

    def test_one_write(self) -> None:
        """
        The head and the first body bytes go to the transport in one write.
        """
        writes: List[bytes] = []

        class Recording(StringTransport):
            def write(self, data: bytes) -> None:
                writes.append(data)
                super().write(data)

            def writeSequence(self, data: Any) -> None:
                writes.append(b"".join(data))
                super().writeSequence(data)

        site = server.Site(Answers(), reactor=Clock(), requestFactory=GatewayRequest)
        serve(
            site,
            b"GET /length HTTP/1.1\r\nHost: gw\r\n\r\n",
            Recording(hostAddress=HOST, peerAddress=PEER),
        )
        self.assertEqual(len(writes), 1)
        self.assertTrue(writes[0].endswith(b'\r\n\r\n{"ok":true}'), writes)

    def test_notify_done_finished(self) -> None:
        """
        C{notifyDone} callbacks run once, with L{None}, when the answer is
        finished; one that raises is logged and does not stop the others.
        """
        calls: List[Any] = []

        class Later(Resource):
            isLeaf = True

            def render(self, request: Any) -> Any:
                request.notifyDone(lambda reason, tag: calls.append((reason, tag)), "a")
                request.notifyDone(lambda reason: 1 / 0)
                request.notifyDone(lambda reason, tag: calls.append((reason, tag)), "b")
                self.request = request
                return server.NOT_DONE_YET

        resource = Later()
        site = server.Site(resource, reactor=Clock(), requestFactory=GatewayRequest)
        serve(site, b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
        self.assertEqual(calls, [])
        resource.request.write(b"x")
        resource.request.finish()
        self.assertEqual(calls, [(None, "a"), (None, "b")])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_notify_done_lost(self) -> None:
        """
        C{notifyDone} callbacks get the failure when the connection is lost
        before the answer is finished, and are not called again.
        """
        calls: List[Any] = []

        class Later(Resource):
            isLeaf = True

            def render(self, request: Any) -> Any:
                request.notifyDone(calls.append)
                finished = request.notifyFinish()
                finished.addErrback(lambda f: calls.append("deferred"))
                return server.NOT_DONE_YET

        site = server.Site(Later(), reactor=Clock(), requestFactory=GatewayRequest)
        _, channel, _ = serve(site, b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
        channel.connectionLost(Failure(ConnectionError("gone")))
        self.assertEqual(len(calls), 2)
        self.assertEqual(calls[0], "deferred")
        self.assertIsInstance(calls[1], Failure)
        calls[1].trap(ConnectionError)
        channel.connectionLost(Failure(ConnectionError("again")))
        self.assertEqual(len(calls), 2)


class HeadersTests(SynchronousTestCase):
    """
    Direct access to L{Headers}.
    """

    def test_raw_headers(self) -> None:
        """
        The installed Twisted keeps its headers in a dict that
        L{rawHeadersOf} gives, under the keys L{headerKey} computes.
        """
        self.assertTrue(RAW_HEADERS)
        headers = Headers()
        raw = rawHeadersOf(headers)
        assert raw is not None
        raw[headerKey(b"x-thing")] = [b"1"]
        raw[headerKey(b"TE")] = [b"trailers"]
        self.assertEqual(headers.getRawHeaders(b"X-Thing"), [b"1"])
        self.assertEqual(headers.getRawHeaders(b"te"), [b"trailers"])
        headers.addRawHeader(b"X-THING", b"2")
        self.assertEqual(raw[headerKey(b"x-thing")], [b"1", b"2"])

    def test_not_headers(self) -> None:
        """
        Anything but a L{Headers} has no raw dict; an invalid name is
        refused.
        """

        class Sub(Headers):
            pass

        self.assertIsNone(rawHeadersOf({}))
        self.assertIsNone(rawHeadersOf(Sub()))
        self.assertRaises(ValueError, headerKey, b"bad name")


# -- the proxy's streaming, on GatewayRequest -----------------------------------


@implementer(IPushProducer)
class BodyTransport:
    """
    What a response body's protocol sees as its transport: stopping it
    fails the body, as the upstream client does when it aborts.
    """

    def __init__(self, response: SlowResponse) -> None:
        self.response = response
        self.stopped = False

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        self.stopped = True
        self.response.protocol.connectionLost(Failure(ResponseFailed([Failure(ValueError())])))


class SlowResponse:
    """
    An upstream response whose body the test sends.
    """

    code = 200
    phrase = b"OK"

    def __init__(self, length: Any) -> None:
        self.length = length
        self.headers = Headers({b"content-type": [b"text/plain"]})
        if length is not UNKNOWN_LENGTH:
            self.headers.setRawHeaders(b"content-length", [b"%d" % (length,)])
        self.protocol: Any = None

    def deliverBody(self, protocol: Any) -> None:
        self.protocol = protocol
        protocol.makeConnection(BodyTransport(self))


class SlowClient(ScriptedUpstreamClient):
    def __init__(self, length: Any) -> None:
        self.length = length
        self.responses: List[SlowResponse] = []

    def respond(self, backend, method, uri, headers, bodyProducer, timeout):
        from twisted.internet.defer import succeed

        response = SlowResponse(self.length)
        self.responses.append(response)
        return succeed(response)


def proxySite(clock: Clock, client: Any) -> Tuple[server.Site, GatewayResource]:
    manager = SnapshotManager(FilterRegistry({}), clock)
    manager.apply(
        StoreState(
            1,
            {
                "servers": {"s": {"name": "s", "addr": "127.0.0.1:1"}},
                "clusters": {"c": {"name": "c", "servers": ["s"]}},
                "apis": {"all": {"name": "all", "urlPattern": "/*", "nodes": [{"cluster": "c"}]}},
                "routings": {},
            },
        )
    )
    resource = GatewayResource(manager, client, clock)
    site = server.Site(resource, reactor=clock, requestFactory=GatewayRequest)
    return site, resource


class ProxyStreamingTests(SynchronousTestCase):
    """
    The proxy streams bodies through L{GatewayRequest}.
    """

    def test_small_body_relayed(self) -> None:
        """
        A small body of known length is relayed without registering the
        upstream as a producer, and the request is accounted for.
        """
        clock = Clock()
        client = SlowClient(5)
        site, resource = proxySite(clock, client)
        got, channel, transport = serve(site, b"GET /x HTTP/1.1\r\nHost: gw\r\n\r\n")
        [response] = client.responses
        self.assertIsNone(channel._channel.requests[0].producer)
        self.assertEqual(resource.inFlight, 1)
        response.protocol.dataReceived(b"hello")
        response.protocol.connectionLost(Failure(ResponseDone()))
        self.assertIn(b"\r\nContent-Length: 5\r\n", transport.value())
        self.assertTrue(transport.value().endswith(b"\r\n\r\nhello"))
        self.assertEqual(resource.inFlight, 0)
        backend = resource._manager.backends["s"]
        self.assertEqual(backend.active, 0)

    def test_client_leaves_mid_body(self) -> None:
        """
        A client that leaves while a streamed body is relayed stops the
        upstream body; the backend's request is over, without errors.
        """
        for length in (UNKNOWN_LENGTH, 10_000_000):
            clock = Clock()
            client = SlowClient(length)
            site, resource = proxySite(clock, client)
            _, channel, transport = serve(site, b"GET /x HTTP/1.1\r\nHost: gw\r\n\r\n")
            [response] = client.responses
            request = channel._channel.requests[0]
            self.assertIsNotNone(request.producer)
            response.protocol.dataReceived(b"part")
            channel.connectionLost(Failure(ConnectionError("gone")))
            self.assertTrue(response.protocol.transport.stopped)
            self.assertEqual(resource._manager.backends["s"].active, 0)
            self.assertEqual(resource.inFlight, 0)
            self.assertEqual(self.flushLoggedErrors(), [])

    def test_draining_closes_after_answer(self) -> None:
        """
        While the proxy drains, a keep-alive connection is closed once its
        answer is out.
        """
        clock = Clock()
        client = SlowClient(2)
        site, resource = proxySite(clock, client)
        _, channel, transport = serve(site, b"GET /x HTTP/1.1\r\nHost: gw\r\n\r\n")
        drained = resource.drain(10)
        [response] = client.responses
        response.protocol.dataReceived(b"ok")
        response.protocol.connectionLost(Failure(ResponseDone()))
        self.assertTrue(transport.value().endswith(b"\r\n\r\nok"))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.successResultOf(drained), 0)


class CopyHeadersTests(SynchronousTestCase):
    """
    The proxy's header copies give the same headers whether they use the
    raw dict of L{Headers} or its methods.
    """

    class Slow(Headers):
        """
        Headers that L{rawHeadersOf} does not open: copied the general way.
        """

    def sample(self, kind: type) -> Headers:
        headers = kind()
        for name, value in [
            (b"Host", b"gw"),
            (b"Connection", b"keep-alive, X-Hop"),
            (b"connection", b"Upgrade"),
            (b"X-Hop", b"secret"),
            (b"Upgrade", b"h2c"),
            (b"TE", b"trailers"),
            (b"Keep-Alive", b"timeout=5"),
            (b"X-Forwarded-For", b"1.2.3.4"),
            (b"Content-Length", b"0"),
            (b"Accept", b"a"),
            (b"accept", b"b"),
            (b"X-Kept", b"yes"),
            (b"X-Consumer-Name", b"admin"),
            (b"x-consumer-id", b"0"),
            (b"X-CONSUMER-GROUPS", b"gold"),
        ]:
            headers.addRawHeader(name, value)
        return headers

    def test_request_headers(self) -> None:
        """
        Hop-by-hop headers, those C{Connection} names, those the upstream
        client sets, and the consumer headers only an API's auth sets (in
        any case, from a trusted peer too) are dropped; the rest is copied,
        not shared.
        """
        from gateway.pipeline.forwarding import copyRequestHeaders

        fast = copyRequestHeaders(self.sample(Headers))
        slow = copyRequestHeaders(self.sample(self.Slow))
        self.assertEqual(list(fast.getAllRawHeaders()), list(slow.getAllRawHeaders()))
        self.assertEqual(
            sorted(name for name, _ in fast.getAllRawHeaders()), [b"Accept", b"X-Kept"]
        )
        incoming = self.sample(Headers)
        for trusted in (False, True):
            for kind in (Headers, self.Slow):
                names = [
                    n.lower()
                    for n, _ in copyRequestHeaders(self.sample(kind), trusted).getAllRawHeaders()
                ]
                self.assertEqual([n for n in names if n.startswith(b"x-consumer")], [])
        copied = copyRequestHeaders(incoming)
        copied.addRawHeader(b"accept", b"c")
        self.assertEqual(incoming.getRawHeaders(b"accept"), [b"a", b"b"])

    def test_response_headers(self) -> None:
        """
        An upstream answer's headers replace the client's of the same name,
        but hop-by-hop ones and those C{Connection} names.
        """
        from gateway.pipeline.forwarding import copyResponseHeaders

        results = []
        for kind in (Headers, self.Slow):
            outgoing = Headers({b"Server": [b"gateway"], b"X-Mine": [b"1"]})
            if kind is self.Slow:
                outgoing = self.Slow({b"Server": [b"gateway"], b"X-Mine": [b"1"]})
            upstream = self.sample(kind)
            upstream.setRawHeaders(b"Server", [b"nginx"])
            copyResponseHeaders(upstream, outgoing)
            results.append(list(outgoing.getAllRawHeaders()))
        self.assertEqual(results[0], results[1])
        names = [name for name, _ in results[0]]
        self.assertEqual(names[:2], [b"Server", b"X-Mine"])
        self.assertNotIn(b"X-Hop", names)
        self.assertNotIn(b"Upgrade", names)
        self.assertIn(b"X-Forwarded-For", names)
        self.assertEqual(dict(results[0])[b"Server"], [b"nginx"])


class ClientAddressTests(SynchronousTestCase):
    """
    L{gateway.pipeline.forwarding.ClientAddresses}: who the client is
    behind trusted proxies.
    """

    def clientOf(self, forwardedFor: List[bytes], peer: str = "10.0.0.2") -> str:
        from twisted.internet.address import IPv4Address
        from twisted.web.test.requesthelper import DummyRequest

        from gateway.pipeline.forwarding import ClientAddresses

        request = DummyRequest([b""])
        for value in forwardedFor:
            request.requestHeaders.addRawHeader(b"x-forwarded-for", value)
        return ClientAddresses(["10.0.0.0/8"]).clientOf(request, IPv4Address("TCP", peer, 40000))

    def test_rightMostUntrusted(self) -> None:
        """
        The right-most hop that is no trusted proxy is the client; hops
        with a port (as some proxies write them) are read without it.
        """
        self.assertEqual(self.clientOf([b"1.1.1.1, 2.2.2.2, 10.0.0.9"]), "2.2.2.2")
        self.assertEqual(self.clientOf([b"1.1.1.1", b"2.2.2.2:4711"]), "2.2.2.2")
        self.assertEqual(self.clientOf([b"[2001:db8::1]:443, 10.0.0.9"]), "2001:db8::1")
        self.assertEqual(self.clientOf([b"10.0.0.7, 10.0.0.9"]), "10.0.0.2")
        self.assertEqual(self.clientOf([], peer="192.0.2.1"), "192.0.2.1")

    def test_notAnAddress(self) -> None:
        """
        A hop that is no IP address is not believed, nor anything left of
        it: the last trusted hop (or the peer) is the client, never the
        text a client wrote (which would give it a rate limit key, an
        access log address, of its choosing).
        """
        self.assertEqual(self.clientOf([b"anything, 10.0.0.9"]), "10.0.0.9")
        self.assertEqual(self.clientOf([b"1.1.1.1, unknown"]), "10.0.0.2")
        self.assertEqual(self.clientOf([b"2.2.2.2:port"]), "10.0.0.2")
        self.assertEqual(self.clientOf([b"[2001:db8::1"]), "10.0.0.2")
