"""Work queue operations: a typed body in, one service call, the result out."""

from __future__ import annotations

from handlers.rpc import Deps, handles, in_one_statement
from schemas.channels import Op
from schemas.work_queues import (
    CreateWorkQueue,
    DeleteWorkQueue,
    ReadWorkQueue,
    ReadWorkQueues,
    UpdateWorkQueue,
    WorkQueue,
)
from services import work_queues
from services.idempotency import Logged


@handles(Op.CREATE_WORK_QUEUE)
async def create_work_queue(deps: Deps, body: CreateWorkQueue) -> WorkQueue:
    return await work_queues.create_work_queue(deps.db, body.work_pool_name, body.work_queue)


@in_one_statement(Op.CREATE_WORK_QUEUE)
async def create_work_queue_in_one(deps: Deps, body: CreateWorkQueue, logged: Logged) -> bytes | None:
    return await work_queues.create_work_queue_in_one(deps.db, body.work_pool_name, body.work_queue, logged)


@handles(Op.READ_WORK_QUEUE)
async def read_work_queue(deps: Deps, body: ReadWorkQueue) -> WorkQueue:
    return await work_queues.read_work_queue(deps.db, body.work_pool_name, body.name)


@handles(Op.READ_WORK_QUEUES)
async def read_work_queues(deps: Deps, body: ReadWorkQueues) -> list[WorkQueue]:
    return await work_queues.read_work_queues(deps.db, body.work_pool_name, body.work_queues, body.limit, body.offset)


@handles(Op.UPDATE_WORK_QUEUE)
async def update_work_queue(deps: Deps, body: UpdateWorkQueue) -> None:
    await work_queues.update_work_queue(deps.db, body.work_pool_name, body.name, body.work_queue)


@handles(Op.DELETE_WORK_QUEUE)
async def delete_work_queue(deps: Deps, body: DeleteWorkQueue) -> None:
    await work_queues.delete_work_queue(deps.db, body.work_pool_name, body.name)
