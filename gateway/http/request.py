"""
A lean L{twisted.web.server.Request} for the proxy site, and fast access to
L{Headers} for the proxy's hot path.

The proxy serves every request from one leaf resource and writes each
answer in one piece, so much of what a general C{twisted.web} request does
per request is wasted there: asking the transport for both addresses (a
system call), adapting it to L{ISSLTransport}, formatting the C{Date}
header, unquoting the path into C{postpath}, traversing the resource tree,
looking for a C{getContentFile} the site does not have (an exception),
writing the head and the body as separate writes, and a L{Deferred} for
L{notifyFinish}.  L{GatewayRequest} does the same work with less: what a
connection does not change is kept per connection, the date per second,
C{postpath} is made when read, the head and the first body bytes go out in
one write, and L{GatewayRequest.notifyDone} calls a function back instead
of firing a Deferred.  What it sends is byte for byte what
L{twisted.web.server.Request} sends; whatever it does not handle itself (an
encoder, a faked C{HEAD}, a channel that writes otherwise than
L{HTTPChannel} and L{gateway.http.channel.GatewayHTTPChannel}) goes the
general way.

L{Headers} canonicalises a name and sanitises every value on each
C{setRawHeaders}, and encodes the name again on each C{getRawHeaders}.  When
the installed Twisted keeps its values in a C{_rawHeaders} dict of lists
(checked once, at import: L{RAW_HEADERS}), L{rawHeadersOf} gives that dict,
to be read and written with the keys L{headerKey} computes, for values
already known to be sane (parsed by a channel or an upstream client, or
made by the gateway).
"""

from __future__ import annotations

import warnings
from typing import Callable, Dict, List, Optional, Tuple

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import (
    NO_BODY_CODES,
    NO_CONTENT,
    NOT_MODIFIED,
    HTTPChannel,
    _getContentFile,
    datetimeToString,
    parse_qs,
    toChunk,
    unquote,
)
from twisted.web.http_headers import Headers
from twisted.web.resource import IResource, _IEncodingResource

from gateway.http.bodystream import BodyStream
from gateway.http.headers import RAW_HEADERS, headerKey, httpDate, rawHeadersOf
from gateway.http.status import SERVER_NAME, PhrasedRequest

log = Logger()

# Names, not attributes of the module: twisted.web.http is a deprecation
# proxy whose every attribute read costs a Python call.

__all__ = [
    "GatewayRequest",
]

_SERVER = headerKey(b"server")


_DATE = headerKey(b"date")


_CONTENT_TYPE = headerKey(b"content-type")


_CONTENT_LENGTH = headerKey(b"content-length")


_TRANSFER_ENCODING = headerKey(b"transfer-encoding")


_COOKIE = headerKey(b"cookie")


_CHUNKED = [b"chunked"]

#: The status codes as a status line has them, spaces around (formatting
#: one costs more than looking it up).
_CODES = {code: b" %d " % (code,) for code in range(100, 600)}


_NO_BODY_CODES = NO_BODY_CODES


_HTTPChannel = HTTPChannel


#: Channel classes the fast write path may be used with (whether each is):
#: those that write to their transport as L{HTTPChannel} does.
_plainChannels: Dict[type, bool] = {}


def _isPlainChannel(channel: HTTPChannel) -> bool:
    kind = type(channel)
    plain = _plainChannels.get(kind)
    if plain is None:
        plain = False
        # twisted.web's channel, or one that names the class whose writes
        # go to the transport as they are (GatewayHTTPChannel).
        for base in (_HTTPChannel, getattr(kind, "plainWrites", None)):
            if (
                base is not None
                and isinstance(channel, base)
                and kind.writeHeaders is base.writeHeaders
                and kind.writeSequence is base.writeSequence
                and kind.write is base.write
            ):
                plain = True
        _plainChannels[kind] = plain
    return plain


def _connectionOf(channel: HTTPChannel) -> Tuple[IAddress, IAddress, bool]:
    """
    @return: C{(peer, host, secure)} of a channel's connection, asked once
        per connection (kept on the channel).
    """
    known: Optional[Tuple[IAddress, IAddress, bool]]
    known = channel.__dict__.get("_gatewayConnection")
    if known is None:
        known = channel.__dict__["_gatewayConnection"] = (
            channel.getPeer(),
            channel.getHost(),
            bool(channel.isSecure()),
        )
    return known


#: Resource -> whether it provides L{_IEncodingResource}: asked once per
#: resource (the root, for the gateway), not once per request.
_encoding: Dict[IResource, bool] = {}


def _isEncoding(resource: IResource) -> bool:
    try:
        encoding = _encoding.get(resource)
    except TypeError:  # unhashable
        return bool(_IEncodingResource.providedBy(resource))
    if encoding is None:
        encoding = bool(_IEncodingResource.providedBy(resource))
        if len(_encoding) < 64:
            _encoding[resource] = encoding
    return encoding


def _ignore(data: bytes) -> None:
    pass


