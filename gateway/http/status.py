"""
Reason phrases: the text after the status code of a response's status line.

Twisted's table (L{twisted.web.http.RESPONSES}) lacks statuses the gateway
sends (C{429}, C{431}, ...), which then went out as C{429 Unknown Status},
and spells others the way of RFC 2616 (C{413 Request Entity Too Large}).
L{reasonPhrase} has the phrases of RFC 9110 and of the other statuses in
the IANA registry, and a phrase for the class of any other code.
L{PhrasedRequest} is a L{server.Request} that uses it.
"""

from __future__ import annotations

from typing import Dict, Optional, Union

from twisted.web import server

__all__ = [
    "REASON_PHRASES",
    "PhrasedRequest",
    "reasonPhrase",
]


#: The phrase of every registered status (RFC 9110 and the IANA registry).
REASON_PHRASES: Dict[int, bytes] = {
    100: b"Continue",
    101: b"Switching Protocols",
    102: b"Processing",
    103: b"Early Hints",
    200: b"OK",
    201: b"Created",
    202: b"Accepted",
    203: b"Non-Authoritative Information",
    204: b"No Content",
    205: b"Reset Content",
    206: b"Partial Content",
    207: b"Multi-Status",
    208: b"Already Reported",
    226: b"IM Used",
    300: b"Multiple Choices",
    301: b"Moved Permanently",
    302: b"Found",
    303: b"See Other",
    304: b"Not Modified",
    305: b"Use Proxy",
    307: b"Temporary Redirect",
    308: b"Permanent Redirect",
    400: b"Bad Request",
    401: b"Unauthorized",
    402: b"Payment Required",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    406: b"Not Acceptable",
    407: b"Proxy Authentication Required",
    408: b"Request Timeout",
    409: b"Conflict",
    410: b"Gone",
    411: b"Length Required",
    412: b"Precondition Failed",
    413: b"Content Too Large",
    414: b"URI Too Long",
    415: b"Unsupported Media Type",
    416: b"Range Not Satisfiable",
    417: b"Expectation Failed",
    418: b"I'm a teapot",
    421: b"Misdirected Request",
    422: b"Unprocessable Content",
    423: b"Locked",
    424: b"Failed Dependency",
    425: b"Too Early",
    426: b"Upgrade Required",
    428: b"Precondition Required",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    451: b"Unavailable For Legal Reasons",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
    506: b"Variant Also Negotiates",
    507: b"Insufficient Storage",
    508: b"Loop Detected",
    510: b"Not Extended",
    511: b"Network Authentication Required",
}


_CLASS_PHRASES = {
    1: b"Informational",
    2: b"Success",
    3: b"Redirection",
    4: b"Client Error",
    5: b"Server Error",
}


def reasonPhrase(code: int) -> bytes:
    """
    @param code: a status code.
    @return: its reason phrase; for an unregistered code, that of its class
        (C{Client Error} for C{499}), or C{Unknown Status} outside 100-599.
    """
    phrase = REASON_PHRASES.get(code)
    if phrase is None:
        phrase = _CLASS_PHRASES.get(code // 100, b"Unknown Status")
    return phrase


#: The C{Server} of the gateway's own answers: a name, no version (Twisted's
#: C{server.version} would tell a client which Twisted, and so which fixes,
#: it runs).  A proxied answer carries its backend's, as it came.
SERVER_NAME = b"gateway"


class PhrasedRequest(server.Request):
    """
    A L{server.Request} whose status line carries the phrase of
    L{reasonPhrase} when none is given.
    """

    def setResponseCode(self, code: int, message: Optional[bytes] = None) -> None:
        super().setResponseCode(code, message or reasonPhrase(code))


class NamedRequest(PhrasedRequest):
    """
    A L{PhrasedRequest} whose C{Server} header is L{SERVER_NAME}, not
    Twisted's version (the admin's requests).
    """

    def setHeader(self, name: Union[str, bytes], value: Union[str, bytes]) -> None:
        if value is server.version:
            value = SERVER_NAME
        super().setHeader(name, value)
