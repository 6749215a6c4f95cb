"""
Proxy workers that cannot start (C{proxy.workers: 2}), as real processes on
127.0.0.1: a gateway whose workers cannot start stops with a non-zero exit
status, as a one-process gateway does; a worker that cannot start after a
crash is tried again, and the gateway says it is not ready meanwhile.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time

import pytest
from harness import HOST, freePort, waitFor
from test_integration_workers import config, dead, waitForWorkersServing, workerPIDs

pytestmark = pytest.mark.integration

#: How long a gateway whose workers cannot start may take to end (the
#: workers' interpreters start, then fail; the machine is shared).
EXIT_WITHIN = 30.0


def test_a_taken_port_stops_the_start(gateways):
    """
    With two workers and the proxy's port taken by another socket, the
    gateway ends with a non-zero exit status (no worker restarted in a
    loop), the output naming the setting, the address and the worker.
    """
    port = freePort()
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        holder.bind((HOST, port))
        holder.listen(1)
        started = time.monotonic()
        code, output = gateways.expectFailure(
            {
                "proxy": {
                    "listen": f"tcp:{port}:interface={HOST}",
                    "workers": 2,
                    "accessLog": False,
                },
                "admin": {"token": "t"},
            },
            timeout=EXIT_WITHIN,
        )
    finally:
        holder.close()
    assert code != 0, output
    assert time.monotonic() - started < EXIT_WITHIN
    assert f"cannot start: proxy.listen: cannot listen on {HOST}:{port}" in output, output
    assert "proxy worker" in output and "exited with status 78" in output, output
    assert "restarting in" not in output, output


def test_an_access_log_that_cannot_be_opened_stops_the_start(gateways, tmp_path):
    """
    With two workers and an access log in a directory that does not
    exist, the gateway ends with a non-zero exit status, the output naming
    C{proxy.accessLog.path}.
    """
    code, output = gateways.expectFailure(
        {
            "proxy": {
                "workers": 2,
                "accessLog": {"path": str(tmp_path / "missing" / "access.log")},
            },
            "admin": {"token": "t"},
        },
        timeout=EXIT_WITHIN,
    )
    assert code != 0, output
    assert "cannot start: proxy.accessLog.path: cannot open" in output, output
    assert "exited with status 78" in output, output
    assert "restarting in" not in output, output


def test_a_worker_that_cannot_restart_is_not_ready(backends, gateways, tmp_path):
    """
    Once the gateway has started, a worker that dies and then cannot start
    (its access log's directory is gone) is tried again with a back-off:
    the gateway keeps running and stays ready (the other worker serves:
    C{/readyz} 200, requests answered), C{/api/v1/proxies} shows that worker
    not ready, and a write answers C{incomplete}; once it can start again
    it serves.
    """
    logs = tmp_path / "logs"
    logs.mkdir()
    data = config(backends("b1"))
    data["proxy"]["accessLog"] = {"path": str(logs / "access.log")}
    data["admin"]["propagationTimeout"] = 1
    gateway = gateways(data)
    waitForWorkersServing(gateway, 2)
    assert gateway.admin("GET", "/readyz").status == 200
    first, _ = workerPIDs(gateway.pid)

    shutil.rmtree(logs)
    os.kill(first, signal.SIGKILL)
    waitFor(lambda: dead(first), 5, what="the worker to die")
    waitFor(lambda: "trying again" in gateway.output(), 15, what="the worker to fail its restart")
    assert gateway.alive(), "the gateway must keep running"
    assert gateway.admin("GET", "/readyz").status == 200
    assert all(gateway.proxy("GET", "/echo/x").status == 200 for _ in range(20))
    [proxy] = gateway.admin("GET", "/api/v1/proxies").json()
    assert proxy["ready"] is True
    assert [w["ready"] for w in proxy["workers"]].count(False) == 1, proxy
    changed = gateway.admin(
        "PUT",
        "/api/v1/apis/echo",
        {"urlPattern": "/echo/*", "nodes": [{"cluster": "c", "urlRewrite": "/echo/v2"}]},
    )
    assert changed.status == 200, changed.text
    assert changed.header("X-Gateway-Propagation") == "incomplete"

    logs.mkdir()

    def allServing() -> bool:
        [proxy] = gateway.admin("GET", "/api/v1/proxies").json()
        return all(w["ready"] for w in proxy["workers"])

    waitFor(allServing, 30, what="every worker serving again")
    assert gateway.admin("GET", "/readyz").status == 200
