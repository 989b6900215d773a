"""Heartbeats in bulk: one upsert for a whole batch of workers, pools flipped READY once.

The batch comes coalesced (one entry per pool and worker). Pools are read `FOR KEY SHARE`,
like a single heartbeat, so a concurrent foreman tick cannot mark a pool NOT_READY from a
snapshot that misses these workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import uuid4

from sqlalchemy import ARRAY, DateTime, Integer, Text, Uuid, bindparam, select, text, update

from schemas.common import WorkPoolStatus
from services import events, leases
from services.db import Database
from services.tables import work_pool


@dataclass(frozen=True)
class Beat:
    work_pool_name: str
    worker_name: str
    heartbeat_interval_seconds: int | None = None
    seen_at: datetime | None = None
    """When the heartbeat was received (the transaction's time when not given)."""


UPSERT_WORKERS = text(
    """
    INSERT INTO worker (id, created, updated, work_pool_id, name, last_heartbeat_time,
                        heartbeat_interval_seconds, status)
    SELECT b.id, b.seen, b.seen, b.pool_id, b.name, b.seen, b.interval, 'ONLINE'
      FROM unnest(:ids, :pool_ids, :names, :intervals, :seen) AS b(id, pool_id, name, interval, seen)
    ON CONFLICT (work_pool_id, name) DO UPDATE
       SET last_heartbeat_time = excluded.last_heartbeat_time,
           status = 'ONLINE',
           updated = excluded.updated,
           heartbeat_interval_seconds = coalesce(excluded.heartbeat_interval_seconds,
                                                 worker.heartbeat_interval_seconds)
     -- replicas may commit one worker's beats out of order: never go back in time
     WHERE worker.last_heartbeat_time <= excluded.last_heartbeat_time
    """
).bindparams(
    bindparam("ids", type_=ARRAY(Uuid)),
    bindparam("pool_ids", type_=ARRAY(Uuid)),
    bindparam("names", type_=ARRAY(Text)),
    bindparam("intervals", type_=ARRAY(Integer)),
    bindparam("seen", type_=ARRAY(DateTime(timezone=True))),
)


async def record_heartbeats(db: Database, beats: Sequence[Beat]) -> set[str]:
    """Record every beat whose pool exists; returns the names of pools that do not."""
    pool_names = sorted({b.work_pool_name for b in beats})
    async with db.transaction() as tx:
        pools = {
            row["name"]: row
            for row in (
                await tx.execute(
                    select(work_pool)
                    .where(work_pool.c.name.in_(pool_names))
                    .order_by(work_pool.c.id)
                    .with_for_update(read=True, key_share=True)
                )
            ).mappings()
        }
        # Rows in one fixed order, so two replicas writing overlapping batches cannot deadlock.
        known = sorted(
            (b for b in beats if b.work_pool_name in pools),
            key=lambda b: (str(pools[b.work_pool_name]["id"]), b.worker_name),
        )
        if known:
            await tx.execute(
                UPSERT_WORKERS,
                {
                    "ids": [uuid4() for _ in known],
                    "pool_ids": [pools[b.work_pool_name]["id"] for b in known],
                    "names": [b.worker_name for b in known],
                    "intervals": [b.heartbeat_interval_seconds for b in known],
                    "seen": [b.seen_at or tx.now for b in known],
                },
            )
            await leases.renew(tx, [(pools[b.work_pool_name]["id"], b.worker_name) for b in known])
        for pool in pools.values():
            if pool["status"] != WorkPoolStatus.NOT_READY:
                continue
            values, announced = events.pool_status_change(pool, WorkPoolStatus.READY, tx.now)
            flipped = await tx.execute(
                update(work_pool)
                .where(work_pool.c.id == pool["id"], work_pool.c.status == WorkPoolStatus.NOT_READY)
                .values(values)
                .returning(work_pool.c.id)
            )
            if flipped.first() is not None:
                tx.emit(announced)
    db.observe("heartbeats", received=len(beats), recorded=len(known))
    return set(pool_names) - set(pools)
