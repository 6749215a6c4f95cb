"""
Tests for L{gateway.store.etcd.store.EtcdStore}: the L{IStore} semantics of the
embedded file store (revisions, conflicts on a stale base, watchers told of
every change with the whole new state), against a real etcd 3.4, plus what
only a shared store has: changes from another process, two stores racing,
and etcd going away and coming back.  Also the proxy registry
(L{gateway.store.etcd.registry}), which lives in the same etcd.
"""

from __future__ import annotations

import base64
import json
from typing import Any, List

import pytest
import pytest_twisted
from etcdserver import etcd, etcdCluster  # noqa: F401  (fixtures)
from harness import freePort
from test_etcd_client import until, within
from twisted.internet import reactor, task, threads
from twisted.internet.defer import DeferredList, fail, succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gateway.interfaces import IStore
from gateway.store import KINDS, Change, ConflictError, StoreError, StoreState, storeFromURL
from gateway.store.etcd.client import (
    EtcdClient,
    EtcdError,
    EtcdIndeterminate,
    EtcdUnavailable,
    TxnResult,
    etcdBackoff,
)
from gateway.store.etcd.registry import ProxyRegistry, advertisedAddress, listProxies
from gateway.store.etcd.store import EtcdStore, etcdStoreFromURL
from gateway.store.etcd.watch import startWatch

SERVER = {"name": "s1", "addr": "127.0.0.1:9001", "weight": 1}
CLUSTER = {"name": "c1", "servers": ["s1"], "loadBalance": "round-robin"}
API = {"name": "a1", "urlPattern": "/a/*", "nodes": [{"cluster": "c1"}]}


class EtcdStoreURLTests(SynchronousTestCase):
    """
    Tests for making an L{EtcdStore} from the config file's URL.
    """

    def test_fromURL(self) -> None:
        """
        C{storeFromURL} makes an L{EtcdStore} that provides L{IStore} for an
        C{etcd://} URL, with every endpoint and the prefix.
        """
        clock = task.Clock()
        store = storeFromURL("etcd://127.0.0.1:2379,127.0.0.2:2379/gw/one", reactor=clock)
        self.assertIsInstance(store, EtcdStore)
        self.assertTrue(verifyObject(IStore, store))
        self.assertEqual(store.client.endpoints, ["127.0.0.1:2379", "127.0.0.2:2379"])
        self.assertEqual(store.prefix, "/gw/one")
        self.assertEqual(store.keyOf("apis", "a1"), b"/gw/one/resources/apis/a1")

    def test_madeWithoutIO(self) -> None:
        """
        Making the store (and its client) opens no connection; its first
        load does.
        """
        memory = MemoryReactorClock()
        store = etcdStoreFromURL("etcd://127.0.0.1:2379/gw", memory)
        self.assertEqual(memory.tcpClients, [])
        store.load()
        self.assertEqual(
            [(host, port) for host, port, *_ in memory.tcpClients], [("127.0.0.1", 2379)]
        )

    def test_defaultPrefix(self) -> None:
        """
        Without a prefix the keys live under C{/gateway}.
        """
        store = etcdStoreFromURL("etcd://127.0.0.1:2379", reactor=task.Clock())
        self.assertEqual(store.prefix, "/gateway")

    def test_badURL(self) -> None:
        """
        A URL without a port is refused with a message naming it.
        """
        e = self.assertRaises(ValueError, etcdStoreFromURL, "etcd://localhost/x", task.Clock())
        self.assertIn("etcd://localhost/x", str(e))


class FakeClient:
    """
    The transaction part of an L{EtcdClient}, scripted: each C{txn} call
    takes the next answer (an exception, or a function of the operations
    giving a L{TxnResult}).
    """

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls: List[Any] = []
        self.endpoints = ["fake:1"]
        self.backoff = etcdBackoff(random=lambda: 0.0)

    def txn(self, compare: Any, success: Any, failure: Any = ()) -> Any:
        self.calls.append((compare, success, failure))
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            return fail(answer)
        return succeed(answer(success))


