"""Shared benchmark plumbing: replica subprocesses, fresh databases, Redis cleanup, latency
recording, a load driver and a results table.

Import from a script under `bench/` after putting the project root on `sys.path`:

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.common import ReplicaSet, run_load, print_table
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/workpools_bench"


def new_prefix(name: str = "bench") -> str:
    """A key prefix no other run uses (so cleanup by `prefix*` touches only this run)."""
    return f"{name}{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------------------------
# PostgreSQL and Redis housekeeping


def _admin_dsn(url: str) -> tuple[str, str]:
    target = make_url(url)
    admin = target.set(database="postgres", drivername="postgresql")
    return admin.render_as_string(hide_password=False), target.database


def check_bench_database(url: str) -> str:
    """The database name in `url`, if it is a benchmark's (contains "bench"): benchmarks drop it."""
    name = make_url(url).database or ""
    if "bench" not in name:
        raise ValueError(
            f"database {name!r} is not a benchmark database (its name must contain 'bench'); "
            "benchmarks drop and recreate it"
        )
    return name


async def drop_database(url: str) -> None:
    """Drop the benchmark database named in `url` (connections are terminated); no error if missing."""
    import asyncpg

    check_bench_database(url)
    dsn, name = _admin_dsn(url)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def delete_prefix_keys(redis_url: str, prefix: str) -> int:
    """Delete every Redis key matching `prefix*`; returns how many."""
    redis = Redis.from_url(redis_url)
    try:
        keys = [key async for key in redis.scan_iter(match=f"{prefix}*", count=1000)]
        for i in range(0, len(keys), 500):
            await redis.delete(*keys[i : i + 500])
        return len(keys)
    finally:
        await redis.aclose()


# --------------------------------------------------------------------------------------------
# Replicas


class ReplicaStartError(RuntimeError):
    pass


def serve_command(log_level: str = "WARNING") -> list[str]:
    """`workpools serve` from the interpreter's environment (the venv's console script)."""
    script = Path(sys.executable).parent / "workpools"
    if script.exists():
        return [str(script), "serve", "--log-level", log_level]
    return [sys.executable, "-c", "from cli.main import main; main()", "serve", "--log-level", log_level]


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Replica:
    name: str
    process: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid


