"""Work queues over the wire: create, read, filter, update, delete
(docs/operations.md#work-queues, docs/priorities.md)."""

import asyncio

import pytest

from client import InvalidRequest, ObjectAlreadyExists, ObjectNotFound
from schemas.channels import Op
from tests.factories import make_pool, make_queue

INTEGRITY_CONFLICT = (
    "Data integrity conflict. This usually means a unique or foreign key constraint was violated. "
    "See server logs for details."
)
PATTERN_MSG = "String should match pattern '^[^/%&><]+$'"


async def _pool(client, **overrides) -> str:
    return (await client.create_work_pool(make_pool(**overrides))).name


async def _priorities(client, pool: str) -> dict[str, int]:
    return {q.name: q.priority for q in await client.read_work_queues(pool)}


async def test_create_queue_with_defaults(client):
    pool = await client.create_work_pool(make_pool())
    queue = await client.create_work_queue(pool.name, {"name": "q"})

    assert (queue.name, queue.description, queue.is_paused, queue.priority) == ("q", "", False, 2)
    assert (queue.concurrency_limit, queue.active_slots, queue.filter, queue.last_polled) == (None, None, None, None)
    assert (queue.status, queue.work_pool_id, queue.work_pool_name) == ("NOT_READY", pool.id, pool.name)
    assert (await client.read_work_queue(pool.name, "q")).model_dump() == queue.model_dump()


async def test_create_queue_with_every_field(client):
    pool = await _pool(client)
    queue = await client.create_work_queue(
        pool,
        {
            "name": "full",
            "description": "d",
            "is_paused": True,
            "concurrency_limit": 3,
            "priority": 7,
            "filter": {"tags": ["a"], "deployment_ids": None},
        },
    )

    assert (queue.description, queue.is_paused, queue.status) == ("d", True, "PAUSED")
    assert (queue.concurrency_limit, queue.active_slots, queue.priority) == (3, 0, 7)
    assert queue.filter.model_dump() == {"tags": ["a"], "deployment_ids": None}
    assert (await client.read_work_queue(pool, "full")).status == "PAUSED"


async def test_create_queue_null_description_becomes_empty(client):
    pool = await _pool(client)
    assert (await client.create_work_queue(pool, {"name": "q", "description": None})).description == ""
    assert (await client.read_work_queue(pool, "q")).description == ""


async def test_auto_priority_takes_the_first_gap(client):
    pool = await _pool(client)
    assert [(await client.create_work_queue(pool, make_queue())).priority for _ in range(3)] == [2, 3, 4]

    gap = await _pool(client)  # [1, 99] -> 2
    await client.create_work_queue(gap, {"name": "far", "priority": 99})
    assert (await client.create_work_queue(gap, {"name": "next"})).priority == 2
    assert await _priorities(client, gap) == {"default": 1, "next": 2, "far": 99}

    low = await _pool(client)  # [2, 3] -> 1
    await client.create_work_queue(low, {"name": "A"})
    await client.update_work_queue(low, "default", {"priority": 3})
    assert await _priorities(client, low) == {"A": 2, "default": 3}
    assert (await client.create_work_queue(low, {"name": "first"})).priority == 1


async def test_explicit_priority_pushes_others_down(client):
    pool = await _pool(client)
    for name in ("A", "B"):
        await client.create_work_queue(pool, {"name": name})
    assert (await client.create_work_queue(pool, {"name": "C", "priority": 2})).priority == 2
    assert await _priorities(client, pool) == {"default": 1, "C": 2, "A": 3, "B": 4}

    other = await _pool(client)
    await client.create_work_queue(other, {"name": "A"})
    await client.create_work_queue(other, {"name": "B", "priority": 1})
    assert list((await _priorities(client, other)).items()) == [("B", 1), ("default", 2), ("A", 3)]

    far = await _pool(client)
    for name in ("A", "B", "C"):
        await client.create_work_queue(far, {"name": name})
    await client.create_work_queue(far, {"name": "N", "priority": 99})
    await client.create_work_queue(far, {"name": "E"})
    assert await _priorities(client, far) == {"default": 1, "A": 2, "B": 3, "C": 4, "E": 5, "N": 99}


