"""
A real Redis for the tests: Debian's C{redis-server} (package
C{redis-server}) on a free 127.0.0.1 port, without persistence.

L{RedisServer} is started, killed and started again on the same port; the
C{redis} fixture starts one for a test and stops it at teardown (a test
module uses it with C{from redisserver import redis  # noqa: F401}).
L{RedisServer.call} speaks RESP over a plain socket, for the test's own
look at the server.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any, Iterator, List, Optional

import pytest
from harness import HOST, freePort, waitFor

from gateway.redis.protocol import encodeCommand, parseReply

#: Where Debian's redis-server puts the server.
REDIS = os.environ.get(
    "GATEWAY_TEST_REDIS", shutil.which("redis-server") or "/usr/bin/redis-server"
)


def redisAvailable() -> bool:
    """
    @return: whether a Redis server can be started.
    """
    return os.path.isfile(REDIS) and os.access(REDIS, os.X_OK)


class RedisServer:
    """
    One C{redis-server} on 127.0.0.1.

    @ivar port: where it listens (the same after L{start} again).
    """

    def __init__(self, directory: Path, port: int = 0, extraArgs: List[str] = ()) -> None:  # type: ignore[assignment]
        self.directory = Path(directory)
        self.port = port or freePort()
        self.logPath = self.directory / f"redis-{self.port}.log"
        self.extraArgs = list(extraArgs)
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def command(self) -> List[str]:
        return [
            REDIS,
            "--port",
            str(self.port),
            "--bind",
            HOST,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
            "--protected-mode",
            "yes",
            *self.extraArgs,
        ]

    def start(self, timeout: float = 10.0) -> RedisServer:
        """
        Start it and wait until it answers C{PING}.
        """
        assert not self.alive(), "redis is already running"
        with open(self.logPath, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def ready() -> bool:
            if not self.alive():
                raise AssertionError(f"redis-server exited:\n{self.output()}")
            try:
                return self.call("PING") == b"PONG"
            except OSError:
                return False

        waitFor(ready, timeout, 0.02, "redis-server to answer")
        return self

    def call(self, *args: Any, timeout: float = 2.0) -> Any:
        """
        Run one command on a new connection.

        @return: its reply (see L{gateway.redis.protocol.parseReply}).
        """
        with socket.create_connection((HOST, self.port), timeout=timeout) as s:
            s.sendall(encodeCommand(tuple(args)))
            buffer = b""
            while True:
                data = s.recv(65536)
                if not data:
                    raise OSError("redis closed the connection")
                buffer += data
                parsed = parseReply(buffer)
                if parsed is not None:
                    return parsed[0]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        try:
            return self.logPath.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        """
        Kill it at once (its clients' connections die).
        """
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def pause(self) -> None:
        """
        Stop it answering (SIGSTOP): connections stay, replies do not come.
        """
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGCONT)


#: Marks tests that need a real Redis: skipped (with the reason) when it is
#: not installed; C{scripts/test.sh} installs it.
requiresRedis = pytest.mark.skipif(
    not redisAvailable(), reason=f"no redis-server at {REDIS} (Debian package redis-server)"
)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    """
    One Redis server, stopped after the test.
    """
    if not redisAvailable():
        pytest.skip(f"no redis-server at {REDIS} (Debian package redis-server)")
    server = RedisServer(tmp_path)
    try:
        server.start()
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            # A paused server would not stop.
            os.killpg(server.proc.pid, signal.SIGCONT)
        server.stop()
        print(
            f"--- {server.logPath} (last lines) ---\n"
            + "\n".join(server.output().splitlines()[-10:])
        )
