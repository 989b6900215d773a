"""Flow run operations and the worker poll: a typed body in, one service call, the result out."""

from __future__ import annotations

from handlers.rpc import Deps, handles
from schemas.channels import Op
from schemas.flow_runs import FlowRun, FlowRunCreate, OrchestrationResult, ReadFlowRun, ReadFlowRuns, SetFlowRunState
from schemas.scheduling import GetScheduledFlowRuns, PreviewScheduledFlowRuns
from schemas.wire import JSONText
from services import flow_runs, scheduling


@handles(Op.CREATE_FLOW_RUN)
async def create_flow_run(deps: Deps, body: FlowRunCreate) -> FlowRun:
    return await flow_runs.create_flow_run(deps.db, body)


@handles(Op.READ_FLOW_RUN)
async def read_flow_run(deps: Deps, body: ReadFlowRun) -> FlowRun:
    return await flow_runs.read_flow_run(deps.db, body.flow_run_id)


@handles(Op.READ_FLOW_RUNS)
async def read_flow_runs(deps: Deps, body: ReadFlowRuns) -> list[FlowRun]:
    return await flow_runs.read_flow_runs(deps.db, body)


@handles(Op.SET_FLOW_RUN_STATE)
async def set_flow_run_state(deps: Deps, body: SetFlowRunState) -> OrchestrationResult:
    return await flow_runs.set_flow_run_state(deps.db, body.flow_run_id, body.state, body.lease_token)


@handles(Op.GET_SCHEDULED_FLOW_RUNS)
async def get_scheduled_flow_runs(deps: Deps, body: GetScheduledFlowRuns) -> JSONText:
    """`list[WorkerFlowRun]`, written as JSON from the rows (services.flow_runs_json)."""
    runs, mark = await scheduling.get_scheduled_flow_runs_json(
        deps.db,
        body.work_pool_name,
        body.work_queue_names,
        body.scheduled_before,
        body.scheduled_after,
        body.limit,
        claim=body,
    )
    await deps.ready(mark)  # the queues and deployments polled, for the ready-marker consumer
    return runs


@handles(Op.PREVIEW_SCHEDULED_FLOW_RUNS)
async def preview_scheduled_flow_runs(deps: Deps, body: PreviewScheduledFlowRuns) -> list[FlowRun]:
    return await scheduling.preview_scheduled_flow_runs(deps.db, body)
