"""The events of docs/events.md: names, order, resources, related resources, payloads, `follows`."""

from datetime import timedelta

import pytest

from client import ObjectAlreadyExists, ObjectConflict, ObjectNotFound
from tests.factories import make_pool, wait_until

BLOCK_ID = "2fdfbc57-3d0b-4b0b-9a3b-9d3f2c1e5a77"


def pool_labels(pool, role: bool = True) -> dict[str, str]:
    labels = {
        "prefect.resource.id": f"prefect.work-pool.{pool.id}",
        "prefect.resource.name": pool.name,
        "prefect.work-pool.type": pool.type,
    }
    return {**labels, "prefect.resource.role": "work-pool"} if role else labels


def queue_labels(queue, name: str | None = None) -> dict[str, str]:
    return {
        "prefect.resource.id": f"prefect.work-queue.{queue.id}",
        "prefect.resource.name": name or queue.name,
        "prefect.resource.role": "work-queue",
    }


class Events:
    """Reads the events a test's actions produced, in stream order."""

    def __init__(self, client) -> None:
        self.client, self.last = client, None

    async def new(self, count: int):
        async def arrived():
            found = await self.client.read_events(after=self.last, count=1000)
            return found if len(found) >= count else None

        found = await wait_until(arrived)
        assert len(found) == count, [e.event for e in found]
        self.last = str(found[-1].id)
        return found


async def test_pool_create_events(client, clock):
    now = clock.freeze()
    events = Events(client)
    pool = await client.create_work_pool(make_pool(storage_configuration={"default_result_storage_block_id": BLOCK_ID}))
    default = await client.read_work_queue(pool.name, "default")

    queue_created, pool_created, not_ready = await events.new(3)

    assert (queue_created.event, queue_created.resource) == ("prefect.work-queue.created", queue_labels(default))
    assert queue_created.related == [pool_labels(pool)]
    assert (pool_created.event, pool_created.resource) == ("prefect.work-pool.created", pool_labels(pool))
    assert pool_created.related == [
        {"prefect.resource.id": f"prefect.work-queue.{default.id}", "prefect.resource.role": "default-queue"},
        {"prefect.resource.id": f"prefect.block-document.{BLOCK_ID}", "prefect.resource.role": "result-storage"},
    ]
    assert (not_ready.event, not_ready.resource, not_ready.related) == (
        "prefect.work-pool.not-ready",
        pool_labels(pool, role=False),
        [],
    )
    for event in (queue_created, pool_created, not_ready):
        assert (event.occurred, event.payload, event.follows) == (now, {}, None)
    assert len({queue_created.id, pool_created.id, not_ready.id}) == 3

    paused = await client.create_work_pool(make_pool(is_paused=True))
    assert [e.event for e in await events.new(3)][2] == "prefect.work-pool.paused"
    agent = await client.create_work_pool({"name": "agent"})
    *_, created, status = await events.new(3)
    assert created.related == [
        {
            "prefect.resource.id": f"prefect.work-queue.{agent.default_queue_id}",
            "prefect.resource.role": "default-queue",
        },
    ]
    assert (status.event, status.resource["prefect.work-pool.type"]) == ("prefect.work-pool.not-ready", "prefect-agent")
    assert paused.status == "PAUSED"


async def test_pool_update_events_list_only_real_changes(client, clock):
    now = clock.freeze()
    pool = await client.create_work_pool(make_pool(description="d", concurrency_limit=1))
    events = Events(client)
    await events.new(3)

    await client.update_work_pool(
        pool.name,
        {
            "storage_configuration": {},
            "concurrency_limit": 2,
            "description": "d",
            "base_job_template": {},
        },
    )
    await client.update_work_pool(pool.name, {"description": None, "is_paused": True})

    first, second, paused = await events.new(3)
    assert (first.event, first.resource, first.related) == ("prefect.work-pool.updated", pool_labels(pool), [])
    assert first.payload == {
        "updated_fields": ["concurrency_limit"],
        "updates": {"concurrency_limit": {"from": 1, "to": 2}},
    }
    assert second.payload == {"updated_fields": ["description"], "updates": {"description": {"from": "d", "to": None}}}
    assert (paused.event, paused.resource, paused.occurred, paused.follows) == (
        "prefect.work-pool.paused",
        pool_labels(pool, role=False),
        now,
        None,
    )

    await client.update_work_pool(pool.name, {"description": None, "concurrency_limit": 2})  # nothing changes
    await client.update_work_pool(pool.name, {"is_paused": True})  # re-emitted though unchanged
    [again] = await events.new(1)
    assert (again.event, again.follows) == ("prefect.work-pool.paused", paused.id)

    storage = {"bundle_upload_step": {"a": 1}, "bundle_execution_step": None, "default_result_storage_block_id": None}
    await client.update_work_pool(pool.name, {"storage_configuration": storage, "description": "new"})
    [updated] = await events.new(1)
    assert updated.payload["updated_fields"] == ["description", "storage_configuration"]
    assert updated.payload["updates"]["storage_configuration"] == {
        "from": {"bundle_upload_step": None, "bundle_execution_step": None, "default_result_storage_block_id": None},
        "to": storage,
    }


