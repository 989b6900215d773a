"""Deployments: create and read; readiness is applied by services/readiness.py and the foreman."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import insert, select

from schemas.deployments import Deployment, DeploymentCreate
from services.db import Database, Tx
from services.errors import NotFound, queue_not_found
from services.tables import deployment, work_pool, work_queue
from services.work_pools import get_pool

DEPLOYMENTS = select(
    deployment,
    work_queue.c.name.label("work_queue_name"),
    work_pool.c.name.label("work_pool_name"),
).select_from(
    deployment.outerjoin(work_queue, work_queue.c.id == deployment.c.work_queue_id).outerjoin(
        work_pool, work_pool.c.id == work_queue.c.work_pool_id
    )
)


async def resolve_queue(tx: Tx, work_pool_name: str, work_queue_name: str | None) -> tuple[Any, Any]:
    """The pool and its named queue (the default queue when no name is given), or 404."""
    pool = (await get_pool(tx, work_pool_name))._mapping
    condition = (
        work_queue.c.id == pool["default_queue_id"] if work_queue_name is None else work_queue.c.name == work_queue_name
    )
    queue = (
        (await tx.execute(select(work_queue).where(work_queue.c.work_pool_id == pool["id"], condition)))
        .mappings()
        .first()
    )
    if queue is None:
        raise queue_not_found(work_pool_name, work_queue_name or "default")
    return pool, queue


async def create_deployment(db: Database, data: DeploymentCreate) -> Deployment:
    async with db.transaction() as tx:
        _, queue = await resolve_queue(tx, data.work_pool_name, data.work_queue_name)
        values = {
            **data.model_dump(exclude={"work_pool_name", "work_queue_name"}),
            "id": uuid4(),
            "created": tx.now,
            "updated": tx.now,
            "work_queue_id": queue["id"],
            "status": "NOT_READY",
        }
        await tx.execute(insert(deployment).values(values))
        row = (await tx.execute(DEPLOYMENTS.where(deployment.c.id == values["id"]))).first()
    return Deployment.model_validate(row._mapping)


async def read_deployment(db: Database, deployment_id: UUID) -> Deployment:
    async with db.read() as tx:
        row = (await tx.execute(DEPLOYMENTS.where(deployment.c.id == deployment_id))).first()
    if row is None:
        raise NotFound("Deployment not found.")
    return Deployment.model_validate(row._mapping)
