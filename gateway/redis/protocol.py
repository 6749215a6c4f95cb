"""
The Redis protocol (RESP2) on Twisted's L{Protocol}: commands out, replies
in, in order, on one connection.

L{RedisProtocol.execute} writes a command and returns a L{Deferred} of its
reply; commands may be sent before earlier replies came (pipelining), and
replies are matched to them in order.  A caller that stops waiting cancels
its Deferred: the reply, when it comes, is read and dropped, so the
connection stays in step.

Replies: a simple string (C{+OK}) is C{bytes}, an integer is C{int}, a bulk
string is C{bytes} or L{None}, an array is a C{list} (or L{None}), and an
error (C{-ERR ...}) fails the Deferred with L{ReplyError}.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Deque, List, Optional, Tuple, Union

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

__all__ = [
    "ConnectionLost",
    "ProtocolError",
    "RedisError",
    "RedisProtocol",
    "ReplyError",
    "encodeCommand",
    "parseReply",
]

#: A command's arguments: what L{encodeCommand} takes.
Argument = Union[bytes, str, int, float]


class RedisError(Exception):
    """
    Something went wrong talking to Redis.
    """


class ReplyError(RedisError):
    """
    Redis answered a command with an error (C{-ERR ...}, C{-NOSCRIPT ...}).

    @ivar kind: its first word (C{ERR}, C{NOSCRIPT}, C{READONLY}, ...).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.kind = message.split(" ", 1)[0]


class ConnectionLost(RedisError):
    """
    The connection went away before the reply came.
    """


class ProtocolError(RedisError):
    """
    Redis sent something that is not RESP, or a reply nothing asked for.
    """


def _argument(value: Argument) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bool):
        raise TypeError("a Redis argument is bytes, text or a number, not a bool")
    if isinstance(value, int):
        return b"%d" % (value,)
    return repr(float(value)).encode("ascii")


def encodeCommand(args: Tuple[Argument, ...]) -> bytes:
    """
    @return: the command C{args} as a RESP array of bulk strings.
    """
    parts = [b"*%d\r\n" % (len(args),)]
    for arg in args:
        data = _argument(arg)
        parts.append(b"$%d\r\n" % (len(data),))
        parts.append(data)
        parts.append(b"\r\n")
    return b"".join(parts)


#: The deepest nesting of arrays taken (Redis's own replies nest a few).
MAX_DEPTH = 32


#: The longest bulk string or array taken.
MAX_LENGTH = 512 * 1024 * 1024


def parseReply(
    buffer: Union[bytes, bytearray], start: int = 0, depth: int = 0
) -> Optional[Tuple[Any, int]]:
    """
    Read one reply from C{buffer} at C{start}.

    @return: C{(reply, end)}, or L{None} when the buffer does not hold all
        of it yet.  An error reply is a L{ReplyError} value (not raised).
    @raise ProtocolError: when the bytes are not RESP.
    """
    lineEnd = buffer.find(b"\r\n", start)
    if lineEnd < 0:
        if len(buffer) - start > 64 * 1024:
            raise ProtocolError("a reply line longer than 64 KiB")
        return None
    kind = buffer[start : start + 1]
    line = bytes(buffer[start + 1 : lineEnd])
    end = lineEnd + 2
    if kind == b"+":
        return line, end
    if kind == b"-":
        return ReplyError(line.decode("utf-8", "replace")), end
    try:
        number = int(line)
    except ValueError:
        raise ProtocolError(f"not a RESP reply: {bytes(buffer[start:lineEnd])[:80]!r}")
    if kind == b":":
        return number, end
    if number > MAX_LENGTH:
        raise ProtocolError(f"a reply of {number} items or bytes")
    if kind == b"$":
        if number < 0:
            return None, end
        if len(buffer) < end + number + 2:
            return None
        if buffer[end + number : end + number + 2] != b"\r\n":
            raise ProtocolError("a bulk string without its CRLF")
        return bytes(buffer[end : end + number]), end + number + 2
    if kind == b"*":
        if number < 0:
            return None, end
        if depth >= MAX_DEPTH:
            raise ProtocolError("arrays nested too deep")
        items: List[Any] = []
        for _ in range(number):
            parsed = parseReply(buffer, end, depth + 1)
            if parsed is None:
                return None
            item, end = parsed
            items.append(item)
        return items, end
    raise ProtocolError(f"not a RESP reply: {bytes(buffer[start:lineEnd])[:80]!r}")


class RedisProtocol(Protocol):
    """
    One connection to Redis (see the module's documentation).

    @ivar pending: the Deferreds of the commands sent and not answered
        yet, oldest first.
    @ivar onLost: called with no argument once the connection is lost
        (after the calls waiting failed), or L{None}.
    """

    onLost: Optional[Callable[[], None]] = None

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.pending: Deque[Deferred[Any]] = deque()
        self.connected = False
        self._lost: Optional[Failure] = None

    def connectionMade(self) -> None:
        self.connected = True

    def execute(self, *args: Argument) -> Deferred[Any]:
        """
        Send a command.

        @return: a Deferred of its reply; it fails with L{ReplyError} when
            Redis answers an error, with L{ConnectionLost} when the
            connection goes first.  Cancelling it stops the wait (the reply
            is dropped when it comes).
        """
        if not self.connected or self.transport is None:
            from twisted.internet.defer import fail

            return fail(ConnectionLost("not connected"))
        d: Deferred[Any] = Deferred()
        # Waiting before the write: a transport may deliver the reply
        # before write() returns (in memory, in the tests).
        self.pending.append(d)
        self.transport.write(encodeCommand(args))
        return d

    def dataReceived(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        start = 0
        pending = self.pending
        try:
            while start < len(buffer):
                parsed = parseReply(buffer, start)
                if parsed is None:
                    break
                reply, start = parsed
                if not pending:
                    raise ProtocolError("a reply nothing asked for")
                d = pending.popleft()
                if d.called:
                    # Its caller stopped waiting (cancelled).
                    continue
                if isinstance(reply, ReplyError):
                    d.errback(reply)
                else:
                    d.callback(reply)
        except ProtocolError as e:
            del buffer[:]
            self._failAll(Failure(e))
            if self.transport is not None:
                self.transport.loseConnection()
            return
        del buffer[:start]

    def _failAll(self, failure: Failure) -> None:
        pending, self.pending = self.pending, deque()
        for d in pending:
            if not d.called:
                d.errback(failure)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.connected = False
        self._failAll(
            Failure(ConnectionLost(str(reason.value) if reason is not None else "closed"))
        )
        if self.onLost is not None:
            self.onLost()

    def close(self) -> None:
        """
        Close the connection (the commands waiting fail with
        L{ConnectionLost}).
        """
        if self.transport is not None:
            self.transport.loseConnection()
