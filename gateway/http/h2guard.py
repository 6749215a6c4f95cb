"""
Flood protection for HTTP/2 connections: what a client sends is read frame
header by frame header before the C{h2} state machine sees it, and each
kind of frame that costs the server work without being a request is taken
from a budget of the connection (L{HTTP2Limits}).

The attacks this answers (each with a CVE of 2019 or 2023 against some
server): C{PING} and C{SETTINGS} floods (every one is answered with an
acknowledgement, which a client that does not read makes the server
buffer), C{RST_STREAM} floods (the 2023 "rapid reset": a stream opened and
cancelled at once starts work the client never waits for, and no longer
counts against the concurrent streams), C{PRIORITY} floods (work on the
priority tree, for nothing), empty frames (C{DATA} without a byte,
C{CONTINUATION} fragments without a byte, frames of unknown types: each
costs a frame's processing and carries nothing) and C{CONTINUATION}
floods (a header block that never ends, or never stops growing, which a
server buffers until it does).  A budget is a token bucket: C{budget}
frames at once, earned back evenly over C{floodWindow} seconds, so a
client that behaves never meets it and one that floods meets it within a
window.  Reading the frame headers here costs a few byte operations per
frame, and spares the state machine the frames of a flood: the connection
ends before they are parsed.
"""

from __future__ import annotations

from typing import Optional

from twisted.internet.interfaces import IReactorTime

from gateway.model.limits import HTTP2Limits

__all__ = ["FrameBudget", "FrameGuard", "PREFACE"]

#: What an HTTP/2 client sends first (RFC 9113 3.4).
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

_HEADER = 9

# Frame types (RFC 9113 6) and flags.
_DATA = 0x0
_HEADERS = 0x1
_PRIORITY = 0x2
_RST_STREAM = 0x3
_SETTINGS = 0x4
_PUSH_PROMISE = 0x5
_PING = 0x6
_GOAWAY = 0x7
_WINDOW_UPDATE = 0x8
_CONTINUATION = 0x9
#: RFC 9218's PRIORITY_UPDATE: a priority frame too.
_PRIORITY_UPDATE = 0x10

_END_STREAM = 0x1
_ACK = 0x1
_END_HEADERS = 0x4

#: Frame types that are neither budgeted nor empty by nature.
_FREE = frozenset([_WINDOW_UPDATE, _GOAWAY, _PUSH_PROMISE])


class FrameBudget:
    """
    A token bucket of frames: C{size} at once, earned back at C{size /
    window} per second.
    """

    __slots__ = ("_size", "_rate", "_tokens", "_at", "_clock")

    def __init__(self, size: int, window: float, clock: IReactorTime) -> None:
        self._size = float(size)
        self._rate = size / window
        self._tokens = float(size)
        self._clock = clock
        self._at = clock.seconds()

    def take(self) -> bool:
        """
        @return: whether a frame was left in the budget (it is now spent).
        """
        tokens = self._tokens
        if tokens < 1.0:
            now = self._clock.seconds()
            tokens = min(self._size, tokens + (now - self._at) * self._rate)
            self._at = now
            if tokens < 1.0:
                self._tokens = tokens
                return False
        self._tokens = tokens - 1.0
        return True


class FrameGuard:
    """
    Reads the frame headers of what one client sends (after the connection
    preface), and spends the connection's budgets (see the module
    docstring).

    @ivar headerBlockSince: when the header block being received started
        (a C{HEADERS} frame without C{END_HEADERS}), or L{None} when none
        is: until it ends no other frame may come, so a client that stops
        in the middle holds the connection.
    """

    def __init__(self, limits: HTTP2Limits, clock: IReactorTime) -> None:
        """
        @param limits: the budgets, and the largest header list.
        @param clock: where the budgets' time comes from.
        """
        self._clock = clock
        window = limits.floodWindow
        self._resets = FrameBudget(limits.resetBudget, window, clock)
        self._pings = FrameBudget(limits.pingBudget, window, clock)
        self._settings = FrameBudget(limits.settingsBudget, window, clock)
        self._priority = FrameBudget(limits.priorityBudget, window, clock)
        self._empty = FrameBudget(limits.emptyFrameBudget, window, clock)
        self._maxContinuations = limits.maxContinuationFrames
        # Twice the header list the gateway answers (a list up to that is
        # answered 431, see HTTP2Limits), plus a frame's worth of
        # encoding overhead and padding.
        self._maxBlock = 2 * limits.maxHeaderListSize + 16384
        #: Bytes still to skip: the preface, then each frame's payload.
        self._skip = len(PREFACE)
        #: The start of a frame header that did not arrive whole.
        self._partial = b""
        self._blockBytes = 0
        self._continuations = 0
        self.headerBlockSince: Optional[float] = None

    def scan(self, data: bytes) -> Optional[str]:
        """
        Read the frame headers in C{data}, the next bytes the client sent.

        @return: why the connection must end (a flood), or L{None}.
        """
        if self._partial:
            data = self._partial + data
            self._partial = b""
        size = len(data)
        at = self._skip
        while at < size:
            end = at + _HEADER
            if end > size:
                self._partial = data[at:]
                self._skip = 0
                return None
            length = int.from_bytes(data[at : at + 3], "big")
            kind = data[at + 3]
            flags = data[at + 4]
            at = end + length
            reason = self._frame(kind, flags, length)
            if reason is not None:
                return reason
        self._skip = at - size
        return None

    def refused(self) -> Optional[str]:
        """
        Account for a stream the server refused (opened over the limit of
        concurrent streams): it spends the reset budget, as a stream the
        client resets does.

        @return: why the connection must end (a flood), or L{None}.
        """
        if self._resets.take():
            return None
        return "too many streams opened over the limit of concurrent streams"

    def _frame(self, kind: int, flags: int, length: int) -> Optional[str]:
        """
        Account for one frame.

        @return: why the connection must end, or L{None}.
        """
        if kind == _DATA:
            if not length and not flags & _END_STREAM and not self._empty.take():
                return "too many empty DATA frames"
            return None
        if kind == _HEADERS:
            if not flags & _END_HEADERS:
                self.headerBlockSince = self._clock.seconds()
                self._blockBytes = length
                self._continuations = 0
                if not length and not self._empty.take():
                    return "too many empty HEADERS frames"
            return None
        if kind == _CONTINUATION:
            self._continuations += 1
            self._blockBytes += length
            if self._continuations > self._maxContinuations:
                return "too many CONTINUATION frames in one header block"
            if self._blockBytes > self._maxBlock:
                return "header block too large"
            if flags & _END_HEADERS:
                self.headerBlockSince = None
            elif not length and not self._empty.take():
                return "too many empty CONTINUATION frames"
            return None
        if kind == _RST_STREAM:
            return None if self._resets.take() else "too many streams reset (RST_STREAM)"
        if kind == _PING:
            if flags & _ACK or self._pings.take():
                return None
            return "too many PING frames"
        if kind == _SETTINGS:
            if flags & _ACK or self._settings.take():
                return None
            return "too many SETTINGS frames"
        if kind == _PRIORITY or kind == _PRIORITY_UPDATE:
            return None if self._priority.take() else "too many PRIORITY frames"
        if kind in _FREE:
            return None
        # A frame of a type this server does not know: ignored by the
        # protocol, so it carries nothing.
        return None if self._empty.take() else "too many frames of unknown types"
