"""
Twisted's own reverse proxy, as a contender in the benchmark.

A tiny C{twisted.web} server whose root is the stock
L{twisted.web.proxy.ReverseProxyResource} pointed at one backend, with the
site's access log off, exactly as Twisted ships it (it opens a new upstream
connection for every request).  Run by C{bench/run.py}:

    python bench/twisted_reverse_proxy.py --port 0 --backend 127.0.0.1:8081

It listens on 127.0.0.1 and prints C{READY <port>} once it does.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--backend", required=True, help="HOST:PORT of the backend")
    options = parser.parse_args(argv)
    host, _, port = options.backend.rpartition(":")

    from twisted.internet import reactor
    from twisted.web.proxy import ReverseProxyResource
    from twisted.web.server import Site

    site = Site(ReverseProxyResource(host, int(port), b""))
    site.displayTracebacks = False
    site.log = lambda request: None
    listening = reactor.listenTCP(options.port, site, interface="127.0.0.1")
    sys.stdout.write(f"READY {listening.getHost().port}\n")
    sys.stdout.flush()
    reactor.run()


if __name__ == "__main__":
    main()
