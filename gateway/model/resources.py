"""
The gateway's resources: certificates, servers, clusters, consumers, apis and
routings.

Field names are those of the REST contract (DESIGN.md).  Each class is a
frozen attrs class built from L{gateway.model.schema} fields, so
C{fromJSON(Server, data)} validates with field-level errors and
C{toJSON(server)} gives back the normalised JSON (defaults filled in) that
the store keeps.  L{Catalog} holds one consistent set of resources and
checks the references between them.
"""

from __future__ import annotations

import copy
import json
import re
from types import MappingProxyType
from typing import Any, ClassVar, Dict, Iterator, List, Mapping, Optional, Tuple

import attrs

from gateway.model import patterns
from gateway.model.cache import Cache
from gateway.model.certificates import (
    HOST_NAME,
    MAX_PEM,
    SNI,
    certificateInfo,
    checkChainOrder,
    checkSNI,
    keyMatches,
    loadChain,
    loadKey,
)
from gateway.model.consumers import ACL, Auth, Consumer, consumerConflicts
from gateway.model.cors import CORS
from gateway.model.headeredits import Transform, transformTemplates
from gateway.model.mock import MockResponse
from gateway.model.regex import RegexError, compileRegex
from gateway.model.schema import (
    Anything,
    Bool,
    Enum,
    Int,
    Map,
    Name,
    Nullable,
    Num,
    Obj,
    Rule,
    Seconds,
    Str,
    ValidationError,
    checkCIDR,
    field,
    fromJSON,
    toJSON,
    writeOnlyFields,
)
from gateway.model.schema import List as ListOf

#: The kinds of resource, in the order in which they may refer to each other
#: (a server names a certificate, a cluster names servers, an api names
#: clusters and consumers, a routing names both).
KINDS = ("certificates", "servers", "clusters", "consumers", "apis", "routings")

LOAD_BALANCERS = (
    "round-robin",
    "weighted-round-robin",
    "least-connections",
    "ip-hash",
    "random",
    "p2c-ewma",
)


#: The record types a cluster's C{discovery} may look up.
DISCOVERY_TYPES = ("SRV",)


HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT")


def splitAddr(value: str) -> Tuple[str, int]:
    """
    @return: C{(host, port)} of a C{host:port} (or C{[v6]:port}) address.
    """
    host, _, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def _checkPattern(value: str) -> None:
    from gateway.model.urlpattern import parsePattern

    parsePattern(value)


def _checkHost(value: str) -> None:
    from gateway.model.urlpattern import checkHost

    checkHost(value)


def CIDR() -> Str:
    """
    An IP network or address (C{10.0.0.0/8}, C{::1}).
    """
    return Str(
        pattern=patterns.CIDR,
        maxLength=64,
        check=checkCIDR,
        patternHint="must be an IP network or address, e.g. 10.0.0.0/8, 10.0.0.1 or ::1/128",
    )


def Path(**kw: Any) -> Str:
    """
    A path sent in a request line: from C{/}, without spaces or control
    characters.
    """
    return Str(
        pattern=patterns.PATH,
        minLength=1,
        path=True,
        patternHint="must start with / and hold no spaces or control characters",
        **kw,
    )


_TOKEN_RE = re.compile(patterns.HEADER_NAME)


@attrs.frozen
class HealthCheck:
    """
    An active health check: the gateway fetches C{path} every C{interval}
    seconds and expects C{status} (and C{body} in the answer, when set).
    """

    path: str = field(Path(), doc="path to GET, e.g. /health")
    body: Optional[str] = field(
        Nullable(Str(controls=True)), None, doc="expected substring of the body"
    )
    interval: float = field(Seconds(86400), 10.0, doc="seconds")
    timeout: float = field(Seconds(3600), 5.0, doc="seconds")
    status: int = field(Int(100, 599), 200, doc="expected HTTP status")
    rise: int = field(Int(1, 100), 1, doc="passes in a row to become healthy")
    fall: int = field(Int(1, 100), 1, doc="failures in a row to become unhealthy")


@attrs.frozen
class CircuitBreaker:
    """
    Stops sending to a failing server: opens when the failure rate within
    C{window} reaches C{failureRateToOpen} over at least C{minRequests}.
    """

    failureRateToOpen: float = field(Num(0, 100, exclusiveMinimum=True), 50.0, doc="%")
    minRequests: int = field(Int(1, 1_000_000), 20)
    window: float = field(Seconds(3600), 10.0, doc="seconds")
    openTimeout: float = field(Seconds(86400), 30.0, doc="seconds")
    halfOpenTrafficRate: float = field(Num(0, 100, exclusiveMinimum=True), 10.0, doc="%")
    successRateToClose: float = field(Num(0, 100, exclusiveMinimum=True), 80.0, doc="%")
    halfOpenRequests: int = field(
        Int(1, 100_000), 10, doc="trial requests judged in half-open before deciding"
    )
    failureStatuses: Tuple[int, ...] = field(
        ListOf(Int(100, 599), unique=True),
        (500, 502, 503, 504),
        doc="upstream statuses that count as failures (connection errors and timeouts always do)",
    )


@attrs.frozen
class PassiveHealth:
    """
    Ejects a server from rotation after C{consecutiveFailures} proxied
    requests in a row failed, for C{ejectTime} seconds.
    """

    consecutiveFailures: int = field(Int(1, 10_000), 5)
    ejectTime: float = field(Seconds(86400), 30.0, doc="seconds")


def _checkChain(value: str) -> None:
    loadChain(value)


