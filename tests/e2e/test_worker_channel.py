"""Workers over Redis pub/sub: heartbeats and polls, plain JSON, one effect per message."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime

import pytest

from client import InvalidRequest, ObjectNotFound, WorkerClient
from replica.app import build_app
from schemas.channels import Channels
from tests.factories import wait_until


def worker(settings, pool: str, name: str = "w1", **kwargs) -> WorkerClient:
    return WorkerClient(
        redis_url=settings.redis_url, prefix=settings.prefix, work_pool_name=pool, worker_name=name, **kwargs
    )


async def test_heartbeat_with_ack_records_the_worker(client, settings):
    await client.create_work_pool({"name": "hb", "type": "process"})
    async with worker(settings, "hb", heartbeat_interval_seconds=7) as w:
        await w.heartbeat(ack=True)
    [recorded] = await client.read_workers_for_work_pool("hb")
    assert (recorded.name, recorded.status, recorded.heartbeat_interval_seconds) == ("w1", "ONLINE", 7)
    assert (await client.read_work_pool("hb")).status == "READY"


async def test_fire_and_forget_heartbeats_are_recorded_within_two_seconds(client, settings):
    await client.create_work_pool({"name": "ff", "type": "process"})
    names = [f"w{i}" for i in range(200)]
    async with worker(settings, "ff") as w:
        for name in names:
            w.worker_name = name
            await w.heartbeat()
    recorded = await wait_until(lambda: _all_recorded(client, "ff", len(names)), timeout=2)
    assert sorted(r.name for r in recorded) == sorted(names)


async def _all_recorded(client, pool, count):
    workers = await client.read_workers_for_work_pool(pool)
    return workers if len(workers) == count else None


async def test_unknown_pool_and_invalid_messages_are_answered(client, settings, redis):
    async with worker(settings, "missing") as w:
        with pytest.raises(ObjectNotFound) as raised:
            await w.heartbeat(ack=True)
        assert raised.value.detail == 'Work pool "missing" not found.'
        with pytest.raises(ObjectNotFound):
            await w.get_scheduled_flow_runs()
        with pytest.raises(InvalidRequest) as raised:
            await w._ask(Channels(settings.prefix).worker_polls, {"work_pool_name": 5})
        assert raised.value.detail[0]["loc"] == ["work_pool_name"]
    # the service keeps serving after garbage
    await redis.publish(Channels(settings.prefix).worker_polls, b"\xff not json")
    await redis.publish(Channels(settings.prefix).worker_heartbeats, b"[]")
    await client.create_work_pool({"name": "still", "type": "process"})
    async with worker(settings, "still") as w:
        await w.heartbeat(ack=True)


async def test_a_worker_in_any_language_can_poll_with_plain_json(client, settings, redis):
    await client.create_work_pool({"name": "plain", "type": "process"})
    run = await client.create_flow_run({"work_pool_name": "plain"})
    reply_channel = Channels(settings.prefix).worker_reply(uuid.uuid4().hex)
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(reply_channel)
    poll = {"correlation_id": "42", "reply_to": reply_channel, "work_pool_name": "plain", "limit": 5}
    await redis.publish(Channels(settings.prefix).worker_polls, json.dumps(poll))
    message = await wait_until(lambda: pubsub.get_message(timeout=0.1), timeout=5)
    reply = json.loads(message["data"])
    await pubsub.aclose()
    assert (reply["correlation_id"], reply["status"]) == ("42", 200)
    assert [item["flow_run"]["id"] for item in reply["result"]] == [str(run.id)]


async def test_three_replicas_answer_each_poll_once_and_record_each_heartbeat_once(client, settings, redis, db):
    """The fixture's replica plus two more in this process: pub/sub reaches all three."""
    extra = [build_app(settings.model_copy(update={"consumer_name": f"extra-{i}"}), db=db) for i in range(2)]
    for app in extra:
        await app.start()
    try:
        await client.create_work_pool({"name": "trio", "type": "process"})
        run = await client.create_flow_run({"work_pool_name": "trio"})
        async with worker(settings, "trio") as w:
            results = await asyncio.gather(*(w.get_scheduled_flow_runs() for _ in range(40)))
            # every poll answered (overlapping polls may skip the run another one has locked)
            assert {str(item.flow_run.id) for r in results for item in r} == {str(run.id)}
            # one ready mark per poll, not one per replica
            await wait_until(lambda: _ready_marks(redis, settings.prefix, 40), timeout=5)
            channel = Channels(settings.prefix).worker_heartbeats
            await asyncio.gather(
                *(w._ask(channel, {"work_pool_name": "trio", "worker_name": f"beat-{i}"}) for i in range(60))
            )
        assert len(await client.read_workers_for_work_pool("trio")) == 60
        assert await redis.xlen(Channels(settings.prefix).ready) == 40
    finally:
        for app in extra:
            await app.stop()


async def _ready_marks(redis, prefix, count):
    return await redis.xlen(Channels(prefix).ready) >= count


async def test_repeated_heartbeats_of_one_worker_each_count(client, settings):
    await client.create_work_pool({"name": "rep", "type": "process"})
    async with worker(settings, "rep") as w:
        await w.heartbeat(ack=True)
        first = (await client.read_workers_for_work_pool("rep"))[0].last_heartbeat_time
        await w.heartbeat()  # fire-and-forget, same worker: a new message, not a duplicate
        later = await wait_until(lambda: _beat_after(client, "rep", first), timeout=2)
    assert later > first


async def _beat_after(client, pool, when):
    [recorded] = await client.read_workers_for_work_pool(pool)
    return recorded.last_heartbeat_time if recorded.last_heartbeat_time > when else None


async def test_odd_polls_are_answered(client, settings):
    await client.create_work_pool({"name": "odd", "type": "process"})
    async with worker(settings, "odd") as w:
        far = datetime(9999, 12, 31, tzinfo=UTC)
        assert await w.get_scheduled_flow_runs(scheduled_before=far, wait_seconds=0.3) == []
        with pytest.raises(InvalidRequest) as raised:
            await w._ask(
                Channels(settings.prefix).worker_polls,
                {"work_pool_name": "odd", "work_queue_names": [f"q{i}" for i in range(20_000)]},
            )
        assert raised.value.detail == "Message is larger than 65536 bytes."
