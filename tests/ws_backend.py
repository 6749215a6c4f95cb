"""
A real WebSocket backend for the integration tests, on the C{websockets}
library (asyncio).

Run it as C{python tests/ws_backend.py --port 0}: it listens on 127.0.0.1
and prints C{READY <port>} once it does.  WebSocket paths:

  - C{/echo...}: sends every message back as it came (text as text, binary
    as binary); the first message it sends, when the path has C{?hello=1},
    is C{{"path", "headers"}} of the handshake as JSON text;
  - C{/flood?bytes=N&size=S}: sends N bytes in binary messages of S bytes
    as fast as the connection takes them (the library waits for its
    buffer to drain), then C{done} as text, then echoes;
  - C{/close/CODE}: closes at once with that code and the reason C{bye
    CODE}.

Plain HTTP C{GET /stats} answers C{{"connections", "open", "closeCodes",
"handshakes"}}: the WebSocket connections made so far, those open now, the
close codes received from clients, and the handshakes' headers (the last
20, lower-case names).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from http import HTTPStatus
from typing import Any, Dict, List
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

STATE: Dict[str, Any] = {"connections": 0, "open": 0, "closeCodes": [], "handshakes": []}


def _headers(connection: ServerConnection) -> Dict[str, List[str]]:
    request = connection.request
    assert request is not None
    out: Dict[str, List[str]] = {}
    for name, value in request.headers.raw_items():
        out.setdefault(name.lower(), []).append(value)
    return out


def processRequest(connection: ServerConnection, request: Any) -> Any:
    """
    Answer plain HTTP (no upgrade) C{GET /stats}.
    """
    if request.headers.get("Upgrade") is None:
        if request.path == "/stats":
            return connection.respond(HTTPStatus.OK, json.dumps(STATE) + "\n")
        return connection.respond(HTTPStatus.NOT_FOUND, "not a WebSocket handshake\n")
    return None


async def handler(connection: ServerConnection) -> None:
    request = connection.request
    assert request is not None
    parts = urlsplit(request.path)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    STATE["connections"] += 1
    STATE["open"] += 1
    handshakes = STATE["handshakes"]
    handshakes.append(_headers(connection))
    del handshakes[:-20]
    try:
        if parts.path.startswith("/close/"):
            code = int(parts.path.rsplit("/", 1)[1])
            await connection.close(code, f"bye {code}")
            return
        if query.get("hello"):
            await connection.send(
                json.dumps({"path": request.path, "headers": _headers(connection)})
            )
        if parts.path == "/flood":
            total = int(query.get("bytes", "0"))
            size = int(query.get("size", "65536"))
            chunk = bytes(range(256)) * (size // 256 + 1)
            sent = 0
            while sent < total:
                n = min(size, total - sent)
                await connection.send(chunk[:n])
                sent += n
            await connection.send("done")
        async for message in connection:
            await connection.send(message)
    except ConnectionClosed:
        pass
    finally:
        STATE["open"] -= 1
        received = connection.protocol.close_rcvd
        if received is not None:
            STATE["closeCodes"].append(received.code)


async def main(port: int) -> None:
    async with serve(
        handler,
        "127.0.0.1",
        port,
        process_request=processRequest,
        max_size=64 * 1024 * 1024,
        # Echo large messages as they come: no per-connection compression.
        compression=None,
        ping_interval=None,
        backlog=1024,
    ) as server:
        bound = next(iter(server.sockets)).getsockname()[1]
        print(f"READY {bound}", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        asyncio.run(main(args.port))
    except KeyboardInterrupt:
        sys.exit(0)
