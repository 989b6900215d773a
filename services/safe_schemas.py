"""JSON Schemas written by tenants, made safe to run: checked statically, then run within a budget.

A work pool's variables schema is run by the service (its defaults are validated on create). So
before it runs it must pass :func:`check_schema`: every keyword known and well-typed, references
only inside the document (``#/$defs/...``, ``#/definitions/...``; nothing is ever retrieved),
no recursive reference, patterns that the linear-time RE2 engine accepts, and bounded size and
depth, counted with references expanded. :func:`validator` then runs it with RE2 for every
pattern, a linear ``uniqueItems`` and a budget of keyword evaluations. Every refusal is a
:class:`SchemaRefused` whose text says what is wrong and where. The limits are in the README
("Limits").
"""

from __future__ import annotations

import contextvars
import functools
import math
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import unquote

import re2  # type: ignore[import-untyped]
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource

MAX_SCHEMA_VALUES = 5_000
"""JSON values (objects, arrays, strings, numbers …) in one schema, defaults included."""
MAX_SUBSCHEMAS = 1_000
"""Subschemas once every ``$ref`` is expanded (a chain of references cannot multiply work)."""
MAX_SCHEMA_DEPTH = 32
"""Levels of subschemas, references expanded."""
MAX_VALIDATION_STEPS = 5_000
"""Keyword evaluations for one validation (an ``enum`` costs one per value it lists)."""
MAX_VALIDATION_CPU_SECONDS = 0.05
"""CPU time of one validation (the thread's own, so a busy machine does not shorten it): a backstop
behind the step budget, loose enough that a schema within the other limits passes on a slow machine."""
MAX_PATTERN_LENGTH = 1_000
PATTERN_MEMORY_BYTES = 1 << 20
SUPPORTED_DIALECT = "https://json-schema.org/draft/2020-12/schema"

SUBSCHEMA = {"additionalProperties", "items", "contains", "propertyNames", "not", "if", "then", "else"}
SUBSCHEMA_MAP = {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
SUBSCHEMA_LIST = {"allOf", "anyOf", "oneOf", "prefixItems"}
UNSUPPORTED = {
    "$id": "schema identifiers ($id) are not supported; use references inside the schema (#/$defs/...)",
    "$anchor": "anchors are not supported; use JSON-pointer references (#/$defs/...)",
    "$dynamicRef": "dynamic references are not supported",
    "$dynamicAnchor": "dynamic anchors are not supported",
    "$recursiveRef": "recursive references are not supported",
    "$recursiveAnchor": "recursive anchors are not supported",
    "$vocabulary": "vocabularies are not supported",
    "unevaluatedProperties": "unevaluatedProperties is not supported",
    "unevaluatedItems": "unevaluatedItems is not supported",
}
TYPES = ("array", "boolean", "integer", "null", "number", "object", "string")
ANNOTATIONS = {
    "title",
    "description",
    "default",
    "examples",
    "$comment",
    "deprecated",
    "readOnly",
    "writeOnly",
    "format",
    "contentMediaType",
    "contentEncoding",
    "contentSchema",
}


class SchemaRefused(ValueError):
    """A schema that the service will not run; the text says what is wrong and where."""


Path = tuple[str | int, ...]


def _where(path: Path) -> str:
    return "/" + "/".join(str(part).replace("~", "~0").replace("/", "~1") for part in path)


def _is_int(value: Any) -> bool:
    return not isinstance(value, bool) and (
        isinstance(value, int) or (isinstance(value, float) and math.isfinite(value) and value.is_integer())
    )


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def _type_ok(value: Any) -> bool:
    if isinstance(value, str):
        return value in TYPES
    return (
        isinstance(value, list)
        and all(isinstance(item, str) and item in TYPES for item in value)
        and len(set(value)) == len(value)
    )


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value) and len(set(value)) == len(value)


