"""
Resource files: the lists of a gateway config file (C{certificates:},
C{servers:}, C{clusters:}, C{apis:}, C{routings:}) read, parsed and
normalised.  A certificate may name PEM files (C{certFile}, C{keyFile},
relative to the resource file) instead of holding their text.
"""

from __future__ import annotations

import json
import os
import sys
from typing import (
    Any,
    Dict,
    FrozenSet,
    List,
    Mapping,
    Optional,
    TextIO,
    Tuple,
)

import attrs
import yaml

from gateway.cli.problems import FileError, Problem
from gateway.model.certificates import inlineCertificateFiles
from gateway.model.config import loadYAML
from gateway.model.consumers import SECRET_FIELDS, publicConsumer
from gateway.model.resources import RESOURCE_CLASSES, parseResource
from gateway.model.schema import NAME_RE, ValidationError, displayKey, toJSON, writeOnlyFields
from gateway.store import KINDS

#: Keys of a gateway config file that configure the process, not resources.
#: Resources by kind, then name, in their REST (JSON) form.
JSONResources = Mapping[str, Mapping[str, Any]]


IGNORED_KEYS = ("proxy", "admin", "store", "resolver", "tracing", "limits")


def _jsonCopy(value: Any) -> Any:
    # Lists rather than tuples, plain dicts: the JSON the admin speaks.
    return json.loads(json.dumps(value))


def normalise(kind: str, value: Any) -> Dict[str, Any]:
    """
    @return: the JSON the model makes of one resource, every default filled
        in (what the admin stores), so that two descriptions of the same
        resource compare equal.
    @raise ValidationError: when C{value} is not a valid resource.
    """
    return _jsonCopy(toJSON(parseResource(kind, value)))


def withoutSecrets(kind: str, value: Mapping[str, Any]) -> Dict[str, Any]:
    """
    @return: a resource's JSON without its write-only fields (a
        certificate's key), which the admin never shows: two descriptions
        compare on the rest (a certificate's key changes only with its
        cert, which is compared).
    """
    secrets = writeOnlyFields(RESOURCE_CLASSES[kind])
    return {k: v for k, v in value.items() if k not in secrets}


def shown(kind: str, value: Any) -> Any:
    """
    @return: a normalised resource as plans compare and show it: a
        consumer's credentials without their secrets and hashes (type, id,
        fingerprint, user name, issuer), as the admin answers them; any
        resource without its write-only fields (a certificate's key).
    """
    if not isinstance(value, dict):
        return value
    if kind == "consumers":
        value = publicConsumer(value)
    return withoutSecrets(kind, value)


def keptCredentials(value: Any) -> List[Tuple[int, str, str]]:
    """
    @return: C{(index, type, id)} of each credential of a normalised
        consumer that holds no secret (it keeps the admin's stored one).
    """
    out = []
    for i, credential in enumerate(value.get("credentials") or ()):
        if not any(credential.get(name) for name in SECRET_FIELDS):
            out.append((i, credential.get("type", ""), credential.get("id", "")))
    return out


