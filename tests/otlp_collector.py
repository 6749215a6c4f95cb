"""
A real OTLP/HTTP trace receiver for the integration tests.

Run it as C{python tests/otlp_collector.py --port 0}: a C{twisted.web}
resource on 127.0.0.1 that prints C{READY <port>} once it listens.

  - C{POST /v1/traces}: an C{ExportTraceServiceRequest} in protobuf
    (C{application/x-protobuf}), decoded with the C{opentelemetry-proto}
    package; its spans are kept, and it answers an empty
    C{ExportTraceServiceResponse};
  - C{GET /spans}: the spans received so far, as a JSON list of objects:
    C{traceId}, C{spanId}, C{parentSpanId} (hex, C{""} for none), C{name},
    C{kind} (C{"SERVER"}, C{"CLIENT"}, ...), C{attributes} (C{{key:
    value}}), C{status} (C{"UNSET"}, C{"OK"}, C{"ERROR"}), C{traceState},
    C{start} and C{end} (nanoseconds), C{resource} (its attributes) and
    C{scope} (the instrumentation scope's name);
  - C{GET /requests}: how many export requests came, and their
    C{Content-Type}s;
  - C{POST /control/status/CODE}: answer exports with CODE (and keep
    nothing) until C{/control/status/200}.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, List

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from twisted.internet import reactor as globalReactor
from twisted.web.resource import Resource
from twisted.web.server import Site


def anyValue(value: AnyValue) -> Any:
    """
    @return: an OTLP attribute value as JSON.
    """
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [anyValue(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: anyValue(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind) if kind else None


def spansOf(request: ExportTraceServiceRequest) -> List[Dict[str, Any]]:
    """
    @return: the spans of an export request, as JSON objects.
    """
    spans = []
    for resourceSpans in request.resource_spans:
        resource = {kv.key: anyValue(kv.value) for kv in resourceSpans.resource.attributes}
        for scopeSpans in resourceSpans.scope_spans:
            for span in scopeSpans.spans:
                spans.append(
                    {
                        "traceId": span.trace_id.hex(),
                        "spanId": span.span_id.hex(),
                        "parentSpanId": span.parent_span_id.hex(),
                        "name": span.name,
                        "kind": Span.SpanKind.Name(span.kind)[len("SPAN_KIND_") :],
                        "attributes": {kv.key: anyValue(kv.value) for kv in span.attributes},
                        "status": Status.StatusCode.Name(span.status.code)[len("STATUS_CODE_") :],
                        "traceState": span.trace_state,
                        "start": span.start_time_unix_nano,
                        "end": span.end_time_unix_nano,
                        "resource": resource,
                        "scope": scopeSpans.scope.name,
                    }
                )
    return spans


class Receiver(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.spans: List[Dict[str, Any]] = []
        self.contentTypes: List[str] = []
        self.status = 200

    def render_POST(self, request: Any) -> bytes:
        path = request.path.decode()
        if path.startswith("/control/status/"):
            self.status = int(path.rsplit("/", 1)[1])
            return b"{}"
        if path != "/v1/traces":
            request.setResponseCode(404)
            return b""
        self.contentTypes.append((request.getHeader(b"content-type") or b"").decode())
        if self.status != 200:
            request.setResponseCode(self.status)
            return b""
        export = ExportTraceServiceRequest()
        export.ParseFromString(request.content.read())
        self.spans.extend(spansOf(export))
        request.setHeader(b"content-type", b"application/x-protobuf")
        return ExportTraceServiceResponse().SerializeToString()

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        if request.path == b"/requests":
            answer: Any = {"requests": len(self.contentTypes), "contentTypes": self.contentTypes}
        else:
            answer = self.spans
        return json.dumps(answer).encode()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    options = parser.parse_args()
    port = globalReactor.listenTCP(options.port, Site(Receiver()), interface="127.0.0.1")
    print(f"READY {port.getHost().port}", flush=True)
    globalReactor.run()


if __name__ == "__main__":
    sys.exit(main())
