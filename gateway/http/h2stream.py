"""
One HTTP/2 stream as its request sees it: the channel of one
L{twisted.web.server.Request} (a L{gateway.http.request.GatewayRequest}
for the proxy), with the interface L{gateway.http.channel.GatewayHTTPChannel}
gives its requests (C{write}, C{writeHeaders}, C{registerProducer},
C{requestDone}, C{getPeer}, C{isSecure}, ...), so that a request that
came over HTTP/2 goes through the same resource, the same filters and the
same upstream client as one that came over HTTP/1.1.

The stream is also the request's C{transport}: C{abortConnection()}
resets the stream (the connection and its other streams go on),
C{loseConnection()} asks the connection to go away gracefully (what a
draining proxy asks of every connection it answers on).

Its answer is sent by its connection (L{gateway.http.h2connection}) at the
end of the reactor's turn, in as few frames as flow control allows: the
head and a small body go out as one C{HEADERS} and one C{DATA} frame that
ends the stream.  What the client's flow-control window does not take
waits here, and pauses the answer's producer (the upstream connection),
as a full send buffer does on HTTP/1.1.  Its request body arrives through
a L{BodyStream}, whose backpressure withholds the stream's
C{WINDOW_UPDATE}s: a slow backend stops the client's sending on that
stream alone.
"""

from __future__ import annotations

import json
from collections import deque
from typing import (
    TYPE_CHECKING,
    Deque,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Tuple,
    Union,
    cast,
)

from twisted.internet.error import ConnectionAborted, ConnectionLost
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IProducer,
    IPullProducer,
    IPushProducer,
)
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.http_headers import Headers
from zope.interface import implementer

from gateway.http.bodystream import BodyStream, RequestBodyError
from gateway.http.headers import headerKey, rawHeadersOf

if TYPE_CHECKING:
    from gateway.http.h2connection import H2ServerConnection


__all__ = ["H2Stream", "HTTP2_VERSION"]

#: The protocol version of a request that came over HTTP/2, as the request
#: (C{clientproto}), the access log and the stats show it.
HTTP2_VERSION = b"HTTP/2.0"

