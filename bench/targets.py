"""Issue 14's targets in one run: the transport's floor, workpools, and Prefect side by side.

    .venv/bin/python bench/targets.py [--prefect-url http://127.0.0.1:4200/api] [--scale 1.0]

In this order, each on a quiet-ish machine (bounded wait), each with its CPU from /proc:

  floor     bench/echo.py, a replica that only echoes (same broker, envelope, stream settings,
            no database): request/reply at concurrency 1 and 32;
  workpools 1 replica (`workpools serve`, fresh database): read pool at 1 and 32, create
            queue at 32 into ONE pool, heartbeat at 32, poll (10,000 scheduled runs over 5
            queues, limit 10, stream RPC) at 1 and 32; then create queue at 32 into a pool
            already holding 10 queues and into one holding 1,000;
  Prefect   (with --prefect-url) the same operations over its HTTP API, the same load
            settings, and its duplicate priorities after the creates.

Every row gives ops/s, p50/p99 and the server's CPU ms per operation (the replica's, the echo
replica's or the Prefect server's), and as a multiple of the floor's CPU per request; then
issue 14's targets table. Only figures from one run are comparable: the machine is shared.
How to start a Prefect server for it: see bench/prefect_http.py.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import shutil
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import echo
from bench.cpu import CpuMeter, wait_for_quiet
from bench.housekeeping import asyncpg_dsn, delete_prefix_keys, drop_database, new_prefix
from bench.latency import run_load
from bench.options import DEFAULT_DATABASE_URL, parse_bench_args
from bench.prefect_http import PrefectHTTP, server_pids
from bench.replicas import ReplicaSet
from bench.revision import export_revision, serve_revision_options
from bench.seed import create_priority_pool, seed_scheduled_runs
from bench.tables import fmt_float, print_table
from client import WorkPoolClient
from client.transport import RpcTransport

PREFECT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/prefect_bench"

# (key, concurrency, requests, warm-up); requests are multiplied by --scale.
PLAN = {
    "echo_c1": (1, 1500, 200),
    "echo_c32": (32, 6000, 1000),
    "read_c1": (1, 1500, 200),
    "read_c32": (32, 6000, 1000),
    "create_c32": (32, 1500, 100),
    "heartbeat_c32": (32, 4000, 1000),
    "poll_c1": (1, 300, 30),
    "poll_c32": (32, 1500, 100),
    "create_into_10": (32, 600, 0),
    "create_into_1000": (32, 600, 0),
}
PREFECT_PLAN = {  # Prefect serves ~5x fewer requests: fewer of them, the same settings otherwise
    "read_c1": (1, 300, 50),
    "read_c32": (32, 1000, 100),
    "create_c32": (32, 600, 0),
    "heartbeat_c32": (32, 1000, 100),
    "poll_c1": (1, 100, 10),
    "poll_c32": (32, 300, 30),
}

SEED_QUEUES = """
INSERT INTO work_queue (id, created, updated, work_pool_id, name, description, is_paused, priority, status)
SELECT gen_random_uuid(), now(), now(), p.id, 'seeded-' || k, '', false, k, 'NOT_READY'
  FROM work_pool p CROSS JOIN generate_series(2, $2) AS k
 WHERE p.name = $1
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefect-url", default=None, help="Prefect server API, e.g. http://127.0.0.1:4200/api")
    parser.add_argument(
        "--prefect-database-url",
        default=PREFECT_DATABASE_URL,
        help=f"the Prefect server's database, for seeding runs and counting priorities (default {PREFECT_DATABASE_URL})",
    )
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every case's request count")
    parser.add_argument("--runs", type=int, default=10_000, help="scheduled runs in the poll pool")
    parser.add_argument(
        "--compare",
        nargs="+",
        default=[],
        metavar="REV",
        help="also measure workpools at these git revisions (exported with git archive), in the same run, "
        "before this checkout's",
    )
    parser.add_argument("--only", nargs="+", choices=["floor", "workpools", "prefect"], default=None)
    parser.add_argument(
        "--database-url",
        default=DEFAULT_DATABASE_URL,
        help=f"workpools' benchmark database, dropped and recreated (default: {DEFAULT_DATABASE_URL})",
    )
    parser.add_argument("--quiet-wait", type=float, default=4.0, help="max seconds to wait for a quiet machine")
    return parse_bench_args(parser, argv)


