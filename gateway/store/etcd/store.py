"""
L{EtcdStore}: the L{gateway.interfaces.IStore} in etcd v3, so that several
gateways share one configuration; selected by C{store:
etcd://HOST:PORT[,HOST:PORT...]/PREFIX} (L{etcdStoreFromURL}).

Its key layout under C{PREFIX} (C{/gateway} when the URL names none):

    PREFIX/resources/KIND/NAME   one resource, its JSON object as the value
                                 (KIND is servers, clusters, apis, routings)
    PREFIX/commit                put by every commit (value: a random
                                 token naming that commit)
    PREFIX/proxies/ADDR          a live proxy, under its lease
                                 (L{gateway.store.etcd.registry})

The store's revision is etcd's revision.  A commit is one transaction that
holds only when nothing under C{PREFIX/resources/} was modified after the
base revision I{and} the C{commit} key was not either.  The second compare
is what catches deletions (a deleted key has no revision left to compare),
so two admins racing can never leave an api pointing at a cluster the other
deleted: one of them gets L{ConflictError}, which the admin retries from a
fresh read.  Proxies live outside C{resources/}, so their heartbeats neither
wake the store's watchers nor make commits conflict.  A commit whose answer
was lost (a leader change, a member dying mid-request) is sent again as it
was: its compares let at most one copy apply, and the token on the commit
key tells whether the copy that applied was this commit's.

Known limit: the watch trusts etcd's revisions to grow.  An etcd restored
from a backup (revisions going back) needs the gateways restarted.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from gateway.interfaces import IStore
from gateway.store import KINDS, Change, ConflictError, StoreError, StoreState
from gateway.store.etcd.client import (
    DELETE,
    UNAVAILABLE,
    EtcdClient,
    EtcdError,
    EtcdIndeterminate,
    Event,
    KeyValue,
    TxnResult,
    compareModRevision,
    normaliseEndpoint,
    opDelete,
    opPut,
    opRange,
    prefixEnd,
)
from gateway.store.etcd.watch import EtcdWatch, startWatch

log = Logger()


def _normalisePrefix(prefix: str) -> str:
    prefix = prefix.strip().rstrip("/")
    if not prefix:
        return "/gateway"
    if not prefix.startswith("/"):
        prefix = "/" + prefix
    return prefix


def parseEtcdURL(url: str) -> Tuple[List[str], str]:
    """
    @param url: C{etcd://HOST:PORT[,HOST:PORT...][/PREFIX]}.
    @return: C{(endpoints, prefix)}; the prefix is C{/gateway} when the URL
        names none.
    @raise ValueError: when the URL is not of that form.
    """
    if not url.startswith("etcd://"):
        raise ValueError(f"{url!r} is not an etcd:// URL")
    hosts, slash, path = url[len("etcd://") :].partition("/")
    if not hosts:
        raise ValueError(f"{url!r} needs HOST:PORT, e.g. etcd://127.0.0.1:2379/gateway")
    endpoints = []
    for hostPort in hosts.split(","):
        try:
            endpoints.append(normaliseEndpoint(hostPort))
        except ValueError as e:
            raise ValueError(f"{url!r}: {e}")
    return endpoints, _normalisePrefix("/" + urllib.parse.unquote(path))


def etcdStoreFromURL(url: str, reactor: Any) -> EtcdStore:
    """
    Make the store C{store: etcd://...} names (without any I/O).

    @param url: C{etcd://HOST:PORT[,HOST:PORT...][/PREFIX]}.
    @param reactor: the reactor the store and its client run on.
    @return: an L{EtcdStore} with its own L{EtcdClient}.
    @raise ValueError: when the URL is not valid.
    """
    endpoints, prefix = parseEtcdURL(url)
    client = EtcdClient(endpoints, reactor=reactor)
    return EtcdStore(client, prefix, reactor=reactor, ownsClient=True)


def _dumpValue(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


@implementer(IStore)
class EtcdStore:
    """
    An L{IStore} in etcd, shared by every gateway process of a cluster.

    @ivar client: the L{EtcdClient}.
    @ivar prefix: the key prefix, e.g. C{/gateway}.
    @ivar state: the state the watch follows (L{None} before it first read).
    """

    #: How long a commit waits for this store's own watch to see it, so that
    #: a process that commits serves the change as it answers.
    commitVisibleTimeout = 2.0

    #: How long a commit keeps trying while etcd cannot confirm it (a leader
    #: change), in seconds.
    commitTimeout = 12.0

    def __init__(
        self,
        client: EtcdClient,
        prefix: str,
        reactor: Any,
        ownsClient: bool = False,
    ) -> None:
        """
        @param client: the L{EtcdClient} to use; its back-off policy paces
            the retries of commits etcd could not confirm.
        @param prefix: where the gateway's keys live.
        @param reactor: the reactor (an L{IReactorTime}).
        @param ownsClient: whether L{close} closes C{client} too.
        """
        self._reactor = reactor
        self.client = client
        self.prefix = _normalisePrefix(prefix)
        self._resources = (self.prefix + "/resources/").encode("utf-8")
        self._commitKey = (self.prefix + "/commit").encode("utf-8")
        self._ownsClient = ownsClient
        self._listeners: List[Callable[[StoreState], Any]] = []
        self.state: Optional[StoreState] = None
        self._everLoaded = False
        self._watch: Optional[EtcdWatch] = None
        self._following: Optional[Deferred] = None
        self._waiters: List[Tuple[int, Deferred]] = []
        self._closed = False

    def __repr__(self) -> str:
        return f"<EtcdStore {','.join(self.client.endpoints)} {self.prefix}>"

    # -- keys -------------------------------------------------------------------------

    def keyOf(self, kind: str, name: str) -> bytes:
        """
        @return: the etcd key of one resource.
        """
        return self._resources + f"{kind}/{name}".encode()

    def _parseKey(self, key: bytes) -> Optional[Tuple[str, str]]:
        if not key.startswith(self._resources):
            return None
        kind, slash, name = key[len(self._resources) :].decode("utf-8", "replace").partition("/")
        if kind not in KINDS or not slash or not name:
            return None
        return kind, name

    def _parseValue(self, kv: KeyValue) -> Optional[Dict[str, Any]]:
        try:
            value = json.loads(kv.value.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            value = None
        if not isinstance(value, dict):
            log.error(
                "etcd key {key} does not hold a JSON object; ignored",
                key=kv.key.decode("utf-8", "replace"),
            )
            return None
        return value

    def _stateOf(self, kvs: Iterable[KeyValue], revision: int) -> StoreState:
        resources: Dict[str, Dict[str, Any]] = {kind: {} for kind in KINDS}
        for kv in kvs:
            where = self._parseKey(kv.key)
            if where is None:
                continue
            value = self._parseValue(kv)
            if value is not None:
                resources[where[0]][where[1]] = value
        return StoreState(revision, resources)

    # -- IStore ------------------------------------------------------------------------

    def load(self) -> Deferred:
        """
        Read every resource.

        Until the store has read etcd once, this retries (with back-off)
        until etcd answers, so a gateway started before etcd waits for it;
        afterwards a failure fails at once with L{StoreError}, so an admin
        request answers 503 instead of hanging through an outage.

        @return: a Deferred firing with the L{StoreState}.
        """
        if self._closed:
            return fail(StoreError("the store is closed"))

        def read() -> Deferred:
            return self.client.range(self._resources, prefix=True)

        d = read() if self._everLoaded else self.client.retrying(read, "loading the store")
        return d.addCallback(self._loaded)

    def _loaded(self, result: Tuple[List[KeyValue], int]) -> StoreState:
        kvs, revision = result
        self._everLoaded = True
        state = self._stateOf(kvs, revision)
        # The watch may already have delivered a later state; never answer
        # with an older one than a listener has seen.
        if self.state is not None and self.state.revision > state.revision:
            return self.state
        return state

    def commit(self, changes: Sequence[Change], baseRevision: int) -> Deferred:
        """
        Apply C{changes} in one etcd transaction, if nothing under the
        resources changed since C{baseRevision}.

        @return: a Deferred firing with the new revision; it fails with
            L{ConflictError} when the store changed since C{baseRevision}, and
            with L{StoreError} when etcd could not be reached.
        """
        return Deferred.fromCoroutine(self._commit(list(changes), baseRevision))

    async def _commit(self, changes: List[Change], baseRevision: int) -> int:
        if self._closed:
            raise StoreError("the store is closed")
        # The commit key gets a token of this commit: a transaction whose
        # answer was lost can be sent again (the compares let at most one
        # copy apply), and the token then tells whether it was ours.
        token = os.urandom(16).hex().encode("ascii")
        operations = [opPut(self._commitKey, token)]
        for change in changes:
            key = self.keyOf(change.kind, change.name)
            if change.value is None:
                operations.append(opDelete(key))
            else:
                operations.append(opPut(key, _dumpValue(change.value)))
        compare = [
            compareModRevision(self._commitKey, "LESS", baseRevision + 1),
            compareModRevision(
                self._resources, "LESS", baseRevision + 1, rangeEnd=prefixEnd(self._resources)
            ),
        ]
        result = await self._txnSurvivingLeaderChanges(
            compare, operations, [opRange(self._commitKey)]
        )
        if result.succeeded:
            revision = result.revision
        else:
            kvs = (result.responses[0].get("response_range") or {}).get("kvs") or ()
            marker = KeyValue.fromJSON(kvs[0]) if kvs else None
            if marker is None or marker.value != token:
                raise ConflictError(f"the store changed since revision {baseRevision}")
            # An earlier copy of this very commit applied.
            revision = marker.modRevision
        await self._visible(revision)
        return revision

    async def _txnSurvivingLeaderChanges(
        self,
        compare: List[Dict[str, Any]],
        success: List[Dict[str, Any]],
        failure: List[Dict[str, Any]],
    ) -> TxnResult:
        # A write in flight when the etcd leader dies or changes is lost or
        # times out; the cluster elects another within a second or so.  Try
        # again for a while, but not when no member answers at all.
        deadline = self._reactor.seconds() + self.commitTimeout
        attempt = 0
        while True:
            try:
                return await self.client.txn(compare, success, failure)
            except EtcdIndeterminate as e:
                problem: StoreError = e
            except EtcdError as e:
                if e.code != UNAVAILABLE:
                    raise
                problem = e
            delay = self.client.backoff(attempt)
            attempt += 1
            if self._reactor.seconds() + delay > deadline:
                raise StoreError(f"etcd did not confirm the commit: {problem}")
            log.info("commit not confirmed ({problem}); trying again", problem=str(problem))
            await deferLater(self._reactor, delay, lambda: None)

    def _visible(self, revision: int) -> Deferred:
        # Wait (a little) until the watch has delivered the revision, so a
        # process that committed serves its own change as it answers.
        if self._watch is None or (self.state is not None and self.state.revision >= revision):
            return succeed(None)
        waiter: Deferred = Deferred()
        self._waiters.append((revision, waiter))
        waiter.addTimeout(self.commitVisibleTimeout, self._reactor)
        return waiter.addErrback(lambda _: None)

    def _release(self, revision: int) -> None:
        ready = [w for w in self._waiters if w[0] <= revision]
        self._waiters = [w for w in self._waiters if w[0] > revision]
        for _, waiter in ready:
            if not waiter.called:
                waiter.callback(None)

    def watch(self, listener: Callable[[StoreState], Any]) -> Callable[[], None]:
        """
        Call C{listener} with the whole new state: first once the watch has
        read etcd (and again after it had to read everything anew), then
        after each batch of changes, from any process.  While etcd cannot be
        reached nothing is called; the changes made meanwhile arrive when it
        answers again.

        @return: a callable that stops the watch.
        """
        self._listeners.append(listener)
        if self._following is None and not self._closed:
            self._following = Deferred.fromCoroutine(self._follow())
            self._following.addErrback(self._followFailed)
        elif self.state is not None:
            self._notifyOne(listener, self.state)

        def stop() -> None:
            try:
                self._listeners.remove(listener)
            except ValueError:
                pass

        return stop

    def _followFailed(self, failure: Failure) -> None:
        if not failure.check(CancelledError):
            log.failure("the etcd store stopped following etcd", failure)

    async def _follow(self) -> None:
        kvs, revision = await self.client.retrying(
            lambda: self.client.range(self._resources, prefix=True), "reading the store"
        )
        self._everLoaded = True
        if self._closed:
            return
        self._setState(self._stateOf(kvs, revision))
        self._watch = startWatch(
            self.client,
            self._resources,
            self._onEvents,
            prefix=True,
            startRevision=revision + 1,
            onResync=self._onResync,
        )

    def _onResync(self, kvs: List[KeyValue], revision: int) -> None:
        self._setState(self._stateOf(kvs, revision))

    def _onEvents(self, events: List[Event], revision: int) -> None:
        if self.state is None:
            return
        changes = []
        for event in events:
            where = self._parseKey(event.kv.key)
            if where is None:
                continue
            if event.type == DELETE:
                changes.append(Change(where[0], where[1], None))
            else:
                value = self._parseValue(event.kv)
                changes.append(Change(where[0], where[1], value))
        self._setState(self.state.withChanges(changes, revision))

    def _setState(self, state: StoreState) -> None:
        if self.state is not None and state.revision < self.state.revision:
            return
        self.state = state
        for listener in list(self._listeners):
            self._notifyOne(listener, state)
        self._release(state.revision)

    def _notifyOne(self, listener: Callable[[StoreState], Any], state: StoreState) -> None:
        try:
            listener(state)
        except Exception:
            log.failure(
                "store watcher {listener!r} failed at revision {revision}",
                listener=listener,
                revision=state.revision,
            )

    def close(self) -> Deferred:
        """
        Stop the watch (and the client, when the store made it).

        @return: a Deferred firing when everything is closed.
        """
        self._closed = True
        del self._listeners[:]
        following, self._following = self._following, None
        if following is not None and not following.called:
            following.cancel()
        watch, self._watch = self._watch, None
        d = watch.stop() if watch is not None else succeed(None)
        self._release(2**63)
        if self._ownsClient:
            d.addCallback(lambda _: self.client.close())
        return d
