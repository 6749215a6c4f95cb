"""
A read-only store whose states another process relays: the store of a
proxy worker, which its parent (the gateway process, which owns the real
store) feeds over their control channel.

The parent sends each new state as a JSON message (L{fullMessage} the first
time, then L{deltaMessage}: only the resources that changed since the state
it sent before), and the worker gives each to L{RelayedStore.receive}.  A
delta keeps the JSON objects of the resources it does not touch, so the
worker's L{gateway.model.resources.CatalogParser}, which knows them by
identity, parses only what changed.

    {"revision": 7, "resources": {"servers": {"s1": {...}}, ...}}
    {"revision": 8, "base": 7, "changes": [["apis", "a1", {...}], ["servers", "s2", null]]}
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from zope.interface import implementer

from gateway.interfaces import IStore
from gateway.store import KINDS, Change, StoreError, StoreState

log = Logger()


def changesBetween(old: StoreState, new: StoreState) -> List[Change]:
    """
    @return: the changes that make C{old}'s resources C{new}'s: a put for
        every resource that is new or whose JSON object differs, a delete
        for every one that is gone.
    """
    changes = []
    for kind in KINDS:
        before = old.resources[kind]
        after = new.resources[kind]
        for name, value in after.items():
            previous = before.get(name)
            # Unchanged resources keep their objects from state to state:
            # identity settles most of them without a comparison.
            if previous is not value and previous != value:
                changes.append(Change(kind, name, value))
        for name in before:
            if name not in after:
                changes.append(Change(kind, name, None))
    return changes


def _plain(value: Any) -> Any:
    # The states' read-only mappings, as JSON can write them.
    return {k: dict(v) for k, v in value.items()}


def fullMessage(state: StoreState) -> Dict[str, Any]:
    """
    @return: the message that relays the whole of C{state}.
    """
    return {"revision": state.revision, "resources": _plain(state.resources)}


def deltaMessage(old: StoreState, new: StoreState) -> Dict[str, Any]:
    """
    @return: the message that relays C{new} to a process that holds C{old}.
    """
    return {
        "revision": new.revision,
        "base": old.revision,
        "changes": [
            [c.kind, c.name, None if c.value is None else dict(c.value)]
            for c in changesBetween(old, new)
        ],
    }


class RelayedStateError(ValueError):
    """
    A relayed message is not a state this store can take.
    """


def _parseChanges(changes: Any) -> List[Change]:
    if not isinstance(changes, list):
        raise RelayedStateError("'changes' must be a list")
    parsed = []
    for change in changes:
        if (
            not isinstance(change, list)
            or len(change) != 3
            or change[0] not in KINDS
            or not isinstance(change[1], str)
            or not (change[2] is None or isinstance(change[2], dict))
        ):
            raise RelayedStateError(f"not a change: {change!r:.200}")
        parsed.append(Change(change[0], change[1], change[2]))
    return parsed


def _parseResources(resources: Any) -> Dict[str, Dict[str, Any]]:
    if not isinstance(resources, dict) or not set(resources) <= set(KINDS):
        raise RelayedStateError("'resources' must be an object of kinds")
    for kind, items in resources.items():
        if not isinstance(items, dict) or not all(isinstance(v, dict) for v in items.values()):
            raise RelayedStateError(f"resources.{kind} must be an object of objects")
    return resources


@implementer(IStore)
class RelayedStore:
    """
    An L{IStore} that holds the states it is given, read-only.

    @ivar state: the last state received, or L{None} before the first.
    """

    def __init__(self) -> None:
        self.state: Optional[StoreState] = None
        self._listeners: List[Callable[[StoreState], Any]] = []
        self._loading: List[Deferred] = []
        self._closed = False

    def receive(self, message: Any) -> bool:
        """
        Take a relayed state.

        @param message: a L{fullMessage} or a L{deltaMessage}.
        @return: L{False} when it is a delta from a state this store does
            not hold (then ask for a whole state), L{True} otherwise.  An
            older state than the one held is ignored.
        @raise RelayedStateError: when the message is not a state.
        """
        if not isinstance(message, dict):
            raise RelayedStateError("a relayed state must be an object")
        revision = message.get("revision")
        if isinstance(revision, bool) or not isinstance(revision, int) or revision < 0:
            raise RelayedStateError(f"'revision' must be an integer >= 0, not {revision!r}")
        if "resources" in message:
            state = StoreState(revision, _parseResources(message["resources"]))
        else:
            base = message.get("base")
            if self.state is None or base != self.state.revision:
                return False
            state = self.state.withChanges(_parseChanges(message.get("changes")), revision)
        if self._closed or (self.state is not None and state.revision < self.state.revision):
            return True
        self.state = state
        loading, self._loading = self._loading, []
        for d in loading:
            d.callback(state)
        for listener in list(self._listeners):
            try:
                listener(state)
            except Exception:
                log.failure(
                    "store watcher {listener!r} failed at revision {revision}",
                    listener=listener,
                    revision=state.revision,
                )
        return True

    def load(self) -> Deferred:
        """
        @return: a Deferred firing with the last state received; before the
            first, it waits for it.
        """
        if self._closed:
            return fail(StoreError("the store is closed"))
        if self.state is not None:
            return succeed(self.state)

        def cancel(d: Deferred) -> None:
            if d in self._loading:
                self._loading.remove(d)

        d: Deferred = Deferred(cancel)
        self._loading.append(d)
        return d

    def commit(self, changes: Sequence[Change], baseRevision: int) -> Deferred:
        """
        Refused: the process that relays the states owns the store.

        @return: a Deferred that fails with L{StoreError}.
        """
        return fail(StoreError("this store is read-only: its states are relayed"))

    def watch(self, listener: Callable[[StoreState], Any]) -> Callable[[], None]:
        """
        Call C{listener} with every state received from now on.

        @return: a callable that stops the watch.
        """
        self._listeners.append(listener)

        def stop() -> None:
            try:
                self._listeners.remove(listener)
            except ValueError:
                pass

        return stop

    def close(self) -> Deferred:
        """
        Stop the watches; loads waiting for a first state fail.

        @return: a Deferred firing with L{None}.
        """
        self._closed = True
        del self._listeners[:]
        loading, self._loading = self._loading, []
        for d in loading:
            d.errback(StoreError("the store is closed"))
        return succeed(None)

    def __repr__(self) -> str:
        revision = self.state.revision if self.state is not None else None
        return f"<RelayedStore at revision {revision}>"
