"""
C{twistd -r gateway}: the gateway's reactor (L{gateway.http.reactor}), Twisted's
epoll reactor with less work per event.  C{twistd gateway} installs it by
itself when no other reactor was chosen.
"""

from twisted.application.reactors import Reactor

gateway = Reactor(
    "gateway",
    "gateway.http.reactor",
    "epoll, dispatching events without the legacy log context (Linux).",
)
