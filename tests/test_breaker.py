"""
Tests for L{gateway.protection.breaker}: the circuit breaker's state machine, timed
with L{task.Clock} and drawn with seeded L{Random}s, and the API breaker
filter.
"""

from __future__ import annotations

import math
from random import Random
from typing import Any, List, Tuple

from twisted.internet import task
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from zope.interface.verify import verifyObject

from gateway.balancing.backend import Backend
from gateway.filters.breaker import APIBreakerFilter, makeAPIBreakerFilter
from gateway.http.errors import UpstreamTimeout
from gateway.interfaces import IFilter
from gateway.model.resources import CircuitBreaker as CircuitBreakerConfig
from gateway.model.resources import parseResource
from gateway.pipeline.exchange import EarlyResponse, Exchange, ResponseInfo
from gateway.protection.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from gateway.routing.snapshot import CompiledAPI


def makeBreaker(**settings: Any) -> Tuple[CircuitBreaker, task.Clock]:
    """
    @return: a breaker with the given settings, on a new clock at 0, and
        the clock.
    """
    clock = task.Clock()
    return CircuitBreaker(CircuitBreakerConfig(**settings), clock, Random(7), name="t"), clock


def recordAll(breaker: CircuitBreaker, outcomes: str) -> List[str]:
    """
    Record outcomes (C{s} success, C{f} failure) in order.

    @return: the state after each one.
    """
    states = []
    for outcome in outcomes:
        breaker.record(outcome == "s")
        states.append(breaker.state)
    return states


def openBreaker(**settings: Any) -> Tuple[CircuitBreaker, task.Clock]:
    """
    @return: a breaker opened at time 0 by C{minRequests} failures.
    """
    breaker, clock = makeBreaker(**settings)
    recordAll(breaker, "f" * breaker.config.minRequests)
    assert breaker.state == OPEN
    return breaker, clock


def halfOpenBreaker(**settings: Any) -> Tuple[CircuitBreaker, task.Clock]:
    """
    @return: a breaker made half-open at time C{openTimeout}.
    """
    settings.setdefault("halfOpenTrafficRate", 100.0)
    breaker, clock = openBreaker(**settings)
    clock.advance(breaker.config.openTimeout)
    assert breaker.allows()
    assert breaker.state == HALF_OPEN
    return breaker, clock


