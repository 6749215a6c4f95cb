"""
Tests for commits larger than one etcd transaction
(L{gateway.store.etcd.store.EtcdStore} and L{gateway.store.etcd.undo}).

etcd refuses a transaction of more than 128 operations or 1.5 MiB by
default; a seed of 200 resources used to be dropped whole.  These tests
show that a large commit lands in chunks without per-resource round trips,
that readers (C{load}, every watcher) see it whole or not at all, that a
commit failing between chunks, or whose writer dies, is invisible and does
not block the next one, and that lower limits on etcd's side are learnt.

The synchronous tests run the store on L{fakeetcd.FakeEtcd} with a
L{task.Clock}; the integration tests on a real etcd 3.4.
"""

from __future__ import annotations

import base64
from typing import Any, Dict, List, Optional

import pytest
import pytest_twisted
from etcdserver import EtcdServer, etcd, etcdAvailable  # noqa: F401  (fixtures)
from fakeetcd import FakeEtcd, FakeEtcdClient
from test_etcd_client import until, within
from twisted.internet import reactor, task, threads
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from gateway.store import Change, ConflictError, StoreError, StoreState
from gateway.store.etcd.client import (
    EtcdClient,
    EtcdIndeterminate,
    EtcdUnavailable,
    KeyValue,
)
from gateway.store.etcd.store import EtcdStore
from gateway.store.etcd.undo import (
    OPERATION_BYTES,
    CommittedView,
    decodeUndo,
    encodeUndo,
    takeChunk,
    undoEntry,
)

PREFIX = b"/gw/resources/"


def server(i: int, **extra: Any) -> Dict[str, Any]:
    return dict({"name": f"s{i}", "addr": f"127.0.0.1:{10000 + i}", "weight": 1}, **extra)


def seed(count: int, **extra: Any) -> List[Change]:
    return [Change("servers", f"s{i}", server(i, **extra)) for i in range(count)]


def puts(payload: Dict[str, Any]) -> List[bytes]:
    """
    @return: the keys a transaction's success branch puts.
    """
    return [
        base64.b64decode(op["request_put"]["key"])
        for op in payload["success"]
        if "request_put" in op
    ]


def isChunk(payload: Dict[str, Any], number: Optional[int] = None) -> bool:
    """
    @return: whether a transaction is a large commit's chunk that carries
        an undo record (chunk C{number}, when given).
    """
    records = [k for k in puts(payload) if k.startswith(PREFIX + b".undo/")]
    if not records:
        return False
    return number is None or records[0].endswith(b"/%06d" % number)


class Watcher:
    """
    A store listener that keeps every state it is given.
    """

    def __init__(self) -> None:
        self.states: List[StoreState] = []

    def __call__(self, state: StoreState) -> None:
        self.states.append(state)

    @property
    def last(self) -> StoreState:
        return self.states[-1]

    def counts(self) -> List[int]:
        return [len(s.resources["servers"]) for s in self.states]


# -- the undo log --------------------------------------------------------------------


