"""
The response cache (L{gateway.cache}): the rules of RFC 9111 and RFC 9211
(L{gateway.cache.control}), entries, the memory store's bound, and the
cache in the whole proxy in memory (L{cachegateway}) on a L{Clock}: hits,
misses, C{Vary}, C{no-store}, C{private}, C{Authorization}, revalidation
with 304, collapsing, purges, C{HEAD} from a C{GET} entry, C{Age},
C{Cache-Status}, the filters around it, its counts.
"""

from __future__ import annotations

from typing import Any, Dict, List

from cachegateway import CacheGateway, Call, ok
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import datetimeToString

from gateway.cache.control import (
    cacheControl,
    cacheStatus,
    correctedInitialAge,
    etagMatches,
    freshnessLifetime,
    storable,
    varyNames,
)
from gateway.cache.entry import Entry, EntryError, decodeEntry, encodeEntry
from gateway.cache.memory import MemoryStore
from gateway.http.errors import UpstreamConnectError
from gateway.model.resources import parseResource
from gateway.model.schema import ValidationError


def cachedAPI(cache: Dict[str, Any], **extra: Any) -> Dict[str, Any]:
    api: Dict[str, Any] = {
        "name": "a",
        "urlPattern": "/a/*",
        "method": "*",
        "nodes": [{"cluster": "c"}],
        "cache": cache,
    }
    api.update(extra)
    return api


def status(answer: Any) -> str:
    """
    @return: the gateway's member of an answer's C{Cache-Status}.
    """
    value = answer.header("cache-status")
    assert value is not None, "no Cache-Status"
    return value


class CacheControlTests(SynchronousTestCase):
    """
    L{cacheControl}, L{freshnessLifetime}, L{storable},
    L{correctedInitialAge}, L{varyNames}, L{etagMatches}, L{cacheStatus}.
    """

    def test_parse(self) -> None:
        """
        Directives are read over several lines, case-insensitively, quoted
        values unquoted (commas inside them kept), the first of a directive
        given twice kept.
        """
        self.assertEqual(
            cacheControl([b'Max-Age=60, private="set-cookie, x"', b"no-cache, max-age=1"]),
            {b"max-age": b"60", b"private": b"set-cookie, x", b"no-cache": None},
        )
        self.assertEqual(cacheControl(None), {})

    def test_lifetime(self) -> None:
        """
        s-maxage wins over max-age, which wins over Expires minus Date;
        without any, the API's ttl for a heuristically cacheable status or
        a public answer, and nothing for another status; no-cache and an
        invalid max-age make it 0; an invalid Expires is in the past.
        """
        cc = cacheControl
        date = 1000.0
        expires = [datetimeToString(1300)]
        self.assertEqual(
            freshnessLifetime(200, cc([b"max-age=60, s-maxage=90"]), date, expires, 5), 90
        )
        self.assertEqual(freshnessLifetime(200, cc([b"max-age=60"]), date, expires, 5), 60)
        self.assertEqual(freshnessLifetime(200, {}, date, expires, 5), 300)
        self.assertEqual(freshnessLifetime(200, {}, date, [b"0"], 5), 0)
        self.assertEqual(freshnessLifetime(404, {}, date, None, 5), 5)
        self.assertIsNone(freshnessLifetime(302, {}, date, None, 5))
        self.assertIsNone(freshnessLifetime(500, {}, date, None, 5))
        self.assertEqual(freshnessLifetime(302, cc([b"public"]), date, None, 5), 5)
        self.assertEqual(freshnessLifetime(500, cc([b"max-age=3"]), date, None, 5), 3)
        self.assertEqual(freshnessLifetime(200, cc([b"no-cache, max-age=60"]), date, None, 5), 0)
        self.assertEqual(freshnessLifetime(200, cc([b"max-age=soon"]), date, None, 5), 0)

    def test_storable(self) -> None:
        """
        Refused, with a reason: 206 and 304, no-store, private, Set-Cookie,
        Vary: *, and a request that carried Authorization unless the answer
        says public, s-maxage or must-revalidate.
        """
        cc = cacheControl
        self.assertIsNone(storable(200, {}, {}, False))
        self.assertEqual(storable(206, {}, {}, False), "status")
        self.assertEqual(storable(304, {}, {}, False), "status")
        self.assertEqual(storable(200, cc([b"no-store"]), {}, False), "no-store")
        self.assertEqual(storable(200, cc([b'private="x"']), {}, False), "private")
        self.assertEqual(storable(200, {}, {b"set-cookie": [b"a=b"]}, False), "set-cookie")
        self.assertEqual(storable(200, {}, {b"vary": [b"Accept, *"]}, False), "vary-star")
        self.assertEqual(storable(200, {}, {}, True), "authorization")
        for allowed in (b"public", b"s-maxage=5", b"must-revalidate"):
            self.assertIsNone(storable(200, cc([allowed]), {}, True), allowed)

    def test_age(self) -> None:
        """
        The corrected initial age: the larger of the apparent age (now
        minus Date) and Age plus the time the request took.
        """
        self.assertEqual(correctedInitialAge(None, 100.0, 99.0, 100.0), 1.0)
        self.assertEqual(correctedInitialAge([b"30"], 100.0, 99.0, 100.0), 31.0)
        self.assertEqual(correctedInitialAge([b"3"], 90.0, 100.0, 100.0), 10.0)
        self.assertEqual(correctedInitialAge([b"junk"], None, 100.0, 100.0), 0.0)

    def test_vary(self) -> None:
        """
        Vary names: lower case, sorted, each once; None for *.
        """
        self.assertEqual(
            varyNames([b"Accept-Language, accept", b"Accept"]), (b"accept", b"accept-language")
        )
        self.assertEqual(varyNames(None), ())
        self.assertIsNone(varyNames([b"*"]))

    def test_etags(self) -> None:
        """
        If-None-Match matches by the weak comparison, or with *.
        """
        self.assertTrue(etagMatches([b'"x", W/"v1"'], b'"v1"'))
        self.assertTrue(etagMatches([b'"v1"'], b'W/"v1"'))
        self.assertTrue(etagMatches([b"*"], b'"v1"'))
        self.assertFalse(etagMatches([b'"v2"'], b'"v1"'))
        self.assertFalse(etagMatches([b'"v2"'], None))

    def test_cacheStatus(self) -> None:
        """
        The members of RFC 9211, in its order.
        """
        self.assertEqual(cacheStatus(True, ttl=41.7), b"gateway; hit; ttl=41")
        self.assertEqual(
            cacheStatus(False, "stale", 304, stored=False), b"gateway; fwd=stale; fwd-status=304"
        )
        self.assertEqual(
            cacheStatus(False, "uri-miss", stored=True, collapsed=False),
            b"gateway; fwd=uri-miss; stored; collapsed=?0",
        )
        self.assertEqual(
            cacheStatus(False, "miss", detail="redis-unavailable"),
            b"gateway; fwd=miss; detail=redis-unavailable",
        )


