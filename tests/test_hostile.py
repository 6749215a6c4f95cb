"""
Tests for L{gateway.http.channel}: the gateway's HTTP channel against hostile
clients (malformed and oversized request heads, request smuggling, bodies
over a limit, slow clients, ambiguous paths), driven over in-memory
transports with a L{Clock}; and the admin's hardening (authentication on
every route, body limits).
"""

from __future__ import annotations

import io
import json
import socket
from typing import Any, Dict, List, Optional, Sequence, Tuple

import attrs
import pytest
from fakes import ScriptedUpstreamClient
from treq.testing import StubTreq
from twisted.internet import tcp
from twisted.internet.address import IPv4Address
from twisted.internet.defer import succeed
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.interfaces import IConsumer, IPushProducer
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

from gateway.filters import FilterRegistry
from gateway.http.channel import GatewayHTTPChannel, ambiguousPath
from gateway.http.request import GatewayRequest
from gateway.http.site import LimitedSite
from gateway.model.endpoints import isLoopbackEndpoint
from gateway.model.limits import ADMIN_LIMITS, HTTPLimits
from gateway.pipeline.resource import GatewayResource
from gateway.routing.snapshot import SnapshotManager
from gateway.store import StoreState
from gateway.telemetry.stats import Stats

PEER = IPv4Address("TCP", "127.0.0.1", 40000)
HOST = IPv4Address("TCP", "127.0.0.1", 8080)


# -- helpers ------------------------------------------------------------------


@attrs.frozen
class Answer:
    """
    One HTTP response parsed from what a channel wrote.
    """

    status: int
    headers: Dict[str, List[str]]
    body: bytes

    def header(self, name: str) -> Optional[str]:
        values = self.headers.get(name.lower())
        return values[-1] if values else None

    def json(self) -> Any:
        return json.loads(self.body)


def parseAnswers(data: bytes, methods: Sequence[bytes] = ()) -> List[Answer]:
    """
    Parse every complete response in C{data}: a status line, headers and a
    body framed by C{Content-Length}, by chunks, or by the end of the data.

    @param methods: the methods of the requests answered, in order, as far
        as they are known: the answer to a C{HEAD} has no body.
    @raise ValueError: when C{data} is not a sequence of valid responses.
    """
    answers: List[Answer] = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError(f"incomplete response head: {data[:200]!r}")
        lines = head.split(b"\r\n")
        version, _, rest1 = lines[0].partition(b" ")
        code, _, _ = rest1.partition(b" ")
        if version not in (b"HTTP/1.1", b"HTTP/1.0") or not (code.isdigit() and len(code) == 3):
            raise ValueError(f"invalid status line: {lines[0]!r}")
        headers: Dict[str, List[str]] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip():
                raise ValueError(f"invalid header line: {line!r}")
            headers.setdefault(name.decode("latin-1").lower(), []).append(
                value.strip().decode("latin-1")
            )
        status = int(code)
        length = headers.get("content-length")
        final = not 100 <= status < 200
        index = len([a for a in answers if not 100 <= a.status < 200])
        isHead = final and index < len(methods) and methods[index] == b"HEAD"
        if not final or status in (204, 304) or isHead:
            body = b""
        elif length is not None:
            n = int(length[0])
            if len(rest) < n:
                raise ValueError("truncated body")
            body, rest = rest[:n], rest[n:]
        elif headers.get("transfer-encoding") == ["chunked"]:
            body = b""
            while True:
                sizeLine, crlf, rest = rest.partition(b"\r\n")
                if not crlf:
                    raise ValueError("truncated chunked body")
                size = int(sizeLine.split(b";")[0], 16)
                if size == 0:
                    trailerEnd = rest.find(b"\r\n")
                    if trailerEnd != 0:
                        raise ValueError("trailers are not expected")
                    rest = rest[2:]
                    break
                body += rest[:size]
                if rest[size : size + 2] != b"\r\n":
                    raise ValueError("chunk without CRLF")
                rest = rest[size + 2 :]
        else:
            body, rest = rest, b""
        answers.append(Answer(status, headers, body))
        data = rest
    return answers


class Recorder(Resource):
    """
    A resource that records the requests it gets and answers C{ok} with the
    body's length, or holds them when C{hold} is set.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: List[Tuple[bytes, bytes, bytes, Any]] = []
        self.hold = False

    def render(self, request: Any) -> Any:
        request.content.seek(0)
        body = request.content.read()
        self.seen.append((request.method, request.uri, body, request))
        if self.hold:
            return NOT_DONE_YET
        return b"ok %d" % (len(body),)


class HalfClosingTransport(StringTransport):
    """
    A L{StringTransport} that can be half-closed, as a TCP connection.
    """

    halfClosed = False
    aborted = False

    def loseWriteConnection(self) -> None:
        self.halfClosed = True

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


class ServerTestCase(SynchronousTestCase):
    """
    A site with a L{Recorder} behind L{LimitedSite}, on a L{Clock}.
    """

    limits = HTTPLimits()

    def setUp(self) -> None:
        self.clock = Clock()
        self.resource = Recorder()
        self.site = self.makeSite()

    def makeSite(self, **kwargs: Any) -> LimitedSite:
        kwargs.setdefault("limits", self.limits)
        return LimitedSite(self.resource, reactor=self.clock, **kwargs)

    def connect(
        self, site: Optional[LimitedSite] = None, transport: Optional[StringTransport] = None
    ) -> Tuple[GatewayHTTPChannel, StringTransport]:
        channel = (site or self.site).buildProtocol(PEER)
        if transport is None:
            transport = StringTransport(hostAddress=HOST, peerAddress=PEER)
        channel.makeConnection(transport)
        return channel, transport

    def exchange(self, data: bytes, **kwargs: Any) -> Tuple[List[Answer], StringTransport]:
        """
        Send C{data} on a new connection.

        @return: the answers and the transport.
        """
        channel, transport = self.connect(**kwargs)
        channel.dataReceived(data)
        return parseAnswers(transport.value()), transport

    def assertRefused(self, data: bytes, code: int, **kwargs: Any) -> Answer:
        """
        C{data} is answered C{code} alone, with a JSON error and
        C{Connection: close}; the connection is closed and no request
        reached the resource.
        """
        answers, transport = self.exchange(data, **kwargs)
        self.assertEqual([a.status for a in answers], [code], (data[:300], transport.value()))
        answer = answers[0]
        self.assertEqual(answer.header("connection"), "close")
        self.assertEqual(answer.header("content-type"), "application/json")
        self.assertIsInstance(answer.json()["error"], str)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.resource.seen, [])
        return answer

    def assertServed(self, data: bytes, **kwargs: Any) -> Answer:
        """
        C{data} is one request the resource answers with 200.
        """
        answers, transport = self.exchange(data, **kwargs)
        self.assertEqual([a.status for a in answers], [200], (data[:300], transport.value()))
        self.assertEqual(len(self.resource.seen), 1)
        return answers[0]


def get(target: bytes = b"/", *headers: bytes, version: bytes = b"HTTP/1.1") -> bytes:
    lines = [b"GET " + target + b" " + version, b"Host: gw"] + list(headers)
    return b"\r\n".join(lines) + b"\r\n\r\n"


#: A request a smuggler hopes a second parser sees after the first one.
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: gw\r\n\r\n"


# -- request line -------------------------------------------------------------


class RequestLineTests(ServerTestCase):
    """
    The request line is parsed strictly.
    """

    def test_valid(self) -> None:
        """
        A well-formed request is served and the connection stays open.
        """
        answers, transport = self.exchange(get(b"/a/b?c=d"))
        self.assertEqual([a.status for a in answers], [200])
        self.assertEqual(self.resource.seen[0][:2], (b"GET", b"/a/b?c=d"))
        self.assertFalse(transport.disconnecting)

    def test_malformed(self) -> None:
        """
        Request lines that are not C{method SP target SP version}, with an
        invalid method token, version or target character, are answered 400.
        """
        for line in [
            b"GET /",
            b"GET  / HTTP/1.1",
            b"GET / HTTP/1.1 ",
            b"GET / HTTP/1.1 extra",
            b"GET\t/ HTTP/1.1",
            b" GET / HTTP/1.1",
            b"G(T / HTTP/1.1",
            b"GET@ / HTTP/1.1",
            b"/ HTTP/1.1",
            b"GET / HTTP/1.x",
            b"GET / http/1.1",
            b"GET / HTTP/1.1\x00",
            b"GET /a\x7f HTTP/1.1",
            b"GET /caf\xc3\xa9 HTTP/1.1",
            b"GET /a\x00b HTTP/1.1",
            b"GET /a#frag HTTP/1.1",
            b"GET * HTTP/1.1",
            b"GET relative/path HTTP/1.1",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        ]:
            self.resource.seen = []
            self.assertRefused(line + b"\r\nHost: gw\r\n\r\n", 400)

    def test_versions(self) -> None:
        """
        HTTP/1.0 is served; another well-formed version is answered 505.
        """
        self.assertServed(b"GET / HTTP/1.0\r\n\r\n")
        self.resource.seen = []
        for version in (b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.2"):
            self.assertRefused(get(version=version), 505)

    def test_connect(self) -> None:
        """
        CONNECT (tunnelling) is answered 501.
        """
        self.assertRefused(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n", 501)

    def test_other_targets(self) -> None:
        """
        C{OPTIONS *} (which twisted.web answers itself) is accepted, and so
        are absolute-form targets (RFC 9112 3.2.2), served as their path
        on the host they name (which stands for the C{Host} header).
        """
        answers, _ = self.exchange(b"OPTIONS * HTTP/1.1\r\nHost: gw\r\n\r\n")
        self.assertEqual([a.status for a in answers], [200])
        self.assertServed(get(b"http://gw/a"))
        self.assertEqual(self.resource.seen[0][1], b"/a")
        for target, path in [
            (b"HTTP://other:8080/a/b?x=1", b"/a/b?x=1"),
            (b"https://other", b"/"),
            (b"http://other?x=1", b"/?x=1"),
        ]:
            self.resource.seen = []
            self.assertServed(get(target))
            self.assertEqual(self.resource.seen[0][1], path, target)
            host = target.split(b"/")[2].split(b"?")[0]
            self.assertEqual(self.resource.seen[0][3].requestHeaders.getRawHeaders(b"host"), [host])

    def test_absolute_targets_checked(self) -> None:
        """
        An absolute-form target's path is checked as any path (dot
        segments, encoded slashes), and its host as a C{Host} header; user
        information in it is refused.
        """
        for target in [
            b"http://gw/a/../admin",
            b"http://gw/a%2Fb",
            b"http://user@gw/a",
            b"http:///a",
            b"http://:80/a",
            b"http://g w/a",
            b"http://gw\\a/",
        ]:
            self.assertRefused(get(target), 400)

    def test_long_line(self) -> None:
        """
        A request line longer than C{maxRequestLineLength} is answered 414;
        one exactly that long is served.
        """
        limit = self.limits.maxRequestLineLength
        fits = b"/" + b"a" * (limit - len(b"GET / HTTP/1.1"))
        self.assertEqual(len(b"GET " + fits + b" HTTP/1.1"), limit)
        self.assertServed(get(fits))
        self.resource.seen = []
        self.assertRefused(get(fits + b"a"), 414)
        self.assertRefused(get(b"/" + b"a" * 100_000), 414)

    def test_long_line_refused_before_its_end(self) -> None:
        """
        A request line is refused with 414 as soon as it is longer than the
        limit, without waiting for its end.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"GET /" + b"a" * (self.limits.maxRequestLineLength - 5))
        self.assertEqual(transport.value(), b"")
        channel.dataReceived(b"aaa")
        self.assertEqual([a.status for a in parseAnswers(transport.value())], [414])
        self.assertTrue(transport.disconnecting)

    def test_leading_empty_line(self) -> None:
        """
        One empty line before a request line is ignored; a second one is a
        malformed request line.
        """
        self.assertServed(b"\r\n" + get())
        self.resource.seen = []
        self.assertRefused(b"\r\n\r\n" + get(), 400)

    def test_nothing_read_after_refusal(self) -> None:
        """
        What follows a refused request in the same packet is never parsed.
        """
        answers, transport = self.exchange(b"BAD\r\n\r\n" + get() + get())
        self.assertEqual([a.status for a in answers], [400])
        self.assertEqual(self.resource.seen, [])
        self.assertEqual(self.site.rejections, {400: 1})


