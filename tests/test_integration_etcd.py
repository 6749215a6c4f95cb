"""
Integration tests of a gateway cluster on etcd: two proxy processes and one
admin process (real C{twistd -n gateway}), a real etcd 3.4 (one member, or a
3-member cluster), real backends, everything on 127.0.0.1.

They show that a change made through the admin is served by both proxies
within a second; that a client sending through both proxies sees no failed
request through 50 changes and an etcd restart; that with etcd stopped the
proxies serve on, and the changes made once it is back arrive; that a
3-member etcd cluster losing a member (its leader) keeps everything working;
that the admin lists the live proxies; and that a seed larger than one etcd
transaction lands whole, or stops the start when etcd cannot take it.
"""

from __future__ import annotations

import http.client
import re
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pytest
from etcdserver import etcd, etcdCluster, storeURL  # noqa: F401  (fixtures)
from harness import Backend, GatewayProcess, Response, waitFor

pytestmark = pytest.mark.integration

TOKEN = "etcd-integration-token"


# -- helpers ------------------------------------------------------------------


def served(response: Response) -> str:
    """
    @return: the name of the backend that answered a proxied request.
    """
    assert response.status == 200, (response.status, response.text)
    name = response.header("x-backend")
    assert name is not None, response.headers
    return name


def seed(backends: Sequence[Backend]) -> Dict[str, Any]:
    """
    @return: the seed resources: one server per backend, clusters C{c1}
        (the first backend) and C{c2} (the others), and an API C{live} on
        C{/echo/*} to C{c1}.
    """
    return {
        "servers": [{"name": b.name, "addr": b.addr} for b in backends],
        "clusters": [
            {"name": "c1", "servers": [backends[0].name]},
            {"name": "c2", "servers": [b.name for b in backends[1:]]},
        ],
        "apis": [{"name": "live", "urlPattern": "/echo/*", "nodes": [{"cluster": "c1"}]}],
    }


class Cluster:
    """
    One admin and two proxies on one store.
    """

    def __init__(self, gateways: Any, url: str, backends: Sequence[Backend]) -> None:
        self.admin: GatewayProcess = gateways(
            dict(seed(backends), admin={"token": TOKEN}, store=url), timeout=30
        )
        self.proxies: List[GatewayProcess] = [
            gateways({"proxy": {}, "store": url}, timeout=30) for _ in range(2)
        ]
        for proxy in self.proxies:
            waitFor(
                lambda proxy=proxy: self._serves(proxy),
                30,
                0.05,
                f"{proxy.proxyURL} to serve its first configuration",
            )

    @staticmethod
    def _serves(proxy: GatewayProcess) -> bool:
        try:
            return proxy.proxy("GET", "/echo/ready", timeout=2).status == 200
        except (OSError, http.client.HTTPException):
            return False

    def change(self, method: str, path: str, body: Any = None, timeout: float = 20) -> Response:
        answer = self.admin.admin(method, path, body, timeout=timeout)
        assert answer.status in (200, 201, 204), (method, path, answer.status, answer.text)
        return answer

    def pointAt(self, cluster: str, rewrite: Optional[str] = None) -> Response:
        """
        Send API C{live} to C{cluster}, with an optional URL rewrite.
        """
        node: Dict[str, Any] = {"cluster": cluster}
        if rewrite is not None:
            node["urlRewrite"] = rewrite
        return self.change("PUT", "/api/v1/apis/live", {"urlPattern": "/echo/*", "nodes": [node]})

    def waitServed(self, check: Any, timeout: float, what: str) -> float:
        """
        Wait until every proxy's answer to C{GET /echo/check} passes
        C{check}.

        @return: how long it took.
        """
        started = time.monotonic()
        for proxy in self.proxies:

            def ok(proxy: GatewayProcess = proxy) -> bool:
                try:
                    return bool(check(proxy.proxy("GET", "/echo/check", timeout=2)))
                except (OSError, http.client.HTTPException):
                    return False

            waitFor(ok, timeout, 0.01, f"{proxy.proxyURL}: {what}")
        return time.monotonic() - started


