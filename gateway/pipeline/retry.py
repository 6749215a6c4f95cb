"""
The retry budget: how many retries the proxy may add on top of the
traffic it serves.

A retry is only worth sending while most requests succeed.  During an
outage, retrying every failed request would double the load on what is
left of the cluster, so retries are capped at C{ratio} of the requests of
the last C{window} seconds, plus C{minPerSecond} so that a quiet gateway
can still retry (the scheme of Finagle's and Envoy's retry budgets).
"""

from __future__ import annotations

from typing import Any, List


class RetryBudget:
    """
    A sliding-window cap on retries.

    @param ratio: retries allowed per request, e.g. 0.2 for 20 %.
    @param minPerSecond: retries always allowed per second.
    @param window: seconds the window spans.
    @param clock: an L{IReactorTime}.
    """

    _SLOTS = 10

    def __init__(
        self, clock: Any, ratio: float = 0.2, minPerSecond: float = 3.0, window: float = 10.0
    ) -> None:
        self._clock = clock
        self.ratio = ratio
        self.minPerSecond = minPerSecond
        self.window = window
        self._slotLength = window / self._SLOTS
        self._requests: List[int] = [0] * self._SLOTS
        self._retries: List[int] = [0] * self._SLOTS
        self._slot = int(clock.seconds() // self._slotLength)

    def _advance(self) -> int:
        now = int(self._clock.seconds() // self._slotLength)
        if now != self._slot:
            for i in range(self._slot + 1, min(now, self._slot + self._SLOTS) + 1):
                self._requests[i % self._SLOTS] = 0
                self._retries[i % self._SLOTS] = 0
            self._slot = now
        return now % self._SLOTS

    def requestSent(self) -> None:
        """
        Count a first attempt.
        """
        self._requests[self._advance()] += 1

    def tryRetry(self) -> bool:
        """
        @return: whether one more retry fits the budget; if so it is counted.
        """
        index = self._advance()
        allowed = self.minPerSecond * self.window + self.ratio * sum(self._requests)
        if sum(self._retries) + 1 > allowed:
            return False
        self._retries[index] += 1
        return True
