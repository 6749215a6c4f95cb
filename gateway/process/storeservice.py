"""
L{StoreService}: a process's store, from the first load to the close.

When the service starts, it watches the store, loads it, creates the
config file's seed resources the store does not have yet, and builds the
first snapshot; every later state the store gives is compiled and swapped
in.  A store that cannot be read or a seed that does not compile ends the
start (L{gateway.process.startup.Abort}): with the file store at once,
before any port is bound; with etcd once it answers.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from twisted.application.internet import backoffPolicy
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from gateway.model.resources import Catalog
from gateway.model.schema import toJSON
from gateway.process.interpreter import collectorPaused, settleCollector
from gateway.store import Change, ConflictError, StoreError, StoreState

log = Logger()

#: After how many APIs compiled since it was last settled the cycle
#: collector is settled again (see L{settleCollector}): a large change
#: leaves as many new long-lived objects as a start.
SETTLE_AFTER = 1000

#: How many times the seed is worked out and committed again when another
#: gateway wrote to the store meanwhile (seeding the same file, maybe).
SEED_ATTEMPTS = 10

_seedBackoff = backoffPolicy(initialDelay=0.1, maxDelay=5.0, factor=2.0)


def seedChanges(state: StoreState, seed: Dict[str, Any]) -> List[Change]:
    """
    @return: the changes that create the config file's seed resources that
        the store does not have yet.  Resources already in the store win:
        what an operator changed through the admin survives a restart.
    """
    changes = []
    for kind, objects in seed.items():
        for obj in objects:
            if state.get(kind, obj.name) is None:
                changes.append(Change(kind, obj.name, toJSON(obj)))
    return changes


def seedDiffers(state: StoreState, seed: Dict[str, Any]) -> List[str]:
    """
    @return: C{kind/name} of each seed resource that the store has with
        another definition: the store's wins (an operator's change through
        the admin survives a restart), so an edit of the config file's seed
        does not apply to it.
    """
    differ = []
    for kind, objects in seed.items():
        for obj in objects:
            stored = state.get(kind, obj.name)
            if stored is not None and stored != toJSON(obj):
                differ.append(f"{kind}/{obj.name}")
    return differ


class StoreService(Service):
    """
    Loads, seeds and follows a store while the service runs, and closes it
    when it stops.

    @ivar ready: whether the first snapshot serves.
    @ivar state: the last store state taken, or L{None} before the first.
    """

    name = "store"

    def __init__(
        self,
        store: Any,
        manager: Any,
        abort: Callable[[str], None],
        reactor: IReactorTime,
        seed: Optional[Dict[str, Any]] = None,
        relay: Optional[Callable[[StoreState], None]] = None,
        settle: Callable[[], Any] = settleCollector,
    ) -> None:
        """
        @param store: the L{gateway.interfaces.IStore}.
        @param manager: the L{gateway.routing.snapshot.SnapshotManager} that
            compiles its states.
        @param abort: called with a message when the store cannot be loaded
            or the seed does not compile or land.
        @param reactor: the L{IReactorTime} a seed that lost a race waits
            on before it tries again.
        @param seed: the config file's seed resources (C{{kind: [model
            object]}}), created when the store lacks them; L{None} for a
            process that only reads (a proxy worker).
        @param relay: called with every state taken (the gateway process
            relays them to its workers), or L{None}.
        @param settle: settles the cycle collector (L{settleCollector}):
            once the first snapshot serves, and again whenever the manager
            compiled L{SETTLE_AFTER} APIs more.
        """
        self._settle = settle
        self._settledAt = 0
        self.store = store
        self._manager = manager
        self._abort = abort
        self._reactor = reactor
        self._seed = seed
        self._relay = relay
        self.ready = False
        self.state: Optional[StoreState] = None
        self._starting: Optional[Deferred] = None
        self._unwatch: Optional[Callable[[], None]] = None
        self._readyWaiters: List[Deferred] = []

    def whenReady(self) -> Deferred:
        """
        @return: a Deferred firing with L{None} once the first snapshot
            serves (it never fails: a start that fails ends the process).
        """
        if self.ready:
            return succeed(None)

        def cancel(d: Deferred) -> None:
            if d in self._readyWaiters:
                self._readyWaiters.remove(d)

        d: Deferred = Deferred(cancel)
        self._readyWaiters.append(d)
        return d

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._begin()

    def startService(self) -> None:
        super().startService()
        if self._starting is None:
            self._begin()

    def _begin(self) -> None:
        self._unwatch = self.store.watch(self._take)
        self._starting = Deferred.fromCoroutine(self._loadAndSeed())
        self._starting.addErrback(self._failed)

    def _take(self, state: StoreState) -> None:
        """
        A state from the store's watch.
        """
        if self.state is not None and state.revision < self.state.revision:
            return
        self.state = state
        if self._relay is not None:
            self._relay(state)
        self._manager.update(state)
        if self.ready and self._manager.compiledAPIs - self._settledAt >= SETTLE_AFTER:
            self._settleNow()

    def _settleNow(self) -> None:
        self._settle()
        self._settledAt = self._manager.compiledAPIs

    async def _loadAndSeed(self) -> None:
        # What is read and compiled now lives on: the cycle collector would
        # only go over it again and again (see collectorPaused).
        with collectorPaused():
            loading = self.store.load()
        state = await loading
        if self._seed:
            state = await self._seedInto(state)
        # The watch may have taken a newer state meanwhile: never roll back.
        if self.state is None or self.state.revision < state.revision:
            self.state = state
            if self._relay is not None:
                self._relay(state)
        current = self._manager.snapshot
        if current is None or current.revision < self.state.revision:
            with collectorPaused():
                self._manager.apply(self.state)
        self._settleNow()
        self.ready = True
        log.info("serving store revision {revision}", revision=self.state.revision)
        waiters, self._readyWaiters = self._readyWaiters, []
        for waiter in waiters:
            waiter.callback(None)

    async def _seedInto(self, state: StoreState) -> StoreState:
        """
        Create the seed resources the store lacks; when another gateway
        wrote meanwhile (seeding the same file, maybe), read the store again
        and create what is still missing (what it wrote wins, as a resource
        already in the store does).

        @return: the state with the seed in it.
        @raise StoreError: naming the seed, when the store refused it.
        """
        differ = seedDiffers(state, self._seed or {})
        if differ:
            shown = ", ".join(differ[:10])
            if len(differ) > 10:
                shown += f" and {len(differ) - 10} more"
            log.warn(
                "{n} resource(s) of the config file's seed differ from the store's, which"
                " win (the seed only creates what the store lacks; change them through the"
                " admin or gateway apply): {names}",
                n=len(differ),
                names=shown,
            )
        attempt = 0
        while True:
            changes = seedChanges(state, self._seed or {})
            if not changes:
                return state
            with collectorPaused():
                self._manager.validate(
                    Catalog.fromResources(state.withChanges(changes, state.revision).resources)
                )
            try:
                revision = await self.store.commit(changes, state.revision)
            except ConflictError as e:
                attempt += 1
                if attempt >= SEED_ATTEMPTS:
                    raise StoreError(
                        f"seeding {len(changes)} resource(s) from the config file: the store "
                        f"kept changing ({e})"
                    )
                await deferLater(self._reactor, _seedBackoff(attempt), lambda: None)
                with collectorPaused():
                    loading = self.store.load()
                state = await loading
                continue
            except StoreError as e:
                raise StoreError(f"seeding {len(changes)} resource(s) from the config file: {e}")
            log.info("seeded {n} resource(s) from the config file", n=len(changes))
            return state.withChanges(changes, revision)

    def _failed(self, failure: Failure) -> None:
        if failure.check(CancelledError):
            return
        if failure.check(StoreError):
            self._abort(f"store: {failure.value}")
            return
        if failure.check(ValueError):
            # A seed that does not compile (its message names the resource
            # and field), or a store holding what this gateway cannot read.
            self._abort(str(failure.value))
            return
        log.failure("the gateway could not load its configuration", failure)
        self._abort(f"store: cannot load the configuration: {failure.getErrorMessage()}")

    def stopService(self) -> Deferred:
        """
        Stop following the store and close it.
        """
        super().stopService()
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        starting, self._starting = self._starting, None
        if starting is not None and not starting.called:
            starting.cancel()
        return self.store.close()