VALUE_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "type": (_type_ok, "one of " + ", ".join(TYPES) + " or a list of them"),
    "enum": (lambda v: isinstance(v, list), "an array"),
    "const": (lambda v: True, ""),
    "multipleOf": (lambda v: _is_number(v) and v > 0, "a number greater than 0"),
    "required": (_strings, "an array of distinct strings"),
    "uniqueItems": (lambda v: isinstance(v, bool), "a boolean"),
    "pattern": (lambda v: isinstance(v, str), "a string"),
    "$ref": (lambda v: isinstance(v, str), "a string"),
    "$schema": (lambda v: v == SUPPORTED_DIALECT, f"{SUPPORTED_DIALECT!r} (the only dialect supported)"),
    "dependentRequired": (
        lambda v: isinstance(v, dict) and all(_strings(item) for item in v.values()),
        "an object of arrays of strings",
    ),
    **{
        key: (lambda v: _is_number(v), "a number")
        for key in ("maximum", "minimum", "exclusiveMaximum", "exclusiveMinimum")
    },
    **{
        key: (lambda v: _is_int(v) and v >= 0, "a non-negative integer")
        for key in (
            "maxLength",
            "minLength",
            "maxItems",
            "minItems",
            "maxProperties",
            "minProperties",
            "maxContains",
            "minContains",
        )
    },
}


@functools.lru_cache(maxsize=512)
def _compiled(pattern: str) -> Any:
    options = re2.Options()
    options.max_mem = PATTERN_MEMORY_BYTES
    options.log_errors = False
    return re2.compile(pattern, options)


