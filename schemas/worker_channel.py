"""The worker channel: plain JSON messages on Redis pub/sub, for workers in any language.

Workers PUBLISH to `{prefix}.workers.heartbeat` and `{prefix}.workers.poll`. A message that
wants an answer names a pub/sub channel in `reply_to` and an id in `correlation_id`; the answer
is published there once, by one replica, as a `WorkerReply`. Field names never include a
top-level `data` key (FastStream would take such a message for its own envelope).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from schemas.common import ActionModel, DepthBounded, Int32, ResponseModel, UTCDateTime, WorkerName
from schemas.scheduling import ClaimOptions
from schemas.wire import ErrorKind


class HeartbeatMessage(DepthBounded, ActionModel):
    message_id: str | None = Field(
        default=None, max_length=200, description="Unique per message; identical messages within 10 s count once."
    )
    work_pool_name: str
    worker_name: WorkerName
    heartbeat_interval_seconds: Int32 | None = None
    correlation_id: str | None = None
    reply_to: str | None = Field(default=None, description="Ask for an acknowledgement here.")


class PollMessage(DepthBounded, ClaimOptions):
    correlation_id: str = Field(min_length=1, max_length=200)
    reply_to: str = Field(min_length=1, max_length=500)
    work_pool_name: str
    worker_name: str | None = None
    work_queue_names: list[str] | None = None
    scheduled_before: UTCDateTime | None = None
    scheduled_after: UTCDateTime | None = None
    limit: int | None = None
    wait_seconds: float = Field(default=0, ge=0, le=60)
    """Long poll: with nothing to hand out, answer as soon as a run becomes due or a slot
    frees, or when this many seconds have passed (then with an empty list). A bounded
    `scheduled_before` slides with time while the poll waits."""


class WorkerReply(ResponseModel):
    correlation_id: str
    status: int
    result: Any = None
    detail: Any = None
    error: ErrorKind | None = None
    """An error's kind, as in the `error` header of a stream reply."""
