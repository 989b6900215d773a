"""Claim mode end to end: leases, fencing tokens, limits that hold, lease expiry, long polls."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import signal
import statistics
import sys
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import event, text

from client import ServiceUnavailable, WorkerClient, WorkPoolClient
from replica.app import build_app
from schemas.channels import Channels
from services import leases
from services.db import Database
from services.flow_runs import LEASED, STALE_LEASE
from tests.factories import wait_until

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def settings(settings):
    """Leases swept and the foreman run often, so expiry is seen within a test's time."""
    return settings.model_copy(update={"lease_sweep_seconds": 0.1, "foreman_loop_seconds": 0.2})


def worker(settings, pool: str, name: str, **kwargs) -> WorkerClient:
    return WorkerClient(
        redis_url=settings.redis_url, prefix=settings.prefix, work_pool_name=pool, worker_name=name, **kwargs
    )


async def claim(client: WorkPoolClient, pool: str, name: str, **kwargs):
    return await client.get_scheduled_flow_runs_for_work_pool(pool, claim=True, worker_name=name, **kwargs)


async def move(client: WorkPoolClient, item, *types: str) -> None:
    """Propose each state in turn with the run's lease token; each must be accepted."""
    for state_type in types:
        result = await client.set_flow_run_state(item.flow_run.id, {"type": state_type}, lease_token=item.lease.token)
        assert result.status == "ACCEPT", (state_type, result)


async def claimed_by(client: WorkPoolClient, pool: str, name: str, run_id, **kwargs):
    """Claim once; the item for `run_id` if this claim got it (a `wait_until` predicate)."""
    return next((item for item in await claim(client, pool, name, **kwargs) if item.flow_run.id == run_id), None)


# ----------------------------------------------------------------------------------------------
# Basics


async def test_claims_lease_runs_to_one_worker_and_fence_their_state_changes(client):
    await client.create_work_pool({"name": "basic", "type": "process"})
    runs = [await client.create_flow_run({"work_pool_name": "basic"}) for _ in range(3)]
    before = datetime.now(UTC)

    first = await claim(client, "basic", "w1", limit=2, lease_seconds=30)
    assert [item.flow_run.id for item in first] == [run.id for run in runs[:2]]
    for item in first:
        assert item.lease.owner == "w1"
        assert before + timedelta(seconds=29) < item.lease.expires < before + timedelta(seconds=32)
    assert len({item.lease.token for item in first}) == 2

    second = await claim(client, "basic", "w2", limit=5)
    assert [item.flow_run.id for item in second] == [runs[2].id]
    assert second[0].lease.owner == "w2" and second[0].lease.token not in {i.lease.token for i in first}
    assert await claim(client, "basic", "w3", limit=5) == []

    # A Prefect-mode poll sees only runs nobody holds.
    assert await client.get_scheduled_flow_runs_for_work_pool("basic") == []
    free = await client.create_flow_run({"work_pool_name": "basic"})
    assert [item.flow_run.id for item in await client.get_scheduled_flow_runs_for_work_pool("basic")] == [free.id]

    held = first[0]
    refused = await client.set_flow_run_state(held.flow_run.id, {"type": "PENDING"})
    assert (refused.status, refused.details) == ("ABORT", {"reason": LEASED})
    assert (await client.read_flow_run(held.flow_run.id)).state_type == "SCHEDULED"
    accepted = await client.set_flow_run_state(held.flow_run.id, {"type": "PENDING"}, lease_token=held.lease.token)
    assert accepted.status == "ACCEPT" and accepted.state.type == "PENDING"
    # A token that is not this run's is refused too.
    wrong = await client.set_flow_run_state(first[1].flow_run.id, {"type": "PENDING"}, lease_token=held.lease.token)
    assert (wrong.status, wrong.details) == ("ABORT", {"reason": STALE_LEASE})


