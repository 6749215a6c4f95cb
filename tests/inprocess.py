"""
An in-process test bed: real twisted.web backends and a real proxy on
127.0.0.1, in the test's own reactor.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Dict, List, Optional

import treq
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.web import server
from twisted.web.client import HTTPConnectionPool
from twisted.web.resource import Resource

from gateway.filters import FilterRegistry
from gateway.http.client import HTTP11UpstreamClient
from gateway.pipeline.aggregate import Aggregator
from gateway.pipeline.forwarding import ClientAddresses
from gateway.pipeline.mirror import Mirror
from gateway.pipeline.resource import GatewayResource
from gateway.process.sites import GatewaySite
from gateway.routing.snapshot import SnapshotManager
from gateway.store import StoreState


class EchoBackend(Resource):
    """
    A backend that describes the request it got, and a few special paths.
    """

    isLeaf = True

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.hanging: List[Any] = []
        self.seen: List[str] = []
        self.cancelled: List[str] = []
        #: When set, every request hangs (a stuck backend).
        self.hangAll = False

    def render(self, request):
        path = request.path
        self.seen.append(request.uri.decode())
        if path.startswith(b"/hang") or self.hangAll:
            self.hanging.append(request)
            return server.NOT_DONE_YET
        if path == b"/nocontent":
            request.setResponseCode(204)
            return b""
        if path == b"/chunked":
            request.write(b"a" * 10)

            def more():
                if not request._disconnected:
                    request.write(b"b" * 10)
                    request.finish()

            reactor.callLater(0.01, more)
            return server.NOT_DONE_YET
        if path.startswith(b"/json/"):
            return self._json(request, path[len(b"/json/") :].decode())
        if path.startswith(b"/only/"):
            # /only/NAME: 200 from the backend named NAME, 503 from others.
            ok = path[len(b"/only/") :].decode() == self.name
            request.setResponseCode(200 if ok else 503)
            request.setHeader(b"x-backend", self.name.encode())
            return self.name.encode()
        if path == b"/teapot":
            request.setResponseCode(418, b"I'm a teapot")
            request.setHeader(b"x-backend", self.name.encode())
            return b"short and stout"
        return self._echo(request)

    def _json(self, request, what):
        """
        /json/NAME?delay=MS&status=N&raw=1: a small JSON object after a delay.
        """
        args = {k.decode(): v[0].decode() for k, v in request.args.items()}
        delay = int(args.get("delay", "0")) / 1000.0
        status = int(args.get("status", "200"))

        def answer():
            if request._disconnected:
                self.cancelled.append(what)
                return
            request.setResponseCode(status)
            if args.get("raw"):
                request.write(b"not json")
            else:
                request.setHeader(b"content-type", b"application/json")
                payload = {"name": what, "server": self.name, "query": args}
                request.write(json.dumps(payload).encode())
            request.finish()

        if delay:
            call = reactor.callLater(delay, answer)
            request.notifyFinish().addErrback(lambda f: call.active() and call.cancel())
            request.notifyFinish().addErrback(lambda f: self.cancelled.append(what))
        else:
            answer()
        return server.NOT_DONE_YET

    def _echo(self, request):
        body = request.content.read()
        payload = {
            "server": self.name,
            "method": request.method.decode(),
            "uri": request.uri.decode(),
            "headers": {
                k.decode().lower(): [x.decode() for x in v]
                for k, v in request.requestHeaders.getAllRawHeaders()
            },
            "bodyLength": len(body),
            "bodySha256": hashlib.sha256(body).hexdigest(),
        }
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"x-backend", self.name.encode())
        request.setHeader(b"connection", b"x-secret-hop")
        request.setHeader(b"x-secret-hop", b"must not pass")
        return json.dumps(payload).encode()


class _Collect(Protocol):
    def __init__(self, done):
        self.data = []
        self.done = done

    def dataReceived(self, data):
        self.data.append(data)

    def connectionLost(self, reason):
        self.done.callback(b"".join(self.data))


async def rawRequest(url: str, request: bytes) -> Any:
    """
    Send raw bytes and read the whole answer until the server closes.

    @return: (status line, {lower-name: [values]}, body bytes as framed).
    """
    port = int(url.rsplit(":", 1)[1])
    done: defer.Deferred = defer.Deferred()
    proto = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), _Collect(done))
    proto.transport.write(request)
    raw = await done
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers: Dict[str, List[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.setdefault(name.decode().lower(), []).append(value.strip().decode())
    return lines[0].decode(), headers, body


async def listen(resource: Resource, site: Optional[server.Site] = None) -> Any:
    endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
    return await endpoint.listen(site or server.Site(resource))


def state(backendPorts: Dict[str, int], apis: List[dict], **extra: Any) -> StoreState:
    servers = {
        name: {"name": name, "addr": f"127.0.0.1:{port}"} for name, port in backendPorts.items()
    }
    clusters = extra.pop("clusters", {"main": {"name": "main", "servers": sorted(backendPorts)}})
    return StoreState(
        extra.pop("revision", 1),
        {
            "servers": servers,
            "clusters": clusters,
            "apis": {a["name"]: a for a in apis},
            "routings": extra.pop("routings", {}),
        },
    )


class Harness:
    """
    Backends, a snapshot manager and a proxy listening on 127.0.0.1.
    """

    def __init__(self) -> None:
        self.ports: List[Any] = []
        self.backends: Dict[str, EchoBackend] = {}
        self.backendPorts: Dict[str, int] = {}
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.client = HTTP11UpstreamClient(reactor, connectTimeout=2)

    async def start(self, names=("b1",), globalFilters=(), registry=None, trusted=(), stats=None):
        for name in names:
            backend = EchoBackend(name)
            port = await listen(backend)
            self.ports.append(port)
            self.backends[name] = backend
            self.backendPorts[name] = port.getHost().port
        self.manager = SnapshotManager(
            registry or FilterRegistry.fromPlugins(), reactor, globalFilters=globalFilters
        )
        self.mirror = Mirror(self.client, reactor, stats=stats)
        self.resource = GatewayResource(
            self.manager,
            self.client,
            reactor,
            ClientAddresses(trusted),
            aggregator=Aggregator(self.client, reactor, stats=stats),
            mirror=self.mirror,
            stats=stats,
        )
        port = await listen(None, GatewaySite(self.resource, reactor=reactor))
        self.ports.append(port)
        self.url = f"http://127.0.0.1:{port.getHost().port}"
        return self

    def apply(self, apis: List[dict], **extra: Any) -> None:
        self.manager.apply(state(self.backendPorts, apis, **extra))

    def request(self, method: str, path: str, **kw: Any) -> defer.Deferred:
        return treq.request(method, self.url + path, pool=self.pool, **kw)

    async def stop(self) -> None:
        for backend in self.backends.values():
            for request in backend.hanging:
                if not request._disconnected and not request.finished:
                    request.finish()
        await self.client.close()
        await self.pool.closeCachedConnections()
        for port in self.ports:
            await port.stopListening()
