"""Replicas that die (`kill -9`) or are told to stop (SIGTERM) while requests are in flight, and a
request that kills every replica that takes it: nothing accepted is lost, nothing is done twice,
and the poison ends in `{prefix}.dead`."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid

import pytest

from client import WorkPoolClient
from schemas import wire
from schemas.channels import Channels, Op
from tests.factories import make_pool, wait_until
from tests.faults.tools import FAST_RECLAIM, pending_by_consumer, rows_locked, runs_by_name, scalar, waiting_on_locks
from tests.replicas import replicas, serving

pytestmark = pytest.mark.faults


async def _queues_created_events(redis, channels) -> list[str]:
    events = [json.loads(fields[b"event"]) for _, fields in await redis.xrange(channels.events)]
    return [e["resource"]["prefect.resource.name"] for e in events if e["event"] == "prefect.work-queue.created"]


async def _holder(redis, channels: Channels, op: Op, live: list) -> object | None:
    """The live replica holding a pending entry of `op`, if one does."""
    owners = await pending_by_consumer(redis, channels, op)
    return next((r for r in live if owners[r.name]), None)


async def test_kill_9_mid_request_loses_nothing_and_does_nothing_twice(settings, db, redis):
    channels = Channels(settings.prefix)
    runs = [f"run-{i}" for i in range(6)]
    queues = [f"queue-{i}" for i in range(4)]
    with replicas(settings, "rep-a", "rep-b", **FAST_RECLAIM) as started:
        async with WorkPoolClient(settings.redis_url, settings.prefix, timeout=10, retries=3) as client:
            await wait_until(lambda: serving(client, {"rep-a", "rep-b"}), timeout=30, interval=0.2)
            pool = (await client.create_work_pool(make_pool())).name
            async with rows_locked(db, pool):
                calls = [
                    asyncio.create_task(client.create_flow_run({"work_pool_name": pool, "name": name})) for name in runs
                ]
                calls += [asyncio.create_task(client.create_work_queue(pool, {"name": name})) for name in queues]
                # every request is in a replica, waiting in the database for the rows the test holds
                await wait_until(lambda: waiting_on_locks(db, len(calls)), timeout=10)
                held = await pending_by_consumer(redis, channels, Op.CREATE_FLOW_RUN)
                held += await pending_by_consumer(redis, channels, Op.CREATE_WORK_QUEUE)
                assert sum(held.values()) == len(calls)
                victim = next(r for r in started if r.name == held.most_common(1)[0][0])
                victim.kill()
            results = await asyncio.gather(*calls)
            assert all(r.process.poll() is None for r in started if r is not victim)

    assert held[victim.name] >= 1  # the killed replica had requests in flight
    assert sorted(r.name for r in results) == sorted(runs + queues)  # every caller got its answer
    assert await runs_by_name(db) == {name: 1 for name in runs}  # each run created once
    assert await scalar(db, "SELECT count(*) FROM work_queue") == 1 + len(queues)
    assert await scalar(
        db, "SELECT count(*) FROM request_log WHERE op IN ('create_flow_run', 'create_work_queue')"
    ) == len(calls)
    assert sorted(await _queues_created_events(redis, channels)) == ["default", *queues]  # one event each
    assert await redis.xlen(channels.dead) == 0


async def test_a_request_that_kills_every_replica_ends_in_the_dead_letter_stream(settings, db, redis):
    """Each replica that takes the poison dies with it (kill -9 while it is in flight); after
    `max_deliveries` the reclaimer of the last replica dead-letters it with the reason, it has had
    no effect, and the stream moves on."""
    channels = Channels(settings.prefix)
    with replicas(settings, "rep-a", "rep-b", "rep-c", **FAST_RECLAIM, WORKPOOLS_MAX_DELIVERIES="2") as started:
        async with WorkPoolClient(settings.redis_url, settings.prefix, timeout=10) as client:
            await wait_until(lambda: serving(client, {"rep-a", "rep-b", "rep-c"}), timeout=30, interval=0.2)
            pool = (await client.create_work_pool(make_pool())).name
            live = list(started)
            async with rows_locked(db, pool):
                poison = wire.encode(
                    {"work_pool_name": pool, "name": "poison"},
                    {
                        "correlation_id": "poison",
                        "reply_to": Channels(settings.prefix).reply("nobody"),
                        "request_id": uuid.uuid4().hex,
                    },
                )
                await redis.xadd(channels.rpc(Op.CREATE_FLOW_RUN), {wire.DATA_FIELD: poison})
                for _ in range(2):  # delivered, its replica dies; delivered again, that one dies too
                    holder = await wait_until(lambda: _holder(redis, channels, Op.CREATE_FLOW_RUN, live), timeout=10)
                    holder.kill()
                    live.remove(holder)
                [(_, dead)] = await wait_until(lambda: redis.xrange(channels.dead), timeout=10)
            after = await client.create_flow_run({"work_pool_name": pool, "name": "after"})
            assert [r.process.poll() for r in live] == [None]

    assert dead[b"reason"] == b"not answered after 2 deliveries"
    assert dead[b"stream"].decode() == channels.rpc(Op.CREATE_FLOW_RUN)
    assert json.loads(dead[wire.DATA_FIELD.encode()])["headers"]["correlation_id"] == "poison"
    assert after.name == "after"
    assert await runs_by_name(db) == {"after": 1}  # the poison had no effect
    assert (await redis.xpending(channels.rpc(Op.CREATE_FLOW_RUN), channels.rpc_group))["pending"] == 0


GRACE = 2.0


async def test_sigterm_during_load_drains_or_hands_over_every_request(settings, db, redis):
    """A burst of writes, and a few writes that cannot finish within the grace period (their rows
    are locked); SIGTERM to a replica: it answers what it can, exits 0 within the grace period
    (plus 3 s, beyond what an idle replica's stop takes on this machine), and what it could not
    finish is answered by the other replica. Every run exists once."""
    channels = Channels(settings.prefix)
    env = {**FAST_RECLAIM, "WORKPOOLS_GRACEFUL_TIMEOUT_SECONDS": str(GRACE)}
    stuck = [f"stuck-{i}" for i in range(4)]
    burst = [f"burst-{i}" for i in range(150)]
    with replicas(settings, "rep-a", "rep-b", **env) as started:
        async with WorkPoolClient(settings.redis_url, settings.prefix, timeout=30, retries=3) as client:
            await wait_until(lambda: serving(client, {"rep-a", "rep-b"}), timeout=30, interval=0.2)
            locked, free = [(await client.create_work_pool(make_pool())).name for _ in range(2)]
            async with rows_locked(db, locked):
                calls = [
                    asyncio.create_task(client.create_flow_run({"work_pool_name": locked, "name": name}))
                    for name in stuck
                ]
                await wait_until(lambda: waiting_on_locks(db, len(stuck)), timeout=10)
                owners = await pending_by_consumer(redis, channels, Op.CREATE_FLOW_RUN)
                victim = next(r for r in started if r.name == owners.most_common(1)[0][0])
                calls += [
                    asyncio.create_task(client.create_flow_run({"work_pool_name": free, "name": name}))
                    for name in burst
                ]
                # the victim is busy with the burst too
                await wait_until(lambda: _more_pending(redis, channels, victim.name, owners[victim.name]), timeout=10)
                signalled = time.monotonic()
                victim.process.send_signal(signal.SIGTERM)
                code = await asyncio.to_thread(victim.process.wait, GRACE + 10)
                exited_after = time.monotonic() - signalled
            results = await asyncio.gather(*calls)
            # The yardstick: the other replica, nothing in flight, stopped the same way. What a
            # stop costs on this machine (loops, connections, the interpreter's exit) is not
            # what this test bounds: the in-flight work may add the grace period and 3 s.
            survivor = next(r for r in started if r is not victim)
            signalled = time.monotonic()
            survivor.process.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(survivor.process.wait, GRACE + 20) == 0
            idle_exit = time.monotonic() - signalled

    assert code == 0
    assert exited_after - idle_exit < GRACE + 3, (exited_after, idle_exit)
    assert sorted(r.name for r in results) == sorted(stuck + burst)
    assert await runs_by_name(db) == {name: 1 for name in stuck + burst}
    assert await scalar(db, "SELECT count(*) FROM request_log WHERE op = 'create_flow_run'") == len(calls)
    assert await redis.xlen(channels.dead) == 0
    assert (await redis.xpending(channels.rpc(Op.CREATE_FLOW_RUN), channels.rpc_group))["pending"] == 0


async def _more_pending(redis, channels, name: str, than: int) -> bool:
    return (await pending_by_consumer(redis, channels, Op.CREATE_FLOW_RUN))[name] > than
