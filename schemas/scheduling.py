"""The worker poll: request, result items, and the ready mark each poll announces (spec §4)."""

from __future__ import annotations

from uuid import UUID

from schemas.common import ActionModel, ResponseModel, UTCDateTime
from schemas.flow_runs import FlowRun


class GetScheduledFlowRuns(ActionModel):
    work_pool_name: str
    work_queue_names: list[str] | None = None
    scheduled_before: UTCDateTime | None = None
    scheduled_after: UTCDateTime | None = None
    limit: int | None = None


class WorkerFlowRun(ResponseModel):
    work_pool_id: UUID
    work_queue_id: UUID
    flow_run: FlowRun


class ReadyMark(ActionModel):
    """Published after a poll commits; the ready-marker consumer applies it (spec §4.6)."""

    work_pool_id: UUID
    work_queue_ids: list[UUID]
    polled_at: UTCDateTime
