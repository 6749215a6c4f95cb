"""
Leases: how a proxy process spends a bucket that lives in Redis without a
round trip per request.

The fleet's bucket of a limit (rate M{r} tokens a second, M{burst} tokens)
lives in Redis, and a script there decides atomically
(L{gateway.protection.redisbuckets.LEASE_SCRIPT}).  A proxy process does not
ask it for every request: it takes a few tokens at a time, a I{lease}, and
spends them locally.  One L{Lease} is what one process holds of one bucket
(one limit, one key) and what it last heard of it.

The rules, for a request that wants a token:

  1. A token in hand (C{held}) is spent.  When fewer than half of the
     lease's target are left, the next lease is asked for ahead of need.
  2. With none in hand, when the last answer said the bucket in Redis was
     empty (C{trusted} false), the request is refused until the moment
     that answer named (C{deniedUntil}: when the bucket holds a lease
     again); then the next request asks for a lease, and is refused.
  3. With none in hand, when the last answer said the bucket still held a
     token (or there was no answer yet), the request is admitted on
     I{credit}, and the next call charges that token to the bucket
     unconditionally (C{debt}).  An answer saying the bucket holds M{L >=
     1} tokens allows credit up to M{L}, at most the largest lease, less
     what is still owed (C{creditLeft}); an answer saying it is empty
     allows none; before any answer, the largest lease.  So a process
     whose lease runs out while the next one is on its way goes on
     admitting while the bucket is far from empty, and what it owes stays
     within the largest lease.
  4. Tokens a process holds and does not spend for C{returnAfter} seconds
     go back to the bucket; a failed call loses the tokens it was giving
     back (Redis may have taken them) and owes its debt again (Redis may
     have charged it: the worst case is charging twice, never not at all).

A lease's size follows the process's own demand: the tokens it asked for
in the last interval, per second, capped at the limit's rate, times
C{leaseTime} (0.02 s by default), at least 1 and at most C{burst}.

The bound.  Say W processes share a bucket; M{H} is the most tokens they
hold at once, and M{K} the sum of their credit allowances (each at most
the largest lease, M{max(1, min(burst, rate * leaseTime))}).  Over any
interval of length M{t} the fleet admits at most::

    burst + rate * t + H + 2 * K   (<= burst + rate * t + 3 * W * the largest lease)

Why: the bucket in Redis takes grants and charges, and gets tokens back
from returns; as a token bucket it lets at most M{burst + rate * t - L}
net tokens go in the interval, where M{L} is its level at the end.  The
requests admitted in the interval used tokens held at its start (at most
M{H}), tokens granted in it and not given back, and credits: those
charged in it (in the net count) and those not charged yet (at most
M{K}: what a process owes plus what it may still take on credit never
passes its allowance).  Only a charge takes the bucket below zero; while
it holds less than a token every answer says so and allows no credit, so
what is charged in such a stretch was owed or allowed before it: M{L >=
-K}.

So the slack is M{H + 2K}, at most three of the largest lease per process
(with the default C{leaseTime} of 0.02 s: 3 tokens per process for a
limit under 50/s, 60 for 1,000/s).  What is actually taken beyond the
limit shrinks with traffic: leases follow each process's own demand (a
process that went quiet holds nothing after C{returnAfter} seconds), and
credit is used only by requests that arrive while a lease is on its way,
up to the tokens the bucket last said it held.  W counts the processes
that sent requests for the bucket recently.

(A key dropped from a process's table of keys, when more than C{maxKeys}
are in use, starts afresh with its one token of credit.)
"""

from __future__ import annotations

import math
from typing import Tuple

__all__ = ["Lease", "leaseSize"]


def leaseSize(demand: float, rate: float, burst: float, leaseTime: float) -> int:
    """
    @param demand: the process's requests per second for the bucket.
    @return: how many tokens a lease holds: the demand of C{leaseTime}
        seconds, the demand capped at C{rate}, at least 1 and at most
        C{burst}.
    """
    size = math.ceil(min(demand, rate) * leaseTime - 1e-9)
    return max(1, min(size, int(burst)))


