"""
Integration tests, on a real etcd, of an admin write that waits for every
proxy (C{?wait=proxies}), of the revisions the proxies' records carry, and
of a start that fails once the store answers (after the reactor started):
real C{twistd -n gateway} processes on 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any, List

import pytest
from etcdserver import etcd, storeURL  # noqa: F401  (fixtures)
from harness import waitFor
from test_integration_etcd import Cluster, seed, served

pytestmark = pytest.mark.integration


def live(cluster: Cluster, target: str, query: str = "") -> Any:
    """
    Point API C{live} at C{target} through the admin.
    """
    answer = cluster.admin.admin(
        "PUT",
        "/api/v1/apis/live" + query,
        {"urlPattern": "/echo/*", "nodes": [{"cluster": target}]},
    )
    assert answer.status == 200, answer.text
    return answer


def waitForServing(cluster: Any, count: int) -> None:
    """
    Wait until C{count} proxies are registered and each serves a revision:
    a proxy that serves nothing yet is starting, and no write waits for it.
    """

    def serving() -> bool:
        proxies = cluster.admin.admin("GET", "/api/v1/proxies").json()
        return len(proxies) == count and all(p["revision"] is not None for p in proxies)

    waitFor(serving, 30, what=f"{count} proxies registered and serving")


def test_waitForProxies(etcd, backends, gateways):  # noqa: F811
    """
    With C{?wait=proxies}, a write answers once every registered proxy (and
    each of its workers) serves it: the proxies serve the change at once,
    and C{GET /api/v1/proxies} shows every proxy and worker at the
    revision the write answered.
    """
    b1, b2 = backends("b1"), backends("b2")
    cluster = Cluster(gateways, storeURL([etcd.endpoint]), [b1, b2])
    waitForServing(cluster, 2)
    for target, backend in (("c2", "b2"), ("c1", "b1"), ("c2", "b2")):
        answer = live(cluster, target, "?wait=proxies")
        assert answer.header("X-Gateway-Propagation") == "complete"
        revision = int(answer.header("X-Gateway-Revision"))
        for proxy in cluster.proxies:
            # New connections: whichever worker the kernel picks.
            assert [served(proxy.proxy("GET", "/echo/x")) for _ in range(6)] == [backend] * 6
        records = cluster.admin.admin("GET", "/api/v1/proxies").json()
        assert [r["revision"] for r in records] == [revision, revision]
        for record in records:
            workers = record.get("workers") or [{"revision": record["revision"]}]
            assert {w["revision"] for w in workers} == {revision}


def test_waitForProxiesIsBounded(etcd, backends, gateways):  # noqa: F811
    """
    A registered proxy that does not serve the change (stopped) holds a
    C{?wait=proxies} write no longer than C{admin.propagationTimeout}, and
    the answer says the change is not everywhere yet.
    """
    b1, b2 = backends("b1"), backends("b2")
    cluster = Cluster(gateways, storeURL([etcd.endpoint]), [b1, b2])
    waitForServing(cluster, 2)
    stopped = cluster.proxies[0]
    os.kill(stopped.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        answer = live(cluster, "c2", "?wait=proxies")
        elapsed = time.monotonic() - started
    finally:
        os.kill(stopped.pid, signal.SIGCONT)
    assert answer.header("X-Gateway-Propagation") == "incomplete"
    assert 1.9 <= elapsed < 6, elapsed
    # Once it runs again it catches up.
    cluster.waitServed(lambda a: served(a) == "b2", 10, "c2")


def test_seedRefusedOnceTheStoreAnswers(etcd, backends, gateways):  # noqa: F811
    """
    A seed that does not compile with what etcd holds (a second API on the
    route of one already there) is found once etcd answers, after the
    reactor started: the gateway stops with a message naming the API and
    a non-zero exit status, and writes nothing.
    """
    b1 = backends("b1")
    url = storeURL([etcd.endpoint])
    cluster = Cluster(gateways, url, [b1])
    data = seed([b1])
    data["apis"] = [{"name": "clash", "urlPattern": "/echo/*", "nodes": [{"cluster": "c1"}]}]
    data.update(proxy={}, store=url)
    status, output = gateways.expectFailure(data, timeout=30)
    assert status != 0, output
    assert "clash" in output
    assert "cannot start" in output
    apis: List[str] = [a["name"] for a in cluster.admin.admin("GET", "/api/v1/apis").json()]
    assert apis == ["live"]
