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
    0.4 to 0.6 microseconds a match on CPython, 3 to 5 on PyPy (a call back per
    match, through C{cpyext} on PyPy); the hostile case well under a
    millisecond, adversarial 64 KiB texts at most half a millisecond
    whatever the accepted pattern: its automata have a bounded state, and
    a pattern whose automaton would be too large is refused at compile
    time.  Compiling takes about a millisecond, far more for large repeats
    and Unicode classes (see "What compiling costs").
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
and C{HS_FLAG_SINGLEMATCH}, and without C{HS_FLAG_UCP} (with it, C{\\b} is
refused and C{\\w} compiles as slowly as C{\\p{L}}), which gives RE2's
semantics:

  - accepted: literals (any Unicode), C{.}, classes C{[...]} with ranges
    (C{[\\x{0400}-\\x{04FF}]}), C{\\d \\w \\s} and their negations (ASCII,
    as in RE2), POSIX classes C{[[:alpha:]]}, anchors C{^ $ \\A \\Z \\z},
    word boundaries C{\\b \\B}, groups C{(...)}, C{(?:...)},
    C{(?P<name>...)}, alternation, every quantifier (C{* + ? {n} {n,}
    {n,m}} and their lazy forms), inline flags C{(?i) (?m) (?s) (?x)}
    (C{(?i)} folds Unicode case), comments C{(?#...)}, escapes C{\\x41
    \\x{1F600} \\t \\n} and C{\\Q...\\E};
  - refused at save time, with a 400 naming the field: backreferences
    (C{\\1}, C{(?P=name)}), lookahead and lookbehind, atomic groups,
    possessive quantifiers, conditionals, recursion, C{\\G \\K \\X},
    C{\\u} and C{\\N{...}} escapes (write C{\\x{...}}), Python's C{(?a)}
    and C{(?u)} flags, a NUL character (write C{\\x00}), Unicode property
    classes C{\\p{...}} (Python's C{re} had none either: see below),
    patterns longer than L{MAX_PATTERN_LENGTH} characters, counted repeats
    over L{MAX_REPEAT}, and patterns that would take long to compile
    (L{compileCost} over L{MAX_COST}: C{.{101}}, C{(ab|cd|ef){1000}}).

What the old engine (Python's C{re}) took with another meaning: C{\\d \\w
\\s \\b} were Unicode-aware (C{\\w} matched C{é}).  C{$} still matches
before a final newline, as it did.

How a pattern is applied
========================
L{compileRegex} compiles a pattern for one use: found anywhere in the text
(C{re.search}, a C{match} condition), or matching the whole text
(C{re.fullmatch}, a C{re:} type: compiled as C{\\A(?:pattern)\\z}).
L{Regex.matches} says whether it does.  Text with lone surrogates (a JSON
string may carry C{"\\ud800"}) is matched with U+FFFD in their place.

What compiling costs
====================
Matching is cheap and bounded; compiling is not: Hyperscan builds its
automata when a pattern is compiled, on the thread that compiles (the
reactor's, when a change is saved and when a snapshot is built), and its
time grows with the automaton: C{.{1000}} takes a second, C{\\p{L}} (650
ranges of code points in UTF-8) a tenth of a second for each copy.  So a
pattern is refused, before Hyperscan is asked, when L{compileCost}, a
deterministic estimate, passes L{MAX_COST}, and Unicode property classes
are refused outright; patterns under the limit compile in milliseconds,
half a second for the worst of 10,000 random ones near it.  A compiled
pattern is kept (the last L{CACHE_SIZE}), so a snapshot rebuilt after a
change compiles only the patterns that are new.  A L{Regex} holds a
Hyperscan scratch space, so it must be used by one thread at a time (the
gateway matches on its reactor thread only).
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Tuple

import hyperscan

from gateway.model.schema import ValidationError

__all__ = [
    "CACHE_SIZE",
    "MAX_COST",
    "MAX_PATTERN_LENGTH",
    "MAX_REPEAT",
    "WIDE",
    "Regex",
    "RegexError",
    "compileCost",
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


def _database(expression: bytes) -> Any:
    """
    @return: the Hyperscan database of one expression.
    @raise hyperscan.error: when Hyperscan refuses the expression.
    """
    database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    database.compile(expressions=[expression], flags=_FLAGS)
    return database


class Regex:
    """
    A user's regular expression, compiled; build one with L{compileRegex}.

    @ivar pattern: the pattern as written.
    @ivar whole: whether it must match the whole text (else anywhere).
    """

    __slots__ = ("pattern", "whole", "_database", "_scratch", "_found", "_onMatch")

    def __init__(self, pattern: str, whole: bool, database: Any) -> None:
        self.pattern = pattern
        self.whole = whole
        self._database = database
        self._scratch = hyperscan.Scratch(database)
        self._found = False
        # Made once: a bound method made per scan would cost an allocation.
        self._onMatch = self._matched

    def __repr__(self) -> str:
        return f"<Regex {self.pattern!r}{' (whole)' if self.whole else ''}>"

    def _matched(self, expressionId: int, start: int, end: int, flags: int, context: Any) -> None:
        # HS_FLAG_SINGLEMATCH: called at most once per scan.  Returning
        # None (rather than asking to stop) spares an exception per match.
        self._found = True

    def matches(self, text: str) -> bool:
        """
        @return: whether the pattern matches the whole of C{text} (as
            C{re.fullmatch}) when L{whole}, else somewhere in it (as
            C{re.search}).
        """
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            data = _utf8(text)
        self._found = False
        # (data, match_event_handler, flags, context, scratch): positional
        # arguments are parsed faster than keywords.
        self._database.scan(data, self._onMatch, 0, None, self._scratch)
        return self._found


_cache: Dict[Tuple[str, bool], Regex] = {}


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


# -- what a pattern costs to compile ----------------------------------------------

#: What an atom matching one of many characters costs (C{.}, a negated
#: class, a class of non-ASCII characters, C{\\W}, any class under C{(?i)}):
#: its UTF-8 automaton has many states, and Hyperscan's compile time grows
#: with the states of every copy a counted repeat makes.
WIDE = 10


#: The largest L{compileCost} accepted.  Measured on 10,000 random patterns
#: under it: compiling takes milliseconds for most, half a second for the
#: worst (C{.{100}}: 40 ms; an alternation of 140 words: 60 ms).
MAX_COST = 1000


#: The largest count of a counted repeat C{{n,m}} (RE2's limit).
MAX_REPEAT = 1000


_COUNTED = re.compile(r"\{([0-9]+)(,([0-9]*))?\}")


#: A group that only sets flags, C{(?i)}, C{(?x-s)}: no group.
_FLAGS_ONLY = re.compile(r"\(\?[a-zA-Z]*(?:-[a-zA-Z]*)?\)")


#: The opening of a group, whatever its kind.
_GROUP_OPEN = re.compile(
    r"\((?:\?(?:P?<[A-Za-z_][A-Za-z0-9_]*>|'[A-Za-z_][A-Za-z0-9_]*'|<=|<!|[:=!>|]"
    r"|[a-zA-Z]*(?:-[a-zA-Z]*)?:))?"
)


#: Flags that turn caseless matching on somewhere.
_CASELESS = re.compile(r"\(\?[a-zA-Z]*i")


_UNSUPPORTED_PROPERTY = (
    "Unicode property classes (\\p{...}, \\P{...}) are not supported: their automata take"
    " seconds to build; write ranges of code points such as [\\x{0400}-\\x{04FF}]"
)


def _skipBraces(pattern: str, i: int) -> int:
    """
    @return: the index after the C{{...}}, C{<...>} or C{'...'} at C{i},
        if there is one there, else C{i}.
    """
    closing = {"{": "}", "<": ">", "'": "'"}.get(pattern[i : i + 1])
    if closing is None:
        return i
    end = pattern.find(closing, i + 1)
    return len(pattern) if end == -1 else end + 1


def _escapeCost(pattern: str, i: int, caseless: bool) -> Tuple[int, int]:
    """
    @return: C{(next index, cost)} of the escape at C{pattern[i]}.
    @raise ValueError: for a Unicode property class.
    """
    code = pattern[i + 1 : i + 2]
    after = i + 2
    if code in ("p", "P"):
        raise ValueError(_UNSUPPORTED_PROPERTY)
    if code == "Q":
        end = pattern.find("\\E", after)
        quoted = pattern[after:] if end == -1 else pattern[after:end]
        cost = sum(2 if caseless and c.isalpha() else 1 for c in quoted)
        return (len(pattern) if end == -1 else end + 2), cost
    if code in ("x", "o"):
        if pattern[after : after + 1] == "{":
            return _skipBraces(pattern, after), 1
        while after < len(pattern) and after < i + 4 and pattern[after] in _HEX:
            after += 1
        return after, 1
    if code in ("k", "g"):
        return _skipBraces(pattern, after), 1
    if code == "c":
        return after + 1, 1
    if code.isdigit():
        while after < len(pattern) and pattern[after].isdigit():
            after += 1
        return after, 1
    if code in ("b", "B", "A", "z", "Z", "G", "E", "K"):
        return after, 0
    if code in ("D", "W", "S", "H", "V", "N", "R", "X", "C"):
        return after, WIDE
    if code in ("d", "w", "s", "h", "v"):
        return after, WIDE if caseless else 1
    return after, 2 if caseless and code.isalpha() else 1


_HEX = frozenset("0123456789abcdefABCDEF")


def _classCost(pattern: str, i: int, caseless: bool) -> Tuple[int, int]:
    """
    @return: C{(next index, cost)} of the character class opening at
        C{pattern[i]}.
    @raise ValueError: for a Unicode property class inside it.
    """
    n = len(pattern)
    j = i + 1
    wide = caseless
    if pattern[j : j + 1] == "^":
        wide = True
        j += 1
    if pattern[j : j + 1] == "]":
        j += 1
    while j < n:
        c = pattern[j]
        if c == "\\":
            code = pattern[j + 1 : j + 2]
            if code in ("p", "P"):
                raise ValueError(_UNSUPPORTED_PROPERTY)
            if code == "Q":
                end = pattern.find("\\E", j + 2)
                quoted = pattern[j + 2 :] if end == -1 else pattern[j + 2 : end]
                wide = wide or not quoted.isascii()
                j = n if end == -1 else end + 2
                continue
            if code in ("x", "o") and pattern[j + 2 : j + 3] == "{":
                # A code point given in braces may be beyond ASCII.
                wide = True
                j = _skipBraces(pattern, j + 2)
                continue
            if code in ("D", "W", "S", "H", "V", "N", "R"):
                wide = True
            j += 2
            continue
        if c == "[" and pattern[j + 1 : j + 2] == ":":
            end = pattern.find(":]", j + 2)
            if end != -1:
                wide = wide or pattern[j + 2 : j + 3] == "^"
                j = end + 2
                continue
        if c == "]":
            return j + 1, WIDE if wide else 1
        if ord(c) > 0x7F:
            wide = True
        j += 1
    return n, WIDE


def compileCost(pattern: str) -> int:
    """
    Estimate what compiling a pattern costs, deterministically, before
    Hyperscan is asked: Hyperscan's compile time grows with the states of
    the automaton, which counted repeats copy (C{.{1000}} takes a second,
    C{(ab|cd|ef){1000}} more), so a pattern can take seconds to compile,
    on the only thread, at save time and in every process that loads it.

    Every character matched counts 1 (2 for a letter under C{(?i)} or a
    non-ASCII character); an atom matching one of many characters counts
    L{WIDE}; a group counts the sum of what it holds; a counted repeat
    C{{n,m}} multiplies what it repeats by C{m}, and a group of C{k}
    alternatives once more by C{k}; a loop (C{*}, C{+}) counts what it
    repeats twice, and three times over inside a counted repeat (C{{n,}}
    repeats C{3(n + 1)} times).  The estimate errs on the large side for
    what it does not parse (C{(?x)} comments count as characters).

    @return: the cost; see L{MAX_COST}.
    @raise ValueError: for what is refused outright: a Unicode property
        class, a counted repeat over L{MAX_REPEAT}.
    """
    caseless = _CASELESS.search(pattern) is not None
    n = len(pattern)
    # One [total, cost of the last atom, alternatives] per open group.
    stack: List[List[int]] = [[0, 0, 1]]
    i = 0
    while i < n:
        c = pattern[i]
        cost = -1
        if c == "\\":
            i, cost = _escapeCost(pattern, i, caseless)
        elif c == "[":
            i, cost = _classCost(pattern, i, caseless)
        elif c == "(":
            if pattern.startswith("(?#", i):
                end = pattern.find(")", i)
                i = n if end == -1 else end + 1
                continue
            flags = _FLAGS_ONLY.match(pattern, i)
            if flags is not None:
                i = flags.end()
                stack[-1][1] = 0
                continue
            opening = _GROUP_OPEN.match(pattern, i)
            i = opening.end() if opening is not None else i + 1
            stack.append([0, 0, 1])
            continue
        elif c == ")":
            i += 1
            if len(stack) > 1:
                total, _, alternatives = stack.pop()
                frame = stack[-1]
                frame[0] += total
                # Copies of alternatives multiply the paths to analyse.
                frame[1] = total * alternatives
                continue
            cost = 1
        elif c == "|":
            stack[-1][1] = 0
            stack[-1][2] += 1
            i += 1
            continue
        elif c in "*+":
            # A loop: counted once more, and thrice when repeated.
            i += 1
            frame = stack[-1]
            frame[0] += frame[1]
            frame[1] *= 3
            continue
        elif c == "?":
            i += 1
            continue
        elif c == "{":
            counted = _COUNTED.match(pattern, i)
            if counted is None:
                i += 1
                cost = 1
            else:
                low = int(counted.group(1))
                high = counted.group(3)
                copies = low if counted.group(2) is None else (int(high) if high else low + 1)
                if max(low, copies) > MAX_REPEAT:
                    raise ValueError(f"a counted repeat over {MAX_REPEAT}")
                if counted.group(2) is not None and not high:
                    # {n,}: a loop too.
                    copies = 3 * (low + 1)
                frame = stack[-1]
                frame[0] += frame[1] * (max(copies, 1) - 1)
                frame[1] *= max(copies, 1)
                i = counted.end()
                continue
        elif c == ".":
            i += 1
            cost = WIDE
        elif c in "^$":
            i += 1
            cost = 0
        else:
            i += 1
            # Letters are two under (?i); a non-ASCII character is a
            # sequence of bytes.
            cost = 2 if (caseless and c.isalpha()) or ord(c) > 0x7F else 1
        frame = stack[-1]
        frame[0] += cost
        frame[1] = cost
    while len(stack) > 1:
        stack[-2][0] += stack.pop()[0]
    return stack[0][0]


def compileRegex(pattern: str, field: str = "", whole: bool = False) -> Regex:
    """
    Compile a user's regular expression (see the module docstring for the
    syntax).

    @param pattern: the pattern.
    @param field: the field that holds it, named by the error.
    @param whole: whether it must match the whole text (a C{re:} type)
        rather than anywhere in it (a C{match} condition).
    @return: the L{Regex}; the same object for the same pattern while it
        is remembered.
    @raise RegexError: for C{field}, when the pattern is invalid, cannot be
        matched in linear time, or would take too long to compile.
    @raise ValidationError: when C{pattern} is not a string.
    """
    if not isinstance(pattern, str):
        raise ValidationError(field, "must be a regular expression string")
    key = (pattern, whole)
    found = _cache.get(key)
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
        cost = compileCost(pattern)
    except ValueError as e:
        raise RegexError(field, str(e))
    if cost > MAX_COST:
        raise RegexError(
            field,
            f"too large (a cost of {cost}, more than {MAX_COST}: use fewer or smaller"
            " counted repeats {n,m}, fewer ., negated classes or classes of non-ASCII"
            " characters under them)",
        )
    expression = b"\\A(?:" + encoded + b")\\z" if whole else encoded
    try:
        database = _database(expression)
    except hyperscan.error as e:
        error: Exception = e
        if whole:
            # The error of the pattern as written (its positions are the
            # user's); when it has none, the pattern swallowed what follows
            # it (an unterminated \Q).
            try:
                _database(encoded)
            except hyperscan.error as plain:
                error = plain
            else:
                raise RegexError(field, "it may not end inside \\Q...")
        raise RegexError(field, _engineReason(error))
    regex = Regex(pattern, whole, database)
    if len(_cache) >= CACHE_SIZE:
        # The oldest go (dicts keep their insertion order).
        for oldest in list(_cache)[: CACHE_SIZE // 4]:
            del _cache[oldest]
    _cache[key] = regex
    return regex
