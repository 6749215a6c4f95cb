"""
Tests for L{gateway.process.hangup}: C{SIGHUP} leaves a gateway serving.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any, Dict, List

import pytest
from harness import waitFor
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from gateway.process import hangup as hangupModule
from gateway.process.hangup import HangupNotice


class FakeSignals:
    """
    Stands in for the L{signal} module.
    """

    SIGHUP = signal.SIGHUP
    SIG_DFL = signal.SIG_DFL
    SIG_IGN = signal.SIG_IGN

    def __init__(self) -> None:
        self.handlers: Dict[int, Any] = {signal.SIGHUP: signal.SIG_DFL}

    def signal(self, signum: int, handler: Any) -> Any:
        previous = self.handlers.get(signum)
        self.handlers[signum] = handler
        return previous


class ThreadlessReactor:
    """
    Keeps what C{callFromThread} is given, for the test to run.
    """

    def __init__(self) -> None:
        self.calls: List[Any] = []

    def callFromThread(self, f: Any, *args: Any) -> None:
        self.calls.append((f, args))


class HangupNoticeTests(SynchronousTestCase):
    """
    L{HangupNotice} handles C{SIGHUP} while it runs.
    """

    def test_gatewayLogs(self) -> None:
        """
        In a gateway process the signal is handled (not the default
        action, which ends the process) and, in the reactor's thread,
        logged as changing nothing; the default comes back when the
        service stops.
        """
        events: List[Dict[str, Any]] = []
        self.patch(hangupModule, "log", Logger(observer=events.append))
        reactor, signals = ThreadlessReactor(), FakeSignals()
        service = HangupNotice(reactor, signals=signals)
        service.startService()
        handler = signals.handlers[signal.SIGHUP]
        self.assertTrue(callable(handler))
        handler(signal.SIGHUP, None)
        self.assertEqual(events, [])
        for f, args in reactor.calls:
            f(*args)
        self.assertEqual(len(events), 1)
        self.assertIn("nothing to reload", events[0]["log_format"])
        service.stopService()
        self.assertEqual(signals.handlers[signal.SIGHUP], signal.SIG_DFL)

    def test_workerIgnores(self) -> None:
        """
        In a worker the signal is ignored; the default comes back when the
        service stops.
        """
        signals = FakeSignals()
        service = HangupNotice(ThreadlessReactor(), worker=True, signals=signals)
        service.startService()
        self.assertEqual(signals.handlers[signal.SIGHUP], signal.SIG_IGN)
        service.stopService()
        self.assertEqual(signals.handlers[signal.SIGHUP], signal.SIG_DFL)


@pytest.mark.integration
def test_hangupDuringWritesAndLoad(tmp_path, backends, gateways):
    """
    A gateway with two workers that gets C{SIGHUP} (the gateway process,
    then its whole process group) while a client sends and the admin
    writes serves on: no request fails, the writes answer, it logs that
    there is nothing to reload.  (The default action of the signal killed
    it on the spot.)
    """
    from test_integration_etcd import Load

    b1 = backends("b1")
    seed = {
        "servers": [{"name": "b1", "addr": b1.addr}],
        "clusters": [{"name": "c1", "servers": ["b1"]}],
        "apis": [{"name": "live", "urlPattern": "/echo/*", "nodes": [{"cluster": "c1"}]}],
    }
    gateway = gateways(
        dict(seed, admin={"token": "t"}, proxy={"workers": 2}, store=f"file:{tmp_path}/d.json"),
        timeout=30,
    )
    waitFor(lambda: gateway.proxy("GET", "/echo/x", timeout=2).status == 200, 30, 0.05, "serving")
    with Load([gateway]) as load:
        time.sleep(0.3)
        for i, hangUp in enumerate((os.kill, os.killpg)):
            hangUp(gateway.pid if i == 0 else os.getpgid(gateway.pid), signal.SIGHUP)
            answer = gateway.admin("PUT", f"/api/v1/servers/s{i}", {"addr": b1.addr})
            assert answer.status == 201, answer.text
            time.sleep(0.5)
    assert gateway.alive()
    assert load.failures(("b1",)) == []
    assert len(load.log) >= 20
    assert gateway.admin("GET", "/readyz").status == 200
    workers = gateway.admin("GET", "/api/v1/proxies").json()[0]["workers"]
    assert [w["ready"] for w in workers] == [True, True], workers
    assert "got SIGHUP: nothing to reload" in gateway.output()
