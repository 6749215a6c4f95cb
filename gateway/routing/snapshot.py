"""
The routing snapshot: everything the proxy needs to serve a request,
compiled from one store state, immutable, swapped in one assignment.

A store change builds a new L{Snapshot} off the request path
(L{SnapshotManager.update}); when the build succeeds it replaces the old
one, and when it fails the running snapshot stays untouched.  A request
keeps a reference to the snapshot it started on, so a reload never changes
the rules under a request in flight.

Live state outlives snapshots: a server keeps its L{Backend} (in-flight
count, latency, health, breaker), a cluster whose definition did not change
keeps its balancer (and so its round-robin position), and an API whose
filters did not change keeps its filter objects (and their rate-limit
buckets).

DNS discovery changes the backends outside the store: a server that names
a host has one backend per address, a cluster with C{discovery} the
servers of its SRV records (L{gateway.discovery.records.expand}).  When
what discovery finds changes, L{SnapshotManager.rediscover} swaps in a
snapshot of the running one's compiled catalog over it, the same way: the
backends of addresses that stayed keep their live state.
"""

from __future__ import annotations

import json
import random as _random
import weakref
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from twisted.logger import Logger

from gateway.auth.index import EMPTY, ConsumerIndex, compileConsumers
from gateway.balancing.backend import Backend
from gateway.balancing.balancers import makeTieredBalancer
from gateway.cache.policy import CachePolicy
from gateway.discovery.records import A, Discovered, expand
from gateway.model.mock import CompiledMock
from gateway.model.resources import API, Catalog, CatalogParser, Cluster, Node, ReferenceError
from gateway.model.schema import ValidationError
from gateway.model.urlpattern import parsePattern
from gateway.protection.ratelimit import LOCAL
from gateway.routing.rewrite import Rewrite
from gateway.routing.router import Route, RouteConflict, Router
from gateway.routing.rules import applicableRoutings, compileRouting, orderRoutings
from gateway.routing.tls import TLSCompiler

log = Logger()


class ClusterRuntime:
    """
    A cluster as the proxy uses it: its backends and its balancer.

    The backends may come in tiers, tried in order (the priorities of
    discovered SRV records): the balancer then picks from the first tier
    that has an available backend.
    """

    __slots__ = ("name", "config", "backends", "balancer", "_serverConfigs", "_tierSizes")

    def __init__(
        self,
        config: Cluster,
        backends: Sequence[Backend],
        rng: Any,
        tiers: Optional[Sequence[Sequence[Backend]]] = None,
    ) -> None:
        """
        @param backends: its backends (in one tier, unless C{tiers} is given).
        @param tiers: its backends in tiers, the first tier first; then
            C{backends} is ignored.
        """
        tiers = _tiersOf(backends, tiers)
        self.name = config.name
        self.config = config
        self.backends = tuple(b for tier in tiers for b in tier)
        self._serverConfigs = tuple(b.config for b in self.backends)
        self._tierSizes = tuple(len(tier) for tier in tiers)
        self.balancer = makeTieredBalancer(config.loadBalance, tiers, rng)

    def sameAs(
        self,
        config: Cluster,
        backends: Sequence[Backend],
        tiers: Optional[Sequence[Sequence[Backend]]] = None,
    ) -> bool:
        """
        @return: whether this runtime can serve C{config} over C{backends}
            (or C{tiers}) as it is (so its balancer's state is kept).
        """
        tiers = _tiersOf(backends, tiers)
        flat = [b for tier in tiers for b in tier]
        return (
            config == self.config
            and len(flat) == len(self.backends)
            and all(a is b for a, b in zip(flat, self.backends))
            and tuple(len(tier) for tier in tiers) == self._tierSizes
            and tuple(b.config for b in flat) == self._serverConfigs
        )

    def choose(self, key: Optional[str] = None) -> Optional[Backend]:
        return self.balancer.choose(key)


