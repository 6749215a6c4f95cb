"""
The naive aggregation baseline of the benchmark: a tiny C{twisted.web}
server that answers each request with three concurrent treq GETs to one
backend (C{gatherResults}), merged into one JSON object
C{{"a": ..., "b": ..., "c": ...}}: what one writes with treq before
having a gateway.

treq's stock global pool keeps only 2 idle connections per host, which
would make the baseline open a new connection for most calls; this one
gives treq a persistent pool of C{--pool} (default 256) connections per
host, enough to keep every call of 50 concurrent clients (150 in flight)
alive, so the comparison is with a fair treq, not a crippled one.  Run by C{bench/run.py}:

    python bench/treq_fanout.py --port 0 --backend 127.0.0.1:8081

It listens on 127.0.0.1 and prints C{READY <port>} once it does.
"""

from __future__ import annotations

import json
from typing import Any, List, Optional

from baseline import parseOptions, serve

NODES = (("a", "/a"), ("b", "/b"), ("c", "/c"))


def main(argv: Optional[List[str]] = None) -> None:
    options = parseOptions(__doc__, argv, pool=True)

    import treq
    from treq.client import HTTPClient
    from twisted.internet import defer, reactor
    from twisted.web.client import Agent, HTTPConnectionPool
    from twisted.web.resource import Resource
    from twisted.web.server import NOT_DONE_YET

    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = options.pool
    client = HTTPClient(Agent(reactor, pool=pool))
    base = f"http://{options.backend}"

    class FanOut(Resource):
        isLeaf = True

        def render_GET(self, request: Any) -> Any:
            calls = [client.get(base + path).addCallback(treq.json_content) for _, path in NODES]
            gone: List[Any] = []
            request.notifyFinish().addErrback(gone.append)

            def merged(results: List[Any]) -> None:
                if gone:
                    return
                body = json.dumps({attr: r for (attr, _), r in zip(NODES, results)})
                request.setHeader(b"content-type", b"application/json")
                request.write(body.encode("utf-8"))
                request.finish()

            def failed(failure: Any) -> None:
                if gone:
                    return
                request.setResponseCode(502)
                request.finish()

            d = defer.gatherResults(calls, consumeErrors=True)
            d.addCallbacks(merged, failed)
            return NOT_DONE_YET

    serve(FanOut(), options.port)


if __name__ == "__main__":
    main()