class ClosedTests(SynchronousTestCase):
    """
    The closed state opens on the failure rate of its window.
    """

    def test_allowsEverything(self) -> None:
        """
        A new breaker is closed and lets everything through, failures and
        all, until it has C{minRequests} outcomes.
        """
        breaker, clock = makeBreaker(minRequests=5)
        self.assertEqual(breaker.state, CLOSED)
        self.assertEqual(recordAll(breaker, "ffff"), [CLOSED] * 4)
        self.assertTrue(breaker.allows())

    def test_opensAtMinRequests(self) -> None:
        """
        With the rate over the threshold all along, it opens at exactly the
        C{minRequests}-th outcome, at that time.
        """
        breaker, clock = makeBreaker(minRequests=5)
        clock.advance(3)
        self.assertEqual(recordAll(breaker, "fffff"), [CLOSED] * 4 + [OPEN])
        self.assertFalse(breaker.allows())
        self.assertEqual(breaker.since, 3)

    def test_opensExactlyAtThreshold(self) -> None:
        """
        A failure rate equal to C{failureRateToOpen} opens it; one just
        below does not.
        """
        breaker, _ = makeBreaker(minRequests=4, failureRateToOpen=50.0)
        self.assertEqual(recordAll(breaker, "sfs"), [CLOSED] * 3)
        # 1 of 4 is 25%: below.
        self.assertEqual(recordAll(breaker, "s"), [CLOSED])
        # 2 of 5 is 40%, 3 of 6 is 50%.
        self.assertEqual(recordAll(breaker, "ff"), [CLOSED, OPEN])

    def test_successCanReachMinRequests(self) -> None:
        """
        The rate is judged after every outcome: a success that brings the
        count up to C{minRequests} with the rate still at the threshold
        opens it.
        """
        breaker, _ = makeBreaker(minRequests=4, failureRateToOpen=50.0)
        self.assertEqual(recordAll(breaker, "ffss"), [CLOSED, CLOSED, CLOSED, OPEN])

    def test_windowExpiry(self) -> None:
        """
        Outcomes count for the bucket they fell in and the next nine: with
        a 10 s window (1 s buckets), failures at 0.5 s still count at
        9.99 s and are gone at 10 s.
        """
        breaker, clock = makeBreaker(minRequests=4, window=10.0)
        clock.advance(0.5)
        recordAll(breaker, "fff")
        clock.advance(9.49)
        self.assertEqual(breaker.snapshot()["requests"], 3)
        clock.advance(0.01)
        self.assertEqual(breaker.snapshot()["requests"], 0)
        self.assertEqual(recordAll(breaker, "f"), [CLOSED])
        self.assertEqual(breaker.snapshot()["requests"], 1)

    def test_windowSlides(self) -> None:
        """
        Buckets expire one by one: of failures spread over 4 s, only those
        of the last window remain, and the breaker opens when the ones
        still in the window reach the threshold.
        """
        breaker, clock = makeBreaker(minRequests=3, window=2.0)
        recordAll(breaker, "f")  # bucket [0, 0.2)
        clock.advance(1.0)
        recordAll(breaker, "f")  # bucket [1.0, 1.2)
        clock.advance(1.0)
        # At 2.0 the first failure is gone: one in the window.
        self.assertEqual(breaker.snapshot()["requests"], 1)
        self.assertEqual(recordAll(breaker, "f"), [CLOSED])
        self.assertEqual(recordAll(breaker, "f"), [OPEN])

    def test_longIdleClearsWindow(self) -> None:
        """
        After a pause of many windows, nothing old is left.
        """
        breaker, clock = makeBreaker(minRequests=3, window=1.0)
        recordAll(breaker, "ff")
        clock.advance(1000.0)
        self.assertEqual(breaker.snapshot()["requests"], 0)
        self.assertEqual(recordAll(breaker, "f"), [CLOSED])

    def test_unknownOutcomeIgnored(self) -> None:
        """
        C{record(None)} (the client went away) counts for nothing while
        closed.
        """
        breaker, _ = makeBreaker(minRequests=2)
        breaker.record(False)
        breaker.record(None)
        breaker.record(None)
        self.assertEqual(breaker.state, CLOSED)
        self.assertEqual(breaker.snapshot()["requests"], 1)


