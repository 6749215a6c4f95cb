"""
An L{IUpstreamClient} on Twisted's C{Agent} over a persistent pool: the
baseline the gateway's own client is measured against in C{bench/}.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from twisted.internet import defer, error
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    ResponseFailed,
    ResponseNeverReceived,
    _HTTP11ClientFactory,
)
from twisted.web.iweb import UNKNOWN_LENGTH
from zope.interface import implementer

from gateway.http.connect import CachedEndpointFactory
from gateway.http.errors import UpstreamBroken, UpstreamConnectError, UpstreamTimeout
from gateway.interfaces import IUpstreamClient, IUpstreamRequest


class _QuietClientFactory(_HTTP11ClientFactory):
    # One log line per upstream connection is noise in a proxy's log.
    noisy = False


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

    def send(
        self,
        backend: Any,
        method: bytes,
        uri: bytes,
        headers: Any,
        bodyProducer: Optional[Any],
        timeout: Optional[float],
        onResponse: Any,
        onFailure: Any,
        *args: Any,
    ) -> Any:
        d = self._request(backend, method, uri, headers, bodyProducer, timeout)
        sent = _Sent(d)
        d.addCallbacks(sent.succeeded, sent.failed, (onResponse, args), None, (onFailure, args))
        return sent

    def _request(
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


@implementer(IUpstreamRequest)
class _Sent:
    def __init__(self, d: defer.Deferred) -> None:
        self._d = d
        self.finished = False

    def cancel(self) -> None:
        self._d.cancel()

    def succeeded(self, response: Any, onResponse: Any, args: Any) -> None:
        self.finished = True
        onResponse(response, *args)

    def failed(self, failure: Failure, onFailure: Any, args: Any) -> None:
        self.finished = True
        onFailure(failure, *args)


def _restoreContentLength(response: Any) -> Any:
    # Agent moves Content-Length out of the headers into response.length;
    # without it the proxy would answer every request chunked.
    if response.length is not UNKNOWN_LENGTH and not response.headers.hasHeader(b"content-length"):
        if response.code not in (204, 304) and not (100 <= response.code < 200):
            response.headers.setRawHeaders(b"content-length", [b"%d" % (response.length,)])
    return response
