"""Deployments, flow runs and the worker poll: a typed body in, one service call, a reply out."""

from __future__ import annotations

from faststream.redis import RedisResponse

from handlers.rpc import Subscribe, reply
from schemas.channels import Op
from schemas.deployments import DeploymentCreate, ReadDeployment
from schemas.flow_runs import FlowRunCreate, ReadFlowRun, SetFlowRunState
from schemas.scheduling import GetScheduledFlowRuns
from services import deployments, flow_runs, scheduling
from services.db import Database


def register(subscribe: Subscribe, db: Database, ready) -> None:
    """`ready` publishes a ReadyMark to the ready-marker stream."""

    @subscribe(Op.CREATE_DEPLOYMENT, "Create a deployment on a pool's queue -> 201 Deployment | 404 | 422")
    async def create_deployment(body: DeploymentCreate) -> RedisResponse:
        return reply(201, await deployments.create_deployment(db, body))

    @subscribe(Op.READ_DEPLOYMENT, "Read a deployment -> 200 Deployment | 404")
    async def read_deployment(body: ReadDeployment) -> RedisResponse:
        return reply(200, await deployments.read_deployment(db, body.deployment_id))

    @subscribe(Op.CREATE_FLOW_RUN, "Create a flow run -> 201 FlowRun | 404 | 422")
    async def create_flow_run(body: FlowRunCreate) -> RedisResponse:
        return reply(201, await flow_runs.create_flow_run(db, body))

    @subscribe(Op.READ_FLOW_RUN, "Read a flow run -> 200 FlowRun | 404")
    async def read_flow_run(body: ReadFlowRun) -> RedisResponse:
        return reply(200, await flow_runs.read_flow_run(db, body.flow_run_id))

    @subscribe(Op.SET_FLOW_RUN_STATE, "Propose a state -> 201 OrchestrationResult (ACCEPT/REJECT/ABORT) | 404")
    async def set_flow_run_state(body: SetFlowRunState) -> RedisResponse:
        return reply(201, await flow_runs.set_flow_run_state(db, body.flow_run_id, body.state, body.lease_token))

    @subscribe(
        Op.GET_SCHEDULED_FLOW_RUNS,
        "The worker poll (claim=true leases the runs) -> 200 list[WorkerFlowRun] | 404 | 422",
    )
    async def get_scheduled_flow_runs(body: GetScheduledFlowRuns) -> RedisResponse:
        runs, mark = await scheduling.get_scheduled_flow_runs(
            db,
            body.work_pool_name,
            body.work_queue_names,
            body.scheduled_before,
            body.scheduled_after,
            body.limit,
            claim=body,
        )
        await ready(mark)
        return reply(200, runs)