async def test_pool_status_events_follow_within_ten_minutes(client, clock):
    start = clock.freeze()
    pool = await client.create_work_pool(make_pool())
    events = Events(client)
    *_, created_status = await events.new(3)

    await client.send_worker_heartbeat(pool.name, "w")
    [ready] = await events.new(1)
    assert (ready.event, ready.follows, ready.occurred) == ("prefect.work-pool.ready", None, start)
    assert ready.id != created_status.id  # the create-time status event id is never stored

    clock.advance(minutes=9, seconds=59)
    await client.update_work_pool(pool.name, {"is_paused": True})
    [paused] = await events.new(1)
    assert (paused.event, paused.follows, paused.occurred) == (
        "prefect.work-pool.paused",
        ready.id,
        start + timedelta(minutes=9, seconds=59),
    )

    clock.advance(minutes=10)
    await client.update_work_pool(pool.name, {"is_paused": False})
    [unpaused] = await events.new(1)
    assert (unpaused.event, unpaused.follows) == ("prefect.work-pool.ready", None)


async def test_pool_delete_events(client):
    pool = await client.create_work_pool(make_pool())
    low = await client.create_work_queue(pool.name, {"name": "low", "priority": 5})
    high = await client.create_work_queue(pool.name, {"name": "high", "priority": 2})
    default = await client.read_work_queue(pool.name, "default")
    events = Events(client)
    await events.new(5)

    await client.delete_work_pool(pool.name)

    deleted = await events.new(4)
    assert [(e.event, e.resource) for e in deleted] == [
        ("prefect.work-queue.deleted", queue_labels(default)),
        ("prefect.work-queue.deleted", queue_labels(high)),
        ("prefect.work-queue.deleted", queue_labels(low)),
        ("prefect.work-pool.deleted", pool_labels(pool)),
    ]
    assert [e.related for e in deleted[:3]] == [[pool_labels(pool)]] * 3
    assert deleted[3].related == [
        {"prefect.resource.id": f"prefect.work-queue.{default.id}", "prefect.resource.role": "default-queue"},
    ]


async def test_queue_events(client, clock):
    now = clock.freeze()
    pool = await client.create_work_pool(make_pool())
    events = Events(client)
    await events.new(3)

    queue = await client.create_work_queue(pool.name, {"name": "q", "is_paused": True})
    [created] = await events.new(1)
    assert (created.event, created.resource, created.related, created.occurred) == (
        "prefect.work-queue.created",
        queue_labels(queue),
        [pool_labels(pool)],
        now,
    )

    await client.update_work_queue(
        pool.name,
        "q",
        {
            "priority": 1,
            "is_paused": False,
            "concurrency_limit": 4,
            "name": "r",
            "description": "",
            "last_polled": now.isoformat(),
            "filter": {"tags": ["t"]},
        },
    )
    updated, ready = await events.new(2)  # the default queue pushed to 2 gets no event
    assert (updated.event, updated.resource, updated.related) == (
        "prefect.work-queue.updated",
        queue_labels(queue, "r"),
        [pool_labels(pool)],
    )
    assert updated.payload == {
        "updated_fields": ["name", "concurrency_limit", "priority"],
        "updates": {
            "name": {"from": "q", "to": "r"},
            "concurrency_limit": {"from": None, "to": 4},
            "priority": {"from": 2, "to": 1},
        },
    }
    assert (ready.event, ready.resource, ready.related) == (
        "prefect.work-queue.ready",
        queue_labels(queue, "r"),
        [pool_labels(pool)],
    )

    await client.update_work_queue(pool.name, "r", {"is_paused": True, "priority": 1, "description": ""})
    await client.update_work_queue(pool.name, "r", {"is_paused": True})  # already paused: no event
    await client.delete_work_queue(pool.name, "r")
    paused, deleted = await events.new(2)
    assert (paused.event, paused.payload) == ("prefect.work-queue.paused", {})
    assert (deleted.event, deleted.resource, deleted.related) == (
        "prefect.work-queue.deleted",
        queue_labels(queue, "r"),
        [pool_labels(pool)],
    )


async def test_read_events_after_an_id_with_a_count(client):
    for _ in range(3):
        await client.create_work_pool(make_pool())
    everything = await wait_until(lambda: _at_least(client, 9))

    assert [e.id for e in await client.read_events(count=4)] == [e.id for e in everything[:4]]
    after = await client.read_events(after=str(everything[2].id), count=2)
    assert [e.id for e in after] == [e.id for e in everything[3:5]]
    assert await client.read_events(after=str(everything[-1].id)) == []


async def _at_least(client, count: int):
    found = await client.read_events()
    return found if len(found) >= count else None


async def test_failed_requests_emit_nothing(client):
    pool = await client.create_work_pool(make_pool())
    await client.create_work_queue(pool.name, {"name": "q"})
    events = Events(client)
    await events.new(4)

    with pytest.raises(ObjectAlreadyExists):
        await client.create_work_pool(make_pool(name=pool.name))
    with pytest.raises(ObjectAlreadyExists):
        await client.create_work_queue(pool.name, {"name": "q"})
    with pytest.raises(ObjectConflict):
        await client.delete_work_queue(pool.name, "default")
    with pytest.raises(ObjectAlreadyExists):  # rename collision: the UPDATE fails after checks
        await client.update_work_queue(pool.name, "q", {"name": "default", "is_paused": True})
    with pytest.raises(ObjectNotFound):
        await client.update_work_pool("ghost", {"is_paused": True})
    await client.create_work_queue(pool.name, {"name": "marker"})

    [only] = await events.new(1)
    assert (only.event, only.resource["prefect.resource.name"]) == ("prefect.work-queue.created", "marker")
    assert (await client.read_work_queue(pool.name, "q")).is_paused is False
