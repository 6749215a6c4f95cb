"""
Tests for L{gateway.protection.ratelimit}: token buckets, keyed buckets and the
C{rate-limit} filter, all on a L{task.Clock}.

The central promise (DESIGN.md, "Traffic control") is checked as a
property over random request times: in every interval between two
admitted requests, of length M{t}, at most M{burst + rate * t} requests are
admitted.  The bound is computed with exact fractions of the float clock
readings, so float rounding in the bucket cannot hide behind rounding in
the test.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, Dict, List, Optional, Sequence

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import server
from twisted.web.http_headers import Headers
from twisted.web.test.requesthelper import DummyChannel
from zope.interface.verify import verifyObject

from gateway.filters.ratelimit import RateLimitFilter, makeRateLimitFilter
from gateway.interfaces import IFilter
from gateway.model.resources import API, parseResource
from gateway.pipeline.exchange import EarlyResponse, Exchange, ResponseInfo
from gateway.protection import ratelimit
from gateway.protection.ratelimit import KeyedBuckets, TokenBucket


def makeAPI(**fields: Any) -> API:
    """
    @return: a parsed API with the given extra fields.
    """
    data: Dict[str, Any] = {"name": "a", "urlPattern": "/a", "nodes": [{"cluster": "c"}]}
    data.update(fields)
    return parseResource("apis", data)


def makeContext(
    clientIP: str = "1.2.3.4", headers: Optional[Dict[bytes, List[bytes]]] = None
) -> Exchange:
    """
    @return: the context of a real L{server.Request} from C{clientIP}.
    """
    request = server.Request(DummyChannel(), False)
    request.requestHeaders = Headers(headers or {})
    return Exchange(
        request,
        snapshot=None,
        api=makeAPI(),
        params={},
        clientIP=clientIP,
        startTime=0.0,
        upstreamHeaders=Headers(),
    )


def rejection(retryAfter: int, limit: int, reset: int) -> EarlyResponse:
    """
    @return: the 429 the filter should give.
    """
    return EarlyResponse.error(
        429,
        "rate limit exceeded",
        {
            b"Retry-After": [b"%d" % retryAfter],
            b"RateLimit-Limit": [b"%d" % limit],
            b"RateLimit-Remaining": [b"0"],
            b"RateLimit-Reset": [b"%d" % reset],
        },
    )


def responseHeaders(filter: RateLimitFilter, context: Exchange) -> Dict[bytes, List[bytes]]:
    """
    @return: the RateLimit-* headers C{after} puts on a 200 response.
    """
    info = ResponseInfo(200, Headers())
    filter.after(context, info)
    return {
        name: values
        for name, values in info.headers.getAllRawHeaders()
        if name.lower().startswith(b"ratelimit-")
    }


def exactWindowViolations(times: Sequence[float], rate: float, burst: float) -> List[Any]:
    """
    @param times: the clock readings at which requests were admitted, in
        order.
    @return: every window C{(i, j)} of admitted requests that holds more
        than M{burst + rate * (times[j] - times[i])} of them, computed
        exactly.
    """
    exactRate = Fraction(rate)
    exact = [Fraction(t) for t in times]
    bad = []
    for i in range(len(exact)):
        for j in range(i, len(exact)):
            if j - i + 1 > Fraction(burst) + exactRate * (exact[j] - exact[i]):
                bad.append((i, j, times[i], times[j]))
    return bad


def advance(clock: Clock, amount: float) -> None:
    """
    Advance C{clock} by C{amount}, stopping at each delayed call's time so
    that it runs when it is due, as a punctual reactor would run it (a
    single C{Clock.advance} runs every call that came due at the end).
    """
    target = clock.seconds() + amount
    while True:
        due = [c.getTime() for c in clock.getDelayedCalls() if c.getTime() <= target]
        if not due:
            break
        clock.advance(max(0.0, min(due) - clock.seconds()))
    clock.advance(target - clock.seconds())


class BackwardsClock:
    """
    A clock that returns the readings it is given, in order, even when
    they go back in time (a stepped wall clock).
    """

    def __init__(self, readings: Sequence[float]) -> None:
        self.readings = list(readings)

    def seconds(self) -> float:
        if len(self.readings) > 1:
            return self.readings.pop(0)
        return self.readings[0]


class TokenBucketTests(SynchronousTestCase):
    """
    Tests for L{TokenBucket}.
    """

    def test_startsFull(self) -> None:
        """
        A new bucket holds C{burst} tokens: it admits C{burst} requests at
        once and then refuses.
        """
        bucket = TokenBucket(2, 3, Clock())
        self.assertEqual(bucket.remaining(), 3)
        self.assertEqual(bucket.resetAfter(), 0.0)
        self.assertEqual([bucket.take() for _ in range(4)], [True, True, True, False])
        self.assertEqual(bucket.remaining(), 0)

    def test_refill(self) -> None:
        """
        Tokens come back at C{rate} a second, and C{retryAfter},
        C{remaining} and C{resetAfter} follow exactly.
        """
        clock = Clock()
        bucket = TokenBucket(2, 4, clock)
        for _ in range(4):
            self.assertTrue(bucket.take())
        self.assertFalse(bucket.allows())
        self.assertEqual(bucket.retryAfter(), 0.5)
        self.assertEqual(bucket.retryAfter(3), 1.5)
        self.assertEqual(bucket.resetAfter(), 2.0)
        clock.advance(0.25)
        self.assertFalse(bucket.allows())
        self.assertEqual(bucket.tokens(), 0.5)
        self.assertEqual(bucket.retryAfter(), 0.25)
        clock.advance(0.25)
        self.assertTrue(bucket.allows())
        self.assertEqual(bucket.remaining(), 1)
        self.assertEqual(bucket.retryAfter(), 0.0)
        self.assertEqual(bucket.resetAfter(), 1.5)
        self.assertTrue(bucket.take())
        self.assertFalse(bucket.take())

    def test_capAtBurst(self) -> None:
        """
        An idle bucket never holds more than C{burst} tokens.
        """
        clock = Clock()
        bucket = TokenBucket(10, 5, clock)
        bucket.take()
        clock.advance(1000)
        self.assertEqual(bucket.remaining(), 5)
        self.assertEqual(bucket.tokens(), 5.0)
        self.assertEqual(sum(bucket.take() for _ in range(10)), 5)

    def test_peekDoesNotTake(self) -> None:
        """
        C{allows} takes nothing; C{take} does.
        """
        bucket = TokenBucket(1, 1, Clock())
        self.assertTrue(bucket.allows())
        self.assertTrue(bucket.allows())
        self.assertTrue(bucket.take())
        self.assertFalse(bucket.allows())

    def test_severalTokens(self) -> None:
        """
        C{take(n)} takes C{n} tokens or none; more than C{burst} never.
        """
        clock = Clock()
        bucket = TokenBucket(1, 5, clock)
        self.assertTrue(bucket.take(3))
        self.assertFalse(bucket.take(3))
        self.assertEqual(bucket.remaining(), 2)
        self.assertEqual(bucket.retryAfter(3), 1.0)
        self.assertFalse(bucket.take(6))
        self.assertFalse(bucket.allows(6))
        self.assertEqual(bucket.retryAfter(6), math.inf)
        clock.advance(1)
        self.assertTrue(bucket.take(3))

    def test_smallRate(self) -> None:
        """
        Rates below one a second work: 0.5/s gives a token every 2 s.
        """
        clock = Clock()
        bucket = TokenBucket(0.5, 1, clock)
        self.assertTrue(bucket.take())
        self.assertEqual(bucket.retryAfter(), 2.0)
        clock.advance(1.999)
        self.assertFalse(bucket.take())
        clock.advance(0.001)
        self.assertTrue(bucket.take())

    def test_clockGoingBack(self) -> None:
        """
        A clock reading earlier than one already seen counts as the latest
        one: stepping the wall clock back then forward gives no tokens.
        """
        clock = BackwardsClock([100.0, 100.0, 50.0, 100.0, 100.5, 101.0])
        bucket = TokenBucket(1, 1, clock)  # created at 100
        self.assertTrue(bucket.take())  # at 100
        self.assertFalse(bucket.take())  # at "50": still 100
        self.assertFalse(bucket.take())  # at 100
        self.assertFalse(bucket.take())  # at 100.5
        self.assertTrue(bucket.take())  # at 101

    def test_invalid(self) -> None:
        """
        A rate or burst that is not a positive finite number is refused.
        """
        for rate, burst in [(0, 1), (-1, 1), (1, 0), (math.inf, 1), (1, math.nan)]:
            self.assertRaises(ValueError, TokenBucket, rate, burst, Clock())

    def test_rebase(self) -> None:
        """
        After many tokens taken without the bucket ever filling, it moves
        its reference time forward without gaining a token.
        """
        self.patch(ratelimit, "_REBASE_AFTER", 8.0)
        clock = Clock()
        bucket = TokenBucket(3, 2, clock)
        admitted = []
        for _ in range(300):
            clock.advance(0.1)
            if bucket.take():
                admitted.append(clock.seconds())
        self.assertLessEqual(bucket._taken, 8.0 + 2)
        self.assertEqual(exactWindowViolations(admitted, 3, 2), [])
        # 30 s at 3/s, plus the burst, less at most one token lost by a
        # rebase (there were about 10 of them).
        self.assertGreaterEqual(len(admitted), 90 - 12)

    def test_retryAfterIsEnough(self) -> None:
        """
        For awkward rates and clock readings, advancing the clock by
        C{retryAfter()} makes the bucket admit a request.
        """
        for rate in (3.0, 7.0, 0.3, 1 / 3, 1e-3, 12345.678):
            for start in (0.0, 0.1, 1e9 + 0.3):
                clock = Clock()
                clock.advance(start)
                bucket = TokenBucket(rate, 2, clock)
                bucket.take()
                bucket.take()
                for _ in range(5):
                    wait = bucket.retryAfter()
                    self.assertGreater(wait, 0)
                    clock.advance(wait)
                    self.assertTrue(bucket.take(), (rate, start, wait))

    @settings(max_examples=300, deadline=None)
    @given(
        rate=st.one_of(
            st.sampled_from([0.1, 1 / 3, 0.5, 1.0, 3.0, 7.0, 10.0, 1000.0]),
            st.floats(0.01, 1000.0),
        ),
        burst=st.integers(1, 10),
        start=st.sampled_from([0.0, 0.1, 12345.6789, 1.7e9]),
        steps=st.lists(
            st.tuples(
                st.one_of(
                    st.just(0.0),
                    st.floats(0.0, 3.0),
                    st.integers(1, 5),  # whole token periods: lands on boundaries
                ),
                st.booleans(),
            ),
            min_size=1,
            max_size=80,
        ),
    )
    def test_neverMoreThanTheLimit(
        self, rate: float, burst: int, start: float, steps: List[Any]
    ) -> None:
        """
        Over random request times (many on exact refill boundaries), in
        every interval between two admitted requests, of length M{t}, at
        most M{burst + rate * t} requests are admitted, exactly; and
        C{allows()} always agrees with what C{take()} does next.
        """
        clock = Clock()
        clock.advance(start)
        bucket = TokenBucket(rate, burst, clock)
        admitted = []
        for gap, usePeriod in steps:
            if isinstance(gap, int) and usePeriod:
                clock.advance(gap / rate)
            elif isinstance(gap, float):
                clock.advance(gap)
            allowed = bucket.allows()
            self.assertEqual(bucket.take(), allowed)
            if allowed:
                admitted.append(clock.seconds())
        self.assertEqual(exactWindowViolations(admitted, rate, burst), [])

    @settings(max_examples=100, deadline=None)
    @given(
        rate=st.floats(0.05, 100.0),
        burst=st.integers(1, 5),
        gaps=st.lists(st.floats(0.0, 2.0), min_size=1, max_size=40),
    )
    def test_admitsWhatTheLimitAllows(self, rate: float, burst: int, gaps: List[float]) -> None:
        """
        The bucket is not stingier than a token bucket either: a request
        arriving after C{retryAfter()} is admitted, and a request is refused
        only when the bucket holds less than one token.
        """
        clock = Clock()
        bucket = TokenBucket(rate, burst, clock)
        for gap in gaps:
            clock.advance(gap)
            if not bucket.take():
                self.assertLess(bucket.tokens(), 1.0 + 1e-9)
                clock.advance(bucket.retryAfter())
                self.assertTrue(bucket.take())


class TakeOverTests(SynchronousTestCase):
    """
    Tests for L{TokenBucket.takeOver} and L{KeyedBuckets.takeOver}: the
    bucket of a changed limit starts at the old bucket's level.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(100)

    def test_tightened(self) -> None:
        """
        A limit lowered after its clients spent the burst hands out no new
        burst: the new bucket is as empty as the old, and fills at the new
        rate.
        """
        old = TokenBucket(10, 10, self.clock)
        self.assertTrue(old.take(10))
        new = TokenBucket(5, 5, self.clock)
        new.takeOver(old)
        self.assertFalse(new.allows())
        self.assertAlmostEqual(new.retryAfter(), 0.2)
        self.clock.advance(1)
        self.assertEqual(new.remaining(), 5)

    def test_loosened(self) -> None:
        """
        A faster rate with the same burst gives no second burst either: the
        client waits for the new rate's tokens.
        """
        old = TokenBucket(1, 100, self.clock)
        self.assertTrue(old.take(100))
        new = TokenBucket(2, 100, self.clock)
        new.takeOver(old)
        self.assertEqual(new.remaining(), 0)
        self.clock.advance(1.5)
        self.assertEqual(new.remaining(), 3)

    def test_levelKeptUpToBurst(self) -> None:
        """
        The tokens left are kept, whole ones exactly, at most the new burst.
        """
        old = TokenBucket(1, 10, self.clock)
        self.assertTrue(old.take(7))
        new = TokenBucket(1, 20, self.clock)
        new.takeOver(old)
        self.assertEqual(new.remaining(), 3)
        smaller = TokenBucket(1, 2, self.clock)
        smaller.takeOver(old)
        self.assertEqual(smaller.remaining(), 2)
        fullOld = TokenBucket(1, 10, self.clock)
        full = TokenBucket(1, 5, self.clock)
        full.takeOver(fullOld)
        self.assertEqual((full.remaining(), full.resetAfter()), (5, 0.0))

    def test_neverMoreThanItHolds(self) -> None:
        """
        Taking over from a fuller bucket gives a bucket nothing.
        """
        new = TokenBucket(1, 5, self.clock)
        self.assertTrue(new.take(4))
        new.takeOver(TokenBucket(1, 5, self.clock))
        self.assertEqual(new.remaining(), 1)

    def test_keyed(self) -> None:
        """
        Each key's new bucket takes over that key's old level when first
        used; once every old bucket would be full again (C{burst / rate}
        seconds), the old buckets are let go.
        """
        old = KeyedBuckets(1, 2, self.clock)
        self.assertTrue(old.get("a").take(2))
        self.assertTrue(old.get("b").take(1))
        new = KeyedBuckets(1, 4, self.clock)
        new.takeOver(old)
        self.assertEqual(new.get("a").remaining(), 0)
        self.assertEqual(new.get("b").remaining(), 1)
        self.assertEqual(new.get("c").remaining(), 4)
        self.assertTrue(old.get("d").take(2))
        self.clock.advance(2)
        self.assertEqual(new.get("d").remaining(), 4)
        self.assertIsNone(new._previous)


