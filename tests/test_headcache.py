"""
Tests for the caches of L{gateway.http.channel}'s request head parsing:
request lines and header lines seen before are taken from bounded caches,
and a head made of cached lines is checked as strictly as any other.
"""

from __future__ import annotations

from test_hostile import ServerTestCase, get, parseAnswers

from gateway.http import channel
from gateway.model.limits import HTTPLimits


class HeaderLineCacheTests(ServerTestCase):
    """
    Header lines accepted once are kept in C{_LINES}; what is checked
    across the lines of a head still is, on every head.
    """

    def test_same_head_again(self) -> None:
        """
        A head whose lines are all cached gives the resource the same
        request as the first time, and the lines are in the cache.
        """
        head = get(b"/a?x=1", b"User-Agent: cache-test/1", b"Accept: */*")
        conn, transport = self.connect()
        conn.dataReceived(head)
        conn.dataReceived(head)
        answers = parseAnswers(transport.value())
        self.assertEqual([a.status for a in answers], [200, 200])
        first, second = (seen[3].requestHeaders for seen in self.resource.seen)
        self.assertEqual(list(first.getAllRawHeaders()), list(second.getAllRawHeaders()))
        self.assertEqual(second.getRawHeaders(b"user-agent"), [b"cache-test/1"])
        self.assertIn(b"User-Agent: cache-test/1", channel._LINES)
        self.assertIn(b"GET /a?x=1 HTTP/1.1", channel._REQUEST_LINES[True])

    def test_cached_lines_checked_together(self) -> None:
        """
        Lines each accepted before (and cached) still make a refused head
        together: two Host headers, or Content-Length with
        Transfer-Encoding.
        """
        self.assertServed(get(b"/", b"Content-Length: 0"))
        self.resource.seen = []
        self.assertServed(
            b"POST / HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
        self.resource.seen = []
        self.assertIn(b"Host: gw", channel._LINES)
        self.assertRefused(b"GET / HTTP/1.1\r\nHost: gw\r\nHost: gw\r\n\r\n", 400)
        self.assertRefused(
            b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        )

    def test_refused_lines_not_kept(self) -> None:
        """
        A refused header line is not cached: it is refused every time.
        """
        for line in (b"Bad Name: 1", b"X-Ctl: a\x01b", b"Content_Length: 1"):
            self.assertRefused(get(b"/", line), 400)
            self.assertRefused(get(b"/", line), 400)
            self.assertNotIn(line, channel._LINES)

    def test_long_lines_not_kept(self) -> None:
        """
        A header line of L{channel._CACHED_LINE} bytes or more is parsed,
        not cached, so a client cannot fill the cache with large lines.
        """
        line = b"X-Long: " + b"v" * channel._CACHED_LINE
        self.assertServed(get(b"/", line))
        self.assertEqual(
            self.resource.seen[0][3].requestHeaders.getRawHeaders(b"x-long"),
            [b"v" * channel._CACHED_LINE],
        )
        self.assertNotIn(line, channel._LINES)

    def test_bounded(self) -> None:
        """
        The cache never holds more than L{channel._MAX_LINES} lines:
        when full, it is emptied.
        """
        conn, transport = self.connect()
        for i in range(channel._MAX_LINES + 10):
            conn.dataReceived(get(b"/", b"X-Id: %d" % (i,)))
            self.assertLessEqual(len(channel._LINES), channel._MAX_LINES)
        answers = parseAnswers(transport.value())
        self.assertEqual(len(answers), channel._MAX_LINES + 10)
        self.assertEqual({a.status for a in answers}, {200})
        self.assertLessEqual(len(channel._REQUEST_LINES[True]), channel._MAX_LINES)


class RequestLineCacheTests(ServerTestCase):
    """
    Request lines accepted once are kept, apart for each setting of
    C{rejectAmbiguousPaths}.
    """

    def test_per_setting(self) -> None:
        """
        A path accepted where ambiguous paths are let through is still
        refused where they are not, and the other way round.
        """
        lenient = self.makeSite(limits=HTTPLimits(rejectAmbiguousPaths=False))
        self.assertServed(get(b"//a/../b"), site=lenient)
        self.resource.seen = []
        self.assertRefused(get(b"//a/../b"), 400)
        self.assertServed(get(b"//a/../b"), site=lenient)

    def test_refused_not_kept(self) -> None:
        """
        A refused request line is not cached.
        """
        for _ in range(2):
            self.assertRefused(b"GET /a#frag HTTP/1.1\r\nHost: gw\r\n\r\n", 400)
        self.assertNotIn(b"GET /a#frag HTTP/1.1", channel._REQUEST_LINES[True])
