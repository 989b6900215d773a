"""Worker heartbeats and polls over the worker channel (Redis pub/sub), 1 and 2 replicas.

    .venv/bin/python bench/workers.py [--replicas 1 2] [--workers 10000] [--rate 10000] [--seconds 10]
                                      [--burst 100000] [--profile SECONDS [--profiler py-spy|cpu]]
                                      [--code worktree|HEAD|<rev>]

For each replica count: a fresh database, N `workpools serve` subprocesses, a pool (5 queues,
10,000 scheduled runs for the polls) and this process as the publisher. Heartbeats are plain
JSON published with a raw redis-py client in pipelines on `{prefix}.workers.heartbeat`:

    {"message_id": "<unique>", "work_pool_name": "bench-hb", "worker_name": "w<i>", "heartbeat_interval_seconds": 30}

10,000 distinct workers, round robin. The interval doubles as a tag the database keeps: each
worker's last message of a phase says 31 (paced) or 32 (burst), and the 200 sampled workers'
messages say 1000 + k for their k-th message, so the database shows exactly which beat it holds.
Phases:

  * paced:  --rate heartbeats/s for --seconds (10,000/s for 10 s: each worker beats once a
            second; the worker table starts empty, so the first second inserts);
  * burst:  --burst heartbeats unpaced (pipelines of 1,000), as fast as this process can publish
            (kept below Redis's 32 MB pub/sub output-buffer limit: 100,000 ≈ 15 MB);
  * polls:  `WorkerClient.get_scheduled_flow_runs(limit=10)`, 32 WorkerClients at concurrency 32.

Measured for each heartbeat phase:
  * published/s actually achieved (and PUBLISH receivers = replicas x messages);
  * recorded: every worker's row holds its last message (its tag, and last_heartbeat_time >= its
    publish time; polled until true, bounded); "ingest/s" = messages / time until then;
    last beat claimed: the claim key (`{prefix}.seen.<blake2b of the message>`) of each worker's
    last message exists in Redis, i.e. a replica received and took it (not lost in pub/sub);
  * visibility: for 200 sampled workers, every heartbeat's time from publish until PostgreSQL
    shows it or a newer beat of that worker (the DB polled every 20 ms): p50/p99/max and the
    share within 2 s; plus, for all workers' last beat, last_heartbeat_time - publish time
    (the flush lag: when the recording transaction started; commit comes a little later);
  * database writes per heartbeat: rows inserted + updated in table `worker`
    (pg_stat_user_tables n_tup_ins + n_tup_upd; HOT updates shown), rows in all tables, and
    transactions (pg_stat_database.xact_commit, minus this benchmark's own queries, minus the
    replicas' background loops ≈ 0.5/s each) per 1,000 heartbeats. PostgreSQL 15 publishes
    these counters lazily (up to 10 s after a backend's last transaction), so they are read
    10.5 s after the last heartbeat was recorded (pg_stat_statements is not loaded here);
  * CPU per heartbeat of each process (replicas, this publisher, redis, postgres), the largest
    pub/sub backlog Redis held for a replica (CLIENT LIST omem).

--profile S adds, per replica count, a paced window of S seconds at --profile-rate, profiled in
every replica and in this publisher (--profiler py-spy: wall clock, idle excluded, non-blocking;
--profiler cpu: bench/profiling.py's CPU-time sampler, exact on a busy machine), summarised by
entry point, owner and hottest frames. Redis keys (`prefix*`) are deleted after each replica count, the database at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import sys
import tempfile
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from redis.asyncio import Redis

from bench.cpu import CpuMeter, wait_for_quiet
from bench.housekeeping import asyncpg_dsn, check_bench_database, delete_prefix_keys, drop_database, new_prefix
from bench.latency import percentile, run_load
from bench.options import parse_bench_args
from bench.pg_stats import PG_STATS_IDLE_FLUSH, all_table_writes, settled, table_writes
from bench.profilers import Profiler
from bench.profiling import entry_points
from bench.replicas import ReplicaSet, log_warnings
from bench.revision import code_version, remove_exported_code, run_on_code
from bench.seed import create_priority_pool, seed_scheduled_runs
from bench.tables import fmt_float, print_cpu_table, print_table
from bench.worker_polls import PubSubBacklog, WorkerPollers

if __name__ == "__main__":
    run_on_code("workers.py")  # --code REV: re-executes on that revision (before the project is imported)

from client import WorkPoolClient
from schemas.channels import Channels

DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/workpools_bench_workers"
POOL = "bench-hb"
TARGET_RATE = 10_000
TARGET_VISIBLE_S = 2.0
PREFECT_HEARTBEATS = 182
BACKGROUND_TX_PER_REPLICA_S = 0.5  # outbox sweep every 2 s (settings.outbox_sweep_seconds)
PHASE_TAGS = {"paced": 31, "burst": 32, "profile": 33}
RATE_TOLERANCE = 0.99  # a paced publisher at exactly the target rate ends a pipeline round trip late
LOG_NEEDLES = ("could not record", "channel lost", "Traceback", "ERROR")


# --------------------------------------------------------------------------------------------
# Publisher and samplers


class Publisher:
    """Plain JSON heartbeats on the worker channel, pipelined with a raw redis-py client.

    Every message is `{"message_id", "work_pool_name", "worker_name", "heartbeat_interval_seconds"}`
    with interval 30, except that the interval doubles as a tag PostgreSQL keeps (the replicas store
    it as sent), so the database shows exactly which beat it holds: each worker's last message of
    a phase carries the phase's tag (31, 32, ...), and the sampled workers carry 1000 + their
    message count. (A time comparison alone cannot tell the last beat from an earlier one that a
    lagging replica records after the last publish.)"""

    def __init__(self, redis_url: str, channel: str, pool: str, workers: int, sampled: set[int]) -> None:
        self.redis = Redis.from_url(redis_url)
        self.channel = channel
        self.workers = workers
        self.pool_json = json.dumps(pool)
        self.tag = uuid.uuid4().hex[:10]
        self.sampled = sampled
        self.sample_k = {i: 0 for i in sampled}
        self.seq = 0
        self.sent = 0
        self.receivers = 0
        self.phase_tag = 30
        self.last_from = 0
        self.last_pub = [0.0] * workers  # wall time each worker's last message was sent
        self.last_msg = [""] * workers
        self.last_tag = [0] * workers
        self.sampler: VisibilitySampler | None = None

    def begin_phase(self, total: int, phase_tag: int) -> None:
        """The next `total` messages are one phase; the last message of each worker carries
        `phase_tag` (round robin: the phase's last `workers` messages)."""
        self.phase_tag = phase_tag
        self.last_from = self.seq + total - self.workers
        self.last_pub = [0.0] * self.workers
        self.last_msg = [""] * self.workers
        self.last_tag = [0] * self.workers

    async def send(self, n: int) -> None:
        pipe = self.redis.pipeline(transaction=False)
        batch = []
        workers, tag, pool, sampled, sample_k = self.workers, self.tag, self.pool_json, self.sampled, self.sample_k
        for _ in range(n):
            seq = self.seq
            self.seq += 1
            i = seq % workers
            if i in sampled:
                sample_k[i] += 1
                interval = 1000 + sample_k[i]
            elif seq >= self.last_from:
                interval = self.phase_tag
            else:
                interval = 30
            message = (
                f'{{"message_id": "{tag}-{seq}", "work_pool_name": {pool}, "worker_name": "w{i}", '
                f'"heartbeat_interval_seconds": {interval}}}'
            )
            pipe.publish(self.channel, message)
            batch.append((i, message, interval))
        t = time.time()
        receivers = await pipe.execute()
        self.receivers += sum(receivers)
        self.sent += n
        last_pub, last_msg, last_tag, sampler = self.last_pub, self.last_msg, self.last_tag, self.sampler
        for i, message, interval in batch:
            last_pub[i] = t
            last_msg[i] = message
            last_tag[i] = interval
            if sampler is not None and i in sampled:
                sampler.published(i, interval - 1000, t)

    async def paced(self, rate: float, total: int, max_pipeline: int = 2000) -> float:
        """Publish `total` messages at `rate`/s (catching up in larger pipelines when late)."""
        start = time.perf_counter()
        done = 0
        while done < total:
            due = min(total, int((time.perf_counter() - start) * rate) + 1) - done
            if due <= 0:
                await asyncio.sleep(0.002)
                continue
            n = min(due, max_pipeline)
            await self.send(n)
            done += n
        return time.perf_counter() - start

    async def burst(self, total: int, pipeline: int = 1000) -> float:
        start = time.perf_counter()
        done = 0
        while done < total:
            n = min(pipeline, total - done)
            await self.send(n)
            done += n
        return time.perf_counter() - start

    def claim_keys(self, channels: Channels) -> list[str]:
        """The claim key of each worker's last message (as handlers/worker_channel.py names it)."""
        return [channels.seen(hashlib.blake2b(m.encode(), digest_size=12).hexdigest()) for m in self.last_msg if m]

    async def close(self) -> None:
        await self.redis.aclose()


class VisibilitySampler:
    """Polls PostgreSQL every `every` s for the sampled workers. Their k-th message carries
    interval 1000 + k: once the database shows 1000 + j, messages 1..j are visible (recorded or
    superseded by a newer beat); latency = that observation - the message's publish time."""

    def __init__(self, conn: Any, pool_id: Any, worker_indexes: list[int], every: float = 0.02) -> None:
        self.conn, self.pool_id, self.every = conn, pool_id, every
        self.index = {i: f"w{i}" for i in worker_indexes}
        self.names = list(self.index.values())
        self.pending: dict[str, deque] = {name: deque() for name in self.names}
        self.latencies: list[float] = []
        self.queries = 0
        self._task: asyncio.Task | None = None

    def published(self, i: int, k: int, t: float) -> None:
        self.pending[self.index[i]].append((k, t))

    async def observe(self) -> None:
        rows = await self.conn.fetch(
            "SELECT name, heartbeat_interval_seconds FROM worker WHERE work_pool_id = $1 AND name = any($2::text[])",
            self.pool_id,
            self.names,
        )
        self.queries += 1
        seen = time.time()
        for name, interval in rows:
            if interval is None or interval < 1000:
                continue
            queue = self.pending[name]
            while queue and queue[0][0] <= interval - 1000:
                self.latencies.append(seen - queue.popleft()[1])

    async def _run(self) -> None:
        while True:
            await self.observe()
            await asyncio.sleep(self.every)

    def start(self) -> None:
        self.latencies.clear()
        for queue in self.pending.values():
            queue.clear()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> int:
        """Stop; one last observation; returns the heartbeats still not visible."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.observe()
        return sum(len(q) for q in self.pending.values())


class Counted:
    """An asyncpg connection that counts the statements this benchmark runs on it."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.statements = 0

    async def fetch(self, *args: Any) -> Any:
        self.statements += 1
        return await self.conn.fetch(*args)

    async def fetchval(self, *args: Any) -> Any:
        self.statements += 1
        return await self.conn.fetchval(*args)

    async def fetchrow(self, *args: Any) -> Any:
        self.statements += 1
        return await self.conn.fetchrow(*args)

    async def flush_stats(self) -> None:
        """Publish this backend's statistics now (PostgreSQL 15)."""
        await self.fetchval("SELECT pg_stat_force_next_flush()")


# --------------------------------------------------------------------------------------------
# One heartbeat phase


@dataclass
class Context:
    args: argparse.Namespace
    replicas: int
    replica_set: ReplicaSet
    channels: Channels
    publisher: Publisher
    sampler: VisibilitySampler
    db: Counted  # bench database: checks, table statistics
    sample_db: Counted  # bench database: the visibility sampler
    admin: Any  # database `postgres`: pg_stat_database for the bench database
    pool_id: Any
    dbname: str
    profile_dir: Path | None = None  # where replicas under the CPU sampler write their profiles
    own_backends: tuple[int, ...] = ()  # this benchmark's PostgreSQL backends (not the workload's cost)
    last_activity: float = field(default_factory=time.monotonic)


async def recorded_count(ctx: Context, indexes: list[int]) -> int:
    """Workers whose row holds their last message: its tag, and a time after its publish."""
    names = [f"w{i}" for i in indexes]
    times = [ctx.publisher.last_pub[i] for i in indexes]
    tags = [ctx.publisher.last_tag[i] for i in indexes]
    return await ctx.db.fetchval(
        "SELECT count(*) FROM unnest($1::text[], $2::float8[], $3::int[]) AS p(name, t, tag) "
        "JOIN worker w ON w.work_pool_id = $4 AND w.name = p.name "
        "WHERE w.heartbeat_interval_seconds = p.tag AND w.last_heartbeat_time >= to_timestamp(p.t)",
        names,
        times,
        tags,
        ctx.pool_id,
    )


async def existing_keys(redis: Redis, keys: list[str]) -> set[str]:
    found: set[str] = set()
    for i in range(0, len(keys), 2000):
        chunk = keys[i : i + 2000]
        pipe = redis.pipeline(transaction=False)
        for key in chunk:
            pipe.exists(key)
        found.update(key for key, there in zip(chunk, await pipe.execute(), strict=True) if there)
    return found


async def not_recorded(ctx: Context, indexes: list[int]) -> dict[str, int]:
    """Why workers' rows do not hold their last message: no row; last_heartbeat_time before the
    last publish (the last beat was not written); or a time after it but an earlier message's
    content (an older beat written after the last one: out of order)."""
    names = [f"w{i}" for i in indexes]
    times = [ctx.publisher.last_pub[i] for i in indexes]
    tags = [ctx.publisher.last_tag[i] for i in indexes]
    row = await ctx.db.fetchrow(
        "SELECT count(*) FILTER (WHERE w.id IS NULL), "
        "       count(*) FILTER (WHERE w.last_heartbeat_time < to_timestamp(p.t)), "
        "       count(*) FILTER (WHERE w.last_heartbeat_time >= to_timestamp(p.t) "
        "                          AND w.heartbeat_interval_seconds IS DISTINCT FROM p.tag) "
        "  FROM unnest($1::text[], $2::float8[], $3::int[]) AS p(name, t, tag) "
        "  LEFT JOIN worker w ON w.work_pool_id = $4 AND w.name = p.name",
        names,
        times,
        tags,
        ctx.pool_id,
    )
    return {"no row": row[0], "last beat not written": row[1], "older beat written after it": row[2]}


async def stats_snapshot(ctx: Context, not_before: float | None) -> dict[str, Any]:
    """Row and transaction counters once PostgreSQL has published them (bounded wait)."""
    await ctx.db.flush_stats()
    await ctx.sample_db.flush_stats()

    async def read() -> tuple:
        writes = await table_writes(ctx.db, "worker")
        return writes["ins"], writes["upd"], writes["hot_upd"], await all_table_writes(ctx.db)

    (ins, upd, hot, total), stable, waited = await settled(
        read, quiet=1.0, max_wait=PG_STATS_IDLE_FLUSH + 4, not_before=not_before
    )
    await ctx.db.flush_stats()
    commits = await ctx.admin.fetchval("SELECT xact_commit FROM pg_stat_database WHERE datname = $1", ctx.dbname)
    return {
        "ins": ins,
        "upd": upd,
        "hot_upd": hot,
        "all_rows": total,
        "commits": int(commits),
        "own": ctx.db.statements + ctx.sample_db.statements,
        "stable": stable,
        "waited": waited,
        "t": time.monotonic(),
    }


async def heartbeat_phase(ctx: Context, kind: str, baseline: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    args, publisher = ctx.args, ctx.publisher
    total = int(args.rate * args.seconds) if kind == "paced" else args.burst
    if args.quiet_wait > 0:
        busy = await wait_for_quiet(args.quiet_wait)
        if busy >= 0.3:
            print(f"  (machine still busy before the {kind} heartbeats: {busy:.2f} cores in use)", flush=True)
    meter = CpuMeter(ctx.replica_set.pids, database=ctx.dbname, exclude_backends=ctx.own_backends)
    per_replica = [CpuMeter([pid]) for pid in ctx.replica_set.pids]
    backlog = PubSubBacklog(args.redis_url, f"workpools-{ctx.replica_set.prefix}-r")
    sent0, receivers0 = publisher.sent, publisher.receivers
    publisher.begin_phase(total, PHASE_TAGS[kind])
    publisher.sampler = ctx.sampler
    backlog.start()
    ctx.sampler.start()
    for m in (meter, *per_replica):
        m.start()
    t0 = time.monotonic()
    publish_s = await (publisher.paced(args.rate, total) if kind == "paced" else publisher.burst(total))
    publisher.sampler = None
    # Recorded: every worker's row holds its last message. Meanwhile, every 2 s, which last
    # messages a replica has claimed (claim keys live 10 s after the claim).
    indexes = [i for i, t in enumerate(publisher.last_pub) if t > 0]
    keys = publisher.claim_keys(ctx.channels)
    claimed_keys: set[str] = set()
    deadline = time.monotonic() + args.record_timeout
    recorded, progress, next_claim_check = -1, time.monotonic(), 0.0
    while True:
        now = time.monotonic()
        if now >= next_claim_check:
            claimed_keys |= await existing_keys(publisher.redis, [k for k in keys if k not in claimed_keys])
            next_claim_check = now + 2.0
        count = await recorded_count(ctx, indexes)
        if count != recorded:
            recorded, progress = count, time.monotonic()
        if recorded == len(indexes) or time.monotonic() > deadline or time.monotonic() - progress > 6:
            break
        await asyncio.sleep(0.1)
    t_recorded = time.monotonic()
    claimed_keys |= await existing_keys(publisher.redis, [k for k in keys if k not in claimed_keys])
    missing = await not_recorded(ctx, indexes) if recorded < len(indexes) else {}
    for m in (meter, *per_replica):
        m.stop()
    unseen = await ctx.sampler.stop()
    max_backlog = await backlog.stop()
    ctx.last_activity = t_recorded
    claimed = len(claimed_keys)
    # Flush lag of every worker's last beat.
    rows = await ctx.db.fetch(
        "SELECT name, extract(epoch FROM last_heartbeat_time)::float8 FROM worker WHERE work_pool_id = $1", ctx.pool_id
    )
    beats = {name: t for name, t in rows}
    lags = sorted(beats.get(f"w{i}", math.nan) - publisher.last_pub[i] for i in indexes)
    lags = [x for x in lags if not math.isnan(x)]
    after = await stats_snapshot(ctx, not_before=t_recorded + PG_STATS_IDLE_FLUSH)

    published = publisher.sent - sent0
    rows_worker = (after["ins"] - baseline["ins"]) + (after["upd"] - baseline["upd"])
    window = after["t"] - baseline["t"]
    background = BACKGROUND_TX_PER_REPLICA_S * ctx.replicas * window
    commits = after["commits"] - baseline["commits"] - (after["own"] - baseline["own"])
    visible = sorted(ctx.sampler.latencies)
    result = {
        "kind": kind,
        "replicas": ctx.replicas,
        "published": published,
        "publish_s": publish_s,
        "published_per_s": published / publish_s if publish_s else 0.0,
        "receivers": publisher.receivers - receivers0,
        "workers": len(indexes),
        "recorded": recorded,
        "record_s": t_recorded - t0,
        "ingest_per_s": published / (t_recorded - t0) if recorded == len(indexes) else math.nan,
        "claimed_last": claimed,
        "not_recorded": missing,
        "visible_samples": len(visible),
        "not_visible": unseen,
        "vis_p50_ms": percentile(visible, 50) * 1000,
        "vis_p99_ms": percentile(visible, 99) * 1000,
        "vis_max_ms": (visible[-1] * 1000) if visible else math.nan,
        "vis_within_2s": (sum(1 for v in visible if v <= TARGET_VISIBLE_S) / len(visible)) if visible else math.nan,
        "lag_p50_ms": percentile(lags, 50) * 1000,
        "lag_p99_ms": percentile(lags, 99) * 1000,
        "lag_max_ms": (lags[-1] * 1000) if lags else math.nan,
        "rows_worker": rows_worker,
        "rows_ins": after["ins"] - baseline["ins"],
        "rows_upd": after["upd"] - baseline["upd"],
        "rows_hot": after["hot_upd"] - baseline["hot_upd"],
        "rows_all": after["all_rows"] - baseline["all_rows"],
        "rows_per_hb": rows_worker / published if published else math.nan,
        "commits_gross": commits,
        "commits_background": background,
        "commits_per_1k_hb": 1000 * (commits - background) / published if published else math.nan,
        "stats_window_s": window,
        "stats_stable": after["stable"],
        "max_backlog_mb": max_backlog / 1e6,
        "meter": meter,
        "per_replica": per_replica,
        "cpu_us_per_hb": {k: 1000 * v for k, v in meter.ms_per_op(published).items()},
        "cpu_percent": meter.percent(),
        "replica_cpu_percent": [m.percent().get("replicas", math.nan) for m in per_replica],
        "replica_us_per_hb": [1000 * m.ms_per_op(published).get("replicas", math.nan) for m in per_replica],
    }
    ok = recorded == len(indexes)
    fanout = result["receivers"] / published if published else math.nan
    print(
        f"  heartbeats {kind:<6} {published:>7,} in {publish_s:5.2f} s = {result['published_per_s']:>8,.0f}/s "
        f"published (each to {fanout:.2f} subscribers); recorded {recorded:,}/{len(indexes):,} after {result['record_s']:.2f} s"
        f"{'' if ok else f' (NOT ALL: {missing})'}; last beats claimed {claimed:,}; visibility p50 "
        f"{result['vis_p50_ms']:.0f} ms p99 {result['vis_p99_ms']:.0f} ms max {result['vis_max_ms']:.0f} ms "
        f"({len(visible):,} samples, {unseen} not visible); rows/hb {result['rows_per_hb']:.3f}; "
        f"commits/1k hb {result['commits_per_1k_hb']:.2f}; backlog max {result['max_backlog_mb']:.1f} MB; "
        f"replica CPU {', '.join(f'{p:.0f} %' for p in result['replica_cpu_percent'])}",
        flush=True,
    )
    return result, after


# --------------------------------------------------------------------------------------------
# Profiling (py-spy)


async def profile_window(ctx: Context, seconds: float) -> dict[str, Any]:
    """A paced window at --profile-rate, profiled in every replica and in this publisher (see
    bench.profilers.Profiler: py-spy, or the CPU-time sampler with --profiler cpu)."""
    from bench.profiling import summarize

    args = ctx.args
    rate = args.profile_rate or args.rate
    profiler = Profiler(args.profiler, ctx.replica_set.pids, ctx.profile_dir)
    await profiler.start()
    meter = CpuMeter(ctx.replica_set.pids, database=ctx.dbname, exclude_backends=ctx.own_backends)
    per_replica = [CpuMeter([pid]) for pid in ctx.replica_set.pids]
    for m in (meter, *per_replica):
        m.start()
    sent0 = ctx.publisher.sent
    total = int(rate * seconds)
    ctx.publisher.begin_phase(total, PHASE_TAGS["profile"])
    publish_s = await ctx.publisher.paced(rate, total)
    indexes = [i for i, t in enumerate(ctx.publisher.last_pub) if t > 0]
    deadline = time.monotonic() + args.record_timeout
    while await recorded_count(ctx, indexes) < len(indexes) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    for m in (meter, *per_replica):
        m.stop()
    profiles = await profiler.stop()
    profiles = {("publisher" if name == "self" else name): samples for name, samples in profiles.items()}
    published = ctx.publisher.sent - sent0
    return {
        "replicas": ctx.replicas,
        "published": published,
        "published_per_s": published / publish_s,
        "rate": rate,
        "meter": meter,
        "per_replica": per_replica,
        "out": ctx.profile_dir,
        "errors": profiler.errors,
        "profiler": args.profiler,
        "summaries": {name: summarize(samples) for name, samples in profiles.items()},
        "entries": {name: entry_points(samples) for name, samples in profiles.items() if name != "publisher"},
    }


# --------------------------------------------------------------------------------------------
# One replica count


async def run_replicas(replicas: int, args: argparse.Namespace) -> dict[str, Any]:
    import asyncpg

    prefix = new_prefix("wpbwork")
    await drop_database(args.database_url)
    profile_dir = Path(tempfile.mkdtemp(prefix="workpools-workers-profile-")) if args.profile > 0 else None
    extra = Profiler.replica_options(args.profiler, profile_dir) if profile_dir else {}
    replica_set = ReplicaSet(replicas, prefix=prefix, database_url=args.database_url, redis_url=args.redis_url, **extra)
    out: dict[str, Any] = {"replicas": replicas, "heartbeats": [], "polls": None, "profile": None}
    dsn = asyncpg_dsn(args.database_url)
    try:
        async with replica_set:
            print(
                f"[{replicas} replica(s)] ready in {replica_set.ready_seconds:.1f} s; pids {replica_set.pids}, "
                f"prefix {prefix}, logs {replica_set.log_dir}",
                flush=True,
            )
            async with WorkPoolClient(redis_url=args.redis_url, prefix=prefix, timeout=30) as client:
                await create_priority_pool(client, POOL)
                await seed_scheduled_runs(args.database_url, POOL, args.runs)
                pool_id = (await client.read_work_pool(POOL)).id
            channels = Channels(prefix)
            step = max(1, args.workers // args.sample)
            sampled = list(range(0, args.workers, step))[: args.sample]
            publisher = Publisher(args.redis_url, channels.worker_heartbeats, POOL, args.workers, set(sampled))
            conns = [
                await asyncpg.connect(dsn),
                await asyncpg.connect(dsn),
                await asyncpg.connect(asyncpg_dsn(args.database_url).rsplit("/", 1)[0] + "/postgres"),
            ]
            try:
                db, sample_db = Counted(conns[0]), Counted(conns[1])
                sampler = VisibilitySampler(sample_db, pool_id, sampled)
                ctx = Context(
                    args=args,
                    replicas=replicas,
                    replica_set=replica_set,
                    channels=channels,
                    publisher=publisher,
                    sampler=sampler,
                    db=db,
                    sample_db=sample_db,
                    admin=conns[2],
                    pool_id=pool_id,
                    dbname=await db.fetchval("SELECT current_database()"),
                    profile_dir=profile_dir,
                )
                ctx.own_backends = (
                    await db.fetchval("SELECT pg_backend_pid()"),
                    await sample_db.fetchval("SELECT pg_backend_pid()"),
                )
                for conn in conns[:2]:
                    # Our lookups by worker name use the (pool, name) index even before the new
                    # table has statistics (a seq scan of the bloating table 50x/s would compete
                    # with the workload for the 2 cores).
                    await conn.execute("SET enable_seqscan = off")
                # Baseline once the setup's statistics are published (the worker table is empty).
                baseline = await stats_snapshot(ctx, not_before=time.monotonic() + PG_STATS_IDLE_FLUSH)
                if args.rate > 0 and args.seconds > 0:
                    result, baseline = await heartbeat_phase(ctx, "paced", baseline)
                    out["heartbeats"].append(result)
                if args.burst > 0:
                    result, baseline = await heartbeat_phase(ctx, "burst", baseline)
                    out["heartbeats"].append(result)
                if args.poll_requests > 0:
                    out["polls"] = await poll_phase(args, replica_set, replicas)
                if args.profile > 0:
                    out["profile"] = await profile_window(ctx, args.profile)
            finally:
                for conn in conns:
                    await conn.close()
                await publisher.close()
            out["log_warnings"] = dict(log_warnings(replica_set.log_paths, *LOG_NEEDLES))
    finally:
        deleted = await delete_prefix_keys(args.redis_url, prefix)
        print(f"  deleted {deleted} Redis keys {prefix}*; replica log matches {out.get('log_warnings')}", flush=True)
    return out


async def poll_phase(args: argparse.Namespace, replica_set: ReplicaSet, replicas: int) -> dict[str, Any]:
    async with WorkerPollers(args.redis_url, replica_set.prefix, POOL, args.concurrency, limit=10) as pollers:
        await run_load(pollers.op, requests=min(300, args.poll_requests), concurrency=args.concurrency)
        pollers.reset_counts()
        if args.quiet_wait > 0:
            busy = await wait_for_quiet(args.quiet_wait)
            if busy >= 0.3:
                print(f"  (machine still busy before the polls: {busy:.2f} cores in use)", flush=True)
        meter = CpuMeter(replica_set.pids, database=check_bench_database(args.database_url))
        recorder = await run_load(pollers.op, requests=args.poll_requests, concurrency=args.concurrency, meter=meter)
        runs_per_poll = pollers.runs / pollers.polls if pollers.polls else 0.0
    s = recorder.summary()
    print(
        f"  polls (worker pub/sub) c={args.concurrency} {s['ops_per_s']:>7.0f} polls/s  p50 {s['p50_ms']:.2f} ms  "
        f"p99 {s['p99_ms']:.2f} ms  errors {s['errors']}  runs/poll {runs_per_poll:.1f}",
        flush=True,
    )
    for kind, count in recorder.error_kinds.most_common(3):
        print(f"    {count} x {kind}", flush=True)
    return {
        **s,
        "replicas": replicas,
        "concurrency": args.concurrency,
        "runs_per_poll": runs_per_poll,
        "meter": meter,
        "error_kinds": dict(recorder.error_kinds),
    }


# --------------------------------------------------------------------------------------------
# Report


def heartbeat_target(r: dict[str, Any]) -> bool:
    return (
        r["published_per_s"] >= TARGET_RATE * RATE_TOLERANCE
        and r["recorded"] == r["workers"]
        and r["not_visible"] == 0
        and r["vis_max_ms"] <= TARGET_VISIBLE_S * 1000
    )


SHORT = {"no row": "no row", "last beat not written": "lost", "older beat written after it": "stale"}


def report(runs: list[dict[str, Any]], args: argparse.Namespace, version: str) -> None:
    rows = []
    for run in runs:
        for r in run["heartbeats"]:
            label = (
                f"heartbeats paced {args.rate:,.0f}/s"
                if r["kind"] == "paced"
                else f"heartbeats burst {args.burst:,} unpaced"
            )
            lost = r["workers"] - r["recorded"]
            rows.append(
                [
                    label + " (pub/sub)",
                    "1 pub.",
                    r["replicas"],
                    fmt_float(r["published_per_s"], 0),
                    fmt_float(r["vis_p50_ms"], 0),
                    fmt_float(r["vis_p99_ms"], 0),
                    lost + r["not_visible"],
                    f"{r['recorded']:,}/{r['workers']:,}"
                    + (
                        " (" + ", ".join(f"{v:,} {SHORT[k]}" for k, v in r["not_recorded"].items() if v) + ")"
                        if r["not_recorded"]
                        else ""
                    ),
                    f"{r['claimed_last']:,}",
                    fmt_float(r["vis_max_ms"], 0),
                    f"{100 * r['vis_within_2s']:.1f} %",
                    fmt_float(r["lag_p99_ms"], 0),
                    fmt_float(r["ingest_per_s"], 0),
                    fmt_float(r["rows_per_hb"], 3),
                    f"{r['rows_hot']:,}",
                    fmt_float(r["commits_per_1k_hb"], 2),
                    fmt_float(r["max_backlog_mb"], 1),
                    (f"≥ 10k/s, all, ≤ 2 s {'✓' if heartbeat_target(r) else '✗'}" if r["kind"] == "paced" else ""),
                    f"{PREFECT_HEARTBEATS}/s",
                ]
            )
        p = run["polls"]
        if p:
            rows.append(
                [
                    "polls limit=10 (worker pub/sub)",
                    p["concurrency"],
                    p["replicas"],
                    fmt_float(p["ops_per_s"], 0),
                    fmt_float(p["p50_ms"], 2),
                    fmt_float(p["p99_ms"], 2),
                    p["errors"],
                    f"runs/poll {p['runs_per_poll']:.1f}",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                ]
            )
    print_table(
        f"workpools worker channel: {args.workers:,} workers, Redis pub/sub (code {version})",
        [
            "operation",
            "concurrency",
            "replicas",
            "ops/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "recorded",
            "last claimed",
            "vis max ms",
            "vis ≤ 2 s",
            "lag p99 ms",
            "ingest/s",
            "rows/hb",
            "HOT upd",
            "tx/1k hb",
            "backlog MB",
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
            "recorded",
            "last claimed",
            "vis max ms",
            "vis ≤ 2 s",
            "lag p99 ms",
            "ingest/s",
            "rows/hb",
            "HOT upd",
            "tx/1k hb",
            "backlog MB",
        ],
        caption=(
            "Heartbeat rows: ops/s = heartbeats published per second (achieved); p50/p99/vis max = time from "
            "publish until PostgreSQL shows it (200 sampled workers, every beat, DB polled every 20 ms); "
            "errors = workers not recorded + sampled beats never visible; recorded = workers whose row "
            "holds their last message (its tag in heartbeat_interval_seconds, last_heartbeat_time ≥ its "
            "publish) — else lost (last_heartbeat_time before the last publish) or stale (a later time but "
            "an earlier beat's content: an older heartbeat written after the last one); target: published "
            "≥ 99 % of 10,000/s (paced exactly at the rate), all recorded, every sampled beat visible "
            "≤ 2 s; last claimed = last messages a replica took (Redis "
            "claim key); lag p99 = last_heartbeat_time - publish time of every worker's last beat; ingest/s "
            "= messages / time until all recorded; rows/hb = rows inserted+updated in `worker` per heartbeat "
            "(HOT upd: of which heap-only); tx/1k hb = transactions in the bench database per 1,000 "
            "heartbeats (net of this benchmark's queries and ~0.5/s/replica background); backlog = largest "
            "pub/sub output buffer Redis held for a replica. Prefect HTTP: its server here, heartbeats at "
            "concurrency 32."
        ),
    )
    cpu_rows = []
    for run in runs:
        for r in run["heartbeats"]:
            cpu_rows.append((f"heartbeats {r['kind']}", 1, r["replicas"], r["meter"], r["published"]))
        if run["polls"]:
            p = run["polls"]
            cpu_rows.append(("polls (worker pub/sub)", p["concurrency"], p["replicas"], p["meter"], p["ok"]))
    print_cpu_table(
        "CPU from the first publish until all recorded (heartbeats) / during the polls: % of one core | "
        "CPU ms per heartbeat or poll",
        cpu_rows,
        unit="op",
    )
    sat_rows = []
    for run in runs:
        for r in run["heartbeats"]:
            us = r["cpu_us_per_hb"]
            sat_rows.append(
                [
                    f"heartbeats {r['kind']}",
                    r["replicas"],
                    " / ".join(f"{p:.0f}" for p in r["replica_cpu_percent"]),
                    fmt_float(r["cpu_percent"].get("client"), 0),
                    fmt_float(r["cpu_percent"].get("redis"), 0),
                    fmt_float(r["cpu_percent"].get("postgres"), 0),
                    fmt_float(r["cpu_percent"].get("other"), 0),
                    " / ".join(f"{u:.1f}" for u in r["replica_us_per_hb"]),
                    fmt_float(us.get("client"), 1),
                    fmt_float(us.get("redis"), 1),
                    fmt_float(us.get("postgres"), 1),
                    f"{r['rows_ins']:,} / {r['rows_upd']:,} / {r['rows_all']:,}",
                    f"{r['commits_gross']:,} ({r['commits_background']:.0f} bg, "
                    f"{r['stats_window_s']:.0f} s{'' if r['stats_stable'] else ', unsettled'})",
                ]
            )
    print_table(
        "Per process: CPU % of one core (a single-threaded process near 100 % is saturated) and µs CPU per heartbeat",
        [
            "phase",
            "repl.",
            "replica % (each)",
            "publisher %",
            "redis %",
            "pg %",
            "other %",
            "replica µs/hb (each)",
            "publisher µs/hb",
            "redis µs/hb",
            "pg µs/hb",
            "worker ins / upd / all-table rows",
            "commits gross",
        ],
        sat_rows,
        right_align=[
            "repl.",
            "publisher %",
            "redis %",
            "pg %",
            "other %",
            "publisher µs/hb",
            "redis µs/hb",
            "pg µs/hb",
        ],
        caption="publisher = this process (pipelined PUBLISH + the visibility sampler + record checks); pg = the "
        "replicas' backends of the benchmark database (this benchmark's own query connections, e.g. the "
        "visibility sampler's 50 queries/s, are left out).",
    )
    for run in runs:
        prof = run.get("profile")
        if not prof:
            continue
        us = {
            f"replica-{i}": 1000 * m.ms_per_op(prof["published"]).get("replicas", math.nan)
            for i, m in enumerate(prof["per_replica"])
        }
        us["publisher"] = 1000 * prof["meter"].ms_per_op(prof["published"]).get("client", math.nan)
        pct = {f"replica-{i}": m.percent().get("replicas", math.nan) for i, m in enumerate(prof["per_replica"])}
        pct["publisher"] = prof["meter"].percent().get("client", math.nan)
        how = (
            "py-spy: wall clock, idle excluded (time runnable but waiting for a core counts too)"
            if prof["profiler"] == "py-spy"
            else "CPU-time sampler (SIGPROF, 2 ms of CPU)"
        )
        for name, summary in prof["summaries"].items():
            total_us = us.get(name, math.nan)
            head = (
                f"{prof['replicas']} replica(s), {name} at {prof['published_per_s']:,.0f} heartbeats/s: "
                f"{pct.get(name, math.nan):.0f} % of a core, {total_us:.1f} µs CPU per heartbeat ({how})"
            )
            if name in prof["entries"]:
                total, entries = prof["entries"][name]
                print_table(
                    head + " — by entry point (inclusive)",
                    ["handler frame", "%", "µs / heartbeat"],
                    [
                        [label, fmt_float(100 * n / total, 1), fmt_float(n / total * total_us, 1)]
                        for label, n in entries.most_common(6)
                    ],
                    right_align=["%", "µs / heartbeat"],
                )
            print_table(
                head + " — by owner",
                ["owner (deepest library/app frame)", "%", "µs / heartbeat"],
                [
                    [who, fmt_float(summary.pct(n), 1), fmt_float(summary.pct(n) / 100 * total_us, 1)]
                    for who, n in summary.owners.most_common(10)
                ],
                right_align=["%", "µs / heartbeat"],
            )
            print_table(
                head + " — hottest leaf frames",
                ["leaf frame (self time)", "category", "%"],
                [[leaf, cat, fmt_float(summary.pct(n), 1)] for (leaf, cat), n in summary.leaves.most_common(12)],
                right_align=["%"],
            )
        if prof["errors"]:
            print(f"profiler errors: {prof['errors']}")
        print(f"raw stacks (speedscope.app / flamegraph.pl): {prof['out']}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2], help="replica counts (default: 1 2)")
    parser.add_argument("--workers", type=int, default=10_000, help="distinct worker names (default 10,000)")
    parser.add_argument("--rate", type=float, default=10_000, help="paced heartbeats/s (default 10,000; 0: skip)")
    parser.add_argument("--seconds", type=float, default=10.0, help="paced phase length (default 10 s)")
    parser.add_argument(
        "--burst",
        type=int,
        default=100_000,
        help="heartbeats in the unpaced phase (default 100,000 ≈ 15 MB of pub/sub backlog at most; "
        "Redis drops a subscriber beyond 32 MB; 0: skip)",
    )
    parser.add_argument("--sample", type=int, default=200, help="workers sampled for visibility (default 200)")
    parser.add_argument(
        "--record-timeout",
        type=float,
        default=20.0,
        help="seconds to wait after publishing for every worker to be recorded (default 20; "
        "the wait also ends after 6 s without progress)",
    )
    parser.add_argument("--poll-requests", type=int, default=3000, help="pub/sub polls measured (0: skip)")
    parser.add_argument("--concurrency", type=int, default=32, help="poll concurrency (default 32)")
    parser.add_argument("--runs", type=int, default=10_000, help="scheduled runs in the pool, for the polls")
    parser.add_argument(
        "--profile",
        type=float,
        default=0.0,
        help="after the measurements, a paced window of this many seconds, profiled (0: off)",
    )
    parser.add_argument("--profile-rate", type=float, default=0.0, help="heartbeats/s in that window (default --rate)")
    parser.add_argument(
        "--profiler",
        choices=["py-spy", "cpu"],
        default="py-spy",
        help="py-spy (wall clock, idle excluded) or cpu: bench/profiling.py's CPU-time sampler in "
        "the replicas (started under its wrapper) and in this process — exact on a busy machine",
    )
    parser.add_argument(
        "--database-url",
        default=DEFAULT_DATABASE_URL,
        help=f"benchmark database, dropped and recreated (default: {DEFAULT_DATABASE_URL})",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=4.0,
        help="before each phase, wait up to this many seconds for the machine to use < 0.3 cores "
        "(0: don't wait; default 4)",
    )
    parser.add_argument(
        "--code",
        default="worktree",
        help="the code to benchmark: worktree (default) or a git revision, e.g. HEAD (exported "
        "with git archive; for when the working tree is mid-edit)",
    )
    args = parse_bench_args(parser, argv)
    if args.rate > 0 and args.rate * args.seconds < args.workers:
        parser.error("--rate x --seconds must reach every worker at least once")
    return args


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items() if k not in ("meter", "per_replica", "summaries", "entries")}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value if isinstance(value, (int, float, str, bool, type(None))) else str(value)


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    version = code_version()
    print(f"code under test: {version}", flush=True)
    runs: list[dict[str, Any]] = []
    try:
        for replicas in args.replicas:
            runs.append(await run_replicas(replicas, args))
    finally:
        if not args.keep_database:
            await drop_database(args.database_url)
    report(runs, args, version)
    if args.json:
        args.json.write_text(json.dumps(_jsonable(runs), indent=2))
    failed = any(r["recorded"] != r["workers"] for run in runs for r in run["heartbeats"])
    return 1 if failed else 0


def run() -> int:
    try:
        return asyncio.run(main())
    finally:
        remove_exported_code()  # last: the report may still import from the exported code


if __name__ == "__main__":
    sys.exit(run())
