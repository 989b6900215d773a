"""Work queue operations: a typed body in, one service call, a reply out."""

from __future__ import annotations

from faststream.redis import RedisResponse

from handlers.rpc import Subscribe, reply
from schemas.channels import Op
from schemas.work_queues import CreateWorkQueue, DeleteWorkQueue, ReadWorkQueue, ReadWorkQueues, UpdateWorkQueue
from services import work_queues
from services.db import Database


def register(subscribe: Subscribe, db: Database) -> None:
    @subscribe(Op.CREATE_WORK_QUEUE, "Create a queue in a pool -> 201 WorkQueue | 404 | 409 | 422")
    async def create_work_queue(body: CreateWorkQueue) -> RedisResponse:
        return reply(201, await work_queues.create_work_queue(db, body.work_pool_name, body.work_queue))

    @subscribe(Op.READ_WORK_QUEUE, "Read a queue of a pool -> 200 WorkQueue | 404")
    async def read_work_queue(body: ReadWorkQueue) -> RedisResponse:
        return reply(200, await work_queues.read_work_queue(db, body.work_pool_name, body.name))

    @subscribe(Op.READ_WORK_QUEUES, "Filter a pool's queues, by priority -> 200 list[WorkQueue] | 404 | 422")
    async def read_work_queues(body: ReadWorkQueues) -> RedisResponse:
        queues = await work_queues.read_work_queues(db, body.work_pool_name, body.work_queues, body.limit, body.offset)
        return reply(200, queues)

    @subscribe(Op.UPDATE_WORK_QUEUE, "Update a queue (partial) -> 204 | 404 | 409 | 422")
    async def update_work_queue(body: UpdateWorkQueue) -> RedisResponse:
        return reply(204, await work_queues.update_work_queue(db, body.work_pool_name, body.name, body.work_queue))

    @subscribe(Op.DELETE_WORK_QUEUE, "Delete a queue (not the default one) -> 204 | 404 | 409")
    async def delete_work_queue(body: DeleteWorkQueue) -> RedisResponse:
        return reply(204, await work_queues.delete_work_queue(db, body.work_pool_name, body.name))
