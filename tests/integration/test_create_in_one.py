"""A queue create into a pool the replica has seen is one autocommit statement: the queue, the
pool's next priority, the request's record with its reply, and the queue's event, all or nothing
(`work_queues.CREATE_QUEUE_IN_ONE`). When it cannot do all of it, it does nothing, and the create
goes the usual way (a unit of work that records the request first) with the same outcome."""

import asyncio
import json
import uuid
from typing import Any

import asyncpg
import pytest
from sqlalchemy import func, select

from handlers.idempotency import answer_once
from schemas.channels import Op
from schemas.operations import OPERATIONS
from schemas.work_pools import WorkPoolCreate
from schemas.work_queues import WorkQueueCreate
from services import work_pools, work_queues
from services.db import Tx, connect_options
from services.errors import AlreadyExists
from services.idempotency import Logged
from services.tables import event_outbox, request_log, work_pool, work_queue
from tests.factories import wait_until

CREATE = OPERATIONS[Op.CREATE_WORK_QUEUE]


def _logged(request_id: str) -> Logged:
    return Logged(request_id, CREATE.op, CREATE.status, CREATE.dump_reply)


async def _answer(db, pool: str, data: WorkQueueCreate, request_id: str) -> tuple[int, Any]:
    """A create as a replica answers it: in one statement when it can, else the usual way."""
    response = await answer_once(
        db,
        request_id,
        CREATE,
        lambda: work_queues.create_work_queue(db, pool, data),
        lambda logged: work_queues.create_work_queue_in_one(db, pool, data, logged),
    )
    body = response.body
    return int(response.headers["status"]), json.loads(body) if isinstance(body, bytes) else body


async def _pool(db) -> str:
    """A pool with one queue made the usual way, so the replica knows the pool (its hint)."""
    name = f"in-one-{uuid.uuid4().hex[:8]}"
    await work_pools.create_work_pool(db, WorkPoolCreate(name=name, type="process"))
    await work_queues.create_work_queue(db, name, WorkQueueCreate(name="seen"))
    return name


async def _counts(db) -> tuple[int, ...]:
    """Queues, request records and outbox rows."""
    async with db.engine.connect() as conn:
        counts = [
            (await conn.execute(select(func.count()).select_from(table))).scalar_one()
            for table in (work_queue, request_log, event_outbox)
        ]
    return tuple(counts)


async def _next_priority(db, pool: str) -> int | None:
    async with db.engine.connect() as conn:
        return (await conn.execute(select(work_pool.c.next_priority).where(work_pool.c.name == pool))).scalar_one()


async def test_one_statement_writes_the_queue_its_record_and_its_event(db):
    announced: list[Tx] = []

    async def after_commit(tx: Tx) -> None:
        announced.append(tx)

    db.after_commit = after_commit
    pool = await _pool(db)
    announced.clear()
    queues, records, outbox = await _counts(db)

    data = WorkQueueCreate(name="fast", description="d", concurrency_limit=4, filter=None)
    reply = await work_queues.create_work_queue_in_one(db, pool, data, _logged("req-fast"))

    assert reply is not None
    sent = json.loads(reply)
    stored = (await work_queues.read_work_queue(db, pool, "fast")).model_dump(mode="json")
    assert sent == stored
    assert (sent["priority"], sent["work_pool_name"], sent["active_slots"], sent["status"]) == (3, pool, 0, "NOT_READY")
    assert await _next_priority(db, pool) == 4
    assert await _counts(db) == (queues + 1, records + 1, outbox + 1)
    async with db.engine.connect() as conn:
        record = (
            (await conn.execute(select(request_log).where(request_log.c.request_id == "req-fast"))).mappings().one()
        )
        row = (await conn.execute(select(event_outbox.c.event).order_by(event_outbox.c.seq.desc()))).first()
    assert (record["op"], record["status"], record["reply"]) == (Op.CREATE_WORK_QUEUE, 201, sent)

    # the event in the outbox is the one announced after the statement, with the pool as related
    [tx] = announced
    [event] = tx.events
    assert row is not None and row.event == event.model_dump(mode="json")
    assert event.event == "prefect.work-queue.created"
    assert event.resource["prefect.resource.id"] == f"prefect.work-queue.{sent['id']}"
    pool_row = await work_pools.read_work_pool(db, pool)
    assert event.related == [
        {
            "prefect.resource.id": f"prefect.work-pool.{pool_row.id}",
            "prefect.resource.name": pool,
            "prefect.work-pool.type": "process",
            "prefect.resource.role": "work-pool",
        }
    ]


async def test_a_repeat_gets_the_first_reply_and_the_queue_is_made_once(db):
    pool = await _pool(db)
    queues, records, _ = await _counts(db)

    first = await _answer(db, pool, WorkQueueCreate(name="once"), "req-once")
    again = await _answer(db, pool, WorkQueueCreate(name="once"), "req-once")

    assert first == again
    assert first[0] == 201 and first[1]["priority"] == 3
    assert (await _counts(db))[:2] == (queues + 1, records + 1)
    # the record is there: the one statement does nothing for it, the usual way replays it
    assert (
        await work_queues.create_work_queue_in_one(db, pool, WorkQueueCreate(name="once"), _logged("req-once")) is None
    )


