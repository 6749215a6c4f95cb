"""
A small etcd v3 client, on treq, for etcd's JSON gateway (C{/v3/...}, etcd
3.4 and later).

L{EtcdClient} speaks to one or several endpoints of an etcd cluster: range,
put, delete, transactions, compaction and leases, plus what a long-lived
stream needs (L{EtcdClient.openStream}, with which
L{gateway.store.etcd.watch} builds its watches).  The JSON gateway sends keys
and values base64-encoded and int64 fields as JSON strings (leaving out
zeros); the client hides both behind L{KeyValue}, L{Event} and L{TxnResult},
and the builders L{opPut}, L{opDelete}, L{opRange}, L{compareModRevision},
L{compareVersion} and L{compareValue} make a transaction's parts.

Requests go to one endpoint at a time and move on to the next when it cannot
be reached.  A read goes to the next endpoint on any failure; a write only
when it certainly never reached etcd, and otherwise fails with
L{EtcdIndeterminate}, since it may have been applied.  L{EtcdClient.retrying}
runs an operation until etcd answers, waiting between attempts as
L{etcdBackoff} says: Twisted's capped, jittered exponential back-off
(L{twisted.application.internet.backoffPolicy}).  An outage (every endpoint
failing) is logged once when it starts and once when it ends, never per
retry (L{Availability}).

The client knows nothing of what the keys mean: the gateway's key layout is
L{gateway.store.etcd.store}'s, the live proxies' records
L{gateway.store.etcd.registry}'s.
"""

from __future__ import annotations

import base64
import json
import random
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Union

import attrs
from treq.client import HTTPClient
from twisted.application.internet import backoffPolicy
from twisted.internet import error as netError
from twisted.internet.defer import CancelledError, Deferred, gatherResults
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, RequestNotSent
from twisted.web.http_headers import Headers

from gateway.store import StoreError

log = Logger()

KeyLike = Union[bytes, str]


#: The gRPC status code etcd answers with when it cannot serve a request
#: right now (no leader, a request timed out, the member is stopping).
UNAVAILABLE = 14

#: The gRPC status code of a request etcd refuses as malformed or too big
#: (among others, more operations in a transaction than C{--max-txn-ops},
#: or a request over C{--max-request-bytes}).
INVALID_ARGUMENT = 3

#: The gRPC status code of a message over gRPC's own size limit.
RESOURCE_EXHAUSTED = 8

#: etcd's gRPC code for "not found" (a lease that expired or was revoked).
NOT_FOUND = 5


def _jsonHeaders() -> Headers:
    # A new one per request: treq may add to the headers it is given.
    return Headers({b"Content-Type": [b"application/json"]})


def int64(value: Any) -> int:
    """
    @return: an int64 field of a JSON gateway answer: sent as a string, and
        left out when it is 0.
    """
    return int(value) if value not in (None, "") else 0


def encode(data: KeyLike) -> str:
    """
    @return: a key or value in the JSON gateway's form: base64 of its bytes
        (of its UTF-8 encoding, for a L{str}).
    """
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    return base64.b64encode(raw).decode("ascii")


def decode(text: Optional[str]) -> bytes:
    """
    @return: the bytes of a base64 key or value from an answer (empty when
        the field was left out).
    """
    return base64.b64decode(text) if text else b""


def headerRevision(answer: Dict[str, Any]) -> int:
    """
    @return: the store's revision in an answer's header.
    """
    return int64((answer.get("header") or {}).get("revision"))


def describe(reason: Any) -> str:
    """
    @param reason: an exception or a L{Failure}.
    @return: a one-line description of why a request failed, for the log.
    """
    if isinstance(reason, Failure):
        reason = reason.value
    # twisted.web's ResponseFailed and its kind carry a list of failures.
    reasons = getattr(reason, "reasons", None)
    if isinstance(reasons, list) and reasons:
        return "; ".join(describe(r) for r in reasons)
    text = str(reason) or type(reason).__name__
    return text if len(text) < 300 else text[:300] + "..."