class OpenTests(SynchronousTestCase):
    """
    The open state refuses everything until C{openTimeout}.
    """

    def test_refusesUntilTimeout(self) -> None:
        """
        Open, it refuses until exactly C{openTimeout} after it opened, then
        turns half-open on the next call.
        """
        breaker, clock = openBreaker(openTimeout=30.0, halfOpenTrafficRate=100.0)
        clock.advance(29.999)
        self.assertFalse(breaker.allows())
        self.assertEqual(breaker.state, OPEN)
        self.assertAlmostEqual(breaker.retryAfter(), 0.001)
        clock.advance(0.001)
        self.assertEqual(breaker.state, OPEN)  # lazily, on the next call
        self.assertTrue(breaker.allows())
        self.assertEqual(breaker.state, HALF_OPEN)
        self.assertEqual(breaker.since, 30.0)
        self.assertEqual(breaker.retryAfter(), 0.0)

    def test_outcomesWhileOpenIgnored(self) -> None:
        """
        Outcomes of requests that were in flight when it opened change
        nothing: successes do not close it, and one arriving after the
        timeout turns it half-open but is not counted as a trial.
        """
        breaker, clock = openBreaker(openTimeout=5.0, halfOpenRequests=2)
        recordAll(breaker, "ssssss")
        self.assertEqual(breaker.state, OPEN)
        self.assertEqual(breaker.counters["ignored"], 6)
        clock.advance(5.0)
        breaker.record(False)
        self.assertEqual(breaker.state, HALF_OPEN)
        self.assertEqual(
            breaker.snapshot()["trials"], {"successes": 0, "failures": 0, "inFlight": 0}
        )
        self.assertEqual(breaker.counters["ignored"], 7)

    def test_showsTheRateThatOpenedIt(self) -> None:
        """
        Open, its failure rate is the one that opened it, also once the
        window it was counted in has passed (the window counts nothing
        while open); once closed again, the window's own rate.
        """
        breaker, clock = makeBreaker(
            minRequests=4, failureRateToOpen=50, window=10.0, openTimeout=30.0
        )
        recordAll(breaker, "sfsf")
        self.assertEqual(breaker.state, OPEN)
        self.assertEqual(breaker.snapshot()["failureRate"], 50.0)
        clock.advance(25.0)
        self.assertEqual(breaker.snapshot()["failureRate"], 50.0)
        self.assertEqual(breaker.failureRate(), 50.0)

    def test_reopenedShowsTheTrials(self) -> None:
        """
        Opened again from half-open, its failure rate is that of the trial
        requests.
        """
        breaker, clock = halfOpenBreaker(halfOpenRequests=2, successRateToClose=100)
        breaker.record(True)
        breaker.record(False)
        self.assertEqual(breaker.state, OPEN)
        self.assertEqual(breaker.snapshot()["failureRate"], 50.0)

    def test_snapshotTurnsHalfOpen(self) -> None:
        """
        Reading the stats after the timeout shows it half-open.
        """
        breaker, clock = openBreaker(openTimeout=5.0)
        self.assertEqual(breaker.snapshot()["retryAfter"], 5.0)
        clock.advance(5.0)
        self.assertEqual(breaker.snapshot()["state"], HALF_OPEN)


