"""
L{guard._unitTestsStayInProcess}: a unit test that opens an internet socket
or starts a process fails, saying why; an integration test may.

Each check runs a small test session of its own (pytest's C{pytester}) with
the guard.  These tests are integration tests themselves: the sessions they
run open sockets and would start a process, which the guard of this very
session would otherwise refuse.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration

CONFTEST = "from guard import _unitTestsStayInProcess, pytest_runtest_call, pytest_runtest_setup\n"


def run(pytester: pytest.Pytester, source: str) -> pytest.RunResult:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_sample=source)
    pytester.makeini("[pytest]\nmarkers = integration: may use the network\n")
    # (Without pytest-twisted: it would stop the reactor this session uses.)
    return pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:twisted")


def test_internetSocketsRefused(pytester: pytest.Pytester) -> None:
    """
    An unmarked test that creates an IPv4 or IPv6 socket fails with a message
    that names the test and the marker; Unix sockets are allowed.
    """
    result = run(
        pytester,
        "import socket\n"
        "def test_ipv4():\n"
        "    socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
        "def test_ipv6():\n"
        "    socket.socket(socket.AF_INET6, socket.SOCK_STREAM)\n"
        "def test_unix():\n"
        "    a, b = socket.socketpair()\n"
        "    a.close(); b.close()\n",
    )
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(
        ["*test_sample.py::test_ipv4 opened an AF_INET socket, but it is not marked integration*"]
    )
    result.stdout.fnmatch_lines(["*test_ipv6 opened an AF_INET6 socket*"])


def test_swallowedRefusalStillFails(pytester: pytest.Pytester) -> None:
    """
    Code that catches the refusal does not hide it: the test fails at its
    end.
    """
    result = run(
        pytester,
        "import socket\n"
        "def test_swallowed():\n"
        "    try:\n"
        "        socket.create_connection(('127.0.0.1', 9))\n"
        "    except Exception:\n"
        "        pass\n",
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*test_swallowed opened an AF_INET socket*"])


def test_processesRefused(pytester: pytest.Pytester) -> None:
    """
    An unmarked test that starts a process fails, saying so.
    """
    result = run(
        pytester,
        "import subprocess, sys\n"
        "def test_process():\n"
        "    subprocess.run([sys.executable, '-c', 'pass'])\n",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*test_process started a process*not marked integration*"])


def test_integrationTestsMay(pytester: pytest.Pytester) -> None:
    """
    A test marked C{integration} (or in a module so marked) opens sockets as
    it likes.
    """
    result = run(
        pytester,
        "import socket, pytest\n"
        "@pytest.mark.integration\n"
        "def test_marked():\n"
        "    socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()\n",
    )
    result.assert_outcomes(passed=1)


def test_refusedInAFixture(pytester: pytest.Pytester) -> None:
    """
    A fixture of an unmarked test that opens an internet socket fails the
    test's setup, reported once.
    """
    result = run(
        pytester,
        "import socket, pytest\n"
        "@pytest.fixture\n"
        "def server():\n"
        "    return socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
        "def test_withServer(server):\n"
        "    pass\n",
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*test_withServer opened an AF_INET socket*"])
