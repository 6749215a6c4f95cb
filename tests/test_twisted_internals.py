"""
The private names of Twisted that the engine (C{gateway/http}) relies on,
checked against the installed Twisted.

The engine is the one place allowed to touch Twisted's private names
(STYLE.md; L{tests.test_fence} keeps them there).  Some it probes at import
and falls back from when they changed (L{gateway.http.headers.RAW_HEADERS},
L{gateway.http.writesoon.SUPPORTED}): the gateway would then still work,
only slower, without a word.  Others it uses directly, and a change would
break it at run time only.  Each test here names the private name it
checks, so that a Twisted release that changes one fails here, loudly and by
name, with the engine module to update.
"""

from __future__ import annotations

import inspect
import select
from io import BytesIO
from typing import Any, Dict, List

from twisted.copyright import version as twistedVersion
from twisted.internet import abstract, tcp
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint, serverFromString
from twisted.internet.error import ConnectionDone, ConnectionFdescWentAway
from twisted.internet.interfaces import IPushProducer
from twisted.internet.testing import MemoryReactor
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import http, resource, server
from twisted.web.http_headers import Headers
from twisted.web.test.requesthelper import DummyChannel
from zope.interface.interface import InterfaceClass

from gateway.http import reactor as gatewayreactor
from gateway.http import writesoon
from gateway.http.headers import RAW_HEADERS, headerKey, rawHeadersOf
from gateway.http.listen import reusePortEndpoint
from gateway.http.request import GatewayRequest


def changed(name: str, engine: str, what: str) -> str:
    """
    @return: the message of a failure: Twisted changed C{name}, which
        C{engine} uses.
    """
    return (
        f"Twisted {twistedVersion} changed {name}, which {engine} relies on: {what}. "
        f"Update {engine} (and this test) to the new Twisted."
    )


def parameters(function: Any) -> List[str]:
    """
    @return: the names of C{function}'s parameters, C{self} included.
    """
    return list(inspect.signature(function).parameters)


class HeadersTests(SynchronousTestCase):
    """
    C{Headers._rawHeaders}: L{gateway.http.headers}, the upstream client's
    parser and L{GatewayRequest} read and fill it directly.
    """

    def test_probed(self) -> None:
        """
        The import-time probe finds C{Headers._rawHeaders} as the engine
        expects it (else the engine silently takes the slow path).
        """
        self.assertTrue(
            RAW_HEADERS,
            changed(
                "twisted.web.http_headers.Headers._rawHeaders",
                "gateway/http/headers.py",
                "RAW_HEADERS is false: not a dict of lists under addRawHeader's keys",
            ),
        )

    def test_semantics(self) -> None:
        """
        C{_rawHeaders} is a dict of lists keyed as C{addRawHeader} keys a
        name (L{headerKey}); what is put in it is what the public methods
        read, and what they write is in it.
        """
        headers = Headers()
        headers.addRawHeader(b"X-Thing", b"1")
        raw = headers._rawHeaders
        what = changed(
            "twisted.web.http_headers.Headers._rawHeaders", "gateway/http/headers.py", ""
        )
        self.assertIsInstance(raw, dict, what)
        self.assertEqual(raw, {headerKey(b"x-thing"): [b"1"]}, what)
        self.assertIs(rawHeadersOf(headers), raw, what)
        raw[headerKey(b"content-length")] = [b"3"]
        self.assertEqual(headers.getRawHeaders(b"Content-Length"), [b"3"], what)
        self.assertTrue(headers.hasHeader(b"content-length"), what)
        self.assertEqual(
            sorted(headers.getAllRawHeaders()),
            sorted([(headerKey(b"x-thing"), [b"1"]), (headerKey(b"content-length"), [b"3"])]),
            what,
        )
        headers.removeHeader(b"x-thing")
        self.assertEqual(raw, {headerKey(b"content-length"): [b"3"]}, what)


