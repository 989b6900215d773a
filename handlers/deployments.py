"""Deployment operations: a typed body in, one service call, the result out."""

from __future__ import annotations

from handlers.rpc import Deps, handles
from schemas.channels import Op
from schemas.deployments import Deployment, DeploymentCreate, ReadDeployment, ReadDeployments
from services import deployments


@handles(Op.CREATE_DEPLOYMENT)
async def create_deployment(deps: Deps, body: DeploymentCreate) -> Deployment:
    return await deployments.create_deployment(deps.db, body)


@handles(Op.READ_DEPLOYMENT)
async def read_deployment(deps: Deps, body: ReadDeployment) -> Deployment:
    return await deployments.read_deployment(deps.db, body.deployment_id)


@handles(Op.READ_DEPLOYMENTS)
async def read_deployments(deps: Deps, body: ReadDeployments) -> list[Deployment]:
    return await deployments.read_deployments(deps.db, body)
