"""
Finished spans on their way to the collector: queued, batched, encoded in
the OTLP protobuf format and sent over HTTP, through the reactor.

Why not the SDK's C{BatchSpanProcessor} and C{OTLPSpanExporter}: they
export from a thread of their own with C{requests}, blocking in that
thread.  That works next to Twisted (the reactor thread only appends to a
queue), but it buys nothing here and costs several things:

  - no CPU is saved: under the GIL (and PyPy's) encoding a batch in a
    thread takes the same CPU from the proxy as encoding it on the reactor
    thread, and the sending is non-blocking on the reactor anyway;
  - the SDK's processor drops spans from a full queue without counting
    them (it logs once), and the exporter retries a failed batch for up to
    64 s with C{sleep}s, during which the queue overflows: what is lost
    when the collector is away could not be counted and shown;
  - a thread and its lock would have to be restarted after the fork of a
    proxy worker (the SDK registers C{os.register_at_fork} for that) and
    stopped at shutdown, and could not be driven by a L{task.Clock} in
    tests;
  - the exporter would bring C{requests}, a second HTTP client, where the
    gateway has its own (L{gateway.http.client}) with keep-alive pooling
    and timeouts made for it.

So the L{ReactorSpanProcessor} below is a span processor of the SDK whose
C{on_end} appends to a bounded queue (and counts what a full queue drops),
and the reactor sends one batch at a time with L{OTLPHTTPExporter}: an
C{ExportTraceServiceRequest} made by the SDK's own OTLP encoder (that of
its OTLP exporters, C{encode_spans}), C{POST}ed as
C{application/x-protobuf} with the gateway's HTTP client, as the OTLP/HTTP
exporter does.  Nothing on the
request path waits for the collector: a span's end is an append, an
export happens on a timer (or when a batch is full) and never more than
one at a time; a collector that is away or slow costs one failed or
pending request per interval, the spans of that batch (counted as
C{failed}) and, once the queue is full, the spans that do not fit
(counted as C{dropped}).
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Deque, Dict, List, Mapping, Optional, Sequence

import attrs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers

from gateway.http.body import BytesBodyProducer
from gateway.http.client import request as upstreamRequest

log = Logger()


class ExportFailed(Exception):
    """
    The collector did not take a batch (an error status).
    """


@attrs.frozen
class Collector:
    """
    The collector's address, as the upstream client takes one.
    """

    host: str
    port: int
    name: str = "otlp-collector"
    #: (Plain HTTP: C{tracing.otlp} takes C{http://} URLs only.)
    tls: None = None


class _Drain(Protocol):
    def dataReceived(self, data: bytes) -> None:
        pass


#: What the collector's answer may hold at most, to be read for a partial
#: success (larger ones are only drained).
_MAX_ANSWER = 65_536


class OTLPHTTPExporter:
    """
    Sends batches of spans to an OTLP/HTTP collector
    (U{https://opentelemetry.io/docs/specs/otlp/#otlphttp}).

    @param client: the L{gateway.interfaces.IUpstreamClient} to send with
        (one of its own: the proxy's pools and stats are not the
        collector's).
    @param host: the collector's host.
    @param port: its port.
    @param target: the request target, e.g. C{b"/v1/traces"}.
    @param headers: extra request headers, C{{name: value}}.
    @param timeout: seconds to wait for the collector's answer.
    """

    def __init__(
        self,
        client: Any,
        host: str,
        port: int,
        target: bytes,
        headers: Mapping[str, str],
        timeout: float,
    ) -> None:
        self._client = client
        self._collector = Collector(host, port)
        self._target = target
        self._timeout = timeout
        self._headers = [(b"content-type", b"application/x-protobuf")] + [
            (name.encode("ascii"), value.encode("ascii")) for name, value in headers.items()
        ]

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        """
        @return: C{spans} as a serialised C{ExportTraceServiceRequest}.
        """
        data: bytes = encode_spans(spans).SerializeToString()
        return data

    def export(self, spans: Sequence[ReadableSpan]) -> Deferred[int]:
        """
        Send a batch.

        @return: a L{Deferred} that fires with the number of spans the
            collector rejected (a partial success, 0 in general), or
            fails: L{ExportFailed} for an error status, the upstream
            client's errors when there was no answer.
        """
        try:
            body = self.encode(spans)
        except Exception:
            return defer.fail()
        headers = Headers()
        for name, value in self._headers:
            headers.addRawHeader(name, value)
        d = upstreamRequest(
            self._client,
            self._collector,
            b"POST",
            self._target,
            headers,
            BytesBodyProducer(body),
            self._timeout,
        )
        return d.addCallback(self._answered)

    def _answered(self, response: Any) -> int:
        code = response.code
        body = getattr(response, "body", None)
        if body is None:
            response.deliverBody(_Drain())
        if not 200 <= code < 300:
            raise ExportFailed(f"the collector answered {code}")
        if body and len(body) <= _MAX_ANSWER:
            answer = ExportTraceServiceResponse()
            try:
                answer.ParseFromString(body)
            except Exception:
                # (A 2xx with some other body still took the spans.)
                return 0
            rejected = answer.partial_success.rejected_spans
            if rejected:
                log.warn(
                    "the collector rejected {n} spans: {message}",
                    n=rejected,
                    message=answer.partial_success.error_message,
                )
            return int(rejected)
        return 0


class ReactorSpanProcessor(SpanProcessor):
    """
    A span processor of the SDK that queues finished, sampled spans (up to
    C{maxQueueSize}; more are dropped and counted) and has the reactor
    export them in batches of up to C{maxExportBatchSize}: every
    C{scheduleDelay} seconds, and as soon as a batch is full while the
    collector answers.  One export is in flight at a time.

    @ivar exported: spans the collector took.
    @ivar dropped: spans dropped because the queue was full.
    @ivar failed: spans of batches the collector did not take (away,
        too slow, an error status, or rejected by it).
    """

    def __init__(
        self,
        export: Callable[[Sequence[ReadableSpan]], Deferred[int]],
        reactor: Any,
        maxQueueSize: int = 2048,
        maxExportBatchSize: int = 512,
        scheduleDelay: float = 1.0,
        where: str = "the collector",
    ) -> None:
        """
        @param export: sends a batch: a L{Deferred} that fires with the
            number of spans rejected, or fails (see L{OTLPHTTPExporter.export}).
        @param where: the collector, in words, for the log.
        """
        self._export = export
        self._reactor = reactor
        self._maxQueueSize = maxQueueSize
        self._batchSize = min(maxExportBatchSize, maxQueueSize)
        self._delay = scheduleDelay
        self._where = where
        self._queue: Deque[ReadableSpan] = collections.deque()
        self._exporting: Optional[Deferred[int]] = None
        self._timer: Any = None
        self._soon: Any = None
        #: Whether the last export succeeded: only then does a full batch
        #: go at once (a collector that is away is tried once per interval).
        self._answering = True
        self._stopped = False
        self.exported = 0
        self.dropped = 0
        self.failed = 0

    # -- the SDK's side ---------------------------------------------------------

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        queue = self._queue
        if len(queue) >= self._maxQueueSize:
            self.dropped += 1
            return
        queue.append(span)
        if (
            len(queue) >= self._batchSize
            and self._answering
            and self._exporting is None
            and self._soon is None
            and not self._stopped
        ):
            # Not from here: this is the end of a request's span.
            self._soon = self._reactor.callLater(0, self._exportSoon)

    def shutdown(self) -> None:
        """
        Stop exporting (what is queued stays queued: see L{flush}).
        """
        self._stopped = True
        for call in (self._timer, self._soon):
            if call is not None and call.active():
                call.cancel()
        self._timer = self._soon = None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """
        Start exporting what is queued; the SDK expects this to block,
        which the reactor must not: use L{flush} for a L{Deferred}.

        @return: whether nothing is left to export.
        """
        if self._exporting is None and self._queue:
            self._exportBatch()
        return not self._queue and self._exporting is None

    # -- the reactor's side -----------------------------------------------------

    def start(self) -> None:
        """
        Start the export timer.
        """
        self._stopped = False
        if self._timer is None:
            self._timer = self._reactor.callLater(self._delay, self._tick)

    def counts(self) -> Dict[str, int]:
        """
        @return: C{exported}, C{dropped} (queue full), C{failed} (the
            collector did not take them) and C{queued} spans.
        """
        return {
            "exported": self.exported,
            "dropped": self.dropped,
            "failed": self.failed,
            "queued": len(self._queue),
        }

    def _tick(self) -> None:
        self._timer = self._reactor.callLater(self._delay, self._tick)
        if self._exporting is None and self._queue:
            self._exportBatch()

    def _exportSoon(self) -> None:
        self._soon = None
        if self._exporting is None and len(self._queue) >= self._batchSize:
            self._exportBatch()

    def _exportBatch(self) -> Deferred[int]:
        soon = self._soon
        if soon is not None:
            self._soon = None
            if soon.active():
                soon.cancel()
        queue = self._queue
        batch: List[ReadableSpan] = [
            queue.popleft() for _ in range(min(len(queue), self._batchSize))
        ]
        try:
            d = self._export(batch)
        except Exception:
            d = defer.fail()
        self._exporting = d
        d.addCallbacks(
            self._exported, self._exportFailed, callbackArgs=(batch,), errbackArgs=(batch,)
        )
        return d

    def _exported(self, rejected: int, batch: List[ReadableSpan]) -> int:
        self._exporting = None
        rejected = min(max(0, rejected), len(batch))
        self.exported += len(batch) - rejected
        self.failed += rejected
        if not self._answering:
            log.info("{where} answers again: spans are exported", where=self._where)
            self._answering = True
        if len(self._queue) >= self._batchSize and not self._stopped and self._soon is None:
            self._soon = self._reactor.callLater(0, self._exportSoon)
        return rejected

    def _exportFailed(self, failure: Failure, batch: List[ReadableSpan]) -> int:
        self._exporting = None
        self.failed += len(batch)
        if self._answering:
            # Once per outage: the counters say how much is lost.
            log.warn(
                "{where} did not take {n} spans ({why}): spans are dropped, and counted, "
                "until it does",
                where=self._where,
                n=len(batch),
                why=failure.getErrorMessage() or repr(failure.value),
            )
            self._answering = False
        return len(batch)

    def flush(self, timeout: float) -> Deferred[None]:
        """
        Export everything queued, a batch after the other (the one in
        flight first), giving up after C{timeout} seconds.

        @return: a L{Deferred} that fires with L{None} when done (or given
            up); it never fails.
        """
        deadline = self._reactor.seconds() + timeout
        done: Deferred[None] = Deferred()

        def giveUp() -> None:
            if not done.called:
                done.callback(None)

        timer = self._reactor.callLater(timeout, giveUp)

        def exportNext(_: object = None) -> object:
            if done.called:
                return _
            if self._reactor.seconds() >= deadline or (self._exporting is None and not self._queue):
                timer.cancel()
                done.callback(None)
                return _
            pending = self._exporting
            if pending is None:
                pending = self._exportBatch()
            pending.addBoth(exportNext)
            return _

        exportNext()
        return done
