"""
A byte tunnel between two connections that left HTTP: a WebSocket once its
handshake was answered C{101 Switching Protocols}.

The engine owns the bytes: the server channel hands the client's connection
over (L{gateway.http.channel.GatewayHTTPChannel.switchProtocols}), the
upstream client the backend's (L{gateway.interfaces.ISwitchedResponse}),
each to one side of a L{Tunnel}, which then relays what either sends to the
other, as it comes, without looking into it::

    tunnel = Tunnel(reactor, idleTimeout=300.0, meter=meter)
    switchProtocols(request, response, tunnel)   # or the two calls it makes
    tunnel.whenClosed().addCallback(...)

  - Backpressure: each side's transport is registered as the other's
    producer, so a side that does not read (its send buffer full) pauses
    reading from the other, whose sender then blocks in turn: memory stays
    bounded by the transports' buffers, whatever one side sends.
  - Half-close: a side whose connection reports a half-close (its peer
    sent its FIN: the client's, through the channel; a backend's
    connection reports its end instead, see
    L{gateway.interfaces.ISwitchedResponse}) has it passed on: the other
    side's write half is closed once what it was sent is out.  The tunnel
    ends when both sides have half-closed or ended, or C{closeTimeout}
    seconds after the first half-close.
  - Close: when one side's connection ends, the other is closed once what
    it was sent is out, or cut after C{closeTimeout} seconds (a peer that
    does not read its last bytes).
  - Idle: with an C{idleTimeout}, a tunnel that carried no byte either way
    for that many seconds is closed (both sides, as above).
  - L{Tunnel.close} closes both sides the same way (a gateway that stops).

Every timer runs on the clock given, so tests drive them with a
L{twisted.internet.task.Clock}; the sides are plain protocols, so memory
transports (C{StringTransport}) stand for the connections.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IHalfCloseableProtocol, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from gateway.http.writesoon import writeSoon

__all__ = ["CLOSE_TIMEOUT", "Tunnel", "TunnelMeter", "canSwitchProtocols", "switchProtocols"]

log = Logger()

#: Seconds a closing side has to take its last bytes, and a half-closed
#: tunnel to finish, by default.
CLOSE_TIMEOUT = 10.0


class TunnelMeter:
    """
    Counts the bytes tunnels carry: every tunnel given the same meter adds
    to it.

    @ivar bytesUp: bytes relayed from clients to servers.
    @ivar bytesDown: bytes relayed from servers to clients.
    """

    __slots__ = ("bytesUp", "bytesDown")

    def __init__(self) -> None:
        self.bytesUp = 0
        self.bytesDown = 0


@implementer(IHalfCloseableProtocol)
class _Side(Protocol):
    """
    One side of a tunnel: the protocol its connection now speaks.

    @ivar peer: the other side.
    @ivar out: the other side's transport, once both are connected (what
        this side receives is written there).
    @ivar held: what this side received before the other was connected.
    @ivar eof: whether this side's peer half-closed (nothing more comes).
    @ivar gone: whether this side's connection ended.
    @ivar consuming: whether this side's transport has the other's
        registered as its producer.
    """

    name = ""
    transport: Any
    peer: _Side

    def __init__(self, tunnel: Tunnel) -> None:
        self.tunnel = tunnel
        self.out: Any = None
        self.held: List[bytes] = []
        self.eof = False
        self.gone = False
        self.consuming = False

    def stopConsuming(self) -> None:
        """
        This side's transport no longer pauses the other's (it takes no
        more of its bytes, or closes).
        """
        if self.consuming:
            self.consuming = False
            if not self.gone:
                self.transport.unregisterProducer()

    def connectionMade(self) -> None:
        self.tunnel._connected()

    def readConnectionLost(self) -> None:
        self.tunnel._halfClosed(self)

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.tunnel._lost(self, reason)

    def _hold(self, data: bytes) -> None:
        # The other side is not there yet: keep it, and read no more.
        self.held.append(data)
        if len(self.held) == 1:
            self.transport.pauseProducing()


class _ClientSide(_Side):
    name = "client"

    def dataReceived(self, data: bytes) -> None:
        tunnel = self.tunnel
        tunnel.lastActivity = tunnel._clock.seconds()
        tunnel.meter.bytesUp += len(data)
        out = self.out
        if out is None:
            self._hold(data)
        else:
            writeSoon(out, data)


class _ServerSide(_Side):
    name = "server"

    def dataReceived(self, data: bytes) -> None:
        tunnel = self.tunnel
        tunnel.lastActivity = tunnel._clock.seconds()
        tunnel.meter.bytesDown += len(data)
        out = self.out
        if out is None:
            self._hold(data)
        else:
            writeSoon(out, data)


class Tunnel:
    """
    Relays bytes both ways between a client's connection and a server's
    (see the module docstring).

    Give L{client} to the client's connection and L{server} to the
    server's (L{switchProtocols} does both); the relaying starts once both
    are connected.

    @ivar client: the protocol the client's connection is handed to.
    @ivar server: the protocol the server's connection is handed to.
    @ivar meter: the L{TunnelMeter} this tunnel counts its bytes in.
    @ivar lastActivity: when a byte last went through (clock seconds).
    @ivar closedBy: why the tunnel is closing or closed: C{"client"} or
        C{"server"} (that side closed or half-closed first), C{"idle"},
        C{"gateway"} (L{close}); L{None} while it is open.
    @ivar closed: whether both connections have ended.
    """

    def __init__(
        self,
        clock: IReactorTime,
        idleTimeout: Optional[float] = None,
        meter: Optional[TunnelMeter] = None,
        closeTimeout: float = CLOSE_TIMEOUT,
        onClosed: Optional[Callable[[Tunnel], object]] = None,
    ) -> None:
        """
        @param clock: the clock of the timeouts.
        @param idleTimeout: seconds without a byte either way after which
            the tunnel is closed, or L{None} for never.
        @param meter: where to count bytes; a new one by default.
        @param closeTimeout: seconds a closing side has to take its last
            bytes (then it is cut), and a half-closed tunnel to finish.
        @param onClosed: called with the tunnel once both connections have
            ended.
        """
        self._clock = clock
        self._idleTimeout = idleTimeout
        self._closeTimeout = closeTimeout
        self._onClosed = onClosed
        self.meter = meter if meter is not None else TunnelMeter()
        self.client: _Side = _ClientSide(self)
        self.server: _Side = _ServerSide(self)
        self.client.peer = self.server
        self.server.peer = self.client
        self.lastActivity = clock.seconds()
        self.closedBy: Optional[str] = None
        self.closed = False
        self._started = False
        self._idleTimer: Optional[IDelayedCall] = None
        self._closeTimer: Optional[IDelayedCall] = None
        self._waiting: List[Deferred[None]] = []

    def __repr__(self) -> str:
        state = "closed" if self.closed else "closing" if self.closedBy else "open"
        return f"<Tunnel {state} up={self.meter.bytesUp} down={self.meter.bytesDown}>"

    # -- the API ------------------------------------------------------------------

    def close(self) -> None:
        """
        Close both connections: each once what it was sent is out, or cut
        after C{closeTimeout} seconds.
        """
        if self.closedBy is None:
            self.closedBy = "gateway"
        self._closeBoth()

    def abort(self) -> None:
        """
        Cut both connections at once.
        """
        if self.closedBy is None:
            self.closedBy = "gateway"
        for side in (self.client, self.server):
            if not side.gone and side.transport is not None:
                side.transport.abortConnection()

    def whenClosed(self) -> Deferred[None]:
        """
        @return: a Deferred that fires once both connections have ended.
        """
        if self.closed:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiting.append(d)
        return d

    # -- from the sides -------------------------------------------------------

    def _connected(self) -> None:
        client, server = self.client, self.server
        if client.transport is None or server.transport is None or self._started:
            return
        self._started = True
        clientTransport, serverTransport = client.transport, server.transport
        # A side that does not read pauses the other.
        clientTransport.registerProducer(serverTransport, True)
        serverTransport.registerProducer(clientTransport, True)
        client.consuming = server.consuming = True
        client.out, server.out = serverTransport, clientTransport
        self.lastActivity = self._clock.seconds()
        for side in (client, server):
            held, side.held = side.held, []
            if held and not side.peer.gone:
                writeSoon(side.out, b"".join(held))
                if not side.gone and not side.eof:
                    side.transport.resumeProducing()
        for side in (client, server):
            if side.gone:
                self._lost(side, None)
            elif side.eof:
                self._halfClosed(side)
        if self._idleTimeout is not None and not self.closedBy:
            self._idleTimer = self._clock.callLater(self._idleTimeout, self._idleCheck)

    def _halfClosed(self, side: _Side) -> None:
        """
        C{side}'s peer sent its FIN: pass it on to the other side, or close
        both when the other had done so already.
        """
        side.eof = True
        if not self._started:
            return
        other = side.peer
        if self.closedBy is None:
            self.closedBy = side.name
        if other.eof or other.gone:
            self._closeBoth()
            return
        out = other.transport
        # (This side reads nothing more: it produces nothing for the other.)
        other.stopConsuming()
        halfClose = getattr(out, "loseWriteConnection", None)
        if halfClose is None:
            out.loseConnection()
        else:
            halfClose()
        self._armClose()

    def _lost(self, side: _Side, reason: Optional[Failure]) -> None:
        """
        C{side}'s connection ended: close the other (or, when it had ended
        too, the tunnel is closed).
        """
        side.gone = True
        side.consuming = False
        if self.closedBy is None:
            self.closedBy = side.name
        other = side.peer
        if other.gone:
            self._finished()
            return
        out = other.transport
        if out is None:
            # (Not handed over yet: closed once it is, by _connected.)
            return
        # Its transport stopped producing for the other already (a lost
        # consumer stops its producer); with this side's gone, the other
        # closes once what it was sent is out.
        other.stopConsuming()
        out.loseConnection()
        self._armClose()

    def _closeBoth(self) -> None:
        for side in (self.client, self.server):
            transport = side.transport
            if side.gone or transport is None:
                continue
            side.stopConsuming()
            transport.loseConnection()
        self._armClose()

    def _armClose(self) -> None:
        idle = self._idleTimer
        if idle is not None:
            self._idleTimer = None
            if idle.active():
                idle.cancel()
        if self._closeTimer is None and not self.closed:
            self._closeTimer = self._clock.callLater(self._closeTimeout, self._closeTimedOut)

    def _closeTimedOut(self) -> None:
        self._closeTimer = None
        for side in (self.client, self.server):
            if not side.gone and side.transport is not None:
                log.info(
                    "cutting the {side} side of a closing tunnel after {seconds} seconds",
                    side=side.name,
                    seconds=self._closeTimeout,
                )
                side.transport.abortConnection()

    def _idleCheck(self) -> None:
        self._idleTimer = None
        timeout = self._idleTimeout
        assert timeout is not None  # (armed only with one)
        left = self.lastActivity + timeout - self._clock.seconds()
        if left > 0:
            self._idleTimer = self._clock.callLater(left, self._idleCheck)
            return
        if self.closedBy is None:
            self.closedBy = "idle"
        self._closeBoth()

    def _finished(self) -> None:
        if self.closed:
            return
        self.closed = True
        for timer in (self._idleTimer, self._closeTimer):
            if timer is not None and timer.active():
                timer.cancel()
        self._idleTimer = self._closeTimer = None
        # Let go of the connections (a closed tunnel may be kept a while).
        self.client.out = self.server.out = None
        onClosed, self._onClosed = self._onClosed, None
        if onClosed is not None:
            try:
                onClosed(self)
            except Exception:
                log.failure("a tunnel's onClosed failed")
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)


def canSwitchProtocols(request: Any) -> bool:
    """
    @return: whether C{request}'s connection can be handed over to a
        tunnel (it is a L{gateway.http.channel.GatewayHTTPChannel}'s).
    """
    channel = getattr(request, "channel", None)
    return callable(getattr(channel, "switchProtocols", None))


def switchProtocols(request: Any, response: Any, tunnel: Tunnel) -> None:
    """
    Answer C{request} with its C{101} head and hand both connections over
    to C{tunnel}: the client's (the request's channel) to C{tunnel.client},
    the server's (C{response}, an L{gateway.interfaces.ISwitchedResponse})
    to C{tunnel.server}.

    @param request: the client's request, with its C{101} status and the
        response headers set (see
        L{gateway.http.channel.GatewayHTTPChannel.switchProtocols}).
    """
    request.channel.switchProtocols(request, tunnel.client)
    response.switchProtocols(tunnel.server)
