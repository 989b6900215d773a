"""A request delivered more than once — sent twice with one request id, redelivered after its
replica died between the commit and the reply, or still running while the reclaimer looks — has
one effect, and every reply its caller gets is the same."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from client import WorkPoolClient
from schemas import wire
from schemas.channels import Channels, Op
from tests.factories import make_pool, wait_until
from tests.faults.tools import FAST_RECLAIM, pending_by_consumer, rows_locked, runs_by_name, waiting_on_locks
from tests.replicas import replicas, serving

pytestmark = pytest.mark.faults


async def _runs_named(db, name: str) -> int:
    return (await runs_by_name(db)).get(name, 0)


async def _send_raw(client: WorkPoolClient, redis, op: Op, body, **headers: str) -> asyncio.Future:
    """XADD a request as any client would; the future gets its reply (status, body, headers)."""
    correlation_id = uuid.uuid4().hex
    reply = client._rpc.replies.expect(correlation_id)
    headers = {"correlation_id": correlation_id, "reply_to": client._rpc.reply_channel, **headers}
    await redis.xadd(client._rpc.channels.rpc(op), {wire.DATA_FIELD: wire.encode(body, headers)})

    async def decoded() -> tuple[int, Any, dict[str, str]]:
        status, text, reply_headers = await reply  # the reply channel leaves the body as JSON text
        return status, wire.parse_body(text), reply_headers

    return asyncio.ensure_future(decoded())


async def test_one_request_id_sent_twice_to_two_replicas_acts_once(settings, db, redis):
    with replicas(settings, "rep-a", "rep-b", **FAST_RECLAIM):
        async with WorkPoolClient(settings.redis_url, settings.prefix, timeout=10) as client:
            await wait_until(lambda: serving(client, {"rep-a", "rep-b"}), timeout=30, interval=0.2)
            pool = (await client.create_work_pool(make_pool())).name
            request_id = uuid.uuid4().hex
            body = {"work_pool_name": pool, "name": "twice"}
            replies = await asyncio.gather(
                *[await _send_raw(client, redis, Op.CREATE_FLOW_RUN, body, request_id=request_id) for _ in range(6)]
            )
            again = await client._rpc.request(Op.CREATE_FLOW_RUN, body, request_id=request_id)
    assert {status for status, _, _ in replies} == {201}
    assert len({reply["id"] for _, reply, _ in replies}) == 1
    assert again == (201, replies[0][1])
    assert await _runs_named(db, "twice") == 1


@pytest.mark.parametrize("request_id", [True, False], ids=["client-request-id", "no-request-id"])
async def test_a_request_committed_but_never_acknowledged_is_redelivered_and_acts_once(settings, db, redis, request_id):
    """The replica commits, then dies before its reply and its XACK (Redis paused for writes
    meanwhile); the reclaimer hands the entry to the other replica, which answers the caller with
    the stored reply, without creating the run again — with or without a client `request_id`."""
    channels = Channels(settings.prefix)
    with replicas(settings, "rep-a", "rep-b", **FAST_RECLAIM) as started:
        async with WorkPoolClient(settings.redis_url, settings.prefix, timeout=10) as client:
            await wait_until(lambda: serving(client, {"rep-a", "rep-b"}), timeout=30, interval=0.2)
            pool = (await client.create_work_pool(make_pool())).name
            extra = {"request_id": uuid.uuid4().hex} if request_id else {}
            async with rows_locked(db, pool):
                reply = await _send_raw(
                    client, redis, Op.CREATE_FLOW_RUN, {"work_pool_name": pool, "name": "once"}, **extra
                )
                await wait_until(lambda: waiting_on_locks(db, 1), timeout=10)
                [holder_name] = await pending_by_consumer(redis, channels, Op.CREATE_FLOW_RUN)
                await redis.client_pause(60_000, all=False)  # writes wait: PUBLISH (the reply), XACK
            # the lock is released: the holder commits, then waits to publish
            await wait_until(lambda: _runs_named(db, "once"), timeout=10)
            holder = next(r for r in started if r.name == holder_name)
            holder.kill()
            await redis.client_unpause()
            status, body, headers = await asyncio.wait_for(reply, 10)
            assert (status, body["name"]) == (201, "once")
            assert headers["replica"] != holder_name
    assert await _runs_named(db, "once") == 1
    assert (await redis.xpending(channels.rpc(Op.CREATE_FLOW_RUN), channels.rpc_group))["pending"] == 0


async def test_a_slow_request_in_a_live_replica_is_neither_redone_nor_dead_lettered(settings, db, redis):
    """A request that takes longer than `max_deliveries` × `reclaim_idle_seconds` in a replica
    that is alive is not taken for abandoned: it runs once and is answered once."""
    channels = Channels(settings.prefix)
    stream = channels.rpc(Op.CREATE_FLOW_RUN)
    env = {**FAST_RECLAIM, "WORKPOOLS_RECLAIM_IDLE_SECONDS": "1.5", "WORKPOOLS_MAX_DELIVERIES": "2"}
    with replicas(settings, "rep-a", **env):
        async with WorkPoolClient(settings.redis_url, settings.prefix, timeout=15) as client:
            await wait_until(lambda: serving(client, {"rep-a"}), timeout=30, interval=0.2)
            pool = (await client.create_work_pool(make_pool())).name
            async with rows_locked(db, pool):
                call = asyncio.create_task(client.create_flow_run({"work_pool_name": pool, "name": "slow"}))
                await wait_until(lambda: waiting_on_locks(db, 1), timeout=10)
                _, in_flight = await asyncio.wait({call}, timeout=4)  # 4 s > 2 deliveries × 1.5 s idle
                assert in_flight == {call}
                assert await redis.xlen(channels.dead) == 0
            run = await call
    assert run.name == "slow"
    assert await _runs_named(db, "slow") == 1
    assert await redis.xlen(stream) == 1  # never appended again
    assert await redis.xlen(channels.dead) == 0
