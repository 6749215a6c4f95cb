"""
A worker's side of its control channel (see L{gateway.process.pool}).

L{ParentLink} is the service of a proxy worker that talks to the gateway
process that started it: it gives the store states the parent relays to the
worker's L{gateway.store.relayed.RelayedStore}, confirms each revision the
worker then serves, applies the servers' health the parent's checks see
and what the parent's DNS discovery found, drops the cache entries of the
APIs the admin purges,
reports the worker's stats every second, and stops the worker when the
parent goes away.  It confirms no revision before the worker's proxy
listens: the parent counts a worker that confirmed as ready.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from twisted.application.service import Service
from twisted.logger import Logger

from gateway.discovery.records import Discovered
from gateway.process.pool import ControlChannel, adoptChannel
from gateway.store.relayed import RelayedStateError, RelayedStore

log = Logger()


class ParentLink(Service):
    """
    The control channel of a worker, while the service runs.

    @ivar channel: the L{ControlChannel}, once started.
    """

    name = "parent"

    def __init__(
        self,
        reactor: Any,
        fd: int,
        store: RelayedStore,
        manager: Any,
        stats: Callable[[], Dict[str, Any]],
        statsInterval: float = 1.0,
        onGateways: Optional[Callable[[int], None]] = None,
        onReopen: Optional[Callable[[], None]] = None,
        onPurge: Optional[Callable[[str], int]] = None,
        listening: Optional[Callable[[], Any]] = None,
    ) -> None:
        """
        @param reactor: the worker's reactor.
        @param fd: the file descriptor of the worker's end of the channel.
        @param store: the worker's store, fed with the relayed states.
        @param manager: the worker's
            L{gateway.routing.snapshot.SnapshotManager}: every snapshot it
            swaps in is confirmed to the parent, and keeps the parent's
            view of the servers' health.
        @param stats: returns the worker's stats.
        @param statsInterval: how often they are reported, in seconds.
        @param onGateways: called with the count of live gateways the
            parent relays (the fleet's limits divide by it), or L{None}.
        @param onReopen: called when the parent says to open the log files
            again (C{{"reopenLogs": true}}, see
            L{gateway.process.pool.WorkerPool.reopenLogs}), or L{None}.
        @param onPurge: called with the name of an API whose cache entries
            to drop; returns how many it dropped (L{None}: no cache).
        @param listening: returns a Deferred firing once the worker's proxy
            listens (on every endpoint): no revision is confirmed before,
            then the one served then and every later one.  L{None}: it
            confirms each at once.
        """
        self._reactor = reactor
        self._fd = fd
        self._store = store
        self._manager = manager
        self._stats = stats
        self._statsInterval = statsInterval
        self._onGateways = onGateways
        self._onReopen = onReopen
        self._onPurge = onPurge
        self._listening = listening
        self._listens = listening is None
        self._health: Dict[str, bool] = {}
        self._statsCall: Optional[Any] = None
        self.channel: Optional[ControlChannel] = None

    def startService(self) -> None:
        super().startService()
        self._manager.addListener(self._swapped)
        self.channel = adoptChannel(
            self._reactor, self._fd, ControlChannel(self._received, self._parentGone)
        )
        self._statsCall = self._reactor.callLater(self._statsInterval, self._reportStats)
        if self._listening is not None:
            self._listening().addCallback(self._nowListening)

    def _nowListening(self, _: Any) -> None:
        self._listens = True
        snapshot = self._manager.snapshot
        if snapshot is not None:
            self._send({"serving": snapshot.revision})

    def stopService(self) -> None:
        super().stopService()
        if self._statsCall is not None and self._statsCall.active():
            self._statsCall.cancel()
        self._statsCall = None

    def _received(self, message: Any) -> None:
        if not isinstance(message, dict):
            return
        health = message.get("health")
        if isinstance(health, dict):
            self._health = dict(health)
            self._applyHealth()
        if "discovery" in message:
            self._rediscover(message["discovery"])
        gateways = message.get("gateways")
        if self._onGateways is not None and isinstance(gateways, int) and gateways > 0:
            self._onGateways(gateways)
        purge = message.get("purge")
        if isinstance(purge, dict) and isinstance(purge.get("api"), str):
            entries = self._onPurge(purge["api"]) if self._onPurge is not None else 0
            self._send({"purged": {"id": purge.get("id"), "entries": entries}})
        if "state" in message:
            try:
                taken = self._store.receive(message["state"])
            except RelayedStateError as e:
                log.error("the parent relayed a state this worker cannot take: {error}", error=e)
                taken = False
            if not taken:
                self._send({"resync": True})
        if message.get("reopenLogs") is True and self._onReopen is not None:
            self._onReopen()

    def _rediscover(self, data: Any) -> None:
        try:
            discovered = Discovered.fromJSON(data)
        except ValueError as e:
            log.error("the parent relayed a discovery this worker cannot take: {error}", error=e)
            return
        self._manager.rediscover(discovered)

    def _swapped(self, snapshot: Any) -> None:
        # Health comes from the parent: keep it across snapshot swaps.
        self._applyHealth()
        if self._listens:
            self._send({"serving": snapshot.revision})

    def _applyHealth(self) -> None:
        if not self._health:
            return
        for name, backend in self._manager.backends.items():
            healthy = self._health.get(name)
            if healthy is not None:
                backend.healthy = bool(healthy)

    def _send(self, message: Dict[str, Any]) -> None:
        if self.channel is not None:
            self.channel.send(message)

    def _reportStats(self) -> None:
        self._statsCall = None
        try:
            self._send({"stats": self._stats()})
        finally:
            if self.running:
                self._statsCall = self._reactor.callLater(self._statsInterval, self._reportStats)

    def _parentGone(self) -> None:
        self.channel = None
        if self.running and self._reactor.running:
            log.info("the gateway process is gone: stopping")
            self._reactor.stop()
