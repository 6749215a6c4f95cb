"""
Watches of etcd keys over the JSON gateway's streaming C{/v3/watch}.

An L{EtcdWatch} follows a key, or every key under a prefix, through an
L{EtcdClient}: it delivers the events in order, a revision's events never
split between two calls; after a broken stream it resumes from the last
revision it delivered plus one (on the next endpoint when the one it used
failed), waiting as the client's back-off policy says between attempts;
when etcd has compacted that revision away it reads everything again (a
resync) and goes on from there.  The stream is read by L{_LineStream}: one
JSON object per line, a line spanning any number of network reads.

The watch uses the client's public surface only (L{EtcdClient.openStream},
L{EtcdClient.range}, L{EtcdClient.endpointFailed},
L{EtcdClient.endpointAnswered}, L{EtcdClient.sleep}, L{EtcdClient.backoff},
L{EtcdClient.onClose}); the client knows nothing of watches, and stops
them, when it closes, as it stops anything registered with
L{EtcdClient.onClose}.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Optional

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss

from gateway.store import StoreError
from gateway.store.etcd.client import (
    UNAVAILABLE,
    EtcdClient,
    EtcdError,
    EtcdUnavailable,
    Event,
    KeyLike,
    KeyValue,
    describe,
    encode,
    headerRevision,
    int64,
    prefixEnd,
)

log = Logger()


#: The longest line a watch stream may send (a response with every event of
#: a catch-up); past it the stream is dropped as broken.
MAX_LINE = 256 * 1024 * 1024


class _LineStream(Protocol):
    """
    Reads a JSON gateway stream: one JSON object per line, a line spanning
    any number of reads.  Each line goes to C{onMessage} whole; C{done}
    fires with the reason the stream ended.
    """

    def __init__(self, onMessage: Callable[[Dict[str, Any]], Any], maxLine: int = MAX_LINE):
        self._onMessage = onMessage
        self._maxLine = maxLine
        self._buffer = bytearray()
        self._searched = 0
        self.done: Deferred = Deferred()
        self.stopped = False
        self.aborted = False
        self._reason: Optional[BaseException] = None

    def dataReceived(self, data: bytes) -> None:
        if self.stopped:
            return
        self._buffer.extend(data)
        while not self.stopped:
            # Only look for the newline in what arrived since the last look:
            # a large line costs one scan, not one per read.
            end = self._buffer.find(b"\n", self._searched)
            if end < 0:
                self._searched = len(self._buffer)
                if len(self._buffer) > self._maxLine:
                    self.abort(StoreError(f"etcd sent a line longer than {self._maxLine} bytes"))
                return
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            self._searched = 0
            if line.strip():
                self._line(line)

    def _line(self, line: bytes) -> None:
        try:
            message = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            self.abort(StoreError(f"etcd sent a line that is not JSON: {e}"))
            return
        if not isinstance(message, dict):
            self.abort(StoreError("etcd sent a line that is not a JSON object"))
            return
        self._onMessage(message)

    def abort(self, reason: Optional[BaseException] = None) -> None:
        """
        Drop the connection; later data is ignored.
        """
        if self.stopped:
            return
        self.stopped = True
        self.aborted = True
        self._reason = reason
        if self.transport is not None:
            # The body's transport is a producer: stopping it closes the
            # connection (twisted.web.client's way to abandon a body).
            self.transport.stopProducing()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Optional[Failure] = None) -> None:
        if reason is None:
            reason = Failure(ResponseDone())
        self.stopped = True
        if not self.done.called:
            self.done.callback(self._reason if self._reason is not None else reason.value)


class _Resync(Exception):
    """
    The watch must start over from a full read.
    """


class EtcdWatch:
    """
    A watch that survives dropped streams, restarts and outages of etcd.

    Making one does no I/O: L{start} opens its stream.

    @ivar revision: the last revision delivered (or read, after a resync);
        after a drop the watch resumes at C{revision + 1}.
    @ivar connected: whether a stream is open and created.
    """

    def __init__(
        self,
        client: EtcdClient,
        key: KeyLike,
        callback: Callable[[List[Event], int], Any],
        prefix: bool = False,
        startRevision: Optional[int] = None,
        onResync: Optional[Callable[[List[KeyValue], int], Any]] = None,
        rangeEnd: Optional[KeyLike] = None,
    ) -> None:
        """
        @param key: the key to watch, or the first of a range.
        @param callback: called with C{(events, revision)} for each batch of
            events (never splitting one revision's events), C{revision}
            being the revision of the last event.
        @param prefix: watch every key under C{key}.
        @param startRevision: the first revision to see; L{None} for
            changes from the moment the stream is created on.
        @param onResync: called with C{(kvs, revision)}, everything in the
            watched range at C{revision}, when the watch had to start over
            because the revision it resumes from was compacted; the events
            from C{revision + 1} follow.  Without it, the watch logs the gap
            and goes on from the oldest revision etcd still has.
        @param rangeEnd: watch every key in C{[key, rangeEnd)} (when not
            C{prefix}).
        """
        self._client = client
        self._key = key.encode("utf-8") if isinstance(key, str) else bytes(key)
        if prefix:
            self._rangeEnd: Optional[bytes] = prefixEnd(self._key)
        elif rangeEnd is not None:
            self._rangeEnd = rangeEnd.encode("utf-8") if isinstance(rangeEnd, str) else rangeEnd
        else:
            self._rangeEnd = None
        self._callback = callback
        self._onResync = onResync
        self.revision: Optional[int] = None if startRevision is None else startRevision - 1
        self.connected = False
        self._running = False
        self._stream: Optional[_LineStream] = None
        self._loop: Optional[Deferred] = None
        self._resync = False
        self._streamError: Optional[BaseException] = None
        self._endpoint = client.currentEndpoint
        self._lastProblem: Optional[str] = None
        self._attempt = 0
        self._unregister: Optional[Callable[[], None]] = None

    def start(self) -> None:
        """
        Open the stream, and keep one open until L{stop}.

        @raise StoreError: when the client is closed.
        """
        if self._running:
            return
        if self._client.closed:
            raise StoreError("the etcd client is closed")
        self._running = True
        self._unregister = self._client.onClose(self.stop)
        self._loop = Deferred.fromCoroutine(self._run())
        self._loop.addErrback(self._crashed)

    def _crashed(self, failure: Failure) -> None:
        if not failure.check(CancelledError):
            log.failure("etcd watch stopped unexpectedly", failure)

    def stop(self) -> Deferred:
        """
        Stop watching.

        @return: a Deferred firing once the stream is closed.
        """
        self._running = False
        self.connected = False
        unregister, self._unregister = self._unregister, None
        if unregister is not None:
            unregister()
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.abort()
        loop, self._loop = self._loop, None
        if loop is None or loop.called:
            return succeed(None)
        waiter: Deferred = Deferred()
        loop.addBoth(lambda _: waiter.callback(None))
        loop.cancel()
        return waiter

    def reconnect(self) -> None:
        """
        Drop the current stream; the watch resumes on a new one from
        C{revision + 1}, as after any drop.
        """
        if self._stream is not None:
            self._stream.abort()

    async def _run(self) -> None:
        while self._running:
            endpoint = self._client.currentEndpoint
            try:
                if self._resync:
                    await self._doResync()
                await self._watchOnce(endpoint)
            except CancelledError:
                if not self._running:
                    return
                raise
            except _Resync:
                continue
            except Exception as e:
                self.connected = False
                if not self._running:
                    return
                if isinstance(e, EtcdError) and e.code != UNAVAILABLE:
                    # Logged when it changes, not on every retry.
                    problem = describe(e)
                    if problem != self._lastProblem:
                        self._lastProblem = problem
                        log.warn(
                            "etcd watch on {endpoint} failed: {error}; retrying",
                            endpoint=endpoint,
                            error=problem,
                        )
                else:
                    self._client.endpointFailed(endpoint, e)
            self.connected = False
            if self._running:
                delay = self._client.backoff(self._attempt)
                self._attempt += 1
                await self._client.sleep(delay)

    async def _doResync(self) -> None:
        kvs, revision = await self._client.range(self._key, rangeEnd=self._rangeEnd)
        self._resync = False
        self.revision = revision
        if self._onResync is not None:
            try:
                self._onResync(kvs, revision)
            except Exception:
                log.failure("etcd watch resync callback failed at revision {r}", r=revision)

    async def _watchOnce(self, endpoint: str) -> None:
        self._endpoint = endpoint
        create: Dict[str, Any] = {"key": encode(self._key)}
        if self._rangeEnd is not None:
            create["range_end"] = encode(self._rangeEnd)
        if self.revision is not None:
            create["start_revision"] = str(self.revision + 1)
        response = await self._client.openStream(endpoint, "/v3/watch", {"create_request": create})
        stream = _LineStream(self._message)
        self._stream = stream
        self._streamError = None
        response.deliverBody(stream)
        if not self._running:
            stream.abort()
        reason = await stream.done
        self._stream = None
        if self._resync:
            raise _Resync()
        if self._streamError is not None:
            raise self._streamError
        if stream.aborted:
            # Dropped on purpose (reconnect, stop): not a failure of etcd.
            return
        if isinstance(reason, (ResponseDone, PotentialDataLoss)):
            raise EtcdUnavailable(f"etcd at {endpoint} ended the watch stream")
        raise reason if isinstance(reason, BaseException) else EtcdUnavailable(str(reason))

    def _message(self, message: Dict[str, Any]) -> None:
        stream = self._stream
        if "error" in message:
            self._streamError = EtcdError.fromJSON(message["error"])
            if stream is not None:
                stream.abort()
            return
        result = message.get("result") or {}
        if result.get("created"):
            self.connected = True
            self._lastProblem = None
            self._attempt = 0
            self._client.endpointAnswered(self._endpoint)
            if self.revision is None:
                self.revision = headerRevision(result)
        compacted = int64(result.get("compact_revision"))
        if compacted:
            if self._onResync is not None:
                log.info(
                    "etcd compacted revision {wanted} away (oldest kept: {compacted}); "
                    "reading everything again",
                    wanted=(self.revision or 0) + 1,
                    compacted=compacted,
                )
                self._resync = True
            else:
                log.warn(
                    "etcd compacted revisions {first} to {last}: their events are lost",
                    first=(self.revision or 0) + 1,
                    last=compacted - 1,
                )
                self.revision = compacted - 1
            if stream is not None:
                stream.abort()
            return
        if result.get("canceled"):
            self._streamError = EtcdError(0, str(result.get("cancel_reason") or "watch canceled"))
            if stream is not None:
                stream.abort()
            return
        events = [Event.fromJSON(e) for e in result.get("events") or ()]
        if not events:
            return
        revision = max(event.kv.modRevision for event in events)
        self.revision = revision
        try:
            self._callback(events, revision)
        except Exception:
            log.failure("etcd watch callback failed at revision {r}", r=revision)


def startWatch(
    client: EtcdClient,
    key: KeyLike,
    callback: Callable[[List[Event], int], Any],
    prefix: bool = False,
    startRevision: Optional[int] = None,
    onResync: Optional[Callable[[List[KeyValue], int], Any]] = None,
    rangeEnd: Optional[KeyLike] = None,
) -> EtcdWatch:
    """
    Watch a key, or every key under a prefix, until the watch is stopped or
    the client closed.

    @param client: the L{EtcdClient} the watch runs on.
    @return: the running L{EtcdWatch} (see it for the other parameters).
    @raise StoreError: when the client is closed.
    """
    watch = EtcdWatch(client, key, callback, prefix, startRevision, onResync, rangeEnd)
    watch.start()
    return watch
