"""
Tests for L{gateway.store.etcd.client.EtcdClient} and its parts.

The pieces that need no server (back-off, the line-buffered stream reader,
outage logging, URL parsing, failover, a watch on scripted streams) are
tested alone; the client itself against a
real etcd 3.4 (Debian's C{etcd-server}) started by the test on free
loopback ports: every operation, a 200 KB value through a watch, a watch
that resumes without losing an event after its stream is cut or etcd
restarts, a resync after compaction, and failover between the members of a
3-member cluster.
"""

from __future__ import annotations

import ast
import base64
import json
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest
import pytest_twisted
from etcdserver import etcd, etcdCluster  # noqa: F401  (fixtures)
from harness import freePort
from twisted.internet import reactor, task, threads
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.testing import StringTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone, ResponseNeverReceived

from gateway.store import StoreError
from gateway.store.etcd import client as etcdModule
from gateway.store.etcd.client import (
    DELETE,
    JITTER,
    PUT,
    Availability,
    EtcdClient,
    EtcdError,
    EtcdIndeterminate,
    EtcdUnavailable,
    Event,
    KeyValue,
    compareModRevision,
    compareValue,
    compareVersion,
    etcdBackoff,
    opDelete,
    opPut,
    opRange,
    prefixEnd,
)
from gateway.store.etcd.store import parseEtcdURL
from gateway.store.etcd.watch import EtcdWatch, _LineStream, startWatch

# -- without a server ------------------------------------------------------------------


class BackoffTests(SynchronousTestCase):
    """
    Tests for L{etcdBackoff}, Twisted's C{backoffPolicy} as the etcd
    modules use it.
    """

    def test_doublesUpToTheCap(self) -> None:
        """
        Without jitter the delays double from 0.1 s and stay at the 5 s
        cap, however many attempts failed.
        """
        policy = etcdBackoff(random=lambda: 0.0)
        delays = [round(policy(attempt), 6) for attempt in range(9)]
        self.assertEqual(delays, [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0])
        self.assertEqual(policy(10_000), 5.0)

    def test_jitter(self) -> None:
        """
        The jitter adds up to L{JITTER} seconds to each delay, drawn from
        the random source.
        """
        policy = etcdBackoff(random=lambda: 0.5)
        self.assertEqual(
            [policy(a) for a in range(3)], [0.1 + JITTER / 2, 0.2 + JITTER / 2, 0.4 + JITTER / 2]
        )
        self.assertEqual(etcdBackoff(random=lambda: 1.0)(20), 5.0 + JITTER)

    def test_clientDefault(self) -> None:
        """
        A client's policy is L{etcdBackoff} unless it is given one.
        """
        client = EtcdClient(["a:1"], task.Clock(), treqClient=FakeTreq())
        for attempt in range(8):
            delay = client.backoff(attempt)
            base = min(0.1 * 2**attempt, 5.0)
            self.assertTrue(base <= delay < base + JITTER, (attempt, delay))
        policy = etcdBackoff(random=lambda: 0.0)
        self.assertIs(EtcdClient(["a:1"], task.Clock(), backoff=policy).backoff, policy)


class ModuleBoundaryTests(SynchronousTestCase):
    """
    The store modules keep to public names: Twisted's, and each other's.
    """

    STORE = Path(etcdModule.__file__).parent.parent

    def privateUses(self, path: Path) -> List[str]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found = []
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                parts = (node.module or "").split(".")
                names = [alias.name for alias in node.names]
                if node.module == "__future__":
                    continue
                if any(p.startswith("_") for p in parts) or any(n.startswith("_") for n in names):
                    found.append(f"{path.name}:{node.lineno}: from {node.module} import {names}")
            elif isinstance(node, ast.Attribute):
                private = node.attr.startswith("_") and not node.attr.startswith("__")
                own = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
                if private and not own:
                    found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
        return found

    def test_noPrivateNames(self) -> None:
        """
        No module under C{gateway/store} imports a private name (of Twisted
        or of another module) or touches another object's private
        attribute.
        """
        found = []
        for path in sorted(self.STORE.rglob("*.py")):
            found.extend(self.privateUses(path))
        self.assertEqual(found, [])

    def test_clientKnowsNoWatch(self) -> None:
        """
        The dependency between the client and the watch points one way:
        the client module imports nothing of the watch, the store or the
        registry.
        """
        tree = ast.parse(Path(etcdModule.__file__).read_text(encoding="utf-8"))
        imported = {
            node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module is not None
        }
        self.assertEqual(sorted(m for m in imported if m.startswith("gateway.store.etcd")), [])
        self.assertNotIn("EtcdWatch", Path(etcdModule.__file__).read_text(encoding="utf-8"))


