"""Shared benchmark plumbing: replica subprocesses, fresh databases, Redis cleanup, latency
recording, a load driver and a results table.

Import from a script under `bench/` after putting the project root on `sys.path`:

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.common import ReplicaSet, run_load, print_table
"""

from __future__ import annotations

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
        raise ValueError(f"database {name!r} is not a benchmark database (its name must contain 'bench'); "
                         "benchmarks drop and recreate it")
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
            await redis.delete(*keys[i:i + 500])
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
    return [sys.executable, "-c", "from handlers.cli import main; main()", "serve", "--log-level", log_level]


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
                    print("ReplicaSet: cannot see the replicas' Redis connections by name; "
                          "waiting for a reply only", file=sys.stderr)
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
                except Exception as exc:  # noqa: BLE001 - retry until the deadline
                    if time.monotonic() > deadline:
                        raise ReplicaStartError(self._timeout_message(f"answer ({exc!r})")) from exc
                    await asyncio.sleep(0.2)
        return time.monotonic() - started

    async def _reading(self, redis: Redis) -> Counter:
        """Connections in XREADGROUP, by client name, of our replicas (named workpools-<consumer>)."""
        names = {f"workpools-{r.name}" for r in self.replicas}
        return Counter(
            c.get("name") for c in await redis.client_list()
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
            except Exception as exc:  # noqa: BLE001
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


async def _drive(op: Callable[[], Awaitable[Any]], total: int, concurrency: int,
                 recorder: LatencyRecorder | None) -> None:
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        clock = time.perf_counter
        while remaining > 0:
            remaining -= 1
            t0 = clock()
            try:
                await op()
            except Exception as exc:  # noqa: BLE001 - counted, the run goes on
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


class CpuMeter:
    """CPU seconds used between `start()` and `stop()` by: the given replicas, this process
    (the client), redis-server, every postgres process, and everything else on the machine.
    Other sessions' processes on a shared machine show up as "other" (a noisy neighbour)."""

    def __init__(self, replica_pids: Sequence[int] = ()) -> None:
        self.replica_pids = list(replica_pids)
        self._before: dict[str, float] = {}
        self.used: dict[str, float] = {}
        self.wall = 0.0

    def _snapshot(self) -> dict[str, float]:
        # postgres backends come and go; new ones are counted from 0 (their whole life is in the run)
        busy, _ = _machine_busy_seconds()
        return {
            "machine": busy,
            "replicas": sum(_proc_cpu_seconds(p) for p in self.replica_pids),
            "client": _proc_cpu_seconds(os.getpid()),
            "redis": sum(_proc_cpu_seconds(p) for p in _pids_named("redis-server")),
            "postgres": sum(_proc_cpu_seconds(p) for p in _pids_named("postgres")),
            "t": time.perf_counter(),
        }

    def start(self) -> None:
        self._before = self._snapshot()

    def stop(self) -> dict[str, float]:
        after = self._snapshot()
        self.wall = after["t"] - self._before["t"]
        self.used = {k: max(0.0, after[k] - self._before[k]) for k in after if k != "t"}
        self.used["other"] = max(
            0.0, self.used["machine"] - self.used["replicas"] - self.used["client"]
            - self.used["redis"] - self.used["postgres"]
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


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                *, right_align: Sequence[str] = (), caption: str | None = None) -> None:
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
            v.rjust(w) if col in right_align else v.ljust(w) for v, w, col in zip(values, widths, columns)
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
