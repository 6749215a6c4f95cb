"""
Tests for L{gateway.protection.ipaccess}: the C{ip-access} filter's rules, and its
range lookup checked against L{ipaddress}'s own membership test.
"""

from __future__ import annotations

import ipaddress
from random import Random
from typing import List

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import server
from twisted.web.http_headers import Headers
from twisted.web.test.requesthelper import DummyChannel
from zope.interface.verify import verifyObject

from gateway.filters.ipaccess import IPAccessFilter, makeIPAccessFilter
from gateway.interfaces import IFilter
from gateway.model.resources import IPAccess, parseResource
from gateway.pipeline.exchange import EarlyResponse, Exchange
from gateway.protection.ipaccess import AddressRanges, parseAddress, parseNetwork


def makeContext(clientIP: str) -> Exchange:
    """
    @return: the context of a real L{server.Request} from C{clientIP}.
    """
    api = parseResource("apis", {"name": "a", "urlPattern": "/a", "nodes": [{"cluster": "c"}]})
    return Exchange(
        server.Request(DummyChannel(), False),
        snapshot=None,
        api=api,
        params={},
        clientIP=clientIP,
        startTime=0.0,
        upstreamHeaders=Headers(),
    )


class IPAccessFilterTests(SynchronousTestCase):
    """
    Tests for L{IPAccessFilter}.
    """

    def test_provides(self) -> None:
        """
        The filter provides L{IFilter}, is called C{ip-access}, and its
        C{after} and C{error} hooks do nothing.
        """
        f = IPAccessFilter(deny=["10.0.0.0/8"])
        self.assertTrue(verifyObject(IFilter, f))
        self.assertEqual(f.name, "ip-access")
        self.assertIsNone(f.after(makeContext("1.2.3.4"), None))
        self.assertIsNone(f.error(makeContext("1.2.3.4"), None))

    def test_before(self) -> None:
        """
        C{before} lets an allowed client go on and answers C{403} to a
        denied one.
        """
        f = IPAccessFilter(allow=["192.168.0.0/16"])
        self.assertIsNone(f.before(makeContext("192.168.3.4")))
        self.assertEqual(
            f.before(makeContext("10.0.0.1")), EarlyResponse.error(403, "access denied")
        )

    def test_denyWinsOverAllow(self) -> None:
        """
        An address both allowed and denied is denied.
        """
        f = IPAccessFilter(allow=["10.0.0.0/8"], deny=["10.1.0.0/16"])
        self.assertTrue(f.allows("10.2.0.1"))
        self.assertFalse(f.allows("10.1.2.3"))
        self.assertFalse(f.allows("11.0.0.1"))

    def test_emptyAllowAllowsAllButDenied(self) -> None:
        """
        Without an C{allow} list, everyone not denied gets in.
        """
        f = IPAccessFilter(deny=["203.0.113.7", "2001:db8::/32"])
        self.assertFalse(f.allows("203.0.113.7"))
        self.assertTrue(f.allows("203.0.113.8"))
        self.assertFalse(f.allows("2001:db8::1"))
        self.assertTrue(f.allows("2001:db9::1"))

    def test_allowListOnly(self) -> None:
        """
        A non-empty C{allow} list lets in only what it matches, of either
        IP version.
        """
        f = IPAccessFilter(allow=["127.0.0.1", "fd00::/8"])
        self.assertTrue(f.allows("127.0.0.1"))
        self.assertFalse(f.allows("127.0.0.2"))
        self.assertTrue(f.allows("fd12:3456::1"))
        self.assertFalse(f.allows("fe80::1"))
        self.assertFalse(f.allows("::1"))

    def test_versionsKeptApart(self) -> None:
        """
        An IPv4 network never matches an IPv6 address with the same
        integer value, and the other way round.
        """
        f = IPAccessFilter(allow=["0.0.0.0/8"])
        self.assertFalse(f.allows("::1"))
        f = IPAccessFilter(allow=["::/96"])
        self.assertFalse(f.allows("0.0.0.1"))

    def test_ipv4Mapped(self) -> None:
        """
        An IPv4-mapped IPv6 address is matched as the IPv4 address, and a
        network written in that form as the IPv4 network.
        """
        f = IPAccessFilter(allow=["10.0.0.0/8"], deny=["10.9.9.9"])
        self.assertTrue(f.allows("::ffff:10.1.2.3"))
        self.assertFalse(f.allows("::ffff:10.9.9.9"))
        self.assertFalse(f.allows("::ffff:11.1.2.3"))
        f = IPAccessFilter(allow=["::ffff:192.168.0.0/112"])
        self.assertTrue(f.allows("192.168.1.1"))
        self.assertTrue(f.allows("::ffff:192.168.200.1"))
        self.assertFalse(f.allows("192.169.0.1"))

    def test_wideIPv6NetworkMatchesIPv6Only(self) -> None:
        """
        C{::/0} denies every IPv6 client but not IPv4 ones, not even when
        they arrive IPv4-mapped on a dual-stack socket.
        """
        f = IPAccessFilter(deny=["::/0"])
        self.assertFalse(f.allows("2001:db8::1"))
        self.assertTrue(f.allows("1.2.3.4"))
        self.assertTrue(f.allows("::ffff:1.2.3.4"))

    def test_addressForms(self) -> None:
        """
        Brackets, a zone index and surrounding spaces are ignored.
        """
        f = IPAccessFilter(allow=["fe80::/10", "::1"])
        self.assertTrue(f.allows("fe80::1%eth0"))
        self.assertTrue(f.allows("[::1]"))
        self.assertTrue(f.allows(" ::1 "))

    def test_unparseableAddress(self) -> None:
        """
        An address that is not an IP address is denied when there is an
        C{allow} list and let in when there is only a C{deny} list.
        """
        self.assertFalse(IPAccessFilter(allow=["0.0.0.0/0", "::/0"]).allows("unknown"))
        self.assertTrue(IPAccessFilter(deny=["0.0.0.0/0", "::/0"]).allows("unknown"))
        self.assertFalse(IPAccessFilter(allow=["0.0.0.0/0"]).allows(""))

    def test_hostBitsSet(self) -> None:
        """
        A network written with host bits set covers its whole network.
        """
        f = IPAccessFilter(allow=["10.1.2.3/16"])
        self.assertTrue(f.allows("10.1.200.1"))
        self.assertFalse(f.allows("10.2.0.1"))

    def test_invalidEntry(self) -> None:
        """
        An entry that is not a network is refused when the filter is built.
        """
        self.assertRaises(ValueError, IPAccessFilter, allow=["10.0.0.0/33"])
        self.assertRaises(ValueError, IPAccessFilter, deny=["example.com"])

    def test_cacheBounded(self) -> None:
        """
        The decision cache never grows past its size, and decisions stay
        right for addresses it has forgotten.
        """
        f = IPAccessFilter(allow=["10.0.0.0/24"], cacheSize=8)
        for _round in range(2):
            for i in range(100):
                self.assertEqual(f.allows(f"10.0.{i % 2}.{i}"), i % 2 == 0)
                self.assertLessEqual(len(f._cache), 8)

    def test_manyNetworks(self) -> None:
        """
        With thousands of networks, overlapping and adjacent ones included,
        every decision matches a plain scan of the networks.
        """
        rng = Random(1234)
        allow = []
        for _ in range(3000):
            prefix = rng.randint(8, 32)
            allow.append(str(ipaddress.ip_network((rng.getrandbits(32), prefix), strict=False)))
        for _ in range(2000):
            prefix = rng.randint(16, 128)
            allow.append(str(ipaddress.ip_network((rng.getrandbits(128), prefix), strict=False)))
        deny = allow[::97]
        f = IPAccessFilter(allow=allow, deny=deny)
        allowNets = [ipaddress.ip_network(n) for n in allow]
        denyNets = [ipaddress.ip_network(n) for n in deny]
        candidates: List[str] = []
        for network in allowNets[::20]:
            candidates.append(str(network.network_address))
            candidates.append(str(network.broadcast_address))
            if int(network.broadcast_address) < (2**network.max_prefixlen) - 1:
                candidates.append(str(network.broadcast_address + 1))
        candidates.extend(str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(500))
        seen = set()
        for text in candidates:
            address = ipaddress.ip_address(text)
            expected = not any(address in n for n in denyNets) and any(
                address in n for n in allowNets
            )
            self.assertEqual(f.allows(text), expected, text)
            seen.add(expected)
        self.assertEqual(seen, {True, False})


