"""
Access log lines: L{makeRenderer} makes, for a format and its fields, the
function that renders the line of a request that is over, and
L{jsonEscape} and L{clfEscape} escape what a client sent.

The formats:

  - C{json} (the default): one JSON object per line, its fields in the
    configured order.  Strings are exact JSON: quotes, backslashes and
    control characters (C0, DEL, C1, U+2028 and U+2029) escaped, valid
    UTF-8 kept as it is, and bytes that are not UTF-8 written as the text
    C{\\xHH} (so the line is always valid UTF-8 and valid JSON).  An absent
    value is C{null}.
  - C{combined}: the NCSA combined log format, as nginx writes it::

        127.0.0.1 - - [01/May/2026:12:00:00 +0000] "GET /plain HTTP/1.1" 200 96 "-" "curl/8.0"

    (the time of the line in UTC; bytes outside printable ASCII, C{"} and
    C{\\} written as C{\\xHH}), then each configured field as
    C{ name=value} (strings quoted, absent values C{-}).

The fields (L{gateway.model.accesslog.FIELDS}): C{time} (when the request
was over, ISO 8601 UTC to the millisecond), C{client} (the client's
address as the gateway trusts it), C{method}, C{uri} (the request target
as received, its query string included, but for an API key the C{auth}
filter found there: C{exchange.shownURI}), C{path} (the target without its
query string: for a log that must not hold what clients put there),
C{protocol}, C{host} (the C{Host} header), C{status} (sent to
the client; 499 when the client left before its answer's head), C{bytes}
(of the response body sent), C{durationMs} (from the request's arrival to
its end), C{upstreamMs} (from sending upstream to the upstream's answer's
head), C{api}, C{cluster}, C{server}, C{serverAddr} (the last one tried),
C{routing} (the split routing that chose the cluster), C{retries},
C{outcome} (how a request the upstream did not answer ended:
C{reject:rate-limit}, C{timeout}, ...), C{error} (what went wrong
upstream), C{requestId}, C{userAgent}, C{referer}, C{cache} (what an API's
response cache did: C{hit}, C{collapsed}, C{stale}, C{revalidated},
C{miss}, C{bypass}; absent without a cache).  Durations are
milliseconds to the microsecond.
"""

from __future__ import annotations

import json
import platform
import re
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from gateway.http.headers import headerKey, rawHeadersOf
from gateway.model.accesslog import FIELDS, AccessLogConfig

__all__ = [
    "clfEscape",
    "jsonEscape",
    "makeRenderer",
]

#: Bytes that a value may hold to be written as it is, in both formats:
#: printable ASCII but C{"} and C{\\}.
_UNSAFE = re.compile(rb"[^\x20\x21\x23-\x5b\x5d-\x7e]")

#: What JSON allows raw but a log is better without: DEL, the C1 controls,
#: and the line and paragraph separators (which some readers take for line
#: ends).
_JSON_EXTRA = re.compile("[\x7f-\x9f\u2028\u2029]")


def _uEscape(match: Any) -> str:
    return f"\\u{ord(match.group()):04x}"


def _safe(value: bytes) -> bool:
    """
    @return: whether C{value} is printable ASCII without C{"} nor C{\\}
        (what L{_UNSAFE} finds nothing in), checked the way PyPy's JIT
        makes fastest (a regular expression search costs ten times as much
        there, for the short values this is used on).
    """
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return False
    return text.isprintable() and '"' not in text and "\\" not in text


def jsonEscape(value: bytes) -> bytes:
    """
    @param value: bytes from a request (a header, the target), in any
        encoding.
    @return: the body of a JSON string (no quotes) that reads back as
        C{value} decoded from UTF-8, each byte that is not UTF-8 as the text
        C{\\xHH}; ASCII controls, DEL, C1 controls, U+2028 and U+2029
        escaped.  Always valid UTF-8.
    """
    if _UNSAFE.search(value) is None:
        return value
    text = json.dumps(value.decode("utf-8", "backslashreplace"), ensure_ascii=False)
    return _JSON_EXTRA.sub(_uEscape, text[1:-1]).encode("utf-8")


