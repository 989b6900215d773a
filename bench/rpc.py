"""Request/reply throughput and latency of `workpools serve`, 1 and 2 replicas, one client.

    .venv/bin/python bench/rpc.py [--replicas 1 2] [--requests N] [--database-url URL] [--redis-url URL]
                                  [--code worktree|HEAD|<rev>]

For each replica count: a fresh database (dropped, then created and migrated by the replicas as
they start), N `workpools serve` subprocesses (log level WARNING, logs in a temp dir), and ONE
client (this process, asyncio, a single `WorkPoolClient` shared by every task) measuring

  * read_work_pool        at concurrency 1 and 32 (a pool with a concurrency limit, so
                          `active_slots` is computed by its sub-query)
  * create_work_queue     at concurrency 32 (unique names spread over a few pools; priorities
                          are assigned per pool, which serialises the creates of one pool)
  * send_worker_heartbeat at concurrency 32 (1,000 worker names cycling in one pool; the warm-up
                          creates them all, so the measured heartbeats are refreshes)

each after a warm-up. Its Redis keys (`prefix*`) are deleted after each replica count, the
database at the end (unless --keep-database).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cpu import CpuMeter, wait_for_quiet
from bench.housekeeping import delete_prefix_keys, drop_database, new_prefix
from bench.latency import LatencyRecorder, run_load
from bench.options import DEFAULT_DATABASE_URL, parse_bench_args
from bench.replicas import ReplicaSet
from bench.revision import code_version, remove_exported_code, run_on_code
from bench.tables import fmt_float, print_table

if __name__ == "__main__":
    run_on_code("rpc.py")  # --code REV: re-executes on that revision (before the project is imported)

from client import WorkPoolClient

READ_POOL = "bench-read"
HEARTBEAT_POOL = "bench-workers"


@dataclass(frozen=True)
class Case:
    key: str
    operation: str
    concurrency: int
    requests: int
    warmup: int


# Sized for a full run (2 replica counts) of about 1-2 minutes on a 2-core machine.
CASES = (
    Case("read_c1", "read_work_pool", 1, 1500, 200),
    Case("read_c32", "read_work_pool", 32, 6000, 1000),
    Case("create_c32", "create_work_queue", 32, 2000, 200),
    Case("heartbeat_c32", "send_worker_heartbeat", 32, 4000, 1000),
)

# Targets. Prefect side by side, in the same run: bench/targets.py.
TARGETS: dict[str, tuple[str, Any]] = {
    "read_c1": ("p50 ≤ 2 ms", lambda s: s["p50_ms"] <= 2.0),
    "read_c32": ("≥ 1,000/s", lambda s: s["ops_per_s"] >= 1000),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2], help="replica counts (default: 1 2)")
    parser.add_argument(
        "--requests",
        type=int,
        default=None,
        help="measured requests per case (default: sized per case, ~1-2 min in all)",
    )
    parser.add_argument("--warmup", type=int, default=None, help="warm-up requests per case (default: per case)")
    parser.add_argument(
        "--database-url",
        default=DEFAULT_DATABASE_URL,
        help=f"benchmark database, dropped and recreated (default: {DEFAULT_DATABASE_URL})",
    )
    parser.add_argument("--concurrency", type=int, default=32, help="the high concurrency (default: 32)")
    parser.add_argument("--queue-pools", type=int, default=8, help="pools the created queues go into (default: 8)")
    parser.add_argument("--workers", type=int, default=1000, help="distinct worker names (default: 1000)")
    parser.add_argument("--cases", nargs="+", choices=[c.key for c in CASES], default=[c.key for c in CASES])
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=5.0,
        help="before each case, wait up to this many seconds for other processes on the machine "
        "to use < 0.3 cores (shared machines; 0: don't wait; default 5)",
    )
    parser.add_argument(
        "--code",
        default="worktree",
        help="the code to benchmark: worktree (default) or a git revision, e.g. HEAD (exported "
        "with git archive; for when the working tree is mid-edit)",
    )
    args = parse_bench_args(parser, argv)
    return args


async def setup(client: WorkPoolClient, args: argparse.Namespace) -> list[str]:
    # A limit, so read_work_pool computes active_slots (the PENDING/RUNNING flow-run count).
    await client.create_work_pool({"name": READ_POOL, "type": "process", "concurrency_limit": 10})
    await client.create_work_pool({"name": HEARTBEAT_POOL, "type": "process"})
    queue_pools = [f"bench-queues-{k}" for k in range(args.queue_pools)]
    for name in queue_pools:
        await client.create_work_pool({"name": name, "type": "process"})
    pool = await client.read_work_pool(READ_POOL)
    assert pool.active_slots == 0, pool
    return queue_pools


def operation(case: Case, client: WorkPoolClient, queue_pools: list[str], workers: int):
    counter = itertools.count()
    if case.operation == "read_work_pool":

        async def op() -> None:
            await client.read_work_pool(READ_POOL)
    elif case.operation == "create_work_queue":

        async def op() -> None:
            i = next(counter)
            await client.create_work_queue(queue_pools[i % len(queue_pools)], {"name": f"q{i}"})
    elif case.operation == "send_worker_heartbeat":

        async def op() -> None:
            i = next(counter)
            await client.send_worker_heartbeat(HEARTBEAT_POOL, f"worker-{i % workers}", 30)
    else:
        raise ValueError(case.operation)
    return op


async def run_replicas(replicas: int, args: argparse.Namespace, cases: list[Case]) -> list[dict[str, Any]]:
    prefix = new_prefix("wpbench")
    await drop_database(args.database_url)  # fresh: the replicas create and migrate it
    results = []
    replica_set = ReplicaSet(replicas, prefix=prefix, database_url=args.database_url, redis_url=args.redis_url)
    try:
        async with replica_set:
            print(
                f"[{replicas} replica(s)] ready in {replica_set.ready_seconds:.1f} s; pids {replica_set.pids}, "
                f"prefix {prefix}, logs {replica_set.log_dir}",
                flush=True,
            )
            async with WorkPoolClient(redis_url=args.redis_url, prefix=prefix, timeout=30) as client:
                queue_pools = await setup(client, args)
                for case in cases:
                    if args.quiet_wait > 0:
                        busy = await wait_for_quiet(args.quiet_wait)
                        if busy >= 0.3:
                            print(
                                f"  (machine still busy before {case.key}: {busy:.2f} cores used by others)", flush=True
                            )
                    meter = CpuMeter(replica_set.pids)
                    recorder: LatencyRecorder = await run_load(
                        operation(case, client, queue_pools, args.workers),
                        requests=case.requests,
                        concurrency=case.concurrency,
                        warmup=case.warmup,
                        meter=meter,
                    )
                    summary = {
                        "case": case.key,
                        "operation": case.operation,
                        "concurrency": case.concurrency,
                        "replicas": replicas,
                        **recorder.summary(),
                        "cpu_percent": meter.percent(),
                        "cpu_ms_per_op": meter.ms_per_op(len(recorder.samples)),
                    }
                    results.append(summary)
                    print(
                        f"  {case.operation:<22} c={case.concurrency:<3} {summary['ops_per_s']:>8.0f} ops/s  "
                        f"p50 {summary['p50_ms']:6.2f} ms  p99 {summary['p99_ms']:6.2f} ms  "
                        f"errors {summary['errors']}  ({summary['requests']} in {summary['seconds']:.1f} s)",
                        flush=True,
                    )
                    for kind, count in recorder.error_kinds.most_common(3):
                        print(f"    {count} x {kind}", flush=True)
    finally:
        deleted = await delete_prefix_keys(args.redis_url, prefix)
        print(f"  deleted {deleted} Redis keys {prefix}*", flush=True)
    return results


def report(results: list[dict[str, Any]]) -> None:
    rows = []
    for r in results:
        target, met = TARGETS.get(r["case"], ("", None))
        rows.append(
            [
                r["operation"],
                r["concurrency"],
                r["replicas"],
                fmt_float(r["ops_per_s"], 0),
                fmt_float(r["p50_ms"], 2),
                fmt_float(r["p99_ms"], 2),
                r["errors"],
                f"{target} {'✓' if met(r) else '✗'}" if met else "",
            ]
        )
    print_table(
        "workpools request/reply over Redis (one client process, closed loop)",
        [
            "operation",
            "concurrency",
            "replicas",
            "ops/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "target",
        ],
        rows,
        right_align=["concurrency", "replicas", "ops/s", "p50 ms", "p99 ms", "errors"],
        caption="Against the transport's floor and Prefect's HTTP server in the same run: bench/targets.py.",
    )
    parts = ("machine", "replicas", "client", "redis", "postgres", "other")
    print_table(
        "CPU during the measured requests: % of one core (200 % = both cores busy) | CPU ms per request",
        ["operation", "conc.", "repl.", *parts, "ms/op repl.", "ms/op client", "ms/op redis", "ms/op pg"],
        [
            [
                r["operation"],
                r["concurrency"],
                r["replicas"],
                *(fmt_float(r["cpu_percent"].get(k, math.nan), 0) for k in parts),
                *(
                    fmt_float(r["cpu_ms_per_op"].get(k, math.nan), 2)
                    for k in ("replicas", "client", "redis", "postgres")
                ),
            ]
            for r in results
        ],
        right_align=["conc.", "repl.", *parts, "ms/op repl.", "ms/op client", "ms/op redis", "ms/op pg"],
        caption="other = the rest of the machine (e.g. other sessions' processes): a noisy neighbour if not ~0.",
    )


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cases = [c for c in CASES if c.key in args.cases]
    cases = [
        Case(
            c.key,
            c.operation,
            args.concurrency if c.concurrency > 1 else 1,
            args.requests or c.requests,
            c.warmup if args.warmup is None else args.warmup,
        )
        for c in cases
    ]
    results: list[dict[str, Any]] = []
    print(f"code under test: {code_version()}", flush=True)
    try:
        for replicas in args.replicas:
            results += await run_replicas(replicas, args, cases)
    finally:
        if not args.keep_database:
            await drop_database(args.database_url)
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    remove_exported_code()  # last: the report may still import from the exported code
    return 1 if any(r["errors"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
