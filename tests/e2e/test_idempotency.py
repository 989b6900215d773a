"""Writes with the same request id act once and answer the same, however often they arrive."""

from __future__ import annotations

import asyncio
import uuid

from schemas.channels import Op


async def test_a_repeated_create_makes_one_pool_and_gets_the_first_reply(client):
    request_id = uuid.uuid4().hex
    body = {"name": "once", "type": "process"}
    first = await client._rpc.request(Op.CREATE_WORK_POOL, body, request_id=request_id)
    again = await client._rpc.request(Op.CREATE_WORK_POOL, body, request_id=request_id)
    assert first[0] == again[0] == 201
    assert first[1] == again[1]
    assert await client.count_work_pools() == 1
    # a different request for the same name is a real duplicate
    other = await client._rpc.request(Op.CREATE_WORK_POOL, body, request_id=uuid.uuid4().hex)
    assert other == (409, {"detail": "A work pool with this name already exists."})


async def test_concurrent_deliveries_of_one_request_act_once(client):
    await client.create_work_pool({"name": "cq", "type": "process"})
    request_id = uuid.uuid4().hex
    body = {"work_pool_name": "cq", "work_queue": {"name": "q"}}
    replies = await asyncio.gather(
        *(client._rpc.request(Op.CREATE_WORK_QUEUE, body, request_id=request_id) for _ in range(8))
    )
    assert {status for status, _ in replies} == {201}
    assert len({reply["id"] for _, reply in replies}) == 1
    assert [q.name for q in await client.read_work_queues("cq")] == ["default", "q"]


async def test_a_state_change_repeated_is_not_judged_twice(client):
    await client.create_work_pool({"name": "st", "type": "process"})
    run = await client.create_flow_run({"work_pool_name": "st"})
    request_id = uuid.uuid4().hex
    body = {"flow_run_id": str(run.id), "state": {"type": "PENDING"}}
    first = await client._rpc.request(Op.SET_FLOW_RUN_STATE, body, request_id=request_id)
    again = await client._rpc.request(Op.SET_FLOW_RUN_STATE, body, request_id=request_id)
    # without the request id the repeat would be ABORTed (already PENDING)
    assert first[1]["status"] == again[1]["status"] == "ACCEPT"
    assert first == again


async def test_a_failed_request_may_run_again(client):
    request_id = uuid.uuid4().hex
    body = {"work_pool_name": "later", "work_queue": {"name": "q"}}
    assert (await client._rpc.request(Op.CREATE_WORK_QUEUE, body, request_id=request_id))[0] == 404
    await client.create_work_pool({"name": "later", "type": "process"})
    assert (await client._rpc.request(Op.CREATE_WORK_QUEUE, body, request_id=request_id))[0] == 201
