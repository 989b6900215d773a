"""The worker poll: which scheduled runs a worker may start, in order, within limits (spec §4).

One statement, three nested levels as in Prefect: per queue (time order, queue slots, locked
`FOR UPDATE SKIP LOCKED`), per pool (priority order, pool slots), overall (`limit`).
Each per-queue pick is also capped at the request's limit: the overall result can never hold
more than `limit` runs of one queue, so the answer is the same while a poll with limit=10 locks
at most 10 rows per queue instead of 1,000 (Prefect's over-locking, spec §9.3).
Served by `ix_flow_run__scheduled` (work_queue_id, next_scheduled_start_time, id)
WHERE state_type = 'SCHEDULED', and by `ix_flow_run__active` for slot counts.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import ARRAY, DateTime, Uuid, bindparam, select, text

from schemas.flow_runs import FlowRun
from schemas.scheduling import ReadyMark, WorkerFlowRun
from services.db import Database
from services.errors import queue_not_found
from services.filters import check_limit
from services.tables import work_queue
from services.work_pools import get_pool

INTERNAL_CAP = 1000
"""Prefect's per-queue and per-pool row caps."""

SCHEDULED_RUNS = text(
    """
    WITH queues AS (
        SELECT q.id, q.priority, q.concurrency_limit,
               (SELECT count(*) FROM flow_run a
                 WHERE a.work_queue_id = q.id AND a.state_type IN ('PENDING', 'RUNNING')) AS active
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
          FROM queues q
         CROSS JOIN LATERAL (
            SELECT r.*
              FROM flow_run r
             WHERE r.work_queue_id = q.id
               AND r.state_type = 'SCHEDULED'
               AND coalesce(r.empirical_policy ->> 'retry_type', '') <> 'in_process'
               AND (CAST(:after AS timestamptz) IS NULL OR r.next_scheduled_start_time >= :after)
               AND (CAST(:before AS timestamptz) IS NULL OR r.next_scheduled_start_time <= :before)
             ORDER BY r.next_scheduled_start_time, r.id
             LIMIT least(:limit, CASE WHEN q.concurrency_limit IS NULL THEN :cap
                                      ELSE greatest(0, q.concurrency_limit - q.active) END)
               FOR UPDATE SKIP LOCKED
         ) r
         WHERE CAST(:queue_ids AS uuid[]) IS NULL OR q.id = ANY(CAST(:queue_ids AS uuid[]))
         ORDER BY q.priority, r.next_scheduled_start_time, r.id
         LIMIT least(:limit, pool_slots.available)
     ) picked
     ORDER BY picked.queue_priority, picked.next_scheduled_start_time, picked.id
    """
).bindparams(
    bindparam("after", type_=DateTime(timezone=True)),
    bindparam("before", type_=DateTime(timezone=True)),
    bindparam("queue_ids", type_=ARRAY(Uuid)),
)


async def get_scheduled_flow_runs(
    db: Database,
    work_pool_name: str,
    work_queue_names: list[str] | None = None,
    scheduled_before: datetime | None = None,
    scheduled_after: datetime | None = None,
    limit: int | None = None,
) -> tuple[list[WorkerFlowRun], ReadyMark]:
    """The runs, and the ready mark to announce once this poll has committed."""
    limit = check_limit(limit)
    async with db.transaction() as tx:
        pool = await get_pool(tx, work_pool_name)
        queues = await tx.execute(
            select(work_queue.c.id, work_queue.c.name)
            .where(work_queue.c.work_pool_id == pool.id)
            .order_by(work_queue.c.priority)
        )
        by_name = {row.name: row.id for row in queues}
        queue_ids: list[UUID] | None = None
        if work_queue_names:
            queue_ids = []
            for name in work_queue_names:
                if name not in by_name:
                    raise queue_not_found(work_pool_name, name)
                queue_ids.append(by_name[name])
        rows = await tx.execute(
            SCHEDULED_RUNS,
            {
                "pool_id": pool.id,
                "queue_ids": queue_ids,
                "after": scheduled_after,
                "before": scheduled_before,
                "limit": limit,
                "cap": INTERNAL_CAP,
            },
        )
        runs = [_item(pool.id, row._mapping) for row in rows]
        polled = queue_ids if queue_ids is not None else list(by_name.values())
        mark = ReadyMark(work_pool_id=pool.id, work_queue_ids=polled, polled_at=tx.now)
    return runs, mark


def _item(pool_id: UUID, row: Any) -> WorkerFlowRun:
    # Prefect does not load `state` in poll results (spec §1.4); state_type/state_name are there.
    return WorkerFlowRun(work_pool_id=pool_id, work_queue_id=row["work_queue_id"], flow_run=FlowRun.model_validate(dict(row)))
