"""
The proxy: a C{twisted.web} resource that serves every request from the
current snapshot.

For each request: match an API in the snapshot (404 if none; a CORS
preflight matches the API of the method it asks about), run the filters'
C{before} hooks (global ones, then the API's own; any may answer early),
answer an API's mock response, or apply routing rules (split to another
cluster, mirror a copy), let the cluster's balancer pick a backend, and
stream the request to it over a pooled connection and its answer back to
the client with backpressure.  Every answer, proxied or made by the
gateway, passes the C{after} hooks of the filters that ran, in reverse
order; an upstream failure first passes their C{error} hooks.  Besides
mocks (and a filter's early answers), gateway-made answers are JSON
errors: 404 (no API), 502 (refused, broken), 503 (no healthy server, not
ready), 504 (timeout).

A WebSocket handshake to an API with C{websocket} goes the same way,
through the upgrading client; its C{101} then turns both connections into
a tunnel (L{gateway.pipeline.websocket}).
"""

from __future__ import annotations

import math
from random import Random
from typing import Any, Dict, List, Optional, Sequence, Tuple

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.iweb import UNKNOWN_LENGTH
from twisted.web.resource import Resource

from gateway.balancing.backend import startRequest
from gateway.cache.engine import ResponseCache
from gateway.http.body import CLEAN_ENDS
from gateway.http.bodystream import RequestBodyError
from gateway.http.errors import UpstreamBroken, UpstreamConnectError, UpstreamError
from gateway.http.headers import headerKey, rawHeadersOf
from gateway.interfaces import IFilter, IUpstreamClient
from gateway.pipeline.aggregate import Aggregator
from gateway.pipeline.errors import (
    CircuitOpen,
    NoBackendAvailable,
    ServersRateLimited,
    outcomeOf,
)
from gateway.pipeline.exchange import EarlyResponse, Exchange, ResponseInfo
from gateway.pipeline.forwarding import _HOST, VIA, ClientAddresses, copyResponseHeaders
from gateway.pipeline.https import HTTPSRedirect
from gateway.pipeline.mirror import Mirror
from gateway.pipeline.retry import RetryBudget
from gateway.pipeline.websocket import BadSwitch, WebSockets, checkSwitch, switchedHeaders
from gateway.routing.rules import JSON_BODY_LIMIT, decideRoutings
from gateway.telemetry.tracing import ITracer

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

    def __init__(self, proxy: GatewayResource, exchange: Exchange, stream: bool) -> None:
        self._proxy = proxy
        self._exchange = exchange
        self._request = exchange.request
        self._stream = stream

    def connectionMade(self) -> None:
        self._exchange.bodyTransport = self.transport
        if self._stream:
            self._request.registerProducer(self.transport, True)

    def dataReceived(self, data: bytes) -> None:
        self._request.write(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        request = self._request
        exchange = self._exchange
        exchange.bodyTransport = None
        if exchange.gone:
            # (A request whose client left has let go of its channel, and
            # with it of the producer.)
            self._proxy._upstreamDone(exchange, None)
            return
        if self._stream:
            request.unregisterProducer()
        clean = isinstance(reason.value, CLEAN_ENDS)
        self._proxy._upstreamDone(exchange, clean)
        if clean:
            request.finish()
        else:
            # The body broke half-way: the status is already sent, so the
            # only honest thing left is to cut the client's connection, so
            # that it sees a truncated answer rather than a complete one.
            log.warn(
                "upstream {backend} broke mid-body: {reason}",
                backend=exchange.backend.name if exchange.backend else None,
                reason=_why(reason),
            )
            request.channel.transport.abortConnection()


class _CachingStreamBody(_StreamBody):
    """
    Streams an upstream response body to the client, and tees it into
    the cache's entry (L{gateway.cache.engine.Ticket.bodyComplete}), up to
    the API's C{maxBodySize}: past that the body is not stored, and still
    streams on.  The client's answer is never held back for the copy.
    """

    def __init__(self, proxy: GatewayResource, exchange: Exchange, stream: bool) -> None:
        super().__init__(proxy, exchange, stream)
        ticket: Any = exchange.cache
        self._ticket = ticket
        self._parts: Optional[List[bytes]] = []
        self._size = 0
        self._limit = ticket.policy.maxBodySize

    def dataReceived(self, data: bytes) -> None:
        self._request.write(data)
        parts = self._parts
        if parts is not None:
            self._size += len(data)
            if self._size > self._limit:
                self._parts = None
                self._ticket.bodyAbandoned("too-large")
            else:
                parts.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        parts, self._parts = self._parts, None
        if parts is not None:
            if isinstance(reason.value, CLEAN_ENDS) and not self._exchange.gone:
                self._ticket.bodyComplete(b"".join(parts))
            else:
                self._ticket.bodyAbandoned("broken")
        super().connectionLost(reason)


class _Discard(Protocol):
    def connectionLost(self, reason: Failure = connectionDone) -> None:
        pass


#: A filter chain: the filters whose C{before} ran, in order.
Chain = Sequence[IFilter]


class GatewayResource(Resource):
    """
    The proxy's root resource: every path is served from the snapshot.

    @param manager: the L{gateway.routing.snapshot.SnapshotManager} that
        holds the current snapshot.
    @param client: the L{IUpstreamClient}.
    @param reactor: the L{IReactorTime} requests are timed with.
    @param clientAddresses: a L{ClientAddresses}.
    @param aggregator: serves APIs with several nodes (an
        L{gateway.pipeline.aggregate.Aggregator}), or L{None}.
    @param mirror: sends mirror copies (a L{gateway.pipeline.mirror.Mirror}),
        or L{None}.
    @param retryBudget: the L{RetryBudget} retries are taken from.
    @param random: where retries' jitter comes from.
    @param stats: told of every answer once, as C{stats.record(exchange,
        code, outcome)} (see L{Exchange.outcome}).
    @param httpsPort: the port the redirects of C{httpsOnly} APIs name
        (see L{gateway.pipeline.https.httpsPort}), or L{None} for 443.
    @param tracer: the L{gateway.telemetry.tracing.ITracer} told of every
        request, or L{None} when nothing is traced.
    @param websockets: relays the WebSocket handshakes of APIs with
        C{websocket} and keeps their tunnels (a
        L{gateway.pipeline.websocket.WebSockets}), or L{None}: upgrade
        headers are then always stripped.
    @param accessLog: told of every request once it is over, as
        C{accessLog.log(exchange)} (a
        L{gateway.telemetry.accesslog.IAccessLog}), or L{None}.
    @param cache: the L{gateway.cache.engine.ResponseCache} of the APIs
        that have a C{cache}, or L{None} (they are then not cached).
    """

    isLeaf = True

    def __init__(
        self,
        manager: Any,
        client: IUpstreamClient,
        reactor: IReactorTime,
        clientAddresses: Optional[ClientAddresses] = None,
        aggregator: Optional[Aggregator] = None,
        mirror: Optional[Mirror] = None,
        retryBudget: Optional[RetryBudget] = None,
        stats: Any = None,
        random: Optional[Random] = None,
        httpsPort: Optional[int] = None,
        tracer: Optional[ITracer] = None,
        websockets: Optional[WebSockets] = None,
        accessLog: Any = None,
        cache: Optional[ResponseCache] = None,
    ) -> None:
        super().__init__()
        self._manager = manager
        self._httpsRedirect: Tuple[IFilter, ...] = (HTTPSRedirect(httpsPort),)
        self._client = client
        self._reactor = reactor
        self._clients = clientAddresses or ClientAddresses()
        self._aggregator = aggregator
        self._mirror = mirror
        self._retryBudget = retryBudget or RetryBudget(reactor)
        self._stats = stats
        self._random = random or Random()
        self._tracer = tracer
        self._websockets = websockets
        self._accessLog = accessLog
        self._cache = cache
        #: Requests being served now.
        self.inFlight = 0
        self._draining = False
        self._drained: List[defer.Deferred[int]] = []

    # -- entry ------------------------------------------------------------------

    def render(self, request: Any) -> Any:
        snapshot = self._manager.snapshot
        incoming = request.requestHeaders
        raw = rawHeadersOf(incoming)
        host = raw.get(_HOST) if raw is not None else incoming.getRawHeaders(b"host")
        if snapshot is None:
            # No configuration yet: the global filters still see the answer.
            match = None
            chain: Chain = self._manager.globalFilters
        else:
            method = request.method
            match = None
            if method == b"OPTIONS":
                match = _matchPreflight(snapshot, incoming, raw, host, request.path)
            if match is None:
                match = snapshot.match(
                    _METHODS.get(method) or method.decode("ascii", "replace"),
                    host[0].decode("latin-1") if host else None,
                    request.path.decode("utf-8", "surrogateescape"),
                )
            chain = snapshot.filters
        clientIP, headers = self._clients.forward(request, host, request.getClientAddress())
        exchange = Exchange(
            request,
            snapshot,
            match.value if match is not None else None,
            match.params if match is not None else {},
            clientIP,
            self._reactor.seconds(),
            headers,
        )
        if match is not None:
            api = match.value
            if api.httpsOnly and not request.isSecure():
                # Its own filters run on the HTTPS request that follows.
                chain = tuple(chain) + self._httpsRedirect
            else:
                if api.filters:
                    chain = chain + api.filters
                if api.config.websocket and self._websockets is not None:
                    self._websockets.handshake(exchange)
        self.inFlight += 1
        # Tracing (issue 19): this one check is all it costs when it is off.
        if self._tracer is not None:
            self._tracer.requestStarted(exchange)
        notifyDone = getattr(request, "notifyDone", None)
        if notifyDone is not None:
            notifyDone(self._requestOver, exchange)
        else:
            request.notifyFinish().addErrback(self._clientGone, exchange).addBoth(
                self._requestEnded, request, exchange
            ).addBoth(self._closeTicket, exchange)
        self._runBefore(exchange, chain, 0)
        return server.NOT_DONE_YET

    # -- the filter chain -----------------------------------------------------

    def _runBefore(self, exchange: Exchange, chain: Chain, start: int) -> None:
        for i in range(start, len(chain)):
            try:
                result = chain[i].before(exchange)
            except Exception:
                log.failure("filter {name} failed in before()", name=chain[i].name)
                self._answer(exchange, chain[:i], _internalError())
                return
            if result is None:
                continue
            if isinstance(result, defer.Deferred):
                exchange.waiting = result
                result.addCallbacks(
                    self._beforeResumed,
                    self._beforeFailed,
                    callbackArgs=(exchange, chain, i),
                    errbackArgs=(exchange, chain, i),
                )
                return
            if exchange.outcome is None and result.code >= 400:
                # (An early success, such as a CORS preflight's 204, is no
                # reject; a filter whose early answer is no rejection may
                # also say so itself.)
                exchange.outcome = "reject:" + chain[i].name
            self._answer(exchange, chain[:i], result)
            return
        try:
            self._dispatch(exchange, chain)
        except Exception:
            self._bug(Failure(), exchange)

    def _beforeResumed(
        self, result: Optional[EarlyResponse], exchange: Exchange, chain: Chain, i: int
    ) -> None:
        exchange.waiting = None
        if exchange.gone:
            return
        if result is None:
            self._runBefore(exchange, chain, i + 1)
        else:
            if exchange.outcome is None and result.code >= 400:
                exchange.outcome = "reject:" + chain[i].name
            self._answer(exchange, chain[:i], result)

    def _beforeFailed(self, failure: Failure, exchange: Exchange, chain: Chain, i: int) -> None:
        exchange.waiting = None
        if exchange.gone:
            # (Cancelled because the client left.)
            return
        log.failure("filter {name} failed in before()", failure, name=chain[i].name)
        self._answer(exchange, chain[:i], _internalError())

    def _runAfter(self, exchange: Exchange, chain: Chain, info: ResponseInfo) -> None:
        ticket = exchange.cache
        if ticket is not None:
            # Cache-Status, before the filters: they may see it.
            ticket.annotate(info.headers)
        for f in reversed(chain):
            try:
                f.after(exchange, info)
            except Exception:
                log.failure("filter {name} failed in after()", name=f.name)
        exchange.status = info.code
        if self._stats is not None:
            self._stats.record(exchange, info.code, exchange.outcome)

    def _runError(self, exchange: Exchange, chain: Chain, failure: Failure) -> None:
        for f in reversed(chain):
            try:
                f.error(exchange, failure)
            except Exception:
                log.failure("filter {name} failed in error()", name=f.name)

    def _answer(self, exchange: Exchange, chain: Chain, answer: EarlyResponse) -> None:
        """
        Send an answer the gateway made itself, through the C{after} hooks.
        """
        request = exchange.request
        body = answer.encode()
        headers = request.responseHeaders
        contentType = answer.contentType
        if contentType is not None:
            headers.setRawHeaders(b"content-type", [contentType])
        for name, values in answer.headers.items():
            headers.setRawHeaders(name, list(values))
        if answer.code not in _NO_BODY_STATUSES:
            headers.setRawHeaders(b"content-length", [b"%d" % (len(body),)])
        info = ResponseInfo(answer.code, headers)
        self._runAfter(exchange, chain, info)
        request.setResponseCode(info.code)
        request.write(body)
        request.finish()

    # -- dispatch ---------------------------------------------------------------

    def _dispatch(self, exchange: Exchange, chain: Chain) -> None:
        api = exchange.api
        snapshot = exchange.snapshot
        if api is None:
            # The gateway's own answer, through the global filters.
            if snapshot is None:
                answer = EarlyResponse.error(503, "gateway is starting, no configuration yet")
            else:
                answer = EarlyResponse.error(404, "no API matches this request")
            self._answer(exchange, chain, answer)
            return
        mock = api.mock
        if mock is not None:
            # The gateway answers itself, after the filters (routings,
            # which choose where to send, do not apply).
            self._answer(
                exchange,
                chain,
                EarlyResponse(mock.code, {}, mock.headers, mock.body, mock.contentType),
            )
            return
        if api.routingReadsBody and exchange.cluster is None and not exchange.body.complete:
            # A condition on the JSON body: wait for the body (or to know
            # it is too large to look into), then decide.
            reading = exchange.waiting = exchange.body.whenRead(JSON_BODY_LIMIT)
            reading.addCallbacks(
                self._bodyArrived,
                self._waitFailed,
                callbackArgs=(exchange, chain),
                errbackArgs=(exchange, chain),
            )
            return
        self._route(exchange, chain)

    def _bodyArrived(self, body: Optional[bytes], exchange: Exchange, chain: Chain) -> None:
        exchange.waiting = None
        if exchange.gone:
            return
        try:
            self._route(exchange, chain)
        except Exception:
            self._bug(Failure(), exchange)

    def _route(self, exchange: Exchange, chain: Chain) -> None:
        """
        Apply the routings, then send the request (or fan it out).
        """
        api = exchange.api
        snapshot = exchange.snapshot
        mirrors: Sequence[Any] = ()
        if api.routings and exchange.cluster is None:
            decision = decideRoutings(api.routings, exchange)
            split = decision.split
            if split is not None:
                exchange.cluster = snapshot.clusters[split.routing.cluster]
                exchange.routing = split.routing.name
            # (A WebSocket handshake is not mirrored: a copy cannot be a tunnel.)
            if exchange.upgrade is None:
                mirrors = decision.mirrors
        if api.aggregate:
            self._sendMirrors(exchange, mirrors)
            if self._aggregator is None:
                self._answer(
                    exchange, chain, EarlyResponse.error(501, "aggregation is not enabled")
                )
                return
            d = exchange.waiting = self._aggregator.serve(exchange)
            d.addCallbacks(
                self._aggregated,
                self._waitFailed,
                callbackArgs=(exchange, chain),
                errbackArgs=(exchange, chain),
            )
            return
        node = api.nodes[0]
        cluster = exchange.cluster or snapshot.clusters[node.clusterName]
        exchange.cluster = cluster
        if exchange.upstreamURI is None:
            request = exchange.request
            exchange.upstreamURI = (
                node.rewrite.expand(exchange.params, request) if node.rewrite else request.uri
            )
        if exchange.upgrade is not None:
            refused = self._websockets.admit(exchange)  # type: ignore[union-attr]
            if refused is not None:
                exchange.outcome = "reject:max-websockets"
                self._answer(exchange, chain, refused)
                return
        policy = api.cache
        if policy is not None and self._cache is not None and exchange.upgrade is None:
            self._consultCache(exchange, chain, node, mirrors, policy)
            return
        self._forward(exchange, chain, node, mirrors)

    def _sendMirrors(self, exchange: Exchange, mirrors: Sequence[Any]) -> None:
        if mirrors and self._mirror is not None:
            clusters = exchange.snapshot.clusters
            for mirrored in mirrors:
                self._mirror.send(exchange, clusters[mirrored.routing.cluster])

    def _forward(self, exchange: Exchange, chain: Chain, node: Any, mirrors: Sequence[Any]) -> None:
        """
        Send the request upstream (and its mirror copies).
        """
        self._sendMirrors(exchange, mirrors)
        ticket = exchange.cache
        if ticket is not None:
            ticket.forwarding(exchange.upstreamHeaders)
        self._retryBudget.requestSent()
        cluster: Any = exchange.cluster
        self._send(exchange, chain, node, cluster.choose(exchange.clientIP), ())

    # -- the response cache -------------------------------------------------------

    def _consultCache(
        self, exchange: Exchange, chain: Chain, node: Any, mirrors: Sequence[Any], policy: Any
    ) -> None:
        """
        Ask the cache: answer from it, or forward (see
        L{gateway.cache.engine}).
        """
        cache: Any = self._cache
        ticket = exchange.cache = cache.begin(exchange, policy)
        waiting = ticket.decide()
        if waiting is None:
            self._cacheDecided(exchange, chain, node, mirrors)
            return
        exchange.waiting = waiting
        waiting.addCallbacks(
            self._cacheDecidedLater,
            self._cacheFailed,
            callbackArgs=(exchange, chain, node, mirrors),
            errbackArgs=(exchange,),
        )

    def _cacheDecidedLater(
        self, _: Any, exchange: Exchange, chain: Chain, node: Any, mirrors: Sequence[Any]
    ) -> None:
        exchange.waiting = None
        if exchange.gone:
            return
        try:
            self._cacheDecided(exchange, chain, node, mirrors)
        except Exception:
            self._bug(Failure(), exchange)

    def _cacheFailed(self, failure: Failure, exchange: Exchange) -> None:
        exchange.waiting = None
        if not exchange.gone:
            self._bug(failure, exchange)

    def _cacheDecided(
        self, exchange: Exchange, chain: Chain, node: Any, mirrors: Sequence[Any]
    ) -> None:
        ticket: Any = exchange.cache
        entry = ticket.serve
        if entry is not None:
            self._answerEntry(exchange, chain, entry)
            return
        self._forward(exchange, chain, node, mirrors)

    def _answerEntry(self, exchange: Exchange, chain: Chain, entry: Any) -> None:
        """
        Answer from a cache entry, through the C{after} hooks.
        """
        request = exchange.request
        ticket: Any = exchange.cache
        code, phrase, body = ticket.compose(entry, request.responseHeaders, VIA)
        info = ResponseInfo(code, request.responseHeaders)
        self._runAfter(exchange, chain, info)
        if info.code == code:
            request.setResponseCode(code, phrase)
        else:
            request.setResponseCode(info.code)
        if body:
            request.write(body)
        request.finish()

    def _closeTicket(self, _: Any, exchange: Exchange) -> None:
        ticket = exchange.cache
        if ticket is not None:
            ticket.close()

    def _aggregated(self, answer: EarlyResponse, exchange: Exchange, chain: Chain) -> None:
        exchange.waiting = None
        if not exchange.gone:
            self._answer(exchange, chain, answer)

    def _waitFailed(self, failure: Failure, exchange: Exchange, chain: Chain) -> None:
        exchange.waiting = None
        if not exchange.gone:
            self._failed(failure, exchange, chain)

    def _send(
        self, exchange: Exchange, chain: Chain, node: Any, backend: Any, tried: Tuple[Any, ...]
    ) -> None:
        backend = startRequest(exchange.cluster, backend, tried)
        if backend is None:
            self._failed(Failure(noBackendError(exchange.cluster)), exchange, chain)
            return
        exchange.backend = backend
        exchange.sentAt = self._reactor.seconds()
        tried = tried + (backend,)
        # (A WebSocket handshake goes through the upgrading client.)
        client: Any = self._client if exchange.upgrade is None else self._websockets
        sent = client.send(
            backend,
            exchange.request.method,
            exchange.upstreamURI,
            exchange.upstreamHeaders,
            exchange.body.producer(),
            node.timeout,
            self._gotResponseSafely,
            self._upstreamFailedSafely,
            exchange,
            chain,
            node,
            tried,
        )
        if not sent.finished:
            # (When it failed at once, that was handled, and a retry may be
            # pending in its place.)
            exchange.pending = sent

    def _gotResponseSafely(
        self, response: Any, exchange: Exchange, chain: Chain, node: Any, tried: Tuple[Any, ...]
    ) -> None:
        try:
            if node.retryOn and response.code in node.retryOn:
                if self._retryAnswer(response, exchange, chain, node, tried):
                    return
            self._gotResponse(response, exchange, chain)
        except Exception:
            self._bug(Failure(), exchange)

    def _upstreamFailedSafely(
        self, failure: Failure, exchange: Exchange, chain: Chain, node: Any, tried: Tuple[Any, ...]
    ) -> None:
        try:
            self._upstreamFailed(failure, exchange, chain, node, tried)
        except Exception:
            self._bug(Failure(), exchange)

    def _bug(self, failure: Failure, exchange: Exchange) -> None:
        """
        Last resort: a bug in the request path must not leave the client
        waiting forever.
        """
        log.failure("internal error while proxying", failure)
        request = exchange.request
        if exchange.gone or request.finished:
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

    def _gotResponse(self, response: Any, exchange: Exchange, chain: Chain) -> None:
        exchange.pending = None
        exchange.upstreamLatency = self._reactor.seconds() - exchange.sentAt
        backend: Any = exchange.backend
        exchange.upstreamOK = not backend.isFailureStatus(response.code)
        request = exchange.request
        if exchange.gone:
            response.deliverBody(_Discard())
            self._upstreamDone(exchange, None)
            return
        if response.code == 101:
            # (Only a WebSocket handshake's: the client refuses any other.)
            self._switched(response, exchange, chain)
            return
        ticket = exchange.cache
        if ticket is not None:
            refreshed = ticket.response(response)
            if refreshed is not None:
                # A 304 refreshed the stale entry: it answers.
                response.deliverBody(_Discard())
                self._upstreamDone(exchange)
                self._answerEntry(exchange, chain, refreshed)
                return
        copyResponseHeaders(response.headers, request.responseHeaders)
        info = ResponseInfo(response.code, request.responseHeaders)
        self._runAfter(exchange, chain, info)
        if info.code == response.code:
            request.setResponseCode(response.code, response.phrase)
        else:
            request.setResponseCode(info.code)
        if request.method == b"HEAD" or response.code in (204, 304):
            if response.code == 204:
                # RFC 9110 8.6: never in a 204 (a 304's, and a HEAD's, is the
                # length a GET's answer would have, and is kept).  A client
                # that believed it would wait for a body that never comes.
                request.responseHeaders.removeHeader(b"content-length")
            response.deliverBody(_Discard())
            self._upstreamDone(exchange)
            if ticket is not None and ticket.storing:
                ticket.bodyComplete(b"")
            request.finish()
            return
        body = getattr(response, "body", None)
        if body is not None:
            # The whole body came with the head (L{HTTP11UpstreamClient}
            # says so of small answers): nothing to stream.
            self._upstreamDone(exchange)
            if ticket is not None and ticket.storing:
                ticket.bodyComplete(body)
            if body:
                request.write(body)
            request.finish()
            return
        length = getattr(response, "length", UNKNOWN_LENGTH)
        stream = not isinstance(length, int) or length > _SMALL_RESPONSE
        if ticket is not None and ticket.storing:
            response.deliverBody(_CachingStreamBody(self, exchange, stream))
        else:
            response.deliverBody(_StreamBody(self, exchange, stream))

    def _switched(self, response: Any, exchange: Exchange, chain: Chain) -> None:
        """
        The backend switched a WebSocket handshake: check its 101, let the
        C{after} hooks see it, answer it, and open the tunnel.
        """
        request = exchange.request
        problem = checkSwitch(request, response)
        if problem is not None:
            response.deliverBody(_Discard())
            exchange.upstreamOK = False
            self._upstreamDone(exchange)
            self._failed(Failure(BadSwitch(problem)), exchange, chain)
            return
        headers = request.responseHeaders
        copyResponseHeaders(response.headers, headers)
        switchedHeaders(headers)
        info = ResponseInfo(101, headers)
        self._runAfter(exchange, chain, info)
        self._upstreamDone(exchange)
        if info.code != 101:
            # A filter answered otherwise: the backend's connection is dropped.
            response.deliverBody(_Discard())
            for name in (b"upgrade", b"connection", b"sec-websocket-accept"):
                headers.removeHeader(name)
            headers.setRawHeaders(b"content-length", [b"0"])
            request.setResponseCode(info.code)
            request.finish()
            return
        request.setResponseCode(101, response.phrase)
        self._websockets.switch(exchange, response)  # type: ignore[union-attr]

    def _retryAnswer(
        self,
        response: Any,
        exchange: Exchange,
        chain: Chain,
        node: Any,
        tried: Tuple[Any, ...],
    ) -> bool:
        """
        An answer whose status is in the node's C{retryOn}: send the request
        to another server, after a short jittered back-off, when it may be
        (see L{_mayRetry}); the answer is then dropped.

        @return: whether it is retried.
        """
        if not self._mayRetry(exchange, node, tried):
            return False
        retryWith = nextBackend(exchange.cluster, exchange.clientIP, tried)
        if retryWith is None or not self._retryBudget.tryRetry():
            return False
        exchange.pending = None
        backend: Any = exchange.backend
        backend.requestFinished(
            self._reactor.seconds() - exchange.sentAt,
            not backend.isFailureStatus(response.code),
            exchange.sentAt,
        )
        response.deliverBody(_Discard())
        delay = retryDelay(len(tried), self._random)
        log.info(
            "retrying {method} {uri} on {next} in {delay:.3f}s after {failed} answered {code}",
            method=exchange.request.method,
            uri=exchange.upstreamURI,
            next=retryWith.name,
            failed=backend.name,
            code=response.code,
            delay=delay,
        )
        exchange.retries = len(tried)
        # Cancelled (as a pending request is) when the client leaves.
        exchange.pending = self._reactor.callLater(
            delay, self._resend, exchange, chain, node, retryWith, tried
        )
        return True

    def _resend(
        self, exchange: Exchange, chain: Chain, node: Any, backend: Any, tried: Tuple[Any, ...]
    ) -> None:
        exchange.pending = None
        try:
            self._send(exchange, chain, node, backend, tried)
        except Exception:
            self._bug(Failure(), exchange)

    def _mayRetry(self, exchange: Exchange, node: Any, tried: Tuple[Any, ...]) -> bool:
        """
        @return: whether a request may be sent again: an idempotent method,
            retries left, its client still there, its body still whole.
        """
        return (
            len(tried) <= node.retries
            and exchange.request.method in IDEMPOTENT_METHODS
            and not exchange.gone
            and exchange.body.replayable
        )

    def _upstreamDone(self, exchange: Exchange, ok: Optional[bool] = True) -> None:
        """
        The upstream exchange is over: account for it on the backend.

        @param ok: L{False} when the body broke, L{None} when the client
            left (the server is not to blame), else L{True}; a failure status
            (see L{gateway.balancing.backend.Backend.isFailureStatus}) still
            counts.
        """
        backend = exchange.backend
        if backend is not None:
            if ok:
                ok = exchange.upstreamOK
            backend.requestFinished(exchange.upstreamLatency, ok, exchange.sentAt)

    def _upstreamFailed(
        self,
        failure: Failure,
        exchange: Exchange,
        chain: Chain,
        node: Any,
        tried: Tuple[Any, ...],
    ) -> None:
        exchange.pending = None
        request = exchange.request
        backend: Any = exchange.backend
        if exchange.gone and failure.check(defer.CancelledError):
            # The client left: not the server's fault, so not judged.
            backend.requestFinished(None, None, exchange.sentAt)
            return
        if failure.check(RequestBodyError):
            # The client's body failed (too slow, too large): not the
            # server's fault either; answered with the body's status.
            backend.requestFinished(None, None, exchange.sentAt)
            self._failed(failure, exchange, chain)
            return
        backend.requestFinished(None, False, exchange.sentAt)
        if failure.check(UpstreamConnectError, UpstreamBroken) and self._mayRetry(
            exchange, node, tried
        ):
            retryWith = nextBackend(exchange.cluster, exchange.clientIP, tried)
            if retryWith is not None and self._retryBudget.tryRetry():
                log.info(
                    "retrying {method} {uri} on {next} after {failed}: {error}",
                    method=request.method,
                    uri=exchange.upstreamURI,
                    next=retryWith.name,
                    failed=backend.name,
                    error=failure.getErrorMessage(),
                )
                exchange.retries = len(tried)
                self._send(exchange, chain, node, retryWith, tried)
                return
        self._failed(failure, exchange, chain)

    def _failed(self, failure: Failure, exchange: Exchange, chain: Chain) -> None:
        """
        Answer an upstream failure: C{error} hooks, then a JSON error through
        the C{after} hooks.
        """
        exchange.error = failure.getErrorMessage()
        self._runError(exchange, chain, failure)
        if exchange.gone:
            return
        error: Any = failure.value
        exchange.outcome = outcomeOf(error)
        headers: Dict[Any, Any] = {}
        if isinstance(error, UpstreamError):
            code, message = error.status, error.reason
            if error.retryAfter is not None:
                headers[b"retry-after"] = [b"%d" % (max(1, math.ceil(error.retryAfter)),)]
        else:
            log.failure("unexpected upstream failure", failure)
            code, message = 502, "upstream error"
        extra: Dict[str, Any] = {"api": exchange.api.name}
        if isinstance(error, UpstreamError):
            extra.update(error.details)
        if exchange.backend is not None:
            extra["server"] = exchange.backend.name
        self._answer(exchange, chain, EarlyResponse.error(code, message, headers, **extra))

    def _requestOver(self, reason: Optional[Failure], exchange: Exchange) -> None:
        """
        The request is over (see L{gateway.http.request.GatewayRequest.notifyDone}):
        finished (C{reason} is L{None}) or cut off by the client.
        """
        if reason is not None:
            self._clientGone(reason, exchange)
        ticket = exchange.cache
        if ticket is not None:
            ticket.close()
        if exchange.upgrade is not None and self._websockets.handshakeOver(exchange):  # type: ignore[union-attr]
            # Switched to a tunnel: its connection is the tunnel's now.
            self._requestEnded(None, None, exchange)
            return
        self._requestEnded(None, exchange.request, exchange)

    def _requestEnded(self, _: Any, request: Any, exchange: Optional[Exchange] = None) -> None:
        self.inFlight -= 1
        if exchange is not None:
            if exchange.gone and exchange.status is None and self._stats is not None:
                # The client left before its answer's head: counted all the
                # same (the access log's 499), else a backend so slow that
                # every client gives up would show no request at all.
                self._stats.record(exchange, 499, "aborted")
            if self._accessLog is not None:
                self._accessLog.log(exchange)
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
                    d.callback(0)

    def drain(self, timeout: float) -> defer.Deferred[int]:
        """
        Stop keeping connections alive and wait for the requests in flight,
        then for the WebSocket tunnels (those still open after C{timeout}
        are closed: see L{WebSockets.drain}).

        @param timeout: seconds to wait at most.
        @return: a Deferred that fires with the number of requests still in
            flight when it gave up (0 when all finished).
        """
        self._draining = True
        websockets = self._websockets
        if websockets is not None:
            websockets.drain(timeout)
        if self.inFlight == 0:
            d = defer.succeed(0)
        else:
            d = defer.Deferred()
            self._drained.append(d)
            d.addTimeout(timeout, self._reactor, onTimeoutCancel=lambda result, t: self.inFlight)
            d.addCallback(lambda _: self.inFlight)
        if websockets is None:
            return d
        # (Once the requests are over, no handshake can open a tunnel.)
        return d.addCallback(lambda left: websockets.whenDrained().addCallback(lambda _: left))

    def _clientGone(self, failure: Failure, exchange: Exchange) -> None:
        """
        The client went away: stop whatever is still running for it.
        """
        exchange.gone = True
        pending = exchange.pending
        if pending is not None:
            exchange.pending = None
            pending.cancel()
        transport = exchange.bodyTransport
        if transport is not None:
            exchange.bodyTransport = None
            transport.stopProducing()
        waiting = exchange.waiting
        if waiting is not None:
            exchange.waiting = None
            waiting.cancel()


#: The back-off before a retry of an answer: C{retryDelay}.
RETRY_BASE = 0.025
RETRY_CAP = 0.25


def _why(reason: Failure) -> str:
    """
    @return: what ended a body, in words: the first reason of a
        C{ResponseFailed} (whose own message is the list of the failures'
        reprs).
    """
    reasons = getattr(reason.value, "reasons", None)
    if reasons:
        return "; ".join(r.getErrorMessage() for r in reasons)
    return reason.getErrorMessage()


def retryDelay(attempt: int, random: Any) -> float:
    """
    @param attempt: how many times the request was sent (1 for the first
        retry).
    @return: seconds to wait before sending it again: a "full jitter"
        exponential back-off (a random delay up to C{RETRY_BASE * 2 **
        (attempt - 1)}, capped at C{RETRY_CAP}), so that the retries of
        many clients do not arrive together.
    """
    ceiling = min(RETRY_CAP, RETRY_BASE * 2 ** max(0, attempt - 1))
    return float(random.uniform(0.0, ceiling))


def nextBackend(cluster: Any, key: Optional[str], tried: Tuple[Any, ...]) -> Any:
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
        return CircuitOpen(f"cluster {cluster.name!r}: circuit open")
    return NoBackendAvailable(f"cluster {cluster.name!r} has no healthy server")


#: Statuses whose answers have no body, and no Content-Length (RFC 9110
#: 8.6, 15.3.5).
_NO_BODY_STATUSES = frozenset([204, 304])

_ORIGIN = headerKey(b"origin")
_REQUEST_METHOD = headerKey(b"access-control-request-method")


def _matchPreflight(
    snapshot: Any, incoming: Any, raw: Any, host: Optional[List[bytes]], path: bytes
) -> Any:
    """
    @return: when an C{OPTIONS} request is a CORS preflight, the match of
        the API it asks about (see
        L{gateway.routing.snapshot.Snapshot.matchPreflight}), else L{None}.
    """
    if raw is not None:
        origin = raw.get(_ORIGIN)
        requested = raw.get(_REQUEST_METHOD)
    else:
        origin = incoming.getRawHeaders(b"origin")
        requested = incoming.getRawHeaders(b"access-control-request-method")
    if not origin or not requested:
        return None
    return snapshot.matchPreflight(
        requested[0].decode("latin-1"),
        host[0].decode("latin-1") if host else None,
        path.decode("utf-8", "surrogateescape"),
    )


def _internalError() -> EarlyResponse:
    return EarlyResponse.error(500, "internal error")
