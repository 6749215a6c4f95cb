"""
L{PollingService}: a service that reads something every few seconds, for
as long as it runs (the fleet's cache purges in Redis, the count of live
gateways in etcd).
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail
from twisted.python.failure import Failure

__all__ = ["PollingService"]


class PollingService(Service):
    """
    Calls L{poll} once when started, then C{interval} seconds after each
    poll is over (succeeded or failed), never two at once, until stopped;
    stopping cancels the timer and the poll under way.

    Subclasses implement L{poll}, and L{pollFailed} to say what a failed
    poll means (by default, nothing: the next one comes as usual).
    """

    def __init__(self, reactor: Any, interval: float) -> None:
        """
        @param interval: seconds from the end of one poll to the next.
        """
        self._reactor = reactor
        self._interval = interval
        self._call: Optional[Any] = None
        self._polling: Optional[Deferred[Any]] = None

    def poll(self) -> Optional[Deferred[Any]]:
        """
        Read once.

        @return: a L{Deferred} that fires when done, or L{None} when done
            already (nothing to read this time).
        """
        raise NotImplementedError()

    def pollFailed(self, failure: Failure) -> None:
        """
        A poll failed (or was cancelled, as the service stopped).
        """

    def startService(self) -> None:
        super().startService()
        self._call = self._reactor.callLater(0, self._poll)

    def stopService(self) -> None:
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self._polling is not None:
            self._polling.cancel()

    def _poll(self) -> None:
        self._call = None
        try:
            polling = self.poll()
        except Exception:
            polling = fail()
        if polling is None:
            self._next(None)
            return
        self._polling = polling
        polling.addErrback(self.pollFailed)
        polling.addBoth(self._next)

    def _next(self, _: Any) -> None:
        self._polling = None
        if self.running:
            self._call = self._reactor.callLater(self._interval, self._poll)