class CompiledNode:
    """
    One dispatch node of an API, ready to use.
    """

    __slots__ = (
        "config",
        "clusterName",
        "rewrite",
        "attrName",
        "timeout",
        "required",
        "batch",
        "retries",
        "retryOn",
        "default",
        "defaultJSON",
    )

    def __init__(self, config: Node, rewrite: Optional[Rewrite]) -> None:
        self.config = config
        #: The cluster's name: the request's own snapshot gives its
        #: L{ClusterRuntime}, so compiled APIs are shared by snapshots.
        self.clusterName = config.cluster
        self.rewrite = rewrite
        self.attrName = config.attrName
        self.timeout = config.timeout
        self.required = config.required
        self.batch = config.batch
        self.retries = config.retries
        self.retryOn = frozenset(config.retryOn)
        #: What a failed optional node of an aggregation gives: its
        #: C{default} (L{None} for C{null}), and that as JSON, encoded once.
        self.default = config.default
        self.defaultJSON = json.dumps(config.default, separators=(",", ":")).encode("utf-8")


class CompiledAPI:
    """
    An API as the proxy serves it.

    @ivar filters: the API's own filters, run after the global ones.
    @ivar routings: the routing rules that apply to it, in evaluation order.
    @ivar aggregate: whether it fans out to several nodes.
    @ivar batches: its nodes grouped by C{batch}, in ascending order.
    @ivar mock: its mock response, encoded (a
        L{gateway.model.mock.CompiledMock}), or L{None} when it has nodes.
    @ivar cache: its L{gateway.cache.policy.CachePolicy}, or L{None}.
    """

    __slots__ = (
        "name",
        "config",
        "pattern",
        "nodes",
        "filters",
        "routings",
        "routingReadsBody",
        "aggregate",
        "batches",
        "mock",
        "httpsOnly",
        "cache",
    )

    def __init__(
        self,
        config: API,
        pattern: Any,
        nodes: Tuple[CompiledNode, ...],
        filters: Tuple[Any, ...],
        routings: Tuple[Any, ...],
    ) -> None:
        self.name = config.name
        self.config = config
        self.pattern = pattern
        self.nodes = nodes
        self.filters = filters
        self.routings = routings
        #: Whether a routing condition reads the JSON body (the pipeline
        #: then has the body before it decides).
        self.routingReadsBody = any(r.usesBody for r in routings)
        self.aggregate = len(nodes) > 1
        self.httpsOnly = config.httpsOnly
        grouped: Dict[int, List[CompiledNode]] = {}
        for node in nodes:
            grouped.setdefault(node.batch, []).append(node)
        self.batches = tuple(tuple(grouped[n]) for n in sorted(grouped))
        self.mock = CompiledMock(config.response) if config.response is not None else None
        self.cache = (
            CachePolicy(
                config.name,
                config.cache,
                config.auth.anonymous if config.auth is not None else None,
            )
            if config.cache is not None
            else None
        )


class Snapshot:
    """
    The compiled routing table at one store revision.

    @ivar consumers: the revision's consumers, a L{ConsumerIndex} (what the
        API's C{auth} filters look credentials up in).
    @ivar certificates: the L{gateway.http.tls.ServerCertificate} of each
        certificate, by name: what the TLS listeners serve.
    """

    def __init__(
        self,
        revision: int,
        catalog: Catalog,
        router: Router,
        apis: Mapping[str, CompiledAPI],
        clusters: Mapping[str, ClusterRuntime],
        backends: Mapping[str, Backend],
        filters: Tuple[Any, ...],
        consumers: ConsumerIndex = EMPTY,
        certificates: Optional[Mapping[str, Any]] = None,
    ) -> None:
        self.consumers = consumers
        self.revision = revision
        self.catalog = catalog
        self.router = router
        self.apis = apis
        self.clusters = clusters
        self.backends = backends
        self.filters = filters
        self.certificates = certificates if certificates is not None else {}

    def match(self, method: str, host: Optional[str], path: str) -> Any:
        """
        @return: a L{gateway.routing.router.Match} whose C{value} is the
            L{CompiledAPI}, or L{None}.
        """
        return self.router.match(method, host, path)

    def matchPreflight(self, requestedMethod: str, host: Optional[str], path: str) -> Any:
        """
        Match a CORS preflight (C{OPTIONS} with C{Origin} and
        C{Access-Control-Request-Method}) to the API that would serve the
        request it asks about: C{GET /x}'s preflight is for the API of
        C{GET /x}, whatever its method.

        @param requestedMethod: the C{Access-Control-Request-Method}.
        @return: the L{gateway.routing.router.Match} of that API when it has
            C{cors} settings, else L{None} (the preflight is then routed as
            any C{OPTIONS} request).
        """
        match = self.router.match(requestedMethod, host, path)
        if match is None or match.value.config.cors is None:
            return None
        return match


