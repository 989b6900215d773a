"""Ready marks: what a poll does afterwards (docs/poll.md#ready-marks).

Marks are merged (many polls of one queue -> one update), rows are locked in id order
(queues, then deployments) so concurrent consumers never deadlock, and a status changes only
where it really changes — conditional on the row's current state, never on a stale snapshot —
so each real transition emits exactly one event.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import func, select, update

from schemas.scheduling import ReadyMark
from services import events
from services.db import Database
from services.tables import deployment, work_pool, work_queue

QUEUE_WITH_POOL = select(
    work_queue,
    work_pool.c.name.label("pool_name"),
    work_pool.c.type.label("pool_type"),
).join(work_pool, work_pool.c.id == work_queue.c.work_pool_id)


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
        for queue in queues:
            at = polled[queue["id"]]
            ready = queue["status"] == "NOT_READY" and not queue["is_paused"]
            values: dict[str, Any] = {
                "last_polled": func.greatest(func.coalesce(work_queue.c.last_polled, at), at),
                "updated": tx.now,
            }
            if ready:
                values["status"] = "READY"
            await tx.execute(update(work_queue).where(work_queue.c.id == queue["id"]).values(values))
            if ready:
                pool = {"id": queue["work_pool_id"], "name": queue["pool_name"], "type": queue["pool_type"]}
                tx.emit(events.queue_event("ready", queue, pool, tx.now))
        await _mark_deployments(tx, {q["id"]: q for q in queues}, polled)
    return len(queues)


async def _mark_deployments(tx: Any, queues: dict[UUID, Any], polled: dict[UUID, datetime]) -> None:
    """Deployments on the polled queues: READY with `last_polled` (one UPDATE per queue). Only
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
    for queue_id in sorted({row["work_queue_id"] for row in rows}):
        at = polled[queue_id]
        ids = [row["id"] for row in rows if row["work_queue_id"] == queue_id]
        # `updated` is deliberately untouched: a status change is not an edit of the deployment.
        await tx.execute(
            update(deployment)
            .where(deployment.c.id.in_(ids))
            .values(last_polled=func.greatest(func.coalesce(deployment.c.last_polled, at), at), status="READY")
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
