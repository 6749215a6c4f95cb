"""
Graceful shutdown of the real gateway process.
"""

from __future__ import annotations

import http.client
import signal
import threading
import time
from typing import List, Optional

import pytest
from harness import freePort, request, waitFor

pytestmark = pytest.mark.integration


def test_sigterm_drains_requests_in_flight(backends, gateways):
    """
    On SIGTERM the gateway stops accepting connections at once, lets the
    requests in flight finish (here a 1.5 s one), then shuts down in order.
    """
    backend = backends("b1")
    gateway = gateways(
        {
            "proxy": {"drainTimeout": 10, "accessLog": False},
            "servers": [{"name": "b1", "addr": backend.addr}],
            "clusters": [{"name": "c", "servers": ["b1"]}],
            "apis": [{"name": "slow", "urlPattern": "/slow/*", "nodes": [{"cluster": "c"}]}],
        }
    )
    assert gateway.proxy("GET", "/slow/1").status == 200
    results = []

    def slowRequest() -> None:
        results.append(gateway.proxy("GET", "/slow/1500", timeout=10))

    thread = threading.Thread(target=slowRequest)
    thread.start()
    waitFor(lambda: backend.stats()["requests"] >= 2, 5, what="the slow request to arrive")
    started = time.monotonic()
    gateway.proc.send_signal(signal.SIGTERM)

    def refused() -> bool:
        try:
            request("GET", gateway.proxyURL + "/slow/1", timeout=1)
        except OSError:
            return True
        return False

    waitFor(refused, 2, interval=0.05, what="the proxy port to close")
    thread.join(10)
    assert [r.status for r in results] == [200]
    assert gateway.proc.wait(10) == -signal.SIGTERM
    assert time.monotonic() - started >= 1.0
    assert "Server Shut Down." in gateway.output()
    assert "still in flight" not in gateway.output()


def test_drain_is_bounded(backends, gateways):
    """
    A request that outlives drainTimeout does not keep the gateway up: it
    stops after the timeout and says how many requests it cut.
    """
    backend = backends("b1")
    gateway = gateways(
        {
            "proxy": {"drainTimeout": 0.5, "accessLog": False},
            "servers": [{"name": "b1", "addr": backend.addr}],
            "clusters": [{"name": "c", "servers": ["b1"]}],
            "apis": [{"name": "slow", "urlPattern": "/slow/*", "nodes": [{"cluster": "c"}]}],
        }
    )
    thread = threading.Thread(
        target=lambda: _ignore(lambda: gateway.proxy("GET", "/slow/3000", timeout=10))
    )
    thread.start()
    waitFor(lambda: backend.stats()["requests"] >= 1, 5, what="the slow request to arrive")
    started = time.monotonic()
    gateway.proc.send_signal(signal.SIGTERM)
    gateway.proc.wait(10)
    assert time.monotonic() - started < 4
    assert "stopping with 1 request(s) still in flight" in gateway.output()
    thread.join(10)


def _ignore(call):
    try:
        call()
    except OSError:
        pass


def test_restart_under_load_costs_only_open_connections(backends, gateways, tmp_path):
    """
    A gateway restarted (SIGTERM, then started again on the same port and
    store) while a keep-alive client keeps sending: no answer is ever cut
    half-way, and what the restart costs is the client's open connection
    (one request sent on it as it closed) and the connections refused while
    no gateway listened.  (The drain of a request in flight is tested
    above.)
    """
    backend = backends("b1")
    port = freePort()
    config = {
        "proxy": {
            "listen": f"tcp:{port}:interface=127.0.0.1",
            "drainTimeout": 10,
            "accessLog": False,
        },
        "store": f"file:{tmp_path / 'restart-store.json'}",
        "servers": [{"name": "b1", "addr": backend.addr}],
        "clusters": [{"name": "c", "servers": ["b1"]}],
        "apis": [{"name": "slow", "urlPattern": "/slow/*", "nodes": [{"cluster": "c"}]}],
    }
    first = gateways(config)
    outcomes: List[str] = []
    stop = threading.Event()

    def client() -> None:
        connection: Optional[http.client.HTTPConnection] = None
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline:
            if connection is None:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                connection.request("GET", "/slow/40")
                response = connection.getresponse()
                body = response.read()
            except ConnectionRefusedError:
                outcomes.append("refused")
                connection.close()
                connection = None
                time.sleep(0.02)
                continue
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                outcomes.append("closed")
                connection.close()
                connection = None
                continue
            except Exception as e:
                outcomes.append(f"bad: {e!r}")
                connection.close()
                connection = None
                continue
            # (A body cut short, by its length or its chunks, raised
            # IncompleteRead above.)
            if response.status == 200 and body:
                outcomes.append("ok")
            else:
                outcomes.append(f"bad: {response.status} {len(body)} bytes")
            if response.getheader("connection") == "close":
                connection.close()
                connection = None
        if connection is not None:
            connection.close()

    thread = threading.Thread(target=client)
    thread.start()
    try:
        waitFor(lambda: outcomes.count("ok") >= 10, 10, what="requests through the first gateway")
        first.proc.send_signal(signal.SIGTERM)
        assert first.proc.wait(15) == -signal.SIGTERM
        before = len(outcomes)
        second = gateways(config)
        assert second.proxyURL == first.proxyURL
        waitFor(
            lambda: outcomes[before:].count("ok") >= 10,
            10,
            what="requests through the restarted gateway",
        )
    finally:
        stop.set()
        thread.join(10)
    print("outcomes:", {o: outcomes.count(o) for o in set(outcomes)})
    assert [o for o in outcomes if o.startswith("bad")] == []
    # The one kept-alive connection is all the restart cut.
    assert outcomes.count("closed") <= 1, outcomes
    assert set(outcomes) <= {"ok", "closed", "refused"}
