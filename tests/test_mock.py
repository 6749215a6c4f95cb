"""
Mock responses (L{gateway.model.mock}, the proxy's
L{gateway.pipeline.resource.GatewayResource}) and the C{default} of an
optional aggregation node (L{gateway.pipeline.aggregate}), through the
whole proxy in memory (L{memorygateway}).
"""

from __future__ import annotations

from typing import Any, Dict, List

from memorygateway import MemoryGateway, Upstream
from twisted.plugin import IPlugin
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from gateway.filters import FilterRegistry
from gateway.interfaces import IFilter, IFilterFactory
from gateway.model.resources import parseResource
from gateway.model.schema import ValidationError, toJSON


def mockAPI(response: Dict[str, Any], **extra: Any) -> Dict[str, Any]:
    api = {"name": "m", "urlPattern": "/m", "response": response}
    api.update(extra)
    return api


@implementer(IFilter)
class Recorder:
    """
    A user's filter: it records what it sees, and answers 401 early to
    requests without C{X-Key}.
    """

    name = "recorder"

    def __init__(self) -> None:
        self.seen: List[Any] = []

    def before(self, context: Any) -> Any:
        from gateway.pipeline.exchange import EarlyResponse

        if not context.request.requestHeaders.hasHeader(b"x-key"):
            return EarlyResponse.error(401, "key required")
        self.seen.append("before")
        return None

    def after(self, context: Any, response: Any) -> None:
        self.seen.append(("after", response.code))
        response.headers.setRawHeaders(b"x-seen", [b"yes"])

    def error(self, context: Any, failure: Any) -> None:
        pass


@implementer(IPlugin, IFilterFactory)
class RecorderFactory:
    name = "recorder"
    description = "records"

    def __init__(self) -> None:
        self.made: List[Recorder] = []

    def makeFilter(self, config: Any, reactor: Any) -> Recorder:
        made = Recorder()
        self.made.append(made)
        return made


class ModelTests(SynchronousTestCase):
    """
    What an API's C{response} accepts.
    """

    def test_nodesOrResponse(self) -> None:
        """
        An API has nodes or a mock response: neither, or both, is refused
        naming the field.
        """
        error = self.assertRaises(
            ValidationError, parseResource, "apis", {"name": "a", "urlPattern": "/a"}
        )
        self.assertEqual(error.field, "nodes")
        error = self.assertRaises(
            ValidationError,
            parseResource,
            "apis",
            mockAPI({"body": "x"}, nodes=[{"cluster": "c"}]),
        )
        self.assertEqual(error.field, "response")
        api = parseResource("apis", mockAPI({}, nodes=[]))
        self.assertEqual(api.nodes, ())
        self.assertEqual(toJSON(api)["response"], {"status": 200, "headers": {}, "body": None})

    def test_refused(self) -> None:
        """
        A status out of range, a body on a 204 or 304, a managed header
        (C{Content-Length}) and a header named twice are refused naming the
        field.
        """
        cases = [
            ({"status": 99}, "response.status"),
            ({"status": 600}, "response.status"),
            ({"status": 204, "body": ""}, "response.body"),
            ({"status": 304, "body": {}}, "response.body"),
            ({"headers": {"Content-Length": "3"}}, "response.headers.Content-Length"),
            ({"headers": {"Transfer-Encoding": "chunked"}}, "response.headers.Transfer-Encoding"),
            ({"headers": {"X-A": "1", "x-a": "2"}}, "response.headers.x-a"),
            ({"headers": {"X-A": "a\nb"}}, "response.headers.X-A"),
        ]
        for response, field in cases:
            error = self.assertRaises(ValidationError, parseResource, "apis", mockAPI(response))
            self.assertEqual(error.field, field, response)
        parseResource("apis", mockAPI({"status": 204}))


