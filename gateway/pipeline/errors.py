"""
Why a request could not be sent to any backend: no healthy server
(L{NoBackendAvailable}, 503), every server held off by its breaker
(L{CircuitOpen}, 503) or at its C{maxQPS} (L{ServersRateLimited}, 429); and
how stats name what ended a request (L{outcomeOf}).
"""

from __future__ import annotations

from typing import Optional

from gateway.http.bodystream import RequestBodyError
from gateway.http.errors import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamTimeout,
)


class NoBackendAvailable(UpstreamError):
    """
    Every server of the cluster is down, drained or held off by its breaker.
    """

    status = 503
    reason = "no healthy server available"


class ServersRateLimited(UpstreamError):
    """
    Every server of the cluster is at its C{maxQPS}.
    """

    status = 429
    reason = "rate limit exceeded"

    def __init__(self, message: str, retryAfter: float) -> None:
        super().__init__(message)
        self.retryAfter = retryAfter


class CircuitOpen(NoBackendAvailable):
    """
    Every server of the cluster that could serve is held off by its
    circuit breaker.
    """

    reason = "circuit open: no server is admitting traffic"


_OUTCOMES = (
    (RequestBodyError, "body"),
    (UpstreamTimeout, "timeout"),
    (UpstreamConnectError, "refused"),
    (ServersRateLimited, "reject:server-limit"),
    (CircuitOpen, "reject:circuit-breaker"),
    (NoBackendAvailable, "unavailable"),
)


def outcomeOf(error: Optional[BaseException]) -> str:
    """
    @return: the outcome of a request that failed with C{error}, as
        recorded in stats: C{timeout}, C{refused}, C{reject:server-limit},
        C{reject:circuit-breaker} (every server's breaker open),
        C{unavailable}, C{body} (the client's body failed) or C{broken}.
    """
    for kind, outcome in _OUTCOMES:
        if isinstance(error, kind):
            return outcome
    return "broken"
