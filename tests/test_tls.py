"""
The engine's TLS (L{gateway.http.tls}), in memory: listeners choosing
certificates by SNI, upstream verification and its failures, and how the
upstream client reports them.  Handshakes run between two Twisted TLS
protocols over L{twisted.test.iosim}'s in-memory transports: no socket.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from OpenSSL import SSL
from tlsfixtures import CertificateAuthority, Issued
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.test.iosim import FakeTransport, connect
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from zope.interface.verify import verifyObject

from gateway.http.client import HTTP11UpstreamClient, request
from gateway.http.errors import UpstreamBroken, UpstreamTLSError
from gateway.http.site import LimitedSite
from gateway.http.tls import (
    ALPN_PROTOCOLS,
    HTTP11_ONLY,
    CertificateVerifyError,
    ServerTLS,
    UpstreamHandshakeTimeout,
    UpstreamTLS,
    _UpstreamTLSFactory,
    loadServerCertificate,
    selectProtocol,
    upstreamTLSFailure,
)


def served(issued: Issued, name: str, snis: List[str]) -> Any:
    return loadServerCertificate(name, [issued.certificate], issued.key, snis)


class Recorder(Protocol):
    """
    A client protocol that keeps what it received and why it ended.
    """

    def __init__(self) -> None:
        self.received = b""
        self.reason: Optional[Failure] = None
        self.made = False

    def connectionMade(self) -> None:
        self.made = True

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.reason = reason


class Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


def tlsPair(serverFactory: Any, client: UpstreamTLS, clock: Clock) -> Tuple[Recorder, Any, Any]:
    """
    Connect a client speaking TLS with C{client}'s settings to a server
    factory, in memory, and run the handshake.

    @return: C{(client protocol, its TLS wrapper, the pump)}.
    """
    recorder = Recorder()
    clientFactory = TLSMemoryBIOFactory(client, True, Factory.forProtocol(lambda: recorder), clock)
    # (Twisted's default protocol holds small writes for a reactor turn.)
    clientFactory.protocol = TLSMemoryBIOProtocol
    clientTLS = clientFactory.buildProtocol(None)
    serverTLS = serverFactory.buildProtocol(None)
    pump = connect(
        serverTLS,
        FakeTransport(serverTLS, isServer=True),
        clientTLS,
        FakeTransport(clientTLS, isServer=False),
        greet=False,
    )
    pump.flush()
    return recorder, clientTLS, pump


class ServerTLSTests(SynchronousTestCase):
    """
    L{ServerTLS} picks the certificate of the name a client asks for.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.ca = CertificateAuthority()
        cls.api = cls.ca.issue(["api.example.com"])
        cls.wild = cls.ca.issue(["*.example.org"])
        cls.special = cls.ca.issue(["special.example.org"])
        cls.fallback = cls.ca.issue(["fallback.example.net"])

    def setUp(self) -> None:
        self.clock = Clock()
        self.server = ServerTLS(self.clock)
        self.certificates = {
            "api": served(self.api, "api", ["api.example.com"]),
            "wild": served(self.wild, "wild", ["*.example.org"]),
            "special": served(self.special, "special", ["Special.example.org"]),
            "fallback": served(self.fallback, "fallback", []),
        }
        self.server.update(self.certificates.values(), None)

    def contextOf(self, name: str) -> Any:
        return self.certificates[name].context

    def test_interface(self) -> None:
        """
        L{ServerTLS} is an L{IOpenSSLServerConnectionCreator}.
        """
        from twisted.internet.interfaces import IOpenSSLServerConnectionCreator

        verifyObject(IOpenSSLServerConnectionCreator, self.server)

    def test_exactThenWildcard(self) -> None:
        """
        An exact name wins over the wildcard that covers it, whatever the
        case and a final dot; a wildcard stands for one label exactly.
        """
        contextFor = self.server.contextFor
        self.assertIs(contextFor(b"api.example.com"), self.contextOf("api"))
        self.assertIs(contextFor(b"API.Example.com."), self.contextOf("api"))
        self.assertIs(contextFor(b"special.example.org"), self.contextOf("special"))
        self.assertIs(contextFor(b"other.example.org"), self.contextOf("wild"))
        self.assertIsNone(contextFor(b"a.b.example.org"))
        self.assertIsNone(contextFor(b"example.org"))
        self.assertIsNone(contextFor(b"unknown.example.net"))
        self.assertIsNone(contextFor(None))

    def test_default(self) -> None:
        """
        With a default certificate, names nothing serves (and no name) get
        it; the others keep theirs.
        """
        self.server.update(self.certificates.values(), "fallback")
        self.assertIs(self.server.contextFor(b"unknown.example.net"), self.contextOf("fallback"))
        self.assertIs(self.server.contextFor(None), self.contextOf("fallback"))
        self.assertIs(self.server.contextFor(b"api.example.com"), self.contextOf("api"))
        self.server.update(self.certificates.values(), "missing")
        self.assertIsNone(self.server.contextFor(None))

    def test_updateReplaces(self) -> None:
        """
        L{ServerTLS.update} replaces the whole table: a certificate left out
        serves no more.
        """
        self.server.update([self.certificates["wild"]], None)
        self.assertIsNone(self.server.contextFor(b"api.example.com"))
        self.assertIs(self.server.contextFor(b"x.example.org"), self.contextOf("wild"))

    def handshake(self, serverName: str, trusted: Optional[CertificateAuthority] = None) -> Any:
        client = UpstreamTLS(serverName, trustRoots=[(trusted or self.ca).certificate])
        factory = self.server.wrap(Factory.forProtocol(Echo))
        return tlsPair(factory, client, self.clock)

    def test_handshakeServesTheNamedCertificate(self) -> None:
        """
        A real handshake: the client asking for a name by SNI gets the
        certificate of that name, verified (chain and name), speaks
        HTTP/1.1 by ALPN, and the server's connection is an
        L{ISSLTransport} (its requests are secure).
        """
        for name, expected in (("api.example.com", self.api), ("x.example.org", self.wild)):
            recorder, clientTLS, pump = self.handshake(name)
            self.assertTrue(recorder.made)
            clientTLS.write(b"ping")
            pump.flush()
            self.assertEqual(recorder.received, b"ping", name)
            peer = clientTLS.getPeerCertificate().to_cryptography()
            self.assertEqual(peer, expected.certificate)
            self.assertEqual(clientTLS.negotiatedProtocol, b"http/1.1")
            self.assertTrue(ISSLTransport.providedBy(pump.server))

    def test_noCertificateFailsTheHandshake(self) -> None:
        """
        A name no certificate serves, without a default, fails the
        handshake (and is counted).
        """
        recorder, clientTLS, pump = self.handshake("nothing.example.net")
        clientTLS.write(b"ping")
        pump.flush()
        self.assertEqual(recorder.received, b"")
        self.assertIsNotNone(recorder.reason)
        self.assertIsInstance(recorder.reason.value, SSL.Error)
        self.assertEqual(self.server.handshakesRefused, 1)

    def test_replacedCertificateKeepsConnections(self) -> None:
        """
        A connection made before an update keeps its certificate and goes
        on; the next handshake gets the new table.
        """
        recorder, clientTLS, pump = self.handshake("api.example.com")
        self.server.update([self.certificates["wild"]], None)
        clientTLS.write(b"still")
        pump.flush()
        self.assertEqual(recorder.received, b"still")
        recorder2, _, _ = self.handshake("api.example.com")
        self.assertIsNotNone(recorder2.reason)

    def test_alpn(self) -> None:
        """
        The listener chooses C{h2} when offered, else C{http/1.1}, and no
        protocol when the client offers none of its own; a listener made
        without HTTP/2 (its TLS connections say so) offers C{http/1.1}
        alone.
        """
        self.assertEqual(ALPN_PROTOCOLS, (b"h2", b"http/1.1"))
        self.assertEqual(selectProtocol(None, [b"h2", b"http/1.1"]), b"h2")  # type: ignore[arg-type]
        self.assertEqual(selectProtocol(None, [b"http/1.1", b"h2"]), b"h2")  # type: ignore[arg-type]
        self.assertEqual(selectProtocol(None, [b"http/1.1"]), b"http/1.1")  # type: ignore[arg-type]
        self.assertIs(selectProtocol(None, [b"spdy/3"]), SSL.NO_OVERLAPPING_PROTOCOLS)  # type: ignore[arg-type]

        class Connection:
            def get_app_data(self) -> Any:
                return Listener()

        class Listener:
            alpnProtocols = HTTP11_ONLY

        self.assertEqual(selectProtocol(Connection(), [b"h2", b"http/1.1"]), b"http/1.1")  # type: ignore[arg-type]
        self.assertIs(selectProtocol(Connection(), [b"h2"]), SSL.NO_OVERLAPPING_PROTOCOLS)  # type: ignore[arg-type]

    def test_h2OverTLS(self) -> None:
        """
        A client that offers C{h2} over a listener of a site gets it, and
        an HTTP/2 connection of the site serves it (its first bytes are
        the server's SETTINGS); with the listener made without HTTP/2, it
        gets C{http/1.1} and the HTTP/1.1 channel.
        """
        from h2.config import H2Configuration
        from h2.connection import H2Connection
        from h2.events import ResponseReceived

        from gateway.http.channel import GatewayHTTPChannel
        from gateway.http.h2connection import H2ServerConnection

        class H2First(UpstreamTLS):
            def clientConnectionForTLS(self, tlsProtocol: Any) -> Any:
                connection = super().clientConnectionForTLS(tlsProtocol)
                connection.set_alpn_protos([b"h2", b"http/1.1"])
                return connection

        site = LimitedSite(Resource(), reactor=self.clock)
        client = H2First("api.example.com", trustRoots=[self.ca.certificate])
        for http2, protocol, kind in (
            (True, b"h2", H2ServerConnection),
            (False, b"http/1.1", GatewayHTTPChannel),
        ):
            server = ServerTLS(self.clock, http2=http2)
            server.update(self.certificates.values(), None)
            factory = server.wrap(site)
            recorder, clientTLS, pump = tlsPair(factory, client, self.clock)
            self.assertEqual(clientTLS.negotiatedProtocol, protocol)
            if kind is H2ServerConnection:
                self.clock.advance(0)
                pump.flush()
                # A SETTINGS frame: type 4 on stream 0.
                self.assertEqual(recorder.received[3:4], b"\x04")
                self.assertEqual(len(site.http2Connections), 1)
                self.assertIsInstance(next(iter(site.http2Connections)), kind)
                # What the client sends goes to the HTTP/2 connection.
                h2client = H2Connection(H2Configuration(client_side=True))
                h2client.initiate_connection()
                h2client.send_headers(
                    1,
                    [(":method", "GET"), (":scheme", "https"), (":authority", "a"), (":path", "/")],
                    end_stream=True,
                )
                recorder.received = b""
                clientTLS.write(h2client.data_to_send())
                pump.flush()
                self.clock.advance(0)
                pump.flush()
                statuses = [
                    dict(e.headers)[b":status"]
                    for e in h2client.receive_data(recorder.received)
                    if isinstance(e, ResponseReceived)
                ]
                self.assertEqual(statuses, [b"404"])
            else:
                clientTLS.write(b"GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
                pump.flush()
                self.assertIn(b"HTTP/1.1 404", recorder.received)

    def test_siteOffersNoProtocols(self) -> None:
        """
        A factory that offers protocols of its own (a C{twisted.web} site
        offers C{h2} when the C{h2} library is installed) does not change
        what the listener negotiates: a client offering C{h2} first gets
        C{http/1.1}, the only protocol the gateway's channel speaks.
        """
        from twisted.internet.interfaces import IProtocolNegotiationFactory
        from zope.interface import implementer

        @implementer(IProtocolNegotiationFactory)
        class Offering(Factory):
            protocol = Echo

            def acceptableProtocols(self) -> List[bytes]:
                return [b"h2", b"http/1.1"]

        class H2First(UpstreamTLS):
            def clientConnectionForTLS(self, tlsProtocol: Any) -> Any:
                connection = super().clientConnectionForTLS(tlsProtocol)
                connection.set_alpn_protos([b"h2", b"http/1.1"])
                return connection

        client = H2First("api.example.com", trustRoots=[self.ca.certificate])
        factory = self.server.wrap(Offering())
        self.assertFalse(IProtocolNegotiationFactory.providedBy(factory.wrappedFactory))
        recorder, clientTLS, pump = tlsPair(factory, client, self.clock)
        self.assertTrue(recorder.made)
        self.assertEqual(clientTLS.negotiatedProtocol, b"http/1.1")

    def test_securePerSite(self) -> None:
        """
        A site served through L{ServerTLS.wrap} sees its requests as
        secure.
        """
        seen: List[bool] = []

        class Page(Resource):
            isLeaf = True

            def render_GET(self, request: Any) -> bytes:
                seen.append(request.isSecure())
                return b"ok"

        site = LimitedSite(Page(), reactor=self.clock)
        client = UpstreamTLS("api.example.com", trustRoots=[self.ca.certificate])
        recorder, clientTLS, pump = tlsPair(self.server.wrap(site), client, self.clock)
        clientTLS.write(b"GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
        pump.flush()
        self.assertEqual(seen, [True])
        self.assertIn(b"200 OK", recorder.received)


class UpstreamTLSTests(SynchronousTestCase):
    """
    L{UpstreamTLS} verifies a backend's chain and name, and says why it
    refused it.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.ca = CertificateAuthority()
        cls.stranger = CertificateAuthority("Stranger")

    def attempt(self, issued: Issued, client: UpstreamTLS) -> Optional[Failure]:
        server = ServerTLS(Clock())
        server.update([served(issued, "s", [])], "s")
        recorder, clientTLS, pump = tlsPair(server.wrap(Factory.forProtocol(Echo)), client, Clock())
        clientTLS.write(b"GET")
        pump.flush()
        if recorder.reason is None:
            self.assertEqual(recorder.received, b"GET")
        return recorder.reason

    def refusal(self, issued: Issued, client: UpstreamTLS) -> UpstreamTLSError:
        reason = self.attempt(issued, client)
        self.assertIsNotNone(reason)
        assert reason is not None
        error = upstreamTLSFailure(reason)
        self.assertIsInstance(error, UpstreamTLSError)
        assert error is not None
        return error

    def test_interface(self) -> None:
        """
        L{UpstreamTLS} is an L{IOpenSSLClientConnectionCreator}.
        """
        from twisted.internet.interfaces import IOpenSSLClientConnectionCreator

        verifyObject(IOpenSSLClientConnectionCreator, UpstreamTLS("a.example"))

    def test_verified(self) -> None:
        """
        A certificate of the trusted CA for the name (or the IP address)
        passes.
        """
        trusted = [self.ca.certificate]
        self.assertIsNone(
            self.attempt(self.ca.issue(["b.internal"]), UpstreamTLS("b.internal", True, trusted))
        )
        self.assertIsNone(
            self.attempt(self.ca.issue(["10.1.2.3"]), UpstreamTLS("10.1.2.3", True, trusted))
        )

    def test_failures(self) -> None:
        """
        An unknown CA, an expired certificate and a name mismatch each fail
        the handshake with their own kind and reason; the client's request
        never reaches the server.
        """
        trusted = [self.ca.certificate]
        cases = [
            (self.stranger.issue(["b.internal"]), "b.internal", "unknown-ca", "unknown CA"),
            (self.ca.issue(["b.internal"], expired=True), "b.internal", "expired", "has expired"),
            (self.ca.issue(["c.internal"]), "b.internal", "name-mismatch", "valid for c.internal"),
            (self.ca.issue(["10.1.2.4"]), "10.1.2.3", "name-mismatch", "not valid for '10.1.2.3'"),
        ]
        for issued, name, kind, words in cases:
            error = self.refusal(issued, UpstreamTLS(name, True, trusted))
            self.assertEqual(error.kind, kind, name)
            self.assertIn(words, error.reason)
            self.assertEqual(error.details, {"tls": kind})
            self.assertEqual(error.status, 502)

    def test_unverifiableName(self) -> None:
        """
        A name no certificate can be verified for (a wildcard, which the
        model refuses as C{serverName}) fails the handshake as a name
        mismatch, never with an unhandled error out of the TLS connection.
        """
        client = UpstreamTLS("*.b.internal", True, [self.ca.certificate])
        error = self.refusal(self.ca.issue(["*.b.internal", "x.b.internal"]), client)
        self.assertEqual(error.kind, "name-mismatch")
        self.assertIn("not valid for '*.b.internal'", error.reason)

    def test_notVerified(self) -> None:
        """
        With C{verify} off, any certificate goes.
        """
        self.assertIsNone(self.attempt(self.stranger.issue(["x"]), UpstreamTLS("y", verify=False)))

    def test_failureMapping(self) -> None:
        """
        L{upstreamTLSFailure} turns a verification failure into its kind, any
        other OpenSSL error into a failed handshake with OpenSSL's reason,
        and leaves other reasons alone.
        """
        error = upstreamTLSFailure(Failure(CertificateVerifyError("bad", "expired")))
        assert error is not None
        self.assertEqual((error.kind, error.reason), ("expired", "upstream TLS failed: bad"))
        error = upstreamTLSFailure(
            Failure(SSL.Error([("SSL routines", "", "tlsv13 alert certificate required")]))
        )
        assert error is not None
        self.assertEqual(error.kind, "handshake")
        self.assertIn("certificate required", error.reason)
        self.assertIsNone(upstreamTLSFailure(Failure(ValueError("x"))))

    def test_badClientCertificate(self) -> None:
        """
        A client certificate whose key is not its own is refused when the
        settings are made.
        """
        one, other = self.ca.issue(["a"], client=True), self.ca.issue(["b"], client=True)
        self.assertRaises(ValueError, UpstreamTLS, "x", True, None, ([one.certificate], other.key))


class HandshakeTimeoutTests(SynchronousTestCase):
    """
    A backend must complete the TLS handshake within the endpoint's
    handshake timeout (the engine's connect timeout): one that does not
    speak TLS fails its connection then, with a reason of its own.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.ca = CertificateAuthority()

    def pair(self, serverProtocol: Protocol, clock: Clock) -> Tuple[Recorder, Any, Any]:
        recorder = Recorder()
        clientFactory = _UpstreamTLSFactory(
            UpstreamTLS("b.internal", True, [self.ca.certificate]),
            Factory.forProtocol(lambda: recorder),
            clock,
            5.0,
        )
        clientTLS = clientFactory.buildProtocol(None)
        pump = connect(
            serverProtocol,
            FakeTransport(serverProtocol, isServer=True),
            clientTLS,
            FakeTransport(clientTLS, isServer=False),
            greet=False,
        )
        pump.flush()
        return recorder, clientTLS, pump

    def test_silentServer(self) -> None:
        """
        A server that takes the ClientHello and says nothing (a plain HTTP
        server waits for a request line) fails the connection after the
        timeout, which L{upstreamTLSFailure} reports as a C{handshake}
        failure naming the wait.
        """
        clock = Clock()
        silent = Recorder()
        recorder, _, pump = self.pair(silent, clock)
        clock.advance(4.9)
        pump.flush()
        self.assertIsNone(recorder.reason)
        clock.advance(0.2)
        pump.flush()
        self.assertTrue(silent.received.startswith(b"\x16\x03"))
        assert recorder.reason is not None
        self.assertIsInstance(recorder.reason.value, UpstreamHandshakeTimeout)
        error = upstreamTLSFailure(recorder.reason)
        assert error is not None
        self.assertEqual(error.kind, "handshake")
        self.assertIn("no TLS answer within 5 s", error.reason)

    def test_completedHandshakeKept(self) -> None:
        """
        A connection whose handshake completed is not touched when the
        timeout comes: it goes on carrying bytes.
        """
        clock = Clock()
        server = ServerTLS(clock)
        server.update([served(self.ca.issue(["b.internal"]), "s", [])], "s")
        serverTLS = server.wrap(Factory.forProtocol(Echo)).buildProtocol(None)
        recorder, clientTLS, pump = self.pair(serverTLS, clock)
        clock.advance(60)
        pump.flush()
        clientTLS.write(b"GET")
        pump.flush()
        self.assertIsNone(recorder.reason)
        self.assertEqual(recorder.received, b"GET")
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_throughTheClient(self) -> None:
        """
        Through the upstream client, a request to a backend that never
        answers the handshake fails with an L{UpstreamTLSError} of kind
        C{handshake} after the connect timeout (not at its own timeout, as
        a timeout).
        """
        reactor = MemoryReactorClock()
        client = HTTP11UpstreamClient(reactor, connectTimeout=3.0)
        d = request(
            client, _Backend(UpstreamTLS("a.internal")), b"GET", b"/x", Headers(), timeout=30.0
        )
        protocol = reactor.tcpClients[0][2].buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.assertNoResult(d)
        reactor.advance(3)
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionError("aborted")))
        failure = self.failureResultOf(d, UpstreamTLSError)
        self.assertEqual(failure.value.kind, "handshake")
        self.assertIn("no TLS answer within 3 s", failure.value.reason)


class _Backend:
    def __init__(self, tls: Optional[UpstreamTLS]) -> None:
        self.host = "127.0.0.1"
        self.port = 8443
        self.tls = tls


class ClientOverTLSTests(SynchronousTestCase):
    """
    L{HTTP11UpstreamClient} pools TLS backends apart and reports a failed
    handshake as an L{UpstreamTLSError}, never as a plain broken exchange.
    """

    def test_pooledApart(self) -> None:
        """
        The same address with and without TLS, or with other TLS settings,
        gets its own pool (its own connections).
        """
        reactor = MemoryReactorClock()
        client = HTTP11UpstreamClient(reactor)
        a, b = UpstreamTLS("a.internal"), UpstreamTLS("a.internal")
        for backend in (_Backend(None), _Backend(a), _Backend(b), _Backend(a)):
            request(client, backend, b"GET", b"/", Headers())
        self.assertEqual(len(client._pools), 3)
        self.assertEqual(len(reactor.tcpClients), 4)
        sent = []
        for _, _, factory, _, _ in reactor.tcpClients:
            transport = StringTransport()
            factory.buildProtocol(None).makeConnection(transport)
            sent.append(transport.value()[:5])
        self.assertEqual(sent[0], b"GET /")
        for hello in sent[1:]:
            self.assertTrue(hello.startswith(b"\x16\x03"), hello)

    def test_handshakeFailure(self) -> None:
        """
        A connection whose handshake fails (the server answered a
        ClientHello with plain HTTP) fails its request with
        L{UpstreamTLSError}, kind C{handshake}; the request is not sent
        in clear.
        """
        reactor = MemoryReactorClock()
        client = HTTP11UpstreamClient(reactor)
        d = request(client, _Backend(UpstreamTLS("a.internal")), b"GET", b"/x", Headers())
        factory = reactor.tcpClients[0][2]
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        hello = transport.value()
        self.assertTrue(hello.startswith(b"\x16\x03"), hello[:8])
        self.assertNotIn(b"GET /x", hello)
        protocol.dataReceived(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        protocol.connectionLost(Failure(ConnectionError("closed")))
        failure = self.failureResultOf(d, UpstreamTLSError)
        self.assertEqual(failure.value.kind, "handshake")
        self.assertNotIsInstance(failure.value, UpstreamBroken)


class LoadServerCertificateTests(SynchronousTestCase):
    """
    L{loadServerCertificate} makes a context, or says why OpenSSL refuses.
    """

    def test_mismatchedKey(self) -> None:
        """
        A key that is not the certificate's is refused with OpenSSL's
        reason, which never quotes the key.
        """
        ca = CertificateAuthority()
        one, other = ca.issue(["a"]), ca.issue(["b"])
        error = self.assertRaises(
            ValueError, loadServerCertificate, "x", [one.certificate], other.key, []
        )
        self.assertIn("OpenSSL refuses it", str(error))
        self.assertNotIn(other.keyBody()[:20], str(error))
