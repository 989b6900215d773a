"""Timeouts everywhere (README "Limits"): a PostgreSQL held by another session's lock answers
503 within the lock timeout; a request that runs too long is cancelled, answered 503, logged,
and no longer pending; PostgreSQL's own timeouts end statements and idle transactions."""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager

import asyncpg
import pytest
from sqlalchemy import text

from client import WorkPoolClient
from replica.app import build_app
from schemas.channels import Channels, Op
from services.db import Database, DbTimeouts, asyncpg_url
from services.errors import Unavailable
from tests.factories import make_pool, wait_until

LOCK_TIMEOUT = DbTimeouts().lock


@asynccontextmanager
async def table_locked(database_url: str, table: str = "work_pool"):
    """Another session (an operator's, say) holding ACCESS EXCLUSIVE on `table` until the block ends."""
    url = asyncpg_url(database_url)
    conn = await asyncpg.connect(**url.translate_connect_args(username="user"))
    try:
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        yield
        await transaction.rollback()
    finally:
        await conn.close()


async def test_a_locked_table_answers_503_within_the_lock_timeout_then_serves_again(client, database_url):
    pool = await client.create_work_pool(make_pool())
    async with table_locked(database_url):
        for op, body in [
            (Op.READ_WORK_POOL, {"name": pool.name}),
            (Op.CREATE_WORK_QUEUE, {"work_pool_name": pool.name, "work_queue": {"name": "q"}}),
        ]:
            started = time.monotonic()
            status, reply = await client._rpc.request(op, body)
            elapsed = time.monotonic() - started
            assert (status, reply) == (
                503,
                {"detail": "Service Unavailable (a lock the request needs is held elsewhere)"},
            )
            assert LOCK_TIMEOUT - 0.5 < elapsed < LOCK_TIMEOUT + 3, elapsed
    assert (await client.read_work_pool(pool.name)).name == pool.name
    assert [q.name for q in await client.read_work_queues(pool.name)] == ["default"]


async def test_a_hung_request_is_cancelled_answered_503_logged_and_not_left_pending(
    settings, db, redis, database_url, caplog
):
    quick = settings.model_copy(update={"request_timeout_seconds": 1.0})  # under the 3 s lock timeout
    caplog.set_level(logging.ERROR, logger="workpools.requests")
    async with build_app(quick, db=db), WorkPoolClient(settings.redis_url, settings.prefix, timeout=10) as client:
        pool = await client.create_work_pool(make_pool())
        async with table_locked(database_url):
            started = time.monotonic()
            status, reply = await client._rpc.request(Op.READ_WORK_POOL, {"name": pool.name})
            elapsed = time.monotonic() - started
        assert (status, reply) == (503, {"detail": "Service Unavailable (the request took longer than 1 s)"})
        assert 0.9 < elapsed < 3, elapsed
        stream = Channels(settings.prefix).rpc(Op.READ_WORK_POOL)
        assert (await redis.xpending(stream, Channels(settings.prefix).rpc_group))["pending"] == 0
        assert (await client.read_work_pool(pool.name)).name == pool.name
    [line] = [r.getMessage() for r in caplog.records if "still running after" in r.getMessage()]
    assert line.endswith(f"on {stream} still running after 1 s: cancelled and answered 503")


async def test_postgresql_ends_a_slow_statement_and_an_idle_transaction(database_url):
    db = Database(database_url, timeouts=DbTimeouts(statement=0.5, lock=0.3, idle_in_transaction=0.5, connect=2))
    try:
        started = time.monotonic()
        with pytest.raises(Unavailable) as info:
            async with db.transaction() as tx:
                await tx.execute(text("SELECT pg_sleep(5)"))
        assert info.value.detail == "Service Unavailable (the database did not finish the statement in time)"
        assert time.monotonic() - started < 2
        with pytest.raises(Unavailable) as info:
            async with db.read() as tx:
                await tx.execute(text("SELECT pg_sleep(5)"))
        assert info.value.detail == "Service Unavailable (the database did not finish the statement in time)"

        async with db.read() as tx:
            settings = {
                name: (await tx.execute(text(f"SHOW {name}"))).scalar()
                for name in ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout")
            }
        assert settings == {
            "statement_timeout": "500ms",
            "lock_timeout": "300ms",
            "idle_in_transaction_session_timeout": "500ms",
        }

        with pytest.raises(Unavailable):
            async with db.transaction() as tx:
                pid = (await tx.execute(text("SELECT pg_backend_pid()"))).scalar()

                async def session_ended() -> bool:
                    async with db.read() as other:
                        found = await other.execute(
                            text("SELECT 1 FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
                        )
                        return found.first() is None

                await wait_until(session_ended, timeout=5)  # idle in its transaction: PostgreSQL ended it
                await tx.execute(text("SELECT 1"))
    finally:
        await db.dispose()
