"""
A small declarative schema for the gateway's JSON resources.

Each resource in L{gateway.model.resources} is an attrs class whose fields carry a
L{Spec} in their metadata.  One description serves three purposes: parsing
and validating JSON with field-level errors (L{fromJSON}), turning objects
back into JSON (L{toJSON}), and describing them as JSON Schema for the
OpenAPI document (L{jsonSchema}), so the three cannot drift apart.
"""

from __future__ import annotations

import copy
import ipaddress
import math
import re
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Tuple

import attrs

#: A resource name: 1 to 128 letters, digits, C{.}, C{_} or C{-}, but not
#: C{.} or C{..}, which no URL can hold as a path segment (clients and the
#: admin's channel take them for dot segments), so such a resource could
#: never be read or deleted.  (The lookahead is a JSON Schema C{pattern}
#: too: ECMA-262 has it.)
NAME_RE = re.compile(r"^(?!\.\.?$)[A-Za-z0-9._-]{1,128}$")

#: How a name that does not match L{NAME_RE} is told.
NAME_HINT = "must be 1 to 128 letters, digits, -, _ or ., and not . or .."

#: Control characters: C0, DEL and C1.  Refused in every string field but
#: free text (L{Str} with C{controls=True}).
CONTROLS = "\\x00-\\x1f\\x7f-\\x9f"

#: What a path (C{urlPattern}, C{urlRewrite}, C{healthCheck.path}) may not
#: hold: control characters and the space, which would end the path in a
#: request line.
PATH_EXCLUDED = "\\x00-\\x20\\x7f-\\x9f"

_CONTROL_RE = re.compile("[" + CONTROLS + "]")
_PATH_EXCLUDED_RE = re.compile("[" + PATH_EXCLUDED + "]")
_SURROGATE_RE = re.compile("[\\ud800-\\udfff]")


class ValidationError(ValueError):
    """
    A resource or a config value is invalid.

    One error names one field; an error that gathers several (every error
    of a resource, L{collect}) names its first one, and lists them all in
    C{errors}.

    @ivar field: the dotted path of the field at fault, e.g.
        C{"nodes[0].cluster"}; empty for the whole object.
    @ivar message: what is wrong, for a human.
    @ivar semantic: C{False} when the rule broken is one the resource's
        JSON Schema (the admin's OpenAPI document) states, C{True} when the
        value fits the schema but breaks a rule that JSON Schema cannot
        state (a parameter named twice in a URL pattern, an invalid
        regular expression, two nodes with one C{attrName}...).  Both are
        400 in the admin; each of its C{errors} says which kind it is
        (C{"rule": true} for the second).
    @ivar errors: every error, each naming one field (this error alone
        when it is one), in the order found: the object's fields in their
        order, then its unknown keys, then its rules.
    """

    def __init__(
        self,
        field: str,
        message: str,
        semantic: bool = False,
        errors: Optional[Sequence[ValidationError]] = None,
    ) -> None:
        self.field = field
        self.message = message
        self.semantic = semantic
        self.errors: Tuple[ValidationError, ...] = tuple(errors) if errors else (self,)
        text = f"{field}: {message}" if field else message
        if len(self.errors) > 1:
            text += f" (and {len(self.errors) - 1} more)"
        super().__init__(text)

    @classmethod
    def collect(cls, errors: Sequence[ValidationError]) -> ValidationError:
        """
        @param errors: one or more errors, each possibly gathering others.
        @return: one error that gathers all of them, in the order given;
            the error itself when there is one.
        """
        leaves = [leaf for error in errors for leaf in error.errors]
        if len(leaves) == 1:
            return leaves[0]
        first = leaves[0]
        return cls(first.field, first.message, first.semantic, leaves)

    def renamed(self, rename: Callable[[str], str]) -> ValidationError:
        """
        @param rename: maps a field path to another (e.g. prefixes it).
        @return: the same error (of the same class) with every field renamed.
        """
        leaves = [
            type(leaf)(rename(leaf.field), leaf.message, leaf.semantic) for leaf in self.errors
        ]
        if len(leaves) == 1:
            return leaves[0]
        return type(self)(leaves[0].field, leaves[0].message, leaves[0].semantic, leaves)

    def within(self, path: str) -> ValidationError:
        """
        @return: the same error with every field under C{path}.
        """
        if not path:
            return self
        return self.renamed(lambda field: _join(path, field))

    def toJSON(self) -> dict:
        """
        @return: C{{"error", "field", "errors": [{"field", "error"}, ...]}},
            each C{field} left out when it is empty, and each semantic error
            marked C{"rule": true}.
        """
        out = _errorJSON(self.field, self.message)
        errors = out["errors"] = []
        for leaf in self.errors:
            entry = _errorJSON(leaf.field, leaf.message)
            if leaf.semantic:
                entry["rule"] = True
            errors.append(entry)
        return out


