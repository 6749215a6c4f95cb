"""
Unit tests of what keeps a configuration of many APIs cheap to change and
serve (issue 19, item 5): a worker's stats reported by change
(L{gateway.telemetry.report}), the cycle collector settled after large
configurations (L{gateway.process.interpreter.settleCollector}), proxy
registry records that do not grow with the catalog, the etcd store's loads
answered from its watch, the file store rendering only what a commit
changed, and the catalog parser knowing a state by identity.
"""

from __future__ import annotations

import json
from types import MappingProxyType
from typing import Any, Dict, List

from fakeetcd import FakeEtcd, FakeEtcdClient
from fakes import NoProxyConfig, ReadyStore, TwoWorkers
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from bench import scale
from gateway.cli.checks import checkResources
from gateway.cli.resources import parseResourceFile
from gateway.filters import FilterRegistry
from gateway.model.resources import CatalogParser
from gateway.process import storeservice
from gateway.process.interpreter import settleCollector
from gateway.process.propagation import ServedRevisions
from gateway.process.status import GatewayStatus
from gateway.process.storeservice import StoreService
from gateway.routing.snapshot import SnapshotManager
from gateway.store import Change, StoreState
from gateway.store.etcd.store import EtcdStore
from gateway.store.file import FileStore, StoreText, dumpStoreState
from gateway.telemetry.report import StatsReport, mergeReport
from gateway.telemetry.stats import Stats


def resources(apis: int, breaker: bool = False) -> Dict[str, Dict[str, Any]]:
    """
    @return: a store state's resources: two servers, a cluster, C{apis}
        APIs (the first with a breaker of its own when asked).
    """
    apiList = {
        f"a{i}": {"name": f"a{i}", "urlPattern": f"/a{i}", "nodes": [{"cluster": "c"}]}
        for i in range(apis)
    }
    if breaker and apis:
        apiList["a0"] = dict(apiList["a0"], circuitBreaker={"minRequests": 5})
    return {
        "servers": {
            "s1": {"name": "s1", "addr": "127.0.0.1:9001"},
            "s2": {"name": "s2", "addr": "127.0.0.1:9002"},
        },
        "clusters": {"c": {"name": "c", "servers": ["s1", "s2"]}},
        "apis": apiList,
    }


class _Context:
    """
    The fields of an exchange that the stats read.
    """

    def __init__(self, api: Any, backend: Any, startTime: float) -> None:
        self.api = api
        self.backend = backend
        self.startTime = startTime


# -- a worker's stats, reported by change ------------------------------------------


class _Cache:
    """
    A response cache's stats, as L{Stats} reads them.
    """

    def __init__(self, apis: Dict[str, Any]) -> None:
        self.apis = apis
        self.memory = {"bytes": 0, "limit": 100, "entries": 0, "evictions": 0}

    def countedAPIs(self) -> List[str]:
        return list(self.apis)

    def snapshot(self) -> Dict[str, Any]:
        return {"apis": dict(self.apis), "memory": dict(self.memory)}


class _Limits:
    """
    The fleet's limits, as L{Stats} reads them.
    """

    def __init__(self, figures: Dict[str, Any]) -> None:
        self.figures = figures

    def snapshot(self) -> Dict[str, Any]:
        return dict(self.figures)


class StatsReportTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.manager = SnapshotManager(FilterRegistry.fromPlugins(), self.clock)
        self.stats = Stats(self.clock)
        self.stats.follow(self.manager)
        self.manager.apply(StoreState(1, resources(50, breaker=True)))
        self.report = StatsReport(self.stats, self.manager)

    def answer(self, api: str, server: str = "s1", code: int = 200) -> None:
        snapshot = self.manager.snapshot
        context = _Context(snapshot.apis[api], snapshot.backends[server], self.clock.seconds())
        self.clock.advance(0.005)
        self.stats.record(context, code, None)

    def test_firstWhole(self) -> None:
        """
        The first report is the whole snapshot, every API and server.
        """
        first = self.report()
        self.assertEqual(first, self.stats.snapshot(self.manager, None))
        self.assertNotIn("delta", first)
        self.assertEqual(len(first["apis"]), 50)

    def test_onlyWhatChanged(self) -> None:
        """
        A later report holds the APIs that served requests since the report
        before (and none of the others), the servers whose entry changed,
        the totals; put together with what came before, it is the whole
        snapshot of now.
        """
        merged = mergeReport(None, self.report())
        self.answer("a7")
        self.answer("a7", "s2", 502)
        delta = self.report()
        self.assertTrue(delta["delta"])
        self.assertEqual(sorted(delta["apis"]), ["a7"])
        self.assertEqual(sorted(delta["servers"]), ["s1", "s2"])
        self.assertEqual(delta["removed"], {"apis": [], "servers": []})
        self.assertEqual(delta["totals"]["requests"], 2)
        merged = mergeReport(merged, delta)
        self.assertEqual(merged, self.stats.snapshot(self.manager, None))
        quiet = self.report()
        self.assertEqual((quiet["apis"], quiet["servers"]), ({}, {}))
        self.assertEqual(mergeReport(merged, quiet), self.stats.snapshot(self.manager, None))

    def test_size(self) -> None:
        """
        With nothing served, a report holds no entry however many APIs
        there are: it is a few hundred bytes, where the whole snapshot of
        50 APIs is tens of kilobytes.
        """
        whole = len(json.dumps(self.report()))
        quiet = len(json.dumps(self.report()))
        self.assertGreater(whole, 20_000)
        self.assertLess(quiet, 1000)

    def test_breakers(self) -> None:
        """
        An API with a breaker of its own is reported when its breaker's
        state changed, even without a request counted since.
        """
        self.report()
        compiled = self.manager.snapshot.apis["a0"]
        breaker = [f for f in compiled.filters if getattr(f, "name", None) == "circuit-breaker"]
        self.assertEqual(len(breaker), 1)
        for _ in range(5):
            breaker[0].breaker.record(False)
        delta = self.report()
        self.assertEqual(delta["apis"]["a0"]["breaker"]["state"], "open")
        self.assertEqual(sorted(delta["apis"]), ["a0"])
        self.assertEqual(self.report()["apis"], {})

    def test_removed(self) -> None:
        """
        APIs and servers gone from the configuration are named as removed,
        and dropped by the merge.
        """
        merged = mergeReport(None, self.report())
        smaller = resources(10)
        del smaller["servers"]["s2"]
        smaller["clusters"]["c"]["servers"] = ["s1"]
        self.manager.apply(StoreState(2, smaller))
        delta = self.report()
        self.assertEqual(sorted(delta["removed"]["apis"]), sorted(f"a{i}" for i in range(10, 50)))
        self.assertEqual(delta["removed"]["servers"], ["s2"])
        merged = mergeReport(merged, delta)
        self.assertEqual(merged, self.stats.snapshot(self.manager, None))

    def test_withoutRequests(self) -> None:
        """
        What changes without a request counted is reported too: an API's
        WebSocket tunnels (a tunnel closing, its bytes, long after the
        handshake's request) and its response cache's counts; an API whose
        tunnels and cache counts did not change is not.
        """
        withSocket = resources(50)
        withSocket["apis"]["a3"] = dict(withSocket["apis"]["a3"], websocket=True)
        self.manager.apply(StoreState(2, withSocket))
        cache = _Cache({"a5": {"hit": 0, "stored": 0}})
        self.stats.cache = cache
        merged = mergeReport(None, self.report())
        self.assertEqual(merged["apis"]["a3"]["websocket"]["open"], 0)
        tunnels = self.stats.websocketCounters("a3")
        tunnels.opened += 1
        tunnels.open += 1
        delta = self.report()
        self.assertEqual(sorted(delta["apis"]), ["a3"])
        self.assertEqual(delta["apis"]["a3"]["websocket"]["open"], 1)
        merged = mergeReport(merged, delta)
        tunnels.open -= 1
        cache.apis["a5"] = {"hit": 0, "stored": 1}
        delta = self.report()
        self.assertEqual(sorted(delta["apis"]), ["a3", "a5"])
        self.assertEqual(delta["apis"]["a5"]["cache"], {"hit": 0, "stored": 1})
        merged = mergeReport(merged, delta)
        self.assertEqual(merged, self.stats.snapshot(self.manager, None))
        self.assertEqual(self.report()["apis"], {})

    def test_everythingElseWhole(self) -> None:
        """
        A delta carries the rest of the snapshot whole (C{http2},
        C{accessLog}, C{tracing}, C{limits}, the cache's memory store):
        merged, it is as the worker has it now; a key the worker no longer
        has is gone from the merge too.
        """
        self.stats.cache = _Cache({})
        self.stats.limits = _Limits({"mode": "shared", "calls": 1})
        merged = mergeReport(None, self.report())
        self.assertEqual(merged["limits"], {"mode": "shared", "calls": 1})
        self.stats.http2["streams"] = self.stats.http2.get("streams", 0) + 3
        self.stats.limits = _Limits({"mode": "local", "calls": 2})
        self.stats.cache.memory = {"bytes": 10, "limit": 100, "entries": 1, "evictions": 0}
        merged = mergeReport(merged, self.report())
        self.assertEqual(merged, self.stats.snapshot(self.manager, None))
        self.assertEqual(merged["http2"]["streams"], 3)
        self.assertEqual(merged["limits"]["mode"], "local")
        self.assertEqual(merged["cache"]["bytes"], 10)
        self.stats.limits = None
        merged = mergeReport(merged, self.report())
        self.assertNotIn("limits", merged)

    def test_mergeWhole(self) -> None:
        """
        A whole report replaces what was merged before (a worker started
        again).
        """
        merged = mergeReport({"apis": {"x": {}}, "servers": {}}, {"apis": {}, "servers": {}})
        self.assertEqual(merged, {"apis": {}, "servers": {}})


