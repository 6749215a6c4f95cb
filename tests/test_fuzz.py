"""
Fuzz tests (hypothesis, bounded): the request path through the gateway's
HTTP channel and proxy resource, the routing rules (parsing, compiling and
evaluating them) and the config parser never fail in an undocumented way.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any, Dict, List

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_hostile import HOST, PEER, ProxyFixture, parseAnswers
from test_routing import makeContext, makeRequest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from gateway.http.channel import ambiguousPath
from gateway.http.request import GatewayRequest
from gateway.http.site import LimitedSite
from gateway.model.config import ConfigError, loadConfig, parseConfig
from gateway.model.limits import HTTPLimits
from gateway.model.resources import parseResource
from gateway.model.schema import ValidationError, toJSON
from gateway.routing.rules import compileRouting

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- strategies: HTTP ---------------------------------------------------------------

METHODS = [b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH", b"CONNECT", b"get"]
PATHS = [
    b"/public/x",
    b"/public/a/b?q=1",
    b"/admin/x",
    b"/",
    b"*",
    b"http://gw/public/x",
    b"/public/../admin",
    b"/public/%2e%2e/admin",
    b"//admin",
    b"/public/%2F",
    b"/public/%",
]
HEADER_NAMES = [
    b"Host",
    b"Content-Length",
    b"Transfer-Encoding",
    b"Connection",
    b"Expect",
    b"Cookie",
    b"X-Forwarded-For",
    b"Content_Length",
    b"Transfer-Encoding ",
    b" Host",
    b"X-A",
]
HEADER_VALUES = [
    b"gw",
    b"0",
    b"3",
    b"-1",
    b"99999999999999999999",
    b"chunked",
    b"Chunked",
    b"chunked, identity",
    b"identity",
    b"close",
    b"keep-alive",
    b"100-continue",
    b"",
    b"a\x00b",
    b"\t x \t",
]
SEPARATORS = [b"\r\n", b"\n", b"\r", b"\r\n\r\n"]


def mostly(draw: Any, usual: Any, other: Any) -> Any:
    """
    @return: a draw from C{usual} four times in five, else from C{other},
        so that most requests get far enough to meet the next check.
    """
    return draw(other) if draw(st.integers(0, 4)) == 0 else draw(usual)


@st.composite
def requestHeads(draw: Any) -> bytes:
    """
    Request heads near the valid ones: real methods, paths and headers,
    with the odd byte, separator or value out of place, a body and maybe a
    second request behind.
    """
    method = mostly(draw, st.sampled_from(METHODS), st.binary(min_size=1, max_size=8))
    target = mostly(draw, st.sampled_from(PATHS), st.binary(min_size=1, max_size=30))
    version = mostly(
        draw, st.just(b"HTTP/1.1"), st.sampled_from([b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 "])
    )
    space = mostly(draw, st.just(b" "), st.sampled_from([b"  ", b"\t"]))
    line = space.join([method, target, version])
    headers = [(b"Host", b"gw")] if draw(st.integers(0, 4)) else []
    headers += draw(
        st.lists(
            st.tuples(
                st.sampled_from(HEADER_NAMES) | st.binary(max_size=10),
                st.sampled_from(HEADER_VALUES) | st.binary(max_size=20),
            ),
            max_size=4,
        )
    )
    separator = mostly(draw, st.just(b"\r\n"), st.sampled_from(SEPARATORS))
    head = separator.join([line] + [n + b": " + v for n, v in headers]) + b"\r\n\r\n"
    body = draw(
        st.sampled_from([b"", b"abc", b"3\r\nabc\r\n0\r\n\r\n", b"0\r\n\r\n"])
        | st.binary(max_size=50)
    )
    tail = draw(st.sampled_from([b"", b"GET /public/next HTTP/1.1\r\nHost: gw\r\n\r\n"]))
    return head + body + tail


def chunks(data: bytes, cuts: List[int]) -> List[bytes]:
    """
    @return: C{data} cut at the given offsets, as a client's reads might.
    """
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for point in points + [len(data)]:
        pieces.append(data[last:point])
        last = point
    return [p for p in pieces if p]


class RecordingRequest(GatewayRequest):
    """
    A proxy request that notes its method once its head is parsed, so that
    the answers can be parsed knowing which were to a C{HEAD}.
    """

    methods: List[bytes]

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        self.methods.append(command)
        super().requestReceived(command, path, version)


class ChannelFuzzTests(SynchronousTestCase):
    """
    Whatever bytes a client sends, the proxy's channel answers with valid
    HTTP responses (or closes), forwards only unambiguous requests, and
    leaves no connection open forever.
    """

    def check(self, data: bytes, cuts: List[int]) -> None:
        clock = Clock()
        proxy = ProxyFixture(clock, catchAll=True)
        site = LimitedSite(
            proxy.resource,
            limits=HTTPLimits(maxBodySize=100),
            reactor=clock,
            requestFactory=RecordingRequest,
        )
        methods: List[bytes] = []
        RecordingRequest.methods = methods
        channel = site.buildProtocol(PEER)
        transport = StringTransport(hostAddress=HOST, peerAddress=PEER)
        channel.makeConnection(transport)
        for piece in chunks(data, cuts):
            if transport.disconnecting:
                break
            channel.dataReceived(piece)
        clock.advance(1000)
        clock.advance(1000)
        answers = parseAnswers(transport.value(), methods)
        for answer in answers:
            self.assertTrue(100 <= answer.status <= 599)
        self.assertTrue(transport.disconnecting, "a connection was left open")
        for _, method, uri in proxy.client.sent:
            # A token (RFC 9110 5.6.2): "!" is a method as much as "GET".
            self.assertRegex(method, rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
            if uri.startswith(b"/"):
                self.assertIsNone(ambiguousPath(uri.split(b"?")[0]), uri)
            self.assertNotIn(b" ", uri)

    @FUZZ
    @given(data=requestHeads(), cuts=st.lists(st.integers(0, 500), max_size=5))
    def test_near_valid(self, data: bytes, cuts: List[int]) -> None:
        """
        Near-valid request heads, cut into arbitrary reads.
        """
        self.check(data, cuts)

    @FUZZ
    @given(data=st.binary(max_size=600), cuts=st.lists(st.integers(0, 600), max_size=5))
    def test_random_bytes(self, data: bytes, cuts: List[int]) -> None:
        """
        Random bytes, with and without a valid request line in front.
        """
        self.check(data, cuts)
        self.check(b"POST /public/x HTTP/1.1\r\n" + data, cuts)


# -- strategies: JSON, routings, configs ------------------------------------------

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
JSON = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)

SOURCES = ["header", "cookie", "query", "path", "json", "method", "body", ""]
OPS = ["eq", "ne", "lt", "le", "gt", "ge", "in", "match", "exists", "like"]
VALUES = (
    SCALARS
    | st.lists(SCALARS, max_size=3)
    | st.sampled_from(["a", "1", "1.5", "(a+)+$", "[", ".*", "\\", "x{1000000}", "ä"])
)


@st.composite
def conditions(draw: Any) -> Any:
    condition: Dict[str, Any] = {}
    if draw(st.booleans()):
        condition["source"] = draw(st.sampled_from(SOURCES))
    if draw(st.booleans()):
        condition["op"] = draw(st.sampled_from(OPS))
    if draw(st.booleans()):
        condition["name"] = draw(
            st.sampled_from(["x-user", "a.b", "a[0].b", "id", "", "bad name", "a..b", "[0]"])
            | st.text(max_size=8)
        )
    if draw(st.booleans()):
        condition["value"] = draw(VALUES)
    if draw(st.integers(0, 9)) == 0:
        condition[draw(st.text(max_size=5))] = draw(JSON)
    return condition if draw(st.integers(0, 19)) else draw(JSON)


@st.composite
def routings(draw: Any) -> Any:
    routing: Dict[str, Any] = {}
    for key, value in [
        ("name", st.sampled_from(["r1", "canary", "", "bad name"]) | st.text(max_size=5)),
        ("cluster", st.sampled_from(["c1", ""]) | JSON),
        ("conditions", st.lists(conditions(), max_size=4) | JSON),
        ("api", st.sampled_from(["a1", None]) | JSON),
        ("strategy", st.sampled_from(["split", "mirror", "other"]) | JSON),
        ("trafficRate", st.sampled_from([0, 50, 100, 101, -1, 12.5]) | JSON),
        ("hashOn", st.sampled_from(["ip", "header:x-user", "cookie:s", "header:", None]) | JSON),
    ]:
        if draw(st.integers(0, 4)):
            routing[key] = draw(value)
    return routing if draw(st.integers(0, 19)) else draw(JSON)


TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12)


class RoutingFuzzTests(SynchronousTestCase):
    """
    Routing rules: parsing refuses bad ones only with L{ValidationError};
    a valid one round-trips, compiles, and evaluates on any request.
    """

    @FUZZ
    @given(
        data=routings(),
        header=TEXT,
        cookie=TEXT,
        query=TEXT,
        body=JSON,
    )
    def test_routings(self, data: Any, header: str, cookie: str, query: str, body: Any) -> None:
        """
        Any JSON as a routing.
        """
        try:
            routing = parseResource("routings", data)
        except ValidationError as e:
            self.assertIsInstance(e.field, str)
            self.assertIsInstance(e.message, str)
            return
        again = parseResource("routings", json.loads(json.dumps(toJSON(routing))))
        self.assertEqual(again, routing)
        compiled = compileRouting(routing)
        request = makeRequest(
            b"POST",
            b"/?" + urllib.parse.urlencode({"id": query}).encode(),
            [
                (b"X-User", header.strip().encode()),
                (b"Cookie", b"s=" + cookie.replace(";", "").strip().encode()),
                (b"Content-Type", b"application/json"),
            ],
            json.dumps(body).encode(),
        )
        context = makeContext(request, params={"id": query})
        self.assertIn(compiled.matches(context), (True, False))
        self.assertIn(compiled.selects(context), (True, False))


@st.composite
def configs(draw: Any) -> Any:
    endpoint = st.sampled_from(
        [
            "tcp:8080:interface=127.0.0.1",
            "tcp:8080",
            "tcp:99999",
            "tcp:0:interface=0.0.0.0",
            "unix:/tmp/x.sock",
            "nonsense:",
            "",
            "ssl:443",
        ]
    ) | st.text(max_size=12)
    section = st.fixed_dictionaries(
        {},
        optional={
            "listen": endpoint | JSON,
            "token": st.sampled_from(["t", "", None]) | JSON,
            "workers": st.sampled_from([0, 1, 2, 300, -1]) | JSON,
            "filters": st.lists(st.sampled_from(["access-log", "nope"]) | JSON, max_size=2),
            "limits": st.fixed_dictionaries(
                {},
                optional={
                    "maxBodySize": st.sampled_from([None, 0, 10, -1, 2**60]) | JSON,
                    "headerTimeout": st.sampled_from([0, 1, 1e9, -1]) | JSON,
                    "other": JSON,
                },
            )
            | JSON,
            "trustedProxies": st.lists(st.sampled_from(["10.0.0.0/8", "bad"]), max_size=2),
            "accessLog": JSON,
        },
    )
    config = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "proxy": section | JSON,
                "admin": section | JSON,
                "store": st.sampled_from(["memory:", "file:", "file:x.json", "etcd://h/p", "x"])
                | JSON,
                "servers": st.lists(
                    st.fixed_dictionaries(
                        {"name": st.sampled_from(["s1", "s2", ""]), "addr": TEXT | JSON}
                    )
                    | JSON,
                    max_size=3,
                )
                | JSON,
                "clusters": st.lists(JSON, max_size=2) | JSON,
                "apis": st.lists(JSON, max_size=2) | JSON,
                "routings": st.lists(routings(), max_size=2) | JSON,
                "extra": JSON,
            },
        )
    )
    return config if draw(st.integers(0, 19)) else draw(JSON)


@st.composite
def yamlTexts(draw: Any) -> str:
    """
    Config files: a fuzzed config as YAML, sometimes with a line break
    inserted at random.
    """
    try:
        text = yaml.safe_dump(draw(configs()), default_flow_style=False, allow_unicode=True)
        text.encode("utf-8")
    except (yaml.YAMLError, UnicodeError):
        return ""
    if draw(st.booleans()):
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + "\n" + text[cut:]
    return text


class ConfigFuzzTests(SynchronousTestCase):
    """
    The config parser refuses bad configs only with L{ConfigError}.
    """

    @FUZZ
    @given(data=configs())
    def test_structures(self, data: Any) -> None:
        """
        Any YAML-like structure as a parsed config file.
        """
        try:
            config = parseConfig(data)
        except ConfigError as e:
            self.assertIsInstance(e.key, str)
            self.assertTrue(str(e))
            return
        self.assertTrue(config.proxy is not None or config.admin is not None)

    @FUZZ
    @given(text=st.text(st.characters(blacklist_categories=("Cs",)), max_size=300) | yamlTexts())
    def test_files(self, text: str) -> None:
        """
        Any text as a config file: read, or refused with L{ConfigError}.
        """
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        try:
            loadConfig(path)
        except ConfigError:
            pass