class Run:
    """Measures cases and keeps their rows."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rows: list[dict[str, Any]] = []

    async def measure(
        self,
        system: str,
        key: str,
        op: Callable[[], Awaitable[Any]],
        server_pids: list[int],
        database: str | None,
        plan: dict[str, tuple[int, int, int]] = PLAN,
    ) -> dict[str, Any]:
        concurrency, requests, warmup = plan[key]
        requests = max(10, int(requests * self.args.scale))
        warmup = int(warmup * self.args.scale)
        if self.args.quiet_wait > 0:
            await wait_for_quiet(self.args.quiet_wait)
        meter = CpuMeter(server_pids, database=database)
        recorder = await run_load(op, requests=requests, concurrency=concurrency, warmup=warmup, meter=meter)
        ops = len(recorder.samples)
        per_op = meter.ms_per_op(ops)
        row = {
            "system": system,
            "case": key,
            "concurrency": concurrency,
            **recorder.summary(),
            "server_ms": per_op.get("replicas", math.nan),
            "client_ms": per_op.get("client", math.nan),
            "redis_ms": per_op.get("redis", math.nan),
            "pg_ms": per_op.get("postgres", math.nan),
            "other_cores": meter.percent().get("other", math.nan) / 100,
            "error_kinds": dict(recorder.error_kinds.most_common(3)),
        }
        self.rows.append(row)
        print(
            f"  {system:<9} {key:<17} c={concurrency:<3} {row['ops_per_s']:>8.0f} ops/s  p50 {row['p50_ms']:7.2f} ms  "
            f"p99 {row['p99_ms']:7.2f} ms  server {row['server_ms']:.3f} ms/op  errors {row['errors']}  "
            f"(others used {row['other_cores']:.2f} cores)",
            flush=True,
        )
        for kind, count in recorder.error_kinds.most_common(3):
            print(f"    {count} x {kind}", flush=True)
        return row

    def find(self, system: str, key: str) -> dict[str, Any] | None:
        return next((r for r in self.rows if r["system"] == system and r["case"] == key), None)


async def floor(run: Run) -> None:
    args = run.args
    prefix = new_prefix("wpecho")
    echoes = ReplicaSet(
        1,
        prefix=prefix,
        database_url=args.database_url,
        redis_url=args.redis_url,
        command=echo.command(),
        streams=1,
        probe=echo.probe,
    )
    try:
        async with echoes:
            transport = RpcTransport(args.redis_url, prefix, timeout=30)
            await transport.connect()
            body = {"name": "bench-read"}  # the read request's body

            async def op() -> None:
                status, _ = await transport.request(echo.ECHO, body)  # type: ignore[arg-type]
                if status != 200:
                    raise RuntimeError(f"echo answered {status}")

            try:
                for key in ("echo_c1", "echo_c32"):
                    await run.measure("floor", key, op, echoes.pids, None)
            finally:
                await transport.close()
    finally:
        await delete_prefix_keys(args.redis_url, prefix)


async def workpools(run: Run, system: str = "workpools", code: Path | None = None) -> None:
    """The workpools rows, from this checkout or (`code`) a revision exported by bench.revision."""
    import asyncpg

    args = run.args
    prefix = new_prefix("wptarget")
    await drop_database(args.database_url)
    database = args.database_url.rsplit("/", 1)[1]
    options: dict[str, Any] = serve_revision_options(code) if code else {}
    replicas = ReplicaSet(1, prefix=prefix, database_url=args.database_url, redis_url=args.redis_url, **options)
    try:
        async with replicas, WorkPoolClient(redis_url=args.redis_url, prefix=prefix, timeout=60) as client:
            print(f"[{system}] 1 replica, pid {replicas.pids}, logs {replicas.log_dir}", flush=True)
            await client.create_work_pool({"name": "read", "type": "process", "concurrency_limit": 10})
            for name in ("create", "workers", "into-10", "into-1000"):
                await client.create_work_pool({"name": name, "type": "process"})
            await create_priority_pool(client, "poll", 5)
            await seed_scheduled_runs(args.database_url, "poll", args.runs)
            conn = await asyncpg.connect(asyncpg_dsn(args.database_url))
            try:
                await conn.execute(SEED_QUEUES, "into-10", 10)
                await conn.execute(SEED_QUEUES, "into-1000", 1000)
                await conn.execute("VACUUM ANALYZE work_queue")
            finally:
                await conn.close()
            names = itertools.count()
            pids = replicas.pids

            async def read() -> None:
                await client.read_work_pool("read")

            def create(pool: str) -> Callable[[], Awaitable[Any]]:
                async def op() -> None:
                    await client.create_work_queue(pool, {"name": f"q{next(names)}"})

                return op

            async def heartbeat() -> None:
                await client.send_worker_heartbeat("workers", f"worker-{next(names) % 1000}", 30)

            async def poll() -> None:
                runs = await client.get_scheduled_flow_runs_for_work_pool("poll", limit=10)
                if len(runs) != 10:
                    raise RuntimeError(f"poll returned {len(runs)} runs")

            for key, op in (
                ("read_c1", read),
                ("read_c32", read),
                ("create_c32", create("create")),
                ("heartbeat_c32", heartbeat),
                ("poll_c1", poll),
                ("poll_c32", poll),
                ("create_into_10", create("into-10")),
                ("create_into_1000", create("into-1000")),
            ):
                await run.measure(system, key, op, pids, database)
            queues = await client.read_work_queues("create", limit=200)
            assert len({q.priority for q in queues}) == len(queues), "duplicate priorities"
    finally:
        await delete_prefix_keys(args.redis_url, prefix)
        if not args.keep_database:
            await drop_database(args.database_url)


async def prefect(run: Run) -> None:
    args = run.args
    port = int(args.prefect_url.split(":")[-1].split("/")[0])
    pids = server_pids(port)
    if not pids:
        print(f"  (no Prefect server process found for port {port}: its CPU is not measured)", flush=True)
    database = args.prefect_database_url.rsplit("/", 1)[1]
    http = PrefectHTTP(args.prefect_url, args.prefect_database_url, new_prefix("pf"))
    try:
        await http.create_pool("read", concurrency_limit=10)
        for name in ("create", "workers"):
            await http.create_pool(name)
        await http.seed_poll_pool("poll", 5, args.runs)
        names = itertools.count()

        async def read() -> None:
            await http.read_pool("read")

        async def create() -> None:
            await http.create_queue("create", f"q{next(names)}")

        async def heartbeat() -> None:
            await http.heartbeat("workers", f"worker-{next(names) % 1000}")

        async def poll() -> None:
            http.runs_polled += len(await http.poll("poll", 10))

        for key, op in (
            ("read_c1", read),
            ("read_c32", read),
            ("create_c32", create),
            ("heartbeat_c32", heartbeat),
            ("poll_c1", poll),
            ("poll_c32", poll),
        ):
            http.runs_polled = 0
            row = await run.measure("Prefect", key, op, pids, database, PREFECT_PLAN)
            if key.startswith("poll"):
                row["runs_per_poll"] = http.runs_polled / max(1, row["ok"])
                print(f"    Prefect: {row['runs_per_poll']:.1f} runs per poll (warm-up included)", flush=True)
            if key == "create_c32":
                row["duplicates"], row["queues"] = await http.duplicate_priorities("create")
                print(f"    Prefect: {row['duplicates']} of {row['queues']} queues share a priority", flush=True)
    finally:
        await http.close()


def report(run: Run) -> None:
    floor_row = run.find("floor", "echo_c32") or run.find("floor", "echo_c1")
    floor_ms = floor_row["server_ms"] if floor_row else math.nan
    floor_ops = floor_row["ops_per_s"] if floor_row else math.nan
    print_table(
        "One run: the floor (echo), workpools (1 replica) and Prefect",
        [
            "system",
            "case",
            "conc.",
            "ops/s",
            "× floor ops/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "server CPU ms/op",
            "× floor CPU",
            "redis ms/op",
            "pg ms/op",
            "others (cores)",
        ],
        [
            [
                r["system"],
                r["case"],
                r["concurrency"],
                fmt_float(r["ops_per_s"], 0),
                fmt_float(r["ops_per_s"] / floor_ops, 2) if r["concurrency"] > 1 else "",
                fmt_float(r["p50_ms"], 2),
                fmt_float(r["p99_ms"], 2),
                r["errors"],
                fmt_float(r["server_ms"], 3),
                fmt_float(r["server_ms"] / floor_ms, 2),
                fmt_float(r["redis_ms"], 3),
                fmt_float(r["pg_ms"], 3),
                fmt_float(r["other_cores"], 2),
            ]
            for r in run.rows
        ],
        right_align=["conc.", "ops/s", "× floor ops/s", "p50 ms", "p99 ms", "errors", "server CPU ms/op"]
        + ["× floor CPU", "redis ms/op", "pg ms/op", "others (cores)"],
        caption="server CPU = the echo replica's, the workpools replica's, or the Prefect server's processes; "
        "× floor = divided by the echo at concurrency 32 (CPU per request, or ops/s). pg = the system's own "
        "database backends. others = cores the rest of the shared machine used meanwhile.",
    )
    targets = []

    def add(measure: str, ours: float, theirs: float, target: str, ok: bool | None) -> None:
        targets.append(
            [measure, fmt_float(ours, 2), fmt_float(theirs, 2), target, "" if ok is None else "✓" if ok else "✗"]
        )

    for key, limit in (("read_c32", 1.5), ("poll_c32", 3.0), ("create_c32", 3.0)):
        row = run.find("workpools", key)
        if row and floor_row:
            ratio = row["server_ms"] / floor_ms
            add(f"replica CPU per {key} ÷ floor's", row["server_ms"], floor_ms, f"≤ {limit}×", ratio <= limit)
    for key, what, limit, better in (
        ("read_c32", "ops_per_s", 8, "higher"),
        ("read_c1", "p50_ms", 5, "lower"),
        ("create_c32", "ops_per_s", 5, "higher"),
        ("heartbeat_c32", "ops_per_s", None, "higher"),
        ("poll_c1", "p50_ms", None, "lower"),
        ("poll_c32", "ops_per_s", 15, "higher"),
    ):
        ours, theirs = run.find("workpools", key), run.find("Prefect", key)
        if ours and theirs:
            ratio = ours[what] / theirs[what] if better == "higher" else theirs[what] / ours[what]
            label = f"{key} {what}: workpools vs Prefect ({ratio:.1f}×)"
            if key == "create_c32":
                label += f"; Prefect duplicate priorities {theirs.get('duplicates')} of {theirs.get('queues')}"
            add(label, ours[what], theirs[what], f"≥ {limit}×" if limit else "", ratio >= limit if limit else None)
    small, large = run.find("workpools", "create_into_10"), run.find("workpools", "create_into_1000")
    if small and large:
        ratio = large["ops_per_s"] / small["ops_per_s"]
        add(
            f"create ops/s into 1,000 queues ÷ into 10 ({ratio:.2f}); CPU/op {large['server_ms']:.2f} vs {small['server_ms']:.2f} ms",
            large["ops_per_s"],
            small["ops_per_s"],
            "≥ 0.8",
            ratio >= 0.8,
        )
    print_table(
        "Issue 14 targets (this run)",
        ["measure", "workpools", "floor / Prefect / into 10", "target", "met"],
        targets,
        right_align=["workpools", "floor / Prefect / into 10"],
    )


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    parts = args.only or ["floor", "workpools", "prefect"]
    run = Run(args)
    if "floor" in parts:
        print("[floor] echo replica", flush=True)
        await floor(run)
    if "workpools" in parts:
        for rev in args.compare:
            sha, directory = export_revision(rev)
            try:
                await workpools(run, f"wp@{sha}", directory)
            finally:
                shutil.rmtree(directory, ignore_errors=True)
        await workpools(run)
    if "prefect" in parts and args.prefect_url:
        print(f"[Prefect] {args.prefect_url}", flush=True)
        await prefect(run)
    report(run)
    if args.json:
        args.json.write_text(json.dumps(run.rows, indent=2, default=str))
    return 1 if any(r["errors"] for r in run.rows) else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
