"""
What a proxy forwards and what it does not.

  - Hop-by-hop headers are dropped both ways (RFC 9110 7.6.1), and so are
    those a C{Connection} header names.
  - The client's address is the one the gateway trusts (L{ClientAddresses}):
    the direct peer, unless the peer is one of C{proxy.trustedProxies}.
  - The forwarding headers a backend reads to learn about the client
    (C{Forwarded} of RFC 7239, C{X-Forwarded-For}, C{X-Forwarded-Proto},
    C{X-Forwarded-Host}, C{X-Forwarded-Port}, C{X-Real-IP}) are believed only
    from a trusted peer: from any other peer they are replaced by the
    gateway's own values (the peer's address alone in C{X-Forwarded-For});
    from a trusted one they are kept, C{X-Forwarded-For} and C{Forwarded}
    extended with this hop, the others filled in when missing.
  - C{Via} (RFC 9110 7.6.3) is extended with this hop both ways.
  - The consumer headers (C{X-Consumer-Name}, C{-Id}, C{-Groups}) are
    never taken from a request, whatever its peer: only an API's C{auth}
    sets them, for the consumer it authenticated, and a backend believes
    them (a client's own reached the backend through an API without
    C{auth}).
"""

from __future__ import annotations

import ipaddress
from typing import Any, Dict, FrozenSet, List, Optional, Sequence, Tuple, Union

from twisted.web.http_headers import Headers

from gateway.http.headers import headerKey, headersFromRaw, rawHeadersOf

_CONNECTION = headerKey(b"connection")
_HOST = headerKey(b"host")
_CONTENT_LENGTH = headerKey(b"content-length")
_TRANSFER_ENCODING = headerKey(b"transfer-encoding")
_X_FORWARDED_FOR = headerKey(b"x-forwarded-for")
_X_FORWARDED_PROTO = headerKey(b"x-forwarded-proto")
_X_FORWARDED_HOST = headerKey(b"x-forwarded-host")
_X_FORWARDED_PORT = headerKey(b"x-forwarded-port")
_X_REAL_IP = headerKey(b"x-real-ip")
_FORWARDED = headerKey(b"forwarded")
_VIA = headerKey(b"via")

#: Headers that describe one connection, never forwarded either way
#: (RFC 9110 7.6.1).
HOP_BY_HOP: FrozenSet[bytes] = frozenset(
    [
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    ]
)

#: The headers that tell a backend about the client, believed only from a
#: trusted peer.
FORWARDING: FrozenSet[bytes] = frozenset(
    [
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"x-real-ip",
    ]
)

#: Not copied from a trusted peer's request: hop-by-hop headers, and those
#: the proxy or the upstream client sets itself.
TRUSTED_REQUEST_SKIP: FrozenSet[bytes] = HOP_BY_HOP | frozenset(
    [
        b"host",
        b"content-length",
        # The gateway's channel has answered "100-continue" itself and holds
        # the whole body: forwarding it would only draw an interim answer
        # upstream.
        b"expect",
        # Only the API's auth says who the consumer is (never a client, nor
        # a proxy in front, which passes on what clients send).
        b"x-consumer-name",
        b"x-consumer-id",
        b"x-consumer-groups",
    ]
)

#: Not copied from any other peer's request: the above, and the forwarding
#: headers (replaced by the gateway's own).
REQUEST_SKIP: FrozenSet[bytes] = TRUSTED_REQUEST_SKIP | FORWARDING

RESPONSE_SKIP: FrozenSet[bytes] = HOP_BY_HOP

_REQUEST_SKIP_KEYS = frozenset(headerKey(name) for name in REQUEST_SKIP)
_TRUSTED_REQUEST_SKIP_KEYS = frozenset(headerKey(name) for name in TRUSTED_REQUEST_SKIP)
_RESPONSE_SKIP_KEYS = frozenset(headerKey(name) for name in RESPONSE_SKIP)

_NO_TOKENS: FrozenSet[bytes] = frozenset()

