"""The status snapshot in Redis: computed by the foreman's replica once per interval, read by
every replica's /metrics and status page (one key, `{prefix}.status`)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from redis.asyncio import Redis

from services.db import Database
from services.status import status_snapshot


async def publish_status(db: Database, redis: Redis, key: str, replica: str, late_after: float, every: float) -> None:
    """Compute the snapshot and store it; it vanishes if nobody renews it for a while."""
    snapshot = await status_snapshot(db, late_after)
    snapshot["computed_by"] = replica
    await redis.set(key, json.dumps(snapshot), px=int(max(60.0, 10 * every) * 1000))


class StatusReader:
    """The latest snapshot, read from Redis at most every `min_interval` seconds."""

    def __init__(self, key: str, min_interval: float = 0.5) -> None:
        self.key, self.min_interval = key, min_interval
        self.snapshot: dict[str, Any] | None = None
        self._read_at = 0.0

    async def refresh(self, redis: Redis) -> dict[str, Any] | None:
        if time.monotonic() - self._read_at >= self.min_interval:
            raw = await redis.get(self.key)
            self.snapshot = json.loads(raw) if raw else None
            self._read_at = time.monotonic()
        return self.snapshot


def snapshot_age(snapshot: dict[str, Any]) -> float:
    return max(0.0, (datetime.now(UTC) - datetime.fromisoformat(snapshot["computed_at"])).total_seconds())


class StatusCollector(Collector):
    """Gauges from the last snapshot read (`StatusReader.refresh` before each scrape)."""

    def __init__(self, reader: StatusReader) -> None:
        self.reader = reader

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snapshot = self.reader.snapshot
        if snapshot is None:
            return
        pool_labels, queue_labels = ["pool"], ["pool", "queue"]
        families = {
            "pool_limit": GaugeMetricFamily(
                "workpools_pool_concurrency_limit", "A pool's concurrency limit (absent: none).", labels=pool_labels
            ),
            "pool_used": GaugeMetricFamily(
                "workpools_pool_slots_used",
                "Runs holding a slot of the pool (PENDING, RUNNING, leased).",
                labels=pool_labels,
            ),
            "pool_paused": GaugeMetricFamily("workpools_pool_paused", "1 when the pool is paused.", labels=pool_labels),
            "pool_ready": GaugeMetricFamily("workpools_pool_ready", "1 when the pool is READY.", labels=pool_labels),
            "leases": GaugeMetricFamily(
                "workpools_leases_held", "Runs under a live claim-mode lease.", labels=pool_labels
            ),
            "workers": GaugeMetricFamily("workpools_workers", "Workers by status.", labels=["pool", "status"]),
            "queue_limit": GaugeMetricFamily(
                "workpools_queue_concurrency_limit", "A queue's concurrency limit (absent: none).", labels=queue_labels
            ),
            "queue_used": GaugeMetricFamily(
                "workpools_queue_slots_used", "Runs holding a slot of the queue.", labels=queue_labels
            ),
            "due": GaugeMetricFamily(
                "workpools_queue_runs_due", "Scheduled runs due now, not yet handed out.", labels=queue_labels
            ),
            "late": GaugeMetricFamily(
                "workpools_queue_runs_late",
                "Runs due for longer than WORKPOOLS_LATE_AFTER_SECONDS.",
                labels=queue_labels,
            ),
            "oldest": GaugeMetricFamily(
                "workpools_queue_oldest_due_age_seconds", "How long the oldest due run has waited.", labels=queue_labels
            ),
        }
        for pool in snapshot["pools"]:
            name = pool["name"]
            if pool["limit"] is not None:
                families["pool_limit"].add_metric([name], pool["limit"])
            families["pool_used"].add_metric([name], pool["used"])
            families["pool_paused"].add_metric([name], 1 if pool["paused"] else 0)
            families["pool_ready"].add_metric([name], 1 if pool["status"] == "READY" else 0)
            families["leases"].add_metric([name], pool["leased"])
            for status in ("ONLINE", "OFFLINE"):
                families["workers"].add_metric([name, status], pool["workers"].get(status, 0))
            for queue in pool["queues"]:
                labels = [name, queue["name"]]
                if queue["limit"] is not None:
                    families["queue_limit"].add_metric(labels, queue["limit"])
                families["queue_used"].add_metric(labels, queue["used"])
                families["due"].add_metric(labels, queue["due"])
                families["late"].add_metric(labels, queue["late"])
                families["oldest"].add_metric(labels, queue["oldest_due_age"] or 0)
        yield from families.values()
        holder = GaugeMetricFamily(
            "workpools_status_computed_by",
            "The replica that computed the status snapshot (the foreman).",
            labels=["replica"],
        )
        holder.add_metric([snapshot.get("computed_by", "")], 1)
        yield holder
        yield GaugeMetricFamily(
            "workpools_status_age_seconds",
            "Age of the status snapshot behind these gauges.",
            value=snapshot_age(snapshot),
        )
