"""
The memory store: the entries one proxy process keeps, bounded in bytes,
the least recently used dropped first.

Entries are kept by key (L{gateway.cache.policy.CachePolicy.primaryKey})
in records, each holding the variants of one C{Vary} (at most
L{MAX_VARIANTS}); a record is used, counted and dropped as a whole, its
key counted with its entries (a key holds the request's target, which a
client makes as long as the request line allows).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Dict, Optional, Tuple

from gateway.cache.entry import Entry

__all__ = ["MAX_VARIANTS", "MemoryStore"]

#: The most variants kept under one key: a new one past that starts the
#: record again (a header that takes many values is a poor C{Vary}).
MAX_VARIANTS = 16


class _Record:
    __slots__ = ("api", "varyNames", "variants", "size")

    def __init__(self, api: str, varyNames: Tuple[bytes, ...], keySize: int) -> None:
        self.api = api
        self.varyNames = varyNames
        self.variants: Dict[bytes, Entry] = {}
        self.size = keySize


class MemoryStore:
    """
    Entries in this process's memory, at most C{maxBytes} of them (see
    L{gateway.cache.entry.Entry.size}; the keys are counted too).

    @ivar bytes: bytes held now.
    @ivar evictions: records dropped to make room.
    """

    def __init__(self, maxBytes: int) -> None:
        self.maxBytes = maxBytes
        self._records: OrderedDict[bytes, _Record] = OrderedDict()
        self.bytes = 0
        self.evictions = 0
        self._count = 0

    def __len__(self) -> int:
        """
        @return: the entries held (variants counted one by one).
        """
        return self._count

    def lookup(
        self, key: bytes, variantFor: Callable[[Tuple[bytes, ...]], bytes], now: float
    ) -> Tuple[str, Optional[Entry]]:
        """
        Find the entry of a request.

        @param variantFor: gives the request's variant for the C{Vary}
            names of the record found.
        @return: C{("found", entry)}, or C{("uri-miss", None)} when nothing
            is kept under C{key}, C{("vary-miss", None)} when something is,
            but not for the request's variant.  An entry past being kept
            is dropped, and not found.
        """
        record = self._records.get(key)
        if record is None:
            return "uri-miss", None
        entry = record.variants.get(variantFor(record.varyNames))
        if entry is None:
            return "vary-miss", None
        if entry.expired(now):
            self._dropVariant(key, record, entry.variant)
            return "uri-miss" if key not in self._records else "vary-miss", None
        self._records.move_to_end(key)
        return "found", entry

    def put(self, key: bytes, api: str, entry: Entry) -> bool:
        """
        Keep C{entry} under C{key}, dropping the least recently used
        records beyond the bound.

        @return: whether it is kept (an entry larger than the whole store
            is not).
        """
        if entry.size + len(key) > self.maxBytes:
            self.delete(key)
            return False
        record = self._records.get(key)
        if (
            record is None
            or record.varyNames != entry.varyNames
            or (entry.variant not in record.variants and len(record.variants) >= MAX_VARIANTS)
        ):
            self.delete(key)
            record = self._records[key] = _Record(api, entry.varyNames, len(key))
            self.bytes += record.size
        else:
            self._records.move_to_end(key)
        old = record.variants.get(entry.variant)
        if old is not None:
            record.size -= old.size
            self.bytes -= old.size
            self._count -= 1
        self._count += 1
        record.variants[entry.variant] = entry
        record.size += entry.size
        self.bytes += entry.size
        records = self._records
        while self.bytes > self.maxBytes:
            oldKey, oldest = records.popitem(last=False)
            self.bytes -= oldest.size
            self._count -= len(oldest.variants)
            self.evictions += 1
            if oldKey == key:
                return False
        return True

    def delete(self, key: bytes) -> None:
        """
        Drop what is kept under C{key}.
        """
        record = self._records.pop(key, None)
        if record is not None:
            self.bytes -= record.size
            self._count -= len(record.variants)

    def _dropVariant(self, key: bytes, record: _Record, variant: bytes) -> None:
        entry = record.variants.pop(variant)
        record.size -= entry.size
        self.bytes -= entry.size
        self._count -= 1
        if not record.variants:
            del self._records[key]
            self.bytes -= record.size

    def purge(self, api: str) -> int:
        """
        Drop every entry of an API.

        @return: how many were dropped.
        """
        dropped = 0
        for key in [k for k, r in self._records.items() if r.api == api]:
            record = self._records.pop(key)
            self.bytes -= record.size
            dropped += len(record.variants)
        self._count -= dropped
        return dropped

    def snapshot(self) -> Dict[str, int]:
        """
        @return: C{bytes} held, C{limit}, C{entries} and C{evictions}.
        """
        return {
            "bytes": self.bytes,
            "limit": self.maxBytes,
            "entries": len(self),
            "evictions": self.evictions,
        }