def normaliseEndpoint(endpoint: str) -> str:
    """
    @param endpoint: C{HOST:PORT}, with or without C{http://}.
    @return: C{HOST:PORT}.
    @raise ValueError: when C{endpoint} is not of that form.
    """
    endpoint = endpoint.strip()
    for scheme in ("http://", "https://"):
        if endpoint.startswith(scheme):
            endpoint = endpoint[len(scheme) :]
    host, sep, port = endpoint.rstrip("/").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"etcd endpoint {endpoint!r} is not HOST:PORT")
    return f"{host}:{int(port)}"


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

    @classmethod
    def fromJSON(cls, problem: Any, status: int = 0) -> EtcdError:
        """
        @param problem: the C{error} object of an answer or of a streamed
            message (C{{"grpc_code": ..., "message": ...}} or C{{"code":
            ...}}), or a bare message.
        @return: the error it describes.
        """
        if not isinstance(problem, dict):
            return cls(0, str(problem), status)
        return cls(
            int64(problem.get("grpc_code") or problem.get("code")),
            str(problem.get("message") or problem.get("error") or problem),
            status or int64(problem.get("http_code")),
        )

    @property
    def tooLarge(self) -> bool:
        """
        Whether etcd refused the request for its size: more operations in a
        transaction than C{--max-txn-ops}, or more bytes than
        C{--max-request-bytes} (or gRPC's message limit).
        """
        text = self.message.lower()
        if self.code == RESOURCE_EXHAUSTED:
            return True
        return self.code == INVALID_ARGUMENT and (
            "too many operations" in text or "too large" in text
        )


class EtcdUnavailable(StoreError):
    """
    No endpoint of the etcd cluster answered the request.
    """


class EtcdIndeterminate(EtcdUnavailable):
    """
    A write was sent but its answer was lost (the connection broke, or it
    timed out): it may or may not have been applied.
    """


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


def _bytes(key: KeyLike) -> bytes:
    return key.encode("utf-8") if isinstance(key, str) else bytes(key)


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
        """
        @param data: a C{kv} object of an answer or an event.
        """
        return cls(
            key=decode(data.get("key")),
            value=decode(data.get("value")),
            createRevision=int64(data.get("create_revision")),
            modRevision=int64(data.get("mod_revision")),
            version=int64(data.get("version")),
            lease=int64(data.get("lease")),
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
        """
        @param data: one of the C{events} of a watch answer.
        """
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

    def rangeAt(self, index: int) -> List[KeyValue]:
        """
        @return: the keys read by the range operation at C{index} among the
            operations that ran.
        """
        answer = self.responses[index].get("response_range") or {}
        return [KeyValue.fromJSON(kv) for kv in answer.get("kvs") or ()]


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
        "key": encode(key),
        "result": result,
        "mod_revision": str(revision),
    }
    if rangeEnd is not None:
        compare["range_end"] = encode(rangeEnd)
    return compare


def compareVersion(
    key: KeyLike, result: str, version: int, rangeEnd: Optional[KeyLike] = None
) -> Dict[str, Any]:
    """
    @param rangeEnd: compare every key in C{[key, rangeEnd)}: the compare
        holds when it holds for each of them, and an empty range compares as
        one key of version 0 (so C{EQUAL 0} holds when the range is empty,
        C{GREATER 0} when it is not).
    @return: a compare of a key's C{version} (0 when it does not exist).
    """
    compare = {
        "target": "VERSION",
        "key": encode(key),
        "result": result,
        "version": str(version),
    }
    if rangeEnd is not None:
        compare["range_end"] = encode(rangeEnd)
    return compare


def compareValue(key: KeyLike, result: str, value: KeyLike) -> Dict[str, Any]:
    """
    @return: a compare of a key's value with C{value}; it never holds for a
        key that does not exist.
    """
    return {"target": "VALUE", "key": encode(key), "result": result, "value": encode(value)}


def opPut(key: KeyLike, value: KeyLike, lease: int = 0) -> Dict[str, Any]:
    """
    @return: an operation that puts C{value} at C{key}.
    """
    put: Dict[str, Any] = {"key": encode(key), "value": encode(value)}
    if lease:
        put["lease"] = str(lease)
    return {"request_put": put}


def opDelete(key: KeyLike, prefix: bool = False) -> Dict[str, Any]:
    """
    @return: an operation that deletes C{key}, or every key under it.
    """
    delete = {"key": encode(key)}
    if prefix:
        delete["range_end"] = encode(prefixEnd(key))
    return {"request_delete_range": delete}


