"""
A configuration of many APIs, measured end to end with real processes on
127.0.0.1 (bench/README.md, "Scale").

    .venv/bin/python bench/scale.py --apis 10000
    .venv/bin/python bench/scale.py --apis 500,1000,2000 --stores file,etcd

For each size N it generates N APIs with their clusters and servers (one
cluster and one server for every ten APIs, a consumer for every hundred,
and a routing for every thousand), then, on each store (the file store, and
a real etcd: Debian's C{etcd-server}, started on a free port):

  - C{apply}: C{gateway apply FILE} into an empty gateway (admin and proxy,
    two proxy workers), timed as a whole and by phase (the CLI's read of
    the admin, its plan, the writes), and C{apply again}: the same file,
    now nothing to change;
  - C{start} (etcd): a fresh gateway (a proxy with two workers, no admin)
    started on the store that holds the N APIs: the seconds until its proxy
    serves the last API;
  - C{propagate} (etcd): with that gateway and the first one running (two
    gateways, two workers each), C{--changes} changes of one API made
    through the first one's admin, each timed from the request until every
    worker of both gateways serves it (the admin's C{?wait=proxies}
    answer, which waits for the registry records of every proxy, each the
    lowest revision its workers serve), then checked through both proxies.
    On the file store, the same for the first gateway's two workers
    (C{?wait=workers}).

The report is Markdown on stdout and JSON in C{--json} (default
C{bench/results/scale.json}).  C{--profile} runs the admin of the C{apply}
gateway under cProfile and prints its top functions by cumulative time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from etcdserver import EtcdServer, etcdAvailable, storeURL  # noqa: E402
from harness import GatewayProcess, request, startGateway, subprocessEnv  # noqa: E402

TOKEN = "bench-token"


def generate(apis: int, backend: str) -> Dict[str, List[Dict[str, Any]]]:
    """
    A resource file of C{apis} APIs and what they need.

    @param backend: the C{host:port} every server points at.
    @return: C{{"servers", "clusters", "consumers", "apis", "routings"}}:
        one server and one cluster per ten APIs, a consumer per hundred
        (each with an API key), a routing per thousand; APIs of varied
        shapes (parameters, typed parameters, wildcards, hosts, methods,
        rewrites, limits, authentication).
    """
    clusters = max(1, apis // 10)
    servers = [
        {"name": f"srv-{i:05d}", "addr": backend, "weight": 1 + i % 3} for i in range(clusters)
    ]
    clusterList = [
        {
            "name": f"cl-{i:05d}",
            "servers": [f"srv-{i:05d}"],
            "loadBalance": ("round-robin", "least-connections", "random")[i % 3],
        }
        for i in range(clusters)
    ]
    consumers = [
        {
            "name": f"team-{i:04d}",
            "groups": [f"group-{i % 7}"],
            "credentials": [{"type": "key", "id": "k1", "key": f"bench-key-{i:04d}-0123456789"}],
        }
        for i in range(max(1, apis // 100))
    ]
    apiList: List[Dict[str, Any]] = []
    methods = ("GET", "POST", "PUT", "DELETE", "*")
    for i in range(apis):
        service = i // 10
        api: Dict[str, Any] = {
            "name": f"api-{i:05d}",
            "method": methods[i % len(methods)],
            "nodes": [{"cluster": f"cl-{service % clusters:05d}"}],
        }
        shape = i % 4
        if shape == 0:
            api["urlPattern"] = f"/svc{service}/v1/items{i}/{{id}}"
            api["nodes"][0]["urlRewrite"] = "/items/{id}"
        elif shape == 1:
            api["urlPattern"] = f"/svc{service}/v1/users{i}/{{id:int}}/orders"
        elif shape == 2:
            api["urlPattern"] = f"/svc{service}/v1/files{i}/*"
            api["rateLimit"] = {"rate": 1000, "burst": 2000, "key": "ip"}
        else:
            api["urlPattern"] = f"/svc{service}/v1/thing{i}"
            api["host"] = f"svc{service}.example.com"
        if i % 50 == 7:
            api["auth"] = {"methods": ["key"]}
        apiList.append(api)
    routings = [
        {
            "name": f"canary-{i:03d}",
            "api": f"api-{i * 1000:05d}",
            "cluster": f"cl-{(i + 1) % clusters:05d}",
            "conditions": [{"source": "header", "name": "X-Canary", "op": "eq", "value": "yes"}],
            "trafficRate": 50,
        }
        for i in range(apis // 1000)
    ]
    return {
        "servers": servers,
        "clusters": clusterList,
        "consumers": consumers,
        "apis": apiList,
        "routings": routings,
    }


def probePath(api: Dict[str, Any]) -> str:
    """
    @return: a path that the API of an L{generate}d shape matches.
    """
    pattern = api["urlPattern"]
    return pattern.replace("{id:int}", "7").replace("{id}", "7").replace("*", "x")


class _Backend(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        body = b'{"ok":true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *args: Any) -> None:
        pass


def startBackend() -> ThreadingHTTPServer:
    """
    @return: a backend on a free 127.0.0.1 port answering 200 to any path,
        served by a thread of this process.
    """
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Backend)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def gatewayConfig(store: str, admin: bool, workers: int) -> Dict[str, Any]:
    """
    @return: the config of a gateway on C{store}: a proxy of C{workers}
        workers without access log, and an admin (when asked) whose writes
        wait up to 30 s for the workers.
    """
    config: Dict[str, Any] = {
        "proxy": {"workers": workers, "accessLog": False},
        "store": store,
    }
    if admin:
        config["admin"] = {"token": TOKEN, "propagationTimeout": 30}
    return config


def cli(
    gateway: GatewayProcess, args: Sequence[str], timeout: float = 3600
) -> subprocess.CompletedProcess[str]:
    """
    Run C{gateway ARGS} against the gateway's admin.

    @raise RuntimeError: with its error output, when it fails.
    """
    command = [
        sys.executable,
        "-m",
        "gateway.cli.main",
        *args,
        "--admin",
        str(gateway.adminURL),
        "--token",
        TOKEN,
        "--timeout",
        "600",
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env=subprocessEnv()
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done


def timeApply(gateway: GatewayProcess, path: Path) -> Dict[str, Any]:
    """
    C{gateway apply} of the file, timed; then the same again (nothing to
    change: the CLI's read, checks and plan), timed too.
    """
    started = time.monotonic()
    done = cli(gateway, ["apply", str(path)])
    seconds = time.monotonic() - started
    summary = [line for line in done.stdout.splitlines() if line.startswith("applied")]
    started = time.monotonic()
    again = cli(gateway, ["apply", str(path)])
    againSeconds = time.monotonic() - started
    return {
        "seconds": round(seconds, 2),
        "summary": summary[-1] if summary else done.stdout.splitlines()[-1:],
        "againSeconds": round(againSeconds, 2),
        "again": again.stdout.strip().splitlines()[-1:],
    }


def timeStart(
    store: str, directory: Path, last: Dict[str, Any], workers: int
) -> Tuple[Dict[str, Any], GatewayProcess]:
    """
    A fresh proxy on a store that holds the APIs: the seconds until it
    serves the last one.

    @return: C{({"seconds": ...}, the running gateway)}.
    """
    started = time.monotonic()
    gateway = startGateway(gatewayConfig(store, admin=False, workers=workers), directory, 120)
    try:
        headers = {"Host": last["host"]} if last.get("host") else None
        deadline = started + 120
        while True:
            try:
                answer = request("GET", str(gateway.proxyURL) + probePath(last), None, headers, 2.0)
                if answer.status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the fresh proxy did not serve the last API in 120 s")
            time.sleep(0.02)
        return {"seconds": round(time.monotonic() - started, 2)}, gateway
    except BaseException:
        gateway.stop()
        raise


def timeChanges(
    admin: GatewayProcess,
    proxies: Sequence[GatewayProcess],
    api: Dict[str, Any],
    changes: int,
    everywhere: bool,
) -> Dict[str, Any]:
    """
    Change one API C{changes} times (its mock answer's body), each timed
    until every worker of every proxy serves it, then checked through the
    proxies.
    """
    times: List[float] = []
    incomplete = 0
    wait = "proxies" if everywhere else "workers"
    for n in range(changes):
        body = dict(api, nodes=[], response={"status": 200, "body": f"version {n}"})
        started = time.monotonic()
        answer = admin.admin("PUT", f"/api/v1/apis/{api['name']}?wait={wait}", body, timeout=60)
        times.append(time.monotonic() - started)
        if answer.status != 200:
            raise RuntimeError(f"change {n}: {answer.status} {answer.text()[:500]}")
        if answer.header("X-Gateway-Propagation") != "complete":
            incomplete += 1
        headers = {"Host": api["host"]} if api.get("host") else None
        for proxy in proxies:
            for _ in range(4):
                seen = proxy.proxy("GET", probePath(api), headers=headers)
                if seen.body != f"version {n}".encode():
                    raise RuntimeError(f"change {n} not served by {proxy.proxyURL}: {seen.body!r}")
        time.sleep(0.05)
    times.sort()
    return {
        "changes": changes,
        "p50Ms": round(1000 * statistics.median(times), 1),
        "p99Ms": round(1000 * times[min(len(times) - 1, int(len(times) * 0.99))], 1),
        "maxMs": round(1000 * times[-1], 1),
        "incomplete": incomplete,
    }


def measure(n: int, storeKind: str, options: argparse.Namespace, directory: Path) -> Dict[str, Any]:
    """
    Every figure of C{n} APIs on one store (see the module's docstring).
    """
    backend = startBackend()
    result: Dict[str, Any] = {"apis": n, "store": storeKind}
    etcd: Optional[EtcdServer] = None
    gateways: List[GatewayProcess] = []
    try:
        resources = generate(n, f"127.0.0.1:{backend.server_address[1]}")
        path = directory / f"apis-{n}.yaml"
        path.write_text(yaml.safe_dump(resources, sort_keys=False), encoding="utf-8")
        result["resources"] = sum(len(v) for v in resources.values())
        if storeKind == "etcd":
            etcd = EtcdServer(directory).start()
            store = storeURL([etcd.endpoint])
        else:
            store = f"file:{directory / f'store-{n}.json'}"
        twistdArgs: Sequence[str] = ()
        if options.profile:
            twistdArgs = (
                "--profile",
                str(directory / f"admin-{n}-{storeKind}.prof"),
                "--profiler",
                "cprofile",
                "--savestats",
            )
        first = startGateway(
            gatewayConfig(store, admin=True, workers=options.workers),
            directory,
            60,
            twistdArgs=twistdArgs,
        )
        gateways.append(first)
        result["apply"] = timeApply(first, path)
        print(f"  {n} APIs, {storeKind}: apply {result['apply']}", file=sys.stderr)
        last = resources["apis"][-1]
        proxies = [first]
        if storeKind == "etcd":
            start, second = timeStart(store, directory, last, options.workers)
            gateways.append(second)
            proxies.append(second)
            result["start"] = start
            print(f"  {n} APIs, {storeKind}: fresh proxy {start}", file=sys.stderr)
        if options.changes:
            target = resources["apis"][len(resources["apis"]) // 2]
            result["propagate"] = timeChanges(
                first, proxies, target, options.changes, everywhere=storeKind == "etcd"
            )
            print(f"  {n} APIs, {storeKind}: changes {result['propagate']}", file=sys.stderr)
    finally:
        for gateway in reversed(gateways):
            gateway.stop(30)
        if etcd is not None:
            etcd.stop()
            etcd.cleanup()
        backend.shutdown()
    if options.profile:
        import pstats

        stats = pstats.Stats(str(directory / f"admin-{n}-{storeKind}.prof"))
        stats.sort_stats("cumulative").print_stats(40)
    return result


def report(results: List[Dict[str, Any]]) -> str:
    """
    @return: the results as a Markdown table.
    """
    lines = [
        "| APIs | store | apply s | ms/API | apply again s | fresh proxy s | change p50 ms"
        " | change p99 ms |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        apply = r.get("apply", {})
        seconds = apply.get("seconds")
        perAPI = f"{1000 * seconds / r['apis']:.2f}" if seconds is not None else ""
        lines.append(
            f"| {r['apis']:,} | {r['store']} | {seconds} | {perAPI} | {apply.get('againSeconds')}"
            f" | {r.get('start', {}).get('seconds', '')}"
            f" | {r.get('propagate', {}).get('p50Ms', '')}"
            f" | {r.get('propagate', {}).get('p99Ms', '')} |"
        )
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apis", default="10000", help="sizes, comma-separated")
    parser.add_argument("--stores", default="file,etcd")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--json", default=str(REPO / "bench" / "results" / "scale.json"))
    options = parser.parse_args(argv)
    stores = [s for s in options.stores.split(",") if s]
    if "etcd" in stores and not etcdAvailable():
        print("no etcd server (Debian package etcd-server): etcd left out", file=sys.stderr)
        stores.remove("etcd")
    results = []
    for n in (int(x) for x in options.apis.split(",")):
        for storeKind in stores:
            with tempfile.TemporaryDirectory(prefix="gateway-scale-") as tmp:
                results.append(measure(n, storeKind, options, Path(tmp)))
    text = report(results)
    print(text)
    Path(options.json).parent.mkdir(parents=True, exist_ok=True)
    Path(options.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
