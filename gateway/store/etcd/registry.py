"""
The proxy registry: which proxies of a cluster are alive.

With the etcd store each proxy process registers itself under
C{PREFIX/proxies/ADDR}, on a lease it keeps alive, and refreshes the record
every few seconds with whether it is ready and its statistics.  A proxy that
stops revokes its lease, so its record goes at once; one that dies stops
renewing, and its record goes when the lease expires (10 s).
C{GET /api/v1/proxies} on any admin lists the records there
(L{listProxies}).  The records live outside C{PREFIX/resources/}, so the
heartbeats neither wake the store's watches nor make its commits conflict
(see L{gateway.store.etcd.store}).

L{ProxyRegistry} is a L{Service}: making one does no I/O; it registers when
started and revokes its lease when stopped.  L{advertisedAddress} works out
the C{host:port} other machines reach a proxy at.
"""

from __future__ import annotations

import datetime
import json
import socket
from typing import Any, Callable, Dict, List, Optional

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from gateway.model.endpoints import splitEndpoint
from gateway.store import StoreError
from gateway.store.etcd.client import NOT_FOUND, EtcdClient, EtcdError

log = Logger()


def proxiesPrefix(prefix: str) -> str:
    """
    @return: the key prefix under which proxies register.
    """
    return prefix.rstrip("/") + "/proxies/"


