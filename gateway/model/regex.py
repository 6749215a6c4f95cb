"""
Users' regular expressions (routing C{match} conditions, C{re:} URL
parameter types), matched in time linear in the text whatever the pattern.

Python's C{re} backtracks: C{^(a+)+$} against C{"a" * 33 + "!"} takes
minutes, and a gateway matches on its only thread, so one such pattern and
one request froze every connection of the process.  Every pattern an
operator writes is compiled here instead, by an automaton engine that never
backtracks, and a pattern the engine cannot run in linear time is refused
when it is saved (L{compileRegex} raises L{ValidationError}).

The engine: Hyperscan
=====================
Three engines with RE2-like guarantees install from binary wheels on both
CPython 3.11 and PyPy 3.9 (C{google-re2} and C{pyre2} have no PyPy wheels).
Measured here (x86-64; a 3-character text; the issue's hostile case is a
C{^(a+)+$} search of C{"a" * 33 + "!"}):

  - C{hyperscan} (Intel's Hyperscan, a bundled library; releases in 2026):
    0.4 microseconds a match on CPython, 3 on PyPy (a Python call back per
    match, through C{cpyext} on PyPy); the hostile case well under a
    millisecond, adversarial 64 KiB texts at most half a millisecond
    whatever the accepted pattern: its automata have a bounded state, and
    a pattern whose automaton would be too large is refused at compile
    time.  Compiling takes about a millisecond, more for large repeats of
    large classes (see below).
  - C{regex-rs} (the Rust C{regex} crate): 0.1 microseconds a match on
    both, but its last release is from 2023 and has no wheels for Python
    3.13; and its time per byte grows with the size of the compiled
    pattern: an accepted C{a.{1000}c} took 300 ms over a 64 KiB text.
  - C{rure}: unmaintained since 2019.

Hyperscan is maintained, has wheels for every interpreter the gateway runs
on, and bounds the time a request can spend in a pattern, which is what
matters here; the cost per match is far below that of proxying a request.
Its last release with Python 3.9 wheels (CPython and PyPy) is 0.7.8, hence
the two pins, by Python version, in C{setup.cfg}.

The syntax (README.md, "Regular expressions", says the same for users)
======================================================================
Patterns are compiled with C{HS_FLAG_UTF8} (the pattern and the text are
Unicode, C{.} and classes take whole characters), C{HS_FLAG_ALLOWEMPTY}
and C{HS_FLAG_SINGLEMATCH}, and without C{HS_FLAG_UCP}, which gives RE2's
semantics:

  - accepted: literals (any Unicode), C{.}, classes C{[...]} with ranges,
    C{\\d \\w \\s} and their negations (ASCII, as in RE2; Unicode classes are
    written C{\\p{L}}, C{\\p{N}}, C{\\p{Greek}}...), POSIX classes
    C{[[:alpha:]]}, anchors C{^ $ \\A \\Z \\z} and word boundaries C{\\b \\B},
    groups C{(...)}, C{(?:...)}, C{(?P<name>...)}, alternation, every
    quantifier (C{* + ? {n} {n,} {n,m}} and their lazy forms), inline
    flags C{(?i) (?m) (?s) (?x)} (C{(?i)} folds Unicode case), comments
    C{(?#...)}, escapes C{\\x41 \\x{1F600} \\t \\n} and C{\\Q...\\E};
  - refused at save time, with a 400 naming the field: backreferences
    (C{\\1}, C{(?P=name)}), lookahead and lookbehind, atomic groups,
    possessive quantifiers, conditionals, recursion, C{\\G \\K \\X},
    C{\\u} and C{\\N{...}} escapes (write C{\\x{...}}), Python's C{(?a)}
    and C{(?u)} flags, a NUL character (write C{\\x00}), patterns longer
    than L{MAX_PATTERN_LENGTH} characters, and patterns whose automaton
    is too large (C{\\w{1000}}, C{.{5000}}, C{\\p{L}{100}}).

A pattern the old engine (Python's C{re}) took with another meaning:
C{\\d \\w \\s \\b} were Unicode-aware (C{\\w} matched C{é}), and C{$} still
matches before a final newline in a C{match} condition, as it did.

How a pattern is applied
========================
L{Regex.search} says whether the pattern matches anywhere in the text
(C{re.search}), L{Regex.fullmatch} whether it matches the whole text
(C{re.fullmatch}: the pattern is compiled a second time as
C{\\A(?:pattern)\\z}).  Both forms are compiled, and so checked, when the
pattern is: a pattern is accepted or refused whatever it is used for.
Text with lone surrogates (a JSON string may carry C{"\\ud800"}) is
matched with U+FFFD in their place.

Compiling costs about a millisecond a form (more, up to seconds before a
refusal, for large repeats of large Unicode classes such as
C{(?i)(\\p{L}\\s){30}}), on the thread that compiles: a compiled pattern is
kept (L{compileRegex} remembers the last L{CACHE_SIZE} patterns), so that a
routing snapshot rebuilt after a change compiles only the patterns that
are new.  A L{Regex} holds one Hyperscan scratch space per form, so it
must be used by one thread at a time (the gateway matches on its reactor
thread only).
"""