def _tiersOf(
    backends: Sequence[Backend], tiers: Optional[Sequence[Sequence[Backend]]]
) -> Tuple[Tuple[Backend, ...], ...]:
    if tiers is None:
        return (tuple(backends),)
    return tuple(tuple(tier) for tier in tiers) or ((),)


def _filterKey(apiName: str, spec: Any) -> Tuple[str, str, str]:
    return (apiName, spec.name, json.dumps(spec.config, sort_keys=True, default=str))


def _conflictError(
    conflict: RouteConflict, previous: Mapping[str, Tuple[Any, ...]]
) -> ReferenceError:
    """
    @param previous: the compiled APIs of the last build, by name.
    @return: the error of a route conflict, blaming the API whose route is
        new (the one being written).
    """
    blamed = [r for r in conflict.routes if r is not previous.get(r.value.name, (None,) * 5)[4]]
    name = (blamed or [conflict.routes[1]])[-1].value.name
    return ReferenceError(f"apis/{name}:urlPattern", str(conflict))


class SnapshotManager:
    """
    Builds snapshots from store states and holds the current one.

    @ivar snapshot: the snapshot serving requests now, or L{None} before the
        first successful build.
    @ivar backends: the live L{Backend} of every server of the current
        snapshot, by name (a discovered address is a backend of its own:
        C{users@10.0.0.5}).
    """

    def __init__(
        self,
        filterRegistry: Any,
        reactor: Any,
        globalFilters: Sequence[Any] = (),
        random: Optional[_random.Random] = None,
        buckets: Any = LOCAL,
        tls: Optional[TLSCompiler] = None,
        discovery: bool = False,
    ) -> None:
        """
        @param buckets: what makes the buckets of the APIs' and servers'
            limits: L{LOCAL} (this process's), or the workers'
            L{gateway.protection.sharedbuckets.SharedBuckets}.
        @param tls: the L{TLSCompiler} of certificates and upstream TLS
            (offline checks pass one that accepts certificates without
            their keys).
        @param discovery: whether host names and SRV records are looked up
            (L{rediscover} gives what was found): a server that names a host
            then has one backend per address of the host, and only once it
            has been looked up.  Without, a server is one backend whose host
            name is resolved when connecting, and a cluster with
            C{discovery} has no server.
        """
        self._buckets = buckets
        self._filters = filterRegistry
        self._reactor = reactor
        self._random = random or _random.Random()
        self.globalFilters = filterRegistry.makeFilters(globalFilters, reactor)
        self.snapshot: Optional[Snapshot] = None
        self.backends: Dict[str, Backend] = {}
        #: What DNS discovery found (L{None} when it is off).
        self.discovered: Optional[Discovered] = Discovered() if discovery else None
        self._apiFilters: Dict[Tuple[str, str, str], Any] = {}
        self._listeners: List[Callable[[Snapshot], None]] = []
        #: The L{CatalogParser} of store states (shared with the admin).
        self.parser = CatalogParser()
        # What compiling costs is paid once per changed resource: compiled
        # routings by name, and compiled APIs by name, each with the model
        # it was compiled from (and the filters it made).
        self._compiledRoutings: Dict[str, Tuple[Any, Any]] = {}
        self._compiledAPIs: Dict[str, Tuple[API, Tuple[Any, ...], CompiledAPI, Dict, Route]] = {}
        self._everyAPI: Tuple[Any, ...] = ()
        #: How many APIs this manager compiled (validating or applying),
        #: since it was made: what a change cost, in APIs.
        self.compiledAPIs = 0
        #: The TLS objects of the certificates and servers.
        self._tls = tls if tls is not None else TLSCompiler()
        #: The L{UpstreamTLS} of each server that speaks TLS, by name (of
        #: the last catalog applied).
        self._upstreamTLS: Mapping[str, Any] = {}
        #: The routes by API name of the routers made, while they live.
        self._routesOf: weakref.WeakKeyDictionary[Router, Dict[str, Route]] = (
            weakref.WeakKeyDictionary()
        )

    def addListener(self, listener: Callable[[Snapshot], None]) -> None:
        """
        Call C{listener(snapshot)} after every swap (health checks use it to
        follow the set of servers).
        """
        self._listeners.append(listener)

    def bodyLimitFor(self, method: bytes, host: Optional[bytes], path: bytes) -> Optional[int]:
        """
        The body limit of the API a request head names, as the channel asks
        for it before it reads a body (a L{gateway.http.channel.BodyLimitFor}).

        @param host: the raw C{Host} header, or L{None}.
        @param path: the raw path, without its query.
        @return: the matched API's C{maxBodySize}, or L{None} when no API
            matches or the API sets none.
        """
        snapshot = self.snapshot
        if snapshot is None:
            return None
        match = snapshot.match(
            method.decode("ascii", "replace"),
            host.decode("latin-1") if host is not None else None,
            path.decode("utf-8", "surrogateescape"),
        )
        if match is None:
            return None
        return match.value.config.maxBodySize

    def validate(self, catalog: Catalog) -> None:
        """
        Check that a proposed catalog would compile, without swapping
        anything in.  The admin calls this before it commits a change.

        @raise ValidationError: or L{ReferenceError} (a route conflict is one).
        """
        self._compile(catalog)

    def apply(self, state: Any) -> Snapshot:
        """
        Build a snapshot from a store state and swap it in.

        @raise ValidationError: when the state does not compile; the running
            snapshot and every live object are untouched.
        """
        catalog = self.parser.parse(state.resources)
        apis, router, pendingFilters, certificates, upstreamTLS = self._compile(catalog)

        # Nothing below can fail on valid input: only now touch the state
        # that outlives snapshots.
        previous = self.snapshot
        consumers = compileConsumers(
            catalog.consumers, previous.consumers if previous is not None else None
        )
        self._upstreamTLS = upstreamTLS
        snapshot, backends = self._assemble(
            state.revision, catalog, router, apis, consumers, certificates
        )
        self._apiFilters = pendingFilters
        self._swap(snapshot, backends)
        return snapshot

    # -- discovery: a delimited part, see gateway.discovery ----------------------

    def rediscover(self, discovered: Discovered) -> Optional[Snapshot]:
        """
        Take what DNS discovery found, and swap in a snapshot of the last
        store state over it: the backends of addresses that stayed keep
        their live state, and clusters whose backends did not change keep
        their balancers.  Nothing is compiled again (the routes, the APIs
        and their filters are the running snapshot's).

        @return: the new snapshot, or L{None} before the first store state
            (which will be built over C{discovered}).
        """
        self.discovered = discovered
        current = self.snapshot
        if current is None:
            return None
        snapshot, backends = self._assemble(
            current.revision,
            current.catalog,
            current.router,
            current.apis,
            current.consumers,
            current.certificates,
        )
        self._swap(snapshot, backends)
        return snapshot

    def _assemble(
        self,
        revision: int,
        catalog: Catalog,
        router: Router,
        apis: Mapping[str, CompiledAPI],
        consumers: ConsumerIndex,
        certificates: Mapping[str, Any],
    ) -> Tuple[Snapshot, Dict[str, Backend]]:
        """
        The snapshot of a compiled catalog over what discovery found: its
        backends (those that exist already updated in place, with the
        upstream TLS of their servers) and clusters.

        @return: the snapshot and its backends.
        """
        previous = self.snapshot
        expansion = expand(catalog, self.discovered)
        backends: Dict[str, Backend] = {}
        for name, (server, origin) in expansion.servers.items():
            backend = self.backends.get(name)
            # (An address of a server's host name speaks the TLS of that
            # server, verifying the host name.)
            tls = self._upstreamTLS.get(
                origin.owner if origin is not None and origin.type == A else name
            )
            if backend is None:
                backend = Backend(server, self._reactor, self._random, self._buckets, tls)
            else:
                backend.configure(server, tls)
            backend.origin = origin
            backends[name] = backend
        clusters: Dict[str, ClusterRuntime] = {}
        for name, cluster in catalog.clusters.items():
            tiers = [[backends[b] for b in tier] for tier in expansion.tiers[name]]
            old = previous.clusters.get(name) if previous is not None else None
            if old is not None and old.sameAs(cluster, (), tiers):
                clusters[name] = old
            else:
                clusters[name] = ClusterRuntime(cluster, (), self._random, tiers)
        snapshot = Snapshot(
            revision,
            catalog,
            router,
            apis,
            clusters,
            backends,
            self.globalFilters,
            consumers,
            certificates,
        )
        return snapshot, backends

    # -- end of discovery -------------------------------------------------------

    def _swap(self, snapshot: Snapshot, backends: Dict[str, Backend]) -> None:
        self.backends = backends
        self.snapshot = snapshot
        for listener in self._listeners:
            try:
                listener(snapshot)
            except Exception:
                log.failure("snapshot listener {listener!r} failed", listener=listener)

    def update(self, state: Any) -> bool:
        """
        Apply a store state, as a store watcher: a state that does not
        compile is logged and refused, and the running snapshot serves on.

        @return: whether the new state was applied.
        """
        current = self.snapshot
        if current is not None and state.revision <= current.revision:
            return False
        try:
            self.apply(state)
        except ValueError as e:
            log.error(
                "refused store revision {revision}: {error}; still serving revision {current}",
                revision=state.revision,
                error=str(e),
                current=current.revision if current is not None else None,
            )
            return False
        log.info("serving store revision {revision}", revision=state.revision)
        return True

    def _compile(
        self, catalog: Catalog
    ) -> Tuple[Dict[str, CompiledAPI], Router, Dict, Dict[str, Any], Dict[str, Any]]:
        """
        Everything of a build that can fail, touching no live state.

        @return: C{(apis, router, filters, certificates, upstreamTLS)}: the
            compiled APIs, their router, the filters they made, the
            certificates to serve and the TLS of the servers that speak it.
        """
        catalog.checkReferences()
        # Every error of the build at once: the conflicts, the
        # certificates, then each API's (the others compiled all the same).
        failed: List[ValidationError] = list(catalog.conflicts())
        certificates: Dict[str, Any] = {}
        upstreamTLS: Dict[str, Any] = {}
        try:
            certificates = self._tls.certificates(catalog)
        except ValidationError as e:
            failed.append(e)
        try:
            upstreamTLS = self._tls.upstream(catalog)
        except ValidationError as e:
            failed.append(e)
        routingCache = {}
        for name, routing in catalog.routings.items():
            cached = self._compiledRoutings.get(name)
            if cached is None or cached[0] != routing:
                cached = (routing, compileRouting(routing, self._random))
            routingCache[name] = cached
        self._compiledRoutings = routingCache
        compiledRoutings = orderRoutings(entry[1] for entry in routingCache.values())
        pendingFilters: Dict[Tuple[str, str, str], Any] = {}
        apis: Dict[str, CompiledAPI] = {}
        apiCache = {}
        routes: Dict[str, Route] = {}
        # The routings that apply to an API: those for every API, and its
        # own, in order (most APIs have none of their own).
        # The same tuple as last time when they are the same routings, so
        # that an API they left alone is known by identity.
        everyAPI = applicableRoutings(compiledRoutings, None)
        if _sameItems(everyAPI, self._everyAPI):
            everyAPI = self._everyAPI
        self._everyAPI = everyAPI
        named = {r.routing.api for r in compiledRoutings if r.routing.api is not None}
        previous = self._compiledAPIs
        for name, api in catalog.apis.items():
            hit = previous.get(name)
            if name in named:
                scoped = applicableRoutings(compiledRoutings, name)
            else:
                scoped = everyAPI
                if hit is not None and hit[0] is api and hit[1] is scoped:
                    # Unchanged (the common case): nothing to make.
                    pendingFilters.update(hit[3])
                    apiCache[name] = hit
                    apis[name] = hit[2]
                    routes[name] = hit[4]
                    continue
            if hit is not None and (hit[0] is api or hit[0] == api) and _sameItems(hit[1], scoped):
                compiled, filters, route = hit[2], hit[3], hit[4]
            else:
                filters = {}
                try:
                    compiled = self._compileAPI(
                        api, scoped, filters, hit[3] if hit is not None else None
                    )
                except ValidationError as e:
                    failed.append(e.renamed(f"apis/{name}:".__add__))
                    continue
                route = Route(compiled.pattern, api.method, api.host, compiled)
            pendingFilters.update(filters)
            apiCache[name] = (api, scoped, compiled, filters, route)
            apis[name] = compiled
            routes[name] = route
        if failed:
            # And a route conflict among those that compiled, found by a
            # router of their own (nothing of this build is kept).
            try:
                Router(routes.values())
            except RouteConflict as e:
                failed.append(_conflictError(e, previous))
            # A 409 when every error is a conflict, else a 400.
            leaves = [leaf for error in failed for leaf in error.errors]
            if all(isinstance(leaf, ReferenceError) for leaf in leaves):
                raise ReferenceError.collect(leaves)
            raise ValidationError.collect(leaves)
        self._compiledAPIs = apiCache
        try:
            router = self._route(routes)
        except RouteConflict as e:
            raise _conflictError(e, previous)
        return apis, router, pendingFilters, certificates, upstreamTLS

    def _route(self, routes: Dict[str, Route]) -> Router:
        """
        The router for C{routes}: the running one updated in place of a new
        one when few routes changed (a change among 10,000 APIs then costs
        milliseconds, not a rebuild).
        """
        current = self.snapshot
        if current is None:
            router = Router(routes.values())
        else:
            old = self._routesOf.get(current.router)
            if old is None:
                old = {route.value.name: route for route in current.router.routes}
            removed = [r for n, r in old.items() if routes.get(n) is not r]
            added = [r for n, r in routes.items() if old.get(n) is not r]
            if len(removed) + len(added) > max(64, len(routes) // 10):
                router = Router(routes.values())
            else:
                router = current.router.updated(removed, added)
        # Its routes by name, for the next change (while it lives).
        self._routesOf[router] = routes
        return router

    def _protectionFilters(
        self, api: API, pendingFilters: Dict, previousFilters: Optional[Dict] = None
    ) -> List[Any]:
        """
        The built-in filters an API's own settings ask for (the filter
        registry's L{apiFilterSpecs<gateway.filters.FilterRegistry.apiFilterSpecs>},
        in its order), in front of its plugin filters; each kept across
        snapshots while its settings stay.

        @param previousFilters: the filters the API's last compilation
            made, by key: a filter made anew is given the one of its kind
            there (which a rate limit takes its buckets' levels from).
        """
        filters: List[Any] = []
        specs = self._filters.apiFilterSpecs(api, self._reactor, self._random, self._buckets)
        for key, make in specs:
            made = pendingFilters.get(key) or self._apiFilters.get(key)
            if made is None:
                previous = None
                if previousFilters:
                    for oldKey, old in previousFilters.items():
                        if oldKey[0] == key[0] and oldKey[1] == key[1]:
                            previous = old
                            break
                made = make(previous)
            if made is not None:
                pendingFilters[key] = made
                filters.append(made)
        return filters

    def _compileAPI(
        self,
        api: API,
        scoped: Tuple[Any, ...],
        pendingFilters: Dict,
        previousFilters: Optional[Dict] = None,
    ) -> CompiledAPI:
        self.compiledAPIs += 1
        pattern = parsePattern(api.urlPattern)
        nodes = []
        for i, node in enumerate(api.nodes):
            rewrite = None
            if node.urlRewrite is not None:
                try:
                    rewrite = Rewrite(node.urlRewrite, tuple(pattern.paramNames))
                except ValueError as e:
                    raise ValidationError(f"nodes[{i}].urlRewrite", str(e))
                earlier = {n.attrName for n in api.nodes if n.batch < node.batch}
                for attr in rewrite.depends:
                    if attr not in earlier:
                        raise ValidationError(
                            f"nodes[{i}].urlRewrite",
                            f"$depend.{attr} must name a node of an earlier batch",
                        )
            nodes.append(CompiledNode(node, rewrite))
        filters = self._protectionFilters(api, pendingFilters, previousFilters)
        for i, spec in enumerate(api.filters):
            key = _filterKey(api.name, spec)
            made = pendingFilters.get(key) or self._apiFilters.get(key)
            if made is None:
                made = self._filters.makeFilter(
                    spec.name, spec.config, self._reactor, f"filters[{i}].name"
                )
            pendingFilters[key] = made
            filters.append(made)
        return CompiledAPI(api, pattern, tuple(nodes), tuple(filters), scoped)


def _sameItems(a: Sequence[Any], b: Sequence[Any]) -> bool:
    """
    @return: whether C{a} and C{b} hold the same objects, in order.
    """
    return a is b or (len(a) == len(b) and all(x is y for x, y in zip(a, b)))
