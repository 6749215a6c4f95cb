"""
The gateway's config file (C{twistd gateway --config gateway.yaml}).

The file says which roles the process runs (C{proxy:}, C{admin:} or both),
where each listens (Twisted endpoint strings), which store holds the
resources, and may seed resources (C{certificates:}, C{servers:},
C{clusters:}, C{apis:}, C{routings:} in their REST form; a certificate may
name PEM files, C{certFile} and C{keyFile}, relative to the file)::

    proxy:
      listen: tcp:8080:interface=127.0.0.1
      tlsListen: [tcp:8443:interface=127.0.0.1]
      tlsDefaultCertificate: main
      http2: true                 # h2 by ALPN on tlsListen
      h2c: false                  # HTTP/2 with prior knowledge on listen
      filters: [request-id]
      trustedProxies: [10.0.0.0/8]
      accessLog: {path: /var/log/gateway/access.log}   # or true / false
    admin:
      listen: tcp:9090:interface=127.0.0.1
      token: change-me
    store: file:./gateway-data.json
    resolver: {nameservers: ["127.0.0.1:5353"], timeout: 2}
    limits: {store: "redis://127.0.0.1:6379/0", onFailure: local}
    servers: [{name: s1, addr: "127.0.0.1:9001"}]

Everything is checked before the gateway starts: a missing, unreadable or
invalid file raises L{ConfigError}, which names the key at fault
(C{"proxy.listen"}, C{"servers[2].addr"}).
"""

from __future__ import annotations

import os
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Collection,
    Dict,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import attrs
import yaml

from gateway.model import patterns
from gateway.model.accesslog import AccessLogConfig, AccessLogSetting
from gateway.model.cache import CacheSettings
from gateway.model.certificates import inlineCertificateFiles
from gateway.model.consumers import keepCredentials
from gateway.model.endpoints import isLoopbackEndpoint
from gateway.model.limits import DEFAULT_MAX_IDLE, HTTPLimits
from gateway.model.resources import KINDS, Catalog, FilterSpec, missingSecrets, parseResource
from gateway.model.schema import (
    Bool,
    Enum,
    Int,
    Name,
    Nullable,
    Num,
    Obj,
    Rule,
    Seconds,
    Spec,
    Str,
    ValidationError,
    checkCIDR,
    field,
    fromJSON,
)
from gateway.model.schema import List as ListOf
from gateway.model.sharedlimits import LimitsConfig
from gateway.model.tracing import TracingConfig

DEFAULT_STORE = "file:gateway-data.json"


STORE_SCHEMES = ("file:", "memory:", "etcd://")


class ConfigError(ValueError):
    """
    The config file is missing, unreadable or invalid.

    @ivar key: the dotted path of the (first) key at fault, e.g.
        C{"proxy.listen"} or C{"servers[2].addr"}; empty when the file as a
        whole is at fault.
    @ivar message: what is wrong with it, for a human.
    @ivar source: the file (or other origin) of the config.
    @ivar errors: C{(key, message)} of every error found, the first one
        first.
    """

    def __init__(
        self,
        key: str,
        message: str,
        source: str = "",
        errors: Optional[Sequence[Tuple[str, str]]] = None,
    ) -> None:
        self.key = key
        self.message = message
        self.source = source
        self.errors: Tuple[Tuple[str, str], ...] = tuple(errors) if errors else ((key, message),)
        lines = [": ".join([p for p in (source, k) if p] + [m]) for k, m in self.errors]
        if len(lines) == 1:
            text = lines[0]
        else:
            head = f"{source}: " if source else ""
            text = f"{head}{len(lines)} errors:\n" + "\n".join("  " + line for line in lines)
        super().__init__(text)

    @classmethod
    def fromValidation(cls, error: ValidationError, source: str) -> ConfigError:
        """
        @return: the config error of every error that C{error} gathers.
        """
        return cls(
            error.field,
            error.message,
            source,
            [(leaf.field, leaf.message) for leaf in error.errors],
        )


def _checkEndpoint(description: str) -> None:
    # A MemoryReactor lets Twisted's own parser check the whole string
    # (type, arguments, certificate files) without listening on anything.
    from twisted.internet.endpoints import serverFromString
    from twisted.internet.testing import MemoryReactor

    example = "e.g. tcp:8080:interface=127.0.0.1"
    try:
        endpoint = serverFromString(MemoryReactor(), description)
    except Exception as e:
        raise ValueError(f"{description!r} is not a valid Twisted endpoint ({e}); {example}")
    port = getattr(endpoint, "_port", None)
    if isinstance(port, int) and not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range (0 to 65535)")