async def test_what_it_cannot_do_it_leaves_to_the_usual_way(db):
    pool = await _pool(db)
    await work_pools.create_work_pool(db, WorkPoolCreate(name=f"{pool}-unseen", type="process"))
    before = await _counts(db)

    async def in_one(name: str, data: WorkQueueCreate, request_id: str) -> bytes | None:
        return await work_queues.create_work_queue_in_one(db, name, data, _logged(request_id))

    # a pool this replica never created a queue in; a priority asked for; a taken name
    assert await in_one(f"{pool}-unseen", WorkQueueCreate(name="x"), "r1") is None
    assert await in_one(pool, WorkQueueCreate(name="x", priority=1), "r2") is None
    assert await in_one(pool, WorkQueueCreate(name="seen"), "r3") is None
    assert await _counts(db) == before
    # a gap: the pool's next priority is unknown
    await work_queues.create_work_queue(db, pool, WorkQueueCreate(name="gap-maker"))
    await work_queues.delete_work_queue(db, pool, "seen")
    assert await _next_priority(db, pool) is None
    after_gap = await _counts(db)
    assert await in_one(pool, WorkQueueCreate(name="y"), "r4") is None
    assert await _counts(db) == after_gap

    # each goes the usual way, with the usual outcome
    assert (await _answer(db, pool, WorkQueueCreate(name="y"), "r4"))[1]["priority"] == 2
    with pytest.raises(AlreadyExists) as taken:
        await _answer(db, pool, WorkQueueCreate(name="y"), "r5")
    assert str(taken.value) == f"A work queue with this name already exists in work pool {pool!r}."


async def test_a_pool_made_anew_under_the_same_name_is_found_again(db):
    pool = await _pool(db)
    await work_pools.delete_work_pool(db, pool)
    await work_pools.create_work_pool(db, WorkPoolCreate(name=pool, type="kubernetes"))
    made = await work_pools.read_work_pool(db, pool)

    # the hint names the old pool: the statement finds no such pool and does nothing
    assert await work_queues.create_work_queue_in_one(db, pool, WorkQueueCreate(name="a"), _logged("s1")) is None
    status, body = await _answer(db, pool, WorkQueueCreate(name="a"), "s1")
    assert (status, body["work_pool_id"], body["priority"]) == (201, str(made.id), 2)
    # the usual way wrote the hint anew
    reply = await work_queues.create_work_queue_in_one(db, pool, WorkQueueCreate(name="b"), _logged("s2"))
    assert reply is not None and json.loads(reply)["work_pool_id"] == str(made.id)


async def test_a_repeat_racing_its_first_fails_on_the_record_and_acts_once(db):
    """The first delivery's record is written but not committed (its transaction still open):
    the one statement waits on the record's key, fails on it when the first commits, and
    leaves nothing behind; the repeat then gets the first's reply."""
    pool = await _pool(db)
    queues = (await _counts(db))[0]
    first = await asyncpg.connect(**connect_options(db.url))
    try:
        holding = first.transaction()
        await holding.start()
        await first.execute(
            "INSERT INTO request_log (request_id, op, created, status, reply) VALUES ($1, $2, now(), 201, $3)",
            "raced",
            Op.CREATE_WORK_QUEUE.value,
            '{"first": true}',
        )
        repeat = asyncio.create_task(
            work_queues.create_work_queue_in_one(db, pool, WorkQueueCreate(name="raced"), _logged("raced"))
        )

        async def waiting_on_the_record() -> bool:
            watcher = await asyncpg.connect(**connect_options(db.url))
            try:  # a connection of its own: inside a transaction, pg_stat_activity does not change
                waits = await watcher.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%request_log%'"
                )
            finally:
                await watcher.close()
            return waits == 1

        await wait_until(waiting_on_the_record, timeout=10)
        assert not repeat.done()
        await holding.commit()
        assert await asyncio.wait_for(repeat, 10) is None
    finally:
        await first.close()

    assert (await _counts(db))[0] == queues
    assert await _answer(db, pool, WorkQueueCreate(name="raced"), "raced") == (201, {"first": True})


async def test_concurrent_creates_get_unique_priorities_and_each_its_own_reply(db):
    pool = await _pool(db)
    answers = await asyncio.gather(*(_answer(db, pool, WorkQueueCreate(name=f"q{i}"), f"c{i}") for i in range(40)))

    assert {status for status, _ in answers} == {201}
    assert sorted(body["priority"] for _, body in answers) == list(range(3, 43))
    stored = {q.name: q.priority for q in await work_queues.read_work_queues(db, pool)}
    assert all(stored[body["name"]] == body["priority"] for _, body in answers)
    assert sorted(stored.values()) == list(range(1, 43))
    assert await _next_priority(db, pool) == 43
