"""
Spans of the proxy's requests, made with the OpenTelemetry SDK.

  - L{Tracer}: a server span per request, from its arrival to its end,
    continuing the trace of the client's W3C C{traceparent} (and keeping
    its C{tracestate}), or starting one.  Its context goes into the
    request's upstream headers as C{traceparent}.
  - L{TracingClient}: an L{IUpstreamClient} around the real one that makes
    a client span of every request sent upstream: each attempt of a
    retried request, each node of an aggregation, each mirror copy.  It
    finds the server span through the C{traceparent} of the headers it is
    given, and sends them on with C{traceparent} naming its own span (the
    caller's headers are not changed: a retry, or the next node, sends
    them again).  The span ends when the upstream's answer head is in
    (with the small answers the upstream client reads whole, when the
    whole answer is), or when the request failed.
  - L{Tracing}: the two put together with the SDK's L{TracerProvider}, its
    sampler and resource, and L{gateway.telemetry.tracing.export} for the
    spans that end; L{TracingService} starts and stops the export.

A trace that is not sampled costs no span object: the server span is the
SDK's non-recording one, and each attempt only gets a span id of its own
in the C{traceparent} it sends (the same sampling decision, C{00} flags).

Attributes follow the OpenTelemetry semantic conventions for HTTP
(C{http.request.method}, C{url.path}, C{http.route},
C{http.response.status_code}, C{server.address}, C{error.type}, ...), and
say what the gateway did: C{gateway.api}, C{gateway.cluster},
C{gateway.server}, C{gateway.consumer} (the exchange's C{consumer}, when
authentication named one), C{gateway.routing} (a split routing that chose
the cluster) and C{gateway.outcome} (why the gateway answered itself).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from zope.interface import implementer

import gateway
from gateway.http.client import HTTP11UpstreamClient
from gateway.http.headers import headersFromRaw, rawHeadersOf
from gateway.interfaces import IUpstreamClient
from gateway.model.tracing import splitOTLP
from gateway.telemetry.tracing import ITracer
from gateway.telemetry.tracing.context import (
    SAMPLED,
    TRACEPARENT,
    TRACESTATE,
    formatTraceparent,
    parseTraceparent,
    tracestateOf,
)
from gateway.telemetry.tracing.export import OTLPHTTPExporter, ReactorSpanProcessor

log = Logger()

#: The methods of the HTTP semantic conventions; others are C{_OTHER}.
_METHODS = {
    m.encode("ascii"): m
    for m in ("CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE")
}

_HOST = b"Host"


def _nanoseconds(seconds: float) -> int:
    # Microseconds are what a float of seconds since 1970 holds exactly.
    return round(seconds * 1e6) * 1000


def _method(method: bytes, attributes: Dict[str, Any]) -> str:
    """
    @return: C{method} as a span name starts with it, and put in
        C{attributes} as the conventions say.
    """
    known = _METHODS.get(method)
    if known is None:
        attributes["http.request.method"] = "_OTHER"
        attributes["http.request.method_original"] = method.decode("latin-1")
        return "HTTP"
    attributes["http.request.method"] = known
    return known


def _serverAddress(host: str, attributes: Dict[str, Any]) -> None:
    """
    Put a C{Host} header's host and port in C{attributes}.
    """
    name, colon, port = host.rpartition(":")
    if colon and port.isdigit() and (not name.startswith("[") or name.endswith("]")):
        attributes["server.address"] = name.strip("[]")
        attributes["server.port"] = int(port)
    else:
        attributes["server.address"] = host.strip("[]")


def _consumerName(exchange: Any) -> Optional[str]:
    # The exchange's consumer slot comes with authentication; until then
    # (or when no credential named one) there is none.
    consumer = getattr(exchange, "consumer", None)
    if consumer is None:
        return None
    name = getattr(consumer, "name", consumer)
    return name if isinstance(name, str) else str(name)


def _gatewayAttributes(exchange: Any, attributes: Dict[str, Any]) -> None:
    api = exchange.api
    if api is not None:
        attributes["gateway.api"] = api.name
    cluster = exchange.cluster
    if cluster is not None:
        attributes["gateway.cluster"] = cluster.name
    consumer = _consumerName(exchange)
    if consumer is not None:
        attributes["gateway.consumer"] = consumer


class _Live:
    """
    A recorded server span while its request is served: what the client
    spans of its attempts are made from.

    @ivar key: the C{traceparent} value it was given upstream.
    """

    __slots__ = ("exchange", "span", "context", "key")

    def __init__(self, exchange: Any, span: Any, key: bytes) -> None:
        self.exchange = exchange
        self.span = span
        self.context = set_span_in_context(span)
        self.key = key


@implementer(ITracer)
class Tracer:
    """
    Makes the server span of each request (see the module docstring).

    @param tracer: the SDK's tracer (from a L{TracerProvider}).
    @param reactor: an L{IReactorTime}: spans are timed with it, as the
        exchange's C{startTime} is.
    @param idGenerator: the SDK's id generator, for the span ids of
        attempts of traces that are not sampled.
    """

    def __init__(self, tracer: Any, reactor: Any, idGenerator: Any) -> None:
        self._tracer = tracer
        self._reactor = reactor
        self._ids = idGenerator
        #: traceparent sent upstream -> the recorded server span.
        self._live: Dict[bytes, _Live] = {}

    def requestStarted(self, exchange: Any) -> None:
        request = exchange.request
        incoming = request.requestHeaders
        raw = rawHeadersOf(incoming)
        if raw is not None:
            parentValues = raw.get(TRACEPARENT)
            stateValues = raw.get(TRACESTATE)
        else:
            parentValues = incoming.getRawHeaders(b"traceparent")
            stateValues = incoming.getRawHeaders(b"tracestate")
        upstream = exchange.upstreamHeaders
        parent = parseTraceparent(parentValues) if parentValues else None
        context = None
        if parent is not None:
            traceId, spanId, flags = parent
            state = TraceState.from_header(tracestateOf(stateValues)) if stateValues else None
            context = set_span_in_context(
                NonRecordingSpan(SpanContext(traceId, spanId, True, TraceFlags(flags), state))
            )
        elif stateValues:
            # A new trace: the client's tracestate belongs to another one
            # (or to none, without a valid traceparent).
            upstream.removeHeader(b"tracestate")
        api = exchange.api
        method = request.method
        name = _METHODS.get(method) or "HTTP"
        if api is not None:
            name += " " + api.config.urlPattern
        span = self._tracer.start_span(
            name, context, SpanKind.SERVER, start_time=_nanoseconds(exchange.startTime)
        )
        spanContext = span.get_span_context()
        key = formatTraceparent(spanContext.trace_id, spanContext.span_id, spanContext.trace_flags)
        out = rawHeadersOf(upstream)
        if out is not None:
            out[TRACEPARENT] = [key]
        else:
            upstream.setRawHeaders(b"traceparent", [key])
        if not span.is_recording():
            return
        live = self._live[key] = _Live(exchange, span, key)
        notifyDone = getattr(request, "notifyDone", None)
        if notifyDone is not None:
            notifyDone(self._requestOver, live)
        else:
            request.notifyFinish().addBoth(self._finished, live)

    def live(self, traceparent: bytes) -> Optional[_Live]:
        """
        @return: the recorded server span whose context is C{traceparent},
            while its request is served, or L{None}.
        """
        return self._live.get(traceparent)

    def newSpanId(self) -> int:
        """
        @return: a new span id.
        """
        spanId: int = self._ids.generate_span_id()
        return spanId

    def startClientSpan(self, name: str, context: Any, attributes: Dict[str, Any]) -> Any:
        """
        @return: a client span, started now, whose parent is in C{context}.
        """
        return self._tracer.start_span(
            name,
            context,
            SpanKind.CLIENT,
            attributes=attributes,
            start_time=_nanoseconds(self._reactor.seconds()),
        )

    def endSpan(self, span: Any) -> None:
        """
        End a span now.
        """
        span.end(end_time=_nanoseconds(self._reactor.seconds()))

    def _finished(self, result: Any, live: _Live) -> None:
        self._requestOver(result if isinstance(result, Failure) else None, live)

    def _requestOver(self, reason: Optional[Failure], live: _Live) -> None:
        self._live.pop(live.key, None)
        try:
            self._endServerSpan(reason, live)
        except Exception:
            log.failure("could not end the span of a request")

    def _endServerSpan(self, reason: Optional[Failure], live: _Live) -> None:
        exchange = live.exchange
        request = exchange.request
        attributes: Dict[str, Any] = {}
        _method(request.method, attributes)
        path, _, query = request.uri.partition(b"?")
        attributes["url.path"] = path.decode("utf-8", "replace")
        if query:
            attributes["url.query"] = query.decode("utf-8", "replace")
        attributes["url.scheme"] = "https" if request.isSecure() else "http"
        host = request.requestHeaders.getRawHeaders(_HOST)
        if host:
            _serverAddress(host[0].decode("latin-1"), attributes)
        attributes["client.address"] = exchange.clientIP
        peer = request.getClientAddress()
        peerHost = getattr(peer, "host", None)
        if peerHost is not None:
            attributes["network.peer.address"] = peerHost
            attributes["network.peer.port"] = getattr(peer, "port", 0)
        agent = request.requestHeaders.getRawHeaders(b"user-agent")
        if agent:
            attributes["user_agent.original"] = agent[0].decode("latin-1")
        version = request.clientproto
        if version.startswith(b"HTTP/"):
            attributes["network.protocol.version"] = (
                "2" if version == b"HTTP/2" else version[5:].decode("ascii", "replace")
            )
        api = exchange.api
        if api is not None:
            attributes["http.route"] = api.config.urlPattern
        _gatewayAttributes(exchange, attributes)
        backend = exchange.backend
        if backend is not None:
            attributes["gateway.server"] = backend.name
        if exchange.routing is not None:
            attributes["gateway.routing"] = exchange.routing
        if exchange.outcome is not None:
            attributes["gateway.outcome"] = exchange.outcome
        status = exchange.status
        if status is None and request.startedWriting:
            status = request.code
        span = live.span
        if status is not None:
            attributes["http.response.status_code"] = status
        if reason is not None and status is None:
            attributes["error.type"] = "client_gone"
            span.set_status(StatusCode.ERROR, "the client left before its answer")
        elif status is not None and status >= 500:
            attributes["error.type"] = (
                exchange.outcome
                if exchange.outcome and ":" not in exchange.outcome
                else str(status)
            )
            span.set_status(StatusCode.ERROR)
        span.set_attributes(attributes)
        self.endSpan(span)


def _withTraceparent(headers: Headers, value: bytes) -> Headers:
    """
    @return: a copy of C{headers} whose C{traceparent} is C{value}.
    """
    raw = rawHeadersOf(headers)
    if raw is not None:
        copied = dict(raw)
        copied[TRACEPARENT] = [value]
        return headersFromRaw(copied)
    out = headers.copy()
    out.setRawHeaders(b"traceparent", [value])
    return out


def _clusterOf(exchange: Any, backend: Any) -> Any:
    """
    @return: the cluster of the exchange's snapshot that a backend was
        picked from: the exchange's own when it holds it, else one of the
        API's nodes or routings (an aggregation's node, a mirror) that
        does; L{None} when none does.
    """
    cluster = exchange.cluster
    if cluster is not None and backend in cluster.backends:
        return cluster
    api = exchange.api
    snapshot = exchange.snapshot
    if api is None or snapshot is None:
        return None
    clusters = snapshot.clusters
    names = [node.clusterName for node in api.nodes]
    names += [routing.routing.cluster for routing in api.routings]
    for name in names:
        candidate = clusters.get(name) if name is not None else None
        if candidate is not None and backend in candidate.backends:
            return candidate
    return None


@implementer(IUpstreamClient)
class TracingClient:
    """
    An L{IUpstreamClient} that makes a client span of every request it
    sends (see the module docstring).

    @param client: the L{IUpstreamClient} that sends them.
    @param tracer: the L{Tracer} of their server spans.
    """

    def __init__(self, client: Any, tracer: Tracer) -> None:
        self._client = client
        self._tracer = tracer

    def send(
        self,
        backend: Any,
        method: bytes,
        uri: bytes,
        headers: Headers,
        bodyProducer: Any,
        timeout: Optional[float],
        onResponse: Callable[..., object],
        onFailure: Callable[..., object],
        *args: object,
    ) -> Any:
        raw = rawHeadersOf(headers)
        values = raw.get(TRACEPARENT) if raw is not None else headers.getRawHeaders(b"traceparent")
        if not values:
            # Not a request of a traced exchange (or a filter took the
            # header away): sent as it is.
            return self._client.send(
                backend, method, uri, headers, bodyProducer, timeout, onResponse, onFailure, *args
            )
        tracer = self._tracer
        live = tracer.live(values[0]) if len(values) == 1 else None
        if live is None:
            parent = parseTraceparent(values)
            if parent is None:
                return self._client.send(
                    backend,
                    method,
                    uri,
                    headers,
                    bodyProducer,
                    timeout,
                    onResponse,
                    onFailure,
                    *args,
                )
            traceId, parentId, flags = parent
            if not flags & SAMPLED:
                # Not recorded: a span id of its own, the same decision.
                value = formatTraceparent(traceId, tracer.newSpanId(), flags)
                return self._client.send(
                    backend,
                    method,
                    uri,
                    _withTraceparent(headers, value),
                    bodyProducer,
                    timeout,
                    onResponse,
                    onFailure,
                    *args,
                )
            # A recorded trace whose request is over (a mirror copy sent
            # late): the header says who the parent is.
            context = set_span_in_context(
                NonRecordingSpan(SpanContext(traceId, parentId, False, TraceFlags(flags)))
            )
            exchange = None
        else:
            context = live.context
            exchange = live.exchange
        try:
            span, value = self._start(backend, method, uri, context, exchange, headers)
        except Exception:
            log.failure("could not start the span of an upstream request")
            return self._client.send(
                backend, method, uri, headers, bodyProducer, timeout, onResponse, onFailure, *args
            )
        return self._client.send(
            backend,
            method,
            uri,
            _withTraceparent(headers, value),
            bodyProducer,
            timeout,
            self._answered,
            self._failed,
            span,
            onResponse,
            onFailure,
            args,
        )

    def _start(
        self,
        backend: Any,
        method: bytes,
        uri: bytes,
        context: Any,
        exchange: Any,
        headers: Headers,
    ) -> Tuple[Any, bytes]:
        attributes: Dict[str, Any] = {}
        name = _method(method, attributes)
        host = backend.host
        port = backend.port
        attributes["server.address"] = host
        attributes["server.port"] = port
        hostPart = f"[{host}]" if ":" in host else host
        attributes["url.full"] = f"http://{hostPart}:{port}" + uri.decode("utf-8", "replace")
        attributes["network.protocol.version"] = "1.1"
        serverName = getattr(backend, "name", None)
        if serverName is not None:
            attributes["gateway.server"] = serverName
        if exchange is not None:
            api = exchange.api
            if api is not None:
                attributes["gateway.api"] = api.name
            cluster = _clusterOf(exchange, backend)
            if cluster is not None:
                attributes["gateway.cluster"] = cluster.name
            consumer = _consumerName(exchange)
            if consumer is not None:
                attributes["gateway.consumer"] = consumer
            if exchange.retries and headers is exchange.upstreamHeaders:
                # An attempt of the request itself (not a node's, nor a
                # mirror's): its retries are counted on the exchange.
                attributes["http.request.resend_count"] = exchange.retries
        span = self._tracer.startClientSpan(name, context, attributes)
        spanContext = span.get_span_context()
        value = formatTraceparent(
            spanContext.trace_id, spanContext.span_id, spanContext.trace_flags
        )
        return span, value

    def _answered(
        self,
        response: Any,
        span: Any,
        onResponse: Callable[..., object],
        onFailure: Callable[..., object],
        args: Tuple[object, ...],
    ) -> None:
        try:
            code = response.code
            if code >= 400:
                span.set_attributes({"http.response.status_code": code, "error.type": str(code)})
                span.set_status(StatusCode.ERROR)
            else:
                span.set_attribute("http.response.status_code", code)
            self._tracer.endSpan(span)
        except Exception:
            log.failure("could not end the span of an upstream request")
        onResponse(response, *args)

    def _failed(
        self,
        failure: Failure,
        span: Any,
        onResponse: Callable[..., object],
        onFailure: Callable[..., object],
        args: Tuple[object, ...],
    ) -> None:
        try:
            error = failure.value
            kind = "cancelled" if failure.check(CancelledError) else type(error).__name__
            span.set_attribute("error.type", kind)
            span.set_status(StatusCode.ERROR, failure.getErrorMessage())
            self._tracer.endSpan(span)
        except Exception:
            log.failure("could not end the span of an upstream request")
        onFailure(failure, *args)

    def close(self) -> Deferred[None]:
        d: Deferred[None] = self._client.close()
        return d


class Tracing:
    """
    Tracing as the config's C{tracing:} section sets it up: the SDK's
    L{TracerProvider} (its sampler: the ratio, after the client's
    decision when C{parentBased}), a L{Tracer}, and spans exported by a
    L{ReactorSpanProcessor} with an L{OTLPHTTPExporter}.

    @ivar tracer: the L{Tracer} the proxy calls.
    @ivar processor: the L{ReactorSpanProcessor}.
    @ivar service: the L{TracingService} that starts and stops the export.
    """

    def __init__(
        self,
        config: Any,
        reactor: Any,
        exportClient: Any = None,
        processor: Any = None,
        idGenerator: Any = None,
    ) -> None:
        """
        @param config: the L{gateway.model.tracing.TracingConfig}.
        @param exportClient: the L{IUpstreamClient} spans are sent with;
            by default an L{HTTP11UpstreamClient} of their own.
        @param processor: the SDK span processor finished spans go to,
            instead of a L{ReactorSpanProcessor} (tests).
        @param idGenerator: the SDK's id generator (tests); random ids by
            default.
        """
        self._config = config
        self._reactor = reactor
        if exportClient is None:
            exportClient = HTTP11UpstreamClient(reactor, maxIdlePerBackend=2)
        self._exportClient = exportClient
        if processor is None:
            host, port, target = splitOTLP(config.otlp)
            exporter = OTLPHTTPExporter(
                exportClient, host, port, target, config.headers, config.exportTimeout
            )
            processor = ReactorSpanProcessor(
                exporter.export,
                reactor,
                maxQueueSize=config.maxQueueSize,
                maxExportBatchSize=config.maxExportBatchSize,
                scheduleDelay=config.scheduleDelay,
                where=f"the trace collector at {config.otlp}",
            )
        self.processor = processor
        ratio = TraceIdRatioBased(config.sampleRatio)
        if config.parentBased:
            sampler = ParentBased(ratio)
        else:
            sampler = ParentBased(
                ratio, remote_parent_sampled=ratio, remote_parent_not_sampled=ratio
            )
        self.provider = TracerProvider(
            sampler=sampler,
            resource=Resource.create(
                {"service.name": config.serviceName, "service.version": gateway.__version__}
            ),
            shutdown_on_exit=False,
            id_generator=idGenerator,
        )
        self.provider.add_span_processor(processor)
        self.tracer = Tracer(
            self.provider.get_tracer("gateway", gateway.__version__),
            reactor,
            self.provider.id_generator,
        )
        self.service = TracingService(self)

    def wrap(self, client: Any) -> TracingClient:
        """
        @return: C{client} making a client span of each request it sends.
        """
        return TracingClient(client, self.tracer)

    def counts(self) -> Dict[str, int]:
        """
        @return: the export's counters (see L{ReactorSpanProcessor.counts});
            zeros for another processor.
        """
        counts = getattr(self.processor, "counts", None)
        if counts is None:
            return {"exported": 0, "dropped": 0, "failed": 0, "queued": 0}
        result: Dict[str, int] = counts()
        return result

    def start(self) -> None:
        start = getattr(self.processor, "start", None)
        if start is not None:
            start()

    async def stop(self) -> None:
        """
        Export what is left (for C{exportTimeout} seconds at most), then
        stop.
        """
        flush = getattr(self.processor, "flush", None)
        if flush is not None:
            await flush(self._config.exportTimeout)
        self.provider.shutdown()
        await self._exportClient.close()


class TracingService(Service):
    """
    Starts the export of spans with the process, and exports what is left
    when it stops.  (Started before the proxy, it stops after it: the
    spans of the requests the proxy drained are exported too.)
    """

    name = "tracing"

    def __init__(self, tracing: Tracing) -> None:
        self._tracing = tracing

    def startService(self) -> None:
        super().startService()
        self._tracing.start()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self._tracing.stop())
