"""
The shared store: etcd v3, spoken to through its JSON gateway with treq.

L{EtcdClient} is a small etcd v3 client: range, put, delete, transactions,
leases and watches, against C{/v3/...} on one or several endpoints of an
etcd cluster.  Keys and values travel base64-encoded and int64 fields arrive
as JSON strings; the client hides both.  Watches read the gateway's stream
(one JSON object per line, a line may span any number of network reads),
resume from the last revision seen after the stream drops, start over from a
full read when that revision was compacted, and reconnect with a capped,
jittered exponential back-off, failing over between endpoints.  An outage is
logged once when it starts and once when it ends, never per retry.

L{EtcdStore} is the L{IStore} on top of it, selected by
C{store: etcd://HOST:PORT[,HOST:PORT...]/PREFIX}.  Its key layout under
C{PREFIX} (C{/gateway} when the URL names none):

    PREFIX/resources/KIND/NAME   one resource, its JSON object as the value
                                 (KIND is servers, clusters, apis, routings)
    PREFIX/commit                put by every commit (value: a random
                                 token naming that commit)
    PREFIX/proxies/ADDR          a live proxy, under its lease
                                 (L{gateway.registry})

The store's revision is etcd's revision.  A commit is one transaction that
holds only when nothing under C{PREFIX/resources/} was modified after the
base revision I{and} the C{commit} key was not either.  The second compare
is what catches deletions (a deleted key has no revision left to compare),
so two admins racing can never leave an api pointing at a cluster the other
deleted: one of them gets L{ConflictError}, which the admin retries from a
fresh read.  Proxies live outside C{resources/}, so their heartbeats neither
wake the store's watchers nor make commits conflict.  A commit whose answer
was lost (a leader change, a member dying mid-request) is sent again as it
was: its compares let at most one copy apply, and the token on the commit
key tells whether the copy that applied was this commit's.

Known limit: the watch trusts etcd's revisions to grow.  An etcd restored
from a backup (revisions going back) needs the gateways restarted.
"""

from __future__ import annotations

import base64
import json
import os
import random
import urllib.parse
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import attrs
from treq.client import HTTPClient
from twisted.internet import error as netError
from twisted.internet.defer import CancelledError, Deferred, fail, gatherResults, succeed
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web._newclient import RequestNotSent
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from zope.interface import implementer

from gateway.interfaces import IStore
from gateway.store import KINDS, Change, ConflictError, StoreError, StoreState

log = Logger()

KeyLike = Union[bytes, str]

#: The gRPC status code etcd answers with when it cannot serve a request
#: right now (no leader, a request timed out, the member is stopping).
UNAVAILABLE = 14

#: The longest line a watch stream may send (a response with every event of
#: a catch-up); past it the stream is dropped as broken.
MAX_LINE = 256 * 1024 * 1024


def _jsonHeaders() -> Headers:
    # A new one per request: treq may add to the headers it is given.
    return Headers({b"Content-Type": [b"application/json"]})


# -- errors -------------------------------------------------------------------


class EtcdError(StoreError):
    """
    etcd answered a request with an error.

    @ivar code: the gRPC status code (5: not found, 11: compacted, 14:
        unavailable, ...).
    @ivar status: the HTTP status of the answer.
    @ivar message: etcd's message.
    """

    def __init__(self, code: int, message: str, status: int = 0) -> None:
        super().__init__(f"etcd error {code}: {message}")
        self.code = code
        self.message = message
        self.status = status


class EtcdUnavailable(StoreError):
    """
    No endpoint of the etcd cluster answered the request.
    """


class EtcdIndeterminate(EtcdUnavailable):
    """
    A write was sent but its answer was lost (the connection broke, or it
    timed out): it may or may not have been applied.
    """


# -- values -------------------------------------------------------------------


def _bytes(key: KeyLike) -> bytes:
    return key.encode("utf-8") if isinstance(key, str) else bytes(key)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Optional[str]) -> bytes:
    return base64.b64decode(text) if text else b""


def _int(value: Any) -> int:
    # The JSON gateway sends int64 fields as strings and leaves out zeros.
    return int(value) if value not in (None, "") else 0


def prefixEnd(key: KeyLike) -> bytes:
    """
    @return: the C{range_end} that, with C{key}, selects every key starting
        with C{key}: C{key} with its last byte below 0xff incremented and what
        follows dropped (C{b"\\0"}, every key from C{key} on, when there is no
        such byte).
    """
    data = bytearray(_bytes(key))
    for i in range(len(data) - 1, -1, -1):
        if data[i] < 0xFF:
            data[i] += 1
            return bytes(data[: i + 1])
    return b"\0"


@attrs.frozen
class KeyValue:
    """
    One key as etcd holds it.
    """

    key: bytes
    value: bytes = b""
    createRevision: int = 0
    modRevision: int = 0
    version: int = 0
    lease: int = 0

    @classmethod
    def fromJSON(cls, data: Dict[str, Any]) -> KeyValue:
        return cls(
            key=_unb64(data.get("key")),
            value=_unb64(data.get("value")),
            createRevision=_int(data.get("create_revision")),
            modRevision=_int(data.get("mod_revision")),
            version=_int(data.get("version")),
            lease=_int(data.get("lease")),
        )


#: The types of watch event.
PUT = "PUT"
DELETE = "DELETE"


@attrs.frozen
class Event:
    """
    One change seen by a watch.

    @ivar type: L{PUT} or L{DELETE}.
    @ivar kv: the key after the change (for a L{DELETE}, only its key and
        C{modRevision}, the revision of the deletion).
    """

    type: str
    kv: KeyValue

    @classmethod
    def fromJSON(cls, data: Dict[str, Any]) -> Event:
        return cls(type=data.get("type") or PUT, kv=KeyValue.fromJSON(data.get("kv") or {}))


