"""
The access log: one line per request, rendered once when the request is
over and written in batches, at about the cost of nginx's.

L{AccessLog} is told of every request that is over (the proxy calls
L{AccessLog.log} with its L{gateway.pipeline.exchange.Exchange}).  It
renders the line at once, with a function made for the configured format
and fields when the log is made (L{makeRenderer}: one C{bytes %} format,
the values of most requests inserted as they are, after one check that
they need no escaping), appends it to a buffer, and writes the buffer to
its output (an L{ISink}) when it holds C{bufferSize} bytes or when its
oldest line has waited C{flushInterval} seconds, and when the log closes.

The output never holds a request up nor fails it:

  - a file is opened with C{O_APPEND} and written whole batches at a time
    (one C{write(2)} of whole lines: several workers append to one file
    without ever mixing their lines); a standard output that is a pipe or a
    terminal is written without blocking (a description of its own, opened
    with C{O_NONBLOCK}), in pieces of whole lines of at most C{PIPE_BUF}
    bytes, which the kernel keeps whole; syslog gets one datagram per line,
    without blocking;
  - lines an output cannot take now (a full pipe) wait in the buffer and
    are written later, up to C{maxPending} bytes; past that, new lines are
    dropped, and so are lines the output refused (a full disk, C{ENOSPC}):
    L{AccessLog.dropped} counts them (C{/api/v1/stats}, C{/metrics}), and
    the gateway says so once on its own log (then once a minute while it
    lasts, and when it is over).

The line formats:

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
as received), C{protocol}, C{host} (the C{Host} header), C{status} (sent to
the client; 499 when the client left before its answer's head), C{bytes}
(of the response body sent), C{durationMs} (from the request's arrival to
its end), C{upstreamMs} (from sending upstream to the upstream's answer's
head), C{api}, C{cluster}, C{server}, C{serverAddr} (the last one tried),
C{routing} (the split routing that chose the cluster), C{retries},
C{outcome} (how a request the upstream did not answer ended:
C{reject:rate-limit}, C{timeout}, ...), C{error} (what went wrong
upstream), C{requestId}, C{userAgent}, C{referer}.
"""

from __future__ import annotations

import errno
import json
import os
import platform
import re
import select
import socket
import stat
import time
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from twisted.logger import Logger
from zope.interface import Attribute, Interface, implementer

from gateway.http.headers import headerKey, rawHeadersOf
from gateway.model.accesslog import FACILITIES, FIELDS, AccessLogConfig, syslogAddress

log = Logger()

__all__ = [
    "AccessLog",
    "FileSink",
    "IAccessLog",
    "ISink",
    "StandardOutputSink",
    "SyslogSink",
    "jsonEscape",
    "clfEscape",
    "makeRenderer",
    "openSink",
]


class IAccessLog(Interface):
    """
    Writes a line for every request that is over.
    """

    written = Attribute("lines written to the output so far")
    dropped = Attribute("lines dropped so far: the output refused them or could not keep up")

    def log(exchange: Any) -> None:
        """
        Write the line of a request that is over (a
        L{gateway.pipeline.exchange.Exchange}); never raises.
        """

    def flush() -> None:
        """
        Write the lines buffered now.
        """

    def reopen() -> None:
        """
        Open the output again (a file renamed by logrotate).
        """


class ISink(Interface):
    """
    Where access log lines go.
    """

    regular = Attribute("whether the output is a regular file (a short write then means failure)")
    atomic = Attribute(
        "the most bytes one write keeps whole among other processes' writes "
        "(PIPE_BUF for a pipe), or None for any number (a file opened O_APPEND)"
    )
    perLine = Attribute("whether each line must be written alone (a syslog datagram)")

    def write(data: bytes) -> int:
        """
        Write bytes without blocking.

        @return: how many were written.
        @raise BlockingIOError: when the output cannot take any now.
        @raise OSError: when it failed.
        """

    def reopen() -> bool:
        """
        Open the output again.

        @return: whether there was something to open again (not for the
            standard output).
        @raise OSError: when it cannot be opened; the old one is kept.
        """

    def close() -> None:
        """
        Close the output.
        """


# -- rendering ----------------------------------------------------------------

#: Bytes that a value may hold to be written as it is, in both formats:
#: printable ASCII but C{"} and C{\\}.
_UNSAFE = re.compile(rb"[^\x20\x21\x23-\x5b\x5d-\x7e]")

