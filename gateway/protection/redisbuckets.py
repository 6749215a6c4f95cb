"""
Rate limits that hold for a fleet of gateways together, on Redis.

With C{limits.store} set, every limit (an API's C{rateLimit} and
C{maxQPS}, a server's C{maxQPS}, keyed or not) has its bucket in Redis,
shared by every proxy process of every gateway.  L{RedisBuckets} makes
their buckets, as L{gateway.protection.ratelimit.LOCAL} and
L{gateway.protection.sharedbuckets.SharedBuckets} make those of one
process and of one gateway's workers: the limits take it as their
C{buckets} factory and change in nothing else.

Decisions are atomic in Redis: one Lua script (L{LEASE_SCRIPT}) per call,
a token bucket kept as a theoretical arrival time (GCRA) on Redis's own
clock, so the clocks of the gateways never enter.  A process does not
call it per request: it takes tokens in leases and spends them locally
(L{gateway.protection.leases}, where the over-admission bound is stated
and argued: at most M{burst + rate * t + H + 2K} in any M{t} seconds,
with M{H} the tokens held in leases and M{K} the processes' credit, each
at most a lease: M{3} leases per process in all).

When Redis does not answer a call within C{limits.timeout} (a few
milliseconds), or the connection is gone, or it answers the lease script
with an error (out of memory, writes stopped after a failed save, ...),
every bucket decides at once without it, as C{limits.onFailure} says:

  - C{local}: each gateway holds the limit divided by the live gateways
    (C{limits.gateways}, or the proxies of the etcd registry): its own
    buckets of M{rate / G} and M{burst / G} (at least one token), in the
    workers' shared memory when it has workers.  They start empty at each
    switch: Redis does not count what passes while it is away, and would
    let its own burst through again on its return, so over a stretch of
    M{d} seconds away the fleet lets at most M{rate * d} more through
    than the bound says (a few tokens per process more, for the
    at-least-one-token rounding);
  - C{open}: every request passes;
  - C{closed}: every request is refused with C{503} (L{LeasedBucket.unavailable}).

The client probes Redis a few times a second; the first answer in time
brings the shared buckets back (after error replies: the first lease the
script grants again, tried as often).  Each switch is logged and counted
(L{RedisBuckets.snapshot}, which the stats, C{/metrics} and the web UI
show).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any, Dict, Hashable, Optional, Set, Tuple

from twisted.logger import Logger
from twisted.python.failure import Failure

from gateway.protection.leases import Lease
from gateway.protection.ratelimit import LOCAL
from gateway.redis.client import IRedisClient, RedisUnavailable, Script
from gateway.redis.protocol import ReplyError

__all__ = ["LEASE_SCRIPT", "LeasedBucket", "LeasedKeyedBuckets", "RedisBuckets"]

log = Logger()


#: The decision on a bucket, atomic in Redis.  KEYS[1]: the bucket, whose
#: value is its theoretical arrival time (microseconds on Redis's clock:
#: the moment it is full again; no key: full).  ARGV: rate (tokens a
#: second), burst, want (tokens asked for), debt (tokens charged whatever
#: the level), back (unused tokens given back).  Returns {granted, the
#: tokens left after it times 1000 (floored, may be negative), the
#: microseconds until it holds max(1, want)}.  The stored time is rounded
#: up, so rounding never gives a token early.
LEASE_SCRIPT = Script(
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local debt = tonumber(ARGV[4])
local back = tonumber(ARGV[5])
local interval = 1000000 / rate
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
if back > 0 then
  tat = tat - back * interval
  if tat < now then tat = now end
end
tat = tat + debt * interval
local level = (now - tat) / interval + burst
local granted = 0
if want > 0 and level >= 1 then
  granted = math.min(want, math.floor(level))
  tat = tat + granted * interval
  level = level - granted
end
local wait = 0
local need = math.max(1, want)
if level < need then wait = math.ceil((need - level) * interval) end
if tat > now then
  redis.call('SET', KEYS[1], string.format('%.0f', math.ceil(tat)),
             'PX', math.ceil((tat - now) / 1000) + 1)
else
  redis.call('DEL', KEYS[1])
end
return {granted, math.floor(level * 1000), wait}
""".strip()
)


