"""
The fleet's limits as a gateway puts them together: the C{limits:} section
of the config file (L{gateway.model.sharedlimits}), the services of
L{gateway.process.fleetlimits}, the count of live gateways relayed to the
workers, and the limits in the stats and C{/metrics}.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List

from prometheus_client.exposition import generate_latest
from test_process import abortFor, gatewayConfig
from test_relay import PoolReactor, sent
from twisted.internet import task
from twisted.internet.defer import Deferred, succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from gateway.filters import FilterRegistry
from gateway.model.config import ConfigError, parseConfig
from gateway.model.sharedlimits import RedisTarget, parseRedisURL, redactedURL
from gateway.process import root
from gateway.process.fleetlimits import GatewayCounter
from gateway.process.parent import ParentLink
from gateway.process.pool import WorkerPool
from gateway.process.root import WorkerRole, makeService
from gateway.protection.ratelimit import LOCAL
from gateway.protection.redisbuckets import RedisBuckets
from gateway.routing.snapshot import SnapshotManager
from gateway.store.relayed import RelayedStore
from gateway.telemetry.metrics import metricsRegistry
from gateway.telemetry.stats import SnapshotStats, Stats, mergeSnapshots

LIMITS = {"store": "redis://127.0.0.1:6379/0", "onFailure": "closed"}


class RedisURLTests(SynchronousTestCase):
    """
    L{parseRedisURL}: one server, several, Sentinels.
    """

    def test_one(self) -> None:
        """
        Host, port and database; the port defaults to 6379, the database
        to 0; credentials are URL-decoded.
        """
        self.assertEqual(
            parseRedisURL("redis://:p%2Fw@cache:6380/2"),
            RedisTarget((("cache", 6380),), db=2, password="p/w"),
        )
        self.assertEqual(parseRedisURL("redis://cache"), RedisTarget((("cache", 6379),)))
        self.assertEqual(
            parseRedisURL("redis://u:pw@[::1]:7000/0"),
            RedisTarget((("::1", 7000),), username="u", password="pw"),
        )

    def test_several(self) -> None:
        """
        Several servers, comma-separated, are tried in order.
        """
        self.assertEqual(
            parseRedisURL("redis://a:6379,b:6380/1").endpoints, (("a", 6379), ("b", 6380))
        )

    def test_sentinel(self) -> None:
        """
        C{redis+sentinel://} names Sentinels (port 26379 by default) and the
        master's name.
        """
        self.assertEqual(
            parseRedisURL("redis+sentinel://s1,s2:26380/mymaster/3"),
            RedisTarget((("s1", 26379), ("s2", 26380)), db=3, sentinel="mymaster"),
        )

    def test_errors(self) -> None:
        """
        What is wrong is said.
        """
        for url, words in [
            ("http://x", "not a Redis URL"),
            ("redis://", "names no host"),
            ("redis://h:99999", "not a port number"),
            ("redis://h:6379/x", "not a number"),
            ("redis://h/0/1", "the path is /DB"),
            ("redis+sentinel://h:26379", "names no master"),
            ("redis://h?db=1", "no query"),
        ]:
            with self.assertRaises(ValueError) as caught:
                parseRedisURL(url)
            self.assertIn(words, str(caught.exception), url)

    def test_redacted(self) -> None:
        """
        The password never shows.
        """
        self.assertEqual(redactedURL("redis://u:secret@h:1/0"), "redis://u:***@h:1/0")
        self.assertEqual(redactedURL("redis://:secret@h:1/0"), "redis://:***@h:1/0")
        self.assertEqual(redactedURL("redis://h:1/0"), "redis://h:1/0")


class LimitsConfigTests(SynchronousTestCase):
    """
    The C{limits:} section.
    """

    def test_defaults(self) -> None:
        """
        Only C{store} is needed: C{local} while Redis is away, a 5 ms
        deadline, the live gateways counted.
        """
        config = parseConfig(gatewayConfig(limits={"store": "redis://127.0.0.1:6379/0"}))
        assert config.limits is not None
        self.assertEqual(config.limits.onFailure, "local")
        self.assertEqual(config.limits.timeout, 0.005)
        self.assertIsNone(config.limits.gateways)

    def test_absent(self) -> None:
        """
        Without the section there are no fleet limits.
        """
        self.assertIsNone(parseConfig(gatewayConfig()).limits)

    def test_errorsNameTheKey(self) -> None:
        """
        A bad value is refused, naming its key.
        """
        for limits, key in [
            ({"store": "memcached://x"}, "limits.store"),
            ({"store": "redis://x", "onFailure": "maybe"}, "limits.onFailure"),
            ({"store": "redis://x", "gateways": 0}, "limits.gateways"),
            ({"store": "redis://x", "timeout": 0}, "limits.timeout"),
            ({"onFailure": "open"}, "limits.store"),
            ({"store": "redis://x", "typo": 1}, "limits.typo"),
        ]:
            with self.assertRaises(ConfigError) as caught:
                parseConfig(gatewayConfig(limits=limits))
            self.assertEqual(caught.exception.key, key, limits)


class WiringTests(SynchronousTestCase):
    """
    L{makeService}: the fleet's limits in the process that runs a proxy,
    and nothing without C{limits:}.
    """

    def make(self, config: Dict[str, Any], **kwargs: Any) -> Any:
        reactor = MemoryReactorClock()
        return makeService(
            parseConfig(config), reactor, FilterRegistry.fromPlugins(), abortFor(reactor), **kwargs
        )

    def managerOf(self, service: Any) -> SnapshotManager:
        return service.getServiceNamed("store")._manager  # type: ignore[no-any-return]

    def test_oneProcess(self) -> None:
        """
        A gateway that serves its proxy itself makes the limits' buckets on
        Redis, as a service of its own.
        """
        service = self.make(gatewayConfig(limits=LIMITS))
        fleet = service.getServiceNamed("fleet-limits")
        self.assertIsInstance(fleet.buckets, RedisBuckets)
        self.assertEqual(fleet.buckets.onFailure, "closed")
        self.assertIs(self.managerOf(service)._buckets, fleet.buckets)

    def test_without(self) -> None:
        """
        Without C{limits:} nothing of it is made.
        """
        service = self.make(gatewayConfig())
        self.assertNotIn("fleet-limits", [s.name for s in service])
        self.assertIs(self.managerOf(service)._buckets, LOCAL)

    def test_worker(self) -> None:
        """
        A worker makes its own client and buckets, with the workers' shared
        memory as its local fallback.
        """
        self.patch(root, "reusePortEndpoint", lambda reactor, description: None)
        service = self.make(gatewayConfig(limits=LIMITS), worker=WorkerRole(0, 3, None))
        fleet = service.getServiceNamed("fleet-limits")
        self.assertIs(self.managerOf(service)._buckets, fleet.buckets)
        self.assertIs(fleet.buckets._local, LOCAL)

    def test_parentOfWorkers(self) -> None:
        """
        A gateway with workers makes none (its workers do), and counts the
        live gateways when its store is shared.
        """
        config = gatewayConfig(
            limits=LIMITS,
            store="etcd://127.0.0.1:1/gw",
            proxy={"listen": "tcp:18080:interface=127.0.0.1", "workers": 2},
        )
        service = self.make(config)
        names = [s.name for s in service]
        self.assertNotIn("fleet-limits", names)
        self.assertIn("gateway-counter", names)
        config["limits"] = dict(LIMITS, gateways=3)
        self.assertNotIn("gateway-counter", [s.name for s in self.make(config)])


class GatewayCountTests(SynchronousTestCase):
    """
    The live gateways: counted in the registry, relayed to the workers.
    """

    def test_counter(self) -> None:
        """
        The registry is read every interval; a change of count is said
        (at least 1), the same count is not said again; stopping stops.
        """

        class Registry:
            records: List[Any] = []

            def listProxies(self) -> Deferred:
                return succeed(list(self.records))

        registry = Registry()
        clock = task.Clock()
        counts: List[int] = []
        counter = GatewayCounter(registry, clock, counts.append, interval=2.0)
        counter.startService()
        clock.advance(0)
        registry.records = [{"addr": "a"}, {"addr": "b"}]
        clock.advance(2.0)
        clock.advance(2.0)
        registry.records = [{"addr": "a"}]
        clock.advance(2.0)
        self.assertEqual(counts, [1, 2, 1])
        counter.stopService()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_broadcastToWorkers(self) -> None:
        """
        The pool tells every worker, and every worker started later.
        """
        reactor = PoolReactor()
        pool = WorkerPool(reactor, 2, ["python", "-m", "worker"])
        pool.startService()
        self.addCleanup(pool.stopService)
        pool.broadcast({"gateways": 3})
        for index in (0, 1):
            self.assertEqual(sent(reactor.channels[index][1]), [{"gateways": 3}])
        from twisted.internet.error import ProcessTerminated
        from twisted.python.failure import Failure

        reactor.spawned[1].processEnded(Failure(ProcessTerminated(signal=9)))
        reactor.advance(pool.maxRestartDelay)
        self.assertIn({"gateways": 3}, sent(reactor.channels[2][1]))

    def test_workerTakesTheCount(self) -> None:
        """
        A worker's link to its parent gives the count to its limits.
        """
        reactor = PoolReactor()
        reactor.running = True
        counts: List[int] = []
        link = ParentLink(
            reactor,
            3,
            RelayedStore(),
            SnapshotManager(FilterRegistry({}), reactor),
            stats=lambda: {},
            onGateways=counts.append,
        )
        link.startService()
        self.addCleanup(link.stopService)
        protocol, _ = reactor.channels[0]
        protocol.dataReceived(b'{"gateways":4}\n{"gateways":"x"}\n{"gateways":0}\n')
        self.assertEqual(counts, [4])


class _Limits:
    def __init__(self, mode: str) -> None:
        self.mode = mode

    def snapshot(self) -> Dict[str, Any]:
        return {
            "store": "redis://h:1/0",
            "onFailure": "local",
            "mode": self.mode,
            "modes": {m: int(m == self.mode) for m in ("shared", "local", "open", "closed")},
            "since": 5.0,
            "gateways": 2,
            "switches": {"shared": 1, "local": 1, "open": 0, "closed": 0},
            "redis": "up" if self.mode == "shared" else "down",
            "calls": 10,
            "timeouts": 1,
            "errors": 0,
            "leases": 2,
        }


class StatsTests(SynchronousTestCase):
    """
    The fleet's limits in the stats, merged over workers, and in
    C{/metrics}.
    """

    def test_snapshotAndMerge(self) -> None:
        """
        A proxy's stats carry its limits; the sum over workers counts the
        processes per mode and says the fallback mode while any is in it.
        """
        clock = task.Clock()
        one, two = Stats(clock), Stats(clock)
        one.limits, two.limits = _Limits("shared"), _Limits("local")
        snapshots = [one.snapshot(), two.snapshot()]
        self.assertEqual(snapshots[0]["limits"]["mode"], "shared")
        merged = mergeSnapshots(snapshots)["limits"]
        self.assertEqual(merged["mode"], "local")
        self.assertEqual(merged["modes"], {"shared": 1, "local": 1, "open": 0, "closed": 0})
        self.assertEqual(merged["switches"]["local"], 2)
        self.assertEqual(merged["redis"], "down")
        self.assertEqual(merged["calls"], 20)
        self.assertNotIn("limits", Stats(clock).snapshot())
        json.dumps(merged)

    def test_metrics(self) -> None:
        """
        C{/metrics} has the processes per mode, the switches, the live
        gateways and the Redis calls, from one proxy or from the workers'
        merged stats; nothing of it without fleet limits.
        """
        clock = task.Clock()
        stats = Stats(clock)
        stats.limits = _Limits("shared")
        text = generate_latest(metricsRegistry(stats, None, None, clock)).decode()
        self.assertIn('gateway_limits_mode{mode="shared"} 1.0', text)
        self.assertIn('gateway_limits_switches_total{mode="local"} 1.0', text)
        self.assertIn("gateway_limits_gateways 2.0", text)
        self.assertIn("gateway_limits_redis_timeouts_total 1.0", text)
        merged = mergeSnapshots([stats.snapshot(), stats.snapshot()])
        text = generate_latest(
            metricsRegistry(SnapshotStats(lambda: merged, clock), None, None, clock)
        ).decode()
        self.assertIn('gateway_limits_mode{mode="shared"} 2.0', text)
        plain = generate_latest(metricsRegistry(Stats(clock), None, None, clock)).decode()
        self.assertNotIn("gateway_limits", plain)
