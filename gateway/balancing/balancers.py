"""
Load balancers: each picks one backend of a cluster for each request.

A balancer is built for one fixed sequence of L{Backend}s (one snapshot of a
cluster) by a factory registered in L{BALANCERS}, and keeps its algorithm's
state between calls.  L{ILoadBalancer.choose} runs once per request on the
hot path, so whatever does not change between calls is computed when the
balancer is built.  Availability (health, weight 0, an open breaker) is read
on every call, so each pick is correct even as it changes between calls.

C{ip-hash} and C{random} precompute from the weights when they are built;
the others read weights live.  A weight change builds a new snapshot, and so
new balancers, anyway; a pick is always an available backend either way.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from hashlib import blake2b
from random import Random
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import attrs
from zope.interface import implementer

from gateway.balancing.backend import Backend
from gateway.interfaces import ILoadBalancer

#: Turns the top 53 bits of a 64-bit hash into a float in (0, 1].
_UNIT = 2.0**-53


#: Balancers set their state on every pick (C{RoundRobin._next}, ...): with
#: no hook on assignment (none is needed: no field is validated, and the
#: converted ones are set once), attrs adds no C{__setattr__}, so each store
#: is a plain one rather than a Python call.
_PLAIN = attrs.setters.NO_OP


BalancerFactory = Callable[[Sequence[Backend], Optional[Random]], ILoadBalancer]


def _randomOrNew(value: Optional[Random]) -> Random:
    return Random() if value is None else value


def _hash64(data: bytes) -> int:
    """
    @return: a 64-bit hash of C{data}, the same in every process.
    """
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "big")


def _toTuple(backends: Sequence[Backend]) -> Tuple[Backend, ...]:
    return tuple(backends)


@attrs.define(eq=False, on_setattr=_PLAIN)
class _Balancer:
    """
    What every balancer has: its backends, in cluster order, and a source of
    randomness (used by the algorithms that need one).

    @ivar backends: the backends to pick from.
    @ivar _random: the L{Random} used for every random decision, injected so
        that tests are deterministic.
    """

    backends: Tuple[Backend, ...] = attrs.field(converter=_toTuple)
    _random: Random = attrs.field(default=None, converter=_randomOrNew, alias="random", repr=False)


@implementer(ILoadBalancer)
@attrs.define(eq=False, on_setattr=_PLAIN)
class RoundRobin(_Balancer):
    """
    Cycle through the available backends in order.

    An unavailable backend is skipped and the cycle goes on after the backend
    picked instead, so the others keep their equal shares.
    """

    name = "round-robin"
    _count: int = attrs.field(init=False, repr=False)
    _next: int = attrs.field(init=False, default=0, repr=False)

    def __attrs_post_init__(self) -> None:
        self._count = len(self.backends)

    def choose(self, key: Optional[str] = None) -> Optional[Backend]:
        """
        @param key: ignored.
        @return: the next available backend in the cycle, or L{None}.
        """
        backends = self.backends
        count = self._count
        index = self._next
        for _ in range(count):
            backend = backends[index]
            index += 1
            if index == count:
                index = 0
            if backend.available():
                self._next = index
                return backend
        return None


@implementer(ILoadBalancer)
@attrs.define(eq=False, on_setattr=_PLAIN)
class WeightedRoundRobin(_Balancer):
    """
    nginx's smooth weighted round-robin.

    Each pick adds every available backend's weight to its running
    C{current}, takes the backend with the largest C{current} (the first one
    on a tie) and subtracts the total weight from it.  Over any C{sum(weights)}
    picks with the same backends available, each is picked exactly C{weight}
    times, spread out: weights 5, 1, 1 give C{a a b a c a a}.
    """

    name = "weighted-round-robin"
    _current: List[int] = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._current = [0] * len(self.backends)

    def choose(self, key: Optional[str] = None) -> Optional[Backend]:
        """
        @param key: ignored.
        @return: the next backend of the weighted cycle, or L{None}.
        """
        current = self._current
        best = -1
        bestCurrent = 0
        total = 0
        index = 0
        for backend in self.backends:
            if backend.available():
                weight = backend.weight
                value = current[index] + weight
                current[index] = value
                total += weight
                if best < 0 or value > bestCurrent:
                    best = index
                    bestCurrent = value
            index += 1
        if best < 0:
            return None
        current[best] = bestCurrent - total
        return self.backends[best]


@implementer(ILoadBalancer)
@attrs.define(eq=False, on_setattr=_PLAIN)
class LeastConnections(_Balancer):
    """
    Pick the available backend with the fewest requests in flight relative to
    its weight (C{active / weight}).

    The scan starts after the backend picked last, and only a strictly
    smaller load displaces the first candidate, so backends with equal loads
    take turns.
    """

    name = "least-connections"
    _count: int = attrs.field(init=False, repr=False)
    _next: int = attrs.field(init=False, default=0, repr=False)

    def __attrs_post_init__(self) -> None:
        self._count = len(self.backends)

    def choose(self, key: Optional[str] = None) -> Optional[Backend]:
        """
        @param key: ignored.
        @return: the least loaded available backend, or L{None}.
        """
        backends = self.backends
        count = self._count
        index = self._next
        best: Optional[Backend] = None
        bestIndex = 0
        bestActive = 0
        bestWeight = 1
        for _ in range(count):
            backend = backends[index]
            if backend.available():
                active = backend.active
                weight = backend.weight
                # active / weight < bestActive / bestWeight, without floats.
                if best is None or active * bestWeight < bestActive * weight:
                    best = backend
                    bestIndex = index
                    bestActive = active
                    bestWeight = weight
            index += 1
            if index == count:
                index = 0
        if best is not None:
            bestIndex += 1
            self._next = 0 if bestIndex == count else bestIndex
        return best


@implementer(ILoadBalancer)
@attrs.define(eq=False, on_setattr=_PLAIN)
class IPHash(_Balancer):
    """
    Send each key (a client address) to the same backend: weighted rendezvous
    (highest random weight) hashing.

    The key is hashed once with BLAKE2b; each backend mixes that hash with a
    64-bit salt derived from its name (the splitmix64 finaliser), giving a
    uniform M{x}, and the backend with the highest M{log(u) / weight} wins,
    where M{u} in (0, 1] comes from M{x} (with equal weights, simply the
    highest M{x}).  Nothing depends on the process or the Python version, so
    every gateway process maps a key alike; and removing or losing one
    backend moves only the keys that were on it.  Weights are read when the
    balancer is built.  Without a key, it falls back to round-robin.
    """

    name = "ip-hash"
    _entries: Tuple[Tuple[Backend, int, float], ...] = attrs.field(init=False, repr=False)
    _weighted: bool = attrs.field(init=False, repr=False)
    _fallback: RoundRobin = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._entries = tuple(
            (b, _hash64(b.name.encode("utf-8")), 1.0 / b.weight)
            for b in self.backends
            if b.weight > 0
        )
        self._weighted = len({b.weight for b in self.backends if b.weight > 0}) > 1
        self._fallback = RoundRobin(self.backends)

    def choose(self, key: Optional[str] = None) -> Optional[Backend]:
        """
        @param key: the affinity key, usually the client's IP address; with
            L{None}, round-robin.
        @return: the key's backend among the available ones, or L{None}.
        """
        if key is None:
            return self._fallback.choose()
        hashed = _hash64(key if isinstance(key, bytes) else key.encode("utf-8"))
        best: Optional[Backend] = None
        if self._weighted:
            log = math.log
            bestScore = 0.0
            for backend, salt, inverseWeight in self._entries:
                if backend.available():
                    # splitmix64's finaliser, inlined (a call costs more):
                    # a bijection whose every output bit depends on every input bit.
                    x = hashed ^ salt
                    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
                    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
                    x ^= x >> 31
                    score = log(((x >> 11) + 1) * _UNIT) * inverseWeight
                    if best is None or score > bestScore:
                        best = backend
                        bestScore = score
        else:
            bestX = -1
            for backend, salt, _ in self._entries:
                if backend.available():
                    x = hashed ^ salt
                    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
                    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
                    x ^= x >> 31
                    if x > bestX:
                        best = backend
                        bestX = x
        return best


@implementer(ILoadBalancer)
@attrs.define(eq=False, on_setattr=_PLAIN)
class WeightedRandom(_Balancer):
    """
    Pick an available backend at random, in proportion to its weight.

    A pick draws over all backends first, with weights summed once at
    construction, and keeps the draw when that backend is available; else it
    draws again over the available ones.  Both together give each available
    backend exactly C{weight / available weights} of the picks.
    """

    name = "random"
    _cumulative: List[int] = attrs.field(init=False, repr=False)
    _total: int = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        cumulative = []
        total = 0
        for backend in self.backends:
            total += max(backend.weight, 0)
            cumulative.append(total)
        self._cumulative = cumulative
        self._total = total

    def choose(self, key: Optional[str] = None) -> Optional[Backend]:
        """
        @param key: ignored.
        @return: a random available backend, or L{None}.
        """
        total = self._total
        if total > 0:
            index = bisect_right(self._cumulative, self._random.random() * total)
            backend = self.backends[index if index < len(self.backends) else -1]
            if backend.available():
                return backend
        available = [b for b in self.backends if b.available()]
        if not available:
            return None
        target = self._random.random() * sum(b.weight for b in available)
        for backend in available:
            target -= backend.weight
            if target < 0:
                return backend
        return available[-1]


@implementer(ILoadBalancer)
@attrs.define(eq=False, on_setattr=_PLAIN)
class PowerOfTwoEWMA(_Balancer):
    """
    Power of two choices over latency: take two distinct available backends
    at random and pick the cheaper, where the cost is the average response
    time times the requests in flight plus one.

    A backend that never answered yet (average 0.0) costs nothing, so it gets
    probed.  A pair is drawn over all backends first and kept when both are
    available; else it is drawn again over the available ones, so every pair
    of available backends is equally likely.
    """

    name = "p2c-ewma"
    _count: int = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._count = len(self.backends)

    def choose(self, key: Optional[str] = None) -> Optional[Backend]:
        """
        @param key: ignored.
        @return: the cheaper of two random available backends, the only
            available one, or L{None}.
        """
        count = self._count
        if count >= 2:
            first, second = self._pair(self.backends, count)
            if first.available() and second.available():
                return self._cheaper(first, second)
        available = [b for b in self.backends if b.available()]
        count = len(available)
        if count < 2:
            return available[0] if count else None
        return self._cheaper(*self._pair(available, count))

    def _pair(self, backends: Sequence[Backend], count: int) -> Tuple[Backend, Backend]:
        random = self._random.random
        first = int(random() * count)
        second = int(random() * (count - 1))
        if second >= first:
            second += 1
        return backends[first], backends[second]

    @staticmethod
    def _cheaper(first: Backend, second: Backend) -> Backend:
        if second.ewma * (second.active + 1) < first.ewma * (first.active + 1):
            return second
        return first


#: The balancers by name (a cluster's C{loadBalance}); each value is a
#: callable C{factory(backends, random)} returning an L{ILoadBalancer}.
BALANCERS: Dict[str, BalancerFactory] = {
    cls.name: cls
    for cls in (
        RoundRobin,
        WeightedRoundRobin,
        LeastConnections,
        IPHash,
        WeightedRandom,
        PowerOfTwoEWMA,
    )
}


def makeBalancer(
    name: str, backends: Sequence[Backend], random: Optional[Random] = None
) -> ILoadBalancer:
    """
    Build a load balancer.

    @param name: the algorithm, one of L{gateway.model.resources.LOAD_BALANCERS}.
    @param backends: the backends it picks from, in cluster order.
    @param random: the L{Random} for its random decisions; a new one when
        L{None}.
    @return: a provider of L{ILoadBalancer}.
    @raise ValueError: when C{name} is not a known algorithm.
    """
    factory = BALANCERS.get(name)
    if factory is None:
        raise ValueError(
            f"unknown load balancer {name!r}: expected one of {', '.join(sorted(BALANCERS))}"
        )
    return factory(backends, random)


@implementer(ILoadBalancer)
class PriorityBalancer:
    """
    Tiers of backends, tried in order: a pick comes from the first tier
    that has an available backend, by that tier's own balancer (SRV
    priorities, RFC 2782: the lowest priority serves while it can).

    @ivar name: the tiers' algorithm.
    @ivar backends: every tier's backends, the first tier's first.
    @ivar tiers: the balancer of each tier, in order.
    """

    def __init__(self, tiers: Sequence[ILoadBalancer]) -> None:
        self.tiers = tuple(tiers)
        self.name = self.tiers[0].name
        self.backends = tuple(b for tier in self.tiers for b in tier.backends)

    def choose(self, key: Optional[str] = None) -> Optional[Backend]:
        """
        @param key: passed to the tiers' balancers.
        @return: the pick of the first tier that has one, or L{None}.
        """
        for tier in self.tiers:
            backend = tier.choose(key)
            if backend is not None:
                return backend
        return None


def makeTieredBalancer(
    name: str, tiers: Sequence[Sequence[Backend]], random: Optional[Random] = None
) -> ILoadBalancer:
    """
    Build the load balancer of tiers of backends: with one tier, the
    balancer of C{name} (L{makeBalancer}); with several, a
    L{PriorityBalancer} of one such balancer per tier.

    @raise ValueError: when C{name} is not a known algorithm.
    """
    if len(tiers) <= 1:
        return makeBalancer(name, tiers[0] if tiers else (), random)
    return PriorityBalancer([makeBalancer(name, tier, random) for tier in tiers])
