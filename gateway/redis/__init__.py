"""
The Redis a fleet of gateways shares: L{gateway.redis.client.RedisClient}, a
service that keeps a connection to the master and says whether it is usable,
over the RESP protocol of L{gateway.redis.protocol}.

The fleet's rate limits (L{gateway.protection.redisbuckets}) use it; any
other part that shares state through the same Redis (C{limits.store}) takes
the same client: one connection per proxy process.
"""

from __future__ import annotations

from gateway.redis.client import IRedisClient, RedisClient, RedisTimeout, RedisUnavailable, Script
from gateway.redis.protocol import ConnectionLost, RedisError, RedisProtocol, ReplyError

__all__ = [
    "ConnectionLost",
    "IRedisClient",
    "RedisClient",
    "RedisError",
    "RedisProtocol",
    "RedisTimeout",
    "RedisUnavailable",
    "ReplyError",
    "Script",
]
