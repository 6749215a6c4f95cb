"""
The access log of real gateway processes on 127.0.0.1: reopened on
C{SIGUSR1} after logrotate renamed the file (one process, and workers),
several workers writing one file under load without mixing their lines, a
full disk that fails no request, and a standard output nobody reads that
holds none up.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest
from harness import HOST, prepareConfig, request, subprocessEnv, twistdCommand, waitFor

pytestmark = pytest.mark.integration


def config(backend: Any, accessLog: Any, workers: int = 1, **proxy: Any) -> Dict[str, Any]:
    return {
        "proxy": dict({"workers": workers, "accessLog": accessLog}, **proxy),
        "admin": {"token": "t"},
        "servers": [{"name": "b1", "addr": backend.addr}],
        "clusters": [{"name": "c", "servers": ["b1"]}],
        "apis": [{"name": "echo", "urlPattern": "/echo/*", "nodes": [{"cluster": "c"}]}],
    }


def readLines(path: Path) -> List[dict]:
    """
    @return: every line of an access log file, parsed (each must be one
        whole JSON object).
    """
    if not path.exists():
        return []
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), data[-200:]
    return [json.loads(line) for line in data.splitlines()]


def workerPIDs(parent: int) -> List[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if ppid == parent and b"gateway.process.worker" in cmdline:
            pids.append(int(entry))
    return sorted(pids)


def rotateAndCheck(gateway: Any, path: Path, opened: int) -> None:
    """
    Requests logged to C{path}; the file renamed, as logrotate does, and
    C{SIGUSR1} sent to the gateway; then every later request is logged to
    a new file at C{path}, none to the renamed one, and no line is lost.

    @param opened: how many processes must say they opened it again.
    """
    for i in range(20):
        assert gateway.proxy("GET", f"/echo/before/{i}").status == 200
    waitFor(lambda: len(readLines(path)) == 20, 10, what="the first lines")
    rotated = path.with_name(path.name + ".1")
    os.rename(path, rotated)
    os.kill(gateway.pid, signal.SIGUSR1)
    waitFor(
        lambda: gateway.output().count("opened again") == opened,
        10,
        what=f"{opened} process(es) to open the access log again",
    )
    assert path.exists()
    for i in range(40):
        assert gateway.proxy("GET", f"/echo/after/{i}").status == 200
    waitFor(lambda: len(readLines(path)) == 40, 10, what="the later lines")
    time.sleep(0.3)
    old = readLines(rotated)
    # (Each worker writes its own batches: sorted, for the order of two.)
    assert sorted(line["uri"] for line in old) == sorted(f"/echo/before/{i}" for i in range(20))
    assert sorted(line["uri"] for line in readLines(path)) == sorted(
        f"/echo/after/{i}" for i in range(40)
    )
    # The gateway is still up, and SIGUSR1 did not stop it.
    assert gateway.alive()


def test_reopen_on_sigusr1(backends, gateways, tmp_path):
    """
    One process: after logrotate renamed the file and sent C{SIGUSR1}, the
    gateway writes a new file; the renamed one gets nothing more.
    """
    path = tmp_path / "access.log"
    gateway = gateways(config(backends("b1"), {"path": str(path)}))
    rotateAndCheck(gateway, path, 1)


def test_reopen_on_sigusr1_with_workers(backends, gateways, tmp_path):
    """
    With two workers, the gateway passes C{SIGUSR1} on to each (over its
    control channel): both open the file again.
    """
    path = tmp_path / "access.log"
    gateway = gateways(config(backends("b1"), {"path": str(path)}, workers=2))
    waitFor(
        lambda: len(gateway.admin("GET", "/api/v1/stats").json().get("proxies", [])) == 2,
        15,
        what="both workers serving",
    )
    rotateAndCheck(gateway, path, 2)


def test_workers_never_mix_lines(backends, gateways, tmp_path):
    """
    Two workers under load append to one file: every line is one whole
    JSON object, one per request, from both workers.
    """
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed")
    path = tmp_path / "access.log"
    # Long lines, small batches: many writes from each worker, each of many
    # lines, racing for the end of the file.
    accessLog = {"path": str(path), "bufferSize": 8192, "flushInterval": 0.01, "fields": None}
    gateway = gateways(config(backends("b1"), accessLog, workers=2))
    waitFor(
        lambda: len(gateway.admin("GET", "/api/v1/stats").json().get("proxies", [])) == 2,
        15,
        what="both workers serving",
    )
    agent = "load/" + "x" * 600
    done = subprocess.run(
        [
            "wrk",
            "-t2",
            "-c20",
            "-d3s",
            "-H",
            f"User-Agent: {agent}",
            f"{gateway.proxyURL}/echo/{'p' * 200}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
    )
    assert "requests in" in done.stdout, done.stdout

    def written() -> int:
        stats = gateway.admin("GET", "/api/v1/stats").json()
        return int(stats["accessLog"]["written"])

    def settled() -> int:
        # Workers report their stats every second: the count is final once
        # it stays the same over more than a report.
        before = written()
        time.sleep(1.2)
        after = written()
        return after if after and after == before else 0

    total = waitFor(settled, 20, what="the workers' counts to settle")
    lines = readLines(path)
    assert len(lines) == total
    # (wrk cuts its connections at the end, requests in flight: 499.)
    cut = [line for line in lines if line["status"] == 499]
    assert len(cut) <= 20
    bad = [line for line in lines if line["userAgent"] != agent or line["status"] not in (200, 499)]
    assert bad == [], [
        {k: v for k, v in line.items() if k not in ("uri", "userAgent")} for line in bad[:3]
    ]
    perWorker = [
        p["stats"]["accessLog"]["written"]
        for p in gateway.admin("GET", "/api/v1/stats").json()["proxies"]
    ]
    assert len(perWorker) == 2 and all(n > 0 for n in perWorker), perWorker
    assert gateway.admin("GET", "/api/v1/stats").json()["accessLog"]["dropped"] == 0


def test_failing_output_fails_no_request(backends, gateways):
    """
    An output whose every write fails (C{/dev/full}: no space left on
    device): every request is served, the lines are dropped and counted in
    the stats and the metrics, and the gateway says why on its own log.
    """
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    gateway = gateways(config(backends("b1"), {"path": "/dev/full", "bufferSize": 1}))
    for i in range(30):
        assert gateway.proxy("GET", f"/echo/{i}").status == 200
    stats = gateway.admin("GET", "/api/v1/stats").json()
    assert stats["accessLog"] == {"written": 0, "dropped": 30}
    metrics = gateway.admin("GET", "/metrics").text
    assert "gateway_access_log_dropped_total 30.0" in metrics
    assert "No space left on device" in gateway.output()


@pytest.fixture
def tinyDisk(tmp_path):
    """
    A 64 KiB tmpfs (root only), unmounted after the test.
    """
    mount = tmp_path / "tiny"
    mount.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"cannot mount a tmpfs: {e}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stdout!r}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], timeout=10)


def test_full_disk_fails_no_request(backends, gateways, tinyDisk):
    """
    A disk that fills up while the gateway logs: every request is served,
    the file holds whole lines only, what did not fit is counted as
    dropped; once space is freed, lines are written again, each on a line
    of its own.
    """
    path = tinyDisk / "access.log"
    filler = tinyDisk / "filler"
    gateway = gateways(
        config(
            backends("b1"),
            {"path": str(path), "bufferSize": 4096, "flushInterval": 0.01},
        )
    )
    # Fill the disk but a few lines' worth.
    with open(filler, "wb") as f:
        try:
            f.write(b"\0" * (60 * 1024))
        except OSError:
            pass
    statuses = [gateway.proxy("GET", f"/echo/{i}").status for i in range(300)]
    assert statuses == [200] * 300

    def counted() -> Any:
        stats = gateway.admin("GET", "/api/v1/stats").json()["accessLog"]
        return stats if stats["written"] + stats["dropped"] == 300 else None

    stats = waitFor(counted, 10, what="every line written or dropped")
    assert stats["dropped"] > 0 and stats["written"] > 0, stats
    assert "No space left on device" in gateway.output()
    filler.unlink()
    for i in range(20):
        assert gateway.proxy("GET", f"/echo/again/{i}").status == 200
    waitFor(
        lambda: (
            gateway.admin("GET", "/api/v1/stats").json()["accessLog"]["written"]
            == stats["written"] + 20
        ),
        10,
        what="the lines written again",
    )
    data = path.read_bytes()
    lines = data.splitlines()
    whole = [json.loads(line) for line in lines if line.endswith(b"}")]
    # At most the one line the disk tore is not whole, and it ends there.
    assert len(lines) - len(whole) <= 1
    assert [line["uri"] for line in whole[-20:]] == [f"/echo/again/{i}" for i in range(20)]
    assert "writing again" in gateway.output()


def test_stdout_nobody_reads(backends, tmp_path):
    """
    The default access log goes to the standard output: when that is a
    pipe nobody reads, requests are served all the same (the lines that do
    not fit are dropped and counted), and once it is read again the
    lines are whole.
    """
    backend = backends("b1")
    text, data = prepareConfig(config(backend, True))
    configPath = tmp_path / "gateway.yaml"
    configPath.write_text(text)
    proxyURL = f"http://{HOST}:{data['proxy']['listen'].split(':')[1]}"
    adminURL = f"http://{HOST}:{data['admin']['listen'].split(':')[1]}"
    process = subprocess.Popen(
        twistdCommand("gateway", "--config", str(configPath)),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=str(tmp_path),
        env=subprocessEnv(),
        start_new_session=True,
    )
    output: List[bytes] = []
    reader = threading.Thread(target=lambda: output.append(process.stdout.read()))
    try:

        def up() -> bool:
            try:
                return request("GET", adminURL + "/healthz", timeout=1).status == 200
            except OSError:
                return False

        # (Its start-up messages fit in the pipe.)
        waitFor(up, 20, what="the gateway")
        started = time.monotonic()
        agent = "a" * 2000
        # 600 lines of 2 KiB: more than the pipe (64 KiB) and the lines
        # kept waiting (maxPending, 1 MiB) hold.
        for i in range(600):
            answer = request(
                "GET", f"{proxyURL}/echo/{i}", headers={"User-Agent": agent}, timeout=5
            )
            assert answer.status == 200
        assert time.monotonic() - started < 30
        # Read now: the admin logs its own requests on twistd's log, on the
        # same standard output, and twistd's log blocks when it is full.
        reader.start()
        stats = request(
            "GET", adminURL + "/api/v1/stats", headers={"Authorization": "Bearer t"}, timeout=5
        ).json()["accessLog"]
        assert stats["dropped"] > 0, stats
        time.sleep(1)
    finally:
        if not reader.is_alive():
            reader.start()
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)
        reader.join(10)
    lines = [line for line in b"".join(output).splitlines() if line.startswith(b"{")]
    parsed = [json.loads(line) for line in lines]
    assert 0 < len(parsed) <= 600
    assert all(p["userAgent"] == agent for p in parsed)


def test_config_error_names_the_path(gateways, tmp_path):
    """
    An access log file that cannot be opened stops the start, naming
    C{proxy.accessLog.path}.
    """
    code, output = gateways.expectFailure(
        {
            "proxy": {"workers": 1, "accessLog": {"path": str(tmp_path / "no" / "access.log")}},
        }
    )
    assert code != 0
    assert "proxy.accessLog.path: cannot open" in output


def test_refused_requests_logged(backends, gateways, tmp_path):
    """
    A request the engine refuses before any API sees it (a malformed
    header, from a worker) has its line too, as nginx logs its 400s.
    """
    path = tmp_path / "access.log"
    gateway = gateways(config(backends("b1"), {"path": str(path)}, workers=2))
    host, port = gateway.proxyURL.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"GET /echo/x HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n")
        answer = b""
        while not answer.endswith(b"\n") or b"\r\n\r\n" not in answer:
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 "), answer

    def refused() -> List[Dict[str, Any]]:
        if not path.exists():
            return []
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        return [line for line in lines if line.get("status") == 400]

    [line] = waitFor(refused, 5, what="the refused request's line")
    assert (line["method"], line["uri"], line["api"]) == ("-", "-", None), line
    assert line["client"] == "127.0.0.1", line
