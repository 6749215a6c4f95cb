"""
The C{rate-limit} filter: an API's C{maxQPS} and C{rateLimit}, over the
token buckets of L{gateway.protection.ratelimit}.  Over the limit it answers
C{429} with C{Retry-After} and the C{RateLimit-Limit},
C{RateLimit-Remaining} and C{RateLimit-Reset} headers, or queues the request
for up to C{maxWait} seconds when the API says so.
"""

from __future__ import annotations

import math
from collections import deque
from hashlib import blake2b
from typing import Any, Deque, Dict, Hashable, List, Optional, Sequence, Tuple

from twisted.internet.defer import Deferred
from zope.interface import implementer

from gateway.interfaces import IFilter
from gateway.pipeline.exchange import EarlyResponse
from gateway.protection.ratelimit import LOCAL, MAX_KEYS, TokenBucket

_LIMIT = b"RateLimit-Limit"


_REMAINING = b"RateLimit-Remaining"


_RESET = b"RateLimit-Reset"


_RETRY_AFTER = b"Retry-After"


#: Header values longer than this are kept as a digest in the keyed
#: buckets (see L{_Limit.keyOf}).
_KEY_BYTES = 64


class _Limit:
    """
    One limit of an API: a bucket, or a bucket per key.
    """

    __slots__ = ("rate", "burst", "key", "kind", "_header", "_consumer", "_single", "_keyed")

    def __init__(
        self,
        rate: float,
        burst: float,
        key: str,
        clock: Any,
        maxKeys: int,
        buckets: Any = LOCAL,
        name: str = "",
        kind: str = "rateLimit",
    ) -> None:
        """
        @param buckets: what makes the buckets: L{LOCAL}, or the
            L{gateway.protection.sharedbuckets.SharedBuckets} of the workers.
        @param name: what the limit is, the same in every worker.
        @param kind: which setting of the API it is: C{rateLimit} or
            C{maxQPS}.
        """
        self.rate = float(rate)
        self.burst = float(burst)
        self.key = key
        self.kind = kind
        self._header: Optional[bytes] = None
        self._consumer = False
        self._single: Optional[TokenBucket] = None
        self._keyed: Optional[Any] = None
        if key == "none":
            self._single = buckets.bucket(name, rate, burst, clock)
            return
        if key.startswith("header:"):
            self._header = key[len("header:") :].lower().encode("ascii")
        elif key == "consumer":
            self._consumer = True
        elif key != "ip":
            raise ValueError(f"key must be none, ip, consumer or header:NAME, not {key!r}")
        self._keyed = buckets.keyed(name, rate, burst, clock, maxKeys)

    def keyOf(self, context: Any) -> Hashable:
        """
        @return: which bucket a request counts against.
        """
        if self._single is not None:
            return None
        if self._consumer:
            # (The auth filter runs first; a request it let through has a
            # consumer, the anonymous one included.)
            consumer = context.consumer
            return consumer.name if consumer is not None else ""
        if self._header is None:
            return context.clientIP
        values = context.request.requestHeaders.getRawHeaders(self._header)
        # Requests without the header share one bucket: leaving them
        # unlimited would make the header a way around the limit.
        if not values:
            return b""
        value = values[0]
        if len(value) > _KEY_BYTES:
            # The buckets keep their keys (up to maxKeys of them): a value
            # of up to proxy.limits.maxHeadersSize would let a client hold
            # a gigabyte per worker with distinct keys.  A 128-bit digest
            # keeps keys apart as well; the NUL that starts it is in no
            # header value, so it is no short value's key either.
            return b"\x00" + blake2b(value, digest_size=16).digest()
        return value

    def takeOver(self, old: _Limit) -> None:
        """
        Carry the levels of C{old}, this limit before its settings changed,
        over to this one, when both count the same thing by the same key
        (see L{TokenBucket.takeOver}).
        """
        if old.kind != self.kind or old.key != self.key:
            return
        if self._single is not None and old._single is not None:
            self._single.takeOver(old._single)
        elif self._keyed is not None and old._keyed is not None:
            self._keyed.takeOver(old._keyed)

    def bucketFor(self, key: Hashable) -> TokenBucket:
        single = self._single
        if single is not None:
            return single
        assert self._keyed is not None
        return self._keyed.get(key)


