"""
Token buckets shared by the proxy workers of one gateway.

With several workers (L{gateway.process.pool}) a limit (an API's C{rateLimit}
and C{maxQPS}, a server's C{maxQPS}) must hold for the gateway as a whole:
a client whose connections the kernel spread over N workers must not get
N times its rate.  So the buckets of the workers live in one table of
shared memory: the gateway process makes it (L{SharedBuckets.create}, an
anonymous file) and hands it to every worker it starts; each worker maps
it (L{SharedBuckets.fromFD}).

A bucket is a slot of the table: the hash of its name (the limit and the
key, such as the client's address), and the state of a
L{gateway.protection.ratelimit.TokenBucket} (its reference time, the tokens taken
since, the latest clock reading).  A worker decides under a POSIX record
lock on the table, held for the few microseconds one decision takes; the
kernel drops the lock of a worker that dies.  The clocks of the workers
are the same wall clock, and each bucket reads it as a monotone clock.

A slot is found by linear probing from the hash.  When the slots probed
are all taken by other buckets, the one used least recently is given to
the new bucket, which starts full: as with L{gateway.protection.ratelimit.KeyedBuckets},
a key that could cycle through more keys than the table holds faster than
buckets refill would get more than its share.  A bucket left alone long
enough to be full loses nothing when it is given away.  The default table
(C{DEFAULT_SLOTS}) holds 131,072 buckets in 4 MiB.

Two different names hashing to the same 64 bits would share a bucket; with
random 64-bit hashes that is vanishingly unlikely.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import math
import mmap
import os
import struct
import tempfile
from typing import Any, Hashable, Optional, Tuple

from gateway.protection.ratelimit import KeyedBuckets, TokenBucket

#: Buckets in a table made with the defaults.
DEFAULT_SLOTS = 1 << 17


#: Slots probed for a bucket before the least recently used one is taken.
PROBES = 16


_MAGIC = b"twisted-gateway shared buckets 1\n"


_HEADER = 64


_SLOT = struct.Struct("<Qddd")  # name hash (0: free), anchor, taken, last


_HASH = struct.Struct("<Q")


_LAST = struct.Struct("<d")


_STATE = struct.Struct("<ddd")


def _nameHash(name: bytes) -> int:
    value = _HASH.unpack(hashlib.blake2b(name, digest_size=8).digest())[0]
    return value or 1


def _keyBytes(key: Hashable) -> bytes:
    if key is None:
        return b"n"
    if isinstance(key, bytes):
        return b"b" + key
    if isinstance(key, str):
        return b"s" + key.encode("utf-8", "surrogatepass")
    return b"r" + repr(key).encode("utf-8", "backslashreplace")


class SharedBuckets:
    """
    A table of token buckets in memory shared by processes (see the
    module's documentation).  Make one with L{create} in the gateway
    process, and open it with L{fromFD} in each worker.

    Its C{bucket} and C{keyed} make the limits' buckets, as
    L{gateway.protection.ratelimit.LocalBuckets} does for one process.
    """

    def __init__(self, fd: int) -> None:
        """
        @param fd: a file descriptor of a table made by L{create}, which
            the table owns from then on (L{close} closes it).
        @raise ValueError: when it is not such a table (C{fd} is left
            open).
        """
        size = os.fstat(fd).st_size
        if size < _HEADER + _SLOT.size:
            raise ValueError("not a shared bucket table (too small)")
        self._fd = fd
        self._map = mmap.mmap(fd, size)
        if self._map[: len(_MAGIC)] != _MAGIC:
            self._map.close()
            raise ValueError("not a shared bucket table")
        self.slots = (size - _HEADER) // _SLOT.size
        self._depth = 0

    @classmethod
    def create(cls, slots: int = DEFAULT_SLOTS) -> SharedBuckets:
        """
        Make a table of C{slots} empty buckets, in an anonymous file that
        goes away with the last process that has it open.
        """
        if slots < 1:
            raise ValueError("a table needs at least one slot")
        fd = _anonymousFile()
        try:
            os.ftruncate(fd, _HEADER + slots * _SLOT.size)
            os.pwrite(fd, _MAGIC, 0)
            return cls(fd)
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def fromFD(cls, fd: int) -> SharedBuckets:
        """
        Open the table another process made and passed as C{fd}.
        """
        return cls(fd)

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        """
        Unmap the table and close its file descriptor.
        """
        if not self._map.closed:
            self._map.close()
            os.close(self._fd)

    # -- locking ----------------------------------------------------------------

    def acquire(self) -> None:
        """
        Take the table's lock (again, when this process holds it already).
        """
        if self._depth == 0:
            fcntl.lockf(self._fd, fcntl.LOCK_EX, 1, 0)
        self._depth += 1

    def release(self) -> None:
        self._depth -= 1
        if self._depth == 0:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, 0)

    # -- slots ------------------------------------------------------------------

    def _probe(self, nameHash: int) -> Tuple[Optional[int], int]:
        """
        @return: C{(the offset of the slot of the bucket C{nameHash}, or
            L{None} when it has none; the slot to give it: the first empty
            one probed, else the least recently used)}.  Call with the lock
            held.
        """
        table = self._map
        slots = self.slots
        start = nameHash % slots
        oldest = -1
        oldestLast = math.inf
        for i in range(min(PROBES, slots)):
            offset = _HEADER + ((start + i) % slots) * _SLOT.size
            found = _HASH.unpack_from(table, offset)[0]
            if found == nameHash:
                return offset, offset
            if found == 0:
                return None, offset
            last = _LAST.unpack_from(table, offset + 24)[0]
            if last < oldestLast:
                oldest, oldestLast = offset, last
        return None, oldest

    def _slotOf(self, nameHash: int, now: float) -> int:
        """
        @return: the offset of the slot of the bucket C{nameHash}, given to
            it (full at C{now}) when it has none.  Call with the lock held.
        """
        found, free = self._probe(nameHash)
        if found is not None:
            return found
        _SLOT.pack_into(self._map, free, nameHash, now, 0.0, now)
        return free

    def find(self, nameHash: int) -> Optional[int]:
        """
        @return: the offset of the slot of the bucket C{nameHash}, or
            L{None} when it has none (none is given).  Call with the lock
            held.
        """
        return self._probe(nameHash)[0]

    def state(self, offset: int) -> Tuple[float, float, float]:
        """
        @return: C{(anchor, taken, last)} of the bucket in the slot at
            C{offset} (from L{find}).  Call with the lock held.
        """
        anchor, taken, last = _STATE.unpack_from(self._map, offset + 8)
        return anchor, taken, last

    def read(self, nameHash: int, now: float) -> Tuple[int, float, float, float]:
        """
        Read the state of the bucket C{nameHash} (full at C{now} when it is
        new).  Call with the lock held.

        @return: C{(offset, anchor, taken, last)}: its slot, for L{write},
            and the state of a L{TokenBucket}.
        """
        offset = self._slotOf(nameHash, now)
        return (offset,) + _STATE.unpack_from(self._map, offset + 8)

    def write(self, offset: int, anchor: float, taken: float, last: float) -> None:
        """
        Write a bucket's state back to its slot.  Call with the lock held.
        """
        _STATE.pack_into(self._map, offset + 8, anchor, taken, last)

    # -- the limits' buckets ------------------------------------------------------

    def bucket(self, name: str, rate: float, burst: float, clock: Any) -> SharedTokenBucket:
        """
        @param name: what the limit is, the same in every worker (such as
            C{"api/users/maxQPS/100"}); a different name is another bucket.
        @return: the bucket of a limit that is not keyed.
        """
        return SharedTokenBucket(rate, burst, clock, self, _nameHash(name.encode("utf-8")))

    def keyed(
        self, name: str, rate: float, burst: float, clock: Any, maxKeys: int
    ) -> SharedKeyedBuckets:
        """
        @return: the buckets of a limit keyed by client address or header
            (C{maxKeys} bounds the bucket objects this process keeps at
            hand; the table bounds the buckets).
        """
        return SharedKeyedBuckets(self, name, rate, burst, clock, maxKeys)


def _anonymousFile() -> int:
    memfd = getattr(os, "memfd_create", None)
    if memfd is not None:
        try:
            # Inherited by the workers it is passed to (Twisted closes
            # every other descriptor in the processes it starts).
            return memfd("gateway-buckets", 0)
        except OSError:
            pass
    directory = "/dev/shm" if os.path.isdir("/dev/shm") else None
    fd, path = tempfile.mkstemp(prefix="gateway-buckets-", dir=directory)
    os.unlink(path)
    return fd


def _locked(method: Any) -> Any:
    """
    A L{TokenBucket} method run on the state of the bucket's slot, read
    before and written back after, under the table's lock.
    """

    @functools.wraps(method)
    def shared(self: SharedTokenBucket, *args: Any) -> Any:
        table = self._table
        table.acquire()
        try:
            offset, self._anchor, self._taken, self._last = table.read(
                self._hash, float(self._clock.seconds())
            )
            result = method(self, *args)
            table.write(offset, self._anchor, self._taken, self._last)
            return result
        finally:
            table.release()

    return shared


class SharedTokenBucket(TokenBucket):
    """
    A L{TokenBucket} whose state is a slot of a L{SharedBuckets}: every
    decision reads it and writes it back under the table's lock.
    """

    __slots__ = ("_table", "_hash")

    def __init__(
        self, rate: float, burst: float, clock: Any, table: SharedBuckets, nameHash: int
    ) -> None:
        TokenBucket.__init__(self, rate, burst, clock)
        self._table = table
        self._hash = nameHash

    def __repr__(self) -> str:
        return f"<SharedTokenBucket rate={self.rate} burst={self.burst} hash={self._hash:016x}>"

    @property
    def lock(self) -> SharedBuckets:
        """
        The table whose lock makes decisions on several buckets one.
        """
        return self._table

    def _takeStatus(self, n: int = 1) -> Tuple[bool, int, float]:
        # One read and write of the slot for both.
        return (TokenBucket.take(self, n),) + TokenBucket.status(self)

    def takeOver(self, old: TokenBucket) -> None:
        """
        L{TokenBucket.takeOver}, on the table: the first worker that makes
        the changed limit's bucket gives it the level of the old one; the
        others find it made, and leave it with no more than either holds.
        An old bucket that has no slot (none took from it lately, or its
        slot was given away) carries nothing over.
        """
        if not isinstance(old, SharedTokenBucket) or old._table is not self._table:
            return
        table = self._table
        table.acquire()
        try:
            oldOffset = table.find(old._hash)
            if oldOffset is None:
                return
            old._anchor, old._taken, old._last = table.state(oldOffset)
            offset, self._anchor, self._taken, self._last = table.read(
                self._hash, float(self._clock.seconds())
            )
            now = self._now()
            self._holdAtMost(now, old._available(now))
            table.write(offset, self._anchor, self._taken, self._last)
        finally:
            table.release()

    takeStatus = _locked(_takeStatus)
    allows = _locked(TokenBucket.allows)
    take = _locked(TokenBucket.take)
    retryAfter = _locked(TokenBucket.retryAfter)
    tokens = _locked(TokenBucket.tokens)
    remaining = _locked(TokenBucket.remaining)
    status = _locked(TokenBucket.status)


class SharedKeyedBuckets(KeyedBuckets):
    """
    The buckets of one keyed limit in a L{SharedBuckets}, as
    L{gateway.protection.ratelimit.KeyedBuckets} are in one process.
    """

    __slots__ = ("_table", "_prefix")

    def __init__(
        self, table: SharedBuckets, name: str, rate: float, burst: float, clock: Any, maxKeys: int
    ) -> None:
        KeyedBuckets.__init__(self, rate, burst, clock, maxKeys)
        self._table = table
        self._prefix = name.encode("utf-8") + b"\x00"

    def _make(self, key: Hashable) -> SharedTokenBucket:
        return SharedTokenBucket(
            self.rate,
            self.burst,
            self._clock,
            self._table,
            _nameHash(self._prefix + _keyBytes(key)),
        )

    def _existing(self, key: Hashable) -> Optional[TokenBucket]:
        """
        @return: the L{SharedTokenBucket} of C{key} (its slot, if it has
            one, is what it holds).
        """
        return self._make(key)

    def get(self, key: Hashable) -> TokenBucket:
        """
        @return: the L{SharedTokenBucket} of C{key}.
        """
        bucket = self._buckets.get(key)
        if bucket is None:
            buckets = self._buckets
            if len(buckets) >= self.maxKeys:
                # The objects only point at the table: dropping them loses
                # nothing.
                buckets.clear()
            bucket = buckets[key] = self._make(key)
            if self._previous is not None:
                self._inherit(key, bucket)
        return bucket