def _checkServedChain(value: str) -> None:
    checkChainOrder(loadChain(value))


def _checkKey(value: str) -> None:
    loadKey(value)


def PEM(what: str, check: Any) -> Str:
    """
    PEM text (C{-----BEGIN ...}): lines of printable ASCII, checked by
    C{check}.
    """
    return Str(
        pattern=r"^[\t\n\r -~]*$",
        minLength=1,
        maxLength=MAX_PEM,
        controls=True,
        check=check,
        description=what,
        patternHint="must be PEM text: lines of printable ASCII",
    )


def _lowerCase(values: Tuple[str, ...]) -> Tuple[str, ...]:
    return tuple(v.lower() for v in values)


def _keyMatchesCert(values: Mapping[str, Any]) -> Iterator[Tuple[str, str]]:
    key = values["key"]
    if key is None:
        return
    try:
        chain = loadChain(values["cert"])
        private = loadKey(key)
    except ValueError:
        return  # (each field's own error says why)
    if not keyMatches(chain[0], private):
        yield "key", "does not match cert: it is not the private key of its first certificate"


def _snisUnique(values: Mapping[str, Any]) -> Iterator[Tuple[str, str]]:
    seen = set()
    for i, sni in enumerate(values["snis"]):
        if sni.lower() in seen:
            yield f"snis[{i}]", f"duplicate {sni!r}"
        seen.add(sni.lower())


@attrs.frozen
class Certificate:
    """
    A TLS certificate the proxy's TLS listeners serve to the clients that
    ask for one of its C{snis}, or that a server's C{tls.clientCertificate}
    presents to a backend.  The private key is write-only: it is kept, and
    never answered, exported or logged; a write without it keeps the one
    stored (a renewed certificate of the same key).
    """

    name: str = field(Name())
    cert: str = field(
        PEM("certificate chain", _checkServedChain),
        doc="PEM: the certificate, then the intermediates that sign it, in order",
    )
    key: Optional[str] = field(
        Nullable(PEM("private key", _checkKey)),
        None,
        doc=(
            "PEM private key of cert, unencrypted (RSA of 2048 bits or more, EC, Ed25519,"
            " Ed448). Write-only: never answered. Required to create a certificate; left"
            " out, a write keeps the stored key"
        ),
        access="writeOnly",
        # (Never in a repr, so never in a log line or a traceback's text.)
        repr=False,
    )
    snis: Tuple[str, ...] = field(
        ListOf(
            Str(
                pattern=SNI,
                maxLength=253,
                check=checkSNI,
                patternHint="must be a host name (api.example.com) or *. and one"
                " (*.example.org), in its ASCII form (xn-- for other letters), without a port",
            ),
            maxItems=1000,
        ),
        (),
        doc="server names this certificate is served for: exact, or *. for any one label",
        converter=_lowerCase,
    )

    rules: ClassVar[Tuple[Rule, ...]] = (
        Rule(("cert", "key"), _keyMatchesCert, doc="The key is the private key of cert."),
        Rule(("snis",), _snisUnique, doc="The snis are distinct (ignoring case)."),
    )

    #: What the admin shows of the certificate in its answers, computed
    #: from C{cert}; ignored when sent.
    derived: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "subject": {"type": "string", "description": "subject of the certificate (RFC 4514)"},
        "issuer": {"type": "string", "description": "issuer of the certificate (RFC 4514)"},
        "sans": {
            "type": "array",
            "items": {"type": "string"},
            "description": "the DNS names and IP addresses of its subjectAltName",
        },
        "notBefore": {"type": "string", "description": "valid from (ISO 8601, UTC)"},
        "notAfter": {"type": "string", "description": "valid until (ISO 8601, UTC)"},
        "expiresAt": {"type": "integer", "description": "notAfter, in seconds since the epoch"},
        "fingerprint": {"type": "string", "description": "SHA-256 fingerprint (AB:CD:...)"},
        "chain": {"type": "integer", "description": "how many certificates cert holds"},
    }

    @staticmethod
    def publicJSON(value: Mapping[str, Any]) -> Dict[str, Any]:
        """
        @return: a certificate's JSON as the admin answers it: without its
            key, with what L{derived} describes.
        """
        out = {k: v for k, v in value.items() if k != "key"}
        try:
            out.update(certificateInfo(value["cert"]))
        except (KeyError, TypeError, ValueError):
            pass
        return out


@attrs.frozen
class UpstreamTLS:
    """
    How the proxy speaks TLS to a server: verified by default (the chain
    up to C{ca}, or the system's trusted authorities, and the name), with
    a client certificate when C{clientCertificate} names one.
    """

    verify: bool = field(
        Bool(),
        True,
        doc="verify the server's certificate chain and name; false trusts any certificate",
    )
    ca: Optional[str] = field(
        Nullable(PEM("CA certificates", _checkChain)),
        None,
        doc="PEM certificates of the authorities to trust; null = the system's",
    )
    serverName: Optional[str] = field(
        Nullable(
            Str(
                pattern=HOST_NAME,
                maxLength=253,
                patternHint="must be a host name (api.internal) or an IPv4 address, in its"
                " ASCII form, without a wildcard or a port",
            )
        ),
        None,
        doc="the name sent by SNI and verified; null = the host of addr",
    )
    clientCertificate: Optional[str] = field(
        Nullable(Name()), None, doc="a certificate to present (mutual TLS), by name"
    )


