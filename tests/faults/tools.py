"""Helpers of the fault suite: hold rows locked so requests stay in flight, and look at who
holds what (PostgreSQL lock waits, Redis pending entries)."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import text

from schemas.channels import Channels, Op
from services.db import Database

FAST_RECLAIM = {
    "WORKPOOLS_RECLAIM_IDLE_SECONDS": "1",
    "WORKPOOLS_RECLAIM_EVERY_SECONDS": "0.2",
    "WORKPOOLS_FOREMAN_ENABLED": "false",
    # these tests keep requests in flight by holding row locks (`rows_locked`) for longer than
    # the default lock, statement and request timeouts (3, 5 and 30 s) allow
    "WORKPOOLS_DB_LOCK_TIMEOUT_SECONDS": "120",
    "WORKPOOLS_DB_STATEMENT_TIMEOUT_SECONDS": "120",
    "WORKPOOLS_REQUEST_TIMEOUT_SECONDS": "150",
}
"""Replica environment: an entry left by a dead replica is served again about a second later."""


@asynccontextmanager
async def rows_locked(db: Database, pool_name: str) -> AsyncIterator[None]:
    """Hold a pool's row and its default queue's row `FOR UPDATE` in a transaction of the test:
    `create_work_queue` (locks the pool) and `create_flow_run` (its foreign key locks the queue)
    wait in the replica's database session until the block ends (rolled back)."""
    async with db.engine.connect() as conn:
        await conn.begin()
        # this session holds its locks idle for as long as the test needs (no idle timeout)
        await conn.execute(text("SET LOCAL idle_in_transaction_session_timeout = 0"))
        await conn.execute(text("SELECT 1 FROM work_pool WHERE name = :n FOR UPDATE"), {"n": pool_name})
        await conn.execute(
            text(
                "SELECT 1 FROM work_queue q JOIN work_pool p ON q.id = p.default_queue_id "
                "WHERE p.name = :n FOR UPDATE OF q"
            ),
            {"n": pool_name},
        )
        yield
        await conn.rollback()


async def waiting_on_locks(db: Database, n: int) -> bool:
    """At least `n` sessions of this database wait for a lock (requests held by `rows_locked`)."""
    async with db.engine.connect() as conn:
        return n <= await conn.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )


async def pending_by_consumer(redis: Redis, channels: Channels, op: Op) -> Counter[str]:
    """Entries of an operation's stream read but not acknowledged, by consumer (replica) name."""
    entries = await redis.xpending_range(channels.rpc(op), channels.rpc_group, min="-", max="+", count=1000)
    return Counter(entry["consumer"].decode() for entry in entries)


async def scalar(db: Database, sql: str, **params: Any) -> Any:
    async with db.engine.connect() as conn:
        return await conn.scalar(text(sql), params)


async def runs_by_name(db: Database) -> dict[str, int]:
    """How many flow runs bear each name: the effect count of `create_flow_run` requests."""
    async with db.engine.connect() as conn:
        return dict((await conn.execute(text("SELECT name, count(*) FROM flow_run GROUP BY name"))).all())
