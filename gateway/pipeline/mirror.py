"""
Traffic mirroring: a copy of a request sent to another cluster, its answer
thrown away.

The client's response never waits for or depends on a mirror: the copy is
sent next to the real request, errors are only counted, and at most
C{maxInFlight} copies are outstanding at once (beyond that, copies are
dropped and counted), so a slow or dead mirror can cost neither latency
nor memory.  A copy is outstanding until its answer's body has been read
to its end, and no longer than C{timeout} seconds in all (its connection is
then cut): a mirror that answers its heads and then trickles or stalls its
bodies holds C{maxInFlight} connections at most.  Bodies up to C{maxBody}
bytes are mirrored; a request with a larger body is not mirrored at all.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from gateway.balancing.backend import startRequest
from gateway.http.body import BytesBodyProducer
from gateway.http.client import request as upstreamRequest
from gateway.pipeline.errors import outcomeOf
from gateway.pipeline.exchange import Exchange

log = Logger()


class _Drain(Protocol):
    """
    Reads a mirror's answer to the end, so its connection can be reused,
    and tells C{over} once, when the body ended or was cut at the copy's
    deadline (L{expire}).

    @ivar timer: the call of L{expire} at the copy's deadline, or L{None}.
    """

    transport: Any = None

    def __init__(self, over: Callable[[bool], None]) -> None:
        self._over: Optional[Callable[[bool], None]] = over
        self.timer: Optional[IDelayedCall] = None

    @property
    def ended(self) -> bool:
        """
        Whether the body is over (ended, or cut).
        """
        return self._over is None

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._end(True)

    def expire(self) -> None:
        """
        The copy's deadline: stop reading its body (the connection is
        aborted, not reused).
        """
        self.timer = None
        if self.ended:
            return
        self._end(False)
        if self.transport is not None:
            self.transport.stopProducing()

    def _end(self, complete: bool) -> None:
        over, self._over = self._over, None
        timer, self.timer = self.timer, None
        if timer is not None and timer.active():
            timer.cancel()
        if over is not None:
            over(complete)


class Mirror:
    """
    Sends mirror copies for L{gateway.pipeline.resource.GatewayResource}.

    @ivar sent: copies sent.
    @ivar failed: copies whose upstream failed.
    @ivar dropped: copies not sent because too many were in flight or the
        body was too large.
    """

    def __init__(
        self,
        client: Any,
        reactor: Any,
        maxInFlight: int = 64,
        maxBody: int = 1024 * 1024,
        timeout: float = 10.0,
        stats: Any = None,
    ) -> None:
        """
        @param stats: told of every copy, for its server (C{recordUpstream},
            see L{gateway.telemetry.stats.Stats}), or L{None}.
        """
        self._client = client
        self._reactor = reactor
        self._maxInFlight = maxInFlight
        self._maxBody = maxBody
        self._timeout = timeout
        self._stats = stats
        self.inFlight = 0
        self.sent = 0
        self.failed = 0
        self.dropped = 0

    def send(self, exchange: Exchange, cluster: Any) -> None:
        """
        Send a copy of the exchange's request to a backend of C{cluster}
        (once all of its body arrived, when it streams).
        """
        if self.inFlight >= self._maxInFlight:
            self.dropped += 1
            return
        body = exchange.body
        if body.complete:
            self._withBody(body.read(self._maxBody), exchange, cluster)
            return
        # (A failed body is no copy to send.)
        body.whenRead(self._maxBody).addCallbacks(
            self._withBody, self._noBody, callbackArgs=(exchange, cluster)
        )

    def _noBody(self, failure: Failure) -> None:
        self.dropped += 1

    def _withBody(self, body: Optional[bytes], exchange: Exchange, cluster: Any) -> None:
        if body is None or self.inFlight >= self._maxInFlight:
            self.dropped += 1
            return
        backend = cluster.choose(exchange.clientIP)
        if backend is None:
            self.dropped += 1
            return
        request = exchange.request
        node = exchange.api.nodes[0]
        uri = node.rewrite.expand(exchange.params, request) if node.rewrite else request.uri
        headers = exchange.upstreamHeaders.copy()
        backend = startRequest(cluster, backend)
        if backend is None:
            self.dropped += 1
            return
        self.inFlight += 1
        self.sent += 1
        producer = BytesBodyProducer(body) if body else None
        reactor = self._reactor
        sentAt = reactor.seconds()
        d = upstreamRequest(
            self._client, backend, request.method, uri, headers, producer, self._timeout
        )
        stats = self._stats

        def answered(response: Any) -> None:
            if stats is not None:
                stats.recordUpstream(backend.name, response.code, None, reactor.seconds() - sentAt)
            drain = _Drain(bodyOver)
            response.deliverBody(drain)
            if not drain.ended:
                # The copy's timeout bounds its body too: one that trickles
                # or stalls would otherwise hold its connection for good.
                left = max(0.0, sentAt + self._timeout - reactor.seconds())
                drain.timer = reactor.callLater(left, drain.expire)

        def bodyOver(complete: bool) -> None:
            if not complete:
                # (Counted, not logged: a line per copy would let a stalling
                # mirror fill the gateway's own log.)
                self.failed += 1
            done()

        def failed(failure: Any) -> None:
            self.failed += 1
            if stats is not None:
                stats.recordUpstream(
                    backend.name, None, outcomeOf(failure.value), reactor.seconds() - sentAt
                )
            done()

        def done() -> None:
            self.inFlight -= 1
            # Mirrors are best effort: their outcome does not judge servers.
            backend.requestFinished(None, None, sentAt)

        d.addCallbacks(answered, failed).addErrback(self._bug)

    def _bug(self, failure: Failure) -> None:
        log.failure("mirror copy failed unexpectedly", failure)
