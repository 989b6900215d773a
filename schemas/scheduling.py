"""The worker poll: request, result items, and the ready mark each poll announces (docs/poll.md).

Claim mode (`claim=True`) is workpools' own: the runs a poll returns are leased to the worker
in the same statement that selects them, with a fencing token; until the lease ends no other
poll returns them, and leased runs count as concurrency slots.
"""

from __future__ import annotations

from uuid import UUID

from pydantic import Field, model_validator

from schemas.common import ActionModel, ResponseModel, UTCDateTime
from schemas.flow_runs import FlowRun


class ClaimOptions(ActionModel):
    claim: bool = False
    worker_name: str | None = Field(default=None, max_length=500)
    """Required to claim: the lease holder (the worker's name in the pool)."""
    lease_seconds: float = Field(default=30.0, ge=1, le=3600)
    """How long a claim lasts without the worker's heartbeats renewing it."""

    @model_validator(mode="after")
    def _claimer_named(self) -> ClaimOptions:
        if self.claim and not self.worker_name:
            raise ValueError("A claim needs the worker_name that will hold the lease.")
        return self


class GetScheduledFlowRuns(ClaimOptions):
    work_pool_name: str
    work_queue_names: list[str] | None = None
    scheduled_before: UTCDateTime | None = None
    scheduled_after: UTCDateTime | None = None
    limit: int | None = None


class Lease(ResponseModel):
    owner: str
    token: int
    """Present it with every state change of the run (fencing)."""
    expires: UTCDateTime


class WorkerFlowRun(ResponseModel):
    work_pool_id: UUID
    work_queue_id: UUID
    flow_run: FlowRun
    lease: Lease | None = None
    """Set in claim mode."""


class ReadyMark(ActionModel):
    """Published after a poll commits; the ready-marker consumer applies it (docs/poll.md#ready-marks)."""

    work_pool_id: UUID
    work_queue_ids: list[UUID]
    polled_at: UTCDateTime


class PreviewScheduledFlowRuns(ActionModel):
    """The SCHEDULED runs waiting in a pool's queues (not leased), in hand-out order: queue
    priority, then due time. Read only: no poll is recorded (no ready mark, `last_polled` and
    statuses unchanged), paused queues and concurrency limits are not applied."""

    work_pool_name: str
    work_queue_names: list[str] | None = None
    """Only these queues (default: every queue of the pool)."""
    scheduled_before: UTCDateTime | None = None
    """Only runs due by then (default: any time)."""
    limit: int | None = None
