"""
C{gateway apply}: the plan that takes the admin from its state to a
file's, shown as a diff and applied as one batch (or, to an older admin,
step by step).
"""

from __future__ import annotations

import difflib
import json
import re
from typing import (
    Any,
    Callable,
    Dict,
    List,
    Optional,
    Tuple,
)

import attrs

from gateway.cli.problems import AdminError, CLIError, Problem
from gateway.cli.resources import (
    JSONResources,
    _jsonCopy,
    jsonEqual,
    normalise,
    shown,
)
from gateway.model.schema import ValidationError
from gateway.store import KINDS

_SYMBOLS = {"create": "+", "update": "~", "delete": "-"}


#: What a diff shows of a write-only field (a certificate's key) that is
#: set: never the secret itself.
HIDDEN = "(write-only, not shown)"


def _shown(kind: str, value: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    if value is None:
        return None
    out: Dict[str, Any] = shown(kind, value)
    for name in value:
        if name not in out:
            out[name] = None if value[name] is None else HIDDEN
    return out


def _sameNumbers(value: Any) -> Any:
    """
    @return: C{value} with every float that holds a whole number (C{50.0})
        as that integer, for a diff: the admin keeps a number as it was
        written (C{50}) while a file's default is the model's (C{50.0}),
        the same value (L{jsonEqual}), which a diff showed as a change.
    """
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _sameNumbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_sameNumbers(v) for v in value]
    return value


@attrs.frozen
class Step:
    """
    One change of a plan.

    @ivar action: C{"create"}, C{"update"} or C{"delete"}.
    @ivar before: the admin's JSON (L{None} for a create).
    @ivar after: the file's JSON (L{None} for a delete): what is sent.  A
        consumer's holds what verifies its credentials (a key's digest, a
        password's bcrypt hash, a JWT secret); plans show and compare it
        without them (L{shown}).
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
        before = json.dumps(
            _sameNumbers(_shown(self.kind, self.before)), indent=2, ensure_ascii=False
        )
        after = json.dumps(
            _sameNumbers(_shown(self.kind, self.after)), indent=2, ensure_ascii=False
        )
        return list(
            difflib.unified_diff(
                before.splitlines(),
                after.splitlines(),
                f"{self.ref} (admin)",
                f"{self.ref} (file)",
                lineterm="",
            )
        )


@attrs.frozen
class Plan:
    """
    What makes the admin's state match a file.

    @ivar steps: the changes, in an order that never breaks a reference:
        creates and updates of certificates, servers, clusters, apis, routings, then
        deletes of routings, apis, clusters, servers, certificates.
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


def computePlan(
    current: JSONResources,
    desired: JSONResources,
    prune: bool = False,
    desiredNormalised: bool = False,
) -> Plan:
    """
    Compare two states, both normalised first so that a default written out
    on one side and left out on the other is no change.

    @param current: C{{kind: {name: JSON}}} the admin holds.
    @param desired: C{{kind: {name: JSON}}} the file describes.
    @param prune: delete what the admin holds and the file does not.
    @param desiredNormalised: whether C{desired} is normalised already (a
        L{ResourceFile}'s resources are).
    @return: the L{Plan}.
    """
    writes: List[Step] = []
    deletes: List[Step] = []
    unchanged = 0
    unmanaged: List[str] = []
    for kind in KINDS:
        # What the admin holds is normalised by the admin: it is normalised
        # here only when it differs (an admin of another version may fill
        # in other defaults).
        have = dict(current.get(kind, {}))
        want = {
            name: v if desiredNormalised else normalise(kind, v)
            for name, v in desired.get(kind, {}).items()
        }
        for name in sorted(want):
            if name not in have:
                writes.append(Step("create", kind, name, None, want[name]))
                continue
            if jsonEqual(shown(kind, have[name]), shown(kind, want[name])):
                unchanged += 1
                continue
            have[name] = _lenientNormalise(kind, have[name])
            if not jsonEqual(shown(kind, have[name]), shown(kind, want[name])):
                writes.append(Step("update", kind, name, have[name], want[name]))
            else:
                unchanged += 1
        for name in sorted(set(have) - set(want)):
            if prune:
                deletes.append(
                    Step("delete", kind, name, _lenientNormalise(kind, have[name]), None)
                )
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


_PAST = {"create": "created", "update": "updated", "delete": "deleted"}

#: How the admin names a field of a batch's change: C{changes[3]},
#: C{changes[3].name}, C{changes[3].value.nodes[0].cluster}.
_CHANGE_FIELD = re.compile(r"^changes\[(\d+)\](?:\.value)?(?:\.(.*))?$")


def batchTimeout(timeout: float, plan: Plan) -> float:
    """
    @return: how long to wait for the admin's answer to a plan's batch:
        C{timeout}, plus a second for every 200 changes (10,000 APIs are
        parsed, checked, committed and compiled by the admin before it
        answers).
    """
    return timeout + len(plan.steps) / 200


def _stepField(field: str, steps: Tuple[Step, ...]) -> str:
    match = _CHANGE_FIELD.match(field)
    if match is None or int(match.group(1)) >= len(steps):
        return field
    ref = steps[int(match.group(1))].ref
    return f"{ref}.{match.group(2)}" if match.group(2) else ref


def applyBatch(
    client: Any, plan: Plan, revision: Optional[int], timeout: float, write: Callable[[str], Any]
) -> bool:
    """
    Carry out a plan in one request: its steps as one batch, which the
    admin applies as one revision, all or none, provided the admin's
    resources did not change since C{revision} (the one the plan was
    made from).

    @param client: an L{AdminClient} (or anything with its C{batch}).
    @param revision: the store revision the plan was made from, or L{None}.
    @param write: called with one line per step, once all are done.
    @return: whether the change serves on every proxy process of the
        gateway (the admin's C{X-Gateway-Propagation}).
    @raise CLIError: when the admin refuses the batch, with its errors,
        each field named by the resource it is about; nothing was changed.
    """
    changes: List[Dict[str, Any]] = []
    for step in plan.steps:
        if step.action == "delete":
            changes.append({"op": "delete", "kind": step.kind, "name": step.name})
        else:
            changes.append({"op": "put", "kind": step.kind, "name": step.name, "value": step.after})
    try:
        _, headers = client.batch(changes, revision, timeout)
    except AdminError as e:
        if e.status is None or e.status == 401:
            raise
        problems = e.errors or [Problem(e.field, e.error or e.message)]
        lines = [f"cannot apply the {len(plan.steps)} change(s): {e.status}"]
        for problem in problems:
            where = _stepField(problem.where, plan.steps)
            lines.append(f"  {where}: {problem.message}" if where else f"  {problem.message}")
        lines.append("nothing was changed (the admin makes all of a plan's changes or none)")
        raise CLIError("\n".join(lines))
    for step in plan.steps:
        write(f"{_PAST[step.action]} {step.ref}")
    propagation = headers.get("X-Gateway-Propagation") if headers is not None else None
    return propagation != "incomplete"


def applyPlan(client: Any, plan: Plan, write: Callable[[str], Any]) -> int:
    """
    Carry out a plan, one request per step, in its order: for an admin
    without C{POST /api/v1/batch} (an older gateway; see L{applyBatch}).

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
