"""
What the proxy passes on of an upstream answer's framing, through the
whole proxy in memory (L{memorygateway}): the headers that say how long a
body is must agree with what the client is sent.
"""

from __future__ import annotations

from memorygateway import Answer, MemoryGateway, Upstream
from twisted.trial.unittest import SynchronousTestCase

API = {"name": "a", "urlPattern": "/*", "nodes": [{"cluster": "c"}]}


class NoBodyStatusTests(SynchronousTestCase):
    """
    Answers that have no body (RFC 9110 6.4.1: 204, 304, any answer to
    HEAD).
    """

    def answerTo(self, method: str, upstream: Upstream) -> Answer:
        gateway = MemoryGateway([API])
        gateway.client.answers[b"/x"] = upstream
        return gateway.request(method, "/x")

    def test_noContentLengthOn204(self) -> None:
        """
        A 204 whose upstream sent a C{Content-Length} reaches the client
        without it (RFC 9110 8.6: never in a 204), nor a body, nor chunked
        framing: a client that believed the length would wait for bytes
        that never come, or read the next answer as this one's body.
        """
        upstream = Upstream(204, b"")
        upstream.headers.setRawHeaders(b"content-length", [b"5"])
        answer = self.answerTo("GET", upstream)
        self.assertEqual(answer.code, 204)
        self.assertIsNone(answer.header("content-length"))
        self.assertIsNone(answer.header("transfer-encoding"))
        self.assertEqual(answer.body, b"")

    def test_contentLengthKeptOn304AndHead(self) -> None:
        """
        A 304's C{Content-Length} and a HEAD answer's are the length a GET
        would get (RFC 9110 8.6): both are passed on, without a body.
        """
        upstream = Upstream(304, b"")
        upstream.headers.setRawHeaders(b"content-length", [b"5"])
        answer = self.answerTo("GET", upstream)
        self.assertEqual((answer.code, answer.header("content-length")), (304, "5"))
        self.assertEqual(answer.body, b"")
        answer = self.answerTo("HEAD", Upstream(200, b"hello"))
        self.assertEqual((answer.code, answer.header("content-length")), (200, "5"))
        self.assertEqual(answer.body, b"")