def listProxies(client: EtcdClient, prefix: str) -> Deferred:
    """
    Read the live proxies' records.

    @param prefix: the store's prefix (e.g. C{/gateway}).
    @return: a Deferred firing with a list of the records (JSON objects:
        C{addr}, C{version}, C{startedAt}, C{ready}, C{stats}, ...), sorted
        by address.
    """

    def parse(result: Any) -> List[Dict[str, Any]]:
        kvs, _ = result
        records = []
        for kv in kvs:
            try:
                record = json.loads(kv.value.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                continue
            if isinstance(record, dict):
                records.append(record)
        return sorted(records, key=lambda r: str(r.get("addr", "")))

    return client.range(proxiesPrefix(prefix), prefix=True).addCallback(parse)


def advertisedAddress(listen: str, hostname: Optional[str] = None) -> str:
    """
    Work out the C{host:port} other machines reach a proxy at from its
    listen endpoint string.

    @param listen: e.g. C{tcp:8080:interface=127.0.0.1}.
    @param hostname: the name to use when the endpoint listens on every
        interface; by default this machine's host name.
    @return: C{host:port}, or C{hostname:description} for endpoints that
        are not TCP.
    """
    hostname = hostname or socket.gethostname()
    parts = splitEndpoint(listen)
    kind = parts[0].lower() if parts else ""
    if kind not in ("tcp", "tcp6", "ssl"):
        return f"{hostname}:{listen}"
    port, interface = "", ""
    for i, arg in enumerate(parts[1:]):
        key, eq, value = arg.partition("=")
        if not eq and i == 0:
            port = key
        elif key == "port":
            port = value
        elif key == "interface":
            interface = value
    if interface in ("", "0.0.0.0", "::"):
        interface = hostname
    if ":" in interface:
        interface = f"[{interface}]"
    return f"{interface}:{port}"


class ProxyRegistry(Service):
    """
    Keeps this proxy registered in etcd while the service runs.

    @ivar key: the etcd key of this proxy's record.
    @ivar lease: the lease the record lives on, or L{None} while there is
        none.
    @ivar registered: whether the last refresh reached etcd.
    """

    name = "proxy-registry"

    def __init__(
        self,
        client: EtcdClient,
        prefix: str,
        addr: str,
        version: str,
        reactor: Any,
        stats: Optional[Callable[[], Any]] = None,
        ready: Optional[Callable[[], bool]] = None,
        startedAt: Optional[str] = None,
        ttl: int = 10,
        refreshInterval: float = 3.0,
        extra: Optional[Callable[[], Dict[str, Any]]] = None,
    ) -> None:
        """
        @param client: the L{EtcdClient} (the store's).
        @param prefix: the store's prefix.
        @param addr: this proxy's address, C{host:port} (see
            L{advertisedAddress}).
        @param version: the gateway's version.
        @param reactor: the reactor (an L{IReactorTime}).
        @param stats: returns this proxy's statistics as a JSON object.
        @param ready: returns whether this proxy serves its first full
            configuration.
        @param startedAt: when the process started (ISO 8601); by default,
            now.
        @param ttl: the lease's TTL in seconds.
        @param refreshInterval: how often the lease is renewed and the
            record rewritten, in seconds; well under C{ttl}.
        @param extra: returns more fields for the record.
        """
        self._reactor = reactor
        self._client = client
        self._prefix = prefix
        self.addr = addr
        self.version = version
        self.key = proxiesPrefix(prefix) + addr
        self._stats = stats
        self._ready = ready
        self._extra = extra
        if startedAt is None:
            startedAt = datetime.datetime.fromtimestamp(
                reactor.seconds(), datetime.timezone.utc
            ).isoformat()
        self.startedAt = startedAt
        self._ttl = ttl
        self._refreshInterval = refreshInterval
        self.lease: Optional[int] = None
        self.registered = False
        self._loop: Optional[Deferred] = None
        self._wait: Optional[Deferred] = None
        self._again = False

    # -- the record -----------------------------------------------------------------

    def record(self) -> Dict[str, Any]:
        """
        @return: this proxy's record, as it is written to etcd.
        """
        record: Dict[str, Any] = {
            "addr": self.addr,
            "version": self.version,
            "startedAt": self.startedAt,
            "ready": bool(self._ready()) if self._ready is not None else True,
            "updatedAt": datetime.datetime.fromtimestamp(
                self._reactor.seconds(), datetime.timezone.utc
            ).isoformat(),
        }
        if self._stats is not None:
            try:
                record["stats"] = self._stats()
            except Exception:
                log.failure("could not gather this proxy's stats for the registry")
                record["stats"] = {}
        if self._extra is not None:
            record.update(self._extra())
        return record

    def _encode(self) -> bytes:
        try:
            text = json.dumps(self.record(), sort_keys=True)
        except (TypeError, ValueError):
            log.failure("this proxy's registry record is not JSON")
            record = self.record()
            record["stats"] = {}
            text = json.dumps(record, sort_keys=True, default=str)
        return text.encode("utf-8")

    # -- the loop ---------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._loop = Deferred.fromCoroutine(self._run())
        self._loop.addErrback(self._crashed)

    def _crashed(self, failure: Failure) -> None:
        if not failure.check(CancelledError):
            log.failure("the proxy registry stopped", failure)

    async def _run(self) -> None:
        attempt = 0
        while self.running:
            try:
                await self._refreshOnce()
            except CancelledError:
                raise
            except EtcdError as e:
                # The lease expired (a long outage): take a new one now.
                if e.code == NOT_FOUND and self.lease is not None:
                    log.info("the registry's lease expired; registering again")
                    self.lease = None
                    continue
                self.registered = False
                log.warn("could not register this proxy: {error}", error=str(e))
                await self._sleep(self._client.backoff(attempt))
                attempt += 1
                continue
            except StoreError:
                # Unreachable etcd: the client logs the outage once.
                self.registered = False
                await self._sleep(self._client.backoff(attempt))
                attempt += 1
                continue
            attempt = 0
            if self._again:
                self._again = False
                continue
            await self._sleep(self._refreshInterval)

    async def _refreshOnce(self) -> None:
        if self.lease is not None:
            ttl = await self._client.leaseKeepAlive(self.lease)
            if ttl <= 0:
                log.info("the registry's lease expired; registering again")
                self.lease = None
        if self.lease is None:
            self.lease, _ = await self._client.leaseGrant(self._ttl)
        await self._client.put(self.key, self._encode(), lease=self.lease)
        if not self.registered:
            log.info("registered this proxy as {key}", key=self.key)
        self.registered = True

    def _sleep(self, seconds: float) -> Deferred:
        self._wait = Deferred()
        call = self._reactor.callLater(seconds, self._wake)
        wait = self._wait

        def cancelled(result: Any) -> Any:
            if call.active():
                call.cancel()
            return result

        return wait.addBoth(cancelled)

    def _wake(self) -> None:
        wait, self._wait = self._wait, None
        if wait is not None and not wait.called:
            wait.callback(None)

    def refresh(self) -> None:
        """
        Rewrite the record now (e.g. once the proxy is ready) instead of at
        the next refresh.
        """
        if self._wait is None:
            # A write is under way (or about to be): write once more after
            # it, or what changed meanwhile waits for the next refresh.
            self._again = True
        self._wake()

    def stopService(self) -> Deferred:
        """
        Stop refreshing and revoke the lease, so that the record goes at
        once (waiting at most a second for etcd).
        """
        super().stopService()
        loop, self._loop = self._loop, None
        if loop is not None and not loop.called:
            loop.cancel()
        lease, self.lease = self.lease, None
        self.registered = False
        if lease is None:
            return succeed(None)
        d = self._client.leaseRevoke(lease)
        d.addTimeout(1.0, self._reactor)
        d.addErrback(lambda f: log.info("could not revoke the registry's lease: {f}", f=f.value))
        return d

    def listProxies(self) -> Deferred:
        """
        @return: see L{listProxies}.
        """
        return listProxies(self._client, self._prefix)