#: What JSON allows raw but a log is better without: DEL, the C1 controls,
#: and the line and paragraph separators (which some readers take for line
#: ends).
_JSON_EXTRA = re.compile("[\x7f-\x9f\u2028\u2029]")


def _uEscape(match: Any) -> str:
    return f"\\u{ord(match.group()):04x}"


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


#: Names (of APIs, servers, clients...) kept rendered, at most this many.
_CACHE_SIZE = 4096


def _cachedLiteral(
    make: Callable[[Optional[str]], bytes],
) -> Tuple[Dict[Optional[str], bytes], Callable[[Optional[str]], bytes]]:
    """
    @return: C{(cache, render)}: C{render(name)} renders a name with
        C{make} and keeps it in C{cache}, which the renderers read first
        (C{cache.get(name) or render(name)}); bounded by L{_CACHE_SIZE}
        (emptied when full: names come from the configuration, but client
        addresses from the world).
    """
    cache: Dict[Optional[str], bytes] = {None: make(None)}

    def render(value: Optional[str]) -> bytes:
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
    "client": ("name", "x.clientIP"),
    "method": ("bytes", "request.method"),
    "uri": ("bytes", "request.uri"),
    "protocol": ("bytes", "request.clientproto"),
    "host": ("optbytes", "(raw.get(_K_host) or _NONE)[0]"),
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
    "userAgent": ("optbytes", "(raw.get(_K_userAgent) or _NONE)[0]"),
    "referer": ("optbytes", "(raw.get(_K_referer) or _NONE)[0]"),
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
    The source of a renderer: the statements computing each value, the
    pieces of the format and the arguments inserted in them.
    """

    def __init__(self, intMillis: bool) -> None:
        self.intMillis = intMillis
        self.statements: List[str] = []
        self.format: List[bytes] = []
        self.args: List[str] = []
        self.needsTime = False
        self.needsRaw = False

    def value(self, name: str) -> str:
        kind, expression = _SOURCES[name]
        if kind == "time":
            self.needsTime = True
            return ""
        if "raw" in expression:
            self.needsRaw = True
        var = "v_" + name
        if kind == "status":
            self.statements.append(f"{var} = x.status")
            self.statements.append(f"if {var} is None: {var} = 499 if x.gone else request.code")
        else:
            self.statements.append(f"{var} = {expression}")
        return var

    def millis(self, key: bytes, var: str, absent: Optional[bytes]) -> None:
        """
        Write seconds C{var} as milliseconds to the microsecond (C{1.234}),
        or C{absent} when it is L{None} (when C{absent} is not).  Formatted
        from integers on PyPy, where formatting a float costs four times as
        much; from the float on CPython, where it is the cheaper.
        """
        if self.intMillis:
            us = var + "_us"
            self.statements.append(
                f"{us} = 0 if {var} is None or {var} < 0.0 else int({var} * 1e6 + 0.5)"
            )
            text = f'b"%d.%03d" % ({us} // 1000, {us} % 1000)'
        else:
            text = f'b"%.3f" % ((0.0 if {var} < 0.0 else {var} * 1000.0),)'
        if absent is None:
            self.format.append(key + b"%s")
            self.args.append(text)
        else:
            self.format.append(key + b"%s")
            self.args.append(f"({absent!r} if {var} is None else {text})")


def _jsonField(b: _Builder, name: str, first: bool) -> None:
    kind = _SOURCES[name][0]
    var = b.value(name)
    key = (b"" if first else b",") + b'"' + name.encode("ascii") + b'":'
    if kind == "time":
        b.format.append(key + b'"%s.%03dZ"')
        b.args += ["tsec", "tms"]
    elif kind in ("int", "status"):
        b.format.append(key + b"%d")
        b.args.append(var)
    elif kind == "ms":
        b.millis(key, var, None)
    elif kind == "optms":
        b.millis(key, var, b"null")
    elif kind == "bytes":
        b.format.append(key + b'"%s"')
        b.args.append(f"({var} if _unsafe({var}) is None else _jsonEscape({var}))")
    elif kind == "optbytes":
        b.format.append(key + b"%s")
        b.args.append(
            f'(b"null" if {var} is None else b\'"\' + ({var} if _unsafe({var}) is None '
            f"else _jsonEscape({var})) + b'\"')"
        )
    elif kind == "name":
        b.format.append(key + b"%s")
        b.args.append(f"(_jsonNames.get({var}) or _jsonName({var}))")
    elif kind == "text":
        b.format.append(key + b"%s")
        b.args.append(f"_jsonText({var})")
    else:  # pragma: no cover
        raise AssertionError(kind)


def _clfField(b: _Builder, name: str) -> None:
    kind = _SOURCES[name][0]
    var = b.value(name)
    key = b" " + name.encode("ascii") + b"="
    if kind == "time":
        b.format.append(key + b'"%s.%03dZ"')
        b.args += ["tsec", "tms"]
    elif kind in ("int", "status"):
        b.format.append(key + b"%d")
        b.args.append(var)
    elif kind == "ms":
        b.millis(key, var, None)
    elif kind == "optms":
        b.millis(key, var, b"-")
    elif kind == "bytes":
        b.format.append(key + b'"%s"')
        b.args.append(f"({var} if _unsafe({var}) is None else _clfEscape({var}))")
    elif kind == "optbytes":
        b.format.append(key + b"%s")
        b.args.append(
            f'(b"-" if {var} is None else b\'"\' + ({var} if _unsafe({var}) is None '
            f"else _clfEscape({var})) + b'\"')"
        )
    elif kind == "name":
        b.format.append(key + b"%s")
        b.args.append(f"(_clfNames.get({var}) or _clfName({var}))")
    elif kind == "text":
        b.format.append(key + b"%s")
        b.args.append(f"_clfText({var})")
    else:  # pragma: no cover
        raise AssertionError(kind)


def _clfPrefix(b: _Builder) -> None:
    """
    The combined log format: C{client - - [time] "method uri protocol"
    status bytes "referer" "user agent"}.
    """
    client = b.value("client")
    method = b.value("method")
    uri = b.value("uri")
    protocol = b.value("protocol")
    status = b.value("status")
    sent = b.value("bytes")
    referer = b.value("referer")
    agent = b.value("userAgent")
    b.format.append(b'%s - - [%s] "%s %s %s" %d %d "%s" "%s"')
    b.args.append(f"(_clfBareNames.get({client}) or _clfBareName({client}))")
    b.args.append("tclf")
    for var in (method, uri, protocol):
        b.args.append(f"({var} if _unsafe({var}) is None else _clfEscape({var}))")
    b.args += [status, sent]
    for var in (referer, agent):
        b.args.append(
            f'(b"-" if {var} is None else ({var} if _unsafe({var}) is None else _clfEscape({var})))'
        )


def makeRenderer(
    config: AccessLogConfig, intMillis: Optional[bool] = None
) -> Callable[[Any, float], bytes]:
    """
    Make the function that renders a line of C{config}'s format and
    fields: C{render(exchange, now)} returns the line (ending with a
    newline) of a request that is over at C{now} (seconds since the epoch).

    The function is compiled for the format: one C{bytes %} format with
    the fields' keys in it, each value computed once and inserted as it is
    when it needs no escaping (one regular expression search says so),
    names (APIs, servers, clients) rendered once and kept, the time of day
    formatted once a second.

    @param intMillis: format milliseconds from integers (see
        L{_Builder.millis}); by default on PyPy only.
    """
    if intMillis is None:
        intMillis = platform.python_implementation() == "PyPy"
    b = _Builder(intMillis)
    clf = config.format == "combined"
    if clf:
        _clfPrefix(b)
        for name in config.fieldNames:
            _clfField(b, name)
        b.format.append(b"\n")
    else:
        b.format.append(b"{")
        for i, name in enumerate(config.fieldNames):
            _jsonField(b, name, i == 0)
        b.format.append(b"}\n")
    jsonNames, jsonName = _cachedLiteral(_jsonText)
    clfNames, clfName = _cachedLiteral(_clfText)
    clfBareNames, clfBareName = _cachedLiteral(_clfBare)
    namespace: Dict[str, Any] = {
        "_FORMAT": b"".join(b.format),
        "_NONE": (None,),
        "_unsafe": _UNSAFE.search,
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
    lines.append("    return _FORMAT % (" + ", ".join(b.args) + ",)")
    source = "\n".join(lines) + "\n"
    exec(compile(source, f"<access log: {config.format}>", "exec"), namespace)
    render: Callable[[Any, float], bytes] = namespace["render"]
    render.source = source  # type: ignore[attr-defined]
    return render


# -- outputs ------------------------------------------------------------------


def _isDevNull(st: os.stat_result) -> bool:
    try:
        null = os.stat(os.devnull)
    except OSError:  # pragma: no cover
        return False
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == null.st_rdev


@implementer(ISink)
class FileSink:
    """
    A file, appended to (C{O_APPEND}): every write lands at the end of the
    file whichever process makes it, so workers share one file.  Made if
    missing (mode 0640 less the umask).  A FIFO works too, written without
    blocking in pieces of at most C{PIPE_BUF} bytes.

    @ivar path: the file's path.
    """

    perLine = False
    _FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = -1
        self.regular = True
        self.atomic: Optional[int] = None

    def open(self) -> None:
        """
        Open the file.

        @raise OSError: when it cannot be opened.
        """
        self._fd, self.regular = self._open()
        self.atomic = None if self.regular else select.PIPE_BUF

    def _open(self) -> Tuple[int, bool]:
        fd = os.open(self.path, self._FLAGS, 0o640)
        try:
            regular = stat.S_ISREG(os.fstat(fd).st_mode)
        except OSError:  # pragma: no cover
            os.close(fd)
            raise
        return fd, regular

    def write(self, data: bytes) -> int:
        return os.write(self._fd, data)

    def reopen(self) -> bool:
        fd, regular = self._open()
        old, self._fd = self._fd, fd
        self.regular = regular
        self.atomic = None if regular else select.PIPE_BUF
        if old >= 0:
            os.close(old)
        return True

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __repr__(self) -> str:
        return f"<FileSink {self.path}>"


@implementer(ISink)
class StandardOutputSink:
    """
    The process's standard output (file descriptor 1), written without
    blocking and without changing the descriptor the rest of the process
    writes to (twistd's own log may go there, and must not see
    C{EAGAIN}):

      - a file: written as it is (a regular file does not block; workers
        that inherited it share its offset, and each write lands whole);
      - a pipe, a FIFO or a terminal: opened anew through
        C{/proc/self/fd/1} with C{O_NONBLOCK}, and written in pieces of
        whole lines of at most C{PIPE_BUF} bytes, which the kernel keeps
        whole among the writes of other processes (a line longer than that
        is written alone);
      - a socket (systemd's journal): sent with C{MSG_DONTWAIT}.

    @ivar devNull: whether the standard output is C{/dev/null} (a daemon's):
        every line is then lost.
    """

    perLine = False

    def __init__(self, fd: int = 1) -> None:
        self._stdout = fd
        self._fd = -1
        self._socket: Optional[socket.socket] = None
        self.regular = True
        self.atomic: Optional[int] = None
        self.devNull = False

    def open(self) -> None:
        st = os.fstat(self._stdout)
        self.devNull = _isDevNull(st)
        mode = st.st_mode
        if stat.S_ISREG(mode) or self.devNull:
            self._fd = os.dup(self._stdout)
            return
        self.regular = False
        self.atomic = select.PIPE_BUF
        if stat.S_ISSOCK(mode):
            self._socket = socket.socket(fileno=os.dup(self._stdout))
            return
        try:
            self._fd = os.open(
                f"/proc/self/fd/{self._stdout}",
                os.O_WRONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0),
            )
        except OSError as e:
            # No /proc: the descriptor itself (a full pipe then blocks).
            log.warn(
                "proxy.accessLog: cannot open the standard output without blocking ({error}); "
                "a full pipe will hold the proxy up",
                error=e,
            )
            self._fd = os.dup(self._stdout)

    def write(self, data: bytes) -> int:
        if self._socket is not None:
            return self._socket.send(data, socket.MSG_DONTWAIT)
        return os.write(self._fd, data)

    def reopen(self) -> bool:
        return False

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __repr__(self) -> str:
        return "<StandardOutputSink>"


@implementer(ISink)
class SyslogSink:
    """
    A syslog daemon: one datagram per line (RFC 3164: C{<PRI>Mmm dd
    hh:mm:ss HOST TAG: LINE}, the severity C{info}), on a UNIX datagram
    socket (C{/dev/log}) or over UDP, sent without blocking.  A daemon
    that went away (restarted) is connected to again at the next write.
    """

    regular = False
    atomic = None
    perLine = True

    def __init__(
        self,
        address: Union[str, Tuple[str, int]],
        facility: str = "local7",
        tag: str = "gateway",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.address = address
        self._priority = b"<%d>" % (FACILITIES[facility] * 8 + 6,)
        self._tag = tag.encode("ascii")
        self._host = socket.gethostname().split(".")[0].encode("ascii", "replace") or b"-"
        self._clock = clock
        self._socket: Optional[socket.socket] = None
        self._second = -1
        self._header = b""

    def open(self) -> None:
        address = self.address
        if isinstance(address, str):
            family = socket.AF_UNIX
        else:
            family = socket.getaddrinfo(address[0], address[1], 0, socket.SOCK_DGRAM)[0][0]
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect(address)
        except OSError:
            sock.close()
            raise
        self._socket = sock

    def _headerFor(self, second: int) -> bytes:
        if second != self._second:
            stamp = time.strftime("%b %d %H:%M:%S", time.localtime(second))
            if stamp[4] == "0":
                # RFC 3164: the day of the month padded with a space.
                stamp = stamp[:4] + " " + stamp[5:]
            self._header = (
                self._priority
                + stamp.encode("ascii")
                + b" "
                + self._host
                + b" "
                + self._tag
                + b": "
            )
            self._second = second
        return self._header

    def write(self, data: bytes) -> int:
        sock = self._socket
        if sock is None:
            self.open()
            sock = self._socket
            assert sock is not None
        message = self._headerFor(int(self._clock())) + data.rstrip(b"\n")
        try:
            sock.send(message)
        except BlockingIOError:
            raise
        except OSError:
            # The daemon went away (restarted: ECONNREFUSED, ENOTCONN):
            # connect again next time.
            self.close()
            raise
        return len(data)

    def reopen(self) -> bool:
        self.close()
        self.open()
        return True

    def close(self) -> None:
        sock, self._socket = self._socket, None
        if sock is not None:
            sock.close()

    def __repr__(self) -> str:
        return f"<SyslogSink {self.address!r}>"


def openSink(config: AccessLogConfig) -> Union[FileSink, StandardOutputSink, SyslogSink]:
    """
    Open the output C{config.path} names.

    @raise OSError: when it cannot be opened.
    """
    address = syslogAddress(config.path)
    sink: Union[FileSink, StandardOutputSink, SyslogSink]
    if address is not None:
        sink = SyslogSink(address, config.facility, config.tag)
    elif config.path == "-":
        sink = StandardOutputSink()
    else:
        sink = FileSink(config.path)
    sink.open()
    return sink


# -- the log ------------------------------------------------------------------


def _pieces(lines: List[bytes], atomic: Optional[int], perLine: bool) -> List[bytes]:
    """
    @return: the writes that carry C{lines}: all at once; or one per line;
        or whole lines of at most C{atomic} bytes at a time (a longer line
        alone).
    """
    if perLine:
        return lines
    if atomic is None:
        return [b"".join(lines)]
    pieces: List[bytes] = []
    piece: List[bytes] = []
    size = 0
    for line in lines:
        n = len(line)
        if piece and size + n > atomic:
            pieces.append(b"".join(piece))
            piece = []
            size = 0
        piece.append(line)
        size += n
    if piece:
        pieces.append(b"".join(piece))
    return pieces


@implementer(IAccessLog)
class AccessLog:
    """
    The access log of one proxy process (see the module docstring).

    @ivar written: lines written so far.
    @ivar dropped: lines dropped so far.
    @ivar sink: the L{ISink} once L{open}, else L{None}.
    """

    #: Seconds between two reports of lines being dropped, while they are.
    reportInterval = 60.0

    def __init__(
        self,
        config: AccessLogConfig,
        reactor: Any,
        opener: Callable[[AccessLogConfig], Any] = openSink,
    ) -> None:
        """
        @param config: the L{AccessLogConfig}.
        @param reactor: an L{IReactorTime}: the time of each line, and the
            timer of the batches.
        @param opener: opens the output for a config (L{openSink}).
        """
        self.config = config
        self._reactor = reactor
        self._opener = opener
        self._render = makeRenderer(config)
        self._interval = config.flushInterval
        self._bufferSize = config.bufferSize
        self._maxPending = config.maxPending
        self._lines: List[bytes] = []
        self._size = 0
        self._call: Optional[Any] = None
        #: A write found the output full: wait for the timer to try again.
        self._blocked = False
        #: The last write to a file ended inside a line.
        self._torn = False
        self._failing: Optional[str] = None
        self._droppedReported = 0
        self._lastReport = 0.0
        self.sink: Optional[Any] = None
        self.written = 0
        self.dropped = 0

    def open(self) -> None:
        """
        Open the output (C{config.path}).

        @raise OSError: when it cannot be opened.
        """
        self.sink = self._opener(self.config)
        if getattr(self.sink, "devNull", False):
            log.warn(
                "proxy.accessLog: the access log goes to the standard output, which is "
                "/dev/null (a daemon's): set proxy.accessLog.path to keep it"
            )

    # -- the request path ---------------------------------------------------

    def log(self, exchange: Any) -> None:
        if self._size >= self._maxPending:
            # The output cannot keep up: drop, without rendering.
            self.dropped += 1
            return
        try:
            line = self._render(exchange, self._reactor.seconds())
        except Exception:
            log.failure("cannot render an access log line")
            self.dropped += 1
            return
        self._lines.append(line)
        size = self._size = self._size + len(line)
        if size >= self._bufferSize and not self._blocked:
            self.flush()
        elif self._call is None:
            self._call = self._reactor.callLater(self._interval, self._timed)

    # -- writing ------------------------------------------------------------

    def _timed(self) -> None:
        self._call = None
        self._blocked = False
        self.flush()
        if self._lines:
            # The output could not take them all: try again later.
            self._call = self._reactor.callLater(self._interval, self._timed)

    def flush(self) -> None:
        lines = self._lines
        sink = self.sink
        if not lines or sink is None:
            return
        self._lines = []
        self._size = 0
        if self._torn:
            # End the line a short write tore, so that the next one starts
            # a line of its own.
            error: OSError = OSError(errno.ENOSPC, "short write")
            try:
                self._torn = sink.write(b"\n") != 1
            except OSError as e:
                error = e
            if self._torn:
                self._drop(sum(line.count(b"\n") for line in lines), error)
                return
        pieces = _pieces(lines, sink.atomic, sink.perLine)
        failed = None
        for i, piece in enumerate(pieces):
            try:
                n = sink.write(piece)
            except BlockingIOError:
                self._keep(pieces[i:])
                return
            except OSError as e:
                failed = e
                self._drop(piece.count(b"\n"), e)
                continue
            if n >= len(piece):
                self.written += 1 if sink.perLine else piece.count(b"\n")
                self._torn = False
                continue
            self.written += piece.count(b"\n", 0, n)
            if sink.regular:
                # A file takes less than asked when it is full.
                self._torn = n > 0 and piece[n - 1] != 0x0A
                failed = OSError(errno.ENOSPC, "short write (disk full?)")
                self._drop(piece.count(b"\n", n), failed)
            else:
                # A socket took part of it: the rest, and what follows,
                # go next time.
                self._keep([piece[n:]] + pieces[i + 1 :])
                return
        if failed is None:
            self._recovered()

    def _keep(self, pieces: List[bytes]) -> None:
        """
        Keep what the output could not take now, before the lines logged
        since, and try again when the timer fires.
        """
        self._lines = pieces + self._lines
        self._size = sum(len(p) for p in self._lines)
        self._blocked = True
        if self._call is None:
            self._call = self._reactor.callLater(self._interval, self._timed)

    def _drop(self, count: int, error: OSError) -> None:
        self.dropped += count
        reason = os.strerror(error.errno) if error.errno else str(error)
        now = self._reactor.seconds()
        if self._failing is None or now - self._lastReport >= self.reportInterval:
            log.error(
                "access log {sink!r}: cannot write ({reason}): lines are dropped "
                "({dropped} so far)",
                sink=self.sink,
                reason=reason,
                dropped=self.dropped,
            )
            self._lastReport = now
        self._failing = reason

    def _recovered(self) -> None:
        if self._failing is not None:
            log.info(
                "access log {sink!r}: writing again ({dropped} lines dropped in all)",
                sink=self.sink,
                dropped=self.dropped,
            )
            self._failing = None

    # -- the process --------------------------------------------------------

    def reopen(self) -> None:
        """
        Write what is buffered to the output, then open it again: a file
        renamed by logrotate is written no more, a new one is made at the
        path.  When it cannot be opened, the old one is kept (and the
        error logged).
        """
        self.flush()
        sink = self.sink
        if sink is None:
            return
        try:
            reopened = sink.reopen()
        except OSError as e:
            log.error(
                "access log {sink!r}: cannot open it again ({error}); writing on to the old one",
                sink=sink,
                error=e,
            )
            return
        if reopened:
            self._torn = False
            log.info("access log {sink!r}: opened again", sink=sink)

    def close(self) -> None:
        """
        Write what is buffered, then close the output; lines it cannot take
        any more are dropped (and counted).
        """
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()
        self._blocked = False
        self.flush()
        if self._lines:
            left = sum(p.count(b"\n") for p in self._lines)
            self.dropped += left
            log.warn(
                "access log {sink!r}: {n} lines could not be written before it closed",
                sink=self.sink,
                n=left,
            )
            self._lines = []
            self._size = 0
        sink, self.sink = self.sink, None
        if sink is not None:
            sink.close()
