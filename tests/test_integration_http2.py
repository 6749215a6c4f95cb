"""
HTTP/2 to clients for real (issue 17, item 4): a gateway with a TLS
listener (a certificate made by the test) and a plain one that takes
C{h2c}, a real backend, and real HTTP/2 clients: C{curl --http2},
C{h2load} (Debian's nghttp2-client) and raw clients written with the
C{h2} library (the rapid-reset flood, graceful shutdown).  Everything runs
on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import ConnectionTerminated, DataReceived, ResponseReceived, StreamEnded
from harness import HOST, GatewayProcess, freePort, peakRSS, streamingRSSLimit, waitFor
from hpack import Decoder
from hyperframe.frame import Frame, GoAwayFrame, HeadersFrame, RstStreamFrame
from tlsfixtures import CertificateAuthority, Issued

pytestmark = pytest.mark.integration

TOKEN = "h2-token"
NAME = "api.example.com"
KEY = "h2-client-key-0123456789abcdef"
MB = 1024 * 1024

CURL = shutil.which("curl")
H2LOAD = shutil.which("h2load")


class PKI:
    def __init__(self, directory: Path) -> None:
        self.ca = CertificateAuthority()
        self.api: Issued = self.ca.issue([NAME])
        self.caFile = directory / "ca.pem"
        self.caFile.write_text(self.ca.pem)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: Any) -> PKI:
    """
    A test CA, and the certificate the TLS listener serves.
    """
    return PKI(tmp_path_factory.mktemp("pki"))


class Edge:
    """
    A gateway with a TLS listener (HTTP/2 by ALPN) and a plain one (h2c
    with prior knowledge), its backend and its APIs.
    """

    def __init__(
        self, gateway: GatewayProcess, backend: Any, tlsPort: int, plainPort: int, pki: PKI
    ) -> None:
        self.gateway = gateway
        self.backend = backend
        self.tlsPort = tlsPort
        self.plainPort = plainPort
        self.pki = pki

    def url(self, path: str) -> str:
        return f"https://{NAME}:{self.tlsPort}{path}"

    def curl(self, *args: str, timeout: float = 60.0) -> Tuple[int, str, str]:
        """
        Run curl against the TLS listener (C{--resolve} sends the name to
        127.0.0.1, the test CA verifies the certificate).

        @return: C{(exit status, stdout, stderr)}.
        """
        assert CURL is not None
        done = subprocess.run(
            [
                CURL,
                "-sS",
                "--cacert",
                str(self.pki.caFile),
                "--resolve",
                f"{NAME}:{self.tlsPort}:{HOST}",
                *args,
            ],
            capture_output=True,
            timeout=timeout,
        )
        return done.returncode, done.stdout.decode("latin-1"), done.stderr.decode("latin-1")

    def stats(self) -> Dict[str, Any]:
        response = self.gateway.admin("GET", "/api/v1/stats")
        assert response.status == 200, response.text
        result: Dict[str, Any] = response.json()
        return result


@pytest.fixture
def edge(gateways: Any, backends: Any, pki: PKI) -> Edge:
    """
    The gateway under test: C{/echo/...} and C{/bytes/...} proxied, an
    aggregation C{/both}, C{/keyed/...} behind key authentication,
    C{/limited/...} rate limited, C{/upload} streamed.
    """
    return startEdge(gateways, backends, pki)


def startEdge(
    gateways: Any, backends: Any, pki: PKI, proxy: Optional[Dict[str, Any]] = None
) -> Edge:
    backend = backends()
    tlsPort = freePort()
    plainPort = freePort()
    section: Dict[str, Any] = {
        "listen": f"tcp:{plainPort}:interface={HOST}",
        "tlsListen": f"tcp:{tlsPort}:interface={HOST}",
        "h2c": True,
        "drainTimeout": 10,
        "accessLog": {"fields": ["method", "uri", "protocol", "status"]},
    }
    section.update(proxy or {})
    node = [{"cluster": "c"}]
    gateway = gateways(
        {
            "proxy": section,
            "admin": {"token": TOKEN},
            "store": "memory:",
            "certificates": [pki.api.resource("api", [NAME])],
            "servers": [{"name": "b", "addr": backend.addr}],
            "clusters": [{"name": "c", "servers": ["b"]}],
            "consumers": [{"name": "alice", "credentials": [{"type": "key", "key": KEY}]}],
            "apis": [
                {"name": "echo", "urlPattern": "/echo/*", "nodes": node},
                {"name": "slow", "urlPattern": "/slow/*", "nodes": node},
                {"name": "bytes", "urlPattern": "/bytes/*", "nodes": node},
                {"name": "upload", "urlPattern": "/upload", "method": "POST", "nodes": node},
                {
                    "name": "both",
                    "urlPattern": "/both",
                    "nodes": [
                        {"cluster": "c", "attrName": "first", "urlRewrite": "/json/first"},
                        {"cluster": "c", "attrName": "second", "urlRewrite": "/json/second"},
                    ],
                },
                {
                    "name": "keyed",
                    "urlPattern": "/keyed/*",
                    "nodes": [{"cluster": "c", "urlRewrite": "/echo/keyed"}],
                    "auth": {"methods": ["key"]},
                },
                {
                    "name": "limited",
                    "urlPattern": "/limited/*",
                    "nodes": [{"cluster": "c", "urlRewrite": "/echo/limited"}],
                    "rateLimit": {"rate": 0.001, "burst": 2, "key": "none"},
                },
            ],
        }
    )
    waitFor(lambda: _accepts(tlsPort), what="the TLS listener")
    return Edge(gateway, backend, tlsPort, plainPort, pki)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0):
            return True
    except OSError:
        return False


def curlJSON(edge: Edge, path: str, *args: str) -> Tuple[str, int, Any]:
    """
    A GET with C{curl --http2}.

    @return: C{(HTTP version curl used, status, parsed JSON body)}.
    """
    status, out, err = edge.curl(
        "--http2", "-w", "\n%{http_version} %{http_code}", *args, edge.url(path)
    )
    assert status == 0, err
    body, _, tail = out.rpartition("\n")
    version, code = tail.split()
    return version, int(code), json.loads(body) if body else None


needsCurl = pytest.mark.skipif(
    CURL is None, reason="curl is not installed (scripts/test.sh installs it)"
)
needsH2load = pytest.mark.skipif(
    H2LOAD is None,
    reason="h2load is not installed (Debian's nghttp2-client; scripts/test.sh installs it)",
)


# -- a raw HTTP/2 client -----------------------------------------------------------


class RawH2:
    """
    An HTTP/2 client over TLS (ALPN h2) in the test process: the C{h2}
    library's state machine, or frames written by hand.
    """

    def __init__(self, edge: Edge, timeout: float = 10.0) -> None:
        context = ssl.create_default_context(cafile=str(edge.pki.caFile))
        context.set_alpn_protocols(["h2"])
        raw = socket.create_connection((HOST, edge.tlsPort), timeout=timeout)
        self.sock = context.wrap_socket(raw, server_hostname=NAME)
        assert self.sock.selected_alpn_protocol() == "h2"
        self.h2 = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        self.h2.initiate_connection()
        self.flush()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.sock.sendall(data)

    def head(self, path: str, streamId: int, end: bool = True) -> bytes:
        """
        @return: a HEADERS frame of a GET of C{path}, encoded with the
            connection's encoder (frames written by hand).
        """
        frame = HeadersFrame(streamId, flags=["END_HEADERS"] + (["END_STREAM"] if end else []))
        frame.data = self.h2.encoder.encode(
            [
                (b":method", b"GET"),
                (b":scheme", b"https"),
                (b":authority", NAME.encode()),
                (b":path", path.encode()),
            ]
        )
        return frame.serialize()

    def get(self, path: str, timeout: float = 10.0) -> Tuple[int, bytes]:
        """
        One GET through the state machine.

        @return: C{(status, body)}.
        """
        streamId = self.h2.get_next_available_stream_id()
        self.h2.send_headers(
            streamId,
            [
                (b":method", b"GET"),
                (b":scheme", b"https"),
                (b":authority", NAME.encode()),
                (b":path", path.encode()),
            ],
            end_stream=True,
        )
        self.flush()
        status = 0
        body = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = self.sock.recv(65536)
            if not data:
                raise AssertionError("connection closed")
            for event in self.h2.receive_data(data):
                if isinstance(event, ResponseReceived) and event.stream_id == streamId:
                    status = int(dict(event.headers)[b":status"])
                elif isinstance(event, DataReceived) and event.stream_id == streamId:
                    body += event.data
                    self.h2.acknowledge_received_data(event.flow_controlled_length, streamId)
                elif isinstance(event, StreamEnded) and event.stream_id == streamId:
                    self.flush()
                    return status, body
                elif isinstance(event, ConnectionTerminated):
                    raise AssertionError(f"GOAWAY {event}")
            self.flush()
        raise AssertionError("no answer in time")

    def frames(self, timeout: float) -> Iterator[Frame]:
        """
        The frames the server sends, parsed by hand (the state machine
        takes nothing after a GOAWAY), until it closes.
        """
        buffer = b""
        self.sock.settimeout(timeout)
        while True:
            while len(buffer) >= 9:
                frame, length = Frame.parse_frame_header(memoryview(buffer[:9]))
                if len(buffer) < 9 + length:
                    break
                frame.parse_body(memoryview(buffer[9 : 9 + length]))
                buffer = buffer[9 + length :]
                yield frame
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                return
            if not data:
                return
            buffer += data

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


# -- the tests ---------------------------------------------------------------------


@needsCurl
def test_curl_http2(edge: Edge) -> None:
    """
    curl gets HTTP/2 by ALPN on the TLS listener; the backend sees a
    request of a TLS client (C{X-Forwarded-Proto: https}) received over
    HTTP/2 (C{Via: 2 gateway}); the stats count the stream and the access
    log shows the protocol.
    """
    version, code, seen = curlJSON(edge, "/echo/x?y=1", "-H", "X-Test: 1")
    assert (version, code) == ("2", 200)
    assert seen["path"] == "/echo/x?y=1"
    assert seen["headers"]["x-forwarded-proto"] == ["https"]
    assert seen["headers"]["x-test"] == ["1"]
    assert seen["headers"]["via"] == ["2 gateway"]
    assert seen["headers"]["x-forwarded-host"] == [f"{NAME}:{edge.tlsPort}"]
    stats = edge.stats()
    assert stats["http2"]["streams"] >= 1
    assert stats["http2"]["connections"] >= 1
    waitFor(
        lambda: (
            '"method":"GET","uri":"/echo/x?y=1","protocol":"HTTP/2.0","status":200'
            in edge.gateway.output()
        ),
        5,
        what="the access log line",
    )
    # The same gateway speaks HTTP/1.1 to those that ask for it.
    version, code, seen = curlJSON(edge, "/echo/x", "--http1.1")
    assert (version, code) == ("1.1", 200)
    assert seen["headers"]["via"] == ["1.1 gateway"]


@needsCurl
def test_h2c_prior_knowledge(edge: Edge) -> None:
    """
    On the plain listener (C{h2c: true}), a client that starts with the
    HTTP/2 preface speaks HTTP/2 without TLS (C{X-Forwarded-Proto: http});
    HTTP/1.1 clients are served on the same port.
    """
    assert CURL is not None
    for flag, expected in (("--http2-prior-knowledge", "2"), ("--http1.1", "1.1")):
        done = subprocess.run(
            [
                CURL,
                "-sS",
                flag,
                "-w",
                "\n%{http_version}",
                f"http://{HOST}:{edge.plainPort}/echo/p",
            ],
            capture_output=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        body, _, version = done.stdout.decode().rpartition("\n")
        assert version == expected
        assert json.loads(body)["headers"]["x-forwarded-proto"] == ["http"]


@needsCurl
def test_same_errors_auth_limits(edge: Edge) -> None:
    """
    The filters apply to HTTP/2 requests with the same answers: no key is
    401, the key passes; past the rate limit, 429; no API is the
    gateway's 404 JSON.
    """
    _, code, body = curlJSON(edge, "/keyed/a")
    assert code == 401 and "error" in body
    _, code, body = curlJSON(edge, "/keyed/a", "-H", f"apikey: {KEY}")
    assert code == 200
    assert body["headers"]["x-consumer-name"] == ["alice"]
    codes = [curlJSON(edge, "/limited/a")[1] for _ in range(3)]
    assert codes[:2] == [200, 200] and codes[2] == 429
    _, code, body = curlJSON(edge, "/nowhere")
    assert code == 404 and body["error"] == "no API matches this request"


@needsCurl
def test_aggregation(edge: Edge) -> None:
    """
    An aggregation API answers its merged JSON over HTTP/2.
    """
    version, code, body = curlJSON(edge, "/both")
    assert (version, code) == ("2", 200)
    assert body["first"]["name"] == "first"
    assert body["second"]["name"] == "second"


@needsH2load
def test_many_streams_h2load(edge: Edge) -> None:
    """
    h2load: 2,000 requests, 50 streams at once on each of 2 connections:
    all succeed, over HTTP/2, on 2 connections.
    """
    assert H2LOAD is not None
    before = edge.stats()["http2"]
    done = subprocess.run(
        [
            H2LOAD,
            "-n",
            "2000",
            "-c",
            "2",
            "-m",
            "50",
            "--connect-to",
            f"{HOST}:{edge.tlsPort}",
            edge.url("/echo/load"),
        ],
        capture_output=True,
        timeout=120,
    )
    out = done.stdout.decode()
    assert done.returncode == 0, out + done.stderr.decode()
    assert re.search(r"requests: 2000 total, 2000 started, 2000 done, 2000 succeeded", out), out
    assert "Application protocol: h2" in out, out
    assert re.search(r"status codes: 2000 2xx", out), out
    after = edge.stats()["http2"]
    assert after["streams"] - before["streams"] == 2000
    assert after["connections"] - before["connections"] == 2
    assert after["floods"] == 0


#: Whether the gateway runs on PyPy (the tests' interpreter runs it).
PYPY = sys.implementation.name == "pypy"


def viaArgs(edge: Edge, via: str, path: str) -> List[str]:
    """
    @return: curl's arguments for HTTP/2 to C{path}: over TLS (C{tls}), or
        without (C{h2c}, prior knowledge on the plain listener).
    """
    if via == "tls":
        return ["--http2", edge.url(path)]
    return ["--http2-prior-knowledge", f"http://{HOST}:{edge.plainPort}{path}"]


def checkRSS(pid: int, limit: int, via: str) -> None:
    """
    The gateway's peak RSS is below C{limit} (see L{streamingRSSLimit}).

    Not over TLS on PyPy: there, pyOpenSSL's buffers (a new cffi buffer
    for each record read or written) are freed so late that a process
    grows by about the bytes that went through TLS, HTTP/1.1 as much as
    HTTP/2 (the HTTP/1.1 channel's TLS is the same); the same transfers
    without TLS stay flat, which the C{h2c} runs check.
    """
    if via == "tls" and PYPY:
        return
    assert peakRSS(pid) < limit, (peakRSS(pid), limit)


@needsCurl
@pytest.mark.parametrize("via", ["tls", "h2c"])
def test_large_download(edge: Edge, via: str) -> None:
    """
    A 256 MiB download over HTTP/2 streams through (whole, the gateway's
    RSS bounded); a client that reads slowly pauses the upstream answer
    rather than having the gateway hold it (RSS still bounded).
    """
    pid = edge.gateway.pid
    limit = streamingRSSLimit(pid, 160 * MB)
    size = 256 * MB
    args = ["-o", "/dev/null", "-w", "%{http_version} %{size_download}"]
    status, out, err = edge.curl(*args, *viaArgs(edge, via, f"/bytes/{size}"), timeout=120)
    assert status == 0, err
    assert out == f"2 {size}"
    checkRSS(pid, limit, via)
    # 2 MB/s for 3 s of a 1 GiB answer: without backpressure the gateway
    # would read the backend's gigabyte meanwhile.
    status, out, err = edge.curl(
        "--limit-rate",
        "2M",
        "--max-time",
        "3",
        "-o",
        "/dev/null",
        "-w",
        "%{size_download}",
        *viaArgs(edge, via, f"/bytes/{1024 * MB}"),
        timeout=30,
    )
    assert status == 28, err  # (curl's "operation timed out")
    assert int(out) < 64 * MB
    checkRSS(pid, limit, via)


@needsCurl
@pytest.mark.parametrize("via", ["tls", "h2c"])
def test_large_upload(edge: Edge, tmp_path: Path, via: str) -> None:
    """
    A 128 MiB upload over HTTP/2 streams through to the backend, whole
    (its length and digest), the gateway's RSS bounded.
    """
    pid = edge.gateway.pid
    limit = streamingRSSLimit(pid, 160 * MB)
    path = tmp_path / "upload.bin"
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        block = os.urandom(MB)
        for i in range(128):
            chunk = block[i:] + block[:i]
            digest.update(chunk)
            f.write(chunk)
    status, out, err = edge.curl(
        "-X",
        "POST",
        "--data-binary",
        f"@{path}",
        "-H",
        "Content-Type: application/octet-stream",
        "-w",
        "\n%{http_version}",
        *viaArgs(edge, via, "/upload"),
        timeout=180,
    )
    assert status == 0, err
    body, _, version = out.rpartition("\n")
    assert version == "2"
    seen = json.loads(body)
    assert seen["bodyLength"] == 128 * MB
    assert seen["bodySha256"] == digest.hexdigest()
    checkRSS(pid, limit, via)


def test_rapid_reset(edge: Edge) -> None:
    """
    The 2023 rapid-reset attack: a client opens streams and resets them at
    once, far beyond the reset budget.  The gateway ends that connection
    with C{GOAWAY ENHANCE_YOUR_CALM}, counts the flood, sent few of those
    requests upstream, and goes on serving other clients meanwhile and
    after.
    """
    other = RawH2(edge)
    attacker = RawH2(edge)
    batch = b""
    streamId = 1
    for _ in range(1000):
        batch += attacker.head("/slow/1000", streamId)
        batch += RstStreamFrame(streamId, error_code=8).serialize()
        streamId += 2
    started = time.monotonic()
    try:
        for _ in range(5):
            attacker.sock.sendall(batch)
            batch = b"".join(
                attacker.head("/slow/1000", i) + RstStreamFrame(i, error_code=8).serialize()
                for i in range(streamId, streamId + 2000, 2)
            )
            streamId += 2000
    except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
        pass
    goaway = [f for f in attacker.frames(timeout=10) if isinstance(f, GoAwayFrame)]
    attacker.close()
    assert [f.error_code for f in goaway] == [11]  # ENHANCE_YOUR_CALM
    assert time.monotonic() - started < 10
    # The other client, on its own connection, is served.
    assert other.get("/echo/other")[0] == 200
    other.close()
    stats = edge.stats()
    assert stats["http2"]["floods"] == 1
    # Streams reset in the read that opened them never reach the
    # pipeline, and those that did were cancelled: few reached the
    # backend, and none is still in flight upstream.
    assert edge.backend.stats()["families"].get("slow", 0) <= 300
    waitFor(
        lambda: edge.stats()["servers"]["b"]["active"] == 0,
        5,
        what="no request in flight upstream",
    )
    fresh = RawH2(edge)
    assert fresh.get("/echo/after")[0] == 200
    fresh.close()


def test_graceful_shutdown(edge: Edge) -> None:
    """
    A stopping gateway sends C{GOAWAY} naming the last stream it took,
    answers that stream, then closes the connection.
    """
    client = RawH2(edge)
    client.sock.sendall(client.head("/slow/1500", 1))
    time.sleep(0.5)
    os.killpg(edge.gateway.proc.pid, signal.SIGTERM)
    seen: List[Any] = []
    decoder = Decoder()
    for frame in client.frames(timeout=15):
        if isinstance(frame, GoAwayFrame):
            seen.append(("goaway", frame.last_stream_id, frame.error_code))
        elif isinstance(frame, HeadersFrame) and frame.stream_id == 1:
            seen.append(("status", dict(decoder.decode(frame.data, raw=True))[b":status"]))
        elif frame.stream_id == 1 and "END_STREAM" in frame.flags:
            seen.append(("end", 1))
    client.close()
    assert seen[0] == ("goaway", 1, 0), seen
    assert ("status", b"200") in seen
    assert seen[-1] == ("end", 1), seen


@needsCurl
def test_http2_off(gateways: Any, backends: Any, pki: PKI) -> None:
    """
    With C{http2: false}, the TLS listener offers HTTP/1.1 alone.
    """
    edge = startEdge(gateways, backends, pki, {"http2": False, "h2c": False})
    version, code, _ = curlJSON(edge, "/echo/x")
    assert (version, code) == ("1.1", 200)