class Lease:
    """
    What one process holds of one shared bucket, and what it knows of it
    (see the module's documentation).  The decisions take the time as an
    argument: the owner reads its clock.

    @ivar held: tokens in hand.
    @ivar debt: tokens admitted on credit and not yet charged (or whose
        charge was not answered).
    @ivar creditLeft: tokens that may still be admitted on credit, on the
        strength of the last answer.
    @ivar trusted: whether the last answer said the bucket held a token
        after it (or there was none yet).
    @ivar deniedUntil: when an untrusted bucket holds a lease again, by
        the last answer.
    @ivar fetching: whether a call is on its way.
    @ivar demand: requests per second, a moving estimate.
    @ivar lastUse: when a token was last spent or refused.
    @ivar level: the tokens the bucket held after the last answer (may be
        negative), and C{answeredAt} when that was.
    """

    __slots__ = (
        "rate",
        "burst",
        "leaseTime",
        "held",
        "debt",
        "creditLeft",
        "trusted",
        "deniedUntil",
        "largest",
        "fetching",
        "demand",
        "lastUse",
        "level",
        "answeredAt",
        "_asks",
        "_since",
        "_sentDebt",
        "_want",
    )

    def __init__(self, rate: float, burst: float, leaseTime: float, now: float) -> None:
        self.rate = float(rate)
        self.burst = float(burst)
        self.leaseTime = leaseTime
        self.held = 0
        self.debt = 0
        #: The largest lease: at full demand.
        self.largest = leaseSize(math.inf, rate, burst, leaseTime)
        self.creditLeft = self.largest
        self.trusted = True
        self.deniedUntil = 0.0
        self.fetching = False
        self.demand = 0.0
        self.lastUse = now
        self.level = float(burst)
        self.answeredAt = now
        self._asks = 0
        self._since = now
        self._sentDebt = 0
        self._want = 0

    def __repr__(self) -> str:
        return (
            f"<Lease held={self.held} debt={self.debt} trusted={self.trusted}"
            f" fetching={self.fetching} demand={self.demand:.1f}>"
        )

    # -- deciding ---------------------------------------------------------------

    def target(self) -> int:
        """
        @return: the tokens a lease should hold now.
        """
        return leaseSize(self.demand, self.rate, self.burst, self.leaseTime)

    def take(self, now: float, n: int = 1) -> Tuple[bool, bool]:
        """
        A request wants C{n} tokens.

        @return: C{(admitted, fetch)}: whether it may go, and whether the
            owner should ask for a lease now (L{request}).
        """
        self._asks += n
        self.lastUse = now
        if self.held >= n:
            self.held -= n
            return True, self._shouldRefill(now)
        if not self.trusted:
            if now < self.deniedUntil:
                return False, False
            return False, not self.fetching
        if self.creditLeft >= n:
            self.creditLeft -= n
            self.debt += n
            return True, not self.fetching
        # Owing all it may: the answer to the charge decides what comes next.
        return False, not self.fetching

    def allows(self, now: float, n: int = 1) -> Tuple[bool, bool]:
        """
        Whether L{take} would admit C{n} tokens now (nothing is taken).

        @return: C{(allowed, fetch)}; C{fetch} when an empty bucket's
            refusal ran out (so that a caller that asks and never takes,
            such as a balancer skipping a server, still gets the bucket
            asked again).
        """
        if self.held >= n:
            return True, False
        if not self.trusted:
            if now < self.deniedUntil:
                return False, False
            self.lastUse = now
            return False, not self.fetching
        return self.creditLeft >= n, False

    def _shouldRefill(self, now: float) -> bool:
        if self.fetching:
            return False
        if not self.trusted and now < self.deniedUntil:
            return False
        return self.held * 2 < self.target()

    def retryAfter(self, now: float, n: int = 1, pending: float = 0.005) -> float:
        """
        @param pending: what to say while the answer of a call is awaited.
        @return: seconds until C{n} tokens may be there (an estimate: other
            processes spend the same bucket).
        """
        allowed, _ = self.allows(now, n)
        if allowed:
            return 0.0
        if not self.trusted and now < self.deniedUntil:
            return self.deniedUntil - now
        return pending

    def estimate(self, now: float) -> float:
        """
        @return: the tokens there might be for this process now: those in
            hand, and those the bucket held at the last answer plus what it
            gained since (other processes may have spent them).
        """
        shared = min(self.burst, self.level + (now - self.answeredAt) * self.rate)
        return min(self.burst, self.held + max(0.0, shared))

    # -- asking Redis -------------------------------------------------------------

    def request(self, now: float, give: bool = False) -> Tuple[int, int, int]:
        """
        The owner is about to call Redis for this lease.

        @param give: give back every token in hand (it sat unused), asking
            for none.
        @return: C{(want, debt, back)}: the tokens to ask for, to charge,
            and to give back.
        """
        elapsed = now - self._since
        if elapsed > 0.001:
            measured = self._asks / elapsed
            self.demand = measured if self.demand == 0.0 else (self.demand + measured) / 2
            self._asks = 0
            self._since = now
        self.fetching = True
        debt = self.debt
        self._sentDebt = debt
        if give:
            back, self.held = self.held, 0
            want = 0
        else:
            back = 0
            want = max(0, self.target() - self.held)
        self._want = want
        return want, debt, back

    def answered(self, now: float, granted: int, level: float, wait: float) -> bool:
        """
        Redis answered the call L{request} prepared.

        @param granted: the tokens it granted.
        @param level: the tokens the bucket held after the call.
        @param wait: seconds until it holds the lease asked for (or a
            token), 0 when it does.
        @return: whether the owner should call again at once (a debt
            taken on credit meanwhile).
        """
        self.fetching = False
        self.debt -= self._sentDebt
        self._sentDebt = 0
        self.held += granted
        self.level = level
        self.answeredAt = now
        self.trusted = level >= 1.0
        if self.trusted:
            self.creditLeft = max(0, min(self.largest, math.floor(level)) - self.debt)
        else:
            self.creditLeft = 0
            self.deniedUntil = now + wait
        return self.debt > 0

    def failed(self, now: float) -> None:
        """
        The call L{request} prepared failed: the debt is owed again, the
        tokens given back are gone.
        """
        self.fetching = False
        self._sentDebt = 0

    def idle(self, now: float, returnAfter: float) -> bool:
        """
        @return: whether this lease holds tokens unused for C{returnAfter}
            seconds (to give back).
        """
        return self.held > 0 and not self.fetching and now - self.lastUse >= returnAfter

    def settled(self) -> bool:
        """
        @return: whether nothing is held, owed or on its way.
        """
        return self.held == 0 and self.debt == 0 and not self.fetching
