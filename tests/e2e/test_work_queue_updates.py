"""Work queue updates and deletes over the wire: renames, re-balances, status rules
(docs/operations.md#work-queues, docs/priorities.md#re-balance)."""

from datetime import timedelta

import pytest

from client import InvalidRequest, ObjectAlreadyExists, ObjectConflict, ObjectNotFound
from schemas.channels import Op
from tests.factories import make_pool, unique, wait_until

INTEGRITY_CONFLICT = (
    "Data integrity conflict. This usually means a unique or foreign key constraint was violated. "
    "See server logs for details."
)


async def _pool_with(client, *names: str) -> str:
    pool = (await client.create_work_pool(make_pool())).name
    for name in names:
        await client.create_work_queue(pool, {"name": name})
    return pool


async def _priorities(client, pool: str) -> dict[str, int]:
    return {q.name: q.priority for q in await client.read_work_queues(pool)}


async def test_partial_update(client, clock):
    pool = await _pool_with(client)
    before = await client.create_work_queue(pool, {"name": "q", "description": "d", "concurrency_limit": 2})
    clock.advance(seconds=1)

    await client.update_work_queue(pool, "q", {"concurrency_limit": None, "filter": {"tags": ["t"]}})
    after = await client.read_work_queue(pool, "q")
    assert (after.concurrency_limit, after.active_slots, after.filter.tags) == (None, None, ["t"])
    assert (after.description, after.priority, after.is_paused, after.status) == ("d", 2, False, "NOT_READY")
    assert after.updated > before.updated


async def test_rename(client):
    pool = await _pool_with(client, "old", "taken")
    default_id = (await client.read_work_pool(pool)).default_queue_id

    await client.update_work_queue(pool, "old", {"name": "new"})
    assert (await client.read_work_queue(pool, "new")).priority == 2
    with pytest.raises(ObjectNotFound):
        await client.read_work_queue(pool, "old")

    await client.update_work_queue(pool, "default", {"name": "main"})
    assert (await client.read_work_queue(pool, "main")).id == default_id
    assert (await client.read_work_pool(pool)).default_queue_id == default_id

    with pytest.raises(ObjectAlreadyExists) as info:  # a unique violation: the name is taken
        await client.update_work_queue(pool, "new", {"name": "taken"})
    assert (info.value.status, info.value.detail) == (409, INTEGRITY_CONFLICT)
    assert list(await _priorities(client, pool)) == ["main", "new", "taken"]


async def test_rename_is_validated_like_create(client):
    pool = await _pool_with(client, "q")
    for name in ("a/b", "x%y", "a&b", "a>b", "a<b", "", None):
        status, body = await client._rpc.request(
            Op.UPDATE_WORK_QUEUE, {"work_pool_name": pool, "name": "q", "work_queue": {"name": name}}
        )
        assert (status, [e["loc"] for e in body["detail"]]) == (422, [["body", "work_queue", "name"]])
        with pytest.raises(InvalidRequest):
            await client.update_work_queue(pool, "q", {"name": name})
    assert list(await _priorities(client, pool)) == ["default", "q"]


async def test_explicit_nulls_and_unknown_fields_are_422(client):
    pool = await _pool_with(client, "q")
    for body in (
        {"priority": None},
        {"description": None},
        {"is_paused": None},
        {"priority": 0},
        {"work_pool_id": None},
        {"status": "READY"},
    ):
        status, reply = await client._rpc.request(
            Op.UPDATE_WORK_QUEUE, {"work_pool_name": pool, "name": "q", "work_queue": body}
        )
        assert (status, [e["loc"][-1] for e in reply["detail"]]) == (422, list(body))
    queue = await client.read_work_queue(pool, "q")
    assert (queue.priority, queue.description, queue.is_paused) == (2, "", False)


async def test_update_missing_pool_or_queue_is_404(client):
    pool = await _pool_with(client)
    with pytest.raises(ObjectNotFound) as info:
        await client.update_work_queue("ghost", "default", {"description": "x"})
    assert info.value.detail == 'Work pool "ghost" not found.'
    with pytest.raises(ObjectNotFound) as info:
        await client.update_work_queue(pool, "ghost", {"description": "x"})
    assert info.value.detail == f"Work pool queue '{pool}/ghost' not found."