# -- the cycle collector ---------------------------------------------------------


class _Collector:
    def __init__(self, freeze: bool = True) -> None:
        self.calls: List[str] = []
        if freeze:
            self.freeze = lambda: self.calls.append("freeze")

    def collect(self) -> None:
        self.calls.append("collect")


class SettleCollectorTests(SynchronousTestCase):
    def test_freezes(self) -> None:
        """
        L{settleCollector} freezes what lives now, and collects nothing (a
        whole collection of a large configuration costs what freezing
        saves).
        """
        collector = _Collector()
        self.assertTrue(settleCollector(collector, pypy=False))
        self.assertEqual(collector.calls, ["freeze"])

    def test_noFreeze(self) -> None:
        """
        A collector without C{freeze}, or PyPy's, is left alone.
        """
        collector = _Collector(freeze=False)
        self.assertFalse(settleCollector(collector, pypy=False))
        self.assertEqual(collector.calls, [])
        collector = _Collector()
        self.assertFalse(settleCollector(collector, pypy=True))
        self.assertEqual(collector.calls, [])


class StoreServiceSettleTests(SynchronousTestCase):
    """
    The store service settles the collector once its first snapshot
    serves, then after every L{storeservice.SETTLE_AFTER} APIs compiled.
    """

    def test_settles(self) -> None:
        """
        Settled at the start; not after a change of a few APIs; again
        once enough APIs were compiled since.
        """
        self.patch(storeservice, "SETTLE_AFTER", 20)
        clock = Clock()
        store = FileStore(None)
        manager = SnapshotManager(FilterRegistry.fromPlugins(), clock)
        settled: List[int] = []
        service = StoreService(
            store, manager, self.fail, clock, settle=lambda: settled.append(manager.compiledAPIs)
        )
        service.startService()
        self.assertEqual(settled, [0])
        state = resources(5)
        changes = [Change(k, n, v) for k, items in state.items() for n, v in items.items()]
        self.successResultOf(store.commit(changes, 0))
        self.assertEqual(settled, [0])
        more = [
            Change("apis", f"b{i}", dict(state["apis"]["a0"], name=f"b{i}", urlPattern=f"/b{i}"))
            for i in range(15)
        ]
        self.successResultOf(store.commit(more, 1))
        self.assertEqual(settled, [0, 20])
        service.stopService()