class EntryTests(SynchronousTestCase):
    """
    L{Entry} and its bytes.
    """

    def entry(self) -> Entry:
        return Entry(
            200,
            b"OK",
            [(b"etag", b'"v1"'), (b"x-a", b"1"), (b"x-a", b"\xe9")],
            b"\x00body\xff",
            1000.0,
            2.0,
            60.0,
            300.0,
            (b"accept",),
            b"=text/html",
        )

    def test_freshness(self) -> None:
        """
        Fresh while its age is under its lifetime, kept until lifetime plus
        keep; its validators are read from its headers.
        """
        entry = self.entry()
        self.assertEqual(entry.etag, b'"v1"')
        self.assertTrue(entry.validated)
        self.assertEqual(entry.age(1010.0), 12.0)
        self.assertTrue(entry.fresh(1057.9))
        self.assertFalse(entry.fresh(1058.0))
        self.assertFalse(entry.expired(1357.9))
        self.assertTrue(entry.expired(1358.0))

    def test_roundTrip(self) -> None:
        """
        An entry's bytes give it back, every field; other bytes are
        refused.
        """
        entry = self.entry()
        again = decodeEntry(encodeEntry(entry))
        for name in Entry.__slots__:
            self.assertEqual(getattr(again, name), getattr(entry, name), name)
        self.assertRaises(EntryError, decodeEntry, b"GWC1\x00\x00\x00\x09{}")
        self.assertRaises(EntryError, decodeEntry, b"nonsense")
        self.assertRaises(EntryError, decodeEntry, encodeEntry(entry)[:10])


class MemoryStoreTests(SynchronousTestCase):
    """
    L{MemoryStore}: bounded in bytes, least recently used dropped first.
    """

    def entry(self, size: int, variant: bytes = b"") -> Entry:
        return Entry(200, b"OK", [], b"x" * size, 0.0, 0.0, 60.0, 0.0, (), variant)

    def test_bound(self) -> None:
        """
        Thousands of distinct keys never hold more than the bound; the
        least recently used go first, and one looked up recently stays.
        """
        store = MemoryStore(100_000)
        store.put(b"keep", "a", self.entry(500))
        for i in range(5000):
            store.put(b"k%d" % (i,), "a", self.entry(1000))
            self.assertLessEqual(store.bytes, 100_000)
            if i % 10 == 0:
                self.assertEqual(store.lookup(b"keep", lambda names: b"", 0.0)[0], "found")
        self.assertGreater(store.evictions, 4900)
        self.assertEqual(store.lookup(b"k0", lambda names: b"", 0.0), ("uri-miss", None))
        self.assertEqual(store.lookup(b"k4999", lambda names: b"", 0.0)[0], "found")
        self.assertEqual(len(store), store.snapshot()["entries"])
        self.assertFalse(store.put(b"huge", "a", self.entry(200_000)))

    def test_purge(self) -> None:
        """
        A purge drops the entries of one API, and their bytes.
        """
        store = MemoryStore(100_000)
        store.put(b"1", "a", self.entry(100))
        store.put(b"2", "b", self.entry(100))
        store.put(b"3", "a", self.entry(100, b"v"))
        self.assertEqual(store.purge("a"), 2)
        self.assertEqual(store.bytes, self.entry(100).size + len(b"2"))
        self.assertEqual(len(store), 1)

    def test_keysCounted(self) -> None:
        """
        The keys count in the bound: entries with small bodies under long
        keys (a client's long targets) do not hold many times the bound,
        and dropping an entry, a record or an API gives their bytes back.
        """
        store = MemoryStore(100_000)
        for i in range(1000):
            store.put(b"%08d" % (i,) + b"/" * 8000, "a", self.entry(10))
        held = sum(
            len(k) + sum(e.size for e in r.variants.values()) for k, r in store._records.items()
        )
        self.assertLessEqual(held, 100_000)
        self.assertEqual(store.bytes, held)
        store.purge("a")
        self.assertEqual(store.bytes, 0)
        gone = Entry(200, b"OK", [], b"x", 0.0, 0.0, 1.0, 0.0)
        store.put(b"k" * 100, "a", gone)
        self.assertEqual(store.lookup(b"k" * 100, lambda names: b"", 10.0), ("uri-miss", None))
        self.assertEqual(store.bytes, 0)
        self.assertFalse(store.put(b"k" * 100_000, "a", self.entry(10)))
        self.assertEqual(store.bytes, 0)


