"""
Routing rules: which requests go (C{split}) or are copied (C{mirror}) to
another cluster.

A routing (L{gateway.model.resources.Routing}) has a list of conditions, all of which
must hold (AND; a routing without conditions matches every request), a
C{trafficRate} (the percentage of matching requests it takes), a target
C{cluster} and a C{strategy}.  Each routing is compiled
once per snapshot into a L{CompiledRouting}, so a request pays neither for
parsing rules nor for compiling regular expressions.

Where a condition reads its value (C{source}, C{name})
======================================================
  - C{header}: the request header C{name}; the name is case-insensitive.
    When the header is repeated, the first one counts.  The value is
    decoded as UTF-8 (bytes that are not UTF-8 become U+FFFD).  A header
    that is present but empty has the value C{""}; a name that cannot be a
    header name (a space, a colon...) is always missing.
  - C{cookie}: the cookie C{name} from the C{Cookie} header(s); cookie
    names are case-sensitive.  The value is taken as sent (quotes are not
    removed), decoded as UTF-8 like headers.
  - C{query}: the query parameter C{name}, percent-decoded, the first when
    it is repeated; C{?a=} gives C{a} the value C{""}.  (Read from
    C{request.args}: when the proxy site parses form bodies, form fields
    would be seen here too, so the proxy site does not parse them.)
  - C{path}: the path parameter C{name} of the API's URL pattern
    (C{/users/{id}}).
  - C{json}: a field of the JSON request body, named by a dotted path:
    C{user.id} is C{body["user"]["id"]}, C{items.0.sku} is
    C{body["items"][0]["sku"]} (a path step is an object key, or an array
    index when the value there is an array).  Keys that contain a dot
    cannot be addressed.  The field is missing when the request's
    C{Content-Type} is not JSON (C{application/json}, C{text/json} or any
    C{.../...+json}), when the body is larger than L{JSON_BODY_LIMIT}
    (64 KiB), when it is not valid JSON (C{NaN} and C{Infinity} are not
    JSON), or when the path leads nowhere.  The body is read only when a
    request reaches a C{json} condition (conditions on other sources are
    checked first and a failing one stops the evaluation), it is parsed at
    most once per request whatever the number of rules, and it is left
    intact for forwarding.
  - C{method}: the request method as the client sent it (C{GET},
    C{POST}...; methods are case-sensitive); C{name} is not used.

How a condition compares (C{op}, C{value})
==========================================
Values are compared as numbers when both sides are numbers, as strings
otherwise:
  - A string is a number when it is written as one: C{10}, C{-2.5},
    C{1e3}, C{.5} (no spaces, no C{_}, no C{inf} or C{nan}, at most 400
    characters).  So the header
    C{"10"} equals the condition value C{10}, C{10.0} and C{"1e1"}.
  - A JSON body value keeps its type: a JSON number is a number, a JSON
    string is a string (which may be written as a number, as above), a
    JSON boolean is the string C{"true"} or C{"false"} (so it equals the
    condition value C{true} as well as C{"true"}; booleans are not the
    numbers 1 and 0).  JSON C{null}, objects and arrays equal nothing; the
    only tests they pass are C{exists}, C{ne} and C{in} (C{null} is
    C{in} a list that holds C{null}).
  - A condition value C{true}/C{false} is the string C{"true"}/C{"false"}.

The operators:
  - C{exists}: the value is present (for C{json}, even C{null} is
    present; for headers and queries, even an empty value).
  - C{eq}: equal, as described above.
  - C{ne}: exactly C{not eq}; so a missing value, C{null}, an object or
    an array is C{ne} anything.  (Kong and APISIX agree: a rule
    C{ne "beta"} takes the requests that do not say C{beta}, including
    those that say nothing.)
  - C{lt}, C{le}, C{gt}, C{ge}: numeric order when both sides are
    numbers, otherwise the order of the strings (by code point, so
    C{"10" < "9"} when one side is not a number).
  - C{in}: the value C{eq} one of the list's elements.
  - C{match}: the regular expression C{value} is found anywhere in the
    value (as C{re.search}; anchor it with C{^...$} to match the whole
    value).  It is matched in linear time by L{gateway.model.regex}, which
    says what syntax is accepted.  Numbers are matched in their JSON
    spelling, booleans as C{true}/C{false}.
A missing value fails every operator except C{ne}.  A comparison between
values of mismatched types (an object with a number, say) is never an
error: it is false (and its C{ne} is true).

How much traffic a matching routing takes (C{trafficRate}, C{hashOn})
=====================================================================
  - C{trafficRate} 100: every matching request; 0: none.
  - Without C{hashOn}, each matching request is drawn at random, so about
    C{trafficRate} % of them are taken.
  - With C{hashOn} (C{ip}: the client address; C{header:NAME}: a request
    header; C{cookie:NAME}: a cookie), the decision is a hash of the
    routing's name and that key, so one client (user, device...) always
    lands on the same side, on every proxy, across restarts.  Raising the
    rate only moves clients from "not taken" to "taken", never back, so a
    canary can be widened step by step without flapping.  Renaming the
    routing reshuffles the clients.  A request without the key (no such
    header or cookie, or an empty one) is drawn at random.

Which routings apply, in what order
===================================
Routings scoped to an API (C{api} set) apply to that API's requests only;
global ones apply to every API.  L{orderRoutings} puts the scoped ones
first, then the global ones, each group sorted by name.  In that order,
the first C{split} routing that takes a request decides its cluster (later
split routings are not evaluated), and every C{mirror} routing that takes
it gets a copy of it (its answer is ignored); L{decideRoutings} does this.
A request that no split routing takes goes to the API's own nodes.
"""

