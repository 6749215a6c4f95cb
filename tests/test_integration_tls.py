"""
TLS for real (issue 17, items 1 and 2): the gateway's TLS listeners with
certificates chosen by SNI and replaced live through the admin, and HTTPS
and mutual TLS to backends.  Every certificate is made by the test
(L{tlsfixtures}); every process runs on 127.0.0.1.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from etcdserver import etcd, storeURL  # noqa: F401  (the etcd fixture)
from harness import HOST, BackendTLS, freePort, subprocessEnv, waitFor
from tlsfixtures import CertificateAuthority, Issued, writePEM

pytestmark = pytest.mark.integration

TOKEN = "tls-token"


# -- certificates ---------------------------------------------------------------


class PKI:
    """
    What the tests of this module trust and serve.
    """

    def __init__(self) -> None:
        self.ca = CertificateAuthority()
        self.api = self.ca.issue(["api.example.com"])
        self.wild = self.ca.issue(["*.example.org"])
        self.special = self.ca.issue(["special.example.org"])
        self.fallback = self.ca.issue(["default.example.net"])
        self.renewed = self.ca.issue(["api.example.com"], common="api renewed")


@pytest.fixture(scope="module")
def pki() -> PKI:
    """
    A test CA and the certificates the listeners serve.
    """
    return PKI()


def fingerprintOf(der: bytes) -> bytes:
    return x509.load_der_x509_certificate(der).fingerprint(hashes.SHA256())


def fingerprint(issued: Issued) -> bytes:
    return issued.certificate.fingerprint(hashes.SHA256())


def clientContext(
    ca: Optional[CertificateAuthority] = None,
    minimum: Optional[ssl.TLSVersion] = None,
    maximum: Optional[ssl.TLSVersion] = None,
) -> ssl.SSLContext:
    """
    A client context that trusts the test CA (names are compared by
    fingerprint, not verified: the tests ask for names no certificate
    holds).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    if ca is None:
        context.verify_mode = ssl.CERT_NONE
    else:
        context.load_verify_locations(cadata=ca.pem)
    if minimum is not None:
        context.minimum_version = minimum
    if maximum is not None:
        context.maximum_version = maximum
    return context


