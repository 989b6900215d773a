"""Work pools: create, read, filter, count, update, delete (docs/operations.md#work-pools,
docs/statuses.md#pool-status)."""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID, uuid4

from sqlalchemy import case, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import RowMapping

from schemas.common import WorkPoolStatus
from schemas.work_pools import WorkPool, WorkPoolCreate, WorkPoolFilter, WorkPoolUpdate
from services import events
from services.db import Database, Row, Statement, Tx
from services.errors import AlreadyExists, Forbidden, Invalid, pool_not_found
from services.filters import check_limit, pool_condition
from services.job_templates import JobVariableDefaultsError, check_variables_schema, validate_job_variable_defaults
from services.tables import flow_run, work_pool, work_queue, worker

AGENT_TYPE = "prefect-agent"
RESERVED = "Work pools starting with 'Prefect' are reserved for internal use."
RESERVED_UPDATE = (
    "Work pools starting with 'Prefect' are reserved for internal use and can only be updated "
    "to set concurrency limits or pause."
)
RESERVED_DELETE = "Work pools starting with 'Prefect' are reserved for internal use and can not be deleted."
DEFAULT_QUEUE_DESCRIPTION = "The work pool's default queue."
ACTIVE_STATES = ("PENDING", "RUNNING")
UPDATE_EVENT_FIELDS = ("description", "base_job_template", "concurrency_limit", "storage_configuration")

_pool_active = (
    select(func.count())
    .select_from(flow_run.join(work_queue, flow_run.c.work_queue_id == work_queue.c.id))
    .where(work_queue.c.work_pool_id == work_pool.c.id, flow_run.c.state_type.in_(ACTIVE_STATES))
    .scalar_subquery()
)
ACTIVE_SLOTS = case((work_pool.c.concurrency_limit.is_(None), None), else_=_pool_active).label("active_slots")
"""PENDING + RUNNING runs in any queue of the pool (paused queues included), when limited."""

READ_POOL = Statement.of(
    """
    SELECT p.*,
           CASE WHEN p.concurrency_limit IS NULL THEN NULL
                ELSE (SELECT count(*) FROM flow_run r JOIN work_queue q ON q.id = r.work_queue_id
                       WHERE q.work_pool_id = p.id AND r.state_type IN ('PENDING', 'RUNNING'))
           END AS active_slots
      FROM work_pool p
     WHERE p.name = :name
    """
)
"""A pool with its ACTIVE_SLOTS, for the hot path of reads (services.db.Statement)."""


def is_reserved(name: str) -> bool:
    return name.lower().startswith("prefect")


def to_work_pool(row: Row) -> WorkPool:
    """A pool row (with its `active_slots`) as the model; an agent pool has no status."""
    pool = WorkPool.model_validate(row)
    if pool.type == AGENT_TYPE:
        pool.status = None
    return pool


PoolLock = Literal["for_change", "for_delete"]
"""`for_change` (FOR NO KEY UPDATE) serialises changes to the pool's queues, priorities and
claims while rows that reference it stay insertable; `for_delete` (FOR UPDATE) before deleting it."""


async def pool_by_name(tx: Tx, name: str, *, lock: PoolLock | None = None) -> RowMapping:
    """The pool row named `name`, or 404."""
    query = select(work_pool).where(work_pool.c.name == name)
    if lock is not None:
        query = query.with_for_update(key_share=lock == "for_change")
    row = (await tx.execute(query)).mappings().first()
    if row is None:
        raise pool_not_found(name)
    return row


