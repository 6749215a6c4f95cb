"""
The spans of the proxy's requests.

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
  - L{Tracing}: the two put together with the span processor that exports
    (L{gateway.telemetry.tracing.export}); L{TracingService} starts and
    stops the export.

The sampling decision is made first (L{Tracer.sampled}: the SDK's
C{parentbased_traceidratio}, or C{traceidratio} without C{parentBased},
with the threshold of its L{TraceIdRatioBased}), so a trace that is not
sampled costs no span: the request only gets a span id of the gateway's
in the C{traceparent} it sends upstream, with C{00} flags, the same for
all its attempts (nothing records them).

A recorded span is the OpenTelemetry SDK's L{ReadableSpan}, what its span
processors and exporters take, with its L{Resource} (C{service.name},
and what C{OTEL_RESOURCE_ATTRIBUTES} adds) and an L{InstrumentationScope}.
It is made whole when its request or attempt ends, rather than through
the SDK's C{Tracer}: the SDK's live C{Span} (a lock, each attribute
checked as it is set, a copy made at the end, the context machinery)
costs about 21 µs per span here, against 5 for the finished one.

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
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState
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
    hexTraceId,
    parseTraceparent,
    parseTracestate,
    traceparent,
)
from gateway.telemetry.tracing.export import OTLPHTTPExporter, ReactorSpanProcessor

log = Logger()

#: The methods of the HTTP semantic conventions; others are C{_OTHER}.
_METHODS = {
    m.encode("ascii"): m
    for m in ("CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE")
}

_HOST = b"Host"
_USER_AGENT = b"User-Agent"

#: The longest a span's text taken from a request (its path, query, user
#: agent, the upstream URL) may be, in characters; longer ones are cut
#: (OpenTelemetry's attribute value length limit): a span waiting in the
#: export queue (C{maxQueueSize} of them) holds no more than a few of these.
ATTRIBUTE_LENGTH = 1024


def _limited(text: str) -> str:
    return text if len(text) <= ATTRIBUTE_LENGTH else text[:ATTRIBUTE_LENGTH]


_RECORDED = TraceFlags(TraceFlags.SAMPLED)
_UNSET = Status(StatusCode.UNSET)
_ERROR = Status(StatusCode.ERROR)


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


def _setTraceparent(headers: Headers, value: bytes) -> None:
    out = rawHeadersOf(headers)
    if out is not None:
        out[TRACEPARENT] = [value]
    else:
        headers.setRawHeaders(b"traceparent", [value])


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
        candidate = clusters.get(name)
        if candidate is not None and backend in candidate.backends:
            return candidate
    return None


class _Live:
    """
    A recorded server span while its request is served.

    @ivar context: its L{SpanContext}, the parent of its attempts' spans.
    @ivar parent: the client's L{SpanContext}, or L{None}.
    @ivar key: the C{traceparent} it was given upstream.
    """

    __slots__ = ("exchange", "name", "context", "parent", "start", "key")

    def __init__(
        self,
        exchange: Any,
        name: str,
        context: SpanContext,
        parent: Optional[SpanContext],
        key: bytes,
    ) -> None:
        self.exchange = exchange
        self.name = name
        self.context = context
        self.parent = parent
        self.start = _nanoseconds(exchange.startTime)
        self.key = key


class _Attempt:
    """
    A recorded client span while its request is sent.
    """

    __slots__ = (
        "name",
        "context",
        "parent",
        "attributes",
        "start",
        "onResponse",
        "onFailure",
        "args",
    )

    def __init__(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext,
        attributes: Dict[str, Any],
        start: int,
        onResponse: Callable[..., object],
        onFailure: Callable[..., object],
        args: Tuple[object, ...],
    ) -> None:
        self.name = name
        self.context = context
        self.parent = parent
        self.attributes = attributes
        self.start = start
        self.onResponse = onResponse
        self.onFailure = onFailure
        self.args = args


@implementer(ITracer)
class Tracer:
    """
    Makes the server span of each request (see the module docstring), and
    hands every finished span to a span processor.

    @param processor: the SDK span processor (C{on_end}) finished spans go
        to.
    @param reactor: an L{IReactorTime}: spans are timed with it, as the
        exchange's C{startTime} is.
    @param resource: the L{Resource} of the spans.
    @param ratio: the L{TraceIdRatioBased} sampler of C{sampleRatio}.
    @param parentBased: whether a client's sampled flag decides.
    @param ids: the SDK's id generator.
    """

    def __init__(
        self,
        processor: Any,
        reactor: Any,
        resource: Resource,
        ratio: TraceIdRatioBased,
        parentBased: bool,
        ids: Optional[RandomIdGenerator] = None,
    ) -> None:
        self._processor = processor
        self._reactor = reactor
        self._resource = resource
        self._scope = InstrumentationScope("gateway", gateway.__version__)
        self._bound = ratio.bound
        self._limit = ratio.TRACE_ID_LIMIT
        self._parentBased = parentBased
        self._ids = ids or RandomIdGenerator()
        #: traceparent sent upstream -> the recorded server span.
        self._live: Dict[bytes, _Live] = {}

    def sampled(self, traceId: int, parentFlags: Optional[int]) -> bool:
        """
        @param parentFlags: the flags of the client's C{traceparent}, or
            L{None} without one.
        @return: whether a trace is recorded.
        """
        if parentFlags is not None and self._parentBased:
            return bool(parentFlags & SAMPLED)
        return bool(traceId & self._limit < self._bound)

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
        if parent is not None:
            traceHex, parentHex, flags = parent
            traceId = int(traceHex, 16)
            sampled = self.sampled(traceId, flags)
        else:
            if stateValues:
                # A new trace: the client's tracestate belongs to another
                # one (or to none, without a valid traceparent).
                upstream.removeHeader(b"tracestate")
            traceId = self._ids.generate_trace_id()
            traceHex = hexTraceId(traceId)
            sampled = self.sampled(traceId, None)
        spanId = self._ids.generate_span_id()
        key = traceparent(traceHex, spanId, sampled)
        _setTraceparent(upstream, key)
        if not sampled:
            # Nothing to record: the trace goes on upstream all the same.
            return
        state = None
        parentContext = None
        if parent is not None:
            if stateValues:
                members = parseTracestate(stateValues)
                if members:
                    state = TraceState(members)
            parentContext = SpanContext(traceId, int(parentHex, 16), True, TraceFlags(flags), state)
        api = exchange.api
        name = _METHODS.get(request.method) or "HTTP"
        if api is not None:
            name += " " + api.config.urlPattern
        context = SpanContext(traceId, spanId, False, _RECORDED, state)
        live = self._live[key] = _Live(exchange, name, context, parentContext, key)
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

    def now(self) -> int:
        """
        @return: the time, in nanoseconds since the epoch.
        """
        return _nanoseconds(self._reactor.seconds())

    def newContext(self, parent: SpanContext) -> SpanContext:
        """
        @return: the context of a new recorded span in C{parent}'s trace.
        """
        return SpanContext(
            parent.trace_id, self._ids.generate_span_id(), False, _RECORDED, parent.trace_state
        )

    def emit(
        self,
        name: str,
        kind: SpanKind,
        context: SpanContext,
        parent: Optional[SpanContext],
        attributes: Dict[str, Any],
        status: Status,
        start: int,
    ) -> None:
        """
        A span ended now: hand it to the processor.
        """
        span = ReadableSpan(
            name=name,
            context=context,
            parent=parent,
            resource=self._resource,
            attributes=attributes,
            kind=kind,
            status=status,
            start_time=start,
            end_time=self.now(),
            instrumentation_scope=self._scope,
        )
        try:
            self._processor.on_end(span)
        except Exception:
            log.failure("the span processor failed")

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
        path, _, query = (exchange.shownURI or request.uri).partition(b"?")
        attributes["url.path"] = _limited(path.decode("utf-8", "replace"))
        if query:
            attributes["url.query"] = _limited(query.decode("utf-8", "replace"))
        attributes["url.scheme"] = "https" if request.isSecure() else "http"
        headers = request.requestHeaders
        host = headers.getRawHeaders(_HOST)
        if host:
            _serverAddress(host[0].decode("latin-1"), attributes)
        attributes["client.address"] = exchange.clientIP
        peer = request.getClientAddress()
        peerHost = getattr(peer, "host", None)
        if peerHost is not None:
            attributes["network.peer.address"] = peerHost
            attributes["network.peer.port"] = getattr(peer, "port", 0)
        agent = headers.getRawHeaders(_USER_AGENT)
        if agent:
            attributes["user_agent.original"] = _limited(agent[0].decode("latin-1"))
        version = request.clientproto
        if version.startswith(b"HTTP/"):
            attributes["network.protocol.version"] = (
                "2" if version == b"HTTP/2" else version[5:].decode("ascii", "replace")
            )
        api = exchange.api
        if api is not None:
            attributes["http.route"] = api.config.urlPattern
            attributes["gateway.api"] = api.name
        cluster = exchange.cluster
        if cluster is not None:
            attributes["gateway.cluster"] = cluster.name
        backend = exchange.backend
        if backend is not None:
            attributes["gateway.server"] = backend.name
        consumer = _consumerName(exchange)
        if consumer is not None:
            attributes["gateway.consumer"] = consumer
        if exchange.routing is not None:
            attributes["gateway.routing"] = exchange.routing
        outcome = exchange.outcome
        if outcome is not None:
            attributes["gateway.outcome"] = outcome
        status = exchange.status
        if status is None and request.startedWriting:
            status = request.code
        spanStatus = _UNSET
        if status is not None:
            attributes["http.response.status_code"] = status
        if reason is not None and status is None:
            attributes["error.type"] = "client_gone"
            spanStatus = Status(StatusCode.ERROR, "the client left before its answer")
        elif status is not None and status >= 500:
            attributes["error.type"] = outcome if outcome and ":" not in outcome else str(status)
            spanStatus = _ERROR
        self.emit(
            live.name,
            SpanKind.SERVER,
            live.context,
            live.parent,
            attributes,
            spanStatus,
            live.start,
        )


@implementer(IUpstreamClient)
class TracingClient:
    """
    An L{IUpstreamClient} that makes a client span of every request it
    sends for a recorded trace (see the module docstring).

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
        attempt = None
        if values and len(values) == 1 and values[0][-3:] != b"-00":
            try:
                attempt = self._attempt(values[0], backend, method, uri, headers)
            except Exception:
                log.failure("could not start the span of an upstream request")
        if attempt is None:
            # Not a recorded trace's request (the gateway's traceparent
            # says not sampled, or there is none: a filter took it away):
            # sent as it is.
            return self._client.send(
                backend, method, uri, headers, bodyProducer, timeout, onResponse, onFailure, *args
            )
        attempt.onResponse = onResponse
        attempt.onFailure = onFailure
        attempt.args = args
        context = attempt.context
        return self._client.send(
            backend,
            method,
            uri,
            _withTraceparent(
                headers, traceparent(hexTraceId(context.trace_id), context.span_id, True)
            ),
            bodyProducer,
            timeout,
            self._answered,
            self._failed,
            attempt,
        )

    def _attempt(
        self, value: bytes, backend: Any, method: bytes, uri: bytes, headers: Headers
    ) -> Optional[_Attempt]:
        """
        @param value: the C{traceparent} the request came with.
        @return: the span of an attempt of a recorded trace, or L{None}.
        """
        tracer = self._tracer
        live = tracer.live(value)
        if live is not None:
            parent = live.context
            exchange = live.exchange
        else:
            # A recorded trace whose request is over (a mirror copy sent
            # late), or a traceparent a filter set: it says who the parent
            # is.
            parsed = parseTraceparent([value])
            if parsed is None or not parsed[2] & SAMPLED:
                return None
            traceHex, parentHex, flags = parsed
            parent = SpanContext(int(traceHex, 16), int(parentHex, 16), False, TraceFlags(flags))
            exchange = None
        attributes: Dict[str, Any] = {}
        name = _method(method, attributes)
        host = backend.host
        port = backend.port
        attributes["server.address"] = host
        attributes["server.port"] = port
        hostPart = f"[{host}]" if ":" in host else host
        if exchange is not None and exchange.shownURI is not None:
            # The target carries an API key (sent on: hideCredentials off):
            # the span keeps its path alone.
            uri = uri.partition(b"?")[0]
        attributes["url.full"] = _limited(
            f"http://{hostPart}:{port}" + uri.decode("utf-8", "replace")
        )
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
        return _Attempt(
            name,
            tracer.newContext(parent),
            parent,
            attributes,
            tracer.now(),
            onResponse=_nothing,
            onFailure=_nothing,
            args=(),
        )

    def _answered(self, response: Any, attempt: _Attempt) -> None:
        try:
            code = response.code
            attributes = attempt.attributes
            attributes["http.response.status_code"] = code
            status = _UNSET
            if code >= 400:
                attributes["error.type"] = str(code)
                status = _ERROR
            self._end(attempt, status)
        except Exception:
            log.failure("could not end the span of an upstream request")
        attempt.onResponse(response, *attempt.args)

    def _failed(self, failure: Failure, attempt: _Attempt) -> None:
        try:
            error = failure.value
            kind = "cancelled" if failure.check(CancelledError) else type(error).__name__
            attempt.attributes["error.type"] = kind
            self._end(attempt, Status(StatusCode.ERROR, failure.getErrorMessage()))
        except Exception:
            log.failure("could not end the span of an upstream request")
        attempt.onFailure(failure, *attempt.args)

    def _end(self, attempt: _Attempt, status: Status) -> None:
        self._tracer.emit(
            attempt.name,
            SpanKind.CLIENT,
            attempt.context,
            attempt.parent,
            attempt.attributes,
            status,
            attempt.start,
        )

    def close(self) -> Deferred[None]:
        d: Deferred[None] = self._client.close()
        return d


def _nothing(*args: object) -> None:
    pass


class Tracing:
    """
    Tracing as the config's C{tracing:} section sets it up: a L{Tracer}
    whose spans are exported by a L{ReactorSpanProcessor} with an
    L{OTLPHTTPExporter}.

    @ivar tracer: the L{Tracer} the proxy calls.
    @ivar processor: the span processor.
    @ivar service: the L{TracingService} that starts and stops the export.
    """

    def __init__(
        self,
        config: Any,
        reactor: Any,
        exportClient: Any = None,
        processor: Any = None,
    ) -> None:
        """
        @param config: the L{gateway.model.tracing.TracingConfig}.
        @param exportClient: the L{IUpstreamClient} spans are sent with;
            by default an L{HTTP11UpstreamClient} of their own.
        @param processor: the SDK span processor finished spans go to,
            instead of a L{ReactorSpanProcessor} (tests).
        """
        self._config = config
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
        resource = Resource.create(
            {"service.name": config.serviceName, "service.version": gateway.__version__}
        )
        self.tracer = Tracer(
            processor,
            reactor,
            resource,
            TraceIdRatioBased(config.sampleRatio),
            config.parentBased,
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
        self.processor.shutdown()
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
