"""
The consumers of one store revision, compiled for the proxy: every lookup
an authentication needs is one dict access.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from gateway.http.headers import headerKey
from gateway.model.consumers import Consumer, Credential, checkPublicKey

#: The headers the backend receives about the consumer.
CONSUMER_NAME = b"X-Consumer-Name"
CONSUMER_ID = b"X-Consumer-Id"
CONSUMER_GROUPS = b"X-Consumer-Groups"
CONSUMER_HEADERS = (CONSUMER_NAME, CONSUMER_ID, CONSUMER_GROUPS)


class ConsumerEntry:
    """
    A consumer as the proxy uses it: what the exchange's C{consumer} slot
    holds once a request is authenticated.

    @ivar name: the consumer's name.
    @ivar customId: its C{customId}, or L{None}.
    @ivar groups: its groups, a L{frozenset}.
    @ivar config: the L{Consumer}.
    @ivar headers: C{(name, value)} of the X-Consumer-* headers the backend
        receives, encoded once.
    """

    __slots__ = ("name", "customId", "groups", "config", "headers", "rawHeaders")

    def __init__(self, consumer: Consumer) -> None:
        self.name = consumer.name
        self.customId = consumer.customId
        self.groups = frozenset(consumer.groups)
        self.config = consumer
        headers: List[Tuple[bytes, bytes]] = [(CONSUMER_NAME, consumer.name.encode("ascii"))]
        if consumer.customId is not None:
            headers.append((CONSUMER_ID, consumer.customId.encode("utf-8")))
        if consumer.groups:
            headers.append((CONSUMER_GROUPS, ",".join(consumer.groups).encode("ascii")))
        self.headers = tuple(headers)
        #: The same, keyed as a L{Headers}' raw dict keys them.
        self.rawHeaders = tuple((headerKey(name), value) for name, value in headers)

    def __repr__(self) -> str:
        return f"<ConsumerEntry {self.name}>"


class JWTKey:
    """
    A consumer's JWT credential, ready to verify with.

    @ivar consumer: the L{ConsumerEntry}.
    @ivar credential: the L{Credential}.
    @ivar algorithm: the one algorithm its tokens may use.
    @ivar key: what PyJWT verifies with: the secret (bytes) or the public
        key object.
    """

    __slots__ = ("consumer", "credential", "algorithm", "key")

    def __init__(self, consumer: ConsumerEntry, credential: Credential) -> None:
        self.consumer = consumer
        self.credential = credential
        self.algorithm = credential.algorithm
        if credential.secret is not None:
            self.key: Any = credential.secret.encode("utf-8")
        else:
            assert credential.algorithm is not None and credential.publicKey is not None
            self.key = checkPublicKey(credential.algorithm, credential.publicKey)


#: The most API keys a L{ConsumerIndex} remembers as presented.
PRESENTED_KEYS = 4096


class ConsumerIndex:
    """
    The consumers of a snapshot, by everything a request may name them by.

    @ivar consumers: the catalog's consumers it was built from, by name.
    @ivar keys: the consumers by the SHA-256 digest of their API keys
        (read-only; the hot path of key authentication reads it directly).
    @ivar presented: the consumers by the API keys requests presented and
        L{keys} found, as presented (see L{rememberKey}): the hot path looks
        here first and hashes only what it does not find.
    """

    def __init__(self, consumers: Mapping[str, Consumer]) -> None:
        self.consumers = consumers
        self._byName: Dict[str, ConsumerEntry] = {}
        self._byCustomId: Dict[str, ConsumerEntry] = {}
        self.keys: Dict[bytes, ConsumerEntry] = {}
        self.presented: Dict[bytes, ConsumerEntry] = {}
        self._byUsername: Dict[str, Tuple[ConsumerEntry, Credential]] = {}
        self._byIssuer: Dict[str, List[JWTKey]] = {}
        self._byKid: Dict[str, List[JWTKey]] = {}
        for name in sorted(consumers):
            consumer = consumers[name]
            entry = ConsumerEntry(consumer)
            self._byName[name] = entry
            if consumer.customId is not None:
                self._byCustomId.setdefault(consumer.customId, entry)
            for credential in consumer.credentials:
                if credential.kept:
                    # (Never stored: the admin resolves kept credentials.)
                    continue
                if credential.type == "key":
                    assert credential.keyHash is not None
                    self.keys.setdefault(bytes.fromhex(credential.keyHash), entry)
                elif credential.type == "basic":
                    assert credential.username is not None
                    self._byUsername.setdefault(credential.username, (entry, credential))
                else:
                    jwtKey = JWTKey(entry, credential)
                    if credential.issuer is not None:
                        self._byIssuer.setdefault(credential.issuer, []).append(jwtKey)
                    assert credential.id is not None
                    self._byKid.setdefault(credential.id, []).append(jwtKey)

    def __len__(self) -> int:
        return len(self._byName)

    def byName(self, name: str) -> Optional[ConsumerEntry]:
        return self._byName.get(name)

    def byClaim(self, value: str) -> Optional[ConsumerEntry]:
        """
        @return: the consumer a token's claim names: by name, else by
            C{customId}.
        """
        entry = self._byName.get(value)
        if entry is None:
            entry = self._byCustomId.get(value)
        return entry

    def byKeyDigest(self, digest: bytes) -> Optional[ConsumerEntry]:
        """
        @param digest: the SHA-256 of a presented API key
            (L{gateway.model.secrets.keyDigest}).
        """
        return self.keys.get(digest)

    def rememberKey(self, key: bytes, consumer: ConsumerEntry) -> None:
        """
        Remember that the API key C{key}, as a request presented it, is
        C{consumer}'s (its SHA-256 digest was found in L{keys}), so that the
        next request presenting it is not hashed again.  Only keys found
        are remembered: at most the consumers' own keys, and never more than
        L{PRESENTED_KEYS} (emptied when full).  The memory goes with this
        index, which a change of any consumer replaces: a revoked key is
        forgotten with the revision that revokes it.
        """
        presented = self.presented
        if len(presented) >= PRESENTED_KEYS:
            presented.clear()
        presented[key] = consumer

    def byUsername(self, username: str) -> Optional[Tuple[ConsumerEntry, Credential]]:
        return self._byUsername.get(username)

    def jwtKeys(self, issuer: Optional[str], kid: Optional[str]) -> Sequence[JWTKey]:
        """
        @return: the consumers' JWT credentials a token may be verified
            with: those of its C{kid} (a credential id) that fit its
            issuer, else those of its issuer.
        """
        if kid is not None:
            keys = self._byKid.get(kid)
            if keys:
                return [k for k in keys if k.credential.issuer in (None, issuer)]
        if issuer is not None:
            return self._byIssuer.get(issuer, ())
        return ()

    def credentialOf(self, name: str, credentialId: Optional[str]) -> Optional[Credential]:
        """
        @return: the credential of that id of consumer C{name} in this
            revision, or L{None}.
        """
        entry = self._byName.get(name)
        if entry is None:
            return None
        for credential in entry.config.credentials:
            if credential.id == credentialId:
                return credential
        return None


#: No consumers at all.
EMPTY = ConsumerIndex({})


def compileConsumers(
    consumers: Mapping[str, Consumer], previous: Optional[ConsumerIndex] = None
) -> ConsumerIndex:
    """
    @return: the index of C{consumers}: C{previous} itself when it holds
        the very same consumer objects (the store changed something else).
    """
    if previous is not None:
        old = previous.consumers
        if len(old) == len(consumers) and all(old.get(n) is c for n, c in consumers.items()):
            return previous
    if not consumers:
        return EMPTY
    return ConsumerIndex(consumers)