class ValuesTests(SynchronousTestCase):
    """
    Tests for the small value helpers.
    """

    def test_prefixEnd(self) -> None:
        """
        The range end of a prefix is the prefix with its last byte below
        0xff incremented (and the rest dropped); all 0xff means "to the
        end".
        """
        self.assertEqual(prefixEnd(b"/gateway/"), b"/gateway0")
        self.assertEqual(prefixEnd(b"a\xff"), b"b")
        self.assertEqual(prefixEnd(b"\xff\xff"), b"\0")

    def test_keyValueFromJSON(self) -> None:
        """
        Keys and values are base64; int64 fields arrive as strings and
        missing ones are 0.
        """
        kv = KeyValue.fromJSON(
            {"key": "L2E=", "value": "eyJ4IjoxfQ==", "mod_revision": "42", "version": "3"}
        )
        self.assertEqual(kv, KeyValue(b"/a", b'{"x":1}', 0, 42, 3, 0))

    def test_eventType(self) -> None:
        """
        An event without a type is a PUT (the gateway leaves out enum zero).
        """
        self.assertEqual(Event.fromJSON({"kv": {"key": "L2E="}}).type, PUT)
        self.assertEqual(Event.fromJSON({"type": "DELETE", "kv": {"key": "L2E="}}).type, DELETE)

    def test_operations(self) -> None:
        """
        The compare and operation builders produce the JSON gateway's form.
        """
        self.assertEqual(
            compareModRevision(b"/a/", "LESS", 7, rangeEnd=b"/a0"),
            {
                "target": "MOD",
                "key": "L2Ev",
                "result": "LESS",
                "mod_revision": "7",
                "range_end": "L2Ew",
            },
        )
        self.assertEqual(
            compareVersion("/a", "EQUAL", 0),
            {"target": "VERSION", "key": "L2E=", "result": "EQUAL", "version": "0"},
        )
        self.assertEqual(
            compareValue("/a", "EQUAL", b"v"),
            {"target": "VALUE", "key": "L2E=", "result": "EQUAL", "value": "dg=="},
        )
        self.assertEqual(compareVersion("/a/", "GREATER", 0, rangeEnd="/a0")["range_end"], "L2Ew")
        self.assertEqual(opPut("/a", "v", lease=5)["request_put"]["lease"], "5")
        self.assertEqual(opDelete("/a/", prefix=True)["request_delete_range"]["range_end"], "L2Ew")
        self.assertNotIn("range_end", opRange("/a")["request_range"])
        self.assertIs(
            opRange("/a/", prefix=True, keysOnly=True)["request_range"]["keys_only"], True
        )

    def test_errorFromJSON(self) -> None:
        """
        An error object of an answer or a stream becomes an L{EtcdError}
        with its gRPC code; etcd refusing a transaction for its size is
        told apart from other invalid requests.
        """
        error = EtcdError.fromJSON({"grpc_code": 14, "http_code": 503, "message": "no leader"})
        self.assertEqual((error.code, error.status, error.message), (14, 503, "no leader"))
        self.assertEqual(EtcdError.fromJSON("broken").message, "broken")
        tooMany = EtcdError(3, "etcdserver: too many operations in txn request")
        tooBig = EtcdError(3, "etcdserver: request is too large")
        grpcLimit = EtcdError(8, "grpc: received message larger than max")
        other = EtcdError(3, "etcdserver: duplicate key given in txn request")
        self.assertEqual(
            [e.tooLarge for e in (tooMany, tooBig, grpcLimit, other)], [True, True, True, False]
        )

    def test_parseURL(self) -> None:
        """
        An C{etcd://} URL names one or several endpoints and a prefix
        (C{/gateway} by default).
        """
        self.assertEqual(
            parseEtcdURL("etcd://127.0.0.1:2379,10.0.0.2:2380/gw/east/"),
            (["127.0.0.1:2379", "10.0.0.2:2380"], "/gw/east"),
        )
        self.assertEqual(parseEtcdURL("etcd://h:1"), (["h:1"], "/gateway"))
        for bad in ("etcd:///x", "etcd://host/x", "etcd://h:1,h2/x", "http://h:1/x"):
            self.assertRaises(ValueError, parseEtcdURL, bad)


class LineStreamTests(SynchronousTestCase):
    """
    Tests for L{_LineStream}, the reader of the gateway's JSON stream.
    """

    def setUp(self) -> None:
        self.messages: List[Dict[str, Any]] = []
        self.stream = _LineStream(self.messages.append)
        self.transport = StringTransport()
        self.stream.makeConnection(self.transport)

    def test_lineAcrossManyReads(self) -> None:
        """
        A 200 KB line that arrives in 1000-byte reads is delivered once,
        whole, when its newline arrives.
        """
        value = "x" * 200_000
        data = json.dumps({"result": {"v": value}}).encode() + b"\n"
        for i in range(0, len(data) - 1, 1000):
            self.stream.dataReceived(data[i : min(i + 1000, len(data) - 1)])
        self.assertEqual(self.messages, [])
        self.stream.dataReceived(b"\n")
        self.assertEqual(self.messages, [{"result": {"v": value}}])

    def test_severalLinesInOneRead(self) -> None:
        """
        Several lines in one read, and a partial one after them, give their
        messages in order; the partial one waits for its end.
        """
        self.stream.dataReceived(b'{"a":1}\n{"a":2}\n\n{"a"')
        self.assertEqual(self.messages, [{"a": 1}, {"a": 2}])
        self.stream.dataReceived(b":3}\n")
        self.assertEqual(self.messages, [{"a": 1}, {"a": 2}, {"a": 3}])

    def test_notJSON(self) -> None:
        """
        A line that is not JSON drops the stream: the transport is stopped
        and the stream ends with a L{StoreError} saying so.
        """
        self.stream.dataReceived(b'{"a":1}\nnot json\n{"a":2}\n')
        self.assertEqual(self.messages, [{"a": 1}])
        self.assertEqual(self.transport.producerState, "stopped")
        self.stream.connectionLost(Failure(ResponseDone()))
        reason = self.successResultOf(self.stream.done)
        self.assertIn("not JSON", str(reason))

    def test_lineTooLong(self) -> None:
        """
        A line longer than the limit drops the stream.
        """
        stream = _LineStream(self.messages.append, maxLine=10)
        stream.makeConnection(self.transport)
        stream.dataReceived(b'{"a": "0123456789"')
        self.assertEqual(self.transport.producerState, "stopped")
        self.assertTrue(stream.aborted)

    def test_end(self) -> None:
        """
        When the connection ends, C{done} fires with the reason.
        """
        self.stream.connectionLost(Failure(ResponseDone()))
        self.assertIsInstance(self.successResultOf(self.stream.done), ResponseDone)


