"""
A strict decoder of chunked request bodies (RFC 9112 section 7.1), for the
gateway's channel (L{gateway.http.channel.GatewayHTTPChannel}).

It refuses what it can tell is wrong as soon as it has the bytes that show
it, without waiting for the end of a line that may never come:

  - a chunk size that takes the body past its limit: 413 as soon as its
    hexadecimal digits are in (before the end of its line, before any of
    its data);
  - a chunk-size line that is not C{1*HEXDIG [chunk-ext] CRLF} (a bare LF
    or CR, a space or a sign in the size, control characters in an
    extension) or longer than L{MAX_SIZE_LINE}: 400;
  - chunk data not followed by CRLF: 400;
  - a trailer line that is not C{field-name ":" field-value CRLF} (no colon,
    a name that is not a token, control characters, a bare LF or CR,
    obsolete line folding): 400; trailers over their size limit: 431.

Trailer fields are checked and dropped: the gateway forwards none.
"""

from __future__ import annotations

import re
from typing import Callable, Optional

__all__ = [
    "MAX_SIZE_LINE",
    "ChunkedDecoder",
    "ChunkedError",
]


MAX_SIZE_LINE = 1024


"""
The longest chunk-size line (size and extensions), in bytes, CRLF included.
"""


class ChunkedError(Exception):
    """
    A chunked body is refused with C{code} (400, 413 or 431) for C{message}.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


_SIZE = 0
_DATA = 1
_DATA_END = 2
_TRAILER = 3
_DONE = 4


#: What may follow a chunk size: extensions, C{BWS ";" BWS name [BWS "="
#: BWS value]}, repeated; checked for characters only (visible ASCII,
#: space, tab), each starting with C{;}.
_EXTENSIONS = re.compile(rb"(?:[ \t]*;[ \t]*[!-~][ \t!-~]*)*")


_HEX_DIGITS = re.compile(rb"[0-9A-Fa-f]*")


_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


#: Bytes a field value may not hold: controls but HTAB, and DEL.
_NOT_IN_VALUE = bytes([c for c in range(0x20) if c != 0x09] + [0x7F])


class ChunkedDecoder:
    """
    Decodes one chunked body, fed with L{dataReceived}.

    @ivar received: the bytes of chunk data announced so far (the sizes
        read, whether or not their data has arrived).
    """

    received = 0

    def __init__(
        self,
        dataCallback: Callable[[bytes], object],
        finishCallback: Callable[[bytes], object],
        limit: Optional[int] = None,
        maxTrailerSize: int = 32768,
    ) -> None:
        """
        @param dataCallback: called with each piece of body data.
        @param finishCallback: called once, after the last chunk and the
            trailers, with the bytes that followed the body.
        @param limit: the most body bytes accepted (413 past it), or
            L{None}.
        @param maxTrailerSize: the most bytes of trailer lines (431 past
            it).
        """
        self._dataCallback = dataCallback
        self._finishCallback = finishCallback
        self._limit = limit
        self._maxTrailerSize = maxTrailerSize
        self._state = _SIZE
        self._buffer = b""
        self._remaining = 0
        self._trailerSize = 0

    def dataReceived(self, data: bytes) -> None:
        """
        Decode the next bytes of the body.

        @raise ChunkedError: when they show the body is malformed or too
            large; the decoder is then of no further use.
        """
        if self._state == _DONE:
            raise RuntimeError("the chunked body is already complete")
        if self._buffer:
            data = self._buffer + data
            self._buffer = b""
        pos = 0
        end = len(data)
        while pos < end:
            state = self._state
            if state == _DATA:
                take = min(self._remaining, end - pos)
                piece = data if take == end and pos == 0 else data[pos : pos + take]
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._state = _DATA_END
                self._dataCallback(piece)
            elif state == _DATA_END:
                if end - pos < 2:
                    if data[pos:] != b"\r":
                        raise ChunkedError(400, "chunk data not followed by CRLF")
                    break
                if data[pos : pos + 2] != b"\r\n":
                    raise ChunkedError(400, "chunk data not followed by CRLF")
                pos += 2
                self._state = _SIZE
            elif state == _SIZE:
                lineEnd = data.find(b"\n", pos, pos + MAX_SIZE_LINE)
                if lineEnd == -1:
                    self._checkPartialSize(data[pos : pos + MAX_SIZE_LINE])
                    break
                self._sizeLine(data[pos:lineEnd])
                pos = lineEnd + 1
            elif state == _TRAILER:
                lineEnd = data.find(b"\n", pos)
                if lineEnd == -1:
                    self._checkPartialTrailer(data[pos:])
                    break
                line = data[pos:lineEnd]
                pos = lineEnd + 1
                if self._trailerLine(line):
                    self._state = _DONE
                    self._finishCallback(data[pos:])
                    return
            else:  # pragma: no cover (returned above)
                return
        if pos < end:
            self._buffer = data[pos:]

    # -- chunk sizes ------------------------------------------------------------

    def _checkPartialSize(self, partial: bytes) -> None:
        """
        Refuse what the start of a chunk-size line already shows to be
        wrong: a size past the limit, a line too long, a bad character.
        """
        if len(partial) >= MAX_SIZE_LINE:
            raise ChunkedError(400, "chunk size line too long")
        digits = _HEX_DIGITS.match(partial).group()  # type: ignore[union-attr]
        if digits:
            self._checkLimit(int(digits, 16))
        rest = partial[len(digits) :]
        if rest.endswith(b"\r"):
            rest = rest[:-1]
        if rest:
            if not digits:
                raise ChunkedError(400, "malformed chunk size")
            if _EXTENSIONS.fullmatch(rest) is None and (
                # A prefix of valid extensions may still be completed.
                _EXTENSIONS.fullmatch(rest + b"x") is None
                and _EXTENSIONS.fullmatch(rest + b";x") is None
            ):
                raise ChunkedError(400, "malformed chunk extension")

    def _sizeLine(self, line: bytes) -> None:
        """
        Act on a whole chunk-size line (without its LF).
        """
        if not line.endswith(b"\r") or b"\r" in line[:-1]:
            raise ChunkedError(400, "chunk size line not ended by CRLF")
        line = line[:-1]
        digits = _HEX_DIGITS.match(line).group()  # type: ignore[union-attr]
        if not digits:
            raise ChunkedError(400, "malformed chunk size")
        if _EXTENSIONS.fullmatch(line, len(digits)) is None:
            raise ChunkedError(400, "malformed chunk extension")
        size = int(digits, 16)
        self._checkLimit(size)
        self.received += size
        if size:
            self._remaining = size
            self._state = _DATA
        else:
            self._state = _TRAILER

    def _checkLimit(self, size: int) -> None:
        limit = self._limit
        if limit is not None and self.received + size > limit:
            raise ChunkedError(413, f"request body larger than {limit} bytes")

    # -- trailers ---------------------------------------------------------------

    def _countTrailer(self, size: int) -> None:
        if self._trailerSize + size > self._maxTrailerSize:
            raise ChunkedError(431, "request trailer fields too large")

    def _checkPartialTrailer(self, partial: bytes) -> None:
        """
        Refuse what the start of a trailer line already shows to be wrong.
        """
        self._countTrailer(len(partial))
        if partial.endswith(b"\r"):
            partial = partial[:-1]
        if not partial:
            return
        self._checkField(partial, complete=False)

    def _trailerLine(self, line: bytes) -> bool:
        """
        Act on a whole trailer line (without its LF).

        @return: whether it was the empty line that ends the body.
        """
        self._countTrailer(len(line) + 1)
        self._trailerSize += len(line) + 1
        if not line.endswith(b"\r") or b"\r" in line[:-1]:
            raise ChunkedError(400, "trailer line not ended by CRLF")
        line = line[:-1]
        if not line:
            return True
        self._checkField(line, complete=True)
        return False

    def _checkField(self, line: bytes, complete: bool) -> None:
        """
        Check a trailer field line, or the start of one.

        @raise ChunkedError: 400 when it is not (the start of) C{name:
            value}.
        """
        if line[:1] in (b" ", b"\t"):
            raise ChunkedError(400, "obsolete line folding in the trailers")
        if b"\r" in line:
            raise ChunkedError(400, "bare CR in the trailers")
        name, colon, value = line.partition(b":")
        if not colon:
            if complete or _TOKEN.fullmatch(name) is None:
                raise ChunkedError(400, "malformed trailer line")
            return
        if _TOKEN.fullmatch(name) is None:
            raise ChunkedError(400, "malformed trailer field name")
        if value.translate(None, _NOT_IN_VALUE) != value:
            raise ChunkedError(400, "invalid character in a trailer field")
