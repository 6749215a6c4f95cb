"""
Tests for L{gateway.balancing.balancers}.

Deterministic algorithms are checked exactly.  Random ones use seeded
L{Random}s and check proportions over many picks against bounds of three
standard deviations of the binomial count, M{3 * sqrt(n * p * (1 - p))}.
"""

from __future__ import annotations

import math
from collections import Counter
from random import Random
from typing import Dict, List, Optional, Sequence

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gateway.balancing.backend import Backend
from gateway.balancing.balancers import BALANCERS, makeBalancer
from gateway.interfaces import ILoadBalancer
from gateway.model.resources import LOAD_BALANCERS, Server

NAMES = "abcdefghij"


def makeBackends(*weights: int) -> List[Backend]:
    """
    @return: one backend per weight, named C{a}, C{b}, C{c}... in order.
    """
    return [
        Backend(Server(name=NAMES[i], addr=f"127.0.0.1:{8000 + i}", weight=weight), Clock())
        for i, weight in enumerate(weights)
    ]


def picks(balancer: ILoadBalancer, count: int, key: Optional[str] = None) -> str:
    """
    @return: the names of C{count} picks, concatenated (C{"-"} for L{None}).
    """
    result = []
    for _ in range(count):
        backend = balancer.choose(key)
        result.append("-" if backend is None else backend.name)
    return "".join(result)


def tally(balancer: ILoadBalancer, count: int) -> Dict[str, int]:
    """
    @return: how many of C{count} picks went to each backend, by name.
    """
    return Counter(balancer.choose().name for _ in range(count))


class RefusingBreaker:
    """
    A breaker that holds its backend off.
    """

    def allows(self) -> bool:
        return False


class BinomialAssertions:
    """
    Bounds for counts of random picks.
    """

    def assertBinomial(self, observed: int, trials: int, probability: float) -> None:
        """
        Assert that C{observed} successes out of C{trials} are within three
        standard deviations of the expected count.
        """
        expected = trials * probability
        bound = 3 * math.sqrt(trials * probability * (1 - probability))
        self.assertTrue(  # type: ignore[attr-defined]
            abs(observed - expected) <= bound,
            f"{observed} of {trials}, expected {expected:.0f} +/- {bound:.0f}",
        )