#: What this hop adds to C{Via}: the protocol version and a pseudonym
#: (RFC 9110 7.6.3), rather than a host name; the version is the one the
#: message was received in (a request that came over HTTP/2: L{VIA_HTTP2}).
VIA = b"1.1 gateway"

#: What this hop adds to the C{Via} of a request received over HTTP/2.
VIA_HTTP2 = b"2 gateway"

_HTTP2 = b"HTTP/2.0"


def _tokens(values: Optional[Sequence[bytes]]) -> FrozenSet[bytes]:
    if not values:
        return _NO_TOKENS
    return frozenset(
        token.strip().lower() for value in values for token in value.split(b",") if token.strip()
    )


#: C{Connection} value -> the header names it adds to those skipped:
#: C{keep-alive} and C{close}, the usual values, add none.
_namedCache: Dict[Tuple[bytes, FrozenSet[bytes]], FrozenSet[bytes]] = {}


def _alsoNamed(values: Optional[Sequence[bytes]], skipped: FrozenSet[bytes]) -> FrozenSet[bytes]:
    """
    @return: the lower-case names a C{Connection} header (its C{values})
        names that are not in C{skipped} already.
    """
    if not values:
        return _NO_TOKENS
    if len(values) > 1:
        return _tokens(values) - skipped
    key = (values[0], skipped)
    named = _namedCache.get(key)
    if named is None:
        named = _tokens(values) - skipped
        if len(_namedCache) < 256:
            _namedCache[key] = named
    return named


def _connectionTokens(headers: Headers) -> FrozenSet[bytes]:
    return _tokens(headers.getRawHeaders(b"connection"))


def copyRequestHeaders(incoming: Headers, trusted: bool = False) -> Headers:
    """
    @param trusted: whether the request comes from a trusted proxy, whose
        forwarding headers are kept.
    @return: the headers to send upstream: all but hop-by-hop ones, those
        named in C{Connection}, and (unless C{trusted}) the forwarding
        headers.
    """
    skip = TRUSTED_REQUEST_SKIP if trusted else REQUEST_SKIP
    raw = rawHeadersOf(incoming)
    if raw is not None:
        skipKeys = _TRUSTED_REQUEST_SKIP_KEYS if trusted else _REQUEST_SKIP_KEYS
        # The values were checked when the request was parsed: copy the
        # lists, as the filters may change the upstream headers.
        named = _alsoNamed(raw.get(_CONNECTION), skip)
        copied = {}
        for key, kept in raw.items():
            if key in skipKeys or (named and key.lower() in named):
                continue
            copied[key] = kept[:]
        return headersFromRaw(copied)
    named = _connectionTokens(incoming)
    out = Headers()
    for name, values in incoming.getAllRawHeaders():
        lower = name.lower()
        if lower in skip or lower in named:
            continue
        out.setRawHeaders(name, values)
    return out


def copyResponseHeaders(upstream: Headers, outgoing: Headers) -> None:
    """
    Copy an upstream response's headers to the client's, but hop-by-hop
    ones, and add this hop to C{Via}.
    """
    raw = rawHeadersOf(upstream)
    out = rawHeadersOf(outgoing)
    if raw is not None and out is not None:
        # The upstream client parsed these values (no CR, LF or NUL in
        # them) and hands the response over: its lists are taken as they
        # are.
        named = _alsoNamed(raw.get(_CONNECTION), RESPONSE_SKIP)
        for key, kept in raw.items():
            if key in _RESPONSE_SKIP_KEYS or (named and key.lower() in named):
                continue
            out[key] = kept
        via = out.get(_VIA)
        if via is None:
            out[_VIA] = [VIA]
        else:
            via.append(VIA)
        return
    named = _connectionTokens(upstream)
    for name, values in upstream.getAllRawHeaders():
        lower = name.lower()
        if lower in RESPONSE_SKIP or lower in named:
            continue
        outgoing.setRawHeaders(name, values)
    outgoing.addRawHeader(b"via", VIA)


