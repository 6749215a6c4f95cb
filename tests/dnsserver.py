"""
A real DNS server for the integration tests: C{tests/dns_app.py} (Twisted
Names, records from a dict) on a free UDP port of 127.0.0.1, driven
through its control port.

The C{dnsServer} fixture starts one for a test and stops it at teardown; a
test module uses it with C{from dnsserver import dnsServer  # noqa: F401}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest
from harness import HOST, Process, _spawn, request, waitFor

DNS_APP = Path(__file__).resolve().parent / "dns_app.py"


class DNSServer:
    """
    A running C{tests/dns_app.py}.

    @ivar port: its DNS port (UDP), kept across L{stop} and L{start}.
    @ivar records: the records it was last given (L{setRecords}).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.port = 0
        self.controlPort = 0
        self.records: Dict[str, Any] = {}
        self.process: Optional[Process] = None

    @property
    def nameserver(self) -> str:
        """
        @return: C{127.0.0.1:PORT}, as C{resolver.nameservers} takes it.
        """
        return f"{HOST}:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        """
        Start it (on the port it had, when it ran before) with the records
        it was last given, and wait until it answers.
        """
        logPath = self.directory / "dns.log"
        command = [sys.executable, str(DNS_APP), "--port", str(self.port)]
        if self.records:
            # Answered from its first query on.
            recordsPath = self.directory / "dns-records.json"
            recordsPath.write_text(json.dumps(self.records), encoding="utf-8")
            command += ["--records", str(recordsPath)]
        # The log keeps the lines of earlier runs: this run's READY is the
        # one after them.
        earlier = len(self._readyLines(logPath))
        process = self.process = Process(_spawn(command, logPath), logPath)

        def ready() -> Optional[str]:
            lines = self._readyLines(logPath)
            if len(lines) > earlier:
                return lines[-1]
            if not process.alive():
                raise AssertionError(f"the DNS server exited:\n{process.output()}")
            return None

        line = waitFor(ready, timeout, what="the DNS server to listen")
        _, port, control = line.split()
        self.port, self.controlPort = int(port), int(control)

    @staticmethod
    def _readyLines(logPath: Path) -> List[str]:
        try:
            text = logPath.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if line.startswith("READY ")]

    def stop(self) -> None:
        """
        Stop it: queries go unanswered (clients time out).
        """
        if self.process is not None:
            self.process.stop()
            self.process = None

    def _control(self, method: str, path: str, body: Any = None) -> Any:
        answer = request(method, f"http://{HOST}:{self.controlPort}{path}", body)
        assert answer.status == 200, answer
        return answer.json()

    def setRecords(self, records: Dict[str, Any]) -> None:
        """
        Serve these records from now on (see C{tests/dns_app.py}).
        """
        self.records = records
        self._control("PUT", "/records", records)

    def mode(self, mode: str) -> None:
        """
        C{"answer"}, C{"servfail"} or C{"drop"}.
        """
        self._control("POST", f"/mode/{mode}")

    def queries(self) -> Dict[str, int]:
        """
        @return: C{{"NAME TYPE": count}} of the queries received.
        """
        return dict(self._control("GET", "/queries"))


@pytest.fixture
def dnsServer(tmp_path: Path) -> Iterator[DNSServer]:
    """
    A started L{DNSServer}, stopped at the end of the test.
    """
    server = DNSServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
