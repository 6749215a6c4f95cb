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
                                 (L{gateway.store.etcd.registry})

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
import random
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import attrs
from treq.client import HTTPClient
from twisted.internet import error as netError
from twisted.internet.defer import CancelledError, Deferred, gatherResults
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web._newclient import RequestNotSent
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers

from gateway.store import StoreError

if TYPE_CHECKING:
    from gateway.store.etcd.watch import EtcdWatch

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


def _splitEndpoint(endpoint: str) -> str:
    endpoint = endpoint.strip()
    for scheme in ("http://", "https://"):
        if endpoint.startswith(scheme):
            endpoint = endpoint[len(scheme) :]
    host, sep, port = endpoint.rstrip("/").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"etcd endpoint {endpoint!r} is not HOST:PORT")
    return f"{host}:{int(port)}"


def _headerRevision(answer: Dict[str, Any]) -> int:
    return _int((answer.get("header") or {}).get("revision"))


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
        self._watches: List[Any] = []
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
        from gateway.store.etcd.watch import EtcdWatch

        end = prefixEnd(key) if prefix else (_bytes(rangeEnd) if rangeEnd is not None else None)
        watch = EtcdWatch(self, _bytes(key), end, callback, startRevision, onResync)
        self._watches.append(watch)
        watch.start()
        return watch

    def _forget(self, watch: Any) -> None:
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
