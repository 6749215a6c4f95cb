"""
The gateway's built-in filters, shipped as Twisted plugins exactly as a
third-party filter would be.
"""

from __future__ import annotations

from twisted.plugin import IPlugin
from zope.interface import implementer

from gateway.interfaces import IFilterFactory


@implementer(IPlugin, IFilterFactory)
class _RequestIdFactory:
    name = "request-id"
    description = "Give every request an X-Request-Id, upstream and back."

    def makeFilter(self, config, reactor):
        from gateway.filters.requestid import makeRequestIdFilter

        return makeRequestIdFilter(config)


@implementer(IPlugin, IFilterFactory)
class _AccessLogFactory:
    name = "access-log"
    description = "Log one structured event per request."

    def makeFilter(self, config, reactor):
        from gateway.filters.accesslog import AccessLogFilter

        if config:
            raise ValueError("access-log takes no config")
        return AccessLogFilter(reactor)


requestId = _RequestIdFactory()
accessLog = _AccessLogFactory()
