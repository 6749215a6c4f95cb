"""
The route tree that matches a request (method, host, path) to an API:
L{Router}, built from L{Route}s whose URL patterns L{gateway.model.urlpattern}
parses.  Matching is deterministic: per segment, a static segment beats a
typed parameter, which beats a plain parameter, which beats the wildcard,
with backtracking.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union
from urllib.parse import unquote

import attrs

__all__ = [
    "Match",
    "Route",
    "RouteConflict",
    "Router",
]
from gateway.model.urlpattern import (
    PARAM_TYPES,
    ParamSegment,
    Pattern,
    StaticSegment,
    _stripHost,
    normalizeHost,
    parsePattern,
)


def _toPattern(value: Union[str, Pattern]) -> Pattern:
    return parsePattern(value) if isinstance(value, str) else value


def _upper(value: str) -> str:
    return value.upper()


@attrs.frozen
class Route:
    """
    One entry of a L{Router}.

    @ivar pattern: the URL pattern (a string is parsed with L{parsePattern}).
    @ivar method: C{"*"} or an HTTP method (upper-cased).
    @ivar host: the host this route serves, C{*.example.com}, or L{None} for
        any host (normalised with L{normalizeHost}).
    @ivar value: what a match returns, opaque to the router.
    """

    pattern: Pattern = attrs.field(converter=_toPattern)
    method: str = attrs.field(default="*", converter=_upper)
    host: Optional[str] = attrs.field(default=None, converter=normalizeHost)
    value: Any = None


class Match:
    """
    The result of L{Router.match}.

    @ivar value: the matching L{Route}'s value.
    @ivar params: C{{name: decoded value}} of the pattern's parameters; the
        wildcard's rest of the path is under C{"*"}.
    """

    __slots__ = ("value", "params")

    def __init__(self, value: Any, params: Dict[str, str]) -> None:
        self.value = value
        self.params = params

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Match):
            return NotImplemented
        return self.value == other.value and self.params == other.params

    def __ne__(self, other: object) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Match(value={self.value!r}, params={self.params!r})"


def _describe(value: Any) -> str:
    name = getattr(value, "name", None)
    return repr(name if name is not None else value)


class RouteConflict(ValueError):
    """
    Two routes have the same canonical pattern, method and host, so one of
    them could never match.

    @ivar routes: the two L{Route}s, the one given first first.
    """

    def __init__(self, first: Route, second: Route) -> None:
        self.routes = (first, second)
        host = first.host if first.host is not None else "any host"
        super().__init__(
            f"{_describe(first.value)} and {_describe(second.value)} have the same URL pattern"
            f" {first.pattern.canonical()}, method {first.method} and host {host}"
        )


class _Node:
    """
    One position in the route tree.

    @ivar static: child nodes by decoded static text.
    @ivar typed: C{(check, child)} in the order they are tried.
    @ivar plain: the child of a plain parameter, or L{None}.
    @ivar wildcard: routes ending in C{*} here, by method, or L{None}.
    @ivar end: routes ending here, by method, or L{None}.
    """

    __slots__ = ("static", "typed", "plain", "wildcard", "end", "_typedByKey")

    def __init__(self) -> None:
        self.static: Dict[str, _Node] = {}
        self.typed: Tuple[Tuple[Callable[[str], Any], _Node], ...] = ()
        self.plain: Optional[_Node] = None
        self.wildcard: Optional[Dict[str, Route]] = None
        self.end: Optional[Dict[str, Route]] = None
        self._typedByKey: Dict[Tuple[int, str], Tuple[Callable[[str], Any], _Node]] = {}

    def add(self, route: Route) -> None:
        node = self
        for seg in route.pattern.segments:
            if isinstance(seg, StaticSegment):
                child = node.static.get(seg.text)
                if child is None:
                    child = node.static[seg.text] = _Node()
                node = child
            elif isinstance(seg, ParamSegment):
                if seg.type is None:
                    if node.plain is None:
                        node.plain = _Node()
                    node = node.plain
                else:
                    key = (PARAM_TYPES.index(seg.type), seg.regex or "")
                    entry = node._typedByKey.get(key)
                    if entry is None:
                        assert seg.check is not None
                        entry = node._typedByKey[key] = (seg.check, _Node())
                    node = entry[1]
            else:
                if node.wildcard is None:
                    node.wildcard = {}
                _addEnd(node.wildcard, route)
                return
        if node.end is None:
            node.end = {}
        _addEnd(node.end, route)

    def freeze(self) -> None:
        """
        Order the typed children of this node and all below it.
        """
        stack = [self]
        while stack:
            node = stack.pop()
            node.typed = tuple(entry for _, entry in sorted(node._typedByKey.items()))
            stack.extend(node.static.values())
            stack.extend(child for _, child in node.typed)
            if node.plain is not None:
                stack.append(node.plain)

    def clone(self) -> _Node:
        """
        @return: a copy of this node that shares its children.
        """
        copy = _Node()
        copy.static = dict(self.static)
        copy.typed = self.typed
        copy.plain = self.plain
        copy.wildcard = dict(self.wildcard) if self.wildcard is not None else None
        copy.end = dict(self.end) if self.end is not None else None
        copy._typedByKey = dict(self._typedByKey)
        return copy


class _Editor:
    """
    Changes a frozen tree without touching it: every node on the path of a
    changed route is copied once (path copying), the rest is shared, so a
    router being used by requests never sees a half-made change.
    """

    def __init__(self, root: _Node) -> None:
        self.root = root.clone()
        self._copies = {id(self.root)}

    def _own(self, node: _Node) -> _Node:
        if id(node) in self._copies:
            return node
        copy = node.clone()
        self._copies.add(id(copy))
        return copy

    def _path(self, route: Route) -> Tuple[_Node, Any]:
        """
        Copy the nodes down to where C{route} ends, creating missing ones.

        @return: the (owned) last node, and the wildcard segment or L{None}.
        """
        node = self.root
        for seg in route.pattern.segments:
            if isinstance(seg, StaticSegment):
                child = node.static.get(seg.text)
                child = _Node() if child is None else self._own(child)
                self._copies.add(id(child))
                node.static[seg.text] = child
            elif isinstance(seg, ParamSegment):
                if seg.type is None:
                    child = _Node() if node.plain is None else self._own(node.plain)
                    self._copies.add(id(child))
                    node.plain = child
                else:
                    key = (PARAM_TYPES.index(seg.type), seg.regex or "")
                    entry = node._typedByKey.get(key)
                    child = _Node() if entry is None else self._own(entry[1])
                    self._copies.add(id(child))
                    assert seg.check is not None
                    node._typedByKey[key] = (seg.check, child)
                    node.typed = tuple(e for _, e in sorted(node._typedByKey.items()))
            else:
                return node, seg
            node = child
        return node, None

    def remove(self, route: Route) -> None:
        node, wildcard = self._path(route)
        routes = node.wildcard if wildcard is not None else node.end
        if routes is not None and routes.get(route.method) is route:
            del routes[route.method]

    def add(self, route: Route) -> None:
        node, wildcard = self._path(route)
        if wildcard is not None:
            if node.wildcard is None:
                node.wildcard = {}
            _addEnd(node.wildcard, route)
        else:
            if node.end is None:
                node.end = {}
            _addEnd(node.end, route)


def _addEnd(routes: Dict[str, Route], route: Route) -> None:
    existing = routes.get(route.method)
    if existing is not None:
        raise RouteConflict(existing, route)
    routes[route.method] = route


def _pick(routes: Dict[str, Route], method: str) -> Optional[Route]:
    route = routes.get(method)
    if route is None:
        route = routes.get("*")
        if route is None and method == "HEAD":
            route = routes.get("GET")
    return route


def _search(
    node: _Node, segments: List[str], i: int, values: List[str], method: str
) -> Optional[Route]:
    """
    Depth-first search of the tree in priority order; C{values} collects the
    parameter values of the branch being tried.
    """
    if i == len(segments):
        if node.end is not None:
            route = _pick(node.end, method)
            if route is not None:
                return route
        if node.wildcard is not None:
            route = _pick(node.wildcard, method)
            if route is not None:
                values.append("")
                return route
        return None
    segment = segments[i]
    child = node.static.get(segment)
    if child is not None:
        route = _search(child, segments, i + 1, values, method)
        if route is not None:
            return route
    if segment:
        for check, child in node.typed:
            if check(segment):
                values.append(segment)
                route = _search(child, segments, i + 1, values, method)
                if route is not None:
                    return route
                values.pop()
        if node.plain is not None:
            values.append(segment)
            route = _search(node.plain, segments, i + 1, values, method)
            if route is not None:
                return route
            values.pop()
    if node.wildcard is not None:
        route = _pick(node.wildcard, method)
        if route is not None:
            values.append("/".join(segments[i:]))
            return route
    return None


class Router:
    """
    Matches requests to routes (see the module docstring for the rules).
    A router is immutable once built: build a new one to change the routes.

    @ivar routes: the routes, in the order given.
    """

    def __init__(self, routes: Iterable[Route]) -> None:
        """
        @param routes: the L{Route}s.
        @raise RouteConflict: when two routes have the same canonical pattern,
            method and host; its message names both routes' values (their
            C{name} when they have one).
        """
        self.routes = tuple(routes)
        self._anyHost = _Node()
        self._exactHosts: Dict[str, _Node] = {}
        self._wildcardHosts: Dict[str, _Node] = {}  # by suffix, ".example.com"
        for route in self.routes:
            host = route.host
            if host is None:
                tree = self._anyHost
            elif host.startswith("*."):
                tree = self._wildcardHosts.setdefault(host[1:], _Node())
            else:
                tree = self._exactHosts.setdefault(host, _Node())
            tree.add(route)
        self._anyHost.freeze()
        for tree in self._exactHosts.values():
            tree.freeze()
        for tree in self._wildcardHosts.values():
            tree.freeze()
        self._hasHosts = bool(self._exactHosts or self._wildcardHosts)

    def __len__(self) -> int:
        return len(self.routes)

    def updated(self, removed: Iterable[Route], added: Iterable[Route]) -> Router:
        """
        A router with some routes removed and others added, built by copying
        only the paths they touch: changing one route of 10,000 costs
        about one route's work.  This router is left as it was.

        @param removed: routes of this router (by identity).
        @raise RouteConflict: as the constructor.
        """
        removed = list(removed)
        added = list(added)
        gone = {id(route) for route in removed}
        new = Router.__new__(Router)
        new.routes = tuple(r for r in self.routes if id(r) not in gone) + tuple(added)
        editors: Dict[Tuple[str, Optional[str]], _Editor] = {}

        def editor(route: Route) -> _Editor:
            host = route.host
            key: Tuple[str, Optional[str]]
            if host is None:
                key = ("any", None)
            elif host.startswith("*."):
                key = ("wildcard", host[1:])
            else:
                key = ("exact", host)
            found = editors.get(key)
            if found is None:
                kind, name = key
                if name is None:
                    tree = self._anyHost
                else:
                    trees = self._wildcardHosts if kind == "wildcard" else self._exactHosts
                    tree = trees.get(name) or _Node()
                found = editors[key] = _Editor(tree)
            return found

        for route in removed:
            editor(route).remove(route)
        for route in added:
            editor(route).add(route)
        new._anyHost = self._anyHost
        new._exactHosts = dict(self._exactHosts)
        new._wildcardHosts = dict(self._wildcardHosts)
        for (kind, host), edit in editors.items():
            if kind == "any":
                new._anyHost = edit.root
            elif kind == "exact":
                new._exactHosts[host] = edit.root  # type: ignore[index]
            else:
                new._wildcardHosts[host] = edit.root  # type: ignore[index]
        new._hasHosts = bool(new._exactHosts or new._wildcardHosts)
        return new

    def match(self, method: str, host: Optional[str], path: str) -> Optional[Match]:
        """
        Find the route for a request.

        @param method: the request's method, e.g. C{"GET"}.
        @param host: the request's C{Host} header (a port is ignored), or
            L{None}.
        @param path: the raw request path, percent-encoded, without the query
            string.
        @return: the L{Match}, or L{None} when no route matches.
        """
        if not path.startswith("/"):
            return None
        if len(path) > 1 and path.endswith("/"):
            path = path[:-1]
        segments = path[1:].split("/") if len(path) > 1 else []
        if "%" in path:
            segments = [unquote(s) if "%" in s else s for s in segments]
            if "." in segments or ".." in segments:
                return None
        elif "." in path and ("." in segments or ".." in segments):
            return None
        values: List[str] = []
        if self._hasHosts and host:
            host = _stripHost(host)
            tree = self._exactHosts.get(host)
            if tree is not None:
                route = _search(tree, segments, 0, values, method)
                if route is not None:
                    return Match(route.value, dict(zip(route.pattern.paramNames, values)))
            if self._wildcardHosts:
                dot = host.find(".")
                while dot != -1:
                    tree = self._wildcardHosts.get(host[dot:])
                    if tree is not None:
                        route = _search(tree, segments, 0, values, method)
                        if route is not None:
                            return Match(route.value, dict(zip(route.pattern.paramNames, values)))
                    dot = host.find(".", dot + 1)
        route = _search(self._anyHost, segments, 0, values, method)
        if route is None:
            return None
        return Match(route.value, dict(zip(route.pattern.paramNames, values)))