class HalfOpenTests(SynchronousTestCase):
    """
    Half-open lets a share through and decides on their outcomes.
    """

    def test_trafficShare(self) -> None:
        """
        Half-open says yes to C{halfOpenTrafficRate} % of the calls: exactly
        the draws under 25 of the same seeded sequence, which is within
        three standard deviations of 25 % of 10,000.
        """
        breaker, clock = openBreaker(
            halfOpenTrafficRate=25.0, halfOpenRequests=100_000, openTimeout=1.0
        )
        clock.advance(1.0)
        breaker._random = Random(1234)
        n = 10_000
        allowed = sum(breaker.allows() for _ in range(n))
        replay = Random(1234)
        self.assertEqual(allowed, sum(replay.random() * 100 < 25.0 for _ in range(n)))
        self.assertLess(abs(allowed - n * 0.25), 3 * math.sqrt(n * 0.25 * 0.75))
        self.assertEqual(breaker.state, HALF_OPEN)

    def test_trialLimit(self) -> None:
        """
        No more than C{halfOpenRequests} trials are in flight or judged at
        once: once that many were started, it refuses until they end, and
        judged ones keep their slot.
        """
        breaker, clock = halfOpenBreaker(halfOpenRequests=3, successRateToClose=100.0)
        for _ in range(3):
            breaker.requestStarted()
        self.assertFalse(breaker.allows())
        breaker.record(True)
        self.assertFalse(breaker.allows())
        self.assertEqual(
            breaker.snapshot()["trials"], {"successes": 1, "failures": 0, "inFlight": 2}
        )
        breaker.record(None)  # the client went away: frees a slot
        self.assertTrue(breaker.allows())

    def test_trialLimitWithoutStartNotice(self) -> None:
        """
        Without L{CircuitBreaker.requestStarted}, trials are limited by the
        outcomes judged.
        """
        breaker, clock = halfOpenBreaker(halfOpenRequests=3, successRateToClose=50.0)
        breaker.record(True)
        breaker.record(False)
        self.assertTrue(breaker.allows())

    def test_lostTrialFreesSlot(self) -> None:
        """
        A trial whose outcome never comes frees its slot C{openTimeout}
        after it started, so half-open cannot stay shut for ever.
        """
        breaker, clock = halfOpenBreaker(halfOpenRequests=1, openTimeout=10.0)
        breaker.requestStarted()
        clock.advance(9.999)
        self.assertFalse(breaker.allows())
        clock.advance(0.001)
        self.assertTrue(breaker.allows())

    def test_failureReopens(self) -> None:
        """
        With C{successRateToClose} at 100 %, one failure in half-open opens
        it again at once, for another C{openTimeout}.
        """
        breaker, clock = halfOpenBreaker(
            openTimeout=10.0, halfOpenRequests=5, successRateToClose=100.0
        )
        clock.advance(2.0)
        self.assertEqual(recordAll(breaker, "ssf"), [HALF_OPEN, HALF_OPEN, OPEN])
        self.assertEqual(breaker.since, 12.0)
        self.assertTrue(breaker.transitions[-1]["reason"].startswith("failure in half-open"))
        self.assertFalse(breaker.allows())
        self.assertEqual(breaker.retryAfter(), 10.0)
        clock.advance(10.0)
        self.assertTrue(breaker.allows())
        self.assertEqual(breaker.state, HALF_OPEN)

    def test_enoughSuccessesClose(self) -> None:
        """
        After C{halfOpenRequests} outcomes with at least
        C{successRateToClose} % successes (4 of 5 for 80 %), it closes,
        with a fresh window.
        """
        breaker, clock = halfOpenBreaker(halfOpenRequests=5, successRateToClose=80.0, minRequests=5)
        self.assertEqual(recordAll(breaker, "sfss"), [HALF_OPEN] * 4)
        self.assertEqual(recordAll(breaker, "s"), [CLOSED])
        snapshot = breaker.snapshot()
        self.assertEqual(snapshot["requests"], 0)
        self.assertEqual(snapshot["failureRate"], 0.0)
        self.assertTrue(breaker.allows())
        # The failure of the trial is not in the new window: four more
        # failures do not reach minRequests.
        self.assertEqual(recordAll(breaker, "ffff"), [CLOSED] * 4)

    def test_notEnoughSuccessesReopen(self) -> None:
        """
        When failures make C{successRateToClose} unreachable (a second
        failure of 5 trials, for 80 %), it opens again at that failure.
        """
        breaker, clock = halfOpenBreaker(halfOpenRequests=5, successRateToClose=80.0)
        self.assertEqual(recordAll(breaker, "sf"), [HALF_OPEN, HALF_OPEN])
        self.assertEqual(recordAll(breaker, "f"), [OPEN])
        self.assertIn("2 of 3 trial requests failed", breaker.transitions[-1]["reason"])


