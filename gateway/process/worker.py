"""
One proxy worker process (see L{gateway.process.pool}).

    python -m gateway.process.worker --config gateway.yaml --index 0

The parent starts it with the control channel on file descriptor 3.  It
serves the proxy port (with C{SO_REUSEPORT}) from the store states the
parent relays over that channel (it never reads the store itself), confirms
each revision it serves, takes the servers' health from the parent,
reports its stats, and stops when the parent goes away.  With
C{--buckets-fd N} its limits keep their buckets in the workers' shared
table (L{gateway.protection.sharedbuckets}), so they hold for all the
workers together.

A worker that cannot start (its proxy port cannot be bound, its access log
cannot be opened, its config is refused) says why on its standard error
and exits with L{gateway.process.pool.CANNOT_START}, which its parent tells
from a crash (L{gateway.process.pool.WorkerPool}).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, List, Optional

CONTROL_FD = 3


def main(argv: Optional[List[str]] = None) -> int:
    """
    Run one proxy worker until its parent stops it (or goes away).

    @return: the exit status: 0, or L{CANNOT_START} when it could not
        start.
    """
    parser = argparse.ArgumentParser(prog="gateway.process.worker")
    parser.add_argument("--config", required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument(
        "--reactor",
        choices=("gateway", "default"),
        default="default",
        help="gateway: gateway.http.reactor's (the parent's, when it runs on it)",
    )
    parser.add_argument(
        "--buckets-fd",
        type=int,
        default=None,
        help="the file descriptor of the workers' shared rate-limit buckets",
    )
    args = parser.parse_args(argv)

    if args.reactor == "gateway":
        from gateway.http.reactor import installIfNone

        installIfNone()
    from twisted.internet import reactor
    from twisted.logger import FileLogObserver, formatEvent, formatTime, globalLogBeginner

    from gateway.filters import FilterRegistry
    from gateway.model.config import ConfigError, loadConfig
    from gateway.process.interpreter import collectorPaused, tuneGC
    from gateway.process.pool import CANNOT_START
    from gateway.process.root import WorkerRole, makeService
    from gateway.process.startup import Abort
    from gateway.protection.sharedbuckets import SharedBuckets

    tuneGC()

    prefix = f"[worker-{args.index}]"

    def format(event: Any) -> str:
        text = formatEvent(event)
        if not text:
            return ""
        return f"{formatTime(event.get('log_time'))} {prefix} {text}\n"

    globalLogBeginner.beginLoggingTo(
        [FileLogObserver(sys.stdout, format)], redirectStandardIO=False
    )
    abort = Abort(reactor, prefix=f"{prefix} cannot start: ", status=CANNOT_START)
    try:
        buckets = SharedBuckets.fromFD(args.buckets_fd) if args.buckets_fd is not None else None
        with collectorPaused():
            config = loadConfig(args.config)
        service = makeService(
            config,
            reactor,
            FilterRegistry.fromPlugins(),
            abort,
            worker=WorkerRole(args.index, CONTROL_FD, buckets),
        )
        service.privilegedStartService()
    except (ConfigError, ValueError, OSError) as e:
        sys.stderr.write(f"{prefix} cannot start: {e}\n")
        return CANNOT_START
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else CANNOT_START

    reactor.callWhenRunning(service.startService)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()
    return abort.status or 0


if __name__ == "__main__":
    sys.exit(main())
