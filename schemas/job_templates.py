"""Prefect's `base_job_template` rules that need only the standard library: structure and filling."""

from __future__ import annotations

import copy
import re
from typing import Any

PLACEHOLDER_RE = re.compile(r"{{\s*([\w.\-\[\]$]+)\s*}}")

MISSING_KEYS_MSG = "The `base_job_template` must contain both a `job_configuration` key and a `variables` key."
NOT_OBJECT_MSG = "The `base_job_template` must be a JSON object."
UNDECLARED_MSG = (
    "The variables specified in the job configuration template must be present as properties "
    "in the variables schema. Your job configuration uses the following undeclared variable(s): "
)


def placeholders(value: Any) -> set[str]:
    """Return the placeholder names found in the strings of ``value`` (dict values, lists)."""
    if isinstance(value, str):
        return set(PLACEHOLDER_RE.findall(value))
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return set().union(*(placeholders(item) for item in value))
    return set()


def validate_base_job_template(template: Any) -> None:
    """Check the template's structure; raise ``ValueError`` with Prefect's messages."""
    if not isinstance(template, dict):
        raise ValueError(NOT_OBJECT_MSG)
    if template == {}:
        return
    job_configuration = template.get("job_configuration")
    variables = template.get("variables")
    if not (job_configuration and variables):
        raise ValueError(MISSING_KEYS_MSG)
    properties = variables.get("properties") if isinstance(variables, dict) else None
    declared = set(properties) if isinstance(properties, dict) else set()
    undeclared = placeholders(job_configuration) - declared
    if undeclared:
        raise ValueError(UNDECLARED_MSG + " ,".join(sorted(undeclared)) + ".")


def _fill(value: Any, values: dict[str, Any]) -> Any:
    if isinstance(value, str):
        whole = PLACEHOLDER_RE.fullmatch(value)
        if whole:
            return copy.deepcopy(values.get(whole.group(1)))

        def text(match: re.Match[str]) -> str:
            found = values.get(match.group(1))
            return "" if found is None else str(found)

        return PLACEHOLDER_RE.sub(text, value)
    if isinstance(value, dict):
        return {key: _fill(item, values) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_fill(item, values) for item in value]
    return copy.deepcopy(value)


def fill_template(job_configuration: Any, values: dict[str, Any]) -> Any:
    """Return a deep copy of ``job_configuration`` with placeholders replaced from ``values``.

    A string that is exactly one placeholder becomes the raw value (None if missing);
    placeholders inside longer strings become ``str(value)`` ("" if None/missing).
    """
    return _fill(job_configuration, values)
