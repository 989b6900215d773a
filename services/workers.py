"""Workers: heartbeats (upsert + pool NOT_READY -> READY), filter and delete (docs/operations.md#workers)."""

from __future__ import annotations

from sqlalchemy import delete, select

from schemas.workers import Worker, WorkerFilter
from services.db import Database
from services.errors import NotFound, pool_not_found
from services.filters import check_limit, worker_condition
from services.heartbeats import Beat, record_heartbeats
from services.tables import worker
from services.work_pools import pool_by_name


async def record_heartbeat(
    db: Database, work_pool_name: str, name: str, heartbeat_interval_seconds: int | None = None
) -> None:
    """One heartbeat: the same path as a batch from the worker channel."""
    if await record_heartbeats(db, [Beat(work_pool_name, name, heartbeat_interval_seconds)]) is None:
        raise pool_not_found(work_pool_name)


async def read_workers(
    db: Database,
    work_pool_name: str,
    worker_filter: WorkerFilter | None = None,
    limit: int | None = None,
    offset: int | None = None,
) -> list[Worker]:
    limit = check_limit(limit)
    async with db.read() as tx:
        pool = await pool_by_name(tx, work_pool_name)
        rows = await tx.execute(
            select(worker)
            .where(worker.c.work_pool_id == pool["id"], worker_condition(worker_filter))
            .order_by(worker.c.last_heartbeat_time.desc(), worker.c.name)
            .offset(offset or 0)
            .limit(limit)
        )
        return [Worker.model_validate(row) for row in rows.mappings()]


async def delete_worker(db: Database, work_pool_name: str, name: str) -> None:
    async with db.transaction() as tx:
        pool = await pool_by_name(tx, work_pool_name)
        deleted = await tx.execute(
            delete(worker).where(worker.c.work_pool_id == pool["id"], worker.c.name == name).returning(worker.c.id)
        )
        if deleted.first() is None:
            raise NotFound("Worker not found.")
