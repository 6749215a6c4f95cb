"""
L{EtcdStore}: the L{gateway.interfaces.IStore} in etcd v3, so that several
gateways share one configuration; selected by C{store:
etcd://HOST:PORT[,HOST:PORT...]/PREFIX} (L{etcdStoreFromURL}).

Key layout under C{PREFIX} (C{/gateway} when the URL names none)::

    PREFIX/resources/KIND/NAME        one resource, its JSON object as the
                                      value (KIND: servers, clusters, apis,
                                      routings)
    PREFIX/resources/.undo/TOKEN/N    undo record of chunk N of the
                                      unfinished large commit TOKEN (see
                                      L{gateway.store.etcd.undo})
    PREFIX/commit                     put by every commit: a random token
                                      naming the last one
    PREFIX/writer                     TOKEN of the large commit being
                                      written, under its writer's lease
    PREFIX/proxies/ADDR               a live proxy, under its lease
                                      (L{gateway.store.etcd.registry})

Revisions.  The store's revision is etcd's.  A state read at revision R is
what the commits up to R made (L{load} reads every key under
C{resources/} once and puts the undo records back over the keys they
cover); the watch delivers a state at the revision of each commit.

Commits.  A commit that fits one transaction (at most L{maxTxnOps}
operations and L{maxTxnBytes} bytes: under etcd's default C{--max-txn-ops}
128 and C{--max-request-bytes} 1.5 MiB) is one transaction that holds only
when, since the base revision, nothing under C{resources/} was modified,
the C{commit} key was not either, and no undo record exists.  The
C{commit} compare is what catches deletions (a deleted key has no revision
left to compare), so two admins racing can never leave an api pointing at
a cluster the other deleted: one of them gets L{ConflictError}, which the
admin retries from a fresh read.  A larger commit (a seed of hundreds of
resources, thousands of APIs) goes in chunks: it claims C{writer} under a
lease (the same compares, plus no C{writer}), reads the values its keys
have, then writes chunk after chunk, each guarded by its claim, by the
C{commit} key and by nothing under C{resources/} having changed since its
previous chunk; every chunk but the last carries the undo record of its
keys, and the last deletes the records and C{writer} and puts C{commit}.
No per-resource round trip: 600 resources are 5 chunks, 10,000 about 80.
A commit etcd refuses for its size (lower limits than the defaults) is
cut smaller and tried again, and the store keeps the smaller limits.

A commit that fails half-way (a racing commit, etcd gone, the process
killed) is never visible: readers put the undo records back.  Its writer
rolls it back at once when it can; otherwise the next commit, from any
gateway, finds the records with no live C{writer} (its lease expired),
rolls them back itself (claiming C{writer} as a large commit does), and
goes on from there.  The roll-back needs only the records, not etcd's
history, so compaction cannot defeat it.  A commit that finds a large
commit still being written fails with L{ConflictError} (the admin answers
409: try again).

A transaction whose answer was lost (a leader change, a member dying
mid-request) is sent again as it was: its compares let at most one copy
apply, and what its failure branch reads (the C{commit} token, the claim,
the chunk's undo record) tells whether the copy that applied was this
one.  Proxies live outside C{resources/}, so their heartbeats neither wake
the store's watchers nor make commits conflict.

Known limits:
  - a resource may weigh at most a third of L{maxTxnBytes} (about 340 KiB
    of JSON): it must fit one chunk with an undo record;
  - a large commit reads every resource once (the values it replaces),
    and holds other commits off while it is written (a few seconds for
    10,000 resources);
  - gateways older than this layout ignore undo records: while they share
    the store, large commits are not atomic for them;
  - keys edited by hand under C{resources/} (etcdctl) are seen at once,
    like commits, except while a large commit is unfinished, and a
    roll-back restores the keys that commit touched;
  - the watch trusts etcd's revisions to grow: an etcd restored from a
    backup (revisions going back) needs the gateways restarted.
"""

from __future__ import annotations

import itertools
import json
import os
import urllib.parse
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from gateway.interfaces import ISharedStore, IStore
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
    compareValue,
    compareVersion,
    normaliseEndpoint,
    opDelete,
    opPut,
    opRange,
    prefixEnd,
)
from gateway.store.etcd.registry import ProxyRegistry, listProxies
from gateway.store.etcd.undo import (
    CommittedView,
    Write,
    encodeUndo,
    takeChunk,
    undoEntry,
    writeBytes,
)
from gateway.store.etcd.watch import EtcdWatch, startWatch

