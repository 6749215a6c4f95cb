"""
Password verification for C{basic} credentials: bcrypt off the reactor
thread, results cached briefly.

A bcrypt verification costs tens of milliseconds by design, far too much
for every request.  L{PasswordVerifier} remembers, per worker, the outcome
of recent verifications (right or wrong) for L{CACHE_TTL} seconds, in a
bounded least-recently-used cache of L{CACHE_SIZE} entries.  An entry is
keyed by a SHA-256 over a random per-process salt, the stored hash, the
user name and the password presented: the cache holds no password, and a
changed password (a new stored hash) misses it.  At most L{MAX_PENDING}
verifications run at once; beyond that a request is refused (503) rather
than queued behind a flood of wrong passwords.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from typing import Any, Callable, Optional, Tuple, Union

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger

from gateway.model.secrets import checkPassword

log = Logger()

#: How long a verification's outcome is remembered, in seconds.
CACHE_TTL = 60.0

#: How many outcomes are remembered at most.
CACHE_SIZE = 4096

#: How many bcrypt verifications may run at once (per worker).
MAX_PENDING = 32


class TooBusy(Exception):
    """
    Too many verifications are running: the request is refused (503).
    """


def _inThreads(reactor: Any) -> Callable[..., Deferred]:
    from twisted.internet.threads import deferToThreadPool

    def run(f: Callable[..., Any], *args: Any) -> Deferred:
        return deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)

    return run


class PasswordVerifier:
    """
    Verifies presented passwords against stored bcrypt hashes.
    """

    def __init__(
        self,
        reactor: Any,
        runInThread: Optional[Callable[..., Deferred]] = None,
        ttl: float = CACHE_TTL,
        size: int = CACHE_SIZE,
        maxPending: int = MAX_PENDING,
    ) -> None:
        """
        @param reactor: the L{IReactorTime} entries expire by.
        @param runInThread: C{runInThread(f, *args)} runs C{f} off the
            reactor thread and returns a Deferred of its result; by
            default the reactor's thread pool (made when first used).
        """
        self._reactor = reactor
        self._run = runInThread
        self._ttl = ttl
        self._size = max(1, size)
        self._maxPending = maxPending
        self._salt = os.urandom(16)
        self._cache: OrderedDict[bytes, Tuple[bool, float]] = OrderedDict()
        self._pending: dict[bytes, Deferred] = {}
        #: How many bcrypt verifications ran (for tests and stats).
        self.verifications = 0

    def _key(self, username: str, password: bytes, hashed: str) -> bytes:
        h = hashlib.sha256(self._salt)
        h.update(hashed.encode("ascii"))
        h.update(b"\0")
        h.update(username.encode("utf-8"))
        h.update(b"\0")
        h.update(password)
        return h.digest()

    def verify(self, username: str, password: bytes, hashed: str) -> Union[bool, Deferred]:
        """
        @return: whether C{password} matches C{hashed}: at once when the
            outcome is cached, else a Deferred firing with it (failing
            with L{TooBusy} when too many verifications run).
        """
        key = self._key(username, password, hashed)
        cache = self._cache
        hit = cache.get(key)
        now = self._reactor.seconds()
        if hit is not None:
            if hit[1] > now:
                cache.move_to_end(key)
                return hit[0]
            del cache[key]
        pending = self._pending.get(key)
        if pending is not None:
            return _follow(pending)
        if len(self._pending) >= self._maxPending:
            return _refused()
        run = self._run
        if run is None:
            run = self._run = _inThreads(self._reactor)
        self.verifications += 1
        d = run(checkPassword, password, hashed)
        self._pending[key] = d
        d.addBoth(self._verified, key)
        return _follow(d)

    def _verified(self, result: Any, key: bytes) -> Any:
        del self._pending[key]
        if isinstance(result, bool):
            self._remember(key, result)
        else:
            log.failure("password verification failed", result)
            result = False
        return result

    def _remember(self, key: bytes, ok: bool) -> None:
        cache = self._cache
        cache[key] = (ok, self._reactor.seconds() + self._ttl)
        cache.move_to_end(key)
        while len(cache) > self._size:
            cache.popitem(last=False)


def _follow(d: Deferred) -> Deferred:
    """
    @return: a Deferred of C{d}'s result that can be cancelled (a client
        gone) without cancelling C{d}, which others may wait on.
    """
    follower: Deferred = Deferred()

    def passOn(result: Any) -> Any:
        if not follower.called:
            follower.callback(result)
        return result

    d.addBoth(passOn)
    return follower


def _refused() -> Deferred:
    return fail(TooBusy())
