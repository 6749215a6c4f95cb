"""
Tests for the composition root of a gateway process
(L{gateway.process.root}, L{gateway.process.tap.makeService}) and the small
services it is made of: L{gateway.process.startup}, L{gateway.process.listening},
L{gateway.process.storeservice}.
"""

from __future__ import annotations

import io
import json
import os
from typing import Any, Dict, List, Optional

import yaml
from twisted.application.service import IService, MultiService, Service
from twisted.internet import reactor as globalReactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gateway.filters import FilterRegistry
from gateway.interfaces import ISharedStore, IStore
from gateway.model.config import parseConfig
from gateway.process import interpreter, root, tap
from gateway.process.listening import ListenService, ProxyService
from gateway.process.root import WorkerRole, makeService
from gateway.process.sites import AdminSite, GatewaySite
from gateway.process.startup import Abort, ProcessService
from gateway.process.storeservice import StoreService
from gateway.routing.snapshot import SnapshotManager
from gateway.store import Change, StoreState
from gateway.store.etcd.client import EtcdClient
from gateway.store.etcd.store import EtcdStore
from gateway.store.file import FileStore
from gateway.store.relayed import RelayedStore

SERVER = {"name": "s1", "addr": "127.0.0.1:9001"}
CLUSTER = {"name": "c1", "servers": ["s1"]}
API = {"name": "a1", "urlPattern": "/a/*", "nodes": [{"cluster": "c1"}]}


def gatewayConfig(**extra: Any) -> Dict[str, Any]:
    """
    @return: a config with a proxy (in this process) and an admin on fixed
        loopback ports, a memory store and a small seed; C{extra} replaces
        keys.
    """
    config: Dict[str, Any] = {
        "proxy": {"listen": "tcp:18080:interface=127.0.0.1", "workers": 1, "accessLog": False},
        "admin": {"listen": "tcp:19090:interface=127.0.0.1", "token": "t"},
        "store": "memory:",
        "servers": [SERVER],
        "clusters": [CLUSTER],
        "apis": [API],
    }
    config.update(extra)
    return config


def childNames(service: MultiService) -> List[str]:
    return [child.name for child in service]


class Stderr(io.StringIO):
    """
    Where an L{Abort} under test writes.
    """


def abortFor(reactor: Any) -> Abort:
    return Abort(reactor, stderr=Stderr())


class OptionsMakeServiceTests(SynchronousTestCase):
    """
    C{twistd gateway}'s L{tap.makeService}, as magic-wormhole tests its own:
    parse options, make the service, look at it.
    """

    def setUp(self) -> None:
        # makeService tunes the process's collector: not the test runner's.
        self.patch(interpreter, "tuneGC", lambda: False)

    def options(self, config: Dict[str, Any]) -> tap.Options:
        path = self.mktemp() + ".yaml"
        with open(path, "w") as f:
            yaml.safe_dump(config, f)
        options = tap.Options()
        options.parseOptions(["--config", path])
        return options

    def test_oneProcess(self) -> None:
        """
        With the proxy in the gateway process, the service is a
        L{MultiService} of the SIGHUP notice, the store, the DNS discovery, the upstream
        client, the health checks, the admin and the proxy, in that order
        (the order they start in).
        """
        service = tap.makeService(self.options(gatewayConfig()))
        self.assertIsInstance(service, MultiService)
        self.assertEqual(
            childNames(service),
            ["hangup", "store", "discovery", "upstream", "health", "admin", "proxy"],
        )
        self.assertIsInstance(service.getServiceNamed("proxy").factory, GatewaySite)
        self.assertIsInstance(service.getServiceNamed("admin").factory, AdminSite)

    def test_workers(self) -> None:
        """
        With several workers, a C{workers} pool takes the proxy's place.
        """
        config = gatewayConfig(store="file:" + os.path.abspath(self.mktemp()))
        config["proxy"]["workers"] = 2
        service = tap.makeService(self.options(config))
        self.assertEqual(
            childNames(service),
            ["hangup", "store", "discovery", "upstream", "health", "admin", "workers"],
        )
        pool = service.getServiceNamed("workers")
        self.assertEqual((pool.count, pool.processes, pool.buckets), (2, {}, None))

    def test_sharedStore(self) -> None:
        """
        With an etcd store and a proxy, the proxy registry joins them:
        decided by the store providing L{ISharedStore}.
        """
        service = tap.makeService(self.options(gatewayConfig(store="etcd://127.0.0.1:1/gw")))
        self.assertEqual(
            childNames(service),
            [
                "hangup",
                "store",
                "discovery",
                "upstream",
                "health",
                "proxy-registry",
                "admin",
                "proxy",
            ],
        )
        self.assertTrue(ISharedStore.providedBy(service.getServiceNamed("store").store))

    def test_opensNothing(self) -> None:
        """
        Making the service reads no file (here the store's path is a
        directory: reading it would fail) and binds no port: the global
        reactor has no more readers than before.
        """
        store = os.path.abspath(self.mktemp())
        os.mkdir(store)
        readers = set(globalReactor.getReaders())
        service = tap.makeService(self.options(gatewayConfig(store="file:" + store)))
        self.assertEqual(set(globalReactor.getReaders()), readers)
        self.assertFalse(service.running)
        self.assertFalse(service.getServiceNamed("store").ready)