def _checkPlainEndpoint(description: str) -> None:
    if description.strip().lower().startswith("ssl:"):
        raise ValueError(
            f"{description!r} is a TLS endpoint: tlsListen takes a plain one (e.g."
            " tcp:8443:interface=127.0.0.1), to which the gateway adds TLS with the"
            " certificates of its store"
        )
    _checkEndpoint(description)


def endpointTuple(value: Any) -> Tuple[str, ...]:
    """
    @return: endpoint strings as a tuple (one given alone, or several).
    """
    return (value,) if isinstance(value, str) else tuple(value)


@attrs.frozen
class Endpoints(Spec):
    """
    One Twisted endpoint string, or a list of them: parsed to a tuple.
    """

    check: Any = _checkEndpoint
    minItems: int = 1

    def _item(self) -> Str:
        return Str(check=self.check, minLength=1)

    def parse(self, value: Any, path: str) -> Tuple[str, ...]:
        if isinstance(value, str):
            return (self._item().parse(value, path),)
        if isinstance(value, list):
            parsed: Tuple[str, ...] = ListOf(
                self._item(), minItems=self.minItems, maxItems=64, unique=True
            ).parse(value, path)
            return parsed
        kind = "null" if value is None else type(value).__name__
        raise ValidationError(
            path, f"must be a string (an endpoint) or a list of strings, not {kind}"
        )

    def dump(self, value: Any) -> Any:
        return list(value)

    def schema(self) -> dict:
        item = self._item().schema()
        return {"anyOf": [item, {"type": "array", "items": item, "minItems": self.minItems}]}


def _checkHostPort(hostPort: str, url: str) -> None:
    host, _, port = hostPort.rpartition(":")
    if not host:
        raise ValueError(f"{url!r} needs HOST:PORT, e.g. etcd://127.0.0.1:2379/gateway")
    if not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"{url!r}: {port!r} is not a port number")


def _checkStore(url: str) -> None:
    if not url.startswith(STORE_SCHEMES):
        raise ValueError(
            f"unknown store {url!r}: use file:PATH, memory: or etcd://HOST:PORT/PREFIX"
        )
    if url.startswith("file:"):
        path = url[len("file:") :]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise ValueError("file: needs a path, e.g. file:./gateway-data.json")
    elif url.startswith("etcd://"):
        hosts = url[len("etcd://") :].partition("/")[0]
        for hostPort in hosts.split(","):
            _checkHostPort(hostPort, url)


@attrs.frozen
class _FilterRef(Spec):
    """
    A filter named in the config: its plugin name alone, or C{{name, config}}.
    """

    def parse(self, value: Any, path: str) -> FilterSpec:
        if isinstance(value, str):
            return FilterSpec(name=Name().parse(value, path))
        return fromJSON(FilterSpec, value, path)

    def schema(self) -> dict:
        return {}


