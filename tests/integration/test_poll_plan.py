"""The read-only poll's plan on the read pool: one generic plan kept for every execution, time
bounds that stop the index scan instead of filtering what it reads, and a walk of the queues that
stops, rows locked, at the limit."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from schemas.flow_runs import FlowRunCreate
from schemas.work_pools import WorkPoolCreate
from schemas.work_queues import WorkQueueCreate
from services import flow_runs, scheduling, work_pools, work_queues
from services.scheduling import INTERNAL_CAP, SCHEDULED_RUNS

SCHEDULED = "ix_flow_run__scheduled"
TYPES = {
    "pool_id": "uuid",
    "queue_ids": "uuid[]",
    "after": "timestamptz",
    "before": "timestamptz",
    "limit": "int",
    "cap": "int",
    "claim": "bool",
}


async def a_pool_with_due_and_future_runs(db, now, future: int = 30):
    """Queues q1, q2, q3 (priorities 2, 3, 4), 5 runs due in each; q1 also `future` runs due
    from tomorrow on."""
    pool = await work_pools.create_work_pool(db, WorkPoolCreate(name="plan", type="process"))
    for name in ("q1", "q2", "q3"):
        await work_queues.create_work_queue(db, "plan", WorkQueueCreate(name=name))
        for minutes in range(5):
            due = now - timedelta(minutes=minutes)
            create = FlowRunCreate(work_pool_name="plan", work_queue_name=name, next_scheduled_start_time=due)
            await flow_runs.create_flow_run(db, create)
    for days in range(1, future + 1):
        due = now + timedelta(days=days)
        create = FlowRunCreate(work_pool_name="plan", work_queue_name="q1", next_scheduled_start_time=due)
        await flow_runs.create_flow_run(db, create)
    return pool


def poll_args(pool_id, *, before, limit) -> list[Any]:
    values = {
        "pool_id": pool_id,
        "queue_ids": None,
        "after": None,
        "before": before,
        "limit": limit,
        "cap": INTERNAL_CAP,
        "claim": False,
    }
    return [values[name] for name in SCHEDULED_RUNS.names]


async def explain(conn, args: list[Any]) -> dict[str, Any]:
    """The executed plan of the poll as the read pool's connection plans it (generic)."""
    types = ", ".join(TYPES[name] for name in SCHEDULED_RUNS.names)
    await conn.execute(f"PREPARE explained_poll({types}) AS {SCHEDULED_RUNS.sql}")
    try:  # EXECUTE takes no bound parameters: the values as literals
        literals = ", ".join("NULL" if value is None else f"'{value}'" for value in args)
        explained = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE explained_poll({literals})")
    finally:
        await conn.execute("DEALLOCATE explained_poll")
    plan: dict[str, Any] = explained[0]["Plan"]  # the read pool decodes JSON
    return plan


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def scans_run(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """The plan's scans of `ix_flow_run__scheduled` that ran at least once."""
    return [node for node in nodes(plan) if node.get("Index Name") == SCHEDULED and node["Actual Loops"]]


async def test_the_read_pool_keeps_one_generic_plan_for_the_poll(db, clock):
    pool = await a_pool_with_due_and_future_runs(db, clock(), future=0)
    async with db.read_connection() as conn:
        setting = await conn.fetchval("SHOW plan_cache_mode")
        counts = []
        for _ in range(7):  # PostgreSQL decides between plans after the fifth execution
            counts.append(len(await conn.fetch(SCHEDULED_RUNS.sql, *poll_args(pool.id, before=clock(), limit=4))))
        plans = await conn.fetchrow(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1", SCHEDULED_RUNS.sql
        )
    assert setting == "force_generic_plan"
    assert counts == [4] * 7
    assert (plans["generic_plans"], plans["custom_plans"]) == (7, 0)


async def test_time_bounds_stop_the_index_scan(db, clock):
    now = clock()
    pool = await a_pool_with_due_and_future_runs(db, now, future=30)
    async with db.read_connection() as conn:
        plan = await explain(conn, poll_args(pool.id, before=now - timedelta(hours=1), limit=10))
    # nothing is due an hour ago: the walk's scan of each queue (default, q1, q2, q3) reads no
    # row, q1's 30 future runs included, and counting slots reads no scheduled run either
    assert [
        (node["Actual Loops"], node["Actual Rows"], node.get("Rows Removed by Filter", 0)) for node in scans_run(plan)
    ] == [(4, 0, 0)]


async def test_the_walk_locks_the_runs_it_hands_out_and_stops(db, clock):
    now = clock()
    pool = await a_pool_with_due_and_future_runs(db, now, future=30)
    async with db.read_connection() as conn:
        plan = await explain(conn, poll_args(pool.id, before=now, limit=7))
    # the walk scans the default queue (no runs), q1 (its 5 due runs) and q2 (its first 2), and
    # stops: q3 is never scanned (test_poll_race: what it locks, and what it leaves free)
    assert [node["Actual Loops"] for node in scans_run(plan)] == [3]
    assert [node["Actual Loops"] for node in nodes(plan) if node["Node Type"] == "LockRows"] == [3]
    runs, _ = await scheduling.get_scheduled_flow_runs(db, "plan", scheduled_before=now, limit=7)
    assert [item.flow_run.work_queue_name for item in runs] == ["q1"] * 5 + ["q2"] * 2
    times = [item.flow_run.next_scheduled_start_time for item in runs]
    assert times[:5] == sorted(times[:5]) and times[5:] == sorted(times[5:])
