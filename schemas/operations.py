"""Every request/reply operation, declared once: its request, its success reply, whether it writes.

The stream subscribers (`handlers.operations`), the AsyncAPI document (`replica.asyncapi`), the
idempotency rule and the client's dispatch (`client.work_pools`) are all derived from
`OPERATIONS`. Adding an operation is one `Op` member, one row here, and its handler.

A write runs once per request id (a retry or a redelivery gets the first reply); a read may run
again. Whether a request writes can depend on the request: a claim-mode poll leases runs, a
plain poll only reads them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, TypeAdapter

from schemas.channels import Op
from schemas.deployments import Deployment, DeploymentCreate, ReadDeployment, ReadDeployments
from schemas.flow_runs import FlowRun, FlowRunCreate, OrchestrationResult, ReadFlowRun, ReadFlowRuns, SetFlowRunState
from schemas.scheduling import GetScheduledFlowRuns, PreviewScheduledFlowRuns, WorkerFlowRun
from schemas.wire import JSONText
from schemas.work_pools import (
    CountWorkPools,
    DeleteWorkPool,
    ReadWorkPool,
    ReadWorkPools,
    UpdateWorkPool,
    WorkPool,
    WorkPoolCreate,
)
from schemas.work_queues import (
    CreateWorkQueue,
    DeleteWorkQueue,
    ReadWorkQueue,
    ReadWorkQueues,
    UpdateWorkQueue,
    WorkQueue,
)
from schemas.workers import DeleteWorker, ReadWorkers, Worker, WorkerHeartbeat


@dataclass(frozen=True)
class Operation:
    op: Op
    request: type[BaseModel]
    """The request body's model."""
    status: int
    """The success reply's status."""
    reply: Any
    """The success reply body's type (a model, `list[...]`, `int`); None for an empty body."""
    writes: bool | Callable[[Any], bool]
    """True when a repeat must not act again; or a rule over the (validated) request."""
    description: str

    def is_write(self, request: BaseModel) -> bool:
        return self.writes(request) if callable(self.writes) else self.writes

    def dump_reply(self, result: Any) -> bytes:
        """A success reply's body as JSON, serialised once by its type (pydantic's serializer,
        without building the JSON-able Python value first); a body already written as JSON
        (`wire.JSONText`) as it is."""
        if isinstance(result, JSONText):
            return result
        return _adapter(self.reply).dump_json(result)

    def parse_reply(self, body: Any) -> Any:
        """A success reply's body as its type (None for an empty body)."""
        return None if self.reply is None else _adapter(self.reply).validate_python(body)

    def parse_reply_json(self, text: str) -> Any:
        """`parse_reply` of a body still in its JSON text ("" for an empty body), parsed by its
        type in one pass."""
        if self.reply is None:
            return None
        return _adapter(self.reply).validate_json(text or "null")


_adapters: dict[Any, TypeAdapter[Any]] = {}


def _adapter(body_type: Any) -> TypeAdapter[Any]:
    adapter = _adapters.get(body_type)
    if adapter is None:
        adapter = _adapters[body_type] = TypeAdapter(body_type)
    return adapter


def _claims(request: GetScheduledFlowRuns) -> bool:
    return request.claim


