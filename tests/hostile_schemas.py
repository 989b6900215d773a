"""Hypothesis strategies for hostile JSON Schemas and deeply nested JSON (shared by the unit and
end-to-end property tests)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

PATTERNS = ["^(a+)+$", "(a|a)*b", "(a)\\1", "(?=x)y", "(?<!a)b", "[", "^a{1,5}$", "\\d+", "\\p{L}+", "a{1000}{1000}"]
REFS = [
    "#",
    "#/$defs/a",
    "#/$defs/b",
    "#/definitions/nope",
    "#/properties",
    "#/properties/x/default",
    "#anchor",
    "http://127.0.0.1:9/s.json",
    "file:///dev/zero",
    "file:///etc/passwd",
    "other.json",
    "#/$defs/a/items",
]

json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)

schema_leaf = st.booleans() | st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["string", "integer", "number", "object", "array", "null", "boolean", "nope"])
        | st.sampled_from([["string", "null"], [], 3, ["x"]]),
        "pattern": st.sampled_from(PATTERNS) | st.text(max_size=8),
        "minLength": st.integers(-2, 5) | st.sampled_from(["x", 1.5, None]),
        "maxItems": st.integers(0, 3),
        "enum": st.lists(json_scalars, max_size=6) | st.sampled_from([3, "x"]),
        "const": json_values,
        "$ref": st.sampled_from(REFS) | st.text(max_size=10),
        "default": json_values | st.text(min_size=30, max_size=60).map(lambda s: "a" * 40 + "!"),
        "uniqueItems": st.booleans() | st.just("yes"),
        "multipleOf": st.sampled_from([0, 1e-308, 2, -1, 0.5]),
        "format": st.sampled_from(["email", "uri", "regex"]),
        "$id": st.just("http://127.0.0.1:9/"),
        "unevaluatedProperties": st.booleans(),
        "required": st.lists(st.text(max_size=3), max_size=3) | st.just("x"),
    },
)


def _compound(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries(
        {},
        optional={
            "properties": st.dictionaries(st.text(max_size=4), children, max_size=4),
            "items": children | st.lists(children, max_size=2),
            "anyOf": st.lists(children, max_size=3),
            "allOf": st.lists(children, min_size=1, max_size=3),
            "not": children,
            "$defs": st.dictionaries(st.sampled_from(["a", "b"]), children, max_size=2),
            "additionalProperties": children,
            "patternProperties": st.dictionaries(st.sampled_from(PATTERNS), children, max_size=2),
            "prefixItems": st.lists(children, max_size=2),
            "default": json_values,
            "$ref": st.sampled_from(REFS),
        },
    )


schemas = st.recursive(schema_leaf, _compound, max_leaves=25)
variables_schemas = schemas | st.dictionaries(st.sampled_from(["x", "y", "z"]), schemas, min_size=1, max_size=3).map(
    lambda props: {"properties": props}
)


def nested(depth: int, leaf: Any = 1) -> Any:
    """A value nesting `depth` levels, alternating objects and arrays."""
    value = leaf
    for level in range(depth):
        value = {"k": value} if level % 2 else [value]
    return value


nested_values = st.integers(1, 200).map(nested)
"""Values from 1 to 200 levels deep, around the nesting limit."""
