"""
The gateway's own HTTP/1.1 client for talking to backends.

Twisted's C{Agent} costs ~500 microseconds of CPU per proxied request on
CPython (measured in C{bench/}: the Agent proxy row) and hides the
upstream's C{Connection} header in its parser.  L{HTTP11UpstreamClient} is a lean replacement behind
L{IUpstreamClient}: one keep-alive pool per backend address, the request
head (and a small in-memory body) sent in one write, and a small response
parser of its own that keeps every header the upstream sent, including
C{Content-Length} and C{Connection}, so that the proxy can strip hop-by-hop
headers itself.

Message framing follows RFC 9112 section 6: no body for C{HEAD}, 1xx, 204
and 304; C{Transfer-Encoding: chunked} (with C{Content-Length} too, the
answer is refused as malformed); C{Content-Length}; otherwise the body ends
when the connection closes.
Interim 1xx answers are skipped.  A connection goes back to the pool only
after a complete, well-framed answer to a fully sent request.  A C{101
Switching Protocols} is accepted only for a request sent with
L{HTTP11UpstreamClient.upgrade} (a WebSocket handshake): its connection then
leaves HTTP and the pool for good, handed over to the caller's protocol
(L{gateway.interfaces.ISwitchedResponse}).

L{UpstreamAgent} puts an L{IAgent} face on the client, so that treq can
drive it (C{treq.client.HTTPClient(UpstreamAgent(client))}).
"""

from __future__ import annotations

import heapq
import typing
from collections import deque
from typing import AbstractSet, Any, Callable, Deque, Dict, List, Optional, Tuple, Union, cast
from urllib.parse import urlsplit

from twisted.internet import defer, error
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IDelayedCall,
    IProducer,
    IProtocol,
    IPushProducer,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import PotentialDataLoss, ResponseDone, ResponseFailed
from twisted.web.error import SchemeNotSupported
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IAgent, IBodyProducer, IClientRequest, IResponse
from zope.interface import implementer

from gateway.http.body import BytesBodyProducer
from gateway.http.connect import CachedEndpointFactory
from gateway.http.errors import (
    UpstreamBroken,
    UpstreamConnectError,
    UpstreamError,
    UpstreamTimeout,
)
from gateway.http.headers import RAW_HEADERS
from gateway.http.tls import UpstreamTLS, upstreamTLSFailure
from gateway.http.writesoon import writeSoon
from gateway.interfaces import (
    ISwitchedResponse,
    IUpstreamClient,
    IUpstreamRequest,
    IUpstreamUpgrader,
)

# Re-exported: the default of the config (proxy.upstreamKeepalive) and of the client.
from gateway.model.limits import DEFAULT_MAX_IDLE as DEFAULT_MAX_IDLE

log = Logger()

#: Most bytes a status line and its header fields (or a chunked body's
#: trailer section) may take.
MAX_HEAD = 65536


#: Most bytes of one chunk-size line, extensions included.
MAX_CHUNK_LINE = 4096


#: Body bytes buffered for a response whose C{deliverBody} was not called
#: yet, above which reading from the upstream is paused.
MAX_PENDING = 65536


_TCHAR = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


_HEXDIG = b"0123456789abcdefABCDEF"


#: An HTTP version, as L{IResponse.version} has it: C{(b"HTTP", 1, 1)}.
Version = Tuple[bytes, int, int]


_VERSIONS: Dict[bytes, Version] = {b"HTTP/1.1 ": (b"HTTP", 1, 1), b"HTTP/1.0 ": (b"HTTP", 1, 0)}


#: What L{parseHead} returns: C{(version, code, phrase, headers,
#: contentLength, transferEncoding, connection)}.
Head = Tuple[
    Version,
    int,
    bytes,
    Headers,
    Optional[List[bytes]],
    Optional[List[bytes]],
    Optional[List[bytes]],
]


class UpstreamAddress(typing.Protocol):
    """
    What the client knows of a backend: its address.  A
    L{gateway.balancing.backend.Backend} is one.
    """

    @property
    def host(self) -> str:
        """
        The host name or IP address to connect to.
        """

    @property
    def port(self) -> int:
        """
        The TCP port to connect to.
        """

    @property
    def tls(self) -> Optional[UpstreamTLS]:
        """
        How to speak TLS to it, or L{None} for plain HTTP.
        """


#: Methods that carry a body by definition: without one they get
#: C{Content-Length: 0}.
_BODY_METHODS = frozenset([b"POST", b"PUT", b"PATCH"])


#: Methods that may be sent again after a stale keep-alive connection broke
#: (RFC 9110 9.2.2; RFC 9112 9.3.1.1: a proxy must not retry others).
_IDEMPOTENT = frozenset([b"GET", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"TRACE"])


#: Caller headers that describe message framing, which the client sets itself.
_FRAMING = frozenset([b"Content-Length", b"Transfer-Encoding"])

#: The request header names L{HTTP11UpstreamClient.send} does not copy as
#: they are: the framing ones (true: left out, the client frames the body
#: itself) and C{Host} (false: it replaces the pool's own).
_SPECIAL = dict.fromkeys(_FRAMING, True)
_SPECIAL[b"Host"] = False


# Parser states of a connection.
_IDLE = 0  # no request in flight


_HEAD = 1  # waiting for the status line and header fields


_LENGTH = 2  # a body of known length


_CHUNK_SIZE = 3  # a chunked body: the next chunk-size line


_CHUNK_DATA = 4  # a chunked body: inside a chunk


_CHUNK_END = 5  # a chunked body: the CRLF after a chunk's data


_TRAILER = 6  # a chunked body: the trailer section


_UNTIL_CLOSE = 7  # a body that ends when the connection closes


_DEAD = 8  # closing or closed: everything received is ignored


_SWITCHED = 9  # a 101 to an upgrade request: the connection speaks another protocol


class _Malformed(UpstreamBroken):
    """
    The upstream answered with something that is not HTTP/1.1.
    """


class _Folded(Exception):
    """
    A header section uses obsolete line folding.
    """


def splitHead(data: bytes, start: int = 0) -> Optional[Tuple[List[bytes], int]]:
    """
    Find the end of a message head (status line and header fields).

    Lines end with CRLF; a bare LF is accepted too (RFC 9112 2.2), and a
    bare CR inside a line is replaced by a space.

    @param data: bytes received so far, starting with the status line.
    @param start: where to start looking for the end (bytes before it were
        looked at already).
    @return: C{(lines, bodyStart)}: the head's lines without their line
        ends, and the index in C{data} where what follows the head starts;
        or L{None} when the head is not complete yet.
    @raise UpstreamBroken: when the head holds a NUL byte.
    """
    end = data.find(b"\r\n\r\n", start)
    if end >= 0:
        head = data[:end]
        lines = head.split(b"\r\n")
        n = len(lines) - 1
        # The fast path: every line ends in CRLF and no bare CR or LF hides
        # an earlier end of the head.
        if head.count(b"\n") == n and head.count(b"\r") == n and 0 not in head:
            return lines, end + 4
    elif data.find(b"\n\n", start) < 0 and data.find(b"\n\r\n", start) < 0:
        return None
    return _splitHeadSlowly(data)


def _splitHeadSlowly(data: bytes) -> Optional[Tuple[List[bytes], int]]:
    lines = []
    pos = 0
    while True:
        i = data.find(b"\n", pos)
        if i < 0:
            return None
        line = data[pos:i]
        if line[-1:] == b"\r":
            line = line[:-1]
        pos = i + 1
        if not line:
            break
        if b"\x00" in line:
            raise _Malformed("upstream sent a NUL byte in its response head")
        if b"\r" in line:
            line = line.replace(b"\r", b" ")
        lines.append(line)
    return lines, pos


def _unfold(lines: List[bytes]) -> List[bytes]:
    """
    Replace obsolete line folding with spaces (RFC 9112 5.2).
    """
    out = [lines[0]]
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            if len(out) == 1:
                raise _Malformed("upstream sent whitespace before its first header field")
            out[-1] = out[-1].rstrip(b" \t") + b" " + line.strip(b" \t")
        else:
            out.append(line)
    return out


