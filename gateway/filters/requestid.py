"""
The C{request-id} filter: every request carries an C{X-Request-Id}.
"""

from __future__ import annotations

import os
from binascii import hexlify
from typing import Any

import attrs
from zope.interface import implementer

from gateway.http.headers import headerKey, rawHeadersOf
from gateway.interfaces import IFilter

HEADER = b"x-request-id"


#: Ids are cut from random bytes drawn this many ids at a time: one
#: C{getrandom} system call per batch rather than per request.
_BATCH = 64
_pool = b""
_offset = 0


def _forget() -> None:
    # A forked child must not hand out the ids its parent will.
    global _pool, _offset
    _pool, _offset = b"", 0


os.register_at_fork(after_in_child=_forget)


def newRequestId() -> bytes:
    """
    @return: 16 random bytes (from L{os.urandom}) as 32 hex digits.
    """
    global _pool, _offset
    offset = _offset
    if offset >= len(_pool):
        _pool = hexlify(os.urandom(16 * _BATCH))
        offset = 0
    _offset = offset + 32
    return _pool[offset : offset + 32]


@implementer(IFilter)
@attrs.define
class RequestIdFilter:
    """
    Gives each request an id, keeps the client's when it sent a sane one,
    passes it upstream and returns it to the client, so one id follows a
    request through the gateway's logs and the backend's.

    @ivar header: the header name (bytes, lower case).
    @ivar trustIncoming: keep an id the client sent.
    """

    header: bytes = HEADER
    trustIncoming: bool = True
    name = "request-id"

    def before(self, context: Any) -> None:
        requestId = None
        headers = context.upstreamHeaders
        raw = rawHeadersOf(headers)
        if self.trustIncoming:
            if raw is None:
                ids = headers.getRawHeaders(self.header)
            else:
                ids = raw.get(headerKey(self.header))
            if ids and 0 < len(ids[0]) <= 200 and ids[0].isascii() and b" " not in ids[0]:
                requestId = ids[0]
        if requestId is None:
            requestId = newRequestId()
            if raw is None:
                headers.setRawHeaders(self.header, [requestId])
            else:
                raw[headerKey(self.header)] = [requestId]
        context.requestId = requestId
        return None

    def after(self, context: Any, response: Any) -> None:
        requestId = context.requestId
        if requestId is not None:
            raw = rawHeadersOf(response.headers)
            if raw is None:
                response.headers.setRawHeaders(self.header, [requestId])
            else:
                raw[headerKey(self.header)] = [requestId]
        return None

    def error(self, context: Any, failure: Any) -> None:
        return None


def makeRequestIdFilter(config: dict) -> RequestIdFilter:
    """
    @raise ValueError: on unknown or mistyped config keys.
    """
    unknown = set(config) - {"header", "trustIncoming"}
    if unknown:
        raise ValueError("unknown key(s): " + ", ".join(sorted(unknown)))
    header = config.get("header", "X-Request-Id")
    if not isinstance(header, str) or not header or not header.isascii():
        raise ValueError("header must be a header name")
    trust = config.get("trustIncoming", True)
    if not isinstance(trust, bool):
        raise ValueError("trustIncoming must be true or false")
    return RequestIdFilter(header.lower().encode("ascii"), trust)
