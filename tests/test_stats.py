"""
Request statistics: L{gateway.telemetry.stats}.

Unit tests drive L{Stats} with a L{Clock} and hand-made contexts, so every
latency is exact; the proxy tests send a known sequence of requests through
the real proxy (in-process backends on 127.0.0.1) and check every counter.
"""

from __future__ import annotations

from typing import Any, Optional

import pytest
import pytest_twisted
from inprocess import listen
from twisted.internet import reactor, task
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface import implementer

from gateway.filters import FilterRegistry
from gateway.interfaces import IFilter
from gateway.pipeline.exchange import EarlyResponse
from gateway.routing.snapshot import SnapshotManager
from gateway.store import StoreState
from gateway.telemetry.stats import (
    BUCKETS_MS,
    ERROR_KINDS,
    REJECT_REASONS,
    Counters,
    Stats,
    classify,
    mergeSnapshots,
    percentile,
    retiredCounts,
)


class _API:
    def __init__(self, name: str) -> None:
        self.name = name


class _Backend:
    def __init__(self, name: str) -> None:
        self.name = name


class _Context:
    """
    The fields of a L{gateway.pipeline.exchange.Exchange} that stats read.
    """

    def __init__(self, api: str, startTime: float, backend: Optional[str] = None) -> None:
        self.api = _API(api)
        self.backend = _Backend(backend) if backend is not None else None
        self.startTime = startTime
        self.attributes: dict = {}


def _answer(
    stats: Stats,
    clock: Clock,
    api: str,
    ms: float,
    code: int = 200,
    outcome=None,
    backend: Optional[str] = "s1",
) -> None:
    """
    A request that arrived at 0 and is answered C{ms} milliseconds later
    (set, not added, so that the latency is exactly C{ms / 1000.0}).
    """
    context = _Context(api, 0.0, backend)
    clock.rightNow = ms / 1000.0
    stats.record(context, code, outcome)


def _numbers(totals: dict) -> dict:
    """
    @return: the counts of a C{totals} entry, without its latency.
    """
    return {k: v for k, v in totals.items() if k != "latency"}


def _zeroErrors(**counts: int) -> dict:
    return dict(dict.fromkeys(ERROR_KINDS, 0), **counts)


def _zeroRejects(**counts: int) -> dict:
    return dict(dict.fromkeys(REJECT_REASONS, 0), **counts)


class ClassifyTests(SynchronousTestCase):
    def test_outcomes(self) -> None:
        """
        Every outcome the proxy reports maps to one error kind or one
        reject reason, never both; an upstream answer is judged by its
        status.
        """
        cases = {
            (200, None): (None, None),
            (304, None): (None, None),
            (404, None): ("4xx", None),
            (418, None): ("4xx", None),
            (500, None): ("5xx", None),
            (503, None): ("5xx", None),
            (504, "timeout"): ("timeout", None),
            (502, "refused"): ("refused", None),
            (502, "broken"): ("broken", None),
            (503, "unavailable"): ("unavailable", None),
            (429, "reject:rate-limit"): (None, "rateLimit"),
            (429, "reject:server-limit"): (None, "rateLimit"),
            (503, "reject:circuit-breaker"): (None, "breaker"),
            (403, "reject:ip-access"): (None, "access"),
            (401, "reject:auth"): (None, "auth"),
            (403, "reject:acl"): (None, "access"),
            (451, "reject:my-plugin"): (None, "other"),
            (500, "something-new"): ("5xx", None),
        }
        for (code, outcome), expected in cases.items():
            self.assertEqual(classify(code, outcome), expected, (code, outcome))


class PercentileTests(SynchronousTestCase):
    def test_interpolation(self) -> None:
        """
        A percentile is interpolated linearly inside the bucket its rank
        falls in: 5 answers in (2, 5] ms and 5 in (25, 50] ms put p50 at the
        top of the first bucket and p99 at 98% of the way through the
        second.
        """
        cumulative = [0, 0, 5, 5, 5, 10] + [10] * (len(BUCKETS_MS) - 5)
        self.assertEqual(percentile(cumulative, 0.5), 5.0)
        self.assertAlmostEqual(percentile(cumulative, 0.99), 25 + 25 * 4.9 / 5)
        self.assertEqual(percentile(cumulative, 0.1), 2 + 3 * 1 / 5)

    def test_first_bucket_starts_at_zero(self) -> None:
        """
        The first bucket spans 0 to 1 ms.
        """
        cumulative = [4] * (len(BUCKETS_MS) + 1)
        self.assertEqual(percentile(cumulative, 0.5), 0.5)

    def test_past_the_largest_bound(self) -> None:
        """
        A rank in the +Inf bucket is estimated as the largest bound, as
        Prometheus does.
        """
        cumulative = [0] * len(BUCKETS_MS) + [3]
        self.assertEqual(percentile(cumulative, 0.5), 10000.0)

    def test_empty(self) -> None:
        """
        An empty histogram has no percentiles.
        """
        self.assertIsNone(percentile([0] * (len(BUCKETS_MS) + 1), 0.5))


class StatsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.stats = Stats(self.clock)

    def test_counts(self) -> None:
        """
        Requests, errors by kind and rejects by reason are counted per API,
        per server (when the request reached one) and in total.
        """
        s, c = self.stats, self.clock
        _answer(s, c, "a", 3)
        _answer(s, c, "a", 3, 404)
        _answer(s, c, "a", 3, 500)
        _answer(s, c, "a", 3, 504, "timeout")
        _answer(s, c, "a", 3, 429, "reject:rate-limit", backend=None)
        _answer(s, c, "b", 3, 403, "reject:ip-access", backend=None)
        _answer(s, c, "b", 3, 503, "unavailable", backend=None)
        _answer(s, c, "b", 3, 502, "refused", backend="s2")
        snap = s.snapshot()
        self.assertEqual(_numbers(snap["totals"]), {"requests": 8, "errors": 5, "rejects": 2})
        self.assertEqual(snap["totals"]["latency"]["count"], 8)
        self.assertAlmostEqual(snap["totals"]["latency"]["sumMs"], 24.0)
        a, b = snap["apis"]["a"], snap["apis"]["b"]
        self.assertEqual(a["requests"], 5)
        self.assertEqual(a["errors"], _zeroErrors(**{"4xx": 1, "5xx": 1, "timeout": 1}))
        self.assertEqual(a["rejects"], _zeroRejects(rateLimit=1))
        self.assertEqual(b["requests"], 3)
        self.assertEqual(b["errors"], _zeroErrors(unavailable=1, refused=1))
        self.assertEqual(b["rejects"], _zeroRejects(access=1))
        self.assertEqual(sorted(snap["servers"]), ["s1", "s2"])
        self.assertEqual(snap["servers"]["s1"]["requests"], 4)
        self.assertEqual(
            snap["servers"]["s1"]["errors"], _zeroErrors(**{"4xx": 1, "5xx": 1, "timeout": 1})
        )
        self.assertEqual(snap["servers"]["s2"]["errors"], _zeroErrors(refused=1))
        self.assertEqual(snap["at"], c.seconds())
        self.assertIsNone(snap["revision"])

    def test_histogram(self) -> None:
        """
        Latencies land in the bucket whose bound is the first at or above
        them (a latency equal to a bound counts under it), the buckets are
        answered cumulative with "+Inf" last, and the sum is in ms.
        """
        s, c = self.stats, self.clock
        for ms in (0.5, 1, 1.5, 30, 30, 20000):
            _answer(s, c, "a", ms)
        latency = s.snapshot()["apis"]["a"]["latency"]
        expected = dict(zip(list(BUCKETS_MS) + ["+Inf"], [2, 3, 3, 3, 3, 5] + [5] * 7 + [6]))
        self.assertEqual(latency["buckets"], [[le, n] for le, n in expected.items()])
        self.assertEqual(latency["count"], 6)
        self.assertAlmostEqual(latency["sumMs"], 0.5 + 1 + 1.5 + 30 + 30 + 20000, places=6)
        # p50: rank 3 is the last of the (1, 2] bucket.
        self.assertEqual(latency["p50"], 2.0)
        # p99: rank 5.94 is in +Inf: the largest bound.
        self.assertEqual(latency["p99"], 10000.0)

    def test_percentiles_from_buckets(self) -> None:
        """
        p50 and p99 in the JSON are the histogram's interpolated estimates.
        """
        s, c = self.stats, self.clock
        for _ in range(5):
            _answer(s, c, "a", 3)
        for _ in range(5):
            _answer(s, c, "a", 30)
        latency = s.snapshot()["apis"]["a"]["latency"]
        self.assertEqual(latency["p50"], 5.0)
        self.assertAlmostEqual(latency["p99"], 49.5)

    def test_empty_latency(self) -> None:
        """
        An API without requests has null percentiles and zero buckets.
        """
        self.stats.prune(["a"], [])
        latency = self.stats.snapshot()["apis"]["a"]["latency"]
        self.assertEqual(latency["count"], 0)
        self.assertIsNone(latency["p50"])
        self.assertIsNone(latency["p99"])
        self.assertEqual({n for _, n in latency["buckets"]}, {0})

    def test_prune(self) -> None:
        """
        prune keeps the entries of configured names, makes the missing ones
        (zeros), and drops the rest; afterwards an unconfigured name (a
        request that began on an older snapshot) gets no entry back, but
        still counts in the totals.
        """
        s, c = self.stats, self.clock
        _answer(s, c, "old", 1, backend="gone")
        _answer(s, c, "kept", 1, backend="s1")
        s.prune(["kept", "new"], ["s1", "s2"])
        snap = s.snapshot()
        self.assertEqual(sorted(snap["apis"]), ["kept", "new"])
        self.assertEqual(snap["apis"]["kept"]["requests"], 1)
        self.assertEqual(snap["apis"]["new"]["requests"], 0)
        self.assertEqual(sorted(snap["servers"]), ["s1", "s2"])
        _answer(s, c, "old", 1, backend="gone")
        snap = s.snapshot()
        self.assertNotIn("old", snap["apis"])
        self.assertNotIn("gone", snap["servers"])
        self.assertEqual(snap["totals"]["requests"], 3)

    def test_counters_made_once(self) -> None:
        """
        Recording reuses the counters made for a name: no new objects per
        request.
        """
        s, c = self.stats, self.clock
        s.prune(["a"], ["s1"])
        apiCounters, serverCounters = s.apis["a"], s.servers["s1"]
        for _ in range(3):
            _answer(s, c, "a", 1)
        self.assertIs(s.apis["a"], apiCounters)
        self.assertIs(s.servers["s1"], serverCounters)
        self.assertEqual(apiCounters.requests, 3)

    def test_follow(self) -> None:
        """
        follow prunes to the manager's snapshot now and after every swap.
        """
        manager = SnapshotManager(FilterRegistry({}), self.clock)
        manager.apply(_storeState(1, apis=["a"]))
        self.stats.follow(manager)
        self.assertEqual(sorted(self.stats.apis), ["a"])
        self.assertEqual(sorted(self.stats.servers), ["s1", "s2"])
        manager.apply(_storeState(2, apis=["b"], servers=["s2"]))
        self.assertEqual(sorted(self.stats.apis), ["b"])
        self.assertEqual(sorted(self.stats.servers), ["s2"])

    def test_live_state(self) -> None:
        """
        With a manager, each server shows its live state: address, requests
        in flight, latency average (s), health, ejection, upstream counts,
        its health check status (from the health checker) and its breaker's
        snapshot; an API with its own breaker shows it; the revision is the
        snapshot's.
        """
        manager = SnapshotManager(FilterRegistry({}), self.clock)
        manager.apply(_storeState(7, apis=["a"], breaker=True))
        self.stats.follow(manager)
        backend = manager.backends["s1"]
        backend.requestStarted()
        backend.requestStarted()
        backend.requestFinished(0.25, True)
        backend.ejectedUntil = self.clock.seconds() + 5

        class Health:
            def status(self, name):
                return {"checked": True, "healthy": name == "s1"}

        snap = self.stats.snapshot(manager, Health())
        self.assertEqual(snap["revision"], 7)
        s1 = snap["servers"]["s1"]
        self.assertEqual(s1["addr"], "127.0.0.1:1001")
        self.assertEqual(s1["active"], 1)
        self.assertEqual(s1["latencyEWMA"], 0.25)
        self.assertTrue(s1["healthy"])
        self.assertTrue(s1["ejected"])
        self.assertEqual(s1["upstreamRequests"], 2)
        self.assertEqual(s1["upstreamFailures"], 0)
        self.assertEqual(s1["health"], {"checked": True, "healthy": True})
        self.assertEqual(s1["breaker"]["state"], "closed")
        self.assertEqual(s1["breaker"]["counters"]["successes"], 1)
        self.assertIsNone(snap["servers"]["s2"]["breaker"])
        self.assertFalse(snap["servers"]["s2"]["ejected"])
        self.assertEqual(snap["apis"]["a"]["breaker"]["state"], "closed")

    def test_snapshot_is_json(self) -> None:
        """
        The snapshot survives strict JSON (no Infinity, no NaN, no tuples
        that would come back as lists).
        """
        import json

        s, c = self.stats, self.clock
        _answer(s, c, "a", 20000)
        snap = s.snapshot()
        text = json.dumps(snap, allow_nan=False)
        self.assertEqual(json.loads(text), snap)


