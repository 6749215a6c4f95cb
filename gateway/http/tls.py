"""
TLS in the engine: the TLS side of the proxy's listeners, and TLS to
backends.  Twisted's memory-BIO TLS (L{TLSMemoryBIOFactory}) over any
stream endpoint, with pyOpenSSL contexts made here, through pyOpenSSL's
and Twisted's public API only.

Listeners (L{ServerTLS}): every connection starts on one base context,
which has no certificate; OpenSSL's server-name callback, once it read the
client's SNI, switches the connection to the context of the certificate
that serves that name: the exact name first, then a C{*.} wildcard for its
first label, then the default certificate, if any; with none, the
handshake fails (no certificate to offer).  L{ServerTLS.update} swaps the
whole table in one assignment: new handshakes use it at once, connections
already made keep the context they were switched to (a replaced
certificate never drops a connection).

What every context of this module speaks (L{secureContext}): TLS 1.2 and
1.3 only; for TLS 1.2 forward-secret AEAD suites only (ECDHE with
AES-GCM or ChaCha20-Poly1305: Mozilla's "intermediate" list without
finite-field DHE); for TLS 1.3 OpenSSL's suites, all AEAD; no compression,
no renegotiation.  The application protocol is negotiated in one place,
L{ALPN_PROTOCOLS} and L{selectProtocol}: C{h2} first, then C{http/1.1}
(C{http/1.1} alone on listeners made without HTTP/2); the connection's
channel follows the choice (L{gateway.http.negotiate}).

Session resumption, on listeners: both session tickets (stateless: TLS
1.3 resumes only so, TLS 1.2 clients that offer them) and a server-side
session cache (TLS 1.2 clients that resume by session id), each for
L{SESSION_LIFETIME} seconds.  Tickets are sealed with keys of the base
context, so they outlive certificate changes, but each process has its
own: with several workers, a client resumes when the kernel hands its new
connection to the worker that issued its ticket.

Backends (L{UpstreamTLS}): one context per backend's TLS settings, with
the trusted authorities (given, or the system's), the name sent by SNI and
verified (service_identity, as Twisted's own clients), and an optional
client certificate.  A verification failure fails the handshake before a
byte of the request leaves, with a L{CertificateVerifyError} that
L{upstreamTLSFailure} turns into the L{UpstreamTLSError} the client sees.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from cryptography import x509
from OpenSSL import SSL
from OpenSSL.crypto import X509
from service_identity import CertificateError, VerificationError
from service_identity.cryptography import (
    verify_certificate_hostname,
    verify_certificate_ip_address,
)
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IDelayedCall,
    ILoggingContext,
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    ISSLTransport,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import connectionDone
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from gateway.http.errors import UpstreamTLSError
from gateway.http.negotiate import ProtocolChoice
from gateway.http.writesoon import writeSoon

__all__ = [
    "ALPN_PROTOCOLS",
    "HTTP11_ONLY",
    "CertificateVerifyError",
    "ServerCertificate",
    "ServerTLS",
    "UpstreamHandshakeTimeout",
    "UpstreamTLS",
    "loadServerCertificate",
    "sealContext",
    "secureContext",
    "upstreamTLSFailure",
]

#: The application protocols TLS listeners offer by ALPN, most preferred
#: first: the one place where they are negotiated (a listener made
#: without HTTP/2 offers L{HTTP11_ONLY}; see L{selectProtocol}).
ALPN_PROTOCOLS: Tuple[bytes, ...] = (b"h2", b"http/1.1")

#: What a listener without HTTP/2 offers.
HTTP11_ONLY: Tuple[bytes, ...] = (b"http/1.1",)

#: What the engine asks backends for by ALPN: it speaks HTTP/1.1 to them.
UPSTREAM_ALPN: List[bytes] = [b"http/1.1"]

#: The TLS 1.2 cipher suites: forward secrecy and AEAD only.  (TLS 1.3's
#: are OpenSSL's defaults, all AEAD.)
TLS12_CIPHERS = (
    b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    b"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    b"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)

#: Seconds a backend has to complete the TLS handshake once connected, by
#: default (the engine gives its connect timeout).
HANDSHAKE_TIMEOUT = 5.0

#: Seconds a TLS session may be resumed (tickets and the session cache).
SESSION_LIFETIME = 3600

#: The session id context of every listener's context: one, so that a
#: session resumes whichever certificate's context the connection is on.
_SESSION_CONTEXT = b"gateway"

_OPTIONS = SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE | SSL.OP_NO_RENEGOTIATION


def secureContext() -> SSL.Context:
    """
    @return: a new context that speaks TLS 1.2 and 1.3 only, without
        compression or renegotiation; L{sealContext} sets its suites once
        the rest is set.
    """
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    context.set_options(_OPTIONS)
    return context


def sealContext(context: SSL.Context) -> SSL.Context:
    """
    Set the suites of L{TLS12_CIPHERS}: the last change made to a context
    (pyOpenSSL checks the list with a connection of the context, after
    which a context must not change).

    @return: C{context}.
    """
    context.set_cipher_list(TLS12_CIPHERS)
    return context


def selectProtocol(connection: SSL.Connection, offered: List[bytes]) -> Any:
    """
    The ALPN choice of a listener: the first of its protocols
    (L{ALPN_PROTOCOLS}, or L{HTTP11_ONLY} for a listener without HTTP/2,
    which its TLS connection says: see L{ServerTLS}) the client offers;
    none in common goes on without ALPN (HTTP/1.1).
    """
    protocols = ALPN_PROTOCOLS
    if connection is not None:
        # (Twisted's convention: a connection's app data is its TLS
        # protocol; ServerTLS sets it.)
        protocols = getattr(connection.get_app_data(), "alpnProtocols", ALPN_PROTOCOLS)
    for protocol in protocols:
        if protocol in offered:
            return protocol
    return SSL.NO_OVERLAPPING_PROTOCOLS


def _opensslReason(error: SSL.Error) -> str:
    """
    @return: OpenSSL's reasons of an error, e.g. C{"ee key too small"}.
    """
    reasons: List[str] = []
    for entry in error.args[0] if error.args and isinstance(error.args[0], list) else ():
        if isinstance(entry, tuple) and entry and entry[-1]:
            reasons.append(str(entry[-1]))
    if reasons:
        return "; ".join(reasons)
    return str(error) or type(error).__name__


class ServerCertificate:
    """
    A certificate a listener serves: its context, made once
    (L{loadServerCertificate}) and shared by every listener and handshake.

    @ivar name: the certificate resource's name.
    @ivar snis: the server names it serves (lower-case; C{*.} wildcards).
    @ivar context: its L{SSL.Context}.
    """

    __slots__ = ("name", "snis", "context")

    def __init__(self, name: str, snis: Sequence[str], context: SSL.Context) -> None:
        self.name = name
        self.snis = tuple(snis)
        self.context = context


def _serveSessions(context: SSL.Context) -> None:
    context.set_session_id(_SESSION_CONTEXT)
    context.set_alpn_select_callback(selectProtocol)


def loadServerCertificate(
    name: str, chain: Sequence[x509.Certificate], key: Any, snis: Sequence[str]
) -> ServerCertificate:
    """
    Make the context of a certificate to serve.

    @param chain: the certificate, then its intermediates.
    @param key: its C{cryptography} private key.
    @param snis: the names it serves.
    @raise ValueError: when OpenSSL refuses them (a key too weak for its
        security level, a key that does not match); the message is
        OpenSSL's reason, never key material.
    """
    context = secureContext()
    try:
        context.use_certificate(chain[0])
        for intermediate in chain[1:]:
            context.add_extra_chain_cert(intermediate)
        context.use_privatekey(key)
        context.check_privatekey()
    except SSL.Error as e:
        raise ValueError(f"OpenSSL refuses it: {_opensslReason(e)}")
    _serveSessions(context)
    return ServerCertificate(name, [s.lower() for s in snis], sealContext(context))


#: A listener's table: exact names, wildcard parents, the default.
_Table = Tuple[Dict[str, SSL.Context], Dict[str, SSL.Context], Optional[SSL.Context]]


class _SoonTLSProtocol(TLSMemoryBIOProtocol):
    """
    Twisted's TLS protocol, whose encrypted records go out with
    L{writeSoon} (at the end of the reactor's turn, without watching the
    socket for each write), as the engine's plain writes do.

    It replaces C{_flushSendBIO} (private: L{tests.test_twisted_internals}
    checks it), which moves what OpenSSL wrote to the memory BIO onto the
    TCP transport.
    """

    def _flushSendBIO(self) -> None:
        try:
            data = self._tlsConnection.bio_read(_BIO_READ)
        except SSL.WantReadError:
            # Nothing to send now.
            return
        transport = self.transport
        if transport is not None:
            writeSoon(transport, data)


#: What Twisted's TLS reads from the memory BIO at once.
_BIO_READ = 2**15


@implementer(ISSLTransport)
class _ServerTLSProtocol(_SoonTLSProtocol):
    """
    A TLS connection of a listener: Twisted's, declared an
    L{ISSLTransport} so that requests on it are secure
    (C{request.isSecure()}, C{X-Forwarded-Proto: https}).
    """

    @property
    def alpnProtocols(self) -> Tuple[bytes, ...]:
        """
        What the listener offers by ALPN (see L{selectProtocol}).
        """
        protocols: Tuple[bytes, ...] = getattr(self.factory, "alpnProtocols", ALPN_PROTOCOLS)
        return protocols


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """
    The TLS side of the proxy's listeners: certificates chosen by SNI,
    replaced live (see the module docstring).

    @ivar handshakesRefused: handshakes that found no certificate for the
        name asked (no default either).
    """

    def __init__(self, clock: IReactorTime, http2: bool = True) -> None:
        """
        @param clock: the reactor the TLS connections' timers use.
        @param http2: whether the listeners offer HTTP/2 (C{h2}) by ALPN,
            and serve it to the clients that take it.
        """
        self._clock = clock
        self.http2 = http2
        self._table: _Table = ({}, {}, None)
        self.handshakesRefused = 0
        base = self._base = secureContext()
        base.set_session_cache_mode(SSL.SESS_CACHE_SERVER)
        base.set_timeout(SESSION_LIFETIME)
        _serveSessions(base)
        base.set_tlsext_servername_callback(self._chooseCertificate)
        sealContext(base)

    def update(self, certificates: Iterable[ServerCertificate], default: Optional[str]) -> None:
        """
        Serve these certificates from now on (new handshakes; established
        connections keep theirs).

        @param default: the name of the certificate for clients whose
            name no certificate serves (or that send none), or L{None}:
            their handshakes fail.
        """
        exact: Dict[str, SSL.Context] = {}
        wildcard: Dict[str, SSL.Context] = {}
        fallback: Optional[SSL.Context] = None
        for certificate in certificates:
            for sni in certificate.snis:
                if sni.startswith("*."):
                    wildcard.setdefault(sni[2:], certificate.context)
                else:
                    exact.setdefault(sni, certificate.context)
            if certificate.name == default:
                fallback = certificate.context
        self._table = (exact, wildcard, fallback)

    def contextFor(self, serverName: Optional[bytes]) -> Optional[SSL.Context]:
        """
        @param serverName: the name the client sent by SNI, or L{None}.
        @return: the context of the certificate that serves it: exact
            name, then wildcard, then the default; L{None} for none.
        """
        exact, wildcard, fallback = self._table
        if serverName:
            name = serverName.decode("ascii", "replace").lower().rstrip(".")
            context = exact.get(name)
            if context is None:
                _, dot, parent = name.partition(".")
                if dot:
                    context = wildcard.get(parent)
            if context is not None:
                return context
        return fallback

    def _chooseCertificate(self, connection: SSL.Connection) -> None:
        context = self.contextFor(connection.get_servername())
        if context is None:
            # The base context holds no certificate: OpenSSL ends the
            # handshake with an alert.
            self.handshakesRefused += 1
            return
        connection.set_context(context)

    def serverConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        """
        See L{IOpenSSLServerConnectionCreator}: every connection starts on
        the base context (the SNI callback picks the certificate), its TLS
        protocol as its app data (ALPN reads what it offers from it).
        """
        connection = SSL.Connection(self._base, None)
        connection.set_app_data(tlsProtocol)
        return connection

    def wrap(self, factory: IProtocolFactory) -> TLSMemoryBIOFactory:
        """
        @param factory: what serves the connections (the proxy's site: a
            L{gateway.http.site.LimitedSite}, whose C{buildHTTP2} serves
            the clients that choose C{h2}).
        @return: the factory of TLS connections serving C{factory}, to
            listen with on any stream endpoint.
        """
        http2 = self.http2 and hasattr(factory, "buildHTTP2")
        tls = _ServerTLSFactory(self, False, _WithoutNegotiation(factory, http2), self._clock)
        tls.protocol = _ServerTLSProtocol
        tls.alpnProtocols = ALPN_PROTOCOLS if http2 else HTTP11_ONLY
        return tls


class _ServerTLSFactory(TLSMemoryBIOFactory):
    """
    The factory of a listener's TLS connections.

    @ivar alpnProtocols: what the listener offers by ALPN.
    """

    alpnProtocols: Tuple[bytes, ...] = ALPN_PROTOCOLS


@implementer(IProtocolFactory, ILoggingContext)
class _WithoutNegotiation:
    """
    The factory a listener's TLS wraps: the site's, without the
    L{IProtocolNegotiationFactory} that a C{twisted.web} site provides
    (offering C{h2} when the C{h2} library is installed), which some
    Twisted releases would apply to the shared base context of every
    connection.  ALPN is this module's (L{selectProtocol}); with HTTP/2, a
    connection's first protocol is a L{ProtocolChoice} that builds the
    channel ALPN chose.
    """

    def __init__(self, factory: IProtocolFactory, http2: bool = False) -> None:
        self._factory = factory
        self._http2 = http2

    def buildProtocol(self, addr: Any) -> Optional[IProtocol]:
        if self._http2:
            return ProtocolChoice(self._factory, addr, byALPN=True)
        buildHTTP11 = getattr(self._factory, "buildHTTP11", None)
        if buildHTTP11 is not None:
            # (Not buildProtocol: a site that takes h2c would look for its
            # preface in what is TLS.)
            protocol: Optional[IProtocol] = buildHTTP11(addr)
            return protocol
        return self._factory.buildProtocol(addr)

    def doStart(self) -> None:
        self._factory.doStart()

    def doStop(self) -> None:
        self._factory.doStop()

    def logPrefix(self) -> str:
        if ILoggingContext.providedBy(self._factory):
            prefix: str = self._factory.logPrefix()
            return prefix
        return type(self._factory).__name__


class CertificateVerifyError(SSL.Error):
    """
    A backend's certificate failed verification: raised in OpenSSL's
    verify callback, it ends the handshake (pyOpenSSL raises it again
    from the handshake, where Twisted's TLS reports it as the
    connection's end).

    @ivar kind: as L{UpstreamTLSError.kind}.
    @ivar message: what failed, for a human.
    """

    def __init__(self, message: str, kind: str) -> None:
        # OpenSSL's errors carry a list of (library, function, reason), as
        # Twisted's TLS reads them.
        super().__init__([("gateway", "certificate verify", message)])
        self.message = message
        self.kind = kind


#: X509_V_ERR_* codes (stable across OpenSSL releases) -> (kind, message).
_VERIFY_ERRORS: Dict[int, Tuple[str, str]] = {
    2: ("unknown-ca", "unable to get issuer certificate (unknown CA)"),
    7: ("bad-certificate", "certificate signature failure"),
    9: ("not-yet-valid", "certificate is not yet valid"),
    10: ("expired", "certificate has expired"),
    18: ("unknown-ca", "self-signed certificate (unknown CA)"),
    19: ("unknown-ca", "self-signed certificate in certificate chain (unknown CA)"),
    20: ("unknown-ca", "unable to get local issuer certificate (unknown CA)"),
    21: ("unknown-ca", "unable to verify the first certificate (unknown CA)"),
    23: ("bad-certificate", "certificate revoked"),
    24: ("bad-certificate", "invalid CA certificate"),
    26: ("bad-certificate", "unsupported certificate purpose"),
}


def _verifyFailure(errno: int, depth: int) -> CertificateVerifyError:
    kind, message = _VERIFY_ERRORS.get(
        errno, ("bad-certificate", f"certificate verify error {errno}")
    )
    if depth:
        message += f" (certificate {depth} of the chain)"
    return CertificateVerifyError("certificate verify failed: " + message, kind)


def _isIPAddress(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@implementer(IOpenSSLClientConnectionCreator)
class UpstreamTLS:
    """
    How the engine speaks TLS to one backend: a backend whose
    L{gateway.http.client.UpstreamAddress} has one as its C{tls} is pooled
    apart and reached over TLS.

    @ivar serverName: the name sent by SNI (none for an IP address) and
        verified.
    @ivar verify: whether the chain and the name are verified.
    """

    def __init__(
        self,
        serverName: str,
        verify: bool = True,
        trustRoots: Optional[Sequence[x509.Certificate]] = None,
        clientCertificate: Optional[Tuple[Sequence[x509.Certificate], Any]] = None,
    ) -> None:
        """
        @param serverName: the backend's host name or IP address.
        @param verify: verify its certificate chain and name.
        @param trustRoots: the authorities to trust; L{None} for the
            system's.
        @param clientCertificate: C{(chain, key)} to present (mutual TLS),
            or L{None}.
        @raise ValueError: when OpenSSL refuses the client certificate or
            an authority.
        """
        self.serverName = serverName.strip("[]")
        self.verify = verify
        self._ip = _isIPAddress(self.serverName)
        self._sni = None if self._ip else self.serverName.encode("idna")
        context = secureContext()
        try:
            if verify:
                context.set_verify(SSL.VERIFY_PEER, self._verifyCertificate)
                if trustRoots:
                    store = context.get_cert_store()
                    assert store is not None  # (a new context has one)
                    for root in trustRoots:
                        store.add_cert(X509.from_cryptography(root))
                else:
                    context.set_default_verify_paths()
            else:
                context.set_verify(SSL.VERIFY_NONE)
            if clientCertificate is not None:
                chain, key = clientCertificate
                context.use_certificate(chain[0])
                for intermediate in chain[1:]:
                    context.add_extra_chain_cert(intermediate)
                context.use_privatekey(key)
                context.check_privatekey()
        except SSL.Error as e:
            raise ValueError(f"OpenSSL refuses it: {_opensslReason(e)}")
        self._context = sealContext(context)

    def __repr__(self) -> str:
        return f"<UpstreamTLS {self.serverName} verify={self.verify}>"

    def _verifyCertificate(
        self, connection: SSL.Connection, certificate: X509, errno: int, depth: int, ok: int
    ) -> bool:
        """
        OpenSSL's verify callback: called for each certificate of the
        chain, the server's last (depth 0), whose name is checked then.

        @raise CertificateVerifyError: at the first failure.
        """
        if not ok:
            raise _verifyFailure(errno, depth)
        if depth == 0:
            leaf = certificate.to_cryptography()
            try:
                if self._ip:
                    verify_certificate_ip_address(leaf, self.serverName)
                else:
                    verify_certificate_hostname(leaf, self.serverName)
            except (VerificationError, CertificateError, ValueError):
                # (ValueError: service_identity refuses a name it cannot
                # verify a certificate for, such as a wildcard; the model
                # refuses those, but a name must never end a handshake
                # with an unhandled error.)
                raise CertificateVerifyError(
                    f"certificate name mismatch: it is not valid for {self.serverName!r}"
                    f" ({_namesOf(leaf)})",
                    "name-mismatch",
                )
        return True

    def clientConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        """
        See L{IOpenSSLClientConnectionCreator}.
        """
        connection = SSL.Connection(self._context, None)
        if self._sni is not None:
            connection.set_tlsext_host_name(self._sni)
        connection.set_alpn_protos(UPSTREAM_ALPN)
        return connection

    def wrap(
        self,
        endpoint: IStreamClientEndpoint,
        clock: IReactorTime,
        handshakeTimeout: float = HANDSHAKE_TIMEOUT,
    ) -> IStreamClientEndpoint:
        """
        @param endpoint: the backend's TCP endpoint.
        @param clock: the reactor the TLS connections' timers use.
        @param handshakeTimeout: seconds a backend has to complete the
            handshake once connected; past them the connection fails
            with L{UpstreamHandshakeTimeout}.
        @return: an endpoint whose connections speak TLS to the backend.
        """
        return _TLSClientEndpoint(self, endpoint, clock, handshakeTimeout)


def _namesOf(certificate: x509.Certificate) -> str:
    """
    @return: the names a certificate is valid for, for messages.
    """
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "it has no subjectAltName"
    shown = [str(getattr(name, "value", name)) for name in names][:5]
    return "valid for " + ", ".join(shown) if shown else "it names nothing"


@implementer(IStreamClientEndpoint)
class _TLSClientEndpoint:
    """
    TLS over another stream endpoint (as Twisted's C{wrapClientTLS}, with
    the reactor given rather than the global one).
    """

    def __init__(
        self,
        creator: UpstreamTLS,
        endpoint: IStreamClientEndpoint,
        clock: IReactorTime,
        handshakeTimeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        self._creator = creator
        self._endpoint = endpoint
        self._clock = clock
        self._handshakeTimeout = handshakeTimeout

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        tls = _UpstreamTLSFactory(
            self._creator, protocolFactory, self._clock, self._handshakeTimeout
        )
        return self._endpoint.connect(tls).addCallback(_wrappedProtocol)


class _UpstreamTLSFactory(TLSMemoryBIOFactory):
    """
    The factory of the TLS connections to one backend.

    @ivar handshakeClock: what times their handshakes.
    @ivar handshakeTimeout: seconds each has to complete its handshake.
    """

    def __init__(
        self,
        creator: UpstreamTLS,
        wrappedFactory: IProtocolFactory,
        clock: IReactorTime,
        handshakeTimeout: float,
    ) -> None:
        super().__init__(creator, True, wrappedFactory, clock)
        self.handshakeClock = clock
        self.handshakeTimeout = handshakeTimeout


class _UpstreamTLSProtocol(_SoonTLSProtocol):
    """
    A TLS connection to a backend, whose handshake must be over within its
    factory's C{handshakeTimeout}: a server that does not speak TLS mostly
    waits for a request line that never comes, and the request would only
    fail at its own timeout, as a timeout rather than as what it is.
    """

    _handshakeCall: Optional[IDelayedCall] = None
    factory: _UpstreamTLSFactory

    def connectionMade(self) -> None:
        super().connectionMade()
        factory = self.factory
        self._handshakeCall = factory.handshakeClock.callLater(
            factory.handshakeTimeout, self._handshakeTimedOut
        )

    def _handshakeTimedOut(self) -> None:
        self._handshakeCall = None
        connection = self.getHandle()
        if connection.get_finished() is None or connection.get_peer_finished() is None:
            # (Both Finished messages, sent and received: the handshake is
            # over, whichever side spoke last.)
            self.failVerification(Failure(UpstreamHandshakeTimeout(self.factory.handshakeTimeout)))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        call = self._handshakeCall
        if call is not None:
            self._handshakeCall = None
            if call.active():
                call.cancel()
        super().connectionLost(reason)


_UpstreamTLSFactory.protocol = _UpstreamTLSProtocol


class UpstreamHandshakeTimeout(SSL.Error):
    """
    A backend did not complete the TLS handshake in time (it does not
    speak TLS, or does not answer).
    """

    def __init__(self, timeout: float) -> None:
        self.message = (
            f"handshake failed: no TLS answer within {timeout:g} s (does the server speak TLS?)"
        )
        super().__init__([("gateway", "handshake", self.message)])


def _wrappedProtocol(protocol: IProtocol) -> IProtocol:
    wrapped: IProtocol = protocol.wrappedProtocol  # type: ignore[attr-defined]
    return wrapped


def upstreamTLSFailure(reason: Failure) -> Optional[UpstreamTLSError]:
    """
    @param reason: why a connection to a backend ended before its answer.
    @return: the L{UpstreamTLSError} to fail its request with when TLS is
        why (a certificate that failed verification, a failed handshake),
        else L{None}.
    """
    error = reason.value
    if isinstance(error, CertificateVerifyError):
        return UpstreamTLSError(error.message, error.kind)
    if isinstance(error, UpstreamHandshakeTimeout):
        return UpstreamTLSError(error.message, "handshake")
    if isinstance(error, SSL.Error):
        return UpstreamTLSError("handshake failed: " + _opensslReason(error), "handshake")
    return None