@pytest.mark.parametrize("limited", ["pool", "queue"])
async def test_leases_count_as_slots_of_the_pool_and_the_queue(client, limited):
    pool_limit = 2 if limited == "pool" else None
    await client.create_work_pool({"name": "lim", "type": "process", "concurrency_limit": pool_limit})
    await client.create_work_queue("lim", {"name": "q", "concurrency_limit": 2 if limited == "queue" else None})
    for _ in range(4):
        await client.create_flow_run({"work_pool_name": "lim", "work_queue_name": "q"})

    held = await claim(client, "lim", "w1", limit=10)
    assert len(held) == 2  # leased, still SCHEDULED: they already take both slots
    assert await claim(client, "lim", "w2", limit=10) == []
    await move(client, held[0], "PENDING", "RUNNING")
    assert await claim(client, "lim", "w2", limit=10) == []
    await move(client, held[0], "COMPLETED")
    [next_one] = await claim(client, "lim", "w2", limit=10)
    assert next_one.lease.owner == "w2"
    assert await claim(client, "lim", "w3", limit=10) == []


# ----------------------------------------------------------------------------------------------
# Lease expiry, stale tokens, renewal


async def test_a_stale_token_is_refused_after_the_lease_ended_and_passed_on(client):
    await client.create_work_pool({"name": "stale", "type": "process"})
    run = await client.create_flow_run({"work_pool_name": "stale"})
    [old] = await claim(client, "stale", "w1", lease_seconds=1)

    new = await wait_until(lambda: claimed_by(client, "stale", "w2", run.id), timeout=5)
    assert new.lease.token != old.lease.token and new.lease.owner == "w2"

    result = await client.set_flow_run_state(run.id, {"type": "PENDING"}, lease_token=old.lease.token)
    assert (result.status, result.details) == ("ABORT", {"reason": STALE_LEASE})
    await move(client, new, "PENDING")  # the new holder's token works

    expired = await wait_until(lambda: _lease_expired_events(client, run.id), timeout=5)
    assert [(e.payload["worker"], e.payload["lease_token"], e.payload["rescheduled"]) for e in expired] == [
        ("w1", old.lease.token, False)
    ]


async def _lease_expired_events(client, run_id):
    return [
        e
        for e in await client.read_events(count=1000)
        if e.event == "workpools.flow-run.lease-expired"
        and e.resource["prefect.resource.id"] == f"prefect.flow-run.{run_id}"
    ]


async def test_heartbeats_renew_the_lease_and_it_ends_when_they_stop(client, settings):
    await client.create_work_pool({"name": "renew", "type": "process"})
    run = await client.create_flow_run({"work_pool_name": "renew"})
    async with worker(settings, "renew", "w1", heartbeat_interval_seconds=1) as w1:
        await w1.heartbeat(ack=True)
        [held] = await w1.get_scheduled_flow_runs(claim=True, lease_seconds=1)
        started = time.monotonic()
        while time.monotonic() - started < 2.5:
            await w1.heartbeat(ack=True)
            assert await claim(client, "renew", "w2") == []
            # Pacing between heartbeats (a worker's heartbeat interval), not a wait for a condition.
            await asyncio.sleep(0.2)
        stopped = time.monotonic()
        renewed = await client.set_flow_run_state(run.id, {"type": "PENDING"}, lease_token=held.lease.token)
        assert renewed.status == "ACCEPT"  # 2.5 s after a 1 s lease: heartbeats kept it live

    # A beat renews for at least the OFFLINE tolerance (3 intervals): the lease ends about 3 s
    # after the last one, as the worker goes OFFLINE.
    taken = await wait_until(lambda: claimed_by(client, "renew", "w2", run.id), timeout=6)
    assert taken.lease.owner == "w2" and 2 < time.monotonic() - stopped < 6
    reason = (await client.set_flow_run_state(run.id, {"type": "RUNNING"}, lease_token=held.lease.token)).details
    assert reason == {"reason": STALE_LEASE}