class AvailabilityTests(SynchronousTestCase):
    """
    Tests for L{Availability}: an outage is logged once when it starts and
    once when it ends.
    """

    def setUp(self) -> None:
        self.events: List[Dict[str, Any]] = []
        self.patch(etcdModule, "log", Logger(observer=self.events.append))
        self.clock = task.Clock()

    def test_outageOnceAcrossRetries(self) -> None:
        """
        Failures on one endpoint of two are no outage; once both failed,
        one warning is logged however many failures follow, and one
        message when an endpoint answers again, with the outage's length.
        """
        availability = Availability(["a:1", "b:2"], self.clock)
        availability.failed("a:1", ValueError("refused"))
        self.assertEqual(self.events, [])
        self.assertTrue(availability.available)
        availability.failed("b:2", ValueError("refused"))
        for _ in range(20):
            self.clock.advance(1)
            availability.failed("a:1", ValueError("refused"))
            availability.failed("b:2", ValueError("refused"))
        self.assertEqual(len(self.events), 1)
        self.assertFalse(availability.available)
        self.assertIn("unreachable", self.events[0]["log_format"])
        availability.succeeded("b:2")
        availability.succeeded("b:2")
        self.assertEqual(len(self.events), 2)
        self.assertEqual(self.events[1]["duration"], 20.0)
        self.assertTrue(availability.available)

    def test_successClearsFailures(self) -> None:
        """
        A success between failures of different endpoints means etcd is
        reachable: no outage is logged.
        """
        availability = Availability(["a:1", "b:2"], self.clock)
        availability.failed("a:1", ValueError("refused"))
        availability.succeeded("b:2")
        availability.failed("b:2", ValueError("refused"))
        self.assertEqual(self.events, [])


class FakeResponse:
    """
    The part of a treq response the client reads.
    """

    def __init__(self, code: int, body: Any) -> None:
        self.code = code
        self._body = body if isinstance(body, bytes) else json.dumps(body).encode()

    def content(self) -> Deferred:
        return succeed(self._body)


class FakeTreq:
    """
    A treq client whose answers a test scripts per endpoint: an exception
    to fail with, a L{FakeResponse}, or L{None} for a request that never
    gets an answer.
    """

    def __init__(self) -> None:
        self.answers: Dict[str, List[Any]] = {}
        self.requests: List[Tuple[str, Dict[str, Any]]] = []
        self.unbuffered: List[bool] = []

    def post(
        self, url: str, data: bytes, headers: Any = None, unbuffered: bool = False
    ) -> Deferred:
        endpoint, path = url[len("http://") :].split("/", 1)
        self.requests.append((endpoint + " /" + path, json.loads(data)))
        self.unbuffered.append(unbuffered)
        answer = self.answers[endpoint].pop(0)
        if answer is None:
            return Deferred()
        if isinstance(answer, BaseException):
            return fail(answer)
        return succeed(answer)


OK = FakeResponse(200, {"header": {"revision": "9"}})
REFUSED = ConnectionRefusedError("refused")
LOST = ResponseNeverReceived([Failure(ConnectionDone())])
NO_LEADER = FakeResponse(503, {"error": "etcdserver: no leader", "message": "x", "code": 14})


