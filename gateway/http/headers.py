"""
Fast access to L{Headers} for the hot path.

L{Headers} canonicalises a name and sanitises every value on each
C{setRawHeaders}, and encodes the name again on each C{getRawHeaders}.  When
the installed Twisted keeps its values in a C{_rawHeaders} dict of lists
(checked once, at import: L{RAW_HEADERS}), L{rawHeadersOf} gives that dict,
to be read and written with the keys L{headerKey} computes, for values
already known to be sane (parsed by a channel or an upstream client, or
made by the gateway).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from twisted.logger import Logger

# Names, not attributes of the module: twisted.web.http is a deprecation
# proxy whose every attribute read costs a Python call.
from twisted.web.http import (
    datetimeToString,
)
from twisted.web.http_headers import Headers

log = Logger()
__all__ = [
    "RAW_HEADERS",
    "headerKey",
    "headersFromRaw",
    "httpDate",
    "rawHeadersOf",
]


def _headersStoreRawKeys() -> bool:
    """
    @return: whether L{Headers} keeps its values in a C{_rawHeaders} dict of
        lists under the key C{addRawHeader} computes, and reads them from it
        as they are, so that the dict may be used directly.
    """
    probe = Headers()
    probe.addRawHeader(b"x-Probe-name", b"v")
    raw = getattr(probe, "_rawHeaders", None)
    if not isinstance(raw, dict) or len(raw) != 1:
        return False
    key, values = next(iter(raw.items()))
    if values != [b"v"] or not isinstance(values, list):
        return False
    copy = Headers()
    copy._rawHeaders[key] = [b"w"]
    return copy.getRawHeaders(b"X-PROBE-NAME") == [b"w"] and list(copy.getAllRawHeaders()) == [
        (key, [b"w"])
    ]


#: Whether L{rawHeadersOf} gives the dict of a L{Headers}.
RAW_HEADERS = _headersStoreRawKeys()


_KEYS: Dict[bytes, bytes] = {}


_MAX_KEYS = 10_000


def headerKey(name: bytes) -> bytes:
    """
    @param name: a valid header field name, in any case.
    @return: the key L{Headers} stores C{name} under.
    @raise ValueError: when C{name} is not a valid field name.
    """
    key = _KEYS.get(name)
    if key is None:
        probe = Headers()
        probe.addRawHeader(name, b"")
        key = next(iter(probe._rawHeaders)) if RAW_HEADERS else name
        if len(_KEYS) < _MAX_KEYS:
            _KEYS[name] = key
    return key


def rawHeadersOf(headers: object) -> Optional[Dict[bytes, List[bytes]]]:
    """
    @return: the C{{key: [value, ...]}} dict a L{Headers} keeps (keys from
        L{headerKey}), or L{None} when that is not possible (another kind
        of object, or a Twisted that stores headers otherwise).
    """
    if RAW_HEADERS and type(headers) is Headers:
        return headers._rawHeaders
    return None


def headersFromRaw(raw: Dict[bytes, List[bytes]]) -> Headers:
    """
    @param raw: a C{{key: [value, ...]}} dict as L{rawHeadersOf} gives,
        keys from L{headerKey}, values already known to be sane; it becomes
        the new headers' own (not copied).
    @return: L{Headers} holding C{raw}.
    @raise ValueError: when L{RAW_HEADERS} is false (this Twisted keeps
        headers otherwise: use L{rawHeadersOf} first, and the public API
        when it answers L{None}).
    """
    if not RAW_HEADERS:
        raise ValueError("this Twisted does not keep headers in a dict of lists")
    headers = Headers()
    headers._rawHeaders = raw
    return headers


#: The last second L{httpDate} was asked for, and its date.
_date: Tuple[int, bytes] = (-1, b"")


def httpDate(now: float) -> bytes:
    """
    @param now: seconds since the epoch.
    @return: C{now} as an HTTP date (RFC 9110 5.6.7), made once a second.
    """
    global _date
    second = int(now)
    date = _date
    if second != date[0]:
        date = _date = (second, datetimeToString(second))
    return date[1]