def _keyBytes(key: Hashable) -> bytes:
    """
    @return: a key of a keyed limit as bytes, its type told apart (the
        text C{"1"} is not the bytes C{b"1"}).
    """
    if key is None:
        return b"n"
    if isinstance(key, bytes):
        return b"b" + key
    if isinstance(key, str):
        return b"s" + key.encode("utf-8", "surrogatepass")
    return b"r" + repr(key).encode("utf-8", "backslashreplace")


#: The key prefix of the buckets in Redis.
PREFIX = "gateway:limit:"


#: What decides while Redis is away, by C{limits.onFailure}; C{shared}
#: while it answers.
MODES = ("shared", "local", "open", "closed")


class LeasedBucket:
    """
    The bucket of one limit (and key) in Redis, as a
    L{gateway.protection.ratelimit.TokenBucket} looks to its users: the
    decisions are made on a L{Lease} while Redis answers, by the fallback
    of L{RedisBuckets} while it does not.
    """

    __slots__ = ("rate", "burst", "lease", "redisKey", "_factory", "_clock", "_name", "_key")

    def __init__(
        self,
        factory: RedisBuckets,
        name: str,
        key: Hashable,
        rate: float,
        burst: float,
        clock: Any,
    ) -> None:
        """
        @param key: the key of a keyed limit (a client address, a header
            value), L{None} for a limit that is not keyed.
        """
        self.rate = float(rate)
        self.burst = float(burst)
        self._factory = factory
        self._clock = clock
        self._name = name
        self._key = key
        digest = hashlib.blake2b(
            name.encode("utf-8") + b"\x00" + _keyBytes(key), digest_size=12
        ).hexdigest()
        self.redisKey = factory.prefix + digest
        self.lease = Lease(rate, burst, factory.leaseTime, clock.seconds())

    def __repr__(self) -> str:
        return f"<LeasedBucket {self._name} key={self._key!r} {self.lease!r}>"

    # -- the fallback -------------------------------------------------------------

    def fallback(self) -> Any:
        """
        @return: this limit's bucket of this gateway alone (C{local} mode).
        """
        return self._factory.fallbackFor(self._name, self._key, self.rate, self.burst, self._clock)

    @property
    def lock(self) -> Any:
        """
        What makes a decision on several buckets one: the fallback's, in
        C{local} mode (the workers' table); else none is needed.
        """
        if self._factory.mode == "local":
            return self.fallback().lock
        return None

    @property
    def unavailable(self) -> bool:
        """
        Whether a refusal is the store's absence (C{closed} mode: 503),
        not the limit (429).
        """
        return self._factory.mode == "closed"

    # -- decisions ----------------------------------------------------------------

    def take(self, n: int = 1) -> bool:
        factory = self._factory
        mode = factory.mode
        if mode == "shared":
            admitted, fetch = self.lease.take(self._clock.seconds(), n)
            if fetch:
                factory.fetch(self)
            return admitted
        if mode == "local":
            return bool(self.fallback().take(n))
        return mode == "open"

    def allows(self, n: int = 1) -> bool:
        factory = self._factory
        mode = factory.mode
        if mode == "shared":
            allowed, fetch = self.lease.allows(self._clock.seconds(), n)
            if fetch:
                factory.fetch(self)
            return allowed
        if mode == "local":
            return bool(self.fallback().allows(n))
        return mode == "open"

    def takeStatus(self, n: int = 1) -> Tuple[bool, int, float]:
        if self._factory.mode == "local":
            return self.fallback().takeStatus(n)
        return (self.take(n),) + self.status()

    def retryAfter(self, n: int = 1) -> float:
        factory = self._factory
        mode = factory.mode
        if mode == "shared":
            return self.lease.retryAfter(self._clock.seconds(), n, factory.timeout)
        if mode == "local":
            return float(self.fallback().retryAfter(n))
        # open admits; closed waits for the probe that may bring Redis back.
        return 0.0 if mode == "open" else factory.probeInterval

    def tokens(self) -> float:
        mode = self._factory.mode
        if mode == "shared":
            return self.lease.estimate(self._clock.seconds())
        if mode == "local":
            return float(self.fallback().tokens())
        return self.burst if mode == "open" else 0.0

    def remaining(self) -> int:
        return int(self.tokens() + 1e-9)

    def status(self) -> Tuple[int, float]:
        if self._factory.mode == "local":
            return self.fallback().status()
        tokens = self.tokens()
        return int(tokens + 1e-9), max(0.0, (self.burst - tokens) / self.rate)

    def resetAfter(self) -> float:
        return self.status()[1]

    def takeOver(self, old: Any) -> None:
        """
        Nothing: a changed limit is a new bucket in Redis, which starts
        full (the fleet's buckets are named by their settings).
        """


