"""
Tests for L{gateway.model.regex}: users' regular expressions are matched in
linear time, with the semantics the README documents, and a pattern the
engine cannot take is refused when it is saved, naming its field.
"""

from __future__ import annotations

import time
from typing import Any, Dict

from test_admin_api import API, ROUTING, APITestCase
from twisted.trial.unittest import SynchronousTestCase

from gateway.model.regex import (
    MAX_PATTERN_LENGTH,
    WIDE,
    RegexError,
    compileCost,
    compileRegex,
)
from gateway.model.resources import Routing
from gateway.model.schema import ValidationError, fromJSON
from gateway.model.urlpattern import parsePattern
from gateway.routing.router import Route, Router

#: The issue's case: a pattern that backtracks exponentially in Python's
#: C{re}, and a value that makes it (minutes for C{re.search}).
HOSTILE_PATTERN = "^(a+)+$"
HOSTILE_VALUE = "a" * 33 + "!"


class MatchingTests(SynchronousTestCase):
    """
    L{Regex.matches} finds the pattern anywhere in the text, or matches the
    whole text when compiled with C{whole=True}.
    """

    def test_search(self) -> None:
        """
        C{search} is true when the pattern matches somewhere in the text;
        anchors tie it to the ends, and C{$} also matches before a final
        newline, as in Python's C{re}.
        """
        regex = compileRegex("o w")
        self.assertFalse(regex.whole)
        self.assertTrue(regex.matches("hello world"))
        self.assertFalse(regex.matches("hello-world"))
        self.assertFalse(compileRegex("^world").matches("hello world"))
        self.assertTrue(compileRegex(r"^user-\d+$").matches("user-1234"))
        self.assertFalse(compileRegex(r"^user-\d+$").matches("user-12a"))
        self.assertTrue(compileRegex("^beta$").matches("beta\n"))
        self.assertFalse(compileRegex(r"^beta\z").matches("beta\n"))
        self.assertTrue(compileRegex("").matches(""))

    def test_fullmatch(self) -> None:
        """
        C{fullmatch} is true only when the pattern matches the whole text,
        whatever the alternation order, and with an empty text when the
        pattern allows it.
        """
        regex = compileRegex(r"[a-c]+\d", whole=True)
        self.assertTrue(regex.whole)
        self.assertTrue(regex.matches("ab1"))
        self.assertFalse(regex.matches("xab1"))
        self.assertFalse(regex.matches("ab1x"))
        self.assertFalse(regex.matches("ab1\n"))
        self.assertTrue(compileRegex(r"[a-c]+\d").matches("xab1x"))
        self.assertTrue(compileRegex("a|ab", whole=True).matches("ab"))
        self.assertTrue(compileRegex("a*", whole=True).matches(""))
        self.assertFalse(compileRegex("a+", whole=True).matches(""))
        self.assertTrue(compileRegex("(?i)abc", whole=True).matches("aBc"))

    def test_unicode(self) -> None:
        """
        Patterns and texts are Unicode: C{.} and classes take whole
        characters, literals and ranges may be any character, C{(?i)}
        folds Unicode case; C{\\w}, C{\\d} and C{\\b} are ASCII, as in RE2.
        """
        self.assertTrue(compileRegex("^.$").matches("\U0001f600"))
        self.assertTrue(compileRegex("^caf.$").matches("café"))
        self.assertTrue(compileRegex("[é-ë]", whole=True).matches("ê"))
        self.assertTrue(compileRegex("(?i)CAFÉ", whole=True).matches("café"))
        self.assertTrue(compileRegex(r"[a-z\x{E0}-\x{FF}]+", whole=True).matches("naïve"))
        self.assertTrue(compileRegex(r"\x{1F600}").matches("smile \U0001f600"))
        self.assertFalse(compileRegex(r"^\w+$").matches("café"))
        self.assertFalse(compileRegex(r"\d").matches("\u0663"))
        self.assertTrue(compileRegex(r"\bbeta\b").matches("x beta y"))
        self.assertFalse(compileRegex(r"\bbeta\b").matches("alphabetagamma"))

    def test_lone_surrogates(self) -> None:
        """
        Text with a lone surrogate (a JSON string may hold C{"\\ud800"}) is
        matched with U+FFFD in its place.
        """
        self.assertTrue(compileRegex("^a.b$").matches("a\ud800b"))
        self.assertTrue(compileRegex("\ufffd").matches("\udfff"))

    def test_cached(self) -> None:
        """
        Compiling the same pattern again, for the same use, gives the same
        object.
        """
        self.assertIs(compileRegex("cached-[0-9]+"), compileRegex("cached-[0-9]+"))
        self.assertIsNot(compileRegex("cached-[0-9]+"), compileRegex("cached-[0-9]+", whole=True))

    def test_linear_time(self) -> None:
        """
        The issue's pattern and value are answered at once (Python's C{re}
        takes minutes), and so are adversarial texts of 64 KiB against
        patterns that make backtracking or lazy automata slow.
        """
        cases = [
            (HOSTILE_PATTERN, HOSTILE_VALUE),
            (HOSTILE_PATTERN, "a" * 65536 + "!"),
            ("(a|aa)+$", "a" * 65536 + "!"),
            ("(.*a){20}", "a" * 65536),
            ("a[ab]{200}c", "ab" * 32768),
            (r"(\w+\s*){20}!", "word " * 13000),
            (".{99}x", "\u00e9" * 65536),
        ]
        for pattern, text in cases:
            search = compileRegex(pattern)
            whole = compileRegex(pattern, whole=True)
            started = time.perf_counter()
            search.matches(text)
            whole.matches(text)
            elapsed = time.perf_counter() - started
            # Milliseconds here; generous for a loaded machine.
            self.assertLess(elapsed, 0.5, pattern)


