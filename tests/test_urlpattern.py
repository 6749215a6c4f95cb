"""
Tests for L{gateway.model.urlpattern}: pattern parsing and the route tree.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple
from urllib.parse import unquote

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from gateway.model.urlpattern import (
    PARAM_TYPES,
    ParamSegment,
    Pattern,
    StaticSegment,
    WildcardSegment,
    checkHost,
    normalizeHost,
    parsePattern,
)
from gateway.routing.router import Match, Route, RouteConflict, Router

UUID = "123e4567-e89b-12d3-a456-426614174000"


def router(*routes: Tuple[Any, ...]) -> Router:
    """
    A router from C{(pattern, method, host, value)} tuples; the method
    defaults to C{*}, the host to any and the value to the pattern.
    """
    built = []
    for spec in routes:
        pattern = spec[0]
        method = spec[1] if len(spec) > 1 else "*"
        host = spec[2] if len(spec) > 2 else None
        value = spec[3] if len(spec) > 3 else pattern
        built.append(Route(parsePattern(pattern), method, host, value))
    return Router(built)


def matched(r: Router, path: str, method: str = "GET", host: Optional[str] = None) -> Any:
    """
    The value of the route matching, or L{None}.
    """
    m = r.match(method, host, path)
    return None if m is None else m.value


class ParsePatternTests(SynchronousTestCase):
    """
    L{parsePattern} accepts the documented syntax and refuses the rest with a
    clear message.
    """

    def assertInvalid(self, text: Any, message: str) -> None:
        with self.assertRaises(ValueError) as ctx:
            parsePattern(text)
        self.assertEqual(str(ctx.exception), message)

    def test_root(self) -> None:
        """
        C{/} is the root: no segments, no parameters.
        """
        p = parsePattern("/")
        self.assertEqual(p, Pattern("/", (), ()))
        self.assertEqual(p.canonical(), "/")

    def test_segments(self) -> None:
        """
        Static segments, plain and typed parameters and a trailing wildcard
        parse into their segment objects, and the parameter names are listed
        in order, C{*} for the wildcard.
        """
        p = parsePattern("/users/{id}/files/{n:int}/{code:re:[a-z]{2}}/*")
        self.assertEqual(p.text, "/users/{id}/files/{n:int}/{code:re:[a-z]{2}}/*")
        self.assertEqual(
            p.segments,
            (
                StaticSegment("users"),
                ParamSegment("id"),
                StaticSegment("files"),
                ParamSegment("n", "int"),
                ParamSegment("code", "re", "[a-z]{2}"),
                WildcardSegment(),
            ),
        )
        self.assertEqual(p.paramNames, ("id", "n", "code", "*"))

    def test_everyType(self) -> None:
        """
        Every documented type parses.
        """
        for kind in ("int", "uuid", "alpha", "alnum", "slug"):
            self.assertEqual(parsePattern(f"/{{x:{kind}}}").segments, (ParamSegment("x", kind),))
        self.assertEqual(parsePattern("/{x:re:a|b}").segments, (ParamSegment("x", "re", "a|b"),))
        self.assertEqual(PARAM_TYPES, ("int", "uuid", "alpha", "alnum", "slug", "re"))

    def test_canonical(self) -> None:
        """
        The canonical form erases parameter names and keeps types.
        """
        p = parsePattern("/users/{uid}/files/{f:int}/*")
        self.assertEqual(p.canonical(), "/users/{}/files/{:int}/*")
        self.assertEqual(parsePattern("/a/{x:re:[0-9]+}").canonical(), "/a/{:re:[0-9]+}")

    def test_canonicalStatic(self) -> None:
        """
        Static segments are percent-decoded, so two spellings of the same
        path have the same canonical form; an encoded C{*}, brace or slash
        stays encoded, so it never reads as a wildcard, a parameter or two
        segments.
        """
        self.assertEqual(parsePattern("/café").segments, (StaticSegment("café"),))
        self.assertEqual(parsePattern("/caf%C3%A9").canonical(), "/caf%C3%A9")
        self.assertEqual(parsePattern("/café").canonical(), "/caf%C3%A9")
        self.assertEqual(parsePattern("/%2A").segments, (StaticSegment("*"),))
        self.assertEqual(parsePattern("/%2A").canonical(), "/%2A")
        self.assertEqual(parsePattern("/%7Bx%7D").canonical(), "/%7Bx%7D")
        self.assertEqual(parsePattern("/a%2Fb").canonical(), "/a%2Fb")
        self.assertEqual(parsePattern("/a:b@c").canonical(), "/a:b@c")

    def test_trailingSlash(self) -> None:
        """
        A trailing slash in a pattern is ignored.
        """
        self.assertEqual(parsePattern("/users/").segments, (StaticSegment("users"),))
        self.assertEqual(parsePattern("/users/").canonical(), "/users")
        self.assertEqual(parsePattern("/users/").text, "/users/")

    def test_regexWithSlash(self) -> None:
        """
        A slash inside a regular expression does not split the segment.
        """
        p = parsePattern("/{x:re:a/b}/c")
        self.assertEqual(p.segments, (ParamSegment("x", "re", "a/b"), StaticSegment("c")))

    def test_regexEscapedBrace(self) -> None:
        """
        A backslash-escaped brace in a regular expression does not count
        when braces are balanced.
        """
        p = parsePattern(r"/{x:re:\{+}")
        self.assertEqual(p.segments, (ParamSegment("x", "re", r"\{+"),))

    def test_invalid(self) -> None:
        """
        Invalid patterns raise L{ValueError} with a message naming the fault.
        """
        cases = [
            (None, "must be a string"),
            ("", "must start with /"),
            ("users", "must start with /"),
            ("//", "has an empty segment (//)"),
            ("/a//b", "has an empty segment (//)"),
            ("/*/a", "may have * only as its last segment"),
            ("/a/*/*", "may have * only as its last segment"),
            (
                "/file-{id}.json",
                "has 'file-{id}.json': a parameter must be a whole segment, like /{name}/",
            ),
            ("/{a}{b}", "has '{a}{b}': a parameter must be a whole segment, like /{name}/"),
            ("/{a}x", "has '{a}x': a parameter must be a whole segment, like /{name}/"),
            ("/a/{id", "has a { without a matching } in segment '{id'"),
            ("/a/id}", "has a } without a matching { in segment 'id}'"),
            (
                "/{1x}",
                "invalid parameter name '1x' in '{1x}': use letters, digits and _,"
                " not starting with a digit",
            ),
            (
                "/{}",
                "invalid parameter name '' in '{}': use letters, digits and _,"
                " not starting with a digit",
            ),
            (
                "/{a-b}",
                "invalid parameter name 'a-b' in '{a-b}': use letters, digits and _,"
                " not starting with a digit",
            ),
            ("/{id}/x/{id:int}", "has the parameter 'id' twice"),
            (
                "/{id:float}",
                "unknown type 'float' for parameter 'id' (use int, uuid, alpha, alnum, slug"
                " or re:REGEX)",
            ),
            (
                "/{id:}",
                "unknown type '' for parameter 'id' (use int, uuid, alpha, alnum, slug"
                " or re:REGEX)",
            ),
            (
                "/files/{p:*}",
                "unknown type '*' for parameter 'p' (use int, uuid, alpha, alnum, slug"
                " or re:REGEX)",
            ),
            ("/{id:re:}", "parameter 'id' has an empty regular expression"),
            (
                "/{id:re:x(}",
                "invalid regular expression 'x(' for parameter 'id':"
                " Missing close parenthesis for group started at index 1 (patterns are"
                " matched in linear time: no backreferences, lookaround, atomic groups or"
                " possessive quantifiers)",
            ),
            ("/a?b=1", "has 'a?b=1': a pattern matches the path only, without ? or #"),
            ("/a#top", "has 'a#top': a pattern matches the path only, without ? or #"),
            ("/a/../b", "has the dot segment '..'"),
            ("/a/%2e", "has the dot segment '%2e'"),
            ("/" + "/".join(["a"] * 129), "has 129 segments, more than 128"),
        ]
        for text, message in cases:
            self.assertInvalid(text, message)

    def test_maxSegments(self) -> None:
        """
        A pattern of exactly 128 segments is accepted.
        """
        self.assertEqual(len(parsePattern("/" + "/".join(["a"] * 128)).segments), 128)

    def test_modelUsesIt(self) -> None:
        """
        The API model refuses a bad C{urlPattern} with the parser's message.
        """
        from gateway.model.resources import API
        from gateway.model.schema import ValidationError, fromJSON

        data = {"name": "a", "urlPattern": "/f-{id}", "nodes": [{"cluster": "c"}]}
        with self.assertRaises(ValidationError) as ctx:
            fromJSON(API, data)
        self.assertIn("a parameter must be a whole segment", str(ctx.exception))


class TypeTests(SynchronousTestCase):
    """
    Each parameter type accepts exactly its documented segments.
    """

    def check(self, kind: str, good: Sequence[str], bad: Sequence[str]) -> None:
        r = router((f"/x/{{v:{kind}}}",))
        for segment in good:
            self.assertEqual(
                r.match("GET", None, "/x/" + segment),
                Match(f"/x/{{v:{kind}}}", {"v": unquote(segment)}),
                segment,
            )
        for segment in bad:
            self.assertIsNone(r.match("GET", None, "/x/" + segment), segment)

    def test_int(self) -> None:
        """
        C{int}: ASCII digits with an optional leading minus.
        """
        self.check("int", ["0", "42", "-7", "007", "%31"], ["", "-", "1.5", "+1", "1a", "٣", "²"])

    def test_uuid(self) -> None:
        """
        C{uuid}: 8-4-4-4-12 hex digits, either case.
        """
        self.check(
            "uuid",
            [UUID, UUID.upper()],
            [UUID[:-1], UUID + "0", UUID.replace("-", ""), "g" + UUID[1:], "{" + UUID + "}"],
        )

    def test_alpha(self) -> None:
        """
        C{alpha}: ASCII letters only.
        """
        self.check("alpha", ["abc", "XyZ"], ["a1", "é", "a-b", "a_b"])

    def test_alnum(self) -> None:
        """
        C{alnum}: ASCII letters and digits.
        """
        self.check("alnum", ["abc", "a1B2", "123"], ["a-1", "é1", "a_1", "a%20b"])

    def test_slug(self) -> None:
        """
        C{slug}: ASCII letters, digits, C{_} and C{-}.
        """
        self.check("slug", ["my-post_2", "-", "_"], ["a.b", "a b", "é", "a%2Fb"])

    def test_re(self) -> None:
        """
        C{re:REGEX} must match the whole decoded segment.
        """
        self.check("re:[a-c]+\\d", ["ab1", "c9", "a%62c3"], ["ab", "xab1", "ab1x", "ab12"])

    def test_reCaseFlag(self) -> None:
        """
        Inline flags of the regular expression apply.
        """
        self.check("re:(?i)abc", ["ABC", "aBc"], ["abcd"])


class PriorityTests(SynchronousTestCase):
    """
    Static beats typed beats plain beats wildcard, per segment, with
    backtracking.
    """

    def test_order(self) -> None:
        """
        At one position, static wins over typed, typed over plain, plain over
        the wildcard.
        """
        r = router(("/u/me",), ("/u/{id:int}",), ("/u/{name}",), ("/u/*",))
        self.assertEqual(r.match("GET", None, "/u/me"), Match("/u/me", {}))
        self.assertEqual(r.match("GET", None, "/u/12"), Match("/u/{id:int}", {"id": "12"}))
        self.assertEqual(r.match("GET", None, "/u/bob"), Match("/u/{name}", {"name": "bob"}))
        self.assertEqual(r.match("GET", None, "/u/a/b"), Match("/u/*", {"*": "a/b"}))
        self.assertEqual(r.match("GET", None, "/u"), Match("/u/*", {"*": ""}))

    def test_typedOrder(self) -> None:
        """
        Typed parameters at the same position are tried int, uuid, alpha,
        alnum, slug, then regular expressions by their text.
        """
        r = router(
            ("/t/{a:re:z.*}",),
            ("/t/{a:re:.*}",),
            ("/t/{a:slug}",),
            ("/t/{a:alnum}",),
            ("/t/{a:alpha}",),
            ("/t/{a:uuid}",),
            ("/t/{a:int}",),
        )
        self.assertEqual(matched(r, "/t/12"), "/t/{a:int}")
        self.assertEqual(matched(r, "/t/" + UUID), "/t/{a:uuid}")
        self.assertEqual(matched(r, "/t/abc"), "/t/{a:alpha}")
        self.assertEqual(matched(r, "/t/abc1"), "/t/{a:alnum}")
        self.assertEqual(matched(r, "/t/ab-c"), "/t/{a:slug}")
        self.assertEqual(matched(r, "/t/a.b"), "/t/{a:re:.*}")
        self.assertEqual(matched(r, "/t/z.b"), "/t/{a:re:.*}")

    def test_regexOrderByText(self) -> None:
        """
        Two regular expressions that both match are tried in the order of
        their text.
        """
        r = router(("/r/{a:re:b.}",), ("/r/{a:re:.b}",))
        self.assertEqual(matched(r, "/r/bb"), "/r/{a:re:.b}")

    def test_backtrackFromStatic(self) -> None:
        """
        When the static branch has no route deeper down, the typed, plain
        and wildcard branches are tried in turn.
        """
        r = router(
            ("/u/me/profile",),
            ("/u/{id:int}/posts",),
            ("/u/{name}/posts",),
            ("/u/*",),
        )
        self.assertEqual(matched(r, "/u/me/profile"), "/u/me/profile")
        self.assertEqual(
            r.match("GET", None, "/u/me/posts"), Match("/u/{name}/posts", {"name": "me"})
        )
        self.assertEqual(
            r.match("GET", None, "/u/12/posts"), Match("/u/{id:int}/posts", {"id": "12"})
        )
        self.assertEqual(r.match("GET", None, "/u/me/other"), Match("/u/*", {"*": "me/other"}))
        self.assertEqual(r.match("GET", None, "/u/12/x/y"), Match("/u/*", {"*": "12/x/y"}))

    def test_backtrackDropsValues(self) -> None:
        """
        The values captured on a branch that failed do not leak into the
        parameters of the branch that matched.
        """
        r = router(("/{a:int}/{b:int}/x",), ("/{c}/{d}/y",))
        self.assertEqual(r.match("GET", None, "/1/2/y"), Match("/{c}/{d}/y", {"c": "1", "d": "2"}))

    def test_staticAtEveryLevel(self) -> None:
        """
        Priority is decided segment by segment: a static first segment wins
        even when a pattern with a parameter first has more static segments.
        """
        r = router(("/a/{x}/{y}",), ("/{x}/b/c",))
        self.assertEqual(matched(r, "/a/b/c"), "/a/{x}/{y}")

    def test_endBeatsEmptyWildcard(self) -> None:
        """
        A route ending at the path's end beats a wildcard matching nothing.
        """
        r = router(("/f",), ("/f/*",))
        self.assertEqual(r.match("GET", None, "/f"), Match("/f", {}))
        self.assertEqual(r.match("GET", None, "/f/x"), Match("/f/*", {"*": "x"}))

    def test_noMatch(self) -> None:
        """
        Paths no route matches give L{None}: too short, too long, a
        different static segment.
        """
        r = router(("/a/{x}",))
        self.assertIsNone(r.match("GET", None, "/a"))
        self.assertIsNone(r.match("GET", None, "/a/b/c"))
        self.assertIsNone(r.match("GET", None, "/b/c"))
        self.assertIsNone(r.match("GET", None, "/"))
        self.assertIsNone(router().match("GET", None, "/"))

    def test_root(self) -> None:
        """
        C{/} matches the root only; C{/*} matches everything.
        """
        r = router(("/",))
        self.assertEqual(r.match("GET", None, "/"), Match("/", {}))
        self.assertIsNone(r.match("GET", None, "/a"))
        r = router(("/*",))
        self.assertEqual(r.match("GET", None, "/"), Match("/*", {"*": ""}))
        self.assertEqual(r.match("GET", None, "/a/b"), Match("/*", {"*": "a/b"}))

    def test_caseSensitive(self) -> None:
        """
        Static segments compare case-sensitively.
        """
        r = router(("/Users",))
        self.assertIsNone(r.match("GET", None, "/users"))
        self.assertEqual(matched(r, "/Users"), "/Users")


class PathTests(SynchronousTestCase):
    """
    How the request path is split, decoded and normalised.
    """

    def test_trailingSlash(self) -> None:
        """
        One trailing slash in the request is ignored; two are not.
        """
        r = router(("/users",), ("/users/{id}",))
        self.assertEqual(matched(r, "/users/"), "/users")
        self.assertEqual(r.match("GET", None, "/users/7/"), Match("/users/{id}", {"id": "7"}))
        self.assertIsNone(r.match("GET", None, "/users//"))

    def test_emptySegment(self) -> None:
        """
        An empty segment in the middle of the path matches no parameter.
        """
        r = router(("/a/{x}/b",), ("/a/{x}",))
        self.assertIsNone(r.match("GET", None, "/a//b"))
        self.assertEqual(r.match("GET", None, "/a/x/b"), Match("/a/{x}/b", {"x": "x"}))

    def test_wildcardKeepsEmptySegments(self) -> None:
        """
        A wildcard swallows empty segments as they are.
        """
        r = router(("/a/*",))
        self.assertEqual(r.match("GET", None, "/a/x//y"), Match("/a/*", {"*": "x//y"}))
        self.assertEqual(r.match("GET", None, "/a//y"), Match("/a/*", {"*": "/y"}))

    def test_decodedParams(self) -> None:
        """
        Parameter values are percent-decoded (UTF-8).
        """
        r = router(("/u/{name}",))
        self.assertEqual(
            r.match("GET", None, "/u/J%C3%B6rg%20M"), Match("/u/{name}", {"name": "Jörg M"})
        )

    def test_encodedSlashStaysInSegment(self) -> None:
        """
        An encoded slash is decoded inside its parameter and never makes a
        new segment.
        """
        r = router(("/f/{name}",), ("/f/{a}/{b}",))
        self.assertEqual(r.match("GET", None, "/f/a%2Fb"), Match("/f/{name}", {"name": "a/b"}))
        self.assertEqual(r.match("GET", None, "/f/a%2fb"), Match("/f/{name}", {"name": "a/b"}))
        self.assertEqual(r.match("GET", None, "/f/a/b"), Match("/f/{a}/{b}", {"a": "a", "b": "b"}))

    def test_encodedSlashNotStatic(self) -> None:
        """
        C{/a%2Fb} is one segment C{a/b}: it does not match the two static
        segments C{/a/b}, and matches the static pattern C{/a%2Fb}.
        """
        r = router(("/a/b", "GET", None, "two"))
        self.assertIsNone(r.match("GET", None, "/a%2Fb"))
        r = router(("/a%2Fb", "GET", None, "one"))
        self.assertEqual(matched(r, "/a%2Fb"), "one")
        self.assertIsNone(r.match("GET", None, "/a/b"))

    def test_decodedStatic(self) -> None:
        """
        Static segments compare with the decoded request segment, whichever
        way the pattern spells them.
        """
        for pattern in ("/café", "/caf%C3%A9", "/caf%c3%a9"):
            r = router((pattern,))
            self.assertEqual(matched(r, "/caf%C3%A9"), pattern)
            self.assertEqual(matched(r, "/café"), pattern)
            self.assertIsNone(r.match("GET", None, "/cafe"))

    def test_wildcardDecoded(self) -> None:
        """
        The wildcard's value is the decoded rest of the path.
        """
        r = router(("/s/*",))
        self.assertEqual(r.match("GET", None, "/s/a%20b/c%2Fd/"), Match("/s/*", {"*": "a b/c/d"}))

    def test_invalidUTF8(self) -> None:
        """
        Percent-encoded bytes that are not UTF-8 decode to U+FFFD.
        """
        r = router(("/u/{name}",))
        self.assertEqual(r.match("GET", None, "/u/%FF"), Match("/u/{name}", {"name": "\ufffd"}))

    def test_dotSegments(self) -> None:
        """
        A path with a C{.} or C{..} segment, plain or encoded, matches
        nothing; dots inside a segment are fine.
        """
        r = router(("/*",), ("/a/{x}",))
        for path in ("/a/..", "/a/.", "/a/../b", "/./a", "/a/%2e%2E", "/a/%2E", "/a/.%2e/b"):
            self.assertIsNone(r.match("GET", None, path), path)
        self.assertEqual(r.match("GET", None, "/a/x.y"), Match("/a/{x}", {"x": "x.y"}))
        self.assertEqual(r.match("GET", None, "/a/..."), Match("/a/{x}", {"x": "..."}))
        self.assertEqual(
            r.match("GET", None, "/.well-known/x"), Match("/*", {"*": ".well-known/x"})
        )

    def test_notAbsolute(self) -> None:
        """
        A request target that is not an absolute path matches nothing.
        """
        r = router(("/*",))
        self.assertIsNone(r.match("OPTIONS", None, "*"))
        self.assertIsNone(r.match("GET", None, ""))
        self.assertIsNone(r.match("GET", None, "http://example.com/"))


class HostTests(SynchronousTestCase):
    """
    Routes for a host beat routes for any host.
    """

    def test_hostBeatsAny(self) -> None:
        """
        A host's route wins on that host; other hosts get the host-less one.
        """
        r = router(("/a", "*", None, "any"), ("/a", "*", "api.example.com", "api"))
        self.assertEqual(matched(r, "/a", host="api.example.com"), "api")
        self.assertEqual(matched(r, "/a", host="www.example.com"), "any")
        self.assertEqual(matched(r, "/a", host=None), "any")
        self.assertEqual(matched(r, "/a", host=""), "any")

    def test_hostOnly(self) -> None:
        """
        A host's route does not match other hosts, nor a request without a
        host.
        """
        r = router(("/a", "*", "api.example.com", "api"))
        self.assertIsNone(r.match("GET", "www.example.com", "/a"))
        self.assertIsNone(r.match("GET", None, "/a"))

    def test_hostBeforePath(self) -> None:
        """
        The host is decided first: a host's wildcard route beats a host-less
        static route, and a host whose routes do not match the path falls back
        to the host-less routes.
        """
        r = router(("/health", "*", None, "health"), ("/*", "*", "shop.example.com", "shop"))
        self.assertEqual(matched(r, "/health", host="shop.example.com"), "shop")
        r = router(("/health", "*", None, "health"), ("/api/*", "*", "shop.example.com", "shop"))
        self.assertEqual(matched(r, "/health", host="shop.example.com"), "health")

    def test_caseAndPort(self) -> None:
        """
        Hosts compare case-insensitively, without the port and trailing dot.
        """
        r = router(("/a", "*", "API.Example.com", "api"))
        for host in (
            "api.example.com",
            "API.EXAMPLE.COM:8080",
            "api.example.com.",
            "Api.example.com.:443",
        ):
            self.assertEqual(matched(r, "/a", host=host), "api", host)

    def test_ipv6(self) -> None:
        """
        An IPv6 host keeps its brackets and loses its port.
        """
        r = router(("/a", "*", "[::1]", "v6"))
        self.assertEqual(matched(r, "/a", host="[::1]:8080"), "v6")
        self.assertEqual(matched(r, "/a", host="[::1]"), "v6")

    def test_wildcardHost(self) -> None:
        """
        C{*.example.com} matches subdomains at any depth, not the apex; an
        exact host beats it; the longest wildcard suffix wins.
        """
        r = router(
            ("/a", "*", "*.example.com", "wild"),
            ("/a", "*", "*.eu.example.com", "eu"),
            ("/a", "*", "www.example.com", "www"),
            ("/a", "*", None, "any"),
        )
        self.assertEqual(matched(r, "/a", host="api.example.com"), "wild")
        self.assertEqual(matched(r, "/a", host="x.y.example.com:80"), "wild")
        self.assertEqual(matched(r, "/a", host="x.eu.example.com"), "eu")
        self.assertEqual(matched(r, "/a", host="eu.example.com"), "wild")
        self.assertEqual(matched(r, "/a", host="www.example.com"), "www")
        self.assertEqual(matched(r, "/a", host="example.com"), "any")
        self.assertEqual(matched(r, "/a", host="badexample.com"), "any")

    def test_wildcardHostFallsThrough(self) -> None:
        """
        When the exact host's routes do not match the path, the wildcard
        host's routes are tried, then the host-less ones.
        """
        r = router(
            ("/x", "*", "www.example.com", "www"),
            ("/y", "*", "*.example.com", "wild"),
            ("/z", "*", None, "any"),
        )
        self.assertEqual(matched(r, "/x", host="www.example.com"), "www")
        self.assertEqual(matched(r, "/y", host="www.example.com"), "wild")
        self.assertEqual(matched(r, "/z", host="www.example.com"), "any")

    def test_normalizeHost(self) -> None:
        """
        L{normalizeHost} lower-cases and drops the port and trailing dot;
        empty and C{*} mean any host.
        """
        self.assertEqual(normalizeHost("Example.COM:80"), "example.com")
        self.assertEqual(normalizeHost("*.Example.com."), "*.example.com")
        self.assertEqual(normalizeHost("[::1]:80"), "[::1]")
        self.assertIsNone(normalizeHost(None))
        self.assertIsNone(normalizeHost(""))
        self.assertIsNone(normalizeHost("*"))
        self.assertEqual(Route(parsePattern("/"), "get", "A.b:1", 1).host, "a.b")
        self.assertEqual(Route(parsePattern("/"), "get", "A.b:1", 1).method, "GET")

    def test_checkHost(self) -> None:
        """
        L{checkHost} accepts names, wildcard names, IP addresses and refuses
        ports and junk with a message.
        """
        for good in (
            "example.com",
            "*.example.com",
            "localhost",
            "10.0.0.1",
            "[::1]",
            "a_b.c",
            "*",
        ):
            checkHost(good)
        for bad, message in [
            ("example.com:80", "must be a host name without a port"),
            ("a.*.com", "must be a host name"),
            ("*example.com", "must be a host name"),
            ("ex ample.com", "must be a host name"),
            ("bücher.de", "must be a host name"),
            ("a/b", "must be a host name"),
        ]:
            with self.assertRaises(ValueError) as ctx:
                checkHost(bad)
            self.assertTrue(str(ctx.exception).startswith(message), (bad, str(ctx.exception)))


class MethodTests(SynchronousTestCase):
    """
    The exact method beats C{*}; HEAD falls back to GET.
    """

    def test_exactBeatsAny(self) -> None:
        """
        A route for the request's method beats a route for any method with
        the same pattern.
        """
        r = router(("/a", "*", None, "any"), ("/a", "POST", None, "post"))
        self.assertEqual(matched(r, "/a", "POST"), "post")
        self.assertEqual(matched(r, "/a", "GET"), "any")
        self.assertEqual(matched(r, "/a", "DELETE"), "any")

    def test_methodMismatch(self) -> None:
        """
        A pattern without a route for the method does not match.
        """
        r = router(("/a", "POST", None, "post"))
        self.assertIsNone(r.match("GET", None, "/a"))

    def test_methodBacktracks(self) -> None:
        """
        A static pattern whose routes do not accept the method gives way to
        the parameter branch.
        """
        r = router(("/u/me", "POST", None, "me"), ("/u/{id}", "GET", None, "byId"))
        self.assertEqual(r.match("GET", None, "/u/me"), Match("byId", {"id": "me"}))
        self.assertEqual(r.match("POST", None, "/u/me"), Match("me", {}))

    def test_caseSensitive(self) -> None:
        """
        Request methods are case-sensitive (RFC 9110); route methods are
        upper-cased.
        """
        r = router(("/a", "get", None, "get"))
        self.assertEqual(matched(r, "/a", "GET"), "get")
        self.assertIsNone(r.match("get", None, "/a"))

    def test_headFallsBackToGet(self) -> None:
        """
        HEAD uses the GET route of a pattern that has no HEAD or C{*} route.
        """
        r = router(("/a", "GET", None, "get"))
        self.assertEqual(matched(r, "/a", "HEAD"), "get")
        self.assertIsNone(r.match("POST", None, "/a"))

    def test_headPrefersHeadAndAny(self) -> None:
        """
        HEAD prefers a HEAD route, then a C{*} route, to the GET route.
        """
        r = router(
            ("/a", "GET", None, "get"), ("/a", "HEAD", None, "head"), ("/a", "*", None, "any")
        )
        self.assertEqual(matched(r, "/a", "HEAD"), "head")
        r = router(("/a", "GET", None, "get"), ("/a", "*", None, "any"))
        self.assertEqual(matched(r, "/a", "HEAD"), "any")

    def test_headFallbackPerPattern(self) -> None:
        """
        The GET fallback is decided at the most specific pattern: HEAD on a
        static GET route does not go to a less specific C{*} route.
        """
        r = router(("/f/me", "GET", None, "get"), ("/f/{x}", "*", None, "any"))
        self.assertEqual(matched(r, "/f/me", "HEAD"), "get")
        self.assertEqual(matched(r, "/f/you", "HEAD"), "any")

    def test_onlyGetForHead(self) -> None:
        """
        Only HEAD falls back to GET.
        """
        r = router(("/a", "GET", None, "get"))
        self.assertIsNone(r.match("OPTIONS", None, "/a"))


@attrs.frozen
class Named:
    name: str


class ConflictTests(SynchronousTestCase):
    """
    Routes with the same canonical pattern, method and host conflict.
    """

    def test_sameCanonical(self) -> None:
        """
        Parameter names do not distinguish patterns; the message names both
        routes by their C{name}.
        """
        with self.assertRaises(RouteConflict) as ctx:
            Router(
                [
                    Route(parsePattern("/u/{id:int}/*"), "GET", None, Named("first")),
                    Route(parsePattern("/u/{n:int}/*"), "GET", None, Named("second")),
                ]
            )
        self.assertEqual(
            str(ctx.exception),
            "'first' and 'second' have the same URL pattern /u/{:int}/*,"
            " method GET and host any host",
        )
        self.assertEqual([r.value for r in ctx.exception.routes], [Named("first"), Named("second")])
        self.assertIsInstance(ctx.exception, ValueError)

    def test_reprWithoutName(self) -> None:
        """
        Values without a C{name} are named by their repr; the host is named.
        """
        with self.assertRaises(RouteConflict) as ctx:
            Router(
                [
                    Route(parsePattern("/caf%C3%A9/"), "*", "Example.com", 1),
                    Route(parsePattern("/café"), "*", "example.com:80", "two"),
                ]
            )
        self.assertEqual(
            str(ctx.exception),
            "1 and 'two' have the same URL pattern /caf%C3%A9, method * and host example.com",
        )

    def test_noConflict(self) -> None:
        """
        Different methods, hosts, types or regular expressions do not
        conflict.
        """
        r = Router(
            [
                Route(parsePattern("/a/{x}"), "GET", None, 1),
                Route(parsePattern("/a/{x}"), "*", None, 2),
                Route(parsePattern("/a/{x}"), "GET", "h", 3),
                Route(parsePattern("/a/{x}"), "GET", "*.h", 4),
                Route(parsePattern("/a/{x:int}"), "GET", None, 5),
                Route(parsePattern("/a/{x:re:1}"), "GET", None, 6),
                Route(parsePattern("/a/{x:re:2}"), "GET", None, 7),
                Route(parsePattern("/a/*"), "GET", None, 8),
                Route(parsePattern("/a"), "GET", None, 9),
            ]
        )
        self.assertEqual(len(r), 9)

    def test_wildcardConflict(self) -> None:
        """
        Two wildcard routes at the same place conflict.
        """
        with self.assertRaises(RouteConflict):
            router(("/a/*", "GET", None, 1), ("/a/*/", "GET", None, 2))

    def test_routeAcceptsText(self) -> None:
        """
        L{Route} parses a pattern given as text.
        """
        self.assertEqual(Route("/a/{b}").pattern, parsePattern("/a/{b}"))


# -- determinism and a reference model ----------------------------------------

FIXED_ROUTES = [
    ("/", "*", None),
    ("/*", "GET", None),
    ("/u", "GET", None),
    ("/u/me", "POST", None),
    ("/u/me", "GET", "api.example.com"),
    ("/u/{id:int}", "*", None),
    ("/u/{id:uuid}", "GET", None),
    ("/u/{name:alpha}", "GET", None),
    ("/u/{name:alnum}", "*", None),
    ("/u/{s:slug}", "*", None),
    ("/u/{s:re:[a-z]+}", "*", None),
    ("/u/{s:re:.+}", "DELETE", None),
    ("/u/{x}", "*", None),
    ("/u/{x}/posts", "GET", None),
    ("/u/{id:int}/posts/{p}", "GET", None),
    ("/u/me/posts", "GET", "*.example.com"),
    ("/u/*", "PUT", None),
    ("/f/*", "*", None),
    ("/f/static/{file}", "GET", None),
    ("/f/static/*", "HEAD", None),
]

FIXED_REQUESTS = [
    (method, host, path)
    for method in ("GET", "HEAD", "POST", "DELETE", "PUT")
    for host in (None, "api.example.com", "www.example.com")
    for path in (
        "/",
        "/u",
        "/u/",
        "/u/me",
        "/u/12",
        "/u/" + UUID,
        "/u/abc",
        "/u/ab1",
        "/u/a-b",
        "/u/a.b",
        "/u/12/posts",
        "/u/12/posts/3",
        "/u/me/posts",
        "/u/x/y/z",
        "/f",
        "/f/static/a.css",
        "/f/static/a/b",
        "/nothing/here",
    )
]


def fixedRoutes(order: Sequence[int]) -> List[Route]:
    return [
        Route(parsePattern(FIXED_ROUTES[i][0]), FIXED_ROUTES[i][1], FIXED_ROUTES[i][2], i)
        for i in order
    ]


def results(r: Router, requests: Sequence[Tuple[str, Optional[str], str]]) -> List[Any]:
    out = []
    for method, host, path in requests:
        m = r.match(method, host, path)
        out.append(None if m is None else (m.value, m.params))
    return out


class DeterminismTests(SynchronousTestCase):
    """
    The result never depends on the order the routes are given in.
    """

    def test_fixedExpectations(self) -> None:
        """
        A few exact results over the fixed route set.
        """
        r = Router(fixedRoutes(range(len(FIXED_ROUTES))))
        self.assertEqual(r.match("GET", None, "/u/me"), Match(7, {"name": "me"}))
        self.assertEqual(r.match("GET", "api.example.com", "/u/me"), Match(4, {}))
        self.assertEqual(r.match("POST", "api.example.com", "/u/me"), Match(3, {}))
        self.assertEqual(r.match("DELETE", None, "/u/a.b"), Match(11, {"s": "a.b"}))
        self.assertEqual(r.match("GET", None, "/u/a.b"), Match(12, {"x": "a.b"}))
        self.assertEqual(r.match("PUT", None, "/u/x/y"), Match(16, {"*": "x/y"}))
        # the plain parameter beats the wildcard, then HEAD falls back to its GET route
        self.assertEqual(r.match("HEAD", None, "/f/static/a.css"), Match(18, {"file": "a.css"}))
        self.assertEqual(r.match("HEAD", None, "/f/static/a/b"), Match(19, {"*": "a/b"}))
        self.assertEqual(r.match("GET", None, "/f/static/a/b"), Match(17, {"*": "static/a/b"}))
        self.assertEqual(r.match("HEAD", None, "/u/12/posts/3"), Match(14, {"id": "12", "p": "3"}))
        self.assertEqual(r.match("GET", "x.example.com", "/u/me/posts"), Match(15, {}))
        self.assertEqual(r.match("GET", None, "/u/me/posts"), Match(13, {"x": "me"}))

    @settings(max_examples=100, deadline=None)
    @given(st.permutations(range(len(FIXED_ROUTES))))
    def test_shuffled(self, order: List[int]) -> None:
        """
        Any insertion order gives the same results as the given order.
        """
        expected = results(Router(fixedRoutes(range(len(FIXED_ROUTES)))), FIXED_REQUESTS)
        self.assertEqual(results(Router(fixedRoutes(order)), FIXED_REQUESTS), expected)


_STATICS = ["a", "b", "1"]
_SEGMENT_PATTERNS = _STATICS + [
    "{p}",
    "{p:int}",
    "{p:alpha}",
    "{p:alnum}",
    "{p:slug}",
    "{p:uuid}",
    "{p:re:[ab1]+}",
    "{p:re:.1}",
]
_PATH_SEGMENTS = ["a", "b", "1", "-1", "ab", "a1", "b-", "11", "", UUID, "a%2F1", "%61"]
_METHODS = ["GET", "HEAD", "POST", "*"]
_HOSTS = [None, "h.test", "*.test", "x.h.test"]


@st.composite
def routeSpecs(draw: Any) -> Tuple[str, str, Optional[str]]:
    segs = draw(st.lists(st.sampled_from(_SEGMENT_PATTERNS), max_size=3))
    # rename the parameters so they are unique within the pattern
    segs = [s.replace("{p", f"{{p{i}") if s.startswith("{") else s for i, s in enumerate(segs)]
    if draw(st.booleans()):
        segs.append("*")
    return "/" + "/".join(segs), draw(st.sampled_from(_METHODS)), draw(st.sampled_from(_HOSTS))


def referenceMatch(
    routes: Sequence[Route], method: str, host: Optional[str], path: str
) -> Optional[Match]:
    """
    The documented rules, applied route by route: compute a priority key for
    every route that matches and take the smallest.
    """
    if host is not None:
        host = host.lower().split(":")[0]
    if path != "/" and path.endswith("/"):
        path = path[:-1]
    segments = [unquote(s) for s in path[1:].split("/")] if path != "/" else []
    if "." in segments or ".." in segments:
        return None
    best = None
    for route in routes:
        if route.host is None:
            hostKey: Tuple[int, int] = (2, 0)
        elif host is None:
            continue
        elif route.host == host:
            hostKey = (0, 0)
        elif route.host.startswith("*.") and host.endswith(route.host[1:]):
            hostKey = (1, -len(route.host))
        else:
            continue
        if route.method == method:
            methodKey = 0
        elif route.method == "*":
            methodKey = 1
        elif method == "HEAD" and route.method == "GET":
            methodKey = 2
        else:
            continue
        pathKey: List[Tuple[Any, ...]] = []
        params = {}
        ok = True
        for i, seg in enumerate(route.pattern.segments):
            if isinstance(seg, WildcardSegment):
                pathKey.append((3,))
                params["*"] = "/".join(segments[i:])
                break
            if i >= len(segments):
                ok = False
                break
            value = segments[i]
            if isinstance(seg, StaticSegment):
                ok = seg.text == value
                pathKey.append((0,))
            elif seg.type is None:
                ok = value != ""
                pathKey.append((2,))
            else:
                assert seg.check is not None
                ok = value != "" and bool(seg.check(value))
                pathKey.append((1, PARAM_TYPES.index(seg.type), seg.regex or ""))
            if not ok:
                break
            if isinstance(seg, ParamSegment):
                params[seg.name] = value
        else:
            ok = ok and len(route.pattern.segments) == len(segments)
        if not ok:
            continue
        key = (hostKey, pathKey, methodKey)
        if best is None or key < best[0]:
            best = (key, Match(route.value, params))
    return None if best is None else best[1]


class ReferenceModelTests(SynchronousTestCase):
    """
    The route tree agrees with a brute-force reading of the rules.
    """

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(routeSpecs(), max_size=25),
        st.lists(
            st.tuples(
                st.sampled_from(["GET", "HEAD", "POST", "PUT"]),
                st.sampled_from([None, "h.test", "X.H.test:81", "y.test", "other"]),
                st.lists(st.sampled_from(_PATH_SEGMENTS), max_size=5),
                st.booleans(),
            ),
            min_size=1,
            max_size=20,
        ),
        st.randoms(use_true_random=False),
    )
    def test_agrees(self, specs: List[Any], requests: List[Any], rnd: Any) -> None:
        """
        For random route sets (duplicates removed) and requests, the router
        returns what the reference model returns, whatever the route order.
        """
        seen = set()
        routes = []
        for i, (text, method, host) in enumerate(specs):
            route = Route(parsePattern(text), method, host, i)
            key = (route.pattern.canonical(), route.method, route.host)
            if key not in seen:
                seen.add(key)
                routes.append(route)
        shuffled = list(routes)
        rnd.shuffle(shuffled)
        r = Router(shuffled)
        for method, host, segs, slash in requests:
            path = "/" + "/".join(segs) + ("/" if slash and segs else "")
            self.assertEqual(
                r.match(method, host, path),
                referenceMatch(routes, method, host, path),
                (method, host, path),
            )


