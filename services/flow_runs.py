"""Flow runs: create, read, and orchestrated state changes (docs/orchestration.md).

The SCHEDULED -> PENDING step is a compare-and-set: the run row is locked while the rules are
evaluated, so of two workers proposing PENDING for one run exactly one is accepted.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import insert, select, update

from schemas.common import StateType
from schemas.flow_runs import (
    DEFAULT_STATE_NAMES,
    TERMINAL_STATES,
    FlowRun,
    FlowRunCreate,
    OrchestrationResult,
    ReadFlowRuns,
    SetStateStatus,
    State,
    StateCreate,
)
from services.db import Database, Row, Tx
from services.deployments import deployment_by_id
from services.errors import Invalid, NotFound
from services.filters import check_limit, flow_run_condition, pool_condition, queue_condition
from services.tables import flow_run, work_pool, work_queue
from services.work_pools import pool_by_name
from services.work_queues import queue_by_name

NO_PENDING_FROM = frozenset({StateType.PENDING, StateType.RUNNING, StateType.CANCELLING, StateType.CANCELLED})
TAKES_A_SLOT = frozenset({StateType.PENDING, StateType.RUNNING})
"""States that hold a concurrency slot. Only a lease's holder may move its run into them; a
change into them frees no slot and makes no run available, so waiting pollers sleep on."""


def state_of(run: Row) -> State:
    scheduled = run["next_scheduled_start_time"] if run["state_type"] == StateType.SCHEDULED else None
    return State(
        id=run["state_id"],
        type=run["state_type"],
        name=run["state_name"],
        timestamp=run["state_timestamp"],
        message=run["state_message"],
        state_details={"scheduled_time": scheduled},
    )


def to_flow_run(run: Row) -> FlowRun:
    """A run row as the model, with its state."""
    result = FlowRun.model_validate(run)
    result.state = state_of(run)
    return result


async def create_flow_run(db: Database, data: FlowRunCreate) -> FlowRun:
    async with db.transaction() as tx:
        queue_id, queue_name, pool_name, deployment_id = None, None, None, data.deployment_id
        if data.deployment_id is not None:
            found = await deployment_by_id(tx, data.deployment_id)
            queue_id = found["work_queue_id"]
            flow_id = data.flow_id or found["flow_id"]
        else:
            flow_id = data.flow_id
        if data.work_pool_name is not None:
            pool = await pool_by_name(tx, data.work_pool_name)
            queue = await queue_by_name(tx, pool, data.work_queue_name)
            queue_id, queue_name, pool_name = queue["id"], queue["name"], pool["name"]
        elif data.work_queue_name is not None:
            raise Invalid("A work_queue_name needs its work_pool_name.")
        if queue_id is not None and queue_name is None:
            queue_name, pool_name = await _queue_and_pool(tx, queue_id)
        state = data.state
        scheduled = data.next_scheduled_start_time
        if state.type == StateType.SCHEDULED and scheduled is None:
            details = state.state_details
            scheduled = details.scheduled_time if details and details.scheduled_time else tx.now
        run_id = uuid4()
        values = {
            "id": run_id,
            "created": tx.now,
            "updated": tx.now,
            "name": data.name or f"run-{run_id.hex[:12]}",
            "flow_id": flow_id,
            "deployment_id": deployment_id,
            "work_queue_id": queue_id,
            "work_queue_name": queue_name,
            "state_type": state.type,
            "state_name": state.name or DEFAULT_STATE_NAMES[state.type],
            "state_id": uuid4(),
            "state_message": state.message,
            "state_timestamp": tx.now,
            "next_scheduled_start_time": scheduled,
            "expected_start_time": scheduled,
            "empirical_policy": data.empirical_policy.model_dump(mode="json"),
            "parameters": data.parameters,
            "job_variables": data.job_variables,
            "tags": data.tags,
        }
        await tx.execute(insert(flow_run).values(values))
        row = (await tx.execute(select(flow_run).where(flow_run.c.id == run_id))).mappings().one()
        if state.type == StateType.SCHEDULED:
            tx.wake(pool_name)
    return to_flow_run(row)


async def _queue_and_pool(tx: Tx, queue_id: UUID) -> tuple[str | None, str | None]:
    row = (
        await tx.execute(
            select(work_queue.c.name, work_pool.c.name.label("pool_name"))
            .join(work_pool, work_pool.c.id == work_queue.c.work_pool_id)
            .where(work_queue.c.id == queue_id)
        )
    ).first()
    return (row.name, row.pool_name) if row else (None, None)


async def read_flow_run(db: Database, flow_run_id: UUID) -> FlowRun:
    async with db.read() as tx:
        row = (await tx.execute(select(flow_run).where(flow_run.c.id == flow_run_id))).mappings().first()
    if row is None:
        raise NotFound("Flow run not found.")
    return to_flow_run(row)


def judge(run: Row, proposed: StateCreate) -> tuple[SetStateStatus, str | None, StateType | None]:
    """Prefect's core flow-run rules that matter for dispatch: (status, reason, state to set)."""
    current = StateType(run["state_type"])
    if current in TERMINAL_STATES:
        if proposed.type in (StateType.CANCELLING, StateType.PAUSED, StateType.CRASHED):
            return SetStateStatus.ABORT, f"Run is already in terminal state {current.value}.", None
        if proposed.type == StateType.SCHEDULED and run["deployment_id"] is None:
            return SetStateStatus.ABORT, "Cannot reschedule a run without an associated deployment.", None
    if proposed.type == StateType.PENDING and current in NO_PENDING_FROM:
        reason = f"This run is in a {current.value} state and cannot transition to a PENDING state."
        return SetStateStatus.ABORT, reason, None
    if proposed.type == StateType.SCHEDULED and proposed.name == "Late" and current != StateType.SCHEDULED:
        return SetStateStatus.REJECT, "Only scheduled flows can be marked late.", None
    if current == StateType.SCHEDULED and proposed.type == StateType.CANCELLING:
        return SetStateStatus.REJECT, "Scheduled flow run has no infrastructure to terminate.", StateType.CANCELLED
    return SetStateStatus.ACCEPT, None, proposed.type