class StaleOutcomeTests(SynchronousTestCase):
    """
    In half-open only the trial requests judge the server: a request sent
    while the breaker was closed, whose outcome comes after it turned
    half-open, neither judges nor frees a trial's slot.
    """

    def makeBackend(self) -> Tuple[Backend, task.Clock]:
        clock = task.Clock()
        server = parseResource(
            "servers",
            {
                "name": "s",
                "addr": "127.0.0.1:1",
                "circuitBreaker": {
                    "failureRateToOpen": 50,
                    "minRequests": 2,
                    "window": 10,
                    "openTimeout": 5,
                    "halfOpenTrafficRate": 100,
                    "halfOpenRequests": 1,
                    "successRateToClose": 100,
                },
            },
        )
        return Backend(server, clock, Random(3)), clock

    def test_serverTrialsOnly(self) -> None:
        """
        A slow request sent before the breaker opened succeeds while the
        one trial is in flight: the breaker stays half-open, lets no second
        trial through, and the trial's failure opens it again.
        """
        backend, clock = self.makeBackend()
        self.assertTrue(backend.requestStarted())
        slowSentAt = clock.seconds()
        for _ in range(2):
            self.assertTrue(backend.requestStarted())
            backend.requestFinished(None, False, clock.seconds())
        breaker = backend.breaker
        assert breaker is not None
        self.assertEqual(breaker.state, OPEN)
        clock.advance(5)
        self.assertTrue(backend.available())
        self.assertEqual(breaker.state, HALF_OPEN)
        self.assertTrue(backend.requestStarted())
        trialSentAt = clock.seconds()
        clock.advance(1)
        backend.requestFinished(6.0, True, slowSentAt)
        self.assertEqual(breaker.state, HALF_OPEN)
        self.assertFalse(backend.available())
        self.assertEqual(
            breaker.snapshot()["trials"], {"successes": 0, "failures": 0, "inFlight": 1}
        )
        self.assertEqual(breaker.counters["ignored"], 1)
        backend.requestFinished(None, False, trialSentAt)
        self.assertEqual(breaker.state, OPEN)

    def test_apiTrialsOnly(self) -> None:
        """
        The same holds for an API's breaker: a request its filter let
        through while closed, answered once it is half-open, is no trial.
        """
        made, clock = makeFilter(
            minRequests=1,
            openTimeout=5.0,
            halfOpenTrafficRate=100.0,
            halfOpenRequests=1,
            successRateToClose=100.0,
        )
        slow = makeContext()
        self.assertIsNone(made.before(slow))
        failing = makeContext()
        self.assertIsNone(made.before(failing))
        made.after(failing, ResponseInfo(503, Headers()))
        self.assertEqual(made.breaker.state, OPEN)
        clock.advance(5)
        trial = makeContext()
        self.assertIsNone(made.before(trial))
        made.after(slow, ResponseInfo(200, Headers()))
        self.assertEqual(made.breaker.state, HALF_OPEN)
        made.after(trial, ResponseInfo(200, Headers()))
        self.assertEqual(made.breaker.state, CLOSED)


