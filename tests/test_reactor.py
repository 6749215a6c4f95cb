"""
L{gateway.http.reactor.GatewayReactor}: a reactor of its own per test (not the
global one), turned by hand, with real TCP connections over 127.0.0.1.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any, Callable, List

import pytest
from twisted.internet import protocol
from twisted.internet.error import ConnectionDone
from twisted.logger import globalLogPublisher

from gateway.http import reactor as gatewayreactor
from gateway.http import writesoon
from gateway.http.writesoon import writeSoon

# Real reactors (epoll), real TCP connections over 127.0.0.1 and a subprocess: integration tests.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not gatewayreactor.AVAILABLE, reason="no epoll here"),
]


@pytest.fixture
def r() -> Any:
    reactor = gatewayreactor.GatewayReactor()
    yield reactor
    for selectable in reactor.removeAll():
        try:
            selectable.connectionLost(ConnectionDone())
        except Exception:
            pass
    for call in reactor.getDelayedCalls():
        call.cancel()
    reactor._poller.close()
    reactor.waker.connectionLost(None)


def turn(reactor: Any, until: Callable[[], bool], turns: int = 200) -> None:
    """
    Turn C{reactor} as its main loop does until C{until()} is true.
    """
    for _ in range(turns):
        if until():
            return
        reactor.runUntilCurrent()
        timeout = reactor.timeout()
        reactor.doIteration(0.01 if timeout is None else min(timeout, 0.01))
    assert until(), "not within the turns given"


class Collect(protocol.Protocol):
    def __init__(self) -> None:
        self.data: List[bytes] = []
        self.lost: List[Any] = []

    def dataReceived(self, data: bytes) -> None:
        self.data.append(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.append(reason)


def connectedPair(reactor: Any, server: protocol.Protocol) -> Collect:
    """
    @return: a client connected to C{server} over 127.0.0.1, both on
        C{reactor}, once both ends are connected.
    """
    port = reactor.listenTCP(0, protocol.Factory.forProtocol(lambda: server), interface="127.0.0.1")
    client = Collect()
    factory = protocol.ClientFactory.forProtocol(lambda: client)
    reactor.connectTCP("127.0.0.1", port.getHost().port, factory)
    turn(reactor, lambda: client.transport is not None and server.transport is not None)
    port.stopListening()
    return client


@pytest.fixture
def logged() -> Any:
    events: List[dict] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def test_events_are_dispatched_and_a_clean_close_is_clean(r: Any) -> None:
    """
    Bytes flow both ways; the peer closing is a clean C{ConnectionDone},
    as with Twisted's epoll reactor.
    """
    server = Collect()
    client = connectedPair(r, server)
    client.transport.write(b"ping")
    turn(r, lambda: b"".join(server.data) == b"ping")
    server.transport.write(b"pong")
    turn(r, lambda: b"".join(client.data) == b"pong")
    client.transport.loseConnection()
    turn(r, lambda: bool(server.lost) and bool(client.lost))
    assert server.lost[0].check(ConnectionDone)


def test_a_failing_handler_is_logged_with_its_prefix_and_dropped(r: Any, logged: Any) -> None:
    """
    An exception from C{dataReceived} is logged, labelled with the
    connection's C{logPrefix()} as with Twisted's reactor, and ends that
    connection (only).
    """

    class Broken(Collect):
        def logPrefix(self) -> str:
            return "BrokenProtocol"

        def dataReceived(self, data: bytes) -> None:
            raise ZeroDivisionError("boom")

    server = Broken()
    client = connectedPair(r, server)
    other = Collect()
    second = connectedPair(r, other)
    client.transport.write(b"x")
    turn(r, lambda: bool(server.lost))
    failures = [e for e in logged if e.get("isError")]
    assert [e["failure"].type for e in failures] == [ZeroDivisionError]
    # The transport's prefix: the protocol's, its session number, the peer.
    assert failures[0]["system"].startswith("BrokenProtocol,")
    second.transport.write(b"still")
    turn(r, lambda: b"".join(other.data) == b"still")
    assert not other.lost


def test_after_turn_calls_run_after_the_events_of_the_turn(r: Any, logged: Any) -> None:
    """
    C{callAfterTurn} functions run once, in order, after the events of the
    turn that added them, before the next poll; one that fails is logged
    and the others still run; those they add run in the same turn.
    """
    seen: List[str] = []

    class Noting(Collect):
        def dataReceived(self, data: bytes) -> None:
            seen.append("event")
            r.callAfterTurn(seen.append, "after")
            r.callAfterTurn(lambda: 1 / 0)
            r.callAfterTurn(lambda: r.callAfterTurn(seen.append, "added by one"))

    server = Noting()
    client = connectedPair(r, server)
    client.transport.write(b"x")
    turn(r, lambda: bool(seen))
    assert seen == ["event", "after", "added by one"]
    assert [e["log_failure"].type for e in logged if e.get("log_failure")] == [ZeroDivisionError]
    assert r.timeout() != 0


def test_after_turn_calls_from_a_timed_call_run_in_its_turn(r: Any) -> None:
    """
    A function added by a timed call runs when the timed calls of the
    turn are done, not after the next poll (which may sleep long).
    """
    seen: List[str] = []
    r.callLater(0, lambda: r.callAfterTurn(seen.append, "after"))
    r.runUntilCurrent()
    assert seen == ["after"]


def test_after_turn_calls_that_keep_adding_do_not_block_the_reactor(r: Any) -> None:
    """
    Functions that keep adding more are run a bounded number of rounds per
    turn; the reactor then polls without sleeping and goes on.
    """
    count = [0]

    def again() -> None:
        count[0] += 1
        if count[0] < 100:
            r.callAfterTurn(again)

    r.callAfterTurn(again)
    r.runUntilCurrent()
    assert 0 < count[0] < 100
    assert r.timeout() == 0
    turn(r, lambda: count[0] == 100)


@pytest.mark.skipif(not writesoon.SUPPORTED, reason="this Twisted buffers otherwise")
def test_write_soon_sends_at_the_end_of_the_turn_without_a_timed_call(r: Any) -> None:
    """
    On this reactor, L{writeSoon} sends at the end of the turn: no
    L{DelayedCall}, no watching for writability.
    """
    server = Collect()
    client = connectedPair(r, server)
    timed = r.getDelayedCalls()
    writeSoon(client.transport, b"one ")
    writeSoon(client.transport, b"two")
    assert r.getDelayedCalls() == timed
    assert client.transport not in r.getWriters()
    r.runUntilCurrent()
    assert client.transport.dataBuffer == b"" and not client.transport._tempDataBuffer
    turn(r, lambda: b"".join(server.data) == b"one two")


def test_install_if_none_leaves_an_installed_reactor_alone() -> None:
    """
    In this process a reactor is installed already: L{installIfNone} does
    nothing.
    """
    assert "twisted.internet.reactor" in sys.modules
    before = sys.modules["twisted.internet.reactor"]
    assert gatewayreactor.installIfNone() is False
    assert sys.modules["twisted.internet.reactor"] is before
    assert not gatewayreactor.isGatewayReactor(before)


def test_workers_run_on_the_reactor_of_their_parent(r: Any) -> None:
    from gateway.process.pool import workerCommand

    assert workerCommand("/tmp/g.yaml", r)[-2:] == ["--reactor", "gateway"]
    assert workerCommand("/tmp/g.yaml", object())[-2:] == ["--reactor", "default"]


def test_loading_the_config_installs_no_reactor() -> None:
    """
    What C{twistd gateway} imports before it installs the gateway's reactor
    (its options, the config, the filters, write-soon's probe) does not
    install Twisted's default reactor first.
    """
    code = (
        "import sys\n"
        "import gateway.process.tap, gateway.model.config, gateway.http.writesoon\n"
        "from gateway.filters import FilterRegistry\n"
        "FilterRegistry.fromPlugins()\n"
        "assert 'twisted.internet.reactor' not in sys.modules, 'a reactor was installed'\n"
        "from gateway.http.reactor import installIfNone\n"
        "assert installIfNone()\n"
        "from twisted.internet import reactor\n"
        "print(type(reactor).__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "GatewayReactor"


@pytest.mark.parametrize("recvInto", [True, False])
def test_reads_are_whole_and_their_own(r: Any, monkeypatch: Any, recvInto: bool) -> None:
    """
    What a TCP connection reads reaches its protocol in order and whole,
    each piece L{bytes} of its own (not a view of the reactor's read
    buffer, which the next read overwrites), whether the reactor reads
    into its buffer (as on PyPy) or with C{recv}.
    """
    monkeypatch.setattr(gatewayreactor, "_RECV_INTO", recvInto)
    server = Collect()
    client = connectedPair(r, server)
    sent = bytes(range(256)) * 800  # 200 KiB: several reads
    client.transport.write(sent)
    turn(r, lambda: sum(len(d) for d in server.data) == len(sent), turns=2000)
    assert all(type(d) is bytes for d in server.data)
    assert len(server.data) > 1
    assert b"".join(server.data) == sent


def test_a_connection_reading_more_at_a_time_reads_it(r: Any) -> None:
    """
    A connection whose C{bufferSize} is larger than the reactor's read
    buffer reads that much at a time all the same.
    """
    server = Collect()
    client = connectedPair(r, server)
    server.transport.bufferSize = 4 * gatewayreactor._READ_BUFFER
    sent = b"z" * (3 * gatewayreactor._READ_BUFFER)
    client.transport.write(sent)
    turn(r, lambda: sum(len(d) for d in server.data) == len(sent), turns=2000)
    assert b"".join(server.data) == sent


def test_a_reset_is_a_lost_connection(r: Any) -> None:
    """
    A peer that resets the connection ends it with C{ConnectionLost}, not
    the clean C{ConnectionDone} of a close.
    """
    import socket
    import struct

    server = Collect()
    client = connectedPair(r, server)
    client.transport.write(b"bye")
    turn(r, lambda: b"".join(server.data) == b"bye")
    # SO_LINGER with a zero timeout: close sends a RST.
    client.transport.getHandle().setsockopt(
        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
    )
    client.transport.abortConnection()
    turn(r, lambda: bool(server.lost))
    assert not server.lost[0].check(ConnectionDone)


def test_a_handler_raising_connection_done_loses_the_connection_whole(r: Any) -> None:
    """
    A half-closeable protocol whose C{dataReceived} raises C{ConnectionDone}
    loses its connection whole (C{connectionLost}), as with Twisted's
    reactor, not only its reading side: only the peer's end of its data is a
    half-close.
    """
    from twisted.internet.interfaces import IHalfCloseableProtocol
    from zope.interface import implementer

    @implementer(IHalfCloseableProtocol)
    class HalfCloseable(Collect):
        def __init__(self) -> None:
            super().__init__()
            self.readLost = 0

        def dataReceived(self, data: bytes) -> None:
            raise ConnectionDone("from the handler")

        def readConnectionLost(self) -> None:
            self.readLost += 1

        def writeConnectionLost(self) -> None:
            pass

    server = HalfCloseable()
    client = connectedPair(r, server)
    client.transport.write(b"x")
    turn(r, lambda: bool(server.lost))
    assert server.readLost == 0
