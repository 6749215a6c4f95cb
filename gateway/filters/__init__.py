"""
Filters: loading them from Twisted plugins, and running them.

A filter is any provider of L{gateway.interfaces.IFilter}.  Filters are made
by factories that providing L{gateway.interfaces.IFilterFactory} and ship as
Twisted plugins (module-level objects in a C{twisted/plugins/} folder), so
the built-in filters and third-party ones load the same way::

    registry = FilterRegistry.fromPlugins()
    chain = registry.makeFilters([{"name": "request-id"}], reactor)

A name that no plugin provides, a plugin that does not provide the
interface, or a filter that refuses its configuration is an error naming
the filter; the gateway never skips a filter silently.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Hashable, Iterable, List, Mapping, Optional, Sequence, Tuple

from twisted.logger import Logger
from twisted.plugin import getPlugins
from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject

from gateway.interfaces import IFilter, IFilterFactory
from gateway.model.schema import ValidationError

log = Logger()


class FilterError(ValidationError):
    """
    A filter could not be loaded or configured.  C{field} says where it was
    named (e.g. C{"filters[1].name"}).
    """


class FilterRegistry:
    """
    The filter factories this process knows, by name.
    """

    def __init__(self, factories: Mapping[str, Any], auth: Any = None) -> None:
        """
        @param factories: the filter factories, by name.
        @param auth: the L{gateway.filters.auth.AuthServices} the API's
            C{auth} filters share (password verifications, JWKS); made
            when an API first needs it, by default.
        """
        self._factories = dict(factories)
        self._auth = auth

    @classmethod
    def fromPlugins(cls, package: Any = None) -> FilterRegistry:
        """
        Discover every L{IFilterFactory} plugin.

        @param package: the plugin package to search (default
            C{twisted.plugins}, which spans every C{twisted/plugins} folder
            on C{sys.path}).
        @raise FilterError: when two plugins claim one name, or a plugin does
            not fully provide L{IFilterFactory} (L{getPlugins} only checks the
            declaration, so a broken plugin would otherwise load).
        """
        found: Dict[str, Any] = {}
        if package is None:
            plugins = getPlugins(IFilterFactory)
        else:
            plugins = getPlugins(IFilterFactory, package)
        for plugin in plugins:
            name = getattr(plugin, "name", None)
            try:
                verifyObject(IFilterFactory, plugin)
            except Invalid as e:
                raise FilterError("", f"filter plugin {name or plugin!r} is broken: {e}")
            if not isinstance(name, str) or not name:
                raise FilterError("", f"filter plugin {plugin!r} has no name")
            if name in found and found[name] is not plugin:
                raise FilterError(
                    "", f"two filter plugins are named {name!r}: {found[name]!r} and {plugin!r}"
                )
            found[name] = plugin
        return cls(found)

    def names(self) -> Sequence[str]:
        return sorted(self._factories)

    def makeFilter(self, name: str, config: Mapping[str, Any], reactor: Any, field: str = ""):
        """
        Make one filter.

        @raise FilterError: naming C{field} when the name is unknown, the
            factory refuses the configuration, or what it makes is not an
            L{IFilter}.
        """
        factory = self._factories.get(name)
        if factory is None:
            known = ", ".join(self.names()) or "none"
            raise FilterError(field, f"no filter plugin named {name!r} (known: {known})")
        try:
            made = factory.makeFilter(dict(config), reactor)
        except ValueError as e:
            raise FilterError(field, f"filter {name!r} refused its config: {e}")
        try:
            verifyObject(IFilter, made)
        except Invalid as e:
            raise FilterError(field, f"filter plugin {name!r} made a broken filter: {e}")
        return made

    def makeFilters(self, specs: Iterable[Any], reactor: Any, field: str = "filters") -> Tuple:
        """
        Make a chain of filters from specs: names, C{{"name", "config"}}
        mappings, or L{gateway.model.resources.FilterSpec}s.
        """
        chain = []
        for i, spec in enumerate(specs):
            config: Mapping[str, Any]
            if isinstance(spec, str):
                name, config = spec, {}
            elif isinstance(spec, Mapping):
                name, config = str(spec.get("name")), spec.get("config") or {}
            else:
                name, config = spec.name, spec.config
            chain.append(self.makeFilter(name, config, reactor, f"{field}[{i}].name"))
        return tuple(chain)

    def apiFilterSpecs(
        self, api: Any, reactor: Any, random: Any, buckets: Any
    ) -> List[Tuple[Hashable, Callable[..., Optional[Any]]]]:
        """
        The built-in filters an API's own settings ask for, in the order
        they run, in front of its plugin filters (README.md, "Filters and
        plugins", documents it):

          1. IP access (a denied client costs nothing more);
          2. CORS (a preflight is answered here: before authentication,
             which a browser's preflight never carries);
          3. authentication, then the access list (ACL);
          4. the API's circuit breaker, then its rate limits (only
             requests that may be served are counted);
          5. header transformations (last: they may use the consumer
             authentication found).

        Their C{after} hooks run in the reverse order.

        @param api: the L{gateway.model.resources.API}.
        @param reactor: the L{IReactorTime} the filters read time from.
        @param random: the L{random.Random} a breaker's half-open draws use.
        @param buckets: what makes the buckets of the rate limits
            (L{gateway.protection.ratelimit.LOCAL}, or the workers'
            L{gateway.protection.sharedbuckets.SharedBuckets}).
        @return: C{(key, make)} pairs: C{make(previous)} makes the filter
            (or L{None} when the settings ask for none); C{key} changes when
            the settings do, so a snapshot keeps the filter made for a key,
            and its state (a breaker, buckets), while the key stays.
            C{previous} is the API's filter of the same kind (C{key[0]})
            before its settings changed, or L{None}: the rate limits carry
            their buckets' levels over from it, the circuit breaker its
            state.
        """
        from gateway.filters.auth import makeACLFilter, makeAuthFilter
        from gateway.filters.breaker import makeAPIBreakerFilter
        from gateway.filters.cors import makeCORSFilter
        from gateway.filters.ipaccess import makeIPAccessFilter
        from gateway.filters.ratelimit import makeRateLimitFilter
        from gateway.filters.transform import makeTransformFilter

        specs: List[Tuple[Hashable, Callable[..., Optional[Any]]]] = []
        if api.ipAccess is not None:
            specs.append(
                (
                    ("ip-access", api.name, repr(api.ipAccess)),
                    lambda previous=None: makeIPAccessFilter(api.ipAccess),
                )
            )
        if api.cors is not None:
            specs.append(
                (
                    ("cors", api.name, repr(api.cors), api.method),
                    lambda previous=None: makeCORSFilter(api),
                )
            )
        if api.auth is not None:
            specs.append(
                (
                    ("auth", api.name, repr(api.auth)),
                    lambda previous=None: makeAuthFilter(api, lambda: self._authServices(reactor)),
                )
            )
        if api.acl is not None:
            specs.append(
                (("acl", api.name, repr(api.acl)), lambda previous=None: makeACLFilter(api))
            )
        specs.append(
            (
                ("circuit-breaker", api.name, repr(api.circuitBreaker)),
                lambda previous=None: makeAPIBreakerFilter(api, reactor, random, previous),
            )
        )
        specs.append(
            (
                ("rate-limit", api.name, repr((api.maxQPS, api.rateLimit))),
                lambda previous=None: makeRateLimitFilter(
                    api, reactor, buckets=buckets, previous=previous
                ),
            )
        )
        if api.transform is not None:
            specs.append(
                (
                    ("transform", api.name, repr(api.transform)),
                    lambda previous=None: makeTransformFilter(api),
                )
            )
        return specs

    def _authServices(self, reactor: Any) -> Any:
        """
        @return: the L{gateway.filters.auth.AuthServices} of this process
            (made on first use).
        """
        if self._auth is None:
            from gateway.filters.auth import AuthServices

            self._auth = AuthServices(reactor)
        return self._auth