class _Waiter:
    __slots__ = ("context", "deferred", "deadline")

    #: What the request waits on (given after it is made: its canceller
    #: names the waiter).
    deferred: Deferred[Optional[EarlyResponse]]

    def __init__(self, context: Any, deadline: float) -> None:
        self.context = context
        self.deadline = deadline


class _Queue:
    """
    The requests of one key waiting for tokens, first come, first served.
    """

    __slots__ = ("key", "buckets", "waiters", "timer")

    def __init__(self, key: Hashable, buckets: Tuple[TokenBucket, ...]) -> None:
        self.key = key
        self.buckets = buckets
        self.waiters: Deque[_Waiter] = deque()
        self.timer: Any = None


def _ceilSeconds(seconds: float) -> int:
    """
    @return: whole seconds, rounded up (ignoring float dust: 2.0000000001
        is 2), for the headers.
    """
    if seconds >= 2**31:
        return 2**31 - 1
    return max(0, int(math.ceil(seconds - 1e-9)))


def _rejection(buckets: Sequence[TokenBucket], wait: Optional[float] = None) -> EarlyResponse:
    """
    @return: the C{429} answer for a request the buckets turned away,
        naming the bucket that holds it back longest; C{503} when a bucket
        refused because the fleet's store of buckets is away
        (C{limits.onFailure: closed}, L{gateway.protection.redisbuckets}).
    """
    # -- cluster-wide limits (limits.store): a refusal for want of Redis ---
    for bucket in buckets:
        if bucket.unavailable:
            return EarlyResponse.error(
                503, "rate limits unavailable (limits.store)", {_RETRY_AFTER: [b"1"]}
            )
    # -- end cluster-wide limits ---
    worst = buckets[0]
    worstWait = worst.retryAfter()
    for bucket in buckets[1:]:
        bucketWait = bucket.retryAfter()
        if bucketWait > worstWait:
            worst, worstWait = bucket, bucketWait
    if wait is None:
        wait = worstWait
    headers: Dict[Any, Any] = {
        _RETRY_AFTER: [b"%d" % (max(1, _ceilSeconds(wait)),)],
        _LIMIT: [b"%d" % (int(worst.burst),)],
        _REMAINING: [b"0"],
        _RESET: [b"%d" % (_ceilSeconds(worst.resetAfter()),)],
    }
    return EarlyResponse.error(429, "rate limit exceeded", headers)