class ClientFailoverTests(SynchronousTestCase):
    """
    Tests for how L{EtcdClient} moves between endpoints, with scripted
    answers.
    """

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.treq = FakeTreq()
        self.events: List[Dict[str, Any]] = []
        self.patch(etcdModule, "log", Logger(observer=self.events.append))
        self.client = EtcdClient(
            ["a:1", "b:2"], reactor=self.clock, treqClient=self.treq, timeout=5.0
        )

    def endpoints(self) -> List[str]:
        return [request.split(" ")[0] for request, _ in self.treq.requests]

    def test_readFailsOver(self) -> None:
        """
        A read that fails on one endpoint (refused, lost, or etcd unable to
        serve) is sent to the next, which then stays the current one.
        """
        for problem in (REFUSED, LOST, NO_LEADER):
            client = EtcdClient(["a:1", "b:2"], self.clock, treqClient=self.treq)
            self.treq.answers = {"a:1": [problem], "b:2": [OK]}
            kvs, revision = self.successResultOf(client.range("/k"))
            self.assertEqual((kvs, revision), ([], 9))
            self.assertEqual(client.currentEndpoint, "b:2")
        self.assertEqual(self.endpoints(), ["a:1", "b:2"] * 3)

    def test_writeNotSentFailsOver(self) -> None:
        """
        A write that certainly never reached etcd (connection refused) is
        sent to the next endpoint.
        """
        self.treq.answers = {"a:1": [REFUSED], "b:2": [OK]}
        self.assertEqual(self.successResultOf(self.client.put("/k", b"v")), 9)
        self.assertEqual(self.endpoints(), ["a:1", "b:2"])

    def test_writeMaybeSentIsIndeterminate(self) -> None:
        """
        A write whose answer was lost is not sent again (it may have been
        applied): it fails with L{EtcdIndeterminate}, and the next request
        goes to the next endpoint.
        """
        self.treq.answers = {"a:1": [LOST], "b:2": [OK]}
        self.failureResultOf(self.client.put("/k", b"v"), EtcdIndeterminate)
        self.assertEqual(self.endpoints(), ["a:1"])
        self.assertEqual(self.client.currentEndpoint, "b:2")

    def test_readOnlyTxnFailsOver(self) -> None:
        """
        A transaction that only reads is sent again to the next endpoint
        after its answer was lost, as a range is; one that writes is not.
        """
        self.treq.answers = {"a:1": [LOST], "b:2": [OK]}
        result = self.successResultOf(self.client.txn([], [opRange("/k")], [opRange("/j")]))
        self.assertEqual(result.revision, 9)
        self.treq.answers = {"b:2": [LOST], "a:1": [OK]}
        self.failureResultOf(
            self.client.txn([], [opRange("/k"), opPut("/k", b"v")]), EtcdIndeterminate
        )
        self.assertEqual(self.endpoints(), ["a:1", "b:2", "b:2"])

    def test_writeUnavailable(self) -> None:
        """
        etcd answering "unavailable" to a write fails it with that
        L{EtcdError}.
        """
        self.treq.answers = {"a:1": [NO_LEADER], "b:2": [OK]}
        failure = self.failureResultOf(self.client.put("/k", b"v"), EtcdError)
        self.assertEqual(failure.value.code, 14)

    def test_errorAnswer(self) -> None:
        """
        Any other error answer is raised as it is, without failing over.
        """
        notFound = FakeResponse(404, {"error": "x", "message": "lease not found", "code": 5})
        self.treq.answers = {"a:1": [notFound]}
        failure = self.failureResultOf(self.client.leaseRevoke(7), EtcdError)
        self.assertEqual((failure.value.code, failure.value.message), (5, "lease not found"))
        self.assertEqual(self.client.currentEndpoint, "a:1")

    def test_timeout(self) -> None:
        """
        A request with no answer after the timeout counts as a failure: a
        read goes to the next endpoint.
        """
        self.treq.answers = {"a:1": [None], "b:2": [OK]}
        d = self.client.range("/k")
        self.assertNoResult(d)
        self.clock.advance(5.0)
        self.assertEqual(self.successResultOf(d)[1], 9)

    def test_allDownLoggedOnce(self) -> None:
        """
        When no endpoint answers, requests fail with L{EtcdUnavailable}; the
        outage is logged once however many requests fail, and once more
        when etcd answers again.
        """
        self.treq.answers = {"a:1": [REFUSED] * 20, "b:2": [REFUSED] * 20 + [OK]}
        for _ in range(5):
            self.failureResultOf(self.client.range("/k"), EtcdUnavailable)
            self.clock.advance(1)
        warnings = [e for e in self.events if "unreachable" in e["log_format"]]
        self.assertEqual(len(warnings), 1)
        self.treq.answers["a:1"] = [OK]
        self.treq.answers["b:2"] = [OK]
        self.successResultOf(self.client.range("/k"))
        ends = [e for e in self.events if "answers again" in e["log_format"]]
        self.assertEqual(len(ends), 1)

    def test_retrying(self) -> None:
        """
        L{EtcdClient.retrying} runs an operation again after each
        L{EtcdUnavailable}, waiting with back-off, until it succeeds.
        """
        client = EtcdClient(
            ["a:1"],
            reactor=self.clock,
            treqClient=self.treq,
            backoff=etcdBackoff(random=lambda: 0.0),
        )
        self.treq.answers = {"a:1": [REFUSED] * 4 + [OK]}
        d = client.retrying(lambda: client.range("/k"))
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.assertNoResult(d)
        self.clock.advance(0.2)
        self.assertEqual(self.successResultOf(d)[1], 9)


class StreamResponse:
    """
    A 200 answer whose body is a stream the test writes into, line by line.
    """

    code = 200

    def __init__(self) -> None:
        self.protocol: Any = None
        self.transport = StringTransport()

    def deliverBody(self, protocol: Any) -> None:
        self.protocol = protocol
        protocol.makeConnection(self.transport)

    def send(self, message: Dict[str, Any]) -> None:
        self.protocol.dataReceived(json.dumps(message).encode() + b"\n")

    def end(self, reason: Optional[Exception] = None) -> None:
        self.protocol.connectionLost(Failure(reason or ResponseDone()))


def created(revision: int) -> Dict[str, Any]:
    return {"result": {"header": {"revision": str(revision)}, "created": True}}


def events(*puts: Tuple[bytes, bytes, int]) -> Dict[str, Any]:
    return {
        "result": {
            "events": [
                {
                    "kv": {
                        "key": base64.b64encode(key).decode(),
                        "value": base64.b64encode(value).decode(),
                        "mod_revision": str(revision),
                    }
                }
                for key, value, revision in puts
            ]
        }
    }