class ReplicaSet:
    """N `workpools serve` subprocesses sharing one prefix and database.

        async with ReplicaSet(2, prefix=p, database_url=db, redis_url=r) as replicas:
            replicas.pids  # e.g. for py-spy

    `command` replaces `workpools serve` (e.g. bench.profiling.profiled_serve_command()).
    All are started at once (so they race through the migration, as real replicas do), then
    `wait_ready()` waits, bounded, until every replica has joined the consumer group of every
    request stream and a request is answered. `stop()` sends SIGTERM, then SIGKILL to those
    still running after `stop_timeout` seconds; it only ever signals the processes it started.
    """

    def __init__(
        self,
        count: int,
        *,
        prefix: str,
        database_url: str,
        redis_url: str,
        log_dir: str | Path | None = None,
        log_level: str = "WARNING",
        env: dict[str, str] | None = None,
        startup_timeout: float = 60.0,
        stop_timeout: float = 15.0,
        command: Sequence[str] | None = None,
    ) -> None:
        self.count = count
        self.prefix = prefix
        self.database_url = database_url
        self.redis_url = redis_url
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="workpools-bench-"))
        self.log_level = log_level
        self.env = env or {}
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.command = list(command) if command else serve_command(log_level)
        self.replicas: list[Replica] = []
        self.ready_seconds: float | None = None

    @property
    def pids(self) -> list[int]:
        return [r.pid for r in self.replicas]

    @property
    def log_paths(self) -> list[Path]:
        return [r.log_path for r in self.replicas]

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for i in range(self.count):
            name = f"{self.prefix}-r{i}"
            env = {
                **os.environ,
                "WORKPOOLS_REDIS_URL": self.redis_url,
                "WORKPOOLS_DATABASE_URL": self.database_url,
                "WORKPOOLS_PREFIX": self.prefix,
                "WORKPOOLS_CONSUMER_NAME": name,
                "PYTHONUNBUFFERED": "1",
                **self.env,
            }
            log_path = self.log_dir / f"{name}.log"
            with open(log_path, "ab") as log:
                process = subprocess.Popen(
                    self.command,
                    cwd=ROOT,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a Ctrl-C reaches us only; stop() shuts them down
                )
            self.replicas.append(Replica(name, process, log_path))

    def _check_alive(self) -> None:
        for r in self.replicas:
            code = r.process.poll()
            if code is not None:
                raise ReplicaStartError(
                    f"replica {r.name} (pid {r.pid}) exited with {code}; log {r.log_path}:\n{_tail(r.log_path)}"
                )

    async def wait_ready(self) -> float:
        """Wait until every replica serves; returns the seconds it took.

        Ready means: each replica has a connection blocked in XREADGROUP for every request
        stream (FastStream gives each subscriber its own connection, named after the replica),
        and then a request is answered. (XINFO CONSUMERS is no use: Redis 7.0 lists a consumer
        only once it has been delivered something.)"""
        from client import WorkPoolClient
        from schemas.channels import Channels

        started = time.monotonic()
        deadline = started + self.startup_timeout
        needed = len(Channels(self.prefix).all_rpc_streams())
        redis = Redis.from_url(self.redis_url)
        try:
            while True:
                self._check_alive()
                reading = await self._reading(redis)
                if all(reading[f"workpools-{r.name}"] >= needed for r in self.replicas):
                    break
                if not reading and time.monotonic() - started > 15:
                    # No connection carries the replicas' names: the app names its connections
                    # differently now. Fall back to the round trip below (it proves one replica).
                    print(
                        "ReplicaSet: cannot see the replicas' Redis connections by name; waiting for a reply only",
                        file=sys.stderr,
                    )
                    break
                if time.monotonic() > deadline:
                    raise ReplicaStartError(self._timeout_message("subscribe to the request streams"))
                await asyncio.sleep(0.1)
        finally:
            await redis.aclose()
        # A round trip: the request path (Redis -> replica -> PostgreSQL -> reply) works.
        async with WorkPoolClient(redis_url=self.redis_url, prefix=self.prefix, timeout=5) as client:
            while True:
                self._check_alive()
                try:
                    await client.count_work_pools()
                    break
                except Exception as exc:
                    if time.monotonic() > deadline:
                        raise ReplicaStartError(self._timeout_message(f"answer ({exc!r})")) from exc
                    await asyncio.sleep(0.2)
        return time.monotonic() - started

    async def _reading(self, redis: Redis) -> Counter:
        """Connections in XREADGROUP, by client name, of our replicas (named workpools-<consumer>)."""
        names = {f"workpools-{r.name}" for r in self.replicas}
        return Counter(
            c.get("name")
            for c in await redis.client_list()
            if c.get("name") in names and str(c.get("cmd", "")).startswith("xreadgroup")
        )

    def _timeout_message(self, what: str) -> str:
        logs = "\n".join(f"--- {r.log_path}\n{_tail(r.log_path, 10)}" for r in self.replicas)
        return f"replicas did not {what} within {self.startup_timeout:.0f} s\n{logs}"

    def stop(self) -> None:
        for r in self.replicas:
            if r.process.poll() is None:
                r.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for r in self.replicas:
            try:
                r.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                r.process.kill()
                r.process.wait(timeout=5)

    async def __aenter__(self) -> ReplicaSet:
        self.start()
        try:
            self.ready_seconds = await self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # Blocking wait, but the benchmark has nothing else to do while replicas shut down.
        await asyncio.to_thread(self.stop)


# --------------------------------------------------------------------------------------------
# Measuring


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an ascending sequence; NaN when empty."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class LatencyRecorder:
    """Per-request latencies (seconds) and errors over one timed run."""

    samples: list[float] = field(default_factory=list)
    errors: int = 0
    error_kinds: Counter = field(default_factory=Counter)
    started: float | None = None
    finished: float | None = None

    def start(self) -> None:
        self.started = time.perf_counter()

    def stop(self) -> None:
        self.finished = time.perf_counter()

    def add(self, seconds: float) -> None:
        self.samples.append(seconds)

    def error(self, exc: BaseException) -> None:
        self.errors += 1
        self.error_kinds[f"{type(exc).__name__}: {str(exc)[:120]}"] += 1

    @property
    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        return (self.finished or time.perf_counter()) - self.started

    @property
    def ops_per_s(self) -> float:
        """Successful requests per second of wall time."""
        return len(self.samples) / self.elapsed if self.elapsed > 0 else 0.0

    def p(self, q: float) -> float:
        """Percentile q of the latencies, in milliseconds."""
        return percentile(sorted(self.samples), q) * 1000

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.samples)
        return {
            "requests": len(self.samples) + self.errors,
            "ok": len(self.samples),
            "errors": self.errors,
            "seconds": self.elapsed,
            "ops_per_s": self.ops_per_s,
            "p50_ms": percentile(ordered, 50) * 1000,
            "p99_ms": percentile(ordered, 99) * 1000,
            "max_ms": (ordered[-1] * 1000) if ordered else math.nan,
        }


