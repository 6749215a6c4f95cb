"""
The response cache of a fleet: the Redis store (L{gateway.cache.redisstore})
on a fake Redis (L{fakeredis}) shared by two proxies, Redis away or slow,
purges by generation, the purges followed by memory stores
(L{gateway.cache.purges}), relayed to workers
(L{gateway.process.pool}, L{gateway.process.parent}), the admin's purge
endpoint, its check of C{store: redis} without Redis, the config, and the
one Redis client of a process.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Tuple

from cachegateway import CacheGateway, ok
from fakeredis import FakeRedisServer
from test_admin_api import APITestCase
from test_cache import cachedAPI, status
from test_relay import PoolReactor, sent
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gateway.cache.purges import PurgeFollower
from gateway.cache.redisstore import RedisStore
from gateway.filters import FilterRegistry
from gateway.model.config import parseConfig
from gateway.model.sharedlimits import parseRedisURL
from gateway.process.parent import ParentLink
from gateway.process.pool import WorkerPool
from gateway.process.root import _adminValidate
from gateway.redis.client import RedisClient, RedisUnavailable
from gateway.routing.snapshot import SnapshotManager
from gateway.store import StoreState
from gateway.store.relayed import RelayedStore

TIMEOUT = 0.025


def redisFleet(count: int = 2) -> Tuple[List[CacheGateway], FakeRedisServer, Clock]:
    """
    @return: C{count} proxies with one Redis-cached API C{a}, each with its
        own started client on one fake Redis, on one clock.
    """
    clock = Clock()
    clock.advance(1_700_000_000.0)
    server = FakeRedisServer(clock)
    gateways = []
    for _ in range(count):
        client = RedisClient(
            parseRedisURL("redis://127.0.0.1:6379/0"),
            clock,
            timeout=0.005,
            connect=server.connect,
        )
        gw = CacheGateway(
            [cachedAPI({"ttl": 10, "store": "redis"})], redis=client, clock=clock, timeout=TIMEOUT
        )
        gw.backend.auto = ok()
        client.startService()
        gateways.append(gw)
    clock.advance(0)
    return gateways, server, clock


class RedisStoreTests(SynchronousTestCase):
    """
    Entries in Redis, shared by the gateways of a fleet.
    """

    def test_shared(self) -> None:
        """
        An entry stored through one gateway is a hit on the other, with
        its age; a request of the other's makes no backend call.
        """
        (one, two), server, clock = redisFleet()
        self.assertEqual(status(one.request("GET", "/a/x")), "gateway; fwd=uri-miss; stored")
        clock.advance(3)
        hit = two.request("GET", "/a/x")
        self.assertEqual((hit.body, status(hit)), (b"hello", "gateway; hit; ttl=7"))
        self.assertEqual(hit.header("age"), "3")
        self.assertEqual((len(one.backend.calls), len(two.backend.calls)), (1, 0))

    def test_vary(self) -> None:
        """
        Variants in Redis: each gateway learns the Vary names from what it
        finds (one more call the first time), and serves the variant of
        each request.
        """
        (one, two), server, clock = redisFleet()
        for gw in (one, two):
            gw.backend.auto = lambda call: call.answer(
                200, call.header(b"accept") or b"-", {b"vary": b"Accept"}
            )
        one.request("GET", "/a/x", [("Accept", "text/a")])
        one.request("GET", "/a/x", [("Accept", "text/b")])
        calls = len(server.commands)
        self.assertEqual(two.request("GET", "/a/x", [("Accept", "text/b")]).body, b"text/b")
        self.assertEqual(len(server.commands) - calls, 2)
        self.assertEqual(two.request("GET", "/a/x", [("Accept", "text/a")]).body, b"text/a")
        self.assertEqual(len(server.commands) - calls, 3)
        self.assertEqual(len(two.backend.calls), 0)
        miss = two.request("GET", "/a/x", [("Accept", "text/c")])
        self.assertEqual(status(miss), "gateway; fwd=vary-miss; stored")

    def test_expiresInRedis(self) -> None:
        """
        Entries carry a TTL in Redis: their lifetime, plus keepStale when
        they have a validator.
        """
        (one, _), server, clock = redisFleet()
        one.request("GET", "/a/x")
        one.backend.auto = ok(etag=b'"v"')
        one.request("GET", "/a/y")
        lives = sorted(round(when - clock.seconds()) for when in server.cache.expiry.values())
        self.assertEqual(lives, [10, 310])

    def test_unavailable(self) -> None:
        """
        With Redis gone, a request goes upstream at once, as a miss that
        says so, never an error; collapsing still holds in the process.
        """
        (one, _), server, clock = redisFleet()
        server.dropAll()
        server.refusing.add(("127.0.0.1", 6379))
        one.backend.auto = None
        clients = [one.send("GET", "/a/x") for _ in range(3)]
        self.assertEqual(len(one.backend.calls), 1)
        one.backend.calls[0].answer()
        answers = [c.answer() for c in clients]
        self.assertEqual([a.code for a in answers], [200] * 3)
        self.assertEqual(status(answers[0]), "gateway; fwd=miss; detail=redis-unavailable")
        self.assertEqual(
            status(answers[1]), "gateway; fwd=miss; collapsed; detail=redis-unavailable"
        )
        self.assertEqual(one.cache.snapshot()["apis"]["a"]["bypass"], 1)

    def test_slow(self) -> None:
        """
        A Redis that does not answer in time: the request waits no longer
        than the cache's timeout, then goes upstream.
        """
        (one, _), server, clock = redisFleet()
        server.hanging = True
        client = one.send("GET", "/a/x")
        clock.advance(TIMEOUT - 0.001)
        self.assertEqual(len(one.backend.calls), 0)
        clock.advance(0.002)
        clock.advance(0)
        self.assertEqual(status(client.answer()), "gateway; fwd=miss; detail=redis-timeout")
        server.release()

    def test_purge(self) -> None:
        """
        A purge in Redis (a new generation) hides the API's entries from
        every gateway at once, and an answer fetched before it is not
        stored after it.
        """
        (one, two), server, clock = redisFleet()
        one.request("GET", "/a/x")
        two.backend.auto = None
        inFlight = two.send("GET", "/a/y")
        store = RedisStore(one.cache.redis.client, TIMEOUT)  # type: ignore[union-attr]
        self.assertEqual(self.successResultOf(store.purge("a")), 1)
        two.backend.calls[0].answer()
        self.assertIn("stored", status(inFlight.answer()))
        two.backend.auto = ok()
        self.assertIn("fwd=uri-miss", status(two.request("GET", "/a/x")))
        self.assertIn("fwd=uri-miss", status(one.request("GET", "/a/y")))
        self.assertIn("hit", status(two.request("GET", "/a/x")))

    def test_noRedis(self) -> None:
        """
        A proxy without Redis bypasses a Redis-cached API (and says so).
        """
        gw = CacheGateway([cachedAPI({"ttl": 10, "store": "redis"})])
        gw.backend.auto = ok()
        for _ in range(2):
            self.assertEqual(
                status(gw.request("GET", "/a/x")), "gateway; fwd=miss; detail=no-redis"
            )
        self.assertEqual(len(gw.backend.calls), 2)


class PurgeFollowerTests(SynchronousTestCase):
    """
    L{PurgeFollower}: the memory entries of every gateway follow the
    fleet's purges in Redis.
    """

    def test_follows(self) -> None:
        """
        A purge made through another gateway drops this one's memory
        entries of the API within one poll; others stay.
        """
        (one, two), server, clock = redisFleet()
        api = cachedAPI({"ttl": 100})
        other = cachedAPI({"ttl": 100}, name="b", urlPattern="/b/*")
        one.apply([api, other])
        follower = PurgeFollower(one.cache, clock, 0.5)
        follower.startService()
        self.addCleanup(follower.stopService)
        clock.advance(0)
        one.request("GET", "/a/x")
        one.request("GET", "/b/x")
        store = RedisStore(two.cache.redis.client, TIMEOUT)  # type: ignore[union-attr]
        store.purge("a")
        self.assertIn("hit", status(one.request("GET", "/a/x")))
        clock.advance(0.5)
        self.assertEqual(follower.purged, 1)
        self.assertIn("fwd=uri-miss", status(one.request("GET", "/a/x")))
        self.assertIn("hit", status(one.request("GET", "/b/x")))
        before = len(server.commands)
        clock.advance(0.5)
        self.assertEqual([c[0] for _, c in server.commands[before:]], [b"GET"])


class WorkerPurgeTests(SynchronousTestCase):
    """
    Purges relayed to the workers of a gateway, and confirmed.
    """

    def test_pool(self) -> None:
        """
        Every worker is told; the purge is done once each confirmed (the
        entries they dropped added), or, past the timeout, incomplete.
        """
        reactor = PoolReactor()
        pool = WorkerPool(reactor, 2, ["python", "-m", "worker"])
        pool.startService()
        self.addCleanup(pool.stopService)
        d = pool.purgeCache("a", 2.0)
        for index, (protocol, transport) in enumerate(reactor.channels):
            (message,) = [m for m in sent(transport) if "purge" in m]
            self.assertEqual(message["purge"]["api"], "a")
            self.assertNoResult(d)
            reply = {"purged": {"id": message["purge"]["id"], "entries": index + 2}}
            protocol.dataReceived(json.dumps(reply).encode() + b"\n")
        self.assertEqual(self.successResultOf(d), (5, 2, True))
        d = pool.purgeCache("a", 2.0)
        reactor.advance(2.0)
        self.assertEqual(self.successResultOf(d), (0, 0, False))

    def test_worker(self) -> None:
        """
        A worker drops the entries it is told to, and confirms with their
        count.
        """
        reactor = PoolReactor()
        reactor.running = True
        purged: List[str] = []

        def onPurge(api: str) -> int:
            purged.append(api)
            return 7

        link = ParentLink(
            reactor,
            3,
            RelayedStore(),
            SnapshotManager(FilterRegistry({}), reactor),
            stats=lambda: {},
            onPurge=onPurge,
        )
        link.startService()
        self.addCleanup(link.stopService)
        protocol, transport = reactor.channels[0]
        protocol.dataReceived(b'{"purge": {"api": "a", "id": 4}}\n')
        self.assertEqual(purged, ["a"])
        self.assertEqual(sent(transport), [{"purged": {"id": 4, "entries": 7}}])


class AdminPurgeTests(APITestCase):
    """
    C{DELETE /api/v1/apis/NAME/cache}.
    """

    def setUp(self) -> None:
        self.purged: List[str] = []
        self.answer: Any = None
        super().setUp()
        self.call("POST", "/servers", {"name": "s", "addr": "127.0.0.1:1"})
        self.call("POST", "/clusters", {"name": "c", "servers": ["s"]})
        self.call("POST", "/apis", cachedAPI({"ttl": 1}))

    def makeAPI(self, **kwargs: Any) -> Any:
        def purge(name: str) -> Deferred:
            self.purged.append(name)
            if isinstance(self.answer, Exception):
                return fail(self.answer)
            return succeed(self.answer)

        return super().makeAPI(purgeCache=purge, **kwargs)

    def test_purge(self) -> None:
        """
        The API's cache is purged; the answer says what was done.
        """
        self.answer = {"api": "a", "entries": 3, "processes": 2, "complete": True, "redis": False}
        code, headers, body = self.call("DELETE", "/apis/a/cache")
        self.assertEqual((code, body), (200, self.answer))
        self.assertEqual(self.purged, ["a"])

    def test_unknown(self) -> None:
        """
        An API that does not exist: 404, nothing purged.
        """
        code, _, body = self.call("DELETE", "/apis/nope/cache")
        self.assertEqual((code, body["field"]), (404, "name"))
        self.assertEqual(self.purged, [])

    def test_redisAway(self) -> None:
        """
        Redis does not take the purge: 503 saying what was and was not
        purged.
        """
        self.answer = RedisUnavailable("Redis is unavailable")
        code, _, body = self.call("DELETE", "/apis/a/cache")
        self.assertEqual(code, 503)
        self.assertIn("fleet's entries are not purged", body["error"])

    def test_token(self) -> None:
        """
        The admin token is needed.
        """
        code, _, _ = self.call("DELETE", "/apis/a/cache", token=None)
        self.assertEqual(code, 401)
        self.assertEqual(self.purged, [])


class SharedStoreCheckTests(SynchronousTestCase):
    """
    An admin without Redis refuses an API that caches in Redis.
    """

    def resources(self, store: str) -> Dict[str, Any]:
        return {
            "servers": {"s": {"name": "s", "addr": "127.0.0.1:1"}},
            "clusters": {"c": {"name": "c", "servers": ["s"]}},
            "apis": {"a": cachedAPI({"ttl": 1, "store": store})},
        }

    def test_refused(self) -> None:
        """
        Without limits.store, a new or changed API with store redis is
        refused, naming cache.store; memory is taken; an API served
        already as it is is not judged again; with limits.store, redis is
        taken.
        """
        from gateway.model.schema import ValidationError

        config = parseConfig({"admin": {"listen": "tcp:0:interface=127.0.0.1"}})
        manager = SnapshotManager(FilterRegistry({}), Clock())
        validate = _adminValidate(config, manager)
        catalog = manager.parser.parse(self.resources("redis"))
        error = self.assertRaises(ValidationError, validate, catalog)
        self.assertEqual(error.field, "apis/a:cache.store")
        validate(manager.parser.parse(self.resources("memory")))
        manager.apply(StoreState(1, self.resources("redis")))
        validate(manager.parser.parse(self.resources("redis")))
        withRedis = parseConfig(
            {
                "admin": {"listen": "tcp:0:interface=127.0.0.1"},
                "limits": {"store": "redis://127.0.0.1:6379/0"},
            }
        )
        fresh = SnapshotManager(FilterRegistry({}), Clock())
        _adminValidate(withRedis, fresh)(fresh.parser.parse(self.resources("redis")))


class ConfigTests(SynchronousTestCase):
    """
    C{proxy.cache}.
    """

    def test_defaults(self) -> None:
        """
        64 MiB of memory per proxy process, 25 ms for Redis, a poll every
        half second.
        """
        config = parseConfig({"proxy": {"listen": "tcp:8080"}})
        assert config.proxy is not None
        settings = config.proxy.cache
        self.assertEqual(
            (settings.memoryBytes, settings.timeout, settings.purgePoll), (64 << 20, 0.025, 0.5)
        )

    def test_invalid(self) -> None:
        """
        Out of bounds: refused, naming the key.
        """
        from gateway.model.config import ConfigError

        for cache, key in (
            ({"memoryBytes": -1}, "proxy.cache.memoryBytes"),
            ({"timeout": 0}, "proxy.cache.timeout"),
            ({"purgePoll": 0.001}, "proxy.cache.purgePoll"),
            ({"size": 1}, "proxy.cache.size"),
        ):
            error = self.assertRaises(
                ConfigError, parseConfig, {"proxy": {"listen": "tcp:8080", "cache": cache}}
            )
            self.assertEqual(error.key, key)


class OneClientTests(SynchronousTestCase):
    """
    One Redis client per process serves the limits and the cache.
    """

    def test_gatewayProcess(self) -> None:
        """
        A gateway process with limits.store and its proxy in itself has
        one client, service C{redis}, that its limits use; and the follower
        of the fleet's purges.
        """
        from gateway.process.root import makeService

        config = parseConfig(
            {
                "proxy": {"listen": "tcp:0:interface=127.0.0.1", "workers": 1},
                "store": "memory:",
                "limits": {"store": "redis://127.0.0.1:6379/0"},
            }
        )
        service = makeService(config, Clock(), FilterRegistry.fromPlugins(), lambda *a: None)  # type: ignore[arg-type]
        clients = [s for s in service if isinstance(s, RedisClient)]
        self.assertEqual(len(clients), 1)
        self.assertIs(service.getServiceNamed("fleet-limits").client, clients[0])
        self.assertNotIn(clients[0], list(service.getServiceNamed("fleet-limits")))
        service.getServiceNamed("cache-purges")
        names = [s.name for s in service]
        self.assertLess(names.index("redis"), names.index("fleet-limits"))


class CLITests(SynchronousTestCase):
    """
    C{gateway cache purge API}.
    """

    def purge(self, *outcomes: Any) -> Tuple[int, str, str, List[Any]]:
        from test_cli import FakeURLOpen, runInProcess

        from gateway.cli import main
        from gateway.cli.client import AdminClient

        urlopen = FakeURLOpen(*outcomes)
        self.patch(main, "_client", lambda args: AdminClient(args.admin, args.token, 10.0, urlopen))
        code, out, err = runInProcess(["cache", "purge", "users", "--token", "tok"])
        return code, out, err, urlopen.requests

    def test_purge(self) -> None:
        """
        The command asks the admin to purge the API's cache, and says what
        was purged, where.
        """
        from test_cli import FakeAnswer

        answer = {
            "api": "users",
            "entries": 12,
            "processes": 2,
            "complete": True,
            "redis": True,
            "generation": 3,
        }
        code, out, err, requests = self.purge(FakeAnswer(200, json.dumps(answer).encode()))
        self.assertEqual(code, 0, err)
        ((request, _),) = requests
        self.assertEqual(request.get_method(), "DELETE")
        self.assertEqual(request.full_url, "http://127.0.0.1:9090/api/v1/apis/users/cache")
        self.assertEqual(
            out.splitlines(),
            [
                "purged the cache of API 'users': 12 entries in memory in 2 proxy processes"
                " of http://127.0.0.1:9090",
                "and in Redis, for every gateway (generation 3); the memory of the other"
                " gateways follows within proxy.cache.purgePoll seconds",
            ],
        )

    def test_errors(self) -> None:
        """
        An unknown API, or Redis away: the admin's error, exit status 1.
        """
        from test_cli import httpError

        code, out, err, _ = self.purge(
            httpError(404, b'{"error": "api users does not exist", "field": "name"}')
        )
        self.assertEqual((code, out), (1, ""))
        self.assertIn("404 api users does not exist (field name)", err)
        code, out, err, _ = self.purge(httpError(503, b'{"error": "Redis did not take the purge"}'))
        self.assertEqual(code, 1)
        self.assertIn("503 Redis did not take the purge", err)

    def test_usage(self) -> None:
        """
        C{gateway cache} needs an action, and C{purge} an API.
        """
        from test_cli import runInProcess

        for argv in (["cache"], ["cache", "purge"], ["cache", "flush", "a"]):
            code, _, err = runInProcess(argv)
            self.assertEqual(code, 2, argv)
            self.assertIn("usage: gateway cache", err)
