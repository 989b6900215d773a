"""Deployments: the minimal model the poll and the readiness rules need (docs/operations.md#deployments)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from pydantic import Field

from schemas.common import (
    ActionModel,
    DeploymentStatus,
    NonNegativeInt,
    Operator,
    OptionalBody,
    ResponseModel,
    UTCDateTime,
)
from schemas.work_pools import AnyIds, AnyStrings, WorkPoolFilter
from schemas.work_queues import WorkQueueFilter


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


class DeploymentFilter(ActionModel):
    operator: Operator = "and_"
    id: AnyIds | None = None
    name: AnyStrings | None = None


class ReadDeployments(OptionalBody):
    """Deployments matching every filter given, by name."""

    deployments: DeploymentFilter | None = None
    work_pools: WorkPoolFilter | None = None
    work_pool_queues: WorkQueueFilter | None = None
    limit: int | None = None
    offset: NonNegativeInt = 0
