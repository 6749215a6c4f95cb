"""
Tests for seeding the store from the config file in
L{gateway.process.storeservice.StoreService}, with a store that answers
later (as etcd does): the seed either lands whole or stops the start, with
a message (and so a non-zero exit status), never silently.
"""

from __future__ import annotations

from typing import Any, List

from twisted.internet.defer import Deferred, succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from gateway.filters import FilterRegistry
from gateway.model.config import parseConfig
from gateway.model.schema import toJSON
from gateway.process.storeservice import SEED_ATTEMPTS, StoreService
from gateway.routing.snapshot import SnapshotManager
from gateway.store import KINDS, ConflictError, StoreError, StoreState, emptyState

CONFIG = {
    "proxy": {"listen": "tcp:0:interface=127.0.0.1", "accessLog": False},
    "store": "memory:",
    "servers": [
        {"name": "s1", "addr": "127.0.0.1:9001"},
        {"name": "s2", "addr": "127.0.0.1:9002"},
    ],
    "clusters": [{"name": "c1", "servers": ["s1", "s2"]}],
}


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
        self.reactor = MemoryReactorClock()
        self.store = LaterStore()
        self.aborted: List[str] = []
        self.service = StoreService(
            self.store,
            SnapshotManager(FilterRegistry({}), self.reactor),
            self.aborted.append,
            self.reactor,
            seed=dict(parseConfig(CONFIG).seed),
        )
        self.service.startService()

    def tearDown(self) -> None:
        self.service.stopService()

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
        self.assertEqual(self.aborted, [])

    def test_differingSeedNamed(self) -> None:
        """
        Seed resources the store has with another definition are left as
        the store has them, and named in a warning (an edit of the config
        file's seed does not apply to them); one the store has the same is
        not named, and one it lacks is created.
        """
        seen: List[Any] = []
        globalLogPublisher.addObserver(seen.append)
        self.addCleanup(globalLogPublisher.removeObserver, seen.append)
        seed = dict(parseConfig(CONFIG).seed)
        servers = {obj.name: toJSON(obj) for obj in seed["servers"]}
        servers["s1"] = dict(servers["s1"], addr="127.0.0.1:9999")
        resources = {kind: {} for kind in KINDS}
        resources["servers"] = servers
        self.store.loads[0].callback(StoreState(3, resources))
        [(changes, base, d)] = self.store.commits
        self.assertEqual([(c.kind, c.name) for c in changes], [("clusters", "c1")])
        warnings = [formatEvent(e) for e in seen if "differ from the store" in formatEvent(e)]
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn("1 resource(s) of the config file's seed", warnings[0])
        self.assertTrue(warnings[0].endswith(": servers/s1"), warnings[0])

    def test_seedRefusedStopsTheStart(self) -> None:
        """
        A seed the store refuses stops the start (the process then exits
        with status 1): the message names the seed and the store's reason.
        """
        self.store.loads[0].callback(emptyState())
        self.store.commits[0][2].errback(StoreError("etcd refused a transaction as too large"))
        [message] = self.aborted
        self.assertIn("seeding 3 resource(s) from the config file", message)
        self.assertIn("too large", message)
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
        for i in range(SEED_ATTEMPTS):
            self.store.commits[i][2].errback(ConflictError("the store changed"))
            self.reactor.advance(10.0)
            if i + 1 < SEED_ATTEMPTS:
                self.store.loads[i + 1].callback(emptyState())
        [message] = self.aborted
        self.assertIn("kept changing", message)
