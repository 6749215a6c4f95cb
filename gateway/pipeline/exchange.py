"""
The exchange of one request: what the pipeline knows about a request on
its way (L{Exchange}), the response filters see on its way back
(L{ResponseInfo}), and the answers the gateway makes itself
(L{EarlyResponse}).  Filters receive these through L{gateway.interfaces.IFilter}.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Hashable, Mapping, Optional, Sequence, Tuple, Union

import attrs
from twisted.internet.defer import Deferred
from twisted.web.http_headers import Headers

from gateway.auth.index import ConsumerEntry
from gateway.http.body import RequestBody


@attrs.frozen
class EarlyResponse:
    """
    An answer a filter (or the proxy) gives without asking any backend.

    @ivar code: the HTTP status.
    @ivar body: the JSON object of the answer.
    @ivar headers: extra response headers, C{{name: [values]}}.
    @ivar encoded: C{body} as JSON, when the maker has it already (an
        aggregation splices its nodes' answers): L{encode} returns it.  An
        answer that is not JSON (a mock response's text, a CORS
        preflight's empty body) gives its bytes here, and its
        C{contentType}.
    @ivar contentType: the C{Content-Type} of the answer, or L{None} for
        none.
    """

    code: int
    body: Mapping[str, object]
    headers: Mapping[Union[str, bytes], Sequence[Union[str, bytes]]] = attrs.Factory(dict)
    #: C{body} already encoded (what L{encode} returns), or L{None}.
    encoded: Optional[bytes] = None
    contentType: Optional[bytes] = b"application/json"

    @classmethod
    def error(
        cls,
        code: int,
        message: str,
        headers: Optional[Mapping[Union[str, bytes], Sequence[Union[str, bytes]]]] = None,
        **extra: object,
    ) -> EarlyResponse:
        """
        @return: a JSON error answer C{{"error": message, **extra}}.
        """
        body: Dict[str, object] = {"error": message}
        body.update(extra)
        return cls(code, body, headers or {})

    def encode(self) -> bytes:
        if self.encoded is not None:
            return self.encoded
        return json.dumps(self.body, separators=(",", ":")).encode("utf-8") + b"\n"


class Exchange:
    """
    One request on its way through the pipeline: what the pipeline knows
    about it, handed to every filter hook.

    Filters may read every attribute, change C{upstreamHeaders} and
    C{upstreamURI} in C{before}, and choose the C{cluster}; the rest is the
    pipeline's own bookkeeping.  A filter keeps per-request state of its own
    in C{attributes}, under a key it owns (itself, or an object of its
    module): never the pipeline's.

    @ivar request: the L{gateway.http.request.GatewayRequest} from the client.
    @ivar snapshot: the L{gateway.routing.snapshot.Snapshot} this request is
        served from, start to end, even when a newer one is swapped in
        meanwhile (L{None} before the first one).
    @ivar api: the L{gateway.routing.snapshot.CompiledAPI} that matched, or
        L{None} when none did (or there is no configuration yet): the
        gateway then answers itself (404, 503), through the global filters.
    @ivar params: the path parameters of the match, C{{name: str}}.
    @ivar clientIP: the client's address as the gateway trusts it (the
        direct peer, or the address a trusted proxy forwarded).
    @ivar startTime: when the request reached the gateway (reactor seconds).
    @ivar upstreamHeaders: the L{Headers} that will be sent upstream.
    @ivar upstreamURI: the request target sent upstream (L{bytes}), or
        L{None} until dispatch computes it; a filter may set it.
    @ivar cluster: the L{gateway.routing.snapshot.ClusterRuntime} to dispatch
        to; L{None} until dispatch, unless a filter chose one earlier.
    @ivar routing: the name of the C{split} routing that chose the cluster,
        or L{None}.
    @ivar backend: the L{gateway.balancing.backend.Backend} chosen, once
        chosen (the last one tried, after retries).
    @ivar retries: how many times the request was sent again.
    @ivar sentAt: when the request was last sent upstream.
    @ivar upstreamLatency: seconds from sending to the upstream's head, once
        it came.
    @ivar upstreamOK: whether the upstream's status counts as a success for
        its server (see L{gateway.balancing.backend.Backend.isFailureStatus}).
    @ivar outcome: how the request ended when no upstream answered it, as
        stats record it: C{"reject:FILTER"} (a filter answered early),
        C{timeout}, C{refused}, C{unavailable}, C{broken}, ...,
        C{redirect:https} (an C{httpsOnly} API asked over HTTP); L{None} for
        an answer from upstream.  A filter that answers early may set it in
        C{before} (else it is C{"reject:FILTER"}).
    @ivar error: what went wrong upstream, in words, or L{None}.
    @ivar status: the status sent to the client, once known.
    @ivar requestId: the request's id (L{bytes}), when the C{request-id}
        filter gave one.
    @ivar gone: whether the client went away before its answer was out.
    @ivar waiting: the L{Deferred} the pipeline waits on (a filter's
        C{before}, an aggregation): cancelled when the client goes away.
    @ivar pending: the upstream request whose head is awaited (an
        L{gateway.interfaces.IUpstreamRequest}), cancelled when the client
        goes away.
    @ivar bodyTransport: while a response body streams, its upstream
        connection (stopped when the client goes away).
    @ivar body: the request's body (L{RequestBody}).
    @ivar jsonBody: the request's JSON body as routing conditions read it,
        parsed once: C{(limit, found, document)}, or L{None}.
    @ivar consumer: who the request comes from, once the API's C{auth}
        filter authenticated it (a L{gateway.auth.index.ConsumerEntry}:
        its C{name}, C{customId}, C{groups}); L{None} before, and on APIs
        without C{auth}.
    @ivar shownURI: the request target as the access log and traces show
        it, when it is not C{request.uri}: without the API key the C{auth}
        filter found in its query (a credential is never logged, whether it
        goes upstream or not); L{None} otherwise.
    @ivar cache: the request's L{gateway.cache.engine.Ticket} on an API
        with a C{cache} (once the cache is consulted), else L{None}.
    @ivar attributes: per-request state of filters, by a key each owns.
    @ivar upgrade: the L{gateway.pipeline.websocket.Handshake} when the
        request is a WebSocket handshake being relayed, else L{None}.
    """

    __slots__ = (
        "request",
        "snapshot",
        "api",
        "params",
        "clientIP",
        "startTime",
        "upstreamHeaders",
        "upstreamURI",
        "cluster",
        "routing",
        "backend",
        "retries",
        "sentAt",
        "upstreamLatency",
        "upstreamOK",
        "outcome",
        "error",
        "status",
        "requestId",
        "gone",
        "waiting",
        "pending",
        "bodyTransport",
        "jsonBody",
        "_body",
        "consumer",
        "shownURI",
        "cache",
        "attributes",
        "upgrade",
    )

    def __init__(
        self,
        request: Any,
        snapshot: Any,
        api: Any,
        params: Dict[str, str],
        clientIP: str,
        startTime: float,
        upstreamHeaders: Headers,
    ) -> None:
        self.request = request
        self.snapshot = snapshot
        self.api = api
        self.params = params
        self.clientIP = clientIP
        self.startTime = startTime
        self.upstreamHeaders = upstreamHeaders
        self.upstreamURI: Optional[bytes] = None
        self.cluster: Optional[Any] = None
        self.routing: Optional[str] = None
        self.backend: Optional[Any] = None
        self.retries = 0
        self.sentAt = 0.0
        self.upstreamLatency: Optional[float] = None
        self.upstreamOK = True
        self.outcome: Optional[str] = None
        self.error: Optional[str] = None
        self.status: Optional[int] = None
        self.requestId: Optional[bytes] = None
        self.gone = False
        self.waiting: Optional[Deferred[Any]] = None
        self.pending: Optional[Any] = None
        self.bodyTransport: Optional[Any] = None
        self.jsonBody: Optional[Tuple[int, bool, Any]] = None
        self._body: Optional[RequestBody] = None
        self.consumer: Optional[ConsumerEntry] = None
        self.shownURI: Optional[bytes] = None
        self.cache: Optional[Any] = None
        self.attributes: Dict[Hashable, Any] = {}
        self.upgrade: Optional[Any] = None

    @property
    def body(self) -> RequestBody:
        """
        The request's body (L{RequestBody}), the one accessor every part of
        the pipeline reads it through; made when first asked for.
        """
        body = self._body
        if body is None:
            body = self._body = RequestBody(self.request)
        return body


class ResponseInfo:
    """
    The response on its way back, as filters see it in C{after}.

    @ivar code: the HTTP status; a filter may change it.
    @ivar headers: the L{twisted.web.http_headers.Headers} that will be sent
        to the client; a filter may change them.
    """

    __slots__ = ("code", "headers")

    def __init__(self, code: int, headers: Any) -> None:
        self.code = code
        self.headers = headers