from __future__ import annotations

import hashlib
import json
import random as _randomModule
import re
from typing import Any, Callable, Iterable, List, Optional, Tuple

import attrs

from gateway.model.regex import compileRegex
from gateway.model.resources import Condition, Routing

__all__ = [
    "JSON_BODY_LIMIT",
    "CompiledRouting",
    "RoutingDecision",
    "compileRouting",
    "orderRoutings",
    "applicableRoutings",
    "decideRoutings",
    "readJSONField",
]


#: The largest request body, in bytes, that C{json} conditions look into.
JSON_BODY_LIMIT = 65536


_MISSING = object()


_NUMBER_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\Z", re.ASCII)


_INTEGER_RE = re.compile(r"[+-]?\d+\Z", re.ASCII)


_INDEX_RE = re.compile(r"\d+\Z", re.ASCII)


_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")


_Getter = Callable[[Any], Any]


_Test = Callable[[Any], bool]


def _parseNumber(text: str) -> Any:
    """
    @return: the number C{text} spells (an L{int} when it is an integer, so
        that large integers compare exactly), or L{None}.
    """
    if len(text) > 400 or _NUMBER_RE.match(text) is None:
        return None
    try:
        if _INTEGER_RE.match(text) is not None:
            return int(text)
        return float(text)
    except ValueError:
        return None


def _textOf(value: Any) -> Optional[str]:
    """
    @return: the string form of a scalar value, or L{None} for C{null},
        objects and arrays.
    """
    kind = type(value)
    if kind is str:
        return value
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        try:
            return str(value)
        except ValueError:
            return None
    if kind is float:
        return repr(value)
    return None


def _numberOf(value: Any) -> Any:
    """
    @return: the number a value is or spells, or L{None}.
    """
    kind = type(value)
    if kind is str:
        return _parseNumber(value)
    if kind is int or kind is float:
        return value
    return None


def _operand(value: Any) -> Tuple[Optional[str], Any]:
    """
    @return: C{(text, number)} of a condition's value; either may be
        L{None} (a value that can be neither never compares equal).
    """
    if isinstance(value, bool):
        return ("true" if value else "false"), None
    if isinstance(value, (int, float)):
        return _textOf(value), value
    if isinstance(value, str):
        return value, _parseNumber(value)
    return None, None


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _headerGetter(name: str) -> _Getter:
    if _TOKEN_RE.match(name) is None:
        return lambda context: _MISSING
    encoded = name.lower().encode("ascii")

    def getHeader(context: Any) -> Any:
        values = context.request.requestHeaders.getRawHeaders(encoded)
        if not values:
            return _MISSING
        return _decode(values[0])

    return getHeader


def _parseCookieHeaders(headers: List[bytes]) -> dict:
    # The same rules as twisted.web.http.Request.parseCookies.
    cookies = {}
    for header in headers:
        for cookie in header.split(b";"):
            key, sep, value = cookie.lstrip().partition(b"=")
            if sep:
                cookies[key] = value
    return cookies


