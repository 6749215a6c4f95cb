"""
A real backend server for the integration tests.

Run it as C{python tests/backend_app.py --port 0 --name b1}: it listens on
127.0.0.1 and prints C{READY <port>} on stdout once it does.  Endpoints:

  - C{/echo...} (any method): the request as JSON: C{server}, C{method},
    C{path} (with the query), C{query}, C{headers} (lower-case names,
    lists of values), C{body} (text, when under 64 KB), C{bodyLength},
    C{bodySha256}, C{client} (the peer's address);
  - C{/status/CODE}: answers with that status;
  - C{/slow/MS}: answers after MS milliseconds;
  - C{/bytes/N}: streams N bytes (byte I{i} is C{i % 256}) with a
    Content-Length, at the pace the client reads them;
  - C{/upload}: C{bodyLength} and C{bodySha256} of the request body;
  - C{/json/NAME}: a small JSON object naming NAME and this server;
    C{/json/NAME?delay=MS} answers it after MS milliseconds;
  - C{/health}: C{200 ok}, or C{503 down} once switched off;
  - with C{--tls-cert FILE --tls-key FILE} it speaks HTTPS only (and with
    C{--tls-client-ca FILE}, requires a client certificate that authority
    signed): C{/echo} then says C{tls: true} and the client certificate's
    subject (C{clientCertificate}), and C{/control/stats} counts the TLS
    connections made (C{connections}: one handshake each);
  - C{POST /control/health/up|down}, C{POST /control/fail/CODE} (every
    C{/echo} and C{/json} answer CODE until C{/control/fail/0}), C{POST
    /control/hang/1|0} (C{/echo} and C{/json} never answer while on), C{GET
    /control/stats} (requests served, per path family), C{POST
    /control/reset} (all of the above back to normal).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from typing import Any, Dict, List, Optional

from twisted.internet import reactor as globalReactor
from twisted.internet.interfaces import IPullProducer
from twisted.web.http import NO_BODY_CODES
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from zope.interface import implementer

#: Bodies at most this long are echoed back as text.
ECHO_BODY_LIMIT = 64 * 1024
#: The unit of reading uploads and of streaming /bytes.
CHUNK = 64 * 1024
#: The repeating pattern of /bytes: byte i is i % 256.
PATTERN = bytes(range(256)) * (CHUNK // 256)


def hashBody(content: Any) -> tuple:
    """
    @param content: a request's C{content} file (a BytesIO or, for bodies
        Twisted spooled to disk, a temporary file).
    @return: C{(length, sha256 hex digest, bytes or None)}, reading in
        chunks; the bytes only when the body is at most L{ECHO_BODY_LIMIT}.
    """
    content.seek(0)
    digest = hashlib.sha256()
    length = 0
    head = b""
    while True:
        chunk = content.read(CHUNK)
        if not chunk:
            break
        if length < ECHO_BODY_LIMIT + 1:
            head += chunk[: ECHO_BODY_LIMIT + 1 - length]
        length += len(chunk)
        digest.update(chunk)
    return length, digest.hexdigest(), (head if length <= ECHO_BODY_LIMIT else None)


@implementer(IPullProducer)
class PatternProducer:
    """
    Writes C{length} bytes of L{PATTERN} to a request, one chunk each time
    the transport asks for more, so a large answer never sits in memory.
    """

    def __init__(self, request: Any, length: int) -> None:
        self._request = request
        self._remaining = length
        self._stopped = False

    def resumeProducing(self) -> None:
        if self._stopped:
            return
        if self._remaining <= 0:
            self._stopped = True
            self._request.unregisterProducer()
            self._request.finish()
            return
        chunk = PATTERN[: min(CHUNK, self._remaining)]
        self._remaining -= len(chunk)
        self._request.write(chunk)

    def stopProducing(self) -> None:
        self._stopped = True


class BackendResource(Resource):
    """
    Every endpoint of the test backend, dispatched on the first path
    segment.
    """

    isLeaf = True

    def __init__(self, name: str, reactor: Any = None) -> None:
        super().__init__()
        self.name = name
        self._reactor = reactor if reactor is not None else globalReactor
        self.healthy = True
        self.failStatus = 0
        self.hanging = False
        self.hung: List[Any] = []
        self.requests = 0
        self.families: Dict[str, int] = {}
        self.connections = 0

    def answer(self, request: Any, data: Any, code: int = 200) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"x-backend", self.name.encode("utf-8"))
        return json.dumps(data, sort_keys=True).encode("utf-8") + b"\n"

    def render(self, request: Any) -> Any:
        segments = request.path.decode("utf-8", "replace").split("/")[1:]
        family = segments[0] if segments else ""
        args = segments[1:]
        if family != "control":
            self.requests += 1
            self.families[family] = self.families.get(family, 0) + 1
        handler = self.handlers.get(family)
        if handler is None and family.startswith("echo"):
            handler = BackendResource.render_echo
        if handler is None:
            return self.answer(request, {"server": self.name, "error": "not found"}, 404)
        try:
            return handler(self, request, args)
        except ValueError as e:
            return self.answer(request, {"server": self.name, "error": str(e)}, 400)

    def render_echo(self, request: Any, args: List[str]) -> Any:
        held = self.holdOrFail(request)
        if held is not None:
            return held
            self.hung.append(request)
        length, sha, body = hashBody(request.content)
        headers = {
            name.decode("latin-1").lower(): [v.decode("latin-1") for v in values]
            for name, values in request.requestHeaders.getAllRawHeaders()
        }
        peer = request.getClientAddress()
        transport = request.channel.transport
        clientCertificate = None
        getPeerCertificate = getattr(transport, "getPeerCertificate", None)
        if getPeerCertificate is not None:
            certificate = getPeerCertificate()
            if certificate is not None:
                clientCertificate = certificate.get_subject().CN
        return self.answer(
            request,
            {
                "server": self.name,
                "tls": request.isSecure(),
                "clientCertificate": clientCertificate,
                "method": request.method.decode("ascii"),
                "path": request.uri.decode("utf-8", "replace"),
                "query": {
                    k.decode("utf-8", "replace"): [v.decode("utf-8", "replace") for v in vs]
                    for k, vs in request.args.items()
                },
                "headers": headers,
                "body": None if body is None else body.decode("utf-8", "replace"),
                "bodyLength": length,
                "bodySha256": sha,
                "client": getattr(peer, "host", None),
            },
        )

    def holdOrFail(self, request: Any) -> Any:
        """
        Apply C{/control/hang} and C{/control/fail} to a request.

        @return: what C{render} returns for it, or L{None} to answer it
            normally.
        """
        if self.hanging:
            self.hung.append(request)
            request.notifyFinish().addBoth(lambda _: self.hung.remove(request))
            return NOT_DONE_YET
        if self.failStatus:
            return self.answer(
                request, {"server": self.name, "status": self.failStatus}, self.failStatus
            )
        return None

    def render_status(self, request: Any, args: List[str]) -> bytes:
        code = _intArg(args, 200, 599)
        if code in NO_BODY_CODES:
            # Finishing without a body sends neither a body nor a length,
            # as a 204 or a 304 must.
            request.setResponseCode(code)
            request.setHeader(b"x-backend", self.name.encode("utf-8"))
            request.finish()
            return NOT_DONE_YET
        return self.answer(request, {"server": self.name, "status": code}, code)

    def render_slow(self, request: Any, args: List[str]) -> Any:
        ms = _intArg(args, 0, 3_600_000)

        def done() -> None:
            request.write(self.answer(request, {"server": self.name, "sleptMs": ms}))
            request.finish()

        call = self._reactor.callLater(ms / 1000.0, done)
        request.notifyFinish().addErrback(lambda _: call.active() and call.cancel())
        return NOT_DONE_YET

    def render_bytes(self, request: Any, args: List[str]) -> Any:
        n = _intArg(args, 0, 1 << 40)
        request.setHeader(b"content-type", b"application/octet-stream")
        request.setHeader(b"content-length", str(n).encode("ascii"))
        request.setHeader(b"x-backend", self.name.encode("utf-8"))
        if request.method == b"HEAD":
            return b""
        producer = PatternProducer(request, n)
        request.registerProducer(producer, False)
        request.notifyFinish().addErrback(lambda _: producer.stopProducing())
        return NOT_DONE_YET

    def render_upload(self, request: Any, args: List[str]) -> bytes:
        length, sha, _ = hashBody(request.content)
        return self.answer(request, {"server": self.name, "bodyLength": length, "bodySha256": sha})

    def render_json(self, request: Any, args: List[str]) -> Any:
        held = self.holdOrFail(request)
        if held is not None:
            return held
        name = "/".join(args)
        data = {"name": name, "server": self.name, "value": f"{name}@{self.name}"}
        delay = request.args.get(b"delay")
        if not delay:
            return self.answer(request, data)
        ms = _intArg([delay[0].decode("ascii", "replace")], 0, 3_600_000)

        def done() -> None:
            request.write(self.answer(request, data))
            request.finish()

        call = self._reactor.callLater(ms / 1000.0, done)
        request.notifyFinish().addErrback(lambda _: call.active() and call.cancel())
        return NOT_DONE_YET

    def render_health(self, request: Any, args: List[str]) -> bytes:
        request.setHeader(b"content-type", b"text/plain")
        if self.healthy:
            return b"ok"
        request.setResponseCode(503)
        return b"down"

    def render_control(self, request: Any, args: List[str]) -> bytes:
        what = args[0] if args else ""
        if what == "stats" and request.method in (b"GET", b"HEAD"):
            return self.answer(
                request,
                {
                    "server": self.name,
                    "requests": self.requests,
                    "families": self.families,
                    "connections": self.connections,
                },
            )
        if request.method != b"POST":
            raise ValueError("control requests other than GET /control/stats are POSTs")
        if what == "health":
            self.healthy = _choice(args[1:], {"up": True, "down": False})
        elif what == "fail":
            code = _intArg(args[1:], 0, 599)
            if 0 < code < 200 or code in NO_BODY_CODES:
                raise ValueError("status must be 0 or 200-599, not 204 or 304")
            self.failStatus = code
        elif what == "hang":
            self.hanging = _choice(args[1:], {"1": True, "0": False})
            if not self.hanging:
                self.releaseHung()
        elif what == "reset":
            self.healthy, self.failStatus, self.requests, self.families = True, 0, 0, {}
            self.hanging = False
            self.releaseHung()
        else:
            raise ValueError(f"unknown control {what!r}")
        return self.answer(request, {"server": self.name, "ok": True})

    def releaseHung(self) -> None:
        """
        Answer the requests held by C{/control/hang/1} with 503, so that
        clients waiting on them are not left waiting forever.
        """
        for request in list(self.hung):
            request.write(self.answer(request, {"server": self.name, "hung": True}, 503))
            request.finish()

    handlers = {
        "echo": render_echo,
        "status": render_status,
        "slow": render_slow,
        "bytes": render_bytes,
        "upload": render_upload,
        "json": render_json,
        "health": render_health,
        "control": render_control,
    }


class QuietSite(Site):
    """
    A site without an access log: load tests send it hundreds of thousands
    of requests.  It counts the connections it serves.
    """

    def log(self, request: Any) -> None:
        pass

    def buildProtocol(self, addr: Any) -> Any:
        self.resource.connections += 1
        return super().buildProtocol(addr)


def tlsOptions(certFile: str, keyFile: str, clientCA: Optional[str]) -> Any:
    """
    @return: the TLS options of a backend: its certificate, and with
        C{clientCA}, a client certificate signed by it required.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from OpenSSL import crypto
    from twisted.internet import ssl

    with open(certFile, "rb") as f:
        chain = x509.load_pem_x509_certificates(f.read())
    with open(keyFile, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
    options: Dict[str, Any] = {
        "privateKey": crypto.PKey.from_cryptography_key(key),
        "certificate": crypto.X509.from_cryptography(chain[0]),
        "extraCertChain": [crypto.X509.from_cryptography(c) for c in chain[1:]],
        "enableSessions": True,
        "enableSessionTickets": True,
    }
    if clientCA is not None:
        with open(clientCA, "rb") as f:
            authority = x509.load_pem_x509_certificates(f.read())[0]
        options["trustRoot"] = ssl.Certificate(crypto.X509.from_cryptography(authority))
    return ssl.CertificateOptions(**options)


def _intArg(args: List[str], low: int, high: int) -> int:
    if not args or not args[0].isdigit() or not low <= int(args[0]) <= high:
        raise ValueError(f"expected a number from {low} to {high} in the path")
    return int(args[0])


def _choice(args: List[str], choices: Dict[str, bool]) -> bool:
    if not args or args[0] not in choices:
        raise ValueError("expected one of " + ", ".join(choices))
    return choices[args[0]]


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--name", default="backend")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--tls-cert", help="PEM certificate chain: speak HTTPS")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert")
    parser.add_argument("--tls-client-ca", help="PEM CA: require client certificates it signed")
    options = parser.parse_args(argv)

    from twisted.logger import globalLogBeginner, textFileLogObserver

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    site = QuietSite(BackendResource(options.name))
    site.displayTracebacks = True
    if options.tls_cert:
        contextFactory = tlsOptions(options.tls_cert, options.tls_key, options.tls_client_ca)
        port = globalReactor.listenSSL(options.port, site, contextFactory, interface=options.host)
    else:
        port = globalReactor.listenTCP(options.port, site, interface=options.host)
    sys.stdout.write(f"READY {port.getHost().port}\n")
    sys.stdout.flush()
    globalReactor.run()


if __name__ == "__main__":
    main()
