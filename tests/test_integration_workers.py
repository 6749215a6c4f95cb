"""
Several proxy workers (proxy.workers: N), as real processes on 127.0.0.1.
"""

from __future__ import annotations

import http.client
import os
import signal
import threading
import time
import urllib.parse
from typing import Any, List, Optional, Tuple

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


def workerServing(workers: List[int], serverPort: int, clientPort: int) -> Optional[int]:
    """
    The worker whose accepted socket is the far end of a client's
    connection: the kernel's table gives the socket's inode, the workers'
    descriptors say which of them holds it.
    """
    inode = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                local = int(fields[1].rsplit(":", 1)[1], 16)
                remote = int(fields[2].rsplit(":", 1)[1], 16)
                if local == serverPort and remote == clientPort:
                    inode = fields[9]
    if inode is None:
        return None
    for pid in workers:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return pid
            except OSError:
                continue
    return None


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
    # What the killed worker counted stays in the gateway's counters: they
    # never go down (Prometheus would take it for a reset), once the worker
    # started in its place has reported (every second) too.
    waitFor(
        lambda: all(
            w["ready"] for w in gateway.admin("GET", "/api/v1/proxies").json()[0]["workers"]
        ),
        10,
        what="the new worker serving",
    )
    time.sleep(2.5)
    assert 'gateway_requests_total{api="echo"} 350.0' in gateway.admin("GET", "/metrics").text
    assert gateway.admin("GET", "/api/v1/stats").json()["totals"]["requests"] == 350

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

    # Keep-alive connections, each known to be served by one worker, and
    # the requests sent over them in turn: both workers take requests.
    parts = urllib.parse.urlsplit(gateway.proxyURL)
    connections: dict = {pid: [] for pid in workers}
    opened = []
    try:
        while min(len(c) for c in connections.values()) < 2 and len(opened) < 64:
            connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
            opened.append(connection)
            connection.request("GET", "/echo/x")
            response = connection.getresponse()
            response.read()
            assert response.status == 200
            owner = workerServing(workers, parts.port, connection.sock.getsockname()[1])
            if owner is not None:
                connections[owner].append(connection)
        assert all(len(c) >= 2 for c in connections.values()), (
            "the kernel gave both workers connections"
        )
        inTurn = [c for pair in zip(*connections.values()) for c in pair]

        def send(path: str, count: int) -> List[int]:
            statuses = []
            for i in range(count):
                connection = inTurn[i % len(inTurn)]
                connection.request("GET", path)
                response = connection.getresponse()
                response.read()
                statuses.append(response.status)
            return statuses

        started = time.monotonic()
        statuses = send("/limited/x", 40)
        elapsed = time.monotonic() - started
        assert set(statuses) <= {200, 429}
        # One bucket of 8, refilled at 1 a second: per-worker buckets would
        # have let about twice as many through.
        assert 8 <= statuses.count(200) <= 8 + int(elapsed) + 1, (statuses, elapsed)

        started = time.monotonic()
        statuses = send("/server/x", 20)
        elapsed = time.monotonic() - started
        assert set(statuses) <= {200, 429}
        assert 1 <= statuses.count(200) <= 1 + int(elapsed) + 1, (statuses, elapsed)
    finally:
        for connection in opened:
            connection.close()


def test_a_created_api_serves_at_once_on_every_worker(backends, gateways):
    """
    An admin write answers once the change serves on every worker: a
    client that creates an API and calls it at once (new connections, so
    the kernel spreads them over both workers) never gets a 404, 50 times
    in a row.  Each answer names the new store revision and says the
    change serves everywhere.
    """
    backend = backends("b1")
    gateway = gateways(config(backend))
    waitForWorkersServing(gateway, 2)
    revisions = []
    for i in range(50):
        created = gateway.admin(
            "POST",
            "/api/v1/apis",
            {
                "name": f"new-{i}",
                "urlPattern": f"/new{i}/*",
                "nodes": [{"cluster": "c", "urlRewrite": f"/echo/new{i}"}],
            },
        )
        assert created.status == 201, created.text
        assert created.header("X-Gateway-Propagation") == "complete"
        revisions.append(int(created.header("X-Gateway-Revision")))
        statuses = [gateway.proxy("GET", f"/new{i}/x").status for _ in range(4)]
        assert statuses == [200] * 4, (i, statuses)
    assert revisions == sorted(set(revisions))


