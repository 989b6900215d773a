"""Work pools over the wire: create, read, filter, count, update, pause, delete (docs/operations.md#work-pools)."""

import asyncio
from uuid import uuid4

import pytest
from sqlalchemy import insert, update

from client import Forbidden, InvalidRequest, ObjectAlreadyExists, ObjectNotFound
from schemas.channels import Op
from schemas.work_pools import WorkPoolCreate
from services import work_pools
from services.tables import flow_run, work_pool
from tests.factories import make_pool, make_queue

RESERVED = "Work pools starting with 'Prefect' are reserved for internal use."
RESERVED_UPDATE = (
    "Work pools starting with 'Prefect' are reserved for internal use and can only be updated "
    "to set concurrency limits or pause."
)
RESERVED_DELETE = "Work pools starting with 'Prefect' are reserved for internal use and can not be deleted."
PATTERN_MSG = "String should match pattern '^[^/%&><]+$'"
TEMPLATE = {
    "job_configuration": {"command": "{{ command }}", "env": {"A": "{{ a }}"}},
    "variables": {"properties": {"command": {"type": "string", "default": "run"}, "a": {"type": "string"}}},
}
MISSING_KEYS = "The `base_job_template` must contain both a `job_configuration` key and a `variables` key."
UNDECLARED = (
    "The variables specified in the job configuration template must be present as properties "
    "in the variables schema. Your job configuration uses the following undeclared variable(s): "
)
BLOCK_ID = "2fdfbc57-3d0b-4b0b-9a3b-9d3f2c1e5a77"


async def test_create_pool_with_defaults(client):
    pool = await client.create_work_pool({"name": "plain"})

    assert pool.name == "plain"
    assert pool.type == "prefect-agent"
    assert pool.description is None
    assert pool.base_job_template == {}
    assert pool.is_paused is False
    assert pool.concurrency_limit is None
    assert pool.status is None  # prefect-agent pools never show a status
    assert pool.active_slots is None
    assert pool.storage_configuration.model_dump() == {
        "bundle_upload_step": None,
        "bundle_execution_step": None,
        "default_result_storage_block_id": None,
    }
    assert pool.created == pool.updated
    default = await client.read_work_queue("plain", "default")
    assert pool.default_queue_id == default.id
    assert (default.priority, default.description) == (1, "The work pool's default queue.")
    assert (default.is_paused, default.status, default.concurrency_limit) == (False, "NOT_READY", None)
    assert default.work_pool_id == pool.id
    assert [q.name for q in await client.read_work_queues("plain")] == ["default"]


async def test_create_pool_with_every_field(client):
    storage = {
        "bundle_upload_step": {"step": "up"},
        "bundle_execution_step": {"step": "run"},
        "default_result_storage_block_id": BLOCK_ID,
    }
    pool = await client.create_work_pool(
        make_pool(
            name="full",
            description="d",
            type="docker",
            base_job_template=TEMPLATE,
            is_paused=True,
            concurrency_limit=5,
            storage_configuration=storage,
        )
    )

    assert (pool.name, pool.description, pool.type) == ("full", "d", "docker")
    assert pool.base_job_template == TEMPLATE
    assert (pool.is_paused, pool.status, pool.concurrency_limit, pool.active_slots) == (True, "PAUSED", 5, 0)
    assert pool.storage_configuration.model_dump(mode="json") == storage
    assert (await client.read_work_pool("full")).model_dump() == pool.model_dump()


async def test_create_pool_status(client):
    assert (await client.create_work_pool(make_pool(name="a"))).status == "NOT_READY"
    assert (await client.create_work_pool(make_pool(name="b", is_paused=True))).status == "PAUSED"
    agent = await client.create_work_pool({"name": "c", "type": "prefect-agent", "is_paused": True})
    assert (agent.status, agent.is_paused) == (None, True)
    assert (await client.read_work_pool("c")).status is None


