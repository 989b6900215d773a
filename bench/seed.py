"""Benchmark data: a pool with prioritised queues and deployments, and scheduled runs inserted
in one statement."""

from __future__ import annotations

import time
from typing import Any

from bench.housekeeping import asyncpg_dsn, check_bench_database


async def create_priority_pool(client: Any, pool: str, queues: int = 5) -> list[str]:
    """A pool (no concurrency limit) with `queues` queues of priorities 1..queues: its default
    queue (priority 1) and q2..qN, and one deployment on each. Returns the queue names in
    priority order."""
    await client.create_work_pool({"name": pool, "type": "process"})
    names = ["default"]
    for priority in range(2, queues + 1):
        queue = await client.create_work_queue(pool, {"name": f"q{priority}", "priority": priority})
        names.append(queue.name)
    for name in names:
        await client.create_deployment({"name": f"{pool}-{name}", "work_pool_name": pool, "work_queue_name": name})
    return names


SEED_RUNS = """
WITH q AS (
    SELECT q.id, q.name, row_number() OVER (ORDER BY q.priority) - 1 AS k, count(*) OVER () AS n,
           (SELECT d.id FROM deployment d WHERE d.work_queue_id = q.id ORDER BY d.created, d.id LIMIT 1)
               AS deployment_id
      FROM work_queue q JOIN work_pool p ON p.id = q.work_pool_id
     WHERE p.name = $1
)
INSERT INTO flow_run (id, created, updated, name, deployment_id, work_queue_id, work_queue_name,
                      state_type, state_name, state_id, state_timestamp,
                      next_scheduled_start_time, expected_start_time)
SELECT gen_random_uuid(), now(), now(), 'bench-run-' || i, q.deployment_id, q.id, q.name,
       'SCHEDULED', 'Scheduled', gen_random_uuid(), now(), s.t, s.t
  FROM generate_series(0, $2 - 1) AS i
  JOIN q ON q.k = i % q.n
 CROSS JOIN LATERAL (SELECT now() - make_interval(secs => $3 * (i + 1)::float8 / $2)) AS s(t)
"""


async def seed_scheduled_runs(database_url: str, pool: str, count: int, spread_seconds: float = 3600.0) -> float:
    """Replace the pool's flow runs by `count` SCHEDULED runs, inserted with one SQL statement
    (not `count` RPCs): round-robin over the pool's queues, due times spread evenly over the past
    `spread_seconds`, each on its queue's deployment. Then VACUUM ANALYZE, so every phase starts
    from the same clean table. Returns the seconds it took."""
    import asyncpg

    check_bench_database(database_url)
    started = time.perf_counter()
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await conn.execute(
            "DELETE FROM flow_run WHERE work_queue_id IN "
            "(SELECT q.id FROM work_queue q JOIN work_pool p ON p.id = q.work_pool_id WHERE p.name = $1)",
            pool,
        )
        status = await conn.execute(SEED_RUNS, pool, count, float(spread_seconds))
        inserted = int(status.split()[-1])
        if inserted != count:
            raise RuntimeError(f"seeded {inserted} runs instead of {count} (does pool {pool!r} exist?)")
        await conn.execute("VACUUM ANALYZE flow_run")
    finally:
        await conn.close()
    return time.perf_counter() - started
