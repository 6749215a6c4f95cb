"""
C{gateway validate}: offline checks of a resource file, the admin's own
validation and compilation run on it without a network.
"""

from __future__ import annotations

import re
from typing import (
    AbstractSet,
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
)

from gateway.cli.problems import Problem
from gateway.cli.resources import JSONResources, _join
from gateway.model.resources import Catalog, parseResource
from gateway.model.schema import ValidationError
from gateway.store import KINDS


class _UncheckedFilter:
    """
    Stands in for a filter whose plugin is not installed where the command
    runs (the gateway may have it): L{checkResources} warns about it.
    """


class _LenientRegistry:
    """
    A filter registry for offline checks: filters whose plugin is installed
    here are made (so their config is checked), others are skipped.
    """

    def __init__(self, registry: Any) -> None:
        self._registry = registry

    def names(self) -> Sequence[str]:
        return self._registry.names() if self._registry is not None else ()

    def makeFilters(self, specs: Iterable[Any], reactor: Any, field: str = "filters") -> Tuple:
        return ()

    def makeFilter(self, name: str, config: Any, reactor: Any, field: str = "") -> Any:
        if name not in self.names():
            return _UncheckedFilter()
        return self._registry.makeFilter(name, config, reactor, field)

    def apiFilterSpecs(self, api: Any, reactor: Any, random: Any, buckets: Any) -> Any:
        # The built-in filters are always here.
        from gateway.filters import FilterRegistry

        return FilterRegistry({}).apiFilterSpecs(api, reactor, random, buckets)


_COMPILED_FIELD = re.compile(r"^(" + "|".join(KINDS) + r")/([^:]+):(.*)$")


def _compileProblems(
    catalog: Catalog, label: Callable[[str, str], str]
) -> Tuple[List[Problem], List[Problem]]:
    """
    Build the catalog as a gateway would (URL rewrites, filter configs),
    with the filter plugins installed here; warn about the others.

    @return: C{(errors, warnings)}.
    """
    # Imported here: they pull in the whole proxy, which --help and the
    # admin commands do not need.
    from twisted.internet.task import Clock

    from gateway.filters import FilterError, FilterRegistry
    from gateway.routing.snapshot import SnapshotManager
    from gateway.routing.tls import TLSCompiler

    warnings: List[Problem] = []
    try:
        registry: Any = FilterRegistry.fromPlugins()
    except FilterError as e:
        warnings.append(Problem("", f"filter plugins not checked: {e.message}"))
        registry = None
    lenient = _LenientRegistry(registry)
    for name, api in sorted(catalog.apis.items()):
        for i, spec in enumerate(api.filters):
            if registry is not None and spec.name not in lenient.names():
                warnings.append(
                    Problem(
                        f"{label('apis', name)}.filters[{i}].name",
                        f"no filter plugin named {spec.name!r} is installed here;"
                        " the gateway must have it",
                    )
                )
    try:
        # Certificates without their keys (exported: the admin keeps the
        # keys) are checked as far as they can be.
        SnapshotManager(lenient, Clock(), tls=TLSCompiler(requireKeys=False)).validate(catalog)
    except ValidationError as e:
        # The snapshot names fields "apis/NAME:nodes[0].urlRewrite".
        problems = []
        for leaf in e.errors:
            match = _COMPILED_FIELD.match(leaf.field)
            where = (
                _join(label(match.group(1), match.group(2)), match.group(3))
                if match
                else leaf.field
            )
            problems.append(Problem(where, leaf.message))
        return problems, warnings
    except ValueError as e:
        return [Problem("", str(e))], warnings
    return [], warnings