async def test_a_heartbeat_renews_exactly_the_leases_it_names_and_releases_the_others(client, settings, clock):
    await client.create_work_pool({"name": "named", "type": "process"})
    runs = [await client.create_flow_run({"work_pool_name": "named"}) for _ in range(3)]
    async with worker(settings, "named", "w1", heartbeat_interval_seconds=10) as w1:
        held = await w1.get_scheduled_flow_runs(claim=True, lease_seconds=5)
        tokens = [item.lease.token for item in held]
        assert [item.flow_run.id for item in held] == [run.id for run in runs]
        renewed = await w1.heartbeat(ack=True, lease_tokens=tokens[:1])
        # renewed for the OFFLINE tolerance (3 x 10 s), longer than the 5 s asked for
        assert list(renewed) == tokens[:1] and 29 < renewed[tokens[0]] <= 30
        # The others are younger than the grace (a claim may still be on its way): kept.
        assert await claim(client, "named", "w2") == []
        clock.advance(seconds=6)
        renewed = await w1.heartbeat(ack=True, lease_tokens=tokens[:1])
        assert list(renewed) == tokens[:1]
        taken = await wait_until(lambda: _claim_all(client, "named", "w2", 2), timeout=5)
    assert sorted(item.flow_run.id for item in taken) == sorted(run.id for run in runs[1:])
    kept = await client.set_flow_run_state(runs[0].id, {"type": "PENDING"}, lease_token=tokens[0])
    assert kept.status == "ACCEPT"
    gone = await client.set_flow_run_state(runs[1].id, {"type": "PENDING"}, lease_token=tokens[1])
    assert (gone.status, gone.details) == ("ABORT", {"reason": STALE_LEASE})


async def _claim_all(client, pool, name, count):
    items = await claim(client, pool, name, limit=10)
    return items if len(items) == count else None


async def test_a_restarted_worker_with_the_same_name_lets_the_old_leases_go(client, settings, clock):
    await client.create_work_pool({"name": "restart", "type": "process"})
    run = await client.create_flow_run({"work_pool_name": "restart"})
    async with worker(settings, "restart", "w1", heartbeat_interval_seconds=10) as old:
        [held] = await old.get_scheduled_flow_runs(claim=True)
    await client.set_flow_run_state(run.id, {"type": "PENDING"}, lease_token=held.lease.token)
    clock.advance(seconds=6)
    async with worker(settings, "restart", "w1", heartbeat_interval_seconds=10) as new:
        assert await new.heartbeat(ack=True, lease_tokens=[]) == {}
        [again] = await wait_until(lambda: new.get_scheduled_flow_runs(claim=True), timeout=5)
    assert again.flow_run.id == run.id and again.lease.token != held.lease.token
    assert (await client.read_flow_run(run.id)).state_name == "Rescheduled"


async def test_a_plain_heartbeat_renews_every_lease_for_at_least_the_offline_tolerance(client, settings, db):
    await client.create_work_pool({"name": "plain", "type": "process"})
    await client.create_flow_run({"work_pool_name": "plain"})
    async with worker(settings, "plain", "w1", heartbeat_interval_seconds=20) as w1:
        [held] = await w1.get_scheduled_flow_runs(claim=True, lease_seconds=2)
        await w1.heartbeat(ack=True)  # no tokens: the Prefect-compatible heartbeat
    async with db.engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT lease_seconds, extract(epoch FROM lease_expires - now()) AS left FROM flow_run WHERE id = :id"
                ),
                {"id": held.flow_run.id},
            )
        ).one()
    assert row.lease_seconds == 60 and 55 < row.left <= 60