class MakeBalancerTests(SynchronousTestCase):
    """
    Tests for L{makeBalancer} and what every algorithm shares.
    """

    def test_registry(self) -> None:
        """
        L{BALANCERS} holds exactly the algorithms a cluster may name.
        """
        self.assertEqual(set(BALANCERS), set(LOAD_BALANCERS))

    def test_verifyObject(self) -> None:
        """
        Every algorithm provides L{ILoadBalancer}, carries its own name and
        the backends it was built for.
        """
        backends = makeBackends(1, 2, 3)
        for name in LOAD_BALANCERS:
            balancer = makeBalancer(name, backends, Random(0))
            self.assertTrue(verifyObject(ILoadBalancer, balancer))
            self.assertEqual(balancer.name, name)
            self.assertEqual(list(balancer.backends), backends)

    def test_unknownName(self) -> None:
        """
        An unknown algorithm raises L{ValueError} naming it.
        """
        error = self.assertRaises(ValueError, makeBalancer, "fastest", makeBackends(1))
        self.assertIn("'fastest'", str(error))
        self.assertIn("round-robin", str(error))

    def test_defaultRandom(self) -> None:
        """
        Without an injected L{Random}, every algorithm still picks.
        """
        backends = makeBackends(1, 1)
        for name in LOAD_BALANCERS:
            self.assertIn(makeBalancer(name, backends).choose("10.0.0.1"), backends)

    def test_noBackends(self) -> None:
        """
        A balancer over no backends picks none.
        """
        for name in LOAD_BALANCERS:
            balancer = makeBalancer(name, [], Random(0))
            self.assertIsNone(balancer.choose())
            self.assertIsNone(balancer.choose("10.0.0.1"))

    def test_noneAvailable(self) -> None:
        """
        When no backend is available (unhealthy, weight 0, or held off by its
        breaker) every algorithm answers L{None}, with or without a key.
        """
        backends = makeBackends(1, 0, 2)
        backends[0].healthy = False
        backends[2].breaker = RefusingBreaker()
        for name in LOAD_BALANCERS:
            balancer = makeBalancer(name, backends, Random(0))
            self.assertEqual(picks(balancer, 5), "-----", name)
            self.assertEqual(picks(balancer, 5, "10.0.0.1"), "-----", name)

    def test_onlyAvailable(self) -> None:
        """
        Whatever the availability before each call, every algorithm picks an
        available backend, and L{None} only when there is none.
        """
        for name in LOAD_BALANCERS:
            flips = Random(42)
            backends = makeBackends(3, 1, 0, 2, 5)
            balancer = makeBalancer(name, backends, Random(1))
            nones = 0
            for i in range(2000):
                for backend in backends:
                    backend.healthy = flips.random() < 0.4
                    backend.active = flips.randrange(10)
                    backend.ewma = flips.choice([0.0, 0.01, 0.2])
                key = None if i % 3 == 0 else f"10.0.{i % 7}.{i % 251}"
                chosen = balancer.choose(key)
                if chosen is None:
                    nones += 1
                    self.assertFalse(any(b.available() for b in backends), name)
                else:
                    self.assertTrue(chosen.available(), name)
            # Both branches were exercised.
            self.assertTrue(0 < nones < 2000, name)

    def test_zeroWeightNeverChosen(self) -> None:
        """
        A backend of weight 0 (drained) is never chosen, by any algorithm.
        """
        for name in LOAD_BALANCERS:
            backends = makeBackends(1, 0, 1)
            balancer = makeBalancer(name, backends, Random(5))
            names = {balancer.choose(f"10.1.{i}.1").name for i in range(300)}
            names |= {balancer.choose().name for i in range(300)}
            self.assertEqual(names, {"a", "c"}, name)


class RoundRobinTests(SynchronousTestCase):
    """
    Tests for C{round-robin}.
    """

    def test_cycle(self) -> None:
        """
        It cycles through the backends in order.
        """
        balancer = makeBalancer("round-robin", makeBackends(1, 1, 1))
        self.assertEqual(picks(balancer, 8), "abcabcab")

    def test_ignoresWeight(self) -> None:
        """
        Weights other than 0 do not change the cycle.
        """
        balancer = makeBalancer("round-robin", makeBackends(5, 1, 2))
        self.assertEqual(picks(balancer, 6), "abcabc")

    def test_skipUnavailable(self) -> None:
        """
        An unavailable backend is skipped and the others keep alternating;
        once it recovers it takes its turn again.
        """
        backends = makeBackends(1, 1, 1)
        balancer = makeBalancer("round-robin", backends)
        self.assertEqual(picks(balancer, 1), "a")
        backends[1].healthy = False
        self.assertEqual(picks(balancer, 5), "cacac")
        backends[1].healthy = True
        self.assertEqual(picks(balancer, 6), "abcabc")

    def test_skipHeldOffByBreaker(self) -> None:
        """
        A backend whose breaker does not allow traffic is skipped.
        """
        backends = makeBackends(1, 1, 1)
        backends[0].breaker = RefusingBreaker()
        balancer = makeBalancer("round-robin", backends)
        self.assertEqual(picks(balancer, 4), "bcbc")

    def test_allUnavailableThenRecovery(self) -> None:
        """
        With every backend down it answers L{None}; when one comes back it is
        picked at once, then the others as they come back.
        """
        backends = makeBackends(1, 1, 1)
        balancer = makeBalancer("round-robin", backends)
        for backend in backends:
            backend.healthy = False
        self.assertEqual(picks(balancer, 3), "---")
        backends[2].healthy = True
        self.assertEqual(picks(balancer, 2), "cc")
        backends[0].healthy = True
        self.assertEqual(picks(balancer, 4), "acac")