class MakeServiceTests(SynchronousTestCase):
    """
    L{makeService} on a memory reactor: what it builds, and that it only
    does anything once started.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.abort = abortFor(self.reactor)

    def make(self, config: Dict[str, Any], **kwargs: Any) -> ProcessService:
        return makeService(
            parseConfig(config), self.reactor, FilterRegistry.fromPlugins(), self.abort, **kwargs
        )

    def test_builtThenStarted(self) -> None:
        """
        Building binds nothing and loads nothing; starting the privileged
        part loads and seeds the store, then binds the admin and the proxy
        ports; stopping closes them.
        """
        service = self.make(gatewayConfig())
        self.assertEqual(self.reactor.tcpServers, [])
        store = service.getServiceNamed("store")
        self.assertIsNone(store.state)

        service.privilegedStartService()
        self.assertEqual([port for port, *_ in self.reactor.tcpServers], [19090, 18080])
        self.assertTrue(store.ready)
        self.assertEqual(sorted(store.state.resources["apis"]), ["a1"])
        service.startService()
        self.assertTrue(service.running)

        listening = [service.getServiceNamed(name) for name in ("admin", "proxy")]
        self.assertTrue(all(s.port is not None for s in listening))
        self.successResultOf(service.stopService())
        self.assertEqual([s.port for s in listening], [None, None])
        self.failureResultOf(store.store.load())

    def test_worker(self) -> None:
        """
        A worker is its SIGHUP notice (ignoring it), its link to the
        parent, a relayed store, the upstream client and the proxy; its
        proxy waits for the first state before it listens.
        """
        endpoints: List[Endpoint] = []

        def reusePortEndpoint(reactor: Any, description: str) -> Endpoint:
            self.assertEqual(description, "tcp:18080:interface=127.0.0.1")
            endpoints.append(Endpoint(Port()))
            return endpoints[-1]

        self.patch(root, "reusePortEndpoint", reusePortEndpoint)
        service = self.make(gatewayConfig(), worker=WorkerRole(0, 3, None))
        self.assertEqual(childNames(service), ["hangup", "parent", "store", "upstream", "proxy"])
        store = service.getServiceNamed("store")
        self.assertIsInstance(store.store, RelayedStore)
        # (Not the parent link: it would adopt descriptor 3.)
        store.privilegedStartService()
        service.getServiceNamed("proxy").privilegedStartService()
        self.assertEqual(endpoints[0].factories, [])
        store.store.receive({"revision": 3, "resources": {"servers": {"s1": SERVER}}})
        self.assertEqual(len(endpoints[0].factories), 1)
        self.assertEqual(self.abort.messages, [])

    def test_badStoreFile(self) -> None:
        """
        A store file that is not valid ends the start before any port is
        bound: L{SystemExit} with status 1, and a message naming the file.
        """
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("{not json")
        service = self.make(gatewayConfig(store="file:" + path))
        exit = self.assertRaises(SystemExit, service.privilegedStartService)
        self.assertEqual(exit.code, 1)
        self.assertEqual(self.reactor.tcpServers, [])
        [message] = self.abort.messages
        self.assertTrue(message.startswith("store: " + path), message)

    def test_portInUse(self) -> None:
        """
        A port that cannot be bound ends the start, naming the setting and
        the address.
        """

        def refuse(port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
            raise CannotListenError(interface, port, OSError(98, "Address already in use"))

        self.reactor.listenTCP = refuse  # type: ignore[method-assign]
        service = self.make(gatewayConfig())
        exit = self.assertRaises(SystemExit, service.privilegedStartService)
        self.assertEqual(exit.code, 1)
        self.assertEqual(len(self.abort.messages), 1)
        self.assertIn("admin.listen: cannot listen on 127.0.0.1:19090", self.abort.messages[0])
        self.assertIn("Address already in use", self.abort.messages[0])


class AbortTests(SynchronousTestCase):
    """
    Tests for L{Abort}.
    """

    def test_beforeTheReactorRuns(self) -> None:
        """
        Before the reactor runs, a failure is written and sets the status;
        the reactor is left alone (the start ends by L{SystemExit}).
        """
        reactor = MemoryReactorClock()
        stops: List[None] = []
        # (MemoryReactor.hasStopped starts true in some Twisted releases.)
        reactor.stop = lambda: stops.append(None)  # type: ignore[method-assign]
        stderr = Stderr()
        abort = Abort(reactor, stderr=stderr)
        abort("proxy.listen: cannot listen")
        self.assertEqual(abort.status, 1)
        self.assertEqual(stderr.getvalue(), "gateway: cannot start: proxy.listen: cannot listen\n")
        self.assertEqual(stops, [])

    def test_whileRunning(self) -> None:
        """
        While the reactor runs, a failure stops it and tells the entry
        point the status, once.
        """
        reactor = MemoryReactorClock()
        reactor.running = True
        statuses: List[int] = []
        abort = Abort(reactor, whenStopped=statuses.append, stderr=Stderr())
        abort("store: unreadable")
        abort("admin.listen: cannot listen")
        self.assertTrue(reactor.hasStopped)
        self.assertEqual(statuses, [1])
        self.assertEqual(abort.messages, ["store: unreadable", "admin.listen: cannot listen"])


class Recording(Service):
    """
    A service that records when it starts and stops, in a shared list.
    """

    def __init__(self, name: str, log: List[str], stopping: Optional[Deferred] = None) -> None:
        self.setName(name)
        self.log = log
        self.stopping = stopping

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self.log.append("privileged " + self.name)

    def stopService(self) -> Any:
        super().stopService()
        self.log.append("stop " + self.name)
        return self.stopping if self.stopping is not None else succeed(None)


class ProcessServiceTests(SynchronousTestCase):
    """
    Tests for L{ProcessService}.
    """

    def test_failFast(self) -> None:
        """
        A child that fails its start stops the privileged start there: the
        children after it do not start, and L{SystemExit} carries the
        status.
        """
        reactor = MemoryReactorClock()
        abort = abortFor(reactor)
        log: List[str] = []
        root = ProcessService(abort)

        class Failing(Recording):
            def privilegedStartService(self) -> None:
                super().privilegedStartService()
                abort("store: broken")

        Recording("first", log).setServiceParent(root)
        Failing("failing", log).setServiceParent(root)
        Recording("last", log).setServiceParent(root)
        exit = self.assertRaises(SystemExit, root.privilegedStartService)
        self.assertEqual(exit.code, 1)
        self.assertEqual(log, ["privileged first", "privileged failing"])

    def test_stopInOrder(self) -> None:
        """
        The children stop in the reverse order of their start, each once
        the one after it has stopped.
        """
        log: List[str] = []
        root = ProcessService(abortFor(MemoryReactorClock()))
        slow: Deferred = Deferred()
        Recording("store", log).setServiceParent(root)
        Recording("proxy", log, stopping=slow).setServiceParent(root)
        root.startService()
        stopped = root.stopService()
        self.assertEqual(log, ["stop proxy"])
        self.assertNoResult(stopped)
        slow.callback(None)
        self.assertEqual(log, ["stop proxy", "stop store"])
        self.successResultOf(stopped)


class Port:
    """
    A listening port that records that it was closed.
    """

    closed = False

    def stopListening(self) -> Any:
        self.closed = True
        return succeed(None)


class Endpoint:
    """
    A server endpoint whose C{listen} answers with what the test says.
    """

    def __init__(self, result: Any) -> None:
        self.result = result
        self.factories: List[Any] = []

    def listen(self, factory: Any) -> Deferred:
        self.factories.append(factory)
        if isinstance(self.result, Exception):
            d: Deferred = Deferred()
            d.errback(self.result)
            return d
        return succeed(self.result)


class ListenServiceTests(SynchronousTestCase):
    """
    Tests for L{ListenService} and L{ProxyService}.
    """

    def test_listensWhenPrivilegedStart(self) -> None:
        """
        It listens in C{privilegedStartService} (once: not again in
        C{startService}) and closes the port when it stops.
        """
        port = Port()
        endpoint = Endpoint(port)
        service = ListenService("admin", "admin.listen", endpoint, "factory", self.fail)
        service.privilegedStartService()
        service.startService()
        self.assertEqual(endpoint.factories, ["factory"])
        self.assertIs(service.port, port)
        self.successResultOf(service.stopService())
        self.assertTrue(port.closed)

    def test_cannotListen(self) -> None:
        """
        A port that cannot be bound is reported naming the setting.
        """
        messages: List[str] = []
        error = CannotListenError("127.0.0.1", 8080, OSError(98, "Address already in use"))
        service = ListenService("proxy", "proxy.listen", Endpoint(error), "f", messages.append)
        service.privilegedStartService()
        self.assertEqual(len(messages), 1)
        self.assertTrue(
            messages[0].startswith("proxy.listen: cannot listen on 127.0.0.1:8080"), messages
        )

    def test_after(self) -> None:
        """
        With C{after}, it listens once that fires; stopped before, it
        never listens.
        """
        ready: Deferred = Deferred()
        endpoint = Endpoint(Port())
        service = ListenService("proxy", "proxy.listen", endpoint, "f", self.fail, lambda: ready)
        service.startService()
        self.assertEqual(endpoint.factories, [])
        ready.callback(None)
        self.assertEqual(endpoint.factories, ["f"])

        never: Deferred = Deferred()
        other = ListenService("proxy", "proxy.listen", endpoint, "g", self.fail, lambda: never)
        other.startService()
        self.successResultOf(other.stopService())
        self.assertEqual(endpoint.factories, ["f"])

    def test_whenListening(self) -> None:
        """
        C{whenListening} fires with the port once it listens (at once when
        it does already), and never when the port cannot be bound.
        """
        ready: Deferred = Deferred()
        port = Port()
        service = ListenService(
            "proxy", "proxy.listen", Endpoint(port), "f", self.fail, lambda: ready
        )
        service.startService()
        waiting = service.whenListening()
        self.assertNoResult(waiting)
        ready.callback(None)
        self.assertIs(self.successResultOf(waiting), port)
        self.assertIs(self.successResultOf(service.whenListening()), port)

        error = CannotListenError("127.0.0.1", 8080, OSError(98, "Address already in use"))
        failing = ListenService("proxy", "proxy.listen", Endpoint(error), "f", lambda m: None)
        never = failing.whenListening()
        failing.startService()
        self.assertNoResult(never)

    def test_proxyDrains(self) -> None:
        """
        The proxy, stopping, closes its port, then waits for the requests
        in flight (up to C{drainTimeout}).
        """

        class Resource:
            draining: List[float] = []
            done: Deferred = Deferred()

            def drain(self, timeout: float) -> Deferred:
                self.draining.append(timeout)
                return self.done

        port = Port()
        resource = Resource()
        service = ProxyService(
            "proxy",
            "proxy.listen",
            Endpoint(port),
            "f",
            self.fail,
            resource=resource,
            drainTimeout=7.0,
        )
        service.privilegedStartService()
        stopped = service.stopService()
        self.assertTrue(port.closed)
        self.assertEqual(resource.draining, [7.0])
        self.assertNoResult(stopped)
        resource.done.callback(0)
        self.successResultOf(stopped)


class StoreServiceTests(SynchronousTestCase):
    """
    Tests for L{StoreService}.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.manager = SnapshotManager(FilterRegistry({}), self.reactor)
        self.messages: List[str] = []
        self.relayed: List[StoreState] = []

    def seed(self) -> Dict[str, Any]:
        return dict(parseConfig(gatewayConfig()).seed)

    def test_loadsSeedsAndFollows(self) -> None:
        """
        Started, it loads the store, commits the seed it lacks, serves the
        result, relays every state, and follows the commits made later;
        stopped, it closes the store.
        """
        store = FileStore(None)
        service = StoreService(
            store,
            self.manager,
            self.messages.append,
            self.reactor,
            self.seed(),
            self.relayed.append,
        )
        ready = service.whenReady()
        self.assertNoResult(ready)
        service.privilegedStartService()
        self.successResultOf(ready)
        self.assertTrue(service.ready)
        self.assertEqual(self.manager.snapshot.revision, 1)
        self.assertEqual([s.revision for s in self.relayed], [1])

        state = self.successResultOf(store.load())
        self.successResultOf(store.commit([], state.revision))
        self.assertEqual(self.manager.snapshot.revision, 2)
        self.assertEqual([s.revision for s in self.relayed], [1, 2])
        self.successResultOf(service.stopService())
        self.failureResultOf(store.load())
        self.assertEqual(self.messages, [])

    def test_storeOwnResourcesWin(self) -> None:
        """
        A seed resource the store has already is left as the store has it.
        """
        store = FileStore(None)
        changed = dict(SERVER, addr="127.0.0.1:9999")
        self.successResultOf(store.commit([Change("servers", "s1", changed)], 0))
        StoreService(
            store, self.manager, self.messages.append, self.reactor, self.seed()
        ).startService()
        self.assertEqual(self.manager.backends["s1"].port, 9999)

    def test_unreadable(self) -> None:
        """
        A store that cannot be read aborts the start with a message naming
        C{store} and the file.
        """
        path = os.path.abspath(self.mktemp())
        os.mkdir(path)
        service = StoreService(FileStore(path), self.manager, self.messages.append, self.reactor)
        service.privilegedStartService()
        self.assertEqual(len(self.messages), 1)
        self.assertTrue(self.messages[0].startswith(f"store: {path}: cannot read"))
        self.assertFalse(service.ready)

    def test_seedDoesNotCompile(self) -> None:
        """
        A seed that conflicts with what the store holds (two APIs on one
        route) aborts the start, naming the resource at fault.
        """
        store = FileStore(None)
        other = dict(API, name="other")
        self.successResultOf(
            store.commit(
                [
                    Change("servers", "s1", SERVER),
                    Change("clusters", "c1", CLUSTER),
                    Change("apis", "other", json.loads(json.dumps(other))),
                ],
                0,
            )
        )
        service = StoreService(store, self.manager, self.messages.append, self.reactor, self.seed())
        service.startService()
        self.assertEqual(len(self.messages), 1)
        self.assertIn("a1", self.messages[0])
        self.assertEqual(sorted(self.successResultOf(store.load()).resources["apis"]), ["other"])


class InterfaceTests(SynchronousTestCase):
    """
    The stores provide the interfaces they say.
    """

    def test_etcdIsShared(self) -> None:
        """
        L{EtcdStore} provides L{ISharedStore} (and so L{IStore}); the file
        store provides L{IStore} only.
        """
        reactor = MemoryReactorClock()
        etcd = EtcdStore(EtcdClient(["127.0.0.1:1"], reactor=reactor), "/gw", reactor=reactor)
        self.assertTrue(verifyObject(ISharedStore, etcd))
        self.assertTrue(verifyObject(IStore, FileStore(None)))
        self.assertFalse(ISharedStore.providedBy(FileStore(None)))
        registry = etcd.proxyRegistry("127.0.0.1:1", "1.0", "now", lambda: {"ready": True})
        self.assertTrue(verifyObject(IService, registry))
        self.assertEqual(registry.name, "proxy-registry")