def parseHead(lines: List[bytes]) -> Head:
    """
    Parse a response's status line and header fields.

    @param lines: the head's lines, as returned by L{splitHead}.
    @return: C{(version, code, phrase, headers, contentLength,
        transferEncoding, connection)}: C{version} is a tuple like
        C{(b"HTTP", 1, 1)}, C{headers} a L{Headers} holding every field
        received, and the last three the raw values of those fields (lists
        of L{bytes}) or L{None} when absent.
    @raise UpstreamBroken: when the head is malformed.
    """
    try:
        return _parseHead(lines)
    except _Folded:
        return _parseHead(_unfold(lines))


# What kind of header field a name is, for framing.
_ORDINARY = 0


_CONTENT_LENGTH = 1


_TRANSFER_ENCODING = 2


_CONNECTION = 3


_KINDS = {
    b"content-length": _CONTENT_LENGTH,
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"connection": _CONNECTION,
}


#: Field name as received -> (the key L{Headers} stores it under, its kind).
#: Bounded, like Twisted's own cache of canonical names: an upstream could
#: send endless variations.
_FIELDS: Dict[bytes, Tuple[bytes, int]] = {}


_MAX_FIELDS = 10_000


#: Header line as received -> (its L{Headers} key, its kind, its value):
#: an upstream sends most of its lines (C{Server}, C{Content-Type},
#: C{Connection}, ...) the same on every answer.  Emptied when full, which
#: lines that vary (C{Date}, ids) make it now and then.
_LINES: Dict[bytes, Tuple[bytes, int, bytes]] = {}


_MAX_LINES = 1024


# Whether the parser may fill Headers' internal dict directly with the keys
# Headers itself computes (L{_field}), skipping per-value sanitising that a
# parsed value never needs: checked once, against the installed Twisted.
_RAW_KEYS = RAW_HEADERS


def _field(name: bytes) -> Tuple[bytes, int]:
    """
    @return: the L{Headers} storage key and the kind of a valid field name.
    """
    probe = Headers()
    probe.addRawHeader(name, b"")
    if _RAW_KEYS:
        key = next(iter(probe._rawHeaders))
    else:
        key = name
    field = (key, _KINDS.get(name.lower(), _ORDINARY))
    if len(_FIELDS) < _MAX_FIELDS:
        _FIELDS[name] = field
    return field


def _parseHead(lines: List[bytes]) -> Head:
    status = lines[0]
    version = _VERSIONS.get(status[:9])
    code = status[9:12]
    if (
        version is None
        or len(code) != 3
        or not code.isdigit()
        or code[0] == 48  # b"0"
        or (len(status) > 12 and status[12] != 32)  # b" "
    ):
        raise _Malformed(f"upstream sent a malformed status line: {status[:80]!r}")
    headers = Headers()
    raw = headers._rawHeaders if _RAW_KEYS else None
    contentLength: Optional[List[bytes]] = None
    transferEncoding: Optional[List[bytes]] = None
    connection: Optional[List[bytes]] = None
    fields = _FIELDS
    known = _LINES
    for i in range(1, len(lines)):
        line = lines[i]
        parsed = known.get(line)
        if parsed is None:
            name, sep, value = line.partition(b":")
            field = fields.get(name)
            if field is None or not sep:
                if not sep or not name or name.translate(None, _TCHAR):
                    if line[:1] in (b" ", b"\t"):
                        raise _Folded()
                    raise _Malformed(f"upstream sent a malformed header field: {line[:80]!r}")
                field = _field(name)
            parsed = (field[0], field[1], value.strip(b" \t"))
            if len(known) >= _MAX_LINES:
                known.clear()
            known[line] = parsed
        key, kind, value = parsed
        if raw is None:
            # (Without Headers' own keys, L{_field} keeps the name as it
            # came: a line from the cache has no name of its own here.)
            headers.addRawHeader(key, value)
        else:
            values = raw.get(key)
            if values is None:
                raw[key] = [value]
            else:
                values.append(value)
        if kind:
            if kind == _CONTENT_LENGTH:
                if contentLength is None:
                    contentLength = [value]
                else:
                    contentLength.append(value)
            elif kind == _TRANSFER_ENCODING:
                if transferEncoding is None:
                    transferEncoding = [value]
                else:
                    transferEncoding.append(value)
            elif connection is None:
                connection = [value]
            else:
                connection.append(value)
    return version, int(code), status[13:], headers, contentLength, transferEncoding, connection


#: A lone field value -> its tokens: upstreams send the same few values
#: (C{keep-alive}, C{close}, C{chunked}) on every answer.
_tokensOfValue: Dict[bytes, List[bytes]] = {}


def _tokens(values: List[bytes]) -> List[bytes]:
    """
    @return: the lower-case tokens of a comma-separated list field's values
        (not to be changed: a lone value's are shared).
    """
    if len(values) == 1:
        value = values[0]
        tokens = _tokensOfValue.get(value)
        if tokens is None:
            tokens = [t.strip(b" \t").lower() for t in value.split(b",")]
            if len(_tokensOfValue) < 256:
                _tokensOfValue[value] = tokens
        return tokens
    return [t.strip(b" \t").lower() for v in values for t in v.split(b",")]


def parseContentLength(values: List[bytes]) -> Tuple[int, bool]:
    """
    Validate the values of C{Content-Length} fields (RFC 9112 6.3).

    @param values: the raw field values, at least one.
    @return: C{(length, normalise)}: C{normalise} is true when several
        identical values were sent, which should be replaced with one.
    @raise UpstreamBroken: when a value is not a number or they differ.
    """
    if len(values) == 1:
        value = values[0]
        if value.isdigit():
            return int(value), False
    found = set()
    for value in values:
        for part in value.split(b","):
            part = part.strip(b" \t")
            if not part.isdigit():
                raise _Malformed(f"upstream sent an invalid Content-Length: {value[:40]!r}")
            found.add(int(part))
    if len(found) != 1:
        raise _Malformed("upstream sent conflicting Content-Length values")
    return found.pop(), True


@implementer(IPushProducer)
class _BodyProducer:
    """
    The transport a response body's protocol sees: pausing it pauses
    reading from the upstream; stopping it aborts the upstream connection.
    Once the body is complete it controls nothing (the connection may be
    serving another request by then).
    """

    __slots__ = ("_response",)

    def __init__(self, response: _Response) -> None:
        self._response = response

    def pauseProducing(self) -> None:
        conn = self._response._conn
        if conn is not None:
            conn.userPaused = True
            conn.updatePause()

    def resumeProducing(self) -> None:
        conn = self._response._conn
        if conn is not None:
            conn.userPaused = False
            conn.updatePause()

    def stopProducing(self) -> None:
        conn = self._response._conn
        if conn is not None:
            conn.abort()

    #: L{twisted.web.client.readBody} aborts the "transport" when cancelled.
    abortConnection = stopProducing


