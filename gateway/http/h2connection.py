"""
The gateway's HTTP/2 server connection: the C{h2} library's state machine
(hyper-h2) between a client's connection and the same requests, resource
and pipeline as HTTP/1.1 (each stream is the channel of one request, see
L{gateway.http.h2stream}).

What it adds to the state machine, which parses and checks frames, keeps
the streams' states and the flow-control windows, and encodes and decodes
header blocks:

  - the request head is checked as RFC 9113 and the HTTP/1.1 channel
    check it (L{gateway.http.h2head}: pseudo-headers, field names and
    values, connection-specific fields, the method, the target and its
    path, C{Host}, underscore look-alikes, the header count and size, the
    body limit of the route) and refused with the same JSON errors (400,
    413, 414, 431, 501), on the stream alone; the C{h2} library ends the
    connection itself for what breaks the framing (a body longer or
    shorter than its C{content-length}, frames out of place);
  - flow control tied to the streams' producers both ways: a request body
    is acknowledged (C{WINDOW_UPDATE}) only as its consumer takes it (see
    L{gateway.http.bodystream}), so a slow backend stops the client's
    sending on that stream; an answer waits for the client's window, and
    pauses its producer (the upstream connection) meanwhile, as does a
    connection whose send buffer is full, which also stops reading from
    the client;
  - limits (L{HTTP2Limits}): concurrent streams, the header list size
    (431 above it, C{GOAWAY} above twice it), the flood budgets of
    L{gateway.http.h2guard} (C{GOAWAY ENHANCE_YOUR_CALM} and close);
  - the timeouts of L{HTTPLimits}, on one timer per connection: the first
    request (and a header block once begun) within C{headerTimeout}, a
    body within C{bodyTimeout} plus C{minBodyRate}'s time (408), an idle
    connection closed after C{idleTimeout}, and an answer the client takes
    nothing of (its window or the connection's send buffer stays full) cut
    after C{sendTimeout} (its stream, or the connection);
  - a stream reset by the client stops its request at once: the request
    learns of it through C{connectionLost}, which cancels its upstream
    request; streams opened and reset in the same read never reach the
    resource;
  - graceful shutdown (L{H2ServerConnection.goAway}): C{GOAWAY} naming the
    last stream taken, streams opened after it refused (the client may send
    them again elsewhere), the connection closed once its streams are
    over.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Set, Tuple, cast

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import ProtocolError, StreamClosedError
from h2.settings import SettingCodes, Settings
from hpack import Decoder
from hyperframe.frame import GoAwayFrame
from twisted.internet.interfaces import (
    IDelayedCall,
    IPushProducer,
    IReactorTime,
    ISSLTransport,
    ITCPTransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import INonQueuedRequestFactory
from zope.interface import implementer

from gateway.http.bodystream import BodyStream, RequestBodyError
from gateway.http.channel import _Refused
from gateway.http.h2guard import FrameGuard
from gateway.http.h2head import readRequestHead
from gateway.http.h2stream import H2Stream, connectionLostReason
from gateway.http.writesoon import writeSoon
from gateway.model.limits import MAX_WINDOW, HTTPLimits

log = Logger()

__all__ = ["H2ServerConnection"]

_NO_ERROR = int(ErrorCodes.NO_ERROR)
_REFUSED_STREAM = int(ErrorCodes.REFUSED_STREAM)
_CANCEL = int(ErrorCodes.CANCEL)
_ENHANCE_YOUR_CALM = int(ErrorCodes.ENHANCE_YOUR_CALM)

#: The window every connection starts with (RFC 9113 6.9.2).
_DEFAULT_WINDOW = 65535

#: Streams beyond C{maxConcurrentStreams} that the C{h2} state machine
#: lets be open before it ends the connection itself.  The gateway refuses
#: the streams over the limit one by one (C{REFUSED_STREAM}, which closes
#: them); the state machine's ceiling only bounds the streams the gateway
#: is done with that the client leaves open (half-closed).
_STREAM_SLACK = 100

#: Seconds a connection that was told to go has to close before it is cut.
_ABORT_TIMEOUT = 2.0


class _CappedDecoder(Decoder):
    """
    An HPACK decoder whose limit on a header list's size stays what the
    connection set: the C{h2} library sets it to the advertised
    C{SETTINGS_MAX_HEADER_LIST_SIZE} once the client acknowledges it, while
    the gateway answers lists up to twice that with 431 (on their stream)
    and only ends the connection beyond.
    """

    def __init__(self, cap: int) -> None:
        super().__init__()
        self._cap = cap

    @property
    def max_header_list_size(self) -> int:
        return self._cap

    @max_header_list_size.setter
    def max_header_list_size(self, value: int) -> None:
        pass


def _callSoon(clock: IReactorTime) -> Callable[[Callable[[], None]], object]:
    """
    @return: what runs a function at the end of the reactor's turn (see
        L{gateway.http.reactor.GatewayReactor.callAfterTurn}), or on its
        next turn with another reactor.
    """
    afterTurn: Optional[Callable[[Callable[[], None]], object]]
    afterTurn = getattr(clock, "callAfterTurn", None)
    if afterTurn is not None:
        return cast(Callable[[Callable[[], None]], object], afterTurn)
    return lambda f: clock.callLater(0, f)


@implementer(IPushProducer)
class H2ServerConnection(Protocol):
    """
    One HTTP/2 connection of a client (see the module docstring), built by
    a site (L{gateway.http.site.LimitedSite.buildHTTP2}) once the
    connection chose HTTP/2 (L{gateway.http.negotiate}).

    @ivar site: the site whose resource answers the requests.
    @ivar limits: the L{HTTPLimits} (its C{http2} part: HTTP/2's own).
    @ivar clock: the site's reactor.
    @ivar addresses: C{(peer, host, secure)} of the connection.
    @ivar writeBlocked: whether the connection's send buffer is full.
    """

    transport: Any

    def __init__(self, site: Any) -> None:
        """
        @param site: the site: its C{reactor}, C{resource},
            C{requestFactory}, C{limits}, and optionally C{bodyLimitFor},
            C{errorFields}, C{streamBodies}, C{stats}, C{rejections} and
            C{http2Connections} (see L{gateway.http.site.LimitedSite}).
        """
        self.site = site
        limits: HTTPLimits = getattr(site, "limits", None) or HTTPLimits()
        self.limits = limits
        self.clock: IReactorTime = site.reactor
        self.requestFactory = site.requestFactory
        self.nonQueued = bool(INonQueuedRequestFactory.providedBy(self.requestFactory))
        self._bodyLimitFor = getattr(site, "bodyLimitFor", None)
        self._errorFields = getattr(site, "errorFields", None) or {}
        self._streamBodies = bool(getattr(site, "streamBodies", False))
        stats = getattr(site, "stats", None)
        self._count: Optional[Callable[[str], None]] = getattr(stats, "countHTTP2", None)
        self._countSendTimeout: Optional[Callable[[], None]] = getattr(
            stats, "countSendTimeout", None
        )
        self._callSoon = _callSoon(self.clock)
        self.addresses: Tuple[Any, Any, bool] = (None, None, False)
        self._streams: Dict[int, H2Stream] = {}
        #: Streams whose bodies arrive (their deadline runs).
        self._receiving: Set[H2Stream] = set()
        #: Streams with something to send.
        self._dirty: List[H2Stream] = []
        self._dirtySet: Set[H2Stream] = set()
        #: Streams whose head arrived in this read, started at its end.
        self._starting: List[H2Stream] = []
        self._flushScheduled = False
        self.writeBlocked = False
        self._readPaused = False
        self._sendStalledAt: Optional[float] = None
        self._timer: Optional[IDelayedCall] = None
        self._abortingCall: Optional[IDelayedCall] = None
        self._startedAt = 0.0
        self._idleSince: Optional[float] = None
        self._requests = 0
        #: After GOAWAY: the last stream taken, or L{None}.
        self._lastStreamId: Optional[int] = None
        self._goAwayPending = False
        #: Whether the connection is closing (no more is read or answered).
        self._closing = False
        self._lost = False

    # -- connection ---------------------------------------------------------------

    def connectionMade(self) -> None:
        transport = self.transport
        self.addresses = (
            transport.getPeer(),
            transport.getHost(),
            ISSLTransport(transport, None) is not None,
        )
        if ITCPTransport.providedBy(transport):
            transport.setTcpNoDelay(True)
        limits = self.limits.http2
        # The request heads are checked by readRequestHead, in one pass the
        # connection makes anyway, and the answers' heads are made here in
        # HTTP/2's form (see H2Stream.writeHeaders): the library's own
        # checks of both would cost about as much as the rest of a request.
        h2 = self._h2 = H2Connection(
            H2Configuration(
                client_side=False,
                header_encoding=None,
                validate_inbound_headers=False,
                normalize_inbound_headers=False,
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
            )
        )
        settings: Dict[Any, int] = {
            SettingCodes.MAX_CONCURRENT_STREAMS: limits.maxConcurrentStreams,
            SettingCodes.MAX_HEADER_LIST_SIZE: limits.maxHeaderListSize,
        }
        if limits.initialWindowSize != _DEFAULT_WINDOW:
            settings[SettingCodes.INITIAL_WINDOW_SIZE] = limits.initialWindowSize
        h2.local_settings = Settings(client=False, initial_values=settings)
        h2.decoder = _CappedDecoder(2 * limits.maxHeaderListSize)
        h2.initiate_connection()
        # The client is told maxConcurrentStreams (above); the state
        # machine, which would end the connection at the first stream over
        # it (even one the client opened before it could read the limit),
        # holds a ceiling above it instead, and the streams over the limit
        # are refused one by one (_requestReceived: a stream error, RFC
        # 9113 5.1.2).
        h2.local_settings[SettingCodes.MAX_CONCURRENT_STREAMS] = (
            limits.maxConcurrentStreams + _STREAM_SLACK
        )
        h2.local_settings.acknowledge()
        window = min(MAX_WINDOW, limits.maxConcurrentStreams * limits.initialWindowSize)
        if window > _DEFAULT_WINDOW:
            h2.increment_flow_control_window(window - _DEFAULT_WINDOW)
        self._guard = FrameGuard(limits, self.clock)
        canPause: bool = IPushProducer.providedBy(transport)
        if canPause:
            # Told when the send buffer is full (pauseProducing).
            transport.registerProducer(self, True)
        connections = getattr(self.site, "http2Connections", None)
        if connections is not None:
            connections.add(self)
        if self._count is not None:
            self._count("connections")
        # The first request within headerTimeout.
        self._startedAt = self.clock.seconds()
        self._armTimer(self.limits.headerTimeout)
        self._flush()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost = True
        self._closing = True
        for call in (self._timer, self._abortingCall):
            if call is not None and call.active():
                call.cancel()
        self._timer = self._abortingCall = None
        connections = getattr(self.site, "http2Connections", None)
        if connections is not None:
            connections.discard(self)
        streams, self._streams = self._streams, {}
        self._receiving.clear()
        self._dirty = []
        self._dirtySet.clear()
        for stream in streams.values():
            stream.lost(reason)

    def dataReceived(self, data: bytes) -> None:
        """
        Account for the frames (floods), let the state machine parse them,
        act on its events, then start the requests whose heads arrived and
        that were not reset meanwhile.
        """
        if self._closing:
            return
        guard = self._guard
        flood = guard.scan(data)
        if flood is not None:
            self._flood(flood)
            return
        try:
            events = self._h2.receive_data(data)
        except ProtocolError as e:
            self._protocolError(e)
            return
        for event in events:
            handler = _HANDLERS.get(type(event))
            if handler is not None:
                handler(self, event)
                if self._closing:
                    return
        starting = self._starting
        if starting:
            self._starting = []
            for stream in starting:
                if not stream.closed and not stream.started and not stream.awaitingBody:
                    self._start(stream)
        if guard.headerBlockSince is not None:
            self._armTimer(self.limits.headerTimeout)
        self._scheduleFlush()

    # -- events -------------------------------------------------------------------

    def _requestReceived(self, event: RequestReceived) -> None:
        streamId = event.stream_id
        if self._lastStreamId is not None and streamId > self._lastStreamId:
            # Opened after GOAWAY: refused, so the client may send it again.
            self._h2.reset_stream(streamId, _REFUSED_STREAM)
            return
        if len(self._streams) >= self.limits.http2.maxConcurrentStreams:
            # Over the limit: refused, so the client may send it again once
            # a stream is over; each refusal is taken from the reset budget
            # (a client that keeps opening streams over the limit is a
            # flood as one that keeps resetting them).
            self._h2.reset_stream(streamId, _REFUSED_STREAM)
            flood = self._guard.refused()
            if flood is not None:
                self._flood(flood)
            return
        stream = H2Stream(self, streamId)
        self._streams[streamId] = stream
        self._requests += 1
        self._idleSince = None
        if self._count is not None:
            self._count("streams")
        ended = event.stream_ended is not None
        if ended:
            stream.remoteDone = True
        try:
            expect = self._readHead(stream, event.headers, ended)
        except _Refused as e:
            self._refuse(stream, e.code, e.message)
            return
        if ended:
            self._starting.append(stream)
            return
        stream.bodyStartedAt = self.clock.seconds()
        self._receiving.add(stream)
        self._armTimer(self.limits.bodyTimeout)
        if expect:
            stream.interim = [[(b":status", b"100")]]
            self.streamWrote(stream)
        if stream.length == 0:
            # No body: what follows is the stream's (empty) end.
            stream.dropBody = True
            self._starting.append(stream)
        elif not self._streamBodies:
            stream.buffered = True
            self._start(stream)
        elif stream.length is None:
            # Its first bytes, or its end, say whether it has a body (a GET
            # whose client ends it with an empty DATA frame has none).
            stream.awaitingBody = True
        else:
            stream.body = BodyStream(stream, stream.length)
            self._starting.append(stream)

    def _readHead(self, stream: H2Stream, headers: List[Tuple[bytes, bytes]], ended: bool) -> bool:
        """
        Read and check a request head (L{readRequestHead}), and keep what
        the request needs of it on C{stream}.

        @return: whether the client waits for C{100 Continue}.
        @raise _Refused: when it is refused.
        """
        head = readRequestHead(headers, self.limits)
        length = head.length
        if ended and length:
            # Its body is over before a byte of what content-length
            # declares (RFC 9113 8.1.1): malformed, as a body that is
            # shorter or longer is (h2 checks those once DATA came).
            raise _Refused(400, "malformed HTTP/2 request: content-length but no body")
        if not ended and length != 0:
            limit = self._limitFor(head.method, head.host, head.path)
            if limit is not None and length is not None and length > limit:
                raise _Refused(413, f"request body larger than {limit} bytes")
            stream.bodyLimit = limit
        stream.method = head.method
        stream.path = head.path
        stream.headers = head.fields
        stream.length = length
        return head.expect and not ended

    def _limitFor(self, method: bytes, host: bytes, path: bytes) -> Optional[int]:
        limit = self.limits.maxBodySize
        if self._bodyLimitFor is None:
            return limit
        try:
            routeLimit = self._bodyLimitFor(method, host, path.split(b"?", 1)[0])
        except Exception:
            log.failure("bodyLimitFor failed; using the default body limit")
            return limit
        return limit if routeLimit is None else int(routeLimit)

    def _dataReceived(self, event: DataReceived) -> None:
        streamId = event.stream_id
        flowed = event.flow_controlled_length
        stream = self._streams.get(streamId)
        if stream is None or stream.closed or stream.dropBody:
            if flowed:
                self._h2.acknowledge_received_data(flowed, streamId)
            return
        data = event.data
        stream.bodyReceived += len(data)
        limit = stream.bodyLimit
        if limit is not None and stream.bodyReceived > limit:
            if flowed:
                self._h2.acknowledge_received_data(flowed, streamId)
            self._refuseBody(stream, 413, f"request body larger than {limit} bytes")
            return
        if data:
            if stream.awaitingBody:
                stream.awaitingBody = False
                stream.body = BodyStream(stream, None)
                self._starting.append(stream)
            body = stream.body
            if body is not None:
                body.feed(data)
            elif stream.buffered:
                stream.bodyChunk(data)
        if flowed:
            if stream.bodyPaused:
                stream.unacknowledged += flowed
            else:
                self._h2.acknowledge_received_data(flowed, streamId)

    def _streamEnded(self, event: StreamEnded) -> None:
        stream = self._streams.get(event.stream_id)
        if stream is None:
            return
        stream.remoteDone = True
        self._receiving.discard(stream)
        if stream.closed or stream.dropBody:
            if stream.endSent:
                self._forget(stream)
            return
        if stream.awaitingBody:
            # Ended without a byte: no body.
            stream.awaitingBody = False
            self._starting.append(stream)
            return
        body = stream.body
        if body is not None:
            body.finish()
        elif stream.buffered:
            stream.bodyDone()

    def _streamReset(self, event: StreamReset) -> None:
        stream = self._streams.get(event.stream_id)
        if stream is None:
            return
        if self._count is not None:
            self._count("resets")
        stream.lost(connectionLostReason("the client reset the stream"))
        self._forget(stream)

    def _windowUpdated(self, event: WindowUpdated) -> None:
        if event.stream_id:
            stream = self._streams.get(event.stream_id)
            if stream is not None and stream.pendingSize:
                self.streamWrote(stream)
            return
        self._allWaiting()

    def _settingsChanged(self, event: RemoteSettingsChanged) -> None:
        changed = event.changed_settings
        if SettingCodes.INITIAL_WINDOW_SIZE in changed or SettingCodes.MAX_FRAME_SIZE in changed:
            self._allWaiting()

    def _connectionTerminated(self, event: ConnectionTerminated) -> None:
        # The client went (GOAWAY): nothing more can be sent.
        self._close()

    def _allWaiting(self) -> None:
        for stream in self._streams.values():
            if stream.pendingSize:
                self.streamWrote(stream)

    # -- streams --------------------------------------------------------------------

    def _start(self, stream: H2Stream) -> None:
        stream.start()

    def _refuse(self, stream: H2Stream, code: int, message: str) -> None:
        """
        Refuse a request before its resource saw it (see
        L{H2Stream.refuse}).
        """
        counts = getattr(self.site, "rejections", None)
        if counts is not None:
            counts[code] = counts.get(code, 0) + 1
        self._receiving.discard(stream)
        stream.awaitingBody = False
        sent = stream.refuse(code, message, self._errorFields)
        accessLog = getattr(self.site, "accessLog", None)
        if accessLog is not None:
            accessLog.refused(code, message, self.transport.getPeer(), sent)

    def _refuseBody(self, stream: H2Stream, code: int, message: str) -> None:
        """
        Refuse a request body that is too large or too slow: a streamed
        body fails, and the request sending it upstream answers C{code};
        one not handed to its resource yet is answered here.
        """
        self._receiving.discard(stream)
        stream.dropBody = True
        self._acknowledgeHeld(stream)
        body = stream.body
        request = stream.request
        if body is not None and stream.started:
            counts = getattr(self.site, "rejections", None)
            if counts is not None:
                counts[code] = counts.get(code, 0) + 1
            stream.body = None
            if request is not None and request.startedWriting:
                self.resetStream(stream, _CANCEL, connectionLostReason(message))
                return
            body.fail(Failure(RequestBodyError(code, message)))
            return
        if request is not None:
            # Buffered, not answered yet: it never will be.
            stream.request = None
            request.connectionLost(connectionLostReason(message))
        stream.started = True
        self._refuse(stream, code, message)

    def streamWrote(self, stream: H2Stream) -> None:
        """
        C{stream} has something to send: sent at the end of the turn.
        """
        if stream not in self._dirtySet:
            self._dirtySet.add(stream)
            self._dirty.append(stream)
        self._scheduleFlush()

    def acknowledge(self, stream: H2Stream) -> None:
        """
        The body's consumer took what C{stream} held back: open the
        client's windows by as much.
        """
        if self._acknowledgeHeld(stream):
            self._scheduleFlush()

    def _acknowledgeHeld(self, stream: H2Stream) -> bool:
        held = stream.unacknowledged
        if not held or self._closing:
            return False
        stream.unacknowledged = 0
        self._h2.acknowledge_received_data(held, stream.streamId)
        return True

    def resetStream(self, stream: H2Stream, code: int, reason: Failure) -> None:
        """
        End C{stream} with C{RST_STREAM code}; its request learns of it.
        """
        if stream.closed:
            return
        stream.lost(reason)
        if not self._closing:
            try:
                self._h2.reset_stream(stream.streamId, code)
            except (ProtocolError, StreamClosedError):
                pass
        self._forget(stream)
        self._scheduleFlush()

    def _forget(self, stream: H2Stream) -> None:
        """
        C{stream} is over for the gateway.
        """
        stream.closed = True
        self._acknowledgeHeld(stream)
        if self._streams.pop(stream.streamId, None) is None:
            return
        self._receiving.discard(stream)
        if not self._streams:
            if self._lastStreamId is not None:
                # Gone away, and the last stream is over.
                self._scheduleFlush()
                return
            self._idleSince = self.clock.seconds()
            self._armTimer(self._idleTimeout())

    def _idleTimeout(self) -> float:
        timeOut: Optional[float] = getattr(self.site, "timeOut", None)
        return timeOut or self.limits.idleTimeout

    # -- sending ------------------------------------------------------------------------

    def _scheduleFlush(self) -> None:
        if not self._flushScheduled and not self._lost:
            self._flushScheduled = True
            self._callSoon(self._flush)

    def _flush(self) -> None:
        """
        Send what the streams wrote, as flow control allows, and what the
        state machine has to say.
        """
        self._flushScheduled = False
        if self._lost:
            return
        if not self._closing:
            dirty = self._dirty
            if dirty:
                self._dirty = []
                self._dirtySet.clear()
                for stream in dirty:
                    if not stream.closed:
                        self._send(stream)
        data = self._h2.data_to_send()
        if self._goAwayPending and not self._closing:
            # Not through the state machine, which sends nothing more once
            # it sent a GOAWAY.
            self._goAwayPending = False
            last = self._lastStreamId or 0
            data += GoAwayFrame(0, last_stream_id=last, error_code=0).serialize()
        if data:
            writeSoon(self.transport, data)
        if self._lastStreamId is not None and not self._streams and not self._closing:
            self._close()

    def _send(self, stream: H2Stream) -> None:
        """
        Send what C{stream} holds, as its window and the connection's
        allow; pause or resume its producer accordingly.
        """
        h2 = self._h2
        streamId = stream.streamId
        try:
            interim = stream.interim
            if interim is not None:
                stream.interim = None
                for informational in interim:
                    h2.send_headers(streamId, informational)
            head = stream.head
            if head is not None:
                stream.head = None
                end = stream.ended and not stream.pendingSize
                h2.send_headers(streamId, head, end_stream=end)
                if end:
                    stream.endSent = True
            if stream.pendingSize and not self.writeBlocked:
                self._sendData(stream)
            if stream.ended and not stream.endSent and not stream.pendingSize:
                h2.end_stream(streamId)
                stream.endSent = True
        except (ProtocolError, StreamClosedError) as e:
            log.info(
                "HTTP/2 stream {stream} of {peer} could not send its answer: {error}",
                stream=streamId,
                peer=str(self.addresses[0]),
                error=str(e),
            )
            self.resetStream(stream, _CANCEL, connectionLostReason(str(e)))
            return
        if stream.endSent:
            self._answered(stream)
            return
        if stream.pendingSize:
            if not self.writeBlocked and stream.blockedSince is None:
                stream.blockedSince = self.clock.seconds()
                self._armTimer(self.limits.sendTimeout)
            stream.pauseProducer()
        else:
            stream.blockedSince = None
            if not self.writeBlocked:
                stream.resumeProducer()

    def _sendData(self, stream: H2Stream) -> None:
        h2 = self._h2
        streamId = stream.streamId
        window = h2.local_flow_control_window(streamId)
        if window <= 0:
            return
        frame = h2.max_outbound_frame_size
        pending = stream.pending
        while pending and window > 0:
            chunk = pending.popleft()
            size = len(chunk)
            start = 0
            while start < size and window > 0:
                step = min(frame, window, size - start)
                piece = chunk if step == size else chunk[start : start + step]
                start += step
                window -= step
                stream.pendingSize -= step
                last = stream.ended and not stream.pendingSize
                h2.send_data(streamId, piece, end_stream=last)
                if last:
                    stream.endSent = True
            if start < size:
                pending.appendleft(chunk[start:])

    def _answered(self, stream: H2Stream) -> None:
        """
        C{stream}'s answer was sent whole (END_STREAM).
        """
        stream.blockedSince = None
        if not stream.remoteDone:
            # Answered before the client sent all of its body: the rest is
            # not needed (RFC 9113 8.1: RST_STREAM NO_ERROR).
            stream.dropBody = True
            body = stream.body
            if body is not None:
                stream.body = None
                body.fail(Failure(RequestBodyError(400, "answered before the body arrived")))
            try:
                self._h2.reset_stream(stream.streamId, _NO_ERROR)
            except (ProtocolError, StreamClosedError):
                pass
        self._forget(stream)

    # -- the transport's producer ---------------------------------------------------------

    def pauseProducing(self) -> None:
        """
        The send buffer is full: pause every answer's producer, stop
        reading from the client, for L{HTTPLimits.sendTimeout} seconds
        without progress at most.
        """
        if self.writeBlocked:
            return
        self.writeBlocked = True
        if self._sendStalledAt is None:
            self._sendStalledAt = self.clock.seconds()
            self._armTimer(self.limits.sendTimeout)
        for stream in self._streams.values():
            stream.pauseProducer()
        if not self._readPaused and not self._closing:
            self._readPaused = True
            self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        if not self.writeBlocked:
            return
        self.writeBlocked = False
        self._sendStalledAt = None
        for stream in list(self._streams.values()):
            if stream.pendingSize or stream.head is not None:
                self.streamWrote(stream)
            else:
                stream.resumeProducer()
        if self._readPaused:
            self._readPaused = False
            self.transport.resumeProducing()

    def stopProducing(self) -> None:
        pass

    # -- going away --------------------------------------------------------------------

    def goAway(self) -> None:
        """
        Go away gracefully: C{GOAWAY} naming the last stream taken (after
        the answers of this turn); the streams up to it are answered, later
        ones refused, and the connection closes once they are over.
        """
        if self._lastStreamId is not None or self._closing:
            return
        self._lastStreamId = self._h2.highest_inbound_stream_id
        self._goAwayPending = True
        self._scheduleFlush()

    def _close(self) -> None:
        """
        Close once what was written is sent (cut if that takes too long).
        """
        if self._closing:
            return
        self._closing = True
        transport = self.transport
        if self._readPaused:
            self._readPaused = False
            transport.resumeProducing()
        transport.loseConnection()
        self._abortingCall = self.clock.callLater(_ABORT_TIMEOUT, self._abort)

    def _abort(self) -> None:
        self._abortingCall = None
        transport = self.transport
        if transport is not None:
            transport.abortConnection()

    def _goAwayNow(self, code: int, reason: str) -> None:
        """
        End the connection now: C{GOAWAY code}, every stream lost.
        """
        if self._closing:
            return
        try:
            self._h2.close_connection(error_code=code, additional_data=reason.encode("ascii"))
        except ProtocolError:
            pass
        data = self._h2.data_to_send()
        if data:
            writeSoon(self.transport, data)
        streams, self._streams = self._streams, {}
        self._receiving.clear()
        failure = connectionLostReason(reason)
        for stream in streams.values():
            stream.lost(failure)
        self._close()

    def _flood(self, reason: str) -> None:
        log.warn(
            "HTTP/2 client {peer} flooded its connection ({reason}): GOAWAY ENHANCE_YOUR_CALM",
            peer=str(self.addresses[0]),
            reason=reason,
        )
        if self._count is not None:
            self._count("floods")
        self._goAwayNow(_ENHANCE_YOUR_CALM, reason)

    def _protocolError(self, error: ProtocolError) -> None:
        log.info(
            "HTTP/2 client {peer} broke the protocol: {error}",
            peer=str(self.addresses[0]),
            error=str(error),
        )
        # The state machine has its GOAWAY to send already.
        code = getattr(error, "error_code", None)
        if code == ErrorCodes.ENHANCE_YOUR_CALM and self._count is not None:
            self._count("floods")
        self._goAwayNow(int(code) if code is not None else 1, str(error)[:100])

    # -- timers ------------------------------------------------------------------------

    def _armTimer(self, seconds: float) -> None:
        """
        Make sure the connection's timer fires within C{seconds}.
        """
        timer = self._timer
        if timer is None:
            self._timer = self.clock.callLater(seconds, self._timerFired)
        elif timer.getTime() > self.clock.seconds() + seconds:
            timer.reset(seconds)

    def _timerFired(self) -> None:
        """
        Act on every deadline that passed, and wait for the next one.
        """
        self._timer = None
        if self._closing:
            return
        limits = self.limits
        now = self.clock.seconds()
        left: List[float] = []
        stalled = self._sendStalledAt
        if stalled is not None:
            if now - stalled >= limits.sendTimeout:
                self._timeOutSend()
                return
            left.append(stalled + limits.sendTimeout - now)
        blockSince = self._guard.headerBlockSince
        if blockSince is not None:
            if now - blockSince >= limits.headerTimeout:
                self._timeOut("request head not received in time")
                return
            left.append(blockSince + limits.headerTimeout - now)
        elif not self._streams:
            if self._requests == 0:
                since = self._startedAt
                timeout = limits.headerTimeout
            else:
                since = self._idleSince if self._idleSince is not None else now
                timeout = self._idleTimeout()
            if now - since >= timeout:
                self._timeOut("idle" if self._requests else "no request received in time")
                return
            left.append(since + timeout - now)
        for stream in list(self._receiving):
            deadline = stream.bodyStartedAt + limits.bodyTimeout + stream.bodyPausedFor
            if limits.minBodyRate:
                deadline += stream.bodyReceived / limits.minBodyRate
            if stream.bodyPaused and stream.bodyPausedAt is not None:
                deadline += now - stream.bodyPausedAt
            if deadline <= now:
                self._refuseBody(stream, 408, "request body not received in time")
            else:
                left.append(deadline - now)
        for stream in list(self._streams.values()):
            blocked = stream.blockedSince
            if blocked is None:
                continue
            if now - blocked >= limits.sendTimeout:
                self._timeOutStream(stream)
            else:
                left.append(blocked + limits.sendTimeout - now)
        if left:
            # (A deadline armed meanwhile, an idle connection's, is kept if
            # sooner.)
            self._armTimer(min(left))

    def _timeOut(self, why: str) -> None:
        log.info("HTTP/2 connection of {peer} closed: {why}", peer=str(self.addresses[0]), why=why)
        self._goAwayNow(_NO_ERROR, why)

    def _timeOutSend(self) -> None:
        """
        Cut a client that took nothing of its answers for too long.
        """
        log.info(
            "cut off {peer}: it read nothing of its answers for {seconds} seconds",
            peer=str(self.addresses[0]),
            seconds=self.limits.sendTimeout,
        )
        if self._countSendTimeout is not None:
            self._countSendTimeout()
        streams, self._streams = self._streams, {}
        self._closing = True
        failure = connectionLostReason("send timeout")
        for stream in streams.values():
            stream.lost(failure)
        self.transport.abortConnection()

    def _timeOutStream(self, stream: H2Stream) -> None:
        """
        Reset a stream whose window the client left shut for too long.
        """
        log.info(
            "HTTP/2 stream {stream} of {peer} reset: its window stayed shut {seconds} seconds",
            stream=stream.streamId,
            peer=str(self.addresses[0]),
            seconds=self.limits.sendTimeout,
        )
        if self._countSendTimeout is not None:
            self._countSendTimeout()
        self.resetStream(stream, _CANCEL, connectionLostReason("send timeout"))


_HANDLERS: Dict[type, Callable[[H2ServerConnection, Any], None]] = {
    RequestReceived: H2ServerConnection._requestReceived,
    DataReceived: H2ServerConnection._dataReceived,
    StreamEnded: H2ServerConnection._streamEnded,
    StreamReset: H2ServerConnection._streamReset,
    WindowUpdated: H2ServerConnection._windowUpdated,
    RemoteSettingsChanged: H2ServerConnection._settingsChanged,
    ConnectionTerminated: H2ServerConnection._connectionTerminated,
}