class RefusalTests(SynchronousTestCase):
    """
    A pattern the linear-time engine cannot take is refused by
    L{compileRegex} with a L{RegexError} naming the field.
    """

    def assertRefused(self, pattern: Any, reason: str = "") -> RegexError:
        with self.assertRaises(ValidationError) as e:
            compileRegex(pattern, "value")
        self.assertEqual(e.exception.field, "value")
        self.assertIn(reason, e.exception.message)
        return e.exception  # type: ignore[return-value]

    def test_backtracking_constructs(self) -> None:
        """
        Backreferences, lookaround, atomic groups, possessive quantifiers,
        conditionals and recursion are refused.
        """
        for pattern in [
            r"(a)\1",
            r"(?P<x>a)(?P=x)",
            r"a(?=b)",
            r"a(?!b)",
            r"(?<=a)b",
            r"(?<!a)b",
            r"(?>a+)b",
            r"a++b",
            r"(a)?(?(1)b|c)",
            r"(?R)",
        ]:
            error = self.assertRefused(pattern, "invalid regular expression: ")
            self.assertIn("linear time", error.message)

    def test_other_syntax(self) -> None:
        """
        Invalid patterns, escapes the engine lacks, Python's own flags, a
        NUL, an unterminated C{\\Q}, patterns too long or whose automaton
        would be too large are refused.
        """
        for pattern in ["(", "[a-", r"\u00e9", r"\N{DIGIT ONE}", "(?a)x", "(?u)x"]:
            self.assertRefused(pattern)
        self.assertRefused("a\0b", "NUL")
        self.assertRefused("a" * (MAX_PATTERN_LENGTH + 1), "longer than")
        self.assertRefused("\ud800", "Unicode")
        self.assertRefused("ab" * (MAX_PATTERN_LENGTH // 2))
        self.assertIsNotNone(compileRegex("(a|b)" * (MAX_PATTERN_LENGTH // 5)))
        with self.assertRaises(RegexError) as e:
            compileRegex(r"\Qabc", whole=True)
        self.assertIn("\\Q", e.exception.reason)

    def test_too_costly(self) -> None:
        """
        Patterns whose automaton would take long to build are refused
        before Hyperscan is asked (C{.{1000}} takes a second, a Unicode
        property class a tenth of a second a copy): L{compileCost} over
        L{MAX_COST}, a counted repeat over L{MAX_REPEAT}, any C{\\p{...}}.
        """
        for pattern in [
            ".{1000}",
            ".{101}",
            "(ab|cd|ef){1000}",
            "(abc|def|ghi|jkl|mno){66}",
            "[^a]{500}",
            "(?i)[a-z]{500}",
            "[a-z]{1001}",
        ]:
            started = time.perf_counter()
            self.assertRefused(pattern)
            self.assertLess(time.perf_counter() - started, 0.1, pattern)
        for pattern in [r"\p{L}", r"[\p{L}\d]", r"\PL", r"\p{Greek}+"]:
            self.assertRefused(pattern, "Unicode property")
        self.assertRefused("a{1001}", "over 1000")
        self.assertIsNotNone(compileRegex(".{100}"))
        self.assertIsNotNone(compileRegex("[a-z]{1000}"))

    def test_cost(self) -> None:
        """
        L{compileCost} counts characters, wide atoms and the copies counted
        repeats make.
        """
        self.assertEqual(compileCost("abc"), 3)
        self.assertEqual(compileCost("^v[0-9]+$"), 3)
        self.assertEqual(compileCost(".{10}"), 10 * WIDE)
        self.assertEqual(compileCost("(ab|cd){10}"), 4 + 4 * 2 * 9)
        self.assertEqual(compileCost("(?i)ab"), 4)
        self.assertEqual(compileCost("(?#{999})x\\{5}"), 4)
        self.assertEqual(compileCost("x{,3}"), 5)

    def test_not_a_string(self) -> None:
        """
        A value that is not a string is refused.
        """
        with self.assertRaises(ValidationError) as e:
            compileRegex(["a"], "value")  # type: ignore[arg-type]
        self.assertEqual(e.exception.field, "value")


def routing(value: Any) -> Dict[str, Any]:
    return {
        "name": "r",
        "cluster": "c",
        "conditions": [{"source": "header", "name": "X-R", "op": "match", "value": value}],
    }


class ModelTests(SynchronousTestCase):
    """
    The model compiles every pattern when a resource is parsed: a routing's
    C{match} value and an API's C{re:} parameter types.
    """

    def test_condition(self) -> None:
        """
        A C{match} condition with a pattern the engine refuses is invalid,
        naming C{conditions[0].value}; the issue's pattern is accepted (it
        is harmless now).
        """
        with self.assertRaises(ValidationError) as e:
            fromJSON(Routing, routing(r"(a)\1"))
        self.assertEqual(e.exception.field, "conditions[0].value")
        self.assertIn("Back-references", e.exception.message)
        fromJSON(Routing, routing(HOSTILE_PATTERN))

    def test_url_pattern(self) -> None:
        """
        A C{re:} type the engine refuses makes the pattern invalid, naming
        the parameter and the pattern.
        """
        with self.assertRaises(ValueError) as e:
            parsePattern("/x/{id:re:(?=a)a}")
        self.assertIn("for parameter 'id'", str(e.exception))
        self.assertIn("(?=a)a", str(e.exception))

    def test_router_hostile_segment(self) -> None:
        """
        A route with the issue's pattern as a C{re:} type is matched against
        the hostile segment at once, and still matches what it should.
        """
        router = Router([Route("/x/{id:re:(a+)+}", value="x")])
        started = time.perf_counter()
        self.assertIsNone(router.match("GET", None, "/x/" + HOSTILE_VALUE))
        self.assertLess(time.perf_counter() - started, 0.5)
        found = router.match("GET", None, "/x/aaaa")
        assert found is not None
        self.assertEqual(found.params, {"id": "aaaa"})


class AdminRefusalTests(APITestCase):
    """
    The admin refuses, with 400 naming the field, a pattern the engine
    cannot take, and saves nothing.
    """

    def test_condition_value(self) -> None:
        """
        A routing whose C{match} condition has a lookahead is refused with
        400 naming C{conditions[0].value}.
        """
        self.seed("clusters")
        body = dict(
            ROUTING,
            conditions=[{"source": "header", "name": "X-R", "op": "match", "value": "a(?=b)"}],
        )
        revision = self.state().revision
        code, _, error = self.call("PUT", "/routings/r1", body)
        self.assertEqual((code, error["field"]), (400, "conditions[0].value"), error)
        self.assertIn("regular expression", error["error"])
        self.assertEqual(self.state().revision, revision)

    def test_url_pattern(self) -> None:
        """
        An API whose URL pattern has a C{re:} type with a backreference is
        refused with 400 naming C{urlPattern}.
        """
        self.seed("clusters")
        body = dict(API, urlPattern=r"/users/{id:re:(a)\1}")
        code, _, error = self.call("PUT", "/apis/a1", body)
        self.assertEqual((code, error["field"]), (400, "urlPattern"), error)
        self.assertIn("regular expression", error["error"])

    def test_hostile_pattern_accepted(self) -> None:
        """
        The issue's pattern is accepted for both uses: it cannot freeze the
        gateway any more.
        """
        self.seed("clusters")
        api = dict(API, urlPattern="/users/{id:re:(a+)+}")
        self.assertEqual(self.call("PUT", "/apis/a1", api)[0], 201)
        body = dict(
            ROUTING,
            conditions=[
                {"source": "header", "name": "X-R", "op": "match", "value": HOSTILE_PATTERN}
            ],
        )
        self.assertEqual(self.call("PUT", "/routings/r1", body)[0], 201)
