"""
Traffic control: token buckets and the C{rate-limit} filter.

A L{TokenBucket} holds up to C{burst} tokens and gains C{rate} tokens a
second; a request takes one.  Over any interval of length M{t} a bucket
admits at most M{burst + rate * t} requests, and the bucket keeps that
promise exactly, not just up to float rounding (see L{TokenBucket}).

The same bucket limits a server's C{maxQPS} (L{gateway.backend.Backend})
and an API's C{maxQPS} and C{rateLimit} (L{RateLimitFilter}, built by
L{makeRateLimitFilter}).  Over the limit, the filter answers C{429} with
C{Retry-After} and the C{RateLimit-Limit}, C{RateLimit-Remaining} and
C{RateLimit-Reset} headers of the IETF draft (httpapi-ratelimit-headers),
or, with C{onLimit: queue}, holds the request until a token is free.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from fractions import Fraction
from typing import Any, Deque, Dict, Hashable, List, Optional, Sequence, Tuple

from twisted.internet.defer import Deferred
from zope.interface import implementer

from gateway.errors import EarlyResponse
from gateway.interfaces import IFilter

#: After this many tokens taken without the bucket ever filling up again,
#: the bucket moves its reference point forward (see L{TokenBucket._rebase}),
#: so the numbers it adds stay small and exact.
_REBASE_AFTER = float(2**20)

#: Default number of keys (client addresses, header values) the filter keeps
#: a bucket for.
MAX_KEYS = 50_000

#: Where the filter leaves C{(limit, remaining, reset)} for its C{after} hook.
ATTRIBUTE = "gateway.ratelimit"

#: The proxy calls C{context.attributes[CANCEL]()} when the client goes away.
CANCEL = "gateway.cancel"

_LIMIT = b"RateLimit-Limit"
_REMAINING = b"RateLimit-Remaining"
_RESET = b"RateLimit-Reset"
_RETRY_AFTER = b"Retry-After"


class TokenBucket:
    """
    A lazily refilled token bucket: it starts full with C{burst} tokens and
    gains C{rate} tokens a second, never holding more than C{burst}.

    Exactness: the state is a reference time C{anchor}, at which the bucket
    was full, and the number of tokens C{taken} since then, an integer.  The
    tokens available at time M{now} are M{min(burst, burst - taken + (now -
    anchor) * rate)}: one expression of the stored values, so rounding
    never accumulates from one call to the next.  When that expression is
    within a hair of the threshold a decision depends on, the bucket decides
    with exact rational arithmetic on the values of the floats (see
    L{_exactlyAtLeast}), so it is an exact token bucket over the clock
    readings it saw:
    in any interval of length M{t} it admits at most M{burst + rate * t}.

    The clock is read as a monotone clock: a reading earlier than one
    already seen (the wall clock stepped back) counts as the latest one.

    @ivar rate: tokens gained per second.
    @ivar burst: the most tokens the bucket holds.
    """

    __slots__ = ("rate", "burst", "_clock", "_anchor", "_taken", "_last")

    #: What makes a decision on several buckets one: L{None} for a bucket
    #: of this process (one thread decides), the table for a bucket shared
    #: by processes (L{gateway.sharedbuckets.SharedTokenBucket}).
    lock: Any = None

    def __init__(self, rate: float, burst: float, clock: Any) -> None:
        """
        @param rate: tokens per second, above zero.
        @param burst: the bucket's size, above zero (a bucket smaller than
            one token never admits a request).
        @param clock: an L{twisted.internet.interfaces.IReactorTime}.
        @raise ValueError: for a rate or burst that is not a positive,
            finite number.
        """
        rate = float(rate)
        burst = float(burst)
        if not 0.0 < rate < math.inf:
            raise ValueError(f"rate must be a positive number, not {rate!r}")
        if not 0.0 < burst < math.inf:
            raise ValueError(f"burst must be a positive number, not {burst!r}")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        now = float(clock.seconds())
        self._last = now
        self._anchor = now
        self._taken = 0.0

    def __repr__(self) -> str:
        return f"<TokenBucket rate={self.rate} burst={self.burst} tokens={self.tokens():.3f}>"

    # -- the arithmetic ---------------------------------------------------------

    def _now(self) -> float:
        now = self._clock.seconds()
        if now < self._last:
            return self._last
        self._last = now
        return now

    def _value(self, now: float) -> float:
        """
        @return: the tokens at C{now} without the cap at C{burst}, in floats.
        """
        return (now - self._anchor) * self.rate + (self.burst - self._taken)

    def _has(self, now: float, amount: float) -> bool:
        """
        @return: whether the uncapped token count at C{now} is at least
            C{amount}, decided exactly.
        """
        taken = self._taken
        value = (now - self._anchor) * self.rate + (self.burst - taken)
        # Float error here is a few units in the last place of the largest
        # term; this margin is far wider, so outside it the float answer is
        # the exact one.
        margin = 1e-9 * (taken + self.burst + amount + 1.0)
        if value >= amount + margin:
            return True
        if value <= amount - margin:
            return False
        return _exactlyAtLeast(now, self._anchor, self.rate, self.burst, taken, amount)

    def _isFull(self, now: float) -> bool:
        return self._taken == 0.0 or self._has(now, self.burst)

    def _timeUntil(self, now: float, amount: float) -> float:
        """
        @return: a delay C{d} such that the bucket holds C{amount} tokens at
            time C{now + d} (as the clock adds it), at most a few units in
            the last place later than the exact moment.
        """
        when = self._anchor + (self._taken + amount - self.burst) / self.rate
        for _ in range(64):
            if self._has(when, amount):
                break
            when = math.nextafter(when, math.inf)
        else:  # pragma: no cover (the float estimate is a few ulps off at most)
            exact = Fraction(self._anchor) + (
                Fraction(self._taken) + Fraction(amount) - Fraction(self.burst)
            ) / Fraction(self.rate)
            when = float(exact)
            if Fraction(when) < exact:
                when = math.nextafter(when, math.inf)
        delay = when - now
        for _ in range(64):
            if now + delay >= when:
                break
            delay = math.nextafter(delay, math.inf)
        else:  # pragma: no cover
            delay += when * 1e-15
        return max(delay, 0.0)

    def _rebase(self, now: float) -> None:
        """
        Move the reference time to C{now}, rounding the tokens down to keep
        C{taken} an integer: the bucket may lose a fraction of a token, once
        in a million takes, and never gains one.
        """
        available = (
            (Fraction(now) - Fraction(self._anchor)) * Fraction(self.rate)
            + Fraction(self.burst)
            - Fraction(self._taken)
        )
        self._taken = float(math.ceil(Fraction(self.burst) - available))
        self._anchor = now

    # -- decisions (exact) ------------------------------------------------------

    def allows(self, n: int = 1) -> bool:
        """
        @return: whether C{n} tokens are there now (nothing is taken).
        """
        if n > self.burst:
            return False
        now = self._now()
        return self._isFull(now) or self._has(now, n)

    def take(self, n: int = 1) -> bool:
        """
        Take C{n} tokens if the bucket holds them.

        @return: whether they were taken.
        """
        if n > self.burst:
            return False
        now = self._now()
        if self._isFull(now):
            self._anchor = now
            self._taken = float(n)
            return True
        if not self._has(now, n):
            return False
        self._taken += n
        if self._taken > _REBASE_AFTER:
            self._rebase(now)
        return True

    def takeStatus(self, n: int = 1) -> Tuple[bool, int, float]:
        """
        L{take}, then L{status}, as one decision.

        @return: C{(taken, remaining, resetAfter)}.
        """
        return (self.take(n),) + self.status()

    def retryAfter(self, n: int = 1) -> float:
        """
        @return: seconds until the bucket holds C{n} tokens (0.0 when it
            does now, infinity when C{n} is more than C{burst}); advancing
            the clock by this much makes L{allows} true.
        """
        if n > self.burst:
            return math.inf
        now = self._now()
        if self._isFull(now) or self._has(now, n):
            return 0.0
        return self._timeUntil(now, n)

    # -- for display and estimates (floats) ---------------------------------------

    def _tokens(self, now: float) -> float:
        if self._taken == 0.0:
            return self.burst
        return max(0.0, min(self.burst, self._value(now)))

    def tokens(self) -> float:
        """
        @return: the tokens there now, fractions included.
        """
        return self._tokens(self._now())

    def remaining(self) -> int:
        """
        @return: the whole tokens there now (for the C{RateLimit-Remaining}
            header: L{allows} is the exact test).
        """
        return int(self._tokens(self._now()) + 1e-9)

    def resetAfter(self) -> float:
        """
        @return: seconds until the bucket is full again (0.0 when it is).
        """
        return self.status()[1]

    def status(self) -> Tuple[int, float]:
        """
        @return: C{(remaining(), resetAfter())} from one reading of the clock.
        """
        now = self._now()
        tokens = self._tokens(now)
        return int(tokens + 1e-9), (self.burst - tokens) / self.rate


def _exactlyAtLeast(
    now: float, anchor: float, rate: float, burst: float, taken: float, amount: float
) -> bool:
    """
    @return: whether M{(now - anchor) * rate + burst - taken >= amount} in
        exact arithmetic on the values of the floats.

    Every float is an integer over a power of two, so the sum is computed
    over the largest of those denominators with Python's integers, which is
    several times faster than L{fractions.Fraction}.
    """
    nowP, nowQ = now.as_integer_ratio()
    anchorP, anchorQ = anchor.as_integer_ratio()
    rateP, rateQ = rate.as_integer_ratio()
    termP = (nowP * anchorQ - anchorP * nowQ) * rateP
    termQ = nowQ * anchorQ * rateQ
    burstP, burstQ = burst.as_integer_ratio()
    takenP, takenQ = taken.as_integer_ratio()
    amountP, amountQ = float(amount).as_integer_ratio()
    common = max(termQ, burstQ, takenQ, amountQ)
    total = (
        termP * (common // termQ)
        + burstP * (common // burstQ)
        - takenP * (common // takenQ)
        - amountP * (common // amountQ)
    )
    return total >= 0


class KeyedBuckets:
    """
    One L{TokenBucket} per key (a client address, a header value), for at
    most C{maxKeys} keys: past that, the least recently used key's bucket is
    dropped, so a flood of distinct keys cannot grow memory without bound.

    The trade-off: a dropped key that comes back starts again with a full
    bucket, so a client that can cycle through more than C{maxKeys} keys
    faster than the buckets refill gets more than its share.  Keep
    C{maxKeys} well above the number of clients active within C{burst /
    rate} seconds; a bucket costs a few hundred bytes.
    """

    __slots__ = ("rate", "burst", "maxKeys", "_clock", "_buckets")

    def __init__(self, rate: float, burst: float, clock: Any, maxKeys: int = 10000) -> None:
        if maxKeys < 1:
            raise ValueError("maxKeys must be at least 1")
        # Fail now, not on the first request, on a bad rate or burst.
        TokenBucket(rate, burst, clock)
        self.rate = rate
        self.burst = burst
        self.maxKeys = maxKeys
        self._clock = clock
        self._buckets: OrderedDict[Hashable, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._buckets

    def get(self, key: Hashable) -> TokenBucket:
        """
        @return: the bucket of C{key}, made (full) when there is none.
        """
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            bucket = buckets[key] = TokenBucket(self.rate, self.burst, self._clock)
            if len(buckets) > self.maxKeys:
                buckets.popitem(last=False)
        else:
            buckets.move_to_end(key)
        return bucket


class LocalBuckets:
    """
    Makes the buckets of limits that hold in this process alone (one
    proxy process; L{gateway.sharedbuckets.SharedBuckets} makes those that
    several workers share).
    """

    def bucket(self, name: str, rate: float, burst: float, clock: Any) -> TokenBucket:
        """
        @param name: what the limit is (unused here: each call makes a new
            bucket).
        @return: the bucket of a limit that is not keyed.
        """
        return TokenBucket(rate, burst, clock)

    def keyed(self, name: str, rate: float, burst: float, clock: Any, maxKeys: int) -> Any:
        """
        @return: the L{KeyedBuckets} of a keyed limit.
        """
        return KeyedBuckets(rate, burst, clock, maxKeys)


#: The buckets of a process that shares them with none.
LOCAL = LocalBuckets()


class _Limit:
    """
    One limit of an API: a bucket, or a bucket per key.
    """

    __slots__ = ("rate", "burst", "key", "_header", "_single", "_keyed")

    def __init__(
        self,
        rate: float,
        burst: float,
        key: str,
        clock: Any,
        maxKeys: int,
        buckets: Any = LOCAL,
        name: str = "",
    ) -> None:
        """
        @param buckets: what makes the buckets: L{LOCAL}, or the
            L{gateway.sharedbuckets.SharedBuckets} of the workers.
        @param name: what the limit is, the same in every worker.
        """
        self.rate = float(rate)
        self.burst = float(burst)
        self.key = key
        self._header: Optional[bytes] = None
        self._single: Optional[TokenBucket] = None
        self._keyed: Optional[Any] = None
        if key == "none":
            self._single = buckets.bucket(name, rate, burst, clock)
            return
        if key.startswith("header:"):
            self._header = key[len("header:") :].lower().encode("ascii")
        elif key != "ip":
            raise ValueError(f"key must be none, ip or header:NAME, not {key!r}")
        self._keyed = buckets.keyed(name, rate, burst, clock, maxKeys)

    def keyOf(self, context: Any) -> Hashable:
        """
        @return: which bucket a request counts against.
        """
        if self._single is not None:
            return None
        if self._header is None:
            return context.clientIP
        values = context.request.requestHeaders.getRawHeaders(self._header)
        # Requests without the header share one bucket: leaving them
        # unlimited would make the header a way around the limit.
        return values[0] if values else b""

    def bucketFor(self, key: Hashable) -> TokenBucket:
        single = self._single
        if single is not None:
            return single
        assert self._keyed is not None
        return self._keyed.get(key)


class _Waiter:
    __slots__ = ("context", "deferred", "deadline", "previousCancel")

    def __init__(self, context: Any, deadline: float, previousCancel: Any) -> None:
        self.context = context
        self.deferred: Deferred[Optional[EarlyResponse]] = Deferred()
        self.deadline = deadline
        self.previousCancel = previousCancel


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
        naming the bucket that holds it back longest.
    """
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
                context.attributes[ATTRIBUTE] = (int(bucket.burst), remaining, _ceilSeconds(reset))
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
        recorded = context.attributes.get(ATTRIBUTE)
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
        context.attributes[ATTRIBUTE] = (int(tightest.burst), remaining, _ceilSeconds(reset))

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
        attributes = context.attributes
        previous = attributes.get(CANCEL)
        # A hair of slack so that float rounding of the release time never
        # turns away a request whose estimate was exactly maxWait.
        waiter = _Waiter(context, self._clock.seconds() + self.maxWait + 1e-6, previous)
        queue.waiters.append(waiter)

        def cancel() -> None:
            self._cancel(queue, waiter)
            if previous is not None:
                previous()

        attributes[CANCEL] = cancel
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

    def _release(self, waiter: _Waiter) -> None:
        attributes = waiter.context.attributes
        if waiter.previousCancel is None:
            attributes.pop(CANCEL, None)
        else:
            attributes[CANCEL] = waiter.previousCancel

    def _drain(self, queue: _Queue) -> None:
        queue.timer = None
        waiters = queue.waiters
        while waiters:
            waiter = waiters[0]
            if waiter.context.request._disconnected:
                # Gone without the proxy telling us: no token for it.
                waiters.popleft()
                self._release(waiter)
                waiter.deferred.callback(None)
                continue
            if _takeAll(queue.buckets):
                waiters.popleft()
                self._release(waiter)
                self._admitted(waiter.context, queue.buckets)
                waiter.deferred.callback(None)
                continue
            if self._clock.seconds() >= waiter.deadline:
                waiters.popleft()
                self._release(waiter)
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
        The client of a waiting request went away: it leaves the queue
        without taking a token.
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
        # The proxy sees the client is gone and goes no further.
        waiter.deferred.callback(None)


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
    api: Any, clock: Any, maxKeys: int = MAX_KEYS, buckets: Any = LOCAL
) -> Optional[RateLimitFilter]:
    """
    Build the traffic control of an API.

    C{api.rateLimit} is a bucket of C{rate} per second and C{burst} (by
    default C{rate}, at least 1) per key; C{api.maxQPS} is one more bucket,
    shared by all clients, of C{maxQPS} per second and as big.  With both,
    a request must pass both.  C{onLimit: queue} (with C{maxWait}) makes
    requests over C{rateLimit} wait in order instead of getting C{429}.

    @param api: a L{gateway.model.API}.
    @param clock: an L{twisted.internet.interfaces.IReactorTime}.
    @param maxKeys: the most keys a keyed limit keeps buckets for (see
        L{KeyedBuckets}).
    @param buckets: what makes the buckets: L{LOCAL} in a gateway with one
        proxy process, the workers' L{gateway.sharedbuckets.SharedBuckets}
        otherwise (the limits then hold for all of them together).
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
        limits.append(_Limit(api.maxQPS, api.maxQPS, "none", clock, maxKeys, buckets, name))
    if not limits:
        return None
    queueing = rateLimit is not None and rateLimit.onLimit == "queue"
    return RateLimitFilter(
        limits, clock, queueing=queueing, maxWait=rateLimit.maxWait if queueing else 0.0
    )
