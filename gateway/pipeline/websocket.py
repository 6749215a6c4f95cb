"""
WebSocket pass-through: which requests may upgrade, and the tunnels of
each API.

An API with C{websocket: true} relays WebSocket handshakes (RFC 6455 4.1:
C{GET}, HTTP/1.1, C{Upgrade: websocket}, C{Connection: upgrade}, a
C{Sec-WebSocket-Key} of 16 bytes, a C{Sec-WebSocket-Version}, no body).
The handshake goes through the pipeline as any request does (filters,
routing, balancing, retries), with its C{Upgrade} and C{Connection} headers
sent upstream; the backend's C{101}, once checked (L{checkSwitch}), goes
back to the client, and both connections become a byte tunnel
(L{gateway.http.tunnel}).  Any other request keeps its upgrade headers
stripped, as hop-by-hop headers are (L{gateway.pipeline.forwarding}): on an
API without C{websocket}, and for a request that is no valid handshake,
the backend never sees them.

L{WebSockets} keeps the tunnels of one proxy: it admits a handshake when
its API has fewer than C{maxWebsockets} tunnels open or being opened (else
503), opens the tunnel with the API's C{websocketIdleTimeout}, counts it in
the stats (L{gateway.telemetry.stats.WebSocketCounters}), and closes every
tunnel when the proxy drains.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any, Callable, Dict, List, Optional, Sequence, Set

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.web.http_headers import Headers

from gateway.http.errors import UpstreamBroken
from gateway.http.tunnel import CLOSE_TIMEOUT, Tunnel, canSwitchProtocols, switchProtocols
from gateway.interfaces import IUpstreamUpgrader
from gateway.pipeline.exchange import EarlyResponse

log = Logger()

#: The GUID of RFC 6455 1.3, which the server's accept value hashes in.
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _tokens(values: Optional[Sequence[bytes]]) -> List[bytes]:
    if not values:
        return []
    return [t.strip(b" \t").lower() for v in values for t in v.split(b",")]


def isHandshake(request: Any) -> bool:
    """
    @return: whether C{request} is a WebSocket opening handshake (RFC 6455
        4.1): C{GET}, HTTP/1.1, an C{Upgrade} that names C{websocket}, a
        C{Connection} that names C{upgrade}, one C{Sec-WebSocket-Key} that
        is 16 bytes in base64, one C{Sec-WebSocket-Version}, and no body.
    """
    if request.method != b"GET" or request.clientproto != b"HTTP/1.1":
        return False
    headers = request.requestHeaders
    if b"websocket" not in _tokens(headers.getRawHeaders(b"upgrade")):
        return False
    if b"upgrade" not in _tokens(headers.getRawHeaders(b"connection")):
        return False
    keys = headers.getRawHeaders(b"sec-websocket-key")
    versions = headers.getRawHeaders(b"sec-websocket-version")
    if not keys or len(keys) != 1 or not versions or len(versions) != 1:
        return False
    try:
        if len(base64.b64decode(keys[0], validate=True)) != 16:
            return False
    except (binascii.Error, ValueError):
        return False
    length = headers.getRawHeaders(b"content-length")
    if headers.hasHeader(b"transfer-encoding") or (length and length != [b"0"]):
        return False
    return True


def acceptValue(key: bytes) -> bytes:
    """
    @return: the C{Sec-WebSocket-Accept} a server answers to C{key} (RFC
        6455 4.2.2).
    """
    return base64.b64encode(hashlib.sha1(key.strip() + _GUID).digest())


def upgradeHeaders(headers: Headers) -> None:
    """
    Ask for the upgrade in the headers sent upstream (the pipeline dropped
    the client's, as hop-by-hop).
    """
    headers.setRawHeaders(b"upgrade", [b"websocket"])
    headers.setRawHeaders(b"connection", [b"Upgrade"])


def checkSwitch(request: Any, response: Any) -> Optional[str]:
    """
    @param request: the client's handshake.
    @param response: the backend's 101.
    @return: why the 101 does not switch the handshake to a WebSocket (it
        names another protocol, or its C{Sec-WebSocket-Accept} does not
        answer the key), or L{None} when it does.
    """
    headers = response.headers
    if b"websocket" not in _tokens(headers.getRawHeaders(b"upgrade")):
        return "the backend switched to another protocol than websocket"
    accept = headers.getRawHeaders(b"sec-websocket-accept")
    key = request.requestHeaders.getRawHeaders(b"sec-websocket-key")[0]
    if not accept or len(accept) != 1 or accept[0].strip() != acceptValue(key):
        return "the backend's Sec-WebSocket-Accept does not answer the handshake's key"
    return None


class BadSwitch(UpstreamBroken):
    """
    The backend answered a WebSocket handshake with a 101 that does not
    switch it to a WebSocket (502, saying why).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def switchedHeaders(headers: Headers) -> None:
    """
    Say in the 101 sent to the client what it switches to (the upstream's
    C{Upgrade} and C{Connection} were dropped, as hop-by-hop).
    """
    headers.setRawHeaders(b"upgrade", [b"websocket"])
    headers.setRawHeaders(b"connection", [b"Upgrade"])
    headers.removeHeader(b"content-length")
    headers.removeHeader(b"transfer-encoding")


class _Discard(Protocol):
    pass


class Handshake:
    """
    A WebSocket handshake on its way through the pipeline
    (L{gateway.pipeline.exchange.Exchange.upgrade}).

    @ivar api: the API's name.
    @ivar held: whether it holds one of the API's C{maxWebsockets} places.
    @ivar tunnel: its L{Tunnel}, once the backend switched.
    """

    __slots__ = ("api", "held", "tunnel")

    def __init__(self, api: str) -> None:
        self.api = api
        self.held = False
        self.tunnel: Optional[Tunnel] = None


class WebSockets:
    """
    The WebSocket tunnels of one proxy (see the module docstring).

    @param upgrader: the L{IUpstreamUpgrader} that sends handshakes.
    @param clock: the clock of the tunnels' timeouts.
    @param stats: a L{gateway.telemetry.stats.Stats} (its
        C{websocketCounters(api)}), or L{None}.
    @param closeTimeout: see L{Tunnel}.
    @ivar tunnels: the tunnels open now.
    """

    def __init__(
        self,
        upgrader: IUpstreamUpgrader,
        clock: IReactorTime,
        stats: Any = None,
        closeTimeout: float = CLOSE_TIMEOUT,
    ) -> None:
        self._upgrader = upgrader
        self._clock = clock
        self._stats = stats
        self._closeTimeout = closeTimeout
        #: API name -> tunnels open or being opened (what maxWebsockets caps).
        self._held: Dict[str, int] = {}
        self.tunnels: Set[Tunnel] = set()
        self._draining = False
        self._drainTimer: Optional[IDelayedCall] = None
        #: Whether the drain timeout passed: tunnels are closed at once.
        self._drainOver = False
        #: Tunnels the gateway closed when draining.
        self.closedByDrain = 0
        self._drained: List[defer.Deferred[int]] = []

    def _counters(self, api: str) -> Any:
        stats = self._stats
        return None if stats is None else stats.websocketCounters(api)

    # -- the handshake --------------------------------------------------------

    def handshake(self, exchange: Any) -> None:
        """
        Relay C{exchange}'s request as a WebSocket handshake, if its API has
        C{websocket} and it is one (L{isHandshake}): the upgrade headers go
        upstream, and L{admit} and L{switch} follow.  Otherwise nothing
        changes: the upgrade headers stay stripped.
        """
        request = exchange.request
        if (
            isHandshake(request)
            and canSwitchProtocols(request)
            and getattr(request, "notifyDone", None) is not None
        ):
            exchange.upgrade = Handshake(exchange.api.name)
            upgradeHeaders(exchange.upstreamHeaders)

    def admit(self, exchange: Any) -> Optional[EarlyResponse]:
        """
        Take one of the API's C{maxWebsockets} places for the handshake.

        @return: L{None} when admitted, else the 503 to answer (the proxy
            drains, or the API has C{maxWebsockets} tunnels).
        """
        handshake: Handshake = exchange.upgrade
        if handshake.held:
            return None
        if self._draining:
            return EarlyResponse.error(503, "the gateway is shutting down", api=handshake.api)
        name = handshake.api
        cap = exchange.api.config.maxWebsockets
        held = self._held.get(name, 0)
        if cap and held >= cap:
            counters = self._counters(name)
            if counters is not None:
                counters.overCap += 1
            return EarlyResponse.error(
                503,
                f"too many WebSocket connections (maxWebsockets: {cap})",
                {b"retry-after": [b"1"]},
                api=name,
            )
        self._held[name] = held + 1
        handshake.held = True
        return None

    def send(
        self,
        backend: Any,
        method: bytes,
        uri: bytes,
        headers: Headers,
        bodyProducer: Any,
        timeout: Optional[float],
        onResponse: Callable[..., object],
        onFailure: Callable[..., object],
        *args: object,
    ) -> Any:
        """
        Send a handshake upstream: L{IUpstreamUpgrader.upgrade}, with the
        calling convention of L{gateway.interfaces.IUpstreamClient.send}
        (a handshake has no body: C{bodyProducer} is L{None}).
        """
        return self._upgrader.upgrade(
            backend, method, uri, headers, timeout, onResponse, onFailure, *args
        )

    def switch(self, exchange: Any, response: Any) -> Tunnel:
        """
        Answer the client's handshake with the backend's 101 (its status and
        headers set on the request already) and open the tunnel between the
        two connections.
        """
        handshake: Handshake = exchange.upgrade
        counters = self._counters(handshake.api)
        config = exchange.api.config
        idle = config.websocketIdleTimeout or None  # (0: never)
        tunnel = Tunnel(self._clock, idle, counters, self._closeTimeout)
        # (Set first: switching finishes the request, and its end (and a
        # drain waiting for it) asks.)
        handshake.tunnel = tunnel
        self.tunnels.add(tunnel)
        try:
            switchProtocols(exchange.request, response, tunnel)
        except Exception:
            handshake.tunnel = None
            self.tunnels.discard(tunnel)
            tunnel.abort()
            response.deliverBody(_Discard())
            if exchange.request.finished and handshake.held:
                # (Its end found a tunnel, and kept the place.)
                handshake.held = False
                self._release(handshake.api)
            self._maybeDrained()
            raise
        backend = exchange.backend
        # (A tunnel keeps its server busy, for least-connections.)
        backend.active += 1
        if counters is not None:
            counters.open += 1
            counters.opened += 1
        tunnel.whenClosed().addCallback(self._tunnelEnded, handshake, backend)
        if self._drainOver:
            # (A handshake in flight when the drain began, switched after
            # its timeout.)
            self.closedByDrain += 1
            tunnel.close()
        return tunnel

    def handshakeOver(self, exchange: Any) -> bool:
        """
        The handshake's request is over: give its place back unless it
        became a tunnel.

        @return: whether it became a tunnel (its connection is the
            tunnel's now).
        """
        handshake: Handshake = exchange.upgrade
        if handshake.tunnel is not None:
            return True
        if handshake.held:
            handshake.held = False
            self._release(handshake.api)
        return False

    # -- tunnels ------------------------------------------------------------------

    def _release(self, api: str) -> None:
        held = self._held.get(api, 0) - 1
        if held > 0:
            self._held[api] = held
        else:
            self._held.pop(api, None)

    def _tunnelEnded(self, _: object, handshake: Handshake, backend: Any) -> None:
        tunnel = handshake.tunnel
        assert tunnel is not None  # (set before this is called back)
        self.tunnels.discard(tunnel)
        backend.active -= 1
        self._release(handshake.api)
        counters = self._counters(handshake.api)
        if counters is not None:
            counters.open -= 1
        self._maybeDrained()

    # -- draining -------------------------------------------------------------

    def drain(self, timeout: float) -> None:
        """
        Admit no more handshakes (503), let the tunnels run for C{timeout}
        seconds, then close those still open (each has C{closeTimeout}
        seconds to take its last bytes), and any a handshake in flight opens
        later at once.  L{whenDrained} tells when they are all gone.
        """
        if self._draining:
            return
        self._draining = True
        self._drainTimer = self._clock.callLater(timeout, self._drainTimedOut)

    def whenDrained(self) -> defer.Deferred[int]:
        """
        @return: a Deferred that fires once no tunnel is open, with the
            number of tunnels the gateway closed.
        """
        if not self.tunnels:
            self._stopDrainTimer()
            return defer.succeed(self.closedByDrain)
        d: defer.Deferred[int] = defer.Deferred()
        self._drained.append(d)
        return d

    def _drainTimedOut(self) -> None:
        self._drainTimer = None
        self._drainOver = True
        tunnels = list(self.tunnels)
        if not tunnels:
            return
        log.info("closing {n} WebSocket tunnel(s)", n=len(tunnels))
        self.closedByDrain += len(tunnels)
        for tunnel in tunnels:
            tunnel.close()

    def _stopDrainTimer(self) -> None:
        timer, self._drainTimer = self._drainTimer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _maybeDrained(self) -> None:
        if self.tunnels or not self._drained:
            return
        self._stopDrainTimer()
        waiting, self._drained = self._drained, []
        for d in waiting:
            d.callback(self.closedByDrain)
