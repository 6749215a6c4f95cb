"""
The interfaces that hold the gateway together.

Every pluggable part of the gateway (filters, load balancers, the store, the
upstream HTTP client) is described here, so that built-in implementations and
third-party ones are the same kind of object and can be checked with
L{zope.interface.verify.verifyObject}.
"""

from __future__ import annotations

from twisted.plugin import IPlugin
from zope.interface import Attribute, Interface


class IFilter(Interface):
    """
    One step of the request pipeline.

    The proxy runs the C{before} hooks of the filters in order before it
    dispatches a request.  Every answer then passes the C{after} hooks of
    the filters whose C{before} ran, in reverse order, exactly once: a
    proxied response, an early answer of a later filter, or the gateway's
    own JSON error.  When the upstream failed (refused, timed out, broken),
    the C{error} hooks run first, then the error answer passes C{after}.
    C{before} may return a L{twisted.internet.defer.Deferred}; a filter that
    answers synchronously costs no Deferred at all on the hot path.

    Global filters (C{proxy.filters}) also see the gateway's own answers to
    requests no API matches (404, and 503 before the first configuration):
    their exchange's C{api} is L{None}.
    """

    name = Attribute("The filter's unique name, as used in the configuration.")

    def before(context):
        """
        Inspect or change a request before it is dispatched.

        @param context: the request's L{gateway.pipeline.exchange.Exchange}.
        @return: L{None} to let the request go on, or a
            L{gateway.pipeline.exchange.EarlyResponse} to answer the client at once
            without touching any upstream (the filters already run see it in
            their C{after} hook).  May be a Deferred firing with either.
        """

    def after(context, response):
        """
        See the response on its way back to the client.

        @param context: the request's L{gateway.pipeline.exchange.Exchange}.
        @param response: the L{gateway.pipeline.exchange.ResponseInfo} about to be sent;
            a filter may change its C{code} and C{headers}.  Its body is not
            buffered on plain proxying.
        @return: L{None}.  (The response is on its way: C{after} must not
            wait for anything.)
        """

    def error(context, failure):
        """
        Be told that the request failed upstream (refused, timed out, reset).

        @param context: the request's L{gateway.pipeline.exchange.Exchange}.
        @param failure: the L{twisted.python.failure.Failure}.
        @return: L{None}.
        """


class IFilterFactory(IPlugin):
    """
    A Twisted plugin that makes filters.

    A custom filter ships as a module-level object providing this interface in
    some package's C{twisted/plugins/} folder.  The gateway loads factories by
    C{name} with L{twisted.plugin.getPlugins}.
    """

    name = Attribute("Unique name of the filter, as named in configuration.")
    description = Attribute("One line saying what the filter does.")

    def makeFilter(config, reactor):
        """
        Build a filter.

        @param config: the filter's configuration: a L{dict} from the config
            file or an API's C{filters} entry (empty when none is given).
        @param reactor: an L{IReactorTime} provider; filters read time from it.
        @return: a provider of L{IFilter}.
        @raise ValueError: when C{config} is invalid; the message says why.
        """


class ILoadBalancer(Interface):
    """
    Picks one backend of a cluster for each request.

    A balancer is built for one set of backends (one snapshot of a cluster) by
    a callable C{factory(backends)} registered in L{gateway.balancing.balancers}; it keeps
    whatever state its algorithm needs between calls.
    """

    name = Attribute("The algorithm's name, as in a cluster's C{loadBalance}.")
    backends = Attribute("The sequence of L{gateway.balancing.backend.Backend}s it picks from.")

    def choose(key=None):
        """
        Pick a backend that is available (healthy and admitting traffic).

        @param key: an affinity key (the client address for C{ip-hash}), or
            L{None}.
        @type key: L{str} or L{None}
        @return: a L{gateway.balancing.backend.Backend}, or L{None} when no backend is
            available.
        """


class IUpstreamRequest(Interface):
    """
    A request an L{IUpstreamClient} is sending.
    """

    finished = Attribute(
        "Whether the request is over: its C{onResponse} or C{onFailure} was called."
    )

    def cancel():
        """
        Abandon the request: C{onFailure} then gets a
        L{twisted.internet.defer.CancelledError}, unless it is over already.
        """


class IUpstreamClient(Interface):
    """
    Sends one request to one backend and streams the answer back.

    This is the gateway's seam around its HTTP client, so that the client
    can be replaced without touching the pipeline.  The pipeline's hot path
    calls back without a L{twisted.internet.defer.Deferred} (one per request
    is a cost of its own); L{gateway.http.client.request} gives a Deferred
    on top of any client for code that prefers one.
    """

    def send(backend, method, uri, headers, bodyProducer, timeout, onResponse, onFailure, *args):
        """
        Send a request to a backend over a pooled keep-alive connection.

        Exactly one of C{onResponse(response, *args)} or
        C{onFailure(failure, *args)} is called, once.  It may be called
        before C{send} returns when the request fails at once (an invalid
        target, no connection to be had): the request returned is then
        C{finished} already.

        @param backend: the L{gateway.balancing.backend.Backend} to talk to
            (its C{host} and C{port}).
        @param method: the method, e.g. C{b"GET"}.
        @param uri: the request target (path and query), e.g. C{b"/a?b=c"}.
        @param headers: the L{twisted.web.http_headers.Headers} to send,
            hop-by-hop ones already removed.
        @param bodyProducer: an L{twisted.web.iweb.IBodyProducer} or L{None}.
        @param timeout: seconds to wait for the response head, or L{None}.
        @param onResponse: called with an L{twisted.web.iweb.IResponse}
            whose C{headers} still hold C{Content-Length} when the upstream
            sent one.
        @param onFailure: called with a L{twisted.python.failure.Failure}:
            L{gateway.http.errors.UpstreamTimeout} on timeout,
            L{gateway.http.errors.UpstreamConnectError} when no connection
            could be made, L{gateway.http.errors.UpstreamBroken} for a broken
            exchange, L{ValueError} for an invalid C{uri}.
        @return: the L{IUpstreamRequest} in flight.
        """

    def close():
        """
        Close every pooled connection.

        @return: a Deferred that fires when they are closed.
        """