class WeightedRoundRobinTests(SynchronousTestCase):
    """
    Tests for C{weighted-round-robin} (smooth weighted round-robin).
    """

    def test_nginxSequence(self) -> None:
        """
        Weights 5, 1, 1 give nginx's smooth sequence C{a a b a c a a}, cycle
        after cycle.
        """
        balancer = makeBalancer("weighted-round-robin", makeBackends(5, 1, 1))
        self.assertEqual(picks(balancer, 21), "aabacaa" * 3)

    def test_exactCountsOverCycle(self) -> None:
        """
        Over each cycle of C{sum(weights)} picks every backend is picked
        exactly C{weight} times.
        """
        weights = (4, 1, 3, 7, 2)
        backends = makeBackends(*weights)
        balancer = makeBalancer("weighted-round-robin", backends)
        for _ in range(3):
            counts = tally(balancer, sum(weights))
            self.assertEqual([counts[b.name] for b in backends], list(weights))

    def test_interleaving(self) -> None:
        """
        Picks are spread out: after any number M{k} of picks, each backend's
        count is less than one away from its exact share M{k * w / W}.
        Weights 5, 1, 1 never give five C{a}s in a row (two at most within a
        cycle, four across the end of one and the start of the next).
        """
        seeds = Random(3)
        for _ in range(50):
            weights = [seeds.randint(1, 9) for _ in range(seeds.randint(2, 6))]
            total = sum(weights)
            backends = makeBackends(*weights)
            balancer = makeBalancer("weighted-round-robin", backends)
            counts = Counter[str]()
            for k in range(1, 2 * total + 1):
                counts[balancer.choose().name] += 1
                for backend, weight in zip(backends, weights):
                    self.assertLess(abs(counts[backend.name] - k * weight / total), 1, weights)
        balancer = makeBalancer("weighted-round-robin", makeBackends(5, 1, 1))
        sequence = picks(balancer, 70)
        self.assertNotIn("aaaaa", sequence)
        self.assertNotIn("aaa", sequence[:7])

    def test_zeroWeight(self) -> None:
        """
        A backend of weight 0 gets nothing; the others keep their shares.
        """
        balancer = makeBalancer("weighted-round-robin", makeBackends(0, 2, 1))
        self.assertEqual(picks(balancer, 6), "bcbbcb")

    def test_skipUnavailable(self) -> None:
        """
        An unavailable backend is skipped and the available ones share the
        picks by their weights, smoothly.
        """
        backends = makeBackends(5, 1, 2)
        backends[0].healthy = False
        balancer = makeBalancer("weighted-round-robin", backends)
        self.assertEqual(picks(balancer, 9), "cbc" * 3)

    def test_availabilityChanges(self) -> None:
        """
        When a backend goes down mid-cycle, the others share the picks by
        their weights; when it recovers, it gets its share again.  The state
        kept across the change shifts a cycle by at most one pick.
        """
        backends = makeBackends(5, 1, 2)
        balancer = makeBalancer("weighted-round-robin", backends)
        self.assertEqual(picks(balancer, 3), "aca")
        backends[0].healthy = False
        counts = tally(balancer, 30)
        self.assertEqual(counts["a"], 0)
        self.assertLessEqual(abs(counts["b"] - 10), 1)
        self.assertLessEqual(abs(counts["c"] - 20), 1)
        backends[0].healthy = True
        counts = tally(balancer, 80)
        self.assertLessEqual(abs(counts["a"] - 50), 1)
        self.assertLessEqual(abs(counts["b"] - 10), 1)
        self.assertLessEqual(abs(counts["c"] - 20), 1)

    def test_allUnavailable(self) -> None:
        """
        With every backend down it answers L{None}, and picks again when one
        recovers.
        """
        backends = makeBackends(2, 1)
        balancer = makeBalancer("weighted-round-robin", backends)
        backends[0].healthy = backends[1].healthy = False
        self.assertEqual(picks(balancer, 2), "--")
        backends[1].healthy = True
        self.assertEqual(picks(balancer, 2), "bb")


