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
