"""
Tests for DNS service discovery (L{gateway.discovery}): the backends a
catalog makes of what was found (L{gateway.discovery.records}), reading DNS
answers (L{gateway.discovery.lookup}), the stub resolver over a memory UDP
transport (L{gateway.discovery.resolver}), the service's schedule with
L{task.Clock} and a scripted resolver (L{gateway.discovery.service}), the
snapshots rebuilt over discovery, SRV priorities and weights in the
balancers, the relay to workers, the status and the config.

The real thing, a DNS server and a gateway process, is in
C{tests/test_integration_dns.py}.
"""

from __future__ import annotations

import collections
import gc
import json
import struct
from typing import Any, Dict, List, Tuple

import yaml
from fakes import ScriptedUpstreamClient
from test_readme import codeBlockAfter
from test_relay import PoolReactor, sent, state
from twisted.application.service import IService
from twisted.internet import defer
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs
from twisted.names import dns
from twisted.names.error import DNSNameError, DNSQueryRefusedError, DNSServerError
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from zope.interface.verify import verifyObject

from gateway.balancing.backend import Backend
from gateway.balancing.balancers import PriorityBalancer, RoundRobin, makeTieredBalancer
from gateway.balancing.health import HealthChecker
from gateway.cli.checks import checkResources
from gateway.cli.problems import FileError
from gateway.cli.resources import parseResourceFile
from gateway.discovery.lookup import (
    LookupFailed,
    lookupFamily,
    lookupServices,
    makeResolver,
    systemNameservers,
)
from gateway.discovery.records import (
    A,
    Discovered,
    Origin,
    ServiceRecord,
    expand,
    sortRecords,
    wantedNames,
)
from gateway.discovery.resolver import ReferralError, StubResolver
from gateway.discovery.service import RETRY_MAX, DNSDiscovery
from gateway.filters import FilterRegistry
from gateway.interfaces import ILoadBalancer
from gateway.model.config import ConfigError, ResolverConfig, parseConfig, parseNameserver
from gateway.model.resources import Catalog, parseResource
from gateway.model.schema import ValidationError
from gateway.process.parent import ParentLink
from gateway.process.pool import WorkerPool
from gateway.process.propagation import ServedRevisions
from gateway.process.root import makeUpstreamClient
from gateway.process.status import GatewayStatus
from gateway.routing.snapshot import SnapshotManager
from gateway.store import StoreState
from gateway.store.relayed import RelayedStore, fullMessage
from gateway.telemetry.stats import backendJSON

# -- helpers ------------------------------------------------------------------


def catalog(**resources: Any) -> Catalog:
    """
    @param resources: C{servers=[...]}, C{clusters=[...]} in their JSON.
    """
    return Catalog(
        **{
            kind: {r["name"]: parseResource(kind, r) for r in resources.get(kind, ())}
            for kind in ("servers", "clusters", "apis", "routings")
        }
    )


def storeState(revision: int = 1, **resources: Any) -> StoreState:
    return StoreState(
        revision,
        {kind: {r["name"]: r for r in resources.get(kind, ())} for kind in ("servers", "clusters")},
    )


def aRecord(name: str, ip: str, ttl: int) -> dns.RRHeader:
    return dns.RRHeader(name, dns.A, dns.IN, ttl, dns.Record_A(ip, ttl))


def aaaaRecord(name: str, ip: str, ttl: int) -> dns.RRHeader:
    return dns.RRHeader(name, dns.AAAA, dns.IN, ttl, dns.Record_AAAA(ip, ttl))


def srvRecord(
    name: str, priority: int, weight: int, port: int, target: str, ttl: int
) -> dns.RRHeader:
    return dns.RRHeader(
        name, dns.SRV, dns.IN, ttl, dns.Record_SRV(priority, weight, port, target, ttl)
    )


def soaRecord(ttl: int, minimum: int) -> dns.RRHeader:
    payload = dns.Record_SOA(mname=b"ns.test", rname=b"admin.test", minimum=minimum, ttl=ttl)
    return dns.RRHeader(b"test", dns.SOA, dns.IN, ttl, payload)


def nxdomain(authority: List[dns.RRHeader] = ()) -> DNSNameError:  # type: ignore[assignment]
    message = dns.Message(rCode=dns.ENAME)
    message.authority = list(authority)
    return DNSNameError(message)


class ScriptedResolver:
    """
    A resolver whose lookups the test answers: each lookup is a Deferred
    kept under C{(name, type)} until the test fires it.
    """

    def __init__(self) -> None:
        self.pending: Dict[Tuple[str, str], List[Deferred]] = collections.defaultdict(list)
        self.asked: List[Tuple[str, str]] = []
        self.cancelled: List[Tuple[str, str]] = []

    def _lookup(self, name: str, kind: str) -> Deferred:
        key = (name, kind)
        self.asked.append(key)
        d: Deferred = Deferred(lambda d: self.cancelled.append(key))
        self.pending[key].append(d)
        return d

    def lookupAddress(self, name: str) -> Deferred:
        return self._lookup(name, "A")

    def lookupIPV6Address(self, name: str) -> Deferred:
        return self._lookup(name, "AAAA")

    def lookupService(self, name: str) -> Deferred:
        return self._lookup(name, "SRV")

    def waiting(self, name: str, kind: str) -> int:
        return len([d for d in self.pending[(name, kind)] if not d.called])

    def answer(
        self, name: str, kind: str, answers: List[dns.RRHeader], authority: Any = ()
    ) -> None:
        self._next(name, kind).callback((answers, list(authority), []))

    def fail(self, name: str, kind: str, error: Exception) -> None:
        self._next(name, kind).errback(error)

    def _next(self, name: str, kind: str) -> Deferred:
        """
        @return: the oldest lookup of C{name} waiting (cancelled ones are
            dropped).
        """
        queue = self.pending[(name, kind)]
        while queue[0].called:
            queue.pop(0)
        return queue.pop(0)

    def answerHost(self, name: str, ips: List[str], ttl: int = 30) -> None:
        """
        Answer the A and AAAA lookups of C{name} waiting (and those that
        answering makes) with C{ips}.
        """
        answered = True
        while answered:
            answered = False
            if self.waiting(name, "A"):
                self.answer(name, "A", [aRecord(name, ip, ttl) for ip in ips if ":" not in ip])
                answered = True
            if self.waiting(name, "AAAA"):
                self.answer(name, "AAAA", [aaaaRecord(name, ip, ttl) for ip in ips if ":" in ip])
                answered = True


def settings(**kw: Any) -> ResolverConfig:
    return ResolverConfig(**kw)


# -- the model and the config ------------------------------------------------


