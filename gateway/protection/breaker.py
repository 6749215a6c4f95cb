"""
Circuit breakers: stop sending traffic to a server (or an API) that keeps
failing, and let a trickle through later to see whether it recovered.

A L{CircuitBreaker} has three states:

  - C{closed}: everything passes; the outcomes of the last C{window}
    seconds are counted in ten time buckets (so memory is constant and old
    outcomes expire as the clock moves on).  When at least C{minRequests}
    outcomes are in the window and the failure rate reaches
    C{failureRateToOpen} %, it opens.
  - C{open}: nothing passes, until C{openTimeout} seconds after it opened;
    then (lazily, at the next call) it turns half-open.
  - C{half-open}: C{halfOpenTrafficRate} % of the calls to
    L{CircuitBreaker.allows} pass, as trial requests, up to
    C{halfOpenRequests} trials.  Once C{halfOpenRequests} outcomes are in,
    it closes when at least C{successRateToClose} % of them succeeded; a
    failure that makes that rate unreachable opens it again at once (with
    C{successRateToClose} at 100 %, any failure does).

Outcomes recorded while open come from requests that were in flight when it
opened: they change nothing.  Nor do such outcomes that come in half-open
(a request sent before the trials began, told by its C{sentAt}): only the
trial requests judge the server, and each frees its own trial slot.

L{APIBreakerFilter} puts a breaker in front of a whole API, as a filter
that answers C{503} while it is open.
"""

from __future__ import annotations

import collections
import math
import random as _random
from typing import Any, Callable, Deque, Dict, Optional

from twisted.logger import Logger

from gateway.model.resources import CircuitBreaker as CircuitBreakerConfig

log = Logger()


CLOSED = "closed"


OPEN = "open"


HALF_OPEN = "half-open"


#: How many time buckets the closed state's window is cut into.
BUCKETS = 10


#: How many transitions each breaker remembers for the stats.
TRANSITIONS_KEPT = 50


TransitionCallback = Callable[["CircuitBreaker", str, str, str], None]


