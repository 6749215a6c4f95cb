"""
A whole proxy in memory, for unit tests of what an API's settings do to
requests and answers: the real snapshot, filters, pipeline, channel and
request, on a L{Clock}, with an upstream client that records what it was
sent and answers at once (no sockets, no reactor).
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Sequence, Tuple

from fakes import ScriptedUpstreamClient
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http_headers import Headers

from gateway.filters import FilterRegistry
from gateway.http.request import GatewayRequest
from gateway.http.site import LimitedSite
from gateway.pipeline.aggregate import Aggregator
from gateway.pipeline.resource import GatewayResource
from gateway.routing.snapshot import SnapshotManager
from gateway.store import StoreState
from gateway.telemetry.stats import Stats

PEER = IPv4Address("TCP", "192.0.2.10", 40000)


class Upstream:
    """
    An upstream response whose whole body came with its head, with its
    C{Content-Length}.
    """

    def __init__(self, code: int, body: bytes, headers: Optional[Dict[bytes, bytes]] = None):
        self.code = code
        self.phrase = b"OK"
        self.headers = Headers({k: [v] for k, v in (headers or {}).items()})
        # (As the real client leaves it.)
        self.headers.setRawHeaders(b"content-length", [b"%d" % (len(body),)])
        self.length = len(body)
        self.body = body

    def deliverBody(self, protocol: Any) -> None:
        protocol.makeConnection(StringTransport())
        protocol.dataReceived(self.body)
        protocol.connectionLost(Failure(ResponseDone()))


class RecordingClient(ScriptedUpstreamClient):
    """
    Answers every request at once with C{answer} (by default a 200 JSON
    answer), and keeps what it was sent in C{sent}: C{(backend name,
    method, uri, headers)}.
    """

    def __init__(self) -> None:
        self.sent: List[Tuple[str, bytes, bytes, Headers]] = []
        self.answers: Dict[bytes, Upstream] = {}

    def respond(self, backend, method, uri, headers, bodyProducer, timeout) -> Deferred:
        self.sent.append((backend.name, method, uri, headers))
        answer = self.answers.get(uri.split(b"?")[0])
        if answer is None:
            answer = Upstream(200, b'{"ok":true}', {b"content-type": b"application/json"})
        return succeed(answer)


class Answer:
    """
    An answer the memory gateway sent, parsed.

    @ivar code: the status.
    @ivar headers: C{{lower-case name: [values]}}.
    @ivar body: the body's bytes.
    """

    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        self.code = int(lines[0].split(b" ")[1])
        self.headers: Dict[str, List[str]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            self.headers.setdefault(name.decode().lower(), []).append(value.strip().decode())

    def header(self, name: str) -> Optional[str]:
        values = self.headers.get(name.lower())
        return ", ".join(values) if values else None

    def json(self) -> Any:
        return json.loads(self.body)


class MemoryGateway:
    """
    A proxy with one cluster C{c} (server C{s}) and the APIs and consumers
    given.

    @ivar client: the L{RecordingClient}.
    @ivar stats: the L{Stats} the proxy records answers in.
    """

    def __init__(
        self,
        apis: Sequence[Dict[str, Any]],
        registry: Optional[FilterRegistry] = None,
        globalFilters: Sequence[Any] = (),
        consumers: Sequence[Dict[str, Any]] = (),
    ) -> None:
        self.clock = Clock()
        self.client = RecordingClient()
        self.manager = SnapshotManager(registry or FilterRegistry({}), self.clock, globalFilters)
        self.revision = 0
        self.apply(apis, consumers)
        self.stats = Stats(self.clock)
        resource = GatewayResource(
            self.manager,
            self.client,
            self.clock,
            aggregator=Aggregator(self.client, self.clock),
            stats=self.stats,
        )
        self.site = LimitedSite(resource, reactor=self.clock, requestFactory=GatewayRequest)

    def apply(
        self, apis: Sequence[Dict[str, Any]], consumers: Sequence[Dict[str, Any]] = ()
    ) -> None:
        self.revision += 1
        self.manager.apply(
            StoreState(
                self.revision,
                {
                    "servers": {"s": {"name": "s", "addr": "127.0.0.1:1"}},
                    "clusters": {"c": {"name": "c", "servers": ["s"]}},
                    "consumers": {c["name"]: c for c in consumers},
                    "apis": {api["name"]: api for api in apis},
                    "routings": {},
                },
            )
        )

    def request(self, method: str, target: str, headers: Sequence[Tuple[str, str]] = ()) -> Answer:
        """
        Send one request on a new connection.

        @return: the answer, which must be complete.
        """
        channel = self.site.buildProtocol(PEER)
        transport = StringTransport(peerAddress=PEER)
        channel.makeConnection(transport)
        lines = [f"{method} {target} HTTP/1.1", "Host: gw"]
        lines += [f"{name}: {value}" for name, value in headers]
        channel.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        raw = transport.value()
        assert raw, "no answer"
        return Answer(raw)

    def lastSent(self) -> Tuple[str, bytes, bytes, Headers]:
        """
        @return: what the upstream client was sent last.
        """
        assert self.client.sent, "nothing was sent upstream"
        return self.client.sent[-1]
