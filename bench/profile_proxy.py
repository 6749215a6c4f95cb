"""
Where the gateway's CPU goes, per request: a reproducible measurement for
profile-guided work on the hot path (127.0.0.1 only).

    .venv/bin/python bench/profile_proxy.py [--runs 3] [--duration 5]
        [--profile] [--top 40] [--mode gateway|site|lean|raw|raw-proxy|micro]
        [--path /plain] [--tree DIR] [--reactor gateway|epoll]
        [--gc-threshold N] [--access-log on|off|ab]

(or C{.venv-pypy/bin/python} for PyPy, where C{--profile} samples with
C{vmprof}).

It starts an nginx backend (the one of C{bench/run.py}, a 96-byte JSON
answer), then a server in a child process of its own:

  - C{gateway}: the gateway of C{bench/run.py}'s config (the shipped
    configuration: no filter, the access log on, its lines on the child's
    standard output, a file; C{--access-log off} turns it off; one process),
    served in-process by L{gateway.process.root.makeService};
  - C{site}: a bare C{twisted.web} L{Site} whose resource answers the same
    96 bytes itself (no upstream): what the server side costs alone;
  - C{raw}: a bare L{Protocol} that answers each request head with the
    same bytes (no HTTP machinery): what the reactor and sockets cost.

and drives C{wrk -t1 -cN} at it: a warm-up, then C{--runs} runs, reading
the child's CPU time (utime + stime from C{/proc}) around each.  It prints
each run's requests per second and CPU microseconds per request, their
medians, and the load average.  With C{--profile}, the child runs
L{cProfile} during one more run (the profiler slows it down: its figures
are not counted) and the top functions by total time are printed.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, List, Optional, Tuple

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import run as benchrun  # noqa: E402

BODY = benchrun.BODY.encode("ascii")


# -- the child: one server --------------------------------------------------


class _Profiling:
    """
    Toggles a L{cProfile.Profile} on C{SIGUSR1} (start) and C{SIGUSR2}
    (stop and dump to C{path}).
    """

    def __init__(self, path: str) -> None:
        import cProfile

        self._path = path
        self._profile = cProfile.Profile()
        signal.signal(signal.SIGUSR1, self._start)
        signal.signal(signal.SIGUSR2, self._stop)

    def _start(self, signum: int, frame: Any) -> None:
        self._profile.enable()

    def _stop(self, signum: int, frame: Any) -> None:
        self._profile.disable()
        self._profile.dump_stats(self._path)


class _VMProfiling:
    """
    On PyPy, where cProfile sees no JIT-compiled code as it runs: toggles
    the C{vmprof} sampling profiler (C{pip install vmprof} into the PyPy
    venv) on C{SIGUSR1} and C{SIGUSR2}, into C{path}.
    """

    def __init__(self, path: str) -> None:
        import vmprof

        self._vmprof = vmprof
        self._path = path
        self._file: Any = None
        signal.signal(signal.SIGUSR1, self._start)
        signal.signal(signal.SIGUSR2, self._stop)

    def _start(self, signum: int, frame: Any) -> None:
        self._file = open(self._path + ".tmp", "w+b")
        self._vmprof.enable(self._file.fileno(), period=0.0005)

    def _stop(self, signum: int, frame: Any) -> None:
        self._vmprof.disable()
        self._file.close()
        os.rename(self._path + ".tmp", self._path)


def printVMProfile(path: str, top: int) -> None:
    """
    Print the functions with the most samples at the top of the stack
    (self) and anywhere in it (inclusive), from a C{vmprof} file.
    """
    import collections

    import vmprof

    stats = vmprof.read_profile(path)
    own: collections.Counter = collections.Counter()
    anywhere: collections.Counter = collections.Counter()
    total = 0
    for profile in stats.profiles:
        stack = profile[0]
        count = profile[1] if len(profile) > 1 and isinstance(profile[1], int) else 1
        names = [stats.get_addr_info(addr) for addr in stack]
        names = [n for n in names if n]
        if not names:
            continue
        total += count

        def label(info: Any) -> str:
            kind, name, line, filename = info
            for marker in ("site-packages/", "/work/main/", "lib_pypy/", "lib-python/"):
                if marker in filename:
                    filename = filename.split(marker, 1)[1]
            return f"{name} {filename}:{line}"

        own[label(names[-1])] += count
        for seen in {label(n) for n in names}:
            anywhere[seen] += count
    print(f"\nvmprof: {total} samples")
    print("--- self")
    for name, count in own.most_common(top):
        print(f"{count / total * 100:6.1f}%  {name}")
    print("--- inclusive")
    for name, count in anywhere.most_common(top):
        print(f"{count / total * 100:6.1f}%  {name}")


def _useChannel(channel: str) -> None:
    """
    Make the proxy site use another channel than its own: C{twisted} (the
    plain L{HTTPChannel}) or C{gateway} (L{GatewayHTTPChannel}).
    """
    from gateway.process.sites import GatewaySite

    if channel == "twisted":
        from twisted.web import server

        GatewaySite.protocol = server.Site.protocol
    elif channel == "gateway":
        from gateway.http.channel import GatewayHTTPChannel

        GatewaySite.protocol = GatewayHTTPChannel


def _serveGateway(configPath: str, channel: str) -> None:
    from twisted.internet import reactor

    from gateway.filters import FilterRegistry
    from gateway.model.config import loadConfig
    from gateway.process.root import makeService
    from gateway.process.startup import Abort

    _useChannel(channel)
    config = loadConfig(configPath)
    service = makeService(config, reactor, FilterRegistry.fromPlugins(), Abort(reactor))
    service.privilegedStartService()
    reactor.callWhenRunning(service.startService)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    listen = config.proxy.listen
    # (One endpoint string, or a tuple of them since several may be given.)
    first = listen if isinstance(listen, str) else listen[0]
    port = int(first.split(":")[1])
    reactor.callWhenRunning(print, f"READY {port}", flush=True)


def _serveSite(channel: str, requests: str) -> None:
    from twisted.internet import reactor
    from twisted.web import resource, server

    class Constant(resource.Resource):
        isLeaf = True

        def render(self, request: Any) -> bytes:
            request.responseHeaders.setRawHeaders(b"content-type", [b"application/json"])
            return BODY

    site = server.Site(Constant())
    if requests == "gateway":
        from gateway.http.request import GatewayRequest

        site.requestFactory = GatewayRequest
    if channel == "gateway":
        from gateway.http.channel import GatewayHTTPChannel

        site.protocol = GatewayHTTPChannel  # type: ignore[assignment]
    port = reactor.listenTCP(0, site, interface=benchrun.HOST)
    reactor.callWhenRunning(print, f"READY {port.getHost().port}", flush=True)


def _serveRaw() -> None:
    from twisted.internet import protocol, reactor

    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (len(BODY), BODY)
    )

    class Raw(protocol.Protocol):
        buffer = b""

        def dataReceived(self, data: bytes) -> None:
            # Enough for wrk's GETs: one answer per request head.
            buffer = self.buffer + data
            heads = buffer.count(b"\r\n\r\n")
            if heads:
                self.transport.write(answer * heads)
                buffer = buffer[buffer.rindex(b"\r\n\r\n") + 4 :]
            self.buffer = buffer

    factory = protocol.Factory.forProtocol(Raw)
    port = reactor.listenTCP(0, factory, interface=benchrun.HOST)
    reactor.callWhenRunning(print, f"READY {port.getHost().port}", flush=True)


def _serveLean() -> None:
    """
    A sketch of a lean HTTP/1.1 server protocol, for what one would cost:
    each request head parsed in one pass (request line, header fields into
    a dict, C{Content-Length} framing, C{Connection: close}), a small
    request object, and the answer's head built and written in one piece,
    with C{Server} and C{Date}.  No timers, no bodies: an estimate, not a
    server.
    """
    from twisted.internet import protocol, reactor

    from gateway.http.headers import httpDate

    class LeanRequest:
        __slots__ = ("method", "target", "version", "headers", "channel")

        def __init__(self, channel: Any, method: bytes, target: bytes, version: bytes) -> None:
            self.channel = channel
            self.method = method
            self.target = target
            self.version = version
            self.headers: dict = {}

    class Lean(protocol.Protocol):
        buffer = b""

        def dataReceived(self, data: bytes) -> None:
            buffer = self.buffer + data
            while True:
                end = buffer.find(b"\r\n\r\n")
                if end == -1:
                    break
                lines = buffer[:end].split(b"\r\n")
                buffer = buffer[end + 4 :]
                method, target, version = lines[0].split(b" ")
                request = LeanRequest(self, method, target, version)
                headers = request.headers
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    headers[name.lower()] = value.strip(b" \t")
                self.answer(request)
            self.buffer = buffer

        def answer(self, request: LeanRequest) -> None:
            close = headersClose(request.headers)
            head = [
                b"HTTP/1.1 200 OK\r\nServer: lean\r\nDate: ",
                httpDate(reactor.seconds()),
                b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % (len(BODY),),
                b"Connection: close\r\n\r\n" if close else b"\r\n",
                BODY,
            ]
            self.transport.write(b"".join(head))
            if close:
                self.transport.loseConnection()

    def headersClose(headers: dict) -> bool:
        return b"close" in headers.get(b"connection", b"").lower()

    port = reactor.listenTCP(0, protocol.Factory.forProtocol(Lean), interface=benchrun.HOST)
    reactor.callWhenRunning(print, f"READY {port.getHost().port}", flush=True)


def _serveRawProxy(backend: str) -> None:
    """
    The floor of a proxy on Twisted: each client connection gets its own
    upstream connection; a request head is answered by sending a fixed
    request upstream and relaying the answer's bytes (framed by its
    C{Content-Length}) as they are.  No HTTP machinery, no headers
    rewritten: only the reactor and two sockets per request.
    """
    from twisted.internet import protocol, reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    host, port = backend.split(":")
    upstreamRequest = b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % (backend.encode(),)

    class Upstream(protocol.Protocol):
        def __init__(self, client: Any) -> None:
            self.client = client
            self.buffer = b""

        def dataReceived(self, data: bytes) -> None:
            buffer = self.buffer + data
            while True:
                end = buffer.find(b"\r\n\r\n")
                if end == -1:
                    break
                start = buffer.find(b"Content-Length: ", 0, end) + 16
                length = int(buffer[start : buffer.find(b"\r\n", start)])
                total = end + 4 + length
                if len(buffer) < total:
                    break
                self.client.transport.write(buffer[:total])
                buffer = buffer[total:]
            self.buffer = buffer

    class Client(protocol.Protocol):
        upstream: Any = None
        buffer = b""
        waiting = 0

        def connectionMade(self) -> None:
            endpoint = TCP4ClientEndpoint(reactor, host, int(port))
            connectProtocol(endpoint, Upstream(self)).addCallback(self._connected)

        def _connected(self, upstream: Any) -> None:
            self.upstream = upstream
            if self.waiting:
                upstream.transport.write(upstreamRequest * self.waiting)
                self.waiting = 0

        def dataReceived(self, data: bytes) -> None:
            buffer = self.buffer + data
            heads = buffer.count(b"\r\n\r\n")
            if heads:
                if self.upstream is None:
                    self.waiting += heads
                else:
                    self.upstream.transport.write(upstreamRequest * heads)
                buffer = buffer[buffer.rindex(b"\r\n\r\n") + 4 :]
            self.buffer = buffer

        def connectionLost(self, reason: Any) -> None:
            if self.upstream is not None:
                self.upstream.transport.loseConnection()

    factory = protocol.Factory.forProtocol(Client)
    listening = reactor.listenTCP(0, factory, interface=benchrun.HOST)
    reactor.callWhenRunning(print, f"READY {listening.getHost().port}", flush=True)


def _eagerWrites() -> None:
    """
    An experiment, for what it would save: TCP transports send at once
    when nothing is buffered, instead of waiting for the reactor to report
    the socket writable (two C{epoll_ctl} calls and a dispatch per write).
    """
    from twisted.internet import tcp

    write = tcp.Connection.write

    def eagerWrite(self: Any, data: bytes) -> None:
        if (
            not self.dataBuffer
            and not self._tempDataBuffer
            and self.connected
            and not self.disconnecting
        ):
            try:
                sent = self.socket.send(data)
            except OSError:
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        write(self, data)

    tcp.Connection.write = eagerWrite


def _ifThere(module: str, name: str) -> Any:
    """
    @return: C{module.name}, or a function that does nothing when the tree
        served (C{--tree}) is from before it.
    """
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return lambda: None


def serve(options: argparse.Namespace) -> int:
    if options.gc_threshold is not None:
        import gc

        if options.gc_threshold == 0:
            gc.disable()
        else:
            gc.set_threshold(options.gc_threshold, *gc.get_threshold()[1:])
    elif options.mode == "gateway":
        # As twistd gateway does.
        _ifThere("gateway.process.interpreter", "tuneGC")()
    if options.reactor == "gateway":
        _ifThere("gateway.http.reactor", "installIfNone")()
    from twisted.internet import reactor

    if options.eager_writes:
        _eagerWrites()

    if options.profile_out:
        if platform.python_implementation() == "PyPy":
            _VMProfiling(options.profile_out)
        else:
            _Profiling(options.profile_out)
    if options.mode == "gateway":
        _serveGateway(options.serve, options.channel)
    elif options.mode == "site":
        _serveSite(options.channel, options.requestClass)
    elif options.mode == "lean":
        _serveLean()
    elif options.mode == "raw-proxy":
        _serveRawProxy(options.serve)
    else:
        _serveRaw()
    reactor.run()
    return 0


# -- the parent: measure ----------------------------------------------------


def cpuSeconds(pid: int) -> Tuple[float, float]:
    """
    @return: C{(user, system)} CPU seconds of a process.
    """
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read().decode("latin-1")
    fields = data[data.rindex(")") + 2 :].split()
    return int(fields[11]) / benchrun.CLK_TCK, int(fields[12]) / benchrun.CLK_TCK


def loadAverage() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def printProfile(path: str, top: int, requests: int) -> None:
    import pstats

    stats = pstats.Stats(path)
    total = stats.total_tt
    perRequest = total / requests * 1e6
    print(f"\ncProfile: {total:.2f} s over {requests} requests ({perRequest:.0f} µs/req)")
    print("(profiler overhead included; shares matter, not absolutes)\n")
    rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)[:top]
    print(f"{'tottime %':>9} {'µs/req':>7} {'cum µs/req':>10} {'calls/req':>9}  function")
    for (filename, line, name), (_, nc, tt, ct, _) in rows:
        where = filename
        for marker in ("site-packages/", "/work/main/"):
            if marker in where:
                where = where.split(marker, 1)[1]
        print(
            f"{tt / total * 100:8.1f}% {tt / requests * 1e6:7.1f} {ct / requests * 1e6:10.1f} "
            f"{nc / requests:9.2f}  {where}:{line}({name})"
        )


def measureAll(options: argparse.Namespace) -> int:
    if options.tree:
        # The server imports the gateway (and its plugins) from that tree.
        benchrun.REPO = Path(options.tree).resolve()
    workDir = Path(tempfile.mkdtemp(prefix="gateway-profile-"))
    children = benchrun.Children(workDir)
    wrk = benchrun.Wrk(1, options.connections, options.duration, 5)
    try:
        backend, backendPort = benchrun.nginxBackend(children)
        argv = [sys.executable, str(Path(__file__).resolve()), "--mode", options.mode]
        argv += ["--channel", options.channel, "--requests-class", options.requestClass]
        if options.eager_writes:
            argv.append("--eager-writes")
        argv += ["--reactor", options.reactor]
        if options.gc_threshold is not None:
            argv += ["--gc-threshold", str(options.gc_threshold)]
        path = options.path
        if options.mode == "gateway":
            port = benchrun.freePort()
            config = benchrun.gatewayConfig(
                port, backendPort, workers=1, where="proxy", accessLog=options.access_log == "on"
            )
            config["store"] = "memory:"
            import yaml

            configPath = workDir / "gateway.yaml"
            configPath.write_text(yaml.safe_dump(config, sort_keys=False))
            argv += ["--serve", str(configPath)]
        elif options.mode == "raw-proxy":
            argv += ["--serve", f"{benchrun.HOST}:{backendPort}"]
        else:
            argv += ["--serve", "-"]
        profileOut = str(workDir / "proxy.prof")
        if options.profile:
            argv += ["--profile-out", profileOut]
        child = children.start("server", argv)
        port = int(child.waitForLine(r"^READY (\d+)$", 60).group(1))
        url = f"http://{benchrun.HOST}:{port}{path}"
        benchrun.waitForHTTP(child, port, path, 30)
        print(
            f"{options.mode} (channel: {options.channel}): {url}, "
            f"wrk -t1 -c{options.connections} -d{options.duration:g}s"
        )
        print(f"load average before: {loadAverage()}")
        if options.warmup:
            wrk.run(url, options.warmup)
        rates: List[float] = []
        costs: List[float] = []
        for i in range(options.runs):
            before = cpuSeconds(child.pid)
            result = wrk.run(url)
            after = cpuSeconds(child.pid)
            user, system = after[0] - before[0], after[1] - before[1]
            requests = result["requests"]
            cost = (user + system) / requests * 1e6 if requests else float("nan")
            systemCost = system / requests * 1e6 if requests else float("nan")
            rates.append(result["reqPerSec"])
            costs.append(cost)
            bad = result["non2xx"] + result["socketErrors"]
            print(
                f"  run {i + 1}: {result['reqPerSec']:8,.0f} req/s  {cost:6.1f} µs/req"
                f" (sys {systemCost:5.1f})"
                f"  p99 {result['p99Ms']:.1f} ms"
                + (f"  ({bad} errors/non-2xx)" if bad else "")
                + f"  load {loadAverage()}"
            )
        print(
            f"median: {benchrun.median(rates):,.0f} req/s, {benchrun.median(costs):.1f} µs/req"
            f"  (min {min(costs):.1f}, max {max(costs):.1f}); load after: {loadAverage()}"
        )
        if options.profile:
            os.kill(child.pid, signal.SIGUSR1)
            result = wrk.run(url)
            os.kill(child.pid, signal.SIGUSR2)
            deadline = time.monotonic() + 30
            while not os.path.exists(profileOut) and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.5)
            if platform.python_implementation() == "PyPy":
                printVMProfile(profileOut, options.top)
            else:
                printProfile(profileOut, options.top, result["requests"])
        return 0
    finally:
        children.stopAll()


# -- in-process: the Python-side cost alone ------------------------------------

#: The answer nginx gives the benchmark's requests.
_UPSTREAM_ANSWER = (
    b"HTTP/1.1 200 OK\r\n"
    b"Server: nginx/1.22.1\r\n"
    b"Date: Mon, 23 Nov 2026 23:55:23 GMT\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: %d\r\n"
    b"Connection: keep-alive\r\n\r\n" % (len(BODY),)
) + BODY


class _MemoryEndpoints:
    """
    Stands in for L{gateway.http.connect.CachedEndpointFactory}: every
    endpoint connects at once to a L{StringTransport}, and the protocols
    connected so are kept for the driver to answer on.
    """

    def __init__(self) -> None:
        self.connected: List[Any] = []

    def endpointForURI(self, uri: Any) -> Any:
        return self

    def endpointFor(self, host: bytes, port: int, tls: Any = None) -> Any:
        return self

    def connect(self, factory: Any) -> Any:
        from twisted.internet.address import IPv4Address
        from twisted.internet.defer import succeed
        from twisted.internet.testing import StringTransport

        address = IPv4Address("TCP", "127.0.0.1", 8081)
        protocol = factory.buildProtocol(address)
        protocol.makeConnection(
            StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 40001), peerAddress=address)
        )
        self.connected.append(protocol)
        return succeed(protocol)


def _microGateway(options: argparse.Namespace, accessLog: bool) -> Any:
    """
    @return: C{one}, which serves one request through an in-process
        gateway (see L{micro}) with the access log on or off, and C{one.out},
        the client's transport.
    """
    import yaml
    from twisted.internet.address import IPv4Address
    from twisted.internet.testing import MemoryReactorClock, StringTransport

    from gateway.filters import FilterRegistry
    from gateway.http.client import HTTP11UpstreamClient
    from gateway.model.config import parseConfig
    from gateway.process.root import makeService
    from gateway.process.sites import GatewaySite
    from gateway.process.startup import Abort

    setting: Any = False
    if accessLog:
        # A file, as the shipped configuration's standard output is in a
        # benchmark: written when 64 KiB are buffered (no reactor here to
        # fire the flush timer).
        logFile = tempfile.NamedTemporaryFile(prefix="gateway-micro-access-", suffix=".log")
        setting = {"path": logFile.name}
    setups = benchrun.authSetups() if options.auth else []
    data = benchrun.gatewayConfig(
        8080,
        8081,
        workers=1,
        where="proxy",
        accessLog=setting,
        extraApis=tuple(api for _, _, api, _ in setups),
    )
    if options.auth:
        data["consumers"] = [benchrun.authConsumer()]
    data["store"] = "memory:"
    if options.tracing is not None:
        # Spans made and queued; never exported (the memory reactor's clock
        # does not move): what tracing costs on the request path itself.
        data["tracing"] = {"sampleRatio": options.tracing, "maxQueueSize": 1_000_000}
    config = parseConfig(yaml.safe_load(yaml.safe_dump(data)))
    reactor = MemoryReactorClock()
    upstream = HTTP11UpstreamClient(reactor)
    endpoints = upstream._endpoints = _MemoryEndpoints()  # type: ignore[assignment]
    service = makeService(
        config, reactor, FilterRegistry.fromPlugins(), Abort(reactor), client=upstream
    )
    # Loads the (memory) store and binds the proxy's port on the memory
    # reactor; the requests below go to a site of their own.
    service.privilegedStartService()
    site = GatewaySite(service.getServiceNamed("proxy").resource, reactor=reactor)
    constant = options.resource != "gateway"
    if constant:
        # The server side alone: a resource that answers by itself.
        from twisted.web import resource, server

        class Constant(resource.Resource):
            isLeaf = True

            def render(self, request: Any) -> bytes:
                request.responseHeaders.setRawHeaders(b"content-type", [b"application/json"])
                return BODY

        if options.resource == "constant-twisted":
            site = server.Site(Constant(), reactor=reactor)
        else:
            site = GatewaySite(Constant(), reactor=reactor)
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport(
        hostAddress=IPv4Address("TCP", "127.0.0.1", 8080),
        peerAddress=IPv4Address("TCP", "127.0.0.1", 40000),
    )
    channel.makeConnection(transport)
    extra = b"".join(
        h.encode() + b"\r\n" for key, _, _, sent in setups if key == options.auth for h in sent
    )
    head = b"GET %s HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n%s\r\n" % (options.path.encode(), extra)

    def one() -> None:
        channel.dataReceived(head)
        if not constant:
            # One keep-alive connection, answered as nginx answers.
            conn = endpoints.connected[-1]
            conn.transport.clear()
            conn.dataReceived(_UPSTREAM_ANSWER)
        transport.clear()

    def check() -> None:
        if not constant and len(endpoints.connected) != 1:
            raise SystemExit(
                f"the upstream connection was not kept alive: {len(endpoints.connected)}"
            )

    channel.dataReceived(head)
    if not constant:
        endpoints.connected[-1].dataReceived(_UPSTREAM_ANSWER)
    first = transport.value()
    assert first.startswith(b"HTTP/1.1 200 OK") and first.endswith(BODY), first
    if options.show:
        print(first.decode("latin-1"))
    transport.clear()
    one.check = check  # type: ignore[attr-defined]
    one.keep = (service, setting and logFile)  # type: ignore[attr-defined]
    return one


def _countedRun(options: argparse.Namespace, path: str, count: int, env: dict) -> int:
    """
    @return: the machine instructions (user space) a child process spends
        building an in-process gateway and serving C{count} requests to
        C{path} through it (L{_countOnly}), under callgrind, with the
        address space not randomised.
    """
    argv = [
        "setarch",
        "-R",
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        str(Path(__file__).resolve()),
        "--mode",
        "micro",
        "--path",
        path,
        "--access-log",
        options.access_log,
        "--count-only",
        str(count),
    ]
    if options.auth:
        argv += ["--auth", options.auth]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    for line in done.stderr.splitlines():
        if "Collected :" in line:
            return int(line.split(":")[-1].strip())
    raise SystemExit(f"callgrind counted nothing ({path}):\n{done.stderr[-2000:]}")


def _instructions(options: argparse.Namespace) -> int:
    """
    C{--instructions}: machine instructions per request, counted by
    callgrind (which does not vary from run to run as times do): for each
    path (C{--path}, and with C{--auth} the authentication row's API too),
    two child processes serve 1,500 and 3,500 requests after the same
    set-up, the cycle collector off; the difference over 2,000 is the cost
    of a request, the set-up and warm-up cancelled out.  Slow (a minute).
    """
    paths = [options.path]
    if options.auth:
        (authPath,) = (
            api["urlPattern"] for key, _, api, _ in benchrun.authSetups() if key == options.auth
        )
        paths.append(authPath)
    with tempfile.TemporaryDirectory(prefix="gateway-count-") as folder:
        from cryptography.hazmat.primitives import serialization

        pem = Path(folder) / "rsa.pem"
        pem.write_bytes(
            benchrun._benchRSA().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        env = dict(os.environ, PYTHONHASHSEED="0", GATEWAY_BENCH_RSA=str(pem))
        perRequest = {}
        for path in paths:
            few, many = (_countedRun(options, path, n, env) for n in (1500, 3500))
            perRequest[path] = (many - few) / 2000
            print(f"{path}: {perRequest[path]:,.0f} instructions per request")
    if len(paths) == 2:
        base, other = (perRequest[p] for p in paths)
        print(
            f"{paths[1]} against {paths[0]}: {other - base:+,.0f} "
            f"({(other / base - 1) * 100:+.1f} %)"
        )
    return 0


def _countOnly(options: argparse.Namespace) -> int:
    """
    C{--count-only N}: build the in-process gateway, serve C{N} requests,
    the cycle collector off (what L{_instructions} counts).
    """
    import gc

    one = _microGateway(options, options.access_log == "on")
    gc.collect()
    gc.disable()
    for _ in range(options.count_only):
        one()
    return 0


def _byTurns(gateways: dict, runs: int, count: int) -> Tuple[dict, List[float]]:
    """
    Two in-process gateways (C{name: one}, L{_microGateway}) served by
    turns, C{count} requests a round, C{runs} rounds, each round's order
    alternating.

    @return: each one's CPU µs per request of every round, and the rounds'
        ratios of the first to the second, sorted.
    """
    names = list(gateways)
    rounds: dict = {name: [] for name in names}
    for turn in range(runs):
        for name in names if turn % 2 == 0 else names[::-1]:
            one = gateways[name]
            started = time.process_time()
            for _ in range(count):
                one()
            rounds[name].append((time.process_time() - started) / count * 1e6)
    for one in gateways.values():
        one.check()
    first, second = names
    return rounds, sorted(a / b for a, b in zip(rounds[first], rounds[second]))


def _microAuth(options: argparse.Namespace) -> int:
    """
    C{--auth KEY}: C{/plain} and the authentication row C{KEY}'s API
    (L{benchrun.authSetups}) served by turns, round for round, by two
    in-process gateways with the same configuration, both sent the same
    credential header; prints their medians and the median of the rounds'
    ratios.
    """
    (path,) = (api["urlPattern"] for key, _, api, _ in benchrun.authSetups() if key == options.auth)
    log = options.access_log == "on"
    gateways = {
        options.auth: _microGateway(argparse.Namespace(**dict(vars(options), path=path)), log),
        "plain": _microGateway(argparse.Namespace(**dict(vars(options), path="/plain")), log),
    }
    names = list(gateways)
    rounds, ratios = _byTurns(gateways, options.runs, options.requests)
    auth, plain = (benchrun.median(rounds[name]) for name in names)
    print(
        f"in-process, {path} ({options.auth} auth) vs /plain by turns, access log "
        f"{options.access_log}: {auth:.2f} vs {plain:.2f} µs/req (medians of {options.runs} x "
        f"{options.requests}); ratio {ratios[len(ratios) // 2]:.3f} (median of the rounds'; "
        f"from {ratios[0]:.3f} to {ratios[-1]:.3f})"
    )
    return 0


def micro(options: argparse.Namespace) -> int:
    """
    Serve requests through the gateway's site, resource and upstream
    client in-process: the client's side of the proxy on a
    L{StringTransport}, its upstream connection on another, answered with
    nginx's bytes; report the CPU time per request (C{time.process_time}),
    best of C{--runs} rounds.  Everything but the sockets and the reactor
    runs as it does in a gateway.  With C{--access-log ab}, two gateways,
    the access log on and off, serve by turns, round for round (each
    round's order alternating): their medians and the median of the
    rounds' ratios, the least noisy measure of what the access log costs.
    """
    _useChannel(options.channel)
    count = options.requests
    if options.count_only:
        return _countOnly(options)
    if options.instructions:
        return _instructions(options)
    if options.auth:
        return _microAuth(options)
    if options.access_log == "ab":
        gateways = {"on": _microGateway(options, True), "off": _microGateway(options, False)}
        rounds, ratios = _byTurns(gateways, options.runs, count)
        on, off = (benchrun.median(rounds[name]) for name in ("on", "off"))
        print(
            f"in-process, channel {options.channel}, {options.resource}, access log on vs off "
            f"by turns: on {on:.1f} µs/req, off {off:.1f} µs/req (medians of {options.runs} x "
            f"{count} requests); on/off {ratios[len(ratios) // 2]:.3f} (median of the rounds' "
            f"ratios; from {ratios[0]:.3f} to {ratios[-1]:.3f})"
        )
        return 0
    one = _microGateway(options, options.access_log == "on")
    profile = None
    if options.profile:
        import cProfile

        profile = cProfile.Profile()
    costs = []
    for _ in range(options.runs):
        started = time.process_time()
        if profile is not None:
            profile.enable()
        for _ in range(count):
            one()
        if profile is not None:
            profile.disable()
        costs.append((time.process_time() - started) / count * 1e6)
    one.check()
    costs.sort()
    print(
        f"in-process, channel {options.channel}, {options.resource}, access log "
        f"{options.access_log}: best {costs[0]:.1f} µs/req, "
        f"median {costs[len(costs) // 2]:.1f} (of {options.runs} x {count} requests)"
    )
    if profile is not None:
        path = tempfile.mktemp(suffix=".prof")
        profile.dump_stats(path)
        printProfile(path, options.top, count * options.runs)
    return 0


def parseArgs(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--mode",
        choices=("gateway", "site", "lean", "raw", "raw-proxy", "micro"),
        default="gateway",
    )
    parser.add_argument(
        "--channel",
        choices=("default", "twisted", "gateway"),
        default="default",
        help="the channel: the site's own (default), twisted.web's HTTPChannel, or "
        "gateway.http.channel's GatewayHTTPChannel",
    )
    parser.add_argument(
        "--requests-class",
        dest="requestClass",
        choices=("twisted", "gateway"),
        default="twisted",
        help="site mode: twisted.web's Request or gateway.http.request's",
    )
    parser.add_argument("--path", default="/plain", help="path requested (gateway: /plain)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--profile", action="store_true", help="cProfile one more run")
    parser.add_argument("--top", type=int, default=40, help="functions shown")
    parser.add_argument("--requests", type=int, default=5000, help="micro: requests per run")
    parser.add_argument(
        "--resource",
        choices=("gateway", "constant", "constant-twisted"),
        default="gateway",
        help="micro: the gateway, or a constant answer from GatewaySite or twisted's Site",
    )
    parser.add_argument("--show", action="store_true", help="micro: print the first answer")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="micro: machine instructions per request, counted by callgrind (needs Debian's "
        "valgrind), with --auth for the authentication row's API too",
    )
    parser.add_argument("--count-only", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--auth",
        choices=("key", "hs256", "rs256"),
        help="micro: that authentication row's API (bench/run.py) against /plain, by turns, "
        "its credential header sent to both",
    )
    parser.add_argument(
        "--tracing",
        type=float,
        help="micro: trace with this sampleRatio (spans queued, never exported)",
    )
    parser.add_argument(
        "--access-log",
        choices=("on", "off", "ab"),
        default="on",
        help="gateway and micro: the access log as shipped (on; micro: to a temporary file) "
        "or off; micro: ab, both by turns",
    )
    parser.add_argument(
        "--eager-writes",
        action="store_true",
        help="experiment: TCP transports send at once when nothing is buffered",
    )
    parser.add_argument(
        "--gc-threshold",
        type=int,
        help="the child's first-generation GC threshold (CPython; 0: GC off; default: the "
        "gateway's own, gateway.process.interpreter.tuneGC, in gateway mode)",
    )
    parser.add_argument(
        "--reactor",
        choices=("gateway", "epoll"),
        default="gateway",
        help=(
            "the child's reactor: gateway.http.reactor's (as twistd gateway runs), "
            "or Twisted's epoll"
        ),
    )
    parser.add_argument(
        "--tree", help="serve the gateway from this copy of the source tree (A/B comparisons)"
    )
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    options = parseArgs(argv)
    if options.access_log == "ab" and options.mode != "micro":
        raise SystemExit("--access-log ab is for --mode micro")
    if options.serve:
        return serve(options)
    if options.mode == "micro":
        if options.tree and os.environ.get("GATEWAY_PROFILE_TREE") != options.tree:
            # The gateway of that tree, imported before this one's.
            env = dict(os.environ, GATEWAY_PROFILE_TREE=options.tree)
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(Path(options.tree).resolve()), env.get("PYTHONPATH")) if p
            )
            return subprocess.call([sys.executable, *sys.argv], env=env)
        return micro(options)
    if options.mode in ("site", "lean", "raw", "raw-proxy") and options.path == "/plain":
        options.path = "/"
    return measureAll(options)


if __name__ == "__main__":
    sys.exit(main())
