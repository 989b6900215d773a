"""Three replicas, fifty workers, one replica killed: no accepted stream request is lost, no
poll is answered twice, and heartbeats keep being recorded."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sqlalchemy import func, select

from client import ServiceUnavailable, WorkerClient, WorkPoolClient
from schemas.channels import Channels
from services.tables import flow_run, worker
from tests.factories import wait_until
from tests.replicas import replicas

FAST = {
    "WORKPOOLS_RECLAIM_IDLE_SECONDS": "1",
    "WORKPOOLS_RECLAIM_EVERY_SECONDS": "0.2",
    "WORKPOOLS_FOREMAN_ENABLED": "false",
}


async def serving(client: WorkPoolClient) -> bool:
    try:
        await client.count_work_pools()
    except ServiceUnavailable:
        return False
    return True


async def test_killing_one_of_three_replicas_loses_nothing(db, redis, settings):
    with replicas(settings, "r1", "r2", "r3", **FAST) as (r1, r2, r3):
        async with WorkPoolClient(redis_url=settings.redis_url, prefix=settings.prefix, timeout=5, retries=4) as client:
            await wait_until(lambda: serving(client), timeout=30, interval=0.2)
            await client.create_work_pool({"name": "fleet", "type": "process"})
            workers = [
                WorkerClient(
                    redis_url=settings.redis_url,
                    prefix=settings.prefix,
                    work_pool_name="fleet",
                    worker_name=f"w{i}",
                    timeout=10,
                )
                for i in range(50)
            ]
            for w in workers:
                await w.__aenter__()
            stop = asyncio.Event()
            polls = {"sent": 0, "answered": 0}

            async def work(w: WorkerClient) -> None:
                while not stop.is_set():
                    await w.heartbeat()
                    polls["sent"] += 1
                    try:
                        await w.get_scheduled_flow_runs(limit=1)
                        polls["answered"] += 1
                    except ServiceUnavailable:  # the killed replica had taken it: pub/sub is at-most-once
                        pass
                    await asyncio.sleep(0.3)  # a worker's poll interval (pacing, not a wait for a condition)

            fleet = [asyncio.create_task(work(w)) for w in workers]
            creates = [
                asyncio.create_task(client.create_flow_run({"work_pool_name": "fleet", "name": f"run-{i}"}))
                for i in range(150)
            ]

            async def under_way() -> bool:  # kill while the burst is being served
                async with db.read() as tx:
                    return (await tx.execute(select(func.count()).select_from(flow_run))).scalar_one() >= 10

            await wait_until(under_way, timeout=15)
            r2.kill()
            killed_at = datetime.now(UTC)
            created = await asyncio.gather(*creates)

            async def all_beating_since_kill() -> bool:
                async with db.read() as tx:
                    fresh = await tx.execute(
                        select(func.count()).select_from(worker).where(worker.c.last_heartbeat_time > killed_at)
                    )
                    return fresh.scalar_one() == 50

            await wait_until(all_beating_since_kill, timeout=10)
            stop.set()
            await asyncio.gather(*fleet)
            for w in workers:
                await w.__aexit__(None, None, None)
            # every mark ever appended: housekeeping trims the marks the consumer has acknowledged
            marks = (await redis.xinfo_stream(Channels(settings.prefix).ready))["entries-added"]

    # every accepted create answered, each exactly once in the database
    assert sorted(run.name for run in created) == sorted(f"run-{i}" for i in range(150))
    async with db.read() as tx:
        names = (await tx.execute(select(flow_run.c.name))).scalars().all()
    assert sorted(names) == sorted(f"run-{i}" for i in range(150))
    # no poll answered twice: at most one ready mark per poll sent; only polls the dead replica
    # had taken (at most one per worker) go unanswered
    assert polls["answered"] <= marks <= polls["sent"]
    assert polls["answered"] >= polls["sent"] - len(workers)