class UndoTests(SynchronousTestCase):
    """
    Tests for the undo records and the committed view of a read.
    """

    def kv(self, key: bytes, value: bytes) -> KeyValue:
        return KeyValue(PREFIX + key, value)

    def test_recordRoundTrip(self) -> None:
        """
        An undo record keeps, for each key, its value before the commit
        (text, or base64 when it is not UTF-8) or that it did not exist.
        """
        record = encodeUndo(
            [
                undoEntry(b"servers/a", b'{"name":"a","note":"\xc3\xa9\\""}'),
                undoEntry(b"servers/b", None),
                undoEntry(b"servers/c", b"\xff\xfe"),
            ]
        )
        self.assertEqual(
            decodeUndo(record),
            [
                (b"servers/a", b'{"name":"a","note":"\xc3\xa9\\""}'),
                (b"servers/b", None),
                (b"servers/c", b"\xff\xfe"),
            ],
        )
        self.assertRaises(ValueError, decodeUndo, b'{"not": "a list"}')
        self.assertRaises(ValueError, decodeUndo, b'[["only a key"]]')

    def test_viewWithoutRecords(self) -> None:
        """
        With no undo record, the committed view is the keys as they are.
        """
        view = CommittedView.of(
            [self.kv(b"servers/a", b"1"), KeyValue(b"/gw/commit", b"t")], PREFIX, b".undo/"
        )
        self.assertEqual(view, CommittedView({b"servers/a": b"1"}, {}, frozenset()))

    def test_viewPutsRecordsBack(self) -> None:
        """
        The undo records are put back over the keys: a key the unfinished
        commit changed has its old value, one it created is absent, one it
        deleted is back; the first record naming a key wins; the keys'
        current values are what the commit makes of them.
        """
        kvs = [
            self.kv(b".undo/t/000001", encodeUndo([undoEntry(b"servers/a", b"old-a")])),
            self.kv(
                b".undo/t/000002",
                encodeUndo(
                    [
                        undoEntry(b"servers/new", None),
                        undoEntry(b"servers/gone", b"old-gone"),
                        undoEntry(b"servers/a", b"not this"),
                    ]
                ),
            ),
            self.kv(b"servers/a", b"new-a"),
            self.kv(b"servers/kept", b"k"),
            self.kv(b"servers/new", b"n"),
        ]
        view = CommittedView.of(kvs, PREFIX, b".undo/")
        self.assertEqual(
            view.values,
            {b"servers/a": b"old-a", b"servers/kept": b"k", b"servers/gone": b"old-gone"},
        )
        self.assertEqual(
            view.uncommitted,
            {b"servers/a": b"new-a", b"servers/new": b"n", b"servers/gone": None},
        )
        self.assertEqual(view.undoKeys, frozenset({b".undo/t/000001", b".undo/t/000002"}))
        self.assertEqual(
            view.restores(),
            [
                (b"servers/a", b"old-a"),
                (b"servers/gone", b"old-gone"),
                (b"servers/new", None),
            ],
        )

    def test_unreadableRecord(self) -> None:
        """
        A record that cannot be read makes the view unknown: an error names
        the record.
        """
        error = self.assertRaises(
            ValueError, CommittedView.of, [self.kv(b".undo/t/1", b"{")], PREFIX, b".undo/"
        )
        self.assertIn(".undo/t/1", str(error))

    def test_takeChunk(self) -> None:
        """
        A chunk takes writes while their operations (and the record's) and
        bytes (keys, values, the record's entries) fit; a write too big
        for any chunk goes alone.
        """
        writes = [(b"k%d" % i, b"v" * 100) for i in range(10)]
        self.assertEqual(takeChunk(writes, None, 4, 10**6), 4)
        entries = [undoEntry(k, None) for k, _ in writes]
        self.assertEqual(takeChunk(writes, entries, 4, 10**6), 3)
        each = len(b"k0") + 100 + OPERATION_BYTES
        self.assertEqual(takeChunk(writes, None, 100, 3 * each), 3)
        self.assertEqual(takeChunk(writes, None, 100, 3 * each - 1), 2)
        self.assertEqual(takeChunk(writes, None, 100, 10), 1)
        self.assertEqual(takeChunk([], None, 100, 10), 0)


# -- commits on the fake etcd -----------------------------------------------------------


