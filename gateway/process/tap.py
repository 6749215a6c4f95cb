"""
C{twistd gateway}: options and service maker.

    twistd -n gateway --config gateway.yaml

It runs on L{gateway.http.reactor.GatewayReactor} (epoll with less work per
event) unless twistd is given another reactor: C{twistd -r epoll -n gateway
--config gateway.yaml}.

A config file that is missing, unreadable or invalid, or that names a
filter no plugin provides, stops the start with a message naming the key
at fault and a non-zero exit status; so does a store that cannot be read,
a seed that does not compile or a port that cannot be bound, when the
services start.
"""

from __future__ import annotations

import atexit
import os
import sys
from typing import Any

from twisted.copyright import version as twistedVersion
from twisted.python import usage

# twistd before Twisted 26.10 (twisted#12656; what PyPy 3.9 gets) prints a
# usage error but exits 0: a refused start must still exit non-zero.
_twistdExitsZeroOnUsageError = tuple(map(int, twistedVersion.split(".")[:2])) < (26, 10)


class Options(usage.Options):
    synopsis = "--config FILE"
    longdesc = (
        "Run the API gateway: the proxy, the admin API and web UI, or both, "
        "as the config file says."
    )
    optParameters = [
        ["config", "c", None, "The gateway's YAML config file."],
    ]

    def postOptions(self) -> None:
        if self.parent is not None:
            # Run on the gateway's reactor unless twistd was told another
            # (-r NAME installs it before this runs).
            from gateway.http.reactor import installIfNone

            installIfNone()
        try:
            self._loadConfig()
        except usage.UsageError as e:
            if not _twistdExitsZeroOnUsageError or self.parent is None:
                raise
            # What twistd prints, then the exit status it gives since 26.10.
            print(self.parent)
            print(f"{' '.join(sys.argv[0:2])}: {e}")
            raise SystemExit(1)

    def _loadConfig(self) -> None:
        from gateway.filters import FilterError, FilterRegistry
        from gateway.model.config import ConfigError, loadConfig
        from gateway.process.interpreter import collectorPaused

        if not self["config"]:
            raise usage.UsageError("--config FILE is required")
        try:
            registry = FilterRegistry.fromPlugins()
        except FilterError as e:
            raise usage.UsageError(str(e))
        try:
            with collectorPaused():
                # The global filters checked with every other error.
                config = loadConfig(self["config"], filterNames=frozenset(registry.names()))
        except ConfigError as e:
            raise usage.UsageError(str(e))
        self["gatewayConfig"] = config
        self["filterRegistry"] = registry


def _exitWith(status: int) -> None:
    # twistd exits 0 once its reactor stopped, whatever stopped it: once it
    # has cleaned up (pid file, logs), end the process with this status.
    def exit() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)

    atexit.register(exit)


def makeService(options: Options) -> Any:
    """
    @return: the gateway process's services for the config file (see
        L{gateway.process.root.makeService}), on the global reactor; nothing
        is read, bound or started yet.
    """
    from twisted.internet import reactor

    from gateway.process import root
    from gateway.process.interpreter import tuneGC
    from gateway.process.startup import Abort

    tuneGC()
    try:
        return root.makeService(
            options["gatewayConfig"],
            reactor,
            options["filterRegistry"],
            Abort(reactor, whenStopped=_exitWith),
        )
    except ValueError as e:
        sys.stderr.write(f"gateway: cannot start: {e}\n")
        raise SystemExit(1)
