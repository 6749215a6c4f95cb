"""
A connection to the Redis a gateway shares with its fleet, as a service.

L{RedisClient} keeps one connection to a Redis master and says whether it
is usable (L{RedisClient.available}), telling its listeners each time that
changes.  Every call has a deadline of a few milliseconds (C{timeout}): a
call Redis does not answer in time fails with L{RedisTimeout} and makes the
client unavailable at once, so that what depends on Redis (the fleet's rate
limits, L{gateway.protection.redisbuckets}) decides without it instead of
making requests wait.  While unavailable the client probes (C{PING}) every
C{probeInterval} seconds, connecting again when the connection is gone, and
is available again as soon as Redis answers a probe within C{timeout}.

Several servers (C{redis://A:6379,B:6379/0}) are tried in order, and the
one whose C{ROLE} is C{master} is used; a server that turns into a replica
(C{READONLY} replies after a failover) sends the client looking again.
With Sentinels (C{redis+sentinel://S1:26379,S2:26379/mymaster/0}) the
client asks them, in order, where the master is
(C{SENTINEL get-master-addr-by-name}), and checks C{ROLE} there too.

Why not a client library: the maintained Twisted client, txredisapi, reads
time from Twisted's global reactor (it binds C{reactor.callLater} when it is
imported), so neither a C{task.Clock} in the tests nor the reactor the
gateway picks at start-up drives its timeouts, and a reply timeout there
drops the whole connection.  The gateway needs few commands (C{EVALSHA},
C{PING}, C{ROLE}, C{AUTH}, C{SELECT}), a deadline of a few milliseconds per
call that leaves the connection in step, and its own failover rules; RESP2
is small (L{gateway.redis.protocol}), so this thin client on Twisted's own
protocol classes is the better fit.

A deadline that passes while the process itself was busy (a long turn of
the reactor) must not count against Redis: a reply already in the socket
is read before the call is given up (the timeout is checked one reactor
turn after it fires, after the turn's reads).
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface, implementer

from gateway.model.sharedlimits import RedisTarget
from gateway.redis.protocol import (
    Argument,
    ConnectionLost,
    RedisError,
    RedisProtocol,
    ReplyError,
)

__all__ = [
    "IRedisClient",
    "RedisClient",
    "RedisTimeout",
    "RedisUnavailable",
    "Script",
]

log = Logger()


class RedisUnavailable(RedisError):
    """
    There is no usable connection to a Redis master now.
    """


class RedisTimeout(RedisUnavailable):
    """
    Redis did not answer a call within its deadline.
    """


#: Replies that say this server cannot serve the gateway's writes (any
#: more): look for the master again.
_NOT_MASTER = frozenset(("READONLY", "MASTERDOWN", "LOADING", "MOVED"))


class Script:
    """
    A Lua script run with C{EVALSHA} (and C{EVAL} the first time a server
    does not know it).

    @ivar source: its Lua source.
    @ivar sha: its SHA1, as Redis names it.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode("utf-8")).hexdigest()


class IRedisClient(Interface):
    """
    A shared Redis, as the parts of a gateway that use it see it.
    """

    available = Attribute("Whether calls can be made now (connected to a master that answers).")

    def execute(*args, timeout=None):
        """
        Run one command.

        @param args: the command and its arguments (bytes, text, numbers).
        @param timeout: seconds to wait for the reply; by default the
            client's.
        @return: a Deferred of the reply; it fails with L{RedisUnavailable}
            (at once when the client is unavailable), L{RedisTimeout} or
            L{gateway.redis.protocol.ReplyError}.
        """

    def evalScript(script, keys, args, timeout=None):
        """
        Run a L{Script} on C{keys} with C{args}, as L{execute} runs a
        command.
        """

    def addListener(listener):
        """
        Call C{listener(available, reason)} each time L{available} changes.
        """

    def registerScript(script):
        """
        Load a L{Script} into every server connected to from now on, before
        the client says it is available (so that its first run is not
        slowed by its loading).
        """


def _tcpConnector(reactor: Any, connectTimeout: float) -> Callable[[str, int], Deferred]:
    from twisted.internet.endpoints import HostnameEndpoint, connectProtocol

    def connect(host: str, port: int) -> Deferred:
        endpoint = HostnameEndpoint(reactor, host.encode("idna"), port, timeout=connectTimeout)
        return connectProtocol(endpoint, RedisProtocol())

    return connect


