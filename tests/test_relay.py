"""
Tests for the store states the gateway process relays to its workers:
L{gateway.store.relayed} (the states and their messages), the parent's side
(L{gateway.process.pool.WorkerPool}) and the worker's
(L{gateway.process.parent.ParentLink}), over memory transports.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionDone, ProcessTerminated
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gateway.filters import FilterRegistry
from gateway.interfaces import IStore
from gateway.process.parent import ParentLink
from gateway.process.pool import CANNOT_START, ControlChannel, WorkerPool, encodeMessage
from gateway.process.propagation import ServedRevisions
from gateway.process.status import GatewayStatus
from gateway.process.storeservice import StoreService
from gateway.routing.snapshot import SnapshotManager
from gateway.store import Change, StoreError, StoreState
from gateway.store.relayed import (
    RelayedStateError,
    RelayedStore,
    changesBetween,
    deltaMessage,
    fullMessage,
)
from gateway.telemetry.stats import Stats

S1 = {"name": "s1", "addr": "127.0.0.1:9001"}
S2 = {"name": "s2", "addr": "127.0.0.1:9002"}
C1 = {"name": "c1", "servers": ["s1"]}


def state(revision: int, **resources: Dict[str, Any]) -> StoreState:
    return StoreState(revision, resources)


def overJSON(message: Any) -> Any:
    """
    @return: C{message} as the other end of the channel reads it.
    """
    return json.loads(json.dumps(message))


class MessagesTests(SynchronousTestCase):
    """
    Tests for L{changesBetween}, L{fullMessage} and L{deltaMessage}.
    """

    def test_changes(self) -> None:
        """
        The changes between two states: puts for what is new or different,
        deletes for what is gone, nothing for what is the same.
        """
        old = state(1, servers={"s1": S1, "s2": S2}, clusters={"c1": C1})
        new = old.withChanges(
            [Change("servers", "s2", None), Change("servers", "s3", dict(S2, name="s3"))], 2
        )
        new = new.withChanges([Change("clusters", "c1", dict(C1))], 3)
        self.assertEqual(
            changesBetween(old, new),
            [Change("servers", "s3", dict(S2, name="s3")), Change("servers", "s2", None)],
        )

    def test_roundTrip(self) -> None:
        """
        A whole state, then a delta, through JSON, give the states sent.
        """
        store = RelayedStore()
        first = state(1, servers={"s1": S1})
        second = first.withChanges([Change("servers", "s2", S2)], 2)
        self.assertTrue(store.receive(overJSON(fullMessage(first))))
        self.assertEqual(store.state, first)
        self.assertTrue(store.receive(overJSON(deltaMessage(first, second))))
        self.assertEqual(store.state, second)


class RelayedStoreTests(SynchronousTestCase):
    """
    Tests for L{RelayedStore}.
    """

    def test_interface(self) -> None:
        """
        L{RelayedStore} provides L{IStore}.
        """
        self.assertTrue(verifyObject(IStore, RelayedStore()))

    def test_loadWaitsForTheFirstState(self) -> None:
        """
        A load before the first state waits for it; later loads answer the
        last state at once.
        """
        store = RelayedStore()
        loading = store.load()
        self.assertNoResult(loading)
        store.receive({"revision": 4, "resources": {"servers": {"s1": S1}}})
        self.assertEqual(self.successResultOf(loading).revision, 4)
        self.assertEqual(self.successResultOf(store.load()).revision, 4)

    def test_watch(self) -> None:
        """
        Watchers see every state received after they started watching;
        an older state than the one held is ignored.
        """
        store = RelayedStore()
        seen: List[int] = []
        stop = store.watch(lambda s: seen.append(s.revision))
        store.receive({"revision": 2, "resources": {}})
        store.receive({"revision": 1, "resources": {}})
        store.receive({"revision": 3, "base": 2, "changes": [["servers", "s1", S1]]})
        stop()
        store.receive({"revision": 4, "base": 3, "changes": []})
        self.assertEqual(seen, [2, 3])
        self.assertEqual(store.state.revision, 4)

    def test_deltaFromAnotherState(self) -> None:
        """
        A delta from a state the store does not hold is not taken: the
        store says so (the worker then asks for the whole state).
        """
        store = RelayedStore()
        self.assertFalse(store.receive({"revision": 2, "base": 1, "changes": []}))
        store.receive({"revision": 5, "resources": {}})
        self.assertFalse(store.receive({"revision": 7, "base": 6, "changes": []}))
        self.assertEqual(store.state.revision, 5)

    def test_garbled(self) -> None:
        """
        A message that is not a state is refused with
        L{RelayedStateError}, and changes nothing.
        """
        store = RelayedStore()
        store.receive({"revision": 1, "resources": {}})
        for message in (
            [],
            {"revision": "2", "resources": {}},
            {"revision": 2, "resources": {"widgets": {}}},
            {"revision": 2, "resources": {"servers": {"s1": 3}}},
            {"revision": 2, "base": 1, "changes": [["servers", "s1"]]},
            {"revision": 2, "base": 1, "changes": {}},
        ):
            self.assertRaises(RelayedStateError, store.receive, message)
        self.assertEqual(store.state.revision, 1)

    def test_readOnly(self) -> None:
        """
        Commits are refused.
        """
        self.failureResultOf(RelayedStore().commit([Change("servers", "s1", S1)], 0), StoreError)

    def test_close(self) -> None:
        """
        Closing fails a load still waiting, and the loads after it.
        """
        store = RelayedStore()
        loading = store.load()
        cancelled = store.load()
        cancelled.cancel()
        self.failureResultOf(cancelled, CancelledError)
        self.successResultOf(store.close())
        self.failureResultOf(loading, StoreError)
        self.failureResultOf(store.load(), StoreError)


class ControlChannelTests(SynchronousTestCase):
    """
    Tests for L{ControlChannel}: JSON objects, one per line.
    """

    def setUp(self) -> None:
        self.messages: List[Any] = []
        self.lost: List[bool] = []
        self.channel = ControlChannel(self.messages.append, lambda: self.lost.append(True))
        self.transport = StringTransport()
        self.channel.makeConnection(self.transport)

    def test_send(self) -> None:
        """
        A message goes out as one line of compact JSON.
        """
        self.channel.send({"serving": 3})
        self.channel.sendEncoded(encodeMessage({"resync": True}))
        self.assertEqual(self.transport.value(), b'{"serving":3}\n{"resync":true}\n')

    def test_pieces(self) -> None:
        """
        Lines arrive whole whatever the reads: several in one, one over
        many (a large state, in small reads), a garbled one skipped.
        """
        big = {"state": fullMessage(state(1, servers={f"s{i}": S1 for i in range(2000)}))}
        data = encodeMessage({"a": 1}) + b"\nnot json\n" + encodeMessage(big) + b"\n"
        data += encodeMessage({"b": 2}) + b"\n"
        for i in range(0, len(data), 1000):
            self.channel.dataReceived(data[i : i + 1000])
        self.assertEqual(self.messages, [{"a": 1}, overJSON(big), {"b": 2}])
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_tooLong(self) -> None:
        """
        A line longer than C{MAX_LENGTH} drops the channel.
        """
        self.channel.MAX_LENGTH = 10
        self.channel.dataReceived(b'{"a":"0123456789"')
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.messages, [])


class ProcessTransport:
    """
    The transport of a worker process spawned on L{PoolReactor}.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: List[str] = []

    def closeStdin(self) -> None:
        pass

    def signalProcess(self, signal: str) -> None:
        self.signals.append(signal)


