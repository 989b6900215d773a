"""Worker contracts: heartbeats create and refresh workers; filter and delete them by pool."""

from __future__ import annotations

from uuid import UUID

from schemas.common import (
    ActionModel,
    Int32,
    NonNegativeInt,
    Operator,
    ResponseModel,
    UTCDateTime,
    WorkerName,
    WorkerStatus,
)


class Worker(ResponseModel):
    id: UUID
    created: UTCDateTime
    updated: UTCDateTime
    name: str
    work_pool_id: UUID
    last_heartbeat_time: UTCDateTime
    heartbeat_interval_seconds: int | None = None
    status: WorkerStatus


class HeartbeatTimeCriteria(ActionModel):
    before_: UTCDateTime | None = None
    after_: UTCDateTime | None = None


class WorkerStatusCriteria(ActionModel):
    any_: list[WorkerStatus] | None = None
    not_any_: list[WorkerStatus] | None = None


class WorkerFilter(ActionModel):
    operator: Operator = "and_"
    last_heartbeat_time: HeartbeatTimeCriteria | None = None
    status: WorkerStatusCriteria | None = None


class WorkerHeartbeat(ActionModel):
    work_pool_name: str
    name: WorkerName
    heartbeat_interval_seconds: Int32 | None = None


class ReadWorkers(ActionModel):
    work_pool_name: str
    workers: WorkerFilter | None = None
    limit: int | None = None
    offset: NonNegativeInt | None = None


class DeleteWorker(ActionModel):
    work_pool_name: str
    name: str