class Load:
    """
    Clients that keep sending through every proxy, on new connections and
    on a keep-alive one, and record every answer.
    """

    def __init__(self, proxies: Sequence[GatewayProcess]) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.log: List[Tuple[float, str, Any, Any]] = []
        self._threads = []
        for proxy in proxies:
            for kind in (self._newConnections, self._keepAlive):
                thread = threading.Thread(target=kind, args=(proxy,), daemon=True)
                self._threads.append(thread)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def _record(self, proxy: GatewayProcess, started: float, status: Any, server: Any) -> None:
        with self._lock:
            self.log.append((started, proxy.proxyURL or "", status, server))

    def _newConnections(self, proxy: GatewayProcess) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                answer = proxy.proxy("GET", "/echo/new", timeout=5)
                self._record(proxy, started, answer.status, answer.header("x-backend"))
            except Exception as e:
                self._record(proxy, started, "error", repr(e))
            time.sleep(0.005)

    def _keepAlive(self, proxy: GatewayProcess) -> None:
        assert proxy.proxyURL is not None
        host, port = proxy.proxyURL[len("http://") :].split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=5)
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    connection.request("GET", "/echo/kept")
                    answer = connection.getresponse()
                    answer.read()
                    self._record(proxy, started, answer.status, answer.getheader("x-backend"))
                except Exception as e:
                    self._record(proxy, started, "error", repr(e))
                    connection.close()
                time.sleep(0.005)
        finally:
            connection.close()

    def failures(self, names: Sequence[str]) -> List[Tuple[float, str, Any, Any]]:
        with self._lock:
            return [e for e in self.log if e[2] != 200 or e[3] not in names]

    def between(self, start: float, end: float) -> List[Tuple[float, str, Any, Any]]:
        with self._lock:
            return [e for e in self.log if start <= e[0] <= end]


# -- tests ------------------------------------------------------------------------


def test_changeServedByBothProxiesWithinOneSecond(etcd, backends, gateways):  # noqa: F811
    """
    A URL rewrite, then a switch to another cluster, put through the admin,
    are each served by both proxies less than a second after the C{PUT}
    was sent.
    """
    b1, b2 = backends("b1"), backends("b2")
    cluster = Cluster(gateways, storeURL([etcd.endpoint]), [b1, b2])
    for proxy in cluster.proxies:
        assert served(proxy.proxy("GET", "/echo/x")) == "b1"

    started = time.monotonic()
    cluster.pointAt("c1", "/echo/v2")
    cluster.waitServed(lambda a: a.json()["path"].startswith("/echo/v2"), 2, "the rewrite")
    assert time.monotonic() - started < 1.0

    started = time.monotonic()
    cluster.pointAt("c2")
    cluster.waitServed(lambda a: served(a) == "b2", 2, "the new cluster")
    assert time.monotonic() - started < 1.0


def test_noFailedRequestThroughChangesAndRestart(etcd, backends, gateways):  # noqa: F811
    """
    While clients keep sending through both proxies, 25 changes, an etcd
    restart, then 25 more changes fail no request: every answer is a 200
    from a backend, both clusters serve in turn, and after the restart the
    changes still reach both proxies.
    """
    b1, b2, b3 = backends("b1"), backends("b2"), backends("b3")
    cluster = Cluster(gateways, storeURL([etcd.endpoint]), [b1, b2, b3])
    names = ("b1", "b2", "b3")

    def changes(count: int) -> None:
        for i in range(count):
            if i % 5 == 4:
                weight = 1 + i % 3
                cluster.change("PUT", "/api/v1/servers/b2", {"addr": b2.addr, "weight": weight})
            else:
                cluster.pointAt("c2" if i % 2 == 0 else "c1")
            time.sleep(0.03)

    with Load(cluster.proxies) as load:
        time.sleep(0.3)
        first = time.monotonic()
        changes(25)
        etcd.restart(downFor=1.0)
        changes(25)
        cluster.pointAt("c2")
        cluster.waitServed(lambda a: served(a) in ("b2", "b3"), 15, "the last change")
        last = time.monotonic()
        time.sleep(0.3)

    assert load.failures(names) == []
    during = load.between(first, last)
    assert len(during) >= 100, f"only {len(during)} requests during the changes"
    assert {entry[3] for entry in during} == set(names)
    for proxy in cluster.proxies:
        assert {e[3] for e in during if e[1] == proxy.proxyURL} == set(names)


def test_proxiesServeWhileEtcdIsDown(etcd, backends, gateways):  # noqa: F811
    """
    With etcd stopped both proxies serve on with their last configuration
    (and the admin answers 503 to a write); once etcd is back, a change made
    through the admin reaches both proxies.
    """
    b1, b2 = backends("b1"), backends("b2")
    cluster = Cluster(gateways, storeURL([etcd.endpoint]), [b1, b2])
    cluster.pointAt("c2")
    cluster.waitServed(lambda a: served(a) == "b2", 2, "c2")

    etcd.stop()
    try:
        with Load(cluster.proxies) as load:
            time.sleep(2.0)
            refused = cluster.admin.admin(
                "PUT", "/api/v1/apis/live", {"urlPattern": "/echo/*", "nodes": [{"cluster": "c1"}]}
            )
            time.sleep(1.0)
        assert refused.status == 503, refused.text
        assert load.failures(("b2",)) == []
        assert len(load.log) >= 50
    finally:
        etcd.start()

    cluster.pointAt("c1", "/echo/after")
    cluster.waitServed(
        lambda a: served(a) == "b1" and a.json()["path"].startswith("/echo/after"),
        15,
        "the change made after etcd came back",
    )
    # Once caught up, the watch is live again: changes are quick.
    started = time.monotonic()
    cluster.pointAt("c2")
    cluster.waitServed(lambda a: served(a) == "b2", 2, "c2 again")
    assert time.monotonic() - started < 1.0


