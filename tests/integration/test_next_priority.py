"""A pool remembers the priority its next queue gets (`work_pool.next_priority`), so a create
into a gapless pool finds it from the pool row it locks (docs/priorities.md#concurrency). The
priorities handed out are always the rules' (`services.priorities`), whatever the pool went
through, and a remembered value that queues written by other means made stale is never used."""

import asyncio
import random
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import insert, select

from schemas.work_pools import WorkPoolCreate
from schemas.work_queues import WorkQueueCreate, WorkQueueUpdate
from services import work_pools, work_queues
from services.priorities import first_free_priority, rebalance
from services.tables import work_pool, work_queue


async def _state(db, pool_name: str) -> tuple[dict[str, int], int | None]:
    """The pool's priorities by queue name, and its `next_priority`."""
    async with db.engine.connect() as conn:
        pool = (await conn.execute(select(work_pool).where(work_pool.c.name == pool_name))).mappings().one()
        rows = await conn.execute(
            select(work_queue.c.name, work_queue.c.priority).where(work_queue.c.work_pool_id == pool["id"])
        )
        return {row.name: row.priority for row in rows}, pool["next_priority"]


def _consistent(priorities: dict[str, int], next_priority: int | None) -> bool:
    """Known only while the priorities are exactly 1..n, and then n + 1."""
    return next_priority is None or sorted(priorities.values()) == list(range(1, next_priority))


async def test_creates_advance_it_and_a_gap_makes_it_unknown_until_filled(db):
    await work_pools.create_work_pool(db, WorkPoolCreate(name="counted", type="process"))
    assert await _state(db, "counted") == ({"default": 1}, 2)

    for name in ("a", "b", "c"):
        await work_queues.create_work_queue(db, "counted", WorkQueueCreate(name=name))
    assert await _state(db, "counted") == ({"default": 1, "a": 2, "b": 3, "c": 4}, 5)

    await work_queues.delete_work_queue(db, "counted", "c")  # the last: still gapless
    assert await _state(db, "counted") == ({"default": 1, "a": 2, "b": 3}, 4)

    await work_queues.delete_work_queue(db, "counted", "a")  # a gap at 2
    assert await _state(db, "counted") == ({"default": 1, "b": 3}, None)

    filled = await work_queues.create_work_queue(db, "counted", WorkQueueCreate(name="d"))
    assert filled.priority == 2
    assert await _state(db, "counted") == ({"default": 1, "d": 2, "b": 3}, 4)

    await work_queues.update_work_queue(db, "counted", "default", WorkQueueUpdate(priority=5))
    assert await _state(db, "counted") == ({"d": 2, "b": 3, "default": 5}, None)

    gap = await work_queues.create_work_queue(db, "counted", WorkQueueCreate(name="e"))
    assert gap.priority == 1
    assert await _state(db, "counted") == ({"e": 1, "d": 2, "b": 3, "default": 5}, None)


async def test_a_priority_asked_for_is_placed_and_the_next_create_finds_the_first_free(db):
    await work_pools.create_work_pool(db, WorkPoolCreate(name="asked", type="process"))

    placed = await work_queues.create_work_queue(db, "asked", WorkQueueCreate(name="first", priority=1))
    after = await work_queues.create_work_queue(db, "asked", WorkQueueCreate(name="after"))

    assert (placed.priority, after.priority) == (1, 3)
    assert await _state(db, "asked") == ({"first": 1, "default": 2, "after": 3}, 4)


async def test_queues_written_by_other_means_are_never_given_a_taken_priority(db):
    pool = await work_pools.create_work_pool(db, WorkPoolCreate(name="seeded", type="process"))
    async with db.engine.begin() as conn:  # as a bulk seed would: the pool row is not told
        await conn.execute(
            insert(work_queue),
            [
                {
                    "id": uuid.uuid4(),
                    "created": datetime.now(UTC),
                    "updated": datetime.now(UTC),
                    "work_pool_id": pool.id,
                    "name": f"s{p}",
                    "priority": p,
                    "is_paused": False,
                }
                for p in range(2, 6)
            ],
        )
    assert (await _state(db, "seeded"))[1] == 2  # stale

    queue = await work_queues.create_work_queue(db, "seeded", WorkQueueCreate(name="new"))

    assert queue.priority == 6
    priorities, next_priority = await _state(db, "seeded")
    assert sorted(priorities.values()) == [1, 2, 3, 4, 5, 6]
    assert next_priority == 7


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_any_sequence_of_changes_hands_out_the_rules_priorities(db, seed):
    """Creates with and without a priority, priority updates and deletes, at random, against
    the rules applied to a model of the pool; after every step the remembered value is either
    unknown or right."""
    rng = random.Random(seed)
    await work_pools.create_work_pool(db, WorkPoolCreate(name="random", type="process"))
    model = {"default": 1}
    for step in range(40):
        action = rng.choice(["create", "create", "create", "create_at", "move", "delete"])
        if action == "create":
            name = f"q{step}"
            created = await work_queues.create_work_queue(db, "random", WorkQueueCreate(name=name))
            model[name] = first_free_priority(list(model.values()))
            assert created.priority == model[name]
        elif action in ("create_at", "move"):
            name = f"q{step}" if action == "create_at" else rng.choice(sorted(model))
            priority = rng.randint(1, len(model) + 3)
            if action == "create_at":
                await work_queues.create_work_queue(db, "random", WorkQueueCreate(name=name, priority=priority))
            else:
                await work_queues.update_work_queue(db, "random", name, WorkQueueUpdate(priority=priority))
            model[name] = priority
            model.update(rebalance(list(model.items()), name))
        elif len(model) > 1:
            name = rng.choice(sorted(set(model) - {"default"}))
            await work_queues.delete_work_queue(db, "random", name)
            del model[name]
        priorities, next_priority = await _state(db, "random")
        assert priorities == model, f"step {step}: {action}"
        assert _consistent(priorities, next_priority), f"step {step}: {action}, next {next_priority}"


async def test_concurrent_creates_and_deletes_keep_it_right(db):
    await work_pools.create_work_pool(db, WorkPoolCreate(name="busy", type="process"))
    for name in ("x", "y"):
        await work_queues.create_work_queue(db, "busy", WorkQueueCreate(name=name))

    await asyncio.gather(
        work_queues.delete_work_queue(db, "busy", "x"),
        *(work_queues.create_work_queue(db, "busy", WorkQueueCreate(name=f"c{i}")) for i in range(12)),
        work_queues.delete_work_queue(db, "busy", "y"),
    )

    priorities, next_priority = await _state(db, "busy")
    assert len(priorities) == 13
    assert len(set(priorities.values())) == 13
    assert _consistent(priorities, next_priority)
    after = await work_queues.create_work_queue(db, "busy", WorkQueueCreate(name="after"))
    assert after.priority == first_free_priority(list(priorities.values()))