class ModelTests(SynchronousTestCase):
    """
    A cluster's C{discovery}, and the C{resolver:} section of the config.
    """

    def test_clusterDiscovery(self) -> None:
        """
        A cluster takes a C{discovery} of type SRV with the settings of its
        servers; the DNS name must be one.
        """
        cluster = parseResource(
            "clusters",
            {
                "name": "users",
                "loadBalance": "weighted-round-robin",
                "discovery": {"dns": "_http._tcp.Users.Internal.", "maxQPS": 5},
            },
        )
        self.assertEqual(
            (cluster.discovery.dns, cluster.discovery.type, cluster.discovery.maxQPS),
            ("_http._tcp.Users.Internal.", "SRV", 5),
        )
        error = self.assertRaises(
            ValidationError,
            parseResource,
            "clusters",
            {"name": "c", "discovery": {"dns": "no spaces"}},
        )
        self.assertEqual(error.field, "discovery.dns")
        error = self.assertRaises(
            ValidationError,
            parseResource,
            "clusters",
            {"name": "c", "discovery": {"dns": "x.test", "type": "A"}},
        )
        self.assertEqual(error.field, "discovery.type")

    def test_serversOrDiscovery(self) -> None:
        """
        A cluster lists its servers or discovers them, not both: the error
        names C{servers}; an empty list with discovery is fine.
        """
        error = self.assertRaises(
            ValidationError,
            parseResource,
            "clusters",
            {"name": "c", "servers": ["s1"], "discovery": {"dns": "x.test"}},
        )
        self.assertEqual(
            [(e.field, e.message) for e in error.errors],
            [("servers", "must be empty when the cluster has discovery (its servers are found)")],
        )
        parseResource("clusters", {"name": "c", "servers": [], "discovery": {"dns": "x.test"}})

    def test_resolverSection(self) -> None:
        """
        The C{resolver:} section: DNS servers as IP[:port], a timeout, the
        hosts file and the TTL bounds; defaults without it.
        """
        config = parseConfig(
            {
                "proxy": {"listen": "tcp:8080"},
                "resolver": {
                    "nameservers": ["127.0.0.1:5353", "10.0.0.2", "[::1]:53", "::1"],
                    "timeout": 2,
                    "hosts": "",
                    "minTTL": 0.5,
                    "maxTTL": 60,
                },
            }
        )
        resolver = config.resolver
        self.assertEqual(
            resolver,
            ResolverConfig(
                nameservers=("127.0.0.1:5353", "10.0.0.2", "[::1]:53", "::1"),
                timeout=2,
                hosts="",
                minTTL=0.5,
                maxTTL=60,
            ),
        )
        self.assertEqual(
            [parseNameserver(s) for s in resolver.nameservers],
            [("127.0.0.1", 5353), ("10.0.0.2", 53), ("::1", 53), ("::1", 53)],
        )
        default = parseConfig({"proxy": {"listen": "tcp:8080"}}).resolver
        self.assertEqual(
            (default.nameservers, default.timeout, default.hosts, default.minTTL, default.maxTTL),
            ((), 2.0, "/etc/hosts", 1.0, 300.0),
        )
        self.assertEqual(default.family, "v4-preferred")

    def test_cli(self) -> None:
        """
        A resource file with a discovering cluster passes C{gateway
        validate}'s checks; one whose cluster also lists servers is refused
        with the field.
        """
        good = {
            "clusters": [{"name": "c", "discovery": {"dns": "_h._tcp.svc.test"}}],
            "apis": [{"name": "a", "urlPattern": "/", "nodes": [{"cluster": "c"}]}],
        }
        resources = parseResourceFile(good, "good.yaml")
        self.assertEqual(checkResources(resources.resources, resources.label), ([], []))
        bad = {"clusters": [{"name": "c", "servers": ["s"], "discovery": {"dns": "x.test"}}]}
        error = self.assertRaises(FileError, parseResourceFile, bad, "bad.yaml")
        self.assertEqual(
            [(p.where, p.message) for p in error.problems],
            [
                (
                    "clusters[0] (c).servers",
                    "must be empty when the cluster has discovery (its servers are found)",
                )
            ],
        )

    def test_readme(self) -> None:
        """
        The README's examples of discovery are valid: the cluster and the
        C{resolver:} section.
        """
        cluster = parseResource(
            "clusters", json.loads(codeBlockAfter("## Service discovery: DNS", "json"))
        )
        self.assertEqual(cluster.discovery.dns, "_http._tcp.users.service.internal")
        resolver = yaml.safe_load(codeBlockAfter("## Service discovery: DNS", "yaml"))
        config = parseConfig(dict(resolver, proxy={"listen": "tcp:8080"}))
        self.assertEqual(config.resolver.nameservers, ("127.0.0.1:5353",))

    def test_resolverErrors(self) -> None:
        """
        Each bad setting is refused with its key: a host name as a DNS
        server (it could not be looked up), a port out of range, minTTL
        above maxTTL, an unknown key.
        """
        for value, key in [
            ({"nameservers": ["dns.example"]}, "resolver.nameservers[0]"),
            ({"nameservers": ["10.0.0.1:70000"]}, "resolver.nameservers[0]"),
            ({"minTTL": 10, "maxTTL": 5}, "resolver.minTTL"),
            ({"timeout": 0}, "resolver.timeout"),
            ({"servers": []}, "resolver.servers"),
            ({"family": "ipv4"}, "resolver.family"),
        ]:
            error = self.assertRaises(
                ConfigError, parseConfig, {"proxy": {"listen": "tcp:8080"}, "resolver": value}
            )
            self.assertEqual(error.key, key, value)


# -- records: what a catalog makes of what was found --------------------------


SERVERS = [
    {"name": "users", "addr": "Users.Test.:8080", "maxQPS": 7, "circuitBreaker": {}},
    {"name": "static", "addr": "10.0.0.9:80"},
    {"name": "v6", "addr": "[::1]:80"},
]


class RecordsTests(SynchronousTestCase):
    """
    L{wantedNames} and L{expand}.
    """

    def test_wantedNames(self) -> None:
        """
        The host names of servers (normalised; IP addresses are not looked
        up) and the SRV names of clusters.
        """
        cat = catalog(
            servers=SERVERS,
            clusters=[{"name": "srv", "discovery": {"dns": "_http._tcp.Svc.Test"}}],
        )
        self.assertEqual(
            wantedNames(cat), (frozenset({"users.test"}), frozenset({"_http._tcp.svc.test"}))
        )

    def test_withoutDiscovery(self) -> None:
        """
        Without discovery, every server is one backend under its name (a
        host name is resolved when connecting), and a cluster with
        discovery has none.
        """
        cat = catalog(
            servers=SERVERS,
            clusters=[
                {"name": "c", "servers": ["users", "static"]},
                {"name": "srv", "discovery": {"dns": "x.test"}},
            ],
        )
        expansion = expand(cat, None)
        self.assertEqual(list(expansion.servers), ["users", "static", "v6"])
        self.assertEqual(expansion.servers["users"], (cat.servers["users"], None))
        self.assertEqual(expansion.tiers, {"c": (("users", "static"),), "srv": ((),)})

    def test_addresses(self) -> None:
        """
        A server that names a host is one backend per address,
        C{name@address}, with the server's settings and the address (an
        IPv6 one in brackets); a host not looked up yet has none.
        """
        cat = catalog(
            servers=SERVERS + [{"name": "later", "addr": "later.test:1"}],
            clusters=[{"name": "c", "servers": ["static", "users", "later"]}],
        )
        found = Discovered({"users.test": ("10.0.0.5", "10.0.0.6", "fd00::1")})
        expansion = expand(cat, found)
        self.assertEqual(
            list(expansion.servers),
            ["users@10.0.0.5", "users@10.0.0.6", "users@fd00::1", "static", "v6"],
        )
        config, origin = expansion.servers["users@fd00::1"]
        self.assertEqual(
            (config.name, config.addr, config.maxQPS), ("users@fd00::1", "[fd00::1]:8080", 7)
        )
        self.assertEqual(config.circuitBreaker, cat.servers["users"].circuitBreaker)
        self.assertEqual(origin, Origin(A, "users", "users.test", "fd00::1"))
        self.assertEqual(
            origin.toJSON(),
            {"type": "A", "server": "users", "dns": "users.test", "address": "fd00::1"},
        )
        self.assertEqual(
            expansion.tiers["c"], (("static", "users@10.0.0.5", "users@10.0.0.6", "users@fd00::1"),)
        )

    def test_serviceTiers(self) -> None:
        """
        A cluster's SRV records make one tier per priority, lowest first;
        each address of a record's target is a backend
        C{cluster@address:port} with the discovery's settings; a target
        that is an IP address is used as it is; one with no address yet is
        left out.
        """
        cat = catalog(
            clusters=[
                {
                    "name": "svc",
                    "discovery": {
                        "dns": "_http._tcp.svc.test",
                        "maxQPS": 3,
                        "healthCheck": {"path": "/health"},
                    },
                }
            ],
        )
        records = sortRecords(
            [
                ServiceRecord(20, 1, 9000, "backup.test"),
                ServiceRecord(10, 30, 8080, "a.test"),
                ServiceRecord(10, 10, 8081, "10.0.0.7"),
                ServiceRecord(10, 60, 8080, "nowhere.test"),
            ]
        )
        found = Discovered(
            {"a.test": ("10.0.0.1",), "backup.test": ("10.0.0.3",), "nowhere.test": ()},
            {"_http._tcp.svc.test": records},
        )
        expansion = expand(cat, found)
        self.assertEqual(
            expansion.tiers["svc"],
            (("svc@10.0.0.1:8080", "svc@10.0.0.7:8081"), ("svc@10.0.0.3:9000",)),
        )
        config, origin = expansion.servers["svc@10.0.0.1:8080"]
        self.assertEqual(
            (config.addr, config.weight, config.maxQPS, config.healthCheck.path),
            ("10.0.0.1:8080", 3000, 3, "/health"),
        )
        self.assertEqual(
            origin.toJSON(),
            {
                "type": "SRV",
                "cluster": "svc",
                "dns": "_http._tcp.svc.test",
                "address": "10.0.0.1",
                "target": "a.test",
                "priority": 10,
                "weight": 30,
            },
        )
        self.assertEqual(expansion.servers["svc@10.0.0.7:8081"][0].weight, 1000)

    def test_serviceWeights(self) -> None:
        """
        Weights (RFC 2782): a weight of 0 among weighted records gets a
        small share (1 against 100 per unit), all weights 0 share equally,
        and a target's weight is shared by its addresses.
        """
        cat = catalog(clusters=[{"name": "c", "discovery": {"dns": "s.test"}}])
        found = Discovered(
            {"a.test": ("10.0.0.1", "10.0.0.2"), "b.test": ("10.0.0.3",), "z.test": ("10.0.0.4",)},
            {
                "s.test": sortRecords(
                    [
                        ServiceRecord(1, 5, 80, "a.test"),
                        ServiceRecord(1, 5, 80, "b.test"),
                        ServiceRecord(1, 0, 80, "z.test"),
                        ServiceRecord(2, 0, 81, "a.test"),
                        ServiceRecord(2, 0, 81, "b.test"),
                    ]
                )
            },
        )
        servers = expand(cat, found).servers
        weights = {name: config.weight for name, (config, _) in servers.items()}
        self.assertEqual(
            weights,
            {
                "c@10.0.0.1:80": 250,
                "c@10.0.0.2:80": 250,
                "c@10.0.0.3:80": 500,
                "c@10.0.0.4:80": 1,
                "c@10.0.0.1:81": 50,
                "c@10.0.0.2:81": 50,
                "c@10.0.0.3:81": 100,
            },
        )

    def test_discoveredJSON(self) -> None:
        """
        What was found goes to the workers as JSON and comes back equal;
        anything else is refused with L{ValueError}.
        """
        found = Discovered(
            {"a.test": ("10.0.0.1",)}, {"s.test": (ServiceRecord(1, 2, 80, "a.test"),)}
        )
        self.assertEqual(Discovered.fromJSON(json.loads(json.dumps(found.toJSON()))), found)
        for bad in [None, {"addresses": []}, {"services": {"s": [{"port": 1}]}}]:
            self.assertRaises(ValueError, Discovered.fromJSON, bad)