class LeastConnectionsTests(SynchronousTestCase):
    """
    Tests for C{least-connections}.
    """

    def test_leastLoaded(self) -> None:
        """
        It picks the backend with the fewest requests in flight.
        """
        backends = makeBackends(1, 1, 1)
        balancer = makeBalancer("least-connections", backends)
        for backend, active in zip(backends, (3, 1, 2)):
            backend.active = active
        self.assertEqual(picks(balancer, 3), "bbb")
        backends[1].active = 5
        self.assertEqual(picks(balancer, 2), "cc")

    def test_weight(self) -> None:
        """
        Load is counted relative to weight: 3 requests on weight 4 is less
        than 1 request on weight 1.
        """
        backends = makeBackends(4, 1)
        balancer = makeBalancer("least-connections", backends)
        backends[0].active = 3
        backends[1].active = 1
        self.assertEqual(picks(balancer, 1), "a")
        backends[0].active = 5
        self.assertEqual(picks(balancer, 1), "b")

    def test_tiesRotate(self) -> None:
        """
        Backends with equal loads take turns.
        """
        balancer = makeBalancer("least-connections", makeBackends(1, 1, 1))
        self.assertEqual(picks(balancer, 7), "abcabca")

    def test_sharesByWeight(self) -> None:
        """
        Requests that stay in flight end up spread by weight.
        """
        backends = makeBackends(2, 1, 3)
        balancer = makeBalancer("least-connections", backends)
        for _ in range(60):
            balancer.choose().requestStarted()
        self.assertEqual([b.active for b in backends], [20, 10, 30])

    def test_skipUnavailable(self) -> None:
        """
        An unavailable backend is not picked even when it is the least loaded.
        """
        backends = makeBackends(1, 1, 1)
        balancer = makeBalancer("least-connections", backends)
        backends[0].active = 9
        backends[2].active = 4
        backends[1].healthy = False
        self.assertEqual(picks(balancer, 2), "cc")


