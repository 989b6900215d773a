"""Heartbeats in bulk: one upsert per pool for a batch of its workers, the pool flipped READY
once, and the workers' leases renewed or released.

The batch comes coalesced (one entry per worker). The pool is read `FOR KEY SHARE`, like a
single heartbeat, so a concurrent foreman tick cannot mark it NOT_READY from a snapshot that
misses these workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import uuid4

from sqlalchemy import ARRAY, DateTime, Integer, Text, Uuid, bindparam, select, text, update

from schemas.common import WorkPoolStatus
from services import events, leases
from services.db import Database, Kind
from services.leases import LEASE_GRACE_SECONDS
from services.tables import work_pool


@dataclass(frozen=True)
class Beat:
    work_pool_name: str
    worker_name: str
    heartbeat_interval_seconds: int | None = None
    seen_at: datetime | None = None
    """When the heartbeat was sent, on this clock (`worker_channel.sent_time`; the transaction's
    time when not given): its renewals run from here."""
    lease_tokens: tuple[int, ...] | None = None
    """The leases the worker holds (renewed; its others are released after the grace);
    None: every live lease of the worker is renewed (the Prefect-compatible heartbeat)."""
    tolerance_seconds: float | None = None
    """A renewed lease lasts at least this long: the silence after which the worker is OFFLINE."""


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


async def record_heartbeats(
    db: Database, beats: Sequence[Beat], grace_seconds: float = LEASE_GRACE_SECONDS
) -> dict[str, dict[int, float]] | None:
    """Record the beats of one pool (one transaction per pool, so a pool whose row is held
    elsewhere stalls only its own workers). None when the pool does not exist; otherwise, for
    each worker whose beat named its leases, the leases renewed (token -> seconds left)."""
    names = {b.work_pool_name for b in beats}
    if len(names) != 1:
        raise ValueError("record_heartbeats takes the beats of one pool")
    # heartbeat timeouts: a pool row held elsewhere gives way fast (0.5 s), the worker's next beat retries
    async with db.transaction(kind=Kind.HEARTBEAT) as tx:
        pool = (
            (
                await tx.execute(
                    select(work_pool).where(work_pool.c.name == names.pop()).with_for_update(read=True, key_share=True)
                )
            )
            .mappings()
            .first()
        )
        if pool is None:
            db.observe("heartbeats", received=len(beats), recorded=0)
            return None
        # Rows in one fixed order, so two replicas writing overlapping batches cannot deadlock.
        known = sorted(beats, key=lambda b: b.worker_name)
        await tx.execute(
            UPSERT_WORKERS,
            {
                "ids": [uuid4() for _ in known],
                "pool_ids": [pool["id"] for _ in known],
                "names": [b.worker_name for b in known],
                "intervals": [b.heartbeat_interval_seconds for b in known],
                "seen": [b.seen_at or tx.now for b in known],
            },
        )
        plain = [b for b in known if b.lease_tokens is None]
        naming = [b for b in known if b.lease_tokens is not None]
        await leases.renew(tx, pool["id"], [(b.worker_name, b.tolerance_seconds, b.seen_at or tx.now) for b in plain])
        renewed = await leases.renew_named(
            tx,
            pool["id"],
            [(b.worker_name, b.lease_tokens or (), b.tolerance_seconds, b.seen_at or tx.now) for b in naming],
            grace_seconds,
        )
        if pool["status"] == WorkPoolStatus.NOT_READY:
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
    return renewed