@attrs.frozen
class ProxyConfig:
    """
    The C{proxy:} section: the gateway's public side.
    """

    listen: Tuple[str, ...] = field(
        Endpoints(minItems=0),
        (),
        doc="Twisted endpoint string of plain HTTP, or a list of them",
        converter=endpointTuple,
    )
    tlsListen: Tuple[str, ...] = field(
        Endpoints(check=_checkPlainEndpoint, minItems=0),
        (),
        converter=endpointTuple,
        doc=(
            "endpoint string (tcp:8443) where the proxy serves HTTPS with the certificates"
            " of the store, chosen by SNI; or a list of them"
        ),
    )
    tlsDefaultCertificate: Optional[str] = field(
        Nullable(Name()),
        None,
        doc=(
            "the certificate served to TLS clients whose name (SNI) no certificate serves;"
            " null = their handshakes fail"
        ),
    )
    http2: bool = field(
        Bool(),
        True,
        doc="offer HTTP/2 (h2) besides HTTP/1.1 by ALPN on the tlsListen endpoints",
    )
    h2c: bool = field(
        Bool(),
        False,
        doc=(
            "accept HTTP/2 without TLS on the listen endpoints from clients that start with"
            " its connection preface (prior knowledge)"
        ),
    )
    filters: Tuple[FilterSpec, ...] = field(
        ListOf(_FilterRef()), (), doc="global filters, by plugin name, run for every API"
    )
    trustedProxies: Tuple[str, ...] = field(
        ListOf(Str(check=checkCIDR)), (), doc="CIDRs whose X-Forwarded-For is believed"
    )
    accessLog: Union[bool, AccessLogConfig] = field(
        AccessLogSetting(),
        attrs.Factory(AccessLogConfig),
        doc=(
            "true: JSON lines on the standard output; false: none; or an object: "
            "{path, format, fields, flushInterval, bufferSize, maxPending, facility, tag}"
        ),
    )
    workers: Optional[int] = field(
        Nullable(Int(0, 256)),
        None,
        doc=(
            "proxy processes sharing the port (SO_REUSEPORT); 0 = one per core; unset = one "
            "per core when they can share the port and the store (a tcp: listen endpoint, a "
            "file: or etcd:// store), else 1"
        ),
    )
    drainTimeout: float = field(
        Num(0, 3600), 10.0, doc="seconds a stopping proxy waits for requests in flight"
    )
    upstreamKeepalive: int = field(
        Int(0, 65536),
        DEFAULT_MAX_IDLE,
        doc="idle keep-alive connections kept per server (more are closed); 0 = none",
    )
    limits: HTTPLimits = field(
        Obj(HTTPLimits),
        attrs.Factory(HTTPLimits),
        doc="request size limits and client timeouts (413, 414, 431, 408)",
    )
    cache: CacheSettings = field(
        Obj(CacheSettings),
        attrs.Factory(CacheSettings),
        doc="the response cache of each proxy process: its memory, its calls to Redis",
    )


@attrs.frozen
class AdminConfig:
    """
    The C{admin:} section: the REST API, the web UI and C{/metrics}.
    """

    listen: str = field(Str(check=_checkEndpoint, minLength=1), doc="Twisted endpoint string")
    token: Optional[str] = field(
        Nullable(
            Str(
                pattern=r"^[^\s]([^\x00-\x1f\x7f-\x9f]*[^\s])?$",
                minLength=1,
                patternHint="must not start or end with a space, nor hold control characters",
            )
        ),
        None,
        doc="bearer token; null = no authentication",
    )
    propagationTimeout: float = field(
        Num(0, 60),
        2.0,
        doc="seconds a write waits for its change to serve on every proxy before it answers",
    )


#: The choices of C{resolver.family} (as Envoy's C{dns_lookup_family}).
ADDRESS_FAMILIES = ("v4-preferred", "v6-preferred", "v4-only", "v6-only", "all")


#: A DNS server: an IP address, with an optional port (53 by default).
_NAMESERVER = (
    rf"^({patterns.IPV4}(:[0-9]{{1,5}})?|\[{patterns.IPV6}\](:[0-9]{{1,5}})?|{patterns.IPV6})$"
)


def parseNameserver(value: str) -> Tuple[str, int]:
    """
    @param value: a C{resolver.nameservers} entry: C{10.0.0.2},
        C{10.0.0.2:5353}, C{::1} or C{[::1]:5353}.
    @return: C{(ip, port)}.
    @raise ValueError: when the port is out of range.
    """
    if value.startswith("["):
        host, _, port = value[1:].partition("]")
        port = port[1:]
    elif value.count(":") == 1:
        host, _, port = value.partition(":")
    else:
        host, port = value, ""
    number = int(port) if port else 53
    if not 0 < number < 65536:
        raise ValueError(f"port {number} is out of range (1 to 65535)")
    return host, number


def _checkNameserver(value: str) -> None:
    parseNameserver(value)


def _ttlBounds(values: Mapping[str, Any]) -> Any:
    if values["minTTL"] > values["maxTTL"]:
        yield "minTTL", "must not be above maxTTL"