@attrs.frozen
class TxnResult:
    """
    What a transaction did.

    @ivar succeeded: whether every compare held (the C{success} operations
        ran) or not (the C{failure} ones did).
    @ivar responses: one JSON object per operation run, as etcd answered
        (C{{"response_put": ...}}, C{{"response_range": ...}}, ...).
    @ivar revision: the store's revision after the transaction.
    """

    succeeded: bool
    responses: List[Dict[str, Any]]
    revision: int


# Builders of compares and operations for L{EtcdClient.txn}.


def compareModRevision(
    key: KeyLike, result: str, revision: int, rangeEnd: Optional[KeyLike] = None
) -> Dict[str, Any]:
    """
    @param result: C{"EQUAL"}, C{"NOT_EQUAL"}, C{"LESS"} or C{"GREATER"}.
    @param rangeEnd: compare every key from C{key} up to this one
        (exclusive) instead of C{key} alone; a missing key compares as
        revision 0.
    @return: a compare of the keys' C{mod_revision} with C{revision}.
    """
    compare = {
        "target": "MOD",
        "key": _b64(_bytes(key)),
        "result": result,
        "mod_revision": str(revision),
    }
    if rangeEnd is not None:
        compare["range_end"] = _b64(_bytes(rangeEnd))
    return compare


def compareVersion(key: KeyLike, result: str, version: int) -> Dict[str, Any]:
    """
    @return: a compare of a key's C{version} (0 when it does not exist).
    """
    return {
        "target": "VERSION",
        "key": _b64(_bytes(key)),
        "result": result,
        "version": str(version),
    }


def opPut(key: KeyLike, value: KeyLike, lease: int = 0) -> Dict[str, Any]:
    """
    @return: an operation that puts C{value} at C{key}.
    """
    put: Dict[str, Any] = {"key": _b64(_bytes(key)), "value": _b64(_bytes(value))}
    if lease:
        put["lease"] = str(lease)
    return {"request_put": put}


def opDelete(key: KeyLike, prefix: bool = False) -> Dict[str, Any]:
    """
    @return: an operation that deletes C{key}, or every key under it.
    """
    delete = {"key": _b64(_bytes(key))}
    if prefix:
        delete["range_end"] = _b64(prefixEnd(key))
    return {"request_delete_range": delete}


def opRange(key: KeyLike, prefix: bool = False) -> Dict[str, Any]:
    """
    @return: an operation that reads C{key}, or every key under it.
    """
    request = {"key": _b64(_bytes(key))}
    if prefix:
        request["range_end"] = _b64(prefixEnd(key))
    return {"request_range": request}


# -- back-off and availability ---------------------------------------------------


class Backoff:
    """
    Capped exponential back-off with jitter: each delay doubles, up to
    C{maximum}, and is then scaled by a random factor in C{[1 - jitter, 1]}
    so that many clients retrying together spread out.
    """

    def __init__(
        self,
        initial: float = 0.1,
        maximum: float = 5.0,
        jitter: float = 0.5,
        random: Callable[[], float] = random.random,
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.jitter = jitter
        self._random = random
        self._attempt = 0

    def next(self) -> float:
        """
        @return: the delay before the next attempt, in seconds.
        """
        base = min(self.maximum, self.initial * (2 ** min(self._attempt, 60)))
        self._attempt += 1
        return base * (1.0 - self.jitter * self._random())

    def reset(self) -> None:
        """
        Start again from the initial delay, after a success.
        """
        self._attempt = 0


def _describe(reason: Any) -> str:
    if isinstance(reason, Failure):
        reason = reason.value
    # twisted.web's ResponseFailed and its kind carry a list of failures.
    reasons = getattr(reason, "reasons", None)
    if isinstance(reasons, list) and reasons:
        return "; ".join(_describe(r) for r in reasons)
    text = str(reason) or type(reason).__name__
    return text if len(text) < 300 else text[:300] + "..."


class Availability:
    """
    Whether etcd answers, for the log: an outage starts when every endpoint
    failed since the last success, and ends at the next success.  Each is
    logged once, however many retries run in between.

    @ivar outageSince: when the current outage started (the reactor's
        seconds), or L{None} while etcd answers.
    """

    def __init__(self, endpoints: Sequence[str], reactor: Any) -> None:
        self._endpoints = frozenset(endpoints)
        self._reactor = reactor
        self._failed: set = set()
        self.outageSince: Optional[float] = None

    @property
    def available(self) -> bool:
        return self.outageSince is None

    def failed(self, endpoint: str, reason: Any) -> None:
        """
        A request to C{endpoint} failed without an answer.
        """
        self._failed.add(endpoint)
        if self.outageSince is None and self._failed >= self._endpoints:
            self.outageSince = self._reactor.seconds()
            log.warn(
                "etcd is unreachable ({endpoints}): {reason}; serving on with the "
                "last known state and retrying until it answers",
                endpoints=", ".join(sorted(self._endpoints)),
                reason=_describe(reason),
            )

    def succeeded(self, endpoint: str) -> None:
        """
        C{endpoint} answered.
        """
        self._failed.clear()
        if self.outageSince is not None:
            log.info(
                "etcd answers again at {endpoint}, after {duration:.1f} s",
                endpoint=endpoint,
                duration=self._reactor.seconds() - self.outageSince,
            )
            self.outageSince = None


# Failures after which a request certainly never reached etcd: any request
# may go to another endpoint.
_NOT_SENT = (
    netError.ConnectError,
    netError.ConnectingCancelledError,
    netError.DNSLookupError,
    RequestNotSent,
)


def _wasNotSent(reason: BaseException) -> bool:
    return isinstance(reason, _NOT_SENT)


def _checkAnswer(status: int, body: bytes) -> Dict[str, Any]:
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        document = None
    if status == 200 and isinstance(document, dict):
        return document
    if isinstance(document, dict):
        raise EtcdError(
            _int(document.get("code")),
            str(document.get("message") or document.get("error") or ""),
            status,
        )
    raise EtcdError(0, f"HTTP {status}: {body[:200]!r}", status)


# -- the client ---------------------------------------------------------------------


def _splitEndpoint(endpoint: str) -> str:
    endpoint = endpoint.strip()
    for scheme in ("http://", "https://"):
        if endpoint.startswith(scheme):
            endpoint = endpoint[len(scheme) :]
    host, sep, port = endpoint.rstrip("/").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"etcd endpoint {endpoint!r} is not HOST:PORT")
    return f"{host}:{int(port)}"


