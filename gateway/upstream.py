"""
The HTTP client the proxy uses to talk to backends.

L{AgentUpstreamClient} is Twisted's L{Agent} over a persistent
L{HTTPConnectionPool}, with the fixes a proxy needs (PERF-NOTES.md): one
cached endpoint per backend address instead of one per request, a pool that
keeps more than two idle connections per backend, C{Content-Length} put
back into the response headers, and errors translated into the gateway's
own (L{gateway.errors}).  It sits behind L{IUpstreamClient} so that a leaner
client can replace it.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Callable, Dict, Optional, Tuple

from twisted.internet import defer, error
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    PotentialDataLoss,
    ResponseDone,
    ResponseFailed,
    ResponseNeverReceived,
    _HTTP11ClientFactory,
)
from twisted.web.iweb import UNKNOWN_LENGTH, IAgentEndpointFactory, IBodyProducer
from zope.interface import implementer

from gateway.errors import UpstreamBroken, UpstreamConnectError, UpstreamTimeout
from gateway.interfaces import ICallbackUpstreamClient, IUpstreamClient

#: What a response body's C{connectionLost} reason is when the body is
#: complete: L{ResponseDone}, or L{PotentialDataLoss} at the end of a body
#: delimited by the connection's close.
CLEAN_ENDS = (ResponseDone, PotentialDataLoss)


class _QuietClientFactory(_HTTP11ClientFactory):
    # One log line per upstream connection is noise in a proxy's log.
    noisy = False


@implementer(IAgentEndpointFactory)
class CachedEndpointFactory:
    """
    Hands out one endpoint per (host, port), built once.

    Building a L{HostnameEndpoint} (and IDNA-encoding its host) for every
    request cost ~12% of the proxy's CPU; backends are few and fixed, so
    their endpoints are cached.  An IP literal gets a plain TCP endpoint,
    which needs no name resolution at all.
    """

    def __init__(self, reactor: Any, connectTimeout: float = 5.0) -> None:
        self._reactor = reactor
        self._connectTimeout = connectTimeout
        self._endpoints: Dict[Tuple[bytes, int], Any] = {}

    def endpointForURI(self, uri: Any) -> Any:
        key = (uri.host, uri.port)
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            endpoint = self._endpoints[key] = self._makeEndpoint(uri.host, uri.port)
        return endpoint

    def _makeEndpoint(self, host: bytes, port: int) -> Any:
        text = host.decode("ascii")
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            return HostnameEndpoint(self._reactor, host, port, timeout=self._connectTimeout)
        endpointClass = TCP4ClientEndpoint if address.version == 4 else TCP6ClientEndpoint
        return endpointClass(self._reactor, text, port, timeout=self._connectTimeout)


@implementer(IBodyProducer)
class BytesBodyProducer:
    """
    Sends a small body that is already in memory in one write.
    """

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer: Any) -> Any:
        if self._body:
            consumer.write(self._body)
        return defer.succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


def _translate(failure: Any) -> Any:
    """
    Turn Twisted's many client errors into the gateway's three.
    """
    if failure.check(UpstreamTimeout, UpstreamConnectError, UpstreamBroken):
        return failure
    if failure.check(defer.TimeoutError, error.TimeoutError):
        raise UpstreamTimeout(failure.getErrorMessage())
    if failure.check(error.ConnectError, error.DNSLookupError):
        raise UpstreamConnectError(failure.getErrorMessage())
    if failure.check(ResponseNeverReceived, ResponseFailed):
        reasons = failure.value.reasons
        raise UpstreamBroken(
            "; ".join(r.getErrorMessage() for r in reasons) or failure.getErrorMessage()
        )
    if failure.check(defer.CancelledError):
        return failure
    raise UpstreamBroken(failure.getErrorMessage())


@implementer(IUpstreamClient)
class AgentUpstreamClient:
    """
    L{IUpstreamClient} on Twisted's L{Agent} with a persistent pool.

    @param maxPersistentPerHost: idle keep-alive connections kept per
        backend (Twisted's default of 2 makes a busy proxy reconnect all the
        time).
    @param idleTimeout: seconds an idle pooled connection is kept.
    """

    def __init__(
        self,
        reactor: Any,
        connectTimeout: float = 5.0,
        maxPersistentPerHost: int = 128,
        idleTimeout: float = 60.0,
    ) -> None:
        self._reactor = reactor
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool._factory = _QuietClientFactory
        self._pool.maxPersistentPerHost = maxPersistentPerHost
        # Twisted infers int from its default (240), but it is any number of
        # seconds (it goes to callLater).
        self._pool.cachedConnectionTimeout = idleTimeout  # type: ignore[assignment]
        self._pool.retryAutomatically = True
        self._agent = Agent.usingEndpointFactory(
            reactor, CachedEndpointFactory(reactor, connectTimeout), pool=self._pool
        )
        self._prefixes: Dict[Tuple[str, int], bytes] = {}

    def _prefix(self, backend: Any) -> bytes:
        key = (backend.host, backend.port)
        prefix = self._prefixes.get(key)
        if prefix is None:
            host = backend.host
            if ":" in host:
                host = f"[{host}]"
            prefix = self._prefixes[key] = f"http://{host}:{backend.port}".encode("ascii")
        return prefix

    def request(
        self,
        backend: Any,
        method: bytes,
        uri: bytes,
        headers: Any,
        bodyProducer: Optional[Any] = None,
        timeout: Optional[float] = None,
    ) -> defer.Deferred:
        d = self._agent.request(method, self._prefix(backend) + uri, headers, bodyProducer)
        if timeout is not None:
            # Agent reports a cancelled request as ResponseNeverReceived, so
            # remember that it was the timeout that cancelled it.
            expired = []

            def expire() -> None:
                expired.append(True)
                d.cancel()

            timer = self._reactor.callLater(timeout, expire)

            def settle(result: Any) -> Any:
                if timer.active():
                    timer.cancel()
                if expired and isinstance(result, Failure):
                    raise UpstreamTimeout(f"no response within {timeout:g}s")
                return result

            d.addBoth(settle)
        d.addCallbacks(_restoreContentLength, _translate)
        return d

    def close(self) -> defer.Deferred:
        return self._pool.closeCachedConnections()


def _restoreContentLength(response: Any) -> Any:
    # Agent moves Content-Length out of the headers into response.length;
    # without it the proxy would answer every request chunked.
    if response.length is not UNKNOWN_LENGTH and not response.headers.hasHeader(b"content-length"):
        if response.code not in (204, 304) and not (100 <= response.code < 200):
            response.headers.setRawHeaders(b"content-length", [b"%d" % (response.length,)])
    return response


def senderFor(client: Any) -> Callable[..., Any]:
    """
    @param client: an L{IUpstreamClient}.
    @return: C{send(backend, method, uri, headers, bodyProducer, timeout,
        onResponse, onFailure, *args)}, which sends a request through
        C{client} and calls back C{onResponse(response, *args)} or
        C{onFailure(failure, *args)}: without a L{defer.Deferred} when the
        client provides L{ICallbackUpstreamClient}, else through its
        C{request}.  C{send} returns what cancels the request while its
        head is awaited (C{cancel()}), or L{None} when it is over already
        (it failed at once: its callback has run).
    """
    callback = ICallbackUpstreamClient.providedBy(client)

    def send(
        backend: Any,
        method: bytes,
        uri: bytes,
        headers: Any,
        bodyProducer: Any,
        timeout: Optional[float],
        onResponse: Callable[..., Any],
        onFailure: Callable[..., Any],
        *args: Any,
    ) -> Any:
        if callback:
            try:
                sent = client.send(
                    backend,
                    method,
                    uri,
                    headers,
                    bodyProducer,
                    timeout,
                    onResponse,
                    onFailure,
                    *args,
                )
            except ValueError:
                # An invalid target: failed as request() fails it.
                onFailure(Failure(), *args)
                return None
            return None if sent.finished else sent
        d = client.request(backend, method, uri, headers, bodyProducer, timeout)
        d.addCallbacks(onResponse, onFailure, callbackArgs=args, errbackArgs=args)
        return None if d.called else d

    return send
