"""
C{gateway apply}: the plan that takes the admin from its state to a
file's, shown as a diff and applied step by step.
"""

from __future__ import annotations

import difflib
import json
from typing import (
    Any,
    Callable,
    Dict,
    List,
    Optional,
    Tuple,
)

import attrs

from gateway.cli.problems import AdminError, CLIError
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
        before = json.dumps(_shown(self.kind, self.before), indent=2, ensure_ascii=False)
        after = json.dumps(_shown(self.kind, self.after), indent=2, ensure_ascii=False)
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
            elif not jsonEqual(shown(kind, have[name]), shown(kind, want[name])):
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
