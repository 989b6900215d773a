"""The replica's Prometheus metrics: what happens in this process (requests, dispatch, leases,
heartbeats, the foreman), in one registry per replica process.

Database-derived gauges (backlog, slots, workers) are not here: the foreman's replica computes
them once per interval (`observability.status`) and every replica exposes that one snapshot.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics

from observability.message_metrics import CountMessages, MessageMetrics
from observability.series import CounterSeries, HistogramSeries, SeriesCollector

disable_created_metrics()  # no `_created` series beside every counter: half the scrape, nothing lost

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
)
"""Seconds, from a millisecond to a quarter of an hour: dispatch and request latency."""


class Metrics:
    """Every metric a replica updates itself. `observe` is the services' observer (`Database.observe`)."""

    def __init__(self, replica: str) -> None:
        self.replica = replica
        self.registry = CollectorRegistry()
        r = self.registry
        # once per request or run: plain series (`observability.series`), no lock, no `.labels()`
        self.dispatch = HistogramSeries(
            "workpools_dispatch_latency_seconds",
            "From when a run was due to when a poll handed it to a worker (0 when handed before it was due).",
            ["pool", "mode"],
            LATENCY_BUCKETS,
        )
        self.start = HistogramSeries(
            "workpools_start_latency_seconds",
            "From when a run was due to when it was RUNNING.",
            ["pool"],
            LATENCY_BUCKETS,
        )
        self.runs_handed = CounterSeries("workpools_runs_handed", "Runs handed to workers by polls.", ["pool", "mode"])
        self.requests = CounterSeries(
            "workpools_requests",
            "Requests answered (or dropped: status `expired`), by operation and status.",
            ["op", "status"],
        )
        self.request_seconds = HistogramSeries(
            "workpools_request_duration_seconds", "Time to handle a request, by operation.", ["op"], LATENCY_BUCKETS
        )
        self.leases_ended = CounterSeries(
            "workpools_leases_ended",
            "Claim-mode leases ended, by reason: completed, given_back, expired, not_confirmed.",
            ["reason"],
            initial=[(reason,) for reason in ("completed", "given_back", "expired", "not_confirmed")],
        )
        r.register(
            SeriesCollector(
                self.dispatch, self.start, self.runs_handed, self.requests, self.request_seconds, self.leases_ended
            )
        )
        self.heartbeats = Counter(
            "workpools_heartbeats_total",
            "Worker heartbeats this replica handled, by outcome: received, recorded, shed (unknown pool).",
            ["outcome"],
            registry=r,
        )
        self.recovered = Counter(
            "workpools_recovered_messages_total",
            "Stream entries left by a replica that died, by outcome: reclaimed (served again), dead_lettered.",
            ["outcome"],
            registry=r,
        )
        self.foreman_holder = Gauge(
            "workpools_foreman_holder", "1 while this replica holds the foreman lease.", registry=r
        )
        self.foreman_ticks = Counter("workpools_foreman_ticks_total", "Foreman ticks this replica ran.", registry=r)
        self.foreman_transitions = Counter(
            "workpools_foreman_transitions_total",
            "Changes the foreman made, by kind (workers_offline, pools_not_ready, …).",
            ["kind"],
            registry=r,
        )
        self.db_timeouts = Counter(
            "workpools_db_timeouts_total",
            "Database work given up on a timeout, by kind (request, heartbeat, background) and reason "
            "(statement, lock, idle_in_transaction, not_answered, no_connection).",
            ["kind", "reason"],
            registry=r,
        )
        self.info = Gauge("workpools_replica_info", "This replica (value 1).", ["replica"], registry=r)
        self.info.labels(replica).set(1)
        for outcome in ("received", "recorded", "shed"):
            self.heartbeats.labels(outcome)
        for outcome in ("reclaimed", "dead_lettered"):
            self.recovered.labels(outcome)
        self.messages = MessageMetrics("workpools")
        r.register(self.messages)
        self.window = LatencyWindow()
        """Dispatch latencies since the last status-page flush (`observability.latency`)."""

    def count_request(self, op: str, status: str, seconds: float) -> None:
        """One request answered: its count and duration."""
        self.requests.inc((op, status))
        self.request_seconds.child((op,)).observe(seconds)

    def message_middleware(self) -> type[CountMessages]:
        """FastStream's message metrics (`faststream_*`) of the non-request subscribers, in this registry
        (`observability.message_metrics`)."""
        return self.messages.middleware()

    def observe(self, what: str, **facts: Any) -> None:
        """The services' observer: `Database.observe`."""
        try:
            handler = getattr(self, f"_on_{what}")
        except AttributeError:
            return
        handler(**facts)

    def _on_runs_handed(self, pool: str, claim: bool, now: datetime, due: Iterable[datetime | None]) -> None:
        key = (pool, "claim" if claim else "poll")
        waits = [max(0.0, (now - at).total_seconds()) for at in due if at is not None]
        self.dispatch.child(key).observe_many(waits)
        self.runs_handed.inc(key, len(waits))
        self.window.add("handed", waits)

    def _on_run_started(self, pool: str | None, due: datetime | None, now: datetime) -> None:
        if due is not None:
            wait = max(0.0, (now - due).total_seconds())
            self.start.child((pool or "",)).observe(wait)
            self.window.add("started", [wait])

    def _on_lease_ended(self, pool: str | None, reason: str) -> None:
        self.leases_ended.inc((reason,))

    def _on_heartbeats(self, received: int, recorded: int) -> None:
        self.heartbeats.labels("received").inc(received)
        self.heartbeats.labels("recorded").inc(recorded)
        self.heartbeats.labels("shed").inc(received - recorded)

    def _on_foreman(self, holds: bool) -> None:
        self.foreman_holder.set(1 if holds else 0)

    def _on_foreman_tick(self, report: Any) -> None:
        self.foreman_ticks.inc()
        for kind, count in vars(report).items():
            if count:
                self.foreman_transitions.labels(kind).inc(count)

    def _on_db_timeout(self, kind: str, reason: str) -> None:
        self.db_timeouts.labels(kind, reason).inc()

    def _on_recovered(self, outcome: str) -> None:
        self.recovered.labels(outcome).inc()


class LatencyWindow:
    """Bucket counts of the latencies seen since the last `take()`, per kind (handed, started)."""

    def __init__(self) -> None:
        self.counts: dict[str, list[int]] = {}

    def add(self, kind: str, waits: Iterable[float]) -> None:
        counts = self.counts.get(kind)
        if counts is None:
            counts = self.counts[kind] = [0] * (len(LATENCY_BUCKETS) + 1)
        for wait in waits:
            counts[_bucket(wait)] += 1

    def take(self) -> dict[str, list[int]]:
        taken, self.counts = self.counts, {}
        return taken


def _bucket(seconds: float) -> int:
    """The index of the first bucket whose bound is at least `seconds` (len: above them all)."""
    return bisect_left(LATENCY_BUCKETS, seconds)
