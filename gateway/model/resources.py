"""
The gateway's resources: servers, clusters, apis and routings.

Field names are those of the REST contract (DESIGN.md).  Each class is a
frozen attrs class built from L{gateway.model.schema} fields, so
C{fromJSON(Server, data)} validates with field-level errors and
C{toJSON(server)} gives back the normalised JSON (defaults filled in) that
the store keeps.  L{Catalog} holds one consistent set of resources and
checks the references between them.
"""

from __future__ import annotations

import copy
import re
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import attrs

from gateway.model.regex import compileRegex
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
    Str,
    ValidationError,
    checkCIDR,
    field,
    fromJSON,
    toJSON,
)
from gateway.model.schema import List as ListOf

#: The kinds of resource, in the order in which they may refer to each other
#: (a cluster names servers, an api names clusters, a routing names both).
KINDS = ("servers", "clusters", "apis", "routings")

LOAD_BALANCERS = (
    "round-robin",
    "weighted-round-robin",
    "least-connections",
    "ip-hash",
    "random",
    "p2c-ewma",
)


HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT")


def _checkAddr(value: str) -> None:
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise ValueError("must be host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or any(c in host for c in "/ ?#@"):
        raise ValueError("must be host:port")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("port must be a number from 1 to 65535")


def splitAddr(value: str) -> Tuple[str, int]:
    """
    @return: C{(host, port)} of a C{host:port} (or C{[v6]:port}) address.
    """
    host, _, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def _checkPath(value: str) -> None:
    if not value.startswith("/"):
        raise ValueError("must start with /")


def _checkMethod(value: str) -> None:
    if value != "*" and value.upper() not in HTTP_METHODS:
        raise ValueError("must be * or an HTTP method (" + ", ".join(HTTP_METHODS) + ")")


def _checkPattern(value: str) -> None:
    from gateway.model.urlpattern import parsePattern

    parsePattern(value)


def _checkHost(value: str) -> None:
    from gateway.model.urlpattern import checkHost

    checkHost(value)


_TOKEN_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


def _checkRewrite(value: str) -> None:
    if not value.startswith("/"):
        raise ValueError("must start with /")


@attrs.frozen
class HealthCheck:
    """
    An active health check: the gateway fetches C{path} every C{interval}
    seconds and expects C{status} (and C{body} in the answer, when set).
    """

    path: str = field(Str(check=_checkPath, minLength=1), doc="path to GET, e.g. /health")
    body: Optional[str] = field(Nullable(Str()), None, doc="expected substring of the body")
    interval: float = field(Num(0, 86400, exclusiveMinimum=True), 10.0, doc="seconds")
    timeout: float = field(Num(0, 3600, exclusiveMinimum=True), 5.0, doc="seconds")
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
    window: float = field(Num(0, 3600, exclusiveMinimum=True), 10.0, doc="seconds")
    openTimeout: float = field(Num(0, 86400, exclusiveMinimum=True), 30.0, doc="seconds")
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
    ejectTime: float = field(Num(0, 86400, exclusiveMinimum=True), 30.0, doc="seconds")


@attrs.frozen
class Server:
    """
    One backend address with its own protection settings.
    """

    name: str = field(Name())
    addr: str = field(Str(check=_checkAddr, minLength=1), doc="host:port")
    weight: int = field(Int(0, 10000), 1, doc="share for weighted balancing; 0 = drain")
    maxQPS: int = field(Int(0, 10_000_000), 0, doc="requests per second, 0 = no limit")
    healthCheck: Optional[HealthCheck] = field(Nullable(Obj(HealthCheck)), None)
    circuitBreaker: Optional[CircuitBreaker] = field(Nullable(Obj(CircuitBreaker)), None)
    passiveHealth: Optional[PassiveHealth] = field(Nullable(Obj(PassiveHealth)), None)


@attrs.frozen
class Cluster:
    """
    A named set of servers that serve the same thing, and how to pick one.
    """

    name: str = field(Name())
    servers: Tuple[str, ...] = field(ListOf(Name(), unique=True), ())
    loadBalance: str = field(Enum(LOAD_BALANCERS), "round-robin")


@attrs.frozen
class Node:
    """
    Where an API sends its requests: one cluster, with an optional rewrite.
    """

    cluster: str = field(Name())
    urlRewrite: Optional[str] = field(
        Nullable(Str(check=_checkRewrite)),
        None,
        doc="new path and query; may use {param}, $query.x, $header.x",
    )
    attrName: Optional[str] = field(
        Nullable(Str(minLength=1, maxLength=128)), None, doc="key of this node in an aggregation"
    )
    timeout: float = field(Num(0, 3600, exclusiveMinimum=True), 30.0, doc="seconds")
    required: bool = field(Bool(), True)
    batch: int = field(Int(0, 100), 0, doc="aggregation stage; lower runs first")
    retries: int = field(
        Int(0, 5),
        1,
        doc="retries on another server when a connection fails (idempotent methods only)",
    )


@attrs.frozen
class RateLimit:
    """
    A token bucket: C{rate} per second, up to C{burst} at once, per C{key}.
    """

    rate: float = field(Num(0, 10_000_000, exclusiveMinimum=True))
    burst: Optional[int] = field(Nullable(Int(1, 10_000_000)), None, doc="default: rate")
    key: str = field(
        Str(pattern=r"^(none|ip|header:[A-Za-z0-9!#$%&'*+.^_`|~-]+)$"),
        "none",
        doc="none | ip | header:NAME",
    )
    onLimit: str = field(Enum(("reject", "queue")), "reject", doc="429 at once, or wait")
    maxWait: float = field(Num(0, 60), 1.0, doc="seconds a queued request may wait")


@attrs.frozen
class IPAccess:
    """
    Which client addresses may call an API; C{deny} wins over C{allow}, and
    an empty C{allow} allows everyone not denied.
    """

    allow: Tuple[str, ...] = field(ListOf(Str(check=checkCIDR)), ())
    deny: Tuple[str, ...] = field(ListOf(Str(check=checkCIDR)), ())


@attrs.frozen
class FilterSpec:
    """
    A filter to run for one API, by plugin name, with its configuration.
    """

    name: str = field(Name())
    config: Mapping[str, Any] = field(Map(), attrs.Factory(dict))


def _checkNodes(instance: Any, attribute: Any, nodes: Tuple[Node, ...]) -> None:
    if len(nodes) > 1:
        seen = set()
        for i, node in enumerate(nodes):
            if node.attrName is None:
                raise ValidationError(
                    f"nodes[{i}].attrName", "is required when an API has several nodes"
                )
            if node.attrName in seen:
                raise ValidationError(f"nodes[{i}].attrName", f"duplicate {node.attrName!r}")
            seen.add(node.attrName)


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
        Str(check=_checkPattern, minLength=1), doc="/users/{id}, /users/{id:int}, /files/*"
    )
    nodes: Tuple[Node, ...] = field(
        ListOf(Obj(Node), minItems=1, maxItems=64), validator=_checkNodes
    )
    method: str = field(Str(check=_checkMethod), "*", converter=_upperMethod)
    host: Optional[str] = field(
        Nullable(Str(minLength=1, maxLength=255, check=_checkHost)),
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


CONDITION_SOURCES = ("header", "cookie", "query", "path", "json", "method")


CONDITION_OPS = ("eq", "ne", "lt", "le", "gt", "ge", "in", "match", "exists")


@attrs.frozen
class Condition:
    """
    One test on a request; a routing's conditions are all AND-ed.
    """

    source: str = field(Enum(CONDITION_SOURCES))
    op: str = field(Enum(CONDITION_OPS))
    name: str = field(Str(maxLength=256), "", doc="header/cookie/query/param name or json path")
    value: Any = field(Anything(), None)

    def __attrs_post_init__(self) -> None:
        if self.source != "method" and not self.name:
            raise ValidationError("name", f"is required for source {self.source!r}")
        if self.source in ("header", "cookie") and not _TOKEN_RE.match(self.name):
            raise ValidationError("name", f"is not a valid {self.source} name")
        if self.op == "exists":
            return
        if self.op == "in":
            if not isinstance(self.value, list):
                raise ValidationError("value", "must be a list for op 'in'")
        elif self.op == "match":
            compileRegex(self.value, "value")
        elif self.value is None or isinstance(self.value, (list, dict)):
            raise ValidationError("value", f"must be a string or a number for op {self.op!r}")


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
        Nullable(Str(pattern=r"^(ip|header:[A-Za-z0-9_-]+|cookie:[A-Za-z0-9_.-]+)$")),
        None,
        doc="sticky split key: ip | header:NAME | cookie:NAME",
    )


