"""
Protection through the real proxy: rate limits, IP access, per-server
maxQPS, circuit breakers, passive ejection and retries, against real
in-process backends on 127.0.0.1.
"""

from __future__ import annotations

import copy
import json

import pytest
import pytest_twisted
from inprocess import listen
from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Site

# Real backends on 127.0.0.1, through the real reactor: integration tests.
pytestmark = pytest.mark.integration


async def deadPort():
    probe = await listen(None, Site(Resource()))
    port = probe.getHost().port
    await probe.stopListening()
    return port


def api(**extra):
    return dict({"name": "echo", "urlPattern": "/echo/*", "nodes": [{"cluster": "main"}]}, **extra)


async def codes(harness, n, path="/echo/x", **kw):
    out = []
    for _ in range(n):
        r = await harness.request("GET", path, **kw)
        await r.content()
        out.append(r.code)
    return out


@pytest_twisted.ensureDeferred
async def test_api_rate_limit(harness):
    """
    An API's rateLimit admits its burst, then answers 429 with Retry-After
    and RateLimit-* headers without touching the backend; allowed answers
    carry RateLimit-* too.
    """
    await harness.start()
    harness.apply([api(rateLimit={"rate": 0.5, "burst": 3})])
    first = await harness.request("GET", "/echo/x")
    await first.content()
    assert first.code == 200
    assert first.headers.getRawHeaders("ratelimit-limit") == ["3"]
    assert first.headers.getRawHeaders("ratelimit-remaining") == ["2"]
    assert await codes(harness, 2) == [200, 200]
    r = await harness.request("GET", "/echo/x")
    body = json.loads(await r.content())
    assert r.code == 429
    assert body["error"] == "rate limit exceeded"
    assert r.headers.getRawHeaders("retry-after") == ["2"]
    assert r.headers.getRawHeaders("ratelimit-remaining") == ["0"]
    assert len(harness.backends["b1"].seen) == 3


@pytest_twisted.ensureDeferred
async def test_rate_limit_keyed_by_header(harness):
    """
    With key header:X-User each user has a bucket of its own.
    """
    await harness.start()
    harness.apply([api(rateLimit={"rate": 0.1, "burst": 1, "key": "header:X-User"})])
    assert await codes(harness, 2, headers={"X-User": "a"}) == [200, 429]
    assert await codes(harness, 2, headers={"X-User": "b"}) == [200, 429]


@pytest_twisted.ensureDeferred
async def test_rate_limit_survives_unrelated_change(harness):
    """
    A configuration change that does not touch an API's limits keeps its
    buckets: a reload is no way around a rate limit.
    """
    await harness.start()
    limited = api(rateLimit={"rate": 0.1, "burst": 1})
    other = {"name": "other", "urlPattern": "/other", "nodes": [{"cluster": "main"}]}
    harness.apply([limited], revision=1)
    assert await codes(harness, 1) == [200]
    harness.apply([limited, other], revision=2)
    assert await codes(harness, 1) == [429]


@pytest_twisted.ensureDeferred
async def test_ip_access(harness):
    """
    ipAccess denies with 403 before anything else happens; deny wins over
    allow.
    """
    await harness.start()
    harness.apply([api(ipAccess={"allow": ["127.0.0.0/8"], "deny": ["127.0.0.1/32"]})])
    r = await harness.request("GET", "/echo/x")
    assert r.code == 403
    assert json.loads(await r.content())["error"] == "access denied"
    assert harness.backends["b1"].seen == []
    harness.apply([api(ipAccess={"allow": ["127.0.0.0/8"]})], revision=2)
    assert await codes(harness, 1) == [200]


@pytest_twisted.ensureDeferred
async def test_server_max_qps(harness):
    """
    A server's maxQPS is never exceeded: while its bucket is empty the
    balancer sends to the other server, and with every server at its limit
    the client gets 429 with Retry-After.
    """
    await harness.start(names=("b1", "b2"))
    harness.apply([api()])
    state = harness.manager.snapshot.catalog.toResources()
    servers = state["servers"]
    servers["b1"]["maxQPS"] = 2
    servers["b2"]["maxQPS"] = 2
    from gateway.store import StoreState

    harness.manager.apply(StoreState(5, state))
    results = await codes(harness, 6)
    assert results[:4] == [200] * 4
    assert results[4:] == [429, 429]
    assert len(harness.backends["b1"].seen) == 2
    assert len(harness.backends["b2"].seen) == 2
    r = await harness.request("GET", "/echo/x")
    assert r.headers.getRawHeaders("retry-after") == ["1"]
    await r.content()


@pytest_twisted.ensureDeferred
async def test_server_breaker_opens_and_balancer_skips(harness):
    """
    A server whose requests fail trips its breaker; the balancer then skips
    it and the healthy server takes all traffic; with no other server the
    client gets 503 at once.
    """
    await harness.start(names=("b1",))
    dead = await deadPort()
    harness.backendPorts["dead"] = dead
    harness.apply([api(nodes=[{"cluster": "main", "retries": 0}])])
    state = harness.manager.snapshot.catalog.toResources()
    state["servers"]["dead"]["circuitBreaker"] = {
        "failureRateToOpen": 50,
        "minRequests": 2,
        "window": 10,
        "openTimeout": 30,
    }
    from gateway.store import StoreState

    harness.manager.apply(StoreState(5, state))
    results = await codes(harness, 4)
    # round-robin b1, dead, b1, dead: the second failure opens the breaker.
    assert results == [200, 502, 200, 502]
    assert harness.manager.backends["dead"].breaker.state == "open"
    assert await codes(harness, 4) == [200, 200, 200, 200]

    # A state's JSON is read-only once given to the manager: a copy changes.
    state = copy.deepcopy(state)
    state["clusters"]["main"]["servers"] = ["dead"]
    harness.manager.apply(StoreState(6, state))
    started = reactor.seconds()
    r = await harness.request("GET", "/echo/x")
    body = json.loads(await r.content())
    assert r.code == 503
    assert "circuit open" in body["error"]
    assert reactor.seconds() - started < 0.5


@pytest_twisted.ensureDeferred
async def test_passive_ejection(harness):
    """
    passiveHealth ejects a server after consecutive failed requests.
    """
    await harness.start(names=("b1",))
    harness.backendPorts["dead"] = await deadPort()
    harness.apply([api(nodes=[{"cluster": "main", "retries": 0}])])
    state = harness.manager.snapshot.catalog.toResources()
    state["servers"]["dead"]["passiveHealth"] = {"consecutiveFailures": 2, "ejectTime": 60}
    from gateway.store import StoreState

    harness.manager.apply(StoreState(5, state))
    assert await codes(harness, 4) == [200, 502, 200, 502]
    assert harness.manager.backends["dead"].unavailableReason() == "ejected"
    assert await codes(harness, 3) == [200, 200, 200]


@pytest_twisted.ensureDeferred
async def test_idempotent_retry_on_refused(harness):
    """
    A GET whose server refuses the connection is retried on another server
    and succeeds; a POST is not retried.
    """
    await harness.start(names=("b1",))
    harness.backendPorts["dead"] = await deadPort()
    harness.apply([api()])
    # round-robin order is b1, dead: every second GET hits the dead server first.
    assert await codes(harness, 6) == [200] * 6
    assert len(harness.backends["b1"].seen) == 6
    posts = []
    for _ in range(2):
        r = await harness.request("POST", "/echo/x", data=b"x")
        await r.content()
        posts.append(r.code)
    assert sorted(posts) == [200, 502]
