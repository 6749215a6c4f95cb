"""
Tests for L{gateway.process.propagation} and the admin's wait for a change
to serve everywhere before it answers (C{X-Gateway-Revision},
C{X-Gateway-Propagation}, C{?wait=proxies}).
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Tuple

from treq.testing import StubTreq
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gateway.admin.api import AdminAPI, _Unwatched
from gateway.interfaces import IPropagation
from gateway.process.propagation import Propagation, ServedRevisions
from gateway.store import StoreError
from gateway.store.etcd.registry import ProxyRegistry
from gateway.store.file import FileStore

TOKEN = "t0ken"
BASE = "http://admin.example/api/v1"
SERVER = {"name": "s1", "addr": "127.0.0.1:9001"}


class ServedRevisionsTests(SynchronousTestCase):
    """
    Tests for L{ServedRevisions}.
    """

    def test_nobodyServes(self) -> None:
        """
        With no member serving, a wait is over at once: a process that
        starts serving later loads the current state first.
        """
        served = ServedRevisions()
        self.assertIsNone(served.lowest())
        self.assertIsNone(self.successResultOf(served.whenServed(7)))

    def test_waitsForEveryMember(self) -> None:
        """
        A wait ends when every member serves the revision or a later one,
        not before.
        """
        served = ServedRevisions()
        served.serving(0, 4)
        served.serving(1, 4)
        waiting = served.whenServed(5)
        served.serving(0, 5)
        self.assertNoResult(waiting)
        self.assertEqual(served.lowest(), 4)
        served.serving(1, 6)
        self.assertIsNone(self.successResultOf(waiting))
        self.assertEqual(served.revisions(), {0: 5, 1: 6})
        self.assertEqual(served.lowest(), 5)

    def test_goneMemberIsNotWaitedFor(self) -> None:
        """
        A member that goes away (a worker that died) while a wait lasts no
        longer holds it.
        """
        served = ServedRevisions()
        served.serving(0, 1)
        served.serving(1, 1)
        waiting = served.whenServed(2)
        served.serving(0, 2)
        self.assertNoResult(waiting)
        served.gone(1)
        self.successResultOf(waiting)
        self.assertEqual(served.revisions(), {0: 2})

    def test_expectedMemberIsWaitedFor(self) -> None:
        """
        An expected member (a configured worker) that serves nothing, not
        yet or no more (restarting), holds every wait until it serves the
        revision, and L{ServedRevisions.missing} names it meanwhile.
        """
        served = ServedRevisions()
        served.expect(0)
        served.expect(1)
        self.assertEqual(served.missing(), {0, 1})
        waiting = served.whenServed(1)
        served.serving(0, 1)
        self.assertNoResult(waiting)
        self.assertEqual(served.missing(), {1})
        self.assertFalse(served.serves(1))
        served.serving(1, 1)
        self.successResultOf(waiting)
        self.assertEqual(served.missing(), set())
        self.assertTrue(served.serves(1))

        served.gone(1)
        self.assertEqual(served.missing(), {1})
        again = served.whenServed(1)
        self.assertNoResult(again)
        served.serving(1, 2)
        self.successResultOf(again)

    def test_newMemberJoinsLaterWaits(self) -> None:
        """
        A member that joins while a wait lasts is waited for too.
        """
        served = ServedRevisions()
        served.serving(0, 1)
        waiting = served.whenServed(2)
        served.serving(1, 1)
        served.serving(0, 2)
        self.assertNoResult(waiting)
        served.serving(1, 2)
        self.successResultOf(waiting)

    def test_cancel(self) -> None:
        """
        Cancelling a wait forgets it.
        """
        served = ServedRevisions()
        served.serving(0, 1)
        waiting = served.whenServed(2)
        waiting.cancel()
        self.failureResultOf(waiting, CancelledError)
        served.serving(0, 2)
        self.assertEqual(served._waiters, [])

    def test_listeners(self) -> None:
        """
        Listeners hear of every join, new revision and departure; a member
        saying the same revision again is no news.
        """
        served = ServedRevisions()
        heard: List[Optional[int]] = []
        served.addListener(lambda: heard.append(served.lowest()))
        served.serving("proxy", 1)
        served.serving("proxy", 1)
        served.serving("proxy", 2)
        served.gone("proxy")
        served.gone("proxy")
        self.assertEqual(heard, [1, 2, None])


class SharedStore:
    """
    The proxy listing of an L{gateway.interfaces.ISharedStore}, scripted:
    each read answers the next item of C{answers} (the last one again when
    they run out).
    """

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.reads = 0

    def listProxies(self) -> Deferred:
        self.reads += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            return fail(answer)
        return succeed(answer)


def record(revision: Any, ready: bool = True) -> Dict[str, Any]:
    return {"addr": "gw:8080", "ready": ready, "revision": revision}


class PropagationTests(SynchronousTestCase):
    """
    Tests for L{Propagation}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.served = ServedRevisions()

    def test_interface(self) -> None:
        """
        L{Propagation} provides L{IPropagation}, and so does the admin's
        default (no proxy to wait for).
        """
        self.assertTrue(verifyObject(IPropagation, Propagation(self.clock, self.served)))
        self.assertTrue(verifyObject(IPropagation, _Unwatched()))

    def test_serving(self) -> None:
        """
        C{serving} is the revision every proxy process of this gateway
        serves.
        """
        propagation = Propagation(self.clock, self.served)
        self.served.serving(0, 3)
        self.served.serving(1, 2)
        self.assertEqual(propagation.serving(), 2)

    def test_everywhereWithoutSharedStore(self) -> None:
        """
        Without a shared store, every proxy is this gateway's: waiting for
        all is waiting for its own.
        """
        propagation = Propagation(self.clock, self.served)
        self.served.serving(0, 1)
        waiting = propagation.whenServed(2, everywhere=True)
        self.assertNoResult(waiting)
        self.served.serving(0, 2)
        self.successResultOf(waiting)

    def test_everywhere(self) -> None:
        """
        With a shared store, the wait ends once this gateway's processes
        serve the revision and then every ready proxy's record says it
        serves it (records are read every C{pollInterval} seconds);
        proxies still starting are not waited for.
        """
        shared = SharedStore(
            [record(4), record(9, ready=False)],
            [record(5), record(None, ready=False)],
        )
        propagation = Propagation(self.clock, self.served, shared)
        self.served.serving(0, 4)
        waiting = propagation.whenServed(5, everywhere=True)
        self.assertEqual(shared.reads, 0)
        self.served.serving(0, 5)
        self.assertEqual(shared.reads, 1)
        self.assertNoResult(waiting)
        self.clock.advance(propagation.pollInterval)
        self.assertEqual(shared.reads, 2)
        self.successResultOf(waiting)

    def test_everywhereWaitsForProxiesNotReady(self) -> None:
        """
        A proxy that serves a revision but is not ready (one of its workers
        serves nothing: restarting, or unable to start) is waited for until
        it is ready; one still starting (serving nothing) is not.
        """
        shared = SharedStore(
            [record(5, ready=False), record(None, ready=False)],
            [record(5), record(None, ready=False)],
        )
        propagation = Propagation(self.clock, self.served, shared)
        waiting = propagation.whenServed(5, everywhere=True)
        self.assertEqual(shared.reads, 1)
        self.assertNoResult(waiting)
        self.clock.advance(propagation.pollInterval)
        self.successResultOf(waiting)

    def test_unreadableRecords(self) -> None:
        """
        Records that cannot be read (etcd away) are read again later.
        """
        shared = SharedStore(StoreError("etcd is away"), [record(2)])
        propagation = Propagation(self.clock, self.served, shared)
        waiting = propagation.whenServed(2, everywhere=True)
        self.assertNoResult(waiting)
        self.clock.advance(propagation.pollInterval)
        self.successResultOf(waiting)

    def test_cancelStopsReading(self) -> None:
        """
        Cancelling a wait for every proxy stops reading their records.
        """
        shared = SharedStore([record(1)])
        propagation = Propagation(self.clock, self.served, shared)
        waiting = propagation.whenServed(2, everywhere=True)
        self.assertEqual(shared.reads, 1)
        waiting.cancel()
        self.failureResultOf(waiting, CancelledError)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10)
        self.assertEqual(shared.reads, 1)