#: Response headers that describe an HTTP/1.1 connection and that HTTP/2
#: forbids (RFC 9113 8.2.2).
_CONNECTION_SPECIFIC = frozenset(
    [b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"]
)

#: What a C{204} answer does not send either: a C{Content-Length} (RFC 9110
#: 8.6), which some backends set all the same; HTTP/2 clients (nghttp2,
#: curl) refuse a 204 whose length is not zero as malformed.
_NO_CONTENT_SKIP = _CONNECTION_SPECIFIC | frozenset([b"content-length"])

_NO_CONTENT = b"204"

#: Header name as a request or L{Headers} spells it -> lower case (HTTP/2's).
_lower: Dict[bytes, bytes] = {}

#: Bytes of an answer held for a stream beyond which its producer is paused
#: at once (rather than once the flow-control window is known to be full).
_HELD = 0x10000

_EXPECT = headerKey(b"expect")


def _lowerName(name: bytes) -> bytes:
    lower = _lower.get(name)
    if lower is None:
        lower = name.lower()
        if len(_lower) < 4096:
            _lower[name] = lower
    return lower


@implementer(IConsumer)
class H2Stream:
    """
    One stream of an L{H2ServerConnection}: the channel of its request.

    @ivar streamId: the stream's id.
    @ivar request: its request, once made.
    @ivar body: its request body as it arrives, when the site streams
        bodies and the request has one.
    @ivar site: the connection's site (what a request reads from its
        channel).
    """

    persistent = True

    def __init__(self, connection: H2ServerConnection, streamId: int) -> None:
        self._connection = connection
        self.streamId = streamId
        self.site = connection.site
        #: The request's transport: this stream (see the module docstring).
        self.transport = self
        self.requestFactory = connection.requestFactory
        self.request: Optional[http.Request] = None
        self.body: Optional[BodyStream] = None
        # What the connection found in its head.
        self.method = b""
        self.path = b""
        self.headers: List[Tuple[bytes, bytes]] = []
        self.length: Optional[int] = None
        self.bodyLimit: Optional[int] = None
        #: Whether the client ended its side (END_STREAM received).
        self.remoteDone = False
        #: Whether the request body is read whole before the request is
        #: answered (a site that does not stream bodies).
        self.buffered = False
        #: Whether a body of unknown length is awaited before the request is
        #: started (its first bytes, or its end, decide whether it has one).
        self.awaitingBody = False
        #: Whether the request was handed to its resource.
        self.started = False
        #: Whether the stream is over for the gateway (answered and ended,
        #: reset, or its connection lost).
        self.closed = False
        #: Whether what the client still sends of its body is dropped (it
        #: was refused, or the answer is complete).
        self.dropBody = False
        # Body arrival, for its deadline.
        self.bodyStartedAt = 0.0
        self.bodyReceived = 0
        self.bodyPaused = False
        self.bodyPausedAt: Optional[float] = None
        self.bodyPausedFor = 0.0
        #: Flow-controlled bytes received and not acknowledged yet (held
        #: while the body's consumer does not take them).
        self.unacknowledged = 0
        # The answer.
        #: Its head, once written and until sent.
        self.head: Optional[List[Tuple[bytes, bytes]]] = None
        #: Interim heads (100 Continue) to send before it.
        self.interim: Optional[List[List[Tuple[bytes, bytes]]]] = None
        self.pending: Deque[bytes] = deque()
        self.pendingSize = 0
        #: Whether the answer is complete (END_STREAM to send).
        self.ended = False
        #: Whether END_STREAM was sent.
        self.endSent = False
        #: Since when the answer waits for the client's flow-control window.
        self.blockedSince: Optional[float] = None
        self.producer: Optional[IPushProducer] = None
        self._producerStreaming = True
        #: Whether the stream paused its producer.
        self.producerPaused = False
        self._gatewayConnection = connection.addresses

    # -- what a request asks of its channel ---------------------------------

    def getPeer(self) -> IAddress:
        peer: IAddress = self._connection.addresses[0]
        return peer

    def getHost(self) -> IAddress:
        host: IAddress = self._connection.addresses[1]
        return host

    def isSecure(self) -> bool:
        return self._connection.addresses[2]

    def writeHeaders(
        self,
        version: bytes,
        code: bytes,
        reason: bytes,
        headers: Union[Headers, Iterable[Tuple[bytes, bytes]]],
    ) -> None:
        """
        Write the answer's head: its status and headers, without those
        HTTP/2 forbids, nor a C{204}'s C{Content-Length} (sent with the
        first body bytes, or alone at the end of the reactor's turn).
        """
        if self.closed:
            return
        head = [(b":status", code)]
        skip = _NO_CONTENT_SKIP if code == _NO_CONTENT else _CONNECTION_SPECIFIC
        if isinstance(headers, Headers):
            pairs: Iterable[Tuple[bytes, bytes]] = (
                (name, value) for name, values in headers.getAllRawHeaders() for value in values
            )
        else:
            pairs = headers
        for name, value in pairs:
            lower = _lowerName(name)
            if lower not in skip:
                head.append((lower, value))
        self.head = head
        self._connection.streamWrote(self)

    def write(self, data: bytes) -> None:
        """
        Write answer body bytes.
        """
        if self.closed or not data:
            return
        self.pending.append(data)
        self.pendingSize += len(data)
        if self.pendingSize > _HELD and not self.producerPaused:
            self._pauseProducer()
        self._connection.streamWrote(self)

    def writeSequence(self, iovec: Iterable[bytes]) -> None:
        self.write(b"".join(iovec))

    def requestDone(self, request: http.Request) -> None:
        """
        The answer is complete: end the stream once what it wrote is sent.
        """
        if request is not self.request:
            raise TypeError(f"{request!r} is not this stream's request")
        self.request = None
        if self.closed:
            return
        self.ended = True
        self.producer = None
        self._connection.streamWrote(self)

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        """
        Register the producer of the answer: paused while the client's
        window or the connection's send buffer is full.
        """
        if self.producer is not None:
            raise RuntimeError(
                f"Cannot register producer {producer}, because producer "
                f"{self.producer} was never unregistered."
            )
        if self.closed:
            producer.stopProducing()
            return
        if streaming:
            self.producer = cast(IPushProducer, producer)
            self._producerStreaming = True
        else:
            pull = http._PullToPush(cast(IPullProducer, producer), self)
            self.producer = pull
            self._producerStreaming = False
            pull.startStreaming()
        self.producerPaused = False
        if (
            self.pendingSize > _HELD
            or self.blockedSince is not None
            or self._connection.writeBlocked
        ):
            self._pauseProducer()

    def unregisterProducer(self) -> None:
        producer = self.producer
        if producer is None:
            return
        if not self._producerStreaming:
            cast("http._PullToPush", producer).stopStreaming()
        self.producer = None
        self.producerPaused = False

    # -- the stream as its request's transport ----------------------------------

    def loseConnection(self) -> None:
        """
        What a draining proxy asks of the connection of each answer: the
        connection goes away gracefully (C{GOAWAY}, then closes once its
        streams are over).
        """
        self._connection.goAway()

    def abortConnection(self) -> None:
        """
        Cut this stream (C{RST_STREAM INTERNAL_ERROR}): its answer is
        incomplete (an upstream that broke mid-body), and the client must
        not take it for whole.
        """
        self._connection.resetStream(self, _INTERNAL_ERROR, Failure(ConnectionAborted()))

    def stopProducing(self) -> None:
        # (A transport is a producer too.)
        self.abortConnection()

    # -- the request body ----------------------------------------------------

    def pauseBody(self) -> None:
        """
        The body's consumer does not take what arrives (see
        L{gateway.http.bodystream}): stop opening the stream's window.
        The time paused does not count against the body's deadline.
        """
        if not self.bodyPaused:
            self.bodyPaused = True
            self.bodyPausedAt = self._connection.clock.seconds()

    def resumeBody(self) -> None:
        """
        The body's consumer takes what arrives again: open the window by
        what it held back.
        """
        if self.bodyPaused:
            self.bodyPaused = False
            if self.bodyPausedAt is not None:
                self.bodyPausedFor += self._connection.clock.seconds() - self.bodyPausedAt
                self.bodyPausedAt = None
            self._connection.acknowledge(self)

    # -- starting the request ----------------------------------------------------

    def start(self) -> None:
        """
        Make the request, give it the head, and hand it to its resource
        (now, or once its body arrived whole when it is buffered).
        """
        self.started = True
        factory = self.requestFactory
        if self._connection.nonQueued:
            request = factory(self)
        else:
            request = factory(self, False)
        self.request = request
        requestHeaders = request.requestHeaders
        raw = rawHeadersOf(requestHeaders)
        if raw is None:
            add = requestHeaders.addRawHeader
            for name, value in self.headers:
                add(name, value)
        else:
            for name, value in self.headers:
                key = headerKey(name)
                values = raw.get(key)
                if values is None:
                    raw[key] = [value]
                else:
                    values.append(value)
            if _EXPECT in raw:
                # Answered here (see the connection): not a header of the
                # request any more.
                del raw[_EXPECT]
        self.headers = []
        request.parseCookies()
        if self.buffered:
            request.gotLength(self.length)
            return
        request.gotLength(0)
        if self.body is not None:
            request.bodyStream = self.body
        request.requestReceived(self.method, self.path, HTTP2_VERSION)

    def bodyChunk(self, data: bytes) -> None:
        """
        Body bytes of a buffered request.
        """
        request = self.request
        if request is not None:
            request.handleContentChunk(data)

    def bodyDone(self) -> None:
        """
        The buffered body arrived whole: answer the request.
        """
        request = self.request
        if request is not None:
            request.requestReceived(self.method, self.path, HTTP2_VERSION)

    # -- what the connection does with it -------------------------------------------

    def refuse(self, code: int, message: str, errorFields: Mapping[str, object]) -> int:
        """
        Answer C{code} with a JSON error, as the HTTP/1.1 channel refuses a
        request, before the request reached its resource.

        @return: the bytes of the answer's body.
        """
        body = dict(errorFields)
        body["error"] = message
        payload = json.dumps(body, separators=(",", ":")).encode("utf-8") + b"\n"
        self.head = [
            (b":status", b"%d" % (code,)),
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % (len(payload),)),
        ]
        self.pending.append(payload)
        self.pendingSize += len(payload)
        self.ended = True
        self.dropBody = True
        # The access log has it; nothing in the gateway's own log (see
        # GatewayHTTPChannel's refusals).
        self._connection.streamWrote(self)
        return len(payload)

    def lost(self, reason: Failure) -> None:
        """
        The stream is over before its answer was (reset by either side, or
        its connection lost): its request, its body and its producer learn
        of it.
        """
        if self.closed:
            return
        self.closed = True
        self.pending.clear()
        self.pendingSize = 0
        self.head = None
        body = self.body
        if body is not None:
            self.body = None
            body.fail(Failure(RequestBodyError(400, "the client went away mid-body")))
        producer = self.producer
        if producer is not None:
            self.producer = None
            producer.stopProducing()
        request = self.request
        if request is not None:
            self.request = None
            request.connectionLost(reason)

    def _pauseProducer(self) -> None:
        producer = self.producer
        if producer is not None and not self.producerPaused:
            self.producerPaused = True
            producer.pauseProducing()

    def pauseProducer(self) -> None:
        """
        Pause the answer's producer (the connection's send buffer or the
        stream's window is full).
        """
        self._pauseProducer()

    def resumeProducer(self) -> None:
        """
        Resume the answer's producer, if the stream paused it.
        """
        producer = self.producer
        if producer is not None and self.producerPaused:
            self.producerPaused = False
            producer.resumeProducing()


#: RST_STREAM's INTERNAL_ERROR (RFC 9113 7).
_INTERNAL_ERROR = 0x2


def connectionLostReason(message: str) -> Failure:
    """
    @return: the reason a request is given when its stream is lost.
    """
    return Failure(ConnectionLost(message))
