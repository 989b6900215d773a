"""`WorkerClient`: a worker's side of workpools — heartbeats and polls over Redis pub/sub."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import datetime
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError

from client.errors import ServiceUnavailable, error_for
from client.transport import ReplyChannel, connect_redis, redis_user
from schemas.channels import Channels
from schemas.scheduling import WorkerFlowRun


def _decode(raw: bytes) -> tuple[str, dict[str, Any]]:
    reply = json.loads(raw)
    return reply["correlation_id"], reply


class WorkerClient:
    """`async with WorkerClient(redis_url=..., prefix=..., work_pool_name=..., worker_name=...) as w:`"""

    def __init__(
        self,
        redis_url: str = "redis://localhost:6379/0",
        prefix: str = "workpools",
        *,
        work_pool_name: str,
        worker_name: str,
        heartbeat_interval_seconds: int | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.channels = Channels(prefix)
        self.work_pool_name = work_pool_name
        self.worker_name = worker_name
        self.heartbeat_interval_seconds = heartbeat_interval_seconds
        self.timeout = timeout
        self.redis = connect_redis(redis_url, 8, timeout)
        self.replies = ReplyChannel(
            self.redis, self.channels.reply(uuid.uuid4().hex, redis_user(redis_url)), _decode, timeout
        )

    async def __aenter__(self) -> WorkerClient:
        await self.replies.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.replies.close()
        await self.redis.aclose()
        await self.redis.connection_pool.disconnect()

    async def _ask(self, channel: str, message: dict[str, Any], timeout: float | None = None) -> Any:
        correlation_id = uuid.uuid4().hex
        future = self.replies.expect(correlation_id)
        message = {
            **message,
            "correlation_id": correlation_id,
            "reply_to": self.replies.channel,
            "sent_at": time.time(),
        }
        try:
            await self.redis.publish(channel, json.dumps(message))
            reply = await asyncio.wait_for(future, timeout or self.timeout)
        except TimeoutError:
            raise ServiceUnavailable(504, "No reply from workpools in time.") from None
        except (RedisConnectionError, OSError) as exc:
            raise ServiceUnavailable(503, f"Redis is not reachable: {exc}") from None
        finally:
            self.replies.forget(correlation_id)
        if reply["status"] >= 400:
            raise error_for(reply["status"], reply.get("detail"), reply.get("error"))
        return reply.get("result")

    def _heartbeat(self, lease_tokens: list[int] | None) -> dict[str, Any]:
        beat: dict[str, Any] = {
            "message_id": uuid.uuid4().hex,
            "sent_at": time.time(),
            "work_pool_name": self.work_pool_name,
            "worker_name": self.worker_name,
            "heartbeat_interval_seconds": self.heartbeat_interval_seconds,
        }
        if lease_tokens is not None:
            beat["lease_tokens"] = lease_tokens
        return beat

    async def heartbeat(self, ack: bool = False, lease_tokens: list[int] | None = None) -> dict[int, float] | None:
        """Publish a heartbeat; with `ack`, wait until it is recorded (404 if the pool is unknown).

        `lease_tokens`: the leases this worker holds. Exactly those are renewed, and its other
        leases are released once older than the grace (5 s); acknowledged, the answer says which
        were renewed: token -> seconds left. Without it every live lease of the worker is renewed."""
        beat = self._heartbeat(lease_tokens)
        if ack:
            result = await self._ask(self.channels.worker_heartbeats, beat)
            if lease_tokens is None or not result:
                return None
            return {lease["token"]: lease["seconds_left"] for lease in result["leases"]}
        try:
            await self.redis.publish(self.channels.worker_heartbeats, json.dumps(beat))
        except (RedisConnectionError, OSError) as exc:
            raise ServiceUnavailable(503, f"Redis is not reachable: {exc}") from None
        return None

    async def get_scheduled_flow_runs(
        self,
        work_queue_names: list[str] | None = None,
        scheduled_before: datetime | None = None,
        scheduled_after: datetime | None = None,
        limit: int | None = None,
        *,
        claim: bool = False,
        lease_seconds: float | None = None,
        wait_seconds: float = 0,
        request_id: str | None = None,
    ) -> list[WorkerFlowRun]:
        """Poll. `claim` leases the runs to this worker (default lease: four heartbeat intervals,
        renewed by heartbeats); `wait_seconds` waits for work when there is none yet. A claim
        sent again with the same `request_id` (no answer came) returns the same runs."""
        lease = lease_seconds or 4 * (self.heartbeat_interval_seconds or 30)
        message = {
            "message_id": uuid.uuid4().hex,
            "request_id": request_id,
            "claim": claim,
            "lease_seconds": lease,
            "wait_seconds": wait_seconds,
            "work_pool_name": self.work_pool_name,
            "worker_name": self.worker_name,
            "work_queue_names": work_queue_names,
            "scheduled_before": scheduled_before.isoformat() if scheduled_before else None,
            "scheduled_after": scheduled_after.isoformat() if scheduled_after else None,
            "limit": limit,
        }
        result = await self._ask(self.channels.worker_polls, message, timeout=self.timeout + wait_seconds)
        return [WorkerFlowRun.model_validate(item) for item in result]
