"""
What the HTTP server accepts from a client and how long it waits: the
C{proxy.limits} section of the config file (L{HTTPLimits}), with its
C{http2} part (L{HTTP2Limits}).
"""

from __future__ import annotations

from typing import Optional

import attrs
from twisted.logger import Logger

from gateway.model.schema import Bool, Int, Nullable, Obj, Seconds, field

log = Logger()

__all__ = [
    "ADMIN_LIMITS",
    "DEFAULT_MAX_IDLE",
    "HTTP2Limits",
    "HTTPLimits",
]

MB = 1024 * 1024

#: Idle keep-alive connections kept per backend address, by default (the
#: config's C{proxy.upstreamKeepalive} and the upstream client's default).
DEFAULT_MAX_IDLE = 512


#: The largest flow-control window HTTP/2 allows (RFC 9113 6.9.1).
MAX_WINDOW = (1 << 31) - 1


@attrs.frozen
class HTTP2Limits:
    """
    What an HTTP/2 connection may ask of the server: the C{proxy.limits.http2}
    section.  The timeouts and the size limits of L{HTTPLimits} apply to
    HTTP/2 requests as they do to HTTP/1.1 ones; these are HTTP/2's own.

    The flood budgets are token buckets per connection: a connection may
    send that many frames of a kind at once, and earns them back evenly
    over C{floodWindow} seconds; one frame over the budget ends the
    connection with C{GOAWAY ENHANCE_YOUR_CALM}.

    @ivar maxConcurrentStreams: streams a client may have open at once on
        one connection (C{SETTINGS_MAX_CONCURRENT_STREAMS}).
    @ivar maxHeaderListSize: bytes of request header fields, counted as
        HTTP/2 does (name, value and 32 per field), announced as
        C{SETTINGS_MAX_HEADER_LIST_SIZE}: a larger request is answered 431,
        one over twice as large ends the connection.
    @ivar initialWindowSize: bytes of a request body a client may send on a
        stream before the gateway passes them on (the stream's flow-control
        window); the connection's window is this times
        C{maxConcurrentStreams}.  What a connection holds of request bodies
        is bounded by C{maxConcurrentStreams} times this plus 64 KiB.
    @ivar maxContinuationFrames: CONTINUATION frames one header block may
        span.
    @ivar floodWindow: seconds over which the budgets below are earned back.
    @ivar resetBudget: streams a client may reset (C{RST_STREAM}: the 2023
        "rapid reset" attack cancels streams as fast as it opens them).
    @ivar pingBudget: C{PING} frames.
    @ivar settingsBudget: C{SETTINGS} frames.
    @ivar priorityBudget: C{PRIORITY} frames.
    @ivar emptyFrameBudget: frames that carry nothing: C{DATA} without a
        byte or the stream's end, empty C{HEADERS} or C{CONTINUATION}
        fragments that do not end their block, frames of unknown types.
    """

    maxConcurrentStreams: int = field(
        Int(1, 10_000), 100, doc="streams open at once per connection"
    )
    maxHeaderListSize: int = field(
        Int(1024, 1 << 22), 32768, doc="bytes of request header fields; 431, twice: GOAWAY"
    )
    initialWindowSize: int = field(
        Int(65535, MAX_WINDOW),
        65535,
        doc="bytes of a request body in flight per stream (flow-control window)",
    )
    maxContinuationFrames: int = field(
        Int(0, 64), 16, doc="CONTINUATION frames per header block; more: GOAWAY"
    )
    floodWindow: float = field(
        Seconds(3600), 10.0, doc="seconds over which the frame budgets are earned back"
    )
    resetBudget: int = field(
        Int(1, 1 << 30), 200, doc="streams a client may reset per floodWindow (rapid reset)"
    )
    pingBudget: int = field(Int(1, 1 << 30), 100, doc="PING frames per floodWindow")
    settingsBudget: int = field(Int(1, 1 << 30), 100, doc="SETTINGS frames per floodWindow")
    priorityBudget: int = field(Int(1, 1 << 30), 1000, doc="PRIORITY frames per floodWindow")
    emptyFrameBudget: int = field(
        Int(1, 1 << 30), 100, doc="frames carrying nothing (empty DATA...) per floodWindow"
    )


@attrs.frozen
class HTTPLimits:
    """
    What the server accepts from a client, and how long it waits.  The
    fields carry schema specs, so this is also a config section
    (C{proxy.limits}).

    @ivar maxRequestLineLength: the longest request line, in bytes (414).
    @ivar maxHeadersSize: the largest request head (request line and every
        header line), in bytes (431).
    @ivar maxHeaderCount: the most header lines in one request (431).
    @ivar maxBodySize: the largest request body, in bytes, unless the
        request's route says otherwise; L{None} for no limit (413).
    @ivar headerTimeout: seconds to receive a whole request head, from the
        connection (first request) or from its first byte (later requests
        on a kept-alive connection) (408).
    @ivar bodyTimeout: seconds to receive a whole request body, from the
        end of its head, plus one second for every C{minBodyRate} bytes
        received (408): a large upload at a fair pace gets the time it
        needs, a body trickled in gets C{bodyTimeout}.
    @ivar minBodyRate: see C{bodyTimeout}; 0 for C{bodyTimeout} alone.
    @ivar idleTimeout: seconds a kept-alive connection may stay idle between
        requests before it is closed.
    @ivar sendTimeout: seconds the client may take no bytes of its answer
        (the gateway's send buffer for it stays full, or a closing
        connection's last bytes wait) before its connection is cut, and
        with it the upstream connection feeding the answer.
    @ivar rejectAmbiguousPaths: whether paths a backend could normalise
        into another path are refused (400); see L{ambiguousPath}.
    @ivar http2: HTTP/2's own limits (L{HTTP2Limits}).
    """

    maxRequestLineLength: int = field(Int(256, 1 << 20), 8192, doc="bytes; longer: 414")
    maxHeadersSize: int = field(Int(1024, 1 << 22), 32768, doc="bytes of request head; 431")
    maxHeaderCount: int = field(Int(1, 10_000), 100, doc="header lines; more: 431")
    maxBodySize: Optional[int] = field(
        Nullable(Int(0, 1 << 50)), 1024 * MB, doc="bytes, unless the API sets its own; 413"
    )
    headerTimeout: float = field(Seconds(3600), 10.0, doc="seconds; 408")
    bodyTimeout: float = field(Seconds(86400), 60.0, doc="seconds, plus minBodyRate's; 408")
    minBodyRate: int = field(
        Int(0, 1 << 40), 65536, doc="bytes/s a long body earns time at; 0 = bodyTimeout only"
    )
    idleTimeout: float = field(Seconds(86400), 60.0, doc="seconds")
    sendTimeout: float = field(
        Seconds(86400),
        60.0,
        doc="seconds a client may read nothing of its answer before it is cut",
    )
    rejectAmbiguousPaths: bool = field(Bool(), True, doc="refuse //, dot segments, %2F (400)")
    http2: HTTP2Limits = field(
        Obj(HTTP2Limits),
        attrs.Factory(HTTP2Limits),
        doc="HTTP/2 streams, header list size, flow control and flood budgets",
    )


#: The admin site's limits: small bodies (resources are small JSON objects).
ADMIN_LIMITS = HTTPLimits(maxBodySize=MB)