class GatewayRequest(PhrasedRequest):
    """
    A L{server.Request} that costs less per request (see the module
    docstring), that adds no C{Content-Type} of its own (a proxy passes
    on what the upstream said, or nothing), and that sends the reason
    phrases of L{gateway.http.status}.
    """

    defaultContentType = None
    #: The body as it arrives, when the site streams bodies (the channel
    #: sets it: L{gateway.http.bodystream.BodyStream}); L{None} when the
    #: body is read whole into C{content} first.
    bodyStream: Optional[BodyStream] = None
    _postpath: Optional[List[bytes]] = None
    _doneHooks: Optional[List[Tuple[Callable[..., object], Tuple[object, ...]]]] = None

    def __init__(
        self,
        channel: HTTPChannel,
        queued: object = None,
        parsePOSTFormSubmission: Optional[bool] = None,
    ) -> None:
        # What http.Request.__init__ and server.Request.__init__ set, with
        # the connection's addresses asked once per connection.
        self.notifications: List[Deferred[None]] = []
        self.channel = channel
        self.client, self.host, self._secure = _connectionOf(channel)
        self.requestHeaders = Headers()
        self.received_cookies: Dict[bytes, bytes] = {}
        self.responseHeaders = Headers()
        self.cookies: List[bytes] = []
        self.transport = channel.transport
        self.queued = queued or False
        if parsePOSTFormSubmission is None:
            # (The channel's site, here and below, is what Site.buildProtocol
            # gives it: HTTPChannel does not declare it, hence the ignores.)
            parsePOSTFormSubmission = channel.site._parsePOSTFormSubmission  # type: ignore[attr-defined]
        self._parsePOSTFormSubmission = parsePOSTFormSubmission
        self._adapterCache: Dict[str, object] = {}

    def isSecure(self) -> bool:
        """
        Like L{http.Request.isSecure}, with the answer of the channel asked
        once per connection.
        """
        if self._forceSSL:
            return True
        if getattr(self, "channel", None) is None:
            return False
        return self._secure

    # -- paths, made when read ------------------------------------------------

    @property
    def postpath(self) -> Optional[List[bytes]]:
        """
        The path segments not yet consumed by resource traversal, unquoted;
        made from C{path} when first read.
        """
        postpath = self._postpath
        if postpath is None and self.path is not None and self.prepath is not None:
            postpath = self._postpath = [unquote(s) for s in self.path[1:].split(b"/")]
        return postpath

    @postpath.setter
    def postpath(self, value: Optional[List[bytes]]) -> None:
        self._postpath = value

    # -- from the channel ---------------------------------------------------------

    def gotLength(self, length: Optional[int]) -> None:
        getContentFile = getattr(self.channel.site, "getContentFile", None)  # type: ignore[attr-defined]
        if getContentFile is None:
            self.content = _getContentFile(length)
        else:
            self.content = getContentFile(length)

    def parseCookies(self) -> None:
        headers = self.requestHeaders
        if not RAW_HEADERS or type(headers) is not Headers or headers._rawHeaders.get(_COOKIE):
            super().parseCookies()

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if command == b"POST" and self._parsePOSTFormSubmission:
            # Form bodies are parsed into args the general way.
            super().requestReceived(command, path, version)
            return
        content = self.content
        assert content is not None  # made by gotLength, which the channel called first
        content.seek(0, 0)
        self.method = command
        self.uri = path
        self.clientproto = version
        query = path.find(b"?")
        if query == -1:
            self.path = path
            self.args = {}
        else:
            self.path = path[:query]
            self.args = parse_qs(path[query + 1 :], 1)
        self.process()

    def process(self) -> None:
        """
        Like L{server.Request.process}: the default C{Server} and C{Date}
        headers, then the resource; a leaf root is rendered without
        traversal.
        """
        site = self.site = self.channel.site  # type: ignore[attr-defined]
        date = httpDate(site.reactor.seconds())
        raw = rawHeadersOf(self.responseHeaders)
        if raw is None:
            self.setHeader(b"Server", SERVER_NAME)
            self.setHeader(b"Date", date)
        else:
            raw[_SERVER] = [SERVER_NAME]
            raw[_DATE] = [date]
        self.prepath = []
        self._postpath = None
        if self.path == b"*":
            self._handleStar()
            return
        try:
            root = site.resource
            if getattr(root, "isLeaf", False):
                self.sitepath: List[bytes] = []
                resource = root
            else:
                resource = site.getResourceFor(self)
            if _isEncoding(resource):
                encoder = resource.getEncoder(self)
                if encoder is not None:
                    self._encoder = encoder
            self.render(resource)
        except BaseException:
            self.processingFailed(Failure())

    # -- the answer ---------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """
        Like L{server.Request.write}, but the head and the first body bytes
        go out in one write, of one string.
        """
        if self.startedWriting:
            if self.finished:
                raise RuntimeError(
                    "Request.write called on a request after Request.finish was called."
                )
            if self._disconnected or self._encoder is not None:
                super().write(data)
                return
            self.sentLength += len(data)
            if data:
                if self.chunked:
                    self.channel.writeSequence(toChunk(data))
                else:
                    self.channel.write(data)
            return
        closes = getattr(self.channel, "closesAfterAnswer", None)
        if closes is not None and closes() and self.clientproto == b"HTTP/1.1":
            self.responseHeaders.setRawHeaders(b"connection", [b"close"])
        if (
            self.finished
            or self._disconnected
            or self._encoder is not None
            or self._inFakeHead
            or not _isPlainChannel(self.channel)
            or not isinstance(self.responseHeaders, Headers)
        ):
            super().write(data)
            return
        self._writeFirst(data)

    def _writeFirst(self, data: bytes) -> None:
        headers = self.responseHeaders
        code = self.code
        method = self.method
        if self.defaultContentType is not None and code not in (
            NOT_MODIFIED,
            NO_CONTENT,
        ):
            contentLength = headers.getRawHeaders(b"Content-Length")
            if headers.getRawHeaders(b"Content-Type") is None and not (
                contentLength and contentLength[0] == b"0"
            ):
                headers.setRawHeaders(b"Content-Type", [self.defaultContentType])
        self.startedWriting = 1
        version = self.clientproto
        raw = rawHeadersOf(headers)
        if raw is None:
            hasLength = headers.getRawHeaders(b"Content-Length") is not None
        else:
            hasLength = bool(raw.get(_CONTENT_LENGTH))
        if (
            version == b"HTTP/1.1"
            and not hasLength
            and method != b"HEAD"
            and code not in _NO_BODY_CODES
        ):
            if raw is None:
                headers.setRawHeaders(b"Transfer-Encoding", _CHUNKED)
            else:
                raw[_TRANSFER_ENCODING] = [b"chunked"]
            self.chunked = 1
        if self.lastModified is not None:
            if headers.hasHeader(b"Last-Modified"):
                self._log.info(
                    "Warning: last-modified specified both in header list and "
                    "lastModified attribute."
                )
            else:
                headers.setRawHeaders(b"Last-Modified", [datetimeToString(self.lastModified)])
        if self.etag is not None:
            headers.setRawHeaders(b"ETag", [self.etag])
        if self.cookies:
            headers.setRawHeaders(b"Set-Cookie", self.cookies)
        codeBytes = _CODES.get(code)
        if codeBytes is None:
            codeBytes = b" %d " % (code,)
        head = [version, codeBytes, self.code_message, b"\r\n"]
        extend = head.extend
        for name, values in headers.getAllRawHeaders():
            if len(values) == 1:
                # (Most headers have one value: no inner loop.)
                extend((name, b": ", values[0], b"\r\n"))
            else:
                for value in values:
                    extend((name, b": ", value, b"\r\n"))
        head.append(b"\r\n")
        if method == b"HEAD" or code in _NO_BODY_CODES:
            # No body may follow: later writes are dropped by this instance
            # attribute, without a call to the method (hence the ignore).
            self.write = _ignore  # type: ignore[method-assign]
        else:
            self.sentLength = len(data)
            if data:
                if self.chunked:
                    extend(toChunk(data))
                else:
                    head.append(data)
        # One piece: a transport checks each piece of a sequence it is given.
        self.channel.write(b"".join(head))

    def finish(self) -> None:
        if self._encoder is not None:
            super().finish()
            return
        if self._disconnected:
            raise RuntimeError(
                "Request.finish called on a request after its connection was lost; "
                "use Request.notifyFinish to keep track of this."
            )
        if self.finished:
            warnings.warn("Warning! request.finish called twice.", stacklevel=2)
            return
        if not self.startedWriting:
            self.write(b"")
        channel = self.channel
        if self.chunked:
            channel.write(b"0\r\n\r\n")
        factory = getattr(channel, "factory", None)
        if factory is not None:
            factory.log(self)
        self.finished = 1
        if not self.queued:
            self._cleanup()

    # -- the end ------------------------------------------------------------------

    def notifyDone(self, callback: Callable[..., object], *args: object) -> None:
        """
        Call C{callback(reason, *args)} once when this request is over: with
        L{None} when the answer was finished, with the L{Failure} when the
        connection was lost first.  Like L{notifyFinish}, without a
        L{Deferred}; an exception from C{callback} is logged.
        """
        if self._doneHooks is None:
            self._doneHooks = [(callback, args)]
        else:
            self._doneHooks.append((callback, args))

    def _runDoneHooks(self, reason: Optional[Failure]) -> None:
        hooks = self._doneHooks
        if hooks is None:
            return
        self._doneHooks = None
        for callback, args in hooks:
            try:
                callback(reason, *args)
            except Exception:
                log.failure("request end hook {callback} failed", callback=callback)

    def _cleanup(self) -> None:
        if self.producer or self.notifications:
            super()._cleanup()
        else:
            # http.Request._cleanup, for what is left to do.
            self.channel.requestDone(self)
            del self.channel
            content = self.content
            if content is not None:
                try:
                    content.close()
                except OSError:
                    pass
                del self.content
        if self._doneHooks is not None:
            self._runDoneHooks(None)

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        if self._doneHooks is not None:
            self._runDoneHooks(reason)
