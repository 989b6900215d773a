"""A queue created without a priority gets its pool's first free one, found in the database
(docs/priorities.md): the same answer as the rule in `services.priorities`, gaps or none."""

import pytest
from sqlalchemy import update

from schemas.work_pools import WorkPoolCreate
from schemas.work_queues import WorkQueueCreate
from services import work_pools, work_queues
from services.priorities import first_free_priority
from services.tables import work_queue


@pytest.mark.parametrize(
    "priorities",
    [[1], [1, 2, 3], [1, 99], [2, 3], [1, 3, 4], [3, 1, 2, 7, 5], [5], list(range(1, 41)), [*range(1, 30), 31]],
)
async def test_the_first_free_priority_is_the_rules(db, priorities):
    pool = await work_pools.create_work_pool(db, WorkPoolCreate(name="gaps", type="process"))
    created = [await work_queues.create_work_queue(db, "gaps", WorkQueueCreate(name=f"q{i}")) for i in priorities[1:]]
    names = ["default", *(q.name for q in created)]
    async with db.transaction() as tx:  # the unique priority constraint is checked at commit
        for name, priority in zip(names, priorities, strict=True):
            await tx.execute(
                update(work_queue)
                .where(work_queue.c.work_pool_id == pool.id, work_queue.c.name == name)
                .values(priority=priority)
            )

    queue = await work_queues.create_work_queue(db, "gaps", WorkQueueCreate(name="new"))

    assert queue.priority == first_free_priority(priorities)
    assert (queue.work_pool_name, queue.active_slots, queue.status) == ("gaps", None, "NOT_READY")


async def test_a_created_queue_replies_as_it_reads(db):
    await work_pools.create_work_pool(db, WorkPoolCreate(name="reply", type="process"))
    data = WorkQueueCreate(name="limited", description="d", is_paused=True, concurrency_limit=3, filter={"tags": ["a"]})

    created = await work_queues.create_work_queue(db, "reply", data)

    assert created == await work_queues.read_work_queue(db, "reply", "limited")
    assert (created.priority, created.active_slots, created.status, created.is_paused) == (2, 0, "PAUSED", True)
