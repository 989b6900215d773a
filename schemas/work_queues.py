"""Work queue contracts (queues always belong to a pool and are addressed by pool and name)."""

from __future__ import annotations

from uuid import UUID

from pydantic import field_validator

from schemas.common import (
    ActionModel,
    NonNegativeInt,
    Operator,
    PositiveInt,
    QueueName,
    ResponseModel,
    UTCDateTime,
    WorkQueueStatus,
)
from schemas.work_pools import AnyIds


class QueueFilterCriteria(ActionModel):
    """Prefect's deprecated legacy tag filter: stored and returned, ignored by scheduling."""

    tags: list[str] | None = None
    deployment_ids: list[UUID] | None = None


class WorkQueueCreate(ActionModel):
    name: QueueName
    description: str | None = ""
    is_paused: bool = False
    concurrency_limit: NonNegativeInt | None = None
    priority: PositiveInt | None = None
    filter: QueueFilterCriteria | None = None

    @field_validator("description")
    @classmethod
    def _null_is_empty(cls, value: str | None) -> str:
        return value or ""


class WorkQueueUpdate(ActionModel):
    """Partial update. Renames follow the create-time name rule (Prefect accepts any string)."""

    name: QueueName = ""
    description: str = ""
    is_paused: bool = False
    concurrency_limit: NonNegativeInt | None = None
    priority: PositiveInt = 1
    last_polled: UTCDateTime | None = None
    filter: QueueFilterCriteria | None = None


class WorkQueue(ResponseModel):
    id: UUID
    created: UTCDateTime
    updated: UTCDateTime
    name: str
    description: str
    is_paused: bool
    concurrency_limit: int | None = None
    priority: int
    work_pool_id: UUID
    filter: QueueFilterCriteria | None = None
    last_polled: UTCDateTime | None = None
    work_pool_name: str
    status: WorkQueueStatus
    active_slots: int | None = None


class QueueNameCriteria(ActionModel):
    any_: list[str] | None = None
    startswith_: list[str] | None = None


class WorkQueueFilter(ActionModel):
    operator: Operator = "and_"
    id: AnyIds | None = None
    name: QueueNameCriteria | None = None


class CreateWorkQueue(ActionModel):
    work_pool_name: str
    work_queue: WorkQueueCreate


class ReadWorkQueue(ActionModel):
    work_pool_name: str
    name: str


class ReadWorkQueues(ActionModel):
    work_pool_name: str
    work_queues: WorkQueueFilter | None = None
    limit: int | None = None
    offset: NonNegativeInt = 0


class UpdateWorkQueue(ActionModel):
    work_pool_name: str
    name: str
    work_queue: WorkQueueUpdate


class DeleteWorkQueue(ActionModel):
    work_pool_name: str
    name: str
