"""Reading what users give on the command line: JSON or YAML files, `KEY=VALUE` pairs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
import yaml


def read_document(path: Path, what: str) -> dict[str, Any]:
    """A JSON (or YAML, by its suffix) object from a file, `-` for stdin; a usage error otherwise."""
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        document = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise typer.BadParameter(f"{what} {path} is not valid {_kind(path)}: {exc}") from None
    if not isinstance(document, dict):
        raise typer.BadParameter(f"{what} {path} must hold an object, not {type(document).__name__}")
    return document


def _kind(path: Path) -> str:
    return "YAML" if path.suffix in (".yaml", ".yml") else "JSON"


def key_values(pairs: list[str] | None, what: str) -> dict[str, Any]:
    """`KEY=VALUE` pairs as a dict; a VALUE that reads as JSON is that JSON, else the text."""
    values: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{what} must look like KEY=VALUE, not {pair!r}")
        try:
            values[key] = json.loads(value)
        except ValueError:
            values[key] = value
    return values


def given(**fields: Any) -> dict[str, Any]:
    """The fields the user gave (so the service's defaults apply to the others)."""
    return {key: value for key, value in fields.items() if value is not None}
