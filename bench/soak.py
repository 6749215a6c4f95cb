"""
Soak test: a steady request rate through a real gateway for a long time
(10 minutes by default), checking that its memory and open files stay
flat.  Not run in CI.

    .venv/bin/python bench/soak.py [--duration 600] [--rate 200] [--workers 1]

It starts a test backend (C{tests/backend_app.py}) and a gateway (C{twistd
-n gateway}) on 127.0.0.1, then sends C{--rate} requests a second to
C{/echo/soak} through the gateway, with C{wrk} when it is installed (paced
by a Lua C{delay()}; C{wrk} has no rate option) or else with Python
threads over kept-alive connections.  Every C{--interval} seconds it samples
the gateway's resident memory (C{VmRSS}) and open file descriptors
(C{/proc/PID/fd}), summed over the gateway and its workers, and prints a
row.  At the end it compares the samples after the warm-up: the average of
the last third must be within C{--rss-tolerance} (10 %) of the first
third's RSS and within C{--fd-tolerance} (5) of its descriptor count, and
no more than C{--max-error-rate} of the requests may have failed.  The exit
status is 0 when all of that holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / "tests"))

from harness import HOST, startBackend, startGateway  # noqa: E402


def processTree(pid: int) -> List[int]:
    """
    @return: C{pid} and the pids of its children (the gateway's workers).
    """
    pids = [pid]
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            pids.append(int(entry))
    return pids


def sample(pid: int) -> Tuple[int, int, int]:
    """
    @return: C{(RSS in KiB, open file descriptors, processes)} of the
        gateway and its workers.
    """
    rss = fds = count = 0
    for p in processTree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
            fds += len(os.listdir(f"/proc/{p}/fd"))
            count += 1
        except OSError:
            continue
    return rss, fds, count


# -- load -------------------------------------------------------------------------


class WrkLoad:
    """
    C{wrk} paced to a rate: each of C{connections} connections waits
    C{connections / rate} seconds between its requests.
    """

    def __init__(self, url: str, rate: float, duration: float, connections: int) -> None:
        self._directory = tempfile.mkdtemp(prefix="soak-wrk-")
        self._script = Path(self._directory) / "pace.lua"
        self._url = url
        self._rate = rate
        self._duration = duration
        self._connections = connections
        self._process: Optional[subprocess.Popen] = None
        self.output = ""

    def _command(self, delayMs: float, seconds: float) -> List[str]:
        self._script.write_text(f"function delay()\n  return {delayMs:.3f}\nend\n")
        return [
            "wrk",
            "-t1",
            f"-c{self._connections}",
            f"-d{max(1, int(seconds))}s",
            "--timeout",
            "5s",
            "-s",
            str(self._script),
            self._url,
        ]

    def calibrate(self) -> None:
        """
        wrk waits C{delay()} after each answer, so a connection's period
        is the delay plus the request's own time: measure that for a few
        seconds, then take it off the delay.
        """
        period = 1000.0 * self._connections / self._rate
        calibration = subprocess.run(
            self._command(period, 5), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ).stdout
        achieved = _intOf(r"(\d+) requests in", calibration) / 5.0
        overhead = 1000.0 * self._connections / achieved - period if achieved else 0.0
        self.delayMs = max(0.0, period - overhead)

    def start(self) -> None:
        self._process = subprocess.Popen(
            self._command(self.delayMs, self._duration),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def finish(self) -> Dict[str, Any]:
        assert self._process is not None
        self.output, _ = self._process.communicate()
        shutil.rmtree(self._directory, ignore_errors=True)
        requests = _intOf(r"(\d+) requests in", self.output)
        errors = _intOf(r"Non-2xx or 3xx responses: (\d+)", self.output)
        socketErrors = re.search(
            r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", self.output
        )
        if socketErrors:
            errors += sum(int(n) for n in socketErrors.groups())
        latency = re.search(r"Latency\s+(\S+)\s+(\S+)\s+(\S+)", self.output)
        return {
            "tool": f"wrk (delay {self.delayMs:.1f} ms"
            + (f", latency avg {latency.group(1)}, max {latency.group(3)})" if latency else ")"),
            "requests": requests,
            "errors": errors,
        }


def _intOf(pattern: str, text: str) -> int:
    match = re.search(pattern, text)
    return int(match.group(1)) if match else 0


class PythonLoad:
    """
    Threads sending requests over kept-alive connections, together paced
    to C{rate} a second.
    """

    def __init__(self, url: str, rate: float, duration: float, connections: int) -> None:
        host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
        self._address = (host, int(port))
        self._path = "/" + url.split("//", 1)[1].split("/", 1)[1]
        self._interval = connections / rate
        self._duration = duration
        self._threads = [
            threading.Thread(target=self._run, daemon=True) for _ in range(connections)
        ]
        self._lock = threading.Lock()
        self.requests = 0
        self.errors = 0

    def calibrate(self) -> None:
        pass

    def start(self) -> None:
        self._started = time.monotonic()
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        connection: Optional[http.client.HTTPConnection] = None
        due = time.monotonic()
        end = self._started + self._duration
        while True:
            due += self._interval
            now = time.monotonic()
            if now >= end:
                break
            if due > now:
                time.sleep(due - now)
            ok = False
            try:
                if connection is None:
                    connection = http.client.HTTPConnection(*self._address, timeout=5)
                connection.request("GET", self._path)
                response = connection.getresponse()
                response.read()
                ok = 200 <= response.status < 400
            except (OSError, http.client.HTTPException):
                if connection is not None:
                    connection.close()
                connection = None
            with self._lock:
                self.requests += 1
                self.errors += not ok
        if connection is not None:
            connection.close()

    def finish(self) -> Dict[str, Any]:
        for thread in self._threads:
            thread.join(10)
        return {"tool": "python", "requests": self.requests, "errors": self.errors}


# -- the run ------------------------------------------------------------------------


def thirds(values: List[float]) -> Tuple[float, float]:
    """
    @return: the averages of the first and the last third of C{values}.
    """
    n = max(1, len(values) // 3)
    return sum(values[:n]) / n, sum(values[-n:]) / n


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds (600)")
    parser.add_argument("--rate", type=float, default=200.0, help="requests a second (200)")
    parser.add_argument("--connections", type=int, default=10, help="client connections (10)")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=None, help="seconds ignored (duration/10)")
    parser.add_argument("--workers", type=int, default=1, help="proxy workers (1)")
    parser.add_argument("--access-log", action="store_true", help="keep the access log on")
    parser.add_argument("--python-client", action="store_true", help="do not use wrk")
    parser.add_argument("--rss-tolerance", type=float, default=0.10)
    parser.add_argument("--fd-tolerance", type=int, default=5)
    parser.add_argument("--max-error-rate", type=float, default=0.0)
    options = parser.parse_args(argv)
    warmup = options.warmup if options.warmup is not None else options.duration / 10

    directory = Path(tempfile.mkdtemp(prefix="soak-"))
    backend = startBackend("soak", directory)
    config = {
        "proxy": {"accessLog": bool(options.access_log), "workers": options.workers},
        "admin": {"token": "soak"},
        "store": "file:data.json",
        "servers": [{"name": "soak", "addr": backend.addr}],
        "clusters": [{"name": "c", "servers": ["soak"]}],
        "apis": [{"name": "echo", "urlPattern": "/echo/*", "nodes": [{"cluster": "c"}]}],
    }
    gateway = startGateway(config, directory)
    ok = False
    try:
        url = f"{gateway.proxyURL}/echo/soak"
        useWrk = shutil.which("wrk") is not None and not options.python_client
        loadClass = WrkLoad if useWrk else PythonLoad
        load = loadClass(url, options.rate, options.duration, options.connections)
        print(
            f"soak: {options.duration:.0f} s at {options.rate:.0f} req/s "
            f"({'wrk' if useWrk else 'python'} client, {options.connections} connections, "
            f"{options.workers} worker(s)), gateway pid {gateway.pid} on {HOST}"
        )
        print(f"{'t (s)':>7} {'RSS (MiB)':>10} {'fds':>5} {'procs':>5}")
        rows: List[Tuple[float, int, int]] = []
        load.calibrate()
        started = time.monotonic()
        load.start()
        nextSample = started + options.interval
        while True:
            now = time.monotonic()
            if now - started >= options.duration:
                break
            time.sleep(max(0.0, min(nextSample, started + options.duration) - now))
            if time.monotonic() >= nextSample:
                elapsed = time.monotonic() - started
                rss, fds, procs = sample(gateway.pid)
                rows.append((elapsed, rss, fds))
                mark = "" if elapsed >= warmup else "  (warm-up)"
                print(f"{elapsed:7.0f} {rss / 1024:10.1f} {fds:5d} {procs:5d}{mark}", flush=True)
                nextSample += options.interval
        result = load.finish()
        elapsed = max(options.duration, time.monotonic() - started)

        steady = [row for row in rows if row[0] >= warmup]
        if len(steady) < 3:
            print(f"FAIL: only {len(steady)} samples after the warm-up; run longer")
            return 1
        rssFirst, rssLast = thirds([float(r[1]) for r in steady])
        fdFirst, fdLast = thirds([float(r[2]) for r in steady])
        rate = result["requests"] / elapsed
        errorRate = result["errors"] / max(1, result["requests"])
        print()
        print(
            f"requests: {result['requests']} ({rate:.0f}/s), errors: {result['errors']} "
            f"({100 * errorRate:.3f} %), client: {result['tool']}"
        )
        print(
            f"RSS: first third {rssFirst / 1024:.1f} MiB, last third {rssLast / 1024:.1f} MiB "
            f"({100 * (rssLast - rssFirst) / rssFirst:+.1f} %)"
        )
        print(f"fds: first third {fdFirst:.1f}, last third {fdLast:.1f} ({fdLast - fdFirst:+.1f})")
        failures = []
        if rssLast > rssFirst * (1 + options.rss_tolerance):
            failures.append(f"RSS grew more than {100 * options.rss_tolerance:.0f} %")
        if fdLast > fdFirst + options.fd_tolerance:
            failures.append(f"open files grew by more than {options.fd_tolerance}")
        if errorRate > options.max_error_rate:
            failures.append(f"error rate above {100 * options.max_error_rate:.3f} %")
        if rate < 0.9 * options.rate:
            failures.append(f"only {rate:.0f} of {options.rate:.0f} requests a second were sent")
        if not gateway.alive():
            failures.append("the gateway died")
        for failure in failures:
            print("FAIL:", failure)
        ok = not failures
        if ok:
            print("OK: RSS and open files are flat")
        return 0 if ok else 1
    finally:
        gateway.stop()
        backend.stop()
        if ok:
            shutil.rmtree(directory, ignore_errors=True)
        else:
            print(f"logs kept in {directory}")


if __name__ == "__main__":
    sys.exit(main())