async def test_create_pool_concurrency_limit_zero_shows_active_slots(client):
    pool = await client.create_work_pool(make_pool(concurrency_limit=0))
    assert (pool.concurrency_limit, pool.active_slots) == (0, 0)
    assert (await client.read_work_pool(pool.name)).active_slots == 0


async def test_reserved_names_cannot_be_created(client):
    for name in ["Prefect", "prefect pool", "PrefectPool", "prefect-x", "PREFECTURE"]:
        with pytest.raises(Forbidden) as info:
            await client.create_work_pool(make_pool(name=name))
        assert (info.value.status, info.value.detail) == (403, RESERVED)
    assert await client.count_work_pools() == 0


async def test_prefect_later_in_the_name_is_not_reserved(client):
    assert (await client.create_work_pool(make_pool(name="my-prefect"))).name == "my-prefect"


async def test_reserved_pool_update_and_delete_rules(client, db):
    created = await client.create_work_pool(make_pool(name="to-rename"))
    async with db.engine.begin() as conn:  # a pool Prefect itself would own
        await conn.execute(update(work_pool).where(work_pool.c.id == created.id).values(name="prefect-managed"))

    await client.update_work_pool("prefect-managed", {"is_paused": True, "concurrency_limit": 3})
    pool = await client.read_work_pool("prefect-managed")
    assert (pool.is_paused, pool.status, pool.concurrency_limit) == (True, "PAUSED", 3)
    await client.update_work_pool("prefect-managed", {})  # an empty body passes the check

    for body in ({"description": "x"}, {"is_paused": False, "base_job_template": {}}):
        with pytest.raises(Forbidden) as info:
            await client.update_work_pool("prefect-managed", body)
        assert info.value.detail == RESERVED_UPDATE
    with pytest.raises(Forbidden) as info:
        await client.delete_work_pool("prefect-managed")
    assert info.value.detail == RESERVED_DELETE
    assert (await client.read_work_pool("prefect-managed")).description is None


async def test_reserved_checks_come_before_existence(client):
    with pytest.raises(Forbidden) as info:
        await client.update_work_pool("prefect-missing", {"description": "x"})
    assert info.value.detail == RESERVED_UPDATE
    with pytest.raises(Forbidden) as info:
        await client.delete_work_pool("Prefect-missing")
    assert info.value.detail == RESERVED_DELETE
    with pytest.raises(ObjectNotFound) as info:
        await client.update_work_pool("prefect-missing", {"is_paused": True})
    assert info.value.detail == 'Work pool "prefect-missing" not found.'


async def test_names_with_forbidden_characters_are_422(client):
    for name in ["a/b", "a%b", "a&b", "a>b", "a<b", ""]:
        status, body = await client._rpc.request(Op.CREATE_WORK_POOL, {"name": name})
        assert status == 422
        assert [(e["loc"], e["msg"]) for e in body["detail"]] == [(["body", "name"], PATTERN_MSG)]
        with pytest.raises(InvalidRequest):  # the client checks before sending
            await client.create_work_pool({"name": name})
    assert await client.count_work_pools() == 0


async def test_blank_names_are_422(client):
    for name in [" ", "   ", "''", '"', " ' \" ", '""']:
        status, body = await client._rpc.request(Op.CREATE_WORK_POOL, {"name": name})
        assert status == 422
        assert [e["msg"] for e in body["detail"]] == ["Value error, name cannot be an empty string"]


async def test_non_string_name_is_422(client):
    for name in [5, None, ["x"], {"a": 1}, True]:
        status, body = await client._rpc.request(Op.CREATE_WORK_POOL, {"name": name})
        assert status == 422
        assert [e["loc"] for e in body["detail"]] == [["body", "name"]]
    status, body = await client._rpc.request(Op.CREATE_WORK_POOL, {"type": "process"})
    assert (status, body["detail"][0]["type"], body["detail"][0]["loc"]) == (422, "missing", ["body", "name"])


async def test_unusual_but_valid_names_round_trip(client):
    for name in [" padded ", "line\nbreak", "ünïcödé ✓", "it's", "a.b-c_d"]:
        assert (await client.create_work_pool({"name": name})).name == name
        assert (await client.read_work_pool(name)).name == name


