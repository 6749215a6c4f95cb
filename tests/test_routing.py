"""
Tests for L{gateway.routing.rules}.

Requests are real L{twisted.web.server.Request}s: raw HTTP bytes go through
a L{twisted.web.server.Site}'s own L{twisted.web.http.HTTPChannel}, which
parses the request line, headers, cookies, query and body exactly as in
production; the request records itself instead of rendering.

Traffic shares are checked over many requests against bounds of three
standard deviations of the binomial count, M{3 * sqrt(n * p * (1 - p))},
with seeded L{Random}s so the tests are deterministic.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from io import BytesIO
from random import Random
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import server
from twisted.web.resource import Resource
from twisted.web.test.requesthelper import DummyChannel

from gateway.model.resources import Routing, parseResource
from gateway.model.schema import ValidationError
from gateway.pipeline.exchange import Exchange
from gateway.routing.rules import (
    JSON_BODY_LIMIT,
    CompiledRouting,
    RoutingDecision,
    applicableRoutings,
    compileRouting,
    decideRoutings,
    orderRoutings,
    readJSONField,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class CapturedRequest(server.Request):
    """
    A request that, once the channel has parsed it, records itself on its
    site instead of rendering a resource.
    """

    def process(self) -> None:
        self.channel.site.captured.append(self)


def makeRequest(
    method: bytes = b"GET",
    uri: bytes = b"/",
    headers: Sequence[Tuple[bytes, bytes]] = (),
    body: Optional[bytes] = None,
) -> server.Request:
    """
    Parse one raw HTTP/1.1 request through a real channel.

    @param headers: extra request headers, in order.
    @param body: the body; a C{Content-Length} header is added for it.
    @return: the parsed L{server.Request}.
    """
    site = server.Site(
        Resource(), requestFactory=CapturedRequest, parsePOSTFormSubmission=False, reactor=Clock()
    )
    site.captured = []  # type: ignore[attr-defined]
    channel = site.buildProtocol(IPv4Address("TCP", "1.2.3.4", 40000))
    channel.makeConnection(StringTransport())
    lines = [method + b" " + uri + b" HTTP/1.1", b"Host: example.com"]
    lines.extend(name + b": " + value for name, value in headers)
    if body is not None:
        lines.append(b"Content-Length: " + str(len(body)).encode("ascii"))
    channel.dataReceived(b"\r\n".join(lines) + b"\r\n\r\n" + (body or b""))
    [request] = site.captured  # type: ignore[attr-defined]
    return request


def jsonRequest(document: Any, contentType: bytes = b"application/json") -> server.Request:
    """
    @return: a POST whose body is C{document} as JSON.
    """
    return makeRequest(
        b"POST",
        b"/",
        [(b"Content-Type", contentType)],
        json.dumps(document).encode("utf-8"),
    )


def makeContext(
    request: Any, params: Optional[Dict[str, str]] = None, clientIP: str = "1.2.3.4"
) -> Exchange:
    """
    @return: the context the proxy would hand to the routing filter.
    """
    return Exchange(
        request,
        snapshot=None,
        api=None,
        params=params if params is not None else {},
        clientIP=clientIP,
        startTime=0.0,
        upstreamHeaders=None,
    )


def condition(source: str, op: str, name: str = "", value: Any = None) -> Dict[str, Any]:
    """
    @return: the JSON of one condition.
    """
    data: Dict[str, Any] = {"source": source, "op": op, "name": name}
    if op != "exists":
        data["value"] = value
    return data


def makeRouting(
    conditions: Iterable[Dict[str, Any]] = (), name: str = "canary", **fields: Any
) -> Routing:
    """
    @return: a routing parsed from JSON, as the store would give it.
    """
    data = {"name": name, "cluster": "canary-cluster", "conditions": list(conditions)}
    data.update(fields)
    return parseResource("routings", data)


def holds(cond: Dict[str, Any], request: Any, params: Optional[Dict[str, str]] = None) -> bool:
    """
    @return: whether one condition holds for a request.
    """
    return compileRouting(makeRouting([cond])).matches(makeContext(request, params))


class ScriptedRandom:
    """
    A stand-in for L{Random} that returns given draws and counts them; a
    draw beyond the script is an error, so a test sees unexpected draws.
    """

    def __init__(self, draws: Sequence[float] = ()) -> None:
        self.draws = list(draws)
        self.count = 0

    def random(self) -> float:
        self.count += 1
        return self.draws.pop(0)


def threeSigma(n: int, percent: float) -> float:
    p = percent / 100.0
    return 3 * math.sqrt(n * p * (1 - p))


class HeaderSourceTests(SynchronousTestCase):
    """
    Conditions on request headers.
    """

    def test_caseInsensitiveName(self) -> None:
        """
        A header condition finds the header whatever the case of its name
        on either side.
        """
        request = makeRequest(headers=[(b"x-USER-group", b"beta")])
        self.assertTrue(holds(condition("header", "eq", "X-User-Group", "beta"), request))
        self.assertTrue(holds(condition("header", "eq", "x-user-group", "beta"), request))

    def test_valueIsCaseSensitive(self) -> None:
        """
        Header values are compared as sent.
        """
        request = makeRequest(headers=[(b"X-Group", b"Beta")])
        self.assertFalse(holds(condition("header", "eq", "X-Group", "beta"), request))

    def test_firstValue(self) -> None:
        """
        When a header is repeated, the first occurrence counts.
        """
        request = makeRequest(headers=[(b"X-Group", b"first"), (b"X-Group", b"second")])
        self.assertTrue(holds(condition("header", "eq", "X-Group", "first"), request))
        self.assertFalse(holds(condition("header", "eq", "X-Group", "second"), request))

    def test_emptyValueIsPresent(self) -> None:
        """
        A header sent with an empty value exists and equals C{""}.
        """
        request = makeRequest(headers=[(b"X-Empty", b"")])
        self.assertTrue(holds(condition("header", "exists", "X-Empty"), request))
        self.assertTrue(holds(condition("header", "eq", "X-Empty", ""), request))

    def test_missing(self) -> None:
        """
        A missing header fails every operator except C{ne}.
        """
        request = makeRequest()
        for op, value in [
            ("exists", None),
            ("eq", "x"),
            ("lt", "x"),
            ("le", 1),
            ("gt", 1),
            ("ge", "x"),
            ("in", ["x", ""]),
            ("match", ".*"),
        ]:
            self.assertFalse(holds(condition("header", op, "X-None", value), request), op)
        self.assertTrue(holds(condition("header", "ne", "X-None", "x"), request))

    def test_invalidName(self) -> None:
        """
        A name that cannot be a header name is refused when the rule is
        parsed, naming the field, so it can never silently match nothing.
        """
        for name in ("bad name", "X-A:", "caf\u00e9"):
            with self.assertRaises(ValidationError) as e:
                parseResource(
                    "routings",
                    {
                        "name": "r",
                        "cluster": "c",
                        "conditions": [condition("header", "ne", name, "1")],
                    },
                )
            self.assertEqual(e.exception.field, "conditions[0].name")

    def test_notUTF8(self) -> None:
        """
        Header bytes that are not UTF-8 become U+FFFD; UTF-8 is decoded.
        """
        request = makeRequest(headers=[(b"X-Name", b"caf\xc3\xa9 \xff")])
        self.assertTrue(holds(condition("header", "eq", "X-Name", "caf\u00e9 \ufffd"), request))


class CookieSourceTests(SynchronousTestCase):
    """
    Conditions on cookies.
    """

    def test_cookies(self) -> None:
        """
        Each cookie of a C{Cookie} header, and of several C{Cookie}
        headers, can be tested by name.
        """
        request = makeRequest(
            headers=[(b"Cookie", b"session=abc; group=beta"), (b"Cookie", b"lang=fr")]
        )
        self.assertTrue(holds(condition("cookie", "eq", "group", "beta"), request))
        self.assertTrue(holds(condition("cookie", "eq", "session", "abc"), request))
        self.assertTrue(holds(condition("cookie", "eq", "lang", "fr"), request))

    def test_nameIsCaseSensitive(self) -> None:
        """
        Cookie names are case-sensitive, unlike header names.
        """
        request = makeRequest(headers=[(b"Cookie", b"Group=beta")])
        self.assertTrue(holds(condition("cookie", "exists", "Group"), request))
        self.assertFalse(holds(condition("cookie", "exists", "group"), request))

    def test_missing(self) -> None:
        """
        A cookie that was not sent is missing, with or without other
        cookies.
        """
        self.assertFalse(holds(condition("cookie", "exists", "a"), makeRequest()))
        withOther = makeRequest(headers=[(b"Cookie", b"b=1")])
        self.assertFalse(holds(condition("cookie", "eq", "a", "1"), withOther))
        self.assertTrue(holds(condition("cookie", "ne", "a", "1"), withOther))

    def test_valueAsSent(self) -> None:
        """
        A cookie value is taken as sent: quotes stay, an empty value is
        present, an C{=} inside the value is kept.
        """
        request = makeRequest(headers=[(b"Cookie", b'q="x y"; e=; t=a=b')])
        self.assertTrue(holds(condition("cookie", "eq", "q", '"x y"'), request))
        self.assertTrue(holds(condition("cookie", "eq", "e", ""), request))
        self.assertTrue(holds(condition("cookie", "eq", "t", "a=b"), request))

    def test_unparsedCookieHeader(self) -> None:
        """
        A request whose C{Cookie} header was never parsed by a channel
        (C{received_cookies} empty) still has its cookies read.
        """
        request = server.Request(DummyChannel(), False)
        request.requestHeaders.setRawHeaders(b"Cookie", [b"a=1; group=beta"])
        self.assertEqual(request.received_cookies, {})
        self.assertTrue(holds(condition("cookie", "eq", "group", "beta"), request))
        self.assertFalse(holds(condition("cookie", "exists", "other"), request))


class QuerySourceTests(SynchronousTestCase):
    """
    Conditions on query parameters.
    """

    def test_value(self) -> None:
        """
        A query parameter is percent-decoded.
        """
        request = makeRequest(uri=b"/p?name=caf%C3%A9%20au+lait&v=2")
        self.assertTrue(holds(condition("query", "eq", "name", "caf\u00e9 au lait"), request))
        self.assertTrue(holds(condition("query", "eq", "v", 2), request))

    def test_firstValue(self) -> None:
        """
        When a parameter is repeated, the first occurrence counts.
        """
        request = makeRequest(uri=b"/p?v=1&v=2")
        self.assertTrue(holds(condition("query", "eq", "v", "1"), request))
        self.assertFalse(holds(condition("query", "eq", "v", "2"), request))

    def test_blankIsPresent(self) -> None:
        """
        C{?a=} gives C{a} the value C{""}.
        """
        request = makeRequest(uri=b"/p?a=")
        self.assertTrue(holds(condition("query", "exists", "a"), request))
        self.assertTrue(holds(condition("query", "eq", "a", ""), request))

    def test_missing(self) -> None:
        """
        A parameter that was not sent is missing, with or without a query
        string.
        """
        self.assertFalse(holds(condition("query", "exists", "a"), makeRequest(uri=b"/p")))
        self.assertFalse(holds(condition("query", "exists", "a"), makeRequest(uri=b"/p?b=1")))
        self.assertTrue(holds(condition("query", "ne", "a", "1"), makeRequest(uri=b"/p?b=1")))


class PathSourceTests(SynchronousTestCase):
    """
    Conditions on path parameters.
    """

    def test_param(self) -> None:
        """
        A path parameter from the URL pattern match is tested by name.
        """
        request = makeRequest(uri=b"/users/42")
        params = {"id": "42"}
        self.assertTrue(holds(condition("path", "eq", "id", 42), request, params))
        self.assertTrue(holds(condition("path", "gt", "id", 9), request, params))
        self.assertFalse(holds(condition("path", "exists", "other"), request, params))
        self.assertFalse(holds(condition("path", "exists", "id"), request, {}))


class MethodSourceTests(SynchronousTestCase):
    """
    Conditions on the request method.
    """

    def test_method(self) -> None:
        """
        The method is compared as sent; the condition's name is not used.
        """
        request = makeRequest(b"DELETE", b"/x")
        self.assertTrue(holds(condition("method", "eq", "", "DELETE"), request))
        self.assertTrue(holds(condition("method", "in", "ignored", ["PUT", "DELETE"]), request))
        self.assertFalse(holds(condition("method", "eq", "", "delete"), request))
        self.assertTrue(holds(condition("method", "exists"), request))


class ComparisonTests(SynchronousTestCase):
    """
    The operators on string values (headers, cookies, queries, paths).
    """

    def check(self, op: str, actual: str, expected: Any) -> bool:
        request = makeRequest(headers=[(b"X-V", actual.encode("utf-8"))])
        return holds(condition("header", op, "X-V", expected), request)

    def test_eqNumeric(self) -> None:
        """
        When both sides are numbers they are compared as numbers, whatever
        their spelling.
        """
        for actual, expected in [
            ("10", 10),
            ("10", 10.0),
            ("10", "10.0"),
            ("10.0", 10),
            ("1e1", "10"),
            ("010", 10),
            ("-2.5", -2.5),
            (".5", 0.5),
            ("+3", 3),
        ]:
            self.assertTrue(self.check("eq", actual, expected), (actual, expected))
            self.assertFalse(self.check("ne", actual, expected), (actual, expected))

    def test_eqString(self) -> None:
        """
        When either side is not a number the strings are compared exactly.
        """
        self.assertTrue(self.check("eq", "beta", "beta"))
        self.assertFalse(self.check("eq", "beta", "Beta"))
        self.assertFalse(self.check("eq", "abc", 10))
        self.assertTrue(self.check("ne", "abc", 10))
        # Spaces, underscores and words are not numbers.
        spaced = {"v": " 10"}
        self.assertFalse(holds(condition("path", "eq", "v", 10), makeRequest(), spaced))
        self.assertFalse(self.check("eq", "1_0", 10))
        self.assertFalse(self.check("eq", "infinity", "inf"))
        self.assertTrue(self.check("eq", "nan", "nan"))

    def test_largeIntegersExact(self) -> None:
        """
        Integers are compared exactly, beyond a float's precision.
        """
        self.assertFalse(self.check("eq", "9007199254740993", 9007199254740992))
        self.assertTrue(self.check("gt", "9007199254740993", 9007199254740992))
        self.assertTrue(self.check("eq", "9007199254740993", "9007199254740993"))

    def test_booleanConditionValue(self) -> None:
        """
        A condition value C{true}/C{false} is the string C{"true"}/C{"false"},
        not a number.
        """
        self.assertTrue(self.check("eq", "true", True))
        self.assertTrue(self.check("eq", "false", False))
        self.assertFalse(self.check("eq", "1", True))
        self.assertFalse(self.check("eq", "True", True))

    def test_orderNumeric(self) -> None:
        """
        C{lt le gt ge} order numbers numerically: C{9 < 10} although
        C{"9" > "10"} as strings.
        """
        self.assertTrue(self.check("lt", "9", 10))
        self.assertTrue(self.check("lt", "9", "10"))
        self.assertFalse(self.check("gt", "9", "10"))
        self.assertTrue(self.check("le", "10", 10.0))
        self.assertTrue(self.check("ge", "10", 10))
        self.assertFalse(self.check("lt", "10", 10))
        self.assertFalse(self.check("gt", "10", 10))
        self.assertTrue(self.check("gt", "1e3", 999.5))

    def test_orderString(self) -> None:
        """
        When either side is not a number, C{lt le gt ge} order the strings
        by code point.
        """
        self.assertTrue(self.check("lt", "apple", "banana"))
        self.assertTrue(self.check("gt", "b", "a"))
        self.assertTrue(self.check("le", "a", "a"))
        self.assertTrue(self.check("ge", "a", "a"))
        # "v10" is not a number: string order puts "v10" before "v9".
        self.assertTrue(self.check("lt", "v10", "v9"))
        self.assertTrue(self.check("lt", "10", "9x"))
        self.assertFalse(self.check("lt", "abc", 10))

    def test_in(self) -> None:
        """
        C{in} is C{eq} against any element of the list.
        """
        self.assertTrue(self.check("in", "b", ["a", "b"]))
        self.assertFalse(self.check("in", "c", ["a", "b"]))
        self.assertTrue(self.check("in", "2", [1, 2.0]))
        self.assertTrue(self.check("in", "2.0", ["2"]))
        self.assertTrue(self.check("in", "true", [True]))
        self.assertTrue(self.check("in", "x", [None, {"a": 1}, [1], "x"]))
        self.assertFalse(self.check("in", "x", [None, {"a": 1}, ["x"]]))
        self.assertFalse(self.check("in", "x", []))

    def test_match(self) -> None:
        """
        C{match} searches the regular expression anywhere in the value;
        anchors make it match the whole value.
        """
        self.assertTrue(self.check("match", "hello world", "o w"))
        self.assertFalse(self.check("match", "hello world", "^world"))
        self.assertTrue(self.check("match", "user-1234", r"^user-\d+$"))
        self.assertFalse(self.check("match", "user-12a", r"^user-\d+$"))
        self.assertTrue(self.check("match", "Beta", "(?i)^beta$"))

    def test_exists(self) -> None:
        """
        C{exists} holds for any present value.
        """
        self.assertTrue(self.check("exists", "anything", None))


class JSONSourceTests(SynchronousTestCase):
    """
    Conditions on fields of a JSON request body.
    """

    document = {
        "user": {"id": 42, "name": "ada", "vip": True, "score": 9.5, "nick": None},
        "items": [{"sku": "A1"}, {"sku": "B2", "qty": "3"}],
        "0": "key zero",
        "tags": [],
    }

    def check(self, op: str, path: str, value: Any = None, document: Any = None) -> bool:
        request = jsonRequest(self.document if document is None else document)
        return holds(condition("json", op, path, value), request)

    def test_nested(self) -> None:
        """
        A dotted path walks into nested objects.
        """
        self.assertTrue(self.check("eq", "user.id", 42))
        self.assertTrue(self.check("eq", "user.name", "ada"))
        self.assertFalse(self.check("exists", "user.email"))
        self.assertFalse(self.check("exists", "user.id.more"))

    def test_arrays(self) -> None:
        """
        In an array, a path step is an index; a step that is not an index,
        or out of range, is missing.
        """
        self.assertTrue(self.check("eq", "items.0.sku", "A1"))
        self.assertTrue(self.check("eq", "items.1.qty", 3))
        self.assertFalse(self.check("exists", "items.2.sku"))
        self.assertFalse(self.check("exists", "items.x"))
        self.assertFalse(self.check("exists", "items.-1"))
        self.assertFalse(self.check("exists", "tags.0"))
        self.assertTrue(self.check("eq", "1", "b", document=["a", "b"]))

    def test_digitKeyInObject(self) -> None:
        """
        In an object, a step made of digits is a key.
        """
        self.assertTrue(self.check("eq", "0", "key zero"))

    def test_null(self) -> None:
        """
        A JSON C{null} exists, equals nothing, is C{ne} anything and is
        C{in} a list holding C{null}.
        """
        self.assertTrue(self.check("exists", "user.nick"))
        self.assertFalse(self.check("eq", "user.nick", "null"))
        self.assertTrue(self.check("ne", "user.nick", "null"))
        self.assertFalse(self.check("match", "user.nick", ".*"))
        self.assertTrue(self.check("in", "user.nick", ["a", None]))
        self.assertFalse(self.check("in", "user.nick", ["a", "null"]))
        self.assertFalse(self.check("lt", "user.nick", 1))

    def test_types(self) -> None:
        """
        JSON numbers compare numerically with numbers and numeric strings;
        JSON strings like header values; booleans as C{true}/C{false},
        never as 1 and 0.
        """
        self.assertTrue(self.check("eq", "user.id", "42"))
        self.assertTrue(self.check("eq", "user.id", 42.0))
        self.assertTrue(self.check("gt", "user.score", 9))
        self.assertTrue(self.check("lt", "user.score", "10"))
        self.assertTrue(self.check("eq", "user.vip", True))
        self.assertTrue(self.check("eq", "user.vip", "true"))
        self.assertFalse(self.check("eq", "user.vip", 1))
        self.assertFalse(self.check("eq", "user.id", True, document={"user": {"id": 1}}))
        self.assertTrue(self.check("in", "user.id", [1, 42]))
        self.assertTrue(self.check("match", "user.score", r"^9\.5$"))
        self.assertTrue(self.check("match", "user.vip", "^true$"))

    def test_containersMismatch(self) -> None:
        """
        Objects and arrays equal nothing and have no order; only C{exists}
        and C{ne} hold for them.
        """
        for path in ("user", "items"):
            self.assertTrue(self.check("exists", path))
            self.assertTrue(self.check("ne", path, "x"))
            for op, value in [
                ("eq", "x"),
                ("lt", 1),
                ("ge", ""),
                ("in", ["x", 1]),
                ("match", ".*"),
            ]:
                self.assertFalse(self.check(op, path, value), (path, op))

    def test_bodyStillReadable(self) -> None:
        """
        After a JSON condition, the body is at its start, so it can still be
        forwarded in full.
        """
        body = json.dumps(self.document).encode("utf-8")
        request = makeRequest(b"POST", b"/", [(b"Content-Type", b"application/json")], body)
        self.assertEqual(request.content.tell(), 0)
        self.assertTrue(holds(condition("json", "eq", "user.id", 42), request))
        self.assertEqual(request.content.tell(), 0)
        self.assertEqual(request.content.read(), body)

    def test_contentTypes(self) -> None:
        """
        The body is read as JSON when its C{Content-Type} is JSON, with or
        without parameters; otherwise every field is missing.
        """
        for contentType in [
            b"application/json",
            b"Application/JSON; charset=utf-8",
            b"application/vnd.api+json",
            b"application/problem+json",
            b"text/json",
        ]:
            request = jsonRequest({"a": 1}, contentType)
            self.assertTrue(holds(condition("json", "eq", "a", 1), request), contentType)
        for contentType in [
            b"text/plain",
            b"application/jsonp",
            b"application/x-www-form-urlencoded",
        ]:
            request = jsonRequest({"a": 1}, contentType)
            self.assertFalse(holds(condition("json", "exists", "a"), request), contentType)
        noType = makeRequest(b"POST", b"/", [], b'{"a": 1}')
        self.assertFalse(holds(condition("json", "exists", "a"), noType))

    def test_notJSON(self) -> None:
        """
        A body that is not JSON (malformed, empty, not UTF-8, C{NaN}, or
        nested too deep for the parser) makes every field missing, without
        raising.
        """
        for body in [
            b'{"a": 1',
            b"",
            b'{"a": "\xff"}',
            b'{"a": NaN}',
            b'{"a": Infinity}',
            b"[" * 30000 + b"]" * 30000,
        ]:
            request = makeRequest(b"POST", b"/", [(b"Content-Type", b"application/json")], body)
            self.assertFalse(holds(condition("json", "exists", "a"), request), body[:20])
            self.assertTrue(holds(condition("json", "ne", "a", 1), request), body[:20])
        self.assertFalse(holds(condition("json", "exists", "a"), makeRequest(b"GET", b"/")))

    def test_tooBig(self) -> None:
        """
        A body larger than the limit (64 KiB by default) is not looked
        into; a larger limit can be set when compiling.
        """
        document = {"a": 1, "pad": "x" * JSON_BODY_LIMIT}
        request = jsonRequest(document)
        cond = condition("json", "eq", "a", 1)
        self.assertFalse(holds(cond, request))
        bigger = compileRouting(makeRouting([cond]), jsonBodyLimit=2 * JSON_BODY_LIMIT)
        self.assertTrue(bigger.matches(makeContext(request)))

    def test_exactlyAtLimit(self) -> None:
        """
        A body of exactly the limit is read.
        """
        body = b'{"a": 1}'
        request = makeRequest(b"POST", b"/", [(b"Content-Type", b"application/json")], body)
        self.assertEqual(readJSONField(makeContext(request), "a", len(body)), (True, 1))
        self.assertEqual(readJSONField(makeContext(request), "a", len(body) - 1), (False, None))

    def test_bodyInTemporaryFile(self) -> None:
        """
        A large body, which Twisted keeps in a temporary file rather than
        in memory, is read the same way and stays readable.
        """
        document = {"a": {"b": [True]}, "pad": "x" * 150000}
        request = jsonRequest(document)
        self.assertNotIsInstance(request.content, BytesIO)
        self.assertEqual(readJSONField(makeContext(request), "a.b.0", 200000), (True, True))
        self.assertEqual(json.loads(request.content.read()), document)

    def test_parsedOnce(self) -> None:
        """
        Several JSON conditions in several routings read and parse the body
        once per request.
        """
        request = jsonRequest(self.document)
        reads = []
        original = request.content

        class CountingFile:
            def __getattr__(self, name: str) -> Any:
                return getattr(original, name)

            def read(self, *args: Any) -> bytes:
                reads.append(args)
                return original.read(*args)

            def getvalue(self) -> bytes:
                reads.append(())
                return original.getvalue()

        request.content = CountingFile()
        context = makeContext(request)
        first = compileRouting(
            makeRouting(
                [condition("json", "eq", "user.id", 42), condition("json", "exists", "items")]
            )
        )
        second = compileRouting(makeRouting([condition("json", "eq", "items.0.sku", "A1")]))
        self.assertTrue(first.matches(context))
        self.assertTrue(second.matches(context))
        self.assertTrue(second.matches(context))
        self.assertEqual(len(reads), 1)
        self.assertIsNotNone(context.jsonBody)

    def test_notReadWithoutJSONRule(self) -> None:
        """
        A routing without JSON conditions never reads the body, and a
        routing whose other conditions fail does not read it either, even
        when its JSON condition is listed first.
        """
        request = jsonRequest(self.document)
        context = makeContext(request)
        plain = compileRouting(makeRouting([condition("method", "eq", "", "POST")]))
        self.assertFalse(plain.usesBody)
        self.assertTrue(plain.matches(context))
        failing = compileRouting(
            makeRouting(
                [
                    condition("json", "eq", "user.id", 42),
                    condition("header", "exists", "X-Absent"),
                ]
            )
        )
        self.assertTrue(failing.usesBody)
        self.assertFalse(failing.matches(context))
        self.assertIsNone(context.jsonBody)


class ReadJSONFieldTests(SynchronousTestCase):
    """
    L{readJSONField} on its own.
    """

    def test_found(self) -> None:
        """
        A present field gives C{(True, value)}, including C{null}.
        """
        request = jsonRequest({"a": {"b": None, "c": [1, {"d": "e"}]}})
        self.assertEqual(readJSONField(makeContext(request), "a.b", JSON_BODY_LIMIT), (True, None))
        self.assertEqual(
            readJSONField(makeContext(request), "a.c.1.d", JSON_BODY_LIMIT), (True, "e")
        )
        self.assertEqual(
            readJSONField(makeContext(request), "a.c", JSON_BODY_LIMIT), (True, [1, {"d": "e"}])
        )

    def test_missing(self) -> None:
        """
        A missing field, a body that is not JSON, or no body gives
        C{(False, None)}.
        """
        self.assertEqual(readJSONField(makeContext(jsonRequest({"a": 1})), "b", 100), (False, None))
        self.assertEqual(readJSONField(makeContext(jsonRequest("text")), "a", 100), (False, None))
        self.assertEqual(readJSONField(makeContext(makeRequest()), "a", 100), (False, None))

    def test_closedBody(self) -> None:
        """
        A body file that can no longer be read gives C{(False, None)}.
        """
        request = jsonRequest({"a": 1})
        request.content.close()
        self.assertEqual(readJSONField(makeContext(request), "a", 100), (False, None))


jsonScalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
jsonValues = st.recursive(
    jsonScalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=8,
)
conditionValues = (
    st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
)


class NeverRaisesTests(SynchronousTestCase):
    """
    No value, of whatever type, makes a condition raise.
    """

    @settings(max_examples=150, deadline=None)
    @given(actual=jsonValues, expected=conditionValues, elements=st.lists(jsonValues, max_size=4))
    def test_anyJSONValue(self, actual: Any, expected: Any, elements: List[Any]) -> None:
        """
        Every operator evaluates to a boolean on any JSON body value and any
        condition value; C{ne} is exactly C{not eq}.
        """
        request = jsonRequest({"v": actual})
        context = makeContext(request)
        results = {}
        for op in ("exists", "eq", "ne", "lt", "le", "gt", "ge", "in", "match"):
            if op == "in":
                value: Any = elements
            elif op == "match":
                value = "a|1"
            else:
                value = expected
            compiled = compileRouting(makeRouting([condition("json", op, "v", value)]))
            results[op] = compiled.matches(context)
            self.assertIsInstance(results[op], bool)
        self.assertTrue(results["exists"])
        self.assertEqual(results["ne"], not results["eq"])


class MatchesTests(SynchronousTestCase):
    """
    L{CompiledRouting.matches}: conditions AND-ed.
    """

    def test_allConditions(self) -> None:
        """
        A routing matches when every condition holds, not when one fails.
        """
        routing = compileRouting(
            makeRouting(
                [
                    condition("header", "eq", "X-Group", "beta"),
                    condition("query", "gt", "v", 1),
                    condition("method", "eq", "", "GET"),
                ]
            )
        )
        ok = makeRequest(uri=b"/?v=2", headers=[(b"X-Group", b"beta")])
        self.assertTrue(routing.matches(makeContext(ok)))
        badQuery = makeRequest(uri=b"/?v=1", headers=[(b"X-Group", b"beta")])
        self.assertFalse(routing.matches(makeContext(badQuery)))
        badHeader = makeRequest(uri=b"/?v=2", headers=[(b"X-Group", b"alpha")])
        self.assertFalse(routing.matches(makeContext(badHeader)))

    def test_noConditions(self) -> None:
        """
        A routing without conditions matches every request.
        """
        routing = compileRouting(makeRouting([]))
        self.assertTrue(routing.matches(makeContext(makeRequest())))

    def test_immutable(self) -> None:
        """
        A compiled routing cannot be changed.
        """
        routing = compileRouting(makeRouting([]))
        with self.assertRaises(attrs.exceptions.FrozenInstanceError):
            routing.routing = makeRouting([], name="other")  # type: ignore[misc]


class SelectsTests(SynchronousTestCase):
    """
    L{CompiledRouting.selects} without C{hashOn}: the traffic share.
    """

    beta = [condition("header", "eq", "X-Group", "beta")]

    def betaContext(self) -> Exchange:
        return makeContext(makeRequest(headers=[(b"X-Group", b"beta")]))

    def test_fullRate(self) -> None:
        """
        At 100 % every matching request is selected, without a random draw;
        a request that does not match never is.
        """
        random = ScriptedRandom()
        routing = compileRouting(makeRouting(self.beta, trafficRate=100), random)  # type: ignore[arg-type]
        for _ in range(10):
            self.assertTrue(routing.selects(self.betaContext()))
        self.assertFalse(routing.selects(makeContext(makeRequest())))
        self.assertEqual(random.count, 0)

    def test_zeroRate(self) -> None:
        """
        At 0 % no request is selected, even with the lowest random draw.
        """
        random = ScriptedRandom([0.0] * 10)
        routing = compileRouting(makeRouting(self.beta, trafficRate=0), random)  # type: ignore[arg-type]
        self.assertTrue(routing.matches(self.betaContext()))
        self.assertFalse(routing.selects(self.betaContext()))

    def test_drawBoundary(self) -> None:
        """
        A request is selected when the draw is below C{trafficRate} / 100;
        a request that does not match costs no draw.
        """
        random = ScriptedRandom([0.2999, 0.3, 0.0])
        routing = compileRouting(makeRouting(self.beta, trafficRate=30), random)  # type: ignore[arg-type]
        self.assertTrue(routing.selects(self.betaContext()))
        self.assertFalse(routing.selects(self.betaContext()))
        self.assertFalse(routing.selects(makeContext(makeRequest())))
        self.assertEqual(random.count, 2)

    def test_share(self) -> None:
        """
        About C{trafficRate} % of matching requests are selected.
        """
        n = 10000
        for rate in (30, 2.5, 97):
            routing = compileRouting(makeRouting(self.beta, trafficRate=rate), Random(1234))
            context = self.betaContext()
            selected = sum(routing.selects(context) for _ in range(n))
            self.assertLess(abs(selected - n * rate / 100), threeSigma(n, rate), rate)


PLAIN_REQUEST = makeRequest()


def ipContext(ip: str) -> Exchange:
    """
    @return: the context of a plain GET from C{ip}.
    """
    return makeContext(PLAIN_REQUEST, clientIP=ip)


IPS = [f"10.{i // 250}.{i % 250}.{i % 7}" for i in range(10000)]


class StickySelectsTests(SynchronousTestCase):
    """
    L{CompiledRouting.selects} with C{hashOn}: the same client always lands
    on the same side.
    """

    def selectedIPs(self, rate: float, name: str = "canary") -> set:
        routing = compileRouting(
            makeRouting([], name=name, trafficRate=rate, hashOn="ip"),
            ScriptedRandom(),  # type: ignore[arg-type]
        )
        return {ip for ip in IPS[:2000] if routing.selects(ipContext(ip))}

    def test_sameKeySameAnswer(self) -> None:
        """
        Each client gets the same answer on every request, without random
        draws; at 50 % some clients are in and some out.
        """
        random = ScriptedRandom()
        routing = compileRouting(makeRouting([], trafficRate=50, hashOn="ip"), random)  # type: ignore[arg-type]
        answers = []
        for ip in IPS[:50]:
            first = routing.selects(ipContext(ip))
            for _ in range(100):
                self.assertEqual(routing.selects(ipContext(ip)), first, ip)
            answers.append(first)
        self.assertIn(True, answers)
        self.assertIn(False, answers)
        self.assertEqual(random.count, 0)

    def test_share(self) -> None:
        """
        Over many clients, about C{trafficRate} % are selected.
        """
        n = len(IPS)
        for rate in (30, 5, 90):
            routing = compileRouting(makeRouting([], trafficRate=rate, hashOn="ip"))
            selected = sum(routing.selects(ipContext(ip)) for ip in IPS)
            self.assertLess(abs(selected - n * rate / 100), threeSigma(n, rate), rate)

    def test_monotonic(self) -> None:
        """
        Raising the rate only adds clients: everyone selected at a rate is
        selected at every higher rate.
        """
        previous: set = set()
        for rate in (0, 1, 5, 10, 25, 33.3, 50, 75, 99, 100):
            current = self.selectedIPs(rate)
            self.assertTrue(previous <= current, rate)
            previous = current
        self.assertEqual(len(previous), 2000)

    def test_perRouting(self) -> None:
        """
        The hash is salted with the routing's name, so two routings at the
        same rate select different clients.
        """
        self.assertNotEqual(self.selectedIPs(50, "one"), self.selectedIPs(50, "two"))

    def test_header(self) -> None:
        """
        C{hashOn: header:NAME} keys on a header; a request without it (or
        with it empty) is drawn at random.
        """
        random = ScriptedRandom([0.0, 0.99, 0.0])
        routing = compileRouting(
            makeRouting([], trafficRate=50, hashOn="header:X-User"),
            random,  # type: ignore[arg-type]
        )
        answers = {}
        for user in range(40):
            request = makeRequest(headers=[(b"x-user", b"user-%d" % user)])
            answers[user] = routing.selects(makeContext(request))
            for _ in range(5):
                self.assertEqual(routing.selects(makeContext(request)), answers[user])
        self.assertEqual(set(answers.values()), {True, False})
        self.assertEqual(random.count, 0)
        self.assertTrue(routing.selects(makeContext(makeRequest())))
        self.assertFalse(routing.selects(makeContext(makeRequest())))
        empty = makeRequest(headers=[(b"X-User", b"")])
        self.assertTrue(routing.selects(makeContext(empty)))
        self.assertEqual(random.count, 3)

    def test_cookie(self) -> None:
        """
        C{hashOn: cookie:NAME} keys on a cookie; the other cookies do not
        change the answer; a request without it is drawn at random.
        """
        random = ScriptedRandom([0.99])
        routing = compileRouting(
            makeRouting([], trafficRate=50, hashOn="cookie:uid"),
            random,  # type: ignore[arg-type]
        )
        answers = set()
        for user in range(40):
            plain = makeRequest(headers=[(b"Cookie", b"uid=%d" % user)])
            other = makeRequest(headers=[(b"Cookie", b"x=%d; uid=%d" % (user * 7, user))])
            answer = routing.selects(makeContext(plain))
            self.assertEqual(routing.selects(makeContext(other)), answer)
            answers.add(answer)
        self.assertEqual(answers, {True, False})
        self.assertFalse(routing.selects(makeContext(makeRequest())))
        self.assertEqual(random.count, 1)

    def test_conditionsStillApply(self) -> None:
        """
        A client whose key is selected is not selected by a request that
        does not match the conditions.
        """
        routing = compileRouting(
            makeRouting([condition("method", "eq", "", "POST")], trafficRate=100, hashOn="ip")
        )
        self.assertFalse(routing.selects(ipContext("10.0.0.1")))

    # Starts Python processes: an integration test.
    @pytest.mark.integration
    def test_sameInEveryProcess(self) -> None:
        """
        The answer for a key is the same in every process (every proxy of a
        cluster, every restart): it does not depend on Python's per-process
        string hash seed.
        """
        script = (
            "import sys\n"
            "from gateway.pipeline.exchange import Exchange\n"
            "from gateway.model.resources import parseResource\n"
            "from gateway.routing.rules import compileRouting\n"
            "r = compileRouting(parseResource('routings', {'name': 'canary', "
            "'cluster': 'c', 'trafficRate': 50, 'hashOn': 'ip'}))\n"
            "ips = [f'192.168.{i}.{i}' for i in range(200)]\n"
            "sys.stdout.write(''.join('1' if r.selects(Exchange(None, None, None, "
            "{}, ip, 0.0, None)) else '0' for ip in ips))\n"
        )
        routing = compileRouting(makeRouting([], name="canary", trafficRate=50, hashOn="ip"))
        expected = "".join(
            "1" if routing.selects(ipContext(f"192.168.{i}.{i}")) else "0" for i in range(200)
        )
        for seed in ("1", "2"):
            env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=ROOT)
            output = subprocess.run(
                [sys.executable, "-c", script],
                env=env,
                cwd=ROOT,
                check=True,
                stdout=subprocess.PIPE,
            ).stdout.decode("ascii")
            self.assertEqual(output, expected, seed)


def compiled(name: str, api: Optional[str] = None, **fields: Any) -> CompiledRouting:
    return compileRouting(makeRouting([], name=name, api=api, **fields))


class OrderTests(SynchronousTestCase):
    """
    L{orderRoutings} and L{applicableRoutings}.
    """

    def test_scopedFirstThenByName(self) -> None:
        """
        Routings scoped to an API come first, then global ones, each group
        sorted by name, whatever the input order.
        """
        routings = [
            compiled("b"),
            compiled("z", api="users"),
            compiled("a"),
            compiled("c", api="orders"),
        ]
        expected = ["c", "z", "a", "b"]
        for permutation in (routings, list(reversed(routings)), routings[1:] + routings[:1]):
            ordered = orderRoutings(iter(permutation))
            self.assertIsInstance(ordered, tuple)
            self.assertEqual([r.routing.name for r in ordered], expected)

    def test_applicable(self) -> None:
        """
        An API's requests see the global routings and those scoped to it,
        in evaluation order.
        """
        ordered = orderRoutings(
            [compiled("b"), compiled("z", api="users"), compiled("c", api="orders")]
        )
        self.assertEqual([r.routing.name for r in applicableRoutings(ordered, "users")], ["z", "b"])
        self.assertEqual([r.routing.name for r in applicableRoutings(ordered, "other")], ["b"])


class DecideTests(SynchronousTestCase):
    """
    L{decideRoutings}: the first split decides, every mirror copies.
    """

    def test_firstSplitWins(self) -> None:
        """
        The first selecting split routing decides; later splits are not
        evaluated (no random draw).
        """
        skipped = ScriptedRandom()
        notTaken = compileRouting(makeRouting([], name="a", trafficRate=10), ScriptedRandom([0.5]))  # type: ignore[arg-type]
        taken = compiled("b", api="users")
        later = compileRouting(makeRouting([], name="c", trafficRate=50), skipped)  # type: ignore[arg-type]
        ordered = orderRoutings([later, notTaken, taken])
        decision = decideRoutings(ordered, makeContext(makeRequest()))
        self.assertEqual(decision, RoutingDecision(taken, ()))
        self.assertEqual(skipped.count, 0)

    def test_mirrors(self) -> None:
        """
        Every selecting mirror routing gets a copy, in order, before or
        after the deciding split; mirrors that do not select are left out.
        """
        mirrorA = compiled("a", strategy="mirror")
        split = compiled("b")
        mirrorOff = compiled("c", strategy="mirror", trafficRate=0)
        mirrorD = compiled("d", strategy="mirror")
        decision = decideRoutings(
            orderRoutings([mirrorD, split, mirrorOff, mirrorA]), makeContext(makeRequest())
        )
        self.assertIs(decision.split, split)
        self.assertEqual(decision.mirrors, (mirrorA, mirrorD))

    def test_nothing(self) -> None:
        """
        When no routing selects a request, it goes to the API's own nodes.
        """
        routing = compileRouting(makeRouting([condition("method", "eq", "", "PUT")]))
        decision = decideRoutings((routing,), makeContext(makeRequest()))
        self.assertEqual(decision, RoutingDecision(None, ()))
        self.assertEqual(decideRoutings((), makeContext(makeRequest())), RoutingDecision(None, ()))