#: Bytes a C{Forwarded} value may hold without quotes (RFC 7230 token).
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _forwardedValue(value: bytes) -> bytes:
    """
    @return: C{value} as a C{Forwarded} parameter value: a token, or a
        quoted string.
    """
    if value and all(c in _TOKEN for c in value):
        return value
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def _forwardedNode(address: str) -> bytes:
    """
    @return: an address as a C{Forwarded} node (RFC 7239 6): IPv6 in
        brackets, quoted; C{unknown} for what is not an IP address.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return b"unknown"
    if ip.version == 6:
        return b'"[' + address.encode("ascii") + b']"'
    return address.encode("ascii")


class _Hop:
    """
    The forwarding values of one hop, worked out once per peer, C{Host},
    scheme and port (they repeat from request to request).
    """

    __slots__ = ("xForwardedFor", "proto", "host", "port", "realIP", "forwarded")

    def __init__(self, peer: str, host: Optional[bytes], secure: bool, port: int) -> None:
        proto = b"https" if secure else b"http"
        self.xForwardedFor = peer.encode("ascii", "replace")
        self.proto = proto
        self.host = host
        self.port = b"%d" % (port,)
        self.realIP = self.xForwardedFor
        element = b"for=" + _forwardedNode(peer)
        if host is not None:
            element += b";host=" + _forwardedValue(host)
        self.forwarded = element + b";proto=" + proto


def _hopAddress(hop: str) -> Optional[Union[ipaddress.IPv4Address, ipaddress.IPv6Address]]:
    """
    @return: the IP address of an C{X-Forwarded-For} hop (C{1.2.3.4},
        C{2001:db8::1}; some proxies add a port: C{1.2.3.4:80},
        C{[2001:db8::1]:80}), or L{None} for anything else.
    """
    try:
        return ipaddress.ip_address(hop)
    except ValueError:
        pass
    if hop.startswith("["):
        inner, sep, _ = hop[1:].partition("]")
    else:
        inner, sep, port = hop.partition(":")
        if not port.isdigit():
            return None
    if not sep:
        return None
    try:
        return ipaddress.ip_address(inner)
    except ValueError:
        return None


class ClientAddresses:
    """
    Decides which address is the client's, and what the request forwarded
    upstream says of it.

    Without trusted proxies the direct peer is the client, whatever
    C{X-Forwarded-For} says.  When the peer is a trusted proxy, the client
    is the right-most address in C{X-Forwarded-For} that is not itself a
    trusted proxy.

    @param trusted: the networks (CIDRs) of the trusted proxies.
    """

    def __init__(self, trusted: Sequence[str] = ()) -> None:
        self._trusted = tuple(ipaddress.ip_network(t, strict=False) for t in trusted)
        self._hops: Dict[Tuple[str, Optional[bytes], bool, int], _Hop] = {}

    def _isTrusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._trusted)

    def clientOf(self, request: Any, peer: Any = None) -> str:
        """
        @param peer: the request's client address, when the caller has it.
        @return: the client's address, as a string.
        """
        if peer is None:
            peer = request.getClientAddress()
        address: str = getattr(peer, "host", None) or "unknown"
        if not self._trusted or not self._isTrusted(address):
            return address
        return self._believed(request, address)

    def _believed(self, request: Any, address: str) -> str:
        """
        @return: the right-most C{X-Forwarded-For} hop that is not a trusted
            proxy; when a hop is no IP address (with or without a port),
            what the proxies handed on is not believed past it: the last
            trusted hop (or the peer) is the client.
        """
        forwarded = request.requestHeaders.getRawHeaders(b"x-forwarded-for") or []
        hops: List[str] = [
            h.strip() for v in forwarded for h in v.decode("latin-1").split(",") if h.strip()
        ]
        last = address
        for hop in reversed(hops):
            ip = _hopAddress(hop)
            if ip is None:
                return last
            if not any(ip in network for network in self._trusted):
                return str(ip)
            last = str(ip)
        return address

    def _hop(self, peer: str, host: Optional[bytes], secure: bool, port: int) -> _Hop:
        key = (peer, host, secure, port)
        hop = self._hops.get(key)
        if hop is None:
            if len(self._hops) >= 4096:
                self._hops.clear()
            hop = self._hops[key] = _Hop(peer, host, secure, port)
        return hop

    def forward(self, request: Any, host: Optional[List[bytes]], peer: Any) -> Tuple[str, Headers]:
        """
        Work out a request's client address and the headers to send
        upstream: its own but hop-by-hop ones (L{copyRequestHeaders}), the
        forwarding headers (see the module docstring) and C{Via}.

        @param host: the request's C{Host} values, or L{None}.
        @param peer: the direct peer's address (an L{IAddress}).
        @return: C{(client address, upstream headers)}.
        """
        address: str = getattr(peer, "host", None) or "unknown"
        trusted = bool(self._trusted) and self._isTrusted(address)
        port = getattr(getattr(request, "host", None), "port", 0) or 0
        hop = self._hop(address, host[0] if host else None, request.isSecure(), port)
        incoming = request.requestHeaders
        headers = copyRequestHeaders(incoming, trusted)
        raw = rawHeadersOf(incoming)
        out = rawHeadersOf(headers)
        if out is None or raw is None:
            return self._forwardSlowly(request, incoming, headers, hop, address, trusted)
        hopVia = VIA if request.clientproto != _HTTP2 else VIA_HTTP2
        via = raw.get(_VIA)
        out[_VIA] = via + [hopVia] if via else [hopVia]
        if not trusted:
            out[_X_FORWARDED_FOR] = [hop.xForwardedFor]
            out[_X_FORWARDED_PROTO] = [hop.proto]
            out[_X_FORWARDED_PORT] = [hop.port]
            out[_X_REAL_IP] = [hop.realIP]
            out[_FORWARDED] = [hop.forwarded]
            if hop.host is not None:
                out[_X_FORWARDED_HOST] = [hop.host]
            return address, headers
        client = self._believed(request, address)
        previous = raw.get(_X_FORWARDED_FOR)
        out[_X_FORWARDED_FOR] = [
            b", ".join(previous + [hop.xForwardedFor]) if previous else hop.xForwardedFor
        ]
        previous = raw.get(_FORWARDED)
        out[_FORWARDED] = [b", ".join(previous + [hop.forwarded]) if previous else hop.forwarded]
        out.setdefault(_X_FORWARDED_PROTO, [hop.proto])
        out.setdefault(_X_FORWARDED_PORT, [hop.port])
        out.setdefault(_X_REAL_IP, [client.encode("ascii", "replace")])
        if hop.host is not None:
            out.setdefault(_X_FORWARDED_HOST, [hop.host])
        return client, headers

    def _forwardSlowly(
        self,
        request: Any,
        incoming: Headers,
        headers: Headers,
        hop: _Hop,
        address: str,
        trusted: bool,
    ) -> Tuple[str, Headers]:
        # The same through Headers' public API, for a Twisted whose Headers
        # cannot be used as a dict (see gateway.http.headers.RAW_HEADERS).
        hopVia = VIA if request.clientproto != _HTTP2 else VIA_HTTP2
        headers.setRawHeaders(b"via", list(incoming.getRawHeaders(b"via") or []) + [hopVia])
        client = self._believed(request, address) if trusted else address
        if trusted:
            for name, value in (
                (b"x-forwarded-for", hop.xForwardedFor),
                (b"forwarded", hop.forwarded),
            ):
                previous = list(incoming.getRawHeaders(name) or [])
                headers.setRawHeaders(name, [b", ".join(previous + [value]) if previous else value])
        else:
            headers.setRawHeaders(b"x-forwarded-for", [hop.xForwardedFor])
            headers.setRawHeaders(b"forwarded", [hop.forwarded])
        own = [
            (b"x-forwarded-proto", hop.proto),
            (b"x-forwarded-port", hop.port),
            (b"x-real-ip", client.encode("ascii", "replace")),
        ]
        if hop.host is not None:
            own.append((b"x-forwarded-host", hop.host))
        for name, value in own:
            if not (trusted and headers.hasHeader(name)):
                headers.setRawHeaders(name, [value])
        return client, headers