@attrs.frozen
class ResolverConfig:
    """
    The C{resolver:} section: how the gateway looks up the host names of
    servers and the SRV records of clusters' C{discovery}
    (L{gateway.discovery}).
    """

    nameservers: Tuple[str, ...] = field(
        ListOf(
            Str(
                pattern=_NAMESERVER,
                check=_checkNameserver,
                patternHint="must be an IP address with an optional port: 10.0.0.2,"
                " 127.0.0.1:5353, ::1 or [::1]:5353",
            ),
            maxItems=16,
            unique=True,
        ),
        (),
        doc="the DNS servers to ask, in order; empty = those of /etc/resolv.conf",
    )
    timeout: float = field(
        Seconds(60), 2.0, doc="seconds to wait for each DNS server's answer before the next"
    )
    hosts: str = field(
        Str(),
        "/etc/hosts",
        doc='a hosts file whose names are answered before the DNS; "" = none',
    )
    family: str = field(
        Enum(ADDRESS_FAMILIES),
        "v4-preferred",
        doc=(
            "which addresses of a host name are servers: v4-preferred (its IPv4 ones, or its"
            " IPv6 ones when it has none), v6-preferred, v4-only, v6-only, or all"
        ),
    )
    minTTL: float = field(
        Seconds(3600), 1.0, doc="seconds: a name is not looked up again sooner than this"
    )
    maxTTL: float = field(
        Seconds(86400), 300.0, doc="seconds: a name is looked up again at least this often"
    )

    rules: ClassVar[Tuple[Rule, ...]] = (
        Rule(("minTTL", "maxTTL"), _ttlBounds, doc="minTTL is at most maxTTL."),
    )


@attrs.frozen
class GatewayConfig:
    """
    A checked config file.

    @ivar proxy: the proxy role, or L{None} when this process runs no proxy.
    @ivar admin: the admin role, or L{None}.
    @ivar store: the store URL (C{file:PATH}, C{memory:}, C{etcd://...}).
    @ivar seed: C{{kind: (resource, ...)}} for every kind in
        L{gateway.store.KINDS}, parsed model objects in file order.
    @ivar path: where the config came from (the file's path).
    @ivar resolver: the L{ResolverConfig}.
    @ivar tracing: the C{tracing:} section (L{TracingConfig}), or L{None}
        when nothing is traced.
    @ivar limits: the C{limits:} section (limits held by the fleet on
        Redis), or L{None}.
    """

    proxy: Optional[ProxyConfig]
    admin: Optional[AdminConfig]
    store: str = DEFAULT_STORE
    seed: Mapping[str, Tuple[Any, ...]] = attrs.Factory(lambda: {kind: () for kind in KINDS})
    path: Optional[str] = None
    resolver: ResolverConfig = ResolverConfig()
    tracing: Optional[TracingConfig] = None
    limits: Optional[LimitsConfig] = None


_SECTIONS = {
    "proxy": ProxyConfig,
    "admin": AdminConfig,
    "tracing": TracingConfig,
    "limits": LimitsConfig,
}


_TOP_KEYS = ("proxy", "admin", "store", "resolver", "tracing", "limits") + KINDS


def _parseSeed(
    data: Mapping[str, Any], baseDirectory: Optional[str] = None
) -> Dict[str, Tuple[Any, ...]]:
    """
    @param baseDirectory: where the paths of certificate files start
        (C{certFile}, C{keyFile}: the config file's directory).
    @raise ValidationError: gathering every error of the seed resources:
        each invalid one, each name given twice, each reference to a
        resource that is not seeded, each certificate without its key.
    """
    seed: Dict[str, Tuple[Any, ...]] = {}
    index: Dict[Tuple[str, str], int] = {}
    errors: List[ValidationError] = []
    for kind in KINDS:
        items = data.get(kind)
        if items is None:
            seed[kind] = ()
            continue
        if not isinstance(items, list):
            errors.append(ValidationError(kind, "must be a list of resources"))
            seed[kind] = ()
            continue
        parsed: List[Any] = []
        for i, item in enumerate(items):
            try:
                if kind == "certificates":
                    item = inlineCertificateFiles(item, baseDirectory)
                resource = parseResource(kind, item)
                if kind == "consumers":
                    # A config file has no stored credential to keep: each
                    # needs its secret.
                    keepCredentials(resource, None)
                missing = missingSecrets(resource)
                if missing:
                    raise ValidationError.collect(missing)
            except ValidationError as e:
                errors.append(e.within(f"{kind}[{i}]"))
                continue
            if (kind, resource.name) in index:
                first = index[(kind, resource.name)]
                errors.append(
                    ValidationError(
                        f"{kind}[{i}].name",
                        f"duplicate name {resource.name!r} (as {kind}[{first}])",
                    )
                )
                continue
            index[(kind, resource.name)] = i
            parsed.append(resource)
        seed[kind] = tuple(parsed)
    if not errors:
        # References are checked between valid resources only: one that
        # was refused would be reported twice.
        catalog = Catalog(**{kind: {r.name: r for r in seed[kind]} for kind in KINDS})
        for kind, name, fieldName, targetKind, target in catalog.brokenReferences():
            errors.append(
                ValidationError(
                    f"{kind}[{index[(kind, name)]}].{fieldName}",
                    f"names {targetKind[:-1]} {target!r}, which is not among the seeded"
                    f" {targetKind}",
                )
            )
    if errors:
        raise ValidationError.collect(errors)
    return seed


