"""
An API's cache settings made ready for requests (L{CachePolicy}): what
keys an entry, and how a request's headers select among the variants a
C{Vary} makes.

An entry's key (L{CachePolicy.primaryKey}) is the API, the scheme the
request came with (C{http} or C{https}: RFC 9111 2 keys by the target URI,
and a backend told C{X-Forwarded-Proto} may answer them apart, e.g. with a
redirect to C{https} that would loop when served to an C{https} client),
the host name of the request's C{Host} (without its port), the cluster a C{split} routing
chose (when one did), the target sent upstream (path and query, after any
rewrite) and the values of the API's C{varyOn}: C{header:NAME} (the
client's header, all its lines), C{query:NAME} (the client's query
parameter, every value) and C{consumer} (the name the API's C{auth}
found).  Under one key live the variants of the backend's C{Vary}, told
apart by the values of the headers it names in the request as sent
upstream (L{variantOf}): what the backend saw.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

from gateway.model.cache import Cache

__all__ = ["CachePolicy", "variantOf"]

#: Separates the parts of a key (bytes no header or target holds).
_SEP = b"\x1f"

_ABSENT = b"\x00"

_HTTP = b"http"
_HTTPS = b"https"


def _joined(values: Optional[Sequence[bytes]]) -> bytes:
    """
    @return: header lines (or parameter values) as one value: C{b"="} and
        the values joined by commas, whitespace around each stripped; a
        mark of its own when there are none.
    """
    if values is None:
        return _ABSENT
    return b"=" + b",".join(v.strip() for v in values)


def _hostName(host: bytes) -> bytes:
    """
    @return: a C{Host} value's name, in lower case, without its port (the
        gateways of a fleet listen on ports of their own).
    """
    host = host.strip().lower()
    if host.endswith(b"]"):
        return host
    return host.rpartition(b":")[0] if b":" in host else host


def variantOf(names: Sequence[bytes], headers: Any) -> bytes:
    """
    @param names: the header names of a C{Vary} (lower case, sorted).
    @param headers: the request's L{twisted.web.http_headers.Headers}.
    @return: the request's values of those headers, as one byte string
        (equal for requests a cache may answer with the same variant,
        RFC 9111 4.1: the same lines, up to whitespace around commas).
    """
    if not names:
        return b""
    return b"\n".join(_joined(headers.getRawHeaders(name)) for name in names)


class CachePolicy:
    """
    An API's C{cache}, as the proxy serves it.

    @ivar api: the API's name.
    @ivar config: the L{gateway.model.cache.Cache}.
    @ivar varyHint: the C{Vary} names last seen in this API's answers (a
        shared store is asked for a variant with them first).
    """

    __slots__ = (
        "api",
        "config",
        "ttl",
        "maxBodySize",
        "store",
        "keepStale",
        "collapseTimeout",
        "honourRequest",
        "varyHint",
        "_headers",
        "_queries",
        "_consumer",
        "_anonymous",
    )

    def __init__(self, api: str, config: Cache, anonymous: Optional[str] = None) -> None:
        """
        @param anonymous: the consumer the API's C{auth} lets a request
            without a credential act as (its C{anonymous}), or L{None}.
        """
        self.api = api
        self.config = config
        self.ttl = float(config.ttl)
        self.maxBodySize = config.maxBodySize
        self.store = config.store
        self.keepStale = float(config.keepStale)
        self.collapseTimeout = float(config.collapseTimeout)
        self.honourRequest = config.requestCacheControl == "honour"
        self.varyHint: Tuple[bytes, ...] = ()
        headers: List[bytes] = []
        queries: List[bytes] = []
        consumer = False
        for item in config.varyOn:
            kind, _, name = item.partition(":")
            if kind == "header":
                headers.append(name.lower().encode("ascii"))
            elif kind == "query":
                queries.append(name.encode("utf-8"))
            else:
                consumer = True
        self._headers = tuple(headers)
        self._queries = tuple(queries)
        self._consumer = consumer
        self._anonymous = anonymous

    def personal(self, consumer: Any) -> bool:
        """
        Whether an answer made for C{consumer} is that consumer's own, as
        one to a request carrying C{Authorization} is (RFC 9111 3.5): the
        API's C{auth} authenticated it by a credential (hidden from the
        backend or not: the backend is told who it is), and the key does
        not keep consumers apart (no C{consumer} in C{varyOn}).

        @param consumer: the request's C{exchange.consumer}.
        """
        return consumer is not None and not self._consumer and consumer.name != self._anonymous

    def primaryKey(self, exchange: Any, uri: bytes, secure: Optional[bool] = None) -> bytes:
        """
        @param exchange: the request's L{gateway.pipeline.exchange.Exchange}.
        @param uri: the target sent upstream.
        @param secure: the scheme to key with (C{https} when true); by
            default the request's own.
        @return: the key of its entries (see the module's documentation).
        """
        request = exchange.request
        host = request.requestHeaders.getRawHeaders(b"host")
        if secure is None:
            secure = request.isSecure()
        parts = [
            self.api.encode("utf-8"),
            _HTTPS if secure else _HTTP,
            _hostName(host[0]) if host else b"",
            exchange.cluster.name.encode("utf-8") if exchange.routing is not None else b"",
            uri,
        ]
        if self._headers:
            incoming = request.requestHeaders
            for name in self._headers:
                parts.append(_joined(incoming.getRawHeaders(name)))
        if self._queries:
            args = request.args or {}
            for name in self._queries:
                parts.append(_joined(args.get(name)))
        if self._consumer:
            consumer = exchange.consumer
            parts.append(consumer.name.encode("utf-8") if consumer is not None else _ABSENT)
        return _SEP.join(parts)
