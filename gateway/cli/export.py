"""
C{gateway export}: the admin's state as a resource file, each resource
without the fields left at their defaults.
"""

from __future__ import annotations

from typing import (
    Any,
    Dict,
    Mapping,
)

import attrs
import yaml

from gateway.cli.plan import _lenientNormalise
from gateway.cli.resources import JSONResources, _jsonCopy, jsonEqual, normalise
from gateway.model.resources import RESOURCE_CLASSES
from gateway.model.schema import List as ListOf
from gateway.model.schema import Nullable, Obj, ValidationError
from gateway.store import KINDS


def _defaultJSON(attribute: Any, spec: Any) -> Any:
    default = attribute.default
    # attrs' stubs declare Factory as a function (so that "x: int =
    # Factory(int)" type-checks); at run time it is a class.
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


#: What an export says of consumers' credentials.
SECRETS_NOTE = """\
# Consumers' credentials are exported without their secrets (the gateway
# never gives them back): each shows its type, id and fingerprint.  Applied
# to the gateway it came from, a credential without its secret keeps the
# one the gateway has.  To apply this file to another gateway, give each
# credential its secret again: key: (type key), password: (type basic),
# secret: or publicKey: (type jwt); or keyHash:/passwordHash: if you have
# those.  gateway apply refuses a credential it cannot keep, naming it."""


class _ExportDumper(yaml.SafeDumper):
    """
    Writes short lists of plain values on one line (C{servers: [a, b]}),
    everything else in block style; text of several lines (a certificate's
    PEM) as a literal block (C{|}), line for line, where YAML can hold it
    so (else as YAML chooses).
    """

    def represent_str(self, data: str) -> Any:
        if "\n" in data:
            return self.represent_scalar("tag:yaml.org,2002:str", data, style="|")
        return super().represent_str(data)

    def represent_list(self, data: Any) -> Any:
        flow = len(data) <= 8 and all(
            isinstance(v, (str, int, float, bool)) or v is None for v in data
        )
        return self.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_ExportDumper.add_representer(list, _ExportDumper.represent_list)
_ExportDumper.add_representer(str, _ExportDumper.represent_str)


def exportDocument(state: JSONResources, source: str = "") -> str:
    """
    @param state: C{{kind: {name: JSON}}}, as L{AdminClient.state} gives.
    @param source: where the state came from, for the header comment.
    @return: the YAML of a resource file: every kind's list, each sorted by
        name, default-valued fields left out.
    """
    header = "# Gateway resources"
    if source:
        header += f" exported from {source}"
    chunks = [header + "; apply with: gateway apply FILE\n"]
    for kind in KINDS:
        items = state.get(kind, {})
        data = {kind: [compactResource(kind, items[name]) for name in sorted(items)]}
        if kind == "consumers" and any(c.get("credentials") for c in items.values()):
            chunks.append(SECRETS_NOTE)
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
