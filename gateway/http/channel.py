"""
The gateway's own HTTP/1.1 server channel for C{twisted.web} requests: a
lean replacement of L{twisted.web.http.HTTPChannel} with the limits,
timeouts and strict parsing a front door needs.

A gateway parses every request before any backend sees it, and a backend
must never be able to read a request differently from the gateway
(request smuggling), so the request head is parsed strictly here:

  - request line: three parts separated by single spaces, a method token,
    a target of visible ASCII, C{HTTP/1.0} or C{HTTP/1.1}; otherwise 400
    (505 for another well-formed version, 501 for C{CONNECT}); longer than
    L{HTTPLimits.maxRequestLineLength}: 414;
  - headers: C{name: value} with a token name (no space before the colon),
    no control characters in the value, no obsolete line folding; one
    C{Host} (required in HTTP/1.1); otherwise 400; more than
    L{HTTPLimits.maxHeaderCount} headers or more than
    L{HTTPLimits.maxHeadersSize} bytes of head: 431;
  - framing: C{Content-Length} once, digits only; C{Transfer-Encoding}
    exactly C{chunked}, only in HTTP/1.1, never with C{Content-Length};
    anything else (C{xchunked}, C{chunked, identity}, a second header, ...)
    is 400, so a request is never forwarded with a framing two parsers could
    read differently;
  - path: with L{HTTPLimits.rejectAmbiguousPaths}, a path with a dot segment
    (also percent-encoded), an empty segment (C{//}), an encoded slash or
    backslash (C{%2F}, C{%5C}), a backslash, an encoded NUL or a malformed
    percent escape is 400: a backend that normalises such a path would
    otherwise serve another path than the one the gateway routed;
  - body: larger than the limit of the request's route (see
    L{LimitedSite.bodyLimitFor}) or than L{HTTPLimits.maxBodySize}: 413, at
    once when C{Content-Length} says so (the body is never read), as soon
    as a chunk size takes a chunked body past it; a chunked body is decoded
    strictly (L{gateway.http.chunked}): a malformed chunk or trailer line is
    400 as soon as its bytes show it, trailers over
    L{HTTPLimits.maxHeadersSize} bytes 431.

And slow clients are cut off: a request head must arrive within
L{HTTPLimits.headerTimeout} seconds (of the connection, or of the first byte
of a later request on a kept-alive connection), a body within
L{HTTPLimits.bodyTimeout} seconds of its head, plus a second for every
L{HTTPLimits.minBodyRate} bytes received (408 otherwise), and a
kept-alive connection idle for L{HTTPLimits.idleTimeout} seconds is closed.
A client that stops reading is cut off too: when it takes no byte of its
answer for L{HTTPLimits.sendTimeout} seconds (the send buffer stays full,
or the last bytes of a closing connection wait), its connection is
aborted, which stops the answer's producer (the upstream connection), and
the site's C{stats} count it (C{countSendTimeout}).  Every timer runs on
the site's reactor, so tests drive them with a
L{twisted.internet.task.Clock}.

Every refusal is a small JSON answer, C{{"error": "..."}}, with
C{Connection: close}; the connection is then half-closed and what the client
still sends is read and dropped for L{GatewayHTTPChannel.lingerTimeout}
seconds, so that a client still sending its body reads the answer instead
of a connection reset.

A request answered C{101 Switching Protocols} (a WebSocket handshake the
proxy relays) hands the connection over for good:
L{GatewayHTTPChannel.switchProtocols} writes the 101 head and gives the
transport to another protocol (a L{gateway.http.tunnel.Tunnel}'s side), to
which every byte and the client's half-close then go.

Use L{LimitedSite} (or set C{protocol = GatewayHTTPChannel} and a C{limits}
attribute on a L{twisted.web.server.Site}).  The channel speaks HTTP/1.1
only: it does not offer HTTP/2 through ALPN, which would bypass these
checks.
"""

from __future__ import annotations

import json
import re
from typing import (
    Any,
    Callable,
    ClassVar,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
    cast,
)
from urllib.parse import unquote_to_bytes

from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IDelayedCall,
    IHalfCloseableProtocol,
    IProducer,
    IProtocol,
    IPullProducer,
    IPushProducer,
    IReactorTime,
    ISSLTransport,
    ITCPTransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.http_headers import Headers
from twisted.web.iweb import INonQueuedRequestFactory
from zope.interface import alsoProvides, implementer

from gateway.http.bodystream import BodyStream, RequestBodyError
from gateway.http.chunked import ChunkedDecoder, ChunkedError
from gateway.http.headers import headerKey, rawHeadersOf
from gateway.http.status import PhrasedRequest, reasonPhrase
from gateway.http.writesoon import unsentBytes, writeSoon
from gateway.model.limits import HTTPLimits

log = Logger()

__all__ = [
    "BodyLimitFor",
    "GatewayHTTPChannel",
    "ambiguousPath",
]

#: C{bodyLimitFor(method, host, path)}: the body limit of the route a request
#: head names, or L{None} for the site's default.  C{host} is the raw
#: C{Host} header (or L{None}), C{path} the raw path without its query.
BodyLimitFor = Callable[[bytes, Optional[bytes], bytes], Optional[int]]


_COMMON_METHODS = frozenset([b"GET", b"HEAD", b"POST", b"PUT", b"PATCH", b"DELETE", b"OPTIONS"])


_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")


_VERSION = re.compile(rb"HTTP/[0-9]\.[0-9]\Z")


_HOST = re.compile(rb"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(:[0-9]*)?\Z")


_ABSOLUTE = re.compile(rb"[Hh][Tt][Tt][Pp][Ss]?://")


#: Bytes a request target may not hold: controls, space, DEL and non-ASCII.
_NOT_IN_TARGET = bytes(list(range(0x21)) + list(range(0x7F, 0x100)))


#: Bytes a header value may not hold: controls but HTAB, and DEL.
_NOT_IN_VALUE = bytes([c for c in range(0x20) if c != 0x09] + [0x7F])


_HEX = frozenset(b"0123456789abcdefABCDEF")


#: Header names that, spelt with C{_} for C{-}, some backends (CGI, WSGI)
#: would take for these: refused, or they could override what the gateway
#: sets or checks.
_UNDERSCORE_LOOKALIKES = frozenset(
    [
        b"content-length",
        b"transfer-encoding",
        b"host",
        b"connection",
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"x-forwarded-proto",
        b"x-real-ip",
    ]
)


