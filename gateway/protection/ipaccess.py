"""
IP access control: address ranges, and the rules of the C{ip-access}
filter (L{gateway.filters.ipaccess}).

Rules, for an API's C{ipAccess: {allow: [...], deny: [...]}}:
  - C{deny} wins over C{allow};
  - an empty C{allow} lets in every address not denied; a non-empty one
    lets in only the addresses it matches;
  - IPv4 and IPv6 both work; an IPv4-mapped IPv6 address (C{::ffff:1.2.3.4},
    what a dual-stack socket reports for an IPv4 client) is the IPv4
    address, and a network written in that form (C{::ffff:10.0.0.0/104}) is
    the IPv4 network.  A wider IPv6 network (C{::/0}) matches IPv6 clients
    only;
  - an address that does not parse (C{"unknown"}, for a client on a UNIX
    socket) is denied when there is an C{allow} list (it cannot be shown to
    be allowed) and let in otherwise (it cannot match a C{deny} entry);
  - a zone index (C{fe80::1%eth0}) and brackets (C{[::1]}) are ignored.

The client address is C{context.clientIP}, which the proxy decides from the
direct peer or a trusted proxy's C{X-Forwarded-For}: this filter never reads
headers.
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_right
from typing import Iterable, List, Optional, Sequence, Tuple, Union

#: Per-address decisions the filter remembers.
CACHE_SIZE = 4096


_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


_Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


_Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


def parseAddress(address: str) -> Optional[_Address]:
    """
    @return: the address, an IPv4-mapped IPv6 address as IPv4, or L{None}
        when C{address} is not an IP address.
    """
    text = address.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.partition("%")[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if ip.version == 6:
        mapped = ip.ipv4_mapped
        if mapped is not None:
            return mapped
    return ip


def parseNetwork(cidr: str) -> _Network:
    """
    @return: the network (host bits may be set: C{10.1.2.3/8} is
        C{10.0.0.0/8}); an IPv4-mapped IPv6 network as IPv4.
    @raise ValueError: when C{cidr} is not a network or an address.
    """
    network = ipaddress.ip_network(cidr.strip(), strict=False)
    if network.version == 6 and network.prefixlen >= 96 and network.subnet_of(_MAPPED):
        return ipaddress.IPv4Network(
            (int(network.network_address) & 0xFFFFFFFF, network.prefixlen - 96)
        )
    return network


class AddressRanges:
    """
    A set of networks of one IP version, as sorted, disjoint integer ranges,
    so that a lookup is one binary search however many networks there are.
    """

    __slots__ = ("_starts", "_ends")

    def __init__(self, networks: Iterable[_Network]) -> None:
        ranges = sorted((int(n.network_address), int(n.broadcast_address)) for n in networks)
        merged: List[List[int]] = []
        for start, end in ranges:
            if merged and start <= merged[-1][1] + 1:
                if end > merged[-1][1]:
                    merged[-1][1] = end
            else:
                merged.append([start, end])
        self._starts = [start for start, _ in merged]
        self._ends = [end for _, end in merged]

    def __len__(self) -> int:
        return len(self._starts)

    def __contains__(self, value: int) -> bool:
        i = bisect_right(self._starts, value) - 1
        return i >= 0 and value <= self._ends[i]


def _split(cidrs: Sequence[str]) -> Tuple[AddressRanges, AddressRanges]:
    networks = [parseNetwork(c) for c in cidrs]
    return (
        AddressRanges(n for n in networks if n.version == 4),
        AddressRanges(n for n in networks if n.version == 6),
    )