class PoolReactor(MemoryReactorClock):
    """
    A memory reactor that spawns pretend processes and connects adopted
    control channels to memory transports.
    """

    def __init__(self) -> None:
        super().__init__()
        self.spawned: List[Any] = []
        self.channels: List[Any] = []

    def spawnProcess(self, protocol: Any, executable: str, args: Any, **kwargs: Any) -> Any:
        transport = ProcessTransport(1000 + len(self.spawned))
        protocol.makeConnection(transport)
        self.spawned.append(protocol)
        return transport

    def adoptStreamConnection(self, fd: int, family: Any, factory: Any) -> None:
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.channels.append((protocol, transport))


def sent(transport: StringTransport) -> List[Any]:
    """
    @return: the messages written to a channel's transport (and clears it).
    """
    lines = transport.value().split(b"\n")
    transport.clear()
    return [json.loads(line) for line in lines if line]


class PoolRelayTests(SynchronousTestCase):
    """
    The parent's side: L{WorkerPool} relays store states and keeps the
    revision each worker confirms.
    """

    def setUp(self) -> None:
        self.reactor = PoolReactor()
        self.served = ServedRevisions()
        self.pool = WorkerPool(self.reactor, 2, ["python", "-m", "worker"], served=self.served)
        self.pool.startService()
        self.addCleanup(self.pool.stopService)

    def channel(self, index: int) -> Any:
        return self.reactor.channels[index]

    def test_wholeThenChanges(self) -> None:
        """
        Each worker gets the whole first state, then only what changed.
        """
        first = state(1, servers={"s1": S1})
        second = first.withChanges([Change("servers", "s2", S2)], 2)
        self.pool.relay(first)
        self.pool.relay(second)
        for index in (0, 1):
            messages = sent(self.channel(index)[1])
            self.assertEqual(
                messages,
                [
                    overJSON({"state": fullMessage(first)}),
                    {"state": {"revision": 2, "base": 1, "changes": [["servers", "s2", S2]]}},
                ],
            )

    def test_olderStateNotRelayed(self) -> None:
        """
        A state older than the last one relayed is not sent.
        """
        self.pool.relay(state(3))
        self.pool.relay(state(2))
        self.assertEqual([m["state"]["revision"] for m in sent(self.channel(0)[1])], [3])

    def test_newWorkerGetsTheWholeState(self) -> None:
        """
        A worker started after a state was relayed gets the whole current
        state at once; a worker that asks (C{resync}) gets it again.
        """
        current = state(2, servers={"s1": S1, "s2": S2})
        self.pool.relay(state(1, servers={"s1": S1}))
        self.pool.relay(current)
        self.reactor.spawned[1].processEnded(Failure(ProcessTerminated(signal=9)))
        self.reactor.advance(self.pool.maxRestartDelay)
        self.assertEqual(len(self.reactor.channels), 3)
        protocol, transport = self.reactor.channels[2]
        whole = overJSON({"state": fullMessage(current)})
        self.assertEqual(sent(transport), [whole])
        protocol.dataReceived(b'{"resync":true}\n')
        self.assertEqual(sent(transport), [whole])

    def test_confirmations(self) -> None:
        """
        The revision each worker confirms is kept; a worker that ends, or
        whose channel is lost, leaves; lines still arriving from a worker
        that ended are ignored.
        """
        first, second = self.channel(0)[0], self.channel(1)[0]
        first.dataReceived(b'{"serving":3}\n')
        second.dataReceived(b'{"serving":2}\n{"stats":{"n":1}}\n')
        self.assertEqual(self.served.revisions(), {0: 3, 1: 2})
        self.assertEqual(self.pool.pids(), {0: 1000, 1: 1001})

        self.reactor.spawned[1].processEnded(Failure(ProcessTerminated(signal=9)))
        self.assertEqual(self.served.revisions(), {0: 3})
        second.dataReceived(b'{"serving":4}\n')
        self.assertEqual(self.served.revisions(), {0: 3})

        first.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.served.revisions(), {})


