"""
Listening endpoints the engine adds to Twisted's: a TCP port with
C{SO_REUSEPORT}, so that several worker processes each listen on the same
port and the kernel spreads connections over them.
"""

from __future__ import annotations

import socket

from twisted.internet import defer, tcp
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint, serverFromString
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorTCP,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from zope.interface import implementer

log = Logger()


class _ReusePortPort(tcp.Port):
    def createInternetSocket(self) -> socket.socket:
        s: socket.socket = super().createInternetSocket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        return s


@implementer(IStreamServerEndpoint)
class ReusePortEndpoint:
    """
    A TCP server endpoint whose socket has C{SO_REUSEPORT} set, so that
    several processes can each listen on the same port.

    @param reactor: the reactor to listen with (an L{IReactorTCP}, and the
        L{IReactorFDSet} a L{tcp.Port} is watched by).
    """

    def __init__(self, reactor: IReactorTCP, port: int, backlog: int, interface: str) -> None:
        self._reactor = reactor
        self._port = port
        self._backlog = backlog
        self._interface = interface

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        port = _ReusePortPort(self._port, factory, self._backlog, self._interface, self._reactor)
        try:
            port.startListening()
        except Exception:
            return defer.fail()
        return defer.succeed(port)


def reusePortEndpoint(reactor: IReactorTCP, description: str) -> ReusePortEndpoint:
    """
    @param description: a C{tcp:} or C{tcp6:} endpoint string.
    @raise ValueError: for any other kind of endpoint.
    """
    endpoint = serverFromString(reactor, description)
    if not isinstance(endpoint, (TCP4ServerEndpoint, TCP6ServerEndpoint)):
        raise ValueError(f"{description!r}: several workers need a tcp: or tcp6: endpoint")
    return ReusePortEndpoint(reactor, endpoint._port, endpoint._backlog, endpoint._interface)
