"""A request left pending by a replica that died is answered by a live one; one that keeps
going unanswered is dead-lettered; a request whose caller gave up is not executed."""

from __future__ import annotations

import asyncio
import json
import time

from client import WorkPoolClient
from replica.app import build_app, create_groups
from schemas import wire
from schemas.channels import Channels, Op
from tests.factories import wait_until


def fast_reclaim(settings):
    return settings.model_copy(
        update={"reclaim_idle_seconds": 0.3, "reclaim_every_seconds": 0.1, "foreman_enabled": False}
    )


async def test_request_taken_by_a_dead_replica_is_answered_by_a_live_one(settings, db, redis):
    channels = Channels(settings.prefix)
    stream = channels.rpc(Op.COUNT_WORK_POOLS)
    await create_groups(redis, [stream], channels.rpc_group)
    async with WorkPoolClient(redis_url=settings.redis_url, prefix=settings.prefix, timeout=10) as client:
        asked = asyncio.create_task(client._rpc.exchange(Op.COUNT_WORK_POOLS, {}))
        await wait_until(lambda: redis.xlen(stream))
        # a replica reads the request and dies before answering: it stays in its pending list
        taken = await redis.xreadgroup(channels.rpc_group, "dead-replica", {stream: ">"}, count=1)
        assert len(taken[0][1]) == 1
        async with build_app(fast_reclaim(settings), db=db):
            status, body, headers = await asyncio.wait_for(asked, 10)
    assert (status, body, headers["replica"]) == (200, 0, settings.consumer_name)
    pending = await redis.xpending(stream, channels.rpc_group)
    assert pending["pending"] == 0


async def test_an_entry_never_answered_goes_to_the_dead_letter_stream(settings, db, redis):
    channels = Channels(settings.prefix)
    stream = channels.rpc(Op.COUNT_WORK_POOLS)
    await create_groups(redis, [stream], channels.rpc_group)
    envelope = wire.encode({}, {"correlation_id": "c1", "reply_to": "nowhere", "deliveries": "3"})
    await redis.xadd(stream, {wire.DATA_FIELD: envelope})
    await redis.xreadgroup(channels.rpc_group, "dead-replica", {stream: ">"}, count=1)
    async with build_app(fast_reclaim(settings), db=db):
        dead = await wait_until(lambda: redis.xrange(channels.dead), timeout=5)
    [(_, fields)] = dead
    assert fields[b"stream"].decode() == stream
    assert fields[b"reason"] == b"not answered after 3 deliveries"
    assert json.loads(fields[wire.DATA_FIELD.encode()])["headers"]["correlation_id"] == "c1"
    assert (await redis.xpending(stream, channels.rpc_group))["pending"] == 0


async def test_an_expired_request_is_acknowledged_without_being_executed(client, settings, redis):
    channels = Channels(settings.prefix)
    stream = channels.rpc(Op.CREATE_WORK_POOL)
    expired = wire.encode(
        {"name": "late"}, {"correlation_id": "c2", "reply_to": "nowhere", "deadline": f"{time.time() - 1:.3f}"}
    )
    # it entered five seconds ago (by the Redis clock), so its deadline lies after its entry and is trusted
    redis_now, _ = await redis.time()
    await redis.xadd(stream, {wire.DATA_FIELD: expired}, id=f"{(redis_now - 5) * 1000}-0")
    await client.create_work_pool({"name": "after", "type": "process"})  # same stream, served after it
    await wait_until(lambda: _all_acked(redis, stream, channels.rpc_group))
    assert [p.name for p in await client.read_work_pools()] == ["after"]


async def _all_acked(redis, stream, group):
    return (await redis.xpending(stream, group))["pending"] == 0
