"""Work pool operations: a typed body in, one service call, a reply out."""

from __future__ import annotations

from faststream.redis import RedisResponse

from handlers.rpc import Subscribe, reply
from schemas.channels import Op
from schemas.work_pools import (
    CountWorkPools,
    DeleteWorkPool,
    ReadWorkPool,
    ReadWorkPools,
    UpdateWorkPool,
    WorkPoolCreate,
)
from services import work_pools
from services.db import Database


def register(subscribe: Subscribe, db: Database) -> None:
    @subscribe(Op.CREATE_WORK_POOL, "Create a pool and its default queue -> 201 WorkPool | 403 | 409 | 422")
    async def create_work_pool(body: WorkPoolCreate) -> RedisResponse:
        return reply(201, await work_pools.create_work_pool(db, body))

    @subscribe(Op.READ_WORK_POOL, "Read a pool by name -> 200 WorkPool | 404")
    async def read_work_pool(body: ReadWorkPool) -> RedisResponse:
        return reply(200, await work_pools.read_work_pool(db, body.name))

    @subscribe(Op.READ_WORK_POOLS, "Filter pools, by name -> 200 list[WorkPool] | 422")
    async def read_work_pools(body: ReadWorkPools) -> RedisResponse:
        return reply(200, await work_pools.read_work_pools(db, body.work_pools, body.limit, body.offset))

    @subscribe(Op.COUNT_WORK_POOLS, "Count pools matching a filter -> 200 int")
    async def count_work_pools(body: CountWorkPools) -> RedisResponse:
        return reply(200, await work_pools.count_work_pools(db, body.work_pools))

    @subscribe(Op.UPDATE_WORK_POOL, "Update a pool (partial) -> 204 | 403 | 404 | 422")
    async def update_work_pool(body: UpdateWorkPool) -> RedisResponse:
        return reply(204, await work_pools.update_work_pool(db, body.name, body.work_pool))

    @subscribe(Op.DELETE_WORK_POOL, "Delete a pool with its queues and workers -> 204 | 403 | 404")
    async def delete_work_pool(body: DeleteWorkPool) -> RedisResponse:
        return reply(204, await work_pools.delete_work_pool(db, body.name))