# -- headers ------------------------------------------------------------------


class HeaderTests(ServerTestCase):
    """
    Header lines are parsed strictly and their number and size limited.
    """

    limits = HTTPLimits(maxHeadersSize=2048, maxHeaderCount=20)

    def test_count(self) -> None:
        """
        C{maxHeaderCount} header lines are accepted, one more is 431.
        """
        extra = [b"X-%d: y" % (i,) for i in range(19)]
        self.assertServed(get(b"/", *extra))
        self.resource.seen = []
        self.assertRefused(get(b"/", *extra, b"X-last: y"), 431)

    def test_size(self) -> None:
        """
        A head of C{maxHeadersSize} bytes (request line to the empty line)
        is accepted, one byte more is 431.
        """
        base = get(b"/", b"X: ")
        pad = b"y" * (2048 - len(base))
        fits = get(b"/", b"X: " + pad)
        self.assertEqual(len(fits), 2048)
        self.assertServed(fits)
        self.resource.seen = []
        self.assertRefused(get(b"/", b"X: " + pad + b"y"), 431)

    def test_size_refused_before_the_end(self) -> None:
        """
        A head is refused with 431 as soon as it passes the limit, whether
        in many lines or in one unfinished line.
        """
        for start in (b"GET / HTTP/1.1\r\nHost: gw\r\nX: ", b"GET / HTTP/1.1\r\n"):
            channel, transport = self.connect()
            channel.dataReceived(start)
            for _ in range(100):
                channel.dataReceived(b"y" * 50)
                if transport.value():
                    break
            self.assertEqual([a.status for a in parseAnswers(transport.value())], [431])
            self.assertTrue(transport.disconnecting)
        self.assertEqual(self.resource.seen, [])

    def test_very_long_line(self) -> None:
        """
        A header line longer than the whole head allowance is 431.
        """
        self.assertRefused(get(b"/", b"X: " + b"y" * 100_000), 431)

    def test_malformed(self) -> None:
        """
        Header lines without a colon or with an invalid name, obsolete line
        folding, and control characters in a value are answered 400.
        """
        for line in [
            b"NoColon",
            b": empty-name",
            b"Space : before-colon",
            b"Tab\t: before-colon",
            b"Two Words: x",
            b"Paren(: x",
            b"X-Nul: a\x00b",
            b"X-CR: a\rb",
            b"X-VT: a\x0bb",
            b"X-Del: a\x7fb",
            b"\xc3\xa9: x",
            b" folded",
            b"\tfolded",
        ]:
            self.resource.seen = []
            self.assertRefused(get(b"/", b"X-First: a", line), 400)

    def test_accepted_values(self) -> None:
        """
        Tabs and non-ASCII bytes (obs-text) are accepted in a value, and
        leading and trailing whitespace is dropped.
        """
        self.assertServed(get(b"/", b"X-Tab: a\tb", b"X-Latin: caf\xe9", b"X-Pad: \t v \t"))
        headers = self.resource.seen[0][3].requestHeaders
        self.assertEqual(headers.getRawHeaders(b"x-tab"), [b"a\tb"])
        self.assertEqual(headers.getRawHeaders(b"x-latin"), [b"caf\xe9"])
        self.assertEqual(headers.getRawHeaders(b"x-pad"), [b"v"])

    def test_host(self) -> None:
        """
        An HTTP/1.1 request needs exactly one valid Host header (400
        otherwise); HTTP/1.0 may go without.
        """
        self.assertRefused(b"GET / HTTP/1.1\r\n\r\n", 400)
        self.assertRefused(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400)
        for bad in (b"a b", b"evil.com/path", b"a@b", b"a\\b", b"[::1", b"a:b:c"):
            self.assertRefused(b"GET / HTTP/1.1\r\nHost: " + bad + b"\r\n\r\n", 400)
        for good in (b"example.com", b"example.com:8080", b"127.0.0.1:1", b"[::1]:80", b""):
            self.resource.seen = []
            self.assertServed(b"GET / HTTP/1.1\r\nHost: " + good + b"\r\n\r\n")
        self.resource.seen = []
        self.assertServed(b"GET / HTTP/1.0\r\n\r\n")

    def test_underscore_lookalikes(self) -> None:
        """
        A header spelling a framing or forwarding header with underscores,
        which CGI-style backends would read as that header, is 400; other
        names with underscores pass.
        """
        for name in (b"Content_Length", b"Transfer_Encoding", b"X_Forwarded_For", b"X-Real_IP"):
            self.assertRefused(get(b"/", name + b": 1"), 400)
        self.assertServed(get(b"/", b"X_Custom: 1"))


# -- smuggling ----------------------------------------------------------------


def post(*headers: bytes, body: bytes = b"", version: bytes = b"HTTP/1.1") -> bytes:
    return b"\r\n".join([b"POST /p " + version, b"Host: gw"] + list(headers)) + b"\r\n\r\n" + body


