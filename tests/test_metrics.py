"""
Prometheus metrics: L{gateway.telemetry.metrics}, scraped and parsed with
C{prometheus_client.parser}.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

import pytest
import pytest_twisted
import treq
from fakes import NoProxyConfig, ReadyStore, TwoWorkers
from inprocess import listen
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import REGISTRY
from test_stats import SEQUENCE, _Context, runSequence
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

import gateway
from gateway.filters import FilterRegistry
from gateway.process.propagation import ServedRevisions
from gateway.process.status import GatewayStatus
from gateway.routing.snapshot import SnapshotManager
from gateway.store import StoreState
from gateway.telemetry.metrics import GatewayCollector, metricsRegistry, metricsResource
from gateway.telemetry.report import StatsReport
from gateway.telemetry.stats import SnapshotStats, Stats

Samples = Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """
    @return: every sample of an exposition, by C{(name, sorted labels)}.
    """
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def scrape(
    clock: Clock, stats: Stats, manager=None, health=None
) -> Tuple[Samples, DummyRequest, bytes]:
    resource = metricsResource(stats, manager, health, clock)
    request = DummyRequest([b"metrics"])
    body = resource.render(request)
    return parse(body.decode("utf-8")), request, body


def _state(revision: int = 3) -> StoreState:
    return StoreState(
        revision,
        {
            "servers": {
                "s1": {"name": "s1", "addr": "127.0.0.1:1001", "circuitBreaker": {}},
                "s2": {"name": "s2", "addr": "127.0.0.1:1002"},
            },
            "clusters": {"main": {"name": "main", "servers": ["s1", "s2"]}},
            "apis": {
                "a": {
                    "name": "a",
                    "urlPattern": "/a",
                    "nodes": [{"cluster": "main"}],
                    "circuitBreaker": {"minRequests": 1, "openTimeout": 5},
                }
            },
            "routings": {},
        },
    )


class CollectorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.manager = SnapshotManager(FilterRegistry({}), self.clock)
        self.manager.apply(_state())
        self.stats = Stats(self.clock)
        self.stats.follow(self.manager)

    def answer(self, ms: float, code: int = 200, outcome=None, backend="s1") -> None:
        self.clock.rightNow = ms / 1000.0
        self.stats.record(_Context("a", 0.0, backend), code, outcome)

    def test_exact_values(self) -> None:
        """
        Counters, histogram buckets (cumulative, in seconds), sums and
        counts are the Stats' numbers, per API and per server.
        """
        self.answer(0.5)
        self.answer(30)
        self.answer(30, 500)
        self.answer(3000, 504, "timeout")
        self.answer(1, 429, "reject:rate-limit", backend=None)
        self.answer(1, 403, "reject:ip-access", backend=None)
        samples, request, _ = scrape(self.clock, self.stats, self.manager)
        self.assertEqual(value(samples, "gateway_requests_total", api="a"), 6)
        self.assertEqual(value(samples, "gateway_errors_total", api="a", kind="5xx"), 1)
        self.assertEqual(value(samples, "gateway_errors_total", api="a", kind="timeout"), 1)
        self.assertEqual(value(samples, "gateway_errors_total", api="a", kind="4xx"), 0)
        self.assertEqual(value(samples, "gateway_rejects_total", api="a", reason="rateLimit"), 1)
        self.assertEqual(value(samples, "gateway_rejects_total", api="a", reason="access"), 1)
        self.assertEqual(value(samples, "gateway_rejects_total", api="a", reason="breaker"), 0)
        buckets = {
            le: value(samples, "gateway_request_duration_seconds_bucket", api="a", le=le)
            for le in ("0.001", "0.025", "0.05", "2.5", "5.0", "+Inf")
        }
        self.assertEqual(
            buckets, {"0.001": 3, "0.025": 3, "0.05": 5, "2.5": 5, "5.0": 6, "+Inf": 6}
        )
        self.assertEqual(value(samples, "gateway_request_duration_seconds_count", api="a"), 6)
        self.assertAlmostEqual(
            value(samples, "gateway_request_duration_seconds_sum", api="a"), 3.0625
        )
        self.assertEqual(value(samples, "gateway_server_requests_total", server="s1"), 4)
        self.assertEqual(value(samples, "gateway_server_requests_total", server="s2"), 0)
        self.assertEqual(
            value(samples, "gateway_server_errors_total", server="s1", kind="timeout"), 1
        )
        self.assertEqual(
            value(samples, "gateway_server_request_duration_seconds_count", server="s1"), 4
        )

    def test_live_state(self) -> None:
        """
        Server gauges come from the live backends: requests sent and failed,
        in flight, latency average, health, ejection; breakers show 1 for
        their current state and 0 for the others; the revision and version
        are exported.
        """
        s1 = self.manager.backends["s1"]
        s1.requestStarted()
        s1.requestStarted()
        s1.requestFinished(0.5, False)
        s2 = self.manager.backends["s2"]
        s2.healthy = False
        s2.ejectedUntil = self.clock.seconds() + 10
        samples, _, _ = scrape(self.clock, self.stats, self.manager)
        self.assertEqual(value(samples, "gateway_upstream_requests_total", server="s1"), 2)
        self.assertEqual(value(samples, "gateway_upstream_failures_total", server="s1"), 1)
        self.assertEqual(value(samples, "gateway_server_active_requests", server="s1"), 1)
        self.assertEqual(value(samples, "gateway_server_latency_ewma_seconds", server="s1"), 0.5)
        self.assertEqual(value(samples, "gateway_server_healthy", server="s1"), 1)
        self.assertEqual(value(samples, "gateway_server_healthy", server="s2"), 0)
        self.assertEqual(value(samples, "gateway_server_ejected", server="s1"), 0)
        self.assertEqual(value(samples, "gateway_server_ejected", server="s2"), 1)
        for state, expected in (("closed", 1), ("open", 0), ("half-open", 0)):
            self.assertEqual(
                value(samples, "gateway_circuit_breaker_state", server="s1", state=state),
                expected,
            )
        self.assertNotIn(
            ("gateway_circuit_breaker_state", (("server", "s2"), ("state", "closed"))), samples
        )
        self.assertEqual(value(samples, "gateway_snapshot_revision"), 3)
        self.assertEqual(value(samples, "gateway_info", version=gateway.__version__), 1)

    def test_api_breaker_state(self) -> None:
        """
        An API's own breaker is exported per API, and an open breaker whose
        openTimeout has passed shows half-open at the next scrape.
        """
        breaker = self.manager.snapshot.apis["a"].filters[0].breaker
        breaker.record(False)
        samples, _, _ = scrape(self.clock, self.stats, self.manager)
        self.assertEqual(
            value(samples, "gateway_api_circuit_breaker_state", api="a", state="open"), 1
        )
        self.clock.advance(5)
        samples, _, _ = scrape(self.clock, self.stats, self.manager)
        self.assertEqual(
            value(samples, "gateway_api_circuit_breaker_state", api="a", state="half-open"), 1
        )
        self.assertEqual(
            value(samples, "gateway_api_circuit_breaker_state", api="a", state="open"), 0
        )

    def test_health_checked(self) -> None:
        """
        With a health checker, whether each server has an active check is
        exported.
        """

        class Health:
            def status(self, name):
                return {"checked": name == "s1"}

        samples, _, _ = scrape(self.clock, self.stats, self.manager, Health())
        self.assertEqual(value(samples, "gateway_server_health_checked", server="s1"), 1)
        self.assertEqual(value(samples, "gateway_server_health_checked", server="s2"), 0)

    def test_pruned_names_disappear(self) -> None:
        """
        After a configuration change, removed APIs and servers have no
        series any more.
        """
        self.answer(1)
        resources = {kind: dict(items) for kind, items in _state().resources.items()}
        del resources["apis"]["a"]
        del resources["servers"]["s1"]
        resources["clusters"]["main"] = {"name": "main", "servers": ["s2"]}
        self.manager.apply(StoreState(4, resources))
        samples, _, _ = scrape(self.clock, self.stats, self.manager)
        labels = {dict(key[1]).get("api") for key in samples} | {
            dict(key[1]).get("server") for key in samples
        }
        self.assertEqual(labels - {None}, {"s2"})

    def test_content_type(self) -> None:
        """
        The resource answers the text exposition format with its content
        type, and OpenMetrics to a scraper that asks for it.
        """
        _, request, _ = scrape(self.clock, self.stats, self.manager)
        self.assertEqual(
            request.responseHeaders.getRawHeaders(b"content-type"),
            [CONTENT_TYPE_LATEST.encode("ascii")],
        )
        resource = metricsResource(self.stats, self.manager, None, self.clock)
        request = DummyRequest([b"metrics"])
        request.requestHeaders.setRawHeaders(b"accept", [b"application/openmetrics-text"])
        body = resource.render(request)
        contentType = request.responseHeaders.getRawHeaders(b"content-type")[0]
        self.assertTrue(contentType.startswith(b"application/openmetrics-text"))
        self.assertTrue(body.endswith(b"# EOF\n"))

    def test_private_registry(self) -> None:
        """
        The collector lives in its own registry, never the process-wide one.
        """
        registry = metricsRegistry(self.stats, self.manager, None, self.clock)
        self.assertIsNot(registry, REGISTRY)
        self.assertIsNone(REGISTRY.get_sample_value("gateway_snapshot_revision"))
        self.assertEqual(registry.get_sample_value("gateway_snapshot_revision"), 3)

    def test_without_manager(self) -> None:
        """
        Without a manager, the counters are exported and the revision is -1.
        """
        self.answer(1)
        collector = GatewayCollector(self.stats, None, None, self.clock)
        names = {family.name for family in collector.collect()}
        self.assertIn("gateway_requests", names)
        samples, _, _ = scrape(self.clock, self.stats)
        self.assertEqual(value(samples, "gateway_snapshot_revision"), -1)
        self.assertEqual(value(samples, "gateway_requests_total", api="a"), 1)


class _Worker:
    """
    A proxy worker of a test: its own snapshot manager (so its own
    backends and breakers), stats and reports, as a worker process has.
    """

    def __init__(self, clock: Clock, state: StoreState) -> None:
        self.clock = clock
        self.manager = SnapshotManager(FilterRegistry({}), clock)
        self.manager.apply(state)
        self.stats = Stats(clock)
        self.stats.follow(self.manager)
        self.report = StatsReport(self.stats, self.manager)

    def answer(self, ms: float, code: int = 200, outcome: Any = None) -> None:
        self.clock.rightNow = ms / 1000.0
        self.stats.record(_Context("a", 0.0, "s1"), code, outcome)


class WorkerMetricsTests(SynchronousTestCase):
    """
    C{/metrics} of a gateway whose proxy runs in workers: the admin's
    process sends nothing itself, its metrics are the workers' reports
    (L{SnapshotStats} over L{GatewayStatus.stats}).
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.manager = SnapshotManager(FilterRegistry({}), self.clock)
        self.manager.apply(_state())
        counters = Stats(self.clock)
        counters.follow(self.manager)
        served = ServedRevisions()
        served.serving(0, 3)
        served.serving(1, 3)
        self.status = GatewayStatus(
            self.clock,
            NoProxyConfig(),
            self.manager,
            counters,
            ReadyStore(),
            served,
            pool=TwoWorkers(),
        )
        self.workers: List[_Worker] = [_Worker(self.clock, _state()) for _ in range(2)]

    def report(self) -> None:
        for index, worker in enumerate(self.workers):
            self.status.workerReported(index, worker.report())

    def scrape(self) -> Samples:
        registry = metricsRegistry(
            SnapshotStats(self.status.stats, self.clock), self.manager, None, self.clock
        )
        return parse(generate_latest(registry).decode("utf-8"))

    def test_liveStateOfTheWorkers(self) -> None:
        """
        The servers' live state is the workers': the requests they sent and
        that failed (summed), those in flight, passive ejection, and the
        worst state of their breakers, a server's and an API's, as
        C{/api/v1/stats} shows them; not the admin process's own backends,
        which never send anything (it showed 0 requests and every breaker
        closed while the workers' were open).
        """
        first, second = self.workers
        s1 = first.manager.backends["s1"]
        for _ in range(20):
            s1.requestStarted()
            s1.requestFinished(0.01, False)
        s1.requestStarted()
        for _ in range(20):
            s1.breaker.record(False)
        second.manager.backends["s1"].requestStarted()
        second.manager.backends["s2"].ejectedUntil = self.clock.seconds() + 10
        second.manager.snapshot.apis["a"].filters[0].breaker.record(False)
        self.report()
        samples = self.scrape()
        stats = self.status.stats()
        self.assertEqual(stats["servers"]["s1"]["upstreamRequests"], 22)
        self.assertEqual(value(samples, "gateway_upstream_requests_total", server="s1"), 22)
        self.assertEqual(value(samples, "gateway_upstream_failures_total", server="s1"), 20)
        self.assertEqual(value(samples, "gateway_server_active_requests", server="s1"), 2)
        self.assertEqual(value(samples, "gateway_server_ejected", server="s2"), 1)
        self.assertEqual(value(samples, "gateway_server_ejected", server="s1"), 0)
        self.assertEqual(stats["servers"]["s1"]["breaker"]["state"], "open")
        self.assertEqual(
            value(samples, "gateway_circuit_breaker_state", server="s1", state="open"), 1
        )
        self.assertEqual(
            value(samples, "gateway_circuit_breaker_state", server="s1", state="closed"), 0
        )
        self.assertEqual(
            value(samples, "gateway_api_circuit_breaker_state", api="a", state="open"), 1
        )

    def test_healthFromTheAdminProcess(self) -> None:
        """
        Active health checks run in the admin's process: whether a server
        is healthy and checked is its view, with the workers' counters.
        """

        class Health:
            def status(self, name: str) -> Dict[str, Any]:
                return {"checked": name == "s1", "healthy": name == "s1"}

        self.status = GatewayStatus(
            self.clock,
            NoProxyConfig(),
            self.manager,
            Stats(self.clock),
            ReadyStore(),
            ServedRevisions(),
            health=Health(),
            pool=TwoWorkers(),
        )
        self.manager.backends["s2"].healthy = False
        self.report()
        registry = metricsRegistry(
            SnapshotStats(self.status.stats, self.clock), self.manager, Health(), self.clock
        )
        samples = parse(generate_latest(registry).decode("utf-8"))
        self.assertEqual(value(samples, "gateway_server_healthy", server="s1"), 1)
        self.assertEqual(value(samples, "gateway_server_healthy", server="s2"), 0)
        self.assertEqual(value(samples, "gateway_server_health_checked", server="s1"), 1)
        self.assertEqual(value(samples, "gateway_server_health_checked", server="s2"), 0)

    def test_countersSurviveARestart(self) -> None:
        """
        A worker that dies and is started again counts from zero; what the
        one before it counted stays in the gateway's sums, so that no
        counter goes down (Prometheus would take it for a reset and count
        it all again): requests, errors, histograms, the servers' requests
        sent, in C{/metrics} and C{/api/v1/stats} alike.  What was live in
        the dead worker (requests in flight) is not kept.
        """
        first, second = self.workers
        for _ in range(3):
            first.answer(30)
        first.answer(5, 502, "refused")
        second.answer(1)
        first.manager.backends["s1"].requestStarted()
        first.manager.backends["s1"].requestFinished(0.01, True)
        first.manager.backends["s1"].requestStarted()
        self.report()
        before = self.scrape()
        self.assertEqual(value(before, "gateway_requests_total", api="a"), 5)
        # Worker 0 is started again: new counters, a whole first report.
        self.workers[0] = _Worker(self.clock, _state())
        self.workers[0].answer(1)
        self.report()
        after = self.scrape()
        for name, labels, expected in (
            ("gateway_requests_total", {"api": "a"}, 6),
            ("gateway_errors_total", {"api": "a", "kind": "refused"}, 1),
            ("gateway_server_requests_total", {"server": "s1"}, 6),
            ("gateway_request_duration_seconds_count", {"api": "a"}, 6),
            ("gateway_request_duration_seconds_bucket", {"api": "a", "le": "0.005"}, 3),
            ("gateway_request_duration_seconds_bucket", {"api": "a", "le": "+Inf"}, 6),
            ("gateway_upstream_requests_total", {"server": "s1"}, 2),
            ("gateway_server_active_requests", {"server": "s1"}, 0),
        ):
            self.assertEqual(value(after, name, **labels), expected, (name, labels))
        self.assertAlmostEqual(value(after, "gateway_request_duration_seconds_sum", api="a"), 0.097)
        for key, v in before.items():
            if key[0].endswith(("_total", "_count", "_bucket", "_sum")):
                self.assertGreaterEqual(after[key], v, key)
        stats = self.status.stats()
        self.assertEqual(stats["totals"]["requests"], 6)
        self.assertEqual(stats["apis"]["a"]["requests"], 6)
        self.assertEqual(stats["apis"]["a"]["latency"]["count"], 6)
        self.assertEqual(self.status.describe()["stats"]["totals"]["requests"], 6)
        # The worker that took over reports deltas as usual: counted once.
        self.workers[0].answer(1)
        self.report()
        self.assertEqual(value(self.scrape(), "gateway_requests_total", api="a"), 7)

    def test_endedWorkerLeavesItsCountsOnly(self) -> None:
        """
        When a worker's process ends, what it counted stays in the sums
        and what it had live goes: its requests in flight and its open
        breaker, even if it is not started again; a report of it read after
        its end is not counted again, and the worker started in its place
        adds to the sums.
        """
        first, second = self.workers
        first.answer(1)
        first.answer(1)
        first.manager.backends["s1"].requestStarted()
        for _ in range(20):
            first.manager.backends["s1"].breaker.record(False)
        second.answer(1)
        self.report()
        samples = self.scrape()
        self.assertEqual(value(samples, "gateway_server_active_requests", server="s1"), 1)
        self.assertEqual(
            value(samples, "gateway_circuit_breaker_state", server="s1", state="open"), 1
        )
        first.answer(1)
        late = first.report()
        self.status.workerEnded(0)
        self.status.workerReported(0, late)
        samples = self.scrape()
        self.assertEqual(value(samples, "gateway_requests_total", api="a"), 3)
        self.assertEqual(value(samples, "gateway_upstream_requests_total", server="s1"), 1)
        self.assertEqual(value(samples, "gateway_server_active_requests", server="s1"), 0)
        self.assertEqual(
            value(samples, "gateway_circuit_breaker_state", server="s1", state="closed"), 1
        )
        self.workers[0] = _Worker(self.clock, _state())
        self.workers[0].answer(1)
        self.report()
        self.assertEqual(value(self.scrape(), "gateway_requests_total", api="a"), 4)
        self.assertEqual(self.status.stats()["totals"]["requests"], 4)

    def test_retiredCountsOfRemovedNames(self) -> None:
        """
        The counts kept from ended workers are those of the APIs and
        servers configured now: an API deleted since shows nowhere.
        """
        self.workers[0].answer(1)
        self.report()
        self.workers[0] = _Worker(self.clock, _state())
        self.report()
        resources = {kind: dict(items) for kind, items in _state().resources.items()}
        del resources["apis"]["a"]
        changed = StoreState(4, resources)
        self.manager.apply(changed)
        for worker in self.workers:
            worker.manager.apply(changed)
        self.report()
        self.assertNotIn("a", self.status.stats()["apis"])
        self.assertNotIn(("gateway_requests_total", (("api", "a"),)), self.scrape())
        self.assertEqual(self.status.stats()["totals"]["requests"], 1)


