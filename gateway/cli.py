"""
The C{gateway} command: declarative configuration through the admin API.

A resource file holds the four lists of a gateway config file
(C{servers:}, C{clusters:}, C{apis:}, C{routings:}, in the REST form), so
a gateway's own config file can be used as it is; its other keys
(C{proxy:}, C{admin:}, C{store:}) are ignored with a note::

    gateway validate gateway.yaml            # offline checks, no network
    gateway apply gateway.yaml --dry-run     # what would change, as a diff
    gateway apply gateway.yaml --prune       # make the admin match the file
    gateway export -o gateway.yaml           # the admin's state, as a file

C{apply} and C{export} only speak the admin REST API (C{--admin URL},
default C{$GATEWAY_ADMIN} or C{http://127.0.0.1:9090}, with the bearer
token C{--token}, default C{$GATEWAY_TOKEN}), so they work the same
whatever store the gateway uses.

The command is short-lived and synchronous, so it talks HTTP with
L{urllib.request} rather than a reactor.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import http.client
import json
import os
import re
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    TextIO,
    Tuple,
)

import attrs
import yaml

from gateway.config import loadYAML
from gateway.model import RESOURCE_CLASSES, Catalog, parseResource
from gateway.schema import List as ListOf
from gateway.schema import Nullable, Obj, ValidationError, toJSON
from gateway.store import KINDS
from gateway.urlpattern import Route, RouteConflict, Router

#: Where C{apply} and C{export} find the admin when neither C{--admin} nor
#: C{$GATEWAY_ADMIN} says.
DEFAULT_ADMIN = "http://127.0.0.1:9090"

#: Seconds to wait for each answer of the admin.
DEFAULT_TIMEOUT = 10.0

#: Keys of a gateway config file that configure the process, not resources.
IGNORED_KEYS = ("proxy", "admin", "store")

_API_PREFIX = "/api/v1"

# Exit statuses: success, invalid input or a failed request, usage error.
OK, FAILED, USAGE = 0, 1, 2

JSONResources = Mapping[str, Mapping[str, Any]]


class CLIError(Exception):
    """
    An error the command reports on stderr before it exits with status 1.

    @ivar message: what went wrong, for a human.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@attrs.frozen
class Problem:
    """
    One thing wrong (or worth a warning) in a resource file.

    @ivar where: the resource and field at fault, e.g.
        C{"apis[2] (users).nodes[0].cluster"}; empty for the whole file.
    @ivar message: what is wrong.
    """

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class FileError(CLIError):
    """
    A resource file cannot be used.

    @ivar source: the file.
    @ivar problems: every L{Problem} found.
    """

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        self.source = source
        self.problems = list(problems)
        count = len(self.problems)
        lines = [f"{source}: {count} error{'s' if count != 1 else ''}"]
        lines += [f"  {problem}" for problem in self.problems]
        super().__init__("\n".join(lines))


