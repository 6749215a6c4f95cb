"""
DNS lookups with Twisted Names: the resolver the C{resolver:} section of
the config asks for (L{makeResolver}), and the lookups discovery makes with
it, their answers reduced to what discovery keeps (L{lookupAddresses},
L{lookupServices}).

An answer is either values with a TTL (L{Answer}: a name that does not
exist, or has no record of the type, is an answer too, with no values), or
a failure (L{LookupFailed}: no server answered in time, a server failed or
refused): discovery keeps the values it had on a failure, never on an
answer.
"""

from __future__ import annotations

import socket
from typing import Any, List, Optional, Sequence, Tuple

import attrs
from twisted.internet.defer import CancelledError, Deferred
from twisted.names import dns
from twisted.names.error import DNSNameError, DomainError
from twisted.python.failure import Failure

from gateway.discovery.records import ServiceRecord, normalName, sortRecords
from gateway.discovery.resolver import StubResolver
from gateway.model.config import ResolverConfig, parseNameserver

#: Where the system's DNS servers are listed.
RESOLV_CONF = "/etc/resolv.conf"


class LookupFailed(Exception):
    """
    No answer: every DNS server timed out, failed or refused.
    """


@attrs.frozen
class Answer:
    """
    What the DNS answered for one name.

    @ivar values: IP addresses (sorted), or L{ServiceRecord}s (in
        L{sortRecords} order); empty when the name has none.
    @ivar ttl: seconds the answer holds: the least TTL of its records, or
        for an answer without records the negative TTL its SOA record gives
        (RFC 2308); L{None} when the answer says none.
    """

    values: Tuple[Any, ...]
    ttl: Optional[float]


def systemNameservers(path: str = RESOLV_CONF) -> List[Tuple[str, int]]:
    """
    @return: the C{nameserver} addresses of a C{resolv.conf(5)} file, on
        port 53; C{127.0.0.1} when it lists none or cannot be read (what
        the C library does too).
    """
    servers = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
    except OSError:
        lines = []
    for line in lines:
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            try:
                servers.append(parseNameserver(words[1]))
            except ValueError:
                continue
    return servers or [("127.0.0.1", 53)]


def makeResolver(settings: ResolverConfig, reactor: Any) -> StubResolver:
    """
    Make the resolver discovery asks: the hosts file (unless
    C{settings.hosts} is empty), then the DNS servers of C{settings} (or
    of C{/etc/resolv.conf}), each given C{settings.timeout} seconds in
    turn.

    Reads C{/etc/resolv.conf} when C{settings} names no server: call it
    when the service starts, not when it is built.

    @param reactor: an L{IReactorTime}, L{IReactorUDP} and L{IReactorTCP}.
    """
    servers = [parseNameserver(s) for s in settings.nameservers] or systemNameservers()
    return StubResolver(servers, settings.timeout, reactor, hostsFile=settings.hosts or None)


def _ttl(value: int) -> int:
    """
    @return: a TTL as RFC 2181 8 reads it: a value with the top bit set is
        0 (not some 68 years).
    """
    return 0 if value >= 0x80000000 else value


def _negativeTTL(authority: Sequence[Any]) -> Optional[float]:
    # RFC 2308 5: a negative answer holds for the lesser of the SOA
    # record's TTL and its MINIMUM field.
    for record in authority:
        if record.type == dns.SOA:
            return float(min(_ttl(record.ttl), _ttl(record.payload.minimum)))
    return None


def _records(
    result: Any, failure: Optional[Failure], types: Tuple[int, ...]
) -> Tuple[List[Any], Optional[float]]:
    """
    The answer records of C{types} in a lookup's result, and the TTL of the
    answer.

    @raise LookupFailed: when the lookup failed without an answer.
    """
    if failure is not None:
        error = failure.value
        # A name that does not exist is an answer (NXDOMAIN); a plain
        # DomainError is a hosts file's "not here", the others (server
        # failure, refusal, format error) are DomainErrors too, and no
        # answers.
        if isinstance(error, DNSNameError) or type(error) is DomainError:
            message = error.args[0] if error.args else None
            return [], _negativeTTL(getattr(message, "authority", ()))
        raise LookupFailed(_describe(failure))
    answers, authority, _ = result
    records = [r for r in answers if r.type in types]
    if records:
        # A CNAME chain holds no longer than its shortest link.
        return records, float(min(_ttl(r.ttl) for r in answers))
    return [], _negativeTTL(authority)


def _describe(failure: Failure) -> str:
    error = failure.value
    name = type(error).__name__
    if isinstance(error, DomainError):
        return {
            "DNSServerError": "the DNS server failed (SERVFAIL)",
            "DNSQueryRefusedError": "the DNS server refused the query (REFUSED)",
            "DNSFormatError": "the DNS server could not read the query (FORMERR)",
            "DNSNotImplementedError": "the DNS server does not do this query (NOTIMP)",
            "ReferralError": "the DNS server gave a referral, not an answer (it does not recurse)",
        }.get(name, f"the DNS server answered with an error ({name})")
    if name == "TimeoutError":
        return "no DNS server answered in time"
    message = failure.getErrorMessage()
    return f"{name}: {message}" if message else name


def _addressOf(record: Any) -> str:
    if record.type == dns.A:
        return str(record.payload.dottedQuad())
    return socket.inet_ntop(socket.AF_INET6, record.payload.address)


async def lookupFamily(resolver: Any, name: str, recordType: int) -> Answer:
    """
    Look up the addresses of one family of a host name.

    @param recordType: C{dns.A} or C{dns.AAAA}.
    @raise LookupFailed: when no answer came.
    """
    method = resolver.lookupAddress if recordType == dns.A else resolver.lookupIPV6Address
    result, failure = await _settle(method(name))
    records, ttl = _records(result, failure, (recordType,))
    return Answer(tuple(sorted({_addressOf(r) for r in records})), ttl)


async def lookupServices(resolver: Any, name: str) -> Answer:
    """
    Look up the SRV records of a name; a target of C{.} (the service is
    not offered there, RFC 2782) is left out, and so is a record of port 0
    (nothing can be reached there).

    @raise LookupFailed: when no answer came.
    """
    result, failure = await _settle(resolver.lookupService(name))
    records, ttl = _records(result, failure, (dns.SRV,))
    found = []
    for record in records:
        payload = record.payload
        target = normalName(payload.target.name.decode("ascii", "replace"))
        if not target or not payload.port:
            continue
        found.append(ServiceRecord(payload.priority, payload.weight, payload.port, target))
    return Answer(sortRecords(found), ttl)


async def _settle(d: Deferred) -> Tuple[Any, Optional[Failure]]:
    """
    @return: C{(result, None)} or C{(None, failure)}: a lookup's outcome,
        without raising (a cancellation still raises).
    """
    try:
        return await d, None
    except CancelledError:
        raise
    except Exception:
        return None, Failure()
