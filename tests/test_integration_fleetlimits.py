"""
Limits held by a fleet of gateways together, on a real Redis
(C{limits.store}): two gateways (C{twistd gateway}, two proxy workers each)
on one etcd and one C{redis-server}, all on 127.0.0.1.

A client sends five times a limit's rate through both gateways for ten
seconds: what passes stays within M{burst + rate * t} plus the slack that
L{gateway.protection.leases} states, for an API's C{rateLimit}, a server's
C{maxQPS} and a keyed limit.  Redis killed under load: each
C{limits.onFailure} does what it says, the gateways stay up (no 500), and
Redis started again is used again within a second.  And the lease script
itself, run by the real Redis, gives the answers of its Python model.
"""

from __future__ import annotations

import http.client
import math
import random
import threading
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import pytest
from etcdserver import etcd, storeURL  # noqa: F401  (fixtures)
from fakeredis import BucketModel
from harness import GatewayProcess, waitFor
from redisserver import REDIS as REDIS_BINARY
from redisserver import RedisServer, redis  # noqa: F401  (fixtures)

from gateway.protection.redisbuckets import LEASE_SCRIPT

pytestmark = pytest.mark.integration

TOKEN = "fleet-limits"

#: Proxy processes in the fleet: two gateways of two workers.
PROCESSES = 4

#: The default C{limits.leaseTime}.
LEASE_TIME = 0.02


def slack(rate: float, burst: float, processes: int = PROCESSES) -> int:
    """
    @return: the documented slack M{H + 2K} (see L{gateway.protection.leases}):
        three of the largest lease per process.
    """
    largest = max(1, min(int(burst), math.ceil(rate * LEASE_TIME - 1e-9)))
    return processes * 3 * largest


class Fleet:
    """
    Two gateways, two workers each, on one etcd and one Redis; the first
    seeds the configuration.
    """

    def __init__(
        self,
        gateways: Any,
        etcdEndpoint: str,
        redisURL: str,
        resources: Mapping[str, Any],
        onFailure: str = "local",
    ) -> None:
        store = storeURL([etcdEndpoint])
        # 50 ms, not the default 5: this machine's two cores are shared by
        # several test runs, and a call answered late switches a process
        # away from Redis for a probe interval, outside the bound measured
        # here (a killed Redis is noticed at once: its connection goes).
        limits = {"store": redisURL, "onFailure": onFailure, "timeout": 0.05}
        common = {
            "proxy": {"workers": 2, "accessLog": False},
            "admin": {"token": TOKEN},
            "store": store,
            "limits": limits,
        }
        self.gateways: List[GatewayProcess] = [
            gateways(dict(common, **resources), timeout=30),
            gateways(dict(common), timeout=30),
        ]
        for gateway in self.gateways:
            waitFor(
                lambda gateway=gateway: self._ready(gateway),
                30,
                0.1,
                f"{gateway.proxyURL}: both workers on Redis, 2 gateways counted",
            )

    @staticmethod
    def limits(gateway: GatewayProcess) -> Dict[str, Any]:
        stats = gateway.admin("GET", "/api/v1/stats").json()
        return stats.get("limits") or {}

    def _ready(self, gateway: GatewayProcess) -> bool:
        try:
            limits = self.limits(gateway)
        except (OSError, http.client.HTTPException, ValueError):
            return False
        return (
            limits.get("modes", {}).get("shared") == 2
            and limits.get("gateways") == 2
            and limits.get("redis") == "up"
        )

    def modes(self) -> List[Dict[str, int]]:
        return [self.limits(g).get("modes", {}) for g in self.gateways]


class Load:
    """
    A client that sends C{rate} requests a second, spread over the
    gateways, each on a new connection (so the kernel spreads them over
    the workers too), for C{seconds}, and records every answer.
    """

    def __init__(
        self,
        gateways: Sequence[GatewayProcess],
        rate: float,
        seconds: float,
        paths: Sequence[Tuple[str, Mapping[str, str]]],
        threads: int = 8,
    ) -> None:
        self.gateways = gateways
        self.rate = rate
        self.seconds = seconds
        self.paths = paths
        self.threadCount = threads
        self.log: List[Tuple[float, float, Any, int]] = []
        self._lock = threading.Lock()
        self._threads: List[threading.Thread] = []

    def run(self) -> Load:
        self.start()
        return self.join()

    def start(self) -> Load:
        self.began = time.monotonic() + 0.2
        for index in range(self.threadCount):
            thread = threading.Thread(target=self._send, args=(index,), daemon=True)
            self._threads.append(thread)
            thread.start()
        return self

    def join(self) -> Load:
        for thread in self._threads:
            thread.join(self.seconds + 30)
        return self

    def _send(self, index: int) -> None:
        period = self.threadCount / self.rate
        count = int(self.seconds / period)
        rng = random.Random(index)
        for n in range(count):
            due = self.began + (n + index / self.threadCount) * period
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            gateway = self.gateways[(n + index) % len(self.gateways)]
            which = rng.randrange(len(self.paths))
            path, headers = self.paths[which]
            started = time.monotonic()
            try:
                status: Any = gateway.proxy("GET", path, headers=dict(headers), timeout=5).status
            except (OSError, http.client.HTTPException) as e:
                status = repr(e)
            with self._lock:
                self.log.append((started, time.monotonic(), status, which))

    def answers(
        self, start: float = 0.0, end: float = math.inf, which: Optional[int] = None
    ) -> Dict[Any, int]:
        counts: Dict[Any, int] = {}
        with self._lock:
            for began, _, status, path in self.log:
                if start <= began <= end and (which is None or path == which):
                    counts[status] = counts.get(status, 0) + 1
        return counts

    def span(self) -> float:
        """
        @return: seconds from the first request sent to the last answer.
        """
        with self._lock:
            return max(e for _, e, _, _ in self.log) - min(b for b, _, _, _ in self.log)