class LargeCommitTests(SynchronousTestCase):
    """
    Tests for large commits, on an in-memory etcd with etcd's limits.
    """

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.etcd = FakeEtcd(self.clock)
        self.client = FakeEtcdClient(self.etcd)
        self.store = EtcdStore(self.client, "/gw", self.clock)
        self.other = EtcdStore(FakeEtcdClient(self.etcd), "/gw", self.clock)

    def base(self, store: Optional[EtcdStore] = None) -> int:
        return self.successResultOf((store or self.store).load()).revision

    def watcher(self) -> Watcher:
        watcher = Watcher()
        self.other.watch(watcher)
        self.clock.advance(0)
        return watcher

    def undoLeft(self) -> Dict[bytes, bytes]:
        return self.etcd.keys(PREFIX + b".undo/")

    def test_smallCommitStaysOneTransaction(self) -> None:
        """
        A commit of 127 changes (with the commit key: 128 operations) is one
        transaction, as before.
        """
        self.successResultOf(self.store.commit(seed(127), self.base()))
        self.assertEqual(len(self.etcd.txns), 1)
        self.assertEqual(len(self.successResultOf(self.store.load()).resources["servers"]), 127)

    def test_largeCommitLandsInChunks(self) -> None:
        """
        600 resources land in a claim and 5 chunks (no transaction over
        etcd's 128 operations; no per-resource round trip), and leave
        nothing behind but the resources and the commit key.
        """
        revision = self.successResultOf(self.store.commit(seed(600), self.base()))
        writes = [t for t in self.etcd.txns if t["success"] and puts(t)]
        self.assertEqual(len(writes), 6)
        self.assertTrue(all(len(t["success"]) <= 128 for t in self.etcd.txns))
        state = self.successResultOf(self.other.load())
        self.assertEqual(state.revision, revision)
        self.assertEqual(dict(state.resources["servers"]), {f"s{i}": server(i) for i in range(600)})
        self.assertEqual(self.undoLeft(), {})
        self.assertEqual(
            set(self.etcd.keys(b"/gw/")) - set(self.etcd.keys(PREFIX)), {b"/gw/commit"}
        )
        self.assertEqual(self.etcd.leases, {})

    def test_largeValuesSplitByBytes(self) -> None:
        """
        100 resources of 40 KB (4 MB, over etcd's 1.5 MiB a request) land,
        each transaction under the byte limit.
        """
        self.successResultOf(self.store.commit(seed(100, note="x" * 40_000), self.base()))
        state = self.successResultOf(self.other.load())
        self.assertEqual(len(state.resources["servers"]), 100)
        # At least 4 transactions of under 1 MiB, none refused.
        self.assertGreaterEqual(len([t for t in self.etcd.txns if isChunk(t)]), 3)
        self.assertEqual(self.store.maxTxnBytes, EtcdStore.maxTxnBytes)

    def test_resourceTooLarge(self) -> None:
        """
        A resource too large for any transaction is refused with an error
        naming it, and nothing is written.
        """
        changes = seed(3) + [Change("apis", "huge", {"name": "huge", "note": "x" * 400_000})]
        failure = self.failureResultOf(self.store.commit(changes, self.base()), StoreError)
        self.assertIn("apis/huge", str(failure.value))
        self.assertEqual(self.etcd.txns, [])

    def test_watcherSeesOneState(self) -> None:
        """
        A watcher sees a large commit as one new state with every resource,
        nothing of its chunks before; a watcher that starts while the
        commit is half written sees the state before it, then the whole
        commit.
        """
        watcher = self.watcher()
        self.assertEqual(watcher.counts(), [0])
        held: Deferred = Deferred()
        self.client.faults.append(lambda p: held if isChunk(p, 3) else None)
        d = self.store.commit(seed(600), self.base())
        self.assertNoResult(d)
        self.assertEqual(len(self.etcd.keys(PREFIX + b"servers/")), 254)
        self.assertEqual(watcher.counts(), [0])
        self.assertEqual(self.successResultOf(self.other.load()).resources["servers"], {})
        late = Watcher()
        third = EtcdStore(FakeEtcdClient(self.etcd), "/gw", self.clock)
        third.watch(late)
        self.clock.advance(0)
        self.assertEqual(late.counts(), [0])
        held.callback(None)
        revision = self.successResultOf(d)
        self.assertEqual(watcher.counts(), [0, 600])
        self.assertEqual(late.counts(), [0, 600])
        self.assertEqual(late.last.revision, revision)
        self.assertEqual(
            dict(late.last.resources["servers"]), dict(watcher.last.resources["servers"])
        )

    def test_failureBetweenChunksInvisible(self) -> None:
        """
        When a later chunk fails (etcd unreachable), the commit fails with
        L{StoreError}, no reader ever sees its first chunks, its writer
        rolls them back at once, and the next commit goes through.
        """
        watcher = self.watcher()
        before = self.base()
        self.successResultOf(self.store.commit([Change("servers", "keep", server(0))], before))
        self.client.faults.append(
            lambda p: (EtcdUnavailable("down"), False) if isChunk(p, 3) else None
        )
        self.failureResultOf(self.store.commit(seed(600), self.base()), StoreError)
        self.assertEqual(self.undoLeft(), {})
        self.assertEqual(set(self.etcd.keys(PREFIX)), {PREFIX + b"servers/keep"})
        self.assertTrue(all(set(s.resources["servers"]) <= {"keep"} for s in watcher.states))
        self.client.faults.clear()
        self.successResultOf(self.store.commit(seed(300), self.base()))
        self.assertEqual(watcher.counts()[-1], 301)

    def test_lostAnswersDoNotRepeatChunks(self) -> None:
        """
        A chunk (or the last one) whose answer was lost after it applied is
        recognised when sent again: the commit completes, every resource
        once.
        """
        lost = {2, "last"}

        def fault(payload: Dict[str, Any]) -> Any:
            if isChunk(payload, 2) and 2 in lost:
                lost.discard(2)
                return EtcdIndeterminate("lost"), True
            if b"/gw/commit" in puts(payload) and "last" in lost and len(puts(payload)) > 50:
                lost.discard("last")
                return EtcdIndeterminate("lost"), True
            return None

        self.client.faults.append(fault)
        d = self.store.commit(seed(600), self.base())
        self.clock.pump([0.5] * 4)
        revision = self.successResultOf(d)
        self.assertEqual(lost, set())
        state = self.successResultOf(self.other.load())
        self.assertEqual((state.revision, len(state.resources["servers"])), (revision, 600))
        self.assertEqual(self.undoLeft(), {})

    def test_abandonedCommitRolledBackByTheNext(self) -> None:
        """
        A writer that dies between chunks leaves chunks no reader sees;
        while its claim lives, other commits get L{ConflictError}; once it
        expired, the next commit (from another gateway) rolls them back and
        lands, and readers see that commit and nothing of the dead one.
        """
        watcher = self.watcher()
        died: List[bool] = []

        def fault(payload: Dict[str, Any]) -> Any:
            if isChunk(payload, 3):
                self.client.kill()
                died.append(True)
                return EtcdUnavailable("dead"), False
            return None

        self.client.faults.append(fault)
        self.failureResultOf(self.store.commit(seed(600), self.base()), StoreError)
        self.assertEqual(died, [True])
        self.assertNotEqual(self.undoLeft(), {})
        self.assertEqual(self.successResultOf(self.other.load()).resources["servers"], {})
        change = [Change("clusters", "c1", {"name": "c1", "servers": []})]
        self.failureResultOf(self.other.commit(change, self.base(self.other)), ConflictError)
        self.clock.advance(EtcdStore.writerTTL)
        revision = self.successResultOf(self.other.commit(change, self.base(self.other)))
        state = self.successResultOf(self.other.load())
        self.assertEqual(state.revision, revision)
        self.assertEqual(dict(state.resources["servers"]), {})
        self.assertEqual(set(state.resources["clusters"]), {"c1"})
        self.assertEqual(self.undoLeft(), {})
        self.assertEqual(set(self.etcd.keys(PREFIX)), {PREFIX + b"clusters/c1"})
        self.assertEqual(watcher.last.revision, revision)
        self.assertTrue(all(s.resources["servers"] == {} for s in watcher.states))

    def test_racingCommitBeforeTheClaim(self) -> None:
        """
        A commit from another gateway after the base revision makes the
        large commit fail with L{ConflictError} before it writes anything.
        """
        base = self.base()
        self.successResultOf(self.other.commit([Change("servers", "x", server(1))], base))
        count = len(self.etcd.txns)
        self.failureResultOf(self.store.commit(seed(600), base), ConflictError)
        self.assertFalse(any(isChunk(t) for t in self.etcd.txns[count:]))
        self.assertEqual(set(self.etcd.keys(PREFIX)), {PREFIX + b"servers/x"})

    def test_racingCommitDuringChunksLoses(self) -> None:
        """
        A commit from another gateway while a large commit is being written
        gets L{ConflictError} (it must not publish the other's chunks);
        the large commit lands.
        """
        results: List[Any] = []

        def fault(payload: Dict[str, Any]) -> Any:
            if isChunk(payload, 3) and not results:
                d = self.other.commit([Change("servers", "x", server(1))], self.etcd.revision)
                d.addBoth(results.append)
            return None

        self.client.faults.append(fault)
        self.successResultOf(self.store.commit(seed(600), self.base()))
        self.assertEqual(len(results), 1)
        self.assertTrue(results[0].check(ConflictError))
        self.assertIn("large commit", str(results[0].value))
        self.assertEqual(len(self.successResultOf(self.other.load()).resources["servers"]), 600)

    def test_handEditDuringChunks(self) -> None:
        """
        A key changed under the resources while a large commit is written
        (by hand, outside any commit) makes the commit fail with
        L{ConflictError} at its next chunk, and its chunks are rolled back.
        """

        def fault(payload: Dict[str, Any]) -> Any:
            if isChunk(payload, 2):
                self.etcd.txn(
                    {
                        "compare": [],
                        "success": [
                            {
                                "request_put": {
                                    "key": base64.b64encode(PREFIX + b"servers/hand").decode(),
                                    "value": base64.b64encode(b'{"name": "hand"}').decode(),
                                }
                            }
                        ],
                        "failure": [],
                    }
                )
            return None

        self.client.faults.append(fault)
        self.failureResultOf(self.store.commit(seed(600), self.base()), ConflictError)
        self.assertEqual(self.undoLeft(), {})
        self.assertEqual(set(self.etcd.keys(PREFIX)), {PREFIX + b"servers/hand"})

    def test_etcdLimitsLowerThanOurs(self) -> None:
        """
        An etcd that takes fewer operations (C{--max-txn-ops 40}) or bytes
        per transaction than the store assumes refuses its first try; the
        store cuts its transactions smaller, the commit lands, and the
        store keeps the smaller limits.
        """
        self.etcd.maxTxnOps = 40
        self.successResultOf(self.store.commit(seed(100), self.base()))
        self.assertLessEqual(self.store.maxTxnOps, 40)
        self.assertEqual(len(self.successResultOf(self.other.load()).resources["servers"]), 100)
        self.etcd.maxRequestBytes = 200_000
        changes = seed(40, note="y" * 20_000)
        self.successResultOf(self.store.commit(changes, self.base()))
        self.assertLessEqual(self.store.maxTxnBytes, 200_000)
        servers = self.successResultOf(self.other.load()).resources["servers"]
        self.assertEqual(servers["s39"]["note"], "y" * 20_000)

    def test_etcdLimitTooLow(self) -> None:
        """
        An etcd whose limit is too low for any useful chunk fails the commit
        with an error that names its setting.
        """
        self.etcd.maxTxnOps = 3
        failure = self.failureResultOf(self.store.commit(seed(20), self.base()), StoreError)
        self.assertIn("--max-txn-ops", str(failure.value))

    def test_sameKeyTwice(self) -> None:
        """
        Two changes of one resource in a commit are one write, the last
        one winning (etcd refuses a transaction naming a key twice).
        """
        changes = [Change("servers", "a", server(1)), Change("servers", "a", server(2))]
        self.successResultOf(self.store.commit(changes, self.base()))
        self.assertEqual(self.successResultOf(self.other.load()).get("servers", "a"), server(2))

    def test_keysUnchangedKeepTheirObjects(self) -> None:
        """
        After a roll-back, which puts keys back as they were, a watcher's
        state keeps the objects of the resources the roll-back touched.
        """
        self.successResultOf(self.store.commit(seed(400), self.base()))
        watcher = self.watcher()
        first = watcher.last.get("servers", "s1")
        self.client.faults.append(
            lambda p: (EtcdUnavailable("down"), False) if isChunk(p, 3) else None
        )
        changes = seed(400, weight=2)
        self.failureResultOf(self.store.commit(changes, self.base()), StoreError)
        self.assertEqual(len(watcher.states), 2)
        self.assertGreater(watcher.last.revision, watcher.states[0].revision)
        self.assertIs(watcher.last.get("servers", "s1"), first)
        self.assertEqual(watcher.last.get("servers", "s1"), server(1))