CHUNKED_ABC = b"3\r\nabc\r\n0\r\n\r\n"

#: Requests whose body framing two parsers could read differently.
SMUGGLING = {
    "CL then TE": post(b"Content-Length: 15", b"Transfer-Encoding: chunked", body=CHUNKED_ABC),
    "TE then CL": post(b"Transfer-Encoding: chunked", b"Content-Length: 3", body=CHUNKED_ABC),
    "TE and CL 0": post(b"Content-Length: 0", b"Transfer-Encoding: chunked", body=CHUNKED_ABC),
    "identity TE and CL": post(b"Transfer-Encoding: identity", b"Content-Length: 3", body=b"abc"),
    "two equal CL": post(b"Content-Length: 3", b"Content-Length: 3", body=b"abc"),
    "conflicting CL": post(b"Content-Length: 3", b"Content-Length: 5", body=b"abcde"),
    "CL list": post(b"Content-Length: 3, 3", body=b"abc"),
    "CL plus": post(b"Content-Length: +3", body=b"abc"),
    "CL minus": post(b"Content-Length: -3", body=b"abc"),
    "CL hex": post(b"Content-Length: 0x3", body=b"abc"),
    "CL decimal": post(b"Content-Length: 3.0", body=b"abc"),
    "CL inner space": post(b"Content-Length: 3 3", body=b"abc"),
    "CL superscript": post("Content-Length: ³".encode(), body=b"abc"),
    "CL empty": post(b"Content-Length:", body=b"abc"),
    "TE xchunked": post(b"Transfer-Encoding: xchunked", body=CHUNKED_ABC),
    "TE chunkedx": post(b"Transfer-Encoding: chunkedx", body=CHUNKED_ABC),
    "TE chunked, identity": post(b"Transfer-Encoding: chunked, identity", body=CHUNKED_ABC),
    "TE identity, chunked": post(b"Transfer-Encoding: identity, chunked", body=CHUNKED_ABC),
    "TE gzip, chunked": post(b"Transfer-Encoding: gzip, chunked", body=CHUNKED_ABC),
    "TE chunked twice": post(b"Transfer-Encoding: chunked, chunked", body=CHUNKED_ABC),
    "TE two headers": post(
        b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked", body=CHUNKED_ABC
    ),
    "TE chunked then identity": post(
        b"Transfer-Encoding: chunked", b"Transfer-Encoding: identity", body=CHUNKED_ABC
    ),
    "TE identity": post(b"Transfer-Encoding: identity", body=b"abc"),
    "TE empty": post(b"Transfer-Encoding:", body=CHUNKED_ABC),
    "TE trailing comma": post(b"Transfer-Encoding: chunked,", body=CHUNKED_ABC),
    "TE quoted": post(b'Transfer-Encoding: "chunked"', body=CHUNKED_ABC),
    "TE parameter": post(b"Transfer-Encoding: chunked;x=1", body=CHUNKED_ABC),
    "TE vertical tab": post(b"Transfer-Encoding: chunked\x0b", body=CHUNKED_ABC),
    "TE form feed": post(b"Transfer-Encoding:\x0cchunked", body=CHUNKED_ABC),
    "TE space before colon": post(b"Transfer-Encoding : chunked", body=CHUNKED_ABC),
    "TE folded": post(b"Transfer-Encoding:", b" chunked", body=CHUNKED_ABC),
    "TE as continuation": post(b"X: y", b" Transfer-Encoding: chunked", body=CHUNKED_ABC),
    "TE underscore": post(b"Transfer_Encoding: chunked", body=CHUNKED_ABC),
    "TE in HTTP/1.0": post(b"Transfer-Encoding: chunked", body=CHUNKED_ABC, version=b"HTTP/1.0"),
    "chunk size negative": post(b"Transfer-Encoding: chunked", body=b"-3\r\nabc\r\n0\r\n\r\n"),
    "chunk size 0x": post(b"Transfer-Encoding: chunked", body=b"0x3\r\nabc\r\n0\r\n\r\n"),
    "chunk size space": post(b"Transfer-Encoding: chunked", body=b"3 \r\nabc\r\n0\r\n\r\n"),
    "chunk without CRLF": post(b"Transfer-Encoding: chunked", body=b"3\r\nabcX\r\n0\r\n\r\n"),
    "chunk size LF only": post(b"Transfer-Encoding: chunked", body=b"3\nabc\r\n0\r\n\r\n"),
}


class SmugglingTests(ServerTestCase):
    """
    A request whose body framing is ambiguous is answered 400 and the
    connection closed: neither it nor what follows it is ever served.
    """

    def test_ambiguous_framing(self) -> None:
        """
        Every request in L{SMUGGLING}, followed by a smuggled request, gets
        one 400 and nothing reaches the resource.
        """
        for name, data in SMUGGLING.items():
            self.resource.seen = []
            with self.subTest(name):
                self.assertRefused(data + SMUGGLED, 400)
        self.assertEqual(self.site.rejections, {400: len(SMUGGLING)})

    def test_valid_framing(self) -> None:
        """
        A single Content-Length, and C{chunked} in any case, are read as
        they say; the next request on the connection is served apart.
        """
        for data in [
            post(b"Content-Length: 3", body=b"abc"),
            post(b"Content-Length: 003", body=b"abc"),
            post(b"Transfer-Encoding: chunked", body=CHUNKED_ABC),
            post(b"Transfer-Encoding: Chunked", body=CHUNKED_ABC),
            post(b"Transfer-Encoding:  chunked ", body=b"1;ext=1\r\na\r\n2\r\nbc\r\n0\r\n\r\n"),
        ]:
            self.resource.seen = []
            answers, transport = self.exchange(data + SMUGGLED)
            self.assertEqual([a.status for a in answers], [200, 200])
            self.assertEqual(
                [(m, u, b) for m, u, b, _ in self.resource.seen],
                [(b"POST", b"/p", b"abc"), (b"GET", b"/smuggled", b"")],
            )

    def test_never_forwarded(self) -> None:
        """
        Behind the proxy resource, an ambiguous request sends nothing to
        any backend.
        """
        proxy = ProxyFixture(self.clock)
        site = LimitedSite(proxy.resource, reactor=self.clock, requestFactory=GatewayRequest)
        for name, data in SMUGGLING.items():
            with self.subTest(name):
                channel, transport = self.connect(site)
                channel.dataReceived(data.replace(b"/p ", b"/public/p ") + SMUGGLED)
                self.assertEqual([a.status for a in parseAnswers(transport.value())], [400])
        self.assertEqual(proxy.client.sent, [])


# -- bodies -------------------------------------------------------------------