class KeyedBucketsTests(SynchronousTestCase):
    """
    Tests for L{KeyedBuckets}.
    """

    def test_perKey(self) -> None:
        """
        Each key has its own bucket; asking again gives the same one.
        """
        keyed = KeyedBuckets(1, 1, Clock())
        a = keyed.get("a")
        self.assertIs(keyed.get("a"), a)
        self.assertTrue(a.take())
        self.assertFalse(keyed.get("a").take())
        self.assertTrue(keyed.get("b").take())
        self.assertEqual(len(keyed), 2)

    def test_leastRecentlyUsedEviction(self) -> None:
        """
        Past C{maxKeys}, the key used least recently loses its bucket; a
        key that comes back starts full (the documented trade-off).
        """
        keyed = KeyedBuckets(1, 1, Clock(), maxKeys=3)
        for key in "abc":
            keyed.get(key).take()
        keyed.get("a")  # a is now the most recently used
        keyed.get("d")
        self.assertEqual(len(keyed), 3)
        self.assertNotIn("b", keyed)
        self.assertIn("a", keyed)
        self.assertFalse(keyed.get("a").allows())
        self.assertTrue(keyed.get("b").allows())
        self.assertNotIn("c", keyed)

    def test_floodIsBounded(self) -> None:
        """
        A flood of distinct keys never holds more than C{maxKeys} buckets.
        """
        keyed = KeyedBuckets(1, 1, Clock(), maxKeys=100)
        for i in range(5000):
            keyed.get(f"10.0.{i // 256}.{i % 256}").take()
            self.assertLessEqual(len(keyed), 100)
        self.assertEqual(len(keyed), 100)

    def test_invalid(self) -> None:
        """
        A bad rate, burst or size is refused at once.
        """
        self.assertRaises(ValueError, KeyedBuckets, 0, 1, Clock())
        self.assertRaises(ValueError, KeyedBuckets, 1, 1, Clock(), maxKeys=0)


