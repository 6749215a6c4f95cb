"""
Shared fixtures.

Unit tests need none of these.  Integration tests (marked
C{@pytest.mark.integration}) start real processes through the C{backends}
and C{gateways} factories, which stop everything they started when the
test ends.

A unit test (one not marked C{integration}) cannot open an internet socket
or start a process: L{guard._unitTestsStayInProcess} makes either fail with
a message saying so.  Unit tests use memory transports (C{StringTransport},
C{MemoryReactor}) and L{twisted.internet.task.Clock}; a test that needs the
network, a real reactor or another process is an integration test.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import pytest

# The guard of unit tests: an autouse fixture and two hooks (imported here,
# which registers them).
from guard import (  # noqa: F401
    _unitTestsStayInProcess,
    pytest_runtest_call,
    pytest_runtest_setup,
)
from harness import (
    HOST,
    Backend,
    BackendTLS,
    GatewayProcess,
    Process,
    runGatewayExpectingFailure,
    startBackend,
    startGateway,
)


@pytest.fixture(autouse=True)
def _workInTmpPath(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Run every test in its own temporary directory, so that files a test
    makes with a relative path (trial's C{mktemp}, a C{file:} store) never
    land in the working tree.
    """
    monkeypatch.chdir(tmp_path)


def _tail(process: Process, lines: int = 60) -> str:
    return "\n".join(process.output().splitlines()[-lines:])


class Backends:
    """
    Starts test backends (C{tests/backend_app.py}) and stops them all at the
    end of the test: C{backends("b1")} returns a L{harness.Backend}.
    """

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self.started: List[Backend] = []

    def __call__(
        self,
        name: Optional[str] = None,
        port: int = 0,
        tls: Optional[BackendTLS] = None,
        host: str = HOST,
    ) -> Backend:
        name = name or f"b{len(self.started) + 1}"
        backend = startBackend(name, self._directory, port=port, tls=tls, host=host)
        self.started.append(backend)
        return backend

    def stopAll(self) -> None:
        for backend in self.started:
            backend.stop()


class Gateways:
    """
    Starts gateways (C{twistd -n gateway}) and stops them all at the end of
    the test: C{gateways({"proxy": {}, "admin": {"token": "t"}})} returns a
    L{harness.GatewayProcess} listening on free ports.
    """

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self.started: List[GatewayProcess] = []

    def __call__(
        self,
        config: Union[str, Mapping[str, Any]],
        timeout: float = 15.0,
        twistdArgs: Sequence[str] = (),
    ) -> GatewayProcess:
        gateway = startGateway(config, self._directory, timeout, twistdArgs)
        self.started.append(gateway)
        return gateway

    def expectFailure(
        self, config: Union[str, Mapping[str, Any], None], **kwargs: Any
    ) -> Tuple[int, str]:
        """
        See L{harness.runGatewayExpectingFailure}.
        """
        return runGatewayExpectingFailure(config, self._directory, **kwargs)

    def stopAll(self) -> None:
        for gateway in self.started:
            gateway.stop()
            # Shown by pytest only when the test failed.
            print(f"--- {gateway.logPath} (last lines) ---\n{_tail(gateway)}")


@pytest.fixture
def backends(tmp_path: Path) -> Iterator[Backends]:
    """
    A factory of test backends, all stopped after the test.
    """
    factory = Backends(tmp_path)
    try:
        yield factory
    finally:
        factory.stopAll()


@pytest.fixture
def gateways(tmp_path: Path) -> Iterator[Gateways]:
    """
    A factory of gateway processes, all stopped after the test.
    """
    factory = Gateways(tmp_path)
    try:
        yield factory
    finally:
        factory.stopAll()


@pytest.fixture
def harness() -> Iterator[Any]:
    """
    An in-process proxy with real backends on 127.0.0.1 (L{inprocess.Harness}),
    torn down after the test.
    """
    import pytest_twisted
    from inprocess import Harness
    from twisted.internet import defer

    h = Harness()
    yield h
    pytest_twisted.blockon(defer.ensureDeferred(h.stop()))


#: The skips that stay skips under C{GATEWAY_NO_SKIPS}: what no install can
#: change on the machine the tests run on.
ALLOWED_SKIPS = ("root reads any file",)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Iterator[None]:
    """
    With C{GATEWAY_NO_SKIPS=1} (set by C{scripts/test.sh}, which installs
    every tool and server the tests use), a test that skips fails instead,
    naming why it skipped, unless the reason is in L{ALLOWED_SKIPS}.
    """
    outcome: Any = yield
    report = outcome.get_result()
    if os.environ.get("GATEWAY_NO_SKIPS") != "1" or not report.skipped:
        return
    if hasattr(report, "wasxfail"):
        return
    longrepr = report.longrepr
    reason = str(longrepr[2]) if isinstance(longrepr, tuple) else str(longrepr)
    if any(allowed in reason for allowed in ALLOWED_SKIPS):
        return
    report.outcome = "failed"
    report.longrepr = (
        f"skipped where scripts/test.sh installed everything (GATEWAY_NO_SKIPS=1): {reason}"
    )
