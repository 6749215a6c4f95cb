"""
What the HTTP server accepts from a client and how long it waits: the
C{proxy.limits} section of the config file (L{HTTPLimits}).
"""

from __future__ import annotations

from typing import Optional

import attrs
from twisted.logger import Logger

from gateway.model.schema import Bool, Int, Nullable, Seconds, field

log = Logger()

__all__ = [
    "ADMIN_LIMITS",
    "DEFAULT_MAX_IDLE",
    "HTTPLimits",
]

MB = 1024 * 1024

#: Idle keep-alive connections kept per backend address, by default (the
#: config's C{proxy.upstreamKeepalive} and the upstream client's default).
DEFAULT_MAX_IDLE = 512


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


#: The admin site's limits: small bodies (resources are small JSON objects).
ADMIN_LIMITS = HTTPLimits(maxBodySize=MB)
