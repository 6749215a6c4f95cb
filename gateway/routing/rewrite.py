"""
URL rewriting for API nodes.

A node's C{urlRewrite} is the path (and optional query) sent upstream
instead of the client's.  It may use:

  - C{{name}}: a parameter of the API's URL pattern (C{{*}} for the rest of
    a wildcard match);
  - C{$query.NAME}: the first value of a query parameter of the request;
  - C{$header.NAME}: the first value of a request header;
  - C{$depend.ATTR.FIELD...}: in an aggregation, a field of the JSON answer
    of an earlier batch's node (by its C{attrName}), e.g.
    C{$depend.user.accountId} or C{$depend.user.items.0.sku}.

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

_TOKEN = re.compile(
    r"\{([A-Za-z_][A-Za-z0-9_]*|\*)\}|\$(query|header|depend)\.([A-Za-z0-9_~-]+(?:\.[A-Za-z0-9_~-]+)*)"
)


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
        @raise ValueError: naming an unknown parameter.
        """
        self.template = template
        self.keepQuery = "?" not in template
        #: The attrNames of the aggregation nodes this template reads.
        self.depends: Tuple[str, ...] = ()
        parts: List[Any] = []
        pos = 0
        for m in _TOKEN.finditer(template):
            if m.start() > pos:
                parts.append(template[pos : m.start()])
            if m.group(1) is not None:
                name = m.group(1)
                if paramNames is not None and name not in paramNames:
                    raise ValueError(
                        f"{{{name}}} is not a parameter of the URL pattern"
                        + (f" (it has: {', '.join(paramNames)})" if paramNames else "")
                    )
                parts.append(("param", name, _quoter("/" if name == "*" else "")))
            elif m.group(2) == "depend":
                attr, _, rest = m.group(3).partition(".")
                self.depends += (attr,)
                path = tuple(rest.split(".")) if rest else ()
                parts.append(("depend", (attr,) + path, _quoter("")))
            else:
                parts.append((m.group(2), m.group(3), _quoter("")))
            pos = m.end()
        if pos < len(template):
            parts.append(template[pos:])
        self._parts = tuple(parts)

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
