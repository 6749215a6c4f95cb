"""
The admin REST API, under C{/api/v1}: create, read, replace and delete
certificates, servers, clusters, apis and routings, and look at the live
proxies and their statistics.

A write-only field (a certificate's private key) is stored and never
answered: every answer shows a resource through
L{gateway.model.resources.publicJSON}, and a write that leaves the field out
keeps the stored one (L{gateway.admin.batch.keepStored}, for single writes
and batches alike).

Every write follows one path: read the store, parse and check the new
resource, check the references between resources and the caller's validator
against the whole proposed catalog, then commit against the revision that was
read.  A refused write changes nothing; a write that lost a race with another
admin is tried again from the start.  A write that changed the store answers
once the change serves on every proxy process of this gateway (with
C{?wait=proxies}, on every proxy of a shared store), or once
C{propagationTimeout} passed, saying then that it has not reached them all
(C{X-Gateway-Propagation: incomplete}).  Every answer that read or wrote the
store carries the revision it read or made (C{X-Gateway-Revision}).

Every route takes only the query parameters its OpenAPI operation lists
(C{wait} on the writes, none elsewhere): any other is answered 400 naming
it in C{field}, before anything is done (a guessed C{?dryRun=true} must not
be ignored while the write goes ahead).

Every answer, errors included, is JSON, never a Twisted HTML page.  An
error is C{{"error": "...", "field": "..."}}, C{field} naming the field at
fault (left out when no field is); an invalid resource (400) adds
C{errors}, every error of the resource as C{{"field", "error"}} objects,
the first of which is the one in C{error} and C{field}: first those that
break the API's OpenAPI document (not JSON, not an object, a field its
schema refuses), then those that break a rule the document states only in
words (a URL pattern naming a parameter twice, a rewrite naming a parameter
the pattern lacks, a PUT whose name is not the URL's, a regular expression
the linear engine refuses...), each marked C{"rule": true}.
"""

from __future__ import annotations

import functools
import hmac
import json
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple
from urllib.parse import unquote_to_bytes

import attrs
from klein import Klein
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    FailureGroup,
    maybeDeferred,
    race,
    succeed,
)
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from werkzeug.exceptions import MethodNotAllowed, NotFound
from zope.interface import implementer

from gateway.admin import batch as many
from gateway.admin.openapi import openAPIDocument
from gateway.interfaces import IPropagation
from gateway.model.consumers import consumerConflicts
from gateway.model.resources import (
    Catalog,
    CatalogParser,
    parseResource,
    publicJSON,
)
from gateway.model.resources import ReferenceError as ModelReferenceError
from gateway.model.schema import ValidationError, toJSON
from gateway.redis.client import RedisError
from gateway.store import KINDS, Change, ConflictError, StoreError, StoreState

#: The prefix of every route of the REST API.
PREFIX = "/api/v1"

#: The header of the store revision an answer read or made.
REVISION_HEADER = b"X-Gateway-Revision"
#: The header that says whether a write serves on every proxy it waited for.
PROPAGATION_HEADER = b"X-Gateway-Propagation"

_KIND = "<any(" + ", ".join(KINDS) + "):kind>"

#: The paths of the writes of many resources at once, whose bodies may be
#: larger than one resource's (see L{bodyLimitFor}).
BATCH_PATHS = (PREFIX + "/batch", PREFIX + "/config")

#: The largest body of a write of many resources, by default, in bytes:
#: 10,000 APIs with their clusters and servers are about 5 MB of JSON.
MAX_BATCH_BODY = 64 * 1024 * 1024
_JSON = b"application/json"
_REALM = b'Bearer realm="gateway"'