async def test_a_lease_that_runs_out_while_its_holder_proposes_keeps_its_slot(client, db):
    """The holder's PENDING and the lease's end race: its slot is not handed out meanwhile.

    The holder's proposal is held up (a row lock) until its lease has run out; a claim in that
    window must not count the run's slot as free. The proposal is judged when it has the row, so
    it is refused as stale (a renewal dated from when it arrived would already have run out), and
    the run goes to the next claim."""
    await client.create_work_pool({"name": "edge", "type": "process", "concurrency_limit": 1})
    run = await client.create_flow_run({"work_pool_name": "edge"})
    await client.create_flow_run({"work_pool_name": "edge"})  # wanted by the next claim
    [held] = await claim(client, "edge", "w1", lease_seconds=1)
    assert held.flow_run.id == run.id
    async with db.engine.connect() as blocker:
        await blocker.execute(text("SELECT 1 FROM flow_run WHERE id = :id FOR NO KEY UPDATE"), {"id": run.id})
        proposal = asyncio.create_task(
            client.set_flow_run_state(run.id, {"type": "PENDING"}, lease_token=held.lease.token)
        )
        await wait_until(lambda: _lease_ended(held), timeout=3)
        # Past the lease's end, with the holder's proposal in flight: the one slot is taken.
        assert await claim(client, "edge", "w2") == []
        await blocker.rollback()
    result = await proposal
    assert (result.status, result.details) == ("ABORT", {"reason": STALE_LEASE})
    assert await _live_slots(db, "edge") <= 1

    async def released() -> bool:
        async with db.read() as tx:
            owner = (await tx.execute(text("SELECT lease_owner FROM flow_run WHERE id = :id"), {"id": run.id})).scalar()
        return owner is None

    await wait_until(released, timeout=5)  # by the expiry sweep
    [taken] = await claim(client, "edge", "w2", limit=2)  # the freed slot, and only it
    assert taken.lease.owner == "w2" and taken.lease.token != held.lease.token
    assert await _live_slots(db, "edge") == 1


async def test_a_lease_past_its_end_holds_its_run_until_the_sweep_releases_it(settings, db, redis):
    """On a replica without the sweep: the run of a lease that has run out is not handed out in
    either mode, nobody may start it (its old holder's token is stale, no token is refused),
    until the sweep releases it, with its event."""
    app = build_app(settings.model_copy(update={"foreman_enabled": False}), db=db)
    async with app, WorkPoolClient(redis_url=settings.redis_url, prefix=settings.prefix, timeout=10) as client:
        await client.create_work_pool({"name": "held", "type": "process"})
        run = await client.create_flow_run({"work_pool_name": "held"})
        [old] = await claim(client, "held", "w1", lease_seconds=1)
        await wait_until(lambda: _lease_ended(old), timeout=3)

        assert await claim(client, "held", "w2") == []
        assert await client.get_scheduled_flow_runs_for_work_pool("held") == []
        refused = await client.set_flow_run_state(run.id, {"type": "PENDING"})
        assert (refused.status, refused.details) == ("ABORT", {"reason": LEASED})
        stale = await client.set_flow_run_state(run.id, {"type": "PENDING"}, lease_token=old.lease.token)
        assert (stale.status, stale.details) == ("ABORT", {"reason": STALE_LEASE})

        assert await leases.expire_leases(db) == 1
        [new] = await claim(client, "held", "w2")
        assert new.flow_run.id == run.id and new.lease.token != old.lease.token
        assert await wait_until(lambda: _lease_expired_events(client, run.id), timeout=5)


def _lease_ended(item) -> bool:
    return datetime.now(UTC) > item.lease.expires + timedelta(milliseconds=50)


LIVE_SLOTS = text(
    """
    SELECT f.work_queue_id, count(*) AS active
      FROM flow_run f
     WHERE f.state_type IN ('PENDING', 'RUNNING') OR (f.state_type = 'SCHEDULED' AND f.lease_expires > now())
     GROUP BY f.work_queue_id
    """
)


async def _live_slots(db: Database, pool: str) -> int:
    async with db.read() as tx:
        queue_ids = set(
            (
                await tx.execute(
                    text("SELECT q.id FROM work_queue q JOIN work_pool p ON p.id = q.work_pool_id WHERE p.name = :p"),
                    {"p": pool},
                )
            ).scalars()
        )
        return sum(row.active for row in await tx.execute(LIVE_SLOTS) if row.work_queue_id in queue_ids)


# ----------------------------------------------------------------------------------------------
# The randomized race: 32 workers, 3 replicas, limits that must hold at every moment


@dataclass
class Hold:
    run_id: uuid.UUID
    worker: str
    token: int
    claimed_at: datetime
    accepted: list[tuple[str, datetime]] = field(default_factory=list)


STUCK = text(
    "SELECT id, state_type, state_name, lease_owner, lease_token, lease_expires, now() FROM flow_run WHERE id = ANY(:ids)"
)

RACE_QUEUES = {"a": 3, "b": 2, "c": None}
RACE_POOL_LIMIT = 5


