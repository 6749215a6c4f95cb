"""
The OpenAPI document of the admin API: L{gateway.admin.openapi}.

The document must be valid OpenAPI 3.0, document every route of the admin's
Klein app, carry schemas generated from the model, and hold against the
real admin: schemathesis sends every documented operation, with valid and
invalid payloads, to an admin served on 127.0.0.1, and checks that no
answer is a 5xx and every answer conforms to the document (status, content
type, headers, body schema).
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Set, Tuple

import pytest
from harness import HOST, Process, _spawn, freePort, request, waitFor
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from gateway.admin.api import AdminAPI
from gateway.admin.openapi import (
    EXAMPLES,
    KIND_NAMES,
    acceptNulls,
    openAPIDocument,
    openAPIResource,
    toOpenAPI30,
)
from gateway.model.resources import RESOURCE_CLASSES
from gateway.model.schema import jsonSchema

try:
    # Imported when the tests are collected, not in a test: it imports
    # urllib3, which binds a socket to ::1 to see whether IPv6 works (no
    # traffic), and a unit test may not open sockets (tests/guard.py).
    import openapi_spec_validator
except ImportError:  # pragma: no cover
    openapi_spec_validator = None

_METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}
_CONVERTER = re.compile(r"<(?:(\w+)(?:\((.*?)\))?:)?(\w+)>")


def expandRule(rule: str) -> List[str]:
    """
    @return: the OpenAPI paths of a werkzeug rule: C{<name>} becomes
        C{{name}}, and an C{any(a, b)} converter one path per choice.
    """
    paths = [""]
    position = 0
    for match in _CONVERTER.finditer(rule):
        literal = rule[position : match.start()]
        converter, arguments, variable = match.groups()
        if converter == "any":
            choices = [c.strip().strip("'\"") for c in arguments.split(",")]
            paths = [p + literal + c for p in paths for c in choices]
        else:
            paths = [p + literal + "{" + variable + "}" for p in paths]
        position = match.end()
    return [p + rule[position:] for p in paths]


def adminRoutes() -> Iterator[Tuple[str, str]]:
    """
    @return: C{(path, method)} for every route of the admin's Klein app
        (HEAD and OPTIONS, which werkzeug adds by itself, left out).
    """
    for rule in AdminAPI.app.url_map.iter_rules():
        for path in expandRule(rule.rule):
            for method in rule.methods or ():
                if method not in ("HEAD", "OPTIONS"):
                    yield path, method.lower()


def _isWebUI(path: str) -> bool:
    # The web UI's pages and assets are not part of the REST API.
    return not (path.startswith("/api/") or path in ("/healthz", "/metrics"))


class DocumentTests(SynchronousTestCase):
    def test_valid_openapi(self) -> None:
        """
        The document is valid OpenAPI 3.0.3, as openapi-spec-validator
        checks it.
        """
        if openapi_spec_validator is None:
            pytest.skip("openapi-spec-validator is not installed (a test extra, setup.cfg)")
        validator = openapi_spec_validator
        document = openAPIDocument()
        self.assertEqual(document["openapi"], "3.0.3")
        validator.validate(document)

    def test_json(self) -> None:
        """
        The document is plain JSON (what the resource serves), and the
        resource serves it with a JSON content type.
        """
        document = openAPIDocument()
        self.assertEqual(json.loads(json.dumps(document, allow_nan=False)), document)
        request = DummyRequest([b"api", b"v1", b"openapi.json"])
        body = openAPIResource().render(request)
        self.assertEqual(json.loads(body), document)
        self.assertEqual(
            request.responseHeaders.getRawHeaders(b"content-type"), [b"application/json"]
        )

    def test_every_route_documented(self) -> None:
        """
        Every route of the admin's Klein app (every kind of the any()
        converter, every method) is an operation of the document; and every
        documented operation under /api/v1 is a route of the app, except the
        two (openapi.json, metrics) served next to it until the app routes
        them.
        """
        paths = openAPIDocument()["paths"]
        routes: Set[Tuple[str, str]] = set()
        for path, method in adminRoutes():
            routes.add((path, method))
            if _isWebUI(path):
                continue
            self.assertIn(path, paths, f"{method.upper()} {path} is not documented")
            self.assertIn(method, paths[path], f"{method.upper()} {path} is not documented")
        self.assertIn(("/api/v1/servers/{name}", "put"), routes)
        documented = {
            (path, method) for path, item in paths.items() for method in item if method in _METHODS
        }
        servedBeside = {("/api/v1/openapi.json", "get"), ("/metrics", "get")}
        self.assertEqual(documented - routes - servedBeside, set())

    def test_schemas_generated_from_model(self) -> None:
        """
        The resource schemas are the model's own (L{jsonSchema}), in
        OpenAPI 3.0 form; the request variants only relax them (nulls for
        defaults, the name of a PUT).
        """
        schemas = openAPIDocument()["components"]["schemas"]
        for kind, cls in RESOURCE_CLASSES.items():
            name = KIND_NAMES[kind][0]
            self.assertEqual(schemas[name], toOpenAPI30(jsonSchema(cls)))
            self.assertEqual(schemas[name + "Create"], acceptNulls(schemas[name]))
            self.assertIn("name", schemas[name + "Create"]["required"])
            self.assertNotIn("name", schemas[name + "Replace"].get("required", ()))

    def test_exclusive_minimum(self) -> None:
        """
        A numeric exclusiveMinimum (JSON Schema draft 6 and later) becomes
        OpenAPI 3.0's boolean form, nested schemas included.
        """
        converted = toOpenAPI30(
            {"type": "object", "properties": {"t": {"type": "number", "exclusiveMinimum": 0}}}
        )
        self.assertEqual(
            converted["properties"]["t"],
            {"type": "number", "minimum": 0, "exclusiveMinimum": True},
        )
        schemas = openAPIDocument()["components"]["schemas"]
        breaker = schemas["API"]["properties"]["circuitBreaker"]["properties"]
        rate = breaker["failureRateToOpen"]
        self.assertIs(rate["exclusiveMinimum"], True)
        self.assertEqual(rate["minimum"], 0)

    def test_accept_nulls(self) -> None:
        """
        acceptNulls makes every optional property nullable, in nested
        objects and array items too, and leaves required ones alone.
        """
        schema = {
            "type": "object",
            "required": ["a"],
            "properties": {
                "a": {"type": "string"},
                "b": {"type": "integer"},
                "c": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["x"],
                        "properties": {"x": {"type": "string"}, "y": {"type": "string"}},
                    },
                },
            },
        }
        original = copy.deepcopy(schema)
        relaxed = acceptNulls(schema)
        self.assertEqual(schema, original)
        self.assertNotIn("nullable", relaxed["properties"]["a"])
        self.assertTrue(relaxed["properties"]["b"]["nullable"])
        self.assertTrue(relaxed["properties"]["c"]["nullable"])
        item = relaxed["properties"]["c"]["items"]
        self.assertNotIn("nullable", item["properties"]["x"])
        self.assertTrue(item["properties"]["y"]["nullable"])

    def test_operations_have_responses(self) -> None:
        """
        Every operation (/metrics too) but openapi.json requires the bearer
        token and documents 401; writes document 400, 409, 413, 415, 500
        and 503; item reads and deletes document 404 (a PUT creates:
        never 404); errors use the Error schema.
        """
        document = openAPIDocument()
        self.assertEqual(
            document["components"]["securitySchemes"]["bearerAuth"],
            {
                "type": "http",
                "scheme": "bearer",
                "description": "the admin token of the gateway's config file",
            },
        )
        for path, item in document["paths"].items():
            for method, operation in item.items():
                if method not in _METHODS:
                    continue
                responses = operation["responses"]
                public = operation.get("security") == []
                self.assertEqual(public, path in ("/healthz", "/readyz", "/api/v1/openapi.json"))
                if not public:
                    self.assertIn("401", responses, (path, method))
                if method in ("post", "put"):
                    for code in ("400", "409", "413", "415", "500", "503"):
                        self.assertIn(code, responses, (path, method))
                if "{name}" in path and method != "put":
                    self.assertIn("404", responses, (path, method))
        errors = document["components"]["responses"]
        for name in (
            "BadRequest",
            "Unauthorized",
            "NotFound",
            "Conflict",
            "MethodNotAllowed",
            "UnsupportedMediaType",
            "InternalError",
        ):
            schema = errors[name]["content"]["application/json"]["schema"]
            self.assertEqual(schema, {"$ref": "#/components/schemas/Error"})


class PropagationDocumentTests(SynchronousTestCase):
    """
    The document describes the revision and propagation headers and the
    C{wait} parameter of the writes.
    """

    def test_writes(self) -> None:
        """
        Every write takes C{wait} (C{workers} or C{proxies}); its success
        answers carry C{X-Gateway-Revision} and (but for an unchanged
        C{PUT}) C{X-Gateway-Propagation}; reads carry the revision.
        """
        paths = openAPIDocument()["paths"]
        for kind in ("certificates", "servers", "clusters", "apis", "routings"):
            collection = paths[f"/api/v1/{kind}"]
            item = paths[f"/api/v1/{kind}/{{name}}"]
            writes = [
                (collection["post"], "201", True),
                (item["put"], "201", True),
                (item["put"], "200", False),
                (item["delete"], "204", True),
            ]
            for operation, code, changed in writes:
                [wait] = [p for p in operation["parameters"] if p["name"] == "wait"]
                self.assertEqual(wait["in"], "query")
                self.assertEqual(wait["schema"]["enum"], ["workers", "proxies"])
                self.assertIn("400", operation["responses"])
                headers = operation["responses"][code]["headers"]
                self.assertTrue(headers["X-Gateway-Revision"]["required"])
                propagation = headers["X-Gateway-Propagation"]
                self.assertEqual(propagation["required"], changed)
                self.assertEqual(propagation["schema"]["enum"], ["complete", "incomplete"])
            for operation in (collection["get"], item["get"]):
                headers = operation["responses"]["200"]["headers"]
                self.assertTrue(headers["X-Gateway-Revision"]["required"])
        proxies = paths["/api/v1/proxies"]["get"]["responses"]["200"]
        self.assertIn("X-Gateway-Revision", proxies["headers"])


class QueryParameterTests(SynchronousTestCase):
    """
    Each operation takes the query parameters the document lists for it,
    and is refused (400, documented) one it does not list.
    """

    def test_documentedAndEnforced(self) -> None:
        """
        For every documented operation, through the admin's app: a
        parameter the document lists is taken (no answer names it at
        fault; the writes are sent without a body, so they fail on that
        instead); one it does not list is a 400 naming it, which the
        operation documents; C{wait} on a read is such a parameter.
        """
        from treq.testing import StubTreq
        from twisted.internet.task import Clock
        from twisted.web.resource import Resource

        from gateway.store.file import FileStore

        metrics = Resource()
        admin = AdminAPI(FileStore(None), None, reactor=Clock(), metrics=metrics)
        stub = StubTreq(admin.resource())
        document = openAPIDocument()
        checked = 0
        for path, item in document["paths"].items():
            for method, operation in item.items():
                if method not in _METHODS:
                    continue
                listed = [
                    p["name"]
                    for p in item.get("parameters", []) + operation.get("parameters", [])
                    if p["in"] == "query"
                ]
                url = "http://admin.example" + path.replace("{name}", "n1")
                self.assertIn("400", operation["responses"], (path, method))
                for name in listed:
                    value = operation["parameters"][0]["schema"]["enum"][0]
                    response = self.successResultOf(
                        stub.request(method.upper(), f"{url}?{name}={value}")
                    )
                    body = self.successResultOf(response.content())
                    answer = json.loads(body) if body.startswith(b"{") else {}
                    self.assertNotEqual(answer.get("field"), name, (path, method, answer))
                for name in ["dryRun"] + (["wait"] if not listed else []):
                    response = self.successResultOf(
                        stub.request(method.upper(), f"{url}?{name}=true")
                    )
                    answer = json.loads(self.successResultOf(response.content()))
                    self.assertEqual((response.code, answer.get("field")), (400, name), path)
                    takes = f"only {', '.join(listed)}" if listed else "none"
                    self.assertTrue(answer["error"].endswith(f" takes {takes}"), answer)
                    checked += 1
        self.assertEqual(checked, 60)


class ExpandRuleTests(SynchronousTestCase):
    def test_expand(self) -> None:
        """
        An any() converter gives one path per choice; other variables become
        OpenAPI path parameters.
        """
        self.assertEqual(
            expandRule("/api/v1/<any(servers, apis):kind>/<name>"),
            ["/api/v1/servers/{name}", "/api/v1/apis/{name}"],
        )
        self.assertEqual(expandRule("/healthz"), ["/healthz"])
        self.assertEqual(expandRule("/x/<path:rest>"), ["/x/{rest}"])


# -- schemathesis against a real admin ---------------------------------------------

#: An admin on 127.0.0.1: the real AdminAPI over an in-memory FileStore, with
#: validation by a real SnapshotManager, and real Stats, behind the admin's
#: own site; openapi.json and /metrics are served beside the Klein app
#: unless it routes them itself.
SERVER = r"""
import inspect
import sys

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.web.resource import Resource
import gateway
from gateway.admin.api import AdminAPI
from gateway.admin.openapi import openAPIResource
from gateway.filters import FilterRegistry
from gateway.model.limits import ADMIN_LIMITS
from gateway.process.sites import AdminSite
from gateway.telemetry.metrics import metricsResource
from gateway.routing.snapshot import SnapshotManager
from gateway.telemetry.stats import Stats
from gateway.store.file import FileStore

