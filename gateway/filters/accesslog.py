"""
The C{access-log} filter: one structured L{twisted.logger} event per
request, on twistd's own log, for the APIs that name it.

It is not the gateway's access log (C{proxy.accessLog},
L{gateway.telemetry.accesslog}), which writes one line per request in
batches, for about a tenth of this filter's cost.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.logger import Logger
from zope.interface import implementer

from gateway.interfaces import IFilter

log = Logger(namespace="gateway.access")


@implementer(IFilter)
@attrs.define
class AccessLogFilter:
    """
    Logs each request once it is answered (or failed): client, method, URI,
    protocol (C{HTTP/1.1}, C{HTTP/2.0}), API, status, upstream server and
    latencies, as fields of one
    L{twisted.logger} event, so a JSON log observer can ship them as they
    are.
    """

    reactor: Any
    name = "access-log"

    def before(self, context: Any) -> None:
        return None

    def after(self, context: Any, response: Any) -> None:
        request = context.request
        backend = context.backend
        log.info(
            "{client} {method} {uri} {protocol} -> {status} api={api} upstream={upstream}"
            " {ms:.1f}ms",
            client=context.clientIP,
            method=request.method.decode("latin-1"),
            uri=request.uri.decode("latin-1"),
            protocol=request.clientproto.decode("latin-1"),
            status=response.code,
            api=context.api.name if context.api is not None else None,
            upstream=backend.name if backend is not None else None,
            ms=(self.reactor.seconds() - context.startTime) * 1000.0,
            requestId=context.requestId,
            error=context.error,
        )

    def error(self, context: Any, failure: Any) -> None:
        return None
