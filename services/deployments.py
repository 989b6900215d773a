"""Deployments: create and read; readiness is applied by services/readiness.py and the foreman."""

from __future__ import annotations

from uuid import UUID, uuid4

from sqlalchemy import insert, select
from sqlalchemy.engine import RowMapping

from schemas.deployments import Deployment, DeploymentCreate, ReadDeployments
from services.db import Database, Row, Tx
from services.errors import NotFound
from services.filters import check_limit, deployment_condition, pool_condition, queue_condition
from services.tables import deployment, work_pool, work_queue
from services.work_pools import pool_by_name
from services.work_queues import queue_by_name

DEPLOYMENTS = select(
    deployment,
    work_queue.c.name.label("work_queue_name"),
    work_pool.c.name.label("work_pool_name"),
).select_from(
    deployment.outerjoin(work_queue, work_queue.c.id == deployment.c.work_queue_id).outerjoin(
        work_pool, work_pool.c.id == work_queue.c.work_pool_id
    )
)


def to_deployment(row: Row) -> Deployment:
    """A row of `DEPLOYMENTS` as the model."""
    return Deployment.model_validate(row)


async def deployment_by_id(tx: Tx, deployment_id: UUID) -> RowMapping:
    """The deployment row, or 404."""
    row = (await tx.execute(select(deployment).where(deployment.c.id == deployment_id))).mappings().first()
    if row is None:
        raise NotFound("Deployment not found.")
    return row


async def create_deployment(db: Database, data: DeploymentCreate) -> Deployment:
    async with db.transaction() as tx:
        pool = await pool_by_name(tx, data.work_pool_name)
        queue = await queue_by_name(tx, pool, data.work_queue_name)
        values = {
            **data.model_dump(exclude={"work_pool_name", "work_queue_name"}),
            "id": uuid4(),
            "created": tx.now,
            "updated": tx.now,
            "work_queue_id": queue["id"],
            "status": "NOT_READY",
        }
        await tx.execute(insert(deployment).values(values))
        row = (await tx.execute(DEPLOYMENTS.where(deployment.c.id == values["id"]))).mappings().one()
    return to_deployment(row)


async def read_deployment(db: Database, deployment_id: UUID) -> Deployment:
    async with db.read() as tx:
        row = (await tx.execute(DEPLOYMENTS.where(deployment.c.id == deployment_id))).mappings().first()
    if row is None:
        raise NotFound("Deployment not found.")
    return to_deployment(row)


async def read_deployments(db: Database, request: ReadDeployments) -> list[Deployment]:
    """Deployments matching every filter given, by name."""
    query = (
        DEPLOYMENTS.where(
            deployment_condition(request.deployments),
            pool_condition(request.work_pools),
            queue_condition(request.work_pool_queues),
        )
        .order_by(deployment.c.name, deployment.c.id)
        .limit(check_limit(request.limit))
        .offset(request.offset)
    )
    async with db.read() as tx:
        rows = (await tx.execute(query)).mappings().all()
    return [to_deployment(row) for row in rows]