class HitAndMissTests(SynchronousTestCase):
    """
    Hits and misses through the proxy.
    """

    def test_missThenHit(self) -> None:
        """
        The first GET goes upstream and is stored; the next ones are
        answered from the cache, their Age growing, the body and headers
        the backend's, until the ttl passes: then the backend is asked
        again.
        """
        gw = CacheGateway([cachedAPI({"ttl": 10})])
        gw.backend.auto = ok(b"hello", content_type=b"text/plain")
        first = gw.request("GET", "/a/x")
        self.assertEqual((first.code, first.body), (200, b"hello"))
        self.assertEqual(status(first), "gateway; fwd=uri-miss; stored")
        gw.clock.advance(4)
        second = gw.request("GET", "/a/x")
        self.assertEqual((second.code, second.body), (200, b"hello"))
        self.assertEqual(status(second), "gateway; hit; ttl=6")
        self.assertEqual(second.header("age"), "4")
        self.assertEqual(second.header("content-type"), "text/plain")
        self.assertEqual(second.header("content-length"), "5")
        self.assertEqual(second.header("via"), "1.1 gateway")
        self.assertEqual(len(gw.backend.calls), 1)
        gw.clock.advance(6)
        third = gw.request("GET", "/a/x")
        # (Without a validator to revalidate it with, a stale entry is gone.)
        self.assertEqual(status(third), "gateway; fwd=uri-miss; stored")
        self.assertEqual(len(gw.backend.calls), 2)

    def test_keys(self) -> None:
        """
        Another path or query is another entry; so is another API.
        """
        gw = CacheGateway(
            [cachedAPI({"ttl": 10}), cachedAPI({"ttl": 10}, name="b", urlPattern="/b/*")]
        )
        gw.backend.auto = ok()
        for target in ("/a/x", "/a/y", "/a/x?q=1", "/b/x"):
            self.assertEqual(status(gw.request("GET", target)), "gateway; fwd=uri-miss; stored")
        for target in ("/a/x", "/a/y", "/a/x?q=1", "/b/x"):
            self.assertEqual(status(gw.request("GET", target))[:12], "gateway; hit")
        self.assertEqual(len(gw.backend.calls), 4)

    def test_hostKeys(self) -> None:
        """
        The host name of the request's Host is part of the key, in any
        case and without its port (the gateways of a fleet listen on ports
        of their own): another name is another entry.
        """
        gw = CacheGateway([cachedAPI({"ttl": 10})])
        gw.backend.auto = ok()
        requests = [
            ("one.example:8080", "fwd=uri-miss"),
            ("ONE.example:9090", "hit"),
            ("one.example", "hit"),
            ("two.example:8080", "fwd=uri-miss"),
        ]
        for host, expected in requests:
            answer = gw.send("GET", "/a/x", host=host).answer()
            self.assertIn(expected, status(answer), host)

    def test_schemeKeys(self) -> None:
        """
        The scheme the request came with is part of the key (RFC 9111 2:
        the target URI's): what a backend answered to C{http}, such as a
        redirect to C{https}, is never served to an C{https} client, where
        it would loop.  A change (an unsafe method that succeeded) through
        either scheme drops the entries of both.
        """
        gw = CacheGateway([cachedAPI({"ttl": 10})])

        def answer(call: Any) -> None:
            if call.header(b"x-forwarded-proto") == b"https":
                call.answer(200, b"hello")
            else:
                call.answer(301, b"", {b"location": b"https://gw/a/x"}, b"Moved Permanently")

        gw.backend.auto = answer
        self.assertEqual(gw.send("GET", "/a/x").answer().code, 301)
        self.assertIn("hit", status(gw.send("GET", "/a/x").answer()))
        secure = gw.send("GET", "/a/x", secure=True).answer()
        self.assertEqual(
            (secure.code, secure.body, status(secure)[:21]),
            (200, b"hello", "gateway; fwd=uri-miss"),
        )
        self.assertIn("hit", status(gw.send("GET", "/a/x", secure=True).answer()))
        self.assertEqual(gw.send("GET", "/a/x").answer().code, 301)
        self.assertEqual(len(gw.backend.calls), 2)
        # A change through either scheme drops the entries of both.
        gw.backend.auto = ok()
        self.assertEqual(gw.send("POST", "/a/x", secure=True).answer().code, 200)
        self.assertIn("fwd=uri-miss", status(gw.send("GET", "/a/x").answer()))
        self.assertIn("fwd=uri-miss", status(gw.send("GET", "/a/x", secure=True).answer()))

    def test_backendLifetime(self) -> None:
        """
        The backend's s-maxage (else max-age) wins over the API's ttl; its
        Age counts in the entry's age.
        """
        gw = CacheGateway([cachedAPI({"ttl": 1000})])
        gw.backend.auto = ok(cache_control=b"max-age=100, s-maxage=30", age=b"10")
        gw.request("GET", "/a/x")
        gw.clock.advance(5)
        hit = gw.request("GET", "/a/x")
        self.assertEqual((status(hit), hit.header("age")), ("gateway; hit; ttl=15", "15"))
        gw.clock.advance(15)
        self.assertEqual(status(gw.request("GET", "/a/x")), "gateway; fwd=uri-miss; stored")

    def test_notStored(self) -> None:
        """
        Answers with no-store, private, Set-Cookie or Vary: *, a status
        without explicit freshness that is not heuristically cacheable
        (a 302, a 500), or stale on arrival without a validator are sent
        on but not stored: the next request goes upstream again.
        """
        cases = [
            ({b"cache-control": b"no-store"}, 200, "no-store"),
            ({b"cache-control": b"private, max-age=60"}, 200, "private"),
            ({b"set-cookie": b"s=1"}, 200, "set-cookie"),
            ({b"vary": b"*"}, 200, "vary-star"),
            ({b"location": b"/b"}, 302, "no-lifetime"),
            ({}, 500, "no-lifetime"),
            ({b"cache-control": b"max-age=0"}, 200, "stale"),
        ]
        for headers, code, reason in cases:
            gw = CacheGateway([cachedAPI({"ttl": 10})])
            gw.backend.auto = lambda call, c=code, h=headers: call.answer(c, b"x", h)
            for _ in range(2):
                answer = gw.request("GET", "/a/x")
                self.assertEqual(answer.code, code)
                self.assertEqual(status(answer)[-len(reason) - 7 :], "detail=" + reason)
            self.assertEqual(len(gw.backend.calls), 2, reason)

    def test_explicitFreshnessStores(self) -> None:
        """
        A status that is not heuristically cacheable is stored with an
        explicit lifetime; a 404 with the API's ttl.
        """
        gw = CacheGateway([cachedAPI({"ttl": 10})])
        gw.backend.auto = lambda call: call.answer(
            302 if call.uri == b"/a/r" else 404, b"", {b"cache-control": b"max-age=60"}
        )
        for target in ("/a/r", "/a/r", "/a/missing", "/a/missing"):
            gw.request("GET", target)
        self.assertEqual(len(gw.backend.calls), 2)

    def test_authorization(self) -> None:
        """
        An answer to a request that carried Authorization upstream is not
        stored, unless it says public (or s-maxage, must-revalidate).
        """
        gw = CacheGateway([cachedAPI({"ttl": 10})])
        gw.backend.auto = ok()
        creds = [("Authorization", "Bearer t")]
        self.assertEqual(
            status(gw.request("GET", "/a/x", creds)), "gateway; fwd=uri-miss; detail=authorization"
        )
        gw.request("GET", "/a/x", creds)
        self.assertEqual(len(gw.backend.calls), 2)
        gw.backend.auto = ok(cache_control=b"public")
        gw.request("GET", "/a/y", creds)
        self.assertEqual(status(gw.request("GET", "/a/y", creds))[:12], "gateway; hit")
        self.assertEqual(len(gw.backend.calls), 3)

    def test_largeBodyNotStored(self) -> None:
        """
        A body past maxBodySize streams whole to the client and is not
        stored: announced by its length, or growing past the limit while
        chunked.
        """
        gw = CacheGateway([cachedAPI({"ttl": 10, "maxBodySize": 10})])
        gw.backend.auto = ok(b"x" * 11)
        answer = gw.request("GET", "/a/x")
        self.assertEqual(
            (answer.body, status(answer)), (b"x" * 11, "gateway; fwd=uri-miss; detail=too-large")
        )
        gw.backend.auto = None
        client = gw.send("GET", "/a/y")
        streamed = gw.backend.calls[-1].stream(headers={b"content-length": b"12"}, length=None)
        streamed.send(b"123456")
        # (Stored, it said, as the head went: the body outgrew the limit
        # only then.)
        self.assertIn("stored", status(client.answer()))
        streamed.send(b"789012")
        streamed.end()
        self.assertTrue(client.answer().body.endswith(b"123456789012"), client.answer().body)
        gw.backend.auto = ok(b"other")
        self.assertEqual(gw.request("GET", "/a/y").body, b"other")
        self.assertEqual(len(gw.backend.calls), 3)

    def test_streamedStored(self) -> None:
        """
        A body that streams in chunks reaches the client as it comes and,
        once whole, is stored; one that breaks half-way is not.
        """
        gw = CacheGateway([cachedAPI({"ttl": 10})])
        client = gw.send("GET", "/a/x")
        streamed = gw.backend.calls[0].stream(length=8)
        streamed.send(b"abcd")
        self.assertTrue(client.transport.value().endswith(b"abcd"))
        streamed.send(b"efgh")
        streamed.end()
        self.assertEqual(client.answer().body, b"abcdefgh")
        self.assertEqual(gw.request("GET", "/a/x").body, b"abcdefgh")
        client = gw.send("GET", "/a/broken")
        streamed = gw.backend.calls[1].stream(length=8)
        streamed.send(b"abcd")
        streamed.breaks()
        gw.send("GET", "/a/broken")
        self.assertEqual(len(gw.backend.calls), 3)

    def test_methods(self) -> None:
        """
        Another method than GET and HEAD goes upstream (fwd=method); a
        successful one drops the entry of its URI (RFC 9111 4.4), a failed
        one does not.
        """
        gw = CacheGateway([cachedAPI({"ttl": 10})])
        gw.backend.auto = lambda call: call.answer(500 if call.uri == b"/a/fail" else 200)
        gw.request("GET", "/a/x")
        gw.request("GET", "/a/fail")
        post = gw.request("POST", "/a/fail", [("Content-Length", "0")])
        self.assertEqual(status(post), "gateway; fwd=method")
        self.assertEqual(status(gw.request("GET", "/a/x"))[:12], "gateway; hit")
        gw.request("PUT", "/a/x", [("Content-Length", "0")])
        self.assertEqual(status(gw.request("GET", "/a/x")), "gateway; fwd=uri-miss; stored")

    def test_head(self) -> None:
        """
        A HEAD is answered from a GET's entry, without the body but with
        its length; a HEAD without an entry goes upstream as a HEAD and is
        not stored.
        """
        gw = CacheGateway([cachedAPI({"ttl": 10})])
        gw.backend.auto = ok(b"hello")
        head = gw.request("HEAD", "/a/x")
        self.assertEqual(
            (gw.backend.calls[0].method, status(head)), (b"HEAD", "gateway; fwd=uri-miss")
        )
        gw.request("GET", "/a/x")
        head = gw.request("HEAD", "/a/x")
        self.assertEqual(status(head), "gateway; hit; ttl=10")
        self.assertEqual((head.body, head.header("content-length")), (b"", "5"))
        self.assertEqual(len(gw.backend.calls), 2)

    def test_clientConditions(self) -> None:
        """
        A hit whose request holds If-None-Match matching the entry's ETag,
        or If-Modified-Since not before its Last-Modified, is a 304.
        """
        gw = CacheGateway([cachedAPI({"ttl": 10})])
        modified = datetimeToString(0)
        gw.backend.auto = ok(b"hello", etag=b'"v1"', last_modified=modified)
        gw.request("GET", "/a/x")
        hit = gw.request("GET", "/a/x", [("If-None-Match", 'W/"v1"')])
        self.assertEqual((hit.code, hit.body, status(hit)[:12]), (304, b"", "gateway; hit"))
        self.assertEqual(hit.header("etag"), '"v1"')
        self.assertEqual(gw.request("GET", "/a/x", [("If-None-Match", '"v2"')]).code, 200)
        since = datetimeToString(5).decode()
        self.assertEqual(gw.request("GET", "/a/x", [("If-Modified-Since", since)]).code, 304)
        self.assertEqual(len(gw.backend.calls), 1)

    def test_requestDirectives(self) -> None:
        """
        The client's Cache-Control is ignored by default; with
        requestCacheControl: honour, no-cache (or max-age=0) fetches again
        (fwd=request) and stores, no-store is answered but not stored.
        """
        gw = CacheGateway([cachedAPI({"ttl": 10})])
        gw.backend.auto = ok()
        gw.request("GET", "/a/x")
        self.assertEqual(
            status(gw.request("GET", "/a/x", [("Cache-Control", "no-cache")]))[:12], "gateway; hit"
        )
        gw = CacheGateway([cachedAPI({"ttl": 10, "requestCacheControl": "honour"})])
        gw.backend.auto = ok()
        gw.request("GET", "/a/x")
        for directive in ("no-cache", "max-age=0"):
            answer = gw.request("GET", "/a/x", [("Cache-Control", directive)])
            self.assertEqual(status(answer), "gateway; fwd=request; stored")
        answer = gw.request("GET", "/a/y", [("Cache-Control", "no-store")])
        self.assertEqual(status(answer), "gateway; fwd=uri-miss; detail=request-no-store")
        self.assertEqual(status(gw.request("GET", "/a/y")), "gateway; fwd=uri-miss; stored")
        self.assertEqual(len(gw.backend.calls), 5)

    def test_upstreamFailure(self) -> None:
        """
        A miss whose backend cannot be reached is the gateway's 502, with
        its Cache-Status, and nothing stored.
        """
        gw = CacheGateway([cachedAPI({"ttl": 10})])
        gw.backend.auto = lambda call: call.fail(UpstreamConnectError("refused"))
        answer = gw.request("GET", "/a/x")
        self.assertEqual((answer.code, status(answer)), (502, "gateway; fwd=uri-miss"))
        self.assertEqual(gw.cache.memory.bytes, 0)


