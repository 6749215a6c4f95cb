"""
Why a request to a backend failed, as the engine reports it: no
connection (L{UpstreamConnectError}), no answer in time (L{UpstreamTimeout}),
a broken exchange (L{UpstreamBroken}).  Each carries the status and reason
the client gets (C{status}, C{reason}).
"""

from __future__ import annotations

from typing import Optional


class UpstreamError(Exception):
    """
    A request to a backend failed.  C{status} is what the client gets.
    """

    status = 502
    reason = "upstream error"
    #: Seconds after which a retry may succeed (sent as Retry-After).
    retryAfter: Optional[float] = None


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
