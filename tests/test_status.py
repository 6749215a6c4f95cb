"""
Tests for L{gateway.http.status}: every status the gateway makes goes out
with its reason phrase (it sent C{429 Unknown Status}): the refusals of
the channel, the proxy's own answers, and the admin's.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

from fakes import ScriptedUpstreamClient
from test_hostile import HOST, PEER, FakeResponse
from twisted.internet.defer import fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import RESPONSES
from twisted.web.resource import Resource

from gateway.admin.api import AdminAPI
from gateway.filters import FilterRegistry
from gateway.http.errors import UpstreamBroken, UpstreamConnectError, UpstreamTimeout
from gateway.http.request import GatewayRequest
from gateway.http.site import LimitedSite
from gateway.http.status import REASON_PHRASES, PhrasedRequest, reasonPhrase
from gateway.model.limits import ADMIN_LIMITS, HTTPLimits
from gateway.pipeline.resource import GatewayResource
from gateway.routing.snapshot import SnapshotManager
from gateway.store import StoreState
from gateway.store.file import FileStore

#: The phrases of RFC 9110 for the statuses the gateway makes.
RFC9110 = {
    200: b"OK",
    201: b"Created",
    204: b"No Content",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    409: b"Conflict",
    413: b"Content Too Large",
    414: b"URI Too Long",
    415: b"Unsupported Media Type",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
}


def statusLine(site: Any, data: bytes, clock: Optional[Clock] = None, wait: float = 0) -> bytes:
    """
    Send C{data} on a new connection to C{site}.

    @param wait: seconds to advance C{clock} by after sending.
    @return: the first status line written back (without CRLF), or
        C{b""}.
    """
    channel = site.buildProtocol(PEER)
    transport = StringTransport(hostAddress=HOST, peerAddress=PEER)
    channel.makeConnection(transport)
    channel.dataReceived(data)
    if clock is not None and wait:
        clock.advance(wait)
    return transport.value().split(b"\r\n", 1)[0]


def answerHead(site: Any, data: bytes) -> List[bytes]:
    """
    Send C{data} on a new connection to C{site}.

    @return: the lines of the first answer's head.
    """
    channel = site.buildProtocol(PEER)
    transport = StringTransport(hostAddress=HOST, peerAddress=PEER)
    channel.makeConnection(transport)
    channel.dataReceived(data)
    return transport.value().split(b"\r\n\r\n", 1)[0].split(b"\r\n")


def get(target: bytes, *headers: bytes) -> bytes:
    return b"\r\n".join([b"GET " + target + b" HTTP/1.1", b"Host: gw", *headers]) + b"\r\n\r\n"


class ReasonPhraseTests(SynchronousTestCase):
    """
    L{reasonPhrase} has a phrase for every status.
    """

    def test_rfc9110(self) -> None:
        """
        The statuses the gateway makes have the phrases of RFC 9110, also
        those Twisted lacks (429, 431) or spells the old way (408, 413,
        414, 504, 505).
        """
        for code, phrase in RFC9110.items():
            self.assertEqual(reasonPhrase(code), phrase, code)
        self.assertIsNone(RESPONSES.get(429))

    def test_registered(self) -> None:
        """
        Every code of Twisted's table has a phrase of ours too.
        """
        for code in RESPONSES:
            self.assertIn(code, REASON_PHRASES)

    def test_unregistered(self) -> None:
        """
        An unregistered code gets the phrase of its class; a code outside
        100-599 C{Unknown Status}.
        """
        self.assertEqual(reasonPhrase(499), b"Client Error")
        self.assertEqual(reasonPhrase(520), b"Server Error")
        self.assertEqual(reasonPhrase(299), b"Success")
        self.assertEqual(reasonPhrase(600), b"Unknown Status")

    def test_request_keeps_a_given_phrase(self) -> None:
        """
        L{PhrasedRequest.setResponseCode} keeps a phrase it is given (the
        proxy passes on the upstream's).
        """
        channel = LimitedSite(Resource(), reactor=Clock()).buildProtocol(PEER)
        channel.makeConnection(StringTransport(hostAddress=HOST, peerAddress=PEER))
        request = PhrasedRequest(channel)
        request.setResponseCode(429)
        self.assertEqual(request.code_message, b"Too Many Requests")
        request.setResponseCode(299, b"Fine")
        self.assertEqual(request.code_message, b"Fine")


class ChannelStatusTests(SynchronousTestCase):
    """
    The channel's refusals carry their phrases.
    """

    def test_refusals(self) -> None:
        """
        400, 408, 413, 414, 431, 501 and 505 made by the channel.
        """
        clock = Clock()
        site = LimitedSite(
            Resource(),
            limits=HTTPLimits(maxBodySize=10, headerTimeout=5, maxHeaderCount=5),
            reactor=clock,
        )
        cases: Dict[int, bytes] = {
            400: b"GET / HTTP/1.1\r\nHost: gw\r\nBad Header\r\n\r\n",
            413: b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: 11\r\n\r\n",
            414: b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n",
            431: get(b"/", *[b"X-%d: 1" % (i,) for i in range(10)]),
            501: b"CONNECT gw:443 HTTP/1.1\r\nHost: gw\r\n\r\n",
            505: b"GET / HTTP/2.0\r\nHost: gw\r\n\r\n",
        }
        for code, data in cases.items():
            line = statusLine(site, data)
            self.assertEqual(line, b"HTTP/1.1 %d %s" % (code, RFC9110[code]))
        line = statusLine(site, b"GET / HT", clock, wait=5)
        self.assertEqual(line, b"HTTP/1.1 408 Request Timeout")


class _Client(ScriptedUpstreamClient):
    """
    An upstream client that fails as the request's path says
    (C{/api/refused}, C{/api/timeout}, C{/api/broken}), else answers 200.
    """

    failures = {
        b"/api/refused": UpstreamConnectError,
        b"/api/timeout": UpstreamTimeout,
        b"/api/broken": UpstreamBroken,
    }

    def respond(self, backend, method, uri, headers, bodyProducer, timeout):
        failure = self.failures.get(uri)
        if failure is not None:
            return fail(failure("upstream trouble"))
        return succeed(FakeResponse())

    def close(self) -> Any:
        return succeed(None)


class ProxyStatusTests(SynchronousTestCase):
    """
    The proxy's own answers carry their phrases: no API (404), denied
    (403), over the rate limit (429, the reported C{429 Unknown Status}),
    no healthy server (503), upstream failures (502, 504).
    """

    def setUp(self) -> None:
        self.clock = Clock()
        manager = SnapshotManager(FilterRegistry({}), self.clock)
        node = [{"cluster": "c"}]
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
                    "apis": {
                        "api": {"name": "api", "urlPattern": "/api/*", "nodes": node},
                        "limited": {
                            "name": "limited",
                            "urlPattern": "/limited",
                            "nodes": node,
                            "maxQPS": 1,
                        },
                        "denied": {
                            "name": "denied",
                            "urlPattern": "/denied",
                            "nodes": node,
                            "ipAccess": {"deny": ["0.0.0.0/0"]},
                        },
                        "down": {
                            "name": "down",
                            "urlPattern": "/down",
                            "nodes": [{"cluster": "d"}],
                        },
                    },
                    "routings": {},
                },
            )
        )
        manager.backends["down"].healthy = False
        resource = GatewayResource(manager, _Client(), self.clock)
        self.site = LimitedSite(resource, reactor=self.clock, requestFactory=GatewayRequest)

    def test_statuses(self) -> None:
        """
        Each of the proxy's own statuses goes out with its RFC 9110 phrase.
        """
        self.assertEqual(statusLine(self.site, get(b"/api/x")), b"HTTP/1.1 200 OK")
        self.assertEqual(statusLine(self.site, get(b"/limited")), b"HTTP/1.1 200 OK")
        cases = [
            (b"/limited", 429),
            (b"/nothing", 404),
            (b"/denied", 403),
            (b"/down", 503),
            (b"/api/refused", 502),
            (b"/api/broken", 502),
            (b"/api/timeout", 504),
        ]
        for target, code in cases:
            line = statusLine(self.site, get(target))
            self.assertEqual(line, b"HTTP/1.1 %d %s" % (code, RFC9110[code]), target)

    def test_serverNamed(self) -> None:
        """
        The proxy's own answers say C{Server: gateway}, and the channel's
        refusals no C{Server} at all: never Twisted's version.
        """
        head = answerHead(self.site, get(b"/nothing"))
        self.assertIn(b"Server: gateway", head)
        for data in (get(b"/nothing"), b"GET / HTTP/2.0\r\nHost: gw\r\n\r\n"):
            head = answerHead(self.site, data)
            self.assertFalse([line for line in head if b"Twisted" in line], head)


class AdminStatusTests(SynchronousTestCase):
    """
    The admin's answers carry their phrases, over the admin's site.
    """

    def test_statuses(self) -> None:
        """
        200, 201, 204, 400, 401, 404, 405, 409 and 413 from the admin API.
        """
        clock = Clock()
        api = AdminAPI(FileStore(None), "t", clock)
        site = LimitedSite(api.resource(), limits=ADMIN_LIMITS, reactor=clock)

        def call(method: bytes, path: bytes, body: Any = None, token: bool = True) -> bytes:
            lines = [method + b" /api/v1" + path + b" HTTP/1.1", b"Host: gw"]
            if token:
                lines.append(b"Authorization: Bearer t")
            data = b"" if body is None else json.dumps(body).encode("utf-8")
            if isinstance(body, bytes):
                data = body
            if data or method in (b"POST", b"PUT"):
                lines.append(b"Content-Type: application/json")
                lines.append(b"Content-Length: %d" % (len(data),))
            return statusLine(site, b"\r\n".join(lines) + b"\r\n\r\n" + data)

        head = answerHead(site, b"GET /api/v1/servers HTTP/1.1\r\nHost: gw\r\n\r\n")
        self.assertEqual(head[0], b"HTTP/1.1 401 Unauthorized")
        self.assertIn(b"Server: gateway", head)
        self.assertFalse([line for line in head if b"Twisted" in line], head)
        server = {"name": "s1", "addr": "127.0.0.1:1"}
        seen: List[bytes] = [
            call(b"POST", b"/servers", server),
            call(b"GET", b"/servers"),
            call(b"POST", b"/servers", server),
            call(b"POST", b"/servers", {"name": "s2", "addr": "nohost"}),
            call(b"GET", b"/servers", token=False),
            call(b"GET", b"/servers/none"),
            call(b"PATCH", b"/servers"),
            call(b"DELETE", b"/servers/s1"),
        ]
        codes = [201, 200, 409, 400, 401, 404, 405, 204]
        self.assertEqual(seen, [b"HTTP/1.1 %d %s" % (code, RFC9110[code]) for code in codes])
        big = b"POST /api/v1/servers HTTP/1.1\r\nHost: gw\r\nContent-Length: 2000000\r\n\r\n"
        self.assertEqual(statusLine(site, big), b"HTTP/1.1 413 Content Too Large")
