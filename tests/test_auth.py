"""
Tests for authentication: L{gateway.auth} (the consumer index, password
and token verification, JWKS) and the C{auth} and C{acl} filters of
L{gateway.filters.auth}, with a L{Clock}, fake fetches and synchronous
thread runners: exact, no network, no sleeps.
"""

from __future__ import annotations

import base64
from typing import Any, Dict, List, Optional

from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwtkeys import (
    HS_SECRET,
    ecKey,
    edKey,
    hmacWith,
    jwks,
    publicPEM,
    rsaKey,
    token,
    unsignedToken,
)
from memorygateway import MemoryGateway
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.plugin import IPlugin
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import server
from twisted.web.http_headers import Headers
from twisted.web.test.requesthelper import DummyChannel
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gateway.auth.index import ConsumerIndex, compileConsumers
from gateway.auth.jwks import MIN_REFRESH, REFRESH_INTERVAL, JWKSCache, JWKSRegistry, parseJWKS
from gateway.auth.passwords import PasswordVerifier
from gateway.auth.tokens import Invalid, TokenVerifier
from gateway.filters import FilterRegistry
from gateway.filters.auth import ACLFilter, AuthFilter, AuthServices
from gateway.filters.ratelimit import makeRateLimitFilter
from gateway.interfaces import IFilter, IFilterFactory
from gateway.model.consumers import Auth, JWTSettings
from gateway.model.resources import parseResource
from gateway.model.schema import fromJSON
from gateway.model.secrets import hashPassword
from gateway.pipeline.exchange import EarlyResponse, Exchange

NOW = 1_700_000_000.0

API_KEY = "alice-key-0123456789abcdef"
PASSWORD = "correct horse battery staple"
#: Few rounds: these tests check the logic, not bcrypt's cost.
PASSWORD_HASH = hashPassword(PASSWORD, rounds=4)


def consumers(*bodies: Dict[str, Any]) -> ConsumerIndex:
    """
    @return: the index of the consumers of C{bodies} (their JSON).
    """
    parsed = [parseResource("consumers", body) for body in bodies]
    return compileConsumers({c.name: c for c in parsed})


ALICE = {
    "name": "alice",
    "customId": "c-1",
    "groups": ["gold", "staff"],
    "credentials": [
        {"type": "key", "key": API_KEY},
        {"type": "basic", "username": "alice", "passwordHash": PASSWORD_HASH},
        {
            "type": "jwt",
            "id": "alice-hs",
            "issuer": "alice-iss",
            "algorithm": "HS256",
            "secret": HS_SECRET,
        },
        {
            "type": "jwt",
            "id": "alice-rs",
            "issuer": "alice-rsa",
            "algorithm": "RS256",
            "publicKey": publicPEM(rsaKey()),
        },
    ],
}
BOB = {"name": "bob", "groups": ["silver"], "credentials": []}
GUEST = {"name": "guest", "groups": ["anonymous"]}
CAROL = {
    "name": "carol",
    "credentials": [
        {
            "type": "jwt",
            "id": "carol-es-1",
            "issuer": "carol-es",
            "algorithm": "ES256",
            "publicKey": publicPEM(ecKey()),
        },
        {
            "type": "jwt",
            "id": "carol-ed-1",
            "issuer": "carol-ed",
            "algorithm": "EdDSA",
            "publicKey": publicPEM(edKey()),
        },
    ],
}


def nameOf(outcome: Any) -> str:
    """
    @return: the name of the consumer an outcome authenticates (fails on
        an L{Invalid}).
    """
    return str(outcome.name)


def reasonOf(outcome: Any) -> str:
    """
    @return: why an outcome is L{Invalid} (fails on a consumer).
    """
    return str(outcome.reason)


def claims(**extra: Any) -> Dict[str, Any]:
    base: Dict[str, Any] = {"iss": "alice-iss", "exp": int(NOW) + 600, "sub": "alice"}
    base.update(extra)
    return base


class _Snapshot:
    def __init__(self, index: ConsumerIndex) -> None:
        self.consumers = index


def makeContext(
    index: ConsumerIndex,
    headers: Optional[Dict[bytes, List[bytes]]] = None,
    uri: bytes = b"/a",
) -> Exchange:
    """
    @return: the exchange of a real request with C{headers} to C{uri}, on a
        snapshot whose consumers are C{index}.
    """
    request = server.Request(DummyChannel(), False)
    request.requestHeaders = Headers(headers or {})
    request.uri = uri
    path, _, query = uri.partition(b"?")
    request.path = path
    from urllib.parse import parse_qs

    request.args = parse_qs(query, 1)
    upstream = Headers()
    for name, values in (headers or {}).items():
        upstream.setRawHeaders(name, values)
    return Exchange(request, _Snapshot(index), None, {}, "1.2.3.4", NOW, upstream)


def syncThreads(f: Any, *args: Any) -> Deferred:
    return maybeDeferred(f, *args)


def makeAuthFilter(clock: Clock, fetch: Any = None, **auth: Any) -> AuthFilter:
    config = fromJSON(Auth, auth)
    services = AuthServices(
        clock,
        PasswordVerifier(clock, runInThread=syncThreads),
        JWKSRegistry(clock, fetch=fetch),
    )
    return AuthFilter(config, services)