def resources(
    backendAddr: str, api: Mapping[str, Any], server: Mapping[str, Any] = {}
) -> Dict[str, Any]:  # noqa: B006
    return {
        "servers": [dict({"name": "b1", "addr": backendAddr}, **server)],
        "clusters": [{"name": "c", "servers": ["b1"]}],
        "apis": [
            dict({"name": "limited", "urlPattern": "/echo/*", "nodes": [{"cluster": "c"}]}, **api)
        ],
    }


def checkBound(load: Load, rate: float, burst: float, which: Optional[int] = None) -> int:
    """
    Assert that what passed is within the bound, and near the limit.

    @return: how many passed.
    """
    answers = load.answers(which=which)
    admitted = answers.get(200, 0)
    span = load.span()
    bound = burst + rate * span + slack(rate, burst)
    assert admitted <= bound, (admitted, bound, answers)
    # Not starved either: most of what the limit allows passes.
    assert admitted >= 0.8 * rate * (span - 0.5), (admitted, rate * span, answers)
    assert set(answers) <= {200, 429}, answers
    return admitted


def test_apiRateLimitHeldByTheFleet(etcd, redis, backends, gateways):  # noqa: F811
    """
    An API's C{rateLimit} (20/s, burst 20) holds for both gateways and
    their four workers together: five times the rate sent through both
    for ten seconds passes at most M{burst + rate * t + slack}, and not
    much less than M{rate * t}.
    """
    backend = backends("b1")
    fleet = Fleet(
        gateways,
        etcd.endpoint,
        redis.url,
        resources(backend.addr, {"rateLimit": {"rate": 20, "burst": 20}}),
    )
    load = Load(fleet.gateways, 100.0, 10.0, [("/echo/x", {})]).run()
    checkBound(load, 20.0, 20.0)
    # The decisions were shared: one Redis call per several requests.
    calls = sum(Fleet.limits(g).get("calls", 0) for g in fleet.gateways)
    assert 0 < calls < len(load.log), calls


def test_serverMaxQPSHeldByTheFleet(etcd, redis, backends, gateways):  # noqa: F811
    """
    A server's C{maxQPS} (20) holds for the fleet: what reaches the server
    stays within the bound; the rest is answered 429.
    """
    backend = backends("b1")
    fleet = Fleet(gateways, etcd.endpoint, redis.url, resources(backend.addr, {}, {"maxQPS": 20}))
    before = backend.stats()["families"].get("echo", 0)
    load = Load(fleet.gateways, 100.0, 10.0, [("/echo/x", {})]).run()
    admitted = checkBound(load, 20.0, 20.0)
    served = backend.stats()["families"].get("echo", 0) - before
    assert served == admitted, (served, admitted)


def test_keyedLimitHeldByTheFleet(etcd, redis, backends, gateways):  # noqa: F811
    """
    A keyed limit (C{key: header:X-Client}, 10/s each): each of two
    clients, sending five times its rate through both gateways, gets its
    own share within the bound.
    """
    backend = backends("b1")
    fleet = Fleet(
        gateways,
        etcd.endpoint,
        redis.url,
        resources(backend.addr, {"rateLimit": {"rate": 10, "burst": 10, "key": "header:X-Client"}}),
    )
    paths = [("/echo/x", {"X-Client": "alice"}), ("/echo/x", {"X-Client": "bob"})]
    load = Load(fleet.gateways, 100.0, 10.0, paths).run()
    for which in (0, 1):
        checkBound(load, 10.0, 10.0, which)


