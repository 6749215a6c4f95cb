"""
The gateway as the web UI's browser tests run it.

    python tests/webui_server.py --config gateway.yaml

It is the real gateway process (L{gateway.process.root.makeService}: store,
snapshots, proxy, admin REST API, statistics) built from the config file;
its admin site serves the web UI (L{gateway.admin.webui.withWebUI}) beside
the API, so the browser loads the UI and calls the API on one origin.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def main(argv: Optional[List[str]] = None) -> int:
    """
    Run the gateway until SIGTERM.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    args = parser.parse_args(argv)

    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from gateway.filters import FilterRegistry
    from gateway.model.config import loadConfig
    from gateway.process.root import makeService
    from gateway.process.startup import Abort

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    config = loadConfig(args.config)
    if config.admin is None:
        parser.error("the config needs an admin: section")
    abort = Abort(reactor)
    service = makeService(config, reactor, FilterRegistry.fromPlugins(), abort)
    try:
        service.privilegedStartService()
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    reactor.callWhenRunning(service.startService)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()
    return abort.status or 0


if __name__ == "__main__":
    sys.exit(main())
