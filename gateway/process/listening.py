"""
Services that listen: L{ListenService} serves a factory on an endpoint while
it runs, and a port that cannot be bound ends the start with a message
naming the setting (C{proxy.listen}, C{admin.listen}); L{ProxyService}, the
proxy's, also lets the requests in flight finish when it stops.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, maybeDeferred, succeed
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()


def cannotListen(setting: str, failure: Failure) -> str:
    """
    @return: the message for a port that could not be bound: the setting,
        the address and the reason (C{address already in use}).
    """
    error = failure.value
    if isinstance(error, CannotListenError):
        return (
            f"{setting}: cannot listen on {error.interface or '*'}:{error.port}: "
            f"{error.socketError}"
        )
    return f"{setting}: cannot listen: {error}"


class ListenService(Service):
    """
    Listens on one endpoint while the service runs.

    It listens in L{privilegedStartService} (before twistd drops
    privileges), or in L{startService} when it was not started that way,
    and only once C{after} fired when one is given.

    @ivar factory: what it serves.
    @ivar port: the L{twisted.internet.interfaces.IListeningPort}, once
        listening.
    """

    port: Any = None

    def __init__(
        self,
        name: str,
        setting: str,
        endpoint: Any,
        factory: Any,
        abort: Callable[[str], None],
        after: Optional[Callable[[], Deferred]] = None,
    ) -> None:
        """
        @param name: the service's name (C{proxy}, C{admin}).
        @param setting: the config key of the endpoint, for messages
            (C{proxy.listen}).
        @param endpoint: an L{twisted.internet.interfaces.IStreamServerEndpoint}.
        @param factory: the protocol factory to serve.
        @param abort: called with a message when the port cannot be bound
            (a L{gateway.process.startup.Abort}).
        @param after: returns a Deferred to wait for before listening (a
            worker listens once it has its first configuration), or L{None}.
        """
        self.setName(name)
        self.setting = setting
        self._endpoint = endpoint
        self.factory = factory
        self._abort = abort
        self._after = after
        self._listening: Optional[Deferred] = None
        self._listenWaiters: List[Deferred] = []

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._listen()

    def startService(self) -> None:
        super().startService()
        if self._listening is None:
            self._listen()

    def _listen(self) -> None:
        if self._after is not None:
            d = self._after()
            d.addCallback(lambda _: self._endpoint.listen(self.factory))
        else:
            d = self._endpoint.listen(self.factory)
        self._listening = d
        d.addCallbacks(self._listened, self._failed)

    def whenListening(self) -> Deferred:
        """
        @return: a Deferred firing with the port once it listens (at once
            when it does already); it never fires when the port cannot be
            bound (the process ends then).
        """
        if self.port is not None:
            return succeed(self.port)
        d: Deferred = Deferred()
        self._listenWaiters.append(d)
        return d

    def _listened(self, port: Any) -> None:
        self.port = port
        waiters, self._listenWaiters = self._listenWaiters, []
        for d in waiters:
            d.callback(port)

    def _failed(self, failure: Failure) -> None:
        if failure.check(CancelledError):
            return
        self._abort(cannotListen(self.setting, failure))

    def stopService(self) -> Deferred:
        """
        Stop listening (connections already made go on).

        @return: a Deferred firing once the port is closed.
        """
        super().stopService()
        listening, self._listening = self._listening, None
        if listening is not None and not listening.called:
            listening.cancel()
        port, self.port = self.port, None
        if port is None:
            return succeed(None)
        return maybeDeferred(port.stopListening)


class ProxyService(ListenService):
    """
    The proxy's L{ListenService}: when it stops, it stops accepting, tells
    its HTTP/2 connections to go away (C{GOAWAY}: their clients open no more
    streams on them), then waits (up to C{drainTimeout} seconds) for the
    requests in flight.
    """

    def __init__(
        self,
        *args: Any,
        resource: Any,
        drainTimeout: float,
        advice: Optional[str] = None,
        site: Any = None,
        **kwargs: Any,
    ) -> None:
        """
        @param resource: the L{gateway.pipeline.resource.GatewayResource}
            it serves.
        @param site: the L{gateway.http.site.LimitedSite} it serves (whose
            HTTP/2 connections go away when it stops), or L{None}.
        @param drainTimeout: seconds to wait for requests in flight.
        @param advice: a warning to log when it starts (see
            L{gateway.process.interpreter.nurseryAdvice}), or L{None}.
        """
        super().__init__(*args, **kwargs)
        self.resource = resource
        self._drainTimeout = drainTimeout
        self._advice = advice
        self._site = site

    def startService(self) -> None:
        super().startService()
        if self._advice is not None:
            log.warn(self._advice)

    def stopService(self) -> Deferred:
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        wasListening = self.port is not None
        await super().stopService()
        if not wasListening:
            return
        goAway = getattr(self._site, "goAway", None)
        if goAway is not None:
            goAway()
        left = await self.resource.drain(self._drainTimeout)
        if left:
            log.warn("stopping with {n} request(s) still in flight", n=left)
