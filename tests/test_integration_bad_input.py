"""
Integration tests of bad input against the real C{twistd -n gateway}
process: bad config files stop the start with a clear message, and bad
admin requests (or malformed HTTP) get a clear error and change nothing.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest
from harness import HOST, GatewayProcess, request

pytestmark = pytest.mark.integration

TOKEN = "bad-input-token"
#: How long a refused start may take, in seconds.
START_REFUSED_WITHIN = 10.0


def expectRefused(
    gateways: Any, config: Any = None, configPath: Optional[Path] = None
) -> Tuple[int, str]:
    """
    Run the gateway with a config that must stop its start, and check that
    it exits non-zero within L{START_REFUSED_WITHIN} seconds.

    @return: C{(exit status, output)}.
    """
    started = time.monotonic()
    status, output = gateways.expectFailure(
        config, configPath=configPath, timeout=START_REFUSED_WITHIN
    )
    assert time.monotonic() - started < START_REFUSED_WITHIN
    assert status != 0, output
    return status, output


def minimal(**extra: Any) -> Dict[str, Any]:
    """
    @return: a config that would start (a proxy, a memory store), with
        C{extra} keys added or replaced.
    """
    config: Dict[str, Any] = {"proxy": {}, "store": "memory:"}
    config.update(extra)
    return config


SERVER = {"name": "s1", "addr": "127.0.0.1:9"}
CLUSTER = {"name": "c1", "servers": ["s1"]}

#: (case id, config mapping, substrings the message must contain)
BAD_CONFIGS = [
    ("unknown top-level key", minimal(prxy={}), ["prxy", "not a known key"]),
    ("unknown key in proxy", minimal(proxy={"listn": "tcp:0"}), ["proxy.listn"]),
    (
        "unknown key in admin",
        minimal(admin={"listen": "tcp:0:interface=127.0.0.1", "tokn": "x"}),
        ["admin.tokn"],
    ),
    ("bad endpoint string", minimal(proxy={"listen": "tcp:notaport"}), ["proxy.listen"]),
    ("endpoint port out of range", minimal(proxy={"listen": "tcp:70000"}), ["proxy.listen"]),
    ("unknown endpoint type", minimal(proxy={"listen": "carrier-pigeon:1"}), ["proxy.listen"]),
    ("bad store URL", minimal(store="mysql://db/gateway"), ["store", "mysql://db/gateway"]),
    ("store file without a path", minimal(store="file:"), ["store"]),
    ("etcd store without a port", minimal(store="etcd://localhost/gw"), ["store"]),
    ("admin token of the wrong type", minimal(admin={"token": ["x"]}), ["admin.token"]),
    (
        "invalid seed server",
        minimal(servers=[SERVER, {"name": "s2", "addr": "no-port-here"}]),
        ["servers[1].addr"],
    ),
    (
        "seed server with an unknown field",
        minimal(servers=[dict(SERVER, wieght=2)]),
        ["servers[0].wieght"],
    ),
    (
        "seed API naming a missing cluster",
        minimal(
            servers=[SERVER],
            clusters=[CLUSTER],
            apis=[{"name": "a1", "urlPattern": "/x", "nodes": [{"cluster": "nope"}]}],
        ),
        ["apis[0].nodes[0].cluster", "nope"],
    ),
    (
        "seed cluster naming a missing server",
        minimal(servers=[SERVER], clusters=[{"name": "c1", "servers": ["s1", "ghost"]}]),
        ["clusters[0].servers[1]", "ghost"],
    ),
    (
        "seed resources that are not a list",
        minimal(servers={"s1": {"addr": "127.0.0.1:9"}}),
        ["servers"],
    ),
    (
        "duplicate seed names",
        minimal(servers=[SERVER, SERVER]),
        ["servers[1].name", "duplicate"],
    ),
    (
        "global filter no plugin provides",
        minimal(proxy={"filters": ["request-id", "no-such-filter"]}),
        ["proxy.filters[1]", "no-such-filter"],
    ),
    ("neither proxy nor admin", {"store": "memory:"}, ["proxy", "admin"]),
    (
        "seed API whose rewrite names an unknown parameter",
        minimal(
            servers=[SERVER],
            clusters=[CLUSTER],
            apis=[
                {
                    "name": "a1",
                    "urlPattern": "/users/{id}",
                    "nodes": [{"cluster": "c1", "urlRewrite": "/u/{uid}"}],
                }
            ],
        ),
        ["nodes[0].urlRewrite", "uid"],
    ),
    (
        "seed API filter no plugin provides",
        minimal(
            servers=[SERVER],
            clusters=[CLUSTER],
            apis=[
                {
                    "name": "a1",
                    "urlPattern": "/x",
                    "nodes": [{"cluster": "c1"}],
                    "filters": [{"name": "no-such-filter"}],
                }
            ],
        ),
        ["filters[0]", "no-such-filter"],
    ),
]


class BadConfigTests:
    """
    A config file that is missing, unreadable or invalid stops the start:
    a non-zero exit within seconds, and a message naming the key at fault.
    """

    @pytest.mark.parametrize(
        "config, expected", [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS]
    )
    def test_invalidConfig(self, gateways, config, expected):
        """
        Each invalid config is refused, and the message names the key (and
        the value) at fault.
        """
        _, output = expectRefused(gateways, config)
        for text in expected:
            assert text in output, (text, output[-2000:])

    def test_missingFile(self, gateways, tmp_path):
        """
        A config path that does not exist is refused, naming the file.
        """
        path = tmp_path / "no-such-gateway.yaml"
        _, output = expectRefused(gateways, configPath=path)
        assert str(path) in output
        assert "No such file" in output

    def test_directoryAsFile(self, gateways, tmp_path):
        """
        A config path that is a directory is refused as unreadable.
        """
        path = tmp_path / "conf.d"
        path.mkdir()
        _, output = expectRefused(gateways, configPath=path)
        assert str(path) in output
        assert "cannot read" in output

    @pytest.mark.skipif(
        not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any file"
    )
    def test_unreadableFile(self, gateways, tmp_path):
        """
        A config file without read permission is refused as unreadable.
        """
        path = tmp_path / "secret.yaml"
        path.write_text("proxy: {}\n")
        path.chmod(0)
        _, output = expectRefused(gateways, configPath=path)
        assert "cannot read" in output

    def test_badYAML(self, gateways, tmp_path):
        """
        A file that is not valid YAML is refused with the line of the error.
        """
        path = tmp_path / "broken.yaml"
        path.write_text("proxy:\n  listen: tcp:0\nstore: memory:\n admin: [\n")
        _, output = expectRefused(gateways, configPath=path)
        assert "invalid YAML" in output
        assert "line 3" in output

    def test_duplicateKey(self, gateways, tmp_path):
        """
        A key given twice is refused rather than silently resolved.
        """
        path = tmp_path / "twice.yaml"
        path.write_text("proxy:\n  listen: tcp:0\nproxy:\n  listen: tcp:1\n")
        _, output = expectRefused(gateways, configPath=path)
        assert "duplicate key 'proxy'" in output
        assert "line 3" in output

    def test_emptyFile(self, gateways):
        """
        An empty file is refused: it names no role.
        """
        _, output = expectRefused(gateways, "")
        assert "empty" in output

    def test_corruptStoreFile(self, gateways, tmp_path):
        """
        A store file that is not a store (here, broken JSON) stops the start
        with a message naming the file; the file is left as it was.
        """
        store = tmp_path / "data.json"
        store.write_text("{not json")
        _, output = expectRefused(gateways, minimal(store="file:data.json"))
        assert "data.json" in output
        assert store.read_text() == "{not json"

    def test_portInUse(self, gateways):
        """
        A listen endpoint whose port is taken stops the start with a
        message naming the address.
        """
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
            taken.bind((HOST, 0))
            taken.listen(1)
            port = taken.getsockname()[1]
            _, output = expectRefused(
                gateways, minimal(proxy={"listen": f"tcp:{port}:interface={HOST}"})
            )
        assert str(port) in output
        assert "in use" in output


# -- the admin API -----------------------------------------------------------------


def seededConfig(backend: Any) -> Dict[str, Any]:
    """
    @return: a gateway with a file store, one server, two clusters (one
        unused), an API and a routing.
    """
    return {
        "proxy": {},
        "admin": {"token": TOKEN},
        "store": "file:data.json",
        "servers": [{"name": "s1", "addr": backend.addr}],
        "clusters": [{"name": "c1", "servers": ["s1"]}, {"name": "spare", "servers": ["s1"]}],
        "apis": [{"name": "a1", "urlPattern": "/echo/*", "nodes": [{"cluster": "c1"}]}],
        "routings": [
            {
                "name": "r1",
                "api": "a1",
                "cluster": "spare",
                "conditions": [{"source": "header", "name": "X-Spare", "op": "exists"}],
            }
        ],
    }


def everything(gateway: GatewayProcess, storePath: Path) -> Dict[str, Any]:
    """
    @return: all the gateway shows of its resources: the four listings, the
        revision it serves, and the store file's bytes.
    """
    state: Dict[str, Any] = {
        kind: gateway.admin("GET", f"/api/v1/{kind}").json()
        for kind in ("servers", "clusters", "apis", "routings")
    }
    state["revision"] = [p["revision"] for p in gateway.admin("GET", "/api/v1/proxies").json()]
    state["store"] = storePath.read_bytes()
    return state


def checkServes(gateway: GatewayProcess) -> None:
    answer = gateway.proxy("GET", "/echo/still")
    assert answer.status == 200, answer.text
    assert answer.json()["path"] == "/echo/still"


#: (method, path, body, expected field, or False when no field is at fault)
INVALID_PAYLOADS: List[Tuple[str, str, Any, Any]] = [
    ("POST", "/api/v1/servers", {"name": "s2", "addr": "127.0.0.1:1", "weight": "heavy"}, "weight"),
    ("POST", "/api/v1/servers", {"name": "s2", "addr": "127.0.0.1:1", "weigth": 2}, "weigth"),
    ("POST", "/api/v1/servers", {"name": "s2", "addr": "no-port"}, "addr"),
    ("POST", "/api/v1/servers", {"name": "s2", "addr": "127.0.0.1:99999"}, "addr"),
    ("POST", "/api/v1/servers", {"name": "two words", "addr": "127.0.0.1:1"}, "name"),
    ("POST", "/api/v1/servers", {"addr": "127.0.0.1:1"}, "name"),
    (
        "PUT",
        "/api/v1/servers/s1",
        {"addr": "127.0.0.1:1", "healthCheck": {"path": "/h", "interval": -1}},
        "healthCheck.interval",
    ),
    ("PUT", "/api/v1/servers/s1", {"name": "other", "addr": "127.0.0.1:1"}, "name-mismatch"),
    ("PUT", "/api/v1/clusters/c1", {"servers": "s1"}, "servers"),
    ("PUT", "/api/v1/clusters/c1", {"servers": ["s1"], "loadBalance": "fastest"}, "loadBalance"),
    (
        "POST",
        "/api/v1/apis",
        {"name": "a2", "urlPattern": "no-slash", "nodes": [{"cluster": "c1"}]},
        "urlPattern",
    ),
    (
        "POST",
        "/api/v1/apis",
        {"name": "a2", "urlPattern": "/x/{id", "nodes": [{"cluster": "c1"}]},
        "urlPattern",
    ),
    ("POST", "/api/v1/apis", {"name": "a2", "urlPattern": "/x", "nodes": []}, "nodes"),
    (
        "POST",
        "/api/v1/apis",
        {"name": "a2", "urlPattern": "/x", "nodes": [{"cluster": "c1"}, {"cluster": "spare"}]},
        "nodes[0].attrName",
    ),
    (
        "PUT",
        "/api/v1/apis/a1",
        {"urlPattern": "/echo/*", "nodes": [{"cluster": "c1", "timeout": "soon"}]},
        "nodes[0].timeout",
    ),
    (
        "PUT",
        "/api/v1/apis/a1",
        {"urlPattern": "/echo/*", "nodes": [{"cluster": "c1", "urlRewrite": "/e/{nope}"}]},
        "nodes[0].urlRewrite",
    ),
    (
        "POST",
        "/api/v1/routings",
        {
            "name": "r2",
            "cluster": "c1",
            "conditions": [{"source": "header", "name": "X-A", "op": "match", "value": "(["}],
        },
        "conditions[0].value",
    ),
    (
        "POST",
        "/api/v1/routings",
        {"name": "r2", "cluster": "c1", "trafficRate": 101},
        "trafficRate",
    ),
    ("POST", "/api/v1/servers", b"{not json", False),
    ("POST", "/api/v1/servers", b"[1, 2]", False),
    ("POST", "/api/v1/servers", b"", False),
]

#: The fields of L{INVALID_PAYLOADS} refused for a rule the OpenAPI
#: document states in words only (their errors are marked C{rule}).
SEMANTIC = ("nodes[0].urlRewrite", "conditions[0].value", "name-mismatch")

#: (method, path, body): refused with 409.
CONFLICTS: List[Tuple[str, str, Any]] = [
    ("POST", "/api/v1/clusters", {"name": "c2", "servers": ["ghost"]}),
    ("PUT", "/api/v1/apis/a1", {"urlPattern": "/echo/*", "nodes": [{"cluster": "ghost"}]}),
    ("POST", "/api/v1/routings", {"name": "r2", "cluster": "ghost"}),
    ("POST", "/api/v1/routings", {"name": "r2", "cluster": "c1", "api": "ghost"}),
    ("POST", "/api/v1/apis", {"name": "a2", "urlPattern": "/echo/*", "nodes": [{"cluster": "c1"}]}),
    ("POST", "/api/v1/servers", {"name": "s1", "addr": "127.0.0.1:1"}),
    ("DELETE", "/api/v1/clusters/c1", None),
    ("DELETE", "/api/v1/clusters/spare", None),
    ("DELETE", "/api/v1/servers/s1", None),
    ("DELETE", "/api/v1/apis/a1", None),
]


class BadAdminInputTests:
    """
    The admin answers bad requests with a JSON error, 400 naming the field,
    409 for broken references, 401 without the token, and each leaves the
    store, the listings and the proxy exactly as they were.
    """

    def test_invalidPayloads(self, backends, gateways, tmp_path):
        """
        Wrong types, unknown fields, bad addresses, URL patterns, regular
        expressions, an API with two nodes lacking C{attrName}, and bodies
        that are not a JSON object get 400 with C{error} and C{field} (the
        field at fault), and change nothing.
        """
        gateway = gateways(seededConfig(backends("b1")))
        before = everything(gateway, tmp_path / "data.json")
        wrongField = []
        for method, path, body, field in INVALID_PAYLOADS:
            answer = gateway.admin(method, path, body)
            case = (method, path, body, answer.status, answer.text)
            assert answer.status == 400, case
            assert answer.header("content-type") == "application/json", case
            error = answer.json()
            assert isinstance(error.get("error"), str) and error["error"], case
            assert ("field" in error) == (field is not False), case
            first = dict(error["errors"][0])
            # The body fits the OpenAPI document's schema but breaks a rule
            # it states in words (a rewrite naming a parameter the pattern
            # lacks, an invalid regular expression, a name other than the
            # URL's): marked so.
            assert first.pop("rule", False) == (field in SEMANTIC), case
            assert first == {k: v for k, v in error.items() if k in ("error", "field")}, case
            # The field is named as in the body sent, so that a client can
            # point at it.
            if field == "name-mismatch":
                field = "name"
            if field and error["field"] != field:
                wrongField.append((field, case))
        assert everything(gateway, tmp_path / "data.json") == before
        checkServes(gateway)
        assert wrongField == []

    def test_conflicts(self, backends, gateways, tmp_path):
        """
        References to missing resources, a second API on the same route, a
        name taken, and deleting a cluster, a server or an API that others
        still use get 409 with C{error} and C{field}, and change nothing.
        """
        gateway = gateways(seededConfig(backends("b1")))
        before = everything(gateway, tmp_path / "data.json")
        for method, path, body in CONFLICTS:
            answer = gateway.admin(method, path, body)
            case = (method, path, body, answer.status, answer.text)
            assert answer.status == 409, case
            assert answer.header("content-type") == "application/json", case
            error = answer.json()
            assert isinstance(error.get("error"), str) and error["error"], case
            assert error.get("field", "x"), case
        assert everything(gateway, tmp_path / "data.json") == before
        checkServes(gateway)

    def test_unauthorized(self, backends, gateways, tmp_path):
        """
        Without the bearer token, with a wrong one or another scheme, every
        read and write gets 401 JSON with C{WWW-Authenticate}, and changes
        nothing.
        """
        gateway = gateways(seededConfig(backends("b1")))
        before = everything(gateway, tmp_path / "data.json")
        credentials = [
            {},
            {"Authorization": "Bearer wrong-token"},
            {"Authorization": f"Basic {TOKEN}"},
            {"Authorization": TOKEN},
            {"Authorization": "Bearer"},
        ]
        attempts = [
            ("GET", "/api/v1/servers", None),
            ("GET", "/api/v1/servers/s1", None),
            ("POST", "/api/v1/servers", {"name": "s9", "addr": "127.0.0.1:1"}),
            ("PUT", "/api/v1/clusters/c1", {"servers": []}),
            ("DELETE", "/api/v1/routings/r1", None),
            ("GET", "/api/v1/stats", None),
        ]
        for headers in credentials:
            for method, path, body in attempts:
                answer = request(method, gateway.adminURL + path, body, headers)
                case = (headers, method, path, answer.status, answer.text)
                assert answer.status == 401, case
                assert answer.header("content-type") == "application/json", case
                assert answer.header("www-authenticate") is not None, case
                assert "error" in answer.json(), case
        assert everything(gateway, tmp_path / "data.json") == before
        checkServes(gateway)

    def test_missingResources(self, backends, gateways, tmp_path):
        """
        Reading or deleting a resource that does not exist gets 404 JSON
        and changes nothing.
        """
        gateway = gateways(seededConfig(backends("b1")))
        before = everything(gateway, tmp_path / "data.json")
        for kind in ("servers", "clusters", "apis", "routings"):
            for method in ("GET", "DELETE"):
                answer = gateway.admin(method, f"/api/v1/{kind}/ghost")
                assert answer.status == 404, (kind, method, answer.text)
                assert "error" in answer.json()
        assert everything(gateway, tmp_path / "data.json") == before
        checkServes(gateway)


class MalformedRequestTests:
    """
    Malformed HTTP on the proxy gets 400 and does not disturb the gateway.
    """

    def test_garbageRequestLine(self, backends, gateways):
        """
        A request line that is not HTTP, and an invalid C{Content-Length},
        are answered 400; the gateway serves the next request as before.
        """
        gateway = gateways(seededConfig(backends("b1")))
        port = int(gateway.proxyURL.rsplit(":", 1)[1])
        garbage = [
            b"THIS IS NOT HTTP\r\n\r\n",
            b"GET /echo/x HTTP/1.1\r\nHost: a\r\nContent-Length: twelve\r\n\r\n",
        ]
        for data in garbage:
            with socket.create_connection((HOST, port), timeout=5) as s:
                s.sendall(data)
                answer = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 400"), (data, answer)
        checkServes(gateway)
