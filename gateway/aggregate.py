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
optional node (C{required: false}) becomes C{null} and is named in the
C{X-Gateway-Partial} header; a failed required node fails the whole
request with 502 (or 504 for a timeout) and cancels the node calls still
in flight, and so does a client that goes away.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from twisted.internet import defer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import PotentialDataLoss, ResponseDone

from gateway.errors import (
    EarlyResponse,
    NoBackendAvailable,
    UpstreamBroken,
    UpstreamError,
    UpstreamTimeout,
)
from gateway.upstream import BytesBodyProducer

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


class _Collect(Protocol):
    """
    Collects a response body, up to a limit.

    @ivar transport: the response's producer (pause/resume/stopProducing).
    """

    transport: Any

    def __init__(self, finished: defer.Deferred, limit: int) -> None:
        self._finished = finished
        self._limit = limit
        self._parts: List[bytes] = []
        self._size = 0

    def dataReceived(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._limit:
            self._parts = []
            self.transport.stopProducing()
            return
        self._parts.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._finished.called:
            return
        if self._size > self._limit:
            self._finished.errback(BodyTooLarge(f"more than {self._limit} bytes"))
        elif reason.check(ResponseDone, PotentialDataLoss):
            self._finished.callback(b"".join(self._parts))
        else:
            self._finished.errback(UpstreamBroken(reason.getErrorMessage()))


def _readJSON(response: Any) -> defer.Deferred:
    def cancel(d: defer.Deferred) -> None:
        if collector.transport is not None:
            collector.transport.stopProducing()

    finished: defer.Deferred = defer.Deferred(cancel)
    collector = _Collect(finished, MAX_NODE_BODY)
    response.deliverBody(collector)

    def decode(body: bytes) -> Any:
        if not 200 <= response.code < 300:
            raise NodeFailed(f"status {response.code}")
        try:
            return json.loads(body)
        except ValueError as e:
            raise NodeFailed(f"answer is not JSON: {e}")

    return finished.addCallback(decode)


class Aggregator:
    """
    Serves APIs with several nodes for L{gateway.proxy.GatewayResource}.

    @param client: the L{gateway.interfaces.IUpstreamClient}.
    """

    def __init__(self, client: Any, reactor: Any) -> None:
        self._client = client
        self._reactor = reactor

    def serve(self, context: Any, chain: Sequence[Any], proxy: Any) -> None:
        """
        Fan out, merge, and answer through the proxy's C{after} hooks.
        """
        d = defer.Deferred.fromCoroutine(self._aggregate(context))
        context.attributes["gateway.cancel"] = d.cancel
        d.addCallbacks(
            self._merged,
            self._failed,
            callbackArgs=(context, chain, proxy),
            errbackArgs=(context, chain, proxy),
        )

    def _merged(self, result: Tuple[dict, List[str]], context: Any, chain: Any, proxy: Any) -> None:
        context.attributes.pop("gateway.cancel", None)
        if context.request._disconnected:
            return
        merged, partial = result
        headers: Dict[Union[str, bytes], Sequence[Union[str, bytes]]] = {}
        if partial:
            headers[b"x-gateway-partial"] = [",".join(partial).encode("utf-8")]
        proxy._answer(context, chain, EarlyResponse(200, merged, headers))

    def _failed(self, failure: Failure, context: Any, chain: Any, proxy: Any) -> None:
        context.attributes.pop("gateway.cancel", None)
        if failure.check(defer.CancelledError) and context.request._disconnected:
            return
        proxy._failed(failure, context, chain)

    async def _aggregate(self, context: Any) -> Tuple[dict, List[str]]:
        request = context.request
        body = _requestBody(request)
        batches: Dict[int, List[Any]] = {}
        for node in context.api.nodes:
            batches.setdefault(node.batch, []).append(node)
        results: Dict[str, Any] = {}
        partial: List[str] = []
        for batchNumber in sorted(batches):
            nodes = batches[batchNumber]
            calls: List[defer.Deferred] = []
            requiredFailure: List[Failure] = []

            def failFast(
                failure: Failure,
                calls: List[defer.Deferred] = calls,
                requiredFailure: List[Failure] = requiredFailure,
            ) -> Failure:
                # A required node failed: the request has failed, so stop
                # the other calls now instead of waiting for them.
                if not requiredFailure:
                    requiredFailure.append(failure)
                    for call in calls:
                        call.cancel()
                return failure

            for node in nodes:
                call = self._call(context, node, body, results)
                if node.required:
                    call.addErrback(failFast)
                calls.append(call)
                if requiredFailure:
                    break
            # consumeErrors: every failure is handled below, none is "lost".
            gathered = defer.DeferredList(calls, consumeErrors=True)
            try:
                outcomes = await gathered
            except defer.CancelledError:
                for call in calls:
                    call.cancel()
                raise
            if requiredFailure:
                requiredFailure[0].raiseException()
            for node, (ok, value) in zip(nodes, outcomes):
                if ok:
                    results[node.attrName] = value
                else:
                    log.info(
                        "optional node {attr} of {api} failed: {error}",
                        attr=node.attrName,
                        api=context.api.name,
                        error=value.getErrorMessage(),
                    )
                    results[node.attrName] = None
                    partial.append(node.attrName)
        return results, partial

    def _call(self, context: Any, node: Any, body: Optional[bytes], results: dict) -> Any:
        """
        One node request; a required node's failure cancels its siblings.
        """
        cluster = context.snapshot.clusters[node.clusterName]
        backend = cluster.choose(context.clientIP)
        if backend is None:
            return defer.fail(NoBackendAvailable(f"cluster {cluster.name!r}: no server"))
        request = context.request
        if node.rewrite is not None:
            uri = node.rewrite.expand(context.params, request, results)
        else:
            uri = request.uri
        producer = BytesBodyProducer(body) if body is not None else None
        backend.requestStarted()
        sentAt = self._reactor.seconds()
        d = self._client.request(
            backend, request.method, uri, context.upstreamHeaders, producer, node.timeout
        )
        latency: List[Optional[float]] = [None]

        def gotResponse(response: Any) -> Any:
            latency[0] = self._reactor.seconds() - sentAt
            if backend.isFailureStatus(response.code):
                response.deliverBody(Protocol())
                raise NodeFailed(f"status {response.code}")
            return _readJSON(response)

        def done(result: Any) -> Any:
            if isinstance(result, Failure):
                cancelled = result.check(defer.CancelledError) and not latency[0]
                backend.requestFinished(latency[0], None if cancelled else False)
            else:
                backend.requestFinished(latency[0], True)
            return result

        d.addCallback(gotResponse)
        # The body read is bounded by the timeout too.
        d.addTimeout(node.timeout, self._reactor, onTimeoutCancel=_timedOut)
        d.addBoth(done)
        return d


def _timedOut(result: Any, timeout: float) -> Any:
    # Called only when the timeout fired and cancelled the call, whatever
    # error the cancellation surfaced as.
    if isinstance(result, Failure):
        raise UpstreamTimeout(f"no complete answer within {timeout:g}s")
    return result


def _requestBody(request: Any) -> Optional[bytes]:
    """
    @return: the client's body to repeat to every node, or L{None}.
    @raise UpstreamError: when it is too large to repeat.
    """
    content = request.content
    if content is None:
        return None
    content.seek(0, 2)
    length = content.tell()
    content.seek(0, 0)
    if length == 0:
        return None
    if length > MAX_REQUEST_BODY:
        raise _RequestTooLarge(f"request body over {MAX_REQUEST_BODY} bytes")
    data = content.read()
    content.seek(0, 0)
    return data


class _RequestTooLarge(UpstreamError):
    status = 413
    reason = "request body too large for an aggregation"