async def run_load(
    op: Callable[[], Awaitable[Any]],
    *,
    requests: int,
    concurrency: int,
    warmup: int = 0,
    meter: CpuMeter | None = None,
) -> LatencyRecorder:
    """Call `op()` `requests` times from `concurrency` tasks (closed loop: each task sends its next
    request when the previous one is answered), after `warmup` unrecorded calls at the same
    concurrency. `op` makes its own arguments (e.g. from a counter), so warm-up calls never reuse
    the measured ones. A `meter` is started and stopped around the measured requests."""
    if warmup:
        await _drive(op, warmup, concurrency, None)
    recorder = LatencyRecorder()
    if meter is not None:
        meter.start()
    recorder.start()
    await _drive(op, requests, concurrency, recorder)
    recorder.stop()
    if meter is not None:
        meter.stop()
    return recorder


async def run_for(
    op: Callable[[], Awaitable[Any]],
    *,
    seconds: float,
    concurrency: int,
    warmup: int = 0,
    meter: CpuMeter | None = None,
) -> LatencyRecorder:
    """Like `run_load`, but for a fixed time instead of a fixed number of requests (e.g. while
    a profiler samples the replicas)."""
    if warmup:
        await _drive(op, warmup, concurrency, None)
    recorder = LatencyRecorder()
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        clock = time.perf_counter
        while (t0 := clock()) < deadline:
            try:
                await op()
            except Exception as exc:
                recorder.error(exc)
            else:
                recorder.add(clock() - t0)

    if meter is not None:
        meter.start()
    recorder.start()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    recorder.stop()
    if meter is not None:
        meter.stop()
    return recorder


async def _drive(
    op: Callable[[], Awaitable[Any]], total: int, concurrency: int, recorder: LatencyRecorder | None
) -> None:
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        clock = time.perf_counter
        while remaining > 0:
            remaining -= 1
            t0 = clock()
            try:
                await op()
            except Exception as exc:
                if recorder is not None:
                    recorder.error(exc)
            else:
                if recorder is not None:
                    recorder.add(clock() - t0)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, total))))


