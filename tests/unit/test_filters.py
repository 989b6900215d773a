"""Filters (docs/filters.md) as the SQL conditions they become, and the limit check, without a database."""

import time

import pytest
from sqlalchemy.dialects import postgresql

from schemas.work_pools import WorkPoolFilter
from schemas.work_queues import WorkQueueFilter
from schemas.workers import WorkerFilter
from services.errors import Invalid
from services.filters import MAX_QUERY_ARGUMENTS, check_limit, pool_condition, queue_condition, worker_condition


def sql(condition) -> str:
    return str(condition.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (None, "true"),
        ({}, "true"),  # no criteria: everything
        ({"name": None, "type": None}, "true"),  # null criteria impose nothing
        ({"name": {"any_": ["a", "b"]}}, "work_pool.name IN ('a', 'b')"),
        ({"name": {"any_": []}}, "work_pool.name IN (NULL) AND (1 != 1)"),  # an empty any_ matches nothing
        (
            {"name": {"any_": ["a"]}, "type": {"any_": ["process"]}},
            "work_pool.name IN ('a') AND work_pool.type IN ('process')",
        ),
        (
            {"operator": "or_", "name": {"any_": ["a"]}, "type": {"any_": ["process"]}},
            "work_pool.name IN ('a') OR work_pool.type IN ('process')",
        ),
    ],
)
def test_pool_filter(body, expected):
    assert sql(pool_condition(None if body is None else WorkPoolFilter.model_validate(body))) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, "true"),
        ({"name": {"any_": ["x"]}}, "work_queue.name IN ('x')"),
        # prefixes are case-insensitive and OR-ed; `_` and `%` stay wildcards, as in Prefect
        ({"name": {"startswith_": ["ab", "c_"]}}, "work_queue.name ILIKE 'ab%%' OR work_queue.name ILIKE 'c_%%'"),
        ({"name": {"startswith_": []}}, "false"),
        # any_ and startswith_ together are AND-ed
        (
            {"name": {"any_": ["abc"], "startswith_": ["ab"]}},
            "work_queue.name IN ('abc') AND work_queue.name ILIKE 'ab%%'",
        ),
    ],
)
def test_queue_filter(body, expected):
    assert sql(queue_condition(WorkQueueFilter.model_validate(body))) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, "true"),
        (
            {"last_heartbeat_time": {"before_": "2026-01-01T00:00:00Z", "after_": "2025-12-31T00:00:00+00:00"}},
            "worker.last_heartbeat_time <= '2026-01-01 00:00:00+00:00' "
            "AND worker.last_heartbeat_time >= '2025-12-31 00:00:00+00:00'",
        ),
        ({"status": {"any_": ["ONLINE"]}}, "worker.status IN ('ONLINE')"),
        ({"status": {"not_any_": []}}, "true"),  # an empty not_any_ is ignored
        (
            {"operator": "or_", "status": {"any_": ["ONLINE"], "not_any_": ["OFFLINE"]}},
            "worker.status IN ('ONLINE') OR (worker.status NOT IN ('OFFLINE'))",
        ),
    ],
)
def test_worker_filter(body, expected):
    assert sql(worker_condition(WorkerFilter.model_validate(body))) == expected


@pytest.mark.parametrize(("limit", "expected"), [(None, 200), (0, 0), (1, 1), (200, 200)])
def test_limit_defaults_to_and_stops_at_200(limit, expected):
    assert check_limit(limit) == expected


@pytest.mark.parametrize(
    ("limit", "detail"),
    [
        (-1, "Invalid limit: must be greater than or equal to 0."),
        (201, "Invalid limit: must be less than or equal to 200."),
    ],
)
def test_a_limit_out_of_range_is_invalid(limit, detail):
    with pytest.raises(Invalid) as raised:
        check_limit(limit)
    assert (raised.value.status, raised.value.detail) == (422, detail)


def test_more_name_prefixes_than_a_statement_takes_are_refused_before_any_sql_is_built():
    """Each prefix is one ILIKE argument; 40,000 of them took seconds of CPU to build and compile
    before PostgreSQL's limit refused the statement (a loaded replica answered after the
    client's 10 s). The same 422 now comes at once."""
    prefixes = [f"name-{i}" for i in range(MAX_QUERY_ARGUMENTS + 1)]
    started = time.process_time()
    with pytest.raises(Invalid) as refused:
        queue_condition(WorkQueueFilter.model_validate({"name": {"startswith_": prefixes}}))
    assert time.process_time() - started < 0.5
    assert str(refused.value) == "Invalid value: the number of query arguments cannot exceed 32767"