def _directoryOf(source: str) -> Optional[str]:
    if source.startswith("<"):
        return None
    return os.path.dirname(os.path.abspath(source))


def parseConfig(
    data: object, source: str = "<config>", filterNames: Optional[Collection[str]] = None
) -> GatewayConfig:
    """
    Check the parsed YAML (or JSON) of a config file.

    @param data: what C{yaml.safe_load} gave.
    @param source: where C{data} came from, for error messages and
        L{GatewayConfig.path}.
    @param filterNames: the filter plugins installed, when the global
        filters (C{proxy.filters}) are to be checked against them with
        every other error; L{None}: not checked.
    @raise ConfigError: naming every key at fault (L{ConfigError.errors}),
        the first one in C{key}.
    """
    if data is None:
        raise ConfigError("", "the config is empty; it needs a proxy: or admin: section", source)
    if not isinstance(data, dict):
        raise ConfigError("", "must be a mapping of keys (proxy:, admin:, store:, ...)", source)
    errors: List[ValidationError] = []
    for key in data:
        if key not in _TOP_KEYS:
            errors.append(
                ValidationError(str(key), "is not a known key; known keys: " + ", ".join(_TOP_KEYS))
            )
    if "proxy" not in data and "admin" not in data:
        errors.append(ValidationError("", "needs a proxy: or an admin: section (or both)"))
    sections: Dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        sections[name] = None
        if name in data:
            try:
                sections[name] = fromJSON(cls, data[name], name)
            except ValidationError as e:
                errors.append(e)
    store = DEFAULT_STORE
    try:
        store = Str(check=_checkStore, minLength=1).parse(data.get("store", DEFAULT_STORE), "store")
    except ValidationError as e:
        errors.append(e)
    resolver = ResolverConfig()
    if data.get("resolver") is not None:
        try:
            resolver = fromJSON(ResolverConfig, data["resolver"], "resolver")
        except ValidationError as e:
            errors.append(e)
    seed: Dict[str, Tuple[Any, ...]] = {kind: () for kind in KINDS}
    try:
        seed = _parseSeed(data, _directoryOf(source))
    except ValidationError as e:
        errors.append(e)
    proxy, admin = sections["proxy"], sections["admin"]
    if proxy is not None and not proxy.listen and not proxy.tlsListen:
        errors.append(ValidationError("proxy.listen", "is required (or proxy.tlsListen)"))
    if admin is not None and admin.token is None and not isLoopbackEndpoint(admin.listen):
        errors.append(
            ValidationError(
                "admin.token",
                "is required when admin.listen is not a loopback address "
                "(anyone who reaches the port would control the gateway)",
            )
        )
    if proxy is not None:
        for i, endpoint in enumerate(proxy.tlsListen):
            if endpoint in proxy.listen:
                errors.append(
                    ValidationError(
                        _listKey("proxy.tlsListen", proxy.tlsListen, i),
                        "is also an endpoint of proxy.listen",
                    )
                )
    if proxy is not None and admin is not None:
        for key, endpoints in (
            ("proxy.listen", proxy.listen),
            ("proxy.tlsListen", proxy.tlsListen),
        ):
            if admin.listen in endpoints:
                errors.append(ValidationError("admin.listen", f"is the same endpoint as {key}"))
    if proxy is not None and filterNames is not None:
        for i, spec in enumerate(proxy.filters):
            name = spec if isinstance(spec, str) else spec.name
            if name not in filterNames:
                errors.append(
                    ValidationError(
                        f"proxy.filters[{i}]",
                        f"no filter plugin named {name!r} (known: "
                        f"{', '.join(sorted(filterNames)) or 'none'})",
                    )
                )
    if proxy is not None and proxy.workers is not None and proxy.workers != 1:
        if not all(e.startswith(_SHARED_ENDPOINTS) for e in proxyEndpoints(proxy)):
            errors.append(
                ValidationError(
                    "proxy.workers", "several workers need tcp: or tcp6: listen endpoints"
                )
            )
        elif not workersCanShare(proxyEndpoints(proxy), store):
            errors.append(
                ValidationError(
                    "proxy.workers", "several workers need a shared store (file: or etcd://)"
                )
            )
    if errors:
        raise ConfigError.fromValidation(ValidationError.collect(errors), source)
    return GatewayConfig(
        proxy=proxy,
        admin=admin,
        store=store,
        seed=seed,
        path=source,
        resolver=resolver,
        tracing=sections["tracing"],
        limits=sections["limits"],
    )


