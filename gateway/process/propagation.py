"""
How a change reaches the proxies, and knowing when it has.

Every proxy process of a gateway says which store revision it serves: its
own proxy when it serves in the gateway process, each worker over its
control channel (L{gateway.process.pool}).  L{ServedRevisions} holds what
they said; a worker that ends leaves it, and one that starts joins once it
serves (it loads the current state before it does, so it never serves an
older one).  The workers are I{expected} members: one that does not serve
(not started yet, restarting, unable to start) holds every wait until it
serves, so that no answer says a change serves everywhere while a
configured worker serves nothing.  L{Propagation} is what the admin waits
on before it answers a write: until every proxy process of this gateway
serves the write's revision, and, when asked, until every proxy registered
in a shared store does too (their registry records carry the revision they
serve).

Waiting is never bounded here: the admin bounds it (the first of the wait
and a timer answers, the wait then cancelled), and answers anyway, saying
that the change has not reached every proxy yet.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Hashable, List, Optional, Set, Tuple

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import deferLater
from twisted.logger import Logger
from zope.interface import implementer

from gateway.interfaces import IPropagation
from gateway.store import StoreError

log = Logger()


class ServedRevisions:
    """
    The store revision each proxy process of this gateway serves.

    Members are named by whoever reports for them: C{"proxy"} for the
    gateway process's own proxy, a worker's index for a worker.  An
    expected member (L{expect}: a configured worker) is waited for even
    while it serves nothing.
    """

    def __init__(self) -> None:
        self._members: Dict[Hashable, int] = {}
        self._expected: Set[Hashable] = set()
        self._waiters: List[Tuple[int, Deferred]] = []
        self._listeners: List[Callable[[], None]] = []

    def serving(self, member: Hashable, revision: int) -> None:
        """
        C{member} serves C{revision} (and joins, when it had not yet).
        """
        if self._members.get(member) == revision:
            return
        self._members[member] = revision
        self._changed()

    def expect(self, member: Hashable) -> None:
        """
        C{member} is one of the proxy processes (a configured worker):
        while it serves nothing, every wait waits for it and L{missing}
        names it.
        """
        self._expected.add(member)

    def gone(self, member: Hashable) -> None:
        """
        C{member} serves no more (a worker ended): no wait waits for it,
        unless it is expected (then they wait for it to serve again).
        """
        if self._members.pop(member, None) is not None:
            self._changed()

    def revisions(self) -> Dict[Hashable, int]:
        """
        @return: C{{member: revision}} of the members serving now.
        """
        return dict(self._members)

    def serves(self, member: Hashable) -> bool:
        """
        @return: whether C{member} serves a revision now.
        """
        return member in self._members

    def missing(self) -> Set[Hashable]:
        """
        @return: the expected members that serve nothing now.
        """
        return self._expected - self._members.keys()

    def lowest(self) -> Optional[int]:
        """
        @return: the revision every member serves (the lowest), or L{None}
            when none serves.
        """
        return min(self._members.values()) if self._members else None

    def addListener(self, listener: Callable[[], None]) -> None:
        """
        Call C{listener()} whenever a member joins, leaves or serves a new
        revision.
        """
        self._listeners.append(listener)

    def _servedBy(self, revision: int) -> bool:
        if not self._expected.issubset(self._members):
            return False
        return all(served >= revision for served in self._members.values())

    def whenServed(self, revision: int) -> Deferred:
        """
        @return: a Deferred firing with L{None} once every member serves
            C{revision} or a later one, and every expected member serves
            (at once when they do already, or when none serves and none is
            expected: a process that starts serving later loads the
            current state first); cancelling it stops the wait.
        """
        if self._servedBy(revision):
            return succeed(None)

        def cancel(d: Deferred) -> None:
            self._waiters = [w for w in self._waiters if w[1] is not d]

        waiter: Deferred = Deferred(cancel)
        self._waiters.append((revision, waiter))
        return waiter

    def _changed(self) -> None:
        ready = [w for w in self._waiters if self._servedBy(w[0])]
        if ready:
            self._waiters = [w for w in self._waiters if not self._servedBy(w[0])]
            for _, waiter in ready:
                waiter.callback(None)
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:
                log.failure("served-revision listener {listener!r} failed", listener=listener)


def _recordServes(record: Any, revision: int) -> bool:
    if not isinstance(record, dict):
        return True
    served = record.get("revision")
    if not record.get("ready") and served is None:
        # A proxy still starting, serving nothing yet, loads the current
        # state before it serves.
        return True
    # A proxy that serves but is not ready (a worker of it does not serve)
    # is waited for until it is.
    return (
        bool(record.get("ready"))
        and isinstance(served, int)
        and not isinstance(served, bool)
        and served >= revision
    )


@implementer(IPropagation)
class Propagation:
    """
    The L{IPropagation} of a gateway: its L{ServedRevisions}, and the
    records of the proxies of a shared store.

    @cvar pollInterval: how often the shared store's records are read while
        a wait for every proxy lasts, in seconds.
    """

    pollInterval = 0.05

    def __init__(self, reactor: Any, served: ServedRevisions, shared: Optional[Any] = None) -> None:
        """
        @param reactor: an L{IReactorTime}, to pace the reads of the records.
        @param served: the revisions this gateway's proxy processes serve.
        @param shared: the store, when it provides
            L{gateway.interfaces.ISharedStore}; L{None} otherwise.
        """
        self._reactor = reactor
        self._served = served
        self._shared = shared

    def serving(self) -> Optional[int]:
        """
        See L{IPropagation.serving}.
        """
        return self._served.lowest()

    def whenServed(self, revision: int, everywhere: bool) -> Deferred:
        """
        See L{IPropagation.whenServed}.
        """
        local = self._served.whenServed(revision)
        if not everywhere or self._shared is None:
            return local
        return Deferred.fromCoroutine(self._everywhere(local, revision))

    async def _everywhere(self, local: Deferred, revision: int) -> None:
        await local
        while True:
            try:
                records = await self._shared.listProxies()  # type: ignore[union-attr]
            except StoreError as e:
                log.info("cannot read the proxies' records yet: {error}", error=str(e))
            else:
                if all(_recordServes(record, revision) for record in records):
                    return
            await deferLater(self._reactor, self.pollInterval, lambda: None)
