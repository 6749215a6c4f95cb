"""
Traffic control: token buckets.

A L{TokenBucket} holds up to C{burst} tokens and gains C{rate} tokens a
second; a request takes one.  Over any interval of length M{t} a bucket
admits at most M{burst + rate * t} requests, and the bucket keeps that
promise exactly, not just up to float rounding (see L{TokenBucket}).

The same bucket limits a server's C{maxQPS} (L{gateway.balancing.backend.Backend})
and an API's C{maxQPS} and C{rateLimit}
(L{gateway.filters.ratelimit.RateLimitFilter}).  L{KeyedBuckets} holds one
bucket per client key (C{rateLimit.key}); the workers' shared buckets are in
L{gateway.protection.sharedbuckets}.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from fractions import Fraction
from typing import Any, Hashable, Optional, Tuple

#: After this many tokens taken without the bucket ever filling up again,
#: the bucket moves its reference point forward (see L{TokenBucket._rebase}),
#: so the numbers it adds stay small and exact.
_REBASE_AFTER = float(2**20)


#: Default number of keys (client addresses, header values) the filter keeps
#: a bucket for.
MAX_KEYS = 50_000


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
    #: by processes (L{gateway.protection.sharedbuckets.SharedTokenBucket}).
    lock: Any = None

    #: Whether a refusal is the absence of the store that holds the bucket
    #: (C{limits.onFailure: closed}, answered with 503), not the limit
    #: (429): never, for a bucket of this process or of the workers
    #: (L{gateway.protection.redisbuckets.LeasedBucket} may say so).
    unavailable = False

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

    def _available(self, now: float) -> Fraction:
        """
        @return: the tokens at C{now} (not before the latest reading seen),
            capped at C{burst}, exactly.
        """
        now = max(now, self._last)
        if self._taken == 0.0:
            return Fraction(self.burst)
        available = (
            (Fraction(now) - Fraction(self._anchor)) * Fraction(self.rate)
            + Fraction(self.burst)
            - Fraction(self._taken)
        )
        return min(available, Fraction(self.burst))

    def _holdAtMost(self, now: float, tokens: Fraction) -> None:
        """
        Hold at most C{tokens} from C{now} on, rounding down to keep
        C{taken} an integer (as L{_rebase}): the bucket never gains.
        """
        if tokens >= self._available(now):
            return
        self._anchor = now
        self._last = max(self._last, now)
        self._taken = float(max(0, math.ceil(Fraction(self.burst) - tokens)))

    def takeOver(self, old: TokenBucket) -> None:
        """
        Carry the level of C{old}, the bucket of the same limit before its
        settings changed, over to this one: from now on it holds no more
        tokens than C{old} holds now (nor than it holds itself), so that a
        changed limit neither hands its clients a new burst nor forgets what
        they took.

        @param old: the bucket this one replaces.
        """
        now = self._now()
        self._holdAtMost(now, old._available(now))

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

    __slots__ = ("rate", "burst", "maxKeys", "_clock", "_buckets", "_previous", "_previousUntil")

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
        self._previous: Optional[KeyedBuckets] = None
        self._previousUntil = 0.0

    def takeOver(self, old: KeyedBuckets) -> None:
        """
        Carry the levels of C{old}, the buckets of the same limit before its
        settings changed, over to these: a key's bucket, when first made
        here, takes over the level of the key's bucket in C{old} (see
        L{TokenBucket.takeOver}).  After C{old.burst / old.rate} seconds
        every bucket of C{old} would be full again, and C{old} is let go.

        @param old: the buckets these replace.
        """
        # Only one generation back: the one before that is let go.
        old._previous = None
        self._previous = old
        self._previousUntil = float(self._clock.seconds()) + old.burst / old.rate

    def _inherit(self, key: Hashable, bucket: TokenBucket) -> None:
        """
        A new bucket of C{key}: it takes over the level of C{key}'s bucket
        in the buckets these replaced (L{takeOver}), while they are kept.
        """
        previous = self._previous
        if previous is None:
            return
        if self._clock.seconds() >= self._previousUntil:
            self._previous = None
            return
        old = previous._existing(key)
        if old is not None:
            bucket.takeOver(old)

    def _existing(self, key: Hashable) -> Optional[TokenBucket]:
        """
        @return: the bucket of C{key}, when there is one.
        """
        return self._buckets.get(key)

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
            if self._previous is not None:
                self._inherit(key, bucket)
        else:
            buckets.move_to_end(key)
        return bucket


class LocalBuckets:
    """
    Makes the buckets of limits that hold in this process alone (one
    proxy process; L{gateway.protection.sharedbuckets.SharedBuckets} makes those that
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
