"""
The sites a gateway process serves: the proxy's and the admin's.
"""

from __future__ import annotations

from typing import Any, List, Type

from gateway.http.request import GatewayRequest
from gateway.http.site import LimitedSite


class GatewaySite(LimitedSite):
    """
    The proxy's site: L{GatewayRequest}s, and no access log of its own
    (the proxy writes one, see L{gateway.telemetry.accesslog}).
    """

    # Declared, or mypy checks GatewayRequest's constructor against
    # server.Request's (channel, *args, **kw), which it need not match: the
    # channel only ever passes the channel and queued.
    requestFactory: Type[GatewayRequest] = GatewayRequest
    displayTracebacks = False
    #: Bodies stream: a request is answered (and sent upstream) while its
    #: body arrives (see L{gateway.http.bodystream}).
    streamBodies = True

    def __init__(self, resource: Any, **kwargs: Any) -> None:
        # A proxy forwards form bodies as they are: never parse them into
        # request.args (a query rule would see body fields, and Twisted
        # would read the whole body into memory to parse it).
        kwargs.setdefault("parsePOSTFormSubmission", False)
        super().__init__(resource, **kwargs)

    def log(self, request: Any) -> None:
        pass


#: Methods whose successful requests the admin does not log.
_QUIET_METHODS = frozenset([b"GET", b"HEAD"])


class AdminSite(LimitedSite):
    """
    The admin's site.  Its log line (twisted.web's, in the gateway's own
    log) is written for every request that changes something or fails,
    not for reads that succeed: the web UI polls every few seconds and
    Prometheus scrapes C{/metrics}, which would bury the writes.
    """

    displayTracebacks = False

    def log(self, request: Any) -> None:
        if request.method in _QUIET_METHODS and request.code < 400:
            return
        super().log(request)

    def __init__(self, resource: Any, **kwargs: Any) -> None:
        # The admin reads its JSON bodies itself and answers other media
        # types 415: Twisted must not parse a POST as a form first (a JSON
        # body sent as multipart/form-data cost the connection).
        kwargs.setdefault("parsePOSTFormSubmission", False)
        super().__init__(resource, **kwargs)


def globalFilterSpecs(proxyConfig: Any) -> List[Any]:
    """
    @return: the global filter chain of a proxy: the configured filters.
        (The access log, C{proxy.accessLog}, is no filter: the proxy writes
        it when a request is over, see L{gateway.telemetry.accesslog}.)
    """
    if proxyConfig is None:
        return []
    return list(proxyConfig.filters)
