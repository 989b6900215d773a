"""Job-variable defaults validation (JSON Schema), performed when a work pool is created.

The variables schema comes from a tenant: it is checked by :mod:`services.safe_schemas` (local
references only, RE2 patterns, bounded size, depth and work) before it runs.
"""

from __future__ import annotations

import uuid
from typing import Any

from jsonschema.exceptions import best_match
from referencing.exceptions import Unresolvable

from services.safe_schemas import SchemaRefused, check_schema, validation_errors

DEFAULTS_PREFIX = "Validation failed for work pool's job variable defaults: "


class JobVariableDefaultsError(ValueError):
    """A work pool's job variable defaults (or its variables schema) are invalid."""


def _is_block_reference(value: Any) -> bool:
    """True for ``{"$ref": {"block_document_id": "<uuid>"}}``."""
    if not (isinstance(value, dict) and set(value) == {"$ref"}):
        return False
    ref = value["$ref"]
    if not (isinstance(ref, dict) and set(ref) == {"block_document_id"}):
        return False
    try:
        uuid.UUID(str(ref["block_document_id"]))
    except ValueError:
        return False
    return True


def _relax(schema: Any) -> Any:
    """Drop ``required`` everywhere and let every (now optional) typed property accept null."""
    if isinstance(schema, list):
        return [_relax(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    relaxed = {key: _relax(value) for key, value in schema.items() if key != "required"}
    properties = relaxed.get("properties")
    if isinstance(properties, dict):
        for prop in properties.values():
            if not isinstance(prop, dict):
                continue
            kind = prop.get("type")
            if isinstance(kind, str) and kind != "null":
                prop["type"] = [kind, "null"]
            elif isinstance(kind, list) and "null" not in kind:
                prop["type"] = [*kind, "null"]
    return relaxed


def check_variables_schema(template: Any) -> None:
    """Refuse a template whose variables schema is malformed or unsafe to run (see safe_schemas)."""
    variables = template.get("variables") if isinstance(template, dict) else None
    if not variables:
        return
    try:
        check_schema(variables)
    except SchemaRefused as exc:
        raise JobVariableDefaultsError(str(exc)) from exc


def validate_job_variable_defaults(template: Any) -> None:
    """Validate the variables schema and its property defaults (work-pool creation only)."""
    variables = template.get("variables") if isinstance(template, dict) else None
    if not variables:
        return
    check_variables_schema(template)
    properties = variables.get("properties") if isinstance(variables, dict) else None
    defaults = {
        name: prop["default"]
        for name, prop in (properties if isinstance(properties, dict) else {}).items()
        if isinstance(prop, dict) and "default" in prop and not _is_block_reference(prop["default"])
    }
    try:
        error = best_match(validation_errors(_relax(variables), defaults))
    except SchemaRefused as exc:
        raise JobVariableDefaultsError(str(exc)) from exc
    except Unresolvable as exc:  # never expected after check_variables_schema; still a 422, never a 500
        raise JobVariableDefaultsError(f"Invalid schema: unresolvable $ref ({exc})") from exc
    if error is None:
        return
    if error.path:
        where = "Validation failed for field '" + ".".join(str(p) for p in error.path) + "'."
    else:
        where = "Validation failed."
    raise JobVariableDefaultsError(f"{DEFAULTS_PREFIX}{where} Failure reason: {error.message}")
