"""
The C{limits:} section of the config file: rate limits held by a fleet of
gateways together, on Redis (L{LimitsConfig}), and the Redis URLs it takes
(L{parseRedisURL}, L{RedisTarget}), which other parts sharing the same
Redis (a response cache) read the same way::

    limits:
      store: redis://127.0.0.1:6379/0
      onFailure: local          # local | open | closed
      gateways: 3               # optional: else counted in the etcd registry
      timeout: 0.005            # seconds Redis has to answer

A Redis URL names one server or several, tried in order (the first that
says it is a master serves; a replica promoted after a failover is found
the same way), or the Sentinels that know the master::

    redis://[[USER]:PASSWORD@]HOST:PORT[/DB]
    redis://HOST1:6379,HOST2:6379/0
    redis+sentinel://[[USER]:PASSWORD@]HOST1:26379,HOST2:26379/MASTERNAME[/DB]
"""

from __future__ import annotations

from typing import Optional, Tuple
from urllib.parse import unquote

import attrs

from gateway.model.schema import Enum, Int, Nullable, Num, Str, field

__all__ = ["LimitsConfig", "RedisTarget", "parseRedisURL", "redactedURL"]


_PLAIN = "redis://"


_SENTINEL = "redis+sentinel://"


@attrs.frozen
class RedisTarget:
    """
    Where a Redis is: a parsed Redis URL.

    @ivar endpoints: C{(host, port)} of each server (or Sentinel), in the
        order they are tried.
    @ivar db: the database number (C{SELECT}).
    @ivar username: for C{AUTH} (Redis 6 ACLs), or L{None}.
    @ivar password: for C{AUTH}, or L{None}.
    @ivar sentinel: the name of the master the Sentinels at C{endpoints}
        know, or L{None} when C{endpoints} are Redis servers.
    """

    endpoints: Tuple[Tuple[str, int], ...]
    db: int = 0
    username: Optional[str] = None
    password: Optional[str] = None
    sentinel: Optional[str] = None


def _hostPort(text: str, url: str, defaultPort: int) -> Tuple[str, int]:
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not host:
            raise ValueError(f"{url!r}: {text!r} is not HOST:PORT")
        port = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise ValueError(f"{url!r}: {text!r} is not HOST:PORT")
    else:
        host, _, port = text.partition(":")
    if not host or any(c in host for c in "/@?# "):
        raise ValueError(f"{url!r}: {text!r} is not HOST:PORT")
    if not port:
        return host, defaultPort
    if not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"{url!r}: {port!r} is not a port number")
    return host, int(port)


def _db(text: str, url: str) -> int:
    if not text:
        return 0
    if not (text.isdigit() and int(text) < 1 << 16):
        raise ValueError(f"{url!r}: the database {text!r} is not a number")
    return int(text)


def parseRedisURL(url: str) -> RedisTarget:
    """
    Read a Redis URL (see the module's documentation).

    @raise ValueError: saying what is wrong with it.
    """
    if url.startswith(_PLAIN):
        rest, sentinel = url[len(_PLAIN) :], False
        defaultPort = 6379
    elif url.startswith(_SENTINEL):
        rest, sentinel = url[len(_SENTINEL) :], True
        defaultPort = 26379
    else:
        raise ValueError(
            f"{url!r} is not a Redis URL: use redis://HOST:PORT/DB, several"
            " redis://HOST1:PORT,HOST2:PORT/DB, or redis+sentinel://HOST:PORT,.../MASTER/DB"
        )
    if "?" in rest or "#" in rest:
        raise ValueError(f"{url!r}: a Redis URL takes no query or fragment")
    authority, _, path = rest.partition("/")
    username: Optional[str] = None
    password: Optional[str] = None
    if "@" in authority:
        credentials, _, authority = authority.rpartition("@")
        user, colon, secret = credentials.partition(":")
        if colon:
            username, password = unquote(user) or None, unquote(secret)
        else:
            password = unquote(user)
    if not authority:
        raise ValueError(f"{url!r} names no host, e.g. redis://127.0.0.1:6379/0")
    endpoints = tuple(_hostPort(part, url, defaultPort) for part in authority.split(","))
    master: Optional[str] = None
    if sentinel:
        master, _, path = path.partition("/")
        if not master:
            raise ValueError(
                f"{url!r} names no master, e.g. redis+sentinel://HOST:26379/mymaster/0"
            )
    if "/" in path:
        raise ValueError(f"{url!r}: the path is /DB (a number)")
    return RedisTarget(
        endpoints=endpoints,
        db=_db(path, url),
        username=username,
        password=password,
        sentinel=master,
    )


def redactedURL(url: str) -> str:
    """
    @return: C{url} without its password, for logs and the admin.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.partition("/")[0]:
        return url
    credentials, _, after = rest.partition("@")
    user = credentials.partition(":")[0] if ":" in credentials else ""
    return f"{scheme}://{user}:***@{after}"


def _checkRedisURL(url: str) -> None:
    parseRedisURL(url)


#: What the gateways do when Redis does not answer in time.
ON_FAILURE = ("local", "open", "closed")


@attrs.frozen
class LimitsConfig:
    """
    The C{limits:} section: where the fleet's rate-limit buckets live, and
    what a gateway does while that store is away.

    @ivar store: the Redis URL (see L{parseRedisURL}).
    @ivar onFailure: C{local}: each gateway holds the limits divided by
        the number of live gateways, in its own buckets; C{open}: admit;
        C{closed}: refuse with 503.
    @ivar gateways: the number of gateways to divide by in C{local} mode;
        L{None}: the live proxies of the etcd registry (1 with another
        store).
    @ivar timeout: seconds Redis has to answer a call before the gateway
        decides without it.
    @ivar leaseTime: the local demand, in seconds, a lease of tokens holds
        at most (see L{gateway.protection.leases}).
    """

    store: str = field(
        Str(check=_checkRedisURL, minLength=1),
        doc="redis://HOST:PORT/DB, several hosts comma-separated, or redis+sentinel://...",
    )
    onFailure: str = field(
        Enum(ON_FAILURE),
        "local",
        doc="while Redis is away: local (limit / live gateways), open (admit), closed (503)",
    )
    gateways: Optional[int] = field(
        Nullable(Int(1, 100_000)),
        None,
        doc="gateways to divide the limits by in local mode; unset = the live proxies in etcd",
    )
    timeout: float = field(
        Num(0.001, 10.0),
        0.005,
        doc="seconds Redis has to answer before the gateway decides without it",
    )
    leaseTime: float = field(
        Num(0.001, 1.0),
        0.02,
        doc="seconds of a process's own demand one lease of tokens covers at most",
    )