def ended(process: Any, exitCode: int) -> None:
    """
    End a pretend worker process with an exit status.
    """
    process.processEnded(Failure(ProcessTerminated(exitCode=exitCode)))


class PoolStartTests(SynchronousTestCase):
    """
    What L{WorkerPool} does with a worker that cannot start (it exits with
    L{CANNOT_START}) or crashes, before and after every worker has served
    once.
    """

    def setUp(self) -> None:
        self.reactor = PoolReactor()
        self.served = ServedRevisions()
        self.cannotStart: List[str] = []
        self.pool = WorkerPool(
            self.reactor,
            2,
            ["python", "-m", "worker"],
            served=self.served,
            onCannotStart=self.cannotStart.append,
        )
        self.pool.startService()
        self.addCleanup(self.pool.stopService)

    def serve(self, channel: int, revision: int = 1) -> None:
        self.reactor.channels[channel][0].dataReceived(encodeMessage({"serving": revision}) + b"\n")

    def test_cannotStartEndsTheStart(self) -> None:
        """
        A worker that cannot start while the gateway starts (the other one
        serves already) ends the gateway's start, naming the worker: it is
        not started again, nor is any other that ends afterwards.
        """
        self.serve(0)
        self.assertFalse(self.pool.started)
        ended(self.reactor.spawned[1], CANNOT_START)
        self.assertEqual(len(self.cannotStart), 1)
        self.assertIn("proxy worker 1", self.cannotStart[0])
        self.assertIn(str(CANNOT_START), self.cannotStart[0])
        self.assertTrue(self.pool.failed)
        ended(self.reactor.spawned[0], 1)
        self.reactor.advance(self.pool.maxRestartDelay * 2)
        self.assertEqual(len(self.reactor.spawned), 2)
        self.assertEqual(self.pool.restarts, 0)
        self.assertEqual(len(self.cannotStart), 1)

    def test_crashWhileStartingIsRestarted(self) -> None:
        """
        A worker that crashes (any other exit) while the gateway starts is
        started again after the back-off, as before: it does not end the
        start.
        """
        ended(self.reactor.spawned[0], 1)
        self.assertEqual(self.cannotStart, [])
        self.reactor.advance(self.pool.restartDelay * 2)
        self.assertEqual(len(self.reactor.spawned), 3)

    def test_cannotStartLaterIsRetried(self) -> None:
        """
        Once every worker served once, a worker that crashes and then
        cannot start (its port taken meanwhile) is started again, each
        time after a longer back-off, and is reported not serving until
        it serves again; the gateway does not stop.
        """
        self.serve(0)
        self.serve(1)
        self.assertTrue(self.pool.started)
        self.assertTrue(self.pool.serving(0))
        ended(self.reactor.spawned[0], 1)
        self.assertFalse(self.pool.serving(0))
        self.assertEqual(self.served.missing(), {0})
        self.reactor.advance(1.0)
        self.assertEqual(len(self.reactor.spawned), 3)
        ended(self.reactor.spawned[2], CANNOT_START)
        self.reactor.advance(1.9)
        self.assertEqual(len(self.reactor.spawned), 3)
        self.reactor.advance(0.1)
        self.assertEqual(len(self.reactor.spawned), 4)
        ended(self.reactor.spawned[3], CANNOT_START)
        self.reactor.advance(3.9)
        self.assertEqual(len(self.reactor.spawned), 4)
        self.reactor.advance(0.1)
        self.assertEqual(len(self.reactor.spawned), 5)
        self.assertEqual(self.cannotStart, [])
        self.assertFalse(self.pool.failed)
        self.assertEqual(self.served.missing(), {0})
        self.serve(4, 2)
        self.assertTrue(self.pool.serving(0))
        self.assertEqual(self.served.missing(), set())

    def test_workersAreExpected(self) -> None:
        """
        Every configured worker is expected to serve from the start: a
        wait for a revision holds until each serves it.
        """
        waiting = self.served.whenServed(1)
        self.serve(0)
        self.assertNoResult(waiting)
        self.serve(1)
        self.successResultOf(waiting)


