"""
What the benchmark's baseline servers (C{twisted_reverse_proxy.py},
C{agent_proxy.py}, C{treq_fanout.py}) share: their command line, and a
C{twisted.web} site on 127.0.0.1 with its log off that says C{READY
<port>} once it listens.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, List, Optional


def parseOptions(
    doc: Optional[str], argv: Optional[List[str]], pool: bool = False
) -> argparse.Namespace:
    """
    @param doc: the script's docstring, whose first line describes it.
    @param pool: whether the script takes C{--pool}.
    @return: C{port}, C{backend} (C{HOST:PORT}) and, with C{pool}, C{pool}.
    """
    parser = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--backend", required=True, help="HOST:PORT of the backend")
    if pool:
        parser.add_argument("--pool", type=int, default=256, help="persistent connections per host")
    return parser.parse_args(argv)


def serve(resource: Any, port: int) -> None:
    """
    Serve C{resource} on 127.0.0.1 (access log off, no tracebacks), say
    C{READY <port>} on stdout, and run the reactor.
    """
    from twisted.internet import reactor as installed
    from twisted.web.server import Site

    reactor: Any = installed
    site: Any = Site(resource)
    site.displayTracebacks = False
    site.log = lambda request: None
    listening = reactor.listenTCP(port, site, interface="127.0.0.1")
    sys.stdout.write(f"READY {listening.getHost().port}\n")
    sys.stdout.flush()
    reactor.run()
