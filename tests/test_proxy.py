"""
The proxy resource end to end, in one process: real twisted.web backends
and the real upstream client on 127.0.0.1, requests made with treq.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform

import pytest
import pytest_twisted
from inprocess import listen, rawRequest
from twisted.internet import reactor, task
from twisted.internet.defer import CancelledError
from twisted.web.client import ResponseNeverReceived
from twisted.web.resource import Resource

import twisted.plugins
from gateway.filters import FilterRegistry

# Real backends on 127.0.0.1, through the real reactor: integration tests.
pytestmark = pytest.mark.integration

HERE = os.path.dirname(os.path.abspath(__file__))


API = {"name": "echo", "urlPattern": "/echo/*", "nodes": [{"cluster": "main"}]}


@pytest_twisted.ensureDeferred
async def test_get_with_query_and_headers(harness):
    """
    A GET reaches the backend with its path, query and end-to-end headers
    intact; hop-by-hop headers (including those named in Connection) are
    dropped both ways; the forwarding headers are the gateway's own (a
    client that is no trusted proxy cannot choose them), Via names this
    hop both ways; the response keeps its Content-Length instead of going
    out chunked.
    """
    await harness.start()
    harness.apply([API])
    response = await harness.request(
        "GET",
        "/echo/a/b?x=1&y=%20z",
        headers={
            "X-Custom": "kept",
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "dropped",
            "Keep-Alive": "timeout=5",
            "Proxy-Authorization": "Basic Zm9v",
            "X-Forwarded-For": "10.9.8.7",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "evil.example",
            "X-Forwarded-Port": "1",
            "X-Real-IP": "10.9.8.7",
            "Forwarded": "for=10.9.8.7;proto=https",
            "Via": "1.0 client-side",
        },
    )
    assert response.code == 200
    seen = json.loads(await response.content())
    assert seen["method"] == "GET"
    assert seen["uri"] == "/echo/a/b?x=1&y=%20z"
    headers = seen["headers"]
    assert headers["x-custom"] == ["kept"]
    for hop in ("x-hop", "keep-alive", "proxy-authorization"):
        assert hop not in headers
    gatewayHost = harness.url[len("http://") :]
    assert headers["x-forwarded-for"] == ["127.0.0.1"]
    assert headers["x-real-ip"] == ["127.0.0.1"]
    assert headers["x-forwarded-proto"] == ["http"]
    assert headers["x-forwarded-host"] == [gatewayHost]
    assert headers["x-forwarded-port"] == [gatewayHost.rpartition(":")[2]]
    assert headers["forwarded"] == [f'for=127.0.0.1;host="{gatewayHost}";proto=http']
    assert ", ".join(headers["via"]) == "1.0 client-side, 1.1 gateway"
    assert response.headers.getRawHeaders("via") == ["1.1 gateway"]
    assert headers["host"] == [f"127.0.0.1:{harness.backendPorts['b1']}"]

    status, responseHeaders, body = await rawRequest(
        harness.url, b"GET /echo/raw HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
    )
    assert status == "HTTP/1.1 200 OK"
    assert responseHeaders["content-length"] == [str(len(body))]
    assert "transfer-encoding" not in responseHeaders
    assert "content-encoding" not in responseHeaders
    assert responseHeaders["x-backend"] == ["b1"]
    assert responseHeaders["content-type"] == ["application/json"]
    # The backend named X-Secret-Hop in its Connection header: hop-by-hop.
    assert "x-secret-hop" not in responseHeaders
    assert json.loads(body)["uri"] == "/echo/raw"


@pytest_twisted.ensureDeferred
async def test_trusted_proxy_forwarding(harness):
    """
    From a trusted proxy the forwarding headers are believed: the client is
    the right-most untrusted address of X-Forwarded-For, which is extended
    with the peer, as Forwarded is; X-Forwarded-Proto, -Host, -Port and
    X-Real-IP are kept as the proxy sent them, and filled in when missing.
    """
    await harness.start(trusted=["127.0.0.0/8"])
    harness.apply([API])
    response = await harness.request(
        "GET",
        "/echo/t",
        headers={
            "X-Forwarded-For": "203.0.113.9, 127.0.0.5",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "api.example.com",
            "Forwarded": 'for=203.0.113.9;host=api.example.com;proto=https, for="[2001:db8::1]"',
        },
    )
    headers = json.loads(await response.content())["headers"]
    gatewayHost = harness.url[len("http://") :]
    assert headers["x-forwarded-for"] == ["203.0.113.9, 127.0.0.5, 127.0.0.1"]
    assert headers["x-forwarded-proto"] == ["https"]
    assert headers["x-forwarded-host"] == ["api.example.com"]
    assert headers["x-forwarded-port"] == [gatewayHost.rpartition(":")[2]]
    assert headers["x-real-ip"] == ["203.0.113.9"]
    assert headers["forwarded"] == [
        'for=203.0.113.9;host=api.example.com;proto=https, for="[2001:db8::1]", '
        f'for=127.0.0.1;host="{gatewayHost}";proto=http'
    ]
    response = await harness.request("GET", "/echo/t", headers={"X-Real-IP": "198.51.100.1"})
    headers = json.loads(await response.content())["headers"]
    assert headers["x-real-ip"] == ["198.51.100.1"]
    assert headers["x-forwarded-for"] == ["127.0.0.1"]


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("size", [0, 10, 150_000, 3_000_000])
@pytest_twisted.ensureDeferred
async def test_bodies_pass_intact(harness, method, size):
    """
    Request bodies of every size (empty, in memory, spooled to disk) reach
    the backend byte for byte, with one right Content-Length.
    """
    await harness.start()
    harness.apply([API])
    body = os.urandom(size)
    response = await harness.request(method, "/echo/up", data=body)
    assert response.code == 200
    seen = json.loads(await response.content())
    assert seen["method"] == method
    assert seen["bodyLength"] == size
    assert seen["bodySha256"] == hashlib.sha256(body).hexdigest()
    if size or method != "DELETE":
        assert seen["headers"]["content-length"] == [str(size)]


@pytest_twisted.ensureDeferred
async def test_status_phrase_and_body(harness):
    """
    The backend's status, reason phrase, headers and body come back as they
    were sent.
    """
    await harness.start()
    harness.apply([{"name": "t", "urlPattern": "/teapot", "nodes": [{"cluster": "main"}]}])
    status, headers, body = await rawRequest(
        harness.url, b"GET /teapot HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
    )
    assert status == "HTTP/1.1 418 I'm a teapot"
    assert body == b"short and stout"
    assert headers["content-length"] == ["15"]


@pytest_twisted.ensureDeferred
async def test_head_and_no_content(harness):
    """
    HEAD answers carry the backend's Content-Length and no body; 204 answers
    have no body and no chunked framing.
    """
    await harness.start()
    harness.apply(
        [
            {"name": "t", "urlPattern": "/teapot", "nodes": [{"cluster": "main"}]},
            {"name": "nc", "urlPattern": "/nocontent", "nodes": [{"cluster": "main"}]},
        ]
    )
    status, headHeaders, headBody = await rawRequest(
        harness.url, b"HEAD /teapot HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
    )
    assert status == "HTTP/1.1 418 I'm a teapot"
    assert headHeaders["content-length"] == ["15"]
    assert headBody == b""
    status, ncHeaders, ncBody = await rawRequest(
        harness.url, b"GET /nocontent HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
    )
    assert status.startswith("HTTP/1.1 204")
    assert "transfer-encoding" not in ncHeaders
    assert ncBody == b""


@pytest_twisted.ensureDeferred
async def test_chunked_upstream_is_streamed(harness):
    """
    An upstream answer without Content-Length is passed on chunked, whole.
    """
    await harness.start()
    harness.apply([{"name": "c", "urlPattern": "/chunked", "nodes": [{"cluster": "main"}]}])
    response = await harness.request("GET", "/chunked")
    assert response.code == 200
    assert await response.content() == b"a" * 10 + b"b" * 10


@pytest_twisted.ensureDeferred
async def test_url_rewrite(harness):
    """
    urlRewrite builds the upstream path from pattern parameters, query
    parameters and headers, percent-encoding what it inserts; the client's
    query is kept when the rewrite has none.
    """
    await harness.start()
    harness.apply(
        [
            {
                "name": "user",
                "urlPattern": "/api/users/{id:int}",
                "nodes": [{"cluster": "main", "urlRewrite": "/users/{id}"}],
            },
            {
                "name": "search",
                "urlPattern": "/api/search/{term}",
                "nodes": [
                    {
                        "cluster": "main",
                        "urlRewrite": "/s?q={term}&lang=$header.X-Lang&page=$query.p",
                    }
                ],
            },
        ]
    )
    r = await harness.request("GET", "/api/users/42?fields=name")
    assert json.loads(await r.content())["uri"] == "/users/42?fields=name"
    r = await harness.request("GET", "/api/search/a%20b%26c?p=2&other=1", headers={"X-Lang": "de"})
    assert json.loads(await r.content())["uri"] == "/s?q=a%20b%26c&lang=de&page=2"
    r = await harness.request("GET", "/api/users/abc")
    assert r.code == 404


@pytest_twisted.ensureDeferred
async def test_no_api_is_404_json(harness):
    """
    A request no API matches gets a JSON 404 and never reaches a backend.
    """
    await harness.start()
    harness.apply([API])
    r = await harness.request("GET", "/nowhere")
    assert r.code == 404
    assert r.headers.getRawHeaders("content-type") == ["application/json"]
    assert json.loads(await r.content()) == {"error": "no API matches this request"}
    assert harness.backends["b1"].seen == []


@pytest_twisted.ensureDeferred
async def test_not_ready_is_503(harness):
    """
    Before the first snapshot, the proxy answers 503 rather than 404.
    """
    await harness.start()
    r = await harness.request("GET", "/echo/x")
    assert r.code == 503
    assert "starting" in json.loads(await r.content())["error"]


@pytest_twisted.ensureDeferred
async def test_connection_refused_is_502(harness):
    """
    A server that refuses connections gives a JSON 502 naming the API and
    server, at once.
    """
    await harness.start()
    probe = await listen(Resource())
    deadPort = probe.getHost().port
    await probe.stopListening()
    harness.backendPorts = {"dead": deadPort}
    harness.apply([API])
    r = await harness.request("GET", "/echo/x")
    assert r.code == 502
    body = json.loads(await r.content())
    assert body == {"error": "upstream refused the connection", "api": "echo", "server": "dead"}
    assert harness.manager.backends["dead"].active == 0


@pytest_twisted.ensureDeferred
async def test_timeout_is_504(harness):
    """
    A backend that does not answer within the node's timeout gives a 504,
    and the in-flight count goes back to zero.
    """
    await harness.start()
    harness.apply(
        [{"name": "h", "urlPattern": "/hang", "nodes": [{"cluster": "main", "timeout": 0.3}]}]
    )
    started = reactor.seconds()
    r = await harness.request("GET", "/hang")
    elapsed = reactor.seconds() - started
    assert r.code == 504
    assert json.loads(await r.content())["error"] == "upstream timed out"
    assert 0.25 <= elapsed < 2.0
    assert harness.manager.backends["b1"].active == 0


@pytest_twisted.ensureDeferred
async def test_no_healthy_server_is_503(harness):
    """
    With every server of the cluster down, the proxy answers 503 without
    trying any.
    """
    await harness.start(names=("b1", "b2"))
    harness.apply([API])
    for backend in harness.manager.backends.values():
        backend.healthy = False
    r = await harness.request("GET", "/echo/x")
    assert r.code == 503
    assert json.loads(await r.content())["error"] == "no healthy server available"
    assert harness.backends["b1"].seen == harness.backends["b2"].seen == []
    harness.manager.backends["b2"].healthy = True
    r = await harness.request("GET", "/echo/x")
    assert r.code == 200
    assert json.loads(await r.content())["server"] == "b2"


@pytest_twisted.ensureDeferred
async def test_round_robin_over_cluster(harness):
    """
    Requests are spread over the cluster's servers by its balancer.
    """
    await harness.start(names=("b1", "b2", "b3"))
    harness.apply([API])
    seen = []
    for _ in range(9):
        r = await harness.request("GET", "/echo/x")
        seen.append(json.loads(await r.content())["server"])
    assert sorted(seen) == ["b1"] * 3 + ["b2"] * 3 + ["b3"] * 3


@pytest_twisted.ensureDeferred
async def test_in_flight_request_keeps_its_snapshot(harness):
    """
    A request in flight when a new snapshot is swapped in finishes on the
    snapshot it started with; new requests use the new one.
    """
    await harness.start(names=("b1", "b2"))
    clusters = {
        "one": {"name": "one", "servers": ["b1"]},
        "two": {"name": "two", "servers": ["b2"]},
    }
    slow = {"name": "slow", "urlPattern": "/hang", "nodes": [{"cluster": "one"}]}
    harness.apply([slow], clusters=clusters, revision=1)
    pending = harness.request("GET", "/hang")
    while not harness.backends["b1"].hanging:
        await task.deferLater(reactor, 0.01, lambda: None)
    moved = dict(slow, nodes=[{"cluster": "two"}])
    harness.apply([moved], clusters=clusters, revision=2)
    assert harness.manager.snapshot.revision == 2
    harness.backends["b1"].hanging[0].write(b"from old")
    harness.backends["b1"].hanging[0].finish()
    r = await pending
    assert await r.content() == b"from old"
    r2 = harness.request("GET", "/hang")
    while not harness.backends["b2"].hanging:
        await task.deferLater(reactor, 0.01, lambda: None)
    harness.backends["b2"].hanging[0].write(b"from new")
    harness.backends["b2"].hanging[0].finish()
    assert await (await r2).content() == b"from new"


@pytest_twisted.ensureDeferred
async def test_client_disconnect_cancels_upstream(harness):
    """
    When the client goes away while the backend is still thinking, the
    upstream request is cancelled and the in-flight count drops.
    """
    await harness.start()
    harness.apply([{"name": "h", "urlPattern": "/hang", "nodes": [{"cluster": "main"}]}])
    d = harness.request("GET", "/hang")
    while not harness.backends["b1"].hanging:
        await task.deferLater(reactor, 0.01, lambda: None)
    assert harness.manager.backends["b1"].active == 1
    d.cancel()
    with pytest.raises((CancelledError, ResponseNeverReceived)):
        await d
    for _ in range(100):
        if harness.backends["b1"].hanging[0]._disconnected:
            break
        await task.deferLater(reactor, 0.01, lambda: None)
    assert harness.backends["b1"].hanging[0]._disconnected
    assert harness.manager.backends["b1"].active == 0


@pytest_twisted.ensureDeferred
async def test_request_id_filter(harness):
    """
    The built-in request-id filter, loaded as a Twisted plugin by name,
    gives the request an id, passes it upstream and returns it; a client's
    sane id is kept.
    """
    await harness.start(globalFilters=["request-id"])
    harness.apply([API])
    r = await harness.request("GET", "/echo/x")
    rid = r.headers.getRawHeaders("x-request-id")
    assert rid and len(rid[0]) == 32
    assert json.loads(await r.content())["headers"]["x-request-id"] == rid
    r = await harness.request("GET", "/echo/x", headers={"X-Request-Id": "abc-123"})
    assert r.headers.getRawHeaders("x-request-id") == ["abc-123"]
    await r.content()
    r = await harness.request("GET", "/nowhere")
    assert r.code == 404


@pytest_twisted.ensureDeferred
async def test_own_answers_pass_global_filters(harness, goodPlugins):
    """
    The gateway's own answers pass the global filters too: the 503 before
    any configuration and the 404 for no API carry the request id, and a
    global filter may answer such a request itself.
    """
    await harness.start(globalFilters=["request-id", "deny-header"], registry=goodPlugins)
    r = await harness.request("GET", "/echo/x")
    assert r.code == 503
    assert r.headers.getRawHeaders("x-request-id") is not None
    await r.content()
    harness.apply([API])
    r = await harness.request("GET", "/nowhere", headers={"X-Request-Id": "abc-123"})
    assert r.code == 404
    assert r.headers.getRawHeaders("x-request-id") == ["abc-123"]
    assert r.headers.getRawHeaders("x-seen-by") == ["deny-header"]
    assert json.loads(await r.content()) == {"error": "no API matches this request"}
    r = await harness.request("GET", "/nowhere", headers={"X-Deny": "1"})
    assert r.code == 403
    assert json.loads(await r.content()) == {"error": "denied by test filter"}


@pytest.fixture
def goodPlugins():
    path = os.path.join(HERE, "plugins_good")
    twisted.plugins.__path__.append(path)
    yield FilterRegistry.fromPlugins()
    twisted.plugins.__path__.remove(path)


@pytest.mark.parametrize("delay", [0, 0.05])
@pytest_twisted.ensureDeferred
async def test_custom_plugin_filter_per_api(harness, goodPlugins, delay):
    """
    A custom filter from a test-only plugins folder, enabled per API with
    its config, can answer early (synchronously or after a Deferred)
    without touching the backend; the filters that ran see every answer in
    their after hook, including the early one and the gateway's own errors.
    """
    await harness.start(globalFilters=["request-id"], registry=goodPlugins)
    api = dict(API, filters=[{"name": "deny-header", "config": {"delay": delay}}])
    harness.apply([api])
    r = await harness.request("GET", "/echo/x", headers={"X-Deny": "1"})
    assert r.code == 403
    assert r.headers.getRawHeaders("x-denied") == ["yes"]
    assert r.headers.getRawHeaders("x-request-id") is not None
    assert json.loads(await r.content()) == {"error": "denied by test filter"}
    assert harness.backends["b1"].seen == []
    r = await harness.request("GET", "/echo/x")
    assert r.code == 200
    assert r.headers.getRawHeaders("x-seen-by") == ["deny-header"]
    assert json.loads(await r.content())["headers"]["x-test-filter"] == ["passed"]


@pytest_twisted.ensureDeferred
async def test_filter_error_hook_sees_upstream_failure(harness, goodPlugins):
    """
    An upstream failure passes the error hooks, then the 502 passes the
    after hooks.
    """
    await harness.start(registry=goodPlugins)
    probe = await listen(Resource())
    deadPort = probe.getHost().port
    await probe.stopListening()
    harness.backendPorts = {"dead": deadPort}
    harness.apply([dict(API, filters=[{"name": "deny-header"}])])
    r = await harness.request("GET", "/echo/x")
    assert r.code == 502
    assert r.headers.getRawHeaders("x-seen-by") == ["deny-header"]
    (made,) = harness.manager.snapshot.apis["echo"].filters
    assert len(made.errors) == 1


@pytest_twisted.ensureDeferred
async def test_trusted_proxy_client_address(harness):
    """
    With 127.0.0.1 trusted, the client address is the right-most untrusted
    X-Forwarded-For hop; the chain sent upstream is extended, not replaced.
    """
    await harness.start(trusted=["127.0.0.0/8"])
    harness.apply([API])
    seenIPs = []

    original = harness.resource._dispatch

    def spy(context, chain):
        seenIPs.append(context.clientIP)
        return original(context, chain)

    harness.resource._dispatch = spy
    r = await harness.request("GET", "/echo/x", headers={"X-Forwarded-For": "1.1.1.1, 2.2.2.2"})
    seen = json.loads(await r.content())
    assert seenIPs == ["2.2.2.2"]
    assert seen["headers"]["x-forwarded-for"] == ["1.1.1.1, 2.2.2.2, 127.0.0.1"]


#: The gateway's objects made for each proxied request.
PER_REQUEST = {
    "GatewayRequest",
    "Exchange",
    "_Request",
    "_Response",
    "_BodyProducer",
    "_StreamBody",
    "_Aggregation",
    "_NodeCall",
}


@pytest.mark.skipif(
    platform.python_implementation() != "CPython",
    reason="CPython's cycle collector (gc.DEBUG_SAVEALL); PyPy's tracing GC has no such cost",
)
@pytest_twisted.ensureDeferred
async def test_a_proxied_request_leaves_no_reference_cycle(harness):
    """
    Once answered, a proxied request (plain or aggregated) is freed by
    reference counting alone: none of the gateway's per-request objects is
    left for the cycle collector, which would otherwise run every few
    requests under load.
    """
    import gc

    await harness.start()
    harness.apply(
        [
            API,
            {
                "name": "agg",
                "urlPattern": "/agg",
                "nodes": [
                    {"cluster": "main", "urlRewrite": "/echo/a", "attrName": "a"},
                    {"cluster": "main", "urlRewrite": "/echo/b", "attrName": "b"},
                ],
            },
        ]
    )
    for path in ("/echo/x", "/agg"):
        # A first request makes the pooled connections, which live on.
        response = await harness.request("GET", path)
        await response.content()
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(5):
            for path in ("/echo/x", "/agg"):
                response = await harness.request("GET", path)
                assert response.code == 200
                await response.content()
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        # (What earlier tests let go of may be collected meanwhile: only
        # the objects of a request are looked for.)
        kinds = {
            type(o).__qualname__
            for o in gc.garbage
            if type(o).__qualname__ in PER_REQUEST and type(o).__module__.startswith("gateway.")
        }
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if enabled:
            gc.enable()
    assert kinds == set()


@pytest_twisted.ensureDeferred
async def test_retry_on_status(harness):
    """
    An answer whose status is in the node's retryOn sends an idempotent
    request to another server (after a short back-off); a POST is not
    sent again, and an answer with retries exhausted goes to the client.
    """
    await harness.start(names=("b1", "b2"))
    api = {
        "name": "r",
        "urlPattern": "/only/*",
        "nodes": [{"cluster": "main", "retryOn": [503], "retries": 1}],
    }
    harness.apply([api])
    for _ in range(4):
        r = await harness.request("GET", "/only/b2")
        assert (r.code, await r.content()) == (200, b"b2")
    # (Round-robin: each first went to b1, whose 503 was retried on b2.)
    assert len(harness.backends["b1"].seen) == 4
    assert len(harness.backends["b2"].seen) == 4
    answers = []
    for _ in range(2):
        r = await harness.request("POST", "/only/b2", data=b"x")
        answers.append(r.code)
        await r.content()
    assert sorted(answers) == [200, 503]
    harness.apply(
        [dict(api, nodes=[{"cluster": "main", "retryOn": [503], "retries": 0}])], revision=2
    )
    codes = []
    for _ in range(2):
        r = await harness.request("GET", "/only/b2")
        codes.append(r.code)
        await r.content()
    assert sorted(codes) == [200, 503]
