"""
A proxy worker's statistics, as it reports them to its parent every
second: the whole L{gateway.telemetry.stats.Stats.snapshot} the first
time, then only what changed since the report before (L{StatsReport}); the
parent puts the two together again (L{mergeReport}).

With 10,000 APIs a whole snapshot is about 5 MB of JSON: made, encoded
and decoded every second for every worker, it took most of a second of
CPU in the worker and more in the parent, and the changes waiting behind
it (a new store state to relay and compile) waited that long.  An API
that served no request since the report before is left out of the next
one (an API with a breaker of its own is looked at all the same: its
state changes with time too); the servers are looked at every time (one
per backend address: far fewer), and those whose entry is the same as the
last one sent are left out too.

A report that holds only changes says C{"delta": true}, and names the
APIs and servers that are gone (C{"removed": {"apis": [...], "servers":
[...]}}).  What changes without a request is looked at every time too: an
API's breaker, its WebSocket tunnels, its response cache's counts
(L{EXTRAS}); the rest of a snapshot (C{totals}, C{http2}, C{accessLog},
C{tracing}, C{limits}, the cache's memory store) is small and sent whole
in every report.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from gateway.telemetry.stats import apiBreaker

#: The parts of an API's entry that change without a request: its
#: breaker (with time, and with its configuration), its WebSocket tunnels
#: (their bytes, and their closing, long after the handshake's request),
#: and its response cache's counts (an answer stored after the request was
#: counted).
EXTRAS = ("breaker", "websocket", "cache")


def _extras(entry: Mapping[str, Any]) -> Optional[Tuple[Any, ...]]:
    values = tuple(entry.get(key) for key in EXTRAS)
    return None if values == (None,) * len(EXTRAS) else values


class StatsReport:
    """
    Makes a worker's reports: call it for the next one.
    """

    def __init__(self, stats: Any, manager: Any) -> None:
        """
        @param stats: the worker's L{gateway.telemetry.stats.Stats}.
        @param manager: its L{gateway.routing.snapshot.SnapshotManager}.
        """
        self._stats = stats
        self._manager = manager
        #: The request counts of the APIs when last reported.
        self._requests: Dict[str, int] = {}
        #: The L{EXTRAS} of the APIs that have any, and the entries of the
        #: servers, as last reported.
        self._extras: Dict[str, Tuple[Any, ...]] = {}
        self._servers: Dict[str, Any] = {}
        #: The APIs with a breaker of their own, and the snapshot they are
        #: of.
        self._withBreakers: List[str] = []
        self._breakersOf: Any = None
        self._reported = False

    def _breakerAPIs(self) -> List[str]:
        snapshot = self._manager.snapshot
        if snapshot is not self._breakersOf:
            self._breakersOf = snapshot
            apis = snapshot.apis if snapshot is not None else {}
            self._withBreakers = [n for n, c in apis.items() if apiBreaker(c) is not None]
        return self._withBreakers

    def _cachedAPIs(self) -> Iterable[str]:
        cache = getattr(self._stats, "cache", None)
        if cache is None:
            return ()
        return list(cache.countedAPIs())

    def __call__(self) -> Dict[str, Any]:
        """
        @return: the next report: a whole snapshot the first time, then
            what changed since the last report.
        """
        counters = self._stats.apis
        if not self._reported:
            changed = None
        else:
            changed = [
                name
                for name, entry in counters.items()
                if self._requests.get(name) != entry.requests
            ]
            # What changes without a request: breakers (which may come or
            # go with the configuration), tunnels, cache counts.
            changed.extend(self._breakerAPIs())
            changed.extend(self._stats.websockets)
            changed.extend(self._cachedAPIs())
            changed.extend(self._extras)
        names = None if changed is None else {n for n in changed if n in counters}
        snapshot = self._stats.snapshot(self._manager, None, apis=names)
        apis = snapshot["apis"]
        for name in list(apis):
            entry = apis[name]
            extras = _extras(entry)
            if (
                self._reported
                and self._requests.get(name) == entry["requests"]
                and self._extras.get(name) == extras
            ):
                del apis[name]
                continue
            self._requests[name] = entry["requests"]
            if extras is None:
                self._extras.pop(name, None)
            else:
                self._extras[name] = extras
        servers = snapshot["servers"]
        sent = {}
        for name, entry in list(servers.items()):
            sent[name] = entry
            if self._reported and self._servers.get(name) == entry:
                del servers[name]
        if not self._reported:
            self._reported = True
        else:
            removedAPIs = [name for name in self._requests if name not in counters]
            snapshot["delta"] = True
            snapshot["removed"] = {
                "apis": removedAPIs,
                "servers": [name for name in self._servers if name not in sent],
            }
            for name in removedAPIs:
                del self._requests[name]
                self._extras.pop(name, None)
        self._servers = sent
        return snapshot


def mergeReport(previous: Optional[Mapping[str, Any]], report: Mapping[str, Any]) -> Dict[str, Any]:
    """
    Put a worker's report together with what it reported before.

    @param previous: the worker's snapshot so far (what this returned
        last time), or L{None}.
    @param report: its new report (a whole snapshot, or a delta).
    @return: its whole snapshot now: the C{apis} and C{servers} of both,
        less those removed; every other key as the report has it (a delta
        holds them all: C{totals}, C{http2}, C{accessLog}, C{tracing},
        C{limits}, C{cache}..., so one that it lacks is gone).
    """
    if previous is None or not report.get("delta"):
        return {k: v for k, v in report.items() if k not in ("delta", "removed")}
    merged = {k: v for k, v in report.items() if k not in ("delta", "removed")}
    removed = report.get("removed") or {}
    for key in ("apis", "servers"):
        entries = dict(previous.get(key) or {})
        entries.update(report.get(key) or {})
        for name in removed.get(key, ()):
            entries.pop(name, None)
        merged[key] = entries
    return merged
