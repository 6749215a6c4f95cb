"""
Traffic mirroring: a copy of a request sent to another cluster, its answer
thrown away.

The client's response never waits for or depends on a mirror: the copy is
sent next to the real request, errors are only counted, and at most
C{maxInFlight} copies are outstanding at once (beyond that, copies are
dropped and counted), so a slow or dead mirror can cost neither latency
nor memory.  Bodies up to C{maxBody} bytes are mirrored; a request with a
larger body is not mirrored at all.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from gateway.balancing.backend import startRequest
from gateway.http.body import BytesBodyProducer
from gateway.http.client import request as upstreamRequest
from gateway.pipeline.errors import outcomeOf
from gateway.pipeline.exchange import Exchange


class _Drain(Protocol):
    """
    Reads a mirror's answer to the end, so its connection can be reused.
    """

    def dataReceived(self, data: bytes) -> None:
        pass


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
        sentAt = self._reactor.seconds()
        d = upstreamRequest(
            self._client, backend, request.method, uri, headers, producer, self._timeout
        )
        stats = self._stats

        def answered(response: Any) -> None:
            response.deliverBody(_Drain())
            if stats is not None:
                stats.recordUpstream(
                    backend.name, response.code, None, self._reactor.seconds() - sentAt
                )

        def failed(failure: Any) -> None:
            self.failed += 1
            if stats is not None:
                stats.recordUpstream(
                    backend.name, None, outcomeOf(failure.value), self._reactor.seconds() - sentAt
                )

        def done(_: Any) -> None:
            self.inFlight -= 1
            # Mirrors are best effort: their outcome does not judge servers.
            backend.requestFinished(None, None)

        d.addCallbacks(answered, failed).addBoth(done)