@implementer(IResponse)
class _Response:
    """
    An upstream's response, whose body is streamed to the protocol given to
    L{deliverBody}.

    @ivar length: the body's length, or L{UNKNOWN_LENGTH} for a chunked or
        close-delimited body.
    @ivar request: the L{IClientRequest} when made through L{UpstreamAgent},
        else L{None}.
    @ivar body: the whole body, when it came with the head (the exchange
        was over when the response was handed out; L{deliverBody} still
        delivers it), else L{None}.
    """

    __slots__ = (
        "version",
        "code",
        "phrase",
        "headers",
        "length",
        "body",
        "request",
        "previousResponse",
        "_conn",
        "_protocol",
        "_pending",
        "_pendingSize",
        "_reason",
        "_done",
        "received",
    )

    def __init__(
        self,
        conn: Optional[_Connection],
        version: Version,
        code: int,
        phrase: bytes,
        headers: Headers,
        length: Union[int, str],
    ) -> None:
        self.version = version
        self.code = code
        self.phrase = phrase
        self.headers = headers
        self.length = length
        self.body: Optional[bytes] = None
        self.request: Optional[IClientRequest] = None
        self.previousResponse: Optional[IResponse] = None
        self._conn = conn
        self._protocol: Optional[IProtocol] = None
        self._pending: Optional[List[bytes]] = None
        self._pendingSize = 0
        self._reason: Optional[Failure] = None
        self._done = False
        #: The pieces of the body read from the upstream so far (its
        #: idle timeout looks at it: L{_BodyWatch}).
        self.received = 0

    def __repr__(self) -> str:
        return f"<Response {self.code} {self.phrase!r} length={self.length!r}>"

    def setPreviousResponse(self, response: IResponse) -> None:
        self.previousResponse = response

    def deliverBody(self, protocol: IProtocol) -> None:
        """
        Stream the body to C{protocol}: its C{makeConnection} gets a push
        producer, then C{dataReceived} is called with the body's bytes, and
        C{connectionLost} with L{ResponseDone} at a clean end,
        L{PotentialDataLoss} at the end of a close-delimited body, or
        another failure when the body broke.
        """
        if self._protocol is not None:
            raise RuntimeError("the body of a response can be delivered only once")
        self._protocol = protocol
        # A body's protocol gets a push producer for its "transport", as
        # with Twisted's own responses (IResponse.deliverBody): not an
        # ITransport, hence the ignore.
        protocol.makeConnection(_BodyProducer(self))  # type: ignore[arg-type]
        pending = self._pending
        if pending is not None:
            self._pending = None
            self._pendingSize = 0
            for data in pending:
                protocol.dataReceived(data)
        if self._done:
            reason, self._reason = self._reason, None
            assert reason is not None  # (set by _finish, with _done)
            # Let go of the protocol, which holds our producer, which holds
            # us: a cycle only the garbage collector would free.
            self._protocol = _DELIVERED
            _notifyLost(protocol, reason)
            return
        conn = self._conn
        if conn is not None and conn.bufferPaused:
            conn.bufferPaused = False
            conn.updatePause()

    def _data(self, data: bytes) -> None:
        self.received += 1
        protocol = self._protocol
        if protocol is not None:
            protocol.dataReceived(data)
            return
        if self._pending is None:
            self._pending = [data]
        else:
            self._pending.append(data)
        self._pendingSize += len(data)
        conn = self._conn
        if self._pendingSize > MAX_PENDING and conn is not None and not conn.bufferPaused:
            conn.bufferPaused = True
            conn.updatePause()

    def _finish(self, reason: Failure) -> None:
        if self._done:
            return
        self._done = True
        self._conn = None
        protocol = self._protocol
        if protocol is None:
            self._reason = reason
        else:
            # (As in deliverBody: no cycle left through the protocol.)
            self._protocol = _DELIVERED
            _notifyLost(protocol, reason)


#: What L{_Response._protocol} holds once the body's end was delivered (only
#: ever compared by identity, never called).
_DELIVERED = cast(IProtocol, object())


#: The end of every complete body: one shared failure, as Twisted shares
#: L{twisted.internet.main.connectionDone}; it has no traceback to keep.
_RESPONSE_DONE = Failure(ResponseDone())


def _notifyLost(protocol: IProtocol, reason: Failure) -> None:
    try:
        protocol.connectionLost(reason)
    except Exception:
        log.failure("response body protocol {protocol} failed in connectionLost", protocol=protocol)


@implementer(IConsumer, IPushProducer)
class _BodyConsumer:
    """
    Takes a request body from its producer and writes it to the
    connection, chunk-encoded or counted against the promised length.

    It is registered with the transport in the body producer's place, and
    passes the transport's pauses on, knowing so whether the upstream holds
    the body back (C{heldBack}: see L{_Request.moreTime}).
    """

    __slots__ = ("conn", "producer", "chunked", "remaining", "written", "heldBack")

    def __init__(
        self, conn: _Connection, producer: IBodyProducer, chunked: bool, length: int
    ) -> None:
        self.conn: Optional[_Connection] = conn
        self.producer = producer
        self.chunked = chunked
        self.remaining = length
        #: Body bytes written so far (see L{_Request.moreTime}).
        self.written = 0
        #: Whether the transport paused the body (its buffer is full).
        self.heldBack = False

    def write(self, data: bytes) -> None:
        conn = self.conn
        if conn is None or not data:
            return
        self.written += len(data)
        if self.chunked:
            conn.transport.writeSequence((b"%x\r\n" % (len(data),), data, b"\r\n"))
            return
        self.remaining -= len(data)
        if self.remaining < 0:
            conn.fail(UpstreamBroken("the request body is longer than its length"))
            return
        conn.transport.write(data)

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        # The connection registers the body producer with its transport.
        pass

    def unregisterProducer(self) -> None:
        pass

    # -- the transport's producer -------------------------------------------------

    def pauseProducing(self) -> None:
        self.heldBack = True
        self.producer.pauseProducing()

    def resumeProducing(self) -> None:
        self.heldBack = False
        self.producer.resumeProducing()

    def stopProducing(self) -> None:
        self.producer.stopProducing()


@implementer(IUpstreamRequest)
class _Request:
    """
    One request's life: connecting, waiting for the head, and its deadline
    (see L{_Deadlines}); once C{finished}, nothing of it is left to do.
    """

    __slots__ = (
        "method",
        "data",
        "producer",
        "chunked",
        "length",
        "retryable",
        "onResponse",
        "onFailure",
        "args",
        "deadline",
        "conn",
        "connecting",
        "finished",
        "upgrade",
        "bodySentAt",
        "writtenAtLook",
        "deadlines",
    )

    def __init__(self, method: bytes) -> None:
        self.method = method
        self.data = b""
        self.producer: Optional[IBodyProducer] = None
        self.chunked = False
        self.length = 0
        self.retryable = False
        #: Called as C{onResponse(response, *args)} or C{onFailure(failure,
        #: *args)}, once (a Deferred's callback and errback, or the
        #: caller's own: see L{HTTP11UpstreamClient.send}).
        self.onResponse: Callable[..., object] = _nothing
        self.onFailure: Callable[..., object] = _nothing
        self.args: Tuple[object, ...] = ()
        self.deadline = 0.0
        self.conn: Optional[_Connection] = None
        self.connecting: Optional[Deferred[IProtocol]] = None
        self.finished = False
        #: Whether a 101 hands the connection over (L{HTTP11UpstreamClient.upgrade}).
        self.upgrade = False
        #: When a streamed body (C{producer}) was all sent, or L{None}.
        self.bodySentAt: Optional[float] = None
        #: The body bytes written when L{moreTime} last looked.
        self.writtenAtLook = 0
        #: The queue of deadlines it waits in, if it has a timeout: the
        #: answer's body is timed by it too (L{_BodyWatch}).
        self.deadlines: Optional[_Deadlines] = None

    def cancel(self) -> None:
        """
        Abandon the request (see L{HTTP11UpstreamClient.send}): it fails
        with L{defer.CancelledError} unless it is over already.
        """
        if not self.finished:
            self.finished = True
            self._stop()
            self._failWith(Failure(defer.CancelledError()))

    def moreTime(self, now: float, timeout: float) -> Optional[float]:
        """
        The deadline of a request whose body streams (C{producer}) has
        come: tell whether the upstream is to blame yet.  Its C{timeout}
        counts from when the body was all sent (the upstream can hardly
        answer before); while the body is being sent, the request times out
        only when none of it was written for C{timeout} seconds while the
        transport holds it back (a backend that stops reading).  Waiting for a slow
        client is the server channel's to bound (L{gateway.http.channel}:
        C{bodyTimeout}, C{minBodyRate}), with a status of its own.

        @return: the new deadline, or L{None} when the request times out
            now.
        """
        if self.producer is None:
            return None
        conn = self.conn
        if conn is None:
            return None  # (still connecting)
        sentAt = self.bodySentAt
        if sentAt is not None:
            deadline = sentAt + timeout
            return deadline if deadline > now else None
        consumer = conn.consumer
        if consumer is None:
            return None
        written = consumer.written
        if written != self.writtenAtLook or not consumer.heldBack:
            # Taken as it came, or waiting for more of it (from the client).
            self.writtenAtLook = written
            return now + timeout
        return None

    def timedOut(self) -> None:
        if not self.finished:
            self.finished = True
            self._stop()
            self._failWith(Failure(UpstreamTimeout("upstream did not answer in time")))

    def _failWith(self, failure: Failure) -> None:
        onFailure, args = self.onFailure, self.args
        self._letGo()
        onFailure(failure, *args)

    def _letGo(self) -> None:
        """
        Drop what a finished request no longer needs: it may wait in a
        queue of deadlines for a while (L{_Deadlines}), and its callbacks'
        arguments hold the caller's whole request.
        """
        self.onResponse = self.onFailure = _nothing
        self.args = ()
        self.data = b""
        self.producer = None

    def _stop(self) -> None:
        connecting = self.connecting
        if connecting is not None:
            self.connecting = None
            connecting.cancel()
        conn = self.conn
        if conn is not None:
            self.conn = None
            conn.req = None
            conn.abort()

    def succeed(self, response: Union[_Response, _SwitchedResponse]) -> None:
        self.finished = True
        self.conn = None
        onResponse, args = self.onResponse, self.args
        self._letGo()
        onResponse(response, *args)

    def fail(self, exc: Exception) -> None:
        if self.finished:
            return
        self.finished = True
        self.conn = None
        self._failWith(Failure(exc))

    def connected(self, conn: _Connection) -> None:
        self.connecting = None
        if self.finished:
            # Cannot happen (finishing cancels the connection attempt),
            # but an unused connection must not leak.
            conn.dead = True
            conn.transport.loseConnection()
            return
        conn.send(self)

    def connectFailed(self, failure: Failure) -> None:
        self.connecting = None
        if self.finished:
            return
        message = failure.getErrorMessage()
        if failure.check(error.TimeoutError, defer.TimeoutError):
            exc: Exception = UpstreamTimeout(message)
        elif failure.check(error.ConnectError, error.DNSLookupError):
            exc = UpstreamConnectError(message)
        else:
            exc = UpstreamBroken(message)
        self.fail(exc)


