"""
Aggregation and mirroring through the real proxy, against real in-process
backends on 127.0.0.1.
"""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from inprocess import listen
from twisted.internet import reactor, task
from twisted.web.resource import Resource
from twisted.web.server import Site

# Real backends on 127.0.0.1, through the real reactor: integration tests.
pytestmark = pytest.mark.integration


def aggregation(*nodes, name="agg", pattern="/agg/{id}"):
    return {"name": name, "urlPattern": pattern, "nodes": list(nodes)}


def node(attr, path, cluster="main", **extra):
    return dict({"cluster": cluster, "attrName": attr, "urlRewrite": path}, **extra)


async def wait(predicate, limit=5.0):
    deadline = reactor.seconds() + limit
    while not predicate():
        assert reactor.seconds() < deadline, "condition not reached in time"
        await task.deferLater(reactor, 0.01, lambda: None)


@pytest_twisted.ensureDeferred
async def test_nodes_run_concurrently_and_merge(harness):
    """
    Three nodes that each take 200 ms answer in well under their sum: the
    answer is one object keyed by attrName, with path params substituted.
    """
    await harness.start(names=("b1", "b2", "b3"))
    harness.apply(
        [
            aggregation(
                node("user", "/json/user-{id}?delay=200"),
                node("orders", "/json/orders-{id}?delay=200"),
                node("prefs", "/json/prefs-{id}?delay=200"),
            )
        ]
    )
    started = reactor.seconds()
    r = await harness.request("GET", "/agg/7")
    body = json.loads(await r.content())
    elapsed = reactor.seconds() - started
    assert r.code == 200
    assert r.headers.getRawHeaders("content-type") == ["application/json"]
    assert r.headers.getRawHeaders("x-gateway-partial") is None
    assert sorted(body) == ["orders", "prefs", "user"]
    assert body["user"]["name"] == "user-7"
    assert body["orders"]["name"] == "orders-7"
    assert 0.2 <= elapsed < 0.3, elapsed


@pytest_twisted.ensureDeferred
async def test_head_answers_as_get(harness):
    """
    HEAD on an aggregation answers as GET would, without the body: the
    same status and headers (its Content-Length the GET's body's), and its
    nodes are asked with GETs (a HEAD's empty answers are no JSON).
    """
    await harness.start(names=("b1", "b2"))
    harness.apply([aggregation(node("user", "/json/user-{id}"), node("prefs", "/json/p-{id}"))])
    got = await harness.request("GET", "/agg/7")
    body = await got.content()
    head = await harness.request("HEAD", "/agg/7")
    assert (head.code, await head.content()) == (200, b"")
    assert head.headers.getRawHeaders("content-length") == [str(len(body))]
    assert head.headers.getRawHeaders("x-gateway-partial") is None


@pytest_twisted.ensureDeferred
async def test_batches_run_in_order_and_pass_values(harness):
    """
    A later batch starts after the earlier one and can use its answer's
    fields in its urlRewrite ($depend.attr.field).
    """
    await harness.start()
    harness.apply(
        [
            aggregation(
                node("first", "/json/first?delay=50", batch=0),
                node(
                    "second",
                    "/json/second?from=$depend.first.name&srv=$depend.first.server",
                    batch=1,
                ),
            )
        ]
    )
    r = await harness.request("GET", "/agg/1")
    body = json.loads(await r.content())
    assert r.code == 200
    assert body["second"]["query"] == {"from": "first", "srv": "b1"}


@pytest_twisted.ensureDeferred
async def test_depend_on_same_or_later_batch_is_refused(harness):
    """
    A $depend on a node that is not in an earlier batch is refused when the
    snapshot is built, naming the field.
    """
    await harness.start()

    from gateway.model.schema import ValidationError

    with pytest.raises(ValidationError) as e:
        harness.apply([aggregation(node("a", "/json/a"), node("b", "/json/b?x=$depend.a.name"))])
    assert e.value.field == "apis/agg:nodes[1].urlRewrite"


@pytest_twisted.ensureDeferred
async def test_optional_failures_become_null(harness):
    """
    Failed optional nodes (error status, non-JSON, timeout, refused) become
    null and are named in X-Gateway-Partial; the others are answered.
    """
    await harness.start()
    harness.apply(
        [
            aggregation(
                node("ok", "/json/ok"),
                node("status", "/json/x?status=500", required=False),
                node("raw", "/json/x?raw=1", required=False),
                node("slow", "/json/x?delay=2000", required=False, timeout=0.2),
            )
        ]
    )
    started = reactor.seconds()
    r = await harness.request("GET", "/agg/1")
    body = json.loads(await r.content())
    assert reactor.seconds() - started < 1.5
    assert r.code == 200
    assert body["ok"]["name"] == "ok"
    assert body["status"] is None and body["raw"] is None and body["slow"] is None
    assert sorted(r.headers.getRawHeaders("x-gateway-partial")[0].split(",")) == [
        "raw",
        "slow",
        "status",
    ]


@pytest_twisted.ensureDeferred
async def test_required_failure_fails_all_and_cancels_others(harness):
    """
    A failed required node fails the whole request with 502 at once, and
    the node calls still in flight are cancelled.
    """
    await harness.start()
    harness.apply(
        [
            aggregation(
                node("bad", "/json/bad?status=500&delay=50"),
                node("slow", "/json/slow?delay=3000"),
            )
        ]
    )
    started = reactor.seconds()
    r = await harness.request("GET", "/agg/1")
    body = json.loads(await r.content())
    assert reactor.seconds() - started < 1.0
    assert r.code == 502
    assert body["api"] == "agg"
    await wait(lambda: "slow" in harness.backends["b1"].cancelled)
    assert harness.manager.backends["b1"].active == 0


