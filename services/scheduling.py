"""The worker poll: which scheduled runs a worker may start, in order, within limits (docs/poll.md).

One statement, three nested levels as in Prefect: per queue (time order, queue slots, locked
`FOR UPDATE SKIP LOCKED`), per pool (priority order, pool slots), overall (`limit`).
Each per-queue pick is also capped at the request's limit: the overall result can never hold
more than `limit` runs of one queue, so the answer is the same while a poll with limit=10 locks
at most 10 rows per queue instead of 1,000 (Prefect's over-locking:
docs/poll.md#differences-from-prefect).
Nor does it lock rows of queues it will not reach: priorities are unique in a pool, so the
hand-out order is the queues' picks one after another in priority order. The queues are walked
in that order (a sorted subquery on the outer side of the lateral join, whose nested loop keeps
it) and the walk stops at the overall limit: a poll of limit 10 locks the 10 runs it hands out,
not 10 in every queue of the pool. The picked runs are then sorted into hand-out order.
Served by `ix_flow_run__scheduled` (work_queue_id, next_scheduled_start_time, id)
WHERE state_type = 'SCHEDULED', with both time bounds as index conditions (a SCHEDULED run
always has its time: `ck_flow_run__scheduled_has_time`), and by `ix_flow_run__active` for slot
counts. The read-only poll runs on the read pool, whose connections use one generic plan per
statement (services.db); the plan does not depend on the values the bounds take, and a claim's
count of leased runs is a subquery of its own that a plain poll never runs (as one condition,
`:claim AND ...`, a generic plan could not drop it, and counted slots by reading the queue's
scheduled runs).

Claim mode leases what it selects in the same statement (`UPDATE ... FROM picked RETURNING`),
counts leased runs as slots, and holds the pool row for the statement's transaction, so
concurrent claims see each other's leases and limits are never exceeded.
Leased runs are never handed out, in either mode. A lease past its end still holds its run and
its slot until the expiry sweep releases it (with its event): the holder's last state change
under the lease (row-locked, decided on its own `now`) and a claim can never both take the slot.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from uuid import UUID

from pydantic import TypeAdapter
from sqlalchemy import ARRAY, DateTime, Uuid, bindparam, select, text

from schemas.common import StateType
from schemas.flow_runs import FlowRun
from schemas.scheduling import ClaimOptions, PreviewScheduledFlowRuns, ReadyMark, WorkerFlowRun
from schemas.wire import JSONText
from services.db import Database, Statement, Tx
from services.errors import pool_not_found, queue_not_found
from services.filters import check_limit
from services.flow_runs import to_flow_run
from services.flow_runs_json import RUN_COLUMNS_SQL, worker_flow_runs_json
from services.tables import flow_run, work_queue
from services.work_queues import queue_ids_by_name

WORKER_FLOW_RUNS = TypeAdapter(list[WorkerFlowRun])
INTERNAL_CAP = 1000
"""Prefect's per-queue and per-pool row caps."""