async def test_duplicate_name_is_409(client):
    await client.create_work_pool(make_pool(name="dup"))
    with pytest.raises(ObjectAlreadyExists) as info:
        await client.create_work_pool(make_pool(name="dup", type="other"))
    assert (info.value.status, info.value.detail) == (409, "A work pool with this name already exists.")
    assert (await client.read_work_pool("dup")).type == "process"
    assert (await client.create_work_pool(make_pool(name="DUP"))).name == "DUP"  # names are case-sensitive


async def test_concurrent_creates_of_one_name_make_one_pool(client):
    results = await asyncio.gather(
        *(client.create_work_pool(make_pool(name="race")) for _ in range(10)), return_exceptions=True
    )

    created = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, Exception)]
    assert len(created) == 1
    assert {(type(e), e.detail) for e in refused} == {
        (ObjectAlreadyExists, "A work pool with this name already exists.")
    }
    assert [q.id for q in await client.read_work_queues("race")] == [created[0].default_queue_id]


async def test_base_job_template_is_validated_on_create(client):
    undeclared = {
        "job_configuration": {"a": "{{ x }}", "b": ["{{y}}", "{{ a }}"]},
        "variables": {"properties": {"a": {}}},
    }
    for template, message in [
        ({"job_configuration": {}, "variables": {}}, MISSING_KEYS),
        ({"variables": {"properties": {}}}, MISSING_KEYS),
        ({"job_configuration": {"a": "{{ x }}"}, "variables": {"properties": {"y": {}}}}, UNDECLARED + "x."),
        (undeclared, UNDECLARED + "x ,y."),
    ]:
        status, body = await client._rpc.request(Op.CREATE_WORK_POOL, {"name": "t", "base_job_template": template})
        assert status == 422
        assert [(e["loc"], e["msg"]) for e in body["detail"]] == [
            (["body", "base_job_template"], "Value error, " + message)
        ]
    bad_default = {
        "job_configuration": {"a": "{{ a }}"},
        "variables": {"properties": {"a": {"type": "string", "default": {"foo": "bar"}}}},
    }
    with pytest.raises(InvalidRequest) as info:
        await client.create_work_pool(make_pool(name="t", base_job_template=bad_default))
    assert info.value.detail == (
        "Validation failed for work pool's job variable defaults: Validation failed for field 'a'. "
        "Failure reason: {'foo': 'bar'} is not of type 'string', 'null'"  # Prefect's test: a prefix
    )
    assert await client.count_work_pools() == 0


async def test_read_missing_pool_is_404(client):
    with pytest.raises(ObjectNotFound) as info:
        await client.read_work_pool("x")
    assert (info.value.status, info.value.detail) == (404, 'Work pool "x" not found.')


async def test_filter_pools_by_name_id_and_type(client):
    a = await client.create_work_pool(make_pool(name="A", type="docker"))
    b = await client.create_work_pool(make_pool(name="B", type="process"))
    await client.create_work_pool(make_pool(name="C", type="process"))

    async def names(work_pool_filter):
        return [p.name for p in await client.read_work_pools(work_pool_filter=work_pool_filter)]

    assert await names({"name": {"any_": ["C", "A", "missing"]}}) == ["A", "C"]
    assert await names({"id": {"any_": [str(b.id), str(uuid4())]}}) == ["B"]
    assert await names({"type": {"any_": ["process"]}}) == ["B", "C"]
    assert await names({"name": {"any_": ["A", "B"]}, "type": {"any_": ["process"]}}) == ["B"]
    assert await names({"operator": "or_", "id": {"any_": [str(a.id)]}, "type": {"any_": ["process"]}}) == [
        "A",
        "B",
        "C",
    ]
    assert await names({"name": {"any_": []}}) == []
    assert await names({"operator": "or_", "name": {"any_": []}, "type": {"any_": ["docker"]}}) == ["A"]
    assert await names({"name": {}, "type": None}) == ["A", "B", "C"]
    assert await names(None) == ["A", "B", "C"]
    assert await client.count_work_pools({"type": {"any_": ["process"]}}) == 2
    assert await client.count_work_pools({"name": {"any_": []}}) == 0
    assert await client.count_work_pools() == 3