@attrs.frozen
class Server:
    """
    One backend address with its own protection settings.
    """

    name: str = field(Name())
    addr: str = field(
        Str(
            pattern=patterns.ADDR,
            maxLength=300,
            patternHint="must be host:port",
        ),
        doc="host:port; a host name is looked up in the DNS, and each of its addresses is a"
        " server of its own",
    )
    weight: int = field(Int(0, 10000), 1, doc="share for weighted balancing; 0 = drain")
    maxQPS: int = field(Int(0, 10_000_000), 0, doc="requests per second, 0 = no limit")
    healthCheck: Optional[HealthCheck] = field(Nullable(Obj(HealthCheck)), None)
    circuitBreaker: Optional[CircuitBreaker] = field(Nullable(Obj(CircuitBreaker)), None)
    passiveHealth: Optional[PassiveHealth] = field(Nullable(Obj(PassiveHealth)), None)
    tls: Optional[UpstreamTLS] = field(
        Nullable(Obj(UpstreamTLS)),
        None,
        doc="speak HTTPS to this server (requests, health checks, aggregation calls)",
    )


@attrs.frozen
class Discovery:
    """
    Where a cluster finds its servers in the DNS: the SRV records of a name
    (RFC 2782), kept current on their TTL.  Each record's target is resolved
    to its addresses, and each address (with the record's port) is a server
    of the cluster, with the settings given here; the records of the lowest
    priority serve while any of them is available, and their weights are
    the servers' weights.
    """

    dns: str = field(
        Str(
            pattern=patterns.DNS_NAME,
            minLength=1,
            maxLength=253,
            patternHint="must be a DNS name: labels of letters, digits, - and _ separated by dots",
        ),
        doc="the DNS name to look up, e.g. _http._tcp.users.service.internal",
    )
    type: str = field(Enum(DISCOVERY_TYPES), "SRV", doc="the record type: SRV")
    maxQPS: int = field(
        Int(0, 10_000_000), 0, doc="requests per second of each discovered server, 0 = no limit"
    )
    healthCheck: Optional[HealthCheck] = field(
        Nullable(Obj(HealthCheck)), None, doc="checks each discovered server"
    )
    circuitBreaker: Optional[CircuitBreaker] = field(
        Nullable(Obj(CircuitBreaker)), None, doc="one breaker per discovered server"
    )
    passiveHealth: Optional[PassiveHealth] = field(Nullable(Obj(PassiveHealth)), None)


def _serversOrDiscovery(values: Mapping[str, Any]) -> Iterator[Tuple[str, str]]:
    if values["discovery"] is not None and values["servers"]:
        yield "servers", "must be empty when the cluster has discovery (its servers are found)"


#: A cluster's servers are listed or discovered, not both (JSON Schema can
#: say it).
_SERVERS_OR_DISCOVERY = {
    "anyOf": [
        {"not": {"required": ["discovery"]}},
        {"properties": {"discovery": {"nullable": True, "enum": [None]}}},
        {"properties": {"servers": {"maxItems": 0}}},
    ]
}


@attrs.frozen
class Cluster:
    """
    A named set of servers that serve the same thing, and how to pick one:
    the servers are listed (C{servers}) or found in the DNS (C{discovery}).
    """

    name: str = field(Name())
    servers: Tuple[str, ...] = field(ListOf(Name(), unique=True), ())
    loadBalance: str = field(Enum(LOAD_BALANCERS), "round-robin")
    discovery: Optional[Discovery] = field(
        Nullable(Obj(Discovery)), None, doc="find the servers in the DNS instead of listing them"
    )

    rules: ClassVar[Tuple[Rule, ...]] = (
        Rule(("servers", "discovery"), _serversOrDiscovery, schema=_SERVERS_OR_DISCOVERY),
    )


def _defaultOptional(values: Mapping[str, Any]) -> Iterator[Tuple[str, str]]:
    if values["default"] is not None and values["required"]:
        yield "default", "only an optional node (required: false) may have a default"


#: A default only on an optional node (the rule of L{_defaultOptional}).
_DEFAULT_OPTIONAL = {
    "anyOf": [
        {"properties": {"default": {"enum": [None]}}},
        {"required": ["required"], "properties": {"required": {"enum": [False]}}},
    ]
}


@attrs.frozen
class Node:
    """
    Where an API sends its requests: one cluster, with an optional rewrite.
    """

    cluster: str = field(Name())
    urlRewrite: Optional[str] = field(
        Nullable(Path()),
        None,
        doc=(
            "new path and query; may use {param} or $param.x (of the URL pattern), {*},"
            " $query.x, $header.x, $depend.attr.field (aggregation), each also as ${...};"
            " a $ before a letter or { must start one of these (%24 for a literal one)"
        ),
    )
    attrName: Optional[str] = field(
        Nullable(Str(minLength=1, maxLength=128)), None, doc="key of this node in an aggregation"
    )
    timeout: float = field(Seconds(3600), 30.0, doc="seconds")
    required: bool = field(Bool(), True)
    batch: int = field(Int(0, 100), 0, doc="aggregation stage; lower runs first")
    retries: int = field(
        Int(0, 5),
        1,
        doc=(
            "retries on another server when a connection fails or the answer's status is"
            " in retryOn (idempotent methods only)"
        ),
    )
    retryOn: Tuple[int, ...] = field(
        ListOf(Int(400, 599), unique=True, maxItems=20),
        (),
        doc=(
            "statuses answered by a server that send the request to another one, after a"
            " short jittered back-off (idempotent methods only, within retries and the"
            " retry budget), e.g. [502, 503, 504]"
        ),
    )
    default: Any = field(
        Anything(),
        None,
        doc="in an aggregation, the JSON an optional node's attrName gets when the node fails"
        " (instead of null; still named in X-Gateway-Partial)",
    )

    rules: ClassVar[Tuple[Rule, ...]] = (
        Rule(("default", "required"), _defaultOptional, schema=_DEFAULT_OPTIONAL),
    )