class _Connection(Protocol):
    """
    One connection to a backend: sends requests one at a time and parses
    the answers.
    """

    transport: Any  # an ITCPTransport, also a push producer and a consumer

    def __init__(self, pool: _HostPool) -> None:
        self.pool = pool
        self.req: Optional[_Request] = None
        self.response: Optional[_Response] = None
        self.state = _IDLE
        self.buf = b""
        self.scan = 0
        self.remaining = 0
        self.trailerSize = 0
        self.keepAlive = False
        self.reused = False
        self.got = False
        self.consumer: Optional[_BodyConsumer] = None
        self.userPaused = False
        self.bufferPaused = False
        self.transportPaused = False
        self.dead = False
        self.inPool = False
        self.idleSince = 0.0
        self.onLost: Optional[Deferred[None]] = None
        #: The 101 answer whose protocol the connection now speaks.
        self.switched: Optional[_SwitchedResponse] = None

    # -- sending ----------------------------------------------------------------

    def send(self, req: _Request) -> None:
        self.req = req
        req.conn = self
        self.state = _HEAD
        self.got = False
        self.scan = 0
        writeSoon(self.transport, req.data)
        producer = req.producer
        if producer is not None:
            consumer = self.consumer = _BodyConsumer(self, producer, req.chunked, req.length)
            self.transport.registerProducer(consumer, True)
            try:
                d = producer.startProducing(consumer)
            except Exception:
                d = defer.fail()
            d.addCallbacks(
                self._bodySent, self._bodyFailed, callbackArgs=(consumer,), errbackArgs=(consumer,)
            )

    def _bodySent(self, result: object, consumer: _BodyConsumer) -> None:
        if self.consumer is not consumer:
            return
        self.consumer = None
        consumer.conn = None
        req = self.req
        if req is not None:
            # (The request's timeout counts from here: see _Request.moreTime.)
            req.bodySentAt = self.pool.client._reactor.seconds()
        self.transport.unregisterProducer()
        if consumer.chunked:
            self.transport.write(b"0\r\n\r\n")
        elif consumer.remaining:
            self.fail(UpstreamBroken("the request body is shorter than its length"))

    def _bodyFailed(self, failure: Failure, consumer: _BodyConsumer) -> None:
        if self.consumer is not consumer:
            # Stopped by us: the request or its connection is over already.
            return
        error = failure.value
        if not isinstance(error, UpstreamError):
            # (A body that failed with a status of its own, the client's
            # refused body, keeps it: see gateway.http.bodystream.)
            error = UpstreamBroken("the request body failed: " + failure.getErrorMessage())
        self.fail(error)

    def _stopBody(self) -> None:
        consumer = self.consumer
        if consumer is None:
            return
        self.consumer = None
        consumer.conn = None
        try:
            self.transport.unregisterProducer()
        except Exception:
            pass
        try:
            consumer.producer.stopProducing()
        except Exception:
            pass

    # -- ending -----------------------------------------------------------------

    def abort(self) -> None:
        """
        Drop the connection at once; it will not be reused.
        """
        if self.dead:
            return
        self.dead = True
        self.state = _DEAD
        if self.inPool:
            self.pool.remove(self)
        self._stopBody()
        self.transport.abortConnection()

    def fail(self, exc: Exception) -> None:
        """
        Abort the connection and fail what it was doing with C{exc}.
        """
        req, response = self.req, self.response
        self.req = self.response = None
        self.abort()
        if response is not None:
            response._finish(Failure(ResponseFailed([Failure(exc)])))
        elif req is not None:
            req.fail(exc)

    def updatePause(self) -> None:
        """
        Pause reading from the upstream while the body's consumer asked for
        a pause or too much body waits for C{deliverBody}.
        """
        if self.dead:
            return
        want = self.userPaused or self.bufferPaused
        if want != self.transportPaused:
            self.transportPaused = want
            if want:
                self.transport.pauseProducing()
            else:
                self.transport.resumeProducing()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        state = self.state
        self.dead = True
        self.state = _DEAD
        switched = self.switched
        if switched is not None:
            self.switched = None
            switched._lost(reason)
            return
        self._stopBody()
        if self.inPool:
            self.pool.remove(self)
        onLost = self.onLost
        if onLost is not None:
            self.onLost = None
            onLost.callback(None)
        req, response = self.req, self.response
        self.req = self.response = None
        if response is not None:
            if state == _UNTIL_CLOSE and reason.check(error.ConnectionDone):
                response._finish(Failure(PotentialDataLoss()))
            else:
                response._finish(Failure(ResponseFailed([reason])))
        elif req is not None and not req.finished:
            if not self.got and self.reused and req.retryable:
                # The keep-alive race: the upstream closed this idle
                # connection while the request was on its way.  The retry
                # goes on a new connection, which is never retried.
                req.conn = None
                self.pool.connect(req)
            elif self.got:
                req.fail(UpstreamBroken("upstream closed the connection in the response head"))
            else:
                # (Over TLS, a handshake that failed ends here too.)
                req.fail(
                    upstreamTLSFailure(reason)
                    or UpstreamBroken("upstream closed the connection without answering")
                )

    def _responseDone(self, rest: bytes) -> None:
        """
        The response is complete: pool or close the connection, then tell
        the body's protocol.
        """
        response = self.response
        assert response is not None  # (called when a response is complete)
        self.req = self.response = None
        response._conn = None
        # (Callers stop parsing once a callback aborted the connection, so
        # it is alive here.)
        if (
            self.keepAlive
            and self.consumer is None
            and not (rest and rest.strip(b"\r\n"))
            and not self.pool.client._closed
        ):
            self.state = _IDLE
            self.userPaused = self.bufferPaused = False
            if self.transportPaused:
                self.transportPaused = False
                self.transport.resumeProducing()
            self.pool.release(self)
        else:
            self.dead = True
            self.state = _DEAD
            if self.consumer is not None:
                # Answered before the request body was sent: the upstream
                # will not read the rest of it on this connection.
                self._stopBody()
                self.transport.abortConnection()
            else:
                self.transport.loseConnection()
        response._finish(_RESPONSE_DONE)

    # -- parsing ----------------------------------------------------------------

    def dataReceived(self, received: bytes) -> None:
        data: Optional[bytes] = received
        if self.buf:
            data = self.buf + received
            self.buf = b""
        while data:
            state = self.state
            if state == _LENGTH or state == _CHUNK_DATA:
                data = self._sizedBody(data, state)
            elif state == _HEAD:
                data = self._head(data)
            elif state == _CHUNK_SIZE:
                data = self._chunkSize(data)
            elif state == _CHUNK_END:
                data = self._chunkEnd(data)
            elif state == _TRAILER:
                data = self._trailer(data)
            elif state == _UNTIL_CLOSE:
                response = self.response
                assert response is not None  # (a body is being read)
                response._data(data)
                return
            elif state == _IDLE:
                # Nothing was asked: whatever this is (a 408 before an idle
                # close, garbage), the connection cannot be trusted.
                self.abort()
                return
            elif state == _SWITCHED:
                switched = self.switched
                assert switched is not None  # (set with the state)
                switched._received(data)
                return
            else:
                return

    def _head(self, data: bytes) -> Optional[bytes]:
        self.got = True
        first = data[0]
        if first == 13 or first == 10:
            # RFC 9112 2.2: ignore empty lines before the status line.
            data = data.lstrip(b"\r\n")
            if not data:
                return None
        try:
            found = splitHead(data, self.scan)
            if found is None:
                if len(data) > MAX_HEAD:
                    raise _Malformed(f"upstream response head is larger than {MAX_HEAD} bytes")
                self.scan = max(0, len(data) - 3)
                self.buf = data
                return None
            lines, start = found
            if start > MAX_HEAD:
                raise _Malformed(f"upstream response head is larger than {MAX_HEAD} bytes")
            self.scan = 0
            return self._gotHead(parseHead(lines), data[start:])
        except UpstreamBroken as e:
            self.fail(e)
            return None

    def _gotHead(self, parsed: Head, rest: bytes) -> Optional[bytes]:
        version, code, phrase, headers, contentLength, transferEncoding, connection = parsed
        req = self.req
        assert req is not None  # (a head is awaited only for a request)
        if code < 200:
            if code == 101:
                if not req.upgrade:
                    raise _Malformed("upstream switched protocols, which was not asked for")
                self._switch(version, phrase, headers, rest)
                return None
            return rest  # an interim answer: wait for the final one
        if connection is None:
            keepAlive = version[2] == 1
        elif version[2] == 1:
            keepAlive = b"close" not in _tokens(connection)
        else:
            keepAlive = b"keep-alive" in _tokens(connection)
        # The body's length, or -1 when it is not known (UNKNOWN_LENGTH).
        length: int
        if req.method == b"HEAD" or code == 204 or code == 304:
            length = 0
            state = _LENGTH
        elif transferEncoding is not None:
            if version[2] == 0:
                raise _Malformed("upstream sent Transfer-Encoding in an HTTP/1.0 response")
            if _tokens(transferEncoding) != [b"chunked"]:
                raise _Malformed("upstream sent an unsupported Transfer-Encoding")
            if contentLength is not None:
                # RFC 9112 6.3: such a message "ought to be handled as an
                # error" (a smuggling attempt, or a backend whose two
                # layers disagree); as nginx and Envoy do, it is one.
                raise _Malformed("upstream sent both Content-Length and Transfer-Encoding")
            length = -1
            state = _CHUNK_SIZE
        elif contentLength is not None:
            length, normalise = parseContentLength(contentLength)
            if normalise:
                headers.setRawHeaders(b"content-length", [b"%d" % (length,)])
            state = _LENGTH
        else:
            length = -1
            keepAlive = False
            state = _UNTIL_CLOSE
        self.keepAlive = keepAlive
        response = self.response = _Response(
            self, version, code, phrase, headers, UNKNOWN_LENGTH if length < 0 else length
        )
        if state == _LENGTH and len(rest) >= length:
            # The whole body came with the head, as a small answer does:
            # the exchange is over before anyone hears of it.  The
            # connection goes back to the pool, and the response holds its
            # body (L{_Response.body}) and its end for L{deliverBody}.
            if len(rest) == length:
                body, rest = rest, b""
            else:
                body, rest = rest[:length], rest[length:]
            response.body = body
            if body:
                response._pending = [body]
                response._pendingSize = length
            self._responseDone(rest)
            req.succeed(response)
            return None
        self.state = state
        if state == _LENGTH:
            self.remaining = length
        elif state == _CHUNK_SIZE:
            self.trailerSize = 0
        deadlines = req.deadlines
        if deadlines is not None:
            # The body comes later: its pieces are timed too.
            deadlines.watch(_BodyWatch(response))
        req.succeed(response)
        if self.dead or self.response is not response:
            return None  # its callbacks aborted it: connectionLost ends it
        return rest

    # -- switching protocols (L{HTTP11UpstreamClient.upgrade}) ---------------------

    def _switch(self, version: Version, phrase: bytes, headers: Headers, rest: bytes) -> None:
        """
        A 101 to an upgrade request: the connection leaves HTTP (and the
        pool) for good.  It reads nothing more until the answer's
        L{_SwitchedResponse.switchProtocols} gives it its new protocol.
        """
        req = self.req
        assert req is not None  # (a head is awaited only for a request)
        self.req = None
        self.state = _SWITCHED
        switched = self.switched = _SwitchedResponse(self, version, phrase, headers, rest)
        if not self.transportPaused:
            self.transportPaused = True
            self.transport.pauseProducing()
        req.succeed(switched)

    def _sizedBody(self, data: bytes, state: int) -> Optional[bytes]:
        response = self.response
        assert response is not None  # (a body is being read)
        remaining = self.remaining
        size = len(data)
        if size < remaining:
            self.remaining = remaining - size
            response._data(data)
            return None
        self.remaining = 0
        if size == remaining:
            rest = b""
        else:
            rest = data[remaining:]
            data = data[:remaining]
        response._data(data)
        if self.dead or self.response is not response:
            return None
        if state == _LENGTH:
            self._responseDone(rest)
            return None
        self.state = _CHUNK_END
        return rest

    def _chunkSize(self, data: bytes) -> Optional[bytes]:
        i = data.find(b"\n")
        if i < 0:
            if len(data) > MAX_CHUNK_LINE:
                self.fail(_Malformed("upstream sent a chunk-size line that is too long"))
            else:
                self.buf = data
            return None
        line = data[:i]
        if i > MAX_CHUNK_LINE:
            self.fail(_Malformed("upstream sent a chunk-size line that is too long"))
            return None
        # chunk-size [ chunk-ext ] CRLF: extensions are ignored.
        size = line.split(b";", 1)[0].strip(b" \t\r")
        if not size or size.translate(None, _HEXDIG) or len(size) > 16:
            self.fail(_Malformed(f"upstream sent an invalid chunk size: {line[:40]!r}"))
            return None
        n = int(size, 16)
        if n:
            self.remaining = n
            self.state = _CHUNK_DATA
        else:
            self.state = _TRAILER
        return data[i + 1 :]

    def _chunkEnd(self, data: bytes) -> Optional[bytes]:
        if data[:2] == b"\r\n":
            data = data[2:]
        elif data[:1] == b"\n":
            data = data[1:]
        elif data == b"\r":
            self.buf = data
            return None
        else:
            self.fail(_Malformed("upstream sent a chunk without its CRLF"))
            return None
        self.state = _CHUNK_SIZE
        return data

    def _trailer(self, data: bytes) -> Optional[bytes]:
        # Trailer fields are read and dropped, line by line.
        while True:
            i = data.find(b"\n")
            if i < 0:
                if self.trailerSize + len(data) > MAX_HEAD:
                    self.fail(_Malformed("upstream sent a trailer section that is too large"))
                else:
                    self.buf = data
                return None
            self.trailerSize += i + 1
            if self.trailerSize > MAX_HEAD:
                self.fail(_Malformed("upstream sent a trailer section that is too large"))
                return None
            line = data[:i]
            data = data[i + 1 :]
            if not line or line == b"\r":
                self._responseDone(data)
                return None


