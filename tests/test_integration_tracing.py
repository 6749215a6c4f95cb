"""
OpenTelemetry tracing against real processes on 127.0.0.1: the gateway
(C{twistd -n gateway}), test backends (C{tests/backend_app.py}, whose
C{/echo} says which headers it received) and a real OTLP/HTTP receiver
(C{tests/otlp_collector.py}: a C{twisted.web} resource decoding each
C{ExportTraceServiceRequest} with the C{opentelemetry-proto} package).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest
from harness import (
    HOST,
    Process,
    _failStart,
    _spawn,
    freePort,
    request,
    subprocessEnv,
    waitFor,
)

pytestmark = pytest.mark.integration

COLLECTOR_APP = Path(__file__).resolve().parent / "otlp_collector.py"
TOKEN = "tracing-token"

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


class Collector:
    """
    A running C{tests/otlp_collector.py}.
    """

    def __init__(self, process: Process, port: int) -> None:
        self.process = process
        self.port = port

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def spans(self) -> List[Dict[str, Any]]:
        answer = request("GET", self.url + "/spans")
        assert answer.status == 200, answer
        result: List[Dict[str, Any]] = answer.json()
        return result

    def requests(self) -> Dict[str, Any]:
        result: Dict[str, Any] = request("GET", self.url + "/requests").json()
        return result

    def waitForSpans(self, count: int, timeout: float = 15.0) -> List[Dict[str, Any]]:
        """
        @return: the spans, once at least C{count} came.
        """
        waitFor(lambda: len(self.spans()) >= count, timeout, interval=0.1, what=f"{count} spans")
        return self.spans()


def startCollector(logDir: Path, port: int = 0) -> Collector:
    logPath = Path(logDir) / f"collector-{port or 'any'}.log"
    process = Process(
        _spawn([sys.executable, str(COLLECTOR_APP), "--port", str(port)], logPath), logPath
    )

    def ready() -> Optional[int]:
        for line in process.output().splitlines():
            if line.startswith("READY "):
                return int(line.split()[1])
        if not process.alive():
            raise _failStart(process, "the collector exited before it listened")
        return None

    try:
        bound = waitFor(ready, 15, what="the collector to listen")
    except AssertionError as e:
        process.stop()
        raise _failStart(process, str(e))
    return Collector(process, bound)


@pytest.fixture
def collectors(tmp_path: Path) -> Iterator[Any]:
    """
    A factory of OTLP receivers, all stopped after the test.
    """
    started: List[Collector] = []

    def start(port: int = 0) -> Collector:
        collector = startCollector(tmp_path, port)
        started.append(collector)
        return collector

    try:
        yield start
    finally:
        for collector in started:
            collector.process.stop()


def gatewayConfig(
    otlp: str, backends: List[Any], apis: List[Dict[str, Any]], **tracing: Any
) -> Dict[str, Any]:
    return {
        "proxy": {"accessLog": False},
        "admin": {"token": TOKEN},
        "store": "memory:",
        "tracing": dict({"otlp": otlp, "scheduleDelay": 0.2, "serviceName": "edge"}, **tracing),
        "servers": [{"name": b.name, "addr": b.addr} for b in backends],
        "clusters": [{"name": "main", "servers": [b.name for b in backends]}],
        "apis": apis,
    }


ECHO = {"name": "echo", "urlPattern": "/echo/*", "nodes": [{"cluster": "main"}]}


def byKind(spans: List[Dict[str, Any]], kind: str) -> List[Dict[str, Any]]:
    return [s for s in spans if s["kind"] == kind]


def metric(gateway: Any, line: str) -> float:
    """
    @return: the value of a line of the gateway's C{/metrics} that starts
        with C{line} (0 when there is none).
    """
    text = gateway.admin("GET", "/metrics").text
    for row in text.splitlines():
        if row.startswith(line + " "):
            return float(row.rsplit(" ", 1)[1])
    return 0.0


def test_one_trace_from_the_client_to_the_backend(gateways, backends, collectors):
    """
    A request with the client's C{traceparent}: the collector receives the
    gateway's server span in the client's trace (its parent the client's
    span) and a client span, child of the server span, whose id the
    backend received in its C{traceparent}, with the client's
    C{tracestate}; the spans carry the HTTP and gateway attributes and the
    configured service name.
    """
    backend = backends("b1")
    collector = collectors()
    gateway = gateways(gatewayConfig(collector.url + "/v1/traces", [backend], [ECHO]))
    answer = gateway.proxy(
        "GET",
        "/echo/users?id=7",
        headers={
            "traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01",
            "tracestate": "congo=t61rcWkgMzE",
        },
    )
    assert answer.status == 200
    seen = answer.json()["headers"]
    [sent] = seen["traceparent"]
    version, traceId, parentId, flags = sent.split("-")
    assert (version, traceId) == ("00", TRACE_ID)
    assert int(flags, 16) & 1 == 1
    assert seen["tracestate"] == ["congo=t61rcWkgMzE"]

    spans = collector.waitForSpans(2)
    [server] = byKind(spans, "SERVER")
    [client] = byKind(spans, "CLIENT")
    assert server["traceId"] == client["traceId"] == TRACE_ID
    assert server["parentSpanId"] == CLIENT_SPAN
    assert client["parentSpanId"] == server["spanId"]
    assert client["spanId"] == parentId
    assert server["traceState"] == "congo=t61rcWkgMzE"
    assert server["name"] == "GET /echo/*"
    assert server["attributes"]["http.route"] == "/echo/*"
    assert server["attributes"]["http.response.status_code"] == 200
    assert server["attributes"]["url.path"] == "/echo/users"
    assert server["attributes"]["url.query"] == "id=7"
    assert server["attributes"]["gateway.api"] == "echo"
    assert server["attributes"]["gateway.cluster"] == "main"
    assert server["attributes"]["gateway.server"] == "b1"
    assert client["attributes"]["gateway.server"] == "b1"
    assert client["attributes"]["server.port"] == backend.port
    assert client["attributes"]["url.full"] == f"http://{HOST}:{backend.port}/echo/users?id=7"
    assert server["start"] <= client["start"] <= client["end"] <= server["end"]
    assert server["resource"]["service.name"] == "edge"
    assert collector.requests()["contentTypes"][0] == "application/x-protobuf"
    assert metric(gateway, "gateway_tracing_spans_exported_total") == 2


def test_aggregation_one_span_per_node(gateways, backends, collectors):
    """
    An aggregation of three nodes: one trace, a client span per node,
    each the child of the server span, and each node's backend received
    the id of its own span.
    """
    backend = backends("b1")
    collector = collectors()
    api = {
        "name": "agg",
        "urlPattern": "/agg",
        "nodes": [
            {"cluster": "main", "attrName": name, "urlRewrite": f"/echo/{name}"}
            for name in ("x", "y", "z")
        ],
    }
    gateway = gateways(gatewayConfig(collector.url + "/v1/traces", [backend], [api]))
    answer = gateway.proxy(
        "GET", "/agg", headers={"traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01"}
    )
    assert answer.status == 200
    merged = answer.json()
    received = {name: merged[name]["headers"]["traceparent"][0].split("-")[2] for name in "xyz"}

    spans = collector.waitForSpans(4)
    [server] = byKind(spans, "SERVER")
    nodes = byKind(spans, "CLIENT")
    assert len(nodes) == 3
    assert {s["traceId"] for s in spans} == {TRACE_ID}
    assert {s["parentSpanId"] for s in nodes} == {server["spanId"]}
    byPath = {s["attributes"]["url.full"].rsplit("/", 1)[1]: s["spanId"] for s in nodes}
    assert byPath == received


def test_retries_one_span_per_attempt(gateways, backends, collectors):
    """
    A request retried after an answer in C{retryOn}: one client span per
    attempt, each the child of the server span, the first an error with
    the status it got.
    """
    failing, good = backends("bad"), backends("good")
    failing.control("fail/503")
    collector = collectors()
    api = {
        "name": "echo",
        "urlPattern": "/echo/*",
        "nodes": [{"cluster": "main", "retries": 1, "retryOn": [503]}],
    }
    gateway = gateways(gatewayConfig(collector.url + "/v1/traces", [failing, good], [api]))
    for _ in range(4):
        assert gateway.proxy("GET", "/echo/r").status == 200
    attempts = failing.stats()["requests"] + good.stats()["requests"]
    assert failing.stats()["requests"] >= 1
    spans = collector.waitForSpans(4 + attempts)
    servers = byKind(spans, "SERVER")
    assert len(servers) == 4
    clients = byKind(spans, "CLIENT")
    assert len(clients) == attempts
    retried = 0
    for server in servers:
        mine = sorted(
            (s for s in clients if s["parentSpanId"] == server["spanId"]), key=lambda s: s["start"]
        )
        assert all(s["traceId"] == server["traceId"] for s in mine)
        if len(mine) == 2:
            retried += 1
            first, second = mine
            assert first["attributes"]["gateway.server"] == "bad"
            assert first["attributes"]["http.response.status_code"] == 503
            assert first["status"] == "ERROR"
            assert second["attributes"]["gateway.server"] == "good"
            assert second["attributes"]["http.request.resend_count"] == 1
        else:
            assert [s["attributes"]["gateway.server"] for s in mine] == ["good"]
    assert retried == failing.stats()["requests"]


def test_ratio_zero_exports_nothing_and_propagates(gateways, backends, collectors):
    """
    With C{sampleRatio: 0} nothing reaches the collector, and the backend
    still receives a C{traceparent}: a new trace's without one from the
    client, the client's trace (not sampled) with one.
    """
    backend = backends("b1")
    collector = collectors()
    gateway = gateways(
        gatewayConfig(collector.url + "/v1/traces", [backend], [ECHO], sampleRatio=0)
    )
    fresh = gateway.proxy("GET", "/echo/a").json()["headers"]["traceparent"][0].split("-")
    assert len(fresh[1]) == 32 and int(fresh[3], 16) & 1 == 0
    continued = (
        gateway.proxy("GET", "/echo/a", headers={"traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-00"})
        .json()["headers"]["traceparent"][0]
        .split("-")
    )
    assert continued[1] == TRACE_ID
    assert continued[2] != CLIENT_SPAN
    assert int(continued[3], 16) & 1 == 0
    # Several export intervals.
    time.sleep(1.0)
    assert collector.requests()["requests"] == 0
    assert metric(gateway, "gateway_tracing_spans_exported_total") == 0


def test_collector_away(gateways, backends, collectors):
    """
    With no collector listening, requests are served as usual and every
    span is accounted for in C{/metrics}: dropped from a full queue, or
    failed with its export; once a collector listens on the address,
    spans reach it.
    """
    backend = backends("b1")
    port = freePort()
    gateway = gateways(
        gatewayConfig(
            f"http://{HOST}:{port}/v1/traces",
            [backend],
            [ECHO],
            maxQueueSize=8,
            # (Long enough for more than 4 requests' spans to come between
            # two exports, however loaded the machine: the queue overflows.)
            scheduleDelay=3,
            exportTimeout=1,
        )
    )
    requests = 40
    started = time.monotonic()
    for _ in range(requests):
        assert gateway.proxy("GET", "/echo/x", timeout=5).status == 200
    assert time.monotonic() - started < 20

    def accounted() -> bool:
        total = sum(
            metric(gateway, line)
            for line in (
                'gateway_tracing_spans_dropped_total{reason="queue-full"}',
                'gateway_tracing_spans_dropped_total{reason="export-failed"}',
                "gateway_tracing_spans_queued",
            )
        )
        return total == 2 * requests

    waitFor(accounted, 10, interval=0.1, what="every span in /metrics")
    assert metric(gateway, 'gateway_tracing_spans_dropped_total{reason="queue-full"}') > 0
    waitFor(
        lambda: metric(gateway, 'gateway_tracing_spans_dropped_total{reason="export-failed"}') > 0,
        10,
        interval=0.1,
        what="a failed export",
    )
    assert metric(gateway, "gateway_tracing_spans_exported_total") == 0
    stats = gateway.admin("GET", "/api/v1/stats").json()
    assert stats["tracing"]["dropped"] > 0

    collector = collectors(port)
    # What was queued goes first (the queue may be full until it did: new
    # spans would be dropped), then the spans of a new request follow.
    waitFor(
        lambda: metric(gateway, "gateway_tracing_spans_exported_total") > 0,
        15,
        interval=0.1,
        what="the queued spans exported",
    )
    assert gateway.proxy("GET", "/echo/back").status == 200
    waitFor(
        lambda: any(s["attributes"].get("url.path") == "/echo/back" for s in collector.spans()),
        15,
        interval=0.1,
        what="the new request's span",
    )


def test_workers_export_and_sum(gateways, backends, collectors):
    """
    With two proxy workers, each exports its spans, and the parent's
    C{/metrics} sums their counters.
    """
    backend = backends("b1")
    collector = collectors()
    config = gatewayConfig(collector.url + "/v1/traces", [backend], [ECHO])
    config["store"] = "file:store.json"
    config["proxy"]["workers"] = 2
    gateway = gateways(config)
    requests = 20
    for _ in range(requests):
        assert gateway.proxy("GET", "/echo/w").status == 200
    spans = collector.waitForSpans(2 * requests)
    assert len(byKind(spans, "SERVER")) == requests
    waitFor(
        lambda: metric(gateway, "gateway_tracing_spans_exported_total") == 2 * requests,
        10,
        interval=0.2,
        what="the workers' counters summed",
    )


def test_sdk_only_imported_with_tracing(tmp_path):
    """
    Without C{tracing:} the process that builds and starts a gateway never
    imports OpenTelemetry; with it, it does.
    """
    script = """
import sys
from twisted.internet.testing import MemoryReactorClock
from gateway.filters import FilterRegistry
from gateway.model.config import parseConfig
from gateway.process.root import makeService
from gateway.process.startup import Abort
config = {"proxy": {"listen": "tcp:18080:interface=127.0.0.1", "workers": 1}, "store": "memory:"}
if sys.argv[1] == "on":
    config["tracing"] = {}
reactor = MemoryReactorClock()
service = makeService(parseConfig(config), reactor, FilterRegistry.fromPlugins(), Abort(reactor))
service.privilegedStartService()
service.startService()
loaded = {".".join(m.split(".")[:2]) for m in sys.modules if m.startswith("opentelemetry.")}
print(sorted(loaded))
"""
    outputs = {}
    for mode in ("off", "on"):
        done = subprocess.run(
            [sys.executable, "-c", script, mode],
            capture_output=True,
            text=True,
            env=subprocessEnv(),
            cwd=str(tmp_path),
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        outputs[mode] = done.stdout.strip().splitlines()[-1]
    assert outputs["off"] == "[]"
    assert "opentelemetry.sdk" in outputs["on"]
