"""
DNS service discovery, for real: a Twisted Names server (C{tests/dns_app.py},
records from a dict that the test changes) on a loopback UDP port, test
backends on loopback addresses, and a C{twistd gateway} process whose
C{resolver:} asks that server.

A host name's several addresses need backends on one port at several
addresses: they listen on 127.0.0.2, 127.0.0.3... (the loopback network;
nothing leaves the machine).  SRV records carry ports, so their backends
share 127.0.0.1.
"""

from __future__ import annotations

import collections
import socket
import threading
import time
from typing import Any, Dict, List, Optional

import pytest
from dnsserver import DNSServer, dnsServer  # noqa: F401
from harness import GatewayProcess, freePort, request, waitFor

pytestmark = pytest.mark.integration

#: The records' TTL, in seconds.
TTL = 1


def gatewayConfig(dns: DNSServer, **resources: Any) -> Dict[str, Any]:
    config: Dict[str, Any] = {
        "proxy": {"accessLog": False},
        "admin": {},
        "resolver": {
            "nameservers": [dns.nameserver],
            "timeout": 0.5,
            "hosts": "",
            "minTTL": 0.2,
        },
        "apis": [{"name": "api", "urlPattern": "/*", "nodes": [{"cluster": "c"}]}],
    }
    config.update(resources)
    return config


def served(gateway: GatewayProcess, count: int) -> List[str]:
    """
    @return: the names of the backends that answered C{count} requests.
    """
    names = []
    for _ in range(count):
        answer = gateway.proxy("GET", "/echo")
        assert answer.status == 200, answer
        names.append(answer.json()["server"])
    return names


def ready(gateway: GatewayProcess) -> None:
    waitFor(
        lambda: request("GET", gateway.adminURL + "/readyz").status == 200,
        10,
        what="the gateway to be ready",
    )


def stats(gateway: GatewayProcess) -> Dict[str, Any]:
    answer = gateway.admin("GET", "/api/v1/stats")
    assert answer.status == 200, answer
    return answer.json()


def servedUntil(gateway: GatewayProcess, predicate: Any, timeout: float, what: str) -> float:
    """
    Send requests until the backends of the last ten satisfy C{predicate}.

    @return: the seconds it took.
    """
    start = time.monotonic()
    waitFor(lambda: predicate(set(served(gateway, 10))), timeout, interval=0.05, what=what)
    return time.monotonic() - start


def usersGateway(dns: DNSServer, gateways: Any, port: int) -> GatewayProcess:
    """
    A gateway whose server C{users} is the name C{users.test} (port
    C{port}), which the DNS server gives the address 127.0.0.2 for now;
    returned once it serves.
    """
    dns.setRecords({"users.test": {"A": ["127.0.0.2"], "ttl": TTL}})
    gateway: GatewayProcess = gateways(
        gatewayConfig(
            dns,
            servers=[{"name": "users", "addr": f"users.test:{port}"}],
            clusters=[{"name": "c", "servers": ["users"]}],
        )
    )
    ready(gateway)
    return gateway


def test_followsAddresses(dnsServer: DNSServer, backends: Any, gateways: Any) -> None:  # noqa: F811
    """
    A server that names a host has a backend per address, each named
    C{server@address}: requests reach an address added to the DNS, and an
    address removed gets no more traffic within its TTL (plus a lookup).
    """
    port = freePort()
    b1 = backends("b1", port=port, host="127.0.0.2")
    b2 = backends("b2", port=port, host="127.0.0.3")
    gateway = usersGateway(dnsServer, gateways, port)
    assert set(served(gateway, 6)) == {"b1"}

    dnsServer.setRecords({"users.test": {"A": ["127.0.0.2", "127.0.0.3"], "ttl": TTL}})
    servedUntil(gateway, lambda names: names == {"b1", "b2"}, TTL + 5, "the new address")
    servers = stats(gateway)["servers"]
    assert sorted(servers) == ["users@127.0.0.2", "users@127.0.0.3"]
    assert servers["users@127.0.0.3"]["addr"] == f"127.0.0.3:{port}"
    assert servers["users@127.0.0.3"]["discovered"] == {
        "type": "A",
        "server": "users",
        "dns": "users.test",
        "address": "127.0.0.3",
    }

    dnsServer.setRecords({"users.test": {"A": ["127.0.0.3"], "ttl": TTL}})
    took = servedUntil(gateway, lambda names: names == {"b2"}, TTL + 5, "the address to go")
    # Within its TTL, and the time of a lookup and of ten requests.
    assert took < TTL + 2.0
    before = b1.stats()["requests"]
    assert set(served(gateway, 20)) == {"b2"}
    assert b1.stats()["requests"] == before
    assert list(stats(gateway)["servers"]) == ["users@127.0.0.3"]
    assert b2.stats()["requests"] > 0


