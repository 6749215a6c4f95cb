"""
An etcd watch over the JSON gateway's streaming C{/v3/watch}: events in
order, resumed from the last revision seen after a broken stream, and a
resync when etcd has compacted past it.
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
    MAX_LINE,
    UNAVAILABLE,
    EtcdClient,
    EtcdError,
    EtcdUnavailable,
    Event,
    KeyValue,
    _b64,
    _checkAnswer,
    _describe,
    _headerRevision,
    _int,
    _jsonHeaders,
)

log = Logger()


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

    @ivar revision: the last revision delivered (or read, after a resync);
        after a drop the watch resumes at C{revision + 1}.
    @ivar connected: whether a stream is open and created.
    """

    def __init__(
        self,
        client: EtcdClient,
        key: bytes,
        rangeEnd: Optional[bytes],
        callback: Callable[[List[Event], int], Any],
        startRevision: Optional[int],
        onResync: Optional[Callable[[List[KeyValue], int], Any]],
    ) -> None:
        self._client = client
        self._key = key
        self._rangeEnd = rangeEnd
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
        self._backoff = client._backoff()

    def start(self) -> None:
        if self._running:
            return
        self._running = True
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
        self._client._forget(self)
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
                    problem = _describe(e)
                    if problem != self._lastProblem:
                        self._lastProblem = problem
                        log.warn(
                            "etcd watch on {endpoint} failed: {error}; retrying",
                            endpoint=endpoint,
                            error=problem,
                        )
                else:
                    self._client.availability.failed(endpoint, e)
                    self._client._failOver(endpoint)
            self.connected = False
            if self._running:
                await self._client.sleep(self._backoff.next())

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
        create: Dict[str, Any] = {"key": _b64(self._key)}
        if self._rangeEnd is not None:
            create["range_end"] = _b64(self._rangeEnd)
        if self.revision is not None:
            create["start_revision"] = str(self.revision + 1)
        body = json.dumps({"create_request": create}).encode("utf-8")
        headers = self._client._treq.post(
            self._client._url(endpoint, "/v3/watch"), data=body, headers=_jsonHeaders()
        )
        response = await headers.addTimeout(self._client._timeout, self._client._reactor)
        if response.code != 200:
            _checkAnswer(response.code, await response.content())
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
            problem = message["error"]
            if not isinstance(problem, dict):
                problem = {"message": problem}
            self._streamError = EtcdError(
                _int(problem.get("grpc_code") or problem.get("code")),
                str(problem.get("message") or problem),
                _int(problem.get("http_code")),
            )
            if stream is not None:
                stream.abort()
            return
        result = message.get("result") or {}
        if result.get("created"):
            self.connected = True
            self._lastProblem = None
            self._backoff.reset()
            self._client.availability.succeeded(self._endpoint)
            if self.revision is None:
                self.revision = _headerRevision(result)
        compacted = _int(result.get("compact_revision"))
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