def _cookieGetter(name: str) -> _Getter:
    encoded = name.encode("utf-8")

    def getCookie(context: Any) -> Any:
        request = context.request
        value = request.getCookie(encoded)
        if value is None:
            if request.received_cookies:
                return _MISSING
            # A request that did not come through an HTTP channel has not
            # had its Cookie headers parsed.
            headers = request.requestHeaders.getRawHeaders(b"cookie")
            if not headers:
                return _MISSING
            value = _parseCookieHeaders(headers).get(encoded)
            if value is None:
                return _MISSING
        return _decode(value)

    return getCookie


def _queryGetter(name: str) -> _Getter:
    encoded = name.encode("utf-8")

    def getQuery(context: Any) -> Any:
        args = context.request.args
        values = args.get(encoded) if args else None
        if not values:
            return _MISSING
        return _decode(values[0])

    return getQuery


def _pathGetter(name: str) -> _Getter:
    def getPath(context: Any) -> Any:
        params = context.params
        if not params:
            return _MISSING
        value = params.get(name)
        return _MISSING if value is None else value

    return getPath


def _methodGetter(name: str) -> _Getter:
    def getMethod(context: Any) -> Any:
        method = context.request.method
        if isinstance(method, bytes):
            return method.decode("ascii", "replace")
        return method

    return getMethod


def _isJSONType(contentType: bytes) -> bool:
    mediaType = contentType.split(b";", 1)[0].strip().lower()
    return (
        mediaType == b"application/json"
        or mediaType == b"text/json"
        or (b"/" in mediaType and mediaType.endswith(b"+json"))
    )


def _refuseConstant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _loadJSONBody(context: Any, limit: int) -> Tuple[bool, Any]:
    """
    Parse a request's body as JSON (through the exchange's body accessor,
    which leaves it whole for forwarding).

    @param context: the request's L{gateway.pipeline.exchange.Exchange}.
    @return: C{(True, document)}, or C{(False, None)} when the body is not
        JSON, is larger than C{limit} bytes, or cannot be read.
    """
    contentTypes = context.request.requestHeaders.getRawHeaders(b"content-type")
    if not contentTypes or not _isJSONType(contentTypes[0]):
        return False, None
    try:
        data = context.body.read(limit)
    except (OSError, ValueError):
        return False, None
    if data is None:
        return False, None
    try:
        return True, json.loads(data, parse_constant=_refuseConstant)
    except (ValueError, RecursionError):
        return False, None


def _pathSteps(dottedPath: str) -> Tuple[Tuple[str, Optional[int]], ...]:
    return tuple(
        (step, int(step) if _INDEX_RE.match(step) else None) for step in dottedPath.split(".")
    )


def _walk(document: Any, steps: Tuple[Tuple[str, Optional[int]], ...]) -> Any:
    for key, index in steps:
        kind = type(document)
        if kind is dict:
            try:
                document = document[key]
            except KeyError:
                return _MISSING
        elif kind is list:
            if index is None or index >= len(document):
                return _MISSING
            document = document[index]
        else:
            return _MISSING
    return document


def readJSONField(context: Any, dottedPath: str, limit: int = JSON_BODY_LIMIT) -> Tuple[bool, Any]:
    """
    Read one field of a request's JSON body.

    @param context: the request's L{gateway.pipeline.exchange.Exchange}.
    @param dottedPath: the field, e.g. C{user.id} or C{items.0.sku}.
    @param limit: the largest body, in bytes, to look into.
    @return: C{(True, value)} (C{value} may be L{None} for a JSON C{null}),
        or C{(False, None)} when the field is missing, the body is not JSON
        or not declared as JSON, or the body is larger than C{limit}.
    """
    found, document = _loadJSONBody(context, limit)
    if not found:
        return False, None
    value = _walk(document, _pathSteps(dottedPath))
    if value is _MISSING:
        return False, None
    return True, value


def _jsonGetter(name: str, limit: int = JSON_BODY_LIMIT) -> _Getter:
    steps = _pathSteps(name)

    def getJSON(context: Any) -> Any:
        cached = context.jsonBody
        if cached is None or cached[0] != limit:
            found, document = _loadJSONBody(context, limit)
            cached = context.jsonBody = (limit, found, document)
        if not cached[1]:
            return _MISSING
        return _walk(cached[2], steps)

    return getJSON


_SOURCES = {
    "header": _headerGetter,
    "cookie": _cookieGetter,
    "query": _queryGetter,
    "path": _pathGetter,
    "json": _jsonGetter,
    "method": _methodGetter,
}