async def test_randomized_race_of_32_workers_over_3_replicas(client, settings, db):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    await client.create_work_pool({"name": "race", "type": "process", "concurrency_limit": RACE_POOL_LIMIT})
    queue_ids = {}
    for name, limit in RACE_QUEUES.items():
        queue_ids[(await client.create_work_queue("race", {"name": name, "concurrency_limit": limit})).id] = limit
    runs = [
        await client.create_flow_run({"work_pool_name": "race", "work_queue_name": name})
        for name in list(RACE_QUEUES) * 20
    ]
    extras = [
        build_app(settings.model_copy(update={"consumer_name": f"{settings.consumer_name}-x{i}", "db_pool_size": 5}))
        for i in range(2)
    ]
    for app in extras:
        await app.start()

    holds: dict[int, Hold] = {}
    duplicate_tokens: list[int] = []
    completed: Counter = Counter()
    refused: list[str] = []
    abandoned: list[str] = []
    done = asyncio.Event()
    samples, violations = [], []

    async def check_limits() -> None:
        async with db.reader.connect() as conn:
            while not done.is_set():
                active = {row.work_queue_id: row.active for row in await conn.execute(LIVE_SLOTS)}
                in_pool = sum(n for queue_id, n in active.items() if queue_id in queue_ids)
                samples.append(in_pool)
                for queue_id, limit in queue_ids.items():
                    if limit is not None and active.get(queue_id, 0) > limit:
                        violations.append(("queue", queue_id, active[queue_id]))
                if in_pool > RACE_POOL_LIMIT:
                    violations.append(("pool", in_pool))
                await asyncio.sleep(0.003)  # sampling pace

    async def propose(item, state_type: str) -> bool:
        result = await client.set_flow_run_state(item.flow_run.id, {"type": state_type}, lease_token=item.lease.token)
        if result.status != "ACCEPT":
            refused.append(result.details.get("reason"))
            return False
        holds[item.lease.token].accepted.append((state_type, result.state.timestamp))
        if state_type == "COMPLETED":
            completed[item.flow_run.id] += 1
            if len(completed) == len(runs):
                done.set()
        return True

    async def heartbeats(w: WorkerClient, stopped: asyncio.Event) -> None:
        # stopped by the flag as well as by cancel: on Python 3.11 a cancel that lands as a
        # publish completes is lost inside redis-py (asyncio.wait_for), and the beats go on
        while not stopped.is_set():
            await w.heartbeat()
            await asyncio.sleep(0.5)  # the worker's heartbeat pace

    async def claim_as_a_worker_does(w: WorkerClient, limit: int):
        """A claim that gets no answer (pub/sub delivers at most once; a starved loop answers
        late) is published again with its request id: the same batch, never a second one
        (docs/worker-channel.md)."""
        request_id = uuid.uuid4().hex
        for attempt in itertools.count(1):
            try:
                return await w.get_scheduled_flow_runs(limit=limit, claim=True, wait_seconds=1, request_id=request_id)
            except ServiceUnavailable:
                if attempt == 3:
                    raise

    async def finished(stalled_after: float) -> None:
        """Until every run completed; fails when none completes for `stalled_after` seconds (a
        crashed worker's runs wait out a lease, 4 s), however slow the machine is overall."""
        progress, last_change = -1, time.monotonic()
        while not done.is_set():
            if len(completed) != progress:
                progress, last_change = len(completed), time.monotonic()
            if time.monotonic() - last_change >= stalled_after:
                waiting = [run.id for run in runs if run.id not in completed]
                async with db.reader.connect() as conn:
                    rows = (await conn.execute(STUCK, {"ids": waiting})).all()
                stuck = [tuple(row) for row in rows]
                raise AssertionError(
                    f"no run completed for {stalled_after} s ({progress} of {len(runs)}); seed {seed}; "
                    f"waiting: {stuck}; holds: {[h for h in holds.values() if h.run_id in waiting]}; "
                    f"refused {len(refused)}, abandoned {abandoned}"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.5)

    async def work(index: int) -> None:
        name = f"racer-{index}"
        # The first three crash on their first claim; the others with 10 % chance per run, up
        # to six crashes in all (each costs a lease period before its runs move on).
        async with worker(settings, "race", name, heartbeat_interval_seconds=1) as w:
            stopped = asyncio.Event()
            beating = asyncio.create_task(heartbeats(w, stopped))
            try:
                while not done.is_set():
                    items = await claim_as_a_worker_does(w, limit=rng.randint(1, 3))
                    for item in items:
                        if item.lease.token in holds:
                            duplicate_tokens.append(item.lease.token)
                        claimed_at = item.lease.expires - timedelta(seconds=4)  # 4 heartbeat intervals
                        holds[item.lease.token] = Hold(item.flow_run.id, name, item.lease.token, claimed_at)
                    for item in items:
                        crash_at = rng.choice(["claimed", "PENDING", "RUNNING"])
                        if index < 3 or (len(abandoned) < 6 and rng.random() < 0.1):
                            abandoned.append(f"{name} at {crash_at}")
                            if crash_at != "claimed":
                                for state_type in ("PENDING", "RUNNING")[: 1 if crash_at == "PENDING" else 2]:
                                    await propose(item, state_type)
                            return  # a crash: this worker touches nothing and heartbeats no more
                        if not (await propose(item, "PENDING") and await propose(item, "RUNNING")):
                            continue
                        await asyncio.sleep(rng.uniform(0, 0.03))  # the run's "work"
                        await propose(item, "COMPLETED")
            finally:
                stopped.set()
                beating.cancel()

    checker = asyncio.create_task(check_limits())
    try:
        workers = [asyncio.create_task(work(i)) for i in range(32)]
        await finished(stalled_after=20)
        await asyncio.gather(*workers)
    finally:
        done.set()
        await checker
        for app in extras:
            await app.stop()

    context = f"seed {seed}"
    assert violations == [], context
    assert len(samples) >= 100 and max(samples) == RACE_POOL_LIMIT, (len(samples), context)
    assert len(abandoned) >= 3, context
    assert duplicate_tokens == [], context
    assert set(refused) <= {STALE_LEASE}, context
    # Every run completed, reported by exactly one worker.
    assert completed == Counter({run.id: 1 for run in runs}), context
    for run in runs:
        assert (await client.read_flow_run(run.id)).state_type == "COMPLETED"
    # No run held by two workers at once: each hold's accepted changes all came before the
    # next hold of that run began (tokens are issued in claim order).
    by_run = defaultdict(list)
    for hold in holds.values():
        by_run[hold.run_id].append(hold)
    rehanded = 0
    for run_holds in by_run.values():
        run_holds.sort(key=lambda h: h.token)
        for earlier, later in itertools.pairwise(run_holds):
            rehanded += 1
            assert earlier.worker != later.worker, context
            assert all(at < later.claimed_at for _, at in earlier.accepted), (earlier, later, context)
    assert rehanded >= len(abandoned), context


