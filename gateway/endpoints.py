"""
Reading Twisted endpoint strings (C{tcp:8080:interface=127.0.0.1}).
"""

from __future__ import annotations

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
