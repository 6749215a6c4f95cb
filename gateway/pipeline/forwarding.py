"""
What a proxy forwards and what it does not: hop-by-hop headers are
dropped both ways (RFC 9110 7.6.1), and the client's address is the one
the gateway trusts (L{ClientAddresses}).
"""

from __future__ import annotations

import ipaddress
from typing import Any, Dict, FrozenSet, List, Optional, Sequence, Tuple

from twisted.logger import Logger
from twisted.web.http_headers import Headers

from gateway.http.headers import headerKey, headersFromRaw, rawHeadersOf

log = Logger()

#: Headers that describe one connection, never forwarded either way
#: (RFC 9110 7.6.1).
_CONNECTION = headerKey(b"connection")
_HOST = headerKey(b"host")
_CONTENT_LENGTH = headerKey(b"content-length")
_TRANSFER_ENCODING = headerKey(b"transfer-encoding")
_X_FORWARDED_FOR = headerKey(b"x-forwarded-for")
_X_FORWARDED_PROTO = headerKey(b"x-forwarded-proto")
_X_FORWARDED_HOST = headerKey(b"x-forwarded-host")
_HTTP = [b"http"]
_HTTPS = [b"https"]


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


#: Not copied from the client's request: hop-by-hop headers, and those the
#: proxy or the upstream client sets itself.
REQUEST_SKIP: FrozenSet[bytes] = HOP_BY_HOP | frozenset(
    [
        b"host",
        b"content-length",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        # twisted.web has answered "100-continue" itself and holds the whole
        # body: forwarding it would only draw an interim answer upstream.
        b"expect",
    ]
)


RESPONSE_SKIP: FrozenSet[bytes] = HOP_BY_HOP


_REQUEST_SKIP_KEYS = frozenset(headerKey(name) for name in REQUEST_SKIP)


_RESPONSE_SKIP_KEYS = frozenset(headerKey(name) for name in RESPONSE_SKIP)


_NO_TOKENS: FrozenSet[bytes] = frozenset()


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


def copyRequestHeaders(incoming: Headers) -> Headers:
    """
    @return: the headers to send upstream: all but hop-by-hop ones and those
        named in C{Connection}.
    """
    raw = rawHeadersOf(incoming)
    if raw is not None:
        # The values were checked when the request was parsed: copy the
        # lists, as the filters may change the upstream headers.
        named = _alsoNamed(raw.get(_CONNECTION), REQUEST_SKIP)
        copied = {}
        for key, kept in raw.items():
            if key in _REQUEST_SKIP_KEYS or (named and key.lower() in named):
                continue
            copied[key] = kept[:]
        return headersFromRaw(copied)
    named = _connectionTokens(incoming)
    out = Headers()
    for name, values in incoming.getAllRawHeaders():
        lower = name.lower()
        if lower in REQUEST_SKIP or lower in named:
            continue
        out.setRawHeaders(name, values)
    return out


def copyResponseHeaders(upstream: Headers, outgoing: Headers) -> None:
    """
    Copy an upstream response's headers to the client's, but hop-by-hop ones.
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
        return
    named = _connectionTokens(upstream)
    for name, values in upstream.getAllRawHeaders():
        lower = name.lower()
        if lower in RESPONSE_SKIP or lower in named:
            continue
        outgoing.setRawHeaders(name, values)


def upstreamHeaders(request: Any, host: Optional[List[bytes]], peer: bytes) -> Headers:
    """
    The headers to send upstream for a client's request: its own but
    hop-by-hop ones (L{copyRequestHeaders}), and C{X-Forwarded-For},
    C{X-Forwarded-Proto} and C{X-Forwarded-Host}.

    @param host: the request's C{Host} values, or L{None}.
    @param peer: the direct peer's address.
    """
    incoming = request.requestHeaders
    raw = rawHeadersOf(incoming)
    headers = copyRequestHeaders(incoming)
    out = rawHeadersOf(headers)
    if out is not None and raw is not None:
        previous = raw.get(_X_FORWARDED_FOR)
        out[_X_FORWARDED_FOR] = [b", ".join(previous + [peer]) if previous else peer]
        out[_X_FORWARDED_PROTO] = _HTTPS[:] if request.isSecure() else _HTTP[:]
        if host:
            out[_X_FORWARDED_HOST] = host[:1]
        return headers
    previous = incoming.getRawHeaders(b"x-forwarded-for")
    headers.setRawHeaders(b"x-forwarded-for", [b", ".join(previous + [peer]) if previous else peer])
    headers.setRawHeaders(b"x-forwarded-proto", [b"https" if request.isSecure() else b"http"])
    if host:
        headers.setRawHeaders(b"x-forwarded-host", host[:1])
    return headers


class ClientAddresses:
    """
    Decides which address is the client's.

    Without trusted proxies the direct peer is the client, whatever
    C{X-Forwarded-For} says.  When the peer is a trusted proxy, the client
    is the right-most address in C{X-Forwarded-For} that is not itself a
    trusted proxy.
    """

    def __init__(self, trusted: Sequence[str] = ()) -> None:
        self._trusted = tuple(ipaddress.ip_network(t, strict=False) for t in trusted)

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
        forwarded = request.requestHeaders.getRawHeaders(b"x-forwarded-for") or []
        hops: List[str] = [
            h.strip() for v in forwarded for h in v.decode("latin-1").split(",") if h.strip()
        ]
        for hop in reversed(hops):
            if not self._isTrusted(hop):
                return hop
        return address
