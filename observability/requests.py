"""Request metrics and request log lines: what the request gate (`replica.request_gate`) records
for every request once its reply's status is known."""

from __future__ import annotations

import logging

from observability.metrics import Metrics

log = logging.getLogger("workpools.requests")


class RequestRecorder:
    """Counts each request by operation and status (`expired`: dropped unexecuted) and times it
    (when metrics are collected), and logs one line (DEBUG; WARNING for 5xx) with its ids,
    status and duration."""

    __slots__ = ("metrics", "replica")

    def __init__(self, metrics: Metrics | None, replica: str) -> None:
        self.metrics = metrics
        self.replica = replica

    def record(self, op: str, status: str, elapsed: float) -> None:
        if self.metrics is not None:
            self.metrics.count_request(op, status, elapsed)
        level = logging.WARNING if status.startswith("5") else logging.DEBUG
        if log.isEnabledFor(level):
            log.log(
                level,
                "%s %s in %.1f ms",
                op,
                status,
                elapsed * 1000,
                extra={"status": status, "duration_ms": round(elapsed * 1000, 3), "replica": self.replica},
            )
