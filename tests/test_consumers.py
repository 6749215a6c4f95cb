"""
Tests for the C{consumers} resource: the model (secrets sealed at parse),
the admin (answers without secrets, kept credentials, 409s), what the
store file holds, the references of an API's C{auth} and C{acl}, and the
config file's seed.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Dict, List, Optional, Tuple

from jwtkeys import HS_SECRET, publicPEM, rsaKey
from test_auth import makeAuthFilter, makeContext
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gateway.admin import AdminAPI
from gateway.filters import FilterRegistry
from gateway.model.config import ConfigError, parseConfig
from gateway.model.consumers import keepCredentials, publicConsumer
from gateway.model.resources import Catalog, parseResource
from gateway.model.schema import ValidationError, toJSON
from gateway.model.secrets import checkPassword, keyDigest, keyHash
from gateway.routing.snapshot import SnapshotManager
from gateway.store.file import FileStore

TOKEN = "admin-token"
BASE = "http://admin.example/api/v1"

KEY = "k-0123456789abcdef-alice"
PASSWORD = "alice's password"

ALICE: Dict[str, Any] = {
    "name": "alice",
    "customId": "c-1",
    "groups": ["gold"],
    "credentials": [
        {"type": "key", "key": KEY},
        {"type": "basic", "username": "alice", "password": PASSWORD},
        {"type": "jwt", "issuer": "alice-iss", "algorithm": "HS256", "secret": HS_SECRET},
        {"type": "jwt", "id": "rsa", "algorithm": "RS256", "publicKey": publicPEM(rsaKey())},
    ],
}

SECRETS = (KEY, PASSWORD, HS_SECRET, publicPEM(rsaKey()).splitlines()[1])


def holdsNoSecret(testCase: SynchronousTestCase, text: str, hashes: bool = True) -> None:
    """
    Fail unless C{text} holds none of the secrets of L{ALICE} (nor, with
    C{hashes}, any key or password hash).
    """
    for secret in SECRETS:
        testCase.assertNotIn(secret, text)
        testCase.assertNotIn(json.dumps(secret)[1:-1], text)
    if hashes:
        testCase.assertNotIn(keyHash(KEY), text)
        testCase.assertNotIn("$2b$", text)


class ModelTests(SynchronousTestCase):
    """
    Parsing a consumer keeps what verifies its credentials, never a key or
    a password.
    """

    def test_sealed(self) -> None:
        """
        A key becomes its SHA-256, a password its bcrypt hash; each
        credential gets an id and a fingerprint.
        """
        consumer = parseResource("consumers", ALICE)
        key, basic, hs, rs = consumer.credentials
        self.assertEqual((key.key, key.keyHash), (None, keyHash(KEY)))
        self.assertIsNone(basic.password)
        self.assertTrue(checkPassword(PASSWORD.encode(), basic.passwordHash))
        self.assertEqual(hs.secret, HS_SECRET)
        self.assertTrue(all(len(c.fingerprint) == 12 for c in consumer.credentials))
        self.assertTrue(key.id.startswith("key-") and basic.id.startswith("basic-"))
        self.assertTrue(hs.id.startswith("jwt-"))
        self.assertEqual(rs.id, "rsa")
        # The stored form keeps the JWT secret (tokens are verified with
        # it), never the key or the password.
        stored = json.dumps(toJSON(consumer))
        self.assertNotIn(KEY, stored)
        self.assertNotIn(json.dumps(PASSWORD)[1:-1], stored)

    def test_stableIds(self) -> None:
        """
        The same key, user name or issuer always gets the same id (a file
        applied twice names its credentials alike).
        """
        a = parseResource("consumers", ALICE)
        b = parseResource("consumers", ALICE)
        self.assertEqual([c.id for c in a.credentials], [c.id for c in b.credentials])

    def test_public(self) -> None:
        """
        The public form of a stored consumer holds type, id, fingerprint,
        user name, issuer and algorithm, no secret and no hash.
        """
        stored = json.loads(json.dumps(toJSON(parseResource("consumers", ALICE))))
        public = publicConsumer(stored)
        holdsNoSecret(self, json.dumps(public))
        self.assertEqual(
            [sorted(c) for c in public["credentials"]],
            [
                ["fingerprint", "id", "type"],
                ["fingerprint", "id", "type", "username"],
                ["algorithm", "fingerprint", "id", "issuer", "type"],
                ["algorithm", "fingerprint", "id", "type"],
            ],
        )

    def test_rules(self) -> None:
        """
        Each type takes its own fields; errors name the field and are
        rules (semantic).
        """
        cases = [
            ({"type": "key", "key": KEY, "username": "x"}, "credentials[0].username"),
            ({"type": "key"}, "credentials[0].key"),
            ({"type": "basic", "password": "x"}, "credentials[0].username"),
            ({"type": "jwt", "algorithm": "HS256", "publicKey": "x"}, "credentials[0].publicKey"),
            ({"type": "jwt", "algorithm": "RS256", "secret": HS_SECRET}, "credentials[0].secret"),
            ({"type": "jwt", "secret": HS_SECRET}, "credentials[0].algorithm"),
            (
                {"type": "jwt", "algorithm": "ES256", "publicKey": publicPEM(rsaKey())},
                "credentials[0].publicKey",
            ),
        ]
        for credential, field in cases:
            body = {"name": "x", "credentials": [credential]}
            error = self.assertRaises(ValidationError, parseResource, "consumers", body)
            self.assertEqual(error.field, field, credential)
            self.assertTrue(error.semantic, credential)

    def test_shortSecrets(self) -> None:
        """
        An API key under 16 characters and an HS256 secret under 32 are
        refused by the schema.
        """
        for credential, field in [
            ({"type": "key", "key": "short"}, "credentials[0].key"),
            ({"type": "jwt", "algorithm": "HS256", "secret": "short"}, "credentials[0].secret"),
        ]:
            error = self.assertRaises(
                ValidationError,
                parseResource,
                "consumers",
                {"name": "x", "credentials": [credential]},
            )
            self.assertEqual((error.field, error.semantic), (field, False))

    def test_keep(self) -> None:
        """
        A credential without its secret keeps the stored one of its id;
        one with no stored credential to keep is an error naming it.
        """
        stored = parseResource("consumers", ALICE)
        ids = [c.id for c in stored.credentials]
        given = parseResource(
            "consumers",
            {
                "name": "alice",
                "credentials": [
                    {"type": "key", "id": ids[0]},
                    {"type": "basic", "username": "alice"},
                    {"type": "jwt", "id": ids[2], "issuer": "new-iss"},
                ],
            },
        )
        kept = keepCredentials(given, stored)
        self.assertEqual(kept.credentials[0], stored.credentials[0])
        self.assertEqual(kept.credentials[1], stored.credentials[1])
        self.assertEqual(kept.credentials[2].secret, HS_SECRET)
        self.assertEqual(kept.credentials[2].issuer, "new-iss")
        error = self.assertRaises(ValidationError, keepCredentials, given, None)
        self.assertEqual(
            [e.field for e in error.errors],
            ["credentials[0]", "credentials[1]", "credentials[2]"],
        )
        self.assertIn("give its key", error.errors[0].message)

    def test_conflicts(self) -> None:
        """
        The catalog refuses a key or a user name used by two consumers.
        """
        alice = parseResource("consumers", ALICE)
        mallory = parseResource(
            "consumers", {"name": "mallory", "credentials": [{"type": "key", "key": KEY}]}
        )
        catalog = Catalog(consumers={"alice": alice, "mallory": mallory})
        error = self.assertRaises(ValidationError, catalog.check)
        self.assertEqual(error.field, "consumers/mallory:credentials[0]")
        self.assertIn("consumer 'alice'", error.message)

    def test_apiReferences(self) -> None:
        """
        An API's anonymous names a consumer (a reference); an acl, or a
        rate limit by consumer, without auth is refused.
        """
        api = parseResource(
            "apis",
            {
                "name": "a",
                "urlPattern": "/a",
                "nodes": [{"cluster": "c"}],
                "auth": {"methods": ["key"], "anonymous": "ghost"},
            },
        )
        catalog = Catalog(apis={"a": api})
        self.assertIn(
            ("apis", "a", "auth.anonymous", "consumers", "ghost"), catalog.brokenReferences()
        )
        for extra, field in [
            ({"acl": {"allow": ["gold"]}}, "acl"),
            ({"rateLimit": {"rate": 1, "key": "consumer"}}, "rateLimit.key"),
        ]:
            body = dict({"name": "a", "urlPattern": "/a", "nodes": [{"cluster": "c"}]}, **extra)
            error = self.assertRaises(ValidationError, parseResource, "apis", body)
            self.assertEqual((error.field, error.semantic), (field, True))

    def test_seed(self) -> None:
        """
        A config file's consumers need their secrets: one without is an
        error naming it.
        """
        config = parseConfig(
            {"admin": {"listen": "tcp:0:interface=127.0.0.1"}, "consumers": [ALICE]}
        )
        self.assertEqual(config.seed["consumers"][0].name, "alice")
        error = self.assertRaises(
            ConfigError,
            parseConfig,
            {
                "admin": {"listen": "tcp:0:interface=127.0.0.1"},
                "consumers": [{"name": "x", "credentials": [{"type": "key", "id": "k"}]}],
            },
        )
        self.assertIn("consumers[0].credentials[0]", str(error))


def syncThreads(f: Any, *args: Any) -> Deferred:
    threads.append(f)
    return maybeDeferred(f, *args)


threads: List[Any] = []


class AdminTests(SynchronousTestCase):
    """
    The admin's C{/api/v1/consumers}, over a real file store.
    """

    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp()
        self.path = os.path.join(self.directory, "store.json")
        self.store = FileStore(self.path)
        self.api = AdminAPI(self.store, TOKEN, reactor=Clock(), runInThread=syncThreads)
        self.stub = StubTreq(self.api.resource())

    def call(self, method: str, path: str, body: Any = None) -> Tuple[int, Any]:
        headers = {"Authorization": "Bearer " + TOKEN}
        data: Optional[bytes] = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        response = self.successResultOf(
            self.stub.request(method, BASE + path, data=data, headers=headers)
        )
        content = self.successResultOf(response.content())
        return response.code, json.loads(content) if content else None

    def storeBytes(self) -> bytes:
        with open(self.path, "rb") as f:
            return f.read()

    def test_createNoSecret(self) -> None:
        """
        A consumer is created (201); neither the answer, nor a GET, nor the
        list, nor the store file's bytes hold its key or password; the
        file holds the key's SHA-256 and a bcrypt hash; the password was
        hashed through runInThread.
        """
        del threads[:]
        code, created = self.call("POST", "/consumers", ALICE)
        self.assertEqual(code, 201, created)
        self.assertEqual(threads, [parseResource])
        holdsNoSecret(self, json.dumps(created))
        code, fetched = self.call("GET", "/consumers/alice")
        self.assertEqual((code, fetched), (200, created))
        code, listed = self.call("GET", "/consumers")
        self.assertEqual(listed, [created])
        raw = self.storeBytes()
        for secret in (KEY, PASSWORD):
            self.assertNotIn(secret.encode(), raw)
            self.assertNotIn(json.dumps(secret)[1:-1].encode(), raw)
        self.assertIn(keyHash(KEY).encode(), raw)
        self.assertIn(b"$2b$10$", raw)

    def test_keptOnPut(self) -> None:
        """
        PUT of the answer as it is (no secrets) changes nothing: every
        credential is kept; a PUT that drops one revokes it.
        """
        code, created = self.call("POST", "/consumers", ALICE)
        before = self.storeBytes()
        code, replaced = self.call("PUT", "/consumers/alice", created)
        self.assertEqual((code, replaced), (200, created))
        self.assertEqual(self.storeBytes(), before)
        revoked = dict(created, credentials=created["credentials"][1:])
        code, answer = self.call("PUT", "/consumers/alice", revoked)
        self.assertEqual(code, 200)
        self.assertEqual(len(answer["credentials"]), 3)
        self.assertNotIn(keyHash(KEY).encode(), self.storeBytes())

    def test_keptUnknown(self) -> None:
        """
        A credential without its secret that the consumer does not have is
        a 400 naming it, marked as a rule.
        """
        body = {"name": "bob", "credentials": [{"type": "key", "id": "key-1"}]}
        code, error = self.call("POST", "/consumers", body)
        self.assertEqual(code, 400)
        self.assertEqual(error["field"], "credentials[0]")
        self.assertEqual(error["errors"][0]["rule"], True)

    def test_duplicateKey(self) -> None:
        """
        A key or a user name another consumer has is a 409 naming the
        credential.
        """
        self.call("POST", "/consumers", ALICE)
        for credential in (
            {"type": "key", "key": KEY},
            {"type": "basic", "username": "alice", "password": "x"},
        ):
            code, error = self.call("PUT", "/consumers/bob", {"credentials": [credential]})
            self.assertEqual(code, 409, error)
            self.assertEqual(error["field"], "credentials[0]")
            self.assertIn("'alice'", error["error"])

    def test_anonymousReference(self) -> None:
        """
        An API whose auth.anonymous names a missing consumer is a 409; a
        consumer an API acts as cannot be deleted (409, naming the API).
        """
        self.call("POST", "/servers", {"name": "s", "addr": "127.0.0.1:1"})
        self.call("POST", "/clusters", {"name": "c", "servers": ["s"]})
        api = {
            "name": "a",
            "urlPattern": "/a",
            "nodes": [{"cluster": "c"}],
            "auth": {"methods": ["key"], "anonymous": "guest"},
        }
        code, error = self.call("POST", "/apis", api)
        self.assertEqual((code, error["field"]), (409, "auth.anonymous"))
        self.call("POST", "/consumers", {"name": "guest"})
        code, _ = self.call("POST", "/apis", api)
        self.assertEqual(code, 201)
        code, error = self.call("DELETE", "/consumers/guest")
        self.assertEqual(code, 409)
        self.assertEqual(error["users"], [{"kind": "apis", "name": "a", "field": "auth.anonymous"}])

    def test_deleted(self) -> None:
        """
        A consumer deleted through the admin (204) is gone: GET answers
        404, the list is empty and the store file no longer holds its key
        hash.  The snapshot the proxy compiles from the store afterwards
        has none of its key, user name or JWT issuer, and its API key,
        which authenticated through the C{auth} filter before the delete
        (and was remembered as presented), is refused with a 401 by that
        same filter after it.
        """
        manager = SnapshotManager(FilterRegistry.fromPlugins(), Clock())
        self.store.load().addCallback(manager.apply)
        self.store.watch(manager.update)
        code, created = self.call("POST", "/consumers", ALICE)
        self.assertEqual(code, 201, created)
        auth = makeAuthFilter(Clock(), methods=["key"])
        before = manager.snapshot.consumers
        self.assertEqual(before.byKeyDigest(keyDigest(KEY.encode())).name, "alice")
        context = makeContext(before, {b"apikey": [KEY.encode()]})
        self.assertIsNone(auth.before(context))
        self.assertEqual(context.consumer.name, "alice")
        self.assertIn(KEY.encode(), before.presented)

        code, body = self.call("DELETE", "/consumers/alice")
        self.assertEqual((code, body), (204, None))
        code, error = self.call("GET", "/consumers/alice")
        self.assertEqual(code, 404, error)
        self.assertEqual(self.call("GET", "/consumers"), (200, []))
        self.assertNotIn(keyHash(KEY).encode(), self.storeBytes())

        after = manager.snapshot.consumers
        self.assertIsNot(after, before)
        self.assertIsNone(after.byName("alice"))
        self.assertIsNone(after.byKeyDigest(keyDigest(KEY.encode())))
        self.assertNotIn(KEY.encode(), after.presented)
        self.assertIsNone(after.byUsername("alice"))
        self.assertEqual(list(after.jwtKeys("alice-iss", None)), [])
        answer = auth.before(makeContext(after, {b"apikey": [KEY.encode()]}))
        self.assertEqual((answer.code, answer.body), (401, {"error": "invalid credentials"}))


class CLITests(SynchronousTestCase):
    """
    The CLI: exports hold no secret and say how to give them again; a
    plan compares and shows consumers without secrets; a file without
    secrets keeps the admin's credentials and is refused where there are
    none to keep.
    """

    def setUp(self) -> None:
        stored = json.loads(json.dumps(toJSON(parseResource("consumers", ALICE))))
        self.public = publicConsumer(stored)
        self.current = {kind: {} for kind in ("servers", "clusters", "apis", "routings")}
        self.current["consumers"] = {"alice": self.public}

    def exported(self) -> str:
        from gateway.cli.export import exportDocument

        return exportDocument(self.current, "http://admin")

    def test_exportNoSecret(self) -> None:
        """
        The export holds each credential's type, id and fingerprint, no
        secret or hash, and a note on giving secrets again.
        """
        text = self.exported()
        holdsNoSecret(self, text)
        self.assertIn("without their secrets", text)
        for credential in self.public["credentials"]:
            self.assertIn(credential["fingerprint"], text)

    def test_roundTrip(self) -> None:
        """
        The export applied to the admin it came from changes nothing.
        """
        import yaml

        from gateway.cli.plan import computePlan
        from gateway.cli.resources import parseResourceFile

        resourceFile = parseResourceFile(yaml.safe_load(self.exported()), "export")
        plan = computePlan(self.current, resourceFile.resources)
        self.assertEqual((plan.steps, plan.unchanged), ((), 1))

    def test_planShowsNoSecret(self) -> None:
        """
        A file that gives a key anew (the same key) is no change; a new key
        is an update whose diff shows fingerprints, not the key, while what
        is sent holds its digest.
        """
        from gateway.cli.plan import computePlan, renderPlan
        from gateway.cli.resources import parseResourceFile

        same = dict(ALICE, credentials=[ALICE["credentials"][0]] + self.public["credentials"][1:])
        plan = computePlan(self.current, parseResourceFile({"consumers": [same]}, "f").resources)
        self.assertEqual(plan.steps, ())
        newKey = "a-brand-new-key-0123456789"
        changed = dict(same, credentials=[{"type": "key", "key": newKey}] + same["credentials"][1:])
        plan = computePlan(self.current, parseResourceFile({"consumers": [changed]}, "f").resources)
        [step] = plan.steps
        shown = "\n".join(renderPlan(plan))
        self.assertNotIn(newKey, shown)
        self.assertNotIn(keyHash(newKey), shown)
        self.assertEqual(step.after["credentials"][0]["keyHash"], keyHash(newKey))

    def test_missingSecrets(self) -> None:
        """
        Applied to an admin without the consumer, the export is refused
        before any change, naming each credential and what to add.
        """
        import yaml

        from gateway.cli.main import missingSecrets
        from gateway.cli.resources import parseResourceFile

        resourceFile = parseResourceFile(yaml.safe_load(self.exported()), "export")
        self.assertEqual(missingSecrets(self.current, resourceFile), [])
        empty = dict(self.current, consumers={})
        problems = missingSecrets(empty, resourceFile)
        self.assertEqual(
            [p.where for p in problems],
            [f"consumers[0] (alice).credentials[{i}]" for i in range(4)],
        )
        self.assertIn("add its key", problems[0].message)
        self.assertIn("add its password", problems[1].message)