@implementer(IPushProducer)
class _NoBody:
    """
    The "transport" of a dropped 101's body protocol: there is nothing to
    control.
    """

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


@implementer(ISwitchedResponse)
class _SwitchedResponse:
    """
    A 101 answer to an upgrade request, whose connection waits (paused) to
    be taken with L{switchProtocols} or dropped with L{deliverBody}.
    """

    code = 101
    length = 0
    body = None
    request: Optional[IClientRequest] = None
    previousResponse: Optional[IResponse] = None

    def __init__(
        self, conn: _Connection, version: Version, phrase: bytes, headers: Headers, rest: bytes
    ) -> None:
        self.version = version
        self.phrase = phrase
        self.headers = headers
        self._conn = conn
        self._held: List[bytes] = [rest] if rest else []
        self._protocol: Optional[IProtocol] = None
        self._dropped = False
        self._end: Optional[Failure] = None

    def __repr__(self) -> str:
        return f"<SwitchedResponse 101 {self.phrase!r}>"

    def setPreviousResponse(self, response: IResponse) -> None:
        self.previousResponse = response

    def switchProtocols(self, protocol: IProtocol) -> None:
        """
        See L{ISwitchedResponse.switchProtocols}.

        @raise RuntimeError: when the connection was taken or dropped
            already.
        """
        conn = self._conn
        if self._dropped or self._protocol is not None:
            raise RuntimeError("the connection of a 101 answer can be taken only once")
        self._protocol = protocol
        end = self._end
        if conn.transportPaused and end is None:
            # (Before the protocol has it: pausing is the protocol's now.)
            conn.transportPaused = False
            conn.transport.resumeProducing()
        protocol.makeConnection(conn.transport)
        held, self._held = self._held, []
        for data in held:
            protocol.dataReceived(data)
        if end is not None:
            self._end = None
            protocol.connectionLost(end)

    def deliverBody(self, protocol: IProtocol) -> None:
        """
        See L{ISwitchedResponse.deliverBody}: the connection is closed.
        """
        if not self._dropped and self._protocol is None:
            self._dropped = True
            self._held = []
            conn = self._conn
            conn.switched = None
            conn.abort()
        protocol.makeConnection(_NoBody())  # type: ignore[arg-type]
        _notifyLost(protocol, _RESPONSE_DONE)

    # -- from the connection ----------------------------------------------------

    def _received(self, data: bytes) -> None:
        protocol = self._protocol
        if protocol is None:
            # (Paused: one read's worth at most.)
            self._held.append(data)
        else:
            protocol.dataReceived(data)

    def _lost(self, reason: Failure) -> None:
        protocol = self._protocol
        if protocol is None:
            self._end = reason
        else:
            protocol.connectionLost(reason)


