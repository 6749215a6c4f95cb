"""
Putting the fleet's limits together (C{limits:} in the config file): the
Redis client of a proxy process, the buckets on it, and the count of live
gateways they divide the limits by while Redis is away.

Without C{limits.store} nothing here is made: the limits keep the buckets
of their process, or of the workers' shared memory, as before.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from gateway.model.sharedlimits import LimitsConfig, parseRedisURL, redactedURL
from gateway.protection.redisbuckets import RedisBuckets
from gateway.redis.client import RedisClient

log = Logger()


class FleetLimits(MultiService):
    """
    The Redis client of one proxy process and the buckets of its limits,
    as a service: the client connects when it starts.

    @ivar client: the L{RedisClient} (for other users of the same Redis).
    @ivar buckets: the L{RedisBuckets}, the limits' C{buckets} factory.
    """

    name = "fleet-limits"

    def __init__(self, config: LimitsConfig, reactor: Any, local: Any) -> None:
        """
        @param config: the C{limits:} section.
        @param local: what makes this gateway's own buckets (the fallback
            of C{onFailure: local}): L{gateway.protection.ratelimit.LOCAL} or
            the workers' shared buckets.
        """
        super().__init__()
        self.client = RedisClient(parseRedisURL(config.store), reactor, timeout=config.timeout)
        self.client.setServiceParent(self)
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


def fleetLimits(config: Any, reactor: Any, local: Any) -> Optional[FleetLimits]:
    """
    @param config: the L{gateway.model.config.GatewayConfig}.
    @return: the fleet's limits of a proxy process, or L{None} without
        C{limits:}.
    """
    if config.limits is None:
        return None
    return FleetLimits(config.limits, reactor, local)


class GatewayCounter(Service):
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
        self._shared = shared
        self._reactor = reactor
        self._onCount = onCount
        self._interval = interval
        self._call: Optional[Any] = None
        self._reading: Optional[Deferred] = None
        self.count: Optional[int] = None

    def startService(self) -> None:
        super().startService()
        self._call = self._reactor.callLater(0, self._read)

    def stopService(self) -> None:
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self._reading is not None:
            self._reading.cancel()

    def _read(self) -> None:
        self._call = None
        self._reading = Deferred.fromCoroutine(self._count())
        self._reading.addErrback(lambda f: log.debug("counting gateways: {f}", f=f.value))
        self._reading.addBoth(self._next)

    async def _count(self) -> None:
        records = await self._shared.listProxies()
        count = max(1, len(records))
        if count != self.count:
            self.count = count
            self._onCount(count)

    def _next(self, _: Any) -> None:
        self._reading = None
        if self.running:
            self._call = self._reactor.callLater(self._interval, self._read)
