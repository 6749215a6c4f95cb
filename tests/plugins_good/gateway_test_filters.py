"""
Test-only filter plugins, found through twisted.plugins.__path__ by the tests
that add this folder (a custom filter ships exactly like this).
"""

from twisted.internet import defer
from twisted.plugin import IPlugin
from zope.interface import implementer

from gateway.interfaces import IFilter, IFilterFactory
from gateway.pipeline.exchange import EarlyResponse


@implementer(IFilter)
class DenyHeaderFilter:
    """
    Answers 403 at once when the request carries the configured header;
    tags every response it sees with X-Seen-By.
    """

    name = "deny-header"

    def __init__(self, header, delay, reactor):
        self.header = header
        self.delay = delay
        self.reactor = reactor
        self.errors = []

    def before(self, context):
        if context.request.requestHeaders.hasHeader(self.header):
            answer = EarlyResponse.error(403, "denied by test filter", {b"x-denied": [b"yes"]})
            if self.delay:
                d = defer.Deferred()
                self.reactor.callLater(self.delay, d.callback, answer)
                return d
            return answer
        context.upstreamHeaders.setRawHeaders(b"x-test-filter", [b"passed"])
        return None

    def after(self, context, response):
        response.headers.addRawHeader(b"x-seen-by", b"deny-header")

    def error(self, context, failure):
        self.errors.append(failure)


@implementer(IPlugin, IFilterFactory)
class _DenyHeaderFactory:
    name = "deny-header"
    description = "Test filter: 403 when a header is present."

    def makeFilter(self, config, reactor):
        unknown = set(config) - {"header", "delay"}
        if unknown:
            raise ValueError("unknown keys: " + ", ".join(sorted(unknown)))
        header = config.get("header", "X-Deny").encode("ascii")
        return DenyHeaderFilter(header, config.get("delay", 0), reactor)


@implementer(IPlugin, IFilterFactory)
class _NotAFilterFactory:
    name = "not-a-filter"
    description = "Test plugin whose makeFilter returns something that is no IFilter."

    def makeFilter(self, config, reactor):
        return object()


denyHeader = _DenyHeaderFactory()
notAFilter = _NotAFilterFactory()