class WorkerStatusTests(SynchronousTestCase):
    """
    L{GatewayStatus} with workers: ready once every configured worker
    served, then while one serves; C{/api/v1/proxies} lists each, serving
    or not.
    """

    def test_readyWhileAWorkerServes(self) -> None:
        """
        A gateway whose store is ready is not ready until every worker
        serves (its start); then it stays ready while one worker at least
        serves (another restarting), and is not when none does; its record
        lists every configured worker, with C{ready} false and no pid or
        revision for one that does not run.  Its readiness says which:
        C{starting}, C{ready}, or C{unavailable} once started.
        """

        class Store:
            ready = True

        class Config:
            proxy = None

        reactor = PoolReactor()
        served = ServedRevisions()
        pool = WorkerPool(reactor, 2, ["python", "-m", "worker"], served=served)
        pool.startService()
        self.addCleanup(pool.stopService)
        manager = SnapshotManager(FilterRegistry({}), reactor)
        status = GatewayStatus(
            reactor, Config(), manager, Stats(reactor), Store(), served, pool=pool
        )
        self.assertFalse(status.ready())
        self.assertEqual(status.readiness(), "starting")
        reactor.channels[0][0].dataReceived(b'{"serving":3}\n')
        self.assertFalse(status.ready())
        self.assertEqual(status.readiness(), "starting")
        reactor.channels[1][0].dataReceived(b'{"serving":3}\n')
        self.assertTrue(status.ready())
        self.assertEqual(status.readiness(), "ready")
        ended(reactor.spawned[1], 1)
        self.assertTrue(status.ready())
        record = status.describe()
        self.assertTrue(record["ready"])
        self.assertEqual(
            record["workers"],
            [
                {"worker": 0, "pid": 1000, "revision": 3, "ready": True},
                {"worker": 1, "pid": None, "revision": None, "ready": False},
            ],
        )
        ended(reactor.spawned[0], 1)
        self.assertFalse(status.ready())
        self.assertEqual(status.readiness(), "unavailable")


class PoolEndedTests(SynchronousTestCase):
    """
    L{WorkerPool} tells when a worker's process ended.
    """

    def test_onEnded(self) -> None:
        """
        C{onEnded} is called with the index of each worker whose process
        ended, once per process, before it is started again.
        """
        reactor = PoolReactor()
        told: List[int] = []
        pool = WorkerPool(reactor, 2, ["python", "-m", "worker"], onEnded=told.append)
        pool.startService()
        self.addCleanup(pool.stopService)
        ended(reactor.spawned[1], 1)
        self.assertEqual(told, [1])
        reactor.advance(pool.maxRestartDelay)
        self.assertEqual(len(reactor.spawned), 3)
        ended(reactor.spawned[2], 1)
        ended(reactor.spawned[0], 1)
        self.assertEqual(told, [1, 1, 0])


