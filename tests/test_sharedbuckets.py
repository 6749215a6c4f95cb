"""
Token buckets shared by processes (gateway.protection.sharedbuckets).

Two tables over one file stand for two workers (their state is the same
memory); the exactness under contention is checked with real processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gateway.balancing.backend import Backend, startRequest
from gateway.filters.ratelimit import makeRateLimitFilter
from gateway.model.resources import parseResource
from gateway.protection.ratelimit import LOCAL, TokenBucket
from gateway.protection.sharedbuckets import SharedBuckets, SharedTokenBucket


class _Context:
    def __init__(self, clientIP: str = "10.0.0.1") -> None:
        self.clientIP = clientIP
        self.attributes: dict = {}


class SharedBucketsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.first = SharedBuckets.create(slots=64)
        self.addCleanup(self.first.close)
        # A second mapping of the same memory, as another worker has.
        self.second = SharedBuckets.fromFD(os.dup(self.first.fileno()))
        self.addCleanup(self.second.close)

    def test_sharedState(self) -> None:
        """
        Buckets of the same name in two processes are one bucket: tokens
        one takes are gone for the other, and it refills once.
        """
        a = self.first.bucket("api/x/maxQPS/1", 1, 3, self.clock)
        b = self.second.bucket("api/x/maxQPS/1", 1, 3, self.clock)
        self.assertIsInstance(a, SharedTokenBucket)
        self.assertTrue(a.take())
        self.assertTrue(b.take())
        self.assertEqual(a.remaining(), 1)
        self.assertTrue(a.take())
        self.assertFalse(b.take())
        self.assertFalse(a.allows())
        self.assertEqual(b.retryAfter(), 1.0)
        self.clock.advance(1)
        self.assertTrue(b.take())
        self.assertFalse(a.take())
        self.assertEqual(a.status(), (0, 3.0))

    def test_takeStatus(self) -> None:
        """
        C{takeStatus} takes and reports the state after, as one decision.
        """
        a = self.first.bucket("b", 1, 2, self.clock)
        b = self.second.bucket("b", 1, 2, self.clock)
        self.assertEqual(a.takeStatus(), (True, 1, 1.0))
        self.assertEqual(b.takeStatus(), (True, 0, 2.0))
        self.assertEqual(a.takeStatus(), (False, 0, 2.0))
        self.assertEqual(self.first._depth, 0)

    def test_namesApart(self) -> None:
        """
        Buckets of other names (another limit, another setting) are apart.
        """
        a = self.first.bucket("api/x/maxQPS/1", 1, 1, self.clock)
        b = self.second.bucket("api/x/maxQPS/2", 2, 1, self.clock)
        self.assertTrue(a.take())
        self.assertTrue(b.take())
        self.assertFalse(a.take())

    def test_keyed(self) -> None:
        """
        A keyed limit has a shared bucket per key: one client's tokens are
        not another's, in any worker; str and bytes keys are apart.
        """
        a = self.first.keyed("api/x/rateLimit", 1, 2, self.clock, maxKeys=100)
        b = self.second.keyed("api/x/rateLimit", 1, 2, self.clock, maxKeys=100)
        self.assertTrue(a.get("10.0.0.1").take())
        self.assertTrue(b.get("10.0.0.1").take())
        self.assertFalse(a.get("10.0.0.1").take())
        self.assertTrue(b.get("10.0.0.2").take())
        self.assertTrue(b.get(b"10.0.0.1").take())
        self.assertIs(a.get("10.0.0.1"), a.get("10.0.0.1"))

    def test_keyedObjectsBounded(self) -> None:
        """
        A worker keeps at most C{maxKeys} bucket objects at hand; dropping
        them loses no state, which is in the table.
        """
        a = self.first.keyed("api/x/rateLimit", 1, 1, self.clock, maxKeys=2)
        self.assertTrue(a.get("k1").take())
        a.get("k2")
        a.get("k3")
        self.assertLessEqual(len(a._buckets), 2)
        self.assertFalse(a.get("k1").take())

    def test_fullTableGivesAwayLeastRecent(self) -> None:
        """
        When a new bucket finds every slot probed taken, it gets the one
        used least recently, and starts full; the others keep their state.
        """
        table = SharedBuckets.create(slots=3)
        self.addCleanup(table.close)
        buckets = [table.bucket(f"b{i}", 1, 1, self.clock) for i in range(4)]
        for bucket in buckets[:3]:
            self.assertTrue(bucket.take())
            self.clock.advance(0.01)
        # b0 is the least recently used: b3 takes its slot.
        self.assertTrue(buckets[3].take())
        self.assertFalse(buckets[1].take())
        self.assertFalse(buckets[2].take())
        self.assertFalse(buckets[3].take())
        # b0 comes back with a full bucket (and takes b1's slot, now the
        # least recently used).
        self.assertTrue(buckets[0].take())

    def test_notATable(self) -> None:
        """
        A file that is not a table is refused.
        """
        with tempfile.TemporaryFile() as f:
            f.write(b"x" * 4096)
            f.flush()
            self.assertRaises(ValueError, SharedBuckets.fromFD, f.fileno())
        with tempfile.TemporaryFile() as f:
            self.assertRaises(ValueError, SharedBuckets.fromFD, f.fileno())
        self.assertRaises(ValueError, SharedBuckets.create, 0)

    def test_lockReentrant(self) -> None:
        """
        A process may take the table's lock again while it holds it (one
        decision over several buckets holds it around theirs).
        """
        bucket = self.first.bucket("b", 1, 1, self.clock)
        self.first.acquire()
        try:
            self.assertTrue(bucket.take())
        finally:
            self.first.release()
        self.assertEqual(self.first._depth, 0)

    def test_filterAcrossWorkers(self) -> None:
        """
        An API's rate limit and maxQPS, built in two workers from the same
        settings, hold for both together.
        """
        api = parseResource(
            "apis",
            {
                "name": "x",
                "urlPattern": "/x",
                "nodes": [{"cluster": "c"}],
                "maxQPS": 3,
                "rateLimit": {"rate": 1, "burst": 2, "key": "ip"},
            },
        )
        filters = [
            makeRateLimitFilter(api, self.clock, buckets=table)
            for table in (self.first, self.second)
        ]
        admitted = [f.before(_Context()) is None for f in filters * 2]
        self.assertEqual(admitted, [True, True, False, False])
        # Another client has its own rate limit, but the API's maxQPS of 3
        # is shared by every client in every worker: one token is left.
        admitted = [f.before(_Context("10.0.0.2")) is None for f in filters]
        self.assertEqual(admitted, [True, False])
        rejected = filters[1].before(_Context("10.0.0.2"))
        self.assertEqual(rejected.code, 429)

    def test_serverMaxQPSAcrossWorkers(self) -> None:
        """
        A server's maxQPS holds for the backends of all the workers.
        """
        server = parseResource("servers", {"name": "s", "addr": "127.0.0.1:1", "maxQPS": 2})
        backends = [Backend(server, self.clock, buckets=t) for t in (self.first, self.second)]
        backends[0].requestStarted()
        self.assertTrue(backends[1].available())
        backends[1].requestStarted()
        self.assertFalse(backends[0].available())
        self.assertEqual(backends[0].unavailableReason(), "rate-limited")

    def test_lostRaceGoesElsewhere(self) -> None:
        """
        When another worker takes a server's last maxQPS token between this
        worker's pick and its send, the request starts on another available
        server of the cluster, or on none; nothing is counted on the server
        it could not start on.
        """
        servers = [
            parseResource("servers", {"name": name, "addr": "127.0.0.1:1", "maxQPS": 1})
            for name in ("s1", "s2")
        ]
        mine = [Backend(server, self.clock, buckets=self.first) for server in servers]
        theirs = [Backend(server, self.clock, buckets=self.second) for server in servers]

        class Cluster:
            backends = mine

        picked = mine[0]
        self.assertTrue(picked.available())
        self.assertTrue(theirs[0].requestStarted())
        self.assertIs(startRequest(Cluster, picked), mine[1])
        self.assertEqual((mine[0].active, mine[0].requests), (0, 0))
        self.assertEqual((mine[1].active, mine[1].requests), (1, 1))
        self.assertIsNone(startRequest(Cluster, mine[0]))
        self.assertIsNone(startRequest(Cluster, None))

    def test_changedLimitAcrossWorkers(self) -> None:
        """
        When an API's limits change, the new buckets start at the old ones'
        levels (capped at the new burst), whichever worker makes them first
        and however many workers make them: a client that spent its burst
        gets no new one, the client of a keyed limit neither, and a client
        with tokens left keeps them.
        """

        def api(rate: int, burst: int, maxQPS: int) -> object:
            return parseResource(
                "apis",
                {
                    "name": "x",
                    "urlPattern": "/x",
                    "nodes": [{"cluster": "c"}],
                    "maxQPS": maxQPS,
                    "rateLimit": {"rate": rate, "burst": burst, "key": "ip"},
                },
            )

        old = [
            makeRateLimitFilter(api(1, 4, 100), self.clock, buckets=table)
            for table in (self.first, self.second)
        ]
        # Client 1 spends its burst of 4 in both workers, client 2 one token.
        self.assertEqual([f.before(_Context()) is None for f in old * 3], [True] * 4 + [False] * 2)
        self.assertIsNone(old[0].before(_Context("10.0.0.2")))
        new = [
            makeRateLimitFilter(api(2, 3, 50), self.clock, buckets=table, previous=previous)
            for table, previous in zip((self.first, self.second), old)
        ]
        self.assertEqual([f.before(_Context()) is None for f in new], [False, False])
        # Client 2 had 3 of 4 left: as many as the new burst.
        admitted = [f.before(_Context("10.0.0.2")) is None for f in new * 2]
        self.assertEqual(admitted, [True, True, True, False])
        # The API's maxQPS: 100 - 5 taken is more than 50: the new bucket
        # is full, 50 - 3 tokens are left.
        self.assertEqual(new[0]._limits[1]._single.remaining(), 47)
        self.clock.advance(0.5)
        self.assertEqual([f.before(_Context()) is None for f in new], [True, False])

    def test_changedServerMaxQPSAcrossWorkers(self) -> None:
        """
        A server whose maxQPS changes keeps the level of its old bucket in
        every worker: its budget is not handed out a second time.
        """
        before = parseResource("servers", {"name": "s", "addr": "127.0.0.1:1", "maxQPS": 4})
        after = parseResource("servers", {"name": "s", "addr": "127.0.0.1:1", "maxQPS": 3})
        backends = [Backend(before, self.clock, buckets=t) for t in (self.first, self.second)]
        for backend in backends * 2:
            self.assertTrue(backend.requestStarted())
        self.assertFalse(backends[0].available())
        for backend in backends:
            backend.configure(after)
        self.assertEqual([b.available() for b in backends], [False, False])
        self.clock.advance(1 / 3)
        self.assertTrue(backends[1].requestStarted())
        self.assertFalse(backends[0].available())

    def test_localByDefault(self) -> None:
        """
        Without a shared table, buckets are this process's alone.
        """
        bucket = LOCAL.bucket("b", 1, 1, self.clock)
        self.assertIs(type(bucket), TokenBucket)
        self.assertIsNone(bucket.lock)
        server = parseResource("servers", {"name": "s", "addr": "127.0.0.1:1", "maxQPS": 2})
        backend = Backend(server, self.clock)
        self.assertIs(type(backend.limiter), TokenBucket)


class EquivalenceTests(SynchronousTestCase):
    @settings(max_examples=150, deadline=None)
    @given(
        rate=st.floats(min_value=0.01, max_value=1000),
        burst=st.integers(min_value=1, max_value=50),
        steps=st.lists(
            st.tuples(
                st.sampled_from(["take", "allows", "retryAfter", "status", "takeStatus"]),
                st.booleans(),
                st.floats(min_value=0, max_value=2),
            ),
            max_size=60,
        ),
    )
    def test_sameAsOneBucket(self, rate, burst, steps) -> None:
        """
        Any sequence of decisions spread over two workers' views of a
        shared bucket gives exactly what one bucket of one process gives:
        the state goes through the table without loss.
        """
        clock = Clock()
        clock.advance(1_000_000)
        first = SharedBuckets.create(slots=16)
        second = SharedBuckets.fromFD(os.dup(first.fileno()))
        try:
            local = TokenBucket(rate, burst, clock)
            views = (first.bucket("b", rate, burst, clock), second.bucket("b", rate, burst, clock))
            for operation, which, wait in steps:
                clock.advance(wait)
                shared = views[which]
                self.assertEqual(getattr(shared, operation)(), getattr(local, operation)())
        finally:
            second.close()
            first.close()


_TAKER = textwrap.dedent(
    """
    import sys, time
    from gateway.protection.sharedbuckets import SharedBuckets

    class WallClock:
        seconds = staticmethod(time.time)

    table = SharedBuckets.fromFD(int(sys.argv[1]))
    bucket = table.bucket("contended", 1e-9, 2000, WallClock())
    sys.stdin.readline()
    taken = sum(1 for _ in range(3000) if bucket.take())
    print(taken)
    """
)


# Starts processes: integration tests.
@pytest.mark.integration
class ProcessesTests(SynchronousTestCase):
    def test_exactUnderContention(self) -> None:
        """
        Processes taking from one shared bucket at the same time never take
        more than it holds (the lock makes each read-decide-write one).
        """
        table = SharedBuckets.create(slots=8)
        self.addCleanup(table.close)
        fd = table.fileno()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (os.path.dirname(os.path.dirname(os.path.abspath(__file__))),) if p
        )
        takers = [
            subprocess.Popen(
                [sys.executable, "-c", _TAKER, str(fd)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                pass_fds=(fd,),
                env=env,
            )
            for _ in range(3)
        ]
        # All three start taking at once.
        for taker in takers:
            assert taker.stdin is not None
            taker.stdin.write(b"go\n")
            taker.stdin.flush()
        counts = []
        for taker in takers:
            out, _ = taker.communicate(timeout=60)
            self.assertEqual(taker.returncode, 0)
            counts.append(int(out))
        self.assertEqual(sum(counts), 2000, counts)
