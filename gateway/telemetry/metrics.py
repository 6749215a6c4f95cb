"""
Prometheus metrics, served by the admin at C{GET /metrics}.

Nothing is counted here: L{GatewayCollector} reads the L{gateway.telemetry.stats.Stats}
counters and the live L{gateway.balancing.backend.Backend} state when Prometheus
scrapes, so the request path pays nothing for metrics.  The collector lives
in a private L{CollectorRegistry}, not the process-wide default one, so
several gateways in one process (tests) never mix their numbers.

Labels are the names of configured APIs and servers (and fixed sets such
as error kinds and breaker states), never anything a client sends, so the
number of series is bounded by the configuration.

Metrics::

  gateway_requests_total{api}                      answers per API
  gateway_errors_total{api,kind}                   4xx 5xx timeout refused broken unavailable
                                                   aborted (the client left: 499)
  gateway_rejects_total{api,reason}                rateLimit breaker access other
  gateway_request_duration_seconds{api}            histogram, arrival to status
  gateway_server_requests_total{server}            answers whose request went to it last
  gateway_server_errors_total{server,kind}
  gateway_server_request_duration_seconds{server}  histogram
  gateway_upstream_requests_total{server}          requests sent to it (retries, nodes, mirrors)
  gateway_upstream_failures_total{server}          those that failed
  gateway_server_active_requests{server}           in flight now
  gateway_server_latency_ewma_seconds{server}      moving average of its response time
  gateway_server_healthy{server}                   1 when its active check says healthy
  gateway_server_ejected{server}                   1 while passive checking keeps it out
  gateway_server_health_checked{server}            1 when it has an active check
  gateway_circuit_breaker_state{server,state}      1 for the current state, 0 others
  gateway_api_circuit_breaker_state{api,state}     the same for an API's own breaker
  gateway_send_timeouts_total                      clients cut off for not reading
  gateway_websocket_open_tunnels{api}              WebSocket tunnels open now
  gateway_websocket_tunnels_opened_total{api}      tunnels opened (handshakes answered 101)
  gateway_websocket_over_cap_total{api}            handshakes refused over maxWebsockets
  gateway_websocket_bytes_total{api,direction}     bytes relayed: up (client to server), down
  gateway_access_log_lines_total                   access log lines written
  gateway_access_log_dropped_total                 access log lines dropped (full disk, slow pipe)
  gateway_snapshot_revision                        store revision being served
  gateway_tracing_spans_exported_total             spans the trace collector took
  gateway_tracing_spans_dropped_total{reason}      queue-full, export-failed
  gateway_tracing_spans_queued                     finished spans waiting for export
  gateway_limits_mode{mode}                        proxy processes deciding the fleet's
                                                   limits in each mode (shared, local,
                                                   open, closed): with limits.store only
  gateway_limits_switches_total{mode}              switches to each mode
  gateway_limits_gateways                          live gateways a limit is divided by
                                                   while Redis is away
  gateway_limits_redis_calls_total                 calls to Redis (leases, returns)
  gateway_limits_redis_timeouts_total              calls Redis did not answer in time
  gateway_limits_redis_errors_total                calls that failed otherwise
  gateway_cache_requests_total{api,result}        answers of a cached API by what the
                                                   cache did: hit, collapsed, stale,
                                                   revalidated, miss, bypass
  gateway_cache_stored_total{api}                  answers stored
  gateway_cache_memory_bytes                       bytes the memory stores hold
  gateway_cache_memory_limit_bytes                 their bound (proxy.cache.memoryBytes
                                                   per proxy process)
  gateway_cache_memory_entries                     entries they hold
  gateway_cache_evictions_total                    entries dropped to make room
  gateway_info{version}

(The C{gateway_tracing_*} metrics only when the config has C{tracing:}.)
"""

from __future__ import annotations

from typing import Any, Iterator, List, Mapping, Optional, Sequence, Tuple

