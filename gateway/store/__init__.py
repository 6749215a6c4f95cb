"""
The store: where certificates, servers, clusters, apis and routings live.
A certificate's private key is kept as it was written (in clear, as the
rest): the file store's file is readable by its owner only, and an etcd
store is as private as etcd's own access control makes it.

A store provides L{gateway.interfaces.IStore}.  This module holds the values
every store speaks in, and L{storeFromURL}, which picks a store from the
config file's C{store:} URL.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping, Optional

import attrs

# The stores keep the model's kinds of resource; re-exported here because
# every store speaks in them.
from gateway.model.resources import KINDS

__all__ = [
    "KINDS",
    "Change",
    "ConflictError",
    "StoreError",
    "StoreState",
    "emptyState",
    "storeFromURL",
]


class ConflictError(Exception):
    """
    A commit lost a race: the store changed since the state it was based on.
    """


class StoreError(Exception):
    """
    The store could not be reached, read or written.
    """


@attrs.frozen
class Change:
    """
    One write: put a resource (C{value} is its JSON object) or delete it
    (C{value} is L{None}).
    """

    kind: str
    name: str
    value: Optional[Mapping[str, Any]]

    def __attrs_post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown kind {self.kind!r}")


def _freeze(resources: Mapping[str, Mapping[str, Any]]) -> Mapping[str, Mapping[str, Any]]:
    return MappingProxyType(
        {kind: MappingProxyType(dict(resources.get(kind, {}))) for kind in KINDS}
    )


@attrs.frozen
class StoreState:
    """
    Everything in a store at one revision.

    @ivar revision: grows with every commit; 0 for an empty, new store.
    @ivar resources: C{{kind: {name: json-object}}} for every kind in
        L{KINDS}, read-only, JSON objects included: a new state keeps the
        objects of the resources its changes left alone, and readers (the
        L{gateway.model.resources.CatalogParser}) know those by identity, so a JSON
        object once in a state must never be changed in place (change a
        copy, in a new state).
    """

    revision: int
    resources: Mapping[str, Mapping[str, Any]] = attrs.field(converter=_freeze)

    def get(self, kind: str, name: str) -> Optional[Mapping[str, Any]]:
        """
        @return: the JSON object of one resource, or L{None}.
        """
        return self.resources[kind].get(name)

    def withChanges(self, changes, revision: int) -> StoreState:
        """
        @return: a new state with C{changes} applied, at C{revision}.
        """
        resources = {kind: dict(self.resources[kind]) for kind in KINDS}
        for change in changes:
            if change.value is None:
                resources[change.kind].pop(change.name, None)
            else:
                resources[change.kind][change.name] = change.value
        return StoreState(revision, resources)


def emptyState() -> StoreState:
    """
    @return: the state of a new store.
    """
    return StoreState(0, {})


def storeFromURL(url: str, reactor: Any) -> Any:
    """
    Make the store a config file names.  Nothing is read or connected yet:
    that happens when the store is first used.

    @param url: C{file:PATH} for the embedded file store, C{memory:} for one
        kept in memory only, or C{etcd://HOST:PORT[,HOST:PORT...]/PREFIX}
        for etcd.
    @param reactor: the reactor the store uses (etcd's connections and
        timers).
    @return: a provider of L{gateway.interfaces.IStore}.
    @raise ValueError: when the URL names no store this gateway knows.
    """
    if url.startswith("file:"):
        from gateway.store.file import FileStore

        path = url[len("file:") :]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise ValueError("file: store needs a path, e.g. file:./gateway-data.json")
        return FileStore(path)
    if url.startswith("memory:"):
        from gateway.store.file import FileStore

        return FileStore(None)
    if url.startswith("etcd://"):
        try:
            from gateway.store.etcd.store import etcdStoreFromURL
        except ImportError:
            raise ValueError("the etcd store is not available in this build")
        return etcdStoreFromURL(url, reactor)
    raise ValueError(f"unknown store {url!r}: use file:PATH, memory: or etcd://HOST:PORT/PREFIX")