@attrs.frozen
class RateLimit:
    """
    A token bucket: C{rate} per second, up to C{burst} at once, per C{key}.
    """

    rate: float = field(Num(0.001, 10_000_000), doc="requests per second, at least 0.001")
    burst: Optional[int] = field(Nullable(Int(1, 10_000_000)), None, doc="default: rate")
    key: str = field(
        Str(
            pattern=r"^(none|ip|consumer|header:[A-Za-z0-9!#$%&'*+.^_`|~-]+)$",
            patternHint="must be none, ip, consumer or header:NAME",
        ),
        "none",
        doc="none | ip | consumer (the API's auth names it) | header:NAME",
    )
    onLimit: str = field(Enum(("reject", "queue")), "reject", doc="429 at once, or wait")
    maxWait: float = field(Num(0, 60), 1.0, doc="seconds a queued request may wait")


@attrs.frozen
class IPAccess:
    """
    Which client addresses may call an API; C{deny} wins over C{allow}, and
    an empty C{allow} allows everyone not denied.
    """

    allow: Tuple[str, ...] = field(ListOf(CIDR()), ())
    deny: Tuple[str, ...] = field(ListOf(CIDR()), ())


@attrs.frozen
class FilterSpec:
    """
    A filter to run for one API, by plugin name, with its configuration.
    """

    name: str = field(Name())
    config: Mapping[str, Any] = field(Map(), attrs.Factory(dict))


def _attrNamesGiven(values: Mapping[str, Any]) -> Iterator[Tuple[str, str]]:
    nodes = values["nodes"]
    if len(nodes) > 1:
        for i, node in enumerate(nodes):
            if node.attrName is None:
                yield f"nodes[{i}].attrName", "is required when an API has several nodes"


def _attrNamesUnique(values: Mapping[str, Any]) -> Iterator[Tuple[str, str]]:
    seen = set()
    for i, node in enumerate(values["nodes"]):
        if node.attrName is not None:
            if node.attrName in seen:
                yield f"nodes[{i}].attrName", f"duplicate {node.attrName!r}"
            seen.add(node.attrName)


#: Several nodes: each has an attrName (JSON Schema can say it).
_ATTR_NAMES_GIVEN = {
    "properties": {
        "nodes": {
            "anyOf": [
                {"maxItems": 1},
                {
                    "items": {
                        "required": ["attrName"],
                        "properties": {"attrName": {"type": "string"}},
                    }
                },
            ]
        }
    }
}


def _nodesOrResponse(values: Mapping[str, Any]) -> Iterator[Tuple[str, str]]:
    if values["response"] is None:
        if not values["nodes"]:
            yield "nodes", "is required: one node or more, unless the API has a mock response"
    elif values["nodes"]:
        yield "response", "an API has nodes or a mock response, not both"


#: Nodes (one or more), or a mock response, never both (the rule of
#: L{_nodesOrResponse}).
_NODES_OR_RESPONSE = {
    "anyOf": [
        {
            "required": ["nodes"],
            "properties": {"nodes": {"type": "array", "minItems": 1}},
            "not": {"required": ["response"], "properties": {"response": {"type": "object"}}},
        },
        {
            "required": ["response"],
            "properties": {"response": {"type": "object"}, "nodes": {"maxItems": 0}},
        },
    ]
}


def _websocketOneNode(values: Mapping[str, Any]) -> Iterator[Tuple[str, str]]:
    if not values["websocket"]:
        return
    if values["response"] is not None:
        yield "websocket", "a WebSocket is relayed to a node: an API with a mock response cannot"
    elif len(values["nodes"]) > 1:
        yield "websocket", "an API with several nodes aggregates: it cannot relay a WebSocket"


#: A websocket API has one node, and no mock response (JSON Schema can say
#: it; a null websocket in a body is the default, false).
_WEBSOCKET_ONE_NODE = {
    "anyOf": [
        {"properties": {"websocket": {"enum": [False, None]}}},
        {
            "properties": {"nodes": {"maxItems": 1}},
            "not": {"required": ["response"], "properties": {"response": {"type": "object"}}},
        },
    ]
}


def _transformParams(values: Mapping[str, Any]) -> Iterator[Tuple[str, str]]:
    transform = values["transform"]
    if transform is None:
        return
    from gateway.model.headeredits import templateParams
    from gateway.model.urlpattern import parsePattern

    names = parsePattern(values["urlPattern"]).paramNames
    for where, template in transformTemplates(transform):
        for param in templateParams(template):
            if param not in names:
                known = ", ".join(n for n in names if n != "*") or "none"
                yield (
                    f"transform.{where}",
                    f"$param.{param} is not a parameter of the URL pattern (it has: {known})",
                )


def _aclNeedsAuth(values: Mapping[str, Any]) -> Iterator[Tuple[str, str]]:
    if values["acl"] is not None and values["auth"] is None:
        yield "acl", "needs auth: an ACL decides by the consumer's groups"
    rateLimit = values["rateLimit"]
    if rateLimit is not None and rateLimit.key == "consumer" and values["auth"] is None:
        yield "rateLimit.key", "consumer needs auth: without it no request has a consumer"
    cache = values["cache"]
    if cache is not None and values["auth"] is None and "consumer" in cache.varyOn:
        i = cache.varyOn.index("consumer")
        yield f"cache.varyOn[{i}]", "consumer needs auth: without it no request has a consumer"