def _eqPredicate(expected: Any) -> _Test:
    text, number = _operand(expected)
    if text is None and number is None:
        return lambda value: False
    if number is None:
        return lambda value: _textOf(value) == text

    def eq(value: Any) -> bool:
        actual = _numberOf(value)
        if actual is not None:
            return bool(actual == number)
        return _textOf(value) == text

    return eq


def _orderPredicate(expected: Any, compare: Callable[[Any, Any], bool]) -> _Test:
    text, number = _operand(expected)

    def order(value: Any) -> bool:
        if number is not None:
            actual = _numberOf(value)
            if actual is not None:
                return compare(actual, number)
        actualText = _textOf(value)
        if actualText is None or text is None:
            return False
        return compare(actualText, text)

    return order


def _inPredicate(expected: Any) -> _Test:
    texts = set()
    numbers = set()
    hasNull = False
    for element in expected:
        if element is None:
            hasNull = True
            continue
        text, number = _operand(element)
        if text is not None:
            texts.add(text)
        if number is not None:
            numbers.add(number)

    def isIn(value: Any) -> bool:
        if value is None:
            return hasNull
        if numbers:
            actual = _numberOf(value)
            if actual is not None and actual in numbers:
                return True
        return _textOf(value) in texts

    return isIn


def _matchPredicate(expected: Any) -> _Test:
    search = compileRegex(expected, "value").matches

    def match(value: Any) -> bool:
        text = _textOf(value)
        return text is not None and search(text)

    return match


def _lt(a: Any, b: Any) -> bool:
    return bool(a < b)


def _le(a: Any, b: Any) -> bool:
    return bool(a <= b)


def _gt(a: Any, b: Any) -> bool:
    return bool(a > b)


def _ge(a: Any, b: Any) -> bool:
    return bool(a >= b)


_ORDERS = {"lt": _lt, "le": _le, "gt": _gt, "ge": _ge}


def _compileCondition(condition: Condition, jsonBodyLimit: int = JSON_BODY_LIMIT) -> _Test:
    """
    @param jsonBodyLimit: the largest body C{json} conditions look into.
    @return: a callable that takes a L{gateway.pipeline.exchange.Exchange} and
        says whether the condition holds.
    """
    if condition.source == "json":
        getter = _jsonGetter(condition.name, jsonBodyLimit)
    else:
        getter = _SOURCES[condition.source](condition.name)
    op = condition.op
    if op == "exists":

        def exists(context: Any) -> bool:
            return getter(context) is not _MISSING

        return exists

    if op in _ORDERS:
        predicate = _orderPredicate(condition.value, _ORDERS[op])
    elif op == "in":
        predicate = _inPredicate(condition.value)
    elif op == "match":
        predicate = _matchPredicate(condition.value)
    else:
        predicate = _eqPredicate(condition.value)

    if op == "ne":
        eq = predicate

        def ne(context: Any) -> bool:
            value = getter(context)
            return value is _MISSING or not eq(value)

        return ne

    def test(context: Any) -> bool:
        value = getter(context)
        return value is not _MISSING and predicate(value)

    return test


def _hashKeyGetter(hashOn: str) -> Callable[[Any], Optional[str]]:
    if hashOn == "ip":
        return lambda context: context.clientIP or None
    kind, _, name = hashOn.partition(":")
    getter = _headerGetter(name) if kind == "header" else _cookieGetter(name)

    def getKey(context: Any) -> Optional[str]:
        value = getter(context)
        if value is _MISSING or not value:
            return None
        return value

    return getKey


