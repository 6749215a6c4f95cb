"""
The access log's settings: the C{proxy.accessLog} key of the config file
(L{AccessLogConfig}, parsed by L{AccessLogSetting}).

C{accessLog: true} is the default: one JSON object per request on the
gateway's standard output.  C{accessLog: false} turns it off.  An object
chooses where the lines go, their format and their fields::

    proxy:
      accessLog:
        path: /var/log/gateway/access.log   # or "-" (stdout), or syslog:...
        format: json                        # or combined
        fields: [time, client, method, uri, status, bytes, durationMs]
        flushInterval: 0.1
        bufferSize: 65536

The lines themselves are made and written by
L{gateway.telemetry.accesslog}; C{FIELDS} here names what it can write.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional, Tuple, Union

import attrs

from gateway.model.schema import (
    Enum,
    Int,
    Nullable,
    Num,
    Rule,
    Spec,
    Str,
    ValidationError,
    field,
    fromJSON,
    jsonSchema,
    toJSON,
)
from gateway.model.schema import List as ListOf

__all__ = [
    "DEFAULT_JSON_FIELDS",
    "FIELDS",
    "AccessLogConfig",
    "AccessLogSetting",
    "syslogAddress",
]

#: Every field a line can hold, in the order of the documentation (see
#: L{gateway.telemetry.accesslog} for what each one is).
FIELDS: Tuple[str, ...] = (
    "time",
    "client",
    "method",
    "uri",
    "path",
    "protocol",
    "host",
    "status",
    "bytes",
    "durationMs",
    "upstreamMs",
    "api",
    "cluster",
    "server",
    "serverAddr",
    "routing",
    "retries",
    "outcome",
    "error",
    "requestId",
    "userAgent",
    "referer",
)

#: The fields of a JSON line unless C{fields} says otherwise.
DEFAULT_JSON_FIELDS: Tuple[str, ...] = (
    "time",
    "client",
    "method",
    "uri",
    "status",
    "bytes",
    "durationMs",
    "upstreamMs",
    "api",
    "server",
    "requestId",
    "userAgent",
)

#: Syslog facilities by name (RFC 5424 6.2.1).
FACILITIES = {
    "kern": 0,
    "user": 1,
    "mail": 2,
    "daemon": 3,
    "auth": 4,
    "syslog": 5,
    "lpr": 6,
    "news": 7,
    "uucp": 8,
    "cron": 9,
    "authpriv": 10,
    "ftp": 11,
    "local0": 16,
    "local1": 17,
    "local2": 18,
    "local3": 19,
    "local4": 20,
    "local5": 21,
    "local6": 22,
    "local7": 23,
}

#: The socket a local syslog daemon reads.
DEV_LOG = "/dev/log"

_SYSLOG = "syslog:"


def syslogAddress(path: str) -> Union[None, str, Tuple[str, int]]:
    """
    @param path: an access log's C{path}.
    @return: L{None} when C{path} is no syslog address; else the syslog
        daemon's address: a UNIX datagram socket's path (C{syslog:} alone
        is L{DEV_LOG}), or C{(host, port)} for UDP (C{syslog:HOST:PORT},
        C{syslog:[::1]:514}).
    @raise ValueError: for a C{syslog:} address that is neither.
    """
    if not path.startswith(_SYSLOG):
        return None
    rest = path[len(_SYSLOG) :]
    if not rest:
        return DEV_LOG
    if rest.startswith("/"):
        return rest
    host, sep, port = rest.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(
            f"{path!r}: a syslog address is syslog: (/dev/log), syslog:/PATH (a UNIX "
            "socket) or syslog:HOST:PORT (UDP)"
        )
    return host, int(port)


def _checkPath(path: str) -> None:
    syslogAddress(path)


def _pendingRule(values: Mapping[str, Any]) -> Iterable[Tuple[str, str]]:
    if values["maxPending"] < values["bufferSize"]:
        yield "maxPending", "must be at least bufferSize"


@attrs.frozen
class AccessLogConfig:
    """
    Where the access log goes and what its lines hold.
    """

    path: str = field(
        Str(minLength=1, maxLength=4096, check=_checkPath),
        "-",
        doc=(
            "a file (appended to, made if missing, opened again on SIGUSR1), - for the "
            "standard output, or syslog: (/dev/log), syslog:/PATH or syslog:HOST:PORT (UDP)"
        ),
    )
    format: str = field(
        Enum(("json", "combined")),
        "json",
        doc="json: one JSON object per line; combined: the NCSA combined log format",
    )
    fields: Optional[Tuple[str, ...]] = field(
        Nullable(ListOf(Enum(FIELDS), minItems=1, maxItems=len(FIELDS), unique=True)),
        None,
        doc=(
            "json: the fields of each object, in order (default: "
            + ", ".join(DEFAULT_JSON_FIELDS)
            + "); combined: fields added after the combined line as name=value"
        ),
    )
    flushInterval: float = field(
        Num(0.001, 60), 0.1, doc="seconds a line may wait in the buffer before it is written"
    )
    bufferSize: int = field(
        Int(1, 16 * 1024 * 1024),
        65536,
        doc="bytes of lines buffered before they are written at once",
    )
    maxPending: int = field(
        Int(1, 1024 * 1024 * 1024),
        1024 * 1024,
        doc=(
            "bytes of lines kept while the output cannot take them (a full pipe); "
            "past it, lines are dropped and counted"
        ),
    )
    facility: str = field(Enum(tuple(FACILITIES)), "local7", doc="syslog only: the facility")
    tag: str = field(
        Str(
            pattern=r"^[A-Za-z0-9._-]{1,32}$",
            maxLength=32,
            patternHint="must be 1 to 32 letters, digits, -, _ or .",
        ),
        "gateway",
        doc="syslog only: the tag (program name) of each message",
    )

    rules = (Rule(("maxPending", "bufferSize"), _pendingRule, doc="maxPending >= bufferSize."),)

    @property
    def fieldNames(self) -> Tuple[str, ...]:
        """
        The fields a line holds: C{fields}, or the format's default
        (L{DEFAULT_JSON_FIELDS} for JSON, none added to a combined line).
        """
        if self.fields is not None:
            return self.fields
        return DEFAULT_JSON_FIELDS if self.format == "json" else ()


def _typeName(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


@attrs.frozen
class AccessLogSetting(Spec):
    """
    C{proxy.accessLog}: C{true} (an L{AccessLogConfig} of defaults),
    C{false} (no access log: parsed as C{False}), or an object of
    L{AccessLogConfig}'s fields.
    """

    def parse(self, value: Any, path: str) -> Union[bool, AccessLogConfig]:
        if value is True:
            return AccessLogConfig()
        if value is False:
            return False
        if isinstance(value, dict):
            parsed: AccessLogConfig = fromJSON(AccessLogConfig, value, path)
            return parsed
        raise ValidationError(
            path,
            f"must be true or false, or an object ({{path, format, fields, ...}}), "
            f"not {_typeName(value)}",
        )

    def dump(self, value: Any) -> Any:
        if value is False or value is None:
            return False
        return toJSON(value)

    def schema(self) -> dict:
        return {"oneOf": [{"type": "boolean"}, jsonSchema(AccessLogConfig)]}
