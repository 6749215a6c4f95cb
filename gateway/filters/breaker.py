"""
The C{circuit-breaker} filter: an API's own C{circuitBreaker}, over
L{gateway.protection.breaker.CircuitBreaker}; while it is open the API
answers C{503} with C{Retry-After} at once.
"""

from __future__ import annotations

import math
import random as _random
from typing import Any, List, Optional

import attrs
from twisted.logger import Logger
from zope.interface import implementer

from gateway.interfaces import IFilter
from gateway.model.resources import API
from gateway.pipeline.exchange import EarlyResponse
from gateway.protection.breaker import CircuitBreaker

log = Logger()


def _retryAfterHeader(seconds: float) -> List[bytes]:
    return [b"%d" % (max(1, math.ceil(seconds)),)]


@implementer(IFilter)
@attrs.define(eq=False)
class APIBreakerFilter:
    """
    A circuit breaker in front of a whole API: while it is open the API
    answers C{503} with C{Retry-After} at once, without touching any server.

    Each request it let through is recorded exactly once: a failure when the
    upstream failed (its C{error} hook), else by the status of the answer
    (a failure when it is one of the breaker's C{failureStatuses}).

    @ivar breaker: the L{CircuitBreaker}.
    """

    breaker: CircuitBreaker
    name = "circuit-breaker"
    _failureStatuses: frozenset = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._failureStatuses = frozenset(self.breaker.config.failureStatuses)

    def before(self, context: Any) -> Optional[EarlyResponse]:
        breaker = self.breaker
        if not breaker.allows():
            return EarlyResponse.error(
                503,
                "circuit open",
                {b"retry-after": _retryAfterHeader(breaker.retryAfter())},
                api=context.api.name,
            )
        # Counted until recorded, once (see after and error); when it was
        # let through, for a half-open breaker to tell its trials.
        context.attributes[self] = breaker.requestStarted()
        return None

    def after(self, context: Any, response: Any) -> None:
        sentAt = context.attributes.pop(self, None)
        if sentAt is not None:
            self.breaker.record(response.code not in self._failureStatuses, sentAt)
        return None

    def error(self, context: Any, failure: Any) -> None:
        # (The gateway's own error answer passes after() next: popping the
        # mark keeps it from counting the request a second time.)
        sentAt = context.attributes.pop(self, None)
        if sentAt is not None:
            self.breaker.record(False, sentAt)
        return None


def makeAPIBreakerFilter(
    api: API,
    clock: Any,
    random: Optional[_random.Random] = None,
    previous: Optional[APIBreakerFilter] = None,
) -> Optional[APIBreakerFilter]:
    """
    @param api: the API, with its C{circuitBreaker} settings.
    @param clock: an L{IReactorTime} provider.
    @param random: the L{random.Random} for half-open draws.
    @param previous: the API's breaker filter before its settings changed:
        the new breaker goes on from its state (see
        L{CircuitBreaker.takeOver}).
    @return: the API's breaker filter, or L{None} when it has no
        C{circuitBreaker}.
    """
    if api.circuitBreaker is None:
        return None
    breaker = CircuitBreaker(api.circuitBreaker, clock, random, name=f"api/{api.name}")
    if isinstance(previous, APIBreakerFilter):
        breaker.takeOver(previous.breaker)
    return APIBreakerFilter(breaker)