class WatchTests(SynchronousTestCase):
    """
    Tests for L{EtcdWatch} on an L{EtcdClient} whose streams the test
    scripts: the watch uses only the client's public surface.
    """

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.treq = FakeTreq()
        self.client = EtcdClient(
            ["a:1", "b:2"],
            self.clock,
            treqClient=self.treq,
            backoff=etcdBackoff(random=lambda: 0.0),
        )
        self.seen: List[Tuple[List[Event], int]] = []

    def creates(self) -> List[Tuple[str, Dict[str, Any]]]:
        return [(where, body["create_request"]) for where, body in self.treq.requests]

    def test_madeWithoutIO(self) -> None:
        """
        Making a watch sends nothing; L{EtcdWatch.start} opens an
        unbuffered stream (treq would otherwise keep every byte a stream
        that lives for days ever sent) for the prefix, from the start
        revision.
        """
        stream = StreamResponse()
        self.treq.answers = {"a:1": [stream]}
        watch = EtcdWatch(self.client, "/w/", self.record, prefix=True, startRevision=5)
        self.assertEqual(self.treq.requests, [])
        watch.start()
        self.assertEqual(
            self.creates(),
            [("a:1 /v3/watch", {"key": "L3cv", "range_end": "L3cw", "start_revision": "5"})],
        )
        self.assertEqual(self.treq.unbuffered, [True])

    def record(self, events: List[Event], revision: int) -> None:
        self.seen.append((events, revision))

    def test_eventsAndResume(self) -> None:
        """
        Events are delivered in order with their revision; when the stream
        ends the failure is reported to the client (which moves to the next
        endpoint), and after the back-off's first delay the watch resumes
        there from the last revision delivered plus one.  Once a stream is
        created the back-off starts again from its first delay.
        """
        first, second, third = StreamResponse(), StreamResponse(), StreamResponse()
        self.treq.answers = {"a:1": [first, third], "b:2": [second]}
        watch = startWatch(self.client, "/w/", self.record, prefix=True)
        first.send(created(3))
        self.assertTrue(watch.connected)
        self.assertEqual(watch.revision, 3)
        first.send(events((b"/w/a", b"1", 4), (b"/w/b", b"2", 4)))
        first.send(events((b"/w/a", b"3", 6)))
        self.assertEqual(
            [([(e.kv.key, e.kv.value) for e in batch], r) for batch, r in self.seen],
            [([(b"/w/a", b"1"), (b"/w/b", b"2")], 4), ([(b"/w/a", b"3")], 6)],
        )
        first.end()
        self.assertFalse(watch.connected)
        self.assertEqual(self.client.currentEndpoint, "b:2")
        self.clock.advance(0.05)
        self.assertEqual(len(self.treq.requests), 1)
        self.clock.advance(0.05)
        self.assertEqual(
            self.creates()[1],
            ("b:2 /v3/watch", {"key": "L3cv", "range_end": "L3cw", "start_revision": "7"}),
        )
        second.send(created(6))
        second.end(ConnectionDone())
        self.clock.advance(0.1)
        self.assertEqual(self.creates()[2][0], "a:1 /v3/watch")
        self.assertEqual(self.creates()[2][1]["start_revision"], "7")

    def test_errorMessage(self) -> None:
        """
        An error message on the stream drops it, and the watch opens
        another (on the next endpoint, when etcd said it cannot serve)
        after a back-off, growing while the errors go on.
        """
        streams = [StreamResponse() for _ in range(3)]
        # etcd unable to serve: each new stream goes to the next endpoint.
        self.treq.answers = {"a:1": [streams[0], streams[2]], "b:2": [streams[1]]}
        startWatch(self.client, "/w/", self.record, prefix=True, startRevision=2)
        streams[0].send({"error": {"grpc_code": 14, "message": "no leader"}})
        self.assertEqual(streams[0].transport.producerState, "stopped")
        streams[0].end()
        self.clock.advance(0.1)
        self.assertEqual(len(self.treq.requests), 2)
        streams[1].send({"error": {"grpc_code": 14, "message": "no leader"}})
        streams[1].end()
        self.clock.advance(0.1)
        self.assertEqual(len(self.treq.requests), 2)
        self.clock.advance(0.1)
        self.assertEqual(len(self.treq.requests), 3)

    def test_resumesAsSoonAsAnOutageEnds(self) -> None:
        """
        A watch waiting out an outage (every endpoint refused it, its
        back-off grew to 0.8 s) opens its next stream as soon as another
        request through the client gets an answer, not a whole back-off
        later: a change committed once etcd is back is followed at once.
        A wait that is not under an outage is not cut short.
        """
        stream = StreamResponse()
        self.treq.answers = {"a:1": [REFUSED, REFUSED, OK, stream], "b:2": [REFUSED, REFUSED]}
        watch = startWatch(self.client, "/w/", self.record, prefix=True, startRevision=5)
        for delay in (0.1, 0.2, 0.4):
            self.clock.advance(delay)
        self.assertEqual(len(self.treq.requests), 4)
        self.assertFalse(self.client.availability.available)
        # Waiting 0.8 s now; a read gets an answer after 0.1 s of it.
        self.clock.advance(0.1)
        self.successResultOf(self.client.range(b"/k"))
        self.assertEqual(len(self.treq.requests), 6)
        where, body = self.treq.requests[-1]
        self.assertEqual((where, body["create_request"]["start_revision"]), ("a:1 /v3/watch", "5"))
        stream.send(created(8))
        self.assertTrue(watch.connected)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_sleepCancelled(self) -> None:
        """
        Cancelling a L{EtcdClient.sleep} stops its timer; an outage ending
        later does not fire it again.
        """
        d = self.client.sleep(3)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.client.endpointFailed("a:1", REFUSED)
        self.client.endpointFailed("b:2", REFUSED)
        self.client.endpointAnswered("a:1")

    def test_sleepNotCutShortWithoutOutage(self) -> None:
        """
        An answer while etcd is not in an outage leaves a back-off wait as
        it is.
        """
        d = self.client.sleep(3)
        self.client.endpointAnswered("a:1")
        self.assertNoResult(d)
        self.clock.advance(3)
        self.successResultOf(d)

    def test_closingTheClientStopsTheWatch(self) -> None:
        """
        Closing the client stops its watches (their streams are dropped and
        no other is opened); a closed client starts no watch.
        """
        stream = StreamResponse()
        self.treq.answers = {"a:1": [stream]}
        watch = startWatch(self.client, "/w/", self.record, prefix=True)
        stream.send(created(3))
        self.successResultOf(self.client.close())
        self.assertEqual(stream.transport.producerState, "stopped")
        stream.end()
        self.clock.advance(10)
        self.assertEqual(len(self.treq.requests), 1)
        self.assertFalse(watch.connected)
        self.assertRaises(StoreError, startWatch, self.client, "/w/", self.record)

    def test_stop(self) -> None:
        """
        A stopped watch drops its stream, opens no other, and is no longer
        stopped by the client's close.
        """
        stream = StreamResponse()
        self.treq.answers = {"a:1": [stream]}
        watch = startWatch(self.client, "/w/", self.record, prefix=True)
        stream.send(created(3))
        self.successResultOf(watch.stop())
        self.assertEqual(stream.transport.producerState, "stopped")
        self.clock.advance(10)
        self.assertEqual(len(self.treq.requests), 1)
        self.successResultOf(self.client.close())


