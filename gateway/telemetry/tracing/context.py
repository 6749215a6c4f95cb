"""
W3C Trace Context (U{https://www.w3.org/TR/trace-context/}): the
C{traceparent} header read and written as bytes, the way the proxy's
headers hold it.

    traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01
                 version trace-id (16 bytes)      parent-id (8)    flags

This module imports nothing of OpenTelemetry: the SDK's own propagator
works on C{str} carriers through getter objects, which would cost a
decode and several calls on every request; these are a regular
expression and a format.
"""

from __future__ import annotations

import re
from typing import List, Optional, Sequence, Tuple

from gateway.http.headers import headerKey

#: The keys L{twisted.web.http_headers.Headers} keeps these under (see
#: L{gateway.http.headers.rawHeadersOf}).
TRACEPARENT = headerKey(b"traceparent")
TRACESTATE = headerKey(b"tracestate")

#: Version, trace-id, parent-id and flags, lower-case hex; what follows
#: the flags (versions after 00 may add fields) is checked apart.
_TRACEPARENT_RE = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")

_ZERO_TRACE = b"0" * 32
_ZERO_SPAN = b"0" * 16

#: The C{sampled} bit of the flags.
SAMPLED = 0x01

#: A C{tracestate} list member (section 3.3.1): a simple or multi-tenant
#: key, C{=}, a value.
_MEMBER_RE = re.compile(
    r"([a-z][_0-9a-z*/-]{0,255}|[a-z0-9][_0-9a-z*/-]{0,240}@[a-z][_0-9a-z*/-]{0,13})"
    r"=([\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e])"
)

#: The most members a C{tracestate} has (section 3.3.1.1).
MAX_TRACESTATE_MEMBERS = 32


def parseTraceparent(values: Optional[Sequence[bytes]]) -> Optional[Tuple[bytes, bytes, int]]:
    """
    @param values: the C{traceparent} header's values, or L{None}.
    @return: C{(trace id, parent id, flags)}, the ids in lower-case hex
        (what L{traceparent} takes), or L{None} when there is no valid
        header: none, several, or one that breaks the rules of the
        specification (section 3.2: version C{ff}, upper-case hex, an
        all-zero trace or parent id, a version-00 value of another length,
        a later version's value whose fields go on without a C{-}).
    """
    if not values or len(values) != 1:
        return None
    value = values[0].strip(b" \t")
    match = _TRACEPARENT_RE.match(value)
    if match is None:
        return None
    version, traceId, spanId, flags = match.groups()
    if version == b"ff" or traceId == _ZERO_TRACE or spanId == _ZERO_SPAN:
        return None
    if len(value) != 55 and (version == b"00" or value[55:56] != b"-"):
        return None
    return traceId, spanId, int(flags, 16)


def traceparent(traceId: bytes, spanId: int, sampled: bool) -> bytes:
    """
    @param traceId: the trace id in lower-case hex.
    @return: a version-00 C{traceparent} value: the only flag set is
        C{sampled}, the only one version 00 defines.
    """
    return b"00-%s-%016x-%s" % (traceId, spanId, b"01" if sampled else b"00")


def hexTraceId(traceId: int) -> bytes:
    """
    @return: a trace id in lower-case hex, as L{traceparent} takes it.
    """
    return b"%032x" % (traceId,)


def parseTracestate(values: Sequence[bytes]) -> Optional[List[Tuple[str, str]]]:
    """
    Read C{tracestate} header lines (several lines are one list, RFC 9110
    5.3), quietly: the SDK's own C{TraceState.from_header} logs a warning,
    with the member, for each invalid header, which would give a client a
    line of the gateway's log per request.

    @return: the C{(key, value)} members, in order, or L{None} when the
        header breaks the rules of the specification (section 3.3: a
        member that is not C{key=value}, a key given twice, more than
        L{MAX_TRACESTATE_MEMBERS} members): all of it is then left out,
        as the SDK does.
    """
    members: List[Tuple[str, str]] = []
    keys = set()
    for line in values:
        for member in line.decode("latin-1").split(","):
            member = member.strip(" \t")
            if not member:
                continue
            match = _MEMBER_RE.fullmatch(member)
            if match is None:
                return None
            key, value = match.groups()
            if key in keys:
                return None
            keys.add(key)
            members.append((key, value))
            if len(members) > MAX_TRACESTATE_MEMBERS:
                return None
    return members
