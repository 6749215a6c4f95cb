"""
The engine's TLS objects of a catalog, compiled with the snapshot: the
context of each certificate the listeners serve
(L{gateway.http.tls.ServerCertificate}), and the
L{gateway.http.tls.UpstreamTLS} of each server that speaks TLS.

Each is made once and kept while the resources it comes from stay the
same: a certificate's context while its JSON does, a server's
L{UpstreamTLS} (and so its pool of TLS connections, keyed by it) while its
C{tls} settings, its host and its client certificate do.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

from gateway.http.tls import ServerCertificate, UpstreamTLS, loadServerCertificate
from gateway.model.certificates import loadChain, loadKey
from gateway.model.resources import Catalog, Certificate, Server, splitAddr
from gateway.model.schema import ValidationError

#: What a server's L{UpstreamTLS} is made of.
_UpstreamKey = Tuple[Any, str, Optional[Certificate]]


class TLSCompiler:
    """
    Makes (and keeps) the TLS objects of the catalogs it is given.

    @ivar requireKeys: whether a certificate without its key is an error
        (it cannot be served); offline checks of an exported file, whose
        certificates have none (the admin keeps them), skip those instead.
    """

    def __init__(self, requireKeys: bool = True) -> None:
        self.requireKeys = requireKeys
        self._served: Dict[str, Tuple[Certificate, ServerCertificate]] = {}
        self._upstream: Dict[str, Tuple[_UpstreamKey, UpstreamTLS]] = {}

    def certificates(self, catalog: Catalog) -> Dict[str, ServerCertificate]:
        """
        @return: the L{ServerCertificate} of every certificate of C{catalog}
            that has its key, by name.
        @raise ValidationError: naming C{certificates/NAME:...} when one
            cannot be served (no key, or OpenSSL refuses it).
        """
        served: Dict[str, Tuple[Certificate, ServerCertificate]] = {}
        out: Dict[str, ServerCertificate] = {}
        for name, certificate in catalog.certificates.items():
            if certificate.key is None and not self.requireKeys:
                continue
            hit = self._served.get(name)
            if hit is not None and (hit[0] is certificate or hit[0] == certificate):
                entry = hit
            else:
                entry = (certificate, self._load(certificate))
            served[name] = entry
            out[name] = entry[1]
        self._served = served
        return out

    def _load(self, certificate: Certificate) -> ServerCertificate:
        where = f"certificates/{certificate.name}:"
        if certificate.key is None:
            raise ValidationError(
                where + "key", "is required (a certificate is served with its key)"
            )
        try:
            return loadServerCertificate(
                certificate.name,
                loadChain(certificate.cert),
                loadKey(certificate.key),
                certificate.snis,
            )
        except ValueError as e:
            raise ValidationError(where + "cert", str(e))

    def upstream(self, catalog: Catalog) -> Dict[str, UpstreamTLS]:
        """
        @return: the L{UpstreamTLS} of every server of C{catalog} that
            speaks TLS, by name.
        @raise ValidationError: naming C{servers/NAME:tls...} when one
            cannot be made.
        """
        made: Dict[str, Tuple[_UpstreamKey, UpstreamTLS]] = {}
        out: Dict[str, UpstreamTLS] = {}
        for name, server in catalog.servers.items():
            tls = server.tls
            if tls is None:
                continue
            host, _ = splitAddr(server.addr)
            clientCertificate = (
                catalog.certificates.get(tls.clientCertificate)
                if tls.clientCertificate is not None
                else None
            )
            key: _UpstreamKey = (tls, host, clientCertificate)
            hit = self._upstream.get(name)
            if hit is not None and hit[0] == key:
                entry = hit
            else:
                entry = (key, _makeUpstream(server, host, clientCertificate, self.requireKeys))
            made[name] = entry
            out[name] = entry[1]
        self._upstream = made
        return out


def _makeUpstream(
    server: Server, host: str, clientCertificate: Optional[Certificate], requireKeys: bool
) -> UpstreamTLS:
    tls = server.tls
    assert tls is not None
    where = f"servers/{server.name}:tls."
    client = None
    if clientCertificate is not None and (clientCertificate.key is not None or requireKeys):
        if clientCertificate.key is None:
            raise ValidationError(
                where + "clientCertificate",
                f"certificate {clientCertificate.name!r} has no key to present",
            )
        client = (loadChain(clientCertificate.cert), loadKey(clientCertificate.key))
    try:
        return UpstreamTLS(
            tls.serverName or host,
            verify=tls.verify,
            trustRoots=loadChain(tls.ca) if tls.ca is not None else None,
            clientCertificate=client,
        )
    except ValueError as e:
        raise ValidationError(where + ("clientCertificate" if client is not None else "ca"), str(e))


def servedCertificates(snapshot: Any) -> Mapping[str, ServerCertificate]:
    """
    @return: the certificates a snapshot serves (none before the first).
    """
    if snapshot is None:
        return {}
    served: Mapping[str, ServerCertificate] = snapshot.certificates
    return served