class _FakeFDReactor:
    """
    Just what a L{abstract.FileDescriptor} asks of its reactor when it
    writes.
    """

    def __init__(self) -> None:
        self.writers: List[Any] = []

    def addWriter(self, writer: Any) -> None:
        self.writers.append(writer)

    def removeWriter(self, writer: Any) -> None:
        self.writers.remove(writer)


class _RecordingDescriptor(abstract.FileDescriptor):
    """
    A file descriptor whose socket is a list.
    """

    def __init__(self, reactor: Any) -> None:
        super().__init__(reactor=reactor)
        self.sent: List[bytes] = []
        self.connected = 1

    def writeSomeData(self, data: bytes) -> int:
        self.sent.append(bytes(data))
        return len(data)


class WriteBufferTests(SynchronousTestCase):
    """
    C{FileDescriptor}'s private write buffers: L{gateway.http.writesoon}
    fills them and sends them itself.
    """

    engine = "gateway/http/writesoon.py"

    def test_probed(self) -> None:
        """
        The import-time probe finds the buffers as the engine expects them
        (else every write takes the reactor's way, silently).
        """
        self.assertTrue(
            writesoon.SUPPORTED,
            changed(
                "twisted.internet.abstract.FileDescriptor's write buffers",
                self.engine,
                "writesoon.SUPPORTED is false",
            ),
        )

    def test_names(self) -> None:
        """
        The buffers, flags and methods L{writesoon} reads and calls are there,
        of the types it expects.
        """
        descriptor = _RecordingDescriptor(_FakeFDReactor())
        expected: Dict[str, Any] = {
            "_tempDataBuffer": list,
            "_tempDataLen": int,
            "_writeDisconnected": bool,
            "_writeDisconnecting": bool,
            "dataBuffer": bytes,
            "offset": int,
        }
        for name, kind in expected.items():
            self.assertIsInstance(
                getattr(descriptor, name, None),
                kind,
                changed(f"twisted.internet.abstract.FileDescriptor.{name}", self.engine, ""),
            )
        self.assertTrue(
            callable(getattr(descriptor, "_maybePauseProducer", None)),
            changed("FileDescriptor._maybePauseProducer", self.engine, "not a method"),
        )
        self.assertIs(
            getattr(tcp.Connection, "_aborting", None),
            False,
            changed("twisted.internet.tcp.Connection._aborting", self.engine, "not False"),
        )

    def test_doWriteSendsTheTemporaryBuffer(self) -> None:
        """
        What is appended to C{_tempDataBuffer} (and counted in
        C{_tempDataLen}) is what the reactor's C{doWrite} sends, after what
        C{write} buffered before: L{writesoon} leaves leftovers to it.
        """
        reactor = _FakeFDReactor()
        descriptor = _RecordingDescriptor(reactor)
        descriptor.write(b"first ")
        descriptor._tempDataBuffer.append(b"second")
        descriptor._tempDataLen += len(b"second")
        descriptor.doWrite()
        self.assertEqual(
            b"".join(descriptor.sent),
            b"first second",
            changed("FileDescriptor._tempDataBuffer/_tempDataLen", self.engine, "not sent"),
        )
        self.assertEqual(descriptor._tempDataLen, 0)


