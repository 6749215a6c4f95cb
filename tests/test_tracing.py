"""
OpenTelemetry tracing (L{gateway.telemetry.tracing}): the W3C
C{traceparent}, the C{tracing:} section, the spans of requests served by
the real pipeline (a L{GatewayResource} on a L{Clock}, requests on a
L{StringTransport}, an upstream client the tests answer), the export of
spans through the reactor, and their counters in the stats and
C{/metrics}.
"""

from __future__ import annotations

import logging
from random import Random
from typing import Any, Dict, List, Optional, Tuple

from fakes import ScriptedUpstreamClient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)
from prometheus_client.exposition import generate_latest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone
from twisted.web.http_headers import Headers
from zope.interface.verify import verifyObject

from gateway.filters import FilterRegistry
from gateway.http.errors import UpstreamConnectError
from gateway.http.request import GatewayRequest
from gateway.http.site import LimitedSite
from gateway.interfaces import IUpstreamClient
from gateway.model.config import ConfigError, parseConfig
from gateway.model.tracing import TracingConfig, splitOTLP
from gateway.pipeline import resource as resourceModule
from gateway.pipeline.aggregate import Aggregator
from gateway.pipeline.exchange import Exchange
from gateway.pipeline.mirror import Mirror
from gateway.pipeline.resource import GatewayResource
from gateway.routing.snapshot import SnapshotManager
from gateway.store import StoreState
from gateway.telemetry.metrics import metricsRegistry
from gateway.telemetry.stats import SnapshotStats, Stats, mergeSnapshots
from gateway.telemetry.tracing import ITracer, makeTracing
from gateway.telemetry.tracing.context import (
    SAMPLED,
    hexTraceId,
    parseTraceparent,
    parseTracestate,
    traceparent,
)
from gateway.telemetry.tracing.export import (
    ExportFailed,
    OTLPHTTPExporter,
    ReactorSpanProcessor,
)
from gateway.telemetry.tracing.spans import ATTRIBUTE_LENGTH, TracingClient

PEER = IPv4Address("TCP", "127.0.0.1", 40000)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
SAMPLED_PARENT = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"
UNSAMPLED_PARENT = f"00-{TRACE_ID}-{CLIENT_SPAN}-00"


# -- the W3C header -------------------------------------------------------------


class TraceparentTests(SynchronousTestCase):
    """
    L{parseTraceparent} and L{traceparent}: the rules of W3C Trace
    Context, section 3.2.
    """

    def test_valid(self) -> None:
        """
        A version-00 value gives its trace id, parent id and flags.
        """
        self.assertEqual(
            parseTraceparent([SAMPLED_PARENT.encode()]),
            (TRACE_ID.encode(), CLIENT_SPAN.encode(), 1),
        )

    def test_laterVersion(self) -> None:
        """
        A later version is read as version 00 is, fields after the flags
        ignored when a C{-} comes first.
        """
        value = f"cc-{TRACE_ID}-{CLIENT_SPAN}-03-what-the-future-holds".encode()
        self.assertEqual(parseTraceparent([value]), (TRACE_ID.encode(), CLIENT_SPAN.encode(), 3))
        self.assertIsNone(parseTraceparent([f"cc-{TRACE_ID}-{CLIENT_SPAN}-01x".encode()]))

    def test_invalid(self) -> None:
        """
        Version C{ff}, upper-case hex, all-zero ids, the wrong length for
        version 00, bad separators, several headers and none are refused.
        """
        for values in (
            None,
            [],
            [f"ff-{TRACE_ID}-{CLIENT_SPAN}-01".encode()],
            [f"00-{TRACE_ID.upper()}-{CLIENT_SPAN}-01".encode()],
            [f"00-{'0' * 32}-{CLIENT_SPAN}-01".encode()],
            [f"00-{TRACE_ID}-{'0' * 16}-01".encode()],
            [f"00-{TRACE_ID}-{CLIENT_SPAN}-01-extra".encode()],
            [f"00_{TRACE_ID}-{CLIENT_SPAN}-01".encode()],
            [f"00-{TRACE_ID[:-1]}-{CLIENT_SPAN}-01".encode()],
            [SAMPLED_PARENT.encode(), SAMPLED_PARENT.encode()],
            [b"garbage"],
        ):
            self.assertIsNone(parseTraceparent(values), values)

    def test_format(self) -> None:
        """
        L{traceparent} writes version 00 with a zero-padded span id and the
        sampled flag alone, which L{parseTraceparent} reads back.
        """
        value = traceparent(hexTraceId(5), 6, True)
        self.assertEqual(value, b"00-" + b"0" * 31 + b"5-" + b"0" * 15 + b"6-01")
        self.assertEqual(parseTraceparent([value]), (b"0" * 31 + b"5", b"0" * 15 + b"6", 1))
        self.assertTrue(traceparent(hexTraceId(5), 6, False).endswith(b"-00"))


# -- the config -------------------------------------------------------------------

PROXY = {"listen": "tcp:8080:interface=127.0.0.1"}


class TracestateTests(SynchronousTestCase):
    """
    L{parseTracestate}: the rules of W3C Trace Context, section 3.3.
    """

    def test_valid(self) -> None:
        """
        Members of every line, in order, optional whitespace and empty
        members left out; simple and multi-tenant keys.
        """
        self.assertEqual(
            parseTracestate([b"vendor=opaque , t0@sys=a b", b",,other=1 "]),
            [("vendor", "opaque"), ("t0@sys", "a b"), ("other", "1")],
        )
        self.assertEqual(parseTracestate([b""]), [])
        members = ",".join(f"k{i}=v" for i in range(32)).encode()
        self.assertEqual(len(parseTracestate([members]) or []), 32)

    def test_invalid(self) -> None:
        """
        A member that is not C{key=value} by the rules (upper case, a
        space in the key, a C{=} or a trailing space in the value, no
        value), a key given twice or more than 32 members make the whole
        header invalid.
        """
        for value in [
            b"Vendor=1",
            b"a b=1",
            b"a=1=2",
            b"a=",
            b"a",
            b"a=1,a=2",
            b"a=\xe9",
            b"k" * 257 + b"=1",
            ",".join(f"k{i}=v" for i in range(33)).encode(),
        ]:
            self.assertIsNone(parseTracestate([value]), value)