#: Listen endpoints several worker processes can each bind (SO_REUSEPORT).
_SHARED_ENDPOINTS = ("tcp:", "tcp6:")


def _listKey(key: str, values: Sequence[str], index: int) -> str:
    return key if len(values) == 1 else f"{key}[{index}]"


def proxyEndpoints(proxy: ProxyConfig) -> Tuple[str, ...]:
    """
    @return: every endpoint the proxy listens on: C{listen}, then
        C{tlsListen}.
    """
    return tuple(proxy.listen) + tuple(proxy.tlsListen)


def listenSettings(proxy: ProxyConfig) -> List[Tuple[str, str, bool]]:
    """
    @return: C{(setting, endpoint, tls)} of every endpoint the proxy
        listens on, C{setting} naming it for messages (C{proxy.listen},
        C{proxy.tlsListen[1]}).
    """
    out = []
    for key, values, tls in (
        ("proxy.listen", proxy.listen, False),
        ("proxy.tlsListen", proxy.tlsListen, True),
    ):
        for i, endpoint in enumerate(values):
            out.append((_listKey(key, values, i), endpoint, tls))
    return out


def workersCanShare(listen: Any, store: str) -> bool:
    """
    @param listen: an endpoint string, or several.
    @return: whether several proxy workers can share the listen endpoints
        C{listen} and the store C{store} (not C{memory:}, which lives in
        one process).
    """
    endpoints = (listen,) if isinstance(listen, str) else tuple(listen)
    return all(e.startswith(_SHARED_ENDPOINTS) for e in endpoints) and not store.startswith(
        "memory:"
    )


if TYPE_CHECKING:
    # What the mixin below is mixed into: a loader's constructor.
    _Constructor = yaml.constructor.SafeConstructor
else:
    _Constructor = object


class _UniqueKeys(_Constructor):
    """
    Refuses a key given twice in one mapping, which plain YAML resolves
    silently in favour of the last one (a mixin for a YAML loader).
    """

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen = set()
        for keyNode, _ in node.value:
            if keyNode.tag == "tag:yaml.org,2002:merge":
                # "<<: *defaults" merges, and keys given next override.
                continue
            key = self.construct_object(keyNode, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:
                # Unhashable keys: let the base class report them.
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    keyNode.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class UniqueKeyLoader(_UniqueKeys, yaml.SafeLoader):
    """
    A safe loader that refuses a key given twice in one mapping.
    """


if hasattr(yaml, "CSafeLoader"):

    class _FastUniqueKeyLoader(_UniqueKeys, yaml.CSafeLoader):
        """
        L{UniqueKeyLoader} on libyaml's parser (several times faster on a
        large file).
        """

else:  # pragma: no cover (PyYAML built without libyaml, as on PyPy)
    # (One name, two classes: mypy checks the branch above.)
    _FastUniqueKeyLoader = UniqueKeyLoader  # type: ignore[misc,assignment]


def loadYAML(text: str) -> Any:
    """
    Parse YAML safely, refusing duplicate keys, with libyaml when PyYAML
    has it.

    @raise yaml.YAMLError: when it is not valid YAML; the error is PyYAML's
        own parser's, whose messages say more than libyaml's.
    """
    try:
        return yaml.load(text, Loader=_FastUniqueKeyLoader)
    except yaml.YAMLError:
        if _FastUniqueKeyLoader is UniqueKeyLoader:
            raise
    return yaml.load(text, Loader=UniqueKeyLoader)


def loadConfig(path: str, filterNames: Optional[Collection[str]] = None) -> GatewayConfig:
    """
    Read and check a config file.

    @param path: the YAML file.
    @param filterNames: as L{parseConfig}'s.
    @raise ConfigError: when the file is missing, unreadable, not valid
        YAML (the message gives the line) or not a valid config (the key
        names what is wrong).
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ConfigError("", f"cannot read the config file: {reason}", path)
    try:
        data = loadYAML(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = " ".join(p for p in (e.context, e.problem) if p)
        raise ConfigError("", f"invalid YAML{where}: {what}", path)
    except yaml.YAMLError as e:
        raise ConfigError("", f"invalid YAML: {e}", path)
    return parseConfig(data, path, filterNames)
