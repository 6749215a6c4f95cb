"""
Tests for L{gateway.http.tunnel}: the byte tunnel between two connections,
with memory transports and a L{task.Clock}.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

from twisted.internet import error, task
from twisted.internet.interfaces import IHalfCloseableProtocol, IProtocol
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gateway.http.tunnel import Tunnel, TunnelMeter


class Transport(StringTransport):
    """
    A memory transport that can half-close, as a TCP connection can.
    """

    writeClosed = False

    def loseWriteConnection(self) -> None:
        self.writeClosed = True


def _lost(side: IProtocol, reason: Optional[Exception] = None) -> None:
    side.connectionLost(Failure(reason or error.ConnectionDone()))


class TunnelTests(SynchronousTestCase):
    """
    L{Tunnel} relays both ways, with backpressure, until either side ends.
    """

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.meter = TunnelMeter()
        self.closed: List[Tunnel] = []
        self.tunnel = Tunnel(
            self.clock, idleTimeout=30.0, meter=self.meter, closeTimeout=5.0,
            onClosed=self.closed.append,
        )  # fmt: skip
        self.clientTransport = Transport()
        self.serverTransport = Transport()

    def connect(self) -> Tuple[Transport, Transport]:
        self.tunnel.client.makeConnection(self.clientTransport)
        self.tunnel.server.makeConnection(self.serverTransport)
        return self.clientTransport, self.serverTransport

    def test_sides(self) -> None:
        """
        Both sides are protocols that can be told of a half-close.
        """
        for side in (self.tunnel.client, self.tunnel.server):
            self.assertTrue(verifyObject(IProtocol, side))
            self.assertTrue(verifyObject(IHalfCloseableProtocol, side))

    def test_relaysBothWays(self) -> None:
        """
        What one side receives is written to the other, as it comes, and
        the meter counts it by direction.
        """
        client, server = self.connect()
        self.tunnel.client.dataReceived(b"hello")
        self.tunnel.server.dataReceived(b"world!")
        self.tunnel.client.dataReceived(b"again")
        self.assertEqual(server.value(), b"helloagain")
        self.assertEqual(client.value(), b"world!")
        self.assertEqual((self.meter.bytesUp, self.meter.bytesDown), (10, 6))

    def test_backpressure(self) -> None:
        """
        Each side's transport is the other's streaming producer: a side
        that does not read pauses reading from the other.
        """
        client, server = self.connect()
        self.assertIs(client.producer, server)
        self.assertIs(server.producer, client)
        self.assertTrue(client.streaming)
        self.assertTrue(server.streaming)

    def test_heldUntilBothConnected(self) -> None:
        """
        What a side receives before the other is connected is held, and its
        transport paused, until the other connects; then it is relayed and
        reading resumes.
        """
        client = self.clientTransport
        self.tunnel.client.makeConnection(client)
        self.tunnel.client.dataReceived(b"early")
        self.assertEqual(client.producerState, "paused")
        self.tunnel.server.makeConnection(self.serverTransport)
        self.assertEqual(self.serverTransport.value(), b"early")
        self.assertEqual(client.producerState, "producing")
        self.assertEqual(self.meter.bytesUp, 5)

    def test_serverClosesFirst(self) -> None:
        """
        When the server's connection ends, the client's is closed once what
        it was sent is out (its producer unregistered, so that it can
        close); when it has ended too, the tunnel is closed.
        """
        client, server = self.connect()
        self.tunnel.server.dataReceived(b"last words")
        _lost(self.tunnel.server)
        self.assertTrue(client.disconnecting)
        self.assertIsNone(client.producer)
        self.assertEqual(client.value(), b"last words")
        self.assertFalse(self.tunnel.closed)
        self.assertEqual(self.tunnel.closedBy, "server")
        closed = self.tunnel.whenClosed()
        self.assertNoResult(closed)
        _lost(self.tunnel.client)
        self.assertTrue(self.tunnel.closed)
        self.successResultOf(closed)
        self.assertEqual(self.closed, [self.tunnel])
        self.successResultOf(self.tunnel.whenClosed())

    def test_clientClosesFirst(self) -> None:
        """
        When the client's connection ends, the server's is closed.
        """
        client, server = self.connect()
        _lost(self.tunnel.client, error.ConnectionLost())
        self.assertTrue(server.disconnecting)
        self.assertEqual(self.tunnel.closedBy, "client")
        _lost(self.tunnel.server)
        self.assertEqual(self.closed, [self.tunnel])

    def test_closingSideCutAfterCloseTimeout(self) -> None:
        """
        A side that does not take its last bytes within C{closeTimeout}
        seconds of the other's end is cut.
        """
        client, server = self.connect()
        _lost(self.tunnel.server)
        self.clock.advance(4.9)
        self.assertFalse(client.disconnected)
        self.clock.advance(0.2)
        self.assertTrue(client.disconnected)

    def test_halfClosePassedOn(self) -> None:
        """
        A side's half-close is passed on: the other side's write half is
        closed (and it no longer pauses the first, which reads nothing
        more), while what the other sends still goes through.
        """
        client, server = self.connect()
        self.tunnel.client.readConnectionLost()
        self.assertTrue(server.writeClosed)
        self.assertFalse(server.disconnecting)
        self.assertIsNone(server.producer)
        self.tunnel.server.dataReceived(b"still")
        self.assertEqual(client.value(), b"still")
        self.assertEqual(self.tunnel.closedBy, "client")

    def test_bothHalfClosed(self) -> None:
        """
        Once both sides have half-closed, both connections are closed.
        """
        client, server = self.connect()
        self.tunnel.server.readConnectionLost()
        self.assertTrue(client.writeClosed)
        self.tunnel.client.readConnectionLost()
        self.assertTrue(client.disconnecting)
        self.assertTrue(server.disconnecting)

    def test_halfClosedTunnelBounded(self) -> None:
        """
        A half-closed tunnel has C{closeTimeout} seconds to finish, then
        both sides are cut.
        """
        client, server = self.connect()
        self.tunnel.client.readConnectionLost()
        self.clock.advance(5.1)
        self.assertTrue(client.disconnected)
        self.assertTrue(server.disconnected)

    def test_halfCloseWithoutHalfCloseableTransport(self) -> None:
        """
        When the other side's transport cannot half-close, it is closed.
        """
        server = StringTransport()
        self.tunnel.client.makeConnection(self.clientTransport)
        self.tunnel.server.makeConnection(server)
        self.tunnel.client.readConnectionLost()
        self.assertTrue(server.disconnecting)

    def test_idleTimeout(self) -> None:
        """
        A tunnel that carries no byte either way for C{idleTimeout} seconds
        is closed; every byte starts the count again.
        """
        client, server = self.connect()
        self.clock.advance(20)
        self.tunnel.server.dataReceived(b"x")
        self.clock.advance(20)
        self.tunnel.client.dataReceived(b"y")
        self.clock.advance(29.9)
        self.assertFalse(client.disconnecting)
        self.assertIsNone(self.tunnel.closedBy)
        self.clock.advance(0.2)
        self.assertTrue(client.disconnecting)
        self.assertTrue(server.disconnecting)
        self.assertEqual(self.tunnel.closedBy, "idle")

    def test_noIdleTimeout(self) -> None:
        """
        Without an idle timeout, a quiet tunnel stays open.
        """
        tunnel = Tunnel(self.clock)
        tunnel.client.makeConnection(self.clientTransport)
        tunnel.server.makeConnection(self.serverTransport)
        self.clock.advance(10**6)
        self.assertFalse(self.clientTransport.disconnecting)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_close(self) -> None:
        """
        L{Tunnel.close} closes both connections, cut after C{closeTimeout}
        when they do not close by then.
        """
        client, server = self.connect()
        self.tunnel.close()
        self.assertTrue(client.disconnecting)
        self.assertTrue(server.disconnecting)
        self.assertEqual(self.tunnel.closedBy, "gateway")
        self.clock.advance(5.1)
        self.assertTrue(client.disconnected)
        self.assertTrue(server.disconnected)

    def test_abort(self) -> None:
        """
        L{Tunnel.abort} cuts both connections at once.
        """
        client, server = self.connect()
        self.tunnel.abort()
        self.assertTrue(client.disconnected)
        self.assertTrue(server.disconnected)

    def test_timersStopWhenClosed(self) -> None:
        """
        A closed tunnel leaves no timer behind and lets go of the
        connections.
        """
        self.connect()
        _lost(self.tunnel.client)
        _lost(self.tunnel.server)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertIsNone(self.tunnel.client.out)

    def test_lostBeforeOtherConnected(self) -> None:
        """
        A side whose connection ended before the other was handed over gets
        the other closed as soon as it is.
        """
        self.tunnel.client.makeConnection(self.clientTransport)
        _lost(self.tunnel.client)
        self.tunnel.server.makeConnection(self.serverTransport)
        self.assertTrue(self.serverTransport.disconnecting)
        _lost(self.tunnel.server)
        self.assertTrue(self.tunnel.closed)

    def test_metersShared(self) -> None:
        """
        Tunnels given one meter add to it.
        """
        other = Tunnel(self.clock, meter=self.meter)
        other.client.makeConnection(StringTransport())
        other.server.makeConnection(StringTransport())
        self.connect()
        self.tunnel.client.dataReceived(b"ab")
        other.client.dataReceived(b"cde")
        other.server.dataReceived(b"f")
        self.assertEqual((self.meter.bytesUp, self.meter.bytesDown), (5, 1))