class MockTests(SynchronousTestCase):
    """
    Mock responses served by the proxy.
    """

    def test_jsonBody(self) -> None:
        """
        A JSON body is sent as compact JSON, C{application/json}, with its
        length and headers; no backend is called.
        """
        gateway = MemoryGateway(
            [mockAPI({"status": 201, "headers": {"X-Mock": "yes"}, "body": {"ok": [1, "\u00e9"]}})]
        )
        answer = gateway.request("POST", "/m")
        self.assertEqual(answer.code, 201)
        self.assertEqual(answer.body, '{"ok":[1,"\u00e9"]}'.encode())
        self.assertEqual(answer.header("content-type"), "application/json")
        self.assertEqual(answer.header("content-length"), str(len(answer.body)))
        self.assertEqual(answer.header("x-mock"), "yes")
        self.assertEqual(gateway.client.sent, [])

    def test_otherBodies(self) -> None:
        """
        A string body is sent as it is, as C{text/plain; charset=utf-8}
        unless the headers name a C{Content-Type} (in any case); a JSON
        scalar is JSON; no body is an empty answer without a type; a 204
        has no C{Content-Length}; a C{HEAD} gets the head alone.
        """
        gateway = MemoryGateway(
            [
                mockAPI({"body": "caf\u00e9\n"}, name="text", urlPattern="/text"),
                mockAPI(
                    {"headers": {"content-TYPE": "text/csv"}, "body": "a,b"},
                    name="csv",
                    urlPattern="/csv",
                ),
                mockAPI({"body": 42}, name="num", urlPattern="/num"),
                mockAPI({"status": 404}, name="none", urlPattern="/none"),
                mockAPI({"status": 204}, name="empty", urlPattern="/empty"),
            ]
        )
        answer = gateway.request("GET", "/text")
        self.assertEqual(
            (answer.body, answer.header("content-type")),
            ("caf\u00e9\n".encode(), "text/plain; charset=utf-8"),
        )
        answer = gateway.request("GET", "/csv")
        self.assertEqual((answer.body, answer.headers["content-type"]), (b"a,b", ["text/csv"]))
        answer = gateway.request("GET", "/num")
        self.assertEqual((answer.body, answer.header("content-type")), (b"42", "application/json"))
        answer = gateway.request("GET", "/none")
        self.assertEqual(
            (answer.code, answer.body, answer.header("content-length")), (404, b"", "0")
        )
        self.assertIsNone(answer.header("content-type"))
        answer = gateway.request("GET", "/empty")
        self.assertEqual((answer.code, answer.body), (204, b""))
        self.assertIsNone(answer.header("content-length"))
        self.assertIsNone(answer.header("transfer-encoding"))
        answer = gateway.request("HEAD", "/text")
        self.assertEqual((answer.code, answer.body), (200, b""))
        self.assertEqual(answer.header("content-length"), str(len("caf\u00e9\n".encode())))

    def test_afterTheFilters(self) -> None:
        """
        The mock answers after every filter: a user's filter that refuses
        a request answers instead (an authenticated mock), one that lets
        it through sees the mock's answer in its C{after} hook and may
        change it; the API's rate limit and transform apply; every answer
        is counted in the stats.
        """
        factory = RecorderFactory()
        gateway = MemoryGateway(
            [
                mockAPI(
                    {"body": {"hello": "world"}},
                    filters=[{"name": "recorder"}],
                    rateLimit={"rate": 1, "burst": 2},
                    transform={"response": {"set": {"X-Client": "$clientIp"}}},
                )
            ],
            registry=FilterRegistry({"recorder": factory}),
        )
        recorder = factory.made[0]
        answer = gateway.request("GET", "/m")
        self.assertEqual((answer.code, answer.json()), (401, {"error": "key required"}))
        answer = gateway.request("GET", "/m", [("X-Key", "k")])
        self.assertEqual((answer.code, answer.json()), (200, {"hello": "world"}))
        self.assertEqual(answer.header("x-seen"), "yes")
        self.assertEqual(answer.header("x-client"), "192.0.2.10")
        self.assertEqual(recorder.seen, ["before", ("after", 200)])
        answer = gateway.request("GET", "/m", [("X-Key", "k")])
        self.assertEqual(answer.code, 429)
        self.assertEqual(gateway.client.sent, [])
        stats = gateway.stats.apis["m"]
        self.assertEqual(stats.requests, 3)
        self.assertEqual(stats.rejects["rateLimit"], 1)
        self.assertEqual(stats.rejects["other"], 1)

    def test_authenticated(self) -> None:
        """
        A mock API with the built-in C{auth} (key) answers 401 with a
        C{WWW-Authenticate} challenge without a key and 401 with a wrong
        one, and the mock's status, headers and body to a consumer's key;
        no backend is ever called.
        """
        key = "alice-key-0123456789abcdef"
        gateway = MemoryGateway(
            [
                mockAPI(
                    {"status": 202, "headers": {"X-Mock": "yes"}, "body": {"hello": "alice"}},
                    auth={"methods": ["key"]},
                )
            ],
            consumers=[{"name": "alice", "credentials": [{"type": "key", "key": key}]}],
        )
        answer = gateway.request("GET", "/m")
        self.assertEqual((answer.code, answer.json()), (401, {"error": "authentication required"}))
        self.assertIsNotNone(answer.header("www-authenticate"))
        self.assertIsNone(answer.header("x-mock"))
        answer = gateway.request("GET", "/m", [("apikey", "not-" + key)])
        self.assertEqual((answer.code, answer.json()), (401, {"error": "invalid credentials"}))
        answer = gateway.request("GET", "/m", [("apikey", key)])
        self.assertEqual(answer.code, 202)
        self.assertEqual(answer.json(), {"hello": "alice"})
        self.assertEqual(answer.header("content-type"), "application/json")
        self.assertEqual(answer.header("x-mock"), "yes")
        self.assertEqual(gateway.client.sent, [])
        stats = gateway.stats.apis["m"]
        self.assertEqual((stats.requests, stats.rejects["auth"]), (3, 2))

    def test_routingsIgnored(self) -> None:
        """
        A mock API answers itself even when the API had nodes before: a
        change to a mock takes effect at once, and back.
        """
        gateway = MemoryGateway([{"name": "m", "urlPattern": "/m", "nodes": [{"cluster": "c"}]}])
        self.assertEqual(gateway.request("GET", "/m").json(), {"ok": True})
        gateway.apply([mockAPI({"body": "mocked"})])
        self.assertEqual(gateway.request("GET", "/m").body, b"mocked")
        self.assertEqual(len(gateway.client.sent), 1)