def _storeState(revision, apis, servers=("s1", "s2"), breaker=False) -> StoreState:
    serverDocs = {}
    for i, name in enumerate(servers):
        doc: dict = {"name": name, "addr": f"127.0.0.1:{1001 + i}"}
        if breaker and name == "s1":
            doc["circuitBreaker"] = {"minRequests": 5}
        serverDocs[name] = doc
    apiDocs = {}
    for name in apis:
        doc = {"name": name, "urlPattern": f"/{name}/*", "nodes": [{"cluster": "main"}]}
        if breaker:
            doc["circuitBreaker"] = {"minRequests": 5}
        apiDocs[name] = doc
    return StoreState(
        revision,
        {
            "servers": serverDocs,
            "clusters": {"main": {"name": "main", "servers": list(servers)}},
            "apis": apiDocs,
            "routings": {},
        },
    )


class MergeTests(SynchronousTestCase):
    def test_merge(self) -> None:
        """
        mergeSnapshots adds up counters and histograms and recomputes the
        percentiles from the summed buckets; live server state is summed
        (active, upstream counts), averaged (latency) or combined (healthy
        only when every proxy says so, the worst breaker state).
        """
        clock = Clock()
        one, two = Stats(clock), Stats(clock)
        for _ in range(5):
            _answer(one, clock, "a", 3)
        for _ in range(5):
            _answer(two, clock, "a", 30, 500)
        _answer(two, clock, "b", 1, 429, "reject:rate-limit", backend=None)
        snapOne, snapTwo = one.snapshot(), two.snapshot()
        snapOne["servers"]["s1"].update(
            addr="h:1",
            active=1,
            latencyEWMA=0.01,
            healthy=True,
            ejected=False,
            upstreamRequests=5,
            upstreamFailures=0,
            health=None,
            breaker={"state": "closed"},
        )
        snapTwo["servers"]["s1"].update(
            addr="h:1",
            active=2,
            latencyEWMA=0.03,
            healthy=False,
            ejected=False,
            upstreamRequests=5,
            upstreamFailures=5,
            health=None,
            breaker={"state": "open"},
        )
        merged = mergeSnapshots([snapOne, snapTwo])
        self.assertEqual(_numbers(merged["totals"]), {"requests": 11, "errors": 5, "rejects": 1})
        self.assertEqual(merged["totals"]["latency"]["count"], 11)
        # Rank 5.5 of 11: 1 answer at 1 ms, then 5 in (2, 5] ms.
        self.assertAlmostEqual(merged["totals"]["latency"]["p50"], 2 + 3 * (5.5 - 1) / 5)
        a = merged["apis"]["a"]
        self.assertEqual(a["requests"], 10)
        self.assertEqual(a["errors"], _zeroErrors(**{"5xx": 5}))
        self.assertEqual(a["latency"]["count"], 10)
        self.assertAlmostEqual(a["latency"]["sumMs"], 5 * 3 + 5 * 30)
        self.assertEqual(a["latency"]["p50"], 5.0)
        self.assertAlmostEqual(a["latency"]["p99"], 49.5)
        self.assertEqual(merged["apis"]["b"]["rejects"], _zeroRejects(rateLimit=1))
        s1 = merged["servers"]["s1"]
        self.assertEqual(s1["requests"], 10)
        self.assertEqual(s1["active"], 3)
        self.assertEqual(s1["upstreamRequests"], 10)
        self.assertEqual(s1["upstreamFailures"], 5)
        self.assertAlmostEqual(s1["latencyEWMA"], 0.02)
        self.assertFalse(s1["healthy"])
        self.assertFalse(s1["ejected"])
        self.assertEqual(s1["breaker"], {"state": "open"})
        self.assertEqual(merged["at"], clock.seconds())

    def test_merge_keeps_the_worst_breaker_whole(self) -> None:
        """
        Of the proxies' breakers of one server (and of one API), the merge
        keeps the whole snapshot of the one in the worst state: since when,
        the failure rate that opened it and its transitions, which the web
        UI shows (it showed an open breaker "since -" with "no transition
        yet: the breaker has stayed closed").
        """
        opened = {
            "state": "open",
            "since": 12.5,
            "failureRate": 80.0,
            "requests": 20,
            "transitions": [{"from": "closed", "to": "open", "at": 12.5}],
            "counters": {"successes": 4, "failures": 16},
            "retryAfter": 17.5,
        }
        closed = {"state": "closed", "since": None, "transitions": [], "requests": 3}
        snapshots = []
        for breaker in (closed, opened, dict(closed)):
            snapshots.append(
                {
                    "servers": {"s1": {"addr": "h:1", "breaker": breaker}},
                    "apis": {"a": {"requests": 0, "breaker": breaker}},
                }
            )
        merged = mergeSnapshots(snapshots)
        self.assertEqual(merged["servers"]["s1"]["breaker"], opened)
        self.assertEqual(merged["apis"]["a"]["breaker"], opened)
        self.assertEqual(mergeSnapshots(snapshots[:1])["servers"]["s1"]["breaker"], closed)

    def test_merge_ewma_of_proxies_that_sent(self) -> None:
        """
        A server's merged latency average is the mean of the proxies that
        timed an answer of it: a proxy that sent it nothing (its average
        0.0, "no sample") does not pull it down (one worker of four that
        sent to it showed a quarter of its latency).
        """
        snapshots = [
            {"servers": {"s1": {"addr": "h:1", "latencyEWMA": ewma}}}
            for ewma in (0.0, 0.2, 0.0, 0.4)
        ]
        merged = mergeSnapshots(snapshots)
        self.assertAlmostEqual(merged["servers"]["s1"]["latencyEWMA"], 0.3)
        none = mergeSnapshots(snapshots[:1] + snapshots[2:3])
        self.assertEqual(none["servers"]["s1"]["latencyEWMA"], 0.0)

    def test_retired_counts_keep_what_only_goes_up(self) -> None:
        """
        Of an ended proxy's snapshot, L{retiredCounts} keeps the counters
        (WebSocket tunnels opened and bytes, cache counts and evictions,
        tracing's exported and lost spans, the fleet limits' calls) and
        drops what was live in it (tunnels open, spans queued, the cache's
        memory, the limits' mode): merged with a live proxy's, the counters
        add up and the live figures are the live proxy's alone.
        """
        ended = {
            "totals": {"requests": 3, "errors": 1, "rejects": 0},
            "apis": {
                "a": {
                    "requests": 3,
                    "breaker": {"state": "open"},
                    "websocket": {
                        "open": 2,
                        "opened": 5,
                        "overCap": 1,
                        "bytesUp": 10,
                        "bytesDown": 20,
                    },
                    "cache": {"hit": 4, "miss": 1, "stored": 1, "hitRatio": 0.8},
                },
                "gone": {"requests": 9},
            },
            "servers": {"s1": {"requests": 3, "addr": "h:1", "active": 2, "upstreamRequests": 4}},
            "sendTimeouts": 1,
            "accessLog": {"written": 3, "dropped": 1},
            "http2": {"streams": 2},
            "tracing": {"exported": 6, "dropped": 1, "failed": 2, "queued": 7},
            "cache": {"bytes": 100, "limit": 1000, "entries": 1, "evictions": 3},
            "limits": {
                "mode": "local",
                "modes": {"local": 1},
                "switches": {"local": 1},
                "calls": 8,
                "timeouts": 1,
                "errors": 0,
                "redis": "down",
            },
            "revision": 4,
        }
        retired = retiredCounts(ended, apis={"a"}, servers={"s1"})
        self.assertNotIn("gone", retired["apis"])
        live = {
            "totals": {"requests": 1, "errors": 0, "rejects": 0},
            "apis": {"a": {"requests": 1, "websocket": {"open": 1, "opened": 1}}},
            "servers": {"s1": {"requests": 1, "addr": "h:1", "active": 1, "upstreamRequests": 1}},
            "tracing": {"exported": 1, "dropped": 0, "failed": 0, "queued": 2},
            "cache": {"bytes": 50, "limit": 1000, "entries": 1, "evictions": 0},
            "limits": {
                "mode": "shared",
                "modes": {"shared": 1},
                "switches": {},
                "calls": 2,
                "timeouts": 0,
                "errors": 0,
                "redis": "up",
            },
            "revision": 5,
        }
        merged = mergeSnapshots([live, retired])
        a = merged["apis"]["a"]
        self.assertEqual(a["requests"], 4)
        self.assertNotIn("breaker", a)
        self.assertEqual(
            a["websocket"],
            {"open": 1, "opened": 6, "overCap": 1, "bytesUp": 10, "bytesDown": 20},
        )
        self.assertEqual((a["cache"]["hit"], a["cache"]["miss"]), (4, 1))
        s1 = merged["servers"]["s1"]
        self.assertEqual((s1["requests"], s1["active"], s1["upstreamRequests"]), (4, 1, 5))
        self.assertEqual(merged["totals"]["requests"], 4)
        self.assertEqual(merged["accessLog"], {"written": 3, "dropped": 1})
        self.assertEqual(merged["tracing"], {"exported": 7, "dropped": 1, "failed": 2, "queued": 2})
        self.assertEqual(
            merged["cache"], {"bytes": 50, "limit": 1000, "entries": 1, "evictions": 3}
        )
        limits = merged["limits"]
        self.assertEqual(
            (limits["mode"], limits["redis"], limits["modes"]), ("shared", "up", {"shared": 1})
        )
        self.assertEqual(
            (limits["calls"], limits["timeouts"], limits["switches"]), (10, 1, {"local": 1})
        )
        self.assertEqual(merged["revision"], 5)

    def test_merge_nothing(self) -> None:
        """
        Merging no snapshot gives empty statistics, not an error.
        """
        merged = mergeSnapshots([])
        self.assertEqual(_numbers(merged["totals"]), {"requests": 0, "errors": 0, "rejects": 0})
        self.assertIsNone(merged["totals"]["latency"]["p50"])
        self.assertEqual(merged["apis"], {})

    def test_merge_one_is_identity(self) -> None:
        """
        The merge of one snapshot has its counters and histograms.
        """
        clock = Clock()
        stats = Stats(clock)
        for ms in (1, 7, 300):
            _answer(stats, clock, "a", ms, 502, "broken")
        snap = stats.snapshot()
        merged = mergeSnapshots([snap])
        self.assertEqual(merged["apis"], snap["apis"])
        self.assertEqual(merged["totals"], snap["totals"])


