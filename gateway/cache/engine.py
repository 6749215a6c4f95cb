"""
The response cache of one proxy process (L{ResponseCache}), and the cache's
part in one request (L{Ticket}).

The proxy consults the cache after every filter ran (so an answer from
the cache is authenticated, checked by the ACL and counted by the rate
limits as any other) and after routing chose the cluster, just before a
request would go upstream:

  1. L{ResponseCache.begin} makes the request's L{Ticket}: its key;
  2. L{Ticket.decide} looks the key up (at once in memory; in Redis, a
     Deferred) and says what to do: answer a fresh entry
     (L{Ticket.serve}), or forward the request, as a conditional request
     when a stale entry has a validator;
  3. concurrent misses of one key are collapsed: the first goes upstream
     (it leads a L{Flight}), the others wait for its answer, at most the
     API's C{collapseTimeout}, and are answered from it when it was
     stored, else go upstream themselves (per process: with Redis, each
     process collapses its own);
  4. the upstream's answer is judged (L{Ticket.response}): a 304 to a
     revalidation refreshes the entry, which answers; a storable answer
     is teed into an entry as its body streams to the client, up to
     C{maxBodySize} (L{Ticket.bodyComplete});
  5. every answer of a cached API says what the cache did in
     C{Cache-Status} (RFC 9211, L{Ticket.annotate}), and is counted once
     per API.

When Redis is away (unavailable, or a call past C{proxy.cache.timeout})
the cache is bypassed: the request goes upstream as a miss
(C{Cache-Status: gateway; fwd=miss; detail=redis-unavailable}), never an
error, never a wait beyond the timeout.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any, Dict, Iterable, List, Optional, Tuple

from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.logger import Logger
from twisted.python.failure import Failure

from gateway.cache.control import (
    cacheControl,
    cacheStatus,
    correctedInitialAge,
    deltaSeconds,
    etagMatches,
    freshnessLifetime,
    httpDateSeconds,
    storable,
    varyNames,
)
from gateway.cache.entry import Entry
from gateway.cache.memory import MemoryStore
from gateway.cache.policy import CachePolicy, variantOf
from gateway.cache.redisstore import RedisStore
from gateway.http.headers import headerKey, httpDate, rawHeadersOf
from gateway.redis.client import RedisError, RedisTimeout

__all__ = ["RESULTS", "ResponseCache", "Ticket"]

log = Logger()

#: How an answer of a cached API is counted: served from the cache
#: (C{hit}), from another request's forward (C{collapsed}), forwarded to
#: revalidate a stale entry (C{stale}; C{revalidated} when a 304 then
#: refreshed it), forwarded without an entry to use (C{miss}), or
#: forwarded without looking (C{bypass}: a method that is not cached,
#: Redis away).
RESULTS = ("hit", "collapsed", "stale", "revalidated", "miss", "bypass")

_GET = b"GET"
_HEAD = b"HEAD"
_UNSAFE = frozenset([b"POST", b"PUT", b"DELETE", b"PATCH"])

#: Response headers not stored: hop-by-hop ones (RFC 9111 3.1) and the
#: length, which the cache sets itself on each answer.
_NOT_STORED = frozenset(
    [
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
    ]
)

#: Read when an answer comes (its age then), not stored: each answer from
#: the cache says its own.
_AGE = b"age"

#: Not taken from a 304 into the entry it refreshes (RFC 9111 3.2).
_NOT_REFRESHED = _NOT_STORED | frozenset([_AGE, b"content-encoding", b"content-range", b"vary"])

_CONDITIONALS = (b"if-none-match", b"if-modified-since")

#: How many keys found uncacheable are remembered, per process, so that
#: their requests do not wait for one another (see L{ResponseCache.passes}).
MAX_PASSES = 10_000

#: The longest time a key found uncacheable is not collapsed.
PASS_TIME = 30.0


class _Counts:
    """
    An API's counts: one per answer, by L{RESULTS}, and the answers
    stored.
    """

    __slots__ = RESULTS + ("stored",)

    def __init__(self) -> None:
        self.hit = 0
        self.collapsed = 0
        self.stale = 0
        self.revalidated = 0
        self.miss = 0
        self.bypass = 0
        self.stored = 0

    def toJSON(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {name: getattr(self, name) for name in self.__slots__}
        return withRatio(out)


def withRatio(counts: Dict[str, Any]) -> Dict[str, Any]:
    """
    @param counts: an API's cache counts (L{RESULTS} and C{stored}).
    @return: them, with C{hitRatio}: answers from the cache (C{hit},
        C{collapsed}) among those the cache was asked for (all but
        C{bypass}); L{None} before any.
    """
    served = counts.get("hit", 0) + counts.get("collapsed", 0)
    asked = served + counts.get("stale", 0) + counts.get("miss", 0)
    counts["hitRatio"] = served / asked if asked else None
    return counts


class Flight:
    """
    A forward that other requests of the same key wait for.
    """

    __slots__ = ("waiters", "done")

    def __init__(self) -> None:
        self.waiters: List[Deferred] = []
        self.done = False

    def join(self) -> Deferred:
        """
        @return: a Deferred of the entry the forward stored, or L{None}
            when it stored none; cancelling it stops the wait.
        """

        def leave(d: Deferred) -> None:
            if d in self.waiters:
                self.waiters.remove(d)

        d: Deferred = Deferred(leave)
        self.waiters.append(d)
        return d

    def finish(self, entry: Optional[Entry]) -> None:
        if self.done:
            return
        self.done = True
        waiters, self.waiters = self.waiters, []
        for d in waiters:
            if not d.called:
                d.callback(entry)


class ResponseCache:
    """
    The cache of one proxy process: its memory store, the shared Redis
    store when the process has a Redis, the forwards being collapsed,
    and what it counted.

    @ivar memory: the L{MemoryStore}.
    @ivar redis: the L{RedisStore}, or L{None} without Redis.
    """

    def __init__(
        self,
        reactor: Any,
        memoryBytes: int = 64 * 1024 * 1024,
        redis: Optional[Any] = None,
        timeout: float = 0.025,
    ) -> None:
        """
        @param reactor: the L{IReactorTime} entries are timed with (its
            C{seconds()} are epoch seconds: entries in Redis are shared by
            gateways).
        @param memoryBytes: the memory store's bound.
        @param redis: the process's L{gateway.redis.client.IRedisClient},
            or L{None}.
        @param timeout: seconds each call to Redis may take.
        """
        self._reactor = reactor
        self.memory = MemoryStore(memoryBytes)
        self.redis: Optional[RedisStore] = RedisStore(redis, timeout) if redis is not None else None
        self._flights: Dict[bytes, Flight] = {}
        self._passes: OrderedDict[bytes, float] = OrderedDict()
        self._epochs: Dict[str, int] = {}
        self._counts: Dict[str, _Counts] = {}
        self._warned: set = set()

    # -- requests ---------------------------------------------------------------

    def begin(self, exchange: Any, policy: CachePolicy) -> Ticket:
        """
        @return: the L{Ticket} of a request to an API with a cache, once
            its upstream target is known (C{exchange.upstreamURI}).
        """
        return Ticket(self, policy, exchange)

    def _countsOf(self, api: str) -> _Counts:
        counts = self._counts.get(api)
        if counts is None:
            counts = self._counts[api] = _Counts()
        return counts

    def passes(self, key: bytes, now: float) -> bool:
        """
        @return: whether requests of C{key} are not to be collapsed: its
            last answer could not be stored (their waiting would only
            delay them).
        """
        digest = _passKey(key)
        until = self._passes.get(digest)
        if until is None:
            return False
        if until <= now:
            del self._passes[digest]
            return False
        return True

    def _pass(self, key: bytes, policy: CachePolicy, now: float) -> None:
        passes = self._passes
        digest = _passKey(key)
        passes[digest] = now + min(policy.ttl, PASS_TIME)
        passes.move_to_end(digest)
        while len(passes) > MAX_PASSES:
            passes.popitem(last=False)

    def _flightOf(self, key: bytes) -> Optional[Flight]:
        flight = self._flights.get(key)
        if flight is not None and flight.done:
            del self._flights[key]
            return None
        return flight

    def _lead(self, key: bytes) -> Flight:
        flight = self._flights[key] = Flight()
        return flight

    def _land(self, key: bytes, flight: Flight, entry: Optional[Entry]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        flight.finish(entry)

    # -- stores -----------------------------------------------------------------

    def store(self, ticket: Ticket, entry: Entry) -> None:
        """
        Keep an entry a request fetched (unless its API was purged since
        the request looked it up).
        """
        policy = ticket.policy
        if policy.store == "memory":
            if self._epochs.get(policy.api, 0) == ticket.epoch:
                self.memory.put(ticket.key, policy.api, entry)
            return
        redis = self.redis
        if redis is None or ticket.generation is None:
            return
        d = redis.put(policy.api, ticket.key, ticket.generation, entry, self._reactor.seconds())
        d.addErrback(_ignoreRedis, "storing an entry")

    def invalidate(self, ticket: Ticket) -> None:
        """
        Drop what a key holds (an unsafe method succeeded on its URI, RFC
        9111 4.4), for both schemes: the resource changed for the clients
        of either.
        """
        policy = ticket.policy
        exchange = ticket.exchange
        other = not exchange.request.isSecure()
        keys = (ticket.key, policy.primaryKey(exchange, exchange.upstreamURI, secure=other))
        for key in keys:
            if policy.store == "memory":
                self.memory.delete(key)
            elif self.redis is not None and self.redis.available:
                self.redis.delete(policy.api, key).addErrback(_ignoreRedis, "invalidating an entry")

    def purgeLocal(self, api: str) -> int:
        """
        Drop this process's entries of an API (its memory store's), and
        let no answer fetched before now be stored after.

        @return: how many entries were dropped.
        """
        self._epochs[api] = self._epochs.get(api, 0) + 1
        return self.memory.purge(api)

    def noRedis(self, policy: CachePolicy) -> None:
        if policy.api not in self._warned:
            self._warned.add(policy.api)
            log.warn(
                "API {api} caches in Redis, and this gateway has none (limits.store):"
                " its cache is bypassed",
                api=policy.api,
            )

    # -- statistics -------------------------------------------------------------

    def snapshotChanged(self, snapshot: Any) -> None:
        """
        Forget the counts of APIs that are gone (a
        L{gateway.routing.snapshot.SnapshotManager} listener).
        """
        for name in [n for n in self._counts if n not in snapshot.apis]:
            del self._counts[name]

    def countedAPIs(self) -> Iterable[str]:
        """
        @return: the names of the APIs with counts (those that asked the
            cache since they were configured).
        """
        return self._counts.keys()

    def snapshot(self) -> Dict[str, Any]:
        """
        @return: C{apis}: each cached API's counts (L{RESULTS}, C{stored},
            C{hitRatio}); C{memory}: the memory store's figures (see
            L{MemoryStore.snapshot}).
        """
        return {
            "apis": {name: counts.toJSON() for name, counts in sorted(self._counts.items())},
            "memory": self.memory.snapshot(),
        }


def _passKey(key: bytes) -> bytes:
    """
    @return: what the keys found uncacheable are remembered by: a digest,
        since a key holds the request's target and C{varyOn} headers, as
        long as the client makes them (L{MAX_PASSES} of them would hold
        that many targets outside the memory store's bound).
    """
    return hashlib.blake2b(key, digest_size=16).digest()


def _ignoreRedis(failure: Failure, what: str) -> None:
    failure.trap(RedisError)
    log.debug("{what} in Redis failed: {error}", what=what, error=failure.value)


class Ticket:
    """
    What the cache does for one request (see the module's documentation).

    @ivar key: its key.
    @ivar serve: the entry to answer it from, once decided (L{None}: it
        goes upstream).
    @ivar storing: whether its answer's body is teed into an entry.
    """

    __slots__ = (
        "cache",
        "policy",
        "exchange",
        "key",
        "epoch",
        "generation",
        "method",
        "serve",
        "revalidate",
        "storing",
        "fwd",
        "fwdStatus",
        "hit",
        "stored",
        "collapsed",
        "detail",
        "result",
        "noStore",
        "flight",
        "_pending",
        "_counted",
    )

    def __init__(self, cache: ResponseCache, policy: CachePolicy, exchange: Any) -> None:
        self.cache = cache
        self.policy = policy
        self.exchange = exchange
        self.key = policy.primaryKey(exchange, exchange.upstreamURI)
        self.epoch = cache._epochs.get(policy.api, 0)
        self.generation: Optional[bytes] = None
        self.method = exchange.request.method
        self.serve: Optional[Entry] = None
        self.revalidate: Optional[Entry] = None
        self.storing = False
        self.fwd: Optional[str] = None
        self.fwdStatus: Optional[int] = None
        self.hit = False
        self.stored = False
        self.collapsed: Optional[bool] = None
        self.detail: Optional[str] = None
        self.result = "miss"
        self.noStore = False
        self.flight: Optional[Flight] = None
        self._pending: Optional[Tuple[Any, ...]] = None
        self._counted = False

    # -- deciding -----------------------------------------------------------------

    def decide(self) -> Optional[Deferred]:
        """
        Look the request up.

        @return: L{None} when decided already, else a Deferred that fires
            (with L{None}) once it is; cancelling it stops the look-up.
        """
        method = self.method
        if method != _GET and method != _HEAD:
            self.fwd = "method"
            self.result = "bypass"
            return None
        policy = self.policy
        if policy.honourRequest:
            directives = cacheControl(
                self.exchange.request.requestHeaders.getRawHeaders(b"cache-control")
            )
            if b"no-store" in directives:
                self.noStore = True
            if b"no-cache" in directives or deltaSeconds(directives.get(b"max-age")) == 0:
                self.fwd = "request"
                return self._collapse()
        if policy.store == "memory":
            kind, entry = self.cache.memory.lookup(
                self.key, self._variantFor, self.cache._reactor.seconds()
            )
            return self._found(kind, entry)
        redis = self.cache.redis
        if redis is None:
            self.cache.noRedis(policy)
            self.fwd, self.detail, self.result = "miss", "no-redis", "bypass"
            return None
        if not redis.available:
            self.fwd, self.detail, self.result = "miss", "redis-unavailable", "bypass"
            return self._collapse()
        d = redis.lookup(policy, self.key, self._variantFor)
        d.addCallbacks(self._redisFound, self._redisFailed)
        # A client that leaves stops waiting, not the call: cancelling a
        # call to Redis counts as Redis not answering in time.
        waiting: Deferred = Deferred()

        def relay(result: Any) -> None:
            if waiting.called:
                return
            if isinstance(result, Failure):
                waiting.errback(result)
            else:
                waiting.callback(result)

        d.addBoth(relay)
        return waiting

    def _variantFor(self, names: Tuple[bytes, ...]) -> bytes:
        return variantOf(names, self.exchange.upstreamHeaders)

    def _redisFound(self, found: Tuple[str, Optional[Entry], bytes]) -> Any:
        kind, entry, self.generation = found
        if self.exchange.gone:
            return None
        if entry is not None and entry.expired(self.cache._reactor.seconds()):
            entry, kind = None, "uri-miss"
        return self._found(kind, entry)

    def _redisFailed(self, failure: Failure) -> Any:
        if failure.check(CancelledError):
            return failure
        failure.trap(RedisError)
        self.fwd, self.result = "miss", "bypass"
        self.detail = "redis-timeout" if failure.check(RedisTimeout) else "redis-unavailable"
        return self._collapse()

    def _found(self, kind: str, entry: Optional[Entry]) -> Optional[Deferred]:
        if entry is None:
            self.fwd = kind
            return self._collapse()
        now = self.cache._reactor.seconds()
        if entry.fresh(now):
            self.hit = True
            self.result = "hit"
            self.serve = entry
            return None
        self.fwd = "stale"
        self.result = "stale"
        if self.method == _GET and entry.validated:
            self.revalidate = entry
        return self._collapse()

    def _collapse(self) -> Optional[Deferred]:
        """
        A forward is coming: lead it, or wait for the one of the same key
        in flight.
        """
        policy = self.policy
        if self.method != _GET or policy.collapseTimeout <= 0:
            return None
        cache = self.cache
        request = self.exchange.request
        flight = cache._flightOf(self.key)
        if flight is None:
            if not any(request.requestHeaders.hasHeader(h) for h in _CONDITIONALS):
                # (An answer to the client's own conditions, a 304 perhaps,
                # would be of no use to those who wait.)
                self.flight = cache._lead(self.key)
            return None
        if cache.passes(self.key, cache._reactor.seconds()):
            return None
        d = flight.join()
        d.addTimeout(policy.collapseTimeout, cache._reactor)
        d.addCallbacks(self._landed, self._notLanded)
        return d

    def _landed(self, entry: Optional[Entry]) -> None:
        now = self.cache._reactor.seconds()
        if (
            entry is not None
            and entry.fresh(now)
            and entry.variant == self._variantFor(entry.varyNames)
        ):
            self.collapsed = True
            self.result = "collapsed"
            self.serve = entry
            return
        self.collapsed = False

    def _notLanded(self, failure: Failure) -> None:
        failure.trap(TimeoutError)
        self.collapsed = False

    # -- forwarding -------------------------------------------------------------

    def forwarding(self, headers: Any) -> None:
        """
        The request goes upstream with C{headers}: make it a conditional
        request when it revalidates a stale entry (its own conditions
        replaced by the entry's validators).
        """
        entry = self.revalidate
        if entry is None:
            return
        for name in _CONDITIONALS:
            headers.removeHeader(name)
        if entry.etag is not None:
            headers.setRawHeaders(b"if-none-match", [entry.etag])
        if entry.lastModified is not None:
            headers.setRawHeaders(b"if-modified-since", [entry.lastModified])

    def response(self, response: Any) -> Optional[Entry]:
        """
        Judge the upstream's answer (its head).

        @return: the entry to answer from instead, when a 304 refreshed the
            entry revalidated; else L{None}: the answer goes to the client,
            and is stored when L{storing} (its body given to
            L{bodyComplete}).
        """
        status = response.code
        method = self.method
        if method != _GET:
            if method in _UNSAFE and 200 <= status < 400:
                self.cache.invalidate(self)
            return None
        cache = self.cache
        now = cache._reactor.seconds()
        headers = _headerLines(response.headers)
        if status == 304 and self.revalidate is not None:
            entry = self._refreshed(self.revalidate, headers, now)
            self.fwdStatus = 304
            self.result = "revalidated"
            cache.store(self, entry)
            self._land(entry)
            return entry
        reason = self._refusal(status, headers, response, now)
        if reason is not None:
            self.detail = reason
            if self.flight is not None:
                cache._pass(self.key, self.policy, now)
            self._land(None)
            return None
        # Stored, in memory, or in Redis when the look-up found it there
        # (else the entry is only made for those who wait for it).
        self.stored = self.policy.store == "memory" or self.generation is not None
        self.storing = self.stored or self.flight is not None
        if not self.storing:
            self._pending = None
        return None

    def _refusal(
        self, status: int, headers: List[Tuple[bytes, bytes]], response: Any, now: float
    ) -> Optional[str]:
        """
        @return: why an answer is not stored, or L{None} when it is (its
            head kept in C{_pending} for L{bodyComplete}).
        """
        if self.noStore:
            return "request-no-store"
        lines: Dict[bytes, List[bytes]] = {}
        for name, value in headers:
            lines.setdefault(name, []).append(value)
        directives = cacheControl(lines.get(b"cache-control"))
        exchange = self.exchange
        authorized = exchange.upstreamHeaders.hasHeader(b"authorization") or self.policy.personal(
            exchange.consumer
        )
        reason = storable(status, directives, lines, authorized)
        if reason is not None:
            return reason
        policy = self.policy
        length = getattr(response, "length", None)
        if isinstance(length, int) and length > policy.maxBodySize:
            return "too-large"
        date = httpDateSeconds(lines[b"date"][0]) if b"date" in lines else None
        if date is None:
            date = now
            headers.append((b"date", httpDate(now)))
        lifetime = freshnessLifetime(status, directives, date, lines.get(b"expires"), policy.ttl)
        if lifetime is None:
            return "no-lifetime"
        requestTime = self.exchange.sentAt or now
        initialAge = correctedInitialAge(lines.get(b"age"), date, requestTime, now)
        validated = b"etag" in lines or b"last-modified" in lines
        if lifetime <= initialAge and not validated:
            return "stale"
        names = varyNames(lines.get(b"vary")) or ()
        policy.varyHint = names
        self._pending = (
            status,
            response.phrase or b"",
            [(n, v) for n, v in headers if n != _AGE],
            now,
            initialAge,
            lifetime,
            policy.keepStale if validated else 0.0,
            names,
            self._variantFor(names),
        )
        return None

    def _refreshed(self, entry: Entry, headers: List[Tuple[bytes, bytes]], now: float) -> Entry:
        """
        @return: C{entry} refreshed by a 304's header lines (RFC 9111 3.2,
            4.3.4): its lines replace the entry's of the same names, and
            its freshness starts again.
        """
        fresh: Dict[bytes, List[bytes]] = {}
        for name, value in headers:
            if name not in _NOT_REFRESHED:
                fresh.setdefault(name, []).append(value)
        if b"date" not in fresh:
            # (A recipient with a clock dates an answer that has no Date,
            # RFC 9110 6.6.1.)
            fresh[b"date"] = [httpDate(now)]
        merged = [(n, v) for n, v in entry.headers if n not in fresh]
        for name, values in fresh.items():
            merged.extend((name, v) for v in values)
        lines: Dict[bytes, List[bytes]] = {}
        for name, value in merged:
            lines.setdefault(name, []).append(value)
        date = httpDateSeconds(lines[b"date"][0])
        directives = cacheControl(lines.get(b"cache-control"))
        lifetime = freshnessLifetime(
            entry.status, directives, date, lines.get(b"expires"), self.policy.ttl
        )
        requestTime = self.exchange.sentAt or now
        ages = [v for n, v in headers if n == _AGE]
        return Entry(
            entry.status,
            entry.phrase,
            merged,
            entry.body,
            now,
            correctedInitialAge(ages or None, date, requestTime, now),
            lifetime if lifetime is not None else self.policy.ttl,
            entry.keep,
            entry.varyNames,
            entry.variant,
        )

    def bodyComplete(self, body: bytes) -> None:
        """
        The whole body of an answer being stored came: store it.
        """
        pending, self._pending = self._pending, None
        self.storing = False
        if pending is None:
            return
        status, phrase, headers, now, age, lifetime, keep, names, variant = pending
        entry = Entry(status, phrase, headers, body, now, age, lifetime, keep, names, variant)
        if self.stored:
            self.cache.store(self, entry)
            self.cache._countsOf(self.policy.api).stored += 1
        self._land(entry)

    def bodyAbandoned(self, reason: str) -> None:
        """
        The answer being stored is not, after all (its body outgrew
        C{maxBodySize}, or broke).
        """
        self.storing = False
        self._pending = None
        self.detail = reason
        self._land(None)

    def _land(self, entry: Optional[Entry]) -> None:
        flight, self.flight = self.flight, None
        if flight is not None:
            self.cache._land(self.key, flight, entry)

    def close(self) -> None:
        """
        The request is over: whoever still waits for its forward goes
        upstream.
        """
        self._pending = None
        self._land(None)

    # -- answering --------------------------------------------------------------

    def compose(self, entry: Entry, headers: Any, via: bytes) -> Tuple[int, bytes, Optional[bytes]]:
        """
        Put an entry's answer in the response C{headers}: its lines,
        C{Content-Length}, C{Age}; a 304 when the client's own conditions
        (C{If-None-Match}, else C{If-Modified-Since}) hold.

        @return: C{(status, reason phrase, body or None)}.
        """
        now = self.cache._reactor.seconds()
        incoming = self.exchange.request.requestHeaders
        status, phrase = entry.status, entry.phrase
        body: Optional[bytes] = entry.body
        if _notModified(entry, incoming):
            status, phrase, body = 304, b"Not Modified", None
        grouped: Dict[bytes, List[bytes]] = {}
        for name, value in entry.headers:
            grouped.setdefault(name, []).append(value)
        raw = rawHeadersOf(headers)
        if raw is not None:
            for name, values in grouped.items():
                raw[headerKey(name)] = values
        else:
            for name, values in grouped.items():
                headers.setRawHeaders(name, values)
        headers.addRawHeader(b"via", via)
        headers.setRawHeaders(b"age", [b"%d" % (int(entry.age(now)),)])
        if status not in (204, 304):
            headers.setRawHeaders(b"content-length", [b"%d" % (len(entry.body),)])
        if self.method == _HEAD:
            body = None
        return status, phrase, body

    def annotate(self, headers: Any) -> None:
        """
        Say in the answer's C{Cache-Status} what the cache did, and count
        it (once).
        """
        if self._counted:
            return
        self._counted = True
        counts = self.cache._countsOf(self.policy.api)
        setattr(counts, self.result, getattr(counts, self.result) + 1)
        if self.result == "revalidated":
            counts.stale += 1
        ttl = None
        if self.hit and self.serve is not None:
            serve = self.serve
            ttl = serve.lifetime - serve.age(self.cache._reactor.seconds())
        member = cacheStatus(
            self.hit,
            self.fwd,
            self.fwdStatus,
            self.stored,
            self.collapsed,
            ttl,
            self.detail,
        )
        headers.addRawHeader(b"cache-status", member)


def _notModified(entry: Entry, incoming: Any) -> bool:
    """
    @return: whether a request's own conditions say it has the entry
        already (RFC 9110 13.1.2, 13.1.3).
    """
    if entry.status != 200:
        return False
    ifNoneMatch = incoming.getRawHeaders(b"if-none-match")
    if ifNoneMatch:
        return etagMatches(ifNoneMatch, entry.etag)
    since = incoming.getRawHeaders(b"if-modified-since")
    if since:
        when = httpDateSeconds(since[0])
        modified = httpDateSeconds(entry.lastModified)
        if modified is None:
            for name, value in entry.headers:
                if name == b"date":
                    modified = httpDateSeconds(value)
                    break
        return when is not None and modified is not None and modified <= when
    return False


def _headerLines(headers: Any) -> List[Tuple[bytes, bytes]]:
    """
    @return: an upstream answer's header lines that a cache stores, names
        in lower case (a copy: the pipeline hands the lists on).
    """
    connection = headers.getRawHeaders(b"connection")
    named: set = set()
    if connection:
        for line in connection:
            named.update(t.strip().lower() for t in line.split(b","))
    lines: List[Tuple[bytes, bytes]] = []
    for name, values in headers.getAllRawHeaders():
        lower = name.lower()
        if lower in _NOT_STORED or lower in named:
            continue
        lines.extend((lower, v) for v in values)
    return lines
