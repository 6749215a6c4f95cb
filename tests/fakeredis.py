"""
A fake Redis for unit tests: L{FakeRedisServer} answers the commands the
gateway sends (C{PING}, C{ROLE}, C{AUTH}, C{SELECT}, C{EVALSHA}/C{EVAL} of
the lease script and of the response cache's scripts, C{GET}, C{DEL},
C{HGETALL}, C{SENTINEL get-master-addr-by-name}) over in-memory
connections, on a L{twisted.internet.task.Clock}, and can be made to hang,
refuse connections or drop them.

L{BucketModel} is the lease script's arithmetic in Python
(L{gateway.protection.redisbuckets.LEASE_SCRIPT}); the fake runs it, the
property test of the leases uses it as the fleet's bucket, and an
integration test checks that the real script gives the same answers.
L{CacheModel} is the cache's scripts (L{gateway.cache.redisstore}) in
Python, over keys with TTLs; the integration tests run the real ones.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.python.failure import Failure

from gateway.cache.redisstore import LOOKUP_SCRIPT, PURGE_SCRIPT, STORE_SCRIPT
from gateway.protection.redisbuckets import LEASE_SCRIPT
from gateway.redis.protocol import RedisProtocol, ReplyError, parseReply


class BucketModel:
    """
    The buckets of the lease script, in Python, with the same float
    operations in the same order as the Lua (both are IEEE doubles).

    @ivar tat: C{{key: the stored theoretical arrival time}}.
    """

    def __init__(self) -> None:
        self.tat: Dict[Any, float] = {}

    def run(
        self,
        key: Any,
        now: int,
        rate: float,
        burst: float,
        want: int,
        debt: int,
        back: int,
    ) -> List[int]:
        """
        @param now: Redis's clock, in whole microseconds.
        @return: C{[granted, level * 1000 floored, wait microseconds]}.
        """
        interval = 1000000 / rate
        tat = self.tat.get(key)
        if tat is None or tat < now:
            tat = now
        if back > 0:
            tat = tat - back * interval
            if tat < now:
                tat = now
        tat = tat + debt * interval
        level = (now - tat) / interval + burst
        granted = 0
        if want > 0 and level >= 1:
            granted = min(want, math.floor(level))
            tat = tat + granted * interval
            level = level - granted
        wait = 0
        need = max(1, want)
        if level < need:
            wait = math.ceil((need - level) * interval)
        if tat > now:
            self.tat[key] = float(math.ceil(tat))
        else:
            self.tat.pop(key, None)
        return [int(granted), int(math.floor(level * 1000)), int(wait)]


class CacheModel:
    """
    The response cache's scripts and commands in Python: strings and
    hashes by key, each with an expiry on the clock (milliseconds).
    """

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.data: Dict[bytes, Any] = {}
        self.expiry: Dict[bytes, float] = {}

    def _live(self, key: bytes) -> Any:
        when = self.expiry.get(key)
        if when is not None and when <= self.clock.seconds():
            self.data.pop(key, None)
            self.expiry.pop(key, None)
        return self.data.get(key)

    def delete(self, key: bytes) -> int:
        self.expiry.pop(key, None)
        return 1 if self.data.pop(key, None) is not None else 0

    def get(self, key: bytes) -> Any:
        return self._live(key)

    def hgetall(self, key: bytes) -> List[bytes]:
        out: List[bytes] = []
        for field, value in (self._live(key) or {}).items():
            out += [field, value]
        return out

    def _generation(self, keys: List[bytes], api: bytes) -> bytes:
        return (self._live(keys[0]) or {}).get(api, b"0")

    def lookup(self, keys: List[bytes], args: List[bytes]) -> Any:
        api, names, variant = args
        gen = self._generation(keys, api)
        h = self._live(keys[1])
        if h is None or h.get(b"g") != gen:
            if h is not None:
                self.delete(keys[1])
            return [gen]
        stored = h.get(b"v", b"")
        if stored != names:
            return [gen, stored]
        return [gen, stored, h.get(b"=" + variant)]

    def store(self, keys: List[bytes], args: List[bytes]) -> int:
        api, expected, names, variant, entry, ttl, most = args
        gen = self._generation(keys, api)
        if gen != expected:
            return 0
        h = self._live(keys[1])
        field = b"=" + variant
        if (
            h is None
            or h.get(b"g") != gen
            or h.get(b"v") != names
            or (field not in h and len(h) >= int(most) + 2)
        ):
            self.delete(keys[1])
            h = self.data[keys[1]] = {b"g": gen, b"v": names}
        h[field] = entry
        when = self.clock.seconds() + int(ttl) / 1000.0
        current = self.expiry.get(keys[1])
        if current is None or current < when:
            self.expiry[keys[1]] = when
        return 1

    def purge(self, keys: List[bytes], args: List[bytes]) -> int:
        generations = self.data.setdefault(keys[0], {})
        gen = int(generations.get(args[0], b"0")) + 1
        generations[args[0]] = b"%d" % (gen,)
        self.data[keys[1]] = b"%d" % (int(self.data.get(keys[1], b"0")) + 1,)
        return gen


#: The cache's scripts, by SHA: what L{CacheModel} runs for each.
_CACHE_SCRIPTS = {
    LOOKUP_SCRIPT.sha: ("lookup", LOOKUP_SCRIPT),
    STORE_SCRIPT.sha: ("store", STORE_SCRIPT),
    PURGE_SCRIPT.sha: ("purge", PURGE_SCRIPT),
}


def encodeReply(value: Any) -> bytes:
    """
    @return: C{value} in RESP2 (bytes: a bulk string; an C{int}; a list;
        L{None}: a null; a L{ReplyError}: an error; a C{str}: a status).
    """
    if isinstance(value, ReplyError):
        return b"-" + str(value).encode() + b"\r\n"
    if isinstance(value, str):
        return b"+" + value.encode() + b"\r\n"
    if isinstance(value, bool):
        raise TypeError(value)
    if isinstance(value, int):
        return b":%d\r\n" % (value,)
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    return b"*%d\r\n" % (len(value),) + b"".join(encodeReply(v) for v in value)


class _Transport:
    """
    The client's side of an in-memory connection: what it writes goes to
    the server.
    """

    disconnecting = False

    def __init__(self, server: FakeRedisServer, address: Tuple[str, int]) -> None:
        self.server = server
        self.address = address
        self.protocol: Optional[RedisProtocol] = None
        self.buffer = bytearray()
        self.held: List[List[bytes]] = []
        self.connected = True

    def write(self, data: bytes) -> None:
        if not self.connected:
            return
        self.buffer += data
        while True:
            parsed = parseReply(self.buffer)
            if parsed is None:
                break
            command, end = parsed
            del self.buffer[:end]
            self.server.received(self, command)

    def writeSequence(self, data: List[bytes]) -> None:
        self.write(b"".join(data))

    def reply(self, value: Any) -> None:
        if self.connected and self.protocol is not None:
            self.protocol.dataReceived(encodeReply(value))

    def loseConnection(self) -> None:
        self.drop()

    abortConnection = loseConnection

    def drop(self) -> None:
        if self.connected:
            self.connected = False
            self.server.connections.remove(self)
            if self.protocol is not None:
                self.protocol.connectionLost(Failure(ConnectionDone()))

    def getPeer(self) -> Any:
        return self.address

    def getHost(self) -> Any:
        return ("127.0.0.1", 50000)


class FakeRedisServer:
    """
    Redis servers (and Sentinels) in memory, by address.

    @ivar clock: the clock the scripts read (C{TIME}).
    @ivar model: the buckets.
    @ivar refusing: addresses that refuse connections.
    @ivar hanging: whether commands are held unanswered (L{release}
        answers them).
    @ivar roles: C{{address: role}} (C{master} unless said otherwise).
    @ivar sentinels: C{{address: (host, port) of the master}}.
    @ivar commands: every command received, as C{(address, [args])}.
    """

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.model = BucketModel()
        self.cache = CacheModel(clock)
        self.refusing: set = set()
        self.hanging = False
        self.roles: Dict[Tuple[str, int], bytes] = {}
        self.sentinels: Dict[Tuple[str, int], Tuple[str, int]] = {}
        self.scripts: set = set()
        self.connections: List[_Transport] = []
        self.commands: List[Tuple[Tuple[str, int], List[bytes]]] = []
        self.errors: Dict[bytes, str] = {}
        self.pendingConnects: List[Tuple[Deferred, Tuple[str, int]]] = []
        self.holdConnects = False

    def connect(self, host: str, port: int) -> Deferred:
        """
        What L{gateway.redis.client.RedisClient} takes as C{connect}.
        """
        address = (host, port)
        if address in self.refusing:
            return fail(ConnectionRefusedError())
        if self.holdConnects:
            d: Deferred = Deferred()
            self.pendingConnects.append((d, address))
            return d
        return succeed(self._open(address))

    def _open(self, address: Tuple[str, int]) -> RedisProtocol:
        transport = _Transport(self, address)
        protocol = RedisProtocol()
        transport.protocol = protocol
        self.connections.append(transport)
        protocol.makeConnection(transport)  # type: ignore[arg-type]
        return protocol

    def received(self, transport: _Transport, command: List[bytes]) -> None:
        self.commands.append((transport.address, command))
        if self.hanging:
            transport.held.append(command)
            return
        transport.reply(self.answer(transport.address, command))

    def release(self) -> None:
        """
        Answer every command held while hanging (and stop hanging).
        """
        self.hanging = False
        for transport in list(self.connections):
            held, transport.held = transport.held, []
            for command in held:
                transport.reply(self.answer(transport.address, command))

    def dropAll(self) -> None:
        """
        Close every connection (the server died).
        """
        for transport in list(self.connections):
            transport.drop()

    def names(self) -> List[bytes]:
        """
        @return: the names of the commands received, in order.
        """
        return [command[0].upper() for _, command in self.commands]

    def answer(self, address: Tuple[str, int], command: List[bytes]) -> Any:
        name = command[0].upper()
        if name in self.errors:
            return ReplyError(self.errors[name])
        if name == b"PING":
            return "PONG"
        if name in (b"AUTH", b"SELECT"):
            return "OK"
        if name == b"ROLE":
            return [self.roles.get(address, b"master"), 0, []]
        if name == b"SENTINEL":
            master = self.sentinels.get(address)
            if master is None:
                return None
            return [master[0].encode(), str(master[1]).encode()]
        if name == b"SCRIPT" and command[1].upper() == b"LOAD":
            sha = self._known(command[2].decode())
            if sha is None:
                return ReplyError("ERR unknown script")
            self.scripts.add(sha)
            return sha.encode()
        if name == b"EVALSHA":
            if command[1].decode() not in self.scripts:
                return ReplyError("NOSCRIPT No matching script. Please use EVAL.")
            return self._run(command[1].decode(), command[2:])
        if name == b"EVAL":
            sha = self._known(command[1].decode())
            if sha is None:
                return ReplyError("ERR unknown script")
            self.scripts.add(sha)
            return self._run(sha, command[2:])
        if name == b"GET":
            return self.cache.get(command[1])
        if name == b"DEL":
            return sum(self.cache.delete(key) for key in command[1:])
        if name == b"HGETALL":
            return self.cache.hgetall(command[1])
        return ReplyError(f"ERR unknown command '{name.decode()}'")

    @staticmethod
    def _known(source: str) -> Optional[str]:
        if source == LEASE_SCRIPT.source:
            return LEASE_SCRIPT.sha
        for sha, (_, script) in _CACHE_SCRIPTS.items():
            if source == script.source:
                return sha
        return None

    def _run(self, sha: str, tail: List[bytes]) -> Any:
        if sha == LEASE_SCRIPT.sha:
            return self._lease(tail)
        keys = int(tail[0])
        method = getattr(self.cache, _CACHE_SCRIPTS[sha][0])
        return method(list(tail[1 : 1 + keys]), list(tail[1 + keys :]))

    def _lease(self, tail: List[bytes]) -> Any:
        keys = int(tail[0])
        key = tail[1]
        rate, burst, want, debt, back = tail[1 + keys :]
        now = int(round(self.clock.seconds() * 1e6))
        return self.model.run(key, now, float(rate), float(burst), int(want), int(debt), int(back))