async def test_create_queue_errors(client):
    pool = await client.create_work_pool(make_pool(name="p"))
    await client.create_work_queue("p", {"name": "q"})
    with pytest.raises(ObjectAlreadyExists) as info:
        await client.create_work_queue("p", {"name": "q"})
    assert (info.value.status, info.value.detail) == (
        409,
        "A work queue with this name already exists in work pool 'p'.",
    )
    with pytest.raises(ObjectNotFound) as info:
        await client.create_work_queue("nope", {"name": "q"})
    assert (info.value.status, info.value.detail) == (404, 'Work pool "nope" not found.')
    other = await _pool(client)
    assert (await client.create_work_queue(other, {"name": "q"})).name == "q"  # names are per pool
    assert (await client.create_work_queue("p", {"name": " "})).name == " "  # blank is fine for queues

    for body, loc in [
        ({"name": "a/b"}, ["body", "work_queue", "name"]),
        ({"name": ""}, ["body", "work_queue", "name"]),
        ({"name": "x", "priority": 0}, ["body", "work_queue", "priority"]),
        ({"name": "x", "priority": -1}, ["body", "work_queue", "priority"]),
        ({"name": "x", "concurrency_limit": -1}, ["body", "work_queue", "concurrency_limit"]),
        ({"name": "x", "work_pool_id": str(pool.id)}, ["body", "work_queue", "work_pool_id"]),
    ]:
        status, reply = await client._rpc.request(Op.CREATE_WORK_QUEUE, {"work_pool_name": "p", "work_queue": body})
        assert (status, [e["loc"] for e in reply["detail"]]) == (422, [loc])
        with pytest.raises(InvalidRequest):
            await client.create_work_queue("p", body)
    status, reply = await client._rpc.request(
        Op.CREATE_WORK_QUEUE, {"work_pool_name": "p", "work_queue": {"name": "a%b"}}
    )
    assert reply["detail"][0]["msg"] == PATTERN_MSG
    assert list(await _priorities(client, "p")) == ["default", "q", " "]


async def test_concurrent_creates_of_one_queue_name(client):
    pool = await _pool(client, name="p")
    results = await asyncio.gather(
        *(client.create_work_queue(pool, {"name": "q"}) for _ in range(10)), return_exceptions=True
    )

    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert {e.detail for e in results if isinstance(e, Exception)} == {
        "A work queue with this name already exists in work pool 'p'."
    }
    assert await _priorities(client, pool) == {"default": 1, "q": 2}


async def test_read_missing_queue_is_404(client):
    await client.create_work_pool(make_pool(name="p"))
    for pool, queue in (("p", "q"), ("missing", "default")):
        with pytest.raises(ObjectNotFound) as info:
            await client.read_work_queue(pool, queue)
        assert (info.value.status, info.value.detail) == (404, f"Work pool queue '{pool}/{queue}' not found.")
    with pytest.raises(ObjectNotFound) as info:
        await client.read_work_queues("missing")
    assert info.value.detail == 'Work pool "missing" not found.'


async def test_filter_queues_by_name_and_id(client):
    pool = await _pool(client)
    other = await _pool(client)
    for name in ("abc", "ABd", "xab", "a_c"):
        await client.create_work_queue(pool, {"name": name})
    await client.create_work_queue(other, {"name": "abz"})
    xab = await client.read_work_queue(pool, "xab")

    async def names(work_queue_filter):
        return [q.name for q in await client.read_work_queues(pool, work_queue_filter)]

    assert await names({"name": {"any_": ["abc", "xab", "abz"]}}) == ["abc", "xab"]
    assert await names({"name": {"startswith_": ["ab"]}}) == ["abc", "ABd"]
    assert await names({"name": {"startswith_": ["AB", "x"]}}) == ["abc", "ABd", "xab"]
    assert await names({"name": {"startswith_": ["a_"]}}) == ["abc", "ABd", "a_c"]  # `_` is a wildcard
    assert await names({"name": {"any_": ["abc", "xab"], "startswith_": ["a"]}}) == ["abc"]
    assert await names({"name": {"any_": []}}) == []
    assert await names({"name": {"startswith_": []}}) == []
    assert await names({"id": {"any_": [str(xab.id)]}}) == ["xab"]
    assert await names({"operator": "or_", "id": {"any_": [str(xab.id)]}, "name": {"any_": ["abc"]}}) == [
        "abc",
        "xab",
    ]
    assert await names({}) == ["default", "abc", "ABd", "xab", "a_c"]


async def test_queues_are_ordered_by_priority_and_paginated(client):
    pool = await _pool(client)
    for name, priority in (("c", 30), ("a", 10), ("b", 20)):
        await client.create_work_queue(pool, {"name": name, "priority": priority})

    assert [q.name for q in await client.read_work_queues(pool)] == ["default", "a", "b", "c"]
    assert [q.name for q in await client.read_work_queues(pool, offset=1, limit=2)] == ["a", "b"]
    assert [q.name for q in await client.read_work_queues(pool, offset=3)] == ["c"]
    assert await client.read_work_queues(pool, limit=0) == []
    with pytest.raises(InvalidRequest) as info:
        await client.read_work_queues(pool, limit=201)
    assert info.value.detail == "Invalid limit: must be less than or equal to 200."
    with pytest.raises(InvalidRequest) as info:
        await client.read_work_queues(pool, limit=-5)
    assert info.value.detail == "Invalid limit: must be greater than or equal to 0."
    status, _ = await client._rpc.request(Op.READ_WORK_QUEUES, {"work_pool_name": pool, "offset": -1})
    assert status == 422
