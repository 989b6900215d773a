"""Deployment methods of `WorkPoolClient` (Prefect's client names)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from client.payloads import payload
from schemas.channels import Op
from schemas.deployments import Deployment, DeploymentCreate


class DeploymentMethods:
    async def _call(self, op: Op, body: dict[str, Any] | None) -> Any:  # provided by WorkPoolClient
        raise NotImplementedError

    async def create_deployment(self, deployment: DeploymentCreate | dict[str, Any]) -> Deployment:
        return await self._call(Op.CREATE_DEPLOYMENT, payload(DeploymentCreate, deployment))

    async def read_deployment(self, deployment_id: UUID | str) -> Deployment:
        return await self._call(Op.READ_DEPLOYMENT, {"deployment_id": str(deployment_id)})
