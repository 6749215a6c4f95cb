"""
The live state of one backend server, shared by every snapshot.

A L{Backend} outlives configuration changes: when a new snapshot is built,
servers that still exist keep their L{Backend} (and so their in-flight
count, latency average, health and breaker), so a reload never resets the
protection of a struggling server.
"""

from __future__ import annotations

from typing import Optional

from gateway.model import Server, splitAddr

#: Weight of the newest sample in the latency average.
EWMA_ALPHA = 0.3


class Backend:
    """
    One server as the proxy sees it while it runs.

    @ivar name: the server's name.
    @ivar host: the host to connect to.
    @ivar port: the port to connect to.
    @ivar weight: the server's weight for weighted balancing.
    @ivar config: the L{gateway.model.Server} this backend was last built from.
    @ivar active: requests in flight to this backend.
    @ivar ewma: exponentially weighted moving average of response times
        (seconds), 0.0 before the first response.
    @ivar healthy: L{False} while the active health check says it is down.
    @ivar breaker: the circuit breaker guarding it, or L{None}; anything with
        an C{allows()} method that says whether a request may go now.
    """

    def __init__(self, config: Server) -> None:
        self.active = 0
        self.ewma = 0.0
        self.healthy = True
        self.breaker: Optional[object] = None
        self.configure(config)

    def configure(self, config: Server) -> None:
        """
        Take a new configuration, keeping the live state.
        """
        self.config = config
        self.name = config.name
        self.host, self.port = splitAddr(config.addr)
        self.weight = config.weight

    def available(self) -> bool:
        """
        @return: whether the balancer may pick this backend now: healthy,
            not drained (weight 0) and not held off by its breaker.
        """
        if not self.healthy or self.weight <= 0:
            return False
        breaker = self.breaker
        return breaker is None or breaker.allows()  # type: ignore[attr-defined]

    def requestStarted(self) -> None:
        self.active += 1

    def requestFinished(self, latency: Optional[float]) -> None:
        """
        @param latency: seconds to the response headers, or L{None} when the
            request failed before any answer.
        """
        self.active -= 1
        if latency is not None:
            if self.ewma == 0.0:
                self.ewma = latency
            else:
                self.ewma += EWMA_ALPHA * (latency - self.ewma)

    def __repr__(self) -> str:
        return f"<Backend {self.name} {self.host}:{self.port} active={self.active}>"
