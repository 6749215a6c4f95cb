"""
OpenTelemetry tracing of the proxy's requests (the C{tracing:} section of
the config file, L{gateway.model.tracing.TracingConfig}).

What the pipeline sees of it is L{ITracer}: one call per request, made only
when tracing is on (a check of one attribute when it is off).  The rest is
put together by the composition root (L{gateway.process.root}) with
L{makeTracing}, which imports the OpenTelemetry SDK
(L{gateway.telemetry.tracing.spans}) only then: a gateway without
C{tracing:} never loads it.

  - L{gateway.telemetry.tracing.context}: the W3C C{traceparent} header;
  - L{gateway.telemetry.tracing.spans}: the server span of a request, the
    client span of each upstream attempt (L{TracingClient
    <gateway.telemetry.tracing.spans.TracingClient>}, an
    L{gateway.interfaces.IUpstreamClient} around the real one);
  - L{gateway.telemetry.tracing.export}: finished spans queued and sent to
    the collector in batches (in the OTLP protobuf format, by the SDK's
    encoder), through the reactor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zope.interface import Interface

if TYPE_CHECKING:
    from gateway.telemetry.tracing.spans import Tracing


class ITracer(Interface):
    """
    Traces requests as the proxy serves them.
    """

    def requestStarted(exchange):
        """
        A request entered the pipeline: start its server span, continuing
        the trace of the client's C{traceparent} when it sent a valid one,
        and put the span's context in the exchange's C{upstreamHeaders}
        (where the upstream client finds it: see
        L{gateway.telemetry.tracing.spans.TracingClient}).  The span ends
        when the request is over.

        @param exchange: the request's L{gateway.pipeline.exchange.Exchange}.
        """


def makeTracing(config: Any, reactor: Any, **kw: Any) -> Tracing:
    """
    Import the OpenTelemetry SDK and set tracing up.

    @param config: the L{gateway.model.tracing.TracingConfig}.
    @param reactor: the reactor spans are timed and exported with.
    @param kw: passed to L{gateway.telemetry.tracing.spans.Tracing}.
    @return: a L{gateway.telemetry.tracing.spans.Tracing}.
    """
    from gateway.telemetry.tracing.spans import Tracing

    return Tracing(config, reactor, **kw)
