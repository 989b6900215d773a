"""Flow runs as JSON, written straight from their rows: the poll's reply (docs/poll.md#result-items).

A poll hands out up to 200 runs, each a `FlowRun` of 35 fields. Validating every row into the
model and serialising the models again, after decoding its four JSONB columns only to encode
them again, was a third of the replica's own work per poll. Here the reply is written once from
the rows: the JSONB columns are read as their JSON text and copied, the other columns are
written by their column type, and the fields workpools does not store are constants. The shape
is `FlowRun`'s, field by field in its order (the field list, the constants and the column kinds
are taken from the model and the table, not repeated here); tests/unit/test_flow_runs_json.py
checks it against pydantic's own serialisation.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from pydantic_core import to_json
from sqlalchemy import BigInteger, DateTime, Integer, Text, Uuid
from sqlalchemy.dialects.postgresql import JSONB

from schemas.flow_runs import FlowRun
from services.tables import flow_run

Encoder = Callable[[Any], str]
_string: Callable[[str], str] = json.encoder.encode_basestring


def _uuid(value: UUID | None) -> str:
    return "null" if value is None else f'"{value}"'


def _datetime(value: datetime | None) -> str:
    """As pydantic writes a UTC datetime (`2026-01-02T03:04:05.123456Z`); asyncpg reads
    timestamptz in UTC."""
    if value is None:
        return "null"
    if value.tzinfo is None:
        return f'"{value.isoformat()}Z"'
    if value.utcoffset():
        value = value.astimezone(UTC)
    return f'"{value.isoformat()[:-6]}Z"'  # without its "+00:00"


def _text(value: str | None) -> str:
    return "null" if value is None else _string(value)


def _integer(value: int | None) -> str:
    return "null" if value is None else str(int(value))


def _json_text(value: str | None) -> str:
    """A JSONB column read as text (`CAST(... AS text)`): already JSON."""
    return "null" if value is None else value


def _kind(column: Any) -> Encoder:
    kind = column.type
    if isinstance(kind, JSONB):
        return _json_text
    if isinstance(kind, Uuid):
        return _uuid
    if isinstance(kind, DateTime):
        return _datetime
    if isinstance(kind, (Integer, BigInteger)):
        return _integer
    if isinstance(kind, Text):
        return _text
    raise TypeError(f"no JSON writer for column {column.name} of type {kind}")


def _template(
    model_fields: Sequence[str], encoders: Mapping[str, Encoder], constants: Mapping[str, str]
) -> tuple[str, tuple[tuple[str, Encoder], ...]]:
    """`{"a":%s,"b":<constant>,...}` in the model's field order, and (column, writer) per `%s`."""
    parts, columns = [], []
    for name in model_fields:
        if name in encoders:
            parts.append(f"{_string(name)}:%s")
            columns.append((name, encoders[name]))
        else:
            parts.append(f"{_string(name)}:{constants[name]}".replace("%", "%%"))
    return "{" + ",".join(parts) + "}", tuple(columns)


# A poll's runs have no `state` (docs/poll.md#result-items): it stays at its default, null.
_STORED = {name: _kind(flow_run.c[name]) for name in FlowRun.model_fields if name in flow_run.c}
_CONSTANTS = {
    name: to_json(field.get_default(call_default_factory=True)).decode()
    for name, field in FlowRun.model_fields.items()
    if name not in _STORED
}
FLOW_RUN_TEMPLATE, FLOW_RUN_COLUMNS = _template(list(FlowRun.model_fields), _STORED, _CONSTANTS)

RUN_COLUMNS_SQL = ", ".join(
    f"CAST({{table}}.{name} AS text) AS {name}" if isinstance(flow_run.c[name].type, JSONB) else f"{{table}}.{name}"
    for name in _STORED
)
"""The columns the JSON is written from, `{table}` to be filled in with the alias the runs go by
in the statement (JSONB as its text)."""


def flow_run_json(row: Mapping[str, Any], writers: Sequence[tuple[str, Encoder]] = FLOW_RUN_COLUMNS) -> str:
    """One run as `FlowRun` JSON, from a row with `RUN_COLUMNS_SQL`'s columns."""
    return FLOW_RUN_TEMPLATE % tuple([write(row[name]) for name, write in writers])


def worker_flow_runs_json(work_pool_id: UUID, rows: Sequence[Mapping[str, Any]], leased: bool) -> bytes:
    """A poll's reply, `list[WorkerFlowRun]` as JSON; with `leased`, each row's lease (claim mode:
    columns `lease_owner`, `lease_token`, `lease_expires`)."""
    # Datetimes are the dearest values to write, and a reply repeats many of them: a run not
    # yet changed has `updated` = `created`, one not rescheduled `expected_start_time` =
    # `next_scheduled_start_time`, and runs created together share their times.
    dates: dict[datetime | None, str] = {}

    def date(value: datetime | None) -> str:
        text = dates.get(value)
        if text is None:
            text = dates[value] = _datetime(value)
        return text

    writers = [(name, date if write is _datetime else write) for name, write in FLOW_RUN_COLUMNS]
    pool = _uuid(work_pool_id)
    items = []
    for row in rows:
        lease = (
            f'{{"owner":{_text(row["lease_owner"])},"token":{_integer(row["lease_token"])},'
            f'"expires":{date(row["lease_expires"])}}}'
            if leased
            else "null"
        )
        items.append(
            f'{{"work_pool_id":{pool},"work_queue_id":{_uuid(row["work_queue_id"])},'
            f'"flow_run":{flow_run_json(row, writers)},"lease":{lease}}}'
        )
    return ("[" + ",".join(items) + "]").encode()
