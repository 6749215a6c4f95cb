"""
L{DNSDiscovery}: the service that keeps the host names of servers and the
SRV names of clusters looked up, each again when its TTL runs out.

It follows the snapshots of a
L{gateway.routing.snapshot.SnapshotManager} for the names to look up
(L{gateway.discovery.records.wantedNames}), and gives every change of what
it found (a L{gateway.discovery.records.Discovered}) to its C{onChange}
callable, which builds a snapshot of it (off the request path: lookups and
their answers run on the reactor, between requests).

Each name is looked up when it first appears, then again when the least TTL
of its answer runs out, that TTL bounded by the C{resolver:} section's
C{minTTL} and C{maxTTL}.  A host name is looked up for its IPv4 (A) and
IPv6 (AAAA) addresses at once, each kept apart, and its servers are the
addresses of the family C{resolver.family} says (by default its IPv4 ones,
or its IPv6 ones when it has none).  A lookup that fails (no DNS
server answered in time, one failed or refused) keeps what the name had
before (a name that does not exist, or has no such record, is an answer,
not a failure): it is tried again after 1, 2, 4... times C{minTTL}, at most
L{RETRY_MAX} seconds (and at most C{maxTTL}), and logged once when the
failures begin and once when they end, never for each retry.  The targets
of SRV records are looked up as host names of their own; new records count
once their targets have been looked up, so a cluster whose records moved
to new hosts does not lose its servers meanwhile.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Optional, Tuple

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, DeferredList, succeed
from twisted.logger import Logger
from twisted.names import dns
from twisted.python.failure import Failure

from gateway.discovery.lookup import (
    Answer,
    LookupFailed,
    lookupFamily,
    lookupServices,
    makeResolver,
)
from gateway.discovery.records import (
    Discovered,
    ServiceRecord,
    serviceTargets,
    wantedNames,
)
from gateway.model.config import ResolverConfig

log = Logger()

#: The most seconds between two tries of a name whose lookups fail.
RETRY_MAX = 30.0

#: Seconds a negative answer holds when it gives no TTL (no SOA record).
NEGATIVE_TTL = 5.0

_FAMILIES = ((dns.A, "A"), (dns.AAAA, "AAAA"))


class _Watch:
    """
    One name being looked up: its schedule, the state of its lookups and
    what it had from the last answers.

    @ivar attempted: whether a lookup of it has finished (answered or
        failed).
    @ivar failingSince: when its lookups began to fail, or L{None}.
    @ivar failures: lookups failed in a row.
    """

    kind = ""
    label = ""

    def __init__(self, name: str) -> None:
        self.name = name
        self.timer: Any = None
        self.pending: Optional[Deferred] = None
        self.stopped = False
        self.attempted = False
        self.failures = 0
        self.failingSince: Optional[float] = None
        self.lastError: Optional[str] = None
        self.lastAnswer: Optional[float] = None
        self.ttl: Optional[float] = None
        self.nextLookup: Optional[float] = None
        self._waiters: List[Deferred] = []

    def whenAttempted(self) -> Deferred:
        """
        @return: a Deferred firing with L{None} once a lookup of it has
            finished, or it is no longer looked up.
        """
        if self.attempted or self.stopped:
            return succeed(None)
        d: Deferred = Deferred()
        self._waiters.append(d)
        return d

    def markAttempted(self) -> None:
        self.attempted = True
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)

    def stop(self) -> None:
        """
        Cancel its next lookup and the one in flight.
        """
        self.stopped = True
        timer, self.timer = self.timer, None
        if timer is not None and timer.active():
            timer.cancel()
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.cancel()
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)

    def values(self) -> Tuple[Any, ...]:
        raise NotImplementedError()

    def status(self) -> Dict[str, Any]:
        """
        @return: its state for the stats.
        """
        return {
            "type": self.kind,
            "values": [v.toJSON() if isinstance(v, ServiceRecord) else v for v in self.values()],
            "ttl": self.ttl,
            "lastAnswer": self.lastAnswer,
            "nextLookup": self.nextLookup,
            "failingSince": self.failingSince,
            "failures": self.failures,
            "error": self.lastError,
        }


class _HostWatch(_Watch):
    """
    A host name: its addresses of each family, kept apart, and those of
    them that are servers (by C{resolver.family}).
    """

    kind = "A"
    label = "host"

    def __init__(self, name: str, family: str) -> None:
        super().__init__(name)
        self.family = family
        self.families: Dict[int, Tuple[str, ...]] = {}

    def plan(self) -> Tuple[Tuple[Tuple[int, str], ...], ...]:
        """
        @return: the lookups to make, C{(record type, label)}, in steps: a
            step's lookups run at once, and the next step runs only when
            the step answered with no address (the preferred family first,
            as Envoy's V4_PREFERRED: a name with IPv4 addresses costs one
            query).
        """
        v4, v6 = _FAMILIES
        return {
            "v4-preferred": ((v4,), (v6,)),
            "v6-preferred": ((v6,), (v4,)),
            "v4-only": ((v4,),),
            "v6-only": ((v6,),),
        }.get(self.family, ((v4, v6),))

    def values(self) -> Tuple[str, ...]:
        v4 = self.families.get(dns.A, ())
        v6 = self.families.get(dns.AAAA, ())
        if self.family == "v4-preferred":
            return v4 or v6
        if self.family == "v6-preferred":
            return v6 or v4
        return tuple(sorted(set(v4) | set(v6)))


class _ServiceWatch(_Watch):
    """
    An SRV name: its records, and the records of an answer waiting for its
    targets' addresses.
    """

    kind = "SRV"
    label = "SRV"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.records: Optional[Tuple[ServiceRecord, ...]] = None
        self.incoming: Tuple[ServiceRecord, ...] = ()

    def values(self) -> Tuple[ServiceRecord, ...]:
        return self.records or ()


class DNSDiscovery(Service):
    """
    Looks up the names of the servers and clusters of a snapshot manager's
    catalog while the service runs, and reports what it finds.

    @ivar current: the last L{Discovered} reported (empty at first).
    """

    name = "discovery"

    def __init__(
        self,
        reactor: Any,
        onChange: Callable[[Discovered], None],
        settings: Optional[ResolverConfig] = None,
        resolver: Any = None,
    ) -> None:
        """
        @param reactor: an L{IReactorTime} (and, for the default resolver,
            an L{IReactorUDP}).
        @param onChange: called with the new L{Discovered} after every
            change of what was found.
        @param settings: the C{resolver:} section: TTL bounds, and the
            servers of the default resolver; by default its defaults.
        @param resolver: what to ask: anything with Twisted's
            C{lookupAddress}, C{lookupIPV6Address} and C{lookupService}
            (an L{twisted.internet.interfaces.IResolver}, a
            L{gateway.discovery.resolver.StubResolver}); by default the
            stub resolver that L{makeResolver} makes of C{settings} when
            the service starts (and closes when it stops).
        """
        self._reactor = reactor
        self._onChange = onChange
        self._settings = settings if settings is not None else ResolverConfig()
        self._resolver = resolver
        self._ownResolver = False
        self._serverHosts: FrozenSet[str] = frozenset()
        self._services: FrozenSet[str] = frozenset()
        self._hosts: Dict[str, _HostWatch] = {}
        self._srv: Dict[str, _ServiceWatch] = {}
        self._publishCall: Any = None
        self._catalog: Any = None
        self.current = Discovered()

    # -- what to look up --------------------------------------------------------

    def follow(self, manager: Any) -> None:
        """
        Look up the names of C{manager}'s current catalog, and of each one
        it swaps in later.

        @param manager: a L{gateway.routing.snapshot.SnapshotManager}.
        """
        manager.addListener(self._swapped)
        if manager.snapshot is not None:
            self._swapped(manager.snapshot)

    def _swapped(self, snapshot: Any) -> None:
        # Swaps that discovery itself caused keep the catalog.
        if snapshot.catalog is self._catalog:
            return
        self._catalog = snapshot.catalog
        self.want(*wantedNames(snapshot.catalog))

    def want(self, hosts: Iterable[str], services: Iterable[str]) -> None:
        """
        Look up these names (normalised) from now on, and no others (the
        targets of SRV records aside): a new one at once, one left out is
        forgotten.
        """
        self._serverHosts = frozenset(hosts)
        self._services = frozenset(services)
        if self.running:
            self._sync()

    @property
    def settled(self) -> bool:
        """
        Whether every name has been looked up at least once (answered or
        failed) since it was wanted.
        """
        watches: List[_Watch] = [*self._hosts.values(), *self._srv.values()]
        return all(w.attempted for w in watches)

    def status(self) -> Dict[str, Any]:
        """
        @return: C{{"hosts": {name: state}, "services": {name: state}}}: for
            each name, what it resolves to, its TTL, when it was last
            answered and is looked up next, and whether its lookups fail
            (since when, how many times, why).
        """
        return {
            "hosts": {name: w.status() for name, w in sorted(self._hosts.items())},
            "services": {name: w.status() for name, w in sorted(self._srv.items())},
        }

    # -- service ----------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        if self._resolver is None:
            self._resolver = makeResolver(self._settings, self._reactor)
            self._ownResolver = True
        self._sync()

    def stopService(self) -> None:
        super().stopService()
        watches: List[_Watch] = [*self._hosts.values(), *self._srv.values()]
        self._hosts.clear()
        self._srv.clear()
        for watch in watches:
            watch.stop()
        call, self._publishCall = self._publishCall, None
        if call is not None and call.active():
            call.cancel()
        if self._ownResolver:
            resolver, self._resolver = self._resolver, None
            self._ownResolver = False
            resolver.close()

    # -- the watches ------------------------------------------------------------

    def _sync(self) -> None:
        for name in list(self._srv):
            if name not in self._services:
                self._srv.pop(name).stop()
                self._changed()
        for name in sorted(self._services - set(self._srv)):
            watch = self._srv[name] = _ServiceWatch(name)
            self._lookUp(watch)
        self._syncHosts()

    def _syncHosts(self) -> None:
        wanted = set(self._serverHosts)
        for service in self._srv.values():
            wanted |= serviceTargets(service.values())
            wanted |= serviceTargets(service.incoming)
        for name in list(self._hosts):
            if name not in wanted:
                self._hosts.pop(name).stop()
                self._changed()
        for name in sorted(wanted - set(self._hosts)):
            watch = self._hosts[name] = _HostWatch(name, self._settings.family)
            self._lookUp(watch)

    def _lookUp(self, watch: _Watch) -> None:
        watch.timer = None
        if isinstance(watch, _HostWatch):
            d = Deferred.fromCoroutine(self._lookUpHost(watch))
        else:
            assert isinstance(watch, _ServiceWatch)
            d = Deferred.fromCoroutine(self._lookUpService(watch))
        watch.pending = d
        d.addErrback(self._bug, watch)

    async def _lookUpHost(self, watch: _HostWatch) -> None:
        resolver = self._resolver
        before = watch.values()
        errors: List[str] = []
        delays: List[float] = []
        for step in watch.plan():
            lookups = [
                Deferred.fromCoroutine(lookupFamily(resolver, watch.name, recordType))
                for recordType, _ in step
            ]
            outcomes = await DeferredList(lookups, consumeErrors=True)
            if watch.stopped:
                return
            found = False
            outcome: Any
            for (recordType, label), (ok, outcome) in zip(step, outcomes):
                if ok:
                    watch.families[recordType] = outcome.values
                    delays.append(self._holdFor(outcome))
                    found = found or bool(outcome.values)
                else:
                    errors.append(f"{label}: {self._reason(outcome, watch)}")
            if errors or found:
                break
        self._finish(watch, errors, delays, watch.values() != before)

    async def _lookUpService(self, watch: _ServiceWatch) -> None:
        try:
            answer = await lookupServices(self._resolver, watch.name)
        except Exception:
            failure = Failure()
            if watch.stopped:
                return
            self._finish(watch, [self._reason(failure, watch)], [], False)
            return
        if watch.stopped:
            return
        # New targets are looked up before the records count.
        watch.incoming = answer.values
        self._syncHosts()
        targets = [self._hosts[t] for t in serviceTargets(answer.values) if t in self._hosts]
        waiting = [t.whenAttempted() for t in targets if not t.attempted]
        if waiting:
            await DeferredList(waiting, consumeErrors=True)
            if watch.stopped:
                return
        changed = watch.records != answer.values
        watch.records = answer.values
        watch.incoming = ()
        self._syncHosts()
        self._finish(watch, [], [self._holdFor(answer)], changed)

    def _reason(self, failure: Failure, watch: _Watch) -> str:
        if failure.check(LookupFailed):
            return failure.getErrorMessage()
        log.failure("looking up {name} broke", failure, name=watch.name)
        return f"{type(failure.value).__name__}: {failure.getErrorMessage()}"

    def _holdFor(self, answer: Answer) -> float:
        """
        @return: seconds until an answer is asked again: its TTL, bounded.
        """
        ttl = answer.ttl if answer.ttl is not None else NEGATIVE_TTL
        return min(max(ttl, self._settings.minTTL), self._settings.maxTTL)

    def _retryIn(self, failures: int) -> float:
        """
        @return: seconds until a name that failed C{failures} times in a row
            is tried again.
        """
        ceiling = min(RETRY_MAX, self._settings.maxTTL)
        return min(self._settings.minTTL * 2.0 ** min(failures - 1, 30), ceiling)

    def _finish(self, watch: _Watch, errors: List[str], delays: List[float], changed: bool) -> None:
        """
        A lookup of C{watch} finished: log the beginning or the end of its
        failures, schedule its next lookup, and report a change.
        """
        now = self._reactor.seconds()
        if delays:
            watch.lastAnswer = now
            watch.ttl = min(delays)
        if errors:
            watch.failures += 1
            watch.lastError = "; ".join(errors)
            delays.append(self._retryIn(watch.failures))
            if watch.failingSince is None:
                watch.failingSince = now
                log.warn(
                    "looking up {kind} {name} failed ({error}); keeping what it had:"
                    " {values}; trying again until it answers",
                    kind=watch.label,
                    name=watch.name,
                    error=watch.lastError,
                    values=_show(watch.values()),
                )
        else:
            if watch.failingSince is not None:
                log.info(
                    "{kind} {name} is answered again, after {failures} failed lookup(s)"
                    " in {seconds:.1f}s: {values}",
                    kind=watch.label,
                    name=watch.name,
                    failures=watch.failures,
                    seconds=now - watch.failingSince,
                    values=_show(watch.values()),
                )
            watch.failingSince = None
            watch.failures = 0
            watch.lastError = None
        delay = min(delays)
        watch.pending = None
        watch.nextLookup = now + delay
        watch.timer = self._reactor.callLater(delay, self._lookUp, watch)
        if changed:
            log.info(
                "{kind} {name} now gives {values}",
                kind=watch.label,
                name=watch.name,
                values=_show(watch.values()),
            )
            self._changed()
        watch.markAttempted()

    def _bug(self, failure: Failure, watch: _Watch) -> None:
        if watch.stopped and failure.check(CancelledError):
            # Stopped while it waited: nothing broke.
            return
        log.failure("discovery of {name} broke", failure, name=watch.name)

    # -- reporting --------------------------------------------------------------

    def _changed(self) -> None:
        # Changes of one turn of the reactor are reported together.
        if self._publishCall is None and self.running:
            self._publishCall = self._reactor.callLater(0, self._publish)

    def _publish(self) -> None:
        self._publishCall = None
        # The targets of SRV records not counted yet are left out too.
        visible = set(self._serverHosts)
        for service in self._srv.values():
            visible |= serviceTargets(service.values())
        found = Discovered(
            {
                name: w.values()
                for name, w in self._hosts.items()
                if w.attempted and name in visible
            },
            {name: w.records for name, w in self._srv.items() if w.records is not None},
        )
        if found == self.current:
            return
        self.current = found
        try:
            self._onChange(found)
        except Exception:
            log.failure("applying what discovery found failed")


def _show(values: Tuple[Any, ...]) -> str:
    if not values:
        return "nothing"
    return ", ".join(
        f"{v.target}:{v.port} (priority {v.priority}, weight {v.weight})"
        if isinstance(v, ServiceRecord)
        else str(v)
        for v in values
    )