def checkResources(
    resources: JSONResources,
    label: Callable[[str, str], str],
    known: Optional[Mapping[Tuple[str, str], Tuple[Any, Any]]] = None,
    invalid: AbstractSet[Tuple[str, str]] = frozenset(),
    now: Optional[float] = None,
) -> Tuple[List[Problem], List[Problem]]:
    """
    Check a whole set of resources as the gateway would before it accepts
    them: every reference names an existing resource, no two APIs claim the
    same route, and each API compiles (URL rewrites, filter configs).  No
    network: filters are checked with the plugins installed here.  All in
    one pass: the resources that name a missing one (or one that names a
    missing one) are left out of the compilation, the rest compiled.

    @param resources: C{{kind: {name: JSON}}}, valid resources.
    @param label: names a resource in messages, e.g.
        L{ResourceFile.label}.
    @param known: C{{(kind, name): (JSON, model object)}} of resources
        parsed already (L{ResourceFile.parsed}): one whose JSON is that
        very object is not parsed again.
    @param now: the time, in seconds since the epoch, to warn of the
        certificates that have expired; L{None} does not look.
    @param invalid: C{(kind, name)} of resources that exist but are not
        valid (their problems are reported already,
        L{ResourceFile.invalid <gateway.cli.resources.ResourceFile.invalid>}):
        a reference to one is not reported, and its user is not compiled.
    @return: C{(errors, warnings)}; the set is usable when there are no
        errors.
    """
    parsed: Dict[str, Dict[str, Any]] = {kind: {} for kind in KINDS}
    errors: List[Problem] = []
    for kind in KINDS:
        for name, value in sorted(resources[kind].items()):
            hit = known.get((kind, name)) if known is not None else None
            if hit is not None and hit[0] is value:
                parsed[kind][name] = hit[1]
                continue
            try:
                parsed[kind][name] = parseResource(kind, value)
            except ValidationError as e:
                # Only the admin's own resources can get here (a file's
                # are parsed already): another version of the gateway
                # wrote something this one cannot read.
                errors.extend(
                    Problem(_join(label(kind, name), leaf.field), f"cannot be read: {leaf.message}")
                    for leaf in e.errors
                )
    if errors:
        return errors, []
    catalog = Catalog(**parsed)
    errors = [
        Problem(
            f"{label(kind, name)}.{fieldName}",
            f"names {targetKind[:-1]} {target!r}, which does not exist",
        )
        for kind, name, fieldName, targetKind, target in catalog.brokenReferences()
        if (targetKind, target) not in invalid
    ]
    broken = catalog.brokenReferences()
    while broken:
        # Users of what is missing cannot be compiled, nor their users.
        for kind, name, _, _, _ in broken:
            parsed[kind].pop(name, None)
        catalog = Catalog(**parsed)
        broken = catalog.brokenReferences()
    # Route conflicts too: the snapshot names the later API's urlPattern.
    compileErrors, warnings = _compileProblems(catalog, label)
    return errors + compileErrors, _unworkable(catalog, label, now) + warnings


def _unworkable(
    catalog: Catalog, label: Callable[[str, str], str], now: Optional[float] = None
) -> List[Problem]:
    """
    @return: a warning for each resource that is valid but cannot work as
        meant: a cluster with no server to send to (its requests are all
        answered 503), a certificate SNI that is none of the certificate's
        names (clients asking for it refuse the certificate), a
        certificate that has expired at C{now} (every client refuses it);
        and one that works but is likely a mistake: CORS allowing every
        origin (C{*}) with credentials (any web site a user opens can then
        call the API with the user's cookies and read the answers).
    """
    from gateway.model.certificates import certificateInfo, loadChain, sniMatches, subjectNames

    warnings = []
    for name, cluster in sorted(catalog.clusters.items()):
        if not cluster.servers and cluster.discovery is None:
            warnings.append(
                Problem(
                    f"{label('clusters', name)}.servers",
                    "is empty and the cluster has no discovery: its requests are answered 503",
                )
            )
    for name, certificate in sorted(catalog.certificates.items()):
        try:
            names = subjectNames(loadChain(certificate.cert)[0])
        except (ValueError, IndexError):
            continue
        info = certificateInfo(certificate.cert)
        if now is not None and info["expiresAt"] < now:
            warnings.append(
                Problem(
                    f"{label('certificates', name)}.cert",
                    f"expired on {info['notAfter']}: every client refuses it"
                    " (the admin refuses it unless it holds this very certificate)",
                )
            )
        for i, sni in enumerate(certificate.snis):
            sni = sni.lower()
            covered = any(
                san.lower() == sni if sni.startswith("*.") else sniMatches(san, sni)
                for san in names
            )
            if not covered:
                warnings.append(
                    Problem(
                        f"{label('certificates', name)}.snis[{i}]",
                        f"{sni!r} is not a name of the certificate (it has: "
                        f"{', '.join(names) or 'none'}): clients asking for it refuse it",
                    )
                )
    for name, api in sorted(catalog.apis.items()):
        cors = api.cors
        if cors is not None and cors.credentials and "*" in cors.origins:
            warnings.append(
                Problem(
                    f"{label('apis', name)}.cors.origins",
                    "allows every origin (*) with credentials: any web site a user opens can"
                    " call this API with the user's cookies and read its answers; list the"
                    " origins instead",
                )
            )
    return warnings
