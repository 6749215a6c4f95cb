"""
CPU cost per request of the upstream clients, run by hand (not a test).

Starts a twisted.web backend in a separate process on 127.0.0.1 that answers
every request with a 96-byte JSON body, then sends N sequential keep-alive
GETs through each client and prints the client process's CPU time
(user + system, from L{resource.getrusage}) per request.

    .venv/bin/python bench/bench_httpclient.py [-n 5000] [--client all|lean|agent|floor]

"floor" is a raw protocol sending the same bytes and waiting for the answer
without parsing it: the reactor's and the kernel's share of the figures.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import subprocess
import sys
import time
from typing import Any, List, Tuple

BACKEND = r"""
import sys
from twisted.internet import reactor
from twisted.web import resource, server

BODY = (
    b'{"id":12345,"name":"benchmark","items":[1,2,3,4,5],"ok":true,'
    b'"pad":"xxxxxxxxxxxxxxxxxxxxxxxxx"}\n'
)
assert len(BODY) == 96, len(BODY)

class R(resource.Resource):
    isLeaf = True
    def render(self, request):
        request.setHeader(b"content-type", b"application/json")
        return BODY

site = server.Site(R())
site.displayTracebacks = False
site.log = lambda request: None
reactor.listenTCP(int(sys.argv[1]), site, interface="127.0.0.1")
reactor.run()
"""


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu() -> Tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


class Backend:
    host = "127.0.0.1"

    def __init__(self, port: int) -> None:
        self.port = port


async def run(reactor: Any, client: Any, backend: Backend, n: int) -> Tuple[float, float]:
    from twisted.web.client import readBody
    from twisted.web.http_headers import Headers

    from gateway.http.client import request

    headers = Headers({b"accept": [b"application/json"], b"x-forwarded-for": [b"127.0.0.1"]})
    # Warm up: connect, fill caches.
    for _ in range(200):
        response = await request(client, backend, b"GET", b"/bench?x=1", headers, None, 10.0)
        await readBody(response)
    start = cpu()
    for _ in range(n):
        response = await request(client, backend, b"GET", b"/bench?x=1", headers, None, 10.0)
        body = await readBody(response)
        assert len(body) == 96
    end = cpu()
    return (end[0] - start[0]) / n * 1e6, (end[1] - start[1]) / n * 1e6


class RawClient:
    """
    The floor: the same request bytes and a minimal wait for the answer
    over one connection, no HTTP parsing at all.  What the real clients
    cost above it is their own.
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._protocol: Any = None

    async def request(
        self, backend: Any, method: bytes, uri: bytes, headers: Any, *args: Any
    ) -> Any:
        from twisted.internet import defer
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
        from twisted.internet.protocol import Protocol

        if self._protocol is None:

            class Raw(Protocol):
                waiting: Any = None

                def dataReceived(self, data: bytes) -> None:
                    waiting, self.waiting = self.waiting, None
                    waiting.callback(data)

            endpoint = TCP4ClientEndpoint(self._reactor, backend.host, backend.port)
            self._protocol = await connectProtocol(endpoint, Raw())
            lines = [
                b"%s %s HTTP/1.1" % (method, uri),
                b"Host: %s:%d" % (b"127.0.0.1", backend.port),
            ]
            lines += [b"%s: %s" % (k, v[0]) for k, v in headers.getAllRawHeaders()]
            self._request = b"\r\n".join(lines) + b"\r\n\r\n"
        self._protocol.waiting = defer.Deferred()
        self._protocol.transport.write(self._request)
        data = await self._protocol.waiting
        return _RawResponse(data.partition(b"\r\n\r\n")[2])

    def close(self) -> Any:
        from twisted.internet import defer

        if self._protocol is not None:
            self._protocol.transport.loseConnection()
        return defer.succeed(None)


class _RawResponse:
    code = 200
    phrase = b"OK"

    def __init__(self, body: bytes) -> None:
        self.body = body

    def deliverBody(self, protocol: Any) -> None:
        from twisted.python.failure import Failure
        from twisted.web.client import ResponseDone

        protocol.makeConnection(None)
        protocol.dataReceived(self.body)
        protocol.connectionLost(Failure(ResponseDone()))


RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: TwistedWeb/26.10.0\r\nDate: Mon, 23 Nov 2026 22:51:22 GMT\r\n"
    b"Content-Length: 96\r\nContent-Type: application/json\r\n\r\n" + b"x" * 95 + b"\n"
)


def inProcess(name: str, n: int) -> float:
    """
    CPU per request of a client's own code: a memory reactor, one
    StringTransport connection, the same canned 96-byte answer fed
    straight to the client's protocol; no sockets, no event loop.
    """
    from agent_client import AgentUpstreamClient
    from twisted.internet.protocol import Protocol
    from twisted.internet.testing import MemoryReactorClock, StringTransport
    from twisted.web.http_headers import Headers

    from gateway.http.client import HTTP11UpstreamClient, request

    memory = MemoryReactorClock()
    if name == "lean":
        client: Any = HTTP11UpstreamClient(memory)
    else:
        client = AgentUpstreamClient(memory)
    backend = Backend(8080)
    headers = Headers({b"accept": [b"application/json"], b"x-forwarded-for": [b"127.0.0.1"]})
    transport = StringTransport()
    protocols: List[Any] = []

    class Sink(Protocol):
        def dataReceived(self, data: bytes) -> None:
            pass

        def connectionLost(self, reason: Any) -> None:
            pass

    got: List[Any] = []

    def one() -> None:
        d = request(client, backend, b"GET", b"/bench?x=1", headers, None, 10.0)
        if len(memory.tcpClients) > len(protocols):
            protocol = memory.tcpClients[-1][2].buildProtocol(None)
            protocol.makeConnection(transport)
            protocols.append(protocol)
        transport.clear()
        d.addCallback(got.append)
        protocols[-1].dataReceived(RESPONSE)
        got.pop().deliverBody(Sink())

    for _ in range(500):
        one()
    assert len(protocols) == 1, "the connection was not reused"
    start = time.process_time()
    for _ in range(n):
        one()
    return (time.process_time() - start) / n * 1e6


def main(argv: List[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=5000)
    parser.add_argument("--client", default="all", choices=["all", "lean", "agent", "floor"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--in-process", action="store_true", help="measure client code only, without sockets"
    )
    args = parser.parse_args(argv)
    if args.in_process:
        import warnings

        warnings.simplefilter("ignore", DeprecationWarning)
        for round in range(args.rounds):
            for name in ("lean", "agent"):
                perRequest = inProcess(name, args.n)
                print(
                    f"round {round + 1} {name:5}: {perRequest:6.1f} us CPU per request "
                    f"(in process, no sockets; {sys.implementation.name})"
                )
        return

    import warnings

    from agent_client import AgentUpstreamClient
    from twisted.internet import defer, reactor, task

    from gateway.http.client import HTTP11UpstreamClient

    warnings.simplefilter("ignore", DeprecationWarning)
    port = freePort()
    server = subprocess.Popen([sys.executable, "-c", BACKEND, str(port)])
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        backend = Backend(port)
        names = ["floor", "lean", "agent"] if args.client == "all" else [args.client]

        async def bench() -> None:
            for round in range(args.rounds):
                for name in names:
                    if name == "lean":
                        client: Any = HTTP11UpstreamClient(reactor)
                    elif name == "floor":
                        client = RawClient(reactor)
                    else:
                        client = AgentUpstreamClient(reactor)
                    user, system = await run(reactor, client, backend, args.n)
                    await client.close()
                    print(
                        f"round {round + 1} {name:5}: {user + system:6.1f} us CPU per request "
                        f"(user {user:6.1f}, system {system:6.1f}; {args.n} sequential "
                        f"keep-alive GETs, {sys.implementation.name})"
                    )

        task.react(lambda _: defer.ensureDeferred(bench()))
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main(sys.argv[1:])
    os._exit(0)
