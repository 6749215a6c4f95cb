"""
The live state of one backend server, shared by every snapshot.

A L{Backend} outlives configuration changes: when a new snapshot is built,
servers that still exist keep their L{Backend} (and so their in-flight
count, latency average, health, breaker and rate limiter), so a reload
never resets the protection of a struggling server.

Availability, as balancers see it (L{Backend.available}): the active
health check says healthy, passive checks have not ejected it, its weight
is above zero, its circuit breaker lets traffic through and its C{maxQPS}
bucket has a token.
"""

from __future__ import annotations

import random as _random
from typing import Any, FrozenSet, Optional

from gateway.model.resources import Server, splitAddr

#: Weight of the newest sample in the latency average.
EWMA_ALPHA = 0.3


#: Upstream statuses that count as failures when a server has no breaker
#: saying otherwise.
DEFAULT_FAILURE_STATUSES: FrozenSet[int] = frozenset((500, 502, 503, 504))


class Backend:
    """
    One server as the proxy sees it while it runs.

    @ivar name: the server's name.
    @ivar host: the host to connect to.
    @ivar port: the port to connect to.
    @ivar tls: how to speak TLS to it (a L{gateway.http.tls.UpstreamTLS}),
        or L{None} for plain HTTP.
    @ivar weight: the server's weight for weighted balancing.
    @ivar config: the L{gateway.model.resources.Server} this backend was last built from.
    @ivar active: requests in flight to this backend.
    @ivar ewma: exponentially weighted moving average of response times
        (seconds), 0.0 before the first response.
    @ivar healthy: L{False} while the active health check says it is down.
    @ivar ejectedUntil: reactor time until which passive health checking
        keeps it out of rotation (0.0 when not ejected).
    @ivar consecutiveFailures: proxied requests that failed in a row.
    @ivar breaker: its L{gateway.protection.breaker.CircuitBreaker}, or L{None}.
    @ivar limiter: its C{maxQPS} L{gateway.protection.ratelimit.TokenBucket}, or L{None}.
    @ivar requests: requests sent to it since the process started.
    @ivar failures: those of them that failed.
    @ivar origin: how DNS discovery found it (a
        L{gateway.discovery.records.Origin}), or L{None} for a server used
        as configured.
    """

    def __init__(
        self,
        config: Server,
        reactor: Any,
        random: Optional[_random.Random] = None,
        buckets: Any = None,
        tls: Optional[Any] = None,
    ) -> None:
        """
        @param reactor: an L{IReactorTime}: breakers, ejection and limits
            read time from it.
        @param tls: see L{configure}.
        @param buckets: what makes its C{maxQPS} bucket: one of this
            process (L{None}), or the workers'
            L{gateway.protection.sharedbuckets.SharedBuckets}.
        """
        self._buckets = buckets
        self._reactor = reactor
        self._random = random or _random.Random()
        self.active = 0
        self.ewma = 0.0
        self.healthy = True
        self.ejectedUntil = 0.0
        self.consecutiveFailures = 0
        self.requests = 0
        self.failures = 0
        self.breaker: Optional[Any] = None
        self.limiter: Optional[Any] = None
        self.config: Optional[Server] = None
        self.tls: Optional[Any] = None
        self.origin: Optional[Any] = None
        self.configure(config, tls)

    def configure(self, config: Server, tls: Optional[Any] = None) -> None:
        """
        Take a new configuration, keeping the live state; a breaker or rate
        limiter whose settings did not change is kept as it is.

        @param tls: the L{gateway.http.tls.UpstreamTLS} made of
            C{config.tls} (and of its client certificate), or L{None}.
        """
        previous = self.config
        self.config = config
        self.name = config.name
        self.host, self.port = splitAddr(config.addr)
        self.tls = tls
        self.weight = config.weight
        breakerConfig = config.circuitBreaker
        self.failureStatuses = (
            frozenset(breakerConfig.failureStatuses)
            if breakerConfig is not None
            else DEFAULT_FAILURE_STATUSES
        )
        if previous is None or previous.circuitBreaker != breakerConfig:
            if breakerConfig is None:
                self.breaker = None
            else:
                from gateway.protection.breaker import CircuitBreaker

                oldBreaker = self.breaker
                self.breaker = CircuitBreaker(
                    breakerConfig, self._reactor, self._random, name=f"server/{config.name}"
                )
                if oldBreaker is not None:
                    # New settings, same server: an open breaker stays open.
                    self.breaker.takeOver(oldBreaker)
        if previous is None or previous.maxQPS != config.maxQPS:
            if config.maxQPS <= 0:
                self.limiter = None
            else:
                from gateway.protection.ratelimit import LOCAL

                old = self.limiter if previous is not None else None
                self.limiter = (self._buckets or LOCAL).bucket(
                    f"server/{config.name}/maxQPS/{config.maxQPS}",
                    config.maxQPS,
                    config.maxQPS,
                    self._reactor,
                )
                if old is not None:
                    # A changed maxQPS neither resets nor doubles the
                    # server's budget: the bucket starts at the old level.
                    self.limiter.takeOver(old)
        if previous is not None and previous.passiveHealth != config.passiveHealth:
            # New settings count anew; an ejected server stays out for the
            # time it was given, unless passive checks are off now.
            self.consecutiveFailures = 0
            if config.passiveHealth is None:
                self.ejectedUntil = 0.0

    def available(self) -> bool:
        """
        @return: whether the balancer may pick this backend now.
        """
        if not self.healthy or self.weight <= 0:
            return False
        if self.ejectedUntil and self._reactor.seconds() < self.ejectedUntil:
            return False
        breaker = self.breaker
        if breaker is not None and not breaker.allows():
            return False
        limiter = self.limiter
        return limiter is None or limiter.allows()

    def unavailableReason(self) -> str:
        """
        @return: why L{available} says no: C{"unhealthy"}, C{"drained"},
            C{"ejected"}, C{"circuit-open"}, C{"rate-limited"},
            C{"limits-unavailable"} or C{""}.
        """
        if not self.healthy:
            return "unhealthy"
        if self.weight <= 0:
            return "drained"
        if self.ejectedUntil and self._reactor.seconds() < self.ejectedUntil:
            return "ejected"
        if self.breaker is not None and not self.breaker.allows():
            return "circuit-open"
        if self.limiter is not None and not self.limiter.allows():
            # A refusal for want of the fleet's store of buckets (limits.store,
            # onFailure: closed) is no rate limit: 503, not 429.
            return "limits-unavailable" if self.limiter.unavailable else "rate-limited"
        return ""

    def requestStarted(self) -> bool:
        """
        A request is sent to it: take its C{maxQPS} token, and count it.

        @return: whether it may go; L{False} (and nothing counted) when the
            C{maxQPS} token is gone since L{available} said yes, which only
            another process sharing the bucket can do (see
            L{startRequest}).
        """
        limiter = self.limiter
        if limiter is not None and not limiter.take():
            return False
        self.active += 1
        self.requests += 1
        if self.breaker is not None:
            # In half-open, holds one trial slot until the outcome is known.
            self.breaker.requestStarted()
        return True

    def requestFinished(
        self, latency: Optional[float], ok: Optional[bool] = True, sentAt: Optional[float] = None
    ) -> None:
        """
        @param latency: seconds to the response headers, or L{None} when the
            request failed before any answer.
        @param ok: whether it succeeded, as the breaker and passive health
            checking count success (see L{isFailureStatus}); L{None} when the
            outcome says nothing about the server (the client went away).
        @param sentAt: the clock time the request was started, when known:
            a half-open breaker judges only the requests sent as its trials
            (see L{gateway.protection.breaker.CircuitBreaker.record}).
        """
        self.active -= 1
        if ok is None:
            if self.breaker is not None:
                self.breaker.record(None, sentAt)
            return
        if latency is not None:
            if self.ewma == 0.0:
                self.ewma = latency
            else:
                self.ewma += EWMA_ALPHA * (latency - self.ewma)
        if self.breaker is not None:
            self.breaker.record(ok, sentAt)
        if ok:
            self.consecutiveFailures = 0
            return
        self.failures += 1
        self.consecutiveFailures += 1
        passive = self.config.passiveHealth if self.config is not None else None
        if passive is not None and self.consecutiveFailures >= passive.consecutiveFailures:
            self.ejectedUntil = self._reactor.seconds() + passive.ejectTime
            self.consecutiveFailures = 0

    def isFailureStatus(self, code: int) -> bool:
        """
        @return: whether an upstream status counts as a failure of this
            server.
        """
        return code in self.failureStatuses

    def __repr__(self) -> str:
        scheme = "https://" if self.tls is not None else ""
        return f"<Backend {self.name} {scheme}{self.host}:{self.port} active={self.active}>"


def startRequest(cluster: Any, backend: Optional[Backend], tried: tuple = ()) -> Optional[Backend]:
    """
    Start a request (L{Backend.requestStarted}) on C{backend}, which
    C{cluster} picked, or, when another worker took that server's last
    C{maxQPS} token since, on another available server of C{cluster} not
    in C{tried}.

    @return: the backend the request was started on, or L{None} when there
        is none.
    """
    while backend is not None:
        if backend.requestStarted():
            return backend
        tried = tried + (backend,)
        backend = None
        for other in cluster.backends:
            if other not in tried and other.available():
                backend = other
                break
    return None
