"""Bounded storage: request streams trimmed by what every group has read (a backlog is never
cut), consumers of replicas that are gone removed, idempotency records pruned by every replica
even with no foreman anywhere."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import insert, select

from replica.app import build_app, create_groups
from replica.housekeeping import remove_gone_consumers, trim_read_entries
from schemas import wire
from schemas.channels import Channels, Op
from services import idempotency
from services.tables import request_log
from tests.factories import wait_until


async def test_trimming_under_a_backlog_never_drops_an_unread_request(settings, db, redis, prefix):
    channels = Channels(prefix)
    stream = channels.rpc(Op.COUNT_WORK_POOLS)
    await create_groups(redis, channels.all_rpc_streams(), channels.rpc_group)
    reply_to = channels.reply(uuid.uuid4().hex)
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(reply_to)

    async def send(n: int, start: int) -> None:
        for i in range(start, start + n):
            message = wire.encode({}, {"correlation_id": str(i), "reply_to": reply_to})
            await redis.xadd(stream, {wire.DATA_FIELD: message})

    # a backlog nobody has read: trimming keeps all of it
    await send(300, 0)
    assert await trim_read_entries(redis, stream) == 0
    assert await redis.xlen(stream) == 300
    # one entry read by a replica that then died (pending): kept, and everything after it
    [[_, [(pending_id, _)]]] = await redis.xreadgroup(channels.rpc_group, "gone", {stream: ">"}, count=1)
    assert await trim_read_entries(redis, stream) == 0

    replies: set[str] = set()

    async def collect(n: int) -> bool:
        while (message := await pubsub.get_message(timeout=0.05)) is not None:
            replies.add(wire.decode(message["data"])[1]["correlation_id"])
        return len(replies) >= n

    quick = settings.model_copy(update={"reclaim_idle_seconds": 0.5, "housekeeping_seconds": 3600})
    try:
        async with build_app(quick, db=db):
            await wait_until(lambda: collect(300), timeout=30)  # the pending one through the reclaimer
            assert replies == {str(i) for i in range(300)}
            await wait_until(lambda: _nothing_pending(redis, stream, channels.rpc_group), timeout=10)
            await trim_read_entries(redis, stream)  # all read and acknowledged: all but the last go
            assert await redis.xlen(stream) <= 1
            await send(50, 300)  # still served after the trim
            await wait_until(lambda: collect(350), timeout=30)
    finally:
        await pubsub.aclose()
    assert replies == {str(i) for i in range(350)}


async def _nothing_pending(redis, stream: str, group: str) -> bool:
    return (await redis.xpending(stream, group))["pending"] == 0


async def test_consumers_of_replicas_that_are_gone_are_removed_once_idle_with_nothing_pending(redis, prefix):
    channels = Channels(prefix)
    stream, group = channels.rpc(Op.DELETE_WORKER), channels.rpc_group
    await redis.xgroup_create(stream, group, id="0", mkstream=True)
    await redis.xadd(stream, {"a": "1"})
    await redis.xreadgroup(group, "holds-one", {stream: ">"}, count=1)  # pending: kept
    await redis.xgroup_createconsumer(stream, group, "idle-empty")  # read nothing: nothing pending
    await redis.xgroup_createconsumer(stream, group, "me")

    assert await remove_gone_consumers(redis, stream, group, "me", idle_seconds=3600) == []
    removed = await remove_gone_consumers(redis, stream, group, "me", idle_seconds=0)
    assert removed == ["idle-empty"]
    names = sorted(c["name"].decode() for c in await redis.xinfo_consumers(stream, group))
    assert names == ["holds-one", "me"]


async def test_request_records_are_pruned_in_batches_by_a_replica_without_a_foreman(settings, db):
    now = db.clock()
    old = [{"request_id": f"old-{i}", "op": "x", "created": now - timedelta(days=2)} for i in range(12)]
    async with db.transaction() as tx:
        await tx.execute(insert(request_log), [*old, {"request_id": "fresh", "op": "x", "created": now}])
    assert await idempotency.forget_old(db, batch=5) == 12
    async with db.transaction() as tx:
        await tx.execute(insert(request_log), old[:3])

    async def kept() -> list[str]:
        async with db.read() as tx:
            return sorted((await tx.execute(select(request_log.c.request_id))).scalars())

    no_foreman = settings.model_copy(update={"foreman_enabled": False, "housekeeping_seconds": 0.2})
    async with build_app(no_foreman, db=db):
        await wait_until(lambda: _only_fresh(kept), timeout=10)
    assert await kept() == ["fresh"]


async def _only_fresh(kept) -> bool:
    return await kept() == ["fresh"]