class TracingConfigTests(SynchronousTestCase):
    """
    The C{tracing:} section of the config file.
    """

    def test_absent(self) -> None:
        """
        Without the section nothing is traced.
        """
        self.assertIsNone(parseConfig({"proxy": PROXY}).tracing)

    def test_defaults(self) -> None:
        """
        An empty section traces everything to the default local collector.
        """
        config = parseConfig({"proxy": PROXY, "tracing": {}}).tracing
        self.assertEqual(
            (config.otlp, config.sampleRatio, config.serviceName, config.parentBased),
            ("http://127.0.0.1:4318/v1/traces", 1.0, "gateway", True),
        )

    def test_issueExample(self) -> None:
        """
        The issue's example is taken as it is.
        """
        config = parseConfig(
            {
                "proxy": PROXY,
                "tracing": {
                    "otlp": "http://127.0.0.1:4318/v1/traces",
                    "sampleRatio": 0.1,
                    "serviceName": "gateway",
                },
            }
        ).tracing
        self.assertEqual(config.sampleRatio, 0.1)

    def test_errorsNameTheField(self) -> None:
        """
        Every error names its key under C{tracing}.
        """
        error = self.assertRaises(
            ConfigError,
            parseConfig,
            {
                "proxy": PROXY,
                "tracing": {
                    "otlp": "https://collector:4318/v1/traces",
                    "sampleRatio": 1.5,
                    "serviceName": "",
                    "maxQueueSize": 0,
                    "scheduleDelay": 0,
                    "headers": {"Content-Type": "x", "bad name": "v", "X-Key": "a\nb"},
                    "colour": "blue",
                },
            },
        )
        self.assertEqual(
            sorted(key for key, _ in error.errors),
            [
                "tracing.colour",
                "tracing.headers.Content-Type",
                "tracing.headers.X-Key",
                "tracing.headers.bad name",
                "tracing.maxQueueSize",
                "tracing.otlp",
                "tracing.sampleRatio",
                "tracing.scheduleDelay",
                "tracing.serviceName",
            ],
        )

    def test_badURLs(self) -> None:
        """
        The collector's URL must be C{http://HOST[:PORT]/...}, without
        credentials or a fragment, with a port in range.
        """
        for url in (
            "ftp://h/x",
            "http:///v1/traces",
            "http://user:pw@h:4318/v1/traces",
            "http://h:99999/v1/traces",
            "http://h:0/v1/traces",
            "http://h/v1#x",
            "http://hé/v1",
        ):
            with self.assertRaises(ConfigError, msg=url) as caught:
                parseConfig({"proxy": PROXY, "tracing": {"otlp": url}})
            self.assertEqual(caught.exception.key, "tracing.otlp")

    def test_splitOTLP(self) -> None:
        """
        L{splitOTLP} gives the host, the port (80 by default) and the
        request target (C{/} by default, the query kept).
        """
        self.assertEqual(
            splitOTLP("http://127.0.0.1:4318/v1/traces"), ("127.0.0.1", 4318, b"/v1/traces")
        )
        self.assertEqual(splitOTLP("http://collector"), ("collector", 80, b"/"))
        self.assertEqual(splitOTLP("http://[::1]:9/p?q=1"), ("::1", 9, b"/p?q=1"))


# -- spans of requests through the pipeline ------------------------------------------


class Answer:
    """
    An upstream response whose whole body came with its head.
    """

    def __init__(self, code: int, body: bytes = b"{}") -> None:
        self.code = code
        self.phrase = b"OK"
        self.headers = Headers({b"content-type": [b"application/json"]})
        self.length = len(body)
        self.body = body

    def deliverBody(self, protocol: Any) -> None:
        # (The proxy asks for the body of an answer it drops: a retried one.)
        protocol.makeConnection(StringTransport())
        protocol.dataReceived(self.body)
        protocol.connectionLost(Failure(ResponseDone()))


class Client(ScriptedUpstreamClient):
    """
    An upstream client that records what it is asked to send and waits
    for the test to answer; servers in C{refuse} fail at once.
    """

    def __init__(self) -> None:
        self.calls: List[Tuple[str, bytes, Headers, Deferred]] = []
        self.refuse: set = set()
        self.refuseFirst = 0

    def respond(self, backend, method, uri, headers, bodyProducer, timeout):
        if backend.name in self.refuse or len(self.calls) < self.refuseFirst:
            self.calls.append((backend.name, uri, headers, fail(UpstreamConnectError("refused"))))
            return self.calls[-1][3]
        d: Deferred = Deferred()
        self.calls.append((backend.name, uri, headers, d))
        return d

    def answer(self, index: int, code: int = 200, body: bytes = b"{}") -> None:
        self.calls[index][3].callback(Answer(code, body))

    def traceparents(self) -> List[bytes]:
        return [headers.getRawHeaders(b"traceparent")[0] for _, _, headers, _ in self.calls]


def tracingConfig(**kw: Any) -> TracingConfig:
    return TracingConfig(**kw)


SERVERS = {
    "s1": {"name": "s1", "addr": "127.0.0.1:9001"},
    "s2": {"name": "s2", "addr": "127.0.0.1:9002"},
    "m1": {"name": "m1", "addr": "127.0.0.1:9003"},
    "s3": {"name": "s3", "addr": "127.0.0.1:9004"},
}
CLUSTERS = {
    "main": {"name": "main", "servers": ["s1", "s2"], "loadBalance": "round-robin"},
    "other": {"name": "other", "servers": ["m1"]},
    "three": {"name": "three", "servers": ["s1", "s2", "s3"]},
}


