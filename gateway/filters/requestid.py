"""
The C{request-id} filter: every request carries an C{X-Request-Id}.
"""

from __future__ import annotations

import os
from typing import Any

import attrs
from zope.interface import implementer

from gateway.interfaces import IFilter

HEADER = b"x-request-id"


def newRequestId() -> bytes:
    """
    @return: 16 random bytes as 32 hex digits.
    """
    return os.urandom(16).hex().encode("ascii")


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
        if self.trustIncoming:
            ids = context.upstreamHeaders.getRawHeaders(self.header)
            if ids and 0 < len(ids[0]) <= 200 and ids[0].isascii() and b" " not in ids[0]:
                requestId = ids[0]
        if requestId is None:
            requestId = newRequestId()
            context.upstreamHeaders.setRawHeaders(self.header, [requestId])
        context.attributes["requestId"] = requestId
        return None

    def after(self, context: Any, response: Any) -> None:
        requestId = context.attributes.get("requestId")
        if requestId is not None:
            response.headers.setRawHeaders(self.header, [requestId])
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