def _cacheOneNode(values: Mapping[str, Any]) -> Iterator[Tuple[str, str]]:
    if values["cache"] is None:
        return
    if values["response"] is not None:
        yield "cache", "a mock response is not cached: it costs nothing to make"
    elif len(values["nodes"]) > 1:
        yield "cache", "an aggregation (several nodes) is not cached: cache its nodes' APIs"


def _websocketMethod(values: Mapping[str, Any]) -> Iterator[Tuple[str, str]]:
    if values["websocket"] and values["method"].upper() not in ("*", "GET"):
        yield "method", "must be GET or * for a websocket API (a handshake is a GET)"


def _upperMethod(value: str) -> str:
    return value.upper()


@attrs.frozen
class API:
    """
    A URL pattern the gateway exposes and the nodes that serve it: one node
    is plain proxying, several nodes an aggregation of their JSON answers.
    """

    name: str = field(Name())
    urlPattern: str = field(
        Str(
            pattern=patterns.URL_PATTERN,
            minLength=1,
            check=_checkPattern,
            path=True,
            patternHint="must be a URL pattern: / then segments of text, {name}, {name:type}"
            " or a last *, without spaces, control characters, ? or #",
        ),
        doc="/users/{id}, /users/{id:int}, /files/*; a parameter is named once, a re: type"
        " holds a valid regular expression with balanced braces, at most 128 segments,"
        " no . or .. segment",
    )
    nodes: Tuple[Node, ...] = field(
        ListOf(Obj(Node), maxItems=64),
        (),
        doc="where requests go: one node, or several (an aggregation); none with a mock response",
    )
    method: str = field(
        Str(
            pattern=patterns.methodPattern(list(HTTP_METHODS)),
            patternHint="must be * or an HTTP method (" + ", ".join(HTTP_METHODS) + ")",
        ),
        "*",
        converter=_upperMethod,
    )
    host: Optional[str] = field(
        Nullable(
            Str(
                pattern=patterns.HOST,
                minLength=1,
                maxLength=255,
                check=_checkHost,
                patternHint="must be a host name (letters, digits, - and _ separated by dots,"
                " optionally starting with *. for any subdomain), an IPv4 address or [IPv6],"
                " without a port",
            )
        ),
        None,
        doc="only requests for this host (example.com, *.example.com)",
    )
    maxQPS: int = field(Int(0, 10_000_000), 0, doc="requests per second, 0 = no limit")
    rateLimit: Optional[RateLimit] = field(Nullable(Obj(RateLimit)), None)
    ipAccess: Optional[IPAccess] = field(Nullable(Obj(IPAccess)), None)
    circuitBreaker: Optional[CircuitBreaker] = field(Nullable(Obj(CircuitBreaker)), None)
    filters: Tuple[FilterSpec, ...] = field(ListOf(Obj(FilterSpec)), ())
    maxBodySize: Optional[int] = field(
        Nullable(Int(0, 1 << 50)),
        None,
        doc="largest request body in bytes (413); null = the proxy's limits.maxBodySize",
    )
    auth: Optional[Auth] = field(
        Nullable(Obj(Auth)), None, doc="who may call: API keys, JWTs, basic; null: anyone"
    )
    acl: Optional[ACL] = field(
        Nullable(Obj(ACL)), None, doc="which consumers' groups may call (needs auth)"
    )

    cors: Optional[CORS] = field(Nullable(Obj(CORS)), None)
    transform: Optional[Transform] = field(Nullable(Obj(Transform)), None)
    response: Optional[MockResponse] = field(
        Nullable(Obj(MockResponse)),
        None,
        doc="a mock: the gateway answers this itself, after the filters (instead of nodes)",
    )
    httpsOnly: bool = field(
        Bool(),
        False,
        doc="plain-HTTP requests get a 308 redirect to the same URL over HTTPS",
    )
    # -- WebSocket pass-through (README: WebSocket) --
    websocket: bool = field(
        Bool(),
        False,
        doc="relay WebSocket handshakes (GET with Upgrade: websocket) to the backend, then"
        " the connection both ways as a byte tunnel; false: Upgrade is stripped",
    )
    websocketIdleTimeout: float = field(
        Num(0, 604800),
        300.0,
        doc="seconds a WebSocket tunnel may carry no byte either way before it is closed;"
        " 0 = never",
    )
    maxWebsockets: int = field(
        Int(0, 10_000_000),
        0,
        doc="open WebSocket tunnels at most, per proxy process; more handshakes get 503;"
        " 0 = no limit",
    )
    cache: Optional[Cache] = field(
        Nullable(Obj(Cache)),
        None,
        doc="a response cache for GET and HEAD (RFC 9111, shared); null: none",
    )

    rules: ClassVar[Tuple[Rule, ...]] = (
        Rule(("nodes",), _attrNamesGiven, schema=_ATTR_NAMES_GIVEN),
        Rule(("nodes",), _attrNamesUnique, doc="The nodes' attrNames are distinct."),
        Rule(("nodes", "response"), _nodesOrResponse, schema=_NODES_OR_RESPONSE),
        Rule(
            ("urlPattern", "transform"),
            _transformParams,
            doc="A transform's $param.NAME names a parameter of the URL pattern.",
        ),
        Rule(
            ("acl", "auth", "rateLimit", "cache"),
            _aclNeedsAuth,
            doc="An acl, a rateLimit keyed by consumer and a cache varying on consumer need auth.",
        ),
        Rule(
            ("cache", "nodes", "response"),
            _cacheOneNode,
            doc="A cache is for an API of one node (not an aggregation, nor a mock).",
        ),
        Rule(("websocket", "nodes", "response"), _websocketOneNode, schema=_WEBSOCKET_ONE_NODE),
        Rule(
            ("websocket", "method"),
            _websocketMethod,
            doc="A websocket API takes GET (or any method, *): a handshake is a GET.",
        ),
    )