class APIError(Exception):
    """
    A request is answered with an error.

    @ivar code: the HTTP status.
    @ivar body: the JSON object answered: C{error}, C{field} when a field
        is at fault, and C{extra}.
    @ivar headers: extra response headers.
    """

    def __init__(
        self,
        code: int,
        message: str,
        field: str = "",
        headers: Optional[Dict[bytes, bytes]] = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.body = dict(extra, error=message)
        if field:
            self.body["field"] = field
        self.headers = headers or {}

    @classmethod
    def invalid(
        cls, error: ValidationError, rename: Optional[Callable[[str], str]] = None
    ) -> APIError:
        """
        @param error: every error of a resource.
        @param rename: maps each field as the error names it to the field
            answered.
        @return: the answer to an invalid resource: 400, with every error
            in C{errors}: those the OpenAPI document's schema states first,
            then the rules it states in words (marked C{"rule": true}).
        """
        if rename is not None:
            error = error.renamed(rename)
        leaves = sorted(error.errors, key=lambda leaf: leaf.semantic)
        error = ValidationError.collect(leaves)
        body = error.toJSON()
        return cls(400, body.pop("error"), body.pop("field", ""), **body)


@attrs.frozen
class _Answer:
    code: int
    body: Any
    headers: Dict[bytes, bytes] = attrs.Factory(dict)


def _withHeaders(answer: _Answer, headers: Dict[bytes, bytes]) -> _Answer:
    merged = dict(answer.headers)
    merged.update(headers)
    return attrs.evolve(answer, headers=merged)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _normalise(value: Any) -> Any:
    # The JSON the store keeps (lists, not tuples), to compare and answer with.
    return json.loads(json.dumps(value))


def _refuseConstant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _uniqueKeys(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    """
    A JSON object whose keys are all different: one given twice (which
    parsers read differently, the first or the last) is refused.
    """
    value = dict(pairs)
    if len(value) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"the key {key!r} is given twice in an object")
            seen.add(key)
    return value


def _badRequest(message: str) -> APIError:
    # A body that cannot be read as a resource at all: no field.
    return APIError(400, message, errors=[{"error": message}])


#: Media types a body is read from: JSON, and the form type that curl's
#: -d sends when no Content-Type is given (its content is JSON all the
#: same).  Any other is answered 415.
_JSON_TYPES = (b"application/json", b"text/json", b"application/x-www-form-urlencoded")


def _isJSONType(contentType: bytes) -> bool:
    mediaType = contentType.split(b";", 1)[0].strip().lower()
    if mediaType in _JSON_TYPES:
        return True
    return mediaType.startswith(b"application/") and mediaType.endswith(b"+json")


def _defaultValidate(catalog: Catalog) -> None:
    catalog.check()


def _defaultProxies() -> List[dict]:
    return []


def _defaultStats() -> Dict[str, Any]:
    return {}


@implementer(IPropagation)
class _Unwatched:
    """
    The propagation of an admin that knows no proxy: a write answers once
    it is committed.
    """

    def serving(self) -> Optional[int]:
        return None

    def whenServed(self, revision: int, everywhere: bool) -> Deferred:
        return succeed(None)


def _revision(revision: int) -> Dict[bytes, bytes]:
    return {REVISION_HEADER: str(revision).encode("ascii")}


def _describeRefs(refs: List[Tuple[str, str, str]]) -> str:
    return ", ".join(f"{k}/{n} ({f})" for k, n, f in refs)


#: The query parameter of the writes (see L{AdminAPI._everywhere}).
WAIT = "wait"

#: The query parameters of a write of one resource or of many, by method.
_WRITES = {"POST": (WAIT,), "PUT": (WAIT,), "DELETE": (WAIT,)}


def queryItems(request: IRequest) -> List[Tuple[bytes, bytes]]:
    """
    @return: every C{(name, value)} of the request's query, decoded, in
        order; a name without C{=} too (C{?dryRun}), with an empty value,
        which C{request.args} leaves out.
    """
    uri = request.uri
    start = uri.find(b"?")
    if start < 0:
        return []
    items = []
    for item in uri[start + 1 :].replace(b";", b"&").split(b"&"):
        if item:
            key, _, value = item.partition(b"=")
            items.append(
                (
                    unquote_to_bytes(key.replace(b"+", b" ")),
                    unquote_to_bytes(value.replace(b"+", b" ")),
                )
            )
    return items


def checkQuery(request: IRequest, accepted: Mapping[str, Tuple[str, ...]]) -> None:
    """
    Refuse a query parameter the route does not take: an operator who
    guesses one (C{?dryRun=true}) must not see it ignored while the write
    goes ahead.

    @param accepted: the names of the query parameters the route takes,
        by method; a method left out takes none.
    @raise APIError: 400 naming the first parameter the request's method
        does not take in C{field}, and those it takes in the message.
    """
    method = request.method.decode("ascii", "replace")
    names = accepted.get(method, ())
    for key, _ in queryItems(request):
        name = key.decode("utf-8", "backslashreplace")
        if name not in names:
            path = request.path.decode("utf-8", "backslashreplace")
            takes = f"only {', '.join(names)}" if names else "none"
            raise APIError(
                400,
                f"unknown query parameter {name!r}: {method} {path} takes {takes}",
                name,
            )


#: The query parameters of a route that takes none.
_NO_PARAMETERS: Mapping[str, Tuple[str, ...]] = {}


def _jsonEndpoint(
    authenticated: bool = True,
    query: Optional[Mapping[str, Tuple[str, ...]]] = _NO_PARAMETERS,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """
    Turn a coroutine method returning an L{_Answer} into a Klein route
    handler that writes JSON, and every exception into a JSON error.

    @param query: the query parameters the route takes, by method (see
        L{checkQuery}); by default none.  They are the operation's
        parameters in the OpenAPI document.  L{None} for an error handler,
        which answers its error whatever the query.
    """

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        async def handler(self: AdminAPI, request: IRequest, *args: Any, **kwargs: Any) -> bytes:
            try:
                if authenticated:
                    self._authorize(request)
                if query is not None:
                    checkQuery(request, query)
                answer = await f(self, request, *args, **kwargs)
            except CancelledError:
                raise
            except Exception as e:
                answer = self._errorAnswer(e)
            return self._write(request, answer)

        return handler

    return decorate


def _hasPassword(body: Dict[str, Any]) -> bool:
    credentials = body.get("credentials")
    return isinstance(credentials, list) and any(
        isinstance(c, dict) and c.get("password") is not None for c in credentials
    )


def _inline(f: Callable[..., Any], *args: Any) -> Deferred:
    return maybeDeferred(f, *args)


def _relativeField(field: str, written: str) -> str:
    prefix = written + ":"
    return field[len(prefix) :] if written and field.startswith(prefix) else field


class AdminAPI:
    """
    The REST API of the admin site, as a Klein app.

    @ivar app: the L{Klein} app; L{resource} gives its resource.
    """

    app = Klein()
    log = Logger()

    #: How many times a write that lost a race is tried again.
    maxRetries = 5

    def __init__(
        self,
        store: Any,
        token: Optional[str],
        reactor: Any,
        validate: Optional[Callable[[Catalog], Any]] = None,
        proxies: Optional[Callable[[], Any]] = None,
        stats: Optional[Callable[[], Any]] = None,
        maxBodySize: int = 1_048_576,
        metrics: Optional[IResource] = None,
        ready: Optional[Callable[[], bool]] = None,
        readiness: Optional[Callable[[], str]] = None,
        parser: Optional[CatalogParser] = None,
        propagation: Optional[Any] = None,
        propagationTimeout: float = 2.0,
        runInThread: Optional[Callable[..., Deferred]] = None,
        maxBatchBodySize: int = MAX_BATCH_BODY,
        purgeCache: Optional[Callable[[str], Deferred]] = None,
    ) -> None:
        """
        @param store: the L{gateway.interfaces.IStore} provider to serve.
        @param token: the bearer token every C{/api/v1} request must carry,
            or L{None} for no authentication.
        @param reactor: an L{IReactorTime}: it bounds the wait for a write
            to serve everywhere.
        @param validate: called with the whole proposed L{Catalog} before a
            write is committed; it raises L{gateway.model.resources.ReferenceError}
            (answered 409), L{ValidationError} (400) or another L{ValueError}
            (409) to refuse it, and may return a Deferred.  The default checks
            the references between resources.
        @param proxies: returns (or returns a Deferred of) the list of live
            proxies for C{GET /api/v1/proxies}.
        @param stats: returns (or returns a Deferred of) the statistics for
            C{GET /api/v1/stats}.
        @param maxBodySize: the largest request body accepted, in bytes;
            larger ones are answered 413.
        @param parser: the L{CatalogParser} to read store states with; the
            snapshot manager's (L{SnapshotManager.parser}), so that what
            the admin validates and what the manager then compiles are the
            same objects, known by identity (with 10,000 APIs, comparing
            them all would cost more than the change).
        @param propagation: the L{gateway.interfaces.IPropagation} a write
            waits on before it answers; by default none (a write answers
            once committed).
        @param propagationTimeout: how long a write waits for its change to
            serve everywhere, in seconds, before it answers anyway.
        @param runInThread: C{runInThread(f, *args)} runs C{f} off the
            reactor thread and returns a Deferred of its result: a
            consumer whose credentials hold passwords is parsed there
            (bcrypt takes tens of milliseconds a password).  By default it
            is run in the reactor thread.
        @param maxBatchBodySize: the largest body of C{POST /api/v1/batch}
            and C{PUT /api/v1/config}, in bytes (the site must let such
            bodies through: L{bodyLimitFor}).
        @param purgeCache: C{purgeCache(name)} drops an API's response
            cache entries (see L{gateway.cache.purges}) and returns a
            Deferred of what it did, a JSON object; it fails with
            L{gateway.redis.client.RedisError} when the fleet's Redis
            could not be told.  By default there is no cache to purge.
        """
        self._maxBatchBodySize = maxBatchBodySize
        self._runInThread = runInThread if runInThread is not None else _inline
        self._reactor = reactor
        self._propagation = propagation if propagation is not None else _Unwatched()
        self._propagationTimeout = propagationTimeout
        self._store = store
        self._token = None if token is None else token.encode("utf-8")
        self._validate = validate if validate is not None else _defaultValidate
        self._proxies = proxies if proxies is not None else _defaultProxies
        self._stats = stats if stats is not None else _defaultStats
        self._maxBodySize = maxBodySize
        self._metrics = metrics
        self._parser = parser if parser is not None else CatalogParser()
        if readiness is None:
            isReady = ready if ready is not None else (lambda: True)

            def readiness() -> str:
                return "ready" if isReady() else "starting"

        self._readiness = readiness
        self._purgeCache = purgeCache

    def bodyLimitFor(self, method: bytes, host: Optional[bytes], path: bytes) -> Optional[int]:
        """
        The body limit of an admin request, as the site's channel asks for
        it before it reads a body (a L{gateway.http.channel.BodyLimitFor}):
        C{maxBatchBodySize} for the writes of many resources, the site's
        own limit (L{None}) for any other.
        """
        if path.decode("latin-1") in BATCH_PATHS:
            return self._maxBatchBodySize
        return None

    def resource(self) -> IResource:
        """
        @return: the resource that serves the API, to put at the root of the
            admin site.
        """
        return self.app.resource()

    # -- plumbing -------------------------------------------------------------

    def _authorize(self, request: IRequest) -> None:
        if self._token is None:
            return
        header = request.getHeader(b"authorization") or b""
        scheme, _, given = header.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self._token):
            raise APIError(
                401,
                "missing or invalid admin token",
                headers={b"WWW-Authenticate": _REALM},
            )

    def _errorAnswer(self, e: Exception) -> _Answer:
        if isinstance(e, APIError):
            return _Answer(e.code, e.body, e.headers)
        if isinstance(e, StoreError):
            self.log.warn("store unavailable: {error}", error=e)
            return _Answer(503, {"error": f"store unavailable: {e}"})
        self.log.failure("admin API request failed", failure=None)
        return _Answer(500, {"error": "internal error"})

    def _write(self, request: IRequest, answer: _Answer) -> bytes:
        request.setResponseCode(answer.code)
        request.setHeader(b"Content-Type", _JSON)
        request.setHeader(b"Cache-Control", b"no-store")
        for name, value in answer.headers.items():
            request.setHeader(name, value)
        if answer.code == 204:
            return b""
        try:
            body = _dumps(answer.body)
        except (TypeError, ValueError):
            # A proxies or stats provider gave something that is not JSON.
            self.log.failure("admin API answer is not JSON: {body!r}", body=answer.body)
            request.setResponseCode(500)
            body = _dumps({"error": "internal error"})
        request.setHeader(b"Content-Length", str(len(body)).encode("ascii"))
        return body

    def _readBody(self, request: IRequest, maxSize: Optional[int] = None) -> Dict[str, Any]:
        maxBodySize = self._maxBodySize if maxSize is None else maxSize
        contentType = request.getHeader(b"content-type")
        if contentType is not None and not _isJSONType(contentType):
            mediaType = contentType.split(b";", 1)[0].strip().decode("latin-1")
            raise APIError(
                415,
                f"the body must be JSON (Content-Type: application/json), not {mediaType!r}",
            )
        tooLarge = APIError(413, f"request body is larger than {maxBodySize} bytes")
        length = request.getHeader(b"content-length")
        if length is not None and length.strip().isdigit() and int(length) > maxBodySize:
            raise tooLarge
        content = request.content
        content.seek(0)
        data = content.read(maxBodySize + 1)
        if len(data) > maxBodySize:
            raise tooLarge
        try:
            value = json.loads(
                data.decode("utf-8"), parse_constant=_refuseConstant, object_pairs_hook=_uniqueKeys
            )
        except RecursionError:
            raise _badRequest("invalid JSON: nested too deeply")
        except ValueError as e:
            raise _badRequest(f"invalid JSON: {e}")
        if not isinstance(value, dict):
            raise _badRequest("the request body must be a JSON object")
        return value

    def _catalogOf(self, state: StoreState) -> Catalog:
        try:
            return self._parser.parse(state.resources)
        except ValidationError as e:
            # Not the caller's fault: the store holds something this version
            # of the gateway cannot read (edited by hand, or an older format).
            self.log.error("the store holds an invalid resource: {error}", error=e)
            raise APIError(500, f"the store holds an invalid resource: {e.message}", e.field)

    async def _check(
        self, catalog: Catalog, written: str = "", rename: Optional[Callable[[str], str]] = None
    ) -> None:
        """
        @param written: C{"kind/name"} of the resource being written, or
            empty for a delete.  An error about one of its own fields names
            the field relative to the body sent (C{nodes[0].urlRewrite}),
            as parsing errors do, and is answered 400, marked as a rule:
            the resource fits the schema (it was parsed) but cannot be
            compiled.  An error
            about another resource keeps its C{kind/name:} prefix; after a
            delete it is a conflict with what remains (409).
        @param rename: for a write of several resources, names each field
            as the body sent does, instead of C{written}.
        """
        # A resource written is at fault for what does not compile; a delete
        # is in conflict with what remains.
        blamed = bool(written) or rename is not None
        if rename is None:
            rename = functools.partial(_relativeField, written=written)
        try:
            await maybeDeferred(self._validate, catalog)
        except ModelReferenceError as e:
            raise _conflicts([(rename(leaf.field), leaf.message) for leaf in e.errors])
        except ValidationError as e:
            if not blamed:
                raise APIError(409, e.message, e.field)
            # The validator's errors are all beyond the document's schema.
            leaves = [type(leaf)(leaf.field, leaf.message, True) for leaf in e.errors]
            raise APIError.invalid(ValidationError.collect(leaves), rename)
        except ValueError as e:
            raise APIError(409, str(e))

    async def _commit(
        self, attempt: Callable[[StoreState], Any], everywhere: bool, since: Optional[int] = None
    ) -> _Answer:
        """
        Run one write: C{attempt(state)} returns C{(answer, changes)} for the
        state read, and the changes are committed against it; a lost race
        runs it all again.  The answer waits for the change to serve (see
        L{_propagated}).

        @param everywhere: wait for every proxy of a shared store, not only
            for this gateway's proxy processes.
        @param since: the revision the caller read, when nothing may have
            changed since: the changes are committed against it, and a
            lost race is answered 409 (field C{revision}), not run again.
        """
        for _ in range(self.maxRetries + 1):
            state = await self._store.load()
            try:
                answer, changes = await attempt(state)
            except APIError as e:
                if since is not None and since != state.revision:
                    # Made against another state: its errors may be stale
                    # (a 404 for what was there when it was read).
                    raise _changedSince(since, state.revision, "")
                e.headers.update(_revision(state.revision))
                raise
            if not changes:
                # Nothing changed, nothing to wait for.
                return _withHeaders(answer, _revision(state.revision))
            try:
                revision = await self._store.commit(
                    changes, state.revision if since is None else since
                )
            except ConflictError as e:
                if since is not None:
                    raise _changedSince(since, state.revision, f" ({e})")
                continue
            return await self._propagated(answer, revision, everywhere)
        raise APIError(409, "concurrent modification, retry")

    async def _propagated(self, answer: _Answer, revision: int, everywhere: bool) -> _Answer:
        """
        Wait until C{revision} serves (at most C{propagationTimeout}
        seconds), then say in the answer whether it does.
        """
        waiting = self._propagation.whenServed(revision, everywhere)
        # The first of the wait and the bound decides, whatever the loser
        # does when cancelled (a read of the proxies' records in flight may
        # not end at once: an addTimeout on the wait would wait for it).
        bound = deferLater(self._reactor, self._propagationTimeout, lambda: None)
        try:
            first, _ = await race([waiting, bound])
        except FailureGroup:
            first = 1
        if first == 0:
            propagation = b"complete"
        else:
            self.log.warn(
                "revision {revision} did not serve on every {what} within {timeout}s",
                revision=revision,
                what="proxy" if everywhere else "proxy process of this gateway",
                timeout=self._propagationTimeout,
            )
            propagation = b"incomplete"
        headers = _revision(revision)
        headers[PROPAGATION_HEADER] = propagation
        return _withHeaders(answer, headers)

    def _everywhere(self, request: IRequest) -> bool:
        """
        @return: whether a write waits for every proxy of a shared store
            (C{?wait=proxies}) or only for this gateway's (C{?wait=workers},
            the default).
        """
        values = [v for k, v in queryItems(request) if k == WAIT.encode("ascii")]
        if not values:
            return False
        if values == [b"proxies"]:
            return True
        if values == [b"workers"]:
            return False
        raise APIError(400, "must be 'workers' or 'proxies', given once", WAIT)

    def _serving(self) -> Dict[bytes, bytes]:
        revision = self._propagation.serving()
        return _revision(revision) if revision is not None else {}

    # -- routes ---------------------------------------------------------------

    @app.route("/healthz", methods=["GET"])
    @_jsonEndpoint(authenticated=False)
    async def healthz(self, request: IRequest) -> _Answer:
        """
        C{GET /healthz}: the admin site is up.
        """
        return _Answer(200, {"status": "ok"})

    @app.route(PREFIX + "/" + _KIND, methods=["GET", "POST"])
    @_jsonEndpoint(query=_WRITES)
    async def collection(self, request: IRequest, kind: str) -> _Answer:
        """
        C{GET /api/v1/KIND} lists the resources of a kind, sorted by name;
        C{POST /api/v1/KIND} creates one.
        """
        if request.method == b"POST":
            everywhere = self._everywhere(request)
            return await self._put(kind, None, self._readBody(request), everywhere)
        state = await self._store.load()
        items = state.resources[kind]
        return _Answer(
            200,
            [publicJSON(kind, items[name]) for name in sorted(items)],
            _revision(state.revision),
        )

    @app.route(PREFIX + "/" + _KIND + "/<name>", methods=["GET", "PUT", "DELETE"])
    @_jsonEndpoint(query=_WRITES)
    async def item(self, request: IRequest, kind: str, name: str) -> _Answer:
        """
        C{GET}, C{PUT} (create or replace) and C{DELETE} one resource.
        """
        if request.method == b"PUT":
            everywhere = self._everywhere(request)
            return await self._put(kind, name, self._readBody(request), everywhere)
        if request.method == b"DELETE":
            return await self._delete(kind, name, self._everywhere(request))
        state = await self._store.load()
        value = state.get(kind, name)
        if value is None:
            error = self._notFound(kind, name)
            error.headers.update(_revision(state.revision))
            raise error
        return _Answer(200, publicJSON(kind, value), _revision(state.revision))

    @app.route(PREFIX + "/apis/<name>/cache", methods=["DELETE"])
    @_jsonEndpoint()
    async def purgeCache(self, request: IRequest, name: str) -> _Answer:
        """
        C{DELETE /api/v1/apis/NAME/cache}: purge an API's response cache,
        in every proxy process of this gateway and, with Redis, of the
        fleet (see L{gateway.cache.purges}).
        """
        state = await self._store.load()
        if state.get("apis", name) is None:
            error = self._notFound("apis", name)
            error.headers.update(_revision(state.revision))
            raise error
        if self._purgeCache is None:
            answer: Dict[str, Any] = {
                "api": name,
                "entries": 0,
                "processes": 0,
                "complete": True,
                "redis": False,
            }
        else:
            try:
                answer = await self._purgeCache(name)
            except RedisError as e:
                raise APIError(
                    503,
                    f"Redis did not take the purge ({e}): the fleet's entries are not purged;"
                    " this gateway's memory entries are",
                    api=name,
                )
        self.log.info("purged the response cache of API {api}", api=name)
        return _Answer(200, answer, _revision(state.revision))

    @app.route(PREFIX + "/proxies", methods=["GET"])
    @_jsonEndpoint()
    async def proxies(self, request: IRequest) -> _Answer:
        """
        C{GET /api/v1/proxies}: the live proxies, and the revision each
        serves (and each of their workers).
        """
        return _Answer(200, await maybeDeferred(self._proxies), self._serving())

    @app.route(PREFIX + "/stats", methods=["GET"])
    @_jsonEndpoint()
    async def stats(self, request: IRequest) -> _Answer:
        """
        C{GET /api/v1/stats}: per API and server statistics.
        """
        return _Answer(200, await maybeDeferred(self._stats), self._serving())

    @app.route("/readyz", methods=["GET"])
    @_jsonEndpoint(authenticated=False)
    async def readyz(self, request: IRequest) -> _Answer:
        """
        C{GET /readyz}: 200 once this gateway has loaded its configuration
        and serves it (for load balancers and orchestrators); 503 with
        C{starting} before, or C{unavailable} when, once started, none of
        its workers serves (see L{gateway.process.status.GatewayStatus.readiness}).
        """
        status = self._readiness()
        return _Answer(200 if status == "ready" else 503, {"status": status})

    @app.route(PREFIX + "/openapi.json", methods=["GET"])
    @_jsonEndpoint(authenticated=False)
    async def openapi(self, request: IRequest) -> _Answer:
        """
        C{GET /api/v1/openapi.json}: the OpenAPI document of this API (no
        token needed: it tells nothing about the configuration).
        """
        return _Answer(200, openAPIDocument())

    @app.route("/metrics", methods=["GET"])
    def metrics(self, request: IRequest) -> Any:
        """
        C{GET /metrics}: Prometheus metrics.  They describe the whole
        configuration, so they need the token like every other route but
        C{/healthz} (Prometheus sends it with C{authorization:
        {credentials: ...}}).
        """
        try:
            self._authorize(request)
            checkQuery(request, {})
        except APIError as e:
            return self._write(request, self._errorAnswer(e))
        if self._metrics is None:
            return self._write(request, _Answer(404, {"error": "no such resource"}))
        return self._metrics

    @app.handle_errors(NotFound)
    @_jsonEndpoint(authenticated=False, query=None)
    async def notFound(self, request: IRequest, failure: Any) -> _Answer:
        """
        Any other path: 404, once the caller is known for C{/api/v1} paths
        (an anonymous caller learns nothing about what exists there).
        """
        self._authorizeUnder(request)
        return _Answer(404, {"error": "no such resource"})

    @app.handle_errors(MethodNotAllowed)
    @_jsonEndpoint(authenticated=False, query=None)
    async def methodNotAllowed(self, request: IRequest, failure: Any) -> _Answer:
        """
        A known path with a method it does not take: 405 with C{Allow}.
        """
        self._authorizeUnder(request)
        allowed = sorted(failure.value.valid_methods or ())
        method = request.method.decode("ascii", "replace")
        return _Answer(
            405,
            {"error": f"method {method} not allowed"},
            {b"Allow": ", ".join(allowed).encode("ascii")},
        )

    def _authorizeUnder(self, request: IRequest) -> None:
        path = b"/" + b"/".join(request.postpath)
        prefix = PREFIX.encode("ascii")
        if path == prefix or path.startswith(prefix + b"/"):
            self._authorize(request)

    # -- writes ---------------------------------------------------------------

    def _notFound(self, kind: str, name: str) -> APIError:
        return APIError(404, f"{kind[:-1]} {name!r} does not exist", "name")

    async def _put(
        self, kind: str, name: Optional[str], body: Dict[str, Any], everywhere: bool
    ) -> _Answer:
        """
        Create (C{name} is L{None}: a C{POST}) or create-or-replace (a C{PUT}
        to C{name}) one resource.
        """
        createOnly = name is None
        try:
            if kind == "consumers" and _hasPassword(body):
                sent = await self._runInThread(parseResource, kind, body, name)
            else:
                sent = parseResource(kind, body, name)
        except ValidationError as e:
            raise APIError.invalid(e)
        name = sent.name
        location = f"{PREFIX}/{kind}/{name}".encode("ascii")

        async def attempt(state: StoreState) -> Tuple[_Answer, List[Change]]:
            existing = state.get(kind, name)
            if existing is not None and createOnly:
                raise APIError(409, f"{kind[:-1]} {name!r} already exists", "name")
            try:
                resource = many.keepStored(
                    kind, sent, self._catalogOf(state), self._reactor.seconds()
                )
            except ValidationError as e:
                raise APIError.invalid(e)
            value = _normalise(toJSON(resource))
            shown = publicJSON(kind, value)
            if existing is not None and _normalise(existing) == value:
                return _Answer(200, shown), []
            catalog = self._catalogOf(state).withResource(kind, name, resource)
            for _, _, fieldName, targetKind, target in (
                ref for ref in catalog.brokenReferences() if ref[:2] == (kind, name)
            ):
                raise APIError(409, f"{targetKind[:-1]} {target!r} does not exist", fieldName)
            if kind == "consumers":
                for other, fieldName, message in consumerConflicts(catalog.consumers, name):
                    if other == name:
                        raise APIError(409, message, fieldName)
            if kind == "certificates":
                for _, i, sni, other in catalog.sniConflicts(last=name)[:1]:
                    raise APIError(
                        409, f"{sni!r} is an SNI of certificate {other!r} already", f"snis[{i}]"
                    )
            await self._check(catalog, f"{kind}/{name}")
            if existing is None:
                answer = _Answer(201, shown, {b"Location": location})
            else:
                answer = _Answer(200, shown)
            return answer, [Change(kind, name, value)]

        return await self._commit(attempt, everywhere)

    async def _delete(self, kind: str, name: str, everywhere: bool) -> _Answer:
        """
        Delete one resource, unless others still name it.
        """

        async def attempt(state: StoreState) -> Tuple[_Answer, List[Change]]:
            if state.get(kind, name) is None:
                raise self._notFound(kind, name)
            catalog = self._catalogOf(state)
            users = catalog.usersOf(kind, name)
            if users:
                userKind, userName, userField = users[0]
                raise APIError(
                    409,
                    f"{kind[:-1]} {name!r} is still used by {_describeRefs(users)}",
                    f"{userKind}/{userName}:{userField}",
                    users=[{"kind": k, "name": n, "field": f} for k, n, f in users],
                )
            await self._check(catalog.withResource(kind, name, None))
            return _Answer(204, None), [Change(kind, name, None)]

        return await self._commit(attempt, everywhere)

    # -- many resources at once (POST /api/v1/batch, GET and PUT /api/v1/config) --

    @app.route(PREFIX + "/batch", methods=["POST"])
    @_jsonEndpoint(query=_WRITES)
    async def batch(self, request: IRequest) -> _Answer:
        """
        C{POST /api/v1/batch}: put and delete many resources of any kinds
        in one revision, all or none (see L{gateway.admin.batch.readBatch}).
        """
        everywhere = self._everywhere(request)
        body = self._readBody(request, self._maxBatchBodySize)
        try:
            batch = many.readBatch(body)
        except ValidationError as e:
            raise APIError.invalid(e)
        return await self._writeMany(batch, everywhere)

    @app.route(PREFIX + "/config", methods=["GET", "PUT"])
    @_jsonEndpoint(query=_WRITES)
    async def config(self, request: IRequest) -> _Answer:
        """
        C{GET /api/v1/config}: every resource, a list per kind, at one
        revision; C{PUT /api/v1/config}: replace them all with the body's
        (what it leaves out is deleted), in one revision, all or none.
        """
        if request.method == b"PUT":
            everywhere = self._everywhere(request)
            body = self._readBody(request, self._maxBatchBodySize)
            try:
                batch = many.readConfig(body)
            except ValidationError as e:
                raise APIError.invalid(e)
            return await self._writeMany(batch, everywhere)
        state = await self._store.load()
        config = {
            kind: [publicJSON(kind, value) for value in values]
            for kind, values in many.configOf(state.resources).items()
        }
        return _Answer(200, config, _revision(state.revision))

    async def _writeMany(self, batch: many.Batch, everywhere: bool) -> _Answer:
        """
        Parse, check and commit a write of many resources as one revision:
        every resource parsed once, then the whole proposed catalog
        checked once (references, credentials, what the proxies compile).
        """
        try:
            if many.hasPassword(batch):
                parsed = await self._runInThread(many.parseItems, batch)
            else:
                parsed = many.parseItems(batch)
        except ValidationError as e:
            raise APIError.invalid(e)
        rename = many.fieldNamer(parsed)

        async def attempt(state: StoreState) -> Tuple[_Answer, List[Change]]:
            catalog = self._catalogOf(state)
            try:
                plan = many.planChanges(state, catalog, batch, parsed, self._reactor.seconds())
            except ValidationError as e:
                raise APIError.invalid(e)
            if plan.missing:
                item = plan.missing[0]
                raise APIError(
                    404, f"{item.kind[:-1]} {item.name!r} does not exist", f"{item.where}.name"
                )
            broken = many.brokenReferences(plan, parsed)
            if broken:
                raise _conflicts(broken)
            # Credentials and SNIs claimed twice, and what does not compile,
            # all at once (a 409 when all are conflicts).
            await self._check(plan.catalog, rename=rename)
            counts = {action: 0 for action in (many.CREATED, many.UPDATED, many.DELETED)}
            for _, _, action in plan.actions:
                counts[action] += 1
            body = dict(
                counts,
                unchanged=plan.unchanged,
                changes=[
                    {"kind": kind, "name": name, "action": action}
                    for kind, name, action in plan.actions
                ],
            )
            changes = [Change(kind, name, value) for kind, name, value in plan.changes]
            return _Answer(200, body), changes

        return await self._commit(attempt, everywhere, since=batch.revision)


def _changedSince(since: int, revision: int, why: str) -> APIError:
    """
    @return: the 409 of a write made against revision C{since} of a store
        now at C{revision}.
    """
    if since > revision:
        message = f"revision {since} is newer than the store's ({revision}): read it again"
    else:
        message = f"the configuration changed since revision {since}: read it again{why}"
    return APIError(409, message, "revision", headers=_revision(revision))


def _conflicts(problems: List[Tuple[str, str]]) -> APIError:
    """
    @return: a 409 naming the first of C{(field, message)} problems, and
        all of them (up to a thousand) in C{errors}.
    """
    field, message = problems[0]
    return APIError(
        409,
        message,
        field,
        errors=[{"field": f, "error": m} for f, m in problems[:1000]],
    )
