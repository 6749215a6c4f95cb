"""
The gateway process as a tree of Twisted services.

L{GatewayService} opens the store, seeds it from the config file, builds
the first snapshot, and runs the roles the config asks for: the proxy
site, the admin site, or both, each on its own endpoint.  It watches the
store, so every committed change is compiled and swapped in while the
process serves.
"""

from __future__ import annotations

import datetime
import os
import sys
from typing import Any, Dict, List, Optional, Type, Union

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.python.failure import Failure

import gateway
from gateway.admin.webui import withWebUI
from gateway.balancing.health import HealthChecker
from gateway.http.client import DEFAULT_MAX_IDLE, HTTP11UpstreamClient
from gateway.http.listen import reusePortEndpoint
from gateway.http.request import GatewayRequest
from gateway.http.site import LimitedSite
from gateway.model.config import workersCanShare
from gateway.model.endpoints import endpointPort
from gateway.model.limits import ADMIN_LIMITS
from gateway.model.resources import Catalog
from gateway.model.schema import toJSON
from gateway.pipeline.aggregate import Aggregator
from gateway.pipeline.forwarding import ClientAddresses
from gateway.pipeline.mirror import Mirror
from gateway.pipeline.resource import GatewayResource
from gateway.process.interpreter import nurseryAdvice
from gateway.process.pool import WorkerPool, workerCommand, workerCount
from gateway.protection.ratelimit import LOCAL
from gateway.protection.sharedbuckets import SharedBuckets
from gateway.routing.snapshot import SnapshotManager
from gateway.store import Change, StoreState, storeFromURL
from gateway.store.etcd.registry import ProxyRegistry, advertisedAddress, listProxies
from gateway.store.etcd.store import EtcdStore
from gateway.telemetry.metrics import metricsResource
from gateway.telemetry.stats import SnapshotStats, Stats, mergeSnapshots

log = Logger()


class GatewaySite(LimitedSite):
    """
    The proxy's site: L{GatewayRequest}s, and no access log of its own (the
    C{access-log} filter writes a structured one when configured).
    """

    # Declared, or mypy checks GatewayRequest's constructor against
    # server.Request's (channel, *args, **kw), which it need not match: the
    # channel only ever passes the channel and queued.
    requestFactory: Type[GatewayRequest] = GatewayRequest
    displayTracebacks = False

    def __init__(self, resource: Any, **kwargs: Any) -> None:
        # A proxy forwards form bodies as they are: never parse them into
        # request.args (a query rule would see body fields, and Twisted
        # would read the whole body into memory to parse it).
        kwargs.setdefault("parsePOSTFormSubmission", False)
        super().__init__(resource, **kwargs)

    def log(self, request: Any) -> None:
        pass


class AdminSite(LimitedSite):
    displayTracebacks = False

    def __init__(self, resource: Any, **kwargs: Any) -> None:
        # The admin reads its JSON bodies itself and answers other media
        # types 415: Twisted must not parse a POST as a form first (a JSON
        # body sent as multipart/form-data cost the connection).
        kwargs.setdefault("parsePOSTFormSubmission", False)
        super().__init__(resource, **kwargs)


def seedChanges(state: StoreState, seed: Dict[str, List[Any]]) -> List[Change]:
    """
    @return: the changes that create the config file's seed resources that
        the store does not have yet.  Resources already in the store win:
        what an operator changed through the admin survives a restart.
    """
    changes = []
    for kind, objects in seed.items():
        for obj in objects:
            if state.get(kind, obj.name) is None:
                changes.append(Change(kind, obj.name, toJSON(obj)))
    return changes


def globalFilterSpecs(proxyConfig: Any) -> List[Any]:
    """
    @return: the global filter chain of a proxy: C{access-log} first when
        C{accessLog} is on (so its C{after} hook runs last and sees the
        final answer), then the configured filters.
    """
    if proxyConfig is None:
        return []
    specs = list(proxyConfig.filters)
    names = [spec if isinstance(spec, str) else spec.name for spec in specs]
    if proxyConfig.accessLog and "access-log" not in names:
        specs.insert(0, "access-log")
    return specs


def _resultNow(d: defer.Deferred) -> Any:
    """
    @return: the result of a Deferred that has already fired (raising its
        failure), or the Deferred itself when it has not.
    """
    box: List[Any] = []
    d.addBoth(box.append)
    if not box:
        return d
    result = box[0]
    if isinstance(result, Failure):
        result.raiseException()
    return result


