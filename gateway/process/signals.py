"""
A service that handles one signal while it runs.
"""

from __future__ import annotations

import signal as _signal
from typing import Any

from twisted.application.service import Service


class SignalService(Service):
    """
    Installs L{handler} for one signal when the service starts, and puts
    the signal's previous handler back when it stops.  Outside the main
    thread (an embedding program's) nothing is installed: L{notInstalled}
    says so.

    @ivar previous: the handler the signal had before (L{None} when it was
        not set from Python).
    """

    def __init__(self, signum: int, signals: Any = _signal) -> None:
        """
        @param signum: the signal.
        @param signals: the L{signal} module (or a stand-in, for tests).
        """
        self._signum = signum
        self._signals = signals
        self.previous: Any = None
        self._installed = False

    def handler(self) -> Any:
        """
        @return: what to install: a function of C{(signum, frame)}, or
            C{SIG_IGN}.
        """
        raise NotImplementedError()

    def notInstalled(self) -> None:
        """
        The handler could not be installed (not the main thread).
        """

    def startService(self) -> None:
        super().startService()
        try:
            self.previous = self._signals.signal(self._signum, self.handler())
        except ValueError:
            self.notInstalled()
            return
        self._installed = True

    def stopService(self) -> None:
        super().stopService()
        if self._installed:
            self._installed = False
            previous = self.previous
            self._signals.signal(
                self._signum, previous if previous is not None else self._signals.SIG_DFL
            )