# -- proxy registry records ---------------------------------------------------------


class DescribeTests(SynchronousTestCase):
    def status(self, apis: int) -> GatewayStatus:
        clock = Clock()
        manager = SnapshotManager(FilterRegistry.fromPlugins(), clock)
        manager.apply(StoreState(3, resources(apis)))
        counters = Stats(clock)
        counters.follow(manager)
        served = ServedRevisions()
        served.serving(0, 3)
        served.serving(1, 3)
        status = GatewayStatus(
            clock, NoProxyConfig(), manager, counters, ReadyStore(), served, pool=TwoWorkers()
        )
        for index in (0, 1):
            worker = Stats(clock)
            worker.follow(manager)
            report = StatsReport(worker, manager)
            status.workerReported(index, report())
            status.workerReported(index, report())
        return status

    def test_sizeDoesNotGrow(self) -> None:
        """
        A proxy's registry record (written to etcd whenever the revision
        it serves changes) holds the stats' totals only: it weighs the
        same with 5 APIs as with 500 (where every API's stats of two
        workers once made it megabytes, more than etcd takes).
        """
        small, large = self.status(5).describe(), self.status(500).describe()
        self.assertEqual(len(json.dumps(small)), len(json.dumps(large)))
        self.assertEqual(set(large["stats"]), {"totals"})
        self.assertEqual(large["revision"], 3)
        self.assertEqual([w["revision"] for w in large["workers"]], [3, 3])

    def test_workersMerged(self) -> None:
        """
        The gateway's stats are its workers' reports put together: every
        API of each, whole and delta reports alike.
        """
        stats = self.status(30).stats()
        self.assertEqual(len(stats["apis"]), 30)
        self.assertEqual(len(stats["proxies"]), 2)


# -- the etcd store's loads ---------------------------------------------------------


class EtcdLoadTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.etcd = FakeEtcd(self.clock)
        self.client = FakeEtcdClient(self.etcd)
        self.ranges: List[Any] = []
        range = self.client.range

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.ranges.append(args)
            return range(*args, **kwargs)

        self.client.range = counted  # type: ignore[method-assign]
        self.store = EtcdStore(self.client, "/gw", self.clock)
        self.other = EtcdStore(FakeEtcdClient(self.etcd), "/gw", self.clock)
        state = resources(3)
        changes = [Change(k, n, v) for k, items in state.items() for n, v in items.items()]
        self.successResultOf(self.other.commit(changes, 0))

    def test_fromTheWatch(self) -> None:
        """
        While the store follows etcd and nothing changed since, a load is
        the state the watch followed, the very object (its JSON objects
        known by identity), without reading every resource again.
        """
        watched: List[StoreState] = []
        self.store.watch(watched.append)
        self.clock.advance(0)
        reads = len(self.ranges)
        loaded = self.successResultOf(self.store.load())
        self.assertIs(loaded, watched[-1])
        self.assertEqual(len(self.ranges), reads)

    def test_changedSince(self) -> None:
        """
        When another gateway committed since (even before the watch told),
        the load reads etcd and sees the change.
        """
        self.store.watch(lambda state: None)
        self.clock.advance(0)
        base = self.successResultOf(self.other.load()).revision
        api = {"name": "new", "urlPattern": "/new", "nodes": [{"cluster": "c"}]}
        self.successResultOf(self.other.commit([Change("apis", "new", api)], base))
        loaded = self.successResultOf(self.store.load())
        self.assertEqual(loaded.get("apis", "new"), api)

    def test_notFollowing(self) -> None:
        """
        A store that does not follow etcd reads every resource.
        """
        self.successResultOf(self.store.load())
        self.assertEqual(len(self.ranges), 1)