class CircuitBreaker:
    """
    The state machine of one circuit breaker.

    @ivar state: L{CLOSED}, L{OPEN} or L{HALF_OPEN}.
    @ivar since: the clock time of the last transition (of the breaker's
        creation before any).
    @ivar config: the L{gateway.model.resources.CircuitBreaker} settings.
    @ivar name: what it protects, for logs and stats (C{server/NAME}).
    @ivar transitions: the last transitions, oldest first, each a L{dict}
        C{{"at", "from", "to", "reason"}}.
    @ivar counters: totals since creation: C{successes} and C{failures}
        judged, C{ignored} outcomes (of requests sent before it opened,
        recorded while open or half-open), C{opened} (times
        it opened).
    """

    def __init__(
        self,
        config: CircuitBreakerConfig,
        clock: Any,
        random: Optional[_random.Random] = None,
        name: str = "",
        onTransition: Optional[TransitionCallback] = None,
    ) -> None:
        """
        @param config: the breaker's settings.
        @param clock: an L{IReactorTime} provider; all time is read from it.
        @param random: the L{random.Random} for half-open admission draws.
        @param name: what it protects, for logs and stats.
        @param onTransition: called as C{onTransition(breaker, old, new,
            reason)} after every transition.
        """
        self.config = config
        self.name = name
        self._clock = clock
        self._random = random or _random.Random()
        self._onTransition = onTransition
        self.state = CLOSED
        self.since = clock.seconds()
        self.transitions: Deque[Dict[str, Any]] = collections.deque(maxlen=TRANSITIONS_KEPT)
        self.counters: Dict[str, int] = {"successes": 0, "failures": 0, "ignored": 0, "opened": 0}
        # Closed-state window: bucket i holds the outcomes of time slot
        # epoch (an integer count of bucket widths); slot epoch lives in
        # bucket epoch % BUCKETS.
        self._width = config.window / BUCKETS
        self._epoch = self._epochAt(self.since)
        self._totals = [0] * BUCKETS
        self._failures = [0] * BUCKETS
        self._total = 0
        self._failed = 0
        # Open state.
        self._openedAt = 0.0
        self._openingRate: Optional[float] = None
        # Half-open state.
        self._trialSuccesses = 0
        self._trialFailures = 0
        self._trialsInFlight: Deque[float] = collections.deque()

    def takeOver(self, old: CircuitBreaker) -> None:
        """
        Go on from the state of C{old}, the breaker of the same server or
        API before its settings changed: an open breaker stays open (until
        the new C{openTimeout} after it opened), a half-open one stays
        half-open and judges anew (the trials in flight hold their slots,
        and count), and the transitions and counters go on; a closed one
        starts a new window.  (A changed setting closed an
        open breaker, sending traffic at once to the server it kept away.)

        @param old: the breaker this one replaces.
        """
        self.transitions.extend(old.transitions)
        self.counters = dict(old.counters)
        self.since = old.since
        if old.state == CLOSED:
            return
        self.state = old.state
        self._openedAt = old._openedAt
        self._openingRate = old._openingRate
        self._trialsInFlight = collections.deque(old._trialsInFlight)

    # -- the closed state's rolling window ----------------------------------

    def _epochAt(self, now: float) -> int:
        # The epsilon keeps 0.3 / 0.1 == 2.9999999999999996 in slot 3.
        return math.floor(now / self._width + 1e-9)

    def _advance(self, now: float) -> None:
        """
        Expire the buckets that fell out of the window by C{now}.
        """
        epoch = self._epochAt(now)
        if epoch <= self._epoch:
            return
        if epoch - self._epoch >= BUCKETS:
            self._clearWindow()
        else:
            totals = self._totals
            failures = self._failures
            for slot in range(self._epoch + 1, epoch + 1):
                i = slot % BUCKETS
                self._total -= totals[i]
                self._failed -= failures[i]
                totals[i] = 0
                failures[i] = 0
        self._epoch = epoch

    def _clearWindow(self) -> None:
        self._totals = [0] * BUCKETS
        self._failures = [0] * BUCKETS
        self._total = 0
        self._failed = 0

    # -- the state machine --------------------------------------------------

    def _transition(
        self, new: str, reason: str, now: float, failureRate: Optional[float] = None
    ) -> None:
        """
        @param failureRate: when it opens, the failure rate (%) that opened
            it: what the stats show while it is open.
        """
        old = self.state
        self.state = new
        self.since = now
        if new == OPEN:
            self._openedAt = now
            self._openingRate = failureRate
            self.counters["opened"] += 1
        elif new == HALF_OPEN:
            self._trialSuccesses = 0
            self._trialFailures = 0
            self._trialsInFlight.clear()
        elif new == CLOSED:
            self._epoch = self._epochAt(now)
            self._clearWindow()
        self.transitions.append({"at": now, "from": old, "to": new, "reason": reason})
        log.info(
            "circuit {name} {from} -> {to}: {reason}",
            **{"name": self.name, "from": old, "to": new, "reason": reason},
        )
        if self._onTransition is not None:
            try:
                self._onTransition(self, old, new, reason)
            except Exception:
                log.failure("circuit {name}: transition callback failed", name=self.name)

    def _checkOpenTimeout(self, now: float) -> None:
        if self.state == OPEN and now >= self._openedAt + self.config.openTimeout:
            self._transition(HALF_OPEN, f"open for {self.config.openTimeout:g}s, trying again", now)

    def allows(self) -> bool:
        """
        Whether a request may go through now.  In half-open this is a
        random draw: it says yes to C{halfOpenTrafficRate} % of the calls
        while fewer than C{halfOpenRequests} trials are in flight or judged.

        @return: L{True} to let a request through.
        """
        state = self.state
        if state == CLOSED:
            return True
        now = self._clock.seconds()
        if state == OPEN:
            self._checkOpenTimeout(now)
            if self.state == OPEN:
                return False
        config = self.config
        inFlight = self._trialsInFlight
        # A trial whose outcome never came (its client went away) frees its
        # slot after openTimeout, so half-open cannot wedge shut.
        while inFlight and inFlight[0] + config.openTimeout <= now:
            inFlight.popleft()
        judged = self._trialSuccesses + self._trialFailures
        if judged + len(inFlight) >= config.halfOpenRequests:
            return False
        return self._random.random() * 100.0 < config.halfOpenTrafficRate

    def requestStarted(self) -> float:
        """
        A request that L{allows} let through was sent.  In half-open it
        takes one of the C{halfOpenRequests} trial slots until its outcome
        is recorded, so no more trials than that are ever in flight.
        (Optional: without it, trials are limited by judged outcomes only.)

        @return: the clock time now, the C{sentAt} to give L{record}.
        """
        now = self._clock.seconds()
        if self.state == HALF_OPEN:
            self._trialsInFlight.append(now)
        return now

    def record(self, ok: Optional[bool], sentAt: Optional[float] = None) -> None:
        """
        Count the outcome of a request.

        @param ok: L{True} for a success, L{False} for a failure, L{None}
            when the outcome says nothing about the upstream (the client
            went away): it only frees a half-open trial slot.
        @param sentAt: the clock time the request was let through (by
            L{allows}), when known: in half-open, the outcome of a request
            sent before the trials began is no trial's, and is ignored.
        """
        now = self._clock.seconds()
        state = self.state
        if state == CLOSED:
            if ok is None:
                return
            self._advance(now)
            i = self._epoch % BUCKETS
            self._totals[i] += 1
            self._total += 1
            if ok:
                self.counters["successes"] += 1
            else:
                self.counters["failures"] += 1
                self._failures[i] += 1
                self._failed += 1
            config = self.config
            total = self._total
            if (
                total >= config.minRequests
                and self._failed * 100.0 >= config.failureRateToOpen * total
            ):
                self._transition(
                    OPEN,
                    f"{self._failed} of {total} requests failed in {config.window:g}s"
                    f" (threshold {config.failureRateToOpen:g}%)",
                    now,
                    self._failed * 100.0 / total,
                )
            return
        if state == OPEN:
            # In flight since before it opened: judges nothing.
            self._checkOpenTimeout(now)
            if ok is not None:
                self.counters["ignored"] += 1
            return
        # Half-open.
        if sentAt is not None and sentAt < self.since:
            # Sent while it was closed, slower than openTimeout: its answer
            # says how the server was then, and it holds no trial slot.
            if ok is not None:
                self.counters["ignored"] += 1
            return
        if self._trialsInFlight:
            self._trialsInFlight.popleft()
        if ok is None:
            return
        config = self.config
        if ok:
            self.counters["successes"] += 1
            self._trialSuccesses += 1
        else:
            self.counters["failures"] += 1
            self._trialFailures += 1
            # The most successes still possible, against what closing needs.
            best = config.halfOpenRequests - self._trialFailures
            if best * 100.0 < config.successRateToClose * config.halfOpenRequests:
                trials = self._trialSuccesses + self._trialFailures
                self._transition(
                    OPEN,
                    f"failure in half-open ({self._trialFailures} of"
                    f" {trials} trial requests failed)",
                    now,
                    self._trialFailures * 100.0 / trials,
                )
                return
        judged = self._trialSuccesses + self._trialFailures
        if judged >= config.halfOpenRequests:
            summary = f"{self._trialSuccesses} of {judged} trial requests succeeded"
            if self._trialSuccesses * 100.0 >= config.successRateToClose * config.halfOpenRequests:
                self._transition(CLOSED, summary, now)
            else:
                self._transition(
                    OPEN,
                    f"{summary} (needs {config.successRateToClose:g}%)",
                    now,
                    self._trialFailures * 100.0 / judged,
                )

    # -- for the stats and for clients ---------------------------------------

    def retryAfter(self) -> float:
        """
        @return: seconds until it will let trial requests through (0.0 when
            it does now).
        """
        if self.state == OPEN:
            now = self._clock.seconds()
            return max(0.0, self._openedAt + self.config.openTimeout - now)
        return 0.0

    def failureRate(self) -> float:
        """
        @return: the failure rate of the current window, in % (0.0 when
            empty); while open, the rate that opened it (the window counts
            nothing then).
        """
        if self.state == OPEN and self._openingRate is not None:
            return self._openingRate
        self._advance(self._clock.seconds())
        return self._failed * 100.0 / self._total if self._total else 0.0

    def snapshot(self) -> Dict[str, Any]:
        """
        @return: the breaker's state for the stats: C{state}, C{since},
            C{failureRate} (% in the current window; while open, the rate
            that opened it), C{requests} (in the
            window), C{transitions} (a list, oldest first), C{counters},
            and in half-open C{trials} C{{"successes", "failures",
            "inFlight"}}.
        """
        now = self._clock.seconds()
        self._checkOpenTimeout(now)
        result: Dict[str, Any] = {
            "state": self.state,
            "since": self.since,
            "failureRate": self.failureRate(),
            "requests": self._total,
            "transitions": list(self.transitions),
            "counters": dict(self.counters),
        }
        if self.state == OPEN:
            result["retryAfter"] = self.retryAfter()
        elif self.state == HALF_OPEN:
            result["trials"] = {
                "successes": self._trialSuccesses,
                "failures": self._trialFailures,
                "inFlight": len(self._trialsInFlight),
            }
        return result

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name} {self.state}>"
