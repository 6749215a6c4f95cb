"""
The C{ip-access} filter: an API's C{ipAccess} allow and deny lists, over
the address ranges of L{gateway.protection.ipaccess}; a refused client gets
C{403}.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Optional, Sequence

from zope.interface import implementer

from gateway.interfaces import IFilter
from gateway.pipeline.exchange import EarlyResponse
from gateway.protection.ipaccess import CACHE_SIZE, _split, parseAddress


@implementer(IFilter)
class IPAccessFilter:
    """
    Answers C{403} to clients whose address the API's C{allow} and C{deny}
    lists keep out (see the module docstring for the rules).

    Decisions are remembered per address string in a least-recently-used
    cache of C{cacheSize} entries: parsing an address costs more than the
    lookup itself.
    """

    name = "ip-access"

    def __init__(
        self, allow: Sequence[str] = (), deny: Sequence[str] = (), cacheSize: int = CACHE_SIZE
    ) -> None:
        """
        @param allow: networks (CIDR) or addresses let in; empty for all.
        @param deny: networks or addresses kept out, whatever C{allow} says.
        @raise ValueError: for an entry that is not a network or an address.
        """
        self._allow4, self._allow6 = _split(allow)
        self._deny4, self._deny6 = _split(deny)
        self._hasAllow = bool(allow)
        self._cacheSize = max(1, cacheSize)
        self._cache: OrderedDict[str, bool] = OrderedDict()

    def __repr__(self) -> str:
        return (
            f"<IPAccessFilter allow={len(self._allow4) + len(self._allow6)} ranges"
            f" deny={len(self._deny4) + len(self._deny6)} ranges>"
        )

    def _decide(self, address: str) -> bool:
        ip = parseAddress(address)
        if ip is None:
            return not self._hasAllow
        value = int(ip)
        if ip.version == 4:
            allow, deny = self._allow4, self._deny4
        else:
            allow, deny = self._allow6, self._deny6
        if value in deny:
            return False
        return not self._hasAllow or value in allow

    def allows(self, address: str) -> bool:
        """
        @param address: the client's address, as text.
        @return: whether it may call the API.
        """
        cache = self._cache
        decision = cache.get(address)
        if decision is not None:
            cache.move_to_end(address)
            return decision
        decision = self._decide(address)
        cache[address] = decision
        if len(cache) > self._cacheSize:
            cache.popitem(last=False)
        return decision

    # -- IFilter ----------------------------------------------------------------

    def before(self, context: Any) -> Optional[EarlyResponse]:
        if self.allows(context.clientIP):
            return None
        return EarlyResponse.error(403, "access denied")

    def after(self, context: Any, response: Any) -> None:
        return None

    def error(self, context: Any, failure: Any) -> None:
        return None


def makeIPAccessFilter(ipAccess: Any) -> Optional[IPAccessFilter]:
    """
    @param ipAccess: a L{gateway.model.resources.IPAccess}, or L{None}.
    @return: the filter, or L{None} when there is nothing to check.
    """
    if ipAccess is None or (not ipAccess.allow and not ipAccess.deny):
        return None
    return IPAccessFilter(ipAccess.allow, ipAccess.deny)
