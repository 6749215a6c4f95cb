"""
The access log: one line per request, rendered once when the request is
over and written in batches, at about the cost of nginx's.

L{AccessLog} is told of every request that is over (the proxy calls
L{AccessLog.log} with its L{gateway.pipeline.exchange.Exchange}).  It
renders the line at once, with a function made for the configured format
and fields when the log is made
(L{gateway.telemetry.accessformat.makeRenderer}, where the formats and the
fields are described), appends it to a buffer, and writes the buffer to
its output (an L{gateway.telemetry.logsinks.ISink}) when it holds
C{bufferSize} bytes or when its oldest line has waited C{flushInterval}
seconds, and when the log closes.

The output never holds a request up nor fails it: each is written without
blocking (see L{gateway.telemetry.logsinks}); lines an output cannot take
now (a full pipe) wait in the buffer, up to C{maxPending} bytes, and are
written as soon as the reactor says the output can take more (or after
L{AccessLog.retryInterval}, for a pipe whose last bytes are left to
others); past that, new lines are dropped, and so are lines the output
refused (a full disk, C{ENOSPC}): L{AccessLog.dropped} counts
them (C{/api/v1/stats}, C{/metrics}), and the gateway says so once on its
own log (then once a minute while it lasts, and when it is over).  A file
that takes part of a batch (it filled up) keeps whole lines: the torn one
is ended before anything else is written.
"""

from __future__ import annotations

import errno
import os
from typing import Any, Callable, List, Optional

from twisted.internet.interfaces import IReactorFDSet, IWriteDescriptor
from twisted.logger import Logger
from twisted.web.http_headers import Headers
from zope.interface import Attribute, Interface, implementer

from gateway.model.accesslog import AccessLogConfig
from gateway.telemetry.accessformat import makeRenderer
from gateway.telemetry.logsinks import PipeReserved, openSink

log = Logger()

__all__ = [
    "AccessLog",
    "IAccessLog",
]


class IAccessLog(Interface):
    """
    Writes a line for every request that is over.
    """

    written = Attribute("lines written to the output so far")
    dropped = Attribute("lines dropped so far: the output refused them or could not keep up")

    def log(exchange: Any) -> None:
        """
        Write the line of a request that is over (a
        L{gateway.pipeline.exchange.Exchange}); never raises.
        """

    def refused(code: int, message: str, peer: Any, sent: int) -> None:
        """
        Write the line of a request the engine refused before the pipeline
        saw it (a malformed head, a header block too large, a body too
        slow...); never raises.

        @param code: the status answered (or cut off with).
        @param message: why.
        @param peer: the client's address (an L{IAddress}).
        @param sent: bytes of the answer's body sent.
        """

    def flush() -> None:
        """
        Write the lines buffered now.
        """

    def reopen() -> None:
        """
        Open the output again (a file renamed by logrotate).
        """


# -- requests the engine refused ---------------------------------------------


class _RefusedRequest:
    """
    What the line of a refused request reads of its request: nothing of
    the head is believed (it may be what made the engine refuse it).
    """

    method = b"-"
    uri = b"-"
    path = b"-"
    clientproto = b"-"

    def __init__(self, code: int, sent: int) -> None:
        self.code = code
        self.sentLength = sent
        self.requestHeaders = Headers()


class _Refused:
    """
    An exchange as the access log reads it, for a request the engine
    refused: no API, no upstream; C{outcome} C{refused}, C{error} why.
    """

    api = None
    cluster = None
    backend = None
    routing = None
    retries = 0
    upstreamLatency = None
    requestId = None
    shownURI = None
    cache = None
    gone = False
    outcome = "refused"

    def __init__(
        self, code: int, message: str, client: Optional[str], sent: int, now: float
    ) -> None:
        self.request = _RefusedRequest(code, sent)
        self.status = code
        self.error = message
        self.clientIP = client if client is not None else "-"
        self.startTime = now


# -- the log ------------------------------------------------------------------


@implementer(IWriteDescriptor)
class _Writable:
    """
    What the reactor watches while an output cannot take more: it calls
    back when the output is writable.
    """

    def __init__(self, fd: int, writable: Callable[[], None]) -> None:
        self._fd = fd
        self._writable = writable

    def fileno(self) -> int:
        return self._fd

    def doWrite(self) -> None:
        self._writable()

    def connectionLost(self, reason: Any) -> None:
        pass

    def logPrefix(self) -> str:
        return "access-log"


