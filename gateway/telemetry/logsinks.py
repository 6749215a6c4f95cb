"""
Where access log lines go (L{ISink}): a file (L{FileSink}), the standard
output (L{StandardOutputSink}) or a syslog daemon (L{SyslogSink}), each
written without blocking; L{openSink} opens the one a config names.

  - a file is opened with C{O_APPEND} and written whole batches at a time
    (one C{write(2)} of whole lines: several workers append to one file
    without ever mixing their lines);
  - a standard output that is a pipe or a terminal is written without
    blocking (a description of its own, opened with C{O_NONBLOCK}), in
    pieces of whole lines of at most C{PIPE_BUF} bytes, which the kernel
    keeps whole;
  - syslog gets one datagram per line.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import socket
import stat
import struct
import termios
import time
from typing import Callable, Optional, Tuple, Union

from twisted.logger import Logger
from zope.interface import Attribute, Interface, implementer

from gateway.model.accesslog import FACILITIES, AccessLogConfig, syslogAddress

log = Logger()

__all__ = [
    "FileSink",
    "ISink",
    "PipeReserved",
    "StandardOutputSink",
    "SyslogSink",
    "openSink",
]


class ISink(Interface):
    """
    Where access log lines go.
    """

    regular = Attribute("whether the output is a regular file (a short write then means failure)")
    atomic = Attribute(
        "the most bytes one write keeps whole among other processes' writes "
        "(PIPE_BUF for a pipe), or None for any number (a file opened O_APPEND)"
    )
    perLine = Attribute("whether each line must be written alone (a syslog datagram)")

    def write(data: bytes) -> int:
        """
        Write bytes without blocking.

        @return: how many were written.
        @raise BlockingIOError: when the output cannot take any now
            (L{PipeReserved} when what is left of a pipe is kept for
            others).
        @raise OSError: when it failed.
        """

    def pollable() -> Optional[int]:
        """
        @return: the file descriptor a reactor can watch to know when the
            output can take more (a pipe, a socket), or L{None} (a file).
        """

    def reopen() -> bool:
        """
        Open the output again.

        @return: whether there was something to open again (not for the
            standard output).
        @raise OSError: when it cannot be opened; the old one is kept.
        """

    def close() -> None:
        """
        Close the output.
        """


def _isDevNull(st: os.stat_result) -> bool:
    try:
        null = os.stat(os.devnull)
    except OSError:  # pragma: no cover
        return False
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == null.st_rdev


@implementer(ISink)
class FileSink:
    """
    A file, appended to (C{O_APPEND}): every write lands at the end of the
    file whichever process makes it, so workers share one file.  Made if
    missing (mode 0640 less the umask).  A FIFO works too, written without
    blocking in pieces of at most C{PIPE_BUF} bytes.

    @ivar path: the file's path.
    """

    perLine = False
    _FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = -1
        self.regular = True
        self.atomic: Optional[int] = None

    def open(self) -> None:
        """
        Open the file.

        @raise OSError: when it cannot be opened.
        """
        self._fd, self.regular = self._open()
        self.atomic = None if self.regular else select.PIPE_BUF

    def _open(self) -> Tuple[int, bool]:
        fd = os.open(self.path, self._FLAGS, 0o640)
        try:
            regular = stat.S_ISREG(os.fstat(fd).st_mode)
        except OSError:  # pragma: no cover
            os.close(fd)
            raise
        return fd, regular

    def write(self, data: bytes) -> int:
        return os.write(self._fd, data)

    def pollable(self) -> Optional[int]:
        return None if self.regular or self._fd < 0 else self._fd

    def reopen(self) -> bool:
        fd, regular = self._open()
        old, self._fd = self._fd, fd
        self.regular = regular
        self.atomic = None if regular else select.PIPE_BUF
        if old >= 0:
            os.close(old)
        return True

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __repr__(self) -> str:
        return f"<FileSink {self.path}>"


class PipeReserved(BlockingIOError):
    """
    A pipe could take more, but its last bytes are kept for the process's
    other writers (see L{StandardOutputSink}): try again later, rather
    than when the pipe says it is writable (it is).
    """


#: fcntl's F_GETPIPE_SZ (Linux; not in PyPy 3.9's fcntl module).
_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)


def _pipeCapacity(fd: int) -> Optional[int]:
    """
    @return: the size of a pipe's buffer, or L{None} when the system does not
        say (not Linux).
    """
    try:
        return int(fcntl.fcntl(fd, _F_GETPIPE_SZ))
    except OSError:
        return None


def _queued(fd: int) -> int:
    """
    @return: the bytes written to a pipe that its reader has not read yet.
    """
    try:
        return int(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0])
    except OSError:
        return 0


@implementer(ISink)
class StandardOutputSink:
    """
    The process's standard output (file descriptor 1), written without
    blocking and without changing the descriptor the rest of the process
    writes to (twistd's own log may go there, and must not see
    C{EAGAIN}):

      - a file: written as it is (a regular file does not block; workers
        that inherited it share its offset, and each write lands whole);
      - a pipe, a FIFO or a terminal: opened anew through
        C{/proc/self/fd/1} with C{O_NONBLOCK}, and written in pieces of
        whole lines of at most C{PIPE_BUF} bytes, which the kernel keeps
        whole among the writes of other processes (a line longer than that
        is written alone).  On a pipe, the last L{reserve} bytes of its
        buffer are left to the process's other writers: twistd's own log
        writes to the same pipe, blocking, and would hold the whole
        process up if the access log had filled it when its reader
        stalled;
      - a socket (systemd's journal): sent with C{MSG_DONTWAIT}.

    @ivar devNull: whether the standard output is C{/dev/null} (a daemon's):
        every line is then lost.
    @ivar reserve: bytes of a pipe's buffer the access log leaves free.
    """

    reserve = 16384

    perLine = False

    def __init__(self, fd: int = 1) -> None:
        self._stdout = fd
        self._fd = -1
        self._socket: Optional[socket.socket] = None
        self.regular = True
        self.atomic: Optional[int] = None
        self.devNull = False
        #: A pipe's buffer size, or None (not a pipe, or unknown).
        self._capacity: Optional[int] = None

    def open(self) -> None:
        st = os.fstat(self._stdout)
        self.devNull = _isDevNull(st)
        mode = st.st_mode
        if stat.S_ISREG(mode) or self.devNull:
            self._fd = os.dup(self._stdout)
            return
        self.regular = False
        self.atomic = select.PIPE_BUF
        if stat.S_ISSOCK(mode):
            self._socket = socket.socket(fileno=os.dup(self._stdout))
            return
        if stat.S_ISFIFO(mode):
            self._capacity = _pipeCapacity(self._stdout)
        try:
            self._fd = os.open(
                f"/proc/self/fd/{self._stdout}",
                os.O_WRONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0),
            )
        except OSError as e:
            # No /proc: the descriptor itself (a full pipe then blocks).
            log.warn(
                "proxy.accessLog: cannot open the standard output without blocking ({error}); "
                "a full pipe will hold the proxy up",
                error=e,
            )
            self._fd = os.dup(self._stdout)

    def write(self, data: bytes) -> int:
        if self._socket is not None:
            return self._socket.send(data, socket.MSG_DONTWAIT)
        capacity = self._capacity
        reserve = self.reserve
        if capacity is not None and reserve and _queued(self._fd) + len(data) > capacity - reserve:
            raise PipeReserved(errno.EAGAIN, "the pipe's last bytes are left to other writers")
        return os.write(self._fd, data)

    def pollable(self) -> Optional[int]:
        if self._socket is not None:
            return self._socket.fileno()
        return None if self.regular or self._fd < 0 else self._fd

    def reopen(self) -> bool:
        return False

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __repr__(self) -> str:
        return "<StandardOutputSink>"


@implementer(ISink)
class SyslogSink:
    """
    A syslog daemon: one datagram per line (RFC 3164: C{<PRI>Mmm dd
    hh:mm:ss HOST TAG: LINE}, the severity C{info}), on a UNIX datagram
    socket (C{/dev/log}) or over UDP, sent without blocking.  A daemon
    that went away (restarted) is connected to again at the next write.
    """

    regular = False
    atomic = None
    perLine = True

    def __init__(
        self,
        address: Union[str, Tuple[str, int]],
        facility: str = "local7",
        tag: str = "gateway",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.address = address
        self._priority = b"<%d>" % (FACILITIES[facility] * 8 + 6,)
        self._tag = tag.encode("ascii")
        self._host = socket.gethostname().split(".")[0].encode("ascii", "replace") or b"-"
        self._clock = clock
        self._socket: Optional[socket.socket] = None
        self._second = -1
        self._header = b""

    def open(self) -> None:
        address = self.address
        if isinstance(address, str):
            family = socket.AF_UNIX
        else:
            family = socket.getaddrinfo(address[0], address[1], 0, socket.SOCK_DGRAM)[0][0]
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect(address)
        except OSError:
            sock.close()
            raise
        self._socket = sock

    def _headerFor(self, second: int) -> bytes:
        if second != self._second:
            stamp = time.strftime("%b %d %H:%M:%S", time.localtime(second))
            if stamp[4] == "0":
                # RFC 3164: the day of the month padded with a space.
                stamp = stamp[:4] + " " + stamp[5:]
            self._header = (
                self._priority
                + stamp.encode("ascii")
                + b" "
                + self._host
                + b" "
                + self._tag
                + b": "
            )
            self._second = second
        return self._header

    def write(self, data: bytes) -> int:
        sock = self._socket
        if sock is None:
            self.open()
            sock = self._socket
            assert sock is not None
        message = self._headerFor(int(self._clock())) + data.rstrip(b"\n")
        try:
            sock.send(message)
        except BlockingIOError:
            raise
        except OSError:
            # The daemon went away (restarted: ECONNREFUSED, ENOTCONN):
            # connect again next time.
            self.close()
            raise
        return len(data)

    def pollable(self) -> Optional[int]:
        return self._socket.fileno() if self._socket is not None else None

    def reopen(self) -> bool:
        self.close()
        self.open()
        return True

    def close(self) -> None:
        sock, self._socket = self._socket, None
        if sock is not None:
            sock.close()

    def __repr__(self) -> str:
        return f"<SyslogSink {self.address!r}>"


def openSink(config: AccessLogConfig) -> Union[FileSink, StandardOutputSink, SyslogSink]:
    """
    Open the output C{config.path} names.

    @raise OSError: when it cannot be opened.
    """
    address = syslogAddress(config.path)
    sink: Union[FileSink, StandardOutputSink, SyslogSink]
    if address is not None:
        sink = SyslogSink(address, config.facility, config.tag)
    elif config.path == "-":
        sink = StandardOutputSink()
    else:
        sink = FileSink(config.path)
    sink.open()
    return sink
