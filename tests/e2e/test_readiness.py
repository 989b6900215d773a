"""Polls mark queues and deployments polled / READY through the ready-marker consumer."""

from __future__ import annotations

import asyncio

from client import WorkPoolClient
from tests.factories import wait_until


async def events_named(client: WorkPoolClient, name: str) -> list:
    return [e for e in await client.read_events(count=1000) if e.event == name]


async def test_poll_marks_queue_and_deployment_ready_once(client):
    await client.create_work_pool({"name": "P", "type": "process"})
    queue = await client.create_work_queue("P", {"name": "Q"})
    deployment = await client.create_deployment({"name": "d", "work_pool_name": "P", "work_queue_name": "Q"})
    assert (queue.status, deployment.status, deployment.last_polled) == ("NOT_READY", "NOT_READY", None)

    await client.get_scheduled_flow_runs_for_work_pool("P", ["Q"])

    ready = await wait_until(lambda: _queue_if_ready(client, "P", "Q"))
    assert ready.last_polled is not None
    marked = await wait_until(lambda: _deployment_if_ready(client, deployment.id))
    assert marked.last_polled is not None and marked.updated == deployment.updated
    assert (await client.read_work_queue("P", "default")).status == "NOT_READY"  # not polled
    queue_events = await wait_until(lambda: events_named(client, "prefect.work-queue.ready"))
    assert [e.resource["prefect.resource.id"] for e in queue_events] == [f"prefect.work-queue.{queue.id}"]
    deployment_events = await wait_until(lambda: events_named(client, "prefect.deployment.ready"))
    assert [e.resource["prefect.resource.id"] for e in deployment_events] == [f"prefect.deployment.{deployment.id}"]
    related = {r["prefect.resource.role"]: r["prefect.resource.id"] for r in deployment_events[0].related}
    assert related["work-queue"] == f"prefect.work-queue.{queue.id}"


async def _queue_if_ready(client, pool, name):
    queue = await client.read_work_queue(pool, name)
    return queue if queue.status == "READY" else None


async def _deployment_if_ready(client, deployment_id):
    deployment = await client.read_deployment(deployment_id)
    return deployment if deployment.status == "READY" else None


async def test_many_concurrent_polls_give_one_event_per_queue(client):
    await client.create_work_pool({"name": "M", "type": "process"})
    for name in ("a", "b", "c"):
        await client.create_work_queue("M", {"name": name})
    await asyncio.gather(*(client.get_scheduled_flow_runs_for_work_pool("M") for _ in range(30)))

    async def all_ready():
        queues = await client.read_work_queues("M")
        return all(q.status == "READY" and q.last_polled for q in queues) and queues

    queues = await wait_until(all_ready)
    assert len(queues) == 4
    # a later poll adds no event: the queues are READY already
    await client.get_scheduled_flow_runs_for_work_pool("M")
    await wait_until(lambda: _polled_after(client, "M", queues))
    names = [e.resource["prefect.resource.name"] for e in await events_named(client, "prefect.work-queue.ready")]
    assert sorted(names) == ["a", "b", "c", "default"]


async def _polled_after(client, pool, before):
    earlier = {q.id: q.last_polled for q in before}
    now = await client.read_work_queues(pool)
    return all(q.last_polled > earlier[q.id] for q in now)


async def test_paused_queue_stays_paused_but_is_marked_polled(client):
    await client.create_work_pool({"name": "Z", "type": "process"})
    await client.create_work_queue("Z", {"name": "p", "is_paused": True})
    await client.get_scheduled_flow_runs_for_work_pool("Z", ["p"])
    queue = await wait_until(lambda: _polled(client, "Z", "p"))
    assert (queue.status, queue.is_paused) == ("PAUSED", True)
    await client.get_scheduled_flow_runs_for_work_pool("Z")
    await wait_until(lambda: _queue_if_ready(client, "Z", "default"))
    assert await events_named(client, "prefect.work-queue.ready") != []
    assert (await client.read_work_queue("Z", "p")).status == "PAUSED"


async def _polled(client, pool, name):
    queue = await client.read_work_queue(pool, name)
    return queue if queue.last_polled else None
