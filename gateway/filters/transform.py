"""
The C{transform} filter: an API's C{transform} settings
(L{gateway.model.headeredits.Transform}): header edits of the request
before it goes upstream, and of the answer before it goes to the client.

The templates are compiled when the filter is made (once per change of
the API's settings, not per request): a value without variables is bytes
ready to send, the others a tuple of bytes and small functions that read
one variable of the exchange.  Values read from the request (query
parameters and path parameters are percent-decoded, so they could carry
them) lose their control characters (CR, LF, NUL...): a value can never
end a header or start another.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Tuple, Union

from zope.interface import implementer

from gateway.http.headers import headerKey, rawHeadersOf
from gateway.interfaces import IFilter
from gateway.model.headeredits import HeaderEdits, Part, Transform, parseTemplate

#: What C{bytes.translate} deletes from a value read from the request: the
#: C0 controls but the tab, and DEL.
_CONTROLS = bytes(range(0, 9)) + bytes(range(10, 32)) + b"\x7f"

Getter = Callable[[Any], Optional[bytes]]

#: A compiled template: the value itself, or its parts.
Template = Union[bytes, Tuple[Union[bytes, Getter], ...]]


def consumerOf(exchange: Any) -> Any:
    """
    @return: the exchange's authenticated consumer, or L{None}.
    """
    # Read with getattr: an exchange of a gateway without authentication
    # has no consumer slot.
    return getattr(exchange, "consumer", None)


def _consumerName(exchange: Any) -> Optional[bytes]:
    consumer = consumerOf(exchange)
    name = getattr(consumer, "name", None) if consumer is not None else None
    return name.encode("utf-8") if name else None


def _consumerId(exchange: Any) -> Optional[bytes]:
    consumer = consumerOf(exchange)
    if consumer is None:
        return None
    customId = getattr(consumer, "customId", None)
    return customId.encode("utf-8") if customId else None


def _requestId(exchange: Any) -> Optional[bytes]:
    requestId: Optional[bytes] = exchange.requestId
    return requestId


def _clientIp(exchange: Any) -> Optional[bytes]:
    address: str = exchange.clientIP
    return address.encode("ascii", "replace")


def _param(name: str) -> Getter:
    def get(exchange: Any) -> Optional[bytes]:
        value = exchange.params.get(name)
        return value.encode("utf-8", "replace") if value else None

    return get


def _query(name: str) -> Getter:
    key = name.encode("utf-8")

    def get(exchange: Any) -> Optional[bytes]:
        values = exchange.request.args.get(key)
        return values[0] if values else None

    return get


def _header(name: str) -> Getter:
    lower = name.lower().encode("ascii")
    key = headerKey(lower)

    def get(exchange: Any) -> Optional[bytes]:
        headers = exchange.request.requestHeaders
        raw = rawHeadersOf(headers)
        values = raw.get(key) if raw is not None else headers.getRawHeaders(lower)
        return values[0] if values else None

    return get


_SIMPLE = {
    ("consumer", "name"): _consumerName,
    ("consumer", "id"): _consumerId,
    ("requestId", ""): _requestId,
    ("clientIp", ""): _clientIp,
}

_NAMED = {"param": _param, "query": _query, "header": _header}


def compileTemplate(value: str) -> Template:
    """
    @param value: a valid template (L{parseTemplate}).
    @return: its compiled form (see L{expand}).
    """
    parts: List[Union[bytes, Getter]] = []
    for part in parseTemplate(value):
        if isinstance(part, str):
            parts.append(part.encode("utf-8"))
        else:
            parts.append(_getter(part))
    if all(isinstance(p, bytes) for p in parts):
        return b"".join(p for p in parts if isinstance(p, bytes))
    return tuple(parts)


def _getter(part: Part) -> Getter:
    assert isinstance(part, tuple)
    simple = _SIMPLE.get(part)
    if simple is not None:
        return simple
    return _NAMED[part[0]](part[1])


def expand(template: Template, exchange: Any) -> bytes:
    """
    @return: the value of a compiled template for one request, without
        control characters and surrounding whitespace (C{b""} when it
        comes out empty).
    """
    if isinstance(template, bytes):
        return template
    out = []
    for part in template:
        if isinstance(part, bytes):
            out.append(part)
        else:
            value = part(exchange)
            if value:
                out.append(value.translate(None, _CONTROLS))
    return b"".join(out).strip()


class CompiledEdits:
    """
    One side's L{HeaderEdits}, compiled: removals, then sets, then adds.
    """

    __slots__ = ("remove", "set", "add")

    def __init__(self, edits: HeaderEdits) -> None:
        self.remove = tuple(_named(name) for name in edits.remove)
        self.set = tuple(_named(name) + (compileTemplate(v),) for name, v in edits.set.items())
        self.add = tuple(_named(name) + (compileTemplate(v),) for name, v in edits.add.items())

    def apply(self, headers: Any, exchange: Any) -> None:
        """
        Edit C{headers} (a L{twisted.web.http_headers.Headers}) for the
        request of C{exchange}.
        """
        raw = rawHeadersOf(headers)
        if raw is None:
            self._applySlowly(headers, exchange)
            return
        for key, _ in self.remove:
            raw.pop(key, None)
        for key, _, template in self.set:
            value = expand(template, exchange)
            if value:
                raw[key] = [value]
            else:
                raw.pop(key, None)
        for key, _, template in self.add:
            value = expand(template, exchange)
            if value:
                existing = raw.get(key)
                # A new list: a response's may be its upstream's own.
                raw[key] = existing + [value] if existing else [value]

    def _applySlowly(self, headers: Any, exchange: Any) -> None:
        # The same through Headers' public API (see
        # gateway.http.headers.RAW_HEADERS).
        for _, name in self.remove:
            headers.removeHeader(name)
        for _, name, template in self.set:
            value = expand(template, exchange)
            if value:
                headers.setRawHeaders(name, [value])
            else:
                headers.removeHeader(name)
        for _, name, template in self.add:
            value = expand(template, exchange)
            if value:
                headers.addRawHeader(name, value)


def _named(name: str) -> Tuple[bytes, bytes]:
    encoded = name.encode("ascii")
    return headerKey(encoded), encoded


def _compiled(edits: Optional[HeaderEdits]) -> Optional[CompiledEdits]:
    if edits is None or not (edits.remove or edits.set or edits.add):
        return None
    return CompiledEdits(edits)


@implementer(IFilter)
class TransformFilter:
    """
    Edits the headers of the requests of an API on their way upstream
    (C{before}) and of its answers on their way back (C{after}).
    """

    name = "transform"

    def __init__(self, config: Transform) -> None:
        self._request = _compiled(config.request)
        self._response = _compiled(config.response)

    def __repr__(self) -> str:
        return (
            f"<TransformFilter request={self._request is not None}"
            f" response={self._response is not None}>"
        )

    def before(self, context: Any) -> None:
        edits = self._request
        if edits is not None:
            edits.apply(context.upstreamHeaders, context)
        return None

    def after(self, context: Any, response: Any) -> None:
        edits = self._response
        if edits is not None:
            edits.apply(response.headers, context)
        return None

    def error(self, context: Any, failure: Any) -> None:
        return None


def makeTransformFilter(api: Any) -> Optional[TransformFilter]:
    """
    @param api: a L{gateway.model.resources.API}.
    @return: the filter of its C{transform}, or L{None} when it edits
        nothing.
    """
    transform = api.transform
    if transform is None or (
        _compiled(transform.request) is None and _compiled(transform.response) is None
    ):
        return None
    return TransformFilter(transform)
