"""
What the model, the admin API and the config file accept, and how they say
no: strings that are not text (lone surrogates, control characters in
paths and header-like fields), durations too small to be durations, bodies
that are not JSON, and every error of a resource reported at once.

The admin is tested through L{treq.testing.StubTreq} against its resource,
its site through a memory transport, the config file through
L{parseConfig}.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

import attrs
from jwtkeys import HS_SECRET, publicPEM, rsaKey
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from gateway.admin import AdminAPI
from gateway.admin.openapi import EXAMPLES, openAPIDocument
from gateway.filters import FilterRegistry
from gateway.model.config import ConfigError, parseConfig
from gateway.model.limits import ADMIN_LIMITS
from gateway.model.resources import RESOURCE_CLASSES, parseResource
from gateway.model.schema import (
    Anything,
    Enum,
    Map,
    Nullable,
    Num,
    Obj,
    Str,
    ValidationError,
    fromJSON,
)
from gateway.model.schema import List as ListSpec
from gateway.process import tap
from gateway.process.sites import AdminSite
from gateway.protection.breaker import CircuitBreaker
from gateway.routing.snapshot import SnapshotManager
from gateway.store.file import FileStore

TOKEN = "validation-token"

#: The shortest duration (gateway.model.schema.MIN_SECONDS).
MIN_SECONDS = 0.001
BASE = "http://admin.example/api/v1"

#: One resource of each kind with every string field set (nested objects
#: and lists included), valid.
#: A bcrypt hash, and a PEM public key, for the consumer example.
_BOB_HASH = "$2b$10$bA2ec4Nsep.Sz8nsCP2WquVz27qITdIOUEXHNZRTZEPhfg5eqEp3W"
_RSA_PEM = publicPEM(rsaKey())

FULL: Dict[str, Dict[str, Any]] = {
    "certificates": dict(EXAMPLES["certificates"], name="k1"),
    "servers": {
        "name": "s1",
        "addr": "127.0.0.1:9001",
        "healthCheck": {"path": "/health", "body": "ok"},
        "circuitBreaker": {},
        "passiveHealth": {},
        "tls": {
            "ca": EXAMPLES["certificates"]["cert"],
            "serverName": "users.internal",
            "clientCertificate": "k1",
        },
    },
    "clusters": {"name": "c1", "servers": ["s1"], "loadBalance": "random"},
    "consumers": {
        "name": "u1",
        "customId": "customer-1",
        "groups": ["gold"],
        "credentials": [
            {
                "type": "key",
                "id": "k1",
                "key": "key-of-sixteen-chars",
                "fingerprint": "0123456789ab",
            },
            {"type": "key", "keyHash": "ab" * 32},
            {"type": "basic", "username": "alice", "password": "secret"},
            {"type": "basic", "username": "bob", "passwordHash": _BOB_HASH},
            {"type": "jwt", "issuer": "iss-1", "algorithm": "HS256", "secret": HS_SECRET},
            {"type": "jwt", "issuer": "iss-2", "algorithm": "RS256", "publicKey": _RSA_PEM},
        ],
    },
    "apis": {
        "name": "a1",
        "urlPattern": "/users/{id}",
        "method": "GET",
        "host": "example.com",
        "nodes": [
            {"cluster": "c1", "urlRewrite": "/u/{id}", "attrName": "user"},
            {"cluster": "c1", "attrName": "other", "required": False, "default": {"v": "none"}},
        ],
        "rateLimit": {"rate": 5, "key": "header:X-Key", "onLimit": "queue"},
        "ipAccess": {"allow": ["10.0.0.0/8"], "deny": ["::1/128"]},
        "circuitBreaker": {},
        "filters": [{"name": "f1", "config": {"mode": "strict", "list": ["a"]}}],
        "cors": {
            "origins": ["https://*.example.org"],
            "methods": ["PUT"],
            "headers": ["X-Token"],
            "exposeHeaders": ["X-Total"],
        },
        "transform": {
            "request": {
                "set": {"X-User": "$consumer.name"},
                "add": {"X-Id": "$param.id"},
                "remove": ["Cookie"],
            },
            "response": {"set": {"X-Served": "gw"}, "remove": ["Server"]},
        },
        "auth": {
            "methods": ["key", "jwt"],
            "keyNames": ["header:apikey"],
            "anonymous": "u1",
            "jwt": {
                "jwksUrl": "https://id.example.com/jwks.json",
                "issuer": "https://id.example.com/",
                "audiences": ["api"],
                "consumerClaim": "sub",
            },
        },
        "acl": {"allow": ["gold"], "deny": ["banned"]},
    },
    "routings": {
        "name": "r1",
        "cluster": "c1",
        "api": "a1",
        "strategy": "mirror",
        "hashOn": "header:X-User",
        "conditions": [
            {"source": "header", "name": "X-Canary", "op": "eq", "value": "yes"},
            {"source": "json", "name": "user.id", "op": "in", "value": ["a", "b"]},
        ],
    },
}

#: An API with a mock response (it cannot have nodes too): with L{FULL},
#: every string field of every kind is set.
MOCK_API: Dict[str, Any] = {
    "name": "m1",
    "urlPattern": "/mock",
    "response": {"headers": {"Content-Type": "text/csv"}, "body": "a,b"},
}

#: More examples, for what one of FULL cannot hold together (a cluster's
#: discovery and its servers, an API's mock response and its nodes, a
#: cache and an aggregation).
MORE: List[Tuple[str, Dict[str, Any]]] = [
    (
        "clusters",
        {
            "name": "c2",
            "loadBalance": "weighted-round-robin",
            "discovery": {
                "dns": "_http._tcp.users.service.internal",
                "type": "SRV",
                "healthCheck": {"path": "/health", "body": "ok"},
            },
        },
    ),
    ("apis", MOCK_API),
    (
        "apis",
        {
            "name": "k1",
            "urlPattern": "/k",
            "nodes": [{"cluster": "c1"}],
            "cache": {
                "ttl": 30,
                "varyOn": ["header:Accept-Language"],
                "store": "redis",
                "requestCacheControl": "honour",
            },
        },
    ),
]


def examples() -> Iterator[Tuple[str, Dict[str, Any]]]:
    """
    @return: C{(kind, body)} of every example: L{FULL}'s and L{MORE}.
    """
    yield from FULL.items()
    yield from MORE


#: Paths of a request line: no control character, no space.
PATHS = {
    ("servers", "healthCheck.path"),
    ("clusters", "discovery.healthCheck.path"),
    ("apis", "urlPattern"),
    ("apis", "nodes[0].urlRewrite"),
}

#: Free text: control characters are allowed (a body may hold a newline).
FREE_TEXT = {("servers", "healthCheck.body"), ("clusters", "discovery.healthCheck.body")}

#: Free text whose content a rule checks (a PEM document): control
#: characters are allowed, but what they make of it is refused by the rule.
CHECKED_TEXT = {("consumers", "credentials[5].publicKey")}
#: PEM text: lines (CR and LF allowed) of printable ASCII (other control
#: characters refused).
PEM_TEXT = {("certificates", "cert"), ("certificates", "key"), ("servers", "tls.ca")}

#: Free-form JSON: strings are checked for valid Unicode only.
FREE_JSON = {
    ("apis", "filters[0].config.mode"),
    ("apis", "filters[0].config.list[0]"),
    ("routings", "conditions[0].value"),
    ("routings", "conditions[1].value[0]"),
    ("routings", "conditions[1].value[1]"),
    ("apis", "nodes[1].default.v"),
    ("apis", "response.body"),
}


def stringLeaves(value: Any, path: str = "") -> Iterator[Tuple[str, str]]:
    """
    @return: C{(path, string)} of every string in a JSON value.
    """
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from stringLeaves(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from stringLeaves(item, f"{path}.{key}" if path else key)


def replaced(value: Any, path: str, new: Any) -> Any:
    """
    @return: a copy of C{value} with the string at C{path} (as
        L{stringLeaves} names it) replaced by C{new}.
    """
    copied = copy.deepcopy(value)
    for where, _ in stringLeaves(copied):
        if where == path:
            break
    else:
        raise KeyError(path)
    parts: List[Any] = []
    for part in path.replace("[", ".[").split("."):
        parts.append(int(part[1:-1]) if part.startswith("[") else part)
    target = copied
    for part in parts[:-1]:
        target = target[part]
    target[parts[-1]] = new
    return copied


def stringSpecs(cls: type, path: str = "") -> Iterator[str]:
    """
    @return: the path of every field of a resource class whose value is or
        holds a string (lists as C{[0]}).
    """
    for a in attrs.fields(cls):
        spec = a.metadata.get("spec")
        if spec is None:
            continue
        where = f"{path}.{a.name}" if path else a.name
        while True:
            if isinstance(spec, Nullable):
                spec = spec.inner
            elif isinstance(spec, ListSpec):
                spec = spec.item
                where += "[0]"
            else:
                break
        if isinstance(spec, Obj):
            yield from stringSpecs(spec.cls, where)
        elif isinstance(spec, (Str, Enum, Anything, Map)):
            yield where


def shape(path: str) -> str:
    """
    @return: a field path with list indexes and free-form keys erased, to
        compare with L{stringSpecs}.
    """
    out = []
    for part in path.replace("[", ".[").split("."):
        out.append("[0]" if part.startswith("[") else part)
    joined = ".".join(out).replace(".[0]", "[0]")
    for prefix in ("filters[0].config", "conditions[0].value", "nodes[0].default"):
        if joined.startswith(prefix):
            return prefix
    return joined


class FullExampleTests(SynchronousTestCase):
    def test_full(self) -> None:
        """
        The examples are valid, and set every string field of the model
        (so that the tests below reach every one of them).
        """
        covered: Dict[str, Set[str]] = {}
        for kind, body in examples():
            parseResource(kind, body)
            covered.setdefault(kind, set()).update(shape(path) for path, _ in stringLeaves(body))
        for kind, paths in covered.items():
            expected = set(stringSpecs(RESOURCE_CLASSES[kind]))
            self.assertEqual(expected - paths, set(), kind)


class SurrogateTests(SynchronousTestCase):
    """
    A lone surrogate (C{"\\ud800"} in JSON) is not text: no UTF-8 file and
    no HTTP header can hold it.  Every string field refuses it, naming the
    field.
    """

    def test_everyStringField(self) -> None:
        """
        Every string of every kind of resource, with a lone surrogate
        appended, is refused with a L{ValidationError} naming exactly that
        field (a key of free-form JSON too).
        """
        checked = 0
        for kind, body in examples():
            for path, value in stringLeaves(body):
                bad = replaced(body, path, value + "\ud800")
                error = self.assertRaises(ValidationError, parseResource, kind, bad)
                self.assertEqual(
                    [(e.field, e.semantic) for e in error.errors], [(path, False)], (kind, path)
                )
                checked += 1
        self.assertGreater(checked, 30)
        bad = replaced(FULL["apis"], "filters[0].config.mode", "x")
        bad["filters"][0]["config"]["k\udfff"] = 1
        error = self.assertRaises(ValidationError, parseResource, "apis", bad)
        self.assertEqual(error.field, "filters[0].config.k\\udfff")
        self.assertIn("surrogate", error.message)

    def test_message(self) -> None:
        """
        The message says what is wrong and where, in plain ASCII.
        """
        error = self.assertRaises(
            ValidationError, parseResource, "servers", {"name": "s", "addr": "h\ud800:1"}
        )
        self.assertEqual(
            error.message,
            "must be valid Unicode text: it holds a lone surrogate (U+D800 at position 1)",
        )

    def test_validPairsAccepted(self) -> None:
        """
        A valid pair (an emoji, as JSON's C{"\\ud83d\\ude00"} decodes) is
        text like any other, where the field takes non-ASCII text.
        """
        body = replaced(FULL["servers"], "healthCheck.body", "ok \U0001f600")
        self.assertEqual(parseResource("servers", body).healthCheck.body, "ok \U0001f600")


class ControlCharacterTests(SynchronousTestCase):
    """
    CR, LF and the other control characters make no sense in names,
    addresses, paths and header-like fields: refused, naming the field.
    Paths refuse the space too.  Free text (a health check's expected body)
    and free-form JSON keep them.
    """

    def test_everyStringField(self) -> None:
        """
        Each string field but free text and free-form JSON refuses a value
        with CR LF inside, naming the field; paths also refuse a space.
        """
        for kind, body in examples():
            for path, value in stringLeaves(body):
                for bad in (value + "\r\nX-Injected: 1", value[:1] + "\x00" + value[1:]):
                    changed = replaced(body, path, bad)
                    if (kind, path) in PEM_TEXT and "\x00" not in bad:
                        parseResource(kind, changed)
                        continue
                    if (kind, path) in FREE_TEXT | FREE_JSON:
                        parseResource(kind, changed)
                        continue
                    if (kind, path) in CHECKED_TEXT:
                        error = self.assertRaises(ValidationError, parseResource, kind, changed)
                        self.assertEqual([e.field for e in error.errors], [path])
                        self.assertTrue(error.semantic)
                        continue
                    error = self.assertRaises(ValidationError, parseResource, kind, changed)
                    self.assertEqual([e.field for e in error.errors], [path], (kind, path, bad))
                    self.assertFalse(error.semantic)
                if (kind, path) in PATHS:
                    error = self.assertRaises(
                        ValidationError, parseResource, kind, replaced(body, path, value + " x")
                    )
                    self.assertEqual(error.field, path)

    def test_messages(self) -> None:
        """
        The message names the character and its position.
        """
        error = self.assertRaises(
            ValidationError,
            parseResource,
            "apis",
            dict(FULL["apis"], urlPattern="/a b"),
        )
        self.assertEqual(
            error.message, "must not contain spaces or control characters (U+0020 at position 2)"
        )
        error = self.assertRaises(
            ValidationError, parseResource, "apis", dict(FULL["apis"], host="a.com\r\n")
        )
        self.assertEqual(
            error.message, "must not contain control characters (U+000D at position 5)"
        )

    def test_schemaSaysSo(self) -> None:
        """
        The OpenAPI document states it: every string property of the
        resources (outside free text) has a pattern that refuses CR LF.
        """
        import re

        schemas = openAPIDocument()["components"]["schemas"]

        def visit(schema: Any, where: str) -> Iterator[Tuple[str, Dict[str, Any]]]:
            if isinstance(schema, dict):
                if schema.get("readOnly"):
                    return  # (answered, never read)
                if schema.get("type") == "string" and "enum" not in schema:
                    yield where, schema
                for key, value in schema.items():
                    yield from visit(value, f"{where}/{key}")
            elif isinstance(schema, list):
                for i, value in enumerate(schema):
                    yield from visit(value, f"{where}/{i}")

        seen = 0
        for kind in ("Certificate", "Server", "Cluster", "API", "Routing"):
            for where, schema in visit(schemas[kind], kind):
                if where.endswith("healthCheck/properties/body") or "allOf" in where:
                    continue
                if where.endswith(("/cert", "/key", "tls/properties/ca")):
                    # PEM: lines of printable ASCII.
                    self.assertIsNone(re.search(schema["pattern"], "a\x00b"), where)
                    continue
                seen += 1
                self.assertIn("pattern", schema, where)
                self.assertIsNone(re.search(schema["pattern"], "a\r\nb"), where)
        self.assertGreater(seen, 15)


class AdminStringTests(SynchronousTestCase):
    """
    The admin answers 400 naming the field to a lone surrogate or a CR LF,
    and stores nothing: the file store (which writes UTF-8) and the health
    checks never see them.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = FileStore(self.mktemp())
        self.stub = StubTreq(AdminAPI(self.store, TOKEN, reactor=self.clock).resource())

    def call(self, method: str, path: str, raw: bytes) -> Tuple[int, Any]:
        response = self.successResultOf(
            self.stub.request(
                method,
                BASE + path,
                data=raw,
                headers={"Authorization": "Bearer " + TOKEN, "Content-Type": "application/json"},
            )
        )
        return response.code, json.loads(self.successResultOf(response.content()))

    def test_surrogate(self) -> None:
        """
        A health check path or an API's URL rewrite carrying C{\\ud800} (as
        JSON sends it) is a 400 naming the field, and the store is
        unchanged (before, the file store failed to write it: 500).
        """
        for path, raw, field in [
            (
                "/servers/s1",
                b'{"addr": "127.0.0.1:1", "healthCheck": {"path": "/h\\ud800"}}',
                "healthCheck.path",
            ),
            (
                "/apis/a1",
                b'{"urlPattern": "/a", "nodes": [{"cluster": "c", "urlRewrite": "/\\udc00"}]}',
                "nodes[0].urlRewrite",
            ),
        ]:
            code, body = self.call("PUT", path, raw)
            self.assertEqual((code, body["field"]), (400, field), body)
            self.assertIn("surrogate", body["error"])
        # An unknown key is named escaped, so that the answer is text.
        code, body = self.call("PUT", "/servers/s1", b'{"addr": "127.0.0.1:1", "\\ud800": 1}')
        self.assertEqual((code, body["field"]), (400, "\\ud800"), body)
        self.assertEqual(self.successResultOf(self.store.load()).revision, 0)

    def test_crlf(self) -> None:
        """
        CR LF in a URL pattern, a header condition's name or a host is a
        400 naming the field.
        """
        for path, body, field in [
            ("/apis/a1", {"urlPattern": "/a\r\n", "nodes": [{"cluster": "c"}]}, "urlPattern"),
            (
                "/apis/a1",
                {"urlPattern": "/a", "host": "a\r\nb", "nodes": [{"cluster": "c"}]},
                "host",
            ),
            (
                "/routings/r1",
                {
                    "cluster": "c",
                    "conditions": [{"source": "header", "name": "X\r\nY", "op": "exists"}],
                },
                "conditions[0].name",
            ),
        ]:
            code, answer = self.call("PUT", path, json.dumps(body).encode())
            self.assertEqual((code, answer["field"]), (400, field), answer)
        self.assertEqual(self.successResultOf(self.store.load()).revision, 0)


class DurationTests(SynchronousTestCase):
    """
    Durations are at least a millisecond: C{5e-324} seconds is no
    duration, and the breaker's window divided by one overflowed (a 500
    from the admin).
    """

    def test_secondsFields(self) -> None:
        """
        Every seconds field of every resource refuses C{5e-324} and takes
        L{MIN_SECONDS}.
        """
        fields = [
            ("servers", ("healthCheck", "interval")),
            ("servers", ("healthCheck", "timeout")),
            ("servers", ("circuitBreaker", "window")),
            ("servers", ("circuitBreaker", "openTimeout")),
            ("servers", ("passiveHealth", "ejectTime")),
            ("apis", ("nodes", "timeout")),
            ("apis", ("circuitBreaker", "window")),
            ("apis", ("circuitBreaker", "openTimeout")),
        ]
        for kind, (outer, inner) in fields:
            for value, good in [(5e-324, False), (0.0009, False), (MIN_SECONDS, True)]:
                body = copy.deepcopy(FULL[kind])
                if outer == "nodes":
                    body["nodes"][0][inner] = value
                    field = f"nodes[0].{inner}"
                else:
                    body[outer][inner] = value
                    field = f"{outer}.{inner}"
                if good:
                    parseResource(kind, body)
                    continue
                error = self.assertRaises(ValidationError, parseResource, kind, body)
                self.assertEqual((error.field, error.message), (field, "must be at least 0.001"))
        body = copy.deepcopy(FULL["apis"])
        body["rateLimit"]["rate"] = 5e-324
        error = self.assertRaises(ValidationError, parseResource, "apis", body)
        self.assertEqual(error.field, "rateLimit.rate")

    def test_shortestWindow(self) -> None:
        """
        A breaker with the shortest window works.
        """
        config = fromJSON(RESOURCE_CLASSES["servers"], FULL["servers"]).circuitBreaker
        config = attrs.evolve(config, window=MIN_SECONDS)
        clock = Clock()
        clock.advance(1.7e9)
        breaker = CircuitBreaker(config, clock)
        self.assertEqual(breaker.failureRate(), 0.0)

    def test_hugeNumbers(self) -> None:
        """
        An integer too large for a float (JSON allows it) in a number field
        is refused, not an overflow.
        """
        self.assertEqual(
            self.assertRaises(ValidationError, Num(0, 10).parse, 10**400, "x").message,
            "must be at most 10",
        )
        self.assertEqual(
            self.assertRaises(ValidationError, Num(0, 10).parse, -(10**400), "x").message,
            "must be at least 0",
        )

    def test_admin(self) -> None:
        """
        A C{PUT} of an API whose timeouts and breaker numbers are
        C{5e-324}, to an admin validating with a real snapshot manager, is
        a 400 naming every such field, not a 500.
        """
        clock = Clock()
        store = FileStore(None)
        manager = SnapshotManager(FilterRegistry.fromPlugins(), clock)
        stub = StubTreq(AdminAPI(store, TOKEN, validate=manager.validate, reactor=clock).resource())
        headers = {"Authorization": "Bearer " + TOKEN, "Content-Type": "application/json"}

        def put(path: str, body: Any) -> Tuple[int, Any]:
            response = self.successResultOf(
                stub.request("PUT", BASE + path, data=json.dumps(body).encode(), headers=headers)
            )
            return response.code, json.loads(self.successResultOf(response.content()))

        self.assertEqual(put("/servers/s1", {"addr": "127.0.0.1:1"})[0], 201)
        self.assertEqual(put("/clusters/c1", {"servers": ["s1"]})[0], 201)
        code, body = put(
            "/apis/a1",
            {
                "urlPattern": "/a",
                "nodes": [{"cluster": "c1", "timeout": 5e-324}],
                "circuitBreaker": {"window": 5e-324, "openTimeout": 5e-324},
            },
        )
        self.assertEqual(code, 400, body)
        self.assertEqual(
            [e["field"] for e in body["errors"]],
            ["nodes[0].timeout", "circuitBreaker.window", "circuitBreaker.openTimeout"],
        )


class EveryErrorTests(SynchronousTestCase):
    """
    A resource with several errors gets them all at once.
    """

    def test_model(self) -> None:
        """
        L{ValidationError.errors} lists every field at fault, nested ones
        and rules between fields included, in field order; the error itself
        is the first.
        """
        body = {
            "name": "bad name",
            "urlPattern": "no-slash",
            "method": "FETCH",
            "nodes": [{"cluster": "c", "timeout": "soon"}, {"cluster": "c", "attrName": "x"}],
            "bogus": 1,
        }
        error = self.assertRaises(ValidationError, parseResource, "apis", body)
        self.assertEqual(
            [e.field for e in error.errors],
            ["name", "urlPattern", "nodes[0].timeout", "method", "bogus"],
        )
        self.assertEqual(
            (error.field, error.message), (error.errors[0].field, error.errors[0].message)
        )
        body["nodes"][0]["timeout"] = 1
        error = self.assertRaises(ValidationError, parseResource, "apis", body)
        self.assertEqual(
            [e.field for e in error.errors],
            ["name", "urlPattern", "method", "bogus", "nodes[0].attrName"],
        )

    def test_semantic(self) -> None:
        """
        Errors the schema cannot state (an invalid regular expression) are
        marked semantic, the others not.
        """
        body = {
            "name": "r",
            "cluster": "c",
            "conditions": [
                {"source": "query", "name": "q", "op": "match", "value": "("},
                {"source": "header", "name": "", "op": "eq", "value": 1},
            ],
        }
        error = self.assertRaises(ValidationError, parseResource, "routings", body)
        self.assertEqual(
            [(e.field, e.semantic) for e in error.errors],
            [("conditions[0].value", True), ("conditions[1].name", False)],
        )

    def admin(self) -> StubTreq:
        clock = Clock()
        return StubTreq(AdminAPI(FileStore(None), TOKEN, reactor=clock).resource())

    def put(self, stub: StubTreq, path: str, body: Any) -> Tuple[int, Any]:
        response = self.successResultOf(
            stub.request(
                "PUT",
                BASE + path,
                data=json.dumps(body).encode(),
                headers={"Authorization": "Bearer " + TOKEN, "Content-Type": "application/json"},
            )
        )
        return response.code, json.loads(self.successResultOf(response.content()))

    def test_admin(self) -> None:
        """
        The admin answers every error: C{error} and C{field} are the first,
        C{errors} has them all as C{{field, error}}.
        """
        code, body = self.put(
            self.admin(),
            "/servers/s1",
            {"addr": "nope", "weight": -1, "healthCheck": {"path": "health", "interval": 0}},
        )
        self.assertEqual(code, 400)
        self.assertEqual(
            [e["field"] for e in body["errors"]],
            ["addr", "weight", "healthCheck.path", "healthCheck.interval"],
        )
        self.assertEqual(body["errors"][0], {"field": body["field"], "error": body["error"]})
        self.assertEqual(set(body), {"error", "field", "errors"})

    def test_adminRules(self) -> None:
        """
        A body that fits the schema but breaks rules it states in words is
        answered 400 with every error, each marked C{rule}; errors of the
        schema come first, unmarked.
        """
        stub = self.admin()
        body = {
            "urlPattern": "/a/{id}/{id}",
            "nodes": [{"cluster": "c", "attrName": "x"}, {"cluster": "c", "attrName": "x"}],
        }
        code, answer = self.put(stub, "/apis/a1", body)
        self.assertEqual(code, 400, answer)
        self.assertEqual(
            [(e["field"], e.get("rule")) for e in answer["errors"]],
            [("urlPattern", True), ("nodes[1].attrName", True)],
        )
        code, answer = self.put(stub, "/apis/a1", dict(body, maxQPS=-1))
        self.assertEqual(code, 400, answer)
        self.assertEqual(
            [(e["field"], e.get("rule")) for e in answer["errors"]],
            [("maxQPS", None), ("urlPattern", True), ("nodes[1].attrName", True)],
        )

    def test_config(self) -> None:
        """
        The config file reports every error: of its sections, its store and
        each seed resource (every field), and references between seeds.
        """
        error = self.assertRaises(
            ConfigError,
            parseConfig,
            {
                "proxy": {"listen": "tcp:8080:interface=127.0.0.1", "drainTimeout": -1},
                "admin": {"listen": "nowhere:1", "token": " x"},
                "store": "ftp:x",
                "servers": [{"name": "s1", "addr": "nope", "weight": "w"}],
                "clusters": [{"name": "c1", "servers": ["s1"]}, {"name": "c1"}],
            },
            "gw.yaml",
        )
        self.assertEqual(
            [key for key, _ in error.errors],
            [
                "proxy.drainTimeout",
                "admin.listen",
                "admin.token",
                "store",
                "servers[0].addr",
                "servers[0].weight",
                "clusters[1].name",
            ],
        )
        self.assertEqual((error.key, error.source), ("proxy.drainTimeout", "gw.yaml"))
        lines = str(error).splitlines()
        self.assertEqual(lines[0], "gw.yaml: 7 errors:")
        self.assertTrue(lines[1].startswith("  gw.yaml: proxy.drainTimeout: must be at least 0"))
        error = self.assertRaises(
            ConfigError,
            parseConfig,
            {
                "admin": {"listen": "tcp:9090:interface=127.0.0.1"},
                "clusters": [{"name": "c1", "servers": ["s1", "s2"]}],
            },
        )
        self.assertEqual(
            [key for key, _ in error.errors], ["clusters[0].servers[0]", "clusters[0].servers[1]"]
        )

    def test_configSurrogate(self) -> None:
        """
        A lone surrogate in the config file (YAML's C{"\\ud800"} escape) is
        refused, naming the key, wherever it is.
        """
        error = self.assertRaises(
            ConfigError,
            parseConfig,
            {
                "admin": {"listen": "tcp:9090:interface=127.0.0.1", "token": "t\ud800"},
                "apis": [{"name": "a", "urlPattern": "/\ud800", "nodes": [{"cluster": "c"}]}],
            },
        )
        self.assertEqual([key for key, _ in error.errors], ["admin.token", "apis[0].urlPattern"])

    def twistdRefusal(self, text: str) -> Tuple[str, str]:
        """
        @return: the path of a config file of C{text}, and the usage error
            C{twistd gateway -c} gives for it.
        """
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        self.patch(tap, "_twistdExitsZeroOnUsageError", False)
        error = self.assertRaises(usage.UsageError, tap.Options().parseOptions, ["-c", path])
        return path, str(error)

    def test_twistd(self) -> None:
        """
        C{twistd gateway} refuses to start on a config file with several
        errors, and says all of them.
        """
        path, error = self.twistdRefusal(
            "admin:\n  listen: tcp:9090:interface=127.0.0.1\n"
            "servers:\n  - {name: s1, addr: nope, weight: heavy}\n"
        )
        self.assertIn(f"{path}: servers[0].addr: must be host:port", error)
        self.assertIn(f"{path}: servers[0].weight: must be an integer", error)

    def test_twistdGlobalFilters(self) -> None:
        """
        A global filter no plugin provides is reported with the config's
        other errors, not only once they are fixed.
        """
        path, error = self.twistdRefusal(
            "proxy:\n  listen: tcp:8080:interface=127.0.0.1\n  filters: [request-id, nope]\n"
            "servers:\n  - {name: s1, addr: nowhere}\n"
        )
        self.assertIn(f"{path}: 2 errors", error)
        self.assertIn(f"{path}: proxy.filters[1]: no filter plugin named 'nope'", error)
        self.assertIn(f"{path}: servers[0].addr: must be host:port", error)


class MediaTypeTests(SynchronousTestCase):
    """
    The admin reads JSON bodies and answers another media type 415.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = FileStore(None)
        self.api = AdminAPI(self.store, TOKEN, reactor=self.clock)

    def test_resource(self) -> None:
        """
        A JSON body sent as C{multipart/form-data} or C{text/plain} is
        answered 415 and stored nowhere; JSON, C{+json} types and curl's
        default form type (its content is read as JSON) are read.
        """
        stub = StubTreq(self.api.resource())
        body = json.dumps({"addr": "127.0.0.1:1"}).encode()
        for contentType, code in [
            ("multipart/form-data", 415),
            ("multipart/form-data; boundary=x", 415),
            ("text/plain", 415),
            ("application/json; charset=utf-8", 201),
            ("application/merge-patch+json", 200),
            ("application/x-www-form-urlencoded", 200),
        ]:
            response = self.successResultOf(
                stub.request(
                    "PUT",
                    BASE + "/servers/s1",
                    data=body,
                    headers={"Authorization": "Bearer " + TOKEN, "Content-Type": contentType},
                )
            )
            answer = json.loads(self.successResultOf(response.content()))
            self.assertEqual(response.code, code, (contentType, answer))
            if code == 415:
                self.assertNotIn("field", answer)
                self.assertIn("application/json", answer["error"])

    def test_site(self) -> None:
        """
        Through the admin's site, a C{POST} of JSON labelled
        C{multipart/form-data} gets its 415 answer: the site does not try
        to parse it as a form (which failed and dropped the connection
        without an answer).
        """
        site = AdminSite(self.api.resource(), limits=ADMIN_LIMITS, reactor=self.clock)
        channel = site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        body = json.dumps({"name": "s1", "addr": "127.0.0.1:1"}).encode()
        channel.dataReceived(
            b"POST /api/v1/servers HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer "
            + TOKEN.encode()
            + b"\r\nContent-Type: multipart/form-data\r\nContent-Length: %d\r\n\r\n" % len(body)
            + body
        )
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 415 "), transport.value())
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.successResultOf(self.store.load()).revision, 0)


def patternedStrings(cls: type, path: str = "") -> Iterator[Tuple[str, Str]]:
    """
    @return: C{(path, spec)} of every string field of a resource class
        (and of the objects it holds) that has a pattern.
    """
    for a in attrs.fields(cls):
        spec = a.metadata.get("spec")
        where = f"{path}.{a.name}" if path else a.name
        while isinstance(spec, (Nullable, ListSpec)):
            spec = spec.inner if isinstance(spec, Nullable) else spec.item
        if isinstance(spec, Obj):
            yield from patternedStrings(spec.cls, where)
        elif isinstance(spec, Str) and spec.pattern is not None:
            yield where, spec


class MessageTests(SynchronousTestCase):
    """
    Errors say what a value must be in words, not as a regular expression
    or a bare "too short".
    """

    def test_everyPatternHinted(self) -> None:
        """
        Every string field of every resource with a pattern has a hint, so
        that no error reads C{must match ^(...)$}.
        """
        bare = [
            f"{kind}.{where}"
            for kind, cls in RESOURCE_CLASSES.items()
            for where, spec in patternedStrings(cls)
            if not spec.patternHint
        ]
        self.assertEqual(bare, [])

    def test_words(self) -> None:
        """
        The rate limit's key, a routing's C{hashOn} and a too short API
        key are refused in words, with the minimum length.
        """
        api = {"name": "a", "urlPattern": "/a", "nodes": [{"cluster": "c"}]}
        cases = [
            (
                "apis",
                dict(api, rateLimit={"rate": 1, "key": "bogus"}),
                "rateLimit.key",
                "must be none, ip, consumer or header:NAME",
            ),
            (
                "routings",
                {"name": "r", "cluster": "c", "trafficRate": 10, "hashOn": "x"},
                "hashOn",
                "must be ip, header:NAME or cookie:NAME",
            ),
            (
                "consumers",
                {"name": "u", "credentials": [{"type": "key", "key": "short"}]},
                "credentials[0].key",
                "must be at least 16 characters",
            ),
        ]
        for kind, value, field, message in cases:
            with self.assertRaises(ValidationError) as caught:
                parseResource(kind, value)
            self.assertIn((field, message), [(e.field, e.message) for e in caught.exception.errors])


class DotNameTests(SynchronousTestCase):
    """
    Names are reachable by URL: C{.} and C{..} are refused at write; a name
    holding dots among other characters is read and deleted through the
    admin's site (its channel refuses dot segments only).
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = FileStore(None)
        api = AdminAPI(self.store, TOKEN, reactor=self.clock)
        self.site = AdminSite(api.resource(), limits=ADMIN_LIMITS, reactor=self.clock)

    def send(self, method: str, path: str, body: Optional[Dict[str, Any]] = None) -> bytes:
        channel = self.site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        data = b"" if body is None else json.dumps(body).encode()
        channel.dataReceived(
            f"{method} {path} HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        return transport.value()

    def test_refused(self) -> None:
        """
        A C{POST} naming C{.} or C{..} is a 400 naming C{name}, and nothing
        is stored (before, 201: and then every URL of it was a 400).
        """
        for name in (".", ".."):
            raw = self.send("POST", "/api/v1/servers", {"name": name, "addr": "127.0.0.1:19001"})
            self.assertTrue(raw.startswith(b"HTTP/1.1 400 "), raw)
            self.assertIn(b'"field":"name"', raw)
        self.assertEqual(self.successResultOf(self.store.load()).revision, 0)

    def test_reachable(self) -> None:
        """
        C{..bad}, C{...}, C{a.b} and C{.a} are created, read and deleted by
        their URLs.
        """
        for name in ("..bad", "...", "a.b", ".a"):
            raw = self.send("POST", "/api/v1/servers", {"name": name, "addr": "127.0.0.1:19001"})
            self.assertTrue(raw.startswith(b"HTTP/1.1 201 "), raw)
            raw = self.send("GET", f"/api/v1/servers/{name}")
            self.assertTrue(raw.startswith(b"HTTP/1.1 200 "), raw)
            self.assertIn(f'"name":"{name}"'.encode(), raw)
            raw = self.send("DELETE", f"/api/v1/servers/{name}")
            self.assertTrue(raw.startswith(b"HTTP/1.1 204 "), raw)
        self.assertEqual(self.successResultOf(self.store.load()).resources["servers"], {})


class NoEmptyFieldTests(SynchronousTestCase):
    """
    An error that names no field has no C{field} key.
    """

    def test_unauthorized(self) -> None:
        """
        The 401 answer is C{{"error": ...}} alone.
        """
        clock = Clock()
        stub = StubTreq(AdminAPI(FileStore(None), TOKEN, reactor=clock).resource())
        response = self.successResultOf(stub.get(BASE + "/servers"))
        self.assertEqual(response.code, 401)
        self.assertEqual(
            json.loads(self.successResultOf(response.content())),
            {"error": "missing or invalid admin token"},
        )

    def test_siteRefusals(self) -> None:
        """
        The admin's site refuses a body over its limit with C{{"error"}}
        alone too.
        """
        clock = Clock()
        api = AdminAPI(FileStore(None), TOKEN, reactor=clock)
        site = AdminSite(api.resource(), limits=ADMIN_LIMITS, reactor=clock)
        channel = site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(
            b"POST /api/v1/servers HTTP/1.1\r\nHost: admin\r\nContent-Length: %d\r\n\r\n"
            % (ADMIN_LIMITS.maxBodySize + 1,)
        )
        head, _, body = transport.value().partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 413 "), head)
        self.assertEqual(set(json.loads(body)), {"error"})

    def test_errorJSON(self) -> None:
        """
        L{ValidationError.toJSON} leaves out empty fields, in the list too.
        """
        error = ValidationError.collect(
            [ValidationError("", "must be an object"), ValidationError("a", "bad")]
        )
        self.assertEqual(
            error.toJSON(),
            {
                "error": "must be an object",
                "errors": [{"error": "must be an object"}, {"field": "a", "error": "bad"}],
            },
        )


class DocumentAgreesTests(SynchronousTestCase):
    """
    What schemathesis found the OpenAPI document and the validation
    disagreeing on, checked with a validator of the document's schemas:
    the document now refuses what the admin refuses with 400, and allows
    what it accepts.
    """

    def validator(self, name: str) -> Any:
        from openapi_schema_validator import OAS30Validator

        document = openAPIDocument()
        schema = dict(document["components"]["schemas"][name])
        schema["components"] = document["components"]
        return OAS30Validator(schema)

    def agree(self, kind: str, body: Dict[str, Any], valid: bool) -> None:
        name = {
            "certificates": "Certificate",
            "servers": "Server",
            "clusters": "Cluster",
            "consumers": "Consumer",
            "apis": "API",
            "routings": "Routing",
        }
        documented = self.validator(name[kind] + "Create").is_valid(body)
        self.assertEqual(documented, valid, body)
        try:
            parseResource(kind, body)
        except ValidationError as e:
            accepted: Optional[bool] = False
            semantic = e.semantic
        else:
            accepted, semantic = True, False
        self.assertEqual(accepted or semantic, valid, body)

    def test_cases(self) -> None:
        """
        C{null} for an enumerated field with a default is allowed by both; a
        URL pattern without its C{/}, several nodes without an C{attrName},
        a C{json} condition without a name, a surrogate-free CR LF in an
        address, a name (or a reference) C{.} or C{..} are refused by both;
        C{..bad} and C{...} are names for both.
        """
        api = {"name": "a", "urlPattern": "/a", "nodes": [{"cluster": "c"}]}
        cases: List[Tuple[str, Dict[str, Any], bool]] = [
            ("clusters", {"name": "c", "loadBalance": None}, True),
            ("apis", api, True),
            ("apis", dict(api, urlPattern="a"), False),
            ("apis", dict(api, nodes=[{"cluster": "c"}, {"cluster": "d"}]), False),
            (
                "apis",
                dict(
                    api,
                    nodes=[{"cluster": "c", "attrName": "x"}, {"cluster": "d", "attrName": "y"}],
                ),
                True,
            ),
            (
                "routings",
                {"name": "r", "cluster": "c", "conditions": [{"source": "json", "op": "exists"}]},
                False,
            ),
            (
                "routings",
                {"name": "r", "cluster": "c", "conditions": [{"source": "method", "op": "exists"}]},
                True,
            ),
            (
                "routings",
                {
                    "name": "r",
                    "cluster": "c",
                    "conditions": [{"source": "query", "name": "q", "op": "in", "value": "x"}],
                },
                False,
            ),
            ("servers", {"name": "s", "addr": "a\r\n:1"}, False),
            ("servers", {"name": "s", "addr": "[::1]:8080"}, True),
            ("servers", {"name": "s", "addr": "h:65536"}, False),
            ("servers", {"name": ".", "addr": "h:1"}, False),
            ("servers", {"name": "..", "addr": "h:1"}, False),
            ("servers", {"name": "..bad", "addr": "h:1"}, True),
            ("servers", {"name": "...", "addr": "h:1"}, True),
            ("clusters", {"name": "c", "servers": [".."]}, False),
        ]
        for kind, body, valid in cases:
            self.agree(kind, body, valid)

    def test_stringFieldsHaveLimits(self) -> None:
        """
        Every resource field that is a string in the document refuses a
        control character there too (sampled on the examples).
        """
        covered: Set[str] = set()
        for kind, body in examples():
            for path, value in stringLeaves(body):
                if (kind, path) in FREE_TEXT | FREE_JSON | CHECKED_TEXT:
                    continue
                if (kind, path) in PEM_TEXT:
                    # (Lines: a newline is PEM's own; a NUL is not.)
                    self.agree(kind, replaced(body, path, value[:1] + "\x00" + value[1:]), False)
                    continue
                covered.add(f"{kind}:{path}")
                # Inside the value: Python's jsonschema reads "$" as Python
                # does (before a last newline), not as ECMA 262 does.
                self.agree(kind, replaced(body, path, value[:1] + "\n" + value[1:]), False)
        self.assertGreater(len(covered), 25)
