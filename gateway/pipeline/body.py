"""
The client's request body, as the pipeline sends it upstream.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger
from twisted.web.client import FileBodyProducer

from gateway.http.body import BytesBodyProducer
from gateway.http.headers import rawHeadersOf
from gateway.http.request import GatewayRequest as GatewayRequest  # the proxy site's
from gateway.pipeline.forwarding import _CONTENT_LENGTH, _TRANSFER_ENCODING

log = Logger()

_NO_BODY_METHODS = frozenset([b"GET", b"HEAD", b"DELETE", b"OPTIONS", b"TRACE"])


#: Bodies up to this size are held in memory by twisted.web and sent in one
#: write; larger ones are spooled to a temporary file and streamed from it.
_SMALL_BODY = 100_000


def bodyProducerFor(request: Any) -> Any:
    """
    @return: an L{IBodyProducer} for the client's request body, or L{None}
        when there is none to send.
    """
    content = request.content
    if content is None:
        return None
    content.seek(0, 2)
    length = content.tell()
    content.seek(0, 0)
    if length == 0:
        if request.method in _NO_BODY_METHODS:
            headers = request.requestHeaders
            raw = rawHeadersOf(headers)
            if raw is None:
                framed = headers.hasHeader(b"content-length") or headers.hasHeader(
                    b"transfer-encoding"
                )
            else:
                framed = _CONTENT_LENGTH in raw or _TRANSFER_ENCODING in raw
            if not framed:
                return None
        return BytesBodyProducer(b"")
    if length <= _SMALL_BODY and hasattr(content, "getvalue"):
        return BytesBodyProducer(content.getvalue())
    return FileBodyProducer(content, readSize=65536)
