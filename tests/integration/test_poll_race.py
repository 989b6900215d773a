"""Concurrent polls: SKIP LOCKED keeps overlapping polls apart; PENDING is won exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

from schemas.common import StateType
from schemas.flow_runs import FlowRunCreate, StateCreate
from schemas.work_pools import WorkPoolCreate
from schemas.work_queues import WorkQueueCreate
from services import flow_runs, scheduling, work_pools, work_queues
from services.scheduling import INTERNAL_CAP, SCHEDULED_RUNS


async def three_queues_of_five(db, now) -> tuple:
    pool = await work_pools.create_work_pool(db, WorkPoolCreate(name="race", type="process"))
    for name in ("q1", "q2", "q3"):
        await work_queues.create_work_queue(db, "race", WorkQueueCreate(name=name))
        for minutes in range(5):
            await flow_runs.create_flow_run(
                db,
                FlowRunCreate(
                    work_pool_name="race",
                    work_queue_name=name,
                    next_scheduled_start_time=now - timedelta(minutes=minutes),
                ),
            )
    return pool


def params(pool_id, limit):
    return {
        "pool_id": pool_id,
        "queue_ids": None,
        "after": None,
        "before": None,
        "limit": limit,
        "cap": INTERNAL_CAP,
        "claim": False,
        "now": datetime.now(UTC),
    }


async def test_overlapping_polls_never_return_the_same_run(db, clock):
    pool = await three_queues_of_five(db, clock())
    async with db.transaction() as held:  # a poll still in its transaction, holding its locks
        first = await held.fetch(SCHEDULED_RUNS, params(pool.id, 2))
        second, _ = await scheduling.get_scheduled_flow_runs(db, "race", limit=200)
    assert len(first) == 2
    # the first poll locked the 2 runs it took, not 2 per queue, nor 1,000: the others stay available
    assert len(second) == 13
    assert not {r["id"] for r in first} & {item.flow_run.id for item in second}


async def test_a_poll_locks_what_it_takes_in_priority_order_and_no_further(db, clock):
    pool = await three_queues_of_five(db, clock())
    async with db.transaction() as held:
        first = await held.fetch(SCHEDULED_RUNS, params(pool.id, 7))
        second, _ = await scheduling.get_scheduled_flow_runs(db, "race", limit=200)
    # q1's five and q2's first two; q2's other three and all of q3 stay free
    taken = Counter(row["work_queue_name"] for row in first)
    left = Counter(item.flow_run.work_queue_name for item in second)
    assert (taken, left) == (Counter(q1=5, q2=2), Counter(q2=3, q3=5))


async def test_racing_pollers_each_run_is_won_by_exactly_one_pending(db, clock):
    await three_queues_of_five(db, clock())

    async def worker() -> list:
        runs, _ = await scheduling.get_scheduled_flow_runs(db, "race", limit=5)
        results = []
        for item in runs:
            result = await flow_runs.set_flow_run_state(db, item.flow_run.id, StateCreate(type=StateType.PENDING))
            results.append((item.flow_run.id, result.status))
        return results

    rounds = await asyncio.gather(*(worker() for _ in range(16)))
    proposals = [p for r in rounds for p in r]
    accepted = Counter(run_id for run_id, status in proposals if status == "ACCEPT")
    assert accepted and max(accepted.values()) == 1
    aborted = sum(1 for _, status in proposals if status == "ABORT")
    assert aborted == len(proposals) - len(accepted)
    left, _ = await scheduling.get_scheduled_flow_runs(db, "race")
    assert len(left) == 15 - len(accepted)
