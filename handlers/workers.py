"""Worker operations over the request streams: a typed body in, one service call, the result out."""

from __future__ import annotations

from handlers.rpc import Deps, handles
from schemas.channels import Op
from schemas.workers import DeleteWorker, ReadWorkers, Worker, WorkerHeartbeat
from services import workers


@handles(Op.WORKER_HEARTBEAT)
async def worker_heartbeat(deps: Deps, body: WorkerHeartbeat) -> None:
    await workers.record_heartbeat(deps.db, body.work_pool_name, body.name, body.heartbeat_interval_seconds)


@handles(Op.READ_WORKERS)
async def read_workers(deps: Deps, body: ReadWorkers) -> list[Worker]:
    return await workers.read_workers(deps.db, body.work_pool_name, body.workers, body.limit, body.offset)


@handles(Op.DELETE_WORKER)
async def delete_worker(deps: Deps, body: DeleteWorker) -> None:
    await workers.delete_worker(deps.db, body.work_pool_name, body.name)
