"""
Header transformations (L{gateway.filters.transform},
L{gateway.model.headeredits}): the template syntax, every variable, the
headers no transform may touch (400 naming the field), and the edits
made to requests and answers through the whole proxy in memory
(L{memorygateway}).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from memorygateway import MemoryGateway, Upstream
from test_admin_api import APITestCase
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from zope.interface.verify import verifyObject

from gateway.filters import FilterRegistry
from gateway.filters.transform import CompiledEdits, TransformFilter, compileTemplate, expand
from gateway.interfaces import IFilter
from gateway.model.headeredits import (
    MANAGED_HEADERS,
    HeaderEdits,
    Transform,
    isManaged,
    parseTemplate,
)
from gateway.model.resources import parseResource
from gateway.model.schema import ValidationError, fromJSON
from gateway.pipeline.forwarding import FORWARDING, HOP_BY_HOP, TRUSTED_REQUEST_SKIP


def transformAPI(transform: Dict[str, Any], **extra: Any) -> Dict[str, Any]:
    api = {"name": "t", "urlPattern": "/t/{id}", "nodes": [{"cluster": "c"}]}
    api.update(extra, transform=transform)
    return api


class Consumer:
    """
    A consumer as authentication leaves it on an exchange.
    """

    def __init__(self, name: str, customId: Optional[str]) -> None:
        self.name = name
        self.customId = customId


class FakeExchange:
    """
    What the templates read of an exchange.
    """

    def __init__(self, **kw: Any) -> None:
        self.requestId: Optional[bytes] = None
        self.clientIP = "192.0.2.1"
        self.params: Dict[str, str] = {}
        self.request: Any = None
        self.__dict__.update(kw)


class TemplateSyntaxTests(SynchronousTestCase):
    """
    L{parseTemplate}.
    """

    def test_variables(self) -> None:
        """
        Every variable, bare or in braces; a bare name ends where its kind
        of name does; C{$$} is a dollar; a C{$} before anything else is
        literal.
        """
        self.assertEqual(
            parseTemplate("$consumer.name-$consumer.id $requestId.$clientIp"),
            (
                ("consumer", "name"),
                "-",
                ("consumer", "id"),
                " ",
                ("requestId", ""),
                ".",
                ("clientIp", ""),
            ),
        )
        self.assertEqual(
            parseTemplate("/$param.id.json?$query.page-size&${query.a.b}:$header.X-Token-"),
            (
                "/",
                ("param", "id"),
                ".json?",
                ("query", "page-size"),
                "&",
                ("query", "a.b"),
                ":",
                ("header", "X-Token"),
                "-",
            ),
        )
        self.assertEqual(
            parseTemplate("${consumer.name}s cost $$5 or $5"),
            (("consumer", "name"), "s cost $5 or $5"),
        )
        self.assertEqual(parseTemplate("plain"), ("plain",))
        self.assertEqual(parseTemplate(""), ())

    def test_refused(self) -> None:
        """
        Unknown variables, malformed names and an unclosed brace are
        refused, saying what is wrong.
        """
        cases = {
            "$consumer.email": "unknown variable $consumer.email",
            "$consumer.names": "write ${consumer.name} when text follows the name",
            "${foo}": "unknown variable ${foo}",
            "$param": "unknown variable $param",
            "${param.a-b}": "'a-b' is not a valid param name",
            "${header.a b}": "'a b' is not a valid header name",
            "x ${query.a": "unclosed ${ at position 2",
            "$Requestid": "unknown variable $Requestid",
        }
        for template, message in cases.items():
            error = self.assertRaises(ValueError, parseTemplate, template)
            self.assertIn(message, str(error), template)


class ModelTests(SynchronousTestCase):
    """
    What an API's C{transform} accepts.
    """

    def test_managedHeaders(self) -> None:
        """
        Every header the proxy itself drops or sets (hop-by-hop, the
        forwarding headers, Host, Content-Length...) is managed, and so
        are the consumer's identity headers; others are not.
        """
        for name in HOP_BY_HOP | FORWARDING | TRUSTED_REQUEST_SKIP - {b"expect"}:
            self.assertTrue(isManaged(name.decode()), name)
        for name in ("Via", "X-Forwarded-Anything", "X-Consumer-Name", "x-consumer-groups"):
            self.assertTrue(isManaged(name), name)
        for name in ("X-Request-Id", "Authorization", "Content-Type", "X-Forward", "Server"):
            self.assertFalse(isManaged(name), name)

    def test_refusedEverywhere(self) -> None:
        """
        A managed header cannot be set, added or removed, on either side:
        each is refused with a rule error naming the field.
        """
        for side in ("request", "response"):
            for name in sorted(MANAGED_HEADERS) + ["X-Forwarded-For", "X-Consumer-Id"]:
                for kind, edits in (
                    ("set", {"set": {name: "v"}}),
                    ("add", {"add": {name: "v"}}),
                    ("remove", {"remove": ["X-Fine", name]}),
                ):
                    field = (
                        f"transform.{side}.remove[1]"
                        if kind == "remove"
                        else f"transform.{side}.{kind}.{name}"
                    )
                    error = self.assertRaises(
                        ValidationError, parseResource, "apis", transformAPI({side: edits})
                    )
                    self.assertEqual((error.field, error.semantic), (field, True), (side, name))
                    self.assertIn("managed by the gateway", error.message)

    def test_otherErrors(self) -> None:
        """
        Bad header names, names repeated in another case, control
        characters, unknown variables and C{$param} names the URL pattern
        lacks are refused naming the field.
        """
        cases = [
            ({"request": {"set": {"X A": "v"}}}, "transform.request.set.X A"),
            ({"request": {"set": {"X-A": "1", "x-a": "2"}}}, "transform.request.set.x-a"),
            ({"request": {"set": {"X-A": "a\r\nb"}}}, "transform.request.set.X-A"),
            ({"request": {"add": {"X-A": 5}}}, "transform.request.add.X-A"),
            ({"response": {"set": {"X-A": "$nope"}}}, "transform.response.set.X-A"),
            ({"response": {"remove": ["X A"]}}, "transform.response.remove[0]"),
            ({"request": {"set": {"X-A": "$param.name"}}}, "transform.request.set.X-A"),
            ({"request": {"set": []}}, "transform.request.set"),
            ({"other": {}}, "transform.other"),
        ]
        for transform, field in cases:
            error = self.assertRaises(
                ValidationError, parseResource, "apis", transformAPI(transform)
            )
            self.assertEqual(error.field, field, transform)
        error = self.assertRaises(
            ValidationError,
            parseResource,
            "apis",
            transformAPI({"request": {"set": {"X-A": "$param.name"}}}),
        )
        self.assertEqual(
            error.message, "$param.name is not a parameter of the URL pattern (it has: id)"
        )

    def test_roundTrip(self) -> None:
        """
        A valid transform reads back as it was written.
        """
        transform = {
            "request": {"set": {"X-User": "$consumer.name"}, "add": {}, "remove": ["Cookie"]},
            "response": None,
        }
        api = parseResource("apis", transformAPI(transform))
        self.assertEqual(api.transform.request.set, {"X-User": "$consumer.name"})
        self.assertEqual(api.transform.request.remove, ("Cookie",))


class AdminRefusalTests(APITestCase):
    """
    The admin's answer to a transform that touches a managed header.
    """

    def test_400NamingTheField(self) -> None:
        """
        C{POST /apis} with a transform that sets C{X-Forwarded-For} is a
        400 naming the field, marked as a rule; nothing is stored.
        """
        code, _, body = self.call(
            "POST",
            "/apis",
            {
                "name": "m",
                "urlPattern": "/m",
                "response": {"body": "x"},
                "transform": {"request": {"set": {"X-Forwarded-For": "1.2.3.4"}}},
            },
        )
        self.assertEqual(code, 400)
        self.assertEqual(body["field"], "transform.request.set.X-Forwarded-For")
        self.assertEqual(body["errors"][0]["rule"], True)
        self.assertEqual(dict(self.state().resources.get("apis", {})), {})


class ExpandTests(SynchronousTestCase):
    """
    Compiled templates, on an exchange.
    """

    def test_static(self) -> None:
        """
        A template without variables compiles to its bytes.
        """
        self.assertEqual(compileTemplate("caf\u00e9 $$1"), "caf\u00e9 $1".encode())

    def test_consumer(self) -> None:
        """
        C{$consumer.name} and C{$consumer.id} (the C{customId}) come from
        the exchange's consumer; without one (or without a customId) they
        are empty.
        """
        template = compileTemplate("$consumer.name/$consumer.id")
        exchange = FakeExchange(consumer=Consumer("alice", "c-42"))
        self.assertEqual(expand(template, exchange), b"alice/c-42")
        self.assertEqual(expand(template, FakeExchange(consumer=Consumer("bob", None))), b"bob/")
        self.assertEqual(expand(template, FakeExchange()), b"/")

    def test_controlCharactersRemoved(self) -> None:
        """
        Control characters of a value read from the request are removed,
        so no value can end a header; surrounding whitespace goes too.
        """
        template = compileTemplate("[$param.p]")
        exchange = FakeExchange(params={"p": "a\r\nX-Injected: 1\x00\x7f\tb"})
        self.assertEqual(expand(template, exchange), b"[aX-Injected: 1\tb]")
        template = compileTemplate("$param.p")
        self.assertEqual(expand(template, FakeExchange(params={"p": " \r\n "})), b"")

    def test_publicHeaders(self) -> None:
        """
        On headers that are not Twisted's dict of lists, the same edits are
        made through L{Headers}' public methods.
        """

        class OtherHeaders(Headers):
            pass

        edits = CompiledEdits(
            fromJSON(
                HeaderEdits,
                {
                    "remove": ["X-Gone"],
                    "set": {"X-Set": "$clientIp", "X-Empty": "$consumer.name"},
                    "add": {"X-Add": "two", "X-None": "$consumer.id"},
                },
            )
        )
        headers = OtherHeaders(
            {b"x-gone": [b"1"], b"x-set": [b"a", b"b"], b"x-empty": [b"e"], b"x-add": [b"one"]}
        )
        edits.apply(headers, FakeExchange())
        self.assertEqual(
            sorted((k.lower(), v) for k, v in headers.getAllRawHeaders()),
            [(b"x-add", [b"one", b"two"]), (b"x-set", [b"192.0.2.1"])],
        )

    def test_interface(self) -> None:
        """
        The filter provides L{IFilter}.
        """
        verifyObject(IFilter, TransformFilter(fromJSON(Transform, {})))


def sentHeaders(gateway: MemoryGateway) -> Dict[str, List[str]]:
    headers = gateway.lastSent()[3]
    return {
        k.decode().lower(): [v.decode("latin-1") for v in vs]
        for k, vs in headers.getAllRawHeaders()
    }


class PipelineTests(SynchronousTestCase):
    """
    Transforms through the whole proxy.
    """

    def test_everyVariableUpstream(self) -> None:
        """
        The backend receives each variable's value: the request id (of the
        C{request-id} filter), the client's address, a path parameter, a
        query parameter and a header of the client's request (both
        percent-decoded or as sent, control characters removed); a consumer
        is empty without authentication.
        """
        gateway = MemoryGateway(
            [
                transformAPI(
                    {
                        "request": {
                            "set": {
                                "X-Id": "$requestId",
                                "X-Client": "$clientIp",
                                "X-Param": "user-$param.id",
                                "X-Query": "${query.q}!",
                                "X-Header": "Bearer $header.X-Token",
                                "X-Consumer": "[$consumer.name|$consumer.id]",
                            }
                        }
                    }
                )
            ],
            registry=FilterRegistry.fromPlugins(),
            globalFilters=["request-id"],
        )
        answer = gateway.request(
            "GET",
            "/t/caf%C3%A9?q=a%0D%0AX-Evil:%201",
            [("X-Token", "tok"), ("X-Request-Id", "req-7")],
        )
        self.assertEqual(answer.code, 200)
        sent = sentHeaders(gateway)
        self.assertEqual(sent["x-id"], ["req-7"])
        self.assertEqual(sent["x-client"], ["192.0.2.10"])
        self.assertEqual(sent["x-param"], ["user-caf\u00e9".encode().decode("latin-1")])
        self.assertEqual(sent["x-query"], ["aX-Evil: 1!"])
        self.assertNotIn("x-evil", sent)
        self.assertEqual(sent["x-header"], ["Bearer tok"])
        self.assertEqual(sent["x-consumer"], ["[|]"])

    def test_consumerFromAuth(self) -> None:
        """
        C{$consumer.name} and C{$consumer.id} take the values of the
        consumer the built-in C{auth} filter (key) found on the same
        request: the backend receives the transformed headers with that
        consumer's name and customId (in request and response edits), and
        not the key; a consumer without customId gives an empty id.
        """
        gateway = MemoryGateway(
            [
                transformAPI(
                    {
                        "request": {
                            "set": {
                                "X-User": "user=$consumer.name",
                                "X-User-Id": "id=$consumer.id",
                            },
                            "add": {"X-Both": "${consumer.name}/${consumer.id}"},
                        },
                        "response": {"set": {"X-Served-To": "$consumer.name"}},
                    },
                    auth={"methods": ["key"]},
                )
            ],
            consumers=[
                {
                    "name": "alice",
                    "customId": "c-42",
                    "credentials": [{"type": "key", "key": "alice-key-0123456789abcdef"}],
                },
                {
                    "name": "bob",
                    "credentials": [{"type": "key", "key": "bob-key-0123456789abcdef"}],
                },
            ],
        )
        answer = gateway.request(
            "GET", "/t/1", [("apikey", "alice-key-0123456789abcdef"), ("X-User", "mallory")]
        )
        self.assertEqual(answer.code, 200)
        self.assertEqual(answer.header("x-served-to"), "alice")
        sent = sentHeaders(gateway)
        self.assertEqual(sent["x-user"], ["user=alice"])
        self.assertEqual(sent["x-user-id"], ["id=c-42"])
        self.assertEqual(sent["x-both"], ["alice/c-42"])
        self.assertNotIn("apikey", sent)
        gateway.request("GET", "/t/1", [("apikey", "bob-key-0123456789abcdef")])
        sent = sentHeaders(gateway)
        self.assertEqual((sent["x-user"], sent["x-user-id"]), (["user=bob"], ["id="]))
        self.assertEqual(sent["x-both"], ["bob/"])

    def test_editsInOrder(self) -> None:
        """
        Request edits: removals, then sets (replacing every value of the
        client's; one that comes out empty removes the header), then adds
        (one more value; an empty one adds nothing).  The forwarding
        headers stay the gateway's.
        """
        gateway = MemoryGateway(
            [
                transformAPI(
                    {
                        "request": {
                            "remove": ["Cookie", "X-Both"],
                            "set": {"X-Env": "prod", "X-Both": "set", "X-Q": "$query.missing"},
                            "add": {"X-Tag": "gw", "X-Both": "added", "X-None": "$query.none"},
                        }
                    }
                )
            ]
        )
        gateway.request(
            "GET",
            "/t/1",
            [
                ("Cookie", "a=b"),
                ("X-Env", "dev"),
                ("X-Env", "test"),
                ("X-Tag", "client"),
                ("X-Both", "client"),
                ("X-Q", "client"),
            ],
        )
        sent = sentHeaders(gateway)
        self.assertNotIn("cookie", sent)
        self.assertEqual(sent["x-env"], ["prod"])
        self.assertEqual(sent["x-tag"], ["client", "gw"])
        self.assertEqual(sent["x-both"], ["set", "added"])
        self.assertNotIn("x-q", sent)
        self.assertNotIn("x-none", sent)
        self.assertEqual(sent["x-forwarded-for"], ["192.0.2.10"])

    def test_responseEdits(self) -> None:
        """
        Response edits apply to the backend's answer before it goes to the
        client, with the request's variables; the request is left alone
        when only the response is edited.
        """
        gateway = MemoryGateway(
            [
                transformAPI(
                    {
                        "response": {
                            "remove": ["Server"],
                            "set": {"X-Served-For": "$param.id"},
                            "add": {"Cache-Control": "no-store"},
                        }
                    }
                )
            ]
        )
        gateway.client.answers[b"/t/9"] = Upstream(
            200, b"{}", {b"server": b"backend/1.0", b"cache-control": b"private"}
        )
        answer = gateway.request("GET", "/t/9", [("X-Served-For", "client")])
        self.assertIsNone(answer.header("server"))
        self.assertEqual(answer.header("x-served-for"), "9")
        self.assertEqual(answer.headers["cache-control"], ["private", "no-store"])
        self.assertEqual(sentHeaders(gateway)["x-served-for"], ["client"])

    def test_laterErrors(self) -> None:
        """
        The response edits apply to a backend's error answer too (a 503),
        but not to an answer of an earlier filter (a 429 of the rate
        limit, which runs first).
        """
        gateway = MemoryGateway(
            [
                transformAPI(
                    {"response": {"set": {"X-Edited": "yes"}}},
                    rateLimit={"rate": 1, "burst": 1},
                )
            ]
        )
        gateway.client.answers[b"/t/1"] = Upstream(503, b"down")
        answer = gateway.request("GET", "/t/1")
        self.assertEqual((answer.code, answer.header("x-edited")), (503, "yes"))
        answer = gateway.request("GET", "/t/1")
        self.assertEqual((answer.code, answer.header("x-edited")), (429, None))

    def test_compiledOnce(self) -> None:
        """
        The filter (with its compiled templates) is made once and kept by
        later snapshots while the API's transform stays; a change makes a
        new one.
        """
        api = transformAPI({"request": {"set": {"X-A": "$clientIp"}}})
        gateway = MemoryGateway([api])
        first = [f for f in gateway.manager.snapshot.apis["t"].filters if f.name == "transform"]
        gateway.apply([dict(api, maxQPS=5)])
        again = [f for f in gateway.manager.snapshot.apis["t"].filters if f.name == "transform"]
        self.assertIs(first[0], again[0])
        gateway.apply([transformAPI({"request": {"set": {"X-A": "$requestId"}}})])
        changed = [f for f in gateway.manager.snapshot.apis["t"].filters if f.name == "transform"]
        self.assertIsNot(first[0], changed[0])

    def test_nothingToDo(self) -> None:
        """
        A transform that edits nothing makes no filter: it costs nothing.
        """
        gateway = MemoryGateway([transformAPI({"request": {}, "response": None})])
        names = [f.name for f in gateway.manager.snapshot.apis["t"].filters]
        self.assertNotIn("transform", names)
