"""Request metrics and request log lines, as one FastStream middleware on the request router
(outermost, so it sees every reply's status after the error table made it)."""

from __future__ import annotations

import logging
import time
from typing import Any

from faststream import BaseMiddleware
from faststream.exceptions import AckMessage

from observability.logs import request_ids
from observability.metrics import Metrics

log = logging.getLogger("workpools.requests")


class ObserveRequests(BaseMiddleware):
    """Counts each request by operation and status (`expired`: dropped unexecuted) and times it
    (when metrics are collected), and logs one line (DEBUG; WARNING for 5xx) with its ids,
    status and duration."""

    metrics: Metrics | None
    replica: str

    async def consume_scope(self, call_next: Any, msg: Any) -> Any:
        op = str(msg.raw_message.get("channel", "")).rsplit(".", 1)[-1]
        ids = {"operation": op, "correlation_id": msg.correlation_id}
        if request_id := msg.headers.get("request_id"):
            ids["request_id"] = request_id
        token = request_ids.set(ids)
        started = time.perf_counter()
        status = "500"
        try:
            response = await call_next(msg)
            status = str((getattr(response, "headers", None) or {}).get("status", "200"))
            return response
        except AckMessage:
            status = "expired"
            raise
        finally:
            elapsed = time.perf_counter() - started
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
            request_ids.reset(token)


def observe_requests(metrics: Metrics | None, replica: str) -> type[ObserveRequests]:
    return type("ObserveRequestsOf", (ObserveRequests,), {"metrics": metrics, "replica": replica})
