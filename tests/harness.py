"""
Helpers for integration tests: real processes on 127.0.0.1.

Integration tests are plain synchronous pytest tests: they start the
gateway (C{twistd -n gateway --config FILE}) and test backends
(C{tests/backend_app.py}) as subprocesses on free loopback ports, talk to
them with L{request}, and stop them at teardown (the C{backends} and
C{gateways} fixtures in C{conftest.py} do the bookkeeping).  Each process
writes its output to a log file, which a failure shows.
"""

from __future__ import annotations

import copy
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import attrs
import yaml

REPO = Path(__file__).resolve().parent.parent
BACKEND_APP = Path(__file__).resolve().parent / "backend_app.py"
HOST = "127.0.0.1"


def freePort() -> int:
    """
    @return: a TCP port on 127.0.0.1 that was free a moment ago.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def subprocessEnv() -> Dict[str, str]:
    """
    @return: the environment for a child process: the repository first on
        C{PYTHONPATH}, so that C{gateway} and the C{twisted/plugins} folder
        are found however the project is installed, and unbuffered output.
    """
    env = dict(os.environ)
    paths = [str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def twistdCommand(*args: str) -> List[str]:
    """
    @return: the command line of the C{twistd} of the running interpreter's
        environment, in the foreground and without a pid file, followed by
        C{args} (the subcommand and its options).
    """
    twistd = Path(sys.executable).parent / "twistd"
    if twistd.exists():
        prefix = [str(twistd)]
    else:
        prefix = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
    return prefix + ["-n", "--pidfile=", *args]


def waitFor(
    predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05, what: str = ""
) -> Any:
    """
    Poll C{predicate} until it returns something true.

    @return: what C{predicate} returned.
    @raise AssertionError: when C{timeout} seconds passed first.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


def peakRSS(pid: int) -> int:
    """
    @return: the peak resident set size (C{VmHWM}) of a live process, in
        bytes.
    """
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise ValueError(f"no VmHWM for process {pid}")


def streamingRSSLimit(pid: int, limit: int) -> int:
    """
    The peak RSS allowed to a process (of this interpreter) that streams a
    large body: C{limit} on CPython.  PyPy starts bigger (the gateway at
    ~135 MB against ~62 MB) and collects garbage later, by a bounded amount
    (~50 MB, the same for 200 MB as for 1 GiB streamed): there, the peak
    RSS now (call this right after the start) plus 80 MB, still well below
    what buffering a 200 MB body would add.

    @param limit: the limit on CPython, in bytes.
    """
    if sys.implementation.name != "pypy":
        return limit
    return peakRSS(pid) + 80 * 1024 * 1024


# -- HTTP ---------------------------------------------------------------------


