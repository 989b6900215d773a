"""Deployment methods of `WorkPoolClient` (Prefect's client names)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from client.payloads import payload
from schemas.channels import Op
from schemas.deployments import Deployment, DeploymentCreate, DeploymentFilter
from schemas.work_pools import WorkPoolFilter
from schemas.work_queues import WorkQueueFilter


class DeploymentMethods:
    async def _call(self, op: Op, body: dict[str, Any] | None) -> Any:  # provided by WorkPoolClient
        raise NotImplementedError

    async def create_deployment(self, deployment: DeploymentCreate | dict[str, Any]) -> Deployment:
        return await self._call(Op.CREATE_DEPLOYMENT, payload(DeploymentCreate, deployment))

    async def read_deployment(self, deployment_id: UUID | str) -> Deployment:
        return await self._call(Op.READ_DEPLOYMENT, {"deployment_id": deployment_id})

    async def read_deployments(
        self,
        *,
        deployment_filter: DeploymentFilter | dict[str, Any] | None = None,
        work_pool_filter: WorkPoolFilter | dict[str, Any] | None = None,
        work_queue_filter: WorkQueueFilter | dict[str, Any] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Deployment]:
        """Deployments matching every filter given, by name (Prefect's filter shapes)."""
        body = {
            "deployments": payload(DeploymentFilter, deployment_filter),
            "work_pools": payload(WorkPoolFilter, work_pool_filter),
            "work_pool_queues": payload(WorkQueueFilter, work_queue_filter),
            "limit": limit,
            "offset": offset,
        }
        return await self._call(Op.READ_DEPLOYMENTS, body)
