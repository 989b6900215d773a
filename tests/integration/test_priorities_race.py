"""Concurrent queue creation in one pool must not hand out the same priority twice (docs/priorities.md#concurrency)."""

import asyncio

from sqlalchemy import select

from schemas.work_pools import WorkPoolCreate
from schemas.work_queues import WorkQueueCreate
from services import work_pools, work_queues
from services.tables import work_queue
from tests.factories import make_pool, make_queue


async def _priorities(db, pool_id) -> dict[str, int]:
    async with db.engine.connect() as conn:
        rows = await conn.execute(
            select(work_queue.c.name, work_queue.c.priority).where(work_queue.c.work_pool_id == pool_id)
        )
        return {row.name: row.priority for row in rows}


async def test_concurrent_creates_without_priority_get_distinct_priorities(db):
    pool = await work_pools.create_work_pool(db, WorkPoolCreate(**make_pool()))

    created = await asyncio.gather(
        *(work_queues.create_work_queue(db, pool.name, WorkQueueCreate(**make_queue())) for _ in range(20))
    )

    assert sorted(q.priority for q in created) == list(range(2, 22))
    stored = await _priorities(db, pool.id)
    assert len(stored) == 21
    assert stored["default"] == 1
    assert sorted(stored.values()) == list(range(1, 22))
    assert {q.name: q.priority for q in created} == {n: p for n, p in stored.items() if n != "default"}


async def test_concurrent_creates_with_and_without_priority_stay_unique(db):
    pool = await work_pools.create_work_pool(db, WorkPoolCreate(**make_pool()))

    await asyncio.gather(
        *(
            work_queues.create_work_queue(db, pool.name, WorkQueueCreate(**make_queue(priority=1 if i % 2 else None)))
            for i in range(20)
        )
    )

    stored = await _priorities(db, pool.id)
    assert len(stored) == 21
    assert len(set(stored.values())) == 21
    assert min(stored.values()) == 1


async def test_concurrent_creates_in_different_pools_do_not_block_each_other(db):
    pools = [await work_pools.create_work_pool(db, WorkPoolCreate(**make_pool())) for _ in range(3)]

    await asyncio.gather(
        *(
            work_queues.create_work_queue(db, pool.name, WorkQueueCreate(**make_queue()))
            for pool in pools
            for _ in range(5)
        )
    )

    for pool in pools:
        assert sorted((await _priorities(db, pool.id)).values()) == [1, 2, 3, 4, 5, 6]