def handshake(
    port: int, serverName: Optional[str], context: Optional[ssl.SSLContext] = None
) -> Tuple[bytes, str]:
    """
    Make a TLS connection, asking for C{serverName} by SNI.

    @return: C{(fingerprint of the certificate served, TLS version)}.
    @raise ssl.SSLError: when the handshake fails.
    """
    context = context or clientContext()
    with socket.create_connection((HOST, port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=serverName) as tls:
            der = tls.getpeercert(binary_form=True)
            assert der is not None
            return fingerprintOf(der), str(tls.version())


def httpsRequest(
    port: int,
    method: str,
    path: str,
    serverName: str = "api.example.com",
    body: Any = None,
    headers: Optional[Dict[str, str]] = None,
) -> Tuple[int, Dict[str, str], bytes]:
    """
    One HTTPS request to the proxy (certificate not verified).
    """
    connection = HTTPSConnectionTo(port, serverName)
    try:
        data = None if body is None else json.dumps(body).encode()
        connection.request(method, path, body=data, headers=headers or {})
        answer = connection.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read()
    finally:
        connection.close()


class HTTPSConnectionTo(http.client.HTTPSConnection):
    """
    An HTTPS connection to 127.0.0.1 that asks for C{serverName} by SNI
    (and sends it as Host).
    """

    def __init__(self, port: int, serverName: str, context: Optional[ssl.SSLContext] = None):
        super().__init__(serverName, port, timeout=10, context=context or clientContext())
        self._port = port

    def connect(self) -> None:
        raw = socket.create_connection((HOST, self._port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)  # type: ignore[attr-defined]


def tlsGateway(
    gateways: Any,
    pki: PKI,
    certificates: List[Dict[str, Any]],
    default: Optional[str] = None,
    extra: Optional[Dict[str, Any]] = None,
    proxy: Optional[Dict[str, Any]] = None,
) -> Tuple[Any, int]:
    """
    A gateway with a plain listener, a TLS listener and an admin.

    @return: C{(gateway, tlsPort)}.
    """
    tlsPort = freePort()
    section: Dict[str, Any] = {"tlsListen": f"tcp:{tlsPort}:interface={HOST}"}
    if default is not None:
        section["tlsDefaultCertificate"] = default
    section.update(proxy or {})
    config: Dict[str, Any] = {
        "proxy": section,
        "admin": {"token": TOKEN},
        "store": "memory:",
        "certificates": certificates,
    }
    config.update(extra or {})
    gateway = gateways(config)
    waitFor(lambda: _accepts(tlsPort), what="the TLS listener")
    return gateway, tlsPort


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return True
    except OSError:
        return False


def refused(port: int, serverName: Optional[str], context: Optional[ssl.SSLContext] = None) -> str:
    """
    @return: the message of the handshake's failure.
    """
    with pytest.raises((ssl.SSLError, ConnectionResetError)) as info:
        handshake(port, serverName, context)
    return str(info.value)


# -- listeners ------------------------------------------------------------------


def test_sni_picks_each_certificate(gateways: Any, pki: PKI) -> None:
    """
    The TLS listener serves the certificate of the name asked for by SNI:
    the exact name first, then a C{*.} wildcard for its first label; a
    name no certificate serves, or no name, fails the handshake when there
    is no default certificate.
    """
    gateway, port = tlsGateway(
        gateways,
        pki,
        [
            pki.api.resource("api", ["api.example.com"]),
            pki.wild.resource("wild", ["*.example.org"]),
            pki.special.resource("special", ["Special.Example.org"]),
        ],
    )
    assert handshake(port, "api.example.com")[0] == fingerprint(pki.api)
    assert handshake(port, "API.example.COM")[0] == fingerprint(pki.api)
    assert handshake(port, "a.example.org")[0] == fingerprint(pki.wild)
    assert handshake(port, "special.example.org")[0] == fingerprint(pki.special)
    # A wildcard stands for one label exactly.
    refused(port, "a.b.example.org")
    refused(port, "example.org")
    refused(port, "unknown.example.net")
    refused(port, None)
    # Verified by a client that trusts the test CA, with its name checked.
    strict = ssl.create_default_context(cadata=pki.ca.pem)
    assert handshake(port, "api.example.com", strict)[0] == fingerprint(pki.api)
    assert not gateway.output().count(pki.api.keyBody())


def test_default_certificate(gateways: Any, pki: PKI) -> None:
    """
    With C{proxy.tlsDefaultCertificate}, a client asking for a name no
    certificate serves, or for none, gets the default certificate; names a
    certificate serves still get theirs.
    """
    _, port = tlsGateway(
        gateways,
        pki,
        [
            pki.api.resource("api", ["api.example.com"]),
            pki.fallback.resource("fallback", []),
        ],
        default="fallback",
    )
    assert handshake(port, "api.example.com")[0] == fingerprint(pki.api)
    assert handshake(port, "unknown.example.net")[0] == fingerprint(pki.fallback)
    assert handshake(port, None)[0] == fingerprint(pki.fallback)


def test_certificate_replaced_live(gateways: Any, pki: PKI) -> None:
    """
    A certificate replaced through the admin is served by new handshakes
    within a second, while a connection opened before keeps working (on
    the certificate it got); one deleted is served by none, one added is
    served at once.
    """
    gateway, port = tlsGateway(
        gateways,
        pki,
        [pki.api.resource("api", ["api.example.com"])],
        extra={"servers": [], "clusters": [], "apis": []},
    )
    backend = _echoAPI(gateway)
    assert backend is not None
    before = HTTPSConnectionTo(port, "api.example.com")
    try:
        before.request("GET", "/echo/1")
        first = before.getresponse()
        assert first.status == 200, first.read()
        first.read()
        served = before.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
        assert fingerprintOf(served) == fingerprint(pki.api)

        answer = gateway.admin(
            "PUT", "/api/v1/certificates/api", pki.renewed.resource("api", ["api.example.com"])
        )
        assert answer.status == 200, answer.text
        changed = time.monotonic()
        waitFor(
            lambda: handshake(port, "api.example.com")[0] == fingerprint(pki.renewed),
            timeout=1.0,
            interval=0.02,
            what="the replaced certificate",
        )
        assert time.monotonic() - changed < 1.0

        # The connection made before the change goes on.
        before.request("GET", "/echo/2")
        second = before.getresponse()
        assert second.status == 200
        assert json.loads(second.read())["path"] == "/echo/2"

        assert gateway.admin("DELETE", "/api/v1/certificates/api").status == 204
        # (The old connection first: on PyPy, a Python client whose own
        # handshake failed may report that failure again on its next read
        # of another connection.)
        before.request("GET", "/echo/3")
        third = before.getresponse()
        assert third.status == 200
        third.read()
        waitFor(lambda: _fails(port, "api.example.com"), timeout=1.0, interval=0.02)

        answer = gateway.admin(
            "POST", "/api/v1/certificates", pki.wild.resource("wild", ["*.example.org"])
        )
        assert answer.status == 201, answer.text
        assert handshake(port, "x.example.org")[0] == fingerprint(pki.wild)
    finally:
        before.close()


def _fails(port: int, serverName: str) -> bool:
    try:
        handshake(port, serverName)
    except (ssl.SSLError, ConnectionResetError):
        return True
    return False


def _echoAPI(gateway: Any, backend: Any = None, path: str = "/echo/*", **api: Any) -> Any:
    """
    Route C{path} of the gateway (API C{echo}, with C{api}'s other fields)
    to C{backend}, by default the plain backend every test of this module
    gets (L{_plainBackend}).

    @return: the backend.
    """
    if backend is None:
        backend = _moduleBackend()
    assert gateway.admin(
        "PUT", "/api/v1/servers/b", {"name": "b", "addr": backend.addr}
    ).status in (200, 201)
    assert gateway.admin("PUT", "/api/v1/clusters/c", {"name": "c", "servers": ["b"]}).status in (
        200,
        201,
    )
    body = dict({"name": "echo", "urlPattern": path, "nodes": [{"cluster": "c"}]}, **api)
    answer = gateway.admin("PUT", "/api/v1/apis/echo", body)
    assert answer.status in (200, 201), answer.text
    return backend


_BACKEND: List[Any] = []


def _moduleBackend() -> Any:
    return _BACKEND[0]


@pytest.fixture(autouse=True)
def _plainBackend(backends: Any) -> Iterator[None]:
    """
    A plain HTTP backend for the tests that need one to answer.
    """
    _BACKEND[:] = [backends("plain")]
    yield
    _BACKEND.clear()


def test_key_never_shown(gateways: Any, pki: PKI, tmp_path: Path) -> None:
    """
    A certificate's private key is write-only: no admin answer (the
    create's, a GET of it or of the list, a replace's, the stats,
    C{/metrics}), no C{gateway export} and no log line shows it; what is
    shown is the subject, the names, the SNIs, the expiry and the
    fingerprint.  A replace without the key keeps the stored one.
    """
    gateway, port = tlsGateway(gateways, pki, [])
    key = pki.api.keyBody()
    seen: List[str] = []
    created = gateway.admin(
        "POST", "/api/v1/certificates", pki.api.resource("api", ["api.example.com"])
    )
    assert created.status == 201, created.text
    seen.append(created.text)
    shown = created.json()
    assert "key" not in shown
    assert shown["sans"] == ["api.example.com"]
    assert shown["snis"] == ["api.example.com"]
    assert shown["subject"] == "CN=api.example.com"
    assert shown["fingerprint"] == ":".join(f"{b:02X}" for b in fingerprint(pki.api))
    assert shown["notAfter"].endswith("Z")
    for path in ("/api/v1/certificates", "/api/v1/certificates/api", "/api/v1/stats", "/metrics"):
        answer = gateway.admin("GET", path)
        assert answer.status == 200, (path, answer.text)
        seen.append(answer.text)
    stats = gateway.admin("GET", "/api/v1/stats").json()["certificates"]["api"]
    assert stats["snis"] == ["api.example.com"] and 0 < stats["expiresIn"] <= 366 * 86400
    metrics = gateway.admin("GET", "/metrics").text.splitlines()
    expiry = 'gateway_certificate_expiry_seconds{certificate="api"} '
    values = [float(line[len(expiry) :]) for line in metrics if line.startswith(expiry)]
    assert values == [stats["expiresAt"]]

    # Renewed with the same key: sent without it, the stored one is kept.
    renewedSameKey = pki.ca.issue(["api.example.com"])
    body = {"cert": _sameKeyCertificate(pki, pki.api), "snis": ["api.example.com"]}
    replaced = gateway.admin("PUT", "/api/v1/certificates/api", body)
    assert replaced.status == 200, replaced.text
    seen.append(replaced.text)
    assert handshake(port, "api.example.com")[1]
    # Without the key, a certificate of another key is refused: 400 on key.
    body = {"cert": renewedSameKey.chain, "snis": ["api.example.com"]}
    wrong = gateway.admin("PUT", "/api/v1/certificates/api", body)
    assert wrong.status == 400 and wrong.json()["field"] == "key", wrong.text
    seen.append(wrong.text)

    exported = subprocess.run(
        [sys.executable, "-m", "gateway", "export", "--admin", gateway.adminURL, "--token", TOKEN],
        capture_output=True,
        text=True,
        env=subprocessEnv(),
        cwd=str(tmp_path),
        timeout=60,
    )
    assert exported.returncode == 0, exported.stderr
    assert "certificates:" in exported.stdout and "BEGIN CERTIFICATE" in exported.stdout
    seen.append(exported.stdout + exported.stderr)
    # Exported, then applied back: nothing to change (the key is not compared).
    exportFile = tmp_path / "exported.yaml"
    exportFile.write_text(exported.stdout)
    applied = subprocess.run(
        [sys.executable, "-m", "gateway", "apply", str(exportFile), "--admin", gateway.adminURL]
        + ["--token", TOKEN, "--dry-run"],
        capture_output=True,
        text=True,
        env=subprocessEnv(),
        cwd=str(tmp_path),
        timeout=60,
    )
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "no changes" in applied.stdout, applied.stdout
    seen.append(gateway.output())
    for text in seen:
        assert key not in text
        assert "PRIVATE KEY" not in text


def _sameKeyCertificate(pki: PKI, issued: Issued) -> str:
    """
    @return: the PEM of a new certificate of C{issued}'s key (a renewal).
    """
    import datetime

    from cryptography.hazmat.primitives import serialization

    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(issued.certificate.subject)
        .issuer_name(pki.ca.certificate.subject)
        .public_key(issued.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=90))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("api.example.com")]), critical=False
        )
        .sign(pki.ca.key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def test_tls_versions(gateways: Any, pki: PKI) -> None:
    """
    TLS 1.2 and 1.3 are served; TLS 1.1 (and older) is refused with a
    protocol_version alert.
    """
    _, port = tlsGateway(gateways, pki, [pki.api.resource("api", ["api.example.com"])])
    tls12 = clientContext(maximum=ssl.TLSVersion.TLSv1_2)
    tls13 = clientContext(minimum=ssl.TLSVersion.TLSv1_3)
    assert handshake(port, "api.example.com", tls12)[1] == "TLSv1.2"
    assert handshake(port, "api.example.com", tls13)[1] == "TLSv1.3"
    with warnings.catch_warnings():
        # (Python deprecates them: that is the point.)
        warnings.simplefilter("ignore", DeprecationWarning)
        old = clientContext(minimum=ssl.TLSVersion.TLSv1, maximum=ssl.TLSVersion.TLSv1_1)
    # (Its own security level would not let this client offer TLS 1.1.)
    old.set_ciphers("ALL:@SECLEVEL=0")
    message = refused(port, "api.example.com", old)
    assert "protocol version" in message.lower() or "PROTOCOL_VERSION" in message, message


def test_session_resumption(gateways: Any, pki: PKI) -> None:
    """
    A client that kept its session resumes it on its next connection, with
    TLS 1.3 (tickets) and with TLS 1.2 (tickets or session ids).
    """
    gateway, port = tlsGateway(gateways, pki, [pki.api.resource("api", ["api.example.com"])])
    _echoAPI(gateway)
    for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
        context = clientContext(minimum=version, maximum=version)
        first = HTTPSConnectionTo(port, "api.example.com", context)
        first.request("GET", "/echo/1")
        first.getresponse().read()
        session = first.sock.session  # type: ignore[union-attr]
        assert not first.sock.session_reused  # type: ignore[union-attr]
        first.close()
        assert session is not None
        with socket.create_connection((HOST, port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="api.example.com", session=session) as s:
                assert s.session_reused, version
                s.sendall(b"GET /echo/2 HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
                assert s.recv(12) == b"HTTP/1.1 200"


def test_https_only_and_forwarded_proto(gateways: Any, pki: PKI) -> None:
    """
    An API with C{httpsOnly}: a plain-HTTP request gets a 308 to the same
    URL over HTTPS, on the TLS listener's port; the HTTPS request is
    proxied, with C{X-Forwarded-Proto: https}.  Without it, plain HTTP is
    proxied with C{X-Forwarded-Proto: http}.
    """
    gateway, port = tlsGateway(gateways, pki, [pki.api.resource("api", ["api.example.com"])])
    _echoAPI(gateway)
    plain = gateway.proxy("GET", "/echo/a?b=c", headers={"Host": "api.example.com"})
    assert plain.status == 200
    assert plain.json()["headers"]["x-forwarded-proto"] == ["http"]
    _echoAPI(gateway, httpsOnly=True)
    redirected = gateway.proxy(
        "POST", "/echo/a?b=c", body={"x": 1}, headers={"Host": "api.example.com:8080"}
    )
    assert redirected.status == 308, redirected.text
    location = f"https://api.example.com:{port}/echo/a?b=c"
    assert redirected.header("Location") == location
    assert redirected.json()["location"] == location
    status, _, body = httpsRequest(port, "GET", "/echo/a?b=c")
    assert status == 200
    assert json.loads(body)["headers"]["x-forwarded-proto"] == ["https"]
    stats = gateway.admin("GET", "/api/v1/stats").json()["apis"]["echo"]
    assert sum(stats["errors"].values()) == 0 and sum(stats["rejects"].values()) == 0, stats


# -- backends -------------------------------------------------------------------


class UpstreamPKI:
    """
    The certificates of the backends: a CA the gateway trusts, another it
    does not, and a CA of client certificates.
    """

    def __init__(self) -> None:
        self.ca = CertificateAuthority("Backend CA")
        self.stranger = CertificateAuthority("Unknown CA")
        self.clients = CertificateAuthority("Client CA")
        self.good = self.ca.issue([HOST, "backend.internal"])
        self.wrongName = self.ca.issue(["elsewhere.internal"])
        self.expired = self.ca.issue([HOST], expired=True)
        self.unknown = self.stranger.issue([HOST])
        self.client = self.clients.issue([], common="gateway-client", client=True)


@pytest.fixture(scope="module")
def upki() -> UpstreamPKI:
    return UpstreamPKI()


def tlsBackend(
    backends: Any,
    directory: Path,
    issued: Issued,
    name: str,
    clientCA: Optional[str] = None,
    clientCert: Optional[Issued] = None,
) -> Any:
    """
    A backend that speaks HTTPS with C{issued}'s certificate.
    """
    cert, key = writePEM(directory, issued, name)
    control = writePEM(directory, clientCert, name + "-client") if clientCert else None
    caFile = None
    if clientCA is not None:
        caFile = str(directory / f"{name}-client-ca.pem")
        Path(caFile).write_text(clientCA)
    return backends(name, tls=BackendTLS(cert, key, caFile, control))


def upstreamGateway(
    gateways: Any, servers: List[Dict[str, Any]], certificates: Optional[List[Any]] = None
) -> Any:
    """
    A gateway with one API per server: C{/NAME/...} goes to cluster NAME
    (the server alone), with its path after C{/NAME}.
    """
    config = {
        "proxy": {"accessLog": False},
        "admin": {"token": TOKEN},
        "store": "memory:",
        "certificates": certificates or [],
        "servers": servers,
        "clusters": [{"name": s["name"], "servers": [s["name"]]} for s in servers],
        "apis": [
            {
                "name": s["name"],
                "urlPattern": f"/{s['name']}/*",
                "nodes": [{"cluster": s["name"], "urlRewrite": "/{*}", "retries": 0}],
            }
            for s in servers
        ],
    }
    return gateways(config)


def test_https_backends_verified(
    gateways: Any, backends: Any, upki: UpstreamPKI, tmp_path: Path
) -> None:
    """
    A server with C{tls} is reached over HTTPS, verified against the CA
    given: a good certificate serves; an unknown CA, a wrong name and an
    expired certificate each give a 502 whose JSON says why (counted as an
    upstream error), and the request never reaches them; a plain-HTTP
    backend configured for TLS gets no plain HTTP either.
    """
    good = tlsBackend(backends, tmp_path, upki.good, "good")
    wrong = tlsBackend(backends, tmp_path, upki.wrongName, "wrong")
    expired = tlsBackend(backends, tmp_path, upki.expired, "expired")
    unknown = tlsBackend(backends, tmp_path, upki.unknown, "unknown")
    plain = _moduleBackend()
    tls = {"ca": upki.ca.pem}
    gateway = upstreamGateway(
        gateways,
        [
            {"name": "good", "addr": good.addr, "tls": tls},
            {"name": "named", "addr": good.addr, "tls": dict(tls, serverName="backend.internal")},
            {"name": "wrong", "addr": wrong.addr, "tls": tls},
            {"name": "expired", "addr": expired.addr, "tls": tls},
            {"name": "unknown", "addr": unknown.addr, "tls": tls},
            {"name": "plain", "addr": plain.addr, "tls": tls},
            {"name": "system", "addr": good.addr, "tls": {}},
            {"name": "unverified", "addr": unknown.addr, "tls": {"verify": False}},
        ],
    )
    answer = gateway.proxy("GET", "/good/echo/x")
    assert answer.status == 200, answer.text
    assert answer.json()["tls"] is True and answer.json()["path"] == "/echo/x"
    assert gateway.proxy("GET", "/named/echo/y").status == 200
    assert gateway.proxy("GET", "/unverified/echo/z").json()["tls"] is True

    expectations = {
        "wrong": ("name-mismatch", "not valid for '127.0.0.1'"),
        "expired": ("expired", "certificate has expired"),
        "unknown": ("unknown-ca", "unknown CA"),
        "system": ("unknown-ca", "unknown CA"),
    }
    for name, (kind, words) in expectations.items():
        answer = gateway.proxy("GET", f"/{name}/echo/x")
        assert answer.status == 502, (name, answer.text)
        error = answer.json()
        assert error["tls"] == kind, (name, error)
        assert words in error["error"], (name, error)
        assert error["server"] == name
    # A plain-HTTP backend never sees plain HTTP: the handshake fails (502)
    # or, when the backend waits for the end of a request line that a
    # ClientHello lacks, the request times out (504).
    gateway.admin(
        "PUT",
        "/api/v1/apis/plain",
        {
            "name": "plain",
            "urlPattern": "/plain/*",
            "nodes": [{"cluster": "plain", "urlRewrite": "/{*}", "retries": 0, "timeout": 1}],
        },
    )
    answer = gateway.proxy("GET", "/plain/echo/x")
    assert answer.status in (502, 504), answer.text
    if answer.status == 502:
        assert answer.json()["tls"] == "handshake", answer.text
    for backend in (wrong, expired, plain):
        assert backend.stats()["requests"] == 0, backend.name
    # (The one the unverified server sent.)
    assert unknown.stats()["requests"] == 1
    stats = gateway.admin("GET", "/api/v1/stats").json()
    for name in expectations:
        assert stats["apis"][name]["errors"]["refused"] == 1, (name, stats["apis"][name])
        assert stats["servers"][name]["upstreamFailures"] == 1


def test_mutual_tls_backend(
    gateways: Any, backends: Any, upki: UpstreamPKI, tmp_path: Path
) -> None:
    """
    A backend that requires a client certificate gets the one the server's
    C{tls.clientCertificate} names (a certificate resource); without one,
    the handshake fails (502).  A server naming a missing certificate, or
    deleting a certificate a server names, is a 409.
    """
    strict = tlsBackend(
        backends, tmp_path, upki.good, "strict", clientCA=upki.clients.pem, clientCert=upki.client
    )
    tls = {"ca": upki.ca.pem, "clientCertificate": "client"}
    gateway = upstreamGateway(
        gateways,
        [
            {"name": "mtls", "addr": strict.addr, "tls": tls},
            {"name": "anonymous", "addr": strict.addr, "tls": {"ca": upki.ca.pem}},
        ],
        certificates=[upki.client.resource("client")],
    )
    answer = gateway.proxy("GET", "/mtls/echo/x")
    assert answer.status == 200, answer.text
    assert answer.json()["clientCertificate"] == "gateway-client"
    refused = gateway.proxy("GET", "/anonymous/echo/x")
    assert refused.status == 502, refused.text
    assert refused.json()["tls"] == "handshake", refused.text

    missing = gateway.admin(
        "PUT",
        "/api/v1/servers/other",
        {"name": "other", "addr": strict.addr, "tls": dict(tls, clientCertificate="nope")},
    )
    assert missing.status == 409, missing.text
    assert missing.json()["field"] == "tls.clientCertificate"
    inUse = gateway.admin("DELETE", "/api/v1/certificates/client")
    assert inUse.status == 409, inUse.text
    assert "servers/mtls" in inUse.json()["error"]


def test_health_checks_and_keepalive_over_tls(
    gateways: Any, backends: Any, upki: UpstreamPKI, tmp_path: Path
) -> None:
    """
    Health checks of a TLS server go over TLS (and fail, saying why, when
    its certificate does not verify); requests reuse pooled TLS
    connections: many requests, one handshake; aggregation calls go over
    TLS too.
    """
    good = tlsBackend(backends, tmp_path, upki.good, "good")
    unknown = tlsBackend(backends, tmp_path, upki.unknown, "unknown")
    check = {"path": "/health", "interval": 0.2, "timeout": 2}
    tls = {"ca": upki.ca.pem}
    gateway = upstreamGateway(
        gateways,
        [
            {"name": "good", "addr": good.addr, "tls": tls, "healthCheck": check},
            {"name": "unknown", "addr": unknown.addr, "tls": tls, "healthCheck": check},
        ],
    )

    def health() -> Dict[str, Any]:
        servers = gateway.admin("GET", "/api/v1/stats").json()["servers"]
        return {name: servers[name]["health"] for name in ("good", "unknown")}

    waitFor(
        lambda: health()["good"].get("lastCheck") and health()["unknown"].get("lastCheck"),
        timeout=10,
        what="health checks",
    )
    states = health()
    assert states["good"]["healthy"] is True, states
    assert states["unknown"]["healthy"] is False, states
    assert "unknown CA" in states["unknown"]["lastError"], states
    assert good.stats()["families"].get("health", 0) >= 1

    before = good.stats()["connections"]
    for i in range(20):
        assert gateway.proxy("GET", f"/good/echo/{i}").status == 200
    # The health checks and the requests share the pool: at most a couple
    # of handshakes for all of them.
    assert good.stats()["connections"] - before <= 2, good.stats()

    gateway.admin(
        "PUT",
        "/api/v1/apis/both",
        {
            "name": "both",
            "urlPattern": "/both",
            "nodes": [
                {"cluster": "good", "urlRewrite": "/json/a", "attrName": "a"},
                {"cluster": "good", "urlRewrite": "/json/b", "attrName": "b"},
            ],
        },
    )
    merged = gateway.proxy("GET", "/both")
    assert merged.status == 200, merged.text
    assert set(merged.json()) == {"a", "b"}


# -- every proxy ------------------------------------------------------------------


def _servedByAll(port: int, serverName: str, expected: bytes, tries: int = 12) -> bool:
    """
    @return: whether C{tries} new handshakes (spread by the kernel over the
        workers that share the port) all got the certificate C{expected}.
    """
    try:
        return all(handshake(port, serverName)[0] == expected for _ in range(tries))
    except (ssl.SSLError, ConnectionResetError):
        return False


def test_workers_serve_tls_and_follow_certificates(gateways: Any, pki: PKI) -> None:
    """
    With several workers, each listens on the TLS port too, and each
    serves a replaced certificate from its next handshake on, within a
    second of the admin's answer (which waits for every worker).
    """
    gateway, port = tlsGateway(
        gateways,
        pki,
        [pki.api.resource("api", ["api.example.com"])],
        extra={"store": "file:store.json"},
        proxy={"workers": 2},
    )
    waitFor(
        lambda: _servedByAll(port, "api.example.com", fingerprint(pki.api)),
        timeout=15,
        what="both workers to serve TLS",
    )
    answer = gateway.admin(
        "PUT", "/api/v1/certificates/api", pki.renewed.resource("api", ["api.example.com"])
    )
    assert answer.status == 200 and answer.header("X-Gateway-Propagation") == "complete"
    started = time.monotonic()
    waitFor(
        lambda: _servedByAll(port, "api.example.com", fingerprint(pki.renewed)),
        timeout=1.0,
        interval=0.02,
        what="every worker to serve the new certificate",
    )
    assert time.monotonic() - started < 1.0


def test_certificates_through_etcd(gateways: Any, pki: PKI, etcd: Any) -> None:  # noqa: F811
    """
    Two gateways share an etcd store: a certificate added, replaced and
    deleted through one's admin is served (then not) by the other's TLS
    listener within a second.
    """
    url = storeURL([etcd.endpoint])
    first, _ = tlsGateway(gateways, pki, [], extra={"store": url})
    second, port = tlsGateway(gateways, pki, [], extra={"store": url})
    assert _fails(port, "api.example.com")
    for body, expected in (
        (pki.api.resource("api", ["api.example.com"]), fingerprint(pki.api)),
        (pki.renewed.resource("api", ["api.example.com"]), fingerprint(pki.renewed)),
    ):
        answer = first.admin("PUT", "/api/v1/certificates/api?wait=proxies", body)
        assert answer.status in (200, 201), answer.text
        started = time.monotonic()
        waitFor(
            lambda expected=expected: _servedByAll(port, "api.example.com", expected, 2),
            timeout=1.0,
            interval=0.02,
            what="the other gateway to serve it",
        )
        assert time.monotonic() - started < 1.0
    assert first.admin("DELETE", "/api/v1/certificates/api").status == 204
    waitFor(lambda: _fails(port, "api.example.com"), timeout=1.0, interval=0.02)
    assert "key" not in second.admin("GET", "/api/v1/stats").text
