"""
Tests for L{gateway.balancing.health}.

Exact timing is checked with L{task.Clock} and a scripted
L{IUpstreamClient} whose requests the test answers by hand; the servers
come from a real L{SnapshotManager} fed with store states.  Real-reactor
tests then run the checker with L{HTTP11UpstreamClient} against a real
twisted.web server on 127.0.0.1.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import attrs
import pytest
import pytest_twisted
from fakes import ScriptedUpstreamClient
from twisted.internet import defer, reactor, task
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.protocols.policies import WrappingFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IResponse
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gateway.balancing.backend import Backend
from gateway.balancing.health import BODY_LIMIT, HealthChecker
from gateway.filters import FilterRegistry
from gateway.http.client import HTTP11UpstreamClient
from gateway.http.errors import UpstreamConnectError
from gateway.interfaces import IUpstreamClient
from gateway.routing.snapshot import SnapshotManager
from gateway.store import StoreState

# -- a scripted upstream client ------------------------------------------------


@implementer(IResponse)
class ScriptedResponse:
    """
    A response whose body is delivered, in chunks, as soon as a protocol
    asks for it; it stops when the reader stops the transport.
    """

    version = (b"HTTP", 1, 1)
    request = None
    previousResponse = None

    def __init__(self, code: int, chunks: Sequence[bytes]) -> None:
        self.code = code
        self.phrase = b"Whatever"
        self.headers = Headers()
        self.length = UNKNOWN_LENGTH
        self.chunks = chunks
        self.transport = StringTransport()

    def deliverBody(self, protocol: Any) -> None:
        protocol.makeConnection(self.transport)
        for chunk in self.chunks:
            if self.transport.producerState == "stopped":
                return
            protocol.dataReceived(chunk)
        protocol.connectionLost(Failure(ResponseDone()))

    def setPreviousResponse(self, response: Any) -> None:
        self.previousResponse = response


@attrs.define
class Call:
    """
    One request made through L{ScriptedClient}, answered by the test.
    """

    backend: Any
    method: bytes
    uri: bytes
    headers: Headers
    timeout: Optional[float]
    cancelled: bool = False
    deferred: defer.Deferred = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.deferred = defer.Deferred(self._cancel)

    def _cancel(self, d: defer.Deferred) -> None:
        self.cancelled = True

    def answer(self, code: int = 200, *chunks: bytes) -> ScriptedResponse:
        response = ScriptedResponse(code, chunks or (b"ok",))
        self.deferred.callback(response)
        return response

    def fail(self, error: Exception) -> None:
        self.deferred.errback(error)


class ScriptedClient(ScriptedUpstreamClient):
    """
    An L{IUpstreamClient} that records requests and leaves their answers to
    the test.  (A test double for exact timing only: the real client is
    exercised in L{RealServerTests}.)
    """

    def __init__(self) -> None:
        self.calls: List[Call] = []

    def respond(
        self,
        backend: Any,
        method: bytes,
        uri: bytes,
        headers: Headers,
        bodyProducer: Any = None,
        timeout: Optional[float] = None,
    ) -> defer.Deferred:
        call = Call(backend, method, uri, headers, timeout)
        self.calls.append(call)
        return call.deferred

    def close(self) -> defer.Deferred:
        return defer.succeed(None)

    def callsTo(self, name: str) -> List[Call]:
        return [c for c in self.calls if c.backend.name == name]


# -- servers and snapshots -------------------------------------------------------


def server(name: str, port: int = 8001, **healthCheck: Any) -> Dict[str, Any]:
    """
    @return: the JSON of a server; with a C{healthCheck} when any check
        setting is given.
    """
    data: Dict[str, Any] = {"name": name, "addr": f"127.0.0.1:{port}"}
    if healthCheck:
        data["healthCheck"] = dict({"path": "/health"}, **healthCheck)
    return data


class Bed:
    """
    A snapshot manager on a clock, a scripted client and a checker
    following the manager.
    """

    def __init__(self) -> None:
        self.clock = task.Clock()
        self.client = ScriptedClient()
        self.manager = SnapshotManager(FilterRegistry({}), self.clock)
        self.checker = HealthChecker(self.client, self.clock, self.manager)
        self.revision = 0

    def apply(self, *servers: Dict[str, Any]) -> None:
        """
        Serve a snapshot with these servers, all in cluster C{main}.
        """
        self.revision += 1
        self.manager.apply(
            StoreState(
                self.revision,
                {
                    "servers": {s["name"]: s for s in servers},
                    "clusters": {"main": {"name": "main", "servers": [s["name"] for s in servers]}},
                },
            )
        )

    def backend(self, name: str) -> Backend:
        return self.manager.backends[name]


class ScriptedClientTests(SynchronousTestCase):
    """
    The test doubles provide the interfaces they stand in for.
    """

    def test_interfaces(self) -> None:
        """
        The scripted client is an L{IUpstreamClient}, its responses are
        L{IResponse}s.
        """
        self.assertTrue(verifyObject(IUpstreamClient, ScriptedClient()))
        self.assertTrue(verifyObject(IResponse, ScriptedResponse(200, [b"x"])))


class CheckTests(SynchronousTestCase):
    """
    What a check sends, and what passes.
    """

    def setUp(self) -> None:
        self.bed = Bed()

    def test_firstCheckAtStart(self) -> None:
        """
        At start, each server with a check is checked at once: a GET of its
        path, with the gateway's User-Agent and the check's timeout.  A
        server without a check is not.
        """
        bed = self.bed
        bed.apply(server("a", path="/ping", timeout=2.5), server("b"))
        self.assertEqual(bed.client.calls, [])
        bed.checker.startService()
        [call] = bed.client.calls
        self.assertIs(call.backend, bed.backend("a"))
        self.assertEqual((call.method, call.uri, call.timeout), (b"GET", b"/ping", 2.5))
        self.assertEqual(call.headers.getRawHeaders(b"user-agent"), [b"gateway-health-check"])
        self.assertEqual(bed.checker.checking, ["a"])

    def test_fall(self) -> None:
        """
        A server turns unhealthy at its C{fall}-th failure in a row, and a
        pass in between starts the count over.
        """
        bed = self.bed
        bed.apply(server("a", interval=1.0, fall=3))
        bed.checker.startService()
        backend = bed.backend("a")
        results = []
        for code in (500, 500, 200, 500, 500, 500):
            bed.client.calls[-1].answer(code)
            results.append(backend.healthy)
            bed.clock.advance(1.0)
        self.assertEqual(results, [True, True, True, True, True, False])
        self.assertEqual(len(bed.client.calls), 7)

    def test_rise(self) -> None:
        """
        An unhealthy server is healthy again at its C{rise}-th pass in a
        row; a failure in between starts the count over.
        """
        bed = self.bed
        bed.apply(server("a", interval=1.0, rise=2))
        bed.checker.startService()
        backend = bed.backend("a")
        results = []
        for code in (500, 200, 500, 200, 200):
            bed.client.calls[-1].answer(code)
            results.append(backend.healthy)
            bed.clock.advance(1.0)
        self.assertEqual(results, [False, False, False, False, True])

    def test_expectedStatus(self) -> None:
        """
        A check passes on the configured status only: with C{status: 204},
        a 200 fails.
        """
        bed = self.bed
        bed.apply(server("a", interval=1.0, status=204))
        bed.checker.startService()
        bed.client.calls[-1].answer(200)
        self.assertFalse(bed.backend("a").healthy)
        self.assertEqual(bed.checker.status("a")["lastError"], "status 200, expected 204")
        bed.clock.advance(1.0)
        bed.client.calls[-1].answer(204, b"")
        self.assertTrue(bed.backend("a").healthy)

    def test_bodySubstring(self) -> None:
        """
        With C{body} set, the answer must contain it, even when it arrives
        split across chunks.
        """
        bed = self.bed
        bed.apply(server("a", interval=1.0, body="status: UP"))
        bed.checker.startService()
        bed.client.calls[-1].answer(200, b"{status: DOWN}")
        self.assertFalse(bed.backend("a").healthy)
        self.assertEqual(bed.checker.status("a")["lastError"], "body does not contain 'status: UP'")
        bed.clock.advance(1.0)
        bed.client.calls[-1].answer(200, b"{stat", b"us: U", b"P}")
        self.assertTrue(bed.backend("a").healthy)

    def test_bodyReadBounded(self) -> None:
        """
        At most 64 KB of the answer is read: the reader stops the transfer
        there, and text past it is not seen.
        """
        bed = self.bed
        bed.apply(server("a", interval=1.0, body="found"))
        bed.checker.startService()
        response = bed.client.calls[-1].answer(200, b"x" * (BODY_LIMIT - 1), b"found", b"more")
        self.assertEqual(response.transport.producerState, "stopped")
        self.assertFalse(bed.backend("a").healthy)
        bed.clock.advance(1.0)
        response = bed.client.calls[-1].answer(200, b"x" * (BODY_LIMIT - 5), b"found")
        self.assertTrue(bed.backend("a").healthy)

    def test_timeout(self) -> None:
        """
        A check without an answer within C{timeout} fails: its request is
        cancelled, and the next one starts C{interval} later.
        """
        bed = self.bed
        bed.apply(server("a", interval=5.0, timeout=2.0))
        bed.checker.startService()
        bed.clock.advance(1.999)
        self.assertTrue(bed.backend("a").healthy)
        bed.clock.advance(0.001)
        self.assertFalse(bed.backend("a").healthy)
        self.assertTrue(bed.client.calls[0].cancelled)
        self.assertEqual(bed.checker.status("a")["lastError"], "no answer within 2s")
        bed.clock.advance(4.999)
        self.assertEqual(len(bed.client.calls), 1)
        bed.clock.advance(0.001)
        self.assertEqual(len(bed.client.calls), 2)

    def test_slowBodyTimesOut(self) -> None:
        """
        The timeout covers the body too: headers in time and a body that
        never ends fail the check, and the body transfer is stopped.
        """
        bed = self.bed
        bed.apply(server("a", interval=5.0, timeout=2.0))
        bed.checker.startService()

        class Endless(ScriptedResponse):
            def deliverBody(self, protocol: Any) -> None:
                protocol.makeConnection(self.transport)
                protocol.dataReceived(b"o")

        response = Endless(200, ())
        bed.clock.advance(1.0)
        bed.client.calls[0].deferred.callback(response)
        self.assertTrue(bed.backend("a").healthy)
        bed.clock.advance(1.0)
        self.assertFalse(bed.backend("a").healthy)
        self.assertEqual(response.transport.producerState, "stopped")

    def test_connectionRefused(self) -> None:
        """
        A check that cannot connect fails, and says why.
        """
        bed = self.bed
        bed.apply(server("a", interval=1.0))
        bed.checker.startService()
        bed.client.calls[-1].fail(UpstreamConnectError("Connection refused"))
        self.assertFalse(bed.backend("a").healthy)
        self.assertEqual(
            bed.checker.status("a")["lastError"], "connection failed: Connection refused"
        )

    def test_unexpectedError(self) -> None:
        """
        Any other error of the client fails the check too.
        """
        bed = self.bed
        bed.apply(server("a", interval=1.0))
        bed.checker.startService()
        bed.client.calls[-1].fail(ValueError("odd"))
        self.assertFalse(bed.backend("a").healthy)
        self.assertEqual(bed.checker.status("a")["lastError"], "ValueError: odd")


class SchedulingTests(SynchronousTestCase):
    """
    When checks run.
    """

    def setUp(self) -> None:
        self.bed = Bed()

    def test_oneInFlight(self) -> None:
        """
        A slow check delays the next one: nothing else is sent while it is
        in flight, and the next starts C{interval} after it finished.
        """
        bed = self.bed
        bed.apply(server("a", interval=1.0, timeout=10.0))
        bed.checker.startService()
        bed.clock.advance(3.0)
        self.assertEqual(len(bed.client.calls), 1)
        bed.client.calls[0].answer(200)
        bed.clock.advance(0.999)
        self.assertEqual(len(bed.client.calls), 1)
        bed.clock.advance(0.001)
        self.assertEqual(len(bed.client.calls), 2)

    def test_minimumInterval(self) -> None:
        """
        However short the interval, checks of one server are at least
        0.1 s apart.
        """
        bed = self.bed
        bed.apply(server("a", interval=0.001))
        bed.checker.startService()
        bed.client.calls[0].answer(200)
        bed.clock.advance(0.099)
        self.assertEqual(len(bed.client.calls), 1)
        bed.clock.advance(0.001)
        self.assertEqual(len(bed.client.calls), 2)

    def test_unhealthyKeepsBeingChecked(self) -> None:
        """
        An unhealthy server is checked every C{interval} still, and comes
        back at its first pass (C{rise} 1).
        """
        bed = self.bed
        bed.apply(server("a", interval=2.0))
        bed.checker.startService()
        for _ in range(3):
            bed.client.calls[-1].answer(503)
            bed.clock.advance(2.0)
        self.assertEqual(len(bed.client.calls), 4)
        self.assertFalse(bed.backend("a").healthy)
        bed.client.calls[-1].answer(200)
        self.assertTrue(bed.backend("a").healthy)

    def test_notRunningNotChecking(self) -> None:
        """
        Before start, snapshots are followed but nothing is checked; at
        start the latest one is.
        """
        bed = self.bed
        bed.checker.startService()
        bed.checker.stopService()
        bed.apply(server("a", interval=1.0))
        self.assertEqual(bed.client.calls, [])
        bed.checker.startService()
        self.assertEqual(len(bed.client.calls), 1)

    def test_withoutManager(self) -> None:
        """
        Without a manager, the checker follows the snapshots given to
        C{update}.
        """
        bed = self.bed
        bed.apply(server("a", interval=1.0))
        checker = HealthChecker(bed.client, bed.clock)
        checker.update(bed.manager.snapshot)
        self.assertEqual(bed.client.calls, [])
        checker.startService()
        self.assertEqual(len(bed.client.calls), 1)
        checker.stopService()


class SnapshotChangeTests(SynchronousTestCase):
    """
    The checker follows the servers of the snapshots.
    """

    def setUp(self) -> None:
        self.bed = Bed()
        self.bed.apply(server("a", interval=1.0), server("b", 8002, interval=1.0))
        self.bed.checker.startService()
        for call in self.bed.client.calls:
            call.answer(500)

    def test_added(self) -> None:
        """
        A server added with a check is checked at once; one added without
        is not.
        """
        bed = self.bed
        bed.apply(
            server("a", interval=1.0),
            server("b", 8002, interval=1.0),
            server("c", 8003, interval=1.0),
            server("d", 8004),
        )
        self.assertEqual(len(bed.client.callsTo("c")), 1)
        self.assertEqual(bed.client.callsTo("d"), [])
        self.assertEqual(bed.checker.checking, ["a", "b", "c"])

    def test_unchangedKeepsSchedule(self) -> None:
        """
        A new snapshot with the same check changes nothing: no extra check,
        the next one at its time, the counts of the old schedule kept.
        """
        bed = self.bed
        bed.clock.advance(0.5)
        bed.apply(server("a", interval=1.0), server("b", 8002, interval=1.0))
        self.assertEqual(len(bed.client.calls), 2)
        bed.clock.advance(0.5)
        self.assertEqual(len(bed.client.calls), 4)

    def test_removed(self) -> None:
        """
        A removed server is not checked any more: its timer is cancelled and
        its check in flight too; its stats are forgotten.
        """
        bed = self.bed
        bed.clock.advance(1.0)
        [inFlight] = bed.client.callsTo("b")[1:]
        bed.apply(server("a", interval=1.0))
        self.assertTrue(inFlight.cancelled)
        self.assertEqual(bed.checker.checking, ["a"])
        self.assertEqual(bed.checker.status("b")["checked"], False)
        self.assertEqual(bed.checker.status("b")["transitions"], [])
        bed.client.callsTo("a")[-1].answer(200)
        bed.clock.advance(10.0)
        self.assertEqual(len(bed.client.callsTo("b")), 2)

    def test_checkRemoved(self) -> None:
        """
        A server whose check is removed is healthy again and not checked.
        """
        bed = self.bed
        self.assertFalse(bed.backend("b").healthy)
        bed.apply(server("a", interval=1.0), server("b", 8002))
        self.assertTrue(bed.backend("b").healthy)
        bed.clock.advance(10.0)
        self.assertEqual(len(bed.client.callsTo("b")), 1)
        self.assertEqual(bed.checker.checking, ["a"])

    def test_changedRestarts(self) -> None:
        """
        A changed check restarts the server's schedule at once with the new
        settings: the check in flight is cancelled, and the counts start
        over.
        """
        bed = self.bed
        bed.clock.advance(1.0)
        old = bed.client.callsTo("a")[-1]
        bed.apply(
            server("a", interval=1.0, path="/v2/health", rise=2),
            server("b", 8002, interval=1.0),
        )
        self.assertTrue(old.cancelled)
        new = bed.client.callsTo("a")[-1]
        self.assertEqual(new.uri, b"/v2/health")
        new.answer(200)
        self.assertFalse(bed.backend("a").healthy)
        bed.clock.advance(1.0)
        bed.client.callsTo("a")[-1].answer(200)
        self.assertTrue(bed.backend("a").healthy)

    def test_newAddressRestarts(self) -> None:
        """
        A server moved to another address is checked there at once.
        """
        bed = self.bed
        bed.apply(server("a", 9001, interval=1.0), server("b", 8002, interval=1.0))
        self.assertEqual(bed.client.callsTo("a")[-1].backend.port, 9001)
        self.assertEqual(len(bed.client.callsTo("a")), 2)


class StopTests(SynchronousTestCase):
    """
    Stopping the service stops everything.
    """

    def test_stopCancelsEverything(self) -> None:
        """
        stopService cancels every timer and every check in flight; answers
        that come later change nothing.
        """
        bed = Bed()
        bed.apply(server("a", interval=1.0), server("b", 8002, interval=1.0))
        bed.checker.startService()
        bed.client.callsTo("a")[0].answer(500)
        self.assertEqual(len(bed.clock.getDelayedCalls()), 2)  # a's next, b's timeout
        self.assertIsNone(bed.checker.stopService())
        self.assertEqual(bed.clock.getDelayedCalls(), [])
        self.assertTrue(bed.client.callsTo("b")[0].cancelled)
        bed.clock.advance(100.0)
        self.assertEqual(len(bed.client.calls), 2)
        self.assertEqual(bed.checker.checking, [])
        # Health is left as it was.
        self.assertFalse(bed.backend("a").healthy)
        self.assertTrue(bed.backend("b").healthy)


class StatusTests(SynchronousTestCase):
    """
    The stats of a server's checks.
    """

    def test_status(self) -> None:
        """
        C{status} gives the health, since when, the last check and error,
        and the transitions with their reasons; each transition is logged.
        """
        bed = Bed()
        bed.clock.advance(100.0)
        bed.apply(server("a", interval=1.0, fall=2))
        with capturedLogs() as events:
            bed.checker.startService()
            self.assertEqual(
                bed.checker.status("a"),
                {
                    "checked": True,
                    "healthy": True,
                    "since": 100.0,
                    "lastCheck": None,
                    "lastError": None,
                    "transitions": [],
                },
            )
            for at, code in ((100.5, 500), (102.0, 500), (104.0, 200)):
                bed.clock.advance(at - bed.clock.seconds())
                bed.client.calls[-1].answer(code)
                bed.clock.advance(1.0)
        self.assertEqual(
            bed.checker.status("a"),
            {
                "checked": True,
                "healthy": True,
                "since": 104.0,
                "lastCheck": 104.0,
                "lastError": "status 500, expected 200",
                "transitions": [
                    {
                        "at": 102.0,
                        "healthy": False,
                        "reason": "failed 2 check(s) in a row: status 500, expected 200",
                    },
                    {"at": 104.0, "healthy": True, "reason": "passed 1 check(s) in a row"},
                ],
            },
        )
        logged = [(e["server"], e["healthy"]) for e in events if "healthy" in e]
        self.assertEqual(logged, [("a", False), ("a", True)])

    def test_unchecked(self) -> None:
        """
        A server without a check reports it is not checked.
        """
        bed = Bed()
        bed.apply(server("a"))
        bed.checker.startService()
        self.assertEqual(bed.checker.status("a")["checked"], False)
        self.assertEqual(bed.checker.statuses(), {})


# -- real reactor, real server, real client ---------------------------------------


class HealthResource(Resource):
    """
    C{/health} answers C{200 ok} while C{up}, else C{503 down}; with
    C{hang} set it never answers.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.up = True
        self.hang = False
        self.hits = 0

    def render_GET(self, request: Any) -> Any:
        self.hits += 1
        if self.hang:
            return NOT_DONE_YET
        if request.path != b"/health":
            request.setResponseCode(404)
            return b"no"
        if not self.up:
            request.setResponseCode(503)
            return b"down"
        return b"ok"


