"""
The leases of a bucket in Redis (L{gateway.protection.leases}): the rules
one process follows, and the property that holds for a fleet of them: in
any interleaving of requests, lease calls, answers, failures, late calls
and returns, no interval of M{t} seconds admits more than M{burst + rate *
t + H + 2K} (L{Lease}'s documented slack).
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

from fakeredis import BucketModel
from hypothesis import HealthCheck, given, settings, target
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from gateway.protection.leases import Lease, leaseSize


class LeaseSizeTests(SynchronousTestCase):
    """
    L{leaseSize}: the demand of C{leaseTime} seconds, capped.
    """

    def test_followsDemand(self) -> None:
        """
        A lease is the demand of C{leaseTime} seconds, rounded up.
        """
        self.assertEqual(leaseSize(1000.0, 10_000.0, 500.0, 0.02), 20)
        self.assertEqual(leaseSize(1010.0, 10_000.0, 500.0, 0.02), 21)

    def test_bounds(self) -> None:
        """
        At least one token; the demand counts up to the rate; never more
        than the burst.
        """
        self.assertEqual(leaseSize(0.0, 100.0, 100.0, 0.02), 1)
        self.assertEqual(leaseSize(1e6, 100.0, 100.0, 0.02), 2)
        self.assertEqual(leaseSize(1e6, 1e6, 5.0, 0.02), 5)


class LeaseTests(SynchronousTestCase):
    """
    The rules of one L{Lease}.
    """

    def test_creditFirst(self) -> None:
        """
        The first request, before any answer, is admitted on credit and
        asks for a lease; a second one before the answer is refused (for
        this limit, of 10/s, the largest lease is one token).
        """
        lease = Lease(10.0, 10.0, 0.02, 0.0)
        self.assertEqual(lease.take(0.0), (True, True))
        self.assertEqual(lease.debt, 1)
        self.assertEqual(lease.request(0.0), (1, 1, 0))
        self.assertEqual(lease.take(0.0), (False, False))
        self.assertFalse(lease.answered(0.001, 1, 8.0, 0.0))
        self.assertEqual((lease.held, lease.debt, lease.trusted), (1, 0, True))
        self.assertEqual(lease.take(0.002), (True, True))

    def test_spendsHeldAndRefillsAtHalf(self) -> None:
        """
        Tokens in hand are spent without a call; the next lease is asked
        for when fewer than half the target are left.
        """
        lease = Lease(1000.0, 1000.0, 0.02, 0.0)
        lease.demand = 1000.0  # a target of 20
        lease.request(0.0)
        lease.answered(0.0, 20, 500.0, 0.0)
        calls = [lease.take(0.001) for _ in range(11)]
        self.assertTrue(all(admitted for admitted, _ in calls))
        self.assertEqual([fetch for _, fetch in calls], [False] * 10 + [True])
        self.assertEqual(lease.held, 9)

    def test_deniedUntilTheAnswerSays(self) -> None:
        """
        An answer saying the bucket is empty refuses requests, without a
        call, until the time it named; then the next request asks again
        (and is refused), and no credit is given.
        """
        lease = Lease(10.0, 10.0, 0.02, 0.0)
        lease.take(0.0)
        lease.request(0.0)
        lease.answered(0.0, 0, -0.5, 0.15)
        self.assertFalse(lease.trusted)
        self.assertEqual(lease.take(0.1), (False, False))
        self.assertAlmostEqual(lease.retryAfter(0.1), 0.05)
        self.assertEqual(lease.take(0.15), (False, True))
        self.assertEqual(lease.allows(0.16), (False, True))
        self.assertEqual(lease.debt, 0)

    def test_creditFollowsTheBucket(self) -> None:
        """
        Before any answer a process may owe the largest lease (the demand
        of C{leaseTime} at the rate); after one, what the bucket said it
        held, at most that, less what is owed.
        """
        lease = Lease(10_000.0, 10_000.0, 0.02, 0.0)
        self.assertEqual(lease.largest, 200)
        taken = [lease.take(0.0)[0] for _ in range(250)]
        self.assertEqual(taken.count(True), 200)
        lease.request(0.0)
        lease.answered(0.001, 1, 3.5, 0.0)
        self.assertEqual((lease.held, lease.debt, lease.creditLeft), (1, 0, 3))
        lease.request(0.001)
        lease.take(0.001)  # the token in hand
        lease.take(0.001)  # on credit
        self.assertEqual((lease.held, lease.debt, lease.creditLeft), (0, 1, 2))
        lease.answered(0.002, 0, 5000.0, 0.0)
        self.assertEqual(lease.creditLeft, 199)

    def test_creditNeedsAnAnswer(self) -> None:
        """
        After a credit is charged, another needs an answer that says the
        bucket holds a token.
        """
        lease = Lease(10.0, 10.0, 0.02, 0.0)
        lease.take(0.0)
        lease.request(0.0)
        lease.answered(0.0, 0, 0.5, 0.05)
        self.assertEqual(lease.take(0.01), (False, False))
        self.assertEqual(lease.debt, 0)

    def test_debtOwedAgainOnFailure(self) -> None:
        """
        A failed call owes its debt again; the tokens it gave back are
        gone.
        """
        lease = Lease(10.0, 10.0, 0.02, 0.0)
        lease.held = 3
        lease.debt = 1
        self.assertEqual(lease.request(0.0, give=True), (0, 1, 3))
        lease.failed(0.001)
        self.assertEqual((lease.held, lease.debt, lease.fetching), (0, 1, False))

    def test_idle(self) -> None:
        """
        Tokens unused for C{returnAfter} seconds are to be given back.
        """
        lease = Lease(10.0, 10.0, 0.02, 0.0)
        lease.held = 2
        self.assertFalse(lease.idle(0.05, 0.1))
        self.assertTrue(lease.idle(0.1, 0.1))


# -- the property --------------------------------------------------------------


class _Worker:
    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        #: The call on its way: (want, debt, back), and Redis's answer once
        #: it ran.
        self.call: Optional[Tuple[int, int, int]] = None
        self.answer: Optional[List[int]] = None


class Fleet:
    """
    W processes sharing one bucket of a L{BucketModel}, driven step by
    step.
    """

    def __init__(self, workers: int, rate: float, burst: float, leaseTime: float) -> None:
        self.rate = rate
        self.burst = burst
        self.leaseTime = leaseTime
        self.now = 0.0
        self.redis = BucketModel()
        self.workers = [_Worker(Lease(rate, burst, leaseTime, 0.0)) for _ in range(workers)]
        #: Calls given up by their process that Redis still runs later.
        self.late: List[Tuple[int, int, int]] = []
        self.admitted: List[float] = []

    def run(self, want: int, debt: int, back: int) -> List[int]:
        return self.redis.run(
            "k", int(round(self.now * 1e6)), self.rate, self.burst, want, debt, back
        )

    def send(self, worker: _Worker, give: bool = False) -> None:
        if not worker.lease.fetching:
            worker.call = worker.lease.request(self.now, give)
            worker.answer = None

    def step(self, action: str, index: int, amount: float) -> None:
        worker = self.workers[index % len(self.workers)]
        lease = worker.lease
        if action == "advance":
            self.now += amount
        elif action in ("request", "burst"):
            for _ in range(1 if action == "request" else 1 + int(amount * 40)):
                admitted, fetch = lease.take(self.now)
                if admitted:
                    self.admitted.append(self.now)
                if fetch:
                    self.send(worker)
        elif action == "cycle":
            # A request, and its call run and answered at once: the common
            # case, in one step, so that searches reach long runs of it.
            self.step("request", index, amount)
            self.step("execute", index, amount)
            self.step("deliver", index, amount)
        elif action == "allows":
            _, fetch = lease.allows(self.now)
            if fetch:
                self.send(worker)
        elif action == "execute":
            if worker.call is not None and worker.answer is None:
                worker.answer = self.run(*worker.call)
        elif action == "deliver":
            if worker.call is not None and worker.answer is not None:
                granted, level, wait = worker.answer
                worker.call = worker.answer = None
                if lease.answered(self.now, granted, level / 1000.0, wait / 1e6):
                    self.send(worker)
        elif action == "fail":
            if worker.call is not None:
                if worker.answer is None and amount > 0.5:
                    # Given up, but Redis runs it later all the same.
                    self.late.append(worker.call)
                worker.call = worker.answer = None
                lease.failed(self.now)
        elif action == "late":
            if self.late:
                self.run(*self.late.pop(0))
        elif action == "sweep":
            if not lease.fetching:
                if lease.debt > 0:
                    self.send(worker)
                elif lease.idle(self.now, max(0.05, 5 * self.leaseTime)):
                    self.send(worker, give=True)

    def slack(self) -> float:
        """
        The documented slack: M{H + 2K}, with each process holding at most
        the largest lease, and allowed as much credit.
        """
        largest = max(1, min(int(self.burst), math.ceil(self.rate * self.leaseTime - 1e-9)))
        return len(self.workers) * 3 * largest

    def worstExcess(self) -> float:
        """
        @return: the most any interval between two admissions admitted
            over M{burst + rate * t + slack} (negative when the bound
            held everywhere).
        """
        times = self.admitted
        worst = -math.inf
        allowed = self.slack() + self.burst
        for i in range(len(times)):
            for j in range(i, len(times)):
                count = j - i + 1
                worst = max(worst, count - (allowed + self.rate * (times[j] - times[i])))
        return worst


_ACTIONS = st.sampled_from(
    [
        "advance",
        "request",
        "request",
        "burst",
        "cycle",
        "cycle",
        "allows",
        "execute",
        "deliver",
        "deliver",
        "fail",
        "late",
        "sweep",
    ]
)


@st.composite
def scenarios(draw: Any) -> Dict[str, Any]:
    return {
        "workers": draw(st.integers(1, 5)),
        "rate": draw(st.sampled_from([0.5, 1.0, 3.0, 10.0, 50.0, 400.0])),
        "burst": float(draw(st.integers(1, 40))),
        "leaseTime": draw(st.sampled_from([0.005, 0.02, 0.1, 0.5])),
        "steps": draw(
            st.lists(
                st.tuples(
                    _ACTIONS,
                    st.integers(0, 4),
                    st.floats(0.0, 0.3) | st.sampled_from([0.0, 0.001, 0.01]),
                ),
                max_size=300,
            )
        ),
    }


class FleetPropertyTests(SynchronousTestCase):
    """
    The bound of L{gateway.protection.leases} over any interleaving.
    """

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(scenarios())
    def test_neverAboveTheBound(self, scenario: Dict[str, Any]) -> None:
        """
        However requests, calls, answers, failures, late calls and returns
        interleave across the processes, no interval admits more than
        M{burst + rate * t + H + 2K}.
        """
        fleet = Fleet(
            scenario["workers"], scenario["rate"], scenario["burst"], scenario["leaseTime"]
        )
        for action, index, amount in scenario["steps"]:
            fleet.step(action, index, amount)
        excess = fleet.worstExcess()
        # Steers the search towards the fleets that come closest.
        target(excess if excess > -1e9 else -1e9)
        self.assertLessEqual(excess, 1e-6)

    def test_boundIsTight(self) -> None:
        """
        The slack is not a wide margin that would hide a broken rule: a
        fleet whose processes all take their credit while the bucket is
        empty goes past M{burst + rate * t} (and stays within the slack).
        """
        fleet = Fleet(4, 1.0, 1.0, 0.02)
        for index in range(4):
            fleet.step("request", index, 0)
        for index in range(4):
            fleet.step("execute", index, 0)
            fleet.step("deliver", index, 0)
        self.assertEqual(len(fleet.admitted), 4)
        self.assertGreater(len(fleet.admitted), fleet.burst)
        self.assertLessEqual(fleet.worstExcess(), 1e-6)

    def test_admitsTheRate(self) -> None:
        """
        Under steady demand above the limit, a fleet of leases admits close
        to the limit: no round trip per request, and no starving.
        """
        fleet = Fleet(3, 100.0, 100.0, 0.02)
        for _ in range(2000):
            fleet.step("advance", 0, 0.005)
            for index in range(3):
                for _ in range(3):
                    fleet.step("request", index, 0)
                fleet.step("execute", index, 0)
                fleet.step("deliver", index, 0)
        seconds = fleet.now
        admitted = len(fleet.admitted)
        self.assertLessEqual(admitted, 100 + 100 * seconds + fleet.slack())
        self.assertGreater(admitted, 0.9 * 100 * seconds)
