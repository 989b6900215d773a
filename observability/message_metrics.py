"""FastStream's message metrics (`faststream_*`: every message a replica handles or publishes, by
stream or channel), under the names, labels and buckets FastStream's own Prometheus middleware
gives them, kept at a fraction of its cost.

FastStream's middleware builds a settings object, a label dict and six `.labels(...)` lookups for
every message (three for every publish), each update taking a lock. Here a message costs one
dict lookup and a few integer additions on plain counters (`observability.series`); the
Prometheus families are built from them when `/metrics` is scraped.

Requests are counted by the request gate (`replica.request_gate`, through
`observability.requests`), which times every request anyway: a middleware of its own would be
built, entered and left by FastStream for every request and its reply. `CountMessages` counts
the other subscribers' messages (worker polls, ready marks).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from faststream import BaseMiddleware
from faststream.exceptions import AckMessage, IgnoredException, NackMessage, RejectMessage, SkipMessage
from faststream.message import SourceType
from faststream.message.message import AckStatus
from faststream.prometheus.container import MetricsContainer
from faststream.response import PublishType
from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from observability.series import Buckets

BROKER = "redis"
SIZE_BUCKETS: tuple[float, ...] = tuple(MetricsContainer.DEFAULT_SIZE_BUCKETS)
"""Bytes, as FastStream's middleware buckets message sizes (the last bound is +Inf)."""
DURATION_BUCKETS: tuple[float, ...] = tuple(Histogram.DEFAULT_BUCKETS)
"""Seconds, prometheus_client's default buckets, as FastStream's middleware times messages."""

STATUS_BY_ACK = {AckStatus.ACKED: "acked", AckStatus.NACKED: "nacked", AckStatus.REJECTED: "rejected"}
STATUS_BY_EXCEPTION = {AckMessage: "acked", NackMessage: "nacked", RejectMessage: "rejected", SkipMessage: "skipped"}


class Received:
    """What one stream or channel's handler received."""

    __slots__ = ("count", "duration", "errors", "in_process", "size", "statuses")

    def __init__(self) -> None:
        self.count = 0
        self.in_process = 0
        self.size = Buckets(SIZE_BUCKETS)
        self.duration = Buckets(DURATION_BUCKETS)
        self.statuses: dict[str, int] = {}
        self.errors: dict[str, int] = {}


class Published:
    """What was published to one destination (replies excluded, as FastStream's middleware does)."""

    __slots__ = ("duration", "errors", "statuses")

    def __init__(self) -> None:
        self.duration = Buckets(DURATION_BUCKETS)
        self.statuses: dict[str, int] = {}
        self.errors: dict[str, int] = {}


class MessageMetrics(Collector):
    """The counts, and the collector that turns them into the `faststream_*` families."""

    def __init__(self, app_name: str) -> None:
        self.app_name = app_name
        self.received: dict[str, Received] = {}
        self.published: dict[str, Published] = {}

    def middleware(self) -> type[CountMessages]:
        """The broker middleware that counts into this."""
        return type("CountMessagesInto", (CountMessages,), {"metrics": self})

    def receiving(self, handler: str) -> Received:
        stats = self.received.get(handler)
        if stats is None:
            stats = self.received[handler] = Received()
        return stats

    def publishing(self, destination: str) -> Published:
        stats = self.published.get(destination)
        if stats is None:
            stats = self.published[destination] = Published()
        return stats

    def collect(self) -> Iterator[Metric]:
        app, p = self.app_name, "faststream"
        received = list(self.received.items())
        published = list(self.published.items())
        by_handler = ["app_name", "broker", "handler"]
        total = CounterMetricFamily(
            f"{p}_received_messages", "Count of received messages by broker and handler", labels=by_handler
        )
        size = HistogramMetricFamily(
            f"{p}_received_messages_size_bytes",
            "Histogram of received messages size in bytes by broker and handler",
            labels=by_handler,
        )
        in_process = GaugeMetricFamily(
            f"{p}_received_messages_in_process",
            "Gauge of received messages in process by broker and handler",
            labels=by_handler,
        )
        processed = CounterMetricFamily(
            f"{p}_received_processed_messages",
            "Count of received processed messages by broker, handler and status",
            labels=[*by_handler, "status"],
        )
        duration = HistogramMetricFamily(
            f"{p}_received_processed_messages_duration_seconds",
            "Histogram of received processed messages duration in seconds by broker and handler",
            labels=by_handler,
        )
        errors = CounterMetricFamily(
            f"{p}_received_processed_messages_exceptions",
            "Count of received processed messages exceptions by broker, handler and exception_type",
            labels=[*by_handler, "exception_type"],
        )
        for handler, r in received:
            labels = [app, BROKER, handler]
            total.add_metric(labels, r.count)
            size.add_metric(labels, r.size.cumulative(), r.size.total)
            in_process.add_metric(labels, r.in_process)
            duration.add_metric(labels, r.duration.cumulative(), r.duration.total)
            for status, count in list(r.statuses.items()):
                processed.add_metric([*labels, status], count)
            for kind, count in list(r.errors.items()):
                errors.add_metric([*labels, kind], count)
        by_destination = ["app_name", "broker", "destination"]
        pub_total = CounterMetricFamily(
            f"{p}_published_messages",
            "Count of published messages by destination and status",
            labels=[*by_destination, "status"],
        )
        pub_duration = HistogramMetricFamily(
            f"{p}_published_messages_duration_seconds",
            "Histogram of published messages duration in seconds by broker and destination",
            labels=by_destination,
        )
        pub_errors = CounterMetricFamily(
            f"{p}_published_messages_exceptions",
            "Count of published messages exceptions by broker, destination and exception_type",
            labels=[*by_destination, "exception_type"],
        )
        for destination, s in published:
            labels = [app, BROKER, destination]
            pub_duration.add_metric(labels, s.duration.cumulative(), s.duration.total)
            for status, count in list(s.statuses.items()):
                pub_total.add_metric([*labels, status], count)
            for kind, count in list(s.errors.items()):
                pub_errors.add_metric([*labels, kind], count)
        yield from (total, size, in_process, processed, duration, errors, pub_total, pub_duration, pub_errors)


class CountMessages(BaseMiddleware):
    """Counts every message handled (received, size, in process, status, duration, exception
    type) and every message published (status, duration, exception type), into `metrics`."""

    metrics: MessageMetrics

    async def consume_scope(self, call_next: Any, msg: Any) -> Any:
        if msg.source_type is SourceType.RESPONSE:
            return await call_next(msg)
        raw = msg.raw_message
        handler = raw.get("channel") or raw.get("list") or raw.get("stream") or ""
        count = len(raw["data"]) if raw.get("type", "").startswith("b") else 1
        stats = self.metrics.receiving(handler)
        stats.count += count
        stats.size.observe(len(msg.body))
        stats.in_process += count
        status = "acked"
        started = time.perf_counter()
        try:
            return await call_next(msg)
        except Exception as exc:
            status = STATUS_BY_EXCEPTION.get(type(exc), "error")  # type: ignore[arg-type]
            if not isinstance(exc, IgnoredException):
                kind = type(exc).__name__
                stats.errors[kind] = stats.errors.get(kind, 0) + 1
            raise
        finally:
            stats.duration.observe(time.perf_counter() - started)
            stats.in_process -= count
            if msg.committed is not None:
                status = STATUS_BY_ACK.get(msg.committed, status)
            stats.statuses[status] = stats.statuses.get(status, 0) + count

    async def publish_scope(self, call_next: Any, cmd: Any) -> Any:
        if cmd.publish_type is PublishType.REPLY:
            return await call_next(cmd)
        stats = self.metrics.publishing(cmd.destination)
        status = "success"
        started = time.perf_counter()
        try:
            return await call_next(cmd)
        except Exception as exc:
            status = "error"
            kind = type(exc).__name__
            stats.errors[kind] = stats.errors.get(kind, 0) + 1
            raise
        finally:
            stats.duration.observe(time.perf_counter() - started)
            stats.statuses[status] = stats.statuses.get(status, 0) + len(cmd.batch_bodies)
