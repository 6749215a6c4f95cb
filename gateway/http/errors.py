"""
Why a request to a backend failed, as the engine reports it: no
connection (L{UpstreamConnectError}; L{UpstreamTLSError} when TLS could
not be set up), no answer in time (L{UpstreamTimeout}), a broken exchange
(L{UpstreamBroken}).  Each carries the status and reason the client gets
(C{status}, C{reason}), and the other fields of its JSON error
(C{details}).
"""

from __future__ import annotations

from typing import Mapping, Optional


class UpstreamError(Exception):
    """
    A request to a backend failed.  C{status} is what the client gets.
    """

    status = 502
    reason = "upstream error"
    #: Seconds after which a retry may succeed (sent as Retry-After).
    retryAfter: Optional[float] = None
    #: More fields of the client's JSON error.
    details: Mapping[str, object] = {}


class UpstreamConnectError(UpstreamError):
    """
    No connection could be made to the backend (refused, unreachable).
    """

    status = 502
    reason = "upstream refused the connection"


class UpstreamTimeout(UpstreamError):
    """
    The backend did not answer in time.
    """

    status = 504
    reason = "upstream timed out"


class UpstreamBroken(UpstreamError):
    """
    The connection to the backend broke, or it answered with garbage.
    """

    status = 502
    reason = "upstream connection failed"


class UpstreamTLSError(UpstreamConnectError):
    """
    TLS to the backend could not be set up: its certificate failed
    verification, or the handshake failed.  Never followed by plain HTTP.

    @ivar kind: what failed, for the client's JSON (C{"tls"}):
        C{expired}, C{not-yet-valid}, C{unknown-ca}, C{name-mismatch},
        C{bad-certificate} or C{handshake}.
    """

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.reason = "upstream TLS failed: " + message
        self.details = {"tls": kind}