def test_changeLiveAtOnceAfterAnOutage(etcd, backends, gateways):  # noqa: F811
    """
    After etcd was down for 9 s (the watches' back-off grew to its 5 s
    cap), the first change made once it answers again is live on every
    worker within a second: its write answers C{complete} at once, rather
    than after the watch's back-off ran out (it took 3 to 5 s).
    """
    b1, b2 = backends("b1"), backends("b2")
    gateway = gateways(
        dict(
            seed([b1, b2]),
            admin={"token": TOKEN},
            proxy={"workers": 2},
            store=storeURL([etcd.endpoint]),
        ),
        timeout=30,
    )
    waitFor(lambda: gateway.proxy("GET", "/echo/x", timeout=2).status == 200, 30, 0.05, "serving")
    etcd.stop()
    try:
        time.sleep(9.0)
    finally:
        etcd.start()
    started = time.monotonic()
    answer = gateway.admin(
        "PUT", "/api/v1/apis/live", {"urlPattern": "/echo/*", "nodes": [{"cluster": "c2"}]}
    )
    took = time.monotonic() - started
    assert answer.status == 200, answer.text
    assert answer.header("x-gateway-propagation") == "complete"
    assert took < 1.0, f"the write answered after {took:.1f} s"
    for _ in range(10):
        assert served(gateway.proxy("GET", "/echo/x")) == "b2"


def test_proxiesStartBeforeEtcd(tmp_path, backends, gateways):
    """
    A proxy started while etcd is down answers 503 until etcd is up, then
    serves the configuration in it.
    """
    from etcdserver import EtcdServer, etcdAvailable

    if not etcdAvailable():
        pytest.skip("no etcd server")
    b1 = backends("b1")
    server = EtcdServer(tmp_path)
    try:
        proxy = gateways({"proxy": {}, "store": storeURL([server.endpoint])}, timeout=30)
        answer = proxy.proxy("GET", "/echo/early", timeout=5)
        assert answer.status == 503, answer.text
        server.start()
        admin = gateways(
            dict(seed([b1]), admin={"token": TOKEN}, store=storeURL([server.endpoint]))
        )
        # The admin answers before its seed is in etcd (a store that does
        # not answer at once is seeded once the gateway runs).
        waitFor(
            lambda: admin.admin("GET", "/api/v1/apis/live").status == 200,
            10,
            0.05,
            "the admin's seed in etcd",
        )
        waitFor(lambda: Cluster._serves(proxy), 15, 0.05, "the proxy to serve")
    finally:
        server.cleanup()


def test_etcdClusterLosingOneMember(etcdCluster, backends, gateways):  # noqa: F811
    """
    On a 3-member etcd cluster, killing the member every gateway talks to
    first (the leader, the worst case) fails no proxied request, and
    changes made through the admin afterwards are committed and reach both
    proxies within a second of the admin's answer.
    """
    b1, b2 = backends("b1"), backends("b2")
    leader = etcdCluster.leader()
    ordered = [leader] + [m for m in etcdCluster.members if m is not leader]
    cluster = Cluster(gateways, storeURL([m.endpoint for m in ordered]), [b1, b2])
    with Load(cluster.proxies) as load:
        time.sleep(0.3)
        leader.kill()
        time.sleep(0.5)
        for target, backend in (("c2", "b2"), ("c1", "b1"), ("c2", "b2")):
            cluster.pointAt(target)
            elapsed = cluster.waitServed(lambda a, b=backend: served(a) == b, 5, target)
            assert elapsed < 1.0, elapsed
    assert load.failures(("b1", "b2")) == []
    assert len(load.log) >= 50


