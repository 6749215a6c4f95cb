"""
The real C{twistd -n gateway} process in front of a backend that
misbehaves on purpose (a raw-socket server scripted per path, in the test),
everything on 127.0.0.1: framing an upstream gets wrong is never passed
on, a slow upload is no upstream timeout, a body that stalls is cut, and
a mirror that stalls its answers holds a bounded number of connections.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest
from harness import HOST, GatewayProcess, waitFor

pytestmark = pytest.mark.integration

#: A behaviour: C{(connection, request head, body bytes read with it)}.
Behaviour = Callable[[socket.socket, bytes, bytes], None]


def _readBody(conn: socket.socket, head: bytes, rest: bytes) -> bytes:
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(rest) < length:
        data = conn.recv(65536)
        if not data:
            break
        rest += data
    return rest


class ScriptedBackend:
    """
    A backend on 127.0.0.1 that answers each request as the behaviour named
    by its path's first segment says, one thread per connection.

    @ivar open: connections open now; C{mostOpen}: the most at once.
    """

    def __init__(self, behaviours: Dict[str, Behaviour]) -> None:
        self.behaviours = behaviours
        self.listener = socket.socket()
        self.listener.bind((HOST, 0))
        self.listener.listen(256)
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.open = 0
        self.mostOpen = 0
        self.stopping = False
        self.connections: List[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.open += 1
                self.mostOpen = max(self.mostOpen, self.open)
                self.connections.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            buffer = b""
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                name = head.split(b" ")[1].split(b"/")[1].split(b"?")[0].decode()
                self.behaviours[name](conn, head, buffer)
                buffer = b""
        except OSError:
            pass
        finally:
            with self.lock:
                self.open -= 1
            conn.close()

    def stop(self) -> None:
        self.stopping = True
        self.listener.close()
        with self.lock:
            for conn in self.connections:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def echo(conn: socket.socket, head: bytes, rest: bytes) -> None:
    """
    Reads the whole body, then answers with it.
    """
    body = _readBody(conn, head, rest)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (len(body),) + body)


def bothLengths(conn: socket.socket, head: bytes, rest: bytes) -> None:
    """
    Answers with both Content-Length and Transfer-Encoding.
    """
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nok\r\n0\r\n\r\n"
    )


def noContent(conn: socket.socket, head: bytes, rest: bytes) -> None:
    """
    Answers 204 with a Content-Length (which RFC 9110 forbids).
    """
    conn.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n")


def stall(conn: socket.socket, head: bytes, rest: bytes) -> None:
    """
    Answers a head and two bytes of ten, then nothing for a long while.
    """
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")
    time.sleep(60)


@pytest.fixture
def backend() -> Iterator[ScriptedBackend]:
    """
    A L{ScriptedBackend}, stopped after the test.
    """
    server = ScriptedBackend(
        {"echo": echo, "both": bothLengths, "nocontent": noContent, "stall": stall}
    )
    try:
        yield server
    finally:
        server.stop()


def rawExchange(gateway: GatewayProcess, data: bytes, timeout: float = 10.0) -> bytes:
    """
    Send C{data} on a new connection to the proxy, and read until it closes.
    """
    assert gateway.proxyURL is not None
    port = int(gateway.proxyURL.rsplit(":", 1)[1])
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(data)
        received = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return received
            received += chunk


def config(
    backend: ScriptedBackend, node: Optional[Dict[str, Any]] = None, **extra: Any
) -> Dict[str, Any]:
    result: Dict[str, Any] = {
        "proxy": {},
        "admin": {"token": "t"},
        "store": "file:data.json",
        "servers": [{"name": "b", "addr": f"{HOST}:{backend.port}"}],
        "clusters": [{"name": "c", "servers": ["b"]}],
        "apis": [{"name": "a", "urlPattern": "/*", "nodes": [dict(node or {}, cluster="c")]}],
    }
    result.update(extra)
    return result


def headOf(answer: bytes) -> Tuple[int, Dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split(" ")[1]), headers, body


def test_framing_never_passed_on(backend: ScriptedBackend, gateways: Any) -> None:
    """
    An answer with both Content-Length and Transfer-Encoding is a 502 (not
    passed on chunked); a 204 reaches the client without the upstream's
    Content-Length, and the connection serves the next request.
    """
    gateway = gateways(config(backend))
    code, _, body = headOf(
        rawExchange(gateway, b"GET /both HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    )
    assert code == 502, body
    answer = rawExchange(
        gateway,
        b"GET /nocontent HTTP/1.1\r\nHost: gw\r\n\r\n"
        b"GET /echo HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
    )
    first, _, second = answer.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 204 ")
    assert b"content-length" not in first.lower()
    assert second.startswith(b"HTTP/1.1 200 OK\r\n"), answer


def test_slow_upload_is_no_timeout(backend: ScriptedBackend, gateways: Any) -> None:
    """
    A client that sends its body slowly, over three times the node's
    timeout, gets the backend's answer, not a 504.
    """
    gateway = gateways(config(backend, {"timeout": 0.5}))
    assert gateway.proxyURL is not None
    port = int(gateway.proxyURL.rsplit(":", 1)[1])
    with socket.create_connection((HOST, port), timeout=10) as s:
        s.sendall(
            b"PUT /echo HTTP/1.1\r\nHost: gw\r\nContent-Length: 4\r\nConnection: close\r\n\r\n"
        )
        for byte in b"slow":
            time.sleep(0.4)
            s.sendall(bytes([byte]))
        received = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            received += chunk
    code, _, body = headOf(received)
    assert (code, body) == (200, b"slow"), received


def test_stalling_mirror_holds_few_connections(backend: ScriptedBackend, gateways: Any) -> None:
    """
    A mirror that answers heads and then stalls its bodies holds no more
    connections than copies may be in flight (64); the clients' answers
    are not delayed.
    """
    mirror = ScriptedBackend({"echo": stall})
    try:
        cfg = config(backend)
        cfg["servers"].append({"name": "m", "addr": f"{HOST}:{mirror.port}"})
        cfg["clusters"].append({"name": "cm", "servers": ["m"]})
        cfg["routings"] = [
            {"name": "r", "api": "a", "cluster": "cm", "strategy": "mirror", "trafficRate": 100}
        ]
        gateway = gateways(cfg)
        started = time.monotonic()
        for _ in range(100):
            code, _, body = headOf(
                rawExchange(gateway, b"GET /echo HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
            )
            assert code == 200
            # (A little time for each copy's head to come back.)
            time.sleep(0.01)
        assert time.monotonic() - started < 8
        waitFor(lambda: mirror.mostOpen >= 64, 5, what="64 copies to be in flight")
        time.sleep(0.5)
        assert mirror.mostOpen <= 64, mirror.mostOpen
    finally:
        mirror.stop()


def test_stalled_body_cut(backend: ScriptedBackend, gateways: Any) -> None:
    """
    A backend that sends a head and part of the body, then nothing, has
    its answer cut once none of the body came for the node's timeout: the
    client sees the answer end short (the connection closed before the
    length it was told) within about twice the timeout, instead of being
    held for as long as the backend likes.
    """
    gateway = gateways(config(backend, {"timeout": 0.5}))
    assert gateway.proxyURL is not None
    port = int(gateway.proxyURL.rsplit(":", 1)[1])
    started = time.monotonic()
    answer = b""
    with socket.create_connection((HOST, port), timeout=20) as s:
        s.sendall(b"GET /stall HTTP/1.1\r\nHost: gw\r\n\r\n")
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except ConnectionResetError:
            pass  # (cut: what a proxy does to an answer it cannot finish)
    took = time.monotonic() - started
    code, headers, body = headOf(answer)
    assert code == 200
    assert headers["content-length"] == "10"
    assert body == b"ab"
    assert took < 5, took
    waitFor(
        lambda: (
            "broke mid-body: upstream sent none of the answer's body in time" in gateway.output()
        ),
        timeout=5,
    )
