"""
What the gateway asks of the Python it runs on.

On PyPy, the size of the garbage collector's nursery (where new objects
are made, collected when it is full) decides much of a proxy's speed.  A
busy proxy holds the objects of every request in flight (tens of
kilobytes each, times the connections); PyPy's default nursery (1 MB, or
its L2 cache's size) is about as large, so each minor collection finds most
of them still alive and copies them into the old generation, where a major
collection must free them again.  With a nursery well above that working
set (L{PYPY_NURSERY}) they die young, where dying costs nothing: measured
with C{bench/profile_proxy.py} on PyPy 7.3 (Python 3.9), 50 connections,
the CPU per proxied request fell from 83-107 µs to 42-53 µs (8 to 64 MB
all do; 32 MB did best).  It costs that much more memory per process.

PyPy reads the size from C{PYPY_GC_NURSERY} when it starts, and has no way
to change it later: the gateway sets it for the worker processes it
starts (L{processEnvironment}), and a gateway that serves in its own
process logs how to set it when it is not (L{nurseryAdvice}).

CPython's cycle collector has the same kind of cost, smaller: it runs its
youngest generation whenever 700 more container objects were made than
freed, which the requests in flight alone amount to, and finds them alive
each time, then again in the next generation.  The gateway's processes
raise that threshold to L{GC_THRESHOLD} (L{tuneGC}), above what the
requests in flight hold; and a proxied request leaves no reference cycle
(a test holds it to that), so that reference counting frees all of it and
the count falls back.  Measured in a gateway under C{wrk -c50} for 8 s:
with the default threshold, 898 collections took 5 % of its CPU; with
L{GC_THRESHOLD}, none ran (before the last cycle was broken: 54, 6 %).
A/B with C{bench/profile_proxy.py}, 5 alternating rounds, threshold
alone: 8 % less CPU per proxied request.
"""

from __future__ import annotations

import gc
import platform
from contextlib import contextmanager
from typing import Any, Dict, Iterator, Mapping, Optional

__all__ = [
    "GC_THRESHOLD",
    "PYPY",
    "PYPY_NURSERY",
    "nurseryAdvice",
    "collectorPaused",
    "settleCollector",
    "processEnvironment",
    "tuneGC",
]


#: Whether this is PyPy.
PYPY = platform.python_implementation() == "PyPy"


#: The nursery the gateway asks of PyPy, as C{PYPY_GC_NURSERY} takes it.
PYPY_NURSERY = "32MB"


_VARIABLE = "PYPY_GC_NURSERY"


def processEnvironment(environ: Mapping[str, str], pypy: bool = PYPY) -> Dict[str, str]:
    """
    @param environ: this process's environment.
    @param pypy: whether the process to start is PyPy (it runs the same
        interpreter as this one).
    @return: the environment of a gateway process to start: C{environ},
        with C{PYPY_GC_NURSERY} on PyPy unless it is set already.
    """
    env = dict(environ)
    if pypy:
        env.setdefault(_VARIABLE, PYPY_NURSERY)
    return env


def nurseryAdvice(environ: Mapping[str, str], pypy: bool = PYPY) -> Optional[str]:
    """
    @return: what to tell the operator of a gateway serving in this
        process, on PyPy without C{PYPY_GC_NURSERY}; L{None} otherwise.
    """
    if not pypy or environ.get(_VARIABLE):
        return None
    return (
        f"PyPy runs this gateway with its default GC nursery, about half as fast as "
        f"with a larger one: start it with {_VARIABLE}={PYPY_NURSERY} in its environment "
        f"(its workers get that by themselves)"
    )


#: The first-generation threshold of CPython's cycle collector in the
#: gateway's processes.
GC_THRESHOLD = 20_000


def tuneGC(collector: object = gc) -> bool:
    """
    Raise the first-generation threshold of CPython's cycle collector to
    L{GC_THRESHOLD}, unless it is higher already or the collector is off
    (a threshold of 0); nothing on PyPy, whose collector has no thresholds.

    @param collector: the C{gc} module (a test gives another).
    @return: whether the threshold was changed.
    """
    getThreshold = getattr(collector, "get_threshold", None)
    setThreshold = getattr(collector, "set_threshold", None)
    if getThreshold is None or setThreshold is None:
        return False
    first, *older = getThreshold()
    if first == 0 or first >= GC_THRESHOLD:
        return False
    setThreshold(GC_THRESHOLD, *older)
    return True


@contextmanager
def collectorPaused(collector: Any = gc) -> Iterator[None]:
    """
    Pause the cycle collector while the configuration is read and compiled:
    what is made then lives on, and a collector running meanwhile would go
    over it again and again.  With 10,000 APIs that was 1.3 s of a 6.6 s
    start.  A collector already off stays off.

    @param collector: the C{gc} module (a test gives another).
    """
    enabled = collector.isenabled()
    collector.disable()
    try:
        yield
    finally:
        if enabled:
            collector.enable()


def settleCollector(collector: Any = gc, pypy: bool = PYPY) -> bool:
    """
    Put what lives now out of the cycle collector's way, after a large
    configuration was loaded or changed: freeze it (C{gc.freeze}: the
    objects alive now are no longer looked at by any collection).

    The collector's oldest generation is collected whenever a quarter
    more objects than it holds have survived a younger one, and each such
    collection goes over every object the process holds.  With 10,000
    APIs that is about 750,000 objects, 250 to 450 ms every few seconds
    of a busy proxy (the objects of the requests in flight survive young
    collections): whatever waits meanwhile (a change to serve) waits that
    long.  Frozen, the configuration costs the collector nothing.  What
    is frozen is still freed by reference counting when it goes; only a
    reference cycle among frozen objects would stay, and the
    configuration leaves next to none (30 objects after loading 10,000
    APIs, none after changes): collecting first would cost a whole
    collection for them.  Nothing on PyPy, whose collector has no
    generations to freeze.

    @param collector: the C{gc} module (a test gives another).
    @param pypy: whether this is PyPy.
    @return: whether the collector was settled.
    """
    freeze = getattr(collector, "freeze", None)
    if freeze is None or pypy:
        return False
    freeze()
    return True
