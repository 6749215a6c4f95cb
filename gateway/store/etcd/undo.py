"""
The undo log that lets a commit larger than one etcd transaction land in
several, and the committed view of a read that it gives.

etcd refuses a transaction of more than C{--max-txn-ops} operations (128 by
default) or C{--max-request-bytes} bytes (1.5 MiB by default).
L{gateway.store.etcd.store.EtcdStore} writes a larger commit in chunks, one
transaction each; every chunk but the last also puts an I{undo record}: the
values its keys had before the commit (or that they did not exist).  The
last chunk deletes the records, in the same transaction as its own
changes.  So at every revision, the keys as they are, with the values of
the undo records put back over them, are the state as last committed: a
reader never sees part of a commit, whatever history etcd has compacted,
and a commit whose writer died half-way can be rolled back by anyone from
the records alone.

This module holds what needs no I/O: the records' format
(L{encodeUndo}, L{decodeUndo}), the committed view of a read
(L{CommittedView}) and the cutting of writes into transactions that fit
(L{takeChunk}).  Keys here are relative to C{PREFIX/resources/}.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple

import attrs

from gateway.store.etcd.client import KeyValue

#: What a transaction costs beyond its keys and values for each operation,
#: in bytes: etcd's framing of an operation is a few bytes, counted
#: generously so that a chunk stays under etcd's limit.
OPERATION_BYTES = 64

#: One write of a commit: the key (relative to the resources' prefix) and
#: its new value, L{None} to delete it.
Write = Tuple[bytes, Optional[bytes]]


def _encodeValue(value: Optional[bytes]) -> Any:
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        # Not a resource (those are JSON text), but restored as it was.
        return {"base64": base64.b64encode(value).decode("ascii")}


def _decodeValue(value: Any) -> Optional[bytes]:
    if value is None:
        return None
    if isinstance(value, dict):
        return base64.b64decode(str(value.get("base64", "")))
    return str(value).encode("utf-8")


def undoEntry(key: bytes, before: Optional[bytes]) -> bytes:
    """
    @param key: a key, relative to the resources' prefix (UTF-8: the
        store's keys are made of resource names).
    @param before: its value before the commit, or L{None} when it did not
        exist.
    @return: the JSON of one entry of an undo record.
    """
    return json.dumps(
        [key.decode("utf-8"), _encodeValue(before)], ensure_ascii=False, separators=(",", ":")
    ).encode("utf-8")


def encodeUndo(entries: Iterable[bytes]) -> bytes:
    """
    @param entries: L{undoEntry}s.
    @return: an undo record: a JSON list of C{[key, before]} pairs,
        C{before} being the text of the value, L{None} for a key that did
        not exist, or C{{"base64": ...}} for a value that is not UTF-8.
    """
    return b"[" + b",".join(entries) + b"]"


def decodeUndo(record: bytes) -> List[Tuple[bytes, Optional[bytes]]]:
    """
    @return: the C{(key, before)} pairs of an undo record.
    @raise ValueError: when C{record} is not one.
    """
    entries = json.loads(record.decode("utf-8"))
    if not isinstance(entries, list):
        raise ValueError("an undo record is a JSON list")
    pairs = []
    for entry in entries:
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
            raise ValueError(f"an undo entry is a [key, value] pair, not {entry!r}")
        pairs.append((entry[0].encode("utf-8"), _decodeValue(entry[1])))
    return pairs


@attrs.frozen
class CommittedView:
    """
    What one read of every key under C{PREFIX/resources/} says.

    @ivar values: the committed value of every resource key (relative key
        to value): the keys as read, with the undo records put back over
        them.
    @ivar uncommitted: for each key an unfinished commit wrote, its value as
        read (L{None} when that commit deleted it): what that commit makes
        of the key if it completes.
    @ivar undoKeys: the undo records' keys (relative), empty when no commit
        is unfinished.
    """

    values: Dict[bytes, bytes]
    uncommitted: Dict[bytes, Optional[bytes]]
    undoKeys: FrozenSet[bytes]

    @classmethod
    def of(cls, kvs: Iterable[KeyValue], resources: bytes, undo: bytes) -> CommittedView:
        """
        @param kvs: every key under C{resources}, as one read gave them.
        @param resources: the resources' prefix, C{PREFIX/resources/}.
        @param undo: the undo records' prefix, relative to C{resources}.
        @raise ValueError: when an undo record cannot be read (the
            committed state is then unknown).
        """
        latest: Dict[bytes, bytes] = {}
        records: List[Tuple[bytes, bytes]] = []
        for kv in kvs:
            if not kv.key.startswith(resources):
                continue
            key = kv.key[len(resources) :]
            if key.startswith(undo):
                records.append((key, kv.value))
            else:
                latest[key] = kv.value
        before: Dict[bytes, Optional[bytes]] = {}
        # Chunks are numbered in order: a key an earlier chunk recorded
        # keeps that chunk's value (the one from before the commit).
        for recordKey, record in sorted(records):
            try:
                pairs = decodeUndo(record)
            except ValueError as e:
                raise ValueError(f"undo record {recordKey!r}: {e}")
            for key, value in pairs:
                before.setdefault(key, value)
        values = dict(latest)
        uncommitted: Dict[bytes, Optional[bytes]] = {}
        for key, value in before.items():
            uncommitted[key] = latest.get(key)
            if value is None:
                values.pop(key, None)
            else:
                values[key] = value
        return cls(values, uncommitted, frozenset(key for key, _ in records))

    def restores(self) -> List[Write]:
        """
        @return: the writes that roll the unfinished commit back: each key
            it wrote gets its committed value again.
        """
        return [(key, self.values.get(key)) for key in sorted(self.uncommitted)]


def writeBytes(write: Write) -> int:
    """
    @return: what one write weighs in a transaction, in bytes.
    """
    key, value = write
    return len(key) + (len(value) if value is not None else 0) + OPERATION_BYTES


def takeChunk(
    writes: Sequence[Write],
    undoEntries: Optional[Sequence[bytes]],
    maxOperations: int,
    maxBytes: int,
) -> int:
    """
    How many of C{writes}, from the first, go into the next transaction.

    @param undoEntries: the L{undoEntry} of each write, when the chunk also
        carries their undo record; L{None} when it does not.
    @param maxOperations: the most operations the chunk's writes (and its
        record) may take.
    @param maxBytes: the most bytes they may weigh.
    @return: at least 1 (a write too big for a chunk of its own still goes
        alone: etcd says whether it takes it), at most C{len(writes)}.
    """
    operations = 1 if undoEntries is not None else 0
    size = 2 + OPERATION_BYTES if undoEntries is not None else 0
    taken = 0
    for i, write in enumerate(writes):
        cost = writeBytes(write)
        if undoEntries is not None:
            cost += len(undoEntries[i]) + 1
        if taken and (operations + 1 > maxOperations or size + cost > maxBytes):
            break
        operations += 1
        size += cost
        taken += 1
    return max(taken, 1) if writes else 0
