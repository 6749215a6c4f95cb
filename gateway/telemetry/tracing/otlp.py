"""
Spans in the OTLP protobuf format (C{ExportTraceServiceRequest}, U{https://github.com/open-telemetry/opentelemetry-proto}),
written straight to bytes.

The OTLP exporters of the SDK encode with
C{opentelemetry.exporter.otlp.proto.common.trace_encoder.encode_spans},
which builds a protobuf message object per span, per attribute and per
attribute value before serialising them: about 40 µs per span of the
proxy's (sixteen attributes) on CPython 3.11 with the C (upb) protobuf,
much more on PyPy with the pure-Python one.  A span is what a request
costs when it is traced, so that is most of it.  L{encodeSpans} writes the
same bytes' worth of message directly, from the SDK's L{ReadableSpan}s,
and keeps the encoding of the attributes that repeat from span to span
(method, route, API, cluster, server, status...) and of the resource and
scope: a few µs per span.

It covers what the gateway's spans hold: attributes whose values are
strings, booleans, integers or floats, a status, a trace state, no events
and no links.  A batch with anything else is encoded by the SDK's encoder,
which remains the reference: C{tests/test_tracing.py} decodes what both
write with the C{opentelemetry-proto} classes and compares.
"""

from __future__ import annotations

import struct
from typing import Any, Dict, List, Optional, Sequence, Tuple

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

# Wire types.
_VARINT = 0
_FIXED64 = 1
_LEN = 2
_FIXED32 = 5

#: OTLP's SpanKind numbers.
_KINDS = {
    SpanKind.INTERNAL: 1,
    SpanKind.SERVER: 2,
    SpanKind.CLIENT: 3,
    SpanKind.PRODUCER: 4,
    SpanKind.CONSUMER: 5,
}

#: Span.flags: the parent's is_remote is known (0x100), and is true (0x200).
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200

_packDouble = struct.Struct("<d").pack
_packFixed64 = struct.Struct("<Q").pack
_packFixed32 = struct.Struct("<I").pack

#: Attribute encodings kept at most (a bound: some values come from
#: requests, and only those that repeat are worth keeping).
_MAX_CACHED = 4096