async def waitFor(predicate: Any, limit: float = 5.0) -> None:
    """
    Poll C{predicate} on the real reactor until it holds, failing after
    C{limit} seconds.
    """
    deadline = reactor.seconds() + limit
    while not predicate():
        assert reactor.seconds() < deadline, "condition not reached in time"
        await task.deferLater(reactor, 0.01, lambda: None)


class RealServer:
    """
    Two real backends on 127.0.0.1 (C{b1} with a toggled C{/health}, C{b2}
    always well), a real snapshot manager and a checker over the real
    upstream client.
    """

    async def start(self, **check: Any) -> None:
        self.resources = {"b1": HealthResource(), "b2": HealthResource()}
        # WrappingFactory keeps the connections, so a test can drop them.
        self.sites = {
            name: WrappingFactory(Site(resource)) for name, resource in self.resources.items()
        }
        self.ports = {
            name: reactor.listenTCP(0, site, interface="127.0.0.1")
            for name, site in self.sites.items()
        }
        self.client = HTTP11UpstreamClient(reactor, connectTimeout=1.0)
        self.manager = SnapshotManager(FilterRegistry({}), reactor)
        check = dict({"interval": 0.1, "timeout": 1.0, "body": "ok"}, **check)
        self.manager.apply(
            StoreState(
                1,
                {
                    "servers": {
                        name: server(name, port.getHost().port, **check)
                        for name, port in self.ports.items()
                    },
                    "clusters": {"main": {"name": "main", "servers": ["b1", "b2"]}},
                },
            )
        )
        self.checker = HealthChecker(self.client, reactor, self.manager)
        self.checker.startService()

    def picks(self, count: int = 6) -> List[Optional[str]]:
        cluster = self.manager.snapshot.clusters["main"]
        return [getattr(cluster.choose(), "name", None) for _ in range(count)]

    async def stop(self) -> None:
        self.checker.stopService()
        await self.client.close()
        for port in self.ports.values():
            if port.connected:
                await port.stopListening()