_ROWS = (
    # work pools
    Operation(
        Op.CREATE_WORK_POOL, WorkPoolCreate, 201, WorkPool, True,
        "Create a pool and its default queue -> 201 WorkPool | 403 | 409 | 422",
    ),
    Operation(Op.READ_WORK_POOL, ReadWorkPool, 200, WorkPool, False, "Read a pool by name -> 200 WorkPool | 404"),
    Operation(
        Op.READ_WORK_POOLS, ReadWorkPools, 200, list[WorkPool], False,
        "Filter pools, by name -> 200 list[WorkPool] | 422",
    ),
    Operation(Op.COUNT_WORK_POOLS, CountWorkPools, 200, int, False, "Count pools matching a filter -> 200 int"),
    Operation(
        Op.UPDATE_WORK_POOL, UpdateWorkPool, 204, None, True, "Update a pool (partial) -> 204 | 403 | 404 | 422"
    ),
    Operation(
        Op.DELETE_WORK_POOL, DeleteWorkPool, 204, None, True,
        "Delete a pool with its queues and workers -> 204 | 403 | 404",
    ),
    # work queues
    Operation(
        Op.CREATE_WORK_QUEUE, CreateWorkQueue, 201, WorkQueue, True,
        "Create a queue in a pool -> 201 WorkQueue | 404 | 409 | 422",
    ),
    Operation(
        Op.READ_WORK_QUEUE, ReadWorkQueue, 200, WorkQueue, False, "Read a queue of a pool -> 200 WorkQueue | 404"
    ),
    Operation(
        Op.READ_WORK_QUEUES, ReadWorkQueues, 200, list[WorkQueue], False,
        "Filter a pool's queues, by priority -> 200 list[WorkQueue] | 404 | 422",
    ),
    Operation(
        Op.UPDATE_WORK_QUEUE, UpdateWorkQueue, 204, None, True, "Update a queue (partial) -> 204 | 404 | 409 | 422"
    ),
    Operation(
        Op.DELETE_WORK_QUEUE, DeleteWorkQueue, 204, None, True,
        "Delete a queue (not the default one) -> 204 | 404 | 409",
    ),
    # workers (a heartbeat repeated is harmless: it records the same worker again)
    Operation(
        Op.WORKER_HEARTBEAT, WorkerHeartbeat, 204, None, False,
        "Record a worker heartbeat (creates the worker) -> 204 | 404 | 422",
    ),
    Operation(
        Op.READ_WORKERS, ReadWorkers, 200, list[Worker], False,
        "Filter a pool's workers, latest heartbeat first -> 200 list[Worker] | 404",
    ),
    Operation(Op.DELETE_WORKER, DeleteWorker, 204, None, True, "Delete a worker of a pool -> 204 | 404"),
    # deployments
    Operation(
        Op.CREATE_DEPLOYMENT, DeploymentCreate, 201, Deployment, True,
        "Create a deployment on a pool's queue -> 201 Deployment | 404 | 422",
    ),
    Operation(
        Op.READ_DEPLOYMENT, ReadDeployment, 200, Deployment, False, "Read a deployment -> 200 Deployment | 404"
    ),
    Operation(
        Op.READ_DEPLOYMENTS, ReadDeployments, 200, list[Deployment], False,
        "Filter deployments (by id, name, pool, queue), by name -> 200 list[Deployment] | 422",
    ),
    # flow runs
    Operation(Op.CREATE_FLOW_RUN, FlowRunCreate, 201, FlowRun, True, "Create a flow run -> 201 FlowRun | 404 | 422"),
    Operation(Op.READ_FLOW_RUN, ReadFlowRun, 200, FlowRun, False, "Read a flow run -> 200 FlowRun | 404"),
    Operation(
        Op.READ_FLOW_RUNS, ReadFlowRuns, 200, list[FlowRun], False,
        "Filter flow runs (by id, name, deployment, state type, pool, queue), newest first -> 200 list[FlowRun] | 422",
    ),
    Operation(
        Op.SET_FLOW_RUN_STATE, SetFlowRunState, 201, OrchestrationResult, True,
        "Propose a state -> 201 OrchestrationResult (ACCEPT/REJECT/ABORT) | 404",
    ),
    Operation(
        Op.GET_SCHEDULED_FLOW_RUNS, GetScheduledFlowRuns, 200, list[WorkerFlowRun], _claims,
        "The worker poll (claim=true leases the runs, once per request id) -> 200 list[WorkerFlowRun] | 404 | 422",
    ),
    Operation(
        Op.PREVIEW_SCHEDULED_FLOW_RUNS, PreviewScheduledFlowRuns, 200, list[FlowRun], False,
        "The runs waiting in a pool's queues, in hand-out order; read only, not a poll -> 200 list[FlowRun] | 404 | 422",
    ),
)  # fmt: skip


def _index(rows: tuple[Operation, ...]) -> dict[Op, Operation]:
    table: dict[Op, Operation] = {}
    for row in rows:
        if row.op in table:
            raise ValueError(f"operation {row.op} is declared twice")
        table[row.op] = row
    if missing := set(Op) - set(table):
        raise ValueError(f"operations without a row: {sorted(missing)}")
    return table


OPERATIONS: dict[Op, Operation] = _index(_ROWS)
"""Every operation by its `Op`, in declaration order."""
