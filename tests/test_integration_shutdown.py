"""
Graceful shutdown of the real gateway process.
"""

from __future__ import annotations

import signal
import threading
import time

import pytest
from harness import request, waitFor

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