# -- the file store's text --------------------------------------------------------


class StoreTextTests(SynchronousTestCase):
    def test_incremental(self) -> None:
        """
        Rendered from the previous text and a commit's changes, the file
        is the same as rendered whole, commit after commit; a render whose
        write failed (not kept) leaves the next one rendered from the last
        kept.
        """
        text = StoreText()
        state = StoreState(1, resources(4))
        content, keep = text.render(state, None)
        keep()
        self.assertEqual(content, dumpStoreState(state))
        steps = [
            [Change("apis", "a1", None)],
            [Change("apis", "a9", {"name": "a9"}), Change("servers", "s1", {"name": "s1", "w": 2})],
            [Change("routings", "r", {"name": "r"})],
        ]
        for i, changes in enumerate(steps):
            new = state.withChanges(changes, state.revision + 1)
            content, keep = text.render(new, changes)
            self.assertEqual(content, dumpStoreState(new))
            if i != 1:
                keep()
                state = new
        json.loads(content)

    def test_oneLineEach(self) -> None:
        """
        Each resource is on a line of its own, so that a change is a
        one-line diff.
        """
        content = dumpStoreState(StoreState(2, resources(3))).decode()
        lines = [line.strip() for line in content.splitlines()]
        self.assertIn(
            '"a1": {"name": "a1", "nodes": [{"cluster": "c"}], "urlPattern": "/a1"},', lines
        )


# -- the catalog parser ------------------------------------------------------------


class CatalogParserTests(SynchronousTestCase):
    def test_stateKnownByIdentity(self) -> None:
        """
        Parsing a store state's resources again (the admin reading the
        state its proxy compiled) gives the same catalog at once; a plain
        mapping, which could have changed in place, is parsed again.
        """
        parser = CatalogParser()
        state = StoreState(1, resources(3))
        self.assertIsInstance(state.resources, MappingProxyType)
        catalog = parser.parse(state.resources)
        self.assertIs(parser.parse(state.resources), catalog)
        plain = resources(3)
        self.assertIsNot(parser.parse(plain), parser.parse(plain))
        changed = state.withChanges([Change("apis", "a1", None)], 2)
        after = parser.parse(changed.resources)
        self.assertEqual(sorted(after.apis), ["a0", "a2"])
        self.assertIs(after.apis["a0"], catalog.apis["a0"])


# -- the benchmark's configuration ----------------------------------------------------


class GenerateTests(SynchronousTestCase):
    def test_valid(self) -> None:
        """
        The configuration C{bench/scale.py} generates is one the gateway
        takes (every resource valid, every reference resolved, no route
        conflict, every API compiling), of the sizes it says, and each
        API's probe path is one it matches.
        """
        data = scale.generate(300, "127.0.0.1:9")
        self.assertEqual(
            {kind: len(items) for kind, items in data.items()},
            {"servers": 30, "clusters": 30, "consumers": 3, "apis": 300, "routings": 0},
        )
        resourceFile = parseResourceFile(data, "generated")
        errors, _ = checkResources(resourceFile.resources, resourceFile.label, resourceFile.parsed)
        self.assertEqual(errors, [])
        manager = SnapshotManager(FilterRegistry.fromPlugins(), Clock())
        snapshot = manager.apply(StoreState(1, resourceFile.resources))
        for api in data["apis"]:
            method = "GET" if api["method"] == "*" else api["method"]
            match = snapshot.match(method, api.get("host"), scale.probePath(api))
            self.assertEqual(match.value.name if match else None, api["name"])
        self.assertEqual(len(scale.generate(2000, "127.0.0.1:9")["routings"]), 2)