class CountersTests(SynchronousTestCase):
    def test_fresh(self) -> None:
        """
        New counters have every error kind and reject reason at zero.
        """
        counters = Counters()
        self.assertEqual(counters.toJSON()["errors"], _zeroErrors())
        self.assertEqual(counters.toJSON()["rejects"], _zeroRejects())
        self.assertEqual(len(counters.buckets), len(BUCKETS_MS) + 1)


# -- through the real proxy --------------------------------------------------------


@implementer(IFilter)
class _Blocker:
    """
    A custom filter that answers 451 when the request has X-Block.
    """

    name = "blocker"

    def before(self, context: Any) -> Any:
        if context.request.requestHeaders.hasHeader(b"x-block"):
            return EarlyResponse.error(451, "blocked")
        return None

    def after(self, context: Any, response: Any) -> None:
        return None

    def error(self, context: Any, failure: Any) -> None:
        return None


class _BlockerFactory:
    name = "blocker"
    description = "test filter"

    def makeFilter(self, config: Any, reactor: Any) -> _Blocker:
        return _Blocker()


async def wait(predicate: Any, limit: float = 5.0) -> None:
    deadline = reactor.seconds() + limit
    while not predicate():
        assert reactor.seconds() < deadline, "condition not reached in time"
        await task.deferLater(reactor, 0.01, lambda: None)