# -- against a real etcd ---------------------------------------------------------------

#: The longest any one step of these tests may take.
STEP = 15.0


def within(d: Any, seconds: float = STEP) -> Deferred:
    """
    @return: C{d} (a Deferred or a coroutine), failing with a timeout after
        C{seconds}.
    """
    if not isinstance(d, Deferred):
        d = Deferred.fromCoroutine(d)
    return d.addTimeout(seconds, reactor)


async def until(predicate: Callable[[], Any], seconds: float = STEP, what: str = "") -> None:
    """
    Wait until C{predicate()} is true, letting the reactor run.
    """
    deadline = reactor.seconds() + seconds
    while not predicate():
        assert reactor.seconds() < deadline, f"timed out waiting for {what or predicate}"
        await task.deferLater(reactor, 0.01, lambda: None)


def newClient(endpoints: List[str], **kwargs: Any) -> EtcdClient:
    kwargs.setdefault("timeout", 3.0)
    return EtcdClient(endpoints, reactor=reactor, **kwargs)


class Recorder:
    """
    Collects what a watch delivers.
    """

    def __init__(self) -> None:
        self.batches: List[Tuple[List[Event], int]] = []
        self.resyncs: List[Tuple[List[KeyValue], int]] = []

    def events(self, events: List[Event], revision: int) -> None:
        self.batches.append((events, revision))

    def resync(self, kvs: List[KeyValue], revision: int) -> None:
        self.resyncs.append((kvs, revision))

    @property
    def all(self) -> List[Event]:
        return [event for events, _ in self.batches for event in events]

    def puts(self) -> List[Tuple[bytes, bytes]]:
        return [(e.kv.key, e.kv.value) for e in self.all if e.type == PUT]


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_putGetRangeDelete(etcd):  # noqa: F811
    """
    Put returns the new revision; get and range read back keys and values
    (a prefix range sorted by key, with create/mod revisions and versions);
    a range at an older revision sees the old value; delete of a prefix
    says how many keys went.
    """
    client = newClient([etcd.endpoint])
    try:
        r1 = await within(client.put("/t/a", b"one"))
        r2 = await within(client.put("/t/b", "two"))
        r3 = await within(client.put("/t/a", b"uno"))
        await within(client.put("/u/c", b"other"))
        assert r1 < r2 < r3
        kv = await within(client.get("/t/a"))
        assert (kv.key, kv.value, kv.createRevision, kv.modRevision, kv.version) == (
            b"/t/a",
            b"uno",
            r1,
            r3,
            2,
        )
        assert await within(client.get("/t/none")) is None
        kvs, revision = await within(client.range("/t/", prefix=True))
        assert [(k.key, k.value) for k in kvs] == [(b"/t/a", b"uno"), (b"/t/b", b"two")]
        assert revision == r3 + 1
        old, _ = await within(client.range("/t/a", revision=r2))
        assert old[0].value == b"one"
        deleted, r5 = await within(client.delete("/t/", prefix=True))
        assert (deleted, r5) == (2, r3 + 2)
        assert (await within(client.range("/t/", prefix=True)))[0] == []
        assert (await within(client.get("/u/c"))).value == b"other"
        deleted, _ = await within(client.delete("/u/c"))
        assert deleted == 1
    finally:
        await client.close()


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_txn(etcd):  # noqa: F811
    """
    A transaction runs its success operations when every compare holds and
    its failure operations otherwise; a compare over a key range (etcd 3.4)
    holds only when every key in it does, and a missing key compares as
    revision 0.
    """
    client = newClient([etcd.endpoint])
    try:
        r1 = await within(client.put("/x/a", b"1"))
        r2 = await within(client.put("/x/b", b"2"))
        result = await within(
            client.txn(
                [compareModRevision("/x/a", "EQUAL", r1), compareVersion("/x/new", "EQUAL", 0)],
                [opPut("/x/new", b"3"), opDelete("/x/b")],
                [opRange("/x/", prefix=True)],
            )
        )
        assert result.succeeded
        assert result.revision == r2 + 1
        assert [list(r) for r in result.responses] == [["response_put"], ["response_delete_range"]]
        # Nothing under /x/ changed after r2 + 1: holds; after r2: fails.
        holds = await within(
            client.txn(
                [compareModRevision("/x/", "LESS", r2 + 2, rangeEnd=prefixEnd("/x/"))],
                [],
            )
        )
        assert holds.succeeded
        fails = await within(
            client.txn(
                [compareModRevision("/x/", "LESS", r2 + 1, rangeEnd=prefixEnd("/x/"))],
                [opPut("/x/never", b"")],
                [opRange("/x/", prefix=True)],
            )
        )
        assert not fails.succeeded
        kvs = fails.responses[0]["response_range"]["kvs"]
        assert sorted(KeyValue.fromJSON(kv).key for kv in kvs) == [b"/x/a", b"/x/new"]
        assert await within(client.get("/x/never")) is None
        missing = await within(
            client.txn([compareModRevision("/nothing/", "LESS", 1, prefixEnd("/nothing/"))], [])
        )
        assert missing.succeeded
    finally:
        await client.close()


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_leases(etcd):  # noqa: F811
    """
    A lease is granted with its TTL, keeps its keys while kept alive, and
    takes them when revoked; keeping a revoked lease alive answers TTL 0,
    and revoking an unknown lease fails with etcd's "not found" (code 5).
    """
    client = newClient([etcd.endpoint])
    try:
        lease, ttl = await within(client.leaseGrant(10))
        assert lease > 0 and ttl == 10
        await within(client.put("/l/key", b"v", lease=lease))
        assert (await within(client.get("/l/key"))).lease == lease
        assert await within(client.leaseKeepAlive(lease)) == 10
        remaining = await within(client.leaseTimeToLive(lease))
        assert 8 <= remaining <= 10
        await within(client.leaseRevoke(lease))
        assert await within(client.get("/l/key")) is None
        assert await within(client.leaseKeepAlive(lease)) == 0
        with pytest.raises(EtcdError) as caught:
            await within(client.leaseRevoke(lease))
        assert caught.value.code == 5
    finally:
        await client.close()


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_errors(etcd):  # noqa: F811
    """
    An error answer from etcd is an L{EtcdError} with its code and message;
    a client whose only endpoint is down fails with L{EtcdUnavailable}.
    """
    client = newClient([etcd.endpoint])
    down = newClient([f"127.0.0.1:{freePort()}"])
    try:
        await within(client.put("/e/a", b"1"))
        await within(client.compact(await within(client.put("/e/a", b"2"))))
        with pytest.raises(EtcdError) as caught:
            await within(client.range("/e/a", revision=1))
        assert caught.value.code == 11
        assert "compacted" in caught.value.message
        with pytest.raises(EtcdUnavailable):
            await within(down.range("/e/a"))
    finally:
        await client.close()
        await down.close()


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_watchEvents(etcd):  # noqa: F811
    """
    A prefix watch delivers typed PUT and DELETE events with their
    revisions, only for keys under the prefix, the events of one
    transaction in one batch; it can start from an older revision.
    """
    client = newClient([etcd.endpoint])
    seen = Recorder()
    try:
        r0 = await within(client.put("/w/before", b"0"))
        watch = startWatch(client, "/w/", seen.events, prefix=True, startRevision=r0)
        r1 = await within(client.put("/w/a", b"1"))
        await within(client.put("/other", b"x"))
        result = await within(client.txn([], [opPut("/w/b", b"2"), opDelete("/w/a")]))
        await until(lambda: len(seen.all) == 4, what="four events")
        assert [(e.type, e.kv.key, e.kv.value, e.kv.modRevision) for e in seen.all] == [
            (PUT, b"/w/before", b"0", r0),
            (PUT, b"/w/a", b"1", r1),
            (PUT, b"/w/b", b"2", result.revision),
            (DELETE, b"/w/a", b"", result.revision),
        ]
        assert seen.batches[-1][1] == result.revision
        # The transaction's two events never arrive in different batches.
        last = seen.batches[-1][0]
        assert [e.kv.modRevision for e in last[-2:]] == [result.revision] * 2
        assert watch.revision == result.revision
        await watch.stop()
        await within(client.put("/w/c", b"3"))
        await task.deferLater(reactor, 0.2, lambda: None)
        assert len(seen.all) == 4
    finally:
        await client.close()


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_watchLargeValue(etcd):  # noqa: F811
    """
    A 200 KB value (a watch line of about 270 KB, many network reads)
    arrives through a watch whole, followed by the next small event.
    """
    client = newClient([etcd.endpoint])
    seen = Recorder()
    big = bytes(range(256)) * 800
    try:
        watch = startWatch(client, "/big/", seen.events, prefix=True)
        await until(lambda: watch.connected, what="the watch")
        await within(client.put("/big/value", big))
        await within(client.put("/big/small", b"s"))
        await until(lambda: len(seen.all) == 2, what="two events")
        assert seen.puts() == [(b"/big/value", big), (b"/big/small", b"s")]
    finally:
        await client.close()


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_watchResumesAfterCut(etcd):  # noqa: F811
    """
    Cutting the watch's connection again and again while keys are written
    loses no event and repeats none: the watch resumes from the last
    revision it saw plus one.
    """
    client = newClient([etcd.endpoint])
    seen = Recorder()
    try:
        watch = startWatch(client, "/r/", seen.events, prefix=True)
        await until(lambda: watch.connected, what="the watch")
        expected = []
        for i in range(30):
            value = str(i).encode()
            await within(client.put(f"/r/k{i % 7}", value))
            expected.append((f"/r/k{i % 7}".encode(), value))
            if i % 3 == 0:
                watch.reconnect()
        await until(lambda: len(seen.all) >= 30, what="thirty events")
        await task.deferLater(reactor, 0.2, lambda: None)
        assert seen.puts() == expected
        revisions = [e.kv.modRevision for e in seen.all]
        assert revisions == sorted(set(revisions))
    finally:
        await client.close()


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_watchResumesAfterRestart(etcd):  # noqa: F811
    """
    When etcd restarts, the watch reconnects on its own and delivers the
    changes written before, during its reconnection, and after, in order
    and once each; the outage is logged once when it starts and once when
    it ends.
    """
    events: List[Dict[str, Any]] = []
    from twisted.logger import globalLogPublisher

    def observe(event: Dict[str, Any]) -> None:
        if event.get("log_namespace") == etcdModule.log.namespace:
            events.append(event)

    globalLogPublisher.addObserver(observe)
    client = newClient([etcd.endpoint])
    seen = Recorder()
    try:
        watch = startWatch(client, "/s/", seen.events, prefix=True)
        await until(lambda: watch.connected, what="the watch")
        await within(client.put("/s/before", b"1"))
        await within(threads.deferToThread(etcd.restart, 1.0))
        # Written as soon as etcd is back, before the watch has reconnected.
        await within(client.retrying(lambda: client.put("/s/after", b"2")))
        await until(lambda: len(seen.all) == 2, what="both events")
        assert seen.puts() == [(b"/s/before", b"1"), (b"/s/after", b"2")]
        await until(lambda: client.availability.available, what="the end of the outage")
        texts = [e["log_format"] for e in events if e.get("log_level").name in ("warn", "info")]
        assert sum("unreachable" in t for t in texts) == 1, texts
        assert sum("answers again" in t for t in texts) == 1, texts
    finally:
        globalLogPublisher.removeObserver(observe)
        await client.close()


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_watchResyncAfterCompaction(etcd):  # noqa: F811
    """
    A watch that must resume from a revision etcd has compacted away reads
    everything under its prefix again (the resync callback gets every key
    at the revision of the read) and then goes on with the events after it.
    """
    client = newClient([etcd.endpoint])
    seen = Recorder()
    try:
        first = await within(client.put("/c/a", b"1"))
        await within(client.put("/c/b", b"2"))
        await within(client.delete("/c/a"))
        last = await within(client.put("/c/c", b"3"))
        await within(client.compact(last))
        watch = startWatch(
            client, "/c/", seen.events, prefix=True, startRevision=first, onResync=seen.resync
        )
        await until(lambda: seen.resyncs, what="the resync")
        kvs, revision = seen.resyncs[0]
        assert [(kv.key, kv.value) for kv in kvs] == [(b"/c/b", b"2"), (b"/c/c", b"3")]
        assert revision == last
        await until(lambda: watch.connected, what="the new watch")
        await within(client.put("/c/d", b"4"))
        await until(lambda: seen.all, what="the next event")
        assert seen.puts() == [(b"/c/d", b"4")]
        assert len(seen.resyncs) == 1
    finally:
        await client.close()


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_failover(etcdCluster):  # noqa: F811
    """
    With three members, killing the one the client uses (a follower, so
    that no election is needed) moves reads, writes and the watch to the
    next member: nothing fails, and the watch misses no event.
    """
    first, second = etcdCluster.followers()
    client = newClient([first.endpoint, second.endpoint, etcdCluster.leader().endpoint])
    seen = Recorder()
    try:
        watch = startWatch(client, "/f/", seen.events, prefix=True)
        await until(lambda: watch.connected, what="the watch")
        await within(client.put("/f/a", b"1"))
        assert client.currentEndpoint == first.endpoint
        first.kill()
        # A moment for the reactor to see the pooled connections die.
        await task.deferLater(reactor, 0.1, lambda: None)
        await within(client.put("/f/b", b"2"))
        assert client.currentEndpoint == second.endpoint
        kvs, _ = await within(client.range("/f/", prefix=True))
        assert [kv.key for kv in kvs] == [b"/f/a", b"/f/b"]
        await until(lambda: len(seen.all) == 2, what="both events")
        assert seen.puts() == [(b"/f/a", b"1"), (b"/f/b", b"2")]
        await until(lambda: watch.connected, what="the watch on another member")
        await within(client.put("/f/c", b"3"))
        await until(lambda: len(seen.all) == 3, what="the third event")
    finally:
        await client.close()