CONDITION_SOURCES = ("header", "cookie", "query", "path", "json", "method")


CONDITION_OPS = ("eq", "ne", "lt", "le", "gt", "ge", "in", "match", "exists")


_NAMED_SOURCES = ("query", "path", "json")
_TOKEN_SOURCES = ("header", "cookie")
_COMPARISONS = ("eq", "ne", "lt", "le", "gt", "ge")


def _conditionName(values: Mapping[str, Any]) -> Iterator[Tuple[str, str]]:
    source, name = values["source"], values["name"]
    if source == "method":
        return
    if not name:
        yield "name", f"is required for source {source!r}"
    elif source in _TOKEN_SOURCES and not _TOKEN_RE.match(name):
        yield "name", f"is not a valid {source} name"


def _conditionValue(values: Mapping[str, Any]) -> Iterator[Tuple[str, str]]:
    op, value = values["op"], values["value"]
    if op == "in":
        if not isinstance(value, list):
            yield "value", "must be a list for op 'in'"
    elif op == "match":
        if not isinstance(value, str):
            yield "value", "must be a regular expression string for op 'match'"
    elif op != "exists" and (value is None or isinstance(value, (list, dict))):
        yield "value", f"must be a string, a number or a boolean for op {op!r}"


def _conditionRegex(values: Mapping[str, Any]) -> Iterator[Tuple[str, str]]:
    if values["op"] == "match" and isinstance(values["value"], str):
        try:
            compileRegex(values["value"], "value")
        except RegexError as e:
            yield "value", e.message


def _variant(key: str, choices: Tuple[str, ...], **properties: Any) -> Dict[str, Any]:
    variant: Dict[str, Any] = {"properties": {key: {"enum": list(choices)}}}
    variant["properties"].update(properties)
    if properties:
        variant["required"] = list(properties)
    return variant


#: What name a condition needs, by source (the rule of L{_conditionName}).
_NAME_BY_SOURCE = {
    "anyOf": [
        _variant(
            "source", _TOKEN_SOURCES, name={"type": "string", "pattern": patterns.HEADER_NAME}
        ),
        _variant("source", _NAMED_SOURCES, name={"type": "string", "minLength": 1}),
        _variant("source", ("method",)),
    ]
}

_SCALAR = {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]}

#: What value a condition needs, by op (the rule of L{_conditionValue}).
_VALUE_BY_OP = {
    "anyOf": [
        _variant("op", ("exists",)),
        _variant("op", ("in",), value={"type": "array"}),
        _variant("op", ("match",), value={"type": "string"}),
        _variant("op", _COMPARISONS, value=_SCALAR),
    ]
}


@attrs.frozen
class Condition:
    """
    One test on a request; a routing's conditions are all AND-ed.
    """

    source: str = field(Enum(CONDITION_SOURCES))
    op: str = field(Enum(CONDITION_OPS))
    name: str = field(Str(maxLength=256), "", doc="header/cookie/query/param name or json path")
    value: Any = field(Anything(), None)

    rules: ClassVar[Tuple[Rule, ...]] = (
        Rule(("source", "name"), _conditionName, schema=_NAME_BY_SOURCE),
        Rule(("op", "value"), _conditionValue, schema=_VALUE_BY_OP),
        Rule(
            ("op", "value"),
            _conditionRegex,
            doc="With op match, the value is a valid regular expression.",
        ),
    )


@attrs.frozen
class Routing:
    """
    Sends (C{split}) or copies (C{mirror}) C{trafficRate} % of the requests
    that match every condition to another cluster.
    """

    name: str = field(Name())
    cluster: str = field(Name())
    conditions: Tuple[Condition, ...] = field(ListOf(Obj(Condition)), ())
    api: Optional[str] = field(Nullable(Name()), None, doc="scope to one API")
    strategy: str = field(Enum(("split", "mirror")), "split")
    trafficRate: float = field(Num(0, 100), 100.0, doc="% of matching requests")
    hashOn: Optional[str] = field(
        Nullable(
            Str(
                pattern=r"^(ip|header:[A-Za-z0-9_-]+|cookie:[A-Za-z0-9_.-]+)$",
                patternHint="must be ip, header:NAME or cookie:NAME",
            )
        ),
        None,
        doc="sticky split key: ip | header:NAME | cookie:NAME",
    )


RESOURCE_CLASSES: Dict[str, type] = {
    "certificates": Certificate,
    "servers": Server,
    "clusters": Cluster,
    "consumers": Consumer,
    "apis": API,
    "routings": Routing,
}


