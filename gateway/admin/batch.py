"""
Many changes in one write: the bodies of C{POST /api/v1/batch} (a list of
changes) and C{PUT /api/v1/config} (the whole configuration), read into
L{Batch}es, parsed, and planned against a store state.  The admin
(L{gateway.admin.api}) then checks the proposed catalog once and commits
every change as one revision: all of them, or none.

What a write of N resources costs is what N single writes would cost
apart from the catalog: each resource is parsed and compiled once, and
the checks that go over the whole catalog (references, route conflicts,
credentials) run once, not N times.

Fields are named after the body sent: C{changes[3].value.urlPattern} in a
batch, C{apis[12].urlPattern} in a configuration.  Every kind of
L{gateway.model.resources.KINDS} is taken, whatever kinds there are.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

import attrs

from gateway.model.certificates import certificateInfo
from gateway.model.consumers import keepCredentials
from gateway.model.resources import (
    KINDS,
    RESOURCE_CLASSES,
    Catalog,
    missingSecrets,
    parseResource,
)
from gateway.model.schema import NAME_RE, ValidationError, displayKey, toJSON, writeOnlyFields

#: The operations of a batch's changes.
OPS = ("put", "delete")

#: What the answer of a many-change write says happened to a resource.
CREATED, UPDATED, DELETED = "created", "updated", "deleted"


@attrs.frozen
class Item:
    """
    One resource a many-change write puts or deletes.

    @ivar kind: its kind.
    @ivar name: its name, or L{None} when its body names it (a
        configuration's resources).
    @ivar body: the JSON sent for it, or L{None} to delete it.
    @ivar where: how errors name the item (C{changes[3]}, C{apis[12]}).
    @ivar valueAt: how errors name the resource's own fields' parent
        (C{changes[3].value}, C{apis[12]}).
    @ivar index: its position among the batch's items.
    """

    kind: str
    name: Optional[str]
    body: Optional[Dict[str, Any]]
    where: str
    valueAt: str
    index: int = 0


@attrs.frozen
class Batch:
    """
    A many-change write, read from its body.

    @ivar items: what to put and delete, in the body's order.
    @ivar revision: the store revision the caller read, when it asked
        that nothing changed since (a C{revision} in the body), else
        L{None}.
    @ivar replaceAll: whether every resource not among the items is
        deleted (a whole configuration).
    @ivar errors: what is wrong with the shape of single changes (an
        unknown C{op}, a value that is no object): those changes are not
        among the items, and L{parseItems} reports these errors with those
        of the others' resources, all at once.
    """

    items: Tuple[Item, ...]
    revision: Optional[int] = None
    replaceAll: bool = False
    errors: Tuple[ValidationError, ...] = ()


def _schemaError(field: str, message: str) -> ValidationError:
    return ValidationError(field, message)


def _revisionOf(body: Mapping[str, Any], errors: List[ValidationError]) -> Optional[int]:
    if "revision" not in body:
        return None
    revision = body["revision"]
    if isinstance(revision, bool) or not isinstance(revision, int) or revision < 0:
        errors.append(_schemaError("revision", "must be an integer >= 0"))
        return None
    return revision


def readBatch(body: Mapping[str, Any]) -> Batch:
    """
    Read the body of C{POST /api/v1/batch}::

        {"changes": [{"op": "put", "kind": "apis", "name": "a", "value": {...}},
                     {"op": "delete", "kind": "servers", "name": "s"}],
         "revision": 41}

    @raise ValidationError: gathering every error of the body's shape;
        the errors of single changes are kept for L{parseItems}
        (L{Batch.errors}), which parses the resources.
    """
    errors: List[ValidationError] = []
    for key in body:
        if key not in ("changes", "revision"):
            errors.append(_schemaError(displayKey(key), "is not a field of a batch"))
    revision = _revisionOf(body, errors)
    changes = body.get("changes")
    items: List[Item] = []
    if not isinstance(changes, list):
        errors.append(_schemaError("changes", "is required: a list of changes"))
        changes = []
    if errors:
        raise ValidationError.collect(errors)
    for i, change in enumerate(changes):
        where = f"changes[{i}]"
        if not isinstance(change, dict):
            errors.append(_schemaError(where, "must be an object"))
            continue
        before = len(errors)
        for key in change:
            if key not in ("op", "kind", "name", "value"):
                errors.append(
                    _schemaError(f"{where}.{displayKey(key)}", "is not a field of a change")
                )
        op, kind, name = change.get("op"), change.get("kind"), change.get("name")
        if op not in OPS:
            errors.append(_schemaError(f"{where}.op", "must be one of: " + ", ".join(OPS)))
        if kind not in KINDS:
            errors.append(_schemaError(f"{where}.kind", "must be one of: " + ", ".join(KINDS)))
        if not isinstance(name, str) or not NAME_RE.match(name):
            errors.append(
                _schemaError(
                    f"{where}.name",
                    "is required: 1 to 128 letters, digits, '.', '_' or '-', not '.' or '..'",
                )
            )
        value = change.get("value")
        if op == "put" and not isinstance(value, dict):
            errors.append(_schemaError(f"{where}.value", "is required for a put: an object"))
        elif op == "delete" and "value" in change:
            errors.append(_schemaError(f"{where}.value", "must be left out of a delete"))
        if len(errors) == before:
            items.append(
                Item(
                    str(kind),
                    name,
                    value if op == "put" else None,
                    where,
                    f"{where}.value",
                    len(items),
                )
            )
    return Batch(tuple(items), revision, errors=tuple(errors))


def readConfig(body: Mapping[str, Any]) -> Batch:
    """
    Read the body of C{PUT /api/v1/config}: a list of resources for each
    kind (C{{"servers": [...], "clusters": [...], ...}}), the whole
    configuration: a kind left out has no resources.

    @raise ValidationError: gathering every error of its shape; a
        resource that is not an object is kept for L{parseItems}
        (L{Batch.errors}).
    """
    errors: List[ValidationError] = []
    items: List[Item] = []
    for key in body:
        if key not in KINDS:
            errors.append(
                _schemaError(
                    displayKey(key), "is not a kind of resource; kinds: " + ", ".join(KINDS)
                )
            )
    itemErrors: List[ValidationError] = []
    for kind in KINDS:
        if kind not in body:
            continue
        resources = body[kind]
        if not isinstance(resources, list):
            errors.append(_schemaError(kind, "must be a list of resources"))
            continue
        for i, resource in enumerate(resources):
            where = f"{kind}[{i}]"
            if not isinstance(resource, dict):
                itemErrors.append(_schemaError(where, "must be an object"))
                continue
            items.append(Item(kind, None, resource, where, where, len(items)))
    if errors:
        raise ValidationError.collect(errors + itemErrors)
    return Batch(tuple(items), replaceAll=True, errors=tuple(itemErrors))


def configOf(resources: Mapping[str, Mapping[str, Any]]) -> Dict[str, List[Any]]:
    """
    @return: a store state's resources as C{PUT /api/v1/config} takes
        them: every kind, each a list sorted by name.
    """
    return {kind: [resources[kind][name] for name in sorted(resources[kind])] for kind in KINDS}


def hasPassword(batch: Batch) -> bool:
    """
    @return: whether a consumer of the batch holds a password (parsing
        hashes it: tens of milliseconds with bcrypt).
    """
    for item in batch.items:
        if item.kind == "consumers" and item.body is not None:
            credentials = item.body.get("credentials")
            if isinstance(credentials, list) and any(
                isinstance(c, dict) and c.get("password") is not None for c in credentials
            ):
                return True
    return False


@attrs.frozen
class Parsed:
    """
    A batch's items, parsed.

    @ivar puts: C{{(kind, name): (item, model object)}}.
    @ivar deletes: C{{(kind, name): item}}.
    """

    puts: Dict[Tuple[str, str], Tuple[Item, Any]]
    deletes: Dict[Tuple[str, str], Item]

    def itemOf(self, kind: str, name: str) -> Optional[Item]:
        """
        @return: the item that puts or deletes C{kind/name}, if any.
        """
        put = self.puts.get((kind, name))
        return put[0] if put is not None else self.deletes.get((kind, name))


def parseItems(batch: Batch) -> Parsed:
    """
    Parse every resource a batch puts, and check that it names no resource
    twice.

    @raise ValidationError: gathering every error of every resource, each
        field under its item (C{apis[12].urlPattern}), after those of the
        changes' shape (L{Batch.errors}); a name given twice is an error of
        the later item's C{name}, marked as a rule.
    """
    errors: List[ValidationError] = list(batch.errors)
    puts: Dict[Tuple[str, str], Tuple[Item, Any]] = {}
    deletes: Dict[Tuple[str, str], Item] = {}
    seen: Dict[Tuple[str, str], Item] = {}
    for item in batch.items:
        obj = None
        if item.body is not None:
            try:
                obj = parseResource(item.kind, item.body, item.name)
            except ValidationError as e:
                errors.append(e.within(item.valueAt))
                continue
            name = obj.name
        else:
            assert item.name is not None
            name = item.name
        key = (item.kind, name)
        first = seen.get(key)
        if first is not None:
            field = f"{item.where}.name" if item.name is not None else f"{item.valueAt}.name"
            errors.append(
                ValidationError(field, f"{item.kind}/{name} is also in {first.where}", True)
            )
            continue
        seen[key] = item
        if obj is not None:
            puts[key] = (item, obj)
        else:
            deletes[key] = item
    if errors:
        raise ValidationError.collect(errors)
    return Parsed(puts, deletes)


def refuseExpired(kind: str, obj: Any, catalog: Catalog, now: float) -> None:
    """
    Refuse a certificate written with a C{cert} that has already expired:
    every client would refuse it.  A certificate stored before it expired
    may still be written with the same C{cert} (its SNIs changed while its
    renewal is on the way): only a new C{cert} is judged.

    @param now: the time, in seconds since the epoch.
    @raise ValidationError: naming C{cert}, with its expiry.
    """
    if kind != "certificates":
        return
    stored = catalog.certificates.get(obj.name)
    if stored is not None and stored.cert == obj.cert:
        return
    info = certificateInfo(obj.cert)
    if info["expiresAt"] < now:
        raise ValidationError(
            "cert",
            f"expired on {info['notAfter']}: every client would refuse it (give its renewal)",
            semantic=True,
        )


def keepStored(kind: str, obj: Any, catalog: Catalog, now: Optional[float] = None) -> Any:
    """
    The resource to write for C{obj}: the same, but keeping the write-only
    secrets of the stored one that it leaves out.  A write-only field of
    the resource (a certificate's C{key}: it is never shown, so an exported
    resource lacks it) left out takes the stored one, and the resource is
    checked again with it (a renewed certificate must still match the
    stored key); a consumer's credentials sent without their secrets keep
    the stored ones.  The one place that knows how secrets are kept:
    single writes and batches both ask it.

    @param catalog: the catalog of the state written to.
    @param now: the time, to refuse a certificate that has expired
        (L{refuseExpired}); L{None} skips that.
    @raise ValidationError: when a secret left out has no stored one to
        keep, or the stored one does not fit what was sent (each error
        names the resource's own field: C{key}, C{credentials[0]}).
    """
    if now is not None:
        refuseExpired(kind, obj, catalog, now)
    secrets = writeOnlyFields(RESOURCE_CLASSES[kind])
    if secrets:
        stored = catalog.kind(kind).get(obj.name)
        kept = {
            name: getattr(stored, name)
            for name in secrets
            if getattr(obj, name) is None
            and stored is not None
            and getattr(stored, name) is not None
        }
        if kept:
            data = dict(toJSON(obj), **kept)
            try:
                obj = parseResource(kind, data)
            except ValidationError as e:
                raise ValidationError.collect(
                    [
                        type(leaf)(
                            leaf.field,
                            leaf.message + " (the stored one, as none was sent)"
                            if leaf.field in kept
                            else leaf.message,
                            leaf.semantic,
                        )
                        for leaf in e.errors
                    ]
                )
        missing = missingSecrets(obj)
        if missing:
            raise ValidationError.collect([type(e)(e.field, e.message, True) for e in missing])
    if kind == "consumers":
        return keepCredentials(obj, catalog.consumers.get(obj.name))
    return obj


@attrs.frozen
class Plan:
    """
    What a batch does to one store state.

    @ivar catalog: the catalog it proposes.
    @ivar changes: C{(kind, name, JSON or None)} of every resource it
        changes (unchanged ones left out).
    @ivar actions: C{(kind, name, action)} of each change: L{CREATED},
        L{UPDATED} or L{DELETED}.
    @ivar unchanged: how many puts change nothing.
    @ivar missing: the delete items of resources that do not exist.
    """

    catalog: Catalog
    changes: List[Tuple[str, str, Optional[Dict[str, Any]]]]
    actions: List[Tuple[str, str, str]]
    unchanged: int
    missing: List[Item]


def planChanges(
    state: Any, catalog: Catalog, batch: Batch, parsed: Parsed, now: Optional[float] = None
) -> Plan:
    """
    Work out what a parsed batch changes in a store state.

    @param state: the L{gateway.store.StoreState} read.
    @param catalog: that state's catalog.
    @param now: the time, as for L{keepStored}.
    @raise ValidationError: when a consumer leaves a credential's secret
        out (to keep the stored one) and the stored consumer has no such
        credential, its field under its item.
    """
    kinds: Dict[str, Dict[str, Any]] = {kind: dict(catalog.kind(kind)) for kind in KINDS}
    changes: List[Tuple[str, str, Optional[Dict[str, Any]]]] = []
    actions: List[Tuple[str, str, str]] = []
    missing: List[Item] = []
    errors: List[ValidationError] = []
    unchanged = 0
    if batch.replaceAll:
        for kind in KINDS:
            for name in state.resources[kind]:
                if (kind, name) not in parsed.puts:
                    del kinds[kind][name]
                    changes.append((kind, name, None))
                    actions.append((kind, name, DELETED))
    for (kind, name), item in parsed.deletes.items():
        if state.get(kind, name) is None:
            missing.append(item)
            continue
        del kinds[kind][name]
        changes.append((kind, name, None))
        actions.append((kind, name, DELETED))
    for (kind, name), (item, obj) in parsed.puts.items():
        try:
            obj = keepStored(kind, obj, catalog, now)
        except ValidationError as e:
            errors.append(e.within(item.valueAt))
            continue
        value = toJSON(obj)
        existing = state.get(kind, name)
        if existing is not None and existing == value:
            unchanged += 1
            continue
        kinds[kind][name] = obj
        changes.append((kind, name, value))
        actions.append((kind, name, CREATED if existing is None else UPDATED))
    if errors:
        raise ValidationError.collect(errors)
    return Plan(attrs.evolve(catalog, **kinds), changes, actions, unchanged, missing)


def fieldNamer(parsed: Parsed) -> Any:
    """
    @return: a function that names a field as the batch's body would:
        C{apis/users:nodes[0].cluster} (how the catalog's checks name a
        field of a resource) becomes C{changes[3].value.nodes[0].cluster}
        when the batch puts C{apis/users}; any other field is kept.
    """

    def name(field: str) -> str:
        where, colon, rest = field.partition(":")
        kind, slash, resource = where.partition("/")
        if not colon or not slash:
            return field
        item = parsed.itemOf(kind, resource)
        if item is None:
            return field
        at = item.valueAt if item.body is not None else item.where
        return f"{at}.{rest}" if rest else at

    return name


def brokenReferences(plan: Plan, parsed: Parsed) -> List[Tuple[str, str]]:
    """
    @return: C{(field, message)} of each reference the proposed catalog
        breaks, in the order of the items at fault: a resource of the
        batch naming a missing one (its field under its item), or a
        resource the batch deletes that another one still names (the
        delete's item).
    """
    found = []
    for kind, name, field, targetKind, target in plan.catalog.brokenReferences():
        item = parsed.itemOf(kind, name)
        if item is not None and item.body is not None:
            message = f"{targetKind[:-1]} {target!r} does not exist"
            found.append((item.index, f"{item.valueAt}.{field}", message))
            continue
        deleted = parsed.itemOf(targetKind, target)
        user = f"{kind}/{name} ({field})"
        if deleted is not None:
            message = f"{targetKind[:-1]} {target!r} is still used by {user}"
            found.append((deleted.index, deleted.where, message))
        else:
            message = f"{targetKind[:-1]} {target!r} does not exist"
            found.append((-1, f"{kind}/{name}:{field}", message))
    found.sort(key=lambda problem: problem[0])
    return [(field, message) for _, field, message in found]