def _jsonText(value: Optional[str]) -> bytes:
    """
    @return: a string as a JSON literal (quoted), C{null} for L{None}.
    """
    if value is None:
        return b"null"
    return b'"' + jsonEscape(value.encode("utf-8", "surrogatepass")) + b'"'


_CLF_BYTES = [
    bytes([c]) if 0x20 <= c < 0x7F and c not in (0x22, 0x5C) else b"\\x%02X" % (c,)
    for c in range(256)
]


def clfEscape(value: bytes) -> bytes:
    """
    @return: C{value} for a combined log line, as nginx writes it: each
        byte outside printable ASCII, C{"} and C{\\} as C{\\xHH}.
    """
    if _UNSAFE.search(value) is None:
        return value
    table = _CLF_BYTES
    return b"".join([table[c] for c in value])


def _clfText(value: Optional[str]) -> bytes:
    """
    @return: a string for a combined line's field, quoted; C{-} for
        L{None}.
    """
    if value is None:
        return b"-"
    return b'"' + clfEscape(value.encode("utf-8", "surrogatepass")) + b'"'


def _clfBare(value: Optional[str]) -> bytes:
    if value is None:
        return b"-"
    return clfEscape(value.encode("utf-8", "surrogatepass")) or b"-"


def _jsonToken(value: Optional[bytes]) -> bytes:
    """
    @return: bytes as a JSON literal (quoted), C{null} for L{None}.
    """
    if value is None:
        return b"null"
    return b'"' + jsonEscape(value) + b'"'


def _clfToken(value: Optional[bytes]) -> bytes:
    if value is None:
        return b"-"
    return b'"' + clfEscape(value) + b'"'


def _clfBareToken(value: Optional[bytes]) -> bytes:
    if value is None:
        return b"-"
    return clfEscape(value)


#: Names (of APIs, servers, clients...) kept rendered, at most this many.
_CACHE_SIZE = 4096


def _cachedLiteral(
    make: Callable[[Any], bytes],
) -> Tuple[Dict[Any, bytes], Callable[[Any], bytes]]:
    """
    @return: C{(cache, render)}: C{render(value)} renders a value that
        repeats (a name, a method, a host) with C{make} and keeps it in
        C{cache}, which the renderers read first (C{cache.get(value) or
        render(value)}, a dictionary look-up instead of a check for escapes);
        bounded by L{_CACHE_SIZE} (emptied when full: names come from the
        configuration, but client addresses and hosts from the world).
    """
    cache: Dict[Any, bytes] = {None: make(None)}

    def render(value: Any) -> bytes:
        made = make(value)
        if len(cache) >= _CACHE_SIZE:
            cache.clear()
            cache[None] = make(None)
        cache[value] = made
        return made

    return cache, render


def _isoSecond(second: int) -> bytes:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)).encode("ascii")


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _clfSecond(second: int) -> bytes:
    t = time.gmtime(second)
    return b"%02d/%s/%04d:%02d:%02d:%02d +0000" % (
        t.tm_mday,
        _MONTHS[t.tm_mon - 1].encode("ascii"),
        t.tm_year,
        t.tm_hour,
        t.tm_min,
        t.tm_sec,
    )


def _serverAddr(backend: Any) -> Optional[str]:
    if backend is None:
        return None
    config = getattr(backend, "config", None)
    addr = getattr(config, "addr", None)
    if isinstance(addr, str):
        return addr
    return f"{backend.host}:{backend.port}"


_HEADERS = {
    "host": b"host",
    "userAgent": b"user-agent",
    "referer": b"referer",
}