port, token = int(sys.argv[1]), sys.argv[2]
store = FileStore(None)
manager = SnapshotManager(FilterRegistry.fromPlugins(), reactor)
store.load().addCallback(manager.apply)
store.watch(manager.update)
stats = Stats(reactor)
stats.follow(manager)


def proxies():
    snapshot = manager.snapshot
    return [{"addr": "tcp:0", "version": gateway.__version__, "startedAt": "now",
             "revision": snapshot.revision if snapshot is not None else None, "ready": True}]


metrics = metricsResource(stats, manager, None, reactor)
extra = {}
if "metrics" in inspect.signature(AdminAPI).parameters:
    extra["metrics"] = metrics
admin = AdminAPI(store, token, validate=manager.validate, proxies=proxies,
                 stats=lambda: stats.snapshot(manager), reactor=reactor, **extra)
app = admin.resource()
routes = {rule.rule for rule in AdminAPI.app.url_map.iter_rules()}
beside = {}
if "/api/v1/openapi.json" not in routes:
    beside[b"/api/v1/openapi.json"] = openAPIResource()
if "/metrics" not in routes:
    beside[b"/metrics"] = metrics


class Root(Resource):
    isLeaf = True

    def render(self, request):
        return beside.get(request.path, app).render(request)


site = AdminSite(Root(), limits=ADMIN_LIMITS, reactor=reactor)
TCP4ServerEndpoint(reactor, port, interface="127.0.0.1").listen(site)
print("listening", port, flush=True)
reactor.run()
"""

TOKEN = "schemathesis-token"


@pytest.fixture(scope="module")
def adminURL(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """
    A real admin on a free loopback port, stopped after the module.
    """
    directory = tmp_path_factory.mktemp("admin")
    port = freePort()
    logPath = Path(directory) / "admin.log"
    process = Process(
        _spawn([sys.executable, "-c", SERVER, str(port), TOKEN], logPath, cwd=directory), logPath
    )
    url = f"http://{HOST}:{port}"

    def ready() -> bool:
        if not process.alive():
            raise AssertionError("the admin exited:\n" + process.output())
        try:
            return request("GET", url + "/healthz", timeout=1.0).status == 200
        except OSError:
            return False

    try:
        waitFor(ready, 15.0, what="the admin to listen")
        yield url
    finally:
        process.stop()


try:
    import schemathesis
    from hypothesis import HealthCheck, given, settings
except ImportError:  # pragma: no cover - e.g. on PyPy without jsonschema-rs
    schemathesis = None

if schemathesis is not None:
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        ignored_auth,
        negative_data_rejection,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )
    from schemathesis_hooks import valid_data_refused_only_for_a_rule

    #: How schema-invalid data may be refused.
    NEGATIVE_STATUSES = "400 401 403 404 405 406 409 413 415 428 429".split()

    #: What every answer is held to.
    CHECKS = [
        valid_data_refused_only_for_a_rule,
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        negative_data_rejection,
        ignored_auth,
    ]

    @pytest.fixture(scope="module")
    def adminSchema(adminURL: str) -> Any:
        """
        The document as the admin serves it, loaded by schemathesis, set to
        send the admin token.
        """
        schema = schemathesis.openapi.from_url(adminURL + "/api/v1/openapi.json")
        schema.config.update(base_url=adminURL, headers={"Authorization": f"Bearer {TOKEN}"})
        # As in RUN_CONFIG: a body over the admin's limit is refused with
        # 413, which schemathesis's default list of refusals lacks.
        schema.config.checks.negative_data_rejection.expected_statuses = NEGATIVE_STATUSES
        return schema

    def _call(schema: Any, method: str, path: str, name: Any = None, body: Any = None) -> Any:
        operation = schema[path][method]
        kwargs: dict = {}
        if name is not None:
            kwargs["path_parameters"] = {"name": name}
        if body is not None:
            kwargs["body"] = body
            kwargs["media_type"] = "application/json"
        auth = {"Authorization": f"Bearer {TOKEN}"}
        return operation.Case(**kwargs).call_and_validate(headers=auth, checks=CHECKS)

    @pytest.mark.integration
    def test_examples_round_trip(adminSchema: Any) -> None:
        """
        The document's examples are accepted by the real admin: each kind is
        created (201, Location), read back, replaced through PUT without a
        name (200) and listed, every answer conforming to the document; a
        cluster still in use cannot be deleted (409, with its users); the
        statistics and metrics then show the new API and server.  (The
        resources stay, so the fuzzing below also reads full ones.)
        """
        for kind in ("certificates", "servers", "clusters", "apis", "routings"):
            base = f"/api/v1/{kind}"
            example = EXAMPLES[kind]
            name = example["name"]
            created = _call(adminSchema, "POST", base, body=example)
            assert created.status_code == 201, created.text
            assert created.headers["location"] == [f"{base}/{name}"]
            stored = created.json()
            fetched = _call(adminSchema, "GET", base + "/{name}", name)
            assert (fetched.status_code, fetched.json()) == (200, stored)
            replacement = {k: v for k, v in example.items() if k != "name"}
            replaced = _call(adminSchema, "PUT", base + "/{name}", name, replacement)
            assert (replaced.status_code, replaced.json()) == (200, stored)
            listed = _call(adminSchema, "GET", base)
            assert stored in listed.json()
        refused = _call(adminSchema, "DELETE", "/api/v1/clusters/{name}", "users")
        assert refused.status_code == 409
        assert {"kind": "apis", "name": "get-user", "field": "nodes[0].cluster"} in (
            refused.json()["users"]
        )
        stats = _call(adminSchema, "GET", "/api/v1/stats").json()
        assert stats["apis"]["get-user"]["requests"] == 0
        assert stats["servers"]["users-1"]["addr"] == "10.0.0.11:8080"
        assert stats["servers"]["users-1"]["breaker"]["state"] == "closed"
        metrics = _call(adminSchema, "GET", "/metrics").text
        assert 'gateway_requests_total{api="get-user"} 0.0' in metrics
        # The certificate's key is write-only: in no answer.
        assert 'gateway_certificate_expiry_seconds{certificate="example"}' in metrics
        assert "key" not in stored_certificate(adminSchema)

    def stored_certificate(adminSchema: Any) -> Dict[str, Any]:
        answer = _call(adminSchema, "GET", "/api/v1/certificates/{name}", "example")
        assert answer.status_code == 200, answer.text
        certificate: Dict[str, Any] = answer.json()
        return certificate

    def _operations() -> List[Tuple[str, str]]:
        paths = openAPIDocument()["paths"]
        return [
            (path, method) for path, item in paths.items() for method in item if method in _METHODS
        ]

    @pytest.mark.integration
    @pytest.mark.parametrize("path, method", _operations())
    def test_admin_conforms(adminSchema: Any, path: str, method: str) -> None:
        """
        Every documented operation, with valid then invalid payloads and
        path parameters (about 30 examples in all): never a 5xx, and every
        answer conforms to the document (status, content type, headers,
        body schema); invalid input is refused, and the token is enforced.
        """
        operation = adminSchema[path][method.upper()]
        item = openAPIDocument()["paths"][path]
        modes = [GenerationMode.POSITIVE]
        if "parameters" in item or "requestBody" in item[method]:
            # Without any input, there is nothing to make invalid.
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=15,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def run(case: Any) -> None:
                case.call_and_validate(checks=CHECKS)

            run()

    #: The schemathesis run of the suite: every check, every phase (the
    #: stateful one included), a fixed number of examples per operation,
    #: deterministic generation (no seed, no database: the same cases each
    #: time).  About a minute on a 2-core machine (most of it the coverage
    #: phase, which the number of examples does not bound).
    RUN_EXAMPLES = 30

    #: Schema-valid data may get 400 for a rule the document states in
    #: words only (the descriptions of the fields and of the 400 answer),
    #: which JSON Schema cannot hold (a PUT's name is the URL's, a URL
    #: pattern names each parameter once...): the admin marks those errors
    #: C{"rule": true}, and the check of L{schemathesis_hooks} fails any
    #: other 400 to schema-valid data (the document would allow what the
    #: admin refuses as invalid).
    #: Schema-invalid data may also get 413: a list over its maxItems is a
    #: body over the admin's 1 MB.
    RUN_CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "429"]

[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "428", "429"]
"""

    @pytest.mark.integration
    def test_schemathesis_run(adminURL: str, tmp_path: Path) -> None:
        """
        C{schemathesis run} with every check and every phase, the stateful
        one included, against the real admin: no failure (no 5xx, every
        status, header and body as documented, schema-valid data never
        refused 400, schema-invalid data never accepted, authentication
        enforced, resources available after creation and gone after
        deletion).
        """
        config = tmp_path / "schemathesis.toml"
        config.write_text(RUN_CONFIG, encoding="utf-8")
        command = [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--config-file",
            str(config),
            "--no-color",
            "run",
            adminURL + "/api/v1/openapi.json",
            "--checks",
            "all",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--max-examples",
            str(RUN_EXAMPLES),
            "--generation-deterministic",
            "--workers",
            "1",
            "--request-timeout",
            "10",
            "--header",
            f"Authorization: Bearer {TOKEN}",
        ]
        env = dict(os.environ, SCHEMATHESIS_HOOKS="schemathesis_hooks")
        env["PYTHONPATH"] = os.pathsep.join(
            [str(Path(__file__).parent)]
            + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        )
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env, check=False
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-20000:]
        assert "Stateful" in output and "failures" not in output.lower(), output[-20000:]
        assert "valid_data_refused_only_for_a_rule" in output, output[-20000:]

else:  # pragma: no cover

    @pytest.mark.integration
    def test_admin_conforms() -> None:  # type: ignore[misc]
        """
        Skipped: schemathesis is not installed.
        """
        pytest.skip("schemathesis is not installed (a CPython-only test extra, setup.cfg)")


@pytest.mark.integration
def test_served_document_is_the_module_s(adminURL: str) -> None:
    """
    What the admin serves at /api/v1/openapi.json, without a token, is
    openAPIDocument().
    """
    response = request("GET", adminURL + "/api/v1/openapi.json")
    assert response.status == 200
    assert response.json() == json.loads(json.dumps(openAPIDocument()))
