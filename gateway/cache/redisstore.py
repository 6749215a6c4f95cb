"""
The Redis store: entries every gateway of a fleet shares, in the Redis of
C{limits.store}, through the one client of the process
(L{gateway.redis.client.RedisClient}).

Layout (a prefix of its own, apart from the limits' buckets)::

    gateway:cache:generations     hash: API name -> its purge generation
    gateway:cache:purges          counter: purges made (what proxies poll)
    gateway:cache:entry:API:HASH  hash of one key's entries, with a TTL:
                                    g      the generation it was stored in
                                    v      the Vary names of its variants
                                    =VAR   a variant's entry (its bytes)

A purge (L{PURGE_SCRIPT}) increments the API's generation: from then on
every look-up (L{LOOKUP_SCRIPT}) and store (L{STORE_SCRIPT}) reads it in
the same script, so an entry of an older generation is never served
(and is deleted when met), and an answer fetched before the purge is not
stored after it; no key is scanned.  Entries leave by their Redis TTL:
their lifetime, and the API's C{keepStale} when they can be revalidated.

A look-up names the C{Vary} names the caller assumes (the last ones seen
for the API, L{gateway.cache.policy.CachePolicy.varyHint}) with the
request's variant for them: one round trip; when the stored names differ
the script says which they are, and the caller asks once more.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Callable, Dict, Optional, Tuple

from twisted.internet.defer import Deferred

from gateway.cache.entry import Entry, EntryError, decodeEntry, encodeEntry
from gateway.cache.memory import MAX_VARIANTS
from gateway.redis.client import IRedisClient, Script

__all__ = [
    "GENERATIONS",
    "LOOKUP_SCRIPT",
    "PURGES",
    "PURGE_SCRIPT",
    "RedisStore",
    "STORE_SCRIPT",
    "entryKey",
]

PREFIX = "gateway:cache:"
GENERATIONS = PREFIX + "generations"
PURGES = PREFIX + "purges"

#: KEYS: generations, the entry's hash.  ARGV: the API, the Vary names the
#: caller assumes (comma-joined), the request's variant for them.  Returns
#: {generation} (nothing of this generation), {generation, names} (stored
#: under other names: ask again with them), or {generation, names, entry
#: or nil}.
LOOKUP_SCRIPT = Script(
    """
local gen = redis.call('HGET', KEYS[1], ARGV[1]) or '0'
local h = redis.call('HMGET', KEYS[2], 'g', 'v')
if h[1] ~= gen then
  if h[1] then redis.call('DEL', KEYS[2]) end
  return {gen}
end
local names = h[2] or ''
if names ~= ARGV[2] then return {gen, names} end
return {gen, names, redis.call('HGET', KEYS[2], '=' .. ARGV[3])}
""".strip()
)

#: KEYS: generations, the entry's hash.  ARGV: the API, the generation the
#: answer was fetched in, its Vary names, its variant, its bytes, the TTL
#: in milliseconds, the most variants a key holds.  Returns 1 when stored,
#: 0 when the API was purged meanwhile.
STORE_SCRIPT = Script(
    """
local gen = redis.call('HGET', KEYS[1], ARGV[1]) or '0'
if gen ~= ARGV[2] then return 0 end
local h = redis.call('HMGET', KEYS[2], 'g', 'v')
local field = '=' .. ARGV[4]
if h[1] ~= gen or h[2] ~= ARGV[3] or
   (redis.call('HEXISTS', KEYS[2], field) == 0 and
    redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[7]) + 2) then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[2], 'g', gen)
  redis.call('HSET', KEYS[2], 'v', ARGV[3])
end
redis.call('HSET', KEYS[2], field, ARGV[5])
local ttl = tonumber(ARGV[6])
if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
return 1
""".strip()
)

#: KEYS: generations, purges.  ARGV: the API.  Returns its new generation.
PURGE_SCRIPT = Script(
    """
