"""
The access log in a gateway process: opened when the process starts,
opened again on C{SIGUSR1}, closed (after the proxy's last requests) when
it stops.

C{SIGUSR1} is twistd's signal for its log files, and the gateway keeps
that meaning: it makes the access log open its file again, so that
logrotate can rename the file and signal the gateway (C{postrotate: kill
-USR1 $(cat twistd.pid)}) with no line lost nor written to the renamed
file after the signal.  Whatever was set to handle the signal before
(twistd rotates its own log file with it, when it writes one) still runs.
A gateway with workers passes the signal on to each of them over their
control channels (L{gateway.process.pool.WorkerPool.reopenLogs}).
"""

from __future__ import annotations

import signal as _signal
from typing import Any, Callable, List, Optional

from twisted.application.service import Service
from twisted.logger import Logger

from gateway.process.signals import SignalService
from gateway.telemetry.accesslog import AccessLog

log = Logger()

#: The signal that makes the gateway open its log files again.
REOPEN_SIGNAL = _signal.SIGUSR1


class ReopenOnSignal(SignalService):
    """
    Calls functions in the reactor's thread when the process gets
    L{REOPEN_SIGNAL}, while the service runs; the signal's previous
    handler is called too, and put back when the service stops.
    """

    name = "reopen-signal"

    def __init__(
        self,
        reactor: Any,
        targets: List[Callable[[], None]],
        signals: Any = _signal,
        signum: int = REOPEN_SIGNAL,
    ) -> None:
        """
        @param reactor: the process's reactor (an L{IReactorThreads}: the
            handler hands the work to it with C{callFromThread}, which may
            be called from a signal handler).
        @param targets: what to call.
        @param signals: the L{signal} module (or a stand-in, for tests).
        @param signum: the signal.
        """
        super().__init__(signum, signals)
        self._reactor = reactor
        self._targets = targets

    def handler(self) -> Any:
        return self._handle

    def notInstalled(self) -> None:
        log.warn("cannot handle SIGUSR1 outside the main thread: no log reopening")

    def _handle(self, signum: int, frame: Any) -> None:
        self._reactor.callFromThread(self.reopen)
        previous = self.previous
        if callable(previous):
            previous(signum, frame)

    def reopen(self) -> None:
        """
        Call every target (each failure logged, the others called anyway).
        """
        for target in self._targets:
            try:
                target()
            except Exception:
                log.failure("reopening logs: {target!r} failed", target=target)


class AccessLogService(Service):
    """
    Opens the access log before the proxy listens (in
    L{privilegedStartService}, before twistd drops privileges: as nginx, a
    log file the gateway's user may not create can be made by root), and
    closes it when it stops: add it before the proxy's service, so that it
    stops after the proxy's last requests, and their lines, are over.
    """

    name = "access-log"

    def __init__(self, accessLog: AccessLog, abort: Callable[[str], None]) -> None:
        """
        @param accessLog: the L{AccessLog}.
        @param abort: called with a message naming C{proxy.accessLog.path}
            when the output cannot be opened.
        """
        self.accessLog = accessLog
        self._abort = abort
        self._opened = False

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._open()

    def startService(self) -> None:
        super().startService()
        self._open()

    def _open(self) -> None:
        if self._opened:
            return
        self._opened = True
        try:
            self.accessLog.open()
        except OSError as e:
            reason = e.strerror or str(e)
            self._abort(
                f"proxy.accessLog.path: cannot open {self.accessLog.config.path!r}: {reason}"
            )

    def stopService(self) -> None:
        super().stopService()
        self.accessLog.close()


def accessLogFor(proxyConfig: Any, reactor: Any) -> Optional[AccessLog]:
    """
    @return: the L{AccessLog} of a proxy's config (C{proxy.accessLog}), or
        L{None} when it is off.
    """
    if proxyConfig is None or proxyConfig.accessLog is False:
        return None
    return AccessLog(proxyConfig.accessLog, reactor)
