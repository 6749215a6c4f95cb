"""
How consumers' secrets are kept: API keys as digests, passwords as bcrypt
hashes, and the short fingerprints that stand for a secret wherever one is
shown.

API keys are stored as their SHA-256 digest, unkeyed and unsalted.  A key
is a high-entropy random string (at least 16 characters), for which a slow
or salted hash buys nothing: nobody can search a space of 2**96 keys,
however fast the digest.  What a fast, unsalted digest does buy is the hot
path: the proxy digests the key a request presents once (about a
microsecond) and finds its consumer in a dict, whatever the number of
consumers.  A salt (or a slow hash) would force one verification per
stored key.  A keyed digest (HMAC with a server secret) was weighed and
left out: every admin, proxy and CLI would have to share that secret,
beside the store it is meant to protect, and losing it would void every
key.  (The GitHub and Stripe way: token digests, not password hashes.)

Passwords are low-entropy, so they get a password hash made for it:
bcrypt, at L{BCRYPT_ROUNDS}.  Verifying one costs tens of milliseconds on
purpose; the proxy caches recent verifications (see
L{gateway.auth.passwords}).
"""

from __future__ import annotations

import hashlib
import re

import bcrypt

#: The bcrypt work factor of new password hashes: 2**10 rounds, about 60 ms
#: a hash on a current core (OWASP's minimum for bcrypt).  Verifications
#: run off the proxy's reactor thread and are cached.
BCRYPT_ROUNDS = 10

#: The longest password bcrypt takes, in UTF-8 bytes.
MAX_PASSWORD_BYTES = 72

#: A key digest as stored: 64 lowercase hex digits.
KEY_HASH_PATTERN = r"^[0-9a-f]{64}$"

#: A bcrypt hash as stored (C{$2b$10$} and 53 characters of salt and hash).
PASSWORD_HASH_PATTERN = r"^\$2[aby]\$[0-9]{2}\$[./A-Za-z0-9]{53}$"

_PASSWORD_HASH_RE = re.compile(PASSWORD_HASH_PATTERN)

#: How long a fingerprint is, in hex digits.
FINGERPRINT_LENGTH = 12


def keyDigest(key: bytes) -> bytes:
    """
    @param key: an API key as a request presents it.
    @return: its SHA-256 digest (32 bytes), what the proxy looks keys up by.
    """
    return hashlib.sha256(key).digest()


def keyHash(key: str) -> str:
    """
    @return: the stored form of an API key: its SHA-256 digest in hex.
    """
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def hashPassword(password: str, rounds: int = BCRYPT_ROUNDS) -> str:
    """
    @return: the bcrypt hash of a password (a fresh salt each time).
    @raise ValueError: when the password is longer than
        L{MAX_PASSWORD_BYTES} bytes (bcrypt would ignore the rest).
    """
    data = password.encode("utf-8")
    if len(data) > MAX_PASSWORD_BYTES:
        raise ValueError(f"must be at most {MAX_PASSWORD_BYTES} bytes in UTF-8")
    return bcrypt.hashpw(data, bcrypt.gensalt(rounds)).decode("ascii")


def checkPassword(password: bytes, hashed: str) -> bool:
    """
    @param password: a password as a request presents it.
    @param hashed: a stored bcrypt hash.
    @return: whether they match (slow on purpose: call it off the reactor
        thread).
    """
    if len(password) > MAX_PASSWORD_BYTES or not _PASSWORD_HASH_RE.match(hashed):
        return False
    try:
        return bcrypt.checkpw(password, hashed.encode("ascii"))
    except ValueError:
        return False


def fingerprint(material: str) -> str:
    """
    @param material: what a credential keeps: a key's digest, a password's
        bcrypt hash, a JWT secret or public key.
    @return: a short fingerprint that tells credentials apart in answers,
        exports and logs, and tells nothing useful about the secret: the
        first L{FINGERPRINT_LENGTH} hex digits of the material's SHA-256.
    """
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:FINGERPRINT_LENGTH]


def shortId(prefix: str, text: str) -> str:
    """
    @return: a credential id made from what identifies it (C{key-1a2b3c4d}):
        the same text always gives the same id, so that applying a file
        twice names its credentials alike.
    """
    return f"{prefix}-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:8]}"