log = Logger()

#: Where the undo records live, under C{PREFIX/resources/}.
UNDO = b".undo/"


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


def _newToken() -> bytes:
    return os.urandom(16).hex().encode("ascii")


class _Leftovers(Exception):
    """
    A commit found the undo records of a large commit whose writer is gone.
    """


@implementer(IStore, ISharedStore)
class EtcdStore:
    """
    An L{IStore} in etcd, shared by every gateway process of a cluster.

    Making one does no I/O: the first L{load} or L{watch} reads etcd.

    @ivar client: the L{EtcdClient}.
    @ivar prefix: the key prefix, e.g. C{/gateway}.
    @ivar state: the state the watch follows (L{None} before it first read).
    @ivar maxTxnOps: the most operations this store puts in one transaction
        (lowered when etcd refuses as many).
    @ivar maxTxnBytes: the most bytes of keys and values it puts in one
        transaction (lowered when etcd refuses as many).
    """

    #: How long a commit waits for this store's own watch to see it, so that
    #: a process that commits serves the change as it answers.
    commitVisibleTimeout = 2.0

    #: How long one transaction of a commit keeps trying while etcd cannot
    #: confirm it (a leader change), in seconds.
    commitTimeout = 12.0

    #: The TTL of a large commit's claim, in seconds: renewed while the
    #: commit is written; a writer silent for longer loses it, and its
    #: chunks are rolled back.
    writerTTL = 15

    maxTxnOps = 128
    maxTxnBytes = 1024 * 1024

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
        self._undo = self._resources + UNDO
        self._commitKey = (self.prefix + "/commit").encode("utf-8")
        self._writerKey = (self.prefix + "/writer").encode("utf-8")
        self._ownsClient = ownsClient
        self._listeners: List[Callable[[StoreState], Any]] = []
        self.state: Optional[StoreState] = None
        # What the watch saw of an unfinished large commit: its keys' new
        # values, and its undo records.
        self._uncommitted: Dict[Tuple[str, str], Optional[Dict[str, Any]]] = {}
        self._undoKeys: Set[bytes] = set()
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

    def _parseValue(self, key: bytes, value: bytes) -> Optional[Dict[str, Any]]:
        try:
            parsed = json.loads(value.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            parsed = None
        if not isinstance(parsed, dict):
            log.error(
                "etcd key {key} does not hold a JSON object; ignored",
                key=key.decode("utf-8", "replace"),
            )
            return None
        return parsed

    def _view(self, kvs: List[KeyValue]) -> CommittedView:
        try:
            return CommittedView.of(kvs, self._resources, UNDO)
        except ValueError as e:
            raise StoreError(f"etcd holds an unreadable {e}")

    def _resourcesOf(self, values: Dict[bytes, bytes]) -> Dict[str, Dict[str, Any]]:
        resources: Dict[str, Dict[str, Any]] = {kind: {} for kind in KINDS}
        for relative, value in values.items():
            key = self._resources + relative
            where = self._parseKey(key)
            if where is None:
                continue
            parsed = self._parseValue(key, value)
            if parsed is not None:
                resources[where[0]][where[1]] = parsed
        return resources

    def _stateOf(self, kvs: List[KeyValue], revision: int) -> StoreState:
        return StoreState(revision, self._resourcesOf(self._view(kvs).values))

    # -- reading -----------------------------------------------------------------------

    def load(self) -> Deferred:
        """
        Read every resource, as the commits up to now made them (never a
        part of an unfinished large commit).  While the store follows etcd
        (L{watch}), the state it follows is answered when etcd says that
        nothing changed since (one small transaction).

        Until the store has read etcd once, this retries (with back-off)
        until etcd answers, so a gateway started before etcd waits for it;
        afterwards a failure fails at once with L{StoreError}, so an admin
        request answers 503 instead of hanging through an outage.

        @return: a Deferred firing with the L{StoreState}.
        """
        if self._closed:
            return fail(StoreError("the store is closed"))
        if self.state is not None and self._watch is not None and not self._undoKeys:
            return Deferred.fromCoroutine(self._loadFollowed(self.state))
        return self._readAll()

    def _readAll(self) -> Deferred:
        def read() -> Deferred:
            return self.client.range(self._resources, prefix=True)

        d = read() if self._everLoaded else self.client.retrying(read, "loading the store")
        return d.addCallback(self._loaded)

    async def _loadFollowed(self, state: StoreState) -> StoreState:
        # The state the watch follows is the store's when nothing was
        # committed or written under the resources since: one small
        # transaction asks, instead of reading every resource again (10,000
        # APIs are megabytes to read and decode).  The state it gives keeps
        # the JSON objects its readers know by identity.
        guards = self._guards(state.revision, state.revision) + [
            compareVersion(self._undo, "EQUAL", 0, rangeEnd=prefixEnd(self._undo))
        ]
        result = await self.client.txn(guards, [], [])
        if result.succeeded:
            return self.state if self.state is not None else state
        return await self._readAll()

    def _loaded(self, result: Tuple[List[KeyValue], int]) -> StoreState:
        kvs, revision = result
        self._everLoaded = True
        state = self._stateOf(kvs, revision)
        # The watch may already have delivered a later state; never answer
        # with an older one than a listener has seen.
        if self.state is not None and self.state.revision > state.revision:
            return self.state
        return state

    # -- committing --------------------------------------------------------------------

    def commit(self, changes: Sequence[Change], baseRevision: int) -> Deferred:
        """
        Apply C{changes}, all or none, if no commit happened since
        C{baseRevision}: in one etcd transaction when they fit, in several
        otherwise (see the module's docstring), readers seeing them all at
        once either way.

        @return: a Deferred firing with the new revision; it fails with
            L{ConflictError} when the store changed since C{baseRevision}
            (or a large commit from elsewhere is being written), and with
            L{StoreError} when etcd could not be reached or refused the
            changes (e.g. a resource too large for it).
        """
        return Deferred.fromCoroutine(self._commit(list(changes), baseRevision))

    @property
    def maxResourceBytes(self) -> int:
        """
        The most bytes of JSON one resource may weigh: a third of
        L{maxTxnBytes}, so that it fits one chunk with the undo record of
        a value as large (JSON-escaped in the record).
        """
        return self.maxTxnBytes // 3 - 1024

    def _writesOf(self, changes: List[Change]) -> List[Write]:
        # One write per key, the last change to it winning (etcd refuses a
        # transaction that names a key twice).
        byKey: Dict[bytes, Optional[bytes]] = {}
        for change in changes:
            relative = f"{change.kind}/{change.name}".encode()
            value = None if change.value is None else _dumpValue(change.value)
            if value is not None and len(value) > self.maxResourceBytes:
                raise StoreError(
                    f"{change.kind}/{change.name}: {len(value)} bytes of JSON, more than the "
                    f"{self.maxResourceBytes} bytes the etcd store takes for one resource"
                )
            byKey.pop(relative, None)
            byKey[relative] = value
        return list(byKey.items())

    async def _commit(self, changes: List[Change], baseRevision: int) -> int:
        if self._closed:
            raise StoreError("the store is closed")
        writes = self._writesOf(changes)
        base = baseRevision
        # A commit rolls back at most one abandoned large commit (there is
        # never more than one) before it goes on from the rolled-back
        # state; a second set of leftovers is someone else's race.
        for attempt in range(2):
            try:
                if self._fitsOne(writes, extra=1):
                    try:
                        revision = await self._commitOnce(writes, base)
                    except EtcdError as e:
                        if not e.tooLarge:
                            raise
                        self._shrink(e, len(writes) + 1, writes)
                        revision = await self._commitInChunks(writes, base)
                else:
                    revision = await self._commitInChunks(writes, base)
            except _Leftovers:
                if attempt:
                    raise ConflictError("another commit's leftovers appeared; try again")
                base = await self._rollBackAbandoned(base)
                continue
            except EtcdError as e:
                if not e.tooLarge:
                    raise
                # Even the smallest transactions are too large for it.
                raise StoreError(
                    f"etcd refused a transaction as too large ({e.message}): its "
                    f"--max-txn-ops or --max-request-bytes is too low for the gateway "
                    f"(8 operations and 128 KiB at least)"
                )
            await self._visible(revision)
            return revision
        raise AssertionError("not reached")

    def _fitsOne(self, writes: Sequence[Write], extra: int) -> bool:
        if len(writes) + extra > self.maxTxnOps:
            return False
        return sum(writeBytes(w) for w in writes) <= self.maxTxnBytes

    def _shrink(self, error: EtcdError, operations: int, writes: Sequence[Write]) -> None:
        # etcd refused a transaction for its size: its limits are lower
        # than ours.  Halve the one it names, down to what still makes
        # progress.
        size = sum(writeBytes(w) for w in writes)
        if "too many operations" in error.message.lower():
            lowered = min(self.maxTxnOps, operations) // 2
            if lowered < 8:
                raise StoreError(
                    f"etcd refused a transaction of {operations} operations ({error.message}): "
                    f"its --max-txn-ops is too low for the gateway (8 at least)"
                )
            self.maxTxnOps = lowered
        else:
            lowered = min(self.maxTxnBytes, size) // 2
            if lowered < 64 * 1024:
                raise StoreError(
                    f"etcd refused a transaction of {size} bytes ({error.message}): its "
                    f"--max-request-bytes is too low for the gateway (128 KiB at least)"
                )
            self.maxTxnBytes = lowered
        log.warn(
            "etcd refused a transaction as too large ({message}); the store now writes at "
            "most {ops} operations and {size} bytes per transaction",
            message=error.message,
            ops=self.maxTxnOps,
            size=self.maxTxnBytes,
        )

    def _probes(self) -> List[Dict[str, Any]]:
        # What a failed transaction reads to say why it failed.
        return [
            opRange(self._commitKey),
            opRange(self._writerKey),
            opRange(self._undo, prefix=True, keysOnly=True),
        ]

    def _why(self, result: TxnResult, base: int) -> Exception:
        commit, writer, undo = result.rangeAt(0), result.rangeAt(1), result.rangeAt(2)
        if commit and commit[0].modRevision > base:
            return ConflictError(f"the store changed since revision {base}")
        if undo and writer:
            return ConflictError(
                "another gateway is writing a large commit; try again once it is done"
            )
        if undo:
            return _Leftovers()
        if writer:
            return ConflictError("another gateway is starting a large commit; try again")
        return ConflictError(f"the store changed since revision {base}")

    def _guards(self, base: int, since: int) -> List[Dict[str, Any]]:
        # Nothing committed since the base, nothing under the resources
        # modified since C{since}.
        return [
            compareModRevision(self._commitKey, "LESS", base + 1),
            compareModRevision(
                self._resources, "LESS", since + 1, rangeEnd=prefixEnd(self._resources)
            ),
        ]

    def _writeOps(self, writes: Sequence[Write]) -> List[Dict[str, Any]]:
        return [
            opDelete(self._resources + key)
            if value is None
            else opPut(self._resources + key, value)
            for key, value in writes
        ]

    async def _commitOnce(self, writes: List[Write], base: int) -> int:
        # The commit key gets a token of this commit: a transaction whose
        # answer was lost can be sent again (the compares let at most one
        # copy apply), and the token then tells whether it was ours.
        token = _newToken()
        compare = self._guards(base, base) + [
            compareVersion(self._undo, "EQUAL", 0, rangeEnd=prefixEnd(self._undo))
        ]
        result = await self._runTxn(
            compare, [opPut(self._commitKey, token)] + self._writeOps(writes), self._probes()
        )
        if result.succeeded:
            return result.revision
        commit = result.rangeAt(0)
        if commit and commit[0].value == token:
            # An earlier copy of this very commit applied.
            return commit[0].modRevision
        raise self._why(result, base)

    async def _claim(self, token: bytes, lease: int, base: int, abandoned: bool) -> TxnResult:
        """
        Take C{writer} for a large commit (C{abandoned} false: no undo
        record may exist) or for rolling an abandoned one back (true: one
        must), and read what the writer needs: the resources, or the
        records.
        """
        compare = [compareVersion(self._writerKey, "EQUAL", 0)]
        undoRange = prefixEnd(self._undo)
        if abandoned:
            compare.append(compareVersion(self._undo, "GREATER", 0, rangeEnd=undoRange))
            compare.append(compareModRevision(self._commitKey, "LESS", base + 1))
            read = opRange(self._undo, prefix=True)
        else:
            compare += self._guards(base, base)
            compare.append(compareVersion(self._undo, "EQUAL", 0, rangeEnd=undoRange))
            read = opRange(self._resources, prefix=True)
        result = await self._runTxn(
            compare, [opPut(self._writerKey, token, lease), read], self._probes()
        )
        if result.succeeded:
            return result
        writer = result.rangeAt(1)
        if writer and writer[0].value == token:
            # An earlier copy claimed it; read again, still holding it.
            again = await self.client.txn([compareValue(self._writerKey, "EQUAL", token)], [read])
            if again.succeeded:
                return TxnResult(True, [{}, again.responses[0]], writer[0].modRevision)
        raise self._why(result, base)

    async def _commitInChunks(self, writes: List[Write], base: int) -> int:
        token = _newToken()
        lease, _ = await self.client.leaseGrant(self.writerTTL)
        renewed = self._reactor.seconds()
        wrote = False
        try:
            claimed = await self._claim(token, lease, base, abandoned=False)
            before = {kv.key[len(self._resources) :]: kv.value for kv in claimed.rangeAt(1)}
            entries = [undoEntry(key, before.get(key)) for key, _ in writes]
            since = claimed.revision
            chunk = 0
            done = 0
            # From the first chunk on, a failure may leave chunks to roll
            # back (even one whose answer was lost may have applied).
            wrote = True
            while True:
                if self._reactor.seconds() - renewed > self.writerTTL / 3:
                    if await self.client.leaseKeepAlive(lease) <= 0:
                        raise ConflictError("the large commit's claim expired; try again")
                    renewed = self._reactor.seconds()
                rest = writes[done:]
                compare = [compareValue(self._writerKey, "EQUAL", token)] + self._guards(
                    base, since
                )
                last = takeChunk(rest, None, self.maxTxnOps - 3, self.maxTxnBytes) == len(rest)
                if last:
                    taken = len(rest)
                    ops = self._writeOps(rest) + [
                        opDelete(self._undo + token + b"/", prefix=True),
                        opDelete(self._writerKey),
                        opPut(self._commitKey, token),
                    ]
                    probe = self._probes()
                else:
                    taken = takeChunk(rest, entries[done:], self.maxTxnOps, self.maxTxnBytes)
                    record = self._undo + token + b"/%06d" % (chunk + 1)
                    ops = self._writeOps(rest[:taken]) + [
                        opPut(record, encodeUndo(entries[done : done + taken]))
                    ]
                    probe = self._probes() + [opRange(record, keysOnly=True)]
                try:
                    result = await self._runTxn(compare, ops, probe)
                except EtcdError as e:
                    if not e.tooLarge:
                        raise
                    self._shrink(e, len(ops), rest[:taken])
                    continue
                if result.succeeded:
                    revision = result.revision
                elif last and result.rangeAt(0) and result.rangeAt(0)[0].value == token:
                    revision = result.rangeAt(0)[0].modRevision
                elif not last and result.rangeAt(3):
                    revision = result.rangeAt(3)[0].modRevision
                else:
                    raise self._why(result, base)
                if last:
                    return revision
                since = revision
                chunk += 1
                done += taken
        except BaseException:
            if wrote:
                await self._rollBackOwn(token)
            raise
        finally:
            await self._dropLease(lease)

    async def _rollBackOwn(self, token: bytes) -> None:
        # Best effort: when it cannot be done now, the claim expires and
        # the next commit rolls the chunks back.
        try:
            read = await self.client.txn(
                [compareValue(self._writerKey, "EQUAL", token)], [opRange(self._undo, prefix=True)]
            )
            # No record: no chunk applied, and the claim goes with the lease.
            if read.succeeded and read.rangeAt(0):
                await self._restore(token, read.rangeAt(0))
        except Exception as e:
            log.warn(
                "could not roll back an unfinished large commit at once ({error}); the next "
                "commit will",
                error=str(e),
            )

    async def _rollBackAbandoned(self, base: int) -> int:
        """
        Roll back the chunks of a large commit whose writer is gone.

        @return: the revision after it (the state is that of C{base}).
        @raise ConflictError: when another commit or roll-back came first.
        """
        token = _newToken()
        lease, _ = await self.client.leaseGrant(self.writerTTL)
        try:
            claimed = await self._claim(token, lease, base, abandoned=True)
            log.info("rolling back an abandoned large commit")
            return await self._restore(token, claimed.rangeAt(1))
        except _Leftovers:
            raise ConflictError("another gateway is rolling back an abandoned commit")
        finally:
            await self._dropLease(lease)

    async def _restore(self, token: bytes, records: List[KeyValue]) -> int:
        """
        Put back the values the undo C{records} hold, in chunks, holding
        C{writer} as C{token}; the last chunk deletes the records and
        C{writer} and puts C{commit}.

        @return: the revision of the last chunk.
        """
        restores = CommittedView.of(records, self._resources, UNDO).restores()
        done = 0
        while True:
            rest = restores[done:]
            taken = takeChunk(rest, None, self.maxTxnOps - 3, self.maxTxnBytes)
            ops = self._writeOps(rest[:taken])
            last = taken == len(rest)
            if last:
                ops += [
                    opDelete(self._undo, prefix=True),
                    opDelete(self._writerKey),
                    opPut(self._commitKey, token),
                ]
            try:
                result = await self._runTxn(
                    [compareValue(self._writerKey, "EQUAL", token)], ops, [opRange(self._commitKey)]
                )
            except EtcdError as e:
                if not e.tooLarge:
                    raise
                self._shrink(e, len(ops), rest[:taken])
                continue
            if not result.succeeded:
                commit = result.rangeAt(0)
                if last and commit and commit[0].value == token:
                    return commit[0].modRevision
                # Restores are idempotent: a chunk whose answer was lost
                # and then applied fails only when we lost C{writer}.
                raise ConflictError("the roll-back lost its claim; try again")
            if last:
                return result.revision
            done += taken

    async def _dropLease(self, lease: int) -> None:
        try:
            await self.client.leaseRevoke(lease)
        except Exception:
            # It expires on its own.
            pass

    async def _runTxn(
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

    # -- watching ------------------------------------------------------------------------

    def watch(self, listener: Callable[[StoreState], Any]) -> Callable[[], None]:
        """
        Call C{listener} with the whole new state: first once the watch has
        read etcd (and again after it had to read everything anew), then
        after each commit, from any process; a large commit arrives whole,
        once its last chunk is written.  While etcd cannot be reached
        nothing is called; the changes made meanwhile arrive when it
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
        self._onResync(kvs, revision)
        self._watch = startWatch(
            self.client,
            self._resources,
            self._onEvents,
            prefix=True,
            startRevision=revision + 1,
            onResync=self._onResync,
        )

    def _onResync(self, kvs: List[KeyValue], revision: int) -> None:
        view = self._view(kvs)
        self._undoKeys = {self._resources + key for key in view.undoKeys}
        self._uncommitted = {}
        for relative, value in view.uncommitted.items():
            key = self._resources + relative
            where = self._parseKey(key)
            if where is not None:
                self._uncommitted[where] = None if value is None else self._parseValue(key, value)
        self._setState(StoreState(revision, self._resourcesOf(view.values)))

    def _onEvents(self, events: List[Event], revision: int) -> None:
        # Changes wait while undo records exist (a large commit is being
        # written, or rolled back): they become the state once the last
        # record goes, in the transaction that completes the commit.
        if self.state is None:
            return
        state = self.state
        for eventRevision, group in itertools.groupby(events, lambda e: e.kv.modRevision):
            for event in group:
                key = event.kv.key
                if key.startswith(self._undo):
                    if event.type == DELETE:
                        self._undoKeys.discard(key)
                    else:
                        self._undoKeys.add(key)
                    continue
                where = self._parseKey(key)
                if where is None:
                    continue
                self._uncommitted.pop(where, None)
                self._uncommitted[where] = (
                    None if event.type == DELETE else self._parseValue(key, event.kv.value)
                )
            if not self._undoKeys and self._uncommitted:
                # A key put back as it was (a roll-back, a resource saved
                # unchanged) keeps its object: readers know them by identity.
                changes = [
                    Change(kind, name, value)
                    for (kind, name), value in self._uncommitted.items()
                    if state.get(kind, name) != value
                ]
                self._uncommitted = {}
                state = state.withChanges(changes, eventRevision)
        if state is not self.state:
            self._setState(state)

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

    # -- ISharedStore -----------------------------------------------------------------

    def proxyRegistry(
        self, addr: str, version: str, startedAt: str, describe: Callable[[], Dict[str, Any]]
    ) -> Any:
        """
        See L{ISharedStore.proxyRegistry}: a
        L{gateway.store.etcd.registry.ProxyRegistry} on this store's client
        and prefix.
        """
        return ProxyRegistry(
            self.client,
            self.prefix,
            addr,
            version,
            startedAt=startedAt,
            reactor=self._reactor,
            extra=describe,
        )

    def listProxies(self) -> Deferred:
        """
        See L{ISharedStore.listProxies}.
        """
        return listProxies(self.client, self.prefix)

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
