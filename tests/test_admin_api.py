"""
Tests for L{gateway.admin.api}: the admin REST API, through
L{treq.testing.StubTreq} against a real in-memory L{FileStore}.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Tuple

from treq.testing import StubTreq
from twisted.internet.defer import fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Site

from gateway.admin import AdminAPI
from gateway.model.resources import Catalog, parseResource
from gateway.model.resources import ReferenceError as ModelReferenceError
from gateway.model.schema import ValidationError, toJSON
from gateway.store import Change, StoreError
from gateway.store.file import FileStore

TOKEN = "s3cret-token"
BASE = "http://admin.example/api/v1"

SERVER = {"name": "s1", "addr": "127.0.0.1:9001"}


def normalised(kind: str, body: Dict[str, Any]) -> Dict[str, Any]:
    """
    @return: the JSON the model makes of C{body}, every default filled in.
    """
    return json.loads(json.dumps(toJSON(parseResource(kind, body))))


SERVER_FULL = normalised("servers", SERVER)
CLUSTER = {"name": "c1", "servers": ["s1"]}
API = {"name": "a1", "urlPattern": "/users/{id}", "nodes": [{"cluster": "c1"}]}
ROUTING = {
    "name": "r1",
    "cluster": "c1",
    "api": "a1",
    "conditions": [{"source": "header", "name": "X-Canary", "op": "eq", "value": "yes"}],
}


def isPart(part: Any, whole: Any) -> bool:
    """
    @return: whether C{whole} holds everything C{part} says, objects and
        lists of objects possibly with more keys (the defaults).
    """
    if isinstance(part, dict):
        return isinstance(whole, dict) and all(
            k in whole and isPart(v, whole[k]) for k, v in part.items()
        )
    if isinstance(part, list):
        return (
            isinstance(whole, list)
            and len(part) == len(whole)
            and all(isPart(p, w) for p, w in zip(part, whole))
        )
    return bool(part == whole)


class APITestCase(SynchronousTestCase):
    """
    A L{SynchronousTestCase} with an admin API on an in-memory store.
    """

    token: Optional[str] = TOKEN

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = self.makeStore()
        self.api = self.makeAPI()
        self.stub = StubTreq(self.api.resource())

    def makeStore(self) -> FileStore:
        return FileStore(None)

    def makeAPI(self, **kwargs: Any) -> AdminAPI:
        return AdminAPI(self.store, self.token, reactor=self.clock, **kwargs)

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: Optional[str] = TOKEN,
        raw: Any = None,
        headers: Optional[Dict[str, str]] = None,
        base: str = BASE,
    ) -> Tuple[int, Any, Any]:
        """
        @return: C{(code, headers, json)} of one request; C{json} is L{None}
            for an empty body.
        """
        allHeaders = dict(headers or {})
        if token is not None:
            allHeaders["Authorization"] = "Bearer " + token
        data = raw
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            allHeaders.setdefault("Content-Type", "application/json")
        response = self.successResultOf(
            self.stub.request(method, base + path, data=data, headers=allHeaders)
        )
        content = self.successResultOf(response.content())
        if method != "HEAD" and response.code != 204:
            self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"application/json"])
        return response.code, response.headers, json.loads(content) if content else None

    def state(self):
        return self.successResultOf(self.store.load())

    def snapshot(self):
        state = self.state()
        return state.revision, {k: dict(v) for k, v in state.resources.items()}

    def seed(self, *kinds: str) -> None:
        """
        Create the fixtures of C{kinds} (and what they need) through the API.
        """
        fixtures = [
            ("servers", SERVER),
            ("clusters", CLUSTER),
            ("apis", API),
            ("routings", ROUTING),
        ]
        for kind, body in fixtures:
            code, _, result = self.call("PUT", f"/{kind}/{body['name']}", body)
            self.assertIn(code, (200, 201), result)
            if kind == kinds[-1]:
                return

    def assertError(self, result: Tuple[int, Any, Any], code: int, field: Optional[str] = None):
        self.assertEqual(result[0], code, result[2])
        self.assertIsInstance(result[2]["error"], str)
        if field == "":
            self.assertNotIn("field", result[2])
        elif field is not None:
            self.assertEqual(result[2]["field"], field, result[2])
        return result[2]


class CRUDTests(APITestCase):
    """
    Create, read, replace and delete every kind of resource.
    """

    def crud(self, kind: str, body: Dict[str, Any], change: Dict[str, Any]) -> None:
        name = body["name"]
        code, headers, created = self.call("POST", f"/{kind}", body)
        self.assertEqual(code, 201, created)
        self.assertEqual(headers.getRawHeaders(b"location"), [f"/api/v1/{kind}/{name}".encode()])
        self.assertTrue(isPart(body, created), created)
        self.assertEqual(self.call("GET", f"/{kind}/{name}")[2], created)
        self.assertEqual(self.call("GET", f"/{kind}")[:1] + (None,), (200, None))
        self.assertIn(created, self.call("GET", f"/{kind}")[2])
        self.assertEqual(self.state().get(kind, name), created)

        code, _, replaced = self.call("PUT", f"/{kind}/{name}", dict(body, **change))
        self.assertEqual(code, 200, replaced)
        self.assertEqual(replaced, dict(created, **change))
        self.assertEqual(self.call("GET", f"/{kind}/{name}")[2], replaced)

        code, _, result = self.call("DELETE", f"/{kind}/{name}")
        self.assertEqual((code, result), (204, None))
        self.assertError(self.call("GET", f"/{kind}/{name}"), 404)
        self.assertIsNone(self.state().get(kind, name))

    def test_servers(self) -> None:
        """
        Servers: create, read, replace, delete; defaults are filled in.
        """
        self.crud("servers", SERVER, {"weight": 5, "maxQPS": 100})

    def test_serverDefaults(self) -> None:
        """
        A created server answers with every field, defaults included, and a
        nested object gets its own defaults.
        """
        code, _, created = self.call(
            "POST", "/servers", dict(SERVER, healthCheck={"path": "/health"})
        )
        self.assertEqual(code, 201)
        self.assertTrue(
            isPart(
                {
                    "weight": 1,
                    "maxQPS": 0,
                    "circuitBreaker": None,
                    "healthCheck": {
                        "path": "/health",
                        "body": None,
                        "interval": 10.0,
                        "timeout": 5.0,
                        "status": 200,
                    },
                },
                created,
            ),
            created,
        )
        self.assertEqual(
            created, normalised("servers", dict(SERVER, healthCheck={"path": "/health"}))
        )

    def test_clusters(self) -> None:
        """
        Clusters: create, read, replace, delete; C{loadBalance} defaults to
        round-robin.
        """
        self.seed("servers")
        self.call("POST", "/servers", dict(SERVER, name="s2"))
        self.crud("clusters", CLUSTER, {"servers": ["s1", "s2"], "loadBalance": "ip-hash"})
        self.call("POST", "/clusters", CLUSTER)
        self.assertEqual(self.call("GET", "/clusters/c1")[2]["loadBalance"], "round-robin")

    def test_apis(self) -> None:
        """
        APIs: create, read, replace, delete; method and node defaults are
        filled in.
        """
        self.seed("clusters")
        self.crud("apis", API, {"method": "GET", "urlPattern": "/people/{id:int}"})
        code, _, created = self.call("POST", "/apis", API)
        self.assertEqual(created["method"], "*")
        self.assertEqual(created["nodes"][0]["timeout"], 30.0)
        self.assertIs(created["nodes"][0]["required"], True)

    def test_routings(self) -> None:
        """
        Routings: create, read, replace, delete; strategy and traffic rate
        defaults are filled in.
        """
        self.seed("apis")
        self.crud("routings", ROUTING, {"strategy": "mirror", "trafficRate": 10})
        code, _, created = self.call("POST", "/routings", ROUTING)
        self.assertEqual((created["strategy"], created["trafficRate"]), ("split", 100.0))

    def test_listSorted(self) -> None:
        """
        A collection lists every resource of its kind, sorted by name.
        """
        for name in ["b", "c", "a"]:
            self.call("PUT", f"/servers/{name}", {"addr": "127.0.0.1:80"})
        code, _, listed = self.call("GET", "/servers")
        self.assertEqual(code, 200)
        self.assertEqual([s["name"] for s in listed], ["a", "b", "c"])
        self.assertEqual(self.call("GET", "/clusters")[2], [])

    def test_putCreates(self) -> None:
        """
        A C{PUT} to a new name creates the resource (201, with C{Location});
        a body without a name takes the URL's.
        """
        code, headers, created = self.call("PUT", "/servers/new-1", {"addr": "10.0.0.1:80"})
        self.assertEqual(code, 201)
        self.assertEqual(created, dict(SERVER_FULL, name="new-1", addr="10.0.0.1:80"))
        self.assertEqual(headers.getRawHeaders(b"location"), [b"/api/v1/servers/new-1"])
        self.assertEqual(self.state().get("servers", "new-1"), created)

    def test_putNameMismatch(self) -> None:
        """
        A C{PUT} whose body names another resource than the URL is refused
        with 400, the error marked as a rule: the body fits the schema,
        which cannot tie it to the URL.
        """
        error = self.assertError(self.call("PUT", "/servers/x", SERVER), 400, "name")
        self.assertTrue(error["errors"][0]["rule"])
        self.assertEqual(self.snapshot()[0], 0)

    def test_putUnchanged(self) -> None:
        """
        Replacing a resource with the same content answers 200 and commits
        nothing.
        """
        self.seed("servers")
        code, _, result = self.call("PUT", "/servers/s1", SERVER_FULL)
        self.assertEqual((code, result), (200, SERVER_FULL))
        self.assertEqual(self.state().revision, 1)

    def test_postExisting(self) -> None:
        """
        C{POST} of a name that exists is a 409 and changes nothing.
        """
        self.seed("servers")
        before = self.snapshot()
        self.assertError(
            self.call("POST", "/servers", dict(SERVER, addr="10.0.0.1:1")), 409, "name"
        )
        self.assertEqual(self.snapshot(), before)

    def test_deleteMissing(self) -> None:
        """
        Deleting a resource that does not exist is a 404.
        """
        self.assertError(self.call("DELETE", "/clusters/nope"), 404)

    def test_healthz(self) -> None:
        """
        C{GET /healthz} needs no token.
        """
        code, _, result = self.call("GET", "/healthz", token=None, base="http://admin.example")
        self.assertEqual((code, result), (200, {"status": "ok"}))

    def test_proxiesAndStatsDefaults(self) -> None:
        """
        Without providers, C{/proxies} is an empty list and C{/stats} an
        empty object.
        """
        self.assertEqual(self.call("GET", "/proxies")[:3:2], (200, []))
        self.assertEqual(self.call("GET", "/stats")[:3:2], (200, {}))

    def test_proxiesAndStats(self) -> None:
        """
        C{/proxies} and C{/stats} answer what their providers give, as a
        value or a Deferred.
        """
        proxies = [{"address": "127.0.0.1:8080", "version": "1.0", "startedAt": 5.0}]
        stats = {"apis": {"a1": {"requests": 3}}}
        self.stub = StubTreq(
            self.makeAPI(proxies=lambda: succeed(proxies), stats=lambda: stats).resource()
        )
        self.assertEqual(self.call("GET", "/proxies")[:3:2], (200, proxies))
        self.assertEqual(self.call("GET", "/stats")[:3:2], (200, stats))

    def test_statsNotJSON(self) -> None:
        """
        A stats provider that gives something JSON cannot hold makes a JSON
        500, logged.
        """
        self.stub = StubTreq(self.makeAPI(stats=lambda: {"when": object()}).resource())
        code, _, result = self.call("GET", "/stats")
        self.assertEqual((code, result), (500, {"error": "internal error"}))
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)


class BadInputTests(APITestCase):
    """
    Invalid payloads are answered 400 with the field at fault, and change
    nothing.
    """

    def setUp(self) -> None:
        super().setUp()
        self.seed("routings")
        self.before = self.snapshot()

    def tearDown(self) -> None:
        self.assertEqual(self.snapshot(), self.before)

    def test_wrongType(self) -> None:
        """
        A field of the wrong type names that field.
        """
        error = self.assertError(
            self.call("PUT", "/servers/s1", dict(SERVER, weight="heavy")), 400, "weight"
        )
        self.assertIn("integer", error["error"])
        self.assertError(
            self.call("POST", "/clusters", {"name": "c2", "servers": "s1"}), 400, "servers"
        )

    def test_unknownField(self) -> None:
        """
        An unknown field is refused, by name.
        """
        self.assertError(self.call("PUT", "/servers/s1", dict(SERVER, wieght=3)), 400, "wieght")

    def test_badAddr(self) -> None:
        """
        A server address that is not host:port is refused.
        """
        self.assertError(self.call("PUT", "/servers/s1", dict(SERVER, addr="nohost")), 400, "addr")
        self.assertError(self.call("PUT", "/servers/s1", dict(SERVER, addr="h:99999")), 400, "addr")

    def test_badURLPattern(self) -> None:
        """
        A URL pattern that does not parse is refused.
        """
        self.assertError(
            self.call("PUT", "/apis/a1", dict(API, urlPattern="/a/{")), 400, "urlPattern"
        )

    def test_badRegex(self) -> None:
        """
        A routing condition with an invalid regular expression is refused
        with 400 naming the condition's value, marked as a rule (a string,
        as the schema wants, but not a regular expression).
        """
        body = dict(
            ROUTING, conditions=[{"source": "query", "name": "q", "op": "match", "value": "("}]
        )
        error = self.assertError(self.call("PUT", "/routings/r1", body), 400, "conditions[0].value")
        self.assertIn("regular expression", error["error"])
        self.assertTrue(error["errors"][0]["rule"])

    def test_badNestedField(self) -> None:
        """
        A bad field inside a list names its path.
        """
        body = dict(API, nodes=[{"cluster": "c1", "timeout": -1}])
        self.assertError(self.call("PUT", "/apis/a1", body), 400, "nodes[0].timeout")

    def test_missingName(self) -> None:
        """
        A C{POST} without a name is refused.
        """
        self.assertError(self.call("POST", "/servers", {"addr": "1.2.3.4:5"}), 400, "name")

    def test_badName(self) -> None:
        """
        A name with characters outside letters, digits, C{-_.} is refused.
        """
        self.assertError(self.call("POST", "/servers", dict(SERVER, name="a b")), 400, "name")
        self.assertError(self.call("PUT", "/servers/a%20b", {"addr": "1.2.3.4:5"}), 400, "name")

    def test_dotNames(self) -> None:
        """
        C{.} and C{..} are refused as names (no URL reaches them: they are
        dot segments), with the rule in the message, in a batch too.  (Names
        holding dots among other characters: L{test_validation.DotNameTests}.)
        """
        for name in (".", ".."):
            code, _, body = self.call("POST", "/servers", dict(SERVER, name=name))
            self.assertEqual((code, body["field"]), (400, "name"), body)
            self.assertIn("not . or ..", body["error"])
        code, _, body = self.batch([{"op": "delete", "kind": "servers", "name": ".."}])
        self.assertEqual((code, body["field"]), (400, "changes[0].name"), body)

    def batch(self, changes: Any) -> Tuple[int, Any, Any]:
        return self.call("POST", "/batch", {"changes": changes})

    def test_invalidJSON(self) -> None:
        """
        A body that is not JSON is refused with C{invalid JSON}.
        """
        for raw in [b"{", b"", b"\xff\xfe{}", b'{"weight": NaN}']:
            error = self.assertError(self.call("PUT", "/servers/s1", raw=raw), 400, "")
            self.assertTrue(error["error"].startswith("invalid JSON"), (raw, error))

    def test_duplicateKeys(self) -> None:
        """
        A key given twice in one object (parsers disagree on which wins) is
        refused, at any depth, and nothing is stored; the same key in two
        objects is not a duplicate (here the inner one is refused as a
        field healthCheck does not have, nothing else).
        """
        for raw in [
            b'{"name": "n1", "addr": "127.0.0.1:1", "name": "n2"}',
            b'{"addr": "127.0.0.1:1", "healthCheck": {"path": "/a", "path": "/b"}}',
        ]:
            error = self.assertError(self.call("POST", "/servers", raw=raw), 400, "")
            self.assertIn("is given twice in an object", error["error"])
        # (Nothing stored: the class's tearDown compares the store.)
        raw = b'{"name": "s1", "addr": "127.0.0.1:1", "healthCheck": {"path": "/", "name": "s1"}}'
        error = self.assertError(self.call("PUT", "/servers/s1", raw=raw), 400, "healthCheck.name")
        self.assertNotIn("twice", error["error"])

    def test_notAnObject(self) -> None:
        """
        A JSON body that is not an object is refused.
        """
        for body in [[SERVER], "s1", 3]:
            self.assertError(self.call("PUT", "/servers/s1", body), 400, "")

    def test_tooLarge(self) -> None:
        """
        A body over the limit is answered 413, whether it announces its
        length or is sent chunked.
        """
        resource = self.makeAPI(maxBodySize=100).resource()
        self.stub = StubTreq(resource)
        big = dict(SERVER, addr="127.0.0.1:" + "1" * 200)
        self.assertError(self.call("PUT", "/servers/s1", big), 413)
        response = self.chunkedPut(resource, json.dumps(big).encode())
        self.assertTrue(response.startswith(b"HTTP/1.1 413 "), response)
        self.assertIn(b"larger than 100 bytes", response)
        response = self.chunkedPut(resource, json.dumps(SERVER).encode())
        self.assertTrue(response.startswith(b"HTTP/1.1 200 "), response)

    def chunkedPut(self, resource, body: bytes) -> bytes:
        """
        Send C{PUT /api/v1/servers/s1} with a chunked body (no
        C{Content-Length}) over a real HTTP channel.

        @return: the raw response.
        """
        channel = Site(resource, reactor=self.clock).buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in [body[:10], body[10:]])
        channel.dataReceived(
            b"PUT /api/v1/servers/s1 HTTP/1.1\r\nHost: admin\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
        )
        channel.connectionLost(None)
        return transport.value()


class QueryParameterTests(APITestCase):
    """
    A query parameter a route does not take is refused, before anything is
    done, naming it and what the route takes.
    """

    def test_guessedDryRun(self) -> None:
        """
        C{PUT /servers/s2?dryRun=true} is a 400 naming C{dryRun} and
        C{wait}, and commits nothing (it used to answer 200 and commit); so
        is a C{POST}, a C{DELETE}, a batch and a whole configuration.
        """
        self.seed("servers")
        before = self.snapshot()
        for method, path, body in [
            ("PUT", "/servers/s2?dryRun=true", {"addr": "127.0.0.1:19002"}),
            ("POST", "/servers?wait=workers&dryRun=1", dict(SERVER, name="s2")),
            ("DELETE", "/servers/s1?dryRun", None),
            ("POST", "/batch?dryRun=true", {"changes": []}),
            ("PUT", "/config?dryRun=true", {"servers": []}),
        ]:
            code, _, answer = self.call(method, path, body)
            self.assertEqual(code, 400, answer)
            self.assertEqual(answer["field"], "dryRun")
            self.assertEqual(
                answer["error"],
                f"unknown query parameter 'dryRun': {method} /api/v1{path.split('?')[0]}"
                " takes only wait",
            )
        self.assertEqual(self.snapshot(), before)

    def test_reads(self) -> None:
        """
        Reads take no query parameter: C{wait} and anything else on a
        C{GET} is refused, on the public routes too.
        """
        self.seed("servers")
        for path, name in [
            ("/servers?wait=proxies", "wait"),
            ("/servers/s1?fields=addr", "fields"),
            ("/stats?api=a1", "api"),
            ("/proxies?x", "x"),
            ("/config?revision=1", "revision"),
            ("/openapi.json?v=1", "v"),
        ]:
            code, _, answer = self.call("GET", path)
            self.assertEqual((code, answer.get("field")), (400, name), (path, answer))
            self.assertTrue(answer["error"].endswith(" takes none"), answer)
        code, _, answer = self.call(
            "GET", "/healthz?probe=1", token=None, base="http://admin.example"
        )
        self.assertEqual((code, answer.get("field")), (400, "probe"), answer)

    def test_errorsFirst(self) -> None:
        """
        A path that does not exist is a 404, a method a path does not take
        a 405, whatever the query.
        """
        code, _, _ = self.call("GET", "/nothing?dryRun=true")
        self.assertEqual(code, 404)
        code, headers, _ = self.call("PATCH", "/servers/s1?dryRun=true", {"addr": "1.2.3.4:5"})
        self.assertEqual(code, 405)
        self.assertEqual(headers.getRawHeaders(b"allow"), [b"DELETE, GET, HEAD, PUT"])

    def test_unauthorizedFirst(self) -> None:
        """
        A caller without the token learns nothing from a parameter: 401.
        """
        code, _, _ = self.call("PUT", "/servers/s2?dryRun=true", {"addr": "1.2.3.4:5"}, token=None)
        self.assertEqual(code, 401)

    def test_metrics(self) -> None:
        """
        C{/metrics} takes no query parameter either.
        """
        from twisted.web.resource import Resource

        self.stub = StubTreq(self.makeAPI(metrics=Resource()).resource())
        code, _, answer = self.call("GET", "/metrics?name[]=x", base="http://admin.example")
        self.assertEqual((code, answer.get("field")), (400, "name[]"), answer)

    def test_takenStillWork(self) -> None:
        """
        C{?wait=workers} and C{?wait=proxies} still work on every write.
        """
        code, _, body = self.call("POST", "/servers?wait=workers", SERVER)
        self.assertEqual(code, 201, body)
        code, _, body = self.call("PUT", "/servers/s1?wait=proxies", dict(SERVER, weight=2))
        self.assertEqual(code, 200, body)
        code, _, body = self.call("POST", "/batch?wait=proxies", {"changes": []})
        self.assertEqual(code, 200, body)
        code, _, body = self.call("DELETE", "/servers/s1?wait=workers")
        self.assertEqual(code, 204, body)


class NotFoundTests(APITestCase):
    """
    Unknown paths and methods get JSON errors.
    """

    def test_unknownKind(self) -> None:
        """
        An unknown kind, item or path under C{/api/v1} is a JSON 404.
        """
        for method, path in [
            ("GET", "/widgets"),
            ("POST", "/widgets"),
            ("GET", "/widgets/x"),
            ("GET", "/servers/x"),
            ("GET", "/servers/x/y"),
            ("GET", ""),
            ("GET", "/proxies/x"),
        ]:
            self.assertError(self.call(method, path), 404)
        self.assertError(self.call("GET", "/nope", base="http://admin.example"), 404)

    def test_methodNotAllowed(self) -> None:
        """
        A method a path does not take is a JSON 405 with C{Allow}.
        """
        for method, path, allowed in [
            ("PATCH", "/servers/s1", b"DELETE, GET, HEAD, PUT"),
            ("DELETE", "/servers", b"GET, HEAD, POST"),
            ("POST", "/proxies", b"GET, HEAD"),
            ("PUT", "/stats", b"GET, HEAD"),
        ]:
            result = self.call(method, path)
            self.assertError(result, 405)
            self.assertEqual(result[1].getRawHeaders(b"allow"), [allowed])


class AuthTests(APITestCase):
    """
    Every C{/api/v1} route needs the bearer token.
    """

    def assertUnauthorized(self, result) -> None:
        self.assertError(result, 401)
        self.assertEqual(result[1].getRawHeaders(b"www-authenticate"), [b'Bearer realm="gateway"'])

    def test_missingOrWrong(self) -> None:
        """
        No token, a wrong token or another scheme is a 401 with
        C{WWW-Authenticate}, on every route, known or not, and changes nothing.
        """
        for token in [None, "wrong", TOKEN + "x", ""]:
            for method, path, body in [
                ("GET", "/servers", None),
                ("POST", "/servers", SERVER),
                ("PUT", "/servers/s1", SERVER),
                ("DELETE", "/servers/s1", None),
                ("GET", "/servers/s1", None),
                ("GET", "/proxies", None),
                ("GET", "/stats", None),
                ("GET", "/widgets", None),
                ("PATCH", "/servers/s1", None),
            ]:
                self.assertUnauthorized(self.call(method, path, body, token=token))
        self.assertUnauthorized(
            self.call("GET", "/servers", token=None, headers={"Authorization": "Basic " + TOKEN})
        )
        self.assertEqual(self.snapshot()[0], 0)

    def test_noField(self) -> None:
        """
        A 401 is about no field of the request: its JSON has no C{field}
        key (not an empty one).
        """
        self.assertError(self.call("GET", "/servers", token="wrong"), 401, field="")

    def test_right(self) -> None:
        """
        The right token passes, whatever the case of the scheme.
        """
        self.assertEqual(self.call("GET", "/servers")[0], 200)
        result = self.call(
            "GET", "/servers", token=None, headers={"Authorization": "bearer " + TOKEN}
        )
        self.assertEqual(result[0], 200)

    def test_noToken(self) -> None:
        """
        An API made without a token needs no credentials.
        """
        self.token = None
        self.stub = StubTreq(self.makeAPI().resource())
        self.assertEqual(self.call("POST", "/servers", SERVER, token=None)[0], 201)


class ReferenceTests(APITestCase):
    """
    References between resources: no dangling reference can be created, and
    nothing still referenced can be deleted.
    """

    def test_danglingReferences(self) -> None:
        """
        A resource naming one that does not exist is a 409 naming the field,
        and nothing is stored.
        """
        self.seed("servers")
        error = self.assertError(
            self.call("POST", "/clusters", {"name": "c1", "servers": ["s1", "ghost"]}),
            409,
            "servers[1]",
        )
        self.assertIn("ghost", error["error"])
        self.seed("clusters")
        self.assertError(
            self.call("PUT", "/apis/a1", dict(API, nodes=[{"cluster": "nope"}])),
            409,
            "nodes[0].cluster",
        )
        self.assertError(self.call("POST", "/routings", dict(ROUTING, api="nope")), 409, "api")
        self.assertError(
            self.call("POST", "/routings", dict(ROUTING, api=None, cluster="nope")), 409, "cluster"
        )
        self.assertEqual(self.snapshot()[0], 2)

    def test_deleteUsed(self) -> None:
        """
        Deleting a server or cluster still in use is a 409 that names its
        users and the fields that refer to it; once unused it can go.
        """
        self.seed("routings")
        before = self.snapshot()
        error = self.assertError(self.call("DELETE", "/servers/s1"), 409, "clusters/c1:servers[0]")
        self.assertIn("clusters/c1", error["error"])
        error = self.assertError(self.call("DELETE", "/clusters/c1"), 409)
        self.assertEqual(
            error["users"],
            [
                {"kind": "apis", "name": "a1", "field": "nodes[0].cluster"},
                {"kind": "routings", "name": "r1", "field": "cluster"},
            ],
        )
        self.assertIn("apis/a1", error["error"])
        self.assertIn("routings/r1", error["error"])
        self.assertError(self.call("DELETE", "/apis/a1"), 409, "routings/r1:api")
        self.assertEqual(self.snapshot(), before)
        for kind, name in [
            ("routings", "r1"),
            ("apis", "a1"),
            ("clusters", "c1"),
            ("servers", "s1"),
        ]:
            self.assertEqual(self.call("DELETE", f"/{kind}/{name}")[0], 204)


class ValidateHookTests(APITestCase):
    """
    The C{validate} hook sees the proposed catalog and can refuse a write.
    """

    def useHook(self, hook) -> None:
        self.stub = StubTreq(self.makeAPI(validate=hook).resource())

    def test_seesProposedCatalog(self) -> None:
        """
        The hook is called with the whole catalog as it would be after the
        write, for puts and deletes.
        """
        self.seed("servers")
        seen: List[Catalog] = []
        self.useHook(seen.append)
        self.call("POST", "/clusters", CLUSTER)
        self.assertEqual(sorted(seen[0].servers), ["s1"])
        self.assertEqual(seen[0].clusters["c1"].servers, ("s1",))
        self.call("DELETE", "/clusters/c1")
        self.assertEqual(dict(seen[1].clusters), {})

    def test_errorsMapped(self) -> None:
        """
        A L{ValidationError} from the hook is a 400 on a write, marked as a
        rule (the resource fits the schema but cannot be compiled), and a
        409 on a delete (what
        remains would not compile); a reference error or another
        L{ValueError} (a route conflict) a 409; the store is unchanged in
        every case.
        """
        self.seed("servers")
        before = self.snapshot()

        def raising(error):
            def hook(catalog):
                raise error

            return hook

        for error, code, deleteCode, field in [
            (
                ValidationError("filters[0].name", "no filter plugin 'x'"),
                400,
                409,
                "filters[0].name",
            ),
            (ModelReferenceError("nodes[0].cluster", "gone"), 409, 409, "nodes[0].cluster"),
            (ValueError("GET /a conflicts with api b"), 409, 409, ""),
        ]:
            self.useHook(raising(error))
            result = self.assertError(
                self.call("PUT", "/servers/s2", dict(SERVER, name="s2")), code, field
            )
            self.assertIn(str(error.args[0]).split(": ")[-1], result["error"])
            if code == 400:
                self.assertEqual(
                    result["errors"], [{"field": field, "error": error.message, "rule": True}]
                )
            self.assertError(self.call("DELETE", "/servers/s1"), deleteCode, field)
        self.useHook(lambda catalog: fail(ValueError("later")))
        self.assertError(self.call("DELETE", "/servers/s1"), 409, "")
        self.assertEqual(self.snapshot(), before)

    def test_unexpectedError(self) -> None:
        """
        Any other exception is a JSON 500 saying C{internal error}, and is
        logged.
        """
        self.useHook(lambda catalog: 1 / 0)
        code, _, result = self.call("POST", "/servers", SERVER)
        self.assertEqual((code, result), (500, {"error": "internal error"}))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(self.snapshot()[0], 0)

    def test_referencesCheckedWithAnyHook(self) -> None:
        """
        A hook that accepts everything does not let a dangling reference or
        the deletion of a used resource through.
        """
        self.useHook(lambda catalog: None)
        self.assertError(self.call("POST", "/clusters", CLUSTER), 409, "servers[0]")
        self.seed("clusters")
        self.assertError(self.call("DELETE", "/servers/s1"), 409, "clusters/c1:servers[0]")

    def test_defaultChecksWholeCatalog(self) -> None:
        """
        Without a hook, the whole catalog's references are checked.
        """
        self.store.commit([Change("clusters", "old", {"name": "old", "servers": ["gone"]})], 0)
        self.assertError(self.call("POST", "/servers", SERVER), 409, "servers[0]")


class RacingStore(FileStore):
    """
    A store where another writer commits just before each of this API's
    first C{races} commits, so that they fail with L{ConflictError}.
    """

    races = 1
    commits = 0
    rival: Optional[Change] = None

    def commit(self, changes, baseRevision):
        self.commits += 1
        if self.commits <= self.races:
            state = self.successResult(self.load())
            rival = self.rival or Change(
                "servers", f"rival{self.commits}", {"name": f"rival{self.commits}", "addr": "h:1"}
            )
            FileStore.commit(self, [rival], state.revision)
        return FileStore.commit(self, changes, baseRevision)

    @staticmethod
    def successResult(d):
        result = []
        d.addCallback(result.append)
        return result[0]


class ConcurrencyTests(APITestCase):
    """
    A write that loses a race with another writer runs again from the start.
    """

    def makeStore(self) -> FileStore:
        return RacingStore(None)

    def test_retry(self) -> None:
        """
        After a conflict the write is tried again on the new state and both
        writes are kept.
        """
        code, _, created = self.call("POST", "/servers", SERVER)
        self.assertEqual((code, created), (201, SERVER_FULL))
        state = self.state()
        self.assertEqual(state.revision, 2)
        self.assertEqual(sorted(state.resources["servers"]), ["rival1", "s1"])
        self.assertEqual(self.store.commits, 2)

    def test_retryRechecks(self) -> None:
        """
        The retried write is checked against the new state: a C{POST} whose
        name the rival took meanwhile is a 409.
        """
        self.store.rival = Change("servers", "s1", dict(SERVER, addr="10.9.9.9:9"))
        self.assertError(self.call("POST", "/servers", SERVER), 409, "name")
        self.assertEqual(self.state().get("servers", "s1")["addr"], "10.9.9.9:9")

    def test_giveUp(self) -> None:
        """
        After too many lost races the API answers 409 asking to retry.
        """
        self.store.races = 100
        code, _, result = self.call("PUT", "/servers/s1", SERVER)
        self.assertEqual((code, result), (409, {"error": "concurrent modification, retry"}))
        self.assertEqual(self.store.commits, AdminAPI.maxRetries + 1)
        self.assertIsNone(self.state().get("servers", "s1"))


class BrokenStore(FileStore):
    """
    A store whose reads or writes fail with L{StoreError}.
    """

    failLoad = False
    failCommit = False

    def load(self):
        if self.failLoad:
            return fail(StoreError("etcd unreachable"))
        return FileStore.load(self)

    def commit(self, changes, baseRevision):
        if self.failCommit:
            return fail(StoreError("disk full"))
        return FileStore.commit(self, changes, baseRevision)


class StoreOutageTests(APITestCase):
    """
    A store that cannot be read or written makes the API answer 503.
    """

    def makeStore(self) -> FileStore:
        return BrokenStore(None)

    def test_loadFails(self) -> None:
        """
        Reads and writes answer 503 when the store cannot be read.
        """
        self.store.failLoad = True
        for method, path, body in [
            ("GET", "/servers", None),
            ("GET", "/servers/s1", None),
            ("PUT", "/servers/s1", SERVER),
            ("DELETE", "/servers/s1", None),
        ]:
            error = self.assertError(self.call(method, path, body), 503, "")
            self.assertIn("etcd unreachable", error["error"])

    def test_commitFails(self) -> None:
        """
        A write answers 503 when the store cannot be written, and the store
        is unchanged.
        """
        self.store.failCommit = True
        self.assertError(self.call("POST", "/servers", SERVER), 503)
        self.store.failCommit = False
        self.assertEqual(self.snapshot()[0], 0)

    def test_invalidStoredResource(self) -> None:
        """
        A resource in the store that this gateway cannot parse makes writes
        answer a JSON 500 naming it, not an HTML traceback.
        """
        self.store.commit([Change("servers", "bad", {"name": "bad", "addr": 3})], 0)
        error = self.assertError(self.call("POST", "/servers", SERVER), 500, "servers/bad:addr")
        self.assertIn("invalid resource", error["error"])
        self.assertEqual(self.call("GET", "/servers/bad")[0], 200)
