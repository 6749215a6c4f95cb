"""
The gateway as the web UI's browser tests run it.

    python tests/webui_server.py --config gateway.yaml

It is the real L{gateway.process.service.GatewayService} (store, snapshots, proxy,
admin REST API, statistics) built from the config file, with the admin's
port serving L{gateway.admin.webui.withWebUI} around the service's own
admin resource, so the browser loads the UI and calls the API on one
origin whether or not the admin site of the running tree mounts the UI
itself.
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

    from gateway.admin.webui import withWebUI
    from gateway.filters import FilterRegistry
    from gateway.model.config import loadConfig
    from gateway.process.service import AdminSite, GatewayService

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    config = loadConfig(args.config)
    if config.admin is None:
        parser.error("the config needs an admin: section")
    service = GatewayService(config, reactor, FilterRegistry.fromPlugins())
    site = AdminSite(withWebUI(service.admin.resource()))
    service.getServiceNamed("admin").factory = site
    reactor.callWhenRunning(service.startService)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
