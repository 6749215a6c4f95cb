"""
The fleet's limits on Redis (L{gateway.protection.redisbuckets}): leases
against a fake Redis, the switch to C{limits.onFailure} when Redis does not
answer in time and back when it does, on a L{task.Clock}; and the limits
that use them (the rate-limit filter, a server's C{maxQPS}).
"""

from __future__ import annotations

from typing import Any, List, Tuple

from fakeredis import FakeRedisServer
from twisted.internet import task
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from gateway.balancing.backend import Backend
from gateway.filters.ratelimit import makeRateLimitFilter
from gateway.model.resources import parseResource
from gateway.model.sharedlimits import parseRedisURL
from gateway.pipeline.exchange import EarlyResponse
from gateway.protection.ratelimit import LOCAL
from gateway.protection.redisbuckets import LeasedBucket, RedisBuckets
from gateway.redis import RedisClient

TIMEOUT = 0.005
PROBE = 0.25


def fleet(
    onFailure: str = "local", gateways: int = 1, clock: Any = None
) -> Tuple[RedisBuckets, FakeRedisServer, RedisClient, task.Clock]:
    """
    @return: a started client on a fake Redis, and the buckets on it.
    """
    clock = clock or task.Clock()
    clock.advance(1_000_000.0)
    server = FakeRedisServer(clock)
    client = RedisClient(
        parseRedisURL("redis://127.0.0.1:6379/0"),
        clock,
        timeout=TIMEOUT,
        probeInterval=PROBE,
        connect=server.connect,
    )
    buckets = RedisBuckets(client, clock, LOCAL, onFailure=onFailure, gateways=gateways)
    client.startService()
    clock.advance(0)
    return buckets, server, client, clock


class _Context:
    """
    What the rate-limit filter reads of a request.
    """

    def __init__(self, clientIP: str = "10.0.0.1") -> None:
        self.clientIP = clientIP
        self.attributes: dict = {}
        self.gone = False


def api(**fields: Any) -> Any:
    base = {"name": "a", "urlPattern": "/a", "nodes": [{"cluster": "c"}]}
    base.update(fields)
    return parseResource("apis", base)


class SharedModeTests(SynchronousTestCase):
    """
    While Redis answers, decisions are the bucket in Redis's, by leases.
    """

    def test_startsShared(self) -> None:
        """
        Connected, the buckets are in C{shared} mode.
        """
        buckets, _, _, _ = fleet()
        self.assertEqual(buckets.mode, "shared")
        self.assertEqual(buckets.snapshot()["redis"], "up")

    def test_limitHoldsAcrossProcesses(self) -> None:
        """
        Two processes' buckets of the same limit share the bucket in Redis:
        together they admit the burst plus their credits, and no more,
        until time passes.
        """
        clock = task.Clock()
        first, server, _, _ = fleet(clock=clock)
        client2 = RedisClient(
            parseRedisURL("redis://127.0.0.1:6379/0"),
            clock,
            timeout=TIMEOUT,
            connect=server.connect,
        )
        second = RedisBuckets(client2, clock, LOCAL)
        client2.startService()
        clock.advance(0)
        a = first.bucket("api/x/maxQPS/10", 10.0, 10.0, clock)
        b = second.bucket("api/x/maxQPS/10", 10.0, 10.0, clock)
        admitted = 0
        for _ in range(30):
            admitted += a.take()
            admitted += b.take()
        # burst, plus at most one credit per process.
        self.assertLessEqual(admitted, 10 + 2)
        self.assertGreaterEqual(admitted, 10)
        clock.advance(1.0)
        more = sum(a.take() + b.take() for _ in range(30))
        self.assertLessEqual(more, 10 + 2)
        self.assertGreaterEqual(more, 9)

    def test_noRoundTripPerRequest(self) -> None:
        """
        Under steady demand a process calls Redis once per lease, not once
        per request.
        """
        buckets, server, client, clock = fleet()
        bucket = buckets.bucket("api/x/maxQPS/1000", 1000.0, 1000.0, clock)
        admitted = 0
        for _ in range(1000):
            clock.advance(0.001)
            admitted += bucket.take()
        self.assertGreater(admitted, 950)
        self.assertLess(client.calls, 200)

    def test_keysAreBucketsOfTheirOwn(self) -> None:
        """
        Each key of a keyed limit has its own bucket in Redis.
        """
        buckets, server, _, clock = fleet()
        keyed = buckets.keyed("api/x/rateLimit/1/1/ip", 1.0, 1.0, clock, 100)
        one, two = keyed.get("10.0.0.1"), keyed.get("10.0.0.2")
        self.assertIsInstance(one, LeasedBucket)
        self.assertIs(keyed.get("10.0.0.1"), one)
        self.assertNotEqual(one.redisKey, two.redisKey)
        self.assertTrue(one.take())
        self.assertTrue(two.take())
        self.assertEqual(len(server.model.tat), 2)

    def test_idleTokensGoBack(self) -> None:
        """
        Tokens a process holds and does not use go back to Redis after
        C{returnAfter} seconds, and the sweep stops once nothing is held.
        """
        buckets, server, _, clock = fleet()
        bucket = buckets.bucket("api/x/maxQPS/1000", 1000.0, 1000.0, clock)
        for _ in range(200):
            clock.advance(0.001)
            bucket.take()
        self.assertGreater(bucket.lease.held, 0)
        clock.advance(buckets.returnAfter)
        clock.advance(buckets.returnAfter)
        self.assertEqual(bucket.lease.held, 0)
        # The last call gave tokens back.
        self.assertGreater(int(server.commands[-1][1][-1]), 0)
        clock.advance(buckets.returnAfter)
        self.assertEqual(buckets.snapshot()["leases"], 0)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_filterAnswers429(self) -> None:
        """
        The rate-limit filter on Redis buckets admits the burst and answers
        429 past it, with C{Retry-After}; a second later, the rate's worth
        passes again.
        """
        buckets, _, _, clock = fleet()
        limit = makeRateLimitFilter(api(rateLimit={"rate": 2, "burst": 2}), clock, buckets=buckets)
        assert limit is not None
        answers = [limit.before(_Context()) for _ in range(6)]
        self.assertEqual(answers[:2], [None, None])
        for answer in answers[2:]:
            self.assertIsInstance(answer, EarlyResponse)
            self.assertEqual(answer.code, 429)
            self.assertEqual(answer.headers[b"Retry-After"], [b"1"])
        clock.advance(1.0)
        answers = [limit.before(_Context()) for _ in range(6)]
        self.assertEqual(answers.count(None), 2)


