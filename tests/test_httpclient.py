"""
Tests for L{gateway.http.client}: the response parser, request writing, the
keep-alive pool, timeouts, cancellation and backpressure with a memory
reactor, then the client against real twisted.web servers on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import io
import json
import socket
from typing import Any, List, Optional, Tuple

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, error, reactor, task
from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import resource, server
from twisted.web.client import FileBodyProducer, PotentialDataLoss, ResponseDone, ResponseFailed
from twisted.web.error import SchemeNotSupported
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IAgent, IBodyProducer, IResponse
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gateway.http import client as httpclient
from gateway.http.body import BytesBodyProducer
from gateway.http.client import (
    HTTP11UpstreamClient,
    UpstreamAgent,
    parseContentLength,
    parseHead,
    request,
    splitHead,
)
from gateway.http.errors import UpstreamBroken, UpstreamConnectError, UpstreamTimeout
from gateway.interfaces import IUpstreamClient, IUpstreamRequest

# -- helpers ----------------------------------------------------------------------


class FakeBackend:
    """
    What the client needs of a L{gateway.balancing.backend.Backend}.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 8080) -> None:
        self.host = host
        self.port = port


class Upstream:
    """
    The server end of one connection the client asked the memory reactor
    for.
    """

    def __init__(self, memoryReactor: MemoryReactorClock, index: int) -> None:
        factory = memoryReactor.tcpClients[index][2]
        self.protocol = factory.buildProtocol(None)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def received(self) -> bytes:
        """
        @return: the bytes the client wrote, and forget them.
        """
        data = self.transport.value()
        self.transport.clear()
        return data

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def lose(self, reason: Optional[Exception] = None) -> None:
        self.protocol.connectionLost(Failure(reason or error.ConnectionDone()))


class Collect(Protocol):
    """
    Collects a response body and the reason it ended.
    """

    def __init__(self) -> None:
        self.chunks: List[bytes] = []
        self.reason: Optional[Failure] = None

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def connectionLost(self, reason: Failure) -> None:
        self.reason = reason


@implementer(IBodyProducer)
class ControlledProducer:
    """
    A request body producer the test drives by hand.
    """

    def __init__(self, length: Any = UNKNOWN_LENGTH) -> None:
        self.length = length
        self.consumer: Any = None
        self.finished: defer.Deferred = defer.Deferred()
        self.stopped = False
        self.paused = False

    def startProducing(self, consumer: Any) -> defer.Deferred:
        self.consumer = consumer
        return self.finished

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self.stopped = True


SIMPLE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello"