# -- lookups: what an answer says ---------------------------------------------


class LookupTests(SynchronousTestCase):
    """
    L{lookupFamily} and L{lookupServices} read the sections of an answer,
    or its failure.
    """

    def setUp(self) -> None:
        self.resolver = ScriptedResolver()

    def lookUp(self, coroutine: Any) -> Deferred:
        return Deferred.fromCoroutine(coroutine)

    def test_addresses(self) -> None:
        """
        The addresses, sorted and without duplicates; the TTL is the least
        of the answer's records, a CNAME's included.
        """
        d = self.lookUp(lookupFamily(self.resolver, "users.test", dns.A))
        cname = dns.RRHeader("users.test", dns.CNAME, dns.IN, 20, dns.Record_CNAME("real.test", 20))
        self.resolver.answer(
            "users.test",
            "A",
            [cname, aRecord("real.test", "10.0.0.6", 60), aRecord("real.test", "10.0.0.5", 60)],
        )
        answer = self.successResultOf(d)
        self.assertEqual((answer.values, answer.ttl), (("10.0.0.5", "10.0.0.6"), 20.0))

    def test_ipv6(self) -> None:
        """
        AAAA records give IPv6 addresses in their text form.
        """
        d = self.lookUp(lookupFamily(self.resolver, "users.test", dns.AAAA))
        self.resolver.answer("users.test", "AAAA", [aaaaRecord("users.test", "fd00::5", 9)])
        self.assertEqual(self.successResultOf(d).values, ("fd00::5",))

    def test_negative(self) -> None:
        """
        A name that does not exist (NXDOMAIN), or has no record of the
        type, is an answer with none; it holds for its SOA's negative TTL
        (the lesser of its TTL and MINIMUM), or for an unknown time.
        """
        d = self.lookUp(lookupFamily(self.resolver, "gone.test", dns.A))
        self.resolver.fail("gone.test", "A", nxdomain([soaRecord(60, 15)]))
        answer = self.successResultOf(d)
        self.assertEqual((answer.values, answer.ttl), ((), 15.0))
        d = self.lookUp(lookupFamily(self.resolver, "empty.test", dns.AAAA))
        self.resolver.answer("empty.test", "AAAA", [], [soaRecord(7, 30)])
        answer = self.successResultOf(d)
        self.assertEqual((answer.values, answer.ttl), ((), 7.0))
        d = self.lookUp(lookupFamily(self.resolver, "bare.test", dns.A))
        self.resolver.fail("bare.test", "A", nxdomain())
        self.assertEqual(self.successResultOf(d).ttl, None)

    def test_topBitTTL(self) -> None:
        """
        A TTL with its top bit set is 0 (RFC 2181 8), in an answer and in a
        negative answer's SOA, not 68 years.
        """
        d = self.lookUp(lookupFamily(self.resolver, "odd.test", dns.A))
        self.resolver.answer("odd.test", "A", [aRecord("odd.test", "10.0.0.1", 0x80000001)])
        self.assertEqual(self.successResultOf(d).ttl, 0.0)
        d = self.lookUp(lookupFamily(self.resolver, "gone.test", dns.A))
        self.resolver.fail("gone.test", "A", nxdomain([soaRecord(0xFFFFFFFF, 0xFFFFFFFF)]))
        self.assertEqual(self.successResultOf(d).ttl, 0.0)

    def test_failures(self) -> None:
        """
        No answer, a server failure, a refusal: L{LookupFailed}, saying
        which.
        """
        for error, message in [
            (defer.TimeoutError(), "no DNS server answered in time"),
            (DNSServerError(dns.Message()), "the DNS server failed (SERVFAIL)"),
            (DNSQueryRefusedError(dns.Message()), "the DNS server refused the query (REFUSED)"),
            (OSError("unreachable"), "OSError: unreachable"),
        ]:
            d = self.lookUp(lookupFamily(self.resolver, "x.test", dns.A))
            self.resolver.fail("x.test", "A", error)
            failure = self.failureResultOf(d, LookupFailed)
            self.assertEqual(failure.getErrorMessage(), message)

    def test_services(self) -> None:
        """
        SRV records, lowest priority first and heaviest first within one;
        targets normalised; a target of "." (no service there) and a
        record of port 0 left out.
        """
        d = self.lookUp(lookupServices(self.resolver, "_http._tcp.svc.test"))
        name = "_http._tcp.svc.test"
        self.resolver.answer(
            name,
            "SRV",
            [
                srvRecord(name, 20, 5, 80, "C.test.", 40),
                srvRecord(name, 10, 1, 81, "a.test", 30),
                srvRecord(name, 10, 9, 82, "b.test", 50),
                srvRecord(name, 0, 0, 0, "", 50),
                srvRecord(name, 10, 5, 0, "zero.test", 50),
            ],
        )
        answer = self.successResultOf(d)
        self.assertEqual(
            answer.values,
            (
                ServiceRecord(10, 9, 82, "b.test"),
                ServiceRecord(10, 1, 81, "a.test"),
                ServiceRecord(20, 5, 80, "c.test"),
            ),
        )
        self.assertEqual(answer.ttl, 30.0)

    def test_systemNameservers(self) -> None:
        """
        The C{nameserver} lines of a resolv.conf file, on port 53; when it
        has none or is missing, 127.0.0.1.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("# a comment\nsearch example.com\nnameserver 10.0.0.2\nnameserver ::1\n")
        self.assertEqual(systemNameservers(path), [("10.0.0.2", 53), ("::1", 53)])
        self.assertEqual(systemNameservers(self.mktemp()), [("127.0.0.1", 53)])

    def test_makeResolver(self) -> None:
        """
        The resolver asks the configured servers, and reads the hosts file
        first (when there is one): a name in it is answered from it.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("10.1.2.3 users.test\n")
        reactor = UDPReactor()
        resolver = makeResolver(
            ResolverConfig(nameservers=("127.0.0.1:5353",), hosts=path), reactor
        )
        self.assertIsInstance(resolver, StubResolver)
        d = self.lookUp(lookupFamily(resolver, "users.test", dns.A))
        self.assertEqual(self.successResultOf(d).values, ("10.1.2.3",))
        self.assertEqual(reactor.ports, [])
        d = resolver.lookupAddress("other.test")
        [port] = reactor.ports
        self.assertEqual(port.written[0][1], ("127.0.0.1", 5353))
        resolver.close()
        self.failureResultOf(d, CancelledError)


