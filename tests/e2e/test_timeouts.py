"""Timeouts everywhere (README "Limits"), per kind of work: a PostgreSQL held by another
session's lock answers a request 503 within the request lock timeout, gives way to heartbeats
within theirs, and makes a background loop give up within its own (logged, counted, retried:
it succeeds once the lock is gone); a migration waits for a lock, or gives up within its lock
timeout when one is set; a request that runs too long is cancelled, answered 503, logged, and
no longer pending; PostgreSQL's own timeouts end statements and idle transactions."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

import migrations
from client import ServiceUnavailable, WorkerClient, WorkPoolClient
from replica.app import build_app
from replica.foreman import ForemanLease, foreman_tick, sweep_run_leases
from replica.housekeeping import Housekeeping
from replica.loops import Loops
from replica.outbox import EventRelay
from schemas.channels import Channels, Op
from schemas.flow_runs import FlowRunCreate
from schemas.scheduling import ClaimOptions
from schemas.settings import Settings
from schemas.work_pools import WorkPoolCreate
from services import events, flow_runs, scheduling, work_pools, workers
from services.db import Bounds, Database, DbTimeouts, Kind, asyncpg_url
from services.errors import TimedOut, Unavailable
from services.foreman import ForemanRules
from services.heartbeats import Beat, record_heartbeats
from services.tables import flow_run, request_log
from tests.factories import make_pool, wait_until

LOCK_TIMEOUT = DbTimeouts().lock
HEARTBEAT_LOCK_TIMEOUT = DbTimeouts().heartbeat.lock
BACKGROUND_LOCK_TIMEOUT = DbTimeouts().background.lock
LOCK_HELD = "Service Unavailable (a lock the request needs is held elsewhere)"


@asynccontextmanager
async def held(database_url: str, sql: str, *args: object):
    """Another session (an operator's, a hung replica's) holding the locks `sql` takes until the block ends."""
    url = asyncpg_url(database_url)
    conn = await asyncpg.connect(**url.translate_connect_args(username="user"))
    try:
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute(sql, *args)
        yield
        await transaction.rollback()
    finally:
        await conn.close()


def table_locked(database_url: str, table: str = "work_pool"):
    """Another session holding ACCESS EXCLUSIVE on `table` until the block ends."""
    return held(database_url, f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")


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


# ----------------------------------------------------------------------------------------------
# Requests: reads and plain polls take no row lock of a pool; writes and claims wait for one


async def test_a_held_pool_row_holds_up_writes_and_claims_for_the_lock_timeout_not_reads_and_polls(
    client, database_url
):
    pool = await client.create_work_pool(make_pool())
    run = await client.create_flow_run({"work_pool_name": pool.name})
    poll = {"work_pool_name": pool.name, "claim": False}
    claim = {"work_pool_name": pool.name, "claim": True, "worker_name": "w", "lease_seconds": 30}
    async with held(database_url, "SELECT 1 FROM work_pool WHERE name = $1 FOR UPDATE", pool.name):
        for op, body in [(Op.READ_WORK_POOL, {"name": pool.name}), (Op.GET_SCHEDULED_FLOW_RUNS, poll)]:
            started = time.monotonic()
            status, _ = await client._rpc.request(op, body)
            assert (op, status) == (op, 200)
            assert time.monotonic() - started < 1, op
        for op, body in [
            (Op.UPDATE_WORK_POOL, {"name": pool.name, "work_pool": {"description": "changed"}}),
            (Op.GET_SCHEDULED_FLOW_RUNS, claim),
        ]:
            started = time.monotonic()
            status, reply = await client._rpc.request(op, body)
            elapsed = time.monotonic() - started
            assert (op, status, reply) == (op, 503, {"detail": LOCK_HELD})
            assert LOCK_TIMEOUT - 0.5 < elapsed < LOCK_TIMEOUT + 1.5, (op, elapsed)
    [item] = await client.get_scheduled_flow_runs_for_work_pool(pool.name, claim=True, worker_name="w")
    assert item.flow_run.id == run.id


# ----------------------------------------------------------------------------------------------
# Heartbeats: SET LOCAL on a request connection; a held pool gives way within 0.5 s


async def test_heartbeat_transactions_carry_their_own_timeouts_and_leave_the_connection_as_it_was(db):
    shown = "SELECT current_setting('statement_timeout'), current_setting('lock_timeout')"
    async with db.transaction(kind=Kind.HEARTBEAT) as tx:
        assert tuple((await tx.execute(text(shown))).one()) == ("2s", "500ms")
    async with db.transaction() as tx:
        assert tuple((await tx.execute(text(shown))).one()) == ("5s", "3s")
    async with db.transaction(kind=Kind.BACKGROUND) as tx:
        assert tuple((await tx.execute(text(shown))).one()) == ("30s", "5s")


async def test_heartbeats_of_a_held_pool_give_way_within_their_lock_timeout_then_are_recorded(db, database_url):
    await work_pools.create_work_pool(db, WorkPoolCreate(name="held", type="process"))
    seen: list[tuple[str, dict[str, Any]]] = []
    db.observe = lambda what, **facts: seen.append((what, facts))
    beats = [Beat("held", "w1", 10)]
    async with held(database_url, "SELECT 1 FROM work_pool WHERE name = 'held' FOR UPDATE"):
        started = time.monotonic()
        with pytest.raises(TimedOut) as info:
            await record_heartbeats(db, beats)
        elapsed = time.monotonic() - started
    assert (info.value.detail, info.value.reason) == (LOCK_HELD, "lock")
    assert HEARTBEAT_LOCK_TIMEOUT - 0.1 < elapsed < HEARTBEAT_LOCK_TIMEOUT + 0.5, elapsed
    assert seen == [("db_timeout", {"kind": "heartbeat", "reason": "lock"})]
    assert await record_heartbeats(db, beats) == {}
    assert [w.name for w in await workers.read_workers(db, "held")] == ["w1"]


async def test_a_workers_acknowledged_heartbeat_on_a_held_pool_is_answered_503_in_bounded_time(
    client, settings, database_url
):
    """Three attempts (the ingest retries a 503 twice, after 50 and 100 ms) of 0.5 s each, plus a
    flush period: about 2 s, where the request lock timeout would have made it 9 s."""
    await client.create_work_pool({"name": "held", "type": "process"})
    beat = WorkerClient(  # no retries by the client: the service's own bound is measured
        redis_url=settings.redis_url, prefix=settings.prefix, work_pool_name="held", worker_name="w", retries=0
    )
    async with beat, held(database_url, "SELECT 1 FROM work_pool WHERE name = 'held' FOR UPDATE"):
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable) as info:
            await beat.heartbeat(ack=True)
        elapsed = time.monotonic() - started
    assert (info.value.status, info.value.detail) == (503, LOCK_HELD)
    assert 3 * HEARTBEAT_LOCK_TIMEOUT < elapsed < 3 * HEARTBEAT_LOCK_TIMEOUT + 1.5, elapsed
    async with beat:
        await beat.heartbeat(ack=True)
    assert [w.name for w in await client.read_workers_for_work_pool("held")] == ["w"]


# ----------------------------------------------------------------------------------------------
# Background work: its own pool and timeouts; a loop held by a lock gives up, logs, counts,
# and succeeds once the lock is gone

Work = tuple[Callable[[], Awaitable[object]], str, Callable[[], Awaitable[bool]]]
"""What a loop runs, the SQL of a session holding it up, and whether its work is done."""


async def foreman_work(db: Database, redis, prefix: str, clock) -> Work:
    await work_pools.create_work_pool(db, WorkPoolCreate(name="bg", type="process"))
    await workers.record_heartbeat(db, "bg", "w", heartbeat_interval_seconds=1)
    clock.advance(seconds=60)  # silent for 60 intervals: the tick marks it OFFLINE
    lease = ForemanLease(redis, Channels(prefix).foreman_lease, "me", 30)

    async def offline() -> bool:
        return [w.status for w in await workers.read_workers(db, "bg")] == ["OFFLINE"]

    return (
        lambda: foreman_tick(db, lease, ForemanRules()),
        "SELECT 1 FROM worker WHERE name = 'w' FOR UPDATE",
        offline,
    )


async def lease_sweep_work(db: Database, redis, prefix: str, clock) -> Work:
    await work_pools.create_work_pool(db, WorkPoolCreate(name="bg", type="process"))
    run = await flow_runs.create_flow_run(db, FlowRunCreate(work_pool_name="bg"))
    claim = ClaimOptions(claim=True, worker_name="w", lease_seconds=1)
    [item], _ = await scheduling.get_scheduled_flow_runs(db, "bg", claim=claim)
    assert item.flow_run.id == run.id
    clock.advance(seconds=60)  # the lease ran out: the sweep gives the run back
    lease = ForemanLease(redis, Channels(prefix).foreman_lease, "me", 30)

    async def given_back() -> bool:
        async with db.read() as tx:
            return (await tx.execute(select(flow_run.c.lease_expires).where(flow_run.c.id == run.id))).scalar() is None

    # the sweep skips runs others hold (SKIP LOCKED): a table lock is what holds it up
    return (lambda: sweep_run_leases(db, lease), "LOCK TABLE flow_run IN SHARE MODE", given_back)


async def housekeeping_work(db: Database, redis, prefix: str, clock) -> Work:
    async with db.transaction() as tx:
        await tx.execute(insert(request_log).values(request_id="old", op="x", created=tx.now - timedelta(days=2)))
    housekeeping = Housekeeping(redis, db, [], "me", 600)

    async def forgotten() -> bool:
        async with db.read() as tx:
            return (await tx.execute(select(request_log.c.request_id))).first() is None

    return (housekeeping.run, "SELECT 1 FROM request_log WHERE request_id = 'old' FOR UPDATE", forgotten)


async def outbox_sweep_work(db: Database, redis, prefix: str, clock) -> Work:
    async with db.transaction() as tx:  # no relay after its commit: the event waits for the sweep
        tx.emit(events.event("workpools.test", {"prefect.resource.id": "test"}, tx.now))
    stream = Channels(prefix).events
    relay = EventRelay(db, redis, stream, 1000, grace_seconds=0)

    async def published() -> bool:
        return await redis.xlen(stream) == 1

    # the sweep skips rows others hold (SKIP LOCKED): a table lock is what holds it up
    return (relay.sweep, "LOCK TABLE event_outbox IN SHARE MODE", published)


@pytest.mark.parametrize(
    ("name", "work"),
    [
        ("foreman", foreman_work),
        ("lease sweep", lease_sweep_work),
        ("housekeeping", housekeeping_work),
        ("outbox sweep", outbox_sweep_work),
    ],
)
async def test_background_work_held_by_a_lock_gives_up_within_its_bound_then_succeeds(
    name, work, db, redis, prefix, clock, database_url, caplog
):
    action, lock, done = await work(db, redis, prefix, clock)
    timeouts: list[tuple[float, dict[str, Any]]] = []
    db.observe = lambda what, **facts: timeouts.append((time.monotonic(), facts)) if what == "db_timeout" else None
    caplog.set_level(logging.WARNING, logger="workpools.loops")
    loops = Loops()
    try:
        async with held(database_url, lock):
            started = time.monotonic()
            loops.every(0.2, action, name)
            await wait_until(lambda: bool(timeouts), timeout=BACKGROUND_LOCK_TIMEOUT + 3)
            elapsed = timeouts[0][0] - started
            assert not await done()
        assert BACKGROUND_LOCK_TIMEOUT - 0.5 < elapsed < BACKGROUND_LOCK_TIMEOUT + 1, elapsed
        assert timeouts[0][1] == {"kind": "background", "reason": "lock"}
        await wait_until(done, timeout=5)  # the loop lives on: its next period does the work
    finally:
        await loops.stop()
    [line] = [r.getMessage() for r in caplog.records if r.name == "workpools.loops"][:1]
    assert line == f"{name} failed: {LOCK_HELD}; retrying in 0.2 s"


# ----------------------------------------------------------------------------------------------
# Migrations: no timeouts unless set; waiting for another replica's migration is never cut short


async def test_a_migration_waits_for_a_held_table_or_gives_up_within_its_lock_timeout(database_url):
    url = make_url(database_url).set(database=f"t_migrate_{uuid.uuid4().hex[:8]}")
    rendered = url.render_as_string(hide_password=False)
    admin = asyncpg_url(database_url).translate_connect_args(username="user")
    await migrations.upgrade(rendered, "0001")
    try:
        # 0002 adds columns to flow_run (ACCESS EXCLUSIVE): a row lock there holds it up
        async with held(rendered, "SELECT 1 FROM flow_run FOR UPDATE"):
            started = time.monotonic()
            with pytest.raises(DBAPIError) as info:
                await migrations.upgrade(rendered, timeouts=Bounds(statement=0, lock=1.0, idle_in_transaction=0))
            elapsed = time.monotonic() - started
            assert getattr(info.value.orig, "sqlstate", None) == "55P03"
            assert 0.9 < elapsed < 2.5, elapsed

            waiting = asyncio.create_task(migrations.upgrade(rendered))  # the default: no lock timeout

            async def waits_on_the_lock() -> bool:
                conn = await asyncpg.connect(**admin)
                try:
                    found = await conn.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
                        url.database,
                    )
                    return bool(found)
                finally:
                    await conn.close()

            await wait_until(waits_on_the_lock, timeout=5)
            await asyncio.sleep(0)  # still waiting, not failed
            assert not waiting.done()
        await asyncio.wait_for(waiting, timeout=10)
        conn = await asyncpg.connect(**{**admin, "database": url.database})
        try:
            head = ScriptDirectory.from_config(migrations.alembic_config(rendered)).get_current_head()
            assert await conn.fetchval("SELECT version_num FROM alembic_version") == head
        finally:
            await conn.close()
    finally:
        conn = await asyncpg.connect(**admin)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')
        finally:
            await conn.close()


def test_every_timeout_is_a_setting_with_the_documented_default():
    timeouts = DbTimeouts.from_settings(Settings())
    assert timeouts == DbTimeouts()
    assert {kind: timeouts.of(kind) for kind in Kind} == {
        Kind.REQUEST: Bounds(5.0, 3.0, 10.0),
        Kind.HEARTBEAT: Bounds(2.0, 0.5, 10.0),
        Kind.BACKGROUND: Bounds(30.0, 5.0, 10.0),
        Kind.MIGRATION: Bounds(0, 0, 0),
    }
    changed = DbTimeouts.from_settings(
        Settings(db_background_lock_timeout_seconds=1.5, db_heartbeat_statement_timeout_seconds=9)
    )
    assert changed.of(Kind.BACKGROUND) == Bounds(30.0, 1.5, 10.0)
    assert changed.of(Kind.HEARTBEAT).statement == 5.0  # capped: heartbeats run on request connections
