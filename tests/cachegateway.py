"""
A proxy with a response cache in memory, for the unit tests of the cache:
the real snapshot, filters, pipeline, channel and request on a L{Clock},
with a backend whose every call the test answers when it likes (at once,
later, streamed chunk by chunk), and clients whose connections stay open
until they have their answer.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from fakes import ScriptedUpstreamClient
from memorygateway import PEER, Answer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH
from zope.interface import implementer

from gateway.cache.engine import ResponseCache
from gateway.filters import FilterRegistry
from gateway.http.errors import UpstreamBroken
from gateway.http.request import GatewayRequest
from gateway.http.site import LimitedSite
from gateway.pipeline.resource import GatewayResource
from gateway.routing.snapshot import SnapshotManager
from gateway.store import StoreState
from gateway.telemetry.stats import Stats


class WholeAnswer:
    """
    An upstream answer whose whole body came with its head.
    """

    def __init__(self, code: int, body: bytes, headers: Dict[bytes, Any], phrase: bytes) -> None:
        self.code = code
        self.phrase = phrase
        self.headers = _headers(headers)
        if code not in (204, 304):
            self.headers.setRawHeaders(b"content-length", [b"%d" % (len(body),)])
        self.length = len(body)
        self.body = body

    def deliverBody(self, protocol: Any) -> None:
        protocol.makeConnection(StringTransport())
        if self.body:
            protocol.dataReceived(self.body)
        protocol.connectionLost(Failure(ResponseDone()))


class StreamedAnswer:
    """
    An upstream answer whose body the test sends chunk by chunk
    (L{send}), then ends (L{end}) or breaks (L{breaks}).
    """

    body = None

    def __init__(self, code: int, headers: Dict[bytes, Any], length: Optional[int]) -> None:
        self.code = code
        self.phrase = b"OK"
        self.headers = _headers(headers)
        if length is not None:
            self.headers.setRawHeaders(b"content-length", [b"%d" % (length,)])
            self.length: Any = length
        else:
            self.length = UNKNOWN_LENGTH
        self.protocol: Any = None

    def deliverBody(self, protocol: Any) -> None:
        self.protocol = protocol
        protocol.makeConnection(StringTransport())

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def end(self) -> None:
        self.protocol.connectionLost(Failure(ResponseDone()))

    def breaks(self) -> None:
        self.protocol.connectionLost(Failure(UpstreamBroken("cut")))


def _headers(headers: Dict[bytes, Any]) -> Headers:
    out = Headers()
    for name, value in headers.items():
        out.setRawHeaders(name, value if isinstance(value, list) else [value])
    return out


class Call:
    """
    A request the backend got: the test answers it.
    """

    def __init__(self, method: bytes, uri: bytes, headers: Headers) -> None:
        self.method = method
        self.uri = uri
        self.headers = headers
        self.d: Deferred = Deferred()

    def header(self, name: bytes) -> Optional[bytes]:
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None

    def answer(
        self,
        code: int = 200,
        body: bytes = b"hello",
        headers: Optional[Dict[bytes, Any]] = None,
        phrase: bytes = b"OK",
    ) -> None:
        self.d.callback(WholeAnswer(code, body, headers or {}, phrase))

    def stream(
        self, code: int = 200, headers: Optional[Dict[bytes, Any]] = None, length: Any = None
    ) -> StreamedAnswer:
        answer = StreamedAnswer(code, headers or {}, length)
        self.d.callback(answer)
        return answer

    def fail(self, error: Exception) -> None:
        self.d.errback(Failure(error))


class Backend(ScriptedUpstreamClient):
    """
    Keeps every call in C{calls}; C{auto}, when set, answers each as it
    comes.
    """

    def __init__(self) -> None:
        self.calls: List[Call] = []
        self.auto: Optional[Callable[[Call], None]] = None

    def respond(self, backend, method, uri, headers, bodyProducer, timeout) -> Deferred:
        call = Call(method, uri, headers.copy())
        self.calls.append(call)
        if self.auto is not None:
            self.auto(call)
        return call.d


@implementer(ISSLTransport)
class TLSTransport(StringTransport):
    """
    The transport of a connection over TLS, as the channel asks it.
    """

    def setTcpNoDelay(self, enabled: bool) -> None:
        pass


class Client:
    """
    One request on a connection of its own.
    """

    def __init__(self, transport: StringTransport, channel: Any) -> None:
        self.transport = transport
        self.channel = channel

    @property
    def answered(self) -> bool:
        return b"\r\n\r\n" in self.transport.value()

    def answer(self) -> Answer:
        raw = self.transport.value()
        assert raw, "no answer yet"
        return Answer(raw)

    def leave(self) -> None:
        self.channel.connectionLost(Failure(ConnectionError("client left")))


def ok(body: bytes = b"hello", **headers: Any) -> Callable[[Call], None]:
    """
    @return: an C{auto} answering 200 with C{body} and C{headers}
        (C{cache_control="max-age=5"} is C{Cache-Control: max-age=5}).
    """
    named = {k.replace("_", "-").encode(): v for k, v in headers.items()}
    return lambda call: call.answer(200, body, named)


class CacheGateway:
    """
    A proxy with a cache (see the module's documentation): one cluster
    C{c} (server C{s}, another C{c2} with C{s2}), the APIs and consumers
    given.
    """

    def __init__(
        self,
        apis: Sequence[Dict[str, Any]],
        consumers: Sequence[Dict[str, Any]] = (),
        routings: Sequence[Dict[str, Any]] = (),
        memoryBytes: int = 1 << 20,
        redis: Any = None,
        clock: Optional[Clock] = None,
        timeout: float = 0.025,
        registry: Optional[FilterRegistry] = None,
    ) -> None:
        self.clock = clock if clock is not None else Clock()
        self.backend = Backend()
        self.manager = SnapshotManager(registry or FilterRegistry({}), self.clock)
        self.revision = 0
        self.apply(apis, consumers, routings)
        self.stats = Stats(self.clock)
        self.cache = ResponseCache(self.clock, memoryBytes, redis, timeout)
        self.stats.cache = self.cache
        self.manager.addListener(self.cache.snapshotChanged)
        self.resource = GatewayResource(
            self.manager, self.backend, self.clock, stats=self.stats, cache=self.cache
        )
        self.site = LimitedSite(self.resource, reactor=self.clock, requestFactory=GatewayRequest)

    def apply(
        self,
        apis: Sequence[Dict[str, Any]],
        consumers: Sequence[Dict[str, Any]] = (),
        routings: Sequence[Dict[str, Any]] = (),
    ) -> None:
        self.revision += 1
        self.manager.apply(
            StoreState(
                self.revision,
                {
                    "servers": {
                        "s": {"name": "s", "addr": "127.0.0.1:1"},
                        "s2": {"name": "s2", "addr": "127.0.0.1:2"},
                    },
                    "clusters": {
                        "c": {"name": "c", "servers": ["s"]},
                        "c2": {"name": "c2", "servers": ["s2"]},
                    },
                    "consumers": {c["name"]: c for c in consumers},
                    "apis": {api["name"]: api for api in apis},
                    "routings": {r["name"]: r for r in routings},
                },
            )
        )

    def send(
        self,
        method: str,
        target: str,
        headers: Sequence[Tuple[str, str]] = (),
        host: str = "gw",
        secure: bool = False,
    ) -> Client:
        """
        Send a request on a new connection; its answer may come later.

        @param secure: whether the connection is over TLS (an HTTPS
            listener's).
        """
        channel = self.site.buildProtocol(PEER)
        transport = (TLSTransport if secure else StringTransport)(peerAddress=PEER)
        channel.makeConnection(transport)
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
        lines += [f"{name}: {value}" for name, value in headers]
        channel.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        return Client(transport, channel)

    def request(self, method: str, target: str, headers: Sequence[Tuple[str, str]] = ()) -> Answer:
        """
        Send a request, which must be answered at once (from the cache, or
        by the backend's C{auto}).
        """
        return self.send(method, target, headers).answer()