class VaryTests(SynchronousTestCase):
    """
    The backend's Vary, and the API's varyOn.
    """

    def test_backendVary(self) -> None:
        """
        Answers that vary on Accept-Language are kept per language: each
        request gets the variant of its language, a new language is a
        vary-miss.
        """
        gw = CacheGateway([cachedAPI({"ttl": 10})])

        def answer(call: Call) -> None:
            language = call.header(b"accept-language") or b"none"
            call.answer(200, b"hello in " + language, {b"vary": b"Accept-Language"})

        gw.backend.auto = answer
        en = [("Accept-Language", "en")]
        fr = [("Accept-Language", "fr")]
        self.assertEqual(gw.request("GET", "/a/x", en).body, b"hello in en")
        miss = gw.request("GET", "/a/x", fr)
        self.assertEqual(
            (miss.body, status(miss)), (b"hello in fr", "gateway; fwd=vary-miss; stored")
        )
        self.assertEqual(gw.request("GET", "/a/x", en).body, b"hello in en")
        self.assertEqual(gw.request("GET", "/a/x", fr).body, b"hello in fr")
        self.assertEqual(status(gw.request("GET", "/a/x", [])), "gateway; fwd=vary-miss; stored")
        self.assertEqual(gw.request("GET", "/a/x", []).body, b"hello in none")
        self.assertEqual(len(gw.backend.calls), 3)

    def test_varyOn(self) -> None:
        """
        varyOn header:NAME and query:NAME key entries by the client's
        values: another value is another entry (a uri-miss), the same
        value the same entry.
        """
        gw = CacheGateway([cachedAPI({"ttl": 10, "varyOn": ["header:X-Tenant", "query:page"]})])
        gw.backend.auto = ok()
        requests = [
            ("/a/x?page=1", [("X-Tenant", "t1")]),
            ("/a/x?page=2", [("X-Tenant", "t1")]),
            ("/a/x?page=1", [("X-Tenant", "t2")]),
            ("/a/x?page=1&other=3", [("X-Tenant", "t1")]),
            ("/a/x?page=1", []),
        ]
        for target, headers in requests:
            self.assertIn("fwd=uri-miss", status(gw.request("GET", target, headers)))
        for target, headers in requests:
            self.assertIn("hit", status(gw.request("GET", target, headers)))
        self.assertEqual(len(gw.backend.calls), 5)

    def test_consumer(self) -> None:
        """
        varyOn consumer keys entries per authenticated consumer; the
        authentication runs before the cache, so a request without a
        credential is refused, never answered from the cache.
        """
        consumers = [
            {"name": "alice", "credentials": [{"type": "key", "key": "alice-secret-key-1"}]},
            {"name": "bob", "credentials": [{"type": "key", "key": "bob-secret-key-22"}]},
        ]
        api = cachedAPI(
            {"ttl": 10, "varyOn": ["consumer"]},
            auth={"methods": ["key"], "keyNames": ["header:apikey"]},
        )
        gw = CacheGateway([api], consumers)
        gw.backend.auto = lambda call: call.answer(200, call.header(b"x-consumer-name") or b"?")
        alice = [("apikey", "alice-secret-key-1")]
        bob = [("apikey", "bob-secret-key-22")]
        self.assertEqual(gw.request("GET", "/a/x", alice).body, b"alice")
        self.assertEqual(gw.request("GET", "/a/x", bob).body, b"bob")
        self.assertEqual(gw.request("GET", "/a/x", alice).body, b"alice")
        self.assertEqual(gw.request("GET", "/a/x", bob).body, b"bob")
        self.assertEqual(len(gw.backend.calls), 2)
        refused = gw.request("GET", "/a/x")
        self.assertEqual(refused.code, 401)
        self.assertIsNone(refused.header("cache-status"))

    def test_consumersKeptApart(self) -> None:
        """
        Without varyOn consumer, an answer made for a consumer the API's
        auth authenticated (the credential hidden from the backend, which
        is told the consumer's name) is that consumer's own, as one to a
        request carrying Authorization: it is not stored, so another
        consumer never gets it; unless the backend says it may be shared
        (public).  A request acting as the anonymous consumer presents no
        credential: its answers are stored as any.
        """
        consumers = [
            {"name": "alice", "credentials": [{"type": "key", "key": "alice-secret-key-1"}]},
            {"name": "bob", "credentials": [{"type": "key", "key": "bob-secret-key-22"}]},
            {"name": "guest"},
        ]
        api = cachedAPI(
            {"ttl": 10},
            auth={"methods": ["key"], "keyNames": ["header:apikey"], "anonymous": "guest"},
        )
        gw = CacheGateway([api], consumers)
        gw.backend.auto = lambda call: call.answer(200, call.header(b"x-consumer-name") or b"?")
        alice = [("apikey", "alice-secret-key-1")]
        bob = [("apikey", "bob-secret-key-22")]
        first = gw.request("GET", "/a/x", alice)
        self.assertEqual(first.body, b"alice")
        self.assertEqual(status(first), "gateway; fwd=uri-miss; detail=authorization")
        self.assertEqual(gw.request("GET", "/a/x", bob).body, b"bob")
        self.assertEqual(gw.request("GET", "/a/x").body, b"guest")
        self.assertEqual(len(gw.backend.calls), 3)
        self.assertEqual(status(gw.request("GET", "/a/guest")), "gateway; fwd=uri-miss; stored")
        self.assertIn("hit", status(gw.request("GET", "/a/guest")))
        gw.backend.auto = lambda call: call.answer(200, b"shared", {b"cache-control": b"public"})
        self.assertEqual(gw.request("GET", "/a/y", alice).body, b"shared")
        self.assertIn("hit", status(gw.request("GET", "/a/y", bob)))

    def test_consumerNeedsAuth(self) -> None:
        """
        varyOn consumer without auth is refused, naming the entry.
        """
        error = self.assertRaises(
            ValidationError, parseResource, "apis", cachedAPI({"ttl": 1, "varyOn": ["consumer"]})
        )
        self.assertEqual(error.field, "cache.varyOn[0]")


