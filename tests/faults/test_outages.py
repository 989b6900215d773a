"""Redis or PostgreSQL restarted under a running replica (each test restarts its own throwaway
server): the replica serves again on its own within seconds, without being restarted; during a
PostgreSQL outage requests are answered 503 at once instead of hanging."""

from __future__ import annotations

import time

import pytest

import migrations
from client import ServiceUnavailable, WorkerClient, WorkPoolClient
from schemas.channels import Op
from tests.factories import make_pool, wait_until
from tests.faults.tools import FAST_RECLAIM
from tests.replicas import listening, replicas, serving

pytestmark = pytest.mark.faults


async def _answers(call) -> object:
    try:
        return await call() or True
    except ServiceUnavailable:
        return False


async def test_redis_restart_replica_and_clients_recover_on_their_own(settings, db, fault_redis):
    """Redis restarts empty (no persistence): streams, groups and subscriptions are gone. The same
    replica process serves again within seconds, clients retry, and heartbeats are recorded again."""
    with replicas(settings, "rep-a", **FAST_RECLAIM) as [replica]:
        async with (
            WorkPoolClient(settings.redis_url, settings.prefix, timeout=2, retries=2) as client,
            WorkerClient(
                settings.redis_url, settings.prefix, work_pool_name="hb", worker_name="w", timeout=2
            ) as worker,
        ):
            await wait_until(lambda: serving(client, {"rep-a"}), timeout=30, interval=0.2)
            await client.create_work_pool(make_pool(name="hb"))
            await worker.heartbeat(ack=True)
            [before] = await client.read_workers_for_work_pool("hb")

            fault_redis.stop()
            with pytest.raises(ServiceUnavailable):
                await client.read_work_pool("hb")
            fault_redis.start()
            restarted = time.monotonic()

            await wait_until(lambda: _answers(lambda: client.read_work_pool("hb")), timeout=20, interval=0.2)
            back_after = time.monotonic() - restarted
            await wait_until(lambda: _answers(lambda: worker.heartbeat(ack=True)), timeout=20, interval=0.2)
            [after] = await client.read_workers_for_work_pool("hb")
            created = await client.create_work_pool(make_pool(name="after-restart"))
            assert replica.process.poll() is None  # the same process: it was not restarted
    assert back_after < 10, back_after
    assert after.last_heartbeat_time > before.last_heartbeat_time
    assert created.name == "after-restart"
    assert "a consumer group vanished" in replica.output()


async def test_postgres_restart_requests_get_503_at_once_then_succeed_again(settings, redis, fault_postgres):
    """PostgreSQL stops: every request is answered 503 within a second or two (never a hang) and
    a heartbeat waiting for its acknowledgement too; PostgreSQL starts again: the same replica
    serves again without a restart."""
    url = fault_postgres.url("workpools")
    await migrations.upgrade(url)
    settings = settings.model_copy(update={"database_url": url})
    with replicas(settings, "rep-a", **FAST_RECLAIM) as [replica]:
        async with (
            WorkPoolClient(settings.redis_url, settings.prefix, timeout=10, retries=0) as client,
            WorkerClient(
                settings.redis_url, settings.prefix, work_pool_name="before", worker_name="w", timeout=10, retries=0
            ) as worker,
        ):
            await wait_until(lambda: serving(client, {"rep-a"}), timeout=30, interval=0.2)
            await wait_until(lambda: listening(redis, worker.heartbeat_channel), timeout=30, interval=0.1)
            await client.create_work_pool(make_pool(name="before"))
            await worker.heartbeat(ack=True)

            fault_postgres.stop()
            for op, body in [
                (Op.READ_WORK_POOL, {"name": "before"}),
                (Op.CREATE_WORK_POOL, make_pool()),
                (Op.COUNT_WORK_POOLS, {}),
                (Op.READ_WORK_POOL, {"name": "before"}),
                (Op.WORKER_HEARTBEAT, {"work_pool_name": "before", "name": "w"}),
            ]:
                started = time.monotonic()
                status, reply = await client._rpc.request(op, body)
                assert (status, reply) == (503, {"detail": "Service Unavailable"}), op
                assert time.monotonic() - started < 2, op
            started = time.monotonic()
            with pytest.raises(ServiceUnavailable) as refused:
                await worker.heartbeat(ack=True)
            assert refused.value.status == 503 and time.monotonic() - started < 2

            fault_postgres.start()
            await wait_until(
                lambda: _answers(lambda: client.create_work_pool(make_pool(name="after"))), timeout=20, interval=0.2
            )
            assert {p.name for p in await client.read_work_pools()} == {"before", "after"}
            await worker.heartbeat(ack=True)
            assert replica.process.poll() is None
