"""
Write to TCP connections without asking the reactor to watch each one.

A TCP transport's C{write} buffers the bytes and asks the reactor to watch
the socket for writing (an C{epoll_ctl} call); on its next turn the reactor
reports the socket writable (one more event to dispatch), the transport
sends, and stops the watching (another C{epoll_ctl}).  A proxy writes each
request upstream and each answer back in one piece, into sockets that can
almost always take them, so that is two system calls and one event per
write, four and two per request, for nothing.

L{writeSoon} puts the bytes in the very buffer C{write} uses (so they keep
their order with every other write), and sends the buffers of every
connection written so at the end of the reactor's turn, before it polls
again (L{gateway.http.reactor.GatewayReactor.callAfterTurn}; on another reactor,
a timed call for now, which it runs on its next turn before it polls): the
writes of one turn still go out together, as they would have, minus the
watching, and (the common case: nothing left over from before, no paused
producer) with one C{socket.send} rather than through C{doWrite}.
Whatever a socket does not take is left to the reactor, as usual, and so
is a connection that is closing or was closed meanwhile.

It applies to Twisted's own TCP connections without TLS, when their buffers
are where this module expects them (checked once, at import:
L{SUPPORTED}); any other transport (TLS, a test's C{StringTransport}, a
Twisted that buffers otherwise) is simply written to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from twisted.internet import abstract, tcp
from twisted.internet.interfaces import IReactorFDSet, IReactorTime, ITransport
from twisted.logger import Logger

if TYPE_CHECKING:
    from typing_extensions import TypeGuard

__all__ = ["SUPPORTED", "unsentBytes", "writeSoon"]
log = Logger()


def _buffersKnown() -> bool:
    """
    @return: whether L{abstract.FileDescriptor} buffers and sends as this
        module expects.
    """
    probe = abstract.FileDescriptor.__new__(abstract.FileDescriptor)
    try:
        # A reactor of its own, which the probe never uses: without one, the
        # global reactor would be imported (and installed) by this import.
        # (Not an IReactorFDSet, hence the ignore.)
        abstract.FileDescriptor.__init__(probe, reactor=object())  # type: ignore[arg-type]
    except Exception:
        return False
    names = (
        "dataBuffer",
        "offset",
        "_tempDataBuffer",
        "_tempDataLen",
        "_writeDisconnected",
        "_writeDisconnecting",
        "producer",
        "streamingProducer",
        "producerPaused",
    )
    return (
        all(hasattr(probe, name) for name in names)
        and isinstance(probe._tempDataBuffer, list)
        and callable(getattr(probe, "_maybePauseProducer", None))
        and hasattr(tcp.Connection, "TLS")
    )


#: Whether L{writeSoon} can defer sends on this Twisted.
SUPPORTED = _buffersKnown()


_kinds: Dict[type, bool] = {}


def _isPlainTCP(transport: object) -> TypeGuard[tcp.Connection]:
    """
    @return: whether C{transport} is one of Twisted's own TCP connections,
        whose buffers this module may fill (asked once per class).
    """
    kind = type(transport)
    plain = _kinds.get(kind)
    if plain is None:
        plain = _kinds[kind] = (
            SUPPORTED
            and issubclass(kind, tcp.Connection)
            and kind.write is tcp.Connection.write
            and kind.doWrite is abstract.FileDescriptor.doWrite
            and kind.writeSomeData is tcp.Connection.writeSomeData
        )
    return plain


class _Flusher:
    """
    The connections of one reactor with bytes to send on its next turn.
    """

    def __init__(self, reactor: IReactorTime) -> None:
        # The reactor's end of turn (L{gateway.http.reactor.GatewayReactor}), or
        # a timed call for now (any other reactor).
        afterTurn: Optional[Callable[[Callable[[], None]], None]]
        afterTurn = getattr(reactor, "callAfterTurn", None)
        self._schedule: Callable[[], object]
        if afterTurn is None:
            self._schedule = lambda: reactor.callLater(0, self._flush)
        else:
            self._schedule = lambda: afterTurn(self._flush)
        self._pending: List[tcp.Connection] = []

    def add(self, transport: tcp.Connection) -> None:
        pending = self._pending
        if not pending:
            self._schedule()
        pending.append(transport)

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        for transport in pending:
            if (
                not transport.connected
                or transport.disconnecting
                or getattr(transport, "_aborting", False)
                or transport._writeDisconnected
                or not (transport._tempDataLen or len(transport.dataBuffer) > transport.offset)
            ):
                # Closed, or closing (the reactor sends what is left), or
                # sent already.
                continue
            producer = transport.producer
            if (
                (producer is None or (transport.streamingProducer and not transport.producerPaused))
                and not transport.dataBuffer
                and not transport._writeDisconnecting
                and transport._tempDataLen <= _SEND_LIMIT
            ):
                # The common case, sent here: what C{doWrite} does with it,
                # without the calls it makes for the cases it also serves
                # (a partial buffer, a paused producer to resume, a
                # half-close, and unwatching a socket that is not watched).
                chunks = transport._tempDataBuffer
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                transport._tempDataBuffer = []
                transport._tempDataLen = 0
                try:
                    sent = transport.socket.send(data)
                except OSError:
                    # Full (EAGAIN), interrupted, or broken: left to the
                    # reactor, whose C{doWrite} sends it later or meets the
                    # same error and ends the connection, as it always does.
                    sent = 0
                if sent < len(data):
                    transport.dataBuffer = data
                    transport.offset = sent
                    transport.startWriting()
                continue
            try:
                why = transport.doWrite()
            except Exception:
                log.failure("sending to {transport} failed", transport=transport)
                why = True
            if why is not None or transport._tempDataLen or transport.dataBuffer:
                # The socket took part of it, or failed: the reactor goes
                # on, and reports a failure as it always does.
                transport.startWriting()


#: The most a transport sends in one call (L{abstract.FileDescriptor.SEND_LIMIT}).
_SEND_LIMIT = abstract.FileDescriptor.SEND_LIMIT


_flushers: Dict[IReactorFDSet, _Flusher] = {}


def writeSoon(transport: ITransport, data: bytes) -> None:
    """
    Write C{data} to C{transport}, sent on the reactor's next turn without
    watching the socket (see the module docstring).

    @param transport: any transport.
    @param data: the bytes to send.
    """
    if not data or not _isPlainTCP(transport) or transport.TLS or transport.disconnecting:
        transport.write(data)
        return
    if not transport.connected or transport._writeDisconnected:
        return
    queued = transport._tempDataLen or len(transport.dataBuffer) > transport.offset
    transport._tempDataBuffer.append(data)
    transport._tempDataLen += len(data)
    transport._maybePauseProducer()
    if queued:
        # Already waiting to be sent: by the reactor (it is watched) or by
        # the flush to come.
        return
    reactor = transport.reactor
    flusher = _flushers.get(reactor)
    if flusher is None:
        # (A reactor that watches sockets also keeps time.)
        flusher = _flushers[reactor] = _Flusher(IReactorTime(reactor))
    flusher.add(transport)


def unsentBytes(transport: Any) -> Optional[int]:
    """
    Tell how much of what was written to a transport it still holds: bytes
    not yet handed to its socket.  A connection's sending makes progress
    when, between two looks, more was written than this grew by.

    @param transport: any transport.
    @return: the number of bytes, or L{None} when the transport does not
        say (a transport other than Twisted's plain TCP one, see
        L{SUPPORTED}).
    """
    if not _isPlainTCP(transport) or transport.TLS:
        return None
    return int(transport._tempDataLen + len(transport.dataBuffer) - transport.offset)
