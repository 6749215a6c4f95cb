"""
Uploads stream through a real gateway process: the backend sees the first
bytes of a body before the client has sent the last, nothing of the body
is written to a file, the gateway's memory stays bounded whatever the size,
a slow backend slows the client's upload (backpressure) instead of filling
memory, and a chunked upload goes upstream chunked.

The backend here is a raw socket server (a thread of the test) that reads
the body as it comes and notes when its first and last bytes arrived:
twisted.web would read the whole body before answering.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from typing import Any, Dict, Iterator, List, Optional

import pytest
from harness import peakRSS, streamingRSSLimit

pytestmark = pytest.mark.integration

MB = 1024 * 1024
TOKEN = "t"


class _Received:
    """
    What a backend received of one body: its size, digest, and when its
    first bytes came.
    """

    def __init__(self) -> None:
        self.size = 0
        self.digest = hashlib.sha256()
        self.first: Optional[float] = None

    def take(self, data: bytes) -> None:
        if data and self.first is None:
            self.first = time.monotonic()
        self.size += len(data)
        self.digest.update(data)


class StreamingBackend:
    """
    An HTTP/1.1 server on 127.0.0.1 that answers each request once it read
    its whole body (C{Content-Length} or chunked), noting when the body's
    first and last bytes came, its head, its size and its digest.

    @param readDelay: seconds to wait before each read of the body (a slow
        backend).
    """

    def __init__(self, readDelay: float = 0.0, readSize: int = 256 * 1024) -> None:
        self.readDelay = readDelay
        self.readSize = readSize
        self.seen: List[Dict[str, Any]] = []
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._stopped = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._stopped = True
        self._thread.join(5)
        self._listener.close()

    def _serve(self) -> None:
        while not self._stopped:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                continue
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        conn.settimeout(60)
        buffer = b""
        try:
            while not self._stopped:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                record: Dict[str, Any] = {"requestLine": lines[0], "headers": headers}
                received = _Received()
                take = received.take

                def read() -> bytes:
                    if self.readDelay:
                        time.sleep(self.readDelay)
                    return conn.recv(self.readSize)

                if headers.get("transfer-encoding") == "chunked":
                    while True:
                        while b"\r\n" not in buffer:
                            buffer += read()
                        line, buffer = buffer.split(b"\r\n", 1)
                        length = int(line.split(b";")[0], 16)
                        while len(buffer) < length + 2:
                            data = read()
                            if not data:
                                return
                            buffer += data
                        take(buffer[:length])
                        buffer = buffer[length + 2 :]
                        if length == 0:
                            break
                else:
                    remaining = int(headers.get("content-length", "0"))
                    chunk, buffer = buffer[:remaining], buffer[remaining:]
                    take(chunk)
                    remaining -= len(chunk)
                    while remaining:
                        data = read()
                        if not data:
                            return
                        data, buffer = data[:remaining], data[remaining:]
                        take(data)
                        remaining -= len(data)
                size, sha256 = received.size, received.digest.hexdigest()
                record.update(size=size, sha256=sha256, first=received.first, last=time.monotonic())
                self.seen.append(record)
                body = f'{{"size": {size}, "sha256": "{sha256}"}}'.encode("ascii")
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
        except OSError:
            return
        finally:
            conn.close()


@pytest.fixture
def streamingBackend() -> Iterator[Any]:
    made: List[StreamingBackend] = []

    def make(**kwargs: Any) -> StreamingBackend:
        backend = StreamingBackend(**kwargs)
        made.append(backend)
        return backend

    try:
        yield make
    finally:
        for backend in made:
            backend.stop()


def config(backend: StreamingBackend, **api: Any) -> Dict[str, Any]:
    return {
        "proxy": {"accessLog": False},
        "admin": {"token": TOKEN},
        "store": "file:data.json",
        "servers": [{"name": "b1", "addr": backend.addr}],
        "clusters": [{"name": "c1", "servers": ["b1"]}],
        "apis": [
            dict(
                {"name": "up", "urlPattern": "/*", "nodes": [{"cluster": "c1", "timeout": 120}]},
                **api,
            )
        ],
    }


def deletedFiles(pid: int) -> List[str]:
    """
    @return: the files a process has open that were deleted (a temporary
        file is deleted as soon as it is made).
    """
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.endswith("(deleted)") and not target.startswith("/memfd:"):
            found.append(target)
    return found


def upload(
    proxyURL: str,
    size: int,
    chunked: bool = False,
    block: int = 256 * 1024,
    during: Any = None,
) -> Dict[str, Any]:
    """
    Send a body of C{size} bytes (a pattern) through the gateway, calling
    C{during()} after each block written.

    @return: C{{"status", "answer", "sha256", "sentAt"}}: the status line's
        code, the answer's body, the digest sent and when the last byte was
        written (time.monotonic()).
    """
    host, port = proxyURL[len("http://") :].split(":")
    sock = socket.create_connection((host, int(port)), timeout=120)
    digest = hashlib.sha256()
    pattern = bytes(range(256)) * (block // 256)
    try:
        framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % (size,)
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: gw\r\n" + framing + b"\r\n\r\n")
        sent = 0
        while sent < size:
            data = pattern[: min(block, size - sent)]
            # Every block different: its offset in front.
            data = sent.to_bytes(8, "big") + data[8:] if len(data) > 8 else data
            digest.update(data)
            if chunked:
                sock.sendall(b"%x\r\n%s\r\n" % (len(data), data))
            else:
                sock.sendall(data)
            sent += len(data)
            if during is not None:
                during()
        if chunked:
            sock.sendall(b"0\r\n\r\n")
        sentAt = time.monotonic()
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
        head, _, body = answer.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        while len(body) < length:
            data = sock.recv(65536)
            if not data:
                break
            body += data
        status = int(head.split(b" ")[1])
        return {"status": status, "answer": body, "sha256": digest.hexdigest(), "sentAt": sentAt}
    finally:
        sock.close()


def test_oneGiBStreamed(streamingBackend, gateways) -> None:
    """
    A 1 GiB upload reaches the backend intact; the backend sees its first
    bytes before the client has sent its last; the gateway writes nothing
    to a (temporary) file and its peak RSS stays under 80 MB (on PyPy, its
    RSS at start plus 80 MB).
    """
    backend = streamingBackend()
    gateway = gateways(config(backend))
    rssLimit = streamingRSSLimit(gateway.pid, 80 * MB)
    files: List[str] = []
    blocks = [0]

    def during() -> None:
        blocks[0] += 1
        if blocks[0] % 64 == 0:
            files.extend(deletedFiles(gateway.pid))

    size = 1024 * MB
    result = upload(gateway.proxyURL, size, during=during)
    assert result["status"] == 200, result
    [seen] = backend.seen
    assert seen["size"] == size
    assert seen["sha256"] == result["sha256"]
    assert seen["first"] < result["sentAt"] - 0.1, (seen["first"], result["sentAt"])
    assert files == []
    peak = peakRSS(gateway.pid)
    assert peak < rssLimit, f"gateway peak RSS {peak / MB:.1f} MB"


def test_chunkedGoesUpstreamChunked(streamingBackend, gateways) -> None:
    """
    A chunked upload is sent upstream chunked, as it comes (the backend
    sees its first bytes before the client sent the last), intact.
    """
    backend = streamingBackend()
    gateway = gateways(config(backend))
    size = 64 * MB
    result = upload(gateway.proxyURL, size, chunked=True)
    assert result["status"] == 200, result
    [seen] = backend.seen
    assert seen["headers"].get("transfer-encoding") == "chunked"
    assert "content-length" not in seen["headers"]
    assert (seen["size"], seen["sha256"]) == (size, result["sha256"])
    assert seen["first"] < result["sentAt"]


def test_slowBackendSlowsTheClient(streamingBackend, gateways) -> None:
    """
    A backend that reads slowly slows the client's upload down
    (backpressure): the client cannot send much more than the backend
    took, and the gateway holds little of it.
    """
    backend = streamingBackend(readDelay=0.01, readSize=64 * 1024)
    gateway = gateways(config(backend))
    rssLimit = streamingRSSLimit(gateway.pid, 80 * MB)
    size = 48 * MB
    started = time.monotonic()
    result = upload(gateway.proxyURL, size)
    elapsed = time.monotonic() - started
    assert result["status"] == 200, result
    [seen] = backend.seen
    assert seen["sha256"] == result["sha256"]
    # The backend takes ~6.4 MB/s: 48 MB cannot have been sent in much
    # less than what it took to read them (what the sockets' buffers
    # hold aside).
    readingTime = seen["last"] - seen["first"]
    assert result["sentAt"] - started > readingTime - 2.0, (elapsed, readingTime)
    peak = peakRSS(gateway.pid)
    assert peak < rssLimit, f"gateway peak RSS {peak / MB:.1f} MB"


def test_answeredBeforeTheBody(streamingBackend, gateways) -> None:
    """
    A request answered before its body arrived (here an API over its body
    limit by its chunks, refused by the gateway: 413) gets its answer, and
    the connection is then closed rather than read as a next request.
    """
    backend = streamingBackend()
    gateway = gateways(config(backend, maxBodySize=MB))
    result = upload(gateway.proxyURL, 8 * MB, chunked=True)
    assert result["status"] == 413, result
    assert b"request body larger than" in result["answer"]