from __future__ import annotations

from typing import Any, Dict, List

import hyperscan

from gateway.model.schema import ValidationError

__all__ = [
    "CACHE_SIZE",
    "MAX_PATTERN_LENGTH",
    "Regex",
    "RegexError",
    "compileRegex",
]


MAX_PATTERN_LENGTH = 1024


"""
The longest pattern accepted, in characters.
"""


CACHE_SIZE = 1024


"""
How many compiled patterns L{compileRegex} keeps.
"""


_FLAGS = hyperscan.HS_FLAG_UTF8 | hyperscan.HS_FLAG_ALLOWEMPTY | hyperscan.HS_FLAG_SINGLEMATCH


def _utf8(text: str) -> bytes:
    """
    @return: C{text} in UTF-8, lone surrogates replaced by U+FFFD (Hyperscan
        must be given valid UTF-8).
    """
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        fixed = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
        return fixed.encode("utf-8")


class _Form:
    """
    One compiled expression and its scratch space.
    """

    __slots__ = ("_database", "_scratch", "_found", "_onMatch")

    def __init__(self, expression: bytes) -> None:
        """
        @raise hyperscan.error: when Hyperscan refuses the expression.
        """
        database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        database.compile(expressions=[expression], flags=_FLAGS)
        self._database = database
        self._scratch = hyperscan.Scratch(database)
        self._found = False
        # Made once: a bound method made per scan would cost an allocation.
        self._onMatch = self._matched

    def _matched(self, expressionId: int, start: int, end: int, flags: int, context: Any) -> None:
        # HS_FLAG_SINGLEMATCH: called at most once per scan.  Returning
        # None (rather than asking to stop) spares an exception per match.
        self._found = True

    def matches(self, data: bytes) -> bool:
        self._found = False
        self._database.scan(data, match_event_handler=self._onMatch, scratch=self._scratch)
        return self._found


class Regex:
    """
    A user's regular expression, compiled; build one with L{compileRegex}.

    @ivar pattern: the pattern as written.
    """

    __slots__ = ("pattern", "_search", "_whole")

    def __init__(self, pattern: str, search: _Form, whole: _Form) -> None:
        self.pattern = pattern
        self._search = search
        self._whole = whole

    def __repr__(self) -> str:
        return f"<Regex {self.pattern!r}>"

    def search(self, text: str) -> bool:
        """
        @return: whether the pattern matches somewhere in C{text}
            (C{re.search}).
        """
        return self._search.matches(_utf8(text))

    def fullmatch(self, text: str) -> bool:
        """
        @return: whether the pattern matches the whole of C{text}
            (C{re.fullmatch}).
        """
        return self._whole.matches(_utf8(text))


_cache: Dict[str, Regex] = {}


class RegexError(ValidationError):
    """
    A pattern is refused.

    @ivar reason: why, without the field (C{message} is C{"invalid regular
        expression: "} and the reason).
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(field, f"invalid regular expression: {reason}")
        self.reason = reason


_LINEAR = (
    " (patterns are matched in linear time: no backreferences, lookaround, atomic groups"
    " or possessive quantifiers)"
)


def _engineReason(error: Exception) -> str:
    return (str(error).strip().rstrip(".") or type(error).__name__) + _LINEAR


def compileRegex(pattern: str, field: str = "") -> Regex:
    """
    Compile a user's regular expression (see the module docstring for the
    syntax).

    @param pattern: the pattern.
    @param field: the field that holds it, named by the error.
    @return: the L{Regex}; the same object for the same pattern while it
        is remembered.
    @raise RegexError: for C{field}, when the pattern is invalid or cannot
        be matched in linear time.
    @raise ValidationError: when C{pattern} is not a string.
    """
    if not isinstance(pattern, str):
        raise ValidationError(field, "must be a regular expression string")
    found = _cache.get(pattern)
    if found is not None:
        return found
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise RegexError(field, f"longer than {MAX_PATTERN_LENGTH} characters")
    if "\0" in pattern:
        raise RegexError(field, "a NUL character (write \\x00)")
    try:
        encoded = pattern.encode("utf-8")
    except UnicodeEncodeError:
        raise RegexError(field, "not valid Unicode (a lone surrogate)")
    try:
        search = _Form(encoded)
    except hyperscan.error as e:
        raise RegexError(field, _engineReason(e))
    try:
        whole = _Form(b"\\A(?:" + encoded + b")\\z")
    except hyperscan.error as e:
        # The pattern alone compiled: what follows it was swallowed (an
        # unterminated \Q), or made it too big.
        raise RegexError(field, _engineReason(e) + "; a pattern may not end inside \\Q")
    regex = Regex(pattern, search, whole)
    if len(_cache) >= CACHE_SIZE:
        # The oldest goes (dicts keep their insertion order).
        oldest: List[str] = list(_cache)[: CACHE_SIZE // 4]
        for key in oldest:
            del _cache[key]
    _cache[pattern] = regex
    return regex