class FailureTests(SynchronousTestCase):
    """
    When Redis does not answer within the timeout, C{onFailure} decides at
    once; a probe answered in time brings the shared buckets back.
    """

    def goAway(
        self, buckets: RedisBuckets, server: FakeRedisServer, clock: task.Clock
    ) -> LeasedBucket:
        bucket = buckets.bucket("api/x/maxQPS/10", 10.0, 10.0, clock)
        server.hanging = True
        bucket.take()  # a credit, and a call that hangs
        clock.advance(TIMEOUT)
        return bucket

    def test_localHoldsTheShare(self) -> None:
        """
        C{local}: at once, each gateway holds the limit divided by the live
        gateways: of 10/s and 10 tokens, with 2 gateways, 5/s and 5 tokens,
        from empty (Redis does not count what passes meanwhile).
        """
        buckets, server, _, clock = fleet("local", gateways=2)
        bucket = self.goAway(buckets, server, clock)
        self.assertEqual(buckets.mode, "local")
        self.assertEqual(sum(bucket.take() for _ in range(20)), 0)
        self.assertFalse(bucket.unavailable)
        clock.advance(0.21)
        self.assertEqual(sum(bucket.take() for _ in range(20)), 1)
        clock.advance(10.0)
        self.assertEqual(sum(bucket.take() for _ in range(20)), 5)

    def test_gatewaysChange(self) -> None:
        """
        The share follows the live gateways.
        """
        buckets, server, _, clock = fleet("local", gateways=2)
        bucket = self.goAway(buckets, server, clock)
        buckets.setGateways(5)
        self.assertFalse(bucket.take())
        clock.advance(10.0)
        self.assertEqual(sum(bucket.take() for _ in range(20)), 2)

    def test_eachSwitchFromEmpty(self) -> None:
        """
        A short stretch away from Redis lets through what the share of the
        limit earns in it, not its burst again, however often it happens.
        """
        buckets, server, _, clock = fleet("local", gateways=1)
        bucket = self.goAway(buckets, server, clock)
        admitted = 0
        for _ in range(5):
            admitted += sum(bucket.take() for _ in range(20))
            server.release()
            clock.advance(PROBE)
            self.assertEqual(buckets.mode, "shared")
            server.hanging = True
            for _ in range(20):
                bucket.take()
            clock.advance(TIMEOUT)
            self.assertEqual(buckets.mode, "local")
        # Five stretches of 0.255 s at 10/s: about 13, never 5 bursts of 10.
        self.assertLessEqual(admitted, 10 * 5 * (PROBE + TIMEOUT) + 1)

    def test_open(self) -> None:
        """
        C{open}: everything passes while Redis is away.
        """
        buckets, server, _, clock = fleet("open")
        bucket = self.goAway(buckets, server, clock)
        self.assertEqual(buckets.mode, "open")
        self.assertTrue(all(bucket.take() for _ in range(100)))

    def test_closedAnswers503(self) -> None:
        """
        C{closed}: every request is refused, and the filter says 503, not
        429; a server's C{maxQPS} makes it unavailable for that reason.
        """
        buckets, server, _, clock = fleet("closed")
        limit = makeRateLimitFilter(api(maxQPS=100), clock, buckets=buckets)
        assert limit is not None
        self.assertIsNone(limit.before(_Context()))
        self.goAway(buckets, server, clock)
        self.assertEqual(buckets.mode, "closed")
        answer = limit.before(_Context())
        self.assertIsInstance(answer, EarlyResponse)
        self.assertEqual(answer.code, 503)
        backend = Backend(
            parseResource("servers", {"name": "s", "addr": "127.0.0.1:1", "maxQPS": 5}),
            clock,
            buckets=buckets,
        )
        self.assertFalse(backend.available())
        self.assertEqual(backend.unavailableReason(), "limits-unavailable")

    def test_backWithinASecond(self) -> None:
        """
        Redis answering again is noticed at the next probe (well within a
        second) and the buckets are shared again; each switch is counted
        and logged.
        """
        events: List[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        buckets, server, _, clock = fleet("local")
        self.goAway(buckets, server, clock)
        self.assertEqual(buckets.mode, "local")
        server.release()
        clock.advance(PROBE)
        self.assertEqual(buckets.mode, "shared")
        # (Connecting at the start was the first switch to shared.)
        self.assertEqual(buckets.switches, {"shared": 2, "local": 1, "open": 0, "closed": 0})
        texts = [e.get("log_format", "") for e in events]
        self.assertTrue(any("Redis is away" in t for t in texts))
        self.assertTrue(any("Redis is back" in t for t in texts))

    def test_errorReplies(self) -> None:
        """
        Redis that answers the lease script with an error (out of memory,
        here) cannot decide: C{onFailure} decides at once, as when Redis is
        away (C{closed}: 503, not a 429 for every request), with one
        warning, no traceback per call; the script is tried again every
        probe interval, and the buckets are shared again once it grants a
        lease.
        """
        events: List[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        buckets, server, _, clock = fleet("closed")
        limit = makeRateLimitFilter(api(maxQPS=100), clock, buckets=buckets)
        assert limit is not None
        oom = "OOM command not allowed when used memory > 'maxmemory'."
        server.errors[b"EVALSHA"] = oom
        answers = [limit.before(_Context()) for _ in range(3)]
        self.assertEqual(buckets.mode, "closed")
        refused = limit.before(_Context())
        self.assertIsInstance(refused, EarlyResponse)
        self.assertEqual(refused.code, 503)
        clock.advance(PROBE)
        self.assertEqual(buckets.mode, "closed")
        del server.errors[b"EVALSHA"]
        clock.advance(PROBE)
        self.assertEqual(buckets.mode, "shared")
        self.assertIsNone(limit.before(_Context()))
        self.assertIsNone(answers[0])
        self.assertEqual(buckets.switches["closed"], 1)
        self.assertEqual(buckets.switches["shared"], 2)
        self.assertEqual([e for e in events if e.get("log_failure") is not None], [])
        warned = [e for e in events if "Redis is away" in e.get("log_format", "")]
        self.assertEqual(len(warned), 1)
        self.assertIn("OOM", warned[0]["reason"])

    def test_connectionRefused(self) -> None:
        """
        Redis gone (connection lost, then refused) switches at once, and
        its return is noticed within a probe interval.
        """
        buckets, server, _, clock = fleet("open")
        server.refusing.add(("127.0.0.1", 6379))
        server.dropAll()
        self.assertEqual(buckets.mode, "open")
        self.assertEqual(buckets.snapshot()["redis"], "down")
        clock.advance(PROBE)
        self.assertEqual(buckets.mode, "open")
        server.refusing.clear()
        clock.advance(PROBE)
        self.assertEqual(buckets.mode, "shared")

    def test_debtChargedAfterReturn(self) -> None:
        """
        A credit whose charge failed is charged once Redis is back (by the
        sweep, with no more requests).
        """
        buckets, server, _, clock = fleet("local")
        bucket = self.goAway(buckets, server, clock)
        self.assertEqual(bucket.lease.debt, 1)
        server.release()
        clock.advance(PROBE)
        self.assertEqual(buckets.mode, "shared")
        for _ in range(10):
            clock.advance(buckets.returnAfter)
        self.assertEqual(bucket.lease.debt, 0)
