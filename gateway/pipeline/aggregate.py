"""
Aggregation: one request fanned out to several clusters, their JSON
answers merged into one object keyed by each node's C{attrName}.

Nodes are grouped by C{batch} (ascending); the nodes of one batch run
concurrently, and a later batch may use fields of earlier answers in its
C{urlRewrite} (C{$depend.ATTR.FIELD}).  So three independent nodes cost
about the slowest of them, not their sum.

Each node request is sent like a proxied one: the cluster's balancer picks
a healthy server (skipping open breakers), the same upstream headers go
(with X-Forwarded-*), the client's method and body are repeated, and the
node's C{timeout} bounds it.

A node fails when its server is refused, broken or too slow, when it
answers a status outside 2xx, or when its body is not JSON.  A failed
optional node (C{required: false}) becomes its C{default} (C{null} when
it has none) and is named in the C{X-Gateway-Partial} header; a failed required node fails the whole
request with 502 (or 504 for a timeout) and cancels the node calls still
in flight, and so does a client that goes away.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from gateway.balancing.backend import startRequest
from gateway.http.body import CLEAN_ENDS, BytesBodyProducer
from gateway.http.errors import UpstreamBroken, UpstreamError, UpstreamTimeout
from gateway.interfaces import IUpstreamClient
from gateway.pipeline.errors import NoBackendAvailable, outcomeOf
from gateway.pipeline.exchange import EarlyResponse, Exchange

log = Logger()


#: The largest body a node may answer (the merged answer is buffered).
MAX_NODE_BODY = 8 * 1024 * 1024


#: The largest client body an aggregation repeats to its nodes.
MAX_REQUEST_BODY = 1024 * 1024


class NodeFailed(UpstreamError):
    """
    A node answered, but not with a 2xx JSON body.
    """

    status = 502
    reason = "upstream answered with an error"


class BodyTooLarge(UpstreamBroken):
    reason = "upstream answer too large to aggregate"


class _NodeCall(Protocol):
    """
    One node's exchange: the request, then its JSON body, collected up to
    L{MAX_NODE_BODY} bytes and decoded; the end (an answer or an error) is
    reported to the aggregation once, with the backend told first.

    @ivar transport: once the head is in, the body's producer.
    """

    transport: Any = None

    def __init__(self, aggregation: _Aggregation, index: int, node: Any, backend: Any) -> None:
        self._aggregation = aggregation
        self._index = index
        self._node = node
        self._backend = backend
        self._reactor = aggregation._reactor
        self._sentAt = 0.0
        #: The client's call, until its head is in (or it failed).
        self._pending: Any = None
        self._latency: Optional[float] = None
        self._code = 0
        self._parts: List[bytes] = []
        self._size = 0
        self._cancelled = False
        self._over = False

    def start(self, method: bytes, uri: bytes, headers: Any, producer: Any) -> None:
        """
        Send the node's request, without a timeout of the client's (the
        batch's timer bounds the whole exchange, connecting and reading
        the body included).
        """
        self._sentAt = self._reactor.seconds()
        sent = self._aggregation._aggregator._client.send(
            self._backend, method, uri, headers, producer, None, self._head, self._headFailed
        )
        if not sent.finished:
            self._pending = sent

    def cancel(self) -> None:
        """
        Stop the exchange: its end is then reported as a failure (now
        before the head, once the connection is cut during the body).
        """
        self._cancelled = True
        pending = self._pending
        if pending is not None:
            pending.cancel()
        elif self.transport is not None and not self._over:
            self.transport.stopProducing()

    # -- the client's call ------------------------------------------------------

    def _head(self, response: Any) -> None:
        self._pending = None
        self._latency = self._reactor.seconds() - self._sentAt
        code = self._code = response.code
        if self._backend.isFailureStatus(code):
            response.deliverBody(Protocol())
            self._end(Failure(NodeFailed(f"status {code}")))
            return
        self._code = code
        body = getattr(response, "body", None)
        if body is None:
            response.deliverBody(self)
        elif len(body) > MAX_NODE_BODY:
            self._end(Failure(BodyTooLarge(f"more than {MAX_NODE_BODY} bytes")))
        else:
            # The whole body came with the head: nothing to collect.
            self._complete(body)

    def _headFailed(self, failure: Failure) -> None:
        self._pending = None
        self._end(failure)

    # -- the body ----------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > MAX_NODE_BODY:
            self._parts = []
            self.transport.stopProducing()
            return
        self._parts.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._size > MAX_NODE_BODY:
            self._end(Failure(BodyTooLarge(f"more than {MAX_NODE_BODY} bytes")))
        elif not isinstance(reason.value, CLEAN_ENDS):
            self._end(Failure(UpstreamBroken(reason.getErrorMessage())))
        else:
            self._complete(b"".join(self._parts))

    def _complete(self, data: bytes) -> None:
        """
        The whole body is in: the node's answer, if it is JSON.
        """
        if not 200 <= self._code < 300:
            self._end(Failure(NodeFailed(f"status {self._code}")))
            return
        try:
            value, raw = _decode(data)
        except ValueError as e:
            self._end(Failure(NodeFailed(f"answer is not JSON: {e}")))
            return
        self._end(None, value, raw)

    def _end(self, failure: Optional[Failure], value: Any = None, raw: Any = None) -> None:
        if self._over:
            return
        self._over = True
        self._parts = []
        aggregation = self._aggregation
        index = self._index
        if not self._cancelled or aggregation._timedOut[index]:
            # How long this node took, to send it in its turn next time
            # (a timeout counts as what it waited).
            latency = self._latency
            if latency is None:
                latency = self._reactor.seconds() - self._sentAt
            aggregation._aggregator._noteLatency(
                (aggregation._exchange.api.name, self._node.attrName), latency
            )
        stats = aggregation._aggregator._stats
        elapsed = self._reactor.seconds() - self._sentAt
        name = self._backend.name
        if failure is None:
            self._backend.requestFinished(self._latency, True, self._sentAt)
            if stats is not None:
                stats.recordUpstream(name, self._code, None, elapsed)
            aggregation._nodeAnswered(value, raw, index)
            return
        if aggregation._timedOut[index]:
            self._backend.requestFinished(self._latency, False, self._sentAt)
            failure = Failure(UpstreamTimeout(f"no complete answer within {self._node.timeout:g}s"))
            if stats is not None:
                stats.recordUpstream(name, None, "timeout", elapsed)
        elif self._cancelled:
            # Stopped by us (the client left, a sibling failed): not the
            # server's fault, and not counted for it.
            self._backend.requestFinished(self._latency, None, self._sentAt)
        else:
            self._backend.requestFinished(self._latency, False, self._sentAt)
            if stats is not None:
                code = self._code or None
                # (An answer that is no 2xx JSON is counted by its status;
                # one that breaks, or is no JSON, as broken.)
                outcome = None if code is not None and code >= 400 else outcomeOf(failure.value)
                stats.recordUpstream(name, code, outcome, elapsed)
        aggregation._nodeFailed(failure, index)


def _decode(data: bytes) -> Tuple[Any, Optional[bytes]]:
    """
    @return: C{(value, raw)}: the JSON value of a node's answer, and the
        answer itself when it can be spliced into the merged one as it is
        (UTF-8 without a byte order mark), else L{None}.
    @raise ValueError: when it is not JSON.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        # UTF-16 or UTF-32, which json finds out (RFC 8259 says UTF-8, but
        # json.loads has always taken them here).
        return json.loads(data), None
    if text[:1] == "\ufeff":
        return json.loads(text[1:]), None
    # Without the whitespace around it (most bodies end with a newline),
    # which would otherwise show inside the merged object.
    return json.loads(text), data.strip(b" \t\r\n")