def jsonEqual(a: Any, b: Any) -> bool:
    """
    @return: whether two JSON values are the same: numbers by value (C{10}
        is C{10.0}), but booleans are not numbers.
    """
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(jsonEqual(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(jsonEqual(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


@attrs.frozen
class ResourceFile:
    """
    A parsed resource file.

    @ivar source: where it came from (its path, or C{-} for stdin).
    @ivar resources: C{{kind: {name: normalised JSON}}} for every kind in
        L{KINDS}.
    @ivar index: C{{(kind, name): position in its list}}, for messages.
    @ivar ignored: the top-level keys that were ignored (C{proxy}, ...).
    @ivar parsed: C{{(kind, name): (normalised JSON, model object)}}: each
        resource as parsed once, for the checks (L{checkResources
        <gateway.cli.checks.checkResources>}'s C{known}).
    @ivar problems: what is wrong with the file's resources, when it was
        read leniently (L{parseResourceFile}'s C{lenient}); those resources
        are not in C{resources}.
    @ivar invalid: C{(kind, name)} of each resource of the file that has a
        name but is not valid (so not in C{resources}): references to it
        are not broken, the resource is.
    """

    source: str
    resources: Mapping[str, Mapping[str, Dict[str, Any]]]
    index: Mapping[Tuple[str, str], int] = attrs.Factory(dict)
    ignored: Tuple[str, ...] = ()
    parsed: Mapping[Tuple[str, str], Tuple[Dict[str, Any], Any]] = attrs.Factory(dict)
    problems: Tuple[Problem, ...] = ()
    invalid: FrozenSet[Tuple[str, str]] = frozenset()

    def label(self, kind: str, name: str) -> str:
        """
        @return: how messages name a resource: C{apis[2] (users)} for one of
            the file, C{apis/users} for one that is only in the admin.
        """
        position = self.index.get((kind, name))
        if position is None:
            return f"{kind}/{name}"
        return f"{kind}[{position}] ({name})"

    def counts(self) -> str:
        """
        @return: C{"2 servers, 1 clusters, 3 apis, 0 routings"}.
        """
        return ", ".join(f"{len(self.resources[kind])} {kind}" for kind in KINDS)


def _itemLabel(kind: str, position: int, item: Any) -> str:
    name = item.get("name") if isinstance(item, dict) else None
    if isinstance(name, str) and NAME_RE.match(name):
        return f"{kind}[{position}] ({name})"
    return f"{kind}[{position}]"


def _join(where: str, fieldName: str) -> str:
    return f"{where}.{fieldName}" if fieldName else where


def parseResourceFile(
    data: Any, source: str, baseDirectory: Optional[str] = None, lenient: bool = False
) -> ResourceFile:
    """
    Check the parsed YAML of a resource file: its shape, each resource
    against the model, and that no name is given twice.  References
    between resources are checked by L{checkResources}.

    @param data: what the YAML loader gave.
    @param baseDirectory: where the paths of certificate files start.
    @param lenient: keep the problems of single resources in the result
        (L{ResourceFile.problems}, without those resources) rather than
        raise them, so that the rest of the file can be checked too.
    @raise FileError: listing every problem found; when C{lenient}, only
        for a file that is not a mapping of resource lists.
    """
    if data is None:
        raise FileError(source, [Problem("", "the file is empty")])
    if not isinstance(data, dict):
        raise FileError(
            source,
            [
                Problem(
                    "", "must be a mapping of resource lists: " + ", ".join(f"{k}:" for k in KINDS)
                )
            ],
        )
    problems: List[Problem] = []
    known = ", ".join(KINDS)
    for key in data:
        if key not in KINDS and key not in IGNORED_KEYS:
            problems.append(
                Problem(
                    displayKey(key),
                    f"is not a known key; known keys: {known}"
                    f" ({', '.join(IGNORED_KEYS)} are ignored)",
                )
            )
    if not problems and not any(kind in data for kind in KINDS):
        problems.append(Problem("", f"has none of the lists {known}"))
    # A file that is not a set of resource lists is refused as a whole.
    shapeWrong = bool(problems)
    resources: Dict[str, Dict[str, Dict[str, Any]]] = {kind: {} for kind in KINDS}
    index: Dict[Tuple[str, str], int] = {}
    parsed: Dict[Tuple[str, str], Tuple[Dict[str, Any], Any]] = {}
    invalid = set()
    for kind in KINDS:
        items = data.get(kind)
        if items is None:
            continue
        if not isinstance(items, list):
            problems.append(Problem(kind, "must be a list of resources"))
            shapeWrong = True
            continue
        for position, item in enumerate(items):
            where = _itemLabel(kind, position, item)
            try:
                if kind == "certificates":
                    item = inlineCertificateFiles(item, baseDirectory)
                obj = parseResource(kind, item)
            except ValidationError as e:
                problems.extend(
                    Problem(_join(where, leaf.field), leaf.message) for leaf in e.errors
                )
                name = item.get("name") if isinstance(item, dict) else None
                if isinstance(name, str):
                    invalid.add((kind, name))
                continue
            value = _jsonCopy(toJSON(obj))
            name = value["name"]
            if (kind, name) in index:
                first = index[(kind, name)]
                problems.append(
                    Problem(f"{where}.name", f"duplicate name {name!r} (as {kind}[{first}])")
                )
                continue
            index[(kind, name)] = position
            resources[kind][name] = value
            parsed[(kind, name)] = (value, obj)
    if problems and (shapeWrong or not lenient):
        raise FileError(source, problems)
    ignored = tuple(str(key) for key in data if key in IGNORED_KEYS)
    return ResourceFile(
        source, resources, index, ignored, parsed, tuple(problems), frozenset(invalid)
    )


def loadResourceFile(
    path: str, stdin: Optional[TextIO] = None, lenient: bool = False
) -> ResourceFile:
    """
    Read and parse a resource file (YAML, or JSON, which is YAML too).

    @param path: the file, or C{-} for C{stdin}.
    @param lenient: as L{parseResourceFile}'s.
    @raise FileError: when it cannot be read, is not valid YAML (the
        problem names the line) or holds invalid resources (unless
        C{lenient}).
    """
    source = "<stdin>" if path == "-" else path
    try:
        if path == "-":
            text = (stdin if stdin is not None else sys.stdin).read()
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise FileError(source, [Problem("", f"cannot read the file: {reason}")])
    try:
        data = loadYAML(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = " ".join(p for p in (e.context, e.problem) if p)
        raise FileError(source, [Problem("", f"invalid YAML{where}: {what}")])
    except yaml.YAMLError as e:
        raise FileError(source, [Problem("", f"invalid YAML: {e}")])
    baseDirectory = None if path == "-" else os.path.dirname(os.path.abspath(path))
    return parseResourceFile(data, source, baseDirectory, lenient)