AVAILABLE_RUNS_SQL = """
    WITH queues AS (
        SELECT q.id, q.priority, q.concurrency_limit,
               (SELECT count(*) FROM flow_run a
                 WHERE a.work_queue_id = q.id AND a.state_type IN ('PENDING', 'RUNNING'))
               + CASE WHEN :claim
                      THEN (SELECT count(*) FROM flow_run a
                             WHERE a.work_queue_id = q.id AND a.state_type = 'SCHEDULED'
                               AND a.lease_expires IS NOT NULL)
                      ELSE 0 END AS active
          FROM work_queue q
         WHERE q.work_pool_id = :pool_id AND NOT q.is_paused
    ),
    pool_slots AS (
        SELECT CASE WHEN p.concurrency_limit IS NULL THEN :cap
                    ELSE greatest(0, p.concurrency_limit - (SELECT coalesce(sum(active), 0) FROM queues))
               END AS available
          FROM work_pool p
         WHERE p.id = :pool_id AND NOT p.is_paused
    )
    SELECT picked.*
      FROM pool_slots
     CROSS JOIN LATERAL (
        SELECT r.*, q.priority AS queue_priority
          FROM (SELECT * FROM queues ORDER BY priority) q
         CROSS JOIN LATERAL (
            SELECT r.*
              FROM flow_run r
             WHERE r.work_queue_id = q.id
               AND r.state_type = 'SCHEDULED'
               AND r.lease_expires IS NULL
               AND coalesce(r.empirical_policy ->> 'retry_type', '') <> 'in_process'
               AND r.next_scheduled_start_time >= coalesce(CAST(:after AS timestamptz), '-infinity')
               AND r.next_scheduled_start_time <= coalesce(CAST(:before AS timestamptz), 'infinity')
             ORDER BY r.next_scheduled_start_time, r.id
             LIMIT least(:limit, CASE WHEN q.concurrency_limit IS NULL THEN :cap
                                      ELSE greatest(0, q.concurrency_limit - q.active) END)
               FOR UPDATE SKIP LOCKED
         ) r
         WHERE CAST(:queue_ids AS uuid[]) IS NULL OR q.id = ANY(CAST(:queue_ids AS uuid[]))
         LIMIT least(:limit, pool_slots.available)
     ) picked
"""
"""The runs a poll may hand out, at most `limit`, within the queue and pool slots (unordered)."""
HANDOUT_ORDER_SQL = " ORDER BY queue_priority, next_scheduled_start_time, id"
"""The order runs are handed out in: queue priority, then time, then id."""
SCHEDULED_RUNS = Statement.of(
    f"""
    WITH picked AS ({AVAILABLE_RUNS_SQL})
    SELECT {RUN_COLUMNS_SQL.format(table="picked")}, picked.queue_priority
      FROM picked {HANDOUT_ORDER_SQL}
    """
)
"""A read-only poll's runs, with the columns the reply is written from (on the hot path:
services.db.Statement)."""
CLAIM_RUNS = Statement.of(
    f"""
    WITH picked AS ({AVAILABLE_RUNS_SQL}),
    claimed AS (
        UPDATE flow_run f
           SET lease_owner = :owner, lease_token = nextval('flow_run_lease_token'),
               lease_expires = :expires, lease_seconds = :lease_seconds, updated = :now
          FROM picked
         WHERE f.id = picked.id
     RETURNING f.*, picked.queue_priority
    )
    SELECT {RUN_COLUMNS_SQL.format(table="claimed")}, claimed.queue_priority,
           claimed.lease_owner, claimed.lease_token, claimed.lease_expires
      FROM claimed {HANDOUT_ORDER_SQL}
    """
)
"""A claim's runs, leased in the same statement (on the hot path: services.db.Statement)."""
POOL_QUEUE_IDS_FOR_CLAIM = Statement.of(
    """
    SELECT p.id AS pool_id, q.id, q.name
      FROM work_pool p JOIN work_queue q ON q.work_pool_id = p.id
     WHERE p.name = :name
       FOR NO KEY UPDATE OF p
    """
)
"""`work_queues.queue_ids_by_name` holding the pool row for the claim's transaction, in the same
round trip: claims of one pool see each other's leases."""

NEXT_DUE = text(
    """
    SELECT min(r.next_scheduled_start_time)
      FROM work_queue q JOIN flow_run r ON r.work_queue_id = q.id
     WHERE q.work_pool_id = :pool_id
       AND (CAST(:queue_ids AS uuid[]) IS NULL OR q.id = ANY(CAST(:queue_ids AS uuid[])))
       AND r.state_type = 'SCHEDULED' AND r.next_scheduled_start_time > :before
    """
).bindparams(
    bindparam("before", type_=DateTime(timezone=True)),
    bindparam("queue_ids", type_=ARRAY(Uuid)),
)


def polled_queue_ids(
    work_pool_name: str, queue_ids: Mapping[str, UUID], work_queue_names: list[str] | None
) -> tuple[list[UUID] | None, list[UUID]]:
    """The requested queue ids (None = every queue) and every queue id polled, from the pool's
    queue ids by name; 404 for a name the pool does not have."""
    if not work_queue_names:
        return None, list(queue_ids.values())
    requested = []
    for name in work_queue_names:
        if name not in queue_ids:
            raise queue_not_found(work_pool_name, name)
        requested.append(queue_ids[name])
    return requested, requested


async def get_scheduled_flow_runs(
    db: Database,
    work_pool_name: str,
    work_queue_names: list[str] | None = None,
    scheduled_before: datetime | None = None,
    scheduled_after: datetime | None = None,
    limit: int | None = None,
    claim: ClaimOptions | None = None,
) -> tuple[list[WorkerFlowRun], ReadyMark]:
    """The runs (leased to the worker in claim mode) as models, and the ready mark to announce
    once this poll has committed."""
    runs, mark = await get_scheduled_flow_runs_json(
        db, work_pool_name, work_queue_names, scheduled_before, scheduled_after, limit, claim
    )
    # the standard library's parser: it goes as deep as the JSONB it reads back (pydantic's stops at ~250)
    return WORKER_FLOW_RUNS.validate_python(json.loads(runs)), mark