#: Attribute values longer than this are not cached.
_MAX_CACHED_VALUE = 64


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _tag(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _field(field: int, payload: bytes) -> bytes:
    """
    @return: a length-delimited field (a string, bytes, a message).
    """
    return _tag(field, _LEN) + _varint(len(payload)) + payload


# The tags of the fields written per span, computed once.
_SPAN_TRACE_ID = _tag(1, _LEN) + _varint(16)
_SPAN_SPAN_ID = _tag(2, _LEN) + _varint(8)
_SPAN_PARENT_ID = _tag(4, _LEN) + _varint(8)
_SPAN_KIND = _tag(6, _VARINT)
_SPAN_START = _tag(7, _FIXED64)
_SPAN_END = _tag(8, _FIXED64)
_SPAN_FLAGS = _tag(16, _FIXED32)
_SPAN_ATTRIBUTE = _tag(9, _LEN)
_SPAN_DROPPED_ATTRIBUTES = _tag(10, _VARINT)
_SPAN_STATUS = _tag(15, _LEN)
_FLAGS_LOCAL = _SPAN_FLAGS + _packFixed32(_HAS_IS_REMOTE)
_FLAGS_REMOTE = _SPAN_FLAGS + _packFixed32(_HAS_IS_REMOTE | _IS_REMOTE)


class Unsupported(Exception):
    """
    A span holds something L{encodeSpans} does not write.
    """


def _anyValue(value: Any) -> bytes:
    """
    @return: an C{AnyValue} message of a scalar attribute value.
    @raise Unsupported: for other values.
    """
    kind = type(value)
    if kind is str:
        return _field(1, value.encode("utf-8"))
    if kind is bool:
        return _tag(2, _VARINT) + (b"\x01" if value else b"\x00")
    if kind is int:
        return _tag(3, _VARINT) + _varint(value)
    if kind is float:
        return _tag(4, _FIXED64) + _packDouble(value)
    raise Unsupported(f"attribute value of type {kind.__name__}")


def _keyValue(key: str, value: Any) -> bytes:
    """
    @return: a C{KeyValue} message.
    """
    return _field(1, key.encode("utf-8")) + _field(2, _anyValue(value))


def _attributes(field: int, attributes: Any) -> bytes:
    """
    @return: the C{KeyValue}s of C{attributes} as repeated field C{field}.
    """
    if not attributes:
        return b""
    return b"".join(_field(field, _keyValue(k, v)) for k, v in attributes.items())


class SpanEncoder:
    """
    Writes batches of spans as C{ExportTraceServiceRequest}s (see the module
    docstring).
    """

    def __init__(self) -> None:
        #: (key, type of the value, value) -> the attribute as a Span field.
        self._cached: Dict[Tuple[str, type, Any], bytes] = {}
        #: ids of (resource, scope) -> them, and their ResourceSpans and
        #: ScopeSpans heads.
        self._heads: Dict[Tuple[int, int], Tuple[Any, Any, Tuple[bytes, bytes, bytes]]] = {}

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        """
        @return: C{spans} as a serialised C{ExportTraceServiceRequest}.
        """
        try:
            return self._encode(spans)
        except Unsupported:
            data: bytes = encode_spans(spans).SerializeToString()
            return data

    def _encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        # Grouped by resource, then scope, in the order they come, as the
        # SDK's encoder groups them (by identity: a Resource's hash is a
        # JSON dump of its attributes).
        groups: Dict[int, Tuple[Any, Dict[int, Tuple[Any, List[bytes]]]]] = {}
        for span in spans:
            resource = span.resource
            scope = span.instrumentation_scope or None
            group = groups.get(id(resource))
            if group is None:
                group = groups[id(resource)] = (resource, {})
            scopes = group[1]
            entry = scopes.get(id(scope))
            if entry is None:
                entry = scopes[id(scope)] = (scope, [])
            entry[1].append(self._span(span))
        out = []
        for resource, scopes in groups.values():
            resourceHead = b""
            scopeParts = []
            for scope, encoded in scopes.values():
                resourceHead, scopeHead, scopeTail = self._headsOf(resource, scope)
                body = scopeHead + b"".join([_field(2, s) for s in encoded]) + scopeTail
                scopeParts.append(_field(2, body))
            schema = resource.schema_url
            resourceSpans = (
                resourceHead
                + b"".join(scopeParts)
                + (_field(3, schema.encode()) if schema else b"")
            )
            out.append(_field(1, resourceSpans))
        return b"".join(out)

    def _headsOf(self, resource: Any, scope: Any) -> Tuple[bytes, bytes, bytes]:
        """
        @return: the C{resource} field of a C{ResourceSpans}, and what a
            C{ScopeSpans} holds before and after its spans.
        """
        key = (id(resource), id(scope))
        cached = self._heads.get(key)
        if cached is not None and cached[0] is resource and cached[1] is scope:
            return cached[2]
        resourceHead = _field(1, _attributes(1, resource.attributes))
        if scope is None:
            scopeHead = _field(1, b"")
            scopeTail = b""
        else:
            scopeMessage = b""
            if scope.name:
                scopeMessage += _field(1, scope.name.encode("utf-8"))
            if scope.version:
                scopeMessage += _field(2, scope.version.encode("utf-8"))
            scopeMessage += _attributes(3, scope.attributes)
            scopeHead = _field(1, scopeMessage)
            scopeTail = _field(3, scope.schema_url.encode()) if scope.schema_url else b""
        heads = (resourceHead, scopeHead, scopeTail)
        if len(self._heads) >= 64:
            self._heads.clear()
        # (The objects are kept with their heads: their ids stay theirs.)
        self._heads[key] = (resource, scope, heads)
        return heads

    def _attribute(self, key: str, value: Any) -> bytes:
        cacheKey = (key, type(value), value)
        encoded = self._cached.get(cacheKey)
        if encoded is None:
            encoded = _field(9, _keyValue(key, value))
            if type(value) is not str or len(value) <= _MAX_CACHED_VALUE:
                if len(self._cached) >= _MAX_CACHED:
                    self._cached.clear()
                self._cached[cacheKey] = encoded
        return encoded

    def _span(self, span: ReadableSpan) -> bytes:
        if span.events or span.links:
            raise Unsupported("events or links")
        context = span.context
        parts = [
            _SPAN_TRACE_ID,
            context.trace_id.to_bytes(16, "big"),
            _SPAN_SPAN_ID,
            context.span_id.to_bytes(8, "big"),
        ]
        state = context.trace_state
        if state:
            parts.append(_field(3, ",".join(f"{k}={v}" for k, v in state.items()).encode()))
        parent = span.parent
        if parent is not None:
            parts.append(_SPAN_PARENT_ID)
            parts.append(parent.span_id.to_bytes(8, "big"))
        parts.append(_field(5, span.name.encode("utf-8")))
        parts.append(_SPAN_KIND)
        parts.append(_varint(_KINDS[span.kind]))
        parts.append(_SPAN_START)
        parts.append(_packFixed64(span.start_time or 0))
        parts.append(_SPAN_END)
        parts.append(_packFixed64(span.end_time or 0))
        attributes = span.attributes
        if attributes:
            attribute = self._attribute
            for key, value in attributes.items():
                parts.append(attribute(key, value))
        dropped = span.dropped_attributes
        if dropped:
            parts.append(_SPAN_DROPPED_ATTRIBUTES + _varint(dropped))
        parts.append(_status(span.status))
        parts.append(_FLAGS_REMOTE if parent is not None and parent.is_remote else _FLAGS_LOCAL)
        return b"".join(parts)


def _status(status: Optional[Any]) -> bytes:
    """
    @return: the C{status} field of a span (always there, as the SDK's
        encoder writes it).
    """
    if status is None:
        return b""
    message = b""
    if status.description:
        message += _field(2, status.description.encode("utf-8"))
    code = status.status_code.value
    if code:
        message += _tag(3, _VARINT) + _varint(code)
    return _field(15, message)
