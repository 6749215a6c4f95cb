"""
JWT verification, with PyJWT.

A token is verified with one key, and only with the algorithm that key
is for (a consumer credential's C{algorithm}, a JWKS key's own): C{alg:
none}, and an RS256 public key used as an HS256 secret, are refused by
construction.  PyJWT checks the signature, C{iss} and C{aud}; C{exp}
(required) and C{nbf} are checked here against the injected clock, with
the API's C{leeway}.

Verified tokens are cached (L{TokenVerifier}): the cache keeps, per
token, the consumer it names, the credential (or JWKS) it was verified
with, and until when it may be used: its C{exp} plus the leeway, and at
most L{CACHE_TTL} seconds after it was verified; at most L{CACHE_SIZE}
tokens, least recently used out first.  A hit is taken only while the
consumer's credential is still the very one of the current store
revision (a revoked or changed credential voids its tokens at once), and
never past C{exp}.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Dict, Optional, Union

from twisted.internet.defer import Deferred

from gateway.auth.index import ConsumerEntry, ConsumerIndex

#: The most seconds a verified token is trusted without verifying again.
CACHE_TTL = 300.0

#: The most tokens remembered.
CACHE_SIZE = 4096

#: The longest token looked at, in bytes.
MAX_TOKEN = 8192


class Invalid:
    """
    A token that does not authenticate: C{reason} says why, for tests and
    debugging, never for the client (which is told "invalid credentials").
    """

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"<Invalid {self.reason}>"


#: The outcome of a verification.
Outcome = Union[ConsumerEntry, Invalid]


class _Entry:
    __slots__ = ("until", "consumer", "credential", "claim")

    def __init__(self, until: float, consumer: str, credential: Any, claim: Optional[str]) -> None:
        self.until = until
        self.consumer = consumer
        self.credential = credential
        self.claim = claim


def _number(payload: Dict[str, Any], name: str) -> Optional[float]:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} is not a number")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(f"{name} is not a number") from None
    if not math.isfinite(number):
        # (Python's JSON reader takes NaN and Infinity; a NaN exp would
        # never pass.)
        raise ValueError(f"{name} is not a number")
    return number


class TokenVerifier:
    """
    Verifies the bearer tokens of one API (see the module docstring).

    @ivar verifications: how many tokens were verified with a key (cache
        misses).
    """

    def __init__(
        self,
        reactor: Any,
        settings: Any = None,
        jwks: Any = None,
        anonymous: Optional[str] = None,
        cacheSize: int = CACHE_SIZE,
        cacheTTL: float = CACHE_TTL,
    ) -> None:
        """
        @param settings: the API's L{gateway.model.consumers.JWTSettings},
            or L{None} (consumers' credentials only, 30 s of leeway).
        @param jwks: the L{gateway.auth.jwks.JWKSCache} of
            C{settings.jwksUrl}, or L{None}.
        @param anonymous: the consumer a valid JWKS token whose claim names
            no consumer acts as, or L{None} (such a token is invalid).
        """
        self._reactor = reactor
        self._jwks = jwks
        self._anonymous = anonymous
        self._issuer = settings.issuer if settings is not None else None
        self._audiences = list(settings.audiences) if settings is not None else []
        self._claim = settings.consumerClaim if settings is not None else "sub"
        self._leeway = float(settings.leeway) if settings is not None else 30.0
        self._jwksIssuer = self._issuer
        self._cache: OrderedDict[bytes, _Entry] = OrderedDict()
        self._size = max(1, cacheSize)
        self._ttl = cacheTTL
        self.verifications = 0

    # -- the cache --------------------------------------------------------------

    def _cached(self, token: bytes, index: ConsumerIndex) -> Optional[ConsumerEntry]:
        entry = self._cache.get(token)
        if entry is None:
            return None
        if entry.until <= self._reactor.seconds():
            del self._cache[token]
            return None
        if entry.credential is not None:
            current = index.credentialOf(entry.consumer, entry.credential.id)
            if current is not entry.credential:
                del self._cache[token]
                return None
            consumer = index.byName(entry.consumer)
        else:
            consumer = index.byClaim(entry.claim) if entry.claim is not None else None
            if consumer is None and self._anonymous is not None:
                consumer = index.byName(self._anonymous)
        if consumer is None:
            del self._cache[token]
            return None
        self._cache.move_to_end(token)
        return consumer

    def _remember(
        self, token: bytes, exp: float, consumer: ConsumerEntry, credential: Any, claim: Any
    ) -> None:
        until = min(exp + self._leeway, self._reactor.seconds() + self._ttl)
        cache = self._cache
        cache[token] = _Entry(until, consumer.name, credential, claim)
        while len(cache) > self._size:
            cache.popitem(last=False)

    # -- verifying --------------------------------------------------------------

    def verify(self, token: bytes, index: ConsumerIndex) -> Union[Outcome, Deferred]:
        """
        @param token: the compact JWS of a request.
        @param index: the consumers of the request's snapshot.
        @return: the L{ConsumerEntry} the token authenticates, or an
            L{Invalid}; or a Deferred of either when the JWKS must be
            fetched first.
        """
        consumer = self._cached(token, index)
        if consumer is not None:
            return consumer
        if len(token) > MAX_TOKEN:
            return Invalid("token too long")
        import jwt

        try:
            text = token.decode("ascii")
            header = jwt.get_unverified_header(text)
            unverified = jwt.decode(text, options={"verify_signature": False})
        except (jwt.InvalidTokenError, UnicodeDecodeError, ValueError) as e:
            return Invalid(f"malformed: {e}")
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm.lower() == "none":
            return Invalid("alg none")
        kid = header.get("kid")
        kid = kid if isinstance(kid, str) else None
        issuer = unverified.get("iss")
        issuer = issuer if isinstance(issuer, str) else None
        candidates = index.jwtKeys(issuer, kid)
        if candidates:
            failed = Invalid("no credential")
            for candidate in candidates:
                checked = self._check(text, candidate.key, candidate.algorithm)
                if isinstance(checked, Invalid):
                    failed = checked
                    continue
                payload = checked
                if candidate.credential.issuer is not None and payload.get("iss") != (
                    candidate.credential.issuer
                ):
                    return Invalid("wrong issuer")
                self._remember(
                    token, payload["exp"], candidate.consumer, candidate.credential, None
                )
                return candidate.consumer
            return failed
        jwks = self._jwks
        if jwks is None:
            return Invalid("no credential for this issuer or kid")
        if self._jwksIssuer is not None and issuer != self._jwksIssuer:
            return Invalid("wrong issuer")
        found = jwks.key(kid)
        if isinstance(found, Deferred):
            return found.addCallback(self._withJWK, token, text, index)
        return self._withJWK(found, token, text, index)

    def _withJWK(self, jwk: Any, token: bytes, text: str, index: ConsumerIndex) -> Outcome:
        if jwk is None:
            return Invalid("unknown kid")
        checked = self._check(text, jwk.key, jwk.algorithm)
        if isinstance(checked, Invalid):
            return checked
        payload = checked
        claim = payload.get(self._claim)
        claim = claim if isinstance(claim, str) else None
        consumer = index.byClaim(claim) if claim is not None else None
        if consumer is None and self._anonymous is not None:
            consumer = index.byName(self._anonymous)
        if consumer is None:
            return Invalid("no consumer for the token's claim")
        self._remember(token, payload["exp"], consumer, None, claim)
        return consumer

    def _check(
        self, text: str, key: Any, algorithm: Optional[str]
    ) -> Union[Dict[str, Any], Invalid]:
        """
        Verify with one key, for one algorithm.

        @return: the payload, or an L{Invalid}.
        """
        import jwt

        self.verifications += 1
        try:
            payload = jwt.decode(
                text,
                key,
                algorithms=[str(algorithm)],
                issuer=self._issuer,
                audience=self._audiences or None,
                options={
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": bool(self._audiences),
                    "verify_iss": self._issuer is not None,
                },
            )
        except jwt.InvalidAlgorithmError:
            return Invalid("algorithm not allowed")
        except jwt.InvalidSignatureError:
            return Invalid("bad signature")
        except jwt.InvalidIssuerError:
            return Invalid("wrong issuer")
        except jwt.InvalidAudienceError:
            return Invalid("wrong audience")
        except jwt.MissingRequiredClaimError as e:
            return Invalid(f"missing claim {e.claim}")
        except (jwt.InvalidTokenError, ValueError, TypeError) as e:
            return Invalid(f"invalid: {e}")
        except jwt.PyJWTError as e:
            # (InvalidKeyError: a key that does not fit the algorithm; each
            # key is checked against its one algorithm when it is read, so
            # only a change there could bring it here.)
            return Invalid(f"invalid key: {e}")
        now = self._reactor.seconds()
        try:
            exp = _number(payload, "exp")
            nbf = _number(payload, "nbf")
        except ValueError as e:
            return Invalid(str(e))
        if exp is None:
            return Invalid("no exp")
        if now >= exp + self._leeway:
            return Invalid("expired")
        if nbf is not None and now < nbf - self._leeway:
            return Invalid("not yet valid")
        payload["exp"] = exp
        return payload
