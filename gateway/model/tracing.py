"""
The C{tracing:} section of the config file: OpenTelemetry traces of the
proxy's requests, exported over OTLP/HTTP (see L{gateway.telemetry.tracing})::

    tracing:
      otlp: http://127.0.0.1:4318/v1/traces
      sampleRatio: 0.1
      serviceName: gateway

Without the section nothing is traced, and nothing of the tracing code or
of the OpenTelemetry SDK is even imported.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Any, ClassVar, Iterable, Mapping, Tuple

import attrs

from gateway.model.schema import Bool, Int, Map, Num, Rule, Seconds, Str, field

#: The OTLP/HTTP traces endpoint of a collector on this machine, the
#: OpenTelemetry default.
DEFAULT_OTLP = "http://127.0.0.1:4318/v1/traces"

#: A header name (RFC 9110 token).
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")

#: A header value: visible characters, spaces and tabs inside.
_VALUE = re.compile(r"^[\x21-\x7e]([\x20-\x7e\t]*[\x21-\x7e])?$")

#: Headers the exporter sets itself.
_OWN_HEADERS = frozenset(["host", "content-type", "content-length", "transfer-encoding"])


def splitOTLP(url: str) -> Tuple[str, int, bytes]:
    """
    @param url: an C{http://HOST[:PORT]/PATH} URL.
    @return: C{(host, port, request target)}; the port is 80 when absent,
        the target C{/} when there is no path.
    @raise ValueError: when it is no such URL.
    """
    example = "e.g. http://127.0.0.1:4318/v1/traces"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"{url!r}: only http:// collectors are supported; {example}")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{url!r}: credentials go in tracing.headers, not in the URL")
    if parts.fragment:
        raise ValueError(f"{url!r}: a URL of a collector has no #fragment")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{url!r}: the port is not a number from 1 to 65535")
    host = parts.hostname
    if not host:
        raise ValueError(f"{url!r} names no host; {example}")
    if port == 0:
        raise ValueError(f"{url!r}: the port is not a number from 1 to 65535")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return host, port or 80, target.encode("ascii")


def _checkOTLP(url: str) -> None:
    try:
        url.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"{url!r}: a URL is ASCII (percent-encode the rest)")
    splitOTLP(url)


def _headerErrors(values: Mapping[str, Any]) -> Iterable[Tuple[str, str]]:
    for name, value in values["headers"].items():
        where = f"headers.{name}"
        if not _TOKEN.match(name):
            yield where, "is not a valid header name (letters, digits and !#$%&'*+-.^_`|~)"
        elif name.lower() in _OWN_HEADERS:
            yield where, "is set by the exporter itself"
        elif not isinstance(value, str):
            yield where, "must be a string"
        elif not _VALUE.match(value):
            yield where, "must be visible ASCII characters (spaces inside), without CR or LF"


@attrs.frozen
class TracingConfig:
    """
    The C{tracing:} section.

    The sampling decision is made once per trace, where it starts: a
    request that comes with a W3C C{traceparent} follows its client's
    decision (the C{sampled} flag) unless C{parentBased} is false, any
    other one is sampled with the probability C{sampleRatio} (by its trace
    id, so every gateway of a fleet decides alike).
    """

    otlp: str = field(
        Str(check=_checkOTLP, minLength=1, maxLength=2048),
        DEFAULT_OTLP,
        doc="the collector's OTLP/HTTP traces URL (http://HOST:PORT/v1/traces)",
    )
    sampleRatio: float = field(
        Num(0, 1), 1.0, doc="share of the traces that start here which are recorded, 0 to 1"
    )
    serviceName: str = field(
        Str(minLength=1, maxLength=256), "gateway", doc="the service.name of the spans"
    )
    parentBased: bool = field(
        Bool(),
        True,
        doc="follow the sampled flag of the client's traceparent (false: sampleRatio decides)",
    )
    headers: Mapping[str, str] = field(
        Map(), attrs.Factory(dict), doc="extra headers sent to the collector (authorization)"
    )
    maxQueueSize: int = field(
        Int(1, 1_000_000),
        2048,
        doc="finished spans waiting for export, at most; more are dropped and counted",
    )
    maxExportBatchSize: int = field(
        Int(1, 100_000), 512, doc="spans sent to the collector in one request, at most"
    )
    scheduleDelay: float = field(
        Seconds(3600), 1.0, doc="seconds between exports (sooner when a batch is full)"
    )
    exportTimeout: float = field(
        Seconds(600), 10.0, doc="seconds an export may take before its spans count as dropped"
    )

    rules: ClassVar[Tuple[Rule, ...]] = (
        Rule(
            ("headers",),
            _headerErrors,
            doc="header names are tokens, values visible ASCII; Host, Content-Type, "
            "Content-Length and Transfer-Encoding are the exporter's",
        ),
    )
