"""Dispatch latency over the last minutes, for the status page's chart, across replicas.

Every few seconds each replica appends the bucket counts of the latencies it saw (runs handed
out by polls, runs started) to the capped stream `{prefix}.dispatch-latency`; the page merges
the entries of all replicas per time slot and reads percentiles off the merged buckets.
"""

from __future__ import annotations

import json
import time
from typing import Any

from redis.asyncio import Redis

from observability.metrics import LATENCY_BUCKETS, LatencyWindow

KINDS = ("handed", "started")


async def flush_window(redis: Redis, stream: str, window: LatencyWindow, replica: str) -> None:
    counts = window.take()
    if counts:
        entry = {"replica": replica, "at": time.time(), "counts": counts}
        await redis.xadd(stream, {"entry": json.dumps(entry)}, maxlen=5000, approximate=True)


async def latency_series(redis: Redis, stream: str, minutes: float = 15, slot_seconds: float = 10) -> dict[str, Any]:
    """Per time slot of the last `minutes`: count, p50, p95 and max (upper bucket bound) per kind."""
    now = time.time()
    since_ms = int((now - minutes * 60) * 1000)
    slots: dict[int, dict[str, list[int]]] = {}
    for _, fields in await redis.xrange(stream, min=f"{since_ms}-0", max="+", count=20_000):
        entry = json.loads(fields[b"entry"])
        slot = int(entry["at"] // slot_seconds)
        merged = slots.setdefault(slot, {})
        for kind, counts in entry["counts"].items():
            into = merged.setdefault(kind, [0] * len(counts))
            for index, count in enumerate(counts):
                into[index] += count
    series: dict[str, list[dict[str, float]]] = {kind: [] for kind in KINDS}
    for slot in sorted(slots):
        for kind, counts in slots[slot].items():
            if kind in series and sum(counts):
                series[kind].append(
                    {
                        "at": slot * slot_seconds,
                        "count": sum(counts),
                        "p50": percentile(counts, 0.5),
                        "p95": percentile(counts, 0.95),
                        "max": percentile(counts, 1.0),
                    }
                )
    return {"now": now, "minutes": minutes, "slot_seconds": slot_seconds, "series": series}


def percentile(counts: list[int], q: float) -> float:
    """The latency below which a fraction `q` of the counts lie, interpolated within its bucket."""
    total = sum(counts)
    rank = q * total
    seen = 0
    lower = 0.0
    for index, count in enumerate(counts):
        upper = LATENCY_BUCKETS[index] if index < len(LATENCY_BUCKETS) else LATENCY_BUCKETS[-1] * 2
        if count and seen + count >= rank:
            return lower + (upper - lower) * ((rank - seen) / count)
        seen += count
        lower = upper
    return lower