async def _deadPort() -> int:
    probe = await listen(None, Site(Resource()))
    port = probe.getHost().port
    await probe.stopListening()
    return port


def proxyState(ports: dict, revision: int = 1) -> StoreState:
    """
    One API per way an answer can go, over backend b1, a drained server and
    a dead port.
    """
    main = {"cluster": "main", "retries": 0}
    apis = [
        {"name": "up", "urlPattern": "/up/*", "nodes": [dict(main, urlRewrite="/{*}")]},
        {
            "name": "slow",
            "urlPattern": "/slow",
            "nodes": [dict(main, urlRewrite="/hang", timeout=0.2)],
        },
        {"name": "dead", "urlPattern": "/dead", "nodes": [{"cluster": "deadc", "retries": 0}]},
        {
            "name": "limited",
            "urlPattern": "/limited",
            "nodes": [main],
            "rateLimit": {"rate": 0.001, "burst": 1},
        },
        {
            "name": "denied",
            "urlPattern": "/denied",
            "nodes": [main],
            "ipAccess": {"deny": ["127.0.0.1/32"]},
        },
        {"name": "drained", "urlPattern": "/drained", "nodes": [{"cluster": "drainedc"}]},
        {
            "name": "guarded",
            "urlPattern": "/guarded",
            "nodes": [dict(main, urlRewrite="/teapot")],
            "circuitBreaker": {
                "minRequests": 1,
                "failureRateToOpen": 50,
                "openTimeout": 600,
                "failureStatuses": [418],
            },
        },
        {
            "name": "blocked",
            "urlPattern": "/blocked",
            "nodes": [main],
            "filters": [{"name": "blocker"}],
        },
    ]
    return StoreState(
        revision,
        {
            "servers": {
                "b1": {"name": "b1", "addr": f"127.0.0.1:{ports['b1']}"},
                "b2": {"name": "b2", "addr": f"127.0.0.1:{ports['b1']}", "weight": 0},
                "dead": {"name": "dead", "addr": f"127.0.0.1:{ports['dead']}"},
            },
            "clusters": {
                "main": {"name": "main", "servers": ["b1"]},
                "deadc": {"name": "deadc", "servers": ["dead"]},
                "drainedc": {"name": "drainedc", "servers": ["b2"]},
            },
            "apis": {a["name"]: a for a in apis},
            "routings": {},
        },
    )


