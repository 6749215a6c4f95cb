"""
An HTTP/2 client in memory for unit tests: the C{h2} library's client
state machine talking to a server connection over a L{StringTransport},
on a L{Clock}, and the answers it got.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    InformationalResponseReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
)
from h2.settings import Settings
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

PEER = IPv4Address("TCP", "192.0.2.7", 40000)
HOST = IPv4Address("TCP", "127.0.0.1", 8443)


class SecureTransport(StringTransport):
    """
    A L{StringTransport} that says it is TLS.
    """

    def setTcpNoDelay(self, enabled: bool) -> None:
        pass


def _secure() -> None:
    from twisted.internet.interfaces import ISSLTransport
    from zope.interface import classImplements

    classImplements(SecureTransport, ISSLTransport)


_secure()


class Answer:
    """
    What a stream got back.
    """

    def __init__(self) -> None:
        self.status: Optional[int] = None
        self.headers: List[Tuple[bytes, bytes]] = []
        self.interim: List[int] = []
        self.body = b""
        self.ended = False
        self.reset: Optional[int] = None

    def header(self, name: bytes) -> Optional[bytes]:
        values = [v for n, v in self.headers if n == name]
        return b", ".join(values) if values else None


class H2Peer:
    """
    A client connected to a site's HTTP/2 connection.

    @ivar server: the server's connection (L{H2ServerConnection}).
    @ivar client: the client's C{h2} state machine.
    @ivar answers: C{{stream id: L{Answer}}}.
    @ivar terminated: the C{ConnectionTerminated} event (the server's
        GOAWAY), once received.
    """

    def __init__(
        self,
        site: Any,
        clock: Clock,
        settings: Optional[Dict[int, int]] = None,
        secure: bool = False,
        autoPump: bool = True,
    ) -> None:
        self.clock = clock
        self.server = site.buildHTTP2(PEER)
        self.transport = (SecureTransport if secure else StringTransport)(
            peerAddress=PEER, hostAddress=HOST
        )
        self.server.makeConnection(self.transport)
        # (Sending what the tests ask, malformed or not.)
        client = self.client = H2Connection(
            H2Configuration(
                client_side=True,
                header_encoding=None,
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
            )
        )
        if settings:
            client.local_settings = Settings(client=True, initial_values=settings)
        client.initiate_connection()
        self.answers: Dict[int, Answer] = {}
        self.events: List[Any] = []
        self.terminated: Optional[ConnectionTerminated] = None
        if autoPump:
            self.pump()

    def sendRaw(self, data: bytes) -> None:
        """
        Give the server C{data} as the client's next bytes.
        """
        self.server.dataReceived(data)

    def pump(self) -> None:
        """
        Exchange what both sides have to say until neither has more (the
        server writes at the end of the reactor's turn: the clock runs
        for that).
        """
        for _ in range(100):
            data = self.client.data_to_send()
            if data and not self.transport.disconnecting:
                self.server.dataReceived(data)
            self.clock.advance(0)
            written = self.transport.value()
            self.transport.clear()
            if written and self.terminated is None:
                self._received(written)
            if not data and not written:
                return
        raise AssertionError("the peers keep talking")

    def _received(self, data: bytes) -> None:
        for event in self.client.receive_data(data):
            self.events.append(event)
            streamId = getattr(event, "stream_id", None)
            answer = self.answers.setdefault(streamId, Answer()) if streamId else None
            if isinstance(event, ResponseReceived):
                assert answer is not None
                answer.headers = list(event.headers)
                answer.status = int(dict(event.headers)[b":status"])
            elif isinstance(event, InformationalResponseReceived):
                assert answer is not None
                answer.interim.append(int(dict(event.headers)[b":status"]))
            elif isinstance(event, DataReceived):
                assert answer is not None
                answer.body += event.data
                self.client.acknowledge_received_data(event.flow_controlled_length, streamId)
            elif isinstance(event, StreamEnded):
                assert answer is not None
                answer.ended = True
            elif isinstance(event, StreamReset):
                assert answer is not None
                answer.reset = int(event.error_code)
            elif isinstance(event, ConnectionTerminated):
                self.terminated = event

    def request(
        self,
        method: bytes = b"GET",
        path: bytes = b"/",
        headers: Sequence[Tuple[bytes, bytes]] = (),
        body: Optional[bytes] = None,
        end: bool = True,
        authority: bytes = b"gw",
        pump: bool = True,
        pseudo: Optional[Sequence[Tuple[bytes, bytes]]] = None,
    ) -> int:
        """
        Send a request.

        @param pseudo: its pseudo-header fields, when not the usual ones
            made of C{method}, C{path} and C{authority}.

        @param body: its body, if any (sent in one go, as the windows allow).
        @param end: whether the client ends the stream (after the body).
        @return: its stream id.
        """
        client = self.client
        streamId: int = client.get_next_available_stream_id()
        head = [
            (b":method", method),
            (b":scheme", b"https"),
            (b":authority", authority),
            (b":path", path),
        ]
        head = list(pseudo) + list(headers) if pseudo is not None else head + list(headers)
        client.send_headers(streamId, head, end_stream=end and body is None)
        if body is not None:
            self.sendBody(streamId, body, end)
        if pump:
            self.pump()
        return streamId

    def sendBody(self, streamId: int, body: bytes, end: bool = False) -> None:
        """
        Send body bytes, in frames of the largest size allowed (they must
        fit the windows).
        """
        size = self.client.max_outbound_frame_size
        for start in range(0, len(body), size):
            last = start + size >= len(body)
            self.client.send_data(streamId, body[start : start + size], end_stream=end and last)
        if not body and end:
            self.client.end_stream(streamId)

    def answer(self, streamId: int) -> Answer:
        return self.answers.setdefault(streamId, Answer())
