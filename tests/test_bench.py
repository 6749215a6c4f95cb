"""
Tests for the benchmark driver's own logic (C{bench/run.py}): reading
wrk's output, the gateway configs it generates, the CPU accounting from
C{/proc}, and the targets and report it computes.  Nothing here starts a
process or opens a socket.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from bench import run
from gateway.model.accesslog import AccessLogConfig
from gateway.model.config import ConfigError, parseConfig

WRK_OUTPUT = """\
Running 3s test @ http://127.0.0.1:8080/plain
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.13ms  500.00us  30.00ms   90.00%
    Req/Sec    23.50k     1.20k   25.00k    70.00%
  Latency Distribution
     50%  850.00us
     75%    1.50ms
     90%    2.00ms
     99%    1.20s
  70500 requests in 3.00s, 20.00MB read
Requests/sec:  23500.00
Transfer/sec:      6.67MB
"""

WRK_ERRORS = """\
Running 3s test @ http://127.0.0.1:8080/plain
  Latency Distribution
     50%   10.00ms
     75%   20.00ms
     90%   30.00ms
     99%   40.00ms
  1200 requests in 3.01s, 200.00KB read
  Socket errors: connect 1, read 2, write 3, timeout 50
  Non-2xx or 3xx responses: 17
Requests/sec:    398.67
Transfer/sec:     66.45KB
"""


class ParseWrkTests(SynchronousTestCase):
    def test_figures(self) -> None:
        """
        Requests, duration, rate and the latency percentiles are read, each
        latency converted to milliseconds whatever unit wrk chose.
        """
        result = run.parseWrk(WRK_OUTPUT)
        self.assertEqual(result["requests"], 70500)
        self.assertEqual(result["seconds"], 3.0)
        self.assertEqual(result["reqPerSec"], 23500.0)
        self.assertAlmostEqual(result["p50Ms"], 0.85)
        self.assertAlmostEqual(result["p75Ms"], 1.5)
        self.assertAlmostEqual(result["p99Ms"], 1200.0)
        self.assertEqual((result["non2xx"], result["socketErrors"]), (0, 0))

    def test_errors(self) -> None:
        """
        Non-2xx answers and socket errors (all kinds summed) are counted.
        """
        result = run.parseWrk(WRK_ERRORS)
        self.assertEqual(result["non2xx"], 17)
        self.assertEqual(result["socketErrors"], 56)
        self.assertEqual(result["requests"], 1200)

    def test_notWrk(self) -> None:
        """
        Output that is not wrk's report raises L{run.BenchError} quoting it.
        """
        with self.assertRaises(run.BenchError) as e:
            run.parseWrk("unable to connect to 127.0.0.1:1 Connection refused\n")
        self.assertIn("Connection refused", str(e.exception))


class _FakeWrk:
    """
    Answers each run with the next rate of a list.
    """

    def __init__(self, rates):
        self.rates = list(rates)
        self.durations = []

    def run(self, url, duration=None, headers=()):
        self.durations.append(duration)
        return {"reqPerSec": self.rates.pop(0)}


class WarmUpTests(SynchronousTestCase):
    def test_fixed(self) -> None:
        """
        With no more than the least time allowed, the warm-up lasts exactly
        that long whatever the rates do.
        """
        wrk = _FakeWrk([100, 200, 400])
        spent, rates = run.warmUp(wrk, "http://x/", 3, 3)
        self.assertEqual(spent, 3)
        self.assertEqual(wrk.durations, [2.0, 1.0])

    def test_untilStable(self) -> None:
        """
        Past the least time, the warm-up goes on while the rate climbs, and
        stops once two slices in a row are no more than 10 % faster than
        the best slice before them.
        """
        wrk = _FakeWrk([100, 300, 250, 600, 650, 640, 5000])
        spent, rates = run.warmUp(wrk, "http://x/", 2, 60)
        self.assertEqual(rates, [100, 300, 250, 600, 650, 640])
        self.assertEqual(spent, 12.0)

    def test_bounded(self) -> None:
        """
        A rate that keeps climbing is warmed up for the most time allowed,
        no more.
        """
        wrk = _FakeWrk([1, 2, 4, 8, 16, 32])
        spent, rates = run.warmUp(wrk, "http://x/", 1, 5)
        self.assertEqual(spent, 5.0)
        self.assertEqual(wrk.durations, [2.0, 2.0, 1.0])


class GatewayConfigTests(SynchronousTestCase):
    def test_valid(self) -> None:
        """
        The config the benchmark generates for the gateway rows is one the
        gateway accepts: the shipped defaults (the access log on, the
        workers unset, no global filter) and one API per feature row, each
        with its feature.
        """
        from gateway.filters.cors import makeCORSFilter

        data = run.gatewayConfig(8080, 8081)
        config = parseConfig(data)
        self.assertEqual(config.proxy.accessLog, AccessLogConfig())
        self.assertIsNone(config.proxy.workers)
        self.assertEqual(config.proxy.filters, ())
        apis = {api.name: api for api in config.seed["apis"]}
        self.assertEqual(
            list(apis),
            [
                "plain",
                "request-id",
                "rate-limit",
                "breaker",
                "routing",
                "cors",
                "transform",
                "aggregate",
            ],
        )
        self.assertEqual(
            [api.urlPattern for api in apis.values()], [path for _, path, _ in run.FEATURES]
        )
        self.assertEqual([f.name for f in apis["request-id"].filters], ["request-id"])
        self.assertIsNotNone(apis["rate-limit"].rateLimit)
        servers = {s.name: s for s in config.seed["servers"]}
        clusters = {c.name: c for c in config.seed["clusters"]}
        [guarded] = clusters[apis["breaker"].nodes[0].cluster].servers
        self.assertIsNotNone(servers[guarded].circuitBreaker)
        self.assertIsNone(servers["nginx"].circuitBreaker)
        [routing] = config.seed["routings"]
        self.assertEqual(routing.api, "routing")
        self.assertEqual(len(apis["aggregate"].nodes), 3)
        # Only the feature's API has the feature.
        for name in ("plain", "routing", "aggregate"):
            self.assertEqual((apis[name].filters, apis[name].rateLimit), ((), None))
            self.assertEqual((apis[name].cors, apis[name].transform), (None, None))
        corsFilter = makeCORSFilter(apis["cors"])
        assert corsFilter is not None
        self.assertTrue(corsFilter.origins.allows(run.CORS_ORIGIN.encode()))
        self.assertEqual(run.FEATURE_HEADERS["/cors"], (f"Origin: {run.CORS_ORIGIN}",))
        self.assertIsNotNone(apis["transform"].transform)

    def test_authRows(self) -> None:
        """
        The authentication rows' gateway config is valid, and each row's
        credential header authenticates the rows' consumer on its API (the
        key, the HS256 and the RS256 token), through the real C{auth}
        filter: the rows measure authentication, not 401s.
        """
        from test_auth import makeContext
        from twisted.internet.task import Clock

        from gateway.auth.index import compileConsumers
        from gateway.filters.auth import AuthFilter, AuthServices

        setups = run.authSetups()
        data = run.gatewayConfig(8080, 8081, extraApis=tuple(api for _, _, api, _ in setups))
        data["consumers"] = [run.authConsumer()]
        config = parseConfig(data)
        apis = {api.name: api for api in config.seed["apis"]}
        index = compileConsumers({c.name: c for c in config.seed["consumers"]})
        self.assertEqual([key for key, _, _, _ in setups], ["key", "hs256", "rs256"])
        for _, _, api, headers in setups:
            compiled = apis[api["name"]]
            auth = AuthFilter(compiled.auth, AuthServices(Clock()))
            sent = {}
            for line in headers:
                name, _, value = line.partition(": ")
                sent[name.lower().encode()] = [value.encode()]
            context = makeContext(index, sent)
            self.assertIsNone(auth.before(context), api["name"])
            self.assertEqual(context.consumer.name, "bench")  # type: ignore[union-attr]

    def test_accessLogOff(self) -> None:
        """
        The access log off rows' gateways have none.
        """
        config = parseConfig(run.gatewayConfig(8080, 8081, accessLog=False))
        self.assertIs(config.proxy.accessLog, False)

    def test_fleetLimits(self) -> None:
        """
        The configs of the fleet-limits rows are valid: both have API
        C{/limited}; the Redis one has C{limits.store}, the other none.
        """
        onRedis = parseConfig(run.fleetLimitsConfig(8080, 8081, 6379, 2, "proxy"))
        inMemory = parseConfig(run.fleetLimitsConfig(8080, 8081, None, 2, "proxy"))
        assert onRedis.limits is not None
        self.assertEqual(onRedis.limits.store, "redis://127.0.0.1:6379/0")
        self.assertIsNone(inMemory.limits)
        for config in (onRedis, inMemory):
            self.assertIn("limited", [api.name for api in config.seed["apis"]])

    def test_cache(self) -> None:
        """
        The config of the cache rows is valid: C{/cached} caches in memory,
        C{/shared} in the Redis of C{limits.store}, both rewritten to the
        backend's C{/plain}.
        """
        config = parseConfig(run.cacheConfig(8080, 8081, 6379))
        assert config.limits is not None
        self.assertEqual(config.limits.store, "redis://127.0.0.1:6379/0")
        apis = {api.name: api for api in config.seed["apis"]}
        self.assertEqual(apis["cached"].cache.store, "memory")
        self.assertEqual(apis["shared"].cache.store, "redis")
        self.assertIsNone(parseConfig(run.cacheConfig(8080, 8081, None)).limits)

    def test_extras(self) -> None:
        """
        With an admin and many extra APIs (the 10,000 APIs check, here
        100), the config is still valid.
        """
        apis = tuple(
            {
                "name": f"svc{i}",
                "method": "GET",
                "urlPattern": f"/svc{i}/items/{{id}}",
                "nodes": [{"cluster": "plain"}],
            }
            for i in range(100)
        )
        config = parseConfig(run.gatewayConfig(8080, 8081, adminPort=9090, extraApis=apis))
        self.assertEqual(len(config.seed["apis"]), 100 + len(run.FEATURES))
        self.assertEqual(config.admin.token, run.ADMIN_TOKEN)

    def test_workers(self) -> None:
        """
        The config knows C{workers:}; the benchmark puts it where the config
        reads it, and the config then says that many workers.
        """
        where = run.workersKey()
        self.assertIsNotNone(where, "the config has no workers: key")
        data = run.gatewayConfig(8080, 8081, workers=2, where=where)
        try:
            config = parseConfig(data)
        except ConfigError as e:
            self.fail(f"the N-worker config is refused: {e}")
        workers = config.proxy.workers if where == "proxy" else data["workers"]
        self.assertEqual(workers, 2)


class TreeCPUTests(SynchronousTestCase):
    def test_self(self) -> None:
        """
        The CPU time of this process's tree is at least what this process
        used (up to a clock tick of rounding).
        """
        usage = resource.getrusage(resource.RUSAGE_SELF)
        own = usage.ru_utime + usage.ru_stime
        self.assertGreaterEqual(run.treeCPU(os.getpid()), own - 2.0 / run.CLK_TCK)

    def test_noSuchProcess(self) -> None:
        """
        A process that does not exist used no CPU.
        """
        self.assertEqual(run.treeCPU(2**22 + 12345), 0.0)


def _row(report, key, workers=1, **figures):
    interpreter = "pypy" if "pypy" in key else "cpython"
    return report.row(key, key, interpreter, workers, **figures)


class TargetsTests(SynchronousTestCase):
    def test_ratios(self) -> None:
        """
        The targets are computed from the rows of the run: the default
        configuration against nginx, the access log's cost, gateway CPU per
        request with one worker and the access log off (absolute and
        against the Agent proxy on CPython, against nginx on PyPy), N
        workers against one, and the aggregation against the naive treq
        fan-out.
        """
        report = run.Report()
        _row(report, "nginx-proxy", reqPerSec=9000.0, cpuUsPerReq=25.0)
        _row(report, "gateway-plain-cpython-1", reqPerSec=1000.0, cpuUsPerReq=130.0)
        _row(report, "gateway-nolog-cpython-1", reqPerSec=1000.0, cpuUsPerReq=120.0)
        _row(report, "gateway-plain-cpython-2", 2, reqPerSec=1900.0, cpuUsPerReq=125.0)
        _row(report, "gateway-plain-pypy-1", reqPerSec=5000.0, cpuUsPerReq=36.0)
        _row(report, "gateway-nolog-pypy-1", reqPerSec=5000.0, cpuUsPerReq=60.0)
        _row(report, "gateway-aggregate-cpython-1", reqPerSec=800.0)
        _row(report, "treq-fanout-cpython", reqPerSec=100.0)
        _row(report, "twisted-agent-cpython", reqPerSec=400.0, cpuUsPerReq=300.0)
        targets = {t["target"]: t for t in run.computeTargets(report)}

        default = targets["default configuration CPU/request vs nginx, CPython"]
        self.assertEqual((default["measured"], default["met"]), (5.0, True))
        self.assertIn("125.0 µs (2 workers, access log on)", default["detail"])
        default = targets["default configuration CPU/request vs nginx, PyPy"]
        self.assertEqual((default["measured"], default["met"]), (1.44, True))
        cost = targets["access log on vs off, CPython"]
        self.assertAlmostEqual(cost["measured"], 130 / 120 - 1)
        self.assertEqual((cost["met"], cost["detail"]), (True, "from the rows (1 worker)"))
        cost = targets["access log on vs off, PyPy"]
        self.assertEqual(cost["met"], True)
        cpu = targets["gateway CPU/request, CPython, 1 worker, access log off"]
        self.assertEqual((cpu["measured"], cpu["met"]), (120.0, True))
        agent = targets["gateway CPU/request vs Twisted's Agent proxy, CPython"]
        self.assertEqual((agent["measured"], agent["met"]), (2.5, False))
        pypy = targets["gateway CPU/request vs nginx, PyPy, 1 worker, access log off"]
        self.assertEqual((pypy["measured"], pypy["met"]), (2.4, False))
        scaling = targets["N workers vs 1, cpython"]
        self.assertEqual((scaling["measured"], scaling["met"]), (1.9, True))
        self.assertIsNone(targets["N workers vs 1, pypy"]["met"])
        aggregation = targets["3-way aggregation vs naive treq fan-out, cpython"]
        self.assertEqual((aggregation["measured"], aggregation["met"]), (8.0, True))
        self.assertIsNone(targets["3-way aggregation vs naive treq fan-out, pypy"]["measured"])

    def test_workersBound(self) -> None:
        """
        The N-worker target's detail says how far the machine's cores allow
        N workers to go, from how busy the whole machine was with one (wrk
        and the backend share the cores), and how the aggregation, which
        is mostly the gateway's own CPU, scaled.
        """
        report = run.Report()
        _row(report, "gateway-plain-cpython-1", reqPerSec=1000.0, machineBusy=0.625)
        _row(report, "gateway-plain-cpython-2", 2, reqPerSec=1300.0, machineBusy=0.99)
        _row(report, "gateway-aggregate-cpython-1", reqPerSec=400.0)
        _row(report, "gateway-aggregate-cpython-2", 2, reqPerSec=820.0)
        scaling = {t["target"]: t for t in run.computeTargets(report)}["N workers vs 1, cpython"]
        self.assertEqual((scaling["measured"], scaling["met"]), (1.3, False))
        self.assertIn("62 % busy with 1 worker, 99 % with 2", scaling["detail"])
        self.assertIn("would give 1.60x", scaling["detail"])
        self.assertIn("where the gateway's own CPU dominates: 2.05x", scaling["detail"])

    def test_agentPairPreferred(self) -> None:
        """
        The ratio to the Agent proxy measured in turn with the gateway, when
        there is one, is the one the target goes by (the rows, measured
        minutes apart, are named in its detail).
        """
        report = run.Report()
        _row(report, "gateway-nolog-cpython-1", reqPerSec=1000.0, cpuUsPerReq=160.0)
        _row(report, "twisted-agent-cpython", reqPerSec=400.0, cpuUsPerReq=400.0)
        report.extras["agentPair"] = {"ratio": 3.1, "detail": "in turn"}
        target = {t["target"]: t for t in run.computeTargets(report)}[
            "gateway CPU/request vs Twisted's Agent proxy, CPython"
        ]
        self.assertEqual((target["measured"], target["met"]), (3.1, True))
        self.assertEqual(target["detail"], "in turn; rows: 160.0 µs vs the Agent proxy's 400.0 µs")
        report.extras["agentPair"] = {"error": "agent proxy exited"}
        target = {t["target"]: t for t in run.computeTargets(report)}[
            "gateway CPU/request vs Twisted's Agent proxy, CPython"
        ]
        self.assertEqual((target["measured"], target["met"]), (2.5, False))

    def test_skippedRowsIgnored(self) -> None:
        """
        A skipped or failed row counts as not measured, not as zero.
        """
        report = run.Report()
        _row(report, "gateway-nolog-cpython-1", reqPerSec=1000.0, cpuUsPerReq=500.0)
        _row(report, "gateway-plain-cpython-N", "N", skipped="no workers key")
        _row(report, "gateway-nolog-pypy-1", error="pypy exited")
        targets = {t["target"]: t for t in run.computeTargets(report)}
        self.assertIsNone(targets["N workers vs 1, cpython"]["measured"])
        self.assertIsNone(
            targets["gateway CPU/request vs nginx, PyPy, 1 worker, access log off"]["measured"]
        )
        self.assertIsNone(
            targets["gateway CPU/request vs Twisted's Agent proxy, CPython"]["measured"]
        )
        self.assertIsNone(targets["default configuration CPU/request vs nginx, CPython"]["met"])
        self.assertIsNone(targets["access log on vs off, CPython"]["measured"])
        self.assertFalse(targets["gateway CPU/request, CPython, 1 worker, access log off"]["met"])

    def test_accessLogPairPreferred(self) -> None:
        """
        The access log's cost measured in turn, when there is one, is the
        one its target goes by.
        """
        report = run.Report()
        _row(report, "gateway-plain-pypy-1", reqPerSec=5000.0, cpuUsPerReq=40.0)
        _row(report, "gateway-nolog-pypy-1", reqPerSec=5000.0, cpuUsPerReq=30.0)
        report.extras["accessLogPair"] = {"pypy": {"cost": 0.06, "detail": "in turn"}}
        target = {t["target"]: t for t in run.computeTargets(report)}["access log on vs off, PyPy"]
        self.assertEqual(
            (target["measured"], target["met"], target["detail"]), (0.06, True, "in turn")
        )


class FeatureCostsTests(SynchronousTestCase):
    """
    What each feature costs, against the default configuration.
    """

    def report(self) -> run.Report:
        report = run.Report()
        report.settings = {"wrk": "wrk -t1 -c50 -d3s --latency", "warmup": 1.0, "pypyWarmup": 30}
        _row(report, "gateway-plain-cpython-2", 2, reqPerSec=9000.0, cpuUsPerReq=100.0)
        _row(report, "gateway-nolog-cpython-2", 2, reqPerSec=9500.0, cpuUsPerReq=95.0)
        _row(report, "gateway-requestid-cpython-2", 2, reqPerSec=8900.0, cpuUsPerReq=104.0)
        _row(report, "gateway-aggregate-cpython-2", 2, reqPerSec=3000.0, cpuUsPerReq=250.0)
        # One worker rows are not the default configuration's here.
        _row(report, "gateway-plain-cpython-1", reqPerSec=5000.0, cpuUsPerReq=90.0)
        _row(report, "gateway-plain-pypy-2", 2, reqPerSec=20000.0, cpuUsPerReq=40.0)
        _row(report, "gateway-ratelimit-pypy-2", 2, error="it broke")
        return report

    def test_costs(self) -> None:
        """
        Each feature's cost is its row's CPU per request less the default
        configuration's (the most workers); the access log's, the
        default's less the access log off row's; unmeasured rows cost
        nothing known.
        """
        costs = {c["setup"]: c for c in run.featureCosts(self.report())}
        self.assertEqual(list(costs), [setup for setup, _ in run.COSTS])
        self.assertEqual(costs["nolog"]["cpython"]["costUs"], 5.0)
        self.assertAlmostEqual(costs["nolog"]["cpython"]["cost"], 5 / 95)
        self.assertEqual(costs["requestid"]["cpython"]["costUs"], 4.0)
        self.assertAlmostEqual(costs["requestid"]["cpython"]["cost"], 0.04)
        self.assertEqual(costs["aggregate"]["cpython"]["costUs"], 150.0)
        self.assertIsNone(costs["breaker"]["cpython"]["costUs"])
        self.assertIsNone(costs["ratelimit"]["pypy"]["costUs"])
        self.assertEqual(run.defaultRow(self.report(), "cpython")["workers"], 2)

    def test_markdown(self) -> None:
        """
        The report has a table of what each feature costs, and the access
        log's cost measured in turn.
        """
        report = self.report()
        report.extras["accessLogPair"] = {"cpython": {"cost": 0.052, "detail": "in turn, 1 worker"}}
        text = run.renderMarkdown(report, run.computeTargets(report))
        self.assertIn("## What each feature costs", text)
        self.assertIn("| access log (on, as shipped) | 95.0 | +5.0 µs (+5.3%) | – | – |", text)
        self.assertIn("| request ids | 104.0 | +4.0 µs (+4.0%) | – | – |", text)
        self.assertIn("access log on vs off in turn, cpython: +5.2% (in turn, 1 worker)", text)


class PlanTests(SynchronousTestCase):
    """
    The rows of a run, before any is measured.
    """

    def test_headlineFirst(self) -> None:
        """
        The report leads with the default configuration's rows (one per
        interpreter, the default workers), before nginx and the rest.
        """
        options = run.parseArgs(["--quick", "--pypy", "/nowhere/pypy", "--workers", "4"])
        bench = run.Bench(options, run.Children(Path(self.mktemp())), run.Report())
        bench.planGatewayRows()
        self.assertEqual(
            [(r["key"], r["workers"]) for r in bench.report.rows],
            [("gateway-plain-cpython-4", 4), ("gateway-plain-pypy-4", 4)],
        )
        self.assertIn("default configuration", bench.report.rows[0]["what"])
        self.assertEqual(bench.workerCounts(), [4, 1])
        # Measuring fills those rows in, rather than adding others.
        row = bench.gatewayRow("gateway-plain-pypy-4", "x", "pypy", 4)
        self.assertIs(row, bench.report.rows[1])
        made = bench.rowsOf("cpython", 4, ("plain", "requestid"))
        self.assertIs(made[0][0], bench.report.rows[0])
        self.assertEqual(
            [(r["key"], path) for r, path in made],
            [("gateway-plain-cpython-4", "/plain"), ("gateway-requestid-cpython-4", "/request-id")],
        )

    def test_onlyOthers(self) -> None:
        """
        Without the gateway group (C{--only nginx}), no gateway row.
        """
        options = run.parseArgs(["--quick", "--only", "nginx"])
        bench = run.Bench(options, run.Children(Path(self.mktemp())), run.Report())
        bench.planGatewayRows()
        self.assertEqual(bench.report.rows, [])


class PairedTurnsTests(SynchronousTestCase):
    def test_alternating(self) -> None:
        """
        Two setups measured in turn go first by turns, an even number of
        times, at least as many as the runs asked for.
        """
        self.assertEqual(run.pairedTurns(1), [(0, 1), (1, 0)])
        self.assertEqual(run.pairedTurns(3), [(0, 1), (1, 0), (0, 1), (1, 0)])
        self.assertEqual(run.pairedTurns(4), [(0, 1), (1, 0), (0, 1), (1, 0)])


class ReportTests(SynchronousTestCase):
    def test_markdown(self) -> None:
        """
        The Markdown report has one table line per row, with the skip
        reason, the failure and the non-2xx count in the notes column.
        """
        report = run.Report()
        report.settings = {"wrk": "wrk -t1 -c50 -d3s --latency", "warmup": 1.0, "pypyWarmup": 30}
        _row(report, "nginx-proxy", reqPerSec=9000.0, p50Ms=5.0, p99Ms=12.0, cpuUsPerReq=30.0)
        _row(report, "gateway-plain-cpython-1", reqPerSec=700.0, non2xx=3)
        _row(report, "gateway-plain-cpython-N", "N", skipped="no `workers:` in the config yet")
        _row(report, "gateway-plain-pypy-1", error="gw exited (1):\nTraceback\nValueError: bad")
        text = run.renderMarkdown(report, run.computeTargets(report))
        lines = [line for line in text.splitlines() if line.startswith("| ") and "|" in line[2:]]
        self.assertIn("| 1 | nginx-proxy | cpython | 1 | 9,000 | 5.00 | 12.00 | 30.0 |  |", lines)
        self.assertIn("3 non-2xx", text)
        self.assertIn("skipped: no `workers:` in the config yet", text)
        self.assertIn("failed: gw exited (1): ValueError: bad", text)


class AnswerCompleteTests(SynchronousTestCase):
    """
    How the direct fan-out of the aggregation-latency measurement knows an
    answer is whole.
    """

    def test_contentLength(self) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
        self.assertFalse(run._answerComplete(bytearray(head[:-2])))
        self.assertFalse(run._answerComplete(bytearray(head + b"abcd")))
        self.assertTrue(run._answerComplete(bytearray(head + b"abcde")))

    def test_chunked(self) -> None:
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        self.assertFalse(run._answerComplete(bytearray(head + b"3\r\nabc\r\n")))
        self.assertTrue(run._answerComplete(bytearray(head + b"3\r\nabc\r\n0\r\n\r\n")))

    def test_notOK(self) -> None:
        """
        An answer other than 200 stops the measurement: it would time
        something else than the nodes' work.
        """
        with self.assertRaises(run.BenchError):
            run._answerComplete(bytearray(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n"))
