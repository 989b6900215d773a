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
        """Pub/sub: workers of the default Redis user publish heartbeats here (the shared channel)."""
        return f"{self.prefix}.workers.heartbeat"

    @property
    def worker_polls(self) -> str:
        """Pub/sub: workers of the default Redis user publish polls here (answered on their `reply_to`)."""
        return f"{self.prefix}.workers.poll"

    def worker_heartbeats_of(self, user: str | None) -> str:
        """Pub/sub: the heartbeat channel of one Redis user's workers, `{prefix}.workers.heartbeat.{user}`
        (the shared channel for the default user). Only that user's ACL may publish on it, so the
        channel tells the service whose message it is (README, Security)."""
        return f"{self.worker_heartbeats}.{user}" if user else self.worker_heartbeats

    def worker_polls_of(self, user: str | None) -> str:
        """Pub/sub: the poll channel of one Redis user's workers, `{prefix}.workers.poll.{user}`."""
        return f"{self.worker_polls}.{user}" if user else self.worker_polls

    @property
    def users_worker_heartbeats(self) -> str:
        """The pattern every user's heartbeat channel matches (the service PSUBSCRIBEs to it)."""
        return f"{self.worker_heartbeats}.*"

    @property
    def users_worker_polls(self) -> str:
        """The pattern every user's poll channel matches (the service PSUBSCRIBEs to it)."""
        return f"{self.worker_polls}.*"

    def worker_channel_user(self, channel: str) -> str | None:
        """Whose worker channel a message came in on: the user of `…heartbeat.{user}` or
        `…poll.{user}`, None for the shared channels."""
        for shared in (self.worker_heartbeats, self.worker_polls):
            if channel.startswith(f"{shared}."):
                return channel[len(shared) + 1 :]
        return None

    def worker_reply(self, worker_id: str, user: str | None = None) -> str:
        """Pub/sub: answers to one worker's messages, `{prefix}.workers.reply.[{user}.]{worker_id}`
        (a worker may also name a channel of `reply`). The service answers a worker message only
        inside the reply namespace of the user whose worker channel it came in on
        (`answers_worker_on`)."""
        return f"{self.prefix}.workers.reply.{user}.{worker_id}" if user else f"{self.prefix}.workers.reply.{worker_id}"

    def worker_reply_namespace(self, user: str | None) -> tuple[str, ...]:
        """What the `reply_to` of a message on `user`'s worker channel must start with: that
        user's `{prefix}.reply.{user}.` or `{prefix}.workers.reply.{user}.`; for the shared
        channels, the service's reply namespaces."""
        if user is None:
            return (f"{self.replies}.", f"{self.prefix}.workers.reply.")
        return (f"{self.replies}.{user}.", f"{self.prefix}.workers.reply.{user}.")

    def answers_worker_on(self, reply_to: str, user: str | None) -> bool:
        """Whether the service answers, on `reply_to`, a worker message that came in on `user`'s
        worker channel (None: a shared one): only inside `worker_reply_namespace(user)`, so a
        worker can have an answer delivered only where its own user reads."""
        return reply_to.startswith(self.worker_reply_namespace(user))

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
