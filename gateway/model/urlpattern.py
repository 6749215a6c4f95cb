"""
URL patterns: their syntax, parsing (L{parsePattern}) and the host names of
routes.  The route tree that matches requests with them is
L{gateway.routing.router.Router}.

Pattern syntax
==============

A pattern starts with C{/} and is split on C{/} into segments:

  - C{users}: a static segment, compared with the request's segment exactly
    (case-sensitive).  Static segments are percent-decoded, so C{/caf%C3%A9}
    and C{/café} are the same pattern.
  - C{{name}}: a parameter; it matches one whole, non-empty segment.
  - C{{name:type}}: a typed parameter, one of
      - C{int}: ASCII digits with an optional leading C{-};
      - C{uuid}: C{8-4-4-4-12} hexadecimal digits (either case);
      - C{alpha}: C{[A-Za-z]+};
      - C{alnum}: C{[A-Za-z0-9]+};
      - C{slug}: C{[A-Za-z0-9_-]+};
      - C{re:REGEX}: the decoded segment must match the regular expression
        as a whole (as C{re.fullmatch}), in linear time (L{gateway.model.regex}
        says what syntax is accepted); braces inside it must be balanced or
        escaped with a backslash.
  - C{*}: the last segment only; it matches the rest of the path, zero or
    more segments, captured as the parameter C{*} (without a leading slash).

A parameter name is C{[A-Za-z_][A-Za-z0-9_]*} and appears once per pattern.
A parameter is always a whole segment (C{file-{id}.json} is refused).  C{/}
alone is the root.  A trailing slash in a pattern is ignored; empty segments
(C{//}), dot segments (C{.}, C{..}), C{?} and C{#} are refused, and a pattern
has at most L{MAX_SEGMENTS} segments.

Matching rules
==============

  1. The request path is the raw, percent-encoded path without its query
     string; one that does not start with C{/} matches nothing.  One trailing
     slash is ignored (C{/users/} matches C{/users}).
  2. The path is split on C{/} first and each segment is percent-decoded
     afterwards (invalid UTF-8 becomes U+FFFD), so an encoded slash C{%2F}
     stays inside its segment and never makes a new one.  Parameter values
     and static comparisons use the decoded segment.  The wildcard's value is
     the decoded rest of the path, its segments joined with C{/}.
  3. An empty segment (C{/a//b}) matches no parameter and no static segment
     (only a wildcard may swallow it).  A path that has a C{.} or C{..}
     segment, also percent-encoded, matches nothing: a backend that resolves
     dot segments would otherwise serve a path other than the one routed.
  4. Segment by segment, a static segment is preferred to a typed parameter,
     a typed parameter to a plain one, and a plain one to the wildcard.  If
     the preferred branch finds no route further down, the next one is tried
     (backtracking).  Typed parameters at the same position are tried in the
     order C{int}, C{uuid}, C{alpha}, C{alnum}, C{slug}, C{re}, then by the
     regular expression's text, whatever the order the routes were given in.
     When the path ends, a route ending there is preferred to a wildcard
     matching zero segments.
  5. Host: routes of the request's exact host are tried first, then routes
     of wildcard hosts (C{*.example.com} matches any subdomain, at any depth,
     but not C{example.com} itself), the longest suffix first, then routes
     without a host.  Hosts are compared case-insensitively, without the
     port of the C{Host} header and without a trailing dot.  Within a host,
     rule 4 decides, so a host's wildcard route beats a host-less static one.
  6. Method (methods are case-sensitive): among routes with the same pattern
     and host, the route of the request's exact method wins, then a route for
     any method (C{*}); a C{HEAD} request falls back to the C{GET} route
     when that pattern has neither.  A pattern whose routes do not accept the
     method does not match, and rule 4 goes on to the next branch.
  7. No match is L{None} (the proxy answers 404).

Two routes with the same canonical pattern (L{Pattern.canonical}: parameter
names erased), method and host are a L{RouteConflict}.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Dict, List, Optional, Tuple, Union
from urllib.parse import quote, unquote

import attrs

from gateway.model.regex import RegexError, compileRegex

__all__ = [
    "MAX_SEGMENTS",
    "PARAM_TYPES",
    "ParamSegment",
    "Pattern",
    "StaticSegment",
    "WildcardSegment",
    "checkHost",
    "normalizeHost",
    "parsePattern",
]


MAX_SEGMENTS = 128


"""
The most segments a pattern may have (matching recurses once per segment).
"""


PARAM_TYPES = ("int", "uuid", "alpha", "alnum", "slug", "re")


"""
The parameter types, in the order they are tried at the same position.
"""


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


_SLUG = re.compile(r"[A-Za-z0-9_-]+")


_HOST_LABELS = re.compile(r"(\*\.)?[a-z0-9_-]+(\.[a-z0-9_-]+)*")


_IPV6 = re.compile(r"\[[0-9a-f:.]+\]")


# Characters left as they are in the canonical form of a static segment:
# everything a path segment may hold except "*" and the braces, so that a
# static "*" or "{}" can never look like a wildcard or a parameter.
_CANONICAL_SAFE = "!$&'()+,;=:@"


def _isInt(segment: str) -> bool:
    if segment[0] == "-":
        segment = segment[1:]
    return segment.isdigit() and segment.isascii()


def _isAlpha(segment: str) -> bool:
    return segment.isalpha() and segment.isascii()


def _isAlnum(segment: str) -> bool:
    return segment.isalnum() and segment.isascii()


_TYPE_CHECKS: Dict[str, Callable[[str], Any]] = {
    "int": _isInt,
    "uuid": _UUID.fullmatch,
    "alpha": _isAlpha,
    "alnum": _isAlnum,
    "slug": _SLUG.fullmatch,
}


@attrs.frozen
class StaticSegment:
    """
    A literal segment.

    @ivar text: the percent-decoded text the request's segment must equal.
    """

    text: str

    def canonical(self) -> str:
        return quote(self.text, safe=_CANONICAL_SAFE)


@attrs.frozen
class ParamSegment:
    """
    A parameter: one whole, non-empty segment.

    @ivar name: the parameter's name.
    @ivar type: L{None} for a plain parameter, or one of L{PARAM_TYPES}.
    @ivar regex: the regular expression of an C{re} parameter, else L{None}.
    @ivar check: C{check(segment)} is true when the decoded segment is
        acceptable (L{None} for a plain parameter).
    """

    name: str
    type: Optional[str] = None
    regex: Optional[str] = None
    check: Optional[Callable[[str], Any]] = attrs.field(default=None, eq=False, repr=False)

    def canonical(self) -> str:
        if self.type is None:
            return "{}"
        if self.type == "re":
            return "{:re:" + str(self.regex) + "}"
        return "{:" + self.type + "}"


@attrs.frozen
class WildcardSegment:
    """
    The trailing C{*}: the rest of the path, zero or more segments.
    """

    name = "*"

    def canonical(self) -> str:
        return "*"


Segment = Union[StaticSegment, ParamSegment, WildcardSegment]


@attrs.frozen
class Pattern:
    """
    A parsed URL pattern; build one with L{parsePattern}.

    @ivar text: the pattern as given.
    @ivar segments: the L{StaticSegment}, L{ParamSegment} and
        L{WildcardSegment} of the pattern, in order (empty for C{/}).
    @ivar paramNames: the names of the parameters in order, C{"*"} for a
        trailing wildcard.
    """

    text: str
    segments: Tuple[Segment, ...]
    paramNames: Tuple[str, ...]

    def canonical(self) -> str:
        """
        @return: the pattern with parameter names erased and static segments
            in a canonical percent-encoding, e.g.
            C{/users/{}/files/{:int}/*}.  Two patterns with the same
            canonical form match exactly the same paths.
        """
        return "/" + "/".join(s.canonical() for s in self.segments)


def _splitPattern(text: str) -> List[str]:
    """
    Split a pattern on the slashes outside braces (a regular expression may
    hold a slash).
    """
    parts = []
    depth = 0
    start = 1
    i = 1
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\" and depth:
            i += 1
        elif c == "{":
            depth += 1
        elif c == "}":
            if not depth:
                raise ValueError(f"has a }} without a matching {{ in segment {text[start:]!r}")
            depth -= 1
        elif c == "/" and not depth:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    if depth:
        raise ValueError(f"has a {{ without a matching }} in segment {text[start:]!r}")
    parts.append(text[start:])
    return parts


def _closingBrace(segment: str) -> int:
    """
    @return: the index of the brace closing the one at index 0.
    """
    depth = 0
    i = 0
    while i < len(segment):
        c = segment[i]
        if c == "\\":
            i += 1
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if not depth:
                return i
        i += 1
    return -1  # pragma: no cover (_splitPattern checked the balance)


def _parseParam(segment: str, seen: List[str]) -> ParamSegment:
    body = segment[1:-1]
    name, colon, kind = body.partition(":")
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"invalid parameter name {name!r} in {segment!r}: use letters, digits and _,"
            " not starting with a digit"
        )
    if name in seen:
        raise ValueError(f"has the parameter {name!r} twice")
    seen.append(name)
    if not colon:
        return ParamSegment(name)
    if kind.startswith("re:"):
        regex = kind[3:]
        if not regex:
            raise ValueError(f"parameter {name!r} has an empty regular expression")
        try:
            compiled = compileRegex(regex, whole=True)
        except RegexError as e:
            raise ValueError(
                f"invalid regular expression {regex!r} for parameter {name!r}: {e.reason}"
            )
        return ParamSegment(name, "re", regex, compiled.matches)
    check = _TYPE_CHECKS.get(kind)
    if check is None:
        raise ValueError(
            f"unknown type {kind!r} for parameter {name!r}"
            " (use int, uuid, alpha, alnum, slug or re:REGEX)"
        )
    return ParamSegment(name, kind, None, check)


def parsePattern(text: str) -> Pattern:
    """
    Parse a URL pattern (see the module docstring for the syntax).

    @param text: the pattern, e.g. C{/users/{id:int}/files/*}.
    @return: the L{Pattern}.
    @raise ValueError: for an invalid pattern, with a message that reads well
        after the field name (C{"urlPattern: must start with /"}).
    """
    if not isinstance(text, str):
        raise ValueError("must be a string")
    if not text.startswith("/"):
        raise ValueError("must start with /")
    raw = _splitPattern(text) if text != "/" else []
    if len(raw) > 1 and raw[-1] == "":
        del raw[-1]  # a trailing slash is ignored, as in request paths
    if len(raw) > MAX_SEGMENTS:
        raise ValueError(f"has {len(raw)} segments, more than {MAX_SEGMENTS}")
    segments: List[Segment] = []
    names: List[str] = []
    for i, seg in enumerate(raw):
        if seg == "*":
            if i != len(raw) - 1:
                raise ValueError("may have * only as its last segment")
            segments.append(WildcardSegment())
            names.append("*")
        elif "{" in seg or "}" in seg:
            if not seg.startswith("{") or _closingBrace(seg) != len(seg) - 1:
                raise ValueError(
                    f"has {seg!r}: a parameter must be a whole segment, like /{{name}}/"
                )
            segments.append(_parseParam(seg, names))
        elif not seg:
            raise ValueError("has an empty segment (//)")
        elif "?" in seg or "#" in seg:
            raise ValueError(f"has {seg!r}: a pattern matches the path only, without ? or #")
        else:
            decoded = unquote(seg)
            if decoded in (".", ".."):
                raise ValueError(f"has the dot segment {seg!r}")
            segments.append(StaticSegment(decoded))
    return Pattern(text, tuple(segments), tuple(names))


def _stripHost(host: str) -> str:
    """
    Lower-case a host and drop its port and trailing dot.
    """
    host = host.lower()
    if host.startswith("["):
        end = host.find("]")
        if end != -1:
            host = host[: end + 1]
    else:
        colon = host.find(":")
        if colon != -1:
            host = host[:colon]
    if host.endswith("."):
        host = host[:-1]
    return host


def normalizeHost(host: Optional[str]) -> Optional[str]:
    """
    The form a route's host is compared in: lower case, without a port or a
    trailing dot; L{None} for any host (also for C{""} and C{"*"}).  This
    never fails: a malformed host simply matches nothing (use L{checkHost}
    to refuse one).

    @param host: a host, C{*.example.com}, or L{None}.
    @return: the normalised host or L{None}.
    """
    if host is None:
        return None
    host = _stripHost(host.strip())
    if host in ("", "*"):
        return None
    return host


def checkHost(host: str) -> None:
    """
    Validate a route's host: a DNS name (ASCII, punycode for international
    names), C{*.example.com}, an IPv4 address or C{[IPv6]}; no port.

    @raise ValueError: with a message for a field error.
    """
    value = host.lower()
    if value.endswith("."):
        value = value[:-1]
    if value == "*":
        return
    if _IPV6.fullmatch(value):
        return
    if ":" in value:
        raise ValueError("must be a host name without a port")
    if not _HOST_LABELS.fullmatch(value):
        raise ValueError(
            "must be a host name (letters, digits, - and _ separated by dots,"
            " optionally starting with *. for any subdomain)"
        )
