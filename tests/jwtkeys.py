"""
Keys and tokens for the authentication tests: made with cryptography and
PyJWT, once per test process (an RSA key takes a moment to make).
"""

from __future__ import annotations

import base64
import functools
import json
from typing import Any, Dict, Optional

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

#: An HS256 secret of 32 characters or more.
HS_SECRET = "hs256-secret-of-the-tests-0123456789abcdef"


@functools.cache
def rsaKey(which: int = 0) -> rsa.RSAPrivateKey:
    """
    @return: an RSA private key (2048 bits); C{which} tells several apart.
    """
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.cache
def ecKey() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@functools.cache
def edKey() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def publicPEM(key: Any) -> str:
    """
    @return: the PEM of a private key's public key.
    """
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )


def token(
    key: Any,
    algorithm: str,
    claims: Dict[str, Any],
    kid: Optional[str] = None,
    headers: Optional[Dict[str, Any]] = None,
) -> str:
    """
    @return: a JWS signed by PyJWT.
    """
    extra = dict(headers or {})
    if kid is not None:
        extra["kid"] = kid
    return jwt.encode(claims, key, algorithm=algorithm, headers=extra or None)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unsignedToken(claims: Dict[str, Any], alg: str = "none") -> str:
    """
    @return: a token with C{alg: none} (or any alg) and an empty signature.
    """
    header = _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    payload = _b64(json.dumps(claims).encode())
    return f"{header}.{payload}."


def hmacWith(secret: bytes, claims: Dict[str, Any], kid: Optional[str] = None) -> str:
    """
    @return: an HS256 token signed with raw bytes as the secret, made by
        hand: PyJWT refuses to sign with a PEM as an HMAC secret, which is
        what an algorithm-confusion attacker does.
    """
    import hashlib
    import hmac

    header: Dict[str, Any] = {"alg": "HS256", "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    signing = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
    signature = hmac.new(secret, signing.encode("ascii"), hashlib.sha256).digest()
    return signing + "." + _b64(signature)


def jwks(*keys: Any, kids: Any = ()) -> bytes:
    """
    @return: a JWKS document of the public keys of C{keys}, with the kids
        given.
    """
    from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

    out = []
    for key, kid in zip(keys, kids):
        if isinstance(key, rsa.RSAPrivateKey):
            jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
            jwk["alg"] = "RS256"
        elif isinstance(key, ec.EllipticCurvePrivateKey):
            jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
        else:
            jwk = json.loads(OKPAlgorithm.to_jwk(key.public_key()))
        jwk["kid"] = kid
        jwk["use"] = "sig"
        out.append(jwk)
    return json.dumps({"keys": out}).encode("utf-8")
