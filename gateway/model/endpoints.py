"""
Reading Twisted endpoint strings (C{tcp:8080:interface=127.0.0.1}).
"""

from __future__ import annotations

import ipaddress
from typing import List, Optional


def splitEndpoint(description: str) -> List[str]:
    """
    Split an endpoint string into its arguments, as Twisted does: C{:}
    separates, C{\\\\} escapes the next character.
    """
    parts: List[str] = []
    current: List[str] = []
    escaped = False
    for char in description:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def endpointPort(description: str) -> Optional[int]:
    """
    @return: the port of a C{tcp:}/C{tcp6:}/C{ssl:} endpoint string (its
        first positional argument or C{port=}), or L{None}.
    """
    parts = splitEndpoint(description)
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        if not sep and key.isdigit():
            return int(key)
        if sep and key == "port" and value.isdigit():
            return int(value)
    return None


def isLoopbackEndpoint(description: str) -> bool:
    """
    Tell whether a server endpoint string listens on this machine only.

    @param description: a Twisted server endpoint string, e.g.
        C{tcp:9090:interface=127.0.0.1}.
    @return: L{True} for a C{unix:} socket and for a C{tcp:}, C{tcp6:} or
        C{ssl:} endpoint whose C{interface} is a loopback address (or
        C{localhost}); L{False} otherwise, in particular when no interface
        is given (every address) and for other kinds of endpoint.
    """
    parts = splitEndpoint(description.strip())
    kind = parts[0].lower()
    if kind == "unix":
        return True
    if kind not in ("tcp", "tcp6", "ssl"):
        return False
    interface = ""
    positional = 0
    for part in parts[1:]:
        key, eq, value = part.partition("=")
        if eq:
            if key == "interface":
                interface = value
        else:
            positional += 1
            if positional == 2 and kind != "ssl":
                interface = part
    interface = interface.strip().strip("[]")
    if interface.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(interface).is_loopback
    except ValueError:
        return False
