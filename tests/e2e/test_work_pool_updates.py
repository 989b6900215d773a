"""Work pool updates over the wire: partial updates, explicit nulls, pause/unpause status, delete
(docs/operations.md#work-pools, docs/statuses.md#pool-status)."""

from uuid import UUID, uuid4

import pytest
from sqlalchemy import func, insert, select, update

from client import InvalidRequest, ObjectNotFound
from schemas.channels import Op
from services.tables import flow_run, work_pool, work_queue, worker
from tests.factories import make_pool, make_queue

TEMPLATE = {
    "job_configuration": {"command": "{{ command }}"},
    "variables": {"properties": {"command": {"type": "string"}}},
}
BLOCK_ID = "2fdfbc57-3d0b-4b0b-9a3b-9d3f2c1e5a77"


async def test_partial_update_changes_only_given_fields(client, clock):
    created = await client.create_work_pool(
        make_pool(
            description="before",
            base_job_template=TEMPLATE,
            concurrency_limit=2,
            storage_configuration={"default_result_storage_block_id": BLOCK_ID},
        )
    )
    clock.advance(seconds=5)

    await client.update_work_pool(created.name, {})
    assert (await client.read_work_pool(created.name)).updated > created.updated  # even when empty
    await client.update_work_pool(created.name, {"description": "after"})
    pool = await client.read_work_pool(created.name)
    assert pool.description == "after"
    assert pool.updated > created.updated
    assert pool.model_dump(exclude={"description", "updated"}) == created.model_dump(exclude={"description", "updated"})

    await client.update_work_pool(
        created.name,
        {
            "base_job_template": {},
            "concurrency_limit": 7,
            "storage_configuration": {},
        },
    )
    pool = await client.read_work_pool(created.name)
    assert (pool.base_job_template, pool.concurrency_limit, pool.active_slots) == ({}, 7, 0)
    assert pool.storage_configuration.default_result_storage_block_id is None
    assert pool.description == "after"


async def test_update_explicit_nulls(client):
    created = await client.create_work_pool(make_pool(description="d", concurrency_limit=4))

    await client.update_work_pool(created.name, {"description": None, "concurrency_limit": None})
    pool = await client.read_work_pool(created.name)
    assert (pool.description, pool.concurrency_limit, pool.active_slots) == (None, None, None)

    for field in ("is_paused", "storage_configuration", "base_job_template"):
        status, body = await client._rpc.request(
            Op.UPDATE_WORK_POOL, {"name": created.name, "work_pool": {field: None}}
        )
        assert status == 422
        assert [e["loc"] for e in body["detail"]] == [["body", "work_pool", field]]
        with pytest.raises(InvalidRequest):
            await client.update_work_pool(created.name, {field: None})
    assert (await client.read_work_pool(created.name)).model_dump() == pool.model_dump()


async def test_update_rejects_unknown_and_immutable_fields(client):
    created = await client.create_work_pool(make_pool())
    for body in ({"name": "renamed"}, {"type": "docker"}, {"concurrency_limit": -1}):
        status, _ = await client._rpc.request(Op.UPDATE_WORK_POOL, {"name": created.name, "work_pool": body})
        assert status == 422
    assert (await client.read_work_pool(created.name)).type == "process"


async def test_update_checks_the_template_structure_but_not_its_defaults(client):
    created = await client.create_work_pool(make_pool())
    status, body = await client._rpc.request(
        Op.UPDATE_WORK_POOL,
        {
            "name": created.name,
            "work_pool": {"base_job_template": {"job_configuration": {"a": 1}}},
        },
    )
    assert (status, [e["loc"] for e in body["detail"]]) == (422, [["body", "work_pool", "base_job_template"]])
    bad_default = {
        "job_configuration": {"a": "{{ a }}"},
        "variables": {"properties": {"a": {"type": "string", "default": 5}}},
    }
    # defaults are not re-validated on update, as in Prefect (docs/job-templates.md#defaults)
    await client.update_work_pool(created.name, {"base_job_template": bad_default})
    assert (await client.read_work_pool(created.name)).base_job_template == bad_default