def basic(user: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


class TokenFailureTests(SynchronousTestCase):
    """
    Every way a token fails: each gives an L{Invalid}, never a consumer.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.index = consumers(ALICE, BOB)

    def verifier(self, **settings: Any) -> TokenVerifier:
        jwt = fromJSON(JWTSettings, settings) if settings else None
        return TokenVerifier(self.clock, jwt)

    def assertInvalid(self, verifier: TokenVerifier, jws: str, reason: str) -> None:
        outcome = verifier.verify(jws.encode(), self.index)
        self.assertIsInstance(outcome, Invalid)
        self.assertEqual(outcome.reason, reason)  # type: ignore[union-attr]

    def test_valid(self) -> None:
        """
        A token signed with a consumer's HS256 secret, naming its issuer,
        authenticates that consumer; one signed with its RSA key (found by
        issuer or by kid) too.
        """
        verifier = self.verifier()
        outcome = verifier.verify(token(HS_SECRET, "HS256", claims()).encode(), self.index)
        self.assertEqual(nameOf(outcome), "alice")
        rs = token(rsaKey(), "RS256", claims(iss="alice-rsa"))
        self.assertEqual(nameOf(verifier.verify(rs.encode(), self.index)), "alice")
        byKid = token(rsaKey(), "RS256", claims(iss="alice-rsa"), kid="alice-rs")
        self.assertEqual(nameOf(verifier.verify(byKid.encode(), self.index)), "alice")

    def test_expired(self) -> None:
        """
        A token whose exp passed more than the leeway ago is refused; within
        the leeway it passes.
        """
        verifier = self.verifier(leeway=30)
        self.assertInvalid(
            verifier, token(HS_SECRET, "HS256", claims(exp=int(NOW) - 31)), "expired"
        )
        within = token(HS_SECRET, "HS256", claims(exp=int(NOW) - 29))
        self.assertEqual(nameOf(verifier.verify(within.encode(), self.index)), "alice")

    def test_noExp(self) -> None:
        """
        A token without exp is refused: it would be valid forever.
        """
        self.assertInvalid(
            self.verifier(), token(HS_SECRET, "HS256", {"iss": "alice-iss"}), "no exp"
        )

    def test_notANumber(self) -> None:
        """
        An exp or nbf that is not a finite number (NaN or Infinity, which
        Python's JSON reader takes though JSON has no such numbers, or an
        integer too large for a float) is refused: a NaN exp compares as
        never passed, and the token would be valid (and cached) forever;
        the too large integer raised out of the verification.
        """
        verifier = self.verifier()
        for bad in (float("nan"), float("inf"), float("-inf"), 10**400):
            self.assertInvalid(
                verifier, token(HS_SECRET, "HS256", claims(exp=bad)), "exp is not a number"
            )
            self.assertInvalid(
                verifier, token(HS_SECRET, "HS256", claims(nbf=bad)), "nbf is not a number"
            )
        self.assertEqual(verifier._cache, {})

    def test_notYetValid(self) -> None:
        """
        A token whose nbf is further than the leeway ahead is refused.
        """
        verifier = self.verifier(leeway=10)
        early = token(HS_SECRET, "HS256", claims(nbf=int(NOW) + 11))
        self.assertInvalid(verifier, early, "not yet valid")
        soon = token(HS_SECRET, "HS256", claims(nbf=int(NOW) + 9))
        self.assertEqual(nameOf(verifier.verify(soon.encode(), self.index)), "alice")

    def test_wrongIssuer(self) -> None:
        """
        With an API issuer, a token of another issuer is refused, even when
        a consumer's credential names that issuer.
        """
        verifier = self.verifier(issuer="https://id.example.com/")
        self.assertInvalid(verifier, token(HS_SECRET, "HS256", claims()), "wrong issuer")

    def test_credentialIssuer(self) -> None:
        """
        A token found by kid must carry the credential's issuer, if it has
        one.
        """
        forged = token(HS_SECRET, "HS256", claims(iss="other"), kid="alice-hs")
        self.assertInvalid(self.verifier(), forged, "no credential for this issuer or kid")

    def test_wrongAudience(self) -> None:
        """
        With audiences, a token for another audience, or with none, is
        refused; one for a listed audience passes.
        """
        verifier = self.verifier(audiences=["orders", "users"])
        self.assertInvalid(
            verifier, token(HS_SECRET, "HS256", claims(aud="billing")), "wrong audience"
        )
        self.assertInvalid(verifier, token(HS_SECRET, "HS256", claims()), "missing claim aud")
        good = token(HS_SECRET, "HS256", claims(aud=["x", "users"]))
        self.assertEqual(nameOf(verifier.verify(good.encode(), self.index)), "alice")

    def test_badSignature(self) -> None:
        """
        A token signed with another secret, or whose payload was changed
        after signing, is refused.
        """
        verifier = self.verifier()
        other = token("another-secret-of-thirty-two-chars!!", "HS256", claims())
        self.assertInvalid(verifier, other, "bad signature")
        header, payload, signature = token(HS_SECRET, "HS256", claims()).split(".")
        tampered = token(HS_SECRET, "HS256", claims(sub="root")).split(".")[1]
        self.assertInvalid(verifier, f"{header}.{tampered}.{signature}", "bad signature")

    def test_algNone(self) -> None:
        """
        An unsigned token (alg none, in any case) is refused.
        """
        verifier = self.verifier()
        self.assertInvalid(verifier, unsignedToken(claims()), "alg none")
        self.assertInvalid(verifier, unsignedToken(claims(), alg="None"), "alg none")

    def test_algorithmConfusion(self) -> None:
        """
        A token signed HS256 with an RS256 credential's public key (the PEM
        as an HMAC secret) is refused: the key verifies RS256 only.  And a
        token claiming RS256 is not verified with an HS256 secret.
        """
        pem = publicPEM(rsaKey()).encode("ascii")
        confused = hmacWith(pem, claims(iss="alice-rsa"))
        self.assertInvalid(self.verifier(), confused, "algorithm not allowed")
        rs = token(rsaKey(), "RS256", claims())
        self.assertInvalid(self.verifier(), rs, "algorithm not allowed")

    def test_keyNotFittingItsAlgorithm(self) -> None:
        """
        A key that does not fit the algorithm it is used for (PyJWT's
        C{InvalidKeyError}: here an HMAC secret given for RS256, which the
        credentials' own checks keep from happening) refuses the token
        rather than failing the request.
        """
        rs = token(rsaKey(), "RS256", claims())
        outcome = self.verifier()._check(rs, b"an-hmac-secret", "RS256")
        self.assertIsInstance(outcome, Invalid)
        self.assertTrue(outcome.reason.startswith("invalid key"), outcome.reason)  # type: ignore[union-attr]

    def test_malformed(self) -> None:
        """
        What is not a JWS at all is refused.
        """
        self.assertIsInstance(self.verifier().verify(b"not.a.token", self.index), Invalid)
        self.assertIsInstance(self.verifier().verify(b"\xff\xfe", self.index), Invalid)

    def test_unknownIssuer(self) -> None:
        """
        A token of an issuer no credential names (and no JWKS) is refused.
        """
        jws = token(HS_SECRET, "HS256", claims(iss="nobody"))
        self.assertInvalid(self.verifier(), jws, "no credential for this issuer or kid")


class AsymmetricCredentialTests(SynchronousTestCase):
    """
    A consumer's own ES256 and EdDSA credentials: tokens signed with their
    private keys name the consumer; another key of the same algorithm, or
    another algorithm than the credential's, is refused.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.index = consumers(ALICE, BOB, CAROL)
        self.verifier = TokenVerifier(self.clock)

    def outcome(self, jws: str) -> Any:
        return self.verifier.verify(jws.encode(), self.index)

    def test_valid(self) -> None:
        """
        A token signed with the consumer's ES256 key, or with its Ed25519
        key (EdDSA), found by its issuer or by the credential's id as kid,
        authenticates that consumer.
        """
        for key, algorithm, issuer in [
            (ecKey(), "ES256", "carol-es"),
            (edKey(), "EdDSA", "carol-ed"),
        ]:
            body = claims(iss=issuer, sub="carol")
            self.assertEqual(nameOf(self.outcome(token(key, algorithm, body))), "carol", algorithm)
            byKid = token(key, algorithm, body, kid=issuer + "-1")
            self.assertEqual(nameOf(self.outcome(byKid)), "carol", algorithm)

    def test_otherKey(self) -> None:
        """
        A token naming the credential (by issuer or by kid) but signed by
        another key of the same algorithm is refused: bad signature.
        """
        others = [
            (ec.generate_private_key(ec.SECP256R1()), "ES256", "carol-es"),
            (ed25519.Ed25519PrivateKey.generate(), "EdDSA", "carol-ed"),
        ]
        for key, algorithm, issuer in others:
            body = claims(iss=issuer, sub="carol")
            for jws in (
                token(key, algorithm, body),
                token(key, algorithm, body, kid=issuer + "-1"),
            ):
                self.assertEqual(reasonOf(self.outcome(jws)), "bad signature", algorithm)

    def test_onlyItsAlgorithm(self) -> None:
        """
        The credential's algorithm is the only one its tokens may use: with
        the ES256 credential's issuer, a token signed EdDSA (even with the
        consumer's own Ed25519 key), HS256 (with an HMAC secret, or with
        the ES256 public key's PEM as one: algorithm confusion) or RS256
        is refused; and so is an ES256 token naming the EdDSA credential.
        """
        es = claims(iss="carol-es", sub="carol")
        refused = [
            token(edKey(), "EdDSA", es),
            token(HS_SECRET, "HS256", es),
            hmacWith(publicPEM(ecKey()).encode("ascii"), es),
            hmacWith(publicPEM(ecKey()).encode("ascii"), es, kid="carol-es-1"),
            token(rsaKey(), "RS256", es),
            token(ecKey(), "ES256", claims(iss="carol-ed", sub="carol")),
            hmacWith(publicPEM(edKey()).encode("ascii"), claims(iss="carol-ed", sub="carol")),
        ]
        for i, jws in enumerate(refused):
            self.assertEqual(reasonOf(self.outcome(jws)), "algorithm not allowed", i)
        self.assertEqual(self.verifier.verifications, len(refused))


class TokenCacheTests(SynchronousTestCase):
    """
    Verified tokens are cached until they expire, and only while their
    credential stays.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.index = consumers(ALICE)
        self.verifier = TokenVerifier(self.clock)

    def test_hit(self) -> None:
        """
        A token verified once is not verified again.
        """
        jws = token(HS_SECRET, "HS256", claims()).encode()
        self.verifier.verify(jws, self.index)
        self.verifier.verify(jws, self.index)
        self.assertEqual(self.verifier.verifications, 1)

    def test_hitRespectsExp(self) -> None:
        """
        A cached token is refused once its exp (plus the leeway) passed.
        """
        jws = token(HS_SECRET, "HS256", claims(exp=int(NOW) + 10)).encode()
        self.assertEqual(nameOf(self.verifier.verify(jws, self.index)), "alice")
        self.clock.advance(39)
        self.assertEqual(nameOf(self.verifier.verify(jws, self.index)), "alice")
        self.clock.advance(2)
        outcome = self.verifier.verify(jws, self.index)
        self.assertEqual(reasonOf(outcome), "expired")

    def test_ttl(self) -> None:
        """
        A token is verified again after the cache's TTL, however long it
        lives.
        """
        verifier = TokenVerifier(self.clock, cacheTTL=300)
        jws = token(HS_SECRET, "HS256", claims(exp=int(NOW) + 3600)).encode()
        verifier.verify(jws, self.index)
        self.clock.advance(301)
        verifier.verify(jws, self.index)
        self.assertEqual(verifier.verifications, 2)

    def test_revoked(self) -> None:
        """
        Once the credential is gone (a new store revision without it), its
        cached tokens are verified again, and refused.
        """
        jws = token(HS_SECRET, "HS256", claims()).encode()
        self.verifier.verify(jws, self.index)
        revoked = dict(
            ALICE, credentials=[c for c in ALICE["credentials"] if c.get("id") != "alice-hs"]
        )
        outcome = self.verifier.verify(jws, consumers(revoked))
        self.assertIsInstance(outcome, Invalid)

    def test_bounded(self) -> None:
        """
        The cache keeps at most its size.
        """
        verifier = TokenVerifier(self.clock, cacheSize=2)
        tokens = [token(HS_SECRET, "HS256", claims(n=i)).encode() for i in range(3)]
        for jws in tokens:
            verifier.verify(jws, self.index)
        verifier.verify(tokens[0], self.index)
        self.assertEqual(verifier.verifications, 4)


class FakeFetch:
    """
    A JWKS fetch: each call gets a Deferred the test fires.
    """

    def __init__(self) -> None:
        self.calls: List[Deferred] = []

    def __call__(self, url: str) -> Deferred:
        d: Deferred = Deferred()
        self.calls.append(d)
        return d


class JWKSTests(SynchronousTestCase):
    """
    Tokens of an OpenID Connect provider, verified against its JWKS.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.index = consumers(ALICE, BOB, GUEST)
        self.fetch = FakeFetch()
        self.cache = JWKSCache("https://id.example.com/jwks", self.clock, self.fetch)
        settings = fromJSON(
            JWTSettings,
            {
                "jwksUrl": "https://id.example.com/jwks",
                "issuer": "https://id.example.com/",
                "audiences": ["api"],
            },
        )
        self.verifier = TokenVerifier(self.clock, settings, self.cache)

    def providerToken(
        self, key: Any = None, kid: str = "k1", alg: str = "RS256", **extra: Any
    ) -> bytes:
        body = {
            "iss": "https://id.example.com/",
            "aud": "api",
            "sub": "bob",
            "exp": int(self.clock.seconds()) + 600,
        }
        body.update(extra)
        return token(key or rsaKey(1), alg, body, kid=kid).encode()

    def test_firstFetch(self) -> None:
        """
        The first token waits for the one fetch of the set; it is then
        verified and names the consumer of its sub; the next token uses the
        keys fetched.
        """
        d = self.verifier.verify(self.providerToken(), self.index)
        self.assertIsInstance(d, Deferred)
        self.assertEqual(len(self.fetch.calls), 1)
        self.fetch.calls[0].callback(jwks(rsaKey(1), kids=["k1"]))
        self.assertEqual(self.successResultOf(d).name, "bob")
        outcome = self.verifier.verify(self.providerToken(jti="2"), self.index)
        self.assertEqual(nameOf(outcome), "bob")
        self.assertEqual(len(self.fetch.calls), 1)

    def test_unknownKidRefresh(self) -> None:
        """
        A token whose kid the set lacks (the provider rotated its key)
        makes the set be fetched again, at most once a minute: within the
        minute a token with an unknown kid is refused at once, without a
        fetch.
        """
        d = self.verifier.verify(self.providerToken(), self.index)
        self.fetch.calls[0].callback(jwks(rsaKey(1), kids=["k1"]))
        self.successResultOf(d)
        self.clock.advance(MIN_REFRESH)
        rotated = self.providerToken(key=rsaKey(2), kid="k2")
        d = self.verifier.verify(rotated, self.index)
        self.assertEqual(len(self.fetch.calls), 2)
        self.fetch.calls[1].callback(jwks(rsaKey(2), kids=["k2"]))
        self.assertEqual(self.successResultOf(d).name, "bob")
        made = self.providerToken(key=rsaKey(3), kid="k3")
        self.clock.advance(MIN_REFRESH - 1)
        outcome = self.verifier.verify(made, self.index)
        self.assertEqual(reasonOf(outcome), "unknown kid")
        self.assertEqual(len(self.fetch.calls), 2)

    def test_providerDown(self) -> None:
        """
        When the provider cannot be reached, the keys fetched before are
        kept: their tokens still pass; an unknown kid is refused.
        """
        d = self.verifier.verify(self.providerToken(), self.index)
        self.fetch.calls[0].callback(jwks(rsaKey(1), kids=["k1"]))
        self.successResultOf(d)
        self.clock.advance(REFRESH_INTERVAL)
        # Background refresh: the request goes on with the keys it has.
        outcome = self.verifier.verify(self.providerToken(jti="x"), self.index)
        self.assertEqual(nameOf(outcome), "bob")
        self.assertEqual(len(self.fetch.calls), 2)
        self.fetch.calls[1].errback(ConnectionRefusedError("provider down"))
        self.assertEqual(
            nameOf(self.verifier.verify(self.providerToken(jti="y"), self.index)), "bob"
        )
        self.clock.advance(MIN_REFRESH)
        d = self.verifier.verify(self.providerToken(key=rsaKey(2), kid="k2"), self.index)
        self.fetch.calls[2].callback(b"<html>down for maintenance</html>")
        self.assertEqual(self.successResultOf(d).reason, "unknown kid")
        self.assertEqual(
            nameOf(self.verifier.verify(self.providerToken(jti="z"), self.index)), "bob"
        )

    def test_neverFetched(self) -> None:
        """
        A provider down from the start: the token is refused once the fetch
        fails (or times out), not kept waiting.
        """
        d = self.verifier.verify(self.providerToken(), self.index)
        self.clock.advance(5)
        self.assertEqual(self.successResultOf(d).reason, "unknown kid")

    def test_checks(self) -> None:
        """
        JWKS tokens are checked like others: audience, issuer, expiry; and
        a symmetric (HS256) token is never verified against the set.
        """
        self.cache.key("k1")
        self.fetch.calls[0].callback(jwks(rsaKey(1), ecKey(), edKey(), kids=["k1", "e1", "o1"]))
        self.assertEqual(
            self.verifier.verify(self.providerToken(aud="other"), self.index).reason,
            "wrong audience",
        )  # type: ignore[union-attr]
        self.assertEqual(
            self.verifier.verify(self.providerToken(iss="x"), self.index).reason, "wrong issuer"
        )  # type: ignore[union-attr]
        self.assertEqual(
            self.verifier.verify(self.providerToken(exp=int(NOW) - 60), self.index).reason,
            "expired",
        )  # type: ignore[union-attr]
        es = self.providerToken(key=ecKey(), kid="e1", alg="ES256")
        self.assertEqual(nameOf(self.verifier.verify(es, self.index)), "bob")
        ed = self.providerToken(key=edKey(), kid="o1", alg="EdDSA")
        self.assertEqual(nameOf(self.verifier.verify(ed, self.index)), "bob")
        pem = publicPEM(rsaKey(1)).encode("ascii")
        confused = hmacWith(
            pem,
            {"iss": "https://id.example.com/", "aud": "api", "sub": "bob", "exp": int(NOW) + 60},
            kid="k1",
        )
        self.assertEqual(
            self.verifier.verify(confused.encode(), self.index).reason, "algorithm not allowed"
        )  # type: ignore[union-attr]

    def test_consumerClaim(self) -> None:
        """
        The claim names a consumer by name or customId; a token whose claim
        names none is refused, or acts as the anonymous consumer when there
        is one.
        """
        self.cache.key("k1")
        self.fetch.calls[0].callback(jwks(rsaKey(1), kids=["k1"]))
        self.assertEqual(
            self.verifier.verify(self.providerToken(sub="c-1"), self.index).name, "alice"
        )  # type: ignore[union-attr]
        self.assertIsInstance(
            self.verifier.verify(self.providerToken(sub="who"), self.index), Invalid
        )
        settings = fromJSON(JWTSettings, {"jwksUrl": "https://id.example.com/jwks"})
        anonymous = TokenVerifier(self.clock, settings, self.cache, anonymous="guest")
        self.assertEqual(
            nameOf(anonymous.verify(self.providerToken(sub="who"), self.index)), "guest"
        )

    def test_parse(self) -> None:
        """
        Symmetric keys, encryption keys and broken entries are skipped.
        """
        document = jwks(rsaKey(1), kids=["k1"])[:-2] + (
            b',{"kty":"oct","k":"c2VjcmV0","kid":"s"},{"kty":"RSA","kid":"bad","n":"x","e":"AQAB"},'
            b'{"kty":"RSA","use":"enc","kid":"e","n":"x","e":"AQAB"}]}'
        )
        self.assertEqual([k.kid for k in parseJWKS(document)], ["k1"])
        self.assertRaises(ValueError, parseJWKS, b'{"no": "keys"}')

    def test_nestedTooDeeply(self) -> None:
        """
        A document nested too deeply for the JSON reader is not a JWKS (a
        C{ValueError}, which the cache logs, keeping its keys), not an
        error that escaped unlogged.
        """
        self.assertRaises(
            ValueError, parseJWKS, b'{"keys": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
        )
        d = self.verifier.verify(self.providerToken(), self.index)
        self.fetch.calls[0].callback(b"[" * 200_000)
        self.assertIsInstance(self.successResultOf(d), Invalid)
        self.assertEqual(self.cache.fetches, 1)


class PasswordTests(SynchronousTestCase):
    """
    Passwords are verified off the reactor thread, outcomes cached.
    """

    def setUp(self) -> None:
        self.clock = Clock()

    def test_cached(self) -> None:
        """
        A right and a wrong password are each verified once, then cached
        for the TTL.
        """
        verifier = PasswordVerifier(self.clock, runInThread=syncThreads, ttl=60)
        self.assertTrue(
            self.successResultOf(verifier.verify("alice", PASSWORD.encode(), PASSWORD_HASH))
        )
        self.assertIs(verifier.verify("alice", PASSWORD.encode(), PASSWORD_HASH), True)
        self.assertFalse(self.successResultOf(verifier.verify("alice", b"wrong", PASSWORD_HASH)))
        self.assertIs(verifier.verify("alice", b"wrong", PASSWORD_HASH), False)
        self.assertEqual(verifier.verifications, 2)
        self.clock.advance(61)
        self.successResultOf(verifier.verify("alice", PASSWORD.encode(), PASSWORD_HASH))
        self.assertEqual(verifier.verifications, 3)

    def test_newHash(self) -> None:
        """
        A changed password (a new stored hash) misses the cache.
        """
        verifier = PasswordVerifier(self.clock, runInThread=syncThreads)
        self.successResultOf(verifier.verify("alice", PASSWORD.encode(), PASSWORD_HASH))
        other = hashPassword("new password", rounds=4)
        self.assertFalse(self.successResultOf(verifier.verify("alice", PASSWORD.encode(), other)))

    def test_busy(self) -> None:
        """
        Beyond maxPending verifications at once, one fails with TooBusy;
        the same password presented twice waits on one verification.
        """
        pending: List[Deferred] = []

        def slow(f: Any, *args: Any) -> Deferred:
            d: Deferred = Deferred()
            pending.append(d)
            return d

        verifier = PasswordVerifier(self.clock, runInThread=slow, maxPending=1)
        first = verifier.verify("alice", b"a", PASSWORD_HASH)
        again = verifier.verify("alice", b"a", PASSWORD_HASH)
        from gateway.auth.passwords import TooBusy

        self.failureResultOf(verifier.verify("alice", b"b", PASSWORD_HASH), TooBusy)
        pending[0].callback(True)
        self.assertTrue(self.successResultOf(first))
        self.assertTrue(self.successResultOf(again))
        self.assertEqual(len(pending), 1)

    def test_threadPool(self) -> None:
        """
        By default the verification runs in the reactor's thread pool.
        """
        calls = []

        class Reactor(Clock):
            def getThreadPool(self) -> Any:
                calls.append("pool")
                raise RuntimeError("no pool here")

        verifier = PasswordVerifier(Reactor())
        self.assertRaises(RuntimeError, verifier.verify, "alice", b"a", PASSWORD_HASH)
        self.assertEqual(calls, ["pool"])


class AuthFilterTests(SynchronousTestCase):
    """
    The C{auth} filter: finding a credential, deciding, and what goes
    upstream.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.index = consumers(ALICE, BOB, GUEST)

    def test_interface(self) -> None:
        """
        Both filters provide L{IFilter}.
        """
        verifyObject(IFilter, makeAuthFilter(self.clock, methods=["key"]))
        verifyObject(IFilter, ACLFilter(["gold"]))

    def test_keyInHeader(self) -> None:
        """
        An API key in the header authenticates its consumer: the backend
        gets X-Consumer-Name, -Id and -Groups, and not the key (which the
        client's own X-Consumer-* do not survive either).
        """
        f = makeAuthFilter(self.clock, methods=["key"])
        context = makeContext(
            self.index,
            {
                b"apikey": [API_KEY.encode()],
                b"x-consumer-name": [b"root"],
                b"x-consumer-groups": [b"admin"],
            },
        )
        self.assertIsNone(f.before(context))
        self.assertEqual(nameOf(context.consumer), "alice")
        upstream = context.upstreamHeaders
        self.assertEqual(upstream.getRawHeaders(b"x-consumer-name"), [b"alice"])
        self.assertEqual(upstream.getRawHeaders(b"x-consumer-id"), [b"c-1"])
        self.assertEqual(upstream.getRawHeaders(b"x-consumer-groups"), [b"gold,staff"])
        self.assertIsNone(upstream.getRawHeaders(b"apikey"))

    def test_clientConsumerHeadersRemoved(self) -> None:
        """
        A consumer without customId: the client's X-Consumer-Id is removed
        and none set; its X-Consumer-Groups is the consumer's.
        """
        bob = dict(BOB, credentials=[{"type": "key", "key": "bob-key-0123456789abcdef"}])
        index = consumers(ALICE, bob)
        f = makeAuthFilter(self.clock, methods=["key"])
        context = makeContext(
            index,
            {
                b"apikey": [b"bob-key-0123456789abcdef"],
                b"x-consumer-id": [b"c-1"],
                b"X-Consumer-Groups": [b"gold"],
            },
        )
        self.assertIsNone(f.before(context))
        self.assertIsNone(context.upstreamHeaders.getRawHeaders(b"x-consumer-id"))
        self.assertEqual(context.upstreamHeaders.getRawHeaders(b"x-consumer-groups"), [b"silver"])
        self.assertEqual(context.upstreamHeaders.getRawHeaders(b"x-consumer-name"), [b"bob"])

    def test_presentedKeyRemembered(self) -> None:
        """
        A key found once is remembered as presented, and the next request
        presenting it is not hashed again; a key not found is never
        remembered (so unknown keys cannot fill the memory); a change of
        the consumers (a new index) forgets every key, so a revoked key
        stops working with the revision that revokes it.
        """
        from gateway.filters import auth as authModule

        f = makeAuthFilter(self.clock, methods=["key"])
        hashed: List[bytes] = []
        real = authModule._sha256

        def counting(data: bytes) -> Any:
            hashed.append(data)
            return real(data)

        self.patch(authModule, "_sha256", counting)
        for _ in range(3):
            context = makeContext(self.index, {b"apikey": [API_KEY.encode()]})
            self.assertIsNone(f.before(context))
            self.assertEqual(nameOf(context.consumer), "alice")
        self.assertEqual(hashed, [API_KEY.encode()])
        self.assertEqual(list(self.index.presented), [API_KEY.encode()])
        for _ in range(2):
            answer = f.before(makeContext(self.index, {b"apikey": [b"not-a-key-of-anyone"]}))
            self.assertEqual(answer.code, 401)
        self.assertEqual(len(hashed), 3)
        self.assertEqual(list(self.index.presented), [API_KEY.encode()])
        revoked = consumers(dict(ALICE, credentials=[]), BOB, GUEST)
        answer = f.before(makeContext(revoked, {b"apikey": [API_KEY.encode()]}))
        self.assertEqual(answer.code, 401)

    def test_presentedKeysBounded(self) -> None:
        """
        The index remembers at most L{PRESENTED_KEYS} keys, emptied when
        full.
        """
        from gateway.auth import index as indexModule

        self.patch(indexModule, "PRESENTED_KEYS", 2)
        entry = self.index.byName("alice")
        assert entry is not None
        for key in (b"a", b"b", b"c"):
            self.index.rememberKey(key, entry)
        self.assertEqual(list(self.index.presented), [b"c"])

    def test_keyInQuery(self) -> None:
        """
        An API key in the query authenticates, and is taken out of the
        request target sent upstream; other parameters stay.
        """
        f = makeAuthFilter(
            self.clock, methods=["key"], keyNames=["header:x-api-key", "query:apikey"]
        )
        context = makeContext(self.index, uri=b"/a?x=1&apikey=" + API_KEY.encode() + b"&y=2")
        self.assertIsNone(f.before(context))
        self.assertEqual(context.request.uri, b"/a?x=1&y=2")
        self.assertNotIn(b"apikey", context.request.args)

    def test_queryKeyNeverShown(self) -> None:
        """
        An API key found in the query is never in what logs and traces
        show of the target (C{shownURI}): not when it goes upstream
        (C{hideCredentials} off), nor when it is refused.
        """
        key = API_KEY.encode()
        kept = makeAuthFilter(
            self.clock, methods=["key"], keyNames=["query:apikey"], hideCredentials=False
        )
        context = makeContext(self.index, uri=b"/a?x=1&apikey=" + key)
        self.assertIsNone(kept.before(context))
        self.assertEqual(context.request.uri, b"/a?x=1&apikey=" + key)
        self.assertEqual(context.shownURI, b"/a?x=1")
        refused = makeContext(self.index, uri=b"/a?apikey=not-a-key-of-anyone&y=2")
        self.assertEqual(kept.before(refused).code, 401)
        self.assertEqual(refused.shownURI, b"/a?y=2")
        inHeader = makeContext(self.index, {b"apikey": [key]}, uri=b"/a?x=1")
        self.assertIsNone(makeAuthFilter(self.clock, methods=["key"]).before(inHeader))
        self.assertIsNone(inHeader.shownURI)

    def test_keepCredentials(self) -> None:
        """
        With hideCredentials off, the key goes upstream.
        """
        f = makeAuthFilter(self.clock, methods=["key"], hideCredentials=False)
        context = makeContext(self.index, {b"apikey": [API_KEY.encode()]}, uri=b"/a?apikey=x")
        self.assertIsNone(f.before(context))
        self.assertEqual(context.upstreamHeaders.getRawHeaders(b"apikey"), [API_KEY.encode()])
        self.assertEqual(context.request.uri, b"/a?apikey=x")

    def test_badKey(self) -> None:
        """
        An unknown key: 401 invalid credentials, no challenge detail.
        """
        f = makeAuthFilter(self.clock, methods=["key"])
        answer = f.before(makeContext(self.index, {b"apikey": [b"not-a-key-of-anyone"]}))
        self.assertEqual((answer.code, answer.body), (401, {"error": "invalid credentials"}))

    def test_noCredential(self) -> None:
        """
        No credential at all: 401 with one WWW-Authenticate challenge per
        method, in order.
        """
        f = makeAuthFilter(self.clock, methods=["jwt", "key", "basic"])
        answer = f.before(makeContext(self.index))
        self.assertEqual(answer.code, 401)
        self.assertEqual(
            list(answer.headers[b"www-authenticate"]),
            [
                b'Bearer realm="gateway"',
                b'Key realm="gateway"',
                b'Basic realm="gateway", charset="UTF-8"',
            ],
        )

    def test_anonymous(self) -> None:
        """
        With anonymous, a request without credential acts as that consumer;
        a bad credential is still refused.
        """
        f = makeAuthFilter(self.clock, methods=["key"], anonymous="guest")
        context = makeContext(self.index)
        self.assertIsNone(f.before(context))
        self.assertEqual(nameOf(context.consumer), "guest")
        self.assertEqual(context.upstreamHeaders.getRawHeaders(b"x-consumer-name"), [b"guest"])
        self.assertEqual(
            f.before(makeContext(self.index, {b"apikey": [b"wrong-key-0123456789"]})).code, 401
        )

    def test_firstFoundDecides(self) -> None:
        """
        The first method that finds a credential decides: a bad key is
        refused even with a good token after it in the method list.
        """
        f = makeAuthFilter(self.clock, methods=["key", "jwt"])
        jws = token(HS_SECRET, "HS256", claims())
        context = makeContext(
            self.index,
            {b"apikey": [b"bad-key-0123456789abc"], b"authorization": [b"Bearer " + jws.encode()]},
        )
        self.assertEqual(f.before(context).code, 401)
        context = makeContext(self.index, {b"authorization": [b"Bearer " + jws.encode()]})
        self.assertIsNone(f.before(context))
        self.assertEqual(nameOf(context.consumer), "alice")
        self.assertIsNone(context.upstreamHeaders.getRawHeaders(b"authorization"))

    def test_basic(self) -> None:
        """
        Basic credentials: the right password authenticates; a wrong one,
        an unknown user or a malformed header gets 401.
        """
        f = makeAuthFilter(self.clock, methods=["basic"])
        context = makeContext(self.index, {b"authorization": [basic("alice", PASSWORD)]})
        self.assertIsNone(self.successResultOf(maybeDeferred(f.before, context)))
        self.assertEqual(nameOf(context.consumer), "alice")
        self.assertIsNone(context.upstreamHeaders.getRawHeaders(b"authorization"))
        for header in (
            basic("alice", "wrong"),
            basic("mallory", PASSWORD),
            b"Basic !!!",
            b"Basic " + base64.b64encode(b"nocolon"),
        ):
            answer = self.successResultOf(
                maybeDeferred(f.before, makeContext(self.index, {b"authorization": [header]}))
            )
            self.assertEqual(
                (answer.code, answer.body), (401, {"error": "invalid credentials"}), header
            )

    def test_schemeNotOffered(self) -> None:
        """
        An Authorization scheme the API does not take is no credential.
        """
        f = makeAuthFilter(self.clock, methods=["basic"])
        answer = f.before(makeContext(self.index, {b"authorization": [b"Bearer x.y.z"]}))
        self.assertEqual(answer.body, {"error": "authentication required"})

    def test_jwksWaits(self) -> None:
        """
        A JWKS token's request waits for the set's first fetch.
        """
        fetch = FakeFetch()
        f = makeAuthFilter(
            self.clock, fetch=fetch, methods=["jwt"], jwt={"jwksUrl": "https://id.example.com/jwks"}
        )
        jws = token(rsaKey(1), "RS256", {"sub": "bob", "exp": int(NOW) + 60}, kid="k1")
        context = makeContext(self.index, {b"authorization": [b"Bearer " + jws.encode()]})
        d = f.before(context)
        self.assertNoResult(d)
        fetch.calls[0].callback(jwks(rsaKey(1), kids=["k1"]))
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(nameOf(context.consumer), "bob")


class ACLTests(SynchronousTestCase):
    """
    The C{acl} filter decides by the consumer's groups.
    """

    def test_decisions(self) -> None:
        """
        Deny wins over allow; an empty allow lets in everyone not denied;
        no consumer is never let in; refused requests get 403.
        """
        index = consumers(ALICE, BOB, GUEST)
        alice, bob = index.byName("alice"), index.byName("bob")
        self.assertTrue(ACLFilter(["gold"]).allows(alice))
        self.assertFalse(ACLFilter(["gold"]).allows(bob))
        self.assertFalse(ACLFilter([], ["staff"]).allows(alice))
        self.assertTrue(ACLFilter([], ["staff"]).allows(bob))
        self.assertFalse(ACLFilter(["gold"], ["staff"]).allows(alice))
        self.assertFalse(ACLFilter().allows(None))
        context = makeContext(index)
        context.consumer = bob
        answer = ACLFilter(["gold"]).before(context)
        self.assertEqual((answer.code, answer.body), (403, {"error": "access denied"}))


class OrderTests(SynchronousTestCase):
    """
    The built-in filters of an API run in the documented order.
    """

    def test_order(self) -> None:
        """
        IP access, authentication, ACL, circuit breaker, rate limits; an
        API without auth and acl gets neither.
        """
        api = parseResource(
            "apis",
            {
                "name": "a",
                "urlPattern": "/a",
                "nodes": [{"cluster": "c"}],
                "ipAccess": {"deny": ["10.0.0.0/8"]},
                "auth": {"methods": ["key"]},
                "acl": {"allow": ["gold"]},
                "circuitBreaker": {},
                "rateLimit": {"rate": 1, "key": "consumer"},
            },
        )
        clock = Clock()
        specs = FilterRegistry({}).apiFilterSpecs(api, clock, None, _LocalBuckets())
        names = [make().name for _, make in specs]
        self.assertEqual(names, ["ip-access", "auth", "acl", "circuit-breaker", "rate-limit"])
        plain = parseResource(
            "apis", {"name": "a", "urlPattern": "/a", "nodes": [{"cluster": "c"}]}
        )
        made = [
            make()
            for _, make in FilterRegistry({}).apiFilterSpecs(plain, clock, None, _LocalBuckets())
        ]
        self.assertEqual([m for m in made if m is not None], [])

    def test_afterInReverse(self) -> None:
        """
        On one request through the proxy the C{before} hooks run in the
        documented order and the C{after} hooks in the reverse order: the
        users' filters (C{a} then C{b}) see the consumer C{auth} found and
        the header the C{transform} set upstream; C{b}'s C{after} runs
        before C{a}'s, both before the built-in filters' C{after} (neither
        sees the transform's or CORS's response headers yet); and the
        transform's C{after} runs before CORS's, which adds C{Origin} to
        the C{Vary} the transform set.
        """
        log: List[Any] = []
        factory = _OrderRecorderFactory(log)
        gateway = MemoryGateway(
            [
                {
                    "name": "a",
                    "urlPattern": "/a",
                    "nodes": [{"cluster": "c"}],
                    "cors": {"origins": ["https://app.example.com"]},
                    "auth": {"methods": ["key"]},
                    "transform": {
                        "request": {"set": {"X-Req": "$consumer.name"}},
                        "response": {"set": {"Vary": "Accept", "X-T": "t"}},
                    },
                    "filters": [
                        {"name": "order", "config": {"label": "a"}},
                        {"name": "order", "config": {"label": "b"}},
                    ],
                }
            ],
            registry=FilterRegistry({"order": factory}),
            consumers=[{"name": "alice", "credentials": [{"type": "key", "key": API_KEY}]}],
        )
        answer = gateway.request(
            "GET", "/a", [("Origin", "https://app.example.com"), ("apikey", API_KEY)]
        )
        self.assertEqual(answer.code, 200)
        self.assertEqual(
            log,
            [
                ("a", "before", "alice", [b"alice"]),
                ("b", "before", "alice", [b"alice"]),
                ("b", "after", None, None, None),
                ("a", "after", None, None, None),
            ],
        )
        self.assertEqual(answer.header("x-t"), "t")
        self.assertEqual(answer.header("access-control-allow-origin"), "https://app.example.com")
        self.assertEqual(answer.headers["vary"], ["Accept", "Origin"])


@implementer(IFilter)
class _OrderRecorder:
    """
    A user's filter that records, in a log shared with others, what its
    hooks see of the built-in filters' work.
    """

    name = "order"

    def __init__(self, label: str, log: List[Any]) -> None:
        self.label = label
        self.log = log

    def before(self, context: Any) -> None:
        consumer = context.consumer
        self.log.append(
            (
                self.label,
                "before",
                consumer.name if consumer is not None else None,
                context.upstreamHeaders.getRawHeaders(b"x-req"),
            )
        )

    def after(self, context: Any, response: Any) -> None:
        headers = response.headers
        self.log.append(
            (
                self.label,
                "after",
                headers.getRawHeaders(b"x-t"),
                headers.getRawHeaders(b"access-control-allow-origin"),
                headers.getRawHeaders(b"vary"),
            )
        )

    def error(self, context: Any, failure: Any) -> None:
        self.log.append((self.label, "error"))


@implementer(IPlugin, IFilterFactory)
class _OrderRecorderFactory:
    name = "order"
    description = "records the order of its hooks"

    def __init__(self, log: List[Any]) -> None:
        self.log = log

    def makeFilter(self, config: Any, reactor: Any) -> _OrderRecorder:
        return _OrderRecorder(config["label"], self.log)


def _LocalBuckets() -> Any:
    from gateway.protection.ratelimit import LOCAL

    return LOCAL


class ConsumerRateLimitTests(SynchronousTestCase):
    """
    C{rateLimit.key: consumer}: a bucket per consumer.
    """

    def test_perConsumer(self) -> None:
        """
        Each consumer has its own bucket: alice over her limit gets 429
        while bob still passes.
        """
        clock = Clock()
        api = parseResource(
            "apis",
            {
                "name": "a",
                "urlPattern": "/a",
                "nodes": [{"cluster": "c"}],
                "auth": {"methods": ["key"]},
                "rateLimit": {"rate": 1, "burst": 2, "key": "consumer"},
            },
        )
        f = makeRateLimitFilter(api, clock)
        assert f is not None
        index = consumers(ALICE, BOB)

        def call(name: str) -> Any:
            context = makeContext(index)
            context.consumer = index.byName(name)
            return f.before(context)

        self.assertEqual([call("alice") for _ in range(3)][-1].code, 429)
        self.assertIsNone(call("bob"))
        self.assertIsInstance(call("alice"), EarlyResponse)


class IndexTests(SynchronousTestCase):
    """
    The consumer index of a snapshot.
    """

    def test_sameConsumersSameIndex(self) -> None:
        """
        A new revision with the very same consumer objects keeps the index.
        """
        alice = parseResource("consumers", ALICE)
        index = compileConsumers({"alice": alice})
        self.assertIs(compileConsumers({"alice": alice}, index), index)
        self.assertIsNot(
            compileConsumers({"alice": parseResource("consumers", ALICE)}, index), index
        )

    def test_lookups(self) -> None:
        """
        A consumer is found by key digest, user name, JWT issuer or kid,
        name and customId.
        """
        from gateway.model.secrets import keyDigest

        index = consumers(ALICE, BOB)
        self.assertEqual(nameOf(index.byKeyDigest(keyDigest(API_KEY.encode()))), "alice")
        self.assertIsNone(index.byKeyDigest(keyDigest(b"other")))
        self.assertEqual(index.byUsername("alice")[0].name, "alice")  # type: ignore[index]
        self.assertEqual([k.credential.id for k in index.jwtKeys("alice-iss", None)], ["alice-hs"])
        self.assertEqual([k.credential.id for k in index.jwtKeys(None, "alice-rs")], [])
        self.assertEqual(
            [k.credential.id for k in index.jwtKeys("alice-rsa", "alice-rs")], ["alice-rs"]
        )
        self.assertEqual(nameOf(index.byClaim("c-1")), "alice")


class ClientConsumerHeadersTests(SynchronousTestCase):
    """
    The consumer headers reach a backend only from an API's auth.
    """

    def test_neverFromTheClient(self) -> None:
        """
        Through an API without auth, the X-Consumer-* headers a client sends
        (in any case) do not reach the backend, which would believe them;
        through one with auth the backend gets the authenticated consumer's.
        """
        from cachegateway import CacheGateway

        apis = [
            {"name": "open", "urlPattern": "/open/*", "nodes": [{"cluster": "c"}]},
            {
                "name": "closed",
                "urlPattern": "/closed/*",
                "nodes": [{"cluster": "c"}],
                "auth": {"methods": ["key"], "keyNames": ["header:apikey"]},
            },
        ]
        bob = dict(BOB, credentials=[{"type": "key", "key": "bob-key-0123456789abcdef"}])
        gw = CacheGateway(apis, [bob])
        gw.backend.auto = lambda call: call.answer(200, b"ok")
        spoofed = [
            ("X-Consumer-Name", "alice"),
            ("x-consumer-id", "a-1"),
            ("X-CONSUMER-GROUPS", "admin"),
        ]
        self.assertEqual(gw.request("GET", "/open/x", spoofed).code, 200)
        seen = gw.backend.calls[-1]
        for name in (b"x-consumer-name", b"x-consumer-id", b"x-consumer-groups"):
            self.assertIsNone(seen.header(name))
        key = [("apikey", "bob-key-0123456789abcdef")]
        self.assertEqual(gw.request("GET", "/closed/x", spoofed + key).code, 200)
        seen = gw.backend.calls[-1]
        self.assertEqual(seen.header(b"x-consumer-name"), b"bob")
        self.assertIsNone(seen.header(b"x-consumer-id"))
        self.assertEqual(seen.header(b"x-consumer-groups"), b"silver")