from prometheus_client.exposition import CONTENT_TYPE_LATEST, choose_encoder, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from twisted.web.resource import IResource, Resource

import gateway
from gateway.telemetry.certificates import certificateStats
from gateway.telemetry.stats import (
    BUCKETS_SECONDS,
    ERROR_KINDS,
    REJECT_REASONS,
    Counters,
)

#: The states a circuit breaker can be in, as labels.
BREAKER_STATES: Tuple[str, ...] = ("closed", "open", "half-open")


_BUCKET_LABELS: Tuple[str, ...] = tuple(repr(b) for b in BUCKETS_SECONDS) + ("+Inf",)


def _histogramBuckets(counters: Counters) -> List[Tuple[str, float]]:
    return list(zip(_BUCKET_LABELS, counters.cumulativeBuckets()))


def _breakerStates(family: GaugeMetricFamily, labels: List[str], state: str) -> None:
    for s in BREAKER_STATES:
        family.add_metric(labels + [s], 1.0 if s == state else 0.0)


#: The HTTP/2 counters (L{gateway.telemetry.stats.HTTP2_COUNTS}) as metrics.
_HTTP2_METRICS = (
    ("connections", "HTTP/2 connections made"),
    ("streams", "HTTP/2 streams opened (one request each)"),
    ("resets", "HTTP/2 streams the client reset before their answer was complete"),
    ("floods", "HTTP/2 connections ended for a flood of frames (GOAWAY ENHANCE_YOUR_CALM)"),
)