class EtcdClient:
    """
    An etcd v3 client on treq, against etcd's JSON gateway (etcd 3.4+).

    Requests go to one endpoint at a time; when it cannot be reached, the
    next one is tried.  Reads go to the next endpoint on any failure;
    writes only when they certainly never reached etcd (a write whose
    answer was lost fails with L{EtcdUnavailable}, since it may have been
    applied).

    @ivar endpoints: the C{host:port} of each endpoint.
    @ivar availability: the L{Availability} shared by every request and
        watch.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        reactor: Any = None,
        treqClient: Optional[HTTPClient] = None,
        timeout: float = 5.0,
        backoff: Optional[Callable[[], Backoff]] = None,
    ) -> None:
        """
        @param endpoints: C{"host:port"} of each member (C{http://} allowed).
        @param reactor: the reactor, or L{None} for the global one.
        @param treqClient: the treq L{HTTPClient}, or L{None} for one of our
            own with a persistent connection pool.
        @param timeout: the longest a request may take, in seconds (watch
            streams are only bounded until etcd answers their headers).
        @param backoff: makes the L{Backoff} of each retry loop.
        """
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            reactor = globalReactor
        self._reactor = reactor
        self.endpoints = [_splitEndpoint(e) for e in endpoints]
        if not self.endpoints:
            raise ValueError("an etcd client needs at least one endpoint")
        self._current = 0
        self._timeout = timeout
        self._pool: Optional[HTTPConnectionPool] = None
        if treqClient is None:
            self._pool = HTTPConnectionPool(reactor, persistent=True)
            self._pool.maxPersistentPerHost = 4
            treqClient = HTTPClient(Agent(reactor, connectTimeout=timeout, pool=self._pool))
        self._treq = treqClient
        self._backoff = backoff if backoff is not None else Backoff
        self.availability = Availability(self.endpoints, reactor)
        self._watches: List[EtcdWatch] = []
        self._closed = False

    # -- plumbing --------------------------------------------------------------------

    @property
    def currentEndpoint(self) -> str:
        """
        @return: the endpoint the next request goes to.
        """
        return self.endpoints[self._current % len(self.endpoints)]

    def _failOver(self, endpoint: str) -> None:
        # Only move on when the failed endpoint is still the current one:
        # concurrent requests that failed together move it once.
        if self.currentEndpoint == endpoint and len(self.endpoints) > 1:
            self._current = (self._current + 1) % len(self.endpoints)
            if not self.availability.available:
                # The outage is logged once; its retries are not.
                return
            log.info(
                "etcd endpoint {endpoint} failed; now using {next}",
                endpoint=endpoint,
                next=self.currentEndpoint,
            )

    def _url(self, endpoint: str, path: str) -> str:
        return f"http://{endpoint}{path}"

    async def _postOnce(self, endpoint: str, path: str, body: bytes) -> Dict[str, Any]:
        response = await self._treq.post(
            self._url(endpoint, path), data=body, headers=_jsonHeaders()
        )
        content = await response.content()
        return _checkAnswer(response.code, content)

    def _post(self, endpoint: str, path: str, body: bytes) -> Deferred:
        d = Deferred.fromCoroutine(self._postOnce(endpoint, path, body))
        return d.addTimeout(self._timeout, self._reactor)

    async def call(
        self, path: str, payload: Dict[str, Any], idempotent: bool = True
    ) -> Dict[str, Any]:
        """
        POST one request to the JSON gateway, failing over between endpoints.

        @param path: e.g. C{/v3/kv/range}.
        @param idempotent: whether the request may be sent again to another
            endpoint after a failure that may have reached etcd.
        @return: etcd's answer, a JSON object.
        @raise EtcdError: etcd answered with an error.
        @raise EtcdUnavailable: no endpoint answered.
        """
        if self._closed:
            raise StoreError("the etcd client is closed")
        body = json.dumps(payload).encode("utf-8")
        last: Optional[BaseException] = None
        # One more attempt than there are endpoints: with a single endpoint,
        # a pooled connection that died unnoticed (etcd restarted) costs one
        # failed attempt, and the next one connects afresh.
        for _ in range(len(self.endpoints) + 1):
            endpoint = self.currentEndpoint
            try:
                answer = await self._post(endpoint, path, body)
            except EtcdError as e:
                if e.code != UNAVAILABLE:
                    self.availability.succeeded(endpoint)
                    raise
                # Reachable, but cannot serve (no leader, a proposal lost
                # with a leader change, stopping): ask another member.
                self.availability.failed(endpoint, e)
                self._failOver(endpoint)
                if not idempotent:
                    raise
                last = e
            except CancelledError:
                raise
            except Exception as e:
                self.availability.failed(endpoint, e)
                self._failOver(endpoint)
                if not (idempotent or _wasNotSent(e)):
                    raise EtcdIndeterminate(
                        f"etcd at {endpoint} did not answer a write, which may or may not "
                        f"have been applied: {_describe(e)}"
                    )
                last = e
            else:
                self.availability.succeeded(endpoint)
                return answer
        raise EtcdUnavailable(
            f"no etcd endpoint answered ({', '.join(self.endpoints)}): {_describe(last)}"
        )

    def _call(self, path: str, payload: Dict[str, Any], idempotent: bool = True) -> Deferred:
        return Deferred.fromCoroutine(self.call(path, payload, idempotent))

    def sleep(self, seconds: float) -> Deferred:
        """
        @return: a Deferred that fires after C{seconds}; cancelling it stops
            the wait.
        """
        return deferLater(self._reactor, seconds, lambda: None)

    def retrying(self, operation: Callable[[], Any], what: str = "etcd request") -> Deferred:
        """
        Run C{operation} until it does not fail with L{EtcdUnavailable} (or
        an L{EtcdError} meaning unavailable), waiting with back-off between
        attempts.  Other errors end it.

        @param operation: returns a Deferred or a coroutine.
        @return: a Deferred with C{operation}'s result; cancelling it stops
            the retries.
        """

        async def loop() -> Any:
            backoff = self._backoff()
            while True:
                try:
                    result = operation()
                    if not isinstance(result, Deferred):
                        result = Deferred.fromCoroutine(result)
                    return await result
                except EtcdUnavailable:
                    pass
                except EtcdError as e:
                    if e.code != UNAVAILABLE:
                        raise
                if self._closed:
                    raise StoreError("the etcd client is closed")
                delay = backoff.next()
                log.debug("{what} failed; retrying in {delay:.2f} s", what=what, delay=delay)
                await self.sleep(delay)

        return Deferred.fromCoroutine(loop())

    # -- key-value -------------------------------------------------------------------

    def _rangePayload(
        self,
        key: KeyLike,
        prefix: bool,
        revision: Optional[int],
        rangeEnd: Optional[KeyLike],
    ) -> Dict[str, Any]:
        payload: Dict[str, Any] = {"key": _b64(_bytes(key))}
        if prefix:
            payload["range_end"] = _b64(prefixEnd(key))
        elif rangeEnd is not None:
            payload["range_end"] = _b64(_bytes(rangeEnd))
        if revision:
            payload["revision"] = str(revision)
        return payload

    def range(
        self,
        key: KeyLike,
        prefix: bool = False,
        revision: Optional[int] = None,
        rangeEnd: Optional[KeyLike] = None,
    ) -> Deferred:
        """
        Read a key, or every key under a prefix (or in C{[key, rangeEnd)}).

        @param revision: read as of this revision; L{None} for the latest.
        @return: a Deferred firing with C{(kvs, revision)}: a list of
            L{KeyValue}s sorted by key, and the store's revision.
        """

        async def go() -> Tuple[List[KeyValue], int]:
            answer = await self.call(
                "/v3/kv/range", self._rangePayload(key, prefix, revision, rangeEnd)
            )
            kvs = [KeyValue.fromJSON(kv) for kv in answer.get("kvs") or ()]
            return kvs, _int((answer.get("header") or {}).get("revision"))

        return Deferred.fromCoroutine(go())

    def get(self, key: KeyLike) -> Deferred:
        """
        @return: a Deferred firing with the L{KeyValue} at C{key}, or L{None}.
        """
        return self.range(key).addCallback(lambda result: result[0][0] if result[0] else None)

    def put(self, key: KeyLike, value: KeyLike, lease: int = 0) -> Deferred:
        """
        Put C{value} at C{key}, under a lease when C{lease} is not 0.

        @return: a Deferred firing with the new revision.
        """
        payload: Dict[str, Any] = {"key": _b64(_bytes(key)), "value": _b64(_bytes(value))}
        if lease:
            payload["lease"] = str(lease)
        return self._call("/v3/kv/put", payload, idempotent=False).addCallback(_headerRevision)

    def delete(self, key: KeyLike, prefix: bool = False) -> Deferred:
        """
        Delete a key, or every key under a prefix.

        @return: a Deferred firing with C{(deleted, revision)}: how many keys
            went, and the new revision.
        """
        payload = {"key": _b64(_bytes(key))}
        if prefix:
            payload["range_end"] = _b64(prefixEnd(key))
        return self._call("/v3/kv/deleterange", payload, idempotent=False).addCallback(
            lambda answer: (_int(answer.get("deleted")), _headerRevision(answer))
        )

    def txn(
        self,
        compare: Iterable[Dict[str, Any]],
        success: Iterable[Dict[str, Any]],
        failure: Iterable[Dict[str, Any]] = (),
    ) -> Deferred:
        """
        Run a transaction: if every compare holds, the C{success}
        operations, else the C{failure} ones, atomically.  Build compares
        and operations with L{compareModRevision}, L{compareVersion},
        L{opPut}, L{opDelete} and L{opRange}.

        @return: a Deferred firing with a L{TxnResult}.
        """
        payload = {"compare": list(compare), "success": list(success), "failure": list(failure)}
        return self._call("/v3/kv/txn", payload, idempotent=False).addCallback(
            lambda answer: TxnResult(
                bool(answer.get("succeeded")),
                list(answer.get("responses") or ()),
                _headerRevision(answer),
            )
        )

    def compact(self, revision: int, physical: bool = False) -> Deferred:
        """
        Forget the history before C{revision}.

        @return: a Deferred firing with L{None}.
        """
        payload: Dict[str, Any] = {"revision": str(revision)}
        if physical:
            payload["physical"] = True
        return self._call("/v3/kv/compaction", payload).addCallback(lambda _: None)

    # -- leases ---------------------------------------------------------------------------

    def leaseGrant(self, ttl: int) -> Deferred:
        """
        @return: a Deferred firing with C{(leaseID, ttl)}, the TTL etcd
            granted, in seconds.
        """
        return self._call("/v3/lease/grant", {"TTL": str(int(ttl))}).addCallback(
            lambda answer: (_int(answer.get("ID")), _int(answer.get("TTL")))
        )

    def leaseKeepAlive(self, leaseID: int) -> Deferred:
        """
        Renew a lease once.

        @return: a Deferred firing with the lease's new TTL in seconds, or 0
            when the lease no longer exists (it expired or was revoked).
        """

        def parse(answer: Dict[str, Any]) -> int:
            # A stream of one answer: {"result": {...}} or {"error": {...}}.
            if "error" in answer:
                problem = answer["error"]
                raise EtcdError(
                    _int(problem.get("grpc_code") or problem.get("code")),
                    str(problem.get("message") or problem),
                )
            return _int((answer.get("result") or answer).get("TTL"))

        return self._call("/v3/lease/keepalive", {"ID": str(leaseID)}).addCallback(parse)

    def leaseRevoke(self, leaseID: int) -> Deferred:
        """
        Revoke a lease: every key under it is deleted.

        @return: a Deferred firing with L{None}; it fails with L{EtcdError}
            (code 5) when the lease does not exist.
        """
        return self._call("/v3/lease/revoke", {"ID": str(leaseID)}).addCallback(lambda _: None)

    def leaseTimeToLive(self, leaseID: int) -> Deferred:
        """
        @return: a Deferred firing with the lease's remaining TTL in seconds
            (-1 when it does not exist).
        """
        return self._call("/v3/lease/timetolive", {"ID": str(leaseID)}).addCallback(
            lambda answer: _int(answer.get("TTL"))
        )

    # -- watches ----------------------------------------------------------------------------

    def watch(
        self,
        key: KeyLike,
        callback: Callable[[List[Event], int], Any],
        prefix: bool = False,
        startRevision: Optional[int] = None,
        onResync: Optional[Callable[[List[KeyValue], int], Any]] = None,
        rangeEnd: Optional[KeyLike] = None,
    ) -> EtcdWatch:
        """
        Watch a key, or every key under a prefix, until stopped.

        @param callback: called with C{(events, revision)} for each batch of
            events (never splitting one revision's events), C{revision}
            being the revision of the last event.
        @param startRevision: the first revision to see; L{None} for
            changes from now on.
        @param onResync: called with C{(kvs, revision)}, everything under
            the key at C{revision}, when the watch had to start over because
            the revision it resumes from was compacted; the events from
            C{revision + 1} follow.  Without it, the watch logs the gap and
            goes on from the oldest revision etcd still has.
        @return: the running L{EtcdWatch}.
        """
        if self._closed:
            raise StoreError("the etcd client is closed")
        end = prefixEnd(key) if prefix else (_bytes(rangeEnd) if rangeEnd is not None else None)
        watch = EtcdWatch(self, _bytes(key), end, callback, startRevision, onResync)
        self._watches.append(watch)
        watch.start()
        return watch

    def _forget(self, watch: EtcdWatch) -> None:
        try:
            self._watches.remove(watch)
        except ValueError:
            pass

    def close(self) -> Deferred:
        """
        Stop every watch and close the connections of our own pool.

        @return: a Deferred firing when that is done.
        """
        self._closed = True
        stopping = [watch.stop() for watch in list(self._watches)]
        if self._pool is not None:
            stopping.append(self._pool.closeCachedConnections())
        return gatherResults(stopping).addCallback(lambda _: None)


def _headerRevision(answer: Dict[str, Any]) -> int:
    return _int((answer.get("header") or {}).get("revision"))


class _LineStream(Protocol):
    """
    Reads a JSON gateway stream: one JSON object per line, a line spanning
    any number of reads.  Each line goes to C{onMessage} whole; C{done}
    fires with the reason the stream ended.
    """

    def __init__(self, onMessage: Callable[[Dict[str, Any]], Any], maxLine: int = MAX_LINE):
        self._onMessage = onMessage
        self._maxLine = maxLine
        self._buffer = bytearray()
        self._searched = 0
        self.done: Deferred = Deferred()
        self.stopped = False
        self.aborted = False
        self._reason: Optional[BaseException] = None

    def dataReceived(self, data: bytes) -> None:
        if self.stopped:
            return
        self._buffer.extend(data)
        while not self.stopped:
            # Only look for the newline in what arrived since the last look:
            # a large line costs one scan, not one per read.
            end = self._buffer.find(b"\n", self._searched)
            if end < 0:
                self._searched = len(self._buffer)
                if len(self._buffer) > self._maxLine:
                    self.abort(StoreError(f"etcd sent a line longer than {self._maxLine} bytes"))
                return
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            self._searched = 0
            if line.strip():
                self._line(line)

    def _line(self, line: bytes) -> None:
        try:
            message = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            self.abort(StoreError(f"etcd sent a line that is not JSON: {e}"))
            return
        if not isinstance(message, dict):
            self.abort(StoreError("etcd sent a line that is not a JSON object"))
            return
        self._onMessage(message)

    def abort(self, reason: Optional[BaseException] = None) -> None:
        """
        Drop the connection; later data is ignored.
        """
        if self.stopped:
            return
        self.stopped = True
        self.aborted = True
        self._reason = reason
        if self.transport is not None:
            # The body's transport is a producer: stopping it closes the
            # connection (twisted.web.client's way to abandon a body).
            self.transport.stopProducing()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Optional[Failure] = None) -> None:
        if reason is None:
            reason = Failure(ResponseDone())
        self.stopped = True
        if not self.done.called:
            self.done.callback(self._reason if self._reason is not None else reason.value)


class _Resync(Exception):
    """
    The watch must start over from a full read.
    """


class EtcdWatch:
    """
    A watch that survives dropped streams, restarts and outages of etcd.

    @ivar revision: the last revision delivered (or read, after a resync);
        after a drop the watch resumes at C{revision + 1}.
    @ivar connected: whether a stream is open and created.
    """

    def __init__(
        self,
        client: EtcdClient,
        key: bytes,
        rangeEnd: Optional[bytes],
        callback: Callable[[List[Event], int], Any],
        startRevision: Optional[int],
        onResync: Optional[Callable[[List[KeyValue], int], Any]],
    ) -> None:
        self._client = client
        self._key = key
        self._rangeEnd = rangeEnd
        self._callback = callback
        self._onResync = onResync
        self.revision: Optional[int] = None if startRevision is None else startRevision - 1
        self.connected = False
        self._running = False
        self._stream: Optional[_LineStream] = None
        self._loop: Optional[Deferred] = None
        self._resync = False
        self._streamError: Optional[BaseException] = None
        self._endpoint = client.currentEndpoint
        self._lastProblem: Optional[str] = None
        self._backoff = client._backoff()

    def start(self) -> None:
        if self._running:
            return
        self._running = True
        self._loop = Deferred.fromCoroutine(self._run())
        self._loop.addErrback(self._crashed)

    def _crashed(self, failure: Failure) -> None:
        if not failure.check(CancelledError):
            log.failure("etcd watch stopped unexpectedly", failure)

    def stop(self) -> Deferred:
        """
        Stop watching.

        @return: a Deferred firing once the stream is closed.
        """
        self._running = False
        self._client._forget(self)
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.abort()
        loop, self._loop = self._loop, None
        if loop is None or loop.called:
            return succeed(None)
        waiter: Deferred = Deferred()
        loop.addBoth(lambda _: waiter.callback(None))
        loop.cancel()
        return waiter

    def reconnect(self) -> None:
        """
        Drop the current stream; the watch resumes on a new one from
        C{revision + 1}, as after any drop.
        """
        if self._stream is not None:
            self._stream.abort()

    async def _run(self) -> None:
        while self._running:
            endpoint = self._client.currentEndpoint
            try:
                if self._resync:
                    await self._doResync()
                await self._watchOnce(endpoint)
            except CancelledError:
                if not self._running:
                    return
                raise
            except _Resync:
                continue
            except Exception as e:
                self.connected = False
                if not self._running:
                    return
                if isinstance(e, EtcdError) and e.code != UNAVAILABLE:
                    # Logged when it changes, not on every retry.
                    problem = _describe(e)
                    if problem != self._lastProblem:
                        self._lastProblem = problem
                        log.warn(
                            "etcd watch on {endpoint} failed: {error}; retrying",
                            endpoint=endpoint,
                            error=problem,
                        )
                else:
                    self._client.availability.failed(endpoint, e)
                    self._client._failOver(endpoint)
            self.connected = False
            if self._running:
                await self._client.sleep(self._backoff.next())

    async def _doResync(self) -> None:
        kvs, revision = await self._client.range(self._key, rangeEnd=self._rangeEnd)
        self._resync = False
        self.revision = revision
        if self._onResync is not None:
            try:
                self._onResync(kvs, revision)
            except Exception:
                log.failure("etcd watch resync callback failed at revision {r}", r=revision)

    async def _watchOnce(self, endpoint: str) -> None:
        self._endpoint = endpoint
        create: Dict[str, Any] = {"key": _b64(self._key)}
        if self._rangeEnd is not None:
            create["range_end"] = _b64(self._rangeEnd)
        if self.revision is not None:
            create["start_revision"] = str(self.revision + 1)
        body = json.dumps({"create_request": create}).encode("utf-8")
        headers = self._client._treq.post(
            self._client._url(endpoint, "/v3/watch"), data=body, headers=_jsonHeaders()
        )
        response = await headers.addTimeout(self._client._timeout, self._client._reactor)
        if response.code != 200:
            _checkAnswer(response.code, await response.content())
        stream = _LineStream(self._message)
        self._stream = stream
        self._streamError = None
        response.deliverBody(stream)
        if not self._running:
            stream.abort()
        reason = await stream.done
        self._stream = None
        if self._resync:
            raise _Resync()
        if self._streamError is not None:
            raise self._streamError
        if stream.aborted:
            # Dropped on purpose (reconnect, stop): not a failure of etcd.
            return
        if isinstance(reason, (ResponseDone, PotentialDataLoss)):
            raise EtcdUnavailable(f"etcd at {endpoint} ended the watch stream")
        raise reason if isinstance(reason, BaseException) else EtcdUnavailable(str(reason))

    def _message(self, message: Dict[str, Any]) -> None:
        stream = self._stream
        if "error" in message:
            problem = message["error"]
            if not isinstance(problem, dict):
                problem = {"message": problem}
            self._streamError = EtcdError(
                _int(problem.get("grpc_code") or problem.get("code")),
                str(problem.get("message") or problem),
                _int(problem.get("http_code")),
            )
            if stream is not None:
                stream.abort()
            return
        result = message.get("result") or {}
        if result.get("created"):
            self.connected = True
            self._lastProblem = None
            self._backoff.reset()
            self._client.availability.succeeded(self._endpoint)
            if self.revision is None:
                self.revision = _headerRevision(result)
        compacted = _int(result.get("compact_revision"))
        if compacted:
            if self._onResync is not None:
                log.info(
                    "etcd compacted revision {wanted} away (oldest kept: {compacted}); "
                    "reading everything again",
                    wanted=(self.revision or 0) + 1,
                    compacted=compacted,
                )
                self._resync = True
            else:
                log.warn(
                    "etcd compacted revisions {first} to {last}: their events are lost",
                    first=(self.revision or 0) + 1,
                    last=compacted - 1,
                )
                self.revision = compacted - 1
            if stream is not None:
                stream.abort()
            return
        if result.get("canceled"):
            self._streamError = EtcdError(0, str(result.get("cancel_reason") or "watch canceled"))
            if stream is not None:
                stream.abort()
            return
        events = [Event.fromJSON(e) for e in result.get("events") or ()]
        if not events:
            return
        revision = max(event.kv.modRevision for event in events)
        self.revision = revision
        try:
            self._callback(events, revision)
        except Exception:
            log.failure("etcd watch callback failed at revision {r}", r=revision)


# -- the store -------------------------------------------------------------------------


def _normalisePrefix(prefix: str) -> str:
    prefix = prefix.strip().rstrip("/")
    if not prefix:
        return "/gateway"
    if not prefix.startswith("/"):
        prefix = "/" + prefix
    return prefix


def parseEtcdURL(url: str) -> Tuple[List[str], str]:
    """
    @param url: C{etcd://HOST:PORT[,HOST:PORT...][/PREFIX]}.
    @return: C{(endpoints, prefix)}; the prefix is C{/gateway} when the URL
        names none.
    @raise ValueError: when the URL is not of that form.
    """
    if not url.startswith("etcd://"):
        raise ValueError(f"{url!r} is not an etcd:// URL")
    hosts, slash, path = url[len("etcd://") :].partition("/")
    if not hosts:
        raise ValueError(f"{url!r} needs HOST:PORT, e.g. etcd://127.0.0.1:2379/gateway")
    endpoints = []
    for hostPort in hosts.split(","):
        try:
            endpoints.append(_splitEndpoint(hostPort))
        except ValueError as e:
            raise ValueError(f"{url!r}: {e}")
    return endpoints, _normalisePrefix("/" + urllib.parse.unquote(path))


def etcdStoreFromURL(url: str, reactor: Any = None) -> EtcdStore:
    """
    Make the store C{store: etcd://...} names.

    @param url: C{etcd://HOST:PORT[,HOST:PORT...][/PREFIX]}.
    @return: an L{EtcdStore} with its own L{EtcdClient}.
    @raise ValueError: when the URL is not valid.
    """
    endpoints, prefix = parseEtcdURL(url)
    client = EtcdClient(endpoints, reactor=reactor)
    return EtcdStore(client, prefix, reactor=reactor, ownsClient=True)


def _dumpValue(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


@implementer(IStore)
class EtcdStore:
    """
    An L{IStore} in etcd, shared by every gateway process of a cluster.

    @ivar client: the L{EtcdClient}.
    @ivar prefix: the key prefix, e.g. C{/gateway}.
    @ivar state: the state the watch follows (L{None} before it first read).
    """

    #: How long a commit waits for this store's own watch to see it, so that
    #: a process that commits serves the change as it answers.
    commitVisibleTimeout = 2.0

    #: How long a commit keeps trying while etcd cannot confirm it (a leader
    #: change), in seconds.
    commitTimeout = 12.0

    def __init__(
        self,
        client: EtcdClient,
        prefix: str = "/gateway",
        reactor: Any = None,
        ownsClient: bool = False,
        random: Callable[[], float] = random.random,
    ) -> None:
        """
        @param client: the L{EtcdClient} to use.
        @param prefix: where the gateway's keys live.
        @param ownsClient: whether L{close} closes C{client} too.
        @param random: the source of the retries' jitter.
        """
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            reactor = globalReactor
        self._reactor = reactor
        self.client = client
        self.prefix = _normalisePrefix(prefix)
        self._resources = (self.prefix + "/resources/").encode("utf-8")
        self._commitKey = (self.prefix + "/commit").encode("utf-8")
        self._ownsClient = ownsClient
        self._random = random
        self._listeners: List[Callable[[StoreState], Any]] = []
        self.state: Optional[StoreState] = None
        self._everLoaded = False
        self._watch: Optional[EtcdWatch] = None
        self._following: Optional[Deferred] = None
        self._waiters: List[Tuple[int, Deferred]] = []
        self._closed = False

    def __repr__(self) -> str:
        return f"<EtcdStore {','.join(self.client.endpoints)} {self.prefix}>"

    # -- keys -------------------------------------------------------------------------

    def keyOf(self, kind: str, name: str) -> bytes:
        """
        @return: the etcd key of one resource.
        """
        return self._resources + f"{kind}/{name}".encode()

    def _parseKey(self, key: bytes) -> Optional[Tuple[str, str]]:
        if not key.startswith(self._resources):
            return None
        kind, slash, name = key[len(self._resources) :].decode("utf-8", "replace").partition("/")
        if kind not in KINDS or not slash or not name:
            return None
        return kind, name

    def _parseValue(self, kv: KeyValue) -> Optional[Dict[str, Any]]:
        try:
            value = json.loads(kv.value.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            value = None
        if not isinstance(value, dict):
            log.error(
                "etcd key {key} does not hold a JSON object; ignored",
                key=kv.key.decode("utf-8", "replace"),
            )
            return None
        return value

    def _stateOf(self, kvs: Iterable[KeyValue], revision: int) -> StoreState:
        resources: Dict[str, Dict[str, Any]] = {kind: {} for kind in KINDS}
        for kv in kvs:
            where = self._parseKey(kv.key)
            if where is None:
                continue
            value = self._parseValue(kv)
            if value is not None:
                resources[where[0]][where[1]] = value
        return StoreState(revision, resources)

    # -- IStore ------------------------------------------------------------------------

    def load(self) -> Deferred:
        """
        Read every resource.

        Until the store has read etcd once, this retries (with back-off)
        until etcd answers, so a gateway started before etcd waits for it;
        afterwards a failure fails at once with L{StoreError}, so an admin
        request answers 503 instead of hanging through an outage.

        @return: a Deferred firing with the L{StoreState}.
        """
        if self._closed:
            return fail(StoreError("the store is closed"))

        def read() -> Deferred:
            return self.client.range(self._resources, prefix=True)

        d = read() if self._everLoaded else self.client.retrying(read, "loading the store")
        return d.addCallback(self._loaded)

    def _loaded(self, result: Tuple[List[KeyValue], int]) -> StoreState:
        kvs, revision = result
        self._everLoaded = True
        state = self._stateOf(kvs, revision)
        # The watch may already have delivered a later state; never answer
        # with an older one than a listener has seen.
        if self.state is not None and self.state.revision > state.revision:
            return self.state
        return state

    def commit(self, changes: Sequence[Change], baseRevision: int) -> Deferred:
        """
        Apply C{changes} in one etcd transaction, if nothing under the
        resources changed since C{baseRevision}.

        @return: a Deferred firing with the new revision; it fails with
            L{ConflictError} when the store changed since C{baseRevision}, and
            with L{StoreError} when etcd could not be reached.
        """
        return Deferred.fromCoroutine(self._commit(list(changes), baseRevision))

    async def _commit(self, changes: List[Change], baseRevision: int) -> int:
        if self._closed:
            raise StoreError("the store is closed")
        # The commit key gets a token of this commit: a transaction whose
        # answer was lost can be sent again (the compares let at most one
        # copy apply), and the token then tells whether it was ours.
        token = os.urandom(16).hex().encode("ascii")
        operations = [opPut(self._commitKey, token)]
        for change in changes:
            key = self.keyOf(change.kind, change.name)
            if change.value is None:
                operations.append(opDelete(key))
            else:
                operations.append(opPut(key, _dumpValue(change.value)))
        compare = [
            compareModRevision(self._commitKey, "LESS", baseRevision + 1),
            compareModRevision(
                self._resources, "LESS", baseRevision + 1, rangeEnd=prefixEnd(self._resources)
            ),
        ]
        result = await self._txnSurvivingLeaderChanges(
            compare, operations, [opRange(self._commitKey)]
        )
        if result.succeeded:
            revision = result.revision
        else:
            kvs = (result.responses[0].get("response_range") or {}).get("kvs") or ()
            marker = KeyValue.fromJSON(kvs[0]) if kvs else None
            if marker is None or marker.value != token:
                raise ConflictError(f"the store changed since revision {baseRevision}")
            # An earlier copy of this very commit applied.
            revision = marker.modRevision
        await self._visible(revision)
        return revision

    async def _txnSurvivingLeaderChanges(
        self,
        compare: List[Dict[str, Any]],
        success: List[Dict[str, Any]],
        failure: List[Dict[str, Any]],
    ) -> TxnResult:
        # A write in flight when the etcd leader dies or changes is lost or
        # times out; the cluster elects another within a second or so.  Try
        # again for a while, but not when no member answers at all.
        deadline = self._reactor.seconds() + self.commitTimeout
        backoff = Backoff(random=self._random)
        while True:
            try:
                return await self.client.txn(compare, success, failure)
            except EtcdIndeterminate as e:
                problem: StoreError = e
            except EtcdError as e:
                if e.code != UNAVAILABLE:
                    raise
                problem = e
            delay = backoff.next()
            if self._reactor.seconds() + delay > deadline:
                raise StoreError(f"etcd did not confirm the commit: {problem}")
            log.info("commit not confirmed ({problem}); trying again", problem=str(problem))
            await deferLater(self._reactor, delay, lambda: None)

    def _visible(self, revision: int) -> Deferred:
        # Wait (a little) until the watch has delivered the revision, so a
        # process that committed serves its own change as it answers.
        if self._watch is None or (self.state is not None and self.state.revision >= revision):
            return succeed(None)
        waiter: Deferred = Deferred()
        self._waiters.append((revision, waiter))
        waiter.addTimeout(self.commitVisibleTimeout, self._reactor)
        return waiter.addErrback(lambda _: None)

    def _release(self, revision: int) -> None:
        ready = [w for w in self._waiters if w[0] <= revision]
        self._waiters = [w for w in self._waiters if w[0] > revision]
        for _, waiter in ready:
            if not waiter.called:
                waiter.callback(None)

    def watch(self, listener: Callable[[StoreState], Any]) -> Callable[[], None]:
        """
        Call C{listener} with the whole new state: first once the watch has
        read etcd (and again after it had to read everything anew), then
        after each batch of changes, from any process.  While etcd cannot be
        reached nothing is called; the changes made meanwhile arrive when it
        answers again.

        @return: a callable that stops the watch.
        """
        self._listeners.append(listener)
        if self._following is None and not self._closed:
            self._following = Deferred.fromCoroutine(self._follow())
            self._following.addErrback(self._followFailed)
        elif self.state is not None:
            self._notifyOne(listener, self.state)

        def stop() -> None:
            try:
                self._listeners.remove(listener)
            except ValueError:
                pass

        return stop

    def _followFailed(self, failure: Failure) -> None:
        if not failure.check(CancelledError):
            log.failure("the etcd store stopped following etcd", failure)

    async def _follow(self) -> None:
        kvs, revision = await self.client.retrying(
            lambda: self.client.range(self._resources, prefix=True), "reading the store"
        )
        self._everLoaded = True
        if self._closed:
            return
        self._setState(self._stateOf(kvs, revision))
        self._watch = self.client.watch(
            self._resources,
            self._onEvents,
            prefix=True,
            startRevision=revision + 1,
            onResync=self._onResync,
        )

    def _onResync(self, kvs: List[KeyValue], revision: int) -> None:
        self._setState(self._stateOf(kvs, revision))

    def _onEvents(self, events: List[Event], revision: int) -> None:
        if self.state is None:
            return
        changes = []
        for event in events:
            where = self._parseKey(event.kv.key)
            if where is None:
                continue
            if event.type == DELETE:
                changes.append(Change(where[0], where[1], None))
            else:
                value = self._parseValue(event.kv)
                changes.append(Change(where[0], where[1], value))
        self._setState(self.state.withChanges(changes, revision))

    def _setState(self, state: StoreState) -> None:
        if self.state is not None and state.revision < self.state.revision:
            return
        self.state = state
        for listener in list(self._listeners):
            self._notifyOne(listener, state)
        self._release(state.revision)

    def _notifyOne(self, listener: Callable[[StoreState], Any], state: StoreState) -> None:
        try:
            listener(state)
        except Exception:
            log.failure(
                "store watcher {listener!r} failed at revision {revision}",
                listener=listener,
                revision=state.revision,
            )

    def close(self) -> Deferred:
        """
        Stop the watch (and the client, when the store made it).

        @return: a Deferred firing when everything is closed.
        """
        self._closed = True
        del self._listeners[:]
        following, self._following = self._following, None
        if following is not None and not following.called:
            following.cancel()
        watch, self._watch = self._watch, None
        d = watch.stop() if watch is not None else succeed(None)
        self._release(2**63)
        if self._ownsClient:
            d.addCallback(lambda _: self.client.close())
        return d