def test_adminListsProxies(etcd, backends, gateways):  # noqa: F811
    """
    C{GET /api/v1/proxies} on the admin lists both proxies, each once, with
    its version and start time, ready.  (Needs the registry wired into
    L{gateway.process.root.makeService} for stores that provide
    L{gateway.interfaces.ISharedStore}.)
    """
    b1 = backends("b1")
    cluster = Cluster(gateways, storeURL([etcd.endpoint]), [b1])

    def listed() -> Any:
        answer = cluster.admin.admin("GET", "/api/v1/proxies")
        assert answer.status == 200, answer.text
        proxies = answer.json()
        return proxies if len(proxies) == 2 and all(p.get("ready") for p in proxies) else None

    proxies = waitFor(listed, 10, 0.1, "both proxies to be listed, ready")
    addresses = sorted(p["addr"] for p in proxies)
    expected = sorted(p.proxyURL[len("http://") :] for p in cluster.proxies)
    assert addresses == expected
    for record in proxies:
        assert record["version"] and record["startedAt"]


def bigSeed(backend: Backend, apis: int) -> Dict[str, Any]:
    """
    @return: a seed of one server, one cluster and C{apis} APIs
        (C{/api{i}/*} to that cluster's C{/echo/api{i}}).
    """
    return {
        "servers": [{"name": backend.name, "addr": backend.addr}],
        "clusters": [{"name": "c1", "servers": [backend.name]}],
        "apis": [
            {
                "name": f"api{i}",
                "urlPattern": f"/api{i}/*",
                "nodes": [{"cluster": "c1", "urlRewrite": f"/echo/api{i}"}],
            }
            for i in range(apis)
        ],
    }


def revisionsServed(gateway: GatewayProcess) -> List[Tuple[str, int]]:
    """
    @return: C{(what, revision)} for each store revision the gateway
        served (its first, then each its watch brought) or refused, from
        its log, each once.
    """
    found = []
    for line in gateway.output().splitlines():
        match = re.search(
            r"\[gateway\.(?:routing\.snapshot|process\.storeservice)#\w+\] "
            r"(serving|refused) store revision (\d+)",
            line,
        )
        if match and (match.group(1), int(match.group(2))) not in found:
            found.append((match.group(1), int(match.group(2))))
    return found


def test_largeSeedServedWhole(etcd, backends, gateways):  # noqa: F811
    """
    A config file seeding 600 resources (more than etcd takes in one
    transaction) lands whole: the admin lists every API, the gateway that
    seeded and a proxy that was already watching serve all of them, and
    the watching proxy went from the empty store to the full seed in one
    state (no half-seed served or refused on the way).
    """
    b1 = backends("b1")
    url = storeURL([etcd.endpoint])
    watching = gateways({"proxy": {}, "store": url}, timeout=30)
    waitFor(lambda: revisionsServed(watching), 15, 0.05, "the empty store served")
    seeder = gateways(
        dict(bigSeed(b1, 598), admin={"token": TOKEN}, proxy={}, store=url), timeout=60
    )

    def listed() -> Any:
        answer = seeder.admin("GET", "/api/v1/apis")
        return answer if answer.status == 200 and len(answer.json()) == 598 else None

    answer = waitFor(listed, 30, 0.1, "the 598 seeded APIs")
    assert sorted(api["name"] for api in answer.json())[:2] == ["api0", "api1"]
    for gateway in (seeder, watching):
        for i in (0, 299, 597):
            waitFor(
                lambda g=gateway, i=i: g.proxy("GET", f"/api{i}/x", timeout=5).status == 200,
                15,
                0.05,
                f"/api{i}/ served by {gateway.proxyURL}",
            )
            answer = gateway.proxy("GET", f"/api{i}/x")
            assert served(answer) == "b1"
            assert answer.json()["path"] == f"/echo/api{i}"
    served_ = revisionsServed(watching)
    assert [what for what, _ in served_] == ["serving", "serving"], served_
    assert "seeded 600 resource(s)" in seeder.output()


def test_seedEtcdRefusesStopsTheStart(tmp_path, gateways):
    """
    A seed etcd cannot take (its C{--max-txn-ops} set lower than any
    useful transaction) stops the gateway's start: it exits with a
    non-zero status and a message that names the seed and the etcd
    setting, instead of serving an empty configuration.
    """
    from etcdserver import EtcdServer, etcdAvailable

    if not etcdAvailable():
        pytest.skip("no etcd server")
    server = EtcdServer(tmp_path, extraArgs=["--max-txn-ops", "4"])
    try:
        server.start()
        seedOf = {
            "servers": [{"name": f"s{i}", "addr": f"127.0.0.1:{9000 + i}"} for i in range(20)]
        }
        status, output = gateways.expectFailure(
            dict(seedOf, admin={"token": TOKEN}, store=storeURL([server.endpoint])), timeout=60
        )
    finally:
        server.cleanup()
    assert status != 0, output
    assert "cannot start" in output and "seeding 20 resource(s)" in output, output
    assert "--max-txn-ops" in output, output
