"""
What keeps a unit test a unit test: L{_unitTestsStayInProcess}, an autouse
fixture (tests/conftest.py imports it).

A test not marked C{integration} may not open an internet socket nor start
a process: unit tests use memory transports (C{StringTransport},
C{MemoryReactor}) and L{twisted.internet.task.Clock}; a test that needs the
network, a real reactor or another process is marked
C{@pytest.mark.integration}.
"""

from __future__ import annotations

import socket
import subprocess
from typing import Any, Iterator, List

import pytest


class NotAUnitTest(RuntimeError):
    """
    A unit test tried to open an internet socket or start a process.  (Not
    an L{OSError}, so that code which handles network errors does not take
    it for one.)
    """


_INTERNET = (socket.AF_INET, socket.AF_INET6)


#: Whether a test's setup or call already failed with L{NotAUnitTest}.
_REPORTED = pytest.StashKey[bool]()


def _noteRefusal(item: pytest.Item) -> Iterator[None]:
    try:
        yield
    except NotAUnitTest:
        item.stash[_REPORTED] = True
        raise


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    """
    Note a refusal that failed a test's setup (a fixture).
    """
    return (yield from _noteRefusal(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """
    Note a refusal that failed a test.
    """
    return (yield from _noteRefusal(item))


@pytest.fixture(autouse=True)
def _unitTestsStayInProcess(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """
    In a test not marked C{integration}, creating an C{AF_INET} or
    C{AF_INET6} socket, or starting a process with L{subprocess}, raises
    L{NotAUnitTest}, and the test fails even if the code under test
    swallowed that exception.  Unix sockets (C{socketpair}) and pipes stay
    allowed.
    """
    if request.node.get_closest_marker("integration") is not None:
        yield
        return
    attempts: List[str] = []

    def refuse(what: str) -> NotAUnitTest:
        message = (
            f"{request.node.nodeid} {what}, but it is not marked integration: a unit test "
            "uses memory transports (twisted.internet.testing) and task.Clock; a test that "
            "needs the network, a real reactor or a process is marked "
            "@pytest.mark.integration (see tests/conftest.py)"
        )
        attempts.append(message)
        return NotAUnitTest(message)

    socketInit = socket.socket.__init__

    def guardedSocket(self: socket.socket, *args: Any, **kwargs: Any) -> None:
        socketInit(self, *args, **kwargs)
        if self.family in _INTERNET:
            self.close()
            raise refuse(f"opened an {self.family.name} socket")

    def guardedPopen(self: subprocess.Popen, *args: Any, **kwargs: Any) -> None:
        raise refuse(f"started a process ({(args or [kwargs.get('args')])[0]!r})")

    monkeypatch.setattr(socket.socket, "__init__", guardedSocket)
    monkeypatch.setattr(subprocess.Popen, "__init__", guardedPopen)
    yield
    if attempts and not request.node.stash.get(_REPORTED, False):
        # Swallowed by the code under test: reported here.
        pytest.fail(attempts[0], pytrace=False)