class _ConnectionFactory(Factory):
    noisy = False

    def __init__(self, pool: _HostPool) -> None:
        self.pool = pool

    def buildProtocol(self, addr: Optional[IAddress]) -> _Connection:
        return _Connection(self.pool)


class _HostPool:
    """
    The idle keep-alive connections to one backend address.

    Idle connections are reused last-in first-out, so that the ones a
    quieter moment leaves unused grow old together at the front of the
    queue, where one timer per pool closes them after the idle timeout.
    """

    __slots__ = ("client", "endpoint", "hostLine", "idle", "factory", "timer", "retired")

    def __init__(
        self, client: HTTP11UpstreamClient, endpoint: IStreamClientEndpoint, hostLine: bytes
    ) -> None:
        self.client = client
        self.endpoint = endpoint
        self.hostLine = hostLine
        self.idle: Deque[_Connection] = deque()
        self.factory = _ConnectionFactory(self)
        self.timer: Optional[IDelayedCall] = None
        #: Whether the client forgot it (its address is no backend's any
        #: more): a connection that ends its request is closed, not kept.
        self.retired = False

    def connect(self, req: _Request) -> None:
        d = self.endpoint.connect(self.factory)
        req.connecting = d
        d.addCallbacks(req.connected, req.connectFailed)

    def release(self, conn: _Connection) -> None:
        client = self.client
        if len(self.idle) >= client._maxIdle or self.retired:
            conn.dead = True
            conn.state = _DEAD
            conn.transport.loseConnection()
            return
        conn.reused = True
        conn.inPool = True
        conn.idleSince = client._reactor.seconds()
        self.idle.append(conn)
        if self.timer is None:
            self.timer = client._reactor.callLater(client._idleTimeout, self.sweep)

    def remove(self, conn: _Connection) -> None:
        conn.inPool = False
        try:
            self.idle.remove(conn)
        except ValueError:
            pass

    def sweep(self) -> None:
        """
        Close the connections that were idle for the idle timeout.
        """
        self.timer = None
        client = self.client
        timeout = client._idleTimeout
        # A millisecond of slack: the timer is scheduled for the oldest
        # connection's expiry, which float rounding may put a hair early.
        limit = client._reactor.seconds() - timeout + 0.001
        idle = self.idle
        expired = []
        while idle and idle[0].idleSince <= limit:
            expired.append(idle.popleft())
        for conn in expired:
            conn.inPool = False
            conn.dead = True
            conn.state = _DEAD
            conn.transport.loseConnection()
        if idle:
            delay = idle[0].idleSince + timeout - client._reactor.seconds()
            self.timer = client._reactor.callLater(max(delay, 0.001), self.sweep)

    def closeIdle(self) -> List[Deferred[None]]:
        timer = self.timer
        if timer is not None:
            self.timer = None
            timer.cancel()
        waits = []
        while self.idle:
            conn = self.idle.popleft()
            conn.inPool = False
            conn.dead = True
            conn.state = _DEAD
            d: Deferred[None] = Deferred()
            conn.onLost = d
            waits.append(d)
            conn.transport.loseConnection()
        return waits


