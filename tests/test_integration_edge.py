"""
Integration tests of what the gateway does at the edge by itself, with the
real C{twistd -n gateway} process in front of a real backend
(C{tests/backend_app.py}), everything on 127.0.0.1: a mock API, CORS
preflights answered without the backend, and a header transformation as
the backend sees it.
"""

from __future__ import annotations

from typing import Any, Dict

import pytest
from harness import Backend, request
from test_integration_core import gatewayConfig, serversOf

pytestmark = pytest.mark.integration

APP = "https://app.example.com"


def edgeConfig(backend: Backend, *apis: Dict[str, Any]) -> Dict[str, Any]:
    """
    @return: a gateway config with one cluster C{c1} over C{backend}, the
        C{request-id} filter, and the APIs given.
    """
    return gatewayConfig(
        servers=serversOf(backend),
        clusters=[{"name": "c1", "servers": [backend.name]}],
        apis=list(apis),
        filters=["request-id"],
    )


def test_mockAPI(backends, gateways):
    """
    A mock API is answered by the gateway with its status, headers and
    JSON body, never by the backend; it shows in the stats; a mock added
    through the admin serves at once, and so does turning it back into a
    proxied API.
    """
    b1 = backends("b1")
    mock = {
        "name": "mock",
        "urlPattern": "/mock/{id}",
        "response": {"status": 201, "headers": {"X-Mock": "yes"}, "body": {"ok": True}},
        "transform": {"response": {"set": {"X-Id": "$param.id"}}},
    }
    gateway = gateways(edgeConfig(b1, mock))
    answer = gateway.proxy("POST", "/mock/7", body=b"ignored")
    assert answer.status == 201, answer.text
    assert answer.json() == {"ok": True}
    assert answer.header("content-type") == "application/json"
    assert answer.header("x-mock") == "yes"
    assert answer.header("x-id") == "7"
    assert answer.header("x-request-id")
    assert b1.stats()["requests"] == 0
    stats = gateway.admin("GET", "/api/v1/stats").json()
    assert stats["apis"]["mock"]["requests"] == 1

    put = gateway.admin(
        "PUT", "/api/v1/apis/text", {"urlPattern": "/echo/text", "response": {"body": "plain\n"}}
    )
    assert put.status == 201, put.text
    answer = gateway.proxy("GET", "/echo/text")
    assert (answer.status, answer.body) == (200, b"plain\n")
    assert answer.header("content-type") == "text/plain; charset=utf-8"
    put = gateway.admin(
        "PUT", "/api/v1/apis/text", {"urlPattern": "/echo/text", "nodes": [{"cluster": "c1"}]}
    )
    assert put.status == 200, put.text
    answer = gateway.proxy("GET", "/echo/text")
    assert answer.status == 200
    assert answer.header("x-backend") == "b1"
    assert b1.stats()["requests"] == 1


def test_preflightNeverTouchesTheBackend(backends, gateways):
    """
    Preflights for an API of another method are answered by the gateway:
    204 with the allowed headers for an allowed origin, 403 for another;
    the backend never sees them.  The actual request then reaches the
    backend and its answer carries the origin and C{Vary}; a request from
    another origin is served without CORS headers.
    """
    b1 = backends("b1")
    api = {
        "name": "items",
        "urlPattern": "/echo/items/{id}",
        "method": "PUT",
        "nodes": [{"cluster": "c1"}],
        "cors": {
            "origins": [APP, "https://*.example.org"],
            "headers": ["Content-Type", "X-Token"],
            "exposeHeaders": ["X-Backend"],
            "credentials": True,
            "maxAge": 300,
        },
    }
    gateway = gateways(edgeConfig(b1, api))
    for origin in (APP, "https://a.b.example.org"):
        answer = gateway.proxy(
            "OPTIONS",
            "/echo/items/1",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "PUT",
                "Access-Control-Request-Headers": "content-type, x-token",
            },
        )
        assert answer.status == 204, answer.text
        assert answer.body == b""
        assert answer.header("access-control-allow-origin") == origin
        assert answer.header("access-control-allow-methods") == "PUT"
        assert answer.header("access-control-allow-headers") == "Content-Type, X-Token"
        assert answer.header("access-control-allow-credentials") == "true"
        assert answer.header("access-control-max-age") == "300"
    refused = gateway.proxy(
        "OPTIONS",
        "/echo/items/1",
        headers={"Origin": "https://example.org", "Access-Control-Request-Method": "PUT"},
    )
    assert refused.status == 403
    assert refused.header("access-control-allow-origin") is None
    assert b1.stats()["requests"] == 0

    answer = gateway.proxy("PUT", "/echo/items/1", body={"a": 1}, headers={"Origin": APP})
    assert answer.status == 200, answer.text
    assert answer.json()["method"] == "PUT"
    assert answer.header("access-control-allow-origin") == APP
    assert answer.header("access-control-expose-headers") == "X-Backend"
    assert "Origin" in answer.headerValues("vary")
    other = gateway.proxy("PUT", "/echo/items/1", headers={"Origin": "https://evil.example"})
    assert other.status == 200
    assert [k for k, _ in other.headers if k.lower().startswith("access-control-")] == []
    assert b1.stats()["requests"] == 2


def test_transformSeenByTheBackend(backends, gateways):
    """
    The backend receives the headers a transform sets, adds and removes,
    with the request's variables filled in (the request id, the client's
    address, a path parameter, a query parameter and a header); the client
    receives the response's edits; a transform of a managed header is
    refused by the admin with a 400 naming the field.
    """
    b1 = backends("b1")
    api = {
        "name": "t",
        "urlPattern": "/echo/t/{id}",
        "nodes": [{"cluster": "c1"}],
        "transform": {
            "request": {
                "remove": ["Cookie"],
                "set": {
                    "X-Trace": "$requestId",
                    "X-Client": "$clientIp",
                    "X-Item": "item-$param.id",
                    "X-Page": "${query.page}",
                    "Authorization": "Bearer $header.X-Token",
                },
                "add": {"X-Tag": "gateway"},
            },
            "response": {"remove": ["X-Backend"], "set": {"X-Edited": "yes"}},
        },
    }
    gateway = gateways(edgeConfig(b1, api))
    answer = gateway.proxy(
        "GET",
        "/echo/t/42?page=3",
        headers={
            "Cookie": "session=secret",
            "X-Token": "tok",
            "X-Tag": "client",
            "X-Request-Id": "trace-1",
        },
    )
    assert answer.status == 200, answer.text
    seen = answer.json()["headers"]
    assert "cookie" not in seen
    assert seen["x-trace"] == ["trace-1"]
    assert seen["x-client"] == ["127.0.0.1"]
    assert seen["x-item"] == ["item-42"]
    assert seen["x-page"] == ["3"]
    assert seen["authorization"] == ["Bearer tok"]
    assert seen["x-tag"] == ["client", "gateway"]
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert answer.header("x-backend") is None
    assert answer.header("x-edited") == "yes"

    refused = gateway.admin(
        "PUT",
        "/api/v1/apis/t",
        dict(api, transform={"request": {"set": {"X-Forwarded-For": "10.0.0.1"}}}),
    )
    assert refused.status == 400
    assert refused.json()["field"] == "transform.request.set.X-Forwarded-For"
    again = request("GET", gateway.proxyURL + "/echo/t/1")
    assert again.header("x-edited") == "yes"
