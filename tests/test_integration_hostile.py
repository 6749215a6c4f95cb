"""
Hostile clients and admin hardening against the real C{twistd -n gateway}
process and a real backend, everything on 127.0.0.1.

They show that malformed, oversized, smuggling and path-bypassing requests
are refused before any backend sees them, that slow clients are cut off
without keeping normal ones waiting, and that the admin needs its token on
every route, is never reachable through the proxy port, refuses to start
open to the network without a token, keeps secrets out of the logs and
limits request bodies.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.parse
from typing import Any, Dict, List, Tuple

import pytest
from harness import Backend, GatewayProcess, freePort, request, waitFor
from test_hostile import (
    BYPASSES,
    PUBLIC_ADMIN_PATHS,
    SMUGGLED,
    SMUGGLING,
    Answer,
    concretePaths,
    parseAnswers,
)

pytestmark = pytest.mark.integration

TOKEN = "hostile-admin-token-4f2a9c"


# -- helpers ------------------------------------------------------------------


def hostileConfig(backend: Backend, **limits: Any) -> Dict[str, Any]:
    """
    @return: a gateway config with an admin, a catch-all-free routing table
        (C{/echo/*}, C{/small/*} with a 1000-byte body limit and
        C{/admin/*} denied to everyone) on one backend, and short client
        timeouts.
    """
    allLimits = {
        "maxBodySize": 1_000_000,
        "headerTimeout": 2,
        "bodyTimeout": 3,
        "idleTimeout": 4,
    }
    allLimits.update(limits)
    return {
        "proxy": {"accessLog": False, "limits": allLimits},
        "admin": {"token": TOKEN},
        "store": "file:data.json",
        "servers": [{"name": backend.name, "addr": backend.addr}],
        "clusters": [{"name": "c1", "servers": [backend.name]}],
        "apis": [
            {"name": "echo", "urlPattern": "/echo/*", "nodes": [{"cluster": "c1"}]},
            {
                "name": "small",
                "urlPattern": "/small/*",
                "maxBodySize": 1000,
                "nodes": [{"cluster": "c1", "urlRewrite": "/upload"}],
            },
            {
                "name": "admin",
                "urlPattern": "/admin/*",
                "nodes": [{"cluster": "c1"}],
                "ipAccess": {"deny": ["0.0.0.0/0", "::/0"]},
            },
        ],
    }


def address(url: str) -> Tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def exchange(url: str, data: bytes, timeout: float = 5.0) -> Tuple[List[Answer], float]:
    """
    Send raw bytes on a new connection and read until the server closes it.

    @return: the answers and the seconds until the connection closed.
    """
    started = time.monotonic()
    with socket.create_connection(address(url), timeout=timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        received = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    return parseAnswers(received), time.monotonic() - started


def statuses(url: str, data: bytes, timeout: float = 5.0) -> List[int]:
    return [a.status for a in exchange(url, data, timeout)[0]]


def served(backend: Backend) -> int:
    """
    @return: how many requests the backend served (control calls aside).
    """
    return int(backend.stats()["requests"])


def openFiles(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def get(path: bytes, *headers: bytes) -> bytes:
    lines = [b"GET " + path + b" HTTP/1.1", b"Host: gw", b"Connection: close"] + list(headers)
    return b"\r\n".join(lines) + b"\r\n\r\n"


@pytest.fixture
def setup(backends: Any, gateways: Any) -> Tuple[Backend, GatewayProcess]:
    backend = backends("b1")
    return backend, gateways(hostileConfig(backend))


# -- malformed, oversized, smuggling ---------------------------------------------


def test_malformed_and_oversized(setup: Tuple[Backend, GatewayProcess]) -> None:
    """
    Malformed request lines and headers are 400, oversized URLs 414, header
    blocks 431, an unsupported version 505, CONNECT 501; each answer is
    JSON with Connection: close, and the backend sees none of them.
    """
    backend, gateway = setup
    url = gateway.proxyURL
    assert url is not None
    assert statuses(url, get(b"/echo/ok")) == [200]
    before = served(backend)
    cases = [
        (b"GET /echo/a\r\nHost: gw\r\n\r\n", 400),
        (b"GET  /echo/a HTTP/1.1\r\nHost: gw\r\n\r\n", 400),
        (b"G{T /echo/a HTTP/1.1\r\nHost: gw\r\n\r\n", 400),
        (b"GET /echo/\x7f HTTP/1.1\r\nHost: gw\r\n\r\n", 400),
        (get(b"/echo/a", b"Bad Header: x"), 400),
        (get(b"/echo/a", b"X: a\x00b"), 400),
        (get(b"/echo/a", b" folded: x"), 400),
        (b"GET /echo/a HTTP/1.1\r\n\r\n", 400),
        (get(b"/echo/a", b"Host: second"), 400),
        (get(b"/echo/" + b"a" * 9000), 414),
        (get(b"/echo/a", *[b"X-%d: %s" % (i, b"v" * 1000) for i in range(40)]), 431),
        (get(b"/echo/a", *[b"X-%d: v" % (i,) for i in range(150)]), 431),
        (b"GET /echo/a HTTP/2.0\r\nHost: gw\r\n\r\n", 505),
        (b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n", 501),
    ]
    for data, code in cases:
        answers, _ = exchange(url, data)
        assert [a.status for a in answers] == [code], data[:80]
        assert answers[0].header("connection") == "close"
        assert answers[0].header("content-type") == "application/json"
        assert "error" in answers[0].json()
    assert served(backend) == before


def test_smuggling_never_forwarded(setup: Tuple[Backend, GatewayProcess]) -> None:
    """
    Every request of the smuggling catalogue, with a request to smuggle
    behind it, is answered one 400 and forwarded nowhere.
    """
    backend, gateway = setup
    url = gateway.proxyURL
    assert url is not None
    before = served(backend)
    for name, data in SMUGGLING.items():
        data = data.replace(b"POST /p ", b"POST /echo/p ")
        smuggled = SMUGGLED.replace(b"/smuggled", b"/echo/smuggled")
        assert statuses(url, data + smuggled) == [400], name
    assert served(backend) == before
    # The same framings, unambiguous, are served.
    body = b"3\r\nabc\r\n0\r\n\r\n"
    chunked = b"POST /echo/p HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n"
    answers, _ = exchange(url, chunked + b"Connection: close\r\n\r\n" + body)
    assert [a.status for a in answers] == [200]
    assert answers[0].json()["body"] == "abc"


def test_body_limits(setup: Tuple[Backend, GatewayProcess]) -> None:
    """
    A declared body over the proxy's limit, or over its API's own
    C{maxBodySize}, is answered 413 at once, without waiting for the body;
    a chunked one as soon as it passes the limit; bodies within the limits
    pass.
    """
    backend, gateway = setup
    url = gateway.proxyURL
    assert url is not None
    before = served(backend)
    head = b"POST /echo/big HTTP/1.1\r\nHost: gw\r\nContent-Length: %d\r\n\r\n"
    answers, elapsed = exchange(url, head % (10 * 1024**3,))
    assert [a.status for a in answers] == [413]
    assert elapsed < 1.5
    small = b"PUT /small/x HTTP/1.1\r\nHost: gw\r\nContent-Length: %d\r\n\r\n"
    answers, elapsed = exchange(url, small % (1001,))
    assert [a.status for a in answers] == [413]
    assert elapsed < 1.5

    # Chunked: answered once the total passes 1000, before the last chunk.
    with socket.create_connection(address(url), timeout=5) as s:
        s.sendall(b"PUT /small/x HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n")
        s.sendall(b"258\r\n" + b"x" * 600 + b"\r\n")
        s.sendall(b"258\r\n" + b"x" * 600 + b"\r\n")
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = s.recv(4096)
            assert chunk, "closed without an answer"
            received += chunk
        assert received.startswith(b"HTTP/1.1 413 ")
    assert served(backend) == before

    ok = request("PUT", url + "/small/x", b"y" * 1000)
    assert ok.status == 200 and ok.json()["bodyLength"] == 1000
    ok = request("POST", url + "/echo/x", b"y" * 500_000)
    assert ok.status == 200 and ok.json()["bodyLength"] == 500_000
    big = b"x" * 1_000_001
    assert statuses(url, head % (len(big),) + big) == [413]


def test_path_bypasses(setup: Tuple[Backend, GatewayProcess]) -> None:
    """
    Dot segments, encoded slashes, empty segments and their encodings are
    refused with 400; encoded spellings of a protected API still reach its
    filters (403); nothing gets through to the backend.
    """
    backend, gateway = setup
    url = gateway.proxyURL
    assert url is not None
    before = served(backend)
    for target in BYPASSES:
        target = target.replace(b"/public", b"/echo")
        assert statuses(url, get(target)) == [400], target
    for target in (b"/admin/x", b"/%61dmin/x", b"/%61%64%6d%69%6e/x"):
        assert statuses(url, get(target)) == [403], target
    assert served(backend) == before


# -- slow clients -----------------------------------------------------------------


def test_slowloris(setup: Tuple[Backend, GatewayProcess]) -> None:
    """
    Hundreds of clients trickling their request heads do not slow normal
    requests down; each is answered 408 and closed after the header
    timeout (2 s); an idle kept-alive connection is closed after the idle
    timeout (4 s); the gateway's open files come back to where they were.
    """
    backend, gateway = setup
    url = gateway.proxyURL
    assert url is not None
    assert statuses(url, get(b"/echo/warm")) == [200]
    baseline = openFiles(gateway.pid)
    slow: List[socket.socket] = []
    for _ in range(300):
        s = socket.create_connection(address(url), timeout=10)
        s.sendall(b"GET /echo/slow HTTP/1.1\r\n")
        slow.append(s)
    stop = threading.Event()

    def trickle() -> None:
        while not stop.is_set():
            for s in slow:
                try:
                    s.send(b"X")
                except OSError:
                    pass
            stop.wait(0.25)

    trickler = threading.Thread(target=trickle, daemon=True)
    trickler.start()
    started = time.monotonic()
    try:
        latencies = []
        while time.monotonic() - started < 1.5:
            t0 = time.monotonic()
            assert statuses(url, get(b"/echo/normal")) == [200]
            latencies.append(time.monotonic() - t0)
        assert max(latencies) < 0.5, latencies
        answers = []
        for s in slow:
            data = b""
            while True:
                try:
                    chunk = s.recv(4096)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                data += chunk
            answers.append(data.split(b"\r\n", 1)[0])
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        trickler.join()
        for s in slow:
            s.close()
    assert set(answers) == {b"HTTP/1.1 408 Request Timeout"}
    assert elapsed < 5.0

    with socket.create_connection(address(url), timeout=10) as s:
        s.sendall(b"GET /echo/keep HTTP/1.1\r\nHost: gw\r\n\r\n")
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        idleStart = time.monotonic()
        assert s.recv(65536) == b""
        idle = time.monotonic() - idleStart
    assert 3.5 < idle < 6.0

    waitFor(lambda: openFiles(gateway.pid) <= baseline + 2, 10, what="connections to close")


def test_slow_body(setup: Tuple[Backend, GatewayProcess]) -> None:
    """
    A body trickled in too slowly is answered 408 after the body timeout
    (3 s) and never reaches the backend.
    """
    backend, gateway = setup
    url = gateway.proxyURL
    assert url is not None
    before = served(backend)
    with socket.create_connection(address(url), timeout=10) as s:
        s.sendall(b"POST /echo/x HTTP/1.1\r\nHost: gw\r\nContent-Length: 1000\r\n\r\n")
        started = time.monotonic()
        received = b""
        while not received:
            try:
                s.send(b"x")
            except OSError:
                break
            s.settimeout(0.5)
            try:
                received = s.recv(4096)
            except socket.timeout:
                continue
        elapsed = time.monotonic() - started
    assert received.startswith(b"HTTP/1.1 408 ")
    assert 2.5 < elapsed < 5.0
    assert served(backend) == before


# -- admin ------------------------------------------------------------------------


def test_admin_needs_the_token(setup: Tuple[Backend, GatewayProcess]) -> None:
    """
    On the real admin, every route but the public ones answers 401 without
    the token (so do unknown paths under /api/v1 and /metrics), and
    answers with it.
    """
    _, gateway = setup
    admin = gateway.adminURL
    assert admin is not None
    for path, methods in concretePaths():
        if path in PUBLIC_ADMIN_PATHS:
            continue
        for method in methods:
            body = {} if method in ("POST", "PUT") else None
            for headers in ({}, {"Authorization": "Bearer nope"}):
                answer = request(method, admin + path, body, headers)
                assert answer.status == 401, (method, path, headers)
                assert answer.header("www-authenticate")
            answer = request(method, admin + path, body, {"Authorization": "Bearer " + TOKEN})
            assert answer.status != 401, (method, path)
    assert request("GET", admin + "/api/v1/nothing").status == 401
    metrics = request("GET", admin + "/metrics")
    assert metrics.status in (401, 404), "/metrics answers without the token"
    assert request("GET", admin + "/healthz").status == 200


def test_admin_not_on_the_proxy_port(backends: Any, gateways: Any) -> None:
    """
    The admin's paths on the proxy port are the proxy's: 404 without a
    matching API, the backend's answer with a catch-all API; never admin
    data, token or not.
    """
    backend = backends("b1")
    config = hostileConfig(backend)
    gateway = gateways(config)
    url = gateway.proxyURL
    assert url is not None
    auth = {"Authorization": "Bearer " + TOKEN}
    for method, path in [("GET", "/api/v1/servers"), ("GET", "/api/v1/stats"), ("GET", "/metrics")]:
        answer = request(method, url + path, None, auth)
        assert answer.status == 404, path
        assert answer.json() == {"error": "no API matches this request"}
    answer = request("POST", url + "/api/v1/servers", {"name": "x", "addr": "1.2.3.4:5"}, auth)
    assert answer.status == 404
    assert gateway.admin("GET", "/api/v1/servers/x").status == 404

    catchAll = {"name": "all", "urlPattern": "/*", "nodes": [{"cluster": "c1"}]}
    assert gateway.admin("PUT", "/api/v1/apis/all", catchAll).status in (200, 201)

    def fromBackend() -> bool:
        answer = request("GET", url + "/api/v1/servers", None, auth)
        return answer.status == 404 and answer.header("x-backend") == backend.name

    waitFor(fromBackend, 5, what="the catch-all API")


def test_admin_open_to_the_network_needs_a_token(gateways: Any) -> None:
    """
    An admin listening on every address without a token refuses to start,
    naming admin.token; with a token it starts.
    """
    from gateway.model.config import ConfigError, parseConfig

    listen = f"tcp:{freePort()}:interface=0.0.0.0"
    # Checked in-process first, so that a missing check never opens a port
    # beyond loopback during the test.
    with pytest.raises(ConfigError):
        parseConfig({"admin": {"listen": listen}})
    code, output = gateways.expectFailure({"admin": {"listen": listen}}, timeout=15)
    assert code != 0
    assert "admin.token" in output
    code, output = gateways.expectFailure(
        {"admin": {"listen": f"tcp:{freePort()}"}, "store": "memory:"}, timeout=15
    )
    assert code != 0
    assert "admin.token" in output


def test_admin_body_limit(setup: Tuple[Backend, GatewayProcess]) -> None:
    """
    A request body over 1 MB to the admin is answered 413, at once when it
    is declared, with the admin's JSON error shape.
    """
    _, gateway = setup
    admin = gateway.adminURL
    assert admin is not None
    head = (
        b"POST /api/v1/servers HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer "
        + TOKEN.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    )
    answers, elapsed = exchange(admin, head % (1024**3,))
    assert [a.status for a in answers] == [413]
    assert elapsed < 1.5
    assert set(answers[0].json()) == {"error"}
    big = json.dumps({"name": "s", "addr": "127.0.0.1:1", "pad": "x" * 2_000_000}).encode()
    answer = gateway.admin("POST", "/api/v1/servers", big)
    assert answer.status == 413


def test_secrets_not_logged(backends: Any, gateways: Any) -> None:
    """
    Neither the admin token (right or wrong) nor the credentials clients
    send through the proxy (Authorization, Proxy-Authorization, cookies,
    API keys) appear anywhere in the gateway's output, whatever the
    outcome of the request.
    """
    backend = backends("b1")
    config = hostileConfig(backend)
    config["proxy"]["accessLog"] = True
    gateway = gateways(config)
    url = gateway.proxyURL
    assert url is not None
    secrets = {
        "wrongToken": "wr0ng-t0ken-77d1",
        "bearer": "client-bearer-9c1e",
        "proxyAuth": "cHJveHktc2VjcmV0LTQ0",
        "cookie": "session-cookie-5b2f",
        "apiKey": "api-key-0a8d",
    }
    clientHeaders = {
        "Authorization": "Bearer " + secrets["bearer"],
        "Proxy-Authorization": "Basic " + secrets["proxyAuth"],
        "Cookie": "session=" + secrets["cookie"],
        "X-Api-Key": secrets["apiKey"],
    }
    assert gateway.admin("GET", "/api/v1/servers").status == 200
    created = gateway.admin("POST", "/api/v1/servers", {"name": "s9", "addr": "127.0.0.1:9"})
    assert created.status == 201
    assert gateway.admin("POST", "/api/v1/servers", b"{not json").status == 400
    assert gateway.admin("GET", "/api/v1/nothing").status == 404
    wrong = {"Authorization": "Bearer " + secrets["wrongToken"]}
    assert request("GET", gateway.adminURL + "/api/v1/servers", None, wrong).status == 401
    for path in ("/echo/x", "/admin/x", "/nothing"):
        request("GET", url + path, None, clientHeaders)
    request("POST", url + "/echo/x", b"body", clientHeaders)
    headerLines = [f"{k}: {v}".encode() for k, v in clientHeaders.items()]
    assert statuses(url, get(b"/echo/x", b"Bad Header: x", *headerLines)) == [400]
    assert statuses(url, get(b"/echo/../x", *headerLines)) == [400]
    backend.stop()
    assert request("GET", url + "/echo/x", None, clientHeaders).status in (502, 503)
    gateway.stop()
    output = gateway.output()
    assert '"method":"GET","uri":"/echo/x"' in output, "the access log is expected on"
    for name, secret in list(secrets.items()) + [("admin token", TOKEN)]:
        assert secret not in output, f"{name} written to the log"


def test_admin_limits_after_bad_requests(setup: Tuple[Backend, GatewayProcess]) -> None:
    """
    The admin parses request heads as strictly as the proxy: a smuggling
    attempt is 400 and changes nothing.
    """
    _, gateway = setup
    admin = gateway.adminURL
    assert admin is not None
    body = json.dumps({"name": "smuggled", "addr": "127.0.0.1:1"}).encode()
    data = (
        b"POST /api/v1/servers HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer "
        + TOKEN.encode()
        + b"\r\nContent-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n" % (len(body),)
        + body
    )
    assert statuses(admin, data) == [400]
    assert gateway.admin("GET", "/api/v1/servers/smuggled").status == 404