# ----------------------------------------------------------------------------------------------
# A worker process killed mid-lease

DOOMED_WORKER = """
import asyncio, sys
from client import WorkerClient, WorkPoolClient

async def main():
    redis_url, prefix, pool = sys.argv[1:4]
    async with WorkPoolClient(redis_url=redis_url, prefix=prefix) as client, \\
            WorkerClient(redis_url, prefix, work_pool_name=pool, worker_name="doomed",
                         heartbeat_interval_seconds=1) as worker:
        await worker.heartbeat(ack=True)
        items = await worker.get_scheduled_flow_runs(limit=3, claim=True)
        # one stays leased, one goes PENDING, one RUNNING
        for item, states in zip(items, ([], ["PENDING"], ["PENDING", "RUNNING"])):
            for state in states:
                result = await client.set_flow_run_state(item.flow_run.id, {"type": state},
                                                         lease_token=item.lease.token)
                assert result.status == "ACCEPT", result
        print(" ".join(f"{item.flow_run.id}:{item.lease.token}" for item in items), flush=True)
        while True:
            await worker.heartbeat()
            await asyncio.sleep(1)

asyncio.run(main())
"""


async def test_runs_of_a_killed_worker_run_elsewhere_once_its_leases_have_run_out(client, settings):
    """Leases last 4 heartbeat intervals (the length the WorkerClient asks) after the last beat,
    so a lost beat or two never ends them, nor does the worker going OFFLINE 3 intervals after
    it; a dead worker's runs are elsewhere 3 to 4 intervals after the kill (plus a sweep)."""
    await client.create_work_pool({"name": "crash", "type": "process"})
    runs = {(await client.create_flow_run({"work_pool_name": "crash"})).id for _ in range(3)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        DOOMED_WORKER,
        settings.redis_url,
        settings.prefix,
        "crash",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        line = await asyncio.wait_for(process.stdout.readline(), timeout=20)
        old_tokens = dict(part.split(":") for part in line.decode().split())
        assert {uuid.UUID(run_id) for run_id in old_tokens} == runs
        claimed = datetime.now(UTC)
        # Its heartbeats renew the leases: kill it once one has been recorded after the claim.
        await wait_until(lambda: _beat_after(client, "crash", "doomed", claimed), timeout=5)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGKILL)
        await process.wait()
    killed = time.monotonic()

    running = {}
    async with worker(settings, "crash", "rescuer", heartbeat_interval_seconds=1) as rescuer:
        while set(running) != runs and time.monotonic() - killed < 10:
            for item in await rescuer.get_scheduled_flow_runs(claim=True, wait_seconds=1):
                await move(client, item, "PENDING", "RUNNING")
                running[item.flow_run.id] = time.monotonic() - killed
    assert set(running) == runs
    assert 2.5 < min(running.values()) and max(running.values()) < 6.5, running
    for run_id, token in old_tokens.items():
        result = await client.set_flow_run_state(run_id, {"type": "COMPLETED"}, lease_token=int(token))
        assert (result.status, result.details) == ("ABORT", {"reason": STALE_LEASE})
        assert (await client.read_flow_run(run_id)).state_type == "RUNNING"


