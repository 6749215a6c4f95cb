"""
The Redis protocol (L{gateway.redis.protocol}) and client
(L{gateway.redis.client}), against L{fakeredis.FakeRedisServer} on a
L{task.Clock}.
"""

from __future__ import annotations

from typing import Any, List, Tuple

from fakeredis import FakeRedisServer
from twisted.internet import task
from twisted.internet.defer import CancelledError
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gateway.model.sharedlimits import parseRedisURL
from gateway.redis import (
    IRedisClient,
    RedisClient,
    RedisProtocol,
    RedisTimeout,
    RedisUnavailable,
    ReplyError,
    Script,
)
from gateway.redis.protocol import ConnectionLost, ProtocolError, encodeCommand, parseReply


class TurnClock(task.Clock):
    """
    A clock whose L{turn} runs the calls due when it starts and leaves
    those they schedule for the next turn, as a reactor's turn does (a
    L{task.Clock.advance} runs them at once).
    """

    def turn(self, amount: float = 0.0) -> None:
        self.rightNow += amount
        due = [c for c in self.calls if c.getTime() <= self.rightNow]
        for call in sorted(due, key=lambda c: c.getTime()):
            if call in self.calls:
                self.calls.remove(call)
                call.called = 1
                call.func(*call.args, **call.kw)


class ProtocolTests(SynchronousTestCase):
    """
    RESP2 in and out, and the order of replies.
    """

    def connected(self) -> Tuple[RedisProtocol, StringTransport]:
        protocol = RedisProtocol()
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def test_encodeCommand(self) -> None:
        """
        A command is an array of bulk strings; text is UTF-8, numbers are
        written out.
        """
        self.assertEqual(
            encodeCommand(("SET", b"k", 12, 0.5, "é")),
            b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n$3\r\n0.5\r\n$2\r\n\xc3\xa9\r\n",
        )

    def test_parseEachKind(self) -> None:
        """
        Status, error, integer, bulk, null and nested arrays parse to their
        Python values; an error is a L{ReplyError} value with its kind.
        """
        self.assertEqual(parseReply(b"+OK\r\n"), (b"OK", 5))
        self.assertEqual(parseReply(b":-42\r\n"), (-42, 6))
        self.assertEqual(parseReply(b"$3\r\nabc\r\n"), (b"abc", 9))
        self.assertEqual(parseReply(b"$-1\r\n"), (None, 5))
        self.assertEqual(parseReply(b"*2\r\n:1\r\n*1\r\n$1\r\nx\r\n"), ([1, [b"x"]], 19))
        error, end = parseReply(b"-NOSCRIPT no such script\r\n")  # type: ignore[misc]
        self.assertIsInstance(error, ReplyError)
        self.assertEqual(error.kind, "NOSCRIPT")

    def test_parseIncomplete(self) -> None:
        """
        A reply cut anywhere gives L{None}: wait for more bytes.
        """
        whole = b"*2\r\n$5\r\nhello\r\n:7\r\n"
        for cut in range(len(whole)):
            self.assertIsNone(parseReply(whole[:cut]), cut)
        self.assertEqual(parseReply(whole), ([b"hello", 7], len(whole)))

    def test_parseGarbage(self) -> None:
        """
        Bytes that are not RESP raise L{ProtocolError}.
        """
        self.assertRaises(ProtocolError, parseReply, b"?what\r\n")
        self.assertRaises(ProtocolError, parseReply, b"$3\r\nabcd\r\n")
        self.assertRaises(ProtocolError, parseReply, b":x\r\n")

    def test_repliesInOrder(self) -> None:
        """
        Pipelined commands get their replies in order, even when the
        replies arrive byte by byte; an error reply fails its own call.
        """
        protocol, transport = self.connected()
        first = protocol.execute("GET", "a")
        second = protocol.execute("BAD")
        third = protocol.execute("PING")
        self.assertEqual(
            transport.value(),
            encodeCommand(("GET", "a")) + encodeCommand(("BAD",)) + encodeCommand(("PING",)),
        )
        for byte in b"$1\r\nx\r\n-ERR bad\r\n+PONG\r\n":
            protocol.dataReceived(bytes([byte]))
        self.assertEqual(self.successResultOf(first), b"x")
        self.failureResultOf(second, ReplyError)
        self.assertEqual(self.successResultOf(third), b"PONG")

    def test_cancelledReplyDropped(self) -> None:
        """
        A call whose caller stopped waiting has its reply read and dropped:
        the next call gets its own reply.
        """
        protocol, _ = self.connected()
        first = protocol.execute("PING")
        second = protocol.execute("GET", "k")
        first.cancel()
        self.failureResultOf(first, CancelledError)
        protocol.dataReceived(b"+PONG\r\n$1\r\nv\r\n")
        self.assertEqual(self.successResultOf(second), b"v")

    def test_connectionLostFailsPending(self) -> None:
        """
        The calls waiting when the connection goes fail with
        L{ConnectionLost}; a call made afterwards fails at once.
        """
        protocol, _ = self.connected()
        waiting = protocol.execute("PING")
        protocol.connectionLost(Failure(Exception("gone")))
        self.failureResultOf(waiting, ConnectionLost)
        self.failureResultOf(protocol.execute("PING"), ConnectionLost)

    def test_garbageDropsConnection(self) -> None:
        """
        Garbage from the server fails the calls and closes the connection;
        so does a reply nothing asked for.
        """
        protocol, transport = self.connected()
        waiting = protocol.execute("PING")
        protocol.dataReceived(b"!nonsense\r\n")
        self.failureResultOf(waiting, ProtocolError)
        self.assertTrue(transport.disconnecting)
        protocol, transport = self.connected()
        protocol.dataReceived(b"+OK\r\n")
        self.assertTrue(transport.disconnecting)