class ScaleTests(SynchronousTestCase):
    """
    Large route tables still match correctly.
    """

    def test_tenThousandRoutes(self) -> None:
        """
        With 10,000 static and parameter routes, every route is reached by
        its own path with its own parameters.
        """
        routes = []
        for i in range(2500):
            routes.append(Route(parsePattern(f"/svc{i}/items"), "GET", None, ("list", i)))
            routes.append(Route(parsePattern(f"/svc{i}/items/{{id:int}}"), "GET", None, ("int", i)))
            routes.append(Route(parsePattern(f"/svc{i}/items/{{slug}}"), "*", None, ("plain", i)))
            routes.append(Route(parsePattern(f"/svc{i}/files/*"), "GET", None, ("files", i)))
        r = Router(routes)
        self.assertEqual(len(r), 10000)
        for i in range(2500):
            self.assertEqual(r.match("GET", None, f"/svc{i}/items"), Match(("list", i), {}))
            self.assertEqual(
                r.match("GET", None, f"/svc{i}/items/{i}"), Match(("int", i), {"id": str(i)})
            )
            self.assertEqual(
                r.match("POST", None, f"/svc{i}/items/{i}"), Match(("plain", i), {"slug": str(i)})
            )
            self.assertEqual(
                r.match("GET", None, f"/svc{i}/items/x{i}"), Match(("plain", i), {"slug": f"x{i}"})
            )
            self.assertEqual(
                r.match("HEAD", None, f"/svc{i}/files/a/{i}"), Match(("files", i), {"*": f"a/{i}"})
            )
        self.assertIsNone(r.match("GET", None, "/svc2500/items"))
        self.assertIsNone(r.match("GET", None, "/svc1/other"))