# -- WebSocket pass-through: upgrading an upstream connection --------------------------


class IUpstreamUpgrader(Interface):
    """
    Sends a request that asks a backend to switch protocols (a WebSocket
    handshake) and hands the connection over when it does: the connection
    of a C{101} answer is never pooled, it becomes its caller's.
    """

    def upgrade(backend, method, uri, headers, timeout, onResponse, onFailure, *args):
        """
        Send a request without a body, as L{IUpstreamClient.send} does (the
        same callbacks, failures and return value), whose C{headers} ask for
        an upgrade (C{Upgrade} and C{Connection: upgrade} are sent as given).

        A C{101} answer is an L{ISwitchedResponse}: its connection then
        speaks another protocol, for the caller to take with
        L{ISwitchedResponse.switchProtocols}.  Any other answer is an
        ordinary L{twisted.web.iweb.IResponse}, whose connection goes back
        to the pool as with C{send}.
        """


class ISwitchedResponse(Interface):
    """
    A C{101 Switching Protocols} answer: its connection belongs to whoever
    takes it.
    """

    code = Attribute("The status: 101.")
    phrase = Attribute("The reason phrase (L{bytes}).")
    headers = Attribute("The answer's L{twisted.web.http_headers.Headers}, as received.")

    def switchProtocols(protocol):
        """
        Hand the connection over to C{protocol}: C{protocol.makeConnection}
        gets the connection's transport, then C{dataReceived} what the
        backend sent after its 101 head and everything it sends next, and
        C{connectionLost} the end of the connection (a half-close from the
        backend ends it too: Twisted's client endpoints settle that when
        they connect).
        """

    def deliverBody(protocol):
        """
        Drop the answer: its connection, which no one takes, is closed, and
        C{protocol} sees an empty body (as an L{twisted.web.iweb.IResponse}
        body ends).
        """


class IStore(Interface):
    """
    Where the gateway's resources (certificates, servers, clusters, apis,
    routings) live.

    Resources are JSON objects (L{dict}s in their REST form) keyed by kind and
    name.  The store keeps a revision number that grows with every commit.
    Writes are optimistic: a caller reads a L{gateway.store.StoreState}, works
    out its changes, and commits them against the revision it read; the commit
    fails with L{gateway.store.ConflictError} when anything changed meanwhile.
    """

    def load():
        """
        Read everything.

        @return: a Deferred firing with a L{gateway.store.StoreState}.
        """

    def commit(changes, baseRevision):
        """
        Apply changes atomically, all or none.

        @param changes: a sequence of L{gateway.store.Change}s.
        @param baseRevision: the revision the changes were computed from.
        @return: a Deferred firing with the new revision once the changes are
            durable; it fails with L{gateway.store.ConflictError} when the
            store is no longer at C{baseRevision}.
        """

    def watch(listener):
        """
        Be told of every commit, from this store or from another process.

        @param listener: a callable taking a L{gateway.store.StoreState}, the
            whole new state after the change.  It is called in the reactor
            thread, once per revision or batch of revisions.
        @return: a no-argument callable that stops the watch.
        """

    def close():
        """
        Release files, connections and watches.

        @return: a Deferred.
        """


class ISharedStore(IStore):
    """
    An L{IStore} that several gateways share (etcd), and where each gateway
    that serves says so: a registry of the live proxies, each with a record
    that every admin can list.

    Whether a store offers this is decided with C{ISharedStore.providedBy};
    a store of one process (the file store) does not.
    """

    def proxyRegistry(addr, version, startedAt, describe):
        """
        Make the service that keeps this proxy's record in the store while
        it runs, and takes it away when it stops (or, when the process
        dies, soon after).

        @param addr: this proxy's address, C{host:port}.
        @type addr: L{str}
        @param version: the gateway's version.
        @type version: L{str}
        @param startedAt: when this process started (ISO 8601).
        @type startedAt: L{str}
        @param describe: a no-argument callable returning the live part of
            the record, a JSON object: at least C{ready} (whether the proxy
            serves its first configuration) and C{revision} (the store
            revision every proxy process of this gateway serves); it is
            called each time the record is written.
        @return: an L{twisted.application.service.IService}; its
            C{refresh()} writes the record again at once (call it when what
            C{describe} returns changed).
        """

    def listProxies():
        """
        Read the records of the live proxies.

        @return: a Deferred firing with a list of JSON objects, sorted by
            C{addr}: each has C{addr}, C{version}, C{startedAt}, C{ready},
            C{revision} and whatever else its C{describe} gave.
        """


class IPropagation(Interface):
    """
    Tells when a store revision serves: on every proxy process of this
    gateway (its workers, or its own proxy), or on every proxy that shares
    its store.  The admin waits on it before it answers a write.
    """

    def serving():
        """
        @return: the store revision every proxy process of this gateway
            serves (L{int}), or L{None} while none serves.
        """

    def whenServed(revision, everywhere):
        """
        Wait until C{revision} (or a later one) serves.

        @param revision: a store revision.
        @type revision: L{int}
        @param everywhere: L{False} for the proxy processes of this
            gateway; L{True} for every live proxy registered in a shared
            store as well (the same as L{False} with a store of one
            gateway).
        @return: a Deferred firing with L{None} once it serves; it does not
            time out by itself: cancel it to stop waiting.
        """