async def _beat_after(client, pool, name, when):
    workers = {w.name: w for w in await client.read_workers_for_work_pool(pool)}
    return name in workers and workers[name].last_heartbeat_time > when


# ----------------------------------------------------------------------------------------------
# Long polls

WAIT = 5
"""Seconds a long poll in these tests may wait for work."""


async def test_a_waiting_claim_gets_a_new_run_at_once(client, settings, redis):
    """Five times: a claim waits, a run is created, the claim answers with it; and, as the
    machine's own yardstick measured at the same moments, a run created and then claimed by a
    claim that does not wait. A pushed delivery costs about what that pair of round trips
    costs (the median bounds it: a shared machine stalls now and then), and every delivery
    comes well before the wait's end, so it was pushed, not found by a look when the wait ended."""
    await client.create_work_pool({"name": "push", "type": "process"})
    latencies, yardstick = [], []
    async with worker(settings, "push", "w1") as w:
        for _ in range(5):
            marks = await redis.xlen(Channels(settings.prefix).ready)
            poll = asyncio.create_task(w.get_scheduled_flow_runs(claim=True, wait_seconds=WAIT))
            await wait_until(lambda marks=marks: _ready_marks(redis, settings.prefix, marks + 1), timeout=5)  # waiting
            created = time.monotonic()
            run = await client.create_flow_run({"work_pool_name": "push"})
            [item] = await poll
            latencies.append(time.monotonic() - created)
            assert item.flow_run.id == run.id and item.lease.owner == "w1"
            await move(client, item, "PENDING")

            created = time.monotonic()
            run = await client.create_flow_run({"work_pool_name": "push"})
            [item] = await w.get_scheduled_flow_runs(claim=True)
            yardstick.append(time.monotonic() - created)
            assert item.flow_run.id == run.id
            await move(client, item, "PENDING")
    assert statistics.median(latencies) < 1.5 * statistics.median(yardstick), (latencies, yardstick)
    assert max(latencies) < WAIT / 2, latencies