class RevalidationTests(SynchronousTestCase):
    """
    A stale entry with a validator is revalidated.
    """

    def test_notModified(self) -> None:
        """
        Stale, the entry's ETag and Last-Modified go upstream as a
        conditional request (the client's own conditions replaced); a 304
        refreshes it and the client gets the stored 200 (fwd=stale;
        fwd-status=304), with the 304's new headers; the next requests
        are hits again.
        """
        gw = CacheGateway([cachedAPI({"ttl": 10})])
        modified = datetimeToString(0)
        gw.backend.auto = ok(b"hello", etag=b'"v1"', last_modified=modified, x_version=b"1")
        gw.request("GET", "/a/x")
        gw.clock.advance(11)
        gw.backend.auto = lambda call: call.answer(304, b"", {b"x-version": b"2"})
        answer = gw.request("GET", "/a/x", [("If-None-Match", '"old"')])
        call = gw.backend.calls[-1]
        self.assertEqual(call.header(b"if-none-match"), b'"v1"')
        self.assertEqual(call.header(b"if-modified-since"), modified)
        self.assertEqual((answer.code, answer.body), (200, b"hello"))
        self.assertEqual(status(answer), "gateway; fwd=stale; fwd-status=304")
        self.assertEqual(answer.header("x-version"), "2")
        self.assertEqual(answer.header("age"), "0")
        hit = gw.request("GET", "/a/x")
        self.assertEqual((hit.body, status(hit)), (b"hello", "gateway; hit; ttl=10"))
        self.assertEqual(hit.header("x-version"), "2")
        self.assertEqual(len(gw.backend.calls), 2)
        counts = gw.cache.snapshot()["apis"]["a"]
        self.assertEqual((counts["stale"], counts["revalidated"], counts["hit"]), (1, 1, 1))

    def test_changed(self) -> None:
        """
        A revalidation answered with a new 200 replaces the entry.
        """
        gw = CacheGateway([cachedAPI({"ttl": 10})])
        gw.backend.auto = ok(b"one", etag=b'"v1"')
        gw.request("GET", "/a/x")
        gw.clock.advance(11)
        gw.backend.auto = ok(b"two", etag=b'"v2"')
        answer = gw.request("GET", "/a/x")
        self.assertEqual((answer.body, status(answer)), (b"two", "gateway; fwd=stale; stored"))
        self.assertEqual(gw.request("GET", "/a/x").body, b"two")

    def test_keepStale(self) -> None:
        """
        A stale entry is kept keepStale seconds to be revalidated, then
        dropped: past that, a plain miss.
        """
        gw = CacheGateway([cachedAPI({"ttl": 10, "keepStale": 20})])
        gw.backend.auto = ok(b"one", etag=b'"v1"')
        gw.request("GET", "/a/x")
        gw.clock.advance(31)
        self.assertEqual(status(gw.request("GET", "/a/x")), "gateway; fwd=uri-miss; stored")
        self.assertIsNone(gw.backend.calls[-1].header(b"if-none-match"))

    def test_noCacheAnswer(self) -> None:
        """
        An answer with no-cache and a validator is stored, and revalidated
        before every use; one without a validator is not stored.
        """
        gw = CacheGateway([cachedAPI({"ttl": 10})])
        gw.backend.auto = ok(b"one", etag=b'"v1"', cache_control=b"no-cache")
        gw.request("GET", "/a/x")
        gw.backend.auto = lambda call: call.answer(304, b"", {b"cache-control": b"no-cache"})
        self.assertEqual(status(gw.request("GET", "/a/x")), "gateway; fwd=stale; fwd-status=304")
        self.assertEqual(gw.backend.calls[-1].header(b"if-none-match"), b'"v1"')