class ReactorTests(SynchronousTestCase):
    """
    C{EPollReactor}'s private names: L{gateway.http.reactor.GatewayReactor}
    polls and dispatches events with them.
    """

    engine = "gateway/http/reactor.py"

    def setUp(self) -> None:
        if not gatewayreactor.AVAILABLE:
            raise self.skipTest("no epoll here")
        self.reactor = gatewayreactor.GatewayReactor()

        def close() -> None:
            self.reactor._poller.close()
            self.reactor.waker.connectionLost(None)

        self.addCleanup(close)

    def test_pollerAndTables(self) -> None:
        """
        The poller, the table of selectables by descriptor, the readers,
        and the event masks are there, as L{GatewayReactor.doPoll} uses
        them.
        """
        reactor = self.reactor
        self.assertTrue(
            callable(getattr(reactor._poller, "poll", None)),
            changed("EPollReactor._poller", self.engine, "no poll()"),
        )
        self.assertIsInstance(
            reactor._selectables, dict, changed("EPollReactor._selectables", self.engine, "")
        )
        self.assertIn(
            reactor.waker.fileno(),
            reactor._reads,
            changed("EPollReactor._reads", self.engine, "the waker is not in it"),
        )
        self.assertIs(
            reactor._selectables[reactor.waker.fileno()],
            reactor.waker,
            changed("EPollReactor._selectables", self.engine, "not keyed by descriptor"),
        )
        masks = (reactor._POLL_IN, reactor._POLL_OUT, reactor._POLL_DISCONNECTED)
        self.assertEqual(
            masks,
            (select.EPOLLIN, select.EPOLLOUT, select.EPOLLHUP | select.EPOLLERR),
            changed("EPollReactor._POLL_IN/_POLL_OUT/_POLL_DISCONNECTED", self.engine, ""),
        )

    def test_methods(self) -> None:
        """
        The methods L{GatewayReactor} calls or overrides take the arguments
        it gives them.
        """
        from twisted.internet.epollreactor import EPollReactor

        self.assertEqual(
            parameters(EPollReactor._disconnectSelectable)[:4],
            ["self", "selectable", "why", "isRead"],
            changed("EPollReactor._disconnectSelectable", self.engine, "other parameters"),
        )
        self.assertEqual(
            parameters(EPollReactor._doReadOrWrite),
            ["self", "selectable", "fd", "event"],
            changed("EPollReactor._doReadOrWrite", self.engine, "other parameters"),
        )
        self.assertEqual(
            parameters(EPollReactor.doPoll),
            ["self", "timeout"],
            changed("EPollReactor.doPoll", self.engine, "other parameters"),
        )

    def test_noFileDescriptor(self) -> None:
        """
        C{posixbase._NO_FILEDESC} is the reason a selectable whose descriptor
        went away is disconnected with.
        """
        from twisted.internet.posixbase import _NO_FILEDESC

        self.assertIsInstance(
            _NO_FILEDESC,
            ConnectionFdescWentAway,
            changed("twisted.internet.posixbase._NO_FILEDESC", self.engine, ""),
        )


