"""Races at the edges of a transaction: a decision made on a snapshot must hold on the rows it
changes (docs/statuses.md)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from schemas.deployments import DeploymentCreate
from schemas.flow_runs import FlowRunCreate
from schemas.scheduling import ClaimOptions, ReadyMark
from schemas.work_pools import WorkPoolCreate
from services import deployments, flow_runs, foreman, readiness, scheduling, work_pools, workers
from services.heartbeats import Beat, record_heartbeats
from tests.factories import wait_until
from tests.integration.test_foreman import outbox_events


async def _waiting_on_a_lock(db) -> bool:
    async with db.engine.connect() as conn:
        waits = await conn.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
    return waits >= 1


async def test_a_heartbeat_committed_while_the_foreman_waits_keeps_its_worker_online(db, clock):
    """The foreman decides a worker is silent, waits on the row a heartbeat holds, and must
    decide again on the committed heartbeat: the worker stays ONLINE, its leases live."""
    await work_pools.create_work_pool(db, WorkPoolCreate(name="race", type="process"))
    await workers.record_heartbeat(db, "race", "w", heartbeat_interval_seconds=10)
    later = clock() + timedelta(seconds=31)  # silent for longer than 3 x 10 s, by the old beat
    async with db.engine.connect() as beat:
        transaction = await beat.begin()
        await beat.execute(
            text("UPDATE worker SET last_heartbeat_time = :t WHERE name = 'w'"), {"t": later}
        )  # a heartbeat in progress: row locked, not committed
        offline = asyncio.create_task(foreman.mark_workers_offline(db, foreman.ForemanRules(), later))
        await wait_until(lambda: _waiting_on_a_lock(db), timeout=5)
        await transaction.commit()
    assert await offline == 0
    assert [w.status for w in await workers.read_workers(db, "race")] == ["ONLINE"]


async def test_a_deployment_created_during_a_ready_mark_never_turns_ready_without_its_event(db, monkeypatch):
    await work_pools.create_work_pool(db, WorkPoolCreate(name="marks", type="process"))
    first = await deployments.create_deployment(db, DeploymentCreate(name="first", work_pool_name="marks"))
    original = readiness._mark_deployments

    class CreateBeforeTheUpdate:
        """The transaction of a mark; a deployment is created (and committed) just before the
        mark's UPDATE of deployments runs."""

        def __init__(self, tx) -> None:
            self.tx, self.created = tx, None

        async def _before(self, sql: str) -> None:
            if self.created is None and sql.lstrip().startswith("UPDATE deployment"):
                self.created = await deployments.create_deployment(
                    db, DeploymentCreate(name="meanwhile", work_pool_name="marks")
                )

        async def execute(self, statement, params=None):
            await self._before(str(statement))
            return await self.tx.execute(statement, params)

        async def fetch(self, statement, params):  # a prepared statement (services.db.Statement)
            await self._before(statement.sql)
            return await self.tx.fetch(statement, params)

        def __getattr__(self, name):
            return getattr(self.tx, name)

    async def interleaved(tx, queues, polled):
        await original(CreateBeforeTheUpdate(tx), queues, polled)

    monkeypatch.setattr(readiness, "_mark_deployments", interleaved)
    pool = await work_pools.read_work_pool(db, "marks")
    mark = ReadyMark(work_pool_id=pool.id, work_queue_ids=[first.work_queue_id], polled_at=datetime.now(UTC))
    await readiness.apply_ready_marks(db, [mark])
    assert await _statuses(db) == {"first": "READY", "meanwhile": "NOT_READY"}  # left for the next mark
    assert await _ready_events(db) == ["first"]

    monkeypatch.setattr(readiness, "_mark_deployments", original)
    await readiness.apply_ready_marks(db, [mark])
    assert await _statuses(db) == {"first": "READY", "meanwhile": "READY"}
    assert sorted(await _ready_events(db)) == ["first", "meanwhile"]  # each READY with its event


async def _statuses(db) -> dict[str, str]:
    async with db.engine.connect() as conn:
        return dict((await conn.execute(text("SELECT name, status FROM deployment"))).all())


async def _ready_events(db) -> list[str]:
    return [e["resource"]["prefect.resource.name"] for e in await outbox_events(db, "prefect.deployment.ready")]


async def test_a_heartbeat_written_late_renews_from_when_it_was_received(db):
    """A batch of heartbeats held up (a slow write, a starved loop) renews its workers' leases
    from when each heartbeat came in: a worker that died meanwhile does not get a lease running
    from the late write, and a lease a later heartbeat renewed further is not shortened."""
    await work_pools.create_work_pool(db, WorkPoolCreate(name="late", type="process"))
    runs = [await flow_runs.create_flow_run(db, FlowRunCreate(work_pool_name="late")) for _ in range(2)]
    claim = ClaimOptions(claim=True, worker_name="w", lease_seconds=4)
    held, _ = await scheduling.get_scheduled_flow_runs(db, "late", limit=2, claim=claim)
    assert {item.flow_run.id for item in held} == {run.id for run in runs}
    [first, _] = held
    async with db.engine.begin() as conn:  # as if claimed 3 s ago: 1 s of the lease left
        await conn.execute(text("UPDATE flow_run SET lease_expires = lease_expires - interval '3 seconds'"))

    # a plain heartbeat received 0.5 s after the claim, written only now: its leases run from
    # then (to 1.5 s from now), not from the write (4 s from now)
    seen = datetime.now(UTC) - timedelta(seconds=2.5)
    await record_heartbeats(db, [Beat("late", "w", 1, seen_at=seen, tolerance_seconds=3.0)])
    renewed = await _lease_ends(db)
    assert len(renewed) == 2
    for ends in renewed.values():
        assert abs((ends - (seen + timedelta(seconds=4))).total_seconds()) < 0.001, (ends, seen)

    # a fresh heartbeat naming one lease, then an older one written after it: the older one does
    # not shorten what the fresh one renewed
    fresh = datetime.now(UTC)
    await record_heartbeats(
        db, [Beat("late", "w", 1, seen_at=fresh, lease_tokens=(first.lease.token,), tolerance_seconds=3.0)]
    )
    await record_heartbeats(
        db,
        [
            Beat(
                "late",
                "w",
                1,
                seen_at=fresh - timedelta(seconds=2),
                lease_tokens=(first.lease.token,),
                tolerance_seconds=3.0,
            )
        ],
    )
    ends = (await _lease_ends(db))[first.lease.token]
    assert abs((ends - (fresh + timedelta(seconds=4))).total_seconds()) < 0.01


async def _lease_ends(db) -> dict[int, datetime]:
    async with db.read() as tx:
        rows = await tx.execute(text("SELECT lease_token, lease_expires FROM flow_run WHERE lease_owner = 'w'"))
        return {row.lease_token: row.lease_expires for row in rows}
