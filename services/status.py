"""The status snapshot: every pool with its queues (backlog, late runs, slots) and the workers,
read in one autocommit round of three statements. One replica computes it per interval (the
status page and the metrics of every replica read that one copy), so scraping or watching many
replicas costs the database nothing more.

Backlog counts use `ix_flow_run__scheduled` (SCHEDULED runs per queue in time order); slots use
`ix_flow_run__active` and `ix_flow_run__leased`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import DateTime, bindparam, text

from services.db import Database

QUEUES = text(
    """
    SELECT p.name AS pool, p.status AS pool_status, p.is_paused AS pool_paused,
           p.concurrency_limit AS pool_limit, p.type AS pool_type,
           q.name AS queue, q.priority, q.status, q.is_paused AS paused, q.concurrency_limit AS "limit",
           backlog.due, backlog.late, backlog.oldest_due, slots.used, slots.leased
      FROM work_pool p
      JOIN work_queue q ON q.work_pool_id = p.id
     CROSS JOIN LATERAL (
        SELECT count(*) AS due,
               count(*) FILTER (WHERE r.next_scheduled_start_time <= :late_before) AS late,
               min(r.next_scheduled_start_time) AS oldest_due
          FROM flow_run r
         WHERE r.work_queue_id = q.id AND r.state_type = 'SCHEDULED'
           AND r.next_scheduled_start_time <= :now AND r.lease_expires IS NULL
     ) backlog
     CROSS JOIN LATERAL (
        SELECT count(*) AS used, count(*) FILTER (WHERE r.lease_expires IS NOT NULL) AS leased
          FROM flow_run r
         WHERE r.work_queue_id = q.id
           AND (r.state_type IN ('PENDING', 'RUNNING') OR r.lease_expires IS NOT NULL)
     ) slots
     ORDER BY p.name, q.priority
    """
).bindparams(bindparam("now", type_=DateTime(timezone=True)), bindparam("late_before", type_=DateTime(timezone=True)))

WORKERS = text(
    """
    SELECT p.name AS pool, w.name, w.status, w.last_heartbeat_time, w.heartbeat_interval_seconds,
           (SELECT count(*) FROM flow_run r JOIN work_queue q ON q.id = r.work_queue_id
             WHERE r.lease_owner = w.name AND r.lease_expires IS NOT NULL
               AND q.work_pool_id = w.work_pool_id) AS leases
      FROM worker w JOIN work_pool p ON p.id = w.work_pool_id
     ORDER BY w.last_heartbeat_time DESC
     LIMIT :limit
    """
)

WORKER_COUNTS = text(
    """
    SELECT p.name AS pool, w.status, count(*) AS workers
      FROM worker w JOIN work_pool p ON p.id = w.work_pool_id
     GROUP BY p.name, w.status
    """
)


async def status_snapshot(db: Database, late_after_seconds: float, max_workers: int = 500) -> dict[str, Any]:
    """Pools (with their queues), the `max_workers` latest workers, worker counts per pool and
    status; times as ISO strings and ages in seconds, ready to be stored as JSON."""
    async with db.read() as tx:
        now = tx.now
        late_before = now - timedelta(seconds=late_after_seconds)
        queues = (await tx.execute(QUEUES, {"now": now, "late_before": late_before})).mappings().all()
        workers = (await tx.execute(WORKERS, {"limit": max_workers})).mappings().all()
        counts = (await tx.execute(WORKER_COUNTS)).mappings().all()
    pools: dict[str, dict[str, Any]] = {}
    for row in queues:
        pool = pools.get(row["pool"])
        if pool is None:
            pool = pools[row["pool"]] = {
                "name": row["pool"],
                "type": row["pool_type"],
                "status": row["pool_status"],
                "paused": row["pool_paused"],
                "limit": row["pool_limit"],
                "used": 0,
                "leased": 0,
                "queues": [],
                "workers": {},
            }
        pool["used"] += row["used"]
        pool["leased"] += row["leased"]
        pool["queues"].append(
            {
                "name": row["queue"],
                "priority": row["priority"],
                "status": row["status"],
                "paused": row["paused"],
                "limit": row["limit"],
                "used": row["used"],
                "due": row["due"],
                "late": row["late"],
                "oldest_due_age": _age(now, row["oldest_due"]),
            }
        )
    for row in counts:
        if row["pool"] in pools:
            pools[row["pool"]]["workers"][row["status"]] = row["workers"]
    return {
        "computed_at": now.isoformat(),
        "late_after_seconds": late_after_seconds,
        "pools": list(pools.values()),
        "workers": [
            {
                "pool": row["pool"],
                "name": row["name"],
                "status": row["status"],
                "heartbeat_age": _age(now, row["last_heartbeat_time"]),
                "heartbeat_interval": row["heartbeat_interval_seconds"],
                "leases": row["leases"],
            }
            for row in workers
        ],
    }


def _age(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else round(max(0.0, (now - then).total_seconds()), 3)