#: The known sequence: (path, headers, expected status).
SEQUENCE = [
    ("/up/hello", {}, 200),
    ("/up/hello", {}, 200),
    ("/up/hello", {}, 200),
    ("/up/teapot", {}, 418),
    ("/up/json/x?status=500", {}, 500),
    ("/up/json/x?status=503", {}, 503),
    ("/slow", {}, 504),
    ("/dead", {}, 502),
    ("/limited", {}, 200),
    ("/limited", {}, 429),
    ("/limited", {}, 429),
    ("/denied", {}, 403),
    ("/drained", {}, 503),
    ("/guarded", {}, 418),
    ("/guarded", {}, 503),
    ("/blocked", {"X-Block": "1"}, 451),
    ("/blocked", {}, 200),
    ("/no/such/api", {}, 404),
]


async def runSequence(harness: Any) -> Stats:
    """
    Start the harness with stats, apply L{proxyState} and send L{SEQUENCE}.

    @return: the L{Stats}.
    """
    await harness.start(registry=FilterRegistry({"blocker": _BlockerFactory()}))
    stats = Stats(reactor)
    harness.resource._stats = stats
    stats.follow(harness.manager)
    ports = {"b1": harness.backendPorts["b1"], "dead": await _deadPort()}
    harness.manager.apply(proxyState(ports))
    codes = []
    for path, headers, _ in SEQUENCE:
        response = await harness.request("GET", path, headers=headers)
        await response.content()
        codes.append(response.code)
    assert codes == [code for _, _, code in SEQUENCE]
    return stats


