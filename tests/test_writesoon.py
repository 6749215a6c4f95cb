"""
L{gateway.http.writesoon} on real TCP connections over 127.0.0.1: bytes keep
their order with ordinary writes, large writes the socket cannot take at
once still arrive whole, nothing is watched for writing when the socket
takes it all, and a connection that closes or aborts first is left alone.
"""

from __future__ import annotations

from typing import Any, List

import pytest
import pytest_twisted
from twisted.internet import defer, error, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol

from gateway.http import writesoon
from gateway.http.writesoon import writeSoon

# Real TCP connections over 127.0.0.1: integration tests.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not writesoon.SUPPORTED, reason="this Twisted buffers otherwise"),
]


class Sink(protocol.Protocol):
    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.received: List[bytes] = []
        self.size = 0
        self.done: defer.Deferred = defer.Deferred()
        self.lost: defer.Deferred = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)
        self.size += len(data)
        if self.size >= self.expected and not self.done.called:
            self.done.callback(b"".join(self.received))

    def connectionLost(self, reason: Any = None) -> None:
        if not self.lost.called:
            self.lost.callback(None)


async def pair(expected: int) -> Any:
    """
    @return: C{(sender, sink, port)}: a client protocol connected to a
        server L{Sink}.
    """
    sinks: List[Sink] = []

    def build() -> Sink:
        sink = Sink(expected)
        sinks.append(sink)
        return sink

    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        protocol.Factory.forProtocol(build)
    )
    sender = await connectProtocol(
        TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), protocol.Protocol()
    )
    while not sinks:
        await deferLater(0.001)
    return sender, sinks[0], port


def deferLater(seconds: float) -> defer.Deferred:
    from twisted.internet import task

    return task.deferLater(reactor, seconds, lambda: None)


@pytest_twisted.ensureDeferred
async def test_order_kept_with_plain_writes() -> None:
    """
    Bytes written soon and bytes written as usual arrive in the order they
    were written, and a socket that took everything is not watched.
    """
    sender, sink, port = await pair(12)
    transport = sender.transport
    writeSoon(transport, b"abc")
    transport.write(b"def")
    writeSoon(transport, b"ghi")
    writeSoon(transport, b"jkl")
    assert await sink.done == b"abcdefghijkl"
    assert transport not in reactor.getWriters()
    transport.loseConnection()
    await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_large_write_arrives_whole() -> None:
    """
    More than the socket takes at once: the rest is left to the reactor,
    and all of it arrives.
    """
    size = 32 * 1024 * 1024
    sender, sink, port = await pair(size)
    transport = sender.transport
    writeSoon(transport, b"x" * (size // 2))
    writeSoon(transport, b"y" * (size // 2))
    data = await sink.done
    assert len(data) == size and data[: size // 2] == b"x" * (size // 2)
    transport.loseConnection()
    await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_closed_before_sent() -> None:
    """
    A connection closed cleanly before its turn sends what was written
    (closing waits for the buffer); one aborted sends nothing and raises
    nothing.
    """
    sender, sink, port = await pair(5)
    writeSoon(sender.transport, b"hello")
    sender.transport.loseConnection()
    assert await sink.done == b"hello"
    await sink.lost

    sender, sink, port2 = await pair(5)
    writeSoon(sender.transport, b"never")
    sender.transport.abortConnection()
    await sink.lost
    assert sink.received == []
    await port.stopListening()
    await port2.stopListening()


@pytest_twisted.ensureDeferred
async def test_socket_full() -> None:
    """
    Writes into a socket that takes only part of them (its peer does not
    read): the rest waits in the transport's buffer, watched by the
    reactor, later writes queue behind it, and everything arrives in order
    once the peer reads again.
    """
    piece = 100 * 1024
    sender, sink, port = await pair(0)
    sink.transport.pauseProducing()
    transport = sender.transport
    written = []
    for i in range(400):
        data = bytes([65 + i % 26]) * piece
        writeSoon(transport, data)
        written.append(data)
        await deferLater(0)
        if transport in reactor.getWriters():
            break
    assert transport in reactor.getWriters(), "the socket never filled up"
    writeSoon(transport, b"end")
    written.append(b"end")
    sink.expected = sum(len(d) for d in written)
    sink.transport.resumeProducing()
    assert await sink.done == b"".join(written)
    await deferLater(0.01)
    assert transport not in reactor.getWriters()
    transport.loseConnection()
    await port.stopListening()


class Lost(protocol.Protocol):
    def __init__(self) -> None:
        self.lost: defer.Deferred = defer.Deferred()

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback([reason])


@pytest_twisted.ensureDeferred
async def test_peer_reset() -> None:
    """
    A send that fails (the peer reset the connection) is left to the
    reactor, which ends the connection as it does for any write.
    """
    import socket
    import struct

    sinks: List[Sink] = []
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        protocol.Factory.forProtocol(lambda: sinks.append(Sink(1)) or sinks[-1])
    )
    sender = await connectProtocol(
        TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), Lost()
    )
    while not sinks:
        await deferLater(0.001)
    # Closing with a zero linger time resets the connection at once.
    peer = sinks[0].transport.socket
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sinks[0].transport.stopReading()
    peer.close()
    sent = []
    realSend = sender.transport.socket.send

    def send(data: Any) -> int:
        try:
            result = realSend(data)
        except OSError as e:
            sent.append(e)
            raise
        sent.append(result)
        return result

    sender.transport.socket = _Wrapped(sender.transport.socket, send)
    writeSoon(sender.transport, b"x" * 1000)
    [reason] = await sender.lost
    assert reason.check(error.ConnectionDone, error.ConnectionLost)
    assert isinstance(sent[0], OSError), sent
    await port.stopListening()


class _Wrapped:
    """
    A socket whose C{send} is another function.
    """

    def __init__(self, socket: Any, send: Any) -> None:
        self._socket = socket
        self.send = send

    def __getattr__(self, name: str) -> Any:
        return getattr(self._socket, name)
