"""
L{GatewayStatus}: what the admin shows of its gateway: the proxies, the
store revision each of them (and each worker) serves, and their statistics.
"""

from __future__ import annotations

import datetime
from typing import Any, Dict, List, Optional

import gateway
from gateway.model.config import proxyEndpoints
from gateway.process.propagation import ServedRevisions
from gateway.telemetry.certificates import certificateStats
from gateway.telemetry.report import mergeReport
from gateway.telemetry.stats import mergeSnapshots, retiredCounts


class GatewayStatus:
    """
    The live state of one gateway process, for C{/api/v1/proxies},
    C{/api/v1/stats} and the proxy registry of a shared store.

    @ivar startedAt: when the process was put together (ISO 8601).
    """

    def __init__(
        self,
        reactor: Any,
        config: Any,
        manager: Any,
        counters: Any,
        store: Any,
        served: ServedRevisions,
        health: Optional[Any] = None,
        pool: Optional[Any] = None,
        shared: Optional[Any] = None,
        discovery: Optional[Any] = None,
    ) -> None:
        """
        @param reactor: an L{IReactorTime}.
        @param config: the L{gateway.model.config.GatewayConfig}.
        @param manager: this process's L{gateway.routing.snapshot.SnapshotManager}.
        @param counters: this process's L{gateway.telemetry.stats.Stats}.
        @param store: the L{gateway.process.storeservice.StoreService}.
        @param served: the revisions this gateway's proxy processes serve.
        @param health: the L{gateway.balancing.health.HealthChecker}, or
            L{None}.
        @param pool: the L{gateway.process.pool.WorkerPool}, or L{None} when
            the proxy serves in this process (or there is none).
        @param shared: the store when it provides
            L{gateway.interfaces.ISharedStore}, or L{None}.
        @param discovery: the L{gateway.discovery.service.DNSDiscovery}, or
            L{None}.
        """
        self._config = config
        self._manager = manager
        self._counters = counters
        self._store = store
        self._served = served
        self._health = health
        self._pool = pool
        self._shared = shared
        self._discovery = discovery
        self._workerStats: Dict[int, dict] = {}
        #: The counters of the workers that ended (L{retiredCounts}), or
        #: L{None} before any did.
        self._retired: Optional[Dict[str, Any]] = None
        self._reactor = reactor
        self.startedAt = datetime.datetime.fromtimestamp(
            reactor.seconds(), datetime.timezone.utc
        ).isoformat()

    def ready(self) -> bool:
        """
        @return: whether this gateway serves its first configuration (its
            names looked up once, when it discovers servers): on every
            worker while it starts; once started, on one worker at least (a
            worker restarting, or unable to start again, leaves its share
            of the connections to the others, which the kernel gives them:
            taking the gateway out of a load balancer's rotation then would
            refuse what they serve; C{/api/v1/proxies} shows that worker
            not ready).
        """
        discovery = self._discovery
        if not self._store.ready or (discovery is not None and not discovery.settled):
            return False
        missing = self._served.missing()
        if not missing:
            return True
        pool = self._pool
        return pool is not None and pool.started and len(missing) < pool.count

    def readiness(self) -> str:
        """
        @return: C{ready} when L{ready}; else C{starting} until the gateway
            has served on every worker once, C{unavailable} afterwards (no
            worker serves now: each one is restarting, or cannot start).
        """
        if self.ready():
            return "ready"
        pool = self._pool
        if pool is not None and pool.started and self._store.ready:
            return "unavailable"
        return "starting"

    def workerReported(self, index: int, stats: dict) -> None:
        """
        Keep the stats a worker reported (a whole snapshot, or what changed
        since its report before: L{gateway.telemetry.report}).

        A whole snapshot after others is the first report of a new process
        (the worker died and was started again): what the one before it
        counted is kept apart (L{retiredCounts}) and stays in the sums, so
        that the gateway's counters only ever go up.
        """
        previous = self._workerStats.get(index)
        if not stats.get("delta"):
            # (Should the end of the process before it not have been told.)
            self.workerEnded(index)
            previous = None
        elif previous is None:
            # A report of a process whose end was told already (read after
            # it): what it counted is in the retired counts.
            return
        self._workerStats[index] = mergeReport(previous, stats)

    def workerEnded(self, index: int) -> None:
        """
        A worker's process ended: what it counted stays in the sums
        (L{retiredCounts}), what it had live (requests in flight, open
        tunnels, its breakers) is gone with it, whether or not it is
        started again.
        """
        previous = self._workerStats.pop(index, None)
        if previous is not None:
            ended = [previous] if self._retired is None else [previous, self._retired]
            self._retired = self._retiredNow(mergeSnapshots(ended))

    def _retiredNow(self, snapshot: Dict[str, Any]) -> Dict[str, Any]:
        """
        @return: the counters of C{snapshot} (L{retiredCounts}) of the APIs
            and servers configured now.
        """
        current = self._manager.snapshot
        if current is None:
            return retiredCounts(snapshot)
        return retiredCounts(snapshot, current.apis, current.backends)

    def _workerSnapshots(self) -> List[Dict[str, Any]]:
        """
        @return: the workers' stats, and the counters of those that ended
            (of what is configured now) last.
        """
        workers = [self._workerStats[i] for i in sorted(self._workerStats)]
        if self._retired is not None and workers:
            self._retired = self._retiredNow(self._retired)
            workers.append(self._retired)
        return workers

    def _workers(self) -> List[Dict[str, Any]]:
        assert self._pool is not None
        revisions = self._served.revisions()
        pids = self._pool.pids()
        # Every configured worker, running or not (restarting: no pid).
        return [
            {
                "worker": index,
                "pid": pids.get(index),
                "revision": revisions.get(index),
                "ready": index in revisions,
            }
            for index in range(self._pool.count)
        ]

    def describe(self) -> Dict[str, Any]:
        """
        @return: the live part of this gateway's proxy record: whether it is
            ready, the revision every proxy process serves, each worker's,
            and the stats' totals.  Only the totals: a record is one etcd
            value, rewritten whenever the revision served changes, and
            per-API stats would make it grow with the catalog (10,000 APIs
            of two workers are megabytes, more than etcd takes in one
            request); the details are each gateway's C{/api/v1/stats}.
        """
        record: Dict[str, Any] = {"ready": self.ready(), "revision": self._served.lowest()}
        if self._pool is not None:
            record["workers"] = self._workers()
        record["stats"] = {"totals": self._totals()}
        return record

    def _totals(self) -> Dict[str, Any]:
        if self._pool is None or not self._workerStats:
            return self._counters.totalsJSON()
        workers = [{"totals": stats.get("totals")} for stats in self._workerSnapshots()]
        return mergeSnapshots(workers)["totals"]

    def proxies(self) -> Any:
        """
        @return: the live proxies: the records of a shared store (a
            Deferred), or this gateway's own, when it runs a proxy.
        """
        if self._shared is not None:
            return self._shared.listProxies()
        if self._config.proxy is None:
            return []
        record: Dict[str, Any] = {
            "addr": proxyEndpoints(self._config.proxy)[0],
            "version": gateway.__version__,
            "startedAt": self.startedAt,
            "ready": self.ready(),
            "revision": self._served.lowest(),
        }
        if self._pool is not None:
            record["workers"] = self._workers()
        return [record]

    def stats(self) -> Dict[str, Any]:
        """
        @return: the stats of this process's proxy; with workers, their sum,
            and each worker's under C{"proxies"}.
        """
        own = self._counters.snapshot(self._manager, self._health)
        own["certificates"] = certificateStats(self._manager.snapshot, self._reactor.seconds())
        if self._discovery is not None:
            own["discovery"] = self._discovery.status()
        if self._pool is None:
            return own
        workers = self._workerSnapshots()
        if not workers:
            return own
        merged = mergeSnapshots(workers)
        merged["certificates"] = own["certificates"]
        # Live server state (health, breakers) is the parent's view.
        for name, ownServer in own.get("servers", {}).items():
            mergedServer = merged.setdefault("servers", {}).setdefault(name, {})
            for key in ("health", "healthy", "addr", "discovered"):
                if key in ownServer:
                    mergedServer[key] = ownServer[key]
        if "discovery" in own:
            merged["discovery"] = own["discovery"]
        merged["proxies"] = [
            {"worker": i, "stats": self._workerStats[i]} for i in sorted(self._workerStats)
        ]
        return merged