class RequestTests(SynchronousTestCase):
    """
    C{twisted.web}'s request internals: L{GatewayRequest} does what
    C{server.Request.__init__}, C{process}, C{write} and C{_cleanup} do,
    with their private attributes.
    """

    engine = "gateway/http/request.py"

    def test_initSetsWhatTwistedSets(self) -> None:
        """
        Every attribute C{server.Request.__init__} sets, L{GatewayRequest}'s
        sets too (or its class has): it does not call it.
        """
        theirs = server.Request(DummyChannel())
        ours = GatewayRequest(DummyChannel())  # type: ignore[arg-type]
        missing = sorted(set(vars(theirs)) - set(vars(ours)) - set(dir(GatewayRequest)))
        self.assertEqual(
            missing,
            [],
            changed("server.Request.__init__", self.engine, f"it now also sets {missing}"),
        )

    def test_privateAttributes(self) -> None:
        """
        The private attributes L{GatewayRequest} reads are there, with the
        values a new request has.
        """
        request = server.Request(DummyChannel())
        expected = {
            "_disconnected": False,
            "_encoder": None,
            "_inFakeHead": False,
            "_forceSSL": 0,
            "_parsePOSTFormSubmission": True,
            "_adapterCache": {},
        }
        for name, value in expected.items():
            self.assertEqual(
                getattr(request, name, "(missing)"),
                value,
                changed(f"twisted.web.server.Request.{name}", self.engine, ""),
            )
        self.assertIsInstance(request._log, Logger, changed("server.Request._log", self.engine, ""))
        self.assertIsInstance(
            server.Site(resource.Resource())._parsePOSTFormSubmission,
            bool,
            changed("twisted.web.server.Site._parsePOSTFormSubmission", self.engine, ""),
        )
        self.assertEqual(
            parameters(server.Request._handleStar),
            ["self"],
            changed("server.Request._handleStar", self.engine, "other parameters"),
        )

    def test_disconnected(self) -> None:
        """
        C{_disconnected} becomes true when the connection is lost.
        """
        request = server.Request(DummyChannel())
        request.connectionLost(Failure(ConnectionDone()))
        self.assertIs(
            request._disconnected,
            True,
            changed("http.Request._disconnected", self.engine, "not set by connectionLost"),
        )

    def test_finishCallsCleanup(self) -> None:
        """
        C{finish} ends with C{_cleanup}, which L{GatewayRequest} overrides.
        """
        calls: List[str] = []

        class Recording(server.Request):
            def _cleanup(self) -> None:
                calls.append("cleanup")

        request = Recording(DummyChannel())
        request.method = b"GET"
        request.clientproto = b"HTTP/1.1"
        request.finish()
        self.assertEqual(
            calls, ["cleanup"], changed("http.Request._cleanup", self.engine, "not called")
        )

    def test_cleanupDoesWhatGatewayRequestDoes(self) -> None:
        """
        With no producer and no one notified, C{_cleanup} tells the channel,
        lets go of it, and closes and lets go of the body: what
        L{GatewayRequest._cleanup} does itself in that case, and nothing
        more.
        """
        done: List[Any] = []
        channel = DummyChannel()
        channel.requestDone = done.append  # type: ignore[method-assign]
        request = server.Request(channel)
        content = request.content = BytesIO(b"body")
        before = dict(vars(request))
        request._cleanup()
        after = vars(request)
        what = changed("http.Request._cleanup", self.engine, "it does more, or less")
        self.assertEqual(done, [request], what)
        self.assertTrue(content.closed, what)
        self.assertEqual(sorted(set(before) - set(after)), ["channel", "content"], what)
        # (It makes notifications a new empty list: equal to the old one.)
        self.assertEqual({k: v for k, v in after.items() if before.get(k) != v}, {}, what)

    def test_getContentFile(self) -> None:
        """
        C{http._getContentFile(length)} makes the file a request body is
        written to: in memory when small.
        """
        from twisted.web.http import _getContentFile

        what = changed("twisted.web.http._getContentFile", self.engine, "")
        self.assertEqual(parameters(_getContentFile), ["length"], what)
        small = _getContentFile(10)
        self.assertIsInstance(small, BytesIO, what)
        unknown = _getContentFile(None)
        self.addCleanup(unknown.close)
        unknown.write(b"x")
        unknown.seek(0, 0)
        self.assertEqual(unknown.read(), b"x", what)

    def test_encodingResource(self) -> None:
        """
        C{resource._IEncodingResource} is the interface of resources that
        encode their answers (C{getEncoder}); Twisted's wrapper provides it.
        """
        from twisted.web.resource import _IEncodingResource

        what = changed("twisted.web.resource._IEncodingResource", self.engine, "")
        self.assertIsInstance(_IEncodingResource, InterfaceClass, what)
        self.assertIn("getEncoder", list(_IEncodingResource.names()), what)
        wrapper = resource.EncodingResourceWrapper(resource.Resource(), [])
        self.assertTrue(_IEncodingResource.providedBy(wrapper), what)