RUN_WITH_POOL = (
    select(flow_run, work_pool.c.name.label("pool_name"))
    .select_from(
        flow_run.outerjoin(work_queue, work_queue.c.id == flow_run.c.work_queue_id).outerjoin(
            work_pool, work_pool.c.id == work_queue.c.work_pool_id
        )
    )
    .with_for_update(of=flow_run, key_share=True)
)
STALE_LEASE = "This run's lease has ended or passed to another worker: the lease token is stale."
LEASED = "This run is leased to another worker."


def fence(run: Row, proposed: StateCreate, lease_token: int | None, now: datetime) -> str | None:
    """Claim mode: why this change may not be made by its proposer, if it may not. The holder
    may act while its lease is live; nobody else may start the run until the lease is released
    (a lease past its end is released by the expiry sweep, which puts the run back)."""
    if lease_token is not None:
        live = run["lease_expires"] is not None and run["lease_expires"] > now
        return None if live and run["lease_token"] == lease_token else STALE_LEASE
    if run["lease_expires"] is not None and proposed.type in TAKES_A_SLOT:
        return LEASED
    return None


async def set_flow_run_state(
    db: Database, flow_run_id: UUID, proposed: StateCreate, lease_token: int | None = None
) -> OrchestrationResult:
    async with db.transaction() as tx:
        run = (await tx.execute(RUN_WITH_POOL.where(flow_run.c.id == flow_run_id))).mappings().first()
        if run is None:
            raise NotFound("Flow run not found.")
        # The row is locked now, perhaps after a wait: the lease is judged, and the change timed,
        # at this moment (a renewal dated from before the wait could already have run out).
        now = max(tx.now, db.clock())
        refused = fence(run, proposed, lease_token, now)
        status, reason, new_type = (SetStateStatus.ABORT, refused, None) if refused else judge(run, proposed)
        pool_name, due, leased = run["pool_name"], run["next_scheduled_start_time"], run["lease_owner"] is not None
        if new_type is not None:
            name = proposed.name if new_type == proposed.type and proposed.name else DEFAULT_STATE_NAMES[new_type]
            values = _transition(run, new_type, name, proposed, now) | _lease_after(run, new_type, now)
            if new_type not in TAKES_A_SLOT:
                tx.wake(run["pool_name"])
            run = (
                (
                    await tx.execute(
                        update(flow_run).where(flow_run.c.id == flow_run_id).values(values).returning(flow_run)
                    )
                )
                .mappings()
                .one()
            )
    if new_type == StateType.RUNNING:
        db.observe("run_started", pool=pool_name, due=due, now=run["state_timestamp"])
    if leased and (new_type in TERMINAL_STATES or new_type == StateType.SCHEDULED):
        db.observe("lease_ended", pool=pool_name, reason="completed" if new_type in TERMINAL_STATES else "given_back")
    details = {"reason": reason} if reason else {}
    return OrchestrationResult(status=status, state=state_of(run), details=details)


def _lease_after(run: Row, new_type: StateType, now: datetime) -> dict[str, Any]:
    """A lease ends with a terminal state or a give-back; otherwise a change renews it."""
    if run["lease_owner"] is None:
        return {}
    if new_type in TERMINAL_STATES or new_type == StateType.SCHEDULED:
        return {"lease_owner": None, "lease_expires": None}
    return {"lease_expires": now + timedelta(seconds=run["lease_seconds"] or 30)}


def _transition(run: Row, new_type: StateType, name: str, proposed: StateCreate, now: datetime) -> dict[str, Any]:
    values: dict[str, Any] = {
        "state_type": new_type,
        "state_name": name,
        "state_id": uuid4(),
        "state_message": proposed.message if new_type == proposed.type else None,
        "state_timestamp": now,
        "updated": now,
    }
    if new_type == StateType.SCHEDULED:
        details = proposed.state_details
        values["next_scheduled_start_time"] = details.scheduled_time if details and details.scheduled_time else now
    if new_type == StateType.RUNNING:
        values["run_count"] = run["run_count"] + 1
        if run["start_time"] is None:
            values["start_time"] = now
    if new_type in TERMINAL_STATES:
        values["end_time"] = now
    return values


RUNS_WITH_QUEUE_AND_POOL = select(flow_run).select_from(
    flow_run.outerjoin(work_queue, work_queue.c.id == flow_run.c.work_queue_id).outerjoin(
        work_pool, work_pool.c.id == work_queue.c.work_pool_id
    )
)
"""Runs, joined to their queue and pool so that queue and pool filters apply."""


async def read_flow_runs(db: Database, request: ReadFlowRuns) -> list[FlowRun]:
    """Runs matching every filter given, newest first."""
    query = (
        RUNS_WITH_QUEUE_AND_POOL.where(
            flow_run_condition(request.flow_runs),
            pool_condition(request.work_pools),
            queue_condition(request.work_pool_queues),
        )
        .order_by(flow_run.c.created.desc(), flow_run.c.id)
        .limit(check_limit(request.limit))
        .offset(request.offset)
    )
    async with db.read() as tx:
        rows = (await tx.execute(query)).mappings().all()
    return [to_flow_run(row) for row in rows]
