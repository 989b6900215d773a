"""Prefect's server over HTTP, for side-by-side rows: the same operations as the workpools
benchmarks (read pool, create queue, heartbeat, poll), data seeded the same way, and the server's
processes for CPU accounting.

The server runs from a virtualenv of its own, on the local PostgreSQL:

    python3 -m venv /work/prefect-venv && /work/prefect-venv/bin/pip install prefect==3.9.1
    createdb -h 127.0.0.1 -U postgres prefect_bench
    PREFECT_API_DATABASE_CONNECTION_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/prefect_bench \\
        /work/prefect-venv/bin/prefect server start --no-services --no-ui --port 4200
"""

from __future__ import annotations

import itertools
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from bench.housekeeping import asyncpg_dsn


def server_pids(port: int) -> list[int]:
    """The processes of the Prefect server listening on `port`: the `prefect server start`
    process (found by its command line) and its children."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                words = f.read().split(b"\0")
        except OSError:
            continue
        text = b" ".join(words).decode(errors="replace")
        if "prefect" in text and "server" in text and "start" in text and str(port) in text:
            pids.append(int(entry))
    return pids + [child for pid in pids for child in _children(pid)]


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return found + [grandchild for child in found for grandchild in _children(child)]


class PrefectHTTP:
    """One shared HTTP client (keep-alive, up to 64 connections), as the workpools benchmarks
    share one WorkPoolClient."""

    def __init__(self, url: str, database_url: str, prefix: str) -> None:
        self.http = httpx.AsyncClient(
            base_url=url.rstrip("/"),
            timeout=60,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
        )
        self.database_url = database_url
        self.prefix = prefix  # pool names start with it, so runs never collide
        self._names = itertools.count()
        self.runs_polled = self.polls = 0

    def pool(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    async def close(self) -> None:
        await self.http.aclose()

    async def _call(self, method: str, path: str, json: Any = None) -> Any:
        response = await self.http.request(method, path, json=json)
        response.raise_for_status()
        return response.json() if response.content else None

    async def create_pool(self, name: str, concurrency_limit: int | None = None) -> None:
        await self._call(
            "POST",
            "/work_pools/",
            {"name": self.pool(name), "type": "process", "concurrency_limit": concurrency_limit},
        )

    async def read_pool(self, name: str) -> Any:
        return await self._call("GET", f"/work_pools/{self.pool(name)}")

    async def create_queue(self, pool: str, queue: str | None = None) -> Any:
        queue = queue or f"q{next(self._names)}"
        return await self._call("POST", f"/work_pools/{self.pool(pool)}/queues", {"name": queue})

    async def heartbeat(self, pool: str, worker: str) -> None:
        await self._call(
            "POST",
            f"/work_pools/{self.pool(pool)}/workers/heartbeat",
            {"name": worker, "heartbeat_interval_seconds": 30},
        )

    async def poll(self, pool: str, limit: int = 10) -> list[Any]:
        return await self._call("POST", f"/work_pools/{self.pool(pool)}/get_scheduled_flow_runs", {"limit": limit})

    async def seed_poll_pool(self, pool: str, queues: int, runs: int) -> None:
        """A pool with `queues` queues (default + q2..), one deployment each, and `runs`
        SCHEDULED runs due over the past hour, round robin over the queues: one run per queue
        made through the API, the rest copied from it in one SQL statement (as bench.seed does
        for workpools)."""
        import asyncpg

        await self.create_pool(pool)
        names = ["default"]
        for k in range(2, queues + 1):
            names.append((await self.create_queue(pool, f"q{k}"))["name"])
        flow = await self._call("POST", "/flows/", {"name": f"{self.pool(pool)}-flow"})
        due = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        templates = []
        for name in names:
            deployment = await self._call(
                "POST",
                "/deployments/",
                {
                    "name": f"{self.pool(pool)}-{name}",
                    "flow_id": flow["id"],
                    "work_pool_name": self.pool(pool),
                    "work_queue_name": name,
                },
            )
            run = await self._call(
                "POST",
                f"/deployments/{deployment['id']}/create_flow_run",
                {"state": {"type": "SCHEDULED", "state_details": {"scheduled_time": due}}},
            )
            templates.append(run["id"])
        conn = await asyncpg.connect(asyncpg_dsn(self.database_url))
        try:
            await conn.execute(COPY_RUNS, templates, runs - len(templates))
            await conn.execute("VACUUM ANALYZE flow_run")
        finally:
            await conn.close()

    async def duplicate_priorities(self, pool: str) -> tuple[int, int]:
        """(queues sharing a priority with another queue of the pool, queues of the pool)."""
        import asyncpg

        conn = await asyncpg.connect(asyncpg_dsn(self.database_url))
        try:
            row = await conn.fetchrow(DUPLICATES, self.pool(pool))
        finally:
            await conn.close()
        return int(row["duplicates"] or 0), int(row["queues"] or 0)


COPY_RUNS = """
WITH t AS (SELECT r.*, row_number() OVER (ORDER BY r.id) - 1 AS k, count(*) OVER () AS n
             FROM flow_run r WHERE r.id = ANY($1::uuid[]))
INSERT INTO flow_run (name, state_type, expected_start_time, next_scheduled_start_time, parameters, context,
                      empirical_policy, tags, auto_scheduled, flow_id, deployment_id, state_id, state_name,
                      work_queue_name, state_timestamp, created_by, work_queue_id, job_variables, labels)
SELECT 'bench-run-' || i, t.state_type, s.at, s.at, t.parameters, t.context, t.empirical_policy, t.tags,
       false, t.flow_id, t.deployment_id, t.state_id, t.state_name, t.work_queue_name, t.state_timestamp,
       t.created_by, t.work_queue_id, t.job_variables, t.labels
  FROM generate_series(0, $2 - 1) AS i
  JOIN t ON t.k = i % t.n
 CROSS JOIN LATERAL (SELECT now() - make_interval(secs => 3600 * (i + 1)::float8 / $2)) AS s(at)
"""

DUPLICATES = """
SELECT count(*) FILTER (WHERE c > 1) AS duplicates, count(*) AS queues
  FROM (SELECT count(*) OVER (PARTITION BY q.priority) AS c
          FROM work_queue q JOIN work_pool p ON p.id = q.work_pool_id WHERE p.name = $1) AS x
"""