def markerRange(value: bytes, revision: int) -> Any:
    """
    @return: what a failed commit's probes read: the commit key with
        C{value} at C{revision}, no writer, no undo record.
    """
    kv = {"key": "eA==", "value": base64.b64encode(value).decode(), "mod_revision": str(revision)}
    return [{"response_range": {"kvs": [kv]}}, {"response_range": {}}, {"response_range": {}}]


def tokenOf(success: Any) -> bytes:
    return base64.b64decode(success[0]["request_put"]["value"])


class EtcdStoreCommitTests(SynchronousTestCase):
    """
    Tests for L{EtcdStore.commit} when etcd cannot confirm a commit.
    """

    def setUp(self) -> None:
        self.clock = task.Clock()

    def store(self, client: Any) -> EtcdStore:
        return EtcdStore(client, "/gw", self.clock)

    def test_oneTransaction(self) -> None:
        """
        A commit that fits one transaction is one: it holds only if neither
        the commit key nor any resource was modified after the base
        revision, and no large commit is unfinished (no undo record); it
        puts the commit key and every change, and reads, should it fail,
        the commit key, the writer key and the undo records' keys.
        """
        client = FakeClient(lambda ops: TxnResult(True, [], 12))
        store = self.store(client)
        changes = [Change("servers", "s1", SERVER), Change("apis", "old", None)]
        self.assertEqual(self.successResultOf(store.commit(changes, 10)), 12)
        [(compare, success, failure)] = client.calls
        b64 = lambda key: base64.b64encode(key).decode()  # noqa: E731
        self.assertEqual(
            [
                (c["target"], c["key"], c.get("range_end"), c["result"])
                + (c.get("mod_revision", c.get("version")),)
                for c in compare
            ],
            [
                ("MOD", b64(b"/gw/commit"), None, "LESS", "11"),
                ("MOD", b64(b"/gw/resources/"), b64(b"/gw/resources0"), "LESS", "11"),
                (
                    "VERSION",
                    b64(b"/gw/resources/.undo/"),
                    b64(b"/gw/resources/.undo0"),
                    "EQUAL",
                    "0",
                ),
            ],
        )
        self.assertEqual(
            [(op["request_range"]["key"], op["request_range"].get("range_end")) for op in failure],
            [
                (b64(b"/gw/commit"), None),
                (b64(b"/gw/writer"), None),
                (b64(b"/gw/resources/.undo/"), b64(b"/gw/resources/.undo0")),
            ],
        )
        self.assertEqual(
            [list(op) for op in success],
            [["request_put"], ["request_put"], ["request_delete_range"]],
        )
        value = json.loads(base64.b64decode(success[1]["request_put"]["value"]))
        self.assertEqual(value, SERVER)

    def test_conflict(self) -> None:
        """
        A transaction whose compares failed, with another commit's token on
        the commit key, is a L{ConflictError}.
        """
        client = FakeClient(lambda ops: TxnResult(False, markerRange(b"other", 11), 11))
        self.failureResultOf(self.store(client).commit([], 10), ConflictError)

    def test_lostAnswerRetried(self) -> None:
        """
        A commit whose answer was lost is sent again, as it was; when the
        first copy had applied, the second fails its compares and the
        commit key holds this commit's token: the commit succeeded, at the
        first copy's revision.
        """
        client = FakeClient(
            EtcdIndeterminate("lost"),
            lambda ops: TxnResult(False, markerRange(tokenOf(ops), 11), 12),
        )
        d = self.store(client).commit([Change("servers", "s1", SERVER)], 10)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.assertEqual(self.successResultOf(d), 11)
        self.assertEqual(client.calls[0], client.calls[1])

    def test_leaderLostRetried(self) -> None:
        """
        etcd answering "unavailable" (a leader change) makes the commit try
        again after a back-off.
        """
        client = FakeClient(EtcdError(14, "leader changed"), lambda ops: TxnResult(True, [], 11))
        d = self.store(client).commit([], 10)
        self.clock.advance(0.1)
        self.assertEqual(self.successResultOf(d), 11)

    def test_givesUp(self) -> None:
        """
        A commit etcd cannot confirm within C{commitTimeout} fails with
        L{StoreError}; one no endpoint answered at all fails at once.
        """
        client = FakeClient(*[EtcdIndeterminate("lost")] * 100)
        d = self.store(client).commit([], 10)
        self.clock.advance(EtcdStore.commitTimeout + 10)
        self.clock.pump([1] * 20)
        self.failureResultOf(d, StoreError)
        client = FakeClient(EtcdUnavailable("down"))
        self.failureResultOf(self.store(client).commit([], 10), EtcdUnavailable)


