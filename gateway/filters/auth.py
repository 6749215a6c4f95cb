"""
The C{auth} and C{acl} filters: an API's C{auth} (API keys, JWTs, basic)
and C{acl} (consumers' groups), over the consumers of the request's
snapshot (L{gateway.auth.index}).

C{auth} tries the API's methods in order; the first that finds a
credential in the request decides:

  - C{key}: the first of C{keyNames} (C{header:NAME}, C{query:NAME}) the
    request carries; its SHA-256 names the consumer (one dict lookup; a
    key found once is then looked up as presented, without hashing it:
    L{gateway.auth.index.ConsumerIndex.rememberKey});
  - C{jwt}: C{Authorization: Bearer TOKEN} (L{gateway.auth.tokens});
  - C{basic}: C{Authorization: Basic ...}, the password checked with
    bcrypt off the reactor thread, the outcome cached briefly
    (L{gateway.auth.passwords}).

No credential: C{401} with one C{WWW-Authenticate} challenge per method,
unless C{anonymous} names a consumer to act as.  A credential that does
not authenticate: C{401} C{"invalid credentials"}, whatever was wrong.
Authenticated, the request carries the consumer in C{exchange.consumer},
and upstream the X-Consumer-Name, X-Consumer-Id and X-Consumer-Groups
headers (any the client sent are removed first); with C{hideCredentials}
the credential itself does not go upstream.

C{acl} answers C{403} to a consumer in a C{deny} group, or in none of the
C{allow} groups (when there are any).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any, Callable, List, Optional, Tuple
from urllib.parse import unquote_to_bytes

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from gateway.auth.index import (
    CONSUMER_GROUPS,
    CONSUMER_HEADERS,
    CONSUMER_ID,
    CONSUMER_NAME,
    ConsumerEntry,
    ConsumerIndex,
)
from gateway.auth.jwks import JWKSRegistry
from gateway.auth.passwords import PasswordVerifier, TooBusy
from gateway.auth.tokens import Invalid, TokenVerifier
from gateway.http.headers import headerKey, rawHeadersOf
from gateway.interfaces import IFilter
from gateway.pipeline.exchange import EarlyResponse

log = Logger()

_AUTHORIZATION = headerKey(b"authorization")

#: The keys of the consumer headers in a L{Headers}' raw dict: name,
#: groups, id (the name is always set, so never popped).
_CONSUMER_KEYS = (
    headerKey(CONSUMER_NAME),
    headerKey(CONSUMER_GROUPS),
    headerKey(CONSUMER_ID),
)

_sha256 = hashlib.sha256

_CHALLENGES = {
    "key": b'Key realm="gateway"',
    "jwt": b'Bearer realm="gateway"',
    "basic": b'Basic realm="gateway", charset="UTF-8"',
}


class AuthServices:
    """
    What the C{auth} filters of one process share: the password
    verifications and their cache, and the JWKS of the providers APIs
    name.  Made when first needed; nothing here does I/O before a request
    asks for it.
    """

    def __init__(
        self,
        reactor: Any,
        passwords: Optional[PasswordVerifier] = None,
        jwks: Optional[JWKSRegistry] = None,
    ) -> None:
        self.reactor = reactor
        self.passwords = passwords if passwords is not None else PasswordVerifier(reactor)
        self.jwks = jwks if jwks is not None else JWKSRegistry(reactor)


def _unauthorized(challenges: List[bytes]) -> EarlyResponse:
    return EarlyResponse.error(401, "authentication required", {b"www-authenticate": challenges})


_INVALID = EarlyResponse.error(401, "invalid credentials")
_FORBIDDEN = EarlyResponse.error(403, "access denied")
_BUSY = EarlyResponse.error(503, "too many password verifications", {b"retry-after": [b"1"]})


def _removeQuery(uri: bytes, name: bytes) -> bytes:
    """
    @return: C{uri} without the query parameters named C{name}.
    """
    path, mark, query = uri.partition(b"?")
    if not mark:
        return uri
    kept = [
        part
        for part in query.split(b"&")
        if unquote_to_bytes(part.split(b"=", 1)[0].replace(b"+", b" ")) != name
    ]
    return path + b"?" + b"&".join(kept) if kept else path


@implementer(IFilter)
class AuthFilter:
    """
    Authenticates the requests of one API (see the module docstring).
    """

    name = "auth"

    def __init__(self, auth: Any, services: AuthServices) -> None:
        """
        @param auth: the API's L{gateway.model.consumers.Auth}.
        """
        self.config = auth
        self._methods = tuple(auth.methods)
        self._anonymous = auth.anonymous
        self._hide = auth.hideCredentials
        self._passwords = services.passwords
        sources: List[Tuple[bool, bytes]] = []
        for keyName in auth.keyNames:
            where, _, name = keyName.partition(":")
            if where == "header":
                sources.append((True, headerKey(name.encode("ascii"))))
            else:
                sources.append((False, name.encode("ascii")))
        self._keySources = tuple(sources)
        self._challenges = [_CHALLENGES[m] for m in self._methods]
        settings = auth.jwt
        jwks = None
        if settings is not None and settings.jwksUrl is not None:
            jwks = services.jwks.cacheFor(settings.jwksUrl)
        self.tokens = TokenVerifier(services.reactor, settings, jwks, auth.anonymous)

    def __repr__(self) -> str:
        return f"<AuthFilter methods={','.join(self._methods)}>"

    # -- IFilter ----------------------------------------------------------------

    def before(self, context: Any) -> Any:
        # The hot path: written out in one function (each call costs a
        # tenth of a microsecond, and an API key is a few of them).
        request = context.request
        index: ConsumerIndex = context.snapshot.consumers
        incoming = request.requestHeaders
        raw = rawHeadersOf(incoming)
        authorization: Optional[bytes] = None
        checkedAuthorization = False
        for method in self._methods:
            if method == "key":
                for inHeader, name in self._keySources:
                    if not inHeader:
                        values = request.args.get(name)
                        if values:
                            # Logs and traces never show it, taken or not.
                            context.shownURI = _removeQuery(request.uri, name)
                    elif raw is not None:
                        values = raw.get(name)
                    else:
                        values = incoming.getRawHeaders(name)
                    if not values:
                        continue
                    presented = values[0]
                    consumer = index.presented.get(presented)
                    if consumer is None:
                        consumer = index.keys.get(_sha256(presented).digest())
                        if consumer is None:
                            return _INVALID
                        index.rememberKey(presented, consumer)
                    context.consumer = consumer
                    upstream = rawHeadersOf(context.upstreamHeaders)
                    if upstream is None or not inHeader:
                        if self._hide:
                            self._hideKey(context, inHeader, name)
                        return self._setConsumerHeaders(context, consumer, False)
                    if self._hide:
                        upstream.pop(name, None)
                    _, groups, customId = _CONSUMER_KEYS
                    if groups in upstream or customId in upstream:
                        # (Clients rarely send them: one test for the
                        # common case.)
                        upstream.pop(groups, None)
                        upstream.pop(customId, None)
                    for key, value in consumer.rawHeaders:
                        upstream[key] = [value]
                    return None
                continue
            if not checkedAuthorization:
                checkedAuthorization = True
                if raw is not None:
                    found = raw.get(_AUTHORIZATION)
                else:
                    found = incoming.getRawHeaders(b"authorization")
                authorization = found[0] if found else None
            if authorization is None:
                continue
            scheme, _, credentials = authorization.strip().partition(b" ")
            scheme = scheme.lower()
            if method == "jwt":
                if scheme != b"bearer":
                    continue
                outcome = self.tokens.verify(credentials.strip(), index)
                if isinstance(outcome, Deferred):
                    return outcome.addCallback(self._tokenVerified, context)
                return self._tokenVerified(outcome, context)
            if scheme != b"basic":
                continue
            return self._basic(context, credentials.strip(), index)
        if self._anonymous is not None:
            consumer = index.byName(self._anonymous)
            if consumer is not None:
                context.consumer = consumer
                return self._setConsumerHeaders(context, consumer, False)
        return _unauthorized(self._challenges)

    def after(self, context: Any, response: Any) -> None:
        return None

    def error(self, context: Any, failure: Any) -> None:
        return None

    # -- outcomes ---------------------------------------------------------------

    def _tokenVerified(self, outcome: Any, context: Any) -> Optional[EarlyResponse]:
        if isinstance(outcome, Invalid):
            return _INVALID
        context.consumer = outcome
        return self._setConsumerHeaders(context, outcome, True)

    def _basic(self, context: Any, credentials: bytes, index: ConsumerIndex) -> Any:
        try:
            decoded = base64.b64decode(credentials, validate=True)
        except (binascii.Error, ValueError):
            return _INVALID
        user, colon, password = decoded.partition(b":")
        if not colon:
            return _INVALID
        try:
            username = user.decode("utf-8")
        except UnicodeDecodeError:
            return _INVALID
        found = index.byUsername(username)
        if found is None:
            # The same work as for a known user, so that timing tells
            # nothing about which user names exist.
            verdict = self._passwords.verify(username, password, _DUMMY_HASH)
            if isinstance(verdict, Deferred):
                return verdict.addBoth(lambda _: _INVALID)
            return _INVALID
        consumer, credential = found
        verdict = self._passwords.verify(username, password, credential.passwordHash or "")
        if isinstance(verdict, Deferred):
            return verdict.addCallbacks(
                self._passwordChecked,
                self._passwordFailed,
                callbackArgs=(context, consumer),
            )
        return self._passwordChecked(verdict, context, consumer)

    def _passwordChecked(
        self, ok: bool, context: Any, consumer: ConsumerEntry
    ) -> Optional[EarlyResponse]:
        if not ok:
            return _INVALID
        context.consumer = consumer
        return self._setConsumerHeaders(context, consumer, True)

    def _passwordFailed(self, failure: Any) -> EarlyResponse:
        if failure.check(TooBusy):
            return _BUSY
        return failure

    def _setConsumerHeaders(
        self, context: Any, consumer: ConsumerEntry, authorization: bool
    ) -> Optional[EarlyResponse]:
        """
        Give the upstream request the consumer's headers, the client's own
        removed first; with C{authorization} (and C{hideCredentials}),
        remove the C{Authorization} header.
        """
        headers = context.upstreamHeaders
        raw = rawHeadersOf(headers)
        if raw is not None:
            for key in _CONSUMER_KEYS:
                raw.pop(key, None)
            for key, value in consumer.rawHeaders:
                raw[key] = [value]
            if authorization and self._hide:
                raw.pop(_AUTHORIZATION, None)
            return None
        for name in CONSUMER_HEADERS:
            headers.removeHeader(name)
        for name, value in consumer.headers:
            headers.setRawHeaders(name, [value])
        if authorization and self._hide:
            headers.removeHeader(b"authorization")
        # (None: the request goes on.)
        return None

    def _hideKey(self, context: Any, inHeader: bool, name: bytes) -> None:
        if inHeader:
            raw = rawHeadersOf(context.upstreamHeaders)
            if raw is not None:
                raw.pop(name, None)
            else:
                context.upstreamHeaders.removeHeader(name)
            return
        request = context.request
        request.uri = _removeQuery(request.uri, name)
        request.args.pop(name, None)
        if context.upstreamURI is not None:
            context.upstreamURI = _removeQuery(context.upstreamURI, name)


#: A bcrypt hash of a random password nobody knows (it was thrown away):
#: what a user name that no consumer has is checked against.
_DUMMY_HASH = "$2b$10$bA2ec4Nsep.Sz8nsCP2WquVz27qITdIOUEXHNZRTZEPhfg5eqEp3W"


@implementer(IFilter)
class ACLFilter:
    """
    Lets in the consumers an API's C{acl} allows: C{403} to one in a
    C{deny} group, or in none of the C{allow} groups when there are any.
    """

    name = "acl"

    def __init__(self, allow: Any = (), deny: Any = ()) -> None:
        self._allow = frozenset(allow)
        self._deny = frozenset(deny)

    def __repr__(self) -> str:
        return f"<ACLFilter allow={sorted(self._allow)} deny={sorted(self._deny)}>"

    def allows(self, consumer: Optional[ConsumerEntry]) -> bool:
        """
        @return: whether C{consumer} may call the API (no consumer may
            not).
        """
        if consumer is None:
            return False
        groups = consumer.groups
        if not self._deny.isdisjoint(groups):
            return False
        return not self._allow or not self._allow.isdisjoint(groups)

    def before(self, context: Any) -> Optional[EarlyResponse]:
        if self.allows(context.consumer):
            return None
        return _FORBIDDEN

    def after(self, context: Any, response: Any) -> None:
        return None

    def error(self, context: Any, failure: Any) -> None:
        return None


def makeAuthFilter(api: Any, services: Callable[[], AuthServices]) -> Optional[AuthFilter]:
    """
    @param services: gives the process's L{AuthServices}.
    @return: the API's C{auth} filter, or L{None} when it has no C{auth}.
    """
    if api.auth is None:
        return None
    return AuthFilter(api.auth, services())


def makeACLFilter(api: Any) -> Optional[ACLFilter]:
    """
    @return: the API's C{acl} filter, or L{None} when it has no C{acl}.
    """
    if api.acl is None:
        return None
    return ACLFilter(api.acl.allow, api.acl.deny)
