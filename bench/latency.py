"""Latency and throughput: a closed-loop load driver and its recorder (percentiles, ops/s)."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.cpu import CpuMeter


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
