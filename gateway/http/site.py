"""
L{LimitedSite}: a C{twisted.web} site served by the gateway's own channels,
HTTP/1.1 (L{gateway.http.channel.GatewayHTTPChannel}) and HTTP/2
(L{gateway.http.h2connection.H2ServerConnection}), with their limits and
timeouts.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Set, Type

from twisted.internet.interfaces import IProtocol
from twisted.logger import Logger
from twisted.web import server
from twisted.web.resource import IResource

from gateway.http.channel import BodyLimitFor, GatewayHTTPChannel
from gateway.http.h2connection import H2ServerConnection
from gateway.http.negotiate import ProtocolChoice
from gateway.http.status import NamedRequest, PhrasedRequest
from gateway.model.limits import HTTPLimits

log = Logger()

__all__ = [
    "LimitedSite",
]


class LimitedSite(server.Site):
    """
    A site served by L{GatewayHTTPChannel}s.

    @ivar limits: the L{HTTPLimits} of every connection.
    @ivar bodyLimitFor: a L{BodyLimitFor} (the body limit of a route), or
        L{None} to apply C{limits.maxBodySize} to every request.
    @ivar errorFields: extra fields of the JSON body of every refusal (the
        admin adds C{"field": ""} to match its own errors).
    @ivar rejections: C{{status: count}} of the requests refused so far.
    @ivar stats: told of every client cut off for not reading its answer
        (C{stats.countSendTimeout()}, see L{HTTPLimits.sendTimeout}), and of
        HTTP/2 connections, streams, client resets and floods
        (C{stats.countHTTP2(what)}), or L{None}; a
        L{gateway.telemetry.stats.Stats} for the proxy.
    @ivar h2c: whether plain connections whose first bytes are HTTP/2's
        connection preface speak HTTP/2 (C{h2c} with prior knowledge; see
        L{gateway.http.negotiate}).  TLS listeners offer C{h2} by ALPN
        (L{gateway.http.tls.ServerTLS}).
    @ivar http2Connections: the HTTP/2 connections open now (for
        L{goAway}).
    @ivar accessLog: told of every request the channels refuse before the
        resource sees it (C{accessLog.refused(code, message, peer, sent)},
        see L{gateway.telemetry.accesslog.IAccessLog.refused}), or L{None}.
    """

    accessLog: Any = None

    # The channel itself, not HTTPFactory's HTTP/1.1-or-HTTP/2 wrapper: an
    # HTTP/2 connection would bypass these checks.  (HTTPFactory declares
    # that wrapper's type for this attribute, not a protocol factory.)
    protocol = GatewayHTTPChannel  # type: ignore[assignment]
    # Status lines with the phrases of RFC 9110 (Twisted's table lacks 429).
    requestFactory: Type[PhrasedRequest] = NamedRequest
    errorFields: Mapping[str, object] = {}

    def __init__(
        self,
        resource: IResource,
        limits: Optional[HTTPLimits] = None,
        bodyLimitFor: Optional[BodyLimitFor] = None,
        stats: Any = None,
        *,
        reactor: Any,
        h2c: bool = False,
        **kwargs: Any,
    ) -> None:
        """
        @param resource: the root resource.
        @param limits: the limits, by default L{HTTPLimits}().
        @param bodyLimitFor: see L{bodyLimitFor}.
        @param stats: see L{stats}.
        @param h2c: see L{h2c}.
        @param reactor: the reactor of the connections' timeouts (an
            L{IReactorTime}); given, never Twisted's global one by default.
        @param kwargs: passed to L{server.Site}; C{timeout} defaults to
            C{limits.idleTimeout}.
        """
        if limits is None:
            limits = HTTPLimits()
        kwargs.setdefault("timeout", limits.idleTimeout)
        super().__init__(resource, reactor=reactor, **kwargs)
        self.limits = limits
        self.bodyLimitFor = bodyLimitFor
        self.stats = stats
        self.rejections: Dict[int, int] = {}
        self.h2c = h2c
        self.http2Connections: Set[H2ServerConnection] = set()

    def buildProtocol(self, addr: Any) -> Optional[IProtocol]:  # type: ignore[override]
        """
        @return: the channel of a new connection: HTTP/1.1, or, when the
            site accepts C{h2c}, what chooses by the client's first bytes.
        """
        if self.h2c:
            return ProtocolChoice(self, addr, byALPN=False)
        return self.buildHTTP11(addr)

    def buildHTTP11(self, addr: Any) -> Optional[IProtocol]:
        """
        @return: an HTTP/1.1 channel of this site.
        """
        channel: Optional[IProtocol] = super().buildProtocol(addr)
        return channel

    def buildHTTP2(self, addr: Any) -> H2ServerConnection:
        """
        @return: an HTTP/2 connection of this site.
        """
        return H2ServerConnection(self)

    def goAway(self) -> None:
        """
        Tell every HTTP/2 connection to go away gracefully (see
        L{H2ServerConnection.goAway}): what a stopping proxy does once it
        stopped listening.
        """
        for connection in list(self.http2Connections):
            connection.goAway()
