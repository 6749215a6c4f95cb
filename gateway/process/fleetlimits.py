"""
Putting the fleet's limits together (C{limits:} in the config file): the
Redis client of a process (which the response cache shares), the buckets
on it, and the count of live gateways they divide the limits by while
Redis is away.

Without C{limits.store} nothing here is made: the limits keep the buckets
of their process, or of the workers' shared memory, as before.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from gateway.model.sharedlimits import LimitsConfig, parseRedisURL, redactedURL
from gateway.polling import PollingService
from gateway.protection.redisbuckets import RedisBuckets
from gateway.redis.client import RedisClient

log = Logger()


def redisClient(config: Any, reactor: Any) -> Optional[RedisClient]:
    """
    The one Redis client of a process, that the fleet's limits and the
    response cache share (one connection): a service named C{redis},
    which connects when it starts.

    @param config: the L{gateway.model.config.GatewayConfig}.
    @return: the client of C{limits.store}, or L{None} without C{limits:}.
    """
    limits = config.limits
    if limits is None:
        return None
    return RedisClient(parseRedisURL(limits.store), reactor, timeout=limits.timeout)


class FleetLimits(MultiService):
    """
    The buckets of one proxy process's limits on Redis, as a service.

    @ivar client: the L{RedisClient} they use (see L{redisClient}).
    @ivar buckets: the L{RedisBuckets}, the limits' C{buckets} factory.
    """

    name = "fleet-limits"

    def __init__(
        self, config: LimitsConfig, reactor: Any, local: Any, client: Optional[RedisClient] = None
    ) -> None:
        """
        @param config: the C{limits:} section.
        @param local: what makes this gateway's own buckets (the fallback
            of C{onFailure: local}): L{gateway.protection.ratelimit.LOCAL} or
            the workers' shared buckets.
        @param client: the process's Redis client (a service of its own,
            that starts before these limits and stops after them); by
            default one of their own, as a child.
        """
        super().__init__()
        if client is None:
            client = RedisClient(parseRedisURL(config.store), reactor, timeout=config.timeout)
            client.setServiceParent(self)
        self.client = client
        self.buckets = RedisBuckets(
            self.client,
            reactor,
            local,
            onFailure=config.onFailure,
            gateways=config.gateways or 1,
            leaseTime=config.leaseTime,
            store=redactedURL(config.store),
        )

    def stopService(self) -> Deferred:
        self.buckets.stop()
        return super().stopService()


def fleetLimits(
    config: Any, reactor: Any, local: Any, client: Optional[RedisClient] = None
) -> Optional[FleetLimits]:
    """
    @param config: the L{gateway.model.config.GatewayConfig}.
    @param client: the process's Redis client (L{redisClient}).
    @return: the fleet's limits of a proxy process, or L{None} without
        C{limits:}.
    """
    if config.limits is None:
        return None
    return FleetLimits(config.limits, reactor, local, client)


class GatewayCounter(PollingService):
    """
    Counts the live gateways in the proxy registry of a shared store every
    C{interval} seconds, and says so when the count changes (at least 1).
    """

    name = "gateway-counter"

    def __init__(
        self, shared: Any, reactor: Any, onCount: Callable[[int], None], interval: float = 2.0
    ) -> None:
        """
        @param shared: the L{gateway.interfaces.ISharedStore}.
        @param onCount: called with the count when it changes.
        """
        super().__init__(reactor, interval)
        self._shared = shared
        self._onCount = onCount
        self.count: Optional[int] = None

    def poll(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._count())

    def pollFailed(self, failure: Failure) -> None:
        log.debug("counting gateways: {f}", f=failure.value)

    async def _count(self) -> None:
        records = await self._shared.listProxies()
        count = max(1, len(records))
        if count != self.count:
            self.count = count
            self._onCount(count)