def _errorJSON(field: str, message: str) -> dict:
    out = {"error": message}
    if field:
        out["field"] = field
    return out


def _join(path: str, name: str) -> str:
    if not path:
        return name
    if not name:
        return path
    return f"{path}{name}" if name.startswith("[") else f"{path}.{name}"


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


def _describeChar(value: str, index: int) -> str:
    return f"U+{ord(value[index]):04X} at position {index}"


def unicodeProblem(value: str) -> Optional[str]:
    """
    @return: why C{value} is not valid Unicode text (a lone surrogate, which
        JSON's C{\\ud800} escapes can carry but no UTF-8 text can), or
        L{None}.
    """
    bad = _SURROGATE_RE.search(value)
    if bad is None:
        return None
    return (
        "must be valid Unicode text: it holds a lone surrogate ("
        + _describeChar(value, bad.start())
        + ")"
    )


def displayKey(key: Any) -> str:
    """
    @return: a key as messages name it: what cannot be printed (control
        characters, lone surrogates) escaped as in Python.
    """
    text = str(key)
    if unicodeProblem(text) is not None or _CONTROL_RE.search(text):
        return ascii(text)[1:-1]
    return text


def checkJSON(value: Any, path: str) -> list[ValidationError]:
    """
    Check free-form data (a filter's C{config}, a condition's C{value}):
    plain JSON made of valid Unicode text.  A YAML config file could hold
    more (dates, sets, C{.nan}, keys that are not strings), which the
    stores cannot keep.

    @return: the errors found, each naming its place under C{path}.
    """
    errors: list[ValidationError] = []
    stack = [(value, path)]
    while stack:
        item, where = stack.pop()
        if item is None or isinstance(item, (bool, int)):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                errors.append(ValidationError(where, "must be a finite number"))
        elif isinstance(item, str):
            problem = unicodeProblem(item)
            if problem is not None:
                errors.append(ValidationError(where, problem))
        elif isinstance(item, list):
            stack.extend((v, f"{where}[{i}]") for i, v in reversed(list(enumerate(item))))
        elif isinstance(item, dict):
            entries = []
            for key, v in item.items():
                if not isinstance(key, str):
                    errors.append(
                        ValidationError(
                            _join(where, displayKey(key)),
                            f"keys must be strings, not {_typeName(key)}",
                        )
                    )
                    continue
                problem = unicodeProblem(key)
                if problem is not None:
                    errors.append(ValidationError(_join(where, displayKey(key)), "key " + problem))
                    continue
                entries.append((v, _join(where, key)))
            stack.extend(reversed(entries))
        else:
            errors.append(ValidationError(where, f"must be JSON, not {_typeName(item)}"))
    return errors


class Spec:
    """
    How one JSON value is parsed, validated, serialised and documented.
    """

    def parse(self, value: Any, path: str) -> Any:
        """
        @raise ValidationError: gathering every error of the value.
        """
        raise NotImplementedError()

    def dump(self, value: Any) -> Any:
        return value

    def schema(self) -> dict:
        raise NotImplementedError()


