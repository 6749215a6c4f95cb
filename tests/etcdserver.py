"""
Real etcd servers for the tests: Debian's C{etcd} (3.4, package
C{etcd-server}) on free 127.0.0.1 ports with a temporary data directory.

L{EtcdServer} is one member (started, stopped, killed and started again on
the same ports and data), L{EtcdCluster} a cluster of several.  The
C{etcd} and C{etcdCluster} fixtures start them for one test and stop them
at teardown; a test module uses them with
C{from etcdserver import etcd, etcdCluster  # noqa: F401}.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

import pytest
from harness import HOST, freePort, waitFor

#: Where Debian's etcd-server puts the server.
ETCD = os.environ.get("GATEWAY_TEST_ETCD", shutil.which("etcd") or "/usr/bin/etcd")


def etcdAvailable() -> bool:
    """
    @return: whether an etcd server can be started.
    """
    return os.path.isfile(ETCD) and os.access(ETCD, os.X_OK)


#: Marks tests that need a real etcd: skipped (with the reason) when it is
#: not installed; C{scripts/test.sh} installs it.
requiresEtcd = pytest.mark.skipif(
    not etcdAvailable(), reason=f"no etcd server at {ETCD} (Debian package etcd-server)"
)


class EtcdServer:
    """
    One etcd member on 127.0.0.1.

    @ivar name: the member's name.
    @ivar clientPort: where clients connect.
    @ivar peerPort: where the other members connect.
    @ivar dataDir: its data directory (kept across L{stop} and L{start}).
    @ivar extraArgs: more options for C{etcd} (e.g. C{--max-txn-ops}).
    """

    def __init__(
        self,
        directory: Path,
        name: str = "etcd1",
        clientPort: int = 0,
        peerPort: int = 0,
        initialCluster: Optional[str] = None,
        clusterToken: Optional[str] = None,
        extraArgs: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.directory = Path(directory)
        self.clientPort = clientPort or freePort()
        self.peerPort = peerPort or freePort()
        # Not under the test's directory, which pytest keeps: etcd
        # preallocates 64 MB of log, removed by cleanup().
        self.dataDir = Path(tempfile.mkdtemp(prefix=f"gateway-{name}-")) / "data"
        self.logPath = self.directory / f"{name}.log"
        self.initialCluster = initialCluster or f"{name}={self.peerURL}"
        self.clusterToken = clusterToken or f"gateway-test-{os.getpid()}-{self.peerPort}"
        self.extraArgs = list(extraArgs)
        self.proc: Optional[subprocess.Popen] = None

    @property
    def endpoint(self) -> str:
        """
        @return: C{127.0.0.1:PORT} of its client port.
        """
        return f"{HOST}:{self.clientPort}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    @property
    def peerURL(self) -> str:
        return f"http://{HOST}:{self.peerPort}"

    def command(self) -> List[str]:
        return [
            ETCD,
            "--name",
            self.name,
            "--data-dir",
            str(self.dataDir),
            "--listen-client-urls",
            self.url,
            "--advertise-client-urls",
            self.url,
            "--listen-peer-urls",
            self.peerURL,
            "--initial-advertise-peer-urls",
            self.peerURL,
            "--initial-cluster",
            self.initialCluster,
            "--initial-cluster-state",
            "new",
            "--initial-cluster-token",
            self.clusterToken,
            # Quick elections on loopback: a lost member is replaced fast.
            "--heartbeat-interval",
            "50",
            "--election-timeout",
            "500",
            "--logger",
            "zap",
            "--log-level",
            "warn",
            *self.extraArgs,
        ]

    def spawn(self) -> None:
        """
        Start the process, without waiting for it to serve.
        """
        assert not self.alive(), f"{self.name} is already running"
        with open(self.logPath, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def start(self, timeout: float = 20.0) -> EtcdServer:
        """
        Start the process and wait until it serves requests.
        """
        self.spawn()
        self.waitReady(timeout)
        return self

    def waitReady(self, timeout: float = 20.0) -> None:
        """
        Wait until the member answers a linearizable read (so it has a
        leader).
        """

        def ready() -> bool:
            if not self.alive():
                raise AssertionError(f"etcd {self.name} exited:\n{self.output()}")
            return self.answers()

        waitFor(ready, timeout, 0.05, f"etcd {self.name} to serve")

    def answers(self) -> bool:
        """
        @return: whether a linearizable range on this member succeeds now.
        """
        request = urllib.request.Request(
            self.url + "/v3/kv/range",
            data=json.dumps({"key": "AA=="}).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=1.0) as answer:
                return answer.status == 200 and b"header" in answer.read()
        except (OSError, urllib.error.URLError, ValueError):
            return False

    def status(self) -> dict:
        """
        @return: the member's C{/v3/maintenance/status} answer.
        """
        request = urllib.request.Request(
            self.url + "/v3/maintenance/status",
            data=b"{}",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=2.0) as answer:
            return json.loads(answer.read())

    def isLeader(self) -> bool:
        """
        @return: whether this member is the cluster's leader.
        """
        status = self.status()
        return status.get("leader") == status["header"]["member_id"]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        try:
            return self.logPath.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """
        Stop it cleanly (SIGTERM, then SIGKILL after C{timeout} seconds).
        """
        self._signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """
        Kill it at once: its connections die without a goodbye.
        """
        self._signal(signal.SIGKILL, 10.0)

    def _signal(self, sig: int, timeout: float) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def cleanup(self) -> None:
        """
        Stop it and remove its data directory.
        """
        self.kill()
        shutil.rmtree(self.dataDir.parent, ignore_errors=True)

    def restart(self, downFor: float = 0.0, timeout: float = 20.0) -> None:
        """
        Stop it, wait C{downFor} seconds, and start it again on the same
        ports with the same data.
        """
        self.stop()
        if downFor:
            time.sleep(downFor)
        self.start(timeout)


class EtcdCluster:
    """
    Several etcd members on 127.0.0.1, one cluster.
    """

    def __init__(self, directory: Path, size: int = 3) -> None:
        peers = [(f"etcd{i + 1}", freePort(), freePort()) for i in range(size)]
        initial = ",".join(f"{name}=http://{HOST}:{peer}" for name, _, peer in peers)
        token = f"gateway-test-{os.getpid()}-{peers[0][2]}"
        self.members = [
            EtcdServer(directory, name, client, peer, initialCluster=initial, clusterToken=token)
            for name, client, peer in peers
        ]

    @property
    def endpoints(self) -> List[str]:
        return [member.endpoint for member in self.members]

    def start(self, timeout: float = 30.0) -> EtcdCluster:
        # Every member must run before any of them can elect a leader.
        for member in self.members:
            member.spawn()
        for member in self.members:
            member.waitReady(timeout)
        return self

    def leader(self) -> EtcdServer:
        """
        @return: the member that leads the cluster now.
        """
        for member in self.members:
            if member.alive() and member.isLeader():
                return member
        raise AssertionError("the etcd cluster has no leader")

    def followers(self) -> List[EtcdServer]:
        """
        @return: the running members that do not lead.
        """
        leader = self.leader()
        return [m for m in self.members if m.alive() and m is not leader]

    def stop(self) -> None:
        for member in self.members:
            member.stop()

    def cleanup(self) -> None:
        for member in self.members:
            member.cleanup()


def _tail(server: EtcdServer, lines: int = 20) -> str:
    return "\n".join(server.output().splitlines()[-lines:])


def storeURL(endpoints: List[str], prefix: str = "/gateway") -> str:
    """
    @return: the C{etcd://...} store URL of these endpoints.
    """
    return "etcd://" + ",".join(endpoints) + prefix


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    """
    One etcd member, stopped after the test.
    """
    if not etcdAvailable():
        pytest.skip(f"no etcd server at {ETCD} (Debian package etcd-server)")
    server = EtcdServer(tmp_path)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        server.cleanup()
        print(f"--- {server.logPath} (last lines) ---\n{_tail(server)}")


@pytest.fixture
def etcdCluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    """
    A 3-member etcd cluster, stopped after the test.
    """
    if not etcdAvailable():
        pytest.skip(f"no etcd server at {ETCD} (Debian package etcd-server)")
    cluster = EtcdCluster(tmp_path, 3)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        cluster.cleanup()
        for member in cluster.members:
            print(f"--- {member.logPath} (last lines) ---\n{_tail(member)}")
