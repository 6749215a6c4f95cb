"""
The proxy: a C{twisted.web} resource that serves every request from the
current snapshot.

For each request: match an API in the snapshot (404 if none), run the
filters' C{before} hooks (global ones, then the API's own; any may answer
early), apply routing rules (split to another cluster, mirror a copy), let
the cluster's balancer pick a backend, and stream the request to it over a
pooled connection and its answer back to the client with backpressure.
Every answer, proxied or made by the gateway, passes the C{after} hooks of
the filters that ran, in reverse order; an upstream failure first passes
their C{error} hooks.  Gateway-made answers are JSON errors:
404 (no API), 502 (refused, broken), 503 (no healthy server, not ready),
504 (timeout).
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

from twisted.internet import defer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.iweb import UNKNOWN_LENGTH
from twisted.web.resource import Resource

from gateway.balancing.backend import startRequest
from gateway.http.body import CLEAN_ENDS
from gateway.http.client import senderFor
from gateway.http.errors import UpstreamBroken, UpstreamConnectError, UpstreamError, UpstreamTimeout
from gateway.http.headers import rawHeadersOf
from gateway.http.request import GatewayRequest as GatewayRequest  # the proxy site's
from gateway.pipeline.body import bodyProducerFor
from gateway.pipeline.errors import NoBackendAvailable, ServersRateLimited
from gateway.pipeline.exchange import EarlyResponse, RequestContext, ResponseInfo
from gateway.pipeline.forwarding import (
    _HOST,
    _HTTP,
    _HTTPS,
    _X_FORWARDED_FOR,
    _X_FORWARDED_HOST,
    _X_FORWARDED_PROTO,
    ClientAddresses,
    copyRequestHeaders,
    copyResponseHeaders,
)
from gateway.pipeline.retry import RetryBudget

log = Logger()

#: Methods a request may be sent again for (RFC 9110 9.2.2).
IDEMPOTENT_METHODS = frozenset([b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"])


#: Response bodies of a known length up to this size are relayed without
#: backpressure (see L{_StreamBody}).
_SMALL_RESPONSE = 65_536


#: Request methods as the snapshot matches them.
_METHODS = {
    m: m.decode("ascii")
    for m in (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"TRACE")
}


class _StreamBody(Protocol):
    """
    Streams an upstream response body to the client.  The upstream
    connection is registered as the client request's producer, so a slow
    client pauses reading from the backend instead of filling memory;
    a body of a known length up to L{_SMALL_RESPONSE} bytes is written as it
    comes, without (it holds little memory, and registering costs time on
    every request).
    """

    def __init__(self, proxy: GatewayResource, context: RequestContext, stream: bool) -> None:
        self._proxy = proxy
        self._context = context
        self._request = context.request
        self._stream = stream

    def connectionMade(self) -> None:
        self._context.attributes["gateway.bodyTransport"] = self.transport
        if self._stream:
            self._request.registerProducer(self.transport, True)

    def dataReceived(self, data: bytes) -> None:
        self._request.write(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        request = self._request
        context = self._context
        context.attributes.pop("gateway.bodyTransport", None)
        if self._stream and not request._disconnected:
            # (A request whose client left has let go of its channel, and
            # with it of the producer.)
            request.unregisterProducer()
        clean = isinstance(reason.value, CLEAN_ENDS)
        if request._disconnected:
            self._proxy._upstreamDone(context, None)
            return
        self._proxy._upstreamDone(context, clean)
        if clean:
            request.finish()
        else:
            # The body broke half-way: the status is already sent, so the
            # only honest thing left is to cut the client's connection, so
            # that it sees a truncated answer rather than a complete one.
            log.warn(
                "upstream {backend} broke mid-body: {reason}",
                backend=context.backend.name if context.backend else None,
                reason=reason.getErrorMessage(),
            )
            request.channel.transport.abortConnection()


class _Discard(Protocol):
    def connectionLost(self, reason: Failure = connectionDone) -> None:
        pass


class GatewayResource(Resource):
    """
    The proxy's root resource: every path is served from the snapshot.

    @param manager: the L{gateway.routing.snapshot.SnapshotManager} that holds the
        current snapshot.
    @param client: the L{gateway.interfaces.IUpstreamClient}.
    @param clientAddresses: a L{ClientAddresses}.
    @param aggregator: serves APIs with several nodes (see
        L{gateway.pipeline.aggregate}), or L{None}.
    @param stats: told of every answer once, as C{stats.record(context,
        code, outcome)}, where C{outcome} is L{None} for an answer from
        upstream (or an aggregation), C{"reject:FILTER"} when the filter
        named FILTER answered early (C{reject:rate-limit},
        C{reject:ip-access}, C{reject:circuit-breaker}, ...), or what
        L{outcomeOf} says of an upstream failure.
    """

    isLeaf = True

    def __init__(
        self,
        manager: Any,
        client: Any,
        reactor: Any,
        clientAddresses: Optional[ClientAddresses] = None,
        aggregator: Any = None,
        mirror: Any = None,
        retryBudget: Optional[RetryBudget] = None,
        stats: Any = None,
    ) -> None:
        super().__init__()
        self._manager = manager
        self._client = client
        self._reactor = reactor
        self._clients = clientAddresses or ClientAddresses()
        self._aggregator = aggregator
        self._mirror = mirror
        self._retryBudget = retryBudget or RetryBudget(reactor)
        self._sendUpstream = senderFor(client)
        self._stats = stats
        #: Requests being served now.
        self.inFlight = 0
        self._draining = False
        self._drained: List[defer.Deferred] = []

    # -- entry ------------------------------------------------------------------

    def render(self, request: Any) -> Any:
        snapshot = self._manager.snapshot
        if snapshot is None:
            return self._plainError(request, 503, "gateway is starting, no configuration yet")
        incoming = request.requestHeaders
        raw = rawHeadersOf(incoming)
        host = raw.get(_HOST) if raw is not None else incoming.getRawHeaders(b"host")
        method = request.method
        match = snapshot.match(
            _METHODS.get(method) or method.decode("ascii", "replace"),
            host[0].decode("latin-1") if host else None,
            request.path.decode("utf-8", "surrogateescape"),
        )
        if match is None:
            return self._plainError(request, 404, "no API matches this request")
        api = match.value
        address = request.getClientAddress()
        clientIP = self._clients.clientOf(request, address)
        headers = copyRequestHeaders(incoming)
        peer = getattr(address, "host", "unknown").encode("ascii", "replace")
        out = rawHeadersOf(headers)
        if out is not None and raw is not None:
            previous = raw.get(_X_FORWARDED_FOR)
            out[_X_FORWARDED_FOR] = [b", ".join(previous + [peer]) if previous else peer]
            out[_X_FORWARDED_PROTO] = _HTTPS[:] if request.isSecure() else _HTTP[:]
            if host:
                out[_X_FORWARDED_HOST] = host[:1]
        else:
            previous = incoming.getRawHeaders(b"x-forwarded-for")
            headers.setRawHeaders(
                b"x-forwarded-for", [b", ".join(previous + [peer]) if previous else peer]
            )
            headers.setRawHeaders(
                b"x-forwarded-proto", [b"https" if request.isSecure() else b"http"]
            )
            if host:
                headers.setRawHeaders(b"x-forwarded-host", host[:1])
        context = RequestContext(
            request, snapshot, api, match.params, clientIP, self._reactor.seconds(), headers
        )
        self.inFlight += 1
        notifyDone = getattr(request, "notifyDone", None)
        if notifyDone is not None:
            notifyDone(self._requestOver, context)
        else:
            request.notifyFinish().addErrback(self._clientGone, context).addBoth(
                self._requestEnded, request
            )
        chain = snapshot.filters + api.filters if api.filters else snapshot.filters
        self._runBefore(context, chain, 0)
        return server.NOT_DONE_YET

    def _plainError(self, request: Any, code: int, message: str) -> bytes:
        body = EarlyResponse.error(code, message).encode()
        request.setResponseCode(code)
        request.responseHeaders.setRawHeaders(b"content-type", [b"application/json"])
        request.responseHeaders.setRawHeaders(b"content-length", [b"%d" % (len(body),)])
        return body

    # -- the filter chain -----------------------------------------------------

    def _runBefore(self, context: RequestContext, chain: Sequence[Any], start: int) -> None:
        for i in range(start, len(chain)):
            try:
                result = chain[i].before(context)
            except Exception:
                log.failure("filter {name} failed in before()", name=chain[i].name)
                self._answer(context, chain[:i], _internalError())
                return
            if result is None:
                continue
            if isinstance(result, defer.Deferred):
                context.attributes["gateway.waitingOn"] = chain[i].name
                result.addCallbacks(
                    self._beforeResumed,
                    self._beforeFailed,
                    callbackArgs=(context, chain, i),
                    errbackArgs=(context, chain, i),
                )
                return
            context.attributes["gateway.outcome"] = "reject:" + chain[i].name
            self._answer(context, chain[:i], result)
            return
        try:
            self._dispatch(context, chain)
        except Exception:
            self._bug(Failure(), context)

    def _beforeResumed(self, result: Any, context: RequestContext, chain: Any, i: int) -> None:
        if context.request._disconnected:
            return
        if result is None:
            self._runBefore(context, chain, i + 1)
        else:
            context.attributes["gateway.outcome"] = "reject:" + chain[i].name
            self._answer(context, chain[:i], result)

    def _beforeFailed(self, failure: Failure, context: RequestContext, chain: Any, i: int) -> None:
        log.failure("filter {name} failed in before()", failure, name=chain[i].name)
        if not context.request._disconnected:
            self._answer(context, chain[:i], _internalError())

    def _runAfter(self, context: RequestContext, chain: Sequence[Any], info: ResponseInfo) -> None:
        for f in reversed(chain):
            try:
                f.after(context, info)
            except Exception:
                log.failure("filter {name} failed in after()", name=f.name)
        context.status = info.code
        if self._stats is not None:
            self._stats.record(context, info.code, context.attributes.get("gateway.outcome"))

    def _runError(self, context: RequestContext, chain: Sequence[Any], failure: Failure) -> None:
        for f in reversed(chain):
            try:
                f.error(context, failure)
            except Exception:
                log.failure("filter {name} failed in error()", name=f.name)

    def _answer(self, context: RequestContext, chain: Sequence[Any], answer: EarlyResponse) -> None:
        """
        Send an answer the gateway made itself, through the C{after} hooks.
        """
        request = context.request
        body = answer.encode()
        headers = request.responseHeaders
        headers.setRawHeaders(b"content-type", [b"application/json"])
        for name, values in answer.headers.items():
            headers.setRawHeaders(name, list(values))
        headers.setRawHeaders(b"content-length", [b"%d" % (len(body),)])
        info = ResponseInfo(answer.code, headers)
        self._runAfter(context, chain, info)
        request.setResponseCode(info.code)
        request.write(body)
        request.finish()

    # -- dispatch ---------------------------------------------------------------

    def _dispatch(self, context: RequestContext, chain: Sequence[Any]) -> None:
        api = context.api
        if api.routings and context.cluster is None:
            for rule in api.routings:
                if rule.selects(context):
                    target = context.snapshot.clusters[rule.routing.cluster]
                    if rule.routing.strategy == "mirror":
                        if self._mirror is not None:
                            self._mirror.send(context, target)
                    elif context.cluster is None:
                        context.cluster = target
                        context.attributes["gateway.routing"] = rule.routing.name
        if api.aggregate:
            if self._aggregator is None:
                self._answer(context, chain, EarlyResponse.error(501, "aggregation is not enabled"))
            else:
                self._aggregator.serve(context, chain, self)
            return
        node = api.nodes[0]
        cluster = context.cluster or context.snapshot.clusters[node.clusterName]
        context.cluster = cluster
        request = context.request
        uri = context.upstreamURI
        if uri is None:
            uri = node.rewrite.expand(context.params, request) if node.rewrite else request.uri
            context.upstreamURI = uri
        self._retryBudget.requestSent()
        self._send(context, chain, node, cluster.choose(context.clientIP), ())

    def _send(
        self, context: RequestContext, chain: Sequence[Any], node: Any, backend: Any, tried: tuple
    ) -> None:
        backend = startRequest(context.cluster, backend, tried)
        if backend is None:
            self._failed(Failure(noBackendError(context.cluster)), context, chain)
            return
        context.backend = backend
        request = context.request
        context.attributes["gateway.sentAt"] = self._reactor.seconds()
        tried = tried + (backend,)
        pending = self._sendUpstream(
            backend,
            request.method,
            context.upstreamURI,
            context.upstreamHeaders,
            bodyProducerFor(request),
            node.timeout,
            self._gotResponseSafely,
            self._upstreamFailedSafely,
            context,
            chain,
            node,
            tried,
        )
        if pending is not None:
            # (None when it failed at once: that was handled, and a retry
            # may be pending in its place.)
            context.attributes["gateway.pending"] = pending

    def _gotResponseSafely(
        self, response: Any, context: RequestContext, chain: Sequence[Any], node: Any, tried: tuple
    ) -> None:
        try:
            self._gotResponse(response, context, chain)
        except Exception:
            self._bug(Failure(), context)

    def _upstreamFailedSafely(
        self, failure: Failure, context: RequestContext, chain: Any, node: Any, tried: tuple
    ) -> None:
        try:
            self._upstreamFailed(failure, context, chain, node, tried)
        except Exception:
            self._bug(Failure(), context)

    def _bug(self, failure: Failure, context: RequestContext) -> None:
        """
        Last resort: a bug in the request path must not leave the client
        waiting forever.
        """
        log.failure("internal error while proxying", failure)
        request = context.request
        if request._disconnected or request.finished:
            return
        if request.startedWriting:
            request.channel.transport.abortConnection()
            return
        body = _internalError().encode()
        request.setResponseCode(500)
        request.responseHeaders.setRawHeaders(b"content-type", [b"application/json"])
        request.responseHeaders.setRawHeaders(b"content-length", [b"%d" % (len(body),)])
        request.write(body)
        request.finish()

    def _gotResponse(self, response: Any, context: RequestContext, chain: Sequence[Any]) -> None:
        attributes = context.attributes
        attributes.pop("gateway.pending", None)
        context.upstreamLatency = self._reactor.seconds() - attributes["gateway.sentAt"]
        backend: Any = context.backend
        attributes["gateway.ok"] = not backend.isFailureStatus(response.code)
        request = context.request
        if request._disconnected:
            response.deliverBody(_Discard())
            self._upstreamDone(context, None)
            return
        copyResponseHeaders(response.headers, request.responseHeaders)
        info = ResponseInfo(response.code, request.responseHeaders)
        self._runAfter(context, chain, info)
        if info.code == response.code:
            request.setResponseCode(response.code, response.phrase)
        else:
            request.setResponseCode(info.code)
        if request.method == b"HEAD" or response.code in (204, 304):
            response.deliverBody(_Discard())
            self._upstreamDone(context)
            request.finish()
            return
        body = getattr(response, "body", None)
        if body is not None:
            # The whole body came with the head (L{HTTP11UpstreamClient}
            # says so of small answers): nothing to stream.
            self._upstreamDone(context)
            if body:
                request.write(body)
            request.finish()
            return
        length = getattr(response, "length", UNKNOWN_LENGTH)
        stream = not isinstance(length, int) or length > _SMALL_RESPONSE
        response.deliverBody(_StreamBody(self, context, stream))

    def _upstreamDone(self, context: RequestContext, ok: Optional[bool] = True) -> None:
        """
        The upstream exchange is over: account for it on the backend.

        @param ok: L{False} when the body broke, L{None} when the client
            left (the server is not to blame), else L{True}; a failure status
            (see L{gateway.balancing.backend.Backend.isFailureStatus}) still counts.
        """
        backend = context.backend
        if backend is not None:
            if ok:
                ok = context.attributes.get("gateway.ok", True)
            backend.requestFinished(context.upstreamLatency, ok)

    def _upstreamFailed(
        self, failure: Failure, context: RequestContext, chain: Any, node: Any, tried: tuple
    ) -> None:
        context.attributes.pop("gateway.pending", None)
        request = context.request
        backend: Any = context.backend
        if failure.check(defer.CancelledError) and request._disconnected:
            # The client left: not the server's fault, so not judged.
            backend.requestFinished(None, None)
            return
        backend.requestFinished(None, False)
        if (
            failure.check(UpstreamConnectError, UpstreamBroken)
            and len(tried) <= node.retries
            and request.method in IDEMPOTENT_METHODS
            and not request._disconnected
        ):
            retryWith = nextBackend(context.cluster, context.clientIP, tried)
            if retryWith is not None and self._retryBudget.tryRetry():
                log.info(
                    "retrying {method} {uri} on {next} after {failed}: {error}",
                    method=request.method,
                    uri=context.upstreamURI,
                    next=retryWith.name,
                    failed=backend.name,
                    error=failure.getErrorMessage(),
                )
                context.attributes["gateway.retries"] = len(tried)
                self._send(context, chain, node, retryWith, tried)
                return
        self._failed(failure, context, chain)

    def _failed(self, failure: Failure, context: RequestContext, chain: Any) -> None:
        """
        Answer an upstream failure: C{error} hooks, then a JSON error through
        the C{after} hooks.
        """
        self._runError(context, chain, failure)
        if context.request._disconnected:
            return
        error: Any = failure.value
        context.attributes["gateway.outcome"] = outcomeOf(error)
        headers: Dict[Any, Any] = {}
        if isinstance(error, UpstreamError):
            code, message = error.status, error.reason
            if error.retryAfter is not None:
                headers[b"retry-after"] = [b"%d" % (max(1, math.ceil(error.retryAfter)),)]
        else:
            log.failure("unexpected upstream failure", failure)
            code, message = 502, "upstream error"
        extra = {"api": context.api.name}
        if context.backend is not None:
            extra["server"] = context.backend.name
        self._answer(context, chain, EarlyResponse.error(code, message, headers, **extra))

    def _requestOver(self, reason: Optional[Failure], context: RequestContext) -> None:
        """
        The request is over (see L{gateway.http.request.GatewayRequest.notifyDone}):
        finished (C{reason} is L{None}) or cut off by the client.
        """
        if reason is not None:
            self._clientGone(reason, context)
        self._requestEnded(None, context.request)

    def _requestEnded(self, _: Any, request: Any) -> None:
        self.inFlight -= 1
        if self._draining:
            # Tell keep-alive clients to go elsewhere: close the connection
            # once this answer is out.  (The request has let go of its
            # channel by now; its transport is the connection's.)
            transport = getattr(request, "transport", None)
            if transport is not None:
                transport.loseConnection()
            if self.inFlight == 0:
                waiting, self._drained = self._drained, []
                for d in waiting:
                    d.callback(None)

    def drain(self, timeout: float) -> defer.Deferred:
        """
        Stop keeping connections alive and wait for the requests in flight.

        @param timeout: seconds to wait at most.
        @return: a Deferred that fires with the number of requests still in
            flight when it gave up (0 when all finished).
        """
        self._draining = True
        if self.inFlight == 0:
            return defer.succeed(0)
        d: defer.Deferred = defer.Deferred()
        self._drained.append(d)
        d.addTimeout(timeout, self._reactor, onTimeoutCancel=lambda result, t: self.inFlight)
        return d.addCallback(lambda _: self.inFlight)

    def _clientGone(self, failure: Failure, context: RequestContext) -> None:
        """
        The client went away: stop whatever is still running for it.
        """
        pending = context.attributes.pop("gateway.pending", None)
        if pending is not None:
            pending.cancel()
        transport = context.attributes.pop("gateway.bodyTransport", None)
        if transport is not None:
            transport.stopProducing()
        canceller = context.attributes.pop("gateway.cancel", None)
        if canceller is not None:
            canceller()


_OUTCOMES = (
    (UpstreamTimeout, "timeout"),
    (UpstreamConnectError, "refused"),
    (ServersRateLimited, "reject:server-limit"),
    (NoBackendAvailable, "unavailable"),
)


def outcomeOf(error: BaseException) -> str:
    """
    @return: the outcome of a request that failed with C{error}, as
        recorded in stats: C{timeout}, C{refused}, C{reject:server-limit},
        C{unavailable} or C{broken}.
    """
    for kind, outcome in _OUTCOMES:
        if isinstance(error, kind):
            return outcome
    return "broken"


def nextBackend(cluster: Any, key: Optional[str], tried: tuple) -> Any:
    """
    @return: a backend to retry on that was not tried yet, or L{None}.
    """
    pick = cluster.choose(key)
    if pick is not None and pick not in tried:
        return pick
    for backend in cluster.backends:
        if backend not in tried and backend.available():
            return backend
    return None


def noBackendError(cluster: Any) -> UpstreamError:
    """
    @return: why a cluster has no backend to offer, as the error to answer:
        429 when servers are only held back by their C{maxQPS}, else 503.
    """
    reasons = [b.unavailableReason() for b in cluster.backends]
    if (
        reasons
        and "rate-limited" in reasons
        and all(r in ("rate-limited", "drained") for r in reasons)
    ):
        limited = [b.limiter for b in cluster.backends if b.limiter is not None]
        wait = min(limiter.retryAfter() for limiter in limited) if limited else 1.0
        return ServersRateLimited(f"cluster {cluster.name!r}: servers at maxQPS", wait)
    if "circuit-open" in reasons:
        error = NoBackendAvailable(f"cluster {cluster.name!r}: circuit open")
        error.reason = "circuit open: no server is admitting traffic"
        return error
    return NoBackendAvailable(f"cluster {cluster.name!r} has no healthy server")


def _internalError() -> EarlyResponse:
    return EarlyResponse.error(500, "internal error")