class AggregationDefaultTests(SynchronousTestCase):
    """
    The C{default} of an optional aggregation node.
    """

    def test_defaultOnFailure(self) -> None:
        """
        A failed optional node with a C{default} gives that JSON under its
        attrName, and is still named in C{X-Gateway-Partial}; one without a
        default gives C{null}; a node that answers gives its answer.
        """
        gateway = MemoryGateway(
            [
                {
                    "name": "agg",
                    "urlPattern": "/agg",
                    "nodes": [
                        {"cluster": "c", "attrName": "ok", "urlRewrite": "/ok"},
                        {
                            "cluster": "c",
                            "attrName": "prefs",
                            "urlRewrite": "/prefs",
                            "required": False,
                            "default": {"theme": "light", "tags": []},
                        },
                        {
                            "cluster": "c",
                            "attrName": "none",
                            "urlRewrite": "/none",
                            "required": False,
                        },
                        {
                            "cluster": "c",
                            "attrName": "fine",
                            "urlRewrite": "/fine",
                            "required": False,
                            "default": "unused",
                        },
                    ],
                }
            ]
        )
        gateway.client.answers[b"/prefs"] = Upstream(500, b"{}")
        gateway.client.answers[b"/none"] = Upstream(200, b"not json")
        answer = gateway.request("GET", "/agg")
        self.assertEqual(answer.code, 200)
        self.assertEqual(
            answer.json(),
            {
                "ok": {"ok": True},
                "prefs": {"theme": "light", "tags": []},
                "none": None,
                "fine": {"ok": True},
            },
        )
        self.assertEqual(answer.header("x-gateway-partial"), "prefs,none")

    def test_onlyOptional(self) -> None:
        """
        A required node cannot have a default (it fails the request): the
        field is named.
        """
        error = self.assertRaises(
            ValidationError,
            parseResource,
            "apis",
            {
                "name": "a",
                "urlPattern": "/a",
                "nodes": [
                    {"cluster": "c", "attrName": "x", "default": 1},
                    {"cluster": "c", "attrName": "y"},
                ],
            },
        )
        self.assertEqual(error.field, "nodes[0].default")


class ExportTests(SynchronousTestCase):
    """
    C{gateway export} of the edge settings.
    """

    def test_compact(self) -> None:
        """
        A mock API with CORS and a transform exports without the fields
        left at their defaults (no empty C{nodes}, no default status, no
        empty lists), and what it exports reads back as the same API.
        """
        from gateway.cli.export import compactResource
        from gateway.cli.resources import normalise

        api = toJSON(
            parseResource(
                "apis",
                mockAPI(
                    {"body": {"ok": True}},
                    cors={"origins": ["https://*.example.org"], "credentials": True},
                    transform={"request": {"set": {"X-User": "$consumer.name"}}},
                ),
            )
        )
        short = compactResource("apis", api)
        self.assertEqual(
            short,
            {
                "name": "m",
                "urlPattern": "/m",
                "cors": {"origins": ["https://*.example.org"], "credentials": True},
                "transform": {"request": {"set": {"X-User": "$consumer.name"}}},
                "response": {"body": {"ok": True}},
            },
        )
        self.assertEqual(normalise("apis", short), api)
        node = {"cluster": "c", "attrName": "b", "required": False, "default": {"x": []}}
        agg = toJSON(
            parseResource(
                "apis",
                {
                    "name": "a",
                    "urlPattern": "/a",
                    "nodes": [{"cluster": "c", "attrName": "a"}, node],
                },
            )
        )
        self.assertEqual(compactResource("apis", agg)["nodes"][1], node)
