"""
URL rewriting for API nodes.

A node's C{urlRewrite} is the path (and optional query) sent upstream
instead of the client's.  It may use:

  - C{{name}} or C{$param.name}: a parameter of the API's URL pattern
    (C{{*}} for the rest of a wildcard match);
  - C{$query.NAME}: the first value of a query parameter of the request;
  - C{$header.NAME}: the first value of a request header;
  - C{$depend.ATTR.FIELD...}: in an aggregation, a field of the JSON answer
    of an earlier batch's node (by its C{attrName}), e.g.
    C{$depend.user.accountId} or C{$depend.user.items.0.sku}.

Without braces, a C{$query}, C{$header} or C{$depend} name is letters,
digits and C{_~-}, in parts joined by dots (C{$query.page.size} is the
query parameter C{page.size}), and a C{$param} name an identifier; braces,
C{${query.page}.json}, end a name anywhere.

A C{$} followed by a letter or C{{} starts a variable, and it must be one
of these: any other (C{$nope.z}, C{$requestId}, C{${id}}) is refused when
the API is saved, never sent as it is.  Every other C{$} (C{/price$},
C{/a$5}) is literal; write C{%24} for a C{$} followed by a letter.  The
header transformations' C{$consumer.name}, C{$consumer.id}, C{$requestId}
and C{$clientIp} are not rewrite variables (the rewrite is computed from
the route and the request alone): send them in a header with
C{transform.request.set}.

Substituted values are percent-encoded, so a value can never add path
segments or query parameters of its own (a wildcard's rest keeps its
slashes).  A missing value becomes empty.  When the rewrite has no C{?},
the client's query string is kept and appended; when it has one, the
rewrite's query replaces the client's.

Example: C{/api/users/{id}} rewritten to C{/users/{id}?fields=$query.f}.
"""

from __future__ import annotations

import re
from typing import Any, Callable, List, Optional, Tuple
from urllib.parse import quote

from gateway.model.headeredits import SIMPLE_VARIABLES

#: Where a C{{name}} parameter or a C{$} may start a variable.
_START = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*|\*)\}|\$")

_DOTTED = r"[A-Za-z0-9_~-]+(?:\.[A-Za-z0-9_~-]+)*"

#: A variable after its C{$} (or inside its braces).
_VARIABLE = re.compile(rf"(param)\.([A-Za-z_][A-Za-z0-9_]*)|(query|header|depend)\.({_DOTTED})")

#: What a variable that is no known one spans, to name it in an error.
_WORD = re.compile(r"[A-Za-z0-9_.~-]*[A-Za-z0-9_~-]|[A-Za-z]")

#: The variables of a rewrite, as an error lists them.
KNOWN = (
    "{NAME} and {*} (of the URL pattern), $param.NAME, $query.NAME, $header.NAME,"
    " $depend.ATTR.FIELD, each also as ${...}"
)


def _unknown(text: str, braced: bool) -> ValueError:
    """
    @param text: what follows a C{$}, inside the braces when C{braced}.
    @return: the error for a variable a rewrite does not know.
    """
    shown = "${" + text + "}" if braced else "$" + text
    family = text.partition(".")[0]
    if text in SIMPLE_VARIABLES:
        why = (
            f"{shown} is a header transformation variable, not a urlRewrite one"
            " (send it in a header with transform.request.set)"
        )
    elif family in ("param", "query", "header", "depend"):
        name = "ATTR.FIELD" if family == "depend" else "NAME"
        why = f"{shown} is not a valid variable: write ${family}.{name}"
    elif braced and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*|\*", text):
        why = f"unknown variable {shown} (write {{{text}}} for a parameter of the URL pattern)"
    else:
        why = f"unknown variable {shown}"
    return ValueError(f"{why}; a urlRewrite knows {KNOWN}; write %24 for a $ before a letter")


def _quoter(safe: str) -> Callable[[str], str]:
    return lambda value: quote(value, safe=safe)