class _Refused(Exception):
    """
    A request is refused with C{code} and C{message}.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def ambiguousPath(path: bytes) -> Optional[str]:
    """
    Tell whether a raw request path could mean another path to a backend
    than to the gateway's router.

    @param path: the path of a request target, percent-encoded, without its
        query.
    @return: why the path is ambiguous, or L{None} when it is not: a
        backslash, a malformed percent escape, an encoded slash, backslash
        or NUL, an empty segment (C{//}, but a trailing slash is fine) or a
        dot segment (C{.}, C{..}, also percent-encoded in any case, also
        followed by C{;} path parameters).
    """
    # The common case, decided without splitting.  (Bytes are looked for
    # as ints, C{0x25 in path}: a memchr, where a one-byte bytes needle
    # costs several times as much on CPython.)
    if 0x25 not in path and 0x5C not in path and path.find(b"//") < 0 and path.find(b"/.") < 0:
        return None
    if b"\\" in path:
        return "backslash in path"
    if b"%" in path:
        parts = path.split(b"%")
        for part in parts[1:]:
            if len(part) < 2 or part[0] not in _HEX or part[1] not in _HEX:
                return "malformed percent-encoding in path"
            escaped = part[:2].lower()
            if escaped in (b"2f", b"5c"):
                return "encoded slash or backslash in path"
            if escaped == b"00":
                return "encoded NUL in path"
    segments = path.split(b"/")
    last = len(segments) - 1
    for i in range(1, len(segments)):
        segment = segments[i]
        if not segment:
            if i != last:
                return "empty segment (//) in path"
            continue
        if b"." in segment or b"%" in segment:
            # "..;x" is ".." to servers that strip path parameters (Tomcat).
            if unquote_to_bytes(segment.split(b";", 1)[0]) in (b".", b".."):
                return "dot segment in path"
    return None


#: Lines shorter than this are kept in L{_LINES} and L{_REQUEST_LINES} once
#: parsed: a client cannot fill them with large lines.
_CACHED_LINE = 256


#: How many lines L{_LINES} and each of L{_REQUEST_LINES} keep; emptied when
#: full (lines that vary, such as ids and dates, fill them now and then).
_MAX_LINES = 1024


#: What a request line parses into: C{(method, target, version, authority)}
#: (see L{_parseRequestLine}).
_RequestLine = Tuple[bytes, bytes, bytes, Optional[bytes]]


#: Request line -> L{_RequestLine}, one dict for each value of
#: C{rejectAmbiguousPaths} (index 0: false, 1: true): a client asks for the
#: same few targets again and again.  Only lines that were accepted are
#: kept: the result is a function of the line alone.
_REQUEST_LINES: Tuple[Dict[bytes, _RequestLine], ...] = ({}, {})


def _parseRequestLine(line: bytes, checkPath: bool) -> _RequestLine:
    """
    @return: C{(method, target, version, authority)}: a target in
        absolute form (C{http://host/path?query}, RFC 9112 3.2.2) is given
        in origin form (C{/path?query}), and its C{host[:port]} as
        C{authority}, which stands for the C{Host} header; C{authority} is
        L{None} for the other forms.
    @raise _Refused: when the line is malformed or asks for what the
        gateway does not serve.
    """
    known = _REQUEST_LINES[checkPath]
    parsed = known.get(line)
    if parsed is None:
        parsed = _checkRequestLine(line, checkPath)
        _keepLine(known, line, parsed)
    return parsed


def _keepLine(known: Dict[bytes, Any], line: bytes, parsed: Any) -> None:
    """
    Keep what an accepted C{line} parsed into in the bounded cache
    C{known} (L{_REQUEST_LINES}, L{_LINES}): only short lines, and the cache
    emptied when full.
    """
    if len(line) < _CACHED_LINE:
        if len(known) >= _MAX_LINES:
            known.clear()
        known[line] = parsed


def _checkRequestLine(line: bytes, checkPath: bool) -> _RequestLine:
    """
    L{_parseRequestLine}, every time.
    """
    parts = line.split(b" ")
    if len(parts) != 3:
        raise _Refused(400, "malformed request line")
    method, target, version = parts
    if method not in _COMMON_METHODS and not _TOKEN.match(method):
        raise _Refused(400, "invalid method")
    if version != b"HTTP/1.1" and version != b"HTTP/1.0":
        if _VERSION.match(version):
            raise _Refused(505, "only HTTP/1.0 and HTTP/1.1 are supported")
        raise _Refused(400, "malformed HTTP version")
    if not target or len(target.translate(None, _NOT_IN_TARGET)) != len(target):
        raise _Refused(400, "invalid character in the request target")
    if 0x23 in target:  # "#"
        raise _Refused(400, "a request target has no fragment")
    if method == b"CONNECT":
        raise _Refused(501, "CONNECT is not supported")
    authority = None
    if target[0:1] != b"/":
        if target == b"*":
            if method != b"OPTIONS":
                raise _Refused(400, "the * target is only for OPTIONS")
            return method, target, version, None
        absolute = _ABSOLUTE.match(target)
        if absolute is None:
            raise _Refused(400, "the request target must be a path")
        target, authority = _originForm(target[absolute.end() :])
    if checkPath:
        reason = ambiguousPath(target.split(b"?", 1)[0])
        if reason is not None:
            raise _Refused(400, reason)
    return method, target, version, authority


def _originForm(rest: bytes) -> Tuple[bytes, bytes]:
    """
    @param rest: an absolute-form target after its C{http://}.
    @return: C{(target in origin form, authority)}.
    @raise _Refused: when the authority is not a valid host (with a port),
        or holds user information (RFC 9110 4.2.4).
    """
    end = len(rest)
    for separator in (0x2F, 0x3F):  # "/", "?"
        at = rest.find(separator)
        if 0 <= at < end:
            end = at
    authority, target = rest[:end], rest[end:]
    if not authority or authority[0] == 0x3A or 0x40 in authority or not _HOST.match(authority):
        raise _Refused(400, "invalid host in the request target")
    if target[0:1] != b"/":
        target = b"/" + target
    return target, authority


def _connectionTokens(values: Optional[Sequence[bytes]]) -> List[bytes]:
    if not values:
        return []
    return [t.strip(b" \t").lower() for v in values for t in v.split(b",")]


#: The headers that frame a request, and where L{_parseHeaders} keeps them.
_FRAMING = {b"content-length": 0, b"transfer-encoding": 1, b"host": 2}


#: Header line -> C{((name, value), kind)}: the kind is where
#: L{_parseHeaders} keeps a framing header's value (L{_FRAMING}), -1 for any
#: other.  A client sends most of its lines (C{Host}, C{User-Agent},
#: C{Accept}, ...) the same on every request.  Only lines that were accepted
#: are kept: the result is a function of the line alone (what is checked
#: across lines, such as a second C{Host}, is checked on every head).
_LINES: Dict[bytes, Tuple[Tuple[bytes, bytes], int]] = {}


def _parseHeaderLine(line: bytes) -> Tuple[Tuple[bytes, bytes], int]:
    """
    Parse and check one header line, alone.

    @return: C{((name, value), kind)}, as L{_LINES} keeps them.
    @raise _Refused: when the line is malformed.
    """
    name, colon, value = line.partition(b":")
    if not colon or not _TOKEN.match(name):
        if line[:1] in (b" ", b"\t"):
            raise _Refused(400, "obsolete header line folding is not accepted")
        raise _Refused(400, "malformed header line")
    value = value.strip(b" \t")
    if value.translate(None, _NOT_IN_VALUE) != value:
        raise _Refused(400, "invalid character in a header value")
    lower = name.lower()
    kind = _FRAMING.get(lower)
    if kind is None:
        if 0x5F in lower and lower.replace(b"_", b"-") in _UNDERSCORE_LOOKALIKES:  # "_"
            raise _Refused(400, "header name with an underscore for a dash")
        kind = -1
    return (name, value), kind


def _parseHeaders(
    lines: List[bytes], version: bytes
) -> Tuple[List[Tuple[bytes, bytes]], Optional[int], bool, Optional[bytes]]:
    """
    Parse and check the header lines of one request head (C{lines[0]} is
    its request line), alone and as a whole.

    @return: C{(headers, length, chunked, host)}: the C{(name, value)}
        pairs in order, the C{Content-Length} or L{None}, whether the body
        is chunked, and the C{Host} header or L{None}.
    @raise _Refused: when a line is malformed, the framing is ambiguous or
        the Host header missing, repeated or invalid.
    """
    headers = []
    framing: List[List[bytes]] = [[], [], []]
    known = _LINES
    for i in range(1, len(lines)):
        line = lines[i]
        parsed = known.get(line)
        if parsed is None:
            parsed = _parseHeaderLine(line)
            _keepLine(known, line, parsed)
        field, kind = parsed
        headers.append(field)
        if kind >= 0:
            framing[kind].append(field[1])
    lengths, encodings, hosts = framing
    host = None
    if len(hosts) > 1:
        raise _Refused(400, "more than one Host header")
    if hosts:
        host = hosts[0]
        if not _HOST.match(host):
            raise _Refused(400, "invalid Host header")
    elif version == b"HTTP/1.1":
        raise _Refused(400, "an HTTP/1.1 request needs a Host header")
    if encodings:
        if version != b"HTTP/1.1":
            raise _Refused(400, "Transfer-Encoding in an HTTP/1.0 request")
        if lengths:
            raise _Refused(400, "both Content-Length and Transfer-Encoding")
        if _connectionTokens(encodings) != [b"chunked"]:
            raise _Refused(400, "unsupported Transfer-Encoding (only chunked is accepted)")
        return headers, None, True, host
    if lengths:
        if len(lengths) > 1:
            raise _Refused(400, "more than one Content-Length")
        if not lengths[0].isdigit():
            raise _Refused(400, "invalid Content-Length")
        return headers, int(lengths[0]), False, host
    return headers, None, False, host


#: Request factory -> whether it provides L{INonQueuedRequestFactory}
#: (asked once per factory, not once per request).
_nonQueued: Dict[Callable[..., http.Request], bool] = {}


#: What the channel is doing (L{GatewayHTTPChannel._state}).
_HEAD = 0  # waiting for (the rest of) a request head


_BODY = 1  # receiving a request body


_BUSY = 2  # a request is being answered; what arrives is buffered


_DONE = 3  # refused or closing: what arrives is dropped
_DRAIN = 4  # a streamed body failed: what arrives is dropped until the answer is out
_SWITCHED = 5  # answered 101: the connection speaks another protocol (switchProtocols)


_EXPECT = headerKey(b"expect")


_CONNECTION = headerKey(b"connection")


_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


#: Bytes of pipelined requests buffered while a request is answered, before
#: the channel stops reading from the client.
_EAGER_READ = 0x4000


@implementer(IPushProducer, IConsumer)
class GatewayHTTPChannel(Protocol):
    """
    An HTTP/1.1 server channel for L{twisted.web.server.Request}s that
    parses request heads strictly, enforces L{HTTPLimits} and answers every
    refusal with a JSON error.

    It takes its limits from its site's C{limits} attribute (else
    L{limits}), the body limit of a route from the site's C{bodyLimitFor}
    (see L{LimitedSite}), and extra fields of its error bodies from the
    site's C{errorFields}.

    It is a lean replacement of L{http.HTTPChannel}, with the same interface
    towards its requests (C{requestDone}, C{write}, C{writeHeaders},
    C{registerProducer}, C{getPeer}, ...), that costs less per request:

      - a request head is parsed whole, once its blank line has arrived,
        instead of line by line: one pass over a few lines is cheaper than
        a callback per line, and nothing of a request is acted on before
        all of it is known;
      - its fields go straight into the request's L{Headers} (they were
        checked while parsed);
      - one timer per connection serves every deadline (head, body, idle,
        send):
        it is not cancelled and re-armed per request, but checks, when it
        fires, what the connection is waiting for and since when, and waits
        again if need be;
      - a C{Content-Length} body is counted here, without a decoder object.

    Requests are answered one at a time, in order: what a client sends
    while a request is answered is buffered (up to L{_EAGER_READ} bytes,
    then the channel stops reading) and parsed once the answer is
    finished.  When the client does not read its answers, the channel stops
    reading its requests, and pauses the answer's producer.

    @cvar limits: the limits when the site has none.
    @cvar lingerTimeout: seconds a refused connection keeps reading (and
        dropping) what the client still sends after the answer, before it is
        cut.
    @cvar abortTimeout: seconds a connection closed for idleness has to
        close cleanly before it is cut.
    @ivar requests: the request being received or answered, if any (a list,
        as in L{http.HTTPChannel}).
    """

    limits = HTTPLimits()
    lingerTimeout = 2.0
    abortTimeout: Optional[float] = 15
    requestFactory: Callable[..., http.Request] = PhrasedRequest
    site: Optional[server.Site] = None
    timeOut: Optional[float] = None
    #: The class whose write methods send to the transport as they are
    #: (L{gateway.http.request}); set below, once the class exists.
    plainWrites: ClassVar[type]

    # An ITransport that is also an IConsumer, an IPushProducer and, but for
    # tests' transports, an ITCPTransport: no one interface says it all.
    transport: Any

    persistent = True
    _state = _HEAD
    _buffer = b""
    _scanFrom = 0
    _leadingEmptyLine = False
    _busyReceiving = False
    _readPaused = False
    _writeBlocked = False
    _transportPaused = False
    _producer: Optional[IPushProducer] = None
    _producerStreaming = False
    _registered = False
    _timer: Optional[IDelayedCall] = None
    _headStartedAt: Optional[float] = None
    _idleSince: Optional[float] = None
    _bodyStartedAt = 0.0
    _bodyRemaining = 0
    _bodyLimit: Optional[int] = None
    _bodyReceived = 0
    _chunked: Optional[ChunkedDecoder] = None
    _command = b""
    _path = b""
    _version = b""
    _bodyLimitFor: Optional[BodyLimitFor] = None
    _errorFields: Mapping[str, object] = {}
    _clock: IReactorTime
    _abortingCall: Optional[IDelayedCall] = None
    _written = 0
    _sendStalledAt: Optional[float] = None
    _sentMark: Optional[int] = None
    _streamBodies = False
    _stream: Optional[BodyStream] = None
    _dispatchPending = False
    _bodyPaused = False
    _bodyPausedAt: Optional[float] = None
    _bodyPausedFor = 0.0
    _switchedTo: Optional[IProtocol] = None

    def __init__(self) -> None:
        self.requests: List[http.Request] = []

    # -- connection -----------------------------------------------------------

    def connectionMade(self) -> None:
        site = self.site
        limits = getattr(site, "limits", None)
        if limits is not None:
            self.limits = limits
        self._bodyLimitFor = getattr(site, "bodyLimitFor", None)
        self._errorFields = getattr(site, "errorFields", None) or {}
        self._streamBodies = bool(getattr(site, "streamBodies", False))
        # The site's reactor (a LimitedSite is always given one): timeouts
        # run on the clock the tests control.
        assert site is not None, "a channel is built by its site"
        clock: IReactorTime = site.reactor
        self._clock = clock
        transport = self.transport
        if ITCPTransport.providedBy(transport):
            transport.setTcpNoDelay(True)
        canPause: bool = IPushProducer.providedBy(transport)
        if canPause:
            # The channel is its transport's producer: a client that does
            # not read its answers pauses the answer's producer, and the
            # reading of its requests.
            transport.registerProducer(self, True)
            self._registered = True
        # A new connection has headerTimeout seconds for its first request.
        self._headStartedAt = clock.seconds()
        self._armTimer(self.limits.headerTimeout)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        switchedTo = self._switchedTo
        if switchedTo is not None:
            self._switchedTo = None
            self._state = _DONE
            switchedTo.connectionLost(reason)
            return
        self._close()
        stream = self._stream
        if stream is not None:
            self._stream = None
            stream.fail(Failure(RequestBodyError(400, "the client went away mid-body")))
        aborting = self._abortingCall
        if aborting is not None:
            self._abortingCall = None
            if aborting.active():
                aborting.cancel()
        requests, self.requests = self.requests, []
        for request in requests:
            request.connectionLost(reason)

    def dataReceived(self, data: bytes) -> None:
        """
        Parse request heads and bodies; buffer what arrives while a request
        is answered.
        """
        state = self._state
        if state >= _DONE:  # _DONE, _DRAIN, _SWITCHED
            switchedTo = self._switchedTo
            if switchedTo is not None:
                if self._busyReceiving:
                    # (Called back while the head that switched is being
                    # handled: after what followed it.)
                    self._buffer += data
                else:
                    switchedTo.dataReceived(data)
            return
        if state == _BUSY or self._busyReceiving:
            # Pipelined, or called back from within the loop below: kept
            # for when the answer is finished (or for the loop).
            self._buffer += data
            if state == _BUSY and len(self._buffer) > _EAGER_READ and not self._readPaused:
                self._readPaused = True
                self._updateReading()
            return
        self._busyReceiving = True
        try:
            if self._buffer:
                data = self._buffer + data
                self._buffer = b""
            self._receive(data)
        finally:
            self._busyReceiving = False
        if self._dispatchPending:
            # A streamed body is still arriving: answer its request now
            # (what arrived of the body is the stream's already).
            self._dispatch()
        if self._state == _HEAD and self._buffer and self._headStartedAt is None:
            # Part of a head is waiting: it has headerTimeout seconds.
            self._headStartedAt = self._clock.seconds()
            self._armTimer(self.limits.headerTimeout)

    def _receive(self, data: bytes) -> None:
        """
        Consume C{data}, and what is buffered meanwhile, until more is
        needed or a request is being answered.
        """
        while data:
            state = self._state
            if state == _HEAD:
                try:
                    rest = self._parseHead(data)
                except _Refused as e:
                    self._reject(e.code, e.message)
                    return
                if rest is None:
                    return
                data = rest
            elif state == _BODY:
                data = self._bodyData(data)
            elif state == _BUSY:
                # Older than what arrived meanwhile.
                self._buffer = data + self._buffer
                return
            else:
                switchedTo = self._switchedTo
                if switchedTo is not None:
                    # Switched while its head was handled: what followed is
                    # the new protocol's.
                    data += self._buffer
                    self._buffer = b""
                    switchedTo.dataReceived(data)
                return
            if self._buffer:
                # Arrived meanwhile (a callback wrote to the channel), or
                # what followed a chunked body.
                data += self._buffer
                self._buffer = b""

    # -- the head ---------------------------------------------------------------

    def _parseHead(self, buffer: bytes) -> Optional[bytes]:
        """
        Parse the request head at the start of C{buffer}, if it is all
        there, and start its request.

        @return: what follows the head, or L{None} when more data is needed
            (then C{buffer} is kept).
        @raise _Refused: when the head is refused.
        """
        limits = self.limits
        if buffer[:2] == b"\r\n" and not self._leadingEmptyLine:
            # RFC 9112 2.2: ignore an empty line before a request line (some
            # clients send CRLF after a POST body).
            self._leadingEmptyLine = True
            buffer = buffer[2:]
            if not buffer:
                return None
        end = buffer.find(b"\r\n\r\n", self._scanFrom)
        if end == -1:
            if (
                len(buffer) > limits.maxRequestLineLength + 1
                and buffer.find(b"\r\n", 0, limits.maxRequestLineLength + 2) == -1
            ):
                raise _Refused(414, "request line too long")
            if len(buffer) > limits.maxHeadersSize:
                raise _Refused(431, "request header fields too large")
            self._scanFrom = max(0, len(buffer) - 3)
            self._buffer = buffer
            return None
        lines = buffer[:end].split(b"\r\n")
        if len(lines[0]) > limits.maxRequestLineLength:
            raise _Refused(414, "request line too long")
        if end + 4 > limits.maxHeadersSize:
            raise _Refused(431, "request header fields too large")
        self._scanFrom = 0
        method, target, version, authority = _parseRequestLine(
            lines[0], limits.rejectAmbiguousPaths
        )
        if len(lines) > limits.maxHeaderCount + 1:
            raise _Refused(431, "too many header fields")
        headers, length, chunked, host = _parseHeaders(lines, version)
        if authority is not None:
            # RFC 9112 3.2.2: the target's host, not the Host header.
            host = authority
            headers = [(n, v) for n, v in headers if n.lower() != b"host"]
            headers.append((b"Host", authority))
        self._headStartedAt = None
        self._idleSince = None
        self._leadingEmptyLine = False
        self._request(method, target, version, headers, length, chunked, host)
        return buffer[end + 4 :]

    def _request(
        self,
        method: bytes,
        target: bytes,
        version: bytes,
        headers: List[Tuple[bytes, bytes]],
        length: Optional[int],
        chunked: bool,
        host: Optional[bytes],
    ) -> None:
        """
        Start a request whose head was parsed and checked: make the
        L{Request}, and read its body, if any, or answer it.
        """
        if chunked or length:
            limit = self._limitFor(method, host, target)
            if limit is not None and length is not None and length > limit:
                raise _Refused(413, f"request body larger than {limit} bytes")
        else:
            limit = None
        factory = self.requestFactory
        nonQueued = _nonQueued.get(factory)
        if nonQueued is None:
            nonQueued = INonQueuedRequestFactory.providedBy(factory)
            if len(_nonQueued) < 64:
                _nonQueued[factory] = nonQueued
        if nonQueued:
            request = factory(self)
        else:
            request = factory(self, False)
        self.requests.append(request)
        requestHeaders = request.requestHeaders
        raw = rawHeadersOf(requestHeaders)
        if raw is None:
            add = requestHeaders.addRawHeader
            for name, value in headers:
                add(name, value)
        else:
            for name, value in headers:
                key = headerKey(name)
                values = raw.get(key)
                if values is None:
                    raw[key] = [value]
                else:
                    values.append(value)
        self._command, self._path, self._version = method, target, version
        request.parseCookies()
        self.persistent = self.checkPersistence(request, version)
        # (0 for no body, or one that streams: L{None}, or a large length,
        # would make a temporary file.)
        streamed = self._streamBodies and (chunked or bool(length))
        if streamed or not (chunked or length):
            request.gotLength(0)
        else:
            request.gotLength(None if chunked else length)
        if not (chunked or length):
            self._allContentReceived()
            return
        if version == b"HTTP/1.1":
            if raw is None:
                expect = requestHeaders.getRawHeaders(b"expect")
            else:
                expect = raw.get(_EXPECT)
            if expect and expect[0].lower() == b"100-continue":
                self._written += len(_CONTINUE)
                self.transport.write(_CONTINUE)
        self._bodyLimit = limit
        self._bodyReceived = 0
        self._bodyPausedFor = 0.0
        if streamed:
            # Answered while the body arrives (see dataReceived), the body
            # sent upstream as it comes.
            stream = self._stream = BodyStream(self, None if chunked else length)
            request.bodyStream = stream  # type: ignore[attr-defined]
            self._dispatchPending = True
        if chunked:
            self._chunked = ChunkedDecoder(
                self._bodyChunk, self._chunkedDone, limit, self.limits.maxHeadersSize
            )
        else:
            assert length is not None  # (neither chunked nor 0 nor absent: see above)
            self._chunked = None
            self._bodyRemaining = length
        self._state = _BODY
        self._bodyStartedAt = self._clock.seconds()
        self._armTimer(self.limits.bodyTimeout)

    def _limitFor(self, method: bytes, host: Optional[bytes], target: bytes) -> Optional[int]:
        limit = self.limits.maxBodySize
        if self._bodyLimitFor is None:
            return limit
        try:
            routeLimit = self._bodyLimitFor(method, host, target.split(b"?", 1)[0])
        except Exception:
            log.failure("bodyLimitFor failed; using the default body limit")
            return limit
        return limit if routeLimit is None else routeLimit

    def checkPersistence(self, request: http.Request, version: bytes) -> bool:
        """
        Tell whether the connection stays open after C{request}: in
        HTTP/1.1, unless C{Connection} (a comma-separated list) says
        C{close}, which the answer then says too; never in HTTP/1.0.
        """
        if version != b"HTTP/1.1":
            return False
        headers = request.requestHeaders
        raw = rawHeadersOf(headers)
        if raw is None:
            connection = headers.getRawHeaders(b"connection")
        else:
            connection = raw.get(_CONNECTION)
        if connection and b"close" in _connectionTokens(connection):
            request.responseHeaders.setRawHeaders(b"connection", [b"close"])
            return False
        return True

    # -- the body ---------------------------------------------------------------

    def _bodyData(self, data: bytes) -> bytes:
        """
        Take the body bytes at the start of C{data}.

        @return: what follows the body (or nothing).
        """
        decoder = self._chunked
        if decoder is not None:
            try:
                decoder.dataReceived(data)
            except ChunkedError as e:
                self._reject(e.code, e.message)
            # What follows the body came back through _chunkedDone.
            return b""
        remaining = self._bodyRemaining
        if len(data) < remaining:
            self._bodyRemaining = remaining - len(data)
            self._bodyChunk(data)
            return b""
        self._bodyRemaining = 0
        if remaining:
            self._bodyChunk(data[:remaining])
        if self._state == _BODY:
            self._allContentReceived()
        return data[remaining:]

    def _bodyChunk(self, data: bytes) -> None:
        if self._state != _BODY:
            return
        self._bodyReceived += len(data)
        limit = self._bodyLimit
        if limit is not None and self._bodyReceived > limit:
            self._reject(413, f"request body larger than {limit} bytes")
            return
        stream = self._stream
        if stream is not None:
            stream.feed(data)
            return
        self.requests[-1].handleContentChunk(data)

    def _chunkedDone(self, rest: bytes) -> None:
        if self._state != _BODY:
            return
        self._chunked = None
        self._allContentReceived()
        if rest:
            # Parsed after this answer, or by the loop when it was answered
            # at once.
            self._buffer = rest + self._buffer

    def _allContentReceived(self) -> None:
        """
        The request is complete: answer it.
        """
        self._state = _BUSY
        self._bodyLimit = None
        stream = self._stream
        if stream is not None:
            self._stream = None
            self._bodyPaused = False
            stream.finish()
            if not self._dispatchPending:
                # Being answered already.
                return
        self._dispatch()

    def _dispatch(self) -> None:
        """
        Hand the current request to its resource.
        """
        self._dispatchPending = False
        request = self.requests[-1]
        command, path, version = self._command, self._path, self._version
        self._command = self._path = self._version = b""
        request.requestReceived(command, path, version)

    # -- the answer -------------------------------------------------------------

    def requestDone(self, request: http.Request) -> None:
        """
        Called by C{request} once its answer is finished: close the
        connection, or go on with the next request.
        """
        requests = self.requests
        if not requests or request is not requests[0]:
            raise TypeError(f"{request!r} is not this channel's current request")
        del requests[0]
        if self._state == _DONE or self._state == _SWITCHED:
            return
        if self._state == _BODY or self._state == _DRAIN:
            # Answered before its (streamed) body all arrived: the rest of
            # the body cannot be told from a next request.  Close, reading
            # and dropping what the client still sends for a while, so that
            # it gets its answer rather than a reset.
            stream = self._stream
            if stream is not None:
                self._stream = None
                stream.fail(Failure(RequestBodyError(400, "answered before the body arrived")))
            self._closeLingering()
            return
        self._nextRequest()

    def closesAfterAnswer(self) -> bool:
        """
        Called as an answer's head is about to be written: tell whether the
        connection closes after this answer, which the head then says
        (C{Connection: close}).  It does when the request asked for it, in
        HTTP/1.0, and when the request's body has not all arrived (or
        failed): the rest of it could not be told from a next request, so a
        client that kept the connection for its next request would find it
        closed under it.
        """
        if self._state == _BODY or self._state == _DRAIN:
            self.persistent = False
        return not self.persistent

    def _nextRequest(self) -> None:
        """
        The request was answered: close the connection, or go on with the
        next request.
        """
        if not self.persistent:
            self._state = _DONE
            self._buffer = b""
            self.loseConnection()
            return
        self._state = _HEAD
        if self._readPaused or self._writeBlocked:
            self._readPaused = False
            self._updateReading()
        buffered = self._buffer
        if buffered:
            self._buffer = b""
            self.dataReceived(buffered)
            if self._state != _HEAD or self._buffer:
                return
        # Idle until the next request: idleTimeout seconds.
        self._idleSince = self._clock.seconds()
        self._armTimer(self._idleTimeout())

    def _idleTimeout(self) -> float:
        return self.timeOut or self.limits.idleTimeout

    def write(self, data: bytes) -> None:
        """
        Write (part of) an answer: sent on the reactor's next turn (see
        L{gateway.http.writesoon}).
        """
        self._written += len(data)
        writeSoon(self.transport, data)

    def writeSequence(self, iovec: Iterable[bytes]) -> None:
        data = b"".join(iovec)
        self._written += len(data)
        writeSoon(self.transport, data)

    def writeHeaders(
        self,
        version: bytes,
        code: bytes,
        reason: bytes,
        headers: Union[Headers, Iterable[Tuple[bytes, bytes]]],
    ) -> None:
        """
        Write a response head, as L{http.HTTPChannel.writeHeaders} does.
        """
        if not isinstance(headers, Headers):
            sanitized = Headers()
            for name, value in headers:
                sanitized.addRawHeader(name, value)
            headers = sanitized
        head = [version, b" ", code, b" ", reason, b"\r\n"]
        for name, values in headers.getAllRawHeaders():
            for value in values:
                head.extend((name, b": ", value, b"\r\n"))
        head.append(b"\r\n")
        data = b"".join(head)
        self._written += len(data)
        writeSoon(self.transport, data)

    def getPeer(self) -> IAddress:
        peer: IAddress = self.transport.getPeer()
        return peer

    def getHost(self) -> IAddress:
        host: IAddress = self.transport.getHost()
        return host

    def isSecure(self) -> bool:
        return ISSLTransport(self.transport, None) is not None

    # -- switching protocols (WebSocket: gateway.http.tunnel) ---------------------

    def switchProtocols(self, request: http.Request, protocol: IProtocol) -> None:
        """
        Answer C{request} with its C{101 Switching Protocols} head and hand
        the connection over to C{protocol}: from then on the channel parses
        no HTTP and enforces none of its limits or timeouts.

        The head is the request's C{code_message} and C{responseHeaders}
        (no body framing: none follows); the request is then finished (its
        end hooks run).  C{protocol.makeConnection} gets the connection's
        transport, which no longer has the channel as its producer; then
        C{protocol.dataReceived} gets what the client sent after the
        request head and everything it sends next, C{readConnectionLost}
        its half-close (when C{protocol} provides
        L{IHalfCloseableProtocol}) and C{connectionLost} the end of the
        connection.

        @param request: the request being answered: the connection's only
            one, whose answer has not started, whose body (if any) has all
            arrived.
        @raise RuntimeError: when the request cannot be answered so.
        """
        if (
            self._state != _BUSY
            or not self.requests
            or self.requests[0] is not request
            or len(self.requests) != 1
            or request.startedWriting
        ):
            raise RuntimeError(f"{request!r} cannot switch protocols on this connection")
        transport = self.transport
        timer = self._timer
        if timer is not None:
            self._timer = None
            if timer.active():
                timer.cancel()
        self._state = _SWITCHED
        if self._busyReceiving:
            # Switched while its head is handled: the parsing loop hands
            # the new protocol what followed it, and what came meanwhile.
            buffered = b""
        else:
            buffered, self._buffer = self._buffer, b""
        self.persistent = False
        if self._registered:
            self._registered = False
            transport.unregisterProducer()
        self._readPaused = self._writeBlocked = self._bodyPaused = False
        self.writeHeaders(
            request.clientproto,
            b"101",
            request.code_message,
            request.responseHeaders,
        )
        # Written: finishing adds nothing, and requestDone leaves the
        # channel be (it is no longer parsing).
        request.startedWriting = 1
        request.finish()
        self._switchedTo = protocol
        if IHalfCloseableProtocol.providedBy(protocol):
            # So that the transport reports the client's half-close
            # (readConnectionLost) rather than ending the connection.
            alsoProvides(self, IHalfCloseableProtocol)
        if self._transportPaused:
            # (Before the protocol has it: pausing is the protocol's now.)
            self._transportPaused = False
            transport.resumeProducing()
        protocol.makeConnection(transport)
        if buffered and self._switchedTo is protocol:
            protocol.dataReceived(buffered)

    def readConnectionLost(self) -> None:
        """
        The client half-closed a switched connection (this is called only
        once its protocol is L{IHalfCloseableProtocol}).
        """
        switchedTo = self._switchedTo
        if switchedTo is None:
            self.transport.loseConnection()
        else:
            cast(IHalfCloseableProtocol, switchedTo).readConnectionLost()

    def writeConnectionLost(self) -> None:
        switchedTo = self._switchedTo
        if switchedTo is not None:
            cast(IHalfCloseableProtocol, switchedTo).writeConnectionLost()

    def loseConnection(self) -> None:
        """
        Close the connection once what was written is sent, within
        L{HTTPLimits.sendTimeout} seconds without progress.
        """
        transport = self.transport
        if self._registered:
            self._registered = False
            transport.unregisterProducer()
        unsent = unsentBytes(transport)
        if self._writeBlocked or unsent:
            # The client may never take the rest: the transport would wait
            # for it forever (and no pause or resume comes any more).
            self._sendStalled()
        transport.loseConnection()

    def _respondToBadRequestAndDisconnect(self) -> None:
        # Twisted's own refusals (a malformed form body) get our answer.
        self._reject(400, "malformed request")

    # -- producing ------------------------------------------------------------------

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        """
        Register the producer of the current answer: the channel pauses and
        resumes it as the client reads.
        """
        if self._producer is not None:
            raise RuntimeError(
                f"Cannot register producer {producer}, because producer "
                f"{self._producer} was never unregistered."
            )
        if streaming:
            # (A streaming producer is a push producer: IConsumer says so.)
            push = self._producer = cast(IPushProducer, producer)
            self._producerStreaming = True
            if self._writeBlocked:
                push.pauseProducing()
        else:
            pull = http._PullToPush(cast(IPullProducer, producer), self)
            self._producer = pull
            self._producerStreaming = False
            pull.startStreaming()

    def unregisterProducer(self) -> None:
        producer = self._producer
        if producer is None:
            return
        if not self._producerStreaming:
            cast("http._PullToPush", producer).stopStreaming()
        self._producer = None
        self._producerStreaming = False

    def pauseProducing(self) -> None:
        """
        The transport's buffer is full: pause the answer's producer, and
        stop reading requests, for L{HTTPLimits.sendTimeout} seconds without
        progress at most.
        """
        self._writeBlocked = True
        self._sendStalled()
        if self._producer is not None:
            self._producer.pauseProducing()
        self._updateReading()

    def resumeProducing(self) -> None:
        self._writeBlocked = False
        if self._registered:
            # (Not closing: a closing connection's last bytes keep their
            # deadline.)
            self._sendStalledAt = None
        if self._producer is not None:
            self._producer.resumeProducing()
        self._updateReading()

    def stopProducing(self) -> None:
        if self._producer is not None:
            self._producer.stopProducing()

    def pauseBody(self) -> None:
        """
        A streamed body's consumer does not take what arrives (see
        L{gateway.http.bodystream}): stop reading from the client.  The time
        paused does not count against the client's body deadline.
        """
        if not self._bodyPaused:
            self._bodyPaused = True
            self._bodyPausedAt = self._clock.seconds()
            self._updateReading()

    def resumeBody(self) -> None:
        """
        A streamed body's consumer takes what arrives again.
        """
        if self._bodyPaused:
            self._bodyPaused = False
            if self._bodyPausedAt is not None:
                self._bodyPausedFor += self._clock.seconds() - self._bodyPausedAt
                self._bodyPausedAt = None
            self._updateReading()

    def _updateReading(self) -> None:
        """
        Read from the client unless its answers are not read or too much of
        its pipelined requests waits.
        """
        transport = self.transport
        if transport is None or self._state == _DONE or self._state == _SWITCHED:
            return
        pause = (
            self._readPaused or self._bodyPaused or (self._writeBlocked and self._state != _BUSY)
        )
        if pause != self._transportPaused:
            self._transportPaused = pause
            if pause:
                transport.pauseProducing()
            else:
                transport.resumeProducing()

    # -- timers -----------------------------------------------------------------

    def _close(self) -> None:
        """
        Read no more requests: drop what is buffered, stop the timer.
        """
        self._state = _DONE
        self._buffer = b""
        timer = self._timer
        if timer is not None:
            self._timer = None
            if timer.active():
                timer.cancel()

    def _armTimer(self, seconds: float) -> None:
        """
        Make sure the connection's timer fires within C{seconds}.
        """
        timer = self._timer
        if timer is None:
            self._timer = self._clock.callLater(seconds, self._timerFired)
        elif timer.getTime() > self._clock.seconds() + seconds:
            timer.reset(seconds)

    def _timerFired(self) -> None:
        """
        Act on the deadline of what the connection waits for, or wait for
        it again.
        """
        self._timer = None
        state = self._state
        limits = self.limits
        now = self._clock.seconds()
        left: Optional[float] = None
        if state == _HEAD:
            started = self._headStartedAt
            if started is not None:
                left = started + limits.headerTimeout - now
                if left <= 0:
                    self._reject(408, "request head not received in time")
                    return
            elif self._idleSince is not None:
                left = self._idleSince + self._idleTimeout() - now
                if left <= 0:
                    self._timeOutIdle()
                    return
        elif state == _BODY:
            deadline = self._bodyStartedAt + limits.bodyTimeout + self._bodyPausedFor
            if limits.minBodyRate:
                deadline += self._bodyReceived / limits.minBodyRate
            if self._bodyPaused:
                # Waiting for the upstream, not for the client.
                assert self._bodyPausedAt is not None
                deadline += now - self._bodyPausedAt
            left = deadline - now
            if left <= 0:
                self._reject(408, "request body not received in time")
                return
        # Answering has no deadline of its own (the upstream's bound it), but
        # an answer the client does not take has.
        if self._sendStalledAt is not None:
            sendLeft = self._sendLeft(now)
            if sendLeft is None:
                pass
            elif sendLeft <= 0:
                self._timeOutSend()
                return
            else:
                if self._sentMark is not None:
                    # Look for progress four times per period: a client
                    # that stops is cut within 1.25 sendTimeout.
                    sendLeft = min(sendLeft, limits.sendTimeout / 4)
                if left is None or sendLeft < left:
                    left = sendLeft
        if left is not None:
            self._timer = self._clock.callLater(left, self._timerFired)

    # -- a client that does not read ------------------------------------------

    def _sent(self) -> Optional[int]:
        """
        @return: how many of the bytes written the transport has sent, when
            it says (see L{unsentBytes}).
        """
        unsent = unsentBytes(self.transport)
        return None if unsent is None else self._written - unsent

    def _sendStalled(self) -> None:
        """
        The client is not taking its answer (the send buffer is full, or the
        connection closes with bytes unsent): start the send deadline, unless
        it runs already.
        """
        if self._sendStalledAt is not None:
            return
        self._sendStalledAt = self._clock.seconds()
        # (None: the transport does not say; only a resume is progress.)
        sent = self._sentMark = self._sent()
        timeout = self.limits.sendTimeout
        self._armTimer(timeout if sent is None else timeout / 4)

    def _sendLeft(self, now: float) -> Optional[float]:
        """
        @return: the seconds left before the send deadline, L{None} when it
            no longer applies.  Progress (bytes sent since the last look,
            when the transport says) starts the deadline again.
        """
        sent = self._sent()
        if sent is not None:
            if self._sentMark is None or sent > self._sentMark:
                self._sentMark = sent
                self._sendStalledAt = now
            if sent >= self._written and not self._writeBlocked:
                # Everything was sent.
                self._sendStalledAt = None
                return None
        assert self._sendStalledAt is not None
        return self._sendStalledAt + self.limits.sendTimeout - now

    def _timeOutSend(self) -> None:
        """
        Cut a client that took nothing of its answer for too long: its
        requests learn of it (and stop their producers) through
        C{connectionLost}.
        """
        transport: Any = self.transport
        log.info(
            "cut off {peer}: it read nothing of its answer for {seconds} seconds",
            peer=str(transport.getPeer()),
            seconds=self.limits.sendTimeout,
        )
        self._close()
        stats = getattr(self.site, "stats", None)
        if stats is not None:
            stats.countSendTimeout()
        transport.abortConnection()

    def _timeOutIdle(self) -> None:
        transport = self.transport
        log.info("Timing out client: {peer}", peer=str(transport.getPeer()))
        self._state = _DONE
        if self.abortTimeout is not None:
            self._abortingCall = self._clock.callLater(self.abortTimeout, self.forceAbortClient)
        self.loseConnection()

    def forceAbortClient(self) -> None:
        """
        Cut a connection that did not close in time.
        """
        self._abortingCall = None
        transport = self.transport
        if transport is not None:
            transport.abortConnection()

    # -- refusing ---------------------------------------------------------------

    def _countRejection(self, code: int) -> None:
        counts = getattr(self.site, "rejections", None)
        if counts is not None:
            counts[code] = counts.get(code, 0) + 1

    def _refuseStreamed(self, stream: BodyStream, code: int, message: str) -> None:
        """
        Refuse a streamed body its request is being answered for: the body
        fails, and with it the request sending it upstream, whose answer
        then gives the client C{code} (or, when its answer started already,
        the connection is cut); what the client still sends is dropped, and
        the connection closes after the answer.
        """
        self._countRejection(code)
        self._stream = None
        self._state = _DRAIN
        self.persistent = False
        self._bodyPaused = False
        self._updateReading()
        timer = self._timer
        if timer is not None:
            self._timer = None
            if timer.active():
                timer.cancel()
        request = self.requests[-1] if self.requests else None
        if request is not None and request.startedWriting:
            self._close()
            self.transport.abortConnection()
            return
        # No line in the gateway's own log: one per request (a client can
        # send thousands) in a log written blocking; the access log has it.
        stream.fail(Failure(RequestBodyError(code, message)))

    def _closeLingering(self) -> None:
        """
        Close after the answer, while the client may still send: half-close,
        read and drop what comes for L{lingerTimeout} seconds, then cut.
        """
        self._close()
        transport = self.transport
        if transport is None:
            return
        if self._registered:
            self._registered = False
            transport.unregisterProducer()
        self._bodyPaused = False
        if self._transportPaused:
            self._transportPaused = False
            transport.resumeProducing()
        halfClose = getattr(transport, "loseWriteConnection", None)
        if halfClose is not None and self.lingerTimeout:
            halfClose()
            self._abortingCall = self._clock.callLater(self.lingerTimeout, self.forceAbortClient)
        else:
            transport.loseConnection()

    def _reject(self, code: int, message: str) -> None:
        """
        Answer C{code} with a JSON error and C{Connection: close}, then close
        the connection, reading and dropping what the client still sends
        for L{lingerTimeout} seconds.
        """
        state = self._state
        if state >= _DONE:  # _DONE, _DRAIN, _SWITCHED
            return
        stream = self._stream
        if state == _BODY and stream is not None and not self._dispatchPending:
            self._refuseStreamed(stream, code, message)
            return
        self._close()
        transport = self.transport
        if transport is None:
            return
        self._countRejection(code)
        accessLog = getattr(self.site, "accessLog", None)
        if state == _BUSY:
            # Never interleave with an answer being written.
            if accessLog is not None:
                accessLog.refused(code, message, transport.getPeer(), 0)
            transport.abortConnection()
            return
        body = dict(self._errorFields)
        body["error"] = message
        payload = json.dumps(body, separators=(",", ":")).encode("utf-8") + b"\n"
        if accessLog is not None:
            accessLog.refused(code, message, transport.getPeer(), len(payload))
        phrase = reasonPhrase(code)
        transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (code, phrase, len(payload), payload)
        )
        # The access log has the refusal (outcome refused, error); a line
        # per refused request in the gateway's own log, written blocking,
        # was a client's to multiply at will.
        if self._registered:
            self._registered = False
            transport.unregisterProducer()
        if self._transportPaused:
            # Read (and drop) what the client still sends.
            self._transportPaused = False
            transport.resumeProducing()
        halfClose = getattr(transport, "loseWriteConnection", None)
        if halfClose is not None and self.lingerTimeout:
            halfClose()
            self._abortingCall = self._clock.callLater(self.lingerTimeout, self.forceAbortClient)
        else:
            transport.loseConnection()
            if self.abortTimeout is not None:
                self._abortingCall = self._clock.callLater(self.abortTimeout, self.forceAbortClient)


GatewayHTTPChannel.plainWrites = GatewayHTTPChannel
