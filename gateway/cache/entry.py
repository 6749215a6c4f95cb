"""
A stored answer (L{Entry}), and its bytes in a shared store
(L{encodeEntry}, L{decodeEntry}).
"""

from __future__ import annotations

import json
import struct
from typing import Any, Dict, List, Optional, Sequence, Tuple

__all__ = ["Entry", "EntryError", "decodeEntry", "encodeEntry"]


#: Bytes an entry is counted for besides its body and headers (its
#: objects), in the memory store's bound.
OVERHEAD = 256

#: A header line: C{(name in lower case, value)}.
Header = Tuple[bytes, bytes]


class EntryError(ValueError):
    """
    Bytes of a shared store are not an entry this gateway can read.
    """


class Entry:
    """
    One stored answer: its status, headers and body, and what its
    freshness is computed from (RFC 9111 4.2).

    @ivar status: the status.
    @ivar phrase: the reason phrase.
    @ivar headers: the answer's header lines, names in lower case, in the
        order they came (hop-by-hop ones and C{Content-Length} left out).
    @ivar body: the body.
    @ivar responseTime: when it came (epoch seconds).
    @ivar initialAge: its corrected initial age (seconds).
    @ivar lifetime: its freshness lifetime (seconds).
    @ivar keep: how long it is kept once stale, to be revalidated.
    @ivar etag: its C{ETag}, or L{None}.
    @ivar lastModified: its C{Last-Modified}, or L{None}.
    @ivar varyNames: the request headers its C{Vary} names (lower case,
        sorted).
    @ivar variant: the values of those headers in the request it answered
        (see L{gateway.cache.policy.variantOf}).
    @ivar size: bytes it is counted for.
    """

    __slots__ = (
        "status",
        "phrase",
        "headers",
        "body",
        "responseTime",
        "initialAge",
        "lifetime",
        "keep",
        "etag",
        "lastModified",
        "varyNames",
        "variant",
        "size",
    )

    def __init__(
        self,
        status: int,
        phrase: bytes,
        headers: Sequence[Header],
        body: bytes,
        responseTime: float,
        initialAge: float,
        lifetime: float,
        keep: float,
        varyNames: Tuple[bytes, ...] = (),
        variant: bytes = b"",
    ) -> None:
        self.status = status
        self.phrase = phrase
        self.headers = tuple(headers)
        self.body = body
        self.responseTime = responseTime
        self.initialAge = initialAge
        self.lifetime = lifetime
        self.keep = keep
        self.varyNames = varyNames
        self.variant = variant
        etag = lastModified = None
        for name, value in self.headers:
            if name == b"etag" and etag is None:
                etag = value
            elif name == b"last-modified" and lastModified is None:
                lastModified = value
        self.etag: Optional[bytes] = etag
        self.lastModified: Optional[bytes] = lastModified
        self.size = (
            len(body) + sum(len(n) + len(v) + 4 for n, v in self.headers) + len(variant) + OVERHEAD
        )

    def __repr__(self) -> str:
        return f"<Entry {self.status} {len(self.body)} bytes, lifetime {self.lifetime}>"

    def age(self, now: float) -> float:
        """
        @return: its current age (RFC 9111 4.2.3).
        """
        return self.initialAge + max(0.0, now - self.responseTime)

    def fresh(self, now: float) -> bool:
        """
        @return: whether it may be served without asking the backend.
        """
        return self.lifetime > self.age(now)

    def expired(self, now: float) -> bool:
        """
        @return: whether it is past being kept (stale, and past C{keep}).
        """
        return self.age(now) >= self.lifetime + self.keep

    @property
    def validated(self) -> bool:
        """
        Whether it has a validator to revalidate it with.
        """
        return self.etag is not None or self.lastModified is not None

    def expiresIn(self, now: float) -> float:
        """
        @return: seconds it is still kept for.
        """
        return max(0.0, self.lifetime + self.keep - self.age(now))


#: What an encoded entry starts with.
_MAGIC = b"GWC1"

_LENGTH = struct.Struct(">I")


def encodeEntry(entry: Entry) -> bytes:
    """
    @return: C{entry} as bytes for a shared store: a magic, the length of
        a JSON head (headers as Latin-1 text), the head, the body.
    """
    head = {
        "s": entry.status,
        "p": entry.phrase.decode("latin-1"),
        "h": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in entry.headers],
        "t": entry.responseTime,
        "a": entry.initialAge,
        "l": entry.lifetime,
        "k": entry.keep,
        "vn": [n.decode("latin-1") for n in entry.varyNames],
        "v": entry.variant.decode("latin-1"),
    }
    encoded = json.dumps(head, separators=(",", ":")).encode("ascii")
    return b"".join([_MAGIC, _LENGTH.pack(len(encoded)), encoded, entry.body])


def decodeEntry(data: bytes) -> Entry:
    """
    @return: the entry of L{encodeEntry}'s bytes.
    @raise EntryError: when they are not an entry.
    """
    if data[:4] != _MAGIC or len(data) < 8:
        raise EntryError("not an entry of this gateway")
    (length,) = _LENGTH.unpack_from(data, 4)
    if len(data) < 8 + length:
        raise EntryError("a truncated entry")
    try:
        head: Dict[str, Any] = json.loads(data[8 : 8 + length])
        headers: List[Header] = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in head["h"]]
        return Entry(
            int(head["s"]),
            head["p"].encode("latin-1"),
            headers,
            data[8 + length :],
            float(head["t"]),
            float(head["a"]),
            float(head["l"]),
            float(head["k"]),
            tuple(n.encode("latin-1") for n in head["vn"]),
            head["v"].encode("latin-1"),
        )
    except (KeyError, TypeError, ValueError, UnicodeError) as e:
        raise EntryError(f"an unreadable entry: {e}")