class IPHashTests(SynchronousTestCase, BinomialAssertions):
    """
    Tests for C{ip-hash} (weighted rendezvous hashing).
    """

    keys = [f"10.{i >> 8}.{i & 255}.{(i * 7) % 256}" for i in range(10000)]

    def mapping(self, balancer: ILoadBalancer) -> Dict[str, str]:
        """
        @return: the backend name of every key in L{keys}.
        """
        return {key: balancer.choose(key).name for key in self.keys}

    def test_affinity(self) -> None:
        """
        A key always maps to the same backend, across calls and across
        balancers built for the same backends.
        """
        backends = makeBackends(1, 1, 1, 1)
        first = makeBalancer("ip-hash", backends)
        mapping = self.mapping(first)
        self.assertEqual(self.mapping(first), mapping)
        self.assertEqual(self.mapping(makeBalancer("ip-hash", backends)), mapping)

    def test_stableHash(self) -> None:
        """
        The mapping does not depend on the process (no built-in C{hash()},
        which is salted per process): known keys map to known backends, with
        equal weights and with different ones.
        """
        keys = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "192.168.1.20", "2001:db8::1"]
        keys += ["203.0.113.7", "198.51.100.9", "172.16.0.5"]
        keys += [f"198.18.0.{i}" for i in range(1, 9)]
        for weights, expected in [
            ((1, 1, 1, 1), "bccaaacdccdbcbcc"),
            ((1, 2, 3, 4), "bccaaacdccddcbcc"),
        ]:
            balancer = makeBalancer("ip-hash", makeBackends(*weights))
            self.assertEqual("".join(balancer.choose(key).name for key in keys), expected)

    def test_distribution(self) -> None:
        """
        Keys spread evenly over equal backends.
        """
        counts = Counter(self.mapping(makeBalancer("ip-hash", makeBackends(1, 1, 1, 1))).values())
        for name in "abcd":
            self.assertBinomial(counts[name], len(self.keys), 0.25)

    def test_weightedDistribution(self) -> None:
        """
        Keys spread over backends in proportion to their weights.
        """
        weights = (1, 2, 3, 4)
        counts = Counter(self.mapping(makeBalancer("ip-hash", makeBackends(*weights))).values())
        for name, weight in zip("abcd", weights):
            self.assertBinomial(counts[name], len(self.keys), weight / sum(weights))

    def test_removeBackend(self) -> None:
        """
        Without one backend, only the keys it had move; every other key keeps
        its backend.
        """
        backends = makeBackends(1, 2, 1, 1)
        before = self.mapping(makeBalancer("ip-hash", backends))
        after = self.mapping(makeBalancer("ip-hash", backends[:1] + backends[2:]))
        moved = {key for key in self.keys if before[key] != after[key]}
        self.assertEqual(moved, {key for key in self.keys if before[key] == "b"})
        self.assertNotIn("b", after.values())

    def test_addBackend(self) -> None:
        """
        A new backend takes keys only for itself: no key moves between the
        backends that were there before.
        """
        backends = makeBackends(1, 1, 1, 1)
        before = self.mapping(makeBalancer("ip-hash", backends[:3]))
        after = self.mapping(makeBalancer("ip-hash", backends))
        for key in self.keys:
            self.assertIn(after[key], (before[key], "d"))
        self.assertBinomial(Counter(after.values())["d"], len(self.keys), 0.25)

    def test_unhealthyBackend(self) -> None:
        """
        The keys of an unhealthy backend move to the others and the other
        keys stay; once it recovers every key is back where it was.
        """
        backends = makeBackends(1, 1, 1, 1)
        balancer = makeBalancer("ip-hash", backends)
        before = self.mapping(balancer)
        backends[2].healthy = False
        during = self.mapping(balancer)
        for key in self.keys:
            if before[key] == "c":
                self.assertNotEqual(during[key], "c")
            else:
                self.assertEqual(during[key], before[key])
        backends[2].healthy = True
        self.assertEqual(self.mapping(balancer), before)

    def test_noKey(self) -> None:
        """
        Without a key it falls back to round-robin over available backends.
        """
        backends = makeBackends(1, 1, 1)
        balancer = makeBalancer("ip-hash", backends)
        self.assertEqual(picks(balancer, 4), "abca")
        backends[1].healthy = False
        self.assertEqual(picks(balancer, 3), "cac")


class RandomTests(SynchronousTestCase, BinomialAssertions):
    """
    Tests for C{random} (weighted random).
    """

    def assertProportions(
        self, counts: Dict[str, int], trials: int, weights: Sequence[int]
    ) -> None:
        total = sum(weights)
        for name, weight in zip(NAMES, weights):
            self.assertBinomial(counts[name], trials, weight / total)

    def test_uniform(self) -> None:
        """
        Equal weights get equal shares.
        """
        balancer = makeBalancer("random", makeBackends(1, 1, 1, 1), Random(7))
        self.assertProportions(tally(balancer, 10000), 10000, (1, 1, 1, 1))

    def test_weighted(self) -> None:
        """
        Each backend gets a share proportional to its weight.
        """
        weights = (1, 2, 3, 4)
        balancer = makeBalancer("random", makeBackends(*weights), Random(1234))
        self.assertProportions(tally(balancer, 10000), 10000, weights)

    def test_unavailable(self) -> None:
        """
        With one backend down, the others share the picks by their weights.
        """
        backends = makeBackends(1, 2, 3, 4)
        backends[3].healthy = False
        balancer = makeBalancer("random", backends, Random(99))
        counts = tally(balancer, 10000)
        self.assertEqual(counts["d"], 0)
        self.assertProportions(counts, 10000, (1, 2, 3))

    def test_deterministic(self) -> None:
        """
        All randomness comes from the injected L{Random}: the same seed gives
        the same picks.
        """
        backends = makeBackends(1, 2, 3)
        first = makeBalancer("random", backends, Random(5))
        second = makeBalancer("random", backends, Random(5))
        self.assertEqual(picks(first, 50), picks(second, 50))
        self.assertEqual(len(set(picks(first, 50))), 3)