class MakeRateLimitFilterTests(SynchronousTestCase):
    """
    Tests for L{makeRateLimitFilter}.
    """

    def test_noLimit(self) -> None:
        """
        An API with neither C{maxQPS} nor C{rateLimit} gets no filter.
        """
        self.assertIsNone(makeRateLimitFilter(makeAPI(), Clock()))

    def test_provides(self) -> None:
        """
        The filter provides L{IFilter} and is called C{rate-limit}.
        """
        f = makeRateLimitFilter(makeAPI(maxQPS=5), Clock())
        assert f is not None
        self.assertTrue(verifyObject(IFilter, f))
        self.assertEqual(f.name, "rate-limit")
        self.assertIsNone(f.error(makeContext(), None))

    def test_defaultBurst(self) -> None:
        """
        C{burst} defaults to C{rate}, and to at least one token.
        """
        clock = Clock()
        f = makeRateLimitFilter(makeAPI(rateLimit={"rate": 3}), clock)
        assert f is not None
        self.assertEqual([f.before(makeContext()) is None for _ in range(4)], [True] * 3 + [False])
        slow = makeRateLimitFilter(makeAPI(rateLimit={"rate": 0.5}), clock)
        assert slow is not None
        self.assertIsNone(slow.before(makeContext()))
        self.assertIsInstance(slow.before(makeContext()), EarlyResponse)


