"""
Tests for the admin's writes of many resources at once (L{gateway.admin.api}
and L{gateway.admin.batch}): C{POST /api/v1/batch}, C{GET} and C{PUT
/api/v1/config}, through L{treq.testing.StubTreq} against a real in-memory
store and a real L{SnapshotManager} as the validator.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any, Dict, List

from test_admin_api import API, CLUSTER, ROUTING, SERVER, APITestCase, normalised
from tlsfixtures import CertificateAuthority
from twisted.internet.task import Clock

from gateway.admin import batch as many
from gateway.admin.api import MAX_BATCH_BODY, AdminAPI
from gateway.admin.openapi import EXAMPLES
from gateway.filters import FilterRegistry
from gateway.model.resources import KINDS
from gateway.routing.snapshot import SnapshotManager
from gateway.store import StoreError

CA = CertificateAuthority()
API_CERT = CA.issue(["api.example.com"])
OTHER_CERT = CA.issue(["other.example.com"])


def put(kind: str, body: Dict[str, Any], name: str = "") -> Dict[str, Any]:
    return {"op": "put", "kind": kind, "name": name or body["name"], "value": body}


def delete(kind: str, name: str) -> Dict[str, Any]:
    return {"op": "delete", "kind": kind, "name": name}


class CountingRegistry:
    """
    A filter registry that counts the APIs whose built-in filters it was
    asked for: one per API compiled.
    """

    def __init__(self) -> None:
        self.registry = FilterRegistry.fromPlugins()
        self.compiled: List[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.registry, name)

    def apiFilterSpecs(self, api: Any, *args: Any) -> Any:
        self.compiled.append(api.name)
        return self.registry.apiFilterSpecs(api, *args)


class BatchTestCase(APITestCase):
    """
    An admin whose writes are validated by a real snapshot manager, which
    follows the store.
    """

    def makeAPI(self, **kwargs: Any) -> AdminAPI:
        self.registry = CountingRegistry()
        self.manager = SnapshotManager(self.registry, Clock())
        self.store.load().addCallback(self.manager.apply)
        self.store.watch(self.manager.update)
        return AdminAPI(
            self.store,
            self.token,
            reactor=self.clock,
            validate=self.manager.validate,
            parser=self.manager.parser,
            **kwargs,
        )

    def batch(self, *changes: Dict[str, Any], **extra: Any) -> Any:
        return self.call("POST", "/batch", dict(extra, changes=list(changes)))

    def assertUnchanged(self, before: Any) -> None:
        self.assertEqual(self.snapshot(), before)


class BatchTests(BatchTestCase):
    def test_oneRevision(self) -> None:
        """
        A batch of every kind, in any order (an API before the cluster it
        names), is committed as one revision: the store moves on by one,
        each resource stored normalised, and the answer counts and lists
        what changed.
        """
        code, headers, body = self.batch(
            put("routings", ROUTING),
            put("apis", API),
            put("clusters", CLUSTER),
            put("servers", SERVER),
        )
        self.assertEqual(code, 200, body)
        self.assertEqual(headers.getRawHeaders(b"x-gateway-revision"), [b"1"])
        self.assertEqual(
            body,
            {
                "created": 4,
                "updated": 0,
                "deleted": 0,
                "unchanged": 0,
                "changes": [
                    {"kind": "routings", "name": "r1", "action": "created"},
                    {"kind": "apis", "name": "a1", "action": "created"},
                    {"kind": "clusters", "name": "c1", "action": "created"},
                    {"kind": "servers", "name": "s1", "action": "created"},
                ],
            },
        )
        revision, resources = self.snapshot()
        self.assertEqual(revision, 1)
        self.assertEqual(resources["apis"]["a1"], normalised("apis", API))
        self.assertEqual(self.manager.snapshot.revision, 1)

    def test_everyKind(self) -> None:
        """
        Every kind of resource the model knows is taken (C{KINDS}, whatever
        they are): the OpenAPI document's example of each, in one batch.
        """
        self.assertEqual(set(EXAMPLES), set(KINDS))
        code, _, body = self.batch(*(put(kind, EXAMPLES[kind]) for kind in KINDS))
        self.assertEqual(code, 200, body)
        _, resources = self.snapshot()
        for kind in KINDS:
            self.assertIn(EXAMPLES[kind]["name"], resources[kind], kind)

    def test_updateDeleteUnchanged(self) -> None:
        """
        A put that changes nothing is counted as unchanged and commits
        nothing; updates and deletes are said as such.
        """
        self.batch(put("servers", SERVER), put("clusters", CLUSTER), put("apis", API))
        code, headers, body = self.batch(put("servers", SERVER))
        self.assertEqual((code, body["unchanged"], body["changes"]), (200, 1, []))
        self.assertIsNone(headers.getRawHeaders(b"x-gateway-propagation"))
        self.assertEqual(self.snapshot()[0], 1)
        changed = dict(API, urlPattern="/people/{id}")
        code, _, body = self.batch(put("apis", changed), delete("apis", "a1"), put("apis", API))
        self.assertEqual(code, 400, body)
        self.assertEqual(body["field"], "changes[1].name")
        code, _, body = self.batch(
            put("servers", dict(SERVER, weight=5)),
            put("apis", dict(changed, name="a2")),
            delete("apis", "a1"),
        )
        self.assertEqual(code, 200, body)
        self.assertEqual(
            body["changes"],
            [
                {"kind": "apis", "name": "a1", "action": "deleted"},
                {"kind": "servers", "name": "s1", "action": "updated"},
                {"kind": "apis", "name": "a2", "action": "created"},
            ],
        )
        _, resources = self.snapshot()
        self.assertEqual(sorted(resources["apis"]), ["a2"])
        self.assertEqual(resources["servers"]["s1"]["weight"], 5)

    def test_everyErrorNamed(self) -> None:
        """
        Invalid resources are refused 400 with every error of every one of
        them, each field named as the body does
        (C{changes[2].value.urlPattern}); nothing is committed.
        """
        self.batch(put("servers", SERVER))
        before = self.snapshot()
        badAPI = dict(API, urlPattern="no-slash", nodes=[{"cluster": "c1", "timeout": -1}])
        code, _, body = self.batch(
            put("clusters", CLUSTER),
            put("servers", dict(SERVER, addr="nope")),
            put("apis", badAPI),
        )
        self.assertEqual(code, 400, body)
        fields = [error["field"] for error in body["errors"]]
        self.assertEqual(
            fields,
            [
                "changes[1].value.addr",
                "changes[2].value.urlPattern",
                "changes[2].value.nodes[0].timeout",
            ],
        )
        self.assertEqual((body["field"], body["error"]), (fields[0], body["errors"][0]["error"]))
        self.assertUnchanged(before)

    def test_shape(self) -> None:
        """
        A body that is not a batch is refused 400, every problem named:
        unknown fields, a missing list, a change without a valid op, kind
        or name, a put without a value, a delete with one, a revision that
        is not a count.
        """
        code, _, body = self.call("POST", "/batch", {"change": [], "revision": "x"})
        self.assertEqual(code, 400, body)
        self.assertEqual(
            [(e["field"], e["error"]) for e in body["errors"]],
            [
                ("change", "is not a field of a batch"),
                ("revision", "must be an integer >= 0"),
                ("changes", "is required: a list of changes"),
            ],
        )
        code, _, body = self.batch(
            {"op": "patch", "kind": "things", "name": "a b", "extra": 1},
            {"op": "put", "kind": "apis", "name": "a"},
            {"op": "delete", "kind": "apis", "name": "a", "value": None},
            "x",
        )
        self.assertEqual(code, 400, body)
        self.assertEqual(
            [e["field"] for e in body["errors"]],
            [
                "changes[0].extra",
                "changes[0].op",
                "changes[0].kind",
                "changes[0].name",
                "changes[1].value",
                "changes[2].value",
                "changes[3]",
            ],
        )

    def test_shapeWithValues(self) -> None:
        """
        A change of a bad shape does not hide the errors of the other
        changes' values: one 400 lists them all, the shape's first; nothing
        is committed.  The same for a whole configuration.
        """
        before = self.snapshot()
        code, _, body = self.batch(
            put("servers", dict(SERVER, addr="nope")),
            {"op": "put", "kind": "bogus", "name": "x", "value": {}},
            put("apis", dict(API, urlPattern="no-slash")),
        )
        self.assertEqual(code, 400, body)
        self.assertEqual(
            [e["field"] for e in body["errors"]],
            ["changes[1].kind", "changes[0].value.addr", "changes[2].value.urlPattern"],
        )
        code, _, body = self.call("PUT", "/config", {"servers": [dict(SERVER, addr="nope"), "x"]})
        self.assertEqual(code, 400, body)
        self.assertEqual([e["field"] for e in body["errors"]], ["servers[1]", "servers[0].addr"])
        self.assertUnchanged(before)

    def test_nameMustMatch(self) -> None:
        """
        A put's value may leave its name out (it is the change's); a name
        that is not the change's is refused as a rule the schema cannot
        state.
        """
        body = {k: v for k, v in SERVER.items() if k != "name"}
        code, _, answer = self.batch(put("servers", body, "s1"))
        self.assertEqual(code, 200, answer)
        code, _, answer = self.batch(put("servers", SERVER, "s2"))
        self.assertEqual(code, 400, answer)
        self.assertEqual(
            answer["errors"],
            [
                {
                    "field": "changes[0].value.name",
                    "error": "must match the URL ('s2')",
                    "rule": True,
                }
            ],
        )

    def test_duplicates(self) -> None:
        """
        A resource named twice in one batch is refused 400 at the later
        change's name, marked as a rule.
        """
        code, _, body = self.batch(put("servers", SERVER), put("servers", SERVER))
        self.assertEqual(code, 400, body)
        self.assertEqual(
            body["errors"],
            [
                {
                    "field": "changes[1].name",
                    "error": "servers/s1 is also in changes[0]",
                    "rule": True,
                }
            ],
        )

    def test_brokenReferences(self) -> None:
        """
        A resource of the batch naming one that does not exist is a 409 at
        its field; so is deleting a resource that another one still names
        (at the delete); every broken reference is listed, and nothing is
        committed.
        """
        self.batch(put("servers", SERVER), put("clusters", CLUSTER), put("apis", API))
        before = self.snapshot()
        orphan = dict(API, name="a2", urlPattern="/a2", nodes=[{"cluster": "missing"}])
        code, headers, body = self.batch(put("apis", orphan), delete("clusters", "c1"))
        self.assertEqual(code, 409, body)
        self.assertEqual(
            body["errors"],
            [
                {
                    "field": "changes[0].value.nodes[0].cluster",
                    "error": "cluster 'missing' does not exist",
                },
                {
                    "field": "changes[1]",
                    "error": "cluster 'c1' is still used by apis/a1 (nodes[0].cluster)",
                },
            ],
        )
        self.assertEqual(
            (body["field"], body["error"]), (body["errors"][0]["field"], body["errors"][0]["error"])
        )
        self.assertEqual(headers.getRawHeaders(b"x-gateway-revision"), [b"1"])
        self.assertUnchanged(before)

    def test_deleteMissing(self) -> None:
        """
        Deleting a resource that does not exist is a 404 at the change's
        name; nothing is committed.
        """
        before = self.snapshot()
        code, _, body = self.batch(put("servers", SERVER), delete("apis", "nope"))
        self.assertEqual((code, body["field"]), (404, "changes[1].name"))
        self.assertEqual(body["error"], "api 'nope' does not exist")
        self.assertUnchanged(before)

    def test_compileErrors(self) -> None:
        """
        What the proxies cannot compile is refused as a rule, at the field
        as the body names it: a rewrite naming a parameter the pattern
        lacks (400); two APIs of the batch with the same route (409, at the
        later one's urlPattern).
        """
        self.batch(put("servers", SERVER), put("clusters", CLUSTER))
        before = self.snapshot()
        rewrite = dict(API, nodes=[{"cluster": "c1", "urlRewrite": "/x/{nope}"}])
        code, _, body = self.batch(put("apis", rewrite))
        self.assertEqual(code, 400, body)
        self.assertEqual(body["errors"][0]["field"], "changes[0].value.nodes[0].urlRewrite")
        self.assertTrue(body["errors"][0]["rule"])
        twin = dict(API, name="a2", urlPattern="/users/{uid}")
        code, _, body = self.batch(put("apis", API), put("apis", twin))
        self.assertEqual(code, 409, body)
        self.assertEqual(body["field"], "changes[1].value.urlPattern")
        self.assertIn("have the same URL pattern", body["error"])
        self.assertUnchanged(before)

    def test_everyCompileErrorAtOnce(self) -> None:
        """
        A batch with two APIs that do not compile and two that claim one
        route is refused with all three errors, each at its own change's
        field (the conflict found among the APIs that compiled); nothing
        is committed.
        """
        self.batch(put("servers", SERVER), put("clusters", CLUSTER))
        before = self.snapshot()
        code, _, body = self.batch(
            put("apis", dict(API, name="a1", nodes=[{"cluster": "c1", "urlRewrite": "/{no}"}])),
            put("apis", dict(API, name="a2", urlPattern="/two/{id}")),
            put("apis", dict(API, name="a3", urlPattern="/two/{x}")),
            put(
                "apis",
                dict(
                    API,
                    name="a4",
                    urlPattern="/four",
                    nodes=[{"cluster": "c1", "urlRewrite": "/{y}"}],
                ),
            ),
        )
        self.assertEqual(code, 400, body)
        self.assertEqual(
            [error["field"] for error in body["errors"]],
            [
                "changes[0].value.nodes[0].urlRewrite",
                "changes[3].value.nodes[0].urlRewrite",
                "changes[2].value.urlPattern",
            ],
        )
        self.assertIn("have the same URL pattern", body["errors"][2]["error"])
        self.assertUnchanged(before)

    def test_routeConflictOfOnePut(self) -> None:
        """
        A single PUT whose route another API has is still a 409 at its own
        C{urlPattern} (the snapshot names the API whose route is new).
        """
        self.batch(put("servers", SERVER), put("clusters", CLUSTER), put("apis", API))
        code, _, body = self.call("PUT", "/apis/a2", dict(API, name="a2", urlPattern="/users/{x}"))
        self.assertEqual((code, body["field"]), (409, "urlPattern"))

    def test_credentialConflicts(self) -> None:
        """
        Two consumers of a batch holding the same API key are a 409 at the
        later one's credential.
        """
        first = {
            "name": "c-a",
            "credentials": [{"type": "key", "id": "k", "key": "the-same-key-0123456789"}],
        }
        second = dict(first, name="c-b")
        code, _, body = self.batch(put("consumers", first), put("consumers", second))
        self.assertEqual(code, 409, body)
        self.assertTrue(body["field"].startswith("changes[1].value.credentials[0]"), body)

    def test_conflictsWithCompileErrors(self) -> None:
        """
        A credential two consumers hold does not hide an API of the same
        batch that cannot compile: one 400 lists both, each at its change;
        nothing is committed.
        """
        self.batch(put("servers", SERVER), put("clusters", CLUSTER))
        before = self.snapshot()
        first = {
            "name": "c-a",
            "credentials": [{"type": "key", "id": "k", "key": "the-same-key-0123456789"}],
        }
        code, _, body = self.batch(
            put("consumers", first),
            put("consumers", dict(first, name="c-b")),
            put("apis", dict(API, nodes=[{"cluster": "c1", "urlRewrite": "/{no}"}])),
        )
        self.assertEqual(code, 400, body)
        fields = [error["field"] for error in body["errors"]]
        self.assertEqual(len(fields), 2, body)
        self.assertTrue(fields[0].startswith("changes[1].value.credentials[0]"), body)
        self.assertEqual(fields[1], "changes[2].value.nodes[0].urlRewrite")
        self.assertUnchanged(before)

    def test_atomicOnStoreFailure(self) -> None:
        """
        A batch the store cannot commit is answered 503 and changes
        nothing: the store's commit is all or none.
        """
        before = self.snapshot()

        def broken(changes: Any, baseRevision: int) -> Any:
            from twisted.internet.defer import fail

            return fail(StoreError("disk full"))

        self.store.commit = broken  # type: ignore[method-assign]
        code, _, body = self.batch(put("servers", SERVER), put("clusters", CLUSTER))
        self.assertEqual(code, 503, body)
        self.assertUnchanged(before)

    def test_revision(self) -> None:
        """
        With C{revision}, the batch is committed only if nothing was
        committed since that revision: else 409 at C{revision}, and nothing
        changes.
        """
        self.batch(put("servers", SERVER))
        code, _, body = self.batch(put("clusters", CLUSTER), revision=1)
        self.assertEqual(code, 200, body)
        before = self.snapshot()
        code, _, body = self.batch(put("apis", API), revision=1)
        self.assertEqual((code, body["field"]), (409, "revision"), body)
        self.assertTrue(
            body["error"].startswith("the configuration changed since revision 1: read it again"),
            body,
        )
        self.assertUnchanged(before)

    def test_staleRevisionBeforeItsErrors(self) -> None:
        """
        A batch made against an older revision is a 409 at C{revision} even
        when, against the state now, it would be refused otherwise (a
        delete of what was deleted since is not a 404): its errors may be
        stale.  At the current revision the same batch gets its 404.
        """
        self.batch(put("servers", SERVER))
        self.batch(delete("servers", "s1"))
        code, _, body = self.batch(delete("servers", "s1"), revision=1)
        self.assertEqual((code, body["field"]), (409, "revision"), body)
        code, _, body = self.batch(delete("servers", "s1"), revision=2)
        self.assertEqual((code, body["field"]), (404, "changes[0].name"), body)
        code, _, body = self.batch(put("servers", SERVER), revision=99)
        self.assertEqual((code, body["field"]), (409, "revision"), body)
        self.assertEqual(body["error"], "revision 99 is newer than the store's (2): read it again")

    def test_costFollowsTheChange(self) -> None:
        """
        Checking a batch compiles the APIs it changes, not the catalog:
        with 300 APIs, a batch of 3 compiles 3 (and the proxy that then
        serves it compiles none again).
        """
        apis = [
            dict(API, name=f"a{i}", urlPattern=f"/u{i}/{{id}}", nodes=[{"cluster": "c1"}])
            for i in range(300)
        ]
        code, _, body = self.batch(
            put("servers", SERVER), put("clusters", CLUSTER), *(put("apis", a) for a in apis)
        )
        self.assertEqual(code, 200, body)
        self.assertEqual(len(self.registry.compiled), 300)
        del self.registry.compiled[:]
        changed = [dict(a, maxQPS=5) for a in apis[:3]]
        code, _, body = self.batch(*(put("apis", a) for a in changed))
        self.assertEqual((code, body["updated"]), (200, 3), body)
        self.assertEqual(sorted(self.registry.compiled), ["a0", "a1", "a2"])

    def test_bodyLimit(self) -> None:
        """
        The body of a batch may be larger than one resource's (the site
        asks L{AdminAPI.bodyLimitFor}), up to C{maxBatchBodySize}; beyond
        it, 413.
        """
        self.assertEqual(self.api.bodyLimitFor(b"POST", None, b"/api/v1/batch"), MAX_BATCH_BODY)
        self.assertEqual(self.api.bodyLimitFor(b"PUT", None, b"/api/v1/config"), MAX_BATCH_BODY)
        self.assertIsNone(self.api.bodyLimitFor(b"PUT", None, b"/api/v1/apis/a"))
        servers = [put("servers", dict(SERVER, name=f"s{i}")) for i in range(20_000)]
        code, _, body = self.batch(*servers)
        self.assertEqual((code, body["created"]), (200, 20_000))
        self.api = self.makeAPI(maxBatchBodySize=1000)
        self.stub = type(self.stub)(self.api.resource())
        code, _, body = self.batch(*servers[:50])
        self.assertEqual(code, 413, body)


class ConfigTests(BatchTestCase):
    def setUp(self) -> None:
        super().setUp()
        code, _, body = self.batch(
            put("servers", SERVER),
            put("clusters", CLUSTER),
            put("apis", API),
            put("routings", ROUTING),
            put("consumers", EXAMPLES["consumers"]),
        )
        self.assertEqual(code, 200, body)

    def test_get(self) -> None:
        """
        C{GET /api/v1/config} gives every resource, a list per kind sorted
        by name, at the revision it read; consumers without their secrets.
        """
        code, headers, body = self.call("GET", "/config")
        self.assertEqual(code, 200)
        self.assertEqual(headers.getRawHeaders(b"x-gateway-revision"), [b"1"])
        self.assertEqual(set(body), set(KINDS))
        self.assertEqual(body["apis"], [normalised("apis", API)])
        _, _, consumer = self.call("GET", "/consumers/" + EXAMPLES["consumers"]["name"])
        self.assertEqual(body["consumers"], [consumer])

    def test_roundTrip(self) -> None:
        """
        Putting back what C{GET /api/v1/config} gave changes nothing (a
        consumer's credentials without secrets keep the stored ones).
        """
        before = self.snapshot()
        _, _, config = self.call("GET", "/config")
        code, headers, body = self.call("PUT", "/config", config)
        self.assertEqual(code, 200, body)
        self.assertEqual((body["unchanged"], body["changes"]), (5, []))
        self.assertUnchanged(before)

    def test_replaceEverything(self) -> None:
        """
        What the configuration leaves out is deleted; the rest is created
        or updated, in one revision.
        """
        server2 = dict(SERVER, name="s2")
        cluster = dict(CLUSTER, servers=["s2"])
        code, _, body = self.call(
            "PUT", "/config", {"servers": [server2], "clusters": [cluster], "apis": [API]}
        )
        self.assertEqual(code, 200, body)
        self.assertEqual(
            (body["created"], body["updated"], body["deleted"], body["unchanged"]), (1, 1, 3, 1)
        )
        revision, resources = self.snapshot()
        self.assertEqual(revision, 2)
        self.assertEqual(
            {kind: sorted(items) for kind, items in resources.items()},
            {
                "certificates": [],
                "servers": ["s2"],
                "clusters": ["c1"],
                "apis": ["a1"],
                "consumers": [],
                "routings": [],
            },
        )

    def test_errorsNamedByPosition(self) -> None:
        """
        Errors name fields by the position of their resource in its list
        (C{apis[1].urlPattern}); a broken reference is a 409 at its field;
        nothing changes.
        """
        before = self.snapshot()
        apis = [API, dict(API, name="a2", urlPattern="no-slash")]
        code, _, body = self.call("PUT", "/config", {"apis": apis, "clusters": [CLUSTER]})
        self.assertEqual(code, 400, body)
        self.assertEqual(body["field"], "apis[1].urlPattern")
        code, _, body = self.call("PUT", "/config", {"apis": [API], "clusters": [CLUSTER]})
        self.assertEqual((code, body["field"]), (409, "clusters[0].servers[0]"), body)
        code, _, body = self.call("PUT", "/config", {"apis": [API, copy.deepcopy(API)]})
        self.assertEqual((code, body["field"]), (400, "apis[1].name"), body)
        code, _, body = self.call("PUT", "/config", {"gateways": [], "apis": {}})
        self.assertEqual(code, 400, body)
        self.assertEqual([e["field"] for e in body["errors"]], ["gateways", "apis"])
        self.assertUnchanged(before)


class CertificateTests(BatchTestCase):
    """
    Certificates in writes of many resources: their keys are write-only
    there as in single writes (L{gateway.admin.batch.keepStored}).
    """

    def setUp(self) -> None:
        super().setUp()
        code, _, body = self.batch(
            put("certificates", API_CERT.resource("api", ["api.example.com"])),
            put("servers", SERVER),
        )
        self.assertEqual(code, 200, body)

    def storedKey(self, name: str = "api") -> Any:
        return self.state().get("certificates", name)["key"]

    def test_getHidesKeys(self) -> None:
        """
        C{GET /api/v1/config} never shows a certificate's key: each
        certificate is as its own C{GET} shows it (its subject, expiry and
        fingerprint, no key).
        """
        code, _, body = self.call("GET", "/config")
        self.assertEqual(code, 200, body)
        _, _, single = self.call("GET", "/certificates/api")
        self.assertEqual(body["certificates"], [single])
        self.assertNotIn("key", body["certificates"][0])
        self.assertIn("fingerprint", body["certificates"][0])
        text = json.dumps(body)
        self.assertNotIn(API_CERT.keyBody()[:40], text)
        self.assertNotIn("PRIVATE KEY", text)

    def test_configKeepsKey(self) -> None:
        """
        A configuration put without a certificate's key keeps the stored
        one: putting back what C{GET} gave changes nothing, and a new SNI
        list sent without the key updates the certificate, key kept.
        """
        before = self.snapshot()
        _, _, config = self.call("GET", "/config")
        code, _, body = self.call("PUT", "/config", config)
        self.assertEqual(code, 200, body)
        self.assertEqual((body["unchanged"], body["changes"]), (2, []))
        self.assertUnchanged(before)
        certificate = {"name": "api", "cert": API_CERT.chain, "snis": ["new.example.com"]}
        code, _, body = self.call(
            "PUT", "/config", {"certificates": [certificate], "servers": [SERVER]}
        )
        self.assertEqual(code, 200, body)
        self.assertEqual(
            body["changes"], [{"kind": "certificates", "name": "api", "action": "updated"}]
        )
        stored = self.state().get("certificates", "api")
        self.assertEqual((stored["key"], stored["snis"]), (API_CERT.keyPEM, ["new.example.com"]))

    def test_batchKeepsKey(self) -> None:
        """
        A batch's put without a certificate's key keeps the stored one; a
        certificate of another key sent without its key is refused on its
        C{key} (the stored one does not fit), and a new certificate without
        a key on its C{key}, as a rule; nothing changes then.
        """
        code, _, body = self.batch(
            put("certificates", {"cert": API_CERT.chain, "snis": ["x.example.com"]}, "api")
        )
        self.assertEqual(code, 200, body)
        self.assertEqual(body["updated"], 1)
        self.assertEqual(self.storedKey(), API_CERT.keyPEM)
        before = self.snapshot()
        code, _, body = self.batch(
            put("servers", dict(SERVER, name="s2")),
            put("certificates", {"cert": OTHER_CERT.chain}, "api"),
        )
        self.assertEqual(code, 400, body)
        self.assertEqual(body["field"], "changes[1].value.key")
        self.assertIn("the stored one", body["error"])
        code, _, body = self.batch(put("certificates", {"cert": API_CERT.chain}, "new"))
        self.assertEqual(code, 400, body)
        self.assertEqual(
            body["errors"],
            [{"field": "changes[0].value.key", "error": body["error"], "rule": True}],
        )
        self.assertUnchanged(before)

    def test_sniConflict(self) -> None:
        """
        Two certificates claiming one SNI are a 409 naming the SNI of the
        batch's certificate.
        """
        before = self.snapshot()
        code, _, body = self.batch(
            put(
                "certificates",
                OTHER_CERT.resource("other", ["other.example.com", "api.example.com"]),
            )
        )
        self.assertEqual(code, 409, body)
        self.assertEqual(body["field"], "changes[0].value.snis[1]")
        self.assertIn("api.example.com", body["error"])
        self.assertUnchanged(before)


class ReadTests(BatchTestCase):
    def test_readBatch(self) -> None:
        """
        L{many.readBatch} reads a batch's items in order, each with how
        errors name it, and its revision.
        """
        read = many.readBatch(
            {"changes": [put("apis", API), delete("servers", "s")], "revision": 3}
        )
        self.assertEqual(read.revision, 3)
        self.assertEqual(
            [(i.kind, i.name, i.body, i.where, i.valueAt) for i in read.items],
            [
                ("apis", "a1", API, "changes[0]", "changes[0].value"),
                ("servers", "s", None, "changes[1]", "changes[1].value"),
            ],
        )
        self.assertFalse(read.replaceAll)

    def test_readConfig(self) -> None:
        """
        L{many.readConfig} reads every kind's list, in the order of the
        kinds, each resource named by its position.
        """
        read = many.readConfig({"apis": [API], "servers": [SERVER]})
        self.assertTrue(read.replaceAll)
        self.assertEqual(
            [(i.kind, i.name, i.where) for i in read.items],
            [("servers", None, "servers[0]"), ("apis", None, "apis[0]")],
        )


class ReadmeTests(BatchTestCase):
    def test_example(self) -> None:
        """
        The README's batch example is a batch the admin takes: with its
        server and cluster in place and the routing it deletes, it
        creates one server, updates the cluster and deletes the routing.
        """
        readme = (Path(__file__).resolve().parent.parent / "README.md").read_text("utf-8")
        start = readme.index("### Many resources at once")
        match = re.compile(r"/api/v1/batch -H \"\$T\" -d '(.*?)'\n", re.S).search(readme, start)
        assert match is not None
        example = json.loads(match.group(1))
        users = {"name": "users-1", "addr": "10.0.0.11:8080"}
        cluster = {"name": "users", "servers": ["users-1"]}
        routing = {"name": "old-canary", "cluster": "users"}
        code, _, body = self.batch(
            put("servers", users), put("clusters", cluster), put("routings", routing)
        )
        self.assertEqual(code, 200, body)
        example["revision"] = self.snapshot()[0]
        code, _, body = self.call("POST", "/batch", example)
        self.assertEqual(code, 200, body)
        self.assertEqual((body["created"], body["updated"], body["deleted"]), (1, 1, 1))