def opRange(key: KeyLike, prefix: bool = False, keysOnly: bool = False) -> Dict[str, Any]:
    """
    @param keysOnly: read the keys and their revisions, not their values.
    @return: an operation that reads C{key}, or every key under it.
    """
    request: Dict[str, Any] = {"key": encode(key)}
    if prefix:
        request["range_end"] = encode(prefixEnd(key))
    if keysOnly:
        request["keys_only"] = True
    return {"request_range": request}


def _writes(operations: Iterable[Dict[str, Any]]) -> bool:
    return any("request_range" not in op for op in operations)


#: The most jitter L{etcdBackoff} adds to a delay, in seconds.
JITTER = 0.25


def etcdBackoff(random: Callable[[], float] = random.random) -> Callable[[int], float]:
    """
    The back-off between attempts to reach etcd: Twisted's
    L{backoffPolicy}, 0.1 s doubling up to 5 s, plus up to L{JITTER}
    seconds of jitter so that many gateways retrying together spread out.

    @param random: a source of numbers in C{[0, 1)} for the jitter.
    @return: a policy: attempt number (0 for the first retry) to delay in
        seconds.
    """
    return backoffPolicy(
        initialDelay=0.1, maxDelay=5.0, factor=2.0, jitter=lambda: JITTER * random()
    )


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
        """
        Whether etcd answered since every endpoint last failed.
        """
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
                reason=describe(reason),
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
            int64(document.get("code")),
            str(document.get("message") or document.get("error") or ""),
            status,
        )
    raise EtcdError(0, f"HTTP {status}: {body[:200]!r}", status)