@implementer(IRedisClient)
class RedisClient(Service):
    """
    The connection to one Redis master (see the module's documentation).

    @ivar available: whether calls can be made now.
    @ivar address: C{(host, port)} of the master in use, or L{None}.
    @ivar calls: the calls made.
    @ivar timeouts: the calls Redis did not answer in time.
    @ivar errors: the calls that failed otherwise (connection lost, error
        replies).
    """

    name = "redis"

    def __init__(
        self,
        target: RedisTarget,
        reactor: Any,
        timeout: float = 0.005,
        connectTimeout: float = 1.0,
        probeInterval: float = 0.25,
        connect: Optional[Callable[[str, int], Deferred]] = None,
    ) -> None:
        """
        @param target: where Redis is (L{gateway.model.sharedlimits.parseRedisURL}).
        @param reactor: an L{IReactorTime} (and L{IReactorTCP} unless
            C{connect} is given).
        @param timeout: seconds a call may wait for its reply.
        @param connectTimeout: seconds to connect to a server and hear its
            answers to the first commands.
        @param probeInterval: seconds between probes while unavailable.
        @param connect: C{connect(host, port)} returns a Deferred of a
            connected L{RedisProtocol}; by default, over TCP.
        """
        self._target = target
        self._reactor = reactor
        self.timeout = timeout
        self._connectTimeout = connectTimeout
        self._probeInterval = probeInterval
        self._connect = connect or _tcpConnector(reactor, connectTimeout)
        self._connection: Optional[RedisProtocol] = None
        self._listeners: List[Callable[[bool, str], None]] = []
        self._scripts: List[Script] = []
        self._attempt: Optional[Deferred] = None
        self._probing: Optional[Deferred] = None
        self._timer: Optional[Any] = None
        self.available = False
        self.address: Optional[Tuple[str, int]] = None
        self.calls = 0
        self.timeouts = 0
        self.errors = 0

    def __repr__(self) -> str:
        state = "available" if self.available else "unavailable"
        return f"<RedisClient {self.address} {state}>"

    # -- the service ------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._soon(0.0)

    def stopService(self) -> None:
        super().stopService()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        for attempt in (self._attempt, self._probing):
            if attempt is not None:
                attempt.cancel()
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
        self._setAvailable(False, "stopped")

    def addListener(self, listener: Callable[[bool, str], None]) -> None:
        self._listeners.append(listener)

    def registerScript(self, script: Script) -> None:
        """
        See L{IRedisClient.registerScript}.
        """
        if script not in self._scripts:
            self._scripts.append(script)

    def _setAvailable(self, available: bool, reason: str) -> None:
        if available == self.available:
            return
        self.available = available
        for listener in list(self._listeners):
            try:
                listener(available, reason)
            except Exception:
                log.failure("a Redis availability listener failed")

    # -- calls ------------------------------------------------------------------

    def execute(self, *args: Argument, timeout: Optional[float] = None) -> Deferred:
        """
        See L{IRedisClient.execute}.
        """
        connection = self._connection
        if connection is None or not self.available:
            return fail(RedisUnavailable("Redis is unavailable"))
        return self._call(connection, args, self.timeout if timeout is None else timeout, True)

    def evalScript(
        self,
        script: Script,
        keys: Sequence[Argument],
        args: Sequence[Argument],
        timeout: Optional[float] = None,
    ) -> Deferred:
        """
        See L{IRedisClient.evalScript}.
        """
        tail = (len(keys),) + tuple(keys) + tuple(args)
        d = self.execute("EVALSHA", script.sha, *tail, timeout=timeout)

        def unknown(failure: Failure) -> Any:
            if isinstance(failure.value, ReplyError) and failure.value.kind == "NOSCRIPT":
                return self.execute("EVAL", script.source, *tail, timeout=timeout)
            return failure

        return d.addErrback(unknown)

    def _call(
        self, connection: RedisProtocol, args: Tuple[Argument, ...], timeout: float, counted: bool
    ) -> Deferred:
        if counted:
            self.calls += 1
        d = connection.execute(*args)
        if d.called:
            return d.addErrback(self._failed, connection, counted)
        reactor = self._reactor
        timer = reactor.callLater(timeout, self._expireAfterReads, d)

        def done(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            return result

        d.addBoth(done)
        return d.addErrback(self._failed, connection, counted)

    def _expireAfterReads(self, d: Deferred) -> None:
        # One more turn: the reads of this turn come first, so a reply
        # that waited in the socket while the process was busy counts.
        self._reactor.callLater(0, self._expire, d)

    @staticmethod
    def _expire(d: Deferred) -> None:
        if not d.called:
            d.cancel()

    def _failed(self, failure: Failure, connection: RedisProtocol, counted: bool) -> Failure:
        if failure.check(CancelledError):
            if counted:
                self.timeouts += 1
            if connection is self._connection:
                self._lostTouch("Redis did not answer in time")
            return Failure(RedisTimeout("Redis did not answer in time"))
        error = failure.value
        if counted and not (isinstance(error, ReplyError) and error.kind == "NOSCRIPT"):
            # (A script a server does not know yet is sent again: no error.)
            self.errors += 1
        if isinstance(error, ReplyError) and error.kind in _NOT_MASTER:
            if connection is self._connection:
                log.warn(
                    "Redis at {address} is no master now: {error}",
                    address=self.address,
                    error=failure.value,
                )
                self._drop("not a master any more")
        elif failure.check(ConnectionLost):
            return Failure(RedisUnavailable(str(failure.value)))
        return failure

    # -- availability -----------------------------------------------------------

    def _lostTouch(self, reason: str) -> None:
        """
        Redis did not answer in time: unavailable until a probe is
        answered in time.
        """
        self._setAvailable(False, reason)
        self._soon(self._probeInterval)

    def _drop(self, reason: str) -> None:
        connection, self._connection = self._connection, None
        self.address = None
        if connection is not None:
            connection.close()
        self._setAvailable(False, reason)
        self._soon(0.0)

    def _soon(self, delay: float) -> None:
        if not self.running or self._timer is not None:
            return
        self._timer = self._reactor.callLater(delay, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if not self.running:
            return
        if self._connection is None:
            if self._attempt is None:
                self._attempt = Deferred.fromCoroutine(self._connectOnce())
                self._attempt.addBoth(self._attempted)
        elif not self.available and self._probing is None:
            self._probing = self._call(self._connection, ("PING",), self.timeout, False)
            self._probing.addBoth(self._probed)

    def _probed(self, result: Any) -> None:
        self._probing = None
        if isinstance(result, Failure):
            result.trap(RedisError, CancelledError)
            self._soon(self._probeInterval)
            return
        self._setAvailable(True, "Redis answered again")

    def _attempted(self, result: Any) -> None:
        self._attempt = None
        if isinstance(result, Failure):
            if not result.check(CancelledError):
                log.failure("connecting to Redis failed", result)
            result = None
        if result is None:
            self._soon(self._probeInterval)
            return
        connection, address = result
        if not self.running:
            connection.close()
            return
        self._connection = connection
        self.address = address
        connection.onLost = lambda: self._lost(connection)
        log.info("Redis master at {host}:{port}", host=address[0], port=address[1])
        self._setAvailable(True, f"connected to {address[0]}:{address[1]}")

    def _lost(self, connection: RedisProtocol) -> None:
        if self._connection is connection:
            self._connection = None
            self.address = None
            self._setAvailable(False, "connection to Redis lost")
            self._soon(0.0)

    # -- connecting ---------------------------------------------------------------

    async def _connectOnce(self) -> Optional[Tuple[RedisProtocol, Tuple[str, int]]]:
        """
        Try each candidate once.

        @return: a connection to a master that answered, and its address;
            L{None} when none did.
        """
        for address in await self._candidates():
            connection = await self._open(address)
            if connection is None:
                continue
            try:
                await self._handshake(connection)
            except (RedisError, CancelledError) as e:
                log.debug("Redis at {address} will not serve: {e}", address=address, e=e)
                connection.close()
                continue
            return connection, address
        return None

    async def _open(self, address: Tuple[str, int]) -> Optional[RedisProtocol]:
        d = self._connect(*address)
        timer = self._reactor.callLater(self._connectTimeout, d.cancel)
        try:
            connection: RedisProtocol = await d
        except Exception as e:
            log.debug("cannot connect to Redis at {address}: {e}", address=address, e=e)
            return None
        finally:
            if timer.active():
                timer.cancel()
        return connection

    async def _handshake(self, connection: RedisProtocol) -> None:
        target = self._target
        timeout = self._connectTimeout
        if target.password is not None:
            credentials: Tuple[Argument, ...] = (
                (target.username, target.password) if target.username else (target.password,)
            )
            await self._call(connection, ("AUTH",) + credentials, timeout, False)
        if target.db:
            await self._call(connection, ("SELECT", target.db), timeout, False)
        role = await self._call(connection, ("ROLE",), timeout, False)
        if not (isinstance(role, list) and role and role[0] == b"master"):
            raise RedisError(f"not a master (ROLE says {role[0] if role else role!r})")
        for script in self._scripts:
            await self._call(connection, ("SCRIPT", "LOAD", script.source), timeout, False)

    async def _candidates(self) -> Iterable[Tuple[str, int]]:
        target = self._target
        if target.sentinel is None:
            return target.endpoints
        found: List[Tuple[str, int]] = []
        for address in target.endpoints:
            connection = await self._open(address)
            if connection is None:
                continue
            try:
                reply = await self._call(
                    connection,
                    ("SENTINEL", "get-master-addr-by-name", target.sentinel),
                    self._connectTimeout,
                    False,
                )
            except (RedisError, CancelledError) as e:
                log.debug("Sentinel at {address} did not answer: {e}", address=address, e=e)
                continue
            finally:
                connection.close()
            if isinstance(reply, list) and len(reply) == 2:
                try:
                    master = (reply[0].decode("ascii"), int(reply[1]))
                except (AttributeError, UnicodeDecodeError, ValueError):
                    continue
                if master not in found:
                    found.append(master)
        return found
