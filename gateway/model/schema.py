"""
A small declarative schema for the gateway's JSON resources.

Each resource in L{gateway.model.resources} is an attrs class whose fields carry a
L{Spec} in their metadata.  One description serves three purposes: parsing
and validating JSON with field-level errors (L{fromJSON}), turning objects
back into JSON (L{toJSON}), and describing them as JSON Schema for the
OpenAPI document (L{jsonSchema}), so the three cannot drift apart.
"""

from __future__ import annotations

import ipaddress
import math
import re
from typing import Any, Callable, Optional, Sequence

import attrs

NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


class ValidationError(ValueError):
    """
    A resource or a config value is invalid.

    @ivar field: the dotted path of the field at fault, e.g.
        C{"nodes[0].cluster"}; empty for the whole object.
    @ivar message: what is wrong, for a human.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message

    def toJSON(self) -> dict:
        return {"error": self.message, "field": self.field}


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _typeName(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


class Spec:
    """
    How one JSON value is parsed, validated, serialised and documented.
    """

    def parse(self, value: Any, path: str) -> Any:
        raise NotImplementedError()

    def dump(self, value: Any) -> Any:
        return value

    def schema(self) -> dict:
        raise NotImplementedError()


@attrs.frozen
class Str(Spec):
    """
    A string, optionally matching a regular expression or checked by a
    callable that raises L{ValueError}.
    """

    pattern: Optional[str] = None
    minLength: int = 0
    maxLength: int = 4096
    check: Optional[Callable[[str], Any]] = None
    description: str = ""

    def parse(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise ValidationError(path, f"must be a string, not {_typeName(value)}")
        if len(value) < self.minLength:
            raise ValidationError(
                path, "must not be empty" if self.minLength == 1 else "is too short"
            )
        if len(value) > self.maxLength:
            raise ValidationError(path, f"must be at most {self.maxLength} characters")
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise ValidationError(path, f"must match {self.pattern}")
        if self.check is not None:
            try:
                self.check(value)
            except ValueError as e:
                raise ValidationError(path, str(e))
        return value

    def schema(self) -> dict:
        s: dict = {"type": "string"}
        if self.pattern:
            s["pattern"] = self.pattern
        if self.minLength:
            s["minLength"] = self.minLength
        s["maxLength"] = self.maxLength
        return s


def Name() -> Str:
    """
    A resource name: letters, digits, C{-}, C{_}, C{.}.
    """
    return Str(pattern=NAME_RE.pattern, minLength=1, maxLength=128)


@attrs.frozen
class Int(Spec):
    minimum: Optional[int] = None
    maximum: Optional[int] = None

    def parse(self, value: Any, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValidationError(path, f"must be an integer, not {_typeName(value)}")
        if isinstance(value, float):
            if not value.is_integer():
                raise ValidationError(path, "must be an integer")
            value = int(value)
        if self.minimum is not None and value < self.minimum:
            raise ValidationError(path, f"must be at least {self.minimum}")
        if self.maximum is not None and value > self.maximum:
            raise ValidationError(path, f"must be at most {self.maximum}")
        return value

    def schema(self) -> dict:
        s: dict = {"type": "integer"}
        if self.minimum is not None:
            s["minimum"] = self.minimum
        if self.maximum is not None:
            s["maximum"] = self.maximum
        return s


@attrs.frozen
class Num(Spec):
    """
    A number (seconds, percentages).  C{exclusiveMinimum} refuses the minimum
    itself, for values that must be positive.
    """

    minimum: Optional[float] = None
    maximum: Optional[float] = None
    exclusiveMinimum: bool = False

    def parse(self, value: Any, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValidationError(path, f"must be a number, not {_typeName(value)}")
        if not math.isfinite(value):
            raise ValidationError(path, "must be a finite number")
        if self.minimum is not None:
            if self.exclusiveMinimum and value <= self.minimum:
                raise ValidationError(path, f"must be greater than {self.minimum:g}")
            if value < self.minimum:
                raise ValidationError(path, f"must be at least {self.minimum:g}")
        if self.maximum is not None and value > self.maximum:
            raise ValidationError(path, f"must be at most {self.maximum:g}")
        return value

    def schema(self) -> dict:
        s: dict = {"type": "number"}
        if self.minimum is not None:
            key = "exclusiveMinimum" if self.exclusiveMinimum else "minimum"
            s[key] = self.minimum
        if self.maximum is not None:
            s["maximum"] = self.maximum
        return s


@attrs.frozen
class Bool(Spec):
    def parse(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise ValidationError(path, f"must be true or false, not {_typeName(value)}")
        return value

    def schema(self) -> dict:
        return {"type": "boolean"}


@attrs.frozen
class Enum(Spec):
    choices: Sequence[str]

    def parse(self, value: Any, path: str) -> str:
        if value not in self.choices:
            raise ValidationError(path, "must be one of " + ", ".join(self.choices))
        return value

    def schema(self) -> dict:
        return {"type": "string", "enum": list(self.choices)}


@attrs.frozen
class Anything(Spec):
    """
    Any JSON value (a routing condition's C{value}, a filter's C{config}).
    """

    def parse(self, value: Any, path: str) -> Any:
        return value

    def schema(self) -> dict:
        return {}


@attrs.frozen
class Map(Spec):
    """
    A JSON object with free-form keys (a filter's C{config}).
    """

    def parse(self, value: Any, path: str) -> dict:
        if not isinstance(value, dict):
            raise ValidationError(path, f"must be an object, not {_typeName(value)}")
        return value

    def schema(self) -> dict:
        return {"type": "object"}


@attrs.frozen
class List(Spec):
    item: Spec
    minItems: int = 0
    maxItems: int = 10000
    unique: bool = False

    def parse(self, value: Any, path: str) -> tuple:
        if not isinstance(value, list):
            raise ValidationError(path, f"must be a list, not {_typeName(value)}")
        if len(value) < self.minItems:
            raise ValidationError(path, f"must have at least {self.minItems} item(s)")
        if len(value) > self.maxItems:
            raise ValidationError(path, f"must have at most {self.maxItems} items")
        result = tuple(self.item.parse(v, f"{path}[{i}]") for i, v in enumerate(value))
        if self.unique:
            seen = set()
            for i, v in enumerate(result):
                if v in seen:
                    raise ValidationError(f"{path}[{i}]", f"duplicate {v!r}")
                seen.add(v)
        return result

    def dump(self, value: Any) -> list:
        return [self.item.dump(v) for v in value]

    def schema(self) -> dict:
        s: dict = {"type": "array", "items": self.item.schema()}
        if self.minItems:
            s["minItems"] = self.minItems
        if self.unique:
            s["uniqueItems"] = True
        return s


@attrs.frozen
class Obj(Spec):
    """
    A nested resource: an attrs class whose fields carry specs.
    """

    cls: type

    def parse(self, value: Any, path: str) -> Any:
        return fromJSON(self.cls, value, path)

    def dump(self, value: Any) -> Any:
        return toJSON(value)

    def schema(self) -> dict:
        return jsonSchema(self.cls)


@attrs.frozen
class Nullable(Spec):
    """
    A value that may be absent or C{null}.
    """

    inner: Spec

    def parse(self, value: Any, path: str) -> Any:
        if value is None:
            return None
        return self.inner.parse(value, path)

    def dump(self, value: Any) -> Any:
        return None if value is None else self.inner.dump(value)

    def schema(self) -> dict:
        s = dict(self.inner.schema())
        s["nullable"] = True
        return s


def checkCIDR(value: str) -> None:
    """
    @raise ValueError: when C{value} is not an IPv4 or IPv6 network or address.
    """
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP network (e.g. 10.0.0.0/8 or ::1/128)")


def field(spec: Spec, default: Any = attrs.NOTHING, doc: str = "", **kw: Any) -> Any:
    """
    Declare a resource field: an attrs field carrying its L{Spec}.

    A field without a default is required in JSON.
    """
    if isinstance(default, (list, dict)):
        raise TypeError("use a tuple or a factory for mutable defaults")
    return attrs.field(default=default, metadata={"spec": spec, "doc": doc}, **kw)


def fromJSON(cls: type, data: Any, path: str = "") -> Any:
    """
    Parse a JSON object into an instance of the resource class C{cls}.

    @raise ValidationError: naming the first field at fault.  Unknown keys
        are refused, so a typo never passes silently.
    """
    if not isinstance(data, dict):
        raise ValidationError(path, f"must be an object, not {_typeName(data)}")
    known = {}
    kwargs = {}
    for a in attrs.fields(cls):
        spec = a.metadata.get("spec")
        if spec is None:
            continue
        known[a.name] = a
        fieldPath = _join(path, a.name)
        if a.name in data and not (data[a.name] is None and a.default is not attrs.NOTHING):
            kwargs[a.name] = spec.parse(data[a.name], fieldPath)
        elif a.default is attrs.NOTHING:
            raise ValidationError(fieldPath, "is required")
    for key in data:
        if key not in known:
            raise ValidationError(_join(path, str(key)), "is not a known field")
    try:
        obj = cls(**kwargs)
    except ValidationError as e:
        if path:
            raise ValidationError(_join(path, e.field), e.message)
        raise
    return obj


def toJSON(obj: Any) -> dict:
    """
    @return: the JSON object of a resource, with every field (defaults
        included), so that C{fromJSON(cls, toJSON(x)) == x}.
    """
    out = {}
    for a in attrs.fields(type(obj)):
        spec = a.metadata.get("spec")
        if spec is None:
            continue
        out[a.name] = spec.dump(getattr(obj, a.name))
    return out


def jsonSchema(cls: type) -> dict:
    """
    @return: the JSON Schema of a resource class, for the OpenAPI document.
    """
    properties = {}
    required = []
    for a in attrs.fields(cls):
        spec = a.metadata.get("spec")
        if spec is None:
            continue
        s = dict(spec.schema())
        if a.metadata.get("doc"):
            s["description"] = a.metadata["doc"]
        if a.default is attrs.NOTHING:
            required.append(a.name)
        # attrs' stubs declare Factory as a function (so that
        # "x: int = Factory(int)" type-checks); at run time it is a class.
        elif not isinstance(a.default, attrs.Factory) and a.default is not None:  # type: ignore[arg-type]
            s["default"] = spec.dump(a.default)
        properties[a.name] = s
    out: dict = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        out["required"] = required
    if cls.__doc__:
        out["description"] = " ".join(cls.__doc__.split())
    return out
