"""Reads on the read pool (`Database.read`, `ReadTx`): the same rows as on SQLAlchemy's
connections, connections reused without a reset, a connection PostgreSQL drops replaced (a read
on it answered 503), a full pool answered 503 in time."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import text

from schemas.work_pools import WorkPoolCreate
from services import work_pools
from services.db import Database, DbTimeouts, Statement
from services.errors import TimedOut, Unavailable
from services.work_pools import READ_POOL
from tests.factories import pids_after_a_drop, wait_until

BACKEND = Statement.of("SELECT pg_backend_pid() AS pid, current_setting('statement_timeout') AS statement_timeout")
TEMPLATE = {
    "job_configuration": {"command": "{{ command }}"},
    "variables": {"properties": {"command": {"type": "string"}}},
}


async def test_rows_are_decoded_as_on_sqlalchemys_connections(db):
    await work_pools.create_work_pool(db, WorkPoolCreate(name="json", type="process", base_job_template=TEMPLATE))
    async with db.read() as tx:
        pooled = dict(await tx.fetchrow(READ_POOL, {"name": "json"}))
    async with db.transaction() as tx:  # SQLAlchemy's connection, its JSONB codec
        engine = dict(await tx.fetchrow(READ_POOL, {"name": "json"}))
    assert pooled == engine
    assert pooled["base_job_template"] == TEMPLATE
    assert (await work_pools.read_work_pool(db, "json")).base_job_template == TEMPLATE


async def test_connections_are_reused_with_the_request_timeouts(db):
    async with db.read() as tx:
        first = await tx.fetchrow(BACKEND, {})
    async with db.read() as tx:
        again = await tx.fetchrow(BACKEND, {})
    assert again["pid"] == first["pid"]  # given back, not closed
    assert (db.timeouts.request.statement, first["statement_timeout"]) == (5.0, "5s")


async def test_only_the_read_pool_commits_without_waiting_for_the_wal_flush(db):
    settings = "SELECT current_setting('synchronous_commit') AS sync, current_setting('plan_cache_mode') AS plans"
    async with db.read() as tx:
        pooled = dict(await tx.fetchrow(Statement.of(settings), {}))
    async with db.transaction() as tx:  # where every write of state commits
        engine = dict(await tx.fetchrow(Statement.of(settings), {}))
    assert pooled == {"sync": "off", "plans": "force_generic_plan"}
    assert engine == {"sync": "on", "plans": "auto"}


async def test_an_idle_connection_postgresql_dropped_costs_at_most_one_503(db):
    async with db.read() as tx:
        pid = (await tx.fetchrow(BACKEND, {}))["pid"]
    assert await _terminate(db, pid)
    answers = await pids_after_a_drop(db.read, BACKEND)
    assert answers[-1] != pid and isinstance(answers[-1], int)
    assert answers[0] == "Service Unavailable" or answers[0] == answers[1]


async def test_a_connection_dropped_during_a_read_is_a_503_then_replaced(db):
    async def slow_read() -> None:
        async with db.read() as tx:
            await tx.fetch(Statement.of("SELECT pg_sleep(30)"), {})

    reading = asyncio.create_task(slow_read())
    pid = await wait_until(lambda: _backend_running(db, "SELECT pg_sleep(30)"), timeout=5)
    assert await _terminate(db, pid)
    with pytest.raises(Unavailable, match="Service Unavailable"):
        await asyncio.wait_for(reading, 5)
    async with db.read() as tx:
        assert (await tx.fetchrow(BACKEND, {}))["pid"] != pid


async def _terminate(db: Database, pid: int) -> bool:
    async with db.engine.connect() as other:
        return bool((await other.execute(text(f"SELECT pg_terminate_backend({pid})"))).scalar())


async def _backend_running(db: Database, query: str) -> int | None:
    async with db.engine.connect() as other:
        found = await other.execute(
            text(
                "SELECT pid FROM pg_stat_activity WHERE query = :query AND state = 'active' AND datname = current_database()"
            ),
            {"query": query},
        )
        return found.scalar()


async def test_a_full_read_pool_is_a_503_in_time(database_url):
    db = Database(database_url, pool_size=1, pool_timeout=0.2)
    try:
        async with db.read_connection(), db.read_connection():  # the read pool's two (its least), taken
            started = time.monotonic()
            with pytest.raises(TimedOut) as refused:
                async with db.read() as tx:
                    await tx.fetchrow(BACKEND, {})
            assert time.monotonic() - started < 2
        assert (refused.value.reason, str(refused.value)) == ("no_connection", "Service Unavailable")
        async with db.read() as tx:  # free again
            assert isinstance((await tx.fetchrow(BACKEND, {}))["pid"], int)
    finally:
        await db.dispose()


async def test_a_transaction_left_open_is_rolled_back_before_reuse(db):
    async with db.read_connection() as conn:
        await conn.execute("BEGIN")
        pid = await conn.fetchval("SELECT pg_backend_pid()")
    async with db.read_connection() as conn:
        assert await conn.fetchval("SELECT pg_backend_pid()") == pid
        assert not conn.is_in_transaction()


async def test_a_statement_over_its_timeout_is_a_503_saying_so_and_keeps_its_connection(database_url):
    db = Database(database_url, timeouts=DbTimeouts(statement=0.2))
    try:
        async with db.read() as tx:
            pid = (await tx.fetchrow(BACKEND, {}))["pid"]
        with pytest.raises(TimedOut) as refused:
            async with db.read() as tx:
                await tx.fetch(Statement.of("SELECT pg_sleep(2)"), {})
        assert (refused.value.reason, str(refused.value)) == (
            "statement",
            "Service Unavailable (the database did not finish the statement in time)",
        )
        async with db.read() as tx:  # the server cancelled a statement, not the session
            assert (await tx.fetchrow(BACKEND, {}))["pid"] == pid
    finally:
        await db.dispose()
