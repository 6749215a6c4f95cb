"""
L{StubResolver}: asks DNS servers for discovery, quietly, with Twisted
Names' protocol.

Twisted's own L{twisted.names.client.Resolver} binds a new UDP port for each
query, and the reactor logs every port opened and closed: four lines per
lookup, every TTL, for every name, which drowns a gateway's log.  This one
keeps a UDP socket per address family for a series of queries (as c-ares,
the resolver of Envoy and curl, does), renewed after L{QUERIES_PER_SOCKET}
queries so that its source port moves; each query has a random ID, and a
datagram is taken only from the configured servers (with Twisted 26 or
later, an answer only from the server its query went to).  Servers are asked
in order, each given C{timeout} seconds; a server that fails, refuses
or answers with a referral (it does not recurse) passes the question to
the next one; an answer truncated to UDP's size is
asked again over TCP.  A hosts file, when given, is read first.

Its lookups answer as L{twisted.names.client.Resolver}'s do: C{(answers,
authority, additional)}, or a failure with
L{twisted.names.error.DNSNameError} (NXDOMAIN), another
L{twisted.names.error.DomainError} (the server failed, refused, gave a
referral: L{ReferralError}, ...) or
L{twisted.internet.defer.TimeoutError} (no server answered).
"""

from __future__ import annotations

import ipaddress
from typing import Any, Dict, List, Optional, Sequence, Tuple

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.names import client, dns, hosts
from twisted.names.error import (
    DNSFormatError,
    DNSNameError,
    DNSNotImplementedError,
    DNSQueryRefusedError,
    DNSQueryTimeoutError,
    DNSServerError,
    DNSUnknownError,
    DomainError,
)

#: Queries sent from one UDP socket before it is replaced by one on another
#: port.
QUERIES_PER_SOCKET = 1000

_ERRORS = {
    dns.EFORMAT: DNSFormatError,
    dns.ESERVER: DNSServerError,
    dns.ENAME: DNSNameError,
    dns.ENOTIMP: DNSNotImplementedError,
    dns.EREFUSED: DNSQueryRefusedError,
}

Sections = Tuple[List[Any], List[Any], List[Any]]


class ReferralError(DomainError):
    """
    A server answered with a referral: no record of the type asked for,
    and name servers to ask instead (RFC 2308 2.2: not a negative answer,
    which has an SOA record, or no NS record).  It does not recurse, so it
    cannot serve a stub resolver; the next server is asked.
    """


def _isReferral(message: dns.Message, recordType: int) -> bool:
    if any(r.type == recordType for r in message.answers):
        return False
    kinds = {r.type for r in message.authority}
    return dns.NS in kinds and dns.SOA not in kinds


class _FromServers(dns.DNSDatagramProtocol):
    """
    Twisted's DNS protocol over UDP, taking datagrams from the servers asked
    only (Twisted takes an answer only from the server it asked since its
    release 26; before, from anywhere).
    """

    def __init__(self, controller: Any, reactor: Any, servers: Sequence[Tuple[str, int]]) -> None:
        super().__init__(controller, reactor=reactor)
        self.servers = frozenset(servers)

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        # (An IPv6 source is (host, port, flow info, scope).)
        if (addr[0], addr[1]) not in self.servers:
            return
        super().datagramReceived(data, addr)


class _Socket:
    """
    A UDP socket with its protocol, and how many queries it has sent.
    """

    def __init__(
        self, reactor: Any, interface: str, controller: Any, servers: Sequence[Tuple[str, int]]
    ) -> None:
        self.protocol = _FromServers(controller, reactor, servers)
        self.protocol.noisy = False
        self.port = reactor.listenUDP(0, self.protocol, interface=interface)
        self.sent = 0

    def close(self) -> None:
        # The queries still waiting end with it (and their timeouts).
        live = self.protocol.liveMessages or {}
        waiting = list(live.values())
        live.clear()
        self.port.stopListening()
        for d, timeout in waiting:
            if timeout.active():
                timeout.cancel()
            if not d.called:
                d.errback(defer.CancelledError("the resolver was closed"))


