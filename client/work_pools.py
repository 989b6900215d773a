"""`WorkPoolClient`: Prefect's work-pool client methods, over workpools' Redis RPC."""

from __future__ import annotations

import asyncio
from typing import Any

from client.deployments import DeploymentMethods
from client.errors import ServiceUnavailable, error_for
from client.flow_runs import FlowRunMethods
from client.payloads import payload, request_body
from client.transport import RpcTransport, new_id
from schemas import wire
from schemas.channels import Op
from schemas.events import Event
from schemas.operations import OPERATIONS
from schemas.work_pools import WorkPool, WorkPoolCreate, WorkPoolFilter, WorkPoolUpdate
from schemas.work_queues import WorkQueue, WorkQueueCreate, WorkQueueFilter, WorkQueueUpdate
from schemas.workers import Worker, WorkerFilter


class WorkPoolClient(DeploymentMethods, FlowRunMethods):
    """`async with WorkPoolClient(redis_url=..., prefix=...) as client: ...`"""

    def __init__(
        self,
        redis_url: str | None = None,
        prefix: str | None = None,
        timeout: float = 30.0,
        retries: int = 2,
    ) -> None:
        """`redis_url` and `prefix` default to `WORKPOOLS_REDIS_URL` and `WORKPOOLS_PREFIX`
        (then `redis://localhost:6379/0` and `workpools`), as for the service."""
        self._rpc = RpcTransport(redis_url, prefix, timeout=timeout, owner=type(self).__name__)
        self.retries = retries
        """Retries after 503/504 or a lost connection, with the same request id (so a write
        that did happen is not done again: its first reply comes back)."""

    async def __aenter__(self) -> WorkPoolClient:
        await self._rpc.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._rpc.close()

    async def _call(self, op: Op, body: dict[str, Any] | None) -> Any:
        """Send `op`; its success reply comes back as the operation's reply type (the operation
        table), an error reply raises. Retried with the same request id (see `retries`)."""
        text = request_body(op, body)
        request_id = new_id()
        for attempt in range(self.retries + 1):
            try:
                status, reply, headers = await self._rpc.exchange_text(op, text, request_id=request_id)
            except ServiceUnavailable:
                if attempt == self.retries:
                    raise
                await asyncio.sleep(0.2 * 2**attempt)
                continue
            if status != 503 or attempt == self.retries:
                break
            await asyncio.sleep(0.2 * 2**attempt)
        if status >= 400:
            result = wire.parse_body(reply)
            detail = (result or {}).get("detail") if isinstance(result, dict) else result
            raise error_for(status, detail, headers.get(wire.ERROR_HEADER))
        return OPERATIONS[op].parse_reply_json(reply)

    # work pools

    async def create_work_pool(self, work_pool: WorkPoolCreate | dict[str, Any]) -> WorkPool:
        return await self._call(Op.CREATE_WORK_POOL, payload(WorkPoolCreate, work_pool))

    async def read_work_pool(self, name: str) -> WorkPool:
        return await self._call(Op.READ_WORK_POOL, {"name": name})

    async def read_work_pools(
        self, limit: int | None = None, offset: int = 0, work_pool_filter: WorkPoolFilter | dict[str, Any] | None = None
    ) -> list[WorkPool]:
        body = {"work_pools": payload(WorkPoolFilter, work_pool_filter), "limit": limit, "offset": offset}
        return await self._call(Op.READ_WORK_POOLS, body)

    async def count_work_pools(self, work_pool_filter: WorkPoolFilter | dict[str, Any] | None = None) -> int:
        return await self._call(Op.COUNT_WORK_POOLS, {"work_pools": payload(WorkPoolFilter, work_pool_filter)})

    async def update_work_pool(self, name: str, work_pool: WorkPoolUpdate | dict[str, Any]) -> None:
        await self._call(Op.UPDATE_WORK_POOL, {"name": name, "work_pool": payload(WorkPoolUpdate, work_pool)})

    async def delete_work_pool(self, name: str) -> None:
        await self._call(Op.DELETE_WORK_POOL, {"name": name})

    # work queues

    async def create_work_queue(self, work_pool_name: str, work_queue: WorkQueueCreate | dict[str, Any]) -> WorkQueue:
        body = {"work_pool_name": work_pool_name, "work_queue": payload(WorkQueueCreate, work_queue)}
        return await self._call(Op.CREATE_WORK_QUEUE, body)

    async def read_work_queue(self, work_pool_name: str, work_queue_name: str) -> WorkQueue:
        body = {"work_pool_name": work_pool_name, "name": work_queue_name}
        return await self._call(Op.READ_WORK_QUEUE, body)

    async def read_work_queues(
        self,
        work_pool_name: str,
        work_queue_filter: WorkQueueFilter | dict[str, Any] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[WorkQueue]:
        body = {
            "work_pool_name": work_pool_name,
            "work_queues": payload(WorkQueueFilter, work_queue_filter),
            "limit": limit,
            "offset": offset,
        }
        return await self._call(Op.READ_WORK_QUEUES, body)

    async def update_work_queue(
        self, work_pool_name: str, work_queue_name: str, work_queue: WorkQueueUpdate | dict[str, Any]
    ) -> None:
        body = {
            "work_pool_name": work_pool_name,
            "name": work_queue_name,
            "work_queue": payload(WorkQueueUpdate, work_queue),
        }
        await self._call(Op.UPDATE_WORK_QUEUE, body)

    async def delete_work_queue(self, work_pool_name: str, work_queue_name: str) -> None:
        await self._call(Op.DELETE_WORK_QUEUE, {"work_pool_name": work_pool_name, "name": work_queue_name})

    # workers

    async def send_worker_heartbeat(
        self, work_pool_name: str, worker_name: str, heartbeat_interval_seconds: float | None = None
    ) -> None:
        body = {
            "work_pool_name": work_pool_name,
            "name": worker_name,
            "heartbeat_interval_seconds": heartbeat_interval_seconds,
        }
        await self._call(Op.WORKER_HEARTBEAT, body)

    async def read_workers_for_work_pool(
        self,
        work_pool_name: str,
        worker_filter: WorkerFilter | dict[str, Any] | None = None,
        offset: int | None = None,
        limit: int | None = None,
    ) -> list[Worker]:
        body = {
            "work_pool_name": work_pool_name,
            "workers": payload(WorkerFilter, worker_filter),
            "offset": offset,
            "limit": limit,
        }
        return await self._call(Op.READ_WORKERS, body)

    async def delete_worker(self, work_pool_name: str, worker_name: str) -> None:
        await self._call(Op.DELETE_WORKER, {"work_pool_name": work_pool_name, "name": worker_name})

    # events

    async def read_events(self, after: str | None = None, count: int = 100) -> list[Event]:
        """Events oldest first: from the start, or those after the event whose `id` is given."""
        self._rpc.check_open()
        redis, stream = self._rpc.redis, self._rpc.channels.events
        start = "-"
        if after is not None:
            start = await self._entry_after(str(after))
        entries = await redis.xrange(stream, min=start, max="+", count=count)
        return [Event.model_validate_json(fields[b"event"]) for _, fields in entries]

    async def _entry_after(self, event_id: str, chunk: int = 1000) -> str:
        """The exclusive stream position after an event, searched from the newest end (where
        readers following the stream usually are). Unknown or trimmed ids read from the start."""
        redis, stream, end = self._rpc.redis, self._rpc.channels.events, "+"
        while entries := await redis.xrevrange(stream, max=end, min="-", count=chunk):
            for entry_id, fields in entries:
                if fields.get(b"id", b"").decode() == event_id:
                    return "(" + entry_id.decode()
            end = "(" + entries[-1][0].decode()
        return "-"