def compile_pattern(pattern: str) -> Any:
    """``pattern`` compiled by RE2 (linear-time matching), or :class:`SchemaRefused` saying why not."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise SchemaRefused(f"pattern is longer than {MAX_PATTERN_LENGTH} characters")
    try:
        return _compiled(pattern)
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise SchemaRefused(
            f"unsupported pattern {pattern!r} ({reason}; patterns run on a linear-time engine: "
            "no backreferences or lookaround)"
        ) from exc


class _Inventory:
    """Every subschema of a document by its JSON-pointer path, its children and its reference."""

    def __init__(self, root: Any) -> None:
        self.root = root
        self.children: dict[Path, list[Path]] = {}
        self.refs: dict[Path, Path] = {}
        self.pending_refs: dict[Path, str] = {}
        self.values = 0
        self._visit(root, (), 0)
        for path, ref in self.pending_refs.items():
            self.refs[path] = self._target(path, ref)

    def refuse(self, path: Path, text: str) -> SchemaRefused:
        return SchemaRefused(f"Invalid schema at {_where(path)}: {text}")

    def _count(self, value: Any, path: Path) -> None:
        stack = [(value, 0)]
        while stack:
            item, depth = stack.pop()
            self.values += 1
            if self.values > MAX_SCHEMA_VALUES:
                raise self.refuse(path, f"the schema holds more than {MAX_SCHEMA_VALUES} JSON values")
            if depth > 2 * MAX_SCHEMA_DEPTH:
                raise self.refuse(path, f"a value nests deeper than {2 * MAX_SCHEMA_DEPTH} levels")
            if isinstance(item, dict):
                stack.extend((child, depth + 1) for child in item.values())
            elif isinstance(item, list):
                stack.extend((child, depth + 1) for child in item)

    def _visit(self, node: Any, path: Path, level: int) -> None:
        if level > MAX_SCHEMA_DEPTH:
            raise self.refuse(path, f"subschemas nest deeper than {MAX_SCHEMA_DEPTH} levels")
        self.values += 1
        if self.values > MAX_SCHEMA_VALUES:
            raise self.refuse(path, f"the schema holds more than {MAX_SCHEMA_VALUES} JSON values")
        self.children[path] = []
        if isinstance(node, bool):
            return
        if not isinstance(node, dict):
            raise self.refuse(path, f"a schema must be an object or a boolean, not {node!r:.80}")
        for key, value in node.items():
            here = (*path, key)
            if key in UNSUPPORTED:
                raise self.refuse(path, UNSUPPORTED[key])
            if key in SUBSCHEMA:
                if key == "items" and isinstance(value, list):
                    raise self.refuse(here, "'items' must be a schema (use 'prefixItems' for tuples)")
                self._child(value, path, here, level)
            elif key in SUBSCHEMA_MAP:
                if not isinstance(value, dict):
                    raise self.refuse(here, f"'{key}' must be an object of schemas")
                for name, sub in value.items():
                    if key == "patternProperties":
                        self._pattern(name, here)
                    self._child(sub, path, (*here, name), level)
            elif key in SUBSCHEMA_LIST:
                if not isinstance(value, list) or not value:
                    raise self.refuse(here, f"'{key}' must be a non-empty array of schemas")
                for index, sub in enumerate(value):
                    self._child(sub, path, (*here, index), level)
            elif key in VALUE_CHECKS:
                check, expected = VALUE_CHECKS[key]
                if not check(value):
                    if key == "type":  # the meta-schema's own words, as Prefect reports them
                        raise SchemaRefused(f"Invalid schema: {value!r} is not valid under any of the given schemas")
                    raise self.refuse(here, f"'{key}' must be {expected}, not {value!r:.80}")
                if key == "pattern":
                    self._pattern(value, here)
                elif key == "$ref":
                    self.pending_refs[path] = value
                elif key == "$schema" and path:
                    raise self.refuse(here, "'$schema' is only allowed at the top of the schema")
                if key in ("enum", "const"):
                    self._count(value, here)
            elif key in ANNOTATIONS:
                self._count(value, here)
            else:
                self._count(value, here)  # an unknown keyword is an annotation, as in JSON Schema

    def _child(self, node: Any, parent: Path, path: Path, level: int) -> None:
        self.children[parent].append(path)
        self._visit(node, path, level + 1)

    def _pattern(self, pattern: str, path: Path) -> None:
        try:
            compile_pattern(pattern)
        except SchemaRefused as exc:
            raise self.refuse(path, str(exc)) from None

    def _target(self, path: Path, ref: str) -> Path:
        if not ref.startswith("#"):
            raise self.refuse(
                path, f"$ref {ref!r} points outside the schema; only references inside it (#/$defs/...) are allowed"
            )
        fragment = unquote(ref[1:])
        if fragment and not fragment.startswith("/"):
            raise self.refuse(path, f"$ref {ref!r} is not a JSON pointer (#/$defs/...)")
        target: Path = ()
        node: Any = self.root
        for token in fragment.split("/")[1:] if fragment else []:
            token = token.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and token in node:
                node, target = node[token], (*target, token)
            elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
                node, target = node[int(token)], (*target, int(token))
            else:
                raise self.refuse(path, f"$ref {ref!r} points to nothing in the schema")
        if target not in self.children:
            raise self.refuse(path, f"$ref {ref!r} does not point to a schema")
        return target

    def expand(self) -> None:
        """Refuse recursive references, and schemas too big or too deep once references are expanded."""
        sizes: dict[Path, tuple[int, int]] = {}
        open_: set[Path] = set()

        def measure(path: Path, level: int) -> tuple[int, int]:
            if path in sizes:
                size, depth = sizes[path]
            else:
                if path in open_:
                    raise self.refuse(path, "recursive $ref (a reference back into itself) is not supported")
                if level > MAX_SCHEMA_DEPTH:
                    raise self.refuse(
                        path, f"subschemas nest deeper than {MAX_SCHEMA_DEPTH} levels (references expanded)"
                    )
                open_.add(path)
                size, depth = 1, 0
                following = [*self.children[path], *([self.refs[path]] if path in self.refs else [])]
                for child in following:
                    child_size, child_depth = measure(child, level + 1)
                    size, depth = size + child_size, max(depth, child_depth + 1)
                    if size > MAX_SUBSCHEMAS:
                        raise self.refuse(
                            path, f"the schema expands to more than {MAX_SUBSCHEMAS} subschemas through $ref"
                        )
                open_.discard(path)
                sizes[path] = (size, depth)
            if level + depth > MAX_SCHEMA_DEPTH:
                raise self.refuse(path, f"subschemas nest deeper than {MAX_SCHEMA_DEPTH} levels (references expanded)")
            return size, depth

        measure((), 0)


def check_schema(schema: Any) -> None:
    """Raise :class:`SchemaRefused` unless ``schema`` is safe and well-formed for :func:`validator`."""
    _Inventory(schema).expand()


# --- running a checked schema -----------------------------------------------------------------


class _Budget:
    def __init__(self) -> None:
        self.steps = MAX_VALIDATION_STEPS
        self.cpu_deadline = time.thread_time() + MAX_VALIDATION_CPU_SECONDS


_budget: contextvars.ContextVar[_Budget] = contextvars.ContextVar("schema_budget")


def _charge(steps: int) -> None:
    budget = _budget.get()
    budget.steps -= steps
    if budget.steps < 0:
        raise SchemaRefused(
            f"Invalid schema: validating its defaults takes more than {MAX_VALIDATION_STEPS} steps; simplify the schema"
        )
    if time.thread_time() > budget.cpu_deadline:
        raise SchemaRefused(
            f"Invalid schema: validating its defaults takes more than {MAX_VALIDATION_CPU_SECONDS * 1000:g} ms; "
            "simplify the schema"
        )


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not compile_pattern(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(validator: Any, patterns: dict[str, Any], instance: Any, schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        regex = compile_pattern(pattern)
        for name, value in instance.items():
            _charge(1)
            if regex.search(name):
                yield from validator.descend(value, subschema, path=name, schema_path=pattern)


def _additional_properties(validator: Any, additional: Any, instance: Any, schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    declared = schema.get("properties", {})
    patterns = [compile_pattern(p) for p in schema.get("patternProperties", {})]
    _charge(len(instance) * (1 + len(patterns)))
    extras = [name for name in instance if name not in declared and not any(p.search(name) for p in patterns)]
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        names = ", ".join(repr(extra) for extra in extras)
        if patterns:
            regexes = ", ".join(repr(p) for p in sorted(schema["patternProperties"]))
            verb = "does" if len(extras) == 1 else "do"
            yield ValidationError(f"{names} {verb} not match any of the regexes: {regexes}")
        else:
            verb = "was" if len(extras) == 1 else "were"
            yield ValidationError(f"Additional properties are not allowed ({names} {verb} unexpected)")


def _canonical(value: Any) -> Any:
    """A hashable form in which two values are equal exactly when JSON Schema calls them equal."""
    if isinstance(value, bool) or value is None:
        return ("literal", value)
    if isinstance(value, (int, float)):
        return ("number", value)
    if isinstance(value, str):
        return ("string", value)
    if isinstance(value, list):
        return ("array", tuple(_canonical(item) for item in value))
    if isinstance(value, dict):
        return ("object", frozenset((key, _canonical(item)) for key, item in value.items()))
    return ("other", repr(value))


def _unique_items(validator: Any, unique: bool, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if unique and validator.is_type(instance, "array"):
        _charge(len(instance))
        if len({_canonical(item) for item in instance}) != len(instance):
            yield ValidationError(f"{instance!r:.200} has non-unique elements")


def _counted(keyword: Callable[..., Any], cost: Callable[[Any], int]) -> Callable[..., Iterator[Any]]:
    def counted(validator: Any, value: Any, instance: Any, schema: Any) -> Iterator[Any]:
        _charge(1 + cost(value))
        yield from keyword(validator, value, instance, schema) or ()

    return counted


def _no_retrieval(uri: str) -> Resource[Any]:
    raise SchemaRefused(f"Invalid schema: $ref {uri!r} would be retrieved; references are never retrieved")


NO_RETRIEVAL: Registry[Any] = Registry(retrieve=_no_retrieval)  # type: ignore[call-arg]

_KEYWORDS: dict[str, Callable[..., Any]] = {
    **Draft202012Validator.VALIDATORS,
    "pattern": _pattern,
    "patternProperties": _pattern_properties,
    "additionalProperties": _additional_properties,
    "uniqueItems": _unique_items,
}
SafeValidator = validators.extend(  # type: ignore[no-untyped-call]
    Draft202012Validator,
    validators={
        name: _counted(keyword, (lambda v: len(v)) if name == "enum" else (lambda v: 0))
        for name, keyword in _KEYWORDS.items()
    },
)


def validation_errors(schema: Any, instance: Any) -> list[ValidationError]:
    """The errors of ``instance`` under a schema that passed :func:`check_schema`, within the budget."""
    token = _budget.set(_Budget())
    try:
        return list(SafeValidator(schema, registry=NO_RETRIEVAL).iter_errors(instance))
    finally:
        _budget.reset(token)
