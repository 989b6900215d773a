"""`observability.message_metrics` keeps the series FastStream's own Prometheus middleware keeps:
the same messages through both (FastStream's test broker) give the same samples."""

from __future__ import annotations

from typing import Any

import pytest
from faststream.redis import RedisBroker, TestRedisBroker
from faststream.redis.prometheus import RedisPrometheusMiddleware
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from observability.message_metrics import MessageMetrics

TIMED = ("_duration_seconds_bucket", "_duration_seconds_sum")


def series(registry: CollectorRegistry) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """Every series' name and labels, timings included."""
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))) for f in text_string_to_metric_families(text) for s in f.samples}


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample but the timings (which differ run to run), by name and labels."""
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith(TIMED) and not s.name.endswith("_created")
    }


async def drive(middleware: Any) -> None:
    broker = RedisBroker(middlewares=[middleware])

    @broker.subscriber("jobs")
    async def jobs(body: dict[str, Any]) -> None:
        if body.get("fail"):
            raise ValueError("boom")
        await broker.publish({"done": body["n"]}, channel="done")

    @broker.subscriber("done")
    async def done(body: dict[str, Any]) -> None:
        return None

    async with TestRedisBroker(broker) as test_broker:
        for n in range(3):
            await test_broker.publish({"n": n}, channel="jobs")
        with pytest.raises(ValueError):
            await test_broker.publish({"n": 9, "fail": True}, channel="jobs")


async def test_the_same_series_and_counts_as_faststreams_own_middleware() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    await drive(RedisPrometheusMiddleware(registry=theirs, app_name="workpools"))
    metrics = MessageMetrics("workpools")
    ours.register(metrics)
    await drive(metrics.middleware())

    expected = samples(theirs)
    assert samples(ours) == expected
    assert series(ours) == series(theirs)

    def at(name: str, **labels: str) -> float:
        return expected[(name, tuple(sorted({"app_name": "workpools", "broker": "redis", **labels}.items())))]

    assert at("faststream_received_messages_total", handler="jobs") == 4
    assert at("faststream_received_processed_messages_total", handler="jobs", status="acked") == 3
    assert at("faststream_received_processed_messages_total", handler="jobs", status="error") == 1
    assert (
        at("faststream_received_processed_messages_exceptions_total", handler="jobs", exception_type="ValueError") == 1
    )
    assert at("faststream_received_processed_messages_duration_seconds_count", handler="jobs") == 4
    assert at("faststream_received_messages_size_bytes_count", handler="jobs") == 4
    assert at("faststream_received_messages_in_process", handler="jobs") == 0
    assert at("faststream_published_messages_total", destination="done", status="success") == 3
    assert at("faststream_received_messages_total", handler="done") == 3
