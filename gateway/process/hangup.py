"""
C{SIGHUP}: nothing to reload.

Many daemons reload their configuration on C{SIGHUP}, and operators (and
their supervisors' C{ExecReload=kill -HUP ...}) send it out of habit.  The
gateway has nothing to reload: every change made through the admin (or
C{gateway apply}) is live at once, and the config file's own settings
(listeners, store, filters) are read at start only.  Left to its default
action the signal killed the process on the spot, with no drain: requests
and admin writes in flight were cut, and its workers stopped.  While
L{HangupNotice} runs, a gateway process says so in its log and serves on;
a worker ignores the signal (a hang-up sent to the process group reaches
every worker, and the gateway process speaks for them).
"""

from __future__ import annotations

import signal as _signal
from typing import Any

from twisted.logger import Logger

from gateway.process.signals import SignalService

log = Logger()


class HangupNotice(SignalService):
    """
    Handles C{SIGHUP} while the service runs (the previous handler is put
    back when it stops): logged in a gateway process, ignored in a worker.
    """

    name = "hangup"

    def __init__(self, reactor: Any, worker: bool = False, signals: Any = _signal) -> None:
        """
        @param reactor: the process's reactor (the handler hands the notice
            to it with C{callFromThread}, which a signal handler may call).
        @param worker: whether this process is a proxy worker (the signal
            is then ignored without a word).
        @param signals: the L{signal} module (or a stand-in, for tests).
        """
        super().__init__(signals.SIGHUP, signals)
        self._reactor = reactor
        self._worker = worker

    def handler(self) -> Any:
        return self._signals.SIG_IGN if self._worker else self._handle

    def _handle(self, signum: int, frame: Any) -> None:
        self._reactor.callFromThread(self.notice)

    def notice(self) -> None:
        """
        Say that a hang-up changes nothing.
        """
        log.warn(
            "got SIGHUP: nothing to reload, serving on (changes made through the admin"
            " or gateway apply are live at once; the config file is read at start only:"
            " restart to change it; SIGUSR1 reopens the log files, SIGTERM stops)"
        )
