"""Write transactions (`Database.transaction`, `Tx`): begun and committed on asyncpg over a
connection of SQLAlchemy's pool. Hot-path statements and SQLAlchemy statements share the one
transaction, commit and roll back together, and a connection goes back to its pool with no
transaction left open: after a failure, a cancellation or a lost connection. Connections opened
for a burst stay in the pool."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from services.db import Database, Statement
from tests.factories import pids_after_a_drop, wait_until

BACKEND = Statement.of("SELECT pg_backend_pid() AS pid, txid_current_if_assigned() AS xid")
MARK = Statement.of("INSERT INTO tx_probe (label) VALUES (:label)")
ACTIVITY = Statement.of("SELECT state, query FROM pg_stat_activity WHERE pid = :pid")
TERMINATE = Statement.of("SELECT pg_terminate_backend(:pid) AS ended")
LABELS = text("SELECT label FROM tx_probe ORDER BY label")


@pytest.fixture
async def probe(db):
    async with db.transaction() as tx:
        await tx.execute(text("CREATE TABLE IF NOT EXISTS tx_probe (label text PRIMARY KEY)"))
        await tx.execute(text("DELETE FROM tx_probe"))
    yield db
    async with db.transaction() as tx:
        await tx.execute(text("DROP TABLE tx_probe"))


async def labels(db: Database) -> list[str]:
    async with db.read() as tx:
        return list((await tx.execute(LABELS)).scalars())


async def test_both_kinds_of_statement_commit_in_one_transaction(probe):
    async with probe.transaction() as tx:
        await tx.fetch(MARK, {"label": "hot path"})
        first = await tx.fetchrow(BACKEND, {})
        await tx.execute(text("INSERT INTO tx_probe (label) VALUES ('sqlalchemy')"))
        second = (await tx.execute(text("SELECT pg_backend_pid() AS pid, txid_current() AS xid"))).mappings().one()
    assert (first["pid"], first["xid"]) == (second["pid"], second["xid"])  # one connection, one transaction
    assert await labels(probe) == ["hot path", "sqlalchemy"]


async def test_a_failure_rolls_both_back_and_the_connection_is_reused_clean(probe):
    with pytest.raises(RuntimeError, match="the block failed"):
        async with probe.transaction() as tx:
            await tx.execute(text("INSERT INTO tx_probe (label) VALUES ('sqlalchemy')"))
            await tx.fetch(MARK, {"label": "hot path"})
            pid = (await tx.fetchrow(BACKEND, {}))["pid"]
            raise RuntimeError("the block failed")
    assert await labels(probe) == []
    async with probe.transaction() as tx:
        again = await tx.fetchrow(BACKEND, {})
    assert (again["pid"], again["xid"]) == (pid, None)  # the same connection, no transaction carried over


async def test_a_transaction_that_runs_nothing_costs_no_round_trip(probe):
    async with probe.transaction() as tx:
        assert tx.conn is None
    async with probe.transaction() as tx:
        await tx.fetch(MARK, {"label": "after an empty one"})
    assert await labels(probe) == ["after an empty one"]


async def test_a_cancelled_transaction_is_rolled_back_and_its_connection_not_reused_open(probe):
    started = asyncio.Event()
    pids: list[int] = []

    async def held() -> None:
        async with probe.transaction() as tx:
            await tx.fetch(MARK, {"label": "cancelled"})
            pids.append((await tx.fetchrow(BACKEND, {}))["pid"])
            started.set()
            await tx.fetch(Statement.of("SELECT pg_sleep(30)"), {})

    task = asyncio.create_task(held())
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await labels(probe) == []
    for _ in range(3):  # whichever connection the pool gives, none is inside a transaction
        async with probe.transaction() as tx:
            row = await tx.fetchrow(BACKEND, {})
            assert row["xid"] is None
    assert len(pids) == 1
    await wait_until(lambda: _sleep_ended(probe, pids[0]), timeout=10, interval=0.1)  # cancelled on the server


async def _sleep_ended(db: Database, pid: int) -> bool:
    async with db.read() as tx:  # the read pool: not one of the transactions' connections
        row = await tx.fetchrow(ACTIVITY, {"pid": pid})
    return row is None or (row["state"], row["query"]) != ("active", "SELECT pg_sleep(30)")


async def test_connections_opened_for_a_burst_are_kept(database_url):
    db = Database(database_url, pool_size=1)  # up to two connections for transactions
    try:
        inside = asyncio.Barrier(2)

        async def write() -> int:
            async with db.transaction() as tx:
                pid = (await tx.fetchrow(BACKEND, {}))["pid"]
                await inside.wait()  # both at once: both connections in use
                return pid

        pids = await asyncio.gather(write(), write())
        assert len(set(pids)) == 2
        pool = db.engine.sync_engine.pool
        assert (pool.checkedout(), pool.checkedin()) == (0, 2)  # both given back, neither closed
        again = await asyncio.gather(write(), write())
        assert set(again) == set(pids)  # the next burst reuses them: no connection opened
    finally:
        await db.dispose()


async def test_a_connection_postgresql_dropped_is_a_503_and_is_replaced(probe):
    async with probe.transaction() as tx:
        pid = (await tx.fetchrow(BACKEND, {}))["pid"]
    async with probe.read() as tx:  # the read pool: not the connection it ends
        assert (await tx.fetchrow(TERMINATE, {"pid": pid}))["ended"] is True
    answers = await pids_after_a_drop(probe.transaction, BACKEND)
    assert answers[-1] != pid and isinstance(answers[-1], int)
    assert answers[0] in ("Service Unavailable", answers[-1])
