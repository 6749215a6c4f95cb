"""
Header names and header value templates as an API's settings hold them:
which headers the gateway manages itself (and so refuses to let a
C{transform} or a mock response set), and the syntax of the variables a
C{transform} value may use.

Templates
=========

A value is text in which these variables are replaced, per request:

  - C{$consumer.name}, C{$consumer.id}: the authenticated consumer's name
    and its C{customId};
  - C{$requestId}: the request's id (the C{request-id} filter's);
  - C{$clientIp}: the client's address, as the gateway trusts it;
  - C{$param.NAME}: a parameter of the API's URL pattern;
  - C{$query.NAME}: the first value of a query parameter of the request;
  - C{$header.NAME}: the first value of a header of the client's request.

Without braces a name ends where its kind of name does: C{$requestId},
C{$clientIp} and C{$consumer.name} before any letter, digit or C{_}
(C{$consumer.name-$param.id} is two variables); C{$param.NAME} after the
identifier; C{$query.NAME} and C{$header.NAME} after letters, digits and
C{_~-} (not ending with C{-}).  Braces, C{${query.page.size}}, end a name
anywhere and may hold any valid name.  C{$$} is a literal C{$}.  A C{$}
followed by a letter or a brace must start a known variable (a typo is
refused when the API is saved); any other C{$} (C{$5}) is literal.  A
variable without a value (no such query parameter, no consumer) is empty.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import attrs

from gateway.model import patterns
from gateway.model.schema import List as ListOf
from gateway.model.schema import (
    Nullable,
    Obj,
    Spec,
    Str,
    ValidationError,
    _typeName,
    displayKey,
    field,
)

#: Headers that describe one connection (RFC 9110 7.6.1), or that the
#: gateway computes itself (framing, Host, the forwarding and trust headers
#: a backend believes): a C{transform} or a mock response cannot set, add or
#: remove them.  Names in lower case; see also L{MANAGED_PREFIXES}.
MANAGED_HEADERS = frozenset(
    [
        # Hop-by-hop.
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        # Framing and routing.
        "host",
        "content-length",
        # What the gateway tells a backend about the client and the hops.
        "forwarded",
        "x-real-ip",
        "via",
    ]
)

#: Prefixes of managed header names: the forwarding headers
#: (C{X-Forwarded-For}, C{-Proto}, C{-Host}, C{-Port}, ...) and the
#: consumer's identity set after authentication (C{X-Consumer-Name},
#: C{-Id}, C{-Groups}).
MANAGED_PREFIXES = ("x-forwarded-", "x-consumer-")


def isManaged(name: str) -> bool:
    """
    @param name: a header name, in any case.
    @return: whether the gateway manages that header (see
        L{MANAGED_HEADERS}).
    """
    lower = name.lower()
    return lower in MANAGED_HEADERS or lower.startswith(MANAGED_PREFIXES)


def checkHeaderName(name: str) -> None:
    """
    @raise ValueError: when C{name} is not a header name, or names a
        header the gateway manages.
    """
    if not re.fullmatch(patterns.HEADER_NAME, name):
        raise ValueError(f"{displayKey(name)!r} is not a header name")
    if isManaged(name):
        raise ValueError(
            f"{name} is managed by the gateway (hop-by-hop, framing or trust header)"
            " and cannot be set this way"
        )


#: The variables without a name (the families C{$family.NAME} are those of
#: L{_NAMES}).
SIMPLE_VARIABLES = ("requestId", "clientIp", "consumer.name", "consumer.id")

#: A variable without braces, after its C{$}: a simple one ends where an
#: identifier would; C{$param.NAME} takes an identifier, C{$query.NAME} and
#: C{$header.NAME} letters, digits and C{_~-} (not ending with C{-}).
_BARE = re.compile(
    r"(requestId|clientIp|consumer\.(?:name|id))(?![A-Za-z0-9_])"
    r"|(param)\.([A-Za-z_][A-Za-z0-9_]*)"
    r"|(query|header)\.([A-Za-z0-9_~-]*[A-Za-z0-9_~])"
)
_WORD = re.compile(r"[A-Za-z0-9_.~-]*")

#: One part of a template: literal text, or C{(variable, name)}:
#: C{("requestId", "")}, C{("consumer", "name")}, C{("query", "page")}...
Part = Union[str, Tuple[str, str]]


_NAMES = {
    "param": r"[A-Za-z_][A-Za-z0-9_]*",
    "query": r"[^\s{}$]+",
    "header": patterns.HEADER_NAME[1:-1],
}


def _variable(text: str, braced: bool) -> Tuple[str, str]:
    """
    @param text: what follows C{$} (inside the braces when C{braced}).
    @return: C{(family, name)}.
    @raise ValueError: when C{text} is no known variable.
    """
    if text in SIMPLE_VARIABLES:
        family, _, name = text.partition(".")
        return family, name
    family, dot, name = text.partition(".")
    if family in _NAMES and dot:
        if re.fullmatch(_NAMES[family], name):
            return family, name
        raise ValueError(
            f"${{{text}}}: {name!r} is not a valid {family} name"
            + ("" if braced else f" (write ${{{family}.NAME}} when text follows the name)")
        )
    shown = "${" + text + "}" if braced else "$" + text
    hint = ""
    for prefix in SIMPLE_VARIABLES:
        if not braced and text.startswith(prefix):
            hint = f"; write ${{{prefix}}} when text follows the name"
            break
    known = ", ".join(["$" + v for v in SIMPLE_VARIABLES] + ["$" + f + ".NAME" for f in _NAMES])
    raise ValueError(f"unknown variable {shown}{hint} (known: {known}; $$ is a literal $)")


def parseTemplate(value: str) -> Tuple[Part, ...]:
    """
    Parse a header value template (see the module docstring).

    @return: its parts, literal text merged.
    @raise ValueError: for an unknown variable, a malformed one, or an
        unclosed brace.
    """
    parts: List[Part] = []
    text: List[str] = []
    i = 0
    while True:
        j = value.find("$", i)
        if j < 0:
            text.append(value[i:])
            break
        text.append(value[i:j])
        after = value[j + 1 : j + 2]
        variable: Tuple[str, str]
        if after == "$":
            text.append("$")
            i = j + 2
            continue
        if after == "{":
            end = value.find("}", j + 2)
            if end < 0:
                raise ValueError(f"unclosed ${{ at position {j}")
            variable = _variable(value[j + 2 : end], True)
            i = end + 1
        elif after.isascii() and after.isalpha():
            m = _BARE.match(value, j + 1)
            if m is None:
                word = _WORD.match(value, j + 1)
                _variable(word.group() if word else after, False)
                raise ValueError(f"unknown variable at position {j}")
            simple, param, paramName, family, name = m.groups()
            if simple is not None:
                family, _, name = simple.partition(".")
            elif param is not None:
                family, name = param, paramName
            variable = (family, name)
            i = m.end()
        else:
            text.append("$")
            i = j + 1
            continue
        joined = "".join(text)
        if joined:
            parts.append(joined)
        text = []
        parts.append(variable)
    joined = "".join(text)
    if joined:
        parts.append(joined)
    return tuple(parts)


def templateParams(value: str) -> Iterator[str]:
    """
    @return: the names of the C{$param.NAME} variables of a valid template.
    """
    for part in parseTemplate(value):
        if isinstance(part, tuple) and part[0] == "param":
            yield part[1]


def HeaderName() -> Str:
    """
    A header name the gateway does not manage (see L{MANAGED_HEADERS}).
    """
    return Str(
        pattern=patterns.HEADER_NAME,
        minLength=1,
        maxLength=256,
        check=checkHeaderName,
        patternHint="must be a header name (letters, digits and !#$%&'*+.^_`|~-)",
    )


def _checkTemplate(value: str) -> None:
    parseTemplate(value)


@attrs.frozen
class HeaderMap(Spec):
    """
    A JSON object of header names and values: C{{"X-Env": "prod"}}.  Names
    are header names the gateway does not manage, each once (in any case);
    values are text without control characters.

    @ivar templates: whether values are templates (L{parseTemplate}); else
        taken as they are.
    @ivar maxItems: the most names it may hold.
    """

    templates: bool = True
    maxItems: int = 64

    def _value(self) -> Str:
        return Str(maxLength=4096, check=_checkTemplate if self.templates else None)

    def parse(self, value: Any, path: str) -> Dict[str, str]:
        if not isinstance(value, dict):
            raise ValidationError(path, f"must be an object, not {_typeName(value)}")
        if len(value) > self.maxItems:
            raise ValidationError(path, f"must have at most {self.maxItems} headers")
        errors: List[ValidationError] = []
        seen: Dict[str, str] = {}
        valueSpec = self._value()
        out: Dict[str, str] = {}
        for name, v in value.items():
            where = f"{path}.{displayKey(name)}" if path else displayKey(name)
            try:
                out[name] = valueSpec.parse(v, where)
            except ValidationError as e:
                errors.append(e)
            # Names: beyond JSON Schema (OpenAPI 3.0 has no propertyNames).
            try:
                checkHeaderName(name)
            except ValueError as e:
                errors.append(ValidationError(where, str(e), semantic=True))
                continue
            lower = name.lower()
            if lower in seen:
                errors.append(
                    ValidationError(where, f"names the header of {seen[lower]!r} again", True)
                )
            seen[lower] = name
        if errors:
            raise ValidationError.collect(errors)
        return out

    def dump(self, value: Any) -> Any:
        return dict(value)

    def schema(self) -> dict:
        return {
            "type": "object",
            "additionalProperties": self._value().schema(),
            "maxProperties": self.maxItems,
            "description": "header name: value; names are header names (any case, each once)"
            " the gateway does not manage",
        }


@attrs.frozen
class HeaderEdits:
    """
    Changes to the headers of a request (before it goes upstream) or of a
    response (before it goes to the client), applied in this order:
    C{remove}, then C{set} (replaces every value; a value that comes out
    empty removes the header), then C{add} (one more value; an empty one is
    not added).
    """

    set: Dict[str, str] = field(HeaderMap(), attrs.Factory(dict), doc="header: template")
    add: Dict[str, str] = field(HeaderMap(), attrs.Factory(dict), doc="header: template")
    remove: Tuple[str, ...] = field(ListOf(HeaderName(), maxItems=64), (), doc="header names")


@attrs.frozen
class Transform:
    """
    An API's header transformations: C{request} edits what its backend
    receives, C{response} what its client receives (every answer that
    passed this step of the filters: proxied, mock, aggregated, or an error
    of a later step).
    """

    request: Optional[HeaderEdits] = field(Nullable(Obj(HeaderEdits)), None)
    response: Optional[HeaderEdits] = field(Nullable(Obj(HeaderEdits)), None)


def transformTemplates(transform: Transform) -> Iterator[Tuple[str, str]]:
    """
    @return: C{(field, template)} of every value of a transform, C{field}
        relative to the transform (C{request.set.X-User}).
    """
    for side in ("request", "response"):
        edits = getattr(transform, side)
        if edits is None:
            continue
        for kind in ("set", "add"):
            for name, template in getattr(edits, kind).items():
                yield f"{side}.{kind}.{name}", template