# Real sockets on 127.0.0.1 and the real reactor: an integration test.
@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_sequence_counted_exactly(harness):
    """
    A known sequence through the real proxy is counted exactly: upstream
    answers by status, timeouts, refused connections, no server available,
    and rejects by rate limit, IP access, an API's breaker and a custom
    filter; the request that matched no API (the gateway's own 404) is
    counted in the totals only, as a 4xx error.
    """
    stats = await runSequence(harness)
    snap = stats.snapshot(harness.manager)
    assert _numbers(snap["totals"]) == {"requests": 18, "errors": 8, "rejects": 5}
    assert snap["totals"]["latency"]["count"] == 18
    apis = snap["apis"]
    assert sorted(apis) == [
        "blocked",
        "dead",
        "denied",
        "drained",
        "guarded",
        "limited",
        "slow",
        "up",
    ]
    expected = {
        "up": (6, _zeroErrors(**{"4xx": 1, "5xx": 2}), _zeroRejects()),
        "slow": (1, _zeroErrors(timeout=1), _zeroRejects()),
        "dead": (1, _zeroErrors(refused=1), _zeroRejects()),
        "limited": (3, _zeroErrors(), _zeroRejects(rateLimit=2)),
        "denied": (1, _zeroErrors(), _zeroRejects(access=1)),
        "drained": (1, _zeroErrors(unavailable=1), _zeroRejects()),
        "guarded": (2, _zeroErrors(**{"4xx": 1}), _zeroRejects(breaker=1)),
        "blocked": (2, _zeroErrors(), _zeroRejects(other=1)),
    }
    for name, (requests, errors, rejects) in expected.items():
        assert (apis[name]["requests"], apis[name]["errors"], apis[name]["rejects"]) == (
            requests,
            errors,
            rejects,
        ), name
        assert apis[name]["latency"]["count"] == requests, name
    servers = snap["servers"]
    assert sorted(servers) == ["b1", "b2", "dead"]
    # b1 answered up (6), slow (1), limited (1), guarded (1), blocked (1).
    assert servers["b1"]["requests"] == 10
    assert servers["b1"]["errors"] == _zeroErrors(**{"4xx": 2, "5xx": 2, "timeout": 1})
    assert servers["b1"]["upstreamRequests"] == 10
    assert servers["dead"]["requests"] == 1
    assert servers["dead"]["errors"] == _zeroErrors(refused=1)
    assert servers["dead"]["upstreamFailures"] == 1
    assert servers["b2"]["requests"] == 0
    # Failures of b1: the timeout and the two 5xx (418 is not one).
    assert servers["b1"]["upstreamFailures"] == 3
    assert servers["b1"]["active"] == 0
    assert snap["apis"]["guarded"]["breaker"]["state"] == "open"


