"""Foreman transitions with an injected clock: on time, once, with one event each."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from schemas.deployments import DeploymentCreate
from schemas.scheduling import ReadyMark
from schemas.work_pools import WorkPoolCreate
from schemas.work_queues import WorkQueueCreate
from services import deployments, foreman, readiness, work_pools, work_queues, workers
from services.tables import event_outbox


async def outbox_events(db, name: str) -> list[dict]:
    async with db.transaction() as tx:
        rows = await tx.execute(select(event_outbox.c.event).order_by(event_outbox.c.seq))
        return [e for e in rows.scalars() if e["event"] == name]


async def test_worker_goes_offline_strictly_after_three_intervals_and_pool_not_ready_once(db, clock):
    t0 = clock.freeze()
    await work_pools.create_work_pool(db, WorkPoolCreate(name="F", type="process"))
    await workers.record_heartbeat(db, "F", "fast", heartbeat_interval_seconds=10)
    await workers.record_heartbeat(db, "F", "default-interval")
    assert (await work_pools.read_work_pool(db, "F")).status == "READY"

    report = await foreman.run_once(db, now=t0 + timedelta(seconds=30))
    assert report.workers_offline == 0
    report = await foreman.run_once(db, now=t0 + timedelta(seconds=30, milliseconds=1))
    assert (report.workers_offline, report.pools_not_ready) == (1, 0)
    status = {w.name: w.status for w in await workers.read_workers(db, "F")}
    assert status == {"fast": "OFFLINE", "default-interval": "ONLINE"}

    report = await foreman.run_once(db, now=t0 + timedelta(seconds=90, milliseconds=1))
    assert (report.workers_offline, report.pools_not_ready) == (1, 1)
    assert (await work_pools.read_work_pool(db, "F")).status == "NOT_READY"
    again = await foreman.run_once(db, now=t0 + timedelta(seconds=200))
    assert (again.workers_offline, again.pools_not_ready) == (0, 0)
    not_ready = await outbox_events(db, "prefect.work-pool.not-ready")
    # one at creation (with a fresh id), one from the foreman (following the READY event)
    assert len(not_ready) == 2
    ready = await outbox_events(db, "prefect.work-pool.ready")
    assert not_ready[1]["follows"] == ready[0]["id"]


async def test_paused_pool_is_never_touched_by_the_foreman(db, clock):
    t0 = clock.freeze()
    await work_pools.create_work_pool(db, WorkPoolCreate(name="Pz", type="process", is_paused=True))
    await workers.record_heartbeat(db, "Pz", "w", heartbeat_interval_seconds=1)
    report = await foreman.run_once(db, now=t0 + timedelta(seconds=10))
    assert (report.workers_offline, report.pools_not_ready) == (1, 0)
    assert (await work_pools.read_work_pool(db, "Pz")).status == "PAUSED"


async def test_stale_queue_and_deployment_become_not_ready_once(db, clock):
    t0 = clock.freeze()
    pool = await work_pools.create_work_pool(db, WorkPoolCreate(name="S", type="process"))
    queue = await work_queues.create_work_queue(db, "S", WorkQueueCreate(name="q"))
    stale = await deployments.create_deployment(db, DeploymentCreate(name="d", work_pool_name="S", work_queue_name="q"))
    fresh = await deployments.create_deployment(db, DeploymentCreate(name="e", work_pool_name="S"))
    await readiness.apply_ready_marks(
        db, [ReadyMark(work_pool_id=pool.id, work_queue_ids=[queue.id, pool.default_queue_id], polled_at=t0)]
    )
    later = t0 + timedelta(seconds=50)
    await readiness.apply_ready_marks(
        db, [ReadyMark(work_pool_id=pool.id, work_queue_ids=[pool.default_queue_id], polled_at=later)]
    )

    report = await foreman.run_once(db, now=t0 + timedelta(seconds=60))
    assert (report.queues_not_ready, report.deployments_not_ready) == (0, 0)
    report = await foreman.run_once(db, now=t0 + timedelta(seconds=61))
    assert (report.queues_not_ready, report.deployments_not_ready) == (1, 1)
    assert (await work_queues.read_work_queue(db, "S", "q")).status == "NOT_READY"
    assert (await work_queues.read_work_queue(db, "S", "default")).status == "READY"
    assert (await deployments.read_deployment(db, stale.id)).status == "NOT_READY"
    assert (await deployments.read_deployment(db, fresh.id)).status == "READY"
    again = await foreman.run_once(db, now=t0 + timedelta(seconds=62))
    assert (again.queues_not_ready, again.deployments_not_ready) == (0, 0)
    assert [
        e["resource"]["prefect.resource.name"] for e in await outbox_events(db, "prefect.work-queue.not-ready")
    ] == ["q"]
    assert [e["resource"]["prefect.resource.id"] for e in await outbox_events(db, "prefect.deployment.not-ready")] == [
        f"prefect.deployment.{stale.id}"
    ]