class GatewayCollector(Collector):
    """
    Reads the gateway's statistics and live state at scrape time.
    """

    def __init__(self, stats: Any, manager: Any, health: Any, reactor: Any) -> None:
        """
        @param stats: the L{gateway.telemetry.stats.Stats}.
        @param manager: the L{gateway.routing.snapshot.SnapshotManager}, or L{None}.
        @param health: the L{gateway.balancing.health.HealthChecker}, or L{None}.
        @param reactor: an L{IReactorTime}, to tell whether a server is
            ejected now.
        """
        self._stats = stats
        self._manager = manager
        self._health = health
        self._clock = reactor

    def collect(self) -> Iterator[Metric]:
        stats = self._stats
        frozen = getattr(stats, "frozen", None)
        if frozen is not None:
            # The workers' reports, merged once for the whole scrape.
            stats = frozen()
        yield from self._counters(
            "gateway",
            "api",
            stats.apis,
            "Answers per API (requests that matched no API are not counted)",
        )
        yield from self._counters(
            "gateway_server",
            "server",
            stats.servers,
            "Answers per server, by the server the request was last sent to",
            rejects=False,
        )
        yield from self._live(stats)
        sendTimeouts = CounterMetricFamily(
            "gateway_send_timeouts",
            "Clients cut off for reading nothing of their answer for proxy.limits.sendTimeout"
            " seconds",
        )
        sendTimeouts.add_metric([], getattr(stats, "sendTimeouts", 0))
        yield sendTimeouts
        tracingCounts = getattr(stats, "tracingCounts", None)
        tracing = tracingCounts() if tracingCounts is not None else None
        if tracing is not None:
            yield from _tracingMetrics(tracing)
        limits = getattr(stats, "limits", None)
        if limits is not None:
            yield from _limitsMetrics(limits.snapshot())
        yield from self._websockets(getattr(stats, "websockets", {}))
        accessLog = getattr(stats, "accessLog", None)
        written = CounterMetricFamily(
            "gateway_access_log_lines", "Access log lines written (0 when the access log is off)"
        )
        written.add_metric([], accessLog.written if accessLog is not None else 0)
        yield written
        dropped = CounterMetricFamily(
            "gateway_access_log_dropped",
            "Access log lines dropped: the output refused them (a full disk) or could not"
            " keep up (a full pipe)",
        )
        dropped.add_metric([], accessLog.dropped if accessLog is not None else 0)
        yield dropped
        http2 = getattr(stats, "http2", None) or {}
        for what, doc in _HTTP2_METRICS:
            family = CounterMetricFamily(f"gateway_http2_{what}", doc)
            family.add_metric([], http2.get(what, 0))
            yield family
        cache = getattr(stats, "cache", None)
        if cache is not None:
            yield from _cacheMetrics(cache.snapshot())
        info = InfoMetricFamily("gateway", "Gateway version")
        info.add_metric([], {"version": gateway.__version__})
        yield info

    def _counters(
        self, prefix: str, label: str, entries: Any, doc: str, rejects: bool = True
    ) -> Iterator[Metric]:
        names = sorted(entries)
        requests = CounterMetricFamily(prefix + "_requests", doc, labels=[label])
        errors = CounterMetricFamily(
            prefix + "_errors", "Errors by kind: " + ", ".join(ERROR_KINDS), labels=[label, "kind"]
        )
        rejected = CounterMetricFamily(
            prefix + "_rejects",
            "Requests the gateway refused, by reason: " + ", ".join(REJECT_REASONS),
            labels=[label, "reason"],
        )
        duration = HistogramMetricFamily(
            prefix + "_request_duration_seconds",
            "Time from a request's arrival to its answer's status",
            labels=[label],
        )
        for name in names:
            counters = entries[name]
            requests.add_metric([name], counters.requests)
            for kind in ERROR_KINDS:
                errors.add_metric([name, kind], counters.errors[kind])
            for reason in REJECT_REASONS:
                rejected.add_metric([name, reason], counters.rejects[reason])
            duration.add_metric([name], _histogramBuckets(counters), counters.latencySum)
        yield requests
        yield errors
        if rejects:
            yield rejected
        yield duration

    def _websockets(self, entries: Any) -> Iterator[Metric]:
        """
        The WebSocket tunnels of each API with C{websocket: true}.
        """
        openNow = GaugeMetricFamily(
            "gateway_websocket_open_tunnels", "WebSocket tunnels open now", labels=["api"]
        )
        opened = CounterMetricFamily(
            "gateway_websocket_tunnels_opened",
            "WebSocket tunnels opened (handshakes the backend answered 101)",
            labels=["api"],
        )
        overCap = CounterMetricFamily(
            "gateway_websocket_over_cap",
            "WebSocket handshakes refused (503) because maxWebsockets tunnels were open",
            labels=["api"],
        )
        relayed = CounterMetricFamily(
            "gateway_websocket_bytes",
            "Bytes WebSocket tunnels relayed: up (client to server) and down (server to client)",
            labels=["api", "direction"],
        )
        for name in sorted(entries):
            counters = entries[name]
            openNow.add_metric([name], counters.open)
            opened.add_metric([name], counters.opened)
            overCap.add_metric([name], counters.overCap)
            relayed.add_metric([name, "up"], counters.bytesUp)
            relayed.add_metric([name, "down"], counters.bytesDown)
        yield openNow
        yield opened
        yield overCap
        yield relayed

    def _live(self, stats: Any) -> Iterator[Metric]:
        """
        The live state of the servers and breakers, as C{stats} gives it:
        this process's backends when it proxies, the workers' (summed) when
        they do.
        """
        manager = self._manager
        snapshot = manager.snapshot if manager is not None else None
        upstream = CounterMetricFamily(
            "gateway_upstream_requests",
            "Requests sent to a server (retries, aggregation nodes and mirrors included)",
            labels=["server"],
        )
        failures = CounterMetricFamily(
            "gateway_upstream_failures", "Requests to a server that failed", labels=["server"]
        )
        active = GaugeMetricFamily(
            "gateway_server_active_requests", "Requests in flight to a server", labels=["server"]
        )
        ewma = GaugeMetricFamily(
            "gateway_server_latency_ewma_seconds",
            "Moving average of a server's response time",
            labels=["server"],
        )
        healthy = GaugeMetricFamily(
            "gateway_server_healthy",
            "1 when the server's active health check says healthy",
            labels=["server"],
        )
        ejected = GaugeMetricFamily(
            "gateway_server_ejected",
            "1 while passive health checking keeps the server out of rotation",
            labels=["server"],
        )
        checked = GaugeMetricFamily(
            "gateway_server_health_checked",
            "1 when the server has an active health check",
            labels=["server"],
        )
        breakers = GaugeMetricFamily(
            "gateway_circuit_breaker_state",
            "A server's circuit breaker: 1 for its current state, 0 for the others",
            labels=["server", "state"],
        )
        apiBreakers = GaugeMetricFamily(
            "gateway_api_circuit_breaker_state",
            "An API's circuit breaker: 1 for its current state, 0 for the others",
            labels=["api", "state"],
        )
        health = self._health
        for state in stats.serverStates(manager, health):
            name = state.name
            upstream.add_metric([name], state.upstreamRequests)
            failures.add_metric([name], state.upstreamFailures)
            active.add_metric([name], state.active)
            ewma.add_metric([name], state.latencyEWMA)
            healthy.add_metric([name], 1.0 if state.healthy else 0.0)
            ejected.add_metric([name], 1.0 if state.ejected else 0.0)
            if state.checked is not None:
                checked.add_metric([name], 1.0 if state.checked else 0.0)
            if state.breaker is not None:
                _breakerStates(breakers, [name], state.breaker)
        for name, breakerState in stats.apiBreakerStates(manager):
            _breakerStates(apiBreakers, [name], breakerState)
        families: Sequence[Metric] = (upstream, failures, active, ewma, healthy, ejected)
        yield from families
        if health is not None:
            yield checked
        yield breakers
        yield apiBreakers
        expiry = GaugeMetricFamily(
            "gateway_certificate_expiry_seconds",
            "When a certificate expires (its notAfter), in seconds since the epoch",
            labels=["certificate"],
        )
        if snapshot is not None:
            for name, info in certificateStats(snapshot, self._clock.seconds()).items():
                expiry.add_metric([name], info["expiresAt"])
        yield expiry
        revision = GaugeMetricFamily(
            "gateway_snapshot_revision", "The store revision the proxy serves (-1: none yet)"
        )
        revision.add_metric([], snapshot.revision if snapshot is not None else -1)
        yield revision


