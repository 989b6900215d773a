"""A claim-mode poll is a write: sent again with its request id (a client retry after 503/504, a
redelivery), it gets the batch it first leased, never a second one. A plain poll is a read."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import func, select

from schemas.channels import Op
from services.tables import flow_run, request_log
from tests.factories import make_pool, unique


async def _pool_with_runs(client, count: int, **pool_fields) -> str:
    pool = (await client.create_work_pool(make_pool(**pool_fields))).name
    deployment = await client.create_deployment({"name": "d", "work_pool_name": pool})
    for i in range(count):
        await client.create_flow_run({"deployment_id": deployment.id, "name": f"run-{i}"})
    return pool


def _poll(pool: str, **claim) -> dict:
    return {"work_pool_name": pool, "limit": 2, **claim}


async def _leased(db) -> int:
    async with db.read() as tx:
        return (await tx.execute(select(func.count()).where(flow_run.c.lease_token.is_not(None)))).scalar_one()


async def _logged(db, request_id: str) -> list[tuple[str, int]]:
    async with db.read() as tx:
        rows = await tx.execute(
            select(request_log.c.op, request_log.c.status).where(request_log.c.request_id == request_id)
        )
        return [tuple(row) for row in rows]


async def test_a_claim_poll_sent_again_with_its_request_id_returns_the_same_batch(client, db):
    pool = await _pool_with_runs(client, 4)
    body, request_id = _poll(pool, claim=True, worker_name="w1"), uuid.uuid4().hex

    first = await client._rpc.request(Op.GET_SCHEDULED_FLOW_RUNS, body, request_id=request_id)
    repeats = await asyncio.gather(
        *[client._rpc.request(Op.GET_SCHEDULED_FLOW_RUNS, body, request_id=request_id) for _ in range(3)]
    )

    status, runs = first
    assert status == 200 and len(runs) == 2
    assert {run["lease"]["owner"] for run in runs} == {"w1"}
    assert all(repeat == first for repeat in repeats)  # same runs, same lease tokens and expiry
    assert await _leased(db) == 2
    assert await _logged(db, request_id) == [("get_scheduled_flow_runs", 200)]

    # a new request id is a new poll: it leases the two runs left
    status, others = await client._rpc.request(Op.GET_SCHEDULED_FLOW_RUNS, body, request_id=uuid.uuid4().hex)
    assert status == 200
    assert {r["flow_run"]["id"] for r in others}.isdisjoint({r["flow_run"]["id"] for r in runs})
    assert len(others) == 2 and await _leased(db) == 4


async def test_a_claim_poll_that_failed_runs_again_with_its_request_id(client, db):
    """A failed request leaves no record: the same id, once the pool exists, polls for real."""
    name, request_id = unique("later"), uuid.uuid4().hex
    body = _poll(name, claim=True, worker_name="w1")
    status, reply = await client._rpc.request(Op.GET_SCHEDULED_FLOW_RUNS, body, request_id=request_id)
    assert (status, reply) == (404, {"detail": f'Work pool "{name}" not found.'})
    assert await _logged(db, request_id) == []

    await _pool_with_runs(client, 1, name=name)
    status, runs = await client._rpc.request(Op.GET_SCHEDULED_FLOW_RUNS, body, request_id=request_id)
    assert status == 200 and [run["lease"]["owner"] for run in runs] == ["w1"]
    assert await _logged(db, request_id) == [("get_scheduled_flow_runs", 200)]


async def test_a_plain_poll_is_a_read_and_leaves_no_record(client, db):
    pool = await _pool_with_runs(client, 3)
    request_id = uuid.uuid4().hex
    replies = [
        await client._rpc.request(Op.GET_SCHEDULED_FLOW_RUNS, _poll(pool), request_id=request_id) for _ in range(2)
    ]
    assert [status for status, _ in replies] == [200, 200]
    assert [[r["lease"] for r in runs] for _, runs in replies] == [[None, None], [None, None]]
    assert await _logged(db, request_id) == []
    assert await _leased(db) == 0
