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

from typing import List, Optional

from baseline import parseOptions, serve


def main(argv: Optional[List[str]] = None) -> None:
    options = parseOptions(__doc__, argv)
    host, _, port = options.backend.rpartition(":")

    from twisted.web.proxy import ReverseProxyResource

    serve(ReverseProxyResource(host, int(port), b""), options.port)


if __name__ == "__main__":
    main()