def makeClient(
    url: str = "redis://127.0.0.1:6379/0", clock: Any = None, **kw: Any
) -> Tuple[RedisClient, FakeRedisServer, task.Clock, List[Tuple[bool, str]]]:
    clock = clock if clock is not None else task.Clock()
    server = FakeRedisServer(clock)
    client = RedisClient(parseRedisURL(url), clock, connect=server.connect, **kw)
    changes: List[Tuple[bool, str]] = []
    client.addListener(lambda available, reason: changes.append((available, reason)))
    return client, server, clock, changes


class ClientTests(SynchronousTestCase):
    """
    L{RedisClient}: connecting, deadlines, availability and failover.
    """

    def test_interface(self) -> None:
        """
        The client provides L{IRedisClient}.
        """
        client, _, _, _ = makeClient()
        self.assertTrue(verifyObject(IRedisClient, client))

    def test_connectsAndSelects(self) -> None:
        """
        Started, the client authenticates, selects the database, checks
        that the server is a master, and is available.
        """
        client, server, clock, changes = makeClient("redis://u:s%40cret@127.0.0.1:6379/3")
        self.assertFalse(client.available)
        self.failureResultOf(client.execute("PING"), RedisUnavailable)
        client.startService()
        clock.advance(0)
        self.assertTrue(client.available)
        self.assertEqual(
            [c for _, c in server.commands],
            [[b"AUTH", b"u", b"s@cret"], [b"SELECT", b"3"], [b"ROLE"]],
        )
        self.assertEqual(changes, [(True, "connected to 127.0.0.1:6379")])
        self.assertEqual(self.successResultOf(client.execute("PING")), b"PONG")
        self.assertEqual(client.calls, 1)

    def test_timeoutMakesUnavailable(self) -> None:
        """
        A call Redis does not answer within the deadline fails with
        L{RedisTimeout} and makes the client unavailable at once: later
        calls fail without waiting.  A probe answered in time makes it
        available again within the probe interval.
        """
        client, server, clock, changes = makeClient(timeout=0.005, probeInterval=0.25)
        client.startService()
        clock.advance(0)
        server.hanging = True
        d = client.execute("PING")
        clock.advance(0.004)
        self.assertNoResult(d)
        clock.advance(0.001)
        self.failureResultOf(d, RedisTimeout)
        self.assertFalse(client.available)
        self.assertEqual(client.timeouts, 1)
        self.failureResultOf(client.execute("PING"), RedisUnavailable)
        # The probe: still hanging, so still unavailable.
        clock.advance(0.25)
        clock.advance(0.005)
        self.assertFalse(client.available)
        # Redis answers again (the held commands first, in order).
        server.release()
        clock.advance(0.25)
        self.assertTrue(client.available)
        self.assertEqual([a for a, _ in changes], [True, False, True])
        self.assertEqual(changes[1][1], "Redis did not answer in time")

    def test_replyInTheSameTurnCounts(self) -> None:
        """
        A reply that arrived while the process was busy past the deadline
        (read in the turn after the timer fired) is not a timeout.
        """
        client, server, clock, _ = makeClient(clock=TurnClock(), timeout=0.005)
        client.startService()
        clock.turn(0)
        clock.turn(0)
        server.hanging = True
        d = client.execute("PING")
        clock.turn(0.010)  # the deadline's timer fires
        server.release()  # the reply is read in this turn
        clock.turn(0)
        self.assertEqual(self.successResultOf(d), b"PONG")
        self.assertTrue(client.available)

    def test_connectionLostReconnects(self) -> None:
        """
        When the connection goes the client is unavailable at once, and
        connects again (every probe interval while refused).
        """
        client, server, clock, changes = makeClient(probeInterval=0.25)
        client.startService()
        clock.advance(0)
        server.refusing.add(("127.0.0.1", 6379))
        server.dropAll()
        self.assertFalse(client.available)
        self.assertEqual(changes[-1], (False, "connection to Redis lost"))
        clock.advance(0.25)
        self.assertFalse(client.available)
        server.refusing.clear()
        clock.advance(0.25)
        self.assertTrue(client.available)

    def test_failoverToNextEndpoint(self) -> None:
        """
        Of several servers, the first that accepts and says it is a master
        is used: a refusing one and a replica are passed over.
        """
        client, server, clock, _ = makeClient("redis://10.0.0.1:6379,10.0.0.2:6379,10.0.0.3:6379")
        server.refusing.add(("10.0.0.1", 6379))
        server.roles[("10.0.0.2", 6379)] = b"slave"
        client.startService()
        clock.advance(0)
        self.assertTrue(client.available)
        self.assertEqual(client.address, ("10.0.0.3", 6379))

    def test_readonlyLooksAgain(self) -> None:
        """
        A master turned replica (C{READONLY} replies after a failover) makes
        the client drop it and find the new master.
        """
        client, server, clock, _ = makeClient("redis://10.0.0.1:6379,10.0.0.2:6379")
        client.startService()
        clock.advance(0)
        self.assertEqual(client.address, ("10.0.0.1", 6379))
        server.roles[("10.0.0.1", 6379)] = b"slave"
        server.roles[("10.0.0.2", 6379)] = b"master"
        server.errors[b"EVALSHA"] = "READONLY You can't write against a read only replica."
        d = client.evalScript(Script("return 1"), ["k"], [])
        self.failureResultOf(d, ReplyError)
        self.assertFalse(client.available)
        clock.advance(0)
        self.assertTrue(client.available)
        self.assertEqual(client.address, ("10.0.0.2", 6379))

    def test_sentinel(self) -> None:
        """
        With Sentinels, the client asks them where the master is (the first
        that answers) and connects there.
        """
        client, server, clock, _ = makeClient(
            "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster/0"
        )
        server.refusing.add(("10.0.0.1", 26379))
        server.sentinels[("10.0.0.2", 26379)] = ("10.0.0.9", 6380)
        client.startService()
        clock.advance(0)
        self.assertTrue(client.available)
        self.assertEqual(client.address, ("10.0.0.9", 6380))
        self.assertIn(
            (("10.0.0.2", 26379), [b"SENTINEL", b"get-master-addr-by-name", b"mymaster"]),
            server.commands,
        )

    def test_evalScriptLoadsOnce(self) -> None:
        """
        A script is run by its SHA; a server that does not know it gets its
        source once (C{EVAL}), and its SHA afterwards.
        """
        from gateway.protection.redisbuckets import LEASE_SCRIPT

        client, server, clock, _ = makeClient()
        client.startService()
        clock.advance(0)
        first = client.evalScript(LEASE_SCRIPT, ["k"], [10.0, 10.0, 1, 0, 0])
        second = client.evalScript(LEASE_SCRIPT, ["k"], [10.0, 10.0, 1, 0, 0])
        self.assertEqual(self.successResultOf(first)[0], 1)
        self.assertEqual(self.successResultOf(second)[0], 1)
        self.assertEqual(server.names(), [b"ROLE", b"EVALSHA", b"EVAL", b"EVALSHA"])

    def test_registeredScriptsLoaded(self) -> None:
        """
        A registered script is loaded on connecting, before the client is
        available, so its first run is one C{EVALSHA}.
        """
        from gateway.protection.redisbuckets import LEASE_SCRIPT

        client, server, clock, _ = makeClient()
        client.registerScript(LEASE_SCRIPT)
        client.startService()
        clock.advance(0)
        self.assertTrue(client.available)
        self.successResultOf(client.evalScript(LEASE_SCRIPT, ["k"], [10.0, 10.0, 1, 0, 0]))
        self.assertEqual(server.names(), [b"ROLE", b"SCRIPT", b"EVALSHA"])

    def test_stopCloses(self) -> None:
        """
        Stopped, the client closes its connection, is unavailable and does
        not connect again.
        """
        client, server, clock, _ = makeClient()
        client.startService()
        clock.advance(0)
        client.stopService()
        self.assertFalse(client.available)
        self.assertEqual(server.connections, [])
        clock.advance(10)
        self.assertEqual(server.connections, [])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_stopWhileConnecting(self) -> None:
        """
        Stopping while a connection is being made cancels it.
        """
        client, server, clock, _ = makeClient()
        server.holdConnects = True
        client.startService()
        clock.advance(0)
        self.assertEqual(len(server.pendingConnects), 1)
        client.stopService()
        d, _ = server.pendingConnects[0]
        self.assertTrue(d.called)
        self.assertEqual(clock.getDelayedCalls(), [])