def _outage(
    fleet: Fleet,
    redis: RedisServer,  # noqa: F811
    rate: float,
    downFor: float = 3.0,
) -> Tuple[Load, float, float]:
    """
    Load the fleet, kill Redis after 3 s, start it again after C{downFor}
    s, and load on for 4 s more.

    @return: the load, when Redis died and when it was back.
    """
    load = Load(fleet.gateways, rate, 3.0 + downFor + 4.0, [("/echo/x", {})]).start()
    time.sleep(max(0.0, load.began + 3.0 - time.monotonic()))
    killed = time.monotonic()
    redis.kill()
    waitFor(
        lambda: all(m.get("shared", 0) == 0 for m in fleet.modes()),
        5,
        0.05,
        "every worker to leave shared mode",
    )
    time.sleep(max(0.0, killed + downFor - time.monotonic()))
    redis.start()
    back = time.monotonic()
    waitFor(
        lambda: all(m.get("shared", 0) == 2 for m in fleet.modes()),
        # Workers report their state every second.
        3,
        0.05,
        "every worker back on Redis",
    )
    load.join()
    return load, killed, back


def _noServerErrors(load: Load) -> None:
    answers = load.answers()
    assert not [s for s in answers if not isinstance(s, int) or s >= 500 and s != 503], answers


def test_outageLocal(etcd, redis, backends, gateways):  # noqa: F811
    """
    C{onFailure: local}: with Redis killed, each of the two gateways holds
    half the limit, so the fleet still holds it (within its burst and the
    switch); no request fails; Redis back, the shared limit resumes within
    a second.
    """
    backend = backends("b1")
    fleet = Fleet(
        gateways,
        etcd.endpoint,
        redis.url,
        resources(backend.addr, {"rateLimit": {"rate": 20, "burst": 20}}),
        onFailure="local",
    )
    load, killed, back = _outage(fleet, redis, 100.0)
    _noServerErrors(load)
    assert set(load.answers()) <= {200, 429}, load.answers()
    # While away: each gateway's half-buckets (10/s, 10 tokens) start full.
    away = load.answers(killed + 0.1, back)
    assert away.get(200, 0) <= 20 + 20 * (back - killed) + slack(20, 20), away
    assert away.get(429, 0) > 0, away
    # Back: a second later, the fleet's bucket decides again.
    after = load.answers(back + 1.0)
    span = load.span() - (back + 1.0 - load.began)
    assert after.get(200, 0) <= 20 + 20 * span + slack(20, 20), after
    switches = [Fleet.limits(g)["switches"] for g in fleet.gateways]
    assert all(s["local"] >= 2 for s in switches), switches
    metrics = fleet.gateways[0].admin("GET", "/metrics").text
    assert 'gateway_limits_mode{mode="shared"} 2.0' in metrics, metrics
    assert 'gateway_limits_switches_total{mode="local"}' in metrics


def test_outageOpen(etcd, redis, backends, gateways):  # noqa: F811
    """
    C{onFailure: open}: with Redis killed every request passes; Redis back,
    429s come again within a second.
    """
    backend = backends("b1")
    fleet = Fleet(
        gateways,
        etcd.endpoint,
        redis.url,
        resources(backend.addr, {"rateLimit": {"rate": 20, "burst": 20}}),
        onFailure="open",
    )
    load, killed, back = _outage(fleet, redis, 100.0)
    _noServerErrors(load)
    away = load.answers(killed + 0.3, back)
    assert set(away) == {200}, away
    after = load.answers(back + 1.0)
    assert after.get(429, 0) > after.get(200, 0), after


def test_outageClosed(etcd, redis, backends, gateways):  # noqa: F811
    """
    C{onFailure: closed}: with Redis killed every request is refused with
    503 (and no 500); Redis back, requests pass again within a second.
    """
    backend = backends("b1")
    fleet = Fleet(
        gateways,
        etcd.endpoint,
        redis.url,
        resources(backend.addr, {"rateLimit": {"rate": 20, "burst": 20}}),
        onFailure="closed",
    )
    load, killed, back = _outage(fleet, redis, 100.0)
    _noServerErrors(load)
    away = load.answers(killed + 0.3, back)
    assert set(away) == {503}, away
    after = load.answers(back + 1.0)
    assert 503 not in after, after
    assert after.get(200, 0) > 0, after


def test_scriptMatchesItsModel(redis):  # noqa: F811
    """
    The lease script run by the real Redis answers as its Python model
    does (the model the fake Redis and the property test use), and leaves
    the same state, over random calls on Redis's own clock.
    """
    rng = random.Random(7)
    for trial in range(300):
        key = f"gateway:limit:test{trial % 3}"
        rate = rng.choice([0.5, 3.0, 10.0, 1000.0])
        burst = float(rng.randint(1, 20))
        want, debt, back = rng.randint(0, 5), rng.randint(0, 1), rng.randint(0, 3)
        stored = redis.call("GET", key)
        first = redis.call("TIME")
        reply = redis.call(
            "EVAL", LEASE_SCRIPT.source, 1, key, repr(rate), repr(burst), want, debt, back
        )
        last = redis.call("TIME")
        after = redis.call("GET", key)
        # Redis read its clock between the two TIMEs: the model must give
        # the same answer and state for one of those microseconds.
        matched = False
        for now in range(
            int(first[0]) * 1_000_000 + int(first[1]), int(last[0]) * 1_000_000 + int(last[1]) + 1
        ):
            model = BucketModel()
            if stored is not None:
                model.tat[key] = float(stored)
            answer = model.run(key, now, rate, burst, want, debt, back)
            state = model.tat.get(key)
            if answer == reply and (after is None) == (state is None):
                if after is None or float(after) == state:
                    matched = True
                    break
        assert matched, (trial, reply, stored, after, rate, burst, want, debt, back)