class _Deadlines:
    """
    The requests sent with one timeout, in the order they were sent, which
    is the order of their deadlines, and one timer for the soonest.

    A timer per request would cost a L{DelayedCall} made, pushed on the
    reactor's heap and cancelled again for nearly every request.  A request
    that ends is only marked C{finished}, and dropped when it reaches the
    front of the queue (or when the queue is compacted, should a slow
    request hold up the front).

    A request whose body streams may get more time when its deadline comes
    (L{_Request.moreTime}): it then waits in a heap of its own, C{later},
    ordered by its new deadline.
    """

    __slots__ = ("reactor", "timeout", "queue", "limit", "timer", "later", "laterLimit", "counter")

    def __init__(self, reactor: IReactorTime, timeout: float) -> None:
        self.reactor = reactor
        self.timeout = timeout
        self.queue: Deque[_Request] = deque()
        #: The length past which the queue is compacted.
        self.limit = _COMPACT_AT
        self.timer: Optional[IDelayedCall] = None
        #: C{(deadline, n, request)}: the requests given more time, and the
        #: bodies being read (L{_BodyWatch}).
        self.later: List[Tuple[float, int, Union[_Request, _BodyWatch]]] = []
        #: The length past which C{later} is compacted (as C{queue} is).
        self.laterLimit = _COMPACT_AT
        self.counter = 0

    def add(self, req: _Request) -> None:
        req.deadline = self.reactor.seconds() + self.timeout
        req.deadlines = self
        queue = self.queue
        while queue and queue[0].finished:
            queue.popleft()
        queue.append(req)
        if len(queue) > self.limit:
            # Held up behind a request that is still waiting: what ended
            # meanwhile goes now (each entry is looked at once per doubling
            # of the queue, so this costs O(1) per request on the whole).
            self.queue = queue = deque(r for r in queue if not r.finished)
            self.limit = max(_COMPACT_AT, 2 * len(queue))
        if self.timer is None:
            self.timer = self.reactor.callLater(self.timeout, self._expire)

    def _expire(self) -> None:
        self.timer = None
        queue = self.queue
        now = self.reactor.seconds()
        while queue:
            req = queue[0]
            if req.finished:
                queue.popleft()
            elif req.deadline <= now:
                queue.popleft()
                self._due(req, now)
                queue = self.queue  # (compacted by a request its failure sent)
            else:
                break
        later = self.later
        while later and (later[0][2].finished or later[0][0] <= now):
            waiting = heapq.heappop(later)[2]
            if not waiting.finished:
                self._due(waiting, now)
        if self.timer is None:
            soonest = queue[0].deadline if queue else None
            if later and (soonest is None or later[0][0] < soonest):
                soonest = later[0][0]
            if soonest is not None:
                self.timer = self.reactor.callLater(soonest - now, self._expire)

    def _due(self, req: Union[_Request, _BodyWatch], now: float) -> None:
        """
        A request's deadline came: it times out, unless its body streams
        and it gets more time (L{_Request.moreTime}); or the deadline of an
        answer's body came (L{_BodyWatch}).
        """
        deadline = req.moreTime(now, self.timeout)
        if deadline is not None and deadline > now:
            self._later(req, deadline)
            return
        req.timedOut()

    def _later(self, req: Union[_Request, _BodyWatch], deadline: float) -> None:
        self.counter += 1
        heapq.heappush(self.later, (deadline, self.counter, req))

    def watch(self, body: _BodyWatch) -> None:
        """
        Time the body of an answer whose head came: it is cut when no piece
        of it came from the upstream for C{timeout} seconds (but while the
        gateway itself holds the upstream back).
        """
        later = self.later
        while later and later[0][2].finished:
            heapq.heappop(later)
        if len(later) > self.laterLimit:
            # Bodies that ended wait behind one still being read: they go
            # now (as in add, O(1) per body on the whole).
            later[:] = [entry for entry in later if not entry[2].finished]
            heapq.heapify(later)
            self.laterLimit = max(_COMPACT_AT, 2 * len(later))
        self._later(body, self.reactor.seconds() + self.timeout)
        if self.timer is None:
            self.timer = self.reactor.callLater(self.timeout, self._expire)

    def stopIfDone(self) -> None:
        """
        Stop the timer now if every request has ended (rather than let it
        lapse).
        """
        if all(req.finished for req in self.queue) and all(
            entry[2].finished for entry in self.later
        ):
            self.queue.clear()
            del self.later[:]
            timer, self.timer = self.timer, None
            if timer is not None:
                timer.cancel()


class _BodyWatch:
    """
    The idle timeout of an answer's body, read after its head (see
    L{_Deadlines.watch}): the request's C{timeout} bounds each wait for
    the next piece of it, as nginx's C{proxy_read_timeout} does, so that
    an upstream that stalls mid-body cannot hold the client and the
    connection for good.  The time the gateway itself holds the upstream
    back (its client reads slowly: the server channel's C{sendTimeout}
    bounds that) does not count.
    """

    __slots__ = ("response", "seen")

    def __init__(self, response: _Response) -> None:
        self.response = response
        self.seen = 0

    @property
    def finished(self) -> bool:
        """
        Whether the body ended (nothing left to time).
        """
        return self.response._done

    def moreTime(self, now: float, timeout: float) -> Optional[float]:
        """
        @return: the next deadline when a piece of the body came since the
            last look, or the upstream is held back; else L{None}.
        """
        response = self.response
        conn = response._conn
        if conn is None:
            return None
        if response.received != self.seen or conn.transportPaused:
            self.seen = response.received
            return now + timeout
        return None

    def timedOut(self) -> None:
        conn = self.response._conn
        if conn is not None:
            conn.fail(UpstreamTimeout("upstream sent none of the answer's body in time"))


def _nothing(*args: object) -> None:
    pass


#: The shortest queue of deadlines that is compacted (L{_Deadlines.add}).
_COMPACT_AT = 1024


class _Address:
    """
    An L{UpstreamAddress} of L{UpstreamAgent}'s.
    """

    __slots__ = ("host", "port", "tls")

    def __init__(self, host: str, port: int, tls: Optional[UpstreamTLS] = None) -> None:
        self.host = host
        self.port = port
        self.tls = tls


def _hostBytes(host: str) -> bytes:
    """
    @return: a backend's host as its endpoint takes it (IDNA for a name
        that is not ASCII).
    """
    try:
        return host.encode("ascii")
    except UnicodeEncodeError:
        return host.encode("idna")