async def create_work_pool(db: Database, data: WorkPoolCreate) -> WorkPool:
    if is_reserved(data.name):
        raise Forbidden(RESERVED)
    try:
        validate_job_variable_defaults(data.base_job_template)
    except JobVariableDefaultsError as exc:
        raise Invalid(str(exc)) from exc
    async with db.transaction() as tx:
        now, queue_id = tx.now, uuid4()
        paused = data.is_paused and data.type != AGENT_TYPE
        values = {
            **data.model_dump(mode="json"),
            "id": uuid4(),
            "created": now,
            "updated": now,
            "status": WorkPoolStatus.PAUSED if paused else WorkPoolStatus.NOT_READY,
            "default_queue_id": queue_id,
            "next_priority": 2,  # after the default queue's 1 (docs/priorities.md#concurrency)
        }
        inserted = await tx.execute(
            pg_insert(work_pool).values(values).on_conflict_do_nothing(index_elements=["name"]).returning(work_pool)
        )
        pool = inserted.mappings().first()
        if pool is None:
            raise AlreadyExists("A work pool with this name already exists.")
        queue = {
            "id": queue_id,
            "created": now,
            "updated": now,
            "work_pool_id": pool["id"],
            "name": "default",
            "description": DEFAULT_QUEUE_DESCRIPTION,
            "is_paused": False,
            "priority": 1,
            "status": WorkPoolStatus.NOT_READY,
        }
        await tx.execute(insert(work_queue).values(queue))
        tx.emit(events.queue_event("created", queue, pool, now))
        tx.emit(events.pool_event("created", pool, now))
        status_event = events.STATUS_EVENT[pool["status"]]
        tx.emit(events.event(f"prefect.work-pool.{status_event}", events.pool_resource(pool, role=False), now))
    return to_work_pool({**pool, "active_slots": 0 if pool["concurrency_limit"] is not None else None})


async def read_work_pool(db: Database, name: str) -> WorkPool:
    async with db.read() as tx:
        row = await tx.fetchrow(READ_POOL, {"name": name})
    if row is None:
        raise pool_not_found(name)
    return to_work_pool(dict(row))


async def read_work_pools(
    db: Database, work_pool_filter: WorkPoolFilter | None = None, limit: int | None = None, offset: int = 0
) -> list[WorkPool]:
    limit = check_limit(limit)
    query = (
        select(work_pool, ACTIVE_SLOTS)
        .where(pool_condition(work_pool_filter))
        .order_by(work_pool.c.name)
        .offset(offset)
        .limit(limit)
    )
    async with db.read() as tx:
        rows = (await tx.execute(query)).mappings().all()
    return [to_work_pool(row) for row in rows]


async def count_work_pools(db: Database, work_pool_filter: WorkPoolFilter | None = None) -> int:
    async with db.read() as tx:
        query = select(func.count()).select_from(work_pool).where(pool_condition(work_pool_filter))
        count: int = (await tx.execute(query)).scalar_one()
    return count


async def update_work_pool(db: Database, name: str, data: WorkPoolUpdate) -> None:
    fields = data.model_fields_set
    if is_reserved(name) and fields - {"is_paused", "concurrency_limit"}:
        raise Forbidden(RESERVED_UPDATE)
    if "base_job_template" in fields:
        try:
            check_variables_schema(data.base_job_template)
        except JobVariableDefaultsError as exc:
            raise Invalid(str(exc)) from exc
    changes = data.model_dump(mode="json", include=fields)
    async with db.transaction() as tx:
        pool = await pool_by_name(tx, name, lock="for_change")
        values: dict[str, Any] = {**changes, "updated": tx.now}
        status_event = None
        if "is_paused" in fields and pool["type"] != AGENT_TYPE:
            status = WorkPoolStatus.PAUSED if data.is_paused else await _unpaused_status(tx, pool["id"])
            status_values, status_event = events.pool_status_change(pool, status, tx.now)
            values.update(status_values)
        await tx.execute(update(work_pool).where(work_pool.c.id == pool["id"]).values(values))
        payload = events.updated_payload(pool, changes, UPDATE_EVENT_FIELDS)
        if payload:
            tx.emit(events.pool_event("updated", pool, tx.now, payload=payload))
        tx.wake(name)  # un-paused or a larger limit: waiting pollers look again
        if status_event:
            tx.emit(status_event)


async def _unpaused_status(tx: Tx, pool_id: UUID) -> WorkPoolStatus:
    online = await tx.execute(
        select(worker.c.id).where(worker.c.work_pool_id == pool_id, worker.c.status == "ONLINE").limit(1)
    )
    return WorkPoolStatus.READY if online.first() else WorkPoolStatus.NOT_READY


async def delete_work_pool(db: Database, name: str) -> None:
    if is_reserved(name):
        raise Forbidden(RESERVED_DELETE)
    async with db.transaction() as tx:
        pool = await pool_by_name(tx, name, lock="for_delete")
        queues = await tx.execute(
            select(work_queue).where(work_queue.c.work_pool_id == pool["id"]).order_by(work_queue.c.priority)
        )
        for queue in queues.mappings():
            tx.emit(events.queue_event("deleted", queue, pool, tx.now))
        tx.emit(events.pool_event("deleted", pool, tx.now))
        await tx.execute(delete(work_pool).where(work_pool.c.id == pool["id"]))
