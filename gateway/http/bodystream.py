"""
A request body that streams: the proxy answers a request while its body
still arrives, and sends the body upstream as it comes.

L{BodyStream} sits between the server channel, which feeds it the body's
bytes as they are read, and the readers of the body:

  - one producer at a time (L{StreamProducer}, an L{IBodyProducer}) that the
    upstream client sends from, with backpressure both ways: while the
    upstream connection cannot take more, the stream holds what arrives,
    and past L{HIGH_WATER} bytes held it asks the channel to stop reading
    from the client; it reads again once the upstream took them;
  - readers of the whole body, up to a limit (routing rules on a JSON body,
    an aggregation repeating the body to its nodes, a mirror copy): the
    stream keeps the body's first bytes for them until they have it, or
    know it is larger.

What it holds is bounded by the largest of L{HIGH_WATER}, L{REPLAY_LIMIT}
and the limits its readers asked for; a body of any size streams through
it.  The body's first L{REPLAY_LIMIT} bytes are kept while nothing beyond
them arrived, so a request whose body is still whole can be sent again
(L{BodyStream.replayable}): a retry after a connection failure needs it.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Deque, List, Optional, Tuple

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IConsumer
from twisted.python.failure import Failure
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from gateway.http.errors import UpstreamError

#: Bytes held for a consumer that does not take them (none yet, or a
#: paused one) before the channel stops reading from the client.
HIGH_WATER = 64 * 1024

#: How much of a body's start is kept so that the request can be sent
#: again while the body is still whole.
REPLAY_LIMIT = 64 * 1024


class RequestBodyError(UpstreamError):
    """
    The client's request body did not arrive whole: too slow (408), too
    large (413), malformed (400), or the client went away.  The request
    that was sending it upstream fails with this, and the client gets its
    C{status}, as it would had the body been refused before any upstream
    saw it.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class BodyStream:
    """
    The body of one request, as it arrives.

    @ivar length: the body's length when the request said it
        (C{Content-Length}), else L{None} (chunked).
    @ivar received: how many bytes of it arrived so far.
    @ivar complete: whether all of it arrived.
    @ivar failure: why it will not arrive whole, once known.
    """

    def __init__(self, channel: Any, length: Optional[int]) -> None:
        """
        @param channel: what to ask to stop and start reading the body
            (C{pauseBody()}, C{resumeBody()}): the server channel.
        @param length: see L{length}.
        """
        self._channel = channel
        self.length = length
        self.received = 0
        self.complete = False
        self.failure: Optional[Failure] = None
        #: The body's start, while all of it is kept (a replay, readers).
        self._kept: Optional[List[bytes]] = []
        #: What the producer was not given yet, and its size.
        self._pending: Deque[bytes] = deque()
        self._pendingSize = 0
        self._producer: Optional[StreamProducer] = None
        #: Whole-body readers: C{(limit, Deferred)}.
        self._readers: List[Tuple[int, Deferred[Optional[bytes]]]] = []
        #: How much of the start is kept (for a replay, and for readers).
        self._keep = REPLAY_LIMIT
        #: Whether a producer was given any of it (until then, all of what
        #: arrived is held anyway).
        self._given = False
        self._channelPaused = False

    # -- what the channel says ---------------------------------------------------

    def feed(self, data: bytes) -> None:
        """
        More of the body arrived.
        """
        if not data or self.failure is not None:
            return
        self.received += len(data)
        kept = self._kept
        if kept is not None:
            if self.received <= self._keep or not self._given:
                kept.append(data)
            else:
                # Past what is kept: the body cannot be sent again.
                self._kept = None
        self._pending.append(data)
        self._pendingSize += len(data)
        if self._readers:
            self._answerReaders()
        producer = self._producer
        if producer is not None and not producer.paused:
            producer.deliver()
        self._updateChannel()

    def finish(self) -> None:
        """
        All of the body arrived.
        """
        if self.complete or self.failure is not None:
            return
        self.complete = True
        self._answerReaders()
        self._resumeChannel()
        producer = self._producer
        if producer is not None and not producer.paused:
            producer.deliver()

    def fail(self, reason: Failure) -> None:
        """
        The body will not arrive whole: a producer sending it and the
        readers waiting for it fail with C{reason}.
        """
        if self.complete or self.failure is not None:
            return
        self.failure = reason
        self._kept = None
        self._pending.clear()
        self._pendingSize = 0
        readers, self._readers = self._readers, []
        for _, d in readers:
            d.errback(reason)
        producer = self._producer
        if producer is not None:
            self._producer = None
            producer.failed(reason)
        self._resumeChannel()

    # -- what readers ask ---------------------------------------------------------

    @property
    def replayable(self) -> bool:
        """
        Whether the body can be sent from its start (again): all of what
        arrived is kept.
        """
        return self._kept is not None and self.failure is None

    def whole(self) -> Optional[bytes]:
        """
        @return: the whole body when it all arrived and is kept, else
            L{None}.
        """
        if not self.complete or self._kept is None:
            return None
        return b"".join(self._kept)

    def read(self, limit: int) -> Deferred[Optional[bytes]]:
        """
        @return: a Deferred that fires with the whole body once it arrived,
            or with L{None} as soon as it is known to be larger than
            C{limit} bytes (or its start was let go of already); it fails
            when the body fails.
        """
        if self.failure is not None:
            failed: Deferred[Optional[bytes]] = Deferred()
            failed.errback(self.failure)
            return failed
        if self.received > limit or self._kept is None:
            return succeed(None)
        if self.complete:
            return succeed(b"".join(self._kept))
        self._keep = max(self._keep, limit + 1)
        d: Deferred[Optional[bytes]] = Deferred(self._readerCancelled)
        self._readers.append((limit, d))
        self._updateChannel()
        return d

    def producer(self) -> StreamProducer:
        """
        @return: a producer of the whole body, from its start.
        @raise ValueError: when the body cannot be sent from its start any
            more (see L{replayable}).
        """
        if not self.replayable:
            raise ValueError("the request body was let go of: it cannot be sent again")
        return StreamProducer(self)

    # -- producers ------------------------------------------------------------------

    def _attach(self, producer: StreamProducer) -> None:
        previous = self._producer
        if previous is not None:
            self._producer = None
            previous.failed(Failure(CancelledError("another producer took the body")))
        if self.failure is not None:
            producer.failed(self.failure)
            return
        kept = self._kept
        if kept is None:
            producer.failed(Failure(ValueError("the request body cannot be sent again")))
            return
        # From the start: all of it is kept.
        self._pending = deque(kept)
        self._pendingSize = self.received
        self._producer = producer
        producer.deliver()
        self._updateChannel()

    def _detach(self, producer: StreamProducer) -> None:
        if self._producer is producer:
            self._producer = None

    def _next(self) -> Optional[bytes]:
        """
        @return: the next chunk for the producer, now counted as given, or
            L{None} when it has everything that arrived.
        """
        pending = self._pending
        if not pending:
            return None
        chunk = pending.popleft()
        self._pendingSize -= len(chunk)
        self._given = True
        if self._kept is not None and self.received > self._keep and not self._readers:
            # Past what is kept, and now given away: not sent again.
            self._kept = None
        return chunk

    # -- what is held -----------------------------------------------------------------

    def _answerReaders(self) -> None:
        kept = []
        for limit, d in self._readers:
            if self.received > limit or self._kept is None:
                d.callback(None)
            elif self.complete:
                d.callback(b"".join(self._kept))
            else:
                kept.append((limit, d))
        self._readers = kept
        self._keep = max([REPLAY_LIMIT] + [limit + 1 for limit, _ in kept])

    def _readerCancelled(self, d: Deferred[Optional[bytes]]) -> None:
        self._readers = [(limit, r) for limit, r in self._readers if r is not d]
        self._answerReaders()
        self._updateChannel()

    def _updateChannel(self) -> None:
        """
        Ask the channel to stop reading while too much is held for a
        consumer that does not take it (none yet, or a paused one), and to
        read again once it took it.
        """
        if self._pendingSize >= max(HIGH_WATER, self._keep) and not self.complete:
            if not self._channelPaused:
                self._channelPaused = True
                self._channel.pauseBody()
        else:
            self._resumeChannel()

    def _resumeChannel(self) -> None:
        if self._channelPaused:
            self._channelPaused = False
            self._channel.resumeBody()


