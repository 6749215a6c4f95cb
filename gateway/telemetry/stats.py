"""
Request statistics: what the proxy answered, per API and per server.

L{Stats} is told of every answer once (C{GatewayResource(stats=...)} calls
L{Stats.record}) and keeps plain counters: requests, errors by kind,
rejects by reason and a latency histogram in fixed buckets.  Recording is a
handful of integer increments on objects made once per configured name, so
it costs next to nothing on the request path; everything else (percentiles,
JSON, Prometheus metrics) is computed when someone asks.

How an answer is counted (C{outcome} as L{gateway.pipeline.resource.outcomeOf} and the
filter chain name it):

  - C{None} (an answer from upstream, or an aggregation): an error C{4xx}
    or C{5xx} when its status is one, else nothing more than a request;
  - C{timeout}, C{refused}, C{broken}, C{unavailable}: an error of that
    kind (and not also C{5xx});
  - C{aborted}: the client left before its answer's head (the access
    log's 499), counted when the request is over, its latency the time the
    client waited: an error C{aborted} (and not also C{4xx}).  C{unavailable} is every "no server to
    send it to" answer but one: when every server's breaker is open;
  - C{reject:rate-limit} (an API's limit) and C{reject:server-limit}
    (every server at its C{maxQPS}): a reject C{rateLimit};
    C{reject:circuit-breaker} (an API's own breaker, or every server's
    breaker open: L{gateway.pipeline.errors.CircuitOpen}): C{breaker};
    C{reject:ip-access} and C{reject:cors} (a preflight from an origin, or
    for a method or a header, not allowed): C{access}; any other filter's
    C{reject:NAME}: C{other}.  Rejects are not errors.  (A filter's early
    answer below 400, such as a preflight's 204, is no reject: its outcome
    is L{None}.)

Latency is the time from the request's arrival to the moment its answer's
status is known (C{record} is called before the body is streamed), in
milliseconds in the JSON.  Requests that match no API (the proxy's own
404) are counted in the C{totals} only: there is no API to count them
under, and a per-path count would let clients create labels at will.

The WebSocket tunnels of an API with C{websocket: true} have counters of
their own (L{WebSocketCounters}: open now, opened, refused over
C{maxWebsockets}, bytes each way), under the API's C{websocket} key; the
handshake itself is an answer like any other (its status 101).

Cardinality is bounded by the configuration: after the first L{prune}
(called with every new snapshot, see L{Stats.follow}) only the APIs and
servers of the current configuration have entries, never anything taken
from a request.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
)

from gateway.cache.engine import withRatio
from gateway.http.tunnel import TunnelMeter

#: Upper bounds of the latency buckets, in milliseconds; a last bucket
#: (C{"+Inf"}) takes the rest.
BUCKETS_MS: Tuple[int, ...] = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


#: The same bounds in seconds (what Prometheus wants).
BUCKETS_SECONDS: Tuple[float, ...] = tuple(b / 1000.0 for b in BUCKETS_MS)


#: The label of the last bucket.
INF = "+Inf"


#: Error kinds, in the order they are shown.
ERROR_KINDS: Tuple[str, ...] = (
    "4xx",
    "5xx",
    "timeout",
    "refused",
    "broken",
    "unavailable",
    "aborted",
)


#: Reject reasons, in the order they are shown.
REJECT_REASONS: Tuple[str, ...] = ("rateLimit", "breaker", "access", "auth", "other")


_FAILURES = {
    "timeout": "timeout",
    "refused": "refused",
    "broken": "broken",
    "unavailable": "unavailable",
    "aborted": "aborted",
}


_REJECTS = {
    "reject:rate-limit": "rateLimit",
    "reject:server-limit": "rateLimit",
    "reject:circuit-breaker": "breaker",
    "reject:ip-access": "access",
    "reject:cors": "access",
    "reject:acl": "access",
    "reject:auth": "auth",
}


_BREAKER_SEVERITY = {"closed": 0, "half-open": 1, "open": 2}


def classify(code: int, outcome: Optional[str]) -> Tuple[Optional[str], Optional[str]]:
    """
    @param code: the status sent.
    @param outcome: the outcome, as L{Stats.record} takes it.
    @return: C{(errorKind, rejectReason)}, either or both L{None}.
    """
    if outcome is not None:
        reason = _REJECTS.get(outcome)
        if reason is not None:
            return None, reason
        kind = _FAILURES.get(outcome)
        if kind is not None:
            return kind, None
        if outcome.startswith("reject:"):
            return None, "other"
    if code >= 500:
        return "5xx", None
    if code >= 400:
        return "4xx", None
    return None, None


#: What the stats count of HTTP/2 (L{Stats.countHTTP2}): connections made,
#: streams opened (each one request), streams the clients reset, and
#: connections ended for a flood (C{GOAWAY ENHANCE_YOUR_CALM}).
HTTP2_COUNTS = ("connections", "streams", "resets", "floods")


class Counters:
    """
    The counters of one API, one server, or all of them.

    @ivar requests: answers counted.
    @ivar errors: C{{kind: count}} for every kind of L{ERROR_KINDS}.
    @ivar rejects: C{{reason: count}} for every reason of L{REJECT_REASONS}.
    @ivar buckets: answers per latency bucket (not cumulative), the last one
        past the largest bound.
    @ivar latencySum: the sum of the latencies, in seconds.
    """

    __slots__ = ("requests", "errors", "rejects", "buckets", "latencySum")

    def __init__(self) -> None:
        self.requests = 0
        self.errors: Dict[str, int] = dict.fromkeys(ERROR_KINDS, 0)
        self.rejects: Dict[str, int] = dict.fromkeys(REJECT_REASONS, 0)
        self.buckets: List[int] = [0] * (len(BUCKETS_MS) + 1)
        self.latencySum = 0.0

    def add(self, bucket: int, latency: float, kind: Optional[str], reason: Optional[str]) -> None:
        """
        Count one answer.
        """
        self.requests += 1
        self.buckets[bucket] += 1
        self.latencySum += latency
        if kind is not None:
            self.errors[kind] += 1
        if reason is not None:
            self.rejects[reason] += 1

    def cumulativeBuckets(self) -> List[int]:
        """
        @return: answers at or under each bound, the last one being all.
        """
        out = []
        total = 0
        for n in self.buckets:
            total += n
            out.append(total)
        return out

    def toJSON(self) -> Dict[str, Any]:
        """
        @return: C{requests}, C{errors}, C{rejects} and C{latency} (see
            L{latencyJSON}).
        """
        return {
            "requests": self.requests,
            "errors": dict(self.errors),
            "rejects": dict(self.rejects),
            "latency": latencyJSON(self.cumulativeBuckets(), self.latencySum * 1000.0),
        }


class WebSocketCounters(TunnelMeter):
    """
    The WebSocket tunnels of one API (the meter its tunnels count their
    bytes in, see L{gateway.http.tunnel}).

    @ivar open: tunnels open now.
    @ivar opened: tunnels opened so far.
    @ivar overCap: handshakes refused (503) because C{maxWebsockets}
        tunnels were open.
    @ivar bytesUp: bytes relayed from clients to servers.
    @ivar bytesDown: bytes relayed from servers to clients.
    """

    __slots__ = ("open", "opened", "overCap")

    #: The keys of L{toJSON}, in order.
    FIELDS: Tuple[str, ...] = ("open", "opened", "overCap", "bytesUp", "bytesDown")

    def __init__(self) -> None:
        super().__init__()
        self.open = 0
        self.opened = 0
        self.overCap = 0

    def toJSON(self) -> Dict[str, int]:
        """
        @return: C{{"open", "opened", "overCap", "bytesUp", "bytesDown"}}.
        """
        return {name: getattr(self, name) for name in self.FIELDS}


class ServerState(NamedTuple):
    """
    The live state of one server, as the metrics show it (see
    L{Stats.serverStates}).
    """

    #: The server's name.
    name: str
    #: Requests sent to it (retries, aggregation nodes, mirrors included).
    upstreamRequests: int
    #: Those that failed.
    upstreamFailures: int
    #: Requests in flight to it.
    active: int
    #: The moving average of its response time, in seconds.
    latencyEWMA: float
    #: Whether its active health check finds it healthy.
    healthy: bool
    #: Whether passive health checking keeps it out of rotation now.
    ejected: bool
    #: Whether it has an active health check (L{None}: no checker to ask).
    checked: Optional[bool]
    #: Its circuit breaker's state, or L{None} without a breaker.
    breaker: Optional[str]


def percentile(cumulative: Sequence[int], q: float) -> Optional[float]:
    """
    Estimate a percentile from a histogram, interpolating linearly inside
    the bucket it falls in (as Prometheus' C{histogram_quantile} does).

    @param cumulative: answers at or under each bound of L{BUCKETS_MS}, and
        the total last.
    @param q: the quantile, from 0 to 1.
    @return: the estimate in milliseconds, or L{None} for an empty
        histogram.  A quantile that falls past the largest bound is
        estimated as that bound.
    """
    total = cumulative[-1] if cumulative else 0
    if total <= 0:
        return None
    rank = q * total
    previous = 0
    for i, upTo in enumerate(cumulative):
        if upTo >= rank and upTo > previous:
            if i >= len(BUCKETS_MS):
                return float(BUCKETS_MS[-1])
            lower = BUCKETS_MS[i - 1] if i > 0 else 0
            upper = BUCKETS_MS[i]
            return lower + (upper - lower) * (rank - previous) / (upTo - previous)
        previous = upTo
    return float(BUCKETS_MS[-1])


def latencyJSON(cumulative: Sequence[int], sumMs: float) -> Dict[str, Any]:
    """
    @param cumulative: as L{percentile} takes it.
    @param sumMs: the sum of the latencies, in milliseconds.
    @return: C{count}, C{sumMs}, C{p50}, C{p99} (ms, L{None} when empty) and
        C{buckets}: C{[[le, count], ...]}, cumulative as in Prometheus,
        C{le} in ms and C{"+Inf"} for the last.
    """
    bounds: List[Any] = list(BUCKETS_MS) + [INF]
    return {
        "count": cumulative[-1],
        "sumMs": sumMs,
        "p50": percentile(cumulative, 0.5),
        "p99": percentile(cumulative, 0.99),
        "buckets": [[le, n] for le, n in zip(bounds, cumulative)],
    }


class Stats:
    """
    The counters of one proxy.

    @ivar totals: the L{Counters} of every answer recorded.
    @ivar apis: C{{name: L{Counters}}} per API.
    @ivar servers: C{{name: L{Counters}}} per server, for answers whose
        request was last sent to that server (aggregations are counted
        under their API only; every upstream request, aggregation nodes
        and retries included, is in the server's C{upstreamRequests}).
    @ivar sendTimeouts: clients cut off for reading nothing of their answer
        for C{proxy.limits.sendTimeout} seconds (see L{countSendTimeout}).
    @ivar websockets: C{{name: L{WebSocketCounters}}} per API with
        C{websocket: true}.
    @ivar accessLog: the proxy's L{gateway.telemetry.accesslog.IAccessLog},
        whose counts the snapshot shows, or L{None}.
    @ivar http2: C{{what: count}} of HTTP/2 (see L{HTTP2_COUNTS} and
        L{countHTTP2}).
    """

    sendTimeouts = 0
    accessLog: Any = None

    #: The fleet's limits of this proxy (L{gateway.protection.redisbuckets.RedisBuckets},
    #: whose C{snapshot()} is under C{"limits"}), or L{None}.
    limits: Any = None

    #: The response cache of this proxy (L{gateway.cache.engine.ResponseCache}):
    #: each cached API's counts under its C{"cache"}, the memory store's
    #: figures under C{"cache"}; or L{None}.
    cache: Any = None

    def __init__(self, clock: Any) -> None:
        """
        @param clock: an L{IReactorTime}; latencies are measured with it
            against L{gateway.pipeline.exchange.Exchange.startTime}.
        """
        self._clock = clock
        self.totals = Counters()
        self.http2: Dict[str, int] = dict.fromkeys(HTTP2_COUNTS, 0)
        self.apis: Dict[str, Counters] = {}
        self.servers: Dict[str, Counters] = {}
        self.websockets: Dict[str, WebSocketCounters] = {}
        # The configured names, once known: entries are made for these
        # only.  None until the first prune (anything the proxy hands us
        # comes from its configuration anyway).
        self._apiNames: Optional[frozenset] = None
        self._serverNames: Optional[frozenset] = None
        self._tracing: Optional[Callable[[], Dict[str, int]]] = None

    def record(self, context: Any, code: int, outcome: Optional[str]) -> None:
        """
        Count one answer.  Called by the proxy exactly once per answer.

        @param context: the L{gateway.pipeline.exchange.Exchange}.
        @param code: the status sent.
        @param outcome: L{None} for an upstream answer, C{"reject:FILTER"}
            for a filter's early answer, or an upstream failure's kind.
        """
        latency = self._clock.seconds() - context.startTime
        if latency < 0.0:
            latency = 0.0
        bucket = bisect.bisect_left(BUCKETS_SECONDS, latency)
        compiled = context.api
        if compiled is None:
            # The gateway's own 404 (or 503 before any configuration).
            api = None
        else:
            name = compiled.name
            api = self.apis.get(name)
            if api is None:
                api = self._newEntry(self.apis, self._apiNames, name)
        backend = context.backend
        server = None
        if backend is not None:
            name = backend.name
            server = self.servers.get(name)
            if server is None:
                server = self._newEntry(self.servers, self._serverNames, name)
        if outcome is None and code < 400:
            # A success, the common case: Counters.add inlined.
            for counters in (self.totals, api, server):
                if counters is not None:
                    counters.requests += 1
                    counters.buckets[bucket] += 1
                    counters.latencySum += latency
            return
        kind, reason = classify(code, outcome)
        for counters in (self.totals, api, server):
            if counters is not None:
                counters.add(bucket, latency, kind, reason)

    def countSendTimeout(self) -> None:
        """
        Count a client cut off by the send timeout (the proxy's channel
        calls this, see L{gateway.http.site.LimitedSite.stats}).
        """
        self.sendTimeouts += 1

    def followTracing(self, counts: Callable[[], Dict[str, int]]) -> None:
        """
        Report the counters of tracing's export (C{tracing} in the
        L{snapshot}, see L{tracingCounts}).

        @param counts: gives them, see
            L{gateway.telemetry.tracing.export.ReactorSpanProcessor.counts}.
        """
        self._tracing = counts

    def tracingCounts(self) -> Optional[Dict[str, int]]:
        """
        @return: the counters of tracing's export (C{exported}, C{dropped},
            C{failed}, C{queued} spans), or L{None} when nothing is traced.
        """
        counts = self._tracing
        return counts() if counts is not None else None

    def countHTTP2(self, what: str) -> None:
        """
        Count one HTTP/2 event (the engine's HTTP/2 connections call this,
        see L{gateway.http.site.LimitedSite.stats}).

        @param what: one of L{HTTP2_COUNTS}.
        """
        self.http2[what] = self.http2.get(what, 0) + 1

    def recordUpstream(
        self, server: str, code: Optional[int], outcome: Optional[str], latency: float
    ) -> None:
        """
        Count one upstream call that is not a client's answer (an
        aggregation node's, a mirror copy's) for its server only.

        @param code: the status the server answered, or L{None} when it
            did not.
        @param outcome: L{None} when it answered as it should, else what
            went wrong, as L{record} takes it (C{timeout}, C{refused},
            C{broken}...).
        """
        counters = self.servers.get(server)
        if counters is None:
            counters = self._newEntry(self.servers, self._serverNames, server)
            if counters is None:
                return
        if latency < 0.0:
            latency = 0.0
        kind, reason = classify(code if code is not None else 502, outcome)
        counters.add(bisect.bisect_left(BUCKETS_SECONDS, latency), latency, kind, reason)

    @staticmethod
    def _newEntry(
        entries: Dict[str, Counters], allowed: Optional[frozenset], name: str
    ) -> Optional[Counters]:
        # A name that is no longer configured (a request that started on an
        # older snapshot) is not given an entry again.
        if allowed is not None and name not in allowed:
            return None
        counters = entries[name] = Counters()
        return counters

    # -- configuration ----------------------------------------------------------

    def prune(self, apiNames: Iterable[str], serverNames: Iterable[str]) -> None:
        """
        Keep entries for these names only, and make the missing ones (so
        that a configured API or server shows zeros rather than nothing).
        The totals are kept.
        """
        self._apiNames = frozenset(apiNames)
        self._serverNames = frozenset(serverNames)
        for entries, names in ((self.apis, self._apiNames), (self.servers, self._serverNames)):
            for name in list(entries):
                if name not in names:
                    del entries[name]
            for name in names:
                if name not in entries:
                    entries[name] = Counters()

    def snapshotChanged(self, snapshot: Any) -> None:
        """
        Prune to a new snapshot's APIs and servers: a
        L{gateway.routing.snapshot.SnapshotManager} listener.
        """
        self.prune(snapshot.apis, snapshot.backends)
        self.pruneWebSockets(name for name, api in snapshot.apis.items() if api.config.websocket)

    def pruneWebSockets(self, apiNames: Iterable[str]) -> None:
        """
        Keep WebSocket counters for these APIs only, and make the missing
        ones.  (Tunnels of an API dropped meanwhile count on in counters no
        longer shown.)
        """
        names = frozenset(apiNames)
        websockets = self.websockets
        for name in list(websockets):
            if name not in names:
                del websockets[name]
        for name in names:
            if name not in websockets:
                websockets[name] = WebSocketCounters()

    def websocketCounters(self, api: str) -> WebSocketCounters:
        """
        @return: the L{WebSocketCounters} of an API, made when missing
            (unless the API is not configured: then counters shown
            nowhere).
        """
        counters = self.websockets.get(api)
        if counters is None:
            counters = WebSocketCounters()
            if self._apiNames is None or api in self._apiNames:
                self.websockets[api] = counters
        return counters

    def follow(self, manager: Any) -> None:
        """
        Prune now and after every snapshot swap of C{manager}.

        @param manager: a L{gateway.routing.snapshot.SnapshotManager}.
        """
        if manager.snapshot is not None:
            self.snapshotChanged(manager.snapshot)
        manager.addListener(self.snapshotChanged)

    # -- reading ----------------------------------------------------------------

    def serverStates(self, manager: Any, health: Any) -> List[ServerState]:
        """
        @param manager: the L{gateway.routing.snapshot.SnapshotManager} whose
            backends this proxy sends to, or L{None}.
        @param health: the L{gateway.balancing.health.HealthChecker}, or
            L{None}.
        @return: the live state of each server, by name.
        """
        if manager is None:
            return []
        now = self._clock.seconds()
        backends = manager.backends
        states = []
        for name in sorted(backends):
            backend = backends[name]
            breaker = backend.breaker
            states.append(
                ServerState(
                    name,
                    backend.requests,
                    backend.failures,
                    backend.active,
                    backend.ewma,
                    bool(backend.healthy),
                    bool(backend.ejectedUntil and now < backend.ejectedUntil),
                    None if health is None else bool(health.status(name)["checked"]),
                    # snapshot() moves an open breaker to half-open when due.
                    None if breaker is None else breaker.snapshot()["state"],
                )
            )
        return states

    def apiBreakerStates(self, manager: Any) -> List[Tuple[str, str]]:
        """
        @return: C{(api, state)} of each API with a circuit breaker of its
            own, by name.
        """
        snapshot = manager.snapshot if manager is not None else None
        if snapshot is None:
            return []
        states = []
        for name in sorted(snapshot.apis):
            breaker = apiBreaker(snapshot.apis[name])
            if breaker is not None:
                states.append((name, breaker.snapshot()["state"]))
        return states

    def totalsJSON(self) -> Dict[str, Any]:
        """
        @return: the C{totals} of L{snapshot} alone (what costs nothing
            however many APIs there are).
        """
        totals = self.totals
        return {
            "requests": totals.requests,
            "errors": sum(totals.errors.values()),
            "rejects": sum(totals.rejects.values()),
            "latency": latencyJSON(totals.cumulativeBuckets(), totals.latencySum * 1000.0),
        }

    def snapshot(
        self, manager: Any = None, health: Any = None, apis: Optional[Iterable[str]] = None
    ) -> Dict[str, Any]:
        """
        @param manager: the L{gateway.routing.snapshot.SnapshotManager}, for the live
            state of servers (and the API breakers), or L{None}.
        @param health: the L{gateway.balancing.health.HealthChecker}, or L{None}.
        @param apis: the names of the APIs whose entries to give, when not
            all (a worker reports the APIs whose counters changed, see
            L{gateway.telemetry.report}).
        @return: the statistics as JSON: C{totals} C{{"requests", "errors",
            "rejects"}} (numbers, and the C{"latency"} of every answer),
            C{apis} C{{name: {"requests", "errors", "rejects", "latency",
            "breaker"?, "websocket"? (L{WebSocketCounters.toJSON}),
            "cache"?}}} (C{cache}: see
            L{gateway.cache.engine.ResponseCache.snapshot}), C{servers} C{{name:
            {"requests", "errors", "rejects", "latency", and with a manager
            "addr", "active", "latencyEWMA" (seconds, as the backend keeps
            it), "healthy", "ejected", "upstreamRequests",
            "upstreamFailures", "health", "breaker"}}},
            C{sendTimeouts} (see L{countSendTimeout}), C{http2} (see
            L{HTTP2_COUNTS}), C{accessLog}
            C{{"written", "dropped"}} (lines; zeros when it is off),
            C{revision} (of the snapshot, or L{None}) and C{at} (clock
            seconds), and when requests are traced C{tracing} (see
            L{tracingCounts}), and with a
            response cache C{cache} (its memory store: C{bytes}, C{limit},
            C{entries}, C{evictions}).  See L{latencyJSON} for C{latency}.
        """
        now = self._clock.seconds()
        current = manager.snapshot if manager is not None else None
        entries: Dict[str, Any] = {}
        cache = self.cache.snapshot() if self.cache is not None else None
        cached = cache["apis"] if cache is not None else {}
        for name in sorted(self.apis if apis is None else apis):
            counters = self.apis.get(name)
            if counters is None:
                continue
            entry = counters.toJSON()
            compiled = current.apis.get(name) if current is not None else None
            if compiled is not None:
                breaker = apiBreaker(compiled)
                if breaker is not None:
                    entry["breaker"] = breaker.snapshot()
            websocket = self.websockets.get(name)
            if websocket is not None:
                entry["websocket"] = websocket.toJSON()
            counts = cached.get(name)
            if counts is not None:
                entry["cache"] = counts
            entries[name] = entry
        backends: Mapping[str, Any] = manager.backends if manager is not None else {}
        servers: Dict[str, Any] = {}
        for name in sorted(set(self.servers) | set(backends)):
            counters = self.servers.get(name)
            entry = (counters or Counters()).toJSON()
            backend = backends.get(name)
            if backend is not None:
                entry.update(backendJSON(backend, now, health))
            servers[name] = entry
        result = {
            "totals": self.totalsJSON(),
            "apis": entries,
            "servers": servers,
            "sendTimeouts": self.sendTimeouts,
            "accessLog": accessLogJSON(self.accessLog),
            "http2": dict(self.http2),
            "revision": current.revision if current is not None else None,
            "at": now,
        }
        tracing = self.tracingCounts()
        if tracing is not None:
            result["tracing"] = tracing
        if self.limits is not None:
            result["limits"] = self.limits.snapshot()
        if cache is not None:
            result["cache"] = cache["memory"]
        return result


def accessLogJSON(accessLog: Any) -> Dict[str, int]:
    """
    @return: C{{"written", "dropped"}}: the lines an access log wrote and
        dropped so far (zeros for L{None}, no access log).
    """
    if accessLog is None:
        return {"written": 0, "dropped": 0}
    return {"written": accessLog.written, "dropped": accessLog.dropped}


def apiBreaker(compiled: Any) -> Any:
    """
    @return: the L{gateway.protection.breaker.CircuitBreaker} of a compiled API's own
        C{circuitBreaker}, or L{None}.
    """
    for f in compiled.filters:
        if getattr(f, "name", None) == "circuit-breaker" and hasattr(f, "breaker"):
            return f.breaker
    return None


def backendJSON(backend: Any, now: float, health: Any = None) -> Dict[str, Any]:
    """
    @return: the live state of a L{gateway.balancing.backend.Backend} for the
        stats; C{discovered} says how DNS discovery found it (when it did).
    """
    breaker = backend.breaker
    entry = {
        "addr": f"{backend.host}:{backend.port}",
        "active": backend.active,
        "latencyEWMA": backend.ewma,
        "healthy": backend.healthy,
        "ejected": bool(backend.ejectedUntil and now < backend.ejectedUntil),
        "upstreamRequests": backend.requests,
        "upstreamFailures": backend.failures,
        "health": health.status(backend.name) if health is not None else None,
        "breaker": breaker.snapshot() if breaker is not None else None,
    }
    origin = getattr(backend, "origin", None)
    if origin is not None:
        # Found by DNS discovery: how (the server or cluster, the name).
        entry["discovered"] = origin.toJSON()
    return entry


def _addCounts(into: Dict[str, Any], entry: Mapping[str, Any]) -> None:
    into["requests"] = into.get("requests", 0) + entry.get("requests", 0)
    for key in ("errors", "rejects"):
        mine = into.setdefault(key, {})
        for k, v in (entry.get(key) or {}).items():
            mine[k] = mine.get(k, 0) + v
    _addLatency(into.setdefault("latency", {}), entry.get("latency"))


def _addLatency(into: Dict[str, Any], latency: Optional[Mapping[str, Any]]) -> None:
    if not latency:
        return
    into["sumMs"] = into.get("sumMs", 0.0) + latency.get("sumMs", 0.0)
    counts = [n for _, n in latency.get("buckets", ())]
    mine = into.get("cumulative")
    if mine is None:
        into["cumulative"] = counts
    elif len(counts) == len(mine):
        into["cumulative"] = [a + b for a, b in zip(mine, counts)]


def _finishLatency(entry: Dict[str, Any]) -> None:
    latency = entry.pop("latency", None)
    cumulative = latency.get("cumulative") if latency else None
    if not cumulative:
        cumulative = [0] * (len(BUCKETS_MS) + 1)
    entry["latency"] = latencyJSON(cumulative, latency.get("sumMs", 0.0) if latency else 0.0)


def mergeSnapshots(snapshots: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """
    Sum the L{Stats.snapshot}s of several proxies.

    Counters and histograms are added up and the percentiles computed again
    from the summed buckets.  Of the live server state: C{active},
    C{upstreamRequests} and C{upstreamFailures} are summed, C{latencyEWMA}
    is the mean of those of the proxies that timed an answer of it (0:
    none), C{healthy} is whether every proxy finds the server healthy,
    C{ejected} whether any ejected it, C{breaker} is the breaker of the
    proxy whose breaker is in the worst state (open,
    then half-open; see L{_worseBreaker}), and C{health} is dropped
    (L{None}): each proxy's own is in its snapshot.  One of them may be
    the L{retiredCounts} of proxies that ended: their counters are added,
    and they have no live state.

    @return: a snapshot of the same shape; C{at} is the latest of theirs,
        C{revision} the highest, C{sendTimeouts}, C{http2} and C{accessLog}'s counts
        their sums, and so are the counters of C{tracing} (when any of them
        has it), the APIs'
        C{cache} counts (their C{hitRatio} computed again) and the memory
        store figures of C{cache} (each process has a store of its own:
        their bytes, limits, entries and evictions add up).
    """
    totals: Dict[str, Any] = {"requests": 0, "errors": 0, "rejects": 0}
    totalLatency: Dict[str, Any] = {}
    apis: Dict[str, Dict[str, Any]] = {}
    servers: Dict[str, Dict[str, Any]] = {}
    ewmas: Dict[str, List[float]] = {}
    at = None
    revision = None
    sendTimeouts = 0
    tracing: Optional[Dict[str, int]] = None
    accessLog = accessLogJSON(None)
    http2: Dict[str, int] = dict.fromkeys(HTTP2_COUNTS, 0)
    for snap in snapshots:
        sendTimeouts += snap.get("sendTimeouts") or 0
        for key, count in (snap.get("http2") or {}).items():
            http2[key] = http2.get(key, 0) + count
        if snap.get("tracing"):
            tracing = tracing if tracing is not None else {}
            for key, n in snap["tracing"].items():
                tracing[key] = tracing.get(key, 0) + n
        theirs = snap.get("accessLog") or {}
        for key in accessLog:
            accessLog[key] += theirs.get(key) or 0
        for key in totals:
            totals[key] += (snap.get("totals") or {}).get(key, 0)
        _addLatency(totalLatency, (snap.get("totals") or {}).get("latency"))
        if snap.get("at") is not None:
            at = snap["at"] if at is None else max(at, snap["at"])
        if snap.get("revision") is not None:
            revision = snap["revision"] if revision is None else max(revision, snap["revision"])
        for name, entry in (snap.get("apis") or {}).items():
            merged = apis.setdefault(name, {})
            _addCounts(merged, entry)
            if entry.get("cache"):
                mine = merged.setdefault("cache", {})
                for key, n in entry["cache"].items():
                    if key != "hitRatio":
                        mine[key] = mine.get(key, 0) + n
            breaker = entry.get("breaker")
            if breaker is not None:
                merged["breaker"] = _worseBreaker(merged.get("breaker"), breaker)
            websocket = entry.get("websocket")
            if websocket is not None:
                mine = merged.setdefault("websocket", dict.fromkeys(WebSocketCounters.FIELDS, 0))
                for key in WebSocketCounters.FIELDS:
                    mine[key] += websocket.get(key) or 0
        for name, entry in (snap.get("servers") or {}).items():
            merged = servers.setdefault(name, {})
            _addCounts(merged, entry)
            for key in ("upstreamRequests", "upstreamFailures"):
                if key in entry:
                    merged[key] = merged.get(key, 0) + entry[key]
            if "addr" not in entry:
                continue
            merged.setdefault("addr", entry["addr"])
            merged["active"] = merged.get("active", 0) + entry.get("active", 0)
            values = ewmas.setdefault(name, [])
            ewma = entry.get("latencyEWMA") or 0.0
            if ewma > 0.0:
                # 0.0 is a backend's "no answer timed yet" (a worker that
                # sent it nothing): no sample to average in.
                values.append(ewma)
            merged["healthy"] = merged.get("healthy", True) and bool(entry.get("healthy"))
            merged["ejected"] = merged.get("ejected", False) or bool(entry.get("ejected"))
            merged["health"] = None
            merged["breaker"] = _worseBreaker(merged.get("breaker"), entry.get("breaker"))
    for entries in (apis, servers):
        for entry in entries.values():
            _finishLatency(entry)
    for entry in apis.values():
        if "cache" in entry:
            withRatio(entry["cache"])
    totals["latency"] = totalLatency
    _finishLatency(totals)
    for name, values in ewmas.items():
        servers[name]["latencyEWMA"] = sum(values) / len(values) if values else 0.0
    merged = {
        "totals": totals,
        "apis": {name: apis[name] for name in sorted(apis)},
        "servers": {name: servers[name] for name in sorted(servers)},
        "sendTimeouts": sendTimeouts,
        "accessLog": accessLog,
        "http2": http2,
        "revision": revision,
        "at": at,
    }
    if tracing is not None:
        merged["tracing"] = tracing
    limits = [snap["limits"] for snap in snapshots if snap.get("limits")]
    live = [entry for entry in limits if "mode" in entry]
    if live:
        merged["limits"] = mergeLimits(live, [entry for entry in limits if "mode" not in entry])
    memories = [snap["cache"] for snap in snapshots if snap.get("cache")]
    if memories:
        merged["cache"] = {
            key: sum(m.get(key) or 0 for m in memories)
            for key in ("bytes", "limit", "entries", "evictions")
        }
    return merged


def mergeLimits(
    snapshots: Sequence[Mapping[str, Any]], retired: Sequence[Mapping[str, Any]] = ()
) -> Dict[str, Any]:
    """
    Sum the fleet's limits of several proxy processes (the C{"limits"} of
    their snapshots, see L{gateway.protection.redisbuckets.RedisBuckets.snapshot}).

    @param retired: the counters of processes that ended (see
        L{retiredCounts}): their C{switches}, C{calls}, C{timeouts} and
        C{errors} are added to the live ones'.
    @return: the same shape: C{modes} (processes in each mode),
        C{switches}, C{calls}, C{timeouts}, C{errors} and C{leases} summed;
        C{mode} the one mode of them all, or the fallback mode while any
        process is in it; C{redis} C{up} only when it is for every one;
        C{gateways} the largest count, C{since} the latest switch.
    """
    first = snapshots[0]
    modes: Dict[str, int] = {}
    switches: Dict[str, int] = {}
    for snap in snapshots:
        for mode, n in (snap.get("modes") or {}).items():
            modes[mode] = modes.get(mode, 0) + n
    everyone = list(snapshots) + list(retired)
    for snap in everyone:
        for mode, n in (snap.get("switches") or {}).items():
            switches[mode] = switches.get(mode, 0) + n
    away = [s["mode"] for s in snapshots if s.get("mode") != "shared"]
    return {
        "store": first.get("store"),
        "onFailure": first.get("onFailure"),
        "mode": away[0] if away else "shared",
        "modes": modes,
        "since": max(s.get("since") or 0 for s in snapshots),
        "gateways": max(s.get("gateways") or 1 for s in snapshots),
        "switches": switches,
        "redis": "up" if all(s.get("redis") == "up" for s in snapshots) else "down",
        "calls": sum(s.get("calls") or 0 for s in everyone),
        "timeouts": sum(s.get("timeouts") or 0 for s in everyone),
        "errors": sum(s.get("errors") or 0 for s in everyone),
        "leases": sum(s.get("leases") or 0 for s in snapshots),
    }


#: What L{retiredCounts} keeps of a server's entry: its counters.
_SERVER_COUNTERS = (
    "requests",
    "errors",
    "rejects",
    "latency",
    "upstreamRequests",
    "upstreamFailures",
)


#: What it keeps of an API's entry (its C{websocket} and C{cache} counters
#: apart).
_API_COUNTERS = ("requests", "errors", "rejects", "latency")


def retiredCounts(
    snapshot: Mapping[str, Any], apis: Any = None, servers: Any = None
) -> Dict[str, Any]:
    """
    The counters of a proxy process that ended (a worker that died and
    was started again), to be added to the live ones' for good: a counter
    of the gateway, summed over its workers, must never go down (Prometheus
    takes a counter that goes down for a reset, and C{rate()} then counts
    the whole of the counter again).

    @param snapshot: the process's last snapshot (L{Stats.snapshot}, or
        a L{mergeSnapshots} of several).
    @param apis: the names of the APIs to keep (those configured now), or
        L{None} for all; likewise C{servers}.
    @return: a snapshot for L{mergeSnapshots} holding only what goes up:
        requests, errors, rejects and latency histograms; of the servers,
        the requests sent and failed; of the APIs, the WebSocket tunnels
        opened (not those open: they closed with the process) and bytes, the
        cache's counts; C{sendTimeouts}, C{accessLog}, C{http2}, the
        tracing counters (not the queue), the cache's evictions (not its
        memory) and the fleet limits' C{switches}, C{calls}, C{timeouts},
        C{errors}.  Nothing live: no C{addr}, breaker, health, gauge,
        C{revision} nor C{at}.
    """
    kept: Dict[str, Any] = {
        "totals": snapshot.get("totals") or {},
        "sendTimeouts": snapshot.get("sendTimeouts") or 0,
        "accessLog": dict(snapshot.get("accessLog") or {}),
        "http2": dict(snapshot.get("http2") or {}),
    }
    entries: Dict[str, Any] = {}
    for name, entry in (snapshot.get("apis") or {}).items():
        if apis is not None and name not in apis:
            continue
        api = {key: entry[key] for key in _API_COUNTERS if key in entry}
        websocket = entry.get("websocket")
        if websocket is not None:
            api["websocket"] = dict(websocket, open=0)
        cache = entry.get("cache")
        if cache:
            api["cache"] = {k: n for k, n in cache.items() if k != "hitRatio"}
        entries[name] = api
    kept["apis"] = entries
    kept["servers"] = {
        name: {key: entry[key] for key in _SERVER_COUNTERS if key in entry}
        for name, entry in (snapshot.get("servers") or {}).items()
        if servers is None or name in servers
    }
    tracing = snapshot.get("tracing")
    if tracing:
        kept["tracing"] = {k: n for k, n in tracing.items() if k != "queued"}
    memory = snapshot.get("cache")
    if memory:
        kept["cache"] = {"evictions": memory.get("evictions") or 0}
    limits = snapshot.get("limits")
    if limits:
        kept["limits"] = {
            "switches": dict(limits.get("switches") or {}),
            "calls": limits.get("calls") or 0,
            "timeouts": limits.get("timeouts") or 0,
            "errors": limits.get("errors") or 0,
        }
    return kept


def _worseBreaker(
    current: Optional[Mapping[str, Any]], other: Optional[Mapping[str, Any]]
) -> Optional[Dict[str, Any]]:
    """
    @return: of two proxies' breakers of one server or API (each proxy's
        breaker sees its own traffic), the whole snapshot of the one in the
        worse state (open, then half-open; the first of equals): when it
        opened, the failure rate that opened it and its transitions, not
        the state alone (the web UI showed an open breaker "since -" with
        "no transition yet").
    """
    if other is None:
        return dict(current) if current is not None else None
    state = other.get("state", "closed")
    if current is None or _BREAKER_SEVERITY.get(state, 0) > _BREAKER_SEVERITY.get(
        current.get("state", "closed"), 0
    ):
        return dict(other)
    return dict(current)


class _SnapshotCounters:
    """
    The counters of one API or server read back from a snapshot's JSON.
    """

    def __init__(self, entry: Dict[str, Any]) -> None:
        self.requests = entry.get("requests", 0)
        self.errors: Dict[str, int] = defaultdict(int, entry.get("errors") or {})
        self.rejects: Dict[str, int] = defaultdict(int, entry.get("rejects") or {})
        latency = entry.get("latency") or {}
        self._buckets = [count for _, count in latency.get("buckets") or []]
        self.latencySum = (latency.get("sumMs") or 0.0) / 1000.0

    def cumulativeBuckets(self) -> List[int]:
        return self._buckets or [0] * len(BUCKETS_MS) + [0]


def _webSocketCounters(entry: Mapping[str, Any]) -> WebSocketCounters:
    counters = WebSocketCounters()
    for key in WebSocketCounters.FIELDS:
        setattr(counters, key, int(entry.get(key) or 0))
    return counters


class SnapshotStats:
    """
    A read-only L{Stats} look-alike over snapshots made elsewhere (the
    proxy workers'), so that the metrics collector serves their sum.

    @param source: a callable giving a (merged) snapshot.
    """

    def __init__(self, source: Callable[[], Dict[str, Any]], clock: Any) -> None:
        self._source = source
        self._clock = clock

    def frozen(self) -> SnapshotStats:
        """
        @return: these stats as they are now: one snapshot, read once (a
            scrape reads it for every family; merging the workers' reports
            again for each of them cost as many merges).
        """
        snapshot = self._source()
        return SnapshotStats(lambda: snapshot, self._clock)

    def serverStates(self, manager: Any, health: Any) -> List[ServerState]:
        """
        The live state of the servers as the snapshot has it: the workers'
        (requests sent and failed, in flight, ejected, the worst breaker
        state), the health checks' of the process that runs them (see
        L{gateway.process.status.GatewayStatus.stats}); not the
        C{manager}'s backends, which send nothing when workers do.

        @param manager: ignored (see L{Stats.serverStates}).
        @param health: the L{gateway.balancing.health.HealthChecker}, or
            L{None} (then C{checked} is L{None}).
        """
        states = []
        for name, entry in sorted((self._source().get("servers") or {}).items()):
            if "addr" not in entry:
                # Counters only (a server no worker reported live state of).
                continue
            checks = entry.get("health") or {}
            breaker = entry.get("breaker")
            states.append(
                ServerState(
                    name,
                    int(entry.get("upstreamRequests") or 0),
                    int(entry.get("upstreamFailures") or 0),
                    int(entry.get("active") or 0),
                    float(entry.get("latencyEWMA") or 0.0),
                    bool(entry.get("healthy")),
                    bool(entry.get("ejected")),
                    None if health is None else bool(checks.get("checked")),
                    None if breaker is None else breaker.get("state", "closed"),
                )
            )
        return states

    def apiBreakerStates(self, manager: Any) -> List[Tuple[str, str]]:
        """
        @return: C{(api, state)} of each API with a breaker of its own, as
            the snapshot has it (the worst of the workers').
        """
        return [
            (name, entry["breaker"].get("state", "closed"))
            for name, entry in sorted((self._source().get("apis") or {}).items())
            if entry.get("breaker") is not None
        ]

    @property
    def apis(self) -> Dict[str, _SnapshotCounters]:
        return {n: _SnapshotCounters(e) for n, e in self._source().get("apis", {}).items()}

    @property
    def servers(self) -> Dict[str, _SnapshotCounters]:
        return {n: _SnapshotCounters(e) for n, e in self._source().get("servers", {}).items()}

    @property
    def websockets(self) -> Dict[str, WebSocketCounters]:
        return {
            n: _webSocketCounters(e["websocket"])
            for n, e in self._source().get("apis", {}).items()
            if e.get("websocket") is not None
        }

    @property
    def sendTimeouts(self) -> int:
        return int(self._source().get("sendTimeouts") or 0)

    def tracingCounts(self) -> Optional[Dict[str, int]]:
        """
        @return: the workers' tracing counters, summed (see
            L{Stats.tracingCounts}), or L{None}.
        """
        tracing: Optional[Dict[str, int]] = self._source().get("tracing")
        return tracing

    @property
    def limits(self) -> Any:
        """
        The fleet's limits of the snapshot, as L{Stats.limits} has them
        (something with a C{snapshot()}), or L{None}.
        """
        limits = self._source().get("limits")
        return _Frozen(limits) if limits else None

    @property
    def accessLog(self) -> Any:
        counts = self._source().get("accessLog") or {}
        return _AccessLogCounts(int(counts.get("written") or 0), int(counts.get("dropped") or 0))

    @property
    def http2(self) -> Dict[str, int]:
        return dict(self._source().get("http2") or {})

    @property
    def cache(self) -> Any:
        """
        The response cache of the snapshot, as L{Stats.cache} has it
        (something with a C{snapshot()}), or L{None}.
        """
        source = self._source()
        apis = {
            name: entry["cache"]
            for name, entry in (source.get("apis") or {}).items()
            if entry.get("cache")
        }
        memory = source.get("cache")
        if memory is None and not apis:
            return None
        return _Frozen({"apis": apis, "memory": memory or {}})


class _Frozen:
    """
    A snapshot's part read back: its C{snapshot()} gives it.
    """

    def __init__(self, data: Dict[str, Any]) -> None:
        self._data = data

    def snapshot(self) -> Dict[str, Any]:
        return self._data


class _AccessLogCounts:
    """
    An access log's counts read back from a snapshot's JSON.
    """

    def __init__(self, written: int, dropped: int) -> None:
        self.written = written
        self.dropped = dropped
