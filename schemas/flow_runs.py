"""Flow runs and their states: what the poll returns and what workers report (docs/poll.md#result-items,
docs/orchestration.md)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any
from uuid import UUID

from pydantic import Field

from schemas.common import (
    ActionModel,
    NonNegativeInt,
    Operator,
    OptionalBody,
    ResponseModel,
    StateType,
    UTCDateTime,
)
from schemas.work_pools import AnyIds, AnyStrings, WorkPoolFilter
from schemas.work_queues import WorkQueueFilter

DEFAULT_STATE_NAMES = {
    StateType.SCHEDULED: "Scheduled",
    StateType.PENDING: "Pending",
    StateType.RUNNING: "Running",
    StateType.COMPLETED: "Completed",
    StateType.FAILED: "Failed",
    StateType.CANCELLED: "Cancelled",
    StateType.CRASHED: "Crashed",
    StateType.PAUSED: "Paused",
    StateType.CANCELLING: "Cancelling",
}
TERMINAL_STATES = frozenset({StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED})


class StateDetails(ResponseModel):
    scheduled_time: UTCDateTime | None = None


class StateCreate(ActionModel):
    type: StateType
    name: str | None = None
    message: str | None = None
    state_details: StateDetails | None = None


class State(ResponseModel):
    id: UUID | None = None
    type: StateType
    name: str
    timestamp: UTCDateTime | None = None
    message: str | None = None
    state_details: StateDetails = Field(default_factory=StateDetails)


class EmpiricalPolicy(ActionModel):
    retry_type: str | None = None
    retries: int | None = None
    retry_delay: int | None = None


class FlowRunCreate(ActionModel):
    name: str | None = None
    deployment_id: UUID | None = None
    work_pool_name: str | None = None
    work_queue_name: str | None = None
    flow_id: UUID | None = None
    state: StateCreate = Field(default_factory=lambda: StateCreate(type=StateType.SCHEDULED))
    next_scheduled_start_time: UTCDateTime | None = None
    empirical_policy: EmpiricalPolicy = Field(default_factory=EmpiricalPolicy)
    parameters: dict[str, Any] = Field(default_factory=dict)
    job_variables: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)


class FlowRun(ResponseModel):
    """Prefect's core FlowRun representation (fields this service does not track are constant)."""

    id: UUID
    created: UTCDateTime
    updated: UTCDateTime
    name: str
    flow_id: UUID | None = None
    state_id: UUID | None = None
    deployment_id: UUID | None = None
    deployment_version: str | None = None
    work_queue_name: str | None = None
    flow_version: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str | None = None
    context: dict[str, Any] = Field(default_factory=dict)
    empirical_policy: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    labels: dict[str, Any] = Field(default_factory=dict)
    parent_task_run_id: UUID | None = None
    state_type: StateType
    state_name: str
    run_count: int = 0
    expected_start_time: UTCDateTime | None = None
    next_scheduled_start_time: UTCDateTime | None = None
    start_time: UTCDateTime | None = None
    end_time: UTCDateTime | None = None
    total_run_time: float = 0.0
    estimated_run_time: float = 0.0
    estimated_start_time_delta: float = 0.0
    auto_scheduled: bool = False
    infrastructure_document_id: UUID | None = None
    infrastructure_pid: str | None = None
    created_by: dict[str, Any] | None = None
    work_queue_id: UUID | None = None
    state: State | None = None
    job_variables: dict[str, Any] = Field(default_factory=dict)


class ReadFlowRun(ActionModel):
    flow_run_id: UUID


class SetFlowRunState(ActionModel):
    flow_run_id: UUID
    state: StateCreate
    lease_token: int | None = None
    """Claim mode: the token the run was claimed with; a stale one is refused."""


class SetStateStatus(StrEnum):
    ACCEPT = "ACCEPT"
    REJECT = "REJECT"
    ABORT = "ABORT"
    WAIT = "WAIT"


class OrchestrationResult(ResponseModel):
    status: SetStateStatus
    state: State | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class StateTypeCriteria(ActionModel):
    any_: list[StateType] | None = None


class FlowRunStateCriteria(ActionModel):
    type: StateTypeCriteria | None = None


class FlowRunFilter(ActionModel):
    """Prefect's flow-run filter, the part workpools keeps: ids, names, deployments, state types."""

    operator: Operator = "and_"
    id: AnyIds | None = None
    name: AnyStrings | None = None
    deployment_id: AnyIds | None = None
    state: FlowRunStateCriteria | None = None


class ReadFlowRuns(OptionalBody):
    """Flow runs matching every filter given, newest first."""

    flow_runs: FlowRunFilter | None = None
    work_pools: WorkPoolFilter | None = None
    work_pool_queues: WorkQueueFilter | None = None
    limit: int | None = None
    offset: NonNegativeInt = 0