class BodyLimitTests(ServerTestCase):
    """
    Bodies over the limit are refused with 413 as soon as that is known.
    """

    limits = HTTPLimits(maxBodySize=1000)

    def test_declared_length(self) -> None:
        """
        A Content-Length over the limit is answered 413 as soon as the head
        is in, before any of the body; one at the limit is served.
        """
        self.assertRefused(post(b"Content-Length: 1001"), 413)
        self.assertRefused(post(b"Content-Length: 99999999999999999999999999"), 413)
        answer = self.assertServed(post(b"Content-Length: 1000", body=b"x" * 1000))
        self.assertEqual(answer.body, b"ok 1000")

    def test_expect_continue(self) -> None:
        """
        A client that asks to continue is told 413 instead of 100 when its
        body is too large, and 100 otherwise.
        """
        answer = self.assertRefused(post(b"Content-Length: 5000", b"Expect: 100-continue"), 413)
        self.assertIn("1000", answer.json()["error"])
        channel, transport = self.connect()
        channel.dataReceived(post(b"Content-Length: 3", b"Expect: 100-continue"))
        self.assertEqual(transport.value(), b"HTTP/1.1 100 Continue\r\n\r\n")
        channel.dataReceived(b"abc")
        self.assertEqual([a.status for a in parseAnswers(transport.value())], [100, 200])

    def test_chunked(self) -> None:
        """
        A chunked body is refused with 413 as soon as its running total
        passes the limit, before its last chunk; what follows is dropped.
        """
        self.assertServed(
            post(b"Transfer-Encoding: chunked", body=b"3e8\r\n" + b"x" * 1000 + b"\r\n0\r\n\r\n")
        )
        self.resource.seen = []
        channel, transport = self.connect()
        channel.dataReceived(post(b"Transfer-Encoding: chunked"))
        channel.dataReceived(b"258\r\n" + b"x" * 600 + b"\r\n")
        self.assertEqual(transport.value(), b"")
        channel.dataReceived(b"258\r\n" + b"x" * 600)
        self.assertEqual([a.status for a in parseAnswers(transport.value())], [413])
        channel.dataReceived(b"\r\n0\r\n\r\n" + get())
        self.assertEqual([a.status for a in parseAnswers(transport.value())], [413])
        self.assertEqual(self.resource.seen, [])
        self.assertTrue(transport.disconnecting)

    def test_no_limit(self) -> None:
        """
        With C{maxBodySize} None, any body is read.
        """
        site = self.makeSite(limits=HTTPLimits(maxBodySize=None))
        answers, _ = self.exchange(post(b"Content-Length: 300000", body=b"x" * 300_000), site=site)
        self.assertEqual([a.body for a in answers], [b"ok 300000"])

    def test_route_limits(self) -> None:
        """
        The site's C{bodyLimitFor} gives the limit of each request's route,
        lower or higher than the default, or None for the default; it is
        asked with the method, Host and path without the query, and only
        for requests that have a body.
        """
        calls = []

        def bodyLimitFor(method: bytes, host: Optional[bytes], path: bytes) -> Optional[int]:
            calls.append((method, host, path))
            return {b"/small": 10, b"/big": 5000}.get(path)

        site = self.makeSite(bodyLimitFor=bodyLimitFor)

        def send(path: bytes, size: int) -> List[int]:
            data = b"PUT %s HTTP/1.1\r\nHost: h:1\r\nContent-Length: %d\r\n\r\n" % (path, size)
            answers, _ = self.exchange(data + b"x" * size, site=site)
            return [a.status for a in answers]

        self.assertEqual(send(b"/small", 10), [200])
        self.assertEqual(send(b"/small?q=1", 11), [413])
        self.assertEqual(send(b"/other", 1000), [200])
        self.assertEqual(send(b"/other", 1001), [413])
        self.assertEqual(send(b"/big", 5000), [200])
        self.assertEqual(send(b"/big", 5001), [413])
        self.assertEqual(calls[1], (b"PUT", b"h:1", b"/small"))
        del calls[:]
        self.exchange(get(b"/small"), site=site)
        self.exchange(post(b"Content-Length: 0"), site=site)
        self.assertEqual(calls, [])

    def test_route_limit_failure(self) -> None:
        """
        A C{bodyLimitFor} that fails is logged and the default applies.
        """

        def bodyLimitFor(method: bytes, host: Optional[bytes], path: bytes) -> Optional[int]:
            raise RuntimeError("boom")

        site = self.makeSite(bodyLimitFor=bodyLimitFor)
        answers, _ = self.exchange(post(b"Content-Length: 1001"), site=site)
        self.assertEqual([a.status for a in answers], [413])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_snapshot_body_limits(self) -> None:
        """
        L{SnapshotManager.bodyLimitFor} matches the request in the manager's
        current snapshot and answers the API's C{maxBodySize}; L{None} when there is
        no snapshot, no match, or the API sets no limit.
        """

        @attrs.define
        class API:
            maxBodySize: Optional[int]

        @attrs.define
        class Compiled:
            config: API

        @attrs.define
        class Match:
            value: Compiled

        seen = []

        class Snapshot:
            def match(self, method: str, host: Optional[str], path: str) -> Any:
                seen.append((method, host, path))
                return {
                    "/limited": Match(Compiled(API(7))),
                    "/open": Match(Compiled(API(None))),
                }.get(path)

        manager = SnapshotManager(FilterRegistry({}), self.clock)
        limitFor = manager.bodyLimitFor
        self.assertIsNone(limitFor(b"POST", b"h", b"/limited"))
        manager.snapshot = Snapshot()
        self.assertEqual(limitFor(b"POST", b"h\xe9", b"/limited"), 7)
        self.assertIsNone(limitFor(b"POST", None, b"/open"))
        self.assertIsNone(limitFor(b"POST", None, b"/none"))
        self.assertEqual(seen[0], ("POST", "h\xe9", "/limited"))

    def test_snapshot_body_limits_real_snapshot(self) -> None:
        """
        L{SnapshotManager.bodyLimitFor} works over a real snapshot: an API without a
        C{maxBodySize} gives the default.
        """
        proxy = ProxyFixture(self.clock)
        limitFor = proxy.manager.bodyLimitFor
        self.assertIsNone(limitFor(b"POST", b"gw", b"/public/x"))
        self.assertIsNone(limitFor(b"POST", b"gw", b"/nothing"))


class ChunkedBodyTests(ServerTestCase):
    """
    Chunked bodies are decoded strictly: a chunk size past the body limit is
    413 and a malformed size or trailer line 400 as soon as the bytes that
    show it arrive, never after a timeout.
    """

    limits = HTTPLimits(maxBodySize=1000)

    def assertRefusedAtOnce(self, body: bytes, code: int) -> Answer:
        """
        A chunked request whose body starts with C{body} (and never goes on)
        is answered C{code} without the clock moving, nothing reaches the
        resource, and the connection is closed.
        """
        channel, transport = self.connect()
        channel.dataReceived(post(b"Transfer-Encoding: chunked"))
        channel.dataReceived(body)
        answers = parseAnswers(transport.value())
        self.assertEqual([a.status for a in answers], [code], body)
        self.assertEqual(self.resource.seen, [])
        self.assertTrue(transport.disconnecting)
        return answers[0]

    def test_chunk_size_over_the_limit(self) -> None:
        """
        A chunk size that takes the body past its limit is answered 413 as
        soon as its line is read, before any of its data, and as soon as
        its digits alone say so, before the end of its line.
        """
        answer = self.assertRefusedAtOnce(b"3e9\r\n", 413)
        self.assertIn("1000", answer.json()["error"])
        self.assertRefusedAtOnce(b"fffffffffffffffffffff", 413)
        self.assertRefusedAtOnce(b"3e8\r\n" + b"x" * 1000 + b"\r\n1\r\n", 413)
        self.assertRefusedAtOnce(b"1f4\r\n" + b"x" * 500 + b"\r\n1f5;ext=1", 413)

    def test_body_at_the_limit(self) -> None:
        """
        Chunks adding up to the limit, with extensions and split anywhere,
        are served whole.
        """
        body = b"1f4;a=b\r\n" + b"x" * 500 + b'\r\n1F4 ; q="v"\r\n' + b"y" * 500 + b"\r\n0\r\n\r\n"
        for size in (1, 7, len(body)):
            self.resource.seen = []
            channel, transport = self.connect()
            channel.dataReceived(post(b"Transfer-Encoding: chunked"))
            for i in range(0, len(body), size):
                channel.dataReceived(body[i : i + size])
            self.assertEqual([a.body for a in parseAnswers(transport.value())], [b"ok 1000"])
            self.assertEqual(self.resource.seen[0][2], b"x" * 500 + b"y" * 500)

    def test_malformed_size_lines(self) -> None:
        """
        A chunk-size line that is not hexadecimal digits, optional
        extensions and CRLF is answered 400 at once, also before its end.
        """
        for body in [
            b"5\nhello\r\n0\r\n\r\n",
            b"5\rhello",
            b"5 \r\n",
            b"+5\r\n",
            b"0x5\r\n",
            b"-1\r\n",
            b"5;a\x01\r\n",
            b"\r\n",
            b"zz",
            b"5 x",
            b"5;" + b"a" * 2000,
            b"5\r\nhelloXX",
        ]:
            self.assertRefusedAtOnce(body, 400)

    def test_trailer_without_colon(self) -> None:
        """
        A trailer line without a colon is answered 400 (it used to be
        accepted and the request served).
        """
        self.assertRefusedAtOnce(b"3\r\nabc\r\n0\r\nno-colon\r\n\r\n", 400)
        self.assertRefusedAtOnce(b"0\r\nno colon, and never ended", 400)

    def test_malformed_trailers(self) -> None:
        """
        A trailer line with a bare LF or CR, obsolete line folding, a name
        that is not a token or a control character in its value is answered
        400 as soon as it arrives (a bare LF used to wait for the body
        timeout).
        """
        for body in [
            b"0\r\nX-A: 1\n\r\n",
            b"0\r\nX-A: 1\n",
            b"0\r\nX-A: 1\rX-B: 2\r\n\r\n",
            b"0\r\nX-A: 1\r\n folded\r\n\r\n",
            b"0\r\nBad Name: 1\r\n\r\n",
            b"0\r\nX-A: a\x00b\r\n\r\n",
            b"0\r\n\n",
        ]:
            self.assertRefusedAtOnce(body, 400)

    def test_trailers_too_large(self) -> None:
        """
        Trailers over C{maxHeadersSize} bytes are answered 431 as soon as
        they pass it.
        """
        self.assertRefusedAtOnce(b"0\r\nX-A: " + b"a" * 40000, 431)
        self.assertRefusedAtOnce(b"0\r\n" + b"X-A: 1\r\n" * 5000, 431)

    def test_valid_trailers(self) -> None:
        """
        Well-formed trailers are read (and dropped), and a request pipelined
        after the body is served in turn.
        """
        channel, transport = self.connect()
        channel.dataReceived(
            post(b"Transfer-Encoding: chunked")
            + b"3\r\nabc\r\n0\r\nX-Checksum: abc\r\nX-Empty:\r\n\r\n"
            + get(b"/next")
        )
        self.assertEqual([a.status for a in parseAnswers(transport.value())], [200, 200])
        self.assertEqual([s[1:3] for s in self.resource.seen], [(b"/p", b"abc"), (b"/next", b"")])


