"""
What the stats and the metrics show of the certificates: their subject,
names, SNIs, expiry and fingerprint, never their keys.
"""

from __future__ import annotations

from typing import Any, Dict

from gateway.model.certificates import certificateInfo


def certificateStats(snapshot: Any, now: float) -> Dict[str, Dict[str, Any]]:
    """
    @param snapshot: the L{gateway.routing.snapshot.Snapshot} served, or
        L{None}.
    @param now: the time, in seconds since the epoch.
    @return: C{{name: info}} of every certificate of the snapshot: what
        L{certificateInfo} gives, its C{snis}, and C{expiresIn}, the
        seconds until it expires (negative once it did).
    """
    if snapshot is None:
        return {}
    out: Dict[str, Dict[str, Any]] = {}
    for name in sorted(snapshot.catalog.certificates):
        certificate = snapshot.catalog.certificates[name]
        try:
            info = certificateInfo(certificate.cert)
        except ValueError:
            continue
        info["snis"] = list(certificate.snis)
        info["expiresIn"] = round(info["expiresAt"] - now, 3)
        out[name] = info
    return out