def parseResource(kind: str, data: Any, name: Optional[str] = None) -> Any:
    """
    Parse and validate one resource of C{kind} from its JSON.

    @param name: when given (a C{PUT} to C{/kind/name}), the name the body
        must carry; a body without a name takes it.
    @raise ValidationError: gathering every error of the resource.
    """
    errors: List[ValidationError] = []
    if name is not None and isinstance(data, dict):
        if "name" not in data:
            data = dict(data, name=name)
        elif data["name"] != name and isinstance(data["name"], str):
            # Beyond JSON Schema: the document cannot tie a body's field to
            # the URL's.
            errors.append(ValidationError("name", f"must match the URL ({name!r})", semantic=True))
    try:
        resource = fromJSON(RESOURCE_CLASSES[kind], data)
    except ValidationError as e:
        errors.append(e)
    if errors:
        raise ValidationError.collect(errors)
    return resource


def publicJSON(kind: str, value: Mapping[str, Any]) -> Dict[str, Any]:
    """
    @return: a resource's stored JSON as the admin answers it: without its
        write-only fields (a certificate's key), with its derived ones (a
        certificate's expiry).
    """
    view = getattr(RESOURCE_CLASSES[kind], "publicJSON", None)
    if view is None:
        return dict(value)
    out: Dict[str, Any] = view(value)
    return out


def missingSecrets(resource: Any) -> List[ValidationError]:
    """
    @return: an error for each write-only field a resource lacks (a
        certificate without its key cannot serve; only a write to one that
        is stored may leave it out).
    """
    return [
        ValidationError(name, "is required (write-only: it is never shown, so send it)")
        for name in writeOnlyFields(type(resource))
        if getattr(resource, name) is None
    ]


class ReferenceError(ValidationError):
    """
    A resource names one that does not exist, or a resource that is still
    named by others would be removed.  The admin answers 409.
    """


@attrs.frozen
class Catalog:
    """
    One consistent set of resources, parsed, keyed by name per kind.
    """

    certificates: Mapping[str, Certificate] = attrs.Factory(dict)
    servers: Mapping[str, Server] = attrs.Factory(dict)
    clusters: Mapping[str, Cluster] = attrs.Factory(dict)
    apis: Mapping[str, API] = attrs.Factory(dict)
    consumers: Mapping[str, Consumer] = attrs.Factory(dict)
    routings: Mapping[str, Routing] = attrs.Factory(dict)
    #: L{brokenReferences}, once worked out (the admin, then the snapshot
    #: it validates with, ask one catalog).
    _broken: Optional[Tuple[Tuple[str, str, str, str, str], ...]] = attrs.field(
        default=None, init=False, eq=False, repr=False
    )

    @classmethod
    def fromResources(cls, resources: Mapping[str, Mapping[str, Any]]) -> Catalog:
        """
        Parse every resource of a store state.

        @raise ValidationError: for the first invalid resource, its field
            prefixed with C{kind/name:}.
        """
        return CatalogParser().parse(resources)

    def kind(self, kind: str) -> Mapping[str, Any]:
        return getattr(self, kind)

    def withResource(self, kind: str, name: str, resource: Optional[Any]) -> Catalog:
        """
        @return: a catalog with one resource put (or removed, for L{None}).
        """
        items = dict(self.kind(kind))
        if resource is None:
            items.pop(name, None)
        else:
            items[name] = resource
        return attrs.evolve(self, **{kind: items})

    def references(self) -> Iterator[Tuple[str, str, str, str, str]]:
        """
        @return: every reference as C{(kind, name, field, targetKind,
            targetName)}.
        """
        for name, backend in self.servers.items():
            if backend.tls is not None and backend.tls.clientCertificate is not None:
                yield (
                    "servers",
                    name,
                    "tls.clientCertificate",
                    "certificates",
                    backend.tls.clientCertificate,
                )
        for name, cluster in self.clusters.items():
            for i, server in enumerate(cluster.servers):
                yield "clusters", name, f"servers[{i}]", "servers", server
        for name, api in self.apis.items():
            for i, node in enumerate(api.nodes):
                yield "apis", name, f"nodes[{i}].cluster", "clusters", node.cluster
            if api.auth is not None and api.auth.anonymous is not None:
                yield "apis", name, "auth.anonymous", "consumers", api.auth.anonymous
        for name, routing in self.routings.items():
            yield "routings", name, "cluster", "clusters", routing.cluster
            if routing.api is not None:
                yield "routings", name, "api", "apis", routing.api

    def brokenReferences(self) -> List[Tuple[str, str, str, str, str]]:
        """
        @return: the references whose target does not exist.
        """
        if self._broken is not None:
            return list(self._broken)
        broken = []
        servers, clusters, apis = self.servers, self.clusters, self.apis
        certificates = self.certificates
        # References are checked before their field name is made: with
        # 10,000 APIs, nearly all of them are fine.
        for name, backend in servers.items():
            tls = backend.tls
            if (
                tls is not None
                and tls.clientCertificate is not None
                and tls.clientCertificate not in certificates
            ):
                broken.append(
                    (
                        "servers",
                        name,
                        "tls.clientCertificate",
                        "certificates",
                        tls.clientCertificate,
                    )
                )
        for name, cluster in clusters.items():
            for i, server in enumerate(cluster.servers):
                if server not in servers:
                    broken.append(("clusters", name, f"servers[{i}]", "servers", server))
        for name, api in apis.items():
            for i, node in enumerate(api.nodes):
                if node.cluster not in clusters:
                    broken.append(("apis", name, f"nodes[{i}].cluster", "clusters", node.cluster))
            auth = api.auth
            if auth is not None and auth.anonymous is not None:
                if auth.anonymous not in self.consumers:
                    broken.append(("apis", name, "auth.anonymous", "consumers", auth.anonymous))
        for name, routing in self.routings.items():
            if routing.cluster not in clusters:
                broken.append(("routings", name, "cluster", "clusters", routing.cluster))
            if routing.api is not None and routing.api not in apis:
                broken.append(("routings", name, "api", "apis", routing.api))
        object.__setattr__(self, "_broken", tuple(broken))
        return broken

    def usersOf(self, kind: str, name: str) -> List[Tuple[str, str, str]]:
        """
        @return: C{(kind, name, field)} of every resource that names
            C{kind/name}.
        """
        return [(k, n, f) for (k, n, f, tk, tn) in self.references() if tk == kind and tn == name]

    def check(self) -> None:
        """
        @raise ReferenceError: for the first reference to a missing resource
            (L{checkReferences}); else for every conflict (L{conflicts}),
            all in one.
        """
        self.checkReferences()
        conflicts = self.conflicts()
        if conflicts:
            raise ReferenceError.collect(conflicts)

    def checkReferences(self) -> None:
        """
        @raise ReferenceError: for the first reference to a missing resource.
        """
        for kind, name, fieldName, targetKind, target in self.brokenReferences():
            raise ReferenceError(
                fieldName, f"{kind}/{name} names {targetKind[:-1]} {target!r}, which does not exist"
            )

    def conflicts(self) -> List[ReferenceError]:
        """
        @return: an error for each credential two consumers hold and each
            server name (SNI) two certificates claim.
        """
        errors = [
            ReferenceError(f"consumers/{name}:{fieldName}", message)
            for name, fieldName, message in consumerConflicts(self.consumers)
        ]
        errors.extend(
            ReferenceError(
                f"certificates/{name}:snis[{i}]",
                f"{sni!r} is an SNI of certificate {other!r} already",
            )
            for name, i, sni, other in self.sniConflicts()
        )
        return errors

    def sniConflicts(self, last: Optional[str] = None) -> List[Tuple[str, int, str, str]]:
        """
        @param last: the certificate whose SNIs are looked at last (the
            one being written: its own SNIs are the ones at fault).
        @return: C{(name, index, sni, other)} for each SNI of a certificate
            that certificate C{other} (earlier by name, or any other than
            C{last}) claims too: a client asking for it would get either.
        """
        owners: Dict[str, str] = {}
        conflicts = []
        names = sorted(self.certificates)
        if last is not None and last in self.certificates:
            names.remove(last)
            names.append(last)
        for name in names:
            for i, sni in enumerate(self.certificates[name].snis):
                other = owners.setdefault(sni, name)
                if other != name:
                    conflicts.append((name, i, sni, other))
        return conflicts

    def toResources(self) -> Dict[str, Dict[str, dict]]:
        """
        @return: the JSON of every resource, per kind.
        """
        return {
            kind: {name: toJSON(obj) for name, obj in self.kind(kind).items()}
            for kind in RESOURCE_CLASSES
        }


