"""Workers: heartbeats (upsert + pool NOT_READY -> READY), filter and delete (spec §2.14–§2.16)."""

from __future__ import annotations

from uuid import uuid4

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from schemas.common import WorkerStatus, WorkPoolStatus
from schemas.workers import Worker, WorkerFilter
from services import events
from services.db import Database
from services.errors import NotFound
from services.filters import check_limit, worker_condition
from services.tables import work_pool, worker
from services.work_pools import get_pool


async def record_heartbeat(
    db: Database, work_pool_name: str, name: str, heartbeat_interval_seconds: int | None = None
) -> None:
    async with db.transaction() as tx:
        pool = (await get_pool(tx, work_pool_name))._mapping
        values = {
            "id": uuid4(),
            "created": tx.now,
            "updated": tx.now,
            "work_pool_id": pool["id"],
            "name": name,
            "last_heartbeat_time": tx.now,
            "heartbeat_interval_seconds": heartbeat_interval_seconds,
            "status": WorkerStatus.ONLINE,
        }
        refreshed = {"last_heartbeat_time": tx.now, "status": WorkerStatus.ONLINE, "updated": tx.now}
        if heartbeat_interval_seconds is not None:
            refreshed["heartbeat_interval_seconds"] = heartbeat_interval_seconds
        upsert = pg_insert(worker).values(values)
        await tx.execute(
            upsert.on_conflict_do_update(index_elements=["work_pool_id", "name"], set_=refreshed)
        )
        if pool["status"] == WorkPoolStatus.NOT_READY:
            status_values, status_event = events.pool_status_change(pool, WorkPoolStatus.READY, tx.now)
            # Conditional, so two concurrent first heartbeats announce READY once (Prefect: twice).
            flipped = await tx.execute(
                update(work_pool)
                .where(work_pool.c.id == pool["id"], work_pool.c.status == WorkPoolStatus.NOT_READY)
                .values(status_values)
                .returning(work_pool.c.id)
            )
            if flipped.first() is not None:
                tx.emit(status_event)


async def read_workers(
    db: Database,
    work_pool_name: str,
    worker_filter: WorkerFilter | None = None,
    limit: int | None = None,
    offset: int | None = None,
) -> list[Worker]:
    limit = check_limit(limit)
    async with db.read() as tx:
        pool = await get_pool(tx, work_pool_name)
        rows = await tx.execute(
            select(worker)
            .where(worker.c.work_pool_id == pool.id, worker_condition(worker_filter))
            .order_by(worker.c.last_heartbeat_time.desc(), worker.c.name)
            .offset(offset or 0)
            .limit(limit)
        )
        return [Worker.model_validate(row._mapping) for row in rows]


async def delete_worker(db: Database, work_pool_name: str, name: str) -> None:
    async with db.transaction() as tx:
        pool = await get_pool(tx, work_pool_name)
        deleted = await tx.execute(
            delete(worker).where(worker.c.work_pool_id == pool.id, worker.c.name == name).returning(worker.c.id)
        )
        if deleted.first() is None:
            raise NotFound("Worker not found.")