RESOURCE_CLASSES: Dict[str, type] = {
    "servers": Server,
    "clusters": Cluster,
    "apis": API,
    "routings": Routing,
}


def parseResource(kind: str, data: Any, name: Optional[str] = None) -> Any:
    """
    Parse and validate one resource of C{kind} from its JSON.

    @param name: when given (a C{PUT} to C{/kind/name}), the name the body
        must carry; a body without a name takes it.
    @raise ValidationError: naming the field at fault.
    """
    if name is not None and isinstance(data, dict):
        if "name" not in data:
            data = dict(data, name=name)
        elif data["name"] != name:
            raise ValidationError("name", f"must match the URL ({name!r})")
    return fromJSON(RESOURCE_CLASSES[kind], data)


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

    servers: Mapping[str, Server] = attrs.Factory(dict)
    clusters: Mapping[str, Cluster] = attrs.Factory(dict)
    apis: Mapping[str, API] = attrs.Factory(dict)
    routings: Mapping[str, Routing] = attrs.Factory(dict)

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
        for name, cluster in self.clusters.items():
            for i, server in enumerate(cluster.servers):
                yield "clusters", name, f"servers[{i}]", "servers", server
        for name, api in self.apis.items():
            for i, node in enumerate(api.nodes):
                yield "apis", name, f"nodes[{i}].cluster", "clusters", node.cluster
        for name, routing in self.routings.items():
            yield "routings", name, "cluster", "clusters", routing.cluster
            if routing.api is not None:
                yield "routings", name, "api", "apis", routing.api

    def brokenReferences(self) -> List[Tuple[str, str, str, str, str]]:
        """
        @return: the references whose target does not exist.
        """
        broken = []
        servers, clusters, apis = self.servers, self.clusters, self.apis
        # References are checked before their field name is made: with
        # 10,000 APIs, nearly all of them are fine.
        for name, cluster in clusters.items():
            for i, server in enumerate(cluster.servers):
                if server not in servers:
                    broken.append(("clusters", name, f"servers[{i}]", "servers", server))
        for name, api in apis.items():
            for i, node in enumerate(api.nodes):
                if node.cluster not in clusters:
                    broken.append(("apis", name, f"nodes[{i}].cluster", "clusters", node.cluster))
        for name, routing in self.routings.items():
            if routing.cluster not in clusters:
                broken.append(("routings", name, "cluster", "clusters", routing.cluster))
            if routing.api is not None and routing.api not in apis:
                broken.append(("routings", name, "api", "apis", routing.api))
        return broken

    def usersOf(self, kind: str, name: str) -> List[Tuple[str, str, str]]:
        """
        @return: C{(kind, name, field)} of every resource that names
            C{kind/name}.
        """
        return [(k, n, f) for (k, n, f, tk, tn) in self.references() if tk == kind and tn == name]

    def check(self) -> None:
        """
        @raise ReferenceError: for the first reference to a missing resource.
        """
        for kind, name, fieldName, targetKind, target in self.brokenReferences():
            raise ReferenceError(
                fieldName, f"{kind}/{name} names {targetKind[:-1]} {target!r}, which does not exist"
            )

    def toResources(self) -> Dict[str, Dict[str, dict]]:
        """
        @return: the JSON of every resource, per kind.
        """
        return {
            kind: {name: toJSON(obj) for name, obj in self.kind(kind).items()}
            for kind in RESOURCE_CLASSES
        }


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

    def parse(self, resources: Mapping[str, Mapping[str, Any]]) -> Catalog:
        """
        @raise ValidationError: as L{Catalog.fromResources}.
        """
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
                    raise ValidationError(f"{kind}/{name}:{e.field}", e.message)
                fresh[key] = (copy.deepcopy(dict(data)), obj, data)
                items[name] = obj
            parsed[kind] = items
        self._cache = fresh
        return Catalog(**parsed)
