"""
Errors of the request path, and how they reach the client.

Every answer the gateway makes itself (404, 429, 502, ...) is a JSON object
C{{"error": "...", ...}}, the same shape as the admin API's errors.
"""

from __future__ import annotations

import json
from typing import Dict, Mapping, Optional, Sequence, Union

import attrs


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


@attrs.frozen
class EarlyResponse:
    """
    An answer a filter (or the proxy) gives without asking any backend.

    @ivar code: the HTTP status.
    @ivar body: the JSON object of the answer.
    @ivar headers: extra response headers, C{{name: [values]}}.
    @ivar encoded: C{body} as JSON, when the maker has it already (an
        aggregation splices its nodes' answers): L{encode} returns it.
    """

    code: int
    body: Mapping[str, object]
    headers: Mapping[Union[str, bytes], Sequence[Union[str, bytes]]] = attrs.Factory(dict)
    #: C{body} already encoded (what L{encode} returns), or L{None}.
    encoded: Optional[bytes] = None

    @classmethod
    def error(
        cls,
        code: int,
        message: str,
        headers: Optional[Mapping[Union[str, bytes], Sequence[Union[str, bytes]]]] = None,
        **extra: object,
    ) -> EarlyResponse:
        """
        @return: a JSON error answer C{{"error": message, **extra}}.
        """
        body: Dict[str, object] = {"error": message}
        body.update(extra)
        return cls(code, body, headers or {})

    def encode(self) -> bytes:
        if self.encoded is not None:
            return self.encoded
        return json.dumps(self.body, separators=(",", ":")).encode("utf-8") + b"\n"