# Real sockets on 127.0.0.1 and the real reactor: an integration test.
@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_node_calls_and_mirror_copies_counted_per_server(harness):
    """
    A server's counters include the calls it got as an aggregation node
    (and their failures) and the mirror copies it got, not only the
    client answers it gave; a cluster whose every breaker is open answers
    503 counted as a breaker reject.
    """
    stats = Stats(reactor)
    await harness.start(names=("b1", "b2"), stats=stats)
    stats.follow(harness.manager)
    ports = harness.backendPorts
    servers = {name: {"name": name, "addr": f"127.0.0.1:{ports[name]}"} for name in ports}
    servers["flaky"] = dict(
        servers["b2"],
        name="flaky",
        circuitBreaker={"minRequests": 1, "failureRateToOpen": 50, "openTimeout": 600},
    )
    apis = [
        {
            "name": "agg",
            "urlPattern": "/agg",
            "nodes": [
                {"cluster": "one", "attrName": "a", "urlRewrite": "/json/a"},
                {"cluster": "two", "attrName": "b", "urlRewrite": "/json/b?status=500"},
            ],
        },
        {"name": "copied", "urlPattern": "/copied", "nodes": [{"cluster": "one"}]},
        {"name": "guarded", "urlPattern": "/guarded", "nodes": [{"cluster": "flakyc"}]},
    ]
    harness.manager.apply(
        StoreState(
            1,
            {
                "servers": servers,
                "clusters": {
                    "one": {"name": "one", "servers": ["b1"]},
                    "two": {"name": "two", "servers": ["b2"]},
                    "flakyc": {"name": "flakyc", "servers": ["flaky"]},
                },
                "apis": {a["name"]: a for a in apis},
                "routings": {
                    "m": {"name": "m", "api": "copied", "cluster": "two", "strategy": "mirror"}
                },
            },
        )
    )
    r = await harness.request("GET", "/agg")
    assert r.code == 502
    await r.content()
    r = await harness.request("GET", "/copied")
    await r.content()
    await wait(lambda: stats.servers["b2"].requests == 2)
    # The server's breaker opens (minRequests 1, 50 %).
    harness.manager.backends["flaky"].breaker.record(False)
    r = await harness.request("GET", "/guarded")
    assert r.code == 503
    await r.content()
    snap = stats.snapshot(harness.manager)
    b1, b2 = snap["servers"]["b1"], snap["servers"]["b2"]
    # b1: the node call, and the proxied request of /copied.
    assert b1["requests"] == 2
    # b2: the failing node call (500) and the mirror copy.
    assert b2["requests"] == 2
    assert b2["errors"]["5xx"] == 1
    assert snap["apis"]["guarded"]["rejects"]["breaker"] == 1
    assert snap["apis"]["guarded"]["errors"]["unavailable"] == 0


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_sequence_latency(harness):
    """
    The histogram holds every answer; the timed-out request (0.2 s) is past
    the 100 ms bucket; percentiles are within the buckets' range.
    """
    stats = await runSequence(harness)
    slow = stats.snapshot()["apis"]["slow"]["latency"]
    assert slow["count"] == 1
    upTo = dict((le, n) for le, n in slow["buckets"])
    assert upTo[100] == 0
    assert upTo["+Inf"] == 1
    assert 100 <= slow["p50"] <= 10000
    total = stats.totals
    assert sum(total.buckets) == total.requests == 18