local g = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('INCR', KEYS[2])
return g
""".strip()
)


def entryKey(api: str, primary: bytes) -> bytes:
    """
    @return: the Redis key of the entries of C{primary} (an API's key of
        any length, hashed).
    """
    digest = hashlib.blake2b(primary, digest_size=16).hexdigest()
    return f"{PREFIX}entry:{api}:{digest}".encode()


def _names(names: Tuple[bytes, ...]) -> bytes:
    return b",".join(names)


def _splitNames(value: bytes) -> Tuple[bytes, ...]:
    return tuple(value.split(b",")) if value else ()


#: What a look-up finds: C{(kind, entry, generation)} (see
#: L{gateway.cache.memory.MemoryStore.lookup} for the kinds).
Found = Tuple[str, Optional[Entry], bytes]


class RedisStore:
    """
    Entries in Redis (see the module's documentation).

    @ivar client: the L{IRedisClient}.
    @ivar timeout: seconds each call may take.
    """

    def __init__(self, client: IRedisClient, timeout: float) -> None:
        self.client = client
        self.timeout = timeout
        for script in (LOOKUP_SCRIPT, STORE_SCRIPT, PURGE_SCRIPT):
            client.registerScript(script)

    @property
    def available(self) -> bool:
        return bool(self.client.available)

    def lookup(
        self, policy: Any, primary: bytes, variantFor: Callable[[Tuple[bytes, ...]], bytes]
    ) -> Deferred:
        """
        Find a request's entry.

        @param policy: the API's L{gateway.cache.policy.CachePolicy}.
        @param variantFor: gives the request's variant for C{Vary} names.
        @return: a Deferred of a L{Found}; it fails with
            L{gateway.redis.client.RedisUnavailable} (or its
            L{gateway.redis.client.RedisTimeout}) when Redis does not
            answer in time.
        """
        key = entryKey(policy.api, primary)
        hint = policy.varyHint
        d = self._lookup(policy.api, key, hint, variantFor(hint))

        def found(reply: Any) -> Any:
            if isinstance(reply, list) and len(reply) == 2:
                names = _splitNames(reply[1])
                policy.varyHint = names
                again = self._lookup(policy.api, key, names, variantFor(names))
                return again.addCallback(self._read)
            return self._read(reply)

        return d.addCallback(found)

    def _lookup(self, api: str, key: bytes, names: Tuple[bytes, ...], variant: bytes) -> Deferred:
        return self.client.evalScript(
            LOOKUP_SCRIPT,
            (GENERATIONS, key),
            (api, _names(names), variant),
            timeout=self.timeout,
        )

    @staticmethod
    def _read(reply: Any) -> Found:
        if not isinstance(reply, list) or not reply:
            return "miss", None, b"0"
        generation = reply[0]
        if len(reply) == 1:
            return "uri-miss", None, generation
        if len(reply) == 2 or reply[2] is None:
            # (Names that changed again between two calls: a variant
            # this request does not have either.)
            return "vary-miss", None, generation
        try:
            entry = decodeEntry(reply[2])
        except EntryError:
            return "uri-miss", None, generation
        return "found", entry, generation

    def put(
        self, api: str, primary: bytes, generation: bytes, entry: Entry, now: float
    ) -> Deferred:
        """
        Store an entry (unless the API was purged since C{generation}).

        @return: a Deferred of whether it was stored.
        """
        ttl = max(1, int(math.ceil(entry.expiresIn(now) * 1000)))
        d = self.client.evalScript(
            STORE_SCRIPT,
            (GENERATIONS, entryKey(api, primary)),
            (
                api,
                generation,
                _names(entry.varyNames),
                entry.variant,
                encodeEntry(entry),
                ttl,
                MAX_VARIANTS,
            ),
            timeout=self.timeout,
        )
        return d.addCallback(lambda stored: stored == 1)

    def delete(self, api: str, primary: bytes) -> Deferred:
        """
        Drop every variant stored under a key.
        """
        return self.client.execute("DEL", entryKey(api, primary), timeout=self.timeout)

    def purge(self, api: str) -> Deferred:
        """
        Purge an API's entries in every gateway.

        @return: a Deferred of its new generation.
        """
        return self.client.evalScript(
            PURGE_SCRIPT, (GENERATIONS, PURGES), (api,), timeout=self.timeout
        )

    def purges(self) -> Deferred:
        """
        @return: a Deferred of the count of purges made so far (L{None}
            before the first).
        """
        return self.client.execute("GET", PURGES, timeout=self.timeout)

    def generations(self) -> Deferred:
        """
        @return: a Deferred of C{{API name: generation}}.
        """

        def read(reply: Any) -> Dict[str, int]:
            items = reply or []
            out: Dict[str, int] = {}
            for name, value in zip(items[::2], items[1::2]):
                try:
                    out[name.decode("utf-8")] = int(value)
                except (UnicodeDecodeError, ValueError):
                    continue
            return out

        return self.client.execute("HGETALL", GENERATIONS, timeout=self.timeout).addCallback(read)
