"""
Several proxy workers (proxy.workers: N), as real processes on 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import time
from typing import List, Optional

import pytest
from harness import waitFor

from gateway.process.interpreter import PYPY, PYPY_NURSERY

pytestmark = pytest.mark.integration


def workerPIDs(parent: int) -> List[int]:
    """
    @return: the pids of the gateway worker processes of C{parent}.
    """
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"gateway.process.worker" in cmdline:
            pids.append(int(entry))
    return sorted(pids)


def dead(pid: int) -> bool:
    """
    @return: whether C{pid} has finished exiting (a zombie, or reaped): its
        sockets are closed only then, not when its memory is gone.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def cpuTicks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def waitForWorkersServing(gateway, count: int, timeout: float = 10) -> List[dict]:
    """
    Wait until C{GET /api/v1/proxies} lists C{count} workers that each
    serve a revision (a worker confirms one once it has bound the port).

    @return: the workers as listed.
    """

    def serving() -> Optional[List[dict]]:
        proxies = gateway.admin("GET", "/api/v1/proxies").json()
        workers = proxies[0].get("workers", []) if proxies else []
        if len(workers) == count and all(w.get("revision") is not None for w in workers):
            return workers
        return None

    return waitFor(serving, timeout, what=f"{count} workers serving")


def config(backend, workers=2):
    return {
        "proxy": {"workers": workers, "accessLog": False},
        "admin": {"token": "t"},
        "servers": [{"name": "b1", "addr": backend.addr}],
        "clusters": [{"name": "c", "servers": ["b1"]}],
        "apis": [{"name": "echo", "urlPattern": "/echo/*", "nodes": [{"cluster": "c"}]}],
    }


def test_workers_share_the_port_and_are_restarted(backends, gateways):
    """
    With two workers, both serve the proxy port (the kernel spreads new
    connections over their SO_REUSEPORT sockets); a killed worker costs no
    later request and is started again; an admin change reaches every
    worker within a second; SIGTERM stops the workers and the gateway
    exits 0.
    """
    backend = backends("b1")
    gateway = gateways(config(backend))
    waitFor(lambda: len(workerPIDs(gateway.pid)) == 2, 10, what="two workers")
    first, second = workerPIDs(gateway.pid)
    # twistd gateway runs on the gateway's reactor, and so do its workers.
    assert "reactor class: gateway.http.reactor.GatewayReactor" in gateway.output()
    for pid in (first, second):
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            assert b"\0--reactor\0gateway" in f.read()
        if PYPY:
            # PyPy workers run with the GC nursery the gateway asks for.
            with open(f"/proc/{pid}/environ", "rb") as f:
                assert f"PYPY_GC_NURSERY={PYPY_NURSERY}".encode() in f.read().split(b"\0")
    # A worker reports its stats once it serves: only then is its socket
    # in the port's SO_REUSEPORT group (before, the other takes everything).
    waitFor(
        lambda: len(gateway.admin("GET", "/api/v1/stats").json().get("proxies", [])) == 2,
        10,
        what="both workers serving",
    )
    for _ in range(300):
        assert gateway.proxy("GET", "/echo/x").status == 200

    def statsMerged() -> bool:
        stats = gateway.admin("GET", "/api/v1/stats").json()
        return stats["totals"]["requests"] == 300 and len(stats.get("proxies", [])) == 2

    # Workers report every second; the admin answers their sum.
    waitFor(statsMerged, 5, what="the workers' stats in the admin")
    perWorker = [
        p["stats"]["totals"]["requests"]
        for p in gateway.admin("GET", "/api/v1/stats").json()["proxies"]
    ]
    # (Each request is a new connection: the kernel's hash spreads them.)
    assert all(n >= 30 for n in perWorker), f"both workers must take connections: {perWorker}"
    metrics = gateway.admin("GET", "/metrics").text
    assert 'gateway_requests_total{api="echo"} 300.0' in metrics

    os.kill(first, signal.SIGKILL)
    # Connections already queued on the dying worker's socket die with it
    # (SO_REUSEPORT); once it is gone, nothing may fail.
    waitFor(lambda: dead(first), 5, what="the worker to die")
    for _ in range(50):
        assert gateway.proxy("GET", "/echo/x").status == 200
    waitFor(
        lambda: len(workerPIDs(gateway.pid)) == 2 and first not in workerPIDs(gateway.pid),
        10,
        what="the killed worker to be replaced",
    )

    changed = gateway.admin(
        "PUT",
        "/api/v1/apis/echo",
        {"urlPattern": "/echo/*", "nodes": [{"cluster": "c", "urlRewrite": "/echo/new"}]},
    )
    assert changed.status == 200
    started = time.monotonic()

    def everyWorkerServesTheChange() -> bool:
        # New connections land on either worker: 20 in a row must all see it.
        return all(gateway.proxy("GET", "/echo/x").json()["path"] == "/echo/new" for _ in range(20))

    waitFor(everyWorkerServesTheChange, 5, interval=0.05, what="the change")
    assert time.monotonic() - started < 1.5

    workers = workerPIDs(gateway.pid)
    # twistd re-raises the signal that stopped it once it has shut down in
    # order, so that its parent sees why it ended.
    assert gateway.stop() == -signal.SIGTERM
    assert "Server Shut Down." in gateway.output()
    for pid in workers:
        assert pid not in workerPIDs(gateway.pid)
        assert not os.path.exists(f"/proc/{pid}")


