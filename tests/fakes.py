"""
Test doubles shared by the unit tests.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from zope.interface import implementer

from gateway.interfaces import IUpstreamClient, IUpstreamRequest


@implementer(IUpstreamRequest)
class _ScriptedRequest:
    def __init__(self, answer: Deferred) -> None:
        self._answer = answer
        self.finished = False

    def cancel(self) -> None:
        self._answer.cancel()


@implementer(IUpstreamClient)
class ScriptedUpstreamClient:
    """
    Base of the upstream clients that tests script with Deferreds: a
    subclass defines C{respond(backend, method, uri, headers, bodyProducer,
    timeout)} returning a L{Deferred} of the response, and this class makes
    it an L{IUpstreamClient} (C{send}'s callbacks, cancellation through the
    Deferred).
    """

    def respond(
        self,
        backend: Any,
        method: bytes,
        uri: bytes,
        headers: Headers,
        bodyProducer: Any,
        timeout: Optional[float],
    ) -> Deferred:
        raise NotImplementedError()

    def send(
        self,
        backend: Any,
        method: bytes,
        uri: bytes,
        headers: Headers,
        bodyProducer: Any,
        timeout: Optional[float],
        onResponse: Callable[..., Any],
        onFailure: Callable[..., Any],
        *args: Any,
    ) -> _ScriptedRequest:
        answer = self.respond(backend, method, uri, headers, bodyProducer, timeout)
        sent = _ScriptedRequest(answer)

        def succeeded(response: Any) -> None:
            sent.finished = True
            onResponse(response, *args)

        def failed(failure: Failure) -> None:
            sent.finished = True
            onFailure(failure, *args)

        answer.addCallbacks(succeeded, failed)
        return sent

    def close(self) -> Deferred:
        d: Deferred = Deferred()
        d.callback(None)
        return d


class NoProxyConfig:
    """
    A gateway config without a C{proxy} section, for L{GatewayStatus}.
    """

    proxy = None


class ReadyStore:
    """
    A store that is ready, for L{GatewayStatus}.
    """

    ready = True


class TwoWorkers:
    """
    A worker pool of two running workers (pids 100 and 101), for
    L{GatewayStatus}.
    """

    count = 2

    def pids(self) -> Dict[int, Optional[int]]:
        return {0: 100, 1: 101}
