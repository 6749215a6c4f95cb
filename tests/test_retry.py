"""
The retry budget.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gateway.pipeline.retry import RetryBudget


class RetryBudgetTests(SynchronousTestCase):
    def test_minimumWhenQuiet(self) -> None:
        """
        With no traffic, minPerSecond x window retries are allowed, no more.
        """
        budget = RetryBudget(Clock(), ratio=0.2, minPerSecond=1.0, window=10.0)
        self.assertEqual([budget.tryRetry() for _ in range(11)], [True] * 10 + [False])

    def test_ratioOfRequests(self) -> None:
        """
        Under load, retries are capped at ratio x requests (+ the minimum).
        """
        budget = RetryBudget(Clock(), ratio=0.2, minPerSecond=0.0, window=10.0)
        for _ in range(100):
            budget.requestSent()
        allowed = sum(budget.tryRetry() for _ in range(50))
        self.assertEqual(allowed, 20)

    def test_windowSlides(self) -> None:
        """
        Requests and retries older than the window stop counting, exactly.
        """
        clock = Clock()
        budget = RetryBudget(clock, ratio=0.5, minPerSecond=0.0, window=10.0)
        for _ in range(10):
            budget.requestSent()
        self.assertEqual(sum(budget.tryRetry() for _ in range(10)), 5)
        clock.advance(9.0)
        self.assertFalse(budget.tryRetry())
        clock.advance(1.5)
        # The first slot's requests and retries have expired.
        self.assertFalse(budget.tryRetry())
        for _ in range(4):
            budget.requestSent()
        self.assertEqual(sum(budget.tryRetry() for _ in range(10)), 2)

    def test_longIdleResets(self) -> None:
        """
        After a long idle time nothing old is left.
        """
        clock = Clock()
        budget = RetryBudget(clock, ratio=0.0, minPerSecond=0.5, window=10.0)
        self.assertEqual(sum(budget.tryRetry() for _ in range(10)), 5)
        clock.advance(1000)
        self.assertEqual(sum(budget.tryRetry() for _ in range(10)), 5)


class RetryDelayTests(SynchronousTestCase):
    """
    L{gateway.pipeline.resource.retryDelay}: full-jitter exponential
    back-off.
    """

    def test_boundsGrowAndCap(self) -> None:
        """
        The delay is drawn in [0, base * 2 ** (attempt - 1)], capped at
        C{RETRY_CAP}.
        """
        from random import Random

        from gateway.pipeline.resource import RETRY_BASE, RETRY_CAP, retryDelay

        rng = Random(3)
        for attempt, ceiling in ((1, RETRY_BASE), (2, 2 * RETRY_BASE), (10, RETRY_CAP)):
            delays = [retryDelay(attempt, rng) for _ in range(200)]
            self.assertTrue(all(0.0 <= d <= ceiling for d in delays), attempt)
            self.assertGreater(max(delays), ceiling * 0.8)
