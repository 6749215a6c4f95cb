"""
Purges that reach every proxy process of a fleet.

C{DELETE /api/v1/apis/NAME/cache} purges an API's entries:

  - in Redis, by incrementing the API's generation
    (L{gateway.cache.redisstore.PURGE_SCRIPT}): at once, for every
    gateway, since every look-up reads it;
  - in the memory of the proxy processes of the gateway whose admin was
    asked: its own proxy, or each of its workers over their control
    channel (the admin answers once each has done it);
  - in the memory of the proxy processes of the other gateways, when the
    fleet has a Redis: each follows the count of purges in Redis
    (L{PurgeFollower}, every C{proxy.cache.purgePoll} seconds, half a
    second by default), and drops the entries of each API whose
    generation changed.

Without Redis a purge reaches the proxy processes of one gateway.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from gateway.polling import PollingService
from gateway.redis.client import RedisError

__all__ = ["PurgeFollower"]

log = Logger()


class PurgeFollower(PollingService):
    """
    Follows the fleet's purges in Redis for one proxy process's memory
    store (see the module's documentation).

    @ivar purged: purges taken (APIs whose entries were dropped).
    """

    name = "cache-purges"

    def __init__(self, cache: Any, reactor: Any, interval: float = 0.5) -> None:
        """
        @param cache: the process's L{gateway.cache.engine.ResponseCache},
            with a Redis store.
        @param interval: seconds between two looks.
        """
        super().__init__(reactor, interval)
        self._cache = cache
        #: The count of purges last read (L{None} before the first read).
        self._count: Optional[bytes] = None
        self._generations: Optional[Dict[str, int]] = None
        self.purged = 0

    def poll(self) -> Optional[Deferred[None]]:
        redis = self._cache.redis
        if redis is None or not redis.available:
            return None
        return Deferred.fromCoroutine(self._read(redis))

    async def _read(self, redis: Any) -> None:
        count = await redis.purges()
        if count == self._count and self._generations is not None:
            return
        generations = await redis.generations()
        known = self._generations
        self._count, self._generations = count, generations
        if known is None:
            return
        for api in set(known) | set(generations):
            if known.get(api, 0) != generations.get(api, 0):
                dropped = self._cache.purgeLocal(api)
                self.purged += 1
                log.info(
                    "purged the cache of API {api} ({dropped} entries here), as the fleet asked",
                    api=api,
                    dropped=dropped,
                )

    def pollFailed(self, failure: Failure) -> None:
        failure.trap(RedisError)
        log.debug("reading the fleet's cache purges failed: {error}", error=failure.value)