@attrs.frozen
class Str(Spec):
    """
    A string of valid Unicode text (no lone surrogate), optionally matching
    a regular expression, then checked by a callable that raises
    L{ValueError}.

    The regular expression is in the JSON Schema: a string it refuses is
    refused with an error of the schema.  The callable refines it with
    what JSON Schema cannot state (a URL pattern's parameter named twice,
    an invalid regular expression): its errors are semantic.  So a
    pattern must hold all that a regular expression can say of the value.

    @ivar pattern: a regular expression for the whole value, in the
        dialect common to Python and ECMA 262 (JSON Schema's), anchored
        with C{^...$}.  It must refuse control characters unless
        C{controls} is set.
    @ivar patternHint: what the pattern means, for error messages (else
        the message shows the pattern).
    @ivar controls: whether control characters are allowed (free text
        only); without a pattern, a string holding one is refused.
    @ivar path: refuse the space too (paths of request lines).
    """

    pattern: Optional[str] = None
    minLength: int = 0
    maxLength: int = 4096
    check: Optional[Callable[[str], Any]] = None
    description: str = ""
    patternHint: str = ""
    controls: bool = False
    path: bool = False

    def parse(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise ValidationError(path, f"must be a string, not {_typeName(value)}")
        problem = unicodeProblem(value)
        if problem is not None:
            raise ValidationError(path, problem)
        if not self.controls:
            bad = (_PATH_EXCLUDED_RE if self.path else _CONTROL_RE).search(value)
            if bad is not None:
                what = "spaces or control characters" if self.path else "control characters"
                raise ValidationError(
                    path, f"must not contain {what} ({_describeChar(value, bad.start())})"
                )
        if len(value) < self.minLength:
            raise ValidationError(
                path,
                "must not be empty"
                if self.minLength == 1
                else f"must be at least {self.minLength} characters",
            )
        if len(value) > self.maxLength:
            raise ValidationError(path, f"must be at most {self.maxLength} characters")
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            # The check, when it refuses the value too, says more precisely
            # what is wrong; the error is the pattern's all the same.
            message = self.patternHint or f"must match {self.pattern}"
            if self.check is not None:
                try:
                    self.check(value)
                except ValueError as e:
                    message = str(e)
            raise ValidationError(path, message)
        if self.check is not None:
            try:
                self.check(value)
            except ValueError as e:
                raise ValidationError(path, str(e), semantic=True)
        return value

    def schema(self) -> dict:
        s: dict = {"type": "string"}
        if self.pattern:
            s["pattern"] = self.pattern
        elif not self.controls:
            s["pattern"] = "^[^" + (PATH_EXCLUDED if self.path else CONTROLS) + "]*$"
        if self.minLength:
            s["minLength"] = self.minLength
        s["maxLength"] = self.maxLength
        return s


def Name() -> Str:
    """
    A resource name: letters, digits, C{-}, C{_}, C{.}; not C{.} or C{..}
    (see L{NAME_RE}).
    """
    return Str(
        pattern=NAME_RE.pattern,
        minLength=1,
        maxLength=128,
        patternHint=NAME_HINT,
    )


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
    itself, for values that must be positive.  Durations take a positive
    minimum (L{MIN_SECONDS}) rather than an exclusive 0: a timeout or a
    window of C{5e-324} seconds is no duration, and dividing by one
    overflows.
    """

    minimum: Optional[float] = None
    maximum: Optional[float] = None
    exclusiveMinimum: bool = False

    def parse(self, value: Any, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValidationError(path, f"must be a number, not {_typeName(value)}")
        try:
            number = float(value)
        except OverflowError:
            # An integer too large for a float (JSON allows 1 followed by
            # 400 zeros).
            number = math.inf if value > 0 else -math.inf
        if not math.isfinite(number):
            if self.maximum is not None and number > 0:
                raise ValidationError(path, f"must be at most {self.maximum:g}")
            if self.minimum is not None and number < 0:
                raise ValidationError(path, f"must be at least {self.minimum:g}")
            raise ValidationError(path, "must be a finite number")
        if self.minimum is not None:
            if self.exclusiveMinimum and number <= self.minimum:
                raise ValidationError(path, f"must be greater than {self.minimum:g}")
            if number < self.minimum:
                raise ValidationError(path, f"must be at least {self.minimum:g}")
        if self.maximum is not None and number > self.maximum:
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


#: The shortest duration a seconds field takes: one millisecond.
MIN_SECONDS = 0.001


def Seconds(maximum: float) -> Num:
    """
    A duration in seconds, from L{MIN_SECONDS} to C{maximum}.
    """
    return Num(MIN_SECONDS, maximum)


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
        if not isinstance(value, str) or value not in self.choices:
            raise ValidationError(path, "must be one of " + ", ".join(self.choices))
        return value

    def schema(self) -> dict:
        return {"type": "string", "enum": list(self.choices)}


@attrs.frozen
class Anything(Spec):
    """
    Any JSON value (a routing condition's C{value}), its strings valid
    Unicode text.
    """

    def parse(self, value: Any, path: str) -> Any:
        errors = checkJSON(value, path)
        if errors:
            raise ValidationError.collect(errors)
        return value

    def schema(self) -> dict:
        return {}


@attrs.frozen
class Map(Spec):
    """
    A JSON object with free-form keys (a filter's C{config}), its strings
    valid Unicode text.
    """

    def parse(self, value: Any, path: str) -> dict:
        if not isinstance(value, dict):
            raise ValidationError(path, f"must be an object, not {_typeName(value)}")
        errors = checkJSON(value, path)
        if errors:
            raise ValidationError.collect(errors)
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
        result = []
        errors = []
        for i, v in enumerate(value):
            try:
                result.append(self.item.parse(v, f"{path}[{i}]"))
            except ValidationError as e:
                errors.append(e)
        if self.unique and not errors:
            seen = set()
            for i, v in enumerate(result):
                if v in seen:
                    errors.append(ValidationError(f"{path}[{i}]", f"duplicate {v!r}"))
                seen.add(v)
        if errors:
            raise ValidationError.collect(errors)
        return tuple(result)

    def dump(self, value: Any) -> list:
        return [self.item.dump(v) for v in value]

    def schema(self) -> dict:
        s: dict = {"type": "array", "items": self.item.schema()}
        if self.minItems:
            s["minItems"] = self.minItems
        s["maxItems"] = self.maxItems
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


@attrs.frozen
class Rule:
    """
    A rule over several fields of one object (a condition's C{value} must
    be a list for C{op: in}).

    A rule with a C{schema} is one that JSON Schema states: the fragment
    joins the object's schema (in its C{allOf}), and its errors are errors
    of the schema.  A rule without one is semantic: stated in C{doc}, for
    the document's readers.

    @ivar fields: the fields the rule reads; it is checked when each of
        them is valid on its own.
    @ivar check: called with C{{field: parsed value}} (defaults filled in)
        of the object; yields C{(field, message)} for each error, C{field}
        relative to the object.
    @ivar schema: the JSON Schema the object must also match, or L{None}.
    @ivar doc: what the rule says, for the object's description.
    """

    fields: Tuple[str, ...]
    check: Callable[[Mapping[str, Any]], Iterable[Tuple[str, str]]]
    schema: Optional[Mapping[str, Any]] = None
    doc: str = ""

    def errors(self, values: Mapping[str, Any], path: str) -> list[ValidationError]:
        semantic = self.schema is None
        return [
            ValidationError(_join(path, field), message, semantic)
            for field, message in self.check(values)
        ]


def rulesOf(cls: type) -> Tuple[Rule, ...]:
    """
    @return: the L{Rule}s of a resource class (its C{rules} attribute).
    """
    return tuple(getattr(cls, "rules", ()))


def checkCIDR(value: str) -> None:
    """
    @raise ValueError: when C{value} is not an IPv4 or IPv6 network or address.
    """
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP network (e.g. 10.0.0.0/8 or ::1/128)")


def field(
    spec: Spec, default: Any = attrs.NOTHING, doc: str = "", access: str = "", **kw: Any
) -> Any:
    """
    Declare a resource field: an attrs field carrying its L{Spec}.

    A field without a default is required in JSON.

    @param access: C{"writeOnly"} for a field the admin takes and never
        answers (a secret), C{"readOnly"} for one it answers and works out
        itself (a fingerprint); the JSON Schema says so.
    """
    if isinstance(default, (list, dict)):
        raise TypeError("use a tuple or a factory for mutable defaults")
    metadata = {"spec": spec, "doc": doc}
    if access:
        metadata["access"] = access
    return attrs.field(default=default, metadata=metadata, **kw)


def writeOnlyFields(cls: type) -> Tuple[str, ...]:
    """
    @return: the names of the write-only fields of a resource class: sent
        to the admin, kept by the store, never answered, exported or
        logged.
    """
    return tuple(a.name for a in attrs.fields(cls) if a.metadata.get("access") == "writeOnly")


def derivedFields(cls: type) -> Mapping[str, Mapping[str, Any]]:
    """
    @return: C{{name: JSON Schema}} of the read-only fields of a resource
        class (its C{derived} attribute): computed for the admin's
        answers (a certificate's expiry), ignored when sent back.
    """
    return getattr(cls, "derived", {})


def _default(a: Any) -> Any:
    default = a.default
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        return default.factory()
    return default


def fromJSON(cls: type, data: Any, path: str = "") -> Any:
    """
    Parse a JSON object into an instance of the resource class C{cls}.

    A field that is absent, or C{null} when it has a default, takes its
    default.  Unknown keys are refused, so a typo never passes silently;
    the class's read-only fields (L{derivedFields}), which the admin's
    answers carry, are ignored.

    @raise ValidationError: gathering every error of the object (see
        L{ValidationError.collect}): each field is checked, then each
        L{Rule} whose fields are valid.
    """
    if not isinstance(data, dict):
        raise ValidationError(path, f"must be an object, not {_typeName(data)}")
    errors: list[ValidationError] = []
    known = set()
    values = {}
    for a in attrs.fields(cls):
        spec = a.metadata.get("spec")
        if spec is None:
            continue
        known.add(a.name)
        fieldPath = _join(path, a.name)
        if a.name in data and not (data[a.name] is None and a.default is not attrs.NOTHING):
            try:
                values[a.name] = spec.parse(data[a.name], fieldPath)
            except ValidationError as e:
                errors.append(e)
        elif a.default is attrs.NOTHING:
            errors.append(ValidationError(fieldPath, "is required"))
        else:
            values[a.name] = _default(a)
    derived = derivedFields(cls)
    for key in data:
        if key not in known and key not in derived:
            errors.append(ValidationError(_join(path, displayKey(key)), "is not a known field"))
    for rule in rulesOf(cls):
        if all(name in values for name in rule.fields):
            errors.extend(rule.errors(values, path))
    if errors:
        raise ValidationError.collect(errors)
    try:
        return cls(**values)
    except ValidationError as e:
        raise e.within(path)


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
    @return: the JSON Schema of a resource class, for the OpenAPI document:
        its fields, and its rules (those that JSON Schema can state in
        C{allOf}, the others in the description).
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
        if a.metadata.get("access"):
            s[a.metadata["access"]] = True
        if a.default is attrs.NOTHING:
            required.append(a.name)
        # attrs' stubs declare Factory as a function (so that
        # "x: int = Factory(int)" type-checks); at run time it is a class.
        elif not isinstance(a.default, attrs.Factory) and a.default is not None:  # type: ignore[arg-type]
            s["default"] = spec.dump(a.default)
        properties[a.name] = s
    for name, derived in derivedFields(cls).items():
        properties[name] = dict(copy.deepcopy(dict(derived)), readOnly=True)
    out: dict = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        out["required"] = required
    rules = rulesOf(cls)
    stated = [copy.deepcopy(dict(rule.schema)) for rule in rules if rule.schema is not None]
    if stated:
        out["allOf"] = stated
    description = " ".join((cls.__doc__ or "").split())
    notes = [rule.doc for rule in rules if rule.doc]
    if notes:
        description = " ".join([description] + notes).strip()
    if description:
        out["description"] = description
    return out
