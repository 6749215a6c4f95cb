"""
How the engine connects to a backend: one endpoint per (host, port), built
once (L{CachedEndpointFactory}).
"""

from __future__ import annotations

import ipaddress
from typing import Any, Dict, Tuple

from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer


@implementer(IAgentEndpointFactory)
class CachedEndpointFactory:
    """
    Hands out one endpoint per (host, port), built once.

    Building a L{HostnameEndpoint} (and IDNA-encoding its host) for every
    request cost ~12% of the proxy's CPU; backends are few and fixed, so
    their endpoints are cached.  An IP literal gets a plain TCP endpoint,
    which needs no name resolution at all.
    """

    def __init__(self, reactor: Any, connectTimeout: float = 5.0) -> None:
        self._reactor = reactor
        self._connectTimeout = connectTimeout
        self._endpoints: Dict[Tuple[bytes, int], Any] = {}

    def endpointForURI(self, uri: Any) -> Any:
        key = (uri.host, uri.port)
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            endpoint = self._endpoints[key] = self._makeEndpoint(uri.host, uri.port)
        return endpoint

    def _makeEndpoint(self, host: bytes, port: int) -> Any:
        text = host.decode("ascii")
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            return HostnameEndpoint(self._reactor, host, port, timeout=self._connectTimeout)
        endpointClass = TCP4ClientEndpoint if address.version == 4 else TCP6ClientEndpoint
        return endpointClass(self._reactor, text, port, timeout=self._connectTimeout)
