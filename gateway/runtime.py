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
"""

from __future__ import annotations

import platform
from typing import Dict, Mapping, Optional

__all__ = ["PYPY", "PYPY_NURSERY", "nurseryAdvice", "processEnvironment"]

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