def test_proxies_show_what_each_worker_serves(backends, gateways):
    """
    C{GET /api/v1/proxies} shows the revision the gateway serves and each
    worker's (with its pid), all at the revision the last write answered;
    reads carry the revision they read.
    """
    backend = backends("b1")
    gateway = gateways(config(backend))
    waitForWorkersServing(gateway, 2)
    changed = gateway.admin(
        "PUT",
        "/api/v1/apis/echo",
        {"urlPattern": "/echo/*", "nodes": [{"cluster": "c", "urlRewrite": "/echo/v2"}]},
    )
    assert changed.status == 200, changed.text
    revision = int(changed.header("X-Gateway-Revision"))
    listed = gateway.admin("GET", "/api/v1/proxies")
    assert listed.header("X-Gateway-Revision") == str(revision)
    [proxy] = listed.json()
    assert proxy["revision"] == revision
    assert sorted(w["pid"] for w in proxy["workers"]) == workerPIDs(gateway.pid)
    assert [(w["worker"], w["revision"]) for w in proxy["workers"]] == [
        (0, revision),
        (1, revision),
    ]
    read = gateway.admin("GET", "/api/v1/apis/echo")
    assert read.header("X-Gateway-Revision") == str(revision)
    assert read.header("X-Gateway-Propagation") is None


def test_a_stuck_or_dying_worker_does_not_hold_writes(backends, gateways):
    """
    A worker that does not confirm (stopped) holds a write no longer than
    C{admin.propagationTimeout}, and the answer says the change is not
    everywhere yet; a worker that dies while a write waits for it still
    holds the wait, until the worker started in its place serves (it loads
    the current state first) or the bound passes: an answer that says
    C{complete} comes only once both workers serve it; every write made
    meanwhile serves on the new worker.
    """
    backend = backends("b1")
    data = config(backend)
    data["admin"]["propagationTimeout"] = 4
    gateway = gateways(data)
    waitForWorkersServing(gateway, 2)
    stuck, other = workerPIDs(gateway.pid)

    def create(name: str) -> Tuple[Any, float]:
        started = time.monotonic()
        answer = gateway.admin(
            "POST",
            "/api/v1/apis",
            {
                "name": name,
                "urlPattern": f"/{name}/*",
                "nodes": [{"cluster": "c", "urlRewrite": f"/echo/{name}"}],
            },
        )
        return answer, time.monotonic() - started

    os.kill(stuck, signal.SIGSTOP)
    try:
        answer, elapsed = create("first")
        assert answer.status == 201, answer.text
        assert answer.header("X-Gateway-Propagation") == "incomplete"
        assert 3.9 <= elapsed < 10, elapsed

        done: List[Tuple[Any, float]] = []
        writer = threading.Thread(target=lambda: done.append(create("second")))
        writer.start()
        time.sleep(0.5)
        os.kill(stuck, signal.SIGKILL)
        writer.join(10)
    finally:
        if not dead(stuck):
            os.kill(stuck, signal.SIGKILL)
    [(answer, elapsed)] = done
    assert answer.status == 201, answer.text
    revision = int(answer.header("X-Gateway-Revision"))
    if answer.header("X-Gateway-Propagation") == "complete":
        # (Workers do not go back to older revisions: what serves now
        # served when the answer came.)
        [proxy] = gateway.admin("GET", "/api/v1/proxies").json()
        served = [(w["ready"], w["revision"] >= revision) for w in proxy["workers"]]
        assert served == [(True, True), (True, True)], proxy
        assert stuck not in [w["pid"] for w in proxy["workers"]]
    else:
        assert answer.header("X-Gateway-Propagation") == "incomplete"
        assert elapsed >= 3.9, elapsed
    assert elapsed < 10, elapsed

    waitFor(
        lambda: len(workerPIDs(gateway.pid)) == 2 and stuck not in workerPIDs(gateway.pid),
        15,
        what="the killed worker to be replaced",
    )
    workers = waitForWorkersServing(gateway, 2, timeout=15)
    assert [w["revision"] for w in workers] == [revision, revision]
    assert other in [w["pid"] for w in workers]
    for name in ("first", "second"):
        statuses = [gateway.proxy("GET", f"/{name}/x").status for _ in range(10)]
        assert statuses == [200] * 10, (name, statuses)