class AdminPropagationTests(SynchronousTestCase):
    """
    The admin's writes answer once their change serves on this gateway's
    proxy processes (or after C{propagationTimeout}, saying so), and every
    answer that read or wrote the store names the revision.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = FileStore(None)
        self.served = ServedRevisions()
        self.shared: Optional[SharedStore] = None
        self.makeAPI()

    def makeAPI(self, **kwargs: Any) -> None:
        self.propagation = Propagation(self.clock, self.served, self.shared)
        self.api = AdminAPI(
            self.store,
            TOKEN,
            self.clock,
            propagation=self.propagation,
            propagationTimeout=2.0,
            proxies=lambda: [{"addr": "here", "revision": self.served.lowest()}],
            **kwargs,
        )
        self.stub = StubTreq(self.api.resource())

    def send(self, method: str, path: str, body: Any = None) -> Deferred:
        headers = {"Authorization": "Bearer " + TOKEN}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        return self.stub.request(method, BASE + path, data=data, headers=headers)

    def answer(self, pending: Deferred) -> Tuple[int, Dict[str, str], Any]:
        self.stub.flush()
        response = self.successResultOf(pending)
        content = self.successResultOf(response.content())
        headers = {
            name.decode("latin-1").lower(): values[-1].decode("latin-1")
            for name, values in response.headers.getAllRawHeaders()
        }
        return response.code, headers, json.loads(content) if content else None

    def call(self, method: str, path: str, body: Any = None) -> Tuple[int, Dict[str, str], Any]:
        return self.answer(self.send(method, path, body))

    def test_writeWaitsForEveryWorker(self) -> None:
        """
        A write answers only once every worker serves its revision; the
        answer names the revision and says the change serves everywhere.
        """
        self.served.serving(0, 0)
        self.served.serving(1, 0)
        pending = self.send("POST", "/servers", SERVER)
        self.stub.flush()
        self.assertNoResult(pending)
        self.served.serving(0, 1)
        self.stub.flush()
        self.assertNoResult(pending)
        self.served.serving(1, 1)
        code, headers, _ = self.answer(pending)
        self.assertEqual(code, 201)
        self.assertEqual(headers["x-gateway-revision"], "1")
        self.assertEqual(headers["x-gateway-propagation"], "complete")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_workerNeverConfirms(self) -> None:
        """
        A worker that does not confirm within C{propagationTimeout} does
        not hold the answer longer: it comes then, saying that the change
        does not serve everywhere yet, and the wait is forgotten.
        """
        self.served.serving(0, 0)
        code, headers = self.answeredAtTheBound(self.send("PUT", "/servers/s1", SERVER))
        self.assertEqual(code, 201)
        self.assertEqual(headers["x-gateway-revision"], "1")
        self.assertEqual(headers["x-gateway-propagation"], "incomplete")
        self.assertEqual(self.served._waiters, [])

    def answeredAtTheBound(self, pending: Deferred) -> Tuple[int, Dict[str, str]]:
        """
        @return: the status and headers of the answer of C{pending}, which
            comes at C{propagationTimeout} (2 s), not before.
        """
        self.stub.flush()
        self.clock.advance(1.9)
        self.stub.flush()
        self.assertNoResult(pending)
        self.clock.advance(0.1)
        code, headers, _ = self.answer(pending)
        return code, headers

    def test_boundedWhateverTheWaitDoes(self) -> None:
        """
        The answer comes at C{propagationTimeout}, saying C{incomplete},
        even when the wait does not end on being cancelled (as a read of
        the proxies' records in flight did: its retry swallowed the
        cancellation), and the late end of the wait is ignored.
        """
        stuck: Deferred = Deferred()
        stuck.cancel = lambda: None  # type: ignore[method-assign]

        def whenServed(revision: int, everywhere: bool) -> Deferred:
            # Fired, and waiting on stuck: its cancel() goes to stuck's.
            return succeed(None).addCallback(lambda _: stuck)

        self.patch(self.propagation, "whenServed", whenServed)
        code, headers = self.answeredAtTheBound(self.send("PUT", "/servers/s1", SERVER))
        self.assertEqual((code, headers["x-gateway-propagation"]), (201, "incomplete"))
        stuck.callback(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_workerDiesWhileWaited(self) -> None:
        """
        A worker that dies while a write waits for it still holds the wait
        (it is a configured worker): the answer comes, complete, once the
        worker that replaces it serves (it loads the current state first).
        """
        self.served.expect(0)
        self.served.expect(1)
        self.served.serving(0, 0)
        self.served.serving(1, 0)
        pending = self.send("POST", "/servers", SERVER)
        self.served.serving(0, 1)
        self.served.gone(1)
        self.stub.flush()
        self.clock.advance(1.0)
        self.stub.flush()
        self.assertNoResult(pending)
        self.served.serving(1, 1)
        code, headers, _ = self.answer(pending)
        self.assertEqual((code, headers["x-gateway-propagation"]), (201, "complete"))

    def test_workerNotServingIsIncomplete(self) -> None:
        """
        A configured worker that serves nothing (it could not start, or is
        restarting) makes every write answer C{incomplete} once the bound
        passed, never C{complete}.
        """
        self.served.expect(0)
        self.served.expect(1)
        self.served.serving(0, 0)
        pending = self.send("PUT", "/servers/s1", SERVER)
        self.served.serving(0, 1)
        self.stub.flush()
        self.assertNoResult(pending)
        self.clock.advance(2.0)
        code, headers, _ = self.answer(pending)
        self.assertEqual((code, headers["x-gateway-propagation"]), (201, "incomplete"))

    def test_deleteWaits(self) -> None:
        """
        A delete waits the same way.
        """
        self.call("POST", "/servers", SERVER)
        self.served.serving(0, 1)
        pending = self.send("DELETE", "/servers/s1")
        self.stub.flush()
        self.assertNoResult(pending)
        self.served.serving(0, 2)
        code, headers, _ = self.answer(pending)
        self.assertEqual((code, headers["x-gateway-revision"]), (204, "2"))

    def test_unchangedWriteDoesNotWait(self) -> None:
        """
        A write that changes nothing answers at once with the revision it
        read, and no propagation header: nothing was propagated.
        """
        self.call("POST", "/servers", SERVER)
        self.served.serving(0, 1)
        code, headers, _ = self.call("PUT", "/servers/s1", SERVER)
        self.assertEqual((code, headers["x-gateway-revision"]), (200, "1"))
        self.assertNotIn("x-gateway-propagation", headers)

    def test_readsNameTheRevision(self) -> None:
        """
        Reads carry the revision they read: a list, an item, a missing
        item and a refused write alike; C{/proxies} and C{/stats} carry
        the revision this gateway serves.
        """
        self.call("POST", "/servers", SERVER)
        self.served.serving(0, 1)
        for path in ("/servers", "/servers/s1", "/servers/nope", "/clusters"):
            _, headers, _ = self.call("GET", path)
            self.assertEqual(headers["x-gateway-revision"], "1", path)
        code, headers, _ = self.call("POST", "/servers", SERVER)
        self.assertEqual((code, headers["x-gateway-revision"]), (409, "1"))
        code, headers, body = self.call("GET", "/proxies")
        self.assertEqual((code, headers["x-gateway-revision"]), (200, "1"))
        self.assertEqual(body, [{"addr": "here", "revision": 1}])
        _, headers, _ = self.call("GET", "/stats")
        self.assertEqual(headers["x-gateway-revision"], "1")

    def test_waitForProxies(self) -> None:
        """
        C{?wait=proxies} waits for every proxy registered in the shared
        store too.
        """
        self.shared = SharedStore([record(0)], [record(1)])
        self.makeAPI()
        pending = self.send("POST", "/servers?wait=proxies", SERVER)
        self.stub.flush()
        self.assertNoResult(pending)
        self.clock.advance(self.propagation.pollInterval)
        code, headers, _ = self.answer(pending)
        self.assertEqual((code, headers["x-gateway-propagation"]), (201, "complete"))

    def test_waitForProxiesBounded(self) -> None:
        """
        A proxy whose record never shows the revision does not hold the
        answer beyond C{propagationTimeout}; the records are no longer
        read afterwards.
        """
        self.shared = SharedStore([record(0)])
        self.makeAPI()
        pending = self.send("POST", "/servers?wait=proxies", SERVER)
        self.stub.flush()
        self.clock.pump([self.propagation.pollInterval] * 40)
        code, headers, _ = self.answer(pending)
        self.assertEqual((code, headers["x-gateway-propagation"]), (201, "incomplete"))
        reads = self.shared.reads
        self.clock.advance(10)
        self.assertEqual(self.shared.reads, reads)

    def test_workersOnlyByDefault(self) -> None:
        """
        Without C{?wait=proxies} (or with C{?wait=workers}), the records of
        other proxies are not read.
        """
        self.shared = SharedStore([record(0)])
        self.makeAPI()
        for name, path in (("s1", "/servers"), ("s2", "/servers?wait=workers")):
            code, headers, _ = self.call("POST", path, dict(SERVER, name=name))
            self.assertEqual((code, headers["x-gateway-propagation"]), (201, "complete"))
        self.assertEqual(self.shared.reads, 0)

    def test_badWait(self) -> None:
        """
        Any other C{wait} is refused, naming the parameter, and changes
        nothing.
        """
        for query in ("?wait=everyone", "?wait=proxies&wait=workers"):
            code, _, body = self.call("POST", "/servers" + query, SERVER)
            self.assertEqual((code, body["field"]), (400, "wait"), query)
        code, _, body = self.call("DELETE", "/servers/s1?wait=1")
        self.assertEqual((code, body["field"]), (400, "wait"))
        self.assertEqual(self.successResultOf(self.store.load()).revision, 0)

    def test_withoutPropagation(self) -> None:
        """
        An admin given no propagation answers a write once it is committed,
        still naming the revision.
        """
        api = AdminAPI(FileStore(None), None, self.clock)
        stub = StubTreq(api.resource())
        response = self.successResultOf(
            stub.request(
                "POST",
                BASE + "/servers",
                data=json.dumps(SERVER).encode(),
                headers={"Content-Type": "application/json"},
            )
        )
        self.assertEqual(response.code, 201)
        self.assertEqual(response.headers.getRawHeaders("x-gateway-revision"), ["1"])
        self.assertEqual(response.headers.getRawHeaders("x-gateway-propagation"), ["complete"])


class Client:
    """
    The lease and put calls of an L{gateway.store.etcd.client.EtcdClient},
    each answered when the test says.
    """

    def __init__(self) -> None:
        self.puts: List[Deferred] = []
        self.records: List[Dict[str, Any]] = []

    def leaseGrant(self, ttl: int) -> Deferred:
        return succeed((7, ttl))

    def leaseKeepAlive(self, lease: int) -> Deferred:
        return succeed(10)

    def put(self, key: Any, value: bytes, lease: Any = None) -> Deferred:
        self.records.append(json.loads(value))
        d: Deferred = Deferred()
        self.puts.append(d)
        return d

    def leaseRevoke(self, lease: int) -> Deferred:
        return succeed(None)


class RegistryRefreshTests(SynchronousTestCase):
    """
    The proxy registry keeps the revision in a proxy's record fresh.
    """

    def test_refreshDuringAWrite(self) -> None:
        """
        A refresh asked for while the record is being written writes it
        again as soon as that write is done, not a refresh interval later.
        """
        clock = Clock()
        client = Client()
        live = {"revision": 1}
        registry = ProxyRegistry(
            client,  # type: ignore[arg-type]
            "/gw",
            "gw:8080",
            "1.0",
            startedAt="then",
            reactor=clock,
            extra=lambda: dict(live),
        )
        registry.startService()
        self.assertEqual([r["revision"] for r in client.records], [1])
        live["revision"] = 2
        registry.refresh()
        client.puts[0].callback(None)
        self.assertEqual([r["revision"] for r in client.records], [1, 2])
        client.puts[1].callback(None)
        self.successResultOf(registry.stopService())
