"""The foreman tick (docs/statuses.md#the-foreman): silent workers OFFLINE; pools, deployments and queues that
nobody serves NOT_READY — each transition once, with its event, decided on current rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import DateTime, Interval, and_, bindparam, exists, func, literal_column, or_, select, update

from services import events, leases
from services.db import Database, Kind
from services.readiness import QUEUE_WITH_POOL
from services.tables import deployment, work_pool, work_queue, worker


@dataclass(frozen=True)
class ForemanRules:
    inactivity_heartbeat_multiple: int = 3
    fallback_heartbeat_interval_seconds: int = 30
    deployment_last_polled_timeout_seconds: int = 60
    work_queue_last_polled_timeout_seconds: int = 60


@dataclass
class ForemanReport:
    workers_offline: int = 0
    pools_not_ready: int = 0
    deployments_not_ready: int = 0
    queues_not_ready: int = 0
    leases_expired: int = 0


ONE_SECOND = literal_column("interval '1 second'", Interval)
ONLINE_WORKER = exists().where(worker.c.work_pool_id == work_pool.c.id, worker.c.status == "ONLINE")


async def run_once(db: Database, rules: ForemanRules = ForemanRules(), now: datetime | None = None) -> ForemanReport:
    now = now or db.clock()
    report = ForemanReport()
    report.workers_offline = await mark_workers_offline(db, rules, now)
    report.leases_expired = await leases.expire_leases(db, now)
    report.pools_not_ready = await mark_pools_not_ready(db, now)
    report.deployments_not_ready = await mark_deployments_not_ready(db, rules, now)
    report.queues_not_ready = await mark_queues_not_ready(db, rules, now)
    return report


async def mark_workers_offline(db: Database, rules: ForemanRules, now: datetime) -> int:
    """ONLINE workers silent for more than multiple x interval (strictly) become OFFLINE.

    The conditions are on the updated row itself (no `id IN (subquery)`): a worker whose row a
    heartbeat holds is checked again, on the heartbeat's committed values, once the lock is
    released, so a worker is never marked OFFLINE just after its heartbeat committed.

    Its claim-mode leases are left to run out: a lease never ends before the end its holder was
    last told, so a state change the holder sent just before stopping its run still lands."""
    interval = worker.c.heartbeat_interval_seconds
    fallback = rules.fallback_heartbeat_interval_seconds
    silent = worker.c.last_heartbeat_time < (
        bindparam("now", now, type_=DateTime(timezone=True))
        - func.coalesce(interval, fallback) * rules.inactivity_heartbeat_multiple * ONE_SECOND
    )
    async with db.transaction(now, Kind.BACKGROUND) as tx:
        offline = (
            await tx.execute(
                update(worker)
                .where(worker.c.status == "ONLINE", silent)
                .values(status="OFFLINE", updated=now)
                .returning(worker.c.id)
            )
        ).all()
    return len(offline)


async def mark_pools_not_ready(db: Database, now: datetime) -> int:
    """READY pools without an ONLINE worker. Candidates are locked first (a heartbeat holds
    KEY SHARE on its pool), then re-checked in a new statement that sees committed heartbeats."""
    async with db.transaction(now, Kind.BACKGROUND) as tx:
        candidates = (
            (
                await tx.execute(
                    select(work_pool)
                    .where(work_pool.c.status == "READY", ~ONLINE_WORKER)
                    .order_by(work_pool.c.id)
                    .with_for_update()
                )
            )
            .mappings()
            .all()
        )
        if not candidates:
            return 0
        still = set(
            (
                await tx.execute(
                    select(work_pool.c.id).where(
                        work_pool.c.id.in_([p["id"] for p in candidates]),
                        work_pool.c.status == "READY",
                        ~ONLINE_WORKER,
                    )
                )
            ).scalars()
        )
        for pool in candidates:
            if pool["id"] not in still:
                continue
            values, announced = events.pool_status_change(pool, "NOT_READY", now)
            await tx.execute(update(work_pool).where(work_pool.c.id == pool["id"]).values(values))
            tx.emit(announced)
        return len(still)


async def mark_deployments_not_ready(db: Database, rules: ForemanRules, now: datetime) -> int:
    cutoff = now - timedelta(seconds=rules.deployment_last_polled_timeout_seconds)
    stale = and_(deployment.c.status == "READY", deployment.c.last_polled < cutoff)
    queue_stale = or_(work_queue.c.id.is_(None), work_queue.c.last_polled.is_(None), work_queue.c.last_polled < cutoff)
    async with db.transaction(now, Kind.BACKGROUND) as tx:
        rows = (
            (
                await tx.execute(
                    select(
                        deployment,
                        work_queue.c.id.label("queue_id"),
                        work_queue.c.name.label("queue_name"),
                        work_pool.c.id.label("pool_id"),
                        work_pool.c.name.label("pool_name"),
                        work_pool.c.type.label("pool_type"),
                    )
                    .select_from(
                        deployment.outerjoin(work_queue, work_queue.c.id == deployment.c.work_queue_id).outerjoin(
                            work_pool, work_pool.c.id == work_queue.c.work_pool_id
                        )
                    )
                    .where(stale, queue_stale)
                    .order_by(deployment.c.id)
                    .with_for_update(of=deployment, key_share=True)
                )
            )
            .mappings()
            .all()
        )
        if not rows:
            return 0
        changed = set(
            (
                await tx.execute(
                    update(deployment)
                    .where(deployment.c.id.in_([r["id"] for r in rows]), stale)
                    .values(status="NOT_READY")
                    .returning(deployment.c.id)
                )
            ).scalars()
        )
        for row in rows:
            if row["id"] in changed:
                tx.emit(events.deployment_event("not-ready", row, now))
        return len(changed)


async def mark_queues_not_ready(db: Database, rules: ForemanRules, now: datetime) -> int:
    cutoff = now - timedelta(seconds=rules.work_queue_last_polled_timeout_seconds)
    stale = and_(work_queue.c.status == "READY", work_queue.c.last_polled < cutoff)
    async with db.transaction(now, Kind.BACKGROUND) as tx:
        rows = (
            (
                await tx.execute(
                    QUEUE_WITH_POOL.where(stale)
                    .order_by(work_queue.c.id)
                    .with_for_update(of=work_queue, key_share=True)
                )
            )
            .mappings()
            .all()
        )
        if not rows:
            return 0
        changed = set(
            (
                await tx.execute(
                    update(work_queue)
                    .where(work_queue.c.id.in_([r["id"] for r in rows]), stale)
                    .values(status="NOT_READY", updated=now)
                    .returning(work_queue.c.id)
                )
            ).scalars()
        )
        for row in sorted(rows, key=lambda r: r["last_polled"]):
            if row["id"] in changed:
                pool = {"id": row["work_pool_id"], "name": row["pool_name"], "type": row["pool_type"]}
                tx.emit(events.queue_event("not-ready", row, pool, now))
        return len(changed)
