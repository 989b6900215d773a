"""Workers over the wire: heartbeats, pool readiness, filters, order, delete
(docs/operations.md#workers, docs/statuses.md#heartbeats)."""

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import update

from client import ObjectNotFound
from schemas.channels import Op
from services.tables import worker
from tests.factories import make_pool, wait_until


async def test_first_heartbeat_creates_an_online_worker(client, clock):
    now = clock.freeze()
    pool = await client.create_work_pool(make_pool())

    await client.send_worker_heartbeat(pool.name, "w1", heartbeat_interval_seconds=15)

    [created] = await client.read_workers_for_work_pool(pool.name)
    assert (created.name, created.status, created.work_pool_id) == ("w1", "ONLINE", pool.id)
    assert (created.heartbeat_interval_seconds, created.last_heartbeat_time, created.created) == (15, now, now)


async def test_heartbeat_keeps_the_interval_unless_given(client, clock):
    start = clock.freeze()
    pool = await client.create_work_pool(make_pool())
    await client.send_worker_heartbeat(pool.name, "w", heartbeat_interval_seconds=30)

    async def only_worker():
        [found] = await client.read_workers_for_work_pool(pool.name)
        return found

    clock.advance(seconds=10)
    await client.send_worker_heartbeat(pool.name, "w")
    found = await only_worker()
    assert (found.heartbeat_interval_seconds, found.last_heartbeat_time) == (30, start + timedelta(seconds=10))
    assert found.created == start

    clock.advance(seconds=10)
    await client.send_worker_heartbeat(pool.name, "w", heartbeat_interval_seconds=60)
    found = await only_worker()
    assert (found.heartbeat_interval_seconds, found.last_heartbeat_time) == (60, start + timedelta(seconds=20))

    await client.send_worker_heartbeat(pool.name, "new")  # a new worker without an interval
    by_name = {w.name: w.heartbeat_interval_seconds for w in await client.read_workers_for_work_pool(pool.name)}
    assert by_name == {"w": 60, "new": None}


async def test_heartbeat_brings_an_offline_worker_back_online(client, db):
    pool = await client.create_work_pool(make_pool())
    await client.send_worker_heartbeat(pool.name, "w")
    async with db.engine.begin() as conn:
        await conn.execute(update(worker).values(status="OFFLINE"))
    assert [w.status for w in await client.read_workers_for_work_pool(pool.name)] == ["OFFLINE"]

    await client.send_worker_heartbeat(pool.name, "w")
    assert [w.status for w in await client.read_workers_for_work_pool(pool.name)] == ["ONLINE"]


async def test_many_first_heartbeats_make_the_pool_ready_once(client):
    pool = await client.create_work_pool(make_pool())
    last = (await client.read_events())[-1]

    await asyncio.gather(*(client.send_worker_heartbeat(pool.name, f"w{i}") for i in range(20)))

    assert (await client.read_work_pool(pool.name)).status == "READY"
    assert len(await client.read_workers_for_work_pool(pool.name)) == 20
    events = await wait_until(lambda: client.read_events(after=str(last.id)))
    assert [e.event for e in events] == ["prefect.work-pool.ready"]
    assert events[0].resource["prefect.resource.id"] == f"prefect.work-pool.{pool.id}"

    await client.send_worker_heartbeat(pool.name, "w0")  # a READY pool is left alone
    await client.create_work_queue(pool.name, {"name": "marker"})
    events = await wait_until(lambda: client.read_events(after=str(events[-1].id)))
    assert [e.event for e in events] == ["prefect.work-queue.created"]


async def test_heartbeat_leaves_a_paused_pool_paused(client):
    pool = await client.create_work_pool(make_pool(is_paused=True))
    await client.send_worker_heartbeat(pool.name, "w")
    assert (await client.read_work_pool(pool.name)).status == "PAUSED"
    assert [e.event for e in await client.read_events()][-1] == "prefect.work-pool.paused"


async def test_heartbeat_on_an_agent_pool_flips_the_hidden_status(client):
    pool = await client.create_work_pool({"name": "agent"})
    await client.send_worker_heartbeat("agent", "w")
    assert (await client.read_work_pool("agent")).status is None
    events = await wait_until(lambda: client.read_events())
    assert (events[-1].event, events[-1].resource["prefect.work-pool.type"]) == (
        "prefect.work-pool.ready",
        "prefect-agent",
    )
    assert events[-1].resource["prefect.resource.id"] == f"prefect.work-pool.{pool.id}"


