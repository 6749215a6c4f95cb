"""
The JSON Web Key Sets of OpenID Connect providers.

A L{JWKSCache} holds the keys of one C{jwksUrl}:

  - fetched when first needed (the requests that need them meanwhile wait
    for that one fetch, at most L{FETCH_TIMEOUT} seconds), then kept;
  - refreshed in the background every L{REFRESH_INTERVAL} seconds while
    used: requests go on with the keys they have;
  - refreshed when a token names a C{kid} the set lacks (the provider
    rotated its keys), at most once per L{MIN_REFRESH} seconds, so that
    tokens with made-up kids cannot make the gateway hammer the provider;
  - kept as they are when the provider is down or answers nonsense.

Only asymmetric keys are taken (RSA, EC P-256, Ed25519): a symmetric key
in a public document would be no secret.  Each key verifies with the one
algorithm it names (or its type implies), so a token cannot choose
another.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Optional, Union

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.http_headers import Headers

log = Logger()

#: Seconds between background refreshes of keys in use.
REFRESH_INTERVAL = 600.0

#: The fewest seconds between two fetches of one set.
MIN_REFRESH = 60.0

#: Seconds a fetch may take.
FETCH_TIMEOUT = 5.0

#: The largest JWKS document taken, in bytes.
MAX_DOCUMENT = 1 << 20

#: The algorithms JWKS keys may verify with.
ASYMMETRIC = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA")


class JWK:
    """
    One usable key of a set.

    @ivar kid: its id, or L{None}.
    @ivar algorithm: the one algorithm it verifies.
    @ivar key: the key object PyJWT verifies with.
    """

    __slots__ = ("kid", "algorithm", "key")

    def __init__(self, kid: Optional[str], algorithm: str, key: Any) -> None:
        self.kid = kid
        self.algorithm = algorithm
        self.key = key


def parseJWKS(document: bytes) -> List[JWK]:
    """
    @return: the usable keys of a JWKS document (others skipped).
    @raise ValueError: when it is not a JWKS at all.
    """
    from jwt import PyJWK
    from jwt.exceptions import PyJWTError

    try:
        data = json.loads(document.decode("utf-8"))
    except RecursionError:
        raise ValueError("not a JWKS: nested too deeply") from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError("not a JWKS: no keys list")
    keys = []
    for item in data["keys"]:
        if not isinstance(item, dict) or item.get("use", "sig") != "sig":
            continue
        if item.get("kty") not in ("RSA", "EC", "OKP"):
            continue
        try:
            jwk = PyJWK(item)
        except (PyJWTError, ValueError, TypeError, KeyError) as e:
            log.warn("skipping a JWKS key: {error}", error=str(e))
            continue
        algorithm = jwk.algorithm_name
        if algorithm not in ASYMMETRIC:
            continue
        kid = item.get("kid")
        keys.append(JWK(kid if isinstance(kid, str) else None, algorithm, jwk.key))
    return keys


def treqFetch(reactor: Any) -> Callable[[str], Deferred]:
    """
    @return: C{fetch(url)}: a Deferred of the body of a C{GET url}, made
        with treq over an L{Agent} of C{reactor} (made on first use).
    """
    state: Dict[str, Any] = {}

    async def fetch(url: str) -> bytes:
        import treq
        from twisted.web.client import Agent, HTTPConnectionPool

        client = state.get("client")
        if client is None:
            pool = HTTPConnectionPool(reactor, persistent=False)
            client = state["client"] = treq.client.HTTPClient(Agent(reactor, pool=pool))
        response = await client.get(
            url, timeout=FETCH_TIMEOUT, headers=Headers({b"Accept": [b"application/json"]})
        )
        if response.code != 200:
            await treq.content(response)
            raise ValueError(f"HTTP status {response.code}")
        length = response.length
        if isinstance(length, int) and length > MAX_DOCUMENT:
            raise ValueError(f"document of {length} bytes is too large")
        body: bytes = await treq.content(response)
        if len(body) > MAX_DOCUMENT:
            raise ValueError("document is too large")
        return body

    return lambda url: Deferred.fromCoroutine(fetch(url))


class JWKSCache:
    """
    The keys of one JWKS URL (see the module docstring).

    @ivar fetches: how many fetches were started.
    """

    def __init__(self, url: str, reactor: Any, fetch: Callable[[str], Deferred]) -> None:
        """
        @param fetch: C{fetch(url)}, a Deferred of the document's bytes.
        """
        self.url = url
        self._reactor = reactor
        self._fetch = fetch
        self._keys: List[JWK] = []
        self._byKid: Dict[Optional[str], JWK] = {}
        self._fetchedAt: Optional[float] = None
        self._lastAttempt: Optional[float] = None
        self._inFlight: Optional[Deferred] = None
        self.fetches = 0

    def _find(self, kid: Optional[str]) -> Optional[JWK]:
        if kid is not None:
            return self._byKid.get(kid)
        # A token without kid: the set's only key, if it has one.
        return self._keys[0] if len(self._keys) == 1 else None

    def key(self, kid: Optional[str]) -> Union[JWK, None, Deferred]:
        """
        @return: the key of C{kid}: at once when the set has it (or when it
            lacks it and was fetched less than L{MIN_REFRESH} seconds ago:
            L{None}), else a Deferred that fires with it (or L{None}) once
            the set was fetched again.
        """
        now = self._reactor.seconds()
        found = self._find(kid)
        if found is not None:
            if (
                self._fetchedAt is not None
                and now - self._fetchedAt >= REFRESH_INTERVAL
                and (self._lastAttempt is None or now - self._lastAttempt >= MIN_REFRESH)
            ):
                self._refresh(now)
            return found
        if self._lastAttempt is not None and now - self._lastAttempt < MIN_REFRESH:
            if self._inFlight is None:
                return None
            return self._then(self._inFlight, kid)
        return self._then(self._refresh(now), kid)

    def _then(self, fetching: Deferred, kid: Optional[str]) -> Deferred:
        waiter: Deferred = Deferred()

        def passOn(_: Any) -> None:
            if not waiter.called:
                waiter.callback(self._find(kid))

        fetching.addBoth(passOn)
        return waiter

    def _refresh(self, now: float) -> Deferred:
        """
        Fetch the set (once at a time); a failure keeps the keys there are.
        """
        if self._inFlight is not None:
            return self._inFlight
        self._lastAttempt = now
        self.fetches += 1
        try:
            d = self._fetch(self.url)
        except Exception as e:
            from twisted.internet.defer import fail

            d = fail(e)
        d.addTimeout(FETCH_TIMEOUT, self._reactor)
        d.addCallbacks(self._fetched, self._failed)
        done: Deferred = Deferred()
        self._inFlight = done

        def finish(_: Any) -> None:
            self._inFlight = None
            done.callback(None)

        d.addBoth(finish)
        return done

    def _fetched(self, document: bytes) -> None:
        try:
            keys = parseJWKS(document)
        except ValueError as e:
            log.warn(
                "JWKS {url} is not usable, keeping {count} keys: {error}",
                url=self.url,
                count=len(self._keys),
                error=str(e),
            )
            return
        self._keys = keys
        self._byKid = {k.kid: k for k in keys if k.kid is not None}
        self._fetchedAt = self._reactor.seconds()
        log.info("JWKS {url}: {count} keys", url=self.url, count=len(keys))

    def _failed(self, failure: Any) -> None:
        log.warn(
            "JWKS {url} cannot be fetched, keeping {count} keys: {error}",
            url=self.url,
            count=len(self._keys),
            error=failure.getErrorMessage(),
        )


class JWKSRegistry:
    """
    The JWKS caches of one process, by URL: APIs that name one provider
    share its keys.
    """

    def __init__(self, reactor: Any, fetch: Optional[Callable[[str], Deferred]] = None) -> None:
        self._reactor = reactor
        self._fetch = fetch
        self._caches: Dict[str, JWKSCache] = {}

    def cacheFor(self, url: str) -> JWKSCache:
        cache = self._caches.get(url)
        if cache is None:
            fetch = self._fetch
            if fetch is None:
                fetch = self._fetch = treqFetch(self._reactor)
            cache = self._caches[url] = JWKSCache(url, self._reactor, fetch)
        return cache