async def test_a_waiting_claim_gets_a_future_run_when_it_becomes_due(client, settings):
    """Five runs due 0.3, 0.6, … 1.5 s from now; five claims in turn, each with
    scheduled_before = now, wait until theirs is due: never before, and soon after: the
    median lateness within four times what a claim of a run already due takes on this
    machine, measured first (a late answer is the poll's transit, which delays the slid
    `scheduled_before`, the timer's wake-up, then one such look and its reply: 1.4 to 2.4
    times it at load 8-10), every one well before the wait's end (so it was woken at the due
    time, not found when the wait ended)."""
    await client.create_work_pool({"name": "due", "type": "process"})
    late, yardstick = [], []
    async with worker(settings, "due", "w1") as w:
        for _ in range(5):
            run = await client.create_flow_run({"work_pool_name": "due"})
            started = time.monotonic()
            [item] = await w.get_scheduled_flow_runs(scheduled_before=datetime.now(UTC), limit=1, claim=True)
            yardstick.append(time.monotonic() - started)
            assert item.flow_run.id == run.id

        now = datetime.now(UTC)
        due = [now + timedelta(seconds=0.3 * (i + 1)) for i in range(5)]
        runs = [
            await client.create_flow_run({"work_pool_name": "due", "next_scheduled_start_time": at.isoformat()})
            for at in due
        ]
        for run, at in zip(runs, due, strict=True):
            [item] = await w.get_scheduled_flow_runs(
                scheduled_before=datetime.now(UTC), limit=1, claim=True, wait_seconds=WAIT
            )
            late.append((datetime.now(UTC) - at).total_seconds())
            assert item.flow_run.id == run.id
    assert min(late) >= 0, late
    assert statistics.median(late) < 4 * statistics.median(yardstick), (late, yardstick)
    assert max(late) < WAIT / 2, late


async def test_a_poll_with_nothing_to_do_answers_empty_after_its_wait(client, settings):
    await client.create_work_pool({"name": "idle", "type": "process"})
    async with worker(settings, "idle", "w1") as w:
        started = time.monotonic()
        assert await w.get_scheduled_flow_runs(claim=True, wait_seconds=1) == []
        waited = time.monotonic() - started
    assert 1.0 <= waited < 1.3, waited


async def test_waiting_workers_cost_the_database_nothing(settings, db, redis):
    """10 long polls wait on a replica whose periodic loops are off: no statement reaches
    PostgreSQL until there is work, then the run goes to exactly one of them."""
    quiet = settings.model_copy(update={"foreman_enabled": False, "outbox_sweep_seconds": 3600})
    database = Database(settings.database_url, pool_size=4)
    statements = []
    event.listen(
        database.engine.sync_engine,
        "before_cursor_execute",
        lambda conn, cursor, statement, *args: statements.append(statement),
    )
    app = build_app(quiet, db=database)
    await app.start()
    try:
        async with WorkPoolClient(redis_url=settings.redis_url, prefix=settings.prefix, timeout=10) as client:
            await client.create_work_pool({"name": "calm", "type": "process"})
            workers = [worker(settings, "calm", f"w{i}") for i in range(10)]
            for w in workers:
                await w.__aenter__()
            try:
                polls = [asyncio.create_task(w.get_scheduled_flow_runs(claim=True, wait_seconds=3)) for w in workers]
                await wait_until(lambda: _ready_marks(redis, settings.prefix, 10), timeout=5)
                await wait_until(_quiet(statements, 0.3), timeout=5)  # first polls and ready marks done
                before = len(statements)
                assert before > 0  # the counter sees the replica's statements
                await asyncio.sleep(1)  # the idle window measured
                idle = statements[before:]
                run = await client.create_flow_run({"work_pool_name": "calm"})
                results = await asyncio.gather(*polls)
            finally:
                for w in workers:
                    await w.__aexit__(None, None, None)
    finally:
        await app.stop()
    assert idle == []
    assert sorted(len(r) for r in results) == [0] * 9 + [1]
    assert [item.flow_run.id for r in results for item in r] == [run.id]


def _quiet(statements: list, seconds: float):
    seen = {"count": -1, "since": 0.0}

    def check() -> bool:
        if len(statements) != seen["count"]:
            seen.update(count=len(statements), since=time.monotonic())
        return time.monotonic() - seen["since"] >= seconds

    return check


async def _ready_marks(redis, prefix, count):
    return await redis.xlen(Channels(prefix).ready) >= count
