"""
Request bodies as the engine sends them (L{BytesBodyProducer}), and how a
response body ends cleanly (L{CLEAN_ENDS}).
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer
from twisted.web.client import (
    PotentialDataLoss,
    ResponseDone,
)
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

#: What a response body's C{connectionLost} reason is when the body is
#: complete: L{ResponseDone}, or L{PotentialDataLoss} at the end of a body
#: delimited by the connection's close.
CLEAN_ENDS = (ResponseDone, PotentialDataLoss)


@implementer(IBodyProducer)
class BytesBodyProducer:
    """
    Sends a small body that is already in memory in one write.
    """

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        if self._body:
            consumer.write(self._body)
        return defer.succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass
