"""Claim mode: claims/s, duplicate hand-offs, limit violations, and due-to-delivered latency.

    .venv/bin/python bench/claims.py [--replicas 1 2] [--seconds 8] [--runs 10000] [--rate 20]

For each replica count: a fresh database (created and migrated by the replicas as they start),
N `workpools serve` subprocesses, and ONE client process (this one) with 32 workers, each a
`WorkerClient` of its own (polls on the worker channel) sharing one `WorkPoolClient` for state
changes (stream RPC). Phases:

  prefect   Prefect-mode poll, the comparison: 10,000 SCHEDULED runs (one SQL insert, over 5
            queues); for `--seconds`, each worker polls limit=10 (read-only) and proposes
            PENDING for every run it got, one after the other. Polls/s, runs started/s, and how
            many proposals were ABORTed (another worker had the run first).
  claim     Claim mode: the same 10,000 runs again; each worker claims limit=10 (leased to it),
            then PENDING with each run's lease token. Claims/s, runs started/s, proposals
            refused (must be 0), and duplicate hand-offs: a run handed out twice while the first
            lease is live (leases are 30 s, the phase is shorter: any run handed out twice; must
            be 0).
  limits    A limited pool (limit 8; queues limited to 3 and 2, one unlimited) with `--limit-runs`
            runs is drained: claim (long poll, 1 s) -> PENDING -> RUNNING -> COMPLETED, each with
            the token. Meanwhile a sampler reads PostgreSQL continuously: PENDING + RUNNING +
            SCHEDULED under a live lease, per queue and per pool, must never exceed the limit
            (violations must be 0; samples and the highest pool count are shown).
  lossy     The limits phase again with `--drop` (10 %) of the claim answers lost: a worker whose
            answer was lost sends the claim again with the same request id and must get the same
            batch (a different one counts as a duplicate hand-off). Duplicates and violations: 0.
  latency   32 workers wait in long polls (claim, limit 1, wait 10 s) on an empty pool; runs are
            created due now at `--rate` per second through the service. Latency: from the run's
            `created` (the creating transaction's time, taken before its commit: an upper bound
            of commit -> delivered) to the worker receiving it. Target p99 <= 50 ms.

Before each phase it waits (bounded) for the machine to be quiet; "other" is the CPU the rest of
the machine used during the phase (another benchmark on a shared machine skews the numbers).
Redis keys (`prefix*`) are deleted after each replica count, the database at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from redis.asyncio import Redis

from bench.cpu import CpuMeter, wait_for_quiet
from bench.housekeeping import asyncpg_dsn, delete_prefix_keys, drop_database, new_prefix
from bench.latency import LatencyRecorder, percentile
from bench.options import parse_bench_args
from bench.replicas import ReplicaSet
from bench.seed import create_priority_pool, seed_scheduled_runs
from bench.tables import fmt_float, print_table
from client import WorkerClient, WorkPoolClient

DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/workpools_bench_claims"
POOL = "bench-claims"
LIMITED = "bench-limited"
LIMITED_POOL_LIMIT = 8
LIMITED_QUEUES = {"default": None, "q2": 3, "q3": 2}
PUSH = "bench-push"
LIMIT = 10
TARGET_P99_MS = 50.0

LIVE_SLOTS = """
    SELECT q.name, count(f.id) AS active
      FROM work_queue q JOIN work_pool p ON p.id = q.work_pool_id
      LEFT JOIN flow_run f ON f.work_queue_id = q.id
           AND (f.state_type IN ('PENDING', 'RUNNING') OR (f.state_type = 'SCHEDULED' AND f.lease_expires > now()))
     WHERE p.name = $1
     GROUP BY q.name