class Pipeline:
    """
    The proxy resource with tracing, on a L{Clock}, its spans collected in
    memory.
    """

    def __init__(self, testCase: SynchronousTestCase, **tracing: Any) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.client = Client()
        self.exporter = InMemorySpanExporter()
        self.tracing = makeTracing(
            tracingConfig(**tracing),
            self.clock,
            exportClient=self.client,
            processor=SimpleSpanProcessor(self.exporter),
        )
        self.testCase = testCase

    def serve(
        self,
        apis: Dict[str, Any],
        routings: Optional[Dict[str, Any]] = None,
        consumers: Optional[Dict[str, Any]] = None,
    ) -> None:
        manager = SnapshotManager(FilterRegistry({}), self.clock)
        manager.apply(
            StoreState(
                1,
                {
                    "servers": SERVERS,
                    "clusters": CLUSTERS,
                    "apis": apis,
                    "routings": routings or {},
                    "consumers": consumers or {},
                },
            )
        )
        client = self.tracing.wrap(self.client)
        self.resource = GatewayResource(
            manager,
            client,
            self.clock,
            aggregator=Aggregator(client, self.clock),
            mirror=Mirror(client, self.clock),
            tracer=self.tracing.tracer,
        )
        self.site = LimitedSite(self.resource, reactor=self.clock, requestFactory=GatewayRequest)

    def request(self, path: str = "/a", headers: Optional[Dict[str, str]] = None) -> Any:
        channel = self.site.buildProtocol(PEER)
        transport = StringTransport(peerAddress=PEER)
        channel.makeConnection(transport)
        headers = dict(headers or {})
        headers.setdefault("User-Agent", "tester/1")
        lines = [f"GET {path} HTTP/1.1", "Host: gw.example:8080"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        channel.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode())
        return transport, channel

    def status(self, transport: StringTransport) -> int:
        return int(transport.value().split(b" ", 2)[1])

    def spans(self) -> List[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def serverSpan(self) -> ReadableSpan:
        [span] = [s for s in self.spans() if s.kind == SpanKind.SERVER]
        return span

    def clientSpans(self) -> List[ReadableSpan]:
        return [s for s in self.spans() if s.kind == SpanKind.CLIENT]


PLAIN = {"a": {"name": "a", "urlPattern": "/a", "nodes": [{"cluster": "main"}]}}


def sentTraceparent(headers: Headers) -> Tuple[int, int, int]:
    """
    @return: the C{traceparent} a request was sent with, as integers.
    """
    parsed = parseTraceparent(headers.getRawHeaders(b"traceparent"))
    assert parsed is not None
    traceId, spanId, flags = parsed
    return int(traceId, 16), int(spanId, 16), flags


class PipelineSpanTests(SynchronousTestCase):
    """
    The spans of requests served by the real pipeline.
    """

    def test_interfaces(self) -> None:
        """
        The tracer provides L{ITracer}, the tracing client
        L{IUpstreamClient}.
        """
        pipeline = Pipeline(self)
        verifyObject(ITracer, pipeline.tracing.tracer)
        verifyObject(IUpstreamClient, pipeline.tracing.wrap(pipeline.client))

    def test_queryKeyNotRecorded(self) -> None:
        """
        An API key in the query, sent on upstream (C{hideCredentials}
        off), is in neither span: the server span's C{url.query} lacks it,
        the client span's C{url.full} is the target's path alone.
        """
        key = "k-0123456789abcdef0123456789"
        pipeline = Pipeline(self)
        api = {
            "name": "a",
            "urlPattern": "/a",
            "nodes": [{"cluster": "main"}],
            "auth": {"methods": ["key"], "keyNames": ["query:apikey"], "hideCredentials": False},
        }
        pipeline.serve(
            {"a": api},
            consumers={"c": {"name": "c", "credentials": [{"type": "key", "key": key}]}},
        )
        transport, _ = pipeline.request(f"/a?x=1&apikey={key}", {"traceparent": SAMPLED_PARENT})
        [(server, uri, headers, _)] = pipeline.client.calls
        self.assertEqual(uri, f"/a?x=1&apikey={key}".encode())
        pipeline.client.answer(0, 200)
        self.assertEqual(pipeline.status(transport), 200)
        self.assertEqual(pipeline.serverSpan().attributes["url.query"], "x=1")
        [client] = pipeline.clientSpans()
        port = 9001 if server == "s1" else 9002
        self.assertEqual(client.attributes["url.full"], f"http://127.0.0.1:{port}/a")
        for span in pipeline.spans():
            self.assertNotIn(key, repr(dict(span.attributes)))

    def test_longTextsCut(self) -> None:
        """
        A request's long texts (query, user agent, the upstream URL) are
        cut to L{ATTRIBUTE_LENGTH} characters in the spans: a span waiting
        in the export queue holds no more than that of what a client sent.
        """
        pipeline = Pipeline(self)
        pipeline.serve(PLAIN)
        query = "q=" + "x" * 5000
        transport, _ = pipeline.request(
            "/a?" + query, {"traceparent": SAMPLED_PARENT, "User-Agent": "u" * 5000}
        )
        pipeline.client.answer(0, 200)
        self.assertEqual(pipeline.status(transport), 200)
        attributes = pipeline.serverSpan().attributes
        self.assertEqual(attributes["url.query"], query[:ATTRIBUTE_LENGTH])
        self.assertEqual(attributes["user_agent.original"], "u" * ATTRIBUTE_LENGTH)
        [client] = pipeline.clientSpans()
        self.assertEqual(len(client.attributes["url.full"]), ATTRIBUTE_LENGTH)

    def test_continuesTheClientsTrace(self) -> None:
        """
        A request with a sampled C{traceparent}: its server span is in the
        client's trace, child of the client's span; the request sent
        upstream is a client span, child of the server span, and carries a
        C{traceparent} naming it and the client's C{tracestate} as it was.
        Both spans carry the HTTP and gateway attributes and the pipeline's
        times.
        """
        pipeline = Pipeline(self)
        pipeline.serve(PLAIN)
        transport, _ = pipeline.request(
            "/a?x=1", {"traceparent": SAMPLED_PARENT, "tracestate": "vendor=opaque,other=1"}
        )
        [(server, uri, headers, _)] = pipeline.client.calls
        pipeline.clock.advance(0.25)
        pipeline.client.answer(0, 201)
        self.assertEqual(pipeline.status(transport), 201)

        span = pipeline.serverSpan()
        [client] = pipeline.clientSpans()
        self.assertEqual(span.context.trace_id, int(TRACE_ID, 16))
        self.assertEqual(span.parent.span_id, int(CLIENT_SPAN, 16))
        self.assertTrue(span.parent.is_remote)
        self.assertEqual(client.context.trace_id, int(TRACE_ID, 16))
        self.assertEqual(client.parent.span_id, span.context.span_id)
        traceId, spanId, flags = sentTraceparent(headers)
        self.assertEqual(
            (traceId, spanId, flags & SAMPLED), (int(TRACE_ID, 16), client.context.span_id, 1)
        )
        self.assertEqual(headers.getRawHeaders(b"tracestate"), [b"vendor=opaque,other=1"])
        self.assertEqual(span.context.trace_state.get("vendor"), "opaque")

        self.assertEqual(span.name, "GET /a")
        self.assertEqual(
            {k: v for k, v in span.attributes.items()},
            {
                "http.request.method": "GET",
                "url.path": "/a",
                "url.query": "x=1",
                "url.scheme": "http",
                "server.address": "gw.example",
                "server.port": 8080,
                "client.address": "127.0.0.1",
                "network.peer.address": "127.0.0.1",
                "network.peer.port": 40000,
                "user_agent.original": "tester/1",
                "network.protocol.version": "1.1",
                "http.route": "/a",
                "http.response.status_code": 201,
                "gateway.api": "a",
                "gateway.cluster": "main",
                "gateway.server": server,
            },
        )
        self.assertEqual(span.status.status_code, StatusCode.UNSET)
        self.assertEqual(client.name, "GET")
        port = 9001 if server == "s1" else 9002
        self.assertEqual(
            dict(client.attributes),
            {
                "http.request.method": "GET",
                "server.address": "127.0.0.1",
                "server.port": port,
                "url.full": f"http://127.0.0.1:{port}/a?x=1",
                "network.protocol.version": "1.1",
                "gateway.server": server,
                "gateway.api": "a",
                "gateway.cluster": "main",
                "http.response.status_code": 201,
            },
        )
        self.assertEqual(client.end_time - client.start_time, 250_000_000)
        self.assertEqual(span.start_time, 1_700_000_000 * 10**9)
        self.assertEqual(span.end_time, client.end_time)
        resource = span.resource.attributes
        self.assertEqual(resource["service.name"], "gateway")

    def test_newTrace(self) -> None:
        """
        Without a C{traceparent} the server span starts a trace of its own;
        a C{tracestate} alone, which belongs to no trace then, is not sent
        upstream.
        """
        pipeline = Pipeline(self)
        pipeline.serve(PLAIN)
        pipeline.request("/a", {"tracestate": "vendor=x"})
        [(_, _, headers, _)] = pipeline.client.calls
        pipeline.client.answer(0)
        span = pipeline.serverSpan()
        self.assertIsNone(span.parent)
        [client] = pipeline.clientSpans()
        self.assertEqual(client.parent.span_id, span.context.span_id)
        self.assertEqual(
            sentTraceparent(headers)[:2], (span.context.trace_id, client.context.span_id)
        )
        self.assertIsNone(headers.getRawHeaders(b"tracestate"))

    def test_invalidTraceparent(self) -> None:
        """
        An invalid C{traceparent} is ignored: a new trace, whose context
        replaces it upstream.
        """
        pipeline = Pipeline(self)
        pipeline.serve(PLAIN)
        bad = f"00-{'0' * 32}-{CLIENT_SPAN}-01"
        pipeline.request("/a", {"traceparent": bad, "tracestate": "a=b"})
        [(_, _, headers, _)] = pipeline.client.calls
        pipeline.client.answer(0)
        span = pipeline.serverSpan()
        self.assertIsNone(span.parent)
        self.assertEqual(sentTraceparent(headers)[0], span.context.trace_id)
        self.assertIsNone(headers.getRawHeaders(b"tracestate"))

    def test_invalidTracestateQuietly(self) -> None:
        """
        A valid C{traceparent} with a C{tracestate} that breaks the rules
        (a member that is not C{key=value}, a key twice, more than 32
        members) continues the trace with no trace state on its spans, the
        header passed upstream as it came, and writes nothing to the log:
        a client chooses it, on every request.
        """
        records: List[logging.LogRecord] = []

        class Keep(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                records.append(record)

        handler = Keep()
        root = logging.getLogger()
        root.addHandler(handler)
        self.addCleanup(root.removeHandler, handler)
        many = ",".join(f"k{i}=v" for i in range(33))
        for state in ["a=1,BAD KEY=2", "a=1,a=2", many, "x" * 600]:
            pipeline = Pipeline(self)
            pipeline.serve(PLAIN)
            pipeline.request("/a", {"traceparent": SAMPLED_PARENT, "tracestate": state})
            [(_, _, headers, _)] = pipeline.client.calls
            pipeline.client.answer(0)
            span = pipeline.serverSpan()
            self.assertEqual(span.parent.span_id, int(CLIENT_SPAN, 16))
            self.assertEqual(len(span.context.trace_state), 0, state)
            self.assertEqual(headers.getRawHeaders(b"tracestate"), [state.encode()])
        self.assertEqual([r.getMessage() for r in records], [])

    def test_notSampledStillPropagates(self) -> None:
        """
        With C{sampleRatio} 0 nothing is recorded, yet the backend gets a
        C{traceparent}: the client's trace, not sampled, a span id of the
        gateway's for each attempt.
        """
        pipeline = Pipeline(self, sampleRatio=0.0)
        pipeline.serve(PLAIN)
        pipeline.request("/a")
        pipeline.request("/a", {"traceparent": UNSAMPLED_PARENT})
        pipeline.client.answer(0)
        pipeline.client.answer(1)
        self.assertEqual(pipeline.spans(), [])
        first, second = [sentTraceparent(h) for _, _, h, _ in pipeline.client.calls]
        self.assertEqual(first[2] & SAMPLED, 0)
        self.assertNotEqual(first[0], int(TRACE_ID, 16))
        self.assertEqual(second[0], int(TRACE_ID, 16))
        self.assertEqual(second[2] & SAMPLED, 0)
        self.assertNotEqual(second[1], int(CLIENT_SPAN, 16))

    def test_clientsDecisionFollowed(self) -> None:
        """
        A client's sampled flag decides (C{parentBased}, the default):
        sampled with C{sampleRatio} 0, not sampled with 1.
        """
        pipeline = Pipeline(self, sampleRatio=0.0)
        pipeline.serve(PLAIN)
        pipeline.request("/a", {"traceparent": SAMPLED_PARENT})
        pipeline.client.answer(0)
        self.assertEqual(len(pipeline.spans()), 2)

        pipeline = Pipeline(self, sampleRatio=1.0)
        pipeline.serve(PLAIN)
        pipeline.request("/a", {"traceparent": UNSAMPLED_PARENT})
        pipeline.client.answer(0)
        self.assertEqual(pipeline.spans(), [])

    def test_ratioAlone(self) -> None:
        """
        With C{parentBased: false}, C{sampleRatio} decides even for a
        sampled client: ratio 0 records nothing, and the backend is told
        the trace is not sampled.
        """
        pipeline = Pipeline(self, sampleRatio=0.0, parentBased=False)
        pipeline.serve(PLAIN)
        pipeline.request("/a", {"traceparent": SAMPLED_PARENT})
        pipeline.client.answer(0)
        self.assertEqual(pipeline.spans(), [])
        [(_, _, headers, _)] = pipeline.client.calls
        traceId, _, flags = sentTraceparent(headers)
        self.assertEqual((traceId, flags & SAMPLED), (int(TRACE_ID, 16), 0))

    def test_decisionAsTheSDKs(self) -> None:
        """
        The tracer's sampling decision is the SDK's samplers':
        C{parentbased_traceidratio} with C{parentBased}, C{traceidratio}
        without, for every ratio, for traces that start here and for
        clients' sampled and unsampled ones.
        """
        rng = Random(19)
        for ratio in (0.0, 0.01, 0.5, 1.0):
            for parentBased in (True, False):
                pipeline = Pipeline(self, sampleRatio=ratio, parentBased=parentBased)
                tracer = pipeline.tracing.tracer
                ratioSampler = TraceIdRatioBased(ratio)
                sampler = ParentBased(ratioSampler) if parentBased else ratioSampler
                for _ in range(500):
                    traceId = rng.getrandbits(128) or 1
                    flags = rng.choice([None, 0, 1, 3])
                    context = None
                    if flags is not None:
                        context = set_span_in_context(
                            NonRecordingSpan(SpanContext(traceId, 7, True, TraceFlags(flags)))
                        )
                    sdk = sampler.should_sample(context, traceId, "x").decision.is_sampled()
                    self.assertEqual(
                        tracer.sampled(traceId, flags), sdk, (ratio, parentBased, traceId, flags)
                    )

    def test_recordedAsDecided(self) -> None:
        """
        At ratio 0.5, the requests whose C{traceparent} upstream says
        sampled are exactly those whose spans were recorded, in the trace
        the decision was made on.
        """
        pipeline = Pipeline(self, sampleRatio=0.5)
        pipeline.serve(PLAIN)
        for i in range(60):
            pipeline.request("/a")
            pipeline.client.answer(i)
        sent = [sentTraceparent(h) for _, _, h, _ in pipeline.client.calls]
        sampled = {traceId for traceId, _, flags in sent if flags & SAMPLED}
        recorded = {s.context.trace_id for s in pipeline.spans()}
        self.assertEqual(recorded, sampled)
        self.assertTrue(10 < len(sampled) < 50, len(sampled))
        self.assertEqual(len({traceId for traceId, _, _ in sent}), 60)

    def test_retriesOneSpanPerAttempt(self) -> None:
        """
        A retried request has a client span per attempt, each a child of
        the server span, each sent with its own C{traceparent}: a refused
        connection, an answer in C{retryOn}, then the answer.
        """
        pipeline = Pipeline(self)
        pipeline.serve(
            {
                "a": {
                    "name": "a",
                    "urlPattern": "/a",
                    "nodes": [{"cluster": "three", "retries": 2, "retryOn": [503]}],
                }
            }
        )
        pipeline.client.refuseFirst = 1
        transport, _ = pipeline.request("/a")
        # The first refused, the next asked at once.
        self.assertEqual(len(pipeline.client.calls), 2)
        pipeline.client.answer(1, 503)
        pipeline.clock.advance(1)
        self.assertEqual(len(pipeline.client.calls), 3)
        pipeline.client.answer(2, 200)
        self.assertEqual(pipeline.status(transport), 200)
        self.assertEqual(len({c[0] for c in pipeline.client.calls}), 3)

        span = pipeline.serverSpan()
        attempts = sorted(pipeline.clientSpans(), key=lambda s: s.start_time)
        self.assertEqual(len(attempts), 3)
        self.assertEqual({s.parent.span_id for s in attempts}, {span.context.span_id})
        self.assertEqual(
            [s.attributes.get("gateway.server") for s in attempts],
            [c[0] for c in pipeline.client.calls],
        )
        refused, unavailable, good = attempts
        self.assertEqual(refused.attributes["error.type"], "UpstreamConnectError")
        self.assertEqual(refused.status.status_code, StatusCode.ERROR)
        self.assertEqual(unavailable.attributes["http.response.status_code"], 503)
        self.assertEqual(unavailable.attributes["error.type"], "503")
        self.assertEqual(unavailable.attributes["http.request.resend_count"], 1)
        self.assertEqual(good.attributes["http.response.status_code"], 200)
        self.assertEqual(good.attributes["http.request.resend_count"], 2)
        self.assertEqual(good.status.status_code, StatusCode.UNSET)
        sent = [sentTraceparent(h)[1] for _, _, h, _ in pipeline.client.calls]
        self.assertEqual(sent, [s.context.span_id for s in attempts])

    def test_aggregationOneSpanPerNode(self) -> None:
        """
        An aggregation has one client span per node, each a child of the
        server span, with its node's cluster.
        """
        pipeline = Pipeline(self)
        pipeline.serve(
            {
                "agg": {
                    "name": "agg",
                    "urlPattern": "/agg",
                    "nodes": [
                        {"cluster": "main", "attrName": "x", "urlRewrite": "/x"},
                        {"cluster": "other", "attrName": "y", "urlRewrite": "/y"},
                        {"cluster": "main", "attrName": "z", "urlRewrite": "/z"},
                    ],
                }
            }
        )
        transport, _ = pipeline.request("/agg")
        self.assertEqual(len(pipeline.client.calls), 3)
        for i in range(3):
            pipeline.client.answer(i, 200, b'{"n": %d}' % (i,))
        self.assertEqual(pipeline.status(transport), 200)
        span = pipeline.serverSpan()
        nodes = pipeline.clientSpans()
        self.assertEqual(len(nodes), 3)
        self.assertEqual({s.parent.span_id for s in nodes}, {span.context.span_id})
        byPath = {s.attributes["url.full"].rpartition("/")[2]: s for s in nodes}
        self.assertEqual(
            {path: s.attributes["gateway.cluster"] for path, s in byPath.items()},
            {"x": "main", "y": "other", "z": "main"},
        )
        sent = {uri: sentTraceparent(h)[1] for _, uri, h, _ in pipeline.client.calls}
        self.assertEqual(sent, {b"/" + p.encode(): s.context.span_id for p, s in byPath.items()})
        self.assertNotIn("gateway.cluster", span.attributes)

    def test_mirror(self) -> None:
        """
        A mirror copy has a client span of its own, a child of the server
        span, with the mirror's cluster.
        """
        pipeline = Pipeline(self)
        pipeline.serve(
            PLAIN,
            {
                "copy": {
                    "name": "copy",
                    "api": "a",
                    "cluster": "other",
                    "strategy": "mirror",
                    "trafficRate": 100,
                    "conditions": [],
                }
            },
        )
        transport, _ = pipeline.request("/a")
        names = [c[0] for c in pipeline.client.calls]
        self.assertIn("m1", names)
        for i in range(len(names)):
            pipeline.client.answer(i)
        span = pipeline.serverSpan()
        [mirror] = [s for s in pipeline.clientSpans() if s.attributes["gateway.server"] == "m1"]
        self.assertEqual(mirror.parent.span_id, span.context.span_id)
        self.assertEqual(mirror.attributes["gateway.cluster"], "other")
        self.assertEqual(span.attributes["gateway.cluster"], "main")

    def test_gatewaysOwnAnswer(self) -> None:
        """
        A request no API matches has a server span with the 404 and no
        client span.
        """
        pipeline = Pipeline(self)
        pipeline.serve(PLAIN)
        transport, _ = pipeline.request("/nothing")
        self.assertEqual(pipeline.status(transport), 404)
        [span] = pipeline.spans()
        self.assertEqual(span.name, "GET")
        self.assertEqual(span.attributes["http.response.status_code"], 404)
        self.assertNotIn("gateway.api", span.attributes)

    def test_upstreamFailure(self) -> None:
        """
        A request whose server fails gets a 502; its server span is an
        error, of the failure's kind.
        """
        pipeline = Pipeline(self)
        pipeline.serve({"a": {"name": "a", "urlPattern": "/a", "nodes": [{"cluster": "other"}]}})
        pipeline.client.refuse.add("m1")
        transport, _ = pipeline.request("/a")
        self.assertEqual(pipeline.status(transport), 502)
        span = pipeline.serverSpan()
        self.assertEqual(span.attributes["http.response.status_code"], 502)
        self.assertEqual(span.attributes["error.type"], "refused")
        self.assertEqual(span.attributes["gateway.outcome"], "refused")
        self.assertEqual(span.status.status_code, StatusCode.ERROR)

    def test_clientGone(self) -> None:
        """
        A client that leaves before its answer: the upstream call is
        cancelled (its span says so) and the server span ends as an error
        without a status.
        """
        pipeline = Pipeline(self)
        pipeline.serve(PLAIN)
        _, channel = pipeline.request("/a")
        channel.connectionLost(Failure(ConnectionError("gone")))
        span = pipeline.serverSpan()
        [client] = pipeline.clientSpans()
        self.assertEqual(client.attributes["error.type"], "cancelled")
        self.assertEqual(span.attributes["error.type"], "client_gone")
        self.assertNotIn("http.response.status_code", span.attributes)

    def test_consumer(self) -> None:
        """
        The exchange's consumer, when it has one, is C{gateway.consumer} on
        the server span and on the client spans.
        """

        class WithConsumer(Exchange):
            __slots__ = ("consumer",)

            def __init__(self, *args: Any) -> None:
                Exchange.__init__(self, *args)
                self.consumer = "alice"

        self.patch(resourceModule, "Exchange", WithConsumer)
        pipeline = Pipeline(self)
        pipeline.serve(PLAIN)
        pipeline.request("/a")
        pipeline.client.answer(0)
        self.assertEqual(pipeline.serverSpan().attributes["gateway.consumer"], "alice")
        self.assertEqual(pipeline.clientSpans()[0].attributes["gateway.consumer"], "alice")

    def test_untracedRequestsPassThrough(self) -> None:
        """
        The tracing client sends a request without a C{traceparent} (not a
        traced exchange's: a filter took the header away) as it is, without
        a span.
        """
        pipeline = Pipeline(self)
        client = TracingClient(pipeline.client, pipeline.tracing.tracer)
        headers = Headers({b"x": [b"y"]})
        answers: List[Any] = []
        backend = type("B", (), {"name": "s1", "host": "127.0.0.1", "port": 1})()
        client.send(backend, b"GET", b"/", headers, None, None, answers.append, answers.append)
        pipeline.client.answer(0)
        self.assertIs(pipeline.client.calls[0][2], headers)
        self.assertEqual(len(answers), 1)
        self.assertEqual(pipeline.spans(), [])

    def test_headersOfTheCallerKept(self) -> None:
        """
        The headers the pipeline hands the client keep the server span's
        C{traceparent}: each attempt sends a copy naming its own span.
        """
        pipeline = Pipeline(self)
        pipeline.serve(PLAIN)
        pipeline.request("/a")
        pipeline.client.answer(0)
        span = pipeline.serverSpan()
        [(_, _, sent, _)] = pipeline.client.calls
        self.assertNotEqual(sentTraceparent(sent)[1], span.context.span_id)

    def test_noTracerNoHeader(self) -> None:
        """
        Without a tracer, the pipeline adds no C{traceparent}: the
        client's goes upstream as it came.
        """
        clock = Clock()
        client = Client()
        manager = SnapshotManager(FilterRegistry({}), clock)
        manager.apply(
            StoreState(1, {"servers": SERVERS, "clusters": CLUSTERS, "apis": PLAIN, "routings": {}})
        )
        site = LimitedSite(
            GatewayResource(manager, client, clock), reactor=clock, requestFactory=GatewayRequest
        )
        channel = site.buildProtocol(PEER)
        channel.makeConnection(StringTransport(peerAddress=PEER))
        channel.dataReceived(b"GET /a HTTP/1.1\r\nHost: gw\r\n\r\n")
        channel.dataReceived(
            f"GET /a HTTP/1.1\r\nHost: gw\r\ntraceparent: {SAMPLED_PARENT}\r\n\r\n".encode()
        )
        self.assertIsNone(client.calls[0][2].getRawHeaders(b"traceparent"))


# -- export -------------------------------------------------------------------------


class Export:
    """
    An export function whose batches wait for the test.
    """

    def __init__(self) -> None:
        self.batches: List[Tuple[List[Any], Deferred]] = []

    def __call__(self, spans: List[Any]) -> Deferred:
        d: Deferred = Deferred()
        self.batches.append((list(spans), d))
        return d


class ReactorSpanProcessorTests(SynchronousTestCase):
    """
    L{ReactorSpanProcessor}: the bounded queue, batches through the
    reactor, the counters.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.export = Export()
        self.processor = ReactorSpanProcessor(
            self.export, self.clock, maxQueueSize=5, maxExportBatchSize=2, scheduleDelay=1.0
        )
        self.processor.start()

    def test_batchesOnTheTimer(self) -> None:
        """
        Spans wait for the timer; then one batch goes, the next after it
        was taken.
        """
        self.processor.on_end("s1")
        self.clock.advance(0)
        self.assertEqual(self.export.batches, [])
        self.clock.advance(1.0)
        [(batch, d)] = self.export.batches
        self.assertEqual(batch, ["s1"])
        d.callback(0)
        self.assertEqual(
            self.processor.counts(), {"exported": 1, "dropped": 0, "failed": 0, "queued": 0}
        )

    def test_fullBatchGoesAtOnce(self) -> None:
        """
        A full batch is exported on the next turn of the reactor, not
        while the span ends; one export at a time.
        """
        self.processor.on_end("s1")
        self.processor.on_end("s2")
        self.assertEqual(self.export.batches, [])
        self.clock.advance(0)
        self.assertEqual([b for b, _ in self.export.batches], [["s1", "s2"]])
        self.processor.on_end("s3")
        self.processor.on_end("s4")
        self.clock.advance(0)
        self.assertEqual(len(self.export.batches), 1)
        self.export.batches[0][1].callback(0)
        self.clock.advance(0)
        self.assertEqual([b for b, _ in self.export.batches][1], ["s3", "s4"])

    def test_queueFullDrops(self) -> None:
        """
        Beyond C{maxQueueSize} spans are dropped and counted.
        """
        for i in range(8):
            self.processor.on_end(f"s{i}")
        # Two went into the export, which hangs; the queue took 5.
        self.clock.advance(0)
        self.assertEqual(self.processor.counts()["dropped"], 3)
        for i in range(4):
            self.processor.on_end(f"t{i}")
        self.assertEqual(
            self.processor.counts(), {"exported": 0, "dropped": 5, "failed": 0, "queued": 5}
        )

    def test_failedExportCounted(self) -> None:
        """
        A batch the collector did not take is counted as failed; while it
        fails, full batches wait for the timer (one try per interval);
        once it answers again they go at once.
        """
        for i in range(2):
            self.processor.on_end(f"s{i}")
        self.clock.advance(0)
        self.export.batches[0][1].errback(Failure(ExportFailed("answered 503")))
        self.assertEqual(self.processor.counts()["failed"], 2)
        self.processor.on_end("a")
        self.processor.on_end("b")
        self.clock.advance(0)
        self.assertEqual(len(self.export.batches), 1)
        self.clock.advance(1.0)
        self.assertEqual(len(self.export.batches), 2)
        self.export.batches[1][1].callback(0)
        self.processor.on_end("c")
        self.processor.on_end("d")
        self.clock.advance(0)
        self.assertEqual(len(self.export.batches), 3)
        self.assertEqual(self.processor.counts()["exported"], 2)

    def test_partialSuccess(self) -> None:
        """
        Spans the collector rejects are counted as failed.
        """
        self.processor.on_end("s1")
        self.processor.on_end("s2")
        self.clock.advance(0)
        self.export.batches[0][1].callback(1)
        self.assertEqual(self.processor.counts()["exported"], 1)
        self.assertEqual(self.processor.counts()["failed"], 1)

    def test_exportRaising(self) -> None:
        """
        An export that raises fails its batch; the processor goes on.
        """

        def broken(spans: Any) -> Deferred:
            raise ValueError("bug")

        processor = ReactorSpanProcessor(broken, self.clock, maxExportBatchSize=1)
        processor.on_end("s")
        self.clock.advance(0)
        self.assertEqual(processor.counts()["failed"], 1)

    def test_flush(self) -> None:
        """
        L{ReactorSpanProcessor.flush} exports everything queued, batch
        after batch, the one in flight first.
        """
        for i in range(5):
            self.processor.on_end(f"s{i}")
        self.clock.advance(0)
        done = self.processor.flush(10)
        self.assertNoResult(done)
        for i in range(3):
            self.export.batches[i][1].callback(0)
        self.successResultOf(done)
        self.assertEqual(self.processor.counts()["exported"], 5)
        # Its own time limit is gone; the export timer is left.
        self.assertEqual([c.getTime() for c in self.clock.getDelayedCalls()], [1.0])

    def test_flushGivesUp(self) -> None:
        """
        A flush gives up after its timeout.
        """
        self.processor.on_end("s")
        done = self.processor.flush(2)
        self.clock.advance(2)
        self.successResultOf(done)

    def test_shutdown(self) -> None:
        """
        After C{shutdown} no timer is left and nothing is exported.
        """
        self.processor.on_end("a")
        self.processor.on_end("b")
        self.processor.shutdown()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(5)
        self.assertEqual(self.export.batches, [])
        self.assertTrue(self.processor.force_flush() is False)
        self.assertEqual(len(self.export.batches), 1)


class Collector(ScriptedUpstreamClient):
    def __init__(self, answers: List[Any]) -> None:
        self.answers = answers
        self.sent: List[Tuple[Any, bytes, bytes, Headers, bytes, Optional[float]]] = []

    def respond(self, backend, method, uri, headers, bodyProducer, timeout):
        self.sent.append((backend, method, uri, headers, bodyProducer._body, timeout))
        answer = self.answers.pop(0)
        return fail(answer) if isinstance(answer, Exception) else succeed(answer)


def sdkTracer(serviceName: str = "svc") -> Tuple[Any, InMemorySpanExporter]:
    """
    @return: a tracer of the SDK's own, and where its spans end up.
    """
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": serviceName}), shutdown_on_exit=False
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test", "1.0"), exporter


def finishedSpans(count: int) -> List[ReadableSpan]:
    """
    @return: C{count} spans made and ended by the SDK's tracer.
    """
    tracer, exporter = sdkTracer()
    for i in range(count):
        tracer.start_span(f"span{i}", start_time=i).end(end_time=i + 1)
    return list(exporter.get_finished_spans())


class OTLPHTTPExporterTests(SynchronousTestCase):
    """
    L{OTLPHTTPExporter}: a batch as one OTLP/HTTP request.
    """

    def test_request(self) -> None:
        """
        A batch is one C{POST} of an C{ExportTraceServiceRequest} in
        protobuf to the collector's address and path, with the configured
        headers and timeout.
        """
        collector = Collector([Answer(200, b"")])
        exporter = OTLPHTTPExporter(
            collector, "127.0.0.1", 4318, b"/v1/traces", {"Authorization": "Bearer k"}, 3.0
        )
        spans = finishedSpans(2)
        self.assertEqual(self.successResultOf(exporter.export(spans)), 0)
        [(backend, method, uri, headers, body, timeout)] = collector.sent
        self.assertEqual(
            (backend.host, backend.port, method, uri, timeout),
            ("127.0.0.1", 4318, b"POST", b"/v1/traces", 3.0),
        )
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/x-protobuf"])
        self.assertEqual(headers.getRawHeaders(b"authorization"), [b"Bearer k"])
        decoded = ExportTraceServiceRequest()
        decoded.ParseFromString(body)
        [resourceSpans] = decoded.resource_spans
        service = {a.key: a.value.string_value for a in resourceSpans.resource.attributes}
        self.assertEqual(service["service.name"], "svc")
        names = [s.name for scope in resourceSpans.scope_spans for s in scope.spans]
        self.assertEqual(sorted(names), ["span0", "span1"])

    def test_errorStatus(self) -> None:
        """
        An error status fails the export.
        """
        collector = Collector([Answer(503, b"")])
        exporter = OTLPHTTPExporter(collector, "h", 1, b"/", {}, 1.0)
        self.failureResultOf(exporter.export(finishedSpans(1)), ExportFailed)

    def test_noCollector(self) -> None:
        """
        A collector that cannot be reached fails the export with the
        client's error.
        """
        collector = Collector([UpstreamConnectError("refused")])
        exporter = OTLPHTTPExporter(collector, "h", 1, b"/", {}, 1.0)
        self.failureResultOf(exporter.export(finishedSpans(1)), UpstreamConnectError)

    def test_partialSuccess(self) -> None:
        """
        A partial success answers how many spans were rejected.
        """
        answer = ExportTraceServiceResponse()
        answer.partial_success.rejected_spans = 2
        answer.partial_success.error_message = "too old"
        collector = Collector([Answer(200, answer.SerializeToString())])
        exporter = OTLPHTTPExporter(collector, "h", 1, b"/", {}, 1.0)
        self.assertEqual(self.successResultOf(exporter.export(finishedSpans(3))), 2)


# -- the whole: service, counters, metrics --------------------------------------------


class TracingTests(SynchronousTestCase):
    """
    L{gateway.telemetry.tracing.spans.Tracing} with its real processor and
    exporter, and its counters in the stats and metrics.
    """

    def test_exportThroughTheReactor(self) -> None:
        """
        The spans of a request reach the collector on the export timer, as
        one OTLP request; the service exports what is left when it stops.
        """
        clock = Clock()
        collector = Collector([Answer(200, b""), Answer(200, b"")])
        tracing = makeTracing(
            TracingConfig(otlp="http://127.0.0.1:4318/v1/traces", scheduleDelay=2.0),
            clock,
            exportClient=collector,
        )
        tracing.service.startService()
        one, two = finishedSpans(2)
        tracing.processor.on_end(one)
        clock.advance(1.9)
        self.assertEqual(collector.sent, [])
        clock.advance(0.1)
        self.assertEqual(len(collector.sent), 1)
        tracing.processor.on_end(two)
        self.successResultOf(tracing.service.stopService())
        self.assertEqual(len(collector.sent), 2)
        self.assertEqual(tracing.counts(), {"exported": 2, "dropped": 0, "failed": 0, "queued": 0})
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_statsAndMetrics(self) -> None:
        """
        The counters are in the stats (summed over workers) and in
        C{/metrics}: spans exported, dropped by reason, queued; without
        tracing, neither has them.
        """
        clock = Clock()
        stats = Stats(clock)
        text = generate_latest(metricsRegistry(stats, None, None, clock)).decode()
        self.assertNotIn("gateway_tracing", text)
        self.assertNotIn("tracing", stats.snapshot())
        counts = {"exported": 7, "dropped": 3, "failed": 2, "queued": 1}
        stats.followTracing(lambda: counts)
        self.assertEqual(stats.snapshot()["tracing"], counts)
        merged = mergeSnapshots([stats.snapshot(), stats.snapshot(), Stats(clock).snapshot()])
        self.assertEqual(
            merged["tracing"], {"exported": 14, "dropped": 6, "failed": 4, "queued": 2}
        )
        workers = SnapshotStats(lambda: merged, clock)
        text = generate_latest(metricsRegistry(workers, None, None, clock)).decode()
        self.assertIn("gateway_tracing_spans_exported_total 14.0", text)
        self.assertIn('gateway_tracing_spans_dropped_total{reason="queue-full"} 6.0', text)
        self.assertIn('gateway_tracing_spans_dropped_total{reason="export-failed"} 4.0', text)
        self.assertIn("gateway_tracing_spans_queued 2.0", text)


class CompositionTests(SynchronousTestCase):
    """
    L{gateway.process.root.makeService} with and without C{tracing:}.
    """

    def make(self, **extra: Any) -> Any:
        from gateway.process.root import makeService
        from gateway.process.startup import Abort

        config = {
            "proxy": {"listen": "tcp:18080:interface=127.0.0.1", "workers": 1, "accessLog": False},
            "store": "memory:",
        }
        config.update(extra)
        reactor = MemoryReactorClock()
        return makeService(parseConfig(config), reactor, FilterRegistry({}), Abort(reactor))

    def test_withTracing(self) -> None:
        """
        With C{tracing:} the proxy gets a tracer and a tracing client, and
        the C{tracing} service comes before the proxy's (it stops after
        the proxy drained).
        """
        service = self.make(tracing={"sampleRatio": 0.5})
        names = [child.name for child in service]
        self.assertLess(names.index("tracing"), names.index("proxy"))
        resource = service.getServiceNamed("proxy").resource
        self.assertIsNotNone(resource._tracer)
        self.assertIsInstance(resource._client, TracingClient)

    def test_withoutTracing(self) -> None:
        """
        Without it there is no tracer, no tracing client, no service.
        """
        service = self.make()
        self.assertNotIn("tracing", [child.name for child in service])
        resource = service.getServiceNamed("proxy").resource
        self.assertIsNone(resource._tracer)
        self.assertNotIsInstance(resource._client, TracingClient)
