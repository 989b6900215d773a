"""A replica keeps fresh every request it holds — those its handlers work on and those read
ahead that wait for a free handler — so no reclaimer takes a request from a live replica, and a
full connection pool is answered 503."""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlalchemy import text

from client import WorkPoolClient
from schemas import wire
from schemas.channels import Channels, Op
from services.db import Database, DbTimeouts
from services.errors import Unavailable
from tests.factories import wait_until


@pytest.fixture
def db_timeouts():
    """Requests here wait on a held lock for several seconds: longer than the default lock timeout."""
    return DbTimeouts(statement=30, lock=30)


@pytest.fixture
def settings(settings):
    """Two handlers per stream, so requests queue behind held ones; a fast reclaimer."""
    return settings.model_copy(update={"rpc_concurrency": 2, "reclaim_idle_seconds": 1.0, "reclaim_every_seconds": 0.2})


async def test_requests_queued_behind_slow_ones_are_not_reclaimed(client, settings, db, redis):
    await client.create_work_pool({"name": "held", "type": "process"})
    channels = Channels(settings.prefix)
    async with db.engine.connect() as blocker:
        transaction = await blocker.begin()
        await blocker.execute(text("SELECT id FROM work_pool WHERE name = 'held' FOR UPDATE"))
        calls = [asyncio.create_task(client.create_work_queue("held", {"name": f"q{i}"})) for i in range(6)]
        # Requests wait on the lock, or in memory for a handler, for 4 reclaim periods.
        await wait_until(lambda: _pending(redis, channels, 3), timeout=5)  # 2 handled, more read ahead
        done, _ = await asyncio.wait(calls, timeout=4)
        assert done == set()
        await transaction.rollback()
    queues = await asyncio.gather(*calls)
    assert sorted(q.name for q in queues) == [f"q{i}" for i in range(6)]
    entries = await redis.xrange(channels.rpc(Op.CREATE_WORK_QUEUE))
    headers = [json.loads(fields[wire.DATA_FIELD.encode()])["headers"] for _, fields in entries]
    assert len(headers) == 6 and not any("deliveries" in h for h in headers)  # none taken over
    assert await redis.xlen(channels.dead) == 0
    names = [q.name for q in await client.read_work_queues("held")]
    assert sorted(names) == ["default", *(f"q{i}" for i in range(6))]


async def _pending(redis, channels: Channels, count: int) -> bool:
    summary = await redis.xpending(channels.rpc(Op.CREATE_WORK_QUEUE), channels.rpc_group)
    return summary["pending"] >= count


async def test_a_full_connection_pool_is_a_503(database_url):
    db = Database(database_url, pool_size=1, pool_timeout=0.2)
    try:
        async with db.engine.connect(), db.engine.connect():  # both of its connections taken
            with pytest.raises(Unavailable):
                async with db.transaction():
                    pass
            with pytest.raises(Unavailable):  # a read's SQLAlchemy statement: the same pool
                async with db.read() as tx:
                    await tx.execute(text("SELECT 1"))
    finally:
        await db.dispose()


async def test_a_failure_after_the_commit_does_not_undo_the_reply(client, db, settings):
    async def broken(tx):
        raise ConnectionError("Redis went away after the commit")

    announce, db.after_commit = db.after_commit, broken
    try:
        pool = await client.create_work_pool({"name": "committed", "type": "process"})
    finally:
        db.after_commit = announce
    assert pool.name == "committed"
    # the event waited in the outbox; the sweep publishes it
    events = await wait_until(lambda: _created_events(client, "committed"), timeout=5)
    assert len(events) == 1


async def _created_events(client: WorkPoolClient, name: str):
    return [
        e
        for e in await client.read_events(count=1000)
        if e.event == "prefect.work-pool.created" and e.resource["prefect.resource.name"] == name
    ]