@implementer(IFilter)
class RateLimitFilter:
    """
    Limits the requests of one API with one or more token buckets.

    A request must get a token from every bucket (all or none are taken).
    Allowed responses carry C{RateLimit-Limit} (the bucket size),
    C{RateLimit-Remaining} (whole tokens left) and C{RateLimit-Reset}
    (seconds, rounded up, until the bucket is full again) of the tightest
    bucket: the one with the fewest tokens left.

    Over the limit, it answers C{429} with C{Retry-After} (seconds until a
    token is free, rounded up, at least 1) and C{RateLimit-Remaining: 0};
    or, when C{queueing}, the request waits in its key's queue for at most
    C{maxWait} seconds.  Queued requests are served in arrival order, each
    with a token taken at the moment it goes on, so queueing never lets
    more through than the buckets allow; a request whose wait would exceed
    C{maxWait} (or that finds C{rate * maxWait + 1} requests waiting ahead
    of it) gets the C{429} at once.  A waiting request whose client goes
    away leaves the queue without a token, and the requests behind it move
    up.

    Build it with L{makeRateLimitFilter}.
    """

    name = "rate-limit"

    def __init__(
        self,
        limits: Sequence[_Limit],
        clock: Any,
        queueing: bool = False,
        maxWait: float = 0.0,
    ) -> None:
        """
        @param limits: the limits; in queueing mode the first one's key
            decides the queue a request waits in.
        @param clock: an L{twisted.internet.interfaces.IReactorTime}.
        @param queueing: wait for a token instead of answering C{429}.
        @param maxWait: the longest a request may wait, in seconds.
        """
        if not limits:
            raise ValueError("a rate-limit filter needs at least one limit")
        self._limits = tuple(limits)
        self._clock = clock
        self._queueing = queueing
        self.maxWait = float(maxWait)
        self.maxQueue = int(self._limits[0].rate * self.maxWait) + 1
        self._queues: Dict[Hashable, _Queue] = {}

    def __repr__(self) -> str:
        limits = ", ".join(f"{lim.rate}/s burst {lim.burst} key {lim.key}" for lim in self._limits)
        return f"<RateLimitFilter {limits}{' queue' if self._queueing else ''}>"

    # -- IFilter ----------------------------------------------------------------

    def before(self, context: Any) -> Any:
        limits = self._limits
        if len(limits) == 1:
            limit = limits[0]
            key = limit.keyOf(context)
            if self._queues:
                queue = self._queues.get(key)
                if queue is not None:
                    return self._enqueue(queue, context)
            bucket = limit.bucketFor(key)
            taken, remaining, reset = bucket.takeStatus()
            if taken:
                context.attributes[self] = (int(bucket.burst), remaining, _ceilSeconds(reset))
                return None
            buckets: Tuple[TokenBucket, ...] = (bucket,)
        else:
            key = limits[0].keyOf(context)
            if self._queues:
                queue = self._queues.get(key)
                if queue is not None:
                    return self._enqueue(queue, context)
            buckets = (limits[0].bucketFor(key),) + tuple(
                lim.bucketFor(lim.keyOf(context)) for lim in limits[1:]
            )
            if _takeAll(buckets):
                self._admitted(context, buckets)
                return None
        if not self._queueing:
            return _rejection(buckets)
        queue = _Queue(key, buckets)
        self._queues[key] = queue
        return self._enqueue(queue, context)

    def after(self, context: Any, response: Any) -> None:
        recorded = context.attributes.get(self)
        if recorded is None:
            return None
        limit, remaining, reset = recorded
        headers = response.headers
        headers.setRawHeaders(_LIMIT, [b"%d" % (limit,)])
        headers.setRawHeaders(_REMAINING, [b"%d" % (remaining,)])
        headers.setRawHeaders(_RESET, [b"%d" % (reset,)])
        return None

    def error(self, context: Any, failure: Any) -> None:
        return None

    # -- admitting --------------------------------------------------------------

    def _admitted(self, context: Any, buckets: Sequence[TokenBucket]) -> None:
        tightest = buckets[0]
        remaining, reset = tightest.status()
        for bucket in buckets[1:]:
            otherRemaining, otherReset = bucket.status()
            if otherRemaining < remaining or (otherRemaining == remaining and otherReset > reset):
                tightest, remaining, reset = bucket, otherRemaining, otherReset
        context.attributes[self] = (int(tightest.burst), remaining, _ceilSeconds(reset))

    # -- queueing ---------------------------------------------------------------

    def queued(self, key: Hashable = None) -> int:
        """
        @return: how many requests of C{key} are waiting.
        """
        queue = self._queues.get(key)
        return len(queue.waiters) if queue is not None else 0

    def _estimate(self, queue: _Queue, ahead: int) -> float:
        """
        @return: roughly how long a request with C{ahead} requests in front
            of it will wait: while requests wait, every token goes at once,
            so the bucket's cap plays no part.
        """
        wait = 0.0
        for bucket in queue.buckets:
            wait = max(wait, (ahead + 1 - bucket.tokens()) / bucket.rate)
        return wait

    def _enqueue(self, queue: _Queue, context: Any) -> Any:
        ahead = len(queue.waiters)
        wait = self._estimate(queue, ahead)
        if ahead >= self.maxQueue or wait > self.maxWait:
            if not queue.waiters:
                del self._queues[queue.key]
            return _rejection(queue.buckets, wait)
        # A hair of slack so that float rounding of the release time never
        # turns away a request whose estimate was exactly maxWait.
        waiter = _Waiter(context, self._clock.seconds() + self.maxWait + 1e-6)
        # Cancelled by the pipeline when the client goes away.
        waiter.deferred = Deferred(lambda d: self._cancel(queue, waiter))
        queue.waiters.append(waiter)
        if queue.timer is None:
            self._schedule(queue)
        return waiter.deferred

    def _schedule(self, queue: _Queue) -> None:
        head = queue.waiters[0]
        delay = 0.0
        for bucket in queue.buckets:
            delay = max(delay, bucket.retryAfter())
        delay = max(0.0, min(delay, head.deadline - self._clock.seconds()))
        queue.timer = self._clock.callLater(delay, self._drain, queue)

    def _drain(self, queue: _Queue) -> None:
        queue.timer = None
        waiters = queue.waiters
        while waiters:
            waiter = waiters[0]
            if waiter.context.gone:
                # Gone, and not cancelled (yet): no token for it.
                waiters.popleft()
                waiter.deferred.callback(None)
                continue
            if _takeAll(queue.buckets):
                waiters.popleft()
                self._admitted(waiter.context, queue.buckets)
                waiter.deferred.callback(None)
                continue
            if self._clock.seconds() >= waiter.deadline:
                waiters.popleft()
                waiter.deferred.callback(_rejection(queue.buckets))
                continue
            break
        if waiters:
            if queue.timer is None:
                self._schedule(queue)
        elif self._queues.get(queue.key) is queue:
            del self._queues[queue.key]

    def _cancel(self, queue: _Queue, waiter: _Waiter) -> None:
        """
        The waiting request's Deferred was cancelled (its client went
        away): it leaves the queue without taking a token, and the Deferred
        fails with L{twisted.internet.defer.CancelledError}.
        """
        try:
            queue.waiters.remove(waiter)
        except ValueError:
            return
        if not queue.waiters:
            if queue.timer is not None:
                queue.timer.cancel()
                queue.timer = None
            if self._queues.get(queue.key) is queue:
                del self._queues[queue.key]


