"""
The response cache's settings: an API's C{cache} object (L{Cache}) and the
proxy's C{proxy.cache} section (L{CacheSettings})::

    # an API
    cache:
      ttl: 60                 # seconds fresh when the backend says nothing
      maxBodySize: 1048576    # larger answers are not stored
      varyOn: ["header:Accept-Language", "query:page", "consumer"]
      store: memory           # memory (each proxy process) | redis (the fleet)

    # the config file
    proxy:
      cache: {memoryBytes: 67108864, timeout: 0.025, purgePoll: 0.5}

How the gateway caches is L{gateway.cache}'s story; this module only says
what the settings are and checks them.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional, Tuple

import attrs

from gateway.model.schema import Enum, Int, Num, Seconds, Str, ValidationError, field
from gateway.model.schema import List as ListOf

__all__ = [
    "CACHE_STORES",
    "Cache",
    "CacheSettings",
    "REQUEST_DIRECTIVES",
    "sharedCacheWithoutRedis",
]

#: Where an API's entries live.
CACHE_STORES = ("memory", "redis")

#: What the cache makes of a request's own C{Cache-Control}.
REQUEST_DIRECTIVES = ("ignore", "honour")

#: A header name (RFC 9110 token).
_TOKEN = r"[A-Za-z0-9!#$%&'*+.^_`|~-]+"

#: The largest body an entry may hold: 64 MiB (a Redis value holds 512).
MAX_ENTRY_BODY = 64 * 1024 * 1024


@attrs.frozen
class Cache:
    """
    An API's response cache: its answers to C{GET} (and C{HEAD}) are kept
    and served again while fresh, as a shared cache of RFC 9111 does.
    """

    ttl: float = field(
        Seconds(31_536_000),
        doc="seconds an answer stays fresh when the backend gives no max-age, s-maxage or"
        " Expires (theirs win)",
    )
    maxBodySize: int = field(
        Int(1, MAX_ENTRY_BODY),
        1_048_576,
        doc="bytes: a larger answer is sent on but not stored",
    )
    varyOn: Tuple[str, ...] = field(
        ListOf(
            Str(
                pattern=rf"^(consumer|(header|query):{_TOKEN})$",
                maxLength=256,
                patternHint="must be header:NAME, query:NAME or consumer",
            ),
            maxItems=16,
            unique=True,
        ),
        (),
        doc="what else keys an entry besides the URL: header:NAME, query:NAME, consumer"
        " (the API's auth names it)",
    )
    store: str = field(
        Enum(CACHE_STORES),
        "memory",
        doc="memory: each proxy process keeps its own (proxy.cache.memoryBytes); redis: the"
        " Redis of limits.store, shared by every gateway",
    )
    keepStale: float = field(
        Num(0, 86_400),
        300.0,
        doc="seconds a stale entry with an ETag or Last-Modified is kept to be revalidated"
        " (a conditional request, 304 refreshes it)",
    )
    collapseTimeout: float = field(
        Num(0, 60),
        5.0,
        doc="seconds concurrent misses of one key wait for the first one's answer instead"
        " of each asking the backend (0: no collapsing)",
    )
    requestCacheControl: str = field(
        Enum(REQUEST_DIRECTIVES),
        "ignore",
        doc="the client's Cache-Control: ignore (as CDNs do by default), or honour (no-cache"
        " and max-age=0 fetch again, no-store is not stored)",
    )


@attrs.frozen
class CacheSettings:
    """
    The C{proxy.cache} section: what the cache of each proxy process may
    hold and how long it waits for Redis.
    """

    memoryBytes: int = field(
        Int(0, 1 << 40),
        64 * 1024 * 1024,
        doc="bytes of entries each proxy process keeps in memory, least recently used"
        " dropped first (0: the memory store keeps nothing)",
    )
    timeout: float = field(
        Num(0.001, 10.0),
        0.025,
        doc="seconds a call of the cache to Redis may take (an entry is up to maxBodySize)"
        " before the cache is bypassed",
    )
    purgePoll: float = field(
        Num(0.05, 60.0),
        0.5,
        doc="seconds between looks at the fleet's purges in Redis (for the memory entries)",
    )


def sharedCacheWithoutRedis(
    apis: Mapping[str, Any], previous: Optional[Mapping[str, Any]] = None
) -> Iterable[ValidationError]:
    """
    The admin's check when its gateway has no Redis (no C{limits.store}):
    an API whose cache asks for the C{redis} store could not be served
    as it says.

    @param apis: the APIs of a proposed catalog, by name.
    @param previous: those of the catalog served now: an API that did not
        change is not judged again (it was written through another admin).
    @return: an error naming C{apis/NAME:cache.store} for each such API.
    """
    for name, api in apis.items():
        cache = api.cache
        if cache is None or cache.store != "redis":
            continue
        if previous is not None and previous.get(name) is api:
            continue
        yield ValidationError(
            f"apis/{name}:cache.store",
            "redis needs a Redis: this gateway's config has no limits.store (use memory,"
            " or give the gateways limits.store)",
        )