# -- against a real etcd ---------------------------------------------------------------


def newStore(endpoints: List[str], prefix: str = "/gw") -> EtcdStore:
    client = EtcdClient(endpoints, reactor, timeout=5.0)
    return EtcdStore(client, prefix, reactor, ownsClient=True)


class FailingClient:
    """
    An L{EtcdClient} whose transactions go through C{fault} first, for a
    failure between a real etcd's chunks: C{fault} returns a Deferred
    firing with an exception to fail the transaction with, or L{None} to
    send it.  Once L{kill}ed, every call fails, as if its gateway had died.
    """

    def __init__(self, client: EtcdClient, fault: Any) -> None:
        self._client = client
        self.fault = fault
        self.dead = False

    def kill(self) -> None:
        self.dead = True

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        if not callable(method):
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.dead:
                return Deferred.fromCoroutine(_raise(EtcdUnavailable("dead")))
            return method(*args, **kwargs)

        return call

    def txn(self, compare: Any, success: Any, failure: Any = ()) -> Deferred:
        async def go() -> Any:
            if self.dead:
                raise EtcdUnavailable("dead")
            problem = await self.fault({"compare": list(compare), "success": list(success)})
            if problem is not None:
                raise problem
            return await self._client.txn(compare, success, failure)

        return Deferred.fromCoroutine(go())