class AddressRangesTests(SynchronousTestCase):
    """
    Tests for L{AddressRanges}.
    """

    def test_merges(self) -> None:
        """
        Overlapping and adjacent networks merge into one range.
        """
        ranges = AddressRanges(
            parseNetwork(n) for n in ["10.0.0.0/25", "10.0.0.128/25", "10.0.0.5/32", "11.0.0.0/8"]
        )
        self.assertEqual(len(ranges), 2)
        self.assertIn(int(ipaddress.IPv4Address("10.0.0.200")), ranges)
        self.assertNotIn(int(ipaddress.IPv4Address("10.0.1.0")), ranges)

    def test_empty(self) -> None:
        """
        An empty set holds nothing.
        """
        self.assertNotIn(0, AddressRanges([]))

    @settings(max_examples=200, deadline=None)
    @given(
        networks=st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32)), max_size=30),
        probes=st.lists(st.integers(0, 2**32 - 1), max_size=30),
    )
    def test_matchesIpaddress(self, networks: List, probes: List[int]) -> None:
        """
        Membership agrees with L{ipaddress}'s, at random addresses and at
        each network's edges.
        """
        nets = [ipaddress.IPv4Network((value, prefix), strict=False) for value, prefix in networks]
        ranges = AddressRanges(nets)
        edges = [int(n.network_address) - 1 for n in nets] + [
            int(n.broadcast_address) + 1 for n in nets
        ]
        for value in probes + edges:
            if 0 <= value < 2**32:
                address = ipaddress.IPv4Address(value)
                self.assertEqual(value in ranges, any(address in n for n in nets))


