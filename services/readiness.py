"""Ready marks: what a poll does afterwards (docs/poll.md#ready-marks).

Marks are merged (many polls of one queue -> one update), rows are locked in id order
(queues, then deployments) so concurrent consumers never deadlock, each table is updated in one
statement, and a status changes only where it really changes — conditional on the row's current
state, never on a stale snapshot — so each real transition emits exactly one event.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import select

from schemas.scheduling import ReadyMark
from services import events
from services.db import Database, Statement
from services.tables import deployment, work_pool, work_queue

QUEUE_WITH_POOL = select(
    work_queue,
    work_pool.c.name.label("pool_name"),
    work_pool.c.type.label("pool_type"),
).join(work_pool, work_pool.c.id == work_queue.c.work_pool_id)


MARK_QUEUES = Statement.of(
    """
    UPDATE work_queue q
       SET last_polled = greatest(coalesce(q.last_polled, m.polled), m.polled),
           updated = :now,
           status = CASE WHEN q.id = ANY(CAST(:ready AS uuid[])) THEN 'READY' ELSE q.status END
      FROM unnest(CAST(:ids AS uuid[]), CAST(:polled AS timestamptz[])) AS m(id, polled)
     WHERE q.id = m.id
    """
)
"""Every polled queue's `last_polled` (never moved backwards), and READY for those decided on
their locked rows, in one statement."""
MARK_DEPLOYMENTS = Statement.of(
    """
    UPDATE deployment d
       SET last_polled = greatest(coalesce(d.last_polled, m.polled), m.polled), status = 'READY'
      FROM unnest(CAST(:ids AS uuid[]), CAST(:polled AS timestamptz[])) AS m(id, polled)
     WHERE d.id = m.id
    """
)
"""The locked deployments of the polled queues: READY, `last_polled` their queue's poll time."""


def merge(marks: Iterable[ReadyMark]) -> dict[UUID, datetime]:
    """Queue id -> latest poll time."""
    merged: dict[UUID, datetime] = {}
    for mark in marks:
        for queue_id in mark.work_queue_ids:
            if queue_id not in merged or mark.polled_at > merged[queue_id]:
                merged[queue_id] = mark.polled_at
    return merged


async def apply_ready_marks(db: Database, marks: Iterable[ReadyMark]) -> int:
    """Apply merged marks in one transaction; returns the number of queues touched."""
    polled = merge(marks)
    if not polled:
        return 0
    ids = sorted(polled)
    async with db.transaction() as tx:
        queues = (
            (
                await tx.execute(
                    QUEUE_WITH_POOL.where(work_queue.c.id.in_(ids))
                    .order_by(work_queue.c.id)
                    .with_for_update(of=work_queue, key_share=True)
                )
            )
            .mappings()
            .all()
        )
        ready = [q for q in queues if q["status"] == "NOT_READY" and not q["is_paused"]]
        await tx.fetch(
            MARK_QUEUES,
            {
                "ids": [q["id"] for q in queues],
                "polled": [polled[q["id"]] for q in queues],
                "ready": [q["id"] for q in ready],
                "now": tx.now,
            },
        )
        for queue in ready:
            pool = {"id": queue["work_pool_id"], "name": queue["pool_name"], "type": queue["pool_type"]}
            tx.emit(events.queue_event("ready", queue, pool, tx.now))
        await _mark_deployments(tx, {q["id"]: q for q in queues}, polled)
    return len(queues)


async def _mark_deployments(tx: Any, queues: dict[UUID, Any], polled: dict[UUID, datetime]) -> None:
    """Deployments on the polled queues: READY with `last_polled` (one UPDATE). Only
    the rows locked and read here are updated (by id, not by queue), so a deployment created
    meanwhile is left for the next mark instead of turning READY without its event."""
    rows = (
        (
            await tx.execute(
                select(deployment)
                .where(deployment.c.work_queue_id.in_(list(queues)))
                .order_by(deployment.c.id)
                .with_for_update(key_share=True)
            )
        )
        .mappings()
        .all()
    )
    if rows:
        # `updated` is deliberately untouched: a status change is not an edit of the deployment.
        await tx.fetch(
            MARK_DEPLOYMENTS,
            {"ids": [row["id"] for row in rows], "polled": [polled[row["work_queue_id"]] for row in rows]},
        )
    for row in rows:
        if row["status"] != "NOT_READY":
            continue
        queue = queues[row["work_queue_id"]]
        described = {
            **row,
            "queue_id": queue["id"],
            "queue_name": queue["name"],
            "pool_id": queue["work_pool_id"],
            "pool_name": queue["pool_name"],
            "pool_type": queue["pool_type"],
        }
        at = polled[queue["id"]]
        tx.emit(events.deployment_event("ready", described, max(at, row["last_polled"] or at)))
