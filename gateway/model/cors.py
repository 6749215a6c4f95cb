"""
An API's CORS settings (Cross-Origin Resource Sharing, the Fetch
standard's "CORS protocol"), and what an allowed origin is.

Origins
=======

An origin is C{scheme://host} with an optional C{:port}, as browsers send
it in C{Origin}: C{https://app.example.com}, C{http://localhost:3000}.
Compared case-insensitively, and a default port is the same as none
(C{https://a.example:443} is C{https://a.example}).

C{https://*.example.org} allows every subdomain of C{example.org}, at any
depth (C{https://a.example.org}, C{https://a.b.example.org}), but not
C{example.org} itself; the scheme and the port must be the pattern's
(C{http://a.example.org} and C{https://a.example.org:8443} are not
allowed by it).  C{*} alone allows every origin.  The origin C{null}
(sandboxed documents, local files) is never allowed: anything can send it.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Iterator, Mapping, Optional, Tuple

import attrs

from gateway.model import patterns
from gateway.model.schema import Bool, Int, Nullable, Rule, Str, field
from gateway.model.schema import List as ListOf

_LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_PORT = "(?::[0-9]{1,5})?"

#: An origin, or an origin pattern: C{*}, or C{scheme://host[:port]} whose
#: host is a DNS name (optionally after C{*.}), an IPv4 address or
#: C{[IPv6]}.
ORIGIN = (
    r"^(\*|[A-Za-z][A-Za-z0-9+.-]*://"
    rf"((\*\.)?{_LABEL}(\.{_LABEL})*|\[[0-9A-Fa-f:.]+\]){_PORT})$"
)

_DEFAULT_PORTS = {"http": "80", "https": "443"}

#: The subdomains part of an origin that a wildcard pattern allows (the
#: origin in lower case): DNS labels joined by dots.
SUBDOMAINS = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*")


def _checkPort(value: str) -> None:
    port = value.rpartition(":")[2]
    if "://" in value and port.isdigit() and not 0 < int(port) <= 65535:
        raise ValueError(f"{value}: the port must be from 1 to 65535")


def normaliseOrigin(value: str) -> str:
    """
    @param value: an origin or an origin pattern (L{ORIGIN}).
    @return: the same in lower case, without a default port.
    """
    value = value.lower()
    scheme, sep, rest = value.partition("://")
    default = _DEFAULT_PORTS.get(scheme)
    if sep and default is not None and rest.endswith(":" + default):
        return value[: -len(default) - 1]
    return value


def wildcardParts(pattern: str) -> Optional[Tuple[str, str]]:
    """
    @param pattern: a normalised origin pattern.
    @return: C{(prefix, suffix)} of a wildcard pattern (C{"https://"},
        C{".example.org"}), or L{None} for an exact origin or C{*}.
    """
    scheme, sep, rest = pattern.partition("://")
    if not sep or not rest.startswith("*."):
        return None
    return scheme + "://", rest[1:]


def _exposeStar(values: Mapping[str, Any]) -> Iterator[Tuple[str, str]]:
    if values["credentials"]:
        for i, name in enumerate(values["exposeHeaders"]):
            if name == "*":
                yield (
                    f"exposeHeaders[{i}]",
                    "* exposes nothing with credentials (browsers read it as a header named"
                    " *): list the headers",
                )


_METHOD_HINT = "must be * or a method name (letters, digits and !#$%&'*+.^_`|~-)"
_HEADER_HINT = "must be * or a header name (letters, digits and !#$%&'*+.^_`|~-)"


@attrs.frozen
class CORS:
    """
    Cross-origin calls from browsers.  A preflight (C{OPTIONS} with
    C{Origin} and C{Access-Control-Request-Method}) is answered by the
    gateway: 204 with the C{Access-Control-Allow-*} headers, or 403 when
    the origin, the method or a header is not allowed.  Other answers to an
    allowed origin carry C{Access-Control-Allow-Origin} (the origin itself)
    and C{Vary: Origin}.
    """

    origins: Tuple[str, ...] = field(
        ListOf(
            Str(
                pattern=ORIGIN,
                maxLength=512,
                check=_checkPort,
                patternHint="must be *, or scheme://host[:port] (the host may start with *. for"
                " any subdomain), e.g. https://app.example.com",
            ),
            minItems=1,
            maxItems=1000,
        ),
        doc="allowed origins: https://app.example.com, https://*.example.org (any subdomain,"
        " any depth, same scheme and port), or *",
    )
    methods: Tuple[str, ...] = field(
        ListOf(
            Str(pattern=patterns.HEADER_NAME, maxLength=64, patternHint=_METHOD_HINT), maxItems=64
        ),
        (),
        doc="methods a preflight allows, or *; empty: the API's method (any, for an API of"
        " every method); GET, HEAD and POST are always allowed",
    )
    headers: Tuple[str, ...] = field(
        ListOf(
            Str(pattern=patterns.HEADER_NAME, maxLength=256, patternHint=_HEADER_HINT), maxItems=256
        ),
        (),
        doc="request headers a preflight allows, or *; empty: whatever it asks for",
    )
    exposeHeaders: Tuple[str, ...] = field(
        ListOf(
            Str(pattern=patterns.HEADER_NAME, maxLength=256, patternHint=_HEADER_HINT), maxItems=256
        ),
        (),
        doc="response headers scripts may read (Access-Control-Expose-Headers)",
    )
    credentials: bool = field(
        Bool(), False, doc="allow cookies and credentials (Access-Control-Allow-Credentials)"
    )
    maxAge: Optional[int] = field(
        Nullable(Int(0, 86400)),
        None,
        doc="seconds a browser may keep a preflight's answer (Access-Control-Max-Age)",
    )

    rules: ClassVar[Tuple[Rule, ...]] = (
        Rule(
            ("credentials", "exposeHeaders"),
            _exposeStar,
            doc="With credentials, exposeHeaders cannot be *.",
        ),
    )
