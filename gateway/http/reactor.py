"""
The gateway's reactor: Twisted's epoll reactor, with less work per event.

L{twisted.internet.epollreactor.EPollReactor} wraps the handling of every
I/O event in C{log.callWithLogger}: it asks the selectable for its
C{logPrefix()} and pushes a legacy log context holding it, so that a
C{twisted.python.log.msg} made while the event is handled is labelled with
the connection it came from.  A proxy handles four such events per request
(a request read, the upstream's answer read, and the two sends), and the
wrapping is about a tenth of its CPU time.  L{GatewayReactor} dispatches
each event directly; a failure that escapes the handling of an event is
still logged, labelled with the selectable's C{logPrefix()} (asked only
then).  What is lost: a legacy C{log.msg} made while an event is handled
is labelled C{-} instead of with its connection's prefix (the gateway
logs with L{twisted.logger.Logger}, which never used that label).

A TCP connection's read event, nearly every event, is handled inline: the
read and the call of its protocol's C{dataReceived}, as
L{twisted.internet.tcp.Connection.doRead} does them, without the two calls
between (exactly for Twisted's own TCP classes: a subclass may read
otherwise).  On PyPy it reads into a buffer of the reactor's (see
L{_RECV_INTO}).

It also runs functions at the end of each turn of the reactor, after the
events and timed calls of the turn are handled and before it waits for
more (L{GatewayReactor.callAfterTurn}): what L{gateway.http.writesoon} uses to
send the writes of a turn together, without a L{DelayedCall} per turn.

Everything else is the epoll reactor's: C{twistd -r epoll} (or any other
reactor) gives the same gateway, a little slower.  It is the default of
C{twistd gateway} on platforms with epoll (see L{installIfNone}), and the
workers of a multi-worker gateway run on the reactor of their parent (see
L{gateway.process.pool}).
"""

from __future__ import annotations

import errno
import platform
import sys
from errno import EWOULDBLOCK
from typing import Callable, List, Optional, Tuple

from twisted.internet.interfaces import ILoggingContext, IReadWriteDescriptor
from twisted.logger import Logger
from twisted.python import log as legacyLog

__all__ = ["AVAILABLE", "GatewayReactor", "install", "installIfNone", "isGatewayReactor"]
log = Logger()


try:
    from twisted.internet.epollreactor import EPollReactor
except ImportError:  # pragma: no cover - not Linux
    # (mypy checks the Linux branch: there, None is not a class.)
    EPollReactor = None  # type: ignore[assignment,misc]


#: Whether this platform has the epoll reactor L{GatewayReactor} builds on.
AVAILABLE = EPollReactor is not None


#: Whether TCP connections read into one buffer of the reactor's, what came
#: then copied to its own bytes: on PyPy, whose C{socket.recv} allocates a
#: raw buffer of the size asked (64 KiB) for every read, and copies what
#: came out of it all the same, this costs ~0.3 us less per read.  On
#: CPython C{recv} is as cheap, and copies nothing when its buffer fills.
_RECV_INTO = platform.python_implementation() == "PyPy"


#: The size of that buffer: Twisted's own C{bufferSize}.  A connection that
#: reads more at a time reads with C{recv}.
_READ_BUFFER = 65536


#: How many times, at most, the end-of-turn functions are run in a row when
#: they keep adding more: the rest waits for the next turn (which then does
#: not sleep).
_MAX_ROUNDS = 16


