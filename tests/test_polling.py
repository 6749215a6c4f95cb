"""
Tests for L{gateway.polling}.
"""

from __future__ import annotations

from typing import Any, List, Optional

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from gateway.polling import PollingService


class Recorder(PollingService):
    """
    Polls by handing out a L{Deferred} the test fires (or the outcome set
    in C{answer}).
    """

    def __init__(self, clock: Clock, interval: float) -> None:
        super().__init__(clock, interval)
        self.polls: List[float] = []
        self.pending: List[Deferred[None]] = []
        self.failures: List[Failure] = []
        self.answer: Any = "wait"

    def poll(self) -> Optional[Deferred[None]]:
        self.polls.append(self._reactor.seconds())
        if self.answer == "none":
            return None
        if self.answer == "raise":
            raise RuntimeError("poll broke")
        d: Deferred[None] = Deferred()
        self.pending.append(d)
        return d

    def pollFailed(self, failure: Failure) -> None:
        self.failures.append(failure)


class PollingServiceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.service = Recorder(self.clock, 2.0)

    def test_firstAtOnceThenIntervalAfterEachEnds(self) -> None:
        """
        The first poll comes at once; each next one C{interval} seconds
        after the last one ended, never while one is under way.
        """
        self.service.startService()
        self.clock.advance(0)
        self.assertEqual(self.service.polls, [0])
        self.clock.advance(10)
        self.assertEqual(self.service.polls, [0], "a poll under way: no other")
        self.service.pending.pop().callback(None)
        self.clock.advance(1.9)
        self.assertEqual(self.service.polls, [0])
        self.clock.advance(0.1)
        self.assertEqual(self.service.polls, [0, 12])

    def test_failuresAndNothingToDo(self) -> None:
        """
        A failed poll, one that raises, and one with nothing to do are
        followed by the next one as usual; the failures go to
        C{pollFailed}.
        """
        self.service.startService()
        self.clock.advance(0)
        self.service.pending.pop().errback(ValueError("unreachable"))
        self.service.answer = "raise"
        self.clock.advance(2)
        self.service.answer = "none"
        self.clock.advance(2)
        self.clock.advance(2)
        self.assertEqual(self.service.polls, [0, 2, 4, 6])
        self.assertEqual([f.type for f in self.service.failures], [ValueError, RuntimeError])

    def test_stopCancels(self) -> None:
        """
        Stopping cancels the poll under way (its failure goes to
        C{pollFailed}) and polls no more; stopped while waiting, the timer
        is cancelled.
        """
        self.service.startService()
        self.clock.advance(0)
        self.service.stopService()
        self.assertEqual(len(self.service.failures), 1)
        self.clock.advance(60)
        self.assertEqual(self.service.polls, [0])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.service.answer = "none"
        self.service.startService()
        self.clock.advance(0)
        self.service.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])
