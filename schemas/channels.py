"""Every Redis stream, consumer group, channel and key name, built from one prefix.

Several deployments (or test runs) share one Redis by using different prefixes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

REQUEST_STREAM_MAXLEN: int | None = None
"""Request streams are not capped where they are appended to (a cap would drop accepted requests
nobody has read yet when a backlog builds); every replica trims what every group has read
(`replica.housekeeping`)."""


class Op(StrEnum):
    """Request/reply operations; each has its own stream `{prefix}.rpc.{op}`."""

    CREATE_WORK_POOL = "create_work_pool"
    READ_WORK_POOL = "read_work_pool"
    READ_WORK_POOLS = "read_work_pools"
    COUNT_WORK_POOLS = "count_work_pools"
    UPDATE_WORK_POOL = "update_work_pool"
    DELETE_WORK_POOL = "delete_work_pool"
    CREATE_WORK_QUEUE = "create_work_queue"
    READ_WORK_QUEUE = "read_work_queue"
    READ_WORK_QUEUES = "read_work_queues"
    UPDATE_WORK_QUEUE = "update_work_queue"
    DELETE_WORK_QUEUE = "delete_work_queue"
    WORKER_HEARTBEAT = "worker_heartbeat"
    READ_WORKERS = "read_workers"
    DELETE_WORKER = "delete_worker"
    CREATE_DEPLOYMENT = "create_deployment"
    READ_DEPLOYMENT = "read_deployment"
    READ_DEPLOYMENTS = "read_deployments"
    CREATE_FLOW_RUN = "create_flow_run"
    READ_FLOW_RUN = "read_flow_run"
    READ_FLOW_RUNS = "read_flow_runs"
    SET_FLOW_RUN_STATE = "set_flow_run_state"
    GET_SCHEDULED_FLOW_RUNS = "get_scheduled_flow_runs"
    PREVIEW_SCHEDULED_FLOW_RUNS = "preview_scheduled_flow_runs"


@dataclass(frozen=True)
class Channels:
    prefix: str = "workpools"

    def rpc(self, op: Op | str) -> str:
        return f"{self.prefix}.rpc.{op}"

    @property
    def rpc_group(self) -> str:
        return f"{self.prefix}.rpc"

    def reply(self, client_id: str, user: str | None = None) -> str:
        """Pub/sub: the replies to one client's requests (the client names it in `reply_to`). A
        client logged in as a Redis user answers in that user's own namespace,
        `{prefix}.reply.{user}.*`, which only that user's ACL may read (README, Security)."""
        return f"{self.replies}.{user}.{client_id}" if user else f"{self.replies}.{client_id}"

    def answers_on(self, channel: str) -> bool:
        """Whether the service publishes answers on `channel`: only inside its reply namespaces
        (`{prefix}.reply.*`, `{prefix}.workers.reply.*`), never on a channel a request merely names."""
        return channel.startswith((f"{self.replies}.", f"{self.prefix}.workers.reply."))

    @property
    def replies(self) -> str:
        """What every client's reply channel starts with (the reply channel in the AsyncAPI document)."""
        return f"{self.prefix}.reply"

    @property
    def events(self) -> str:
        return f"{self.prefix}.events"

    @property
    def ready(self) -> str:
        """Ready marks published after each poll, read by the ready-marker consumer group."""
        return f"{self.prefix}.ready"

    @property
    def ready_group(self) -> str:
        return f"{self.prefix}.ready"

    @property
    def worker_heartbeats(self) -> str:
        """Pub/sub: workers publish heartbeats here."""
        return f"{self.prefix}.workers.heartbeat"

    @property
    def worker_polls(self) -> str:
        """Pub/sub: workers publish polls here (answered on their `reply_to`)."""
        return f"{self.prefix}.workers.poll"

    def worker_reply(self, worker_id: str) -> str:
        """Pub/sub: answers to one worker client's messages (the Python `WorkerClient`'s choice;
        any worker may name any channel in `reply_to`)."""
        return f"{self.prefix}.workers.reply.{worker_id}"

    @property
    def wake(self) -> str:
        """Pub/sub: a pool name, published after a commit that may have made work available."""
        return f"{self.prefix}.wake"

    def seen(self, digest: str) -> str:
        """Short-lived key: the replica that sets it first handles that worker message."""
        return f"{self.prefix}.seen.{digest}"

    @property
    def dead(self) -> str:
        """Dead letters: messages that were never answered, with the reason."""
        return f"{self.prefix}.dead"

    @property
    def foreman_lease(self) -> str:
        """Key held by the replica whose foreman loop is active."""
        return f"{self.prefix}.foreman.lease"

    @property
    def probe(self) -> str:
        """Key a replica writes and deletes at start, to check its Redis rights."""
        return f"{self.prefix}.probe"

    @property
    def status(self) -> str:
        """Key: the status snapshot (pools, queues, workers) the foreman's replica computes."""
        return f"{self.prefix}.status"

    @property
    def dispatch_latency(self) -> str:
        """Stream: each replica's dispatch-latency histogram per few seconds, for the status page."""
        return f"{self.prefix}.dispatch-latency"

    def all_rpc_streams(self) -> list[str]:
        return [self.rpc(op) for op in Op]
