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
"""

from __future__ import annotations

import json
import random as _random
import weakref
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from twisted.logger import Logger

from gateway.auth.index import EMPTY, ConsumerIndex, compileConsumers
from gateway.balancing.backend import Backend
from gateway.balancing.balancers import makeBalancer
from gateway.model.mock import CompiledMock
from gateway.model.resources import API, Catalog, CatalogParser, Cluster, Node, ReferenceError
from gateway.model.schema import ValidationError
from gateway.model.urlpattern import parsePattern
from gateway.protection.ratelimit import LOCAL
from gateway.routing.rewrite import Rewrite
from gateway.routing.router import Route, RouteConflict, Router
from gateway.routing.rules import applicableRoutings, compileRouting, orderRoutings

log = Logger()


class ClusterRuntime:
    """
    A cluster as the proxy uses it: its backends and its balancer.
    """

    __slots__ = ("name", "config", "backends", "balancer", "_serverConfigs")

    def __init__(self, config: Cluster, backends: Sequence[Backend], rng: Any) -> None:
        self.name = config.name
        self.config = config
        self.backends = tuple(backends)
        self._serverConfigs = tuple(b.config for b in self.backends)
        self.balancer = makeBalancer(config.loadBalance, self.backends, rng)

    def sameAs(self, config: Cluster, backends: Sequence[Backend]) -> bool:
        """
        @return: whether this runtime can serve C{config} over C{backends}
            as it is (so its balancer's state is kept).
        """
        return (
            config == self.config
            and len(backends) == len(self.backends)
            and all(a is b for a, b in zip(backends, self.backends))
            and tuple(b.config for b in backends) == self._serverConfigs
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
        grouped: Dict[int, List[CompiledNode]] = {}
        for node in nodes:
            grouped.setdefault(node.batch, []).append(node)
        self.batches = tuple(tuple(grouped[n]) for n in sorted(grouped))
        self.mock = CompiledMock(config.response) if config.response is not None else None


class Snapshot:
    """
    The compiled routing table at one store revision.

    @ivar consumers: the revision's consumers, a L{ConsumerIndex} (what the
        API's C{auth} filters look credentials up in).
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
    ) -> None:
        self.consumers = consumers
        self.revision = revision
        self.catalog = catalog
        self.router = router
        self.apis = apis
        self.clusters = clusters
        self.backends = backends
        self.filters = filters

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


def _filterKey(apiName: str, spec: Any) -> Tuple[str, str, str]:
    return (apiName, spec.name, json.dumps(spec.config, sort_keys=True, default=str))


class SnapshotManager:
    """
    Builds snapshots from store states and holds the current one.

    @ivar snapshot: the snapshot serving requests now, or L{None} before the
        first successful build.
    @ivar backends: the live L{Backend} of every server of the current
        snapshot, by name.
    """

    def __init__(
        self,
        filterRegistry: Any,
        reactor: Any,
        globalFilters: Sequence[Any] = (),
        random: Optional[_random.Random] = None,
        buckets: Any = LOCAL,
    ) -> None:
        """
        @param buckets: what makes the buckets of the APIs' and servers'
            limits: L{LOCAL} (this process's), or the workers'
            L{gateway.protection.sharedbuckets.SharedBuckets}.
        """
        self._buckets = buckets
        self._filters = filterRegistry
        self._reactor = reactor
        self._random = random or _random.Random()
        self.globalFilters = filterRegistry.makeFilters(globalFilters, reactor)
        self.snapshot: Optional[Snapshot] = None
        self.backends: Dict[str, Backend] = {}
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
        apis, router, pendingFilters = self._compile(catalog)

        # Nothing below can fail on valid input: only now touch the state
        # that outlives snapshots.
        previous = self.snapshot
        backends: Dict[str, Backend] = {}
        for name, server in catalog.servers.items():
            backend = self.backends.get(name)
            if backend is None:
                backend = Backend(server, self._reactor, self._random, self._buckets)
            else:
                backend.configure(server)
            backends[name] = backend
        clusters: Dict[str, ClusterRuntime] = {}
        for name, cluster in catalog.clusters.items():
            members = [backends[s] for s in cluster.servers]
            old = previous.clusters.get(name) if previous is not None else None
            if old is not None and old.sameAs(cluster, members):
                clusters[name] = old
            else:
                clusters[name] = ClusterRuntime(cluster, members, self._random)

        consumers = compileConsumers(
            catalog.consumers, previous.consumers if previous is not None else None
        )
        snapshot = Snapshot(
            state.revision,
            catalog,
            router,
            apis,
            clusters,
            backends,
            self.globalFilters,
            consumers,
        )
        self.backends = backends
        self._apiFilters = pendingFilters
        self.snapshot = snapshot
        for listener in self._listeners:
            try:
                listener(snapshot)
            except Exception:
                log.failure("snapshot listener {listener!r} failed", listener=listener)
        return snapshot

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

    def _compile(self, catalog: Catalog) -> Tuple[Dict[str, CompiledAPI], Router, Dict]:
        """
        Everything of a build that can fail, touching no live state.
        """
        catalog.check()
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
                    compiled = self._compileAPI(api, scoped, filters)
                except ValidationError as e:
                    raise type(e)(f"apis/{name}:{e.field}", e.message)
                route = Route(compiled.pattern, api.method, api.host, compiled)
            pendingFilters.update(filters)
            apiCache[name] = (api, scoped, compiled, filters, route)
            apis[name] = compiled
            routes[name] = route
        self._compiledAPIs = apiCache
        try:
            router = self._route(routes)
        except RouteConflict as e:
            # Blame the API whose route is new (the one being written).
            blamed = [r for r in e.routes if r is not previous.get(r.value.name, (None,) * 5)[4]]
            name = (blamed or [e.routes[1]])[-1].value.name
            raise ReferenceError(f"apis/{name}:urlPattern", str(e))
        return apis, router, pendingFilters

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

    def _protectionFilters(self, api: API, pendingFilters: Dict) -> List[Any]:
        """
        The built-in filters an API's own settings ask for (the filter
        registry's L{apiFilterSpecs<gateway.filters.FilterRegistry.apiFilterSpecs>},
        in its order), in front of its plugin filters; each kept across
        snapshots while its settings stay.
        """
        filters: List[Any] = []
        specs = self._filters.apiFilterSpecs(api, self._reactor, self._random, self._buckets)
        for key, make in specs:
            made = pendingFilters.get(key) or self._apiFilters.get(key)
            if made is None:
                made = make()
            if made is not None:
                pendingFilters[key] = made
                filters.append(made)
        return filters

    def _compileAPI(self, api: API, scoped: Tuple[Any, ...], pendingFilters: Dict) -> CompiledAPI:
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
        filters = self._protectionFilters(api, pendingFilters)
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