class ParsingTests(SynchronousTestCase):
    """
    Tests for L{parseAddress} and L{parseNetwork}.
    """

    def test_parseAddress(self) -> None:
        """
        Addresses parse, mapped ones as IPv4; other text is L{None}.
        """
        self.assertEqual(parseAddress("1.2.3.4"), ipaddress.IPv4Address("1.2.3.4"))
        self.assertEqual(parseAddress("::ffff:1.2.3.4"), ipaddress.IPv4Address("1.2.3.4"))
        self.assertEqual(parseAddress("::1"), ipaddress.IPv6Address("::1"))
        self.assertIsNone(parseAddress("unknown"))
        self.assertIsNone(parseAddress("1.2.3.4:80"))

    def test_parseNetwork(self) -> None:
        """
        A mapped network becomes IPv4; others keep their version.
        """
        self.assertEqual(parseNetwork("::ffff:10.0.0.0/104"), ipaddress.IPv4Network("10.0.0.0/8"))
        self.assertEqual(parseNetwork("::/0"), ipaddress.IPv6Network("::/0"))
        self.assertEqual(parseNetwork("10.0.0.1"), ipaddress.IPv4Network("10.0.0.1/32"))


class MakeIPAccessFilterTests(SynchronousTestCase):
    """
    Tests for L{makeIPAccessFilter}.
    """

    def test_nothingToCheck(self) -> None:
        """
        No C{ipAccess}, or one with both lists empty, makes no filter.
        """
        self.assertIsNone(makeIPAccessFilter(None))
        self.assertIsNone(makeIPAccessFilter(IPAccess()))

    def test_fromModel(self) -> None:
        """
        An API's C{ipAccess} makes a filter with its lists.
        """
        api = parseResource(
            "apis",
            {
                "name": "a",
                "urlPattern": "/a",
                "nodes": [{"cluster": "c"}],
                "ipAccess": {"allow": ["10.0.0.0/8"], "deny": ["10.0.0.1"]},
            },
        )
        f = makeIPAccessFilter(api.ipAccess)
        assert f is not None
        self.assertTrue(verifyObject(IFilter, f))
        self.assertTrue(f.allows("10.0.0.2"))
        self.assertFalse(f.allows("10.0.0.1"))
        self.assertFalse(f.allows("192.168.0.1"))
        self.assertIsNotNone(makeIPAccessFilter(IPAccess(deny=("::1",))))
