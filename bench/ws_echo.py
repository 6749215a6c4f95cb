"""
A WebSocket echo load: C{--connections} clients each send a C{--size}-byte
binary message and wait for its echo, again and again, for C{--duration}
seconds (after C{--warmup} seconds not counted), on the C{websockets}
library (asyncio).

    python bench/ws_echo.py --url ws://127.0.0.1:8080/echo --duration 3

Prints one JSON line: C{messages} (echoes received in the counted time),
C{seconds}, C{perSecond}, C{p50Ms} and C{p99Ms} (round trips), C{errors}.
C{bench/run.py} runs it against the WebSocket backend directly and through
the gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any, Dict, List

from websockets.asyncio.client import connect


async def client(
    url: str, size: int, start: float, stop: float, latencies: List[float], errors: List[str]
) -> int:
    payload = b"x" * size
    counted = 0
    try:
        async with connect(
            url, proxy=None, compression=None, ping_interval=None, open_timeout=30
        ) as ws:
            while True:
                sent = time.perf_counter()
                if sent >= stop:
                    return counted
                await ws.send(payload)
                await ws.recv()
                done = time.perf_counter()
                if done >= start and sent < stop:
                    counted += 1
                    latencies.append(done - sent)
    except Exception as e:  # noqa: BLE001 (reported, not raised: the others go on)
        errors.append(repr(e))
        return counted


async def run(options: argparse.Namespace) -> Dict[str, Any]:
    latencies: List[float] = []
    errors: List[str] = []
    now = time.perf_counter()
    start = now + options.warmup
    stop = start + options.duration
    counts = await asyncio.gather(
        *(
            client(options.url, options.size, start, stop, latencies, errors)
            for _ in range(options.connections)
        )
    )
    latencies.sort()
    messages = sum(counts)

    def quantile(q: float) -> Any:
        if not latencies:
            return None
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    return {
        "messages": messages,
        "seconds": options.duration,
        "perSecond": messages / options.duration,
        "p50Ms": quantile(0.5),
        "p99Ms": quantile(0.99),
        "errors": errors[:5],
        "errorCount": len(errors),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--size", type=int, default=64, help="bytes per message")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds counted")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds not counted")
    options = parser.parse_args()
    result = asyncio.run(run(options))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0 if result["messages"] else 1


if __name__ == "__main__":
    sys.exit(main())