class EtcdClient:
    """
    An etcd v3 client on treq, against etcd's JSON gateway (etcd 3.4+).

    Requests go to one endpoint at a time; when it cannot be reached, the
    next one is tried.  Reads go to the next endpoint on any failure;
    writes only when they certainly never reached etcd (a write whose
    answer was lost fails with L{EtcdIndeterminate}, since it may have been
    applied).

    Making a client does no I/O: connections open with the first request.

    @ivar endpoints: the C{host:port} of each endpoint.
    @ivar availability: the L{Availability} shared by every request and
        stream.
    @ivar backoff: the back-off policy of every retry loop on this client
        (attempt number to delay in seconds; see L{etcdBackoff}).
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        reactor: Any,
        treqClient: Optional[HTTPClient] = None,
        timeout: float = 5.0,
        backoff: Optional[Callable[[int], float]] = None,
    ) -> None:
        """
        @param endpoints: C{"host:port"} of each member (C{http://} allowed).
        @param reactor: the reactor (an L{IReactorTime} and, without
            C{treqClient}, an L{IReactorTCP}).
        @param treqClient: the treq L{HTTPClient}, or L{None} for one of our
            own with a persistent connection pool.
        @param timeout: the longest a request may take, in seconds (streams
            are only bounded until etcd answers their headers).
        @param backoff: the back-off policy of the retry loops; by default
            L{etcdBackoff}.
        """
        self._reactor = reactor
        self.endpoints = [normaliseEndpoint(e) for e in endpoints]
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
        self.backoff: Callable[[int], float] = backoff if backoff is not None else etcdBackoff()
        self.availability = Availability(self.endpoints, reactor)
        self._onClose: List[Callable[[], Any]] = []
        self._closed = False
        #: The back-off waits under way (L{sleep}), with their timers.
        self._sleeping: Dict[Deferred, Any] = {}

    # -- endpoints -------------------------------------------------------------------

    @property
    def currentEndpoint(self) -> str:
        """
        @return: the endpoint the next request goes to.
        """
        return self.endpoints[self._current % len(self.endpoints)]

    @property
    def closed(self) -> bool:
        """
        Whether L{close} was called: no request may start any more.
        """
        return self._closed

    def endpointFailed(self, endpoint: str, reason: Any) -> None:
        """
        Say that a request to C{endpoint} failed without an answer (or with
        etcd unable to serve): the outage is logged if every endpoint has
        failed, and the next request goes to the next endpoint.

        Requests made through this client report themselves; a caller of
        L{openStream} reports how its stream ended.
        """
        self.availability.failed(endpoint, reason)
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

    def endpointAnswered(self, endpoint: str) -> None:
        """
        Say that C{endpoint} answered (ending an outage, if there was one).
        An outage that ends wakes the back-off waits under way (L{sleep}):
        etcd answers again, so every retry loop tries again now, rather
        than up to a whole back-off later.
        """
        outage = not self.availability.available
        self.availability.succeeded(endpoint)
        if outage:
            for waiter in list(self._sleeping):
                self._wake(waiter)

    # -- requests ------------------------------------------------------------------

    def _urlOf(self, endpoint: str, path: str) -> str:
        return f"http://{endpoint}{path}"

    async def _postOnce(self, endpoint: str, path: str, body: bytes) -> Dict[str, Any]:
        response = await self._treq.post(
            self._urlOf(endpoint, path), data=body, headers=_jsonHeaders()
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
                    self.endpointAnswered(endpoint)
                    raise
                # Reachable, but cannot serve (no leader, a proposal lost
                # with a leader change, stopping): ask another member.
                self.endpointFailed(endpoint, e)
                if not idempotent:
                    raise
                last = e
            except CancelledError:
                raise
            except Exception as e:
                self.endpointFailed(endpoint, e)
                if not (idempotent or _wasNotSent(e)):
                    raise EtcdIndeterminate(
                        f"etcd at {endpoint} did not answer a write, which may or may not "
                        f"have been applied: {describe(e)}"
                    )
                last = e
            else:
                self.endpointAnswered(endpoint)
                return answer
        raise EtcdUnavailable(
            f"no etcd endpoint answered ({', '.join(self.endpoints)}): {describe(last)}"
        )

    def _call(self, path: str, payload: Dict[str, Any], idempotent: bool = True) -> Deferred:
        return Deferred.fromCoroutine(self.call(path, payload, idempotent))

    def openStream(self, endpoint: str, path: str, payload: Dict[str, Any]) -> Deferred:
        """
        POST a request whose answer is a stream (a watch) to one endpoint,
        without failing over: the caller knows where to resume, and says
        how the stream went with L{endpointFailed} and L{endpointAnswered}.

        The answer's body is not buffered: what the caller's protocol does
        not keep is gone once read.

        @return: a Deferred firing with the L{IResponse} once etcd answered
            200 (within the client's timeout); the caller delivers its body
            to a protocol.  It fails with L{EtcdError} when etcd answered
            with an error, and as the connection failed otherwise.
        """

        async def go() -> Any:
            if self._closed:
                raise StoreError("the etcd client is closed")
            body = json.dumps(payload).encode("utf-8")
            # Unbuffered: treq would otherwise keep every byte of a stream
            # that lives for days.
            posted = self._treq.post(
                self._urlOf(endpoint, path), data=body, headers=_jsonHeaders(), unbuffered=True
            )
            response = await posted.addTimeout(self._timeout, self._reactor)
            if response.code != 200:
                _checkAnswer(response.code, await response.content())
            return response

        return Deferred.fromCoroutine(go())

    def sleep(self, seconds: float) -> Deferred:
        """
        Wait between two attempts of a retry loop.

        @return: a Deferred that fires after C{seconds}, or sooner when an
            outage ends (another request got an answer after every
            endpoint had failed: see L{endpointAnswered}), so that a watch
            waiting out an outage resumes as soon as etcd answers, not up
            to a whole back-off later; cancelling it stops the wait.
        """

        def cancel(waiter: Deferred) -> None:
            timer = self._sleeping.pop(waiter, None)
            if timer is not None and timer.active():
                timer.cancel()

        waiter: Deferred = Deferred(cancel)
        self._sleeping[waiter] = self._reactor.callLater(seconds, self._wake, waiter)
        return waiter

    def _wake(self, waiter: Deferred) -> None:
        timer = self._sleeping.pop(waiter, None)
        if timer is not None and timer.active():
            timer.cancel()
        if not waiter.called:
            waiter.callback(None)

    def retrying(self, operation: Callable[[], Any], what: str = "etcd request") -> Deferred:
        """
        Run C{operation} until it does not fail with L{EtcdUnavailable} (or
        an L{EtcdError} meaning unavailable), waiting as L{backoff} says
        between attempts.  Other errors end it.

        @param operation: returns a Deferred or a coroutine.
        @return: a Deferred with C{operation}'s result; cancelling it stops
            the retries.
        """

        async def loop() -> Any:
            attempt = 0
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
                delay = self.backoff(attempt)
                attempt += 1
                log.debug("{what} failed; retrying in {delay:.2f} s", what=what, delay=delay)
                await self.sleep(delay)

        return Deferred.fromCoroutine(loop())

    # -- key-value -------------------------------------------------------------------

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
        payload: Dict[str, Any] = {"key": encode(key)}
        if prefix:
            payload["range_end"] = encode(prefixEnd(key))
        elif rangeEnd is not None:
            payload["range_end"] = encode(rangeEnd)
        if revision:
            payload["revision"] = str(revision)
        return self._call("/v3/kv/range", payload).addCallback(
            lambda answer: (
                [KeyValue.fromJSON(kv) for kv in answer.get("kvs") or ()],
                headerRevision(answer),
            )
        )

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
        payload = opPut(key, value, lease)["request_put"]
        return self._call("/v3/kv/put", payload, idempotent=False).addCallback(headerRevision)

    def delete(self, key: KeyLike, prefix: bool = False) -> Deferred:
        """
        Delete a key, or every key under a prefix.

        @return: a Deferred firing with C{(deleted, revision)}: how many keys
            went, and the new revision.
        """
        payload = opDelete(key, prefix)["request_delete_range"]
        return self._call("/v3/kv/deleterange", payload, idempotent=False).addCallback(
            lambda answer: (int64(answer.get("deleted")), headerRevision(answer))
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
        L{compareValue}, L{opPut}, L{opDelete} and L{opRange}.

        A transaction that only reads is sent again, like a range, after a
        failure; one that writes is not (see L{EtcdIndeterminate}).

        @return: a Deferred firing with a L{TxnResult}.
        """
        payload = {"compare": list(compare), "success": list(success), "failure": list(failure)}
        idempotent = not (_writes(payload["success"]) or _writes(payload["failure"]))
        return self._call("/v3/kv/txn", payload, idempotent=idempotent).addCallback(
            lambda answer: TxnResult(
                bool(answer.get("succeeded")),
                list(answer.get("responses") or ()),
                headerRevision(answer),
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
            lambda answer: (int64(answer.get("ID")), int64(answer.get("TTL")))
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
                raise EtcdError.fromJSON(answer["error"])
            return int64((answer.get("result") or answer).get("TTL"))

        return self._call("/v3/lease/keepalive", {"ID": str(leaseID)}).addCallback(parse)

    def leaseRevoke(self, leaseID: int) -> Deferred:
        """
        Revoke a lease: every key under it is deleted.

        @return: a Deferred firing with L{None}; it fails with L{EtcdError}
            (code L{NOT_FOUND}) when the lease does not exist.
        """
        return self._call("/v3/lease/revoke", {"ID": str(leaseID)}).addCallback(lambda _: None)

    def leaseTimeToLive(self, leaseID: int) -> Deferred:
        """
        @return: a Deferred firing with the lease's remaining TTL in seconds
            (-1 when it does not exist).
        """
        return self._call("/v3/lease/timetolive", {"ID": str(leaseID)}).addCallback(
            lambda answer: int64(answer.get("TTL"))
        )

    # -- closing ----------------------------------------------------------------------------

    def onClose(self, stop: Callable[[], Any]) -> Callable[[], None]:
        """
        Have C{stop} called when the client closes, for what runs on the
        client and must end with it (a watch).

        @param stop: returns a Deferred (or L{None}); L{close} waits for it.
        @return: a callable that cancels the registration.
        """
        self._onClose.append(stop)

        def cancel() -> None:
            try:
                self._onClose.remove(stop)
            except ValueError:
                pass

        return cancel

    def close(self) -> Deferred:
        """
        Stop what registered with L{onClose} (the watches) and close the
        connections of our own pool.

        @return: a Deferred firing when that is done.
        """
        self._closed = True
        stopping = [stop() for stop in list(self._onClose)]
        del self._onClose[:]
        waits: List[Deferred] = [d for d in stopping if isinstance(d, Deferred)]
        if self._pool is not None:
            waits.append(self._pool.closeCachedConnections())
        return gatherResults(waits).addCallback(lambda _: None)