# -- timeouts -----------------------------------------------------------------


class TimeoutTests(ServerTestCase):
    """
    Slow clients are cut off by the header, body and idle timeouts, on the
    site's clock.
    """

    limits = HTTPLimits(headerTimeout=10, bodyTimeout=60, idleTimeout=30)

    def test_head_timeout(self) -> None:
        """
        A connection that has not sent a whole request head within
        C{headerTimeout} seconds of connecting is answered 408 and closed,
        however it trickles bytes in.
        """
        for trickle in (False, True):
            channel, transport = self.connect()
            for _ in range(9):
                if trickle:
                    channel.dataReceived(b"G")
                self.clock.advance(1)
            self.clock.advance(0.99)
            self.assertEqual(transport.value(), b"")
            self.assertFalse(transport.disconnecting)
            self.clock.advance(0.01)
            self.assertEqual([a.status for a in parseAnswers(transport.value())], [408])
            self.assertTrue(transport.disconnecting)
        self.assertEqual(self.site.rejections, {408: 2})

    def test_idle_keep_alive(self) -> None:
        """
        Between requests, a kept-alive connection may stay idle for
        C{idleTimeout} seconds and is then closed without an answer; the
        next request's head has C{headerTimeout} seconds from its first
        byte.
        """
        channel, transport = self.connect()
        channel.dataReceived(get())
        transport.clear()
        self.clock.advance(29)
        channel.dataReceived(b"GET / HT")
        self.clock.advance(9.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.1)
        self.assertEqual([a.status for a in parseAnswers(transport.value())], [408])

        channel, transport = self.connect()
        channel.dataReceived(get())
        transport.clear()
        self.clock.advance(29.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")

    def test_pipelined_partial_head(self) -> None:
        """
        The start of a request that came with the end of the previous one
        is timed too.
        """
        channel, transport = self.connect()
        channel.dataReceived(get() + b"GET /second HTTP/1.1\r\n")
        self.assertEqual(len(self.resource.seen), 1)
        self.clock.advance(10)
        self.assertEqual([a.status for a in parseAnswers(transport.value())], [200, 408])

    def test_not_while_answering(self) -> None:
        """
        A request being answered is not timed out by the channel, however
        long it takes (the proxy's node timeout governs it).
        """
        self.resource.hold = True
        channel, transport = self.connect()
        channel.dataReceived(get())
        self.clock.advance(10_000)
        self.assertEqual(transport.value(), b"")
        self.assertFalse(transport.disconnecting)
        request = self.resource.seen[0][3]
        request.write(b"late")
        request.finish()
        self.assertEqual([a.body for a in parseAnswers(transport.value())], [b"late"])

    def test_body_timeout(self) -> None:
        """
        A body trickled in is answered 408 once C{bodyTimeout} seconds
        (plus a second per C{minBodyRate} bytes received) have passed since
        its head.
        """
        channel, transport = self.connect()
        channel.dataReceived(post(b"Content-Length: 100"))
        for _ in range(59):
            channel.dataReceived(b"x")
            self.clock.advance(1)
        self.clock.advance(1 + 59 / 65536 - 0.001)
        self.assertEqual(transport.value(), b"")
        self.clock.advance(0.002)
        self.assertEqual([a.status for a in parseAnswers(transport.value())], [408])
        self.assertEqual(self.resource.seen, [])

    def test_large_body_at_a_fair_pace(self) -> None:
        """
        A large body sent steadily faster than C{minBodyRate} may take
        longer than C{bodyTimeout} in all; with C{minBodyRate} 0 it may not.
        """
        size, chunk = 10_000_000, 100_000
        for minBodyRate, expected in ((65536, 200), (0, 408)):
            self.resource.seen = []
            site = self.makeSite(limits=attrs.evolve(self.limits, minBodyRate=minBodyRate))
            channel, transport = self.connect(site)
            channel.dataReceived(post(b"Content-Length: %d" % (size,)))
            for _ in range(size // chunk):
                if transport.disconnecting:
                    break
                channel.dataReceived(b"x" * chunk)
                self.clock.advance(1)
            answers = parseAnswers(transport.value())
            self.assertEqual([a.status for a in answers], [expected])

    def test_timers_cancelled(self) -> None:
        """
        No timer of the channel outlives its connection, and none is left
        waiting while nothing is expected of the client.
        """
        channel, transport = self.connect()
        channel.dataReceived(post(b"Content-Length: 10", body=b"abc"))
        self.assertTrue(self.clock.getDelayedCalls())
        channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.clock.getDelayedCalls(), [])

        self.resource.hold = True
        channel, transport = self.connect()
        channel.dataReceived(get())
        self.clock.advance(self.limits.headerTimeout)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(transport.value(), b"")

    def test_slow_clients_do_not_starve(self) -> None:
        """
        Hundreds of slow clients do not keep a normal one waiting, and are
        all cut off after C{headerTimeout}.
        """
        slow = [self.connect() for _ in range(500)]
        for channel, _ in slow:
            channel.dataReceived(b"GET / HTTP/1.1\r\nHost: gw\r\n")
        self.clock.advance(5)
        answers, _ = self.exchange(get(b"/normal"))
        self.assertEqual([a.status for a in answers], [200])
        self.clock.advance(5)
        for _, transport in slow:
            self.assertEqual([a.status for a in parseAnswers(transport.value())], [408])
            self.assertTrue(transport.disconnecting)

    def test_linger(self) -> None:
        """
        On a transport that can half-close, a refusal closes the writing
        side only, drops what the client still sends, and aborts the
        connection after C{lingerTimeout} seconds.
        """
        transport = HalfClosingTransport(hostAddress=HOST, peerAddress=PEER)
        channel, _ = self.connect(transport=transport)
        channel.dataReceived(post(b"Content-Length: 99999999999") + b"body")
        self.assertEqual([a.status for a in parseAnswers(transport.value())], [413])
        self.assertTrue(transport.halfClosed)
        self.assertFalse(transport.disconnecting)
        channel.dataReceived(b"more" * 1000)
        self.clock.advance(GatewayHTTPChannel.lingerTimeout - 0.1)
        self.assertFalse(transport.aborted)
        self.clock.advance(0.1)
        self.assertTrue(transport.aborted)
        self.assertEqual(self.resource.seen, [])


def tcpPair() -> Tuple[socket.socket, socket.socket]:
    """
    @return: the two ends of a TCP connection on 127.0.0.1.
    """
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        clientSide = socket.create_connection(listener.getsockname(), timeout=5)
        gatewaySide, _ = listener.accept()
    return gatewaySide, clientSide


class _TCPConnection(tcp.Connection):
    """
    Twisted's TCP connection over a socket of a C{socketpair}, with fixed
    addresses.
    """

    def getPeer(self) -> IPv4Address:
        return PEER

    def getHost(self) -> IPv4Address:
        return HOST


class SendTimeoutTests(ServerTestCase):
    """
    A client that takes nothing of its answer for C{sendTimeout} seconds is
    cut off, its request learns that its connection is lost (the proxy then
    stops the upstream connection), and the site's stats count it.
    """

    limits = HTTPLimits(sendTimeout=30, idleTimeout=1000, headerTimeout=1000)

    def setUp(self) -> None:
        super().setUp()
        self.stats = Stats(self.clock)
        self.site = self.makeSite(stats=self.stats)
        self.resource.hold = True

    def startAnswer(
        self, target: bytes = b"/", version: bytes = b"HTTP/1.1"
    ) -> Tuple[GatewayHTTPChannel, HalfClosingTransport, Any, StringTransport, List[Failure]]:
        """
        Start answering a request, with a producer (standing for the
        upstream connection) registered.

        @return: the channel, its transport, the request, the producer, and
            a list that gets the failure of the request's C{notifyFinish}.
        """
        transport = HalfClosingTransport(hostAddress=HOST, peerAddress=PEER)
        channel, _ = self.connect(transport=transport)
        channel.dataReceived(get(target, version=version))
        request = self.resource.seen[-1][3]
        producer = StringTransport()
        request.registerProducer(producer, True)
        request.write(b"x" * 1000)
        lost: List[Failure] = []
        request.notifyFinish().addErrback(lost.append)
        return channel, transport, request, producer, lost

    def test_cut_off(self) -> None:
        """
        When the transport's buffer stays full (the transport pauses the
        channel and never resumes it) for C{sendTimeout} seconds, the
        connection is aborted, counted, and its request told.  Until then
        the answer's producer is paused.
        """
        channel, transport, request, producer, lost = self.startAnswer()
        transport.producer.pauseProducing()
        self.assertEqual(producer.producerState, "paused")
        self.clock.advance(29.9)
        self.assertFalse(transport.aborted)
        self.assertEqual(self.stats.sendTimeouts, 0)
        self.clock.advance(0.1)
        self.assertTrue(transport.aborted)
        self.assertEqual(self.stats.sendTimeouts, 1)
        self.assertEqual(self.stats.snapshot()["sendTimeouts"], 1)
        channel.connectionLost(Failure(ConnectionAborted()))
        self.assertEqual(len(lost), 1)

    def test_resumed_in_time(self) -> None:
        """
        A client that takes its answer before C{sendTimeout} (the transport
        resumes the channel) starts the deadline again at the next pause; a
        client that reads normally is never cut, however long the answer.
        """
        channel, transport, request, producer, lost = self.startAnswer()
        transport.producer.pauseProducing()
        self.clock.advance(29)
        transport.producer.resumeProducing()
        self.assertEqual(producer.producerState, "producing")
        self.clock.advance(1000)
        transport.producer.pauseProducing()
        self.clock.advance(29)
        self.assertFalse(transport.aborted)
        self.clock.advance(1)
        self.assertTrue(transport.aborted)
        self.assertEqual(self.stats.sendTimeouts, 1)

    def test_no_site_stats(self) -> None:
        """
        A site without stats cuts the client all the same.
        """
        self.site = self.makeSite()
        channel, transport, request, producer, lost = self.startAnswer()
        transport.producer.pauseProducing()
        self.clock.advance(30)
        self.assertTrue(transport.aborted)

    def test_closing_connection(self) -> None:
        """
        A connection closing after its last answer (HTTP/1.0) while the
        client reads nothing is aborted after C{sendTimeout} seconds: the
        transport would otherwise wait for the client forever.
        """
        channel, transport, request, producer, lost = self.startAnswer(version=b"HTTP/1.0")
        transport.producer.pauseProducing()
        self.clock.advance(10)
        request.unregisterProducer()
        request.finish()
        self.assertTrue(transport.disconnecting)
        self.clock.advance(19.9)
        self.assertFalse(transport.aborted)
        self.clock.advance(0.1)
        self.assertTrue(transport.aborted)
        self.assertEqual(self.stats.sendTimeouts, 1)

    @pytest.mark.integration
    def test_progress_on_tcp(self) -> None:
        """
        Over Twisted's TCP transport, bytes the client takes while the send
        buffer stays full are progress: the deadline starts again from them
        (seen within a quarter of C{sendTimeout}), so a slow reader is not
        cut while it reads, and is once it stops.
        """
        reactor = MemoryReactorClock()
        site = LimitedSite(self.resource, limits=self.limits, reactor=reactor, stats=self.stats)
        gatewaySide, clientSide = tcpPair()
        self.addCleanup(gatewaySide.close)
        self.addCleanup(clientSide.close)
        gatewaySide.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        clientSide.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        gatewaySide.setblocking(False)
        channel = site.buildProtocol(PEER)
        transport = _TCPConnection(gatewaySide, channel, reactor)
        transport.connected = 1
        channel.makeConnection(transport)
        channel.dataReceived(get())
        request = self.resource.seen[-1][3]
        lost: List[Failure] = []
        request.notifyFinish().addErrback(lost.append)
        request.write(b"x" * 300_000)
        reactor.advance(0)
        self.assertTrue(transport.producerPaused)
        reactor.pump([1] * 20)
        clientSide.recv(100_000)
        transport.doWrite()
        self.assertTrue(transport.producerPaused)
        reactor.pump([1] * 30)
        self.assertEqual((self.stats.sendTimeouts, lost), (0, []))
        reactor.pump([1] * 10)
        self.assertEqual(self.stats.sendTimeouts, 1)
        reactor.advance(0)
        self.assertEqual(len(lost), 1)


# -- persistence --------------------------------------------------------------


class PersistenceTests(ServerTestCase):
    """
    When a connection is kept open.
    """

    def test_connection_close_in_a_list(self) -> None:
        """
        C{close} anywhere in the Connection header closes the connection.
        """
        answers, transport = self.exchange(get(b"/", b"Connection: keep-alive,close"))
        self.assertEqual(answers[0].header("connection"), "close")
        self.assertTrue(transport.disconnecting)

    def test_pipelining(self) -> None:
        """
        Pipelined requests are answered in order on one connection.
        """
        answers, transport = self.exchange(
            get(b"/1") + post(b"Content-Length: 2", body=b"ab") + get(b"/3")
        )
        self.assertEqual([a.status for a in answers], [200, 200, 200])
        self.assertEqual([s[1] for s in self.resource.seen], [b"/1", b"/p", b"/3"])
        self.assertFalse(transport.disconnecting)


class FlowControlTests(ServerTestCase):
    """
    L{GatewayHTTPChannel} reads no faster than it answers, and keeps one
    timer per connection.
    """

    def test_pipelined_bytes_bounded(self) -> None:
        """
        While a request is answered, what the client pipelines behind it is
        buffered up to 16 KB; past that the channel stops reading, and it
        reads again (and answers the buffered requests, in order) once the
        answer is finished.
        """
        self.resource.hold = True
        channel, transport = self.connect()
        channel.dataReceived(get(b"/1"))
        self.assertEqual(transport.producerState, "producing")
        pipelined = b"".join(get(b"/%d" % (i,)) for i in range(2, 700))
        channel.dataReceived(pipelined[:8000])
        self.assertEqual(transport.producerState, "producing")
        channel.dataReceived(pipelined[8000:])
        self.assertEqual(transport.producerState, "paused")
        self.assertEqual(len(self.resource.seen), 1)
        self.resource.hold = False
        self.resource.seen[0][3].finish()
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual([s[1] for s in self.resource.seen], [b"/%d" % (i,) for i in range(1, 700)])
        self.assertEqual(len(parseAnswers(transport.value())), 699)

    def test_client_not_reading_pauses_producer(self) -> None:
        """
        When the client does not read its answer (the transport pauses the
        channel), the answer's producer is paused, and resumed with it.
        """
        self.resource.hold = True
        channel, transport = self.connect()
        channel.dataReceived(get())
        request = self.resource.seen[0][3]
        producer = StringTransport()
        request.registerProducer(producer, True)
        transport.producer.pauseProducing()
        self.assertEqual(producer.producerState, "paused")
        # Reading goes on while answering: the client may still be sending.
        self.assertEqual(transport.producerState, "producing")
        transport.producer.resumeProducing()
        self.assertEqual(producer.producerState, "producing")
        request.unregisterProducer()
        request.finish()

    def test_client_not_reading_stops_requests(self) -> None:
        """
        Between requests, a client that does not read its answers is not
        read from either, until it does.
        """
        channel, transport = self.connect()
        channel.dataReceived(get())
        transport.producer.pauseProducing()
        self.assertEqual(transport.producerState, "paused")
        transport.producer.resumeProducing()
        self.assertEqual(transport.producerState, "producing")

    def test_one_timer(self) -> None:
        """
        A busy kept-alive connection schedules no timer per request: one
        per connection serves the head, body and idle deadlines.
        """
        channel, transport = self.connect()
        for _ in range(50):
            channel.dataReceived(get() + post(b"Content-Length: 2", body=b"ab"))
            self.clock.advance(0.1)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.assertEqual(len(parseAnswers(transport.value())), 100)
        self.assertFalse(transport.disconnecting)

    def test_continue_only_for_a_body(self) -> None:
        """
        C{Expect: 100-continue} on a request without a body is answered
        without an interim C{100}.
        """
        answers, _ = self.exchange(get(b"/", b"Expect: 100-continue"))
        self.assertEqual([a.status for a in answers], [200])

    def test_small_bodies_in_memory(self) -> None:
        """
        A request without a body, or with a small one, keeps it in memory
        (no temporary file per request).
        """
        self.resource.hold = True
        channel, _ = self.connect()
        channel.dataReceived(get())
        self.assertIsInstance(self.resource.seen[0][3].content, io.BytesIO)
        channel, _ = self.connect()
        channel.dataReceived(post(b"Content-Length: 2", body=b"ab"))
        self.assertIsInstance(self.resource.seen[1][3].content, io.BytesIO)

    def test_request_done_out_of_order(self) -> None:
        """
        A request that is not the channel's current one cannot end it.
        """
        channel, _ = self.connect()
        self.assertRaises(TypeError, channel.requestDone, object())

    def test_http10_closes(self) -> None:
        """
        An HTTP/1.0 request is answered, then the connection is closed and
        what followed it is dropped.
        """
        answers, transport = self.exchange(b"GET /a HTTP/1.0\r\n\r\n" + get(b"/b"))
        self.assertEqual([a.status for a in answers], [200])
        self.assertTrue(transport.disconnecting)
        self.assertEqual([s[1] for s in self.resource.seen], [b"/a"])


# -- paths --------------------------------------------------------------------


class AmbiguousPathTests(SynchronousTestCase):
    """
    L{ambiguousPath} finds paths a backend could read as another path.
    """

    def test_plain(self) -> None:
        """
        Ordinary paths, percent-encoded ones included, are not ambiguous.
        """
        for path in [
            b"/",
            b"/a",
            b"/a/b/",
            b"/a%20b",
            b"/caf%C3%A9",
            b"/a.b/c..d/...",
            b"/.well-known/x",
            b"/a/%2e%2e%2e",
            b"/a;b=c",
            b"/%25",
            b"/%7E",
        ]:
            self.assertIsNone(ambiguousPath(path), path)

    def test_ambiguous(self) -> None:
        """
        Dot segments (also encoded, in any case, or with path parameters),
        empty segments, encoded slashes and backslashes, backslashes, encoded
        NUL and malformed escapes are ambiguous.
        """
        for path in [
            b"/..",
            b"/a/..",
            b"/a/../b",
            b"/a/./b",
            b"/.",
            b"/%2e%2e/b",
            b"/%2E%2E/b",
            b"/.%2e/b",
            b"/%2e./b",
            b"/%2e/b",
            b"/..;/b",
            b"/..;x=1/b",
            b"/%2e%2e;/b",
            b"//a",
            b"/a//b",
            b"/a%2Fb",
            b"/a%2fb",
            b"/a%5Cb",
            b"/a%5cb",
            b"/a\\b",
            b"/a%00",
            b"/a%",
            b"/a%2",
            b"/a%zz",
            b"/a%%2e",
        ]:
            self.assertIsNotNone(ambiguousPath(path), path)


@attrs.define
class FakeResponse:
    """
    An upstream response with a fixed body.
    """

    code: int = 200
    phrase: bytes = b"OK"
    body: bytes = b"upstream"
    headers: Headers = attrs.Factory(Headers)

    @property
    def length(self) -> int:
        return len(self.body)

    def deliverBody(self, protocol: Any) -> None:
        protocol.makeConnection(NullProducer())
        protocol.dataReceived(self.body)
        protocol.connectionLost(Failure(ResponseDone()))


@implementer(IPushProducer)
class NullProducer:
    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class FakeClient(ScriptedUpstreamClient):
    """
    An upstream client that records what it is asked to send and answers
    200 at once.
    """

    def __init__(self) -> None:
        self.sent: List[Tuple[str, bytes, bytes]] = []

    def respond(self, backend, method, uri, headers, bodyProducer, timeout):
        self.sent.append((backend.name, method, uri))
        response = FakeResponse(headers=Headers({b"content-length": [b"8"]}))
        return succeed(response)

    def close(self) -> Any:
        return succeed(None)


class ProxyFixture:
    """
    A L{GatewayResource} over a snapshot with a public API C{/public/*} and
    an admin-like API C{/admin/*} that denies everyone (403), each on its
    own backend, with a L{FakeClient}.
    """

    def __init__(self, clock: Clock, catchAll: bool = False) -> None:
        self.client = FakeClient()
        self.manager = SnapshotManager(FilterRegistry({}), clock)
        apis = {
            "public": {"name": "public", "urlPattern": "/public/*", "nodes": [{"cluster": "pub"}]},
            "admin": {
                "name": "admin",
                "urlPattern": "/admin/*",
                "nodes": [{"cluster": "adm"}],
                "ipAccess": {"deny": ["0.0.0.0/0", "::/0"]},
            },
        }
        if catchAll:
            apis["all"] = {"name": "all", "urlPattern": "/*", "nodes": [{"cluster": "pub"}]}
        self.manager.apply(
            StoreState(
                1,
                {
                    "servers": {
                        "pub": {"name": "pub", "addr": "127.0.0.1:1"},
                        "adm": {"name": "adm", "addr": "127.0.0.1:2"},
                    },
                    "clusters": {
                        "pub": {"name": "pub", "servers": ["pub"]},
                        "adm": {"name": "adm", "servers": ["adm"]},
                    },
                    "apis": apis,
                    "routings": {},
                },
            )
        )
        self.resource = GatewayResource(self.manager, self.client, clock)


#: Paths that try to reach C{/admin/*} through another route.
BYPASSES = [
    b"/public/../admin/x",
    b"/public/./../admin/x",
    b"/public/%2e%2e/admin/x",
    b"/public/%2E%2E/admin/x",
    b"/public/.%2E/admin/x",
    b"/public/%2e./admin/x",
    b"/public/..;/admin/x",
    b"/public/..%2Fadmin/x",
    b"/public/%2e%2e%2fadmin/x",
    b"/public/..%5Cadmin/x",
    b"/public\\..\\admin/x",
    b"//admin/x",
    b"/public//../admin/x",
    b"/public/%2e%2e%2f%2e%2e%2fadmin/x",
]


class RoutingBypassTests(SynchronousTestCase):
    """
    Paths cannot route a request around the API that owns it.
    """

    def setUp(self) -> None:
        self.clock = Clock()

    def request(
        self, proxy: ProxyFixture, target: bytes, limits: Optional[HTTPLimits] = None
    ) -> Answer:
        site = LimitedSite(
            proxy.resource, limits=limits, reactor=self.clock, requestFactory=GatewayRequest
        )
        channel = site.buildProtocol(PEER)
        transport = StringTransport(hostAddress=HOST, peerAddress=PEER)
        channel.makeConnection(transport)
        channel.dataReceived(get(target))
        answers = parseAnswers(transport.value())
        self.assertEqual(len(answers), 1, transport.value())
        return answers[0]

    def test_refused_by_the_channel(self) -> None:
        """
        Every bypass attempt is answered 400 and sent to no backend, even
        with a catch-all API.
        """
        proxy = ProxyFixture(self.clock, catchAll=True)
        for target in BYPASSES:
            self.assertEqual(self.request(proxy, target).status, 400, target)
        self.assertEqual(proxy.client.sent, [])

    def test_router_alone(self) -> None:
        """
        Without the channel's path rule, the router alone never sends a
        bypass attempt to the admin API's backend.
        """
        lax = HTTPLimits(rejectAmbiguousPaths=False)
        for catchAll in (False, True):
            proxy = ProxyFixture(self.clock, catchAll=catchAll)
            for target in BYPASSES:
                status = self.request(proxy, target, lax).status
                self.assertIn(status, (200, 404), target)
            self.assertNotIn("adm", [name for name, _, _ in proxy.client.sent])

    def test_encoded_names_reach_their_api(self) -> None:
        """
        A percent-encoded spelling of the admin path is routed to the admin
        API, whose filters answer it (403): encoding cannot skip them; a
        different case is another path (404 without a catch-all).
        """
        proxy = ProxyFixture(self.clock)
        for target in (b"/admin/x", b"/%61dmin/x", b"/%61%64%6D%69%6E/x", b"/%61%64%6d%69%6e/%78"):
            self.assertEqual(self.request(proxy, target).status, 403, target)
        self.assertEqual(self.request(proxy, b"/ADMIN/x").status, 404)
        self.assertEqual(self.request(proxy, b"/public/x").status, 200)
        self.assertEqual(proxy.client.sent, [("pub", b"GET", b"/public/x")])

    def test_admin_paths_on_the_proxy(self) -> None:
        """
        The admin's paths on the proxy are the proxy's 404, not admin data.
        """
        proxy = ProxyFixture(self.clock)
        for target in (b"/api/v1/servers", b"/api/v1/stats", b"/healthz", b"/metrics"):
            answer = self.request(proxy, target)
            self.assertEqual(answer.status, 404)
            self.assertEqual(answer.json(), {"error": "no API matches this request"})


# -- admin ----------------------------------------------------------------------


TOKEN = "admin-s3cret"


def concretePaths() -> List[Tuple[str, List[str]]]:
    """
    @return: C{(path, methods)} for every route of the admin's Klein app,
        its variables filled in (the first choice of an C{any}, else C{x}).
    """
    import re

    from gateway.admin.api import AdminAPI

    routes = []
    for rule in AdminAPI.app.url_map.iter_rules():
        path = re.sub(r"<any\(([^,)]+)[^>]*>", r"\1", rule.rule)
        path = re.sub(r"<[^>]+>", "x", path)
        routes.append((path, sorted(rule.methods or ["GET"])))
    return routes


#: Admin routes that answer without the token: the liveness and readiness
#: probes, and the API's description (none of them holds data).
PUBLIC_ADMIN_PATHS = frozenset(["/healthz", "/readyz", "/api/v1/openapi.json"])


class AdminHardeningTests(SynchronousTestCase):
    """
    Every admin route but the public ones needs the token.
    """

    def setUp(self) -> None:
        from gateway.admin.api import AdminAPI
        from gateway.store.file import FileStore

        self.clock = Clock()
        self.api = AdminAPI(FileStore(None), TOKEN, reactor=self.clock)
        self.stub = StubTreq(self.api.resource())

    def call(self, method: str, path: str, headers: Optional[Dict[str, str]] = None) -> Any:
        body = b"{}" if method in ("POST", "PUT") else None
        response = self.successResultOf(
            self.stub.request(method, "http://admin" + path, headers=headers, data=body)
        )
        content = self.successResultOf(response.content())
        return response, content

    def test_every_route_needs_the_token(self) -> None:
        """
        Every method of every route under C{/api/v1} (and C{/metrics}) is
        answered 401 with C{WWW-Authenticate} and no data without the
        token, with a wrong one, or with another scheme; only the public
        routes answer anonymously.
        """
        routes = concretePaths()
        self.assertIn("/api/v1/certificates", [p for p, _ in routes])
        for path, methods in routes:
            if path in PUBLIC_ADMIN_PATHS:
                continue
            self.assertTrue(
                path.startswith("/api/v1/") or path == "/metrics",
                f"{path} is neither under /api/v1 nor public: classify it",
            )
            for method in methods:
                for headers in (
                    None,
                    {"Authorization": "Bearer wrong"},
                    {"Authorization": "Bearer " + "x" * len(TOKEN)},
                    {"Authorization": "Bearer " + TOKEN[:-1]},
                    {"Authorization": "Bearer " + TOKEN + "x"},
                    {"Authorization": "Basic " + TOKEN},
                    {"Authorization": TOKEN},
                    {"X-Token": TOKEN},
                ):
                    response, content = self.call(method, path, headers)
                    self.assertEqual(response.code, 401, (method, path, headers))
                    self.assertTrue(response.headers.hasHeader(b"www-authenticate"))
                    if method != "HEAD":
                        self.assertEqual(
                            json.loads(content)["error"], "missing or invalid admin token"
                        )
                response, _ = self.call(method, path, {"Authorization": "Bearer " + TOKEN})
                self.assertNotEqual(response.code, 401, (method, path))

    def test_unknown_paths_need_the_token(self) -> None:
        """
        An anonymous caller learns nothing of what exists under C{/api/v1}:
        unknown paths are 401 too.
        """
        for path in ("/api/v1/nothing", "/api/v1/servers/x/y", "/api/v1"):
            response, _ = self.call("GET", path)
            self.assertEqual(response.code, 401, path)

    def test_constant_time_comparison(self) -> None:
        """
        The token is compared with L{hmac.compare_digest}.
        """
        import hmac

        import gateway.admin.api as module

        calls = []
        real = hmac.compare_digest

        def recording(a: bytes, b: bytes) -> bool:
            calls.append((a, b))
            return real(a, b)

        self.patch(module.hmac, "compare_digest", recording)
        response, _ = self.call("GET", "/api/v1/servers", {"Authorization": "Bearer guess"})
        self.assertEqual(response.code, 401)
        self.assertEqual(calls, [(b"guess", TOKEN.encode())])

    def test_body_limit(self) -> None:
        """
        Behind L{LimitedSite} with L{ADMIN_LIMITS}, a body over 1 MB is
        answered 413 at once, before it is read, with the admin's error
        shape (no field is at fault: no field key).
        """
        site = LimitedSite(self.api.resource(), limits=ADMIN_LIMITS, reactor=self.clock)
        channel = site.buildProtocol(PEER)
        transport = StringTransport(hostAddress=HOST, peerAddress=PEER)
        channel.makeConnection(transport)
        channel.dataReceived(
            b"POST /api/v1/servers HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer "
            + TOKEN.encode()
            + b"\r\nContent-Length: %d\r\n\r\n" % (ADMIN_LIMITS.maxBodySize + 1,)
        )
        answers = parseAnswers(transport.value())
        self.assertEqual([a.status for a in answers], [413])
        self.assertEqual(set(answers[0].json()), {"error"})


class LoopbackEndpointTests(SynchronousTestCase):
    """
    L{isLoopbackEndpoint} tells endpoints open to this machine only.
    """

    def test_loopback(self) -> None:
        """
        Loopback interfaces (IPv4 127/8, IPv6 ::1, localhost) and UNIX
        sockets are loopback.
        """
        for description in [
            "tcp:9090:interface=127.0.0.1",
            "tcp:9090:interface=127.1.2.3",
            "tcp:9090:127.0.0.1",
            "tcp:port=9090:interface=localhost",
            "tcp6:9090:interface=\\:\\:1",
            "ssl:9443:privateKey=k.pem:interface=127.0.0.1",
            "unix:/run/gateway-admin.sock",
        ]:
            self.assertTrue(isLoopbackEndpoint(description), description)

    def test_not_loopback(self) -> None:
        """
        No interface (every address), a wildcard or a routable interface,
        and endpoints of other kinds are not loopback.
        """
        for description in [
            "tcp:9090",
            "tcp:port=9090",
            "tcp:9090:interface=0.0.0.0",
            "tcp6:9090:interface=\\:\\:",
            "tcp:9090:interface=10.0.0.1",
            "tcp:9090:interface=example.com",
            "ssl:9443:privateKey=127.0.0.1",
            "systemd:domain=INET:index=0",
        ]:
            self.assertFalse(isLoopbackEndpoint(description), description)


class AdminConfigTests(SynchronousTestCase):
    """
    The config refuses an admin open to the network without a token.
    """

    def test_non_loopback_admin_needs_a_token(self) -> None:
        """
        An admin listening beyond loopback without a token is a
        L{ConfigError} naming C{admin.token}; with a token, or on loopback,
        it is accepted.
        """
        from gateway.model.config import ConfigError, parseConfig

        for listen in ("tcp:9090", "tcp:9090:interface=0.0.0.0", "tcp:9090:interface=10.1.1.1"):
            error = self.assertRaises(ConfigError, parseConfig, {"admin": {"listen": listen}})
            self.assertEqual(error.key, "admin.token")
            parseConfig({"admin": {"listen": listen, "token": "t"}})
        parseConfig({"admin": {"listen": "tcp:9090:interface=127.0.0.1"}})


class ChannelInterfaceTests(ServerTestCase):
    """
    L{GatewayHTTPChannel} is the producer its transport pauses and the
    consumer an answer's producer is registered with.
    """

    def test_interfaces(self) -> None:
        """
        A connected channel provides L{IPushProducer} and L{IConsumer}.
        """
        channel, _ = self.connect()
        self.assertTrue(verifyObject(IPushProducer, channel))
        self.assertTrue(verifyObject(IConsumer, channel))


# -- the gateway's own log ---------------------------------------------------------


class OwnLogTests(ServerTestCase):
    """
    Refusing a client's request writes nothing to the gateway's own log
    (twistd's, written blocking, with no level filter): the access log has
    the refusal; a line each would let a client fill the log, and stall the
    gateway on a standard output nobody reads, at will.
    """

    limits = HTTPLimits(headerTimeout=10, maxHeaderCount=5)

    def test_refusalsNotLogged(self) -> None:
        """
        A malformed request line, a header block too large, a bad header
        and a head too slow are each refused (and counted) without an event
        on the global log publisher.
        """
        from twisted.logger import globalLogPublisher

        events: List[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.exchange(b"GARBAGE\r\n\r\n")
        self.exchange(get(b"/", *[b"X-%d: 1" % (i,) for i in range(10)]))
        self.exchange(b"GET / HTTP/1.1\r\nHost: gw\r\nBad Header\r\n\r\n")
        channel, transport = self.connect()
        channel.dataReceived(b"GET / HT")
        self.clock.advance(10)
        self.assertEqual(self.site.rejections, {400: 2, 431: 1, 408: 1})
        self.assertEqual(
            [e for e in events if e.get("log_namespace", "").startswith("gateway")], []
        )