_memberNames: Dict[str, bytes] = {}


def _memberName(name: str) -> bytes:
    """
    @return: C{"name":} in JSON.
    """
    encoded = _memberNames.get(name)
    if encoded is None:
        encoded = json.dumps(name).encode("utf-8") + b":"
        if len(_memberNames) < 10_000:
            _memberNames[name] = encoded
    return encoded


#: The weight of each new sample in a node's latency average.
_LATENCY_WEIGHT = 0.3


#: Latency averages kept, at most (one per aggregation node configured).
_MAX_EXPECTED = 10_000


class Aggregator:
    """
    Serves APIs with several nodes for L{gateway.pipeline.resource.GatewayResource}.

    @param client: the L{gateway.interfaces.IUpstreamClient}.
    """

    def __init__(self, client: IUpstreamClient, reactor: IReactorTime, stats: Any = None) -> None:
        """
        @param stats: told of every node call, for its server
            (C{recordUpstream}, see L{gateway.telemetry.stats.Stats}), or
            L{None}.
        """
        self._client = client
        self._reactor = reactor
        self._stats = stats
        #: (API name, node attrName) -> a moving average of the seconds the
        #: node takes to answer (see L{_Aggregation._nextBatch}).
        self._expected: Dict[Tuple[str, str], float] = {}

    def _noteLatency(self, key: Tuple[str, str], seconds: float) -> None:
        expected = self._expected
        before = expected.get(key)
        if before is None:
            if len(expected) >= _MAX_EXPECTED:
                # Names of APIs long gone: start over.
                expected.clear()
            expected[key] = seconds
        else:
            expected[key] = before + _LATENCY_WEIGHT * (seconds - before)

    def serve(self, exchange: Exchange) -> Deferred[EarlyResponse]:
        """
        Fan an aggregated request out to its nodes and merge their answers.

        @param exchange: the request's L{Exchange}; its API has several
            nodes.
        @return: a L{Deferred} that fires with the merged answer (naming
            failed optional nodes in C{X-Gateway-Partial}), or fails with
            the L{UpstreamError} of a failed required node; cancelling it
            cancels the node calls in flight.
        """
        return _Aggregation(self, exchange).start()


