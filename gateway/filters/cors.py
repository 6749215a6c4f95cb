"""
The C{cors} filter: an API's C{cors} settings (L{gateway.model.cors.CORS}).

A preflight (C{OPTIONS} with C{Origin} and C{Access-Control-Request-Method})
is answered here, before authentication and without any backend: 204 with
the C{Access-Control-Allow-*} headers, or 403 when the origin, the method
or a requested header is not allowed.  (The proxy routes a preflight to the
API of the method it asks about: see
L{gateway.routing.snapshot.Snapshot.matchPreflight}.)

Every other answer of the API (proxied, mock, or an error of a later
filter, such as a 401, which a script must be able to read) gets
C{Vary: Origin}, and, when its request came from an allowed origin,
C{Access-Control-Allow-Origin} (that origin, never C{*}),
C{Access-Control-Allow-Credentials} and C{Access-Control-Expose-Headers}
as configured.  The gateway's settings win over a backend's: the
backend's C{Access-Control-Allow-Origin}, C{-Allow-Credentials} and
C{-Expose-Headers} are replaced, or removed for another origin.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from zope.interface import implementer

from gateway.http.headers import headerKey, rawHeadersOf
from gateway.interfaces import IFilter
from gateway.model.cors import CORS, SUBDOMAINS, normaliseOrigin, wildcardParts
from gateway.pipeline.exchange import EarlyResponse

_ORIGIN = headerKey(b"origin")
_REQUEST_METHOD = headerKey(b"access-control-request-method")
_REQUEST_HEADERS = headerKey(b"access-control-request-headers")
_ALLOW_ORIGIN = headerKey(b"access-control-allow-origin")
_ALLOW_CREDENTIALS = headerKey(b"access-control-allow-credentials")
_EXPOSE_HEADERS = headerKey(b"access-control-expose-headers")
_VARY = headerKey(b"vary")

#: Methods a preflight always allows (the Fetch standard's CORS-safelisted
#: methods, which need no C{Access-Control-Allow-Methods}).
SAFELISTED_METHODS = frozenset([b"GET", b"HEAD", b"POST"])

_PREFLIGHT_VARY = b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers"

_SUBDOMAINS = re.compile(SUBDOMAINS.pattern.encode("ascii"))


#: Decisions on origins that only wildcard patterns could allow, kept per
#: policy (their check is ten times an exact origin's); cleared when full,
#: as clients choose the origins they send.
WILDCARD_CACHE = 1024


#: How an origin given with its scheme's default port ends.
_DEFAULT_PORTS = (b":443", b":80")


class OriginPolicy:
    """
    Which origins are allowed (see L{gateway.model.cors} for the rules).
    """

    __slots__ = ("_any", "_exact", "_wildcards", "_decided")

    def __init__(self, origins: Sequence[str]) -> None:
        """
        @param origins: origins and origin patterns (L{gateway.model.cors.ORIGIN}).
        """
        self._any = "*" in origins
        exact = set()
        wildcards: List[Tuple[bytes, bytes]] = []
        for origin in origins:
            if origin == "*":
                continue
            normal = normaliseOrigin(origin)
            parts = wildcardParts(normal)
            if parts is None:
                exact.add(normal.encode("ascii"))
            else:
                wildcards.append((parts[0].encode("ascii"), parts[1].encode("ascii")))
        self._exact = frozenset(exact)
        self._wildcards = tuple(wildcards)
        self._decided: Dict[bytes, bool] = {}

    def allows(self, origin: bytes) -> bool:
        """
        @param origin: an C{Origin} header's value.
        @return: whether it is allowed.
        """
        if self._any:
            return origin != b"null"
        lower = origin.lower()
        if lower in self._exact:
            return True
        if lower.endswith(_DEFAULT_PORTS):
            # (Browsers never send a default port; a client that does means
            # the same origin.)
            lower = normaliseOrigin(lower.decode("latin-1")).encode("latin-1")
            if lower in self._exact:
                return True
        if not self._wildcards:
            return False
        decided = self._decided
        allowed = decided.get(lower)
        if allowed is None:
            allowed = self._matchesWildcard(lower)
            if len(decided) >= WILDCARD_CACHE:
                decided.clear()
            decided[lower] = allowed
        return allowed

    def _matchesWildcard(self, lower: bytes) -> bool:
        for prefix, suffix in self._wildcards:
            if lower.startswith(prefix) and lower.endswith(suffix):
                middle = lower[len(prefix) : len(lower) - len(suffix)]
                if middle and _SUBDOMAINS.fullmatch(middle) is not None:
                    return True
        return False


def _tokens(value: bytes) -> List[bytes]:
    return [t.strip() for t in value.split(b",") if t.strip()]


def _variesOnOrigin(values: Sequence[bytes]) -> bool:
    for value in values:
        for token in _tokens(value):
            lower = token.lower()
            if lower == b"origin" or lower == b"*":
                return True
    return False


def _first(headers: Any, raw: Optional[Dict[bytes, List[bytes]]], key: bytes) -> Optional[bytes]:
    values = raw.get(key) if raw is not None else headers.getRawHeaders(key)
    return values[0] if values else None


@implementer(IFilter)
class CORSFilter:
    """
    Answers CORS preflights and marks the answers of an API for the
    origins it allows (see the module docstring).
    """

    name = "cors"

    def __init__(self, config: CORS, apiMethod: str = "*") -> None:
        """
        @param config: the API's L{CORS} settings.
        @param apiMethod: the API's C{method}: what a preflight allows when
            C{config.methods} is empty (any method, for C{*}).
        """
        self.origins = OriginPolicy(config.origins)
        self._credentials = config.credentials
        methods = list(config.methods)
        if not methods and apiMethod != "*":
            methods = [apiMethod]
        #: Allowed methods (safelisted ones included), or L{None} for any.
        self._methods: Optional[frozenset] = None
        #: C{Access-Control-Allow-Methods}, or L{None} to name the one asked.
        self._allowMethods: Optional[bytes] = None
        if methods and "*" not in methods:
            encoded = [m.encode("ascii") for m in methods]
            self._methods = frozenset(encoded) | SAFELISTED_METHODS
            self._allowMethods = b", ".join(encoded)
        elif "*" in methods and not config.credentials:
            self._allowMethods = b"*"
        headers = list(config.headers)
        #: Allowed request headers (lower case), or L{None} for any.
        self._headers: Optional[frozenset] = None
        #: C{Access-Control-Allow-Headers}, or L{None} to name those asked.
        self._allowHeaders: Optional[bytes] = None
        if headers and "*" not in headers:
            self._headers = frozenset(h.lower().encode("ascii") for h in headers)
            self._allowHeaders = ", ".join(headers).encode("ascii")
        self._expose: Optional[bytes] = (
            ", ".join(config.exposeHeaders).encode("ascii") if config.exposeHeaders else None
        )
        fixed: Dict[Union[str, bytes], Sequence[Union[str, bytes]]] = {b"vary": [_PREFLIGHT_VARY]}
        if config.credentials:
            fixed[b"access-control-allow-credentials"] = [b"true"]
        if config.maxAge is not None:
            fixed[b"access-control-max-age"] = [b"%d" % (config.maxAge,)]
        self._preflightHeaders = fixed

    def __repr__(self) -> str:
        return f"<CORSFilter credentials={self._credentials}>"

    # -- preflights ---------------------------------------------------------------

    def preflight(
        self, origin: bytes, method: bytes, requestedHeaders: Optional[bytes]
    ) -> EarlyResponse:
        """
        @param origin: the C{Origin}.
        @param method: the C{Access-Control-Request-Method}.
        @param requestedHeaders: the C{Access-Control-Request-Headers}, or
            L{None}.
        @return: the answer to a preflight: 204 with the
            C{Access-Control-Allow-*} headers, or a 403 error saying what
            is not allowed.
        """
        if not self.origins.allows(origin):
            return EarlyResponse.error(403, "CORS: origin not allowed")
        if self._methods is not None and method not in self._methods:
            return EarlyResponse.error(
                403, "CORS: method not allowed", method=method.decode("latin-1")
            )
        asked = _tokens(requestedHeaders) if requestedHeaders else []
        if self._headers is not None:
            for header in asked:
                if header.lower() not in self._headers:
                    return EarlyResponse.error(
                        403, "CORS: header not allowed", header=header.decode("latin-1")
                    )
        headers = dict(self._preflightHeaders)
        headers[b"access-control-allow-origin"] = [origin]
        headers[b"access-control-allow-methods"] = [self._allowMethods or method]
        if self._allowHeaders is not None:
            headers[b"access-control-allow-headers"] = [self._allowHeaders]
        elif asked:
            headers[b"access-control-allow-headers"] = [b", ".join(asked)]
        return EarlyResponse(204, {}, headers, b"", None)

    # -- IFilter ----------------------------------------------------------------

    def before(self, context: Any) -> Optional[EarlyResponse]:
        request = context.request
        if request.method != b"OPTIONS":
            return None
        incoming = request.requestHeaders
        raw = rawHeadersOf(incoming)
        origin = _first(incoming, raw, _ORIGIN)
        method = _first(incoming, raw, _REQUEST_METHOD)
        if origin is None or method is None:
            # A plain OPTIONS request: it goes on.
            return None
        return self.preflight(origin, method, _first(incoming, raw, _REQUEST_HEADERS))

    def after(self, context: Any, response: Any) -> None:
        incoming = context.request.requestHeaders
        origin = _first(incoming, rawHeadersOf(incoming), _ORIGIN)
        allowed = origin is not None and self.origins.allows(origin)
        headers = response.headers
        out = rawHeadersOf(headers)
        if out is None:
            self._markSlowly(headers, origin if allowed else None)
            return None
        vary = out.get(_VARY)
        if vary is None:
            out[_VARY] = [b"Origin"]
        elif not _variesOnOrigin(vary):
            out[_VARY] = vary + [b"Origin"]
        if allowed:
            out[_ALLOW_ORIGIN] = [origin]  # type: ignore[list-item]
            if self._credentials:
                out[_ALLOW_CREDENTIALS] = [b"true"]
            else:
                out.pop(_ALLOW_CREDENTIALS, None)
            if self._expose is not None:
                out[_EXPOSE_HEADERS] = [self._expose]
            else:
                out.pop(_EXPOSE_HEADERS, None)
        else:
            out.pop(_ALLOW_ORIGIN, None)
            out.pop(_ALLOW_CREDENTIALS, None)
            out.pop(_EXPOSE_HEADERS, None)
        return None

    def _markSlowly(self, headers: Any, origin: Optional[bytes]) -> None:
        # The same through Headers' public API (see
        # gateway.http.headers.RAW_HEADERS).
        vary = headers.getRawHeaders(b"vary")
        if not vary or not _variesOnOrigin(vary):
            headers.addRawHeader(b"vary", b"Origin")
        for name in (
            b"access-control-allow-origin",
            b"access-control-allow-credentials",
            b"access-control-expose-headers",
        ):
            headers.removeHeader(name)
        if origin is not None:
            headers.setRawHeaders(b"access-control-allow-origin", [origin])
            if self._credentials:
                headers.setRawHeaders(b"access-control-allow-credentials", [b"true"])
            if self._expose is not None:
                headers.setRawHeaders(b"access-control-expose-headers", [self._expose])

    def error(self, context: Any, failure: Any) -> None:
        return None


def makeCORSFilter(api: Any) -> Optional[CORSFilter]:
    """
    @param api: a L{gateway.model.resources.API}.
    @return: the filter of its C{cors} settings, or L{None} when it has none.
    """
    if api.cors is None:
        return None
    return CORSFilter(api.cors, api.method)