def newStore(endpoints: List[str], prefix: str = "/gw") -> EtcdStore:
    client = EtcdClient(endpoints, reactor=reactor, timeout=3.0)
    return EtcdStore(client, prefix, reactor=reactor, ownsClient=True)


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


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_roundTrip(etcd):  # noqa: F811
    """
    A new store is empty; a commit returns the new revision (etcd's), which
    the next load reports with every resource; deletions go; another store
    on the same prefix reads the same, and one on another prefix nothing.
    """
    store = newStore([etcd.endpoint])
    other = newStore([etcd.endpoint])
    elsewhere = newStore([etcd.endpoint], "/other")
    try:
        state = await within(store.load())
        assert all(state.resources[kind] == {} for kind in KINDS)
        revision = await within(
            store.commit(
                [Change("servers", "s1", SERVER), Change("clusters", "c1", CLUSTER)], state.revision
            )
        )
        assert revision > state.revision
        loaded = await within(other.load())
        assert loaded.revision == revision
        assert dict(loaded.resources["servers"]) == {"s1": SERVER}
        assert loaded.get("clusters", "c1") == CLUSTER
        second = await within(store.commit([Change("clusters", "c1", None)], revision))
        assert second > revision
        loaded = await within(other.load())
        assert (loaded.revision, loaded.get("clusters", "c1")) == (second, None)
        assert dict((await within(elsewhere.load())).resources["servers"]) == {}
        # One key per resource, the value its JSON.
        kv = await within(store.client.get("/gw/resources/servers/s1"))
        assert json.loads(kv.value) == SERVER
    finally:
        await store.close()
        await other.close()
        await elsewhere.close()


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_conflict(etcd):  # noqa: F811
    """
    A commit based on a revision older than the store's last change fails
    with L{ConflictError} and changes nothing; a write outside the
    resources (a proxy's registration) does not make a commit conflict.
    """
    store = newStore([etcd.endpoint])
    try:
        base = (await within(store.load())).revision
        first = await within(store.commit([Change("servers", "s1", SERVER)], base))
        with pytest.raises(ConflictError):
            await within(store.commit([Change("servers", "s2", dict(SERVER, name="s2"))], base))
        assert (await within(store.load())).get("servers", "s2") is None
        await within(store.client.put("/gw/proxies/127.0.0.1:1", b"{}"))
        current = await within(store.load())
        assert current.revision == first + 1
        assert await within(store.commit([Change("servers", "s2", dict(SERVER, name="s2"))], first))
    finally:
        await store.close()


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_deletionConflicts(etcd):  # noqa: F811
    """
    A deletion by another store since the base revision is a conflict too
    (a deleted key leaves no revision to compare): an api cannot be
    committed against a state where its cluster still existed.
    """
    a, b = newStore([etcd.endpoint]), newStore([etcd.endpoint])
    try:
        base = (await within(a.load())).revision
        base = await within(
            a.commit([Change("servers", "s1", SERVER), Change("clusters", "c1", CLUSTER)], base)
        )
        await within(b.commit([Change("clusters", "c1", None)], base))
        with pytest.raises(ConflictError):
            await within(a.commit([Change("apis", "a1", API)], base))
        assert (await within(a.load())).get("apis", "a1") is None
    finally:
        await a.close()
        await b.close()


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_racingStores(etcd):  # noqa: F811
    """
    Two stores (two admins) commit at the same moment from the same base,
    twenty times over: each time exactly one wins and the other gets
    L{ConflictError}.
    """
    a, b = newStore([etcd.endpoint]), newStore([etcd.endpoint])
    try:
        for i in range(20):
            base = (await within(a.load())).revision
            results = await within(
                DeferredList(
                    [
                        a.commit([Change("servers", "s1", dict(SERVER, weight=i))], base),
                        b.commit([Change("servers", "s2", dict(SERVER, name="s2"))], base),
                    ],
                    consumeErrors=True,
                )
            )
            outcomes = sorted(ok for ok, _ in results)
            assert outcomes == [False, True], results
            loser = [value for ok, value in results if not ok][0]
            assert loser.check(ConflictError)
    finally:
        await a.close()
        await b.close()


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_watch(etcd):  # noqa: F811
    """
    A watcher is given the whole state once the watch has read etcd, then
    the whole new state after each commit, from this store or another, at
    the commit's revision; a stopped watcher is told nothing more.
    """
    store, other = newStore([etcd.endpoint]), newStore([etcd.endpoint])
    watcher = Watcher()
    try:
        base = (await within(other.load())).revision
        base = await within(other.commit([Change("servers", "s1", SERVER)], base))
        stop = store.watch(watcher)
        await until(lambda: watcher.states, what="the first state")
        assert (watcher.last.revision, watcher.last.get("servers", "s1")) == (base, SERVER)
        revision = await within(other.commit([Change("clusters", "c1", CLUSTER)], base))
        await until(lambda: watcher.last.revision == revision, what="the commit")
        assert watcher.last.get("clusters", "c1") == CLUSTER
        assert watcher.last.get("servers", "s1") == SERVER
        revision = await within(store.commit([Change("servers", "s1", None)], revision))
        # A commit answers once this store's own watchers have the change.
        assert watcher.last.revision == revision
        assert watcher.last.get("servers", "s1") is None
        assert [s.revision for s in watcher.states] == sorted({s.revision for s in watcher.states})
        stop()
        count = len(watcher.states)
        await within(store.commit([Change("servers", "s1", SERVER)], revision))
        await task.deferLater(reactor, 0.2, lambda: None)
        assert len(watcher.states) == count
    finally:
        await store.close()
        await other.close()


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_failingWatcher(etcd):  # noqa: F811
    """
    A watcher that raises is logged and does not keep the others from
    being told.
    """
    store = newStore([etcd.endpoint])
    watcher = Watcher()
    calls: List[int] = []

    def broken(state: StoreState) -> None:
        calls.append(state.revision)
        raise RuntimeError("watcher bug")

    try:
        store.watch(broken)
        store.watch(watcher)
        base = (await within(store.load())).revision
        revision = await within(store.commit([Change("servers", "s1", SERVER)], base))
        await until(lambda: watcher.states and watcher.last.revision == revision)
        assert calls[-1] == revision
    finally:
        await store.close()


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_outage(etcd):  # noqa: F811
    """
    While etcd is down the watch keeps the last state (nothing is
    delivered, nothing is lost), a load or commit fails at once with
    L{StoreError}; once it is back, the changes made meanwhile by others
    arrive.
    """
    store, other = newStore([etcd.endpoint]), newStore([etcd.endpoint])
    watcher = Watcher()
    try:
        store.watch(watcher)
        await until(lambda: watcher.states)
        base = watcher.last.revision
        base = await within(other.commit([Change("servers", "s1", SERVER)], base))
        await until(lambda: watcher.last.revision == base)
        await within(threads.deferToThread(etcd.stop))
        with pytest.raises(StoreError):
            await within(store.load())
        with pytest.raises(StoreError):
            await within(store.commit([Change("clusters", "c1", CLUSTER)], base))
        assert watcher.last.get("servers", "s1") == SERVER
        count = len(watcher.states)
        await within(threads.deferToThread(etcd.start))
        revision = await within(other.commit([Change("clusters", "c1", CLUSTER)], base))
        await until(lambda: watcher.last.revision == revision, what="the catch-up")
        assert watcher.last.get("clusters", "c1") == CLUSTER
        assert len(watcher.states) == count + 1
    finally:
        await store.close()
        await other.close()


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_loadWaitsForEtcd(tmp_path):
    """
    The first load of a store whose etcd is not running yet waits (retrying)
    until etcd answers, then returns the state.
    """
    from etcdserver import EtcdServer, etcdAvailable

    if not etcdAvailable():
        pytest.skip("no etcd server")
    server = EtcdServer(tmp_path, clientPort=freePort())
    store = newStore([server.endpoint])
    try:
        loading = store.load()
        await task.deferLater(reactor, 0.5, lambda: None)
        assert not loading.called
        await within(threads.deferToThread(server.start))
        state = await within(loading)
        assert state.revision >= 1
    finally:
        await store.close()
        server.cleanup()


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_resyncAfterCompaction(etcd):  # noqa: F811
    """
    When the watch must resume from a compacted revision, the store reads
    everything again and gives its watchers the whole current state.
    """
    store, other = newStore([etcd.endpoint]), newStore([etcd.endpoint])
    watcher = Watcher()
    try:
        store.watch(watcher)
        await until(lambda: watcher.states)
        # Make the watch resume from a revision that is then compacted.
        await store._watch.stop()
        base = watcher.last.revision
        base = await within(other.commit([Change("servers", "s1", SERVER)], base))
        base = await within(other.commit([Change("clusters", "c1", CLUSTER)], base))
        await within(other.client.compact(base))
        store._watch = startWatch(
            store.client,
            store._resources,
            store._onEvents,
            prefix=True,
            startRevision=watcher.last.revision + 1,
            onResync=store._onResync,
        )
        await until(lambda: watcher.last.revision == base, what="the resync")
        assert watcher.last.get("clusters", "c1") == CLUSTER
        assert watcher.last.get("servers", "s1") == SERVER
    finally:
        await store.close()
        await other.close()


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_invalidValueIgnored(etcd):  # noqa: F811
    """
    A key under the resources that does not hold a JSON object (edited by
    hand) is left out of the state, and unknown kinds are ignored.
    """
    store = newStore([etcd.endpoint])
    try:
        await within(store.client.put("/gw/resources/servers/bad", b"not json"))
        await within(store.client.put("/gw/resources/gadgets/g", b"{}"))
        await within(store.client.put("/gw/resources/servers/s1", json.dumps(SERVER)))
        state = await within(store.load())
        assert dict(state.resources["servers"]) == {"s1": SERVER}
    finally:
        await store.close()


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_close(etcd):  # noqa: F811
    """
    After L{EtcdStore.close}, loads and commits fail with L{StoreError}.
    """
    store = newStore([etcd.endpoint])
    await within(store.load())
    store.watch(Watcher())
    await within(store.close())
    with pytest.raises(StoreError):
        await within(store.load())
    with pytest.raises(StoreError):
        await within(store.commit([], 0))


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_commitSurvivesLeaderLoss(etcdCluster):  # noqa: F811
    """
    Killing the leader of a 3-member cluster, the member the store talks
    to, does not fail a commit made right after: it is confirmed once the
    cluster has a new leader, applied exactly once, and seen by a watcher
    on another store.
    """
    leader = etcdCluster.leader()
    others = [m.endpoint for m in etcdCluster.members if m is not leader]
    store = newStore([leader.endpoint] + others)
    other = newStore(others[::-1])
    watcher = Watcher()
    try:
        other.watch(watcher)
        base = (await within(store.load())).revision
        leader.kill()
        await task.deferLater(reactor, 0.1, lambda: None)
        revision = await within(store.commit([Change("servers", "s1", SERVER)], base), 20)
        assert (await within(store.client.get("/gw/resources/servers/s1"))).version == 1
        await until(lambda: watcher.states and watcher.last.revision >= revision)
        assert watcher.last.get("servers", "s1") == SERVER
    finally:
        await store.close()
        await other.close()