@pytest_twisted.ensureDeferred
async def test_required_timeout_is_504(harness):
    """
    A required node that times out gives 504.
    """
    await harness.start()
    harness.apply(
        [aggregation(node("a", "/json/a"), node("slow", "/json/s?delay=3000", timeout=0.2))]
    )
    r = await harness.request("GET", "/agg/1")
    assert r.code == 504
    assert json.loads(await r.content())["error"] == "upstream timed out"


@pytest_twisted.ensureDeferred
async def test_client_cancel_cancels_nodes(harness):
    """
    A client that goes away cancels every node call in flight.
    """
    await harness.start()
    harness.apply([aggregation(node("a", "/json/a?delay=3000"), node("b", "/json/b?delay=3000"))])
    d = harness.request("GET", "/agg/1")
    await wait(lambda: harness.manager.backends["b1"].active == 2)
    d.cancel()
    try:
        await d
    except Exception:
        pass
    await wait(lambda: sorted(harness.backends["b1"].cancelled) == ["a", "b"])
    await wait(lambda: harness.manager.backends["b1"].active == 0)


@pytest_twisted.ensureDeferred
async def test_mirror_does_not_affect_client(harness):
    """
    A mirror rule copies matching requests to another cluster; the client's
    answer comes from the main cluster and does not wait for a slow mirror
    or fail with a dead one.
    """
    await harness.start(names=("main1", "shadow"))
    clusters = {
        "main": {"name": "main", "servers": ["main1"]},
        "shadow": {"name": "shadow", "servers": ["shadow"]},
    }
    routing = {
        "name": "copy",
        "cluster": "shadow",
        "strategy": "mirror",
        "conditions": [{"source": "header", "name": "X-Mirror", "op": "exists"}],
    }
    api = {"name": "j", "urlPattern": "/json/*", "nodes": [{"cluster": "main"}]}
    harness.apply([api], clusters=clusters, routings={"copy": routing})
    r = await harness.request("GET", "/json/m1", headers={"X-Mirror": "1"})
    assert json.loads(await r.content())["server"] == "main1"
    await wait(lambda: "/json/m1" in harness.backends["shadow"].seen)
    r = await harness.request("GET", "/json/m2")
    await r.content()
    assert "/json/m2" not in harness.backends["shadow"].seen

    # A mirror that never answers does not delay the client.
    harness.backends["shadow"].hangAll = True
    started = reactor.seconds()
    r = await harness.request("GET", "/json/m3", headers={"X-Mirror": "1"})
    assert json.loads(await r.content())["server"] == "main1"
    assert reactor.seconds() - started < 0.5
    await wait(lambda: len(harness.backends["shadow"].hanging) == 1)
    assert harness.mirror.inFlight == 1

    # A dead mirror (connection refused) does not fail the client.
    probe = await listen(None, Site(Resource()))
    deadPort = probe.getHost().port
    await probe.stopListening()
    harness.backendPorts["shadow"] = deadPort
    harness.apply([api], clusters=clusters, routings={"copy": routing}, revision=2)
    r = await harness.request("GET", "/json/m4", headers={"X-Mirror": "1"})
    assert r.code == 200
    assert json.loads(await r.content())["server"] == "main1"
    await wait(lambda: harness.mirror.failed >= 1)


def _splitSetup(harness, **routing):
    clusters = {
        "main": {"name": "main", "servers": ["main1"]},
        "beta": {"name": "beta", "servers": ["beta1"]},
    }
    rule = dict(
        {
            "name": "beta",
            "cluster": "beta",
            "strategy": "split",
            "conditions": [{"source": "header", "name": "X-Group", "op": "eq", "value": "a"}],
        },
        **routing,
    )
    api = {"name": "j", "urlPattern": "/json/*", "nodes": [{"cluster": "main"}]}
    harness.apply([api], clusters=clusters, routings={"beta": rule})


@pytest_twisted.ensureDeferred
async def test_split_share_through_proxy(harness):
    """
    A 30 % split rule sends 30 % of 2,000 matching requests to its cluster,
    within 4 standard deviations (sd = sqrt(2000 x 0.3 x 0.7) ~ 20.5, so
    600 +/- 82); requests that do not match never go there.
    """
    await harness.start(names=("main1", "beta1"))
    _splitSetup(harness, trafficRate=30)
    servers = []
    for i in range(2000):
        r = await harness.request("GET", f"/json/x{i}", headers={"X-Group": "a"})
        servers.append(json.loads(await r.content())["server"])
    beta = servers.count("beta1")
    assert 518 <= beta <= 682, beta
    for _ in range(50):
        r = await harness.request("GET", "/json/y", headers={"X-Group": "b"})
        assert json.loads(await r.content())["server"] == "main1"


@pytest_twisted.ensureDeferred
async def test_sticky_split_through_proxy(harness):
    """
    With hashOn, each client stays on one side across requests, and the
    share of clients sent to the split cluster follows the rate.
    """
    await harness.start(names=("main1", "beta1"))
    _splitSetup(harness, trafficRate=50, hashOn="header:X-User")
    sides = {}
    for user in range(200):
        seen = set()
        for _ in range(3):
            r = await harness.request(
                "GET", "/json/z", headers={"X-Group": "a", "X-User": f"u{user}"}
            )
            seen.add(json.loads(await r.content())["server"])
        assert len(seen) == 1, (user, seen)
        sides[user] = seen.pop()
    share = list(sides.values()).count("beta1")
    # 200 clients at 50 %: sd ~ 7.1; 4 sd.
    assert 72 <= share <= 128, share
