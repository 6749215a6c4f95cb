"""
Why a request could not be sent to any backend: no healthy server
(L{NoBackendAvailable}, 503) or every server at its C{maxQPS}
(L{ServersRateLimited}, 429).
"""

from __future__ import annotations

from gateway.http.errors import UpstreamError


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
