"""
A real DNS server for the integration tests, on Twisted Names.

Run it as C{python tests/dns_app.py}: it serves UDP DNS on 127.0.0.1 (a
free port, or C{--port}) from records kept in a dict (at first those of the
JSON file C{--records} names, if any), and a small HTTP
control API on another 127.0.0.1 port; it prints C{READY <dns port>
<control port>} once both listen.

The records, by name (lower case, no trailing dot)::

    {"users.test": {"A": ["127.0.0.2"], "AAAA": ["::1"], "ttl": 1},
     "_http._tcp.users.test": {"SRV": [[priority, weight, port, target]],
                               "ttl": 1}}

A name that is not there gets NXDOMAIN; a name there without records of
the type asked gets an empty answer (NOERROR, no data), with an SOA record
in the authority section whose TTL and minimum are the name's C{ttl}.

Control:
  - C{PUT /records}: the whole dict, replaced (JSON body);
  - C{POST /mode/answer}, C{/mode/servfail} (every query answered SERVFAIL),
    C{/mode/drop} (no query answered: clients time out);
  - C{GET /queries}: C{{"NAME TYPE": count}} of the queries received.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, List, Tuple

from twisted.internet import defer
from twisted.internet import reactor as globalReactor
from twisted.names import common, dns, server
from twisted.names.error import DomainError
from twisted.web.resource import Resource
from twisted.web.server import Site

_TYPES = {dns.A: "A", dns.AAAA: "AAAA", dns.SRV: "SRV", dns.SOA: "SOA"}


class DictAuthority(common.ResolverBase):
    """
    Answers from C{records} (see the module's docstring), as its C{mode}
    says.
    """

    def __init__(self) -> None:
        super().__init__()
        self.records: Dict[str, Dict[str, Any]] = {}
        self.mode = "answer"
        self.queries: Dict[str, int] = {}
        self._dropped: List[defer.Deferred] = []

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any) -> defer.Deferred:
        key = name.decode("ascii", "replace").lower().rstrip(".")
        label = f"{key} {_TYPES.get(type, type)}"
        self.queries[label] = self.queries.get(label, 0) + 1
        if self.mode == "drop":
            d: defer.Deferred = defer.Deferred()
            self._dropped.append(d)
            return d
        if self.mode == "servfail":
            # Anything but a DomainError: the server answers SERVFAIL.
            return defer.fail(RuntimeError("servfail mode"))
        entry = self.records.get(key)
        if entry is None:
            return defer.fail(DomainError(key))
        ttl = int(entry.get("ttl", 1))
        answers: List[dns.RRHeader] = []
        if type == dns.A:
            for ip in entry.get("A", ()):
                answers.append(dns.RRHeader(name, dns.A, dns.IN, ttl, dns.Record_A(ip, ttl)))
        elif type == dns.AAAA:
            for ip in entry.get("AAAA", ()):
                answers.append(dns.RRHeader(name, dns.AAAA, dns.IN, ttl, dns.Record_AAAA(ip, ttl)))
        elif type == dns.SRV:
            for priority, weight, port, target in entry.get("SRV", ()):
                record = dns.Record_SRV(priority, weight, port, target, ttl)
                answers.append(dns.RRHeader(name, dns.SRV, dns.IN, ttl, record))
        authority: List[dns.RRHeader] = []
        if not answers:
            soa = dns.Record_SOA(mname=b"ns.test", rname=b"admin.test", minimum=ttl, ttl=ttl)
            authority.append(dns.RRHeader(b"test", dns.SOA, dns.IN, ttl, soa, auth=True))
        return defer.succeed((answers, authority, []))


class Control(Resource):
    isLeaf = True

    def __init__(self, authority: DictAuthority) -> None:
        super().__init__()
        self.authority = authority

    def render(self, request: Any) -> bytes:
        path = request.path.decode()
        request.setHeader(b"content-type", b"application/json")
        if request.method == b"PUT" and path == "/records":
            self.authority.records = {
                name.lower().rstrip("."): entry
                for name, entry in json.loads(request.content.read()).items()
            }
            return b'{"ok": true}'
        if request.method == b"POST" and path.startswith("/mode/"):
            mode = path[len("/mode/") :]
            if mode not in ("answer", "servfail", "drop"):
                request.setResponseCode(400)
                return b'{"error": "unknown mode"}'
            self.authority.mode = mode
            return b'{"ok": true}'
        if request.method == b"GET" and path == "/queries":
            return json.dumps(self.authority.queries).encode()
        request.setResponseCode(404)
        return b'{"error": "not found"}'


def main(argv: List[str]) -> Tuple[int, int]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--records", help="a JSON file of the records to start with")
    options = parser.parse_args(argv)
    authority = DictAuthority()
    if options.records:
        with open(options.records, encoding="utf-8") as f:
            authority.records = {
                name.lower().rstrip("."): entry for name, entry in json.load(f).items()
            }
    factory = server.DNSServerFactory(authorities=[authority])
    udp = globalReactor.listenUDP(
        options.port, dns.DNSDatagramProtocol(factory), interface=options.host
    )
    control = globalReactor.listenTCP(0, Site(Control(authority)), interface=options.host)
    return udp.getHost().port, control.getHost().port


if __name__ == "__main__":
    dnsPort, controlPort = main(sys.argv[1:])
    print(f"READY {dnsPort} {controlPort}", flush=True)
    globalReactor.run()
