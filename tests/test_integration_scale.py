"""
A configuration of many APIs, with real processes on 127.0.0.1 (issue 19,
item 5): C{gateway apply} of thousands of APIs to the file store and to a
real etcd, in time that grows with the APIs, not with their square; a
fresh proxy serving them from etcd; a change propagated to two gateways of
two workers each.

The 10,000-API figures are C{bench/scale.py}'s (bench/README.md, "Scale"):
here the same generated configuration, smaller, so that the whole file
runs in about a minute.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
import yaml
from etcdserver import EtcdServer, etcd, storeURL  # noqa: F401  (fixture)
from harness import GatewayProcess, request, subprocessEnv, waitFor

from bench import scale

pytestmark = pytest.mark.integration

TOKEN = "scale-token"

#: The sizes of the complexity check: 8 times the APIs may take at most 4
#: times as long (a quadratic apply took 30 times as long).
SMALL, LARGE = 250, 2000


@pytest.fixture
def backend() -> Any:
    """
    A backend answering 200 to any path, on a free loopback port.
    """
    server = scale.startBackend()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def writeResources(directory: Path, apis: int, backend: str) -> Tuple[Path, Dict[str, Any]]:
    resources = scale.generate(apis, backend)
    path = directory / f"apis-{apis}.yaml"
    path.write_text(yaml.safe_dump(resources, sort_keys=False), encoding="utf-8")
    return path, resources


def config(store: str, admin: bool = True) -> Dict[str, Any]:
    data: Dict[str, Any] = {"proxy": {"workers": 2, "accessLog": False}, "store": store}
    if admin:
        data["admin"] = {"token": TOKEN, "propagationTimeout": 30}
    return data


def apply(gateway: GatewayProcess, path: Path) -> Tuple[float, str]:
    """
    Run C{gateway apply FILE} against the gateway's admin.

    @return: C{(seconds it took, its output)}.
    """
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli.main", "apply", str(path)]
        + ["--admin", str(gateway.adminURL), "--token", TOKEN],
        capture_output=True,
        text=True,
        env=subprocessEnv(),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return time.monotonic() - started, done.stdout


def serves(gateway: GatewayProcess, api: Dict[str, Any]) -> int:
    headers = {"Host": api["host"]} if api.get("host") else None
    try:
        return gateway.proxy("GET", scale.probePath(api), headers=headers, timeout=5).status
    except OSError:
        return 0


def checkApplied(gateway: GatewayProcess, resources: Dict[str, Any], output: str) -> None:
    """
    Every resource was created, in one batch, and the proxy serves the
    APIs (a sample of every shape).
    """
    count = sum(len(items) for items in resources.values())
    assert f"applied {count} change(s)" in output, output[-2000:]
    config = gateway.admin("GET", "/api/v1/config").json()
    for kind, items in resources.items():
        assert sorted(r["name"] for r in config[kind]) == sorted(r["name"] for r in items)
    apis = resources["apis"]
    for api in apis[:8] + apis[-8:]:
        if api["method"] in ("GET", "*") and "auth" not in api:
            assert serves(gateway, api) == 200, api


def test_applyFileStore(gateways: Any, backend: str, tmp_path: Path) -> None:
    """
    On the file store, C{gateway apply} of 2,000 APIs (with their 200
    clusters and servers, 20 consumers, 2 routings) lands them all and
    serves them; 8 times the APIs of a first gateway take at most 4 times
    as long; applying the file again changes nothing.
    """
    small, _ = writeResources(tmp_path, SMALL, backend)
    first = gateways(config(f"file:{tmp_path / 'small.json'}"), 30)
    smallSeconds, _ = apply(first, small)
    large, resources = writeResources(tmp_path, LARGE, backend)
    gateway = gateways(config(f"file:{tmp_path / 'large.json'}"), 30)
    largeSeconds, output = apply(gateway, large)
    checkApplied(gateway, resources, output)
    assert largeSeconds < 4 * smallSeconds, (smallSeconds, largeSeconds)
    _, again = apply(gateway, large)
    assert "no changes (2422 resources up to date)" in again


def test_etcdFleet(gateways: Any, backend: str, etcd: EtcdServer, tmp_path: Path) -> None:  # noqa: F811
    """
    On a real etcd: C{gateway apply} of 2,000 APIs lands them all (and 8
    times the APIs take at most 4 times as long); a fresh proxy started on
    them serves the last one within 10 seconds; then, with the two
    gateways running two workers each, 20 changes of one API made through
    the first one's admin are each answered once every worker of both
    serves it (C{?wait=proxies}), each checked through both proxies, each
    within a second (the target of 10,000 APIs, bench/README.md: here
    about 0.15 s).
    """
    small, _ = writeResources(tmp_path, SMALL, backend)
    first = gateways(config(storeURL([etcd.endpoint], "/small")), 30)
    smallSeconds, _ = apply(first, small)
    first.stop()

    store = storeURL([etcd.endpoint], "/large")
    large, resources = writeResources(tmp_path, LARGE, backend)
    gateway = gateways(config(store), 30)
    largeSeconds, output = apply(gateway, large)
    checkApplied(gateway, resources, output)
    assert largeSeconds < 4 * smallSeconds, (smallSeconds, largeSeconds)

    last = resources["apis"][-1]
    started = time.monotonic()
    fresh = gateways(config(store, admin=False), 30)
    waitFor(lambda: serves(fresh, last) == 200, 30, 0.02, "the fresh proxy to serve")
    assert time.monotonic() - started < 10

    api = resources["apis"][LARGE // 2]
    headers = {"Host": api["host"]} if api.get("host") else None
    times: List[float] = []
    for n in range(20):
        body = dict(api, nodes=[], response={"status": 200, "body": f"version {n}"})
        started = time.monotonic()
        answer = gateway.admin("PUT", f"/api/v1/apis/{api['name']}?wait=proxies", body, timeout=30)
        times.append(time.monotonic() - started)
        assert answer.status == 200, answer.text()
        assert answer.header("X-Gateway-Propagation") == "complete"
        for proxy in (gateway, fresh):
            for _ in range(4):
                seen = request("GET", f"{proxy.proxyURL}{scale.probePath(api)}", None, headers)
                assert seen.body == f"version {n}".encode()
    times.sort()
    print(f"propagation: median {statistics.median(times):.3f} s, max {times[-1]:.3f} s")
    assert times[-1] < 1.0, times
