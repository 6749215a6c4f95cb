"""
Integration tests of the gateway core: the real C{twistd -n gateway}
process in front of real backends (C{tests/backend_app.py}), everything on
127.0.0.1.

They show that the proxy passes requests and answers on intact, streams
large bodies in bounded memory, spreads load as each balancing algorithm
promises, serves changes made through the admin within a second and without
dropping a request, answers a dead backend quickly, keeps what the admin
created across a restart, and aggregates concurrently.
"""

from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import http.client
import json
import os
import random
import signal
import statistics
import threading
import time
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import pytest
from harness import (
    HOST,
    Backend,
    GatewayProcess,
    Response,
    freePort,
    peakRSS,
    streamingRSSLimit,
    waitFor,
)

pytestmark = pytest.mark.integration

TOKEN = "integration-token"
MB = 1024 * 1024


# -- helpers ------------------------------------------------------------------


def serversOf(*backends: Backend, **weights: int) -> List[Dict[str, Any]]:
    """
    @return: one server resource per backend, named after it (C{b1} ...),
        with the weights given by name.
    """
    servers = []
    for backend in backends:
        server: Dict[str, Any] = {"name": backend.name, "addr": backend.addr}
        if backend.name in weights:
            server["weight"] = weights[backend.name]
        servers.append(server)
    return servers


def gatewayConfig(
    servers: Sequence[Dict[str, Any]] = (),
    clusters: Sequence[Dict[str, Any]] = (),
    apis: Sequence[Dict[str, Any]] = (),
    routings: Sequence[Dict[str, Any]] = (),
    **proxy: Any,
) -> Dict[str, Any]:
    """
    @return: a config with a proxy and an admin on free ports, a file store
        in the test's directory, and the given seed resources.
    """
    config: Dict[str, Any] = {
        "proxy": dict(proxy),
        "admin": {"token": TOKEN},
        "store": "file:data.json",
    }
    for kind, items in (
        ("servers", servers),
        ("clusters", clusters),
        ("apis", apis),
        ("routings", routings),
    ):
        if items:
            config[kind] = list(items)
    return config


def oneClusterConfig(
    backends: Sequence[Backend],
    loadBalance: str = "round-robin",
    pattern: str = "/*",
    weights: Optional[Dict[str, int]] = None,
    node: Optional[Dict[str, Any]] = None,
    **proxy: Any,
) -> Dict[str, Any]:
    """
    @return: a config with one cluster C{c1} over C{backends} and one API
        C{a1} sending C{pattern} to it.
    """
    return gatewayConfig(
        servers=serversOf(*backends, **(weights or {})),
        clusters=[
            {"name": "c1", "servers": [b.name for b in backends], "loadBalance": loadBalance}
        ],
        apis=[{"name": "a1", "urlPattern": pattern, "nodes": [dict(node or {}, cluster="c1")]}],
        **proxy,
    )


def served(response: Response) -> str:
    """
    @return: the name of the backend that answered a proxied request.
    """
    assert response.status == 200, (response.status, response.text)
    name = response.header("x-backend")
    assert name is not None, response.headers
    return name


def startMany(backends: Any, *names: str) -> List[Backend]:
    """
    Start several backends at once (each start is mostly interpreter start
    up, so in parallel they take the time of one).

    @param backends: the C{backends} fixture.
    @return: the backends, in the order of C{names}.
    """
    with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
        return list(pool.map(backends, names))


def countServers(
    gateway: GatewayProcess, path: str, n: int, headers: Optional[Dict[str, str]] = None
) -> List[str]:
    """
    @return: the backend names that answered C{n} sequential C{GET}s, sent
        on one keep-alive connection.
    """
    host, port = gateway.proxyURL[len("http://") :].split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    names = []
    try:
        for _ in range(n):
            connection.request("GET", path, headers=headers or {})
            answer = connection.getresponse()
            body = answer.read()
            names.append(
                served(Response(answer.status, answer.reason, tuple(answer.getheaders()), body))
            )
    finally:
        connection.close()
    return names