class StubResolver:
    """
    Asks a list of DNS servers (recursive resolvers) over UDP, from one
    socket per address family for a series of queries.
    """

    def __init__(
        self,
        servers: Sequence[Tuple[str, int]],
        timeout: float,
        reactor: Any,
        hostsFile: Optional[str] = None,
        queriesPerSocket: int = QUERIES_PER_SOCKET,
    ) -> None:
        """
        @param servers: C{(ip, port)} of each server, asked in order.
        @param timeout: seconds each server is given to answer.
        @param reactor: an L{IReactorTime}, L{IReactorUDP} and L{IReactorTCP}.
        @param hostsFile: a hosts file read before the DNS, or L{None}.
        @param queriesPerSocket: queries sent from one socket before it is
            replaced.
        """
        if not servers:
            raise ValueError("a resolver needs at least one DNS server")
        # In the form the answers' source addresses come in (::1, not 0::1).
        self._servers = [(str(ipaddress.ip_address(ip)), int(port)) for ip, port in servers]
        self._timeout = timeout
        self._reactor = reactor
        self._hosts = hosts.Resolver(file=hostsFile.encode("utf-8")) if hostsFile else None
        self._perSocket = queriesPerSocket
        self._sockets: Dict[int, _Socket] = {}
        self._closed = False

    # -- the lookups ----------------------------------------------------------

    def lookupAddress(self, name: str, timeout: Any = None) -> Deferred:
        """
        @return: a Deferred firing with the sections of the answer to the
            C{A} query of C{name}.
        """
        return self._lookup(name, dns.A, self._hosts.lookupAddress if self._hosts else None)

    def lookupIPV6Address(self, name: str, timeout: Any = None) -> Deferred:
        """
        @return: the same for the C{AAAA} query.
        """
        return self._lookup(name, dns.AAAA, self._hosts.lookupIPV6Address if self._hosts else None)

    def lookupService(self, name: str, timeout: Any = None) -> Deferred:
        """
        @return: the same for the C{SRV} query.
        """
        return self._lookup(name, dns.SRV, None)

    def close(self) -> None:
        """
        Close its sockets; the queries waiting on them fail with
        L{defer.CancelledError}, and so do later ones.
        """
        self._closed = True
        sockets = list(self._sockets.values())
        self._sockets.clear()
        for sock in sockets:
            sock.close()

    # -- asking -----------------------------------------------------------------

    def _lookup(self, name: str, recordType: int, fromHosts: Any) -> Deferred:
        return Deferred.fromCoroutine(self._resolve(name, recordType, fromHosts))

    async def _resolve(self, name: str, recordType: int, fromHosts: Any) -> Sections:
        if fromHosts is not None:
            try:
                answers, authority, additional = await fromHosts(name)
                return list(answers), list(authority), list(additional)
            except DomainError:
                pass
        return await self._ask(dns.Query(name, recordType, dns.IN))

    async def _ask(self, query: dns.Query) -> Sections:
        error: Exception = defer.TimeoutError(f"no answer to {query} from any DNS server")
        for server in self._servers:
            try:
                message = await self._askOne(server, query)
            except DNSQueryTimeoutError:
                continue
            except OSError as e:
                # The socket refused to send (no route, ...): the next one.
                error = e
                continue
            if message.trunc:
                message = await self._askOverTCP(server, query)
            if message.rCode == dns.OK:
                if not _isReferral(message, query.type):
                    return (
                        list(message.answers),
                        list(message.authority),
                        list(message.additional),
                    )
                error = ReferralError(message)
                continue
            if message.rCode == dns.ENAME:
                raise DNSNameError(message)
            # A server that failed or refused: the next one may answer.
            error = _ERRORS.get(message.rCode, DNSUnknownError)(message)
        raise error

    async def _askOne(self, server: Tuple[str, int], query: dns.Query) -> dns.Message:
        if self._closed:
            raise defer.CancelledError("the resolver was closed")
        family = 6 if ipaddress.ip_address(server[0]).version == 6 else 4
        sock = self._sockets.get(family)
        if sock is not None and sock.sent >= self._perSocket and not sock.protocol.liveMessages:
            del self._sockets[family]
            sock.close()
            sock = None
        if sock is None:
            sock = self._sockets[family] = _Socket(
                self._reactor, "::" if family == 6 else "", self, self._servers
            )
        sock.sent += 1
        message: dns.Message = await sock.protocol.query(server, [query], self._timeout)
        return message

    async def _askOverTCP(self, server: Tuple[str, int], query: dns.Query) -> dns.Message:
        tcp = client.Resolver(servers=[server], reactor=self._reactor)
        try:
            message: dns.Message = await tcp.queryTCP([query], self._timeout)
            return message
        finally:
            for protocol in list(tcp.connections):
                protocol.transport.loseConnection()

    # -- the protocol's controller ----------------------------------------------

    def messageReceived(self, message: dns.Message, protocol: Any, address: Any = None) -> None:
        """
        A message that answers no query waiting (late, or not ours): dropped.
        """
