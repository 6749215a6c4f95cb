"""
The exchange of one request: what the pipeline knows about a request on
its way (L{RequestContext}), the response filters see on its way back
(L{ResponseInfo}), and the answers the gateway makes itself
(L{EarlyResponse}).  Filters receive these through L{gateway.interfaces.IFilter}.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import attrs


@attrs.frozen
class EarlyResponse:
    """
    An answer a filter (or the proxy) gives without asking any backend.

    @ivar code: the HTTP status.
    @ivar body: the JSON object of the answer.
    @ivar headers: extra response headers, C{{name: [values]}}.
    @ivar encoded: C{body} as JSON, when the maker has it already (an
        aggregation splices its nodes' answers): L{encode} returns it.
    """

    code: int
    body: Mapping[str, object]
    headers: Mapping[Union[str, bytes], Sequence[Union[str, bytes]]] = attrs.Factory(dict)
    #: C{body} already encoded (what L{encode} returns), or L{None}.
    encoded: Optional[bytes] = None

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


class RequestContext:
    """
    The state of one proxied request, handed to every filter hook.

    @ivar request: the L{twisted.web.server.Request} from the client.
    @ivar snapshot: the L{gateway.routing.snapshot.Snapshot} this request is served
        from, start to end, even when a newer one is swapped in meanwhile.
    @ivar api: the L{gateway.routing.snapshot.CompiledAPI} that matched.
    @ivar params: the path parameters of the match, C{{name: str}}.
    @ivar clientIP: the client's address as the gateway trusts it (the
        direct peer, or the address a trusted proxy forwarded).
    @ivar startTime: when the request reached the gateway (reactor seconds).
    @ivar cluster: the L{gateway.routing.snapshot.ClusterRuntime} to dispatch to;
        L{None} until dispatch, unless a filter (routing) chose one earlier.
    @ivar backend: the L{gateway.balancing.backend.Backend} chosen, once chosen.
    @ivar upstreamHeaders: the L{twisted.web.http_headers.Headers} that will
        be sent upstream; filters may change them in C{before}.
    @ivar upstreamURI: the request target sent upstream (L{bytes}), or
        L{None} until dispatch computes it; a filter may set it.
    @ivar attributes: free space for filters to keep per-request state.
    @ivar status: the status sent to the client, once known.
    """

    __slots__ = (
        "request",
        "snapshot",
        "api",
        "params",
        "clientIP",
        "startTime",
        "cluster",
        "backend",
        "upstreamHeaders",
        "upstreamURI",
        "attributes",
        "status",
        "upstreamLatency",
    )

    def __init__(
        self,
        request: Any,
        snapshot: Any,
        api: Any,
        params: Dict[str, str],
        clientIP: str,
        startTime: float,
        upstreamHeaders: Any,
    ) -> None:
        self.request = request
        self.snapshot = snapshot
        self.api = api
        self.params = params
        self.clientIP = clientIP
        self.startTime = startTime
        self.cluster: Optional[Any] = None
        self.backend: Optional[Any] = None
        self.upstreamHeaders = upstreamHeaders
        self.upstreamURI: Optional[bytes] = None
        self.attributes: Dict[str, Any] = {}
        self.status: Optional[int] = None
        self.upstreamLatency: Optional[float] = None


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