# -- several servers, Sentinels ------------------------------------------------


def _oneGateway(gateways: Any, backendAddr: str, url: str) -> GatewayProcess:
    config = dict(
        resources(backendAddr, {"rateLimit": {"rate": 0.5, "burst": 5}}),
        proxy={"workers": 1, "accessLog": False},
        admin={"token": TOKEN},
        store="memory:",
        # (A deadline for this machine's load, shared with other tests: with
        # the default 5 ms a slow turn of the reactor would flip the mode.)
        limits={"store": url, "onFailure": "closed", "gateways": 1, "timeout": 0.25},
    )
    return gateways(config, timeout=30)  # type: ignore[no-any-return]


def _shared(gateway: GatewayProcess) -> bool:
    try:
        return Fleet.limits(gateway).get("mode") == "shared"
    except (OSError, http.client.HTTPException, ValueError):
        return False


def _admitted(gateway: GatewayProcess, count: int) -> Dict[Any, int]:
    counts: Dict[Any, int] = {}
    for _ in range(count):
        status = gateway.proxy("GET", "/echo/x").status
        counts[status] = counts.get(status, 0) + 1
    return counts


def test_failoverToTheNextServer(tmp_path, backends, gateways):  # noqa: F811
    """
    With two servers in C{limits.store} (a master and its replica), the
    gateway uses the master; when the master dies and the replica is made
    master, the gateway finds it and the limit is shared on it.
    """
    master = RedisServer(tmp_path).start()
    replica = RedisServer(tmp_path).start()
    try:
        replica.call("REPLICAOF", "127.0.0.1", str(master.port))
        backend = backends("b1")
        url = f"redis://127.0.0.1:{replica.port},127.0.0.1:{master.port}/0"
        gateway = _oneGateway(gateways, backend.addr, url)
        waitFor(lambda: _shared(gateway), 10, 0.05, "the gateway on the master")
        # The replica is listed first, and passed over.
        assert _admitted(gateway, 10).get(200) == 5
        assert master.call("KEYS", "gateway:limit:*")
        master.kill()
        waitFor(lambda: not _shared(gateway), 5, 0.05, "the gateway to notice")
        assert set(_admitted(gateway, 3)) == {503}
        replica.call("REPLICAOF", "NO", "ONE")
        promoted = time.monotonic()
        waitFor(lambda: _shared(gateway), 5, 0.02, "the gateway on the new master")
        assert time.monotonic() - promoted < 1.5
        answers = _admitted(gateway, 10)
        assert answers.get(429, 0) > 0 and 503 not in answers, answers
        # (Refused without a call while the last answer said empty; the
        # next token, 2 s later, comes from the new master.)
        waitFor(lambda: _admitted(gateway, 1).get(200), 5, 0.1, "a token from the new master")
        # (The call that charges it may come just after the answer.)
        waitFor(lambda: replica.call("KEYS", "gateway:limit:*"), 2, 0.01, "the bucket there")
    finally:
        master.kill()
        replica.kill()


def test_sentinel(tmp_path, backends, gateways):  # noqa: F811
    """
    With C{redis+sentinel://}, the gateway asks a real Sentinel where the
    master is, and shares the limit there.
    """
    master = RedisServer(tmp_path).start()
    sentinelPort = RedisServer(tmp_path).port
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {sentinelPort}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor mymaster 127.0.0.1 {master.port} 1\n"
    )
    sentinel = RedisServer(tmp_path, port=sentinelPort)
    sentinel.command = lambda: [  # type: ignore[method-assign]
        REDIS_BINARY,
        str(conf),
        "--sentinel",
    ]
    try:
        sentinel.start()
        backend = backends("b1")
        gateway = _oneGateway(
            gateways, backend.addr, f"redis+sentinel://127.0.0.1:{sentinelPort}/mymaster/0"
        )
        waitFor(lambda: _shared(gateway), 10, 0.05, "the gateway on the master")
        assert _admitted(gateway, 10).get(200) == 5
        assert master.call("KEYS", "gateway:limit:*")
    finally:
        sentinel.kill()
        master.kill()
