"""
L{LimitedSite}: a C{twisted.web} site served by the gateway's own channel
(L{gateway.http.channel.GatewayHTTPChannel}), with its limits and timeouts.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

from twisted.logger import Logger
from twisted.web import server
from twisted.web.resource import IResource

from gateway.http.channel import BodyLimitFor, GatewayHTTPChannel
from gateway.http.status import PhrasedRequest
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
        (C{stats.countSendTimeout()}, see L{HTTPLimits.sendTimeout}), or
        L{None}; a L{gateway.telemetry.stats.Stats} for the proxy.
    """

    # The channel itself, not HTTPFactory's HTTP/1.1-or-HTTP/2 wrapper: an
    # HTTP/2 connection would bypass these checks.  (HTTPFactory declares
    # that wrapper's type for this attribute, not a protocol factory.)
    protocol = GatewayHTTPChannel  # type: ignore[assignment]
    # Status lines with the phrases of RFC 9110 (Twisted's table lacks 429).
    requestFactory = PhrasedRequest
    errorFields: Mapping[str, object] = {}

    def __init__(
        self,
        resource: IResource,
        limits: Optional[HTTPLimits] = None,
        bodyLimitFor: Optional[BodyLimitFor] = None,
        stats: Any = None,
        *,
        reactor: Any,
        **kwargs: Any,
    ) -> None:
        """
        @param resource: the root resource.
        @param limits: the limits, by default L{HTTPLimits}().
        @param bodyLimitFor: see L{bodyLimitFor}.
        @param stats: see L{stats}.
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