def _pieces(lines: List[bytes], atomic: Optional[int], perLine: bool) -> List[bytes]:
    """
    @return: the writes that carry C{lines}: all at once; or one per line;
        or whole lines of at most C{atomic} bytes at a time (a longer line
        alone).
    """
    if perLine:
        return lines
    if atomic is None:
        return [b"".join(lines)]
    pieces: List[bytes] = []
    piece: List[bytes] = []
    size = 0
    for line in lines:
        n = len(line)
        if piece and size + n > atomic:
            pieces.append(b"".join(piece))
            piece = []
            size = 0
        piece.append(line)
        size += n
    if piece:
        pieces.append(b"".join(piece))
    return pieces


@implementer(IAccessLog)
class AccessLog:
    """
    The access log of one proxy process (see the module docstring).

    @ivar written: lines written so far.
    @ivar dropped: lines dropped so far.
    @ivar sink: the L{ISink} once L{open}, else L{None}.
    """

    #: Seconds between two reports of lines being dropped, while they are.
    reportInterval = 60.0
    #: Seconds between two tries to write to an output that could not take
    #: more, when the reactor does not say when it can.
    retryInterval = 0.01

    def __init__(
        self,
        config: AccessLogConfig,
        reactor: Any,
        opener: Callable[[AccessLogConfig], Any] = openSink,
    ) -> None:
        """
        @param config: the L{AccessLogConfig}.
        @param reactor: an L{IReactorTime}: the time of each line, and the
            timer of the batches.
        @param opener: opens the output for a config (L{openSink}).
        """
        self.config = config
        self._reactor = reactor
        self._opener = opener
        self._render = makeRenderer(config)
        self._interval = config.flushInterval
        self._bufferSize = config.bufferSize
        self._maxPending = config.maxPending
        self._lines: List[bytes] = []
        self._size = 0
        self._call: Optional[Any] = None
        #: A write found the output full: wait for the timer to try again.
        self._blocked = False
        #: The last write to a file ended inside a line.
        self._torn = False
        self._failing: Optional[str] = None
        self._watching: Optional[_Writable] = None
        self._droppedReported = 0
        self._lastReport = 0.0
        self.sink: Optional[Any] = None
        self.written = 0
        self.dropped = 0

    def open(self) -> None:
        """
        Open the output (C{config.path}).

        @raise OSError: when it cannot be opened.
        """
        self.sink = self._opener(self.config)
        if getattr(self.sink, "devNull", False):
            log.warn(
                "proxy.accessLog: the access log goes to the standard output, which is "
                "/dev/null (a daemon's): set proxy.accessLog.path to keep it"
            )

    # -- the request path ---------------------------------------------------

    def refused(self, code: int, message: str, peer: Any, sent: int) -> None:
        now = self._reactor.seconds()
        self.log(_Refused(code, message, getattr(peer, "host", None), sent, now))

    def log(self, exchange: Any) -> None:
        if self._size >= self._maxPending:
            # The output cannot keep up: drop, without rendering.
            self.dropped += 1
            return
        try:
            line = self._render(exchange, self._reactor.seconds())
        except Exception:
            log.failure("cannot render an access log line")
            self.dropped += 1
            return
        self._lines.append(line)
        size = self._size = self._size + len(line)
        if size >= self._bufferSize and not self._blocked:
            self.flush()
        elif self._call is None:
            self._call = self._reactor.callLater(self._interval, self._timed)

    # -- writing ------------------------------------------------------------

    def _timed(self) -> None:
        self._call = None
        self._blocked = False
        self.flush()
        if self._lines:
            # The output could not take them all: try again later.
            self._call = self._reactor.callLater(self._interval, self._timed)

    def flush(self) -> None:
        lines = self._lines
        sink = self.sink
        if not lines or sink is None:
            return
        self._lines = []
        self._size = 0
        if self._torn:
            # End the line a short write tore, so that the next one starts
            # a line of its own.
            error: OSError = OSError(errno.ENOSPC, "short write")
            try:
                self._torn = sink.write(b"\n") != 1
            except OSError as e:
                error = e
            if self._torn:
                self._drop(sum(line.count(b"\n") for line in lines), error)
                return
        pieces = _pieces(lines, sink.atomic, sink.perLine)
        failed = None
        for i, piece in enumerate(pieces):
            try:
                n = sink.write(piece)
            except BlockingIOError as e:
                self._keep(pieces[i:], watch=not isinstance(e, PipeReserved))
                return
            except OSError as e:
                failed = e
                self._drop(piece.count(b"\n"), e)
                continue
            if n >= len(piece):
                self.written += 1 if sink.perLine else piece.count(b"\n")
                self._torn = False
                continue
            self.written += piece.count(b"\n", 0, n)
            if sink.regular:
                # A file takes less than asked when it is full.
                self._torn = n > 0 and piece[n - 1] != 0x0A
                failed = OSError(errno.ENOSPC, "short write (disk full?)")
                self._drop(piece.count(b"\n", n), failed)
            else:
                # A socket took part of it: the rest, and what follows,
                # go next time.
                self._keep([piece[n:]] + pieces[i + 1 :], watch=True)
                return
        if failed is None:
            self._recovered()

    def _keep(self, pieces: List[bytes], watch: bool) -> None:
        """
        Keep what the output could not take now, before the lines logged
        since, and try again as soon as it can take more (the reactor says
        so, when it can watch the output and C{watch}), or soon.
        """
        self._lines = pieces + self._lines
        self._size = sum(len(p) for p in self._lines)
        self._blocked = True
        if watch and self._watch():
            return
        if self._call is None:
            self._call = self._reactor.callLater(
                min(self._interval, self.retryInterval), self._timed
            )

    def _watch(self) -> bool:
        """
        Have the reactor say when the output can take more.

        @return: whether it will (an output it can watch: a pipe, a
            socket; and a reactor that watches descriptors).
        """
        if self._watching is not None:
            return True
        sink = self.sink
        fd = sink.pollable() if sink is not None else None
        if fd is None or not IReactorFDSet.providedBy(self._reactor):
            return False
        self._watching = _Writable(fd, self._writable)
        self._reactor.addWriter(self._watching)
        return True

    def _unwatch(self) -> None:
        watching, self._watching = self._watching, None
        if watching is not None:
            self._reactor.removeWriter(watching)

    def _writable(self) -> None:
        self._blocked = False
        self.flush()
        if not self._blocked:
            self._unwatch()

    def _drop(self, count: int, error: OSError) -> None:
        self.dropped += count
        reason = os.strerror(error.errno) if error.errno else str(error)
        now = self._reactor.seconds()
        if self._failing is None or now - self._lastReport >= self.reportInterval:
            log.error(
                "access log {sink!r}: cannot write ({reason}): lines are dropped "
                "({dropped} so far)",
                sink=self.sink,
                reason=reason,
                dropped=self.dropped,
            )
            self._lastReport = now
        self._failing = reason

    def _recovered(self) -> None:
        if self._failing is not None:
            log.info(
                "access log {sink!r}: writing again ({dropped} lines dropped in all)",
                sink=self.sink,
                dropped=self.dropped,
            )
            self._failing = None

    # -- the process --------------------------------------------------------

    def reopen(self) -> None:
        """
        Write what is buffered to the output, then open it again: a file
        renamed by logrotate is written no more, a new one is made at the
        path.  When it cannot be opened, the old one is kept (and the
        error logged).
        """
        self.flush()
        sink = self.sink
        if sink is None:
            return
        # (A FIFO opened again is another descriptor.)
        self._unwatch()
        try:
            reopened = sink.reopen()
        except OSError as e:
            log.error(
                "access log {sink!r}: cannot open it again ({error}); writing on to the old one",
                sink=sink,
                error=e,
            )
            return
        if reopened:
            self._torn = False
            log.info("access log {sink!r}: opened again", sink=sink)

    def close(self) -> None:
        """
        Write what is buffered, then close the output; lines it cannot take
        any more are dropped (and counted).
        """
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()
        self._unwatch()
        self._blocked = False
        self.flush()
        self._unwatch()
        if self._lines:
            left = sum(p.count(b"\n") for p in self._lines)
            self.dropped += left
            log.warn(
                "access log {sink!r}: {n} lines could not be written before it closed",
                sink=self.sink,
                n=left,
            )
            self._lines = []
            self._size = 0
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()
        sink, self.sink = self.sink, None
        if sink is not None:
            sink.close()
