"""
Tests for seeding the store from the config file in
L{gateway.process.service.GatewayService}, with a store that answers later
(as etcd does): the seed either lands whole or stops the start, with a
message and a non-zero exit status, never silently.
"""

from __future__ import annotations

from typing import Any, Dict, List

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from gateway.filters import FilterRegistry
from gateway.model.config import parseConfig
from gateway.process import service as serviceModule
from gateway.process.service import GatewayService, _resultNow
from gateway.store import ConflictError, StoreError, StoreState, emptyState

CONFIG = {
    "proxy": {"listen": "tcp:0:interface=127.0.0.1", "accessLog": False},
    "store": "memory:",
    "servers": [
        {"name": "s1", "addr": "127.0.0.1:9001"},
        {"name": "s2", "addr": "127.0.0.1:9002"},
    ],
    "clusters": [{"name": "c1", "servers": ["s1", "s2"]}],
}


class Reactor(MemoryReactorClock):
    """
    A memory reactor that counts the calls to C{stop} (C{hasStopped} starts
    true in some Twisted releases).
    """

    def __init__(self) -> None:
        super().__init__()
        self.stops = 0

    def stop(self) -> None:
        self.stops += 1
        super().stop()


class LaterStore:
    """
    An L{IStore} whose loads and commits answer when the test says.

    @ivar loads: the Deferreds of the loads asked for, in order.
    @ivar commits: C{(changes, baseRevision, Deferred)} of each commit.
    """

    def __init__(self) -> None:
        self.loads: List[Deferred] = []
        self.commits: List[Any] = []

    def load(self) -> Deferred:
        d: Deferred = Deferred()
        self.loads.append(d)
        return d

    def commit(self, changes: Any, baseRevision: int) -> Deferred:
        d: Deferred = Deferred()
        self.commits.append((list(changes), baseRevision, d))
        return d

    def watch(self, listener: Any) -> Any:
        return lambda: None

    def close(self) -> Deferred:
        return succeed(None)


class SeedTests(SynchronousTestCase):
    """
    Tests for the seed of a store that answers after the start.
    """

    def setUp(self) -> None:
        self.reactor = Reactor()
        self.store = LaterStore()
        self.events: List[Dict[str, Any]] = []
        self.patch(serviceModule, "log", Logger(observer=self.events.append))
        self.exits: List[int] = []
        self.patch(serviceModule.os, "_exit", self.exits.append)
        self.service = GatewayService(
            parseConfig(CONFIG), self.reactor, FilterRegistry({}), store=self.store
        )
        self.service.startService()

    def tearDown(self) -> None:
        self.service.stopService()

    def runShutdown(self) -> None:
        for call, args, kwargs in self.reactor.triggers.get("after", {}).get("shutdown", []):
            call(*args, **kwargs)

    def test_seedLands(self) -> None:
        """
        Once the store answers, the seed is committed whole against the
        revision read, and the gateway is ready.
        """
        self.store.loads[0].callback(emptyState())
        [(changes, base, d)] = self.store.commits
        self.assertEqual(
            sorted((c.kind, c.name) for c in changes),
            [("clusters", "c1"), ("servers", "s1"), ("servers", "s2")],
        )
        self.assertEqual(base, 0)
        self.assertFalse(self.service.ready)
        d.callback(5)
        self.assertTrue(self.service.ready)
        self.assertEqual(self.reactor.stops, 0)

    def test_seedRefusedStopsTheStart(self) -> None:
        """
        A seed the store refuses stops the gateway: the message names the
        seed and the store's reason, the reactor stops, and the process
        then exits with status 1 (twistd itself would exit 0).
        """
        self.store.loads[0].callback(emptyState())
        self.store.commits[0][2].errback(StoreError("etcd refused a transaction as too large"))
        self.assertEqual(self.reactor.stops, 1)
        errors = [e for e in self.events if e["log_level"].name in ("error", "critical")]
        self.assertEqual(len(errors), 1)
        text = errors[0]["log_format"].format(**errors[0])
        self.assertIn("cannot start", text)
        self.assertIn("seeding 3 resource(s) from the config file", text)
        self.assertIn("too large", text)
        self.assertEqual(self.exits, [])
        self.runShutdown()
        self.assertEqual(self.exits, [1])
        self.assertFalse(self.service.ready)

    def test_conflictReadsAgain(self) -> None:
        """
        A seed that lost a race (another gateway seeding the same file)
        reads the store again after a back-off and commits only what is
        still missing.
        """
        self.store.loads[0].callback(emptyState())
        self.store.commits[0][2].errback(ConflictError("the store changed"))
        self.assertEqual(len(self.store.loads), 1)
        self.reactor.advance(5.0)
        others = StoreState(7, {"servers": {"s1": {"name": "s1", "addr": "127.0.0.1:9001"}}})
        self.store.loads[1].callback(others)
        changes, base, d = self.store.commits[1]
        self.assertEqual(
            sorted((c.kind, c.name) for c in changes), [("clusters", "c1"), ("servers", "s2")]
        )
        self.assertEqual(base, 7)
        d.callback(8)
        self.assertTrue(self.service.ready)

    def test_conflictsForever(self) -> None:
        """
        A seed that keeps losing races stops the start in the end, saying
        so.
        """
        self.store.loads[0].callback(emptyState())
        for i in range(serviceModule.SEED_ATTEMPTS):
            self.store.commits[i][2].errback(ConflictError("the store changed"))
            self.reactor.advance(10.0)
            if i + 1 < serviceModule.SEED_ATTEMPTS:
                self.store.loads[i + 1].callback(emptyState())
        self.assertEqual(self.reactor.stops, 1)
        errors = [e for e in self.events if e["log_level"].name == "error"]
        self.assertIn("kept changing", errors[0]["log_format"].format(**errors[0]))


class ResultNowTests(SynchronousTestCase):
    """
    Tests for L{_resultNow}.
    """

    def test_firedResult(self) -> None:
        """
        A Deferred that has fired gives its result, or raises its failure.
        """
        self.assertEqual(_resultNow(succeed(3)), 3)
        self.assertRaises(ValueError, _resultNow, fail(ValueError("x")))

    def test_pendingKeepsItsFailure(self) -> None:
        """
        A Deferred that has not fired is given back with its result to
        come: a failure later reaches the errbacks added then (it used to
        be swallowed, and a seed refused by etcd went unnoticed).
        """
        d: Deferred = Deferred()
        self.assertIs(_resultNow(d), d)
        caught: List[Any] = []
        d.addErrback(caught.append)
        d.errback(StoreError("refused"))
        self.assertEqual(len(caught), 1)
        self.assertTrue(caught[0].check(StoreError))