@implementer(IBodyProducer)
class StreamProducer:
    """
    Produces a L{BodyStream}'s body, from its start, as it arrives: the
    L{IBodyProducer} the upstream client sends a streamed body from.

    @ivar length: the body's length, or L{UNKNOWN_LENGTH} (it then goes
        upstream chunked).
    @ivar paused: whether the consumer asked for a pause.
    """

    def __init__(self, stream: BodyStream) -> None:
        self._stream = stream
        self.length: Any = stream.length if stream.length is not None else UNKNOWN_LENGTH
        self.paused = False
        self._consumer: Optional[IConsumer] = None
        self._done: Optional[Deferred[None]] = None

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        self._consumer = consumer
        done = self._done = Deferred()
        self._stream._attach(self)
        return done

    def deliver(self) -> None:
        """
        Write what the stream holds for the consumer; finish once all of the
        body was written.
        """
        stream = self._stream
        while self._consumer is not None and not self.paused:
            chunk = stream._next()
            if chunk is None:
                break
            self._consumer.write(chunk)
        if self._consumer is not None and stream.complete and not stream._pending:
            done, self._done = self._done, None
            self._consumer = None
            stream._detach(self)
            if done is not None:
                done.callback(None)
        stream._updateChannel()

    def failed(self, reason: Failure) -> None:
        """
        The body failed (or another producer took it).
        """
        self._consumer = None
        done, self._done = self._done, None
        if done is not None:
            done.errback(reason)

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        if self.paused:
            self.paused = False
            self.deliver()

    def stopProducing(self) -> None:
        self._consumer = None
        self._stream._detach(self)
        done, self._done = self._done, None
        if done is not None:
            done.errback(Failure(CancelledError("the request body's consumer stopped it")))
