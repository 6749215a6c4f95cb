"""
Which HTTP a connection speaks, decided once, before either channel sees a
byte of it:

  - on a TLS listener, what ALPN chose (C{h2}: HTTP/2, anything else or
    nothing: HTTP/1.1), known once the handshake is complete
    (L{IHandshakeListener});
  - on a plain listener that accepts C{h2c} with prior knowledge, whether
    the client's first bytes are HTTP/2's connection preface.

L{ProtocolChoice} is the connection's first protocol: it builds the chosen
channel with the site (C{buildHTTP11} or C{buildHTTP2}, see
L{gateway.http.site.LimitedSite}), then steps out of the way: it makes the
channel its transport's protocol (a TLS connection's C{wrappedProtocol},
a TCP connection's C{protocol}), so that every later byte goes straight to
the channel, with no call through the chooser; on a transport it does not
know, it stays and passes everything on.  Until it chose, the client has
the site's C{headerTimeout} to complete its handshake or send its first
bytes.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.interfaces import IDelayedCall, IHandshakeListener, IProtocol
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from gateway.http.h2guard import PREFACE
from gateway.model.limits import HTTPLimits

__all__ = ["ProtocolChoice", "replaceProtocol"]


def replaceProtocol(transport: Any, old: IProtocol, new: IProtocol) -> bool:
    """
    Make C{new} the protocol C{transport} delivers to, instead of C{old}.

    @return: whether it could (the transport is a protocol wrapper, such as
        Twisted's TLS, or one of Twisted's TCP connections, that delivers
        to C{old}).
    """
    if getattr(transport, "wrappedProtocol", None) is old:
        transport.wrappedProtocol = new
        return True
    if getattr(transport, "protocol", None) is old:
        transport.protocol = new
        return True
    return False


@implementer(IHandshakeListener)
class ProtocolChoice(Protocol):
    """
    The first protocol of a connection that may speak HTTP/1.1 or HTTP/2
    (see the module docstring).
    """

    _chosen: Optional[IProtocol] = None
    _timer: Optional[IDelayedCall] = None
    # A TLS connection, or a TCP one: no one interface says it all.
    transport: Any

    def __init__(self, site: Any, addr: Any, byALPN: bool) -> None:
        """
        @param site: builds the channels (C{buildHTTP11(addr)},
            C{buildHTTP2(addr)}); its C{reactor} and C{limits} time the
            choice.
        @param addr: the client's address.
        @param byALPN: whether ALPN decides (a TLS listener); else the
            client's first bytes do.
        """
        self._site = site
        self._addr = addr
        self._byALPN = byALPN
        self._buffer = b""

    def connectionMade(self) -> None:
        limits: HTTPLimits = getattr(self._site, "limits", None) or HTTPLimits()
        self._timer = self._site.reactor.callLater(limits.headerTimeout, self._timedOut)

    def handshakeCompleted(self) -> None:
        """
        The TLS handshake is complete: ALPN's choice is known.
        """
        if self._byALPN and self._chosen is None:
            self._choose(getattr(self.transport, "negotiatedProtocol", None) == b"h2", b"")

    def dataReceived(self, data: bytes) -> None:
        chosen = self._chosen
        if chosen is not None:
            # (A transport the chooser could not step out of.)
            chosen.dataReceived(data)
            return
        if self._byALPN:
            # No handshake was reported: no ALPN either.
            self._choose(False, data)
            return
        buffer = self._buffer + data
        if buffer[: len(PREFACE)] != PREFACE[: len(buffer)]:
            self._choose(False, buffer)
        elif len(buffer) >= len(PREFACE):
            self._choose(True, buffer)
        else:
            self._buffer = buffer

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancelTimer()
        chosen = self._chosen
        if chosen is not None:
            chosen.connectionLost(reason)

    def _choose(self, http2: bool, data: bytes) -> None:
        self._cancelTimer()
        self._buffer = b""
        site = self._site
        channel: IProtocol = site.buildHTTP2(self._addr) if http2 else site.buildHTTP11(self._addr)
        transport = self.transport
        # Should a transport still deliver to the chooser after all, it
        # passes everything on.
        self._chosen = channel
        replaceProtocol(transport, self, channel)
        channel.makeConnection(transport)
        if data:
            channel.dataReceived(data)

    def _cancelTimer(self) -> None:
        timer = self._timer
        if timer is not None:
            self._timer = None
            if timer.active():
                timer.cancel()

    def _timedOut(self) -> None:
        self._timer = None
        transport = self.transport
        if transport is not None:
            transport.abortConnection()
