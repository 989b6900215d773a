"""What metrics cost a replica per request and per poll, measured directly: the request gate's
recording (`observability.requests`) with metrics collected and without, and the dispatch
metrics of a poll that hands out 10 runs.

    .venv/bin/python bench/metrics_cost.py [--requests 200000]

End to end, `bench/targets.py --without-metrics` compares whole replicas with and without
metrics; on a shared machine that difference is within the run-to-run noise, so this measures
the part that differs on its own (CPU time of this process, best of 5).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from observability.metrics import Metrics
from observability.requests import RequestRecorder

STREAM, OP = "workpools.rpc.read_work_pool", "read_work_pool"


def best_us(call: object, count: int, repeat: int = 5) -> float:
    """The least CPU time per call, in microseconds, of `repeat` loops of `count` calls."""
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        for _ in range(count):
            call()  # type: ignore[operator]
        best = min(best, time.process_time() - started)
    return best / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200_000)
    args = parser.parse_args()
    metrics = Metrics("bench")
    on, off = RequestRecorder(metrics, "bench"), RequestRecorder(None, "bench")

    def request(recorder: RequestRecorder) -> None:
        message = recorder.received(STREAM, 120)
        recorder.record(OP, "200", 0.0021, message)

    now = datetime.now(UTC)
    due = [now - timedelta(seconds=i) for i in range(10)]
    with_metrics = best_us(lambda: request(on), args.requests)
    without = best_us(lambda: request(off), args.requests)
    poll = best_us(lambda: metrics.observe("runs_handed", pool="p", claim=False, now=now, due=due), args.requests // 4)
    print(f"request recorded, metrics on:  {with_metrics:6.2f} µs CPU")
    print(f"request recorded, metrics off: {without:6.2f} µs CPU")
    print(f"metrics cost per request:      {with_metrics - without:6.2f} µs CPU")
    print(f"metrics cost per poll handing out 10 runs: {poll:6.2f} µs CPU")


if __name__ == "__main__":
    main()