class RateLimitFilterTests(SynchronousTestCase):
    """
    Tests for L{RateLimitFilter} in its default mode: C{429} over the
    limit.
    """

    def setUp(self) -> None:
        self.clock = Clock()

    def makeFilter(self, **fields: Any) -> RateLimitFilter:
        f = makeRateLimitFilter(makeAPI(**fields), self.clock)
        assert f is not None
        return f

    def test_rejectHeaders(self) -> None:
        """
        Over the limit, the filter answers C{429} with C{Retry-After}
        (seconds until a token) and C{RateLimit-*} (the bucket size, 0
        left, seconds until full).
        """
        f = self.makeFilter(rateLimit={"rate": 0.5, "burst": 2})
        self.assertIsNone(f.before(makeContext()))
        self.assertIsNone(f.before(makeContext()))
        answer = f.before(makeContext())
        self.assertEqual(answer, rejection(retryAfter=2, limit=2, reset=4))
        self.assertEqual(answer.body, {"error": "rate limit exceeded"})
        self.clock.advance(1.5)
        self.assertEqual(f.before(makeContext()), rejection(retryAfter=1, limit=2, reset=3))
        self.clock.advance(0.5)
        self.assertIsNone(f.before(makeContext()))

    def test_retryAfterAtLeastOne(self) -> None:
        """
        C{Retry-After} is whole seconds, rounded up, and at least 1 even
        when the next token is a hundredth of a second away.
        """
        f = self.makeFilter(maxQPS=100)
        for _ in range(100):
            self.assertIsNone(f.before(makeContext()))
        self.assertEqual(f.before(makeContext()), rejection(retryAfter=1, limit=100, reset=1))

    def test_allowedHeaders(self) -> None:
        """
        An allowed response carries C{RateLimit-Limit}, C{RateLimit-Remaining}
        (tokens left after this request) and C{RateLimit-Reset} (seconds,
        rounded up, until the bucket is full).
        """
        f = self.makeFilter(rateLimit={"rate": 0.5, "burst": 3})
        first = makeContext()
        self.assertIsNone(f.before(first))
        self.assertEqual(first.attributes[f], (3, 2, 2))
        self.assertEqual(
            responseHeaders(f, first),
            {
                b"Ratelimit-Limit": [b"3"],
                b"Ratelimit-Remaining": [b"2"],
                b"Ratelimit-Reset": [b"2"],
            },
        )
        second = makeContext()
        self.assertIsNone(f.before(second))
        self.assertEqual(
            responseHeaders(f, second),
            {
                b"Ratelimit-Limit": [b"3"],
                b"Ratelimit-Remaining": [b"1"],
                b"Ratelimit-Reset": [b"4"],
            },
        )

    def test_afterWithoutBefore(self) -> None:
        """
        A response of a request the filter did not admit gets no headers.
        """
        f = self.makeFilter(maxQPS=1)
        self.assertEqual(responseHeaders(f, makeContext()), {})

    def test_keyNone(self) -> None:
        """
        With C{key: none}, all clients share one bucket.
        """
        f = self.makeFilter(rateLimit={"rate": 1, "burst": 2})
        self.assertIsNone(f.before(makeContext("10.0.0.1")))
        self.assertIsNone(f.before(makeContext("10.0.0.2")))
        self.assertIsInstance(f.before(makeContext("10.0.0.3")), EarlyResponse)

    def test_keyIP(self) -> None:
        """
        With C{key: ip}, each client address has its own bucket.
        """
        f = self.makeFilter(rateLimit={"rate": 1, "burst": 1, "key": "ip"})
        self.assertIsNone(f.before(makeContext("10.0.0.1")))
        self.assertIsInstance(f.before(makeContext("10.0.0.1")), EarlyResponse)
        self.assertIsNone(f.before(makeContext("10.0.0.2")))
        self.assertIsNone(f.before(makeContext("2001:db8::1")))
        self.clock.advance(1)
        self.assertIsNone(f.before(makeContext("10.0.0.1")))

    def test_keyHeader(self) -> None:
        """
        With C{key: header:NAME}, each value of the header (the first, when
        repeated) has its own bucket, the name is case-insensitive, and
        requests without the header share one bucket.
        """
        f = self.makeFilter(rateLimit={"rate": 1, "burst": 1, "key": "header:X-Api-Key"})
        self.assertIsNone(f.before(makeContext(headers={b"x-api-key": [b"k1"]})))
        self.assertIsInstance(
            f.before(makeContext("9.9.9.9", headers={b"X-API-KEY": [b"k1", b"k2"]})),
            EarlyResponse,
        )
        self.assertIsNone(f.before(makeContext(headers={b"x-api-key": [b"k2"]})))
        self.assertIsNone(f.before(makeContext("10.0.0.1")))
        self.assertIsInstance(f.before(makeContext("10.0.0.2")), EarlyResponse)

    def test_keyHeaderLongValuesKeptSmall(self) -> None:
        """
        A long header value (up to C{proxy.limits.maxHeadersSize}, 32 KiB)
        is not kept as the key of its bucket: the buckets hold a short
        digest, so many distinct long values cannot hold gigabytes, and
        values that differ in their last byte still get buckets of their
        own.
        """
        f = self.makeFilter(rateLimit={"rate": 1, "burst": 1, "key": "header:X-Api-Key"})
        long1 = b"k" * 30000 + b"1"
        long2 = b"k" * 30000 + b"2"
        self.assertIsNone(f.before(makeContext(headers={b"x-api-key": [long1]})))
        self.assertIsInstance(f.before(makeContext(headers={b"x-api-key": [long1]})), EarlyResponse)
        self.assertIsNone(f.before(makeContext(headers={b"x-api-key": [long2]})))
        self.assertIsNone(f.before(makeContext(headers={b"x-api-key": [b"short"]})))
        keyed = f._limits[0]._keyed
        self.assertEqual(len(keyed), 3)
        self.assertIn(b"short", keyed)
        self.assertEqual(sorted(len(key) for key in keyed._buckets), [5, 17, 17])

    def test_maxQPSAndRateLimit(self) -> None:
        """
        With both C{maxQPS} and C{rateLimit}, a request must pass both: the
        per-client limit and the API's overall one.
        """
        f = self.makeFilter(maxQPS=3, rateLimit={"rate": 10, "key": "ip"})
        for i in range(3):
            self.assertIsNone(f.before(makeContext(f"10.0.0.{i}")))
        self.assertEqual(
            f.before(makeContext("10.0.0.9")), rejection(retryAfter=1, limit=3, reset=1)
        )

    def test_bothTakenOrNone(self) -> None:
        """
        A request turned away by one limit takes no token from the other.
        """
        f = self.makeFilter(maxQPS=2, rateLimit={"rate": 1, "burst": 1, "key": "ip"})
        self.assertIsNone(f.before(makeContext("10.0.0.1")))
        self.assertEqual(
            f.before(makeContext("10.0.0.1")), rejection(retryAfter=1, limit=1, reset=1)
        )
        self.assertIsNone(f.before(makeContext("10.0.0.2")))
        self.assertIsInstance(f.before(makeContext("10.0.0.3")), EarlyResponse)

    def test_tighterInHeaders(self) -> None:
        """
        With two limits, the response headers describe the one with fewer
        tokens left.
        """
        f = self.makeFilter(maxQPS=10, rateLimit={"rate": 1, "burst": 3, "key": "ip"})
        context = makeContext()
        self.assertIsNone(f.before(context))
        self.assertEqual(context.attributes[f], (3, 2, 1))
        for i in range(8):
            self.assertIsNone(f.before(makeContext(f"10.0.0.{i}")))
        context = makeContext("10.1.0.0")
        self.assertIsNone(f.before(context))
        self.assertEqual(context.attributes[f], (10, 0, 1))


