"""
Integration tests of the test backend (C{tests/backend_app.py}) and of the
harness that starts and stops it: the other integration tests rely on both.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import time

import pytest
from backend_app import CHUNK, PATTERN
from harness import freePort, peakRSS, prepareConfig, request, streamingRSSLimit

pytestmark = pytest.mark.integration


def patternSha256(n: int) -> str:
    """
    @return: the SHA-256 of the first C{n} bytes of C{/bytes}' pattern.
    """
    digest = hashlib.sha256()
    while n > 0:
        digest.update(PATTERN[: min(n, CHUNK)])
        n -= CHUNK
    return digest.hexdigest()


def test_startAndStop(backends):
    """
    A backend started on port 0 reports the port it listens on, answers
    there, and is gone (its port refusing connections) once stopped.
    """
    backend = backends("first")
    assert backend.port > 0
    assert backend.url == f"http://127.0.0.1:{backend.port}"
    assert request("GET", backend.url + "/health").status == 200
    assert backend.stop() is not None
    assert not backend.alive()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", backend.port), timeout=2).close()


def test_fixedPort(backends):
    """
    A backend can be started on a given port.
    """
    port = freePort()
    backend = backends("fixed", port=port)
    assert backend.port == port
    assert request("GET", f"http://127.0.0.1:{port}/json/x").json()["server"] == "fixed"


def test_echo(backends):
    """
    C{/echo...} answers with the request as it arrived: method, raw path
    with query, parsed query, lower-cased headers, body and its hash.
    """
    backend = backends("b1")
    answer = request(
        "PUT",
        backend.url + "/echo/a/b?x=1&x=2&y=%C3%A9",
        b"hello",
        {"X-Thing": "v", "Content-Type": "text/plain"},
    )
    assert answer.status == 200
    assert answer.header("content-type") == "application/json"
    assert answer.header("x-backend") == "b1"
    data = answer.json()
    assert data["server"] == "b1"
    assert data["method"] == "PUT"
    assert data["path"] == "/echo/a/b?x=1&x=2&y=%C3%A9"
    assert data["query"] == {"x": ["1", "2"], "y": ["\u00e9"]}
    assert data["headers"]["x-thing"] == ["v"]
    assert data["headers"]["content-length"] == ["5"]
    assert data["body"] == "hello"
    assert data["bodyLength"] == 5
    assert data["bodySha256"] == hashlib.sha256(b"hello").hexdigest()
    assert data["client"] == "127.0.0.1"


def test_echoLargeBody(backends):
    """
    A body over 64 KB is not echoed back, but its length and hash are.
    """
    backend = backends()
    body = os.urandom(200 * 1024)
    data = request("POST", backend.url + "/echo", body).json()
    assert data["body"] is None
    assert data["bodyLength"] == len(body)
    assert data["bodySha256"] == hashlib.sha256(body).hexdigest()


def test_status(backends):
    """
    C{/status/CODE} answers with that status; a 204 carries neither a body
    nor a Content-Length.
    """
    backend = backends("b1")
    answer = request("GET", backend.url + "/status/418")
    assert answer.status == 418
    assert answer.json() == {"server": "b1", "status": 418}
    answer = request("DELETE", backend.url + "/status/204")
    assert (answer.status, answer.body, answer.header("content-length")) == (204, b"", None)
    assert request("GET", backend.url + "/status/99").status == 400


def test_slow(backends):
    """
    C{/slow/MS} answers after at least MS milliseconds.
    """
    backend = backends()
    start = time.monotonic()
    answer = request("GET", backend.url + "/slow/300")
    assert time.monotonic() - start >= 0.3
    assert answer.json()["sleptMs"] == 300


def test_bytes(backends):
    """
    C{/bytes/N} sends N bytes of the pattern with a Content-Length.
    """
    backend = backends()
    answer = request("GET", backend.url + "/bytes/100000")
    assert answer.header("content-length") == "100000"
    assert answer.header("transfer-encoding") is None
    assert answer.body == (PATTERN * 2)[:100000]
    head = request("HEAD", backend.url + "/bytes/5000")
    assert (head.header("content-length"), head.body) == ("5000", b"")


def test_bytesStreamsWithBackpressure(backends):
    """
    A 200 MB C{/bytes} answer is produced as the client reads it: the
    backend's peak memory stays far below the size of the answer.
    """
    backend = backends()
    rssLimit = streamingRSSLimit(backend.pid, 100 * 1024 * 1024)
    n = 200 * 1024 * 1024
    connection = http.client.HTTPConnection("127.0.0.1", backend.port, timeout=30)
    try:
        connection.request("GET", f"/bytes/{n}")
        answer = connection.getresponse()
        assert answer.getheader("content-length") == str(n)
        digest = hashlib.sha256()
        received = 0
        while True:
            chunk = answer.read(1024 * 1024)
            if not chunk:
                break
            received += len(chunk)
            digest.update(chunk)
    finally:
        connection.close()
    assert received == n
    assert digest.hexdigest() == patternSha256(n)
    assert peakRSS(backend.pid) < rssLimit


def test_upload(backends):
    """
    C{/upload} reports the length and hash of a body (here one Twisted
    spools to a temporary file).
    """
    backend = backends()
    body = os.urandom(3 * 1024 * 1024 + 7)
    data = request("POST", backend.url + "/upload", body).json()
    assert data["bodyLength"] == len(body)
    assert data["bodySha256"] == hashlib.sha256(body).hexdigest()


def test_json(backends):
    """
    C{/json/NAME} answers a small object naming NAME and the server.
    """
    backend = backends("b7")
    assert request("GET", backend.url + "/json/user").json() == {
        "name": "user",
        "server": "b7",
        "value": "user@b7",
    }


def test_healthToggle(backends):
    """
    C{/health} answers 200 until switched down, then 503 until switched up.
    """
    backend = backends()
    assert (request("GET", backend.url + "/health").status, "ok") == (200, "ok")
    backend.control("health/down")
    answer = request("GET", backend.url + "/health")
    assert (answer.status, answer.text) == (503, "down")
    backend.control("health/up")
    assert request("GET", backend.url + "/health").status == 200


def test_failMode(backends):
    """
    After C{/control/fail/CODE} every C{/echo} and C{/json} answers CODE,
    until C{/control/fail/0}.
    """
    backend = backends()
    backend.control("fail/503")
    assert request("GET", backend.url + "/echo").status == 503
    assert request("GET", backend.url + "/json/a").status == 503
    assert request("GET", backend.url + "/health").status == 200
    backend.control("fail/0")
    assert request("GET", backend.url + "/echo").status == 200


def test_hangMode(backends):
    """
    After C{/control/hang/1}, C{/echo} does not answer; C{/control/hang/0}
    releases the held requests with a 503 and later ones are answered.
    """
    backend = backends()
    backend.control("hang/1")
    with socket.create_connection(("127.0.0.1", backend.port), timeout=5) as s:
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(0.5)
        with pytest.raises(socket.timeout):
            s.recv(1)
        backend.control("hang/0")
        s.settimeout(5)
        assert s.recv(100).startswith(b"HTTP/1.1 503 ")
    assert request("GET", backend.url + "/echo").status == 200


def test_statsAndReset(backends):
    """
    C{/control/stats} counts the requests served, per path family, without
    the control requests; C{/control/reset} sets them back to zero.
    """
    backend = backends()
    for path in ["/echo", "/echo/x", "/echoes", "/json/a", "/nothing"]:
        request("GET", backend.url + path)
    backend.control("fail/500")
    stats = backend.stats()
    assert stats["requests"] == 5
    assert stats["families"] == {"echo": 2, "echoes": 1, "json": 1, "nothing": 1}
    backend.control("reset")
    assert backend.stats()["requests"] == 0
    assert request("GET", backend.url + "/echo").status == 200


def test_badRequests(backends):
    """
    Unknown paths answer 404; bad control requests answer 400.
    """
    backend = backends()
    assert request("GET", backend.url + "/").status == 404
    assert request("GET", backend.url + "/control/health/down").status == 400
    assert request("POST", backend.url + "/control/fail/abc").status == 400
    assert request("POST", backend.url + "/control/fail/204").status == 400
    assert request("POST", backend.url + "/control/nothing").status == 400


def test_prepareConfig():
    """
    The harness gives each role section of a config mapping that has no
    C{listen} its own free port on 127.0.0.1, and keeps the ones given.
    """
    text, data = prepareConfig({"proxy": {}, "admin": {"listen": "tcp:1234", "token": "t"}})
    assert data["proxy"]["listen"].startswith("tcp:")
    assert data["proxy"]["listen"].endswith(":interface=127.0.0.1")
    assert data["admin"] == {"listen": "tcp:1234", "token": "t"}
    assert data["proxy"]["listen"] in text