async def test_unknown_pool_is_404_for_every_worker_op(client):
    await client.create_work_pool(make_pool(name="p"))
    calls = (
        client.send_worker_heartbeat("ghost", "w"),
        client.read_workers_for_work_pool("ghost"),
        client.delete_worker("ghost", "w"),
    )
    for call in calls:
        with pytest.raises(ObjectNotFound) as info:
            await call
        assert (info.value.status, info.value.detail) == (404, 'Work pool "ghost" not found.')


async def test_heartbeat_without_a_name_is_422(client):
    pool = await client.create_work_pool(make_pool())
    status, body = await client._rpc.request(Op.WORKER_HEARTBEAT, {"work_pool_name": pool.name})
    assert status == 422
    assert [(e["type"], e["loc"]) for e in body["detail"]] == [("missing", ["body", "name"])]
    assert await client.read_workers_for_work_pool(pool.name) == []


async def test_filter_by_status_and_heartbeat_time(client, clock, db):
    t0 = clock.freeze()
    pool = await client.create_work_pool(make_pool())
    for name in ("w1", "w2", "w3"):
        await client.send_worker_heartbeat(pool.name, name)
        clock.advance(seconds=10)
    async with db.engine.begin() as conn:
        await conn.execute(update(worker).where(worker.c.name == "w2").values(status="OFFLINE"))
    t10 = (t0 + timedelta(seconds=10)).isoformat()

    async def names(worker_filter):
        return [w.name for w in await client.read_workers_for_work_pool(pool.name, worker_filter)]

    assert await names(None) == ["w3", "w2", "w1"]
    assert await names({"last_heartbeat_time": {"before_": t10}}) == ["w2", "w1"]
    assert await names({"last_heartbeat_time": {"after_": t10}}) == ["w3", "w2"]
    assert await names({"last_heartbeat_time": {"before_": t10, "after_": t10}}) == ["w2"]
    naive = (t0 + timedelta(seconds=10)).replace(tzinfo=None).isoformat()  # read as UTC
    assert await names({"last_heartbeat_time": {"before_": naive, "after_": naive}}) == ["w2"]
    assert await names({"status": {"any_": ["ONLINE"]}}) == ["w3", "w1"]
    assert await names({"status": {"not_any_": ["ONLINE"]}}) == ["w2"]
    assert await names({"status": {"any_": []}}) == []
    assert await names({"status": {"not_any_": []}}) == ["w3", "w2", "w1"]
    assert await names(
        {
            "operator": "or_",
            "status": {"any_": ["OFFLINE"]},
            "last_heartbeat_time": {"after_": (t0 + timedelta(seconds=20)).isoformat()},
        }
    ) == ["w3", "w2"]


async def test_workers_are_ordered_by_last_heartbeat_and_paginated(client, clock):
    clock.freeze()
    pool = await client.create_work_pool(make_pool())
    other = await client.create_work_pool(make_pool())
    for name in ("a", "b", "c", "d"):
        clock.advance(seconds=1)
        await client.send_worker_heartbeat(pool.name, name)
    await client.send_worker_heartbeat(other.name, "elsewhere")
    clock.advance(seconds=1)
    await client.send_worker_heartbeat(pool.name, "b")

    async def names(**kwargs):
        return [w.name for w in await client.read_workers_for_work_pool(pool.name, **kwargs)]

    assert await names() == ["b", "d", "c", "a"]
    assert await names(offset=1, limit=2) == ["d", "c"]
    assert await names(limit=0) == []
    status, body = await client._rpc.request(Op.READ_WORKERS, {"work_pool_name": pool.name, "limit": 201})
    assert (status, body) == (422, {"detail": "Invalid limit: must be less than or equal to 200."})


async def test_delete_worker(client):
    pool = await client.create_work_pool(make_pool())
    other = await client.create_work_pool(make_pool())
    for target in (pool, other):
        await client.send_worker_heartbeat(target.name, "w")
    await client.send_worker_heartbeat(pool.name, "keep")

    await client.delete_worker(pool.name, "w")

    assert [w.name for w in await client.read_workers_for_work_pool(pool.name)] == ["keep"]
    assert [w.name for w in await client.read_workers_for_work_pool(other.name)] == ["w"]
    assert (await client.read_work_pool(pool.name)).status == "READY"  # not recomputed on delete
    with pytest.raises(ObjectNotFound) as info:
        await client.delete_worker(pool.name, "w")
    assert (info.value.status, info.value.detail) == (404, "Worker not found.")