class ChangedSettingsTests(SynchronousTestCase):
    """
    A breaker whose settings change goes on from the old breaker's state
    (L{CircuitBreaker.takeOver}): a change does not close an open breaker.
    """

    def serverConfig(self, openTimeout: float, **more: Any) -> Any:
        return parseResource(
            "servers",
            {
                "name": "s",
                "addr": "127.0.0.1:1",
                "circuitBreaker": dict(
                    {"failureRateToOpen": 50, "minRequests": 2, "openTimeout": openTimeout},
                    **more,
                ),
            },
        )

    def test_serverStaysOpen(self) -> None:
        """
        A server whose breaker is open stays out of rotation when its
        breaker's settings change: until the new C{openTimeout} after it
        opened, then half-open; its transitions and counters go on.
        """
        clock = task.Clock()
        backend = Backend(self.serverConfig(30), clock, Random(1))
        for _ in range(2):
            self.assertTrue(backend.requestStarted())
            backend.requestFinished(None, False, clock.seconds())
        old = backend.breaker
        assert old is not None
        self.assertEqual(old.state, OPEN)
        clock.advance(5)
        backend.configure(self.serverConfig(10, halfOpenTrafficRate=100))
        breaker = backend.breaker
        assert breaker is not None
        self.assertIsNot(breaker, old)
        self.assertEqual((breaker.state, breaker.since), (OPEN, 0.0))
        self.assertFalse(backend.available())
        self.assertEqual(breaker.counters, old.counters)
        self.assertEqual(list(breaker.transitions), list(old.transitions))
        self.assertEqual(breaker.retryAfter(), 5.0)
        clock.advance(5)
        self.assertTrue(backend.available())
        self.assertEqual(breaker.state, HALF_OPEN)

    def test_ejectionSurvivesChange(self) -> None:
        """
        A server that passive health checks ejected stays ejected when
        their settings change (for the time it was given), and is back at
        once when they are removed.
        """

        def config(passive: Any) -> Any:
            return parseResource(
                "servers", {"name": "s", "addr": "127.0.0.1:1", "passiveHealth": passive}
            )

        clock = task.Clock()
        backend = Backend(config({"consecutiveFailures": 2, "ejectTime": 60}), clock)
        for _ in range(2):
            self.assertTrue(backend.requestStarted())
            backend.requestFinished(None, False, clock.seconds())
        self.assertEqual(backend.unavailableReason(), "ejected")
        backend.configure(config({"consecutiveFailures": 3, "ejectTime": 30}))
        self.assertEqual(backend.unavailableReason(), "ejected")
        clock.advance(59)
        self.assertFalse(backend.available())
        backend.configure(config(None))
        self.assertTrue(backend.available())

    def test_halfOpenJudgesAnew(self) -> None:
        """
        A half-open breaker stays half-open under new settings; the trial
        in flight keeps its slot, and the new C{halfOpenRequests} decide.
        """
        old, clock = halfOpenBreaker(halfOpenRequests=5)
        old.requestStarted()
        recordAll(old, "ss")
        new = CircuitBreaker(
            CircuitBreakerConfig(halfOpenRequests=1, halfOpenTrafficRate=100.0), clock, Random(2)
        )
        new.takeOver(old)
        self.assertEqual(new.state, HALF_OPEN)
        self.assertEqual(new.snapshot()["trials"], {"successes": 0, "failures": 0, "inFlight": 0})
        self.assertTrue(new.allows())
        new.requestStarted()
        self.assertFalse(new.allows())
        new.record(True, clock.seconds())
        self.assertEqual(new.state, CLOSED)

    def test_closedStartsAnew(self) -> None:
        """
        A closed breaker's new settings start a new window.
        """
        old, clock = makeBreaker(minRequests=4)
        recordAll(old, "fff")
        new = CircuitBreaker(CircuitBreakerConfig(minRequests=4), clock, Random(2))
        new.takeOver(old)
        self.assertEqual(recordAll(new, "f"), [CLOSED])
        self.assertEqual(new.counters["failures"], 4)

    def test_apiStaysOpen(self) -> None:
        """
        An API whose breaker is open keeps answering 503 when its breaker's
        settings change (the snapshot gives the new filter the old one).
        """
        made, clock = makeFilter(minRequests=1, openTimeout=30.0)
        context = makeContext()
        self.assertIsNone(made.before(context))
        made.after(context, ResponseInfo(503, Headers()))
        self.assertEqual(made.breaker.state, OPEN)
        api = parseResource(
            "apis",
            {
                "name": "orders",
                "urlPattern": "/x",
                "nodes": [{"cluster": "c"}],
                "circuitBreaker": {"minRequests": 1, "openTimeout": 20.0},
            },
        )
        new = makeAPIBreakerFilter(api, clock, Random(3), previous=made)
        assert new is not None
        answer = new.before(makeContext())
        assert answer is not None
        self.assertEqual(answer.code, 503)


