"""
How the engine connects to a backend: one endpoint per (host, port, TLS
settings), built once (L{CachedEndpointFactory}).
"""

from __future__ import annotations

import ipaddress
from typing import Dict, Optional, Tuple

from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.web.client import URI
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from gateway.http.tls import UpstreamTLS


@implementer(IAgentEndpointFactory)
class CachedEndpointFactory:
    """
    Hands out one endpoint per (host, port), built once (and kept until
    L{forget}).

    Building a L{HostnameEndpoint} (and IDNA-encoding its host) for every
    request cost ~12% of the proxy's CPU; backends are few and fixed, so
    their endpoints are cached.  An IP literal gets a plain TCP endpoint,
    which needs no name resolution at all.

    @param reactor: the reactor the endpoints connect with: an
        L{IReactorTime} (for the connect timeout) that is also an
        L{IReactorTCP}, and an L{IReactorPluggableNameResolver} for host
        names.
    @param connectTimeout: seconds to wait for a connection (and, over
        TLS, for its handshake too).
    """

    def __init__(self, reactor: IReactorTime, connectTimeout: float = 5.0) -> None:
        self._reactor = reactor
        self._connectTimeout = connectTimeout
        self._endpoints: Dict[Tuple[bytes, int, Optional[UpstreamTLS]], IStreamClientEndpoint] = {}

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        """
        See L{IAgentEndpointFactory.endpointForURI}: the endpoint of the
        URI's host and port (its scheme is not looked at).
        """
        return self.endpointFor(uri.host, uri.port)

    def endpointFor(
        self, host: bytes, port: int, tls: Optional[UpstreamTLS] = None
    ) -> IStreamClientEndpoint:
        """
        @param host: a host name (IDNA-encoded) or an IP address.
        @param port: the TCP port.
        @param tls: how to speak TLS over the connection, or L{None}.
        @return: the endpoint that connects to C{host} and C{port} (over
            TLS when C{tls} is given), the same one every time.
        """
        key = (host, port, tls)
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            endpoint = self._makeEndpoint(host, port)
            if tls is not None:
                endpoint = tls.wrap(endpoint, self._reactor, self._connectTimeout)
            self._endpoints[key] = endpoint
        return endpoint

    def forget(self, host: bytes, port: int, tls: Optional[UpstreamTLS] = None) -> None:
        """
        Drop the endpoint of C{host} and C{port} (a backend address that is
        gone: with DNS discovery, addresses come and go for good).
        """
        self._endpoints.pop((host, port, tls), None)

    def _makeEndpoint(self, host: bytes, port: int) -> IStreamClientEndpoint:
        text = host.decode("ascii")
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            return HostnameEndpoint(self._reactor, host, port, timeout=self._connectTimeout)
        endpointClass = TCP4ClientEndpoint if address.version == 4 else TCP6ClientEndpoint
        return endpointClass(self._reactor, text, port, timeout=self._connectTimeout)