async def _raise(problem: Exception) -> None:
    raise problem


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_largeCommitOnEtcd(etcd):  # noqa: F811
    """
    On a real etcd with its default limits, a 600-resource commit lands;
    a watcher sees it as one state with every resource, and a load after
    it reads them all.
    """
    store, other = newStore([etcd.endpoint]), newStore([etcd.endpoint])
    watcher = Watcher()
    try:
        other.watch(watcher)
        await until(lambda: watcher.states, what="the first state")
        base = (await within(store.load())).revision
        revision = await within(store.commit(seed(600, note="n" * 2000), base), 60)
        await until(lambda: watcher.last.revision >= revision, what="the commit")
        assert watcher.counts() == [0, 600]
        state = await within(other.load())
        assert len(state.resources["servers"]) == 600
        assert state.get("servers", "s599") == server(599, note="n" * 2000)
        kvs, _ = await within(store.client.range("/gw/resources/.undo/", prefix=True))
        assert kvs == []
    finally:
        await store.close()
        await other.close()


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_failureBetweenChunksOnEtcd(etcd):  # noqa: F811
    """
    On a real etcd, a large commit whose third chunk fails is visible to no
    reader (a load made while its first two chunks are written, a
    watcher), is rolled back by its writer, and the next commit lands.
    """
    real = EtcdClient([etcd.endpoint], reactor, timeout=5.0)
    loaded: List[StoreState] = []
    reader = newStore([etcd.endpoint])

    async def fault(payload: Dict[str, Any]) -> Optional[Exception]:
        if isChunk(payload, 3):
            loaded.append(await reader.load())
            return EtcdUnavailable("the third chunk failed")
        return None

    store = EtcdStore(FailingClient(real, fault), "/gw", reactor)  # type: ignore[arg-type]
    watcher = Watcher()
    try:
        reader.watch(watcher)
        await until(lambda: watcher.states, what="the first state")
        base = (await within(reader.load())).revision
        base = await within(reader.commit([Change("servers", "keep", server(0))], base))
        with pytest.raises(StoreError):
            await within(store.commit(seed(600), base), 60)
        kvs, _ = await within(real.range("/gw/resources/servers/", prefix=True))
        assert len(loaded) == 1 and len(kvs) == 1
        assert sorted(loaded[0].resources["servers"]) == ["keep"]
        assert [kv.key for kv in kvs] == [b"/gw/resources/servers/keep"]
        revision = await within(store.commit(seed(10), (await within(reader.load())).revision))
        await until(lambda: watcher.last.revision >= revision, what="the next commit")
        assert all(set(s.resources["servers"]) <= {"keep"} for s in watcher.states[:-1])
        assert len(watcher.last.resources["servers"]) == 11
    finally:
        await reader.close()
        await real.close()


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_abandonedCommitOnEtcd(etcd):  # noqa: F811
    """
    On a real etcd, a writer that dies after two chunks leaves nothing a
    reader sees; once its claim expired, another gateway's commit rolls
    the chunks back and lands.
    """
    real = EtcdClient([etcd.endpoint], reactor, timeout=5.0)
    writer: List[FailingClient] = []

    async def fault(payload: Dict[str, Any]) -> Optional[Exception]:
        if isChunk(payload, 3):
            writer[0].kill()
            return EtcdUnavailable("died")
        return None

    writer.append(FailingClient(real, fault))
    store = EtcdStore(writer[0], "/gw", reactor)  # type: ignore[arg-type]
    store.writerTTL = 2
    other = newStore([etcd.endpoint])
    watcher = Watcher()
    try:
        other.watch(watcher)
        await until(lambda: watcher.states, what="the first state")
        with pytest.raises(StoreError):
            await within(store.commit(seed(600), (await within(other.load())).revision), 60)
        kvs, _ = await within(real.range("/gw/resources/", prefix=True))
        assert len(kvs) > 200
        assert (await within(other.load())).resources["servers"] == {}
        change = [Change("clusters", "c1", {"name": "c1", "servers": []})]
        deadline = reactor.seconds() + 10
        while True:
            try:
                revision = await within(other.commit(change, (await within(other.load())).revision))
                break
            except ConflictError:
                assert reactor.seconds() < deadline, "the dead writer's claim never expired"
                await task.deferLater(reactor, 0.2, lambda: None)
        await until(lambda: watcher.last.revision >= revision, what="the commit")
        kvs, _ = await within(real.range("/gw/resources/", prefix=True))
        assert [kv.key for kv in kvs] == [b"/gw/resources/clusters/c1"]
        assert all(s.resources["servers"] == {} for s in watcher.states)
        assert set(watcher.last.resources["clusters"]) == {"c1"}
    finally:
        await other.close()
        await real.close()


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_lowerLimitsOnEtcd(tmp_path):
    """
    An etcd started with C{--max-txn-ops 32} and C{--max-request-bytes}
    256 KiB takes a 200-resource commit, then one of 40 resources of 20 KB:
    the store learns the limits from etcd's refusals and cuts its
    transactions to fit.
    """
    if not etcdAvailable():
        pytest.skip("no etcd server")
    member = EtcdServer(
        tmp_path, extraArgs=["--max-txn-ops", "32", "--max-request-bytes", str(256 * 1024)]
    )
    store = newStore([member.endpoint])
    try:
        await within(threads.deferToThread(member.start))
        base = (await within(store.load())).revision
        base = await within(store.commit(seed(200), base), 60)
        assert store.maxTxnOps <= 32
        await within(store.commit(seed(40, note="z" * 20_000), base), 60)
        assert store.maxTxnBytes <= 256 * 1024
        state = await within(store.load())
        assert len(state.resources["servers"]) == 200
        assert state.get("servers", "s39") == server(39, note="z" * 20_000)
    finally:
        await store.close()
        member.cleanup()
