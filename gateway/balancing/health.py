"""
Active health checks: the gateway asks each server with a C{healthCheck}
whether it is well, and takes it out of rotation while it is not.

L{HealthChecker} is a service that follows the snapshots of a
L{gateway.routing.snapshot.SnapshotManager}: every server of the current snapshot
that has a C{healthCheck} is checked, one check in flight per server at
most, the next one C{interval} seconds after the previous one finished (so
a slow server never piles up checks).  A check is a C{GET} of the check's
C{path} through the gateway's L{IUpstreamClient}; it passes when the status
is the expected one and, when C{body} is set, the first 64 KB of the answer
contain it.  C{rise} passes in a row make a server healthy, C{fall}
failures in a row unhealthy (L{gateway.balancing.backend.Backend.healthy}, which the
load balancers read).
"""

from __future__ import annotations

import collections
from typing import Any, Deque, Dict, List, Mapping, Optional, Tuple

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import PotentialDataLoss, ResponseDone
from twisted.web.http import PotentialDataLoss as HTTPPotentialDataLoss
from twisted.web.http_headers import Headers

from gateway.http.client import request as upstreamRequest
from gateway.http.errors import UpstreamConnectError, UpstreamError, UpstreamTimeout
from gateway.model.resources import HealthCheck

log = Logger()


#: The most of a check's answer that is read.
BODY_LIMIT = 64 * 1024


#: The shortest pause between two checks of one server, whatever the
#: configured interval.
MIN_INTERVAL = 0.1


#: How many transitions are kept per server for the stats.
TRANSITIONS_KEPT = 50


USER_AGENT = b"gateway-health-check"