async def test_pools_are_ordered_by_name_and_paginated(client):
    for name in ["C", "A", "D", "B"]:
        await client.create_work_pool(make_pool(name=name))

    assert [p.name for p in await client.read_work_pools()] == ["A", "B", "C", "D"]
    assert [p.name for p in await client.read_work_pools(offset=1, limit=2)] == ["B", "C"]
    assert [p.name for p in await client.read_work_pools(offset=3)] == ["D"]
    assert await client.read_work_pools(offset=10) == []
    assert await client.read_work_pools(limit=0) == []


async def test_limit_defaults_to_200_and_is_capped(client, db):
    await asyncio.gather(*(work_pools.create_work_pool(db, WorkPoolCreate(**make_pool())) for _ in range(201)))

    assert len(await client.read_work_pools()) == 200
    assert len(await client.read_work_pools(limit=200)) == 200
    assert len(await client.read_work_pools(offset=200)) == 1
    assert await client.count_work_pools() == 201
    with pytest.raises(InvalidRequest) as info:
        await client.read_work_pools(limit=201)
    assert (info.value.status, info.value.detail) == (422, "Invalid limit: must be less than or equal to 200.")
    with pytest.raises(InvalidRequest) as info:
        await client.read_work_pools(limit=-1)
    assert info.value.detail == "Invalid limit: must be greater than or equal to 0."
    status, body = await client._rpc.request(Op.READ_WORK_POOLS, {"offset": -1})
    assert (status, body["detail"][0]["loc"]) == (422, ["body", "offset"])


async def test_absent_filter_body_lists_and_counts_everything(client):
    await client.create_work_pool(make_pool(name="only"))
    assert await client._rpc.request(Op.COUNT_WORK_POOLS, None) == (200, 1)
    status, body = await client._rpc.request(Op.READ_WORK_POOLS, None)
    assert (status, [p["name"] for p in body]) == (200, ["only"])


async def _insert_runs(db, queue_id, *state_types: str) -> None:
    now = db.clock()
    rows = [
        {
            "id": uuid4(),
            "created": now,
            "updated": now,
            "name": f"run-{i}",
            "work_queue_id": queue_id,
            "state_type": state,
            "state_name": state.title(),
            "next_scheduled_start_time": now if state == "SCHEDULED" else None,
        }
        for i, state in enumerate(state_types)
    ]
    async with db.engine.begin() as conn:
        await conn.execute(insert(flow_run), rows)


async def test_active_slots_count_pending_and_running_runs(client, db):
    limited = await client.create_work_pool(make_pool(name="limited", concurrency_limit=10))
    unlimited = await client.create_work_pool(make_pool(name="unlimited"))
    busy = await client.create_work_queue("limited", make_queue(concurrency_limit=5))
    paused = await client.create_work_queue("limited", make_queue(is_paused=True))
    await _insert_runs(db, busy.id, "PENDING", "RUNNING", "CANCELLING", "SCHEDULED", "COMPLETED")
    await _insert_runs(db, paused.id, "RUNNING")
    await _insert_runs(db, unlimited.default_queue_id, "RUNNING")

    assert (await client.read_work_pool("limited")).active_slots == 3  # paused queues count here
    assert (await client.read_work_pool("unlimited")).active_slots is None
    assert [(p.name, p.active_slots) for p in await client.read_work_pools()] == [("limited", 3), ("unlimited", None)]
    assert (await client.read_work_queue("limited", busy.name)).active_slots == 2
    assert (await client.read_work_queue("limited", paused.name)).active_slots is None
    await client.update_work_pool("limited", {"concurrency_limit": None})
    assert (await client.read_work_pool("limited")).active_slots is None
    assert limited.active_slots == 0