#: What each field is made of: its kind (how it is written) and the
#: expression that computes its value, over C{x} (the exchange),
#: C{request}, C{now} and C{raw} (the request's header dict).
_SOURCES: Dict[str, Tuple[str, str]] = {
    "time": ("time", ""),
    # (name: a str that repeats; token: the same of bytes; bytes: bytes
    # that may not, checked for escapes each time.)
    "client": ("name", "x.clientIP"),
    "method": ("token", "request.method"),
    "uri": ("bytes", "(x.shownURI or request.uri)"),
    "path": ("bytes", "request.path"),
    "protocol": ("token", "request.clientproto"),
    "host": ("token", "(raw.get(_K_host) or _NONE)[0]"),
    "status": ("status", "x.status"),
    "bytes": ("int", "request.sentLength"),
    "durationMs": ("ms", "now - x.startTime"),
    "upstreamMs": ("optms", "x.upstreamLatency"),
    "api": ("name", "(x.api.name if x.api is not None else None)"),
    "cluster": ("name", "(x.cluster.name if x.cluster is not None else None)"),
    "server": ("name", "(x.backend.name if x.backend is not None else None)"),
    "serverAddr": ("name", "_serverAddr(x.backend)"),
    "routing": ("name", "x.routing"),
    "retries": ("int", "x.retries"),
    "outcome": ("name", "x.outcome"),
    "error": ("text", "x.error"),
    "requestId": ("optbytes", "x.requestId"),
    "userAgent": ("token", "(raw.get(_K_userAgent) or _NONE)[0]"),
    "referer": ("token", "(raw.get(_K_referer) or _NONE)[0]"),
    "cache": ("name", "(x.cache.result if x.cache is not None else None)"),
}

assert set(_SOURCES) == set(FIELDS), "every configurable field has a source"


def _headerDict(headers: Any) -> Dict[bytes, List[bytes]]:
    """
    The headers a line may read, as L{rawHeadersOf} would give them, for
    a L{Headers} it cannot give the dict of.
    """
    out: Dict[bytes, List[bytes]] = {}
    for name in _HEADERS.values():
        values = headers.getRawHeaders(name)
        if values:
            out[headerKey(name)] = list(values)
    return out


class _Builder:
    """
    The source of a renderer: the statements computing each value, and the
    parts of the line, in order: C{("lit", bytes)}, C{("bytes", expr)},
    C{("int", expr)}, C{("int3", expr)} (zero-padded to three digits),
    C{("float3", expr)} (three decimals).

    The parts become one C{bytes %} format on CPython, where it is the
    cheapest way to make a line, and one chain of concatenations on PyPy,
    whose JIT makes that one string of the final size at once (a C{%}
    format costs ten times as much there).

    @ivar concat: whether to concatenate (PyPy) rather than format.
    """

    def __init__(self, concat: bool) -> None:
        self.concat = concat
        self.statements: List[str] = []
        self.parts: List[Tuple[str, Any]] = []
        self.needsTime = False
        self.needsRaw = False

    def lit(self, data: bytes) -> None:
        if self.parts and self.parts[-1][0] == "lit":
            self.parts[-1] = ("lit", self.parts[-1][1] + data)
        else:
            self.parts.append(("lit", data))

    def add(self, kind: str, expression: str) -> None:
        self.parts.append((kind, expression))

    def clean(self, var: str) -> str:
        """
        @return: the expression that says whether bytes C{var} need no
            escaping (see L{_safe}).
        """
        if self.concat:
            return f"_safe({var})"
        return f"_unsafe({var}) is None"

    def value(self, name: str) -> str:
        """
        @return: the variable holding field C{name}'s value, computed once.
        """
        kind, expression = _SOURCES[name]
        var = "v_" + name
        if kind == "time":
            self.needsTime = True
            return var
        if any(s.startswith(var + " =") for s in self.statements):
            return var
        if "raw" in expression:
            self.needsRaw = True
        if kind == "status":
            self.statements.append(f"{var} = x.status")
            self.statements.append(f"if {var} is None: {var} = 499 if x.gone else request.code")
        else:
            self.statements.append(f"{var} = {expression}")
        return var

    def time(self) -> None:
        """
        The time: C{2026-05-01T12:00:00.250}.
        """
        self.needsTime = True
        self.add("bytes", "tsec")
        self.lit(b".")
        self.add("int3", "tms")

    def millis(self, var: str, absent: Optional[bytes]) -> None:
        """
        Seconds C{var} as milliseconds to the microsecond (C{1.234}; 0 when
        negative), or C{absent} when C{var} is L{None} (if C{absent} is
        given).  Formatted from integers when concatenating (formatting a
        float costs four times as much on PyPy), from the float otherwise.
        """
        if self.concat:
            us = var + "_us"
            self.statements.append(
                f"{us} = 0 if {var} is None or {var} < 0.0 else int({var} * 1e6 + 0.5)"
            )
            text = f'str({us} // 1000).encode() + b"." + str(1000 + {us} % 1000).encode()[1:]'
            if absent is None:
                self.add("int", f"{us} // 1000")
                self.lit(b".")
                self.add("int3", f"{us} % 1000")
                return
        else:
            positive = f"(0.0 if {var} < 0.0 else {var} * 1000.0)"
            if absent is None:
                self.add("float3", positive)
                return
            text = f'b"%.3f" % ({positive},)'
        self.add("bytes", f"({absent!r} if {var} is None else {text})")

    def source(self) -> str:
        """
        @return: the expression of the whole line.
        """
        if self.concat:
            pieces = []
            for kind, what in self.parts:
                if kind == "lit":
                    pieces.append(repr(what))
                elif kind == "bytes":
                    pieces.append(f"({what})")
                elif kind == "int":
                    pieces.append(f"str({what}).encode()")
                elif kind == "int3":
                    pieces.append(f"str(1000 + {what}).encode()[1:]")
                else:  # pragma: no cover
                    raise AssertionError(kind)
            return " + ".join(pieces)
        fmt: List[bytes] = []
        args: List[str] = []
        for kind, what in self.parts:
            if kind == "lit":
                fmt.append(what.replace(b"%", b"%%"))
                continue
            fmt.append({"bytes": b"%s", "int": b"%d", "int3": b"%03d", "float3": b"%.3f"}[kind])
            args.append(what)
        return f"{b''.join(fmt)!r} % (" + ", ".join(args) + ",)"


