"""The poll's reply written from rows says what pydantic's serialisation of the models says."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID, uuid4

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.flow_runs import FlowRun
from schemas.scheduling import Lease, WorkerFlowRun
from services.flow_runs_json import FLOW_RUN_COLUMNS, RUN_COLUMNS_SQL, worker_flow_runs_json
from services.tables import flow_run

JSONB = ("empirical_policy", "parameters", "job_variables", "tags")


def a_row(**overrides: object) -> dict[str, object]:
    """A flow_run row as the poll's statement returns it: JSONB columns as their text."""
    now = datetime(2026, 12, 3, 21, 30, 5, 123456, tzinfo=UTC)
    row: dict[str, object] = {
        "id": uuid4(),
        "created": now,
        "updated": now + timedelta(seconds=1),
        "name": "run-1",
        "flow_id": uuid4(),
        "deployment_id": None,
        "work_queue_id": uuid4(),
        "work_queue_name": "q",
        "state_type": "SCHEDULED",
        "state_name": "Late",
        "state_id": uuid4(),
        "state_message": "ignored",
        "state_timestamp": now,
        "next_scheduled_start_time": now.replace(microsecond=0),
        "expected_start_time": None,
        "start_time": None,
        "end_time": None,
        "run_count": 2,
        "empirical_policy": '{"retries": 3, "retry_type": null}',
        "parameters": '{"x": [1, 2.5, "é\\n"], "nested": {"a": {"b": null}}}',
        "job_variables": "{}",
        "tags": '["a", "b"]',
        "lease_owner": "w-1",
        "lease_token": 7,
        "lease_expires": now + timedelta(seconds=30),
        "lease_seconds": 30.0,
        "queue_priority": 1,
    }
    return row | overrides


def by_pydantic(pool_id: UUID, rows: list[dict[str, object]], leased: bool) -> list[object]:
    models = []
    for row in rows:
        decoded = {k: (json.loads(v) if k in JSONB else v) for k, v in row.items()}  # type: ignore[arg-type]
        lease = Lease(owner=row["lease_owner"], token=row["lease_token"], expires=row["lease_expires"])  # type: ignore[arg-type]
        models.append(
            WorkerFlowRun(
                work_pool_id=pool_id,
                work_queue_id=row["work_queue_id"],  # type: ignore[arg-type]
                flow_run=FlowRun.model_validate(decoded),
                lease=lease if leased else None,
            ).model_dump(mode="json")
        )
    return models


def test_every_stored_field_of_the_model_is_written_from_its_column():
    written = {name for name, _ in FLOW_RUN_COLUMNS}
    assert written == {name for name in FlowRun.model_fields if name in flow_run.c}
    assert "state" not in written  # a poll's runs have no state (docs/poll.md#result-items)
    assert RUN_COLUMNS_SQL.format(table="r").count("CAST(r.") == len(JSONB)


def test_a_poll_reply_equals_pydantics():
    pool_id = uuid4()
    rows = [
        a_row(),
        a_row(name='quote " backslash \\ tab \t', work_queue_name=None, flow_id=None, state_id=None),
        a_row(next_scheduled_start_time=None, start_time=datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=2)))),
    ]
    for leased in (False, True):
        text = worker_flow_runs_json(pool_id, rows, leased)
        assert json.loads(text) == by_pydantic(pool_id, rows, leased)
        # and it reads back as the models
        assert [r.model_dump(mode="json") for r in map(WorkerFlowRun.model_validate, json.loads(text))] == (
            by_pydantic(pool_id, rows, leased)
        )
    assert worker_flow_runs_json(pool_id, [], False) == b"[]"


def test_datetimes_are_written_as_pydantic_writes_them():
    pool_id = uuid4()
    row = a_row(created=datetime(2026, 12, 3, 21, 30, 5, tzinfo=UTC))
    [item] = json.loads(worker_flow_runs_json(pool_id, [row], False))
    assert item["flow_run"]["created"] == "2026-12-03T21:30:05Z"
    assert item["flow_run"]["updated"] == "2026-12-03T21:30:06.123456Z"


@settings(max_examples=200, deadline=None)
@given(
    name=st.text(max_size=40),
    parameters=st.recursive(
        st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=10),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
        max_leaves=10,
    ),
    run_count=st.integers(0, 2**31 - 1),
    state_type=st.sampled_from(["SCHEDULED", "PENDING", "RUNNING", "COMPLETED"]),
)
def test_any_row_is_written_as_pydantic_writes_it(name, parameters, run_count, state_type):
    pool_id = uuid4()
    row = a_row(name=name, parameters=json.dumps({"p": parameters}), run_count=run_count, state_type=state_type)
    assert json.loads(worker_flow_runs_json(pool_id, [row], True)) == by_pydantic(pool_id, [row], True)
