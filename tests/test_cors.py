"""
CORS (L{gateway.filters.cors}, L{gateway.model.cors}): which origins an
API's settings allow (wildcard subdomains included), the gateway's answer
to a preflight, and the headers of the other answers, through the whole
proxy in memory (L{memorygateway}).
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

from memorygateway import MemoryGateway
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from zope.interface.verify import verifyObject

from gateway.filters import FilterRegistry
from gateway.filters.cors import WILDCARD_CACHE, CORSFilter, OriginPolicy
from gateway.interfaces import IFilter
from gateway.model.cors import CORS
from gateway.model.resources import parseResource
from gateway.model.schema import ValidationError, fromJSON
from gateway.pipeline.exchange import ResponseInfo

APP = "https://app.example.com"
API_KEY = "alice-key-0123456789abcdef"
ALICE = {"name": "alice", "credentials": [{"type": "key", "key": API_KEY}]}


def corsAPI(cors: Dict[str, Any], **extra: Any) -> Dict[str, Any]:
    api = {"name": "x", "urlPattern": "/x", "method": "GET", "nodes": [{"cluster": "c"}]}
    api.update(extra, cors=cors)
    return api


def preflight(origin: str = APP, method: str = "GET", headers: str = "") -> List[Tuple[str, str]]:
    out = [("Origin", origin), ("Access-Control-Request-Method", method)]
    if headers:
        out.append(("Access-Control-Request-Headers", headers))
    return out


class OriginPolicyTests(SynchronousTestCase):
    """
    Which origins a list of origins and origin patterns allows.
    """

    def test_exact(self) -> None:
        """
        An exact origin allows itself, in any case, and nothing else: not
        another scheme, port, host or subdomain.
        """
        policy = OriginPolicy([APP, "http://localhost:3000"])
        for origin in (APP, "HTTPS://App.Example.COM", "http://localhost:3000"):
            self.assertTrue(policy.allows(origin.encode()), origin)
        for origin in (
            "http://app.example.com",
            "https://app.example.com:8443",
            "https://example.com",
            "https://a.app.example.com",
            "https://app.example.com.evil.org",
            "http://localhost:3001",
            "http://localhost",
            "null",
            "",
        ):
            self.assertFalse(policy.allows(origin.encode()), origin)

    def test_defaultPort(self) -> None:
        """
        A default port in the settings is the same as none (browsers never
        send it).
        """
        policy = OriginPolicy(["https://a.example:443", "http://b.example:80"])
        self.assertTrue(policy.allows(b"https://a.example"))
        self.assertTrue(policy.allows(b"http://b.example"))
        self.assertFalse(policy.allows(b"http://a.example"))

    def test_defaultPortSent(self) -> None:
        """
        An origin sent with its scheme's default port is the origin
        without it, for exact origins and wildcards alike; another port,
        or the other scheme's default, is not.
        """
        policy = OriginPolicy(["https://a.example", "http://b.example", "https://*.example.org"])
        self.assertTrue(policy.allows(b"https://a.example:443"))
        self.assertTrue(policy.allows(b"http://b.example:80"))
        self.assertTrue(policy.allows(b"https://x.example.org:443"))
        self.assertFalse(policy.allows(b"https://a.example:80"))
        self.assertFalse(policy.allows(b"https://a.example:8443"))
        self.assertFalse(policy.allows(b"http://b.example:443"))

    def test_wildcardSubdomains(self) -> None:
        """
        C{https://*.example.org} allows subdomains at any depth, but not
        C{example.org} itself, another scheme or port, a look-alike
        domain, or anything that is no host name.
        """
        policy = OriginPolicy(["https://*.example.org"])
        for origin in (
            "https://a.example.org",
            "https://a.b.example.org",
            "https://x-1.y.z.example.org",
            "https://A.Example.Org",
        ):
            self.assertTrue(policy.allows(origin.encode()), origin)
        for origin in (
            "https://example.org",
            "https://.example.org",
            "https://a..example.org",
            "http://a.example.org",
            "https://a.example.org:8443",
            "https://aexample.org",
            "https://a.example.org.evil.com",
            "https://evil.com/.example.org",
            "https://u@a.example.org",
            "https://-a.example.org",
        ):
            self.assertFalse(policy.allows(origin.encode()), origin)

    def test_wildcardWithPort(self) -> None:
        """
        A pattern with a port allows subdomains on that port only.
        """
        policy = OriginPolicy(["http://*.local.test:8080"])
        self.assertTrue(policy.allows(b"http://a.local.test:8080"))
        self.assertFalse(policy.allows(b"http://a.local.test"))
        self.assertFalse(policy.allows(b"http://a.local.test:8081"))

    def test_wildcardDecisionsBounded(self) -> None:
        """
        Decisions on origins only a wildcard could allow are remembered,
        at most L{WILDCARD_CACHE} of them, and stay right when asked again
        or after the memory was cleared.
        """
        policy = OriginPolicy(["https://*.example.org"])
        for i in range(WILDCARD_CACHE + 10):
            self.assertTrue(policy.allows(b"https://a%d.example.org" % (i,)))
            self.assertFalse(policy.allows(b"https://a%d.example.com" % (i,)))
            self.assertLessEqual(len(policy._decided), WILDCARD_CACHE)
        for _ in range(2):
            self.assertTrue(policy.allows(b"https://A5.example.org"))
            self.assertFalse(policy.allows(b"https://example.org"))

    def test_any(self) -> None:
        """
        C{*} allows every origin but C{null}, which anything can send.
        """
        policy = OriginPolicy(["*"])
        self.assertTrue(policy.allows(b"https://anything.example"))
        self.assertFalse(policy.allows(b"null"))


class CORSModelTests(SynchronousTestCase):
    """
    What an API's C{cors} accepts.
    """

    def test_defaults(self) -> None:
        """
        Only C{origins} is required.
        """
        cors = fromJSON(CORS, {"origins": [APP]})
        self.assertEqual(
            (cors.methods, cors.headers, cors.exposeHeaders, cors.credentials, cors.maxAge),
            ((), (), (), False, None),
        )

    def test_refused(self) -> None:
        """
        Bad origins, no origins, an out of range C{maxAge}, and C{*} in
        C{exposeHeaders} with credentials are refused, each naming its
        field.
        """
        cases = [
            ({"origins": []}, "cors.origins"),
            ({"origins": ["app.example.com"]}, "cors.origins[0]"),
            ({"origins": ["https://app.example.com/"]}, "cors.origins[0]"),
            ({"origins": ["https://*.*.example.com"]}, "cors.origins[0]"),
            ({"origins": ["https://a.*.example.com"]}, "cors.origins[0]"),
            ({"origins": ["https://a.example:70000"]}, "cors.origins[0]"),
            ({"origins": ["null"]}, "cors.origins[0]"),
            ({"origins": [APP], "maxAge": -1}, "cors.maxAge"),
            ({"origins": [APP], "maxAge": 86401}, "cors.maxAge"),
            ({"origins": [APP], "methods": ["GET PUT"]}, "cors.methods[0]"),
            ({"origins": [APP], "headers": ["X Y"]}, "cors.headers[0]"),
            (
                {"origins": [APP], "credentials": True, "exposeHeaders": ["X-A", "*"]},
                "cors.exposeHeaders[1]",
            ),
        ]
        for cors, field in cases:
            error = self.assertRaises(ValidationError, parseResource, "apis", corsAPI(cors))
            self.assertEqual(error.field, field, cors)
        parseResource("apis", corsAPI({"origins": [APP], "exposeHeaders": ["*"]}))


class PreflightTests(SynchronousTestCase):
    """
    The gateway answers preflights itself, without a backend.
    """

    def test_allowed(self) -> None:
        """
        A preflight from an allowed origin, for an API of another method,
        is answered 204 by the gateway, with the origin itself, the API's
        method, the headers asked for, C{Vary} and no body; the backend
        is never called.
        """
        gateway = MemoryGateway([corsAPI({"origins": [APP]})])
        answer = gateway.request("OPTIONS", "/x", preflight(headers="X-Token, Content-Type"))
        self.assertEqual(answer.code, 204)
        self.assertEqual(answer.header("access-control-allow-origin"), APP)
        self.assertEqual(answer.header("access-control-allow-methods"), "GET")
        self.assertEqual(answer.header("access-control-allow-headers"), "X-Token, Content-Type")
        self.assertEqual(
            answer.header("vary"),
            "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        )
        for absent in (
            "access-control-allow-credentials",
            "access-control-max-age",
            "content-length",
            "content-type",
        ):
            self.assertIsNone(answer.header(absent), absent)
        self.assertEqual(answer.body, b"")
        self.assertEqual(gateway.client.sent, [])

    def test_settings(self) -> None:
        """
        Configured methods and headers are named as configured, credentials
        and C{maxAge} are sent, and the origin is echoed as the browser
        sent it, never C{*}.
        """
        gateway = MemoryGateway(
            [
                corsAPI(
                    {
                        "origins": ["https://*.example.org"],
                        "methods": ["GET", "PUT"],
                        "headers": ["X-Token", "Content-Type"],
                        "credentials": True,
                        "maxAge": 600,
                    },
                    method="*",
                )
            ]
        )
        answer = gateway.request(
            "OPTIONS", "/x", preflight("https://a.b.example.org", "PUT", "content-type,x-token")
        )
        self.assertEqual(answer.code, 204)
        self.assertEqual(answer.header("access-control-allow-origin"), "https://a.b.example.org")
        self.assertEqual(answer.header("access-control-allow-methods"), "GET, PUT")
        self.assertEqual(answer.header("access-control-allow-headers"), "X-Token, Content-Type")
        self.assertEqual(answer.header("access-control-allow-credentials"), "true")
        self.assertEqual(answer.header("access-control-max-age"), "600")

    def test_anyMethodAndHeader(self) -> None:
        """
        C{*} methods answer C{*} without credentials; with credentials
        (where a browser reads C{*} as a method named so) the method asked
        for.  An API of any method allows any method by default.
        """
        gateway = MemoryGateway(
            [
                corsAPI(
                    {"origins": [APP], "methods": ["*"], "headers": ["*"]},
                    name="a",
                    urlPattern="/a",
                ),
                corsAPI(
                    {"origins": [APP], "methods": ["*"], "credentials": True},
                    name="b",
                    urlPattern="/b",
                    method="*",
                ),
                corsAPI({"origins": [APP]}, name="c", urlPattern="/c", method="*"),
            ]
        )
        answer = gateway.request("OPTIONS", "/a", preflight(method="GET", headers="X-Any"))
        self.assertEqual((answer.code, answer.header("access-control-allow-methods")), (204, "*"))
        self.assertEqual(answer.header("access-control-allow-headers"), "X-Any")
        answer = gateway.request("OPTIONS", "/b", preflight(method="DELETE"))
        self.assertEqual(answer.header("access-control-allow-methods"), "DELETE")
        answer = gateway.request("OPTIONS", "/c", preflight(method="PATCH"))
        self.assertEqual(
            (answer.code, answer.header("access-control-allow-methods")), (204, "PATCH")
        )

    def test_refusedOrigin(self) -> None:
        """
        A preflight from an origin not allowed gets a 403 JSON error with
        no CORS header, and the backend is not called.
        """
        gateway = MemoryGateway([corsAPI({"origins": [APP, "https://*.example.org"]})])
        for origin in ("https://evil.example", "https://example.org", "null"):
            answer = gateway.request("OPTIONS", "/x", preflight(origin))
            self.assertEqual(answer.code, 403, origin)
            self.assertEqual(answer.json(), {"error": "CORS: origin not allowed"})
            self.assertEqual(
                [h for h in answer.headers if h.startswith("access-control-")], [], origin
            )
        self.assertEqual(gateway.client.sent, [])

    def test_refusedMethodOrHeader(self) -> None:
        """
        A method outside C{methods} (the safelisted GET, HEAD and POST are
        always allowed) or a header outside C{headers} gets a 403 naming it.
        """
        gateway = MemoryGateway(
            [corsAPI({"origins": [APP], "methods": ["PUT"], "headers": ["X-Token"]}, method="*")]
        )
        answer = gateway.request("OPTIONS", "/x", preflight(method="DELETE"))
        self.assertEqual(
            (answer.code, answer.json()),
            (403, {"error": "CORS: method not allowed", "method": "DELETE"}),
        )
        answer = gateway.request(
            "OPTIONS", "/x", preflight(method="PUT", headers="X-Token, X-Other")
        )
        self.assertEqual(
            (answer.code, answer.json()),
            (403, {"error": "CORS: header not allowed", "header": "X-Other"}),
        )
        for method in ("GET", "HEAD", "POST", "PUT"):
            answer = gateway.request("OPTIONS", "/x", preflight(method=method, headers="x-token"))
            self.assertEqual(answer.code, 204, method)
            self.assertEqual(answer.header("access-control-allow-methods"), "PUT")

    def test_routedByRequestedMethod(self) -> None:
        """
        A preflight reaches the API of the method it asks about: C{PUT /x}
        and C{GET /x} are two APIs with their own settings.  A preflight
        for a method no API of the path takes is routed as a plain
        C{OPTIONS} request (404 here).
        """
        gateway = MemoryGateway(
            [
                corsAPI({"origins": [APP]}),
                corsAPI({"origins": ["https://other.example"]}, name="put", method="PUT"),
            ]
        )
        answer = gateway.request("OPTIONS", "/x", preflight(APP, "GET"))
        self.assertEqual(answer.code, 204)
        answer = gateway.request("OPTIONS", "/x", preflight(APP, "PUT"))
        self.assertEqual(answer.code, 403)
        answer = gateway.request("OPTIONS", "/x", preflight("https://other.example", "PUT"))
        self.assertEqual(answer.code, 204)
        answer = gateway.request("OPTIONS", "/x", preflight(APP, "DELETE"))
        self.assertEqual(answer.code, 404)
        self.assertEqual(gateway.client.sent, [])

    def test_notAPreflight(self) -> None:
        """
        An C{OPTIONS} request without C{Access-Control-Request-Method} is
        no preflight: it is routed and proxied as any request (to an API
        that takes it), with the CORS headers of an actual request.
        """
        gateway = MemoryGateway([corsAPI({"origins": [APP]}, method="*")])
        answer = gateway.request("OPTIONS", "/x", [("Origin", APP)])
        self.assertEqual(answer.code, 200)
        self.assertEqual(gateway.lastSent()[1], b"OPTIONS")
        self.assertEqual(answer.header("access-control-allow-origin"), APP)

    def test_withoutCORS(self) -> None:
        """
        An API without C{cors} does not take part: a preflight to it is an
        C{OPTIONS} request like any other, proxied when the API takes
        C{OPTIONS} (its backend may do CORS itself), else 404.
        """
        gateway = MemoryGateway(
            [
                {"name": "get", "urlPattern": "/x", "method": "GET", "nodes": [{"cluster": "c"}]},
                {"name": "any", "urlPattern": "/y", "nodes": [{"cluster": "c"}]},
            ]
        )
        self.assertEqual(gateway.request("OPTIONS", "/x", preflight()).code, 404)
        answer = gateway.request("OPTIONS", "/y", preflight())
        self.assertEqual(answer.code, 200)
        self.assertIsNone(answer.header("access-control-allow-origin"))
        self.assertIsNone(answer.header("vary"))
        self.assertEqual(gateway.lastSent()[1], b"OPTIONS")

    def test_beforeLaterFilters(self) -> None:
        """
        A preflight is answered before the API's rate limit (a browser's
        preflight must not need what later filters check), is not counted
        as a reject in the stats, and a refused one counts as an access
        reject.
        """
        gateway = MemoryGateway([corsAPI({"origins": [APP]}, rateLimit={"rate": 1, "burst": 1})])
        self.assertEqual(gateway.request("GET", "/x").code, 200)
        self.assertEqual(gateway.request("GET", "/x").code, 429)
        self.assertEqual(gateway.request("OPTIONS", "/x", preflight()).code, 204)
        self.assertEqual(
            gateway.request("OPTIONS", "/x", preflight("https://no.example")).code, 403
        )
        stats = gateway.stats.apis["x"]
        self.assertEqual(stats.requests, 4)
        self.assertEqual(
            stats.rejects, {"rateLimit": 1, "breaker": 0, "access": 1, "auth": 0, "other": 0}
        )
        self.assertEqual(sum(stats.errors.values()), 0)

    def test_withoutCredentials(self) -> None:
        """
        A preflight to an API that needs authentication is answered 204
        with the C{Access-Control-Allow-*} headers without any credential
        (a browser never sends one on a preflight), and no backend is
        called; the actual request without a credential still gets 401,
        and with the consumer's key reaches the backend.
        """
        gateway = MemoryGateway(
            [
                corsAPI(
                    {"origins": [APP], "headers": ["apikey"]},
                    method="PUT",
                    auth={"methods": ["key"]},
                )
            ],
            consumers=[ALICE],
        )
        answer = gateway.request("OPTIONS", "/x", preflight(method="PUT", headers="apikey"))
        self.assertEqual(answer.code, 204)
        self.assertEqual(answer.header("access-control-allow-origin"), APP)
        self.assertEqual(answer.header("access-control-allow-methods"), "PUT")
        self.assertEqual(answer.header("access-control-allow-headers"), "apikey")
        self.assertIsNone(answer.header("www-authenticate"))
        self.assertEqual(answer.body, b"")
        self.assertEqual(gateway.client.sent, [])
        answer = gateway.request("PUT", "/x", [("Origin", APP)])
        self.assertEqual((answer.code, answer.json()), (401, {"error": "authentication required"}))
        self.assertEqual(answer.header("access-control-allow-origin"), APP)
        self.assertEqual(gateway.client.sent, [])
        answer = gateway.request("PUT", "/x", [("Origin", APP), ("apikey", API_KEY)])
        self.assertEqual(answer.code, 200)
        self.assertEqual(len(gateway.client.sent), 1)
        self.assertEqual(gateway.stats.apis["x"].rejects["auth"], 1)


class ActualRequestTests(SynchronousTestCase):
    """
    The answers to requests that are not preflights.
    """

    def test_allowedOrigin(self) -> None:
        """
        A request from an allowed origin gets the origin itself,
        C{Vary: Origin}, and the credentials and exposed headers
        configured; the request reaches the backend.
        """
        gateway = MemoryGateway(
            [
                corsAPI(
                    {
                        "origins": ["https://*.example.org"],
                        "credentials": True,
                        "exposeHeaders": ["X-Total", "X-Page"],
                    }
                )
            ]
        )
        answer = gateway.request("GET", "/x", [("Origin", "https://a.example.org")])
        self.assertEqual(answer.code, 200)
        self.assertEqual(answer.header("access-control-allow-origin"), "https://a.example.org")
        self.assertEqual(answer.header("access-control-allow-credentials"), "true")
        self.assertEqual(answer.header("access-control-expose-headers"), "X-Total, X-Page")
        self.assertEqual(answer.header("vary"), "Origin")
        self.assertIsNone(answer.header("access-control-allow-methods"))
        self.assertEqual(len(gateway.client.sent), 1)

    def test_anyOriginWithCredentials(self) -> None:
        """
        With C{origins: ["*"]} and credentials, a request from an origin
        gets that origin in C{Access-Control-Allow-Origin}, never C{*}
        (which a browser refuses with credentials), with
        C{Access-Control-Allow-Credentials} and C{Vary: Origin}.
        """
        gateway = MemoryGateway([corsAPI({"origins": ["*"], "credentials": True})])
        for origin in (APP, "http://localhost:3000", "https://a.b.example.org"):
            answer = gateway.request("GET", "/x", [("Origin", origin)])
            self.assertEqual(answer.code, 200, origin)
            self.assertEqual(answer.headers["access-control-allow-origin"], [origin])
            self.assertEqual(answer.header("access-control-allow-credentials"), "true")
            self.assertEqual(answer.header("vary"), "Origin")
        self.assertEqual(len(gateway.client.sent), 3)

    def test_otherOrigins(self) -> None:
        """
        A request from an origin not allowed, or without an origin, gets no
        CORS header, but C{Vary: Origin} (a cache must not give it the
        answer to an allowed origin, or the reverse); it is served.
        """
        gateway = MemoryGateway([corsAPI({"origins": [APP], "credentials": True})])
        for headers in ([("Origin", "https://evil.example")], []):
            answer = gateway.request("GET", "/x", headers)
            self.assertEqual(answer.code, 200)
            self.assertEqual(
                [h for h in answer.headers if h.startswith("access-control-")], [], headers
            )
            self.assertEqual(answer.header("vary"), "Origin")
        self.assertEqual(len(gateway.client.sent), 2)

    def test_backendHeadersReplaced(self) -> None:
        """
        The gateway's settings win over a backend's: its
        C{Access-Control-Allow-Origin: *} is replaced by the origin, or
        removed for an origin not allowed; its C{Vary} is kept, with
        C{Origin} added once.
        """
        gateway = MemoryGateway([corsAPI({"origins": [APP]})])
        from memorygateway import Upstream

        gateway.client.answers[b"/x"] = Upstream(
            200,
            b"{}",
            {
                b"access-control-allow-origin": b"*",
                b"access-control-allow-credentials": b"true",
                b"access-control-expose-headers": b"X-Secret",
                b"vary": b"Accept-Encoding",
            },
        )
        answer = gateway.request("GET", "/x", [("Origin", APP)])
        self.assertEqual(answer.header("access-control-allow-origin"), APP)
        self.assertIsNone(answer.header("access-control-allow-credentials"))
        self.assertIsNone(answer.header("access-control-expose-headers"))
        self.assertEqual(answer.headers["vary"], ["Accept-Encoding", "Origin"])
        answer = gateway.request("GET", "/x", [("Origin", "https://evil.example")])
        self.assertEqual([h for h in answer.headers if h.startswith("access-control-")], [])
        gateway.client.answers[b"/x"] = Upstream(200, b"{}", {b"vary": b"Accept, origin"})
        answer = gateway.request("GET", "/x", [("Origin", APP)])
        self.assertEqual(answer.headers["vary"], ["Accept, origin"])

    def test_laterErrorsReadable(self) -> None:
        """
        The error of a later filter (here a rate limit's 429) carries the
        CORS headers, so that the script that made the request can read
        it.
        """
        gateway = MemoryGateway([corsAPI({"origins": [APP]}, rateLimit={"rate": 1, "burst": 1})])
        gateway.request("GET", "/x", [("Origin", APP)])
        answer = gateway.request("GET", "/x", [("Origin", APP)])
        self.assertEqual(answer.code, 429)
        self.assertEqual(answer.header("access-control-allow-origin"), APP)


class CORSFilterTests(SynchronousTestCase):
    """
    The filter object itself.
    """

    def test_interface(self) -> None:
        """
        It provides L{IFilter}, and the registry makes it from an API's
        settings, after IP access and before the rate limit.
        """
        cors = fromJSON(CORS, {"origins": [APP]})
        verifyObject(IFilter, CORSFilter(cors))
        api = parseResource(
            "apis",
            corsAPI(
                {"origins": [APP]},
                ipAccess={"allow": ["10.0.0.0/8"]},
                transform={"request": {"set": {"X-A": "1"}}},
            ),
        )
        names = [key[0] for key, _ in FilterRegistry({}).apiFilterSpecs(api, None, None, None)]
        self.assertEqual(names, ["ip-access", "cors", "circuit-breaker", "rate-limit", "transform"])

    def test_publicHeaders(self) -> None:
        """
        On response headers that are not Twisted's dict of lists, the
        same headers are set through L{Headers}' public methods.
        """

        class OtherHeaders(Headers):
            pass

        cors = fromJSON(CORS, {"origins": [APP], "credentials": True, "exposeHeaders": ["X-A"]})
        corsFilter = CORSFilter(cors)

        class Request:
            requestHeaders = Headers({b"origin": [APP.encode()]})

        class Exchange:
            request = Request()

        headers = OtherHeaders({b"access-control-allow-origin": [b"*"]})
        corsFilter.after(Exchange(), ResponseInfo(200, headers))
        self.assertEqual(headers.getRawHeaders(b"access-control-allow-origin"), [APP.encode()])
        self.assertEqual(headers.getRawHeaders(b"access-control-allow-credentials"), [b"true"])
        self.assertEqual(headers.getRawHeaders(b"access-control-expose-headers"), [b"X-A"])
        self.assertEqual(headers.getRawHeaders(b"vary"), [b"Origin"])
