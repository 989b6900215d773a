"""Request metrics and request log lines: what the request gate (`replica.request_gate`) records
for every request once its reply's status is known."""

from __future__ import annotations

import logging

from observability.message_metrics import Received
from observability.metrics import Metrics

log = logging.getLogger("workpools.requests")


class RequestRecorder:
    """Counts each request by operation and status (`expired`: dropped unexecuted) and times it,
    with FastStream's message metrics of its stream (when metrics are collected), and logs one
    line (DEBUG; WARNING for 5xx) with its ids, status and duration."""

    __slots__ = ("metrics", "replica")

    def __init__(self, metrics: Metrics | None, replica: str) -> None:
        self.metrics = metrics
        self.replica = replica

    def received(self, stream: str, size: int) -> Received | None:
        """A request arrived on `stream`: its message counted, in process (None: not collected)."""
        if self.metrics is None:
            return None
        message = self.metrics.messages.receiving(stream)
        message.count += 1
        message.size.observe(size)
        message.in_process += 1
        return message

    def record(self, op: str, status: str, elapsed: float, message: Received | None = None) -> None:
        if self.metrics is not None:
            self.metrics.count_request(op, status, elapsed)
        if message is not None:
            # the gate answers every request (errors included) or acknowledges it unanswered
            # (expired): FastStream's middleware would count it `acked` either way
            message.in_process -= 1
            message.duration.observe(elapsed)
            message.statuses["acked"] = message.statuses.get("acked", 0) + 1
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
