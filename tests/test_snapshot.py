"""
The snapshot manager: compiling store states, swapping, refusing bad
changes, and paying only for what changed.
"""

from __future__ import annotations

from typing import List

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gateway.filters import FilterRegistry
from gateway.model.resources import ReferenceError
from gateway.model.schema import ValidationError
from gateway.routing.snapshot import SnapshotManager
from gateway.store import Change, StoreState


def api(name, pattern, cluster="c", **extra):
    return dict({"name": name, "urlPattern": pattern, "nodes": [{"cluster": cluster}]}, **extra)


def state(apis, revision=1, servers=("s1", "s2"), routings=None):
    return StoreState(
        revision,
        {
            "servers": {
                s: {"name": s, "addr": f"127.0.0.1:{9000 + i}"} for i, s in enumerate(servers)
            },
            "clusters": {"c": {"name": "c", "servers": list(servers)}},
            "apis": {a["name"]: a for a in apis},
            "routings": routings or {},
        },
    )


class SnapshotManagerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.manager = SnapshotManager(FilterRegistry.fromPlugins(), self.clock)

    def test_applyAndMatch(self) -> None:
        """
        A state compiles into a snapshot that matches requests to APIs and
        carries the store revision.
        """
        snapshot = self.manager.apply(state([api("u", "/users/{id:int}")], revision=3))
        self.assertIs(self.manager.snapshot, snapshot)
        self.assertEqual(snapshot.revision, 3)
        match = snapshot.match("GET", None, "/users/7")
        self.assertEqual((match.value.name, match.params), ("u", {"id": "7"}))
        self.assertIsNone(snapshot.match("GET", None, "/users/x"))

    def test_refusedChangeKeepsRunningSnapshot(self) -> None:
        """
        update() refuses a state that does not compile (a dangling cluster,
        a route conflict, an unknown filter) and the running snapshot serves
        on; apply() raises with the field (a route conflict names the API
        whose route is new).
        """
        first = self.manager.apply(state([api("u", "/users")]))
        bad = [
            state([api("u", "/users", cluster="missing")], revision=2),
            state([api("u", "/users"), api("v", "/users")], revision=3),
            state([api("u", "/users", filters=[{"name": "no-such-filter"}])], revision=4),
        ]
        for s in bad:
            self.assertFalse(self.manager.update(s))
            self.assertIs(self.manager.snapshot, first)
        with self.assertRaises(ReferenceError) as e:
            self.manager.apply(bad[1])
        self.assertEqual(e.exception.field, "apis/v:urlPattern")
        with self.assertRaises(ValidationError) as e2:
            self.manager.apply(bad[2])
        self.assertEqual(e2.exception.field, "apis/u:filters[0].name")

    def test_validateDoesNotSwap(self) -> None:
        """
        validate() compiles a proposed catalog without swapping it in.
        """
        first = self.manager.apply(state([api("u", "/users")]))
        from gateway.model.resources import Catalog

        proposed = Catalog.fromResources(state([api("u", "/people")]).resources)
        self.manager.validate(proposed)
        self.assertIs(self.manager.snapshot, first)
        self.assertIsNotNone(first.match("GET", None, "/users"))

    def test_oldRevisionIgnored(self) -> None:
        """
        A watcher delivering an older or equal revision changes nothing.
        """
        self.manager.apply(state([api("u", "/users")], revision=5))
        self.assertFalse(self.manager.update(state([api("u", "/people")], revision=5)))
        self.assertFalse(self.manager.update(state([api("u", "/people")], revision=4)))
        self.assertIsNotNone(self.manager.snapshot.match("GET", None, "/users"))

    def test_onlyChangedAPIsRecompile(self) -> None:
        """
        With many APIs, a change recompiles only the changed API: the others
        keep their compiled objects, and the previous snapshot's router still
        answers as before (it is never changed in place).
        """
        apis = [api(f"a{i}", f"/svc{i}/{{id:int}}") for i in range(200)]
        s1 = state(apis, revision=1)
        first = self.manager.apply(s1)
        changed = s1.withChanges([Change("apis", "a5", api("a5", "/moved/{id:int}"))], 2)
        second = self.manager.apply(changed)
        for i in range(200):
            if i != 5:
                self.assertIs(second.apis[f"a{i}"], first.apis[f"a{i}"])
        self.assertIsNot(second.apis["a5"], first.apis["a5"])
        self.assertEqual(second.match("GET", None, "/moved/3").value.name, "a5")
        self.assertIsNone(second.match("GET", None, "/svc5/3"))
        self.assertEqual(first.match("GET", None, "/svc5/3").value.name, "a5")
        self.assertIsNone(first.match("GET", None, "/moved/3"))

    def test_unchangedKnownByIdentity(self) -> None:
        """
        The JSON objects a change left alone are known by identity: not
        compared again (a 10,000-API catalog would cost more to compare
        than the change), neither by the parser nor by the compiler, and
        validating a proposed catalog from the shared parser then applying
        it compares nothing either.
        """
        apis = [api(f"a{i}", f"/svc{i}/{{id:int}}") for i in range(50)]
        s1 = state(apis, revision=1)
        self.manager.apply(s1)
        compared: List[str] = []

        class Watched(dict):  # type: ignore[type-arg]
            def __eq__(self, other: object) -> bool:
                compared.append(self["name"])
                return dict.__eq__(self, other)

            __hash__ = None  # type: ignore[assignment]

        # The same objects again: nothing compared.
        s2 = s1.withChanges([Change("apis", "new", Watched(api("new", "/new")))], 2)
        catalog = self.manager.parser.parse(s2.resources)
        self.manager.validate(catalog)
        self.manager.apply(s2)
        self.assertEqual(compared, [])
        # A new object with the same JSON (a store that decodes each state
        # afresh) is compared, and keeps its parse.
        fresh = dict(s2.resources["apis"])
        fresh["a3"] = Watched(api("a3", "/svc3/{id:int}"))
        s3 = StoreState(3, dict(s2.resources, apis=fresh))
        before = self.manager.snapshot.apis["a3"]  # type: ignore[union-attr]
        self.manager.apply(s3)
        self.assertEqual(compared, ["a3"])
        self.assertIs(self.manager.snapshot.apis["a3"], before)  # type: ignore[union-attr]

    def test_liveStateSurvivesChange(self) -> None:
        """
        A server that still exists keeps its Backend (in-flight count,
        health) across a change; an unchanged cluster keeps its balancer.
        """
        first = self.manager.apply(state([api("u", "/users")]))
        backend = first.backends["s1"]
        backend.healthy = False
        backend.requestStarted()
        balancer = first.clusters["c"].balancer
        second = self.manager.apply(state([api("u", "/people")], revision=2))
        self.assertIs(second.backends["s1"], backend)
        self.assertEqual(backend.active, 1)
        self.assertFalse(backend.healthy)
        self.assertIs(second.clusters["c"].balancer, balancer)
        third = self.manager.apply(state([api("u", "/people")], revision=3, servers=("s1",)))
        self.assertIsNot(third.clusters["c"].balancer, balancer)
        self.assertEqual(set(third.backends), {"s1"})

    def test_rateLimitFilterKeptAcrossChanges(self) -> None:
        """
        An API's rate-limit filter (and its buckets) survives changes that
        do not touch its limits, and is replaced when they change.
        """
        limited = api("u", "/users", rateLimit={"rate": 1})
        first = self.manager.apply(state([limited, api("v", "/v")]))
        second = self.manager.apply(state([limited, api("v", "/v2")], revision=2))
        self.assertEqual(first.apis["u"].filters, second.apis["u"].filters)
        third = self.manager.apply(
            state([api("u", "/users", rateLimit={"rate": 2}), api("v", "/v2")], revision=3)
        )
        self.assertIsNot(third.apis["u"].filters[0], first.apis["u"].filters[0])

    def test_changedRateLimitKeepsLevel(self) -> None:
        """
        When an API's limits change, its new rate-limit filter starts from
        the old buckets' levels: the burst its clients spent is not handed
        out again, and the new rate applies from the change on.
        """

        class Context:
            clientIP = "10.0.0.1"
            attributes: dict = {}

        limited = api("u", "/users", rateLimit={"rate": 1, "burst": 3})
        first = self.manager.apply(state([limited]))
        old = first.apis["u"].filters[0]
        self.assertEqual([old.before(Context()) is None for _ in range(4)], [True] * 3 + [False])
        changed = api("u", "/users", rateLimit={"rate": 2, "burst": 3})
        second = self.manager.apply(state([changed], revision=2))
        new = second.apis["u"].filters[0]
        self.assertIsNot(new, old)
        self.assertEqual(new.before(Context()).code, 429)
        self.clock.advance(0.5)
        self.assertEqual([new.before(Context()) is None for _ in range(2)], [True, False])

    def test_listenersCalled(self) -> None:
        """
        Listeners hear of every swap; one that raises does not stop the swap.
        """
        seen = []
        self.manager.addListener(lambda snapshot: 1 / 0)
        self.manager.addListener(seen.append)
        snapshot = self.manager.apply(state([api("u", "/users")]))
        self.assertEqual(seen, [snapshot])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
