"""
A test-only plugin that claims IFilterFactory but does not provide it.
"""

from twisted.plugin import IPlugin
from zope.interface import implementer

from gateway.interfaces import IFilterFactory


@implementer(IPlugin, IFilterFactory)
class _Broken:
    name = "broken"
    # no description, no makeFilter


broken = _Broken()
