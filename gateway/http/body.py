"""
Bodies: a client request's body as the gateway reads it (L{RequestBody}, the
one accessor that proxying, aggregation, mirroring and routing conditions
share), request bodies as the engine sends them (L{BytesBodyProducer}), and
how a response body ends cleanly (L{CLEAN_ENDS}).
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet import defer
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IConsumer
from twisted.web.client import FileBodyProducer, PotentialDataLoss, ResponseDone
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from gateway.http.bodystream import BodyStream
from gateway.http.headers import headerKey, rawHeadersOf

_CONTENT_LENGTH = headerKey(b"content-length")
_TRANSFER_ENCODING = headerKey(b"transfer-encoding")

#: What a response body's C{connectionLost} reason is when the body is
#: complete: L{ResponseDone}, or L{PotentialDataLoss} at the end of a body
#: delimited by the connection's close.
CLEAN_ENDS = (ResponseDone, PotentialDataLoss)


@implementer(IBodyProducer)
class BytesBodyProducer:
    """
    Sends a small body that is already in memory in one write.
    """

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        if self._body:
            consumer.write(self._body)
        return defer.succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


#: Methods whose requests usually have no body: without a framing header,
#: none is sent upstream either.
_NO_BODY_METHODS = frozenset([b"GET", b"HEAD", b"DELETE", b"OPTIONS", b"TRACE"])


#: Bodies up to this size are held in memory by the request and sent in
#: one write; larger ones are streamed from where the request keeps them.
_SMALL_BODY = 100_000


class RequestBody:
    """
    The body of one client request: read whole into the request's
    C{content} before it was answered, or streamed as it arrives (the
    request's C{bodyStream}, see L{gateway.http.bodystream}).

    @ivar length: its size in bytes when known (all of it arrived, or its
        C{Content-Length} said), else L{None}.
    """

    __slots__ = ("_request", "_content", "_stream", "length")

    def __init__(self, request: Any) -> None:
        self._request = request
        stream: Optional[BodyStream] = getattr(request, "bodyStream", None)
        self._stream = stream
        if stream is not None:
            self._content = None
            self.length = stream.received if stream.complete else stream.length
            return
        content = self._content = request.content
        if content is None:
            self.length = 0
        else:
            content.seek(0, 2)
            self.length = content.tell()
            content.seek(0, 0)

    @property
    def complete(self) -> bool:
        """
        Whether all of the body arrived.
        """
        stream = self._stream
        return stream is None or stream.complete

    @property
    def replayable(self) -> bool:
        """
        Whether the body can be sent again (a retry): it is whole, held in
        memory or in the request's content.
        """
        stream = self._stream
        return stream is None or stream.replayable

    def read(self, limit: int) -> Optional[bytes]:
        """
        @return: the whole body, or L{None} when it is larger than C{limit}
            bytes (or, streamed, when it has not all arrived: see
            L{whenRead}).  The body stays readable for forwarding.
        """
        stream = self._stream
        if stream is not None:
            if stream.received > limit:
                return None
            return stream.whole()
        length = self.length or 0
        if length > limit:
            return None
        if length == 0:
            return b""
        content = self._content
        assert content is not None  # (it has a length)
        getvalue = getattr(content, "getvalue", None)
        if getvalue is not None:
            return getvalue()  # type: ignore[no-any-return]
        content.seek(0, 0)
        data: bytes = content.read()
        content.seek(0, 0)
        return data

    def whenRead(self, limit: int) -> Deferred[Optional[bytes]]:
        """
        @return: a Deferred firing with what L{read} answers once all of the
            body arrived or it is known to be larger than C{limit} bytes; it
            fails when the body does (see
            L{gateway.http.bodystream.RequestBodyError}).
        """
        stream = self._stream
        if stream is not None and not stream.complete:
            return stream.read(limit)
        return succeed(self.read(limit))

    def producer(self) -> Optional[IBodyProducer]:
        """
        @return: an L{IBodyProducer} of the body to send upstream, or
            L{None} when there is none to send (no body, and no framing
            header saying there is an empty one on a method that usually
            has none).  A streamed body that has all arrived, and is small,
            is sent from memory, in one write with the head.
        @raise ValueError: for a streamed body that cannot be sent from its
            start any more (see L{replayable}).
        """
        stream = self._stream
        if stream is not None:
            if stream.complete and stream.received <= _SMALL_BODY:
                whole = stream.whole()
                if whole is not None:
                    return BytesBodyProducer(whole)
            return stream.producer()
        length = self.length
        if length == 0:
            request = self._request
            if self._content is None:
                return None
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
        content = self._content
        assert content is not None  # (it has a length)
        if (length or 0) <= _SMALL_BODY and hasattr(content, "getvalue"):
            return BytesBodyProducer(content.getvalue())
        # From its start: a retry sends the body again.
        content.seek(0, 0)
        return FileBodyProducer(content, readSize=65536)
