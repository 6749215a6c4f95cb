"""
How a gateway process starts and stops.

L{ProcessService} is the root of a process's services
(L{gateway.process.root.makeService} builds it).  It starts them in order
and stops them in the reverse order, one after the other: the proxy stops
accepting and lets its requests finish before the upstream client closes,
and the store closes last.

L{Abort} is what a part that cannot start calls (a port that cannot be
bound, a store that cannot be read, a seed that does not compile): it says
why, naming the setting at fault, and ends the process with a non-zero
exit status.  A failure found while the services start, before the reactor
runs (a file store, a port), ends the start there: nothing listens, nothing
serves.  One found later (an etcd store that answers once the reactor
runs) stops the reactor.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, List, Optional, TextIO

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger

log = Logger()


class Abort:
    """
    Ends a process whose start failed.

    @ivar status: the exit status the process must end with: L{None} while
        nothing failed, then 1 (or the status given).
    @ivar messages: what failed, in order.
    """

    def __init__(
        self,
        reactor: Any,
        whenStopped: Optional[Callable[[int], None]] = None,
        stderr: Optional[TextIO] = None,
        prefix: str = "gateway: cannot start: ",
        status: int = 1,
    ) -> None:
        """
        @param reactor: the process's reactor (an L{IReactorCore}).
        @param whenStopped: called with the exit status when a failure
            stops a running reactor, so that the entry point can make the
            process end with it (twistd itself always exits 0 once its
            reactor stopped).
        @param stderr: where the message goes; C{sys.stderr} by default.
        @param prefix: put before every message.
        @param status: the exit status of a failed start (a proxy worker's
            is L{gateway.process.pool.CANNOT_START}, so that its parent
            tells it from a crash).
        """
        self._reactor = reactor
        self._whenStopped = whenStopped
        self._stderr = stderr
        self._prefix = prefix
        self._failedStatus = status
        self.status: Optional[int] = None
        self.messages: List[str] = []

    def __call__(self, message: str) -> None:
        """
        The start failed: say why and end the process.

        @param message: what failed, starting with the setting at fault
            (C{proxy.listen: cannot listen on ...}).
        """
        self.messages.append(message)
        stderr = self._stderr if self._stderr is not None else sys.stderr
        stderr.write(self._prefix + message + "\n")
        stderr.flush()
        if self.status is not None:
            return
        self.status = self._failedStatus
        if self._reactor.running:
            self._reactor.stop()
            if self._whenStopped is not None:
                self._whenStopped(self.status)
        # Otherwise the services are still starting: ProcessService ends
        # the start as soon as the part that failed returns.


class ProcessService(MultiService):
    """
    The root service of a gateway process: starts its children in order,
    and stops them one after the other in the reverse order.

    @ivar abort: the process's L{Abort}.
    """

    def __init__(self, abort: Abort) -> None:
        super().__init__()
        self.abort = abort

    def privilegedStartService(self) -> None:
        """
        Start the children that must start before privileges are dropped
        (binding ports, reading the store); a failure ends the start at
        once, before anything after it listens.

        @raise SystemExit: with the exit status, when a part failed.
        """
        Service.privilegedStartService(self)
        for service in self:
            if self.abort.status is not None:
                break
            service.privilegedStartService()
        if self.abort.status is not None:
            raise SystemExit(self.abort.status)

    def stopService(self) -> Deferred:
        """
        Stop the children in the reverse order of their start, each once
        the one after it has stopped.

        @return: a Deferred firing once they all stopped.
        """
        Service.stopService(self)
        return Deferred.fromCoroutine(self._stopInOrder())

    async def _stopInOrder(self) -> None:
        for service in reversed(list(self)):
            try:
                await maybeDeferred(service.stopService)
            except Exception:
                log.failure("stopping the {name} service failed", name=service.name)
