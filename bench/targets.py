"""Issue 14's targets in one run: the transport's floor, workpools (at one or more revisions)
and Prefect, measured side by side.

    .venv/bin/python bench/targets.py [--prefect-url http://127.0.0.1:4200/api] [--compare REV ...]
                                      [--without-metrics] [--pipelined-floor] [--scale 1.0] [--rounds 3]

Systems, all started first and kept running:

  floor      bench/echo.py, a replica that only echoes (same broker, envelope, stream settings
             and event loop as `workpools serve`, no database), answering through FastStream;
  floor-piped  with --pipelined-floor, the echo reading and answering as a replica does (each
             request in a task the reading task starts; its reply and XACK pipelined with the
             loop turn's others): the floor of the replica's own transport path;
  workpools  1 replica of this checkout (fresh database); with --compare, one more replica per
             revision (exported with git archive, its own database), labelled wp@<sha>;
  Prefect    with --prefect-url, its HTTP API (start it as bench/prefect_http.py says);
  wp-nometrics  with --without-metrics, one more replica of this checkout with
             WORKPOOLS_HTTP_ENABLED=false (no metrics collected): the cost of metrics, measured
             in the same alternating rounds.

Cases: request/reply at concurrency 1 and 32 (the floor's echo beside the pool read), create
queue at 32 into ONE pool, heartbeat at 32, poll (10,000 scheduled runs over 5 queues, limit 10)
at 1 and 32, and create queue at 32 into a pool that starts with 10 queues and one that starts
with 1,000. Each case is measured in `--rounds` short rounds, the systems taking turns within
each round, so a shared machine's drift hits them alike. Every row gives ops/s, p50/p99 and the
server's CPU per operation from /proc (the replica's, the echo's or the Prefect server's
processes) — the robust figure — also as a multiple of the floor's CPU per request; then issue
14's targets table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import shutil
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy.engine import make_url

from bench import echo
from bench.cpu import CpuMeter, wait_for_quiet
from bench.housekeeping import asyncpg_dsn, delete_prefix_keys, drop_database, new_prefix
from bench.latency import percentile, run_load
from bench.options import DEFAULT_DATABASE_URL, parse_bench_args
from bench.prefect_http import PrefectHTTP, server_pids
from bench.replicas import ReplicaSet
from bench.revision import export_revision, serve_revision_options
from bench.seed import create_priority_pool, seed_scheduled_runs
from bench.tables import fmt_float, print_table
from client import WorkPoolClient
from client.transport import RpcTransport

PREFECT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/prefect_bench"

Op = Callable[[], Awaitable[Any]]

# (concurrency, requests, warm-up) per case, over all rounds; multiplied by --scale.
PLAN = {
    "echo_c1": (1, 1500, 200),
    "echo_c32": (32, 6000, 1000),
    "read_c1": (1, 1500, 200),
    "read_c32": (32, 6000, 1000),
    "create_c32": (32, 1500, 100),
    "heartbeat_c32": (32, 4000, 1000),
    "poll_c1": (1, 300, 30),
    "poll_c32": (32, 1500, 100),
    "create_into_10": (32, 1200, 100),
    "create_into_1000": (32, 1200, 100),
}
PREFECT_PLAN = {  # Prefect serves several times fewer requests: fewer, at the same concurrency
    "read_c1": (1, 300, 50),
    "read_c32": (32, 1000, 100),
    "create_c32": (32, 600, 0),
    "heartbeat_c32": (32, 1000, 100),
    "poll_c1": (1, 100, 10),
    "poll_c32": (32, 300, 30),
}
GROUPS = (
    ("echo_c1", "read_c1"),
    ("echo_c32", "read_c32"),
    ("create_c32",),
    ("heartbeat_c32",),
    ("poll_c1",),
    ("poll_c32",),
    ("create_into_10", "create_into_1000"),
)
"""Cases measured together, round by round (the floor's echo beside the read it is compared with)."""

SEED_QUEUES = """
INSERT INTO work_queue (id, created, updated, work_pool_id, name, description, is_paused, priority, status)
SELECT gen_random_uuid(), now(), now(), p.id, 'seeded-' || k, '', false, k, 'NOT_READY'
  FROM work_pool p CROSS JOIN generate_series(2, $2) AS k
 WHERE p.name = $1
"""

DUPLICATES = """
SELECT count(*) - count(DISTINCT q.priority) FROM work_queue q JOIN work_pool p ON p.id = q.work_pool_id WHERE p.name = $1
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefect-url", default=None, help="Prefect server API, e.g. http://127.0.0.1:4200/api")
    parser.add_argument(
        "--prefect-database-url",
        default=PREFECT_DATABASE_URL,
        help=f"the Prefect server's database, for seeding runs and counting priorities (default {PREFECT_DATABASE_URL})",
    )
    parser.add_argument(
        "--compare",
        nargs="+",
        default=[],
        metavar="REV",
        help="also measure workpools at these git revisions (exported with git archive), side by side",
    )
    parser.add_argument(
        "--without-metrics",
        action="store_true",
        help="also a replica of this checkout without metrics (WORKPOOLS_HTTP_ENABLED=false), as wp-nometrics",
    )
    parser.add_argument(
        "--pipelined-floor",
        action="store_true",
        help="also the echo reading and answering as a replica does (task per request, reply and XACK "
        "pipelined), as floor-piped",
    )
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every case's request count")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per case, the systems taking turns")
    parser.add_argument("--runs", type=int, default=10_000, help="scheduled runs in the poll pool")
    parser.add_argument("--cases", nargs="+", choices=list(PLAN), default=list(PLAN))
    parser.add_argument(
        "--database-url",
        default=DEFAULT_DATABASE_URL,
        help=f"workpools' benchmark database, dropped and recreated (default: {DEFAULT_DATABASE_URL}); "
        "a compared revision gets one named after it",
    )
    parser.add_argument("--quiet-wait", type=float, default=4.0, help="max seconds to wait for a quiet machine")
    return parse_bench_args(parser, argv)


@dataclass
class System:
    name: str
    pids: list[int]
    database: str | None
    ops: dict[str, Op]
    plan: dict[str, tuple[int, int, int]] = field(default_factory=lambda: PLAN)
    after: dict[str, Callable[[dict[str, Any]], Awaitable[None]]] = field(default_factory=dict)


@dataclass
class Tally:
    """One (system, case) over its rounds."""

    samples: list[float] = field(default_factory=list)
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    wall: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)

    def row(self, system: str, case: str, concurrency: int) -> dict[str, Any]:
        ok = len(self.samples)
        ordered = sorted(self.samples)

        def per_op(part: str) -> float:
            return 1000 * self.cpu.get(part, math.nan) / ok if ok else math.nan

        return {
            "system": system,
            "case": case,
            "concurrency": concurrency,
            "ok": ok,
            "errors": self.errors,
            "error_kinds": self.error_kinds,
            "ops_per_s": ok / self.seconds if self.seconds else math.nan,
            "p50_ms": percentile(ordered, 50) * 1000,
            "p99_ms": percentile(ordered, 99) * 1000,
            "server_ms": per_op("replicas"),
            "client_ms": per_op("client"),
            "redis_ms": per_op("redis"),
            "pg_ms": per_op("postgres"),
            "other_cores": self.cpu.get("other", math.nan) / self.wall if self.wall else math.nan,
        }


async def idle_cpu(systems: list[System], seconds: float) -> dict[str, float]:
    """Each system's CPU while nobody sends it anything (background loops, idle reads), in % of a core."""
    meters = {s.name: CpuMeter(s.pids) for s in systems}
    for meter in meters.values():
        meter.start()
    await asyncio.sleep(seconds)
    for meter in meters.values():
        meter.stop()
    return {name: meter.percent().get("replicas", math.nan) for name, meter in meters.items()}


async def measure(systems: list[System], args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    idle = await idle_cpu(systems, 10.0)
    print("  idle CPU (% of a core): " + ", ".join(f"{name} {pct:.1f}" for name, pct in idle.items()), flush=True)
    for system in systems:
        rows.append({"system": system.name, "case": "idle", "idle_cpu_percent": idle[system.name]})
    for group in GROUPS:
        entries = [(s, k) for k in group if k in args.cases for s in systems if k in s.ops]
        if not entries:
            continue
        if args.quiet_wait > 0:
            await wait_for_quiet(args.quiet_wait)
        tallies = {(s.name, k): Tally() for s, k in entries}
        for round_ in range(args.rounds):
            for system, key in entries:
                concurrency, requests, warmup = system.plan[key]
                requests = max(concurrency, int(requests * args.scale / args.rounds))
                warmup = int(warmup * args.scale) if round_ == 0 else 0
                meter = CpuMeter(system.pids, database=system.database)
                recorder = await run_load(
                    system.ops[key], requests=requests, concurrency=concurrency, warmup=warmup, meter=meter
                )
                tally = tallies[(system.name, key)]
                tally.samples += recorder.samples
                tally.errors += recorder.errors
                for kind, count in recorder.error_kinds.items():
                    tally.error_kinds[kind] = tally.error_kinds.get(kind, 0) + count
                tally.seconds += recorder.elapsed
                tally.wall += meter.wall
                for part, used in meter.used.items():
                    tally.cpu[part] = tally.cpu.get(part, 0.0) + used
        for system, key in entries:
            row = tallies[(system.name, key)].row(system.name, key, system.plan[key][0])
            if key in system.after:
                await system.after[key](row)
            rows.append(row)
            print(
                f"  {system.name:<12} {key:<17} c={row['concurrency']:<3} {row['ops_per_s']:>8.0f} ops/s  "
                f"p50 {row['p50_ms']:7.2f} ms  p99 {row['p99_ms']:7.2f} ms  server {row['server_ms']:.3f} ms/op  "
                f"errors {row['errors']}  (others used {row['other_cores']:.2f} cores)",
                flush=True,
            )
            for kind, count in list(row["error_kinds"].items())[:3]:
                print(f"    {count} x {kind}", flush=True)
    return rows


async def floor(stack: contextlib.AsyncExitStack, args: argparse.Namespace, pipelined: bool = False) -> System:
    """The echo (`name` floor); `pipelined`: the echo reading and answering as a replica does, as
    floor-piped (not the floor the targets are stated against)."""
    prefix = new_prefix("wpecho")
    stack.push_async_callback(delete_prefix_keys, args.redis_url, prefix)
    echoes = await stack.enter_async_context(
        ReplicaSet(
            1,
            prefix=prefix,
            database_url=args.database_url,
            redis_url=args.redis_url,
            command=echo.command(),
            streams=1,
            probe=echo.probe,
            env={echo.PIPELINED_ENV: "1"} if pipelined else None,
        )
    )
    transport = RpcTransport(args.redis_url, prefix, timeout=60)
    await transport.connect()
    stack.push_async_callback(transport.close)
    body = {"name": "read"}  # the pool read's request body

    async def op() -> None:
        status, _ = await transport.request(echo.ECHO, body)  # type: ignore[arg-type]
        if status != 200:
            raise RuntimeError(f"echo answered {status}")

    return System("floor-piped" if pipelined else "floor", echoes.pids, None, {"echo_c1": op, "echo_c32": op})


async def workpools(
    stack: contextlib.AsyncExitStack,
    args: argparse.Namespace,
    name: str,
    code: Path | None = None,
    env: dict[str, str] | None = None,
) -> System:
    """One replica of this checkout or (`code`) of a revision exported by bench.revision, with
    `env` added to its environment (then its own database, named after `name`)."""
    import asyncpg

    url = args.database_url
    if code is not None or env:
        suffix = name.split("@")[-1].replace("-", "_")
        url = make_url(url).set(database=f"{make_url(url).database}_{suffix}").render_as_string(False)
    await drop_database(url)
    if not args.keep_database:
        stack.push_async_callback(drop_database, url)
    prefix = new_prefix("wptarget")
    stack.push_async_callback(delete_prefix_keys, args.redis_url, prefix)
    # another revision may serve another set of operations: ready once it reads a stream and answers
    options: dict[str, Any] = {**serve_revision_options(code), "streams": 1} if code else {}
    if env:
        options["env"] = {**options.get("env", {}), **env}
    replicas = await stack.enter_async_context(
        ReplicaSet(1, prefix=prefix, database_url=url, redis_url=args.redis_url, **options)
    )
    client = await stack.enter_async_context(WorkPoolClient(redis_url=args.redis_url, prefix=prefix, timeout=60))
    print(f"[{name}] 1 replica, pid {replicas.pids}, logs {replicas.log_dir}", flush=True)
    await client.create_work_pool({"name": "read", "type": "process", "concurrency_limit": 10})
    for pool in ("create", "workers", "into-10", "into-1000"):
        await client.create_work_pool({"name": pool, "type": "process"})
    await create_priority_pool(client, "poll", 5)
    await seed_scheduled_runs(url, "poll", args.runs)
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await conn.execute(SEED_QUEUES, "into-10", 10)
        await conn.execute(SEED_QUEUES, "into-1000", 1000)
        await conn.execute("VACUUM ANALYZE work_queue")
    finally:
        await conn.close()
    names = itertools.count()

    async def read() -> None:
        await client.read_work_pool("read")

    def create(pool: str) -> Op:
        async def op() -> None:
            await client.create_work_queue(pool, {"name": f"q{next(names)}"})

        return op

    async def heartbeat() -> None:
        await client.send_worker_heartbeat("workers", f"worker-{next(names) % 1000}", 30)

    async def poll() -> None:
        runs = await client.get_scheduled_flow_runs_for_work_pool("poll", limit=10)
        if len(runs) != 10:
            raise RuntimeError(f"poll returned {len(runs)} runs")

    async def unique_priorities(row: dict[str, Any]) -> None:
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            row["duplicates"] = await conn.fetchval(DUPLICATES, "create")
        finally:
            await conn.close()

    ops = {
        "read_c1": read,
        "read_c32": read,
        "create_c32": create("create"),
        "heartbeat_c32": heartbeat,
        "poll_c1": poll,
        "poll_c32": poll,
        "create_into_10": create("into-10"),
        "create_into_1000": create("into-1000"),
    }
    database = make_url(url).database
    return System(name, replicas.pids, database, ops, after={"create_c32": unique_priorities})


async def prefect(stack: contextlib.AsyncExitStack, args: argparse.Namespace) -> System:
    port = int(args.prefect_url.split(":")[-1].split("/")[0])
    pids = server_pids(port)
    if not pids:
        print(f"  (no Prefect server process found for port {port}: its CPU is not measured)", flush=True)
    http = PrefectHTTP(args.prefect_url, args.prefect_database_url, new_prefix("pf"))
    stack.push_async_callback(http.close)
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
        http.polls += 1

    async def duplicates(row: dict[str, Any]) -> None:
        row["duplicates"], row["queues"] = await http.duplicate_priorities("create")

    async def runs_per_poll(row: dict[str, Any]) -> None:
        row["runs_per_poll"] = http.runs_polled / max(1, http.polls)

    ops = {
        "read_c1": read,
        "read_c32": read,
        "create_c32": create,
        "heartbeat_c32": heartbeat,
        "poll_c1": poll,
        "poll_c32": poll,
    }
    database = make_url(args.prefect_database_url).database
    after = {"create_c32": duplicates, "poll_c32": runs_per_poll}
    return System("Prefect", pids, database, ops, PREFECT_PLAN, after)


def report(rows: list[dict[str, Any]]) -> None:
    def find(system: str, key: str) -> dict[str, Any] | None:
        return next((r for r in rows if r["system"] == system and r["case"] == key), None)

    idle = [r for r in rows if r["case"] == "idle"]
    rows = [r for r in rows if r["case"] != "idle"]
    if idle:
        print_table(
            "Idle: CPU while nothing is sent (background loops, idle stream reads)",
            ["system", "% of a core"],
            [[r["system"], fmt_float(r["idle_cpu_percent"], 1)] for r in idle],
            right_align=["% of a core"],
        )
    floor_row = find("floor", "echo_c32")
    floor_ms = floor_row["server_ms"] if floor_row else math.nan
    floor_ops = floor_row["ops_per_s"] if floor_row else math.nan
    columns = ["system", "case", "conc.", "ops/s", "× floor ops/s", "p50 ms", "p99 ms", "errors"]
    numbers = ["server CPU ms/op", "× floor CPU", "redis ms/op", "pg ms/op", "others (cores)"]
    print_table(
        "One run: the floor (echo), workpools (1 replica) and Prefect",
        columns + numbers,
        [
            [
                r["system"],
                r["case"] + (f" (dup. prio. {r['duplicates']})" if "duplicates" in r else ""),
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
            for r in rows
        ],
        right_align=columns[2:] + numbers,
        caption="server CPU = the echo replica's, the workpools replica's, or the Prefect server's processes; "
        "× floor = divided by the floor's echo at concurrency 32 (CPU per request, or ops/s). pg = the system's "
        "own database backends; redis = the shared redis-server (other sessions' traffic included). others = "
        "cores the rest of the shared machine used meanwhile.",
    )
    targets: list[list[str]] = []

    def add(measure: str, ours: float, theirs: float, target: str, ok: bool | None) -> None:
        mark = "" if ok is None else "✓" if ok else "✗"
        targets.append([measure, fmt_float(ours, 2), fmt_float(theirs, 2), target, mark])

    for key, limit in (("read_c32", 1.5), ("poll_c32", 3.0), ("create_c32", 3.0)):
        row = find("workpools", key)
        if row and floor_row:
            ratio = row["server_ms"] / floor_ms
            add(
                f"replica CPU ms per {key} ÷ floor's ({ratio:.2f}×)",
                row["server_ms"],
                floor_ms,
                f"≤ {limit}×",
                ratio <= limit,
            )
    piped = find("floor-piped", "echo_c32")
    read = find("workpools", "read_c32")
    if piped and read:  # the replica's transport path without the service: no target, for comparison
        ratio = read["server_ms"] / piped["server_ms"]
        add(
            f"replica CPU ms per read_c32 ÷ floor-piped's ({ratio:.2f}×)",
            read["server_ms"],
            piped["server_ms"],
            "",
            None,
        )
    for key, what, limit, better in (
        ("read_c32", "ops_per_s", 8, "higher"),
        ("read_c1", "p50_ms", 5, "lower"),
        ("create_c32", "ops_per_s", 5, "higher"),
        ("heartbeat_c32", "ops_per_s", None, "higher"),
        ("poll_c1", "p50_ms", None, "lower"),
        ("poll_c32", "ops_per_s", 15, "higher"),
    ):
        ours, theirs = find("workpools", key), find("Prefect", key)
        if ours and theirs:
            ratio = ours[what] / theirs[what] if better == "higher" else theirs[what] / ours[what]
            label = f"{key} {what}: workpools vs Prefect ({ratio:.1f}×)"
            if key == "create_c32":
                label += f"; duplicate priorities: ours {ours.get('duplicates')}, Prefect {theirs.get('duplicates')} of {theirs.get('queues')}"
            add(label, ours[what], theirs[what], f"≥ {limit}×" if limit else "", ratio >= limit if limit else None)
    small, large = find("workpools", "create_into_10"), find("workpools", "create_into_1000")
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
    exported: list[Path] = []
    rows: list[dict[str, Any]] = []
    try:
        async with contextlib.AsyncExitStack() as stack:
            systems = [await floor(stack, args)]
            if args.pipelined_floor:
                systems.append(await floor(stack, args, pipelined=True))
            for rev in args.compare:
                sha, directory = export_revision(rev)
                exported.append(directory)
                systems.append(await workpools(stack, args, f"wp@{sha}", directory))
            systems.append(await workpools(stack, args, "workpools"))
            if args.without_metrics:
                systems.append(await workpools(stack, args, "wp-nometrics", env={"WORKPOOLS_HTTP_ENABLED": "false"}))
            if args.prefect_url:
                systems.append(await prefect(stack, args))
            rows = await measure(systems, args)
    finally:
        for directory in exported:
            shutil.rmtree(directory, ignore_errors=True)
    report(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=str))
    return 1 if any(r.get("errors") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