def test_workers_need_a_shared_store(gateways):
    """
    Several workers with an in-memory store (which they could not share)
    is refused at start, naming the key.
    """
    code, output = gateways.expectFailure({"proxy": {"workers": 2}, "store": "memory:"})
    assert code != 0
    assert "proxy.workers" in output


def test_another_reactor_can_be_chosen(backends, gateways):
    """
    C{twistd -r epoll gateway} runs on Twisted's epoll reactor, and so do
    its workers.
    """
    backend = backends("b1")
    gateway = gateways(config(backend), twistdArgs=("-r", "epoll"))
    waitFor(lambda: len(workerPIDs(gateway.pid)) == 2, 10, what="two workers")
    assert "reactor class: twisted.internet.epollreactor.EPollReactor" in gateway.output()
    for pid in workerPIDs(gateway.pid):
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            assert b"\0--reactor\0default" in f.read()
    for _ in range(20):
        assert gateway.proxy("GET", "/echo/x").status == 200


def test_one_worker_per_core_by_default(backends, gateways):
    """
    Without C{workers}, a gateway with a tcp: endpoint and a file store
    runs one worker per core (one core: in its own process).
    """
    backend = backends("b1")
    data = config(backend)
    data["proxy"]["workers"] = None
    gateway = gateways(data)
    cores = os.cpu_count() or 1
    expected = cores if cores > 1 else 0
    waitFor(lambda: len(workerPIDs(gateway.pid)) == expected, 10, what=f"{expected} workers")
    for _ in range(20):
        assert gateway.proxy("GET", "/echo/x").status == 200


def test_memory_store_serves_in_process_by_default(backends, gateways):
    """
    Without C{workers}, a gateway whose store cannot be shared (memory:)
    serves in its own process rather than refusing to start.
    """
    backend = backends("b1")
    data = config(backend)
    data["proxy"]["workers"] = None
    data["store"] = "memory:"
    gateway = gateways(data)
    assert gateway.proxy("GET", "/echo/x").status == 200
    assert workerPIDs(gateway.pid) == []


def test_limits_hold_for_all_the_workers(backends, gateways):
    """
    A rate limit and a server's maxQPS hold for the gateway as a whole:
    the workers keep their buckets in one shared table, so a client whose
    connections the kernel spreads over two workers does not get twice its
    rate, and the server does not get twice its maxQPS.
    """
    backend = backends("b1")
    data = config(backend)
    data["servers"].append({"name": "b2", "addr": backend.addr, "maxQPS": 1})
    data["clusters"].append({"name": "c2", "servers": ["b2"]})
    data["apis"] += [
        {
            "name": "limited",
            "urlPattern": "/limited/*",
            "nodes": [{"cluster": "c", "urlRewrite": "/echo/limited"}],
            "rateLimit": {"rate": 1, "burst": 8, "key": "ip"},
        },
        {
            "name": "slow-server",
            "urlPattern": "/server/*",
            "nodes": [{"cluster": "c2", "urlRewrite": "/echo/server"}],
        },
    ]
    gateway = gateways(data)
    waitFor(lambda: len(workerPIDs(gateway.pid)) == 2, 10, what="two workers")
    workers = workerPIDs(gateway.pid)
    for pid in workers:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            assert b"\0--buckets-fd\0" in f.read()
    # Both workers must be answering before the limits are counted.
    waitForWorkersServing(gateway, 2)
    assert gateway.proxy("GET", "/echo/x").status == 200
    before = {pid: cpuTicks(pid) for pid in workers}

    started = time.monotonic()
    statuses = [gateway.proxy("GET", "/limited/x").status for _ in range(40)]
    elapsed = time.monotonic() - started
    assert set(statuses) <= {200, 429}
    # One bucket of 8, refilled at 1 a second: per-worker buckets would
    # have let about twice as many through.
    assert 8 <= statuses.count(200) <= 8 + int(elapsed) + 1, (statuses, elapsed)

    started = time.monotonic()
    statuses = [gateway.proxy("GET", "/server/x").status for _ in range(20)]
    elapsed = time.monotonic() - started
    assert set(statuses) <= {200, 429}
    assert 1 <= statuses.count(200) <= 1 + int(elapsed) + 1, (statuses, elapsed)

    # The requests (each on a new connection) went to both workers.
    assert all(cpuTicks(pid) > before[pid] for pid in workers)