def _field(b: _Builder, name: str, label: bytes, fmt: str, absent: bytes) -> None:
    """
    Write field C{name}: C{label}, then its value as format C{fmt} writes
    it (C{"json"} or C{"clf"}: the prefix of the escaping functions and
    caches of the renderer's namespace), C{absent} for a missing value.
    """
    kind = _SOURCES[name][0]
    var = b.value(name)
    b.lit(label)
    if kind == "time":
        b.lit(b'"')
        b.time()
        b.lit(b'Z"')
    elif kind in ("int", "status"):
        b.add("int", var)
    elif kind == "ms":
        b.millis(var, None)
    elif kind == "optms":
        b.millis(var, absent)
    elif kind == "bytes":
        b.lit(b'"')
        b.add("bytes", f"({var} if {b.clean(var)} else _{fmt}Escape({var}))")
        b.lit(b'"')
    elif kind == "optbytes":
        b.add(
            "bytes",
            f"({absent!r} if {var} is None else b'\"' + ({var} if {b.clean(var)} "
            f"else _{fmt}Escape({var})) + b'\"')",
        )
    elif kind == "name":
        b.add("bytes", f"(_{fmt}Names.get({var}) or _{fmt}Name({var}))")
    elif kind == "token":
        b.add("bytes", f"(_{fmt}Tokens.get({var}) or _{fmt}Token({var}))")
    elif kind == "text":
        b.add("bytes", f"_{fmt}Text({var})")
    else:  # pragma: no cover
        raise AssertionError(kind)


def _jsonField(b: _Builder, name: str, first: bool) -> None:
    label = (b"" if first else b",") + b'"' + name.encode("ascii") + b'":'
    _field(b, name, label, "json", b"null")


def _clfField(b: _Builder, name: str) -> None:
    _field(b, name, b" " + name.encode("ascii") + b"=", "clf", b"-")


def _clfPrefix(b: _Builder) -> None:
    """
    The combined log format: C{client - - [time] "method uri protocol"
    status bytes "referer" "user agent"}.
    """
    client = b.value("client")
    b.add("bytes", f"(_clfBareNames.get({client}) or _clfBareName({client}))")
    b.lit(b" - - [")
    b.add("bytes", "tclf")
    b.lit(b'] "')
    for i, name in enumerate(("method", "uri", "protocol")):
        var = b.value(name)
        if i:
            b.lit(b" ")
        if name == "uri":
            b.add("bytes", f"({var} if {b.clean(var)} else _clfEscape({var}))")
        else:
            b.add("bytes", f"(_clfBareTokens.get({var}) or _clfBareToken({var}))")
    b.lit(b'" ')
    b.add("int", b.value("status"))
    b.lit(b" ")
    b.add("int", b.value("bytes"))
    for name in ("referer", "userAgent"):
        var = b.value(name)
        b.lit(b' "')
        b.add("bytes", f"(_clfBareTokens.get({var}) or _clfBareToken({var}))")
        b.lit(b'"')