@attrs.frozen
class Response:
    """
    A complete HTTP answer.

    @ivar headers: the header lines, in order, as C{(name, value)}.
    """

    status: int
    reason: str
    headers: Tuple[Tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> Optional[str]:
        """
        @return: the first value of a header (any case), or L{None}.
        """
        values = self.headerValues(name)
        return values[0] if values else None

    def headerValues(self, name: str) -> List[str]:
        """
        @return: every value of a header (any case), in order.
        """
        return [v for (k, v) in self.headers if k.lower() == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def request(
    method: str,
    url: str,
    body: Any = None,
    headers: Optional[Mapping[str, str]] = None,
    timeout: float = 10.0,
) -> Response:
    """
    Make one HTTP request on a new connection and read the whole answer.

    @param body: L{bytes} as they are, or a JSON value, sent as JSON.
    @return: the answer, whatever its status.
    """
    parts = urllib.parse.urlsplit(url)
    headers = dict(headers or {})
    if body is not None and not isinstance(body, bytes):
        body = json.dumps(body).encode("utf-8")
        headers.setdefault("Content-Type", "application/json")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request(method, target, body=body, headers=headers)
        answer = connection.getresponse()
        data = answer.read()
        return Response(answer.status, answer.reason, tuple(answer.getheaders()), data)
    finally:
        connection.close()


# -- processes ----------------------------------------------------------------


@attrs.define
class Process:
    """
    A child process whose output goes to C{logPath}.
    """

    proc: subprocess.Popen
    logPath: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        """
        @return: everything the process printed so far.
        """
        try:
            return self.logPath.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> Optional[int]:
        """
        Stop the process (and any it started): SIGTERM, then SIGKILL after
        C{timeout} seconds.

        @return: its exit status.
        """
        if self.alive():
            _signalGroup(self.proc, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _signalGroup(self.proc, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


def _signalGroup(proc: subprocess.Popen, sig: int) -> None:
    # Each child leads its own process group (start_new_session), so the
    # group holds exactly what this harness started through it.
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _spawn(command: List[str], logPath: Path, cwd: Optional[Path] = None) -> subprocess.Popen:
    with open(logPath, "ab") as log:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(cwd) if cwd is not None else None,
            env=subprocessEnv(),
            start_new_session=True,
        )


def _failStart(process: Process, what: str) -> AssertionError:
    process.stop()
    return AssertionError(
        f"{what}; exit status {process.proc.returncode}; output ({process.logPath}):\n"
        + process.output()
    )


@attrs.define
class Backend(Process):
    """
    A running C{tests/backend_app.py}.
    """

    name: str = ""
    port: int = 0
    #: The L{BackendTLS} of a backend that speaks TLS, or L{None}.
    tls: Optional[BackendTLS] = None
    host: str = HOST

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def addr(self) -> str:
        """
        @return: C{host:port}, as a server's C{addr}.
        """
        return f"{self.host}:{self.port}"

    def control(self, action: str) -> Any:
        """
        C{POST /control/ACTION}, e.g. C{"fail/500"}, C{"health/down"}.
        """
        answer = self._request("POST", f"/control/{action}")
        assert answer.status == 200, answer
        return answer.json()

    def stats(self) -> Dict[str, Any]:
        """
        @return: C{{"requests": n, "families": {"echo": n, ...},
            "connections": n}}.
        """
        return self._request("GET", "/control/stats").json()

    def _request(self, method: str, path: str) -> Response:
        if self.tls is None:
            return request(method, f"{self.url}{path}")
        return tlsRequest(method, self.port, path, self.tls)


def tlsRequest(
    method: str, port: int, path: str, tls: BackendTLS, timeout: float = 10.0
) -> Response:
    """
    A request to a TLS backend of these tests (its certificate is not
    verified), with the client certificate of C{tls}, if any.
    """
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if tls.clientCert is not None:
        context.load_cert_chain(*tls.clientCert)
    connection = http.client.HTTPSConnection(HOST, port, timeout=timeout, context=context)
    try:
        connection.request(method, path)
        answer = connection.getresponse()
        data = answer.read()
        return Response(answer.status, answer.reason, tuple(answer.getheaders()), data)
    finally:
        connection.close()


@attrs.frozen
class BackendTLS:
    """
    The TLS of a test backend: its certificate and key files; with
    C{clientCA}, it requires client certificates that CA signed, and the
    harness presents C{clientCert} (C{(certFile, keyFile)}) for its own
    control requests.
    """

    cert: str
    key: str
    clientCA: Optional[str] = None
    clientCert: Optional[Tuple[str, str]] = None


def startBackend(
    name: str,
    logDir: Path,
    port: int = 0,
    timeout: float = 15.0,
    python: Optional[str] = None,
    tls: Optional[BackendTLS] = None,
    host: str = HOST,
) -> Backend:
    """
    Start a test backend and wait until it listens.

    @param port: 0 for any free port.
    @param python: the interpreter to run it with; by default this one.
    @param tls: a L{BackendTLS}: speak HTTPS (requiring client
        certificates when it names a C{clientCA}).
    @param host: the loopback address it listens on (another than
        127.0.0.1, such as 127.0.0.2, for backends that a host name's
        several addresses reach on one port).
    """
    logPath = Path(logDir) / f"backend-{name}.log"
    command = [python or sys.executable, str(BACKEND_APP), "--name", name, "--port", str(port)]
    command += ["--host", host]
    if tls is not None:
        command += ["--tls-cert", tls.cert, "--tls-key", tls.key]
        if tls.clientCA is not None:
            command += ["--tls-client-ca", tls.clientCA]
    backend = Backend(_spawn(command, logPath), logPath, name=name, tls=tls, host=host)

    def ready() -> Optional[int]:
        for line in backend.output().splitlines():
            if line.startswith("READY "):
                return int(line.split()[1])
        if not backend.alive():
            raise _failStart(backend, f"backend {name} exited before it listened")
        return None

    try:
        backend.port = waitFor(ready, timeout, what=f"backend {name} to listen")
    except AssertionError as e:
        raise _failStart(backend, str(e))
    return backend


def _endpointURL(listen: Optional[str]) -> Optional[str]:
    """
    @return: the C{http://host:port} of a C{tcp:} endpoint string, or
        L{None} for other kinds of endpoint.
    """
    if not listen:
        return None
    kind, _, rest = listen.partition(":")
    if kind != "tcp":
        return None
    port, interface = None, HOST
    for i, arg in enumerate(rest.split(":")):
        key, eq, value = arg.partition("=")
        if not eq and i == 0:
            port = key
        elif key == "port":
            port = value
        elif key == "interface" and value not in ("", "0.0.0.0"):
            interface = value
    return f"http://{interface}:{port}" if port else None


def prepareConfig(config: Union[str, Mapping[str, Any]]) -> Tuple[str, Dict[str, Any]]:
    """
    Turn a test's config into the text of a config file.

    A mapping is copied, and each of its C{proxy} and C{admin} sections
    without a C{listen} gets a free port on 127.0.0.1; a C{proxy} section
    without C{workers} gets C{workers: 1} (the tests run one process unless
    they ask for more; C{workers: None} leaves the gateway's default).  YAML
    text is used as it is.

    @return: C{(yaml text, parsed data)}.
    """
    if isinstance(config, str):
        data = yaml.safe_load(config)
        return config, data if isinstance(data, dict) else {}
    data = copy.deepcopy(dict(config))
    for role in ("proxy", "admin"):
        section = data.get(role)
        if isinstance(section, dict) and "listen" not in section:
            section["listen"] = f"tcp:{freePort()}:interface={HOST}"
    proxy = data.get("proxy")
    if isinstance(proxy, dict):
        proxy.setdefault("workers", 1)
    return yaml.safe_dump(data, sort_keys=False), data


def _writeConfig(text: str, directory: Path) -> Path:
    n = 1
    while (directory / f"gateway{n}.yaml").exists():
        n += 1
    path = directory / f"gateway{n}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@attrs.define
class GatewayProcess(Process):
    """
    A running C{twistd gateway}.

    @ivar proxyURL: C{http://127.0.0.1:PORT} of the proxy, or L{None}.
    @ivar adminURL: the same for the admin, or L{None}.
    @ivar token: the admin token, or L{None}.
    """

    configPath: Optional[Path] = None
    proxyURL: Optional[str] = None
    adminURL: Optional[str] = None
    token: Optional[str] = None

    def admin(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: Optional[Mapping[str, str]] = None,
        timeout: float = 10.0,
    ) -> Response:
        """
        A request to the admin, with the bearer token when there is one.

        @param path: from the root, e.g. C{/api/v1/servers}.
        """
        assert self.adminURL is not None, "this gateway runs no admin"
        allHeaders = {}
        if self.token is not None:
            allHeaders["Authorization"] = f"Bearer {self.token}"
        allHeaders.update(headers or {})
        return request(method, self.adminURL + path, body, allHeaders, timeout)

    def proxy(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: Optional[Mapping[str, str]] = None,
        timeout: float = 10.0,
    ) -> Response:
        """
        A request through the proxy.
        """
        assert self.proxyURL is not None, "this gateway runs no proxy"
        return request(method, self.proxyURL + path, body, headers, timeout)


def _answers(url: str, path: str) -> bool:
    try:
        request("GET", url + path, timeout=1.0)
    except (OSError, http.client.HTTPException):
        return False
    return True


def _accepts(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=1.0):
            return True
    except OSError:
        return False


def startGateway(
    config: Union[str, Mapping[str, Any]],
    directory: Path,
    timeout: float = 15.0,
    twistdArgs: Sequence[str] = (),
) -> GatewayProcess:
    """
    Write a config file into C{directory} and run C{twistd -n gateway
    --config FILE} there, until its admin answers C{GET /healthz} and its
    proxy accepts connections.

    @param config: a mapping (see L{prepareConfig}: listen endpoints are
        filled in) or YAML text.
    @param twistdArgs: twistd's own options, before C{gateway}.
    @raise AssertionError: with the gateway's output, when it exits or is
        not ready within C{timeout} seconds.
    """
    directory = Path(directory)
    text, data = prepareConfig(config)
    configPath = _writeConfig(text, directory)
    logPath = configPath.with_suffix(".log")
    admin = data.get("admin") if isinstance(data.get("admin"), dict) else {}
    proxy = data.get("proxy") if isinstance(data.get("proxy"), dict) else {}
    gateway = GatewayProcess(
        _spawn(
            twistdCommand(*twistdArgs, "gateway", "--config", str(configPath)),
            logPath,
            cwd=directory,
        ),
        logPath,
        configPath=configPath,
        proxyURL=_endpointURL(proxy.get("listen")),
        adminURL=_endpointURL(admin.get("listen")),
        token=admin.get("token"),
    )

    def ready() -> bool:
        if not gateway.alive():
            raise _failStart(gateway, "the gateway exited during its start")
        if gateway.adminURL is not None and not _answers(gateway.adminURL, "/healthz"):
            return False
        return gateway.proxyURL is None or _accepts(gateway.proxyURL)

    try:
        waitFor(ready, timeout, interval=0.1, what="the gateway to listen")
    except AssertionError as e:
        if gateway.alive():
            raise _failStart(gateway, str(e))
        raise
    return gateway


def runGatewayExpectingFailure(
    config: Union[str, Mapping[str, Any], None],
    directory: Path,
    timeout: float = 20.0,
    configPath: Optional[Path] = None,
) -> Tuple[int, str]:
    """
    Run the gateway with a config that must stop its start.

    @param config: as for L{startGateway}; L{None} to write no file and
        pass C{configPath} as it is (a missing file, a directory).
    @return: C{(exit status, everything it printed)}.
    @raise AssertionError: when it is still running after C{timeout}
        seconds (it has been killed then).
    """
    directory = Path(directory)
    if config is not None:
        configPath = _writeConfig(prepareConfig(config)[0], directory)
    assert configPath is not None, "give a config or a configPath"
    try:
        done = subprocess.run(
            twistdCommand("gateway", "--config", str(configPath)),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=str(directory),
            env=subprocessEnv(),
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        output = (e.output or b"").decode("utf-8", "replace")
        raise AssertionError(
            f"the gateway was still running after {timeout} s with a bad config:\n{output}"
        )
    return done.returncode, done.stdout.decode("utf-8", "replace")


# -- WebSocket pass-through: a real WebSocket backend ---------------------------------

WS_BACKEND_APP = Path(__file__).resolve().parent / "ws_backend.py"


@attrs.define
class WebSocketBackend(Process):
    """
    A running C{tests/ws_backend.py} (a WebSocket echo server).
    """

    port: int = 0

    @property
    def addr(self) -> str:
        return f"{HOST}:{self.port}"

    def stats(self) -> Dict[str, Any]:
        """
        @return: its C{GET /stats}: C{connections}, C{open}, C{closeCodes},
            C{handshakes}.
        """
        answer = request("GET", f"http://{self.addr}/stats")
        assert answer.status == 200, answer
        return answer.json()


def startWebSocketBackend(logDir: Path, timeout: float = 20.0) -> WebSocketBackend:
    """
    Start a WebSocket echo server on a free port and wait until it listens.
    """
    logPath = Path(logDir) / "ws-backend.log"
    command = [sys.executable, str(WS_BACKEND_APP), "--port", "0"]
    backend = WebSocketBackend(_spawn(command, logPath), logPath)

    def ready() -> Optional[int]:
        for line in backend.output().splitlines():
            if line.startswith("READY "):
                return int(line.split()[1])
        if not backend.alive():
            raise _failStart(backend, "the WebSocket backend exited before it listened")
        return None

    try:
        backend.port = waitFor(ready, timeout, what="the WebSocket backend to listen")
    except AssertionError as e:
        raise _failStart(backend, str(e))
    return backend
