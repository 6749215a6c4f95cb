"""
Integration tests of consumers and authentication, with real processes on
127.0.0.1: a gateway (C{twistd gateway}, its file store), a backend that
echoes what it receives, a JWKS provider (a real HTTP server in the test
process) that rotates its key, and the C{gateway} CLI.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest
from harness import HOST, GatewayProcess, subprocessEnv, waitFor
from jwtkeys import HS_SECRET, jwks, rsaKey, token

from gateway.model.secrets import keyHash

pytestmark = pytest.mark.integration

TOKEN = "integration-admin-token"
ALICE_KEY = "alice-key-0123456789abcdef"
BOB_KEY = "bob-key-0123456789abcdef00"
PASSWORD = "alice's password"


class Provider:
    """
    An OpenID Connect provider's JWKS, served over HTTP on 127.0.0.1; the
    test sets the document and counts the fetches.
    """

    def __init__(self) -> None:
        provider = self
        self.document = b'{"keys": []}'
        self.fetches: List[float] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                provider.fetches.append(time.monotonic())
                body = provider.document
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.url = f"http://{HOST}:{self.server.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def provider() -> Iterator[Provider]:
    p = Provider()
    try:
        yield p
    finally:
        p.stop()


def cli(*args: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in subprocessEnv().items() if not k.startswith("GATEWAY_")}
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli.main", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
    )


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def hsToken(**claims: Any) -> str:
    body: Dict[str, Any] = {"iss": "alice-issuer", "sub": "alice", "exp": int(time.time()) + 600}
    body.update(claims)
    return token(HS_SECRET, "HS256", body)


def oidcToken(which: int, kid: str, **claims: Any) -> str:
    body: Dict[str, Any] = {
        "iss": "https://id.example.test/",
        "aud": "orders",
        "sub": "bob",
        "exp": int(time.time()) + 600,
    }
    body.update(claims)
    return token(rsaKey(which), "RS256", body, kid=kid)


def setUp(
    gateways: Any, backends: Any, provider: Optional[Provider], tmp_path: Path
) -> GatewayProcess:
    """
    A gateway with a file store, a backend, three consumers and the APIs
    of the tests, all made through the admin (so secrets take the admin's
    path).
    """
    backend = backends()
    gateway = gateways(
        {
            "proxy": {},
            "admin": {"token": TOKEN},
            "store": f"file:{tmp_path / 'store.json'}",
        }
    )

    def put(kind: str, body: Dict[str, Any]) -> Dict[str, Any]:
        response = gateway.admin("PUT", f"/api/v1/{kind}/{body['name']}", body)
        assert response.status in (200, 201), response.text
        return response.json()

    put("servers", {"name": "b1", "addr": backend.addr})
    put("clusters", {"name": "c1", "servers": ["b1"]})
    put(
        "consumers",
        {
            "name": "alice",
            "customId": "customer-42",
            "groups": ["gold", "staff"],
            "credentials": [
                {"type": "key", "key": ALICE_KEY},
                {"type": "basic", "username": "alice", "password": PASSWORD},
                {
                    "type": "jwt",
                    "issuer": "alice-issuer",
                    "algorithm": "HS256",
                    "secret": HS_SECRET,
                },
            ],
        },
    )
    put(
        "consumers",
        {"name": "bob", "groups": ["silver"], "credentials": [{"type": "key", "key": BOB_KEY}]},
    )
    node = [{"cluster": "c1"}]
    put(
        "apis",
        {
            "name": "all",
            "urlPattern": "/echo/all",
            "nodes": node,
            "auth": {"methods": ["key", "jwt", "basic"]},
        },
    )
    put(
        "apis",
        {
            "name": "gold",
            "urlPattern": "/echo/gold",
            "nodes": node,
            "auth": {"methods": ["key"]},
            "acl": {"allow": ["gold"]},
        },
    )
    put(
        "apis",
        {
            "name": "limited",
            "urlPattern": "/echo/limited",
            "nodes": node,
            "auth": {"methods": ["key"]},
            "rateLimit": {"rate": 0.001, "burst": 2, "key": "consumer"},
        },
    )
    if provider is not None:
        put(
            "apis",
            {
                "name": "oidc",
                "urlPattern": "/echo/oidc",
                "nodes": node,
                "auth": {
                    "methods": ["jwt"],
                    "jwt": {
                        "jwksUrl": provider.url,
                        "issuer": "https://id.example.test/",
                        "audiences": ["orders"],
                        "consumerClaim": "sub",
                    },
                },
            },
        )
    return gateway


def echo(gateway: GatewayProcess, path: str, headers: Dict[str, str]) -> Dict[str, Any]:
    response = gateway.proxy("GET", path, headers=headers)
    assert response.status == 200, response.text
    return response.json()


def test_threeCredentials(gateways: Any, backends: Any, tmp_path: Path) -> None:
    """
    One consumer calls an API that takes keys, JWTs and basic, with each
    of its three credentials: the backend sees X-Consumer-Name, -Id and
    -Groups (not those the client sent) and never the credential; no
    credential gets 401 naming the three methods; a bad one gets 401
    "invalid credentials".
    """
    gateway = setUp(gateways, backends, None, tmp_path)
    forged = {"X-Consumer-Name": "root", "X-Consumer-Groups": "admin"}
    for credential in (
        {"apikey": ALICE_KEY},
        {"Authorization": "Bearer " + hsToken()},
        {"Authorization": basic("alice", PASSWORD)},
    ):
        seen = echo(gateway, "/echo/all", dict(forged, **credential))["headers"]
        assert seen["x-consumer-name"] == ["alice"], credential
        assert seen["x-consumer-id"] == ["customer-42"]
        assert seen["x-consumer-groups"] == ["gold,staff"]
        assert "apikey" not in seen and "authorization" not in seen
    seen = echo(gateway, "/echo/all?apikey=" + ALICE_KEY + "&x=1", {})
    assert seen["path"] == "/echo/all?x=1"
    missing = gateway.proxy("GET", "/echo/all")
    assert missing.status == 401
    assert missing.headerValues("WWW-Authenticate") == [
        'Key realm="gateway"',
        'Bearer realm="gateway"',
        'Basic realm="gateway", charset="UTF-8"',
    ]
    for credential in (
        {"apikey": "not-a-key-of-anyone-at-all"},
        {"Authorization": "Bearer " + hsToken(exp=int(time.time()) - 3600)},
        {"Authorization": basic("alice", "wrong")},
    ):
        refused = gateway.proxy("GET", "/echo/all", headers=credential)
        assert (refused.status, refused.json()) == (401, {"error": "invalid credentials"})


def test_aclAndRateLimits(gateways: Any, backends: Any, tmp_path: Path) -> None:
    """
    An ACL lets gold in and answers 403 to silver; a rate limit keyed by
    consumer holds alice back (429) while bob still passes.
    """
    gateway = setUp(gateways, backends, None, tmp_path)
    assert gateway.proxy("GET", "/echo/gold", headers={"apikey": ALICE_KEY}).status == 200
    denied = gateway.proxy("GET", "/echo/gold", headers={"apikey": BOB_KEY})
    assert (denied.status, denied.json()) == (403, {"error": "access denied"})
    statuses = [
        gateway.proxy("GET", "/echo/limited", headers={"apikey": ALICE_KEY}).status
        for _ in range(3)
    ]
    assert statuses == [200, 200, 429]
    assert gateway.proxy("GET", "/echo/limited", headers={"apikey": BOB_KEY}).status == 200


def test_noSecretStoredOrExported(gateways: Any, backends: Any, tmp_path: Path) -> None:
    """
    Neither the store file, nor the admin's answers, nor C{gateway
    export} hold a key or a password; the export applied back changes
    nothing, and keeps every credential working.
    """
    gateway = setUp(gateways, backends, None, tmp_path)
    stored = (tmp_path / "store.json").read_bytes()
    for secret in (ALICE_KEY, BOB_KEY, PASSWORD):
        assert secret.encode() not in stored
        assert json.dumps(secret)[1:-1].encode() not in stored
    assert keyHash(ALICE_KEY).encode() in stored
    answer = gateway.admin("GET", "/api/v1/consumers").text
    exported = cli("export", "--admin", gateway.adminURL or "", "--token", TOKEN)
    assert exported.returncode == 0, exported.stderr
    for text in (answer, exported.stdout):
        for secret in (ALICE_KEY, BOB_KEY, PASSWORD, HS_SECRET, keyHash(ALICE_KEY), "$2b$"):
            assert secret not in text
    assert "without their secrets" in exported.stdout
    path = tmp_path / "export.yaml"
    path.write_text(exported.stdout, encoding="utf-8")
    applied = cli("apply", str(path), "--admin", gateway.adminURL or "", "--token", TOKEN)
    assert applied.returncode == 0, applied.stderr
    assert "no changes" in applied.stdout
    assert gateway.proxy("GET", "/echo/all", headers={"apikey": ALICE_KEY}).status == 200
    assert (
        gateway.proxy(
            "GET", "/echo/all", headers={"Authorization": basic("alice", PASSWORD)}
        ).status
        == 200
    )


def test_noSecretLoggedOrCounted(gateways: Any, backends: Any, tmp_path: Path) -> None:
    """
    After requests carrying keys (in the header, in the query: hidden,
    sent on with C{hideCredentials} off, refused) and a password, neither
    the gateway's output (its own log and the access log's lines), nor
    the admin's stats, nor C{/metrics} hold any of them.
    """
    gateway = setUp(gateways, backends, None, tmp_path)
    kept = {
        "name": "kept",
        "urlPattern": "/echo/kept",
        "nodes": [{"cluster": "c1"}],
        "auth": {"methods": ["key"], "hideCredentials": False},
    }
    assert gateway.admin("PUT", "/api/v1/apis/kept", kept).status in (200, 201)
    wrongKey = "not-a-key-of-anyone-0123456789"
    seen = echo(gateway, "/echo/kept?apikey=" + ALICE_KEY + "&x=1", {})
    assert seen["query"]["apikey"] == [ALICE_KEY]
    echo(gateway, "/echo/all?apikey=" + ALICE_KEY, {})
    echo(gateway, "/echo/all", {"apikey": BOB_KEY})
    echo(gateway, "/echo/all", {"Authorization": basic("alice", PASSWORD)})
    assert gateway.proxy("GET", "/echo/all?apikey=" + wrongKey).status == 401
    assert gateway.proxy("GET", "/echo/all", headers={"apikey": wrongKey}).status == 401
    # The access log's lines are written within ~100 ms.
    waitFor(
        lambda: gateway.logPath.read_text(encoding="utf-8", errors="replace").count("/echo/") >= 6,
        what="the access log's lines",
    )
    output = gateway.logPath.read_text(encoding="utf-8", errors="replace")
    assert "/echo/kept?x=1" in output
    stats = gateway.admin("GET", "/api/v1/stats").text
    metrics = gateway.admin("GET", "/metrics").text
    secrets = (ALICE_KEY, BOB_KEY, PASSWORD, wrongKey, basic("alice", PASSWORD).split()[1])
    for text in (output, stats, metrics):
        for secret in secrets:
            assert secret not in text


def test_jwksRotation(gateways: Any, backends: Any, provider: Provider, tmp_path: Path) -> None:
    """
    Tokens of an OpenID Connect provider are verified against its JWKS,
    served by a real HTTP server: after the provider rotates its key, a
    token of the new kid is refused until a minute passed since the last
    fetch (no fetch meanwhile), then the set is fetched once more and the
    token passes; with the provider down, the keys are kept.
    """
    provider.document = jwks(rsaKey(1), kids=["k1"])
    gateway = setUp(gateways, backends, provider, tmp_path)
    seen = echo(gateway, "/echo/oidc", {"Authorization": "Bearer " + oidcToken(1, "k1")})
    assert seen["headers"]["x-consumer-name"] == ["bob"]
    assert len(provider.fetches) == 1
    firstFetch = provider.fetches[0]
    wrongAudience = gateway.proxy(
        "GET", "/echo/oidc", headers={"Authorization": "Bearer " + oidcToken(1, "k1", aud="x")}
    )
    assert wrongAudience.status == 401
    provider.document = jwks(rsaKey(2), kids=["k2"])
    rotated = {"Authorization": "Bearer " + oidcToken(2, "k2")}
    assert gateway.proxy("GET", "/echo/oidc", headers=rotated).status == 401
    assert len(provider.fetches) == 1
    time.sleep(max(0.0, firstFetch + 61 - time.monotonic()))
    assert gateway.proxy("GET", "/echo/oidc", headers=rotated).status == 200
    assert len(provider.fetches) == 2
    provider.stop()
    again = {"Authorization": "Bearer " + oidcToken(2, "k2", jti="another")}
    assert gateway.proxy("GET", "/echo/oidc", headers=again).status == 200
    waitFor(lambda: gateway.alive(), 1.0)