_POOL = [
    "/",
    "/users",
    "/users/{id}",
    "/users/{id:int}",
    "/users/{id:int}/orders",
    "/users/me",
    "/users/*",
    "/files/*",
    "/files/{name:slug}",
    "/a/{x}/b/{y}",
    "/a/{x:alpha}/b",
    "/a/c/b",
    "/{any}",
    "/{any}/x",
    "/*",
]
_PROBES = [
    "/",
    "/users",
    "/users/7",
    "/users/me",
    "/users/abc",
    "/users/7/orders",
    "/users/x/y/z",
    "/files/a-b",
    "/files/a/b",
    "/a/q/b/r",
    "/a/qq/b",
    "/a/c/b",
    "/zz",
    "/zz/x",
    "/zz/y",
    "/nothing/at/all",
]


def _routeSet(indexes, methods, hosts):
    return [
        Route(parsePattern(_POOL[i]), method=m, host=h, value=f"r{i}-{m}-{h}")
        for i, m, h in zip(indexes, methods, hosts)
    ]


def _answers(router):
    return [
        ((m.value, dict(m.params)) if (m := router.match(method, host, path)) else None)
        for path in _PROBES
        for method in ("GET", "POST")
        for host in (None, "a.example.com")
    ]


class RouterUpdateTests(SynchronousTestCase):
    """
    Router.updated: a copy-on-write change equals a fresh build, and never
    changes the router it came from.
    """

    @settings(max_examples=150, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.integers(0, len(_POOL) - 1),
                st.sampled_from(["*", "GET"]),
                st.sampled_from([None, "a.example.com", "*.example.com"]),
            ),
            unique=True,
            max_size=12,
        ),
        st.data(),
    )
    def test_updatedEqualsFresh(self, specs, data) -> None:
        """
        Removing some routes and adding others gives a router that answers
        every probe as a router built from scratch with the same routes, and
        the original router still answers as before.
        """
        routes = _routeSet(*zip(*specs)) if specs else []
        router = Router(routes)
        before = _answers(router)
        removed = [r for r in routes if data.draw(st.booleans())]
        kept = [r for r in routes if r not in removed]
        taken = {(str(r.pattern.canonical()), r.method, r.host) for r in kept}
        extra = data.draw(
            st.lists(
                st.tuples(
                    st.integers(0, len(_POOL) - 1),
                    st.sampled_from(["*", "GET"]),
                    st.sampled_from([None, "a.example.com", "*.example.com"]),
                ),
                unique=True,
                max_size=5,
            )
        )
        added = [
            r
            for r in (_routeSet(*zip(*extra)) if extra else [])
            if (str(r.pattern.canonical()), r.method, r.host) not in taken
        ]
        added = list({(str(r.pattern.canonical()), r.method, r.host): r for r in added}.values())
        updated = router.updated(removed, added)
        self.assertEqual(_answers(updated), _answers(Router(kept + added)))
        self.assertEqual(_answers(router), before)
        self.assertEqual(len(updated), len(kept) + len(added))

    def test_updateConflict(self) -> None:
        """
        Adding a route that conflicts with a kept one raises RouteConflict,
        and the original router is unchanged.
        """
        first = Route(parsePattern("/a/{x}"), method="GET", value="first")
        router = Router([first])
        with self.assertRaises(RouteConflict):
            router.updated([], [Route(parsePattern("/a/{y}"), method="GET", value="second")])
        self.assertEqual(router.match("GET", None, "/a/1").value, "first")
