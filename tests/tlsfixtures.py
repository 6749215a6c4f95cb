"""
Certificates made for the tests with C{cryptography}: a test CA, server
certificates signed by it (for names, wildcards, IP addresses; expired;
for the wrong name), a second CA nobody trusts, and client certificates.
EC P-256 keys: quick to make.
"""

from __future__ import annotations

import datetime
import ipaddress
from typing import Any, List, Optional, Sequence, Tuple

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_UTC = datetime.timezone.utc


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _keyPEM(key: Any) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


@attrs.frozen
class Issued:
    """
    A certificate and its key, in PEM and as objects.

    @ivar chain: the PEM of the certificate, then its intermediates.
    """

    certificate: x509.Certificate
    key: Any
    chain: str

    @property
    def cert(self) -> str:
        return self.chain

    @property
    def keyPEM(self) -> str:
        return _keyPEM(self.key)

    def resource(self, name: str, snis: Sequence[str] = ()) -> dict:
        """
        @return: the JSON of a certificate resource of it.
        """
        return {"name": name, "cert": self.chain, "key": self.keyPEM, "snis": list(snis)}

    def keyBody(self) -> str:
        """
        @return: the base64 body of its key's PEM, as one string: what must
            never appear in any output.
        """
        return "".join(self.keyPEM.strip().splitlines()[1:-1])


class CertificateAuthority:
    """
    A certificate authority for the tests.
    """

    def __init__(
        self, name: str = "Gateway Test CA", parent: Optional[CertificateAuthority] = None
    ) -> None:
        """
        @param parent: the authority that signs this one (an intermediate,
            whose certificates' chains hold it after them), or L{None} for
            a root.
        """
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(_UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name) if parent is None else parent.certificate.subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key if parent is None else parent.key, hashes.SHA256())
        )
        self.pem = _pem(self.certificate)
        #: What follows a certificate it issues in its chain: nothing for a
        #: root, this intermediate (and its own parents') otherwise.
        self.intermediates = "" if parent is None else self.pem + parent.intermediates

    def issue(
        self,
        names: Sequence[str],
        common: Optional[str] = None,
        days: float = 365,
        expired: bool = False,
        client: bool = False,
        notAfter: Optional[datetime.datetime] = None,
    ) -> Issued:
        """
        @param names: DNS names and IP addresses of its subjectAltName.
        @param expired: valid from two days ago until yesterday.
        @param client: a client certificate (extended key usage clientAuth).
        """
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(_UTC)
        if expired:
            start, end = now - datetime.timedelta(days=2), now - datetime.timedelta(days=1)
        else:
            start = now - datetime.timedelta(hours=1)
            end = notAfter or now + datetime.timedelta(days=days)
        sans: List[x509.GeneralName] = []
        for name in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                sans.append(x509.DNSName(name))
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common or (names[0] if names else "client")))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        certificate = builder.sign(self.key, hashes.SHA256())
        return Issued(certificate, key, _pem(certificate) + self.intermediates)


def selfSigned(names: Sequence[str]) -> Issued:
    """
    @return: a self-signed certificate for C{names}.
    """
    ca = CertificateAuthority(names[0])
    return Issued(ca.certificate, ca.key, ca.pem)


def writePEM(directory: Any, issued: Issued, stem: str) -> Tuple[str, str]:
    """
    Write a certificate and its key to files.

    @return: C{(certPath, keyPath)}.
    """
    cert = directory / f"{stem}.crt"
    key = directory / f"{stem}.key"
    cert.write_text(issued.chain)
    key.write_text(issued.keyPEM)
    return str(cert), str(key)
