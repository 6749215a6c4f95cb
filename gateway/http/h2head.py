"""
The head of an HTTP/2 request, read and checked in one pass: what RFC 9113
(8.2 and 8.3) asks of a request's header fields, and what the HTTP/1.1
channel (L{gateway.http.channel}) asks of a request head, with the same
decisions where they overlap (the method, the target and its path, the
C{Host}, header values, underscore look-alikes, the header count and
size, C{Content-Length}).

The C{h2} library can check the first part itself, with a chain of
generators per header block that costs about as much as the rest of a
request's HTTP/2 processing; the connection turns those checks off and
relies on this one pass, which it makes anyway.  A malformed request is a
stream error (RFC 9113 8.1.1), answered 400 with the gateway's JSON error
on its stream alone.
"""

from __future__ import annotations

import re
from typing import List, Optional, Sequence, Tuple

from gateway.http.channel import (
    _HOST,
    _NOT_IN_VALUE,
    _UNDERSCORE_LOOKALIKES,
    _parseRequestLine,
    _Refused,
)
from gateway.model.limits import HTTPLimits

__all__ = ["RequestHead", "readRequestHead"]

#: A field name as HTTP/2 carries it: a token, in lower case.
_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+\Z")

#: Fields that describe an HTTP/1.1 connection, which an HTTP/2 request
#: must not carry (RFC 9113 8.2.2).
_CONNECTION_SPECIFIC = frozenset(
    [b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"]
)

_PSEUDO = frozenset([b":method", b":scheme", b":authority", b":path"])


#: The port a scheme's authority may leave out.
_DEFAULT_PORTS = {b"https": b":443", b"http": b":80"}


def _normalAuthority(authority: bytes, scheme: bytes) -> bytes:
    """
    @return: an authority as RFC 3986 6.2 compares it: the host in lower
        case, without the scheme's default port.
    """
    authority = authority.lower()
    default = _DEFAULT_PORTS.get(scheme)
    if default is not None and authority.endswith(default):
        authority = authority[: -len(default)]
    return authority


def _malformed(why: str) -> _Refused:
    return _Refused(400, "malformed HTTP/2 request: " + why)


class RequestHead:
    """
    What a request needs of its head.

    @ivar method: the C{:method}.
    @ivar path: the C{:path} (with its query).
    @ivar host: the C{Host} (from C{:authority} when the client sent no
        C{Host} field).
    @ivar fields: the regular header fields, C{Host} included, split
        C{Cookie} crumbs joined back into one field (RFC 9113 8.2.3).
    @ivar length: the C{Content-Length}, or L{None}.
    @ivar expect: whether the client waits for C{100 Continue}.
    """

    __slots__ = ("method", "path", "host", "fields", "length", "expect")

    def __init__(
        self,
        method: bytes,
        path: bytes,
        host: bytes,
        fields: List[Tuple[bytes, bytes]],
        length: Optional[int],
        expect: bool,
    ) -> None:
        self.method = method
        self.path = path
        self.host = host
        self.fields = fields
        self.length = length
        self.expect = expect


def readRequestHead(headers: Sequence[Tuple[bytes, bytes]], limits: HTTPLimits) -> RequestHead:
    """
    Read and check the header block of a request, as the HPACK decoder
    gave it.

    @raise _Refused: 400 for a malformed request (or one the HTTP/1.1
        channel refuses 400), 414 for a target over
        C{maxRequestLineLength}, 431 for more fields than
        C{maxHeaderCount} or more bytes than C{http2.maxHeaderListSize}
        (counted as HTTP/2 counts them), 501 for C{CONNECT}.
    """
    pseudo = {}
    fields: List[Tuple[bytes, bytes]] = []
    cookies: List[bytes] = []
    lengths: List[bytes] = []
    host: Optional[bytes] = None
    expect = False
    size = 0
    count = 0
    badValue = False
    isName = _NAME.match
    for name, value in headers:
        size += len(name) + len(value) + 32
        if name[:1] == b":":
            if count:
                raise _malformed("a pseudo-header field after a header field")
            if name not in _PSEUDO:
                raise _malformed("unknown pseudo-header field")
            if name in pseudo:
                raise _malformed("repeated pseudo-header field")
            pseudo[name] = value
            continue
        count += 1
        if not isName(name):
            raise _malformed("invalid header field name")
        if value and (
            value.translate(None, _NOT_IN_VALUE) != value
            or value[0] in b" \t"
            or value[-1] in b" \t"
        ):
            badValue = True
        if name in _CONNECTION_SPECIFIC:
            raise _malformed("connection-specific header field")
        if name == b"cookie":
            cookies.append(value)
            continue
        if name == b"host":
            if host is not None:
                raise _Refused(400, "more than one Host header")
            host = value
        elif name == b"content-length":
            lengths.append(value)
        elif name == b"expect":
            expect = value.lower() == b"100-continue"
        elif name == b"te":
            if value.lower() != b"trailers":
                raise _malformed("te other than trailers")
        elif 0x5F in name and name.replace(b"_", b"-") in _UNDERSCORE_LOOKALIKES:
            raise _Refused(400, "header name with an underscore for a dash")
        fields.append((name, value))
    if size > limits.http2.maxHeaderListSize:
        raise _Refused(431, "request header fields too large")
    if count > limits.maxHeaderCount:
        raise _Refused(431, "too many header fields")
    if badValue:
        raise _Refused(400, "invalid character in a header value")
    method = pseudo.get(b":method")
    if method is None:
        raise _malformed(":method is missing")
    if method == b"CONNECT":
        raise _Refused(501, "CONNECT is not supported")
    path = pseudo.get(b":path")
    scheme = pseudo.get(b":scheme")
    if not path or scheme is None:
        raise _malformed(":scheme and :path are required")
    if scheme != b"https" and scheme != b"http":
        raise _Refused(400, "the :scheme of a request is http or https")
    if len(path) > limits.maxRequestLineLength:
        raise _Refused(414, "request target too long")
    if path[:1] != b"/" and path != b"*":
        raise _Refused(400, "the request target must be a path")
    # The HTTP/1.1 channel's checks of a request line, on the one this
    # request would have had: the method, the target's characters, no
    # fragment, "*" for OPTIONS alone, the path's ambiguities.
    _parseRequestLine(method + b" " + path + b" HTTP/1.1", limits.rejectAmbiguousPaths)
    authority = pseudo.get(b":authority")
    if host is None:
        if authority is None:
            raise _Refused(400, "a request needs :authority or Host")
        host = authority
        fields.append((b"host", host))
    elif (
        authority is not None
        and authority != host
        and _normalAuthority(authority, scheme) != _normalAuthority(host, scheme)
    ):
        raise _malformed(":authority and Host differ")
    if not _HOST.match(host):
        raise _Refused(400, "invalid Host header")
    if cookies:
        fields.append((b"cookie", b"; ".join(cookies)))
    length: Optional[int] = None
    if lengths:
        if len(lengths) > 1:
            raise _Refused(400, "more than one Content-Length")
        if not lengths[0].isdigit():
            raise _Refused(400, "invalid Content-Length")
        length = int(lengths[0])
    return RequestHead(method, path, host, fields, length, expect)