def rawRequest(
    url: str,
    method: str,
    target: str,
    headers: Sequence[Tuple[str, str]] = (),
    body: Optional[bytes] = None,
    timeout: float = 10.0,
) -> Response:
    """
    Send a request exactly as given: the target as it is (no
    normalisation), every header line in order (repeats allowed, a C{Host}
    of our own when one is given), and C{body} with its C{Content-Length}.
    """
    host, _, port = url[len("http://") :].partition(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        hasHost = any(k.lower() == "host" for k, _ in headers)
        connection.putrequest(method, target, skip_host=hasHost, skip_accept_encoding=True)
        for name, value in headers:
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        answer = connection.getresponse()
        return Response(answer.status, answer.reason, tuple(answer.getheaders()), answer.read())
    finally:
        connection.close()


def patternChunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    """
    @return: the bytes of C{/bytes/N} (byte I{i} is C{i % 256}) in chunks.
    """
    block = bytes(range(256)) * (size // 256)
    remaining = total
    while remaining > 0:
        chunk = block[: min(size, remaining)]
        remaining -= len(chunk)
        yield chunk


def killHard(backend: Backend) -> None:
    """
    SIGKILL a backend: no clean shutdown, its sockets just die.
    """
    os.kill(backend.pid, signal.SIGKILL)
    backend.proc.wait(5)


def inThread(function: Any, *args: Any, **kwargs: Any) -> Tuple[threading.Thread, List[Any]]:
    """
    Run C{function} in a daemon thread.

    @return: the thread, and a list that will hold C{("ok", result)} or
        C{("error", exception)}.
    """
    outcome: List[Any] = []

    def run() -> None:
        try:
            outcome.append(("ok", function(*args, **kwargs)))
        except BaseException as e:
            outcome.append(("error", e))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def familyCount(backend: Backend, family: str) -> int:
    return backend.stats()["families"].get(family, 0)


# -- 1. proxying ----------------------------------------------------------------


class ProxyingTests:
    """
    Requests and answers pass through intact, but for hop-by-hop headers,
    and the C{X-Forwarded-*} headers tell the backend about the client.
    """

    def test_methodsBodiesHeadersAndQueryIntact(self, backends, gateways):
        """
        GET, POST, PUT and DELETE reach the backend with their method, raw
        path and query (percent-encoding and repeated keys included), custom
        headers (repeated ones in order) and their body byte for byte.
        """
        b1 = backends("b1")
        gateway = gateways(oneClusterConfig([b1]))
        bodies = {
            "GET": None,
            "POST": json.dumps({"user": "ada", "tags": ["x", "y"]}).encode(),
            "PUT": bytes(range(256)) * 40,
            "DELETE": b"reason=cleanup",
        }
        target = "/echo/items/a%20b/%C3%A9?q=1&q=2&empty=&enc=%2F%3F%26"
        for method, body in bodies.items():
            headers = [
                ("X-Custom", f"value-{method}"),
                ("X-Repeated", "first"),
                ("X-Repeated", "second"),
                ("Content-Type", "application/x-test"),
            ]
            answer = rawRequest(gateway.proxyURL, method, target, headers, body)
            assert answer.status == 200, (method, answer.text)
            echoed = answer.json()
            assert echoed["method"] == method
            assert echoed["path"] == target
            assert echoed["query"] == {"q": ["1", "2"], "empty": [""], "enc": ["/?&"]}
            seen = echoed["headers"]
            assert seen["x-custom"] == [f"value-{method}"]
            assert seen["x-repeated"] == ["first", "second"]
            assert seen["content-type"] == ["application/x-test"]
            data = body or b""
            assert echoed["bodyLength"] == len(data), method
            assert echoed["bodySha256"] == hashlib.sha256(data).hexdigest(), method

    def test_answersPassedBack(self, backends, gateways):
        """
        The backend's status, reason and headers come back to the client
        unchanged, for errors too.
        """
        b1 = backends("b1")
        gateway = gateways(oneClusterConfig([b1]))
        answer = gateway.proxy("GET", "/status/418")
        assert answer.status == 418
        assert answer.header("x-backend") == "b1"
        assert answer.json() == {"server": "b1", "status": 418}
        answer = gateway.proxy("GET", "/status/204")
        assert (answer.status, answer.body) == (204, b"")
        answer = gateway.proxy("GET", "/json/thing")
        assert answer.header("content-type") == "application/json"
        assert answer.header("content-length") == str(len(answer.body))

    def test_hopByHopRemovedForwardedSet(self, backends, gateways):
        """
        Hop-by-hop headers (RFC 9110 7.6.1), and any header that
        C{Connection} names, are not forwarded; from a client that is no
        trusted proxy, C{X-Forwarded-For} is its address alone, and
        C{X-Forwarded-Proto} and C{X-Forwarded-Host} are set by the gateway,
        whatever the client said.
        """
        b1 = backends("b1")
        gateway = gateways(oneClusterConfig([b1]))
        headers = [
            ("Host", "api.example.test"),
            ("Connection", "keep-alive, X-Hop-Secret"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Trailer", "X-Checksum"),
            ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
            ("Proxy-Connection", "keep-alive"),
            ("X-Hop-Secret", "do-not-forward"),
            ("X-End-To-End", "forward-me"),
            ("X-Forwarded-For", "203.0.113.7"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "spoofed.example"),
        ]
        answer = rawRequest(gateway.proxyURL, "POST", "/echo/hops", headers, b"payload")
        assert answer.status == 200, answer.text
        seen = answer.json()["headers"]
        for name in (
            "keep-alive",
            "te",
            "trailer",
            "proxy-authorization",
            "proxy-connection",
            "x-hop-secret",
        ):
            assert name not in seen, (name, seen)
        # The upstream connection's own Connection header, if any, is not
        # the client's.
        assert "x-hop-secret" not in ",".join(seen.get("connection", [])).lower()
        assert seen["x-end-to-end"] == ["forward-me"]
        assert seen["x-forwarded-for"] == ["127.0.0.1"]
        assert seen["x-forwarded-proto"] == ["http"]
        assert seen["x-forwarded-host"] == ["api.example.test"]

    def test_chunkedUpload(self, backends, gateways):
        """
        A request body sent chunked (no C{Content-Length}) reaches the
        backend whole.
        """
        b1 = backends("b1")
        gateway = gateways(oneClusterConfig([b1]))
        chunks = [os.urandom(1000 + i) for i in range(300)]
        digest = hashlib.sha256(b"".join(chunks)).hexdigest()
        host, port = gateway.proxyURL[len("http://") :].split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            connection.request("POST", "/upload", body=iter(chunks), encode_chunked=True)
            answer = connection.getresponse()
            data = json.loads(answer.read())
        finally:
            connection.close()
        assert answer.status == 200, data
        assert data["bodyLength"] == sum(map(len, chunks))
        assert data["bodySha256"] == digest


# -- 2. large bodies ------------------------------------------------------------------


class LargeBodyTests:
    """
    Plain proxying streams bodies: 200 MB up or down through the gateway
    keep its peak resident memory under 100 MB (on PyPy: under its RSS at
    start plus 80 MB, L{streamingRSSLimit}).
    """

    size = 200 * MB
    rssLimit = 100 * MB

    def test_upload200MB(self, backends, gateways):
        """
        A 200 MB upload reaches the backend intact, and the gateway's peak
        RSS stays under 100 MB.
        """
        b1 = backends("b1")
        gateway = gateways(oneClusterConfig([b1], node={"timeout": 60}))
        rssLimit = streamingRSSLimit(gateway.pid, self.rssLimit)
        rng = random.Random(2)
        block = bytes(rng.getrandbits(8) for _ in range(64 * 1024))
        digest = hashlib.sha256()

        def body() -> Iterator[bytes]:
            for i in range(self.size // len(block)):
                # A counter makes every block different.
                chunk = i.to_bytes(8, "big") + block[8:]
                digest.update(chunk)
                yield chunk

        host, port = gateway.proxyURL[len("http://") :].split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            connection.request(
                "POST",
                "/upload",
                body=body(),
                headers={"Content-Length": str(self.size)},
                encode_chunked=False,
            )
            answer = connection.getresponse()
            data = json.loads(answer.read())
        finally:
            connection.close()
        assert answer.status == 200, data
        assert data == {
            "server": "b1",
            "bodyLength": self.size,
            "bodySha256": digest.hexdigest(),
        }
        peak = peakRSS(gateway.pid)
        assert peak < rssLimit, f"gateway peak RSS {peak / MB:.1f} MB"

    def test_download200MB(self, backends, gateways):
        """
        A 200 MB answer reaches the client intact, with its
        C{Content-Length}, and the gateway's peak RSS stays under 100 MB,
        also while the client stops reading for a while (backpressure: the
        gateway stops reading from the backend instead of buffering).
        """
        b1 = backends("b1")
        gateway = gateways(oneClusterConfig([b1], node={"timeout": 60}))
        rssLimit = streamingRSSLimit(gateway.pid, self.rssLimit)
        expected = hashlib.sha256()
        for chunk in patternChunks(self.size):
            expected.update(chunk)
        host, port = gateway.proxyURL[len("http://") :].split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=60)
        digest = hashlib.sha256()
        length = 0
        try:
            connection.request("GET", f"/bytes/{self.size}")
            answer = connection.getresponse()
            assert answer.status == 200
            assert answer.getheader("content-length") == str(self.size)
            paused = False
            while True:
                chunk = answer.read(256 * 1024)
                if not chunk:
                    break
                length += len(chunk)
                digest.update(chunk)
                if not paused and length >= 20 * MB:
                    # Without backpressure the fast backend would fill the
                    # gateway's memory with the rest meanwhile.
                    paused = True
                    time.sleep(1.5)
                    peak = peakRSS(gateway.pid)
                    assert peak < rssLimit, f"peak RSS {peak / MB:.1f} MB while paused"
        finally:
            connection.close()
        assert length == self.size
        assert digest.hexdigest() == expected.hexdigest()
        peak = peakRSS(gateway.pid)
        assert peak < rssLimit, f"gateway peak RSS {peak / MB:.1f} MB"


# -- 3. load balancing -----------------------------------------------------------


class BalancingTests:
    """
    Each balancing algorithm spreads requests over a cluster's servers as it
    promises.
    """

    def test_roundRobinExact(self, backends, gateways):
        """
        Round-robin over three servers: 30 requests give exactly 10 each,
        in a fixed rotation.
        """
        trio = startMany(backends, "b1", "b2", "b3")
        gateway = gateways(oneClusterConfig(trio, "round-robin"))
        picks = countServers(gateway, "/echo", 30)
        assert collections.Counter(picks) == {"b1": 10, "b2": 10, "b3": 10}
        # A rotation: every window of three requests covers all servers.
        for i in range(len(picks) - 2):
            assert len(set(picks[i : i + 3])) == 3, picks

    def test_weightedRoundRobinExact(self, backends, gateways):
        """
        Weighted round-robin with weights 3 and 1: 40 requests give exactly
        30 and 10.
        """
        pair = startMany(backends, "b1", "b2")
        config = oneClusterConfig(pair, "weighted-round-robin", weights={"b1": 3, "b2": 1})
        gateway = gateways(config)
        picks = countServers(gateway, "/echo", 40)
        assert collections.Counter(picks) == {"b1": 30, "b2": 10}

    def test_ipHashSticks(self, backends, gateways):
        """
        ip-hash sends every request of one client to one server; with the
        client address taken from C{X-Forwarded-For} (127.0.0.1 is a
        trusted proxy), each of many clients sticks to one server and the
        clients spread over several servers.
        """
        trio = startMany(backends, "b1", "b2", "b3")
        gateway = gateways(oneClusterConfig(trio, "ip-hash", trustedProxies=["127.0.0.1/32"]))
        assert len(set(countServers(gateway, "/echo", 20))) == 1
        perClient = {}
        for i in range(30):
            client = f"198.51.100.{i + 1}"
            picks = countServers(gateway, "/echo", 3, headers={"X-Forwarded-For": client})
            assert len(set(picks)) == 1, (client, picks)
            perClient[client] = picks[0]
        # 30 clients all hashed to one of three servers: (1/3)^29.
        assert len(set(perClient.values())) >= 2, perClient

    def test_leastConnections(self, backends, gateways):
        """
        least-connections keeps new requests away from a server busy with a
        slow one, and spreads concurrent slow requests evenly.
        """
        trio = startMany(backends, "b1", "b2", "b3")
        gateway = gateways(oneClusterConfig(trio, "least-connections"))
        thread, outcome = inThread(gateway.proxy, "GET", "/slow/1500")
        busy = waitFor(
            lambda: next((b for b in trio if familyCount(b, "slow")), None),
            5,
            what="the slow request to reach a backend",
        )
        picks = countServers(gateway, "/echo", 12)
        assert busy.name not in picks, (busy.name, picks)
        assert collections.Counter(picks) == {b.name: 6 for b in trio if b is not busy}
        thread.join(10)
        assert outcome and outcome[0][0] == "ok" and served(outcome[0][1]) == busy.name

        # Six concurrent slow requests: two on each server.
        results: List[Any] = []
        barrier = threading.Barrier(6)

        def slow() -> str:
            barrier.wait(5)
            return served(gateway.proxy("GET", "/slow/1200"))

        workers = [inThread(slow) for _ in range(6)]
        for worker, outcome in workers:
            worker.join(10)
            results.extend(outcome)
        assert [kind for kind, _ in results] == ["ok"] * 6, results
        assert collections.Counter(name for _, name in results) == {"b1": 2, "b2": 2, "b3": 2}

    def test_randomWithinBounds(self, backends, gateways):
        """
        random over three servers: 300 requests give each between 60 and 140
        (expected 100, about five standard deviations either side), and the
        picks are not a fixed rotation.
        """
        trio = startMany(backends, "b1", "b2", "b3")
        gateway = gateways(oneClusterConfig(trio, "random"))
        picks = countServers(gateway, "/echo", 300)
        counts = collections.Counter(picks)
        assert set(counts) == {"b1", "b2", "b3"}
        assert all(60 <= n <= 140 for n in counts.values()), counts
        # A rotation never picks the same server twice in a row; random
        # does, with probability 1 - (2/3)^299.
        assert any(a == b for a, b in zip(picks, picks[1:])), picks


# -- 4. changes through the admin --------------------------------------------------


class LiveChangeTests:
    """
    Changes made through the admin API are served at once, and none of them
    fails a request.
    """

    def test_changeServedWithinOneSecond(self, backends, gateways):
        """
        A new C{urlRewrite}, then a new cluster, put through the admin API,
        each show on the proxy less than a second after the C{PUT} is sent.
        """
        b1, b2 = startMany(backends, "b1", "b2")
        gateway = gateways(
            gatewayConfig(
                servers=serversOf(b1, b2),
                clusters=[{"name": "c1", "servers": ["b1"]}, {"name": "c2", "servers": ["b2"]}],
                apis=[
                    {
                        "name": "live",
                        "urlPattern": "/live/{id}",
                        "nodes": [{"cluster": "c1", "urlRewrite": "/echo/v1/{id}"}],
                    }
                ],
            )
        )
        answer = gateway.proxy("GET", "/live/7")
        assert (served(answer), answer.json()["path"]) == ("b1", "/echo/v1/7")

        def change(node: Dict[str, Any], shows: Any) -> float:
            api = {"urlPattern": "/live/{id}", "nodes": [node]}
            started = time.monotonic()
            put = gateway.admin("PUT", "/api/v1/apis/live", api)
            assert put.status == 200, put.text
            waitFor(lambda: shows(gateway.proxy("GET", "/live/7")), 2, 0.01, "the change")
            return time.monotonic() - started

        elapsed = change(
            {"cluster": "c1", "urlRewrite": "/echo/v2/{id}"},
            lambda a: a.json()["path"] == "/echo/v2/7",
        )
        assert elapsed < 1.0, elapsed
        elapsed = change(
            {"cluster": "c2", "urlRewrite": "/echo/v2/{id}"},
            lambda a: served(a) == "b2",
        )
        assert elapsed < 1.0, elapsed

    def test_noFailedRequestDuringChanges(self, backends, gateways):
        """
        While two clients (one on new connections, one on a keep-alive
        connection) keep sending requests, 20 changes through the admin
        (an API flipped between clusters, servers added to and removed from
        clusters, new weights, balancers, servers and routings created and
        deleted) fail none of them: every answer is a 200 from one of the
        backends, and the changes show.
        """
        b1, b2, b3 = startMany(backends, "b1", "b2", "b3")
        gateway = gateways(
            gatewayConfig(
                servers=serversOf(b1, b2, b3),
                clusters=[
                    {"name": "ca", "servers": ["b1", "b2"]},
                    {"name": "cb", "servers": ["b3"]},
                ],
                apis=[{"name": "flip", "urlPattern": "/echo/*", "nodes": [{"cluster": "ca"}]}],
            )
        )
        api = {"urlPattern": "/echo/*"}
        changes = [
            ("PUT", "/api/v1/apis/flip", dict(api, nodes=[{"cluster": "cb"}])),
            ("PUT", "/api/v1/apis/flip", dict(api, nodes=[{"cluster": "ca"}])),
            ("PUT", "/api/v1/clusters/ca", {"servers": ["b1", "b2", "b3"]}),
            ("PUT", "/api/v1/servers/b1", {"addr": b1.addr, "weight": 5}),
            (
                "PUT",
                "/api/v1/clusters/ca",
                {"servers": ["b1", "b2", "b3"], "loadBalance": "weighted-round-robin"},
            ),
            ("PUT", "/api/v1/clusters/ca", {"servers": ["b2"]}),
            ("PUT", "/api/v1/apis/flip", dict(api, nodes=[{"cluster": "cb"}])),
            ("POST", "/api/v1/servers", {"name": "b1-again", "addr": b1.addr}),
            ("PUT", "/api/v1/clusters/cb", {"servers": ["b3", "b1-again"]}),
            ("PUT", "/api/v1/apis/flip", dict(api, nodes=[{"cluster": "ca"}])),
            ("PUT", "/api/v1/servers/b2", {"addr": b2.addr, "weight": 3}),
            ("PUT", "/api/v1/clusters/ca", {"servers": ["b1", "b2", "b3"]}),
            (
                "POST",
                "/api/v1/routings",
                {
                    "name": "never",
                    "cluster": "cb",
                    "conditions": [{"source": "header", "name": "X-Never", "op": "exists"}],
                },
            ),
            ("DELETE", "/api/v1/routings/never", None),
            ("PUT", "/api/v1/clusters/cb", {"servers": ["b3"]}),
            ("DELETE", "/api/v1/servers/b1-again", None),
            ("PUT", "/api/v1/apis/flip", dict(api, nodes=[{"cluster": "cb"}])),
            ("PUT", "/api/v1/servers/b3", {"addr": b3.addr, "weight": 2}),
            ("PUT", "/api/v1/apis/flip", dict(api, nodes=[{"cluster": "ca"}])),
            (
                "PUT",
                "/api/v1/clusters/ca",
                {"servers": ["b1", "b2"], "loadBalance": "least-connections"},
            ),
        ]
        assert len(changes) == 20

        stop = threading.Event()
        log: List[Tuple[float, Any, Any]] = []
        lock = threading.Lock()

        def record(started: float, status: Any, server: Any) -> None:
            with lock:
                log.append((started, status, server))

        def newConnections() -> None:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    answer = gateway.proxy("GET", "/echo/new", timeout=5)
                    record(started, answer.status, answer.header("x-backend"))
                except Exception as e:
                    record(started, "error", repr(e))

        def keepAlive() -> None:
            host, port = gateway.proxyURL[len("http://") :].split(":")
            connection = http.client.HTTPConnection(host, int(port), timeout=5)
            try:
                while not stop.is_set():
                    started = time.monotonic()
                    try:
                        connection.request("GET", "/echo/kept")
                        answer = connection.getresponse()
                        answer.read()
                        record(started, answer.status, answer.getheader("x-backend"))
                    except Exception as e:
                        record(started, "error", repr(e))
                        connection.close()
            finally:
                connection.close()

        clients = [threading.Thread(target=f, daemon=True) for f in (newConnections, keepAlive)]
        for client in clients:
            client.start()
        try:
            time.sleep(0.2)
            firstChange = time.monotonic()
            for method, path, body in changes:
                answer = gateway.admin(method, path, body)
                assert answer.status in (200, 201, 204), (method, path, answer.text)
                time.sleep(0.05)
            lastChange = time.monotonic()
            time.sleep(0.2)
        finally:
            stop.set()
            for client in clients:
                client.join(10)

        bad = [entry for entry in log if entry[1] != 200 or entry[2] not in ("b1", "b2", "b3")]
        assert bad == [], bad[:10]
        during = [entry for entry in log if firstChange <= entry[0] <= lastChange]
        assert len(during) >= 40, f"only {len(during)} requests ran during the changes"
        # The API was on cluster cb (b3 only) part of the time, and on ca
        # (b1, b2) the rest: both show.
        assert {entry[2] for entry in during} == {"b1", "b2", "b3"}
        final = countServers(gateway, "/echo/final", 6)
        assert set(final) <= {"b1", "b2"}, final


# -- 5. upstream failures ------------------------------------------------------------


class DeadBackendTests:
    """
    A backend killed with SIGKILL is answered 502 at once, never waited for
    until the node timeout; with another server in the cluster, requests go
    there.
    """

    def test_killedBackendGives502Quickly(self, backends, gateways):
        """
        After its only server is killed, an API with a 5 s node timeout
        answers 502 with a JSON error in under 2 s.
        """
        b1 = backends("b1")
        gateway = gateways(oneClusterConfig([b1], node={"timeout": 5}))
        assert served(gateway.proxy("GET", "/echo")) == "b1"
        killHard(b1)
        for _ in range(3):
            started = time.monotonic()
            answer = gateway.proxy("GET", "/echo", timeout=10)
            elapsed = time.monotonic() - started
            assert answer.status == 502, answer.text
            assert answer.header("content-type") == "application/json"
            assert isinstance(answer.json()["error"], str) and answer.json()["error"]
            assert elapsed < 2.0, elapsed

    def test_killedDuringRequestGives502Quickly(self, backends, gateways):
        """
        A backend killed while it holds a request makes that request fail
        with 502 as soon as the connection dies, not at the node timeout.
        """
        b1 = backends("b1")
        gateway = gateways(oneClusterConfig([b1], node={"timeout": 5}))
        thread, outcome = inThread(gateway.proxy, "GET", "/slow/4000", timeout=10)
        waitFor(lambda: familyCount(b1, "slow"), 5, what="the slow request to reach b1")
        killed = time.monotonic()
        killHard(b1)
        thread.join(10)
        elapsed = time.monotonic() - killed
        assert outcome and outcome[0][0] == "ok", outcome
        answer = outcome[0][1]
        assert answer.status == 502, answer.text
        assert answer.header("content-type") == "application/json"
        assert elapsed < 2.0, elapsed

    def test_hungBackendGives504AtTimeout(self, backends, gateways):
        """
        A backend that takes the request and never answers gets a JSON 504
        at the node's timeout (1 s here), neither earlier nor much later.
        """
        b1 = backends("b1")
        gateway = gateways(oneClusterConfig([b1], node={"timeout": 1}))
        b1.control("hang/1")
        started = time.monotonic()
        answer = gateway.proxy("GET", "/echo", timeout=10)
        elapsed = time.monotonic() - started
        assert answer.status == 504, answer.text
        assert answer.header("content-type") == "application/json"
        assert "error" in answer.json()
        assert 0.9 <= elapsed < 2.5, elapsed

    def test_killedOneOfTwoServers(self, backends, gateways):
        """
        With one of two round-robin servers killed, every GET still succeeds
        on the other (a refused connection is retried on the next server).
        """
        b1, b2 = startMany(backends, "b1", "b2")
        gateway = gateways(oneClusterConfig([b1, b2], node={"timeout": 5}))
        assert set(countServers(gateway, "/echo", 4)) == {"b1", "b2"}
        killHard(b1)
        started = time.monotonic()
        assert countServers(gateway, "/echo", 20) == ["b2"] * 20
        assert time.monotonic() - started < 5.0


# -- 6. restart ---------------------------------------------------------------------


class RestartTests:
    """
    What the admin created lives in the store, not in the process.
    """

    def test_restartKeepsAdminResources(self, backends, gateways):
        """
        Servers, clusters, APIs and routings created (and a seeded API
        changed) through the admin are all there, unchanged, after the
        gateway is stopped with SIGTERM and started again with the same
        config and store file, and the proxy serves them.
        """
        b1, b2 = startMany(backends, "b1", "b2")
        config = gatewayConfig(
            servers=serversOf(b1),
            clusters=[{"name": "seeded", "servers": ["b1"]}],
            apis=[{"name": "seeded", "urlPattern": "/seeded/*", "nodes": [{"cluster": "seeded"}]}],
        )
        config["proxy"]["listen"] = f"tcp:{freePort()}:interface={HOST}"
        config["admin"]["listen"] = f"tcp:{freePort()}:interface={HOST}"
        first = gateways(config)
        creations = [
            ("servers", {"name": "b2", "addr": b2.addr, "weight": 2}),
            ("clusters", {"name": "main", "servers": ["b1"], "loadBalance": "least-connections"}),
            ("clusters", {"name": "canary", "servers": ["b2"]}),
            (
                "apis",
                {
                    "name": "users",
                    "urlPattern": "/users/{id}",
                    "method": "GET",
                    "nodes": [{"cluster": "main", "urlRewrite": "/echo/users/{id}"}],
                },
            ),
            (
                "routings",
                {
                    "name": "canary",
                    "api": "users",
                    "cluster": "canary",
                    "conditions": [
                        {"source": "header", "name": "X-Canary", "op": "eq", "value": "1"}
                    ],
                },
            ),
        ]
        for kind, body in creations:
            answer = first.admin("POST", f"/api/v1/{kind}", body)
            assert answer.status == 201, (kind, answer.text)
        changed = {
            "urlPattern": "/seeded/*",
            "nodes": [{"cluster": "canary", "urlRewrite": "/echo/changed"}],
        }
        assert first.admin("PUT", "/api/v1/apis/seeded", changed).status == 200
        kinds = ("servers", "clusters", "apis", "routings")
        before = {kind: first.admin("GET", f"/api/v1/{kind}").json() for kind in kinds}
        assert [r["name"] for r in before["routings"]] == ["canary"]
        assert len(before["servers"]) == 2 and len(before["clusters"]) == 3

        started = time.monotonic()
        status = first.stop(timeout=10)
        assert time.monotonic() - started < 5.0, "the gateway did not stop on SIGTERM"
        assert status in (0, -signal.SIGTERM), first.output()[-2000:]

        second = gateways(config)
        after = {kind: second.admin("GET", f"/api/v1/{kind}").json() for kind in kinds}
        assert after == before
        answer = second.proxy("GET", "/users/42")
        assert (served(answer), answer.json()["path"]) == ("b1", "/echo/users/42")
        answer = second.proxy("GET", "/users/42", headers={"X-Canary": "1"})
        assert served(answer) == "b2"
        answer = second.proxy("GET", "/seeded/x")
        assert (served(answer), answer.json()["path"]) == ("b2", "/echo/changed")


# -- 7. aggregation ----------------------------------------------------------------


class AggregationTests:
    """
    An API with several nodes fans out concurrently through the real
    process and merges the JSON answers.
    """

    def config(self, trio: Sequence[Backend], deadAddr: str) -> Dict[str, Any]:
        servers = serversOf(*trio) + [{"name": "dead", "addr": deadAddr}]
        clusters = [{"name": f"c{i + 1}", "servers": [b.name]} for i, b in enumerate(trio)]
        clusters.append({"name": "dead", "servers": ["dead"]})
        apis = [
            {
                "name": "overview",
                "urlPattern": "/overview/{id}",
                "nodes": [
                    {
                        "cluster": "c1",
                        "urlRewrite": "/json/user-{id}?delay=200",
                        "attrName": "user",
                    },
                    {"cluster": "c2", "urlRewrite": "/json/orders?delay=200", "attrName": "orders"},
                    {"cluster": "c3", "urlRewrite": "/json/prefs?delay=200", "attrName": "prefs"},
                ],
            },
            {
                "name": "optional",
                "urlPattern": "/optional",
                "nodes": [
                    {"cluster": "c1", "urlRewrite": "/json/user", "attrName": "user"},
                    {
                        "cluster": "dead",
                        "urlRewrite": "/json/extra",
                        "attrName": "extra",
                        "required": False,
                    },
                ],
            },
            {
                "name": "required",
                "urlPattern": "/required",
                "nodes": [
                    {"cluster": "c1", "urlRewrite": "/json/user", "attrName": "user"},
                    {"cluster": "dead", "urlRewrite": "/json/extra", "attrName": "extra"},
                ],
            },
        ]
        return gatewayConfig(servers=servers, clusters=clusters, apis=apis)

    def test_threeSlowNodesConcurrently(self, backends, gateways):
        """
        Three nodes that each take 200 ms answer in under 300 ms together
        (not 600 ms), with the merged object keyed by C{attrName}.
        """
        trio = startMany(backends, "b1", "b2", "b3")
        gateway = gateways(self.config(trio, f"{HOST}:{freePort()}"))
        expected = {
            "user": {"name": "user-42", "server": "b1", "value": "user-42@b1"},
            "orders": {"name": "orders", "server": "b2", "value": "orders@b2"},
            "prefs": {"name": "prefs", "server": "b3", "value": "prefs@b3"},
        }
        # The first request also opens the pooled connections.
        assert gateway.proxy("GET", "/overview/42").json() == expected
        timings = []
        for _ in range(3):
            started = time.monotonic()
            answer = gateway.proxy("GET", "/overview/42")
            timings.append(time.monotonic() - started)
            assert answer.status == 200, answer.text
            assert answer.json() == expected
            assert answer.header("x-gateway-partial") is None
        assert min(timings) >= 0.2, timings
        assert statistics.median(timings) < 0.3, timings

    def test_failedNodes(self, backends, gateways):
        """
        A node whose server refuses connections becomes C{null}, named in
        C{X-Gateway-Partial}, when it is optional, and fails the request
        with a JSON 502 when it is required.
        """
        trio = startMany(backends, "b1", "b2", "b3")
        gateway = gateways(self.config(trio, f"{HOST}:{freePort()}"))
        answer = gateway.proxy("GET", "/optional")
        assert answer.status == 200, answer.text
        assert answer.json() == {
            "user": {"name": "user", "server": "b1", "value": "user@b1"},
            "extra": None,
        }
        assert answer.header("x-gateway-partial") == "extra"
        answer = gateway.proxy("GET", "/required")
        assert answer.status == 502, answer.text
        assert answer.header("content-type") == "application/json"
        assert "error" in answer.json()
