"""
Tests for the access log (L{gateway.telemetry.accesslog}, its settings in
L{gateway.model.accesslog} and its services in
L{gateway.process.accesslog}): the lines' fields and formats, their
escaping, the batches, the outputs, reopening, and the proxy that writes
one line per request.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import stat
import tempfile
from typing import Any, List, Optional

import attrs
from fakes import ScriptedUpstreamClient
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gateway.cache.engine import ResponseCache
from gateway.filters import FilterRegistry
from gateway.http.errors import UpstreamTimeout
from gateway.model.accesslog import (
    DEFAULT_JSON_FIELDS,
    FIELDS,
    AccessLogConfig,
    syslogAddress,
)
from gateway.model.config import ConfigError, parseConfig
from gateway.pipeline.exchange import Exchange
from gateway.pipeline.resource import GatewayResource
from gateway.process.accesslog import AccessLogService, ReopenOnSignal, accessLogFor
from gateway.process.parent import ParentLink
from gateway.process.pool import ControlChannel, WorkerPool
from gateway.process.sites import GatewaySite, globalFilterSpecs
from gateway.routing.snapshot import SnapshotManager
from gateway.store import StoreState
from gateway.store.relayed import RelayedStore
from gateway.telemetry.accessformat import clfEscape, jsonEscape, makeRenderer
from gateway.telemetry.accesslog import AccessLog, IAccessLog
from gateway.telemetry.logsinks import (
    FileSink,
    ISink,
    StandardOutputSink,
    SyslogSink,
    openSink,
)
from gateway.telemetry.metrics import GatewayCollector
from gateway.telemetry.stats import Stats, mergeSnapshots

#: 2026-05-01T12:00:00Z
NOON = 1777636800.0


class StubRequest:
    """
    What the access log reads of a request, as a
    L{gateway.http.request.GatewayRequest} has it.
    """

    def __init__(
        self,
        method: bytes = b"GET",
        uri: bytes = b"/plain?a=1",
        headers: Optional[dict] = None,
        code: int = 200,
        sentLength: int = 96,
    ) -> None:
        self.method = method
        self.uri = uri
        self.path = uri.split(b"?")[0]
        self.clientproto = b"HTTP/1.1"
        self.code = code
        self.sentLength = sentLength
        self.requestHeaders = Headers(headers or {})


@attrs.define
class Named:
    name: str


@attrs.define
class StubBackend:
    name: str
    config: Any


@attrs.define
class StubServerConfig:
    addr: str


def exchangeFor(
    request: Optional[StubRequest] = None, clientIP: str = "10.1.2.3", start: float = NOON - 0.0125
) -> Exchange:
    """
    @return: the exchange of a request to API C{plain} served by server
        C{nginx} (C{127.0.0.1:8081}) of cluster C{main}, with status 200,
        the upstream's head after 1.5 ms, and a request id.
    """
    exchange = Exchange(
        request or StubRequest(), None, Named("plain"), {}, clientIP, start, Headers()
    )
    exchange.cluster = Named("main")
    exchange.backend = StubBackend("nginx", StubServerConfig("127.0.0.1:8081"))
    exchange.status = 200
    exchange.upstreamLatency = 0.0015
    exchange.requestId = b"abc123"
    return exchange


def render(exchange: Exchange, now: float = NOON + 0.25, **config: Any) -> bytes:
    """
    @return: the line of C{exchange} over at C{now}, made by both kinds of
        renderer (a C{bytes %} format, CPython's, and concatenation,
        PyPy's), which must agree byte for byte.
    """
    formatted = makeRenderer(AccessLogConfig(**config), concat=False)(exchange, now)
    concatenated = makeRenderer(AccessLogConfig(**config), concat=True)(exchange, now)
    assert formatted == concatenated, (formatted, concatenated)
    return formatted


def renderJSON(exchange: Exchange, now: float = NOON + 0.25, **config: Any) -> dict:
    line = render(exchange, now, **config)
    assert line.endswith(b"\n") and line.count(b"\n") == 1, line
    parsed: dict = json.loads(line)
    return parsed


class ConfigTests(SynchronousTestCase):
    """
    C{proxy.accessLog}: true, false or an object.
    """

    def parse(self, accessLog: Any) -> Any:
        return parseConfig(
            {"proxy": {"listen": "tcp:8080", "accessLog": accessLog}}
        ).proxy.accessLog

    def test_default(self) -> None:
        """
        Without C{accessLog}, and with C{true}, the access log is JSON lines
        on the standard output, with the default fields.
        """
        default = parseConfig({"proxy": {"listen": "tcp:8080"}}).proxy.accessLog
        self.assertEqual(default, AccessLogConfig())
        self.assertEqual(self.parse(True), AccessLogConfig())
        self.assertEqual((default.path, default.format), ("-", "json"))
        self.assertEqual(default.fieldNames, DEFAULT_JSON_FIELDS)

    def test_off(self) -> None:
        """
        C{false} is no access log: the proxy gets none.
        """
        self.assertIs(self.parse(False), False)
        config = parseConfig({"proxy": {"listen": "tcp:8080", "accessLog": False}})
        self.assertIsNone(accessLogFor(config.proxy, Clock()))

    def test_object(self) -> None:
        """
        An object sets where the lines go, their format and fields, and the
        batches.
        """
        parsed = self.parse(
            {
                "path": "/var/log/gateway/access.log",
                "format": "combined",
                "fields": ["api", "durationMs"],
                "flushInterval": 0.5,
                "bufferSize": 4096,
                "maxPending": 8192,
            }
        )
        self.assertEqual(
            parsed,
            AccessLogConfig(
                path="/var/log/gateway/access.log",
                format="combined",
                fields=("api", "durationMs"),
                flushInterval=0.5,
                bufferSize=4096,
                maxPending=8192,
            ),
        )
        self.assertEqual(self.parse({"format": "combined"}).fieldNames, ())

    def test_errors(self) -> None:
        """
        Every error of the object is reported at once, naming its field
        under C{proxy.accessLog}.
        """
        with self.assertRaises(ConfigError) as e:
            self.parse(
                {
                    "format": "apache",
                    "fields": ["status", "nope"],
                    "flushInterval": 0,
                    "path": "syslog:nohost",
                    "colour": "red",
                }
            )
        keys = [key for key, _ in e.exception.errors]
        self.assertEqual(
            keys,
            [
                "proxy.accessLog.path",
                "proxy.accessLog.format",
                "proxy.accessLog.fields[1]",
                "proxy.accessLog.flushInterval",
                "proxy.accessLog.colour",
            ],
        )

    def test_pendingAtLeastBuffer(self) -> None:
        """
        C{maxPending} may not be below C{bufferSize}.
        """
        with self.assertRaises(ConfigError) as e:
            self.parse({"bufferSize": 2048, "maxPending": 1024})
        self.assertEqual(e.exception.key, "proxy.accessLog.maxPending")

    def test_neither(self) -> None:
        """
        Anything else than true, false or an object is refused.
        """
        with self.assertRaises(ConfigError) as e:
            self.parse("yes")
        self.assertEqual(e.exception.key, "proxy.accessLog")
        self.assertIn("true or false, or an object", e.exception.message)

    def test_duplicateField(self) -> None:
        """
        A field listed twice is refused.
        """
        with self.assertRaises(ConfigError) as e:
            self.parse({"fields": ["status", "status"]})
        self.assertEqual(e.exception.key, "proxy.accessLog.fields[1]")

    def test_syslogAddresses(self) -> None:
        """
        C{syslog:} is C{/dev/log}, C{syslog:/PATH} a UNIX socket,
        C{syslog:HOST:PORT} UDP; anything else is no syslog address.
        """
        self.assertEqual(syslogAddress("syslog:"), "/dev/log")
        self.assertEqual(syslogAddress("syslog:/run/log.sock"), "/run/log.sock")
        self.assertEqual(syslogAddress("syslog:127.0.0.1:514"), ("127.0.0.1", 514))
        self.assertEqual(syslogAddress("syslog:[::1]:5514"), ("::1", 5514))
        self.assertIsNone(syslogAddress("/var/log/access.log"))
        self.assertIsNone(syslogAddress("-"))
        for bad in ("syslog:host", "syslog:host:0", "syslog::514", "syslog:h:99999"):
            self.assertRaises(ValueError, syslogAddress, bad)

    def test_noAccessLogFilter(self) -> None:
        """
        The access log is no filter any more: C{accessLog: true} adds none
        to the global chain.
        """
        config = parseConfig({"proxy": {"listen": "tcp:8080", "filters": ["request-id"]}})
        self.assertEqual([s.name for s in globalFilterSpecs(config.proxy)], ["request-id"])


class JSONLineTests(SynchronousTestCase):
    """
    The JSON line's fields.
    """

    def test_defaultFields(self) -> None:
        """
        The default line holds the default fields, in their order, with
        the exchange's values.
        """
        request = StubRequest(headers={b"user-agent": [b"curl/8.0"]})
        line = renderJSON(exchangeFor(request))
        self.assertEqual(list(line), list(DEFAULT_JSON_FIELDS))
        self.assertEqual(
            line,
            {
                "time": "2026-05-01T12:00:00.250Z",
                "client": "10.1.2.3",
                "method": "GET",
                "uri": "/plain?a=1",
                "status": 200,
                "bytes": 96,
                "durationMs": 262.5,
                "upstreamMs": 1.5,
                "api": "plain",
                "server": "nginx",
                "requestId": "abc123",
                "userAgent": "curl/8.0",
            },
        )

    def test_everyField(self) -> None:
        """
        Every field, in the order configured.
        """
        request = StubRequest(
            method=b"POST",
            headers={
                b"user-agent": [b"ua"],
                b"referer": [b"https://example.com/"],
                b"host": [b"api.example.com"],
            },
        )
        exchange = exchangeFor(request)
        exchange.routing = "canary"
        exchange.retries = 2
        exchange.outcome = "timeout"
        exchange.error = "upstream timed out"
        exchange.status = 504
        order = tuple(reversed(FIELDS))
        line = renderJSON(exchange, fields=order)
        self.assertEqual(tuple(line), order)
        self.assertEqual(
            line,
            {
                "time": "2026-05-01T12:00:00.250Z",
                "client": "10.1.2.3",
                "method": "POST",
                "uri": "/plain?a=1",
                "path": "/plain",
                "protocol": "HTTP/1.1",
                "host": "api.example.com",
                "status": 504,
                "bytes": 96,
                "durationMs": 262.5,
                "upstreamMs": 1.5,
                "api": "plain",
                "cluster": "main",
                "server": "nginx",
                "serverAddr": "127.0.0.1:8081",
                "routing": "canary",
                "retries": 2,
                "outcome": "timeout",
                "error": "upstream timed out",
                "requestId": "abc123",
                "userAgent": "ua",
                "referer": "https://example.com/",
                "cache": None,
            },
        )

    def test_shownURI(self) -> None:
        """
        The C{uri} field, in both formats, is the exchange's C{shownURI}
        when it has one (the target without an API key the C{auth} filter
        found in its query).
        """
        exchange = exchangeFor(StubRequest())
        exchange.shownURI = b"/plain?a=1"
        exchange.request.uri = b"/plain?a=1&apikey=secret-key-0123456789"
        self.assertEqual(renderJSON(exchange)["uri"], "/plain?a=1")
        combined = render(exchange, format="combined")
        self.assertIn(b'"GET /plain?a=1 HTTP/1.1"', combined)
        self.assertNotIn(b"secret", combined)

    def test_absent(self) -> None:
        """
        What is not known is C{null}: no API (a 404), no server, no
        upstream answer, no request id, no headers.
        """
        exchange = Exchange(StubRequest(code=404), None, None, {}, "::1", NOON, Headers())
        exchange.status = 404
        line = renderJSON(exchange, fields=FIELDS)
        for name in (
            "host",
            "upstreamMs",
            "api",
            "cluster",
            "server",
            "serverAddr",
            "routing",
            "outcome",
            "error",
            "requestId",
            "userAgent",
            "referer",
        ):
            self.assertIsNone(line[name], name)
        self.assertEqual((line["client"], line["status"], line["retries"]), ("::1", 404, 0))

    def test_clientGone(self) -> None:
        """
        A client that left before its answer's head is logged with status
        499 (nginx's); the status already sent otherwise.
        """
        exchange = exchangeFor()
        exchange.status = None
        exchange.gone = True
        self.assertEqual(renderJSON(exchange)["status"], 499)
        exchange.status = 200
        self.assertEqual(renderJSON(exchange)["status"], 200)

    def test_noStatus(self) -> None:
        """
        An answer the pipeline made without its answer hooks (an internal
        error's 500) is logged with the request's status.
        """
        exchange = exchangeFor(StubRequest(code=500))
        exchange.status = None
        self.assertEqual(renderJSON(exchange)["status"], 500)

    def test_milliseconds(self) -> None:
        """
        Durations are milliseconds to the microsecond, the same whether
        formatted from floats (CPython) or integers (PyPy); a negative one
        (the clock went back) is 0.
        """
        exchange = exchangeFor(start=NOON)
        exchange.upstreamLatency = 0.0123456
        for concat in (False, True):
            renderer = makeRenderer(AccessLogConfig(fields=("durationMs", "upstreamMs")), concat)
            self.assertEqual(
                json.loads(renderer(exchange, NOON + 1.0000004)),
                {"durationMs": 1000.0, "upstreamMs": 12.346},
            )
            self.assertEqual(renderer(exchange, NOON - 1)[:17], b'{"durationMs":0.0')
            exchange.upstreamLatency = None
            self.assertEqual(json.loads(renderer(exchange, NOON))["upstreamMs"], None)
            exchange.upstreamLatency = 0.0123456

    def test_time(self) -> None:
        """
        The time is when the request was over, in UTC, to the millisecond;
        it follows the clock across seconds.
        """
        for concat in (False, True):
            renderer = makeRenderer(AccessLogConfig(fields=("time",)), concat)
            exchange = exchangeFor()
            for now, text in (
                (NOON + 0.9999, b"2026-05-01T12:00:00.999Z"),
                (NOON + 61.0025, b"2026-05-01T12:01:01.002Z"),
                (NOON, b"2026-05-01T12:00:00.000Z"),
                (NOON + 0.0505, b"2026-05-01T12:00:00.050Z"),
            ):
                self.assertEqual(renderer(exchange, now), b'{"time":"' + text + b'"}\n')

    def test_percent(self) -> None:
        """
        Values holding C{%} go in as they are (the C{bytes %} format keeps
        them out of its format).
        """
        exchange = exchangeFor(StubRequest(uri=b"/a%20b%s%d%%"))
        self.assertEqual(renderJSON(exchange, fields=("uri",)), {"uri": "/a%20b%s%d%%"})


#: Values a client controls, hostile to a log reader.
HOSTILE = [
    b'quote" and \\ backslash',
    b"new\nline\r\nand\ttab",
    b"nul\x00 bell\x07 escape\x1b[31mred\x1b[0m",
    b"del\x7f",
    b"c1 \xc2\x85 \xc2\x9b",
    b"separators \xe2\x80\xa8 \xe2\x80\xa9",
    b"not utf-8 \xff\xfe \xc3",
    b"utf-8 \xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80",
    b'"}, {"status": 200, "injected": "',
    b"%s %d %%",
]


class EscapingTests(SynchronousTestCase):
    """
    Whatever a client sends, a JSON line is one valid JSON object on one
    line, of valid UTF-8, without a raw control character; a combined line
    is printable ASCII.
    """

    def hostileExchange(self, value: bytes) -> Exchange:
        request = StubRequest(
            method=value,
            uri=value,
            headers={b"user-agent": [value], b"referer": [value], b"host": [value]},
        )
        exchange = exchangeFor(request, clientIP=value.decode("latin-1"))
        exchange.requestId = value
        exchange.error = value.decode("utf-8", "surrogateescape")
        exchange.routing = value.decode("latin-1")
        return exchange

    def assertCleanJSON(self, line: bytes) -> dict:
        self.assertTrue(line.endswith(b"\n"))
        body = line[:-1]
        text = body.decode("utf-8")  # valid UTF-8, or this raises
        for c in text:
            self.assertFalse(
                ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c in "\u2028\u2029", repr(line)
            )
        parsed: dict = json.loads(text)
        return parsed

    def test_json(self) -> None:
        """
        Hostile bytes in every client-controlled field: the line parses,
        has every field, and each value reads back as the bytes decoded
        from UTF-8 (each byte that is not UTF-8 as the text C{\\xHH}).
        """
        for value in HOSTILE:
            exchange = self.hostileExchange(value)
            line = render(exchange, fields=FIELDS)
            parsed = self.assertCleanJSON(line)
            self.assertEqual(list(parsed), list(FIELDS))
            expected = value.decode("utf-8", "backslashreplace")
            for name in ("method", "uri", "requestId"):
                self.assertEqual(parsed[name], expected, (name, value))
            # (Headers keeps a value without its CR and LF.)
            [held] = exchange.request.requestHeaders.getRawHeaders(b"host")
            for name in ("host", "userAgent", "referer"):
                self.assertEqual(
                    parsed[name], held.decode("utf-8", "backslashreplace"), (name, value)
                )
            self.assertEqual(parsed["client"], value.decode("latin-1"))
            self.assertEqual(parsed["routing"], value.decode("latin-1"))
            self.assertEqual(parsed["status"], 200)

    def test_jsonEscapes(self) -> None:
        """
        The escapes themselves: JSON's own for quotes, backslashes and C0
        controls, C{\\u} for DEL, C1 and the separators, UTF-8 kept as it
        is.
        """
        self.assertEqual(jsonEscape(b"plain /path?q=1"), b"plain /path?q=1")
        self.assertEqual(jsonEscape(b'a"b\\c'), b'a\\"b\\\\c')
        self.assertEqual(jsonEscape(b"\n\t\x00\x1b"), b"\\n\\t\\u0000\\u001b")
        self.assertEqual(jsonEscape(b"\x7f\xc2\x85\xe2\x80\xa8"), b"\\u007f\\u0085\\u2028")
        self.assertEqual(jsonEscape(b"\xc3\xa9"), b"\xc3\xa9")
        self.assertEqual(jsonEscape(b"\xff"), b"\\\\xff")

    def test_surrogates(self) -> None:
        """
        A string holding lone surrogates (from a C{surrogateescape}
        decoding) still gives valid UTF-8 and valid JSON.
        """
        exchange = exchangeFor()
        exchange.error = "bad \udcff \ud800 end"
        parsed = self.assertCleanJSON(render(exchange, fields=("error",)))
        self.assertEqual(parsed["error"], "bad \\xed\\xb3\\xbf \\xed\\xa0\\x80 end")

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=200), st.text(max_size=50))
    def test_anyBytes(self, value: bytes, text: str) -> None:
        """
        Any bytes in a header and the target, any text in the client
        address and the error: a valid JSON line that reads them back.
        """
        request = StubRequest(uri=value, headers={b"user-agent": [value]})
        exchange = exchangeFor(request, clientIP=text)
        exchange.error = text
        parsed = self.assertCleanJSON(
            render(exchange, fields=("uri", "userAgent", "client", "error"))
        )
        # (Headers keeps a value without its CR and LF.)
        [held] = request.requestHeaders.getRawHeaders(b"user-agent")
        self.assertEqual(
            (parsed["uri"], parsed["userAgent"]),
            (value.decode("utf-8", "backslashreplace"), held.decode("utf-8", "backslashreplace")),
        )
        readable = text.encode("utf-8", "surrogatepass").decode("utf-8", "backslashreplace")
        self.assertEqual((parsed["client"], parsed["error"]), (readable, readable))

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=200))
    def test_anyBytesCombined(self, value: bytes) -> None:
        """
        Any bytes in the target and the headers: a combined line is
        printable ASCII, its quoted fields free of unescaped quotes.
        """
        request = StubRequest(
            method=value, uri=value, headers={b"user-agent": [value], b"referer": [value]}
        )
        request.clientproto = value
        line = render(exchangeFor(request), format="combined")
        body = line[:-1]
        self.assertTrue(all(0x20 <= c < 0x7F for c in body), line)
        # Exactly the quotes of the format: request line, referer, agent.
        self.assertEqual(body.count(b'"'), 6, line)

    def test_safeCheck(self) -> None:
        """
        The check for values that need no escaping (PyPy's) agrees with
        the regular expression (CPython's) on every byte.
        """
        from gateway.telemetry.accessformat import _UNSAFE, _safe

        for c in range(256):
            for value in (bytes([c]), b"/a" + bytes([c]) + b"b"):
                self.assertEqual(_safe(value), _UNSAFE.search(value) is None, value)

    def test_repeatedValuesKept(self) -> None:
        """
        Values that repeat (names, methods, hosts, clients) are rendered
        once and kept, at most a bounded number of them: past it the kept
        ones are let go, and every line is still right.
        """
        from gateway.telemetry import accessformat

        self.patch(accessformat, "_CACHE_SIZE", 8)
        for concat in (False, True):
            renderer = makeRenderer(AccessLogConfig(fields=("client", "method", "host")), concat)
            for i in range(50):
                client = f'10.0.0.{i}"'
                request = StubRequest(method=b"M%d" % (i % 3,), headers={b"host": [b"h%d" % i]})
                line = json.loads(renderer(exchangeFor(request, clientIP=client), NOON))
                self.assertEqual(line, {"client": client, "method": f"M{i % 3}", "host": f"h{i}"})

    def test_combinedEscapes(self) -> None:
        """
        The combined format escapes as nginx does: C{\\xHH} for each byte
        outside printable ASCII, C{"} and C{\\}.
        """
        self.assertEqual(clfEscape(b"/plain?a=1"), b"/plain?a=1")
        self.assertEqual(clfEscape(b'a"b\\c\n\xff'), b"a\\x22b\\x5Cc\\x0A\\xFF")


class CombinedLineTests(SynchronousTestCase):
    """
    The combined log format.
    """

    def test_line(self) -> None:
        """
        The NCSA combined log format, as nginx writes it (C{-} for a missing
        referer or agent, the time in UTC).
        """
        request = StubRequest(headers={b"user-agent": [b"curl/8.0"]})
        self.assertEqual(
            render(exchangeFor(request), format="combined"),
            b'10.1.2.3 - - [01/May/2026:12:00:00 +0000] "GET /plain?a=1 HTTP/1.1" 200 96 '
            b'"-" "curl/8.0"\n',
        )

    def test_fields(self) -> None:
        """
        Configured fields follow the combined line as C{name=value}:
        strings quoted, numbers bare, absent values C{-}.
        """
        exchange = exchangeFor()
        exchange.error = 'say "no"'
        line = render(
            exchange,
            format="combined",
            fields=("api", "durationMs", "upstreamMs", "routing", "error", "requestId", "time"),
        )
        self.assertTrue(
            line.endswith(
                b' api="plain" durationMs=262.500 upstreamMs=1.500 routing=- '
                b'error="say \\x22no\\x22" requestId="abc123" time="2026-05-01T12:00:00.250Z"\n'
            ),
            line,
        )

    def test_hostile(self) -> None:
        """
        Hostile values stay inside their quotes, escaped; a client address
        that is no address (a forwarded header's) too.
        """
        value = b'x" 200 1 "y\n'
        request = StubRequest(uri=value, headers={b"referer": [value]})
        line = render(exchangeFor(request, clientIP="1.2.3.4 - evil"), format="combined")
        self.assertEqual(
            line,
            b'1.2.3.4 - evil - - [01/May/2026:12:00:00 +0000] "GET x\\x22 200 1 \\x22y\\x0A '
            # (Headers keeps a value without its CR and LF.)
            b'HTTP/1.1" 200 96 "x\\x22 200 1 \\x22y" "-"\n',
        )


@implementer(ISink)
class MemorySink:
    """
    An output that keeps what is written, and can be told to take part of
    it, none of it (full), or to fail.
    """

    regular = True
    atomic: Optional[int] = None
    perLine = False

    def __init__(self) -> None:
        self.writes: List[bytes] = []
        self.failWith: Optional[OSError] = None
        self.full = False
        self.takes: Optional[int] = None
        self.reopened = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        if self.failWith is not None:
            raise self.failWith
        if self.full:
            raise BlockingIOError(11, "full")
        n = len(data) if self.takes is None else min(self.takes, len(data))
        self.writes.append(data[:n])
        return n

    def pollable(self) -> Optional[int]:
        return None

    def reopen(self) -> bool:
        self.reopened += 1
        return True

    def close(self) -> None:
        self.closed = True

    def lines(self) -> List[bytes]:
        return b"".join(self.writes).splitlines(keepends=True)


def opened(sink: Any) -> Any:
    """
    @return: C{sink}, opened (what an L{AccessLog}'s opener returns).
    """
    sink.open()
    return sink


class BatchTests(SynchronousTestCase):
    """
    Lines are written in batches: when the oldest has waited
    C{flushInterval}, when the buffer holds C{bufferSize} bytes, and when
    the log closes.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOON)
        self.sink = MemorySink()

    def makeLog(self, **config: Any) -> AccessLog:
        config.setdefault("fields", ("status", "uri"))
        accessLog = AccessLog(AccessLogConfig(**config), self.clock, lambda c: self.sink)
        accessLog.open()
        return accessLog

    def test_interfaces(self) -> None:
        """
        The log and every output provide their interfaces.
        """
        verifyObject(IAccessLog, self.makeLog())
        verifyObject(ISink, FileSink("/nonexistent/x"))
        verifyObject(ISink, StandardOutputSink())
        verifyObject(ISink, SyslogSink("/nonexistent/log"))
        verifyObject(ISink, self.sink)

    def test_interval(self) -> None:
        """
        Lines wait until the first of them has waited C{flushInterval}
        seconds, then go out in one write.
        """
        accessLog = self.makeLog(flushInterval=0.1)
        accessLog.log(exchangeFor())
        self.clock.advance(0.05)
        accessLog.log(exchangeFor(StubRequest(uri=b"/two")))
        self.assertEqual(self.sink.writes, [])
        self.clock.advance(0.05)
        self.assertEqual(
            self.sink.writes,
            [b'{"status":200,"uri":"/plain?a=1"}\n{"status":200,"uri":"/two"}\n'],
        )
        self.assertEqual((accessLog.written, accessLog.dropped), (2, 0))
        # Nothing to write: no timer, no write.
        self.assertEqual(self.clock.getDelayedCalls(), [])
        accessLog.log(exchangeFor())
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(0.1)
        self.assertEqual(len(self.sink.writes), 2)

    def test_bufferSize(self) -> None:
        """
        A buffer that reaches C{bufferSize} bytes is written at once.
        """
        line = render(exchangeFor(), fields=("status", "uri"))
        accessLog = self.makeLog(bufferSize=len(line) * 3)
        for _ in range(2):
            accessLog.log(exchangeFor())
        self.assertEqual(self.sink.writes, [])
        accessLog.log(exchangeFor())
        self.assertEqual(self.sink.writes, [line * 3])
        self.assertEqual(accessLog.written, 3)

    def test_close(self) -> None:
        """
        Closing writes what is buffered, cancels the timer and closes the
        output.
        """
        accessLog = self.makeLog()
        accessLog.log(exchangeFor())
        accessLog.close()
        self.assertEqual(len(self.sink.lines()), 1)
        self.assertTrue(self.sink.closed)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_notOpenYet(self) -> None:
        """
        Lines logged before the output is open wait for it.
        """
        accessLog = AccessLog(AccessLogConfig(), self.clock, lambda c: self.sink)
        accessLog.log(exchangeFor())
        self.clock.advance(1)
        self.assertEqual(self.sink.writes, [])
        accessLog.open()
        accessLog.flush()
        self.assertEqual(len(self.sink.lines()), 1)

    def test_renderingFails(self) -> None:
        """
        A line that cannot be rendered is dropped and counted; the request
        is not disturbed.
        """
        accessLog = self.makeLog()
        accessLog.log(object())
        self.assertEqual(accessLog.dropped, 1)
        self.assertEqual(len(self.flushLoggedErrors(AttributeError)), 1)


class SlowOutputTests(SynchronousTestCase):
    """
    An output that cannot keep up, or fails, never holds a request up:
    lines wait (up to C{maxPending} bytes), then are dropped and counted.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.sink = MemorySink()
        self.line = render(exchangeFor(), fields=("status",))

    def makeLog(self, **config: Any) -> AccessLog:
        config.setdefault("fields", ("status",))
        accessLog = AccessLog(AccessLogConfig(**config), self.clock, lambda c: self.sink)
        accessLog.open()
        return accessLog

    def test_full(self) -> None:
        """
        Lines an output cannot take now wait, and are written when it can;
        meanwhile a full buffer is not written again on every line, only
        when the timer fires.
        """
        accessLog = self.makeLog(bufferSize=len(self.line) * 2, maxPending=1000)
        self.sink.full = True
        attempts = []
        write = self.sink.write

        def counting(data: bytes) -> int:
            attempts.append(data)
            return write(data)

        self.sink.write = counting  # type: ignore[method-assign]
        for _ in range(10):
            accessLog.log(exchangeFor())
        self.assertEqual(len(attempts), 1)
        self.sink.full = False
        self.clock.advance(0.1)
        self.assertEqual(self.sink.lines(), [self.line] * 10)
        self.assertEqual((accessLog.written, accessLog.dropped), (10, 0))

    def test_retriedByTheTimer(self) -> None:
        """
        Lines still waiting are tried again every C{flushInterval} even
        when no new line comes.
        """
        accessLog = self.makeLog()
        self.sink.full = True
        accessLog.log(exchangeFor())
        self.clock.advance(0.1)
        self.clock.advance(0.1)
        self.assertEqual(self.sink.writes, [])
        self.sink.full = False
        self.clock.advance(0.1)
        self.assertEqual(self.sink.lines(), [self.line])

    def test_maxPending(self) -> None:
        """
        Past C{maxPending} bytes waiting, new lines are dropped and
        counted (without being rendered).
        """
        accessLog = self.makeLog(bufferSize=1, maxPending=len(self.line) * 3)
        self.sink.full = True
        for _ in range(10):
            accessLog.log(exchangeFor())
        self.assertEqual(accessLog.dropped, 7)
        self.sink.full = False
        self.clock.advance(0.1)
        self.assertEqual((accessLog.written, accessLog.dropped), (3, 7))
        accessLog.log(exchangeFor())
        self.assertEqual((accessLog.written, accessLog.dropped), (4, 7))

    def test_failing(self) -> None:
        """
        Lines an output refuses (a full disk) are dropped and counted;
        the gateway says so once, not once per batch, and says when it
        writes again.
        """
        accessLog = self.makeLog(bufferSize=1)
        self.sink.failWith = OSError(28, "No space left on device")
        logged: List[dict] = []
        from twisted.logger import globalLogPublisher

        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        for _ in range(5):
            accessLog.log(exchangeFor())
        self.assertEqual((accessLog.written, accessLog.dropped), (0, 5))
        self.sink.failWith = None
        accessLog.log(exchangeFor())
        self.assertEqual((accessLog.written, accessLog.dropped), (1, 5))
        mine = [e for e in logged if e.get("log_namespace") == "gateway.telemetry.accesslog"]
        self.assertEqual(len(mine), 2, mine)
        self.assertIn("No space left on device", mine[0]["reason"])
        self.assertEqual(mine[1]["dropped"], 5)

    def test_failingReportedAgain(self) -> None:
        """
        While an output keeps failing, the gateway says so again once per
        C{reportInterval}.
        """
        accessLog = self.makeLog(bufferSize=1)
        self.sink.failWith = OSError(5, "Input/output error")
        logged: List[dict] = []
        from twisted.logger import globalLogPublisher

        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        for _ in range(3):
            accessLog.log(exchangeFor())
            self.clock.advance(30)
        mine = [e for e in logged if e.get("log_namespace") == "gateway.telemetry.accesslog"]
        self.assertEqual(len(mine), 2)

    def test_shortWrite(self) -> None:
        """
        A file that takes part of a batch (it is full) keeps whole lines
        only: the rest is dropped, and the next write first ends the torn
        line, so that lines written later start a line of their own.
        """
        accessLog = self.makeLog(bufferSize=len(self.line) * 3)
        self.sink.takes = len(self.line) + 3
        for _ in range(3):
            accessLog.log(exchangeFor())
        self.assertEqual((accessLog.written, accessLog.dropped), (1, 2))
        self.sink.takes = None
        for _ in range(3):
            accessLog.log(exchangeFor())
        self.assertEqual((accessLog.written, accessLog.dropped), (4, 2))
        lines = self.sink.lines()
        self.assertEqual(lines, [self.line, self.line[:3] + b"\n"] + [self.line] * 3)

    def test_closeDropsWhatCannotBeWritten(self) -> None:
        """
        Lines an output still cannot take when the log closes are dropped
        and counted.
        """
        accessLog = self.makeLog()
        self.sink.full = True
        accessLog.log(exchangeFor())
        accessLog.log(exchangeFor())
        accessLog.close()
        self.assertEqual((accessLog.written, accessLog.dropped), (0, 2))
        self.assertTrue(self.sink.closed)


class PipeTests(SynchronousTestCase):
    """
    Pipes and FIFOs: written without blocking, in pieces of whole lines of
    at most C{PIPE_BUF} bytes.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.read, self.write = os.pipe()
        self.addCleanup(os.close, self.read)
        self.addCleanup(os.close, self.write)

    def test_stdoutPipeDoesNotBlock(self) -> None:
        """
        A standard output that is a full pipe: the log writes what fits,
        keeps the rest waiting, drops past C{maxPending}, and never
        blocks; the descriptor itself stays blocking (the process's other
        writers do not see C{EAGAIN}).
        """
        sink = StandardOutputSink(self.write)
        config = AccessLogConfig(fields=("uri",), bufferSize=4096, maxPending=65536)
        accessLog = AccessLog(config, self.clock, lambda c: opened(sink))
        accessLog.open()
        self.addCleanup(sink.close)
        self.assertEqual((sink.regular, sink.atomic), (False, select.PIPE_BUF))
        self.assertTrue(os.get_blocking(self.write))
        uri = b"/" + b"x" * 100
        for _ in range(20000):
            accessLog.log(exchangeFor(StubRequest(uri=uri)))
        self.assertGreater(accessLog.written, 0)
        self.assertGreater(accessLog.dropped, 0)
        # Whatever was written is whole lines.
        data = b""
        while True:
            try:
                chunk = os.read(self.read, 65536)
            except BlockingIOError:
                break
            data += chunk
            if len(chunk) < 65536:
                break
        lines = data.splitlines(keepends=True)
        self.assertEqual(len(lines), accessLog.written)
        self.assertEqual(set(lines), {b'{"uri":"' + uri + b'"}\n'})

    def test_stdoutPipeLeavesRoom(self) -> None:
        """
        A standard output that is a pipe is filled to its last
        C{StandardOutputSink.reserve} bytes at most: the process's other
        writers (twistd's own log, which blocks) still find room when its
        reader stalls.
        """
        sink = StandardOutputSink(self.write)
        config = AccessLogConfig(fields=("uri",), bufferSize=1, maxPending=1 << 20)
        accessLog = AccessLog(config, self.clock, lambda c: opened(sink))
        accessLog.open()
        self.addCleanup(sink.close)
        for _ in range(5000):
            accessLog.log(exchangeFor(StubRequest(uri=b"/" + b"x" * 100)))
        self.clock.advance(0.1)
        self.assertGreater(accessLog.written, 0)
        # The descriptor twistd writes to is blocking: this would hang
        # without the room left.  (The kernel keeps a pipe's bytes in
        # pages, of which the last may be partly used.)
        room = sink.reserve - select.PIPE_BUF
        self.assertEqual(os.write(self.write, b"t" * room), room)

    def test_watched(self) -> None:
        """
        Lines a full pipe cannot take are written as soon as the reactor
        says it can take more, not at the next timer; then the reactor
        stops watching it.
        """
        reactor = MemoryReactorClock()
        sink = StandardOutputSink(self.write)
        sink.reserve = 0
        config = AccessLogConfig(fields=("uri",), bufferSize=1, maxPending=1 << 20)
        accessLog = AccessLog(config, reactor, lambda c: opened(sink))
        accessLog.open()
        self.addCleanup(sink.close)
        line = render(exchangeFor(StubRequest(uri=b"/" + b"x" * 1000)), fields=("uri",))
        while not reactor.getWriters():
            accessLog.log(exchangeFor(StubRequest(uri=b"/" + b"x" * 1000)))
        [watch] = reactor.getWriters()
        self.assertEqual(watch.fileno(), sink.pollable())
        waiting = len(accessLog._lines)
        written = accessLog.written
        os.set_blocking(self.read, False)
        drained = b""
        while True:
            try:
                drained += os.read(self.read, 1 << 20)
            except BlockingIOError:
                break
        self.assertEqual(drained, line * written)
        watch.doWrite()
        self.assertEqual(reactor.getWriters(), [])
        self.assertGreater(waiting, 0)
        self.assertEqual(accessLog._lines, [])
        accessLog.close()
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_pieces(self) -> None:
        """
        A batch goes into a pipe in writes of whole lines of at most
        C{PIPE_BUF} bytes each (a longer line alone).
        """
        sink = StandardOutputSink(self.write)
        sink.open()
        self.addCleanup(sink.close)
        writes: List[int] = []
        original = sink.write

        def recording(data: bytes) -> int:
            writes.append(len(data))
            return original(data)

        sink.write = recording  # type: ignore[method-assign]
        config = AccessLogConfig(fields=("uri",), bufferSize=1 << 20, maxPending=1 << 20)
        accessLog = AccessLog(config, self.clock, lambda c: sink)
        accessLog.open()
        short = exchangeFor(StubRequest(uri=b"/" + b"a" * 90))
        long = exchangeFor(StubRequest(uri=b"/" + b"b" * (select.PIPE_BUF + 10)))
        for _ in range(100):
            accessLog.log(short)
        accessLog.log(long)
        accessLog.log(short)
        accessLog.flush()
        self.assertEqual(accessLog.written, 102)
        self.assertTrue(all(n <= select.PIPE_BUF for n in writes[:-2]), writes)
        shortLine = render(short, fields=("uri",))
        longLine = render(long, fields=("uri",))
        self.assertEqual(writes[-2:], [len(longLine), len(shortLine)])
        self.assertEqual(sum(writes), 101 * len(shortLine) + len(longLine))


class FileSinkTests(SynchronousTestCase):
    """
    A file: appended to, made if missing, opened again for logrotate.
    """

    def setUp(self) -> None:
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.path = os.path.join(self.directory, "access.log")
        self.clock = Clock()

    def makeLog(self) -> AccessLog:
        config = AccessLogConfig(path=self.path, fields=("uri",))
        accessLog = AccessLog(config, self.clock)
        accessLog.open()
        self.addCleanup(accessLog.close)
        return accessLog

    def test_append(self) -> None:
        """
        The file is made (mode 0640 at most) or appended to, never
        truncated; it is opened with C{O_APPEND}.
        """
        with open(self.path, "wb") as f:
            f.write(b"before\n")
        accessLog = self.makeLog()
        accessLog.log(exchangeFor())
        accessLog.flush()
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), b'before\n{"uri":"/plain?a=1"}\n')
        os.remove(self.path)
        fresh = self.makeLog()
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode) & ~0o640, 0)
        assert isinstance(fresh.sink, FileSink)
        import fcntl

        flags = fcntl.fcntl(fresh.sink._fd, fcntl.F_GETFL)
        self.assertTrue(flags & os.O_APPEND)

    def test_reopen(self) -> None:
        """
        After the file was renamed (logrotate), C{reopen} writes what was
        buffered to it, then makes a new file at the path for what
        follows.
        """
        accessLog = self.makeLog()
        accessLog.log(exchangeFor(StubRequest(uri=b"/before")))
        os.rename(self.path, self.path + ".1")
        accessLog.log(exchangeFor(StubRequest(uri=b"/buffered")))
        accessLog.reopen()
        accessLog.log(exchangeFor(StubRequest(uri=b"/after")))
        accessLog.flush()
        with open(self.path + ".1", "rb") as f:
            self.assertEqual(f.read(), b'{"uri":"/before"}\n{"uri":"/buffered"}\n')
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), b'{"uri":"/after"}\n')

    def test_reopenFails(self) -> None:
        """
        When the file cannot be opened again, the old one is written on,
        and the error logged.
        """
        accessLog = self.makeLog()
        os.rename(self.path, self.path + ".1")
        os.chmod(self.directory, 0o500)
        self.addCleanup(os.chmod, self.directory, 0o700)
        if os.access(self.directory, os.W_OK):
            # (root writes anyway: a missing directory then.)
            os.chmod(self.directory, 0o700)
            os.rename(self.directory, self.directory + ".gone")
            self.addCleanup(os.rename, self.directory + ".gone", self.directory)
            gone = self.directory + ".gone"
        else:
            gone = self.directory
        accessLog.reopen()
        accessLog.log(exchangeFor())
        accessLog.flush()
        with open(os.path.join(gone, "access.log.1"), "rb") as f:
            self.assertEqual(f.read(), b'{"uri":"/plain?a=1"}\n')
        self.assertEqual(accessLog.written, 1)

    def test_devFull(self) -> None:
        """
        A file whose every write fails (C{/dev/full}: no space left) drops
        the lines and counts them.
        """
        if not os.path.exists("/dev/full"):
            self.skipTest("no /dev/full")
        accessLog = AccessLog(AccessLogConfig(path="/dev/full", bufferSize=1), self.clock)
        accessLog.open()
        for _ in range(3):
            accessLog.log(exchangeFor())
        accessLog.close()
        self.assertEqual((accessLog.written, accessLog.dropped), (0, 3))

    def test_cannotOpen(self) -> None:
        """
        A path that cannot be opened stops the start with a message naming
        C{proxy.accessLog.path}.
        """
        config = AccessLogConfig(path=os.path.join(self.directory, "missing", "access.log"))
        messages: List[str] = []
        service = AccessLogService(AccessLog(config, self.clock), messages.append)
        service.privilegedStartService()
        self.assertEqual(len(messages), 1)
        self.assertTrue(messages[0].startswith("proxy.accessLog.path: cannot open "), messages)
        self.assertIn("No such file or directory", messages[0])


class SyslogTests(SynchronousTestCase):
    """
    Syslog: one datagram per line, RFC 3164, without blocking.
    """

    def setUp(self) -> None:
        # (A UNIX socket's path is short: 107 bytes at most.)
        directory = tempfile.mkdtemp(prefix="gw-syslog-")
        self.addCleanup(shutil.rmtree, directory, True)
        self.address = os.path.join(directory, "log.sock")
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.server.bind(self.address)
        self.server.setblocking(False)
        self.addCleanup(self.server.close)

    def received(self) -> List[bytes]:
        out = []
        while True:
            try:
                out.append(self.server.recv(65536))
            except BlockingIOError:
                return out

    def test_datagrams(self) -> None:
        """
        Each line is a datagram: priority (facility and severity info), a
        timestamp, the host, the tag, then the line without its newline.
        """
        clock = Clock()
        clock.advance(NOON)
        sink = SyslogSink(self.address, facility="local3", tag="edge", clock=clock.seconds)
        config = AccessLogConfig(path="syslog:" + self.address, fields=("status",))
        accessLog = AccessLog(config, clock, lambda c: sink)
        accessLog.open()
        self.addCleanup(accessLog.close)
        accessLog.log(exchangeFor())
        accessLog.log(exchangeFor())
        accessLog.flush()
        messages = self.received()
        self.assertEqual(len(messages), 2)
        host = socket.gethostname().split(".")[0].encode()
        stamp = self.stamp(NOON)
        self.assertEqual(messages[0], b"<158>" + stamp + b" " + host + b' edge: {"status":200}')
        self.assertEqual(accessLog.written, 2)

    def stamp(self, when: float) -> bytes:
        import time

        text = time.strftime("%b %d %H:%M:%S", time.localtime(when))
        if text[4] == "0":
            text = text[:4] + " " + text[5:]
        return text.encode()

    def test_openSink(self) -> None:
        """
        C{openSink} opens a syslog path on the socket it names, with the
        configured facility and tag.
        """
        config = AccessLogConfig(path="syslog:" + self.address, facility="daemon")
        sink = openSink(config)
        self.addCleanup(sink.close)
        sink.write(b'{"a":1}\n')
        [message] = self.received()
        self.assertTrue(message.startswith(b"<30>"), message)
        self.assertTrue(message.endswith(b' gateway: {"a":1}'), message)

    def test_daemonGone(self) -> None:
        """
        A daemon that went away drops the lines (counted); once it is back,
        the next batch connects again.
        """
        clock = Clock()
        sink = SyslogSink(self.address)
        config = AccessLogConfig(path="syslog:" + self.address, fields=("status",))
        accessLog = AccessLog(config, clock, lambda c: sink)
        accessLog.open()
        self.addCleanup(accessLog.close)
        self.server.close()
        os.remove(self.address)
        accessLog.log(exchangeFor())
        accessLog.flush()
        self.assertEqual((accessLog.written, accessLog.dropped), (0, 1))
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.server.bind(self.address)
        self.server.setblocking(False)
        accessLog.log(exchangeFor())
        accessLog.flush()
        self.assertEqual((accessLog.written, accessLog.dropped), (1, 1))
        self.assertEqual(len(self.received()), 1)


class FakeSignals:
    """
    Stands in for the L{signal} module.
    """

    SIG_DFL = signal.SIG_DFL

    def __init__(self, previous: Any = signal.SIG_DFL) -> None:
        self.handlers = {signal.SIGUSR1: previous}

    def signal(self, signum: int, handler: Any) -> Any:
        previous = self.handlers.get(signum)
        self.handlers[signum] = handler
        return previous


class ThreadlessReactor:
    """
    Runs what C{callFromThread} is given when told to.
    """

    def __init__(self) -> None:
        self.calls: List[Any] = []

    def callFromThread(self, f: Any, *args: Any) -> None:
        self.calls.append((f, args))

    def runCalls(self) -> None:
        calls, self.calls = self.calls, []
        for f, args in calls:
            f(*args)


class ReopenOnSignalTests(SynchronousTestCase):
    """
    C{SIGUSR1} reopens, in the reactor's thread; the handler installed
    before keeps working.
    """

    def test_reopen(self) -> None:
        """
        The signal calls every target once the reactor runs the call; a
        target that fails does not keep the others from running.
        """
        reactor = ThreadlessReactor()
        signals = FakeSignals()
        called: List[str] = []

        def broken() -> None:
            raise RuntimeError("no")

        service = ReopenOnSignal(
            reactor, [broken, lambda: called.append("a")], signals=signals, signum=signal.SIGUSR1
        )
        service.startService()
        signals.handlers[signal.SIGUSR1](signal.SIGUSR1, None)
        self.assertEqual(called, [])
        reactor.runCalls()
        self.assertEqual(called, ["a"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        service.stopService()
        self.assertEqual(signals.handlers[signal.SIGUSR1], signal.SIG_DFL)

    def test_chained(self) -> None:
        """
        The handler found (twistd's, rotating its own log file) is called
        too, and put back when the service stops.
        """
        previous: List[int] = []

        def twistdHandler(signum: int, frame: Any) -> None:
            previous.append(signum)

        signals = FakeSignals(twistdHandler)
        service = ReopenOnSignal(ThreadlessReactor(), [], signals=signals)
        service.startService()
        signals.handlers[signal.SIGUSR1](signal.SIGUSR1, None)
        self.assertEqual(previous, [signal.SIGUSR1])
        service.stopService()
        self.assertIs(signals.handlers[signal.SIGUSR1], twistdHandler)


class WorkersTests(SynchronousTestCase):
    """
    With workers, the gateway passes the reopening on over the control
    channels.
    """

    def test_poolTellsEveryWorker(self) -> None:
        """
        L{WorkerPool.reopenLogs} sends C{{"reopenLogs": true}} on every
        worker's channel.
        """
        pool = WorkerPool(Clock(), 2, ["worker"])
        sent: List[bytes] = []
        for index in range(2):
            channel = ControlChannel(lambda m: None, lambda: None)
            transport = StringTransport()
            channel.makeConnection(transport)
            pool._channels[index] = channel
            sent.append(transport)  # type: ignore[arg-type]
        pool.reopenLogs()
        for transport in sent:
            self.assertEqual(transport.value(), b'{"reopenLogs":true}\n')  # type: ignore[attr-defined]

    def test_workerReopens(self) -> None:
        """
        A worker told to reopen calls its C{onReopen}.
        """
        reopened: List[bool] = []
        link = ParentLink(
            Clock(),
            -1,
            RelayedStore(),
            SnapshotManager(FilterRegistry({}), Clock()),
            stats=dict,
            onReopen=lambda: reopened.append(True),
        )
        link._received({"reopenLogs": True})
        link._received({"health": {}})
        self.assertEqual(reopened, [True])


class StatsTests(SynchronousTestCase):
    """
    The access log's counts in C{/api/v1/stats} and C{/metrics}.
    """

    def test_snapshot(self) -> None:
        """
        The stats show the lines written and dropped (zeros without an
        access log), summed over workers.
        """
        stats = Stats(Clock())
        self.assertEqual(stats.snapshot()["accessLog"], {"written": 0, "dropped": 0})
        stats.accessLog = attrs.make_class("Counts", ["written", "dropped"])(7, 2)
        snapshot = stats.snapshot()
        self.assertEqual(snapshot["accessLog"], {"written": 7, "dropped": 2})
        merged = mergeSnapshots([snapshot, snapshot])
        self.assertEqual(merged["accessLog"], {"written": 14, "dropped": 4})

    def test_metrics(self) -> None:
        """
        C{/metrics} exports them as counters.
        """
        clock = Clock()
        stats = Stats(clock)
        stats.accessLog = attrs.make_class("Counts", ["written", "dropped"])(7, 2)
        manager = SnapshotManager(FilterRegistry({}), clock)
        names = {}
        for family in GatewayCollector(stats, manager, None, clock).collect():
            for sample in family.samples:
                names[sample.name] = sample.value
        self.assertEqual(names["gateway_access_log_lines_total"], 7)
        self.assertEqual(names["gateway_access_log_dropped_total"], 2)


# -- the proxy writes the lines -------------------------------------------------


class OneAnswer:
    """
    An upstream response whose whole body came with its head.
    """

    code = 200
    phrase = b"OK"

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.length = len(body)
        self.headers = Headers({b"content-length": [b"%d" % (len(body),)]})

    def deliverBody(self, protocol: Any) -> None:  # pragma: no cover
        raise AssertionError("the body came with the head")


class Upstream(ScriptedUpstreamClient):
    """
    Answers each request with the next Deferred of C{answers}.
    """

    def __init__(self) -> None:
        self.answers: List[Deferred] = []

    def respond(self, backend, method, uri, headers, bodyProducer, timeout):
        if self.answers:
            return self.answers.pop(0)
        return succeed(OneAnswer(b'{"ok":true}'))


PEER = IPv4Address("TCP", "192.0.2.7", 40000)


class ProxyTests(SynchronousTestCase):
    """
    The proxy writes one line per request once it is over, from what the
    pipeline knows.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOON)
        self.sink = MemorySink()
        manager = SnapshotManager(
            FilterRegistry.fromPlugins(), self.clock, globalFilters=["request-id"]
        )
        manager.apply(
            StoreState(
                1,
                {
                    "servers": {"s1": {"name": "s1", "addr": "127.0.0.1:1"}},
                    "clusters": {"c1": {"name": "c1", "servers": ["s1"]}},
                    "apis": {
                        "plain": {
                            "name": "plain",
                            "urlPattern": "/plain",
                            "nodes": [{"cluster": "c1"}],
                        },
                        "cached": {
                            "name": "cached",
                            "urlPattern": "/cached",
                            "nodes": [{"cluster": "c1"}],
                            "cache": {"ttl": 60},
                        },
                    },
                    "routings": {},
                },
            )
        )
        self.manager = manager
        self.upstream = Upstream()
        config = AccessLogConfig(fields=FIELDS)
        self.accessLog = AccessLog(config, self.clock, lambda c: self.sink)
        self.accessLog.open()
        self.resource = GatewayResource(
            manager,
            self.upstream,
            self.clock,
            accessLog=self.accessLog,
            cache=ResponseCache(self.clock, 1 << 20),
        )
        self.site = GatewaySite(self.resource, reactor=self.clock)

    def connect(self) -> Any:
        channel = self.site.buildProtocol(PEER)
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 8080), peerAddress=PEER
        )
        channel.makeConnection(transport)
        self.addCleanup(channel.connectionLost, Failure(ConnectionDone()))
        return channel, transport

    def lines(self) -> List[dict]:
        self.accessLog.flush()
        return [json.loads(line) for line in self.sink.lines()]

    def test_proxied(self) -> None:
        """
        A proxied request's line: its API, server, status and the body's
        bytes sent, the request id the filter gave, the headers.
        """
        channel, transport = self.connect()
        channel.dataReceived(
            b"GET /plain?x=1 HTTP/1.1\r\nHost: gw.example\r\nUser-Agent: t/1\r\n"
            b"Referer: http://r/\r\n\r\n"
        )
        self.assertIn(b'{"ok":true}', transport.value())
        [line] = self.lines()
        self.assertEqual(line["client"], "192.0.2.7")
        self.assertEqual(line["path"], "/plain")
        self.assertEqual(
            (line["method"], line["uri"], line["protocol"]), ("GET", "/plain?x=1", "HTTP/1.1")
        )
        self.assertEqual(
            (line["host"], line["userAgent"], line["referer"]), ("gw.example", "t/1", "http://r/")
        )
        self.assertEqual((line["status"], line["bytes"]), (200, 11))
        self.assertEqual((line["api"], line["cluster"], line["server"]), ("plain", "c1", "s1"))
        self.assertEqual(line["serverAddr"], "127.0.0.1:1")
        self.assertEqual(len(line["requestId"]), 32)
        self.assertIn(line["requestId"].encode(), transport.value())
        self.assertEqual((line["upstreamMs"], line["durationMs"], line["retries"]), (0.0, 0.0, 0))
        self.assertEqual((line["outcome"], line["error"]), (None, None))
        self.assertIsNone(line["cache"])

    def test_cache(self) -> None:
        """
        With a response cache, the line says what it did: the first
        request a miss (forwarded), the second a hit (no upstream call).
        """
        channel, transport = self.connect()
        for _ in range(2):
            channel.dataReceived(b"GET /cached HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(transport.value().count(b'{"ok":true}'), 2)
        first, second = self.lines()
        self.assertEqual((first["api"], first["cache"], first["server"]), ("cached", "miss", "s1"))
        self.assertEqual((second["cache"], second["server"], second["status"]), ("hit", None, 200))

    def test_refusedByTheEngine(self) -> None:
        """
        A request the engine refuses before the pipeline sees it (here a
        malformed header) has its line: the status, C{refused} and why,
        the client, the bytes of the answer; nothing of its head.
        """
        self.site.accessLog = self.accessLog
        channel, transport = self.connect()
        channel.dataReceived(b"GET /plain HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n")
        self.assertIn(b"HTTP/1.1 400 Bad Request", transport.value())
        [line] = self.lines()
        self.assertEqual(
            (line["status"], line["outcome"], line["client"]), (400, "refused", "192.0.2.7")
        )
        self.assertIsInstance(line["error"], str)
        self.assertIn(line["error"].encode(), transport.value())
        self.assertEqual((line["method"], line["uri"], line["api"]), ("-", "-", None))
        self.assertEqual(line["bytes"], len(transport.value().split(b"\r\n\r\n", 1)[1]))

    def test_timedWhenOver(self) -> None:
        """
        The line is written when the request is over: its duration runs
        until then, not until the answer's head.
        """
        channel, transport = self.connect()
        answer: Deferred = Deferred()
        self.upstream.answers.append(answer)
        channel.dataReceived(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
        self.clock.advance(0.25)
        self.assertEqual(self.lines(), [])
        answer.callback(OneAnswer(b"late"))
        [line] = self.lines()
        self.assertEqual((line["durationMs"], line["upstreamMs"], line["bytes"]), (250.0, 250.0, 4))

    def test_gatewayAnswers(self) -> None:
        """
        Answers the gateway makes are logged too: a 404 (no API), and an
        upstream failure with its outcome and error.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
        failed: Deferred = Deferred()
        self.upstream.answers.append(failed)
        channel.dataReceived(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
        failed.errback(UpstreamTimeout("no answer in 5 s"))
        first, second = self.lines()
        self.assertEqual((first["status"], first["api"], first["server"]), (404, None, None))
        self.assertGreater(first["bytes"], 0)
        self.assertEqual((second["status"], second["outcome"]), (504, "timeout"))
        self.assertIn("no answer in 5 s", second["error"])

    def test_clientGone(self) -> None:
        """
        A client that leaves before its answer is logged once, 499, with
        nothing sent.
        """
        channel, transport = self.connect()
        self.upstream.answers.append(Deferred())
        channel.dataReceived(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
        channel.connectionLost(Failure(ConnectionDone()))
        [line] = self.lines()
        self.assertEqual((line["status"], line["bytes"]), (499, 0))

    def test_clientGoneCounted(self) -> None:
        """
        A client that leaves before its answer's head is counted in the
        stats too, once, as an error C{aborted} of its API and server, with
        the time it waited as its latency (a backend so slow that every
        client gives up showed no request at all); one that leaves after
        its answer is counted as answered only.
        """
        stats = Stats(self.clock)
        stats.follow(self.manager)
        resource = GatewayResource(
            self.manager, self.upstream, self.clock, stats=stats, accessLog=self.accessLog
        )
        self.site = GatewaySite(resource, reactor=self.clock)
        channel, transport = self.connect()
        self.upstream.answers.append(Deferred())
        channel.dataReceived(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
        self.clock.advance(2.5)
        channel.connectionLost(Failure(ConnectionDone()))
        channel, transport = self.connect()
        channel.dataReceived(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(b'{"ok":true}', transport.value())
        channel.connectionLost(Failure(ConnectionDone()))
        api = stats.apis["plain"]
        self.assertEqual((api.requests, api.errors["aborted"], api.errors["4xx"]), (2, 1, 0))
        self.assertAlmostEqual(api.latencySum, 2.5)
        self.assertEqual(stats.servers["s1"].errors["aborted"], 1)
        self.assertEqual(stats.totals.requests, 2)
        self.assertEqual([line["status"] for line in self.lines()], [499, 200])

    def test_off(self) -> None:
        """
        Without an access log the proxy serves as before, writing nothing.
        """
        self.resource._accessLog = None
        channel, transport = self.connect()
        channel.dataReceived(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(b'{"ok":true}', transport.value())
        self.assertEqual(self.lines(), [])