class LeasedKeyedBuckets:
    """
    The buckets of a keyed limit in Redis, one per key, for at most
    C{maxKeys} keys at hand in this process (the least recently used goes
    first, as with L{gateway.protection.ratelimit.KeyedBuckets}).
    """

    __slots__ = ("rate", "burst", "maxKeys", "_factory", "_name", "_clock", "_buckets")

    def __init__(
        self, factory: RedisBuckets, name: str, rate: float, burst: float, clock: Any, maxKeys: int
    ) -> None:
        if maxKeys < 1:
            raise ValueError("maxKeys must be at least 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self.maxKeys = maxKeys
        self._factory = factory
        self._name = name
        self._clock = clock
        self._buckets: OrderedDict[Hashable, LeasedBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._buckets

    def takeOver(self, old: Any) -> None:
        """
        Nothing: see L{LeasedBucket.takeOver}.
        """

    def get(self, key: Hashable) -> LeasedBucket:
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            bucket = buckets[key] = LeasedBucket(
                self._factory, self._name, key, self.rate, self.burst, self._clock
            )
            if len(buckets) > self.maxKeys:
                buckets.popitem(last=False)
        else:
            buckets.move_to_end(key)
        return bucket


class RedisBuckets:
    """
    Makes the buckets of limits that hold for the whole fleet (see the
    module's documentation), with C{bucket} and C{keyed} as
    L{gateway.protection.ratelimit.LocalBuckets} has them.

    @ivar mode: who decides now: C{shared} (Redis), or C{local}, C{open}
        or C{closed} while Redis is away.
    @ivar gateways: the live gateways the limits are divided by in
        C{local} mode.
    @ivar switches: C{{mode: times switched to it}}.
    """

    def __init__(
        self,
        client: IRedisClient,
        reactor: Any,
        local: Any = LOCAL,
        onFailure: str = "local",
        gateways: int = 1,
        leaseTime: float = 0.02,
        prefix: str = PREFIX,
        store: str = "",
    ) -> None:
        """
        @param client: the L{gateway.redis.client.IRedisClient}.
        @param reactor: an L{IReactorTime}, for the sweep of idle leases.
        @param local: what makes this gateway's own buckets, in C{local}
            mode: L{LOCAL}, or the workers'
            L{gateway.protection.sharedbuckets.SharedBuckets}.
        @param onFailure: C{local}, C{open} or C{closed}.
        @param gateways: the live gateways, until L{setGateways} says
            otherwise.
        @param leaseTime: see L{gateway.protection.leases.leaseSize}.
        @param store: the Redis URL (its password left out), to show.
        """
        if onFailure not in MODES[1:]:
            raise ValueError(f"onFailure must be local, open or closed, not {onFailure!r}")
        self._client = client
        self._reactor = reactor
        self._local = local
        self.onFailure = onFailure
        self.gateways = max(1, int(gateways))
        self.leaseTime = leaseTime
        self.prefix = prefix
        self.store = store
        self.returnAfter = max(0.05, 5 * leaseTime)
        self.timeout = float(getattr(client, "timeout", 0.005))
        self.probeInterval = 0.25
        self.mode = "shared" if client.available else onFailure
        self.since = reactor.seconds()
        self.switches: Dict[str, int] = {mode: 0 for mode in MODES}
        self.fetches = 0
        self.fetchFailures = 0
        self._fallbacks: Dict[Tuple[str, int], Any] = {}
        #: The fallback buckets emptied since the last switch away.
        self._drained: Set[Tuple[str, Hashable]] = set()
        self._watched: Set[LeasedBucket] = set()
        self._sweepCall: Optional[Any] = None
        #: While Redis answers the lease script with errors: the call that
        #: tries it again.
        self._retryCall: Optional[Any] = None
        client.registerScript(LEASE_SCRIPT)
        client.addListener(self._availabilityChanged)

    def __repr__(self) -> str:
        return f"<RedisBuckets {self.mode} gateways={self.gateways}>"

    # -- the limits' buckets ------------------------------------------------------

    def bucket(self, name: str, rate: float, burst: float, clock: Any) -> LeasedBucket:
        """
        @param name: what the limit is, the same in every process of the
            fleet (its settings included: a changed limit is a new bucket).
        @return: the bucket of a limit that is not keyed.
        """
        return LeasedBucket(self, name, None, rate, burst, clock)

    def keyed(
        self, name: str, rate: float, burst: float, clock: Any, maxKeys: int
    ) -> LeasedKeyedBuckets:
        """
        @return: the buckets of a keyed limit.
        """
        return LeasedKeyedBuckets(self, name, rate, burst, clock, maxKeys)

    # -- the fallback ---------------------------------------------------------------

    def fallbackFor(self, name: str, key: Hashable, rate: float, burst: float, clock: Any) -> Any:
        """
        @return: this gateway's own bucket of a limit and key: its share of
            the limit, M{rate / G} and M{burst / G} (at least one token),
            with M{G} the live gateways now, empty when first used after a
            switch away from Redis.
        """
        gateways = self.gateways
        made = self._fallbacks.get((name, gateways))
        if made is None:
            share = f"{name}/share-of-{gateways}"
            shareRate = float(rate) / gateways
            shareBurst = max(1.0, float(burst) / gateways)
            if key is None:
                made = self._local.bucket(share, shareRate, shareBurst, clock)
            else:
                made = self._local.keyed(share, shareRate, shareBurst, clock, 10_000)
            if len(self._fallbacks) > 100_000:
                self._fallbacks.clear()
            self._fallbacks[(name, gateways)] = made
        bucket = made if key is None else made.get(key)
        drained = self._drained
        if (name, key) not in drained:
            # First use in this stretch away from Redis: from empty, so
            # that a switch lets no burst through that Redis, which does
            # not count what passes meanwhile, would let through again.
            if len(drained) > 100_000:
                drained.clear()
            drained.add((name, key))
            whole = int(bucket.tokens())
            if whole > 0:
                bucket.take(whole)
        return bucket

    def setGateways(self, count: int) -> None:
        """
        The live gateways are C{count} now (the etcd registry says so).
        """
        count = max(1, int(count))
        if count != self.gateways:
            log.info(
                "limits: {count} live gateways (each holds 1/{count} of a limit"
                " while Redis is away)",
                count=count,
            )
            self.gateways = count
            self._fallbacks.clear()
            self._drained.clear()

    # -- switching ------------------------------------------------------------------

    def _availabilityChanged(self, available: bool, reason: str) -> None:
        mode = "shared" if available else self.onFailure
        if mode == self.mode:
            return
        previous, self.mode = self.mode, mode
        self.switches[mode] += 1
        if mode != "shared":
            self._drained.clear()
        self.since = self._reactor.seconds()
        if mode == "shared":
            log.info(
                "limits: Redis is back ({reason}): limits are shared by the fleet again"
                " (after {previous})",
                reason=reason,
                previous=previous,
            )
        else:
            log.warn(
                "limits: Redis is away ({reason}): limits are {what} until it answers again",
                reason=reason,
                what={
                    "local": f"held by each gateway alone (1/{self.gateways} of each)",
                    "open": "not enforced (onFailure: open)",
                    "closed": "refusing every request with 503 (onFailure: closed)",
                }[mode],
            )

    # -- calls to Redis -------------------------------------------------------------

    def fetch(self, bucket: LeasedBucket, give: bool = False) -> None:
        """
        Ask Redis for a lease of C{bucket} (charging its debt), or give its
        tokens back (C{give}).
        """
        lease = bucket.lease
        if lease.fetching:
            return
        now = self._reactor.seconds()
        want, debt, back = lease.request(now, give)
        self.fetches += 1
        self.watch(bucket)
        d = self._client.evalScript(
            LEASE_SCRIPT,
            (bucket.redisKey,),
            (repr(bucket.rate), repr(bucket.burst), want, debt, back),
        )
        d.addCallbacks(self._answered, self._failed, (bucket,), None, (bucket,))

    def _answered(self, reply: Any, bucket: LeasedBucket) -> None:
        lease = bucket.lease
        try:
            granted, level, wait = (int(x) for x in reply)
        except (TypeError, ValueError):
            log.error("limits: Redis answered {reply!r} to the lease script", reply=reply)
            lease.failed(self._reactor.seconds())
            self.fetchFailures += 1
            return
        again = lease.answered(self._reactor.seconds(), granted, level / 1000.0, wait / 1e6)
        if again and self.mode == "shared":
            self.fetch(bucket)

    def _failed(self, failure: Failure, bucket: LeasedBucket) -> None:
        bucket.lease.failed(self._reactor.seconds())
        self.fetchFailures += 1
        if failure.check(RedisUnavailable):
            return
        if failure.check(ReplyError):
            self._refused(failure.getErrorMessage())
            return
        log.failure("limits: a lease call failed", failure)

    # -- a Redis that answers with errors ---------------------------------------------

    def _refused(self, error: str) -> None:
        """
        Redis answered a lease call with an error (out of memory, writes
        stopped by a failed save, a script killed, a key of another type):
        it answers, but cannot decide, so the limits decide without it as
        C{onFailure} says, as when it is away, until the lease script runs
        again (L{_retry}, every C{probeInterval}).  Without this, every
        limited request was refused with 429 (no lease, no token) and each
        call logged a traceback.
        """
        if self.mode == "shared":
            self._availabilityChanged(False, f"Redis answers the lease script with: {error}")
        if self._retryCall is None:
            self._retryCall = self._reactor.callLater(self.probeInterval, self._retry)

    def _retry(self) -> None:
        self._retryCall = None
        if self.mode == "shared" or not self._client.available:
            # (Back already; or away, and the client's probes say when it
            # is back.)
            return
        # A lease of a token of a bucket of its own: the script's write
        # is what fails while Redis refuses writes.
        d = self._client.evalScript(LEASE_SCRIPT, (self.prefix + "probe",), ("1000", "1", 1, 0, 0))
        d.addCallbacks(self._retried, self._retryFailed)

    def _retried(self, reply: Any) -> None:
        if self.mode != "shared":
            self._availabilityChanged(True, "Redis runs the lease script again")

    def _retryFailed(self, failure: Failure) -> None:
        if failure.check(ReplyError):
            self._refused(failure.getErrorMessage())
        elif not failure.check(RedisUnavailable):
            log.failure("limits: trying the lease script again failed", failure)

    # -- idle leases ------------------------------------------------------------------

    def watch(self, bucket: LeasedBucket) -> None:
        """
        Keep an eye on a bucket that holds or owes tokens: its idle tokens
        go back, its debt is charged, even with no more requests.
        """
        self._watched.add(bucket)
        if self._sweepCall is None:
            self._sweepCall = self._reactor.callLater(self.returnAfter / 2, self._sweep)

    def _sweep(self) -> None:
        self._sweepCall = None
        now = self._reactor.seconds()
        shared = self.mode == "shared"
        for bucket in list(self._watched):
            lease = bucket.lease
            if lease.settled():
                self._watched.discard(bucket)
            elif shared and not lease.fetching:
                if lease.debt > 0:
                    self.fetch(bucket)
                elif lease.idle(now, self.returnAfter):
                    self.fetch(bucket, give=True)
        if self._watched:
            self._sweepCall = self._reactor.callLater(self.returnAfter / 2, self._sweep)

    def stop(self) -> None:
        """
        Stop sweeping (the process stops).
        """
        for call in (self._sweepCall, self._retryCall):
            if call is not None and call.active():
                call.cancel()
        self._sweepCall = self._retryCall = None

    # -- reading ----------------------------------------------------------------------

    def snapshot(self) -> Dict[str, Any]:
        """
        @return: the state of the fleet's limits in this process, as JSON:
            C{store}, C{onFailure}, C{mode}, C{modes} (C{{mode: 1 for
            this one, 0 for the others}}), C{since} (clock seconds),
            C{gateways}, C{switches} C{{mode: n}}, C{redis} (C{up} or
            C{down}), C{calls}, C{timeouts}, C{errors} (of the Redis
            client), C{leases} (buckets holding or owing tokens).
        """
        client = self._client
        return {
            "store": self.store,
            "onFailure": self.onFailure,
            "mode": self.mode,
            "modes": {mode: int(mode == self.mode) for mode in MODES},
            "since": self.since,
            "gateways": self.gateways,
            "switches": dict(self.switches),
            "redis": "up" if client.available else "down",
            "calls": getattr(client, "calls", 0),
            "timeouts": getattr(client, "timeouts", 0),
            "errors": getattr(client, "errors", 0),
            "leases": len(self._watched),
        }