def _takeAll(buckets: Sequence[TokenBucket]) -> bool:
    """
    Take a token from every bucket, or from none (under the lock of shared
    buckets, so that no other worker takes one in between).
    """
    lock = None
    for bucket in buckets:
        if bucket.lock is not None:
            lock = bucket.lock
            lock.acquire()
            break
    try:
        for bucket in buckets:
            if not bucket.allows():
                return False
        for bucket in buckets:
            bucket.take()
        return True
    finally:
        if lock is not None:
            lock.release()


def makeRateLimitFilter(
    api: Any,
    clock: Any,
    maxKeys: int = MAX_KEYS,
    buckets: Any = LOCAL,
    previous: Optional[RateLimitFilter] = None,
) -> Optional[RateLimitFilter]:
    """
    Build the traffic control of an API.

    C{api.rateLimit} is a bucket of C{rate} per second and C{burst} (by
    default C{rate}, at least 1) per key; C{api.maxQPS} is one more bucket,
    shared by all clients, of C{maxQPS} per second and as big.  With both,
    a request must pass both.  C{onLimit: queue} (with C{maxWait}) makes
    requests over C{rateLimit} wait in order instead of getting C{429}.

    @param api: a L{gateway.model.resources.API}.
    @param clock: an L{twisted.internet.interfaces.IReactorTime}.
    @param maxKeys: the most keys a keyed limit keeps buckets for (see
        L{KeyedBuckets}).
    @param buckets: what makes the buckets: L{LOCAL} in a gateway with one
        proxy process, the workers' L{gateway.protection.sharedbuckets.SharedBuckets}
        otherwise (the limits then hold for all of them together).
    @param previous: the filter of the API before its limits changed: the
        new buckets start from its buckets' levels (a limit that changes
        neither resets nor doubles what its clients may send).
    @return: the filter, or L{None} when the API has no limit.
    """
    limits: List[_Limit] = []
    rateLimit = api.rateLimit
    if rateLimit is not None:
        burst = rateLimit.burst if rateLimit.burst is not None else max(1.0, rateLimit.rate)
        name = f"api/{api.name}/rateLimit/{rateLimit.rate!r}/{burst!r}/{rateLimit.key}"
        limits.append(_Limit(rateLimit.rate, burst, rateLimit.key, clock, maxKeys, buckets, name))
    if api.maxQPS > 0:
        name = f"api/{api.name}/maxQPS/{api.maxQPS}"
        limits.append(
            _Limit(api.maxQPS, api.maxQPS, "none", clock, maxKeys, buckets, name, "maxQPS")
        )
    if not limits:
        return None
    if isinstance(previous, RateLimitFilter):
        for limit in limits:
            for old in previous._limits:
                limit.takeOver(old)
    queueing = rateLimit is not None and rateLimit.onLimit == "queue"
    return RateLimitFilter(
        limits, clock, queueing=queueing, maxWait=rateLimit.maxWait if queueing else 0.0
    )