class CollapsingTests(SynchronousTestCase):
    """
    Concurrent misses of one key make one backend call.
    """

    def test_oneCall(self) -> None:
        """
        Five concurrent misses of one key: one goes upstream, the four
        others wait and, once its body is whole and stored, are answered
        from it (Cache-Status says collapsed).
        """
        gw = CacheGateway([cachedAPI({"ttl": 10})])
        clients = [gw.send("GET", "/a/x") for _ in range(5)]
        self.assertEqual(len(gw.backend.calls), 1)
        self.assertFalse(any(c.answered for c in clients))
        streamed = gw.backend.calls[0].stream(length=5)
        streamed.send(b"hel")
        self.assertFalse(any(c.answered for c in clients[1:]))
        streamed.send(b"lo")
        streamed.end()
        for client in clients[1:]:
            answer = client.answer()
            self.assertEqual((answer.code, answer.body), (200, b"hello"))
            self.assertEqual(status(answer), "gateway; fwd=uri-miss; collapsed")
        self.assertEqual(clients[0].answer().body, b"hello")
        self.assertEqual(len(gw.backend.calls), 1)
        self.assertEqual(gw.cache.snapshot()["apis"]["a"]["collapsed"], 4)

    def test_uncacheable(self) -> None:
        """
        When the first answer cannot be stored, those waiting go upstream
        themselves (collapsed=?0), and the next requests of the key do
        not wait for one another.
        """
        gw = CacheGateway([cachedAPI({"ttl": 10})])
        clients = [gw.send("GET", "/a/x") for _ in range(3)]
        gw.backend.calls[0].answer(200, b"mine", {b"cache-control": b"private"})
        self.assertEqual(len(gw.backend.calls), 3)
        for call in gw.backend.calls[1:]:
            call.answer(200, b"theirs", {b"cache-control": b"private"})
        self.assertEqual(
            [status(c.answer()) for c in clients],
            ["gateway; fwd=uri-miss; detail=private"]
            + ["gateway; fwd=uri-miss; collapsed=?0; detail=private"] * 2,
        )
        later = [gw.send("GET", "/a/x") for _ in range(2)]
        self.assertEqual(len(gw.backend.calls), 5)
        del later

    def test_uncacheableKeysBounded(self) -> None:
        """
        The keys found uncacheable are remembered in a few bytes each, not
        as the keys themselves: those hold the request's target, as long
        as a client makes it, and up to 10,000 of them are remembered
        outside the memory store's bound.  They still pass.
        """
        gw = CacheGateway([cachedAPI({"ttl": 10})])
        gw.backend.auto = ok(set_cookie=b"session=1")
        for i in range(50):
            gw.send("GET", f"/a/{i}?{'q' * 4000}").answer()
        self.assertEqual(len(gw.cache._passes), 50)
        self.assertLessEqual(sum(len(k) for k in gw.cache._passes), 50 * 16)
        gw.backend.auto = None
        gw.send("GET", f"/a/7?{'q' * 4000}")
        gw.send("GET", f"/a/7?{'q' * 4000}")
        self.assertEqual(len(gw.backend.calls), 52)

    def test_timeout(self) -> None:
        """
        A request waits at most collapseTimeout for the first one's answer,
        then goes upstream itself.
        """
        gw = CacheGateway([cachedAPI({"ttl": 10, "collapseTimeout": 2})])
        gw.send("GET", "/a/x")
        waiting = gw.send("GET", "/a/x")
        gw.clock.advance(1.9)
        self.assertEqual(len(gw.backend.calls), 1)
        gw.clock.advance(0.2)
        self.assertEqual(len(gw.backend.calls), 2)
        gw.backend.calls[1].answer()
        self.assertEqual(status(waiting.answer()), "gateway; fwd=uri-miss; stored; collapsed=?0")

    def test_leaderGone(self) -> None:
        """
        When the first request's client leaves, those waiting go upstream
        at once; a waiting client that leaves is forgotten.
        """
        gw = CacheGateway([cachedAPI({"ttl": 10})])
        first = gw.send("GET", "/a/x")
        second = gw.send("GET", "/a/x")
        third = gw.send("GET", "/a/x")
        third.leave()
        first.leave()
        self.assertEqual(len(gw.backend.calls), 2)
        gw.backend.calls[1].answer()
        self.assertEqual(second.answer().code, 200)
        self.assertEqual(len(gw.backend.calls), 2)

    def test_off(self) -> None:
        """
        collapseTimeout 0: each miss goes upstream.
        """
        gw = CacheGateway([cachedAPI({"ttl": 10, "collapseTimeout": 0})])
        for _ in range(3):
            gw.send("GET", "/a/x")
        self.assertEqual(len(gw.backend.calls), 3)


