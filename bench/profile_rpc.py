"""Where the time goes for one benchmark case of bench/rpc.py, or a read-only poll of
bench/targets.py (default: read_work_pool at concurrency 32, 1 replica).

    .venv/bin/python bench/profile_rpc.py [--case read_c32] [--replicas 1] [--seconds 15] [--py-spy]

One window of `--seconds` under load, measured three ways at once:
  * CPU seconds per request of each process (replicas, this client, redis-server, postgres);
  * a CPU-time stack sampler (SIGPROF) inside each replica and inside the client, summarised
    by owner (FastStream / SQLAlchemy / asyncpg / pydantic / redis-py / app / asyncio) and by
    parts of the request path (inclusive);
  * `perf record` of the replica and the client (interpreter vs C extensions vs kernel).
With --py-spy, a second window samples replica 0 wall-clock with py-spy (includes waiting).
Artefacts (collapsed stacks for speedscope.app / flamegraph.pl, perf data) go to --out.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cpu import CpuMeter, wait_for_quiet
from bench.housekeeping import delete_prefix_keys, drop_database, new_prefix
from bench.latency import run_for
from bench.options import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL
from bench.profiling import (
    CLIENT_STAGES,
    PROFILE_INTERVAL_ENV,
    PROFILE_OUT_ENV,
    REPLICA_STAGES,
    CpuSampler,
    load_collapsed,
    perf_available,
    perf_record_command,
    perf_report,
    profiled_serve_command,
    summarize,
)
from bench.replicas import ReplicaSet
from bench.rpc import CASES, Case, operation, setup
from bench.seed import create_priority_pool, seed_scheduled_runs
from bench.tables import fmt_float, print_table
from client import WorkPoolClient

POLL_CASE = Case("poll_c32", "get_scheduled_flow_runs", 32, 0, 300)
"""bench/targets.py's poll: 10,000 scheduled runs over 5 queues of one pool, limit 10."""
POLL_POOL, POLL_RUNS, POLL_LIMIT = "bench-poll", 10_000, 10


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=[c.key for c in (*CASES, POLL_CASE)], default="read_c32")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=15.0, help="length of the measured window")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up requests (default: the case's)")
    parser.add_argument("--interval", type=float, default=0.002, help="CPU sampling interval, seconds")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=5.0,
        help="wait up to this long for other processes to use < 0.3 cores first (0: don't)",
    )
    parser.add_argument("--no-perf", action="store_true", help="skip perf record")
    parser.add_argument("--py-spy", action="store_true", help="also a wall-clock py-spy window on replica 0")
    parser.add_argument("--out", type=Path, default=Path("/tmp/workpools-profile"))
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument("--queue-pools", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--top", type=int, default=15, help="rows of the hottest-leaf tables")
    return parser.parse_args()


async def wait_for_files(paths: list[Path], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        if time.monotonic() > deadline:
            missing = [str(p) for p in paths if not p.exists()]
            raise TimeoutError(f"profiles not written: {missing}")
        await asyncio.sleep(0.05)


def owners_table(title: str, summary, cpu_ms_per_op: float, unit: str = "µs CPU / request") -> None:
    rows = [
        [who, fmt_float(summary.pct(n), 1), fmt_float(summary.pct(n) / 100 * cpu_ms_per_op * 1000, 0)]
        for who, n in summary.owners.most_common()
    ]
    print_table(
        title,
        ["owner (deepest library/app frame)", "% of samples", unit],
        rows,
        right_align=["% of samples", unit],
        caption=f"{summary.total} samples; stdlib/asyncio frames count for the library that called them.",
    )


def stages_table(title: str, summary, cpu_ms_per_op: float, unit: str = "µs CPU / request") -> None:
    rows = [
        [
            label,
            fmt_float(summary.pct(summary.stages[label]), 1),
            fmt_float(summary.pct(summary.stages[label]) / 100 * cpu_ms_per_op * 1000, 0),
        ]
        for label in summary.stage_order
        if summary.stages[label]
    ]
    print_table(
        title,
        ["part (exclusive; first matching part in this order wins)", "% of samples", unit],
        rows,
        right_align=["% of samples", unit],
    )


def leaves_table(title: str, summary, top: int) -> None:
    rows = [[leaf, cat, fmt_float(summary.pct(n), 1)] for (leaf, cat), n in summary.leaves.most_common(top)]
    print_table(title, ["leaf frame (self time)", "category", "%"], rows, right_align=["%"])


def poll_operation(client: WorkPoolClient):
    async def op() -> None:
        runs = await client.get_scheduled_flow_runs_for_work_pool(POLL_POOL, limit=POLL_LIMIT)
        if len(runs) != POLL_LIMIT:
            raise RuntimeError(f"poll returned {len(runs)} runs")

    return op


async def main() -> int:
    args = parse_args()
    case = next(c for c in (*CASES, POLL_CASE) if c.key == args.case)
    warmup = case.warmup if args.warmup is None else args.warmup
    out = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    use_perf = not args.no_perf and perf_available()

    prefix = new_prefix("wpprof")
    await drop_database(args.database_url)
    replica_set = ReplicaSet(
        args.replicas,
        prefix=prefix,
        database_url=args.database_url,
        redis_url=args.redis_url,
        command=profiled_serve_command(),
        env={PROFILE_OUT_ENV: str(out / "replica-{pid}.collapsed"), PROFILE_INTERVAL_ENV: str(args.interval)},
    )
    try:
        async with replica_set, WorkPoolClient(redis_url=args.redis_url, prefix=prefix, timeout=30) as client:
            print(
                f"replicas {replica_set.pids} (logs {replica_set.log_dir}), client pid {os.getpid()}; "
                f"case {case.key}: {case.operation} at concurrency {case.concurrency}",
                flush=True,
            )
            if case is POLL_CASE:
                await create_priority_pool(client, POLL_POOL, 5)
                await seed_scheduled_runs(args.database_url, POLL_POOL, POLL_RUNS)
                op = poll_operation(client)
            else:
                queue_pools = await setup(client, args)
                op = operation(case, client, queue_pools, args.workers)
            await run_for(op, seconds=0.0, concurrency=case.concurrency, warmup=warmup)

            # Window 1: CPU accounting, CPU samplers, perf.
            busy = await wait_for_quiet(args.quiet_wait) if args.quiet_wait > 0 else 0.0
            if busy >= 0.3:
                print(f"(machine still busy: {busy:.2f} cores used by others)", flush=True)
            perfs = []
            if use_perf:
                targets = [(f"replica-{pid}", pid) for pid in replica_set.pids] + [("client", os.getpid())]
                for name, pid in targets:
                    perfs.append(
                        (
                            name,
                            out / f"{name}.perf.data",
                            await asyncio.create_subprocess_exec(
                                *perf_record_command(pid, args.seconds, out / f"{name}.perf.data"),
                                stdout=asyncio.subprocess.DEVNULL,
                                stderr=asyncio.subprocess.DEVNULL,
                            ),
                        )
                    )
            for pid in replica_set.pids:
                os.kill(pid, signal.SIGUSR1)
            sampler = CpuSampler(args.interval)
            sampler.start()
            meter = CpuMeter(replica_set.pids)
            recorder = await run_for(op, seconds=args.seconds, concurrency=case.concurrency, meter=meter)
            sampler.stop()
            for pid in replica_set.pids:
                os.kill(pid, signal.SIGUSR2)
            sampler.dump(out / "client.collapsed")
            replica_files = [out / f"replica-{pid}.collapsed" for pid in replica_set.pids]
            await wait_for_files(replica_files)
            for _, _, proc in perfs:
                await proc.wait()

            # Window 2: wall-clock py-spy of replica 0 (optional).
            spy_file, spy_recorder = None, None
            if args.py_spy:
                spy = Path(sys.executable).parent / "py-spy"
                spy_file = out / "replica0.py-spy.raw"
                proc = await asyncio.create_subprocess_exec(
                    str(spy),
                    "record",
                    "--pid",
                    str(replica_set.pids[0]),
                    "--format",
                    "raw",
                    "--rate",
                    "100",
                    "--duration",
                    str(int(args.seconds)),
                    "--full-filenames",
                    "-o",
                    str(spy_file),
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
                spy_recorder = await run_for(op, seconds=args.seconds + 0.5, concurrency=case.concurrency)
                await proc.wait()
    finally:
        await delete_prefix_keys(args.redis_url, prefix)
        await drop_database(args.database_url)

    s = recorder.summary()
    print(
        f"\nwindow 1 (profiled): {s['ok']} requests in {s['seconds']:.1f} s = {s['ops_per_s']:.0f} ops/s, "
        f"p50 {s['p50_ms']:.2f} ms, p99 {s['p99_ms']:.2f} ms, errors {s['errors']}"
    )
    pct, per_op = meter.percent(), meter.ms_per_op(s["ok"])
    parts = ("replicas", "client", "redis", "postgres", "other", "machine")
    print_table(
        "CPU in window 1",
        ["process", "% of one core", "CPU ms / request"],
        [[k, fmt_float(pct.get(k), 0), fmt_float(per_op.get(k), 3)] for k in parts],
        right_align=["% of one core", "CPU ms / request"],
        caption="machine = all processes (2 cores = 200 %); other = processes not ours (other sessions).",
    )

    replica_samples = [sample for path in replica_files for sample in load_collapsed(path)]
    replica_summary = summarize(replica_samples, REPLICA_STAGES)
    client_summary = summarize(load_collapsed(out / "client.collapsed"), CLIENT_STAGES)
    replica_ms = per_op.get("replicas", 0.0)
    client_ms = per_op.get("client", 0.0)
    owners_table(
        f"Replica CPU by owner ({replica_ms:.3f} ms CPU per request in all replicas)", replica_summary, replica_ms
    )
    stages_table("Replica CPU by part of the request path", replica_summary, replica_ms)
    leaves_table("Replica: hottest leaf frames", replica_summary, args.top)
    owners_table(f"Client CPU by owner ({client_ms:.3f} ms CPU per request)", client_summary, client_ms)
    stages_table("Client CPU by part", client_summary, client_ms)
    leaves_table("Client: hottest leaf frames", client_summary, args.top)

    for name, data, _ in perfs:
        if data.exists():
            print_table(
                f"perf {name}: CPU by shared object",
                ["%", "shared object"],
                [[fmt_float(p, 1), n] for p, n in perf_report(data, "dso", 12)],
                right_align=["%"],
            )
            print_table(
                f"perf {name}: hottest native symbols",
                ["%", "symbol"],
                [[fmt_float(p, 1), n] for p, n in perf_report(data, "dso,sym", args.top)],
                right_align=["%"],
            )

    if spy_file is not None and spy_file.exists():
        ss = spy_recorder.summary()
        spy_summary = summarize(load_collapsed(spy_file), REPLICA_STAGES)
        print(f"\nwindow 2 (py-spy, wall clock, idle excluded): {ss['ops_per_s']:.0f} ops/s, p50 {ss['p50_ms']:.2f} ms")
        owners_table(
            "Replica 0 wall-clock samples by owner (py-spy; includes time runnable but not running)",
            spy_summary,
            1000 / max(ss["ops_per_s"], 1e-9),
            unit="µs wall / request",
        )
        stages_table(
            "Replica 0 wall-clock samples by part (py-spy)",
            spy_summary,
            1000 / max(ss["ops_per_s"], 1e-9),
            unit="µs wall / request",
        )
    print(f"\nartefacts in {out}: *.collapsed (speedscope.app / flamegraph.pl), *.perf.data (perf report -i)")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