class ParentLinkTests(SynchronousTestCase):
    """
    The worker's side: L{ParentLink} feeds the relayed store, confirms
    what the worker serves, keeps the parent's health, reports stats.
    """

    def setUp(self) -> None:
        self.reactor = PoolReactor()
        self.reactor.running = True
        self.manager = SnapshotManager(FilterRegistry({}), self.reactor)
        self.store = RelayedStore()
        self.link = ParentLink(
            self.reactor, 3, self.store, self.manager, stats=lambda: {"requests": 5}
        )
        self.aborted: List[str] = []
        self.storeService = StoreService(
            self.store, self.manager, self.aborted.append, MemoryReactorClock()
        )
        self.link.startService()
        self.storeService.startService()
        self.protocol, self.transport = self.reactor.channels[0]

    def send(self, message: Any) -> None:
        self.protocol.dataReceived(json.dumps(message).encode() + b"\n")

    def test_confirmsWhatItServes(self) -> None:
        """
        Each state relayed is served, then confirmed with its revision.
        """
        first = state(1, servers={"s1": S1})
        self.send({"state": fullMessage(first)})
        self.assertEqual(self.manager.snapshot.revision, 1)
        self.assertEqual(sent(self.transport), [{"serving": 1}])
        self.send({"state": deltaMessage(first, first.withChanges([], 2))})
        self.assertEqual(sent(self.transport), [{"serving": 2}])
        self.assertTrue(self.storeService.ready)

    def test_confirmsOnceListening(self) -> None:
        """
        With C{listening}, no revision is confirmed before the proxy
        listens: then the one served at that time, and every later one.
        """
        self.link.stopService()
        listening: Deferred = Deferred()
        link = ParentLink(
            self.reactor,
            3,
            self.store,
            self.manager,
            stats=lambda: {},
            listening=lambda: listening,
        )
        link.startService()
        self.addCleanup(link.stopService)
        protocol, transport = self.reactor.channels[1]
        first = state(1, servers={"s1": S1})
        protocol.dataReceived(encodeMessage({"state": fullMessage(first)}) + b"\n")
        self.assertEqual(self.manager.snapshot.revision, 1)
        self.assertEqual(sent(transport), [])
        listening.callback(None)
        self.assertEqual(sent(transport), [{"serving": 1}])
        second = first.withChanges([], 2)
        protocol.dataReceived(encodeMessage({"state": deltaMessage(first, second)}) + b"\n")
        self.assertEqual(sent(transport), [{"serving": 2}])

    def test_resync(self) -> None:
        """
        A change from a state it does not hold, or a garbled state, makes
        the worker ask for the whole state.
        """
        self.send({"state": {"revision": 2, "base": 1, "changes": []}})
        self.assertEqual(sent(self.transport), [{"resync": True}])
        self.send({"state": {"revision": "x"}})
        self.assertEqual(sent(self.transport), [{"resync": True}])
        self.assertIsNone(self.manager.snapshot)

    def test_health(self) -> None:
        """
        The servers' health comes from the parent, and stays across
        snapshot swaps.
        """
        self.send({"state": fullMessage(state(1, servers={"s1": S1, "s2": S2}))})
        self.send({"health": {"s1": False, "s2": True}})
        self.assertEqual(self.manager.backends["s1"].healthy, False)
        self.send(
            {"state": fullMessage(state(2, servers={"s1": S1, "s2": S2}, clusters={"c1": C1}))}
        )
        self.assertEqual(self.manager.backends["s1"].healthy, False)
        self.assertEqual(self.manager.backends["s2"].healthy, True)

    def test_stats(self) -> None:
        """
        Stats are reported every C{statsInterval}, until it stops.
        """
        self.reactor.advance(1.0)
        self.assertEqual(sent(self.transport), [{"stats": {"requests": 5}}])
        self.reactor.advance(1.0)
        self.assertEqual(sent(self.transport), [{"stats": {"requests": 5}}])
        self.link.stopService()
        self.reactor.advance(5.0)
        self.assertEqual(sent(self.transport), [])

    def test_parentGone(self) -> None:
        """
        When the parent goes away, the worker stops.
        """
        self.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertTrue(self.reactor.hasStopped)
