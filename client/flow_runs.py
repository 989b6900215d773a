"""Flow-run methods of `WorkPoolClient`, the worker poll included (Prefect's client names)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from client.payloads import payload
from schemas.channels import Op
from schemas.flow_runs import FlowRun, FlowRunCreate, FlowRunFilter, OrchestrationResult, StateCreate
from schemas.scheduling import WorkerFlowRun
from schemas.work_pools import WorkPoolFilter
from schemas.work_queues import WorkQueueFilter


class FlowRunMethods:
    async def _call(self, op: Op, body: dict[str, Any] | None) -> Any:  # provided by WorkPoolClient
        raise NotImplementedError

    async def create_flow_run(self, flow_run: FlowRunCreate | dict[str, Any]) -> FlowRun:
        return await self._call(Op.CREATE_FLOW_RUN, payload(FlowRunCreate, flow_run))

    async def read_flow_run(self, flow_run_id: UUID | str) -> FlowRun:
        return await self._call(Op.READ_FLOW_RUN, {"flow_run_id": flow_run_id})

    async def read_flow_runs(
        self,
        *,
        flow_run_filter: FlowRunFilter | dict[str, Any] | None = None,
        work_pool_filter: WorkPoolFilter | dict[str, Any] | None = None,
        work_queue_filter: WorkQueueFilter | dict[str, Any] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[FlowRun]:
        """Runs matching every filter given, newest first (Prefect's filter shapes, e.g.
        `flow_run_filter={"state": {"type": {"any_": ["SCHEDULED"]}}}`)."""
        body = {
            "flow_runs": payload(FlowRunFilter, flow_run_filter),
            "work_pools": payload(WorkPoolFilter, work_pool_filter),
            "work_pool_queues": payload(WorkQueueFilter, work_queue_filter),
            "limit": limit,
            "offset": offset,
        }
        return await self._call(Op.READ_FLOW_RUNS, body)

    async def set_flow_run_state(
        self, flow_run_id: UUID | str, state: StateCreate | dict[str, Any], lease_token: int | None = None
    ) -> OrchestrationResult:
        """Propose a state. In claim mode pass the run's `lease.token` (a stale one is refused)."""
        body = {"flow_run_id": flow_run_id, "state": payload(StateCreate, state), "lease_token": lease_token}
        return await self._call(Op.SET_FLOW_RUN_STATE, body)

    async def get_scheduled_flow_runs_for_work_pool(
        self,
        work_pool_name: str,
        work_queue_names: list[str] | None = None,
        scheduled_before: datetime | None = None,
        scheduled_after: datetime | None = None,
        limit: int | None = None,
        claim: bool = False,
        worker_name: str | None = None,
        lease_seconds: float = 30.0,
    ) -> list[WorkerFlowRun]:
        """The worker poll. With `claim=True` the runs are leased to `worker_name` (a retry of the
        same call gets the same runs, never a second batch)."""
        body = {
            "claim": claim,
            "worker_name": worker_name,
            "lease_seconds": lease_seconds,
            "work_pool_name": work_pool_name,
            "work_queue_names": work_queue_names,
            "scheduled_before": scheduled_before,
            "scheduled_after": scheduled_after,
            "limit": limit,
        }
        return await self._call(Op.GET_SCHEDULED_FLOW_RUNS, body)

    async def preview_scheduled_flow_runs(
        self,
        work_pool_name: str,
        work_queue_names: list[str] | None = None,
        scheduled_before: datetime | None = None,
        limit: int | None = None,
    ) -> list[FlowRun]:
        """The SCHEDULED runs waiting in the pool's queues, in hand-out order (queue priority, then
        due time), paused queues and limits not applied. Read only: unlike the poll it records no
        poll (statuses and `last_polled` stay as they are) and leases nothing."""
        body = {
            "work_pool_name": work_pool_name,
            "work_queue_names": work_queue_names,
            "scheduled_before": scheduled_before,
            "limit": limit,
        }
        return await self._call(Op.PREVIEW_SCHEDULED_FLOW_RUNS, body)
