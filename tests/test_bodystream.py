"""
Tests for L{gateway.http.bodystream}: a request body that streams, and the
server channel answering requests while their bodies arrive.
"""

from __future__ import annotations

from typing import Any, List, Optional

from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface.verify import verifyObject

from gateway.http.body import BytesBodyProducer, RequestBody
from gateway.http.bodystream import (
    HIGH_WATER,
    REPLAY_LIMIT,
    BodyStream,
    RequestBodyError,
    StreamProducer,
)
from gateway.http.request import GatewayRequest
from gateway.http.site import LimitedSite
from gateway.model.limits import HTTPLimits


class FakeChannel:
    """
    Records the stream's requests to stop and start reading.
    """

    def __init__(self) -> None:
        self.calls: List[str] = []
        self.paused = False

    def pauseBody(self) -> None:
        self.calls.append("pause")
        self.paused = True

    def resumeBody(self) -> None:
        self.calls.append("resume")
        self.paused = False


class Consumer:
    """
    An L{IConsumer} that collects what it is given.
    """

    def __init__(self) -> None:
        self.data: List[bytes] = []

    def write(self, data: bytes) -> None:
        self.data.append(data)

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass


class BodyStreamTests(SynchronousTestCase):
    """
    Tests for L{BodyStream} and L{StreamProducer}.
    """

    def setUp(self) -> None:
        self.channel = FakeChannel()
        self.stream = BodyStream(self.channel, None)

    def test_producerStreamsAsItArrives(self) -> None:
        """
        A producer started while the body arrives writes what arrived, then
        each piece as it comes, and finishes when the body does; it is an
        L{IBodyProducer} of unknown length for a chunked body, of the
        body's length otherwise.
        """
        self.stream.feed(b"ab")
        producer = self.stream.producer()
        self.assertTrue(verifyObject(IBodyProducer, producer))
        self.assertEqual(producer.length, UNKNOWN_LENGTH)
        self.assertEqual(BodyStream(self.channel, 7).producer().length, 7)
        consumer = Consumer()
        done = producer.startProducing(consumer)
        self.assertEqual(consumer.data, [b"ab"])
        self.stream.feed(b"cd")
        self.assertEqual(consumer.data, [b"ab", b"cd"])
        self.assertNoResult(done)
        self.stream.finish()
        self.successResultOf(done)

    def test_backpressure(self) -> None:
        """
        While the consumer is paused (or there is none yet), what arrives is
        held, and past L{HIGH_WATER} bytes held the channel is asked to stop
        reading; it reads again once the consumer took them.
        """
        block = b"x" * (HIGH_WATER // 4)
        for _ in range(3):
            self.stream.feed(block)
        self.assertEqual(self.channel.calls, [])
        self.stream.feed(block)
        self.assertEqual(self.channel.calls, ["pause"])
        producer = self.stream.producer()
        consumer = Consumer()
        producer.startProducing(consumer)
        self.assertEqual(len(b"".join(consumer.data)), HIGH_WATER)
        self.assertEqual(self.channel.calls, ["pause", "resume"])
        producer.pauseProducing()
        for _ in range(4):
            self.stream.feed(block)
        self.assertEqual(self.channel.calls, ["pause", "resume", "pause"])
        self.assertEqual(len(b"".join(consumer.data)), HIGH_WATER)
        producer.resumeProducing()
        self.assertEqual(len(b"".join(consumer.data)), 2 * HIGH_WATER)
        self.assertEqual(self.channel.calls, ["pause", "resume", "pause", "resume"])

    def test_replayWhileWhole(self) -> None:
        """
        A body of at most L{REPLAY_LIMIT} bytes can be sent again from its
        start by a new producer (a retry); one whose start was given away
        past that cannot.
        """
        self.stream.feed(b"a" * 10)
        first = Consumer()
        failed = self.stream.producer().startProducing(first)
        self.stream.feed(b"b" * 10)
        self.assertTrue(self.stream.replayable)
        second = Consumer()
        again = self.stream.producer().startProducing(second)
        # The first was cut off by the second.
        self.failureResultOf(failed, CancelledError)
        self.assertEqual(b"".join(second.data), b"a" * 10 + b"b" * 10)
        self.stream.feed(b"c" * REPLAY_LIMIT)
        self.assertFalse(self.stream.replayable)
        self.assertRaises(ValueError, self.stream.producer)
        self.stream.finish()
        self.successResultOf(again)
        self.assertEqual(len(b"".join(second.data)), 20 + REPLAY_LIMIT)

    def test_keptUntilGiven(self) -> None:
        """
        Before any producer took some of it, all of the body that arrived
        is kept (a producer started late still sends it from the start).
        """
        block = b"z" * REPLAY_LIMIT
        self.stream.feed(block)
        self.stream.feed(block)
        self.assertTrue(self.stream.replayable)
        consumer = Consumer()
        self.stream.producer().startProducing(consumer)
        self.assertEqual(b"".join(consumer.data), block + block)
        self.assertFalse(self.stream.replayable)

    def test_readers(self) -> None:
        """
        A reader of the whole body gets it once it all arrived, or L{None}
        as soon as it is larger than its limit; the body is kept for it
        (the channel is not paused below the limit), and still sent whole.
        """
        small = self.stream.read(HIGH_WATER * 2)
        large = self.stream.read(HIGH_WATER // 2)
        block = b"y" * (HIGH_WATER // 4)
        for _ in range(3):
            self.stream.feed(block)
        self.assertIsNone(self.successResultOf(large))
        self.assertNoResult(small)
        for _ in range(3):
            self.stream.feed(block)
        self.assertEqual(self.channel.calls, [])
        self.stream.finish()
        self.assertEqual(self.successResultOf(small), block * 6)
        consumer = Consumer()
        self.stream.producer().startProducing(consumer)
        self.assertEqual(b"".join(consumer.data), block * 6)

    def test_readerCancelled(self) -> None:
        """
        A reader that is cancelled no longer holds the body back.
        """
        reading = self.stream.read(10 * HIGH_WATER)
        self.stream.feed(b"q" * (2 * HIGH_WATER))
        self.assertEqual(self.channel.calls, [])
        reading.cancel()
        self.failureResultOf(reading, CancelledError)
        self.assertEqual(self.channel.calls, ["pause"])

    def test_failure(self) -> None:
        """
        A body that fails fails its producer and its readers with the
        reason, and a producer started later at once.
        """
        reading = self.stream.read(100)
        done = self.stream.producer().startProducing(Consumer())
        self.stream.feed(b"abc")
        self.stream.fail(Failure(RequestBodyError(413, "too large")))
        self.assertEqual(self.failureResultOf(done, RequestBodyError).value.status, 413)
        self.failureResultOf(reading, RequestBodyError)
        self.assertFalse(self.stream.replayable)
        self.assertRaises(ValueError, self.stream.producer)
        self.failureResultOf(self.stream.read(100), RequestBodyError)

    def test_stopProducing(self) -> None:
        """
        A producer stopped by its consumer lets go of the stream, which then
        holds what arrives (up to the point where the channel pauses).
        """
        producer = self.stream.producer()
        consumer = Consumer()
        done = producer.startProducing(consumer)
        producer.stopProducing()
        self.failureResultOf(done, CancelledError)
        self.stream.feed(b"x" * HIGH_WATER)
        self.assertEqual(consumer.data, [])
        self.assertEqual(self.channel.calls, ["pause"])


class RequestBodyTests(SynchronousTestCase):
    """
    L{RequestBody} over a streamed body.
    """

    def request(self, stream: BodyStream) -> Any:
        class Request:
            bodyStream = stream
            content = None

        return Request()

    def test_smallCompleteBodyFromMemory(self) -> None:
        """
        A streamed body that all arrived before it is sent, and is small,
        goes from memory (in one write with the head, and sent again as
        such on a retry).
        """
        stream = BodyStream(FakeChannel(), 3)
        stream.feed(b"abc")
        stream.finish()
        body = RequestBody(self.request(stream))
        self.assertTrue(body.complete)
        self.assertEqual(body.length, 3)
        self.assertEqual(body.read(10), b"abc")
        self.assertIsNone(body.read(2))
        producer = body.producer()
        self.assertIsInstance(producer, BytesBodyProducer)

    def test_incompleteStreams(self) -> None:
        """
        A body still arriving is sent by a L{StreamProducer}, read whole
        only through L{RequestBody.whenRead}.
        """
        stream = BodyStream(FakeChannel(), None)
        stream.feed(b"ab")
        body = RequestBody(self.request(stream))
        self.assertFalse(body.complete)
        self.assertIsNone(body.length)
        self.assertIsNone(body.read(10))
        self.assertIsInstance(body.producer(), StreamProducer)
        whole = body.whenRead(10)
        stream.feed(b"cd")
        stream.finish()
        self.assertEqual(self.successResultOf(whole), b"abcd")


class Holding(Resource):
    """
    A resource that holds each request open, recording it and what its
    body stream had when it was rendered.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: List[Any] = []
        self.receivedAtRender: List[int] = []

    def render(self, request: Any) -> Any:
        self.requests.append(request)
        stream: Optional[BodyStream] = request.bodyStream
        self.receivedAtRender.append(-1 if stream is None else stream.received)
        return NOT_DONE_YET


class StreamingChannelTests(SynchronousTestCase):
    """
    L{gateway.http.channel.GatewayHTTPChannel} on a site that streams
    bodies.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.resource = Holding()
        self.site = LimitedSite(
            self.resource,
            limits=HTTPLimits(maxBodySize=1000, bodyTimeout=10, minBodyRate=0),
            reactor=self.clock,
            requestFactory=GatewayRequest,
        )
        self.site.streamBodies = True  # type: ignore[attr-defined]
        self.channel = self.site.buildProtocol(None)
        self.transport = StringTransport()
        self.channel.makeConnection(self.transport)

    def post(self, head: bytes) -> None:
        self.channel.dataReceived(b"POST /up HTTP/1.1\r\nHost: gw\r\n" + head + b"\r\n\r\n")

    def test_answeredWhileTheBodyArrives(self) -> None:
        """
        A request is rendered once its head and what came with it arrived,
        before the rest of its body: the body arrives in its stream; no
        content file holds it.
        """
        self.channel.dataReceived(b"POST /up HTTP/1.1\r\nHost: gw\r\nContent-Length: 10\r\n\r\nabc")
        [request] = self.resource.requests
        self.assertEqual(self.resource.receivedAtRender, [3])
        stream = request.bodyStream
        self.assertFalse(stream.complete)
        self.assertEqual(request.content.getvalue(), b"")
        self.channel.dataReceived(b"defghij")
        self.assertTrue(stream.complete)
        self.assertEqual(stream.whole(), b"abcdefghij")

    def test_wholeBodyFirstWhenItCameWithTheHead(self) -> None:
        """
        A body that came with its head is all there when the request is
        rendered.
        """
        self.channel.dataReceived(b"POST /up HTTP/1.1\r\nHost: gw\r\nContent-Length: 3\r\n\r\nabc")
        [request] = self.resource.requests
        self.assertTrue(request.bodyStream.complete)
        self.assertEqual(self.resource.receivedAtRender, [3])

    def test_tooLargeMidStream(self) -> None:
        """
        A chunked body found larger than the limit once its request is being
        answered fails its stream with 413, and the channel drops what
        follows.
        """
        self.post(b"Transfer-Encoding: chunked")
        [request] = self.resource.requests
        stream = request.bodyStream
        reading = stream.read(5000)
        self.channel.dataReceived(b"3e8\r\n" + b"x" * 1000 + b"\r\n")
        self.assertNoResult(reading)
        self.channel.dataReceived(b"5\r\n")
        failure = self.failureResultOf(reading, RequestBodyError)
        self.assertEqual(failure.value.status, 413)
        self.assertEqual(self.transport.value(), b"")
        self.channel.dataReceived(b"more garbage")
        self.assertEqual(self.site.rejections, {413: 1})

    def test_bodyTimeoutNotWhilePaused(self) -> None:
        """
        The body deadline does not count the time its consumer (the
        upstream) held the body back; it fails the stream with 408.
        """
        self.post(b"Content-Length: 500")
        [request] = self.resource.requests
        stream = request.bodyStream
        reading = stream.read(1000)
        self.channel.pauseBody()
        self.assertTrue(self.transport.producerState == "paused")
        self.clock.advance(30)
        self.assertNoResult(reading)
        self.channel.resumeBody()
        self.assertEqual(self.transport.producerState, "producing")
        self.clock.advance(9)
        self.assertNoResult(reading)
        self.clock.advance(1)
        self.assertEqual(self.failureResultOf(reading, RequestBodyError).value.status, 408)

    def test_answeredBeforeTheBody(self) -> None:
        """
        A request answered before its body all arrived closes the
        connection after the answer (the rest of the body cannot be told
        from a next request), dropping what still comes; the body's stream
        fails.
        """
        self.post(b"Content-Length: 500")
        [request] = self.resource.requests
        request.setResponseCode(401)
        request.write(b"no")
        request.finish()
        self.assertIn(b"HTTP/1.1 401", self.transport.value())
        self.assertTrue(self.transport.disconnecting)
        self.channel.dataReceived(b"GET /next HTTP/1.1\r\nHost: gw\r\n\r\n")
        self.assertEqual(len(self.resource.requests), 1)
        self.failureResultOf(request.bodyStream.read(1000), RequestBodyError)

    def test_answeredBeforeTheBodySaysClose(self) -> None:
        """
        An answer that starts before its request's body all arrived says
        C{Connection: close}: the client must not send its next request on
        this connection, which closes after the answer (even when the body
        then arrives before the answer ends).
        """
        self.post(b"Content-Length: 5")
        [request] = self.resource.requests
        request.setResponseCode(502)
        request.setHeader(b"content-length", b"2")
        request.write(b"no")
        head = self.transport.value().split(b"\r\n\r\n", 1)[0]
        self.assertIn(b"\r\nConnection: close", head)
        self.channel.dataReceived(b"abcde")
        request.finish()
        self.assertTrue(self.transport.disconnecting)

    def test_answeredAfterTheBodyKeepsAlive(self) -> None:
        """
        An answer that starts once the body all arrived keeps the
        connection (no C{Connection: close}).
        """
        self.post(b"Content-Length: 5")
        [request] = self.resource.requests
        self.channel.dataReceived(b"abcde")
        request.setResponseCode(200)
        request.setHeader(b"content-length", b"2")
        request.write(b"ok")
        request.finish()
        self.assertNotIn(b"onnection: close", self.transport.value())
        self.assertFalse(self.transport.disconnecting)

    def test_notStreamedElsewhere(self) -> None:
        """
        A site that does not stream bodies reads them whole first.
        """
        self.site.streamBodies = False  # type: ignore[attr-defined]
        channel = self.site.buildProtocol(None)
        channel.makeConnection(StringTransport())
        channel.dataReceived(b"POST /up HTTP/1.1\r\nHost: gw\r\nContent-Length: 10\r\n\r\nabc")
        self.assertEqual(self.resource.requests, [])
        channel.dataReceived(b"defghij")
        [request] = self.resource.requests
        self.assertIsNone(request.bodyStream)
        self.assertEqual(request.content.read(), b"abcdefghij")
