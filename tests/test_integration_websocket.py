"""
WebSocket pass-through with real processes on 127.0.0.1: a real client and
a real echo server (the C{websockets} library, C{tests/ws_backend.py})
through a real gateway.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import random
import resource
import signal
import socket
import struct
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
from harness import (
    WebSocketBackend,
    peakRSS,
    request,
    startWebSocketBackend,
    streamingRSSLimit,
    waitFor,
)
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

pytestmark = pytest.mark.integration


@pytest.fixture
def wsBackend(tmp_path: Path) -> Iterator[WebSocketBackend]:
    """
    A WebSocket echo server, stopped after the test.
    """
    backend = startWebSocketBackend(tmp_path)
    try:
        yield backend
    finally:
        backend.stop()


def config(backend: Any, **api: Any) -> Dict[str, Any]:
    """
    A gateway with one API, C{/*} to C{backend}, with C{websocket} and
    the fields given, and an admin.
    """
    spec: Dict[str, Any] = {
        "name": "ws",
        "urlPattern": "/*",
        "nodes": [{"cluster": "c"}],
        "websocket": True,
    }
    spec.update(api)
    return {
        "proxy": {"accessLog": False},
        "admin": {"token": "t"},
        "servers": [{"name": "b1", "addr": backend.addr}],
        "clusters": [{"name": "c", "servers": ["b1"]}],
        "apis": [spec],
    }


def wsURL(gateway: Any, path: str) -> str:
    return gateway.proxyURL.replace("http://", "ws://", 1) + path


def wsConnect(url: str, **kwargs: Any) -> ClientConnection:
    """
    A WebSocket client: no proxy from the environment, no compression (so
    that the bytes sent are the bytes relayed), no automatic pings, no
    message size limit, bounded waits.
    """
    options: Dict[str, Any] = {
        "proxy": None,
        "compression": None,
        "ping_interval": None,
        "max_size": None,
        "open_timeout": 10,
        "close_timeout": 5,
    }
    options.update(kwargs)
    return connect(url, **options)


def apiStats(gateway: Any) -> Dict[str, Any]:
    answer = gateway.admin("GET", "/api/v1/stats")
    assert answer.status == 200, answer
    return answer.json()["apis"]["ws"]


def test_echo(wsBackend, gateways):
    """
    Text, binary, a 16 MiB message and a ping go through the gateway and
    back; the backend saw the handshake with the gateway's forwarding
    headers; the stats count the tunnel and its bytes each way.
    """
    gateway = gateways(config(wsBackend))
    with wsConnect(wsURL(gateway, "/echo?hello=1")) as ws:
        hello = json.loads(ws.recv(timeout=10))
        assert hello["path"] == "/echo?hello=1"
        assert hello["headers"]["upgrade"] == ["websocket"]
        assert hello["headers"]["x-forwarded-for"] == ["127.0.0.1"]
        assert hello["headers"]["via"] == ["1.1 gateway"]
        ws.send("h\u00e9llo")
        assert ws.recv(timeout=10) == "h\u00e9llo"
        ws.send(b"\x00\x01\xff")
        assert ws.recv(timeout=10) == b"\x00\x01\xff"
        big = random.Random(7).randbytes(16 * 1024 * 1024)
        ws.send(big)
        assert ws.recv(timeout=60) == big
        pong = ws.ping(b"are you there")
        assert pong.wait(10)
        stats = apiStats(gateway)["websocket"]
        assert stats["open"] == 1
        assert stats["opened"] == 1
        assert stats["bytesUp"] > 16 * 1024 * 1024
        assert stats["bytesDown"] > 16 * 1024 * 1024
    waitFor(lambda: apiStats(gateway)["websocket"]["open"] == 0, 10, what="the tunnel to close")
    metrics = request("GET", gateway.adminURL + "/metrics", headers={"Authorization": "Bearer t"})
    assert 'gateway_websocket_tunnels_opened_total{api="ws"} 1.0' in metrics.text
    assert 'gateway_websocket_bytes_total{api="ws",direction="up"}' in metrics.text


def test_close_codes(wsBackend, gateways):
    """
    Close codes cross the gateway both ways: the client's reaches the
    backend (which echoes it), the backend's reaches the client with its
    reason.
    """
    gateway = gateways(config(wsBackend))
    with wsConnect(wsURL(gateway, "/echo")) as ws:
        ws.send("x")
        assert ws.recv(timeout=10) == "x"
        ws.close(4001, "client leaves")
        assert ws.close_code == 4001
    waitFor(lambda: 4001 in wsBackend.stats()["closeCodes"], 10, what="the backend to see 4001")
    with wsConnect(wsURL(gateway, "/close/4002")) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4002, "bye 4002")


def test_client_half_close(wsBackend, gateways):
    """
    A client that sends its close frame and half-closes (shuts down its
    sending side) still gets the backend's close frame back: the
    half-close is passed on, the other direction goes on until the backend
    closes, then the client sees the end.
    """
    gateway = gateways(config(wsBackend))
    host, port = gateway.proxyURL[len("http://") :].split(":")
    key = base64.b64encode(os.urandom(16))
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(4096)
            assert chunk, received
            received += chunk
        head, _, rest = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head
        # A masked close frame, code 1000 (RFC 6455 5.5.1), then FIN.
        mask = os.urandom(4)
        payload = struct.pack("!H", 1000)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        sock.sendall(b"\x88\x82" + mask + masked)
        sock.shutdown(socket.SHUT_WR)
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            rest += chunk
    assert rest[:2] == b"\x88\x02", rest
    assert struct.unpack("!H", rest[2:4]) == (1000,)
    waitFor(lambda: 1000 in wsBackend.stats()["closeCodes"], 10, what="the backend's close")
    waitFor(lambda: apiStats(gateway)["websocket"]["open"] == 0, 10, what="the tunnel to end")


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise ValueError(pid)


def test_slow_reader(wsBackend, gateways):
    """
    Backpressure: while a client reads nothing, a backend that floods it
    (128 MiB) is held back by the gateway, whose memory stays bounded;
    once the client reads, every byte arrives.
    """
    gateway = gateways(config(wsBackend))
    total = 128 * 1024 * 1024
    before = _rss(gateway.pid)
    limit = streamingRSSLimit(gateway.pid, before + 40 * 1024 * 1024)
    with wsConnect(wsURL(gateway, f"/flood?bytes={total}"), max_queue=2) as ws:
        peak = 0
        for _ in range(30):
            time.sleep(0.1)
            peak = max(peak, _rss(gateway.pid))
        relayed = apiStats(gateway)["websocket"]["bytesDown"]
        assert relayed < total // 4, relayed
        assert peak < limit, (before, peak, limit)
        received = 0
        while True:
            message = ws.recv(timeout=60)
            if message == "done":
                break
            received += len(message)
        assert received == total
    assert peakRSS(gateway.pid) < limit + 16 * 1024 * 1024


def _raiseFileLimit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"the hard limit of open files is {hard}, below {wanted}")
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def test_thousand_tunnels(wsBackend, gateways):
    """
    1,000 tunnels open at once, each echoing, all counted open, then all
    closed, within a bounded time.
    """
    # The gateway holds two descriptors per tunnel, the client and the
    # backend one each: the children inherit the raised limit.
    _raiseFileLimit(8192)
    gateway = gateways(config(wsBackend))
    url = wsURL(gateway, "/echo")
    count = 1000

    async def run() -> List[str]:
        from websockets.asyncio.client import connect as aconnect

        options = dict(proxy=None, compression=None, ping_interval=None, open_timeout=30)
        clients = []
        for start in range(0, count, 100):
            batch = [aconnect(url, **options) for _ in range(start, min(count, start + 100))]
            clients.extend(await asyncio.gather(*batch))
        loop = asyncio.get_running_loop()
        stats = await loop.run_in_executor(None, apiStats, gateway)
        assert stats["websocket"]["open"] == count, stats

        async def echo(i: int, client: Any) -> str:
            await client.send(f"message {i}")
            return await client.recv()

        answers = await asyncio.gather(*(echo(i, c) for i, c in enumerate(clients)))
        await asyncio.gather(*(c.close() for c in clients))
        return list(answers)

    started = time.monotonic()
    answers = asyncio.run(asyncio.wait_for(run(), 120))
    assert answers == [f"message {i}" for i in range(count)]
    waitFor(lambda: apiStats(gateway)["websocket"]["open"] == 0, 30, what="the tunnels to close")
    assert apiStats(gateway)["websocket"]["opened"] == count
    assert time.monotonic() - started < 150


def test_rate_limit_handshakes(wsBackend, gateways):
    """
    The API's rate limit applies to handshakes: past the burst, a
    handshake gets 429 and never reaches the backend.
    """
    gateway = gateways(config(wsBackend, rateLimit={"rate": 0.01, "burst": 2}))
    url = wsURL(gateway, "/echo")
    with contextlib.ExitStack() as stack:
        opened = [stack.enter_context(wsConnect(url)) for _ in range(2)]
        with pytest.raises(InvalidStatus) as refused:
            stack.enter_context(wsConnect(url))
        assert refused.value.response.status_code == 429
        for ws in opened:
            ws.send("still")
            assert ws.recv(timeout=10) == "still"
    assert wsBackend.stats()["connections"] == 2
    assert apiStats(gateway)["rejects"]["rateLimit"] == 1


def test_max_websockets(wsBackend, gateways):
    """
    Over C{maxWebsockets} open tunnels, a handshake gets 503; once one
    closes, a new one opens.
    """
    gateway = gateways(config(wsBackend, maxWebsockets=2))
    url = wsURL(gateway, "/echo")
    with wsConnect(url):
        with wsConnect(url):
            with pytest.raises(InvalidStatus) as refused:
                with wsConnect(url):
                    pass
            assert refused.value.response.status_code == 503
        waitFor(lambda: apiStats(gateway)["websocket"]["open"] == 1, 10, what="a place to free")
        with wsConnect(url) as third:
            third.send("ok")
            assert third.recv(timeout=10) == "ok"
    assert apiStats(gateway)["websocket"]["overCap"] == 1


def test_upgrade_stripped_without_websocket(backends, gateways):
    """
    On an API without C{websocket}, a handshake is a plain request: the
    backend never sees C{Upgrade} (nor C{Connection}), and the client gets
    the backend's plain answer, not a 101.
    """
    backend = backends("b1")
    gateway = gateways(
        {
            "proxy": {"accessLog": False},
            "servers": [{"name": "b1", "addr": backend.addr}],
            "clusters": [{"name": "c", "servers": ["b1"]}],
            "apis": [{"name": "plain", "urlPattern": "/echo", "nodes": [{"cluster": "c"}]}],
        }
    )
    answer = gateway.proxy(
        "GET",
        "/echo",
        headers={
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13",
        },
    )
    assert answer.status == 200
    seen = answer.json()["headers"]
    assert "upgrade" not in seen
    assert "connection" not in seen
    assert seen["sec-websocket-key"] == ["dGhlIHNhbXBsZSBub25jZQ=="]
    with pytest.raises(InvalidStatus) as refused:
        with wsConnect(wsURL(gateway, "/echo")):
            pass
    assert refused.value.response.status_code == 200


def test_idle_timeout(wsBackend, gateways):
    """
    A tunnel that carries no byte either way for C{websocketIdleTimeout}
    seconds is closed; traffic keeps one open.
    """
    gateway = gateways(config(wsBackend, websocketIdleTimeout=1))
    with wsConnect(wsURL(gateway, "/echo")) as busy:
        for _ in range(6):
            time.sleep(0.4)
            busy.send("tick")
            assert busy.recv(timeout=10) == "tick"
    with wsConnect(wsURL(gateway, "/echo")) as quiet:
        started = time.monotonic()
        with pytest.raises(ConnectionClosed):
            quiet.recv(timeout=10)
        waited = time.monotonic() - started
    assert 0.8 < waited < 5, waited


def test_drain_on_sigterm(wsBackend, gateways):
    """
    On SIGTERM the gateway stops accepting, its open tunnels go on working
    for C{drainTimeout} seconds, then are closed, and the gateway exits.
    """
    settings = config(wsBackend)
    settings["proxy"]["drainTimeout"] = 1.5
    gateway = gateways(settings)
    with wsConnect(wsURL(gateway, "/echo")) as ws:
        ws.send("before")
        assert ws.recv(timeout=10) == "before"
        started = time.monotonic()
        gateway.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        ws.send("during")
        assert ws.recv(timeout=10) == "during"
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        closedAfter = time.monotonic() - started
    assert 1.2 < closedAfter < 8, closedAfter
    assert gateway.proc.wait(15) == -signal.SIGTERM
    output = gateway.output()
    assert "closing 1 WebSocket tunnel(s)" in output
    assert "Server Shut Down." in output


def test_with_workers(wsBackend, gateways):
    """
    With several proxy workers, tunnels work in each, and the gateway's
    stats sum them.
    """
    settings = config(wsBackend)
    settings["proxy"]["workers"] = 2
    gateway = gateways(settings)
    url = wsURL(gateway, "/echo")
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(wsConnect(url)) for _ in range(6)]
        for i, ws in enumerate(clients):
            ws.send(str(i))
            assert ws.recv(timeout=10) == str(i)
        waitFor(
            lambda: apiStats(gateway).get("websocket", {}).get("open") == 6,
            10,
            what="the workers to report their tunnels",
        )