async def test_priority_update_rebalances(client):
    pool = await _pool_with(client, "B", "C", "D", "E")  # default:1 plays A:1 of docs/priorities.md#re-balance
    await client.update_work_queue(pool, "default", {"priority": 2})
    assert await _priorities(client, pool) == {"default": 2, "B": 3, "C": 4, "D": 5, "E": 6}

    pool = await _pool_with(client, "a", "b")  # X:1, a:2, b:3; set X -> 3
    await client.update_work_queue(pool, "default", {"priority": 3})
    assert list((await _priorities(client, pool)).items()) == [("a", 2), ("default", 3), ("b", 4)]

    pool = await _pool_with(client, "a", "b")  # move the last queue first
    await client.update_work_queue(pool, "b", {"priority": 1})
    assert list((await _priorities(client, pool)).items()) == [("b", 1), ("default", 2), ("a", 3)]


async def test_pause_and_unpause_status(client, clock):
    now = clock.freeze()
    pool = await _pool_with(client, "q")

    async def status():
        return (await client.read_work_queue(pool, "q")).status

    await client.update_work_queue(pool, "q", {"is_paused": False})
    assert await status() == "NOT_READY"  # not paused: untouched
    await client.update_work_queue(pool, "q", {"is_paused": True})
    assert await status() == "PAUSED"
    await client.update_work_queue(pool, "q", {"is_paused": False})
    assert await status() == "NOT_READY"  # never polled

    for polled_ago, expected in ((0, "READY"), (30, "READY"), (60, "READY"), (61, "NOT_READY")):
        await client.update_work_queue(pool, "q", {"is_paused": True})
        last_polled = (now - timedelta(seconds=polled_ago)).isoformat()
        await client.update_work_queue(pool, "q", {"is_paused": False, "last_polled": last_polled})
        queue = await client.read_work_queue(pool, "q")
        assert (queue.is_paused, queue.status, queue.last_polled) == (
            False,
            expected,
            now - timedelta(seconds=polled_ago),
        )

    # the stored last_polled counts when the request carries none
    await client.update_work_queue(pool, "q", {"last_polled": now.isoformat(), "is_paused": True})
    clock.advance(seconds=45)
    await client.update_work_queue(pool, "q", {"is_paused": False})
    assert await status() == "READY"
    await client.update_work_queue(pool, "q", {"is_paused": True})
    clock.advance(seconds=20)
    await client.update_work_queue(pool, "q", {"is_paused": False})
    assert await status() == "NOT_READY"
    await client.update_work_queue(pool, "q", {"is_paused": True, "last_polled": None})
    await client.update_work_queue(pool, "q", {"is_paused": False})
    assert await status() == "NOT_READY"


async def test_delete_queue(client):
    pool = await _pool_with(client, "A", "B", "C")
    await client.delete_work_queue(pool, "B")
    assert await _priorities(client, pool) == {"default": 1, "A": 2, "C": 4}  # gaps stay
    with pytest.raises(ObjectNotFound) as info:
        await client.delete_work_queue(pool, "B")
    assert info.value.detail == f"Work pool queue '{pool}/B' not found."
    with pytest.raises(ObjectNotFound) as info:
        await client.delete_work_queue("ghost", "A")
    assert info.value.detail == 'Work pool "ghost" not found.'
    assert (await client.create_work_queue(pool, {"name": "D"})).priority == 3


async def test_default_queue_cannot_be_deleted_and_emits_nothing(client):
    pool = await _pool_with(client)
    await client.update_work_queue(pool, "default", {"name": "renamed"})
    last = (await client.read_events())[-1]

    with pytest.raises(ObjectConflict) as info:  # a 409, but not an already-exists
        await client.delete_work_queue(pool, "renamed")
    assert not isinstance(info.value, ObjectAlreadyExists)
    assert (info.value.status, info.value.detail) == (409, "Can't delete a pool's default queue.")
    reply = await client._rpc.exchange(Op.DELETE_WORK_QUEUE, {"work_pool_name": pool, "name": "renamed"})
    status, body, headers = reply
    assert (status, body, headers["error"]) == (409, {"detail": "Can't delete a pool's default queue."}, "conflict")

    marker = unique("marker")
    await client.create_work_queue(pool, {"name": marker})
    events = await wait_until(lambda: client.read_events(after=str(last.id)))
    assert [(e.event, e.resource["prefect.resource.name"]) for e in events] == [
        ("prefect.work-queue.created", marker),
    ]
    assert (await client.read_work_queue(pool, "renamed")).priority == 1