class PowerOfTwoEWMATests(SynchronousTestCase, BinomialAssertions):
    """
    Tests for C{p2c-ewma}.
    """

    def test_twoDistinct(self) -> None:
        """
        The two candidates are distinct: of two backends the faster one is
        always chosen.
        """
        backends = makeBackends(1, 1)
        backends[0].ewma = 0.100
        backends[1].ewma = 0.010
        balancer = makeBalancer("p2c-ewma", backends, Random(3))
        self.assertEqual(picks(balancer, 200), "b" * 200)

    def test_prefersLowLatency(self) -> None:
        """
        A fast backend among three wins whenever it is drawn, 2/3 of the picks,
        four times the share of each slow one.
        """
        backends = makeBackends(1, 1, 1)
        backends[0].ewma = 0.010
        backends[1].ewma = backends[2].ewma = 0.100
        balancer = makeBalancer("p2c-ewma", backends, Random(11))
        counts = tally(balancer, 10000)
        self.assertBinomial(counts["a"], 10000, 2 / 3)
        self.assertBinomial(counts["b"], 10000, 1 / 6)
        self.assertBinomial(counts["c"], 10000, 1 / 6)

    def test_load(self) -> None:
        """
        The cost weighs latency by the requests in flight: a fast backend that
        is busy loses to a slower idle one.
        """
        backends = makeBackends(1, 1)
        backends[0].ewma = 0.010
        backends[0].active = 20
        backends[1].ewma = 0.100
        balancer = makeBalancer("p2c-ewma", backends, Random(3))
        self.assertEqual(picks(balancer, 20), "b" * 20)
        backends[0].active = 5
        self.assertEqual(picks(balancer, 20), "a" * 20)

    def test_probesUnmeasured(self) -> None:
        """
        A backend with no latency measured yet costs nothing, so it is
        chosen whenever drawn.
        """
        backends = makeBackends(1, 1, 1)
        backends[0].ewma = backends[1].ewma = 0.005
        balancer = makeBalancer("p2c-ewma", backends, Random(8))
        counts = tally(balancer, 10000)
        self.assertBinomial(counts["c"], 10000, 2 / 3)

    def test_unavailable(self) -> None:
        """
        Only available backends are candidates: with one left, it is chosen,
        however slow.
        """
        backends = makeBackends(1, 1, 1)
        backends[0].ewma = backends[1].ewma = 0.001
        backends[2].ewma = 9.0
        backends[0].healthy = False
        backends[1].breaker = RefusingBreaker()
        balancer = makeBalancer("p2c-ewma", backends, Random(4))
        self.assertEqual(picks(balancer, 20), "c" * 20)

    def test_pairsAmongAvailable(self) -> None:
        """
        With some backends down, the fastest available one still wins
        whenever drawn: among three available, 2/3 of the picks.
        """
        backends = makeBackends(1, 1, 1, 1, 1)
        for backend, ewma in zip(backends, (0.001, 0.02, 0.1, 0.001, 0.1)):
            backend.ewma = ewma
        backends[0].healthy = backends[3].healthy = False
        balancer = makeBalancer("p2c-ewma", backends, Random(21))
        counts = tally(balancer, 10000)
        self.assertEqual(counts["a"] + counts["d"], 0)
        self.assertBinomial(counts["b"], 10000, 2 / 3)
