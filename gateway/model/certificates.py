"""
Certificates as the model sees them: PEM text parsed and checked with
C{cryptography}, and what the gateway shows of a certificate (its subject,
names, validity and fingerprint), never of its private key.

The engine (L{gateway.http.tls}) serves what this module checked; this
module holds no TLS of its own.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from gateway.model.schema import ValidationError

__all__ = [
    "HOST_NAME",
    "SNI",
    "checkSNI",
    "certificateInfo",
    "checkChainOrder",
    "inlineCertificateFiles",
    "keyMatches",
    "loadChain",
    "loadKey",
    "sniMatches",
]

#: A TLS server name (RFC 6066: a DNS host name, never an IP address), in
#: its ASCII (A-label, C{xn--}) form, or C{*.} and one: C{*.example.org}
#: stands for any one label in front of C{example.org}.
SNI = (
    r"^(\*\.)?[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
    r"(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*$"
)

#: A host name in its ASCII form, without a wildcard: what the gateway asks
#: a backend for by SNI and verifies its certificate with (L{SNI} without
#: its C{*.}).
HOST_NAME = (
    r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
    r"(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*$"
)

#: The most a PEM field may hold (a chain of a dozen certificates fits).
MAX_PEM = 65536

#: The RSA keys refused as too weak (OpenSSL's default security level
#: refuses them too, at the first handshake).
MIN_RSA_BITS = 2048

_PEM_BEGIN = "-----BEGIN "

#: The kinds of private key a TLS 1.2 or 1.3 server (or client) uses.
_SERVED_KEYS = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)


def _pemBytes(text: str, what: str) -> bytes:
    if _PEM_BEGIN not in text:
        raise ValueError(f"must be {what} in PEM form (-----BEGIN ...-----)")
    try:
        return text.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"must be {what} in PEM form: PEM text is ASCII")


def loadChain(text: str) -> List[x509.Certificate]:
    """
    Parse a PEM certificate chain: the certificate first, then the
    intermediates that sign it (a CA bundle for C{tls.ca}).

    @raise ValueError: when it holds no certificate, a block that does
        not parse, or a private key (which must never sit in a field that
        anyone who reads the admin sees).
    """
    if "PRIVATE KEY-----" in text:
        raise ValueError(
            "holds a private key: a private key goes in the certificate's key field,"
            " which the gateway never shows"
        )
    data = _pemBytes(text, "a certificate chain")
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise ValueError(f"is not a valid PEM certificate chain ({_reason(e)})")
    if not certificates:
        raise ValueError("holds no certificate")
    return certificates


def checkChainOrder(chain: Sequence[x509.Certificate]) -> None:
    """
    Check that a chain a listener serves is in order: each certificate
    after the first is the one that signed the certificate before it (RFC
    8446 4.4.2; what TLS 1.2 clients and some libraries still require).

    @raise ValueError: naming the first certificate out of place.
    """
    for i in range(1, len(chain)):
        child, parent = chain[i - 1], chain[i]
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature):
            raise ValueError(
                f"is not in order: certificate {i + 1} of the chain"
                f" ({parent.subject.rfc4514_string() or 'no subject'}) did not sign"
                f" certificate {i} (issued by {child.issuer.rfc4514_string() or 'no one'}):"
                " give the certificate first, then each intermediate after the one it signs"
            )


def loadKey(text: str) -> Any:
    """
    Parse an unencrypted PEM private key (RSA of at least 2048 bits, EC,
    Ed25519 or Ed448).

    @return: the C{cryptography} private key.
    @raise ValueError: when it is not one; the message never quotes the
        key.
    """
    data = _pemBytes(text, "a private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ValueError("is encrypted: give the key without a passphrase")
    except UnsupportedAlgorithm:
        raise ValueError("is a kind of private key this gateway does not support")
    except ValueError:
        # (cryptography's message may describe the content: not repeated.)
        raise ValueError("is not a valid PEM private key")
    if isinstance(key, dsa.DSAPrivateKey):
        raise ValueError("is a DSA key, which TLS 1.2 and 1.3 servers do not use")
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < MIN_RSA_BITS:
        raise ValueError(f"is an RSA key of {key.key_size} bits: at least {MIN_RSA_BITS} needed")
    if not isinstance(key, _SERVED_KEYS):
        raise ValueError("is a kind of private key this gateway does not support")
    return key


def _reason(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def _publicBytes(key: Any) -> bytes:
    return bytes(
        key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def keyMatches(certificate: x509.Certificate, key: Any) -> bool:
    """
    @return: whether C{key} is the private key of C{certificate}'s public
        key.
    """
    return _publicBytes(certificate.public_key()) == _publicBytes(key.public_key())


def fingerprint(certificate: x509.Certificate) -> str:
    """
    @return: the SHA-256 fingerprint of a certificate, as C{openssl x509
        -fingerprint -sha256} shows it (C{AB:CD:...}).
    """
    digest = certificate.fingerprint(hashes.SHA256())
    return ":".join(f"{b:02X}" for b in digest)


def _utc(value: datetime.datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def _notAfter(certificate: x509.Certificate) -> datetime.datetime:
    # (not_valid_after_utc: cryptography 42 and later.)
    return certificate.not_valid_after_utc


def _notBefore(certificate: x509.Certificate) -> datetime.datetime:
    return certificate.not_valid_before_utc


def subjectNames(certificate: x509.Certificate) -> List[str]:
    """
    @return: the names a certificate is valid for: its DNS names and IP
        addresses (subjectAltName), in order.
    """
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    names: List[str] = []
    for name in extension.value:
        if isinstance(name, x509.DNSName):
            names.append(name.value)
        elif isinstance(name, x509.IPAddress):
            names.append(str(name.value))
    return names


#: The info of the certificates seen, by PEM text: a certificate is parsed
#: once for every GET, stats and metrics that show it.
_INFO: Dict[str, Dict[str, Any]] = {}

_MAX_INFO = 4096


def certificateInfo(text: str) -> Dict[str, Any]:
    """
    What the gateway shows of a certificate (never of its key).

    @param text: the PEM chain, as a certificate resource holds it.
    @return: C{subject}, C{issuer} (RFC 4514 strings), C{sans} (DNS names
        and IP addresses), C{notBefore}, C{notAfter} (ISO 8601, UTC),
        C{expiresAt} (C{notAfter} in seconds since the epoch) and
        C{fingerprint} (SHA-256) of its first certificate, and C{chain}
        (how many certificates it holds).
    @raise ValueError: when C{text} is not a certificate chain.
    """
    info = _INFO.get(text)
    if info is None:
        chain = loadChain(text)
        leaf = chain[0]
        info = {
            "subject": leaf.subject.rfc4514_string(),
            "issuer": leaf.issuer.rfc4514_string(),
            "sans": subjectNames(leaf),
            "notBefore": _utc(_notBefore(leaf)),
            "notAfter": _utc(_notAfter(leaf)),
            "expiresAt": int(_notAfter(leaf).timestamp()),
            "fingerprint": fingerprint(leaf),
            "chain": len(chain),
        }
        if len(_INFO) >= _MAX_INFO:
            _INFO.clear()
        _INFO[text] = info
    return dict(info, sans=list(info["sans"]))


def sniMatches(pattern: str, name: str) -> bool:
    """
    @param pattern: an SNI of a certificate resource (C{api.example.com},
        C{*.example.org}).
    @param name: a server name a client asked for, lower-case.
    @return: whether the pattern serves the name: equal (ignoring case),
        or C{*.} standing for exactly one label.
    """
    pattern = pattern.lower()
    if pattern.startswith("*."):
        head, dot, rest = name.partition(".")
        return bool(head) and bool(dot) and rest == pattern[2:]
    return pattern == name


def checkSNI(value: str) -> None:
    """
    Refuse what L{SNI}'s pattern lets through but no client asks for: an
    IP address (RFC 6066 3: a client that connects to an address sends no
    server name, so the certificate would never be chosen for it).

    @raise ValueError: saying so.
    """
    if isIPAddress(value):
        raise ValueError(
            "is an IP address, which clients never send by SNI (RFC 6066): clients"
            " that connect by address get proxy.tlsDefaultCertificate"
        )


def isIPAddress(host: str) -> bool:
    """
    @return: whether C{host} is an IP address (a backend reached by address
        gets no SNI, and its certificate is verified for the address).
    """
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


#: The keys of a certificate in a file (a config file's seed, a resource
#: file of the CLI) that name PEM files instead of holding PEM text.
FILE_KEYS: Tuple[Tuple[str, str], ...] = (("certFile", "cert"), ("keyFile", "key"))


def inlineCertificateFiles(item: Any, baseDirectory: Optional[str]) -> Any:
    """
    Read the PEM files a certificate of a file names: C{certFile} and
    C{keyFile} (relative to C{baseDirectory}) become C{cert} and C{key}.

    @param item: one entry of a C{certificates:} list.
    @param baseDirectory: where relative paths start, or L{None} for the
        current directory.
    @return: the entry with the files' content in place of their names
        (C{item} itself when it names none).
    @raise ValidationError: naming C{certFile} or C{keyFile} when a file
        cannot be read, or when the entry gives both a file and its PEM.
    """
    if not isinstance(item, Mapping) or not any(k in item for k, _ in FILE_KEYS):
        return item
    out = dict(item)
    errors: List[ValidationError] = []
    for fileKey, pemKey in FILE_KEYS:
        if fileKey not in out:
            continue
        path = out.pop(fileKey)
        if pemKey in out:
            errors.append(ValidationError(fileKey, f"give {fileKey} or {pemKey}, not both"))
            continue
        if not isinstance(path, str) or not path:
            errors.append(ValidationError(fileKey, "must be the path of a PEM file"))
            continue
        full = os.path.join(baseDirectory or "", os.path.expanduser(path))
        try:
            with open(full, encoding="ascii") as f:
                out[pemKey] = f.read(MAX_PEM + 1)
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else "not a PEM file"
            errors.append(ValidationError(fileKey, f"cannot read {path!r}: {reason}"))
    if errors:
        raise ValidationError.collect(errors)
    return out


def describeNames(snis: Sequence[str]) -> str:
    """
    @return: a list of SNIs for messages.
    """
    return ", ".join(repr(s) for s in snis) or "none"
