"""
The rules of RFC 9111 a shared cache follows, as pure functions over
header values: reading C{Cache-Control}, deciding whether an answer may
be stored and for how long it is fresh, its age, conditional requests,
and the C{Cache-Status} header of RFC 9211.

What is stored (L{storable}): the answer to a C{GET} whose status is
final and neither 206 (ranges are not cached) nor 304, without
C{no-store} or C{private} (this cache is shared; a C{private="field"}
counts as C{private}), without C{Set-Cookie}, without C{Vary: *}, and:

  - when the request sent upstream carried C{Authorization}, or the
    API's C{auth} authenticated it with a credential and the entries are
    not kept per consumer (L{gateway.cache.policy.CachePolicy.personal}),
    only with C{public}, C{s-maxage} or C{must-revalidate} (RFC 9111 3.5);
  - its freshness lifetime is C{s-maxage}, else C{max-age}, else
    C{Expires} minus C{Date}; without any, the API's C{ttl} (the
    operator's heuristic), for the statuses RFC 9110 15.1 calls
    heuristically cacheable (200, 203, 204, 300, 301, 308, 404, 405,
    410, 414, 501) or an answer marked C{public}; any other status is
    stored only with an explicit lifetime;
  - C{no-cache} (a C{no-cache="field"} counts as C{no-cache}) makes the
    lifetime 0: the entry is revalidated before each use, so it is only
    stored with a validator (C{ETag} or C{Last-Modified});
  - an answer stale on arrival without a validator is not stored.

A stale entry is never served without revalidation (no
C{stale-while-revalidate}, no C{stale-if-error}), which is all that
C{must-revalidate} and C{proxy-revalidate} ask.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from twisted.web.http import stringToDatetime

__all__ = [
    "HEURISTIC_STATUSES",
    "MAX_DELTA",
    "cacheControl",
    "cacheStatus",
    "correctedInitialAge",
    "deltaSeconds",
    "etagMatches",
    "freshnessLifetime",
    "httpDateSeconds",
    "storable",
    "varyNames",
]

#: Statuses a cache may store with a heuristic lifetime (RFC 9110 15.1),
#: but 206: ranges are not cached.
HEURISTIC_STATUSES = frozenset([200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501])

#: The greatest delta-seconds taken (RFC 9111 1.2.2).
MAX_DELTA = 2_147_483_648

#: Directives, read as a dict: a directive's value, or L{None} for one
#: without.
Directives = Dict[bytes, Optional[bytes]]

_EMPTY: Directives = {}


def _splitList(values: Iterable[bytes]) -> Iterable[bytes]:
    """
    @return: the members of comma-separated list header lines, quoted
        strings kept whole.
    """
    for line in values:
        start = 0
        quoted = False
        escaped = False
        for i, c in enumerate(line):
            if escaped:
                escaped = False
            elif quoted and c == 0x5C:  # backslash
                escaped = True
            elif c == 0x22:  # "
                quoted = not quoted
            elif c == 0x2C and not quoted:  # ,
                member = line[start:i].strip()
                if member:
                    yield member
                start = i + 1
        member = line[start:].strip()
        if member:
            yield member


def cacheControl(values: Optional[Sequence[bytes]]) -> Directives:
    """
    Read C{Cache-Control} header lines.

    @return: C{{directive: value}}, names in lower case, values unquoted
        (L{None} for a directive without a value); of a directive given
        twice, the first.
    """
    if not values:
        return _EMPTY
    out: Directives = {}
    for member in _splitList(values):
        name, eq, value = member.partition(b"=")
        name = name.strip().lower()
        if not name or name in out:
            continue
        if not eq:
            out[name] = None
            continue
        value = value.strip()
        if len(value) >= 2 and value[:1] == b'"' and value[-1:] == b'"':
            value = value[1:-1].replace(b'\\"', b'"').replace(b"\\\\", b"\\")
        out[name] = value
    return out


def deltaSeconds(value: Optional[bytes]) -> Optional[int]:
    """
    @return: a delta-seconds value (RFC 9111 1.2.2), at most L{MAX_DELTA};
        L{None} when it is not one (absent, or not digits).
    """
    if value is None or not value.isdigit():
        return None
    return min(int(value), MAX_DELTA)


def httpDateSeconds(value: Optional[bytes]) -> Optional[float]:
    """
    @return: an HTTP date as seconds since the epoch, or L{None} when it is
        not one.
    """
    if not value:
        return None
    try:
        return float(stringToDatetime(value.strip()))
    except (ValueError, IndexError, OverflowError):
        return None


def freshnessLifetime(
    status: int,
    directives: Directives,
    date: Optional[float],
    expires: Optional[Sequence[bytes]],
    default: float,
) -> Optional[float]:
    """
    The freshness lifetime of an answer (RFC 9111 4.2.1).

    @param directives: its C{Cache-Control}.
    @param date: its C{Date}, read (or when it came, without one).
    @param expires: its C{Expires} lines, or L{None}.
    @param default: the API's C{ttl}, the heuristic lifetime.
    @return: seconds, or L{None} when it has no explicit lifetime and its
        status may not be given a heuristic one.
    """
    if b"no-cache" in directives:
        return 0.0
    for name in (b"s-maxage", b"max-age"):
        if name in directives:
            delta = deltaSeconds(directives[name])
            # An invalid value makes the answer stale (RFC 9111 4.2.1).
            return float(delta) if delta is not None else 0.0
    if expires:
        when = httpDateSeconds(expires[0])
        if when is None or date is None:
            # An invalid date stands for a time in the past (RFC 9111 5.3).
            return 0.0
        return max(0.0, when - date)
    if status in HEURISTIC_STATUSES or b"public" in directives:
        return default
    return None


def correctedInitialAge(
    ageValue: Optional[Sequence[bytes]],
    date: Optional[float],
    requestTime: float,
    responseTime: float,
) -> float:
    """
    The age of an answer when it came (RFC 9111 4.2.3).

    @param ageValue: its C{Age} lines, or L{None}.
    @param date: its C{Date}, read, or L{None}.
    @param requestTime: when its request was sent.
    @param responseTime: when it came.
    @return: seconds.
    """
    age = deltaSeconds(ageValue[0].strip()) if ageValue else None
    apparent = max(0.0, responseTime - date) if date is not None else 0.0
    corrected = (age or 0) + max(0.0, responseTime - requestTime)
    return max(apparent, float(corrected))


def varyNames(values: Optional[Sequence[bytes]]) -> Optional[Tuple[bytes, ...]]:
    """
    @return: the header names of C{Vary} lines, in lower case, sorted,
        each once; L{None} for C{Vary: *} (nothing can match it).
    """
    if not values:
        return ()
    names = set()
    for member in _splitList(values):
        if member == b"*":
            return None
        names.add(member.lower())
    return tuple(sorted(names))


def storable(
    status: int,
    directives: Directives,
    headers: Dict[bytes, List[bytes]],
    authorized: bool,
) -> Optional[str]:
    """
    Whether a C{GET}'s answer may be stored (see the module's
    documentation); its lifetime is judged apart (L{freshnessLifetime}).

    @param headers: its headers, C{{lower-case name: [values]}}.
    @param authorized: whether its request carried C{Authorization}
        upstream, or was otherwise a consumer's own.
    @return: L{None} when it may be, else why not, as a C{Cache-Status}
        C{detail} token.
    """
    if status < 200 or status in (206, 304):
        return "status"
    if b"no-store" in directives:
        return "no-store"
    if b"private" in directives:
        return "private"
    if b"set-cookie" in headers:
        return "set-cookie"
    if authorized and not (
        b"public" in directives or b"s-maxage" in directives or b"must-revalidate" in directives
    ):
        return "authorization"
    if varyNames(headers.get(b"vary")) is None:
        return "vary-star"
    return None


def _opaque(tag: bytes) -> bytes:
    tag = tag.strip()
    return tag[2:] if tag[:2] == b"W/" else tag


def etagMatches(ifNoneMatch: Sequence[bytes], etag: Optional[bytes]) -> bool:
    """
    @return: whether C{If-None-Match} lines match an entity tag, by the
        weak comparison (RFC 9110 13.1.2).
    """
    if etag is None:
        return False
    mine = _opaque(etag)
    for member in _splitList(ifNoneMatch):
        if member == b"*" or _opaque(member) == mine:
            return True
    return False


def cacheStatus(
    hit: bool,
    fwd: Optional[str] = None,
    fwdStatus: Optional[int] = None,
    stored: bool = False,
    collapsed: Optional[bool] = None,
    ttl: Optional[float] = None,
    detail: Optional[str] = None,
) -> bytes:
    """
    @return: this cache's member of a C{Cache-Status} header (RFC 9211),
        e.g. C{gateway; hit; ttl=42} or C{gateway; fwd=uri-miss; stored}.
    """
    parts = [b"gateway"]
    if hit:
        parts.append(b"hit")
    if fwd is not None:
        parts.append(b"fwd=" + fwd.encode("ascii"))
    if fwdStatus is not None:
        parts.append(b"fwd-status=%d" % (fwdStatus,))
    if stored:
        parts.append(b"stored")
    if collapsed is not None:
        parts.append(b"collapsed" if collapsed else b"collapsed=?0")
    if ttl is not None:
        parts.append(b"ttl=%d" % (int(ttl),))
    if detail is not None:
        parts.append(b"detail=" + detail.encode("ascii"))
    return b"; ".join(parts)