# Real sockets on 127.0.0.1 and the real reactor: an integration test.
@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_leavesAndReentersRotation() -> None:
    """
    With the real client against a real server: when C{/health} starts
    failing, the server leaves the cluster's rotation within about one
    interval, and comes back once it passes again.
    """
    bed = RealServer()
    await bed.start()
    try:
        b1 = bed.manager.backends["b1"]
        await waitFor(lambda: bed.checker.status("b1")["lastCheck"] is not None)
        assert b1.healthy
        assert sorted(set(bed.picks())) == ["b1", "b2"]

        bed.resources["b1"].up = False
        started = reactor.seconds()
        await waitFor(lambda: not b1.healthy)
        assert reactor.seconds() - started < 1.0
        assert bed.picks() == ["b2"] * 6
        assert bed.checker.status("b1")["lastError"] == "status 503, expected 200"

        bed.resources["b1"].up = True
        await waitFor(lambda: b1.healthy)
        assert sorted(set(bed.picks())) == ["b1", "b2"]
        assert [t["healthy"] for t in bed.checker.status("b1")["transitions"]] == [False, True]
    finally:
        await bed.stop()


# Real sockets on 127.0.0.1 and the real reactor: an integration test.
@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_refusedAndHangingServers() -> None:
    """
    With the real client: a server that stops listening fails its check
    (connection refused), and one that hangs fails it at the timeout; with
    both out, the cluster has nothing to pick.
    """
    bed = RealServer()
    await bed.start(timeout=0.3)
    try:
        await waitFor(lambda: bed.resources["b2"].hits > 0)
        # b1 dies: it stops listening and drops its connections.
        await bed.ports["b1"].stopListening()
        for protocol in list(bed.sites["b1"].protocols):
            protocol.transport.abortConnection()
        bed.resources["b2"].hang = True
        await waitFor(
            lambda: (bed.checker.status("b1")["lastError"] or "").startswith("connection failed")
        )
        assert not bed.manager.backends["b1"].healthy
        await waitFor(lambda: not bed.manager.backends["b2"].healthy)
        assert bed.checker.status("b2")["lastError"] == "no answer within 0.3s"
        assert bed.picks() == [None] * 6
    finally:
        await bed.stop()
