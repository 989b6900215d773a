"""The outbox relay (real PostgreSQL and Redis): a commit's events are on the stream when the
commit's caller goes on, their rows deleted after; the sweep publishes only what was left past
the grace; an event whose row could not be deleted is published again (at least once)."""

from __future__ import annotations

import asyncio
import json

from redis.asyncio import Redis
from sqlalchemy import func, select

from replica.outbox import EventRelay
from schemas.channels import Channels
from schemas.work_pools import WorkPoolCreate
from services import work_pools
from services.db import Database, Tx
from services.tables import event_outbox
from tests.factories import wait_until

POOL_EVENTS = 3  # a pool's: created, its default queue created, pool not-ready


def relay_after_commit(db: Database, relay: EventRelay) -> None:
    async def announce(tx: Tx) -> None:
        await relay.publish(tx.events)

    db.after_commit = announce


async def test_a_commit_appends_its_own_events_before_it_returns_and_deletes_their_rows(db, redis: Redis, prefix):
    stream = Channels(prefix).events
    relay = EventRelay(db, redis, stream, maxlen=10_000, grace_seconds=60)
    relay_after_commit(db, relay)
    names = [f"pool-{k}" for k in range(20)]

    async def create(name: str) -> int:
        await work_pools.create_work_pool(db, WorkPoolCreate(name=name, type="process"))
        return await redis.xlen(stream)

    seen = await asyncio.gather(*(create(name) for name in names))  # concurrent commits share appends
    assert min(seen) >= POOL_EVENTS and max(seen) == len(names) * POOL_EVENTS
    await relay.drain()
    assert await _outbox_size(db) == 0
    assert await relay.sweep() == 0
    published = await _published(redis, stream)
    assert len(published) == len(set(published)) == len(names) * POOL_EVENTS
    created = {e["resource"]["prefect.resource.name"] for e in published.values() if e["event"].endswith("created")}
    assert set(names) <= created


async def test_the_sweep_publishes_only_events_left_past_the_grace(db, redis: Redis, prefix):
    stream = Channels(prefix).events
    relay = EventRelay(db, redis, stream, maxlen=10_000, grace_seconds=1.0)
    # no relay after the commit: the events stay in the outbox, as a replica that died leaves them
    await work_pools.create_work_pool(db, WorkPoolCreate(name="left", type="process"))
    assert await relay.sweep() == 0  # fresh: still their own replica's to publish
    assert await redis.xlen(stream) == 0

    swept = await wait_until(relay.sweep, timeout=5)
    assert swept == POOL_EVENTS and await redis.xlen(stream) == POOL_EVENTS
    assert await _outbox_size(db) == 0


async def test_an_event_whose_row_could_not_be_deleted_is_published_again(db, redis: Redis, prefix):
    stream = Channels(prefix).events
    relay = EventRelay(db, redis, stream, maxlen=10_000, grace_seconds=0.5)
    relay_after_commit(db, relay)

    async def lost(ids):
        raise ConnectionError("PostgreSQL went away after the commit")

    db.forget_events = lost  # type: ignore[method-assign]
    await work_pools.create_work_pool(db, WorkPoolCreate(name="twice", type="process"))
    await relay.drain()
    first = await _published(redis, stream)
    assert len(first) == POOL_EVENTS and await _outbox_size(db) == POOL_EVENTS

    # each event is swept once its grace has passed: they may come over several sweeps
    swept = [0]

    async def all_swept() -> bool:
        swept[0] += await relay.sweep()
        return swept[0] >= POOL_EVENTS

    await wait_until(all_swept, timeout=5)
    assert swept[0] == POOL_EVENTS
    entries = await redis.xrange(stream)
    assert len(entries) == 2 * POOL_EVENTS  # at least once: each event twice, same id
    assert sorted(fields[b"id"].decode() for _, fields in entries) == sorted(list(first) * 2)
    assert await _outbox_size(db) == 0


async def _published(redis: Redis, stream: str) -> dict[str, dict]:
    return {fields[b"id"].decode(): json.loads(fields[b"event"]) for _, fields in await redis.xrange(stream)}


async def _outbox_size(db: Database) -> int:
    async with db.transaction() as tx:
        return int((await tx.execute(select(func.count()).select_from(event_outbox))).scalar_one())
