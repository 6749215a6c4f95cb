"""
An etcd of one member in memory, for the store's synchronous tests.

L{FakeEtcd} holds keys with their revisions and versions, leases that
expire on a L{twisted.internet.task.Clock}, the history of events, and
etcd's rules for a transaction: compares over a key or a range (an empty
range compares as one key of version 0, a C{VALUE} compare never holds for
a missing key), the success or the failure branch, C{--max-txn-ops},
C{--max-request-bytes} and no key named twice.  L{FakeEtcdClient} is the
part of L{gateway.store.etcd.client.EtcdClient}'s public surface that the
store and its watch use, on one L{FakeEtcd}; several clients on one server
are several gateways.  Each client takes scripted faults: a transaction
refused, or lost before or after it applied.

It is a test double, not a second etcd: the store's behaviour against the
real one is what the integration tests check.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Callable, Dict, List, Optional, Tuple

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone

from gateway.store import StoreError
from gateway.store.etcd.client import (
    DELETE,
    PUT,
    EtcdError,
    EtcdUnavailable,
    Event,
    KeyValue,
    TxnResult,
    etcdBackoff,
)


def _b(text: Optional[str]) -> bytes:
    return base64.b64decode(text) if text else b""


def _kvJSON(kv: KeyValue, keysOnly: bool = False) -> Dict[str, Any]:
    data: Dict[str, Any] = {
        "key": base64.b64encode(kv.key).decode(),
        "create_revision": str(kv.createRevision),
        "mod_revision": str(kv.modRevision),
        "version": str(kv.version),
    }
    if not keysOnly:
        data["value"] = base64.b64encode(kv.value).decode()
    if kv.lease:
        data["lease"] = str(kv.lease)
    return data


class _StreamTransport(StringTransport):
    """
    The transport of a watch stream: stopping it (the watch dropping the
    stream) closes the stream, on the next turn of the clock.
    """

    def __init__(self, stream: _Stream) -> None:
        super().__init__()
        self._stream = stream

    def stopProducing(self) -> None:
        super().stopProducing()
        self._stream.server.clock.callLater(0, self._stream.cut)


class _Stream:
    """
    A watch stream: the answer whose body the fake writes events into.
    """

    code = 200

    def __init__(self, server: FakeEtcd, key: bytes, end: Optional[bytes], start: Any) -> None:
        self.server = server
        self.key = key
        self.end = end
        self.start = start
        self.protocol: Any = None
        self.transport = _StreamTransport(self)
        self.open = True

    def covers(self, key: bytes) -> bool:
        if self.end is None:
            return key == self.key
        return self.key <= key and (self.end == b"\0" or key < self.end)

    def deliverBody(self, protocol: Any) -> None:
        self.protocol = protocol
        protocol.makeConnection(self.transport)
        self.server.startStream(self, self.start)

    def send(self, message: Dict[str, Any]) -> None:
        if self.open and self.protocol is not None:
            self.protocol.dataReceived(json.dumps(message).encode() + b"\n")

    def cut(self) -> None:
        """
        End the stream, as etcd stopping or the connection breaking would.
        """
        if self.open and self.protocol is not None:
            self.open = False
            self.protocol.connectionLost(Failure(ResponseDone()))


class FakeEtcd:
    """
    The server: keys, leases, history and transactions.

    @ivar revision: the current revision.
    @ivar txns: every transaction applied or refused, as sent (its
        compares and operations, base64 as on the wire).
    """

    def __init__(
        self, clock: Any, maxTxnOps: int = 128, maxRequestBytes: int = 1536 * 1024
    ) -> None:
        self.clock = clock
        self.maxTxnOps = maxTxnOps
        self.maxRequestBytes = maxRequestBytes
        self.kvs: Dict[bytes, KeyValue] = {}
        self.revision = 1
        self.history: List[Tuple[int, List[Event]]] = []
        self.leases: Dict[int, float] = {}
        self._nextLease = 100
        self.streams: List[_Stream] = []
        self.txns: List[Dict[str, Any]] = []

    # -- keys -----------------------------------------------------------------

    def _select(self, key: bytes, end: Optional[bytes]) -> List[KeyValue]:
        if end is None:
            return [self.kvs[key]] if key in self.kvs else []
        return [kv for k, kv in sorted(self.kvs.items()) if k >= key and (end == b"\0" or k < end)]

    def _write(self, events: List[Event], key: bytes, value: Optional[bytes], lease: int = 0):
        old = self.kvs.get(key)
        if value is None:
            if old is not None:
                del self.kvs[key]
                events.append(Event(DELETE, KeyValue(key, modRevision=self.revision)))
            return
        kv = KeyValue(
            key,
            value,
            createRevision=old.createRevision if old else self.revision,
            modRevision=self.revision,
            version=(old.version if old else 0) + 1,
            lease=lease,
        )
        self.kvs[key] = kv
        events.append(Event(PUT, kv))

    def _publish(self, events: List[Event]) -> None:
        if not events:
            return
        self.history.append((self.revision, events))
        for stream in list(self.streams):
            mine = [e for e in events if stream.covers(e.kv.key)]
            if mine:
                stream.send({"result": {"events": [self._eventJSON(e) for e in mine]}})

    @staticmethod
    def _eventJSON(event: Event) -> Dict[str, Any]:
        data: Dict[str, Any] = {"kv": _kvJSON(event.kv)}
        if event.type == DELETE:
            data["type"] = "DELETE"
        return data

    # -- leases ---------------------------------------------------------------

    def expireLeases(self) -> None:
        """
        Drop the leases whose TTL ran out, and their keys.
        """
        for lease, deadline in list(self.leases.items()):
            if self.clock.seconds() >= deadline:
                self.revoke(lease)

    def revoke(self, lease: int) -> bool:
        if self.leases.pop(lease, None) is None:
            return False
        keys = [k for k, kv in self.kvs.items() if kv.lease == lease]
        if keys:
            self.revision += 1
            events: List[Event] = []
            for key in keys:
                self._write(events, key, None)
            self._publish(events)
        return True

    def grant(self, ttl: int) -> int:
        self._nextLease += 1
        self.leases[self._nextLease] = self.clock.seconds() + ttl
        return self._nextLease

    # -- transactions ---------------------------------------------------------

    def _holds(self, compare: Dict[str, Any]) -> bool:
        key = _b(compare["key"])
        end = _b(compare["range_end"]) if "range_end" in compare else None
        target = compare["target"]
        kvs = self._select(key, end)
        if not kvs:
            if target == "VALUE":
                return False
            kvs = [KeyValue(key)]
        for kv in kvs:
            if target == "MOD":
                mine, theirs = kv.modRevision, int(compare["mod_revision"])
            elif target == "VERSION":
                mine, theirs = kv.version, int(compare["version"])
            else:
                mine, theirs = kv.value, _b(compare["value"])  # type: ignore[assignment]
            result = compare["result"]
            holds = {
                "EQUAL": mine == theirs,
                "NOT_EQUAL": mine != theirs,
                "LESS": mine < theirs,
                "GREATER": mine > theirs,
            }[result]
            if not holds:
                return False
        return True

    def _check(self, payload: Dict[str, Any]) -> None:
        for part in ("compare", "success", "failure"):
            if len(payload[part]) > self.maxTxnOps:
                raise EtcdError(3, "etcdserver: too many operations in txn request", 400)
        size = 0
        written: List[bytes] = []
        for op in payload["success"] + payload["failure"]:
            for request in op.values():
                size += len(_b(request.get("key"))) + len(_b(request.get("value"))) + 4
        for op in payload["success"]:
            for kind, request in op.items():
                if kind != "request_range":
                    written.append(_b(request["key"]))
        if size > self.maxRequestBytes:
            raise EtcdError(3, "etcdserver: request is too large", 400)
        if len(written) != len(set(written)):
            raise EtcdError(3, "etcdserver: duplicate key given in txn request", 400)

    def txn(self, payload: Dict[str, Any]) -> TxnResult:
        self.expireLeases()
        self.txns.append(payload)
        self._check(payload)
        succeeded = all(self._holds(c) for c in payload["compare"])
        ops = payload["success"] if succeeded else payload["failure"]
        writes = any("request_range" not in op for op in ops)
        if writes:
            self.revision += 1
        events: List[Event] = []
        responses = []
        for op in ops:
            if "request_range" in op:
                request = op["request_range"]
                end = _b(request["range_end"]) if "range_end" in request else None
                kvs = self._select(_b(request["key"]), end)
                keysOnly = bool(request.get("keys_only"))
                responses.append({"response_range": {"kvs": [_kvJSON(kv, keysOnly) for kv in kvs]}})
            elif "request_put" in op:
                request = op["request_put"]
                lease = int(request.get("lease", 0))
                if lease and lease not in self.leases:
                    raise AssertionError("put under a lease that does not exist")
                self._write(events, _b(request["key"]), _b(request["value"]), lease)
                responses.append({"response_put": {}})
            else:
                request = op["request_delete_range"]
                end = _b(request["range_end"]) if "range_end" in request else None
                for kv in self._select(_b(request["key"]), end):
                    self._write(events, kv.key, None)
                responses.append({"response_delete_range": {}})
        self._publish(events)
        return TxnResult(succeeded, responses, self.revision)

    def range(self, key: bytes, end: Optional[bytes]) -> Tuple[List[KeyValue], int]:
        self.expireLeases()
        return self._select(key, end), self.revision

    def watch(self, key: bytes, end: Optional[bytes], start: Optional[int]) -> _Stream:
        stream = _Stream(self, key, end, start)
        self.streams.append(stream)
        return stream

    def startStream(self, stream: _Stream, start: Optional[int]) -> None:
        stream.send({"result": {"header": {"revision": str(self.revision)}, "created": True}})
        if start is not None:
            for revision, events in self.history:
                mine = [e for e in events if revision >= start and stream.covers(e.kv.key)]
                if mine:
                    stream.send({"result": {"events": [self._eventJSON(e) for e in mine]}})

    def keys(self, prefix: bytes) -> Dict[bytes, bytes]:
        """
        @return: every key under C{prefix} and its value, as they are.
        """
        return {k: kv.value for k, kv in self.kvs.items() if k.startswith(prefix)}


#: A fault: given a transaction's payload, L{None} to let it be;
#: C{(exception, applied)} to fail the call with C{exception}, after
#: applying the transaction when C{applied} (an answer lost on its way
#: back); or a Deferred, to hold the transaction until it fires.
Fault = Callable[[Dict[str, Any]], Any]


class FakeEtcdClient:
    """
    What L{gateway.store.etcd.store.EtcdStore} and its watch use of an
    L{EtcdClient}, on a L{FakeEtcd}.

    @ivar faults: consulted, in order, before each transaction.
    """

    def __init__(self, server: FakeEtcd) -> None:
        self.server = server
        self.endpoints = ["fake:1"]
        self.currentEndpoint = "fake:1"
        self.backoff = etcdBackoff(random=lambda: 0.0)
        self.faults: List[Fault] = []
        self.closed = False
        self.dead = False
        self._onClose: List[Callable[[], Any]] = []

    def kill(self) -> None:
        """
        Make every later call fail as if this gateway had died: nothing it
        would still send reaches etcd (its leases are not revoked).
        """
        self.dead = True

    def _down(self) -> Deferred:
        return fail(EtcdUnavailable("no etcd endpoint answered (fake:1): dead"))

    def _apply(self, payload: Dict[str, Any]) -> Deferred:
        try:
            return succeed(self.server.txn(payload))
        except EtcdError as e:
            return fail(e)

    def txn(self, compare: Any, success: Any, failure: Any = ()) -> Deferred:
        if self.dead:
            return self._down()
        payload = {"compare": list(compare), "success": list(success), "failure": list(failure)}
        for fault in self.faults:
            outcome = fault(payload)
            if outcome is None:
                continue
            if isinstance(outcome, Deferred):
                return outcome.addCallback(lambda _: self._apply(payload))
            error, applied = outcome
            if applied:
                self.server.txn(payload)
            return fail(error)
        return self._apply(payload)

    def range(self, key: Any, prefix: bool = False, revision: Any = None, rangeEnd: Any = None):
        from gateway.store.etcd.client import prefixEnd

        if self.dead:
            return self._down()
        key = key.encode() if isinstance(key, str) else key
        end = prefixEnd(key) if prefix else rangeEnd
        return succeed(self.server.range(key, end))

    def retrying(self, operation: Callable[[], Any], what: str = "") -> Deferred:
        result = operation()
        return result if isinstance(result, Deferred) else Deferred.fromCoroutine(result)

    def leaseGrant(self, ttl: int) -> Deferred:
        if self.dead:
            return self._down()
        return succeed((self.server.grant(ttl), ttl))

    def leaseKeepAlive(self, lease: int) -> Deferred:
        if self.dead:
            return self._down()
        self.server.expireLeases()
        if lease not in self.server.leases:
            return succeed(0)
        self.server.leases[lease] = self.server.clock.seconds() + 15
        return succeed(15)

    def leaseRevoke(self, lease: int) -> Deferred:
        if self.dead:
            return self._down()
        if not self.server.revoke(lease):
            return fail(EtcdError(5, "etcdserver: requested lease not found"))
        return succeed(None)

    def sleep(self, seconds: float) -> Deferred:
        return deferLater(self.server.clock, seconds, lambda: None)

    def openStream(self, endpoint: str, path: str, payload: Dict[str, Any]) -> Deferred:
        if self.closed:
            return fail(StoreError("closed"))
        create = payload["create_request"]
        key = _b(create["key"])
        end = _b(create["range_end"]) if "range_end" in create else None
        start = int(create["start_revision"]) if "start_revision" in create else None
        return succeed(self.server.watch(key, end, start))

    def endpointFailed(self, endpoint: str, reason: Any) -> None:
        pass

    def endpointAnswered(self, endpoint: str) -> None:
        pass

    def onClose(self, stop: Callable[[], Any]) -> Callable[[], None]:
        self._onClose.append(stop)
        return lambda: self._onClose.remove(stop) if stop in self._onClose else None

    def close(self) -> Deferred:
        self.closed = True
        for stop in list(self._onClose):
            stop()
        return succeed(None)