@implementer(IUpstreamClient, IUpstreamUpgrader)
class HTTP11UpstreamClient:
    """
    L{IUpstreamClient} with a parser and keep-alive pool of its own.

    Failures: L{UpstreamConnectError} when no connection could be made,
    L{UpstreamTimeout} when the response head did not arrive within the
    request's timeout (connecting included) or connecting timed out,
    L{UpstreamBroken} when the connection broke before the head or the
    answer is not valid HTTP/1.1 (bad status line or fields, head over
    L{MAX_HEAD}, conflicting C{Content-Length}, a transfer coding other
    than chunked, both C{Transfer-Encoding} and C{Content-Length}, a 101 to
    a request that did not ask to upgrade).  A body
    that breaks after the head ends its
    protocol with L{ResponseFailed}.

    A request whose reused connection broke before any byte of the answer
    (the upstream closed it while idle) is sent once more on a new
    connection, if its method is idempotent and its body is absent or in
    memory (L{BytesBodyProducer}): RFC 9112 9.3.1.1 forbids a proxy to
    retry any other.

    @param reactor: the reactor: an L{IReactorTime} that is also an
        L{IReactorTCP} (see L{CachedEndpointFactory}).
    @param connectTimeout: seconds to wait for a connection.
    @param maxIdlePerBackend: idle keep-alive connections kept per backend
        address; more are closed when their request ends.
    @param idleTimeout: seconds an idle connection is kept.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        connectTimeout: float = 5.0,
        maxIdlePerBackend: int = DEFAULT_MAX_IDLE,
        idleTimeout: float = 60.0,
    ) -> None:
        self._reactor = reactor
        self._endpoints = CachedEndpointFactory(reactor, connectTimeout)
        self._maxIdle = maxIdlePerBackend
        self._idleTimeout = idleTimeout
        self._pools: Dict[Tuple[str, int, Optional[UpstreamTLS]], _HostPool] = {}
        self._deadlines: Dict[float, _Deadlines] = {}
        self._closed = False

    def _newPool(self, host: str, port: int, tls: Optional[UpstreamTLS]) -> _HostPool:
        hostBytes = _hostBytes(host)
        endpoint = self._endpoints.endpointFor(hostBytes, port, tls)
        authority = b"[" + hostBytes + b"]" if b":" in hostBytes else hostBytes
        if port != (80 if tls is None else 443):
            authority += b":%d" % (port,)
        pool = self._pools[(host, port, tls)] = _HostPool(
            self, endpoint, b"Host: " + authority + b"\r\n"
        )
        return pool

    def send(
        self,
        backend: UpstreamAddress,
        method: bytes,
        uri: bytes,
        headers: Headers,
        bodyProducer: Optional[IBodyProducer],
        timeout: Optional[float],
        onResponse: Callable[..., object],
        onFailure: Callable[..., object],
        *args: object,
    ) -> _Request:
        """
        See L{IUpstreamClient.send}.  The upstream's
        L{gateway.http.errors.UpstreamBroken} reports a connection that
        broke or an answer that is not valid HTTP/1.1.

        @return: the L{IUpstreamRequest}, whose C{cancel()} abandons it and
            whose C{finished} says whether it is over.
        """
        req = _Request(method)
        # (Bytes looked for as ints: a memchr each.)
        if not uri or 0x20 in uri or 0x0D in uri or 0x0A in uri:
            req.finished = True
            onFailure(Failure(ValueError(f"invalid request target: {uri!r}")), *args)
            return req
        req.onResponse = onResponse
        req.onFailure = onFailure
        req.args = args
        # (A backend over TLS is pooled apart, by its TLS settings.)
        tls = getattr(backend, "tls", None)
        pool = self._pools.get((backend.host, backend.port, tls))
        if pool is None:
            pool = self._newPool(backend.host, backend.port, tls)
        # Host goes first (RFC 9112 3.2), unless the caller gave one.
        parts = [method, b" ", uri, b" HTTP/1.1\r\n", pool.hostLine]
        extend = parts.extend
        for name, values in headers.getAllRawHeaders():
            if name in _SPECIAL:
                if _SPECIAL[name]:
                    continue
                parts[4] = b""
            if len(values) == 1:
                # (Most headers have one value: no inner loop.)
                extend((name, b": ", values[0], b"\r\n"))
            else:
                for value in values:
                    extend((name, b": ", value, b"\r\n"))
        if bodyProducer is None:
            parts.append(b"Content-Length: 0\r\n\r\n" if method in _BODY_METHODS else b"\r\n")
            req.retryable = method in _IDEMPOTENT
        elif type(bodyProducer) is BytesBodyProducer:
            # An in-memory body goes out with the head, in one write, and
            # can be sent again.
            body = bodyProducer._body
            parts.append(b"Content-Length: %d\r\n\r\n" % (len(body),))
            parts.append(body)
            req.retryable = method in _IDEMPOTENT
        else:
            length = bodyProducer.length
            if length is UNKNOWN_LENGTH:
                parts.append(b"Transfer-Encoding: chunked\r\n\r\n")
                req.chunked = True
            else:
                parts.append(b"Content-Length: %d\r\n\r\n" % (length,))
                req.length = length
            req.producer = bodyProducer
        req.data = b"".join(parts)
        if timeout is not None:
            deadlines = self._deadlines.get(timeout)
            if deadlines is None:
                deadlines = self._deadlines[timeout] = _Deadlines(self._reactor, timeout)
            deadlines.add(req)
        idle = pool.idle
        if idle:
            conn = idle.pop()
            conn.inPool = False
            conn.send(req)
        else:
            pool.connect(req)
        return req

    def upgrade(
        self,
        backend: UpstreamAddress,
        method: bytes,
        uri: bytes,
        headers: Headers,
        timeout: Optional[float],
        onResponse: Callable[..., object],
        onFailure: Callable[..., object],
        *args: object,
    ) -> _Request:
        """
        See L{IUpstreamUpgrader.upgrade}: a 101 answer is a
        L{_SwitchedResponse}, whose connection leaves the pool for good.
        """
        req = self.send(backend, method, uri, headers, None, timeout, onResponse, onFailure, *args)
        # Read when the answer's head arrives, which is never within send.
        req.upgrade = True
        return req

    def retainOnly(self, addresses: AbstractSet[Tuple[str, int]]) -> int:
        """
        Forget the backend addresses that are not in C{addresses}: close
        their idle connections, and drop their pools and endpoints (with
        DNS discovery, addresses come and go for good: what was kept of
        each would otherwise grow for as long as the process runs).  Their
        connections in use serve their requests to the end, and are then
        closed.  A request sent to such an address later makes its pool
        again.

        @param addresses: C{(host, port)} of every backend in use.
        @return: how many pools were dropped.
        """
        gone = [key for key in self._pools if (key[0], key[1]) not in addresses]
        for key in gone:
            pool = self._pools.pop(key)
            pool.retired = True
            pool.closeIdle()
            host, port, tls = key
            self._endpoints.forget(_hostBytes(host), port, tls)
        return len(gone)

    def close(self) -> Deferred[None]:
        """
        Close every idle connection; connections in use are closed when
        their request ends (switched ones, L{upgrade}'s, belong to whoever
        took them).

        @return: a Deferred that fires when the idle ones are closed.
        """
        self._closed = True
        for deadlines in self._deadlines.values():
            deadlines.stopIfDone()
        waits: List[Deferred[None]] = []
        for pool in self._pools.values():
            waits.extend(pool.closeIdle())
        return defer.gatherResults(waits).addCallback(lambda _: None)


@implementer(IClientRequest)
class _ClientRequest:
    __slots__ = ("method", "absoluteURI", "headers")

    def __init__(self, method: bytes, absoluteURI: bytes, headers: Headers) -> None:
        self.method = method
        self.absoluteURI = absoluteURI
        self.headers = headers


@implementer(IAgent)
class UpstreamAgent:
    """
    An L{IAgent} on an L{HTTP11UpstreamClient}'s pools, for C{http://} URIs,
    so that treq can use the lean client: C{HTTPClient(UpstreamAgent(c))}.

    Failures are the gateway's (L{UpstreamConnectError}, L{UpstreamBroken},
    L{UpstreamTimeout}), not Twisted's.

    @param client: the L{HTTP11UpstreamClient}.
    @param timeout: seconds to wait for each response's head, or L{None}.
    """

    def __init__(self, client: HTTP11UpstreamClient, timeout: Optional[float] = None) -> None:
        self._client = client
        self._timeout = timeout
        self._addresses: Dict[Tuple[bytes, int], _Address] = {}

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Optional[Headers] = None,
        bodyProducer: Optional[IBodyProducer] = None,
    ) -> Deferred[IResponse]:
        try:
            parts = urlsplit(uri)
            if parts.scheme.lower() != b"http":
                raise SchemeNotSupported(f"unsupported scheme: {parts.scheme!r}")
            host = parts.hostname
            port = parts.port or 80
            if not host:
                raise ValueError(f"no host in {uri!r}")
        except Exception:
            return defer.fail()
        target = parts.path or b"/"
        if parts.query:
            target += b"?" + parts.query
        address = self._addresses.get((host, port))
        if address is None:
            address = self._addresses[(host, port)] = _Address(host.decode("ascii"), port)
        if headers is None:
            headers = Headers()
        d = request(self._client, address, method, target, headers, bodyProducer, self._timeout)
        d.addCallback(_withRequest, _ClientRequest(method, uri, headers))
        return d


def _withRequest(response: IResponse, request: _ClientRequest) -> IResponse:
    response.request = request
    return response


def request(
    client: IUpstreamClient,
    backend: UpstreamAddress,
    method: bytes,
    uri: bytes,
    headers: Headers,
    bodyProducer: Optional[IBodyProducer] = None,
    timeout: Optional[float] = None,
) -> Deferred[IResponse]:
    """
    Send a request through any L{IUpstreamClient}, for code that prefers a
    L{Deferred} to L{IUpstreamClient.send}'s callbacks (health checks,
    mirrors, treq through L{UpstreamAgent}).

    @return: a Deferred that fires with the response or fails as
        C{onFailure} would be called; cancelling it abandons the request.
    """
    sent: List[IUpstreamRequest] = []

    def cancel(d: Deferred[IResponse]) -> None:
        if sent:
            sent[0].cancel()

    d: Deferred[IResponse] = Deferred(cancel)
    sent.append(
        client.send(backend, method, uri, headers, bodyProducer, timeout, _callback, _errback, d)
    )
    return d


def _callback(response: IResponse, d: Deferred[IResponse]) -> None:
    d.callback(response)


def _errback(failure: Failure, d: Deferred[IResponse]) -> None:
    # A cancelled request reports its CancelledError after Deferred.cancel
    # has failed the Deferred already.
    if not d.called:
        d.errback(failure)
