"""Worker operations over RPC: a typed body in, one service call, a reply out."""

from __future__ import annotations

from faststream.redis import RedisResponse

from handlers.rpc import Subscribe, reply
from schemas.channels import Op
from schemas.workers import DeleteWorker, ReadWorkers, WorkerHeartbeat
from services import workers
from services.db import Database


def register(subscribe: Subscribe, db: Database) -> None:
    @subscribe(Op.WORKER_HEARTBEAT, "Record a worker heartbeat (creates the worker) -> 204 | 404 | 422")
    async def worker_heartbeat(body: WorkerHeartbeat) -> RedisResponse:
        await workers.record_heartbeat(db, body.work_pool_name, body.name, body.heartbeat_interval_seconds)
        return reply(204)

    @subscribe(Op.READ_WORKERS, "Filter a pool's workers, latest heartbeat first -> 200 list[Worker] | 404")
    async def read_workers(body: ReadWorkers) -> RedisResponse:
        return reply(200, await workers.read_workers(db, body.work_pool_name, body.workers, body.limit, body.offset))

    @subscribe(Op.DELETE_WORKER, "Delete a worker of a pool -> 204 | 404")
    async def delete_worker(body: DeleteWorker) -> RedisResponse:
        return reply(204, await workers.delete_worker(db, body.work_pool_name, body.name))