class RecordsTests(SynchronousTestCase):
    """
    Transitions are kept, logged and reported.
    """

    def test_transitionsAndCallback(self) -> None:
        """
        Every transition is kept with its time and reason, passed to
        C{onTransition} and logged as a structured event.
        """
        calls: List[Tuple[Any, ...]] = []
        clock = task.Clock()
        config = CircuitBreakerConfig(
            minRequests=2,
            openTimeout=5.0,
            halfOpenTrafficRate=100.0,
            halfOpenRequests=1,
        )
        breaker = CircuitBreaker(
            config, clock, Random(1), name="server/a", onTransition=lambda *a: calls.append(a)
        )
        with capturedLogs() as events:
            clock.advance(1.0)
            recordAll(breaker, "ff")
            clock.advance(5.0)
            breaker.allows()
            recordAll(breaker, "s")
        self.assertEqual(
            [(t["at"], t["from"], t["to"]) for t in breaker.transitions],
            [(1.0, CLOSED, OPEN), (6.0, OPEN, HALF_OPEN), (6.0, HALF_OPEN, CLOSED)],
        )
        self.assertEqual(
            breaker.transitions[0]["reason"], "2 of 2 requests failed in 10s (threshold 50%)"
        )
        self.assertEqual(
            [c[1:3] for c in calls],
            [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)],
        )
        self.assertIs(calls[0][0], breaker)
        self.assertEqual(calls[0][3], breaker.transitions[0]["reason"])
        logged = [e for e in events if e.get("log_format", "").startswith("circuit ")]
        self.assertEqual(
            [(e["name"], e["from"], e["to"]) for e in logged],
            [
                ("server/a", CLOSED, OPEN),
                ("server/a", OPEN, HALF_OPEN),
                ("server/a", HALF_OPEN, CLOSED),
            ],
        )
        self.assertEqual(breaker.counters["opened"], 1)

    def test_transitionsBounded(self) -> None:
        """
        Only the last 50 transitions are kept.
        """
        breaker, clock = makeBreaker(
            minRequests=1, openTimeout=1.0, halfOpenTrafficRate=100.0, successRateToClose=100.0
        )
        for _ in range(40):
            recordAll(breaker, "f")  # closed -> open, or half-open -> open
            clock.advance(1.0)
            breaker.allows()  # open -> half-open
        self.assertEqual(len(breaker.transitions), 50)
        self.assertEqual(breaker.transitions[-1]["to"], HALF_OPEN)

    def test_brokenCallback(self) -> None:
        """
        A callback that raises is logged; the transition still happens.
        """

        def broken(*args: Any) -> None:
            raise RuntimeError("boom")

        clock = task.Clock()
        breaker = CircuitBreaker(CircuitBreakerConfig(minRequests=1), clock, onTransition=broken)
        with capturedLogs() as events:
            breaker.record(False)
        self.assertEqual(breaker.state, OPEN)
        self.assertEqual(len([e for e in events if "log_failure" in e]), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_snapshot(self) -> None:
        """
        The stats show the state, its start, the window's failure rate and
        size, and the transitions.
        """
        breaker, clock = makeBreaker(minRequests=10)
        clock.advance(2.0)
        recordAll(breaker, "ssfs")
        self.assertEqual(
            breaker.snapshot(),
            {
                "state": CLOSED,
                "since": 0.0,
                "failureRate": 25.0,
                "requests": 4,
                "transitions": [],
                "counters": {"successes": 3, "failures": 1, "ignored": 0, "opened": 0},
            },
        )


def makeContext(apiName: str = "orders") -> Exchange:
    """
    @return: a request context for an API named C{apiName}.
    """
    config = parseResource(
        "apis", {"name": apiName, "urlPattern": "/x", "nodes": [{"cluster": "c"}]}
    )
    api = CompiledAPI(config, None, (), (), ())
    return Exchange(None, None, api, {}, "127.0.0.1", 0.0, Headers())


def makeFilter(**settings: Any) -> Tuple[APIBreakerFilter, task.Clock]:
    """
    @return: an API breaker filter with the given settings, and its clock.
    """
    api = parseResource(
        "apis",
        {
            "name": "orders",
            "urlPattern": "/x",
            "nodes": [{"cluster": "c"}],
            "circuitBreaker": settings,
        },
    )
    clock = task.Clock()
    made = makeAPIBreakerFilter(api, clock, Random(3))
    assert made is not None
    return made, clock


class APIBreakerFilterTests(SynchronousTestCase):
    """
    The circuit-breaker filter guards a whole API.
    """

    def test_interface(self) -> None:
        """
        It is an L{IFilter} named C{circuit-breaker}, named C{api/NAME}
        in logs.
        """
        made, _ = makeFilter()
        self.assertTrue(verifyObject(IFilter, made))
        self.assertEqual(made.name, "circuit-breaker")
        self.assertEqual(made.breaker.name, "api/orders")

    def test_noBreakerConfigured(self) -> None:
        """
        An API without C{circuitBreaker} gets no filter.
        """
        api = parseResource("apis", {"name": "a", "urlPattern": "/x", "nodes": [{"cluster": "c"}]})
        self.assertIsNone(makeAPIBreakerFilter(api, task.Clock(), Random()))

    def test_opensOnFailureStatuses(self) -> None:
        """
        Answers with a failure status count as failures, others as
        successes; once open it answers 503 with Retry-After (seconds until
        half-open, rounded up) and the API's name.
        """
        made, clock = makeFilter(minRequests=3, openTimeout=30.0, failureStatuses=[500, 503])
        for code in (200, 500, 404, 503):
            context = makeContext()
            self.assertIsNone(made.before(context))
            self.assertIn(made, context.attributes)
            made.after(context, ResponseInfo(code, Headers()))
        # 2 of 4 failed.
        self.assertEqual(made.breaker.state, OPEN)
        clock.advance(10.5)
        context = makeContext()
        answer = made.before(context)
        self.assertIsInstance(answer, EarlyResponse)
        self.assertEqual(answer.code, 503)
        self.assertEqual(answer.body, {"error": "circuit open", "api": "orders"})
        self.assertEqual(answer.headers, {b"retry-after": [b"20"]})
        self.assertNotIn(made, context.attributes)
        # The refused request's own 503 passes after() and is not recorded.
        made.after(context, ResponseInfo(503, Headers()))
        self.assertEqual(made.breaker.counters["ignored"], 0)

    def test_errorRecordedOnce(self) -> None:
        """
        An upstream failure is recorded once: by C{error}, and not again by
        C{after} when the gateway's error answer passes it.
        """
        made, _ = makeFilter(minRequests=100)
        context = makeContext()
        made.before(context)
        made.error(context, Failure(UpstreamTimeout("slow")))
        made.after(context, ResponseInfo(504, Headers()))
        snapshot = made.breaker.snapshot()
        self.assertEqual(snapshot["requests"], 1)
        self.assertEqual(snapshot["failureRate"], 100.0)

    def test_earlyAnswerOfLaterFilterOnce(self) -> None:
        """
        A request it let through is recorded once even when nothing went
        upstream (a later filter answered): by the status of that answer.
        """
        made, _ = makeFilter(minRequests=100)
        context = makeContext()
        made.before(context)
        made.after(context, ResponseInfo(429, Headers()))
        made.after(context, ResponseInfo(429, Headers()))
        self.assertEqual(made.breaker.snapshot()["requests"], 1)
        self.assertEqual(made.breaker.counters["successes"], 1)

    def test_halfOpenTrialsCounted(self) -> None:
        """
        In half-open each request it lets through takes a trial slot; a
        trial's success closes it.
        """
        made, clock = makeFilter(
            minRequests=1, openTimeout=1.0, halfOpenTrafficRate=100.0, halfOpenRequests=1
        )
        context = makeContext()
        made.before(context)
        made.after(context, ResponseInfo(502, Headers()))
        self.assertEqual(made.breaker.state, OPEN)
        clock.advance(1.0)
        trial = makeContext()
        self.assertIsNone(made.before(trial))
        self.assertEqual(made.breaker.state, HALF_OPEN)
        refused = made.before(makeContext())
        self.assertEqual(refused.code, 503)
        self.assertEqual(refused.headers, {b"retry-after": [b"1"]})
        made.after(trial, ResponseInfo(200, Headers()))
        self.assertEqual(made.breaker.state, CLOSED)