def _tracingMetrics(counts: Mapping[str, int]) -> Iterator[Metric]:
    """
    @param counts: see L{gateway.telemetry.stats.Stats.tracingCounts}.
    """
    exported = CounterMetricFamily(
        "gateway_tracing_spans_exported", "Spans the trace collector took"
    )
    exported.add_metric([], counts.get("exported", 0))
    yield exported
    dropped = CounterMetricFamily(
        "gateway_tracing_spans_dropped",
        "Spans lost: queue-full (the export queue was full), export-failed (the collector "
        "was away, too slow, answered an error or rejected them)",
        labels=["reason"],
    )
    dropped.add_metric(["queue-full"], counts.get("dropped", 0))
    dropped.add_metric(["export-failed"], counts.get("failed", 0))
    yield dropped
    queued = GaugeMetricFamily(
        "gateway_tracing_spans_queued", "Finished spans waiting to be exported"
    )
    queued.add_metric([], counts.get("queued", 0))
    yield queued


def _limitsMetrics(limits: Any) -> Iterator[Metric]:
    """
    The fleet's limits (C{limits.store}): see the module's documentation.
    """
    modes = GaugeMetricFamily(
        "gateway_limits_mode",
        "Proxy processes deciding the fleet's limits in each mode: shared (Redis) or"
        " limits.onFailure's (local, open, closed) while Redis is away",
        labels=["mode"],
    )
    for mode, count in sorted((limits.get("modes") or {}).items()):
        modes.add_metric([mode], count)
    yield modes
    switches = CounterMetricFamily(
        "gateway_limits_switches", "Switches of the fleet's limits to each mode", labels=["mode"]
    )
    for mode, count in sorted((limits.get("switches") or {}).items()):
        switches.add_metric([mode], count)
    yield switches
    gateways = GaugeMetricFamily(
        "gateway_limits_gateways", "Live gateways a limit is divided by while Redis is away"
    )
    gateways.add_metric([], limits.get("gateways") or 1)
    yield gateways
    for key, doc in (
        ("calls", "Calls to Redis for the fleet's limits (leases, returns)"),
        ("timeouts", "Calls to Redis not answered within limits.timeout"),
        ("errors", "Calls to Redis that failed otherwise"),
    ):
        family = CounterMetricFamily(f"gateway_limits_redis_{key}", doc)
        family.add_metric([], limits.get(key) or 0)
        yield family


