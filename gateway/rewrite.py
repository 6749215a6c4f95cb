"""
URL rewriting for API nodes.

A node's C{urlRewrite} is the path (and optional query) sent upstream
instead of the client's.  It may use:

  - C{{name}}: a parameter of the API's URL pattern (C{{*}} for the rest of
    a wildcard match);
  - C{$query.NAME}: the first value of a query parameter of the request;
  - C{$header.NAME}: the first value of a request header.

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

_TOKEN = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*|\*)\}|\$(query|header)\.([A-Za-z0-9_.~-]+)")


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
            else:
                parts.append((m.group(2), m.group(3), _quoter("")))
            pos = m.end()
        if pos < len(template):
            parts.append(template[pos:])
        self._parts = tuple(parts)

    def expand(self, params: dict, request: Any) -> bytes:
        """
        @param params: the path parameters of the match.
        @param request: the client's L{twisted.web.server.Request}.
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