# --------------------------------------------------------------------------------------------
# CPU accounting (Linux /proc): who used the cores during a run


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def _pids_named(*names: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() in names:
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


def _machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return (total - idle) / _TICK, total / _TICK


def _postgres_pids(database: str | None) -> list[int]:
    """Every postgres process, or (with `database`) only the processes working for that database:
    its backends and autovacuum workers, whose process titles name it ("postgres: 15/main: <user>
    <database> <client> <state>"). The server's shared writers (checkpointer, background writer,
    walwriter) are left out: on a shared server they mostly work for the other databases."""
    pids = _pids_named("postgres")
    if database is None:
        return pids
    kept = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                words = f.read().replace(b"\0", b" ").decode(errors="replace").split()
        except OSError:
            continue
        if database in words:
            kept.append(pid)
    return kept


class CpuMeter:
    """CPU seconds used between `start()` and `stop()` by: the given replicas, this process
    (the client), redis-server, every postgres process, and everything else on the machine.
    Other sessions' processes on a shared machine show up as "other" (a noisy neighbour).

    With `database`, "postgres" is only that database's backends (and autovacuum workers), so
    other sessions' databases on the same server, and the server's shared writers, count as
    "other"; so do `exclude_backends` (e.g. the benchmark's own query connections). (A backend
    that exits during the window takes its CPU with it: "other" too.)"""

    def __init__(
        self, replica_pids: Sequence[int] = (), *, database: str | None = None, exclude_backends: Sequence[int] = ()
    ) -> None:
        self.replica_pids = list(replica_pids)
        self.database = database
        self.exclude_backends = set(exclude_backends)  # e.g. the benchmark's own sampling connections
        self._before: dict[str, float] = {}
        self.used: dict[str, float] = {}
        self.wall = 0.0

    def _snapshot(self) -> dict[str, float]:
        # postgres backends come and go; new ones are counted from 0 (their whole life is in the run)
        busy, _ = _machine_busy_seconds()
        self._pg = {p: _proc_cpu_seconds(p) for p in _postgres_pids(self.database) if p not in self.exclude_backends}
        return {
            "machine": busy,
            "replicas": sum(_proc_cpu_seconds(p) for p in self.replica_pids),
            "client": _proc_cpu_seconds(os.getpid()),
            "redis": sum(_proc_cpu_seconds(p) for p in _pids_named("redis-server")),
            "postgres": sum(self._pg.values()),
            "t": time.perf_counter(),
        }

    def start(self) -> None:
        self._before = self._snapshot()
        self._pg_before = self._pg

    def stop(self) -> dict[str, float]:
        after = self._snapshot()
        self.wall = after["t"] - self._before["t"]
        self.used = {k: max(0.0, after[k] - self._before[k]) for k in after if k != "t"}
        # Per backend: one that exited during the window must not subtract what it had used before.
        self.used["postgres"] = sum(max(0.0, cpu - self._pg_before.get(pid, 0.0)) for pid, cpu in self._pg.items())
        self.used["other"] = max(
            0.0,
            self.used["machine"]
            - self.used["replicas"]
            - self.used["client"]
            - self.used["redis"]
            - self.used["postgres"],
        )
        return self.used

    def percent(self) -> dict[str, float]:
        """Average cores in use x 100 (200 % = both cores of a 2-core machine busy)."""
        return {k: 100 * v / self.wall for k, v in self.used.items()} if self.wall else {}

    def ms_per_op(self, ops: int) -> dict[str, float]:
        return {k: 1000 * v / ops for k, v in self.used.items()} if ops else {}


async def wait_for_quiet(max_wait: float, busy_below: float = 0.3, window: float = 1.0) -> float:
    """Wait (at most `max_wait` s) until the machine's busy CPU over `window` s is below
    `busy_below` cores: call it while our replicas are idle, so what is busy is someone else (a
    shared machine). Returns the last busy level seen, in cores."""
    deadline = time.monotonic() + max_wait
    while True:
        busy0, _ = _machine_busy_seconds()
        t0 = time.perf_counter()
        await asyncio.sleep(window)
        busy = (_machine_busy_seconds()[0] - busy0) / (time.perf_counter() - t0)
        if busy < busy_below or time.monotonic() >= deadline:
            return busy


# --------------------------------------------------------------------------------------------
# Output


def print_table(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    right_align: Sequence[str] = (),
    caption: str | None = None,
) -> None:
    """A Rich table when Rich is installed, otherwise plain aligned text."""
    cells = [["" if v is None else str(v) for v in row] for row in rows]
    try:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text
    except ImportError:
        Console = None  # type: ignore[assignment]
    if Console is not None:
        table = Table(title=title, caption=caption, caption_justify="left")
        for col in columns:
            table.add_column(col, justify="right" if col in right_align else "left")
        for row in cells:
            table.add_row(*(Text(v) for v in row))  # literal text: "[kernel.kallsyms]" is not markup
        Console(width=max(300, Console().width)).print(table)
        return
    widths = [max(len(c), *(len(r[i]) for r in cells)) if cells else len(c) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if col in right_align else v.ljust(w) for v, w, col in zip(values, widths, columns, strict=True)
        )

    print(title)
    print(line(columns))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print(line(row))
    if caption:
        print(caption)


def fmt_float(value: float, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


# --------------------------------------------------------------------------------------------
# Benchmark data and PostgreSQL statistics (used by bench/poll.py and bench/workers.py)


def asyncpg_dsn(database_url: str) -> str:
    """The SQLAlchemy URL of the service (postgresql+asyncpg://...) as a plain asyncpg DSN."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


CODE_LABEL_ENV = "WORKPOOLS_BENCH_CODE"
CODE_DIR_ENV = "WORKPOOLS_BENCH_CODE_DIR"


def run_on_code(script: str, argv: Sequence[str] | None = None) -> None:
    """`--code REV`: benchmark a committed revision instead of the working tree (e.g. while the
    working tree is mid-edit). Call it at the top of a benchmark script, before importing the
    project (client, schemas...).

    With `--code worktree` (the default) this returns at once. Otherwise the revision is exported
    with `git archive` (read-only for the repository) into a temporary directory, this
    checkout's bench/*.py are copied over it, and the script re-executes itself from there with
    PYTHONPATH pointing at it: the benchmark, its client and the replicas it starts (whose
    environment it is) all run that revision. The directory is removed at exit."""
    argv = list(sys.argv[1:] if argv is None else argv)
    rev = None
    for i, arg in enumerate(argv):
        if arg == "--code" and i + 1 < len(argv):
            rev = argv[i + 1]
            del argv[i : i + 2]
            break
        if arg.startswith("--code="):
            rev = arg.split("=", 1)[1]
            del argv[i]
            break
    if rev is None or rev == "worktree" or os.environ.get(CODE_DIR_ENV):
        return
    import shutil

    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    sha = subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    target = Path(tempfile.mkdtemp(prefix=f"workpools-code-{sha}-"))
    archive = subprocess.run(
        ["git", "archive", "--format=tar", sha], cwd=ROOT, env=env, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    (target / "bench").mkdir(exist_ok=True)
    for source in (ROOT / "bench").glob("*.py"):
        shutil.copy2(source, target / "bench" / source.name)
    print(f"running {script} on revision {rev} ({sha}), exported to {target}", flush=True)
    env = {
        **os.environ,
        "PYTHONPATH": str(target),
        CODE_LABEL_ENV: f"{sha} ({rev}, exported)",
        CODE_DIR_ENV: str(target),
    }
    os.execve(sys.executable, [sys.executable, str(target / "bench" / script), *argv], env)


def remove_exported_code() -> None:
    """Remove the directory `run_on_code` exported (call at the very end of the script)."""
    target = os.environ.get(CODE_DIR_ENV)
    if (
        target
        and Path(target).name.startswith("workpools-code-")
        and Path(target).parent == Path(tempfile.gettempdir())
    ):
        import shutil

        shutil.rmtree(target, ignore_errors=True)


def code_version() -> str:
    """`<HEAD> (+N changed files)` of the project the replicas run (read-only git calls)."""
    if os.environ.get(CODE_LABEL_ENV):
        return os.environ[CODE_LABEL_ENV]
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # never write the index
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=5
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head or 'unknown'}" + (f" + {len(changed)} uncommitted file(s)" if changed else "")


async def create_priority_pool(client: Any, pool: str, queues: int = 5) -> list[str]:
    """A pool (no concurrency limit) with `queues` queues of priorities 1..queues: its default
    queue (priority 1) and q2..qN, and one deployment on each. Returns the queue names in
    priority order."""
    await client.create_work_pool({"name": pool, "type": "process"})
    names = ["default"]
    for priority in range(2, queues + 1):
        queue = await client.create_work_queue(pool, {"name": f"q{priority}", "priority": priority})
        names.append(queue.name)
    for name in names:
        await client.create_deployment({"name": f"{pool}-{name}", "work_pool_name": pool, "work_queue_name": name})
    return names


SEED_RUNS = """
WITH q AS (
    SELECT q.id, q.name, row_number() OVER (ORDER BY q.priority) - 1 AS k, count(*) OVER () AS n,
           (SELECT d.id FROM deployment d WHERE d.work_queue_id = q.id ORDER BY d.created, d.id LIMIT 1)
               AS deployment_id
      FROM work_queue q JOIN work_pool p ON p.id = q.work_pool_id
     WHERE p.name = $1
)
INSERT INTO flow_run (id, created, updated, name, deployment_id, work_queue_id, work_queue_name,
                      state_type, state_name, state_id, state_timestamp,
                      next_scheduled_start_time, expected_start_time)
SELECT gen_random_uuid(), now(), now(), 'bench-run-' || i, q.deployment_id, q.id, q.name,
       'SCHEDULED', 'Scheduled', gen_random_uuid(), now(), s.t, s.t
  FROM generate_series(0, $2 - 1) AS i
  JOIN q ON q.k = i % q.n
 CROSS JOIN LATERAL (SELECT now() - make_interval(secs => $3 * (i + 1)::float8 / $2)) AS s(t)
"""


async def seed_scheduled_runs(database_url: str, pool: str, count: int, spread_seconds: float = 3600.0) -> float:
    """Replace the pool's flow runs by `count` SCHEDULED runs, inserted with one SQL statement
    (not `count` RPCs): round-robin over the pool's queues, due times spread evenly over the past
    `spread_seconds`, each on its queue's deployment. Then VACUUM ANALYZE, so every phase starts
    from the same clean table. Returns the seconds it took."""
    import asyncpg

    check_bench_database(database_url)
    started = time.perf_counter()
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await conn.execute(
            "DELETE FROM flow_run WHERE work_queue_id IN "
            "(SELECT q.id FROM work_queue q JOIN work_pool p ON p.id = q.work_pool_id WHERE p.name = $1)",
            pool,
        )
        status = await conn.execute(SEED_RUNS, pool, count, float(spread_seconds))
        inserted = int(status.split()[-1])
        if inserted != count:
            raise RuntimeError(f"seeded {inserted} runs instead of {count} (does pool {pool!r} exist?)")
        await conn.execute("VACUUM ANALYZE flow_run")
    finally:
        await conn.close()
    return time.perf_counter() - started


async def all_table_writes(conn: Any) -> int:
    """Rows inserted + updated + deleted in every table of the connection's database."""
    return int(
        await conn.fetchval("SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_user_tables")
    )


async def table_writes(conn: Any, table: str) -> dict[str, int]:
    """Cumulative row writes of one table (pg_stat_user_tables): ins, upd, hot_upd, del."""
    row = await conn.fetchrow(
        "SELECT n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del FROM pg_stat_user_tables WHERE relname = $1", table
    )
    return (
        {"ins": row[0], "upd": row[1], "hot_upd": row[2], "del": row[3]}
        if row
        else {"ins": 0, "upd": 0, "hot_upd": 0, "del": 0}
    )


async def database_commits(conn: Any) -> int:
    """Committed transactions of the connection's database (pg_stat_database.xact_commit)."""
    return int(await conn.fetchval("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"))


PG_STATS_IDLE_FLUSH = 10.5
"""Seconds after its last transaction by which an idle PostgreSQL 15 backend has published its
statistics: a backend reports when a transaction ends at least 1 s after its previous report,
otherwise (PGSTAT_IDLE_INTERVAL) 10 s later if it stays idle."""


async def settled(
    read: Callable[[], Awaitable[Any]],
    *,
    quiet: float = 2.0,
    max_wait: float = 12.0,
    every: float = 0.5,
    not_before: float | None = None,
) -> tuple[Any, bool, float]:
    """Read a statistic until it has not changed for `quiet` seconds (and, with `not_before`, a
    time.monotonic() value, not before then), at most `max_wait` seconds.

    PostgreSQL 15 publishes table and database counters lazily (see PG_STATS_IDLE_FLUSH): pass
    not_before = last activity + PG_STATS_IDLE_FLUSH for exact counts. Returns (value, settled,
    seconds waited)."""
    started = time.monotonic()
    value = await read()
    since = time.monotonic()
    while True:
        await asyncio.sleep(every)
        now = time.monotonic()
        current = await read()
        if current != value:
            value, since = current, now
        elif now - since >= quiet and (not_before is None or now >= not_before):
            return value, True, now - started
        if now - started >= max_wait:
            return value, False, now - started


class PubSubBacklog:
    """Samples, in the background, the largest Redis output buffer (CLIENT LIST `omem`, bytes)
    of pub/sub subscribers named `{name_prefix}*`: how far the subscribers lag behind the
    publishers. Redis disconnects a subscriber beyond `client-output-buffer-limit pubsub`
    (default 32 MB hard, 8 MB for 60 s), and its messages are lost."""

    def __init__(self, redis_url: str, name_prefix: str, every: float = 0.2) -> None:
        self.redis_url, self.name_prefix, self.every = redis_url, name_prefix, every
        self.max_bytes = 0
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        redis = Redis.from_url(self.redis_url)
        try:
            while True:
                for c in await redis.client_list():
                    if str(c.get("name", "")).startswith(self.name_prefix) and int(c.get("sub", 0) or 0) > 0:
                        self.max_bytes = max(self.max_bytes, int(c.get("omem", 0) or 0))
                await asyncio.sleep(self.every)
        finally:
            await redis.aclose()

    def start(self) -> None:
        self.max_bytes = 0
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> int:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        return self.max_bytes


def log_warnings(paths: Sequence[Path], *needles: str) -> Counter:
    """How often each of `needles` occurs in the replicas' logs (e.g. lost channels)."""
    found: Counter = Counter()
    for path in paths:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for needle in needles:
            found[needle] += text.count(needle)
    return found


# --------------------------------------------------------------------------------------------
# Worker-channel polls (WorkerClient over pub/sub)


class WorkerPollers:
    """`count` WorkerClients (workers `{name}-0`..), one per concurrent poller; `op()` polls
    with the next one (round robin) and counts the runs returned.

        async with WorkerPollers(redis_url, prefix, pool, 32) as pollers:
            await run_load(pollers.op, requests=3000, concurrency=32)
    """

    def __init__(
        self,
        redis_url: str,
        prefix: str,
        pool: str,
        count: int,
        *,
        limit: int = 10,
        name: str = "bench-poller",
        timeout: float = 10.0,
    ) -> None:
        from client.workers import WorkerClient

        self.clients = [
            WorkerClient(redis_url, prefix, work_pool_name=pool, worker_name=f"{name}-{i}", timeout=timeout)
            for i in range(count)
        ]
        self.limit = limit
        self.polls = 0
        self.runs = 0
        self._next = 0

    async def op(self) -> None:
        client = self.clients[self._next % len(self.clients)]
        self._next += 1
        runs = await client.get_scheduled_flow_runs(limit=self.limit)
        self.polls += 1
        self.runs += len(runs)

    def reset_counts(self) -> None:
        self.polls = self.runs = 0

    async def __aenter__(self) -> WorkerPollers:
        opened = []
        try:
            for client in self.clients:
                await client.__aenter__()
                opened.append(client)
        except BaseException:
            for client in opened:
                await client.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for client in self.clients:
            await client.__aexit__(None, None, None)


# --------------------------------------------------------------------------------------------
# CPU table shared by the benchmarks


CPU_PARTS = ("machine", "replicas", "client", "redis", "postgres", "other")


def print_cpu_table(
    title: str, rows: Sequence[tuple[str, int, int, CpuMeter, int]], *, unit: str = "op", caption: str | None = None
) -> None:
    """rows: (operation, concurrency, replicas, meter, ops). CPU % of one core during the
    measured window, and CPU ms per op per process (the robust number on a shared machine)."""
    per = [f"ms/{unit} {k}" for k in ("repl.", "client", "redis", "pg")]
    print_table(
        title,
        ["operation", "conc.", "repl.", *CPU_PARTS, *per],
        [
            [
                label,
                conc,
                repl,
                *(fmt_float(meter.percent().get(k, math.nan), 0) for k in CPU_PARTS),
                *(
                    fmt_float(meter.ms_per_op(ops).get(k, math.nan), 3)
                    for k in ("replicas", "client", "redis", "postgres")
                ),
            ]
            for label, conc, repl, meter, ops in rows
        ],
        right_align=["conc.", "repl.", *CPU_PARTS, *per],
        caption=caption
        or "CPU % of one core (200 % = both cores busy). postgres = the benchmark database's "
        "backends. other = the rest of the machine (other sessions, their "
        "databases; backends that exited during the window): a noisy neighbour if not ~0; per-op "
        "CPU is the robust number.",
    )


# --------------------------------------------------------------------------------------------
# py-spy around a measured window


class PySpy:
    """`py-spy record` (raw collapsed stacks, wall clock, idle excluded, non-blocking) on some
    processes from `start()` until `stop()` (SIGINT to the py-spy processes it started, which
    makes them write their output). Summarise the files with bench.profiling.

        spy = PySpy({"replica-0": pid}, rate=200); await spy.start(); ...; files = await spy.stop()
    """

    def __init__(self, targets: dict[str, int], *, rate: int = 200, out: str | Path | None = None) -> None:
        self.targets = targets
        self.rate = rate
        self.out = Path(out) if out else Path(tempfile.mkdtemp(prefix="workpools-py-spy-"))
        self._procs: list[tuple[str, Path, asyncio.subprocess.Process]] = []
        self.errors: dict[str, str] = {}

    async def start(self) -> None:
        spy = Path(sys.executable).parent / "py-spy"
        self.out.mkdir(parents=True, exist_ok=True)
        for name, pid in self.targets.items():
            path = self.out / f"{name}.raw"
            proc = await asyncio.create_subprocess_exec(
                str(spy),
                "record",
                "--pid",
                str(pid),
                "--format",
                "raw",
                "--rate",
                str(self.rate),
                "--nonblocking",
                "--full-filenames",
                "-o",
                str(path),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            self._procs.append((name, path, proc))
        await asyncio.sleep(0.5)  # attached

    async def stop(self) -> dict[str, Path]:
        files = {}
        for _name, _path, proc in self._procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGINT)
        for name, path, proc in self._procs:
            try:
                _, err = await asyncio.wait_for(proc.communicate(), 15)
            except TimeoutError:
                proc.kill()
                _, err = await proc.communicate()
            if path.exists():
                files[name] = path
            elif err:
                self.errors[name] = err.decode(errors="replace")[-300:]
        self._procs.clear()
        return files


def entry_points(samples: Any) -> tuple[int, Counter]:
    """Profile samples (bench.profiling.load_collapsed) by the project code that runs them,
    inclusive of everything it calls: a handler registered in handlers/ (`register.<locals>.X`:
    a request, the ready-mark consumer, a worker poll), or the background loops of
    handlers/worker_channel.py, foreman.py, outbox.py, recovery.py. Other samples under handlers/
    are the request pipeline around the handler (the middlewares' scopes: FastStream decoding and
    validating the body, encoding and publishing the reply); the rest is the framework and the
    event loop (reading requests, acks, scheduling) — and SQLAlchemy's database work, which runs
    in greenlets whose stacks do not show the handler that started it (so the handlers' shares
    are lower bounds)."""
    from bench.profiling import _after_loop

    handlers = str(ROOT / "handlers") + "/"
    background = ("worker_channel.py", "foreman.py", "outbox.py", "recovery.py")
    counts: Counter = Counter()
    total = 0
    for frames, count in samples:
        total += count
        label = None
        in_handlers = False
        for frame in _after_loop(frames):  # what the event loop runs now (not the serve command around it)
            if frame.file.startswith(handlers):
                short = frame.file[len(handlers) :]
            elif "/handlers/" in frame.file and "site-packages" not in frame.file:  # another checkout
                short = frame.file.rsplit("/handlers/", 1)[1]
            else:
                continue
            in_handlers = True
            if "register.<locals>." in frame.func:
                label = f"{frame.func.split('register.<locals>.', 1)[1]} (handlers/{short})"
                break
            if short in background and "consume_scope" not in frame.func:
                label = f"{frame.func} (handlers/{short})"
                break
        counts[
            label
            or (
                "request pipeline around the handler (middlewares: FastStream decode + validate, "
                "reply encode + publish)"
                if in_handlers
                else "no project frame: framework, event loop, SQLAlchemy in greenlets"
            )
        ] += count
    return total, counts


class Profiler:
    """Profiles replicas (and this process) over measured windows, one of two ways:

    * "py-spy": `py-spy record` (wall clock, idle excluded, non-blocking) attached per window;
    * "cpu": bench/profiling.py's CPU-time sampler — replicas must be started under its wrapper
      (`ReplicaSet(..., **Profiler.replica_options("cpu", dir))`), SIGUSR1/SIGUSR2 per window;
      this process samples itself. Exact about CPU on a busy machine, where py-spy also counts
      time a process is runnable but waiting for a core.

    `await start()`, run the window, `await stop()` -> {name: samples} (load_collapsed format),
    names "replica-<i>" and "self"."""

    def __init__(self, kind: str, replica_pids: Sequence[int], out: Path, *, include_self: bool = True) -> None:
        self.kind, self.pids, self.out, self.include_self = kind, list(replica_pids), Path(out), include_self
        self.errors: dict[str, str] = {}
        self._spy: PySpy | None = None
        self._sampler: Any = None
        self._window = 0

    @staticmethod
    def replica_options(kind: str, out: Path) -> dict[str, Any]:
        if kind != "cpu":
            return {}
        from bench.profiling import PROFILE_INTERVAL_ENV, PROFILE_OUT_ENV, profiled_serve_command

        return {
            "command": profiled_serve_command(),
            "env": {PROFILE_OUT_ENV: str(Path(out) / "replica-{pid}.collapsed"), PROFILE_INTERVAL_ENV: "0.002"},
        }

    async def start(self) -> None:
        self._window += 1
        names = {f"replica-{i}": pid for i, pid in enumerate(self.pids)}
        if self.kind == "py-spy":
            targets = names | ({"self": os.getpid()} if self.include_self else {})
            self._spy = PySpy(targets, out=self.out / f"window-{self._window}")
            await self._spy.start()
            return
        from bench.profiling import CpuSampler

        for path in (self.out / f"replica-{pid}.collapsed" for pid in self.pids):
            path.unlink(missing_ok=True)
        for pid in self.pids:
            os.kill(pid, signal.SIGUSR1)
        if self.include_self:
            self._sampler = CpuSampler(0.002)
            self._sampler.start()

    async def stop(self) -> dict[str, list]:
        from bench.profiling import load_collapsed

        if self._spy is not None:
            files = await self._spy.stop()
            self.errors.update(self._spy.errors)
            self._spy = None
            return {name: load_collapsed(path) for name, path in files.items()}
        result = {}
        if self._sampler is not None:
            self._sampler.stop()
            path = self.out / f"self-{self._window}.collapsed"
            self._sampler.dump(path)
            result["self"] = load_collapsed(path)
            self._sampler = None
        for pid in self.pids:
            os.kill(pid, signal.SIGUSR2)
        deadline = time.monotonic() + 10
        for i, pid in enumerate(self.pids):
            path = self.out / f"replica-{pid}.collapsed"
            while not path.exists() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if path.exists():
                kept = path.rename(self.out / f"replica-{i}-{pid}-{self._window}.collapsed")
                result[f"replica-{i}"] = load_collapsed(kept)
            else:
                self.errors[f"replica-{i}"] = "no profile written"
        return result


def parse_bench_args(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Add the options every benchmark has (Redis URL, keep the database, JSON output), parse,
    and refuse a database whose name does not say it is a benchmark's."""
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help=f"default: {DEFAULT_REDIS_URL}")
    parser.add_argument("--keep-database", action="store_true", help="do not drop the database at the end")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    try:
        check_bench_database(args.database_url)
    except ValueError as exc:
        parser.error(str(exc))
    return args
