"""
The composition root: L{makeService} puts a gateway process together.

It builds the process's services and what they share, and nothing more:
no file is read, no port bound, no connection made, no process started
until the services start (L{gateway.process.startup.ProcessService}).
There is one builder per role:

  - the gateway process (L{makeGatewayService}): the store (loaded and
    seeded when it starts), the upstream client, the health checks, the
    proxy registry of a shared store, the admin, and the proxy itself or
    the pool of proxy workers;
  - a proxy worker (L{makeWorkerService}): the link to its parent, a
    store the parent relays its states to, the upstream client and the
    proxy, which listens once the first state serves.

The entry points (L{gateway.process.tap}, L{gateway.process.worker}) pass
the reactor; nothing below them imports Twisted's global one.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Tuple

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.threads import deferToThreadPool

import gateway
from gateway.admin.api import AdminAPI
from gateway.admin.webui import withWebUI
from gateway.balancing.health import HealthChecker
from gateway.http.client import DEFAULT_MAX_IDLE, HTTP11UpstreamClient
from gateway.http.listen import reusePortEndpoint
from gateway.interfaces import ISharedStore
from gateway.model.config import workersCanShare
from gateway.model.limits import ADMIN_LIMITS
from gateway.pipeline.aggregate import Aggregator
from gateway.pipeline.forwarding import ClientAddresses
from gateway.pipeline.mirror import Mirror
from gateway.pipeline.resource import GatewayResource
from gateway.process.interpreter import nurseryAdvice
from gateway.process.listening import ListenService, ProxyService
from gateway.process.parent import ParentLink
from gateway.process.pool import WorkerPool, workerCommand, workerCount
from gateway.process.propagation import Propagation, ServedRevisions
from gateway.process.sites import AdminSite, GatewaySite, globalFilterSpecs
from gateway.process.startup import Abort, ProcessService
from gateway.process.status import GatewayStatus
from gateway.process.storeservice import StoreService
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


def _upstreamClient(reactor: Any, proxyConfig: Any) -> HTTP11UpstreamClient:
    return HTTP11UpstreamClient(
        reactor,
        maxIdlePerBackend=(
            proxyConfig.upstreamKeepalive if proxyConfig is not None else DEFAULT_MAX_IDLE
        ),
    )


def _proxySite(
    proxyConfig: Any, reactor: Any, manager: SnapshotManager, client: Any, counters: Stats
) -> Tuple[GatewayResource, GatewaySite]:
    resource = GatewayResource(
        manager,
        client,
        reactor,
        ClientAddresses(proxyConfig.trustedProxies),
        aggregator=Aggregator(client, reactor, stats=counters),
        mirror=Mirror(client, reactor, stats=counters),
        stats=counters,
    )
    site = GatewaySite(
        resource,
        limits=proxyConfig.limits,
        bodyLimitFor=manager.bodyLimitFor,
        stats=counters,
        reactor=reactor,
    )
    return resource, site


def makeGatewayService(
    config: Any, reactor: Any, filterRegistry: Any, abort: Abort, client: Any = None
) -> ProcessService:
    """
    Put the gateway process together: its children are C{store},
    C{upstream}, C{health}, C{proxy-registry} (with a shared store and a
    proxy), C{admin} (with an admin), and C{proxy} (the proxy in this
    process) or C{workers} (several proxy workers).

    See L{makeService} for the parameters.
    """
    root = ProcessService(abort)
    proxyConfig = config.proxy
    workers = (
        workerCount(proxyConfig.workers, workersCanShare(proxyConfig.listen, config.store))
        if proxyConfig is not None
        else 1
    )
    store = storeFromURL(config.store, reactor)
    shared = store if ISharedStore.providedBy(store) else None
    manager = SnapshotManager(
        filterRegistry, reactor, globalFilters=globalFilterSpecs(proxyConfig), buckets=LOCAL
    )
    counters = Stats(reactor)
    counters.follow(manager)
    served = ServedRevisions()
    if client is None:
        client = _upstreamClient(reactor, proxyConfig)

    pool: Optional[WorkerPool] = None
    if proxyConfig is not None and workers > 1:
        pool = WorkerPool(
            reactor,
            workers,
            workerCommand(config.path, reactor),
            healthSource=lambda: {name: b.healthy for name, b in manager.backends.items()},
            onStats=lambda index, stats: status.workerReported(index, stats),
            makeBuckets=SharedBuckets.create,
            served=served,
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
    status = GatewayStatus(
        reactor, config, manager, counters, storeService, served, health, pool, shared
    )

    storeService.setServiceParent(root)
    UpstreamService(client).setServiceParent(root)
    health.setServiceParent(root)

    if shared is not None and proxyConfig is not None:
        # Several gateways share this store: say that this one serves, and
        # which revision it serves, as soon as that changes.
        registry = shared.proxyRegistry(
            advertisedAddress(proxyConfig.listen),
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
            validate=manager.validate,
            parser=manager.parser,
            proxies=status.proxies,
            stats=status.stats,
            ready=status.ready,
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
        pool.setServiceParent(root)
    elif proxyConfig is not None:
        manager.addListener(lambda snapshot: served.serving("proxy", snapshot.revision))
        resource, site = _proxySite(proxyConfig, reactor, manager, client, counters)
        ProxyService(
            "proxy",
            "proxy.listen",
            serverFromString(reactor, proxyConfig.listen),
            site,
            abort,
            resource=resource,
            drainTimeout=proxyConfig.drainTimeout,
            advice=nurseryAdvice(os.environ),
        ).setServiceParent(root)
    return root


def makeWorkerService(
    config: Any,
    reactor: Any,
    filterRegistry: Any,
    abort: Abort,
    worker: WorkerRole,
    client: Any = None,
) -> ProcessService:
    """
    Put a proxy worker together: its children are C{parent} (the control
    channel), C{store} (the states the parent relays), C{upstream} and
    C{proxy} (on an C{SO_REUSEPORT} socket, bound once the first state
    serves).

    See L{makeService} for the parameters.
    """
    root = ProcessService(abort)
    proxyConfig = config.proxy
    store = RelayedStore()
    manager = SnapshotManager(
        filterRegistry,
        reactor,
        globalFilters=globalFilterSpecs(proxyConfig),
        buckets=worker.buckets if worker.buckets is not None else LOCAL,
    )
    counters = Stats(reactor)
    counters.follow(manager)
    if client is None:
        client = _upstreamClient(reactor, proxyConfig)
    storeService = StoreService(store, manager, abort, reactor)
    ParentLink(
        reactor,
        worker.controlFD,
        store,
        manager,
        stats=StatsReport(counters, manager),
    ).setServiceParent(root)
    storeService.setServiceParent(root)
    UpstreamService(client).setServiceParent(root)
    resource, site = _proxySite(proxyConfig, reactor, manager, client, counters)
    ProxyService(
        "proxy",
        "proxy.listen",
        reusePortEndpoint(reactor, proxyConfig.listen),
        site,
        abort,
        after=storeService.whenReady,
        resource=resource,
        drainTimeout=proxyConfig.drainTimeout,
    ).setServiceParent(root)
    return root