def _bucket(salt: bytes, key: str) -> float:
    """
    @return: a stable number in [0, 100) for C{key}, the same in every
        process (unlike L{hash}, which Python salts per process).
    """
    digest = hashlib.blake2b(salt + key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") * (100.0 / 18446744073709551616.0)


@attrs.frozen(eq=False)
class CompiledRouting:
    """
    A routing ready to be evaluated against requests; built by
    L{compileRouting}, once per snapshot.

    @ivar routing: the L{Routing} it was compiled from.
    @ivar usesBody: whether a condition reads the JSON body.
    @ivar isMirror: whether the strategy is C{mirror} (else C{split}).
    """

    routing: Routing
    usesBody: bool
    isMirror: bool
    _tests: Tuple[_Test, ...] = attrs.field(repr=False)
    _rate: float = attrs.field(repr=False)
    _hashKey: Optional[Callable[[Any], Optional[str]]] = attrs.field(repr=False)
    _salt: bytes = attrs.field(repr=False)
    _random: _randomModule.Random = attrs.field(repr=False)

    def matches(self, context: Any) -> bool:
        """
        @param context: the L{gateway.pipeline.exchange.Exchange} of a request.
        @return: whether the request meets every condition.
        """
        for test in self._tests:
            if not test(context):
                return False
        return True

    def selects(self, context: Any) -> bool:
        """
        @param context: the L{gateway.pipeline.exchange.Exchange} of a request.
        @return: whether this routing takes the request: it matches and
            falls within the C{trafficRate} share (sticky per C{hashOn}
            key when one is set).
        """
        rate = self._rate
        if rate <= 0.0 or not self.matches(context):
            return False
        if rate >= 100.0:
            return True
        if self._hashKey is not None:
            key = self._hashKey(context)
            if key is not None:
                return _bucket(self._salt, key) < rate
        return self._random.random() * 100.0 < rate


def compileRouting(
    routing: Routing,
    random: Optional[_randomModule.Random] = None,
    jsonBodyLimit: int = JSON_BODY_LIMIT,
) -> CompiledRouting:
    """
    Compile a routing's conditions into small callables.

    @param routing: a validated L{Routing}.
    @param random: where random traffic-share draws come from (tests
        inject a seeded one); a fresh L{random.Random} by default.
    @param jsonBodyLimit: the largest body, in bytes, that C{json}
        conditions look into.
    @return: the L{CompiledRouting}.
    """
    conditions = sorted(
        routing.conditions,
        # Cheap conditions first: a request that fails one never has its
        # body read.  The sort is stable: rules keep their order otherwise.
        key=lambda condition: condition.source == "json",
    )
    return CompiledRouting(
        routing=routing,
        usesBody=any(condition.source == "json" for condition in conditions),
        isMirror=routing.strategy == "mirror",
        tests=tuple(_compileCondition(condition, jsonBodyLimit) for condition in conditions),
        rate=float(routing.trafficRate),
        hashKey=_hashKeyGetter(routing.hashOn) if routing.hashOn else None,
        salt=routing.name.encode("utf-8") + b"\0",
        random=random if random is not None else _randomModule.Random(),
    )


def orderRoutings(routings: Iterable[CompiledRouting]) -> Tuple[CompiledRouting, ...]:
    """
    Put routings in evaluation order: those scoped to an API first, then
    the global ones, each group by name.

    @return: a tuple, in that order.
    """
    return tuple(
        sorted(routings, key=lambda compiled: (compiled.routing.api is None, compiled.routing.name))
    )


def applicableRoutings(
    ordered: Iterable[CompiledRouting], apiName: Optional[str]
) -> Tuple[CompiledRouting, ...]:
    """
    @param ordered: routings as L{orderRoutings} gives them.
    @param apiName: the name of the API a request matched.
    @return: the routings that apply to that API's requests (the global
        ones and those scoped to it), in the same order; a snapshot
        computes this once per API.
    """
    return tuple(
        compiled
        for compiled in ordered
        if compiled.routing.api is None or compiled.routing.api == apiName
    )


@attrs.frozen
class RoutingDecision:
    """
    What the routings decided for one request.

    @ivar split: the routing whose cluster serves the request, or L{None}
        for the API's own nodes.
    @ivar mirrors: the routings whose clusters get a copy, in order.
    """

    split: Optional[CompiledRouting]
    mirrors: Tuple[CompiledRouting, ...]


_NO_DECISION = RoutingDecision(None, ())


def decideRoutings(routings: Iterable[CompiledRouting], context: Any) -> RoutingDecision:
    """
    Evaluate routings in order for one request: the first C{split} routing
    that selects it decides its cluster (later ones are not evaluated), and
    every C{mirror} routing that selects it gets a copy.

    @param routings: the applicable routings, in evaluation order
        (L{applicableRoutings}).
    @param context: the request's L{gateway.pipeline.exchange.Exchange}.
    @return: a L{RoutingDecision}.
    """
    split = None
    mirrors: List[CompiledRouting] = []
    for compiled in routings:
        if compiled.isMirror:
            if compiled.selects(context):
                mirrors.append(compiled)
        elif split is None and compiled.selects(context):
            split = compiled
    if split is None and not mirrors:
        return _NO_DECISION
    return RoutingDecision(split, tuple(mirrors))