def test_servicePriorityAndWeight(dnsServer: DNSServer, backends: Any, gateways: Any) -> None:  # noqa: F811
    """
    A cluster's SRV records are its servers: the lowest priority serves,
    shared by weight; each is health-checked on its own, and when those of
    the lowest priority all fail their checks the next priority serves.
    """
    heavy, light, backup = backends("heavy"), backends("light"), backends("backup")
    name = "_http._tcp.svc.test"
    dnsServer.setRecords(
        {
            name: {
                "SRV": [
                    [10, 30, heavy.port, "heavy.test"],
                    [10, 10, light.port, "light.test"],
                    [20, 10, backup.port, "backup.test"],
                ],
                "ttl": TTL,
            },
            "heavy.test": {"A": ["127.0.0.1"], "ttl": TTL},
            "light.test": {"A": ["127.0.0.1"], "ttl": TTL},
            "backup.test": {"A": ["127.0.0.1"], "ttl": TTL},
        }
    )
    gateway = gateways(
        gatewayConfig(
            dnsServer,
            clusters=[
                {
                    "name": "c",
                    "loadBalance": "weighted-round-robin",
                    "discovery": {
                        "dns": name,
                        "healthCheck": {"path": "/health", "interval": 0.2, "timeout": 1},
                    },
                }
            ],
        )
    )
    ready(gateway)
    counts = collections.Counter(served(gateway, 40))
    assert counts == {"heavy": 30, "light": 10}
    servers = stats(gateway)["servers"]
    assert sorted(servers) == sorted(f"c@127.0.0.1:{b.port}" for b in (heavy, light, backup))
    assert servers[f"c@127.0.0.1:{light.port}"]["discovered"] == {
        "type": "SRV",
        "cluster": "c",
        "dns": name,
        "address": "127.0.0.1",
        "target": "light.test",
        "priority": 10,
        "weight": 10,
    }
    assert servers[f"c@127.0.0.1:{backup.port}"]["health"]["checked"] is True

    heavy.control("health/down")
    light.control("health/down")
    servedUntil(gateway, lambda names: names == {"backup"}, 5, "the next priority")
    light.control("health/up")
    servedUntil(gateway, lambda names: names == {"light"}, 5, "the lowest priority back")


def connectionsTo(host: str, port: int) -> int:
    """
    @return: the established TCP connections of this machine to
        C{host:port} (an IPv4 address), from C{/proc/net/tcp}.
    """
    address = int.from_bytes(socket.inet_aton(host), "little")
    remote = f"{address:08X}:{port:04X}"
    with open("/proc/net/tcp", encoding="ascii") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return sum(1 for row in rows if row[2] == remote and row[3] == "01")


def test_addressesChangeUnderLoad(dnsServer: DNSServer, backends: Any, gateways: Any) -> None:  # noqa: F811
    """
    Addresses that come and go while requests keep coming fail none of
    them, and the gateway's kept-alive connections to an address that
    left the DNS are closed at once (not after the idle timeout, 60 s:
    with discovery, such an address is gone for good).
    """
    port = freePort()
    backends("b1", port=port, host="127.0.0.2")
    backends("b2", port=port, host="127.0.0.3")
    backends("b3", port=port, host="127.0.0.4")
    gateway = usersGateway(dnsServer, gateways, port)
    failed: List[Any] = []
    seen = set()
    stop = time.monotonic() + 6
    lock = threading.Lock()

    def load() -> None:
        while time.monotonic() < stop:
            answer = gateway.proxy("GET", "/echo")
            with lock:
                if answer.status != 200:
                    failed.append(answer)
                else:
                    seen.add(answer.json()["server"])

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for addresses in (["127.0.0.3"], ["127.0.0.2", "127.0.0.4"], ["127.0.0.3"]):
            time.sleep(1.5)
            dnsServer.setRecords({"users.test": {"A": addresses, "ttl": TTL}})
    finally:
        for thread in threads:
            thread.join(30)
    assert failed == []
    assert seen == {"b1", "b2", "b3"}
    servedUntil(gateway, lambda names: names == {"b2"}, TTL + 5, "the last addresses")
    waitFor(
        lambda: connectionsTo("127.0.0.2", port) + connectionsTo("127.0.0.4", port) == 0,
        10,
        what="the connections to the addresses gone to close",
    )
    assert connectionsTo("127.0.0.3", port) > 0