class _BoundedBody(Protocol):
    """
    Reads a response body into memory, up to a limit; past it, the rest is
    not read (the connection is given up).
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._chunks: List[bytes] = []
        self._size = 0
        self.finished: defer.Deferred = defer.Deferred(self._cancel)

    def _stop(self) -> None:
        # The transport of a response body is a producer.
        producer: Any = self.transport
        if producer is not None:
            producer.stopProducing()

    def _cancel(self, d: defer.Deferred) -> None:
        self._stop()

    def _done(self) -> None:
        if not self.finished.called:
            self.finished.callback(b"".join(self._chunks))

    def dataReceived(self, data: bytes) -> None:
        if self.finished.called:
            return
        room = self._limit - self._size
        if len(data) >= room:
            self._chunks.append(data[:room])
            self._size = self._limit
            self._done()
            self._stop()
            return
        self._chunks.append(data)
        self._size += len(data)

    def connectionLost(self, reason: Optional[Failure] = None) -> None:
        if self.finished.called:
            return
        if reason is None or reason.check(ResponseDone, PotentialDataLoss, HTTPPotentialDataLoss):
            self._done()
        else:
            self.finished.errback(reason)


def readBody(response: Any, limit: int = BODY_LIMIT) -> defer.Deferred:
    """
    @return: a Deferred firing with the first C{limit} bytes of the
        response's body; cancelling it stops the transfer.
    """
    protocol = _BoundedBody(limit)
    response.deliverBody(protocol)
    return protocol.finished


class _Target:
    """
    One server being checked: its settings and the state of its checks.
    """

    __slots__ = (
        "name",
        "backend",
        "config",
        "key",
        "timer",
        "pending",
        "passes",
        "failures",
        "stopped",
    )

    def __init__(self, name: str, backend: Any, config: HealthCheck) -> None:
        self.name = name
        self.backend = backend
        self.config = config
        self.key = _targetKey(backend, config)
        self.timer: Any = None
        self.pending: Optional[defer.Deferred] = None
        self.passes = 0
        self.failures = 0
        self.stopped = False

    def stop(self) -> None:
        """
        Cancel the scheduled check and the one in flight.
        """
        self.stopped = True
        timer, self.timer = self.timer, None
        if timer is not None and timer.active():
            timer.cancel()
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.cancel()


def _targetKey(backend: Any, config: HealthCheck) -> Tuple[Any, ...]:
    # A new address is a new server to check, even with the same settings.
    return (config, backend.host, backend.port)


class HealthChecker(Service):
    """
    Checks the servers of the current snapshot and sets their C{healthy}.

    @ivar checking: the names of the servers being checked.
    """

    def __init__(self, client: Any, reactor: Any, manager: Any = None) -> None:
        """
        @param client: the L{gateway.interfaces.IUpstreamClient} to send
            checks through.
        @param reactor: an L{IReactorTime}.
        @param manager: a L{gateway.routing.snapshot.SnapshotManager} to follow; with
            L{None}, call L{update} with each new snapshot yourself.
        """
        self._client = client
        self._reactor = reactor
        self._manager = manager
        self._listening = False
        self._latest: Any = None
        self._targets: Dict[str, _Target] = {}
        self._history: Dict[str, Deque[Dict[str, Any]]] = {}
        self._since: Dict[str, float] = {}
        self._lastCheck: Dict[str, float] = {}
        self._lastError: Dict[str, Optional[str]] = {}

    @property
    def checking(self) -> List[str]:
        return sorted(self._targets)

    # -- service --------------------------------------------------------------

    def startService(self) -> None:
        """
        Start checking the servers of the manager's current snapshot (or of
        the last one given to L{update}), and follow its changes.
        """
        super().startService()
        manager = self._manager
        if manager is not None:
            if not self._listening:
                self._listening = True
                manager.addListener(self.update)
            if manager.snapshot is not None:
                self._latest = manager.snapshot
        if self._latest is not None:
            self._sync(self._latest.backends)

    def stopService(self) -> None:
        """
        Stop every scheduled check and cancel the ones in flight.  The
        servers keep the health they had.
        """
        super().stopService()
        targets = list(self._targets.values())
        self._targets.clear()
        for target in targets:
            target.stop()
        return None

    def update(self, snapshot: Any) -> None:
        """
        Follow a new snapshot: start checking new servers and servers whose
        check was added or changed, stop checking removed ones (a server
        whose check was removed is healthy again).

        @param snapshot: a L{gateway.routing.snapshot.Snapshot} (anything with a
            C{backends} mapping of name to L{gateway.balancing.backend.Backend}).
        """
        self._latest = snapshot
        if self.running:
            self._sync(snapshot.backends)

    # -- stats ----------------------------------------------------------------

    def status(self, name: str) -> Dict[str, Any]:
        """
        @return: the health check state of a server: C{checked} (whether it
            has an active check), C{healthy} (L{None} when not checked),
            C{since} (when its health last changed, or its checks began),
            C{lastCheck} (when the last check finished), C{lastError} (why
            the last failed check failed), C{transitions} (the last
            changes, oldest first, each C{{"at", "healthy", "reason"}}).
        """
        target = self._targets.get(name)
        return {
            "checked": target is not None,
            "healthy": target.backend.healthy if target is not None else None,
            "since": self._since.get(name),
            "lastCheck": self._lastCheck.get(name),
            "lastError": self._lastError.get(name),
            "transitions": list(self._history.get(name, ())),
        }

    def statuses(self) -> Dict[str, Dict[str, Any]]:
        """
        @return: L{status} of every server being checked, by name.
        """
        return {name: self.status(name) for name in self._targets}

    # -- scheduling -----------------------------------------------------------

    def _sync(self, backends: Mapping[str, Any]) -> None:
        targets = self._targets
        for name, target in list(targets.items()):
            backend = backends.get(name)
            config = backend.config.healthCheck if backend is not None else None
            if backend is target.backend and config is not None:
                if _targetKey(backend, config) == target.key:
                    continue
                log.info("health check of {server} changed, restarting it", server=name)
            del targets[name]
            target.stop()
            if backend is None or backend is not target.backend:
                self._forget(name)
            elif config is None:
                log.info("health check of {server} removed", server=name)
                if not backend.healthy:
                    self._setHealthy(name, backend, True, "health check removed")
                self._forget(name)
        for name, backend in backends.items():
            config = backend.config.healthCheck
            if config is not None and name not in targets:
                target = targets[name] = _Target(name, backend, config)
                self._since.setdefault(name, self._reactor.seconds())
                self._runCheck(target)

    def _forget(self, name: str) -> None:
        for state in (self._history, self._since, self._lastCheck, self._lastError):
            state.pop(name, None)

    def _runCheck(self, target: _Target) -> None:
        target.timer = None
        config = target.config
        d = defer.Deferred.fromCoroutine(self._probe(target.backend, config))
        d.addTimeout(config.timeout, self._reactor)
        target.pending = d
        d.addCallbacks(
            self._checked, self._checkFailed, callbackArgs=(target,), errbackArgs=(target,)
        )
        d.addErrback(self._bug, target)

    async def _probe(self, backend: Any, config: HealthCheck) -> Optional[str]:
        """
        Check one server once.

        @return: L{None} when it passed, else why it failed.
        """
        response = await upstreamRequest(
            self._client,
            backend,
            b"GET",
            config.path.encode("utf-8"),
            Headers({b"user-agent": [USER_AGENT]}),
            None,
            config.timeout,
        )
        body = await readBody(response)
        if response.code != config.status:
            return f"status {response.code}, expected {config.status}"
        if config.body is not None and config.body.encode("utf-8") not in body:
            return f"body does not contain {config.body!r}"
        return None

    def _checkFailed(self, failure: Failure, target: _Target) -> None:
        if target.stopped:
            return
        timeout = target.config.timeout
        if failure.check(defer.TimeoutError, UpstreamTimeout):
            reason = f"no answer within {timeout:g}s"
        elif failure.check(UpstreamConnectError):
            reason = f"connection failed: {failure.getErrorMessage()}"
        elif failure.check(UpstreamError):
            reason = failure.getErrorMessage() or UpstreamError.reason
        else:
            reason = f"{type(failure.value).__name__}: {failure.getErrorMessage()}"
        self._checked(reason, target)

    def _checked(self, reason: Optional[str], target: _Target) -> None:
        target.pending = None
        if target.stopped:
            return
        name = target.name
        backend = target.backend
        config = target.config
        self._lastCheck[name] = self._reactor.seconds()
        if reason is None:
            target.passes += 1
            target.failures = 0
            if not backend.healthy and target.passes >= config.rise:
                self._setHealthy(name, backend, True, f"passed {target.passes} check(s) in a row")
        else:
            target.failures += 1
            target.passes = 0
            self._lastError[name] = reason
            if backend.healthy and target.failures >= config.fall:
                self._setHealthy(
                    name,
                    backend,
                    False,
                    f"failed {target.failures} check(s) in a row: {reason}",
                )
        target.timer = self._reactor.callLater(
            max(config.interval, MIN_INTERVAL), self._runCheck, target
        )

    def _bug(self, failure: Failure, target: _Target) -> None:
        log.failure("health check of {server} broke", failure, server=target.name)

    def _setHealthy(self, name: str, backend: Any, healthy: bool, reason: str) -> None:
        now = self._reactor.seconds()
        backend.healthy = healthy
        self._since[name] = now
        history = self._history.get(name)
        if history is None:
            history = self._history[name] = collections.deque(maxlen=TRANSITIONS_KEPT)
        history.append({"at": now, "healthy": healthy, "reason": reason})
        emit = log.info if healthy else log.warn
        emit(
            "server {server} is {state}: {reason}",
            server=name,
            healthy=healthy,
            state="healthy" if healthy else "unhealthy",
            reason=reason,
        )
