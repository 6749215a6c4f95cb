"""
What DNS discovery found (L{Discovered}), and the backends a catalog makes
of it (L{expand}).

A server whose C{addr} names a host (C{users.internal:8080}) is not one
backend but one per address of that host: C{users@10.0.0.5},
C{users@10.0.0.6}, each a copy of the server's settings with the address
in place of the name.  A cluster with C{discovery} has one backend per
address of each target of its SRV records, with the record's port:
C{users@10.0.0.5:8080}.  C{@} is in no resource name, so a discovered
backend's name never clashes with a server's.

Everything here is a pure function of a catalog and a L{Discovered}: the
snapshot (L{gateway.routing.snapshot}) calls L{expand} on every build,
from a store change or from a discovery change alike.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Any, Dict, FrozenSet, Iterable, List, Mapping, Optional, Tuple

import attrs

from gateway.model.resources import Catalog, Cluster, Server, splitAddr

#: Kinds of L{Origin}.
A = "A"
SRV = "SRV"

#: The backend weight of an SRV weight unit: a record of weight 0 among
#: weighted ones gets 1, so it is picked rarely, not never (RFC 2782).
WEIGHT_SCALE = 100


def normalName(name: str) -> str:
    """
    @return: a DNS name as discovery keys it: lower case, without the
        trailing dot.
    """
    return name.rstrip(".").lower()


def isIPAddress(host: str) -> bool:
    """
    @param host: the host part of an C{addr} (an IPv6 address without its
        brackets, maybe with a C{%zone}).
    @return: whether it is an IP address, which is used as it is (not
        looked up).
    """
    try:
        ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    return True


def hostToLookUp(server: Server) -> Optional[str]:
    """
    @return: the host name (normalised) that C{server}'s C{addr} names, or
        L{None} when it is an IP address.
    """
    return _hostOf(server.addr)


@functools.lru_cache(maxsize=1 << 16)
def _hostOf(addr: str) -> Optional[str]:
    # Asked for every server at every store change: parsed once per addr.
    host = splitAddr(addr)[0]
    return None if isIPAddress(host) else normalName(host)


def joinAddr(ip: str, port: int) -> str:
    """
    @return: C{ip:port}, with an IPv6 address in brackets.
    """
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


@attrs.frozen
class ServiceRecord:
    """
    One SRV record (RFC 2782), as discovery keeps it.

    @ivar target: the target host name, normalised (L{normalName}).
    """

    priority: int
    weight: int
    port: int
    target: str

    def sortKey(self) -> Tuple[int, int, str, int]:
        """
        @return: its place among a name's records: by priority, then by
            weight from the heaviest, then by target and port; the order of
            a cluster's backends.
        """
        return (self.priority, -self.weight, self.target, self.port)

    def toJSON(self) -> Dict[str, Any]:
        return {
            "priority": self.priority,
            "weight": self.weight,
            "port": self.port,
            "target": self.target,
        }


def sortRecords(records: Iterable[ServiceRecord]) -> Tuple[ServiceRecord, ...]:
    """
    @return: C{records} without duplicates, lowest priority first, the
        heaviest first within a priority.
    """
    return tuple(sorted(set(records), key=ServiceRecord.sortKey))


@attrs.frozen
class Discovered:
    """
    The results of discovery at one moment: immutable, compared by value.

    @ivar addresses: the addresses of each host name looked up (normalised
        name to sorted IP addresses); a name not looked up yet is absent.
    @ivar services: the SRV records of each name looked up, in
        L{sortRecords} order; a name not looked up yet is absent.
    """

    addresses: Mapping[str, Tuple[str, ...]] = attrs.Factory(dict)
    services: Mapping[str, Tuple[ServiceRecord, ...]] = attrs.Factory(dict)

    def toJSON(self) -> Dict[str, Any]:
        """
        @return: its JSON form (how the gateway process relays it to its
            workers).
        """
        return {
            "addresses": {name: list(ips) for name, ips in self.addresses.items()},
            "services": {
                name: [r.toJSON() for r in records] for name, records in self.services.items()
            },
        }

    @classmethod
    def fromJSON(cls, data: Any) -> Discovered:
        """
        @raise ValueError: when C{data} is not what L{toJSON} gives.
        """
        try:
            addresses = {
                str(name): tuple(str(ip) for ip in ips)
                for name, ips in data.get("addresses", {}).items()
            }
            services = {
                str(name): tuple(
                    ServiceRecord(
                        int(r["priority"]), int(r["weight"]), int(r["port"]), str(r["target"])
                    )
                    for r in records
                )
                for name, records in data.get("services", {}).items()
            }
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a discovery result: {e!r}")
        return cls(addresses, services)


@attrs.frozen
class Origin:
    """
    How a backend was discovered, for the stats and the UI.

    @ivar type: L{A} (the address of a server's host name) or L{SRV} (a
        server of a cluster's SRV records).
    @ivar owner: the server (L{A}) or the cluster (L{SRV}) it belongs to.
    @ivar dns: the name looked up: the host name, or the SRV name.
    @ivar address: the IP address.
    @ivar target: the SRV record's target (L{SRV} only).
    @ivar priority: the SRV record's priority (L{SRV} only).
    @ivar weight: the SRV record's weight (L{SRV} only).
    """

    type: str
    owner: str
    dns: str
    address: str
    target: Optional[str] = None
    priority: Optional[int] = None
    weight: Optional[int] = None

    def toJSON(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {
            "type": self.type,
            ("server" if self.type == A else "cluster"): self.owner,
            "dns": self.dns,
            "address": self.address,
        }
        if self.type == SRV:
            out.update(target=self.target, priority=self.priority, weight=self.weight)
        return out


@attrs.frozen
class Expansion:
    """
    The backends a catalog makes over a L{Discovered}.

    @ivar servers: the configuration of every backend, by backend name,
        with its L{Origin} (L{None} for a server used as it is).
    @ivar tiers: the backend names of each cluster, by cluster name, in
        tiers to try in order (the SRV priorities; one tier for a cluster
        of listed servers).
    """

    servers: Dict[str, Tuple[Server, Optional[Origin]]]
    tiers: Dict[str, Tuple[Tuple[str, ...], ...]]


def wantedNames(catalog: Catalog) -> Tuple[FrozenSet[str], FrozenSet[str]]:
    """
    @return: C{(hosts, services)}: the host names of the catalog's servers
        and the SRV names of its clusters' C{discovery}, normalised.
    """
    hosts = set()
    for server in catalog.servers.values():
        host = hostToLookUp(server)
        if host is not None:
            hosts.add(host)
    services = {
        normalName(cluster.discovery.dns)
        for cluster in catalog.clusters.values()
        if cluster.discovery is not None
    }
    return frozenset(hosts), frozenset(services)


def expand(catalog: Catalog, discovered: Optional[Discovered]) -> Expansion:
    """
    Work out the backends of a catalog.

    @param discovered: what discovery found; L{None} when this process does
        not discover: every server is then one backend, under its own name,
        whatever its C{addr} (a host name is resolved when connecting), and
        a cluster with C{discovery} has none.
    """
    servers: Dict[str, Tuple[Server, Optional[Origin]]] = {}
    backendsOf: Dict[str, Tuple[str, ...]] = {}
    for name, server in catalog.servers.items():
        host = hostToLookUp(server) if discovered is not None else None
        if host is None:
            servers[name] = (server, None)
            backendsOf[name] = (name,)
            continue
        port = splitAddr(server.addr)[1]
        names = []
        for ip in discovered.addresses.get(host, ()) if discovered is not None else ():
            backend = f"{name}@{ip}"
            origin = Origin(A, name, host, ip)
            servers[backend] = (
                attrs.evolve(server, name=backend, addr=joinAddr(ip, port)),
                origin,
            )
            names.append(backend)
        backendsOf[name] = tuple(names)
    tiers: Dict[str, Tuple[Tuple[str, ...], ...]] = {}
    for name, cluster in catalog.clusters.items():
        if cluster.discovery is None:
            tiers[name] = (
                tuple(b for server in cluster.servers for b in backendsOf.get(server, ())),
            )
        elif discovered is None:
            tiers[name] = ((),)
        else:
            tiers[name] = _serviceTiers(cluster, discovered, servers)
    return Expansion(servers, tiers)


def _serviceTiers(
    cluster: Cluster,
    discovered: Discovered,
    servers: Dict[str, Tuple[Server, Optional[Origin]]],
) -> Tuple[Tuple[str, ...], ...]:
    """
    The backends of a cluster's SRV records, added to C{servers}: one tier
    per priority, lowest first.
    """
    discovery = cluster.discovery
    assert discovery is not None
    dnsName = normalName(discovery.dns)
    byPriority: Dict[int, List[ServiceRecord]] = {}
    for record in discovered.services.get(dnsName, ()):
        byPriority.setdefault(record.priority, []).append(record)
    tiers = []
    for priority in sorted(byPriority):
        records = byPriority[priority]
        # RFC 2782: when every weight of a priority is 0, all have an equal
        # chance; otherwise a weight of 0 gives a very small one.
        allZero = all(r.weight == 0 for r in records)
        tier = []
        for record in records:
            ips = _targetAddresses(record.target, discovered.addresses)
            if not ips:
                continue
            units = WEIGHT_SCALE if allZero else (record.weight * WEIGHT_SCALE or 1)
            # A target's weight is shared by its addresses.
            weight = max(1, round(units / len(ips)))
            for ip in ips:
                backend = f"{cluster.name}@{joinAddr(ip, record.port)}"
                if backend in servers:
                    continue
                config = Server(
                    name=backend,
                    addr=joinAddr(ip, record.port),
                    weight=weight,
                    maxQPS=discovery.maxQPS,
                    healthCheck=discovery.healthCheck,
                    circuitBreaker=discovery.circuitBreaker,
                    passiveHealth=discovery.passiveHealth,
                )
                origin = Origin(
                    SRV, cluster.name, dnsName, ip, record.target, priority, record.weight
                )
                servers[backend] = (config, origin)
                tier.append(backend)
        if tier:
            tiers.append(tuple(tier))
    return tuple(tiers) or ((),)


def _targetAddresses(target: str, addresses: Mapping[str, Tuple[str, ...]]) -> Tuple[str, ...]:
    if isIPAddress(target):
        return (target,)
    return addresses.get(target, ())


def serviceTargets(records: Iterable[ServiceRecord]) -> FrozenSet[str]:
    """
    @return: the host names (not IP addresses) among the targets of
        C{records}.
    """
    return frozenset(r.target for r in records if not isIPAddress(r.target))
