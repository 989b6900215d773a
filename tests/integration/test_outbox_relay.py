"""The outbox relay: a commit's flush returns only once its events are on the stream, even while
the periodic sweep is running beside it (real PostgreSQL and Redis)."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from replica.outbox import EventRelay
from schemas.channels import Channels
from schemas.work_pools import WorkPoolCreate
from services import work_pools


async def test_a_flush_after_a_commit_waits_for_a_sweep_that_took_its_events(db, redis: Redis, prefix: str) -> None:
    stream = Channels(prefix).events
    relay = EventRelay(db, redis, stream, maxlen=10_000)
    seen_at_return: list[int] = []
    expected = 0
    for round_ in range(20):
        # events in the outbox (no relay hooked to the commit: they wait for a flush)
        await work_pools.create_work_pool(db, WorkPoolCreate(name=f"pool-{round_}", type="process"))
        expected = await _outbox_size(db) + await redis.xlen(stream)

        async def committed() -> None:
            await relay.flush_committed()
            seen_at_return.append(await redis.xlen(stream))

        # the sweep starts first and takes the rows; the commit's flush must not return before
        # the sweep has published them
        await asyncio.gather(relay.sweep(), committed())
        assert seen_at_return[-1] == expected, f"round {round_}: returned before its events were published"
    assert expected == 20 * 3  # each pool: created, its default queue created, pool not-ready


async def _outbox_size(db) -> int:
    from sqlalchemy import func, select

    from services.tables import event_outbox

    async with db.transaction() as tx:
        return int((await tx.execute(select(func.count()).select_from(event_outbox))).scalar_one())