async def get_scheduled_flow_runs_json(
    db: Database,
    work_pool_name: str,
    work_queue_names: list[str] | None = None,
    scheduled_before: datetime | None = None,
    scheduled_after: datetime | None = None,
    limit: int | None = None,
    claim: ClaimOptions | None = None,
) -> tuple[JSONText, ReadyMark]:
    """The runs (leased to the worker in claim mode) as the reply's JSON, `list[WorkerFlowRun]`
    written from the rows once (services.flow_runs_json), and the ready mark to announce once
    this poll has committed."""
    limit = check_limit(limit)
    claim = claim if claim is not None and claim.claim else None
    claiming = claim is not None
    # A read-only poll runs in autocommit (its row locks last for its statement, as Prefect's
    # last until its immediate commit); a claim needs its transaction (pool row, leases).
    async with db.transaction() if claiming else db.read() as tx:
        if claim is not None:  # claims of one pool see each other's leases
            pool_id, by_name = await _queue_ids_holding_pool(tx, work_pool_name)
        else:
            pool_id, by_name = await queue_ids_by_name(tx, work_pool_name)
        queue_ids, polled = polled_queue_ids(work_pool_name, by_name, work_queue_names)
        params: dict[str, object] = {
            "pool_id": pool_id,
            "queue_ids": queue_ids,
            "after": scheduled_after,
            "before": scheduled_before,
            "limit": limit,
            "cap": INTERNAL_CAP,
            "claim": claiming,
        }
        if claim is not None:
            params |= {
                "now": tx.now,
                "owner": claim.worker_name,
                "lease_seconds": claim.lease_seconds,
                "expires": tx.now + timedelta(seconds=claim.lease_seconds),
            }
        rows = await tx.fetch(CLAIM_RUNS if claiming else SCHEDULED_RUNS, params)
        mark = ReadyMark(work_pool_id=pool_id, work_queue_ids=polled, polled_at=tx.now)
    if rows:
        due = [row["next_scheduled_start_time"] for row in rows]
        db.observe("runs_handed", pool=work_pool_name, claim=claiming, now=mark.polled_at, due=due)
    return JSONText(worker_flow_runs_json(pool_id, rows, claiming)), mark


async def _queue_ids_holding_pool(tx: Tx, work_pool_name: str) -> tuple[UUID, dict[str, UUID]]:
    rows = await tx.fetch(POOL_QUEUE_IDS_FOR_CLAIM, {"name": work_pool_name})
    if not rows:
        raise pool_not_found(work_pool_name)
    return rows[0]["pool_id"], {row["name"]: row["id"] for row in rows}


async def next_due(
    db: Database, work_pool_name: str, work_queue_names: list[str] | None, scheduled_before: datetime
) -> datetime | None:
    """When the next scheduled run after `scheduled_before` becomes due (a long poll's timer)."""
    async with db.read() as tx:
        pool_id, by_name = await queue_ids_by_name(tx, work_pool_name)
        queue_ids, _ = polled_queue_ids(work_pool_name, by_name, work_queue_names)
        params = {"pool_id": pool_id, "queue_ids": queue_ids, "before": scheduled_before}
        due: datetime | None = (await tx.execute(NEXT_DUE, params)).scalar()
        return due


async def preview_scheduled_flow_runs(db: Database, request: PreviewScheduledFlowRuns) -> list[FlowRun]:
    """The SCHEDULED, unleased runs of the pool's queues in hand-out order (queue priority, due
    time, id), whatever the pauses and limits. Read only: no poll is recorded, nothing is locked.
    Served by `ix_flow_run__scheduled`."""
    limit = check_limit(request.limit)
    async with db.read() as tx:
        _, by_name = await queue_ids_by_name(tx, request.work_pool_name)
        _, queue_ids = polled_queue_ids(request.work_pool_name, by_name, request.work_queue_names)
        query = (
            select(flow_run)
            .join(work_queue, work_queue.c.id == flow_run.c.work_queue_id)
            .where(
                flow_run.c.work_queue_id.in_(queue_ids),
                flow_run.c.state_type == StateType.SCHEDULED.value,
                flow_run.c.lease_expires.is_(None),
            )
            .order_by(work_queue.c.priority, flow_run.c.next_scheduled_start_time, flow_run.c.id)
            .limit(limit)
        )
        if request.scheduled_before is not None:
            query = query.where(flow_run.c.next_scheduled_start_time <= request.scheduled_before)
        rows = (await tx.execute(query)).mappings().all()
    return [to_flow_run(row) for row in rows]
