"""
The composition root: L{makeService} puts a gateway process together.

It builds the process's services and what they share, and nothing more:
no file is read, no port bound, no connection made, no process started
until the services start (L{gateway.process.startup.ProcessService}).
There is one builder per role:

  - the gateway process (L{makeGatewayService}): the store (loaded and
    seeded when it starts), the DNS discovery (with a proxy), the upstream
    client, the health checks, the proxy registry of a shared store, the
    admin, and the proxy itself or the pool of proxy workers;
  - a proxy worker (L{makeWorkerService}): the link to its parent, a
    store the parent relays its states to, the upstream client and the
    proxy, which listens once the first state serves.

The entry points (L{gateway.process.tap}, L{gateway.process.worker}) pass
the reactor; nothing below them imports Twisted's global one.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Tuple

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import serverFromString
from twisted.internet.threads import deferToThreadPool

import gateway
from gateway.admin.api import AdminAPI
from gateway.admin.webui import withWebUI
from gateway.balancing.health import HealthChecker
from gateway.cache.engine import ResponseCache
from gateway.cache.purges import PurgeFollower
from gateway.cache.redisstore import RedisStore
from gateway.discovery.records import Discovered
from gateway.discovery.service import DNSDiscovery
from gateway.http.client import DEFAULT_MAX_IDLE, HTTP11UpstreamClient
from gateway.http.listen import reusePortEndpoint
from gateway.http.tls import ServerTLS
from gateway.interfaces import ISharedStore, IUpstreamUpgrader
from gateway.model.cache import sharedCacheWithoutRedis
from gateway.model.config import listenSettings, proxyEndpoints, workersCanShare
from gateway.model.endpoints import endpointPort
from gateway.model.limits import ADMIN_LIMITS
from gateway.model.schema import ValidationError
from gateway.pipeline.aggregate import Aggregator
from gateway.pipeline.forwarding import ClientAddresses
from gateway.pipeline.https import httpsPort
from gateway.pipeline.mirror import Mirror
from gateway.pipeline.resource import GatewayResource
from gateway.pipeline.websocket import WebSockets
from gateway.process.accesslog import AccessLogService, ReopenOnSignal, accessLogFor
from gateway.process.fleetlimits import GatewayCounter, fleetLimits, redisClient
from gateway.process.hangup import HangupNotice
from gateway.process.interpreter import nurseryAdvice
from gateway.process.listening import ListenService, ProxyService
from gateway.process.parent import ParentLink
from gateway.process.pool import WorkerPool, workerCommand, workerCount
from gateway.process.propagation import Propagation, ServedRevisions
from gateway.process.sites import AdminSite, GatewaySite, globalFilterSpecs
from gateway.process.startup import Abort, ProcessService
from gateway.process.status import GatewayStatus
from gateway.process.storeservice import StoreService
from gateway.process.tls import CertificateFollower
from gateway.protection.ratelimit import LOCAL
from gateway.protection.sharedbuckets import SharedBuckets
from gateway.routing.snapshot import SnapshotManager
from gateway.store import storeFromURL
from gateway.store.etcd.registry import advertisedAddress
from gateway.store.relayed import RelayedStore
from gateway.telemetry.metrics import metricsResource
from gateway.telemetry.report import StatsReport
from gateway.telemetry.stats import SnapshotStats, Stats


@attrs.frozen
class WorkerRole:
    """
    What makes a process a proxy worker (see L{gateway.process.pool}).

    @ivar index: its index among the workers.
    @ivar controlFD: the file descriptor of its end of the control channel.
    @ivar buckets: the workers' L{SharedBuckets}, or L{None}.
    """

    index: int
    controlFD: int
    buckets: Optional[SharedBuckets] = None


class UpstreamService(Service):
    """
    Closes the upstream client when the process stops (after the proxy
    has let its requests finish: it stops before this service does).
    """

    name = "upstream"

    def __init__(self, client: Any) -> None:
        self.client = client

    def stopService(self) -> Deferred:
        super().stopService()
        return self.client.close()


def makeService(
    config: Any,
    reactor: Any,
    filterRegistry: Any,
    abort: Abort,
    worker: Optional[WorkerRole] = None,
    client: Any = None,
) -> ProcessService:
    """
    Put a gateway process together.

    @param config: the L{gateway.model.config.GatewayConfig}.
    @param reactor: the reactor everything runs on.
    @param filterRegistry: the L{gateway.filters.FilterRegistry}.
    @param abort: what a part that cannot start calls.
    @param worker: the L{WorkerRole} of a proxy worker; L{None} for the
        gateway process.
    @param client: the L{gateway.interfaces.IUpstreamClient}; by default an
        L{HTTP11UpstreamClient}.
    @return: the process's root service, not started.
    @raise ValueError: when the config names a store this gateway does not
        know.
    """
    if worker is None:
        return makeGatewayService(config, reactor, filterRegistry, abort, client)
    return makeWorkerService(config, reactor, filterRegistry, abort, worker, client)


def _accessLogServices(root: ProcessService, accessLog: Any, reactor: Any, abort: Abort) -> None:
    """
    Add the access log of the proxy in this process, if any, to C{root}:
    before the proxy's service, so that it closes after the proxy's last
    requests are over; reopened on C{SIGUSR1}.
    """
    if accessLog is None:
        return
    AccessLogService(accessLog, abort).setServiceParent(root)
    ReopenOnSignal(reactor, [accessLog.reopen]).setServiceParent(root)


def makeUpstreamClient(
    reactor: Any, proxyConfig: Any, manager: SnapshotManager
) -> HTTP11UpstreamClient:
    """
    The process's HTTP client, which forgets the addresses of the backends
    that are gone at every snapshot swap (DNS discovery's addresses that
    left, a server given another C{addr}): their idle connections are
    closed, and nothing of them is kept for good.
    """
    client = HTTP11UpstreamClient(
        reactor,
        maxIdlePerBackend=(
            proxyConfig.upstreamKeepalive if proxyConfig is not None else DEFAULT_MAX_IDLE
        ),
    )

    def swapped(snapshot: Any) -> None:
        client.retainOnly({(b.host, b.port) for b in snapshot.backends.values()})

    manager.addListener(swapped)
    return client


def _proxySite(
    proxyConfig: Any,
    reactor: Any,
    manager: SnapshotManager,
    client: Any,
    counters: Stats,
    tracing: Any = None,
    accessLog: Any = None,
    cache: Optional[ResponseCache] = None,
) -> Tuple[GatewayResource, GatewaySite]:
    tlsListen = proxyConfig.tlsListen
    # (WebSocket handshakes go through the engine's upgrading client itself:
    # a tunnel gets no client span.)
    upgrader = client if IUpstreamUpgrader.providedBy(client) else None
    tracer = None
    if tracing is not None:
        # Every request the proxy sends upstream gets a client span.
        client = tracing.wrap(client)
        tracer = tracing.tracer
    resource = GatewayResource(
        manager,
        client,
        reactor,
        ClientAddresses(proxyConfig.trustedProxies),
        aggregator=Aggregator(client, reactor, stats=counters),
        mirror=Mirror(client, reactor, stats=counters),
        stats=counters,
        httpsPort=httpsPort(endpointPort(tlsListen[0]) if tlsListen else None),
        tracer=tracer,
        websockets=(
            WebSockets(upgrader, reactor, stats=counters) if upgrader is not None else None
        ),
        accessLog=accessLog,
        cache=cache,
    )
    site = GatewaySite(
        resource,
        limits=proxyConfig.limits,
        bodyLimitFor=manager.bodyLimitFor,
        stats=counters,
        reactor=reactor,
        h2c=proxyConfig.h2c,
    )
    # Requests the engine refuses before the pipeline sees them are logged too.
    site.accessLog = accessLog
    return resource, site


def _proxyServices(
    root: ProcessService,
    proxyConfig: Any,
    reactor: Any,
    manager: SnapshotManager,
    resource: GatewayResource,
    site: GatewaySite,
    abort: Abort,
    endpointFor: Callable[[str], Any],
    **kwargs: Any,
) -> List[ProxyService]:
    """
    Listen on every endpoint of the proxy: C{proxy.listen} (plain HTTP)
    and C{proxy.tlsListen} (HTTPS, with the certificates of the current
    snapshot, followed as they change).  The first service is named
    C{proxy}, the others C{proxy-1}, C{proxy-2}...

    @param endpointFor: makes the server endpoint of an endpoint string.
    @param kwargs: passed to each L{ProxyService}.
    @return: the services, in order.
    """
    tlsFactory = None
    if proxyConfig.tlsListen:
        serverTLS = ServerTLS(reactor, http2=proxyConfig.http2)
        manager.addListener(CertificateFollower(serverTLS, proxyConfig.tlsDefaultCertificate))
        tlsFactory = serverTLS.wrap(site)
    services = []
    for i, (setting, endpoint, tls) in enumerate(listenSettings(proxyConfig)):
        if i:
            # (Said once, by the first.)
            kwargs.pop("advice", None)
        service = ProxyService(
            "proxy" if i == 0 else f"proxy-{i}",
            setting,
            endpointFor(endpoint),
            tlsFactory if tls else site,
            abort,
            resource=resource,
            drainTimeout=proxyConfig.drainTimeout,
            site=site,
            **kwargs,
        )
        service.setServiceParent(root)
        services.append(service)
    return services


def _discovery(
    config: Any, reactor: Any, manager: SnapshotManager, pool: Optional[WorkerPool]
) -> Optional[DNSDiscovery]:
    """
    The DNS discovery of a gateway process that runs a proxy: it looks up
    the names of the manager's catalog, and each change of what it finds
    is swapped in here and relayed to the workers (which look nothing up).
    """
    if config.proxy is None:
        return None

    def found(discovered: Discovered) -> None:
        manager.rediscover(discovered)
        if pool is not None:
            pool.relayDiscovery(discovered)

    discovery = DNSDiscovery(reactor, found, config.resolver)
    discovery.follow(manager)
    return discovery


def _tracing(config: Any, reactor: Any, root: ProcessService, counters: Stats) -> Any:
    """
    Set tracing up for a process that serves the proxy, when the config
    has a C{tracing:} section: its service joins C{root} (before the
    proxy's, so that it stops after the proxy drained), its counters
    C{counters}.

    @return: the L{gateway.telemetry.tracing.spans.Tracing}, or L{None}.
    """
    if config.tracing is None:
        return None
    # (Imports the OpenTelemetry SDK: only now.)
    from gateway.telemetry.tracing import makeTracing

    tracing = makeTracing(config.tracing, reactor)
    tracing.service.setServiceParent(root)
    counters.followTracing(tracing.counts)
    return tracing


def _responseCache(
    config: Any,
    reactor: Any,
    root: ProcessService,
    manager: SnapshotManager,
    counters: Stats,
    redis: Any,
) -> ResponseCache:
    """
    The response cache of a proxy process: its memory store, and the
    Redis store on the process's Redis client when it has one, with the
    service that follows the fleet's purges there.
    """
    settings = config.proxy.cache
    cache = ResponseCache(reactor, settings.memoryBytes, redis, settings.timeout)
    manager.addListener(cache.snapshotChanged)
    counters.cache = cache
    if redis is not None:
        PurgeFollower(cache, reactor, settings.purgePoll).setServiceParent(root)
    return cache


def _cachePurger(
    config: Any,
    reactor: Any,
    redis: Any,
    cache: Optional[ResponseCache],
    pool: Optional[WorkerPool],
) -> Callable[[str], Deferred]:
    """
    What the admin's C{DELETE /api/v1/apis/NAME/cache} calls (see
    L{gateway.cache.purges}): the API's entries dropped in Redis (for the
    fleet), and in the memory of this gateway's proxy processes (its own
    proxy, or every worker), at once.

    @return: C{purge(name)}, a Deferred of what it did, as the admin
        answers it; it fails with L{gateway.redis.client.RedisError} when
        Redis could not be told.
    """
    shared = (
        RedisStore(redis, config.proxy.cache.timeout if config.proxy else 0.025)
        if (redis is not None)
        else None
    )
    timeout = config.admin.propagationTimeout if config.admin is not None else 2.0

    async def purge(name: str) -> Dict[str, Any]:
        entries, processes, complete = 0, 0, True
        if pool is not None:
            entries, processes, complete = await pool.purgeCache(name, timeout)
        elif cache is not None:
            entries, processes = cache.purgeLocal(name), 1
        answer: Dict[str, Any] = {
            "api": name,
            "entries": entries,
            "processes": processes,
            "complete": complete,
            "redis": shared is not None,
        }
        if shared is not None:
            answer["generation"] = await shared.purge(name)
        return answer

    return lambda name: Deferred.fromCoroutine(purge(name))


def _adminValidate(config: Any, manager: SnapshotManager) -> Callable[[Any], None]:
    """
    @return: what the admin checks a proposed catalog with: that it
        compiles, and, when this gateway has no Redis (no
        C{limits.store}), that no API it changes caches in Redis.
    """
    if config.limits is not None:
        return manager.validate

    def validate(catalog: Any) -> None:
        served = manager.snapshot
        previous = served.catalog.apis if served is not None else None
        errors = list(sharedCacheWithoutRedis(catalog.apis, previous))
        if errors:
            raise ValidationError.collect(errors)
        manager.validate(catalog)

    return validate


def makeGatewayService(
    config: Any, reactor: Any, filterRegistry: Any, abort: Abort, client: Any = None
) -> ProcessService:
    """
    Put the gateway process together: its children are C{hangup}
    (L{HangupNotice}), C{store},
    C{discovery} (with a proxy), C{upstream}, C{health}, C{proxy-registry}
    (with a shared store and a proxy), C{admin} (with an admin), and
    C{proxy} (the proxy in this process) or C{workers} (several proxy
    workers).

    See L{makeService} for the parameters.
    """
    root = ProcessService(abort)
    HangupNotice(reactor).setServiceParent(root)
    proxyConfig = config.proxy
    workers = (
        workerCount(proxyConfig.workers, workersCanShare(proxyEndpoints(proxyConfig), config.store))
        if proxyConfig is not None
        else 1
    )
    store = storeFromURL(config.store, reactor)
    shared = store if ISharedStore.providedBy(store) else None
    proxyHere = proxyConfig is not None and workers == 1
    # The one Redis client of this process (limits.store): for the proxy's
    # limits and cache when it runs here, and the admin's cache purges.
    redis = redisClient(config, reactor) if proxyHere or config.admin is not None else None
    # The fleet's limits (limits.store): the proxy's, when it runs here.
    fleet = fleetLimits(config, reactor, LOCAL, redis) if proxyHere else None
    manager = SnapshotManager(
        filterRegistry,
        reactor,
        globalFilters=globalFilterSpecs(proxyConfig),
        buckets=fleet.buckets if fleet is not None else LOCAL,
        discovery=proxyConfig is not None,
    )
    counters = Stats(reactor)
    if fleet is not None:
        counters.limits = fleet.buckets
    counters.follow(manager)
    served = ServedRevisions()
    if client is None:
        client = makeUpstreamClient(reactor, proxyConfig, manager)

    pool: Optional[WorkerPool] = None
    if proxyConfig is not None and workers > 1:
        pool = WorkerPool(
            reactor,
            workers,
            workerCommand(config.path, reactor),
            healthSource=lambda: {name: b.healthy for name, b in manager.backends.items()},
            onStats=lambda index, stats: status.workerReported(index, stats),
            onEnded=lambda index: status.workerEnded(index),
            makeBuckets=SharedBuckets.create,
            served=served,
            onCannotStart=abort,
        )
    storeService = StoreService(
        store,
        manager,
        abort,
        reactor,
        seed=config.seed,
        relay=pool.relay if pool is not None else None,
    )
    health = HealthChecker(client, reactor, manager)
    health.setName("health")
    discovery = _discovery(config, reactor, manager, pool)
    status = GatewayStatus(
        reactor,
        config,
        manager,
        counters,
        storeService,
        served,
        health,
        pool,
        shared,
        discovery=discovery,
    )

    storeService.setServiceParent(root)
    if discovery is not None:
        discovery.setServiceParent(root)
    UpstreamService(client).setServiceParent(root)
    health.setServiceParent(root)
    if redis is not None:
        redis.setServiceParent(root)
    if fleet is not None:
        fleet.setServiceParent(root)
    cache = _responseCache(config, reactor, root, manager, counters, redis) if proxyHere else None
    _countGateways(config, reactor, shared, fleet, pool, root)

    if shared is not None and proxyConfig is not None:
        # Several gateways share this store: say that this one serves, and
        # which revision it serves, as soon as that changes.
        registry = shared.proxyRegistry(
            advertisedAddress(proxyEndpoints(proxyConfig)[0]),
            gateway.__version__,
            status.startedAt,
            status.describe,
        )
        served.addListener(registry.refresh)
        storeService.whenReady().addCallback(lambda _: registry.refresh())
        registry.setServiceParent(root)

    if config.admin is not None:
        admin = AdminAPI(
            store,
            config.admin.token,
            reactor,
            validate=_adminValidate(config, manager),
            parser=manager.parser,
            proxies=status.proxies,
            stats=status.stats,
            readiness=status.readiness,
            metrics=metricsResource(
                counters if pool is None else SnapshotStats(status.stats, reactor),
                manager,
                health,
                reactor,
            ),
            propagation=Propagation(reactor, served, shared),
            propagationTimeout=config.admin.propagationTimeout,
            runInThread=lambda f, *args: deferToThreadPool(
                reactor, reactor.getThreadPool(), f, *args
            ),
            purgeCache=_cachePurger(config, reactor, redis, cache, pool),
        )
        adminSite = AdminSite(
            withWebUI(admin.resource()),
            limits=ADMIN_LIMITS,
            bodyLimitFor=admin.bodyLimitFor,
            reactor=reactor,
        )
        ListenService(
            "admin",
            "admin.listen",
            serverFromString(reactor, config.admin.listen),
            adminSite,
            abort,
        ).setServiceParent(root)

    if pool is not None:
        if proxyConfig.accessLog is not False:
            # Each worker writes its own lines: pass SIGUSR1 on to them.
            ReopenOnSignal(reactor, [pool.reopenLogs]).setServiceParent(root)
        pool.setServiceParent(root)
    elif proxyConfig is not None:
        manager.addListener(lambda snapshot: served.serving("proxy", snapshot.revision))
        tracing = _tracing(config, reactor, root, counters)
        accessLog = counters.accessLog = accessLogFor(proxyConfig, reactor)
        _accessLogServices(root, accessLog, reactor, abort)
        resource, site = _proxySite(
            proxyConfig, reactor, manager, client, counters, tracing, accessLog, cache
        )
        _proxyServices(
            root,
            proxyConfig,
            reactor,
            manager,
            resource,
            site,
            abort,
            lambda endpoint: serverFromString(reactor, endpoint),
            advice=nurseryAdvice(os.environ),
        )
    return root


def _countGateways(
    config: Any, reactor: Any, shared: Any, fleet: Any, pool: Any, root: ProcessService
) -> None:
    """
    With the fleet's limits and no C{limits.gateways}, count the live
    gateways in the registry of a shared store, for the proxy here or the
    workers (who divide the limits by it while Redis is away).
    """
    if config.limits is None or config.limits.gateways is not None or shared is None:
        return
    if config.proxy is None:
        return
    if pool is not None:
        onCount = lambda count: pool.broadcast({"gateways": count})  # noqa: E731
    elif fleet is not None:
        onCount = fleet.buckets.setGateways
    else:
        return
    GatewayCounter(shared, reactor, onCount).setServiceParent(root)


def makeWorkerService(
    config: Any,
    reactor: Any,
    filterRegistry: Any,
    abort: Abort,
    worker: WorkerRole,
    client: Any = None,
) -> ProcessService:
    """
    Put a proxy worker together: its children are C{hangup} (ignoring
    C{SIGHUP}), C{parent} (the control
    channel), C{store} (the states the parent relays), C{upstream} and
    C{proxy} (on an C{SO_REUSEPORT} socket, bound once the first state
    serves).

    See L{makeService} for the parameters.
    """
    root = ProcessService(abort)
    HangupNotice(reactor, worker=True).setServiceParent(root)
    proxyConfig = config.proxy
    store = RelayedStore()
    local = worker.buckets if worker.buckets is not None else LOCAL
    redis = redisClient(config, reactor)
    fleet = fleetLimits(config, reactor, local, redis)
    manager = SnapshotManager(
        filterRegistry,
        reactor,
        globalFilters=globalFilterSpecs(proxyConfig),
        buckets=fleet.buckets if fleet is not None else local,
        discovery=True,
    )
    counters = Stats(reactor)
    counters.follow(manager)
    if redis is not None:
        redis.setServiceParent(root)
    if fleet is not None:
        counters.limits = fleet.buckets
        fleet.setServiceParent(root)
    accessLog = counters.accessLog = accessLogFor(proxyConfig, reactor)
    cache = _responseCache(config, reactor, root, manager, counters, redis)
    if client is None:
        client = makeUpstreamClient(reactor, proxyConfig, manager)
    storeService = StoreService(store, manager, abort, reactor)
    proxies: List[ProxyService] = []
    ParentLink(
        reactor,
        worker.controlFD,
        store,
        manager,
        stats=StatsReport(counters, manager),
        onGateways=fleet.buckets.setGateways if fleet is not None else None,
        onReopen=accessLog.reopen if accessLog is not None else None,
        onPurge=cache.purgeLocal,
        # (The parent counts a worker that confirms a revision as serving.)
        listening=lambda: gatherResults([proxy.whenListening() for proxy in proxies]),
    ).setServiceParent(root)
    storeService.setServiceParent(root)
    UpstreamService(client).setServiceParent(root)
    tracing = _tracing(config, reactor, root, counters)
    _accessLogServices(root, accessLog, reactor, abort)
    resource, site = _proxySite(
        proxyConfig, reactor, manager, client, counters, tracing, accessLog, cache
    )
    proxies += _proxyServices(
        root,
        proxyConfig,
        reactor,
        manager,
        resource,
        site,
        abort,
        lambda endpoint: reusePortEndpoint(reactor, endpoint),
        after=storeService.whenReady,
    )
    return root
