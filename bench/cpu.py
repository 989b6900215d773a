"""CPU accounting from Linux /proc: who used the cores during a measured window (replicas,
client, Redis, PostgreSQL, everyone else), and waiting for a quiet machine."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence

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
