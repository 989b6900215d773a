"""The worker channel: plain JSON messages on Redis pub/sub, for workers in any language.

Workers PUBLISH to `{prefix}.workers.heartbeat` and `{prefix}.workers.poll` (a worker logged in as
Redis user U: `{prefix}.workers.heartbeat.U`, `{prefix}.workers.poll.U`). A message that wants an
answer names a pub/sub channel in `reply_to` and an id in `correlation_id`; the answer is
published there once, by one replica, as a `WorkerReply` — only when `reply_to` lies in the reply
namespace of the channel the message came in on (`Channels.answers_worker_on`). Field names never include a
top-level `data` key (FastStream would take such a message for its own envelope).

Every message acts once however late it arrives: it is known by its id (`message_id`, else a
poll's `correlation_id`, else a hash of its bytes) for twice its lifetime, and a message whose
`sent_at` is more than `MESSAGE_LIFETIME_SECONDS` away from the replica's clock is refused
(answered 422 when it asks for an answer) instead of acting.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from schemas.common import ActionModel, DepthBounded, Int32, ResponseModel, UTCDateTime, WorkerName
from schemas.scheduling import ClaimOptions
from schemas.wire import ErrorKind

MESSAGE_LIFETIME_SECONDS = 30.0
"""A worker message older than this (by its `sent_at`) is refused; ids are remembered twice as long."""


class WorkerMessage(DepthBounded, ActionModel):
    message_id: str | None = Field(
        default=None, min_length=1, max_length=200, description="Unique per message: it acts once."
    )
    sent_at: float | None = Field(
        default=None,
        description="When it was sent (unix seconds). Messages older than 30 s are refused; without "
        "it a message delivered more than 60 s late could act again.",
    )


class HeartbeatMessage(WorkerMessage):
    work_pool_name: str
    worker_name: WorkerName
    heartbeat_interval_seconds: Int32 | None = None
    lease_tokens: list[int] | None = Field(
        default=None,
        max_length=10_000,
        description="The leases this worker holds: exactly these are renewed, and a lease of this "
        "worker not named for longer than the grace is released. Omitted: every live lease of the "
        "worker is renewed (the Prefect-compatible heartbeat).",
    )
    correlation_id: str | None = Field(default=None, max_length=200)
    reply_to: str | None = Field(
        default=None,
        max_length=500,
        description="Ask for an acknowledgement here: a channel in the reply namespace of the channel the "
        "heartbeat is published on ({prefix}.reply.U.* for user U's channel); elsewhere the heartbeat is "
        "recorded but not answered.",
    )


class PollMessage(ClaimOptions, WorkerMessage):
    correlation_id: str = Field(min_length=1, max_length=200)
    reply_to: str = Field(
        min_length=1,
        max_length=500,
        description="Where to answer: a channel in the reply namespace of the channel the poll is published "
        "on ({prefix}.reply.U.* for user U's channel); elsewhere the poll is not acted on and not answered.",
    )
    request_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="A claim sent again with the same request_id (no answer came) returns the same batch.",
    )
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


class RenewedLease(ResponseModel):
    token: int
    seconds_left: float
    """The lease now ends this long after the heartbeat was recorded."""


class WorkerReply(ResponseModel):
    correlation_id: str
    status: int
    result: Any = None
    detail: Any = None
    error: ErrorKind | None = None
    """An error's kind, as in the `error` header of a stream reply."""
