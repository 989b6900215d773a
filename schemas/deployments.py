"""Deployments: the minimal model the poll and the readiness rules need (docs/operations.md#deployments)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from pydantic import Field

from schemas.common import ActionModel, DeploymentStatus, ResponseModel, UTCDateTime


class DeploymentCreate(ActionModel):
    name: str = Field(min_length=1)
    work_pool_name: str
    work_queue_name: str | None = None
    """The pool's default queue when omitted."""
    flow_id: UUID | None = None
    paused: bool = False
    job_variables: dict[str, Any] = Field(default_factory=dict)


class Deployment(ResponseModel):
    id: UUID
    created: UTCDateTime
    updated: UTCDateTime
    name: str
    flow_id: UUID | None = None
    work_queue_id: UUID | None = None
    work_queue_name: str | None = None
    work_pool_name: str | None = None
    paused: bool
    status: DeploymentStatus
    last_polled: UTCDateTime | None = None
    job_variables: dict[str, Any]


class ReadDeployment(ActionModel):
    deployment_id: UUID
