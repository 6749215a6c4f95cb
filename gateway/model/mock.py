"""
Mock responses: an API that the gateway answers itself, with a fixed
status, headers and body, after its filters ran (so a mock may be
authenticated, rate limited, transformed...).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Dict, Iterator, List, Mapping, Optional, Tuple

import attrs

from gateway.model.headeredits import HeaderMap
from gateway.model.schema import Anything, Int, Rule, field

#: Statuses whose answers have no body (RFC 9110 15.3.5, 15.4.5).
NO_BODY_STATUSES = (204, 304)

TEXT = b"text/plain; charset=utf-8"
JSON = b"application/json"


def _noBody(values: Mapping[str, Any]) -> Iterator[Tuple[str, str]]:
    if values["status"] in NO_BODY_STATUSES and values["body"] is not None:
        yield "body", f"must be null: a {values['status']} answer has no body"


#: A 204 or 304 answer has no body (the rule of L{_noBody}).
_NO_BODY = {
    "anyOf": [
        {"properties": {"status": {"not": {"enum": list(NO_BODY_STATUSES)}}}},
        {"properties": {"body": {"enum": [None]}}},
    ]
}


@attrs.frozen
class MockResponse:
    """
    The answer of an API that has no nodes: C{status}, C{headers} and
    C{body}.  A string body is sent as it is (C{text/plain;
    charset=utf-8}), any other JSON value as JSON (C{application/json}),
    unless C{headers} name a C{Content-Type}.
    """

    status: int = field(Int(200, 599), 200, doc="HTTP status")
    headers: Dict[str, str] = field(
        HeaderMap(templates=False),
        attrs.Factory(dict),
        doc="header: value, sent as they are (Content-Type among them, when given)",
    )
    body: Any = field(
        Anything(),
        None,
        doc="a string (sent as it is, text/plain) or any JSON value (sent as JSON); null: no body",
    )

    rules: ClassVar[Tuple[Rule, ...]] = (Rule(("status", "body"), _noBody, schema=_NO_BODY),)


class CompiledMock:
    """
    A mock response encoded once, as the proxy sends it.

    @ivar code: the status.
    @ivar headers: C{{name: [value]}} (bytes), C{Content-Type} not among
        them.
    @ivar body: the body's bytes.
    @ivar contentType: the C{Content-Type}, or L{None} for none.
    """

    __slots__ = ("code", "headers", "body", "contentType")

    def __init__(self, config: MockResponse) -> None:
        self.code = config.status
        headers: Dict[bytes, List[bytes]] = {}
        contentType: Optional[bytes] = None
        for name, value in config.headers.items():
            if name.lower() == "content-type":
                contentType = value.encode("utf-8")
            else:
                headers[name.encode("ascii")] = [value.encode("utf-8")]
        body = config.body
        if body is None:
            self.body = b""
        elif isinstance(body, str):
            self.body = body.encode("utf-8")
            contentType = contentType or TEXT
        else:
            self.body = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
            contentType = contentType or JSON
        self.headers = headers
        self.contentType = contentType