class GatewayService(MultiService):
    """
    One gateway process.

    @ivar store: the L{gateway.interfaces.IStore}.
    @ivar manager: the L{SnapshotManager}.
    @ivar ready: whether the first snapshot is serving.
    @ivar proxyResource: the proxy served in this process, or L{None}.
    """

    proxyResource: Optional[GatewayResource] = None

    def __init__(
        self,
        config: Any,
        reactor: Any,
        filterRegistry: Any,
        store: Any = None,
        client: Any = None,
        role: str = "main",
        buckets: Any = None,
    ) -> None:
        """
        @param role: C{"main"} for the gateway process (the proxy in this
            process, or its workers when C{proxy.workers} asks for several;
            the admin; the health checks; seeding), C{"worker"} for one
            proxy worker (the proxy alone, the store read-only, health from
            the parent).
        @param buckets: in a worker, the L{SharedBuckets} of all the
            workers, for limits that hold for the gateway as a whole.
        """
        super().__init__()
        self._config = config
        self._reactor = reactor
        self.role = role
        isWorker = role == "worker"
        proxyConfig = config.proxy
        workers = (
            workerCount(proxyConfig.workers, workersCanShare(proxyConfig.listen, config.store))
            if proxyConfig is not None
            else 1
        )
        if store is None:
            store = storeFromURL(config.store, reactor, readOnly=isWorker)
        self.store = store
        #: The workers' shared buckets (made here in the gateway process
        #: when it runs several, passed to each worker).
        self.sharedBuckets: Optional[SharedBuckets] = buckets
        if buckets is None and not isWorker and proxyConfig is not None and workers > 1:
            self.sharedBuckets = SharedBuckets.create()
        self.manager = SnapshotManager(
            filterRegistry,
            reactor,
            globalFilters=globalFilterSpecs(proxyConfig),
            buckets=buckets if buckets is not None else LOCAL,
        )
        self.ready = False
        self.startedAt = datetime.datetime.now(datetime.timezone.utc).isoformat()
        self._unwatch: Optional[Any] = None
        self._client = client
        self.workerPool: Optional[WorkerPool] = None
        self.health: Optional[HealthChecker] = None
        self._workerStats: Dict[int, dict] = {}
        self.registry: Optional[Any] = None
        self.counters = Stats(reactor)
        self.counters.follow(self.manager)

        # A store that answers at once (the file store) is loaded, seeded
        # and compiled here, so a bad store or seed stops the start with a
        # message instead of a process that serves nothing.
        loaded = _resultNow(self._loadAndSeed(seed=not isWorker))
        self._pendingStart = loaded if isinstance(loaded, defer.Deferred) else None

        if proxyConfig is not None or not isWorker:
            if self._client is None:
                self._client = HTTP11UpstreamClient(
                    reactor,
                    maxIdlePerBackend=(
                        proxyConfig.upstreamKeepalive
                        if proxyConfig is not None
                        else DEFAULT_MAX_IDLE
                    ),
                )
        if proxyConfig is not None and (isWorker or workers == 1):
            self.mirror = Mirror(self._client, reactor)
            self.proxyResource = GatewayResource(
                self.manager,
                self._client,
                reactor,
                ClientAddresses(proxyConfig.trustedProxies),
                aggregator=Aggregator(self._client, reactor),
                mirror=self.mirror,
                stats=self.counters,
            )
            site = GatewaySite(
                self.proxyResource,
                limits=proxyConfig.limits,
                bodyLimitFor=self.manager.bodyLimitFor,
                reactor=reactor,
            )
            if isWorker:
                self._serve("proxy", reusePortEndpoint(reactor, proxyConfig.listen), site)
            else:
                self._listen("proxy", proxyConfig.listen, site)
        elif proxyConfig is not None:
            self.workerPool = WorkerPool(
                reactor,
                workers,
                workerCommand(config.path, reactor),
                healthSource=self.healthStates,
                onStats=self._workerStats.__setitem__,
                sharedFD=self.sharedBuckets.fileno() if self.sharedBuckets is not None else None,
            )
            self.workerPool.setName("workers")
            self.workerPool.setServiceParent(self)
        if proxyConfig is not None and not isWorker and isinstance(self.store, EtcdStore):
            # Several gateways share this etcd: say that this one serves.
            self.registry = ProxyRegistry(
                self.store.client,
                self.store.prefix,
                advertisedAddress(proxyConfig.listen),
                gateway.__version__,
                stats=self.stats,
                ready=lambda: self.ready,
                startedAt=self.startedAt,
                reactor=reactor,
            )
            self.registry.setServiceParent(self)
        if not isWorker:
            self.health = HealthChecker(self._client, reactor, self.manager)
            self.health.setName("health")
            self.health.setServiceParent(self)
        if config.admin is not None and not isWorker:
            from gateway.admin.api import AdminAPI

            self.admin = AdminAPI(
                self.store,
                config.admin.token,
                validate=self.manager.validate,
                parser=self.manager.parser,
                proxies=self.proxies,
                stats=self.stats,
                ready=lambda: self.ready,
                reactor=reactor,
                metrics=metricsResource(
                    self.counters
                    if self.workerPool is None
                    else SnapshotStats(self.stats, reactor),
                    self.manager,
                    self.health,
                ),
            )
            adminSite = AdminSite(
                withWebUI(self.admin.resource()), limits=ADMIN_LIMITS, reactor=reactor
            )
            self._listen("admin", config.admin.listen, adminSite)

    def healthStates(self) -> Dict[str, bool]:
        """
        @return: C{{server: healthy}} as this process's health checks see it.
        """
        return {name: b.healthy for name, b in self.manager.backends.items()}

    def applyHealth(self, states: Dict[str, bool]) -> None:
        """
        Take the servers' health from the parent (in a worker).
        """
        self._health = dict(states)
        self._applyHealth()

    def _applyHealth(self, snapshot: Any = None) -> None:
        states = getattr(self, "_health", None)
        if not states:
            return
        for name, backend in self.manager.backends.items():
            healthy = states.get(name)
            if healthy is not None:
                backend.healthy = bool(healthy)

    def _listen(self, name: str, description: str, factory: Any) -> None:
        self._serve(name, serverFromString(self._reactor, description), factory)

    def _serve(self, name: str, endpoint: Any, factory: Any) -> None:
        service = StreamServerEndpointService(endpoint, factory)
        # A port that cannot be bound stops the process instead of being
        # logged and forgotten.
        service._raiseSynchronously = True
        service.setName(name)
        service.setServiceParent(self)

    async def _loadAndSeedAsync(self, seed: bool) -> None:
        state = await self.store.load()
        changes = seedChanges(state, self._config.seed) if seed else []
        if changes:
            self.manager.validate(
                Catalog.fromResources(state.withChanges(changes, state.revision).resources)
            )
            revision = await self.store.commit(changes, state.revision)
            state = state.withChanges(changes, revision)
            log.info("seeded {n} resource(s) from the config file", n=len(changes))
        current = self.manager.snapshot
        # The watch may have applied a newer state meanwhile: never roll back.
        if current is None or current.revision < state.revision:
            self.manager.apply(state)
        self.ready = True
        if self.registry is not None:
            self.registry.refresh()
        log.info("serving store revision {revision}", revision=state.revision)

    def _loadAndSeed(self, seed: bool = True) -> defer.Deferred:
        return defer.Deferred.fromCoroutine(self._loadAndSeedAsync(seed))

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            # Name the setting at fault rather than print a traceback.
            proxy = self._config.proxy
            role = (
                "proxy" if proxy is not None and e.port == endpointPort(proxy.listen) else "admin"
            )
            sys.stderr.write(
                f"gateway: cannot start: {role}.listen: cannot listen on "
                f"{e.interface or '*'}:{e.port}: {e.socketError}\n"
            )
            raise SystemExit(1)

    def startService(self) -> None:
        super().startService()
        if self.proxyResource is not None and self.role != "worker":
            advice = nurseryAdvice(os.environ)
            if advice is not None:
                log.warn(advice)
        self._unwatch = self.store.watch(self.manager.update)
        if self.role == "worker":
            # Health comes from the parent: keep it across snapshot swaps.
            self.manager.addListener(self._applyHealth)
        if self._pendingStart is not None:
            self._pendingStart.addErrback(self._startFailed)

    def _startFailed(self, failure: Failure) -> None:
        log.failure("the gateway could not load its configuration", failure)
        self._reactor.stop()

    @defer.inlineCallbacks
    def stopService(self):
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        proxy = self.getServiceNamed("proxy") if "proxy" in self.namedServices else None
        if proxy is not None and proxy.running and self.proxyResource is not None:
            # Stop accepting first, then let the requests in flight finish.
            yield defer.maybeDeferred(proxy.stopService)
            left = yield self.proxyResource.drain(self._config.proxy.drainTimeout)
            if left:
                log.warn("stopping with {n} request(s) still in flight", n=left)
        yield defer.maybeDeferred(super().stopService)
        if self._client is not None:
            yield self._client.close()
        yield self.store.close()

    # -- what the admin shows ---------------------------------------------------

    def proxies(self) -> Union[List[Dict[str, Any]], defer.Deferred[List[Dict[str, Any]]]]:
        """
        @return: the live proxies: those registered in etcd (a L{Deferred}
            firing with them), or this process, when it runs one.
        """
        if isinstance(self.store, EtcdStore):
            return listProxies(self.store.client, self.store.prefix)
        if self._config.proxy is None:
            return []
        snapshot = self.manager.snapshot
        return [
            {
                "addr": self._config.proxy.listen,
                "version": gateway.__version__,
                "startedAt": self.startedAt,
                "revision": snapshot.revision if snapshot is not None else None,
                "ready": self.ready,
            }
        ]

    def stats(self) -> Dict[str, Any]:
        """
        @return: the stats of this process's proxy; with workers, their sum,
            and each worker's under C{"proxies"}.
        """
        own = self.counters.snapshot(self.manager, self.health)
        if self.workerPool is None:
            return own
        workers = [self._workerStats[i] for i in sorted(self._workerStats)]
        if not workers:
            return own
        merged = mergeSnapshots(workers)
        # Live server state (health, breakers) is the parent's view.
        for name, ownServer in own.get("servers", {}).items():
            mergedServer = merged.setdefault("servers", {}).setdefault(name, {})
            for key in ("health", "healthy", "addr"):
                if key in ownServer:
                    mergedServer[key] = ownServer[key]
        merged["proxies"] = [
            {"worker": i, "stats": self._workerStats[i]} for i in sorted(self._workerStats)
        ]
        return merged