# -- the stub resolver over a memory UDP transport ---------------------------


class MemoryUDPPort:
    """
    A UDP port of L{UDPReactor}: what its protocol writes is kept.
    """

    def __init__(self, protocol: Any, interface: str, number: int) -> None:
        self.protocol = protocol
        self.interface = interface
        self.number = number
        self.written: List[Tuple[bytes, Tuple[str, int]]] = []
        self.listening = True
        protocol.makeConnection(self)

    def write(self, data: bytes, address: Tuple[str, int]) -> None:
        self.written.append((data, address))

    def stopListening(self) -> None:
        self.listening = False
        self.protocol.doStop()

    def getHost(self) -> Any:
        return None


class UDPReactor(MemoryReactorClock):
    """
    A memory reactor (TCP connections kept in C{tcpClients}) that listens
    on memory UDP ports.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ports: List[MemoryUDPPort] = []

    def listenUDP(
        self, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192
    ) -> MemoryUDPPort:
        udp = MemoryUDPPort(protocol, interface, 40000 + len(self.ports))
        self.ports.append(udp)
        return udp


def reply(
    query: bytes,
    answers: List[dns.RRHeader] = (),  # type: ignore[assignment]
    rCode: int = dns.OK,
    trunc: bool = False,
    authority: List[dns.RRHeader] = (),  # type: ignore[assignment]
) -> bytes:
    """
    @return: the bytes of an answer to the query message C{query}.
    """
    asked = dns.Message()
    asked.fromStr(query)
    message = dns.Message(id=asked.id, answer=1, rCode=rCode, trunc=trunc)
    message.queries = asked.queries
    message.answers = list(answers)
    message.authority = list(authority)
    return message.toStr()


class StubResolverTests(SynchronousTestCase):
    """
    L{StubResolver}: servers asked in order over one socket, answers read
    as Twisted's resolver reads them.
    """

    SERVERS = [("10.0.0.53", 53), ("10.0.0.54", 5353)]

    def setUp(self) -> None:
        self.reactor = UDPReactor()
        self.resolver = StubResolver(self.SERVERS, 2.0, self.reactor, queriesPerSocket=3)
        self.lookups: List[Deferred] = []
        # (Cleanups run last first: the resolver closes, then the lookups
        # it failed are consumed.)
        self.addCleanup(lambda: [d.addErrback(lambda f: None) for d in self.lookups])
        self.addCleanup(self.resolver.close)

    def track(self, d: Deferred) -> Deferred:
        """
        @return: C{d}, whose failure when the resolver closes is expected.
        """
        self.lookups.append(d)
        return d

    def lastQuery(self) -> Tuple[bytes, Tuple[str, int]]:
        return self.reactor.ports[-1].written[-1]

    def deliver(self, data: bytes, address: Tuple[str, int]) -> None:
        self.reactor.ports[-1].protocol.datagramReceived(data, address)

    def test_answer(self) -> None:
        """
        A query goes to the first server; its answer gives the sections.
        """
        d = self.resolver.lookupAddress("users.test")
        query, address = self.lastQuery()
        self.assertEqual(address, self.SERVERS[0])
        asked = dns.Message()
        asked.fromStr(query)
        self.assertEqual([(q.name.name, q.type) for q in asked.queries], [(b"users.test", dns.A)])
        self.deliver(reply(query, [aRecord("users.test", "10.0.0.5", 30)]), address)
        answers, authority, additional = self.successResultOf(d)
        self.assertEqual([a.payload.dottedQuad() for a in answers], ["10.0.0.5"])

    def test_onlyFromTheServerAsked(self) -> None:
        """
        An answer from an address that is not a server is dropped (whatever
        Twisted's version): the query times out there, and the next server
        is asked.
        """
        d = self.track(self.resolver.lookupService("_x._tcp.test"))
        query, address = self.lastQuery()
        self.deliver(reply(query, rCode=dns.ENAME), ("10.6.6.6", 53))
        self.assertNoResult(d)
        self.reactor.advance(2.0)
        self.assertEqual(self.lastQuery()[1], self.SERVERS[1])

    def test_timeoutThenNextServer(self) -> None:
        """
        A server that does not answer within the timeout passes the query
        to the next one; when none answers, the lookup fails with
        L{defer.TimeoutError}.
        """
        d = self.resolver.lookupAddress("users.test")
        self.reactor.advance(1.9)
        self.assertEqual(len(self.reactor.ports[0].written), 1)
        self.reactor.advance(0.1)
        query, address = self.lastQuery()
        self.assertEqual(address, self.SERVERS[1])
        self.reactor.advance(2.0)
        self.failureResultOf(d, defer.TimeoutError)

    def test_failureThenNextServer(self) -> None:
        """
        A server that fails (SERVFAIL) or refuses passes the query to the
        next one; the last one's error is the lookup's.
        """
        d = self.resolver.lookupAddress("users.test")
        query, address = self.lastQuery()
        self.deliver(reply(query, rCode=dns.ESERVER), address)
        query, address = self.lastQuery()
        self.assertEqual(address, self.SERVERS[1])
        self.deliver(reply(query, rCode=dns.EREFUSED), address)
        self.failureResultOf(d, DNSQueryRefusedError)

    def test_referralThenNextServer(self) -> None:
        """
        A server that answers with a referral (no record of the type, name
        servers to ask and no SOA: it does not recurse) gave no answer,
        not an empty one (RFC 2308 2.2): the next server is asked, and
        when none answers the lookup fails, so that discovery keeps the
        addresses it had.  An empty answer with an SOA is an answer.
        """
        ns = dns.RRHeader("test", dns.NS, dns.IN, 300, dns.Record_NS("ns.test", 300))
        cname = dns.RRHeader("users.test", dns.CNAME, dns.IN, 30, dns.Record_CNAME("x.other", 30))
        d = self.resolver.lookupAddress("users.test")
        query, address = self.lastQuery()
        self.deliver(reply(query, authority=[ns]), address)
        query, address = self.lastQuery()
        self.assertEqual(address, self.SERVERS[1])
        self.deliver(reply(query, [cname], authority=[ns]), address)
        failure = self.failureResultOf(d, ReferralError)
        resolver = ScriptedResolver()
        lookup = Deferred.fromCoroutine(lookupFamily(resolver, "users.test", dns.A))
        resolver.fail("users.test", "A", failure.value)
        self.assertEqual(
            self.failureResultOf(lookup, LookupFailed).getErrorMessage(),
            "the DNS server gave a referral, not an answer (it does not recurse)",
        )

        d = self.resolver.lookupAddress("empty.test")
        query, address = self.lastQuery()
        self.deliver(reply(query, authority=[soaRecord(30, 30), ns]), address)
        answers, authority, _ = self.successResultOf(d)
        self.assertEqual((answers, len(authority)), ([], 2))

    def test_truncatedAskedOverTCP(self) -> None:
        """
        An answer truncated to UDP's size is asked again over TCP, of the
        same server; the TCP answer is the lookup's, and the connection is
        closed after it.
        """
        d = self.resolver.lookupService("_big._tcp.test")
        query, address = self.lastQuery()
        self.deliver(reply(query, trunc=True), address)
        [(host, port, factory, _, _)] = self.reactor.tcpClients
        self.assertEqual((host, port), self.SERVERS[0])
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        asked = transport.value()
        self.assertEqual(struct.unpack("!H", asked[:2])[0], len(asked) - 2)
        name = "_big._tcp.test"
        answer = reply(asked[2:], [srvRecord(name, 1, 1, 80, "a.test", 30)])
        protocol.dataReceived(struct.pack("!H", len(answer)) + answer)
        answers, _, _ = self.successResultOf(d)
        self.assertEqual([a.payload.port for a in answers], [80])
        self.assertTrue(transport.disconnecting)

    def test_nxdomain(self) -> None:
        """
        NXDOMAIN is the answer: no other server is asked.
        """
        d = self.resolver.lookupAddress("gone.test")
        query, address = self.lastQuery()
        self.deliver(reply(query, rCode=dns.ENAME), address)
        self.failureResultOf(d, DNSNameError)
        self.assertEqual(len(self.reactor.ports[0].written), 1)

    def test_oneSocketForSeveralQueries(self) -> None:
        """
        Queries share one socket (no port opened, and logged, for each);
        after C{queriesPerSocket} of them, once none waits, the next query
        goes out on a new socket and the old one is closed.
        """
        for name in ("a.test", "b.test", "c.test"):
            d = self.resolver.lookupAddress(name)
            query, address = self.lastQuery()
            self.deliver(reply(query), address)
            self.successResultOf(d)
        self.assertEqual(len(self.reactor.ports), 1)
        self.assertEqual(len(self.reactor.ports[0].written), 3)
        self.track(self.resolver.lookupAddress("d.test"))
        self.assertEqual(len(self.reactor.ports), 2)
        self.assertFalse(self.reactor.ports[0].listening)
        self.assertEqual(self.reactor.ports[0].interface, "")

    def test_ipv6Server(self) -> None:
        """
        An IPv6 server is asked from a socket of its own family, at its
        address in the form its answers come from.
        """
        resolver = StubResolver([("0:0::1", 53)], 1.0, self.reactor)
        d = resolver.lookupAddress("x.test")
        self.assertEqual(self.reactor.ports[-1].interface, "::")
        self.assertEqual(self.reactor.ports[-1].written[0][1], ("::1", 53))
        resolver.close()
        self.failureResultOf(d, CancelledError)

    def test_close(self) -> None:
        """
        Closing fails the lookups in flight with L{CancelledError}, stops
        its socket and leaves no timeout behind; later lookups fail too.
        """
        d = self.resolver.lookupAddress("users.test")
        self.resolver.close()
        self.failureResultOf(d, CancelledError)
        self.assertFalse(self.reactor.ports[0].listening)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.failureResultOf(self.resolver.lookupAddress("x.test"), CancelledError)

    def test_needsAServer(self) -> None:
        """
        A resolver without a server is refused.
        """
        self.assertRaises(ValueError, StubResolver, [], 1.0, self.reactor)


# -- the service: schedule, TTL bounds, keeping the last good answer ---------


class DiscoveryServiceTests(SynchronousTestCase):
    """
    L{DNSDiscovery} with a L{Clock} and a L{ScriptedResolver}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.resolver = ScriptedResolver()
        self.found: List[Discovered] = []
        self.discovery = self.make("all")

    def make(self, family: str) -> DNSDiscovery:
        return DNSDiscovery(
            self.clock,
            self.found.append,
            ResolverConfig(minTTL=1.0, maxTTL=300.0, family=family),
            resolver=self.resolver,
        )

    def start(self, hosts: Any = (), services: Any = ()) -> None:
        self.discovery.want(hosts, services)
        self.discovery.startService()
        self.addCleanup(self.discovery.stopService)

    def test_interface(self) -> None:
        """
        It is a service: the process starts and stops it with the others.
        """
        verifyObject(IService, self.discovery)
        self.assertEqual(self.discovery.name, "discovery")

    def test_ownResolver(self) -> None:
        """
        Without a resolver given, it makes one of its settings when it
        starts (no file read, no socket before), and closes it when it
        stops.
        """
        reactor = UDPReactor()
        discovery = DNSDiscovery(
            reactor, self.found.append, ResolverConfig(nameservers=("127.0.0.1:5353",), hosts="")
        )
        discovery.want({"a.test"}, ())
        self.assertEqual(reactor.ports, [])
        discovery.startService()
        [port] = reactor.ports
        self.assertEqual(port.written[0][1], ("127.0.0.1", 5353))
        discovery.stopService()
        self.assertFalse(port.listening)
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_firstLookup(self) -> None:
        """
        Names are looked up when the service starts (A and AAAA for a host
        name); once answered, what was found is reported (once, at the end
        of the reactor's turn) and the service is settled.
        """
        self.discovery.want({"users.test"}, ())
        self.assertEqual(self.resolver.asked, [])
        self.discovery.startService()
        self.addCleanup(self.discovery.stopService)
        self.assertEqual(self.resolver.asked, [("users.test", "A"), ("users.test", "AAAA")])
        self.assertFalse(self.discovery.settled)
        self.resolver.answerHost("users.test", ["10.0.0.6", "10.0.0.5", "fd00::1"])
        self.assertTrue(self.discovery.settled)
        self.assertEqual(self.found, [])
        self.clock.advance(0)
        self.assertEqual(
            self.found, [Discovered({"users.test": ("10.0.0.5", "10.0.0.6", "fd00::1")})]
        )
        self.assertIs(self.discovery.current, self.found[0])

    def test_families(self) -> None:
        """
        Which addresses are servers: by default the IPv4 ones, or the IPv6
        ones when there are none (v4-preferred); v6-preferred the other way
        round; v4-only and v6-only look one family up; all takes both.
        """
        cases = [
            ("v4-preferred", ["10.0.0.1", "fd00::1"], ("10.0.0.1",)),
            ("v4-preferred", ["fd00::1"], ("fd00::1",)),
            ("v6-preferred", ["10.0.0.1", "fd00::1"], ("fd00::1",)),
            ("v6-preferred", ["10.0.0.1"], ("10.0.0.1",)),
            ("all", ["10.0.0.1", "fd00::1"], ("10.0.0.1", "fd00::1")),
        ]
        for family, ips, expected in cases:
            discovery = self.make(family)
            discovery.want({"h.test"}, ())
            discovery.startService()
            self.resolver.answerHost("h.test", ips)
            self.clock.advance(0)
            self.assertEqual(discovery.current.addresses, {"h.test": expected}, family)
            discovery.stopService()
        self.assertEqual(ResolverConfig().family, "v4-preferred")
        # The preferred family first, the other only when it has none.
        for family, first, second in [("v4-preferred", "A", "AAAA"), ("v6-preferred", "AAAA", "A")]:
            self.resolver.asked.clear()
            discovery = self.make(family)
            discovery.want({"h.test"}, ())
            discovery.startService()
            self.assertEqual(self.resolver.asked, [("h.test", first)])
            self.resolver.answer("h.test", first, [])
            self.assertEqual(self.resolver.asked, [("h.test", first), ("h.test", second)])
            discovery.stopService()
        for family, kind in [("v4-only", "A"), ("v6-only", "AAAA")]:
            self.resolver.asked.clear()
            discovery = self.make(family)
            discovery.want({"h.test"}, ())
            discovery.startService()
            self.assertEqual(self.resolver.asked, [("h.test", kind)])
            discovery.stopService()

    def test_againOnTTL(self) -> None:
        """
        A name is looked up again when the least TTL of its answers runs
        out, not before; an answer equal to the last reports nothing.
        """
        self.start({"users.test"})
        self.resolver.answer("users.test", "A", [aRecord("users.test", "10.0.0.5", 30)])
        self.resolver.answer("users.test", "AAAA", [], [soaRecord(60, 60)])
        self.clock.advance(29.9)
        self.assertEqual(self.resolver.waiting("users.test", "A"), 0)
        self.clock.advance(0.1)
        self.assertEqual(self.resolver.waiting("users.test", "A"), 1)
        self.resolver.answer("users.test", "A", [aRecord("users.test", "10.0.0.5", 30)])
        self.resolver.answer("users.test", "AAAA", [])
        self.clock.advance(0)
        self.assertEqual(len(self.found), 1)
        self.assertEqual(
            self.discovery.status()["hosts"]["users.test"]["nextLookup"], self.clock.seconds() + 5
        )

    def test_ttlBounds(self) -> None:
        """
        A TTL is bounded by minTTL and maxTTL: 0 waits 1 s, a day waits
        300 s.
        """
        self.start({"a.test", "b.test"})
        self.resolver.answer("a.test", "A", [aRecord("a.test", "10.0.0.1", 0)])
        self.resolver.answer("a.test", "AAAA", [aaaaRecord("a.test", "fd00::1", 0)])
        self.resolver.answer("b.test", "A", [aRecord("b.test", "10.0.0.2", 86400)])
        self.resolver.answer("b.test", "AAAA", [aaaaRecord("b.test", "fd00::2", 86400)])
        self.clock.advance(0.99)
        self.assertEqual(self.resolver.waiting("a.test", "A"), 0)
        self.clock.advance(0.01)
        self.assertEqual(self.resolver.waiting("a.test", "A"), 1)
        self.clock.advance(298.9)
        self.assertEqual(self.resolver.waiting("b.test", "A"), 0)
        self.clock.advance(0.1)
        self.assertEqual(self.resolver.waiting("b.test", "A"), 1)

    def test_keepsLastGoodAnswer(self) -> None:
        """
        When lookups fail, the name keeps what it had (nothing is reported),
        and is tried again after 1, 2, 4... seconds up to RETRY_MAX; the
        failures are logged once when they begin and once when they end,
        not at each retry.
        """
        self.start({"users.test"})
        self.resolver.answerHost("users.test", ["10.0.0.5"], ttl=10)
        self.clock.advance(10)
        with capturedLogs() as events:
            retries = []
            for _ in range(8):
                self.resolver.fail("users.test", "A", defer.TimeoutError())
                self.resolver.fail("users.test", "AAAA", defer.TimeoutError())
                before = self.clock.seconds()
                while not self.resolver.waiting("users.test", "A"):
                    self.clock.advance(0.5)
                retries.append(self.clock.seconds() - before)
            self.assertEqual(retries, [1, 2, 4, 8, 16, RETRY_MAX, RETRY_MAX, RETRY_MAX])
            self.clock.advance(0)
            self.assertEqual(len(self.found), 1)
            self.assertEqual(self.discovery.current.addresses, {"users.test": ("10.0.0.5",)})
            status = self.discovery.status()["hosts"]["users.test"]
            self.assertEqual(
                (status["values"], status["failures"], status["failingSince"]),
                (["10.0.0.5"], 8, 10.0),
            )
            self.assertIn("no DNS server answered in time", status["error"])
            self.resolver.answerHost("users.test", ["10.0.0.6"], ttl=10)
        warnings = [e for e in events if e["log_level"].name == "warn"]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["values"], "10.0.0.5")
        recovered = [e for e in events if "answered again" in e.get("log_format", "")]
        self.assertEqual([e["failures"] for e in recovered], [8])
        self.clock.advance(0)
        self.assertEqual(self.found[-1].addresses, {"users.test": ("10.0.0.6",)})
        self.assertIsNone(self.discovery.status()["hosts"]["users.test"]["failingSince"])

    def test_failedFirstLookup(self) -> None:
        """
        A name whose first lookup fails has nothing (nothing to report; it
        is settled all the same: it was tried), and is tried again.
        """
        self.start({"users.test"})
        self.resolver.fail("users.test", "A", DNSServerError(dns.Message()))
        self.resolver.fail("users.test", "AAAA", DNSServerError(dns.Message()))
        self.assertTrue(self.discovery.settled)
        self.clock.advance(0)
        self.assertEqual(self.found, [])
        self.clock.advance(1)
        self.assertEqual(self.resolver.waiting("users.test", "A"), 1)

    def test_oneFamilyFails(self) -> None:
        """
        When the AAAA lookup fails and the A one answers, the A addresses
        are taken, and the AAAA ones kept; the next try comes at the
        retry's time (sooner than the TTL).
        """
        self.start({"users.test"})
        self.resolver.answerHost("users.test", ["10.0.0.5", "fd00::5"], ttl=60)
        self.clock.advance(60)
        self.resolver.answer("users.test", "A", [aRecord("users.test", "10.0.0.6", 60)])
        self.resolver.fail("users.test", "AAAA", defer.TimeoutError())
        self.clock.advance(0)
        self.assertEqual(self.found[-1].addresses, {"users.test": ("10.0.0.6", "fd00::5")})
        self.clock.advance(1)
        self.assertEqual(self.resolver.waiting("users.test", "AAAA"), 1)

    def test_nameGone(self) -> None:
        """
        A name that no longer exists (NXDOMAIN) is an answer, not a
        failure: its addresses go, and it is asked again at its negative
        TTL.
        """
        self.start({"users.test"})
        self.resolver.answerHost("users.test", ["10.0.0.5"], ttl=5)
        self.clock.advance(5)
        self.resolver.fail("users.test", "A", nxdomain([soaRecord(20, 20)]))
        self.resolver.fail("users.test", "AAAA", nxdomain([soaRecord(20, 20)]))
        self.clock.advance(0)
        self.assertEqual(self.found[-1].addresses, {"users.test": ()})
        self.clock.advance(19.9)
        self.assertEqual(self.resolver.waiting("users.test", "A"), 0)
        self.clock.advance(0.1)
        self.assertEqual(self.resolver.waiting("users.test", "A"), 1)

    def test_services(self) -> None:
        """
        An SRV name's records count once their targets have been looked
        up: the first report holds both, the records in priority order.
        """
        self.start((), {"_http._tcp.svc.test"})
        name = "_http._tcp.svc.test"
        self.resolver.answer(
            name,
            "SRV",
            [srvRecord(name, 20, 1, 81, "b.test", 30), srvRecord(name, 10, 5, 80, "a.test", 30)],
        )
        self.assertEqual(
            sorted(self.resolver.asked),
            sorted(
                [
                    (name, "SRV"),
                    ("a.test", "A"),
                    ("a.test", "AAAA"),
                    ("b.test", "A"),
                    ("b.test", "AAAA"),
                ]
            ),
        )
        self.resolver.answerHost("a.test", ["10.0.0.1"])
        self.clock.advance(0)
        self.assertEqual(self.found, [])
        self.assertFalse(self.discovery.settled)
        self.resolver.answerHost("b.test", ["10.0.0.2"])
        self.assertTrue(self.discovery.settled)
        self.clock.advance(0)
        self.assertEqual(
            self.found,
            [
                Discovered(
                    {"a.test": ("10.0.0.1",), "b.test": ("10.0.0.2",)},
                    {
                        name: (
                            ServiceRecord(10, 5, 80, "a.test"),
                            ServiceRecord(20, 1, 81, "b.test"),
                        )
                    },
                )
            ],
        )

    def test_serviceTargetsFollowTheRecords(self) -> None:
        """
        A target the records no longer name is no longer looked up; an SRV
        lookup that fails keeps the records (and their targets).
        """
        name = "_s._tcp.test"
        self.start((), {name})
        self.resolver.answer(name, "SRV", [srvRecord(name, 1, 1, 80, "a.test", 10)])
        self.resolver.answerHost("a.test", ["10.0.0.1"], ttl=10)
        self.clock.advance(10)
        self.resolver.fail(name, "SRV", defer.TimeoutError())
        self.clock.advance(0)
        self.assertEqual(
            self.discovery.current.services[name], (ServiceRecord(1, 1, 80, "a.test"),)
        )
        self.resolver.answerHost("a.test", ["10.0.0.1"], ttl=10)
        self.clock.advance(1)
        self.resolver.answer(name, "SRV", [srvRecord(name, 1, 1, 80, "b.test", 10)])
        self.resolver.answerHost("b.test", ["10.0.0.2"], ttl=10)
        self.clock.advance(0)
        self.assertEqual(self.discovery.current.addresses, {"b.test": ("10.0.0.2",)})
        self.clock.advance(30)
        self.assertEqual(self.resolver.waiting("a.test", "A"), 0)

    def test_serviceForgottenWhileItsTargetsAreLookedUp(self) -> None:
        """
        An SRV name forgotten while its new targets are being looked up
        stops quietly: nothing is reported, nothing is logged as broken.
        """
        name = "_s._tcp.test"
        self.start((), {name})
        self.resolver.answer(name, "SRV", [srvRecord(name, 1, 1, 80, "a.test", 10)])
        self.assertEqual(self.resolver.waiting("a.test", "A"), 1)
        with capturedLogs() as events:
            self.discovery.want((), ())
            # (A Deferred that failed unobserved logs when it is collected.)
            gc.collect()
        self.assertEqual([e for e in events if e.get("log_failure")], [])
        self.assertEqual(self.resolver.cancelled, [("a.test", "A"), ("a.test", "AAAA")])
        self.clock.advance(0)
        self.assertEqual(self.found, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_wantFewerNames(self) -> None:
        """
        A name no longer wanted is forgotten: its next lookup never
        happens, its lookup in flight is cancelled, and the report drops
        it.
        """
        self.start({"a.test", "b.test"})
        self.resolver.answerHost("a.test", ["10.0.0.1"])
        self.clock.advance(0)
        self.discovery.want({"b.test"}, ())
        self.assertEqual(self.resolver.cancelled, [])
        self.discovery.want((), ())
        self.assertEqual(sorted(self.resolver.cancelled), [("b.test", "A"), ("b.test", "AAAA")])
        self.clock.advance(0)
        self.assertEqual(self.found[-1], Discovered({}))
        self.clock.advance(100)
        self.assertEqual(self.resolver.waiting("a.test", "A"), 0)

    def test_stop(self) -> None:
        """
        Stopping cancels the lookups in flight and every schedule.
        """
        self.start({"a.test", "b.test"})
        self.resolver.answerHost("a.test", ["10.0.0.1"])
        self.discovery.stopService()
        self.assertEqual(sorted(self.resolver.cancelled), [("b.test", "A"), ("b.test", "AAAA")])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_followsTheManager(self) -> None:
        """
        The names to look up are those of the manager's catalog: the
        current one, and each one it swaps in (but not again for a swap
        that discovery itself caused).
        """
        manager = SnapshotManager(FilterRegistry({}), self.clock, discovery=True)
        manager.apply(storeState(1, servers=[{"name": "s", "addr": "a.test:80"}]))
        self.discovery.follow(manager)
        self.discovery.startService()
        self.addCleanup(self.discovery.stopService)
        self.assertEqual(self.resolver.asked, [("a.test", "A"), ("a.test", "AAAA")])
        manager.apply(storeState(2, servers=[{"name": "s", "addr": "b.test:80"}]))
        self.assertEqual(self.resolver.cancelled, [("a.test", "A"), ("a.test", "AAAA")])
        self.assertEqual(self.resolver.asked[2:], [("b.test", "A"), ("b.test", "AAAA")])
        manager.rediscover(Discovered({"b.test": ("10.0.0.2",)}))
        self.assertEqual(len(self.resolver.asked), 4)


# -- snapshots over discovery --------------------------------------------------


USERS = {"name": "users", "addr": "users.test:8080", "circuitBreaker": {"minRequests": 1}}


class RediscoverTests(SynchronousTestCase):
    """
    L{SnapshotManager.rediscover}: a snapshot of the last store state over
    what discovery found, the live state of what stayed kept.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.manager = SnapshotManager(FilterRegistry({}), self.clock, discovery=True)
        self.swaps: List[Any] = []
        self.manager.addListener(self.swaps.append)

    def test_notYetLookedUp(self) -> None:
        """
        A server whose host was not looked up yet has no backend: its
        cluster has nothing to pick.
        """
        self.manager.apply(
            storeState(servers=[USERS], clusters=[{"name": "c", "servers": ["users"]}])
        )
        self.assertEqual(self.manager.backends, {})
        self.assertIsNone(self.manager.snapshot.clusters["c"].choose())

    def test_addressesComeAndGo(self) -> None:
        """
        Each address is a backend; a new address adds one, a gone address
        removes its own, and the backends that stayed are the same objects
        with their live state (in-flight count, breaker).
        """
        self.manager.apply(
            storeState(servers=[USERS], clusters=[{"name": "c", "servers": ["users"]}])
        )
        snapshot = self.manager.rediscover(Discovered({"users.test": ("10.0.0.5", "10.0.0.6")}))
        self.assertIs(self.manager.snapshot, snapshot)
        self.assertEqual(snapshot.revision, 1)
        kept = self.manager.backends["users@10.0.0.6"]
        self.assertEqual((kept.host, kept.port, kept.name), ("10.0.0.6", 8080, "users@10.0.0.6"))
        kept.requestStarted()
        kept.requestFinished(None, ok=False)
        self.assertEqual(kept.breaker.state, "open")
        kept.requestStarted()
        self.manager.rediscover(Discovered({"users.test": ("10.0.0.6", "10.0.0.7")}))
        self.assertEqual(sorted(self.manager.backends), ["users@10.0.0.6", "users@10.0.0.7"])
        self.assertIs(self.manager.backends["users@10.0.0.6"], kept)
        self.assertEqual((kept.active, kept.breaker.state), (1, "open"))
        self.assertEqual(
            [b.name for b in self.manager.snapshot.clusters["c"].backends],
            ["users@10.0.0.6", "users@10.0.0.7"],
        )
        self.assertEqual(len(self.swaps), 3)

    def test_goneAddressesForgottenByTheClient(self) -> None:
        """
        The process's HTTP client forgets an address that left the DNS at
        the swap: its idle connections closed, its pool and endpoint
        dropped (addresses come and go for good: what it kept of each grew
        for as long as the process ran); the address that stayed keeps
        its pool.
        """
        reactor = MemoryReactorClock()
        client = makeUpstreamClient(reactor, None, self.manager)
        self.manager.apply(
            storeState(servers=[USERS], clusters=[{"name": "c", "servers": ["users"]}])
        )
        self.manager.rediscover(Discovered({"users.test": ("10.0.0.5", "10.0.0.6")}))
        for backend in self.manager.backends.values():
            client.send(backend, b"GET", b"/", Headers(), None, None, lambda *a: None, print)
        self.assertEqual(len(client._pools), 2)
        self.manager.rediscover(Discovered({"users.test": ("10.0.0.6",)}))
        self.assertEqual(list(client._pools), [("10.0.0.6", 8080, None)])

    def test_addressesSpeakTheServersTLS(self) -> None:
        """
        Each address of a server that speaks TLS speaks it too, with the
        server's own L{UpstreamTLS} (which verifies the host name, not the
        address), also after a rediscovery.
        """
        server = dict(USERS, tls={"serverName": None})
        self.manager.apply(
            storeState(servers=[server], clusters=[{"name": "c", "servers": ["users"]}])
        )
        self.manager.rediscover(Discovered({"users.test": ("10.0.0.5", "10.0.0.6")}))
        first = self.manager.backends["users@10.0.0.5"].tls
        self.assertEqual(first.serverName, "users.test")
        self.assertIs(self.manager.backends["users@10.0.0.6"].tls, first)
        self.manager.rediscover(Discovered({"users.test": ("10.0.0.6",)}))
        self.assertIs(self.manager.backends["users@10.0.0.6"].tls, first)

    def test_unchangedClusterKeepsItsBalancer(self) -> None:
        """
        A cluster whose backends did not change keeps its runtime (and its
        round-robin position) when another server's addresses change.
        """
        self.manager.apply(
            storeState(
                servers=[USERS, {"name": "other", "addr": "other.test:80"}],
                clusters=[
                    {"name": "c", "servers": ["users"]},
                    {"name": "d", "servers": ["other"]},
                ],
            )
        )
        self.manager.rediscover(
            Discovered({"users.test": ("10.0.0.5",), "other.test": ("10.0.0.9",)})
        )
        runtime = self.manager.snapshot.clusters["c"]
        self.manager.rediscover(
            Discovered({"users.test": ("10.0.0.5",), "other.test": ("10.0.0.8",)})
        )
        self.assertIs(self.manager.snapshot.clusters["c"], runtime)
        self.assertIsNot(self.manager.snapshot.clusters["d"].backends[0].name, "other@10.0.0.9")

    def test_storeChangeOverDiscovery(self) -> None:
        """
        A store change is built over what discovery found, and nothing is
        compiled again for a discovery change (the routes are the same).
        """
        self.manager.rediscover(Discovered({"users.test": ("10.0.0.5",)}))
        self.assertIsNone(self.manager.snapshot)
        self.manager.apply(storeState(servers=[USERS]))
        self.assertEqual(list(self.manager.backends), ["users@10.0.0.5"])
        router = self.manager.snapshot.router
        self.manager.rediscover(Discovered({"users.test": ("10.0.0.6",)}))
        self.assertIs(self.manager.snapshot.router, router)
        changed = dict(USERS, maxQPS=9)
        self.manager.apply(storeState(2, servers=[changed]))
        self.assertEqual(self.manager.backends["users@10.0.0.6"].config.maxQPS, 9)

    def test_servicePriorities(self) -> None:
        """
        An SRV cluster picks from its lowest priority while any of it is
        available, then from the next one; weights are honoured by a
        weighted balancer.
        """
        cluster = {
            "name": "svc",
            "loadBalance": "weighted-round-robin",
            "discovery": {"dns": "_h._tcp.svc.test"},
        }
        self.manager.apply(storeState(clusters=[cluster]))
        records = sortRecords(
            [
                ServiceRecord(1, 30, 80, "a.test"),
                ServiceRecord(1, 10, 80, "b.test"),
                ServiceRecord(2, 10, 90, "c.test"),
            ]
        )
        self.manager.rediscover(
            Discovered(
                {"a.test": ("10.0.0.1",), "b.test": ("10.0.0.2",), "c.test": ("10.0.0.3",)},
                {"_h._tcp.svc.test": records},
            )
        )
        runtime = self.manager.snapshot.clusters["svc"]
        picks = collections.Counter(runtime.choose().name for _ in range(400))
        self.assertEqual(picks, {"svc@10.0.0.1:80": 300, "svc@10.0.0.2:80": 100})
        self.manager.backends["svc@10.0.0.1:80"].healthy = False
        self.manager.backends["svc@10.0.0.2:80"].healthy = False
        self.assertEqual(runtime.choose().name, "svc@10.0.0.3:90")
        self.manager.backends["svc@10.0.0.2:80"].healthy = True
        self.assertEqual(runtime.choose().name, "svc@10.0.0.2:80")
        self.assertEqual(
            [b.name for b in runtime.backends],
            ["svc@10.0.0.1:80", "svc@10.0.0.2:80", "svc@10.0.0.3:90"],
        )

    def test_healthChecksPerAddress(self) -> None:
        """
        Each address of a server with a health check is checked on its
        own; an address that goes stops being checked (its check in flight
        cancelled).
        """

        class Client(ScriptedUpstreamClient):
            def __init__(self) -> None:
                self.asked: List[Tuple[str, bytes]] = []
                self.cancelled: List[str] = []

            def respond(self, backend: Any, method: bytes, uri: bytes, *rest: Any) -> Deferred:
                self.asked.append((backend.host, uri))
                return Deferred(lambda d: self.cancelled.append(backend.host))

        client = Client()
        health = HealthChecker(client, self.clock, self.manager)
        health.startService()
        self.addCleanup(health.stopService)
        self.manager.apply(storeState(servers=[dict(USERS, healthCheck={"path": "/ping"})]))
        self.manager.rediscover(Discovered({"users.test": ("10.0.0.5", "10.0.0.6")}))
        self.assertEqual(health.checking, ["users@10.0.0.5", "users@10.0.0.6"])
        self.assertEqual(client.asked, [("10.0.0.5", b"/ping"), ("10.0.0.6", b"/ping")])
        self.manager.rediscover(Discovered({"users.test": ("10.0.0.6",)}))
        self.assertEqual(health.checking, ["users@10.0.0.6"])
        self.assertEqual(client.cancelled, ["10.0.0.5"])

    def test_stats(self) -> None:
        """
        The stats of a discovered backend say how it was found.
        """
        self.manager.apply(storeState(servers=[USERS]))
        self.manager.rediscover(Discovered({"users.test": ("10.0.0.5",)}))
        entry = backendJSON(self.manager.backends["users@10.0.0.5"], self.clock.seconds())
        self.assertEqual(entry["addr"], "10.0.0.5:8080")
        self.assertEqual(
            entry["discovered"],
            {"type": "A", "server": "users", "dns": "users.test", "address": "10.0.0.5"},
        )
        static = Backend(parseResource("servers", {"name": "s", "addr": "10.0.0.1:80"}), self.clock)
        self.assertNotIn("discovered", backendJSON(static, 0.0))


class PriorityBalancerTests(SynchronousTestCase):
    """
    L{PriorityBalancer} and L{makeTieredBalancer}.
    """

    def backends(self, *names: str) -> List[Backend]:
        return [
            Backend(parseResource("servers", {"name": n, "addr": "10.0.0.1:80"}), Clock())
            for n in names
        ]

    def test_interface(self) -> None:
        """
        It provides L{ILoadBalancer}, named for its tiers' algorithm, over
        every tier's backends.
        """
        first, second = self.backends("a", "b"), self.backends("c")
        balancer = makeTieredBalancer("round-robin", [first, second])
        self.assertIsInstance(balancer, PriorityBalancer)
        verifyObject(ILoadBalancer, balancer)
        self.assertEqual(balancer.name, "round-robin")
        self.assertEqual(list(balancer.backends), first + second)

    def test_oneTierIsPlain(self) -> None:
        """
        One tier (or none) is the algorithm's own balancer: nothing more on
        the hot path.
        """
        self.assertIsInstance(makeTieredBalancer("round-robin", [self.backends("a")]), RoundRobin)
        self.assertIsNone(makeTieredBalancer("round-robin", []).choose())

    def test_fallsThrough(self) -> None:
        """
        The first tier with an available backend picks; none: L{None}.
        """
        first, second = self.backends("a", "b"), self.backends("c")
        balancer = makeTieredBalancer("round-robin", [first, second])
        self.assertEqual([balancer.choose().name for _ in range(3)], ["a", "b", "a"])
        for b in first:
            b.healthy = False
        self.assertEqual(balancer.choose().name, "c")
        second[0].healthy = False
        self.assertIsNone(balancer.choose())


# -- the relay to workers, the status -----------------------------------------


class RelayTests(SynchronousTestCase):
    """
    The gateway process looks names up, its workers take what it found.
    """

    def test_poolRelays(self) -> None:
        """
        What discovery found goes to every worker, and to a worker started
        later before its first state (so its first snapshot has the
        backends).
        """
        reactor = PoolReactor()
        pool = WorkerPool(reactor, 1, ["python", "-m", "worker"])
        pool.startService()
        self.addCleanup(pool.stopService)
        found = Discovered({"a.test": ("10.0.0.1",)})
        pool.relayDiscovery(found)
        self.assertEqual(sent(reactor.channels[0][1]), [{"discovery": found.toJSON()}])
        pool.relay(state(1))
        pool.count = 2
        pool._spawn(1)
        messages = sent(reactor.channels[1][1])
        self.assertEqual([list(m) for m in messages], [["discovery"], ["state"]])

    def test_workerTakes(self) -> None:
        """
        A worker's link gives what the parent found to its manager; the
        health the parent sends holds for the discovered backends by name.
        """
        reactor = PoolReactor()
        reactor.running = True
        manager = SnapshotManager(FilterRegistry({}), reactor, discovery=True)
        store = RelayedStore()
        link = ParentLink(reactor, 3, store, manager, stats=lambda: {})
        link.startService()
        self.addCleanup(link.stopService)
        protocol, transport = reactor.channels[0]

        def send(message: Any) -> None:
            protocol.dataReceived(json.dumps(message).encode() + b"\n")

        send({"discovery": Discovered({"users.test": ("10.0.0.5",)}).toJSON()})
        self.assertIsNone(manager.snapshot)
        store.receive(fullMessage(storeState(1, servers=[USERS])))
        manager.update(self.successResultOf(store.load()))
        send({"health": {"users@10.0.0.5": False}})
        self.assertEqual(list(manager.backends), ["users@10.0.0.5"])
        self.assertFalse(manager.backends["users@10.0.0.5"].healthy)
        with capturedLogs() as events:
            send({"discovery": {"addresses": []}})
        self.assertEqual(len([e for e in events if e["log_level"].name == "error"]), 1)
        self.assertEqual(list(manager.backends), ["users@10.0.0.5"])


class StatusTests(SynchronousTestCase):
    """
    The gateway's readiness waits for its names' first lookups; its stats
    show discovery.
    """

    def test_readyOnceSettled(self) -> None:
        """
        Ready once the store serves and every name was looked up once.
        """

        class Store:
            ready = True

        clock = Clock()
        resolver = ScriptedResolver()
        discovery = DNSDiscovery(clock, lambda found: None, resolver=resolver)
        discovery.want({"a.test"}, ())
        discovery.startService()
        self.addCleanup(discovery.stopService)
        manager = SnapshotManager(FilterRegistry({}), clock, discovery=True)
        counters = type("Counters", (), {"snapshot": lambda self, m, h: {"servers": {}}})()
        status = GatewayStatus(
            clock,
            None,
            manager,
            counters,
            Store(),
            ServedRevisions(),
            discovery=discovery,
        )
        self.assertFalse(status.ready())
        resolver.answerHost("a.test", ["10.0.0.1"])
        self.assertTrue(status.ready())
        self.assertEqual(status.stats()["discovery"]["hosts"]["a.test"]["values"], ["10.0.0.1"])