def _cacheMetrics(cache: Mapping[str, Any]) -> Iterator[Metric]:
    """
    The response cache: see the module's documentation.
    """
    from gateway.cache.engine import RESULTS

    requests = CounterMetricFamily(
        "gateway_cache_requests",
        "Answers of a cached API by what the cache did: hit (from the cache), collapsed (from"
        " another request's forward), stale (forwarded to revalidate), revalidated (a 304"
        " refreshed the entry; also counted as stale), miss (forwarded), bypass (not looked"
        " up: a method not cached, Redis away)",
        labels=["api", "result"],
    )
    stored = CounterMetricFamily(
        "gateway_cache_stored", "Answers stored in the cache", labels=["api"]
    )
    for name, counts in sorted((cache.get("apis") or {}).items()):
        for result in RESULTS:
            requests.add_metric([name, result], counts.get(result, 0))
        stored.add_metric([name], counts.get("stored", 0))
    yield requests
    yield stored
    memory = cache.get("memory") or {}
    for key, name, doc in (
        ("bytes", "gateway_cache_memory_bytes", "Bytes of entries the memory stores hold"),
        (
            "limit",
            "gateway_cache_memory_limit_bytes",
            "The memory stores' bound (proxy.cache.memoryBytes per proxy process)",
        ),
        ("entries", "gateway_cache_memory_entries", "Entries the memory stores hold"),
    ):
        gauge = GaugeMetricFamily(name, doc)
        gauge.add_metric([], memory.get(key) or 0)
        yield gauge
    evictions = CounterMetricFamily("gateway_cache_evictions", "Entries dropped to make room")
    evictions.add_metric([], memory.get("evictions") or 0)
    yield evictions


def metricsRegistry(stats: Any, manager: Any, health: Any, reactor: Any) -> CollectorRegistry:
    """
    @return: a private registry that holds one L{GatewayCollector}.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(stats, manager, health, reactor))
    return registry


class MetricsResource(Resource):
    """
    Serves a registry in the Prometheus text format (or OpenMetrics, when
    the scraper asks for it in C{Accept}).
    """

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request: Any) -> bytes:
        accept = request.getHeader(b"accept") or b""
        if b"openmetrics" in accept:
            encoder, contentType = choose_encoder(accept.decode("latin-1"))
        else:
            encoder, contentType = generate_latest, CONTENT_TYPE_LATEST
        body = encoder(self.registry)
        request.setHeader(b"content-type", contentType.encode("ascii"))
        request.setHeader(b"cache-control", b"no-store")
        return body


def metricsResource(stats: Any, manager: Any, health: Optional[Any], reactor: Any) -> IResource:
    """
    @param stats: the L{gateway.telemetry.stats.Stats}.
    @param manager: the L{gateway.routing.snapshot.SnapshotManager}.
    @param health: the L{gateway.balancing.health.HealthChecker}, or L{None}.
    @param reactor: an L{IReactorTime}.
    @return: the resource of C{GET /metrics}.
    """
    return MetricsResource(metricsRegistry(stats, manager, health, reactor))