class _Aggregation:
    """
    One aggregated request: its batches of nodes, one after the other, the
    nodes of a batch at once.

    A plain object with callbacks rather than a coroutine over a
    L{defer.DeferredList}, and one timer per batch for every node's
    C{timeout} (from when the batch starts, until its JSON is read) rather
    than one per node: an aggregation is several upstream exchanges per
    request, so what each costs counts several times.
    """

    def __init__(self, aggregator: Aggregator, exchange: Exchange) -> None:
        self._aggregator = aggregator
        self._reactor = aggregator._reactor
        self._exchange = exchange
        self._done: Deferred[EarlyResponse] = Deferred(self._cancelled)
        self._body: Optional[bytes] = None
        self._bodyWait: Optional[Deferred[Optional[bytes]]] = None
        self._batches = exchange.api.batches
        self._next = 0
        self._results: Dict[str, Any] = {}
        # attrName -> the node's JSON as it came (None: to be encoded).
        self._members: Dict[str, Optional[bytes]] = {}
        self._partial: List[str] = []
        self._over = False
        # The batch in flight: per node, its call (None once answered),
        # outcome, deadline and whether it timed out.
        self._nodes: List[Any] = []
        self._calls: List[Optional[_NodeCall]] = []
        self._outcomes: List[Any] = []
        self._deadlines: List[float] = []
        self._timedOut: List[bool] = []
        self._pending = 0
        self._timer: Any = None

    def start(self) -> Deferred[EarlyResponse]:
        done = self._done
        body = self._exchange.body
        if body.complete:
            self._gotBody(body.read(MAX_REQUEST_BODY))
        else:
            # A streamed body: every node gets all of it, so wait for it.
            waiting = self._bodyWait = body.whenRead(MAX_REQUEST_BODY)
            waiting.addCallbacks(self._gotBody, self._fail)
        return done

    def _gotBody(self, body: Optional[bytes]) -> None:
        self._bodyWait = None
        if self._over:
            return
        if body is None:
            self._fail(Failure(_RequestTooLarge(f"request body over {MAX_REQUEST_BODY} bytes")))
            return
        self._body = body or None
        self._nextBatch()

    def _cancelled(self, done: Deferred[EarlyResponse]) -> None:
        # The Deferred's canceller: the client went away.
        self._fail(Failure(defer.CancelledError()))

    # -- batches --------------------------------------------------------------

    def _nextBatch(self) -> None:
        if self._next == len(self._batches):
            self._finish()
            return
        nodes = self._nodes = self._batches[self._next]
        self._next += 1
        count = len(nodes)
        self._calls = [None] * count
        self._outcomes = [None] * count
        self._timedOut = [False] * count
        now = self._reactor.seconds()
        self._deadlines = [now + node.timeout for node in nodes]
        self._pending = count
        batch = self._next
        order: Sequence[int] = range(count)
        expected = self._aggregator._expected
        if count > 1 and expected:
            # The slowest node first: each request sent can wake its
            # backend, which may take the CPU from the gateway before it
            # sends the next, so the last one sent leaves later; that
            # should be the one that answers first anyway.  (Nodes never
            # timed yet keep their order, after the others.)
            api = self._exchange.api.name
            order = sorted(order, key=lambda i: -expected.get((api, nodes[i].attrName), 0.0))
        for i in order:
            self._startNode(i, nodes[i])
            if self._over or self._next != batch:
                # Over, or this batch was done at once (its last node
                # answered synchronously) and the next one started.
                return
        if self._pending:
            self._armTimer()

    def _batchDone(self) -> None:
        self._cancelTimer()
        results, partial, members = self._results, self._partial, self._members
        for node, (ok, value, raw) in zip(self._nodes, self._outcomes):
            if ok:
                results[node.attrName] = value
                members[node.attrName] = raw
            else:
                log.info(
                    "optional node {attr} of {api} failed: {error}",
                    attr=node.attrName,
                    api=self._exchange.api.name,
                    error=value.getErrorMessage(),
                )
                results[node.attrName] = node.default
                members[node.attrName] = node.defaultJSON
                partial.append(node.attrName)
        self._nextBatch()

    # -- one node -----------------------------------------------------------------

    def _startNode(self, i: int, node: Any) -> None:
        exchange = self._exchange
        cluster = exchange.snapshot.clusters[node.clusterName]
        backend = cluster.choose(exchange.clientIP)
        if backend is None:
            self._nodeFailed(Failure(NoBackendAvailable(f"cluster {cluster.name!r}: no server")), i)
            return
        request = exchange.request
        if node.rewrite is not None:
            uri = node.rewrite.expand(exchange.params, request, self._results)
        else:
            uri = request.uri
        body = self._body
        producer = BytesBodyProducer(body) if body is not None else None
        backend = startRequest(cluster, backend)
        if backend is None:
            # Another worker took its server's last maxQPS token.
            self._nodeFailed(Failure(NoBackendAvailable(f"cluster {cluster.name!r}: no server")), i)
            return
        call = self._calls[i] = _NodeCall(self, i, node, backend)
        # A HEAD is answered as a GET would be, without the body (which the
        # client's request drops): its nodes' JSON is asked for with GETs.
        method = b"GET" if request.method == b"HEAD" else request.method
        call.start(method, uri, exchange.upstreamHeaders, producer)

    def _nodeAnswered(self, value: Any, raw: Optional[bytes], i: int) -> None:
        if self._over or self._calls[i] is None:
            return
        self._calls[i] = None
        self._outcomes[i] = (True, value, raw)
        self._pending -= 1
        if not self._pending:
            self._batchDone()

    def _nodeFailed(self, failure: Failure, i: int) -> None:
        if self._over:
            return
        self._calls[i] = None
        if self._nodes[i].required:
            # The request has failed: stop the other calls now instead of
            # waiting for them.
            self._fail(failure)
            return
        self._outcomes[i] = (False, failure, None)
        self._pending -= 1
        if not self._pending:
            self._batchDone()

    # -- the timer ------------------------------------------------------------------

    def _armTimer(self) -> None:
        waiting = [d for d, call in zip(self._deadlines, self._calls) if call is not None]
        if not waiting:
            return
        soonest = min(waiting)
        self._timer = self._reactor.callLater(
            max(0.0, soonest - self._reactor.seconds()), self._timerFired
        )

    def _cancelTimer(self) -> None:
        timer = self._timer
        if timer is not None:
            self._timer = None
            if timer.active():
                timer.cancel()

    def _timerFired(self) -> None:
        self._timer = None
        now = self._reactor.seconds()
        batch = self._next
        calls = self._calls
        for i, deadline in enumerate(self._deadlines):
            if self._over or self._next != batch:
                # Cancelling ended the request, or its batch.
                return
            call = calls[i]
            if call is not None and deadline <= now:
                self._timedOut[i] = True
                call.cancel()
        if not self._over and self._next == batch and self._pending:
            self._armTimer()

    # -- the end ------------------------------------------------------------------

    def _finish(self) -> None:
        self._over = True
        self._cancelTimer()
        headers: Dict[Union[str, bytes], Sequence[Union[str, bytes]]] = {}
        if self._partial:
            headers[b"x-gateway-partial"] = [",".join(self._partial).encode("utf-8")]
        self._done.callback(EarlyResponse(200, self._results, headers, self._encode()))

    def _encode(self) -> bytes:
        """
        @return: the merged object as JSON, each node's answer spliced in
            as it came (it was decoded already, to check it), rather than
            encoded again from its decoded value.
        """
        results = self._results
        parts = []
        for name, raw in self._members.items():
            if raw is None:
                raw = json.dumps(results[name], separators=(",", ":")).encode("utf-8")
            parts.append(_memberName(name) + raw)
        return b"{" + b",".join(parts) + b"}\n"

    def _fail(self, failure: Failure) -> None:
        if self._over:
            return
        self._over = True
        bodyWait, self._bodyWait = self._bodyWait, None
        if bodyWait is not None:
            bodyWait.cancel()
        self._cancelTimer()
        calls, self._calls = self._calls, []
        for call in calls:
            if call is not None:
                call.cancel()
        if not self._done.called:
            self._done.errback(failure)


class _RequestTooLarge(UpstreamError):
    status = 413
    reason = "request body too large for an aggregation"