if AVAILABLE:

    class GatewayReactor(EPollReactor):
        """
        An epoll reactor that dispatches I/O events without the legacy log
        context, and runs end-of-turn functions (see the module docstring).
        """

        def __init__(self) -> None:
            self._afterTurn: List[Tuple[Callable[..., object], Tuple[object, ...]]] = []
            # What TCP connections read into (L{_RECV_INTO}).
            self._readBuffer = bytearray(_READ_BUFFER)
            self._readView = memoryview(self._readBuffer)
            super().__init__()

        def callAfterTurn(self, f: Callable[..., object], *args: object) -> None:
            """
            Call C{f(*args)} once, at the end of this turn of the reactor:
            after the I/O events and the timed calls being handled, before
            the reactor waits for more.  Functions run in the order they
            were given; an exception from one is logged.  From the
            reactor's thread only (others: C{callFromThread}).
            """
            self._afterTurn.append((f, args))

        def _runAfterTurn(self) -> None:
            for _ in range(_MAX_ROUNDS):
                calls = self._afterTurn
                if not calls:
                    return
                self._afterTurn = []
                for f, args in calls:
                    try:
                        f(*args)
                    except BaseException:
                        log.failure("end-of-turn call {f} failed", f=f)

        def runUntilCurrent(self) -> None:
            super().runUntilCurrent()
            if self._afterTurn:
                self._runAfterTurn()

        def timeout(self) -> Optional[float]:
            if self._afterTurn:
                # More were added than one turn runs: do not sleep.
                return 0
            return super().timeout()

        def doPoll(self, timeout: Optional[float]) -> None:
            """
            Poll for events and handle each, as L{EPollReactor.doPoll}
            does, without C{callWithLogger}; then the end-of-turn calls.
            """
            if timeout is None:
                timeout = -1
            try:
                events = self._poller.poll(timeout, len(self._selectables))
            except OSError as e:
                if e.errno == errno.EINTR:
                    return
                raise
            selectables = self._selectables
            handle = self._doReadOrWrite
            for fd, event in events:
                selectable = selectables.get(fd)
                if selectable is not None:
                    handle(selectable, fd, event)
            if self._afterTurn:
                self._runAfterTurn()

        doIteration = doPoll

        def _doReadOrWrite(self, selectable: IReadWriteDescriptor, fd: int, event: int) -> None:
            """
            What L{twisted.internet.posixbase._PollLikeMixin._doReadOrWrite}
            does, with a failure logged under the selectable's prefix.
            """
            why: object = None
            inRead = False
            if event == _POLL_IN and type(selectable) in _PLAIN_TCP:
                # Data (or the end) to read from a TCP connection, nearly
                # every event: Connection.doRead and _dataReceived inlined,
                # two calls fewer.
                inRead = True
                try:
                    if selectable.fileno() == -1:
                        why = _NO_FILEDESC
                    else:
                        size = selectable.bufferSize  # type: ignore[attr-defined]
                        try:
                            if _RECV_INTO and size <= _READ_BUFFER:
                                n = selectable.socket.recv_into(self._readBuffer, size)  # type: ignore[attr-defined]
                                data = self._readView[:n].tobytes()
                            else:
                                data = selectable.socket.recv(size)  # type: ignore[attr-defined]
                        except OSError as e:
                            if e.args[0] != EWOULDBLOCK:
                                why = _CONNECTION_LOST
                        else:
                            if data:
                                selectable.protocol.dataReceived(data)  # type: ignore[attr-defined]
                            else:
                                why = _CONNECTION_DONE
                except BaseException:
                    # (As when doRead raises: the connection is lost whole,
                    # never half-closed.)
                    why = sys.exc_info()[1]
                    inRead = False
                    legacyLog.err(system=_prefixOf(selectable))
            elif event & self._POLL_DISCONNECTED and not (event & self._POLL_IN):
                # Hung up with nothing left to read: a clean end if we were
                # reading (maybe a half-close), else an error.
                if fd in self._reads:
                    inRead = True
                    why = _CONNECTION_DONE
                else:
                    why = _CONNECTION_LOST
            else:
                try:
                    if selectable.fileno() == -1:
                        why = _NO_FILEDESC
                    else:
                        if event & self._POLL_IN:
                            why = selectable.doRead()
                            inRead = True
                        if not why and event & self._POLL_OUT:
                            why = selectable.doWrite()
                            inRead = False
                except BaseException:
                    why = sys.exc_info()[1]
                    legacyLog.err(system=_prefixOf(selectable))
            if why:
                try:
                    self._disconnectSelectable(selectable, why, inRead)
                except BaseException:
                    legacyLog.err(system=_prefixOf(selectable))

    from select import EPOLLIN as _POLL_IN

    from twisted.internet.main import CONNECTION_DONE as _CONNECTION_DONE
    from twisted.internet.main import CONNECTION_LOST as _CONNECTION_LOST
    from twisted.internet.posixbase import _NO_FILEDESC
    from twisted.internet.tcp import Client as _TCPClient
    from twisted.internet.tcp import Server as _TCPServer

    #: The selectables whose doRead is L{twisted.internet.tcp.Connection}'s
    #: own (exactly these classes: a subclass may read otherwise).
    _PLAIN_TCP = frozenset([_TCPServer, _TCPClient])

else:  # pragma: no cover - not Linux
    # (mypy checks the Linux branch: there, None is not a class.)
    GatewayReactor = None  # type: ignore[assignment,misc]


def _prefixOf(selectable: ILoggingContext) -> str:
    try:
        return str(selectable.logPrefix())
    except BaseException:
        return "(buggy logPrefix method)"


def isGatewayReactor(reactor: object) -> bool:
    """
    @return: whether C{reactor} is a L{GatewayReactor}.
    """
    return GatewayReactor is not None and isinstance(reactor, GatewayReactor)


def install() -> GatewayReactor:
    """
    Install a L{GatewayReactor} as Twisted's global reactor (what
    C{twistd -r gateway} calls).

    @return: the reactor.
    @raise twisted.internet.error.ReactorAlreadyInstalledError: when a
        reactor is installed already.
    @raise ImportError: on a platform without epoll.
    """
    if GatewayReactor is None:
        raise ImportError("the gateway reactor needs epoll (Linux)")
    from twisted.internet.main import installReactor

    reactor = GatewayReactor()
    installReactor(reactor)
    return reactor


def installIfNone() -> bool:
    """
    Install a L{GatewayReactor} unless a reactor is installed already (by
    C{twistd -r NAME}, or by an import of C{twisted.internet.reactor}) or
    this platform has no epoll.

    @return: whether it was installed.
    """
    if GatewayReactor is None or "twisted.internet.reactor" in sys.modules:
        return False
    install()
    return True