def makeRenderer(
    config: AccessLogConfig, concat: Optional[bool] = None
) -> Callable[[Any, float], bytes]:
    """
    Make the function that renders a line of C{config}'s format and
    fields: C{render(exchange, now)} returns the line (ending with a
    newline) of a request that is over at C{now} (seconds since the epoch).

    The function is compiled for the format, as one expression (see
    L{_Builder}) with the fields' keys in it: each value computed once and
    inserted as it is when it needs no escaping (one regular expression
    search says so), names (APIs, servers, clients) rendered once and
    kept, the time of day formatted once a second.

    @param concat: make the line by concatenation rather than by a
        C{bytes %} format; by default on PyPy only (see L{_Builder}).
    @return: the function; its C{source} attribute holds its source.
    """
    if concat is None:
        concat = platform.python_implementation() == "PyPy"
    b = _Builder(concat)
    clf = config.format == "combined"
    if clf:
        _clfPrefix(b)
        for name in config.fieldNames:
            _clfField(b, name)
        b.lit(b"\n")
    else:
        b.lit(b"{")
        for i, name in enumerate(config.fieldNames):
            _jsonField(b, name, i == 0)
        b.lit(b"}\n")
    jsonNames, jsonName = _cachedLiteral(_jsonText)
    clfNames, clfName = _cachedLiteral(_clfText)
    clfBareNames, clfBareName = _cachedLiteral(_clfBare)
    jsonTokens, jsonToken = _cachedLiteral(_jsonToken)
    clfTokens, clfToken = _cachedLiteral(_clfToken)
    clfBareTokens, clfBareToken = _cachedLiteral(_clfBareToken)
    namespace: Dict[str, Any] = {
        "_jsonTokens": jsonTokens,
        "_jsonToken": jsonToken,
        "_clfTokens": clfTokens,
        "_clfToken": clfToken,
        "_clfBareTokens": clfBareTokens,
        "_clfBareToken": clfBareToken,
        "_NONE": (None,),
        "_unsafe": _UNSAFE.search,
        "_safe": _safe,
        "_jsonEscape": jsonEscape,
        "_clfEscape": clfEscape,
        "_jsonText": _jsonText,
        "_clfText": _clfText,
        "_jsonNames": jsonNames,
        "_jsonName": jsonName,
        "_clfNames": clfNames,
        "_clfName": clfName,
        "_clfBareNames": clfBareNames,
        "_clfBareName": clfBareName,
        "_serverAddr": _serverAddr,
        "_rawHeadersOf": rawHeadersOf,
        "_headerDict": _headerDict,
        "_isoSecond": _isoSecond,
        "_clfSecond": _clfSecond,
        # The second last rendered, and its text in each format.
        "_second": [-1, b"", b""],
    }
    for field, header in _HEADERS.items():
        namespace["_K_" + field] = headerKey(header)
    lines = ["def render(x, now):", "    request = x.request"]
    if b.needsTime or clf:
        lines += [
            "    second = int(now)",
            "    cached = _second",
            "    if second != cached[0]:",
            "        cached[1] = _isoSecond(second)",
            "        cached[2] = _clfSecond(second)",
            "        cached[0] = second",
        ]
    if b.needsTime:
        lines += ["    tsec = cached[1]", "    tms = int((now - second) * 1000.0)"]
    if clf:
        lines.append("    tclf = cached[2]")
    if b.needsRaw:
        lines += [
            "    headers = request.requestHeaders",
            "    raw = _rawHeadersOf(headers)",
            "    if raw is None:",
            "        raw = _headerDict(headers)",
        ]
    lines += ["    " + s for s in b.statements]
    lines.append("    return " + b.source())
    source = "\n".join(lines) + "\n"
    exec(compile(source, f"<access log: {config.format}>", "exec"), namespace)
    render: Callable[[Any, float], bytes] = namespace["render"]
    render.source = source  # type: ignore[attr-defined]
    return render