class ChannelTests(SynchronousTestCase):
    """
    C{twisted.web.http}'s private helpers that
    L{gateway.http.channel.GatewayHTTPChannel} uses.
    """

    engine = "gateway/http/channel.py"

    def test_chunkedDecoder(self) -> None:
        """
        C{_ChunkedTransferDecoder(dataCallback, finishCallback)} gives the
        body's bytes to the first, what follows the body to the second, and
        raises C{_MalformedChunkedDataError} for a malformed chunk.
        """
        what = changed("twisted.web.http._ChunkedTransferDecoder", self.engine, "")
        data: List[bytes] = []
        rest: List[bytes] = []
        decoder = http._ChunkedTransferDecoder(data.append, rest.append)
        decoder.dataReceived(b"3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1")
        self.assertEqual((data, rest), ([b"abc"], [b"GET / HTTP/1.1"]), what)
        broken = http._ChunkedTransferDecoder(data.append, rest.append)
        with self.assertRaises(http._MalformedChunkedDataError, msg=what):
            broken.dataReceived(b"zz\r\n")

    def test_pullToPush(self) -> None:
        """
        C{_PullToPush(pullProducer, consumer)} is a push producer that the
        channel starts and stops streaming.
        """
        what = changed("twisted.web.http._PullToPush", self.engine, "")
        self.assertEqual(parameters(http._PullToPush), ["pullProducer", "consumer"], what)
        adapter = http._PullToPush(object(), object())
        self.assertTrue(IPushProducer.providedBy(adapter), what)
        for name in ("startStreaming", "stopStreaming"):
            self.assertTrue(callable(getattr(adapter, name, None)), what)


class EndpointTests(SynchronousTestCase):
    """
    The private fields of Twisted's TCP server endpoints, which
    L{gateway.http.listen.reusePortEndpoint} copies.
    """

    def test_fields(self) -> None:
        """
        A C{tcp:} or C{tcp6:} endpoint string gives an endpoint whose
        C{_port}, C{_backlog} and C{_interface} are the string's, and so
        are the L{reusePortEndpoint}'s.
        """
        what = changed(
            "TCP4ServerEndpoint/TCP6ServerEndpoint._port/_backlog/_interface",
            "gateway/http/listen.py",
            "",
        )
        reactor = MemoryReactor()
        for description, kind, interface in [
            ("tcp:8080:interface=127.0.0.1:backlog=7", TCP4ServerEndpoint, "127.0.0.1"),
            ("tcp6:8080:interface=\\:\\:1:backlog=7", TCP6ServerEndpoint, "::1"),
        ]:
            endpoint = serverFromString(reactor, description)
            self.assertIsInstance(endpoint, kind, what)
            fields = (endpoint._port, endpoint._backlog, endpoint._interface)
            self.assertEqual(fields, (8080, 7, interface), what)
            ours = reusePortEndpoint(reactor, description)
            self.assertEqual((ours._port, ours._backlog, ours._interface), fields)


class TLSTests(SynchronousTestCase):
    """
    C{TLSMemoryBIOProtocol._flushSendBIO} and C{._tlsConnection}:
    L{gateway.http.tls} replaces the first (its records go out with
    L{writesoon.writeSoon}), which reads the second.
    """

    def test_flushSendBIO(self) -> None:
        """
        Twisted's TLS protocol still moves OpenSSL's output to its transport
        in C{_flushSendBIO()}, reading C{_tlsConnection}; the engine's
        version sends the same bytes (a ClientHello, here).
        """
        from twisted.internet.testing import StringTransport
        from twisted.protocols import tls
        from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol

        from gateway.http.tls import UpstreamTLS, _SoonTLSProtocol

        source = inspect.getsource(TLSMemoryBIOProtocol)
        self.assertIn(
            "def _flushSendBIO(self)",
            source,
            changed(
                "twisted.protocols.tls.TLSMemoryBIOProtocol._flushSendBIO",
                "gateway/http/tls.py",
                "it is gone or takes arguments now",
            ),
        )
        self.assertIn("self._tlsConnection.bio_read(", inspect.getsource(tls))
        self.assertEqual(parameters(_SoonTLSProtocol._flushSendBIO), ["self"])
        from twisted.internet.protocol import Factory, Protocol
        from twisted.internet.task import Clock

        factory = TLSMemoryBIOFactory(
            UpstreamTLS("a.example"), True, Factory.forProtocol(Protocol), Clock()
        )
        factory.protocol = _SoonTLSProtocol
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        from OpenSSL.SSL import Connection

        self.assertIsInstance(protocol._tlsConnection, Connection)
        self.assertTrue(transport.value().startswith(b"\x16\x03"))
