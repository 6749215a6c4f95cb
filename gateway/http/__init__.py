"""
The HTTP engine: the server channel and request, the upstream client and
its pool, the write path, the reactor.  The only package that touches
Twisted's private names (see L{gateway.http.headers}); the rest of the
gateway uses it through documented functions and interfaces.
"""