async def test_update_missing_pool_is_404(client):
    with pytest.raises(ObjectNotFound) as info:
        await client.update_work_pool("ghost", {"description": "x"})
    assert info.value.detail == 'Work pool "ghost" not found.'


async def _set_workers_offline(db, pool_id: UUID) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(update(worker).where(worker.c.work_pool_id == pool_id).values(status="OFFLINE"))


async def test_pause_and_unpause_status_follows_online_workers(client, db):
    pool = await client.create_work_pool(make_pool())

    async def status():
        return (await client.read_work_pool(pool.name)).status

    await client.update_work_pool(pool.name, {"is_paused": False})
    assert await status() == "NOT_READY"
    await client.update_work_pool(pool.name, {"is_paused": True})
    assert await status() == "PAUSED"
    await client.update_work_pool(pool.name, {"is_paused": False})
    assert await status() == "NOT_READY"

    await client.send_worker_heartbeat(pool.name, "w1")
    assert await status() == "READY"
    await client.update_work_pool(pool.name, {"is_paused": True})
    await client.send_worker_heartbeat(pool.name, "w1")
    assert await status() == "PAUSED"  # a heartbeat never un-pauses
    await client.update_work_pool(pool.name, {"description": "no status change"})
    assert await status() == "PAUSED"
    await client.update_work_pool(pool.name, {"is_paused": False})
    assert await status() == "READY"

    await _set_workers_offline(db, pool.id)
    await client.update_work_pool(pool.name, {"is_paused": False})
    assert await status() == "NOT_READY"


async def test_pausing_an_agent_pool_keeps_status_hidden(client, db):
    pool = await client.create_work_pool({"name": "agent"})
    await client.update_work_pool("agent", {"is_paused": True})
    read = await client.read_work_pool("agent")
    assert (read.is_paused, read.status) == (True, None)
    async with db.engine.connect() as conn:
        stored = await conn.scalar(select(work_pool.c.status).where(work_pool.c.id == pool.id))
    assert stored == "NOT_READY"


async def test_delete_pool_cascades_to_queues_and_workers(client, db):
    pool = await client.create_work_pool(make_pool())
    other = await client.create_work_pool(make_pool())
    for target in (pool, other):
        await client.create_work_queue(target.name, make_queue(name="q"))
        await client.send_worker_heartbeat(target.name, "w")
    run_id = uuid4()
    async with db.engine.begin() as conn:
        await conn.execute(
            insert(flow_run).values(
                id=run_id,
                created=db.clock(),
                updated=db.clock(),
                name="run",
                work_queue_id=pool.default_queue_id,
                work_queue_name="default",
                state_type="SCHEDULED",
                state_name="Scheduled",
                next_scheduled_start_time=db.clock(),
            )
        )

    await client.delete_work_pool(pool.name)

    with pytest.raises(ObjectNotFound) as info:
        await client.read_work_pool(pool.name)
    assert info.value.detail == f'Work pool "{pool.name}" not found.'
    with pytest.raises(ObjectNotFound) as info:
        await client.read_work_queue(pool.name, "q")
    assert info.value.detail == f"Work pool queue '{pool.name}/q' not found."
    async with db.engine.connect() as conn:
        for table in (work_queue, worker):
            count = select(func.count()).select_from(table).where(table.c.work_pool_id == pool.id)
            assert await conn.scalar(count) == 0
        run = (await conn.execute(select(flow_run).where(flow_run.c.id == run_id))).mappings().one()
    assert (run["work_queue_id"], run["work_queue_name"]) == (None, "default")  # runs stay, unassigned
    assert [q.name for q in await client.read_work_queues(other.name)] == ["default", "q"]
    assert [w.name for w in await client.read_workers_for_work_pool(other.name)] == ["w"]
    with pytest.raises(ObjectNotFound) as info:
        await client.delete_work_pool(pool.name)
    assert info.value.detail == f'Work pool "{pool.name}" not found.'
