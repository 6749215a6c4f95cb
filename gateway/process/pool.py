"""
Several proxy processes on one port.

With C{proxy.workers: N} the gateway process (the parent) keeps the admin,
the store and the health checks, and runs N worker processes that serve the
proxy port.  Each worker binds the port itself with C{SO_REUSEPORT}, so the
kernel spreads connections over them (one listening socket shared by
children did not spread keep-alive connections: one child took them all).

Parent and worker talk over a socketpair, one JSON object per line:

    parent -> worker  {"state": ...}     a new store state (see
                                         L{gateway.store.relayed}): the whole
                                         state first, then what changed
                      {"health": {...}}  the servers' health (workers run no
                                         health checks of their own)
                      {"discovery": ...} what DNS discovery found (workers
                                         look nothing up: see L{relayDiscovery})
                      {"gateways": N}    the live gateways (the fleet's
                                         limits divide by it, see
                                         L{gateway.protection.redisbuckets})
                      {"reopenLogs": true} open the access log again (the
                                         parent got SIGUSR1)
                      {"purge": {"api": NAME, "id": N}}
                                         drop the API's cache entries
                                         (see L{WorkerPool.purgeCache})
    worker -> parent  {"serving": N}     the worker serves store revision N
                      {"resync": true}   send the whole state again
                      {"stats": {...}}   its statistics, every second
                      {"purged": {"id": N, "entries": K}}
                                         purge N done, K entries dropped

Workers do not read the store: the parent relays every state it takes to
each of them, and each confirms the revision it then serves, so that the
admin can answer a write once every worker serves it
(L{gateway.process.propagation}).  A worker that starts gets the current
state before it listens.  The workers keep the buckets of their limits in
one table of shared memory the parent makes and passes to each
(L{gateway.protection.sharedbuckets}), so limits hold for all of them
together.  A worker that dies is started again, with a back-off when it
keeps dying; the parent stops them all (SIGTERM, then SIGKILL after a grace
period) when it stops.  A worker whose parent is gone stops too.

A worker confirms a revision (C{serving}) only once its proxy listens: a
worker is ready from its first confirmation until it ends.  One that cannot
start (its port cannot be bound, its access log cannot be opened) exits
with L{CANNOT_START}.  While the gateway starts (until every worker has
served once) that ends the gateway, as a one-process gateway whose port
cannot be bound ends (no restarts that could never succeed); later (a
worker that crashed and finds its port taken meanwhile) it is started
again with the same back-off, and stays not ready until it serves.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from twisted.application.service import Service
from twisted.internet import defer, error
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.logger import Logger

from gateway.process.interpreter import processEnvironment
from gateway.process.propagation import ServedRevisions
from gateway.store import StoreState
from gateway.store.relayed import deltaMessage, fullMessage

log = Logger()


#: Where a worker finds the workers' shared buckets.
SHARED_BUCKETS_FD = 4

#: The exit status of a worker that cannot start (C{EX_CONFIG} of
#: C{sysexits.h}): it said why on its standard error.
CANNOT_START = 78


def workerCount(configured: Optional[int], shareable: bool = True) -> int:
    """
    @param configured: C{proxy.workers}: a count, 0 for one per core, or
        L{None} (not set) for one per core when C{shareable}, else 1.
    @param shareable: whether workers could share the proxy's port and
        store (L{gateway.model.config.workersCanShare}).
    @return: the number of proxy processes.
    """
    if configured is None:
        return max(1, os.cpu_count() or 1) if shareable else 1
    if configured > 0:
        return configured
    return max(1, os.cpu_count() or 1)


class ControlChannel(Protocol):
    """
    One end of the parent/worker channel: JSON objects, one per line.

    A line may be large (a whole store state, megabytes): its pieces are
    kept as they arrive and joined once, when its end arrives (Twisted's
    line receivers join the buffer again at every read, which is quadratic
    in the size of a line).
    """

    delimiter = b"\n"
    #: The longest line taken, in bytes (a whole state of a large
    #: configuration); a longer one drops the channel.
    MAX_LENGTH = 1024 * 1024 * 1024

    def __init__(self, onMessage: Callable[[dict], None], onLost: Callable[[], None]) -> None:
        self._onMessage = onMessage
        self._onLost = onLost
        self._pieces: List[bytes] = []
        self._pending = 0

    def send(self, message: dict) -> None:
        """
        Send one message (a JSON object).
        """
        self.sendEncoded(encodeMessage(message))

    def sendEncoded(self, line: bytes) -> None:
        """
        Send one message L{encodeMessage} encoded (to encode a message sent
        to every worker once).
        """
        if self.transport is not None:
            self.transport.writeSequence([line, self.delimiter])

    def dataReceived(self, data: bytes) -> None:
        start = 0
        while True:
            end = data.find(self.delimiter, start)
            if end < 0:
                break
            if self._pieces:
                self._pieces.append(data[start:end])
                line = b"".join(self._pieces)
                self._pieces = []
                self._pending = 0
            else:
                line = data[start:end]
            start = end + 1
            self.lineReceived(line)
            if self.transport is None or self.transport.disconnecting:  # type: ignore[attr-defined]
                return
        if start < len(data):
            self._pieces.append(data[start:])
            self._pending += len(data) - start
            if self._pending > self.MAX_LENGTH:
                log.error("control message over {n} bytes: dropping the channel", n=self.MAX_LENGTH)
                self._pieces = []
                if self.transport is not None:
                    self.transport.loseConnection()

    def lineReceived(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            log.error("garbled control message: {line!r}", line=line[:200])
            return
        self._onMessage(message)

    def connectionLost(self, reason: Any = None) -> None:
        self._onLost()


def encodeMessage(message: dict) -> bytes:
    """
    @return: the line (without its delimiter) that carries C{message}.
    """
    return json.dumps(message, separators=(",", ":")).encode("utf-8")


def adoptChannel(reactor: Any, fd: int, channel: ControlChannel) -> ControlChannel:
    """
    Run C{channel} over the UNIX stream socket C{fd} (which is duplicated;
    the caller closes its own copy).
    """
    factory = Factory.forProtocol(lambda: channel)
    reactor.adoptStreamConnection(fd, socket.AF_UNIX, factory)
    return channel


class _WorkerProcess(ProcessProtocol):
    def __init__(self, pool: WorkerPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.ended: defer.Deferred = defer.Deferred()
        self.startedAt = pool._reactor.seconds()

    def connectionMade(self) -> None:
        if self.transport is not None:
            self.transport.closeStdin()

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(reason.value)
        self.pool._workerEnded(self, reason.value)


class WorkerPool(Service):
    """
    Starts, watches and stops the worker processes.

    @param argv: the command that runs one worker, without C{--index I}.
    @param healthSource: a callable giving C{{server: healthy}}, sent to the
        workers whenever it changes.
    @param onStats: called with C{(index, stats)} when a worker reports.
    @param makeBuckets: makes the workers'
        L{gateway.protection.sharedbuckets.SharedBuckets} when the pool
        starts (it closes them when it stops): each worker gets them as its
        descriptor C{SHARED_BUCKETS_FD} (with C{--buckets-fd}).  L{None}:
        none.
    @param served: where the revision each worker serves is kept (each
        worker is expected there: L{ServedRevisions.expect}).
    @param onEnded: called with a worker's index when its process ended
        (before it is started again, if it is).
    @param onCannotStart: called with a message when a worker cannot start
        (it exited with L{CANNOT_START}) before every worker has served
        once: the gateway's start failed (a L{gateway.process.startup.Abort}).
        L{None}: such a worker is started again, as one that crashed.
    @ivar buckets: the workers' shared buckets while the pool runs.
    @ivar started: whether every worker has served once (the gateway's
        start is over).
    """

    restartDelay = 0.5
    maxRestartDelay = 30.0
    stopTimeout = 15.0
    healthInterval = 0.25

    def __init__(
        self,
        reactor: Any,
        count: int,
        argv: List[str],
        healthSource: Optional[Callable[[], Dict[str, bool]]] = None,
        onStats: Optional[Callable[[int, dict], None]] = None,
        makeBuckets: Optional[Callable[[], Any]] = None,
        served: Optional[ServedRevisions] = None,
        onCannotStart: Optional[Callable[[str], None]] = None,
        onEnded: Optional[Callable[[int], None]] = None,
    ) -> None:
        self.setName("workers")
        self._reactor = reactor
        self._makeBuckets = makeBuckets
        self.buckets: Optional[Any] = None
        self.served = served if served is not None else ServedRevisions()
        self.count = count
        self._argv = argv
        self._healthSource = healthSource
        self._onStats = onStats
        self._onCannotStart = onCannotStart
        self._onEnded = onEnded
        self.processes: Dict[int, _WorkerProcess] = {}
        #: The workers that have served once (any of their processes).
        self._servedOnce: Set[int] = set()
        self.started = False
        #: Whether a worker could not start while the gateway started: it
        #: stops, and no worker is started again.
        self.failed = False
        self._channels: Dict[int, ControlChannel] = {}
        self._delays: Dict[int, float] = {}
        self._pendingRestarts: Dict[int, Any] = {}
        self._lastHealth: Optional[Dict[str, bool]] = None
        self._healthCall: Optional[Any] = None
        #: The last state relayed, and the workers that hold it.
        self._relayed: Optional[StoreState] = None
        #: The last discovery relayed (its message), or None.
        self._discovery: Optional[bytes] = None
        self._synced: Set[int] = set()
        #: What every worker is told, started now or later (L{broadcast}).
        self._told: Dict[str, Any] = {}
        self.restarts = 0
        #: The cache purges under way, by id: the workers yet to confirm,
        #: the entries dropped so far, the Deferred of the caller.
        self._purges: Dict[int, Tuple[Set[int], List[int], defer.Deferred]] = {}
        self._lastPurge = 0

    def startService(self) -> None:
        super().startService()
        if self._makeBuckets is not None and self.buckets is None:
            self.buckets = self._makeBuckets()
        for index in range(self.count):
            self.served.expect(index)
            self._spawn(index)
        if self._healthSource is not None:
            self._healthCall = self._reactor.callLater(self.healthInterval, self._pushHealth)

    def _spawn(self, index: int) -> None:
        self._pendingRestarts.pop(index, None)
        parentSide, childSide = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        process = _WorkerProcess(self, index)
        argv = self._argv + ["--index", str(index)]
        childFDs: Dict[int, Any] = {0: "w", 1: 1, 2: 2, 3: childSide.fileno()}
        if self.buckets is not None:
            childFDs[SHARED_BUCKETS_FD] = self.buckets.fileno()
            argv += ["--buckets-fd", str(SHARED_BUCKETS_FD)]
        try:
            self._reactor.spawnProcess(
                process,
                self._argv[0],
                argv,
                env=processEnvironment(os.environ),
                childFDs=childFDs,
            )
        finally:
            childSide.close()
        self.processes[index] = process
        channel = ControlChannel(
            lambda message: self._received(process, message), lambda: self._lost(process)
        )
        adoptChannel(self._reactor, parentSide.fileno(), channel)
        parentSide.close()
        self._channels[index] = channel
        self._synced.discard(index)
        if self._healthSource is not None:
            channel.send({"health": self._healthSource()})
        if self._discovery is not None:
            # Before the state: the worker's first snapshot has its backends.
            channel.sendEncoded(self._discovery)
        if self._told:
            channel.send(dict(self._told))
        if self._relayed is not None:
            self._sendWhole(index)
        transport = process.transport
        pid = transport.pid if transport is not None else None
        log.info("started proxy worker {index} (pid {pid})", index=index, pid=pid)

    def _current(self, process: _WorkerProcess) -> bool:
        # A worker that ended may still have lines in its channel: they
        # speak for a process that serves no more.
        return self.processes.get(process.index) is process

    def _received(self, process: _WorkerProcess, message: dict) -> None:
        if not self._current(process) or not isinstance(message, dict):
            return
        index = process.index
        if "stats" in message and self._onStats is not None:
            self._onStats(index, message["stats"])
        serving = message.get("serving")
        if isinstance(serving, int) and not isinstance(serving, bool):
            self.served.serving(index, serving)
            self._servedOnce.add(index)
            if not self.started and len(self._servedOnce) == self.count:
                self.started = True
        purged = message.get("purged")
        if isinstance(purged, dict):
            self._purged(index, purged.get("id"), purged.get("entries"))
        if message.get("resync") and self._relayed is not None:
            self._sendWhole(index)

    def _lost(self, process: _WorkerProcess) -> None:
        if self._current(process):
            self.served.gone(process.index)
            # (A worker gone holds no entry to wait for.)
            for purgeId in list(self._purges):
                self._purged(process.index, purgeId, 0)

    def purgeCache(self, api: str, timeout: float) -> defer.Deferred:
        """
        Have every worker drop its cache entries of an API.

        @param timeout: seconds to wait for the workers' confirmations.
        @return: a Deferred of C{(entries, processes, complete)}: the
            entries dropped, the workers that confirmed, whether all did.
        """
        self._lastPurge += 1
        purgeId = self._lastPurge
        waiting = set(self._channels)
        d: defer.Deferred = defer.Deferred()
        counts = [0, 0]
        self._purges[purgeId] = (waiting, counts, d)
        line = encodeMessage({"purge": {"api": api, "id": purgeId}})
        for channel in list(self._channels.values()):
            channel.sendEncoded(line)
        timer = self._reactor.callLater(timeout, self._purgeOver, purgeId)
        if not waiting:
            self._purgeOver(purgeId)

        def cancelTimer(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            return result

        return d.addBoth(cancelTimer)

    def _purged(self, index: int, purgeId: Any, entries: Any) -> None:
        purge = self._purges.get(purgeId) if isinstance(purgeId, int) else None
        if purge is None:
            return
        waiting, counts, _ = purge
        if index not in waiting:
            return
        waiting.discard(index)
        if isinstance(entries, int) and not isinstance(entries, bool):
            counts[0] += entries
        counts[1] += 1
        if not waiting:
            self._purgeOver(purgeId)

    def _purgeOver(self, purgeId: int) -> None:
        purge = self._purges.pop(purgeId, None)
        if purge is not None:
            waiting, counts, d = purge
            d.callback((counts[0], counts[1], not waiting))

    def broadcast(self, message: Dict[str, Any]) -> None:
        """
        Tell every worker C{message} now, and every worker started later
        (the latest value of each key).
        """
        self._told.update(message)
        line = encodeMessage(message)
        for channel in self._channels.values():
            channel.sendEncoded(line)

    # -- the store's states -----------------------------------------------------

    def relay(self, state: StoreState) -> None:
        """
        Send a new store state to every worker: what changed since the
        state relayed before to those that hold it, the whole state to the
        others (and to every worker started later).  An older state than
        the last one relayed is not sent.
        """
        previous = self._relayed
        if previous is not None and state.revision < previous.revision:
            return
        self._relayed = state
        delta: Optional[bytes] = None
        for index, channel in list(self._channels.items()):
            if previous is None or index not in self._synced:
                self._sendWhole(index)
                continue
            if delta is None:
                delta = encodeMessage({"state": deltaMessage(previous, state)})
            channel.sendEncoded(delta)

    def relayDiscovery(self, discovered: Any) -> None:
        """
        Send what DNS discovery found to every worker, and to every worker
        started later.

        The gateway process looks the names up and its workers take what it
        found, rather than each worker looking them up: the workers' backends
        are then the parent's, by name, so the health the parent's checks
        see (sent by backend name) is the health of the same addresses; and
        a fleet asks its DNS servers once per name and TTL, not once per
        worker.

        @param discovered: a L{gateway.discovery.records.Discovered}.
        """
        self._discovery = encodeMessage({"discovery": discovered.toJSON()})
        for channel in list(self._channels.values()):
            channel.sendEncoded(self._discovery)

    def _sendWhole(self, index: int) -> None:
        channel = self._channels.get(index)
        if channel is None or self._relayed is None:
            return
        channel.send({"state": fullMessage(self._relayed)})
        self._synced.add(index)

    def reopenLogs(self) -> None:
        """
        Tell every worker to open its access log again (the gateway got
        C{SIGUSR1}: logrotate renamed the file).
        """
        message = encodeMessage({"reopenLogs": True})
        for channel in self._channels.values():
            channel.sendEncoded(message)

    def serving(self, index: int) -> bool:
        """
        @return: whether worker C{index} serves: it runs and has confirmed
            a revision (which it does once its proxy listens).
        """
        return self.served.serves(index)

    def pids(self) -> Dict[int, Optional[int]]:
        """
        @return: C{{index: pid}} of the workers running now.
        """
        return {
            index: getattr(process.transport, "pid", None)
            for index, process in sorted(self.processes.items())
        }

    def _pushHealth(self) -> None:
        self._healthCall = None
        health = self._healthSource() if self._healthSource is not None else {}
        if health != self._lastHealth:
            self._lastHealth = health
            for channel in self._channels.values():
                channel.send({"health": health})
        if self.running:
            self._healthCall = self._reactor.callLater(self.healthInterval, self._pushHealth)

    def _workerEnded(self, process: _WorkerProcess, reason: Any) -> None:
        index = process.index
        if self.processes.get(index) is process:
            del self.processes[index]
            self._channels.pop(index, None)
            self._synced.discard(index)
            self.served.gone(index)
            if self._onEnded is not None:
                self._onEnded(index)
        if not self.running or self.failed:
            return
        cannotStart = getattr(reason, "exitCode", None) == CANNOT_START
        if cannotStart and not self.started and self._onCannotStart is not None:
            # The gateway's start failed: what failed would fail again.
            self.failed = True
            log.critical(
                "proxy worker {index} cannot start (exit status {status}; its message"
                " above says why): stopping the gateway",
                index=index,
                status=CANNOT_START,
            )
            self._onCannotStart(
                f"proxy worker {index} exited with status {CANNOT_START}"
                " (its message above says why)"
            )
            return
        uptime = self._reactor.seconds() - process.startedAt
        delay = self._delays.get(index, self.restartDelay)
        # A worker that ran for a while gets restarted at once; one that
        # keeps dying waits longer each time.
        delay = self.restartDelay if uptime > 60 else min(delay * 2, self.maxRestartDelay)
        self._delays[index] = delay
        self.restarts += 1
        if cannotStart:
            log.error(
                "proxy worker {index} cannot start (its message above says why);"
                " trying again in {delay:.1f}s (not ready until it serves)",
                index=index,
                delay=delay,
            )
        else:
            log.error(
                "proxy worker {index} ended ({reason}); restarting in {delay:.1f}s",
                index=index,
                reason=reason,
                delay=delay,
            )
        self._pendingRestarts[index] = self._reactor.callLater(delay, self._spawn, index)

    def signalAll(self, signal: str) -> None:
        for process in list(self.processes.values()):
            transport = process.transport
            if transport is None:
                # Not connected (yet, or any more): no process to signal.
                continue
            try:
                transport.signalProcess(signal)
            except error.ProcessExitedAlready:
                pass

    @defer.inlineCallbacks
    def stopService(self):
        super().stopService()
        if self._healthCall is not None and self._healthCall.active():
            self._healthCall.cancel()
        for call in self._pendingRestarts.values():
            if call.active():
                call.cancel()
        self._pendingRestarts.clear()
        ended = [p.ended for p in self.processes.values()]
        if ended:
            self.signalAll("TERM")
            timer = self._reactor.callLater(self.stopTimeout, self.signalAll, "KILL")
            yield defer.DeferredList(ended)
            if timer.active():
                timer.cancel()
        buckets, self.buckets = self.buckets, None
        if buckets is not None:
            buckets.close()


def workerCommand(configPath: str, reactor: Any) -> List[str]:
    """
    @param reactor: the parent's reactor: the workers run on a
        L{gateway.http.reactor.GatewayReactor} when it is one, on Twisted's
        default reactor otherwise.
    @return: the command line that runs one worker for a config file.
    """
    from gateway.http.reactor import isGatewayReactor

    kind = "gateway" if isGatewayReactor(reactor) else "default"
    return [
        sys.executable,
        "-m",
        "gateway.process.worker",
        "--config",
        os.path.abspath(configPath),
        "--reactor",
        kind,
    ]