def _privateCopy(data: Mapping[str, Any]) -> Any:
    # The JSON of a store state, copied: through the JSON encoder and
    # decoder, twice as fast as copy.deepcopy.
    try:
        return json.loads(json.dumps(data))
    except (TypeError, ValueError):
        return copy.deepcopy(dict(data))


class CatalogParser:
    """
    Parses store states into L{Catalog}s, parsing only what changed: a
    resource whose JSON equals last time's keeps its parsed object.  With
    10,000 APIs, one change costs one parse, not 10,000.

    The JSON objects of a L{gateway.store.StoreState} are read-only, and a
    new state keeps the objects of the resources a change left alone: a
    resource whose object is the very one parsed last time is known without
    comparing it.  Any other object is compared by value with a private
    copy of what was parsed, so a new object with the same JSON (a store
    that decodes every state afresh) keeps its parse too.
    """

    def __init__(self) -> None:
        #: (kind, name): (a copy of the JSON parsed, the parsed object, the
        #: JSON object it came from).
        self._cache: Dict[Tuple[str, str], Tuple[Any, Any, Any]] = {}
        #: The resources parsed last, and their catalog: the admin reads
        #: the very state its proxy compiled (one pass over 10,000 APIs
        #: less per write).
        self._last: Tuple[Any, Optional[Catalog]] = (None, None)

    def parse(self, resources: Mapping[str, Mapping[str, Any]]) -> Catalog:
        """
        @raise ValidationError: as L{Catalog.fromResources}.
        """
        last, catalog = self._last
        if resources is last and catalog is not None:
            return catalog
        catalog = self._parse(resources)
        # Only a store state's read-only resources are known by identity.
        if isinstance(resources, MappingProxyType):
            self._last = (resources, catalog)
        return catalog

    def _parse(self, resources: Mapping[str, Mapping[str, Any]]) -> Catalog:
        cache = self._cache
        fresh: Dict[Tuple[str, str], Tuple[Any, Any, Any]] = {}
        parsed = {}
        for kind in RESOURCE_CLASSES:
            items = {}
            for name, data in resources.get(kind, {}).items():
                key = (kind, name)
                hit = cache.get(key)
                if hit is not None and (hit[2] is data or hit[0] == data):
                    fresh[key] = hit if hit[2] is data else (hit[0], hit[1], data)
                    items[name] = hit[1]
                    continue
                try:
                    obj = parseResource(kind, dict(data), name)
                except ValidationError as e:
                    raise e.renamed(f"{kind}/{name}:".__add__)
                fresh[key] = (_privateCopy(data), obj, data)
                items[name] = obj
            parsed[kind] = items
        self._cache = fresh
        return Catalog(**parsed)