class AdminError(CLIError):
    """
    The admin could not be reached, or answered with an error.

    @ivar status: the HTTP status, or L{None} when there was no answer.
    @ivar field: the field the admin named as at fault, if any.
    """

    def __init__(self, message: str, status: Optional[int] = None, field: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.field = field


# -- resources ----------------------------------------------------------------


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
    """

    source: str
    resources: Mapping[str, Mapping[str, Dict[str, Any]]]
    index: Mapping[Tuple[str, str], int] = attrs.Factory(dict)
    ignored: Tuple[str, ...] = ()

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
    if isinstance(name, str) and name:
        return f"{kind}[{position}] ({name})"
    return f"{kind}[{position}]"


def _join(where: str, fieldName: str) -> str:
    return f"{where}.{fieldName}" if fieldName else where


def parseResourceFile(data: Any, source: str) -> ResourceFile:
    """
    Check the parsed YAML of a resource file: its shape, each resource
    against the model, and that no name is given twice.  References
    between resources are checked by L{checkResources}.

    @param data: what the YAML loader gave.
    @raise FileError: listing every problem found.
    """
    if data is None:
        raise FileError(source, [Problem("", "the file is empty")])
    if not isinstance(data, dict):
        raise FileError(
            source, [Problem("", "must be a mapping with servers:, clusters:, apis:, routings:")]
        )
    problems: List[Problem] = []
    known = ", ".join(KINDS)
    for key in data:
        if key not in KINDS and key not in IGNORED_KEYS:
            problems.append(
                Problem(
                    str(key),
                    f"is not a known key; known keys: {known}"
                    f" ({', '.join(IGNORED_KEYS)} are ignored)",
                )
            )
    if not problems and not any(kind in data for kind in KINDS):
        problems.append(Problem("", f"has none of the lists {known}"))
    resources: Dict[str, Dict[str, Dict[str, Any]]] = {kind: {} for kind in KINDS}
    index: Dict[Tuple[str, str], int] = {}
    for kind in KINDS:
        items = data.get(kind)
        if items is None:
            continue
        if not isinstance(items, list):
            problems.append(Problem(kind, "must be a list of resources"))
            continue
        for position, item in enumerate(items):
            where = _itemLabel(kind, position, item)
            try:
                value = normalise(kind, item)
            except ValidationError as e:
                problems.append(Problem(_join(where, e.field), e.message))
                continue
            name = value["name"]
            if (kind, name) in index:
                first = index[(kind, name)]
                problems.append(
                    Problem(f"{where}.name", f"duplicate name {name!r} (as {kind}[{first}])")
                )
                continue
            index[(kind, name)] = position
            resources[kind][name] = value
    if problems:
        raise FileError(source, problems)
    ignored = tuple(str(key) for key in data if key in IGNORED_KEYS)
    return ResourceFile(source, resources, index, ignored)


def loadResourceFile(path: str, stdin: Optional[TextIO] = None) -> ResourceFile:
    """
    Read and parse a resource file (YAML, or JSON, which is YAML too).

    @param path: the file, or C{-} for C{stdin}.
    @raise FileError: when it cannot be read, is not valid YAML (the
        problem names the line) or holds invalid resources.
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
    return parseResourceFile(data, source)


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
    from gateway.snapshot import SnapshotManager

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
        SnapshotManager(lenient, Clock()).validate(catalog)
    except ValidationError as e:
        # The snapshot names fields "apis/NAME:nodes[0].urlRewrite".
        match = _COMPILED_FIELD.match(e.field)
        where = _join(label(match.group(1), match.group(2)), match.group(3)) if match else e.field
        return [Problem(where, e.message)], warnings
    except ValueError as e:
        return [Problem("", str(e))], warnings
    return [], warnings


def checkResources(
    resources: JSONResources, label: Callable[[str, str], str]
) -> Tuple[List[Problem], List[Problem]]:
    """
    Check a whole set of resources as the gateway would before it accepts
    them: every reference names an existing resource, no two APIs claim the
    same route, and each API compiles (URL rewrites, filter configs).  No
    network: filters are checked with the plugins installed here.

    @param resources: C{{kind: {name: JSON}}}, valid resources.
    @param label: names a resource in messages, e.g.
        L{ResourceFile.label}.
    @return: C{(errors, warnings)}; the set is usable when there are no
        errors.
    """
    parsed: Dict[str, Dict[str, Any]] = {kind: {} for kind in KINDS}
    errors: List[Problem] = []
    for kind in KINDS:
        for name, value in sorted(resources[kind].items()):
            try:
                parsed[kind][name] = parseResource(kind, value)
            except ValidationError as e:
                # Only the admin's own resources can get here (a file's
                # are parsed already): another version of the gateway
                # wrote something this one cannot read.
                errors.append(
                    Problem(_join(label(kind, name), e.field), f"cannot be read: {e.message}")
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
    ]
    routes = [
        Route(api.urlPattern, api.method, api.host, api) for _, api in sorted(catalog.apis.items())
    ]
    try:
        Router(routes)
    except RouteConflict as e:
        errors.append(Problem(f"{label('apis', e.routes[1].value.name)}.urlPattern", str(e)))
    if errors:
        return errors, []
    return _compileProblems(catalog, label)


# -- plans --------------------------------------------------------------------

_SYMBOLS = {"create": "+", "update": "~", "delete": "-"}


@attrs.frozen
class Step:
    """
    One change of a plan.

    @ivar action: C{"create"}, C{"update"} or C{"delete"}.
    @ivar before: the admin's JSON (L{None} for a create).
    @ivar after: the file's JSON (L{None} for a delete).
    """

    action: str
    kind: str
    name: str
    before: Optional[Dict[str, Any]] = None
    after: Optional[Dict[str, Any]] = None

    @property
    def ref(self) -> str:
        """
        @return: C{kind/name}.
        """
        return f"{self.kind}/{self.name}"

    def describe(self) -> str:
        """
        @return: C{"+ servers/x"}, C{"~ apis/y"} or C{"- clusters/z"}.
        """
        return f"{_SYMBOLS[self.action]} {self.ref}"

    def diff(self) -> List[str]:
        """
        @return: the unified diff of the JSON, for an update (else empty).
        """
        if self.action != "update":
            return []
        before = json.dumps(self.before, indent=2, ensure_ascii=False).splitlines()
        after = json.dumps(self.after, indent=2, ensure_ascii=False).splitlines()
        return list(
            difflib.unified_diff(
                before, after, f"{self.ref} (admin)", f"{self.ref} (file)", lineterm=""
            )
        )


@attrs.frozen
class Plan:
    """
    What makes the admin's state match a file.

    @ivar steps: the changes, in an order that never breaks a reference:
        creates and updates of servers, clusters, apis, routings, then
        deletes of routings, apis, clusters, servers.
    @ivar unchanged: how many resources of the file the admin already has.
    @ivar unmanaged: C{kind/name} of the admin's resources that are not in
        the file and are kept (no C{--prune}).
    """

    steps: Tuple[Step, ...]
    unchanged: int = 0
    unmanaged: Tuple[str, ...] = ()

    def count(self, action: str) -> int:
        return sum(1 for step in self.steps if step.action == action)


def _lenientNormalise(kind: str, value: Any) -> Any:
    # What the admin holds should always parse; if a newer or older gateway
    # holds something this version cannot read, compare it as it is.
    try:
        return normalise(kind, value)
    except ValidationError:
        return _jsonCopy(value)


def computePlan(current: JSONResources, desired: JSONResources, prune: bool = False) -> Plan:
    """
    Compare two states, both normalised first so that a default written out
    on one side and left out on the other is no change.

    @param current: C{{kind: {name: JSON}}} the admin holds.
    @param desired: C{{kind: {name: JSON}}} the file describes.
    @param prune: delete what the admin holds and the file does not.
    @return: the L{Plan}.
    """
    writes: List[Step] = []
    deletes: List[Step] = []
    unchanged = 0
    unmanaged: List[str] = []
    for kind in KINDS:
        have = {name: _lenientNormalise(kind, v) for name, v in current.get(kind, {}).items()}
        want = {name: normalise(kind, v) for name, v in desired.get(kind, {}).items()}
        for name in sorted(want):
            if name not in have:
                writes.append(Step("create", kind, name, None, want[name]))
            elif not jsonEqual(have[name], want[name]):
                writes.append(Step("update", kind, name, have[name], want[name]))
            else:
                unchanged += 1
        for name in sorted(set(have) - set(want)):
            if prune:
                deletes.append(Step("delete", kind, name, have[name], None))
            else:
                unmanaged.append(f"{kind}/{name}")
    order = {kind: i for i, kind in enumerate(KINDS)}
    deletes.sort(key=lambda step: -order[step.kind])
    return Plan(tuple(writes + deletes), unchanged, tuple(unmanaged))


def renderPlan(plan: Plan, diffs: bool = True) -> List[str]:
    """
    @return: the lines that show a plan: one per change (C{+}, C{~}, C{-}),
        each update followed by its diff indented by four spaces, then a
        summary.
    """
    lines: List[str] = []
    for step in plan.steps:
        lines.append(step.describe())
        if diffs:
            lines.extend("    " + line for line in step.diff())
    if plan.steps:
        lines.append(
            f"{plan.count('create')} to create, {plan.count('update')} to update,"
            f" {plan.count('delete')} to delete ({plan.unchanged} unchanged)"
        )
    else:
        lines.append(f"no changes ({plan.unchanged} resources up to date)")
    lines.extend(_unmanagedNote(plan))
    return lines


def _unmanagedNote(plan: Plan) -> List[str]:
    if not plan.unmanaged:
        return []
    shown = ", ".join(plan.unmanaged[:10]) + (", ..." if len(plan.unmanaged) > 10 else "")
    return [
        f"note: {len(plan.unmanaged)} resource(s) of the admin are not in the file and are"
        f" kept (--prune deletes them): {shown}"
    ]


# -- the admin API --------------------------------------------------------------


def _describeReason(reason: Any) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve the host ({reason.strerror or reason})"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason)


@attrs.define
class AdminClient:
    """
    A synchronous client of the admin REST API.

    @ivar url: the admin's base URL, e.g. C{http://127.0.0.1:9090}.
    @ivar token: the bearer token, or L{None}.
    @ivar timeout: seconds to wait for each answer.
    @ivar urlopen: L{urllib.request.urlopen} or a stand-in, for tests.
    """

    url: str = attrs.field(converter=lambda url: normaliseAdminURL(url))
    token: Optional[str] = None
    timeout: float = DEFAULT_TIMEOUT
    urlopen: Callable[..., Any] = urllib.request.urlopen

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """
        Make one request and read its JSON answer.

        @param path: under C{/api/v1}, e.g. C{/servers}.
        @return: the decoded JSON, or L{None} for a C{204}.
        @raise AdminError: when the admin cannot be reached, does not answer
            in time, refuses the token, answers with something that is not
            JSON, or answers with an error (its message and field).
        """
        target = self.url + _API_PREFIX + path
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(target, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            try:
                with self.urlopen(request, timeout=self.timeout) as answer:
                    status, headers, raw = answer.status, answer.headers, answer.read()
            except urllib.error.HTTPError as e:
                status, headers = e.code, e.headers
                try:
                    raw = e.read()
                finally:
                    e.close()
        except urllib.error.URLError as e:
            if isinstance(e.reason, socket.timeout):
                raise self._timedOut()
            raise AdminError(
                f"cannot reach the admin at {self.url}: {_describeReason(e.reason)}"
                " (is the gateway's admin running there? see --admin or $GATEWAY_ADMIN)"
            )
        except socket.timeout:
            raise self._timedOut()
        except (OSError, http.client.HTTPException) as e:
            raise AdminError(
                f"the connection to the admin at {self.url} failed: {_describeReason(e)}"
            )
        return self._decode(method, path, status, headers, raw)

    def _timedOut(self) -> AdminError:
        return AdminError(f"the admin at {self.url} did not answer within {self.timeout:g} s")

    def _decode(self, method: str, path: str, status: int, headers: Any, raw: bytes) -> Any:
        if status == 401:
            if self.token:
                hint = "the admin refused the token; check --token or $GATEWAY_TOKEN"
            else:
                hint = "the admin needs a token; pass it with --token or $GATEWAY_TOKEN"
            raise AdminError(f"401 Unauthorized: {hint}", 401)
        if status == 204:
            return None
        try:
            value = json.loads(raw.decode("utf-8"))
        except ValueError:
            contentType = (headers.get("Content-Type") if headers is not None else None) or "none"
            raise AdminError(
                f"{method} {self.url}{_API_PREFIX}{path}: the answer (status {status},"
                f" Content-Type {contentType}) is not JSON; is {self.url} the gateway's admin?",
                status,
            )
        if status >= 400:
            message, fieldName = str(status), ""
            if isinstance(value, dict):
                message = f"{status} {value.get('error', '')}".rstrip()
                fieldName = str(value.get("field") or "")
            if fieldName:
                message += f" (field {fieldName})"
            if status == 404 and method == "GET" and path.count("/") == 1:
                message += f"; is {self.url} the gateway's admin?"
            raise AdminError(message, status, fieldName)
        return value

    def listKind(self, kind: str) -> List[Dict[str, Any]]:
        """
        @return: every resource of one kind, as the admin holds it.
        """
        items = self.request("GET", f"/{kind}")
        if not isinstance(items, list) or not all(
            isinstance(item, dict) and isinstance(item.get("name"), str) for item in items
        ):
            raise AdminError(
                f"GET {self.url}{_API_PREFIX}/{kind}: the answer is not a list of resources;"
                f" is {self.url} the gateway's admin?"
            )
        return items

    def state(self) -> Dict[str, Dict[str, Dict[str, Any]]]:
        """
        @return: C{{kind: {name: JSON}}} of every resource the admin holds.
        """
        return {kind: {item["name"]: item for item in self.listKind(kind)} for kind in KINDS}

    def _itemPath(self, kind: str, name: str) -> str:
        return f"/{kind}/{urllib.parse.quote(name, safe='')}"

    def put(self, kind: str, name: str, value: Mapping[str, Any]) -> Any:
        """
        Create or replace one resource.
        """
        return self.request("PUT", self._itemPath(kind, name), dict(value))

    def delete(self, kind: str, name: str) -> None:
        """
        Delete one resource.
        """
        self.request("DELETE", self._itemPath(kind, name))


def normaliseAdminURL(url: str) -> str:
    """
    @return: the admin's base URL without a trailing C{/} or C{/api/v1}.
    @raise ValueError: when it is not an C{http(s)://host[:port]} URL.
    """
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an admin URL such as {DEFAULT_ADMIN}")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"{url!r} has an invalid port")
    path = parts.path.rstrip("/")
    if path.endswith(_API_PREFIX):
        path = path[: -len(_API_PREFIX)]
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


_PAST = {"create": "created", "update": "updated", "delete": "deleted"}


def applyPlan(client: Any, plan: Plan, write: Callable[[str], Any]) -> int:
    """
    Carry out a plan, one request per step, in its order.

    @param client: an L{AdminClient} (or anything with its C{put} and
        C{delete}).
    @param write: called with one line per step done.
    @return: how many steps were done (all of them).
    @raise CLIError: at the first step the admin refuses, with its message
        and field, and what was done before it.
    """
    for done, step in enumerate(plan.steps):
        try:
            if step.action == "delete":
                client.delete(step.kind, step.name)
            else:
                client.put(step.kind, step.name, step.after)
        except AdminError as e:
            raise CLIError(
                f"cannot {step.action} {step.ref}: {e.message}\n"
                f"stopped after {done} of {len(plan.steps)} change(s); the rest were not made"
            )
        write(f"{_PAST[step.action]} {step.ref}")
    return len(plan.steps)


# -- export ---------------------------------------------------------------------


def _defaultJSON(attribute: Any, spec: Any) -> Any:
    default = attribute.default
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        default = default.factory()
    return _jsonCopy(spec.dump(default))


def _compactValue(spec: Any, value: Any) -> Any:
    if isinstance(spec, Nullable):
        if value is None:
            return None
        spec = spec.inner
    if isinstance(spec, Obj) and isinstance(value, dict):
        return compactJSON(spec.cls, value)
    if isinstance(spec, ListOf) and isinstance(spec.item, Obj) and isinstance(value, list):
        return [compactJSON(spec.item.cls, v) if isinstance(v, dict) else v for v in value]
    return value


def compactJSON(cls: type, value: Mapping[str, Any]) -> Dict[str, Any]:
    """
    @return: a resource's JSON without the fields that hold their default,
        nested objects included, in the model's field order.
    """
    out: Dict[str, Any] = {}
    for attribute in attrs.fields(cls):
        spec = attribute.metadata.get("spec")
        if spec is None or attribute.name not in value:
            continue
        v = value[attribute.name]
        if attribute.default is not attrs.NOTHING and jsonEqual(v, _defaultJSON(attribute, spec)):
            continue
        out[attribute.name] = _compactValue(spec, v)
    for key in value:
        # Fields this version does not know (an admin of a newer gateway).
        if key not in out and not any(a.name == key for a in attrs.fields(cls)):
            out[key] = value[key]
    return out


def compactResource(kind: str, value: Mapping[str, Any]) -> Dict[str, Any]:
    """
    @return: the shortest JSON that means the same resource: without its
        default-valued fields, when leaving them out reads back the same.
    """
    full = _lenientNormalise(kind, value)
    short = compactJSON(RESOURCE_CLASSES[kind], full)
    try:
        if jsonEqual(normalise(kind, short), full):
            return short
    except ValidationError:
        pass
    return full


class _ExportDumper(yaml.SafeDumper):
    """
    Writes short lists of plain values on one line (C{servers: [a, b]}),
    everything else in block style.
    """

    def represent_list(self, data: Any) -> Any:
        flow = len(data) <= 8 and all(
            isinstance(v, (str, int, float, bool)) or v is None for v in data
        )
        return self.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_ExportDumper.add_representer(list, _ExportDumper.represent_list)


def exportDocument(state: JSONResources, source: str = "") -> str:
    """
    @param state: C{{kind: {name: JSON}}}, as L{AdminClient.state} gives.
    @param source: where the state came from, for the header comment.
    @return: the YAML of a resource file: the four lists, each sorted by
        name, default-valued fields left out.
    """
    header = "# Gateway resources"
    if source:
        header += f" exported from {source}"
    chunks = [header + "; apply with: gateway apply FILE\n"]
    for kind in KINDS:
        items = state.get(kind, {})
        data = {kind: [compactResource(kind, items[name]) for name in sorted(items)]}
        chunks.append(
            yaml.dump(
                data,
                Dumper=_ExportDumper,
                sort_keys=False,
                allow_unicode=True,
                default_flow_style=False,
                width=100,
            )
        )
    return "\n".join(chunks)


# -- commands -------------------------------------------------------------------


@attrs.define
class _Output:
    out: TextIO
    err: TextIO

    def say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def warn(self, line: str) -> None:
        self.err.write(line + "\n")
        self.err.flush()


def _noteIgnored(resourceFile: ResourceFile, output: _Output) -> None:
    if resourceFile.ignored:
        output.warn(
            f"note: {resourceFile.source}: ignoring {', '.join(resourceFile.ignored)}"
            " (they configure a gateway process, not its resources)"
        )


def _warnAll(source: str, warnings: Sequence[Problem], output: _Output) -> None:
    for warning in warnings:
        output.warn(f"warning: {source}: {warning}")


def cmdValidate(args: argparse.Namespace, output: _Output, stdin: Optional[TextIO]) -> int:
    """
    C{gateway validate FILE}: check a resource file offline.
    """
    resourceFile = loadResourceFile(args.file, stdin)
    _noteIgnored(resourceFile, output)
    errors, warnings = checkResources(resourceFile.resources, resourceFile.label)
    _warnAll(resourceFile.source, warnings, output)
    if errors:
        raise FileError(resourceFile.source, errors)
    output.say(f"{resourceFile.source}: OK ({resourceFile.counts()})")
    return OK


def _client(args: argparse.Namespace) -> AdminClient:
    return AdminClient(args.admin, args.token or None, args.timeout)


def cmdApply(args: argparse.Namespace, output: _Output, stdin: Optional[TextIO]) -> int:
    """
    C{gateway apply FILE}: make the admin's state match a resource file.
    """
    resourceFile = loadResourceFile(args.file, stdin)
    _noteIgnored(resourceFile, output)
    client = _client(args)
    current = client.state()
    if args.prune:
        target: JSONResources = resourceFile.resources
    else:
        target = {kind: {**current[kind], **resourceFile.resources[kind]} for kind in KINDS}
    errors, warnings = checkResources(target, resourceFile.label)
    _warnAll(resourceFile.source, warnings, output)
    if errors:
        raise CLIError(
            str(FileError(resourceFile.source, errors)) + f"\nnothing was changed on {client.url}"
        )
    plan = computePlan(current, resourceFile.resources, prune=args.prune)
    if args.dry_run:
        for line in renderPlan(plan):
            output.say(line)
        output.say(f"dry run: nothing was changed on {client.url}")
        return OK
    if not plan.steps:
        output.say(f"no changes ({plan.unchanged} resources up to date)")
    else:
        applyPlan(client, plan, output.say)
        output.say(
            f"applied {len(plan.steps)} change(s) to {client.url}: {plan.count('create')}"
            f" created, {plan.count('update')} updated, {plan.count('delete')} deleted"
            f" ({plan.unchanged} unchanged)"
        )
    for line in _unmanagedNote(plan):
        output.say(line)
    return OK


def cmdExport(args: argparse.Namespace, output: _Output, stdin: Optional[TextIO]) -> int:
    """
    C{gateway export}: the admin's resources as a resource file.
    """
    client = _client(args)
    state = client.state()
    document = exportDocument(state, client.url)
    if args.output in (None, "-"):
        output.out.write(document)
        output.out.flush()
        return OK
    try:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(document)
    except OSError as e:
        raise CLIError(f"cannot write {args.output}: {e.strerror or e}")
    counts = ", ".join(f"{len(state[kind])} {kind}" for kind in KINDS)
    output.warn(f"wrote {args.output} ({counts})")
    return OK


def _adminURL(value: str) -> str:
    try:
        return normaliseAdminURL(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e))


def _timeout(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive number of seconds")
    return seconds


def makeParser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """
    @param environ: the environment, for the defaults of C{--admin} and
        C{--token}.
    @return: the parser of the command line.
    """
    parser = argparse.ArgumentParser(
        prog="gateway",
        description="Validate, apply and export the gateway's resources (servers, clusters,"
        " apis, routings) as a YAML file, through the admin REST API.",
        epilog="Run 'gateway COMMAND --help' for a command's options."
        " The gateway itself runs with: twistd -n gateway --config gateway.yaml",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    admin = argparse.ArgumentParser(add_help=False)
    group = admin.add_argument_group("admin API")
    group.add_argument(
        "--admin",
        metavar="URL",
        type=_adminURL,
        default=environ.get("GATEWAY_ADMIN") or DEFAULT_ADMIN,
        help="the admin's base URL (default: $GATEWAY_ADMIN or %(default)s)",
    )
    group.add_argument(
        "--token",
        default=environ.get("GATEWAY_TOKEN") or None,
        help="the admin's bearer token (default: $GATEWAY_TOKEN)",
    )
    group.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_timeout,
        default=DEFAULT_TIMEOUT,
        help="how long to wait for each answer (default: %(default)g)",
    )

    validate = commands.add_parser(
        "validate",
        help="check a resource file offline",
        description="Check a resource file without contacting the gateway: every resource"
        " against the model, unique names, references between resources, route"
        " conflicts and URL rewrites.",
    )
    validate.add_argument("file", metavar="FILE", help="YAML resource file (- for stdin)")
    validate.set_defaults(run=cmdValidate)

    apply = commands.add_parser(
        "apply",
        parents=[admin],
        help="make the admin's resources match a file",
        description="Create and update (and with --prune delete) resources through the"
        " admin API until its state matches the file, in an order that never breaks a"
        " reference.",
    )
    apply.add_argument("file", metavar="FILE", help="YAML resource file (- for stdin)")
    apply.add_argument(
        "--dry-run", action="store_true", help="show the changes as a diff, change nothing"
    )
    apply.add_argument(
        "--prune", action="store_true", help="also delete resources that are not in the file"
    )
    apply.set_defaults(run=cmdApply)

    export = commands.add_parser(
        "export",
        parents=[admin],
        help="write the admin's resources as a file",
        description="Write the admin's resources as YAML that apply reads, sorted by"
        " name, default values left out.",
    )
    export.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    export.set_defaults(run=cmdExport)
    return parser


def run(
    argv: Optional[Sequence[str]] = None,
    stdout: Optional[TextIO] = None,
    stderr: Optional[TextIO] = None,
    environ: Optional[Mapping[str, str]] = None,
    stdin: Optional[TextIO] = None,
) -> int:
    """
    Run the command.

    @param argv: the arguments (without the program name); by default
        C{sys.argv[1:]}.
    @return: the exit status: 0 on success, 1 for invalid input or a failed
        request, 2 for a usage error.
    """
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    output = _Output(out, err)
    parser = makeParser(os.environ if environ is None else environ)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else USAGE
    try:
        return args.run(args, output, stdin)
    except CLIError as e:
        output.warn(f"error: {e.message}")
        return FAILED
    except KeyboardInterrupt:
        output.warn("interrupted")
        return 130


def main(argv: Optional[Sequence[str]] = None) -> int:
    """
    The C{gateway} console script.
    """
    try:
        return run(argv)
    except BrokenPipeError:
        # "gateway export | head": the reader left.  Point stdout at
        # /dev/null so that flushing it at exit does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return FAILED


if __name__ == "__main__":
    sys.exit(main())
