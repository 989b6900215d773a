"""Work pool operations: a typed body in, one service call, the result out."""

from __future__ import annotations

from handlers.rpc import Deps, handles
from schemas.channels import Op
from schemas.work_pools import (
    CountWorkPools,
    DeleteWorkPool,
    ReadWorkPool,
    ReadWorkPools,
    UpdateWorkPool,
    WorkPool,
    WorkPoolCreate,
)
from services import work_pools


@handles(Op.CREATE_WORK_POOL)
async def create_work_pool(deps: Deps, body: WorkPoolCreate) -> WorkPool:
    return await work_pools.create_work_pool(deps.db, body)


@handles(Op.READ_WORK_POOL)
async def read_work_pool(deps: Deps, body: ReadWorkPool) -> WorkPool:
    return await work_pools.read_work_pool(deps.db, body.name)


@handles(Op.READ_WORK_POOLS)
async def read_work_pools(deps: Deps, body: ReadWorkPools) -> list[WorkPool]:
    return await work_pools.read_work_pools(deps.db, body.work_pools, body.limit, body.offset)


@handles(Op.COUNT_WORK_POOLS)
async def count_work_pools(deps: Deps, body: CountWorkPools) -> int:
    return await work_pools.count_work_pools(deps.db, body.work_pools)


@handles(Op.UPDATE_WORK_POOL)
async def update_work_pool(deps: Deps, body: UpdateWorkPool) -> None:
    await work_pools.update_work_pool(deps.db, body.name, body.work_pool)


@handles(Op.DELETE_WORK_POOL)
async def delete_work_pool(deps: Deps, body: DeleteWorkPool) -> None:
    await work_pools.delete_work_pool(deps.db, body.name)