def test_resolverFailureKeepsLastGood(
    dnsServer: DNSServer,  # noqa: F811
    backends: Any,
    gateways: Any,
) -> None:
    """
    When the DNS server stops answering, the gateway keeps the addresses
    it had (requests go on reaching them), logs the failure once (not at
    every retry) and shows it in the stats; when it answers again, the
    gateway follows its records again.
    """
    port = freePort()
    backends("b1", port=port, host="127.0.0.2")
    backends("b2", port=port, host="127.0.0.3")
    dnsServer.setRecords({"users.test": {"A": ["127.0.0.2", "127.0.0.3"], "ttl": TTL}})
    gateway = gateways(
        gatewayConfig(
            dnsServer,
            servers=[{"name": "users", "addr": f"users.test:{port}"}],
            clusters=[{"name": "c", "servers": ["users"]}],
        )
    )
    ready(gateway)
    servedUntil(gateway, lambda names: names == {"b1", "b2"}, 5, "both addresses")

    dnsServer.stop()

    def failing() -> Optional[Dict[str, Any]]:
        host = stats(gateway)["discovery"]["hosts"]["users.test"]
        return host if host["failures"] >= 3 else None

    host = waitFor(failing, 20, interval=0.2, what="three failed lookups")
    assert host["failingSince"] is not None
    assert host["values"] == ["127.0.0.2", "127.0.0.3"]
    assert "no DNS server answered in time" in host["error"]
    assert set(served(gateway, 10)) == {"b1", "b2"}
    assert gateway.output().count("looking up host users.test failed") == 1

    dnsServer.records = {"users.test": {"A": ["127.0.0.3"], "ttl": TTL}}
    dnsServer.start()
    # The retries back off (1, 2, 4... times minTTL, at most 30 s).
    servedUntil(gateway, lambda names: names == {"b2"}, 15, "the records again")
    assert "users.test is answered again" in gateway.output()
    assert stats(gateway)["discovery"]["hosts"]["users.test"]["failingSince"] is None


def test_workersTakeTheParentsDiscovery(
    dnsServer: DNSServer,  # noqa: F811
    backends: Any,
    gateways: Any,
    tmp_path: Any,
) -> None:
    """
    With several workers, the gateway process looks the names up and its
    workers follow: every worker's requests reach the new address and
    none the removed one; the DNS server is asked by one process, not by
    each worker.
    """
    port = freePort()
    b1 = backends("b1", port=port, host="127.0.0.2")
    backends("b2", port=port, host="127.0.0.3")
    dnsServer.setRecords({"users.test": {"A": ["127.0.0.2"], "ttl": TTL}})
    config = gatewayConfig(
        dnsServer,
        servers=[{"name": "users", "addr": f"users.test:{port}"}],
        clusters=[{"name": "c", "servers": ["users"]}],
        store=f"file:{tmp_path}/gateway-data.json",
    )
    config["proxy"]["workers"] = 2
    started = time.monotonic()
    gateway = gateways(config)
    ready(gateway)
    # Each request on a new connection: the kernel spreads them over both
    # workers.
    servedUntil(gateway, lambda names: names == {"b1"}, 10, "the first address")

    dnsServer.setRecords({"users.test": {"A": ["127.0.0.3"], "ttl": TTL}})
    took = servedUntil(gateway, lambda names: names == {"b2"}, TTL + 5, "the new address")
    assert took < TTL + 2.0
    before = b1.stats()["requests"]
    assert set(served(gateway, 40)) == {"b2"}
    assert b1.stats()["requests"] == before

    def bothWorkers() -> bool:
        # Each worker reports its stats every second.
        proxies = stats(gateway).get("proxies", [])
        return [list(p["stats"]["servers"]) for p in proxies] == [["users@127.0.0.3"]] * 2

    waitFor(bothWorkers, 5, interval=0.2, what="both workers to show the new address")
    elapsed = time.monotonic() - started
    asked = dnsServer.queries().get("users.test A", 0)
    # One process asks, once a TTL (three would ask three times as often).
    assert asked <= elapsed / TTL + 3