# -- the proxy registry --------------------------------------------------------------


class AdvertisedAddressTests(SynchronousTestCase):
    """
    Tests for L{advertisedAddress}.
    """

    def test_tcp(self) -> None:
        """
        A TCP endpoint on one interface is advertised as C{interface:port};
        on every interface, with the host name instead.
        """
        self.assertEqual(advertisedAddress("tcp:8080:interface=127.0.0.1"), "127.0.0.1:8080")
        self.assertEqual(advertisedAddress("tcp:port=81", hostname="gw1"), "gw1:81")
        self.assertEqual(advertisedAddress("tcp:80:interface=0.0.0.0", "gw2"), "gw2:80")
        self.assertEqual(advertisedAddress("tcp6:80:interface=\\:\\:1", "h"), "[::1]:80")

    def test_other(self) -> None:
        """
        Other endpoints are advertised with the host name and the endpoint.
        """
        self.assertEqual(advertisedAddress("unix:/run/gw.sock", "h"), "h:unix:/run/gw.sock")


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_registry(etcd):  # noqa: F811
    """
    A running L{ProxyRegistry} puts this proxy's record (address, version,
    start time, readiness, stats) under C{PREFIX/proxies/ADDR} on a lease
    with its TTL, refreshes it (readiness and stats change), lists it, and
    takes a new lease when its lease is lost; stopping it removes the
    record at once.
    """
    client = EtcdClient([etcd.endpoint], reactor=reactor, timeout=3.0)
    state = {"ready": False, "requests": 0}
    registry = ProxyRegistry(
        client,
        "/gw",
        "127.0.0.1:8080",
        "1.2.3",
        stats=lambda: {"requests": state["requests"]},
        ready=lambda: state["ready"],
        startedAt="2026-01-01T00:00:00+00:00",
        reactor=reactor,
        ttl=10,
        refreshInterval=0.2,
    )
    other = ProxyRegistry(client, "/gw", "127.0.0.1:8081", "1.2.3", reactor=reactor)
    try:
        registry.startService()
        other.startService()
        await until(lambda: registry.registered and other.registered, what="registration")
        kv = await within(client.get("/gw/proxies/127.0.0.1:8080"))
        record = json.loads(kv.value)
        assert {k: record[k] for k in ("addr", "version", "startedAt", "ready", "stats")} == {
            "addr": "127.0.0.1:8080",
            "version": "1.2.3",
            "startedAt": "2026-01-01T00:00:00+00:00",
            "ready": False,
            "stats": {"requests": 0},
        }
        assert kv.lease == registry.lease
        assert 8 <= await within(client.leaseTimeToLive(kv.lease)) <= 10

        state.update(ready=True, requests=7)
        registry.refresh()

        async def listed() -> List[dict]:
            return await within(listProxies(client, "/gw"))

        async def wait(predicate: Any) -> List[dict]:
            deadline = reactor.seconds() + 10
            while True:
                proxies = await listed()
                if predicate(proxies) or reactor.seconds() > deadline:
                    return proxies
                await task.deferLater(reactor, 0.05, lambda: None)

        proxies = await wait(lambda p: p[0]["ready"])
        assert [p["addr"] for p in proxies] == ["127.0.0.1:8080", "127.0.0.1:8081"]
        assert (proxies[0]["ready"], proxies[0]["stats"]) == (True, {"requests": 7})

        # A lease lost (expired during a long outage) is replaced.
        lost = registry.lease
        await within(client.leaseRevoke(lost))
        await until(lambda: registry.lease not in (None, lost), what="a new lease")
        proxies = await wait(lambda p: len(p) == 2)
        assert len(proxies) == 2

        await within(registry.stopService())
        assert [p["addr"] for p in await listed()] == ["127.0.0.1:8081"]
    finally:
        if registry.running:
            await registry.stopService()
        await other.stopService()
        await client.close()
