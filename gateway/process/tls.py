"""
The proxy's TLS listeners follow the snapshots: each new snapshot's
certificates are served from the next handshake on.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.logger import Logger

log = Logger()


class CertificateFollower:
    """
    A snapshot listener (L{gateway.routing.snapshot.SnapshotManager.addListener})
    that hands each snapshot's certificates to a
    L{gateway.http.tls.ServerTLS}, and says once when the default
    certificate the config names is not among them.
    """

    def __init__(self, serverTLS: Any, default: Optional[str]) -> None:
        """
        @param serverTLS: the L{gateway.http.tls.ServerTLS} of the listeners.
        @param default: C{proxy.tlsDefaultCertificate}, or L{None}.
        """
        self._serverTLS = serverTLS
        self._default = default
        self._warned = False

    def __call__(self, snapshot: Any) -> None:
        certificates = snapshot.certificates
        self._serverTLS.update(certificates.values(), self._default)
        missing = self._default is not None and self._default not in certificates
        if missing and not self._warned:
            log.warn(
                "proxy.tlsDefaultCertificate names certificate {name!r}, which the store does"
                " not hold: TLS clients asking for a name no certificate serves (or none) fail"
                " their handshake",
                name=self._default,
            )
        self._warned = missing