# Real sockets on 127.0.0.1 and the real reactor: an integration test.
@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_scrape_after_sequence(harness):
    """
    After a known sequence through the real proxy, a scrape over HTTP shows
    exactly its counts, and no label value comes from what clients sent
    (paths, headers): only configured names and fixed label sets.
    """
    stats = await runSequence(harness)
    # Client input that must never become a label.
    for path in ("/up/attacker-path-1", "/up/attacker-path-2?x=attacker-query"):
        response = await harness.request("GET", path, headers={"X-Attacker": "attacker-header"})
        await response.content()
    port = await listen(metricsResource(stats, harness.manager, None, reactor))
    try:
        response = await treq.get(f"http://127.0.0.1:{port.getHost().port}/metrics")
        text = (await response.content()).decode("utf-8")
        assert response.headers.getRawHeaders("content-type") == [CONTENT_TYPE_LATEST]
    finally:
        await port.stopListening()
    samples = parse(text)
    requests = {
        dict(labels)["api"]: v
        for (name, labels), v in samples.items()
        if name == "gateway_requests_total"
    }
    assert requests == {
        "up": 8,
        "slow": 1,
        "dead": 1,
        "limited": 3,
        "denied": 1,
        "drained": 1,
        "guarded": 2,
        "blocked": 2,
    }
    assert sum(requests.values()) == len(SEQUENCE) - 1 + 2
    assert value(samples, "gateway_errors_total", api="up", kind="5xx") == 2
    assert value(samples, "gateway_errors_total", api="up", kind="4xx") == 1
    assert value(samples, "gateway_errors_total", api="slow", kind="timeout") == 1
    assert value(samples, "gateway_errors_total", api="dead", kind="refused") == 1
    assert value(samples, "gateway_errors_total", api="drained", kind="unavailable") == 1
    assert value(samples, "gateway_rejects_total", api="limited", reason="rateLimit") == 2
    assert value(samples, "gateway_rejects_total", api="denied", reason="access") == 1
    assert value(samples, "gateway_rejects_total", api="guarded", reason="breaker") == 1
    assert value(samples, "gateway_rejects_total", api="blocked", reason="other") == 1
    assert value(samples, "gateway_request_duration_seconds_count", api="up") == 8
    assert value(samples, "gateway_upstream_requests_total", server="b1") == 12
    assert value(samples, "gateway_upstream_requests_total", server="dead") == 1
    assert value(samples, "gateway_server_active_requests", server="b1") == 0
    assert value(samples, "gateway_api_circuit_breaker_state", api="guarded", state="open") == 1
    assert value(samples, "gateway_snapshot_revision") == 1

    configured = {"up", "slow", "dead", "limited", "denied", "drained", "guarded", "blocked"}
    servers = {"b1", "b2", "dead"}
    fixed = {
        "kind": {"4xx", "5xx", "timeout", "refused", "broken", "unavailable", "aborted"},
        "reason": {"rateLimit", "breaker", "access", "auth", "other"},
        "state": {"closed", "open", "half-open"},
        "version": {gateway.__version__},
    }
    for name, labels in samples:
        for key, labelValue in labels:
            assert "attacker" not in labelValue
            if key == "api":
                assert labelValue in configured, (name, labelValue)
            elif key == "server":
                assert labelValue in servers, (name, labelValue)
            elif key == "le":
                float(labelValue)
            else:
                assert labelValue in fixed[key], (name, key, labelValue)
