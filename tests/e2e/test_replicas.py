"""Two real replica processes: they share the request streams' consumer group, and exactly
one runs the foreman; when it dies the other takes over."""

from __future__ import annotations

import asyncio
from collections import Counter

from client import WorkPoolClient
from schemas.channels import Channels, Op
from tests.factories import wait_until
from tests.replicas import replicas, serving

FAST_FOREMAN = {"WORKPOOLS_FOREMAN_LOOP_SECONDS": "0.2", "WORKPOOLS_FOREMAN_LEASE_SECONDS": "1"}


async def test_two_replicas_share_the_work(db, redis, settings):
    with replicas(settings, "rep-a", "rep-b"):
        async with WorkPoolClient(redis_url=settings.redis_url, prefix=settings.prefix, timeout=10) as client:
            await wait_until(lambda: serving(client, {"rep-a", "rep-b"}), timeout=30, interval=0.2)
            await client.create_work_pool({"name": "shared", "type": "process"})
            replies = await asyncio.gather(
                *(client._rpc.exchange(Op.READ_WORK_POOL, {"name": "shared"}) for _ in range(200))
            )
    assert {status for status, _, _ in replies} == {200}
    by_replica = Counter(headers["replica"] for _, _, headers in replies)
    assert set(by_replica) == {"rep-a", "rep-b"}
    assert sum(by_replica.values()) == 200 and min(by_replica.values()) >= 20
    channels = Channels(settings.prefix)
    pending = await redis.xpending(channels.rpc(Op.READ_WORK_POOL), channels.rpc_group)
    assert pending["pending"] == 0


async def test_foreman_runs_on_one_replica_and_fails_over(db, redis, settings):
    lease = Channels(settings.prefix).foreman_lease
    with replicas(settings, "rep-a", "rep-b", **FAST_FOREMAN) as (a, b):
        holder = (await wait_until(lambda: redis.get(lease), timeout=30)).decode()
        assert holder in {"rep-a", "rep-b"}
        for _ in range(5):  # the lease stays where it is while its holder lives
            assert (await redis.get(lease)).decode() == holder
            await asyncio.sleep(0.2)  # sampling interval of an invariant, not a wait for a condition
        dying, survivor = (a, b) if holder == "rep-a" else (b, a)
        dying.kill()
        await wait_until(lambda: _held_by(redis, lease, survivor.name), timeout=5)

        async with WorkPoolClient(redis_url=settings.redis_url, prefix=settings.prefix, timeout=10) as client:
            await client.create_work_pool({"name": "fo", "type": "process"})
            await client.send_worker_heartbeat("fo", "w", heartbeat_interval_seconds=1)
            assert (await client.read_work_pool("fo")).status == "READY"
            # the surviving foreman marks the silent worker OFFLINE (> 3 s) and the pool NOT_READY
            pool = await wait_until(lambda: _pool_not_ready(client, "fo"), timeout=10)
            assert pool.status == "NOT_READY"
            assert [w.status for w in await client.read_workers_for_work_pool("fo")] == ["OFFLINE"]


async def _held_by(redis, key: str, name: str) -> bool:
    value = await redis.get(key)
    return value is not None and value.decode() == name


async def _pool_not_ready(client, name):
    pool = await client.read_work_pool(name)
    return pool if pool.status == "NOT_READY" else None
