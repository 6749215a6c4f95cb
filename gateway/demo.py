"""
Demo backends for the README tour.

    python -m gateway.demo --ports 9001,9002,9003

starts one small JSON service per port, all in this one process, on
127.0.0.1.  Each answers:

  - C{GET /users/ID}: a user;
  - C{GET /orders?user=ID}: that user's orders;
  - C{GET /health}: C{ok};

and says which backend served it (C{"servedBy"} in the JSON and the
C{X-Served-By} header), so that load balancing, routing and aggregation
through the gateway (C{demo/gateway.yaml}) can be seen with curl.
"""

from __future__ import annotations

import argparse
import json
import sys
import zlib
from typing import Any, List, Optional, Sequence

from twisted.web.resource import Resource
from twisted.web.server import Site

ITEMS = ("keyboard", "monitor", "coffee", "desk lamp", "headphones", "notebook")


class DemoBackend(Resource):
    """
    One demo service, named after its port (C{demo-9001}).
    """

    isLeaf = True

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def _json(self, request: Any, data: Any, code: int = 200) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"x-served-by", self.name.encode("utf-8"))
        return json.dumps(dict(data, servedBy=self.name)).encode("utf-8") + b"\n"

    def render_GET(self, request: Any) -> bytes:
        segments = request.path.decode("utf-8", "replace").strip("/").split("/")
        if segments == ["health"]:
            request.setHeader(b"content-type", b"text/plain")
            request.setHeader(b"x-served-by", self.name.encode("utf-8"))
            return b"ok\n"
        if len(segments) == 2 and segments[0] == "users" and segments[1]:
            return self._json(request, user(segments[1]))
        if segments == ["orders"]:
            userID = request.args.get(b"user", [b""])[0].decode("utf-8", "replace")
            if not userID:
                return self._json(request, {"error": "the user query parameter is required"}, 400)
            return self._json(request, {"user": userID, "orders": orders(userID)})
        return self._json(request, {"error": "not found", "path": request.path.decode()}, 404)


def user(userID: str) -> dict:
    """
    @return: the made-up user C{userID}.
    """
    return {"id": userID, "name": f"User {userID}", "email": f"user{userID}@example.com"}


def orders(userID: str) -> List[dict]:
    """
    @return: the made-up orders of user C{userID}: the same every time.
    """
    seed = zlib.crc32(userID.encode("utf-8"))
    return [
        {
            "id": f"{userID}-{i + 1}",
            "item": ITEMS[(seed + i) % len(ITEMS)],
            "total": round(5 + (seed >> i) % 9500 / 100, 2),
        }
        for i in range(1 + seed % 3)
    ]


def listen(ports: Sequence[int], reactor: Any, host: str = "127.0.0.1") -> List[Any]:
    """
    Start one L{DemoBackend} per port.

    @return: the listening ports.
    """
    listening = []
    for port in ports:
        site = Site(DemoBackend(f"demo-{port}"))
        listening.append(reactor.listenTCP(port, site, interface=host))
    return listening


def parsePorts(text: str) -> List[int]:
    """
    @return: the ports of a comma-separated list such as C{9001,9002}.
    @raise argparse.ArgumentTypeError: when one is not a port number.
    """
    ports = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or not 0 < int(part) < 65536:
            raise argparse.ArgumentTypeError(f"{part!r} is not a port number")
        ports.append(int(part))
    return ports


def main(argv: Optional[List[str]] = None, reactor: Any = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.demo", description="Demo backends for the gateway's tour."
    )
    parser.add_argument("--ports", type=parsePorts, default=[9001, 9002, 9003])
    parser.add_argument("--host", default="127.0.0.1")
    options = parser.parse_args(argv)
    if reactor is None:
        from twisted.internet import reactor
    for port in listen(options.ports, reactor, options.host):
        address = port.getHost()
        print(f"demo backend demo-{address.port} on http://{address.host}:{address.port}")
    sys.stdout.flush()
    reactor.run()


if __name__ == "__main__":
    main()