class ClientTestCase(SynchronousTestCase):
    """
    A client on a memory reactor, and helpers to talk to it.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.client = HTTP11UpstreamClient(self.reactor, idleTimeout=60.0)
        self.backend = FakeBackend()
        self.upstreams: List[Upstream] = []

    def request(
        self,
        method: bytes = b"GET",
        uri: bytes = b"/",
        headers: Optional[Headers] = None,
        body: Any = None,
        timeout: Optional[float] = None,
    ) -> defer.Deferred:
        return request(
            self.client,
            self.backend,
            method,
            uri,
            headers if headers is not None else Headers(),
            body,
            timeout,
        )

    def connect(self) -> Upstream:
        """
        Accept the newest connection attempt.
        """
        self.assertGreater(len(self.reactor.tcpClients), len(self.upstreams))
        upstream = Upstream(self.reactor, len(self.upstreams))
        self.upstreams.append(upstream)
        return upstream

    def exchange(
        self, answer: bytes, method: bytes = b"GET", upstream: Optional[Upstream] = None
    ) -> Any:
        """
        Send a request, answer it with C{answer}, collect the body.

        @return: C{(response, collector, upstream)}.
        """
        d = self.request(method)
        if upstream is None:
            upstream = self.connect()
        upstream.received()
        upstream.send(answer)
        response = self.successResultOf(d)
        collect = Collect()
        response.deliverBody(collect)
        return response, collect, upstream

    def idle(self) -> int:
        pools = list(self.client._pools.values())
        return sum(len(p.idle) for p in pools)


# -- parsing functions --------------------------------------------------------


class SplitHeadTests(SynchronousTestCase):
    """
    L{splitHead} finds where a response head ends.
    """

    def test_crlf(self) -> None:
        """
        A head of CRLF-terminated lines is split into its lines, and the
        index of what follows is returned.
        """
        data = b"HTTP/1.1 200 OK\r\nA: b\r\n\r\nbody"
        self.assertEqual(splitHead(data), ([b"HTTP/1.1 200 OK", b"A: b"], len(data) - 4))

    def test_incomplete(self) -> None:
        """
        Without an empty line there is no head yet.
        """
        self.assertIsNone(splitHead(b"HTTP/1.1 200 OK\r\nA: b\r\n"))
        self.assertIsNone(splitHead(b"HTTP/1.1 200 OK\r\nA: b\r\n\r"))

    def test_bareLF(self) -> None:
        """
        Lines may end with a bare LF, alone or mixed with CRLF.
        """
        for head in (b"HTTP/1.1 200 OK\nA: b\n\n", b"HTTP/1.1 200 OK\r\nA: b\n\r\n"):
            self.assertEqual(splitHead(head + b"X"), ([b"HTTP/1.1 200 OK", b"A: b"], len(head)))

    def test_bareLFEndBeforeCRLFInBody(self) -> None:
        """
        An LF-only end of head is found even when the body holds a CRLFCRLF
        further on.
        """
        head = b"HTTP/1.1 200 OK\nContent-Length: 4\n\n"
        self.assertEqual(
            splitHead(head + b"\r\n\r\n"), ([b"HTTP/1.1 200 OK", b"Content-Length: 4"], len(head))
        )

    def test_bareCR(self) -> None:
        """
        A bare CR inside a line becomes a space (RFC 9112 2.2).
        """
        lines, _ = splitHead(b"HTTP/1.1 200 OK\r\nA: b\rc\r\n\r\n")  # type: ignore[misc]
        self.assertEqual(lines, [b"HTTP/1.1 200 OK", b"A: b c"])

    def test_nul(self) -> None:
        """
        A NUL byte in the head is refused.
        """
        self.assertRaises(UpstreamBroken, splitHead, b"HTTP/1.1 200 OK\r\nA: b\x00\r\n\r\n")

    def test_start(self) -> None:
        """
        The search resumes at C{start} yet finds an end that straddles it.
        """
        data = b"HTTP/1.1 200 OK\r\nA: b\r\n\r\n"
        self.assertEqual(splitHead(data, len(data) - 5)[1], len(data))  # type: ignore[index]


class ParseHeadTests(SynchronousTestCase):
    """
    L{parseHead} reads the status line and the header fields.
    """

    def parse(self, head: bytes) -> Any:
        lines, _ = splitHead(head + b"\r\n\r\n")  # type: ignore[misc]
        return parseHead(lines)

    def test_statusLine(self) -> None:
        """
        Version, code and phrase are read; the phrase may be empty or
        missing.
        """
        self.assertEqual(self.parse(b"HTTP/1.1 200 OK")[:3], ((b"HTTP", 1, 1), 200, b"OK"))
        self.assertEqual(
            self.parse(b"HTTP/1.0 418 I'm a teapot")[:3], ((b"HTTP", 1, 0), 418, b"I'm a teapot")
        )
        self.assertEqual(self.parse(b"HTTP/1.1 204 ")[1:3], (204, b""))
        self.assertEqual(self.parse(b"HTTP/1.1 204")[1:3], (204, b""))

    def test_linesRemembered(self) -> None:
        """
        Header lines seen before are taken from a bounded cache, and parse
        as they did the first time, framing fields included; lines that
        vary only fill the cache up to its bound, when it starts over.
        """
        head = b"HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length:  5 \r\nConnection: close"
        first = self.parse(head)
        again = self.parse(head)
        self.assertEqual(
            (again[3].getRawHeaders(b"server"), again[4], again[6]), ([b"x"], [b"5"], [b"close"])
        )
        self.assertEqual(list(first[3].getAllRawHeaders()), list(again[3].getAllRawHeaders()))
        for i in range(httpclient._MAX_LINES + 10):
            parsed = self.parse(b"HTTP/1.1 200 OK\r\nX-Id: %d" % (i,))
            self.assertEqual(parsed[3].getRawHeaders(b"x-id"), [b"%d" % (i,)])
            self.assertLessEqual(len(httpclient._LINES), httpclient._MAX_LINES)
        with self.assertRaises(UpstreamBroken):
            self.parse(b"HTTP/1.1 200 OK\r\nBad Name: 1")
        with self.assertRaises(UpstreamBroken):
            self.parse(b"HTTP/1.1 200 OK\r\nBad Name: 1")

    def test_linesRememberedWithoutRawKeys(self) -> None:
        """
        On a Twisted whose L{Headers} the parser cannot fill directly, a
        line taken from the cache is added under its own name too.
        """
        self.patch(httpclient, "_RAW_KEYS", False)
        self.patch(httpclient, "_FIELDS", {})
        self.patch(httpclient, "_LINES", {})
        for _ in range(2):
            parsed = self.parse(b"HTTP/1.1 200 OK\r\nX-Thing: 1\r\nContent-Length: 5")
            self.assertEqual(parsed[3].getRawHeaders(b"x-thing"), [b"1"])
            self.assertEqual(parsed[4], [b"5"])

    def test_malformedStatusLine(self) -> None:
        """
        Anything but C{HTTP/1.x DDD[ phrase]} is refused.
        """
        for line in [
            b"HTTP/2 200 OK",
            b"HTTP/1.2 200 OK",
            b"http/1.1 200 OK",
            b"HTTP/1.1 20 OK",
            b"HTTP/1.1 2000 OK",
            b"HTTP/1.1 20x OK",
            b"HTTP/1.1  200 OK",
            b"HTTP/1.1 099 Low",
            b"ICY 200 OK",
            b"HTTP/1.1",
            b"garbage",
        ]:
            self.assertRaises(UpstreamBroken, self.parse, line)

    def test_headers(self) -> None:
        """
        Fields are kept in a L{Headers}, values stripped of surrounding
        whitespace, repeated fields in order, C{Content-Length} and
        C{Connection} included; the framing fields are reported apart.
        """
        version, code, phrase, headers, cl, te, conn = self.parse(
            b"HTTP/1.1 200 OK\r\nContent-Length:  12 \r\nConnection: close, X-Hop\r\n"
            b"X-Hop: 1\r\nset-cookie: a=1\r\nSet-Cookie: b=2\r\nEmpty:\r\nX-Tab:\tv\t"
        )
        self.assertEqual(headers.getRawHeaders(b"content-length"), [b"12"])
        self.assertEqual(headers.getRawHeaders(b"connection"), [b"close, X-Hop"])
        self.assertEqual(headers.getRawHeaders(b"set-cookie"), [b"a=1", b"b=2"])
        self.assertEqual(headers.getRawHeaders(b"empty"), [b""])
        self.assertEqual(headers.getRawHeaders(b"x-tab"), [b"v"])
        self.assertEqual((cl, te, conn), ([b"12"], None, [b"close, X-Hop"]))

    def test_sameAsPublicAPI(self) -> None:
        """
        The L{Headers} built by the parser equal one built with
        C{addRawHeader}, even for names Twisted capitalises specially.
        """
        fields = [
            (b"etag", b'"x"'),
            (b"WWW-Authenticate", b"Basic"),
            (b"content-md5", b"abc"),
            (b"X-Custom-Thing", b"1"),
            (b"x-custom-thing", b"2"),
            (b"Transfer-Encoding", b"chunked"),
        ]
        head = b"HTTP/1.1 200 OK\r\n" + b"\r\n".join(n + b": " + v for n, v in fields)
        expected = Headers()
        for name, value in fields:
            expected.addRawHeader(name, value)
        headers = self.parse(head)[3]
        self.assertEqual(headers, expected)
        self.assertEqual(list(headers.getAllRawHeaders()), list(expected.getAllRawHeaders()))

    def test_malformedFields(self) -> None:
        """
        A field line without a colon, with an empty name or with whitespace
        or other non-token bytes in its name is refused.
        """
        for line in [
            b"NoColon",
            b": value",
            b"Bad Name: x",
            b"Name : x",
            b"N\x7fame: x",
            b"(a): b",
        ]:
            self.assertRaises(UpstreamBroken, self.parse, b"HTTP/1.1 200 OK\r\n" + line)

    def test_obsFold(self) -> None:
        """
        A folded field value is unfolded with a space (RFC 9112 5.2).
        """
        headers = self.parse(b"HTTP/1.1 200 OK\r\nX-A: one\r\n  two\r\n\tthree\r\nX-B: b")[3]
        self.assertEqual(headers.getRawHeaders(b"x-a"), [b"one two three"])
        self.assertEqual(headers.getRawHeaders(b"x-b"), [b"b"])

    def test_foldBeforeFirstField(self) -> None:
        """
        Whitespace before the first field line is refused.
        """
        self.assertRaises(UpstreamBroken, self.parse, b"HTTP/1.1 200 OK\r\n X-A: one")


class ParseContentLengthTests(SynchronousTestCase):
    """
    L{parseContentLength} validates C{Content-Length} values.
    """

    def test_valid(self) -> None:
        """
        One number is the length.
        """
        self.assertEqual(parseContentLength([b"0"]), (0, False))
        self.assertEqual(parseContentLength([b"12345678901234"]), (12345678901234, False))

    def test_duplicates(self) -> None:
        """
        Identical repeated values are one length, to be normalised.
        """
        self.assertEqual(parseContentLength([b"10", b"10"]), (10, True))
        self.assertEqual(parseContentLength([b"10, 10"]), (10, True))

    def test_invalid(self) -> None:
        """
        Differing values and values that are not plain digits are refused.
        """
        for values in [[b"10", b"11"], [b"10, 11"], [b"+10"], [b"-1"], [b"1e3"], [b""], [b"0x10"]]:
            self.assertRaises(UpstreamBroken, parseContentLength, values)


# -- the client: framing ------------------------------------------------------------


class FramingTests(ClientTestCase):
    """
    Response bodies are framed by RFC 9112 section 6.
    """

    def test_contentLength(self) -> None:
        """
        A body of known length is delivered, then L{ResponseDone}; the
        headers keep C{Content-Length}; the connection is pooled.
        """
        response, collect, _ = self.exchange(SIMPLE)
        self.assertEqual((response.code, response.phrase, response.length), (200, b"OK", 5))
        self.assertEqual(response.version, (b"HTTP", 1, 1))
        self.assertEqual(response.headers.getRawHeaders(b"content-length"), [b"5"])
        self.assertEqual(collect.body, b"hello")
        collect.reason.trap(ResponseDone)
        self.assertEqual(self.idle(), 1)

    def test_zeroLength(self) -> None:
        """
        C{Content-Length: 0} ends the response at once.
        """
        response, collect, _ = self.exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual((response.length, collect.body), (0, b""))
        collect.reason.trap(ResponseDone)
        self.assertEqual(self.idle(), 1)

    def test_bodyWithHead(self) -> None:
        """
        A sized body that comes in the same read as its head is the
        response's C{body}, and the exchange is over when the response is
        handed out: the connection is back in the pool already, and the
        body is still delivered to a protocol.  A body still to come leaves
        C{body} L{None}.
        """
        seen = []
        d = self.request()
        upstream = self.connect()
        d.addCallback(lambda response: seen.append((response.body, self.idle())) or response)
        upstream.send(SIMPLE + b"\r\n")
        self.assertEqual(seen, [(b"hello", 1)])
        collect = Collect()
        self.successResultOf(d).deliverBody(collect)
        self.assertEqual(collect.body, b"hello")
        collect.reason.trap(ResponseDone)

        d = self.request()
        upstream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel")
        response = self.successResultOf(d)
        self.assertIsNone(response.body)
        self.assertEqual(self.idle(), 0)
        collect = Collect()
        response.deliverBody(collect)
        upstream.send(b"lo")
        self.assertEqual((collect.body, self.idle()), (b"hello", 1))
        self.assertIsNone(response.body)

    def test_chunked(self) -> None:
        """
        A chunked body is de-chunked; chunk extensions and trailer fields
        are dropped; the length is unknown; the connection is pooled.
        """
        response, collect, _ = self.exchange(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;name=value;other\r\nhello\r\n"
            b"1 ; spaced = ext\r\n \r\n"
            b"A\r\n0123456789\r\n"
            b"0;last\r\nX-Trailer: yes\r\nOther: too\r\n\r\n"
        )
        self.assertIs(response.length, UNKNOWN_LENGTH)
        self.assertEqual(collect.body, b"hello 0123456789")
        self.assertFalse(response.headers.hasHeader(b"x-trailer"))
        collect.reason.trap(ResponseDone)
        self.assertEqual(self.idle(), 1)

    def test_chunkedLowerAndUpperHex(self) -> None:
        """
        Chunk sizes are hexadecimal in either case.
        """
        _, collect, _ = self.exchange(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n"
            + b"1a\r\n"
            + b"x" * 26
            + b"\r\n1A\r\n"
            + b"y" * 26
            + b"\r\n0\r\n\r\n"
        )
        self.assertEqual(collect.body, b"x" * 26 + b"y" * 26)
        collect.reason.trap(ResponseDone)

    def test_badChunkSize(self) -> None:
        """
        A chunk size that is not hexadecimal breaks the body, and the
        connection is dropped.
        """
        for size in [b"x", b"", b"-1", b"0x5", b"+5", b"1 2"]:
            response, collect, upstream = self.exchange(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + size + b"\r\nhello\r\n"
            )
            collect.reason.trap(ResponseFailed)
            self.assertTrue(upstream.transport.disconnected)
            self.assertEqual(self.idle(), 0)
            self.upstreams.clear()
            self.reactor.tcpClients.clear()

    def test_chunkWithoutCRLF(self) -> None:
        """
        A chunk whose data is not followed by CRLF breaks the body.
        """
        _, collect, upstream = self.exchange(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX\r\n0\r\n\r\n"
        )
        self.assertEqual(collect.body, b"hello")
        collect.reason.trap(ResponseFailed)
        self.assertTrue(upstream.transport.disconnected)

    def test_chunkSizeLineTooLong(self) -> None:
        """
        A chunk-size line longer than L{httpclient.MAX_CHUNK_LINE} breaks
        the body.
        """
        _, collect, _ = self.exchange(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;"
            + b"e" * httpclient.MAX_CHUNK_LINE
        )
        collect.reason.trap(ResponseFailed)

    def test_trailerTooLarge(self) -> None:
        """
        A trailer section larger than L{httpclient.MAX_HEAD} breaks the
        body.
        """
        _, collect, _ = self.exchange(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
            + b"X-T: " * (httpclient.MAX_HEAD // 4)
        )
        collect.reason.trap(ResponseFailed)

    def test_untilClose(self) -> None:
        """
        Without C{Content-Length} or C{Transfer-Encoding} the body ends
        when the upstream closes: L{PotentialDataLoss}, and the connection
        is not pooled.
        """
        response, collect, upstream = self.exchange(b"HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\nsome")
        self.assertIs(response.length, UNKNOWN_LENGTH)
        upstream.send(b" more")
        self.assertIsNone(collect.reason)
        upstream.lose()
        self.assertEqual(collect.body, b"some more")
        collect.reason.trap(PotentialDataLoss)
        self.assertEqual(self.idle(), 0)

    def test_untilCloseReset(self) -> None:
        """
        A close-delimited body cut by a reset, not a clean close, is
        broken, not merely possibly short.
        """
        _, collect, upstream = self.exchange(b"HTTP/1.1 200 OK\r\n\r\nsome")
        upstream.lose(error.ConnectionLost())
        collect.reason.trap(ResponseFailed)

    def test_head(self) -> None:
        """
        The answer to C{HEAD} has no body whatever its C{Content-Length},
        which stays in the headers; the connection is pooled and the next
        response parses cleanly.
        """
        response, collect, upstream = self.exchange(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", method=b"HEAD"
        )
        self.assertEqual(response.length, 0)
        self.assertEqual(response.headers.getRawHeaders(b"content-length"), [b"1234"])
        self.assertEqual(collect.body, b"")
        collect.reason.trap(ResponseDone)
        self.assertEqual(self.idle(), 1)
        response, collect, _ = self.exchange(SIMPLE, upstream=upstream)
        self.assertEqual(collect.body, b"hello")

    def test_headChunked(self) -> None:
        """
        The answer to C{HEAD} has no body even when it says chunked.
        """
        response, collect, _ = self.exchange(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", method=b"HEAD"
        )
        collect.reason.trap(ResponseDone)
        self.assertEqual(self.idle(), 1)

    def test_noContentAndNotModified(self) -> None:
        """
        204 and 304 have no body; a 304's C{Content-Length} stays in the
        headers.
        """
        response, collect, upstream = self.exchange(b"HTTP/1.1 204 No Content\r\n\r\n")
        self.assertEqual((response.code, response.length), (204, 0))
        collect.reason.trap(ResponseDone)
        response, collect, _ = self.exchange(
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n", upstream=upstream
        )
        self.assertEqual((response.code, response.length), (304, 0))
        self.assertEqual(response.headers.getRawHeaders(b"content-length"), [b"99"])
        collect.reason.trap(ResponseDone)
        self.assertEqual(self.idle(), 1)

    def test_interimSkipped(self) -> None:
        """
        1xx answers (100 Continue, 103 Early Hints) are skipped and the
        final answer is the response.
        """
        response, collect, _ = self.exchange(
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" + SIMPLE
        )
        self.assertEqual(response.code, 200)
        self.assertFalse(response.headers.hasHeader(b"link"))
        self.assertEqual(collect.body, b"hello")

    def test_interimThenWait(self) -> None:
        """
        After an interim answer the client waits for the final one.
        """
        d = self.request()
        upstream = self.connect()
        upstream.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.assertNoResult(d)
        upstream.send(SIMPLE)
        self.assertEqual(self.successResultOf(d).code, 200)

    def test_switchingProtocols(self) -> None:
        """
        A 101 answer is not supported: the request fails with
        L{UpstreamBroken} and the connection is dropped.
        """
        d = self.request()
        upstream = self.connect()
        upstream.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
        self.failureResultOf(d, UpstreamBroken)
        self.assertTrue(upstream.transport.disconnected)

    def test_contentLengthWithTransferEncoding(self) -> None:
        """
        An answer with both C{Transfer-Encoding: chunked} and
        C{Content-Length} (in either order, whatever their values) fails
        the request with L{UpstreamBroken} (a 502 to the client: never
        passed on) and drops the connection (RFC 9112 6.3: a message to
        handle as an error).
        """
        for fields in [
            b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
            b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        ]:
            d = self.request()
            upstream = self.connect()
            upstream.send(b"HTTP/1.1 200 OK\r\n" + fields + b"\r\n5\r\nhello\r\n0\r\n\r\n")
            self.assertIn("both", self.failureResultOf(d, UpstreamBroken).getErrorMessage())
            self.assertTrue(upstream.transport.disconnected)
        self.assertEqual(self.idle(), 0)

    def test_unsupportedTransferEncoding(self) -> None:
        """
        A transfer coding other than chunked alone fails the request.
        """
        for te in [b"gzip", b"gzip, chunked", b"chunked, chunked", b"identity"]:
            d = self.request()
            upstream = self.connect()
            upstream.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + te + b"\r\n\r\n")
            self.failureResultOf(d, UpstreamBroken)
            self.assertTrue(upstream.transport.disconnected)

    def test_transferEncodingInHTTP10(self) -> None:
        """
        C{Transfer-Encoding} in an HTTP/1.0 response is faulty framing.
        """
        d = self.request()
        self.connect().send(b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        self.failureResultOf(d, UpstreamBroken)

    def test_conflictingContentLength(self) -> None:
        """
        Differing or invalid C{Content-Length} values fail the request and
        drop the connection.
        """
        for fields in [
            b"Content-Length: 5\r\nContent-Length: 6\r\n",
            b"Content-Length: 5, 6\r\n",
            b"Content-Length: five\r\n",
            b"Content-Length: -5\r\n",
        ]:
            d = self.request()
            upstream = self.connect()
            upstream.send(b"HTTP/1.1 200 OK\r\n" + fields + b"\r\nhello")
            self.failureResultOf(d, UpstreamBroken)
            self.assertTrue(upstream.transport.disconnected)
        self.assertEqual(self.idle(), 0)

    def test_duplicateContentLength(self) -> None:
        """
        Identical repeated C{Content-Length} values are accepted and
        normalised to one.
        """
        response, collect, _ = self.exchange(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"
        )
        self.assertEqual(response.headers.getRawHeaders(b"content-length"), [b"5"])
        self.assertEqual(collect.body, b"hello")

    def test_http10(self) -> None:
        """
        An HTTP/1.0 response is reused only with C{Connection: keep-alive}.
        """
        _, collect, upstream = self.exchange(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
        collect.reason.trap(ResponseDone)
        self.assertEqual(self.idle(), 0)
        self.assertTrue(upstream.transport.disconnecting)
        _, collect, upstream = self.exchange(
            b"HTTP/1.0 200 OK\r\nConnection: x-other\r\nContent-Length: 2\r\n\r\nok"
        )
        self.assertEqual(self.idle(), 0)
        _, collect, upstream = self.exchange(
            b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok"
        )
        self.assertEqual(self.idle(), 1)

    def test_connectionClose(self) -> None:
        """
        C{Connection: close} keeps the connection out of the pool; the
        header itself stays visible to the proxy, with the fields it names.
        """
        response, collect, upstream = self.exchange(
            b"HTTP/1.1 200 OK\r\nConnection: x-hop, Close\r\nX-Hop: 1\r\n"
            b"Content-Length: 2\r\n\r\nok"
        )
        self.assertEqual(response.headers.getRawHeaders(b"connection"), [b"x-hop, Close"])
        self.assertEqual(response.headers.getRawHeaders(b"x-hop"), [b"1"])
        collect.reason.trap(ResponseDone)
        self.assertEqual(self.idle(), 0)
        self.assertTrue(upstream.transport.disconnecting)

    def test_leadingEmptyLines(self) -> None:
        """
        Empty lines before the status line are ignored.
        """
        response, collect, _ = self.exchange(b"\r\n\r\n" + SIMPLE)
        self.assertEqual(collect.body, b"hello")

    def test_malformedStatus(self) -> None:
        """
        A response that is not HTTP fails the request with
        L{UpstreamBroken} and drops the connection.
        """
        d = self.request()
        upstream = self.connect()
        upstream.send(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        self.failureResultOf(d, UpstreamBroken)
        self.assertTrue(upstream.transport.disconnected)

    def test_headTooLarge(self) -> None:
        """
        A head larger than L{httpclient.MAX_HEAD} fails the request, whether
        or not its end has arrived.
        """
        d = self.request()
        upstream = self.connect()
        upstream.send(b"HTTP/1.1 200 OK\r\n")
        for _ in range(httpclient.MAX_HEAD // 1000 + 1):
            upstream.send(b"X-Big: " + b"x" * 991 + b"\r\n")
        self.failureResultOf(d, UpstreamBroken)
        d = self.request()
        upstream = self.connect()
        upstream.send(b"HTTP/1.1 200 OK\r\nX-Big: " + b"x" * httpclient.MAX_HEAD + b"\r\n\r\n")
        self.failureResultOf(d, UpstreamBroken)

    def test_headJustUnderLimit(self) -> None:
        """
        A head just under L{httpclient.MAX_HEAD} is accepted.
        """
        filler = b"x" * (httpclient.MAX_HEAD - 100)
        response, collect, _ = self.exchange(
            b"HTTP/1.1 200 OK\r\nX-Big: " + filler + b"\r\nContent-Length: 0\r\n\r\n"
        )
        self.assertEqual(response.headers.getRawHeaders(b"x-big"), [filler])

    def test_trailingGarbage(self) -> None:
        """
        Bytes after a complete response, which nobody asked for, keep the
        connection out of the pool.
        """
        _, collect, upstream = self.exchange(SIMPLE + b"HTTP/1.1 200 OK\r\n")
        collect.reason.trap(ResponseDone)
        self.assertEqual(self.idle(), 0)
        self.assertTrue(upstream.transport.disconnecting)

    def test_unsolicitedDataWhileIdle(self) -> None:
        """
        Data on an idle pooled connection drops it from the pool.
        """
        _, _, upstream = self.exchange(SIMPLE)
        self.assertEqual(self.idle(), 1)
        upstream.send(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
        self.assertEqual(self.idle(), 0)
        self.assertTrue(upstream.transport.disconnected)
        upstream.lose(error.ConnectionAborted())
        self.request()
        self.assertEqual(len(self.reactor.tcpClients), 2)

    def test_lostMidBody(self) -> None:
        """
        A body of known length cut short ends with L{ResponseFailed}.
        """
        _, collect, upstream = self.exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhel")
        upstream.lose()
        self.assertEqual(collect.body, b"hel")
        collect.reason.trap(ResponseFailed)
        self.assertEqual(self.idle(), 0)

    def test_lostMidChunkedBody(self) -> None:
        """
        A chunked body cut before its last chunk ends with
        L{ResponseFailed}.
        """
        _, collect, upstream = self.exchange(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
        )
        upstream.lose()
        collect.reason.trap(ResponseFailed)

    def test_lostMidHead(self) -> None:
        """
        A connection lost in the middle of the head fails the request with
        L{UpstreamBroken}.
        """
        d = self.request()
        upstream = self.connect()
        upstream.send(b"HTTP/1.1 200 OK\r\nContent-")
        upstream.lose()
        self.failureResultOf(d, UpstreamBroken)

    def test_lostBeforeAnswer(self) -> None:
        """
        A new connection lost before any answer fails the request with
        L{UpstreamBroken}, without retrying.
        """
        d = self.request()
        upstream = self.connect()
        upstream.lose()
        self.failureResultOf(d, UpstreamBroken)
        self.assertEqual(len(self.reactor.tcpClients), 1)

    def test_bodyBeforeDeliverBody(self) -> None:
        """
        Body bytes that arrive before C{deliverBody} are buffered and
        delivered, with the end, once it is called.
        """
        d = self.request()
        upstream = self.connect()
        upstream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
        response = self.successResultOf(d)
        upstream.send(b"world")
        self.assertEqual(self.idle(), 1)
        collect = Collect()
        response.deliverBody(collect)
        self.assertEqual(collect.body, b"helloworld")
        collect.reason.trap(ResponseDone)

    def test_deliverBodyTwice(self) -> None:
        """
        A body can be delivered only once.
        """
        response, _, _ = self.exchange(SIMPLE)
        self.assertRaises(RuntimeError, response.deliverBody, Collect())


class SplitReadTests(ClientTestCase):
    """
    A response parses the same however it is cut into reads.
    """

    SAMPLE = (
        b"\r\nHTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nX-One: 1\r\nX-Folded: a\r\n b\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n"
        b"1\r\n \r\n"
        b"5\r\nworld\r\n"
        b"0\r\nTrailer: x\r\n\r\n"
    )
    LENGTH = b"HTTP/1.1 200 OK\nContent-Length: 11\nX-A: 1\n\nhello world"

    def feed(self, pieces: List[bytes]) -> None:
        d = self.request()
        upstream = self.connect()
        for piece in pieces:
            upstream.send(piece)
        response = self.successResultOf(d)
        collect = Collect()
        response.deliverBody(collect)
        self.assertIn(response.code, (200, 201))
        self.assertEqual(collect.body, b"hello world")
        self.assertEqual(response.headers.getRawHeaders(b"x-one", [b"1"]), [b"1"])
        if response.code == 201:
            self.assertEqual(response.headers.getRawHeaders(b"x-folded"), [b"a b"])
        collect.reason.trap(ResponseDone)
        self.assertEqual(self.idle(), 1)
        # Start afresh for the next split.
        self.client._pools.clear()
        self.reactor.tcpClients.clear()
        self.upstreams.clear()

    def test_everySplit(self) -> None:
        """
        Every cut of the sample into two reads gives the same response.
        """
        for sample in (self.SAMPLE, self.LENGTH):
            for i in range(1, len(sample)):
                self.feed([sample[:i], sample[i:]])

    def test_byteByByte(self) -> None:
        """
        The sample read one byte at a time gives the same response.
        """
        for sample in (self.SAMPLE, self.LENGTH):
            self.feed([sample[i : i + 1] for i in range(len(sample))])

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.integers(min_value=1, max_value=len(SAMPLE) - 1), max_size=12))
    def test_anySplits(self, cuts: List[int]) -> None:
        """
        Any cut of the sample into reads gives the same response.
        """
        self.setUp()
        points = [0] + sorted(set(cuts)) + [len(self.SAMPLE)]
        self.feed([self.SAMPLE[a:b] for a, b in zip(points, points[1:])])


# -- the client: requests ---------------------------------------------------------


class RequestWritingTests(ClientTestCase):
    """
    What the client writes to the upstream.
    """

    def test_get(self) -> None:
        """
        A GET is the request line, Host first, then the caller's fields, in
        one write.
        """
        self.request(b"GET", b"/a?b=c", Headers({b"x-a": [b"1", b"2"], b"accept": [b"*/*"]}))
        upstream = self.connect()
        self.assertEqual(
            upstream.received(),
            b"GET /a?b=c HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nX-A: 1\r\nX-A: 2\r\n"
            b"Accept: */*\r\n\r\n",
        )

    def test_hostForms(self) -> None:
        """
        Port 80 is left out of Host, an IPv6 address is bracketed, and a
        caller's Host is kept instead.
        """
        self.backend = FakeBackend("backend.example", 80)
        self.request()
        self.assertIn(b"\r\nHost: backend.example\r\n", self.connect().received())
        self.backend = FakeBackend("::1", 8081)
        self.request()
        self.assertIn(b"\r\nHost: [::1]:8081\r\n", self.connect().received())
        self.request(headers=Headers({b"host": [b"virtual.example"]}))
        data = self.connect().received()
        self.assertIn(b"\r\nHost: virtual.example\r\n", data)
        self.assertEqual(data.count(b"Host:"), 1)

    def test_endpoints(self) -> None:
        """
        An IP literal is connected to directly; a name goes through
        resolution; one endpoint per address is reused.
        """
        self.request()
        self.request()
        self.assertEqual(self.reactor.tcpClients[0][:2], ("127.0.0.1", 8080))
        self.assertEqual(len(self.client._endpoints._endpoints), 1)

    def test_bytesBody(self) -> None:
        """
        A L{BytesBodyProducer} body goes out with the head in one write,
        with its C{Content-Length}.
        """
        self.request(b"POST", b"/p", body=BytesBodyProducer(b"0123456789"))
        upstream = self.connect()
        self.assertEqual(
            upstream.transport.value(),
            b"POST /p HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Length: 10\r\n\r\n0123456789",
        )
        self.assertIsNone(upstream.transport.producer)

    def test_noBody(self) -> None:
        """
        Without a body, POST, PUT and PATCH say C{Content-Length: 0}; other
        methods say nothing; an empty body is C{Content-Length: 0}.
        """
        for method in (b"POST", b"PUT", b"PATCH"):
            self.request(method)
            self.assertIn(b"\r\nContent-Length: 0\r\n\r\n", self.connect().received())
        for method in (b"GET", b"DELETE", b"HEAD", b"OPTIONS"):
            self.request(method)
            self.assertNotIn(b"Content-Length", self.connect().received())
        self.request(b"GET", body=BytesBodyProducer(b""))
        self.assertIn(b"\r\nContent-Length: 0\r\n\r\n", self.connect().received())

    def test_callerFramingDropped(self) -> None:
        """
        The client sets the framing: a caller's C{Content-Length} or
        C{Transfer-Encoding} is never sent twice.
        """
        headers = Headers({b"content-length": [b"99"], b"transfer-encoding": [b"chunked"]})
        self.request(b"POST", headers=headers, body=BytesBodyProducer(b"abc"))
        data = self.connect().received()
        self.assertEqual(data.count(b"Content-Length"), 1)
        self.assertIn(b"Content-Length: 3\r\n", data)
        self.assertNotIn(b"Transfer-Encoding", data)

    def test_invalidTarget(self) -> None:
        """
        A request target with whitespace or line breaks is refused.
        """
        for uri in (b"", b"/a b", b"/a\r\nX: y", b"/a\n"):
            self.failureResultOf(self.request(uri=uri), ValueError)
        self.assertEqual(self.reactor.tcpClients, [])

    def test_chunkedBody(self) -> None:
        """
        A body of unknown length is sent chunked; its producer is
        registered with the transport for backpressure until it is done.
        """
        producer = ControlledProducer()
        self.request(b"POST", body=producer)
        upstream = self.connect()
        self.assertIn(b"\r\nTransfer-Encoding: chunked\r\n\r\n", upstream.received())
        self.assertIs(upstream.transport.producer.producer, producer)
        self.assertTrue(upstream.transport.streaming)
        producer.consumer.write(b"hello")
        producer.consumer.write(b"")
        producer.consumer.write(b"x" * 300)
        producer.finished.callback(None)
        self.assertEqual(
            upstream.received(), b"5\r\nhello\r\n12c\r\n" + b"x" * 300 + b"\r\n0\r\n\r\n"
        )
        self.assertIsNone(upstream.transport.producer)

    def test_lengthBody(self) -> None:
        """
        A body of known length is sent as is, after C{Content-Length}.
        """
        producer = ControlledProducer(8)
        self.request(b"PUT", body=producer)
        upstream = self.connect()
        self.assertIn(b"\r\nContent-Length: 8\r\n\r\n", upstream.received())
        producer.consumer.write(b"1234")
        producer.consumer.write(b"5678")
        producer.finished.callback(None)
        self.assertEqual(upstream.received(), b"12345678")
        self.assertIsNone(upstream.transport.producer)

    def test_fileBody(self) -> None:
        """
        A L{FileBodyProducer} body is sent whole.
        """
        clock = task.Clock()
        cooperator = task.Cooperator(scheduler=lambda f: clock.callLater(0, f), started=True)
        data = bytes(range(256)) * 1000
        producer = FileBodyProducer(io.BytesIO(data), cooperator=cooperator, readSize=10000)
        self.request(b"POST", body=producer)
        upstream = self.connect()
        self.assertIn(b"Content-Length: 256000\r\n\r\n", upstream.received())
        clock.pump([0.1] * 40)
        self.assertEqual(upstream.received(), data)
        self.assertIsNone(upstream.transport.producer)
        upstream.send(SIMPLE)
        self.assertEqual(self.idle(), 1)

    def test_bodyTooShortOrLong(self) -> None:
        """
        A body shorter or longer than its length fails the request and
        drops the connection.
        """
        producer = ControlledProducer(8)
        d = self.request(b"PUT", body=producer)
        upstream = self.connect()
        producer.consumer.write(b"123")
        producer.finished.callback(None)
        self.failureResultOf(d, UpstreamBroken)
        self.assertTrue(upstream.transport.disconnected)

        producer = ControlledProducer(2)
        d = self.request(b"PUT", body=producer)
        upstream = self.connect()
        producer.consumer.write(b"123")
        self.failureResultOf(d, UpstreamBroken)
        self.assertTrue(upstream.transport.disconnected)
        self.assertTrue(producer.stopped)

    def test_bodyFails(self) -> None:
        """
        A body producer that fails fails the request.
        """
        producer = ControlledProducer()
        d = self.request(b"POST", body=producer)
        upstream = self.connect()
        producer.finished.errback(OSError("disk gone"))
        f = self.failureResultOf(d, UpstreamBroken)
        self.assertIn("disk gone", f.getErrorMessage())
        self.assertTrue(upstream.transport.disconnected)

    def test_answeredBeforeBodySent(self) -> None:
        """
        An answer that completes before the request body was sent stops the
        body producer and keeps the connection out of the pool.
        """
        producer = ControlledProducer()
        d = self.request(b"POST", body=producer)
        upstream = self.connect()
        upstream.send(b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n")
        response = self.successResultOf(d)
        collect = Collect()
        response.deliverBody(collect)
        collect.reason.trap(ResponseDone)
        self.assertTrue(producer.stopped)
        self.assertTrue(upstream.transport.disconnected)
        self.assertEqual(self.idle(), 0)
        producer.finished.callback(None)  # late: ignored

    def test_bodyDoneAfterHead(self) -> None:
        """
        A body that finishes after the response head arrived but before
        the response ends lets the connection be pooled.
        """
        producer = ControlledProducer(2)
        d = self.request(b"POST", body=producer)
        upstream = self.connect()
        upstream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhe")
        response = self.successResultOf(d)
        producer.consumer.write(b"ab")
        producer.finished.callback(None)
        upstream.send(b"llo")
        collect = Collect()
        response.deliverBody(collect)
        self.assertEqual(collect.body, b"hello")
        self.assertEqual(self.idle(), 1)


# -- the client: pool ---------------------------------------------------------------


class PoolTests(ClientTestCase):
    """
    Connections are reused only after complete, clean exchanges.
    """

    def test_reuse(self) -> None:
        """
        The next request after a complete response goes on the same
        connection.
        """
        _, _, upstream = self.exchange(SIMPLE)
        d = self.request(uri=b"/second")
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.assertTrue(upstream.received().startswith(b"GET /second HTTP/1.1\r\n"))
        upstream.send(SIMPLE)
        self.assertEqual(self.successResultOf(d).code, 200)

    def test_notBeforeBodyEnds(self) -> None:
        """
        A connection whose response body is still arriving is not used for
        another request.
        """
        d = self.request()
        upstream = self.connect()
        upstream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhel")
        self.successResultOf(d)
        self.request()
        self.assertEqual(len(self.reactor.tcpClients), 2)
        self.assertEqual(upstream.received(), b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n")

    def test_lastInFirstOut(self) -> None:
        """
        The most recently used idle connection is reused first.
        """
        d1, d2 = self.request(), self.request()
        first, second = self.connect(), self.connect()
        second.send(SIMPLE)
        first.send(SIMPLE)
        self.successResultOf(d1).deliverBody(Collect())
        self.successResultOf(d2).deliverBody(Collect())
        first.received()
        second.received()
        self.request()
        self.assertNotEqual(first.received(), b"")
        self.assertEqual(second.received(), b"")

    def test_maxIdle(self) -> None:
        """
        No more than C{maxIdlePerBackend} connections are kept idle.
        """
        self.client = HTTP11UpstreamClient(self.reactor, maxIdlePerBackend=1)
        d1, d2 = self.request(), self.request()
        first, second = self.connect(), self.connect()
        first.send(SIMPLE)
        second.send(SIMPLE)
        self.assertEqual(self.successResultOf(d1).code, 200)
        self.assertEqual(self.successResultOf(d2).code, 200)
        self.assertEqual(self.idle(), 1)
        self.assertFalse(first.transport.disconnecting)
        self.assertTrue(second.transport.disconnecting)

    def test_perBackend(self) -> None:
        """
        Each backend address has its own pool.
        """
        self.exchange(SIMPLE)
        self.backend = FakeBackend("127.0.0.2", 8080)
        self.request()
        self.assertEqual(len(self.reactor.tcpClients), 2)
        self.assertEqual(self.reactor.tcpClients[1][:2], ("127.0.0.2", 8080))

    def test_retainOnly(self) -> None:
        """
        L{HTTP11UpstreamClient.retainOnly} forgets the addresses that are
        no backend's any more (DNS discovery's addresses come and go for
        good): their idle connections are closed and their pools and
        endpoints dropped, so nothing of them stays; a connection in use
        serves its request to the end, and is then closed rather than
        kept.  The addresses kept keep their idle connections, and a
        forgotten address used again gets a pool of its own.
        """
        _, _, kept = self.exchange(SIMPLE)
        self.backend = FakeBackend("127.0.0.2", 8080)
        _, _, gone = self.exchange(SIMPLE)
        self.backend = FakeBackend("127.0.0.3", 8080)
        d = self.request()
        busy = self.connect()
        self.assertEqual(len(self.client._pools), 3)

        self.assertEqual(self.client.retainOnly({("127.0.0.1", 8080)}), 2)
        self.assertEqual(list(self.client._pools), [("127.0.0.1", 8080, None)])
        self.assertEqual(len(self.client._endpoints._endpoints), 1)
        self.assertTrue(gone.transport.disconnecting)
        self.assertFalse(kept.transport.disconnecting)
        self.assertFalse(busy.transport.disconnecting)
        busy.received()
        busy.send(SIMPLE)
        self.successResultOf(d).deliverBody(Collect())
        self.assertTrue(busy.transport.disconnecting)
        self.assertEqual(self.idle(), 1)

        self.request()
        self.assertEqual(self.reactor.tcpClients[-1][:2], ("127.0.0.3", 8080))
        self.assertEqual(len(self.client._pools), 2)

    def test_idleTimeout(self) -> None:
        """
        An idle connection is closed after C{idleTimeout} seconds; one used
        meanwhile is kept for its own full idle time.
        """
        d1, d2 = self.request(), self.request()
        first, second = self.connect(), self.connect()
        first.send(SIMPLE)
        second.send(SIMPLE)  # now "first" (older) is idle behind "second"
        self.successResultOf(d1)
        self.successResultOf(d2)
        self.reactor.advance(30)
        self.exchange(SIMPLE, upstream=second)  # reuse "second": idle again from t=30
        self.reactor.advance(30)
        self.assertTrue(first.transport.disconnecting)
        self.assertFalse(second.transport.disconnecting)
        self.assertEqual(self.idle(), 1)
        self.reactor.advance(30)
        self.assertTrue(second.transport.disconnecting)
        self.assertEqual(self.idle(), 0)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_serverClosesIdle(self) -> None:
        """
        An idle connection the upstream closes leaves the pool; the next
        request makes a new one.
        """
        _, _, upstream = self.exchange(SIMPLE)
        upstream.lose()
        self.assertEqual(self.idle(), 0)
        self.request()
        self.assertEqual(len(self.reactor.tcpClients), 2)

    def test_stoppedBodyNotReused(self) -> None:
        """
        Stopping a response body aborts its connection, which is not
        reused, and the body's protocol is told it broke.
        """
        d = self.request()
        upstream = self.connect()
        upstream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhel")
        collect = Collect()
        self.successResultOf(d).deliverBody(collect)
        collect.transport.stopProducing()
        self.assertTrue(upstream.transport.disconnected)
        upstream.send(b"lo world")  # arrives before the abort took effect
        upstream.lose(error.ConnectionAborted())
        self.assertEqual(collect.body, b"hel")
        collect.reason.trap(ResponseFailed)
        self.assertEqual(self.idle(), 0)
        collect.transport.stopProducing()  # again: harmless

    def test_stoppedInsideDataReceived(self) -> None:
        """
        A consumer that stops the body from its C{dataReceived}, while the
        rest of the response is in the same read, gets nothing more than
        that read, is told the body broke, and the connection is not
        pooled.
        """

        class StopAtOnce(Collect):
            def dataReceived(self, data: bytes) -> None:
                Collect.dataReceived(self, data)
                self.transport.stopProducing()

        for answer in [
            # (A sized body that comes with its head is over before it is
            # delivered: see test_stoppedInResponseCallback.)
            (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", b"hello"),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n",
            ),
        ]:
            d = self.request()
            upstream = self.connect()
            collect = StopAtOnce()
            d.addCallback(lambda response, collect=collect: response.deliverBody(collect))
            for data in answer:
                upstream.send(data)
            self.assertTrue(upstream.transport.disconnected)
            self.assertEqual(self.idle(), 0)
            self.assertIsNone(collect.reason)
            upstream.lose(error.ConnectionAborted())
            self.assertIn(collect.body, (b"hello", b"he"))
            collect.reason.trap(ResponseFailed)
            self.assertEqual(self.idle(), 0)

    def test_stoppedInResponseCallback(self) -> None:
        """
        A response whose whole body came with its head is over before its
        callback runs: stopping its body from there is harmless, the body
        ends cleanly and the connection stays pooled.
        """

        class StopOnConnect(Collect):
            def connectionMade(self) -> None:
                self.transport.stopProducing()

        for answer in (b"HTTP/1.1 204 No Content\r\n\r\n", SIMPLE):
            d = self.request()
            if answer is not SIMPLE:
                upstream = self.connect()
            collect = StopOnConnect()
            d.addCallback(lambda response, collect=collect: response.deliverBody(collect))
            upstream.send(answer)
            self.assertFalse(upstream.transport.disconnected)
            self.assertEqual(self.idle(), 1)
            collect.reason.trap(ResponseDone)
        self.assertEqual(collect.body, b"hello")
        self.assertEqual(len(self.reactor.tcpClients), 1)

    def test_stoppedInResponseCallbackMidBody(self) -> None:
        """
        A response whose body is still to come, stopped from the response
        callback, does not pool its aborted connection.
        """

        class StopOnConnect(Collect):
            def connectionMade(self) -> None:
                self.transport.stopProducing()

        d = self.request()
        upstream = self.connect()
        collect = StopOnConnect()
        d.addCallback(lambda response: response.deliverBody(collect))
        upstream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
        self.assertTrue(upstream.transport.disconnected)
        self.assertEqual(self.idle(), 0)
        upstream.lose(error.ConnectionAborted())
        collect.reason.trap(ResponseFailed)
        self.request()
        self.assertEqual(len(self.reactor.tcpClients), 2)

    def test_stopAfterEndIsHarmless(self) -> None:
        """
        Pausing or stopping a body that has ended does not touch the
        connection, which may be serving another request.
        """
        _, collect, upstream = self.exchange(SIMPLE)
        collect.transport.pauseProducing()
        collect.transport.stopProducing()
        self.assertEqual(upstream.transport.producerState, "producing")
        self.assertFalse(upstream.transport.disconnected)
        self.assertEqual(self.idle(), 1)

    def test_close(self) -> None:
        """
        C{close} closes idle connections and fires when they are gone;
        connections in use are closed, not pooled, when their request ends.
        """
        d1, d = self.request(), self.request()
        idle, busy = self.connect(), self.connect()
        idle.send(SIMPLE)
        self.successResultOf(d1).deliverBody(Collect())
        closed = self.client.close()
        self.assertTrue(idle.transport.disconnecting)
        self.assertNoResult(closed)
        idle.lose()
        self.assertIsNone(self.successResultOf(closed))
        busy.send(SIMPLE)
        self.successResultOf(d).deliverBody(Collect())
        self.assertTrue(busy.transport.disconnecting)
        self.assertEqual(self.idle(), 0)

    def test_closeNothing(self) -> None:
        """
        C{close} with no connection fires at once.
        """
        self.assertIsNone(self.successResultOf(self.client.close()))


class StaleConnectionTests(ClientTestCase):
    """
    The keep-alive race: a pooled connection closed by the upstream while
    a request was on its way.
    """

    def pooled(self) -> Upstream:
        _, _, upstream = self.exchange(SIMPLE)
        return upstream

    def test_retriedOnce(self) -> None:
        """
        A request without body is sent again on a new connection when a
        reused one breaks before any answer.
        """
        stale = self.pooled()
        d = self.request(uri=b"/again")
        stale.lose()
        self.assertEqual(len(self.reactor.tcpClients), 2)
        fresh = self.connect()
        self.assertTrue(fresh.received().startswith(b"GET /again HTTP/1.1\r\n"))
        fresh.send(SIMPLE)
        self.assertEqual(self.successResultOf(d).code, 200)

    def test_notTwice(self) -> None:
        """
        The retry happens once: a fresh connection that breaks too fails
        the request.
        """
        stale = self.pooled()
        d = self.request()
        stale.lose(error.ConnectionLost())
        self.connect().lose()
        self.failureResultOf(d, UpstreamBroken)
        self.assertEqual(len(self.reactor.tcpClients), 2)

    def test_replayableBody(self) -> None:
        """
        An idempotent request with an in-memory body is retried, body
        included.
        """
        stale = self.pooled()
        d = self.request(b"PUT", body=BytesBodyProducer(b"data"))
        stale.lose()
        fresh = self.connect()
        self.assertTrue(fresh.received().endswith(b"\r\n\r\ndata"))
        fresh.send(SIMPLE)
        self.successResultOf(d)

    def test_streamedBodyNotRetried(self) -> None:
        """
        A request whose body is streamed from a producer cannot be sent
        again.
        """
        stale = self.pooled()
        d = self.request(b"PUT", body=ControlledProducer())
        stale.lose()
        self.failureResultOf(d, UpstreamBroken)
        self.assertEqual(len(self.reactor.tcpClients), 1)

    def test_nonIdempotentNotRetried(self) -> None:
        """
        A POST is never sent twice (RFC 9112 9.3.1.1: a proxy must not
        retry non-idempotent requests), even with an in-memory body.
        """
        stale = self.pooled()
        d = self.request(b"POST", body=BytesBodyProducer(b"pay once"))
        stale.lose()
        self.failureResultOf(d, UpstreamBroken)
        self.assertEqual(len(self.reactor.tcpClients), 1)

    def test_notAfterAnswerBytes(self) -> None:
        """
        Once any byte of the answer arrived, the request is not retried.
        """
        stale = self.pooled()
        d = self.request()
        stale.send(b"HTTP/1.1 2")
        stale.lose()
        self.failureResultOf(d, UpstreamBroken)
        self.assertEqual(len(self.reactor.tcpClients), 1)

    def test_retryKeepsDeadline(self) -> None:
        """
        The retry runs under the request's original timeout.
        """
        self.pooled()
        stale = self.upstreams[0]
        self.reactor.advance(1)
        d = self.request(timeout=5)
        self.reactor.advance(3)
        stale.lose()
        self.connect()
        self.reactor.advance(2)
        self.failureResultOf(d, UpstreamTimeout)


# -- the client: timeouts, cancellation, errors ----------------------------------


class TimeoutTests(ClientTestCase):
    """
    C{timeout} bounds the wait for the response head, connecting included.
    """

    def test_whileConnecting(self) -> None:
        """
        A timeout while connecting stops the attempt and fails with
        L{UpstreamTimeout}.
        """
        d = self.request(timeout=2)
        self.reactor.advance(1.9)
        self.assertNoResult(d)
        self.reactor.advance(0.1)
        self.failureResultOf(d, UpstreamTimeout)
        self.assertTrue(self.reactor.connectors[0].stoppedConnecting)

    def test_waitingForHead(self) -> None:
        """
        A timeout while waiting for the head aborts the connection, which
        is never pooled, and fails with L{UpstreamTimeout}.
        """
        d = self.request(timeout=2)
        upstream = self.connect()
        upstream.send(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")
        self.reactor.advance(2)
        self.failureResultOf(d, UpstreamTimeout)
        self.assertTrue(upstream.transport.disconnected)
        upstream.send(b"Content-Length: 0\r\n\r\n")  # late: ignored
        upstream.lose(error.ConnectionAborted())
        self.assertEqual(self.idle(), 0)

    def test_slowBodyNotCut(self) -> None:
        """
        Once the head arrived, the body is not held to the head's deadline:
        a body whose pieces keep coming, each within the timeout, is read
        whole however long it takes.
        """
        d = self.request(timeout=2)
        upstream = self.connect()
        upstream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nh")
        collect = Collect()
        self.successResultOf(d).deliverBody(collect)
        for piece in (b"e", b"l", b"l"):
            self.reactor.advance(1.5)
            upstream.send(piece)
        self.reactor.advance(1.5)
        upstream.send(b"o")
        self.assertEqual(collect.body, b"hello")
        collect.reason.trap(ResponseDone)
        deadlines = self.client._deadlines[2]
        self.reactor.advance(10)
        self.assertIsNone(deadlines.timer)
        self.assertEqual(deadlines.later, [])

    def test_stalledBodyCut(self) -> None:
        """
        An upstream that stops sending a body after its head (here: after
        two of its five bytes) has it cut once none of it came for the
        request's timeout (within twice the timeout): the body fails with
        L{UpstreamTimeout} and the connection is dropped, not pooled.
        Without this a stalled upstream held the client, and the
        connection, for good.
        """
        d = self.request(timeout=2)
        upstream = self.connect()
        upstream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhe")
        collect = Collect()
        self.successResultOf(d).deliverBody(collect)
        self.reactor.advance(1)
        self.assertIsNone(collect.reason)
        for _ in range(4):
            self.reactor.advance(1)
        self.assertIsNotNone(collect.reason)
        collect.reason.trap(ResponseFailed)
        self.assertIsInstance(collect.reason.value.reasons[0].value, UpstreamTimeout)
        self.assertTrue(upstream.transport.disconnecting)
        self.assertEqual(self.idle(), 0)

    def test_chunkedAndCloseDelimitedBodiesCut(self) -> None:
        """
        The same holds for a chunked body and for one that ends when the
        upstream closes.
        """
        for head in (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhe\r\n",
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhe",
        ):
            d = self.request(timeout=2)
            upstream = self.connect()
            upstream.send(head)
            collect = Collect()
            self.successResultOf(d).deliverBody(collect)
            self.reactor.advance(2)
            self.reactor.advance(2)
            self.assertEqual(collect.body, b"he")
            collect.reason.trap(ResponseFailed)

    def test_heldBackBodyNotCut(self) -> None:
        """
        While the body's reader holds the upstream back (the gateway's own
        client reads slowly), the time does not count against the
        upstream.
        """
        d = self.request(timeout=2)
        upstream = self.connect()
        upstream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhe")
        collect = Collect()
        self.successResultOf(d).deliverBody(collect)
        collect.transport.pauseProducing()
        for _ in range(10):
            self.reactor.advance(1)
        self.assertIsNone(collect.reason)
        collect.transport.resumeProducing()
        upstream.send(b"llo")
        self.assertEqual(collect.body, b"hello")
        collect.reason.trap(ResponseDone)

    def test_endedBodiesLetGo(self) -> None:
        """
        The bodies that ended are not kept until their deadline: behind
        one that is still read, the queue of bodies stays bounded.
        """
        slow = self.request(timeout=2)
        upstream = self.connect()
        upstream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhe")
        self.successResultOf(slow).deliverBody(Collect())
        deadlines = self.client._deadlines[2]
        other: Optional[Upstream] = None
        for _ in range(4 * httpclient._COMPACT_AT):
            d = self.request(timeout=2)
            if other is None:
                # (The slow answer holds its connection: the others share
                # one, each answered in two reads, so that its body is
                # watched.)
                other = self.connect()
            other.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")
            other.send(b"ok")
            self.successResultOf(d).deliverBody(Collect())
        self.assertLessEqual(len(deadlines.later), httpclient._COMPACT_AT + 1)

    def test_timerShared(self) -> None:
        """
        Requests with the same timeout share one timer, whichever way they
        end; once they all ended it lapses without timing any out, and no
        timer is left behind.
        """
        self.exchange(SIMPLE)
        sweep = self.client._pools[("127.0.0.1", 8080, None)].sweep
        d = self.request(timeout=5)
        self.upstreams[0].send(SIMPLE)
        self.successResultOf(d)
        self.reactor.advance(1)
        d = self.request(timeout=5)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        d = self.request(timeout=5)
        self.connect().lose()
        self.failureResultOf(d, UpstreamBroken)
        other = self.request(timeout=7)
        pending = [c.func for c in self.reactor.getDelayedCalls() if c.active()]
        self.assertEqual(len(pending), 3)
        self.assertIn(sweep, pending)
        self.reactor.advance(5)
        self.assertNoResult(other)
        self.reactor.advance(2)
        self.failureResultOf(other, UpstreamTimeout)
        pending = [c.func for c in self.reactor.getDelayedCalls() if c.active()]
        self.assertEqual(pending, [sweep])
        # Closing the client stops a timer whose requests all ended.
        d = self.request(timeout=5)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.client.close()
        pending = [c.func for c in self.reactor.getDelayedCalls() if c.active()]
        self.assertNotIn(self.client._deadlines[5]._expire, pending)

    def test_finishedLetGo(self) -> None:
        """
        A request that ended, whichever way, keeps nothing of its caller's
        while it waits in the queue of deadlines: not its callbacks, their
        arguments, its bytes or its body.
        """
        caller = object()
        ends = [lambda sent: self.connect().send(SIMPLE), lambda sent: sent.cancel()]
        ends.append(lambda sent: self.reactor.advance(5))
        for end in ends:
            sent = self.client.send(
                self.backend,
                b"POST",
                b"/",
                Headers(),
                BytesBodyProducer(b"body"),
                5,
                lambda *a: None,
                lambda *a: None,
                caller,
            )
            end(sent)
            self.assertTrue(sent.finished)
            self.assertEqual((sent.args, sent.data, sent.producer), ((), b"", None))
            self.assertIs(sent.onResponse, sent.onFailure)

    def test_timeoutsInOrder(self) -> None:
        """
        Requests sent one after the other with one timeout each time out at
        their own deadline, while the others go on.
        """
        first = self.request(timeout=5)
        self.reactor.advance(2)
        second = self.request(timeout=5)
        third = self.request(timeout=5)
        self.reactor.advance(3)
        self.failureResultOf(first, UpstreamTimeout)
        self.assertNoResult(second)
        self.reactor.advance(1.9)
        self.assertNoResult(second)
        self.reactor.advance(0.1)
        self.failureResultOf(second, UpstreamTimeout)
        self.failureResultOf(third, UpstreamTimeout)

    def test_deadlinesCompacted(self) -> None:
        """
        Requests that ended behind one that still waits are let go of once
        they are many, not only when that one ends.
        """
        from gateway.http.client import _COMPACT_AT

        waiting = self.request(timeout=60)
        self.connect()
        upstream = None
        for _ in range(3 * _COMPACT_AT):
            d = self.request(timeout=60)
            if upstream is None:
                upstream = self.connect()
            upstream.send(SIMPLE)
            self.successResultOf(d)
        self.assertLessEqual(len(self.client._deadlines[60].queue), _COMPACT_AT + 1)
        self.assertNoResult(waiting)
        self.reactor.advance(60)
        self.failureResultOf(waiting, UpstreamTimeout)

    def test_connectTimeout(self) -> None:
        """
        The endpoint's own connection timeout is L{UpstreamTimeout} too.
        """
        d = self.request()
        self.reactor.tcpClients[0][2].clientConnectionFailed(None, Failure(error.TimeoutError()))
        self.failureResultOf(d, UpstreamTimeout)


class StreamedBodyTimeoutTests(ClientTestCase):
    """
    With a body that streams (a producer), C{timeout} counts from when the
    body was all sent; while it is being sent, the request times out only
    when the upstream held it back and took none of it for C{timeout}
    seconds.  A slow client is not the upstream's fault.
    """

    def start(self, timeout: float = 2) -> Tuple[defer.Deferred, ControlledProducer, Upstream]:
        producer = ControlledProducer(10)
        d = self.request(b"PUT", body=producer, timeout=timeout)
        upstream = self.connect()
        upstream.received()
        return d, producer, upstream

    def test_slowClientIsNoTimeout(self) -> None:
        """
        A body that arrives slowly (its producer writes now and then, or
        not at all for longer than the timeout while the transport does not
        hold it back) gets time; the timeout then counts from its last byte.
        """
        d, producer, upstream = self.start()
        for _ in range(5):
            self.reactor.advance(1.5)
            producer.consumer.write(b"a")
        self.reactor.advance(5)  # (waiting for the client, nothing held back)
        self.assertNoResult(d)
        producer.consumer.write(b"bcdef")
        producer.finished.callback(None)
        self.assertEqual(upstream.received(), b"aaaaabcdef")
        self.reactor.advance(1.9)
        self.assertNoResult(d)
        upstream.send(SIMPLE)
        self.assertEqual(self.successResultOf(d).code, 200)

    def test_timeoutFromTheBodyEnd(self) -> None:
        """
        Once the body was all sent, the upstream has C{timeout} seconds for
        its head, however long the body took.
        """
        d, producer, upstream = self.start()
        self.reactor.advance(1.5)
        producer.consumer.write(b"0123456789")
        producer.finished.callback(None)
        self.reactor.advance(1.9)
        self.assertNoResult(d)
        self.reactor.advance(0.1)
        self.failureResultOf(d, UpstreamTimeout)
        self.assertTrue(upstream.transport.disconnected)
        self.assertTrue(producer.stopped or producer.finished.called)

    def test_upstreamNotReading(self) -> None:
        """
        An upstream that takes none of the body (the transport pauses it)
        for C{timeout} seconds times the request out; the body's producer is
        stopped.
        """
        d, producer, upstream = self.start()
        producer.consumer.write(b"01234")
        upstream.transport.producer.pauseProducing()
        self.assertTrue(producer.paused)
        self.reactor.advance(2)
        self.assertNoResult(d)  # (bytes were written since the start)
        self.reactor.advance(1.9)
        self.assertNoResult(d)
        self.reactor.advance(0.1)
        self.failureResultOf(d, UpstreamTimeout)
        self.assertTrue(producer.stopped)
        self.assertTrue(upstream.transport.disconnected)

    def test_heldBackThenTaken(self) -> None:
        """
        An upstream that takes the body slowly (paused, then resumed, more
        written) is not timed out while it makes progress.
        """
        d, producer, upstream = self.start()
        for _ in range(5):
            producer.consumer.write(b"ab")
            upstream.transport.producer.pauseProducing()
            self.reactor.advance(1.5)
            upstream.transport.producer.resumeProducing()
            self.assertFalse(producer.paused)
        producer.finished.callback(None)
        self.assertNoResult(d)
        upstream.send(SIMPLE)
        self.successResultOf(d)

    def test_othersKeepTheirDeadlines(self) -> None:
        """
        A request given more time does not hold up the deadlines of others
        with the same timeout, before or after it.
        """
        d, producer, upstream = self.start(timeout=2)
        self.reactor.advance(1)
        other = self.request(timeout=2)
        self.connect()
        self.reactor.advance(1)  # the streamed request is given more time
        self.assertNoResult(d)
        self.assertNoResult(other)
        later = self.request(timeout=2)
        self.connect()
        self.reactor.advance(1)
        self.failureResultOf(other, UpstreamTimeout)
        producer.consumer.write(b"0123456789")
        producer.finished.callback(None)
        self.reactor.advance(0.5)
        self.assertNoResult(d)
        self.reactor.advance(0.5)
        self.failureResultOf(later, UpstreamTimeout)
        self.assertNoResult(d)
        self.reactor.advance(1)
        self.failureResultOf(d, UpstreamTimeout)
        self.client.close()
        self.assertEqual(self.client._deadlines[2].later, [])
        self.assertIsNone(self.client._deadlines[2].timer)


class CancelTests(ClientTestCase):
    """
    Cancelling the request's Deferred aborts the request.
    """

    def test_whileConnecting(self) -> None:
        """
        Cancelling while connecting stops the attempt.
        """
        d = self.request()
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertTrue(self.reactor.connectors[0].stoppedConnecting)

    def test_waitingForHead(self) -> None:
        """
        Cancelling while waiting for the head aborts the connection, which
        is not pooled.
        """
        d = self.request()
        upstream = self.connect()
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertTrue(upstream.transport.disconnected)
        upstream.lose(error.ConnectionAborted())
        self.assertEqual(self.idle(), 0)

    def test_pooledConnection(self) -> None:
        """
        Cancelling a request on a reused connection aborts it without
        retrying.
        """
        _, _, upstream = self.exchange(SIMPLE)
        d = self.request()
        d.cancel()
        upstream.lose(error.ConnectionAborted())
        self.failureResultOf(d, CancelledError)
        self.assertEqual(len(self.reactor.tcpClients), 1)

    def test_afterResponse(self) -> None:
        """
        Cancelling after the response arrived changes nothing.
        """
        d = self.request()
        upstream = self.connect()
        upstream.send(SIMPLE)
        d.cancel()
        response = self.successResultOf(d)
        collect = Collect()
        response.deliverBody(collect)
        self.assertEqual(collect.body, b"hello")
        self.assertEqual(self.idle(), 1)


class ConnectErrorTests(ClientTestCase):
    """
    Failures to connect become L{UpstreamConnectError}.
    """

    def test_refused(self) -> None:
        """
        A refused connection is L{UpstreamConnectError}.
        """
        d = self.request()
        factory = self.reactor.tcpClients[0][2]
        factory.clientConnectionFailed(None, Failure(error.ConnectionRefusedError()))
        self.failureResultOf(d, UpstreamConnectError)

    def test_unreachable(self) -> None:
        """
        An unreachable host and a failed name lookup are
        L{UpstreamConnectError}.
        """
        for exc in (error.NoRouteError(), error.DNSLookupError("nope")):
            self.reactor.tcpClients.clear()
            d = self.request()
            self.reactor.tcpClients[0][2].clientConnectionFailed(None, Failure(exc))
            self.failureResultOf(d, UpstreamConnectError)


class BackpressureTests(ClientTestCase):
    """
    A response body's consumer controls reading from the upstream.
    """

    def test_pauseResume(self) -> None:
        """
        Pausing the body's producer pauses the upstream transport; resuming
        resumes it.
        """
        d = self.request()
        upstream = self.connect()
        upstream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
        collect = Collect()
        self.successResultOf(d).deliverBody(collect)
        self.assertTrue(verifyObject(IPushProducer, collect.transport))
        collect.transport.pauseProducing()
        self.assertEqual(upstream.transport.producerState, "paused")
        collect.transport.resumeProducing()
        self.assertEqual(upstream.transport.producerState, "producing")
        collect.transport.pauseProducing()
        collect.transport.stopProducing()
        collect.transport.resumeProducing()  # after the abort: leaves the transport alone
        self.assertTrue(upstream.transport.disconnected)
        upstream.lose(error.ConnectionAborted())
        collect.reason.trap(ResponseFailed)

    def test_pausedWhenBodyEnds(self) -> None:
        """
        A connection paused by its body's consumer when the body ends is
        resumed before it is pooled.
        """

        class PauseOnData(Collect):
            def dataReceived(self, data: bytes) -> None:
                Collect.dataReceived(self, data)
                self.transport.pauseProducing()

        d = self.request()
        upstream = self.connect()
        upstream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
        collect = PauseOnData()
        self.successResultOf(d).deliverBody(collect)
        upstream.send(b"hello")
        self.assertEqual(upstream.transport.producerState, "paused")
        upstream.send(b"world")
        collect.reason.trap(ResponseDone)
        self.assertEqual(upstream.transport.producerState, "producing")
        self.assertEqual(self.idle(), 1)

    def test_bufferedWithoutConsumer(self) -> None:
        """
        Body bytes are buffered until C{deliverBody}, but past
        L{httpclient.MAX_PENDING} reading is paused until it is called.
        """
        d = self.request()
        upstream = self.connect()
        upstream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n")
        response = self.successResultOf(d)
        upstream.send(b"a" * 60000)
        self.assertEqual(upstream.transport.producerState, "producing")
        upstream.send(b"b" * 60000)
        self.assertEqual(upstream.transport.producerState, "paused")
        collect = Collect()
        response.deliverBody(collect)
        self.assertEqual(upstream.transport.producerState, "producing")
        self.assertEqual(collect.body, b"a" * 60000 + b"b" * 60000)
        upstream.send(b"c" * 80000)
        collect.reason.trap(ResponseDone)


class InterfaceTests(ClientTestCase):
    """
    The client, its responses and the agent provide their interfaces.
    """

    def test_client(self) -> None:
        """
        L{HTTP11UpstreamClient} provides L{IUpstreamClient}, and what its
        C{send} returns provides L{IUpstreamRequest}.
        """
        self.assertTrue(verifyObject(IUpstreamClient, self.client))
        sent, _ = self.send()
        self.assertTrue(verifyObject(IUpstreamRequest, sent))

    def send(self, timeout: Optional[float] = None, uri: bytes = b"/") -> Any:
        """
        @return: C{(request, outcomes)}: a request sent without a Deferred,
            and the list its callbacks append C{("response" | "failure",
            result, *args)} to.
        """
        outcomes: List[Any] = []
        sent = self.client.send(
            self.backend,
            b"GET",
            uri,
            Headers(),
            None,
            timeout,
            lambda response, *args: outcomes.append(("response", response) + args),
            lambda failure, *args: outcomes.append(("failure", failure) + args),
            "a",
            2,
        )
        return sent, outcomes

    def test_send(self) -> None:
        """
        C{send} calls back with the response, and the arguments given,
        once; the request it returns is then C{finished}.
        """
        sent, outcomes = self.send(timeout=5)
        self.assertEqual((outcomes, sent.finished), ([], False))
        upstream = self.connect()
        upstream.send(SIMPLE)
        [(kind, response, a, b)] = outcomes
        self.assertEqual(
            (kind, response.code, response.body, a, b), ("response", 200, b"hello", "a", 2)
        )
        self.assertTrue(sent.finished)
        sent.cancel()  # over: nothing happens
        self.assertEqual(len(outcomes), 1)

    def test_sendFails(self) -> None:
        """
        C{send} calls back with a failure when the request times out, is
        cancelled, or its connection breaks; for an invalid target, at once
        (the request it returns is finished already).
        """
        sent, outcomes = self.send()
        self.connect().lose()
        [(kind, failure, a, b)] = outcomes
        failure.trap(UpstreamBroken)
        self.assertEqual((kind, a, b), ("failure", "a", 2))
        self.assertTrue(sent.finished)

        sent, outcomes = self.send(timeout=5)
        self.reactor.advance(5)
        [(kind, failure, _, _)] = outcomes
        failure.trap(UpstreamTimeout)

        sent, outcomes = self.send()
        sent.cancel()
        [(kind, failure, _, _)] = outcomes
        failure.trap(CancelledError)

        sent, outcomes = self.send(uri=b"/a b")
        [(kind, failure, _, _)] = outcomes
        failure.trap(ValueError)
        self.assertTrue(sent.finished)

    def test_response(self) -> None:
        """
        Responses provide L{IResponse}; C{request} is L{None} outside the
        agent; C{setPreviousResponse} sets C{previousResponse}.
        """
        response, _, _ = self.exchange(SIMPLE)
        self.assertTrue(verifyObject(IResponse, response))
        self.assertIsNone(response.request)
        response.setPreviousResponse(self)
        self.assertIs(response.previousResponse, self)

    def test_agent(self) -> None:
        """
        L{UpstreamAgent} provides L{IAgent} and sends C{http://} requests
        through the client's pools, with the request target and Host of
        the URI.
        """
        agent = UpstreamAgent(self.client)
        self.assertTrue(verifyObject(IAgent, agent))
        d = agent.request(b"GET", b"http://127.0.0.1:8080/path?q=1#frag")
        upstream = self.connect()
        self.assertTrue(
            upstream.received().startswith(b"GET /path?q=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n")
        )
        upstream.send(SIMPLE)
        response = self.successResultOf(d)
        self.assertEqual(response.request.method, b"GET")
        self.assertEqual(response.request.absoluteURI, b"http://127.0.0.1:8080/path?q=1#frag")
        agent.request(b"GET", b"http://127.0.0.1:8080")
        self.assertTrue(upstream.received().startswith(b"GET / HTTP/1.1\r\n"))

    def test_agentSchemes(self) -> None:
        """
        L{UpstreamAgent} refuses anything but C{http://}.
        """
        agent = UpstreamAgent(self.client)
        self.failureResultOf(agent.request(b"GET", b"https://example.com/"), SchemeNotSupported)
        self.failureResultOf(agent.request(b"GET", b"http:///nohost"), ValueError)
        self.failureResultOf(agent.request(b"GET", b"http://h:port/"), ValueError)


# -- against real servers -------------------------------------------------------


class Echo(resource.Resource):
    """
    A backend: C{/echo} describes the request, C{/bytes/N} sends N bytes,
    C{/chunked} streams chunks, C{/hang} never answers.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.hanging: List[Any] = []

    def render(self, request: Any) -> Any:
        path = request.path
        if path.startswith(b"/bytes/"):
            size = int(path.split(b"/")[2])
            return _pattern(size)
        if path == b"/chunked":
            parts = [b"chunk-%d;" % i for i in range(20)]

            def more() -> None:
                if request._disconnected:
                    return
                if parts:
                    request.write(parts.pop(0))
                    reactor.callLater(0.001, more)
                else:
                    request.finish()

            more()
            return server.NOT_DONE_YET
        if path == b"/hang":
            self.hanging.append(request)
            return server.NOT_DONE_YET
        body = request.content.read()
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(
            {
                "method": request.method.decode(),
                "uri": request.uri.decode(),
                "length": len(body),
                "sha256": hashlib.sha256(body).hexdigest(),
                "host": (request.getHeader(b"host") or b"").decode(),
                "contentLength": (request.getHeader(b"content-length") or b"").decode(),
                "te": (request.getHeader(b"transfer-encoding") or b"").decode(),
            }
        ).encode()


def _pattern(size: int) -> bytes:
    block = hashlib.sha256(b"pattern").digest() * 2048  # 64 KiB
    return (block * (size // len(block) + 1))[:size]


class OneShotServer(Protocol):
    """
    Answers each request with a keep-alive response, then closes: after
    the first answer (C{closeAfter}) or when a second request arrives
    without answering it (the keep-alive race, made certain).
    """

    def __init__(self, stats: dict, closeAfter: bool) -> None:
        self.stats = stats
        self.closeAfter = closeAfter
        self.buffer = b""
        self.answered = 0

    def connectionMade(self) -> None:
        self.stats["connections"] += 1

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            _, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            if self.answered:
                self.transport.loseConnection()
                return
            self.answered += 1
            self.stats["answers"] += 1
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            if self.closeAfter:
                self.transport.loseConnection()


@pytest.fixture
def live() -> Any:
    """
    A real reactor's client and an L{Echo} backend on 127.0.0.1.
    """

    class Live:
        pass

    env = Live()
    env.echo = Echo()  # type: ignore[attr-defined]
    env.port = reactor.listenTCP(0, server.Site(env.echo), interface="127.0.0.1")  # type: ignore[attr-defined]
    env.backend = FakeBackend("127.0.0.1", env.port.getHost().port)  # type: ignore[attr-defined]
    env.client = HTTP11UpstreamClient(reactor, connectTimeout=2)  # type: ignore[attr-defined]
    env.ports = [env.port]  # type: ignore[attr-defined]
    yield env

    async def stop() -> None:
        for hanging in env.echo.hanging:  # type: ignore[attr-defined]
            if not hanging._disconnected and not hanging.finished:
                hanging.finish()
        await env.client.close()  # type: ignore[attr-defined]
        for port in env.ports:  # type: ignore[attr-defined]
            await port.stopListening()

    pytest_twisted.blockon(defer.ensureDeferred(stop()))


async def readAll(response: Any) -> bytes:
    done: defer.Deferred = defer.Deferred()
    collect = Collect()
    collect.connectionLost = lambda reason: done.callback([reason])  # type: ignore[method-assign]
    response.deliverBody(collect)
    (reason,) = await done
    reason.trap(ResponseDone)
    return collect.body


# A real server on 127.0.0.1: an integration test.
@pytest.mark.integration
@pytest.mark.parametrize("size", [0, 10, 3 * 1024 * 1024])
@pytest_twisted.ensureDeferred
async def test_live_bodies(live: Any, size: int) -> None:
    """
    GET and POST bodies of 0 B, 10 B and 3 MB arrive intact both ways,
    over one reused connection, sent in memory, from a file of known
    length and chunked.
    """
    data = _pattern(size)
    digest = hashlib.sha256(data).hexdigest()
    response = await request(live.client, live.backend, b"GET", b"/bytes/%d" % size, Headers())
    body = await readAll(response)
    assert (response.length, len(body), hashlib.sha256(body).hexdigest()) == (size, size, digest)

    producers = [
        BytesBodyProducer(data),
        FileBodyProducer(io.BytesIO(data)),
        ChunkedProducer(data),
    ]
    for producer in producers:
        response = await request(
            live.client, live.backend, b"POST", b"/echo", Headers(), producer, 10
        )
        echoed = json.loads(await readAll(response))
        assert (echoed["length"], echoed["sha256"]) == (size, digest)
        assert echoed["host"] == f"127.0.0.1:{live.backend.port}"
    assert echoed["te"] == "chunked"
    assert len(live.client._pools[("127.0.0.1", live.backend.port, None)].idle) == 1


@implementer(IBodyProducer)
class ChunkedProducer:
    """
    A body of unknown length, written in 64 KiB pieces over several reactor
    turns.
    """

    length = UNKNOWN_LENGTH

    def __init__(self, data: bytes) -> None:
        self.data = data

    def startProducing(self, consumer: Any) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        pieces = [self.data[i : i + 65536] for i in range(0, len(self.data), 65536)]

        def more() -> None:
            if pieces:
                consumer.write(pieces.pop(0))
                reactor.callLater(0, more)
            else:
                d.callback(None)

        more()
        return d

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


# A real server on 127.0.0.1: an integration test.
@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_live_chunked(live: Any) -> None:
    """
    A chunked response streamed over time is de-chunked.
    """
    response = await request(live.client, live.backend, b"GET", b"/chunked", Headers())
    assert response.length is UNKNOWN_LENGTH
    assert response.headers.getRawHeaders(b"transfer-encoding") == [b"chunked"]
    assert await readAll(response) == b"".join(b"chunk-%d;" % i for i in range(20))


# A real server on 127.0.0.1: an integration test.
@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_live_timeout(live: Any) -> None:
    """
    A backend that never answers times out with L{UpstreamTimeout}.
    """
    with pytest.raises(UpstreamTimeout):
        await request(live.client, live.backend, b"GET", b"/hang", Headers(), None, 0.2)


# A real server on 127.0.0.1: an integration test.
@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_live_refused(live: Any) -> None:
    """
    A port nobody listens on is L{UpstreamConnectError}.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UpstreamConnectError):
        await request(live.client, FakeBackend("127.0.0.1", port), b"GET", b"/", Headers())


# A real server on 127.0.0.1: an integration test.
@pytest.mark.integration
@pytest.mark.parametrize("closeAfter", [True, False])
@pytest_twisted.ensureDeferred
async def test_live_serverClosesKeepAlive(live: Any, closeAfter: bool) -> None:
    """
    A server that closes its keep-alive connections after one answer,
    either at once or when the next request arrives (the keep-alive race),
    costs the client no failed request: the closed connection leaves the
    pool, or the request is retried once on a new one.
    """
    stats = {"connections": 0, "answers": 0}
    factory = Factory.forProtocol(lambda: OneShotServer(stats, closeAfter))
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    live.ports.append(port)
    backend = FakeBackend("127.0.0.1", port.getHost().port)
    for _ in range(10):
        response = await request(live.client, backend, b"GET", b"/", Headers(), None, 5)
        assert await readAll(response) == b"ok"
        if closeAfter:
            await task.deferLater(reactor, 0.01, lambda: None)
    assert stats == {"connections": 10, "answers": 10}


# A real server on 127.0.0.1: an integration test.
@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_live_download_backpressure(live: Any) -> None:
    """
    A 10 MB body streams to a consumer that pauses after every read: no
    data arrives while it is paused, and the body is intact.
    """
    size = 10 * 1024 * 1024
    done: defer.Deferred = defer.Deferred()

    class Slow(Protocol):
        def __init__(self) -> None:
            self.digest = hashlib.sha256()
            self.size = 0
            self.paused = False
            self.whilePaused = 0
            self.pauses = 0

        def dataReceived(self, data: bytes) -> None:
            if self.paused:
                self.whilePaused += 1
            self.digest.update(data)
            self.size += len(data)
            self.paused = True
            self.pauses += 1
            self.transport.pauseProducing()
            reactor.callLater(0.001, self.resume)

        def resume(self) -> None:
            self.paused = False
            self.transport.resumeProducing()

        def connectionLost(self, reason: Failure) -> None:
            done.callback([reason])

    response = await request(live.client, live.backend, b"GET", b"/bytes/%d" % size, Headers())
    slow = Slow()
    response.deliverBody(slow)
    (reason,) = await done
    reason.trap(ResponseDone)
    assert slow.size == size
    assert slow.digest.hexdigest() == hashlib.sha256(_pattern(size)).hexdigest()
    assert slow.whilePaused == 0
    assert slow.pauses > 10


# A real server on 127.0.0.1: an integration test.
@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_live_treq(live: Any) -> None:
    """
    treq drives the client through L{UpstreamAgent}: JSON GET, POST with a
    body, and its errors are the gateway's.
    """
    import treq.client

    http = treq.client.HTTPClient(UpstreamAgent(live.client, timeout=5))
    base = f"http://127.0.0.1:{live.backend.port}"
    response = await http.get(base + "/echo?x=1")
    assert response.code == 200
    echoed = await response.json()
    assert (echoed["method"], echoed["uri"]) == ("GET", "/echo?x=1")
    response = await http.post(base + "/echo", data=b"0123456789")
    echoed = await response.json()
    assert (echoed["length"], echoed["contentLength"]) == (10, "10")
    content = await (await http.get(base + "/bytes/100000")).content()
    assert content == _pattern(100000)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UpstreamConnectError):
        await http.get(f"http://127.0.0.1:{port}/")
