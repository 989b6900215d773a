"""How commands print: Rich tables for people, JSON for programs, messages, waits and exit codes.

JSON is the models' own serialization (`model_dump(mode="json")`): `-o json` prints one object,
or an array for a list; `-o jsonl` prints one object per line. Only the objects go to stdout;
messages meant for people go to stdout in table mode and are left out otherwise; errors,
warnings and spinners go to stderr, so a program reading stdout never sees them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import datetime
from enum import Enum, IntEnum, StrEnum
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table
from rich.text import Text

M = TypeVar("M", bound=BaseModel)


class Output(StrEnum):
    table = "table"
    json = "json"
    jsonl = "jsonl"


OutputOpt = Annotated[
    Output,
    typer.Option(
        "--output", "-o", case_sensitive=False, help="table (for people), json or jsonl (the objects' own JSON)."
    ),
]


class ExitCode(IntEnum):
    """The `workpools` command's exit statuses (documented in the README)."""

    OK = 0
    REFUSED = 1
    """Not found, already exists, forbidden, invalid input, or a state change not accepted."""
    USAGE = 2
    """Wrong command line (unknown option, missing argument, unreadable file)."""
    UNREACHABLE = 3
    """Redis or PostgreSQL cannot be reached, Redis refused the credentials, or no replica
    answered in time."""
    SERVICE_ERROR = 4
    """The service answered with an error of its own (503: its database is down; 500)."""
    INTERRUPTED = 130


def stdout() -> Console:
    return Console(highlight=False, soft_wrap=True)


def stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def emit(model: BaseModel, output: Output, table: Callable[[], Table]) -> None:
    """One object: its table, or its JSON."""
    if output is Output.table:
        stdout().print(table())
    elif output is Output.json:
        typer.echo(json.dumps(model.model_dump(mode="json"), indent=2))
    else:
        typer.echo(model.model_dump_json())


def emit_list(models: Sequence[M], output: Output, table: Callable[[Sequence[M]], Table], empty: str) -> None:
    """A list: a table (or `empty` when there is nothing), a JSON array, or JSON lines."""
    if output is Output.table:
        if models:
            stdout().print(table(models))
        else:
            say(empty, "dim")
    elif output is Output.json:
        typer.echo(json.dumps([model.model_dump(mode="json") for model in models], indent=2))
    else:
        for model in models:
            typer.echo(model.model_dump_json())


def fields_table(model: BaseModel, title: str) -> Table:
    """Every field of one object, one row each."""
    table = Table("Field", "Value", title=cell(title))
    for field in type(model).model_fields:
        table.add_row(field, cell(getattr(model, field)))
    return table


def cell(value: Any, missing: str = "-") -> Text:
    """A value as plain table text (never read as Rich markup: names may contain `[`)."""
    return Text(missing if value is None else _text(value))


def _text(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, dict | list):
        return json.dumps(value, indent=2)
    return str(value)


def say(message: str, style: str | None = None, output: Output = Output.table) -> None:
    """A message for people: on stdout in table mode, left out when stdout carries JSON."""
    if output is Output.table:
        stdout().print(message, style=style, markup=False)


def warn(message: str) -> None:
    stderr().print(message, style="yellow", markup=False)


def fail(message: str, code: ExitCode = ExitCode.REFUSED) -> NoReturn:
    """Print `message` in red on stderr and exit with `code`."""
    stderr().print(message, style="red", markup=False)
    raise typer.Exit(int(code))


@contextmanager
def waiting(message: str) -> Iterator[None]:
    """A spinner on stderr while something waits, shown only to a person at a terminal."""
    console = stderr()
    with console.status(message) if console.is_terminal else nullcontext():
        yield


def describe(detail: Any) -> str:
    """A reply's detail as text; validation errors one per line, as `field: message`."""
    if not isinstance(detail, list):
        return str(detail)
    lines = []
    for error in detail:
        if isinstance(error, dict) and "msg" in error:
            where = ".".join(str(part) for part in error.get("loc", ()))
            lines.append(f"{where}: {error['msg']}" if where else str(error["msg"]))
        else:
            lines.append(str(error))
    return "\n".join(lines)
