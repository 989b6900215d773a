"""The worker poll: one pool, 5 queues of different priorities, 10,000 scheduled runs.

    .venv/bin/python bench/poll.py [--replicas 1 2] [--runs 10000] [--scale 1.0] [--claim sequential|concurrent]
                                   [--cases ...] [--profile py-spy|cpu] [--code worktree|HEAD|<rev>]

For each replica count: a fresh database (created and migrated by the replicas as they start),
N `workpools serve` subprocesses, a pool with queues of priorities 1..5 (its default queue and
q2..q5, one deployment each) and ONE client process (this one). Before every phase the pool's
runs are replaced by 10,000 SCHEDULED runs inserted with one SQL statement (round-robin over the
queues, due over the past hour), then VACUUM ANALYZE. Phases:

  (a) poll (stream RPC)   `get_scheduled_flow_runs_for_work_pool(pool, limit=10)`, read-only,
                          at concurrency 1 and 32 (one shared WorkPoolClient);
  (b) poll + claim        32 concurrent pollers; each polls limit=10, then proposes PENDING
                          (`set_flow_run_state`) for every run it got, one after the other as
                          `workpools worker` does (--claim concurrent: all 10 at once, as
                          Prefect's worker does). Counts proposals, ACCEPT, ABORT, and checks
                          that no run was accepted twice (and PENDING runs in the DB = accepts).
                          This is Prefect's duplicate hand-off: a read-only poll hands the same
                          runs to every poller until one of them claims them.
  (b') claim-mode poll    only if the client has it (`claim=True`): the poll leases the runs it
                          returns, then PENDING with the lease token; same counts.
  (c) poll (pub/sub)      the same read-only poll over the worker channel
                          (`WorkerClient.get_scheduled_flow_runs`), 32 WorkerClients at
                          concurrency 32.

Before each measured phase it waits (bounded) for the machine to be quiet; CPU ms per poll of
each process is the robust number on a shared machine. --profile profiles every replica and this
client during each measured case and prints the replica's CPU by entry point (the poll handler,
the ready-mark consumer, the request pipeline...), by owner and by part. Redis keys (`prefix*`) are deleted after
each replica count, the database at the end (unless --keep-database).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import math
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cpu import CpuMeter, wait_for_quiet
from bench.housekeeping import asyncpg_dsn, check_bench_database, delete_prefix_keys, drop_database, new_prefix
from bench.latency import LatencyRecorder, run_load
from bench.options import parse_bench_args
from bench.profilers import Profiler
from bench.profiling import entry_points
from bench.replicas import ReplicaSet
from bench.revision import code_version, remove_exported_code, run_on_code
from bench.seed import create_priority_pool, seed_scheduled_runs
from bench.tables import fmt_float, print_cpu_table, print_table
from bench.worker_polls import WorkerPollers

if __name__ == "__main__":
    run_on_code("poll.py")  # --code REV: re-executes on that revision (before the project is imported)

from client import WorkPoolClient

DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/workpools_bench_poll"
POOL = "bench-poll"
LIMIT = 10
CLAIM_MODE_SUPPORTED = "claim" in inspect.signature(WorkPoolClient.get_scheduled_flow_runs_for_work_pool).parameters


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    concurrency: int
    requests: int
    warmup: int


CASES = (
    Case("rpc_c1", "poll (stream RPC)", 1, 500, 50),
    Case("rpc_c32", "poll (stream RPC)", 32, 3000, 300),
    Case("claim_c32", "poll + claim PENDING (RPC)", 32, 200, 32),
    Case("lease_c32", "claim-mode poll + PENDING (RPC)", 32, 200, 32),
    Case("pubsub_c32", "poll (worker pub/sub)", 32, 3000, 300),
)

# Targets on this 2-core machine, and Prefect's HTTP server measured here.
TARGETS: dict[str, tuple[str, Any]] = {
    "rpc_c1": ("p50 ≤ 5 ms", lambda r: r["p50_ms"] <= 5.0),
    "rpc_c32": ("≥ 400 polls/s", lambda r: r["ops_per_s"] >= 400),
}
PREFECT: dict[str, str] = {
    "rpc_c1": "p50 37.5 ms",
    "rpc_c32": "40 polls/s",
    "claim_c32": "67 % ABORT",
    "lease_c32": "67 % ABORT",
}


@dataclass
class Tally:
    """What the polls handed out and what the proposals got."""

    polls: int = 0
    runs: int = 0
    proposals: int = 0
    proposal_errors: int = 0
    statuses: Counter = field(default_factory=Counter)
    accepted: Counter = field(default_factory=Counter)  # run id -> ACCEPTs

    def reset(self) -> None:
        self.__init__()

    @property
    def duplicate_accepts(self) -> int:
        return sum(n - 1 for n in self.accepted.values() if n > 1)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2], help="replica counts (default: 1 2)")
    parser.add_argument("--runs", type=int, default=10_000, help="SCHEDULED runs at the start of each phase")
    parser.add_argument("--queues", type=int, default=5, help="queues in the pool, priorities 1..N (default 5)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every case's request count")
    parser.add_argument(
        "--claim",
        choices=["sequential", "concurrent"],
        default="sequential",
        help="how a poller proposes PENDING for the runs of one poll (default: sequential, "
        "like `workpools worker`; concurrent: like Prefect's worker)",
    )
    parser.add_argument("--cases", nargs="+", choices=[c.key for c in CASES], default=[c.key for c in CASES])
    parser.add_argument(
        "--database-url",
        default=DEFAULT_DATABASE_URL,
        help=f"benchmark database, dropped and recreated (default: {DEFAULT_DATABASE_URL})",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=4.0,
        help="before each case, wait up to this many seconds for the machine to use < 0.3 cores "
        "(0: don't wait; default 4)",
    )
    parser.add_argument(
        "--profile",
        choices=["py-spy", "cpu"],
        default=None,
        help="profile every replica and this client during each measured case: py-spy (wall "
        "clock, idle excluded) or cpu (bench/profiling.py's CPU-time sampler; replicas run "
        "under its wrapper; exact on a busy machine); prints where the samples went",
    )
    parser.add_argument(
        "--code",
        default="worktree",
        help="the code to benchmark: worktree (default) or a git revision, e.g. HEAD (exported "
        "with git archive; for when the working tree is mid-edit)",
    )
    args = parse_bench_args(parser, argv)
    return args


# --------------------------------------------------------------------------------------------
# Operations


def read_only_poll(client: WorkPoolClient, tally: Tally):
    async def op() -> None:
        items = await client.get_scheduled_flow_runs_for_work_pool(POOL, limit=LIMIT)
        tally.polls += 1
        tally.runs += len(items)

    return op


def poll_and_claim(client: WorkPoolClient, tally: Tally, *, concurrent: bool, lease: bool, pollers: int):
    """One round: poll limit=10, then propose PENDING for every run returned."""
    turn = iter(range(1 << 62))

    async def propose(item: Any) -> None:
        token = item.lease.token if lease and item.lease is not None else None
        try:
            if lease:
                result = await client.set_flow_run_state(item.flow_run.id, {"type": "PENDING"}, lease_token=token)
            else:
                result = await client.set_flow_run_state(item.flow_run.id, {"type": "PENDING"})
        except Exception:
            tally.proposal_errors += 1
            raise
        finally:
            tally.proposals += 1
        status = str(getattr(result.status, "value", result.status))
        tally.statuses[status] += 1
        if status == "ACCEPT":
            tally.accepted[str(item.flow_run.id)] += 1

    async def op() -> None:
        if lease:
            worker = f"bench-claimer-{next(turn) % pollers}"
            # A long lease: these claimers send no heartbeats, and a lease that runs out puts
            # PENDING runs back to SCHEDULED (they would then be handed out and accepted again).
            items = await client.get_scheduled_flow_runs_for_work_pool(
                POOL, limit=LIMIT, claim=True, worker_name=worker, lease_seconds=3600
            )
        else:
            items = await client.get_scheduled_flow_runs_for_work_pool(POOL, limit=LIMIT)
        tally.polls += 1
        tally.runs += len(items)
        if concurrent:
            results = await asyncio.gather(*(propose(item) for item in items), return_exceptions=True)
            failed = [r for r in results if isinstance(r, BaseException)]
            if failed:
                raise failed[0]
        else:
            first_error = None
            for item in items:
                try:
                    await propose(item)
                except Exception as exc:
                    first_error = first_error or exc
            if first_error is not None:
                raise first_error

    return op


async def pending_in_db(database_url: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        return await conn.fetchval(
            "SELECT count(*) FROM flow_run r JOIN work_queue q ON q.id = r.work_queue_id "
            "JOIN work_pool p ON p.id = q.work_pool_id WHERE p.name = $1 AND r.state_type = 'PENDING'",
            POOL,
        )
    finally:
        await conn.close()


# --------------------------------------------------------------------------------------------
# One replica count


async def run_case(
    case: Case, args: argparse.Namespace, client: WorkPoolClient, replica_set: ReplicaSet, replicas: int
) -> dict[str, Any]:
    requests = max(case.concurrency, int(case.requests * args.scale))
    seed_s = await seed_scheduled_runs(args.database_url, POOL, args.runs)
    tally = Tally()
    claiming = case.key in ("claim_c32", "lease_c32")
    pollers: WorkerPollers | None = None
    if case.key.startswith("rpc"):
        op = read_only_poll(client, tally)
    elif claiming:
        op = poll_and_claim(
            client,
            tally,
            concurrent=args.claim == "concurrent",
            lease=case.key == "lease_c32",
            pollers=case.concurrency,
        )
    else:
        pollers = WorkerPollers(args.redis_url, replica_set.prefix, POOL, case.concurrency, limit=LIMIT)
        await pollers.__aenter__()
        op = pollers.op
    try:
        if claiming and case.warmup:
            # Warm the claim path, then start again from 10,000 SCHEDULED runs.
            await run_load(op, requests=case.warmup, concurrency=case.concurrency)
            seed_s += await seed_scheduled_runs(args.database_url, POOL, args.runs)
            tally.reset()
            warmup = 0
        else:
            warmup = case.warmup
        if args.quiet_wait > 0:
            busy = await wait_for_quiet(args.quiet_wait)
            if busy >= 0.3:
                print(f"  (machine still busy before {case.key}: {busy:.2f} cores in use)", flush=True)
        meter = CpuMeter(replica_set.pids, database=check_bench_database(args.database_url))
        if pollers is not None and warmup:
            await run_load(op, requests=warmup, concurrency=case.concurrency)
            pollers.reset_counts()
            warmup = 0
        if warmup:
            await run_load(op, requests=warmup, concurrency=case.concurrency)
            tally.reset()
        profiler = None
        if args.profile:
            profiler = Profiler(args.profile, replica_set.pids, args.profile_dir)
            await profiler.start()
        recorder: LatencyRecorder = await run_load(op, requests=requests, concurrency=case.concurrency, meter=meter)
        if profiler is not None:
            profiles = await profiler.stop()
    finally:
        if pollers is not None:
            await pollers.__aexit__(None, None, None)
    if pollers is not None:
        tally.polls, tally.runs = pollers.polls, pollers.runs
    result: dict[str, Any] = {
        "case": case.key,
        "operation": case.label,
        "concurrency": case.concurrency,
        "replicas": replicas,
        **recorder.summary(),
        "polls": tally.polls,
        "runs_per_poll": tally.runs / tally.polls if tally.polls else 0.0,
        "seed_seconds": seed_s,
        "cpu_percent": meter.percent(),
        "cpu_ms_per_op": meter.ms_per_op(len(recorder.samples)),
        "meter": meter,
        "error_kinds": dict(recorder.error_kinds.most_common(5)),
    }
    if profiler is not None:
        result["profiles"] = profiles
        result["profile_errors"] = profiler.errors
        result["profiler"] = args.profile
    if claiming:
        pending = await pending_in_db(args.database_url)
        accepts = tally.statuses.get("ACCEPT", 0)
        result |= {
            "proposals": tally.proposals,
            "proposal_errors": tally.proposal_errors,
            "statuses": dict(tally.statuses),
            "accepted": accepts,
            "aborted": tally.statuses.get("ABORT", 0),
            "abort_share": tally.statuses.get("ABORT", 0) / tally.proposals if tally.proposals else math.nan,
            "duplicate_accepts": tally.duplicate_accepts,
            "pending_in_db": pending,
            "claim": args.claim,
            "proposals_per_s": tally.proposals / recorder.elapsed if recorder.elapsed else 0.0,
        }
    line = (
        f"  {case.label:<32} c={case.concurrency:<3} {result['ops_per_s']:>7.0f} polls/s  "
        f"p50 {result['p50_ms']:7.2f} ms  p99 {result['p99_ms']:7.2f} ms  errors {result['errors']}  "
        f"runs/poll {result['runs_per_poll']:.1f}"
    )
    if claiming:
        line += (
            f"  proposals {result['proposals']} ACCEPT {result['accepted']} ABORT {result['aborted']} "
            f"({100 * result['abort_share']:.0f} %) dup-accepts {result['duplicate_accepts']} "
            f"PENDING in DB {result['pending_in_db']}"
        )
    print(line, flush=True)
    for kind, count in recorder.error_kinds.most_common(3):
        print(f"    {count} x {kind}", flush=True)
    return result


async def run_replicas(replicas: int, args: argparse.Namespace, cases: list[Case]) -> list[dict[str, Any]]:
    prefix = new_prefix("wpbpoll")
    await drop_database(args.database_url)  # fresh: the replicas create and migrate it
    results = []
    options = Profiler.replica_options(args.profile, args.profile_dir) if args.profile else {}
    replica_set = ReplicaSet(
        replicas, prefix=prefix, database_url=args.database_url, redis_url=args.redis_url, **options
    )
    try:
        async with replica_set:
            print(
                f"[{replicas} replica(s)] ready in {replica_set.ready_seconds:.1f} s; pids {replica_set.pids}, "
                f"prefix {prefix}, logs {replica_set.log_dir}",
                flush=True,
            )
            async with WorkPoolClient(redis_url=args.redis_url, prefix=prefix, timeout=30) as client:
                queues = await create_priority_pool(client, POOL, args.queues)
                print(
                    f"  pool {POOL}: queues {queues} (priorities 1..{len(queues)}); "
                    f"{args.runs:,} runs seeded by SQL before each phase",
                    flush=True,
                )
                for case in cases:
                    results.append(await run_case(case, args, client, replica_set, replicas))
    finally:
        deleted = await delete_prefix_keys(args.redis_url, prefix)
        print(f"  deleted {deleted} Redis keys {prefix}*", flush=True)
    return results


# --------------------------------------------------------------------------------------------
# Report


def report(results: list[dict[str, Any]], args: argparse.Namespace, version: str) -> None:
    rows = []
    for r in results:
        target, met = TARGETS.get(r["case"], ("", None))
        claims = "proposals" in r
        rows.append(
            [
                r["operation"],
                r["concurrency"],
                r["replicas"],
                fmt_float(r["ops_per_s"], 0),
                fmt_float(r["p50_ms"], 2),
                fmt_float(r["p99_ms"], 2),
                r["errors"],
                fmt_float(r["runs_per_poll"], 1),
                r["proposals"] if claims else "",
                r["accepted"] if claims else "",
                r["aborted"] if claims else "",
                f"{100 * r['abort_share']:.0f} %" if claims else "",
                r["duplicate_accepts"] if claims else "",
                (f"{target} {'✓' if met(r) else '✗'}" if met else ""),
                PREFECT.get(r["case"], ""),
            ]
        )
    print_table(
        f"workpools worker poll: 1 pool, {args.queues} queues, {args.runs:,} SCHEDULED runs, limit={LIMIT} "
        f"(code {version})",
        [
            "operation",
            "concurrency",
            "replicas",
            "ops/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "runs/poll",
            "proposals",
            "ACCEPT",
            "ABORT",
            "ABORT %",
            "dup accepts",
            "target",
            "Prefect HTTP",
        ],
        rows,
        right_align=[
            "concurrency",
            "replicas",
            "ops/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "runs/poll",
            "proposals",
            "ACCEPT",
            "ABORT",
            "ABORT %",
            "dup accepts",
        ],
        caption=(
            f"ops/s = polls/s; for the claim rows p50/p99 are one round (poll + its PENDING proposals, "
            f"{args.claim}). dup accepts: runs ACCEPTed more than once (must be 0). Prefect HTTP: Prefect's "
            f"server on this machine (37.5 ms p50 at 1, 40 polls/s at 32, 67 % of PENDING proposals ABORTed)."
        ),
    )
    print_cpu_table(
        "CPU during the measured polls: % of one core | CPU ms per poll (claim rows: per round)",
        [(r["operation"], r["concurrency"], r["replicas"], r["meter"], r["ok"]) for r in results],
        unit="poll",
        caption="CPU % of one core (200 % = both cores busy). postgres = the benchmark database's "
        "backends (not the server's shared writers). other = the rest of the machine: other sessions and "
        "their databases, and PostgreSQL backends that exited during the window (the meter cannot see "
        "their CPU). "
        "Per-poll CPU is the robust number on a shared machine.",
    )
    for r in results:
        if r.get("profiles"):
            print_profiles(r)
    if args.profile:
        print(f"raw stacks (speedscope.app / flamegraph.pl): {args.profile_dir}")


def print_profiles(r: dict[str, Any]) -> None:
    from bench.profiling import CLIENT_STAGES, REPLICA_STAGES, summarize

    how = "py-spy: wall clock, idle excluded" if r["profiler"] == "py-spy" else "CPU-time sampler"
    for name, samples in r["profiles"].items():
        replica = name.startswith("replica")
        summary = summarize(samples, REPLICA_STAGES if replica else CLIENT_STAGES)
        ms = r["cpu_ms_per_op"].get("replicas" if replica else "client", math.nan)
        if replica:
            ms /= r["replicas"]  # about even
        title = (
            f"{name if replica else 'client'}: {r['operation']} c={r['concurrency']}, {r['replicas']} replica(s) "
            f"(≈ {ms:.2f} ms CPU per poll in this process; {summary.total} samples, {how})"
        )
        if replica:
            total, entries = entry_points(samples)
            print_table(
                title + " — by entry point (inclusive)",
                ["project code", "%", "ms / poll"],
                [
                    [label, fmt_float(100 * n / total, 1), fmt_float(n / total * ms, 3)]
                    for label, n in entries.most_common(8)
                ],
                right_align=["%", "ms / poll"],
            )
        print_table(
            title + " — by owner",
            ["owner (deepest library/app frame)", "%", "ms / poll"],
            [
                [who, fmt_float(summary.pct(n), 1), fmt_float(summary.pct(n) / 100 * ms, 3)]
                for who, n in summary.owners.most_common(10)
            ],
            right_align=["%", "ms / poll"],
        )
        print_table(
            title + " — by part",
            ["part (exclusive)", "%", "ms / poll"],
            [
                [
                    label,
                    fmt_float(summary.pct(summary.stages[label]), 1),
                    fmt_float(summary.pct(summary.stages[label]) / 100 * ms, 3),
                ]
                for label in summary.stage_order
                if summary.stages[label]
            ],
            right_align=["%", "ms / poll"],
        )
    if r.get("profile_errors"):
        print(f"profiler errors: {r['profile_errors']}")


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.profile_dir = Path(tempfile.mkdtemp(prefix="workpools-poll-profile-")) if args.profile else None
    cases = [c for c in CASES if c.key in args.cases]
    if not CLAIM_MODE_SUPPORTED:
        cases = [c for c in cases if c.key != "lease_c32"]
    version = code_version()
    print(f"code under test: {version}; claim mode {'present' if CLAIM_MODE_SUPPORTED else 'absent'}", flush=True)
    results: list[dict[str, Any]] = []
    try:
        for replicas in args.replicas:
            results += await run_replicas(replicas, args, cases)
    finally:
        if not args.keep_database:
            await drop_database(args.database_url)
    report(results, args, version)
    if args.json:
        args.json.write_text(
            json.dumps(
                [{k: v for k, v in r.items() if k not in ("meter", "profiles")} for r in results], indent=2, default=str
            )
        )
    failed = any(
        r["errors"] or r.get("duplicate_accepts") or ("pending_in_db" in r and r["pending_in_db"] != r["accepted"])
        for r in results
    )
    return 1 if failed else 0


def run() -> int:
    try:
        return asyncio.run(main())
    finally:
        remove_exported_code()  # last: the report may still import from the exported code


if __name__ == "__main__":
    sys.exit(run())
