"""
The regular expressions of the model's strings: addresses, networks, hosts,
paths, URL patterns, methods, header names.

Each is in the dialect that Python's L{re} and ECMA 262 (the dialect of JSON
Schema's C{pattern}) read alike, anchored with C{^...$}, so that the same
text validates the admin's input and stands in its OpenAPI document.  A
pattern says all that a regular expression can say of its value; what it
cannot say (a URL pattern's parameter named twice, a valid regular
expression) is left to the field's check, whose errors are semantic.
"""

from __future__ import annotations

from typing import List

from gateway.model.schema import PATH_EXCLUDED

__all__ = [
    "ADDR",
    "CIDR",
    "DNS_NAME",
    "HEADER_NAME",
    "HOST",
    "IPV4",
    "IPV6",
    "PATH",
    "URL_PATTERN",
    "methodPattern",
]

_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"

#: A dotted-quad IPv4 address, without leading zeros.
IPV4 = rf"{_OCTET}(\.{_OCTET}){{3}}"

_HEXTET = "[0-9A-Fa-f]{1,4}"


def _groups(count: int) -> str:
    # Exactly `count` hextets joined by colons ("" for none).
    if count == 0:
        return ""
    return f"({_HEXTET}:){{{count - 1}}}{_HEXTET}"


def _ipv6() -> str:
    forms: List[str] = [f"({_HEXTET}:){{7}}{_HEXTET}", f"({_HEXTET}:){{6}}{IPV4}"]
    # "::" stands for one or more zero hextets: at most 7 written around it,
    # or at most 5 and a trailing IPv4 address (which counts for 2).
    for left in range(8):
        right = 7 - left
        after = f"({_HEXTET}(:{_HEXTET}){{0,{right - 1}}})?" if right else ""
        forms.append(f"{_groups(left)}::{after}")
    for left in range(6):
        forms.append(f"{_groups(left)}::({_HEXTET}:){{0,{5 - left}}}{IPV4}")
    return "(" + "|".join(forms) + ")"


#: An IPv6 address in any of its textual forms (RFC 4291 2.2), without a
#: zone.
IPV6 = _ipv6()

_PREFIX4 = "(3[0-2]|[12]?[0-9])"
_PREFIX6 = "(12[0-8]|1[01][0-9]|[1-9]?[0-9])"

#: An IP network or address: C{10.0.0.0/8}, C{10.0.0.1},
#: C{10.0.0.0/255.0.0.0}, C{::1/128}, C{2001:db8::/32}.
CIDR = f"^({IPV4}(/({_PREFIX4}|{IPV4}))?|{IPV6}(/{_PREFIX6})?)$"

_PORT = "([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"

#: A server's C{host:port}: a host name or IPv4 address, or C{[IPv6]}
#: (with an optional zone); a port from 1 to 65535.
ADDR = rf"^(\[{IPV6}(%[A-Za-z0-9._~-]+)?\]|[A-Za-z0-9._-]+):{_PORT}$"

_LABEL = "[A-Za-z0-9_-]+"

#: A name to look up in the DNS (C{users.internal},
#: C{_http._tcp.users.service.internal}): labels of letters, digits, C{-}
#: and C{_} separated by dots, one trailing dot allowed.
DNS_NAME = rf"^{_LABEL}(\.{_LABEL})*\.?$"

#: A route's host: a DNS name (optionally C{*.} for any subdomain), C{*},
#: an IPv4 address or C{[IPv6]}; no port; one trailing dot allowed.
HOST = rf"^(\*|\[[0-9A-Fa-f:.]+\]|(\*\.)?{_LABEL}(\.{_LABEL})*)\.?$"

#: A path sent in a request line (C{healthCheck.path}, C{urlRewrite}).
PATH = f"^/[^{PATH_EXCLUDED}]*$"

_SEGMENT_CHAR = f"[^/?#{{}}{PATH_EXCLUDED}]"
_STATIC = f"([^/?#{{}}*{PATH_EXCLUDED}]{_SEGMENT_CHAR}*|\\*{_SEGMENT_CHAR}+)"
_PARAM = (
    r"\{[A-Za-z_][A-Za-z0-9_]*"
    f"(:(int|uuid|alpha|alnum|slug)|:re:[^{PATH_EXCLUDED}]+)?"
    r"\}"
)
_URL_SEGMENT = f"({_STATIC}|{_PARAM})"

#: The syntax of an API's C{urlPattern} (L{gateway.model.urlpattern}), as
#: far as a regular expression can follow it: the balance of braces in a
#: C{re:} parameter, the uniqueness of names, dot segments and the count of
#: segments are checked after it.
URL_PATTERN = rf"^/(({_URL_SEGMENT}(/{_URL_SEGMENT})*(/\*)?|\*)/?)?$"

#: An HTTP token (RFC 9110 5.6.2): a header or cookie name.
HEADER_NAME = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"


def methodPattern(methods: List[str]) -> str:
    """
    @return: a pattern for C{*} or one of C{methods}, in any case (the
        model upper-cases it).
    """

    def anyCase(word: str) -> str:
        return "".join(f"[{c.upper()}{c.lower()}]" for c in word)

    return r"^(\*|" + "|".join(anyCase(m) for m in methods) + ")$"