"""


@dataclass
class Tally:
    polls: int = 0
    runs: int = 0
    proposals: int = 0
    statuses: Counter = field(default_factory=Counter)
    handed: Counter = field(default_factory=Counter)  # run id -> hand-offs
    accepted: Counter = field(default_factory=Counter)  # run id -> PENDING accepted
    dropped: int = 0  # claim answers lost (lossy phase), each asked again with its request id
    different_batches: int = 0  # ... and answered with another batch than the lost one

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.handed.values() if n > 1) + self.different_batches


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2], help="replica counts (default: 1 2)")
    parser.add_argument("--workers", type=int, default=32, help="concurrent workers (default 32)")
    parser.add_argument("--seconds", type=float, default=6.0, help="length of the prefect and claim phases")
    parser.add_argument("--runs", type=int, default=10_000, help="SCHEDULED runs for the prefect and claim phases")
    parser.add_argument("--limit-runs", type=int, default=400, help="runs drained in the limits phase")
    parser.add_argument("--rate", type=float, default=20.0, help="runs created per second in the latency phase")
    parser.add_argument("--latency-runs", type=int, default=200, help="runs created in the latency phase")
    parser.add_argument(
        "--phases",
        nargs="+",
        choices=["prefect", "claim", "limits", "lossy", "latency"],
        default=["prefect", "claim", "limits", "lossy", "latency"],
    )
    parser.add_argument("--drop", type=float, default=0.1, help="share of claim answers lost in the lossy phase")
    parser.add_argument(
        "--database-url",
        default=DEFAULT_DATABASE_URL,
        help=f"benchmark database, dropped and recreated (default: {DEFAULT_DATABASE_URL})",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=3.0,
        help="before each phase, wait up to this many seconds for the machine to use < 0.3 cores",
    )
    args = parse_bench_args(parser, argv)
    return args


class Workers:
    """`count` WorkerClients (one per concurrent worker) and one shared WorkPoolClient."""

    def __init__(self, args: argparse.Namespace, prefix: str, pool: str, name: str) -> None:
        self.clients = [
            WorkerClient(
                args.redis_url,
                prefix,
                work_pool_name=pool,
                worker_name=f"{name}-{i}",
                heartbeat_interval_seconds=15,
                timeout=30,
            )
            for i in range(args.workers)
        ]

    async def __aenter__(self) -> list[WorkerClient]:
        for client in self.clients:
            await client.__aenter__()
        return self.clients

    async def __aexit__(self, *exc_info: object) -> None:
        for client in self.clients:
            await client.__aexit__(None, None, None)


async def for_seconds(seconds: float, clients: list[WorkerClient], round_: Any, recorder: LatencyRecorder) -> None:
    """Each worker runs `round_(worker)` again and again for `seconds` (closed loop)."""
    deadline = time.perf_counter() + seconds

    async def loop(worker: WorkerClient) -> None:
        while (t0 := time.perf_counter()) < deadline:
            try:
                await round_(worker)
            except Exception as exc:
                recorder.error(exc)
            else:
                recorder.add(time.perf_counter() - t0)

    recorder.start()
    await asyncio.gather(*(loop(worker) for worker in clients))
    recorder.stop()


async def propose(
    client: WorkPoolClient, tally: Tally, item: Any, state_type: str = "PENDING", token: int | None = None
) -> bool:
    result = await client.set_flow_run_state(item.flow_run.id, {"type": state_type}, lease_token=token)
    status = str(result.status)
    tally.proposals += 1
    tally.statuses[status] += 1
    if status == "ACCEPT" and state_type == "PENDING":
        tally.accepted[item.flow_run.id] += 1
    return status == "ACCEPT"


# --------------------------------------------------------------------------------------------
# Phases


async def throughput(
    args: argparse.Namespace, prefix: str, client: WorkPoolClient, pids: list[int], claim: bool
) -> dict[str, Any]:
    await seed_scheduled_runs(args.database_url, POOL, args.runs)
    await quiet(args)
    tally, recorder = Tally(), LatencyRecorder()

    async def round_(worker: WorkerClient) -> None:
        items = await worker.get_scheduled_flow_runs(limit=LIMIT, claim=claim, lease_seconds=30)
        tally.polls += 1
        tally.runs += len(items)
        for item in items:
            tally.handed[item.flow_run.id] += 1
            await propose(client, tally, item, token=item.lease.token if claim else None)

    meter = CpuMeter(pids)
    async with Workers(args, prefix, POOL, "claimer" if claim else "poller") as clients:
        meter.start()
        await for_seconds(args.seconds, clients, round_, recorder)
        meter.stop()
    started = sum(tally.accepted.values())
    return {
        "phase": "claim" if claim else "prefect",
        "polls_per_s": tally.polls / recorder.elapsed,
        "started_per_s": started / recorder.elapsed,
        "p50_ms": recorder.p(50),
        "p99_ms": recorder.p(99),
        "polls": tally.polls,
        "runs_per_poll": tally.runs / tally.polls if tally.polls else math.nan,
        "proposals": tally.proposals,
        "aborted": tally.statuses.get("ABORT", 0),
        # Prefect mode hands a run to every poller until one of them claims it; only a second
        # *accepted* PENDING would be a duplicate start there.
        "duplicates": tally.duplicates if claim else sum(n - 1 for n in tally.accepted.values() if n > 1),
        "errors": recorder.errors,
        "error_kinds": dict(recorder.error_kinds.most_common(3)),
        "other_cores": meter.percent().get("other", math.nan) / 100,
        "cpu_ms_per_run": cpu_ms_per_run(meter, started),
    }


async def limits(
    args: argparse.Namespace, prefix: str, client: WorkPoolClient, pids: list[int], drop: float = 0.0
) -> dict[str, Any]:
    import asyncpg

    await seed_scheduled_runs(args.database_url, LIMITED, args.limit_runs)
    await quiet(args)
    tally = Tally()
    done = asyncio.Event()
    completed: Counter = Counter()
    samples: list[int] = []
    violations: list[Any] = []
    rng = random.Random(7)

    async def sample() -> None:
        conn = await asyncpg.connect(asyncpg_dsn(args.database_url))
        try:
            while not done.is_set():
                active = {row["name"]: row["active"] for row in await conn.fetch(LIVE_SLOTS, LIMITED)}
                samples.append(sum(active.values()))
                violations.extend(
                    ("queue", name, active[name])
                    for name, limit in LIMITED_QUEUES.items()
                    if limit is not None and active.get(name, 0) > limit
                )
                if samples[-1] > LIMITED_POOL_LIMIT:
                    violations.append(("pool", samples[-1]))
                await asyncio.sleep(0.002)
        finally:
            await conn.close()

    async def run(item: Any) -> None:
        token = item.lease.token
        pending = await propose(client, tally, item, "PENDING", token)
        if pending and await propose(client, tally, item, "RUNNING", token):
            await asyncio.sleep(rng.uniform(0, 0.01))  # the run's "work"
            if await propose(client, tally, item, "COMPLETED", token):
                completed[item.flow_run.id] += 1
                if len(completed) == args.limit_runs:
                    done.set()

    async def drain(worker: WorkerClient) -> None:
        while not done.is_set():
            limit, request_id = rng.randint(1, 4), uuid.uuid4().hex
            items = await worker.get_scheduled_flow_runs(limit=limit, claim=True, wait_seconds=1, request_id=request_id)
            tally.polls += 1
            if drop and rng.random() < drop:  # the answer was lost: the claim is sent again with its request id
                tally.dropped += 1
                again = await worker.get_scheduled_flow_runs(
                    limit=limit, claim=True, wait_seconds=1, request_id=request_id
                )
                lost = [(i.flow_run.id, i.lease.token) for i in items]
                if lost and lost != [(i.flow_run.id, i.lease.token) for i in again]:
                    tally.different_batches += 1
                items = again
            for item in items:
                tally.handed[item.flow_run.id] += 1
            await asyncio.gather(*(run(item) for item in items))

    meter = CpuMeter(pids)
    sampler = asyncio.create_task(sample())
    started = time.perf_counter()
    try:
        async with Workers(args, prefix, LIMITED, "drainer") as clients:
            meter.start()
            workers = [asyncio.create_task(drain(worker)) for worker in clients]
            try:
                await asyncio.wait_for(done.wait(), timeout=60)
            except TimeoutError:
                print(f"  limits: {len(completed)} of {args.limit_runs} runs completed in 60 s", flush=True)
            done.set()
            await asyncio.gather(*workers, return_exceptions=True)
            meter.stop()
    finally:
        done.set()
        await sampler
    elapsed = time.perf_counter() - started
    return {
        "phase": "lossy" if drop else "limits",
        "dropped": tally.dropped,
        "completed": len(completed),
        "completed_twice": sum(n > 1 for n in completed.values()),
        "started_per_s": len(completed) / elapsed,
        "polls_per_s": tally.polls / elapsed,
        "duplicates": tally.duplicates,
        "violations": len(violations),
        "violation_examples": violations[:5],
        "samples": len(samples),
        "max_in_pool": max(samples, default=0),
        "refused": sum(n for status, n in tally.statuses.items() if status != "ACCEPT"),
        "other_cores": meter.percent().get("other", math.nan) / 100,
        "cpu_ms_per_run": cpu_ms_per_run(meter, len(completed)),
    }


async def latency(args: argparse.Namespace, prefix: str, client: WorkPoolClient, pids: list[int]) -> dict[str, Any]:
    await quiet(args)
    delays: list[float] = []
    handed: Counter = Counter()
    created_ids: set = set()
    done = asyncio.Event()
    warmup = min(20, args.latency_runs // 5)

    async def wait_for_work(worker: WorkerClient) -> None:
        while not done.is_set():
            items = await worker.get_scheduled_flow_runs(limit=1, claim=True, lease_seconds=600, wait_seconds=10)
            received = datetime.now(UTC)
            for item in items:
                handed[item.flow_run.id] += 1
                if item.flow_run.name.startswith("measured-"):
                    delays.append((received - item.flow_run.created).total_seconds())
            if sum(handed.values()) >= args.latency_runs:
                done.set()

    meter = CpuMeter(pids)
    redis = Redis.from_url(args.redis_url)
    marks = await redis.xlen(f"{prefix}.ready")
    async with Workers(args, prefix, PUSH, "waiter") as clients:
        waiters = [asyncio.create_task(wait_for_work(worker)) for worker in clients]
        # Every worker's poll has looked once (one ready mark each) and now waits; bounded.
        deadline = time.monotonic() + 10
        while await redis.xlen(f"{prefix}.ready") < marks + len(clients) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await redis.aclose()
        meter.start()
        started = time.perf_counter()
        for i in range(args.latency_runs):
            name = f"{'warmup' if i < warmup else 'measured'}-{i}"
            created_ids.add((await client.create_flow_run({"work_pool_name": PUSH, "name": name})).id)
            # Paced arrivals: the next run is due 1/rate after the previous one started.
            await asyncio.sleep(max(0.0, started + (i + 1) / args.rate - time.perf_counter()))
        try:
            await asyncio.wait_for(done.wait(), timeout=15)
        except TimeoutError:
            print(f"  latency: {sum(handed.values())} of {args.latency_runs} runs delivered", flush=True)
        meter.stop()
        done.set()
        await asyncio.gather(*waiters, return_exceptions=True)
    ordered = sorted(delays)
    return {
        "phase": "latency",
        "delivered": len(handed),
        "measured": len(ordered),
        "p50_ms": percentile(ordered, 50) * 1000,
        "p99_ms": percentile(ordered, 99) * 1000,
        "max_ms": ordered[-1] * 1000 if ordered else math.nan,
        "duplicates": sum(n - 1 for n in handed.values() if n > 1),
        "missing": len(created_ids - set(handed)),
        "other_cores": meter.percent().get("other", math.nan) / 100,
        "cpu_ms_per_run": cpu_ms_per_run(meter, len(handed)),
    }


def cpu_ms_per_run(meter: CpuMeter, runs: int) -> float:
    """CPU of replicas + client + Redis + PostgreSQL per run: robust to a noisy neighbour."""
    used = sum(meter.used.get(k, 0.0) for k in ("replicas", "client", "redis", "postgres"))
    return 1000 * used / runs if runs else math.nan


async def quiet(args: argparse.Namespace) -> None:
    if args.quiet_wait > 0:
        busy = await wait_for_quiet(args.quiet_wait)
        if busy >= 0.3:
            print(f"  (machine still busy: {busy:.2f} cores in use by others)", flush=True)


# --------------------------------------------------------------------------------------------
# One replica count, and the table


async def setup(client: WorkPoolClient) -> None:
    await create_priority_pool(client, POOL, 5)
    await client.create_work_pool({"name": LIMITED, "type": "process", "concurrency_limit": LIMITED_POOL_LIMIT})
    for name, limit in LIMITED_QUEUES.items():
        if name == "default":
            continue
        await client.create_work_queue(LIMITED, {"name": name, "concurrency_limit": limit})
    await client.create_work_pool({"name": PUSH, "type": "process"})


async def run_replicas(replicas: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    prefix = new_prefix("wpbclaims")
    await drop_database(args.database_url)  # fresh: the replicas create and migrate it
    results = []
    replica_set = ReplicaSet(replicas, prefix=prefix, database_url=args.database_url, redis_url=args.redis_url)
    try:
        async with replica_set:
            print(
                f"[{replicas} replica(s)] ready in {replica_set.ready_seconds:.1f} s; prefix {prefix}, "
                f"logs {replica_set.log_dir}",
                flush=True,
            )
            async with WorkPoolClient(redis_url=args.redis_url, prefix=prefix, timeout=30) as client:
                await setup(client)
                for phase in args.phases:
                    if phase in ("prefect", "claim"):
                        result = await throughput(args, prefix, client, replica_set.pids, claim=phase == "claim")
                    elif phase == "limits":
                        result = await limits(args, prefix, client, replica_set.pids)
                    elif phase == "lossy":
                        result = await limits(args, prefix, client, replica_set.pids, drop=args.drop)
                    else:
                        result = await latency(args, prefix, client, replica_set.pids)
                    result["replicas"] = replicas
                    results.append(result)
                    print(
                        f"  {json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()})}",
                        flush=True,
                    )
    finally:
        deleted = await delete_prefix_keys(args.redis_url, prefix)
        print(f"  deleted {deleted} Redis keys {prefix}*", flush=True)
    return results


LABELS = {
    "prefect": "Prefect-mode poll + PENDING",
    "claim": "claim (leased) + PENDING with token",
    "limits": "limited pool drained (claim..COMPLETED)",
    "lossy": "limited pool drained, claim answers lost",
    "latency": "due -> delivered, long polls",
}


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    rows = []
    for r in results:
        phase = r["phase"]
        checks = []
        if phase in ("prefect", "claim"):
            share = r["aborted"] / r["proposals"] if r["proposals"] else math.nan
            checks.append(f"{r['aborted']} of {r['proposals']} ABORTed ({100 * share:.0f} %)")
            if r["errors"]:
                checks.append(f"{r['errors']} errors")
        elif phase in ("limits", "lossy"):
            checks.append(
                f"{r['completed']}/{args.limit_runs} completed, {r['samples']} samples, "
                f"max {r['max_in_pool']}/{LIMITED_POOL_LIMIT} in pool, {r['refused']} refused"
            )
            if phase == "lossy":
                checks.append(f"{r['dropped']} answers lost ({100 * args.drop:.0f} %), each claim asked again")
        else:
            met = "✓" if r["p99_ms"] <= TARGET_P99_MS else "✗"
            checks.append(
                f"p99 ≤ {TARGET_P99_MS:.0f} ms {met}; {r['measured']} measured at {args.rate:.0f}/s, "
                f"{r['missing']} missing"
            )
        rows.append(
            [
                LABELS[phase],
                r["replicas"],
                args.workers,
                fmt_float(r.get("polls_per_s", math.nan), 0),
                fmt_float(r.get("started_per_s", math.nan), 0),
                fmt_float(r.get("p50_ms", math.nan), 1),
                fmt_float(r.get("p99_ms", math.nan), 1),
                r.get("duplicates", "-"),
                r.get("violations", "-"),
                fmt_float(r.get("cpu_ms_per_run", math.nan), 1),
                fmt_float(r.get("other_cores", math.nan), 2),
                "; ".join(checks),
            ]
        )
    print_table(
        "workpools claim mode (one client process; 2-core machine)",
        [
            "case",
            "replicas",
            "workers",
            "polls/s",
            "runs/s",
            "p50 ms",
            "p99 ms",
            "duplicate hand-offs",
            "limit violations",
            "CPU ms/run",
            "other cores",
            "notes",
        ],
        rows,
        right_align=[
            "replicas",
            "workers",
            "polls/s",
            "runs/s",
            "p50 ms",
            "p99 ms",
            "duplicate hand-offs",
            "limit violations",
            "CPU ms/run",
            "other cores",
        ],
        caption="polls/s: polls (claims) answered; runs/s: runs moved to PENDING (limits: to COMPLETED). p50/p99: "
        "one poll + its proposals (throughput rows), run created -> received by a waiting worker (latency). "
        "duplicate hand-offs: claim mode, a run handed out under two live leases; Prefect mode, a second "
        "accepted PENDING. CPU ms/run: replicas + client + Redis + PostgreSQL, per run (robust on a shared "
        "machine); "
        "other cores: CPU used by the rest of the machine meanwhile (a noisy neighbour).",
    )


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results: list[dict[str, Any]] = []
    try:
        for replicas in args.replicas:
            results += await run_replicas(replicas, args)
    finally:
        if not args.keep_database:
            await drop_database(args.database_url)
    report(results, args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    bad = [r for r in results if r.get("duplicates") or r.get("violations")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
