"""
L{gateway.pipeline.mirror.Mirror}: copies of requests sent to another
cluster, their answers read and thrown away, within bounds of their own.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any, List, Optional

from fakes import ScriptedUpstreamClient
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone, ResponseFailed
from twisted.web.http_headers import Headers

from gateway.http.errors import UpstreamTimeout
from gateway.pipeline.exchange import Exchange
from gateway.pipeline.mirror import Mirror


class FakeBackend:
    """
    A server that counts the requests started and finished on it.
    """

    name = "m1"
    host = "127.0.0.1"
    port = 1
    tls = None

    def __init__(self) -> None:
        self.active = 0

    def available(self) -> bool:
        return True

    def requestStarted(self) -> bool:
        self.active += 1
        return True

    def requestFinished(
        self, latency: Optional[float], ok: Optional[bool] = True, sentAt: Optional[float] = None
    ) -> None:
        self.active -= 1


class FakeCluster:
    """
    A cluster of one L{FakeBackend}.
    """

    def __init__(self) -> None:
        self.backend = FakeBackend()
        self.backends = [self.backend]

    def choose(self, key: Optional[str] = None) -> FakeBackend:
        return self.backend


class FakeNode:
    rewrite = None


class FakeAPI:
    nodes = [FakeNode()]


class FakeRequest:
    method = b"GET"
    uri = b"/copy"
    content = BytesIO(b"")


class StreamedResponse:
    """
    An answer whose head is in and whose body comes when the test says:
    the body's protocol gets a transport whose C{stopProducing} the test
    sees (as the engine's aborts its connection).
    """

    code = 200
    phrase = b"OK"
    length = 10

    def __init__(self) -> None:
        self.headers = Headers()
        self.protocol: Any = None
        self.transport = StringTransport()
        self.stopped = False
        self.transport.stopProducing = self.stop  # type: ignore[method-assign]

    def stop(self) -> None:
        self.stopped = True

    def deliverBody(self, protocol: Any) -> None:
        self.protocol = protocol
        protocol.makeConnection(self.transport)


class Client(ScriptedUpstreamClient):
    """
    Answers each request with a Deferred the test fires.
    """

    def __init__(self) -> None:
        self.answers: List[Deferred[Any]] = []
        self.timeouts: List[Optional[float]] = []

    def respond(self, backend, method, uri, headers, bodyProducer, timeout) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.answers.append(d)
        self.timeouts.append(timeout)
        return d


class MirrorTests(SynchronousTestCase):
    """
    A copy is outstanding until its answer's body ended, and no longer than
    the mirror's timeout in all.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.client = Client()
        self.cluster = FakeCluster()
        self.mirror = Mirror(self.client, self.clock, maxInFlight=2, timeout=10.0)

    def send(self) -> None:
        exchange = Exchange(FakeRequest(), None, FakeAPI(), {}, "192.0.2.1", 0.0, Headers())
        self.mirror.send(exchange, self.cluster)

    def test_inFlightUntilTheBodyEnds(self) -> None:
        """
        A copy whose head is in but whose body is still coming counts as in
        flight (a slow mirror holds its connection: more copies would open
        more), and on its server until the body's end.
        """
        self.send()
        response = StreamedResponse()
        self.client.answers[0].callback(response)
        self.assertEqual((self.mirror.inFlight, self.cluster.backend.active), (1, 1))
        self.send()
        self.client.answers[1].callback(StreamedResponse())
        self.send()
        self.assertEqual(len(self.client.answers), 2)
        self.assertEqual(self.mirror.dropped, 1)
        response.protocol.dataReceived(b"0123456789")
        response.protocol.connectionLost(Failure(ResponseDone()))
        self.assertEqual((self.mirror.inFlight, self.cluster.backend.active), (1, 1))
        self.assertEqual(self.mirror.failed, 0)
        self.assertFalse(response.stopped)
        self.send()
        self.assertEqual(len(self.client.answers), 3)

    def test_bodyCutAtTheTimeout(self) -> None:
        """
        A body that stalls is cut at the copy's timeout, counted from when
        it was sent (its connection's producer is stopped), and the copy is
        over then, counted as failed; the connection's late end changes
        nothing.
        """
        self.send()
        self.assertEqual(self.client.timeouts, [10.0])
        self.clock.advance(4)
        response = StreamedResponse()
        self.client.answers[0].callback(response)
        response.protocol.dataReceived(b"01")
        self.clock.advance(5.9)
        self.assertFalse(response.stopped)
        self.assertEqual(self.mirror.inFlight, 1)
        self.clock.advance(0.1)
        self.assertTrue(response.stopped)
        self.assertEqual((self.mirror.inFlight, self.cluster.backend.active), (0, 0))
        self.assertEqual(self.mirror.failed, 1)
        response.protocol.connectionLost(Failure(ResponseFailed([Failure(Exception("cut"))])))
        self.assertEqual((self.mirror.inFlight, self.cluster.backend.active), (0, 0))
        self.assertEqual(self.mirror.failed, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_bodyEndStopsTheTimer(self) -> None:
        """
        A body that ends in time leaves no timer behind.
        """
        self.send()
        response = StreamedResponse()
        self.client.answers[0].callback(response)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        response.protocol.connectionLost(Failure(ResponseDone()))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.mirror.inFlight, 0)

    def test_failedBeforeTheHead(self) -> None:
        """
        A copy that fails before its head (here, its timeout) is over at
        once, counted as failed, and sets no timer.
        """
        self.send()
        self.client.answers[0].errback(Failure(UpstreamTimeout("late")))
        self.assertEqual((self.mirror.inFlight, self.cluster.backend.active), (0, 0))
        self.assertEqual(self.mirror.failed, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
