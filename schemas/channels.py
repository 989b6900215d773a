"""Every Redis stream, consumer group, channel and key name, built from one prefix.

Several deployments (or test runs) share one Redis by using different prefixes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


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


@dataclass(frozen=True)
class Channels:
    prefix: str = "workpools"

    def rpc(self, op: Op | str) -> str:
        return f"{self.prefix}.rpc.{op}"

    @property
    def rpc_group(self) -> str:
        return f"{self.prefix}.rpc"

    def reply(self, client_id: str) -> str:
        return f"{self.prefix}.reply.{client_id}"

    @property
    def events(self) -> str:
        return f"{self.prefix}.events"

    def all_rpc_streams(self) -> list[str]:
        return [self.rpc(op) for op in Op]