class PurgeTests(SynchronousTestCase):
    """
    Purging an API's entries in a process.
    """

    def test_purge(self) -> None:
        """
        A purge drops the API's entries (not others'), so the next request
        goes upstream; an answer fetched before the purge is not stored
        after it.
        """
        gw = CacheGateway(
            [cachedAPI({"ttl": 10}), cachedAPI({"ttl": 10}, name="b", urlPattern="/b/*")]
        )
        gw.backend.auto = ok()
        gw.request("GET", "/a/x")
        gw.request("GET", "/b/x")
        gw.backend.auto = None
        inFlight = gw.send("GET", "/a/y")
        self.assertEqual(gw.cache.purgeLocal("a"), 1)
        gw.backend.calls[-1].answer()
        self.assertIn("stored", status(inFlight.answer()))
        gw.backend.auto = ok()
        self.assertIn("fwd=uri-miss", status(gw.request("GET", "/a/x")))
        self.assertIn("fwd=uri-miss", status(gw.request("GET", "/a/y")))
        self.assertIn("hit", status(gw.request("GET", "/b/x")))


class PipelineTests(SynchronousTestCase):
    """
    The cache among the filters, routings and counts.
    """

    def test_afterHooks(self) -> None:
        """
        An answer from the cache passes the filters' after hooks: a
        response transform applies to hits as to misses.
        """
        api = cachedAPI({"ttl": 10}, transform={"response": {"set": {"X-Served": "gw"}}})
        gw = CacheGateway([api])
        gw.backend.auto = ok()
        self.assertEqual(gw.request("GET", "/a/x").header("x-served"), "gw")
        hit = gw.request("GET", "/a/x")
        self.assertEqual((hit.header("x-served"), status(hit)[:12]), ("gw", "gateway; hit"))

    def test_rateLimited(self) -> None:
        """
        The rate limit counts hits: past it, a 429, not a hit.
        """
        gw = CacheGateway([cachedAPI({"ttl": 10}, rateLimit={"rate": 1, "burst": 2})])
        gw.backend.auto = ok()
        self.assertEqual([gw.request("GET", "/a/x").code for _ in range(3)], [200, 200, 429])

    def test_splitRouting(self) -> None:
        """
        The cluster a split routing chose is part of the key: the answer
        of one cluster is not served for the other.
        """
        routing = {
            "name": "r",
            "api": "a",
            "cluster": "c2",
            "conditions": [{"source": "header", "name": "X-Canary", "op": "eq", "value": "1"}],
        }
        gw = CacheGateway([cachedAPI({"ttl": 10})], routings=[routing])
        gw.backend.auto = lambda call: call.answer(
            200, b"canary" if call.header(b"x-canary") else b"main"
        )
        self.assertEqual(gw.request("GET", "/a/x").body, b"main")
        self.assertEqual(gw.request("GET", "/a/x", [("X-Canary", "1")]).body, b"canary")
        self.assertEqual(gw.request("GET", "/a/x").body, b"main")
        self.assertEqual(gw.request("GET", "/a/x", [("X-Canary", "1")]).body, b"canary")
        self.assertEqual(len(gw.backend.calls), 2)

    def test_counts(self) -> None:
        """
        Each answer of a cached API is counted once by what the cache did,
        in the stats (with the hit ratio) and the metrics; an API without
        a cache has no cache counts.
        """
        from prometheus_client.exposition import generate_latest

        from gateway.telemetry.metrics import metricsRegistry

        gw = CacheGateway(
            [cachedAPI({"ttl": 10}), {"name": "b", "urlPattern": "/b", "nodes": [{"cluster": "c"}]}]
        )
        gw.backend.auto = ok()
        for _ in range(4):
            gw.request("GET", "/a/x")
        gw.request("POST", "/a/x", [("Content-Length", "0")])
        gw.request("GET", "/b")
        snapshot = gw.stats.snapshot(gw.manager)
        counts = snapshot["apis"]["a"]["cache"]
        self.assertEqual(
            {k: counts[k] for k in ("hit", "miss", "bypass", "stored")},
            {"hit": 3, "miss": 1, "bypass": 1, "stored": 1},
        )
        self.assertEqual(counts["hitRatio"], 0.75)
        self.assertNotIn("cache", snapshot["apis"]["b"])
        # (The POST dropped the entry.)
        self.assertEqual((snapshot["cache"]["entries"], snapshot["cache"]["bytes"]), (0, 0))
        text = generate_latest(metricsRegistry(gw.stats, gw.manager, None, gw.clock)).decode()
        self.assertIn('gateway_cache_requests_total{api="a",result="hit"} 3.0', text)
        self.assertIn('gateway_cache_stored_total{api="a"} 1.0', text)
        self.assertIn("gateway_cache_memory_bytes", text)

    def test_mergedCounts(self) -> None:
        """
        The stats of several proxy processes add their cache counts and
        memory figures, and compute the hit ratio again.
        """
        from gateway.telemetry.stats import mergeSnapshots

        snapshots: List[Dict[str, Any]] = []
        for hits in (1, 3):
            gw = CacheGateway([cachedAPI({"ttl": 10})])
            gw.backend.auto = ok()
            for _ in range(hits + 1):
                gw.request("GET", "/a/x")
            snapshots.append(gw.stats.snapshot(gw.manager))
        merged = mergeSnapshots(snapshots)
        self.assertEqual(merged["apis"]["a"]["cache"]["hit"], 4)
        self.assertEqual(merged["apis"]["a"]["cache"]["hitRatio"], 4 / 6)
        self.assertEqual(merged["cache"]["limit"], 2 << 20)
        self.assertEqual(merged["cache"]["entries"], 2)