class QueueingTests(SynchronousTestCase):
    """
    Tests for L{RateLimitFilter} with C{onLimit: queue}.
    """

    def setUp(self) -> None:
        self.clock = Clock()

    def makeFilter(self, maxQPS: int = 0, **rateLimit: Any) -> RateLimitFilter:
        rateLimit.setdefault("onLimit", "queue")
        f = makeRateLimitFilter(makeAPI(maxQPS=maxQPS, rateLimit=rateLimit), self.clock)
        assert f is not None
        return f

    def track(self, d: Deferred, fired: List[Any], label: Any) -> None:
        d.addCallback(lambda result: fired.append((label, result, self.clock.seconds())))

    def test_servedInOrder(self) -> None:
        """
        Requests over the limit wait for their token and go on in arrival
        order, one per token; a request whose wait would exceed C{maxWait}
        gets C{429} at once.
        """
        f = self.makeFilter(rate=1, burst=1, maxWait=2)
        self.assertIsNone(f.before(makeContext()))
        fired: List[Any] = []
        second, third = makeContext(), makeContext()
        d2 = f.before(second)
        d3 = f.before(third)
        self.assertIsInstance(d2, Deferred)
        self.assertIsInstance(d3, Deferred)
        self.track(d2, fired, 2)
        self.track(d3, fired, 3)
        self.assertEqual(f.before(makeContext()), rejection(retryAfter=3, limit=1, reset=1))
        self.assertEqual(f.queued(), 2)
        self.clock.advance(0.5)
        self.assertEqual(fired, [])
        self.clock.advance(0.5)
        self.assertEqual(fired, [(2, None, 1.0)])
        self.assertEqual(second.attributes[f], (1, 0, 1))
        self.clock.advance(1)
        self.assertEqual(fired, [(2, None, 1.0), (3, None, 2.0)])
        self.assertEqual(f.queued(), 0)
        self.assertEqual(f._queues, {})
        # The queue kept the limit: the bucket is empty now.
        d = f.before(makeContext())
        self.assertIsInstance(d, Deferred)
        self.assertNoResult(d)
        self.clock.advance(1)
        self.assertIsNone(self.successResultOf(d))

    def test_newcomerWaitsBehindQueue(self) -> None:
        """
        A request arriving while others wait goes behind them even if it
        arrives just as a token comes back.
        """
        f = self.makeFilter(rate=10, burst=1, maxWait=1)
        f.before(makeContext())
        fired: List[Any] = []
        for label in range(3):
            self.track(f.before(makeContext()), fired, label)
        advance(self.clock, 0.1)
        self.track(f.before(makeContext()), fired, "late")
        advance(self.clock, 0.35)
        self.assertEqual([label for label, _, _ in fired], [0, 1, 2, "late"])

    def test_boundedQueue(self) -> None:
        """
        At most about C{rate * maxWait} requests wait; the next one gets
        C{429} with a C{Retry-After} of its would-be wait.
        """
        f = self.makeFilter(rate=10, burst=10, maxWait=0.5)
        for _ in range(10):
            self.assertIsNone(f.before(makeContext()))
        waiting = [f.before(makeContext()) for _ in range(5)]
        for d in waiting:
            self.assertIsInstance(d, Deferred)
        self.assertEqual(f.queued(), 5)
        self.assertEqual(f.before(makeContext()), rejection(retryAfter=1, limit=10, reset=1))
        self.assertEqual(f.queued(), 5)
        self.clock.advance(0.5)
        for d in waiting:
            self.assertIsNone(self.successResultOf(d))
        self.assertLessEqual(f.maxQueue, 6)

    def test_maxWaitZero(self) -> None:
        """
        With C{maxWait: 0}, queueing mode answers C{429} at once.
        """
        f = self.makeFilter(rate=1, burst=1, maxWait=0)
        self.assertIsNone(f.before(makeContext()))
        self.assertIsInstance(f.before(makeContext()), EarlyResponse)
        self.assertEqual(f._queues, {})

    def test_perKeyQueues(self) -> None:
        """
        With a keyed limit, each key waits in its own queue.
        """
        f = self.makeFilter(rate=1, burst=1, maxWait=1, key="ip")
        f.before(makeContext("10.0.0.1"))
        d1 = f.before(makeContext("10.0.0.1"))
        self.assertIsNone(f.before(makeContext("10.0.0.2")))
        self.assertEqual(f.queued("10.0.0.1"), 1)
        self.assertEqual(f.queued("10.0.0.2"), 0)
        self.clock.advance(1)
        self.assertIsNone(self.successResultOf(d1))

    def test_cancelledWaiter(self) -> None:
        """
        A waiting request whose client goes away (the pipeline cancels the
        Deferred it waits on) leaves the queue without a token, its
        Deferred fails with L{CancelledError}, and the one behind it moves
        up.
        """
        f = self.makeFilter(rate=1, burst=1, maxWait=3)
        f.before(makeContext())
        gone, behind = makeContext(), makeContext()
        dGone = f.before(gone)
        dBehind = f.before(behind)
        gone.gone = True
        dGone.cancel()
        self.failureResultOf(dGone, CancelledError)
        self.assertEqual(f.queued(), 1)
        self.clock.advance(1)
        self.assertIsNone(self.successResultOf(dBehind))
        self.assertEqual(f.queued(), 0)

    def test_cancelLastWaiter(self) -> None:
        """
        When the only waiter leaves, its timer is stopped and the queue is
        gone.
        """
        f = self.makeFilter(rate=1, burst=1, maxWait=3)
        f.before(makeContext())
        context = makeContext()
        d = f.before(context)
        context.gone = True
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(f._queues, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertTrue(f.before(makeContext()) is not None)

    def test_disconnectedWhenDue(self) -> None:
        """
        A waiter whose client is gone (but whose Deferred was not cancelled)
        when its turn comes is dropped without a token; the next one takes
        it.
        """
        f = self.makeFilter(rate=1, burst=1, maxWait=3)
        f.before(makeContext())
        gone, behind = makeContext(), makeContext()
        dGone = f.before(gone)
        dBehind = f.before(behind)
        gone.gone = True
        self.clock.advance(1)
        self.assertIsNone(self.successResultOf(dGone))
        self.assertNotIn(f, gone.attributes)
        self.assertIsNone(self.successResultOf(dBehind))
        self.assertIn(f, behind.attributes)

    def test_sharedLimitDeadline(self) -> None:
        """
        With a per-client queue and an API-wide C{maxQPS}, two clients'
        queues compete for the shared token: one goes on, the other gets
        C{429} when its C{maxWait} is over, and C{maxQPS} holds.
        """
        f = self.makeFilter(maxQPS=1, rate=1, burst=1, maxWait=1, key="ip")
        self.assertIsNone(f.before(makeContext("10.0.0.1")))
        dB = f.before(makeContext("10.0.0.2"))
        dC = f.before(makeContext("10.0.0.3"))
        fired: List[Any] = []
        self.track(dB, fired, "B")
        self.track(dC, fired, "C")
        self.clock.advance(1)
        self.assertEqual(len(fired), 1)
        self.assertIsNone(fired[0][1])
        self.clock.advance(0.001)
        self.assertEqual(len(fired), 2)
        self.assertEqual(fired[1][1].code, 429)
        self.assertEqual(f._queues, {})

    @settings(max_examples=150, deadline=None)
    @given(
        rate=st.sampled_from([0.5, 1.0, 3.0, 10.0, 1 / 3]),
        burst=st.integers(1, 4),
        maxWait=st.sampled_from([0.0, 0.5, 1.0, 2.5]),
        arrivals=st.lists(
            st.tuples(
                st.one_of(st.just(0.0), st.floats(0.0, 1.0)),
                st.one_of(st.none(), st.floats(0.0, 3.0)),
            ),
            min_size=1,
            max_size=40,
        ),
    )
    def test_queueKeepsTheLimit(
        self, rate: float, burst: int, maxWait: float, arrivals: List[Any]
    ) -> None:
        """
        With random arrivals, some of whose clients leave while waiting:
        every request is answered (went on, or 429) within C{maxWait} of
        arriving, those that go on do so in arrival order, and at no time
        do more go on than the bucket allows.
        """
        clock = Clock()
        f = makeRateLimitFilter(
            makeAPI(
                rateLimit={"rate": rate, "burst": burst, "onLimit": "queue", "maxWait": maxWait}
            ),
            clock,
        )
        assert f is not None
        admitted: List[Any] = []
        answered: Dict[int, float] = {}

        def leave(context: Exchange, d: Deferred) -> None:
            context.gone = True
            d.cancel()

        def done(result: Any, i: int, context: Exchange) -> None:
            answered[i] = clock.seconds()
            if result is None and not context.gone:
                admitted.append((i, clock.seconds()))

        arrivedAt = {}
        for i, (gap, leaveAfter) in enumerate(arrivals):
            advance(clock, gap)
            context = makeContext()
            arrivedAt[i] = clock.seconds()
            result = f.before(context)
            if isinstance(result, Deferred):
                if leaveAfter is not None:
                    clock.callLater(leaveAfter, leave, context, result)
                result.addErrback(lambda f: f.trap(CancelledError))
                result.addCallback(done, i, context)
            else:
                done(result, i, context)
        advance(clock, 100)
        self.assertEqual(sorted(answered), list(range(len(arrivals))))
        for i, when in answered.items():
            self.assertLessEqual(when - arrivedAt[i], maxWait + 1e-5)
        self.assertEqual([i for i, _ in admitted], sorted(i for i, _ in admitted))
        self.assertEqual(exactWindowViolations([t for _, t in admitted], rate, burst), [])
        self.assertEqual(f._queues, {})
