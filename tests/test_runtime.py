"""
L{gateway.process.interpreter}: the PyPy GC nursery the gateway asks for.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gateway.process.interpreter import (
    GC_THRESHOLD,
    PYPY_NURSERY,
    collectorPaused,
    nurseryAdvice,
    processEnvironment,
    tuneGC,
)


class ProcessEnvironmentTests(SynchronousTestCase):
    def test_pypyGetsTheNursery(self) -> None:
        env = processEnvironment({"PATH": "/bin"}, pypy=True)
        self.assertEqual(env, {"PATH": "/bin", "PYPY_GC_NURSERY": PYPY_NURSERY})

    def test_theOperatorsChoiceKept(self) -> None:
        env = processEnvironment({"PYPY_GC_NURSERY": "8MB"}, pypy=True)
        self.assertEqual(env["PYPY_GC_NURSERY"], "8MB")

    def test_cpythonUnchanged(self) -> None:
        environ = {"PATH": "/bin"}
        env = processEnvironment(environ, pypy=False)
        self.assertEqual(env, environ)
        self.assertIsNot(env, environ)


class NurseryAdviceTests(SynchronousTestCase):
    def test_pypyWithout(self) -> None:
        advice = nurseryAdvice({}, pypy=True)
        assert advice is not None
        self.assertIn(f"PYPY_GC_NURSERY={PYPY_NURSERY}", advice)

    def test_pypyWith(self) -> None:
        self.assertIsNone(nurseryAdvice({"PYPY_GC_NURSERY": "16MB"}, pypy=True))

    def test_cpython(self) -> None:
        self.assertIsNone(nurseryAdvice({}, pypy=False))


class FakeGC:
    def __init__(self, *threshold: int) -> None:
        self.threshold = threshold

    def get_threshold(self) -> tuple:
        return self.threshold

    def set_threshold(self, *threshold: int) -> None:
        self.threshold = threshold


class TuneGCTests(SynchronousTestCase):
    def test_raised(self) -> None:
        collector = FakeGC(700, 10, 10)
        self.assertTrue(tuneGC(collector))
        self.assertEqual(collector.threshold, (GC_THRESHOLD, 10, 10))

    def test_higherKept(self) -> None:
        collector = FakeGC(50_000, 10, 10)
        self.assertFalse(tuneGC(collector))
        self.assertEqual(collector.threshold, (50_000, 10, 10))

    def test_offKept(self) -> None:
        collector = FakeGC(0, 10, 10)
        self.assertFalse(tuneGC(collector))
        self.assertEqual(collector.threshold, (0, 10, 10))

    def test_noThresholds(self) -> None:
        """
        PyPy's C{gc} has no thresholds: nothing to do.
        """
        self.assertFalse(tuneGC(object()))


class Switch:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def isenabled(self) -> bool:
        return self.enabled

    def enable(self) -> None:
        self.enabled = True

    def disable(self) -> None:
        self.enabled = False


class CollectorPausedTests(SynchronousTestCase):
    def test_pausedThenOn(self) -> None:
        """
        The collector is off inside, and on again after, also after an
        error.
        """
        collector = Switch(True)
        with collectorPaused(collector):
            self.assertFalse(collector.enabled)
        self.assertTrue(collector.enabled)
        with self.assertRaises(ValueError):
            with collectorPaused(collector):
                raise ValueError()
        self.assertTrue(collector.enabled)

    def test_offStaysOff(self) -> None:
        """
        A collector that was off stays off.
        """
        collector = Switch(False)
        with collectorPaused(collector):
            pass
        self.assertFalse(collector.enabled)
