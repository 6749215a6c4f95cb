"""
The Agent proxy baseline of the benchmark: a tiny C{twisted.web} reverse
proxy on Twisted's own HTTP client, L{twisted.web.client.Agent}, with a
persistent connection pool, the way one writes a proxy on Twisted before
having a gateway.  Issue 7 defines the gateway's CPython target against
it ("about 3x better than the Agent proxy").

Each request is sent to the backend with the client's method, path and
headers (hop-by-hop ones dropped); the answer's status and headers are
copied back and its body streamed to the client as it comes.  The pool
keeps C{--pool} (default 256) idle connections per host, enough for every
call of 50 concurrent clients, so that the comparison is with a fair
Agent, not one that reconnects.  Run by C{bench/run.py}:

    python bench/agent_proxy.py --port 0 --backend 127.0.0.1:8081

It listens on 127.0.0.1 and prints C{READY <port>} once it does.
"""

from __future__ import annotations

from typing import Any, List, Optional

from baseline import parseOptions, serve

#: Headers that belong to one connection (RFC 9110 7.6.1), not forwarded.
HOP_BY_HOP = frozenset(
    [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
    ]
)


def main(argv: Optional[List[str]] = None) -> None:
    options = parseOptions(__doc__, argv, pool=True)

    from twisted.internet import reactor
    from twisted.internet.protocol import Protocol
    from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool
    from twisted.web.http_headers import Headers
    from twisted.web.resource import Resource
    from twisted.web.server import NOT_DONE_YET

    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = options.pool
    agent = Agent(reactor, pool=pool)
    base = f"http://{options.backend}".encode("ascii")

    class Relay(Protocol):
        """
        Writes an upstream body to the client as it comes.
        """

        def __init__(self, request: Any) -> None:
            self.request = request

        def dataReceived(self, data: bytes) -> None:
            if not self.request._disconnected:
                self.request.write(data)

        def connectionLost(self, reason: Any = None) -> None:
            if not self.request._disconnected:
                self.request.finish()

    class AgentProxy(Resource):
        isLeaf = True

        def render(self, request: Any) -> Any:
            headers = Headers()
            for name, values in request.requestHeaders.getAllRawHeaders():
                if name.lower() not in HOP_BY_HOP:
                    headers.setRawHeaders(name, values)
            content = request.content.read() if request.content is not None else b""
            body = FileBodyProducer(_bytesIO(content)) if content else None
            d = agent.request(request.method, base + request.uri, headers, body)

            def answered(response: Any) -> None:
                if request._disconnected:
                    return
                request.setResponseCode(response.code, response.phrase)
                for name, values in response.headers.getAllRawHeaders():
                    if name.lower() not in HOP_BY_HOP or name.lower() == b"content-length":
                        request.responseHeaders.setRawHeaders(name, values)
                response.deliverBody(Relay(request))

            def failed(failure: Any) -> None:
                if not request._disconnected:
                    request.setResponseCode(502)
                    request.finish()

            d.addCallbacks(answered, failed)
            return NOT_DONE_YET

    serve(AgentProxy(), options.port)


def _bytesIO(data: bytes) -> Any:
    from io import BytesIO

    return BytesIO(data)


if __name__ == "__main__":
    main()
