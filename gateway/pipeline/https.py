"""
APIs served over HTTPS only (C{httpsOnly: true}): a plain-HTTP request is
answered with a C{308 Permanent Redirect} to the same URL over HTTPS (308
keeps the method and the body, unlike 301 and 302).
"""

from __future__ import annotations

import re
from typing import Any, Optional
from urllib.parse import urlsplit

from zope.interface import implementer

from gateway.interfaces import IFilter
from gateway.pipeline.exchange import EarlyResponse, Exchange, ResponseInfo

#: A Host header this module repeats in a Location: a host name, an IPv4
#: address or an [IPv6] one, and an optional port.
_HOST = re.compile(rb"^([A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?$")

#: The outcome of a redirected request (L{Exchange.outcome}): neither an
#: error nor a rejection in the stats.
OUTCOME = "redirect:https"


def httpsPort(port: Optional[int]) -> Optional[int]:
    """
    @param port: the port of the first TLS listener (C{proxy.tlsListen}),
        or L{None} when there is none.
    @return: the port a redirect's URL names: none for 443 (or no TLS
        listener: the default port of C{https://}), else the listener's.
    """
    if port is None or port == 443:
        return None
    return port


@implementer(IFilter)
class HTTPSRedirect:
    """
    The filter that stands in for an C{httpsOnly} API's own filters on a
    plain-HTTP request: it answers C{308} with a C{Location} of the same
    host and target over HTTPS (after the global filters, before the
    API's: those run on the HTTPS request that follows).

    @ivar port: the port of the HTTPS URL, or L{None} for the default (443).
    """

    name = "https-only"

    def __init__(self, port: Optional[int]) -> None:
        self.port = port

    def location(self, request: Any) -> bytes:
        """
        @return: the HTTPS URL of a request: its Host (without its port;
            the address it reached when Host is missing or not a host),
            the TLS listener's port, its path and query.
        """
        host = request.getHeader(b"host")
        if host is None or not _HOST.match(host):
            local = request.getHost()
            address = getattr(local, "host", "localhost")
            host = (f"[{address}]" if ":" in address else address).encode("ascii")
        elif host.endswith(b"]") or b":" not in host:
            pass
        else:
            host = host.rpartition(b":")[0]
        target = request.uri
        if not target.startswith(b"/"):
            # The absolute form (GET http://host/path HTTP/1.1).
            parts = urlsplit(target)
            target = (parts.path or b"/") + (b"?" + parts.query if parts.query else b"")
        port = b"" if self.port is None else b":%d" % (self.port,)
        url: bytes = b"https://" + host + port + target
        return url

    def before(self, exchange: Exchange) -> EarlyResponse:
        location = self.location(exchange.request)
        exchange.outcome = OUTCOME
        return EarlyResponse.error(
            308,
            "this API is served over HTTPS only",
            {b"location": [location]},
            location=location.decode("ascii", "replace"),
        )

    def after(self, exchange: Exchange, response: ResponseInfo) -> None:
        pass

    def error(self, exchange: Exchange, failure: Any) -> None:
        pass
