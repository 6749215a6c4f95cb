"""
What the proxy knows about one request while it is on its way.
"""

from __future__ import annotations

from typing import Any, Dict, Optional


class RequestContext:
    """
    The state of one proxied request, handed to every filter hook.

    @ivar request: the L{twisted.web.server.Request} from the client.
    @ivar snapshot: the L{gateway.snapshot.Snapshot} this request is served
        from, start to end, even when a newer one is swapped in meanwhile.
    @ivar api: the L{gateway.snapshot.CompiledAPI} that matched.
    @ivar params: the path parameters of the match, C{{name: str}}.
    @ivar clientIP: the client's address as the gateway trusts it (the
        direct peer, or the address a trusted proxy forwarded).
    @ivar startTime: when the request reached the gateway (reactor seconds).
    @ivar cluster: the L{gateway.snapshot.ClusterRuntime} to dispatch to;
        L{None} until dispatch, unless a filter (routing) chose one earlier.
    @ivar backend: the L{gateway.backend.Backend} chosen, once chosen.
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