class Rewrite:
    """
    A compiled C{urlRewrite} template.
    """

    def __init__(self, template: str, paramNames: Tuple[str, ...] = ()) -> None:
        """
        @param paramNames: the parameters the API's pattern defines; a
            template naming another one is refused.
        @raise ValueError: naming an unknown parameter, or a variable a
            rewrite does not know (see the module docstring).
        """
        self.template = template
        self.keepQuery = "?" not in template
        #: The attrNames of the aggregation nodes this template reads.
        self.depends: Tuple[str, ...] = ()
        parts: List[Any] = []
        pos = 0
        search = 0
        while True:
            m = _START.search(template, search)
            if m is None:
                break
            j = m.start()
            if m.group(1) is not None:
                variable: Optional[Tuple[str, str]] = ("param", m.group(1))
                end = m.end()
            else:
                variable, end = self._dollar(template, j)
            search = end
            if variable is None:
                continue
            if j > pos:
                parts.append(template[pos:j])
            parts.append(self._part(variable, template[j:end], paramNames))
            pos = end
        if pos < len(template):
            parts.append(template[pos:])
        self._parts = tuple(parts)

    @staticmethod
    def _dollar(template: str, j: int) -> Tuple[Optional[Tuple[str, str]], int]:
        """
        @param j: the position of a C{$} in C{template}.
        @return: C{((family, name), end)} of the variable it starts, or
            C{(None, j + 1)} when it is a literal C{$}.
        @raise ValueError: for a C{$} that starts no known variable.
        """
        after = template[j + 1 : j + 2]
        if after == "{":
            close = template.find("}", j + 2)
            if close < 0:
                raise ValueError(f"unclosed ${{ at position {j}; a urlRewrite knows {KNOWN}")
            text = template[j + 2 : close]
            m = _VARIABLE.fullmatch(text)
            if m is None:
                raise _unknown(text, True)
            end = close + 1
        elif after.isascii() and after.isalpha():
            m = _VARIABLE.match(template, j + 1)
            if m is None:
                word = _WORD.match(template, j + 1)
                text = word.group() if word else after
                raise _unknown(text, False)
            end = m.end()
        else:
            return None, j + 1
        if m.group(1) is not None:
            return (m.group(1), m.group(2)), end
        return (m.group(3), m.group(4)), end

    def _part(self, variable: Tuple[str, str], shown: str, paramNames: Tuple[str, ...]) -> Any:
        """
        @param shown: the variable as written.
        @return: the compiled part of a variable: C{(source, name, encode)}.
        @raise ValueError: for a parameter the URL pattern lacks.
        """
        source, name = variable
        if source == "param":
            if paramNames is not None and name not in paramNames:
                raise ValueError(
                    f"{shown} is not a parameter of the URL pattern"
                    + (f" (it has: {', '.join(paramNames)})" if paramNames else "")
                )
            return ("param", name, _quoter("/" if name == "*" else ""))
        if source == "depend":
            attr, _, rest = name.partition(".")
            self.depends += (attr,)
            path = tuple(rest.split(".")) if rest else ()
            return ("depend", (attr,) + path, _quoter(""))
        return (source, name, _quoter(""))

    def expand(self, params: dict, request: Any, depends: Optional[dict] = None) -> bytes:
        """
        @param params: the path parameters of the match.
        @param request: the client's L{twisted.web.server.Request}.
        @param depends: in an aggregation, the JSON answers of the nodes
            that already ran, by C{attrName}.
        @return: the upstream request target.
        """
        out = []
        for part in self._parts:
            if isinstance(part, str):
                out.append(part)
                continue
            source, name, encode = part
            value: Optional[str]
            if source == "param":
                value = params.get(name)
            elif source == "depend":
                value = _lookup(depends or {}, name)
            elif source == "query":
                values = request.args.get(name.encode("utf-8"))
                value = values[0].decode("utf-8", "replace") if values else None
            else:
                raw = request.requestHeaders.getRawHeaders(name.encode("latin-1"))
                value = raw[0].decode("latin-1") if raw else None
            if value:
                out.append(encode(value))
        target = "".join(out).encode("utf-8")
        if self.keepQuery:
            uri = request.uri
            q = uri.find(b"?")
            if q >= 0:
                target += uri[q:]
        return target


def _lookup(document: Any, path: Tuple[str, ...]) -> Optional[str]:
    """
    @return: the string form of a field of a JSON document (C{true}/C{false}
        for booleans, numbers as JSON writes them), or L{None} when it is
        missing or not a scalar.
    """
    for key in path:
        if isinstance(document, dict):
            if key not in document:
                return None
            document = document[key]
        elif isinstance(document, list) and key.isdigit() and int(key) < len(document):
            document = document[int(key)]
        else:
            return None
    if isinstance(document, bool):
        return "true" if document else "false"
    if isinstance(document, (int, float, str)):
        return str(document)
    return None
